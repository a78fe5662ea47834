//! The process's root shutdown token: cancelled on Ctrl-C, SIGTERM or SIGHUP
//! (a closed terminal or ssh session), so every long-running command stops
//! the same way (decide, tell, wait).

use std::io::Write;

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Returns a token cancelled on the first Ctrl-C, SIGTERM or SIGHUP. A second
/// Ctrl-C exits at once.
pub fn on_signals() -> CancellationToken {
    on_signals_then(|| {})
}

/// Like [`on_signals`], and runs `before_forced_exit` when a second Ctrl-C
/// forces the exit: e.g. `aegis up` kills its children there, which a forced
/// exit would otherwise leave running.
///
/// Only a second Ctrl-C (SIGINT) forces: a person pressing it again. A
/// SIGTERM or SIGHUP after the first signal says nothing new, and often
/// comes more than once without anyone asking twice: a closed terminal's
/// shell and kernel each send SIGHUP, systemd sends SIGTERM to every
/// process of a unit, and the parent-death signal comes once per thread of
/// a dying `aegis up`.
pub fn on_signals_then(before_forced_exit: impl FnOnce() + Send + 'static) -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    // One set of listeners for every signal, from now on: a listener
    // created after the first signal would miss a second one sent right
    // after it, and the parent-death signal may come at once.
    let mut signals = Signals::new();
    if stop_with_parent() == Some(false) {
        info!("the process that started this one is gone; stopping");
        t.cancel();
    }
    tokio::spawn(async move {
        if !t.is_cancelled() {
            signals.next().await;
        }
        info!("shutdown requested; stopping (press Ctrl-C again to force)");
        t.cancel();
        while signals.next().await != Received::Interrupt {}
        // Said on a terminal that may be gone: a failed write is no panic.
        let _ = writeln!(std::io::stderr(), "forced exit");
        before_forced_exit();
        std::process::exit(130);
    });
    token
}

/// Set by `aegis up` (its supervisor) in the environment of each child it
/// starts, to its own pid: such a child asks the kernel for SIGTERM when
/// its parent dies (Linux `PR_SET_PDEATHSIG`), and so stops gracefully
/// rather than run on, orphaned, when `aegis up` is killed.
pub const STOP_WITH_PARENT_ENV: &str = "AEGIS_STOP_WITH_PARENT";

/// Asks for SIGTERM when the parent dies, when [`STOP_WITH_PARENT_ENV`]
/// says so: `Some(true)` when asked and the parent lives, `Some(false)`
/// when it died already (before the request took effect, so no signal
/// will come), `None` when not asked or not possible here.
fn stop_with_parent() -> Option<bool> {
    let parent: i32 = std::env::var(STOP_WITH_PARENT_ENV).ok()?.parse().ok()?;
    #[cfg(target_os = "linux")]
    {
        if let Err(e) = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM) {
            tracing::warn!(error = %e, "cannot ask to be stopped with the process that started this one");
            return None;
        }
        Some(nix::unistd::getppid().as_raw() == parent)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = parent;
        None
    }
}

/// Ctrl-C and (on Unix) SIGTERM and SIGHUP, listened to from creation on.
/// SIGHUP's default action would end the process with no cleanup: `aegis
/// up` would leave its children running, holding their ports.
struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

/// Which signal [`Signals::next`] received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Received {
    /// Ctrl-C (SIGINT).
    Interrupt,
    /// SIGTERM or SIGHUP.
    Other,
}

impl Signals {
    fn new() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Signals {
                term: signal(SignalKind::terminate()).ok(),
                int: signal(SignalKind::interrupt()).ok(),
                // Started under `nohup` (SIGHUP ignored): it stays ignored.
                hup: (!hangup_ignored())
                    .then(|| signal(SignalKind::hangup()).ok())
                    .flatten(),
            }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// The next Ctrl-C, SIGTERM or SIGHUP.
    async fn next(&mut self) -> Received {
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
                () = recv(&mut self.term) => Received::Other,
                () = recv(&mut self.int) => Received::Interrupt,
                () = recv(&mut self.hup) => Received::Other,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            Received::Interrupt
        }
    }
}

/// Whether this process was started with SIGHUP ignored (`nohup`), as the
/// kernel says in `/proc/self/status` (`SigIgn`, a hex mask whose lowest
/// bit is SIGHUP); read before any handler is installed. Tests that send
/// `aegis up` a terminal's SIGHUP ask it too: a test run under `nohup`
/// passes SIGHUP ignored on to the processes it starts.
///
/// ```
/// // Under `nohup`, true; from a terminal's shell, false.
/// let _ignored: bool = aegis::shutdown::hangup_ignored();
/// ```
#[cfg(unix)]
pub fn hangup_ignored() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let mask = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
            u64::from_str_radix(mask.trim(), 16).ok()
        })
        .is_some_and(|mask| mask & 1 == 1)
}
