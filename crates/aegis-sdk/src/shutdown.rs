//! The stop signals a service process answers: Ctrl-C (SIGINT) and, on
//! Unix, SIGTERM (what Kubernetes, systemd and `aegis up` send).
//! [`shutdown_signal`] waits for either; [`Service::run_until_signal`]
//! serves until then and stops gracefully (the instance deregisters).
//!
//! [`Service::run_until_signal`]: crate::rpc::Service::run_until_signal

/// Resolves on the first Ctrl-C (SIGINT) or SIGTERM the process receives.
/// Then stop what the process runs, in order: subscriptions and workers,
/// services, and drain the connection.
///
/// A graceful stop can take up to a service's shutdown timeout and the
/// drain. Operators expect a second Ctrl-C to cut it short, so from the
/// first signal on, the next Ctrl-C or SIGTERM ends the process at once:
/// one line is logged ("second Ctrl-C received; exiting now") and the
/// process exits with 130 after SIGINT, 143 after SIGTERM (128 plus the
/// signal's number, what a shell reports for a process the signal
/// killed). Handlers still running are cut off and the instance's record
/// is left to expire. That holds for the rest of the process's life, as
/// it would without any handler installed.
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
        // The same listeners wait for the second signal: Tokio's handler
        // stays installed for the process's life, so without them a second
        // Ctrl-C would be swallowed, and new ones made now could miss a
        // signal that comes before they exist.
        tokio::spawn(async move {
            let (which, code) = tokio::select! {
                _ = terminate.recv() => ("SIGTERM", EXIT_SIGTERM),
                _ = interrupt.recv() => ("Ctrl-C", EXIT_SIGINT),
            };
            exit_now(which, code);
        });
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        tracing::info!("Ctrl-C received; stopping");
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                exit_now("Ctrl-C", EXIT_SIGINT);
            }
        });
        Ok(())
    }
}

/// The exit status after a second Ctrl-C: 128 + SIGINT (2).
const EXIT_SIGINT: i32 = 130;
/// The exit status after a second SIGTERM: 128 + SIGTERM (15).
#[cfg(unix)]
const EXIT_SIGTERM: i32 = 143;

/// Ends the process on a second stop signal, saying so in one line.
fn exit_now(which: &str, code: i32) -> ! {
    tracing::warn!("second {which} received; exiting now without finishing the graceful stop");
    std::process::exit(code)
}
