//! The latest metrics snapshot of every instance, kept in memory by one
//! [`aegis_sdk::feed`] on `AEGIS_METRICS` per process.
//!
//! The feed starts at the last message of every subject (so a fresh
//! monitor knows every instance's latest snapshot at once) and then follows
//! new ones, forwarding each it keeps to the live feed. When it breaks (its
//! consumer's node died, the connection moved) it is opened again at once,
//! from the last message of every subject again: on async-nats's ordered
//! consumer a lost consumer was noticed only after two missed 15 s
//! heartbeats, and the charts stood still meanwhile. The snapshots read
//! again then that it already holds are not forwarded again: with more of
//! them than the live channel holds, every live client lagged.
//!
//! A snapshot is newer than the one held when it comes later in the stream
//! (its stream sequence), not by its publisher's clock: one snapshot
//! stamped in the future froze an instance's figures until wall time caught
//! up. Instances whose latest snapshot is older than the retention are
//! forgotten every minute: pods get new ids on every rollout, and each id
//! ever seen was kept, histograms and all, for as long as the process ran.
//!
//! History for charts is not kept here: it is read from the stream on
//! demand ([`MetricsFeed::history`]), so any replica can answer.
//!
//! What dashboard cards show of the latest snapshots is sent once a second,
//! for the instances whose shown figures changed ([`figures`]).

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use aegis_contracts::MetricsSnapshot;
use aegis_sdk::{Connection, feed::feed};
use async_nats::jetstream::{consumer::DeliverPolicy, stream::Stream};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    bus::{self, BusError, ReadTurn, Since},
    live::{FiguresView, LiveEvent},
};

pub(crate) mod figures;

type Key = (String, String);

