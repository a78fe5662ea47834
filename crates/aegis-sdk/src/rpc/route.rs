//! The one retry loop behind [`RpcClient::call_with`] and
//! [`RpcClient::call_active`]: a [`Pick`] says which instance to try next
//! (or why there is none), [`classify`] says what a failed attempt means,
//! and [`RpcClient::attempts`] sends until a reply, a final error or the
//! deadline.
//!
//! - [`ByDiscovery`] picks from this process's registry view by the call's
//!   strategy; an instance that had no responder is evicted from the view,
//!   one that refused or timed out is not tried again by this call, and
//!   under [`Strategy::LeastLatency`] each attempt feeds the instance's
//!   call statistics.
//! - [`ToLeader`] picks the holder of the group's election key; an attempt
//!   that failed on a holder waits for the key to change (or a short
//!   growing back-off) before trying it again, and a reply stamped with an
//!   epoch older than the newest the key has shown came from a deposed
//!   leader ([`RpcError::DeposedLeader`]). An idempotent call in flight on
//!   a holder the key no longer names is sent to the new one at once,
//!   rather than after its attempt timeout (a leader killed or frozen
//!   mid-call). While it finds no leader it asks the registry view, once,
//!   whether the call can succeed at all, and ends it at once when not:
//!   the service's instances are in no sticky group, or the leader found
//!   without a responder does not list the method. When none of them is
//!   in this group (a wrong group, or one whose only instance restarts)
//!   the call still waits for a leader, and says so if its deadline
//!   passes. Records only end a call early; they never route one.
//! - [`unlisted_method`] asks the registry view, for a
//!   [`RpcClient::call_balanced`] that had no responder, whether it is a
//!   method no registered instance lists (the call has no retry loop).
//!
//! What a failure means is the same for both ([`classify`]): a call that
//! never ran (no responder, a standby's refusal) is tried elsewhere; an
//! attempt that timed out, a reply from a deposed leader, or a NOT_ACTIVE
//! that a handler returned itself (after whatever work it did), only when
//! the call is idempotent (it may have run); our own connection dropping, again when
//! idempotent; an instance's SERVICE_UNAVAILABLE ("retry": its store or a
//! dependency is briefly out), when idempotent, on another instance or,
//! for want of one, on the same after a pause that grows from
//! [`UNAVAILABLE_PAUSE_FIRST`] to [`UNAVAILABLE_PAUSE_MAX`]; anything else
//! ends the call.
//!
//! [`RpcClient::call_with`]: super::RpcClient::call_with
//! [`RpcClient::call_active`]: super::RpcClient::call_active
//! [`RpcClient::call_balanced`]: super::RpcClient::call_balanced
//! [`RpcClient::attempts`]: super::RpcClient::attempts

use std::{sync::Arc, time::Duration};

use aegis_contracts::{subjects, wire::ErrorCode};
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::{sync::watch, time::Instant};

use super::{
    DeposedReply, RpcError,
    client::{CallOptions, Reply, decode_reply},
    endpoint::H_REFUSED,
    headers::ReplyHeaders,
};
use crate::{
    Connection,
    discovery::{Strategy, index::DiscoveryIndex, stats::CallStats, strategy::Member},
    election::view::{ElectionView, Holder},
    registry::cache::RegistryCache,
};

/// The longest a call for an unknown service waits for the registry view to
/// confirm it has every registration acknowledged before the call.
const CATCH_UP_LIMIT: Duration = Duration::from_millis(500);

/// The first pause before a call tries again an instance it evicted, for
/// want of another; doubled per try up to [`PROBE_BACKOFF_MAX`].
const PROBE_BACKOFF_START: Duration = Duration::from_millis(5);
const PROBE_BACKOFF_MAX: Duration = Duration::from_millis(250);

