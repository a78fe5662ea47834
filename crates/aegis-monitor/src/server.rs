//! Running the monitor: [`run`] is what `aegis api` calls; [`serve`] and
//! [`serve_on`] take a ready configuration or listener.
//!
//! Shutdown follows decide, tell, wait: the caller's token decides; the
//! server stops accepting connections, live streams end, in-flight requests
//! finish (bounded by [`DRAIN_TIMEOUT`]); then the background tasks stop and
//! the NATS connection drains.

use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    config::{ApiArgs, MonitorConfig},
    routes::router,
    state::AppState,
};

/// Longest wait for in-flight requests after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `aegis api`: reads the flags into a [`MonitorConfig`] and serves
/// until `shutdown` is cancelled.
///
/// ```no_run
/// # async fn demo(args: aegis_monitor::ApiArgs) -> anyhow::Result<()> {
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// aegis_monitor::run(args, shutdown).await
/// # }
/// ```
///
/// # Errors
/// An invalid configuration (including no token without `--insecure-dev`),
/// an unreachable or unsuitable NATS, or a port that cannot be bound.
pub async fn run(args: ApiArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let config = args.into_config()?;
    serve(config, shutdown).await
}

/// Starts the state, binds `config.bind:config.port` and serves until
/// `shutdown` is cancelled.
///
/// ```no_run
/// # async fn demo() -> anyhow::Result<()> {
/// let config = aegis_monitor::MonitorConfig { insecure_dev: true, ..Default::default() };
/// aegis_monitor::serve(config, tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
///
/// # Errors
/// As [`run`].
pub async fn serve(config: MonitorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let addr = config.listen_addr();
    let state = AppState::start(config, shutdown.clone())
        .await
        .context("starting the monitor")?;
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            state.shutdown().await;
            return Err(e).with_context(|| format!("cannot listen on {addr}"));
        }
    };
    serve_on(listener, state, shutdown).await
}

/// Serves `state`'s router on `listener` until `shutdown` is cancelled, then
/// shuts the state down.
///
/// ```no_run
/// # async fn demo(state: aegis_monitor::AppState) -> anyhow::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// aegis_monitor::serve_on(listener, state, tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
///
/// # Errors
/// The server failed (e.g. the listener broke).
pub async fn serve_on(
    listener: TcpListener,
    state: AppState,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    tracing::info!(
        %addr,
        environment = %state.config().environment,
        "monitor API listening (docs at /api/docs)"
    );
    let app = router(state.clone());
    let stopping = {
        let (shutdown, state) = (shutdown.clone(), state.clone());
        async move {
            shutdown.cancelled().await;
            // Ends the live streams, which would otherwise hold the
            // graceful shutdown open forever.
            state.cancelled().cancel();
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(stopping);
    let result = tokio::select! {
        result = server => result.context("serving HTTP"),
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        } => {
            tracing::warn!("in-flight requests did not finish within {DRAIN_TIMEOUT:?}; stopping anyway");
            Ok(())
        }
    };
    state.shutdown().await;
    tracing::info!("monitor API stopped");
    result
}
