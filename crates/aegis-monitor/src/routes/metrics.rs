//! Instance metrics: the latest snapshot of every live instance (from the
//! in-memory feed; none for a process that is gone or hung, nor one of an
//! earlier process under the same id), what dashboard cards show of them
//! (`/api/metrics/figures`, a few percent of the size), and one instance's
//! history for charts (read from `AEGIS_METRICS`, so any replica answers
//! the same). The lists are built per request and sent gzip-compressed to
//! clients that accept it (1,000 instances: ~1.2 MB of snapshots).

use std::time::Duration;

use aegis_contracts::{
    InstanceStatus, MetricsSnapshot,
    names::{validate_instance_id, validate_service_name},
};
use axum::{
    Json,
    extract::{Path, State},
    http::HeaderMap,
    response::Response,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, Echoed, ErrorEnvelope, INSTANCE_ID_CHARS, SERVICE_NAME_CHARS},
    extract::ApiQuery,
    fleet::InstanceView,
    list_cache,
    live::FiguresView,
    openapi::{
        InstanceIdParam, InstanceStatusDoc, MetricsSnapshotDoc, ServiceNameParam, WindowParam,
    },
    routes::instances::check_names,
    state::AppState,
};

/// Longest history window (the stream keeps snapshots this long by default).
const MAX_WINDOW: Duration = Duration::from_secs(3600);
/// Default history window.
const DEFAULT_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Most snapshots one history answer holds (the newest ones).
const MAX_POINTS: usize = 2000;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(latest_metrics))
        .routes(routes!(latest_figures))
        .routes(routes!(instance_metrics))
}

/// A live instance and its latest snapshot.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceMetrics {
    /// The service.
    service_name: String,
    /// The instance.
    instance_id: String,
    /// Its registry status.
    #[schema(value_type = InstanceStatusDoc)]
    status: InstanceStatus,
    /// Its latest snapshot; null until it publishes one, while its process
    /// is gone or hung, and when the latest is an earlier process's under
    /// the same id.
    #[schema(value_type = Option<MetricsSnapshotDoc>)]
    snapshot: Option<MetricsSnapshot>,
}

/// One instance's snapshots over a window.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MetricsHistory {
    /// The service.
    service_name: String,
    /// The instance.
    instance_id: String,
    /// The window covered, in seconds.
    window_secs: u64,
    /// Snapshots, oldest first (at most `limit`, the newest ones).
    #[schema(value_type = Vec<MetricsSnapshotDoc>)]
    snapshots: Vec<MetricsSnapshot>,
}

/// Query of the history endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HistoryQuery {
    /// How far back, e.g. `90s`, `15m`, `1h` (default, also when empty:
    /// 15m); clamped to 1s..1h (the stream keeps one hour).
    #[param(example = "15m", value_type = Option<WindowParam>, inline)]
    window: Option<String>,
    /// Most snapshots to return, the newest ones (1–2000, default 2000).
    #[param(minimum = 1, maximum = 2000)]
    limit: Option<usize>,
}

/// Query of the latest-metrics endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LatestQuery {
    /// Only this service's instances.
    #[param(example = "pricing-service", value_type = Option<ServiceNameParam>, inline)]
    service: Option<String>,
    /// Only the instances with this id (what an instance's page needs).
    #[param(example = "pricing-1", value_type = Option<InstanceIdParam>, inline)]
    instance: Option<String>,
}

/// 400 unless `service` and `instance`, where given, can be names (the
/// filters of `/api/metrics` and of the live stream's `metrics`).
pub(crate) fn check_filter(service: Option<&str>, instance: Option<&str>) -> Result<(), ApiError> {
    if let Some(service) = service {
        validate_service_name(service).map_err(|e| {
            let given = Echoed::new(service, SERVICE_NAME_CHARS);
            ApiError::bad_param("service", format!("{given}: {e}"))
                .with_echoed("value", "length", &given)
        })?;
    }
    if let Some(instance) = instance {
        validate_instance_id(instance).map_err(|e| {
            let given = Echoed::new(instance, INSTANCE_ID_CHARS);
            ApiError::bad_param("instance", format!("{given}: {e}"))
                .with_echoed("value", "length", &given)
        })?;
    }
    Ok(())
}

impl LatestQuery {
    fn wants(&self, view: &InstanceView) -> bool {
        let i = &view.instance;
        self.service.as_ref().is_none_or(|s| *s == i.service_name)
            && self.instance.as_ref().is_none_or(|id| *id == i.instance_id)
    }
}

