//! Service definitions: the record ([`ServiceDefinition`]), the create body
//! ([`NewServiceDefinition`]) and the update body ([`ServiceDefinitionPatch`]).
//!
//! Stored in `service_definitions` under the service name, with KV history
//! as the audit trail. The JSON is snake_case. Request bodies reject unknown
//! fields so a typo is an error rather than a silently ignored change; the
//! stored record ignores them so older readers survive newer writers.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::{
    Collector, DESCRIPTION_MAX_CHARS, OWNER_MAX_CHARS, ValidationErrors, check_text, rfc3339,
};
use crate::names::{validate_service_name, validate_version};

/// A service definition as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ServiceDefinition {
    /// The service name (also the KV key).
    #[cfg_attr(feature = "openapi", schema(example = "order-service"))]
    pub service_name: String,
    /// Owning team or person, 1–100 characters.
    pub owner: String,
    /// What the service does, 1–500 characters.
    pub description: String,
    /// The semver version.
    #[cfg_attr(feature = "openapi", schema(example = "1.2.3"))]
    pub version: String,
    /// When the definition was created (RFC 3339 UTC, server-set).
    #[serde(with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it last changed (RFC 3339 UTC, server-set).
    #[serde(with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

impl ServiceDefinition {
    /// Checks service name, owner, description and version.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming every failing field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        check_fields(
            &mut c,
            Some(&self.service_name),
            Some(&self.owner),
            Some(&self.description),
            Some(&self.version),
        );
        c.finish()
    }
}

/// The body that creates a definition; timestamps are set by the server.
// Its OpenAPI schema states the rules `validate` checks, so a spec-driven
// client or fuzzer knows what valid input looks like: the service name rule
// (`^[a-z][a-z0-9-]{1,62}[a-z0-9]$` without `--`) as an equivalent pattern
// plus lengths, free text as non-blank with a length bound and no control
// character but tabs and line breaks (LF, CRLF; one pattern, written out in
// each of the four places since the attribute takes only a literal, and the
// tests hold them equal), the version as
// semver 2.0 without leading zeros (ASCII digits only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NewServiceDefinition {
    /// The service name: `^[a-z][a-z0-9-]{1,62}[a-z0-9]$` without `--`.
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
            min_length = 3,
            max_length = 64,
            example = "order-service"
        )
    )]
    pub service_name: String,
    /// Owning team or person, 1–100 characters, not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 100,
            pattern = r"^(?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*[^\s\x00-\x08\x0B-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*$",
            example = "trading-team"
        )
    )]
    pub owner: String,
    /// What the service does, 1–500 characters, not blank.
    #[cfg_attr(
        feature = "openapi",
        schema(
            min_length = 1,
            max_length = 500,
            pattern = r"^(?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*[^\s\x00-\x08\x0B-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*$",
            example = "Places and tracks orders"
        )
    )]
    pub description: String,
    /// The semver version: semver 2.0 without leading zeros (ASCII digits
    /// only).
    #[cfg_attr(
        feature = "openapi",
        schema(
            pattern = r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$",
            example = "1.0.0"
        )
    )]
    pub version: String,
}

impl NewServiceDefinition {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming every failing field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        check_fields(
            &mut c,
            Some(&self.service_name),
            Some(&self.owner),
            Some(&self.description),
            Some(&self.version),
        );
        c.finish()
    }

    /// The stored record, created and updated at `now`.
    pub fn into_definition(self, now: DateTime<Utc>) -> ServiceDefinition {
        ServiceDefinition {
            service_name: self.service_name,
            owner: self.owner,
            description: self.description,
            version: self.version,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The body that updates a definition; absent fields are left unchanged.
/// The API needs at least one of owner, description, version; `revision`
/// (the ETag) makes the update conditional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ServiceDefinitionPatch {
    /// New owner, 1–100 characters, not blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            nullable = false,
            min_length = 1,
            max_length = 100,
            pattern = r"^(?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*[^\s\x00-\x08\x0B-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*$"
        )
    )]
    pub owner: Option<String>,
    /// New description, 1–500 characters, not blank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            nullable = false,
            min_length = 1,
            max_length = 500,
            pattern = r"^(?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*[^\s\x00-\x08\x0B-\x1F\x7F-\x9F](?:[^\x00-\x08\x0B-\x1F\x7F-\x9F]|\r\n)*$"
        )
    )]
    pub description: Option<String>,
    /// New semver version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(
            nullable = false,
            pattern = r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$",
            example = "1.1.0"
        )
    )]
    pub version: Option<String>,
    /// The KV revision the client last read, for optimistic concurrency: the
    /// API answers CONFLICT (409) when the stored revision differs; null or
    /// absent makes the update unconditional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)
    )]
    pub revision: Option<u64>,
}

