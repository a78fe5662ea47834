//! The request path of one method: reading a subscription, running the
//! handler, answering, and counting what happened.
//!
//! A method listens on two subjects, each read by its own [`drive`] loop:
//! the shared `rpc.{service}.{method}` (queue group `rpc.{service}`) and the
//! instance-directed `rpc.{service}.{instance}.{method}`. Both loops feed the
//! same [`MethodStats`], which the services protocol
//! ([`micro`](super::micro)) reports as one endpoint per method.
//!
//! A message JetStream relayed onto either subject (a push consumer's
//! delivery, a republish, a direct get's answer), or one without a reply
//! subject (another responder's answer aimed here), is not a request:
//! [`drive`] drops it before [`handle`] counts or answers anything
//! ([`relayed`](super::server::relayed)).
//!
//! A STANDBY's refusal of a leader-only call is not an endpoint error: the
//! handler never ran, the caller is told where the leader is. It is counted
//! apart ([`MethodStats::refused`]) and kept out of the error counts of both
//! `$SRV.STATS` and the instance metrics, and its reply says so
//! ([`H_REFUSED`]): callers send any call again after it. A `NOT_ACTIVE`
//! that a handler returns itself (after whatever work it did) is an
//! ordinary error, sent again only by an idempotent call.

use std::{
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use super::{
    Encoding, ErrorCode, WireError,
    headers::{
        H_ENCODING, H_EPOCH, H_ERROR_CODE, H_ERROR_DETAILS, H_INSTANCE, H_REQUEST_ID,
        H_SERVICE_ERROR, H_SERVICE_ERROR_CODE, H_WANT_INSTANCE,
    },
    server::{ContextParts, ErasedHandler, relayed},
};
use crate::{
    connection::ClientLoad,
    control::Drills,
    election::{Leadership, Role},
    metrics::{EndpointRecorder, InstanceMetrics},
};

/// Marks a standby's refusal of a leader-only call (`Aegis-Refused:
/// standby`): the handler never ran, so any call may be sent again. A
/// `NOT_ACTIVE` without it came from a handler, which may have done work
/// first, and only an idempotent call is sent again after it.
pub(crate) const H_REFUSED: async_nats::HeaderName =
    async_nats::HeaderName::from_static("Aegis-Refused");

/// Most requests one subscription handles at once; further ones wait in the
/// subscription's buffer (backpressure instead of unbounded memory).
const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 1024;

/// Most requests already waiting in the subscription that one turn of an
/// endpoint's loop takes before it looks at its stop signals again.
const BURST: usize = 16;

/// What the request path of one method needs, shared by its subscriptions.
pub(crate) struct Method {
    pub(crate) client: async_nats::Client,
    pub(crate) service: Arc<str>,
    pub(crate) instance: Arc<str>,
    pub(crate) name: Arc<str>,
    pub(crate) handler: Arc<dyn ErasedHandler>,
    pub(crate) metrics: Arc<InstanceMetrics>,
    pub(crate) recorder: Arc<EndpointRecorder>,
    pub(crate) stats: Arc<MethodStats>,
    /// Operator drills (`aegis chaos slow` adds a delay before each handler).
    pub(crate) drills: Arc<Drills>,
    /// This instance's leadership, in a single-active service: the epoch
    /// its calls are served under (`None` on a standby).
    pub(crate) leadership: Option<Leadership>,
    /// Only the leader runs it: a standby refuses it (NOT_ACTIVE), and
    /// only the leader is in its shared subject's queue group. False for
    /// an any-role method, which every instance runs, the leader under
    /// its epoch.
    pub(crate) leader_only: bool,
    /// The serving client's requests in flight: a move off a server in
    /// lame duck mode waits until none is (see `connection/lame_duck.rs`).
    pub(crate) load: Arc<ClientLoad>,
    /// The service's connection, for the handlers' [`RequestContext`](super::RequestContext).
    pub(crate) conn: crate::Connection,
}

/// The services-protocol counters of one method, over both its subjects.
///
/// Atomics rather than one locked record: every request updates them, and
/// `$SRV.STATS` reads them rarely (the last error alone sits behind a lock,
/// taken only on errors).
#[derive(Debug, Default)]
pub(crate) struct MethodStats {
    requests: AtomicU64,
    errors: AtomicU64,
    processing_ns: AtomicU64,
    refused: AtomicU64,
    last_error: Mutex<String>,
}

/// A copy of [`MethodStats`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StatsSnapshot {
    pub(crate) requests: u64,
    pub(crate) errors: u64,
    pub(crate) processing: Duration,
    pub(crate) refused: u64,
    /// `"{code}:{message}"` as the services protocol writes it; empty when none.
    pub(crate) last_error: String,
}

