//! One instance's presence in the registry: [`RegistrationBuilder`] →
//! [`RegistrationBuilder::start`] → [`Registration`], which heart-beats until
//! [`Registration::deregister`] (or drop).
//!
//! - Start writes the record and fails if that write fails.
//! - Every heartbeat publishes a liveness beat on core NATS
//!   (`aegis.heartbeat.{service}.{instance}`), which only the monitor
//!   subscribes to.
//! - The record is re-written (fresh `lastHeartbeat`, per-key TTL) when it
//!   changes and otherwise only every `refresh` (default 4 s), to renew its
//!   TTL: every process watching a service receives every write of it, so
//!   rewriting an unchanged record each beat would cost each watcher one
//!   message per instance per second for nothing. A record deleted by
//!   someone else is back within `refresh`.
//! - A status change ([`RegistrationHandle::set_status`]) is written at once.
//! - A failed write is retried with back-off (100 ms doubling up to the
//!   heartbeat), logged and counted
//!   ([`RegistrationHandle::consecutive_failures`]); after
//!   `unready_after` failures in a row the readiness probe (`/readyz`,
//!   module `probes`) says not ready. The record's status does not change
//!   for it: while the registry's stream takes no writes, every instance's
//!   writes fail alike, and an instance that reported UNHEALTHY for it
//!   would leave discovery with all the others the moment the registry
//!   came back.
//! - A health check, when given, runs before every beat; while it fails the
//!   record says UNHEALTHY (discovery skips the instance). An operator can
//!   force the same ([`RegistrationHandle::force_unhealthy`]). The record
//!   then names the reason and since when (metadata `statusReason`,
//!   `statusSince`; see [`super::health`]) and, when the failing check
//!   said why, what it said (`statusDetail`), and
//!   [`RegistrationHandle::health_changes`] tells the rest of the instance
//!   (a sticky leader hands over).
//! - An operator's `slow` drill is in the record too while it holds
//!   (metadata `drillDelayMs`, `drillDelaySince`;
//!   [`RegistrationHandle::set_drill_delay`]): the instance keeps its
//!   status, but whoever reads the record sees it is slowed on purpose.
//!
//! Writes are serialized and each composes the record at write time, so a
//! heartbeat can never overwrite a newer status with an older one.
//!
//! The lines its own tasks log (the heartbeat, the health check, the
//! purge after a drop) are the work of the instance it registers, for the
//! [`log_layer`](crate::telemetry::log_layer): a WARN among them is
//! forwarded to `aegis.log.{service}.{instance}` of its record, whether a
//! service made it or it was made bare with [`Registration::builder`]
//! beside other services of the process.
//!
//! - `options.rs`: the timing options and their defaults;
//! - `writer.rs`: the record's state, the writes, the heartbeat loop and
//!   the purge on deregistration.

use aegis_contracts::log::{EPOCH_FIELD, LogKind, LogLevel, LogRecord};
use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aegis_contracts::{InstanceStatus, ServiceInstance, models::rfc3339, names, subjects};
use chrono::Utc;
use tokio::sync::watch;
use tracing::{debug, info};

use super::{
    RegistryError,
    bucket::ensure_registry_bucket,
    health::{Health, Tracker},
    record::{key_subject, ttl_header_value},
};
use crate::{
    Connection,
    task::Background,
    telemetry::{Telemetry, log_layer::owned_by},
};

mod options;
mod writer;
#[allow(deprecated)]
pub use options::DEFAULT_UNHEALTHY_AFTER;
pub use options::{
    DEFAULT_HEARTBEAT, DEFAULT_REFRESH, DEFAULT_TTL, DEFAULT_UNREADY_AFTER, MAX_TTL,
    METADATA_CONNECTION, METADATA_HEARTBEAT_MS, METADATA_REFRESH_MS, METADATA_REGISTRATION,
    MIN_TTL, RegistrationOptions,
};
use writer::{Inner, WriteState, heartbeat, purge, purge_until};

