//! Deadlines from durations a caller gave, which may be longer than the
//! clocks can hold: `Instant + Duration` and `DateTime + TimeDelta` panic
//! past their range, and a caller's `Duration::MAX` ("no deadline") is
//! well past it. A wait longer than [`FOREVER`] is cut to it here; a period
//! or lifetime that cannot make sense is refused where its builder is
//! checked (at most [`LONGEST_PERIOD`]).

use std::{ops::Add, time::Duration};

use chrono::{DateTime, Utc};

/// What "effectively forever" is as a wait: a century.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest period or lifetime a builder option may name (a registry
/// TTL, a lease, an ack wait, a metrics interval): thirty days, as the
/// command line's duration flags.
pub(crate) const LONGEST_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

/// `from + wait`, a wait past [`FOREVER`] counting as [`FOREVER`]: never a
/// panic. For `std` and tokio `Instant`s alike; one comparison more than
/// the plain sum.
pub(crate) fn deadline<I: Add<Duration, Output = I>>(from: I, wait: Duration) -> I {
    from + wait.min(FOREVER)
}

/// [`deadline`] on the wall clock (a deadline sent to another process).
pub(crate) fn utc_deadline(from: DateTime<Utc>, wait: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(wait.min(FOREVER))
        .ok()
        .and_then(|wait| from.checked_add_signed(wait))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_too_long_for_the_clocks_is_a_century() {
        let now = std::time::Instant::now();
        assert_eq!(deadline(now, Duration::MAX), now + FOREVER);
        assert_eq!(
            deadline(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        let now = tokio::time::Instant::now();
        assert_eq!(deadline(now, Duration::MAX), now + FOREVER);
        let now = Utc::now();
        let far = utc_deadline(now, Duration::MAX);
        assert_eq!(far - now, chrono::Duration::from_std(FOREVER).unwrap());
        assert_eq!(
            utc_deadline(now, Duration::from_secs(1)) - now,
            chrono::Duration::seconds(1)
        );
    }
}
