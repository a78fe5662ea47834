//! A `tracing` layer that forwards WARN and ERROR events to `AEGIS_LOG`, so
//! the monitor shows an instance's problems next to its lifecycle events.
//!
//! The SDK never installs a subscriber; a binary adds this layer to its
//! own, **with its own `LevelFilter::WARN`**. Added bare, the layer's lack
//! of interest in INFO and DEBUG would turn those off for every layer of
//! the subscriber, the printing one included (a bare layer's verdict is the
//! whole subscriber's):
//!
//! ```no_run
//! use tracing_subscriber::{filter::LevelFilter, prelude::*};
//!
//! let (layer, forwarder) = aegis_sdk::telemetry::log_layer::NatsLogLayer::new();
//! tracing_subscriber::registry()
//!     .with(tracing_subscriber::fmt::layer())
//!     .with(layer.with_filter(LevelFilter::WARN))
//!     .init();
//! // ... once connected and the instance id is known:
//! # async fn later(conn: aegis_sdk::Connection, forwarder: aegis_sdk::telemetry::log_layer::LogForwarder) {
//! forwarder.attach(&conn, "pricing-service", "pricing-1");
//! # }
//! ```
//!
//! ## Under which instance a line goes
//!
//! - A line logged by a service's own work goes under that service's
//!   instance, whichever forwarder it passed through, even in a process
//!   that runs several services. Its own work: its RPC handlers, its stop,
//!   its leadership tasks, its registration's heartbeat and health checks,
//!   its election campaign, and the command workers and event
//!   subscriptions of its name (their pull loops and handlers). A command
//!   worker or event subscription goes under the running service of its
//!   name (the instance of its `instance_id` or `leader_of`, when the
//!   process runs several instances of that name); with no such service
//!   running, or several it cannot choose between, its lines are the
//!   process's. (Work a handler spawns onto a task of its own with
//!   `tokio::spawn` is not the service's as far as the log layer can tell;
//!   it is the process's.)
//! - Any other line is the process's, and goes to **one** place, never to
//!   several: the instance the forwarder was
//!   [attached](LogForwarder::attach) to; else, while the process runs one
//!   service, that service's instance (one service per process, the usual
//!   case, is that instance); else, while it runs several, the one that
//!   started first, marked with the field `scope = "process"` (the monitor
//!   shows it once, and the field says it is not that service's own). With
//!   no service running and nothing attached it is only printed, but for
//!   the lines about a later stop signal, which go under the service the
//!   first one stopped (see [`shutdown_signal`](crate::shutdown_signal)).

