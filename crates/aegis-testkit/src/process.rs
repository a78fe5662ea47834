//! Freezing a process of the test's own, as a hung program or a frozen
//! host: SIGSTOP keeps its connections and subscriptions open while
//! nothing in it runs, which neither a crash nor a graceful stop shows.
//!
//! ```no_run
//! let mut child = std::process::Command::new("sleep").arg("60").spawn()?;
//! aegis_testkit::process::freeze(child.id());
//! aegis_testkit::process::thaw(child.id());
//! child.kill()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// How long a process may take to stop once sent SIGSTOP.
const STOP_WITHIN: Duration = Duration::from_secs(5);

/// Sends SIGSTOP to `pid` and returns once every thread of it is stopped
/// (Linux: read from `/proc`): `kill` returns when the signal is queued,
/// and on a loaded machine a process went on for milliseconds after.
///
/// # Panics
/// When the signal cannot be sent, or the process is not stopped within
/// 5 s: a test would go on believing it frozen.
pub fn freeze(pid: u32) {
    assert!(signal(pid, "-STOP"), "cannot send SIGSTOP to pid {pid}");
    wait_stopped(pid, "the process");
}

/// Sends SIGCONT to `pid`: a [`freeze`]d process goes on.
///
/// # Panics
/// When the signal cannot be sent.
pub fn thaw(pid: u32) {
    assert!(signal(pid, "-CONT"), "cannot send SIGCONT to pid {pid}");
}

/// Sends `signal` (`-STOP`, `-CONT`, ...) to `pid` with kill(1); whether
/// it was sent.
pub(crate) fn signal(pid: u32, signal: &str) -> bool {
    Command::new("kill")
        .args([signal, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Waits until every thread of `pid` (named `what` in the panic) is
/// stopped.
///
/// # Panics
/// When it is not within 5 s (it died, and is not reaped yet).
pub(crate) fn wait_stopped(pid: u32, what: &str) {
    let deadline = Instant::now() + STOP_WITHIN;
    while !all_threads_stopped(pid) {
        assert!(
            Instant::now() < deadline,
            "{what} (pid {pid}) was sent SIGSTOP but did not stop within {STOP_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Whether every thread of process `pid` is stopped (state `T` in
/// `/proc/{pid}/task/*/stat`); `true` where `/proc` cannot tell.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
            // "tid (name) state ...": the name may hold spaces or parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                == Some("T")
        })
    })
}