impl ServiceDefinitionPatch {
    /// Whether the patch changes nothing (`revision` alone is not a change).
    pub fn is_empty(&self) -> bool {
        self.owner.is_none() && self.description.is_none() && self.version.is_none()
    }

    /// Checks the fields that are present.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming every failing field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector::default();
        check_fields(
            &mut c,
            None,
            self.owner.as_ref(),
            self.description.as_ref(),
            self.version.as_ref(),
        );
        c.finish()
    }

    /// `def` with this patch applied: `created_at` kept, `updated_at` set to
    /// `now`.
    ///
    /// `updated_at` always advances, also as written at millisecond precision:
    /// when `now` is not in a later millisecond than the old value (clock
    /// skew between API replicas, or two updates within a millisecond), the
    /// old value's millisecond plus one is used instead.
    pub fn apply(&self, def: &ServiceDefinition, now: DateTime<Utc>) -> ServiceDefinition {
        let old_ms = truncate_ms(def.updated_at);
        let updated_at = if truncate_ms(now) > old_ms {
            now
        } else {
            old_ms + Duration::milliseconds(1)
        };
        ServiceDefinition {
            service_name: def.service_name.clone(),
            owner: self.owner.clone().unwrap_or_else(|| def.owner.clone()),
            description: self
                .description
                .clone()
                .unwrap_or_else(|| def.description.clone()),
            version: self.version.clone().unwrap_or_else(|| def.version.clone()),
            created_at: def.created_at,
            updated_at,
        }
    }
}

fn truncate_ms(dt: DateTime<Utc>) -> DateTime<Utc> {
    // Only fails for durations larger than the timestamp range; 1 ms cannot.
    dt.duration_trunc(Duration::milliseconds(1)).unwrap_or(dt)
}

