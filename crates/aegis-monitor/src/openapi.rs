//! The OpenAPI document, generated from the route annotations
//! (`#[utoipa::path]` on every handler, collected by `utoipa-axum`), and the
//! schemas of the wire models.
//!
//! The models live in `aegis-contracts`, which has no OpenAPI dependency, so
//! their schemas are declared here as documentation-only mirrors named like
//! the real types; the API tests check that real responses validate against
//! them, so they cannot drift unnoticed. Request schemas carry the
//! validation rules (patterns, lengths, no unknown fields) so a
//! spec-driven fuzzer knows what valid input looks like.

use std::collections::BTreeMap;

use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::{
    auth::{Principal, Role},
    definitions::HistoryEntry,
    error::{ErrorBody, ErrorEnvelope},
    fleet::StatusReason,
    live::{DefinitionOperation, LiveEvent},
};

/// The document's skeleton; paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aegis monitor API",
        description = "Management and monitoring API of an Aegis deployment: service definitions, live instances, metrics, configuration, events and a live stream. Every `/api/*` route needs `Authorization: Bearer <token>` (or the session cookie); viewers may read, admins may also write. Every error is `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    components(schemas(
        ErrorEnvelope,
        ErrorBody,
        ServiceDefinitionDoc,
        NewServiceDefinitionDoc,
        ServiceDefinitionPatchDoc,
        ServiceInstanceDoc,
        InstanceStatusDoc,
        StatusReason,
        MetricsSnapshotDoc,
        EndpointMetricsDoc,
        LatencySummaryDoc,
        LogRecordDoc,
        HistoryEntry,
        Principal,
        Role,
        LiveEvent,
        DefinitionOperation,
    )),
    tags(
        (name = "services", description = "Service definitions (KV `service_definitions`)"),
        (name = "instances", description = "Live instances from the registry, their configuration and events"),
        (name = "metrics", description = "Metrics snapshots published by instances"),
        (name = "dead-letters", description = "Events and commands given up on (stream `DEAD_LETTER`)"),
        (name = "stream", description = "Server-Sent Events"),
        (name = "session", description = "Browser sign-in"),
        (name = "system", description = "Health, readiness, status and the monitor's own metrics"),
    )
)]
pub(crate) struct ApiDoc;

/// Touches the derive cannot express, applied to the finished document:
/// an update must name at least one of owner, description, version. Said as
/// "any of three copies of the fields, each requiring one", which fuzzers
/// handle better than an `allOf` around an `anyOf`.
pub(crate) fn finish(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr,
        schema::{AnyOfBuilder, Schema},
    };
    let Some(components) = spec.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(fields))) =
        components.schemas.remove("ServiceDefinitionPatch")
    else {
        return;
    };
    let description = fields.description.clone();
    let one_required = ["owner", "description", "version"]
        .into_iter()
        .fold(AnyOfBuilder::new(), |any, field| {
            let mut copy = fields.clone();
            copy.required = vec![field.to_owned()];
            copy.description = None;
            any.item(Schema::Object(copy))
        })
        .description(description)
        .build();
    components.schemas.insert(
        "ServiceDefinitionPatch".to_owned(),
        Schema::AnyOf(one_required).into(),
    );
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin or viewer token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::session::COOKIE_NAME,
            ))),
        );
    }
}

/// A stored service definition.
#[derive(ToSchema)]
#[schema(as = ServiceDefinition)]
#[allow(dead_code)]
pub(crate) struct ServiceDefinitionDoc {
    /// The service name (also the KV key).
    #[schema(example = "order-service")]
    service_name: String,
    /// Owning team or person, 1–100 characters.
    owner: String,
    /// What the service does, 1–500 characters.
    description: String,
    /// Semver version.
    #[schema(example = "1.2.3")]
    version: String,
    /// Created (RFC 3339 UTC, server-set).
    #[schema(format = DateTime)]
    created_at: String,
    /// Last changed (RFC 3339 UTC, server-set).
    #[schema(format = DateTime)]
    updated_at: String,
}

/// The body that creates a definition.
#[derive(ToSchema)]
#[schema(as = NewServiceDefinition)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct NewServiceDefinitionDoc {
    /// `^[a-z][a-z0-9-]{1,62}[a-z0-9]$` without `--`, written as an
    /// equivalent pattern plus lengths.
    #[schema(
        pattern = "^[a-z][a-z0-9]*(-[a-z0-9]+)*$",
        min_length = 3,
        max_length = 64,
        example = "order-service"
    )]
    service_name: String,
    /// 1–100 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"\S",
        example = "trading-team"
    )]
    owner: String,
    /// 1–500 characters, not blank.
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"\S",
        example = "Places and tracks orders"
    )]
    description: String,
    /// Semver 2.0 without leading zeros (ASCII digits only).
    #[schema(
        pattern = r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$",
        example = "1.0.0"
    )]
    version: String,
}

