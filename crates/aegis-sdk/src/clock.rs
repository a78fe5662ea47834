//! Durations a caller gave, which may be longer than the clocks can hold:
//! `Instant + Duration` and `DateTime + TimeDelta` panic past their range,
//! and a caller's `Duration::MAX` ("no deadline") is well past it.
//!
//! Public: [`LONGEST_PERIOD`], the one bound on a period or lifetime an
//! option may name, refused where its builder is checked (and by the
//! binaries' duration flags). Internal: deadlines, a wait longer than a
//! century (`FOREVER`) cut to it rather than a panic.

use std::{ops::Add, time::Duration};

use chrono::{DateTime, Utc};

/// What "effectively forever" is as a wait: a century.
pub(crate) const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The longest period or lifetime an option may name: thirty days. The
/// SDK's builders refuse more (a registry TTL, a lease, an ack wait, a
/// metrics interval), and so do the command line's duration flags
/// (`aegis_monitor::config::duration_flag`), which use this constant: far
/// past any stall, timeout or run, and far inside what the clocks can add
/// to the time now without overflowing.
///
/// # Examples
///
/// A duration option of your own, bounded as the SDK's are:
///
/// ```
/// use std::time::Duration;
/// use aegis_sdk::clock::LONGEST_PERIOD;
///
/// fn check_retention(retention: Duration) -> Result<Duration, String> {
///     if retention > LONGEST_PERIOD {
///         return Err(format!("retention must be at most {LONGEST_PERIOD:?}"));
///     }
///     Ok(retention)
/// }
///
/// assert_eq!(LONGEST_PERIOD, Duration::from_secs(30 * 24 * 3600));
/// assert!(check_retention(Duration::from_secs(7 * 24 * 3600)).is_ok());
/// assert!(check_retention(LONGEST_PERIOD + Duration::from_secs(1)).is_err());
/// ```
pub const LONGEST_PERIOD: Duration = Duration::from_secs(30 * 24 * 3600);

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
