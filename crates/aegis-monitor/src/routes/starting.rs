//! What the monitor answers while it waits to start (NATS not reachable
//! yet, JetStream or the registry not ready): it already listens, so an
//! orchestrator's probes and an operator's `curl` get an answer instead of
//! a refused connection. `/health` is 200 (`starting`: the process is
//! alive and trying), `/ready` is 503 `NOT_READY` naming what it waits for,
//! and every other path is 503 `NOT_READY` with `Retry-After` — as a small
//! page that reloads itself when a browser asks (`Accept: text/html`), so
//! an operator opening the dashboard early sees it come up. Nothing here
//! reads NATS, and nothing says where NATS is or how it failed: that goes
//! to the log.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde_json::json;

use crate::error::{ApiError, ErrorCode};

/// How long a client is told to wait before asking again.
const RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(2);

/// What the start is waiting for, updated after each failed attempt.
#[derive(Debug, Default)]
pub(crate) struct Starting {
    waiting_for: Mutex<Option<&'static str>>,
    failed_attempts: AtomicU32,
}

impl Starting {
    /// An attempt failed while waiting for `what` (`nats`, `jetstream`,
    /// `registry`).
    pub(crate) fn failed(&self, what: &'static str) {
        *self.waiting_for.lock().unwrap_or_else(|e| e.into_inner()) = Some(what);
        self.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }

    /// What the start waits for now; before the first attempt has ended,
    /// the connection to NATS.
    fn waiting_for(&self) -> &'static str {
        self.waiting_for
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or("nats")
    }
}

/// The routes served until the monitor has started.
pub(crate) fn router(starting: Arc<Starting>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_yet)
        .layer(middleware::from_fn(super::security_headers))
        .with_state(starting)
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "starting" }))
}

async fn ready(State(starting): State<Arc<Starting>>) -> ApiError {
    ApiError::new(ErrorCode::NotReady, "the monitor is starting")
        .with_details(json!({
            "starting": true,
            "waitingFor": starting.waiting_for(),
            "failedAttempts": starting.failed_attempts.load(Ordering::Relaxed),
        }))
        .with_retry_after(RETRY_AFTER)
}

async fn not_yet(State(starting): State<Arc<Starting>>, request: HeaderMap) -> Response {
    let browser = request
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if !browser {
        return ApiError::new(
            ErrorCode::NotReady,
            "the monitor is starting; try again shortly",
        )
        .with_retry_after(RETRY_AFTER)
        .into_response();
    }
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{secs}\">\
         <title>Aegis monitor: starting</title>\
         <style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:3rem auto;\
         padding:0 1rem;color:#111827}}h1{{font-size:1.25rem}}p{{color:#4b5563}}</style>\
         </head>\
         <body><h1>The Aegis monitor is starting</h1>\
         <p>It is waiting for {what}. This page reloads every {secs} seconds \
         and shows the dashboard once the monitor has started.</p></body></html>\n",
        secs = RETRY_AFTER.as_secs(),
        what = match starting.waiting_for() {
            "nats" => "NATS",
            "jetstream" => "JetStream",
            "registry" => "the registry",
            other => other,
        },
    );
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (
                header::RETRY_AFTER,
                HeaderValue::from(RETRY_AFTER.as_secs()),
            ),
        ],
        Html(page),
    )
        .into_response()
}
