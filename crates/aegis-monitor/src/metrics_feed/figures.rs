//! The dashboard's figures: of every instance's latest snapshot, only what
//! a card shows — calls per second and the highest p99, at the precision
//! shown — and whether the snapshots are still coming, sent on the live
//! feed (topic `figures`) once a second, and only for the instances whose
//! shown figures changed. A full metrics snapshot is ~1.2 KB and comes
//! every 2 s per instance: a thousand-instance fleet sent every dashboard
//! ~500 of them a second (~600 KB/s) for two figures per card.
//!
//! A card calls its figures stale when no snapshot came for
//! max(3 intervals, 5 s). Sending every snapshot's time to say that would
//! be sending every snapshot again, so each event instead vouches, as of
//! its `asOf`, that every instance not marked `late` has a snapshot taken
//! within max([`LATE_AFTER_INTERVALS`] intervals, [`LATE_AFTER_MIN`]) —
//! half the stale bound — and an instance is sent again, with the time of
//! its latest snapshot, when it turns late, and while late each time that
//! time moves. A viewer takes an on-time instance's latest snapshot as
//! `asOf` less that bound (the oldest it can be, so its figures never read
//! fresher than true, as with the heartbeat digest), and a late one's
//! exactly. An instance whose process goes down is sent again at the next
//! event too, so the "last known … N s ago" of a dead instance is exact at
//! once.

use std::collections::{HashMap, HashSet};

use std::time::Duration;

use aegis_contracts::MetricsSnapshot;
use chrono::{DateTime, Utc};

use crate::live::{FiguresView, InstanceFigures, InstanceName};

/// How often the figures are sent.
pub(crate) const FIGURES_EVERY: Duration = Duration::from_secs(1);
/// Intervals without a snapshot after which an instance is `late`.
pub(crate) const LATE_AFTER_INTERVALS: f64 = 1.5;
/// The least time without a snapshot after which an instance is `late`
/// (half of the 5 s a card waits at least before calling figures stale).
pub(crate) const LATE_AFTER_MIN: Duration = Duration::from_millis(2500);

type Key = (String, String);

/// A view as of `as_of` with no instance yet.
fn empty_view(as_of: DateTime<Utc>, full: bool) -> FiguresView {
    FiguresView {
        as_of,
        full,
        late_after_intervals: LATE_AFTER_INTERVALS,
        late_after_min_secs: LATE_AFTER_MIN.as_secs_f64(),
        instances: Vec::new(),
        forgotten: Vec::new(),
    }
}

/// How long without a snapshot before an instance publishing every
/// `interval_secs` is late.
fn late_after(interval_secs: f64) -> chrono::Duration {
    let secs = (interval_secs.max(0.0) * LATE_AFTER_INTERVALS).max(LATE_AFTER_MIN.as_secs_f64());
    chrono::Duration::milliseconds((secs * 1000.0).min(1e12) as i64)
}

/// Rounds `value` to `digits` decimals as the UI's number format does
/// (`Intl.NumberFormat`): to the nearest of the value the float really
/// holds, a tie up. Multiplying first would not do: 26.45 is held as
/// 26.4499…, shown as 26.4, but 26.45 × 10 is 264.5, which rounds to 26.5.
fn round(value: f64, digits: usize) -> f64 {
    if !value.is_finite() {
        return 0.0;
    }
    // The float's exact decimal expansion, far enough to tell a tie from
    // a value beside one at the magnitudes figures have.
    let exact = format!("{:.40}", value.abs());
    let (whole, fraction) = exact.split_once('.').unwrap_or((&exact, ""));
    let (kept, rest) = fraction.split_at(digits.min(fraction.len()));
    let mut shown: f64 = format!("{whole}.{kept}0").parse().unwrap_or(0.0);
    if rest.as_bytes().first().is_some_and(|d| *d >= b'5') {
        shown += 10f64.powi(-(digits as i32));
        // Back to the nearest float of the decimal just made.
        shown = format!("{shown:.digits$}").parse().unwrap_or(shown);
    }
    shown.copysign(value)
}

/// A latency as a card shows it: 2 decimals below 1 ms, 1 below 100 ms,
/// none above (the UI's `ms`).
fn round_ms(value: f64) -> f64 {
    let digits = if value < 1.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    round(value, digits)
}

