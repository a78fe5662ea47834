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

use std::{
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
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
    pub fn attach(&self, conn: &crate::Connection, service: &str, instance: &str) {
        let telemetry = Telemetry::new(conn, service, instance);
        if self.target.set(telemetry.clone()).is_ok() {
            ATTACHED
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(telemetry);
        }
    }

    /// Whether [`attach`](Self::attach) was called.
    pub(crate) fn is_attached(&self) -> bool {
        self.target.get().is_some()
    }
}

/// Every target a forwarder of the process was attached to, so a forced
/// exit can flush them all (see [`flush_forwarded`]).
static ATTACHED: Mutex<Vec<Telemetry>> = Mutex::new(Vec::new());

/// Waits, for up to `within`, until every line forwarded so far has been
/// stored (or published and flushed to the server, or given up). For a process about to exit without
/// running destructors: a forced exit after a second Ctrl-C.
pub(crate) async fn flush_forwarded(within: Duration) {
    let targets = ATTACHED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
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
        let Some(telemetry) = self.forwarder.target.get() else {
            return;
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
        // Only queued: the instance's sender (a task) publishes it, so a
        // line logged outside the runtime is forwarded too.
        telemetry.event(record);
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
