//! The monitor's own metrics, exposed in Prometheus format at `GET /metrics`.
//!
//! Recorded with the `metrics` facade; the Prometheus recorder is installed
//! once per process (the first monitor state installs it; later ones, e.g.
//! in tests, share it). Per request: `aegis_monitor_http_requests_total` and
//! `aegis_monitor_http_request_duration_seconds` labelled by method, route
//! template (never the raw path, so labels stay bounded) and status. Plus
//! gauges for open connections, SSE clients, NATS connectivity, instances
//! and definitions, and a count of the connection limits hit (the server's,
//! `server/shares.rs`).

use std::{sync::OnceLock, time::Instant};

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests handled, by method, route and status.
pub(crate) const HTTP_REQUESTS: &str = "aegis_monitor_http_requests_total";
/// Request latency histogram in seconds, by method and route.
pub(crate) const HTTP_DURATION: &str = "aegis_monitor_http_request_duration_seconds";
/// Open SSE connections.
pub(crate) const SSE_CLIENTS: &str = "aegis_monitor_sse_clients";
/// Live-stream clients cut off for reading nothing (an event they could
/// not be sent for the stall timeout).
pub(crate) const SSE_CUT_OFF: &str = "aegis_monitor_sse_cut_off_total";
/// Open HTTP connections (SSE streams included).
pub(crate) const HTTP_CONNECTIONS: &str = "aegis_monitor_http_connections";
/// Times a connection limit was hit, by `limit`: `max_connections` (every
/// slot taken, new connections wait in the backlog) or `per_client` (a
/// connection refused, its client holding its share).
pub(crate) const HTTP_CONNECTION_LIMIT: &str = "aegis_monitor_http_connection_limit_total";
/// 1 when NATS is connected, else 0.
pub(crate) const NATS_CONNECTED: &str = "aegis_monitor_nats_connected";
/// Registered instances by status.
pub(crate) const INSTANCES: &str = "aegis_monitor_instances";
/// Service definitions.
pub(crate) const DEFINITIONS: &str = "aegis_monitor_definitions";

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process's Prometheus handle, installing the recorder on first use.
/// `None` when another recorder was installed first (by the host program).
pub(crate) fn prometheus() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        5.0, 10.0,
                    ],
                )
                .ok()?;
            match builder.install_recorder() {
                Ok(handle) => {
                    describe();
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "another metrics recorder is installed; GET /metrics will be empty");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(HTTP_REQUESTS, "HTTP requests handled by the monitor");
    metrics::describe_histogram!(
        HTTP_DURATION,
        metrics::Unit::Seconds,
        "HTTP request latency of the monitor"
    );
    metrics::describe_gauge!(SSE_CLIENTS, "open Server-Sent Events connections");
    metrics::describe_counter!(
        SSE_CUT_OFF,
        "live-stream clients cut off: an event could not be written to them for the stall timeout"
    );
    metrics::describe_gauge!(
        HTTP_CONNECTIONS,
        "open HTTP connections, SSE streams included"
    );
    metrics::describe_counter!(
        HTTP_CONNECTION_LIMIT,
        "times a connection limit was hit: max_connections (every slot taken; new connections \
         wait) or per_client (a connection refused with 429, its client holding its share)"
    );
    metrics::describe_gauge!(NATS_CONNECTED, "1 when the monitor is connected to NATS");
    metrics::describe_gauge!(INSTANCES, "registered service instances by status");
    metrics::describe_gauge!(DEFINITIONS, "stored service definitions");
}

/// Middleware recording request count and latency.
pub(crate) async fn record_http(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(HTTP_DURATION, "method" => method, "route" => route)
        .record(start.elapsed().as_secs_f64());
    response
}

/// Counts an SSE connection while it lives.
pub(crate) struct SseClientGuard;

impl SseClientGuard {
    pub(crate) fn new() -> Self {
        metrics::gauge!(SSE_CLIENTS).increment(1.0);
        Self
    }
}

impl Drop for SseClientGuard {
    fn drop(&mut self) {
        metrics::gauge!(SSE_CLIENTS).decrement(1.0);
    }
}
