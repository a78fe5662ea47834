//! The latest metrics snapshot of every instance, kept in memory by one
//! [`aegis_sdk::feed`] on `AEGIS_METRICS` per process.
//!
//! The feed starts at the last message of every subject (so a fresh
//! monitor knows every instance's latest snapshot at once) and then follows
//! new ones, forwarding each to the live feed. When it breaks (its
//! consumer's node died, the connection moved) it is opened again at once,
//! from the last message of every subject again: on async-nats's ordered
//! consumer a lost consumer was noticed only after two missed 15 s
//! heartbeats, and the charts stood still meanwhile. History for charts is not
//! kept here: it is read from the stream on demand ([`MetricsFeed::history`]), so any
//! replica can answer.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use aegis_contracts::MetricsSnapshot;
use aegis_sdk::{Connection, feed::feed};
use async_nats::jetstream::{consumer::DeliverPolicy, stream::Stream};
use chrono::Utc;
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{self, BusError, Since},
    live::LiveEvent,
};

type Key = (String, String);

/// Latest snapshot per `(service, instance)`.
#[derive(Debug, Clone)]
pub(crate) struct MetricsFeed {
    latest: Arc<RwLock<HashMap<Key, MetricsSnapshot>>>,
    conn: Connection,
    stream: Stream,
    retention: Duration,
}

impl MetricsFeed {
    /// Starts following `stream`.
    pub(crate) fn start(
        conn: &Connection,
        stream: Stream,
        retention: Duration,
        live: broadcast::Sender<LiveEvent>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Self {
        let feed = Self {
            latest: Arc::default(),
            conn: conn.clone(),
            stream,
            retention,
        };
        let follower = feed.clone();
        tasks.spawn(async move { follower.follow(live, cancel).await });
        feed
    }

    async fn follow(self, live: broadcast::Sender<LiveEvent>, cancel: CancellationToken) {
        loop {
            let opened = feed(
                &self.conn,
                &self.stream,
                aegis_contracts::subjects::METRICS_SUBJECTS,
                DeliverPolicy::LastPerSubject,
            );
            let mut messages = tokio::select! {
                _ = cancel.cancelled() => return,
                messages = opened => messages,
            };
            loop {
                let next = tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = messages.next() => next,
                };
                match next {
                    Some(Ok(message)) => {
                        if let Some(snapshot) = parse(&message.subject, &message.payload) {
                            self.record(snapshot.clone());
                            let _ = live.send(LiveEvent::Metrics { snapshot });
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "following AEGIS_METRICS broke; opening it again");
                        break;
                    }
                    None => break,
                }
            }
            // A feed that ends at once (a closed connection) is not opened
            // again in a tight loop.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    fn record(&self, snapshot: MetricsSnapshot) {
        let key = (snapshot.service_name.clone(), snapshot.instance_id.clone());
        let mut latest = self.latest.write().unwrap_or_else(|e| e.into_inner());
        let newer = latest
            .get(&key)
            .is_none_or(|old| old.timestamp <= snapshot.timestamp);
        if newer {
            latest.insert(key, snapshot);
        }
    }

    /// The latest snapshot of one instance, unless older than the retention.
    pub(crate) fn latest(&self, service: &str, instance: &str) -> Option<MetricsSnapshot> {
        let cutoff = Utc::now() - chrono::Duration::from_std(self.retention).ok()?;
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        latest
            .get(&(service.to_owned(), instance.to_owned()))
            .filter(|s| s.timestamp >= cutoff)
            .cloned()
    }

    /// Snapshots of one instance stored in the last `window`, oldest first,
    /// at most `limit` (the newest ones).
    pub(crate) async fn history(
        &self,
        service: &str,
        instance: &str,
        window: Duration,
        limit: usize,
    ) -> Result<Vec<MetricsSnapshot>, BusError> {
        let start = time::OffsetDateTime::now_utc() - window;
        let subject = aegis_contracts::subjects::metrics_subject(service, instance);
        let messages = bus::tail(&self.stream, &subject, Since::Time(start), limit).await?;
        Ok(messages
            .iter()
            .filter_map(|m| parse(&m.subject, &m.payload))
            .collect())
    }
}

/// A snapshot whose names are taken from its subject
/// (`aegis.metrics.{service}.{instance}`), which the publisher cannot
/// misstate without also publishing elsewhere.
fn parse(subject: &str, payload: &[u8]) -> Option<MetricsSnapshot> {
    let mut snapshot: MetricsSnapshot = match serde_json::from_slice(payload) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(subject, error = %aegis_sdk::startup::Causes(&e), "ignoring an unreadable metrics snapshot");
            return None;
        }
    };
    let mut tokens = subject.split('.');
    if let (Some("aegis"), Some("metrics"), Some(service), Some(instance), None) = (
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
        tokens.next(),
    ) {
        snapshot.service_name = service.to_owned();
        snapshot.instance_id = instance.to_owned();
        Some(snapshot)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_subject() {
        let payload = serde_json::json!({
            "serviceName": "liar",
            "instanceId": "x",
            "timestamp": "2026-11-27T00:00:01Z"
        })
        .to_string();
        let s = parse("aegis.metrics.pricing.p-1", payload.as_bytes()).unwrap();
        assert_eq!(
            (s.service_name.as_str(), s.instance_id.as_str()),
            ("pricing", "p-1")
        );
        assert!(parse("aegis.metrics.pricing", payload.as_bytes()).is_none());
        assert!(parse("aegis.metrics.a.b", b"nope").is_none());
    }
}
