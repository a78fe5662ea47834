//! The log and lifecycle record every instance publishes on
//! `aegis.log.{service}.{instance}` (stream `AEGIS_LOG`), and the monitor
//! serves as an instance's recent events.
//!
//! One record type carries both kinds of entry, told apart by [`LogKind`]:
//! lifecycle events (registered, status changed, elected, heartbeat trouble,
//! deregistered) and plain WARN/ERROR log lines (`kind = "log"`). The JSON is
//! `{timestamp, level, kind, message, fields}`; readers ignore unknown fields
//! and keep unknown kinds as [`LogKind::Other`], so producers can add kinds
//! without breaking older monitors.
//!
//! Leadership records name the term they are about in `fields.epoch` (see
//! [`LogRecord::epoch`]): the fencing epoch an `elected` record won, a
//! `leadership_lost` one lost, and a leader's `deregistered` one held.
//! Records written before goodbyes carried it have none, and readers take
//! its absence as "not said".

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::models::rfc3339;

/// One log line or lifecycle event of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogRecord {
    /// When it happened (RFC 3339 UTC).
    #[serde(with = "rfc3339")]
    pub timestamp: DateTime<Utc>,
    /// Severity: TRACE, DEBUG, INFO, WARN or ERROR.
    #[cfg_attr(feature = "openapi", schema(value_type = String, example = "WARN"))]
    pub level: LogLevel,
    /// What kind of entry this is: `log`, `registered`, `status_changed`,
    /// `elected`, `leadership_lost`, `heartbeat_failed`, `deregistered`,
    /// `duplicate_instance_id`, or a newer kind.
    #[cfg_attr(
        feature = "openapi",
        schema(value_type = String, example = "status_changed")
    )]
    pub kind: LogKind,
    /// Human-readable text.
    pub message: String,
    /// Structured context (e.g. `{"from": "STANDBY", "to": "ACTIVE"}`).
    #[serde(default)]
    #[cfg_attr(
        feature = "openapi",
        schema(
            required = true,
            value_type = std::collections::BTreeMap<String, serde_json::Value>
        )
    )]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

/// The key of [`LogRecord::fields`] that holds a fencing epoch.
pub const EPOCH_FIELD: &str = "epoch";

/// The key of [`LogRecord::fields`] set to `true` in a `leadership_lost`
/// whose leader stopped serving because its lease ran out unrenewed, the
/// election key still its own: an `elected` of the same instance at the
/// same epoch ends that pause.
pub const LAPSED_FIELD: &str = "lapsed";

impl LogRecord {
    /// A record with no fields.
    pub fn new(
        timestamp: DateTime<Utc>,
        level: LogLevel,
        kind: LogKind,
        message: impl Into<String>,
    ) -> Self {
        Self {
            timestamp,
            level,
            kind,
            message: message.into(),
            fields: serde_json::Map::new(),
        }
    }

    /// Adds one structured field.
    pub fn with_field(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> Self {
        self.fields.insert(key.into(), value.into());
        self
    }

    /// The fencing epoch the record names (`fields.epoch`): the term an
    /// `elected` record opens, or a `leadership_lost` or leader's
    /// `deregistered` record ends. `None` when it names none (a standby's
    /// `deregistered`, a record from an SDK that wrote none) or when the
    /// value is not a whole number.
    pub fn epoch(&self) -> Option<u64> {
        self.fields
            .get(EPOCH_FIELD)
            .and_then(serde_json::Value::as_u64)
    }
}

/// Severity of a [`LogRecord`], written in upper case (`WARN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum LogLevel {
    /// Very detailed diagnostics.
    Trace,
    /// Diagnostics.
    Debug,
    /// Normal operation (most lifecycle events).
    Info,
    /// Something is wrong but the instance carries on.
    Warn,
    /// Something failed.
    Error,
}

/// What a [`LogRecord`] is about, written in snake case (`status_changed`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum LogKind {
    /// A plain log line (the SDK publishes WARN and ERROR ones).
    Log,
    /// The instance wrote its registry record for the first time.
    Registered,
    /// The instance's status changed; `fields.from` / `fields.to` say how.
    StatusChanged,
    /// The instance won a sticky single-active election; `fields.epoch` is
    /// the fencing epoch it won.
    Elected,
    /// The instance lost or resigned its leadership; `fields.epoch` is the
    /// fencing epoch of the term it lost (absent from older SDKs' records).
    LeadershipLost,
    /// A heartbeat (registry refresh) failed or was late.
    HeartbeatFailed,
    /// The instance removed its registry record on a graceful stop. A
    /// sticky leader's carries `fields.epoch`, the fencing epoch of the term
    /// its stop ends; a standby's carries none (nor do older SDKs' records).
    Deregistered,
    /// Another process wrote this instance's registry record: two processes
    /// run under one instance id. `fields.otherConnection`, `otherHost` and
    /// `otherPid` name the other one.
    DuplicateInstanceId,
    /// A kind this version does not know, kept as written.
    Other(String),
}

