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

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    time::Duration,
};

use aegis_contracts::{
    InstanceStatus, ServiceInstance,
    names::{self, NameError},
    subjects,
};
use async_nats::HeaderMap;
use bytes::Bytes;
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::{
    Encoding, WireError,
    endpoint::{Method, MethodStats, Route, drive},
    leader_gate::LeaderGate,
    micro::{self, Description, EndpointDescription},
    schema::MethodSchemas,
};
use aegis_contracts::log::{LogKind, LogLevel};

use crate::{
    Connection,
    control::{self, Controlled, Drills},
    election::{Election, LeaseConfig, Role},
    metrics::InstanceMetrics,
    registry::RegistrationHandle,
    registry::{Registration, RegistrationOptions, RegistryError, registration::HealthCheck},
    telemetry::{Telemetry, TelemetryTasks},
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What a handler learns about the request besides its payload.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The service name.
    pub service: Arc<str>,
    /// This instance's id.
    pub instance_id: Arc<str>,
    /// The method called.
    pub method: Arc<str>,
    /// The subject the request arrived on (load-balanced or instance-directed).
    pub subject: String,
    /// The caller's request id, if it sent one (`Aegis-Request-Id`).
    pub request_id: Option<String>,
    /// All request headers.
    pub headers: Option<HeaderMap>,
    /// The fencing epoch of this leader, for single-active services: store
    /// it with every write so a store can refuse a deposed leader's writes.
    pub epoch: Option<u64>,
}

