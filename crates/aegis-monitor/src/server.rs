//! Running the monitor: [`run`] is what `aegis api` calls; [`serve`] and
//! [`serve_on`] take a ready configuration or listener.
//!
//! Shutdown follows decide, tell, wait: the caller's token decides; the
//! server stops accepting connections, live streams end, in-flight requests
//! finish (bounded by [`DRAIN_TIMEOUT`]); then the background tasks stop and
//! the NATS connection drains.
//!
//! [`serve_router`] is the HTTP server itself: hyper's HTTP/1.1 connection
//! builder with a header-read timeout, under a cap on open connections, so
//! slow-header or idle clients can neither hold a connection for long nor
//! exhaust the process's file descriptors; each client holds at most its
//! share of the cap (`server/shares.rs`), so a busy one cannot take it all.

mod shares;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use axum::{Router, extract::ConnectInfo};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{Semaphore, TryAcquireError},
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use self::shares::{Limit, Shares, Throttle};
use crate::{
    config::{ApiArgs, MonitorConfig, TrustedProxy},
    routes::{
        router,
        starting::{self, Starting},
    },
    state::{AppState, StartError},
};

/// Longest wait for in-flight requests after shutdown is requested.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a failed accept, so a full file table is not spun on.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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

/// Binds `config.bind:config.port`, starts the state (answering `/health`
/// and `/ready` as `starting` meanwhile, see `routes/starting.rs`) and
/// serves until `shutdown` is cancelled.
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
    // The settings and the authentication setup before any I/O: a monitor
    // that would refuse to start says so before it binds its port or logs
    // that it starts.
    config
        .check()
        .map_err(StartError::from)
        .and_then(|()| crate::auth::Authenticator::check(&config).map_err(StartError::from))
        .map_err(|e| anyhow::Error::new(e).context("starting the monitor"))?;
    for warning in crate::auth::Authenticator::warnings(&config) {
        tracing::warn!("{warning}");
    }
    let addr = config.listen_addr();
    // Listening first: a port in use fails at once rather than once NATS
    // answers, and the probes get an answer while the state starts.
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    let limits = Limits::from(&config);
    let starting = Arc::new(Starting::default());
    let started = CancellationToken::new();
    tracing::info!(%addr, "monitor API starting (it answers 503 until started)");
    let (state, answered) = tokio::join!(
        async {
            let state = start_waiting(config, &shutdown, &starting).await;
            started.cancel();
            state
        },
        accept(
            &listener,
            starting::router(starting.clone()),
            &limits,
            &started
        ),
    );
    // Connections taken while starting finish in the background; new ones
    // wait in the backlog for the API.
    tokio::spawn(answered.shutdown());
    let Some(state) = state? else {
        return Ok(());
    };
    serve_on(listener, state, shutdown).await
}

/// Starts the state, trying again while the failure may pass by itself
/// (NATS, JetStream or the registry not ready yet) for up to
/// `config.startup_timeout`, telling `starting` what each failed attempt
/// waited for; `None` when shut down meanwhile.
async fn start_waiting(
    config: MonitorConfig,
    shutdown: &CancellationToken,
    starting: &Starting,
) -> anyhow::Result<Option<AppState>> {
    use aegis_sdk::startup::{StartFailure, retry};
    // As `anyhow::Error`s, so each retried attempt is logged with its causes.
    let started = retry(
        config.startup_timeout,
        shutdown,
        || {
            let (config, shutdown) = (config.clone(), shutdown.clone());
            async move {
                AppState::start(config, shutdown).await.map_err(|e| {
                    starting.failed(e.waiting_for());
                    anyhow::Error::from(e)
                })
            }
        },
        |e| {
            e.downcast_ref::<StartError>()
                .is_some_and(StartError::is_transient)
        },
    )
    .await;
    match started {
        Ok(state) => Ok(state),
        Err(StartFailure::Permanent(e)) => Err(e.context("starting the monitor")),
        Err(StartFailure::TimedOut { last, attempts }) => Err(last.context(format!(
            "starting the monitor: not started within the start-up timeout ({}; {attempts} attempts)",
            humantime::format_duration(config.startup_timeout)
        ))),
    }
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
    let limits = Limits::from(state.config());
    let app = router(state.clone());
    let stopping = CancellationToken::new();
    {
        let (shutdown, stopping, state) = (shutdown.clone(), stopping.clone(), state.clone());
        tokio::spawn(async move {
            shutdown.cancelled().await;
            // Ends the live streams, which would otherwise hold the
            // graceful shutdown open forever.
            state.cancelled().cancel();
            stopping.cancel();
        });
    }
    let server = serve_router(listener, app, limits, stopping);
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

/// What bounds the HTTP server's connections, so slow, idle or busy
/// clients cannot exhaust it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most connections open at once; beyond it the server stops accepting
    /// (new clients wait in the kernel's backlog) until one closes.
    pub max_connections: usize,
    /// Most of them one client (its address; an IPv6 client's /64) may
    /// hold; a connection past it is answered 429 and closed, so no client
    /// can take every slot.
    pub max_connections_per_client: usize,
    /// Peers held to `max_connections` only, not to one client's share:
    /// reverse proxies, which speak for many clients.
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Longest time a client may take to send a request's headers, and
    /// longest an idle keep-alive connection stays open. A slow-header
    /// ("slowloris") client is disconnected after it.
    pub header_read_timeout: Duration,
}

impl From<&MonitorConfig> for Limits {
    fn from(config: &MonitorConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            max_connections_per_client: config.max_connections_per_client,
            trusted_proxies: config.trusted_proxies.clone(),
            header_read_timeout: config.header_read_timeout,
        }
    }
}

