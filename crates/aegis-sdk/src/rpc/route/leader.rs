//! [`ToLeader`]: the [`Pick`] of a call to a sticky group's leader, the
//! holder of its election key; and what it asks the registry view when it
//! finds none, as [`unlisted_method`] does for a balanced call.

use std::{sync::Arc, time::Duration};

use async_nats::Message;
use tokio::{sync::watch, time::Instant};

use super::super::{DeposedReply, RpcError, headers::ReplyHeaders};
use super::{CATCH_UP_LIMIT, Call, Failure, Pick, UNAVAILABLE_PAUSE_FIRST, UNAVAILABLE_PAUSE_MAX};
use crate::{
    Connection,
    discovery::stats::CallStats,
    election::view::{ElectionView, Holder},
};

/// How long after a replaced leader was first seen with nothing listening
/// for it that it is asked again, before a call that is not idempotent is
/// ended as [`RpcError::LeaderGone`]: longer than a client takes to
/// reconnect to another NATS server of the cluster (tens of milliseconds
/// here), short against the deadline the call would otherwise wait out.
const GONE_CONFIRM: Duration = Duration::from_millis(250);
/// How often a replaced leader that still listens is asked again.
const GONE_RECHECK: Duration = Duration::from_secs(1);

/// Picks the holder of a sticky group's election key.
pub(in crate::rpc) struct ToLeader<'a> {
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
    pub(in crate::rpc) fn new(conn: &'a Connection, view: Arc<ElectionView>, group: &str) -> Self {
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

    /// [`Pick::gone`] once the leader was replaced: asks until nothing
    /// listens for `target`, twice in a row; never ends once the asking
    /// cannot tell.
    async fn ask_until_gone(&self, call: &Call<'_>, target: &Holder) -> RpcError {
        let client = self.conn.client();
        let mut absent = false;
        loop {
            let listens =
                crate::rpc::micro::holder(client, call.service, &target.instance_id).await;
            if let Err(why) = &listens {
                // Cannot tell (no answer to the ping in time, as from a
                // frozen process, or NATS refused this user the ping):
                // the call waits for its reply or its deadline, as it did
                // before, without asking again (a refusal would be logged
                // at every ask).
                tracing::debug!(service = call.service, instance = %target.instance_id,
                    reason = %why, "cannot tell whether the replaced leader still runs");
                std::future::pending::<()>().await;
            }
            if matches!(listens, Ok(None)) {
                if absent {
                    tracing::debug!(service = call.service, instance = %target.instance_id,
                        "the leader the call went to is gone; not waiting for its reply");
                    return RpcError::LeaderGone {
                        subject: aegis_contracts::subjects::rpc_instance_subject(
                            call.service,
                            &target.instance_id,
                            call.method,
                        ),
                        instance_id: target.instance_id.clone(),
                        epoch: target.epoch,
                        waited: call.started.elapsed(),
                    };
                }
                absent = true;
                tokio::time::sleep(GONE_CONFIRM).await;
            } else {
                absent = false;
                tokio::time::sleep(GONE_RECHECK).await;
            }
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
            (!listed).then(|| RpcError::NoSuchMethod {
                methods: crate::rpc::slips::listed_methods(std::slice::from_ref(&record)),
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
pub(in crate::rpc) async fn unlisted_method(
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
        methods: crate::rpc::slips::listed_methods(&records),
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
                        similar: None,
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

    const TELLS_GONE: bool = true;

    /// The key names another holder, and nothing listens for this one on
    /// NATS: asked of its `$SRV.PING` subject, which a running instance
    /// answers until its last request is done, even while it stops. Asked
    /// twice, [`GONE_CONFIRM`] apart, so a leader whose NATS server went
    /// down and that is reconnecting (its subscriptions briefly absent) is
    /// not given up on; asked again every [`GONE_RECHECK`] while it runs
    /// (a partitioned leader, or one finishing its requests as it stops,
    /// which may still answer). A ping that gets no answer (a frozen
    /// process) or is refused ends the asking: the call then waits as
    /// before.
    async fn gone(&self, call: &Call<'_>, target: &Holder) -> RpcError {
        self.superseded(call, target).await;
        // Boxed: the asking holds a request's future, and every such call
        // carries this one (see `call_futures_stay_small`); only the rare
        // call whose leader was replaced pays for the box.
        Box::pin(self.ask_until_gone(call, target)).await
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