impl MethodStats {
    fn handled(&self, took: Duration, error: Option<(u16, &str)>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.processing_ns.fetch_add(ns, Ordering::Relaxed);
        if let Some((code, message)) = error {
            self.errors.fetch_add(1, Ordering::Relaxed);
            *self.last_error.lock().unwrap_or_else(|e| e.into_inner()) =
                format!("{code}:{message}");
        }
    }

    fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub(crate) fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            processing: Duration::from_nanos(self.processing_ns.load(Ordering::Relaxed)),
            refused: self.refused.load(Ordering::Relaxed),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// Which of a method's subjects a subscription reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// `rpc.{service}.{method}` in the queue group `rpc.{service}`.
    Shared,
    /// `rpc.{service}.{instance}.{method}`.
    Direct,
}

/// Reads requests until the subscription ends and its buffered messages are
/// consumed, so requests that arrived before an unsubscribe are served.
///
/// Requests run concurrently as futures polled by this one task rather than
/// as spawned tasks: no cross-thread hand-off per request (measured: spawning
/// cost about 15 % of throughput), while a handler that awaits I/O or a timer
/// still lets the others proceed. The service's tracker waits for this task,
/// and so for every request it took.
///
/// `leave` unsubscribes (on shutdown, or when a leader steps down from the
/// shared subject); the loop then serves what already arrived and ends once
/// the server confirmed the unsubscribe and the client closed the
/// subscription. `stop` ends the reading when the
/// subscription cannot end by itself (without a server the client never
/// closes it): what already arrived is still served, then the loop waits
/// only for the handlers in flight.
pub(crate) async fn drive(
    mut subscription: Subscriber,
    method: Arc<Method>,
    route: Route,
    leave: CancellationToken,
    stop: CancellationToken,
) {
    let mut in_flight = FuturesUnordered::new();
    // A finished request's box, for the next (see below).
    let mut spare = None;
    let mut open = true;
    let mut subscribed = true;
    // Made once and polled by reference: a `cancelled()` made per turn of
    // the loop would register with the token, and leave it, per request.
    let mut stopped = std::pin::pin!(stop.cancelled());
    let mut left = std::pin::pin!(leave.cancelled());
    while open || !in_flight.is_empty() {
        tokio::select! {
            biased;
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            () = &mut stopped, if open => {
                while let Some(Some(msg)) = subscription.next().now_or_never() {
                    if relayed::admit_call(&msg) {
                        in_flight.push(Box::pin(handle(msg, &method, route)));
                    }
                }
                open = false;
            }
            () = &mut left, if subscribed => {
                subscribed = false;
                // A drain, not a bare unsubscribe: the client keeps the
                // subscription until the server confirmed the UNSUB, so a
                // request the server routed here just before is answered
                // instead of dropped (its caller would wait out a timeout).
                if let Err(e) = subscription.drain().await {
                    debug!(method = %method.name, error = %crate::startup::Causes(&e), "could not unsubscribe (connection closed?)");
                }
            }
            msg = subscription.next(), if open && in_flight.len() < MAX_IN_FLIGHT_PER_ENDPOINT => {
                let mut next = msg;
                if next.is_none() {
                    open = false;
                }
                // Requests that arrived together are taken together, up to
                // a burst: each turn of the select above polls the two
                // cancellation tokens, and polling one takes its lock.
                let mut taken = 0;
                while let Some(msg) = next.take() {
                    // What JetStream relayed here, or what no caller waits
                    // for (no reply subject), is no request: dropped before
                    // it is counted or answered (`server/relayed.rs`).
                    if relayed::admit_call(&msg) {
                        // Most handlers finish on their first poll: run that
                        // poll here and only park the ones that wait for
                        // something. The box of one that finished takes the
                        // next request, so such requests allocate none.
                        let mut fut = boxed_in(&mut spare, handle(msg, &method, route));
                        if futures::poll!(fut.as_mut()).is_pending() {
                            in_flight.push(fut);
                        } else {
                            spare = Some(fut);
                        }
                    }
                    taken += 1;
                    if taken < BURST && in_flight.len() < MAX_IN_FLIGHT_PER_ENDPOINT {
                        match subscription.next().now_or_never() {
                            Some(Some(msg)) => next = Some(msg),
                            Some(None) => open = false,
                            None => {}
                        }
                    }
                }
            }
        }
    }
    debug!(method = %method.name, ?route, "subscription closed");
}

