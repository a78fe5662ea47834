//! Liveness and readiness over HTTP, for orchestrators (Kubernetes probes,
//! load balancers, `curl`): `GET /healthz` and `GET /readyz` on a listener
//! of the instance's own (feature `probes`).
//!
//! - `/healthz` (liveness) answers 200 while the process's runtime serves
//!   requests. It deliberately does not look at a NATS outage: that must
//!   not make an orchestrator restart every instance at once — the
//!   connection reconnects by itself. The one exception is a connection
//!   closed for good ([`Connection::is_closed_for_good`]: its
//!   `nats.reconnect.max_reconnects` used up), which never reconnects:
//!   then `/healthz` answers 503, e.g. `{"alive":false,"reason":"..."}`, so
//!   that the process is restarted rather than left out of service.
//! - `/readyz` (readiness) answers 200 only while the instance is running,
//!   connected to NATS and its registry record is being written; otherwise
//!   503 with the reasons, e.g. `{"ready":false,"reasons":["not connected to
//!   NATS (state: pending)"]}`. It turns 503 as soon as a graceful stop
//!   begins, so a rolling update waits for the replacement.
//!
//! The listener is bound before the instance starts, so liveness holds
//! during a long start-up (NATS or a bucket not ready yet) and readiness
//! says `starting`.
//!
//! ```no_run
//! # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
//! use aegis_sdk::probes::Probes;
//!
//! let probes = Probes::new();
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:8081").await?;
//! tokio::spawn(probes.clone().serve(listener));
//! let service = conn
//!     .service("greeter", "1.0.0")
//!     .handler("hello", |name: String| async move {
//!         Ok::<_, aegis_sdk::rpc::WireError>(format!("hello, {name}"))
//!     })
//!     .start()
//!     .await?;
//! probes.running(&conn, service.registration().map(|r| r.handle()));
//! // ... on SIGTERM:
//! probes.stopping();
//! service.shutdown().await?;
//! # Ok(()) }
//! ```

use std::sync::{Arc, Mutex};

use axum::{Json, Router, http::StatusCode, response::IntoResponse, routing::get};
use serde::Serialize;

use crate::{Connection, registry::RegistrationHandle};

/// What the instance is doing, as the probes see it.
#[derive(Debug, Clone, Default)]
enum Phase {
    /// Not started yet (waiting for NATS, JetStream or a bucket).
    #[default]
    Starting,
    /// Serving, with its connection and (if registered) its registration.
    Running(Connection, Option<RegistrationHandle>),
    /// A graceful stop has begun.
    Stopping,
}

/// The state behind `/healthz` and `/readyz`; cloneable, cheap to share.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    phase: Arc<Mutex<Phase>>,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Liveness {
    /// Whether the process can go on; when not, it should be restarted.
    pub alive: bool,
    /// Why not (absent when alive).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a connection closed for good makes the process dead.
const CLOSED_FOR_GOOD: &str = "the NATS connection is closed for good: it used up \
     nats.reconnect.max_reconnects and reconnects no more";

/// What `/readyz` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// Whether the instance should receive work.
    pub ready: bool,
    /// Why not, one line each (empty when ready).
    pub reasons: Vec<String>,
}

impl Probes {
    /// Probes in the `starting` phase.
    pub fn new() -> Self {
        Self::default()
    }

    /// The instance runs on `conn`; `registration` (when registered) is
    /// checked for failing writes.
    pub fn running(&self, conn: &Connection, registration: Option<RegistrationHandle>) {
        self.set(Phase::Running(conn.clone(), registration));
    }

    /// A graceful stop has begun: readiness turns 503 from now on.
    pub fn stopping(&self) {
        self.set(Phase::Stopping);
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(|e| e.into_inner()) = phase;
    }

    /// Whether the process is alive, and why not: only a connection
    /// closed for good makes it dead.
    ///
    /// ```
    /// let probes = aegis_sdk::probes::Probes::new();
    /// assert!(probes.liveness().alive);
    /// ```
    pub fn liveness(&self) -> Liveness {
        let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reason = match phase {
            Phase::Running(conn, _) if conn.is_closed_for_good() => {
                Some(CLOSED_FOR_GOOD.to_owned())
            }
            _ => None,
        };
        Liveness {
            alive: reason.is_none(),
            reason,
        }
    }

    /// Whether the instance is ready, and why not.
    ///
    /// ```
    /// let probes = aegis_sdk::probes::Probes::new();
    /// let r = probes.readiness();
    /// assert!(!r.ready);
    /// assert_eq!(r.reasons, vec!["starting".to_owned()]);
    /// ```
    pub fn readiness(&self) -> Readiness {
        let phase = self.phase.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let reasons = match phase {
            Phase::Starting => vec!["starting".to_owned()],
            Phase::Stopping => vec!["stopping".to_owned()],
            Phase::Running(conn, registration) => {
                let mut reasons = Vec::new();
                let state = conn.client().connection_state();
                if conn.is_closed_for_good() {
                    reasons.push(CLOSED_FOR_GOOD.to_owned());
                } else if state != async_nats::connection::State::Connected {
                    reasons.push(format!(
                        "not connected to NATS (state: {})",
                        format!("{state:?}").to_lowercase()
                    ));
                }
                if let Some(registration) = registration {
                    // One failed heartbeat is retried at once and is not yet
                    // a reason to take the instance out; `unready_after`
                    // failures in a row are. Only here: the record keeps its
                    // status, since a registry outage fails every instance's
                    // writes alike.
                    let failures = registration.consecutive_failures();
                    if failures >= registration.options().unready_threshold() {
                        reasons.push(format!("registry writes failing ({failures} in a row)"));
                    }
                }
                reasons
            }
        };
        Readiness {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    /// The routes: `GET /healthz` and `GET /readyz`.
    pub fn router(self) -> Router {
        let live = self.clone();
        Router::new()
            .route(
                "/healthz",
                get(move || {
                    let probes = live.clone();
                    async move {
                        let liveness = probes.liveness();
                        let status = if liveness.alive {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (status, Json(liveness)).into_response()
                    }
                }),
            )
            .route(
                "/readyz",
                get(move || {
                    let probes = self.clone();
                    async move {
                        let readiness = probes.readiness();
                        let status = if readiness.ready {
                            StatusCode::OK
                        } else {
                            StatusCode::SERVICE_UNAVAILABLE
                        };
                        (status, Json(readiness)).into_response()
                    }
                }),
            )
    }

    /// Serves the probes on `listener` until the process ends.
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }
}
