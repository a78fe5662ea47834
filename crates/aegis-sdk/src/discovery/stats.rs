//! What a client observes about each instance it calls: a smoothed latency
//! and the calls in flight. The latency-aware strategy compares two random
//! instances on these; the other strategies ignore them.
//!
//! The numbers are local to one [`Connection`](crate::Connection) (every
//! client sees its own network), kept as atomics so recording costs a few
//! nanoseconds per call. Only latency-aware calls record them: on the
//! other paths the counts were shared writes (a cache line passed between
//! the worker threads) on every call, for numbers nothing read. The
//! latency-aware strategy thus weighs the load of its own calls.

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// After this long without a call, an instance's latency counts as unknown
/// again, so one bad moment does not starve it for good.
const REPROBE_AFTER: Duration = Duration::from_secs(1);

/// Milliseconds since the first use, for cheap atomic timestamps.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    u64::try_from(EPOCH.get_or_init(Instant::now).elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Latency and load seen by this process for one instance.
#[derive(Debug, Default)]
pub(crate) struct CallStats {
    /// Exponentially weighted mean latency in µs; 0 until the first call.
    ewma_us: AtomicU64,
    in_flight: AtomicU32,
    /// When the last latency was observed ([`now_ms`]).
    observed_ms: AtomicU64,
}

impl CallStats {
    /// Counts a call in flight until the guard drops.
    pub(crate) fn start(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self)
    }

    /// Folds one observed latency into the mean (weight 1/8: a few calls
    /// move it, one outlier does not).
    pub(crate) fn observe(&self, latency: Duration) {
        self.observed_ms.store(now_ms(), Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let _ = self
            .ewma_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(if old == 0 {
                    us
                } else {
                    old.saturating_mul(7).saturating_add(us) / 8
                })
            });
    }

    /// The smoothed latency, once a call has been observed.
    #[cfg(test)]
    pub(crate) fn latency(&self) -> Option<Duration> {
        match self.ewma_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Lower is better: latency weighted by the calls already waiting. An
    /// instance never called, or not called for a while, scores 0, so new
    /// instances get tried and a slow one gets re-measured.
    pub(crate) fn score(&self) -> u64 {
        self.score_at(now_ms())
    }

    fn score_at(&self, now_ms: u64) -> u64 {
        let observed = self.observed_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(observed) > REPROBE_AFTER.as_millis() as u64 {
            return 0;
        }
        let in_flight = u64::from(self.in_flight.load(Ordering::Relaxed));
        self.ewma_us
            .load(Ordering::Relaxed)
            .saturating_mul(in_flight + 1)
    }
}

/// One call in flight to an instance.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a CallStats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooths_latency_and_weights_load() {
        let s = std::sync::Arc::new(CallStats::default());
        assert_eq!(s.latency(), None);
        assert_eq!(s.score(), 0);
        s.observe(Duration::from_micros(800));
        assert_eq!(s.latency(), Some(Duration::from_micros(800)));
        s.observe(Duration::from_micros(1600));
        assert_eq!(s.latency(), Some(Duration::from_micros(900)));
        let g1 = s.start();
        let _g2 = s.start();
        assert_eq!(s.score(), 900 * 3);
        drop(g1);
        assert_eq!(s.score(), 900 * 2);
        // Not called for a while: unknown again, worth a probe.
        let later = s.observed_ms.load(Ordering::Relaxed) + 1_001;
        assert_eq!(s.score_at(later), 0);
    }
}
