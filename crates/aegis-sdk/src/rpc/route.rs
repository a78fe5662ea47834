//! The one retry loop behind [`RpcClient::call_with`] and
//! [`RpcClient::call_active`]: a [`Pick`] says which instance to try next
//! (or why there is none), [`classify`] says what a failed attempt means,
//! and [`RpcClient::attempts`] sends until a reply, a final error or the
//! deadline.
//!
//! - [`ByDiscovery`] picks from this process's registry view by the call's
//!   strategy; an instance that had no responder is evicted from the view
//!   (until its next record or its next answer), one that timed out is
//!   passed over while another is left (until its next record), one that
//!   refused is not tried again by this call, and
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
//!
//! The loop and the classifying are here; each [`Pick`] lives apart:
//! [`ByDiscovery`] in `discovery`, [`ToLeader`] (with the registry
//! questions it and [`unlisted_method`] ask) in `leader`.

mod discovery;
mod leader;

use std::time::Duration;

use aegis_contracts::{subjects, wire::ErrorCode};
use async_nats::{HeaderMap, Message, Subject};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use super::{
    RpcError,
    client::{CallOptions, Reply, decode_reply},
    endpoint::H_REFUSED,
    headers::ReplyHeaders,
};
use crate::discovery::stats::CallStats;

pub(super) use discovery::ByDiscovery;
pub(super) use leader::{ToLeader, unlisted_method};

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
    /// Whether the picker can tell, for a call that is not idempotent,
    /// that the instance an attempt went to is gone ([`Pick::gone`]); a
    /// picker that cannot leaves that call's wait as it was.
    const TELLS_GONE: bool = false;
    /// Ends, with the call's error, once `target` can no longer answer the
    /// attempt sent to it (no reply can come, and it may have run); never,
    /// unless the picker knows better. Raced only by a call that is not
    /// idempotent, and only when [`Pick::TELLS_GONE`].
    async fn gone(&self, _call: &Call<'_>, _target: &Self::Target) -> RpcError {
        std::future::pending().await
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
        // Not retried (it may have run), but the picker learns of it. The
        // error names the instance it was sent to, not the shared subject.
        RpcError::Timeout { subject, timeout } => (
            Next::Fail(RpcError::Timeout {
                subject,
                timeout: call.started.elapsed().min(call.timeout),
            }),
            Some(Failure::TimedOut(timeout)),
        ),
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
                .map_err(|no_reply| {
                    self.or_refused(no_reply.into_error(subject()), started.into_std())
                })
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
            } else if P::TELLS_GONE {
                // Not sent again (it may have run), but not waited for past
                // the moment it is known that no reply can come either.
                tokio::select! {
                    sent = send() => sent,
                    gone = picker.gone(call, &target) => Err(gone),
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
                (Next::Fail(e), how) => {
                    if answered {
                        picker.answered(&target, started);
                    }
                    if let Some(how) = how {
                        picker.failed(call, target, how);
                    }
                    return Err(e);
                }
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
