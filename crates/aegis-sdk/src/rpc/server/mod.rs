//! The serving side of RPC: [`ServiceBuilder`] → [`ServiceBuilder::start`] →
//! [`Service`], a handle that stops the service on [`Service::shutdown`] (or,
//! less gracefully, on drop).
//!
//! Start subscribes every method, then registers the instance in the
//! [registry](crate::registry) (unless `.register(false)`), so discovery
//! only ever hands out instances that already listen. In a
//! [single-active](ServiceBuilder::single_active) service the shared subject
//! of a leader-only method is subscribed by the leader alone
//! (`rpc/leader_gate.rs`). Shutdown runs the reverse: a
//! leader leaves the shared subjects and resigns, the instance deregisters
//! (discovery stops choosing it), then unsubscribes (stops taking
//! requests) and waits for the requests in flight — all within the
//! shutdown timeout.
//!
//! The request path is in `rpc/endpoint.rs`, the services
//! protocol in `rpc/micro.rs`. A slow handler does not hold up the
//! next request; a panicking handler answers `INTERNAL` and the service keeps
//! running; a request that does not decode answers `INVALID_REQUEST`.
//!
//! - `handler.rs`: the typed handler behind every method and the
//!   [`RequestContext`] it receives.
//! - `start.rs`: [`ServiceBuilder::start`] as named steps (validate,
//!   campaign, subscribe, describe, register, mirror), with one rollback
//!   guard that undoes what a failed step leaves behind.
//! - `running.rs`: the [`Service`] handle and its ordered shutdown.
//! - `roles.rs`: mirroring the election's role into the registry record.
//! - [`relayed`]: refusing what JetStream relays onto a request subject.
//!
//! Only what a client published is a request. A message JetStream sent on
//! a role's behalf (a push consumer pointed at a method's or the control
//! subject, a stream republishing there, a direct get answering there) is
//! dropped unanswered and uncounted, with a rate-limited warning: NATS
//! checks such a role's consumer and stream settings against none of its
//! publish permissions, so it could otherwise call any method or drill any
//! instance ([`relayed`] says how the server marks these messages).

mod handler;
pub mod relayed;
mod roles;
mod running;
mod start;

use std::{collections::HashMap, fmt, future::Future, sync::Arc, time::Duration};

use aegis_contracts::names::NameError;
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

pub use handler::RequestContext;
pub(crate) use handler::{ContextParts, ErasedHandler};
pub use running::Service;

use super::{WireError, schema::MethodSchemas};
use crate::{
    Connection,
    election::LeaseConfig,
    registry::{
        RegistrationOptions, RegistryError,
        registration::{AnyHealthCheck, with_reason, without_reason},
    },
};
use handler::TypedHandler;

/// Declares a service: its name, version, instance id and typed handlers.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use aegis_sdk::{rpc::WireError, schemars::JsonSchema};
/// use serde::{Deserialize, Serialize};
///
/// // The SDK's own schemars, re-exported: no `schemars` dependency needed.
/// /// Asks for the price of a symbol (published as the method's description).
/// #[derive(Deserialize, JsonSchema)]
/// #[schemars(crate = "aegis_sdk::schemars")]
/// struct Quote { symbol: String }
/// #[derive(Serialize, JsonSchema)]
/// #[schemars(crate = "aegis_sdk::schemars")]
/// struct Price { symbol: String, price: f64 }
///
/// let service = conn
///     .service("pricing-service", "1.0.0")
///     .handler("get_price", |q: Quote| async move {
///         if q.symbol.is_empty() {
///             return Err(WireError::invalid_request("symbol is required"));
///         }
///         Ok(Price { symbol: q.symbol, price: 175.0 })
///     })
///     .start()
///     .await?;
/// service.shutdown().await?;
/// # Ok(()) }
/// ```
#[must_use = "a ServiceBuilder serves nothing until `.start().await`"]
pub struct ServiceBuilder {
    conn: Connection,
    name: String,
    version: String,
    description: Option<String>,
    instance_id: Option<String>,
    shutdown_timeout: Duration,
    handlers: Vec<(String, Arc<dyn ErasedHandler>, MethodSchemas)>,
    /// Method descriptions set with [`ServiceBuilder::describe`].
    descriptions: HashMap<String, String>,
    metadata: HashMap<String, String>,
    register: bool,
    registration: RegistrationOptions,
    health_check: Option<AnyHealthCheck>,
    single_active: Option<String>,
    lease: LeaseConfig,
    any_role: std::collections::HashSet<String>,
    metrics_interval: Option<Duration>,
    drain_grace: Duration,
    resign_after: u32,
}

