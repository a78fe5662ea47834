//! Writing one registry record: the JSON body, the per-key TTL header and the
//! standard metadata every instance publishes (host, pid, start time, SDK
//! version, endpoints).
//!
//! async-nats 0.51 offers a TTL only when a key is first created, not on
//! later puts, so heartbeats publish to the key's subject themselves with the
//! server's `Nats-TTL` header; each put restarts the key's TTL.

use std::time::Duration;

use aegis_contracts::{ServiceInstance, models::rfc3339};
use async_nats::{
    HeaderMap,
    jetstream::{self, kv},
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// The header carrying a message's TTL (nats-server 2.11+).
const HEADER_TTL: &str = "Nats-TTL";

/// The subject a key of `store` is written on.
pub(crate) fn key_subject(store: &kv::Store, key: &str) -> String {
    let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
    format!("{prefix}{key}")
}

/// The `Nats-TTL` value for `ttl`. The server takes Go durations with at
/// least one second; milliseconds keep sub-second precision above that.
pub(crate) fn ttl_header_value(ttl: Duration) -> String {
    format!("{}ms", ttl.as_millis())
}

/// Publishes `record` to `subject` with a TTL and waits for the stream's
/// acknowledgement for at most `timeout`. With `expected`, the stream takes
/// it only while the key's last revision is that one (a refusal is a
/// [`PublishError`](jetstream::context::PublishError) of kind
/// `WrongLastSequence`). Returns the stored revision.
pub(crate) async fn put_with_ttl(
    js: &jetstream::Context,
    subject: &str,
    ttl_value: &str,
    record: &ServiceInstance,
    timeout: Duration,
    expected: Option<u64>,
) -> Result<u64, async_nats::Error> {
    let body = serde_json::to_vec(record)?;
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_TTL, ttl_value);
    if let Some(revision) = expected {
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            revision.to_string().as_str(),
        );
    }
    let publish = async {
        let ack = js
            .publish_with_headers(subject.to_owned(), headers, body.into())
            .await?
            .await?;
        Ok::<_, async_nats::Error>(ack.sequence)
    };
    match tokio::time::timeout(timeout, publish).await {
        Ok(result) => result,
        Err(_) => Err(format!("no acknowledgement within {timeout:?}").into()),
    }
}

/// The machine's host name (`/proc/sys/kernel/hostname`), or `unknown`.
pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The metadata every Aegis instance publishes about itself.
pub(crate) fn standard_metadata(
    endpoints: &[String],
    started: DateTime<Utc>,
) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("host".into(), json!(hostname()));
    m.insert("pid".into(), json!(std::process::id()));
    m.insert("startTime".into(), json!(rfc3339::format_utc(&started)));
    m.insert("sdkVersion".into(), json!(crate::SDK_VERSION));
    m.insert("endpoints".into(), json!(endpoints));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_values_are_go_durations() {
        assert_eq!(ttl_header_value(Duration::from_secs(3)), "3000ms");
        assert_eq!(ttl_header_value(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn standard_metadata_names_the_process() {
        let m = standard_metadata(&["add".into(), "sub".into()], Utc::now());
        assert_eq!(m["pid"], json!(std::process::id()));
        assert_eq!(m["endpoints"], json!(["add", "sub"]));
        assert_eq!(m["sdkVersion"], json!(crate::SDK_VERSION));
        assert!(m["host"].as_str().is_some_and(|h| !h.is_empty()));
        assert!(m["startTime"].as_str().is_some_and(|t| t.ends_with('Z')));
    }
}