/// What a card shows of `snapshot` at `now`.
pub(crate) fn figures_of(snapshot: &MetricsSnapshot, now: DateTime<Utc>) -> InstanceFigures {
    let finite = |v: f64| if v.is_finite() { v } else { 0.0 };
    let mut calls = 0.0;
    let mut p99: Option<f64> = None;
    for e in &snapshot.endpoints {
        let rate = finite(e.request_rate);
        calls += rate;
        // Percentiles cover the interval: an endpoint idle in it has none.
        if rate > 0.0 {
            let v = finite(e.latency_ms.p99);
            p99 = Some(p99.map_or(v, |p| p.max(v)));
        }
    }
    InstanceFigures {
        service_name: snapshot.service_name.clone(),
        instance_id: snapshot.instance_id.clone(),
        timestamp: snapshot.timestamp,
        interval_secs: finite(snapshot.interval_secs),
        calls_per_sec: round(calls, 1),
        p99_ms: p99.map(round_ms),
        late: now.signed_duration_since(snapshot.timestamp) > late_after(snapshot.interval_secs),
    }
}

/// Whether a viewer holding `sent` would show something else than `now`
/// says: other figures, lateness or interval, or, while late, another
/// time of the latest snapshot.
fn differs(sent: &InstanceFigures, now: &InstanceFigures) -> bool {
    sent.calls_per_sec != now.calls_per_sec
        || sent.p99_ms != now.p99_ms
        || sent.late != now.late
        || sent.interval_secs != now.interval_secs
        || (now.late && sent.timestamp != now.timestamp)
}

/// Every instance's figures as of `now`, sorted.
pub(crate) fn full<'a>(
    snapshots: impl Iterator<Item = &'a MetricsSnapshot>,
    now: DateTime<Utc>,
) -> FiguresView {
    let mut view = empty_view(now, true);
    view.instances = snapshots.map(|s| figures_of(s, now)).collect();
    view.instances
        .sort_by(|a, b| (&a.service_name, &a.instance_id).cmp(&(&b.service_name, &b.instance_id)));
    view
}

/// What was last sent of each instance, to send only what changed.
#[derive(Debug, Default)]
pub(crate) struct Sent {
    sent: HashMap<Key, InstanceFigures>,
    /// Instances to send at the next tick whatever changed (their process
    /// went down: their latest snapshot's time is then its last).
    owed: HashSet<Key>,
    /// Every instance is owed (the news of processes going down was lost).
    all_owed: bool,
}

impl Sent {
    /// Sends `service`/`instance` at the next tick.
    pub(crate) fn owe(&mut self, service: &str, instance: &str) {
        self.owed.insert((service.to_owned(), instance.to_owned()));
    }

    /// Sends every instance at the next tick.
    pub(crate) fn owe_all(&mut self) {
        self.all_owed = true;
    }

