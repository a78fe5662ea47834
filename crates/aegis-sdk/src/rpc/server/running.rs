//! A running service: the [`Service`] handle, its accessors and its ordered
//! shutdown (leave the shared subjects, step down, resign, deregister,
//! drain, stop).

use std::{fmt, sync::Arc, time::Duration};

use aegis_contracts::InstanceStatus;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use super::{ServiceBuilder, ServiceError};
use crate::{
    clock,
    election::Election,
    metrics::InstanceMetrics,
    registry::{Registration, RegistryError},
    telemetry::{
        TelemetryTasks,
        log_layer::{LiveService, owned_by},
    },
};

/// The longest a stopping leader waits for its shared subjects to drain
/// before it resigns.
const LEAVE_WAIT: Duration = Duration::from_secs(1);

/// The longest a stopping leader waits for the requests it admitted to be
/// answered before it resigns; past it, it resigns anyway, and those are
/// answered as a deposed leader's (their callers learn it ran:
/// `RpcError::DeposedLeader`).
const STEP_DOWN_WAIT: Duration = Duration::from_secs(2);

/// How often a stepping-down leader looks whether its requests are done.
const STEP_DOWN_POLL: Duration = Duration::from_millis(5);

/// What a stop keeps of its shutdown timeout (at most half of it) for the
/// steps after the deregistration (the drain grace, the requests in
/// flight) while it tries again to deregister from a registry without a
/// leader.
const AFTER_DEREGISTRATION: Duration = Duration::from_secs(1);

