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
        let publish_error = |source: async_nats::Error| EventError::Publish {
            subject: subject.clone(),
            source,
        };
        let body = bytes::Bytes::from(body);
        // Sent again (same id) when an acknowledgement is slow to come: a
        // stream changing leader can drop a message without a word.
        let publish = || {
            crate::streams::publish_deduplicated(
                &self.conn,
                subject.clone(),
                id,
                HeaderMap::new(),
                body.clone(),
            )
        };
        let ack = match publish().await {
            Ok(ack) => ack,
            Err(first) => {
                // No stream yet (nobody created EVENTS): create it and publish
                // again; the dedup id makes the retry safe either way. One
                // that was never acknowledged in time is not sent a third time.
                let unanswered =
                    first.kind() == async_nats::jetstream::context::PublishErrorKind::TimedOut;
                if unanswered || self.ensure_stream().await.is_err() {
                    return Err(publish_error(first.into()));
                }
                publish().await.map_err(|e| publish_error(e.into()))?
            }
        };
        Ok(Published {
            id: id.to_owned(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }
}