    /// The figures to send as of `now`, given every instance's latest
    /// snapshot: the instances whose shown figures changed (or that are
    /// owed), and those no longer held.
    pub(crate) fn tick<'a>(
        &mut self,
        snapshots: impl Iterator<Item = &'a MetricsSnapshot>,
        now: DateTime<Utc>,
    ) -> FiguresView {
        let mut view = empty_view(now, false);
        let mut held = HashSet::with_capacity(self.sent.len());
        for snapshot in snapshots {
            let key = (snapshot.service_name.clone(), snapshot.instance_id.clone());
            let figures = figures_of(snapshot, now);
            let owed = self.all_owed || self.owed.contains(&key);
            let send = owed || self.sent.get(&key).is_none_or(|s| differs(s, &figures));
            if send {
                view.instances.push(figures.clone());
                self.sent.insert(key.clone(), figures);
            }
            held.insert(key);
        }
        self.sent.retain(|(service, instance), _| {
            let keep = held.contains(&(service.clone(), instance.clone()));
            if !keep {
                view.forgotten.push(InstanceName {
                    service_name: service.clone(),
                    instance_id: instance.clone(),
                });
            }
            keep
        });
        self.owed.clear();
        self.all_owed = false;
        view.instances.sort_by(|a, b| {
            (&a.service_name, &a.instance_id).cmp(&(&b.service_name, &b.instance_id))
        });
        view.forgotten.sort_by(|a, b| {
            (&a.service_name, &a.instance_id).cmp(&(&b.service_name, &b.instance_id))
        });
        view
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::{EndpointMetrics, LatencySummary};

    use super::*;

    fn endpoint(rate: f64, p99: f64) -> EndpointMetrics {
        EndpointMetrics {
            name: "get_price".into(),
            request_rate: rate,
            latency_ms: LatencySummary {
                p99,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn snapshot(
        instance: &str,
        at: DateTime<Utc>,
        endpoints: Vec<EndpointMetrics>,
    ) -> MetricsSnapshot {
        MetricsSnapshot {
            service_name: "pricing".into(),
            instance_id: instance.into(),
            timestamp: at,
            interval_secs: 2.0,
            endpoints,
            ..Default::default()
        }
    }

    fn secs(n: f64) -> chrono::Duration {
        chrono::Duration::milliseconds((n * 1000.0) as i64)
    }

    #[test]
    fn a_card_shows_the_calls_and_the_highest_p99_of_the_endpoints_called() {
        let now = Utc::now();
        let s = snapshot(
            "p-1",
            now,
            vec![
                endpoint(12.34, 4.86),
                endpoint(0.0, 99.0),
                endpoint(3.0, 0.4),
            ],
        );
        let f = figures_of(&s, now);
        assert_eq!(f.calls_per_sec, 15.3);
        // The idle endpoint's p99 is no figure of this interval.
        assert_eq!(f.p99_ms, Some(4.9));
        assert!(!f.late);
        let idle = figures_of(&snapshot("p-1", now, vec![endpoint(0.0, 7.0)]), now);
        assert_eq!((idle.calls_per_sec, idle.p99_ms), (0.0, None));
        assert_eq!(round_ms(0.456), 0.46);
        assert_eq!(round_ms(123.6), 124.0);
    }

    /// As `Intl.NumberFormat` shows them (maximumFractionDigits): the
    /// float's own value decides, a tie goes up.
    #[test]
    fn figures_are_rounded_as_the_ui_shows_them() {
        let sum = 12.3 + 8.1 + 2.05 + 3.5 + 0.5; // 26.4499…
        assert_eq!(round(sum, 1), 26.4);
        assert_eq!(round(0.25, 1), 0.3);
        assert_eq!(round(0.125, 2), 0.13);
        assert_eq!(round(9.85, 1), 9.8); // 9.8499…
        assert_eq!(round(2.675, 2), 2.67); // 2.67499…
        assert_eq!(round(99.96, 1), 100.0);
        assert_eq!(round(0.0, 1), 0.0);
        assert_eq!(round(f64::NAN, 1), 0.0);
    }

    #[test]
    fn only_what_a_card_would_show_differently_is_sent_again() {
        let t0 = Utc::now();
        let mut sent = Sent::default();
        let first = sent.tick(
            [snapshot("p-1", t0, vec![endpoint(27.01, 5.02)])].iter(),
            t0,
        );
        assert_eq!(first.instances.len(), 1);
        // A newer snapshot reading the same at the precision shown.
        let t1 = t0 + secs(2.0);
        let same = sent.tick(
            [snapshot("p-1", t1, vec![endpoint(27.04, 4.98)])].iter(),
            t1,
        );
        assert!(same.instances.is_empty(), "{same:?}");
        let moved = sent.tick([snapshot("p-1", t1, vec![endpoint(27.2, 5.0)])].iter(), t1);
        assert_eq!(moved.instances[0].calls_per_sec, 27.2);
        // Owed (its process went down): sent whatever changed.
        sent.owe("pricing", "p-1");
        let owed = sent.tick([snapshot("p-1", t1, vec![endpoint(27.2, 5.0)])].iter(), t1);
        assert_eq!(owed.instances.len(), 1);
        assert_eq!(owed.instances[0].timestamp, t1);
        // No longer held: forgotten, once.
        let none: [MetricsSnapshot; 0] = [];
        let gone = sent.tick(none.iter(), t1);
        assert_eq!(gone.forgotten.len(), 1);
        assert!(sent.tick(none.iter(), t1).forgotten.is_empty());
    }

    /// The invariant a viewer relies on: every instance not sent late has,
    /// as of the event, a snapshot within the late bound; a late one's
    /// time is the one sent, sent again whenever it moves.
    #[test]
    fn an_instance_without_a_new_snapshot_is_sent_late_with_its_exact_time() {
        let t0 = Utc::now();
        let s = snapshot("p-1", t0, vec![endpoint(1.0, 1.0)]);
        let mut sent = Sent::default();
        sent.tick([s.clone()].iter(), t0);
        // Within 1.5 intervals (3 s): nothing to say.
        assert!(
            sent.tick([s.clone()].iter(), t0 + secs(3.0))
                .instances
                .is_empty()
        );
        let late = sent.tick([s.clone()].iter(), t0 + secs(3.1));
        assert!(late.instances[0].late);
        assert_eq!(late.instances[0].timestamp, t0);
        assert!(
            sent.tick([s.clone()].iter(), t0 + secs(9.0))
                .instances
                .is_empty()
        );
        // A late instance's next snapshot: sent, on time again.
        let next = snapshot("p-1", t0 + secs(9.5), vec![endpoint(1.0, 1.0)]);
        let back = sent.tick([next].iter(), t0 + secs(10.0));
        assert!(!back.instances[0].late);
        assert_eq!(back.instances[0].timestamp, t0 + secs(9.5));
        // An interval of 0 is late after 2.5 s, not at once.
        let mut zero = snapshot("p-2", t0, vec![]);
        zero.interval_secs = 0.0;
        assert!(!figures_of(&zero, t0 + secs(2.4)).late);
        assert!(figures_of(&zero, t0 + secs(2.6)).late);
    }
}
