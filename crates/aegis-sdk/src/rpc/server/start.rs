//! [`ServiceBuilder::start`]: validate, refuse an id in use, campaign,
//! subscribe, describe, register, mirror — each a step of its own, with
//! one [`Rollback`] guard that undoes, in reverse, whatever the steps
//! before a failure started.
//!
//! Why one module of over 500 lines: it is one start, read top to bottom —
//! [`ServiceBuilder::start`] runs the steps in order and each step's
//! function follows it here, all feeding the one [`Rollback`] that a
//! failure unwinds; split by step, the order of the steps and what undoes
//! each would span files. The handle it returns, the roles and the
//! handlers are elsewhere in `rpc/server/`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use aegis_contracts::{
    InstanceStatus, ServiceInstance,
    config::{EffectiveConfig, RegistrationConfig, SingleActiveConfig},
    names, subjects,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use super::{
    ServiceBuilder, ServiceError,
    roles::mirror_role,
    running::{AbortOnDrop, Service},
};
use crate::{
    control::{self, Controlled, Drills},
    election::Election,
    metrics::InstanceMetrics,
    registry::Registration,
    rpc::{
        endpoint::{Method, MethodStats, Route, drive},
        leader_gate::LeaderGate,
        micro::{self, Description, EndpointDescription},
    },
    telemetry::{
        Telemetry, TelemetryTasks,
        log_layer::{LiveService, owned_by},
    },
};

