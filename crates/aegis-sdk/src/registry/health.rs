//! An instance's own verdict on its health, kept by its registration: the
//! health check's consecutive failures and an operator's verdict (`aegis
//! chaos unhealthy`, possibly time-limited). The record says UNHEALTHY while
//! either holds, with the reason and since when in its metadata
//! (`statusReason`, `statusSince`), so the monitor and `aegis status` can
//! say why. A check that gives a reason for its failure
//! ([`health_check_with_reason`](crate::rpc::server::ServiceBuilder::health_check_with_reason))
//! has it said too (`statusDetail`, cut by
//! [`cut_status_detail`])
//! while that reason holds.
//!
//! Failed registry writes are not part of it: they are a fact about the
//! registry, not about the instance. After an outage of the registry's
//! stream every instance has failed its writes alike, and a verdict drawn
//! from them would take every instance out of discovery at once when the
//! registry came back (and move sticky leaders for nothing). The
//! registration counts them and logs them, and the readiness probe
//! (`/readyz`, module `probes`) reports them.
//!
//! Pure logic on explicit clocks, so the rules are tested without NATS.

use aegis_contracts::control::cut_status_detail;
use chrono::{DateTime, Utc};
use tokio::time::Instant;

pub use aegis_contracts::control::UnhealthyReason;

/// What an instance reports about its own health.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Health {
    /// Why it reports UNHEALTHY; `None` while healthy. When both reasons
    /// hold, the operator's verdict wins over a failing check.
    pub reason: Option<UnhealthyReason>,
    /// Since when it has reported that reason.
    pub since: Option<DateTime<Utc>>,
    /// The health check's failures in a row (0 when the last one passed).
    pub failed_checks: u32,
    /// What the last failed health check said of its failure (trimmed, and
    /// cut to [`STATUS_DETAIL_MAX_CHARS`](aegis_contracts::control::STATUS_DETAIL_MAX_CHARS)
    /// characters ending with `…`);
    /// `None` while the check passes, or when it gave no reason (a check
    /// made with `health_check` answers only `false`). The record carries
    /// it (metadata `statusDetail`) while `reason` is
    /// [`UnhealthyReason::HealthCheck`].
    pub detail: Option<String>,
    /// When the operator's time-limited verdict ends (`None`: no verdict,
    /// or one without an end).
    pub forced_until: Option<DateTime<Utc>>,
    /// Whether an operator's verdict holds.
    pub forced: bool,
}

impl Health {
    /// Whether the instance reports itself healthy.
    pub fn is_healthy(&self) -> bool {
        self.reason.is_none()
    }
}

/// An operator's verdict: unhealthy until lifted, or until `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Forced {
    until: Option<(Instant, DateTime<Utc>)>,
}

/// The state behind [`Health`].
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    forced: Option<Forced>,
    failed_checks: u32,
    detail: Option<String>,
    current: Option<(UnhealthyReason, DateTime<Utc>)>,
}

impl Tracker {
    /// Sets (or, with `None`, lifts) the operator's verdict.
    pub(crate) fn force(&mut self, until: Option<Option<(Instant, DateTime<Utc>)>>) {
        self.forced = until.map(|until| Forced { until });
    }

    /// Records one health check result: passed, or failed with what it
    /// said (`None`: nothing).
    pub(crate) fn check(&mut self, result: Result<(), Option<String>>) {
        match result {
            Ok(()) => {
                self.failed_checks = 0;
                self.detail = None;
            }
            Err(said) => {
                self.failed_checks = self.failed_checks.saturating_add(1);
                self.detail = said.as_deref().and_then(cut_status_detail);
            }
        }
    }