/// The first pause before an idempotent call asks again an instance that
/// answered SERVICE_UNAVAILABLE, for want of another; doubled per answer
/// up to [`UNAVAILABLE_PAUSE_MAX`]. Long enough that callers do not hammer
/// a service whose store is out (a NATS node lost: its stream waits 4 to
/// 9 s, nats-server's election timeout, before it elects a new leader),
/// short enough to be served soon after.
pub(super) const UNAVAILABLE_PAUSE_FIRST: Duration = Duration::from_millis(100);
pub(super) const UNAVAILABLE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Everything one call carries through its attempts.
pub(super) struct Call<'a> {
    pub(super) service: &'a str,
    pub(super) method: &'a str,
    /// Encoded once; every attempt sends the same bytes.
    pub(super) payload: Bytes,
    pub(super) headers: Option<HeaderMap>,
    pub(super) opts: &'a CallOptions,
    /// Whether the reply names the instance that served it
    /// ([`Reply::instance_id`]); a call that returns only the value does
    /// not pay for the name.
    pub(super) named: bool,
    /// The whole call's timeout, the instant it began (the registry view
    /// notes its lookup at it rather than read the clock again) and the
    /// instant it runs out.
    pub(super) timeout: Duration,
    pub(super) started: Instant,
    pub(super) deadline: Instant,
}

impl Call<'_> {
    /// The error of a call whose deadline passed, or that gave up after an
    /// attempt timed out with no instance left to try: it states the time
    /// waited, never more.
    pub(super) fn timed_out(&self) -> RpcError {
        RpcError::Timeout {
            subject: subjects::rpc_subject(self.service, self.method),
            timeout: self.started.elapsed().min(self.timeout),
        }
    }

    /// The error of a call whose registry view did not hold its service
    /// before the deadline (the view starting, or adding the service to
    /// its watch): nothing was sent, so not a timeout naming the method.
    pub(super) fn registry_late(&self) -> RpcError {
        RpcError::Discovery(crate::registry::RegistryError::NotSynced(self.timeout).into())
    }

    /// The deadline of one attempt: an idempotent call may move on to
    /// another instance after a share of its timeout; any other call waits
    /// for its one attempt until the overall deadline.
    fn attempt_timeout(&self, remaining: Duration) -> Duration {
        if self.opts.idempotent {
            self.opts
                .attempt_timeout
                .unwrap_or(self.timeout / 3)
                .min(remaining)
        } else {
            remaining
        }
    }
}

/// How an attempt failed, for the picker to remember.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    /// Nobody listened on its subject: it died or is stopping.
    NoResponder,
    /// It refused without running the call (a standby's NOT_ACTIVE), or,
    /// for an idempotent call, its handler answered NOT_ACTIVE.
    Refused,
    /// No reply within the attempt's deadline (it may have run).
    TimedOut(Duration),
    /// It ran the call as a leader already deposed.
    Deposed,
    /// It answered SERVICE_UNAVAILABLE: it cannot serve for now (its store
    /// or a dependency is out) and said to retry.
    Unavailable,
}

/// What to do after a failed attempt.
enum Next {
    /// Try again (the picker was told what failed, if an instance did).
    Retry(RpcError),
    /// End the call with this error.
    Fail(RpcError),
}

/// Chooses the instance of each attempt and learns from how it went.
pub(super) trait Pick {
    /// The instance an attempt goes to.
    type Target;

    /// The next instance to try, waiting for one if the picker can (a new
    /// leader). `Err` is the call's error when no attempt failed before
    /// (`failed` says whether one did; the loop then returns that failure).
    async fn pick(&mut self, call: &Call<'_>, failed: bool) -> Result<Self::Target, RpcError>;
    /// The instance's id (its subject is `rpc.{service}.{id}.{method}`).
    fn id<'t>(&self, target: &'t Self::Target) -> &'t str;
    /// What counts the calls in flight to `target`, if the picker keeps
    /// such counts: an attempt is counted while it is in flight.
    fn stats<'t>(&self, target: &'t Self::Target) -> Option<&'t CallStats>;
    /// Screens a reply (its headers read once, for this and the decoding)
    /// before it is decoded; `Some` turns it into an error.
    fn screen(
        &self,
        call: &Call<'_>,
        target: &Self::Target,
        headers: &ReplyHeaders<'_>,
        reply: &Message,
    ) -> Option<RpcError>;
    /// The instance answered (a value or its own error) to the attempt
    /// sent at `started` (a picker that keeps latencies reads the clock).
    fn answered(&mut self, target: &Self::Target, started: Instant);
    /// The attempt on `target` failed as `how`.
    fn failed(&mut self, call: &Call<'_>, target: Self::Target, how: Failure);
    /// Ends once an attempt on `target` is no longer worth waiting for,
    /// because another instance now serves in its place; never, unless the
    /// picker knows better. Only an idempotent call stops waiting for it.
    async fn superseded(&self, _call: &Call<'_>, _target: &Self::Target) {
        std::future::pending::<()>().await;
    }
    /// Whether `error`, from [`Pick::pick`] after an attempt failed, says
    /// more than that attempt's failure and so ends the call in its place
    /// (the method does not exist, rather than "no responder").
    fn decisive(&self, _error: &RpcError) -> bool {
        false
    }
}

