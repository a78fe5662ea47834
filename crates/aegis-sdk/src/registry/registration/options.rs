//! The timing of a registration ([`RegistrationOptions`]), its defaults and
//! the record's metadata keys that publish it.

use std::time::Duration;

use crate::registry::RegistryError;

/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);
/// Default interval at which an unchanged record is re-written to renew its
/// TTL: with the default TTL it leaves 11 s for a write to land, above the
/// longest registry stall seen (a stream leader election, 4–9 s).
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(4);
/// Default time a record lives on the server without a heartbeat: longer
/// than the longest stall of the registry's stream — in a cluster, after
/// the node leading it dies, its followers wait 4–9 s before they elect a
/// new leader and no write lands meanwhile. A crash is seen much sooner than
/// the TTL: the server's disconnect advisory and the missing liveness beats
/// (`aegis.heartbeat.{service}.{instance}`) tell a monitor at once, and
/// callers route around a dead instance on their first call that finds no
/// responder. The TTL is the backstop for a hung or partitioned process.
pub const DEFAULT_TTL: Duration = Duration::from_secs(15);
/// Default number of failed writes in a row before the readiness probe
/// (`/readyz`, module `probes`) reports the instance not ready: with the
/// retry back-off, about as long as the default TTL, so a registry stall
/// that the record outlives (a stream leader election) does not flag anyone.
pub const DEFAULT_UNREADY_AFTER: u32 = 15;
/// The former name of [`DEFAULT_UNREADY_AFTER`].
#[deprecated(note = "renamed DEFAULT_UNREADY_AFTER: it governs only /readyz")]
pub const DEFAULT_UNHEALTHY_AFTER: u32 = DEFAULT_UNREADY_AFTER;
/// The record's metadata key naming the NATS connection the instance is
/// served over ([`crate::Connection::connection_name`]).
pub const METADATA_CONNECTION: &str = "natsConnection";
/// The record's metadata key holding an id made for each registration, new
/// at each start: it tells the record of one registration from another's
/// under the same instance id, on another connection or the same one (a
/// service restarted in place), so neither deletes nor mistakes for its
/// own the record the other wrote.
pub const METADATA_REGISTRATION: &str = "registrationId";
/// The record's metadata key giving the liveness beat interval in
/// milliseconds (beats go to `aegis.heartbeat.{service}.{instance}`).
pub const METADATA_HEARTBEAT_MS: &str = "heartbeatMs";
/// The record's metadata key giving, in milliseconds, how often an unchanged
/// record is re-written ([`RegistrationOptions::effective_refresh`]): its
/// `lastHeartbeat` is at most this old (plus a stall) while it lives.
pub const METADATA_REFRESH_MS: &str = "refreshMs";
/// The shortest heartbeat accepted: a shorter one would beat on every
/// timer tick, and the record's `heartbeatMs` could say 0, which readers
/// take for an instance that does not beat.
const MIN_HEARTBEAT: Duration = Duration::from_millis(10);
/// The shortest TTL the server accepts.
pub const MIN_TTL: Duration = Duration::from_secs(1);
/// The longest TTL accepted: thirty days, far past any stall a record must
/// outlive (and the heartbeat is below it, so no beat is waited for longer).
pub const MAX_TTL: Duration = crate::clock::LONGEST_PERIOD;

