//! Publishing events with a dedup id and waiting for JetStream to store them.

use aegis_contracts::{names, subjects};
use async_nats::HeaderMap;
use serde::Serialize;
use tracing::warn;

use super::{EventError, Events};

/// What JetStream confirmed about a stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The dedup id the event was stored under: the one asked for, or, when
    /// a message on another subject had already taken it in the stream's
    /// dedup window, `{id}~{hash}`, an id of this process's own (the same
    /// for a retry in this process; logged at WARN).
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
    /// any I/O); [`EventError::Refused`] as soon as the server refuses this
    /// user the subject (nothing was stored); [`EventError::Publish`] when
    /// JetStream did not confirm
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
    /// The window is one namespace for the whole stream: a message on
    /// another subject (another service that learned the id first) can
    /// hold the id. Told "duplicate", this reads the message stored at that
    /// sequence (at most [`DUPLICATE_CHECK`]); when it is on another
    /// subject, the event is stored under `{id}~{hash}`, an id of this
    /// process's own ([`Published::id`]), with a WARN. A retry of such an
    /// event from another process stores a second copy (consumers that
    /// must count a fact once deduplicate by their own key, as risk-service
    /// does fills by order id); a read that fails is logged at WARN and
    /// taken as a true repeat.
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
        let publish_error =
            |source: async_nats::Error| match crate::connection::refusals::refusal_in(&*source) {
                Some(violation) => EventError::Refused {
                    subject: subject.clone(),
                    violation,
                },
                None => EventError::Publish {
                    subject: subject.clone(),
                    id: id.to_owned(),
                    source: crate::streams::NoStreamTookIt::explained(source),
                },
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
                let refused = crate::connection::refusals::refusal_in(&first).is_some();
                if unanswered || refused || self.ensure_stream().await.is_err() {
                    return Err(publish_error(first.into()));
                }
                publish().await.map_err(|e| publish_error(e.into()))?
            }
        };
        if ack.duplicate
            && let Some(other) = self.stored_elsewhere(&ack, &subject).await
        {
            // The id was taken by a message on another subject (another
            // publisher that learned it first; JetStream's dedup window is
            // one namespace per stream): stored under an id of this
            // process's own instead of being dropped as a duplicate.
            let own = crate::streams::own_id(id);
            warn!(
                subject,
                id,
                taken_on = other,
                stored_as = own,
                "an event's id was already taken in EVENTS by a message on another subject; \
                 the event is stored under an id of its own"
            );
            let ack = crate::streams::publish_deduplicated(
                &self.conn,
                subject.clone(),
                &own,
                HeaderMap::new(),
                body,
            )
            .await
            .map_err(|e| publish_error(e.into()))?;
            return Ok(Published {
                id: own,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
            });
        }
        Ok(Published {
            id: id.to_owned(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// For an acknowledgement that says "duplicate": the subject of the
    /// message the stream holds under that id when it is not `subject`
    /// (`None`: ours — a true repeat — or unknown, the read failing).
    async fn stored_elsewhere(
        &self,
        ack: &async_nats::jetstream::publish::PublishAck,
        subject: &str,
    ) -> Option<String> {
        let read = async {
            let stream = self
                .conn
                .jetstream()
                .get_stream_no_info(&ack.stream)
                .await
                .ok()?;
            stream.get_raw_message(ack.sequence).await.ok()
        };
        let Some(stored) = tokio::time::timeout(DUPLICATE_CHECK, read)
            .await
            .ok()
            .flatten()
        else {
            warn!(
                subject,
                stream = ack.stream,
                sequence = ack.sequence,
                "could not read the message a duplicate acknowledgement names; taken as a true \
                 repeat (if another subject had taken the id, this event is not stored)"
            );
            return None;
        };
        (stored.subject.as_str() != subject).then(|| stored.subject.to_string())
    }
}

/// How long [`Events::publish_with_id`] waits to read the message a
/// duplicate acknowledgement names (a read a role's permissions refuse
/// goes unanswered; a publisher must not stall on it).
pub const DUPLICATE_CHECK: std::time::Duration = std::time::Duration::from_secs(1);