/// Serves `app` on `listener` over HTTP/1.1 within `limits` until
/// `shutdown` is cancelled, then waits for open connections to finish
/// their requests (each told to close after its current one).
///
/// HTTP/1.1 only: the monitor speaks plain HTTP (TLS, and HTTP/2 with it,
/// belong to the proxy in front), and cleartext HTTP/2 has no use here but
/// would be one more surface for slow clients. The client's address is in
/// each request's extensions as [`axum::extract::ConnectInfo`].
///
/// ```no_run
/// # async fn demo(app: axum::Router) -> std::io::Result<()> {
/// use aegis_monitor::server::{Limits, serve_router};
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// let limits = Limits {
///     max_connections: 64,
///     max_connections_per_client: 16,
///     trusted_proxies: Vec::new(),
///     header_read_timeout: std::time::Duration::from_secs(5),
/// };
/// serve_router(listener, app, limits, tokio_util::sync::CancellationToken::new()).await
/// # }
/// ```
///
/// # Errors
/// None today: failed accepts (e.g. out of file descriptors) are logged
/// and retried after a pause; the result leaves room for listener errors.
pub async fn serve_router(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let graceful = accept(&listener, app, &limits, &shutdown).await;
    // Refuse new connections while the open ones finish.
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Accepts connections on `listener` and serves `app` on each, within
/// `limits`, until `shutdown` is cancelled; returns what finishes the
/// connections still open.
async fn accept(
    listener: &TcpListener,
    app: Router,
    limits: &Limits,
    shutdown: &CancellationToken,
) -> GracefulShutdown {
    // Installs the metrics recorder if no state has yet, so limits hit
    // while the monitor starts are counted too.
    let _ = crate::telemetry::prometheus();
    let max = limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let shares = Shares::new(
        limits.max_connections_per_client,
        limits.trusted_proxies.clone(),
    );
    let refusing = Arc::new(Semaphore::new(shares::REFUSING_AT_ONCE));
    let refusal = shares::refusal(shares.per_client());
    let (mut full, mut over_share) = (
        Throttle::new(shares::WARN_EVERY),
        Throttle::new(shares::WARN_EVERY),
    );
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    loop {
        // A slot first, then the accept: at the cap, clients wait in the
        // backlog instead of being accepted and starved.
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(TryAcquireError::Closed) => break,
            Err(TryAcquireError::NoPermits) => {
                Limit::Total.count();
                if let Some(unlogged) = full.hit(Instant::now()) {
                    tracing::warn!(
                        max_connections = max,
                        also_hit = unlogged,
                        "all {max} connection slots are taken (--max-connections, \
                         AEGIS_API_MAX_CONNECTIONS): new connections wait in the listen backlog \
                         until one closes; if this is load, not abuse, raise the cap"
                    );
                }
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    slot = slots.clone().acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break,
                    },
                }
            }
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let held = match shares.admit(peer.ip()) {
            Ok(held) => held,
            Err(client) => {
                // The slot goes back at once: a refused connection holds
                // none of the cap, only one of the few refusals.
                drop(slot);
                Limit::PerClient.count();
                if let Some(unlogged) = over_share.hit(Instant::now()) {
                    let per_client = shares.per_client();
                    tracing::warn!(
                        %client,
                        max_connections_per_client = per_client,
                        also_refused = unlogged,
                        "refused a connection from {client} (429): it holds {per_client} \
                         connections, its share (--max-connections-per-client, \
                         AEGIS_API_MAX_CONNECTIONS_PER_CLIENT): raise it if many users share \
                         this address (a NAT or VPN); if it is a reverse proxy, list it with \
                         --trusted-proxy (AEGIS_TRUSTED_PROXIES)"
                    );
                }
                refuse(
                    stream,
                    &refusing,
                    refusal.clone(),
                    limits.header_read_timeout,
                );
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let cut = CancellationToken::new();
        let service = TowerToHyperService::new(app.clone().map_request({
            let cut = CutOff(cut.clone());
            move |mut request: axum::http::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request.extensions_mut().insert(cut.clone());
                request
            }
        }));
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            tokio::select! {
                ended = watched => if let Err(e) = ended {
                    tracing::debug!(%peer, error = %aegis_sdk::startup::Causes(&e), "connection ended with an error");
                },
                // Dropping the connection closes its socket, whatever it
                // was writing.
                () = cut.cancelled() => tracing::debug!(%peer, "connection cut off"),
            }
            drop(held);
            drop(slot);
        });
    }
    graceful
}

/// In every request's extensions (served by [`serve_router`]): closes the
/// request's connection at once, without finishing its answer. For an
/// answer that cannot finish because the client stopped reading (the live
/// stream's stall timeout): hyper only stops writing to such a client, and
/// the answer's own code is not run again until it reads.
#[derive(Debug, Clone)]
pub(crate) struct CutOff(CancellationToken);

impl CutOff {
    /// Closes the connection.
    pub(crate) fn cut(&self) {
        self.0.cancel();
    }
}

/// Answers a connection past its client's share with a 429 and closes it,
/// in the background and within [`shares::REFUSAL_TIME`]; when
/// [`shares::REFUSING_AT_ONCE`] refusals are being answered already,
/// closes it unanswered.
fn refuse(
    stream: TcpStream,
    refusing: &Arc<Semaphore>,
    refusal: Router,
    header_read_timeout: Duration,
) {
    let Ok(permit) = refusing.clone().try_acquire_owned() else {
        return;
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout.min(shares::REFUSAL_TIME))
        .keep_alive(false);
    let service = TowerToHyperService::new(refusal);
    tokio::spawn(async move {
        let _ = tokio::time::timeout(
            shares::REFUSAL_TIME,
            http.serve_connection(TokioIo::new(stream), service),
        )
        .await;
        drop(permit);
    });
}