/// Timing of a registration.
///
/// The TTL bounds how long a hung or partitioned instance stays listed (a
/// crash is seen at once from the server's disconnect advisory and the
/// liveness beats, and callers route around it: a call that finds no
/// responder evicts it locally). It must outlast the registry's own
/// hiccups: in a cluster, a stream leader election stalls writes for 4–9 s,
/// and a record whose TTL ran out meanwhile would disappear until the next
/// successful beat. Choose `ttl` above the longest stall you want to ride
/// out (the default, 15 s, rides out a leader election).
///
/// ```
/// use std::time::Duration;
/// use aegis_sdk::registry::RegistrationOptions;
///
/// let opts = RegistrationOptions { ttl: Duration::from_secs(10), ..Default::default() };
/// opts.validate().unwrap();
/// // The record is re-written on a beat: at most a third of the TTL apart.
/// let bad = RegistrationOptions { heartbeat: Duration::from_secs(4), ..opts };
/// assert!(bad.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationOptions {
    /// How often the liveness beat goes out and the health check runs
    /// (default 1 s, at least 10 ms); at most a third of `ttl`, since the
    /// record is re-written on a beat and must be at least three times per
    /// TTL. A changed record is written at the next beat at the latest.
    pub heartbeat: Duration,
    /// How often an unchanged record is re-written to renew its TTL
    /// (default 4 s); held between `heartbeat` and a third of `ttl` (see
    /// [`effective_refresh`](Self::effective_refresh)).
    pub refresh: Duration,
    /// How long the server keeps the record without a refresh (default 15 s,
    /// at least 1 s, at most 30 days).
    pub ttl: Duration,
    /// Failed writes in a row after which the readiness probe (`/readyz`,
    /// module `probes`) reports the instance not ready, until a write works
    /// again (default 15, at least 1). Only the probe: the record's status
    /// and the instance's health verdict
    /// ([`RegistrationHandle::health`](super::RegistrationHandle::health))
    /// do not depend on registry writes, which fail for every instance
    /// alike while the registry is in trouble. The failures are logged and
    /// counted
    /// ([`consecutive_failures`](super::RegistrationHandle::consecutive_failures)).
    pub unready_after: u32,
    /// The former name of [`unready_after`](Self::unready_after), from
    /// when failed writes also marked the record UNHEALTHY. Still read:
    /// it applies while `unready_after` is left at its default (see
    /// [`unready_threshold`](Self::unready_threshold)).
    #[deprecated(note = "renamed `unready_after`: it governs only /readyz")]
    pub unhealthy_after: u32,
}

impl Default for RegistrationOptions {
    fn default() -> Self {
        Self {
            heartbeat: DEFAULT_HEARTBEAT,
            refresh: DEFAULT_REFRESH,
            ttl: DEFAULT_TTL,
            unready_after: DEFAULT_UNREADY_AFTER,
            #[allow(deprecated)]
            unhealthy_after: DEFAULT_UNREADY_AFTER,
        }
    }
}

impl RegistrationOptions {
    /// Checks that the timing can work.
    ///
    /// # Errors
    /// [`RegistryError::InvalidOptions`] when the TTL is under 1 s or over
    /// [`MAX_TTL`] (30 days), the heartbeat is under 10 ms or longer than a
    /// third of the TTL, or `unready_after` (or the deprecated
    /// `unhealthy_after`) is 0.
    pub fn validate(&self) -> Result<(), RegistryError> {
        let invalid = |m: String| Err(RegistryError::InvalidOptions(m));
        if self.ttl < MIN_TTL {
            return invalid(format!(
                "ttl {:?} is below the server's minimum of {MIN_TTL:?}",
                self.ttl
            ));
        }
        if self.ttl > MAX_TTL {
            return invalid(format!(
                "ttl {:?} is above the longest accepted, {MAX_TTL:?} (30 days)",
                self.ttl
            ));
        }
        if self.heartbeat < MIN_HEARTBEAT {
            return invalid(format!(
                "heartbeat {:?} is below the shortest accepted, {MIN_HEARTBEAT:?} (a beat per \
                 timer tick, which the record would publish as no beat at all)",
                self.heartbeat
            ));
        }
        if self.heartbeat > self.ttl / 3 {
            return invalid(format!(
                "heartbeat {:?} must be at most a third of ttl {:?} ({:?}): the record is \
                 re-written on a beat, at least three times per TTL, so that two lost writes \
                 in a row do not let it expire",
                self.heartbeat,
                self.ttl,
                self.ttl / 3
            ));
        }
        if self.refresh.is_zero() {
            return invalid("refresh must be greater than zero".to_owned());
        }
        if self.unready_after == 0 {
            return invalid("unready_after must be at least 1".to_owned());
        }
        #[allow(deprecated)]
        if self.unhealthy_after == 0 {
            return invalid(
                "unhealthy_after (now named unready_after) must be at least 1".to_owned(),
            );
        }
        Ok(())
    }

    /// The failed writes in a row after which `/readyz` says not ready:
    /// [`unready_after`](Self::unready_after), or the deprecated
    /// `unhealthy_after` when only that one was changed from the default.
    pub fn unready_threshold(&self) -> u32 {
        #[allow(deprecated)]
        let old = self.unhealthy_after;
        if self.unready_after == DEFAULT_UNREADY_AFTER {
            old
        } else {
            self.unready_after
        }
    }