/// What a failed attempt means for the call; `refused` says the reply
/// was a standby's refusal ([`H_REFUSED`]), not a handler's own error.
fn classify(call: &Call<'_>, error: RpcError, refused: bool) -> (Next, Option<Failure>) {
    let retry_allowed = call.opts.idempotent && Instant::now() < call.deadline;
    match error {
        // Never ran: retrying is safe for any call.
        e @ RpcError::NoResponders { .. } => (Next::Retry(e), Some(Failure::NoResponder)),
        e @ RpcError::Remote { .. } if refused && e.code() == ErrorCode::NotActive => {
            (Next::Retry(e), Some(Failure::Refused))
        }
        // A handler's own NOT_ACTIVE (a leader whose lease is nearly gone):
        // it may have done work first, so only a call that may run twice
        // goes on, and to the next leader like after a refusal.
        e @ RpcError::Remote { .. } if retry_allowed && e.code() == ErrorCode::NotActive => {
            (Next::Retry(e), Some(Failure::Refused))
        }
        RpcError::Timeout { timeout, .. } if retry_allowed => (
            Next::Retry(call.timed_out()),
            Some(Failure::TimedOut(timeout)),
        ),
        RpcError::Timeout { .. } => (Next::Fail(call.timed_out()), None),
        // Our own connection dropped; the instance is not to blame.
        e @ RpcError::ConnectionLost { .. } if retry_allowed => (Next::Retry(e), None),
        // It ran: only a call that may run twice goes on.
        e @ RpcError::DeposedLeader(_) if call.opts.idempotent => {
            (Next::Retry(e), Some(Failure::Deposed))
        }
        // It may have done part of the work before it found it could not
        // finish: again only a call that may run twice, and within its
        // deadline. The instance's own answer is the error if none serves.
        e @ RpcError::Remote { .. }
            if retry_allowed && e.code() == ErrorCode::ServiceUnavailable =>
        {
            (Next::Retry(e), Some(Failure::Unavailable))
        }
        e => (Next::Fail(e), None),
    }
}

impl super::RpcClient {
    /// Sends `call` to the instances `picker` chooses until one answers,
    /// a failure ends the call, or the deadline passes.
    pub(super) async fn attempts<P: Pick, Res: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        picker: &mut P,
    ) -> Result<Reply<Res>, RpcError> {
        let mut last_err: Option<RpcError> = None;
        loop {
            let target = match picker.pick(call, last_err.is_some()).await {
                Ok(target) => target,
                Err(e) if picker.decisive(&e) => return Err(e),
                Err(e) => return Err(last_err.unwrap_or(e)),
            };
            let started = Instant::now();
            if started >= call.deadline {
                return Err(last_err.unwrap_or_else(|| call.timed_out()));
            }
            let attempt = call.attempt_timeout(call.deadline - started);
            // Moved into the request; an error names it again.
            let subject =
                || subjects::rpc_instance_subject(call.service, picker.id(&target), call.method);
            let in_flight = picker.stats(&target).map(CallStats::start);
            // The send is made in each branch rather than before: a future
            // moved into `select!` would take its room in this one twice.
            // And it is an async block, not the request's own future: a
            // future made here and then moved into this one's state is
            // copied whole (send_message's is some 1,500 bytes), while one
            // made inside the block's first poll is built in place. Without
            // the block, callgrind counted some 340 more instructions of
            // `memcpy` a call.
            let send = || async {
                self.send_message(
                    Subject::from(subject()),
                    call.payload.clone(),
                    call.headers.clone(),
                    attempt,
                )
                .await
                .map_err(|no_reply| no_reply.into_error(subject()))
            };
            let sent = if call.opts.idempotent {
                // An idempotent call may run twice, so it stops waiting for
                // an instance another has replaced (a leader killed or
                // frozen mid-call) and goes on like after a timeout.
                tokio::select! {
                    sent = send() => sent,
                    () = picker.superseded(call, &target) => {
                        tracing::debug!(service = call.service, instance = picker.id(&target),
                            "another instance took over during the attempt; not waiting for it");
                        Err(RpcError::Timeout { subject: subject(), timeout: started.elapsed() })
                    }
                }
            } else {
                send().await
            };
            drop(in_flight);
            // Whether an error reply is a standby's refusal: looked up only
            // for an error, never on a successful reply's path.
            let mut refused = false;
            let reply = sent.and_then(|message| {
                let headers = ReplyHeaders::read(message.headers.as_ref());
                match picker.screen(call, &target, &headers, &message) {
                    Some(e) => Err(e),
                    None => {
                        let decoded = decode_reply::<Res>(
                            subject,
                            &headers,
                            &message.payload,
                            call.opts.encoding,
                        );
                        if decoded.is_err() {
                            refused = message
                                .headers
                                .as_ref()
                                .is_some_and(|h| h.get(H_REFUSED).is_some());
                        }
                        decoded
                    }
                }
            });
            let error = match reply {
                Ok(mut reply) => {
                    picker.answered(&target, started);
                    if call.named {
                        reply
                            .instance_id
                            .get_or_insert_with(|| picker.id(&target).to_owned());
                    }
                    return Ok(reply);
                }
                Err(e) => e,
            };
            let answered = matches!(error, RpcError::Remote { .. });
            match classify(call, error, refused) {
                (Next::Retry(e), how) => {
                    tracing::debug!(service = call.service, instance = picker.id(&target),
                        error = %crate::startup::Causes(&e), "attempt failed; trying again");
                    if let Some(how) = how {
                        picker.failed(call, target, how);
                    }
                    last_err = Some(e);
                }
                (Next::Fail(e), _) => {
                    if answered {
                        picker.answered(&target, started);
                    }
                    return Err(e);
                }
            }
        }
    }
}

