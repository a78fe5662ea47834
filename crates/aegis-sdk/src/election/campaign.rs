//! The election task: follow the key as a standby, take it when it lapses or
//! is deleted, renew it as leader, resign on stop.
//!
//! Why one module of over 500 lines: the campaign is one state machine
//! (standby, leader, riding out a leaderless stream, stepping aside) whose
//! transitions all read and write the same lease arithmetic and the same
//! shared leadership state; split by state, one transition would span files.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::{models::rfc3339, names, subjects};
use async_nats::jetstream::{
    consumer::DeliverPolicy,
    kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
};
use bytes::Bytes;
use futures::StreamExt;
use tokio::{sync::watch, task::JoinHandle, time::sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{
    ElectionError, LeaderRecord, LeaseConfig, Role, ensure_election_bucket, health::HealthGate,
};
use crate::Connection;

/// Leadership state shared with request handling: read on every request, so
/// it is a mutex-free check plus one short lock for the deadline.
#[derive(Debug)]
struct Shared {
    role: watch::Sender<Role>,
    serve_until: Mutex<Option<Instant>>,
    epoch: AtomicU64,
    renewals_paused: AtomicBool,
    /// Set by a graceful stop: a leader that takes no new request, and
    /// finishes those it took before it resigns.
    stepping_down: AtomicBool,
    /// Set while a leader's lease has run out unrenewed and the key may
    /// still be its own: it stopped serving (a standby's role) and renews
    /// on. Cleared when it serves again, when the term ends otherwise (the
    /// key taken by another, a stop), and when it starts a term; its
    /// `leadership_lost` event says so.
    lapsed: AtomicBool,
}

impl Shared {
    fn serving_epoch(&self) -> Option<u64> {
        self.serving_epoch_for(Duration::ZERO)
    }

    /// The epoch, if the lease stays valid for at least `margin` more.
    fn serving_epoch_for(&self, margin: Duration) -> Option<u64> {
        let until = *self.serve_until.lock().unwrap_or_else(|e| e.into_inner());
        match until {
            // A margin past what the clock holds outlasts any lease.
            Some(t) if Instant::now().checked_add(margin).is_some_and(|m| m < t) => {
                Some(self.epoch.load(Ordering::Acquire))
            }
            _ => None,
        }
    }
}

/// A cheap, cloneable view of this instance's leadership, for the request
/// path: [`Leadership::serving_epoch`] says whether to serve and with which
/// fencing epoch.
#[derive(Debug, Clone)]
pub struct Leadership(Arc<Shared>);

impl Leadership {
    /// `Some(epoch)` while this instance leads and its lease is valid.
    pub fn serving_epoch(&self) -> Option<u64> {
        self.0.serving_epoch()
    }

    /// [`serving_epoch`](Self::serving_epoch) for a new request: `None`
    /// too while a gracefully stopping leader steps down (it finishes the
    /// requests it took, under its lease, and takes no more).
    pub fn admitting_epoch(&self) -> Option<u64> {
        if self.stepping_down() {
            return None;
        }
        self.0.serving_epoch()
    }

    /// Whether this instance is stepping down: a graceful stop that takes
    /// no new request and resigns once those in flight are answered.
    pub fn stepping_down(&self) -> bool {
        self.0.stepping_down.load(Ordering::Acquire)
    }

    /// Whether this instance still leads at `epoch` with at least `margin`
    /// of its lease left. Ask right before a write that must not land once
    /// a successor may have taken over, with `margin` covering how long the
    /// write can take: a handler admitted under a valid lease may run for
    /// seconds, and the lease may have lapsed (and a standby taken over)
    /// since. This narrows the window; only a fence at the store closes it,
    /// since the process can still stall between this check and the write.
    ///
    /// ```no_run
    /// # fn demo(leadership: aegis_sdk::election::Leadership, epoch: u64) {
    /// use std::time::Duration;
    ///
    /// if leadership.holds(epoch, Duration::from_millis(50)) {
    ///     // write, conditioned on the store's fence for `epoch`
    /// }
    /// # }
    /// ```
    pub fn holds(&self, epoch: u64, margin: Duration) -> bool {
        self.0.serving_epoch_for(margin) == Some(epoch)
    }

    /// The current role as last decided by the election task.
    pub fn role(&self) -> Role {
        self.0.role.borrow().clone()
    }

    /// Whether this instance stopped serving because its lease ran out
    /// unrenewed, keeping the key: it serves again at the same epoch once
    /// a renewal commits, unless a successor took the key meanwhile.
    pub(crate) fn lapsed(&self) -> bool {
        self.0.lapsed.load(Ordering::Acquire)
    }
}

/// A running election for one (service, group).
///
/// Dropping it is an abort: it stops serving at once and stops the
/// campaign where it stands, without resigning — the election key keeps
/// this instance's record and a standby takes over when the lease lapses,
/// as after a crash. Call [`resign`](Election::resign) for a hand-over
/// within milliseconds.
#[derive(Debug)]
pub struct Election {
    shared: Arc<Shared>,
    gate: Arc<HealthGate>,
    key: String,
    config: LeaseConfig,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl Election {
    /// Joins the election of `service`/`group` as `instance_id` and starts
    /// campaigning in the background.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::election::ElectionError> {
    /// use aegis_sdk::election::{Election, LeaseConfig};
    ///
    /// let election = Election::start(&conn, "order-service", "default", "order-1", LeaseConfig::default()).await?;
    /// let mut roles = election.roles();
    /// roles.changed().await.ok();
    /// println!("now {:?}", *roles.borrow());
    /// election.resign().await;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`ElectionError`]: invalid names or timing (before any I/O), or the
    /// bucket cannot be created.
    pub async fn start(
        conn: &Connection,
        service: &str,
        group: &str,
        instance_id: &str,
        config: LeaseConfig,
    ) -> Result<Election, ElectionError> {
        names::validate_service_name(service)?;
        names::validate_group_name(group)?;
        names::validate_instance_id(instance_id)?;
        config.validate()?;
        let store = ensure_election_bucket(conn.jetstream(), conn.config().nats.replicas).await?;
        let key = subjects::election_key(service, group);
        let (role, _) = watch::channel(Role::Standby { leader: None });
        let shared = Arc::new(Shared {
            role,
            serve_until: Mutex::new(None),
            epoch: AtomicU64::new(0),
            renewals_paused: AtomicBool::new(false),
            stepping_down: AtomicBool::new(false),
            lapsed: AtomicBool::new(false),
        });
        let cancel = CancellationToken::new();
        let gate = Arc::new(HealthGate::new(conn.clone(), service, group, instance_id));
        let campaign = Campaign {
            gate: gate.clone(),
            store,
            conn: conn.clone(),
            key: key.clone(),
            me: instance_id.to_owned(),
            config,
            shared: shared.clone(),
            cancel: cancel.clone(),
        };
        // The campaign's lines are those of the service that starts it.
        let task = tokio::spawn(crate::telemetry::log_layer::inherit(
            campaign
                .run()
                .instrument(info_span!("election", key = %key, instance = %instance_id)),
        ));
        Ok(Election {
            shared,
            gate,
            key,
            config,
            cancel,
            task: Some(task),
        })
    }

    /// The election key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease timing it campaigns with.
    pub fn lease_config(&self) -> LeaseConfig {
        self.config
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.shared.role.borrow().clone()
    }

    /// Role changes, as a watch channel.
    pub fn roles(&self) -> watch::Receiver<Role> {
        self.shared.role.subscribe()
    }

    /// A cloneable view for the request path.
    pub fn leadership(&self) -> Leadership {
        Leadership(self.shared.clone())
    }

    /// Stops or resumes lease renewals, to simulate a paused leader (a long
    /// GC pause, a frozen VM) in tests and chaos drills. A paused leader stops
    /// serving when its lease runs out and a standby takes over.
    pub fn pause_renewals(&self, paused: bool) {
        self.shared.renewals_paused.store(paused, Ordering::SeqCst);
    }

    /// Takes no new request from now on ([`Leadership::admitting_epoch`]),
    /// while those admitted finish under the lease, which renewals keep
    /// valid: what a graceful stop does before it [resigns](Self::resign),
    /// so that a call a leader took is answered by it as the leader rather
    /// than by a deposed one.
    pub(crate) fn step_down(&self) {
        self.shared.stepping_down.store(true, Ordering::Release);
    }

    /// Tells the campaign whether this instance is healthy (default: yes).
    /// An unhealthy leader hands over to a healthy standby when the registry
    /// shows one, and keeps leading (degraded) when none is; an unhealthy
    /// standby lets healthy ones take over first. See
    /// [`health`](super::health). A service started with
    /// [`single_active`](crate::rpc::ServiceBuilder::single_active) calls it
    /// from its health check and the operator's drills.
    ///
    /// ```no_run
    /// # fn demo(election: &aegis_sdk::election::Election) {
    /// election.set_healthy(false); // e.g. the database is unreachable
    /// # }
    /// ```
    pub fn set_healthy(&self, healthy: bool) {
        self.gate.set_healthy(healthy);
    }

    /// Whether this instance was last told it is healthy.
    pub fn is_healthy(&self) -> bool {
        self.gate.is_healthy()
    }

    /// The gate, for the service's health task.
    pub(crate) fn health_gate(&self) -> Arc<HealthGate> {
        self.gate.clone()
    }

    /// Stops serving and campaigning; a leader deletes the key so a standby
    /// takes over at once.
    ///
    /// Bounded: a campaign busy with a KV request when told to stop (a
    /// takeover attempt while NATS is unreachable) is abandoned after
    /// two seconds; a key it may still have written
    /// then lapses with its lease.
    pub async fn resign(mut self) {
        self.cancel.cancel();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(RESIGN_TIMEOUT * 2, &mut task)
                .await
                .is_err()
        {
            warn!("the election did not stop in time; abandoning it (any lease it holds lapses)");
            task.abort();
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        *self
            .shared
            .serve_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        // Abort rather than cancel: a cancelled campaign resigns (deletes the
        // key), and dropping must not pass for a graceful stop. After
        // `resign` the task is already gone.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// How long a resignation waits for the election key's delete.
const RESIGN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);
/// The pauses between a resignation's attempts while the election store
/// takes no writes: short, as a stream's leader change takes milliseconds.
const RESIGN_PAUSE_FIRST: std::time::Duration = std::time::Duration::from_millis(5);
const RESIGN_PAUSE_MAX: std::time::Duration = std::time::Duration::from_millis(100);

struct Campaign {
    gate: Arc<HealthGate>,
    store: kv::Store,
    /// The standby's watch runs on it; whether it is up decides riding
    /// out (an unreachable store only, not our own connection down).
    conn: Connection,
    key: String,
    me: String,
    config: LeaseConfig,
    shared: Arc<Shared>,
    cancel: CancellationToken,
}

impl Campaign {
    async fn run(self) {
        while !self.cancel.is_cancelled() {
            match self.follow().await {
                Some((revision, sent_at)) => self.lead(revision, sent_at).await,
                None => break,
            }
        }
        self.step_down(None);
        debug!("election task stopped");
    }

    fn record(&self, epoch: u64) -> Bytes {
        let record = LeaderRecord {
            instance_id: self.me.clone(),
            epoch,
            lease_ms: u64::try_from(self.config.lease.as_millis()).unwrap_or(u64::MAX),
            renewed_at: rfc3339::format_utc(&chrono::Utc::now()),
        };
        serde_json::to_vec(&record).unwrap_or_default().into()
    }

    fn step_down(&self, leader: Option<String>) {
        // The term is over (lost, given up, stopped): no lapse of it goes
        // on. Before the role changes: its watchers read it.
        self.shared.lapsed.store(false, Ordering::Release);
        self.stand_by(leader);
    }

    /// Serves nothing as `leader`'s standby (none: not known), keeping
    /// [`Shared::lapsed`] as it is.
    fn stand_by(&self, leader: Option<String>) {
        *self
            .shared
            .serve_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = None;
        self.shared.role.send_if_modified(|r| {
            let next = Role::Standby { leader };
            if *r != next {
                *r = next;
                true
            } else {
                false
            }
        });
    }

    /// Standby: returns `(revision, sent_at)` of the winning write, or `None`
    /// when cancelled.
    ///
    /// The key's entries come on a watch polled beside the takeover
    /// deadline, never ahead of it: a watch that cannot open (its node
    /// died while JetStream elects a meta leader, 4 to 9 s) must not hold
    /// up a takeover the elections stream would take. The key is read
    /// once first (bounded by the read's own timeout), and again after
    /// an attempt that lost: the watch may not have told what changed.
    async fn follow(&self) -> Option<(u64, Instant)> {
        let mut watch = std::pin::pin!(key_entries(
            self.conn.clone(),
            self.store.clone(),
            format!("{}{}", self.store.prefix, self.key),
        ));
        let mut last_revision: Option<u64> = None;
        let mut deadline = tokio::time::Instant::now();
        // Health-aware leadership (health.rs): set when an unhealthy
        // standby has already waited one lease for a healthy one.
        let mut deferred = false;
        // The key's revision when this standby first saw it: a record at
        // or below it that names this instance was written before this
        // campaign followed the key (by a process before this one with
        // the same id), so it cannot be this campaign's own write.
        let mut before_me: Option<u64> = None;
        let mut attempted = false;
        let first = tokio::select! {
            () = self.cancel.cancelled() => return None,
            read = self.latest() => read,
        };
        match first {
            Ok(Some(l)) if l.put => {
                last_revision = Some(l.revision);
                before_me = Some(l.revision);
                self.defer_to(&l.value, l.revision, before_me);
                deadline = self.config.takeover_at(Instant::now()).into();
            }
            Ok(latest) => {
                last_revision = latest.map(|l| l.revision);
                before_me = Some(last_revision.unwrap_or(0));
            }
            Err(e) => debug!(error = %e, "cannot read the election key yet"),
        }
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = sleep_until(deadline) => {
                    if self.gate.defers_takeover(&mut deferred) {
                        deadline = self.config.takeover_at(Instant::now()).into();
                        continue;
                    }
                    attempted = true;
                    match self.try_take(last_revision).await {
                        Take::Won(revision, sent_at) => return Some((revision, sent_at)),
                        // Renewed, or taken, since the revision this
                        // standby last saw. Read again rather than
                        // wait for the watch to tell: a watch that
                        // lost its consumer tells nothing until it is
                        // open again, and until then every attempt
                        // would fail on the same old revision.
                        Take::Lost => match self.latest().await {
                            Ok(Some(l)) if l.put => {
                                let tried = last_revision == Some(l.revision);
                                if !tried {
                                    // Renewed: as when the watch shows it.
                                    deferred = false;
                                }
                                last_revision = Some(l.revision);
                                if self.defer_to(&l.value, l.revision, before_me) {
                                    // Refused at the revision just read
                                    // (a replica that lags answered):
                                    // again after a renewal interval.
                                    deadline = tokio::time::Instant::now();
                                    if tried {
                                        deadline += self.config.renew_interval;
                                    }
                                    continue;
                                }
                            }
                            Ok(latest) => {
                                // Free since: campaign at once. Free at
                                // the revision just tried, the attempt
                                // was answered by a replica that lags:
                                // again after a renewal interval.
                                let free_at = latest.map(|l| l.revision);
                                deadline = tokio::time::Instant::now();
                                if free_at == last_revision {
                                    deadline += self.config.renew_interval;
                                }
                                last_revision = free_at;
                                continue;
                            }
                            Err(e) => debug!(error = %e, "cannot read the election key after a lost takeover"),
                        },
                        // Only a leader that rides out outages serves
                        // through one; others stop at their lease, and
                        // their standbys need not wait longer.
                        Take::Unanswered if !self.config.ride_out.is_zero() => {
                            let (latest, seen_at) = self.await_store().await?;
                            match latest {
                                Some(l) if l.put => {
                                    last_revision = Some(l.revision);
                                    // Even a record of this campaign's own
                                    // takeover is waited out here: the
                                    // leader it took over from may be
                                    // riding out the outage, serving until
                                    // its next renewal fails.
                                    self.defer_to(&l.value, l.revision, before_me);
                                    deadline = self.config.takeover_at(seen_at).into();
                                }
                                // Deleted, purged or never written: free.
                                other => {
                                    last_revision = other.map(|l| l.revision);
                                    deadline = tokio::time::Instant::now();
                                }
                            }
                            continue;
                        }
                        Take::Unanswered => {}
                    }
                    deadline = self.config.takeover_at(Instant::now()).into();
                }
                Some(e) = watch.next() => {
                    // A watch opened again starts with the key's
                    // latest entry, which may be one already seen: a
                    // record seen again is not a renewal.
                    if last_revision.is_some_and(|seen| e.revision <= seen) {
                        continue;
                    }
                    last_revision = Some(e.revision);
                    if before_me.is_none() && !attempted {
                        // The first read failed: the watch tells first.
                        before_me = Some(e.revision);
                    }
                    if e.operation == Operation::Put {
                        deferred = false;
                        deadline = if self.defer_to(&e.value, e.revision, before_me) {
                            tokio::time::Instant::now()
                        } else {
                            self.config.takeover_at(Instant::now()).into()
                        };
                    } else {
                        // Resigned (or purged): campaign now.
                        deadline = tokio::time::Instant::now();
                    }
                }
            }
        }
    }

    /// Standby: follows the record `value` seen at `revision` in the key,
    /// and says whether to campaign at once.
    ///
    /// A record naming another instance is its leader's. One naming this
    /// instance is never deferred to (a standby that names itself as
    /// leader renews nothing, while callers route to it and get
    /// NOT_ACTIVE). A takeover record (epoch 0: a leader's renewals carry
    /// its epoch) written after `before_me` (or with no such bound) may be
    /// this campaign's own takeover whose acknowledgement was lost: the
    /// standby takes the key at once by compare-and-set on that revision,
    /// a fresh write whose lease counts from when it is sent. Any other
    /// record naming it is another campaign's under the same id (a
    /// predecessor, or a live duplicate renewing its lead) and is waited
    /// out like any other leader's: taking a renewal for its own would
    /// have two lead at once.
    fn defer_to(&self, value: &[u8], revision: u64, before_me: Option<u64>) -> bool {
        match serde_json::from_slice::<LeaderRecord>(value).ok() {
            Some(record) if record.instance_id == self.me => {
                self.step_down(None);
                let mine = record.epoch == 0 && before_me.is_none_or(|before| revision > before);
                if mine {
                    debug!(
                        revision,
                        "the election key names this instance (an unacknowledged write of its own); taking it"
                    );
                }
                mine
            }
            other => {
                self.step_down(other.map(|r| r.instance_id));
                false
            }
        }
    }

    /// Tries to become leader: create when the key is free, CAS on the last
    /// revision seen when the lease lapsed.
    async fn try_take(&self, last_revision: Option<u64>) -> Take {
        let sent_at = Instant::now();
        let result = match self.store.create(&self.key, self.record(0)).await {
            Ok(rev) => Ok(rev),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => match last_revision {
                Some(rev) => self
                    .store
                    .update(&self.key, self.record(0), rev)
                    .await
                    .map_err(|e| e.kind() != UpdateErrorKind::WrongLastRevision),
                None => Err(false),
            },
            Err(_) => Err(true),
        };
        match result {
            Ok(revision) => Take::Won(revision, sent_at),
            Err(false) => Take::Lost,
            Err(true) => {
                debug!("takeover attempt failed: the election store did not answer");
                Take::Unanswered
            }
        }
    }

    /// Leader: renew until the lease is lost or the task is cancelled.
    async fn lead(&self, epoch: u64, sent_at: Instant) {
        self.shared.lapsed.store(false, Ordering::Release);
        self.shared.epoch.store(epoch, Ordering::Release);
        *self
            .shared
            .serve_until
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(self.config.serve_until(sent_at));
        self.shared.role.send_replace(Role::Leader { epoch });
        info!(epoch, "became ACTIVE leader");
        let mut last_revision = epoch;
        // When the oldest renewal not confirmed since was sent.
        let mut unconfirmed_since: Option<Instant> = None;
        // Until when the last confirmed renewal lets this leader serve.
        let mut confirmed_until = self.config.serve_until(sent_at);
        let mut riding_out = false;
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => {
                    self.step_down(None);
                    // Bounded: without a server the delete would wait out
                    // the client's request timeout, and a stop must not.
                    match tokio::time::timeout(RESIGN_TIMEOUT, self.delete_key(last_revision)).await {
                        Ok(Ok(())) => info!(epoch, "resigned"),
                        Ok(Err(e)) => warn!(error = %crate::startup::Causes(&e), "could not resign: the election key was not deleted; a standby takes over when the lease lapses"),
                        Err(_) => warn!("could not resign within {RESIGN_TIMEOUT:?} (NATS unreachable, or the election store without a leader?); a standby takes over when the lease lapses"),
                    }
                    return;
                }
                () = sleep_until(next) => {}
            }
            next += self.config.renew_interval;
            // Health-aware leadership (health.rs): hand over to a healthy standby.
            if let Some(standbys) = self
                .gate
                .step_aside_to(self.config.renew_interval / 2)
                .await
            {
                self.step_aside(epoch, last_revision, &standbys).await;
                return;
            }
            if self.shared.renewals_paused.load(Ordering::SeqCst) {
                if self.shared.serving_epoch().is_none() {
                    warn!(
                        epoch,
                        "lease ran out while renewals were paused; stepping down"
                    );
                    self.step_down(None);
                    return;
                }
                continue;
            }
            let sent = Instant::now();
            let renewal = tokio::time::timeout(
                self.config.renew_interval,
                self.store
                    .update(&self.key, self.record(epoch), last_revision),
            )
            .await;
            match renewal {
                Ok(Ok(rev)) => {
                    last_revision = rev;
                    confirmed_until = self.config.serve_until(sent);
                    *self
                        .shared
                        .serve_until
                        .lock()
                        .unwrap_or_else(|e| e.into_inner()) = Some(confirmed_until);
                    if std::mem::take(&mut riding_out) {
                        info!(epoch, "the election store answers again; lease renewed");
                    }
                }
                other => {
                    // Not confirmed: it may still have committed (a timed-out
                    // renewal), leaving `last_revision` stale, and a CAS on a
                    // stale revision fails as if the lease were lost. The key
                    // itself says who holds it.
                    let why = match other {
                        Ok(Err(e)) => renewal_failure(e),
                        _ => "timed out".to_owned(),
                    };
                    unconfirmed_since.get_or_insert(sent);
                    match self.holder(epoch).await {
                        Ok(Holder::Me(revision)) => {
                            if revision != last_revision {
                                // A renewal sent no earlier than
                                // `unconfirmed_since` committed; standbys
                                // count the lease from when they saw it.
                                let since = unconfirmed_since.unwrap_or(sent);
                                *self
                                    .shared
                                    .serve_until
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner()) =
                                    Some(self.config.serve_until(since));
                                last_revision = revision;
                                confirmed_until = self.config.serve_until(since);
                                unconfirmed_since = None;
                                debug!(epoch, revision, error = %why, "a renewal committed unconfirmed; still leading");
                                self.serve_again(epoch);
                                continue;
                            }
                        }
                        Ok(Holder::Other) => {
                            warn!(epoch, "lost the lease to another instance; now STANDBY");
                            self.step_down(None);
                            return;
                        }
                        Err(e) => {
                            debug!(epoch, error = %e, "could not re-read the election key");
                            // Neither the write nor the read reached the
                            // store while our own connection is up: the
                            // stream has no leader (a NATS node died), and
                            // nobody can take the key from us until it has
                            // one again. A fenced service keeps serving.
                            if self.ride_out(confirmed_until) {
                                if !std::mem::replace(&mut riding_out, true) {
                                    warn!(epoch, error = %why, ride_out = ?self.config.ride_out,
                                        "the election store does not answer; still serving, on the store's fence");
                                }
                                continue;
                            }
                        }
                    }
                    if self.shared.serving_epoch().is_none()
                        && !self.shared.lapsed.load(Ordering::Acquire)
                    {
                        // Stop serving, as the lease says, but keep the key:
                        // nobody else took it (the key said so, or did not
                        // answer), and a renewal that commits by
                        // compare-and-set on our revision proves nobody
                        // did since. Giving it up to wait out our own
                        // record would hand the group to whichever
                        // takeover lands first a lease later: a failover
                        // nobody caused, seen when a sticky group's
                        // instances start together on a loaded machine.
                        warn!(epoch, error = %why, "could not renew the lease in time; stopped serving, still renewing");
                        // Before the role changes: its watchers read it.
                        self.shared.lapsed.store(true, Ordering::Release);
                        self.stand_by(None);
                        continue;
                    }
                    debug!(epoch, error = %why, "lease renewal failed; retrying");
                    continue;
                }
            }
            unconfirmed_since = None;
            self.serve_again(epoch);
        }
    }

    /// Leader whose lease ran out unrenewed ([`Shared::lapsed`]): once a
    /// renewal that committed lets it serve again, it leads again at the
    /// same epoch — nobody else held the key meanwhile, or the renewal's
    /// compare-and-set would have failed.
    fn serve_again(&self, epoch: u64) {
        if self.shared.lapsed.load(Ordering::Acquire) && self.shared.serving_epoch().is_some() {
            self.shared.lapsed.store(false, Ordering::Release);
            info!(epoch, "lease renewed after it ran out; serving again");
            self.shared.role.send_replace(Role::Leader { epoch });
        }
    }

    /// Deletes the election key at `revision` (a resignation), sending the
    /// delete again while the store takes no writes for now: a stream
    /// changing its leader (a NATS node restarted in lame duck mode) takes
    /// none for some milliseconds, and a resignation refused then would
    /// leave the standby waiting for the lease to lapse
    /// (`tests/election_node_loss.rs`). Sent again within
    /// [`RESIGN_TIMEOUT`]; the caller bounds each attempt too.
    async fn delete_key(&self, revision: u64) -> Result<(), kv::DeleteError> {
        let until = tokio::time::Instant::now() + RESIGN_TIMEOUT;
        let again = |e: &kv::DeleteError| {
            let again = crate::streams::kv_write_not_taken_yet(e);
            if again {
                debug!(error = %e, "the election store took no resignation yet; sending it again");
            }
            again
        };
        crate::streams::write_again_while(
            until,
            (RESIGN_PAUSE_FIRST, RESIGN_PAUSE_MAX),
            again,
            || self.store.delete_expect_revision(&self.key, Some(revision)),
        )
        .await
    }

    /// Health-aware leadership: an unhealthy leader stops serving, then
    /// deletes the key (at the revision it last wrote) so the healthy
    /// standby seen in the registry takes over within milliseconds.
    /// `standbys` are the healthy standbys it saw; the first of them to
    /// take the key leads, so the log names them all and picks none.
    async fn step_aside(&self, epoch: u64, last_revision: u64, standbys: &[String]) {
        self.step_down(None);
        match tokio::time::timeout(RESIGN_TIMEOUT, self.delete_key(last_revision)).await {
            Ok(Ok(())) => info!(
                epoch,
                healthy_standbys = %standbys.join(", "),
                "unhealthy: stepped aside; the first healthy standby to take the election key leads"
            ),
            Ok(Err(e)) => {
                warn!(error = %crate::startup::Causes(&e), "unhealthy: stopped serving but could not delete the election key; a standby takes over when the lease lapses")
            }
            Err(_) => warn!(
                "unhealthy: stopped serving but could not delete the election key within {RESIGN_TIMEOUT:?}; a standby takes over when the lease lapses"
            ),
        }
    }

    /// Extends serving by what a renewal would give, within `ride_out`
    /// past `confirmed_until`, when riding out is on, this process's own
    /// connection is up and it is still serving; whether it did.
    ///
    /// Only a leader still serving is extended: one whose lease already
    /// lapsed — a process resumed after SIGSTOP, a VM thawed — may have a
    /// successor by now, and serves again on this epoch only after a
    /// renewal commits (a compare-and-set no successor's write let pass).
    fn ride_out(&self, confirmed_until: Instant) -> bool {
        let limit = confirmed_until + self.config.ride_out;
        let now = Instant::now();
        if self.config.ride_out.is_zero()
            || now >= limit
            || self.conn.client().connection_state() != async_nats::connection::State::Connected
        {
            return false;
        }
        let mut serve_until = self
            .shared
            .serve_until
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *serve_until {
            Some(current) if now < current => {
                let until = (now + self.config.lease - self.config.safety_margin).min(limit);
                *serve_until = Some(until.max(current));
                true
            }
            _ => false,
        }
    }

    /// The election key's latest record, read from the stream's leader (a
    /// direct get may be answered by a replica that lags, or while the
    /// stream has no leader), bounded by the renewal interval: its revision,
    /// whether it is a put, and its value; `None` when the key never held
    /// anything.
    async fn latest(&self) -> Result<Option<Latest>, String> {
        let subject = format!("{}{}", self.store.prefix, self.key);
        let read = tokio::time::timeout(
            self.config.renew_interval,
            self.store.stream.get_last_raw_message_by_subject(&subject),
        )
        .await
        .map_err(|_| "timed out".to_owned())?;
        match read {
            Ok(message) => Ok(Some(Latest {
                revision: message.sequence,
                put: !message
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| matches!(op.as_str(), "DEL" | "PURGE")),
                value: message.payload,
            })),
            Err(e)
                if e.kind()
                    == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
            {
                Ok(None)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Who holds the election key now, by [`latest`](Self::latest).
    async fn holder(&self, epoch: u64) -> Result<Holder, String> {
        let mine = self.latest().await?.filter(|l| {
            l.put
                && serde_json::from_slice::<LeaderRecord>(&l.value).is_ok_and(|r| {
                    r.instance_id == self.me && (r.epoch == epoch || l.revision == epoch)
                })
        });
        Ok(match mine {
            Some(l) => Holder::Me(l.revision),
            None => Holder::Other,
        })
    }

    /// Standby, after a takeover the store did not answer: waits until the
    /// stream's leader answers a read, and returns what it read and when.
    ///
    /// A leader that rides out the outage (`LeaseConfig::ride_out`) keeps
    /// serving through it, and could not renew while the store was down; a
    /// takeover counted from before the outage would win the first write
    /// after it and serve beside that leader until its next renewal
    /// failed. Counting the lease from when the store answers again gives
    /// the leader a whole lease to renew first.
    async fn await_store(&self) -> Option<(Option<Latest>, Instant)> {
        loop {
            let asked = tokio::time::Instant::now();
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                read = self.latest() => match read {
                    Ok(latest) => return Some((latest, Instant::now())),
                    Err(e) => debug!(error = %e, "the election store does not answer yet"),
                },
            }
            tokio::select! {
                () = self.cancel.cancelled() => return None,
                () = sleep_until(asked + self.config.renew_interval) => {}
            }
        }
    }
}