    /// How often an unchanged record is actually re-written: `refresh`, but
    /// no more often than every beat and at least three times per TTL, so
    /// two lost writes in a row do not let the record expire (a valid
    /// heartbeat is at most a third of the TTL, so both hold).
    ///
    /// ```
    /// use std::time::Duration;
    /// use aegis_sdk::registry::RegistrationOptions;
    ///
    /// assert_eq!(RegistrationOptions::default().effective_refresh(), Duration::from_secs(4));
    /// let short = RegistrationOptions { ttl: Duration::from_secs(3), ..Default::default() };
    /// assert_eq!(short.effective_refresh(), Duration::from_secs(1));
    /// ```
    pub fn effective_refresh(&self) -> Duration {
        self.refresh.min(self.ttl / 3).max(self.heartbeat)
    }

    /// How long one write may wait for its acknowledgement.
    pub(super) fn write_timeout(&self) -> Duration {
        self.heartbeat
            .clamp(Duration::from_millis(500), Duration::from_secs(5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `unhealthy_after` governs only `/readyz`: its name is now
    /// `unready_after`, and the old one still works, deprecated.
    #[test]
    fn unready_after_sets_the_threshold_and_the_old_name_still_works() {
        assert_eq!(
            RegistrationOptions::default().unready_threshold(),
            DEFAULT_UNREADY_AFTER
        );
        let new = RegistrationOptions {
            unready_after: 3,
            ..Default::default()
        };
        assert_eq!(new.unready_threshold(), 3);
        #[allow(deprecated)]
        let old = RegistrationOptions {
            unhealthy_after: 4,
            ..Default::default()
        };
        assert_eq!(old.unready_threshold(), 4);
        // Both set: the new name wins.
        #[allow(deprecated)]
        let both = RegistrationOptions {
            unhealthy_after: 4,
            unready_after: 5,
            ..Default::default()
        };
        assert_eq!(both.unready_threshold(), 5);
        for zero in [
            RegistrationOptions {
                unready_after: 0,
                ..Default::default()
            },
            #[allow(deprecated)]
            RegistrationOptions {
                unhealthy_after: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                zero.validate(),
                Err(RegistryError::InvalidOptions(_))
            ));
        }
    }

    /// A beat of a few nanoseconds would go out on every timer tick, and
    /// the record would say `heartbeatMs: 0`, which readers take for an
    /// instance that does not beat: under 10 ms is refused.
    #[test]
    fn a_heartbeat_under_ten_milliseconds_is_refused() {
        for heartbeat in [
            Duration::from_nanos(1),
            Duration::from_micros(999),
            Duration::from_micros(9_999),
        ] {
            let options = RegistrationOptions {
                heartbeat,
                ..Default::default()
            };
            let Err(RegistryError::InvalidOptions(why)) = options.validate() else {
                panic!("{options:?} is accepted");
            };
            assert!(why.contains("10ms"), "{why}");
        }
        RegistrationOptions {
            heartbeat: Duration::from_millis(10),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    /// The record is re-written on a beat, so a beat longer than a third
    /// of the TTL would renew it less than three times per TTL: two lost
    /// writes in a row (or one slow one) would let it expire. Such a
    /// timing is refused, and every accepted one refreshes three times.
    #[test]
    fn the_record_is_refreshed_at_least_three_times_per_ttl() {
        let secs = Duration::from_secs;
        for (heartbeat, ttl) in [
            (secs(10), secs(15)),
            (Duration::from_millis(14_900), secs(15)),
            (Duration::from_millis(5_001), secs(15)),
            (secs(2), secs(3)),
        ] {
            let options = RegistrationOptions {
                heartbeat,
                ttl,
                ..Default::default()
            };
            let Err(RegistryError::InvalidOptions(why)) = options.validate() else {
                panic!(
                    "{options:?} is accepted: refreshed every {:?}",
                    options.effective_refresh()
                );
            };
            assert!(why.contains("a third of"), "{why}");
        }
        for (heartbeat, ttl) in [
            (DEFAULT_HEARTBEAT, DEFAULT_TTL),
            (secs(5), secs(15)),
            (secs(1), secs(3)),
            (Duration::from_millis(333), secs(1)),
            (Duration::from_millis(500), secs(2)),
        ] {
            let options = RegistrationOptions {
                heartbeat,
                ttl,
                ..Default::default()
            };
            options.validate().unwrap();
            assert!(options.effective_refresh() <= ttl / 3, "{options:?}");
        }
    }
}