/// `fut` in `spare`'s box if there is one (its finished future dropped),
/// else in a new one.
fn boxed_in<F: Future>(spare: &mut Option<Pin<Box<F>>>, fut: F) -> Pin<Box<F>> {
    match spare.take() {
        Some(mut boxed) => {
            boxed.set(fut);
            boxed
        }
        None => Box::pin(fut),
    }
}

/// How a request ended, before the reply is written.
enum Outcome {
    Ok(Encoding, Bytes),
    /// The handler (or decoding) failed: an endpoint error.
    Failed(WireError),
    /// The handler panicked (logged where it was caught): an endpoint
    /// error, not logged again.
    Panicked(WireError),
    /// A standby refused a leader-only call without running it.
    Refused(WireError),
}

/// What a request still has to do once admitted: wait for its handler, or
/// nothing (refused, or its request could not be read).
enum Work {
    Run(Encoding, BoxFuture<'static, Result<Bytes, WireError>>),
    Done(Outcome),
}

/// One request, from its message to its reply.
///
/// Everything up to the handler's own future runs here, before the returned
/// future exists: [`drive`] boxes that future per request, and what it
/// holds across its awaits is all it is made of. Kept small this way (under
/// the allocator's fast sizes; `a_request_future_stays_small`), it holds the
/// handler's boxed future, the reply subject and the counters' guards, not
/// the message, the request context or async-nats's publish future.
fn handle(msg: Message, method: &Method, route: Route) -> impl Future<Output = ()> + Send + '_ {
    let started = Instant::now();
    let in_flight = method.metrics.start_request();
    let busy = method.load.enter_serving();
    let Message {
        subject,
        reply,
        payload,
        headers,
        ..
    } = msg;
    let request_id = headers
        .as_ref()
        .and_then(|h| h.get(H_REQUEST_ID))
        .map(|v| v.as_str().to_owned());
    let span = debug_span!(
        "rpc",
        service = %method.service,
        method = %method.name,
        subject = %subject,
        request_id = request_id.as_deref().unwrap_or(""),
    );
    // In a single-active service a call is served under the leader's
    // epoch, stamped on its reply; a leader-only method is served only
    // with a valid lease, an any-role one on a standby without an epoch.
    let epoch = match &method.leadership {
        None => Ok(None),
        Some(l) if method.leader_only => l.admitting_epoch().map(Some).ok_or_else(|| not_active(l)),
        Some(l) => Ok(l.serving_epoch()),
    };
    // The epoch the call was admitted under is the one its reply carries.
    let reply_epoch = epoch.as_ref().ok().copied().flatten();
    // A successful reply on the instance's own subject needs no name (the
    // caller chose the instance). On the shared subject it names the
    // instance when asked, or beside the epoch of a leader-only method,
    // where plain NATS clients learn who leads from it: a header on every
    // load-balanced reply cost some 8 % of throughput (docs/performance.md).
    let name_instance = route == Route::Shared
        && ((method.leader_only && reply_epoch.is_some())
            || headers
                .as_ref()
                .is_some_and(|h| h.get(H_WANT_INSTANCE).is_some()));
    let work = match epoch {
        Err(refusal) => Work::Done(Outcome::Refused(refusal)),
        Ok(epoch) => span.in_scope(|| start(subject, payload, method, headers, request_id, epoch)),
    };
    async move {
        let (_in_flight, _busy) = (in_flight, busy);
        let outcome = match work {
            Work::Done(outcome) => outcome,
            Work::Run(enc, call) => {
                let call = AssertUnwindSafe(call).catch_unwind();
                // A span no subscriber wants is not entered and left around
                // every poll of the handler; one that is wanted is boxed.
                let ran = if span.is_disabled() {
                    call.await
                } else {
                    Box::pin(call.instrument(span.clone())).await
                };
                match ran {
                    Ok(Ok(bytes)) => Outcome::Ok(enc, bytes),
                    Ok(Err(e)) => Outcome::Failed(e),
                    Err(panic) => Outcome::Panicked(span.in_scope(|| handler_panicked(&*panic))),
                }
            }
        };
        let Some(reply) = reply else {
            span.in_scope(|| debug!("request without a reply subject; nothing to answer"));
            return;
        };
        answer(
            method,
            name_instance,
            reply,
            reply_epoch,
            outcome,
            &span,
            started,
        )
        .await;
    }
}

