//! Dead letters: the messages event subscriptions and command workers gave
//! up on, kept in the stream `DEAD_LETTER` (see
//! [`aegis_contracts::dead_letter`] for the record and its two producers).
//!
//! Every subscription and worker delivers a message at most `max_deliver`
//! times. When its handler fails on the last of them, or the message can
//! never be handled, the SDK copies it here and stops its redelivery. When
//! the deliveries run out with nobody deciding (the handling process
//! crashed each time), the server's max-deliveries advisory lands here
//! instead, since the stream also binds those advisory subjects.
//! [`recent`] reads the newest dead letters back; the monitor lists them.

use std::time::Duration;

use aegis_contracts::{
    dead_letter::{
        self, DeadLetter, DeadLetterReason, HEADER_CONSUMER, HEADER_DELIVERIES, HEADER_ERROR,
        HEADER_REASON, HEADER_SEQUENCE, HEADER_STREAM, HEADER_SUBJECT,
    },
    subjects,
};
use async_nats::{
    HeaderMap,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull},
        stream::{self, Stream},
    },
};
use futures::StreamExt;

use crate::{AegisConfig, streams::bounded};

/// The most dead letters [`recent`] returns at once.
pub const MAX_RECENT: usize = 1000;

/// How long the temporary consumer [`recent`] reads through outlives its
/// last read; the server then removes it. Longer than a read's pull
/// (2 s), short enough that frequent readers leave only a few behind.
const READER_INACTIVE_THRESHOLD: Duration = Duration::from_secs(5);