/// First wait after a failed write; it doubles up to the heartbeat.
const RETRY_INITIAL: Duration = Duration::from_millis(100);

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// A health check run before every heartbeat: `true` means healthy.
pub type HealthCheck = Arc<dyn Fn() -> BoxFuture<bool> + Send + Sync>;

/// A health check that says why it fails: `Ok(())` means healthy,
/// `Err(reason)` unhealthy, with the reason in words for the record's
/// `statusDetail`.
pub type HealthCheckWithReason = Arc<dyn Fn() -> BoxFuture<Result<(), String>> + Send + Sync>;

/// Either kind of check, as the heartbeat runs it: a failure with what it
/// said (`None`: a check that says nothing).
pub(crate) type AnyHealthCheck =
    Arc<dyn Fn() -> BoxFuture<Result<(), Option<String>>> + Send + Sync>;

/// `check`, which answers `true` when healthy, as the heartbeat runs it.
pub(crate) fn without_reason<F, Fut>(check: F) -> AnyHealthCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    Arc::new(move || {
        let checked = check();
        Box::pin(async move { if checked.await { Ok(()) } else { Err(None) } })
    })
}

/// `check`, which gives a reason when it fails, as the heartbeat runs it.
pub(crate) fn with_reason<F, Fut>(check: F) -> AnyHealthCheck
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Arc::new(move || {
        let checked = check();
        Box::pin(async move { checked.await.map_err(Some) })
    })
}

/// Declares a registration; see [`Registration::builder`].
pub struct RegistrationBuilder {
    conn: Connection,
    record: ServiceInstance,
    options: RegistrationOptions,
    health_check: Option<AnyHealthCheck>,
    on_event: Option<EventHook>,
}

/// Receives the registration's lifecycle events (registered, heartbeat
/// trouble, health changes, deregistered), e.g. to publish them.
pub type EventHook = Arc<dyn Fn(LogRecord) + Send + Sync>;

impl fmt::Debug for RegistrationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationBuilder")
            .field("record", &self.record)
            .field("options", &self.options)
            .field("health_check", &self.health_check.is_some())
            .finish()
    }
}

impl RegistrationBuilder {
    /// All timing options at once.
    pub fn options(mut self, options: RegistrationOptions) -> Self {
        self.options = options;
        self
    }

    /// The heartbeat interval (default 1 s).
    pub fn heartbeat(mut self, every: Duration) -> Self {
        self.options.heartbeat = every;
        self
    }

    /// How often an unchanged record is re-written (default 4 s; see
    /// [`RegistrationOptions::effective_refresh`]).
    pub fn refresh(mut self, every: Duration) -> Self {
        self.options.refresh = every;
        self
    }

