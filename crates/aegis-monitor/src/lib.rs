//! The Aegis monitor: the management and monitoring HTTP API that operators
//! and the UI talk to. A plain NATS client (it does not register itself as
//! a trading service), stateless apart from NATS, so several replicas can
//! run behind one load balancer.
//!
//! - [`config`]: [`MonitorConfig`], the `aegis api` flags ([`ApiArgs`]) and
//!   the NATS flags every `aegis` command that connects shares ([`NatsArgs`]).
//! - [`server`]: [`run`] (what `aegis api` calls), [`serve`], [`serve_on`].
//! - [`state`]: [`AppState`], the shared handles and background tasks.
//! - `routes/`: one module per route group, assembled by [`router`]; the
//!   OpenAPI document ([`openapi()`]) is generated from their annotations.
//! - [`auth`]: bearer tokens (admin, viewer, hashed token file), session
//!   cookies, the 401/403 middleware.
//! - [`error`]: [`ApiError`], the `{"error": {code, message, details}}`
//!   envelope and its stable [`ErrorCode`]s; `extract.rs` makes bad input
//!   use it too.
//! - [`fleet`]: the instances as the views show them — the registry's
//!   records with the status the election keys and the server's connection
//!   advisories give them (one ACTIVE per sticky group, crashes seen at once).
//! - `definitions.rs`: service definitions in KV (`service_definitions`):
//!   atomic create, compare-and-set updates, audit trail.
//! - `metrics_feed.rs` (latest snapshot per instance), `bus.rs` (buckets,
//!   streams, reading recent stream messages), [`live`] (the SSE feed),
//!   `list_cache.rs` (the instance lists as bytes built once per change,
//!   with ETags and gzip),
//!   `nats_health/` (the NATS cluster itself: servers up, the JetStream
//!   API answering, each stream's leader, refreshed every second for
//!   `/api/nats`),
//!   `telemetry.rs` (`/metrics`), `ui.rs` (static UI files), `probe.rs`
//!   (the JetStream checks of `/ready` and `/status`, cached for a second).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use aegis_monitor::{AppState, MonitorConfig, router};
//! use aegis_sdk::{AegisConfig, Secret};
//!
//! let config = MonitorConfig {
//!     nats: AegisConfig::with_servers("nats://127.0.0.1:4222"),
//!     admin_token: Some(Secret::new("a-long-random-admin-token")),
//!     ..Default::default()
//! };
//! let state = AppState::start(config, Default::default()).await?;
//! let app: axum::Router = router(state);
//! # drop(app);
//! # Ok(()) }
//! ```

pub mod auth;
mod bus;
pub mod config;
mod definitions;
pub mod error;
mod extract;
pub mod fleet;
mod list_cache;
pub mod live;
mod metrics_feed;
mod nats_health;
mod openapi;
mod probe;
mod redact;
mod routes;
pub mod server;
pub mod state;
mod telemetry;
mod ui;

pub use auth::{Principal, Role, hash_token};
pub use bus::{SetupError, ensure_infrastructure};
pub use config::{
    ApiArgs, CookieSecurity, MonitorConfig, NatsArgs, SettingError, SystemAccount, SystemArgs,
    TrustedProxy, TrustedProxyError,
};
pub use definitions::HistoryEntry;
pub use error::{ApiError, ErrorCode};
pub use extract::MAX_BODY_BYTES;
pub use live::LiveEvent;
pub use nats_health::{JetStreamState, NatsPicture, ServerState, StreamState};
pub use routes::{openapi, router};
pub use server::{run, serve, serve_on};
pub use state::{AppState, StartError};