/// Default number of failed health checks in a row after which a sticky
/// leader hands over ([`ServiceBuilder::resign_after_failed_checks`]).
pub const DEFAULT_RESIGN_AFTER_FAILED_CHECKS: u32 = 3;

impl fmt::Debug for ServiceBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceBuilder")
            .field("name", &self.name)
            .field("version", &self.version)
            .field("instance_id", &self.instance_id)
            .field(
                "methods",
                &self.handlers.iter().map(|(m, ..)| m).collect::<Vec<_>>(),
            )
            .field("register", &self.register)
            .field("registration", &self.registration)
            .finish()
    }
}

/// Why a service could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// A name (service, instance, method) is invalid; nothing was started.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The version is not semver.
    #[error("service version `{0}` is not semver (e.g. 1.2.3)")]
    InvalidVersion(String),
    /// The same method was declared twice.
    #[error("method `{0}` is declared twice")]
    DuplicateMethod(String),
    /// A service without methods serves nothing.
    #[error("service `{0}` declares no methods")]
    NoMethods(String),
    /// A timing option of the builder cannot work; nothing was started.
    #[error("{option}: {message}")]
    InvalidTiming {
        /// The builder method, e.g. `metrics_interval`.
        option: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
    /// NATS refused a subscription.
    #[error("cannot start the service on NATS")]
    Nats(#[source] async_nats::Error),
    /// The server refused this NATS user the subjects the service's
    /// requests come on (the user's `subscribe` permissions lack
    /// `rpc.{service}.>`): it could not hear a call. Nothing was started.
    #[error(
        "NATS refused this user the requests of {service} ({violation}): run it as a user \
         allowed to subscribe to rpc.{service}.>"
    )]
    Refused {
        /// The service.
        service: String,
        /// The server's text, e.g. `Permissions Violation for Subscription
        /// to "rpc.fx-service.fx-1.convert"`.
        violation: String,
    },
    /// In-flight requests did not finish within the shutdown timeout (their
    /// handlers run on; see [`Service::shutdown`]).
    #[error("{0} request(s) still running after the shutdown timeout")]
    ShutdownTimeout(usize),
    /// Registering, changing or removing the registry record failed (or the
    /// registration options are invalid).
    #[error("service registry")]
    Registry(#[from] RegistryError),
    /// The single-active election could not start (or its timing is invalid).
    #[error("single-active election")]
    Election(#[from] crate::election::ElectionError),
    /// A running process already serves this instance id (ids are unique
    /// per process: a copy-pasted id, or replicas given the same id);
    /// nothing was started. Each process needs its
    /// own id, or none for a generated one.
    #[error(
        "instance id `{instance}` of service `{service}` is in use by a running process ({}); \
         give each process its own id, or set none to get a generated one",
        holder_text(host.as_deref(), *pid)
    )]
    InstanceIdInUse {
        /// The service.
        service: String,
        /// The instance id asked for.
        instance: String,
        /// The host of the process holding it, as it says.
        host: Option<String>,
        /// Its process id, as it says.
        pid: Option<u32>,
    },
    /// The service was started with `.register(false)`: it has no record.
    #[error("the service is not registered")]
    NotRegistered,
    /// [`Service::run_until_signal`] could not listen for Ctrl-C or
    /// SIGTERM; the service was stopped at once instead.
    #[error("cannot listen for Ctrl-C or SIGTERM")]
    Signal(#[source] std::io::Error),
    /// [`ServiceBuilder::run`] stopped the service, then could not drain
    /// the connection: what it had not yet sent (the last log lines) may
    /// be lost.
    #[error("draining the NATS connection after the stop")]
    Drain(#[source] async_nats::client::DrainError),
}

/// "host h, pid p" as far as known.
fn holder_text(host: Option<&str>, pid: Option<u32>) -> String {
    match (host, pid) {
        (Some(host), Some(pid)) => format!("host {host}, pid {pid}"),
        (Some(host), None) => format!("host {host}"),
        (None, Some(pid)) => format!("pid {pid}"),
        (None, None) => "it answered $SRV.PING".to_owned(),
    }
}

impl ServiceBuilder {
    pub(crate) fn new(conn: Connection, name: String, version: String) -> Self {
        Self {
            conn,
            name,
            version,
            description: None,
            instance_id: None,
            shutdown_timeout: Duration::from_secs(10),
            handlers: Vec::new(),
            descriptions: HashMap::new(),
            metadata: HashMap::new(),
            register: true,
            registration: RegistrationOptions::default(),
            health_check: None,
            single_active: None,
            lease: LeaseConfig::default(),
            any_role: std::collections::HashSet::new(),
            metrics_interval: Some(crate::telemetry::DEFAULT_METRICS_INTERVAL),
            drain_grace: Duration::from_millis(100),
            resign_after: DEFAULT_RESIGN_AFTER_FAILED_CHECKS,
        }
    }

    /// Sets the instance id (unique per process; in Kubernetes the pod name):
    /// `^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`, checked by [`start`](Self::start).
    /// Default: host name plus a short random suffix.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// A human description, shown by `$SRV.INFO`.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Describes a method for `$SRV.INFO` (endpoint metadata `description`).
    /// Without it, the doc comment of the method's request type is used.
    pub fn describe(mut self, method: impl Into<String>, text: impl Into<String>) -> Self {
        self.descriptions.insert(method.into(), text.into());
        self
    }

    /// How long [`Service::shutdown`] waits for in-flight requests (default
    /// 10 s; one too long for the clock, such as `Duration::MAX`, waits as
    /// long as they take).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds a metadata entry published in `$SRV.INFO` and in the instance's
    /// registry record (where it overrides a standard entry of the same
    /// name: `host`, `pid`, `startTime`, `sdkVersion`, `endpoints`).
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Whether to register in the service registry (default `true`). An
    /// unregistered service is reachable only through
    /// [`RpcClient::call_balanced`](super::RpcClient::call_balanced) and
    /// [`RpcClient::call_instance`](super::RpcClient::call_instance).
    pub fn register(mut self, yes: bool) -> Self {
        self.register = yes;
        self
    }

    /// How often the liveness beat goes out and the health check runs
    /// (default 1 s; at most a third of the TTL, since the record is
    /// re-written on a beat, at least three times per TTL).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.registration.heartbeat = every;
        self
    }

    /// How often an unchanged registry record is re-written to renew its
    /// TTL (default 4 s; see [`RegistrationOptions::effective_refresh`]).
    /// Every process calling the service receives each write.
    pub fn refresh(mut self, every: Duration) -> Self {
        self.registration.refresh = every;
        self
    }

    /// How long the record outlives its last write on the server
    /// (default 15 s, above a cluster's stream leader election; at least
    /// three heartbeats): the
    /// backstop for a hung or partitioned instance (a crash is seen at once
    /// from the server's disconnect advisory and the missing beats).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.registration.ttl = ttl;
        self
    }

    /// All registration timing at once.
    pub fn registration(mut self, options: RegistrationOptions) -> Self {
        self.registration = options;
        self
    }

    /// A check run before every heartbeat; while it fails the instance
    /// reports UNHEALTHY and discovery routes around it. It says only
    /// whether: to tell the operator why, use
    /// [`health_check_with_reason`](Self::health_check_with_reason).
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.health_check = Some(without_reason(check));
        self
    }

    /// A check run before every heartbeat that says why it fails:
    /// `Ok(())` is healthy; while it returns `Err(reason)` the instance
    /// reports UNHEALTHY (as with [`health_check`](Self::health_check)) and
    /// its registry record carries the reason in words under metadata
    /// `statusDetail`
    /// ([`METADATA_STATUS_DETAIL`](aegis_contracts::control::METADATA_STATUS_DETAIL)),
    /// which the monitor and `aegis status` show. Replaces a check set
    /// before.
    ///
    /// - The reason is trimmed and cut at a character boundary to
    ///   [`STATUS_DETAIL_MAX_CHARS`](aegis_contracts::control::STATUS_DETAIL_MAX_CHARS)
    ///   (200) characters, ending with `…`; an empty one says nothing.
    /// - It is in the record only while the record says UNHEALTHY for the
    ///   check (`statusReason` `health_check`): it goes when the check
    ///   passes, or when an operator's verdict (`operator`) takes over.
    /// - A check that overruns the heartbeat fails with a reason saying so.
    /// - Everyone who reads the registry and the monitor's viewers read the
    ///   reason: say what failed in words of your own, never a raw error
    ///   that may carry a connection string or a password.
    /// - A reason that changes while the check keeps failing (it names a
    ///   count, say) is written with the record's next refresh (default
    ///   every 4 s), not on every beat: every process watching the service
    ///   receives each write. The first failure, and the passing check,
    ///   are written at once.
    /// - The check runs on every beat (default every second), bounded by
    ///   the heartbeat: keep it cheap (read a cached fact), and let it
    ///   fail only on a fact about this instance's fitness to serve.
    ///   For a [single-active](Self::single_active) service, a leader whose
    ///   check fails [`resign_after_failed_checks`](Self::resign_after_failed_checks)
    ///   times hands over to a healthy standby; when a shared resource is
    ///   at fault (every instance fails alike), the leader keeps leading,
    ///   shown as degraded.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// use aegis_sdk::rpc::WireError;
    /// use serde_json::Value;
    ///
    /// // Kept up to date by the service's own work.
    /// let feed_age_secs = Arc::new(AtomicU64::new(0));
    /// let age = feed_age_secs.clone();
    /// let service = conn
    ///     .service("pricing-service", "1.0.0")
    ///     .health_check_with_reason(move || {
    ///         let age = age.load(Ordering::Relaxed);
    ///         async move {
    ///             if age > 30 {
    ///                 Err(format!("the price feed is {age} s old; prices would be stale"))
    ///             } else {
    ///                 Ok(())
    ///             }
    ///         }
    ///     })
    ///     .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn health_check_with_reason<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.health_check = Some(with_reason(check));
        self
    }

    /// For a [single-active](Self::single_active) service: how many health
    /// checks in a row must fail before the leader hands over to a healthy
    /// standby (default 3; 0 counts as 1). The record says UNHEALTHY from
    /// the first failure. An operator's `aegis chaos unhealthy` hands over
    /// at once. With no healthy standby the leader keeps leading, shown as
    /// degraded (see [`election::health`](crate::election::health)).
    pub fn resign_after_failed_checks(mut self, checks: u32) -> Self {
        self.resign_after = checks.max(1);
        self
    }

    /// Makes this a sticky single-active service in `group`: instances
    /// elect one ACTIVE leader (the others are STANDBY in the registry), and
    /// only the leader runs handlers — a standby answers NOT_ACTIVE, except
    /// for methods added with [`handler_any_role`](Self::handler_any_role).
    /// Callers use [`RpcClient::call_active`](super::RpcClient::call_active).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// use aegis_sdk::rpc::{RequestContext, WireError};
    /// use serde_json::{json, Value};
    ///
    /// let service = conn
    ///     .service("order-service", "1.0.0")
    ///     .single_active("default")
    ///     .handler_with_context("create_order", |ctx: RequestContext, order: Value| async move {
    ///         // ctx.epoch fences writes made by this leader.
    ///         Ok::<_, WireError>(json!({"accepted": order, "epoch": ctx.epoch}))
    ///     })
    ///     .handler_any_role("health", |_: Value| async move { Ok(json!({"ok": true})) })
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn single_active(mut self, group: impl Into<String>) -> Self {
        self.single_active = Some(group.into());
        self
    }

    /// How long a graceful stop keeps answering after it deregistered (and
    /// resigned), before it unsubscribes (default 100 ms): long enough for
    /// callers' registry views to drop this instance, so requests already on
    /// their way are answered instead of lost. It is spent inside the
    /// [`shutdown_timeout`](Self::shutdown_timeout), so it must be shorter:
    /// [`start`](Self::start) refuses one that is not
    /// ([`ServiceError::InvalidTiming`]).
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// How often a metrics snapshot is published to `AEGIS_METRICS`
    /// (default 2 s; from 1 ms to 30 days); `None` publishes none.
    pub fn metrics_interval(mut self, every: Option<Duration>) -> Self {
        self.metrics_interval = every;
        self
    }

    /// Lease timing of the single-active election (default: 400 ms lease,
    /// renewed every 100 ms).
    pub fn lease(mut self, lease: LeaseConfig) -> Self {
        self.lease = lease;
        self
    }

    /// Adds a handler that every instance runs whatever its role (health,
    /// echo, read-only queries) in a single-active service.
    pub fn handler_any_role<Req, Res, F, Fut>(mut self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        let method = method.into();
        self.any_role.insert(method.clone());
        self.handler(method, f)
    }

    /// Like [`handler_any_role`](Self::handler_any_role), with the
    /// [`RequestContext`] first (its `epoch` is `None` on a standby).
    pub fn handler_any_role_with_context<Req, Res, F, Fut>(
        mut self,
        method: impl Into<String>,
        f: F,
    ) -> Self
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        let method = method.into();
        self.any_role.insert(method.clone());
        self.handler_with_context(method, f)
    }

    /// Adds a typed handler for `method`. The request is decoded from JSON (or
    /// MessagePack) into `Req`; `Ok(Res)` is encoded back; `Err(WireError)`
    /// travels to the caller with its code.
    ///
    /// Method names match `^[a-zA-Z][a-zA-Z0-9_]*$`, at most 128
    /// characters: a letter, then letters, digits and `_` (`place_order`,
    /// `placeOrder`; not `place-order` or `orders.place`), each declared
    /// once per service. [`start`](Self::start) checks them before any I/O
    /// ([`ServiceError::InvalidName`], [`ServiceError::DuplicateMethod`]).
    /// The service name and instance id rules are on
    /// [`Connection::service`](crate::Connection::service).
    pub fn handler<Req, Res, F, Fut>(self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        // The context's parts are dropped unassembled.
        self.add(method, move |_: ContextParts<'_>, req: Req| f(req))
    }

    /// Like [`handler`](Self::handler), with the [`RequestContext`] first.
    pub fn handler_with_context<Req, Res, F, Fut>(self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        self.add(method, move |parts: ContextParts<'_>, req: Req| {
            f(parts.into_context(), req)
        })
    }

    fn add<Req, Res, F, Fut>(mut self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(ContextParts<'_>, Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        let handler = TypedHandler {
            f,
            _types: std::marker::PhantomData,
        };
        self.handlers.push((
            method.into(),
            Arc::new(handler),
            MethodSchemas::of::<Req, Res>(),
        ));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::tests::say_each_cause_once;

    /// Printed with its causes (as `anyhow`'s `{:#}` does), a registry or
    /// election failure of the service says what failed once: the service
    /// error names the component, its source says what went wrong.
    #[test]
    fn a_component_failure_says_its_cause_once() {
        say_each_cause_once(ServiceError::from(RegistryError::InvalidOptions(
            "the heartbeat must be shorter than the record's TTL".to_owned(),
        )));
        say_each_cause_once(ServiceError::from(
            crate::election::ElectionError::InvalidTiming(
                "the lease must be longer than its renewal".to_owned(),
            ),
        ));
    }
}
