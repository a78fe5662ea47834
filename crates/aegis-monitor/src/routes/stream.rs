//! `GET /api/stream`: Server-Sent Events pushing instance changes,
//! definition changes and metrics snapshots as they happen, so the UI is
//! live without polling.
//!
//! Events: `hello` first (`{"topics": [...]}`), then `instance`,
//! `digest`, `definition`, `metrics` and `figures` (data: a [`LiveEvent`] as JSON),
//! `lagged` (`{"skipped": n}`) when this client fell behind, or the feed
//! itself fell behind the fleet view (to clients of topic `instance`), and
//! it should re-read the REST endpoints. A comment line every 15 s keeps proxies from
//! closing an idle connection.
//!
//! Topic `instance` brings `instance` events when something a viewer sees
//! of an instance changes (status, reason, epoch, version, metadata …) —
//! not when a record write only moved `lastHeartbeat` — and a `digest`
//! every 2 s: `{"type": "digest", "asOf", "version", "summary": {total,
//! active, unhealthy, standby}, "lateAfterIntervals": 1.5, "late":
//! [{serviceName, instanceId, lastBeat}]}`. It states that as of `asOf`
//! every instance announcing `metadata.heartbeatMs` and not in `late` had a
//! sign of life (beat or record write) within 1.5 of its intervals; `late`
//! gives the others' last one. A viewer keeps "last heartbeat N s ago" true
//! from it, and can check its instance count against `summary.total`.
//!
//! Topic `metrics` brings every snapshot as published, of every instance
//! or, with `service` and/or `instance`, of the one a viewer looks at.
//! Topic `figures` brings what dashboard cards show of them: first, right
//! after `hello`, every instance (`full`), then once a second the ones
//! whose shown figures changed (`metrics_feed/figures.rs`). The full one is
//! taken after this client subscribed, so nothing falls between them; a
//! periodic one taken before it is not sent.
//!
//! The stream ends when the monitor shuts down, and when the credentials
//! that opened it stop being valid: the session expires, is signed out, or
//! its token is removed. They are checked again every
//! [`RECHECK_EVERY`]; the last event is then `expired` (`{}`), so the UI
//! signs in again instead of reconnecting blindly.
//!
//! A client that stops reading is cut off: hyper asks the stream for its
//! next event only once it could write the last, so a stream that handed
//! over an event and was not asked again for the stall timeout
//! (`MonitorConfig::stream_stall_timeout`) has a client that reads nothing
//! (its buffers and the server's full); [`watch_stalls`] then closes the
//! connection ([`CutOff`]), which frees its slot and the up to a few MB
//! held for it. A stalled client with nothing to send is not noticed: it
//! costs its slot only.
//!
//! Events carry no `id:`, and `Last-Event-ID` is not read: nothing is kept
//! to replay. A client that reconnects re-reads the REST lists, as the UI
//! does (docs/api.md, "Live stream").

use std::{
    collections::HashSet,
    convert::Infallible,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, Weak,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Extension,
    extract::{ConnectInfo, State},
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt, stream::BoxStream};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, Echoed, ErrorEnvelope, QUERY_VALUE_CHARS},
    extract::ApiQuery,
    live::LiveEvent,
    openapi::{InstanceIdParam, ServiceNameParam},
    routes::metrics::check_filter,
    server::CutOff,
    state::AppState,
    telemetry::{SSE_CUT_OFF, SseClientGuard},
};

const TOPICS: [&str; 4] = ["instance", "definition", "metrics", "figures"];
/// Without `topics`: all but `figures`, which says again in brief what
/// `metrics` says in full.
const DEFAULT_TOPICS: [&str; 3] = ["instance", "definition", "metrics"];

/// How often an open stream's credentials are checked again.
pub(crate) const RECHECK_EVERY: Duration = Duration::from_millis(500);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(live_stream))
}

/// Query of the stream endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct StreamQuery {
    /// Comma-separated subset of `instance,definition,metrics,figures`
    /// (default `instance,definition,metrics`).
    #[param(
        example = "instance,figures",
        pattern = "^(?:instance|definition|metrics|figures)(?:,(?:instance|definition|metrics|figures))*$"
    )]
    topics: Option<String>,
    /// Only this service's `metrics` events (other topics are not filtered).
    #[param(example = "pricing-service", value_type = Option<ServiceNameParam>, inline)]
    service: Option<String>,
    /// Only this instance's `metrics` events (other topics are not
    /// filtered): what an instance's page needs.
    #[param(example = "pricing-1", value_type = Option<InstanceIdParam>, inline)]
    instance: Option<String>,
}

