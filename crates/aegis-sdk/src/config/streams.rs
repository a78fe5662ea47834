//! The limits of the streams Aegis creates (`[streams.*]` of the
//! configuration): their defaults and their bounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, invalid};

/// Size and age limits of one JetStream stream. The server drops the oldest
/// messages past them (`COMMANDS` refuses new ones instead, so no queued
/// command is silently lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamLimits {
    /// Oldest message kept (at most [`MAX_STREAM_AGE`], a century:
    /// `"100years"`).
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    /// Most bytes stored (per replica), at least 1 MiB.
    pub max_bytes: u64,
    /// Most messages stored.
    pub max_messages: u64,
}

impl StreamLimits {
    pub(super) const fn new(max_age: Duration, max_bytes: u64, max_messages: u64) -> Self {
        Self {
            max_age,
            max_bytes,
            max_messages,
        }
    }

    /// Checks the limits of the stream whose fields are named `fields`.
    fn validate(&self, fields: &LimitFields) -> Result<(), ConfigError> {
        if self.max_age.is_zero() || self.max_age > MAX_STREAM_AGE {
            return Err(invalid(
                fields.max_age,
                "must be greater than zero and at most a century, \"100years\" (a year \
                 of 365.25 days: 36525d): the server holds a stream's age in \
                 nanoseconds in an i64",
            ));
        }
        if self.max_bytes < MIN_STREAM_BYTES || self.max_bytes > i64::MAX as u64 {
            return Err(invalid(
                fields.max_bytes,
                format!(
                    "must be between {MIN_STREAM_BYTES} (1 MiB) and {}",
                    i64::MAX
                ),
            ));
        }
        if self.max_messages == 0 || self.max_messages > i64::MAX as u64 {
            return Err(invalid(
                fields.max_messages,
                format!("must be between 1 and {}", i64::MAX),
            ));
        }
        Ok(())
    }
}

/// The dotted names of one stream's limits, for the errors.
struct LimitFields {
    max_age: &'static str,
    max_bytes: &'static str,
    max_messages: &'static str,
}

/// [`LimitFields`] of the stream `streams.$name`.
macro_rules! limit_fields {
    ($name:literal) => {
        LimitFields {
            max_age: concat!("streams.", $name, ".max_age"),
            max_bytes: concat!("streams.", $name, ".max_bytes"),
            max_messages: concat!("streams.", $name, ".max_messages"),
        }
    };
}

/// The smallest `max_bytes` a stream may have: one message of the server's
/// default maximum size must fit.
pub const MIN_STREAM_BYTES: u64 = 1024 * 1024;

/// The longest `max_age` a stream may have: a century as it is written,
/// `"100years"` (humantime's year is 365.25 days, so this is 36525 days).
/// Longer is refused when the configuration is checked, for the server
/// holds an age in nanoseconds in an `i64` (about 292 years) and calls one
/// past it negative.
pub const MAX_STREAM_AGE: Duration = Duration::from_secs(36525 * 24 * 3600);

const MIB: u64 = 1024 * 1024;
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// Limits of the streams Aegis creates. The defaults bound a laptop
/// showcase to about 300 MiB per node however long it runs; raise them for
/// production. A service applies them when it creates a stream; an
/// existing stream keeps its own, even no byte and no message limit at all
/// (made so by hand). `aegis init` holds existing streams to the limits its
/// config file sets: it raises them in place, and lowers them (no limit
/// counting as the highest) only with `--apply-limits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamsConfig {
    /// `EVENTS` (default 7 days, 128 MiB, 1,000,000 events: at the
    /// showcase's ~10 quotes/s the bytes bind after about 16 hours).
    pub events: StreamLimits,
    /// `COMMANDS` (default 24 h, 32 MiB, 100,000 queued commands).
    pub commands: StreamLimits,
    /// `DEAD_LETTER` (default 7 days, 32 MiB, 100,000 dead letters).
    pub dead_letter: StreamLimits,
    /// `AEGIS_METRICS`, created by the monitor (default 1 h, 64 MiB,
    /// 1,000,000 snapshots).
    pub metrics: StreamLimits,
    /// `AEGIS_LOG`, created by the monitor (default 24 h, 32 MiB, 500,000
    /// records).
    pub log: StreamLimits,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            events: StreamLimits::new(7 * DAY, 128 * MIB, 1_000_000),
            commands: StreamLimits::new(DAY, 32 * MIB, 100_000),
            dead_letter: StreamLimits::new(7 * DAY, 32 * MIB, 100_000),
            metrics: StreamLimits::new(HOUR, 64 * MIB, 1_000_000),
            log: StreamLimits::new(DAY, 32 * MIB, 500_000),
        }
    }
}

impl StreamsConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        self.events.validate(&limit_fields!("events"))?;
        self.commands.validate(&limit_fields!("commands"))?;
        self.dead_letter.validate(&limit_fields!("dead_letter"))?;
        self.metrics.validate(&limit_fields!("metrics"))?;
        self.log.validate(&limit_fields!("log"))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its large error type
mod tests {
    use super::*;
    use crate::config::{AegisConfig, ConfigLoader};

