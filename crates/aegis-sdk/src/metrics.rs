//! Per-endpoint measurements of a service instance: request and error counts
//! and a latency histogram (HDR, microsecond resolution, so percentiles are
//! real percentiles and not averages), plus two gauges: the requests in
//! flight and the queue depth.
//!
//! The RPC server records into an [`InstanceMetrics`]; [`InstanceMetrics::snapshot`]
//! turns the counters into the [`MetricsSnapshot`] contract that instances
//! publish and the monitor reads.
//!
//! What the two gauges count:
//!
//! - in flight: RPC requests whose handling has started and not ended
//!   ([`InstanceMetrics::start_request`]).
//! - queue depth: messages this instance received and has not started
//!   handling ([`InstanceMetrics::enqueue`]). The one place such messages
//!   wait in the instance is a [`leader_of`](crate::commands::CommandWorkerBuilder::leader_of)
//!   command worker's commands taken while the leader's lease has lapsed:
//!   they wait for the lease before they run, counted on the service they
//!   follow. Nothing else is counted, because nothing else waits where it
//!   can be counted: event subscriptions and command workers pull only as
//!   many messages as they have free handlers and start each at once (the
//!   rest wait on the server), and RPC requests start as they are read.
//!   An endpoint with 1024 requests in flight reads no more until one
//!   ends, and the requests arriving meanwhile wait in the NATS client's
//!   subscription buffer, which the client does not count: they are in
//!   neither figure.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::metrics::{EndpointMetrics, LatencySummary, MetricsSnapshot};
use hdrhistogram::Histogram;

/// Counters and a latency histogram of one endpoint.
#[derive(Debug)]
pub struct EndpointRecorder {
    name: String,
    successes: AtomicU64,
    errors: AtomicU64,
    // A short critical section per request; contention is negligible next to a
    // network round trip, and HDR recording is a few nanoseconds.
    latency_us: Mutex<Histogram<u64>>,
    last: Mutex<(u64, u64)>,
}

impl EndpointRecorder {
    fn new(name: String) -> Self {
        Self {
            name,
            successes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency_us: Mutex::new(new_histogram()),
            last: Mutex::new((0, 0)),
        }
    }

