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
    /// [`EventError::InvalidName`] for an invalid domain or action and
    /// [`EventError::Encode`] for a payload that cannot be JSON (both before
    /// any I/O); [`EventError::Publish`] when JetStream did not confirm
    /// storing the event. It may be stored or not: the error carries the id
    /// it was sent with, and publishing again with that id stores it at most
    /// once (within [`EVENTS_DUPLICATE_WINDOW`](super::EVENTS_DUPLICATE_WINDOW)):
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::events::EventError> {
    /// use aegis_sdk::events::EventError;
    ///
    /// let payload = serde_json::json!({"order_id": "o-1"});
    /// let events = conn.events();
    /// let stored = match events.publish("order", "created", &payload).await {
    ///     Err(EventError::Publish { id, .. }) => {
    ///         events.publish_with_id("order", "created", &id, &payload).await?
    ///     }
    ///     other => other?,
    /// };
    /// println!("stored as #{} (again: {})", stored.sequence, stored.duplicate);
    /// # Ok(()) }
    /// ```
    ///
    /// To resend later, or from another process, choose the id yourself
    /// with [`publish_with_id`](Self::publish_with_id) (an id derived from
    /// the fact, such as `order-1:created`, also makes a repeated fact
    /// stored once).
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
    /// within the dedup window ([`EVENTS_DUPLICATE_WINDOW`](super::EVENTS_DUPLICATE_WINDOW))
    /// stores nothing new (safe retries); the answer's
    /// [`duplicate`](Published::duplicate) says so.
    ///
    /// # Errors
    /// As [`publish`](Self::publish), and [`EventError::InvalidId`] (before
    /// any I/O) for an empty id, one that starts with a space, or one with a
    /// carriage return or line feed;
    /// [`EventError::Publish`] carries `id`.
    pub async fn publish_with_id<T: Serialize + ?Sized>(
        &self,
        domain: &str,
        action: &str,
        id: &str,
        payload: &T,
    ) -> Result<Published, EventError> {
        names::validate_event_domain(domain)?;
        names::validate_event_action(action)?;
        if !crate::streams::is_dedup_id(id) {
            return Err(EventError::InvalidId { id: id.to_owned() });
        }
        let subject = subjects::event_subject(domain, action);
        let body = serde_json::to_vec(payload).map_err(EventError::Encode)?;
        // Only a failure pays for copying the id.
        let publish_error = |source: async_nats::Error| EventError::Publish {
            subject: subject.clone(),
            id: id.to_owned(),
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