/// Reads the request's encoding and calls the handler, which decodes the
/// request and returns its (boxed) future. An operator's drill delay is
/// waited for first, inside the request's measured time.
fn start(
    subject: async_nats::Subject,
    payload: Bytes,
    method: &Method,
    headers: Option<HeaderMap>,
    request_id: Option<String>,
    epoch: Option<u64>,
) -> Work {
    let enc = match Encoding::from_headers(headers.as_ref()) {
        Ok(enc) => enc,
        Err(e) => return Work::Done(Outcome::Failed(WireError::invalid_request(e.to_string()))),
    };
    match method.drills.delay() {
        // A handler may panic before it returns its future (decoding, or
        // its own code ahead of its first await): answered like a panic in
        // its future, and the endpoint lives on.
        None => {
            let ctx = ContextParts {
                service: &method.service,
                instance_id: &method.instance,
                method: &method.name,
                subject,
                request_id,
                headers,
                epoch,
                connection: &method.conn,
            };
            match std::panic::catch_unwind(AssertUnwindSafe(|| {
                method.handler.call(ctx, payload, enc)
            })) {
                Ok(call) => Work::Run(enc, call),
                Err(panic) => Work::Done(Outcome::Panicked(handler_panicked(&*panic))),
            }
        }
        Some(delay) => {
            // Inside the measured time: the drill shows on latency charts.
            let handler = method.handler.clone();
            let names = [&method.service, &method.instance, &method.name].map(Arc::clone);
            let conn = method.conn.clone();
            let delayed = async move {
                tokio::time::sleep(delay).await;
                let [service, instance_id, method] = &names;
                let ctx = ContextParts {
                    service,
                    instance_id,
                    method,
                    subject,
                    request_id,
                    headers,
                    epoch,
                    connection: &conn,
                };
                handler.call(ctx, payload, enc).await
            };
            Work::Run(enc, Box::pin(delayed))
        }
    }
}

/// Writes the reply (the value, or the error as the services protocol
/// writes it) and counts the request.
async fn answer(
    method: &Method,
    name_instance: bool,
    reply: async_nats::Subject,
    reply_epoch: Option<u64>,
    outcome: Outcome,
    span: &tracing::Span,
    started: Instant,
) {
    let mut reply_headers = HeaderMap::new();
    // Errors always name the instance; successes when `handle` decided so.
    if name_instance || !matches!(outcome, Outcome::Ok(..)) {
        reply_headers.insert(H_INSTANCE, &*method.instance);
    }
    if let Some(epoch) = reply_epoch {
        reply_headers.insert(H_EPOCH, epoch.to_string().as_str());
    }
    let is_panic = matches!(outcome, Outcome::Panicked(_));
    let (sent, error) = match outcome {
        Outcome::Ok(enc, bytes) => {
            if enc != Encoding::Json {
                reply_headers.insert(H_ENCODING, enc.as_str());
            }
            // Boxed: async-nats's publish future is some 700 bytes.
            let sent = if reply_headers.is_empty() {
                Box::pin(method.client.publish(reply, bytes)).await
            } else {
                Box::pin(
                    method
                        .client
                        .publish_with_headers(reply, reply_headers, bytes),
                )
                .await
            };
            (sent, None)
        }
        Outcome::Refused(err) => {
            span.in_scope(|| debug!("refused: this instance is STANDBY"));
            method.stats.refused();
            reply_headers.insert(H_REFUSED, "standby");
            let sent = Box::pin(send_error(&method.client, reply, reply_headers, &err)).await;
            if let Err(e) = sent {
                span.in_scope(|| debug!(error = %crate::startup::Causes(&e), "could not send the refusal (caller gone?)"));
            }
            return;
        }
        Outcome::Failed(err) | Outcome::Panicked(err) => {
            match (is_panic, err.code) {
                // Logged with what the panic said where it was caught.
                (true, _) => {}
                (false, ErrorCode::Internal) => {
                    span.in_scope(|| warn!(error = %err.message, "handler failed"));
                }
                (false, code) => {
                    span.in_scope(|| debug!(%code, error = %err.message, "request refused"));
                }
            }
            let sent = Box::pin(send_error(&method.client, reply, reply_headers, &err)).await;
            (sent, Some(err))
        }
    };
    let took = started.elapsed();
    method.recorder.record(took, error.is_none());
    method.stats.handled(
        took,
        error
            .as_ref()
            .map(|e| (e.code.status(), e.header_safe_message()))
            .as_ref()
            .map(|(code, msg)| (*code, msg.as_str())),
    );
    if let Err(e) = sent {
        span.in_scope(|| debug!(error = %crate::startup::Causes(&e), "could not send the reply (caller gone?)"));
    }
}