/// Picks registered ACTIVE instances through this process's registry view.
pub(super) struct ByDiscovery<'a> {
    /// Both borrowed from the connection: no shared reference count is
    /// touched per call.
    cache: &'a RegistryCache,
    index: &'a DiscoveryIndex,
    strategy: Strategy,
    /// Whether the call feeds the instances' statistics: only the strategy
    /// that reads them does, so other calls touch no shared count to keep
    /// numbers nobody uses.
    observes: bool,
    key_hash: Option<u64>,
    /// Instances this call already tried; allocated only on a retry.
    tried: Vec<Arc<str>>,
    caught_up: bool,
    /// An evicted instance (service, id) this call is trying again, for
    /// want of another.
    probing: Option<(String, Arc<str>)>,
    /// The pause before the next such try.
    probe_backoff: Duration,
    /// Instances (in `tried`) that answered SERVICE_UNAVAILABLE to this
    /// call: asked again after `unavailable_pause` once no other is left.
    unavailable: Vec<Arc<str>>,
    unavailable_pause: Duration,
}

impl<'a> ByDiscovery<'a> {
    /// A picker over `cache` for `call`, with the service in the view's
    /// scope (the first call to a service adds it to the watch).
    pub(super) async fn new(
        cache: &'a RegistryCache,
        index: &'a DiscoveryIndex,
        call: &Call<'_>,
        strategy: Strategy,
    ) -> Result<Self, RpcError> {
        let key_hash = call
            .opts
            .sticky_key
            .as_deref()
            .map(crate::discovery::ring::hash_key);
        if strategy == Strategy::Sticky && key_hash.is_none() {
            return Err(RpcError::Discovery(
                crate::discovery::DiscoveryError::MissingStickyKey,
            ));
        }
        if !cache
            .cover(Some(call.service), call.started, call.deadline)
            .await
        {
            return Err(call.registry_late());
        }
        Ok(Self {
            cache,
            index,
            strategy,
            observes: strategy == Strategy::LeastLatency,
            key_hash,
            tried: Vec::new(),
            caught_up: false,
            probing: None,
            probe_backoff: PROBE_BACKOFF_START,
            unavailable: Vec::new(),
            unavailable_pause: UNAVAILABLE_PAUSE_FIRST,
        })
    }
}

