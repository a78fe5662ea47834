//! The registry record of one running instance ([`ServiceInstance`]) and its
//! status ([`InstanceStatus`]).
//!
//! Written by the SDK at start, on every change and, to renew its TTL, every
//! few seconds (`metadata.refreshMs`) under
//! `service-instances.{service}.{instance}`; read by discovery and the
//! monitor. The JSON is camelCase and readers ignore unknown fields, so new
//! fields can be added without breaking older readers.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Collector, ValidationErrors, rfc3339};
use crate::names::{
    validate_group_name, validate_instance_id, validate_service_name, validate_version,
};

/// The state an instance reports in its registry record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Serving traffic (for sticky groups: the elected leader).
    Active,
    /// Running but failing its health checks; discovery skips it.
    Unhealthy,
    /// A healthy follower in a sticky single-active group.
    Standby,
}

impl InstanceStatus {
    /// The wire spelling: `ACTIVE`, `UNHEALTHY` or `STANDBY`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "ACTIVE",
            Self::Unhealthy => "UNHEALTHY",
            Self::Standby => "STANDBY",
        }
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of `ACTIVE`, `UNHEALTHY`, `STANDBY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown instance status {0:?} (expected ACTIVE, UNHEALTHY or STANDBY)")]
pub struct ParseStatusError(pub String);

impl FromStr for InstanceStatus {
    type Err = ParseStatusError;

    /// Parses the exact uppercase wire spelling.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ACTIVE" => Ok(Self::Active),
            "UNHEALTHY" => Ok(Self::Unhealthy),
            "STANDBY" => Ok(Self::Standby),
            other => Err(ParseStatusError(other.to_owned())),
        }
    }
}

/// The registry record of one running instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceInstance {
    /// The service this instance belongs to.
    pub service_name: String,
    /// Unique per process (in Kubernetes, the pod name).
    pub instance_id: String,
    /// The service's semver version.
    pub version: String,
    /// Current status.
    pub status: InstanceStatus,
    /// When the record was last written (RFC 3339 UTC): at most
    /// `metadata.refreshMs` old while the instance can write. Liveness
    /// itself is told by the beats on `aegis.heartbeat.{service}.{instance}`
    /// every `metadata.heartbeatMs`.
    #[serde(with = "rfc3339")]
    pub last_heartbeat: DateTime<Utc>,
    /// The sticky single-active group, if the instance is in one; always
    /// serialized (`null` when none).
    #[serde(default)]
    pub sticky_active_group: Option<String>,
    /// Free-form metadata (host, zone, ports, ...).
    #[serde(default)]
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When the process started (RFC 3339 UTC); omitted when unknown.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "rfc3339::option"
    )]
    pub started_at: Option<DateTime<Utc>>,
    /// The fencing epoch (winning election revision) while this instance is
    /// the ACTIVE leader of its group; omitted otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
}

impl ServiceInstance {
    /// A fresh ACTIVE record with no group, no metadata, `last_heartbeat`
    /// and `started_at` set to `now`.
    pub fn new(
        service_name: impl Into<String>,
        instance_id: impl Into<String>,
        version: impl Into<String>,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            service_name: service_name.into(),
            instance_id: instance_id.into(),
            version: version.into(),
            status: InstanceStatus::Active,
            last_heartbeat: now,
            sticky_active_group: None,
            metadata: serde_json::Map::new(),
            started_at: Some(now),
            epoch: None,
        }
    }

    /// Whether `other` differs from this record in `lastHeartbeat` alone,
    /// the time of its last write (what the SDK skips writing, and what the
    /// monitor does not show as a change).
    ///
    /// Compares field by field, without a clone (it runs on every beat);
    /// the destructuring names every field, so a field added to the record
    /// must be considered here to compile.
    ///
    /// ```
    /// use aegis_contracts::ServiceInstance;
    ///
    /// let a = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", chrono::Utc::now());
    /// let mut b = a.clone();
    /// b.last_heartbeat += chrono::Duration::seconds(1);
    /// assert!(a.same_but_heartbeat(&b));
    /// b.version = "1.0.1".into();
    /// assert!(!a.same_but_heartbeat(&b));
    /// ```
    pub fn same_but_heartbeat(&self, other: &ServiceInstance) -> bool {
        let ServiceInstance {
            service_name,
            instance_id,
            version,
            status,
            last_heartbeat: _,
            sticky_active_group,
            metadata,
            started_at,
            epoch,
        } = other;
        self.service_name == *service_name
            && self.instance_id == *instance_id
            && self.version == *version
            && self.status == *status
            && self.sticky_active_group == *sticky_active_group
            && self.epoch == *epoch
            && self.started_at == *started_at
            && self.metadata == *metadata
    }

    /// Checks service name, instance id, version and group name.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming every failing field by its JSON name.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        c.check("serviceName", validate_service_name(&self.service_name));
        c.check("instanceId", validate_instance_id(&self.instance_id));
        c.check("version", validate_version(&self.version));
        if let Some(group) = &self.sticky_active_group {
            c.check("stickyActiveGroup", validate_group_name(group));
        }
        c.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_heartbeat_is_ignored_when_comparing_records() {
        let t0 = Utc::now();
        let a = ServiceInstance::new("svc", "i-1", "1.0.0", t0);
        let mut later = a.clone();
        later.last_heartbeat = t0 + chrono::Duration::seconds(1);
        assert!(a.same_but_heartbeat(&later));

        let changes: [fn(&mut ServiceInstance); 8] = [
            |r| r.service_name.push('x'),
            |r| r.instance_id.push('x'),
            |r| r.version.push('x'),
            |r| r.status = InstanceStatus::Standby,
            |r| r.sticky_active_group = Some("g".into()),
            |r| drop(r.metadata.insert("k".into(), 1.into())),
            |r| r.started_at = None,
            |r| r.epoch = Some(2),
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut b = later.clone();
            change(&mut b);
            assert!(!a.same_but_heartbeat(&b), "change {i} went unseen");
        }
    }
    use chrono::TimeZone;
    use serde_json::json;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 0, 18, 25).unwrap() + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn status_spellings() {
        for (status, s) in [
            (InstanceStatus::Active, "ACTIVE"),
            (InstanceStatus::Unhealthy, "UNHEALTHY"),
            (InstanceStatus::Standby, "STANDBY"),
        ] {
            assert_eq!(status.as_str(), s);
            assert_eq!(status.to_string(), s);
            assert_eq!(s.parse::<InstanceStatus>(), Ok(status));
            assert_eq!(serde_json::to_value(status).unwrap(), json!(s));
        }
        assert_eq!(
            "active".parse::<InstanceStatus>(),
            Err(ParseStatusError("active".into()))
        );
        assert!("".parse::<InstanceStatus>().is_err());
        assert!(serde_json::from_value::<InstanceStatus>(json!("Active")).is_err());
    }

    #[test]
    fn json_field_names() {
        let mut inst = ServiceInstance::new("order-service", "order-1", "1.2.3", at());
        inst.started_at = None;
        let v = serde_json::to_value(&inst).unwrap();
        assert_eq!(
            v,
            json!({
                "serviceName": "order-service",
                "instanceId": "order-1",
                "version": "1.2.3",
                "status": "ACTIVE",
                "lastHeartbeat": "2026-11-27T00:18:25.123Z",
                "stickyActiveGroup": null,
                "metadata": {}
            })
        );
        let s = serde_json::to_string(&inst).unwrap();
        assert!(s.contains(r#""stickyActiveGroup":null"#));
        assert!(s.contains(r#""lastHeartbeat":"2026-11-27T00:18:25.123Z""#));
    }

    #[test]
    fn optional_fields_round_trip() {
        let mut inst = ServiceInstance::new("order-service", "order-1", "1.2.3", at());
        inst.status = InstanceStatus::Standby;
        inst.sticky_active_group = Some("default".into());
        inst.epoch = Some(42);
        inst.metadata.insert("zone".into(), json!("eu-1"));
        let v = serde_json::to_value(&inst).unwrap();
        assert_eq!(v["startedAt"], json!("2026-11-27T00:18:25.123Z"));
        assert_eq!(v["epoch"], json!(42));
        assert_eq!(v["stickyActiveGroup"], json!("default"));
        assert_eq!(v["status"], json!("STANDBY"));
        let back: ServiceInstance = serde_json::from_value(v).unwrap();
        assert_eq!(back, inst);
    }

    #[test]
    fn reads_minimal_and_unknown_fields() {
        let v = json!({
            "serviceName": "pricing",
            "instanceId": "p-1",
            "version": "0.1.0",
            "status": "UNHEALTHY",
            "lastHeartbeat": "2026-11-27T01:18:25+01:00",
            "futureField": {"x": 1}
        });
        let inst: ServiceInstance = serde_json::from_value(v).unwrap();
        assert_eq!(inst.status, InstanceStatus::Unhealthy);
        assert_eq!(inst.sticky_active_group, None);
        assert!(inst.metadata.is_empty());
        assert_eq!(inst.started_at, None);
        assert_eq!(inst.epoch, None);
        assert_eq!(
            rfc3339::format_utc(&inst.last_heartbeat),
            "2026-11-27T00:18:25.000Z"
        );
        assert!(serde_json::from_value::<ServiceInstance>(json!({"serviceName": "x"})).is_err());
    }

    #[test]
    fn validation() {
        let ok = ServiceInstance::new("order-service", "order-1", "1.2.3", at());
        assert_eq!(ok.validate(), Ok(()));
        let mut bad = ok.clone();
        bad.service_name = "Order".into();
        bad.instance_id = "a.b".into();
        bad.version = "1.0".into();
        bad.sticky_active_group = Some("g>".into());
        let err = bad.validate().unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            ["serviceName", "instanceId", "version", "stickyActiveGroup"]
        );
    }
}
