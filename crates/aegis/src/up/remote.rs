//! A running `aegis up` seen from another process, through its state
//! directory: the children's pids under `pids/` and the supervisor's control
//! files under `control/` (`hold-NAME` keeps a child down once it exits,
//! `restart-NAME` starts it again). What `aegis chaos` and `aegis bench
//! chaos` break the showcase with.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};

use super::supervisor::{self, PidFile};

/// How long a NATS node in lame duck mode may take to exit: its grace
/// period and `lame_duck_duration` (1 s + 30 s in `aegis up`'s configs),
/// with room to spare; the SDK's clients leave it much sooner.
pub const LAME_DUCK_EXIT: Duration = Duration::from_secs(60);

/// How long a NATS node may take to exit after SIGTERM, its quick stop
/// (it closes its clients and its stores at once: well under a second on
/// the showcase's data), with room to spare.
pub const QUICK_EXIT: Duration = Duration::from_secs(30);

/// How often the waits below look again.
const POLL: Duration = Duration::from_millis(20);

/// The children of the `aegis up` whose state is in one directory.
#[derive(Debug, Clone)]
pub struct Remote {
    dir: PathBuf,
}

impl Remote {
    /// The `aegis up` with state in `dir` (which may not run yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// Whether that `aegis up` runs: its `up.pid` names the process it was
    /// written for, still running. (A killed `aegis up` leaves the file
    /// behind, its pid may be another process's since, and nothing obeys a
    /// control file then.)
    pub fn up_running(&self) -> bool {
        supervisor::check_pid(&self.dir.join("up.pid"))
            .live()
            .is_some()
    }

    /// The NATS nodes that `aegis up` runs (`n1`, ...; none on an external
    /// NATS), or `None` when it has not said (still starting).
    pub fn nats_nodes(&self) -> Option<Vec<String>> {
        super::nats::read_nodes(&self.dir)
    }

    /// The pid in child `name`'s pid file (`order-1`, `nats-n2`), when it
    /// has one, whatever process has that pid now; see
    /// [`live_pid`](Self::live_pid).
    pub fn pid(&self, name: &str) -> Option<i32> {
        supervisor::read_pid(&self.dir, name)
    }

    /// The pid of child `name` while it runs: its pid file names the
    /// process it was written for (see [`supervisor::check_pid`]).
    pub fn live_pid(&self, name: &str) -> Option<i32> {
        self.check(name).live()
    }

    /// Whether child `name` runs (a zombie, a missing or a stale pid file
    /// is gone).
    pub fn alive(&self, name: &str) -> bool {
        self.live_pid(name).is_some()
    }

    fn check(&self, name: &str) -> PidFile {
        supervisor::check_pid(&supervisor::pid_path(&self.dir, name))
    }

    /// Sends `signal` to child `name`; returns its pid. A pid file whose
    /// pid is now another process's (stale, left by an `aegis up` that did
    /// not stop cleanly) is refused: that process is not signalled.
    ///
    /// # Errors
    /// When it does not run, its pid file is stale, or it cannot be
    /// signalled.
    pub fn signal(&self, name: &str, signal: Signal) -> anyhow::Result<i32> {
        let pid = match self.check(name) {
            PidFile::Live(pid) => pid,
            PidFile::Missing => bail!("{name} is not running (no pid file)"),
            PidFile::Gone(pid) => bail!("{name} is not running (pid {pid} has exited)"),
            PidFile::Reused { pid, program } => bail!(
                "{name}'s pid file is stale: pid {pid} is now another process ({program}), \
                 not the one `aegis up` started as {name}; it was not signalled"
            ),
        };
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {name} (pid {pid})"))?;
        Ok(pid)
    }

    /// Asks the supervisor to keep `name` down once it exits.
    ///
    /// # Errors
    /// When the control file cannot be written.
    pub fn hold(&self, name: &str) -> anyhow::Result<()> {
        touch(&supervisor::hold_path(&self.dir, name))
    }

    /// Withdraws a [`hold`](Self::hold) that was not used (the child was
    /// never stopped).
    pub fn unhold(&self, name: &str) {
        let _ = std::fs::remove_file(supervisor::hold_path(&self.dir, name));
    }