pub(crate) trait ErasedHandler: Send + Sync {
    fn call(
        &self,
        ctx: RequestContext,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>>;
}

struct TypedHandler<F, Req, Res> {
    f: F,
    _types: std::marker::PhantomData<fn(Req) -> Res>,
}

impl<F, Fut, Req, Res> ErasedHandler for TypedHandler<F, Req, Res>
where
    F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Res: Serialize + Send + 'static,
{
    fn call(
        &self,
        ctx: RequestContext,
        body: Bytes,
        enc: Encoding,
    ) -> BoxFuture<Result<Bytes, WireError>> {
        let req = match enc.decode::<Req>(&body) {
            Ok(req) => req,
            Err(e) => {
                let err = WireError::invalid_request(format!("cannot decode the request: {e}"));
                return Box::pin(async move { Err(err) });
            }
        };
        let fut = (self.f)(ctx, req);
        Box::pin(async move {
            let res = fut.await?;
            enc.encode(&res)
                .map_err(|e| WireError::internal(format!("cannot encode the response: {e}")))
        })
    }
}

/// Declares a service: its name, version, instance id and typed handlers.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// use aegis_sdk::rpc::WireError;
/// use serde::{Deserialize, Serialize};
///
/// /// Asks for the price of a symbol (published as the method's description).
/// #[derive(Deserialize, schemars::JsonSchema)]
/// struct Quote { symbol: String }
/// #[derive(Serialize, schemars::JsonSchema)]
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
    health_check: Option<HealthCheck>,
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
    /// NATS refused a subscription.
    #[error("cannot start the service on NATS")]
    Nats(#[source] async_nats::Error),
    /// In-flight requests did not finish within the shutdown timeout.
    #[error("{0} request(s) still running after the shutdown timeout")]
    ShutdownTimeout(usize),
    /// Registering, changing or removing the registry record failed (or the
    /// registration options are invalid).
    #[error("service registry: {0}")]
    Registry(#[from] RegistryError),
    /// The single-active election could not start (or its timing is invalid).
    #[error("single-active election: {0}")]
    Election(#[from] crate::election::ElectionError),
    /// The service was started with `.register(false)`: it has no record.
    #[error("the service is not registered")]
    NotRegistered,
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

    /// Sets the instance id (unique per process; in Kubernetes the pod name).
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

    /// How long [`Service::shutdown`] waits for in-flight requests (default 10 s).
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
    /// (default 1 s; must be below the TTL).
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

    /// How long the record outlives the last heartbeat on the server
    /// (default 15 s, above a cluster's stream leader election): the
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
    /// reports UNHEALTHY and discovery routes around it.
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.health_check = Some(Arc::new(move || Box::pin(check())));
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
    /// their way are answered instead of lost.
    pub fn drain_grace(mut self, grace: Duration) -> Self {
        self.drain_grace = grace;
        self
    }

    /// How often a metrics snapshot is published to `AEGIS_METRICS`
    /// (default 2 s); `None` publishes none.
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
    pub fn handler<Req, Res, F, Fut>(self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Res, WireError>> + Send + 'static,
        Req: DeserializeOwned + JsonSchema + Send + 'static,
        Res: Serialize + JsonSchema + Send + 'static,
    {
        self.handler_with_context(method, move |_ctx: RequestContext, req: Req| f(req))
    }

    /// Like [`handler`](Self::handler), with the [`RequestContext`] first.
    pub fn handler_with_context<Req, Res, F, Fut>(mut self, method: impl Into<String>, f: F) -> Self
    where
        F: Fn(RequestContext, Req) -> Fut + Send + Sync + 'static,
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

    /// Validates everything, subscribes every method on its load-balanced
    /// and instance-directed subjects, starts serving, and registers the
    /// instance (record written before this returns).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// use std::time::Duration;
    /// use aegis_sdk::rpc::WireError;
    ///
    /// let service = conn
    ///     .service("risk-service", "1.0.0")
    ///     .heartbeat(Duration::from_millis(500))
    ///     .ttl(Duration::from_secs(2))
    ///     .handler("check", |_: serde_json::Value| async { Ok::<_, WireError>(true) })
    ///     .start()
    ///     .await?;
    /// service.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ServiceError`]: invalid names, version or registration timing
    /// (checked before any I/O), a duplicate method, no methods, NATS
    /// refusing to subscribe, or the registry refusing the record.
    pub async fn start(self) -> Result<Service, ServiceError> {
        names::validate_service_name(&self.name)?;
        if names::validate_version(&self.version).is_err() {
            return Err(ServiceError::InvalidVersion(self.version));
        }
        let instance_id = match self.instance_id {
            Some(id) => id,
            None => crate::default_instance_id(),
        };
        names::validate_instance_id(&instance_id)?;
        if self.handlers.is_empty() {
            return Err(ServiceError::NoMethods(self.name));
        }
        let mut seen = std::collections::HashSet::new();
        for (method, ..) in &self.handlers {
            names::validate_method_name(method)?;
            if !seen.insert(method.as_str()) {
                return Err(ServiceError::DuplicateMethod(method.clone()));
            }
        }
        if self.register {
            self.registration.validate()?;
        }
        if let Some(group) = &self.single_active {
            names::validate_group_name(group)?;
            self.lease.validate()?;
        }
        let record = self.register.then(|| {
            let methods: Vec<String> = self.handlers.iter().map(|(m, ..)| m.clone()).collect();
            let mut record = instance_record(
                &self.name,
                &instance_id,
                &self.version,
                &methods,
                &self.metadata,
            );
            if let Some(group) = &self.single_active {
                // Every instance starts as a standby; the election promotes one.
                record.status = InstanceStatus::Standby;
                record.sticky_active_group = Some(group.clone());
            }
            record
        });

        let telemetry = Telemetry::new(self.conn.client().clone(), &self.name, &instance_id);
        let effective = serde_json::json!({
            "service": self.name,
            "instanceId": instance_id,
            "version": self.version,
            "sdkVersion": crate::SDK_VERSION,
            "singleActive": self.single_active.as_ref().map(|g| serde_json::json!({
                "group": g,
                "leaseMs": self.lease.lease.as_millis() as u64,
                "renewMs": self.lease.renew_interval.as_millis() as u64,
            })),
            "registration": self.register.then(|| serde_json::json!({
                "heartbeatMs": self.registration.heartbeat.as_millis() as u64,
                "refreshMs": self.registration.effective_refresh().as_millis() as u64,
                "ttlMs": self.registration.ttl.as_millis() as u64,
            })),
            "metricsIntervalMs": self.metrics_interval.map(|d| d.as_millis() as u64),
            "shutdownTimeoutMs": self.shutdown_timeout.as_millis() as u64,
            "connection": self.conn.config().redacted(),
        });
        let election = match &self.single_active {
            Some(group) => {
                match Election::start(&self.conn, &self.name, group, &instance_id, self.lease).await
                {
                    Ok(e) => Some(e),
                    Err(e) => return Err(e.into()),
                }
            }
            None => None,
        };
        let leadership = election.as_ref().map(Election::leadership);
        let stop_service = |election: Option<Election>| async move {
            if let Some(election) = election {
                election.resign().await;
            }
        };
        let service_name: Arc<str> = Arc::from(self.name.as_str());
        let instance: Arc<str> = Arc::from(instance_id.as_str());
        let metrics = Arc::new(InstanceMetrics::new(self.name.clone(), instance_id.clone()));
        let tracker = TaskTracker::new();
        let stop_taking = CancellationToken::new();
        let unsubscribe = CancellationToken::new();
        let queue_group = subjects::rpc_queue_group(&self.name);
        let direct_group = format!("{queue_group}.{instance_id}");
        let drills = Arc::new(Drills::default());
        let client = self.conn.client().clone();
        let mut methods = Vec::new();
        let mut endpoints = Vec::new();
        let mut leader_only = Vec::new();
        for (method, handler, schemas) in self.handlers {
            let stats = Arc::new(MethodStats::default());
            let shared = Arc::new(Method {
                client: client.clone(),
                service: service_name.clone(),
                instance: instance.clone(),
                name: Arc::from(method.as_str()),
                handler,
                metrics: metrics.clone(),
                recorder: metrics.endpoint(&method),
                stats: stats.clone(),
                drills: drills.clone(),
                leadership: leadership
                    .clone()
                    .filter(|_| !self.any_role.contains(&method)),
            });
            let shared_subject = subjects::rpc_subject(&self.name, &method);
            let direct_subject = subjects::rpc_instance_subject(&self.name, &instance_id, &method);
            let mut subscriptions = vec![(
                Route::Direct,
                client
                    .queue_subscribe(direct_subject.clone(), direct_group.clone())
                    .await,
            )];
            if shared.leadership.is_some() {
                // The leader joins the shared subject when elected.
                leader_only.push((shared_subject.clone(), shared.clone()));
            } else {
                subscriptions.push((
                    Route::Shared,
                    client
                        .queue_subscribe(shared_subject.clone(), queue_group.clone())
                        .await,
                ));
            }
            for (route, subscription) in subscriptions {
                let subscription = match subscription {
                    Ok(s) => s,
                    Err(e) => {
                        unsubscribe.cancel();
                        stop_service(election).await;
                        return Err(ServiceError::Nats(e.into()));
                    }
                };
                tracker.spawn(drive(
                    subscription,
                    shared.clone(),
                    route,
                    unsubscribe.clone(),
                    stop_taking.clone(),
                ));
            }
            let mut endpoint_metadata = BTreeMap::from([
                ("direct_subject".to_owned(), direct_subject),
                (
                    "leader_only".to_owned(),
                    shared.leadership.is_some().to_string(),
                ),
            ]);
            let description = self
                .descriptions
                .get(&method)
                .map(String::as_str)
                .or_else(|| schemas.request_description());
            if let Some(d) = description {
                endpoint_metadata.insert("description".to_owned(), d.to_owned());
            }
            endpoint_metadata.insert("request_schema".to_owned(), schemas.request.to_string());
            endpoint_metadata.insert("response_schema".to_owned(), schemas.response.to_string());
            endpoints.push(EndpointDescription {
                name: method.clone(),
                subject: shared_subject,
                queue_group: queue_group.clone(),
                metadata: endpoint_metadata,
                stats,
            });
            methods.push(method);
        }
        // Leaving the shared subjects is a step of its own on shutdown
        // (before the resignation); a child token, so a drop still ends all.
        let leave_shared = unsubscribe.child_token();
        let gate_tracker = TaskTracker::new();
        let gate_task = match &election {
            Some(election) if !leader_only.is_empty() => Some(tokio::spawn(
                LeaderGate {
                    client: client.clone(),
                    queue_group: queue_group.clone(),
                    methods: leader_only,
                    tracker: gate_tracker.clone(),
                    leave: leave_shared.clone(),
                    stop: stop_taking.clone(),
                }
                .run(election.roles()),
            )),
            _ => None,
        };
        let mut metadata: BTreeMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert("instance_id".into(), instance_id.clone());
        metadata.insert("aegis_sdk".into(), crate::SDK_VERSION.into());
        let micro_task = match micro::serve(
            client.clone(),
            Description {
                name: self.name.clone(),
                id: instance_id.clone(),
                version: self.version.clone(),
                description: self.description.clone().unwrap_or_default(),
                metadata,
                started: chrono::Utc::now(),
                endpoints,
                election: self.single_active.clone().zip(leadership.clone()),
            },
        )
        .await
        {
            Ok(task) => AbortOnDrop(task),
            Err(e) => {
                unsubscribe.cancel();
                if let Some(task) = gate_task {
                    task.abort();
                }
                stop_service(election).await;
                return Err(ServiceError::Nats(e.into()));
            }
        };
        // Listening first, registering second: discovery never hands out an
        // instance that cannot answer yet.
        let registration = match record {
            None => None,
            Some(record) => {
                let sink = telemetry.clone();
                let mut builder = Registration::builder(&self.conn, record)
                    .options(self.registration.clone())
                    .on_event(Arc::new(move |event| sink.event(event)));
                if let Some(check) = self.health_check {
                    builder = builder.health_check(move || check());
                }
                match builder.start().await {
                    Ok(registration) => Some(registration),
                    Err(e) => {
                        unsubscribe.cancel();
                        if let Some(task) = gate_task {
                            task.abort();
                        }
                        stop_service(election).await;
                        return Err(e.into());
                    }
                }
            }
        };
        // Mirror the election into the registry: ACTIVE with the epoch when
        // leading, STANDBY otherwise, written at once on every change.
        let role_task = match (&election, &registration) {
            (Some(election), Some(registration)) => Some(tokio::spawn(mirror_role(
                election.roles(),
                registration.handle(),
                telemetry.clone(),
            ))),
            _ => None,
        };
        // The health of a leader decides whether it keeps leading.
        let health_task = match (&election, &registration) {
            (Some(election), Some(registration)) => Some(control::mirror_health(
                registration.health_changes(),
                election.health_gate(),
                self.resign_after,
            )),
            _ => None,
        };
        let control_task = match control::start(
            self.conn.client(),
            Controlled {
                service: self.name.clone(),
                instance: instance_id.clone(),
                drills,
                registration: registration.as_ref().map(Registration::handle),
                leadership: leadership.clone(),
            },
        )
        .await
        {
            Ok(task) => Some(task),
            Err(e) => {
                warn!(error = %e, "cannot answer operator drills (aegis.control); continuing without");
                None
            }
        };
        let telemetry_tasks = match TelemetryTasks::start(
            self.conn.client().clone(),
            &self.name,
            &instance_id,
            metrics.clone(),
            self.metrics_interval,
            effective,
        )
        .await
        {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "cannot answer configuration requests; continuing without");
                None
            }
        };
        info!(service = %self.name, instance = %instance_id, methods = ?methods,
            registered = registration.is_some(), single_active = ?self.single_active, "service started");
        // Without a registration nobody routes by the registry: no grace needed.
        let drain_grace = if registration.is_some() {
            self.drain_grace
        } else {
            Duration::ZERO
        };
        Ok(Service {
            client: self.conn.client().clone(),
            name: self.name,
            instance_id,
            methods,
            micro_task: Some(micro_task),
            gate_task,
            unsubscribe,
            leave_shared,
            gate_tracker,
            registration,
            election,
            role_task,
            health_task,
            control_task,
            telemetry_tasks,
            drain_grace,
            tracker,
            stop_taking,
            shutdown_timeout: self.shutdown_timeout,
            metrics,
        })
    }
}

/// The registry record of a starting instance: ACTIVE, standard metadata
/// (host, pid, start time, SDK version, endpoints), then the builder's own.
fn instance_record(
    service: &str,
    instance_id: &str,
    version: &str,
    methods: &[String],
    extra: &HashMap<String, String>,
) -> ServiceInstance {
    let now = chrono::Utc::now();
    let mut record = ServiceInstance::new(service, instance_id, version, now);
    record.metadata = crate::registry::standard_metadata(methods, now);
    let mut extra: Vec<_> = extra.iter().collect();
    extra.sort();
    for (k, v) in extra {
        record
            .metadata
            .insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    record
}

/// Writes each role change to the registry record.
async fn mirror_role(
    mut roles: tokio::sync::watch::Receiver<Role>,
    registration: RegistrationHandle,
    telemetry: Telemetry,
) {
    let mut previous: Option<Role> = None;
    loop {
        let role = roles.borrow_and_update().clone();
        let was_leader = previous.as_ref().is_some_and(Role::is_leader);
        let event = match &role {
            Role::Leader { epoch } if !was_leader => Some(
                telemetry
                    .lifecycle(LogLevel::Info, LogKind::Elected, "elected ACTIVE leader")
                    .with_field("epoch", *epoch)
                    .with_field("from", "STANDBY")
                    .with_field("to", "ACTIVE"),
            ),
            Role::Standby { leader } if was_leader => Some(
                telemetry
                    .lifecycle(
                        LogLevel::Warn,
                        LogKind::LeadershipLost,
                        "no longer the leader; now STANDBY",
                    )
                    .with_field("from", "ACTIVE")
                    .with_field("to", "STANDBY")
                    .with_field("leader", leader.clone().unwrap_or_default()),
            ),
            _ => None,
        };
        if let Some(event) = event {
            telemetry.event(event);
        }
        previous = Some(role.clone());
        let written = registration
            .update(|r| match role {
                Role::Leader { epoch } => {
                    r.status = InstanceStatus::Active;
                    r.epoch = Some(epoch);
                }
                Role::Standby { .. } => {
                    r.status = InstanceStatus::Standby;
                    r.epoch = None;
                }
            })
            .await;
        if let Err(e) = written {
            // The heartbeat keeps retrying the desired record.
            warn!(error = %e, "could not write the role change at once; the heartbeat retries it");
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}

/// The longest a stopping leader waits for its shared subjects to drain
/// before it resigns.
const LEAVE_WAIT: Duration = Duration::from_secs(1);

/// A task aborted when its handle is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The least time a stop gives the telemetry tasks to publish the last
/// metrics snapshot, even after the shutdown timeout ran out.
const TELEMETRY_STOP: Duration = Duration::from_millis(600);

/// A running service. Stop it with [`Service::shutdown`]; dropping it stops
/// taking requests too, without waiting for the ones in flight, and a
/// single-active leader does not resign: its lease lapses, as after a crash
/// (see [`Election`]).
pub struct Service {
    client: async_nats::Client,
    name: String,
    instance_id: String,
    methods: Vec<String>,
    /// Answers the NATS services protocol (`$SRV.*`).
    micro_task: Option<AbortOnDrop>,
    /// Joins and leaves the shared subjects as the election decides.
    gate_task: Option<tokio::task::JoinHandle<()>>,
    /// Tells every subscription loop to unsubscribe (the gate's too).
    unsubscribe: CancellationToken,
    /// Tells the gate to leave the shared subjects for good.
    leave_shared: CancellationToken,
    /// The leader's shared-subject loops, waited for before it resigns.
    gate_tracker: TaskTracker,
    registration: Option<Registration>,
    election: Option<Election>,
    role_task: Option<tokio::task::JoinHandle<()>>,
    /// Tells the election the instance's fitness to lead.
    health_task: Option<tokio::task::JoinHandle<()>>,
    /// Answers operator drills on `aegis.control.{service}.{instance}`.
    control_task: Option<tokio::task::JoinHandle<()>>,
    telemetry_tasks: Option<TelemetryTasks>,
    drain_grace: Duration,
    tracker: TaskTracker,
    /// Tells the endpoint loops to stop reading when their subscriptions
    /// cannot close (no server to confirm the unsubscribe).
    stop_taking: CancellationToken,
    shutdown_timeout: Duration,
    metrics: Arc<InstanceMetrics>,
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("name", &self.name)
            .field("instance_id", &self.instance_id)
            .field("methods", &self.methods)
            .finish()
    }
}

impl Service {
    /// The service name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// The methods served.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }

    /// This instance's measurements (latency histograms, counts, in flight).
    pub fn metrics(&self) -> &Arc<InstanceMetrics> {
        &self.metrics
    }

    /// The single-active election, for services started with
    /// [`ServiceBuilder::single_active`] (role, role changes, and
    /// `pause_renewals` for drills).
    pub fn election(&self) -> Option<&Election> {
        self.election.as_ref()
    }

    /// The registry registration, unless started with `.register(false)`.
    /// [`Registration::handle`] gives a cloneable handle for other tasks.
    pub fn registration(&self) -> Option<&Registration> {
        self.registration.as_ref()
    }

    /// Chooses the status this instance reports and writes it at once:
    /// UNHEALTHY or STANDBY take it out of discovery, ACTIVE brings it back.
    ///
    /// ```no_run
    /// # async fn demo(service: aegis_sdk::rpc::Service) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// use aegis_sdk::contracts::InstanceStatus;
    /// service.set_status(InstanceStatus::Unhealthy).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ServiceError::NotRegistered`] without a registration;
    /// [`ServiceError::Registry`] when the write fails (the heartbeat keeps
    /// retrying the new status).
    pub async fn set_status(&self, status: InstanceStatus) -> Result<(), ServiceError> {
        let registration = self
            .registration
            .as_ref()
            .ok_or(ServiceError::NotRegistered)?;
        Ok(registration.set_status(status).await?)
    }

    /// Graceful stop, within the shutdown timeout: deregister (discovery
    /// stops choosing this instance), stop taking requests (unsubscribe),
    /// then serve the ones already received and wait for every handler. The
    /// connection stays open; drain it afterwards.
    ///
    /// ```no_run
    /// # async fn demo(service: aegis_sdk::rpc::Service) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// service.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ServiceError::ShutdownTimeout`] when handlers were still running;
    /// otherwise [`ServiceError::Registry`] when the record could not be
    /// deleted (it then expires after its TTL). The other steps run anyway.
    pub async fn shutdown(mut self) -> Result<(), ServiceError> {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        // Every step below is bounded, so a stop finishes within the
        // shutdown timeout whatever the state of NATS; what could not be
        // done is logged once, with what happens instead.
        let reachable = self.client.connection_state() == async_nats::connection::State::Connected;
        if !reachable {
            warn!(service = %self.name, instance = %self.instance_id,
                "stopping while NATS is unreachable: what needs the server is skipped or bounded");
        }
        // A leader hands over first, so a standby takes over within
        // milliseconds instead of waiting for the lease to lapse.
        for task in [
            self.role_task.take(),
            self.health_task.take(),
            self.control_task.take(),
        ]
        .into_iter()
        .flatten()
        {
            task.abort();
        }
        // A leader leaves the shared subjects before it resigns: plain
        // callers then see no responders (and retry) until the successor
        // joins, rather than this instance's NOT_ACTIVE once it resigned.
        self.leave_shared.cancel();
        if let Some(gate) = self.gate_task.take() {
            let _ = gate.await;
        }
        // Resigning before the drain completes would refuse (NOT_ACTIVE)
        // what the server routed here just before the unsubscribe.
        self.gate_tracker.close();
        let leave_by = deadline.min(tokio::time::Instant::now() + LEAVE_WAIT);
        if reachable
            && tokio::time::timeout_at(leave_by, self.gate_tracker.wait())
                .await
                .is_err()
        {
            debug!("the shared subjects did not drain in time; resigning anyway");
        }
        if let Some(election) = self.election.take()
            && tokio::time::timeout_at(deadline, election.resign())
                .await
                .is_err()
        {
            warn!(
                "could not resign before the shutdown timeout; a standby takes over when the lease lapses"
            );
        }
        let mut deregistered = Ok(());
        if let Some(registration) = self.registration.take() {
            deregistered = match tokio::time::timeout_at(deadline, registration.deregister()).await
            {
                Ok(result) => result.map_err(ServiceError::from),
                Err(_) => Err(ServiceError::ShutdownTimeout(self.tracker.len())),
            };
            if let Err(e) = &deregistered {
                warn!(error = %e, "could not deregister; the record expires with its TTL");
            }
        }
        // Callers route from their registry view, which learns of the
        // deregistration (and a resignation) within milliseconds; requests
        // they sent just before are still on their way. Keep answering for a
        // short grace (a former leader answers NOT_ACTIVE, so callers retry
        // at once) instead of unsubscribing under them: a request that
        // arrives after the unsubscribe gets no answer at all and its caller
        // waits out a timeout. Without a server no request is on its way.
        if reachable {
            let grace = tokio::time::Instant::now() + self.drain_grace;
            tokio::time::sleep_until(grace.min(deadline)).await;
        }
        self.unsubscribe.cancel();
        if let Some(micro) = self.micro_task.take() {
            drop(micro);
        }
        self.tracker.close();
        let waited = tokio::time::timeout_at(deadline, async {
            wait_for_endpoints(&self.tracker, &self.client, &self.stop_taking).await;
            wait_for_endpoints(&self.gate_tracker, &self.client, &self.stop_taking).await;
        })
        .await;
        if waited.is_err() {
            warn!(
                in_flight = self.tracker.len(),
                "handlers still running at the shutdown timeout; their callers get no reply"
            );
        }
        if let Some(tasks) = self.telemetry_tasks.take()
            && tokio::time::timeout_at(
                deadline.max(tokio::time::Instant::now() + TELEMETRY_STOP),
                tasks.stop(),
            )
            .await
            .is_err()
        {
            debug!("telemetry tasks did not stop in time");
        }
        info!(service = %self.name, instance = %self.instance_id, "service stopped");
        match waited {
            Ok(()) => deregistered,
            Err(_) => Err(ServiceError::ShutdownTimeout(self.tracker.len())),
        }
    }
}

/// Waits for every endpoint loop (and so every request taken) to finish. An
/// endpoint's subscription closes only once the client has told the server;
/// while NATS is unreachable that never happens, so then the loops are told
/// to stop reading and finish what they have.
async fn wait_for_endpoints(
    tracker: &TaskTracker,
    client: &async_nats::Client,
    stop_taking: &CancellationToken,
) {
    let unreachable = async {
        while client.connection_state() == async_nats::connection::State::Connected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::select! {
        () = tracker.wait() => return,
        () = unreachable => stop_taking.cancel(),
    }
    tracker.wait().await;
}

impl Drop for Service {
    fn drop(&mut self) {
        for task in [self.health_task.take(), self.control_task.take()]
            .into_iter()
            .flatten()
        {
            task.abort();
        }
        if let Some(gate) = self.gate_task.take() {
            gate.abort();
        }
        // Every subscription loop unsubscribes (the leader's shared ones
        // included: the gate's tokens are children of this one).
        self.unsubscribe.cancel();
    }
}
