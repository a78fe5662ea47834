//! [`init`]: a service binary's logging in one call — printed lines
//! filtered by `RUST_LOG`, and WARN/ERROR forwarded to NATS for the
//! monitor, the per-layer filter set as the [`log_layer`](super::log_layer)
//! docs require. The SDK itself never installs a subscriber; a binary
//! calls this (or builds its own subscriber) once, first thing in `main`.

use std::{ffi::OsString, io::IsTerminal};

use tracing_subscriber::{EnvFilter, filter::LevelFilter, prelude::*};

use super::log_layer::{LogForwarder, NatsLogLayer};

/// What [`init`] prints when `RUST_LOG` is not set: INFO and up, but only
/// the warnings of async-nats (whose INFO lines tell each connection step).
pub const DEFAULT_LOG_FILTER: &str = "info,async_nats=warn";

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
/// filtered by `RUST_LOG` (default [`DEFAULT_LOG_FILTER`]) and coloured
/// only when stdout is a terminal and `NO_COLOR` is unset or empty (a
/// service whose output systemd, docker or Kubernetes collects into a
/// file or a pipe gets plain lines), and WARN and
/// ERROR events forwarded to `aegis.log.{service}.{instance}` (stream
/// `AEGIS_LOG`), where the monitor shows them next to the instance.
///
/// Each line goes under the instance it belongs to (the
/// [`log_layer`](super::log_layer) docs say how that is told): a line a
/// service's own work logs (its handlers, its command workers' and event
/// subscriptions', its registration, election and stop) goes under that
/// service, even in a process that runs several; each of the process's
/// other lines goes to one place: where the returned [`LogForwarder`] is
/// [attached](LogForwarder::attach), else under its service while it runs
/// one, else under the one started first, marked `scope = "process"`,
/// while it runs several. Lines before the first service starts, and after
/// the last one stops, are only printed unless the forwarder is attached;
/// the exception is a later stop signal's line (a Ctrl-C during
/// `conn.drain()` that forces the exit), which goes under the service
/// the first signal stopped (see [`shutdown_signal`](crate::shutdown_signal)).
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
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(colour(
                    std::io::stdout().is_terminal(),
                    std::env::var_os("NO_COLOR"),
                ))
                .with_filter(filter),
        )
        // Its own filter: added bare, its "WARN and up only" would be the
        // whole subscriber's, and silence the printed INFO lines too.
        .with(nats_logs.with_filter(LevelFilter::WARN))
        .try_init()
        .map_err(InitError::AlreadyInstalled)?;
    Ok(forwarder)
}

/// Whether printed lines are coloured: only on a terminal (a file or a
/// pipe would keep the escape codes), and never with `NO_COLOR` set to
/// anything but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some(OsString::new())), "NO_COLOR= is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a file or a pipe");
        assert!(!colour(false, Some("1".into())));
    }
}
