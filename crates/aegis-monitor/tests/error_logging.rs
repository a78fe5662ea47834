//! What the server's log says of a failed request: one line, at a level
//! fit for it — a client's mistake at info, a server error at error, and
//! "not ready" (a state the probes report, not a fault) at warn.
//!
//! One test in its own binary: it installs the process's subscriber
//! before anything logs, and keeps only the events logged inside the
//! request it asks about (under a `logged` span tagged per request), so the
//! monitor's background tasks do not count.

mod common;

use std::{
    fmt::Write as _,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode},
};
use common::{Harness, Reply, VIEWER, eventually, register_bare, req};
use tracing::{Instrument as _, Level, Subscriber, span};
use tracing_subscriber::{
    Layer,
    layer::{Context, SubscriberExt as _},
    registry::LookupSpan,
};

/// One event logged while a request was answered.
#[derive(Clone)]
struct Line {
    tag: u64,
    level: Level,
    target: String,
    fields: String,
}

/// Keeps every event logged under a `logged` span, with that span's tag.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<Line>>>);

/// The tag of a `logged` span, kept in its extensions.
struct Tag(u64);

#[derive(Default)]
struct Fields(String, Option<u64>);

impl tracing::field::Visit for Fields {
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        if field.name() == "tag" {
            self.1 = Some(value);
        }
        self.record_debug(field, &value);
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={value:?} ", field.name());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Recorder {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if attrs.metadata().name() != "logged" {
            return;
        }
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        if let (Some(tag), Some(span)) = (fields.1, ctx.span(id)) {
            span.extensions_mut().insert(Tag(tag));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let Some(tag) = ctx.event_scope(event).and_then(|scope| {
            scope
                .from_root()
                .find_map(|span| span.extensions().get::<Tag>().map(|t| t.0))
        }) else {
            return;
        };
        let mut fields = Fields::default();
        event.record(&mut fields);
        self.0.lock().unwrap().push(Line {
            tag,
            level: *event.metadata().level(),
            target: event.metadata().target().to_owned(),
            fields: fields.0,
        });
    }
}

/// The process's recorder, installed on first use.
fn recorder() -> Recorder {
    static RECORDER: OnceLock<Recorder> = OnceLock::new();
    RECORDER
        .get_or_init(|| {
            let recorder = Recorder::default();
            tracing::subscriber::set_global_default(
                tracing_subscriber::registry().with(recorder.clone()),
            )
            .expect("no other subscriber in this test binary");
            recorder
        })
        .clone()
}

/// `request`'s answer, and what was logged at info or above while it was
/// answered (the request's own debug lines left out).
async fn logged(h: &Harness, request: Request<Body>) -> (Reply, Vec<Line>) {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let tag = NEXT.fetch_add(1, Ordering::Relaxed);
    let reply = common::call_app(&h.app, request)
        .instrument(tracing::info_span!("logged", tag))
        .await;
    let lines = recorder().0.lock().unwrap().clone();
    let noticed = lines
        .into_iter()
        .filter(|l| l.tag == tag && l.level <= Level::INFO)
        .collect();
    (reply, noticed)
}

/// Unless `lines` is one line at `level`, what was logged instead.
fn unless_once_at(lines: &[Line], level: Level, what: &str) -> Option<String> {
    if let [line] = lines
        && line.level == level
    {
        return None;
    }
    let logged: Vec<String> = lines
        .iter()
        .map(|l| format!("  {} {}: {}", l.level, l.target, l.fields))
        .collect();
    Some(format!(
        "{what}: wanted one line at {level}, logged {}:\n{}",
        lines.len(),
        logged.join("\n")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_failure_is_logged_once_at_a_level_fit_for_it() {
    recorder();
    let mut h = Harness::start().await;
    let mut wrong = Vec::new();
    // A client's mistake: one line, at info.
    for path in ["/api/services/no-such-svc", "/api/instances?limit=0"] {
        let (reply, lines) = logged(&h, req(Method::GET, path, Some(VIEWER), None)).await;
        assert!(reply.status.is_client_error(), "{path}: {reply:?}");
        wrong.extend(unless_once_at(&lines, Level::INFO, path));
    }
    // A server error (an instance that does not answer): one line, at error.
    let conn = h.connect().await;
    let _registered = register_bare(&h, &conn, "quiet-service", "quiet-1").await;
    let path = "/api/instances/quiet-service/quiet-1/config";
    let (reply, lines) = logged(&h, req(Method::GET, path, Some(VIEWER), None)).await;
    reply.expect(504, Some("GATEWAY_TIMEOUT"));
    wrong.extend(unless_once_at(&lines, Level::ERROR, path));
    // Not ready (NATS gone) is a state the probes report, not a fault of
    // the request: one line, at warn.
    h.nats.kill();
    eventually(Duration::from_secs(10), "503 from /ready", || async {
        h.get("/ready", None).await.status == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (reply, lines) = logged(&h, req(Method::GET, "/ready", None, None)).await;
    reply.expect(503, Some("NOT_READY"));
    wrong.extend(unless_once_at(&lines, Level::WARN, "/ready"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