impl ServiceBuilder {
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
    /// [`ServiceError`]: invalid names, version, registration, lease,
    /// metrics or drain timing (checked before any I/O), a duplicate
    /// method, no methods, an instance id a running process serves
    /// ([`ServiceError::InstanceIdInUse`]), NATS refusing to subscribe, or
    /// the registry refusing the record.
    pub async fn start(self) -> Result<Service, ServiceError> {
        let instance_id = self.validate()?;
        self.refuse_id_in_use(&instance_id).await?;
        let record = self.record(&instance_id);
        let effective = self.effective_config(&instance_id);
        let telemetry = Telemetry::new(&self.conn, &self.name, &instance_id);

        // Campaign first: every method's gate needs the election.
        let election = match &self.single_active {
            Some(group) => Some(
                // Its campaign's lines are this service's.
                owned_by(
                    telemetry.clone(),
                    Election::start(&self.conn, &self.name, group, &instance_id, self.lease),
                )
                .await?,
            ),
            None => None,
        };
        let mut rollback = Rollback {
            unsubscribe: CancellationToken::new(),
            gate_task: None,
            election,
        };
        let leadership = rollback.election.as_ref().map(Election::leadership);
        let metrics = Arc::new(InstanceMetrics::new(self.name.clone(), instance_id.clone()));
        let drills = Arc::new(Drills::default());
        let serving = Serving {
            tracker: TaskTracker::new(),
            stop_taking: CancellationToken::new(),
            unsubscribe: rollback.unsubscribe.clone(),
        };

        // Listen on every method's subjects.
        let subscribing = std::time::Instant::now();
        let subscribed = match subscribe(
            &self,
            &instance_id,
            &serving,
            &metrics,
            &drills,
            leadership.as_ref(),
        )
        .await
        {
            Ok(subscribed) => subscribed,
            Err(e) => return Err(rollback.undo(e).await),
        };
        // Leaving the shared subjects is a step of its own on shutdown
        // (before the resignation); a child token, so a drop still ends all.
        let leave_shared = serving.unsubscribe.child_token();
        let gate_tracker = TaskTracker::new();
        let queue_group = subjects::rpc_queue_group(&self.name);
        rollback.gate_task = match &rollback.election {
            Some(election) if !subscribed.leader_only.is_empty() => Some(tokio::spawn(owned_by(
                telemetry.clone(),
                LeaderGate {
                    client: self.conn.client().clone(),
                    queue_group,
                    methods: subscribed.leader_only,
                    tracker: gate_tracker.clone(),
                    leave: leave_shared.clone(),
                    stop: serving.stop_taking.clone(),
                }
                .run(election.roles()),
            ))),
            _ => None,
        };

        // Answer the NATS services protocol ($SRV.PING/INFO/STATS).
        let micro_task = match self
            .serve_description(&instance_id, subscribed.endpoints, leadership.clone())
            .await
        {
            Ok(task) => task,
            Err(e) => return Err(rollback.undo(e).await),
        };
        if let Err(e) = self.refuse_unheard(&instance_id, subscribing).await {
            drop(micro_task);
            return Err(rollback.undo(e).await);
        }

        // Listening first, registering second: discovery never hands out an
        // instance that cannot answer yet.
        let registration = match record {
            None => None,
            Some(record) => {
                let sink = telemetry.clone();
                let mut builder = Registration::builder(&self.conn, record)
                    .options(self.registration.clone())
                    .on_event(Arc::new(move |event| sink.event(event)));
                if let Some(check) = self.health_check.clone() {
                    builder = builder.any_health_check(check);
                }
                // Its heartbeat's lines are this service's.
                match owned_by(telemetry.clone(), builder.start()).await {
                    Ok(registration) => Some(registration),
                    Err(e) => return Err(rollback.undo(e.into()).await),
                }
            }
        };

        // From here nothing fails: the rest only adds what can do without.
        let Rollback {
            unsubscribe,
            gate_task,
            election,
        } = rollback;
        if self.single_active.is_some() {
            warm_registry_view(&self.conn, unsubscribe.clone());
        }
        let (role_task, health_task) = mirror(
            election.as_ref(),
            registration.as_ref(),
            &telemetry,
            self.resign_after,
        );
        let control_task = match control::start(
            self.conn.client(),
            Controlled {
                service: self.name.clone(),
                instance: instance_id.clone(),
                drills,
                registration: registration.as_ref().map(Registration::handle),
                leadership,
            },
        )
        .await
        {
            Ok(task) => Some(task),
            Err(e) => {
                warn!(error = %crate::startup::Causes(&e), "cannot answer operator drills (aegis.control); continuing without");
                None
            }
        };
        let telemetry_tasks = match TelemetryTasks::start(
            self.conn.client().clone(),
            telemetry.clone(),
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
                warn!(error = %crate::startup::Causes(&e), "cannot answer configuration requests; continuing without");
                None
            }
        };
        info!(service = %self.name, instance = %instance_id, methods = ?subscribed.methods,
            registered = registration.is_some(), single_active = ?self.single_active, "service started");
        // The process's own WARN/ERROR lines go out under the services it
        // runs (see `telemetry::log_layer`).
        let live = LiveService::new(telemetry, &self.name, &instance_id);
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
            methods: subscribed.methods,
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
            tracker: serving.tracker,
            stop_taking: serving.stop_taking,
            shutdown_timeout: self.shutdown_timeout,
            metrics,
            live,
            stopping: false,
        })
    }

    /// Step 1, before any I/O: names, version, methods and timing. Returns
    /// the instance id (generated when none was given).
    fn validate(&self) -> Result<String, ServiceError> {
        names::validate_service_name(&self.name)?;
        if names::validate_version(&self.version).is_err() {
            return Err(ServiceError::InvalidVersion(self.version.clone()));
        }
        let instance_id = match &self.instance_id {
            Some(id) => id.clone(),
            None => crate::default_instance_id(),
        };
        names::validate_instance_id(&instance_id)?;
        if self.handlers.is_empty() {
            return Err(ServiceError::NoMethods(self.name.clone()));
        }
        let mut seen = std::collections::HashSet::new();
        for (method, ..) in &self.handlers {
            names::validate_method_name(method)?;
            if !seen.insert(method.as_str()) {
                return Err(ServiceError::DuplicateMethod(method.clone()));
            }
        }
        if let Some(every) = self.metrics_interval
            && (every < Duration::from_millis(1) || every > crate::clock::LONGEST_PERIOD)
        {
            return Err(ServiceError::InvalidTiming {
                option: "metrics_interval",
                message: format!(
                    "{every:?} is not an interval between 1 ms and 30 days (None publishes no metrics)"
                ),
            });
        }
        if self.register {
            self.registration.validate()?;
            // The grace is spent inside the shutdown timeout; all of it
            // leaves none to wait for requests in flight, and every stop
            // would end in a time-out with nothing running.
            if self.drain_grace >= self.shutdown_timeout {
                return Err(ServiceError::InvalidTiming {
                    option: "drain_grace",
                    message: format!(
                        "{:?} is not shorter than the shutdown timeout ({:?}), which it is spent in; \
                         make it shorter (default 100 ms) or the shutdown timeout longer",
                        self.drain_grace, self.shutdown_timeout
                    ),
                });
            }
        }
        if let Some(group) = &self.single_active {
            names::validate_group_name(group)?;
            self.lease.validate()?;
        }
        Ok(instance_id)
    }

    /// Step 2: an id given by the caller must not be one a running process
    /// serves. Two processes with one id would share its requests, flip its
    /// registry record between them, and a sticky one's standby would
    /// answer under the leader's id (`tests/duplicate_id.rs`). A generated
    /// id is not asked about. Asked before anything starts, so a refused
    /// start leaves the running process as it was. When it cannot be told
    /// (no answer in time: a process the server still holds a connection
    /// for), the start goes on with a warning.
    async fn refuse_id_in_use(&self, instance_id: &str) -> Result<(), ServiceError> {
        if self.instance_id.is_none() {
            return Ok(());
        }
        match micro::holder(self.conn.client(), &self.name, instance_id).await {
            Ok(None) => Ok(()),
            Ok(Some(holder)) => Err(ServiceError::InstanceIdInUse {
                service: self.name.clone(),
                instance: instance_id.to_owned(),
                host: holder.host,
                pid: holder.pid,
            }),
            Err(why) => {
                warn!(service = %self.name, instance = %instance_id, reason = %why,
                    "cannot tell whether another process serves this instance id; starting");
                Ok(())
            }
        }
    }

    /// Fails when the server refused the subscriptions the service's
    /// requests come on. A refused subscription fails nothing on the
    /// client (the server says so in an error of its own): without this a
    /// service started, registered, and timed out every call routed to it.
    /// One round trip on the client the subscriptions went out on (a
    /// `$SRV.PING` of this instance, which it answers itself) comes back
    /// after the server's refusals of them.
    async fn refuse_unheard(
        &self,
        instance_id: &str,
        since: std::time::Instant,
    ) -> Result<(), ServiceError> {
        use crate::connection::refusals::Refusing;
        // Whatever its answer: only its coming back counts. A user that may
        // not ping is refused the ping, after the subscriptions sent before
        // it: that refusal marks the point as well, without the ping's wait.
        let ping = format!("$SRV.PING.{}.{instance_id}", self.name);
        let _ = self
            .conn
            .refusals()
            .unless_refused(
                Refusing::Publish,
                |s| s == ping,
                micro::holder(self.conn.client(), &self.name, instance_id),
            )
            .await;
        let requests = format!("rpc.{}.", self.name);
        // Only a refused subscription: a refused call of this service on
        // the same connection (a publish to the same subjects) says
        // nothing about hearing its requests.
        let refusing = Refusing::Subscription;
        match self
            .conn
            .refusal(since, refusing, |s| s.starts_with(&requests))
        {
            Some(violation) => Err(ServiceError::Refused {
                service: self.name.clone(),
                violation,
            }),
            None => Ok(()),
        }
    }

    /// The registry record to write, unless `.register(false)`.
    fn record(&self, instance_id: &str) -> Option<ServiceInstance> {
        self.register.then(|| {
            let methods: Vec<String> = self.handlers.iter().map(|(m, ..)| m.clone()).collect();
            let mut record = instance_record(
                &self.name,
                instance_id,
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
        })
    }

    /// The configuration this instance runs with, as it answers the
    /// monitor's config requests (secrets redacted).
    fn effective_config(&self, instance_id: &str) -> EffectiveConfig {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        EffectiveConfig {
            service: self.name.clone(),
            instance_id: instance_id.to_owned(),
            version: self.version.clone(),
            sdk_version: crate::SDK_VERSION.to_owned(),
            single_active: self.single_active.as_ref().map(|g| SingleActiveConfig {
                group: g.clone(),
                lease_ms: ms(self.lease.lease),
                renew_ms: ms(self.lease.renew_interval),
            }),
            registration: self.register.then(|| RegistrationConfig {
                heartbeat_ms: ms(self.registration.heartbeat),
                refresh_ms: ms(self.registration.effective_refresh()),
                ttl_ms: ms(self.registration.ttl),
            }),
            metrics_interval_ms: self.metrics_interval.map(ms),
            shutdown_timeout_ms: ms(self.shutdown_timeout),
            connection: self.conn.config().redacted(),
        }
    }

    /// Serves the NATS services protocol with the methods' descriptions.
    async fn serve_description(
        &self,
        instance_id: &str,
        endpoints: Vec<EndpointDescription>,
        leadership: Option<crate::election::Leadership>,
    ) -> Result<AbortOnDrop, ServiceError> {
        let mut metadata: BTreeMap<String, String> = self.metadata.clone().into_iter().collect();
        metadata.insert("instance_id".into(), instance_id.to_owned());
        metadata.insert("aegis_sdk".into(), crate::SDK_VERSION.into());
        // Which process this is, for an operator and for a second process
        // started with the same id (`refuse_id_in_use`).
        // Prefixed like `aegis_sdk`, so a builder's own `host` is kept.
        metadata.insert(micro::META_HOST.into(), crate::registry::hostname());
        metadata.insert(micro::META_PID.into(), std::process::id().to_string());
        micro::serve(
            self.conn.client().clone(),
            Description {
                name: self.name.clone(),
                id: instance_id.to_owned(),
                version: self.version.clone(),
                description: self.description.clone().unwrap_or_default(),
                metadata,
                started: chrono::Utc::now(),
                endpoints,
                election: self.single_active.clone().zip(leadership),
                commands: self.conn.command_catalog().clone(),
            },
        )
        .await
        .map(AbortOnDrop)
        .map_err(|e| ServiceError::Nats(e.into()))
    }
}

