//! [`AppState`]: what every handler shares — the NATS connection, the
//! authenticator, the definitions store, the registry reader, the metrics
//! feed, the live event channel — and the background tasks that keep them
//! current.
//!
//! [`AppState::start`] checks the configuration before any I/O, connects,
//! opens or creates the NATS resources and starts the tasks. The tasks stop
//! on [`AppState::shutdown`], when the given token is cancelled, or when the
//! last clone of the state is dropped.

use std::{sync::Arc, time::Duration};

use aegis_sdk::Connection;
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Utc};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    auth::{AuthConfigError, Authenticator},
    bus::{self, SetupError, StreamReads},
    config::MonitorConfig,
    definitions::DefinitionStore,
    fleet::{Fleet, FleetError},
    list_cache::ListCache,
    live::{self, LiveEvent},
    metrics_feed::MetricsFeed,
    nats_health::NatsHealth,
    probe::JetStreamProbe,
    telemetry,
};

/// Why the monitor could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The authentication setup is refused (e.g. no token and no insecure_dev).
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    /// A setting that would break the monitor once started (a zero
    /// timeout, a UI directory that is not a built export).
    #[error(transparent)]
    Setting(#[from] crate::config::SettingError),
    /// NATS could not be reached or is unsuitable.
    #[error(transparent)]
    Connect(#[from] aegis_sdk::ConnectError),
    /// A bucket or stream could not be opened or cannot work.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The fleet view (registry, election keys, connection advisories)
    /// could not start.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// Something else failed while starting.
    #[error("cannot start the monitor: {0}")]
    Other(String),
}

impl StartError {
    /// Whether the failure may pass by itself: no server answered, JetStream
    /// or a bucket not ready, a view that did not load in time (a cluster
    /// still starting or electing its leaders). Refused credentials, a bad
    /// configuration or a server too old need a fix.
    pub fn is_transient(&self) -> bool {
        use aegis_sdk::{election::ElectionError, registry::RegistryError};
        match self {
            StartError::Connect(e) => e.is_transient(),
            StartError::Setup(e) => matches!(e, SetupError::Open { .. }),
            StartError::Fleet(FleetError::Registry(RegistryError::NotSynced(_))) => true,
            StartError::Fleet(FleetError::Elections(ElectionError::NotSynced(_))) => true,
            _ => false,
        }
    }

    /// What a start that failed this way waits for, as the monitor's
    /// `/ready` says while starting: `nats`, `jetstream` (its buckets and
    /// streams) or `registry` (the views' first load).
    pub fn waiting_for(&self) -> &'static str {
        match self {
            StartError::Connect(_) => "nats",
            StartError::Setup(_) => "jetstream",
            StartError::Fleet(_) => "registry",
            StartError::Auth(_) | StartError::Setting(_) | StartError::Other(_) => "configuration",
        }
    }
}