use std::{
    fmt::Write as _,
    future::Future,
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aegis_contracts::log::{LogKind, LogLevel, LogRecord};
use tracing::{
    Event, Level, Metadata, Subscriber, field::Field, level_filters::LevelFilter,
    subscriber::Interest,
};
use tracing_subscriber::{Layer, layer::Context};

use super::Telemetry;

/// A field that marks a WARN or ERROR line as the printed twin of a
/// lifecycle event the SDK publishes itself (`lifecycle = true`): such a
/// line is printed by the binary but not forwarded, so the monitor's Logs
/// & events shows the happening once.
pub const LIFECYCLE_FIELD: &str = "lifecycle";

/// Where forwarded records go once the process is connected.
#[derive(Debug, Clone, Default)]
pub struct LogForwarder {
    target: Arc<OnceLock<Telemetry>>,
}

impl LogForwarder {
    /// Starts forwarding to `aegis.log.{service}.{instance}`. Events before
    /// this call are not forwarded (they are still printed by the binary).
    ///
    /// The lines of a running service's own work go under that service
    /// anyway (see the module docs); this sets where the process's other
    /// lines go.
    pub fn attach(&self, conn: &crate::Connection, service: &str, instance: &str) {
        let telemetry = Telemetry::new(conn, service, instance);
        if self.target.set(telemetry.clone()).is_ok() {
            ATTACHED
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(telemetry);
        }
    }
}

/// Whose work a task is doing, for the lines it logs.
#[derive(Debug, Clone)]
enum Owner {
    /// A service whose records this sends.
    Service(Telemetry),
    /// The running service of this name (and of this instance, when the
    /// process runs several of the name), looked up when a line is logged:
    /// a command worker or event subscription started beside its service.
    Named {
        service: Arc<str>,
        instance: Option<Arc<str>>,
    },
}

impl Owner {
    /// Where a line of this owner goes; `None` when no running service
    /// can be told to be it (the line is then the process's).
    fn target(&self) -> Option<Telemetry> {
        match self {
            Owner::Service(telemetry) => Some(telemetry.clone()),
            Owner::Named { service, instance } => {
                let live = live();
                let named: Vec<&LiveEntry> =
                    live.iter().filter(|e| *e.service == **service).collect();
                let exact = instance
                    .as_ref()
                    .and_then(|i| named.iter().find(|e| *e.instance == **i));
                match (exact, named.as_slice()) {
                    (Some(entry), _) | (None, [entry]) => Some(entry.telemetry.clone()),
                    _ => None,
                }
            }
        }
    }
}

tokio::task_local! {
    /// The service whose work the current task is doing.
    static LOG_OWNER: Owner;
}

/// Runs `work` with the lines it logs forwarded under `owner`, the
/// service whose work it is (see the module docs). The tasks it spawns
/// through [`inherit`] (the SDK's own) carry the owner on.
pub(crate) fn owned_by<F: Future>(owner: Telemetry, work: F) -> impl Future<Output = F::Output> {
    LOG_OWNER.scope(Owner::Service(owner), work)
}

/// [`owned_by`] `owner`, or `work` as it is without one.
pub(crate) fn owned_by_opt<F: Future>(
    owner: Option<Telemetry>,
    work: F,
) -> impl Future<Output = F::Output> {
    match owner {
        Some(owner) => futures::future::Either::Left(owned_by(owner, work)),
        None => futures::future::Either::Right(work),
    }
}

/// Runs `work` as the work of the running service named `service`
/// (instance `instance`, when the process runs several of the name),
/// looked up when a line is logged: for a command worker or event
/// subscription, which is started beside its service, not by it.
pub(crate) fn owned_by_name<F: Future>(
    service: &str,
    instance: Option<&str>,
    work: F,
) -> impl Future<Output = F::Output> + use<F> {
    let owner = Owner::Named {
        service: service.into(),
        instance: instance.map(Into::into),
    };
    LOG_OWNER.scope(owner, work)
}

/// The service the lines of the process's wind-down go under: the current
/// task's owner; else, with nothing attached, the one service running
/// now. For a task that outlives the services' stop (the listener for a
/// second Ctrl-C), whose lines would otherwise be only printed once no
/// service runs.
pub(crate) fn owner_now() -> Option<Telemetry> {
    if let Ok(Some(owner)) = LOG_OWNER.try_with(Owner::target) {
        return Some(owner);
    }
    if !ATTACHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .is_empty()
    {
        return None;
    }
    match live().as_slice() {
        [only] => Some(only.telemetry.clone()),
        _ => None,
    }
}

/// `work`, to be spawned onto a task of its own, carrying the log owner
/// of the task that spawns it: a task-local is not passed on to a
/// spawned task by itself.
pub(crate) fn inherit<F: Future>(work: F) -> impl Future<Output = F::Output> {
    match LOG_OWNER.try_with(Owner::clone) {
        Ok(owner) => futures::future::Either::Left(LOG_OWNER.scope(owner, work)),
        Err(_) => futures::future::Either::Right(work),
    }
}

/// The services the process runs now, for the lines of its own (see the
/// module docs). Process-wide, like the log layer: one subscriber sees
/// every line of the process.
static LIVE: Mutex<Vec<LiveEntry>> = Mutex::new(Vec::new());

/// One service of [`LIVE`].
#[derive(Debug)]
struct LiveEntry {
    id: u64,
    service: String,
    instance: String,
    telemetry: Telemetry,
}

/// Numbers the entries of [`LIVE`].
static NEXT_LIVE: AtomicU64 = AtomicU64::new(0);

/// A service counted among the ones the process runs, until dropped.
#[derive(Debug)]
pub(crate) struct LiveService {
    id: u64,
    telemetry: Telemetry,
}

impl LiveService {
    /// Counts `service`'s instance `instance`, whose records `telemetry`
    /// sends, as running.
    pub(crate) fn new(telemetry: Telemetry, service: &str, instance: &str) -> Self {
        let id = NEXT_LIVE.fetch_add(1, Ordering::Relaxed);
        live().push(LiveEntry {
            id,
            service: service.to_owned(),
            instance: instance.to_owned(),
            telemetry: telemetry.clone(),
        });
        Self { id, telemetry }
    }

    /// The service's records.
    pub(crate) fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

impl Drop for LiveService {
    fn drop(&mut self) {
        live().retain(|e| e.id != self.id);
    }
}

fn live() -> std::sync::MutexGuard<'static, Vec<LiveEntry>> {
    LIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Every target a forwarder of the process was attached to, so a forced
/// exit can flush them all (see [`flush_forwarded`]).
static ATTACHED: Mutex<Vec<Telemetry>> = Mutex::new(Vec::new());

/// Waits, for up to `within`, until every line forwarded so far has been
/// stored (or published and flushed to the server, or given up). For a process about to exit without
/// running destructors: a forced exit after a second Ctrl-C.
pub(crate) async fn flush_forwarded(within: Duration) {
    let mut targets = ATTACHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    targets.extend(live().iter().map(|e| e.telemetry.clone()));
    // The caller's own service, which may have stopped already.
    targets.extend(LOG_OWNER.try_with(Owner::target).ok().flatten());
    futures::future::join_all(targets.iter().map(|t| t.flush_to_server(within))).await;
}

/// The layer; see the module docs.
#[derive(Debug, Clone)]
pub struct NatsLogLayer {
    forwarder: LogForwarder,
}

impl NatsLogLayer {
    /// A layer and the handle that attaches it to NATS later.
    pub fn new() -> (Self, LogForwarder) {
        let forwarder = LogForwarder::default();
        (
            Self {
                forwarder: forwarder.clone(),
            },
            forwarder,
        )
    }
}

impl<S: Subscriber> Layer<S> for NatsLogLayer {
    // Declare interest in WARN and ERROR only. Without this the layer would
    // count as interested in everything, turning every debug/trace span and
    // event of the process (the NATS client's included) on globally — a cost
    // measured at ~20 % of RPC latency.
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if *metadata.level() <= Level::WARN {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        *metadata.level() <= Level::WARN
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::WARN {
            return; // INFO, DEBUG, TRACE are "greater" (more verbose) than WARN
        }
        // Never forward the NATS client's own complaints: publishing them
        // could loop while the connection is down.
        if event.metadata().target().starts_with("async_nats") {
            return;
        }
        // Where it goes (see the module docs); a line nobody takes is not
        // even formatted.
        let owner = LOG_OWNER.try_with(Owner::target).ok().flatten();
        let explicit = self.forwarder.target.get();
        // Whether the line went to one of several services it is not
        // known to be from.
        let mut of_process = false;
        let target: Telemetry = match (owner, explicit) {
            (Some(owner), _) => owner,
            (None, Some(attached)) => attached.clone(),
            (None, None) => {
                let live = live();
                let Some(first) = live.first() else {
                    return;
                };
                of_process = live.len() > 1;
                first.telemetry.clone()
            }
        };
        let mut visitor = Visitor::default();
        event.record(&mut visitor);
        // A line that repeats a lifecycle event published beside it
        // (`lifecycle = true`) is printed, not forwarded: the monitor would
        // show it twice.
        if visitor
            .fields
            .remove(LIFECYCLE_FIELD)
            .is_some_and(|v| v == "true" || v == true)
        {
            return;
        }
        let mut record = LogRecord::new(
            chrono::Utc::now(),
            if level == Level::ERROR {
                LogLevel::Error
            } else {
                LogLevel::Warn
            },
            LogKind::Log,
            visitor.message,
        );
        record.fields = visitor.fields;
        record
            .fields
            .insert("target".into(), event.metadata().target().into());
        if of_process {
            record.fields.insert("scope".into(), "process".into());
        }
        // Only queued: the instance's sender (a task) publishes it, so a
        // line logged outside the runtime is forwarded too.
        target.event(record);
    }
}

#[derive(Default)]
struct Visitor {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

impl tracing::field::Visit for Visitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().into(), text.into());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    use tracing_subscriber::{filter::LevelFilter, prelude::*};

    use super::NatsLogLayer;

    /// What the printing layer wrote.
    #[derive(Clone, Default)]
    struct Printed(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Printed {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn added_as_documented_it_leaves_the_printed_info_lines_alone() {
        let printed = Printed::default();
        let writer = printed.clone();
        let (layer, _forwarder) = NatsLogLayer::new();
        let subscriber = tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(move || writer.clone()),
            )
            .with(layer.with_filter(LevelFilter::WARN));
        tracing::subscriber::with_default(subscriber, || tracing::info!("quotes are flowing"));
        let text = String::from_utf8(printed.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("quotes are flowing"), "printed: {text:?}");
    }
}
