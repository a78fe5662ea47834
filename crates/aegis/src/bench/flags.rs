//! The value parsers of `aegis bench`'s numeric flags. A count, rate or
//! time that cannot make a benchmark (no rounds, no callers, a zero
//! deadline, a negative or NaN number of seconds) is refused when the
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

/// A number greater than 0 (a rate, or a length in seconds that must pass).
pub(crate) fn positive(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err("must be a number greater than 0".to_owned()),
    }
}

/// A number of seconds of at least 0 (a pause, which may be none).
pub(crate) fn seconds(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err("must be a number of seconds of at least 0".to_owned()),
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
        for bad in ["0", "-1", "NaN", "inf", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(seconds("0"), Ok(0.0));
        for bad in ["-0.5", "NaN", "inf"] {
            assert!(seconds(bad).is_err(), "{bad}");
        }
    }
}