/// What a failed start undoes, in reverse: the subscriptions (and the
/// gate's), then the election (resigned, so a standby need not wait for
/// the lease).
struct Rollback {
    unsubscribe: CancellationToken,
    gate_task: Option<tokio::task::JoinHandle<()>>,
    election: Option<Election>,
}

impl Rollback {
    /// Undoes the started steps and hands back the error that stopped them.
    async fn undo(mut self, error: ServiceError) -> ServiceError {
        self.unsubscribe.cancel();
        if let Some(task) = self.gate_task.take() {
            task.abort();
        }
        if let Some(election) = self.election.take() {
            election.resign().await;
        }
        error
    }
}

/// The request loops' shared controls.
struct Serving {
    tracker: TaskTracker,
    /// Tells the loops to stop reading (no server to confirm unsubscribes).
    stop_taking: CancellationToken,
    /// Tells every subscription loop to unsubscribe.
    unsubscribe: CancellationToken,
}

/// What subscribing every method produced.
struct Subscribed {
    methods: Vec<String>,
    endpoints: Vec<EndpointDescription>,
    /// Leader-only methods: their shared subject is joined by the leader.
    leader_only: Vec<(String, Arc<Method>)>,
}

/// Step 4: each method on its instance-directed subject and (unless it is
/// leader-only) its load-balanced one, a request loop per subscription.
async fn subscribe(
    builder: &ServiceBuilder,
    instance_id: &str,
    serving: &Serving,
    metrics: &Arc<InstanceMetrics>,
    drills: &Arc<Drills>,
    leadership: Option<&crate::election::Leadership>,
) -> Result<Subscribed, ServiceError> {
    let client = builder.conn.client().clone();
    let service_name: Arc<str> = Arc::from(builder.name.as_str());
    let instance: Arc<str> = Arc::from(instance_id);
    let queue_group = subjects::rpc_queue_group(&builder.name);
    let direct_group = format!("{queue_group}.{instance_id}");
    let mut done = Subscribed {
        methods: Vec::new(),
        endpoints: Vec::new(),
        leader_only: Vec::new(),
    };
    for (method, handler, schemas) in &builder.handlers {
        let stats = Arc::new(MethodStats::default());
        let shared = Arc::new(Method {
            client: client.clone(),
            service: service_name.clone(),
            instance: instance.clone(),
            name: Arc::from(method.as_str()),
            handler: handler.clone(),
            metrics: metrics.clone(),
            recorder: metrics.endpoint(method),
            stats: stats.clone(),
            drills: drills.clone(),
            leadership: leadership.cloned(),
            leader_only: leadership.is_some() && !builder.any_role.contains(method),
            load: builder.conn.primary_load().clone(),
            conn: builder.conn.clone(),
        });
        let shared_subject = subjects::rpc_subject(&builder.name, method);
        let direct_subject = subjects::rpc_instance_subject(&builder.name, instance_id, method);
        let mut subscriptions = vec![(
            Route::Direct,
            client
                .queue_subscribe(direct_subject.clone(), direct_group.clone())
                .await,
        )];
        if shared.leader_only {
            // The leader joins the shared subject when elected.
            done.leader_only
                .push((shared_subject.clone(), shared.clone()));
        } else {
            subscriptions.push((
                Route::Shared,
                client
                    .queue_subscribe(shared_subject.clone(), queue_group.clone())
                    .await,
            ));
        }
        for (route, subscription) in subscriptions {
            let subscription = subscription.map_err(|e| ServiceError::Nats(e.into()))?;
            // The handlers run inside this task: their lines are this
            // service's.
            serving.tracker.spawn(owned_by(
                Telemetry::new(&builder.conn, &builder.name, instance_id),
                drive(
                    subscription,
                    shared.clone(),
                    route,
                    serving.unsubscribe.clone(),
                    serving.stop_taking.clone(),
                ),
            ));
        }
        let mut endpoint_metadata = BTreeMap::from([
            ("direct_subject".to_owned(), direct_subject),
            ("leader_only".to_owned(), shared.leader_only.to_string()),
        ]);
        let description = builder
            .descriptions
            .get(method)
            .map(String::as_str)
            .or_else(|| schemas.request_description());
        if let Some(d) = description {
            endpoint_metadata.insert("description".to_owned(), d.to_owned());
        }
        endpoint_metadata.insert("request_schema".to_owned(), schemas.request.to_string());
        endpoint_metadata.insert("response_schema".to_owned(), schemas.response.to_string());
        done.endpoints.push(EndpointDescription {
            name: method.clone(),
            subject: shared_subject,
            queue_group: queue_group.clone(),
            metadata: endpoint_metadata,
            stats,
        });
        done.methods.push(method.clone());
    }
    Ok(done)
}

