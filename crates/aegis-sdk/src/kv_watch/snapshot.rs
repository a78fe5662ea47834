//! A view's load without a consumer: the last value of every watched key
//! in one batched direct get (`multi_last`), which any replica of the
//! bucket's stream answers (buckets allow direct gets).
//!
//! A watch needs a consumer, and JetStream creates none while its cluster
//! elects a meta leader: 4-9 s after the node that led it died (its Raft
//! election timeout). The buckets' streams keep their leaders and
//! replicas meanwhile, and they answer reads. A process that starts in
//! that window loads its view this way and is served at once, instead of
//! failing its first calls; the watch opens as soon as JetStream creates
//! consumers again, and its load replaces the snapshot.
//!
//! A replica may lag its leader by a few writes, and nothing follows
//! changes until the watch opens: the view counts as broken (stale) until
//! then. The server answers at most [`MAX_KEYS`] keys at once; a scope
//! with more gets no snapshot and waits for its watch, as before.

use std::time::Duration;

use async_nats::{
    Client, HeaderMap, StatusCode,
    header::{NATS_SEQUENCE, NATS_SUBJECT},
    jetstream::kv,
};
use futures::StreamExt;

use super::{KvEntry, Scope, removal_of};

/// The most keys one batched direct get returns: the server answers a
/// request that matches more with 413 "Too Many Results" and nothing else.
pub(super) const MAX_KEYS: usize = 1024;

/// The server's end of a batch ("EOB").
const END_OF_BATCH: u16 = 204;

/// Reads the last value of every key in `scope` from `store`'s stream, in
/// one batched direct get answered within `within`. Deleted, purged and
/// expired keys are left out, as a watch's load leaves them out.
///
/// # Errors
/// Why no complete snapshot came: no replica answered in time, the server
/// refused the request (more than [`MAX_KEYS`] keys match, or the stream
/// does not allow direct gets), or a reply could not be read.
pub(super) async fn load(
    client: &Client,
    store: &kv::Store,
    scope: &Scope,
    within: Duration,
) -> Result<Vec<KvEntry>, String> {
    let filters: Vec<String> = scope
        .keys
        .iter()
        .map(|k| format!("{}{k}", store.prefix))
        .collect();
    let request = serde_json::json!({ "multi_last": filters, "batch": MAX_KEYS });
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| e.to_string())?;
    client
        .publish_with_reply(
            format!("$JS.API.DIRECT.GET.{}", store.stream_name),
            inbox,
            request.to_string().into(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + within;
    let mut entries = Vec::new();
    loop {
        let message = match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(message)) => message,
            Ok(None) => return Err("the reply subscription closed".to_owned()),
            Err(_) => {
                return Err(format!(
                    "no complete answer within {within:?} ({} keys in)",
                    entries.len()
                ));
            }
        };
        match message.status.map(|s| s.as_u16()) {
            None => {}
            Some(END_OF_BATCH) => return Ok(entries),
            // "No Results": nothing in scope has a value.
            Some(404) if entries.is_empty() => return Ok(entries),
            Some(_) => {
                let status = message.status.unwrap_or(StatusCode::NO_RESPONDERS);
                return Err(format!(
                    "the server answered {status} {}",
                    message.description.as_deref().unwrap_or("")
                ));
            }
        }
        let headers = message.headers.unwrap_or_default();
        if let Some(entry) = entry(&headers, message.payload, &store.prefix)? {
            entries.push(entry);
        }
    }
}

/// The entry one reply of a batched direct get carries; `None` for a key
/// removed (its last message a delete, purge or expiry marker) or outside
/// the bucket's prefix.
fn entry(
    headers: &HeaderMap,
    value: bytes::Bytes,
    prefix: &str,
) -> Result<Option<KvEntry>, String> {
    let subject = headers
        .get(NATS_SUBJECT)
        .ok_or("a reply without its subject")?
        .as_str();
    let revision = headers
        .get(NATS_SEQUENCE)
        .and_then(|s| s.as_str().parse::<u64>().ok())
        .ok_or("a reply without a readable sequence")?;
    let Some(key) = subject.strip_prefix(prefix) else {
        return Ok(None);
    };
    if removal_of(headers).is_some() {
        return Ok(None);
    }
    Ok(Some(KvEntry {
        key: key.to_owned(),
        value,
        revision,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, *value);
        }
        map
    }

    #[test]
    fn a_reply_is_an_entry_unless_it_removes_its_key() {
        let put = headers(&[("Nats-Subject", "$KV.b.svc.a"), ("Nats-Sequence", "7")]);
        let got = entry(&put, "v".into(), "$KV.b.").unwrap().unwrap();
        assert_eq!((got.key.as_str(), got.revision), ("svc.a", 7));
        assert_eq!(got.value, "v");

        for removed in [
            headers(&[
                ("Nats-Subject", "$KV.b.svc.a"),
                ("Nats-Sequence", "8"),
                ("KV-Operation", "DEL"),
            ]),
            headers(&[
                ("Nats-Subject", "$KV.b.svc.a"),
                ("Nats-Sequence", "9"),
                ("Nats-Marker-Reason", "MaxAge"),
            ]),
        ] {
            assert!(entry(&removed, "".into(), "$KV.b.").unwrap().is_none());
        }
        let elsewhere = headers(&[("Nats-Subject", "$KV.other.x"), ("Nats-Sequence", "1")]);
        assert!(entry(&elsewhere, "".into(), "$KV.b.").unwrap().is_none());
        assert!(entry(&headers(&[("Nats-Sequence", "1")]), "".into(), "$KV.b.").is_err());
    }
}