fn check_fields(
    c: &mut Collector,
    service_name: Option<&String>,
    owner: Option<&String>,
    description: Option<&String>,
    version: Option<&String>,
) {
    if let Some(name) = service_name {
        c.check("service_name", validate_service_name(name));
    }
    if let Some(owner) = owner {
        c.check("owner", check_text(owner, OWNER_MAX_CHARS));
    }
    if let Some(description) = description {
        c.check(
            "description",
            check_text(description, DESCRIPTION_MAX_CHARS),
        );
    }
    if let Some(version) = version {
        c.check("version", validate_version(version));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 0, 18, 25).unwrap() + Duration::milliseconds(123)
    }

    fn new_def() -> NewServiceDefinition {
        NewServiceDefinition {
            service_name: "order-service".into(),
            owner: "trading-team".into(),
            description: "Places and tracks orders".into(),
            version: "1.2.3".into(),
        }
    }

    #[test]
    fn new_definition_validation() {
        assert_eq!(new_def().validate(), Ok(()));
        let ok_bounds = NewServiceDefinition {
            owner: "o".repeat(100),
            description: "d".repeat(500),
            version: "1.2.3-rc.1+b5".into(),
            ..new_def()
        };
        assert_eq!(ok_bounds.validate(), Ok(()));
        let too_long = NewServiceDefinition {
            owner: "o".repeat(101),
            description: "d".repeat(501),
            ..new_def()
        };
        let err = too_long.validate().unwrap_err();
        assert_eq!(err.fields().collect::<Vec<_>>(), ["owner", "description"]);
        let all_bad = NewServiceDefinition {
            service_name: "Order".into(),
            owner: "   ".into(),
            description: String::new(),
            version: "01.0.0".into(),
        };
        let err = all_bad.validate().unwrap_err();
        assert_eq!(
            err.fields().collect::<Vec<_>>(),
            ["service_name", "owner", "description", "version"]
        );
        let partial = NewServiceDefinition {
            version: "1.0".into(),
            ..new_def()
        };
        assert!(partial.validate().unwrap_err().has("version"));
    }

    #[test]
    fn new_definition_rejects_unknown_fields() {
        let body = json!({
            "service_name": "order-service",
            "owner": "t",
            "description": "d",
            "version": "1.0.0",
            "created_at": "2026-01-01T00:00:00Z"
        });
        assert!(serde_json::from_value::<NewServiceDefinition>(body).is_err());
        let ok =
            json!({"service_name": "a-b", "owner": "t", "description": "d", "version": "1.0.0"});
        assert!(serde_json::from_value::<NewServiceDefinition>(ok).is_ok());
        let missing = json!({"service_name": "a-b", "owner": "t", "description": "d"});
        assert!(serde_json::from_value::<NewServiceDefinition>(missing).is_err());
    }

    #[test]
    fn definition_json() {
        let def = new_def().into_definition(t0());
        assert_eq!(def.created_at, t0());
        assert_eq!(def.updated_at, t0());
        let v = serde_json::to_value(&def).unwrap();
        assert_eq!(
            v,
            json!({
                "service_name": "order-service",
                "owner": "trading-team",
                "description": "Places and tracks orders",
                "version": "1.2.3",
                "created_at": "2026-11-27T00:18:25.123Z",
                "updated_at": "2026-11-27T00:18:25.123Z"
            })
        );
        let mut with_extra = v.clone();
        with_extra["audit"] = json!("future");
        let back: ServiceDefinition = serde_json::from_value(with_extra).unwrap();
        assert_eq!(back, def);
        assert_eq!(back.validate(), Ok(()));
    }

    #[test]
    fn patch_empty_and_validation() {
        let empty: ServiceDefinitionPatch = serde_json::from_value(json!({})).unwrap();
        assert!(empty.is_empty());
        assert_eq!(empty.validate(), Ok(()));
        let rev_only: ServiceDefinitionPatch =
            serde_json::from_value(json!({"revision": 7})).unwrap();
        assert!(rev_only.is_empty());
        assert_eq!(rev_only.revision, Some(7));
        let p = ServiceDefinitionPatch {
            owner: Some(String::new()),
            version: Some("1.0".into()),
            ..Default::default()
        };
        assert!(!p.is_empty());
        assert_eq!(
            p.validate().unwrap_err().fields().collect::<Vec<_>>(),
            ["owner", "version"]
        );
        assert!(
            serde_json::from_value::<ServiceDefinitionPatch>(json!({"service_name": "x"})).is_err()
        );
        assert!(serde_json::from_value::<ServiceDefinitionPatch>(json!({"ownr": "x"})).is_err());
    }

    #[test]
    fn patch_apply() {
        let def = new_def().into_definition(t0());
        let later = t0() + Duration::seconds(5);
        let p = ServiceDefinitionPatch {
            description: Some("New text".into()),
            version: Some("2.0.0".into()),
            ..Default::default()
        };
        let out = p.apply(&def, later);
        assert_eq!(out.service_name, def.service_name);
        assert_eq!(out.owner, def.owner);
        assert_eq!(out.description, "New text");
        assert_eq!(out.version, "2.0.0");
        assert_eq!(out.created_at, def.created_at);
        assert_eq!(out.updated_at, later);

        let o = ServiceDefinitionPatch {
            owner: Some("risk-team".into()),
            ..Default::default()
        };
        assert_eq!(o.apply(&def, later).owner, "risk-team");
        assert_eq!(o.apply(&def, later).description, def.description);
    }

    #[test]
    fn patch_apply_always_advances() {
        let def = new_def().into_definition(t0());
        let p = ServiceDefinitionPatch::default();
        let one_ms = Duration::milliseconds(1);
        // Same instant, earlier (clock skew), and same millisecond.
        for now in [
            t0(),
            t0() - Duration::seconds(3),
            t0() + Duration::microseconds(400),
        ] {
            let out = p.apply(&def, now);
            assert_eq!(out.updated_at, t0() + one_ms, "{now}");
            assert!(rfc3339::format_utc(&out.updated_at) > rfc3339::format_utc(&def.updated_at));
        }
        // Next millisecond is taken as is.
        let next = t0() + Duration::microseconds(1500);
        assert_eq!(p.apply(&def, next).updated_at, next);
    }
}
