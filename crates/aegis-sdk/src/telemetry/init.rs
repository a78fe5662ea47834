//! [`init`]: a service binary's logging in one call — printed lines
//! filtered by `RUST_LOG`, and WARN/ERROR forwarded to NATS for the
//! monitor, the per-layer filter set as the [`log_layer`](super::log_layer)
//! docs require. The SDK itself never installs a subscriber; a binary
//! calls this (or builds its own subscriber) once, first thing in `main`.

use std::sync::OnceLock;

use tracing_subscriber::{EnvFilter, filter::LevelFilter, prelude::*};

use super::log_layer::{LogForwarder, NatsLogLayer};
use crate::Connection;

/// What [`init`] prints when `RUST_LOG` is not set: INFO and up, but only
/// the warnings of async-nats (whose INFO lines tell each connection step).
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";

/// The forwarder [`init`] installed, attached by the first service the
/// process starts (and then never moved: see [`init`]).
static PROCESS_FORWARDER: OnceLock<LogForwarder> = OnceLock::new();

/// Why [`init`] set nothing up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitError {
    /// `RUST_LOG` is set but is no filter (e.g. `info,=x`).
    #[error("RUST_LOG is not a valid log filter (e.g. `info,aegis_sdk=debug`)")]
    InvalidFilter(#[source] tracing_subscriber::filter::ParseError),
    /// The process already has a global `tracing` subscriber (`init` called
    /// twice, or a subscriber installed another way).
    #[error("a tracing subscriber is already installed in this process")]
    AlreadyInstalled(#[source] tracing_subscriber::util::TryInitError),
}

/// Installs the process's `tracing` subscriber: lines printed to stdout,
/// filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]), and WARN and
/// ERROR events forwarded to `aegis.log.{service}.{instance}` (stream
/// `AEGIS_LOG`), where the monitor shows them next to the instance.
///
/// Forwarding is one subject for the whole process. It starts when the
/// process's first service starts:
/// [`ServiceBuilder::start`](crate::rpc::ServiceBuilder::start) attaches
/// it to that instance, and events before are only printed. The first
/// attachment wins, and the forwarder has no way to tell which service an
/// event came from, so:
///
/// - A process that runs two services (say pricing, then risk) forwards
///   every WARN and ERROR line, risk's too, under pricing's instance
///   (`aegis.log.pricing.{instance}`), and the monitor shows them there.
/// - After that first service stops, later lines still go to its subject,
///   under an instance the monitor no longer lists.
/// - To choose the subject, attach the returned [`LogForwarder`] yourself
///   before starting any service; a process with no service does the same.
///   Or run one service per process, which is what the monitor's
///   per-instance view assumes.
///
/// Nothing needs keeping alive.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// aegis_sdk::telemetry::init()?;
/// let conn = aegis_sdk::Connection::from_env().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`InitError::InvalidFilter`] when `RUST_LOG` does not parse;
/// [`InitError::AlreadyInstalled`] when the process has a subscriber
/// already. Either way nothing was installed.
pub fn init() -> Result<LogForwarder, InitError> {
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(directives) if !directives.trim().is_empty() => {
            EnvFilter::try_new(directives).map_err(InitError::InvalidFilter)?
        }
        _ => EnvFilter::new(DEFAULT_LOG_FILTER),
    };
    let (nats_logs, forwarder) = NatsLogLayer::new();
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        // Its own filter: added bare, its "WARN and up only" would be the
        // whole subscriber's, and silence the printed INFO lines too.
        .with(nats_logs.with_filter(LevelFilter::WARN))
        .try_init()
        .map_err(InitError::AlreadyInstalled)?;
    let _ = PROCESS_FORWARDER.set(forwarder.clone());
    Ok(forwarder)
}

/// Attaches the forwarder [`init`] installed to this instance, unless it
/// is attached already or there is none.
pub(crate) fn attach_process_logs(conn: &Connection, service: &str, instance: &str) {
    if let Some(forwarder) = PROCESS_FORWARDER.get()
        && !forwarder.is_attached()
    {
        forwarder.attach(conn, service, instance);
    }
}
