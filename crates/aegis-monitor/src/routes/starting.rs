//! What the monitor answers while it waits to start (NATS not reachable
//! yet, JetStream or the registry not ready): it already listens, so an
//! orchestrator's probes and an operator's `curl` get an answer instead of
//! a refused connection. `/health` is 200 (`starting`: the process is
//! alive and trying), `/ready` is 503 `NOT_READY` naming what it waits for,
//! and every other path is 503 `NOT_READY` with `Retry-After`. Nothing here
//! reads NATS, and nothing says where NATS is or how it failed: that goes
//! to the log.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicU32, Ordering},
};

use axum::{Json, Router, extract::State, middleware, routing::get};
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
    let waiting_for = *starting
        .waiting_for
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    ApiError::new(ErrorCode::NotReady, "the monitor is starting")
        .with_details(json!({
            "starting": true,
            // Before the first attempt has ended: the connection to NATS.
            "waitingFor": waiting_for.unwrap_or("nats"),
            "failedAttempts": starting.failed_attempts.load(Ordering::Relaxed),
        }))
        .with_retry_after(RETRY_AFTER)
}

async fn not_yet() -> ApiError {
    ApiError::new(
        ErrorCode::NotReady,
        "the monitor is starting; try again shortly",
    )
    .with_retry_after(RETRY_AFTER)
}