impl Pick for ByDiscovery<'_> {
    type Target = Arc<Member>;

    async fn pick(&mut self, call: &Call<'_>, failed: bool) -> Result<Arc<Member>, RpcError> {
        loop {
            if let Some(member) = self.index.select(
                call.service,
                self.strategy,
                self.key_hash,
                Some(call.method),
                &self.tried,
            ) {
                return Ok(member);
            }
            if !failed && !self.caught_up {
                // Nothing known: make sure registrations acknowledged before
                // this call are in the view (one API request, no listing),
                // so "start, then call" never misses.
                self.caught_up = true;
                self.cache
                    .catch_up(call.deadline.min(Instant::now() + CATCH_UP_LIMIT))
                    .await;
                continue;
            }
            // None left but one this process evicted: it may have been
            // between NATS nodes (no responder for a few milliseconds) and
            // a new record would take seconds, so try it again after a
            // pause, until the deadline. A fresh call tries it at once.
            let after = self.probing.as_ref().map(|(_, id)| &**id);
            if let Some(member) = self.index.evicted(call.service, Some(call.method), after) {
                let pause = if failed {
                    self.probe_backoff
                } else {
                    Duration::ZERO
                };
                if Instant::now() + pause < call.deadline {
                    tokio::time::sleep(pause).await;
                    self.probe_backoff = (self.probe_backoff * 2).min(PROBE_BACKOFF_MAX);
                    self.probing = Some((call.service.to_owned(), member.id.clone()));
                    return Ok(member);
                }
            }
            // None left but ones that said they could not serve for now:
            // ask them again after a pause that leaves time to be served.
            if !self.unavailable.is_empty()
                && Instant::now() + self.unavailable_pause < call.deadline
            {
                tokio::time::sleep(self.unavailable_pause).await;
                self.unavailable_pause = (self.unavailable_pause * 2).min(UNAVAILABLE_PAUSE_MAX);
                let again = std::mem::take(&mut self.unavailable);
                self.tried.retain(|id| !again.contains(id));
                continue;
            }
            // Instances that do not list the method are never tried: a call
            // to a missing method must not evict healthy instances.
            return Err(if self.index.has_selectable(call.service) {
                RpcError::NoSuchMethod {
                    service: call.service.to_owned(),
                    method: call.method.to_owned(),
                }
            } else {
                RpcError::NoInstances {
                    service: call.service.to_owned(),
                }
            });
        }
    }

    fn id<'t>(&self, target: &'t Arc<Member>) -> &'t str {
        &target.id
    }

    fn stats<'t>(&self, target: &'t Arc<Member>) -> Option<&'t CallStats> {
        self.observes.then_some(&*target.stats)
    }

    fn screen(
        &self,
        _: &Call<'_>,
        _: &Arc<Member>,
        _: &ReplyHeaders<'_>,
        _: &Message,
    ) -> Option<RpcError> {
        None
    }

    fn answered(&mut self, target: &Arc<Member>, started: Instant) {
        if self.observes {
            target.stats.observe(started.elapsed());
        }
        if let Some((service, id)) = &self.probing
            && *id == target.id
        {
            self.index.restore(service, id);
        }
    }

    fn failed(&mut self, call: &Call<'_>, target: Arc<Member>, how: Failure) {
        match how {
            Failure::NoResponder => {
                // It died (or is stopping): this process stops picking it
                // until it writes a newer record.
                self.index.evict(call.service, &target.id);
            }
            Failure::TimedOut(attempt) if self.observes => target.stats.observe(attempt),
            // Not fed to the latency statistics: a quick refusal would
            // draw more calls to it.
            Failure::Unavailable => self.unavailable.push(target.id.clone()),
            Failure::TimedOut(_) | Failure::Refused | Failure::Deposed => {}
        }
        self.tried.push(target.id.clone());
    }
}

/// Picks the holder of a sticky group's election key.
pub(super) struct ToLeader<'a> {
    /// For the registry view, read only when no leader is found.
    conn: &'a Connection,
    view: Arc<ElectionView>,
    changes: watch::Receiver<u64>,
    group: String,
    /// The holder the last attempt failed on; not tried again until the
    /// key changes or a back-off passes.
    failed_on: Option<Holder>,
    /// How that attempt failed.
    failure: Option<Failure>,
    backoff: Duration,
    /// When the current back-off ends: set once per wait, so that the
    /// key's renewals (which wake the wait) do not start it over.
    backoff_ends: Option<Instant>,
    /// The longest `backoff` grows to: longer once the holder answered
    /// SERVICE_UNAVAILABLE than while the key is between holders.
    backoff_max: Duration,
    /// Whether the registry was asked about the group, and about the
    /// method (each once per call).
    asked_group: bool,
    asked_method: bool,
    /// The registry's answer being worked out while the key is watched (a
    /// leader winning meanwhile is called at once), kept across attempts.
    /// In a mutex only to be `Sync` (the call's future holds the picker
    /// across awaits); only ever reached through `&mut`, never locked.
    diagnosis: std::sync::Mutex<Option<(Asked, Diagnosis<'a>)>>,
    /// What to say if the deadline passes with no leader, when the
    /// registry knew more than "no leader": the group has no registered
    /// instance while others do ([`RpcError::UnknownGroup`]). Said then,
    /// not at once: a group whose only instance restarts has no record
    /// for a moment, and its new leader is waited for.
    at_deadline: Option<RpcError>,
}