    /// The record's TTL on the server (default 15 s).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.options.ttl = ttl;
        self
    }

    /// Failed writes in a row before the readiness probe says not ready
    /// (default 15; see [`RegistrationOptions::unready_after`]).
    pub fn unready_after(mut self, failures: u32) -> Self {
        self.options.unready_after = failures;
        self
    }

    /// The former name of [`unready_after`](Self::unready_after).
    #[deprecated(note = "renamed `unready_after`: it governs only /readyz")]
    pub fn unhealthy_after(self, failures: u32) -> Self {
        self.unready_after(failures)
    }

    /// Receives lifecycle events (registered, heartbeat trouble, health
    /// changes, deregistered); the service publishes them to `AEGIS_LOG`.
    pub fn on_event(mut self, hook: EventHook) -> Self {
        self.on_event = Some(hook);
        self
    }

    /// A check run before every heartbeat (bounded by the heartbeat
    /// interval); while it returns `false` or overruns, the record says
    /// UNHEALTHY.
    pub fn health_check<F, Fut>(mut self, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.health_check = Some(without_reason(check));
        self
    }

    /// A check run before every heartbeat that says why it fails: while it
    /// returns `Err(reason)` (or overruns) the record says UNHEALTHY, and
    /// its metadata `statusDetail` holds the reason (see
    /// [`ServiceBuilder::health_check_with_reason`](crate::rpc::server::ServiceBuilder::health_check_with_reason)
    /// for how it is cut and how often a changing reason is written).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// use aegis_sdk::{contracts::ServiceInstance, registry::Registration};
    ///
    /// let record = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", chrono::Utc::now());
    /// let registration = Registration::builder(&conn, record)
    ///     .health_check_with_reason(|| async { Err("the price feed is 30 s old".to_owned()) })
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

    /// Either kind of check, as a service hands it on.
    pub(crate) fn any_health_check(mut self, check: AnyHealthCheck) -> Self {
        self.health_check = Some(check);
        self
    }

    /// Validates, ensures the bucket, writes the record and starts the
    /// heartbeat.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// use aegis_sdk::{contracts::ServiceInstance, registry::Registration};
    ///
    /// let record = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", chrono::Utc::now());
    /// let registration = Registration::builder(&conn, record).start().await?;
    /// registration.deregister().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RegistryError::InvalidOptions`], [`RegistryError::InvalidRecord`]
    /// (before any I/O); bucket errors from
    /// [`ensure_registry_bucket`];
    /// [`RegistryError::Write`] when the first write fails.
    pub async fn start(mut self) -> Result<Registration, RegistryError> {
        self.options.validate()?;
        // Lets a monitor match the server's disconnect advisory for this
        // connection to the record, and show a crash at once.
        self.record
            .metadata
            .entry(METADATA_CONNECTION)
            .or_insert_with(|| self.conn.connection_name().into());
        // Tells this registration's record from another's under the same
        // id, even on the same connection (see `writer::current_writer`).
        self.record.metadata.insert(
            METADATA_REGISTRATION.into(),
            nuid::next().to_string().into(),
        );
        // Lets a monitor tell a missing beat from a slow cadence.
        self.record.metadata.insert(
            METADATA_HEARTBEAT_MS.into(),
            saturating_ms(self.options.heartbeat).into(),
        );
        self.record.metadata.insert(
            METADATA_REFRESH_MS.into(),
            saturating_ms(self.options.effective_refresh()).into(),
        );
        names::validate_service_name(&self.record.service_name)?;
        names::validate_instance_id(&self.record.instance_id)?;
        self.record.validate()?;
        let store =
            ensure_registry_bucket(self.conn.jetstream(), self.conn.config().nats.replicas).await?;
        let max_age = store.stream.cached_info().config.max_age;
        if !max_age.is_zero() && max_age <= self.options.heartbeat {
            return Err(RegistryError::BucketUnusable {
                bucket: store.name.clone(),
                reason: format!(
                    "its max_age {max_age:?} would drop records between heartbeats ({:?})",
                    self.options.heartbeat
                ),
            });
        }
        let key = subjects::registry_key(&self.record.service_name, &self.record.instance_id);
        // The lines of its own work (the heartbeat, the health check, the
        // purge on drop) go under what it registers as, as a service's
        // do: a registration made without a service has no other owner.
        // A service's registration shares the service's sender.
        let owner = Telemetry::new(
            &self.conn,
            &self.record.service_name,
            &self.record.instance_id,
        );
        let inner = Arc::new(Inner {
            js: self.conn.jetstream().clone(),
            refusals: self.conn.refusals(),
            client: self.conn.client().clone(),
            beat_subject: subjects::heartbeat_subject(
                &self.record.service_name,
                &self.record.instance_id,
            )
            .into(),
            subject: key_subject(&store, &key),
            key,
            store,
            ttl_value: ttl_header_value(self.options.ttl),
            write_timeout: self.options.write_timeout(),
            options: self.options,
            state: Mutex::new(WriteState {
                desired: self.record.clone(),
                written: self.record,
                written_at: None,
                revision: None,
                failures: 0,
                found_out: None,
                health: Tracker::default(),
                drill: None,
            }),
            health_tx: watch::channel(Health::default()).0,
            writes: tokio::sync::Mutex::new(()),
            closed: AtomicBool::new(false),
            health_check: self.health_check,
            on_event: self.on_event,
        });
        // A bucket created a moment ago on a cluster may refuse writes for
        // a moment ("stream not found" while its replicas come up; seen in
        // full test runs): the first write is retried briefly before it
        // counts as a failure.
        let patience = tokio::time::Instant::now() + FIRST_WRITE_PATIENCE;
        let mut pause = Duration::from_millis(50);
        loop {
            match inner.write().await {
                Ok(_) => break,
                // A refused write is refused again: no retry.
                Err(e @ RegistryError::Write { .. })
                    if tokio::time::Instant::now() + pause < patience && !e.is_refused() =>
                {
                    debug!(key = %inner.key, error = %crate::startup::Causes(&e), "first registry write refused; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                Err(e) => return Err(e),
            }
        }
        let tasks = Background::new();
        let beating = inner.clone();
        let beat_owner = owner.clone();
        tasks.spawn(|cancel| owned_by(beat_owner, heartbeat(beating, cancel)));
        info!(key = %inner.key, ttl = ?inner.options.ttl, heartbeat = ?inner.options.heartbeat, "registered");
        inner.emit(
            LogLevel::Info,
            LogKind::Registered,
            "registered in the service registry",
            |f| {
                f.insert(
                    "ttlMs".into(),
                    (inner.options.ttl.as_millis() as u64).into(),
                );
            },
        );
        Ok(Registration {
            handle: RegistrationHandle { inner },
            tasks,
            owner,
        })
    }
}

/// How long a registration's first write is retried when it is refused
/// (a bucket just created on a cluster), before `start` fails.
const FIRST_WRITE_PATIENCE: Duration = Duration::from_secs(5);

/// A cloneable handle to a live registration, for tasks that change the
/// record (a health monitor, an election).
#[derive(Clone)]
pub struct RegistrationHandle {
    inner: Arc<Inner>,
}

impl fmt::Debug for RegistrationHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegistrationHandle")
            .field("key", &self.inner.key)
            .field("status", &self.status())
            .finish()
    }
}