/// How often instances whose latest snapshot is older than the retention
/// are forgotten.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Latest snapshot per `(service, instance)`.
#[derive(Debug, Clone)]
pub(crate) struct MetricsFeed {
    latest: Arc<RwLock<Latest>>,
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
        let figures = feed.clone();
        let figures_live = live.clone();
        let figures_cancel = cancel.clone();
        tasks.spawn(async move { figures.send_figures(figures_live, figures_cancel).await });
        let follower = feed.clone();
        let follow_cancel = cancel.clone();
        tasks.spawn(async move { follower.follow(live, follow_cancel).await });
        let pruner = feed.clone();
        tasks.spawn(async move { pruner.prune_every(PRUNE_EVERY, cancel).await });
        feed
    }

    /// Sends, every [`figures::FIGURES_EVERY`], the figures of the
    /// instances whose shown figures changed (a `figures` event), until
    /// cancelled. Reads the live feed for the instances whose process went
    /// down: those are sent at the next tick whatever changed.
    async fn send_figures(self, live: broadcast::Sender<LiveEvent>, cancel: CancellationToken) {
        let mut news = live.subscribe();
        let mut sent = figures::Sent::default();
        let mut tick = tokio::time::interval(figures::FIGURES_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {
                    let view = self.with_held(|held, now| sent.tick(held, now));
                    let _ = live.send(LiveEvent::from(view));
                }
                news = news.recv() => match news {
                    Ok(LiveEvent::InstanceUpserted { instance }) if instance.process_down() => {
                        sent.owe(&instance.instance.service_name, &instance.instance.instance_id);
                    }
                    Ok(_) => {}
                    // Which went down is not known: every one is sent.
                    Err(broadcast::error::RecvError::Lagged(_)) => sent.owe_all(),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// Calls `f` with every snapshot held within the retention and now.
    fn with_held<T>(
        &self,
        f: impl FnOnce(&mut dyn Iterator<Item = &MetricsSnapshot>, DateTime<Utc>) -> T,
    ) -> T {
        let cutoff = self.cutoff();
        let now = Utc::now();
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        let mut held = latest
            .held
            .values()
            .map(|(_, s)| s)
            .filter(|s| s.timestamp >= cutoff);
        f(&mut held, now)
    }

    /// What dashboard cards show of every instance's latest snapshot, now.
    pub(crate) fn figures(&self) -> FiguresView {
        self.with_held(|held, now| figures::full(held, now))
    }

    /// Forgets, every `period`, the instances whose latest snapshot is
    /// older than the retention.
    async fn prune_every(self, period: Duration, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let cutoff = self.cutoff();
            let forgotten = self
                .latest
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .prune(cutoff);
            if forgotten > 0 {
                tracing::debug!(
                    forgotten,
                    "forgot instances whose latest metrics snapshot is older than the retention"
                );
            }
        }
    }

    /// The oldest snapshot time still shown (the earliest time there is
    /// if the retention reaches back further).
    fn cutoff(&self) -> DateTime<Utc> {
        chrono::Duration::from_std(self.retention)
            .ok()
            .and_then(|retention| Utc::now().checked_sub_signed(retention))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
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
                        let Some(snapshot) = parse(&message.subject, &message.payload) else {
                            continue;
                        };
                        let sequence = match message.info() {
                            Ok(info) => info.stream_sequence,
                            Err(e) => {
                                tracing::debug!(subject = %message.subject, error = %e, "ignoring a metrics snapshot without its stream sequence");
                                continue;
                            }
                        };
                        if self.record(sequence, snapshot.clone()) {
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

    /// Keeps `snapshot`, stored at stream sequence `sequence`, if it is
    /// newer than the one held and within the retention (see
    /// [`Latest::record`]); true if kept.
    fn record(&self, sequence: u64, snapshot: MetricsSnapshot) -> bool {
        let cutoff = self.cutoff();
        self.latest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .record(sequence, snapshot, cutoff)
    }

    /// The latest snapshot of one instance, unless older than the retention.
    pub(crate) fn latest(&self, service: &str, instance: &str) -> Option<MetricsSnapshot> {
        let cutoff = self.cutoff();
        let latest = self.latest.read().unwrap_or_else(|e| e.into_inner());
        latest
            .get(service, instance)
            .filter(|s| s.timestamp >= cutoff)
            .cloned()
    }

    /// Snapshots of one instance stored in the last `window`, oldest first,
    /// at most `limit` (the newest ones), read under `turn`.
    pub(crate) async fn history(
        &self,
        service: &str,
        instance: &str,
        window: Duration,
        limit: usize,
        turn: &ReadTurn,
    ) -> Result<Vec<MetricsSnapshot>, BusError> {
        let start = time::OffsetDateTime::now_utc() - window;
        let subject = aegis_contracts::subjects::metrics_subject(service, instance);
        let messages = bus::tail(&self.stream, &subject, Since::Time(start), limit, turn).await?;
        Ok(messages
            .iter()
            .filter_map(|m| parse(&m.subject, &m.payload))
            .collect())
    }
}

/// The latest snapshot of every instance, with the stream sequence it was
/// stored at.
#[derive(Debug, Default)]
struct Latest {
    held: HashMap<Key, (u64, MetricsSnapshot)>,
}

impl Latest {
    /// Keeps `snapshot`, stored at stream sequence `sequence`, unless it
    /// was taken before `cutoff` (it would never be shown) or the one held
    /// for its instance is as new; true if kept. Newer is later in the
    /// stream, whatever the publisher's clock said; or, at an earlier
    /// sequence, taken later: the stream was made again and counts from 1.
    /// The message held, read again when the feed is opened again, is not
    /// newer.
    fn record(&mut self, sequence: u64, snapshot: MetricsSnapshot, cutoff: DateTime<Utc>) -> bool {
        if snapshot.timestamp < cutoff {
            return false;
        }
        let key = (snapshot.service_name.clone(), snapshot.instance_id.clone());
        let newer = self.held.get(&key).is_none_or(|(held_seq, held)| {
            sequence > *held_seq || snapshot.timestamp > held.timestamp
        });
        if newer {
            self.held.insert(key, (sequence, snapshot));
        }
        newer
    }

    /// The latest snapshot of one instance, however old.
    fn get(&self, service: &str, instance: &str) -> Option<&MetricsSnapshot> {
        self.held
            .get(&(service.to_owned(), instance.to_owned()))
            .map(|(_, s)| s)
    }

    /// Forgets the instances whose latest snapshot was taken before
    /// `cutoff`; returns how many.
    fn prune(&mut self, cutoff: DateTime<Utc>) -> usize {
        let before = self.held.len();
        self.held.retain(|_, (_, s)| s.timestamp >= cutoff);
        before - self.held.len()
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

    fn snapshot(instance: &str, timestamp: DateTime<Utc>, queue_depth: u64) -> MetricsSnapshot {
        MetricsSnapshot {
            service_name: "pricing".into(),
            instance_id: instance.into(),
            timestamp,
            queue_depth,
            ..Default::default()
        }
    }

    fn depth(latest: &Latest, instance: &str) -> Option<u64> {
        latest.get("pricing", instance).map(|s| s.queue_depth)
    }

    #[test]
    fn instances_older_than_the_retention_are_forgotten() {
        let now = Utc::now();
        let hour = chrono::Duration::hours(1);
        let mut latest = Latest::default();
        // A pod replaced by a rollout two hours ago, and the one after it.
        assert!(latest.record(
            1,
            snapshot("p-old", now - hour * 2, 1),
            DateTime::<Utc>::MIN_UTC
        ));
        assert!(latest.record(2, snapshot("p-new", now, 2), DateTime::<Utc>::MIN_UTC));
        assert_eq!(latest.prune(now - hour), 1);
        assert_eq!(depth(&latest, "p-old"), None);
        assert_eq!(depth(&latest, "p-new"), Some(2));
        assert_eq!(latest.held.len(), 1);
        // Read again (the feed opened again), it is not kept again.
        assert!(!latest.record(1, snapshot("p-old", now - hour * 2, 1), now - hour));
        assert_eq!(latest.held.len(), 1);
    }

    #[test]
    fn the_snapshot_held_read_again_is_not_newer() {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::hours(1);
        let mut latest = Latest::default();
        assert!(latest.record(7, snapshot("p-1", now, 1), cutoff));
        assert!(!latest.record(7, snapshot("p-1", now, 1), cutoff));
        // An older message of the same instance is not newer either.
        assert!(!latest.record(
            5,
            snapshot("p-1", now - chrono::Duration::seconds(5), 0),
            cutoff
        ));
        assert!(latest.record(9, snapshot("p-1", now, 3), cutoff));
        assert_eq!(depth(&latest, "p-1"), Some(3));
    }

    #[test]
    fn later_in_the_stream_is_newer_whatever_the_clock_said() {
        let now = Utc::now();
        let cutoff = now - chrono::Duration::hours(1);
        let mut latest = Latest::default();
        // Stamped an hour ahead; the publisher's clock is then stepped back.
        assert!(latest.record(
            3,
            snapshot("p-1", now + chrono::Duration::hours(1), 1),
            cutoff
        ));
        assert!(latest.record(4, snapshot("p-1", now, 2), cutoff));
        assert_eq!(depth(&latest, "p-1"), Some(2));
        // The stream made again counts from 1: a later snapshot is newer.
        let later = now + chrono::Duration::seconds(1);
        assert!(latest.record(1, snapshot("p-1", later, 3), cutoff));
        assert_eq!(depth(&latest, "p-1"), Some(3));
    }
}
