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
        // One set of listeners for both signals: a listener created after
        // the first signal would miss a second one sent right after it.
        let mut signals = Signals::new();
        signals.next().await;
        info!("shutdown requested; stopping (press Ctrl-C again to force)");
        t.cancel();
        signals.next().await;
        eprintln!("forced exit");
        before_forced_exit();
        std::process::exit(130);
    });
    token
}

/// Ctrl-C and (on Unix) SIGTERM, listened to from creation on.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.term) => {}
                () = recv(&mut self.int) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