/// Which question a pending [`Diagnosis`] answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Group,
    Method,
}

impl<'a> ToLeader<'a> {
    /// A picker for `group`'s leader from `view`.
    pub(super) fn new(conn: &'a Connection, view: Arc<ElectionView>, group: &str) -> Self {
        let changes = view.leaders().subscribe();
        Self {
            conn,
            view,
            changes,
            group: group.to_owned(),
            failed_on: None,
            failure: None,
            backoff: Duration::from_millis(2),
            backoff_ends: None,
            backoff_max: Duration::from_millis(50),
            asked_group: false,
            asked_method: false,
            diagnosis: std::sync::Mutex::new(None),
            at_deadline: None,
        }
    }

    /// The pending diagnosis, if any.
    fn pending(&mut self) -> &mut Option<(Asked, Diagnosis<'a>)> {
        self.diagnosis
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What to ask the registry while no leader is found, if anything is
    /// left to ask: whether the leader an attempt found without a
    /// responder lists the method, or (before any attempt) whether any
    /// registered instance can lead the group at all.
    fn question(&mut self, failed: bool) -> Option<Question> {
        if let Some(holder) = &self.failed_on
            && self.failure == Some(Failure::NoResponder)
            && !self.asked_method
        {
            self.asked_method = true;
            return Some(Question::Method(holder.instance_id.clone()));
        }
        if !failed && !self.asked_group {
            self.asked_group = true;
            return Some(Question::Group);
        }
        None
    }
}

/// What [`ToLeader`] asks the registry when it finds no leader.
enum Question {
    /// Does this instance's record list the method?
    Method(String),
    /// Is any registered instance of the service in the group?
    Group,
}

/// The registry's answer to `question` about `call` to `group`, as the
/// call's error when it says the call cannot succeed; `None` when it does
/// not (or the registry cannot be read: the call then waits as before).
/// Records are what instances claim about themselves, so they only ever
/// end a call early with an error; they never route one.
async fn diagnose(
    conn: &Connection,
    about: About,
    deadline: Instant,
    question: Question,
) -> Option<RpcError> {
    let cache = match conn.loaded_registry() {
        Some(cache) => cache,
        None => conn.registry_cache().await.ok()?,
    };
    if !cache
        .cover(Some(&about.service), Instant::now(), deadline)
        .await
    {
        return None;
    }
    match question {
        Question::Method(instance) => {
            let record = cache.shared().get(&about.service, &instance)?;
            let listed = lists(&record, &about.method)?;
            (!listed).then_some(RpcError::NoSuchMethod {
                service: about.service,
                method: about.method,
            })
        }
        Question::Group => {
            group_verdict(&cache.shared().by_service(&about.service), &about)?;
            // An instance registered (and acknowledged) just before this
            // call may not be in the view yet.
            cache.catch_up(deadline).await;
            group_verdict(&cache.shared().by_service(&about.service), &about)
        }
    }
}

/// What a [`RpcClient::call_balanced`] that found no responder is told
/// instead when the registry says why: [`RpcError::NoSuchMethod`] when
/// instances of `service` are registered and none lists `method`, as
/// [`RpcClient::call`] and [`RpcClient::call_active`] are told. `None`
/// when one lists it or does not say what it serves, when none is
/// registered (the queue group also serves unregistered instances), or
/// when the registry view cannot answer by `deadline` or
/// [`CATCH_UP_LIMIT`] from now: the call then says there was no
/// responder, as before, and not much later.
///
/// [`RpcClient::call_balanced`]: super::RpcClient::call_balanced
/// [`RpcClient::call`]: super::RpcClient::call
/// [`RpcClient::call_active`]: super::RpcClient::call_active
pub(super) async fn unlisted_method(
    conn: &Connection,
    service: &str,
    method: &str,
    deadline: Instant,
) -> Option<RpcError> {
    let deadline = deadline.min(Instant::now() + CATCH_UP_LIMIT);
    let cache = match conn.loaded_registry() {
        Some(cache) => cache,
        None => {
            // The view would create a missing registry: without one, no
            // instance is registered, and there is nothing to tell.
            let open = async {
                conn.jetstream()
                    .get_key_value(aegis_contracts::subjects::REGISTRY_BUCKET)
                    .await
                    .ok()?;
                conn.registry_cache().await.ok()
            };
            tokio::time::timeout_at(deadline, open).await.ok()??
        }
    };
    if !cache.cover(Some(service), Instant::now(), deadline).await {
        return None;
    }
    let records = cache.shared().by_service(service);
    let unlisted = !records.is_empty()
        && records
            .iter()
            .all(|record| lists(record, method) == Some(false));
    unlisted.then(|| RpcError::NoSuchMethod {
        service: service.to_owned(),
        method: method.to_owned(),
    })
}

/// Whether `record` lists `method` among its endpoints; `None` when it
/// does not say which methods it serves.
fn lists(record: &aegis_contracts::ServiceInstance, method: &str) -> Option<bool> {
    let endpoints = record.metadata.get("endpoints")?.as_array()?;
    Some(endpoints.iter().any(|e| e.as_str() == Some(method)))
}

/// The call a [`Diagnosis`] is about, owned: it may outlive one pick.
struct About {
    service: String,
    method: String,
    group: String,
}

/// The error a `call_active` to `group` gets at once given the service's
/// registered `records`: none when one is in the group (its leader may be
/// about to win, as in a failover) or none is registered (it may be
/// starting).
fn group_verdict(records: &[aegis_contracts::ServiceInstance], about: &About) -> Option<RpcError> {
    let (service, group) = (&about.service, &about.group);
    if records.is_empty() {
        return None;
    }
    let mut groups: Vec<String> = records
        .iter()
        .filter_map(|r| r.sticky_active_group.clone())
        .collect();
    if groups.is_empty() {
        return Some(RpcError::NotSingleActive {
            service: service.clone(),
        });
    }
    if groups.iter().any(|g| g == group) {
        return None;
    }
    groups.sort();
    groups.dedup();
    Some(RpcError::UnknownGroup {
        service: service.clone(),
        group: group.clone(),
        groups,
    })
}

/// The registry's answer being worked out, boxed: rare, and kept out of
/// every call's future.
type Diagnosis<'f> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Option<RpcError>> + Send + 'f>>;

impl Pick for ToLeader<'_> {
    type Target = Holder;