/// How a takeover attempt ended.
enum Take {
    /// This instance leads at this revision, written at this time.
    Won(u64, Instant),
    /// Someone else holds the key (or renewed it since it was seen).
    Lost,
    /// The store did not answer (or answered with an error).
    Unanswered,
}

/// The election key's latest record, as [`Campaign::latest`] read it.
struct Latest {
    revision: u64,
    put: bool,
    value: Bytes,
}

/// Who holds the election key, as [`Campaign::holder`] read it.
enum Holder {
    /// This instance at its epoch, at this revision.
    Me(u64),
    /// Someone else, or nobody (deleted, purged, gone).
    Other,
}

/// Every entry of the key `subject` names in `store`, on a feed opened
/// again whenever it breaks (it ends as soon as its consumer may be gone:
/// async-nats's watch went silent for some ten seconds when its node died,
/// `tests/election_crash.rs`). Each opening starts with the key's latest
/// entry, so what changed during a break is not missed. Never ends.
///
/// The loop of [`crate::kv::reopening`], with its pauses, as a stream for
/// the standby's `select!` ([`crate::kv::reopened`]), and with another
/// reset: `reopening` takes the shortest pause again whenever an item
/// comes, and every opening here hands one over (the key's latest entry; a
/// renewal every quarter lease), so a watch that breaks at once would be
/// opened again every 50 ms. Here only a watch that lasted
/// [`WATCH_STEADY`] resets it.
fn key_entries(
    conn: Connection,
    store: kv::Store,
    subject: String,
) -> impl futures::Stream<Item = kv::Entry> {
    crate::kv::reopened(
        "election watch",
        (),
        None::<watch::Receiver<()>>,
        crate::kv::Reset::Lasted(WATCH_STEADY),
        move |_| {
            let (conn, store, subject) = (conn.clone(), store.clone(), subject.clone());
            async move {
                let entries =
                    crate::kv::entries(&conn, &store, subject, DeliverPolicy::LastPerSubject).await;
                Ok::<_, std::convert::Infallible>(Box::pin(entries))
            }
        },
        |(), entry| entry,
    )
}