/// A task aborted when its handle is dropped.
pub(super) struct AbortOnDrop(pub(super) tokio::task::JoinHandle<()>);

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
/// (see [`Election`]). A drop without a graceful stop logs one WARN naming
/// the service and instance.
#[must_use = "dropping the Service stops it at once: bind it to a named variable (`let service = ...`, not `let _ = ...`) and call shutdown() or run_until_signal()"]
pub struct Service {
    pub(super) client: async_nats::Client,
    pub(super) name: String,
    pub(super) instance_id: String,
    pub(super) methods: Vec<String>,
    /// Answers the NATS services protocol (`$SRV.*`).
    pub(super) micro_task: Option<AbortOnDrop>,
    /// Joins and leaves the shared subjects as the election decides.
    pub(super) gate_task: Option<tokio::task::JoinHandle<()>>,
    /// Tells every subscription loop to unsubscribe (the gate's too).
    pub(super) unsubscribe: CancellationToken,
    /// Tells the gate to leave the shared subjects for good.
    pub(super) leave_shared: CancellationToken,
    /// The leader's shared-subject loops, waited for before it resigns.
    pub(super) gate_tracker: TaskTracker,
    pub(super) registration: Option<Registration>,
    pub(super) election: Option<Election>,
    pub(super) role_task: Option<tokio::task::JoinHandle<()>>,
    /// Tells the election the instance's fitness to lead.
    pub(super) health_task: Option<tokio::task::JoinHandle<()>>,
    /// Answers operator drills on `aegis.control.{service}.{instance}`.
    pub(super) control_task: Option<tokio::task::JoinHandle<()>>,
    pub(super) telemetry_tasks: Option<TelemetryTasks>,
    pub(super) drain_grace: Duration,
    pub(super) tracker: TaskTracker,
    /// Tells the endpoint loops to stop reading when their subscriptions
    /// cannot close (no server to confirm the unsubscribe).
    pub(super) stop_taking: CancellationToken,
    pub(super) shutdown_timeout: Duration,
    pub(super) metrics: Arc<InstanceMetrics>,
    /// Counts the service among the process's while it runs; its records,
    /// under which the lines of its own work are forwarded.
    pub(super) live: LiveService,
    /// Whether a graceful stop began ([`Service::shutdown`] and the `run*`
    /// methods): a drop without one says so (see `Drop`).
    pub(super) stopping: bool,
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

impl ServiceBuilder {
    /// The whole life of a process that runs one service, what its `main`
    /// ends with: [`start`](Self::start)s the service, serves it until
    /// Ctrl-C or SIGTERM, stops it gracefully
    /// ([`Service::run_until_signal`]: a leader resigns, the instance
    /// deregisters, the requests in flight finish) and drains the
    /// connection last, so the lines logged during the stop reach NATS.
    /// For a process that runs more than one service, or serves until a
    /// stop of its own, use [`start`](Self::start) and the [`Service`].
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// conn.service("greeter", "1.0.0")
    ///     .handler("hello", |name: String| async move { Ok(format!("Hello, {name}!")) })
    ///     .run()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`start`](Self::start) and [`Service::run_until_signal`]; the
    /// connection is drained either way. [`ServiceError::Drain`] when only
    /// the drain failed.
    pub async fn run(self) -> Result<(), ServiceError> {
        let conn = self.conn.clone();
        let served = match self.start().await {
            Ok(service) => service.run_until_signal().await,
            Err(e) => Err(e),
        };
        let drained = conn.drain().await.map_err(ServiceError::Drain);
        served.and(drained)
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
    /// [`ServiceBuilder::single_active`](crate::rpc::ServiceBuilder::single_active) (role, role changes, and
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

    /// Serves until Ctrl-C or SIGTERM, then stops gracefully
    /// ([`shutdown`](Self::shutdown): a leader resigns, the instance
    /// deregisters, the requests in flight finish). What a `main` ends
    /// with; drain the connection after it (or call
    /// [`ServiceBuilder::run`] instead of `start`, which does both). A Ctrl-C during the stop (or
    /// the drain) ends the process at once, with 130; a second SIGTERM
    /// does not, since supervisors send it twice in the normal course (see
    /// [`shutdown_signal`](crate::shutdown_signal)). Those lines go under
    /// this service's instance even once it has stopped (during the
    /// drain), so a forced exit still reaches NATS.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
    /// conn.service("greeter", "1.0.0")
    ///     .handler("hello", |name: String| async move { Ok(format!("Hello, {name}!")) })
    ///     .start()
    ///     .await?
    ///     .run_until_signal()
    ///     .await?;
    /// conn.drain().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`shutdown`](Self::shutdown); [`ServiceError::Signal`] when the
    /// process cannot listen for the signals (the service is then stopped
    /// at once, gracefully, rather than left running with no way to stop
    /// it cleanly).
    pub async fn run_until_signal(self) -> Result<(), ServiceError> {
        let signal = crate::shutdown::signal_for(Some(self.live.telemetry().clone())).await;
        if let Err(e) = &signal {
            warn!(error = %e, "cannot listen for Ctrl-C or SIGTERM; stopping the service");
        }
        let stopped = self.shutdown().await;
        signal.map_err(ServiceError::Signal)?;
        stopped
    }

    /// Serves until `stop` resolves, then stops gracefully
    /// ([`shutdown`](Self::shutdown)): for a stop of your own, such as a
    /// channel or a cancellation token the rest of the process shares.
    ///
    /// ```no_run
    /// # async fn demo(service: aegis_sdk::rpc::Service) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(std::time::Duration::from_secs(60)).await;
    ///     let _ = stop.send(());
    /// });
    /// service.run_until(async { let _ = stopped.await; }).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`shutdown`](Self::shutdown).
    pub async fn run_until<F: std::future::Future>(self, stop: F) -> Result<(), ServiceError> {
        stop.await;
        self.shutdown().await
    }

    /// Graceful stop, within the shutdown timeout: a sticky leader takes
    /// no new request and answers those it took (for up to 2 s), then
    /// resigns (its standby takes over at once), the instance deregisters
    /// (discovery stops choosing it), stops taking requests (unsubscribe),
    /// then serves the ones already received and waits for every handler.
    /// The connection stays open; drain it afterwards.
    ///
    /// While the registry's stream has no leader (its node just died: 4-9
    /// s), the deregistration is tried again until a second before the
    /// shutdown timeout, and the instance goes on answering meanwhile.
    ///
    /// ```no_run
    /// # async fn demo(service: aegis_sdk::rpc::Service) -> Result<(), aegis_sdk::rpc::server::ServiceError> {
    /// service.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ServiceError::ShutdownTimeout`] with the number of requests still
    /// in their handler at the shutdown timeout. Those handlers are not
    /// cancelled: they run on until they end or the process exits, and
    /// their callers still get the replies, late, while the connection is
    /// open (after [`Connection::drain`](crate::Connection::drain) a reply
    /// is lost). Otherwise
    /// [`ServiceError::Registry`] when the record could not be deleted
    /// (refused, or not confirmed a second before the shutdown timeout; it
    /// then expires after its TTL). The other steps run anyway.
    pub async fn shutdown(self) -> Result<(), ServiceError> {
        // The stop's lines are this service's.
        let owner = self.live.telemetry().clone();
        owned_by(owner, self.stop()).await
    }

    /// The body of [`shutdown`](Self::shutdown).
    async fn stop(mut self) -> Result<(), ServiceError> {
        self.stopping = true;
        let deadline = clock::deadline(tokio::time::Instant::now(), self.shutdown_timeout);
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
        // Then it takes no new request (a caller is told NOT_ACTIVE and
        // finds the successor once it resigned) and answers, as the leader,
        // those it took: resigning under them would answer them as a
        // deposed leader, and a caller's `call_active` would report a
        // call that ran as a conflict.
        if let Some(election) = &self.election {
            election.step_down();
            let until = deadline.min(tokio::time::Instant::now() + STEP_DOWN_WAIT);
            while reachable && self.metrics.in_flight() > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(STEP_DOWN_POLL).await;
            }
            if self.metrics.in_flight() > 0 {
                debug!(
                    in_flight = self.metrics.in_flight(),
                    "requests still running after the step-down wait; resigning anyway"
                );
            }
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
            // Tried again while the registry's stream has no leader, but
            // leaving the stop's last steps their time (an attempt that
            // overruns is cut off there too); tried once while NATS is
            // unreachable (the record expires with its TTL).
            let cut_off = deadline - AFTER_DEREGISTRATION.min(self.shutdown_timeout / 2);
            let until = if reachable {
                cut_off
            } else {
                tokio::time::Instant::now()
            };
            let key = registration.key().to_owned();
            deregistered =
                match tokio::time::timeout_at(cut_off, registration.deregister_by(until)).await {
                    Ok(result) => result.map_err(ServiceError::from),
                    // No request is at stake here: the record was not
                    // removed in time, as when the registry refuses.
                    Err(_) => Err(ServiceError::Registry(RegistryError::Delete {
                        key,
                        source: "not removed within the shutdown timeout".into(),
                    })),
                };
            if let Err(e) = &deregistered {
                warn!(error = %crate::startup::Causes(e), "could not deregister; the record expires with its TTL");
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
            let grace = clock::deadline(tokio::time::Instant::now(), self.drain_grace);
            tokio::time::sleep_until(grace.min(deadline)).await;
        }
        self.unsubscribe.cancel();
        self.tracker.close();
        let waited = tokio::time::timeout_at(deadline, async {
            wait_for_endpoints(&self.tracker, &self.client, &self.stop_taking).await;
            wait_for_endpoints(&self.gate_tracker, &self.client, &self.stop_taking).await;
        })
        .await;
        // `$SRV.PING` is answered until the requests taken are done: a
        // caller whose leader was replaced asks it whether a reply can
        // still come (`RpcError::LeaderGone`), and one can.
        if let Some(micro) = self.micro_task.take() {
            drop(micro);
        }
        // The requests still in a handler (each loop serves many at once).
        let running = usize::try_from(self.metrics.in_flight()).unwrap_or(usize::MAX);
        if waited.is_err() {
            warn!(
                in_flight = running,
                "handlers still running at the shutdown timeout are not cancelled: they run on, and their callers may get late replies while the connection is open"
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
        // A loop still open with no request in it (its unsubscribe not yet
        // confirmed) leaves no caller without a reply.
        match waited {
            Err(_) if running > 0 => Err(ServiceError::ShutdownTimeout(running)),
            _ => deregistered,
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
        if !self.stopping {
            warn!(service = %self.name, instance = %self.instance_id,
                "service {}/{} dropped without shutdown(): it stopped without a graceful stop \
                 (requests in flight are not waited for, a leader's lease lapses instead of \
                 being handed over, and its record is removed or expires); keep the Service \
                 in a named variable and call shutdown() or run_until_signal()",
                self.name, self.instance_id);
        }
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
