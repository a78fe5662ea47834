//! System routes, outside `/api` and without authentication: `/health`
//! (liveness), `/ready` (readiness: NATS connected, buckets there, views
//! loaded; 503 otherwise), `/status` (uptime, environment, version, NATS
//! server, counts — all measured) and `/metrics` (Prometheus exposition of
//! the monitor's own metrics).
//!
//! `/ready` and `/status` ask JetStream through the shared probe
//! (`probe.rs`), at most once a second however often they are hit. The
//! NATS server's version, name, id and cluster are in `/status` only for a
//! caller with credentials (bearer token or session): to anyone else they
//! would map the cluster.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorCode, ErrorEnvelope},
    fleet::Summary,
    state::AppState,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(status))
        .routes(routes!(prometheus))
}

/// Liveness answer.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Health {
    /// `ok` while the process serves requests; `starting` while the
    /// monitor waits for NATS, before the API is served.
    #[schema(example = "ok")]
    status: &'static str,
}

/// Readiness checks.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Readiness {
    /// `ready`.
    status: &'static str,
    /// Each check and whether it passed.
    checks: Checks,
}

/// The individual readiness checks.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Checks {
    /// The NATS connection is up.
    nats_connected: bool,
    /// The `service_definitions` bucket exists.
    definitions_bucket: bool,
    /// The `service_registry` bucket exists.
    registry_bucket: bool,
    /// The registry view is loaded and its watch alive, or was re-creating
    /// it for less than [`STALE_READY`] (a bucket's stream electing a new
    /// leader after a NATS node died).
    registry_synced: bool,
    /// The definitions view is loaded.
    definitions_synced: bool,
}

impl Checks {
    /// The checks that fail, as `details.checks` names them.
    fn failing(self) -> Vec<&'static str> {
        [
            ("natsConnected", self.nats_connected),
            ("definitionsBucket", self.definitions_bucket),
            ("registryBucket", self.registry_bucket),
            ("registrySynced", self.registry_synced),
            ("definitionsSynced", self.definitions_synced),
        ]
        .into_iter()
        .filter_map(|(name, passed)| (!passed).then_some(name))
        .collect()
    }
}

/// What `/status` reports.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Status {
    /// `aegis-monitor`.
    service: &'static str,
    /// The monitor's version.
    version: &'static str,
    /// The configured environment name.
    environment: String,
    /// When this process started (RFC 3339 UTC).
    #[schema(value_type = String, format = DateTime)]
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    started_at: DateTime<Utc>,
    /// Seconds since start.
    uptime_secs: f64,
    /// `tokens` or `insecure-dev` (authentication off).
    auth_mode: &'static str,
    /// The NATS side.
    nats: NatsStatus,
    /// Registered instances by status.
    instances: Summary,
    /// Stored service definitions.
    definitions: usize,
}

/// The NATS connection as seen by the monitor.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NatsStatus {
    /// Connected right now.
    connected: bool,
    /// Version of the server connected to (signed-in callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_version: Option<String>,
    /// Its name (signed-in callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<String>,
    /// Its id (signed-in callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    server_id: Option<String>,
    /// Its cluster, if clustered (signed-in callers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    cluster: Option<String>,
    /// Whether it has JetStream.
    jetstream: bool,
    /// JetStream streams in the account, when the account could be read.
    streams: Option<usize>,
    /// JetStream consumers in the account, when the account could be read.
    consumers: Option<usize>,
    /// Whether the registry view is live.
    registry_synced: bool,
}

/// Liveness: 200 while the process serves requests and its NATS connection
/// may still come back; 503 `NOT_READY` once the connection is closed for
/// good (`nats.reconnect.max_reconnects` used up: the client no longer
/// tries, even when the server is back), so an orchestrator restarts the
/// process. An ordinary NATS outage leaves it 200 (`/ready` says 503).
#[utoipa::path(
    get, path = "/health", tag = "system", security(()),
    responses(
        (status = 200, description = "Alive", body = Health),
        (status = 503, description = "NOT_READY: the NATS connection is closed for good (its reconnect limit used up); restart the process", body = ErrorEnvelope),
    )
)]
async fn health(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.conn().is_closed_for_good() {
        return Err(ApiError::new(
            ErrorCode::NotReady,
            "the NATS connection is closed for good (nats.reconnect.max_reconnects used up): \
             restart the monitor",
        ));
    }
    Ok(Json(Health { status: "ok" }))
}

