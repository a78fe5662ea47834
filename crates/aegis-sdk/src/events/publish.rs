//! Publishing events with a dedup id and waiting for JetStream to store them.

use aegis_contracts::{names, subjects};
use async_nats::HeaderMap;
use serde::Serialize;

use super::{EventError, Events};

/// What JetStream confirmed about a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The dedup id the event was stored under.
    pub id: String,
    /// Its sequence number in the `EVENTS` stream.
    pub sequence: u64,
    /// True when the server had already stored an event with this id (the
    /// publish was a retry and nothing new was stored).
    pub duplicate: bool,
}

impl Events {
    /// Publishes `payload` as JSON to `events.{domain}.{action}` with a fresh
    /// dedup id and waits until JetStream has stored it. The `EVENTS` stream
    /// is created on first need.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::events::EventError> {
    /// let stored = conn
    ///     .events()
    ///     .publish("order", "created", &serde_json::json!({"order_id": "o-1"}))
    ///     .await?;
    /// println!("stored as #{}", stored.sequence);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`EventError`]: invalid names (before any I/O), an unencodable
    /// payload, or no confirmation from JetStream (then it may not be stored;
    /// publish again with the same id via [`publish_with_id`](Self::publish_with_id)).
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        action: &str,
        payload: &T,
    ) -> Result<Published, EventError> {
        let id = nuid::next().to_string();
        self.publish_with_id(domain, action, &id, payload).await
    }

    /// Publishes with a caller-chosen dedup id: publishing the same id again
    /// within the dedup window stores nothing new (safe retries).
    ///
    /// # Errors
    /// As [`publish`](Self::publish).
    pub async fn publish_with_id<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        action: &str,
        id: &str,
        payload: &T,
    ) -> Result<Published, EventError> {
        names::validate_event_domain(domain)?;
        names::validate_event_action(action)?;
        let subject = subjects::event_subject(domain, action);
        let body = serde_json::to_vec(payload).map_err(EventError::Encode)?;
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
        let publish_error = |source: async_nats::Error| EventError::Publish {
            subject: subject.clone(),
            source,
        };
        let js = self.conn.jetstream();
        let publish = |headers: HeaderMap, body: bytes::Bytes| {
            let subject = subject.clone();
            async move {
                js.publish_with_headers(subject, headers, body)
                    .await
                    .map_err(async_nats::Error::from)?
                    .await
                    .map_err(async_nats::Error::from)
            }
        };
        let body = bytes::Bytes::from(body);
        let ack = match publish(headers.clone(), body.clone()).await {
            Ok(ack) => ack,
            Err(first) => {
                // No stream yet (nobody created EVENTS): create it and publish
                // again; the dedup id makes the retry safe either way.
                if self.ensure_stream().await.is_err() {
                    return Err(publish_error(first));
                }
                publish(headers, body).await.map_err(publish_error)?
            }
        };
        Ok(Published {
            id: id.to_owned(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