/// Which instances' `metrics` events a client wants.
#[derive(Debug, Default)]
struct MetricsFilter {
    service: Option<String>,
    instance: Option<String>,
}

impl MetricsFilter {
    /// The filter `query` asks for; 400 on a name that cannot be one.
    fn from_query(query: &StreamQuery) -> Result<Self, ApiError> {
        check_filter(query.service.as_deref(), query.instance.as_deref())?;
        Ok(Self {
            service: query.service.clone(),
            instance: query.instance.clone(),
        })
    }

    /// Whether `event` goes to this client as far as the filter goes.
    fn passes(&self, event: &LiveEvent) -> bool {
        let LiveEvent::Metrics { snapshot } = event else {
            return true;
        };
        self.service
            .as_ref()
            .is_none_or(|s| *s == snapshot.service_name)
            && self
                .instance
                .as_ref()
                .is_none_or(|i| *i == snapshot.instance_id)
    }
}

/// Live changes as Server-Sent Events (`text/event-stream`): events
/// `hello`, `instance`, `digest` (every 2 s, with topic `instance`),
/// `definition`, `metrics`, `figures` and `lagged`; each data line is JSON
/// (see the `LiveEvent` schema). Instance events come when something shown
/// changes, not on every heartbeat; the digest keeps heartbeat ages true.
/// `metrics` brings every snapshot (of one instance with `service` and/or
/// `instance`); `figures` brings what dashboard cards show: every instance
/// right after `hello`, then once a second those whose shown figures
/// changed. When the credentials that opened
/// the stream lapse (session expired or signed out, token removed), a last
/// `expired` event is sent and the stream ends. Events carry no id and
/// `Last-Event-ID` is not read: a client that reconnects re-reads the REST
/// lists. A client that reads nothing while there are events to send is
/// cut off after `--stream-stall-timeout` (60 s by default).
#[utoipa::path(
    get, path = "/api/stream", tag = "stream",
    params(StreamQuery),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Unknown topic, or a service or instance that cannot be one", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn live_stream(
    State(state): State<AppState>,
    cut: Option<Extension<CutOff>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topics: HashSet<&'static str> = match &query.topics {
        None => DEFAULT_TOPICS.into_iter().collect(),
        Some(list) => {
            let mut chosen = HashSet::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let known = TOPICS.iter().find(|k| **k == t).ok_or_else(|| {
                    let given = Echoed::new(t, QUERY_VALUE_CHARS);
                    ApiError::bad_param("topics", format!("unknown topic {given}"))
                        .with_details(json!({ "param": "topics", "allowed": TOPICS }))
                        .with_echoed("value", "length", &given)
                })?;
                chosen.insert(*known);
            }
            if chosen.is_empty() {
                return Err(ApiError::bad_param("topics", "name at least one topic"));
            }
            chosen
        }
    };
    let filter = MetricsFilter::from_query(&query)?;
    let mut listed: Vec<&str> = topics.iter().copied().collect();
    listed.sort_unstable();
    let hello = Event::default()
        .event("hello")
        .json_data(json!({ "topics": listed }))
        .unwrap_or_default();
    let guard = SseClientGuard::new();
    // Subscribed before the full figures are taken: no change falls between.
    let live = state.live();
    let full = topics
        .contains("figures")
        .then(|| LiveEvent::from(state.metrics().figures()));
    let full_as_of = match &full {
        Some(LiveEvent::Figures { as_of, .. }) => Some(*as_of),
        _ => None,
    };
    let first = std::iter::once(Ok(hello)).chain(full.as_ref().and_then(to_event).map(Ok));
    let events = BroadcastStream::new(live).filter_map(move |item| {
        let event = match item {
            // Taken before the full figures this client was sent first.
            Ok(LiveEvent::Figures { as_of, .. }) if full_as_of.is_some_and(|f| as_of < f) => None,
            Ok(event) if topics.contains(event.topic()) && filter.passes(&event) => {
                to_event(&event)
            }
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(skipped)) => lagged(skipped),
        };
        // Keeps the gauge up while the stream lives.
        let _ = &guard;
        futures::future::ready(event.map(Ok))
    });
    let expired = Arc::new(AtomicBool::new(false));
    let stop = {
        let (expired, shutdown) = (expired.clone(), state.cancelled().cancelled_owned());
        let lapse = credentials_lapse(state.clone(), headers);
        async move {
            tokio::select! {
                _ = lapse => expired.store(true, Ordering::Relaxed),
                _ = shutdown => {}
            }
        }
    };
    let farewell = futures::stream::once(async move { expired.load(Ordering::Relaxed) })
        .filter_map(|expired| {
            futures::future::ready(
                expired.then(|| Ok(Event::default().event("expired").data("{}"))),
            )
        });
    let stream = futures::stream::iter(first)
        .chain(events)
        .take_until(stop)
        .chain(farewell)
        .boxed();
    let limit = state.config().stream_stall_timeout;
    let stream = match cut {
        Some(Extension(cut)) if !limit.is_zero() => {
            let (stream, handed) = Watched::new(stream);
            watch_stalls(handed, limit, cut, peer.map(|Extension(ConnectInfo(p))| p));
            stream
        }
        // Not on a socket of ours (a test's oneshot call), or switched off.
        _ => Watched::new(stream).0,
    };
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// When the stream last handed out an event that was not followed by
/// another poll (`None` once it was asked again, or before any).
type Handed = Mutex<Option<Instant>>;