/// How long a watch of the election key must have stayed open for the
/// pause before the next opening to start again from the shortest
/// (opening it waits on its own while JetStream cannot make consumers).
const WATCH_STEADY: Duration = Duration::from_secs(10);

/// Why a renewal of the lease failed, for the log: one nobody took (the
/// elections stream has no leader this moment, as while a NATS node is
/// lost) says so, as the SDK's other writes do
/// ([`NoStreamTookIt`](crate::streams::NoStreamTookIt)), not as async-nats
/// words it ("failed getting entry: no stream found for given subject").
fn renewal_failure(e: kv::UpdateError) -> String {
    crate::streams::NoStreamTookIt::explained(e.into()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leading_until(until: Option<Instant>, epoch: u64) -> Leadership {
        let (role, _) = watch::channel(Role::Leader { epoch });
        Leadership(Arc::new(Shared {
            role,
            serve_until: Mutex::new(until),
            epoch: AtomicU64::new(epoch),
            renewals_paused: AtomicBool::new(false),
            stepping_down: AtomicBool::new(false),
            lapsed: AtomicBool::new(false),
        }))
    }

    #[test]
    fn holds_needs_the_epoch_and_the_margin() {
        let now = Instant::now();
        let leader = leading_until(Some(now + Duration::from_secs(10)), 7);
        assert!(leader.holds(7, Duration::from_secs(1)));
        assert!(!leader.holds(6, Duration::from_secs(1)), "another epoch");
        assert!(!leader.holds(7, Duration::from_secs(11)), "not that long");
        let lapsed = leading_until(Some(now), 7);
        assert!(!lapsed.holds(7, Duration::ZERO));
        assert!(!leading_until(None, 7).holds(7, Duration::ZERO));
    }

    /// A renewal nobody took (the elections stream without a leader while
    /// a NATS node is lost) reads as async-nats words it, "failed getting
    /// entry: no stream found for given subject", which sends an operator
    /// looking for a deleted bucket; said as the SDK says such a write.
    #[test]
    fn a_renewal_nobody_took_says_the_store_may_have_no_leader() {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};

        let nobody = kv::UpdateError::with_source(
            UpdateErrorKind::Other,
            PublishError::new(PublishErrorKind::StreamNotFound),
        );
        let said = renewal_failure(nobody);
        assert!(said.contains("no leader right now"), "{said}");
        assert!(!said.contains("failed getting entry"), "{said}");
        let timed_out = kv::UpdateError::new(UpdateErrorKind::TimedOut);
        assert_eq!(renewal_failure(timed_out), "timed out");
    }
}
