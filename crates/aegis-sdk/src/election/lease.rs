//! Lease timing: when a leader must stop serving and when a standby may take
//! over. Pure logic on `Instant`s, unit-tested without NATS.

use std::time::{Duration, Instant};

use super::{DEFAULT_LEASE, ElectionError};
use crate::clock::{self, LONGEST_PERIOD};

/// Lease and renewal timing of an election.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseConfig {
    /// How long a renewal keeps the leader in office. A standby takes over
    /// after seeing no renewal for this long.
    pub lease: Duration,
    /// How often the leader renews (well inside the lease: at most a third).
    pub renew_interval: Duration,
    /// How much earlier than the lease the leader stops serving on its own,
    /// covering message delay and clock-rate differences.
    pub safety_margin: Duration,
    /// How long past its lease a leader keeps serving while the election's
    /// store cannot be reached at all (its JetStream stream electing a new
    /// leader after a NATS node died: 4–9 s, fixed in the server) and its
    /// own NATS connection is up. Zero (the default) turns this off.
    ///
    /// Only for services whose writes are fenced by their store (as
    /// order-service's are): a leader cut off from the stream while others
    /// reach it can overlap with a successor for up to this long, and only
    /// a store that refuses the old epoch's writes keeps that harmless.
    /// See [`with_ride_out`](Self::with_ride_out).
    pub ride_out: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self::with_lease(DEFAULT_LEASE)
    }
}

impl LeaseConfig {
    /// A config for `lease`, renewing every quarter lease, with a fifth of
    /// the lease as safety margin.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            renew_interval: lease / 4,
            safety_margin: lease / 5,
            ride_out: Duration::ZERO,
        }
    }

    /// This config, riding out an unreachable election store for up to
    /// `ride_out` (see the field's docs for when that is safe).
    ///
    /// ```
    /// use std::time::Duration;
    /// use aegis_sdk::election::LeaseConfig;
    ///
    /// let fenced = LeaseConfig::default().with_ride_out(Duration::from_secs(10));
    /// fenced.validate().unwrap();
    /// ```
    pub fn with_ride_out(mut self, ride_out: Duration) -> Self {
        self.ride_out = ride_out;
        self
    }

    /// Checks that the timing keeps two leaders apart (and that the lease is
    /// at most 30 days: past that, a crashed leader's group would wait
    /// longer for a successor than any service can).
    ///
    /// # Errors
    /// [`ElectionError::InvalidTiming`] naming the rule broken.
    pub fn validate(&self) -> Result<(), ElectionError> {
        let bad = |m: &str| Err(ElectionError::InvalidTiming(m.to_owned()));
        if self.lease < Duration::from_millis(50) {
            return bad("lease must be at least 50 ms");
        }
        if self.lease > LONGEST_PERIOD {
            return bad("lease must be at most 30 days");
        }
        if self.renew_interval.is_zero() || self.renew_interval.saturating_mul(3) > self.lease {
            return bad("renew_interval must be positive and at most a third of the lease");
        }
        if self.safety_margin.is_zero()
            || self.safety_margin.saturating_add(self.renew_interval) >= self.lease
        {
            return bad(
                "safety_margin must be positive and leave room for a renewal inside the lease",
            );
        }
        if self.ride_out > Duration::from_secs(60) {
            return bad("ride_out must be at most 60 s");
        }
        Ok(())
    }

    /// Until when a leader may serve after a renewal it *sent* at `sent_at`
    /// succeeded.
    pub fn serve_until(&self, sent_at: Instant) -> Instant {
        clock::deadline(sent_at, self.lease.saturating_sub(self.safety_margin))
    }

    /// When a standby that *received* the latest change at `seen_at` may try
    /// to take over.
    pub fn takeover_at(&self, seen_at: Instant) -> Instant {
        clock::deadline(seen_at, self.lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_valid_and_sub_second() {
        let c = LeaseConfig::default();
        c.validate().unwrap();
        assert!(c.lease < Duration::from_secs(1));
    }

    #[test]
    fn leader_stops_before_any_standby_can_take_over() {
        let c = LeaseConfig::default();
        let sent = Instant::now();
        // The standby receives the renewal no earlier than it was sent.
        for delay_ms in [0u64, 1, 10, 100] {
            let seen = sent + Duration::from_millis(delay_ms);
            assert!(c.serve_until(sent) < c.takeover_at(seen));
        }
    }

    #[test]
    fn bad_timings_are_refused() {
        let mut c = LeaseConfig::default();
        c.renew_interval = c.lease;
        assert!(matches!(c.validate(), Err(ElectionError::InvalidTiming(_))));
        let c = LeaseConfig {
            safety_margin: Duration::ZERO,
            ..Default::default()
        };
        assert!(c.validate().is_err());
        assert!(
            LeaseConfig::with_lease(Duration::from_millis(10))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn timings_too_long_for_the_clock_are_refused_not_a_panic() {
        let endless = LeaseConfig::with_lease(Duration::MAX);
        assert!(matches!(
            endless.validate(),
            Err(ElectionError::InvalidTiming(_))
        ));
        for c in [
            LeaseConfig {
                renew_interval: Duration::MAX,
                ..Default::default()
            },
            LeaseConfig {
                safety_margin: Duration::MAX,
                ..Default::default()
            },
        ] {
            assert!(matches!(c.validate(), Err(ElectionError::InvalidTiming(_))));
        }
        // The pure timing saturates rather than panics, valid or not.
        let now = Instant::now();
        assert!(endless.serve_until(now) > now);
        assert!(endless.takeover_at(now) > now);
    }
}