/// The body that updates a definition: at least one of owner, description,
/// version; `revision` (the ETag) makes the update conditional.
#[derive(ToSchema)]
#[schema(as = ServiceDefinitionPatch)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub(crate) struct ServiceDefinitionPatchDoc {
    /// New owner, 1–100 characters, not blank.
    #[schema(nullable = false, min_length = 1, max_length = 100, pattern = r"\S")]
    owner: Option<String>,
    /// New description, 1–500 characters, not blank.
    #[schema(nullable = false, min_length = 1, max_length = 500, pattern = r"\S")]
    description: Option<String>,
    /// New semver version.
    #[schema(
        nullable = false,
        pattern = r"^(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})\.(0|[1-9][0-9]{0,18})(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$",
        example = "1.1.0"
    )]
    version: Option<String>,
    /// The revision last read; a different stored revision is 409; null or
    /// absent makes the update unconditional.
    #[schema(minimum = 0, maximum = 9_007_199_254_740_991_u64)]
    revision: Option<u64>,
}

/// An instance's status.
#[derive(ToSchema)]
#[schema(as = InstanceStatus)]
#[allow(dead_code)]
pub(crate) enum InstanceStatusDoc {
    /// Serving.
    #[schema(rename = "ACTIVE")]
    Active,
    /// Failing health checks.
    #[schema(rename = "UNHEALTHY")]
    Unhealthy,
    /// Healthy follower of a sticky group.
    #[schema(rename = "STANDBY")]
    Standby,
}

/// The registry record of a live instance (camelCase; more fields may appear).
#[derive(ToSchema)]
#[schema(as = ServiceInstance)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct ServiceInstanceDoc {
    /// Service name.
    service_name: String,
    /// Instance id.
    instance_id: String,
    /// Semver version.
    version: String,
    /// Status.
    status: InstanceStatusDoc,
    /// Last heartbeat (RFC 3339 UTC).
    #[schema(format = DateTime)]
    last_heartbeat: String,
    /// Sticky single-active group, or null.
    sticky_active_group: Option<String>,
    /// Free-form metadata.
    metadata: BTreeMap<String, serde_json::Value>,
    /// Process start (RFC 3339 UTC), when known.
    #[schema(format = DateTime, required = false)]
    started_at: Option<String>,
    /// Fencing epoch while ACTIVE leader of a group.
    #[schema(required = false)]
    epoch: Option<u64>,
    /// The status the record itself reports (`status` is the derived truth:
    /// the holder of a sticky group's election key is its one ACTIVE
    /// instance, a closed connection is UNHEALTHY).
    reported_status: InstanceStatusDoc,
    /// Why `status` is what it is, when that needs saying.
    status_reason: Option<StatusReason>,
    /// Since when (RFC 3339 UTC): for `health_check`, `registry_writes`,
    /// `operator` and `degraded`, since when the instance says it has been
    /// unhealthy; otherwise since when the monitor has shown this status
    /// and reason.
    #[schema(format = DateTime)]
    status_since: String,
}

/// Latency percentiles in milliseconds.
#[derive(ToSchema)]
#[schema(as = LatencySummary)]
#[allow(dead_code)]
pub(crate) struct LatencySummaryDoc {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    mean: f64,
}

/// One endpoint's figures.
#[derive(ToSchema)]
#[schema(as = EndpointMetrics)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct EndpointMetricsDoc {
    name: String,
    requests: u64,
    successes: u64,
    errors: u64,
    request_rate: f64,
    error_rate: f64,
    latency_ms: LatencySummaryDoc,
}

/// One instance's metrics for one publishing interval.
#[derive(ToSchema)]
#[schema(as = MetricsSnapshot)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct MetricsSnapshotDoc {
    service_name: String,
    instance_id: String,
    #[schema(format = DateTime)]
    timestamp: String,
    uptime_secs: f64,
    interval_secs: f64,
    endpoints: Vec<EndpointMetricsDoc>,
    queue_depth: u64,
    in_flight: u64,
    custom: BTreeMap<String, f64>,
}

/// A log line or lifecycle event of an instance.
#[derive(ToSchema)]
#[schema(as = LogRecord)]
#[allow(dead_code)]
pub(crate) struct LogRecordDoc {
    #[schema(format = DateTime)]
    timestamp: String,
    /// TRACE, DEBUG, INFO, WARN or ERROR.
    #[schema(example = "WARN")]
    level: String,
    /// `log`, `registered`, `status_changed`, `elected`, `leadership_lost`,
    /// `heartbeat_failed`, `deregistered`, or a newer kind.
    #[schema(example = "status_changed")]
    kind: String,
    message: String,
    fields: BTreeMap<String, serde_json::Value>,
}
