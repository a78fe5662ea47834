//! The value parsers of `aegis bench`'s numeric flags. A count, rate or
//! time that cannot make a benchmark (no rounds, no callers, a zero
//! deadline, a negative, NaN or overlong number of seconds) is refused when the
//! command line is read, naming the flag and what it takes, before any
//! server or instance starts; a zero deadline would otherwise end every
//! call in a timeout that reads like a fault of the system measured.

use std::{fmt::Display, str::FromStr};

/// A whole number of at least `min` (a count, or milliseconds that
/// cannot be 0).
pub(crate) fn at_least<T>(min: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |s: &str| match s.trim().parse::<T>() {
        Ok(n) if n >= min => Ok(n),
        _ => Err(format!("must be a whole number of at least {min}")),
    }
}

/// The longest time any benchmark flag may name: a day, far past any
/// run, and far inside what a `Duration` holds (one made of 1e300 s
/// panics).
const LONGEST_SECS: f64 = 86_400.0;

/// A whole number from `min` to `max` (milliseconds or seconds: a time
/// no run needs more than a day of, which a `Duration` and an `Instant`
/// hold without overflowing).
pub(crate) fn within<T>(min: T, max: T) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |s: &str| match s.trim().parse::<T>() {
        Ok(n) if n >= min && n <= max => Ok(n),
        _ => Err(format!("must be a whole number from {min} to {max}")),
    }
}

/// A day, in the milliseconds of the time flags.
pub(crate) const DAY_MS: u64 = 86_400_000;

/// A rate per second: from a thousandth (one in 17 minutes) to a million.
pub(crate) fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.001..=1_000_000.0).contains(&x) => Ok(x),
        _ => Err("must be a rate per second from 0.001 to 1000000".to_owned()),
    }
}

/// A length in seconds that must pass: greater than 0, at most a day.
pub(crate) fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 && x <= LONGEST_SECS => Ok(x),
        _ => Err(format!(
            "must be a number of seconds greater than 0 and at most {LONGEST_SECS}"
        )),
    }
}

/// A number of seconds of at least 0 (a pause, which may be none), at
/// most a day.
pub(crate) fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && (0.0..=LONGEST_SECS).contains(&x) => Ok(x),
        _ => Err(format!(
            "must be a number of seconds of at least 0 and at most {LONGEST_SECS}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_times_and_rates_that_cannot_work_are_refused() {
        let rounds = at_least(1usize);
        assert_eq!(rounds("3"), Ok(3));
        assert!(rounds("0").unwrap_err().contains("at least 1"));
        assert!(rounds("-1").is_err() && rounds("x").is_err());
        assert_eq!(positive("0.5"), Ok(0.5));
        for bad in ["0", "-1", "NaN", "inf", "x", "1e-300", "1e300"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0"), Ok(0.0));
        for bad in ["-0.5", "NaN", "inf", "1e300", "86401"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
        let ms = within(1u64, DAY_MS);
        assert_eq!(ms("20"), Ok(20));
        for bad in ["0", "86400001", "18446744073709551615"] {
            assert!(ms(bad).unwrap_err().contains("from 1 to 86400000"), "{bad}");
        }
        assert_eq!(positive_seconds("0.25"), Ok(0.25));
        for bad in ["0", "-1", "NaN", "1e300"] {
            assert!(positive_seconds(bad).is_err(), "{bad}");
        }
    }
}