    /// What the last failed check said, as the record carries it.
    pub(crate) fn detail(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    pub(crate) fn failed_checks(&self) -> u32 {
        self.failed_checks
    }

    /// When the operator's verdict runs out, if it has an end.
    pub(crate) fn forced_until(&self) -> Option<Instant> {
        self.forced.and_then(|f| f.until).map(|(at, _)| at)
    }

    /// Lifts a verdict whose time is up and settles the current reason and
    /// its start. Returns the reason that ended, if it did.
    pub(crate) fn settle(&mut self, now: Instant, wall: DateTime<Utc>) -> Option<UnhealthyReason> {
        if self
            .forced
            .is_some_and(|f| f.until.is_some_and(|(at, _)| at <= now))
        {
            self.forced = None;
        }
        let reason = if self.forced.is_some() {
            Some(UnhealthyReason::Operator)
        } else if self.failed_checks > 0 {
            Some(UnhealthyReason::HealthCheck)
        } else {
            None
        };
        let previous = self.current.map(|(r, _)| r);
        if previous != reason {
            self.current = reason.map(|r| (r, wall));
        }
        previous.filter(|p| Some(*p) != reason)
    }

    /// The verdict as last settled.
    pub(crate) fn health(&self) -> Health {
        Health {
            reason: self.current.map(|(r, _)| r),
            since: self.current.map(|(_, at)| at),
            failed_checks: self.failed_checks,
            detail: self.detail.clone(),
            forced_until: self.forced.and_then(|f| f.until).map(|(_, at)| at),
            forced: self.forced.is_some(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_operator_wins_and_a_timed_verdict_ends_on_time() {
        let t0 = Instant::now();
        let w0 = Utc::now();
        let mut t = Tracker::default();
        t.settle(t0, w0);
        assert!(t.health().is_healthy());

        t.check(Err(None));
        t.settle(t0, w0);
        assert_eq!(t.health().reason, Some(UnhealthyReason::HealthCheck));
        assert_eq!(t.health().since, Some(w0));

        let w1 = w0 + chrono::Duration::seconds(1);
        let until = t0 + Duration::from_secs(5);
        t.force(Some(Some((until, w1 + chrono::Duration::seconds(5)))));
        t.settle(t0, w1);
        let h = t.health();
        assert_eq!(h.reason, Some(UnhealthyReason::Operator));
        assert_eq!(h.since, Some(w1), "a new reason starts its own clock");
        assert!(h.forced);

        // Still failing its check when the verdict ends: back to that.
        let ended = t.settle(until, w1 + chrono::Duration::seconds(5));
        assert_eq!(ended, Some(UnhealthyReason::Operator));
        assert_eq!(t.health().reason, Some(UnhealthyReason::HealthCheck));
        assert!(!t.health().forced);

        t.check(Ok(()));
        t.settle(until, w1);
        assert!(t.health().is_healthy());
        assert_eq!(t.health().since, None);
    }

    #[test]
    fn the_same_reason_keeps_its_start() {
        let t0 = Instant::now();
        let w0 = Utc::now();
        let mut t = Tracker::default();
        t.check(Err(None));
        t.settle(t0, w0);
        t.check(Err(None));
        t.settle(t0, w0 + chrono::Duration::seconds(3));
        assert_eq!(t.health().since, Some(w0));
        assert_eq!(t.health().failed_checks, 2);
    }

    #[test]
    fn a_failed_check_keeps_what_it_said_until_it_passes() {
        let t0 = Instant::now();
        let w0 = Utc::now();
        let mut t = Tracker::default();
        t.check(Err(Some(
            "  the store is full: 1.0 MiB of 1.0 MiB\n".into(),
        )));
        t.settle(t0, w0);
        let h = t.health();
        assert_eq!(h.reason, Some(UnhealthyReason::HealthCheck));
        assert_eq!(
            h.detail.as_deref(),
            Some("the store is full: 1.0 MiB of 1.0 MiB")
        );

        // The newest text is the one kept; a failure that says nothing
        // (an overrun of a bool check) says nothing.
        t.check(Err(Some("the store is full: 1.1 MiB of 1.0 MiB".into())));
        assert_eq!(
            t.health().detail.as_deref(),
            Some("the store is full: 1.1 MiB of 1.0 MiB")
        );
        t.check(Err(None));
        assert_eq!(t.health().detail, None);
        t.check(Err(Some("   ".into())));
        assert_eq!(t.health().detail, None, "a blank text is no reason");

        // Under an operator's verdict the check's text is still known.
        t.check(Err(Some("full".into())));
        t.force(Some(None));
        t.settle(t0, w0);
        assert_eq!(t.health().reason, Some(UnhealthyReason::Operator));
        assert_eq!(t.health().detail.as_deref(), Some("full"));

        t.force(None);
        t.check(Ok(()));
        t.settle(t0, w0);
        assert!(t.health().is_healthy());
        assert_eq!(t.health().detail, None);
    }
}