    async fn pick(&mut self, call: &Call<'_>, failed: bool) -> Result<Holder, RpcError> {
        loop {
            self.changes.mark_unchanged();
            let holder = self
                .view
                .leaders()
                .leader(call.service, &self.group)
                .filter(|h| self.failed_on.as_ref() != Some(h));
            if let Some(holder) = holder {
                // A holder other than the one that failed: whether the
                // group exists is answered, and a question about the
                // failed holder's methods is moot (a leader of another
                // version may list it); asked again should this one fail.
                *self.pending() = None;
                self.asked_method = false;
                self.at_deadline = None;
                return Ok(holder);
            }
            let now = Instant::now();
            if now >= call.deadline {
                return Err(self
                    .at_deadline
                    .take()
                    .unwrap_or_else(|| RpcError::NoLeader {
                        service: call.service.to_owned(),
                        group: self.group.clone(),
                        waited: call.started.elapsed().min(call.timeout),
                    }));
            }
            if self.pending().is_none()
                && let Some(question) = self.question(failed)
            {
                let asked = match question {
                    Question::Group => Asked::Group,
                    Question::Method(_) => Asked::Method,
                };
                let about = About {
                    service: call.service.to_owned(),
                    method: call.method.to_owned(),
                    group: self.group.clone(),
                };
                let diagnosis = Box::pin(diagnose(self.conn, about, call.deadline, question));
                *self.pending() = Some((asked, diagnosis));
            }
            // Between leaders: wake as soon as the key changes (the new
            // leader's winning write), or after a short back-off; or when
            // the registry says the call cannot succeed.
            let ends = *self.backoff_ends.get_or_insert(now + self.backoff);
            let pending = self
                .diagnosis
                .get_mut()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let answer = async {
                match pending {
                    Some((_, diagnosis)) => diagnosis.await,
                    None => std::future::pending().await,
                }
            };
            let answered = tokio::select! {
                _ = self.changes.changed() => None,
                () = tokio::time::sleep_until(ends.min(call.deadline)) => {
                    self.backoff_ends = None;
                    self.failed_on = None;
                    self.backoff = (self.backoff * 2).min(self.backoff_max);
                    None
                }
                verdict = answer => Some(verdict),
            };
            if let Some(verdict) = answered {
                *self.pending() = None;
                match verdict {
                    Some(e @ RpcError::UnknownGroup { .. }) => self.at_deadline = Some(e),
                    Some(e) => return Err(e),
                    None => {}
                }
            }
        }
    }

