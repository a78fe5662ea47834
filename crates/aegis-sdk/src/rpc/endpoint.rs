//! The request path of one method: reading a subscription, running the
//! handler, answering, and counting what happened.
//!
//! A method listens on two subjects, each read by its own [`drive`] loop:
//! the shared `rpc.{service}.{method}` (queue group `rpc.{service}`) and the
//! instance-directed `rpc.{service}.{instance}.{method}`. Both loops feed the
//! same [`MethodStats`], which the services protocol
//! ([`micro`](super::micro)) reports as one endpoint per method.
//!
//! A STANDBY's refusal of a leader-only call is not an endpoint error: the
//! handler never ran, the caller is told where the leader is. It is counted
//! apart ([`MethodStats::refused`]) and kept out of the error counts of both
//! `$SRV.STATS` and the instance metrics. A `NOT_ACTIVE` that a handler
//! returns itself (after whatever work it did) is an ordinary error.

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{HeaderMap, Message, Subscriber};
use bytes::Bytes;
use futures::{FutureExt, StreamExt, stream::FuturesUnordered};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, debug_span, warn};

use super::{
    Encoding, ErrorCode, WireError,
    headers::{
        H_ENCODING, H_EPOCH, H_ERROR_CODE, H_ERROR_DETAILS, H_INSTANCE, H_REQUEST_ID,
        H_SERVICE_ERROR, H_SERVICE_ERROR_CODE,
    },
    server::{ErasedHandler, RequestContext},
};
use crate::{
    connection::ClientLoad,
    control::Drills,
    election::{Leadership, Role},
    metrics::{EndpointRecorder, InstanceMetrics},
};

/// Most requests one subscription handles at once; further ones wait in the
/// subscription's buffer (backpressure instead of unbounded memory).
const MAX_IN_FLIGHT_PER_ENDPOINT: usize = 1024;

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
    /// Set for methods that only the leader of a single-active service runs.
    pub(crate) leadership: Option<Leadership>,
    /// The serving client's requests in flight: a move off a server in
    /// lame duck mode waits until none is (see `connection/lame_duck.rs`).
    pub(crate) load: Arc<ClientLoad>,
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
                    in_flight.push(Box::pin(handle(msg, &method, route)));
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
                    debug!(method = %method.name, error = %e, "could not unsubscribe (connection closed?)");
                }
            }
            msg = subscription.next(), if open && in_flight.len() < MAX_IN_FLIGHT_PER_ENDPOINT => {
                match msg {
                    Some(msg) => {
                        // Most handlers finish on their first poll: run that poll
                        // here and only park the ones that wait for something.
                        let mut fut = Box::pin(handle(msg, &method, route));
                        if futures::poll!(fut.as_mut()).is_pending() {
                            in_flight.push(fut);
                        }
                    }
                    None => open = false,
                }
            }
        }
    }
    debug!(method = %method.name, ?route, "subscription closed");
}

/// How a request ended, before the reply is written.
enum Outcome {
    Ok(Encoding, Bytes),
    /// The handler (or decoding) failed: an endpoint error.
    Failed(WireError),
    /// A standby refused a leader-only call without running it.
    Refused(WireError),
}