/// The stream, noting when it hands out an event. hyper polls the body for
/// its next event as soon as it has room for it, so an event handed out
/// long ago and no poll since is an event hyper cannot write.
struct Watched {
    inner: BoxStream<'static, Result<Event, Infallible>>,
    handed: Arc<Handed>,
}

impl Watched {
    fn new(inner: BoxStream<'static, Result<Event, Infallible>>) -> (Self, Weak<Handed>) {
        let handed = Arc::new(Handed::default());
        let weak = Arc::downgrade(&handed);
        (Self { inner, handed }, weak)
    }
}

impl Stream for Watched {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        let now = matches!(polled, Poll::Ready(Some(_))).then(Instant::now);
        *self.handed.lock().unwrap_or_else(|e| e.into_inner()) = now;
        polled
    }
}

/// Whether an event handed out at `handed` and not followed by another
/// poll by `now` means the client stopped reading.
fn stalled(handed: Option<Instant>, now: Instant, limit: Duration) -> bool {
    handed.is_some_and(|at| now.saturating_duration_since(at) >= limit)
}

/// Closes the stream's connection once it has [`stalled`] for `limit`;
/// ends with the stream (when `handed` can no longer be upgraded).
fn watch_stalls(handed: Weak<Handed>, limit: Duration, cut: CutOff, peer: Option<SocketAddr>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval((limit / 4).max(Duration::from_millis(50)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(handed) = handed.upgrade() else {
                return;
            };
            let at = *handed.lock().unwrap_or_else(|e| e.into_inner());
            if stalled(at, Instant::now(), limit) {
                metrics::counter!(SSE_CUT_OFF).increment(1);
                tracing::info!(
                    peer = peer.map(tracing::field::display),
                    "cut off a live-stream client that read nothing for {}: an event could not \
                     be written to it; its connection is closed",
                    humantime::format_duration(limit)
                );
                cut.cut();
                return;
            }
        }
    });
}

/// Completes when `headers` no longer authenticate (checked every
/// [`RECHECK_EVERY`]).
async fn credentials_lapse(state: AppState, headers: HeaderMap) {
    let mut tick = tokio::time::interval(RECHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.auth().authenticate(&headers).is_err() {
            return;
        }
    }
}

fn to_event(event: &LiveEvent) -> Option<Event> {
    match event {
        // The feed lost changes for everyone: told as this client's own lag.
        LiveEvent::Lagged { skipped } => lagged(*skipped),
        event => Event::default().event(event.name()).json_data(event).ok(),
    }
}

/// The `lagged` event: `skipped` changes were lost, re-read.
fn lagged(skipped: u64) -> Option<Event> {
    Event::default()
        .event("lagged")
        .json_data(json!({ "skipped": skipped }))
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_not_followed_by_a_poll_for_the_limit_is_a_stall() {
        let limit = Duration::from_secs(60);
        let at = Instant::now();
        assert!(!stalled(None, at + limit * 2, limit), "nothing handed out");
        assert!(!stalled(Some(at), at + limit / 2, limit));
        assert!(stalled(Some(at), at + limit, limit));
    }

    /// The feed's own lag reaches a client as the `lagged` event it
    /// already handles (it re-reads), with the same data.
    #[test]
    fn the_feeds_lag_is_the_clients_lagged_event() {
        let told = to_event(&LiveEvent::Lagged { skipped: 6 }).expect("an event");
        let own = lagged(6).expect("an event");
        assert_eq!(format!("{told:?}"), format!("{own:?}"));
        let text = format!("{own:?}");
        assert!(
            text.contains("lagged") && text.contains("skipped"),
            "{text}"
        );
    }
}