    fn id<'t>(&self, target: &'t Holder) -> &'t str {
        &target.instance_id
    }

    fn stats<'t>(&self, _: &'t Holder) -> Option<&'t CallStats> {
        None
    }

    fn screen(
        &self,
        call: &Call<'_>,
        holder: &Holder,
        headers: &ReplyHeaders<'_>,
        message: &Message,
    ) -> Option<RpcError> {
        let epoch = headers.epoch()?;
        let newest = self
            .view
            .leaders()
            .highest_epoch(call.service, &self.group)
            .unwrap_or(0)
            .max(holder.epoch);
        if epoch >= newest || headers.error().is_some() {
            return None;
        }
        tracing::debug!(service = call.service, group = %self.group, epoch, newest,
            instance = %holder.instance_id, idempotent = call.opts.idempotent,
            "the call ran on a deposed leader");
        Some(RpcError::DeposedLeader(Box::new(DeposedReply {
            service: call.service.to_owned(),
            group: self.group.clone(),
            instance_id: holder.instance_id.clone(),
            epoch,
            current_epoch: Some(newest),
            encoding: headers.encoding(call.opts.encoding),
            payload: message.payload.clone(),
        })))
    }

    fn answered(&mut self, _: &Holder, _: Instant) {}

    fn failed(&mut self, _: &Call<'_>, holder: Holder, how: Failure) {
        self.failed_on = Some(holder);
        self.failure = Some(how);
        self.backoff_ends = None;
        if how == Failure::Unavailable {
            self.backoff = self.backoff.max(UNAVAILABLE_PAUSE_FIRST);
            self.backoff_max = UNAVAILABLE_PAUSE_MAX;
        }
    }

    fn decisive(&self, error: &RpcError) -> bool {
        matches!(
            error,
            RpcError::NoSuchMethod { .. }
                | RpcError::UnknownGroup { .. }
                | RpcError::NotSingleActive { .. }
        )
    }

    /// The key names another holder (or the same one under a new epoch).
    async fn superseded(&self, call: &Call<'_>, target: &Holder) {
        let mut changes = self.view.leaders().subscribe();
        loop {
            let holder = self.view.leaders().leader(call.service, &self.group);
            if holder.is_some_and(|h| h != *target) {
                return;
            }
            if changes.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use serde_json::Value;

    use crate::{Connection, rpc::CallOptions};

    /// The size of the future `f` returns, without running it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Connection) -> Fut,
        Fut: Future,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every call moves its future at least once (into a task or a box),
    /// so its size is paid on every call. A rare wait kept inline (a view's
    /// start, say) made a discovery call's future 27,864 bytes, against
    /// 1,168 for a plain async-nats request, and cost several percent of
    /// throughput in copies; such waits are boxed. This keeps them so.
    #[test]
    fn call_futures_stay_small() {
        let raw =
            future_size(|c: Connection| async move { c.pooled().request("s", "p".into()).await });
        let limit = 3 * raw;
        let sizes = [
            (
                "call_with",
                future_size(|c: Connection| async move {
                    let (o, q) = (CallOptions::default(), Value::Null);
                    c.rpc().call_with::<_, Value>("a", "m", &q, &o).await
                }),
            ),
            (
                "call_active",
                future_size(|c: Connection| async move {
                    let (o, q) = (CallOptions::default(), Value::Null);
                    c.rpc().call_active::<_, Value>("a", "g", "m", &q, &o).await
                }),
            ),
            (
                "call_balanced",
                future_size(|c: Connection| async move {
                    let (o, q) = (CallOptions::default(), Value::Null);
                    c.rpc().call_balanced::<_, Value>("a", "m", &q, &o).await
                }),
            ),
        ];
        for (name, size) in sizes {
            assert!(
                size <= limit,
                "a {name} future is {size} bytes, over {limit} (three times a raw \
                 request's {raw}): box the rare waits it holds"
            );
        }
    }
}