impl RegistrationHandle {
    /// The registry key, `service-instances.{service}.{instance}`.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The record as last stored.
    pub fn record(&self) -> ServiceInstance {
        self.inner.state().written.clone()
    }

    /// The status the instance chose (what it reports when healthy).
    pub fn status(&self) -> InstanceStatus {
        self.inner.state().desired.status
    }

    /// The status the stored record shows (UNHEALTHY while failing its
    /// health check or under an operator's verdict).
    pub fn reported_status(&self) -> InstanceStatus {
        self.inner.state().written.status
    }

    /// Failed writes in a row (0 when the last write worked).
    pub fn consecutive_failures(&self) -> u32 {
        self.inner.state().failures
    }

    /// The instance's own health verdict as last settled: why it reports
    /// UNHEALTHY (if it does) and since when.
    pub fn health(&self) -> Health {
        self.inner.health_tx.borrow().clone()
    }

    /// Changes of [`health`](Self::health), as a watch channel.
    pub fn health_changes(&self) -> watch::Receiver<Health> {
        self.inner.health_tx.subscribe()
    }

    /// Makes the instance report UNHEALTHY (reason `operator`) until
    /// [`lift_unhealthy`](Self::lift_unhealthy), or for `duration` (one
    /// too long for the clocks counts as until lifted), and writes the
    /// record at once. For drills (`aegis chaos unhealthy`).
    ///
    /// ```no_run
    /// # async fn demo(reg: aegis_sdk::registry::Registration) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// use std::time::Duration;
    /// reg.force_unhealthy(Some(Duration::from_secs(30))).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`set_status`](Self::set_status): the verdict holds anyway and
    /// the heartbeat retries the write.
    pub async fn force_unhealthy(&self, duration: Option<Duration>) -> Result<(), RegistryError> {
        {
            let mut st = self.inner.state();
            // A duration past what the clocks can represent means "until
            // lifted" rather than a panic.
            let until = duration.and_then(|d| {
                Some((
                    tokio::time::Instant::now().checked_add(d)?,
                    Utc::now().checked_add_signed(chrono::Duration::from_std(d).ok()?)?,
                ))
            });
            let before = st.health.health();
            st.health.force(Some(until));
            self.inner.settle(&mut st);
            let after = st.health.health();
            // The event is what the monitor shows; a WARN line forwarded
            // from here would repeat it.
            self.inner.emit(
                LogLevel::Warn,
                LogKind::StatusChanged,
                "an operator made this instance UNHEALTHY",
                |f| {
                    verdict_fields(f, st.desired.status, &before, &after);
                    if let Some(d) = duration {
                        f.insert("for_ms".into(), saturating_ms(d).into());
                    }
                    if let Some(until) = &after.forced_until {
                        f.insert("until".into(), rfc3339::format_utc(until).into());
                    }
                },
            );
        }
        info!(key = %self.inner.key, for_ms = duration.map(saturating_ms),
            "an operator made this instance UNHEALTHY");
        self.inner.write().await.map(|_| ())
    }

