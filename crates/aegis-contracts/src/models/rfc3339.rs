//! Serde helpers that write timestamps as RFC 3339 UTC with millisecond
//! precision and a `Z` suffix (e.g. `2026-11-27T00:18:25.123Z`).
//!
//! Every timestamp in an Aegis JSON model goes through this module so the
//! monitor, the UI and other languages see one format. Reading accepts any
//! RFC 3339 offset and converts to UTC. Use it with
//! `#[serde(with = "aegis_contracts::models::rfc3339")]`, or
//! [`option`] for `Option<DateTime<Utc>>`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serializer};

/// Formats `dt` as RFC 3339 UTC with milliseconds and `Z`.
pub fn format_utc(dt: &DateTime<Utc>) -> String {
    dt.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses any RFC 3339 timestamp and converts it to UTC.
///
/// # Errors
/// Returns chrono's parse error when `s` is not RFC 3339.
pub fn parse_utc(s: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(s).map(|dt| dt.with_timezone(&Utc))
}

/// Serializes a timestamp with [`format_utc`].
///
/// # Errors
/// Only the serializer's own errors.
pub fn serialize<S: Serializer>(dt: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format_utc(dt))
}

/// Deserializes a timestamp with [`parse_utc`].
///
/// # Errors
/// A custom error when the string is not RFC 3339.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    let s = String::deserialize(deserializer)?;
    parse_utc(&s)
        .map_err(|e| serde::de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}")))
}

/// The same format for `Option<DateTime<Utc>>` (`null` when `None`).
///
/// Pair it with `#[serde(default)]` so a missing field reads as `None`.
pub mod option {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` with [`super::format_utc`], `None` as `null`.
    ///
    /// # Errors
    /// Only the serializer's own errors.
    pub fn serialize<S: Serializer>(
        dt: &Option<DateTime<Utc>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match dt {
            Some(dt) => super::serialize(dt, serializer),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes `null` as `None`, a string with [`super::parse_utc`].
    ///
    /// # Errors
    /// A custom error when the string is not RFC 3339.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<DateTime<Utc>>, D::Error> {
        let s = Option::<String>::deserialize(deserializer)?;
        s.map(|s| {
            super::parse_utc(&s).map_err(|e| {
                serde::de::Error::custom(format!("invalid RFC 3339 timestamp {s:?}: {e}"))
            })
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde::Serialize;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "super")]
        at: DateTime<Utc>,
        #[serde(default, with = "option")]
        maybe: Option<DateTime<Utc>>,
    }

    #[test]
    fn formats_with_millis_and_z() {
        let dt = Utc.with_ymd_and_hms(2026, 11, 27, 0, 18, 25).unwrap()
            + chrono::Duration::milliseconds(123);
        assert_eq!(format_utc(&dt), "2026-11-27T00:18:25.123Z");
        let whole = Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(format_utc(&whole), "2026-01-02T03:04:05.000Z");
    }

    #[test]
    fn parses_offsets_into_utc() {
        let dt = parse_utc("2026-11-27T02:18:25.5+02:00").unwrap();
        assert_eq!(format_utc(&dt), "2026-11-27T00:18:25.500Z");
        assert!(parse_utc("2026-11-27 00:18:25").is_err());
        assert!(parse_utc("yesterday").is_err());
    }

    #[test]
    fn serde_round_trip() {
        let at = Utc.with_ymd_and_hms(2026, 3, 4, 5, 6, 7).unwrap();
        let t = T {
            at,
            maybe: Some(at),
        };
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(
            json,
            r#"{"at":"2026-03-04T05:06:07.000Z","maybe":"2026-03-04T05:06:07.000Z"}"#
        );
        assert_eq!(serde_json::from_str::<T>(&json).unwrap(), t);
        let none: T = serde_json::from_str(r#"{"at":"2026-03-04T05:06:07Z"}"#).unwrap();
        assert_eq!(none.maybe, None);
        let null: T =
            serde_json::from_str(r#"{"at":"2026-03-04T05:06:07Z","maybe":null}"#).unwrap();
        assert_eq!(null.maybe, None);
        assert!(serde_json::from_str::<T>(r#"{"at":"nope"}"#).is_err());
        assert!(serde_json::from_str::<T>(r#"{"at":12}"#).is_err());
    }
}