/// Step 6: the election's role written to the registry record, and the
/// instance's health deciding whether its leader keeps leading.
fn mirror(
    election: Option<&Election>,
    registration: Option<&Registration>,
    telemetry: &Telemetry,
    resign_after: u32,
) -> (
    Option<tokio::task::JoinHandle<()>>,
    Option<tokio::task::JoinHandle<()>>,
) {
    let (Some(election), Some(registration)) = (election, registration) else {
        return (None, None);
    };
    let role_task = tokio::spawn(owned_by(
        telemetry.clone(),
        mirror_role(
            election.roles(),
            election.leadership(),
            registration.handle(),
            telemetry.clone(),
        ),
    ));
    let health_task = control::mirror_health(
        registration.health_changes(),
        election.health_gate(),
        resign_after,
    );
    (Some(role_task), Some(health_task))
}

/// Loads the connection's registry view in the background. A sticky
/// instance leads at short notice, often in a fault that also leaves the
/// registry's stream without a leader for seconds: its first calls as
/// leader then find the view running (and, while the stream has no leader,
/// serving its last known state) instead of starting a first load that
/// may not finish in time. A load that fails (the instance started in
/// such a fault) is tried again, 1 s later and then up to every 10 s,
/// until it loads or `stop` (the service stopping, or dropped: the task
/// then lets the connection go).
fn warm_registry_view(conn: &crate::Connection, stop: CancellationToken) {
    let conn = conn.clone();
    tokio::spawn(async move {
        let mut pause = Duration::from_secs(1);
        loop {
            let loaded = tokio::select! {
                () = stop.cancelled() => return,
                loaded = conn.registry_cache() => loaded,
            };
            match loaded {
                Ok(_) => return,
                Err(e) => tracing::debug!(
                    error = %crate::startup::Causes(&e),
                    retry_in = ?pause,
                    "the registry view did not load ahead of need; trying again"
                ),
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    });
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::{AegisConfig, Connection, rpc::WireError};

    /// A sticky instance has its registry view loaded soon after it starts,
    /// standby or not: the calls it makes once it leads (a takeover, often
    /// in a fault that also leaves the registry's stream without a leader
    /// for seconds) find the view running, not a first load that may not
    /// finish in time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sticky_instance_loads_its_registry_view_before_it_needs_it() {
        let nats = aegis_testkit::NatsServer::start().unwrap();
        let conn = Connection::connect(AegisConfig::with_servers(nats.url()))
            .await
            .unwrap();
        let service = conn
            .service("warm-service", "1.0.0")
            .instance_id("warm-1")
            .single_active("default")
            .handler("ping", |_: serde_json::Value| async {
                Ok::<_, WireError>(1)
            })
            .start()
            .await
            .unwrap();
        aegis_testkit::wait::eventually(Duration::from_secs(5), "the view loads", || async {
            conn.loaded_registry().is_some()
        })
        .await;
        service.shutdown().await.unwrap();
    }
}
