//! Dead letters: messages an event subscription or a command worker gave up
//! on, kept in the stream `DEAD_LETTER` for an operator to inspect.
//!
//! Two producers fill it, and [`DeadLetter::from_stored`] reads both into
//! one record:
//!
//! - The SDK, when a handler fails on the last delivery it is allowed
//!   (`max_deliver`), or a message can never be handled (its payload does
//!   not decode): it publishes the original payload to
//!   `aegis.dead.{stream}.{consumer}` with the `Aegis-Dead-*` headers below,
//!   then terminates the original.
//! - The server, when a message reached `max_deliver` without anyone
//!   deciding — typically because handling it crashes the process every
//!   time: the stream captures the JetStream advisory
//!   `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}`, which
//!   names the stream sequence of the original (still in its stream).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::models::rfc3339;

/// Header: the stream the message came from (`EVENTS`, `COMMANDS`).
/// Written for other readers; [`DeadLetter::from_stored`] takes the
/// stream from the subject, which the bus permissions check.
pub const HEADER_STREAM: &str = "Aegis-Dead-Stream";
/// Header: the durable consumer that gave up on it (likewise read from
/// the subject).
pub const HEADER_CONSUMER: &str = "Aegis-Dead-Consumer";
/// Header: the subject the message was published on.
pub const HEADER_SUBJECT: &str = "Aegis-Dead-Subject";
/// Header: its sequence number in its stream.
pub const HEADER_SEQUENCE: &str = "Aegis-Dead-Sequence";
/// Header: how many times it was delivered.
pub const HEADER_DELIVERIES: &str = "Aegis-Dead-Deliveries";
/// Header: why it was given up on ([`DeadLetterReason`] as text).
pub const HEADER_REASON: &str = "Aegis-Dead-Reason";
/// Header: the last error, as the handler said it (truncated).
pub const HEADER_ERROR: &str = "Aegis-Dead-Error";

/// Most characters of an error kept in a dead letter.
pub const MAX_ERROR_CHARS: usize = 1024;

/// First tokens of the server's max-deliveries advisories.
pub const MAX_DELIVERIES_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES";

/// Why a message became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterReason {
    /// The handler failed (or panicked) on the last allowed delivery.
    HandlerFailed,
    /// The message can never be handled: its payload or subject is malformed.
    Undecodable,
    /// The server stopped delivering it after `max_deliver` deliveries
    /// nobody acknowledged (the handling process crashed or hung each time).
    MaxDeliveries,
}

impl DeadLetterReason {
    /// The text used in the [`HEADER_REASON`] header and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::HandlerFailed => "handler_failed",
            DeadLetterReason::Undecodable => "undecodable",
            DeadLetterReason::MaxDeliveries => "max_deliveries",
        }
    }

    /// Parses [`as_str`](Self::as_str)'s text.
    pub fn parse(s: &str) -> Option<Self> {
        [
            DeadLetterReason::HandlerFailed,
            DeadLetterReason::Undecodable,
            DeadLetterReason::MaxDeliveries,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// One dead letter, as the monitor lists it (camelCase JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Its sequence number in `DEAD_LETTER`.
    pub id: u64,
    /// When it was dead-lettered (RFC 3339 UTC).
    #[serde(with = "rfc3339")]
    pub dead_at: DateTime<Utc>,
    /// Why.
    pub reason: DeadLetterReason,
    /// The stream the original lives in.
    pub stream: String,
    /// The durable consumer that gave up on it.
    pub consumer: String,
    /// The original's sequence number in `stream`.
    pub stream_sequence: u64,
    /// How many times it was delivered.
    pub deliveries: u64,
    /// The subject it was published on, when known.
    pub subject: Option<String>,
    /// The handler's last error, when there was one.
    pub error: Option<String>,
    /// The original payload: JSON when it parses as JSON, else its text
    /// (lossy UTF-8); `None` when it is no longer available.
    pub payload: Option<serde_json::Value>,
}

/// The part of a JetStream max-deliveries advisory a dead letter needs.
#[derive(Debug, Deserialize)]
struct MaxDeliveriesAdvisory {
    stream: String,
    consumer: String,
    stream_seq: u64,
    deliveries: u64,
}

impl DeadLetter {
    /// Reads a message stored in `DEAD_LETTER` (sequence `id`, stored at
    /// `stored_at`, on `subject`, with headers looked up by `header`).
    /// `None` when it is neither an SDK dead letter nor a max-deliveries
    /// advisory.
    pub fn from_stored(
        id: u64,
        stored_at: DateTime<Utc>,
        subject: &str,
        header: impl Fn(&str) -> Option<String>,
        payload: &[u8],
    ) -> Option<DeadLetter> {
        if subject.starts_with(MAX_DELIVERIES_ADVISORY_PREFIX) {
            let advisory: MaxDeliveriesAdvisory = serde_json::from_slice(payload).ok()?;
            return Some(DeadLetter {
                id,
                dead_at: stored_at,
                reason: DeadLetterReason::MaxDeliveries,
                stream: advisory.stream,
                consumer: advisory.consumer,
                stream_sequence: advisory.stream_seq,
                deliveries: advisory.deliveries,
                subject: None,
                error: None,
                payload: None,
            });
        }
        let number = |name: &str| header(name).and_then(|v| v.parse::<u64>().ok());
        // The stream and consumer as the subject names them: the bus lets
        // a service publish only its own consumers' subjects, while the
        // headers are whatever the publisher wrote.
        let (stream, consumer) = subject.strip_prefix("aegis.dead.")?.split_once('.')?;
        Some(DeadLetter {
            id,
            dead_at: stored_at,
            reason: DeadLetterReason::parse(&header(HEADER_REASON)?)?,
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            stream_sequence: number(HEADER_SEQUENCE)?,
            deliveries: number(HEADER_DELIVERIES).unwrap_or(0),
            subject: header(HEADER_SUBJECT),
            error: header(HEADER_ERROR),
            payload: Some(payload_value(payload)),
        })
    }
}

/// A payload shown as JSON when it is JSON, else as (lossy) text.
pub fn payload_value(payload: &[u8]) -> serde_json::Value {
    serde_json::from_slice(payload)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(payload).into()))
}