/// An error reply as the services protocol writes it (`Nats-Service-Error`
/// and `Nats-Service-Error-Code`, empty body) plus Aegis's own code and
/// details headers.
async fn send_error(
    client: &async_nats::Client,
    reply: async_nats::Subject,
    mut headers: HeaderMap,
    err: &WireError,
) -> Result<(), async_nats::PublishError> {
    headers.insert(H_ERROR_CODE, err.code.as_str());
    if let Some(details) = &err.details {
        let text = details.to_string();
        if text.len() <= 4096 {
            headers.insert(H_ERROR_DETAILS, text.as_str());
        }
    }
    headers.insert(H_SERVICE_ERROR, err.header_safe_message().as_str());
    headers.insert(H_SERVICE_ERROR_CODE, err.code.status().to_string().as_str());
    client
        .publish_with_headers(reply, headers, Bytes::new())
        .await
}

/// What the caller of a handler that panicked is told (the panic's own
/// message may hold anything, so it stays in this process's log).
const PANICKED: &str = "the handler panicked";

/// The answer to a handler that panicked, before or after returning its
/// future; the WARN line says what the panic said.
fn handler_panicked(panic: &(dyn std::any::Any + Send)) -> WireError {
    warn!(panic = crate::task::panic_text(panic), "handler panicked");
    WireError::internal(PANICKED)
}

/// The NOT_ACTIVE refusal of a standby, naming the leader when known.
fn not_active(leadership: &Leadership) -> WireError {
    let leader = match leadership.role() {
        Role::Standby { leader } => leader,
        Role::Leader { .. } => None,
    };
    let err = if leadership.stepping_down() {
        WireError::not_active("this instance is stepping down (stopping); call the ACTIVE leader")
    } else {
        WireError::not_active("this instance is STANDBY; call the ACTIVE leader")
    };
    match leader {
        Some(leader) => err.with_details(serde_json::json!({ "leader": leader })),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tried as a new user would: a handler's `panic!("bad math")` was
    /// logged as "handler failed error=the handler panicked", so the log
    /// forwarded to the monitor held no clue; the caller is told no more
    /// than before.
    #[test]
    fn a_panic_is_logged_with_what_it_said_and_the_caller_told_only_that_it_panicked() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Printed(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Printed {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let printed = Printed::default();
        let writer = printed.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let answers = tracing::subscriber::with_default(subscriber, || {
            [
                handler_panicked(&*std::panic::catch_unwind(|| panic!("bad math")).unwrap_err()),
                handler_panicked(
                    &*std::panic::catch_unwind(|| panic!("bad {}", "input")).unwrap_err(),
                ),
            ]
        });
        let text = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("panic=\"bad math\""), "{text}");
        assert!(text.contains("panic=\"bad input\""), "{text}");
        for answer in answers {
            assert_eq!(answer.code, ErrorCode::Internal);
            assert_eq!(answer.message, "the handler panicked");
        }
    }

    /// Every request's future is boxed by [`drive`], and glibc's allocator
    /// serves blocks up to 1,032 bytes from its per-thread cache; a larger
    /// one takes the slow path (merging free chunks) on every request.
    /// Rare waits (a drill's delay, an enabled span, an error reply) are
    /// boxed apart to keep the common request under that size.
    #[test]
    fn a_request_future_stays_small() {
        fn future_size<F, Fut>(_: F) -> usize
        where
            F: FnOnce(Message, &'static Method) -> Fut,
            Fut: std::future::Future,
        {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(|m, method| handle(m, method, Route::Direct));
        assert!(
            size <= 1024,
            "a request's future is {size} bytes, over 1,024"
        );
    }

    #[test]
    fn refusals_are_counted_apart_from_errors() {
        let stats = MethodStats::default();
        stats.handled(Duration::from_millis(2), None);
        stats.handled(Duration::from_millis(1), Some((500, "boom")));
        stats.refused();
        stats.refused();
        let s = stats.snapshot();
        assert_eq!(s.requests, 2);
        assert_eq!(s.errors, 1);
        assert_eq!(s.refused, 2);
        assert_eq!(s.processing, Duration::from_millis(3));
        assert_eq!(s.last_error, "500:boom");
    }
}