    /// Lifts an operator's verdict (a failing health check still counts)
    /// and writes the record at once.
    ///
    /// # Errors
    /// As [`force_unhealthy`](Self::force_unhealthy).
    pub async fn lift_unhealthy(&self) -> Result<(), RegistryError> {
        {
            let mut st = self.inner.state();
            let before = st.health.health();
            st.health.force(None);
            self.inner.settle(&mut st);
            if before.forced {
                let after = st.health.health();
                self.inner.emit(
                    LogLevel::Info,
                    LogKind::StatusChanged,
                    "an operator lifted the UNHEALTHY verdict",
                    |f| verdict_fields(f, st.desired.status, &before, &after),
                );
            }
        }
        info!(key = %self.inner.key, "the operator's unhealthy verdict was lifted");
        self.inner.write().await.map(|_| ())
    }

    /// Records an operator's `slow` drill in the record (metadata
    /// `drillDelayMs` and `drillDelaySince`; a zero `delay` lifts it) and
    /// writes the record at once, so the monitor and `aegis status` can
    /// say the instance is slowed on purpose. A changed delay keeps the
    /// drill's start. Only the record: the delay itself is the
    /// service's (`aegis chaos slow`).
    ///
    /// ```no_run
    /// # async fn demo(reg: aegis_sdk::registry::Registration) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// use std::time::Duration;
    /// reg.set_drill_delay(Duration::from_millis(500)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`set_status`](Self::set_status): the drill stays recorded and
    /// the heartbeat retries the write.
    pub async fn set_drill_delay(&self, delay: Duration) -> Result<(), RegistryError> {
        let delay_ms = saturating_ms(delay);
        {
            let mut st = self.inner.state();
            let before = st.drill;
            st.drill = match (delay_ms, before) {
                (0, _) => None,
                (ms, Some((_, since))) => Some((ms, since)),
                (ms, None) => Some((ms, Utc::now())),
            };
            // Each change is an event, as an operator's verdict is: the
            // instance's list of events says when latency was made on
            // purpose, after the record no longer does.
            match (before, st.drill) {
                (Some((from, _)), None) => self.inner.emit(
                    LogLevel::Info,
                    LogKind::Log,
                    "an operator lifted the slow drill",
                    |f| {
                        f.insert("from_ms".into(), from.into());
                    },
                ),
                (before, Some((ms, since))) if before.map(|(from, _)| from) != Some(ms) => {
                    self.inner.emit(
                        LogLevel::Warn,
                        LogKind::Log,
                        "an operator's slow drill delays every handler",
                        |f| {
                            f.insert("delay_ms".into(), ms.into());
                            if let Some((from, _)) = before {
                                f.insert("from_ms".into(), from.into());
                            }
                            f.insert("since".into(), rfc3339::format_utc(&since).into());
                        },
                    )
                }
                _ => {}
            }
        }
        self.inner.write().await.map(|_| ())
    }

    /// The timing in use.
    pub fn options(&self) -> &RegistrationOptions {
        &self.inner.options
    }

    /// Chooses a status and writes it at once (the heartbeat keeps it).
    ///
    /// ```no_run
    /// # async fn demo(reg: aegis_sdk::registry::Registration) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// use aegis_sdk::contracts::InstanceStatus;
    /// reg.set_status(InstanceStatus::Unhealthy).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RegistryError::Write`] when the write fails (the status is kept and
    /// the heartbeat retries it); [`RegistryError::Deregistered`] after
    /// deregistration.
    pub async fn set_status(&self, status: InstanceStatus) -> Result<(), RegistryError> {
        self.update(|r| r.status = status).await
    }