/// `error` cut to [`MAX_ERROR_CHARS`] characters, on one line (header
/// values cannot hold line breaks).
pub fn error_text(error: &str) -> String {
    error
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_ERROR_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_an_sdk_dead_letter() {
        let headers = |name: &str| {
            match name {
                HEADER_REASON => Some("handler_failed"),
                HEADER_STREAM => Some("EVENTS"),
                HEADER_CONSUMER => Some("risk-service_order_created"),
                HEADER_SEQUENCE => Some("42"),
                HEADER_DELIVERIES => Some("3"),
                HEADER_SUBJECT => Some("events.order.created"),
                HEADER_ERROR => Some("downstream down"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let at = Utc::now();
        let d =
            DeadLetter::from_stored(7, at, "aegis.dead.EVENTS.x", headers, br#"{"order_id":1}"#)
                .unwrap();
        assert_eq!(d.reason, DeadLetterReason::HandlerFailed);
        assert_eq!((d.id, d.stream_sequence, d.deliveries), (7, 42, 3));
        assert_eq!(d.payload, Some(json!({"order_id": 1})));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["reason"], "handler_failed");
        assert_eq!(v["streamSequence"], 42);
        assert!(v["deadAt"].as_str().unwrap().ends_with('Z'));
    }

    /// The subject is what the bus permissions check (a service may
    /// publish only `aegis.dead.{stream}.{its own consumer}`); the headers
    /// are the publisher's word. A letter whose headers name another
    /// consumer is read as the one its subject names.
    #[test]
    fn the_subject_names_the_consumer_not_the_headers() {
        let headers = |name: &str| {
            match name {
                HEADER_REASON => Some("handler_failed"),
                HEADER_STREAM => Some("COMMANDS"),
                HEADER_CONSUMER => Some("order-service_commands"),
                HEADER_SEQUENCE => Some("1"),
                _ => None,
            }
            .map(str::to_owned)
        };
        let d = DeadLetter::from_stored(
            3,
            Utc::now(),
            "aegis.dead.EVENTS.pricing-service_price_all",
            headers,
            b"{}",
        )
        .unwrap();
        assert_eq!(
            (d.stream.as_str(), d.consumer.as_str()),
            ("EVENTS", "pricing-service_price_all")
        );
    }

    #[test]
    fn reads_a_max_deliveries_advisory_and_ignores_strangers() {
        let advisory = json!({
            "type": "io.nats.jetstream.advisory.v1.max_deliver",
            "id": "x", "timestamp": "2026-01-01T00:00:00Z",
            "stream": "COMMANDS", "consumer": "crashy_commands",
            "stream_seq": 5, "deliveries": 3
        });
        let d = DeadLetter::from_stored(
            1,
            Utc::now(),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.COMMANDS.crashy_commands",
            |_| None,
            advisory.to_string().as_bytes(),
        )
        .unwrap();
        assert_eq!(d.reason, DeadLetterReason::MaxDeliveries);
        assert_eq!((d.stream.as_str(), d.stream_sequence), ("COMMANDS", 5));
        assert_eq!(d.payload, None);
        assert!(DeadLetter::from_stored(2, Utc::now(), "aegis.dead.x", |_| None, b"").is_none());
    }

    #[test]
    fn payloads_and_errors_are_shown_safely() {
        assert_eq!(payload_value(b"garbage"), json!("garbage"));
        assert_eq!(payload_value(b"[1]"), json!([1]));
        let long = "x".repeat(5000) + "\n";
        let text = error_text(&long);
        assert_eq!(text.chars().count(), MAX_ERROR_CHARS);
        assert_eq!(error_text("a\nb"), "a b");
    }
}