    /// Records one handled request.
    pub fn record(&self, latency: Duration, ok: bool) {
        if ok {
            self.successes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        if let Ok(mut h) = self.latency_us.lock() {
            h.saturating_record(us);
        }
    }

    /// Successful requests so far.
    pub fn successes(&self) -> u64 {
        self.successes.load(Ordering::Relaxed)
    }

    /// Failed requests so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 3 significant digits; the bounds are constants, so this cannot fail.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// All measurements of one service instance.
#[derive(Debug)]
pub struct InstanceMetrics {
    service: String,
    instance: String,
    started: Instant,
    last_snapshot: Mutex<Instant>,
    endpoints: Mutex<BTreeMap<String, Arc<EndpointRecorder>>>,
    in_flight: AtomicU64,
    queued: AtomicU64,
    custom: Mutex<BTreeMap<String, f64>>,
}

impl InstanceMetrics {
    /// Empty metrics for an instance.
    pub fn new(service: impl Into<String>, instance: impl Into<String>) -> Self {
        let now = Instant::now();
        Self {
            service: service.into(),
            instance: instance.into(),
            started: now,
            last_snapshot: Mutex::new(now),
            endpoints: Mutex::new(BTreeMap::new()),
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            custom: Mutex::new(BTreeMap::new()),
        }
    }

    /// The recorder of an endpoint, created on first use.
    pub fn endpoint(&self, name: &str) -> Arc<EndpointRecorder> {
        let mut map = self.endpoints.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(EndpointRecorder::new(name.to_owned())))
            .clone()
    }

    /// Marks a request as started; the guard marks it finished on drop.
    pub fn start_request(&self) -> InFlightGuard<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self)
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Marks a message as received and waiting to be handled; the guard
    /// marks it taken (started, or given back) on drop.
    pub fn enqueue(&self) -> QueuedGuard<'_> {
        self.queued.fetch_add(1, Ordering::Relaxed);
        QueuedGuard(self)
    }

    /// Messages received and not yet being handled (see the
    /// [module docs](self) for which are counted).
    pub fn queue_depth(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Sets a service-specific gauge or counter published with the snapshot
    /// (e.g. `orders_created`).
    pub fn set_custom(&self, name: impl Into<String>, value: f64) {
        self.custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), value);
    }

    /// Adds to a service-specific counter.
    pub fn add_custom(&self, name: &str, delta: f64) {
        *self
            .custom
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_insert(0.0) += delta;
    }

    /// The current snapshot. Latency percentiles and rates cover the interval
    /// since the previous snapshot; counts are totals since start; the queue
    /// depth and the requests in flight are as they stand now.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let now = Instant::now();
        let interval = {
            let mut last = self.last_snapshot.lock().unwrap_or_else(|e| e.into_inner());
            let d = now.duration_since(*last);
            *last = now;
            d.as_secs_f64().max(1e-3)
        };
        let endpoints = self
            .endpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|r| endpoint_snapshot(r, interval))
            .collect();
        MetricsSnapshot {
            service_name: self.service.clone(),
            instance_id: self.instance.clone(),
            timestamp: chrono::Utc::now(),
            uptime_secs: now.duration_since(self.started).as_secs_f64(),
            interval_secs: interval,
            endpoints,
            queue_depth: self.queue_depth(),
            in_flight: self.in_flight(),
            custom: self
                .custom
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

fn endpoint_snapshot(r: &EndpointRecorder, interval: f64) -> EndpointMetrics {
    let successes = r.successes();
    let errors = r.errors();
    let (prev_ok, prev_err) = {
        let mut last = r.last.lock().unwrap_or_else(|e| e.into_inner());
        let prev = *last;
        *last = (successes, errors);
        prev
    };
    let delta_ok = successes.saturating_sub(prev_ok);
    let delta_err = errors.saturating_sub(prev_err);
    let latency_ms = {
        let mut h = r.latency_us.lock().unwrap_or_else(|e| e.into_inner());
        let summary = if h.is_empty() {
            LatencySummary::default()
        } else {
            let ms = |us: u64| us as f64 / 1000.0;
            LatencySummary {
                p50: ms(h.value_at_quantile(0.50)),
                p90: ms(h.value_at_quantile(0.90)),
                p99: ms(h.value_at_quantile(0.99)),
                max: ms(h.max()),
                mean: h.mean() / 1000.0,
            }
        };
        h.reset();
        summary
    };
    EndpointMetrics {
        name: r.name.clone(),
        requests: successes + errors,
        successes,
        errors,
        request_rate: (delta_ok + delta_err) as f64 / interval,
        error_rate: delta_err as f64 / interval,
        latency_ms,
    }
}

/// Marks one request in flight until dropped. It borrows the metrics
/// rather than counting a reference to them: one shared count fewer per
/// request.
#[derive(Debug)]
pub struct InFlightGuard<'a>(&'a InstanceMetrics);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one message in the queue depth until dropped.
#[derive(Debug)]
pub struct QueuedGuard<'a>(&'a InstanceMetrics);

impl Drop for QueuedGuard<'_> {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_reports_percentiles_and_counts() {
        let m = Arc::new(InstanceMetrics::new("pricing-service", "p1"));
        let e = m.endpoint("get_price");
        for i in 1..=100u64 {
            e.record(Duration::from_millis(i), i % 10 != 0);
        }
        let queued: Vec<_> = (0..3).map(|_| m.enqueue()).collect();
        {
            let _g = m.start_request();
            assert_eq!(m.in_flight(), 1);
            assert_eq!(m.queue_depth(), 3);
        }
        assert_eq!(m.in_flight(), 0);
        let s = m.snapshot();
        assert_eq!((s.queue_depth, s.in_flight), (3, 0));
        drop(queued);
        assert_eq!(m.queue_depth(), 0);
        let ep = &s.endpoints[0];
        assert_eq!((ep.requests, ep.successes, ep.errors), (100, 90, 10));
        assert!(
            (ep.latency_ms.p50 - 50.0).abs() < 1.0,
            "{:?}",
            ep.latency_ms
        );
        assert!((ep.latency_ms.p99 - 99.0).abs() < 1.0);
        assert!(ep.request_rate > 0.0);
        // The next interval has no requests: rates and latency reset, totals stay.
        let s = m.snapshot();
        assert_eq!(s.endpoints[0].requests, 100);
        assert_eq!(s.endpoints[0].request_rate, 0.0);
        assert_eq!(s.endpoints[0].latency_ms.p99, 0.0);
    }
}