/// Why dead letters could not be stored or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterError {
    /// The `DEAD_LETTER` stream could not be created or found.
    #[error("cannot create or find the DEAD_LETTER stream")]
    Stream(#[source] async_nats::Error),
    /// Reading dead letters failed.
    #[error("cannot read dead letters")]
    Read(#[source] async_nats::Error),
}

/// Creates the `DEAD_LETTER` stream if it does not exist: subjects
/// `aegis.dead.>` plus the max-deliveries advisories of `EVENTS` and
/// `COMMANDS`, file storage, the connection's replicas, the limits of
/// [`StreamsConfig::dead_letter`](crate::StreamsConfig::dead_letter). An
/// existing stream keeps its settings (see [`crate::streams`]).
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::dead_letter::DeadLetterError> {
/// aegis_sdk::dead_letter::ensure_dead_letter_stream(conn.jetstream(), conn.config()).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`DeadLetterError::Stream`] when JetStream refuses.
pub async fn ensure_dead_letter_stream(
    js: &jetstream::Context,
    config: &AegisConfig,
) -> Result<Stream, DeadLetterError> {
    let stream = stream::Config {
        name: subjects::DEAD_LETTER_STREAM.to_owned(),
        subjects: vec![
            subjects::DEAD_LETTER_SUBJECTS.to_owned(),
            subjects::max_deliveries_advisories(subjects::EVENTS_STREAM),
            subjects::max_deliveries_advisories(subjects::COMMANDS_STREAM),
        ],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        num_replicas: config.nats.replicas,
        discard: stream::DiscardPolicy::Old,
        description: Some(
            "Aegis dead letters: messages given up on, and max-deliveries advisories".to_owned(),
        ),
        ..Default::default()
    };
    crate::streams::ensure_stream(js, bounded(stream, &config.streams.dead_letter))
        .await
        .map_err(DeadLetterError::Stream)
}

/// Copies `message` (delivered by `consumer`) into `DEAD_LETTER`, waiting
/// for the store to confirm. A repeat by the same consumer for the same
/// original, in this process, stores nothing new; each consumer that gives
/// up on a message stores its own copy (see `dedup_id`).
pub(crate) async fn bury(
    message: &jetstream::Message,
    consumer: &str,
    reason: DeadLetterReason,
    error: &str,
) -> Result<(), async_nats::Error> {
    let info = message.info()?;
    let (stream, sequence, delivered) =
        (info.stream.to_owned(), info.stream_sequence, info.delivered);
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_MESSAGE_ID,
        dedup_id(&stream, sequence, consumer).as_str(),
    );
    headers.insert(HEADER_STREAM, stream.as_str());
    headers.insert(HEADER_CONSUMER, consumer);
    headers.insert(HEADER_SUBJECT, message.subject.as_str());
    headers.insert(HEADER_SEQUENCE, sequence.to_string().as_str());
    headers.insert(HEADER_DELIVERIES, delivered.to_string().as_str());
    headers.insert(HEADER_REASON, reason.as_str());
    headers.insert(HEADER_ERROR, dead_letter::error_text(error).as_str());
    message
        .context
        .publish_with_headers(
            subjects::dead_letter_subject(&stream, consumer),
            headers,
            message.payload.clone(),
        )
        .await?
        .await?;
    Ok(())
}

/// The dedup id (`Nats-Msg-Id`) of a dead letter: the original's stream and
/// sequence, and the consumer that gave up on it, made this process's own
/// ([`streams::own_id`](crate::streams::own_id)). Without the consumer, two
/// services (or broadcast instances) failing on one event would share an
/// id, and `DEAD_LETTER` would drop all but the first one's copy. Without
/// the process's key, any service (each may publish dead letters of its
/// own consumers) could predict the id and store a message of its own
/// under it first, and the real dead letter would be dropped as a
/// duplicate; a service may not read `DEAD_LETTER` to check. The price: a
/// message given up on again by another process (its first give-up's
/// process died before ending it) leaves a second dead letter.
fn dedup_id(stream: &str, sequence: u64, consumer: &str) -> String {
    crate::streams::own_id(&format!("{stream}.{sequence}.{consumer}"))
}

/// The newest `limit` dead letters (at most [`MAX_RECENT`]), oldest first.
/// For a max-deliveries advisory, the original's subject and payload are
/// looked up in its stream while it still holds it.
///
/// It reads through a temporary consumer, which it does not delete (the
/// server removes it after a few idle seconds), so a user that may
/// consume `DEAD_LETTER` but not delete consumers, such as the monitor's,
/// reads without waiting on a refused request.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::dead_letter::DeadLetterError> {
/// for dead in aegis_sdk::dead_letter::recent(conn.jetstream(), 50).await? {
///     println!("{} #{} gave up after {} deliveries: {:?}", dead.stream, dead.stream_sequence, dead.deliveries, dead.reason);
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`DeadLetterError::Read`] when the stream cannot be read; a missing
/// stream is no error (nothing was ever given up on).
pub async fn recent(
    js: &jetstream::Context,
    limit: usize,
) -> Result<Vec<DeadLetter>, DeadLetterError> {
    let limit = limit.min(MAX_RECENT);
    let read = |e: async_nats::Error| DeadLetterError::Read(e);
    let mut stream = match js.get_stream(subjects::DEAD_LETTER_STREAM).await {
        Ok(s) => s,
        Err(e)
            if matches!(e.kind(), jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND) =>
        {
            return Ok(Vec::new());
        }
        Err(e) => return Err(read(e.into())),
    };
    let state = stream
        .info()
        .await
        .map_err(|e| read(e.into()))?
        .state
        .clone();
    if limit == 0 || state.messages == 0 {
        return Ok(Vec::new());
    }
    let start = state
        .last_sequence
        .saturating_sub(limit as u64 - 1)
        .max(state.first_sequence);
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: start,
            },
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Instant,
            inactive_threshold: READER_INACTIVE_THRESHOLD,
            memory_storage: true,
            description: Some("aegis dead-letter reader".to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| read(e.into()))?;
    // The reader is not deleted: the monitor's user may consume DEAD_LETTER
    // but not delete consumers, and a refused request goes unanswered, so
    // each read would wait out the whole request timeout. The server
    // removes the reader once it has been idle for its threshold.
    let fetched = fetch(&consumer, limit, state.last_sequence).await;
    let mut out = Vec::new();
    for message in fetched? {
        let Ok(info) = message.info() else { continue };
        let stored_at = chrono::DateTime::from_timestamp(
            info.published.unix_timestamp(),
            info.published.nanosecond(),
        )
        .unwrap_or_else(chrono::Utc::now);
        let headers = message.headers.clone();
        let header = |name: &str| {
            headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        if let Some(dead) = DeadLetter::from_stored(
            info.stream_sequence,
            stored_at,
            &message.subject,
            header,
            &message.payload,
        ) {
            out.push(dead);
        }
    }
    for dead in out.iter_mut().filter(|d| d.payload.is_none()) {
        if let Ok(origin) = js.get_stream(&dead.stream).await
            && let Ok(original) = origin.get_raw_message(dead.stream_sequence).await
        {
            dead.subject = Some(original.subject.to_string());
            dead.payload = Some(dead_letter::payload_value(&original.payload));
        }
    }
    Ok(out)
}

/// Reads messages from `consumer` up to `count` or the stream sequence `last`.
async fn fetch(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    count: usize,
    last: u64,
) -> Result<Vec<jetstream::Message>, DeadLetterError> {
    let mut out = Vec::with_capacity(count);
    let mut batch = consumer
        .batch()
        .max_messages(count)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .map_err(|e| DeadLetterError::Read(e.into()))?;
    while let Some(message) = batch.next().await {
        let message = message.map_err(DeadLetterError::Read)?;
        let done = message.info().is_ok_and(|i| i.stream_sequence >= last);
        out.push(message);
        if done {
            break;
        }
    }
    Ok(out)
}