    /// Changes the record (status, group, epoch, metadata) and writes it at
    /// once. The service name and instance id cannot change, nor can the
    /// metadata the registry keeps for itself (`natsConnection`,
    /// `registrationId`, `heartbeatMs`, `refreshMs`): a change to those is
    /// undone.
    ///
    /// ```no_run
    /// # async fn demo(reg: aegis_sdk::registry::Registration) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// reg.update(|r| { r.metadata.insert("zone".into(), "eu-1".into()); }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`set_status`](Self::set_status); [`RegistryError::InvalidRecord`]
    /// when the changed record does not validate (nothing is changed).
    pub async fn update(&self, f: impl FnOnce(&mut ServiceInstance)) -> Result<(), RegistryError> {
        {
            let mut st = self.inner.state();
            let mut next = st.desired.clone();
            f(&mut next);
            next.service_name = st.desired.service_name.clone();
            next.instance_id = st.desired.instance_id.clone();
            // Whose record this is (see `writer::current_writer`) and the
            // cadence a monitor judges the beats by.
            for key in [
                METADATA_CONNECTION,
                METADATA_REGISTRATION,
                METADATA_HEARTBEAT_MS,
                METADATA_REFRESH_MS,
            ] {
                match st.desired.metadata.get(key) {
                    Some(kept) => next.metadata.insert(key.into(), kept.clone()),
                    None => next.metadata.remove(key),
                };
            }
            next.validate()?;
            st.desired = next;
        }
        self.inner.write().await.map(|_| ())
    }
}

/// A live registration: the record is stored and refreshed until
/// [`deregister`](Self::deregister). Dropping it stops the heartbeat and
/// deletes the record in the background (best effort; otherwise it expires
/// after its TTL).
///
/// The background delete is only scheduled: a process that drops its
/// registrations at the end of `main` usually ends before it runs, and its
/// records then wait out their TTL, which watchers read as a crash. Await
/// [`deregister`](Self::deregister) before the process exits.
pub struct Registration {
    handle: RegistrationHandle,
    /// The heartbeat; stopped once deregistered.
    tasks: Background,
    /// Whose lines its tasks log: the service and instance it registers.
    owner: Telemetry,
}

impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("key", &self.handle.inner.key)
            .field("status", &self.handle.status())
            .finish()
    }
}

impl std::ops::Deref for Registration {
    type Target = RegistrationHandle;

    fn deref(&self) -> &RegistrationHandle {
        &self.handle
    }
}

impl Registration {
    /// Starts declaring the registration of `record` (service, instance,
    /// version, status, metadata) on `conn`.
    pub fn builder(conn: &Connection, record: ServiceInstance) -> RegistrationBuilder {
        RegistrationBuilder {
            conn: conn.clone(),
            record,
            options: RegistrationOptions::default(),
            health_check: None,
            on_event: None,
        }
    }

    /// A cloneable handle for other tasks.
    pub fn handle(&self) -> RegistrationHandle {
        self.handle.clone()
    }

    /// Stops the heartbeat and deletes the record (a purge whose marker
    /// expires after
    /// [`REGISTRY_MARKER_TTL`](crate::registry::bucket::REGISTRY_MARKER_TTL)); watchers see the removal at
    /// once.
    ///
    /// ```no_run
    /// # async fn demo(reg: aegis_sdk::registry::Registration) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// reg.deregister().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// While the registry's stream takes no writes (it elects a new leader
    /// after its leader's node died: 4-9 s), the delete is tried again
    /// until the record would have expired anyway.
    ///
    /// # Errors
    /// [`RegistryError::Delete`] when the delete is refused, or not taken
    /// before the record would have expired; the record then expires after
    /// its TTL.
    pub async fn deregister(self) -> Result<(), RegistryError> {
        let expires = {
            let inner = &self.handle.inner;
            let written = inner.state().written_at;
            written.unwrap_or_else(tokio::time::Instant::now) + inner.options.ttl
        };
        self.deregister_by(expires).await
    }