/// Shared state of the API; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: MonitorConfig,
    conn: Connection,
    auth: Authenticator,
    definitions: DefinitionStore,
    fleet: Fleet,
    lists: ListCache,
    metrics: MetricsFeed,
    logs: Stream,
    reads: StreamReads,
    live: broadcast::Sender<LiveEvent>,
    probe: JetStreamProbe,
    nats: NatsHealth,
    started_at: DateTime<Utc>,
    started: std::time::Instant,
    prometheus: Option<PrometheusHandle>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("environment", &self.inner.config.environment)
            .field("conn", &self.inner.conn)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Checks `config`, connects to NATS, opens or creates the buckets and
    /// streams and starts the background tasks, which stop when `shutdown`
    /// is cancelled (or on [`AppState::shutdown`]).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use aegis_monitor::{AppState, MonitorConfig};
    /// let config = MonitorConfig { insecure_dev: true, ..Default::default() };
    /// let state = AppState::start(config, Default::default()).await?;
    /// let app = aegis_monitor::router(state.clone());
    /// # drop(app);
    /// state.shutdown().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`StartError`]: refused settings or authentication setup (checked
    /// first, before any I/O, see [`MonitorConfig::check`]), unreachable or unsuitable NATS, unusable buckets.
    pub async fn start(
        config: MonitorConfig,
        shutdown: CancellationToken,
    ) -> Result<AppState, StartError> {
        config.check()?;
        let auth = Authenticator::from_config(&config)?;
        if auth.is_insecure() {
            tracing::warn!(
                "!!! AUTHENTICATION IS OFF (--insecure-dev): anyone who can reach this port can change service definitions. Never do this outside a development machine. !!!"
            );
        }
        let conn = Connection::connect(config.nats.clone()).await?;
        let resources = bus::ensure_resources(conn.jetstream(), &config).await?;
        let cancel = shutdown.child_token();
        // A start that fails part-way stops the tasks it had started (and
        // with them their hold on the connection), so it can be tried again.
        let stop_on_failure = cancel.clone().drop_guard();
        let tasks = TaskTracker::new();
        let (live, _) = broadcast::channel(live::CAPACITY);
        let definitions =
            DefinitionStore::start(&conn, resources.definitions, live.clone(), cancel.clone())
                .await
                .map_err(|e| StartError::Other(format!("{e:#}")))?;
        let fleet = Fleet::start(
            &conn,
            config.system_account.as_ref(),
            cancel.clone(),
            &tasks,
        )
        .await?;
        if !fleet.sees_disconnects() {
            tracing::info!(
                "no NATS system account configured: a crashed instance shows as down when its registry record expires (give --nats-system-user/--nats-system-password to see it at once)"
            );
        }
        live::forward_fleet(fleet.clone(), live.clone(), cancel.clone(), &tasks);
        let nats = NatsHealth::start(&conn, fleet.server_pings(), cancel.clone(), &tasks);
        let metrics = MetricsFeed::start(
            &conn,
            resources.metrics,
            config.metrics_retention,
            live.clone(),
            cancel.clone(),
            &tasks,
        );
        let state = AppState {
            inner: Arc::new(Inner {
                prometheus: telemetry::prometheus(),
                config,
                conn,
                auth,
                definitions,
                fleet,
                lists: ListCache::new(),
                metrics,
                logs: resources.logs,
                reads: StreamReads::default(),
                live,
                probe: JetStreamProbe::default(),
                nats,
                started_at: Utc::now(),
                started: std::time::Instant::now(),
                cancel,
                tasks,
            }),
        };
        state.spawn_gauges();
        stop_on_failure.disarm();
        Ok(state)
    }

    /// Updates the gauges every few seconds (cheap: memory only), and
    /// every minute forgets sign-in clients whose budget is full again.
    fn spawn_gauges(&self) {
        let weak = Arc::downgrade(&self.inner);
        let cancel = self.inner.cancel.clone();
        self.inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            let mut ticks = 0u32;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(inner) = weak.upgrade() else { return };
                let state = AppState { inner };
                state.update_gauges();
                ticks = ticks.wrapping_add(1);
                if ticks.is_multiple_of(12) {
                    state.auth().forget_idle_clients();
                }
            }
        });
    }

    pub(crate) fn update_gauges(&self) {
        metrics::gauge!(telemetry::NATS_CONNECTED).set(if self.conn().is_connected() {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(telemetry::DEFINITIONS).set(self.definitions().count() as f64);
        let counts = self.fleet().summary();
        for (status, n) in [
            ("ACTIVE", counts.active),
            ("UNHEALTHY", counts.unhealthy),
            ("STANDBY", counts.standby),
        ] {
            metrics::gauge!(telemetry::INSTANCES, "status" => status).set(n as f64);
        }
    }

    /// Stops the background tasks (bounded wait) and drains the NATS
    /// connection.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("background tasks did not stop within 5s");
        }
        self.inner.fleet.drain().await;
        if let Err(e) = self.inner.conn.drain().await {
            tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "draining the NATS connection failed");
        }
    }

    /// A token cancelled when the monitor shuts down.
    pub fn cancelled(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// The configuration the state was started with.
    pub fn config(&self) -> &MonitorConfig {
        &self.inner.config
    }

    /// The NATS connection.
    pub fn conn(&self) -> &Connection {
        &self.inner.conn
    }

    pub(crate) fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub(crate) fn definitions(&self) -> &DefinitionStore {
        &self.inner.definitions
    }

    pub(crate) fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    /// The instance lists, serialized once per change.
    pub(crate) fn lists(&self) -> &ListCache {
        &self.inner.lists
    }

    pub(crate) fn metrics(&self) -> &MetricsFeed {
        &self.inner.metrics
    }

    pub(crate) fn logs(&self) -> &Stream {
        &self.inner.logs
    }

    /// The turns to read stream history through temporary consumers
    /// (instance events, metrics history, the leadership timeline).
    pub(crate) fn stream_reads(&self) -> &StreamReads {
        &self.inner.reads
    }

    pub(crate) fn probe(&self) -> &JetStreamProbe {
        &self.inner.probe
    }

    /// The picture of the NATS cluster, refreshed every second.
    pub(crate) fn nats(&self) -> &NatsHealth {
        &self.inner.nats
    }

    pub(crate) fn live(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.live.subscribe()
    }

    pub(crate) fn started_at(&self) -> DateTime<Utc> {
        self.inner.started_at
    }

    pub(crate) fn uptime(&self) -> Duration {
        self.inner.started.elapsed()
    }

    pub(crate) fn prometheus(&self) -> Option<&PrometheusHandle> {
        self.inner.prometheus.as_ref()
    }
}