    #[test]
    fn stream_limits_have_bounded_defaults_load_from_a_file_and_are_checked() {
        let d = StreamsConfig::default();
        let total = d.events.max_bytes
            + d.commands.max_bytes
            + d.dead_letter.max_bytes
            + d.metrics.max_bytes
            + d.log.max_bytes;
        assert!(total <= 300 * MIB, "{total} bytes per node by default");
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "[streams.events]\nmax_age = \"30d\"\nmax_bytes = 4294967296\nmax_messages = 20000000\n",
            )?;
            let c = ConfigLoader::new().file("a.toml").load().unwrap();
            assert_eq!(c.streams.events.max_age, 30 * DAY);
            assert_eq!(c.streams.events.max_bytes, 4 * 1024 * MIB);
            assert_eq!(c.streams.commands, StreamsConfig::default().commands);
            // A partial table keeps the other defaults, and is checked.
            jail.create_file("b.toml", "[streams.log]\nmax_messages = 10\n")?;
            let c = ConfigLoader::new().file("b.toml").load().unwrap();
            assert_eq!(c.streams.log.max_messages, 10);
            assert_eq!(c.streams.log.max_age, DAY);
            jail.create_file("c.toml", "[streams.events]\nmax_bytes = 1\n")?;
            assert!(matches!(
                ConfigLoader::new().file("c.toml").load(),
                Err(ConfigError::Invalid {
                    field: "streams.events.max_bytes",
                    ..
                })
            ));
            Ok(())
        });
        for (broken, field) in [
            (
                StreamLimits::new(Duration::ZERO, MIB, 1),
                "streams.events.max_age",
            ),
            (StreamLimits::new(DAY, 1000, 1), "streams.events.max_bytes"),
            (
                StreamLimits::new(DAY, u64::MAX, 1),
                "streams.events.max_bytes",
            ),
            (
                StreamLimits::new(DAY, MIB, 0),
                "streams.events.max_messages",
            ),
        ] {
            let mut c = AegisConfig::default();
            c.streams.events = broken;
            assert!(
                matches!(c.validate(), Err(ConfigError::Invalid { field: f, .. }) if f == field),
                "{broken:?}"
            );
        }
        let mut c = AegisConfig::default();
        c.streams.log.max_messages = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "streams.log.max_messages",
                ..
            })
        ));
    }

    /// A `max_age` the server cannot hold (its nanoseconds overflow an
    /// `i64`, and the server calls it negative) is refused at load, with
    /// the field named, for every stream.
    #[test]
    fn a_stream_age_past_the_bound_is_refused_with_its_field() {
        let years = |n: u64| Duration::from_secs(n * 365 * 24 * 3600);
        type Pick = fn(&mut StreamsConfig) -> &mut StreamLimits;
        let streams: [(Pick, &str); 5] = [
            (|s| &mut s.events, "streams.events.max_age"),
            (|s| &mut s.commands, "streams.commands.max_age"),
            (|s| &mut s.dead_letter, "streams.dead_letter.max_age"),
            (|s| &mut s.metrics, "streams.metrics.max_age"),
            (|s| &mut s.log, "streams.log.max_age"),
        ];
        for (pick, field) in streams {
            for age in [
                years(400),
                MAX_STREAM_AGE + Duration::from_nanos(1),
                Duration::MAX,
            ] {
                let mut c = AegisConfig::default();
                pick(&mut c.streams).max_age = age;
                let err = c.validate().unwrap_err();
                assert!(
                    matches!(&err, ConfigError::Invalid { field: f, .. } if *f == field),
                    "{age:?}: {err:?}"
                );
            }
            let mut c = AegisConfig::default();
            pick(&mut c.streams).max_age = MAX_STREAM_AGE;
            c.validate().unwrap();
        }
        assert!(MAX_STREAM_AGE.as_nanos() < i64::MAX as u128);
        figment::Jail::expect_with(|jail| {
            jail.create_file("old.toml", "[streams.events]\nmax_age = \"400years\"\nmax_bytes = 1073741824\nmax_messages = 1000\n")?;
            let err = ConfigLoader::new().file("old.toml").load().unwrap_err();
            assert!(err.to_string().contains("streams.events.max_age"), "{err}");
            Ok(())
        });
    }

    /// A century as an operator writes it (`100years`, `100y`: humantime
    /// counts a year as 365.25 days) is accepted; a day past it is refused,
    /// and the error names the bound as it is written.
    #[test]
    fn a_century_as_written_is_accepted() {
        let parse = humantime_serde::re::humantime::parse_duration;
        assert_eq!(parse("100years").unwrap(), MAX_STREAM_AGE);
        let file = |age: &str| {
            format!(
                "[streams.events]\nmax_age = \"{age}\"\nmax_bytes = 1073741824\nmax_messages = 1000\n"
            )
        };
        figment::Jail::expect_with(|jail| {
            for age in ["100years", "100y", "36525d", "876600h"] {
                jail.create_file("century.toml", &file(age))?;
                let config = ConfigLoader::new()
                    .file("century.toml")
                    .load()
                    .unwrap_or_else(|e| panic!("{age}: {e}"));
                assert_eq!(config.streams.events.max_age, parse(age).unwrap());
            }
            for age in ["36526d", "101years", "100years 1s"] {
                jail.create_file("century.toml", &file(age))?;
                let err = ConfigLoader::new().file("century.toml").load().unwrap_err();
                let said = err.to_string();
                assert!(said.contains("streams.events.max_age"), "{age}: {said}");
                assert!(said.contains("100years"), "{age}: {said}");
            }
            Ok(())
        });
    }
}
