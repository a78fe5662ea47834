//! The stop signals a service process answers: Ctrl-C (SIGINT) and, on
//! Unix, SIGTERM (what Kubernetes, systemd and `aegis up` send).
//! [`shutdown_signal`] waits for either; [`Service::run_until_signal`]
//! serves until then and stops gracefully (the instance deregisters).
//!
//! [`Service::run_until_signal`]: crate::rpc::Service::run_until_signal

use std::time::Duration;

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM the process receives.
/// Then stop what the process runs, in order: subscriptions and workers,
/// services, and drain the connection.
///
/// A graceful stop can take up to a service's shutdown timeout and the
/// drain. Which later signals cut it short:
///
/// - **Ctrl-C (SIGINT) forces.** From the first signal on, a Ctrl-C ends
///   the process at once: one line is logged ("Ctrl-C received while
///   stopping; exiting now"), the WARN/ERROR lines forwarded to NATS are
///   flushed (half a second at most), and the process exits with 130 (128 plus
///   SIGINT's number, what a shell reports for a process the signal
///   killed). Handlers still running are cut off and the instance's
///   record is left to expire. What an operator at a terminal expects
///   from Ctrl-C twice.
/// - **SIGTERM never forces.** Supervisors send it twice in the normal
///   course (systemd's `ExecStop=kill -TERM` followed by its own
///   `KillSignal`, a wrapper that forwards TERM to a process group it
///   also signals): a second SIGTERM is logged and the graceful stop goes
///   on — the instance deregisters, a leader resigns. A supervisor that
///   will not wait sends SIGKILL after its grace period (Kubernetes'
///   `terminationGracePeriodSeconds`, systemd's `TimeoutStopSec`).
///
/// That holds for the rest of the process's life.
///
/// The lines about a later signal are forwarded to NATS (with
/// [`telemetry::init`](crate::telemetry::init) or the log layer) under
/// the service the process ran when the first signal came, even after it
/// has stopped: the "exiting now" line of a Ctrl-C during `conn.drain()`
/// reaches NATS. That is the one service running then (or, from
/// [`Service::run_until_signal`](crate::rpc::Service::run_until_signal),
/// that service); with several running and none chosen, they go where the
/// process's other lines go (see the `log_layer` docs), which after the
/// last stop is nowhere unless the forwarder is attached.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection, service: aegis_sdk::rpc::Service) -> Result<(), Box<dyn std::error::Error>> {
/// aegis_sdk::shutdown_signal().await?;
/// service.shutdown().await?;
/// conn.drain().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The I/O error when the process cannot listen for these signals (no
/// Tokio signal driver: a runtime built without `enable_io`). It is
/// returned at once, never after a wait.
pub async fn shutdown_signal() -> std::io::Result<()> {
    signal_for(None).await
}

/// [`shutdown_signal`], the later signals' lines going under `owner` (the
/// service whose stop the signal starts), else under
/// [`owner_now`](crate::telemetry::log_layer::owner_now) at the first signal.
pub(crate) async fn signal_for(owner: Option<crate::telemetry::Telemetry>) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // Both listeners are set up before waiting, so a signal that comes
        // while the other one is being set up is not missed.
        let mut terminate = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received; stopping"),
            _ = interrupt.recv() => tracing::info!("Ctrl-C received; stopping"),
        }
        let owner = owner.or_else(crate::telemetry::log_layer::owner_now);
        // The same listeners wait for the second signal: Tokio's handler
        // stays installed for the process's life, so without them a second
        // Ctrl-C would be swallowed, and new ones made now could miss a
        // signal that comes before they exist.
        tokio::spawn(crate::telemetry::log_layer::owned_by_opt(
            owner,
            async move {
                loop {
                    tokio::select! {
                        Some(()) = terminate.recv() => tracing::warn!(
                            "SIGTERM received again; the graceful stop goes on \
                             (Ctrl-C or SIGKILL ends the process at once)"
                        ),
                        Some(()) = interrupt.recv() => exit_now().await,
                        // Both listeners gone: the runtime is shutting down.
                        else => return,
                    }
                }
            },
        ));
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        tracing::info!("Ctrl-C received; stopping");
        let owner = owner.or_else(crate::telemetry::log_layer::owner_now);
        tokio::spawn(crate::telemetry::log_layer::owned_by_opt(
            owner,
            async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    exit_now().await;
                }
            },
        ));
        Ok(())
    }
}

/// The exit status after a second Ctrl-C: 128 + SIGINT (2).
const EXIT_SIGINT: i32 = 130;

/// How long a forced exit waits for the forwarded log lines to leave.
const EXIT_FLUSH: Duration = Duration::from_millis(500);

/// Ends the process on a Ctrl-C that comes while the graceful stop runs
/// (after a first Ctrl-C or a SIGTERM), saying so in one line. The lines
/// forwarded to NATS (this one and the stop's so far) are flushed first,
/// briefly: `exit` runs no destructors, so queued lines would be lost.
async fn exit_now() -> ! {
    tracing::warn!(
        "Ctrl-C received while stopping; exiting now without finishing the graceful stop"
    );
    crate::telemetry::log_layer::flush_forwarded(EXIT_FLUSH).await;
    std::process::exit(EXIT_SIGINT)
}