/// How long the registry view may serve its last known state, its watch
/// broken, before the monitor says it is not ready: longer than a stream's
/// leader election (4–9 s in nats-server), shorter than a view worth
/// distrusting.
const STALE_READY: std::time::Duration = std::time::Duration::from_secs(30);

/// Readiness: 200 when NATS is connected, both buckets exist and the views
/// are loaded (the registry's watch alive, or re-created for under 30 s);
/// 503 `NOT_READY` (details: the checks) otherwise.
#[utoipa::path(
    get, path = "/ready", tag = "system", security(()),
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "NOT_READY: a check fails (NATS not connected, a bucket missing, a view not loaded); details.checks says which", body = ErrorEnvelope),
    )
)]
async fn ready(State(state): State<AppState>) -> Result<Json<Readiness>, ApiError> {
    let connected = state.conn().is_connected();
    let probe = state.probe().get(state.conn()).await;
    let checks = Checks {
        nats_connected: connected,
        definitions_bucket: probe.definitions_bucket,
        registry_bucket: probe.registry_bucket,
        registry_synced: state.fleet().is_synced()
            || state.fleet().staleness().is_some_and(|s| s < STALE_READY),
        definitions_synced: state.definitions().is_synced(),
    };
    let failing = checks.failing();
    if failing.is_empty() {
        Ok(Json(Readiness {
            status: "ready",
            checks,
        }))
    } else {
        // The failing checks in the message too, so the log line says why.
        Err(ApiError::new(
            ErrorCode::NotReady,
            format!("not ready: {}", failing.join(", ")),
        )
        .with_details(json!({ "checks": checks })))
    }
}

/// Uptime, environment, version, the NATS server and counts, all
/// measured. The NATS server's version, name, id and cluster only with
/// credentials (optional here: a bearer token or the session cookie).
#[utoipa::path(
    get, path = "/status", tag = "system", security((), ("bearer" = []), ("session" = [])),
    responses((status = 200, description = "Status", body = Status))
)]
async fn status(State(state): State<AppState>, headers: HeaderMap) -> Json<Status> {
    let conn = state.conn();
    let signed_in = state.auth().authenticate(&headers).is_ok();
    let info = conn.client().server_info();
    let jetstream = info.jetstream;
    let info = signed_in.then_some(info);
    let account = state.probe().get(conn).await.account;
    Json(Status {
        service: "aegis-monitor",
        version: env!("CARGO_PKG_VERSION"),
        environment: state.config().environment.clone(),
        started_at: state.started_at(),
        uptime_secs: state.uptime().as_secs_f64(),
        auth_mode: if state.auth().is_insecure() {
            "insecure-dev"
        } else {
            "tokens"
        },
        nats: NatsStatus {
            connected: conn.is_connected(),
            jetstream,
            server_version: info.as_ref().map(|i| i.version.clone()),
            server_name: info.as_ref().map(|i| i.server_name.clone()),
            server_id: info.as_ref().map(|i| i.server_id.clone()),
            cluster: info.and_then(|i| i.cluster),
            streams: account.map(|(streams, _)| streams),
            consumers: account.map(|(_, consumers)| consumers),
            registry_synced: state.fleet().is_synced(),
        },
        instances: state.fleet().summary(),
        definitions: state.definitions().count(),
    })
}

/// The monitor's own metrics in Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "system", security(()),
    responses((status = 200, description = "Prometheus exposition", content_type = "text/plain", body = String))
)]
async fn prometheus(State(state): State<AppState>) -> Response {
    state.update_gauges();
    let body = state.prometheus().map(|h| h.render()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_checks_are_named_as_the_details_name_them() {
        let checks = Checks {
            nats_connected: false,
            definitions_bucket: true,
            registry_bucket: true,
            registry_synced: false,
            definitions_synced: true,
        };
        let details = serde_json::to_value(checks).unwrap();
        for name in checks.failing() {
            assert_eq!(details[name], false, "{name}");
        }
        assert_eq!(checks.failing(), ["natsConnected", "registrySynced"]);
    }
}
