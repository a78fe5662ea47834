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
        Ok(())
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        tracing::info!("Ctrl-C received; stopping");
        Ok(())
    }
}