    /// Withdraws a [`hold`](Self::hold) and a [`release`](Self::release)
    /// the supervisor has not acted on: a failed command leaves no request
    /// behind.
    pub fn withdraw(&self, name: &str) {
        self.unhold(name);
        let _ = std::fs::remove_file(supervisor::restart_path(&self.dir, name));
    }

    /// Asks the supervisor to start `name` again (ending a hold).
    ///
    /// # Errors
    /// When the control file cannot be written.
    pub fn release(&self, name: &str) -> anyhow::Result<()> {
        touch(&supervisor::restart_path(&self.dir, name))
    }

    /// Waits until process `pid` of child `name` has exited (or its pid
    /// file names another process); returns how long that took.
    ///
    /// # Errors
    /// When it still runs after `within`.
    pub async fn wait_gone(
        &self,
        name: &str,
        pid: i32,
        within: Duration,
    ) -> anyhow::Result<Duration> {
        let started = Instant::now();
        while self.live_pid(name) == Some(pid) {
            if started.elapsed() > within {
                bail!("{name} (pid {pid}) did not stop within {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(started.elapsed())
    }

    /// Waits until child `name` runs; returns its pid.
    ///
    /// # Errors
    /// When the supervisor has not started it within `within`.
    pub async fn wait_running(&self, name: &str, within: Duration) -> anyhow::Result<i32> {
        self.wait_new_process(name, None, within).await
    }

    /// Waits until child `name` runs as another process than `old` (its
    /// pid before a restart, if it had one); returns the new pid.
    ///
    /// # Errors
    /// When the supervisor has not started it within `within`.
    pub async fn wait_new_process(
        &self,
        name: &str,
        old: Option<i32>,
        within: Duration,
    ) -> anyhow::Result<i32> {
        let started = Instant::now();
        loop {
            if let Some(pid) = self.live_pid(name).filter(|p| Some(*p) != old) {
                return Ok(pid);
            }
            if started.elapsed() > within {
                bail!("the supervisor did not start {name} within {within:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Writes an empty control file.
fn touch(path: &std::path::Path) -> anyhow::Result<()> {
    std::fs::write(path, "").with_context(|| format!("writing {}", path.display()))
}

/// Whether `pid` runs; a zombie or a stopped-and-reaped process is gone.
/// Reads `/proc` (Linux, like the rest of the showcase).
pub fn process_alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_is_signalled_and_its_exit_awaited_through_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = supervisor::Supervisor::new(dir.path(), false).unwrap();
        sup.start(supervisor::ChildSpec {
            name: "sleeper".to_owned(),
            kind: supervisor::Kind::Service,
            program: "/bin/sh".into(),
            args: vec!["-c".to_owned(), "exec /bin/sleep 30".to_owned()],
            env: Vec::new(),
            unset: Vec::new(),
        })
        .unwrap();
        let remote = Remote::new(dir.path());
        let pid = remote
            .wait_running("sleeper", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(remote.alive("sleeper"));
        remote.hold("sleeper").unwrap();
        assert!(dir.path().join("control/hold-sleeper").exists());

        assert_eq!(remote.signal("sleeper", Signal::SIGTERM).unwrap(), pid);
        // The supervisor (here: this test, ticking) reaps it.
        let reaping = async {
            loop {
                sup.tick();
                tokio::time::sleep(POLL).await;
            }
        };
        tokio::select! {
            gone = remote.wait_gone("sleeper", pid, Duration::from_secs(10)) => { gone.unwrap(); }
            () = reaping => unreachable!(),
        }
        assert!(!remote.alive("sleeper"));
        // Asked to start again: a new process, which the wait tells from
        // the old one.
        remote.release("sleeper").unwrap();
        let restarted = async {
            loop {
                sup.tick();
                tokio::time::sleep(POLL).await;
            }
        };
        let new = tokio::select! {
            new = remote.wait_new_process("sleeper", Some(pid), Duration::from_secs(10)) => new.unwrap(),
            () = restarted => unreachable!(),
        };
        assert_ne!(new, pid);
        assert!(remote.alive("sleeper"));
        sup.kill_now();
        assert!(remote.signal("nobody", Signal::SIGTERM).is_err());
        let err = remote
            .wait_running("nobody", Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("did not start nobody"), "{err}");
    }
}
