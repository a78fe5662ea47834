//! `GET /api/stream`: Server-Sent Events pushing instance changes,
//! definition changes and metrics snapshots as they happen, so the UI is
//! live without polling.
//!
//! Events: `hello` first (`{"topics": [...]}`), then `instance`,
//! `digest`, `definition` and `metrics` (data: a [`LiveEvent`] as JSON),
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
//! The stream ends when the monitor shuts down, and when the credentials
//! that opened it stop being valid: the session expires, is signed out, or
//! its token is removed. They are checked again every
//! [`RECHECK_EVERY`]; the last event is then `expired` (`{}`), so the UI
//! signs in again instead of reconnecting blindly.

use std::{
    collections::HashSet,
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorEnvelope},
    extract::ApiQuery,
    live::LiveEvent,
    state::AppState,
    telemetry::SseClientGuard,
};

const TOPICS: [&str; 3] = ["instance", "definition", "metrics"];

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
    /// Comma-separated subset of `instance,definition,metrics` (default all).
    #[param(example = "instance,definition")]
    topics: Option<String>,
}

/// Live changes as Server-Sent Events (`text/event-stream`): events
/// `hello`, `instance`, `digest` (every 2 s, with topic `instance`),
/// `definition`, `metrics` and `lagged`; each data line is JSON (see the
/// `LiveEvent` schema). Instance events come when something shown changes,
/// not on every heartbeat; the digest keeps heartbeat ages true. When the credentials that opened
/// the stream lapse (session expired or signed out, token removed), a last
/// `expired` event is sent and the stream ends.
#[utoipa::path(
    get, path = "/api/stream", tag = "stream",
    params(StreamQuery),
    responses(
        (status = 200, description = "An endless event stream", content_type = "text/event-stream", body = String),
        (status = 400, description = "Unknown topic", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn live_stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let topics: HashSet<&'static str> = match &query.topics {
        None => TOPICS.into_iter().collect(),
        Some(list) => {
            let mut chosen = HashSet::new();
            for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
                let known = TOPICS.iter().find(|k| **k == t).ok_or_else(|| {
                    ApiError::bad_param("topics", format!("unknown topic {t:?}"))
                        .with_details(json!({ "param": "topics", "allowed": TOPICS }))
                })?;
                chosen.insert(*known);
            }
            if chosen.is_empty() {
                return Err(ApiError::bad_param("topics", "name at least one topic"));
            }
            chosen
        }
    };
    let mut listed: Vec<&str> = topics.iter().copied().collect();
    listed.sort_unstable();
    let hello = Event::default()
        .event("hello")
        .json_data(json!({ "topics": listed }))
        .unwrap_or_default();
    let guard = SseClientGuard::new();
    let events = BroadcastStream::new(state.live()).filter_map(move |item| {
        let event = match item {
            Ok(event) if topics.contains(event.topic()) => to_event(&event),
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
    let stream = futures::stream::once(futures::future::ready(Ok(hello)))
        .chain(events)
        .take_until(stop)
        .chain(farewell);
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
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