impl LogKind {
    /// The wire spelling, e.g. `"status_changed"`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Log => "log",
            Self::Registered => "registered",
            Self::StatusChanged => "status_changed",
            Self::Elected => "elected",
            Self::LeadershipLost => "leadership_lost",
            Self::HeartbeatFailed => "heartbeat_failed",
            Self::Deregistered => "deregistered",
            Self::DuplicateInstanceId => "duplicate_instance_id",
            Self::Other(s) => s,
        }
    }

    /// Parses the wire spelling; anything unknown becomes [`LogKind::Other`].
    pub fn parse(s: &str) -> Self {
        match s {
            "log" => Self::Log,
            "registered" => Self::Registered,
            "status_changed" => Self::StatusChanged,
            "elected" => Self::Elected,
            "leadership_lost" => Self::LeadershipLost,
            "heartbeat_failed" => Self::HeartbeatFailed,
            "deregistered" => Self::Deregistered,
            "duplicate_instance_id" => Self::DuplicateInstanceId,
            other => Self::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for LogKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for LogKind {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LogKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(Self::parse(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    #[test]
    fn json_shape_round_trips() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 1).unwrap();
        let r = LogRecord::new(t, LogLevel::Info, LogKind::StatusChanged, "now ACTIVE")
            .with_field("from", "STANDBY")
            .with_field("to", "ACTIVE");
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            json!({
                "timestamp": "2026-11-27T00:00:01.000Z",
                "level": "INFO",
                "kind": "status_changed",
                "message": "now ACTIVE",
                "fields": {"from": "STANDBY", "to": "ACTIVE"}
            })
        );
        assert_eq!(serde_json::from_value::<LogRecord>(v).unwrap(), r);
    }

    #[test]
    fn tolerant_reader() {
        let r: LogRecord = serde_json::from_value(json!({
            "timestamp": "2026-11-27T00:00:01Z",
            "level": "WARN",
            "kind": "brand_new_kind",
            "message": "m",
            "extra": 1
        }))
        .unwrap();
        assert_eq!(r.kind, LogKind::Other("brand_new_kind".into()));
        assert_eq!(r.kind.to_string(), "brand_new_kind");
        assert!(r.fields.is_empty());
        for k in [
            LogKind::Log,
            LogKind::Registered,
            LogKind::StatusChanged,
            LogKind::Elected,
            LogKind::LeadershipLost,
            LogKind::HeartbeatFailed,
            LogKind::Deregistered,
            LogKind::DuplicateInstanceId,
        ] {
            assert_eq!(LogKind::parse(k.as_str()), k);
        }
        assert!(LogLevel::Warn > LogLevel::Info);
    }

    /// A goodbye names the term it ends in `fields.epoch`; one written
    /// without (an older SDK's, a standby's) still reads, with no epoch.
    #[test]
    fn a_goodbye_names_its_epoch_when_it_has_one() {
        let t = Utc.with_ymd_and_hms(2026, 11, 27, 0, 0, 1).unwrap();
        let lost = LogRecord::new(t, LogLevel::Warn, LogKind::LeadershipLost, "lost")
            .with_field(EPOCH_FIELD, 7);
        let v = serde_json::to_value(&lost).unwrap();
        assert_eq!(v["fields"], json!({"epoch": 7}));
        assert_eq!(
            serde_json::from_value::<LogRecord>(v).unwrap().epoch(),
            Some(7)
        );
        let old: LogRecord = serde_json::from_value(json!({
            "timestamp": "2026-11-27T00:00:01Z",
            "level": "INFO",
            "kind": "deregistered",
            "message": "deregistered on a graceful stop"
        }))
        .unwrap();
        assert_eq!(old.epoch(), None);
        for odd in [json!(-1), json!(1.5), json!("7"), json!(null)] {
            let r = LogRecord::new(t, LogLevel::Info, LogKind::Deregistered, "m")
                .with_field(EPOCH_FIELD, odd);
            assert_eq!(r.epoch(), None, "{r:?}");
        }
    }
}