async fn handle(msg: Message, method: &Method, route: Route) {
    let started = Instant::now();
    let _in_flight = method.metrics.start_request();
    let _busy = method.load.enter_serving();
    let headers = msg.headers.clone();
    let request_id = headers
        .as_ref()
        .and_then(|h| h.get(H_REQUEST_ID))
        .map(|v| v.as_str().to_owned());
    let span = debug_span!(
        "rpc",
        service = %method.service,
        method = %method.name,
        subject = %msg.subject,
        request_id = request_id.as_deref().unwrap_or(""),
    );
    // A leader-only method: serve only with a valid lease, and stamp the epoch.
    let epoch = match &method.leadership {
        None => Ok(None),
        Some(l) => l.serving_epoch().map(Some).ok_or_else(|| not_active(l)),
    };
    // The epoch the call was admitted under is the one its reply carries.
    let reply_epoch = epoch.as_ref().ok().copied().flatten();
    let outcome = match epoch {
        Err(refusal) => Outcome::Refused(refusal),
        Ok(epoch) => {
            let run = run(&msg, method, headers, request_id, epoch);
            // A span no subscriber wants is not entered and left around
            // every poll of the handler.
            let ran = if span.is_disabled() {
                run.await
            } else {
                run.instrument(span.clone()).await
            };
            ran.map_or_else(Outcome::Failed, |(enc, bytes)| Outcome::Ok(enc, bytes))
        }
    };

    let Some(reply) = msg.reply.clone() else {
        span.in_scope(|| debug!("request without a reply subject; nothing to answer"));
        return;
    };
    let mut reply_headers = HeaderMap::new();
    // Instance-directed replies need not name the instance (the caller chose
    // it), which keeps successful replies free of headers. (Measured on the
    // queue group's replies: the header costs one or two points of
    // throughput, inside this machine's noise; docs/performance.md.)
    if route == Route::Shared || !matches!(outcome, Outcome::Ok(..)) {
        reply_headers.insert(H_INSTANCE, &*method.instance);
    }
    if let Some(epoch) = reply_epoch {
        reply_headers.insert(H_EPOCH, epoch.to_string().as_str());
    }
    let (sent, error) = match outcome {
        Outcome::Ok(enc, bytes) => {
            if enc != Encoding::Json {
                reply_headers.insert(H_ENCODING, enc.as_str());
            }
            let sent = if reply_headers.is_empty() {
                method.client.publish(reply, bytes).await
            } else {
                method
                    .client
                    .publish_with_headers(reply, reply_headers, bytes)
                    .await
            };
            (sent, None)
        }
        Outcome::Refused(err) => {
            span.in_scope(|| debug!("refused: this instance is STANDBY"));
            method.stats.refused();
            let sent = send_error(&method.client, reply, reply_headers, &err).await;
            if let Err(e) = sent {
                span.in_scope(|| debug!(error = %e, "could not send the refusal (caller gone?)"));
            }
            return;
        }
        Outcome::Failed(err) => {
            if err.code == ErrorCode::Internal {
                span.in_scope(|| warn!(error = %err.message, "handler failed"));
            } else {
                span.in_scope(|| debug!(code = %err.code, error = %err.message, "request refused"));
            }
            let sent = send_error(&method.client, reply, reply_headers, &err).await;
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
        span.in_scope(|| debug!(error = %e, "could not send the reply (caller gone?)"));
    }
}

/// Decodes, runs the handler (catching a panic) and encodes its answer.
async fn run(
    msg: &Message,
    method: &Method,
    headers: Option<HeaderMap>,
    request_id: Option<String>,
    epoch: Option<u64>,
) -> Result<(Encoding, Bytes), WireError> {
    let enc = Encoding::from_headers(headers.as_ref())
        .map_err(|e| WireError::invalid_request(e.to_string()))?;
    let ctx = RequestContext {
        service: method.service.clone(),
        instance_id: method.instance.clone(),
        method: method.name.clone(),
        subject: msg.subject.clone(),
        request_id,
        headers,
        epoch,
    };
    if let Some(delay) = method.drills.delay() {
        // Inside the measured time: the drill shows on latency charts.
        tokio::time::sleep(delay).await;
    }
    let call = method.handler.call(ctx, msg.payload.clone(), enc);
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(bytes)) => Ok((enc, bytes)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(WireError::internal("the handler panicked")),
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

/// The NOT_ACTIVE refusal of a standby, naming the leader when known.
fn not_active(leadership: &Leadership) -> WireError {
    let leader = match leadership.role() {
        Role::Standby { leader } => leader,
        Role::Leader { .. } => None,
    };
    let err = WireError::not_active("this instance is STANDBY; call the ACTIVE leader");
    match leader {
        Some(leader) => err.with_details(serde_json::json!({ "leader": leader })),
        None => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
