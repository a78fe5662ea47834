//! The process's root shutdown token: cancelled on Ctrl-C or SIGTERM, so every
//! long-running command stops the same way (decide, tell, wait).

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled on the first Ctrl-C or SIGTERM. A second signal
/// exits at once.
pub fn on_signals() -> CancellationToken {
    on_signals_then(|| {})
}

/// Like [`on_signals`], and runs `before_forced_exit` when a second signal
/// forces the exit: e.g. `aegis up` kills its children there, which a forced
/// exit would otherwise leave running.
pub fn on_signals_then(before_forced_exit: impl FnOnce() + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown requested; stopping (press Ctrl-C again to force)");
        t.cancel();
        wait_for_signal().await;
        eprintln!("forced exit");
        before_forced_exit();
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