/// Every live instance with its latest metrics snapshot (per-endpoint
/// request and error counts and rates, latency p50/p90/p99, queue depth);
/// optionally of one service or instance. Gzip-compressed for clients that
/// accept it when large. A dashboard needs only
/// `/api/metrics/figures`.
#[utoipa::path(
    get, path = "/api/metrics", tag = "metrics",
    params(LatestQuery),
    responses(
        (status = 200, description = "One entry per live instance (that matches)", body = [InstanceMetrics]),
        (status = 400, description = "A service or instance that cannot be one", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn latest_metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LatestQuery>,
) -> Result<Response, ApiError> {
    check_filter(query.service.as_deref(), query.instance.as_deref())?;
    let feed = state.metrics();
    let entries: Vec<InstanceMetrics> = state
        .fleet()
        .all()
        .into_iter()
        .filter(|view| query.wants(view))
        .map(|view| {
            let snapshot = feed
                .latest(&view.instance.service_name, &view.instance.instance_id)
                .filter(|s| figures_are_live(&view, s));
            let i = view.instance;
            InstanceMetrics {
                snapshot,
                service_name: i.service_name,
                instance_id: i.instance_id,
                status: i.status,
            }
        })
        .collect();
    list_cache::respond_built(headers, move || serde_json::to_vec(&entries)).await
}

/// What dashboard cards show of every instance's latest metrics snapshot:
/// calls per second and the highest p99 at the precision shown, the time
/// of the snapshot and whether snapshots stopped coming (`late`). The
/// same as the first `figures` event of the live stream; every instance
/// with a snapshot is listed (registered or not, down or not: a viewer
/// applies what it knows of the instance). Gzip-compressed for clients
/// that accept it when large.
#[utoipa::path(
    get, path = "/api/metrics/figures", tag = "metrics",
    responses(
        (status = 200, description = "Every instance's figures", body = FiguresView),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn latest_figures(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let figures = state.metrics().figures();
    list_cache::respond_built(headers, move || serde_json::to_vec(&figures)).await
}

/// Whether `snapshot` may be shown as `view`'s current figures. Rates read
/// as live: a process that is gone (its connection closed) or hung (its
/// beats stopped) serves nothing, and a snapshot taken before the instance
/// last started (the same id restarted: a new process) is the old
/// process's. Both are history, which the history endpoint still serves.
pub(crate) fn figures_are_live(view: &InstanceView, snapshot: &MetricsSnapshot) -> bool {
    let earlier_process = view
        .instance
        .started_at
        .is_some_and(|started| snapshot.timestamp < started);
    !view.process_down() && !earlier_process
}

/// One instance's snapshots over a window, for charts. Works for instances
/// that are gone too, while the stream keeps their snapshots.
#[utoipa::path(
    get, path = "/api/instances/{service}/{instanceId}/metrics", tag = "metrics",
    params(
        ("service" = String, Path, description = "Service name"),
        ("instanceId" = String, Path, description = "Instance id"),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The history", body = MetricsHistory),
        (status = 400, description = "Bad window or limit", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "INSTANCE_NOT_FOUND (not a valid name)", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the stream AEGIS_METRICS cannot be read (NATS unreachable, or the stream has no leader), or the monitor is busy (8 requests were reading stream history for all of the 2 s this one waited; details.maxStreamReads); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn instance_metrics(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<MetricsHistory>, ApiError> {
    let window = crate::extract::window(query.window.as_deref(), DEFAULT_WINDOW, MAX_WINDOW)?;
    // In its documented range: `ApiQuery` holds it there.
    let limit = query.limit.unwrap_or(MAX_POINTS);
    check_names(&service, &instance)?;
    let turn = state.stream_reads().turn().await?;
    let snapshots = state
        .metrics()
        .history(&service, &instance, window, limit, &turn)
        .await
        .map_err(|e| {
            ApiError::stream_unavailable("the instance's metrics history", "AEGIS_METRICS", &e)
        })?;
    Ok(Json(MetricsHistory {
        service_name: service,
        instance_id: instance,
        window_secs: window.as_secs(),
        snapshots,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::StatusReason;
    use aegis_contracts::ServiceInstance;
    use chrono::{DateTime, Utc};

    fn view(reason: Option<StatusReason>, started: DateTime<Utc>) -> InstanceView {
        let mut instance = ServiceInstance::new("pricing", "p-1", "1.0.0", started);
        instance.status = if reason.is_some() {
            InstanceStatus::Unhealthy
        } else {
            InstanceStatus::Active
        };
        InstanceView {
            reported_status: InstanceStatus::Active,
            status_reason: reason,
            status_detail: None,
            status_since: started,
            instance,
        }
    }

    fn snapshot_at(at: DateTime<Utc>) -> MetricsSnapshot {
        serde_json::from_value(serde_json::json!({
            "serviceName": "pricing", "instanceId": "p-1", "timestamp": at
        }))
        .unwrap()
    }

    #[test]
    fn only_a_running_process_shows_live_figures() {
        let started = Utc::now() - chrono::Duration::seconds(60);
        let after = snapshot_at(started + chrono::Duration::seconds(2));
        assert!(figures_are_live(&view(None, started), &after));
        // Gone or hung: its last rates are history.
        for reason in [StatusReason::Disconnected, StatusReason::Unresponsive] {
            assert!(!figures_are_live(&view(Some(reason), started), &after));
        }
        // Unhealthy but running (its own health check): still serving.
        assert!(figures_are_live(
            &view(Some(StatusReason::HealthCheck), started),
            &after
        ));
        // Restarted under the same id: the old process's snapshot.
        let before = snapshot_at(started - chrono::Duration::seconds(3));
        assert!(!figures_are_live(&view(None, started), &before));
    }

    #[test]
    fn windows() {
        let parse = |w| crate::extract::window(w, DEFAULT_WINDOW, MAX_WINDOW);
        assert_eq!(parse(Some("15m")).unwrap(), Duration::from_secs(900));
        assert_eq!(parse(Some("1h")).unwrap(), MAX_WINDOW);
        assert_eq!(parse(Some("2h")).unwrap(), MAX_WINDOW);
        assert_eq!(parse(Some("0s")).unwrap(), Duration::from_secs(1));
        assert_eq!(parse(None).unwrap(), DEFAULT_WINDOW);
        assert_eq!(parse(Some(" ")).unwrap(), DEFAULT_WINDOW);
        let e = parse(Some("soon")).unwrap_err();
        assert_eq!(e.details()["value"], "soon");
        assert_eq!(e.details()["param"], "window");
    }
}