    /// [`deregister`](Self::deregister), trying no longer than `until`
    /// (a service's stop leaves itself time for its other steps).
    pub(crate) async fn deregister_by(
        mut self,
        until: tokio::time::Instant,
    ) -> Result<(), RegistryError> {
        self.stop_heartbeat().await;
        let inner = &self.handle.inner;
        let result = purge_until(inner, until).await;
        if result.is_ok() {
            info!(key = %inner.key, "deregistered");
            // A sticky leader's record holds its epoch (a standby's none):
            // the goodbye names the term the stop ends, so that a reader of
            // the log need not guess it from the instance and the timing.
            let epoch = inner.state().desired.epoch;
            inner.emit(
                LogLevel::Info,
                LogKind::Deregistered,
                "deregistered on a graceful stop",
                |fields| {
                    if let Some(epoch) = epoch {
                        fields.insert(EPOCH_FIELD.to_owned(), epoch.into());
                    }
                },
            );
        }
        result
    }

    async fn stop_heartbeat(&mut self) {
        self.tasks.stop().await;
        // Wait out a write in flight (e.g. a status change), then refuse more.
        let _serial = self.handle.inner.writes.lock().await;
        self.handle.inner.closed.store(true, Ordering::Release);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.tasks.is_stopped() {
            return; // deregistered
        }
        let stopped = self.tasks.stop();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let inner = self.handle.inner.clone();
            rt.spawn(owned_by(self.owner.clone(), async move {
                stopped.await;
                let _serial = inner.writes.lock().await;
                inner.closed.store(true, Ordering::Release);
                if let Err(e) = purge(&inner).await {
                    debug!(key = %inner.key, error = %crate::startup::Causes(&e), "deregistration on drop failed; the record will expire");
                }
            }));
        }
    }
}

/// The fields of an event about an operator's verdict: the status before
/// and after (healthy, the status the instance chose: `chosen`, its
/// record's own, ACTIVE or STANDBY by its role) and, when it still reports
/// UNHEALTHY for another reason after a lift, which.
pub(super) fn verdict_fields(
    f: &mut serde_json::Map<String, serde_json::Value>,
    chosen: InstanceStatus,
    before: &Health,
    after: &Health,
) {
    let status = |h: &Health| {
        if h.is_healthy() {
            chosen.as_str()
        } else {
            "UNHEALTHY"
        }
    };
    f.insert("from".into(), status(before).into());
    f.insert("to".into(), status(after).into());
    f.insert("reason".into(), "operator".into());
    if !after.forced
        && let Some(still) = after.reason
    {
        f.insert("still_unhealthy".into(), still.as_str().into());
    }
}

/// `d` in whole milliseconds, saturating (a record or event field, not
/// arithmetic).
fn saturating_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        RegistrationOptions::default().validate().unwrap();
        let bad = |o: RegistrationOptions| {
            assert!(
                matches!(o.validate(), Err(RegistryError::InvalidOptions(_))),
                "{o:?}"
            )
        };
        bad(RegistrationOptions {
            heartbeat: DEFAULT_TTL,
            ..Default::default()
        });
        bad(RegistrationOptions {
            heartbeat: Duration::ZERO,
            ..Default::default()
        });
        bad(RegistrationOptions {
            ttl: Duration::from_millis(900),
            heartbeat: Duration::from_millis(300),
            ..Default::default()
        });
        bad(RegistrationOptions {
            unready_after: 0,
            ..Default::default()
        });
        RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(1),
            unready_after: 1,
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn writes_wait_a_bounded_time() {
        let o = |ms| RegistrationOptions {
            heartbeat: Duration::from_millis(ms),
            ttl: Duration::from_secs(60),
            ..Default::default()
        };
        assert_eq!(o(100).write_timeout(), Duration::from_millis(500));
        assert_eq!(o(1000).write_timeout(), Duration::from_secs(1));
        assert_eq!(o(30_000).write_timeout(), Duration::from_secs(5));
    }
}
