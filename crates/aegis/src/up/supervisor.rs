//! Child processes of the showcase: started with their logs under
//! `.aegis/logs/`, their pids under `.aegis/pids/` (so `aegis chaos` can find
//! them), restarted after a delay when they die unless told not to, and
//! stopped in order — services, then the monitor, then NATS.
//!
//! `aegis chaos` talks to a running supervisor through files in
//! `.aegis/control/`: `hold-NAME` keeps a killed child down, `restart-NAME`
//! starts it again.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::Context;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    process::{Child, Command},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What kind of child, which decides the stop order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A service instance (stopped first).
    Service,
    /// The monitor API.
    Monitor,
    /// A NATS node (stopped last).
    Nats,
}

/// How to start one child.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Unique name: `nats-n1`, `monitor`, `order-1`, ...
    pub name: String,
    /// Its kind.
    pub kind: Kind,
    /// The program.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

struct Slot {
    spec: ChildSpec,
    child: Option<Child>,
    restart_at: Option<Instant>,
    restarts: u32,
}

/// Owns the children.
pub struct Supervisor {
    state_dir: PathBuf,
    slots: Vec<Slot>,
    restart: bool,
    restart_delay: Duration,
}

impl Supervisor {
    /// A supervisor keeping its files under `state_dir`.
    ///
    /// # Errors
    /// When its folders cannot be created.
    pub fn new(state_dir: &Path, restart: bool) -> anyhow::Result<Self> {
        for sub in ["logs", "pids", "control"] {
            std::fs::create_dir_all(state_dir.join(sub))?;
        }
        // Control requests left from an earlier run mean nothing now.
        for entry in std::fs::read_dir(state_dir.join("control"))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            state_dir: state_dir.to_owned(),
            slots: Vec::new(),
            restart,
            // Longer than a registry TTL (3 s), so a crash is visible as a
            // missing instance before the replacement registers.
            restart_delay: Duration::from_secs(5),
        })
    }

    /// Starts a child and keeps it.
    ///
    /// # Errors
    /// When it cannot be spawned.
    pub fn start(&mut self, spec: ChildSpec) -> anyhow::Result<()> {
        let child = spawn(&self.state_dir, &spec)?;
        self.slots.push(Slot {
            spec,
            child: Some(child),
            restart_at: None,
            restarts: 0,
        });
        Ok(())
    }

    /// The log file of a child.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.state_dir.join("logs").join(format!("{name}.log"))
    }

    /// Watches the children until `shutdown`: restarts the ones that die
    /// (after a delay, logged), obeys `aegis chaos` control files.
    pub async fn supervise(&mut self, shutdown: &CancellationToken) {
        loop {
            self.tick();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    /// One round of supervision: restart what died, obey control files.
    pub fn tick(&mut self) {
        let control = self.state_dir.join("control");
        for slot in &mut self.slots {
            let name = slot.spec.name.clone();
            let held = control.join(format!("hold-{name}")).exists();
            let restart_req = control.join(format!("restart-{name}"));
            if let Some(child) = &mut slot.child
                && let Ok(Some(status)) = child.try_wait()
            {
                slot.child = None;
                let _ =
                    std::fs::remove_file(self.state_dir.join("pids").join(format!("{name}.pid")));
                if held {
                    warn!(child = %name, %status, "exited; held down by `aegis chaos` until restart-nats");
                } else if self.restart {
                    warn!(child = %name, %status, delay = ?self.restart_delay, "exited; restarting after a delay");
                    slot.restart_at = Some(Instant::now() + self.restart_delay);
                } else {
                    warn!(child = %name, %status, "exited; not restarting (--no-restart)");
                }
            }
            if restart_req.exists() {
                let _ = std::fs::remove_file(&restart_req);
                let _ = std::fs::remove_file(control.join(format!("hold-{name}")));
                if slot.child.is_none() {
                    slot.restart_at = Some(Instant::now());
                }
            }
            if slot.child.is_none()
                && !control.join(format!("hold-{name}")).exists()
                && slot.restart_at.is_some_and(|t| Instant::now() >= t)
            {
                slot.restart_at = None;
                match spawn(&self.state_dir, &slot.spec) {
                    Ok(child) => {
                        slot.restarts += 1;
                        info!(child = %name, restarts = slot.restarts, "restarted");
                        slot.child = Some(child);
                    }
                    Err(e) => {
                        warn!(child = %name, error = %e, "restart failed; trying again later");
                        slot.restart_at = Some(Instant::now() + self.restart_delay);
                    }
                }
            }
        }
    }

    /// Stops every child: services, then the monitor, then NATS; each gets
    /// SIGTERM and 10 s before SIGKILL.
    pub async fn stop_all(mut self) {
        for kind in [Kind::Service, Kind::Monitor, Kind::Nats] {
            for slot in self.slots.iter().filter(|s| s.spec.kind == kind) {
                if let Some(pid) = slot
                    .child
                    .as_ref()
                    .and_then(Child::id)
                    .and_then(|p| i32::try_from(p).ok())
                {
                    let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
            for slot in self.slots.iter_mut().filter(|s| s.spec.kind == kind) {
                if let Some(child) = &mut slot.child {
                    match tokio::time::timeout(Duration::from_secs(10), child.wait()).await {
                        Ok(_) => info!(child = %slot.spec.name, "stopped"),
                        Err(_) => {
                            warn!(child = %slot.spec.name, "did not stop within 10 s; killing it");
                            let _ = child.kill().await;
                        }
                    }
                }
                let _ = std::fs::remove_file(
                    self.state_dir
                        .join("pids")
                        .join(format!("{}.pid", slot.spec.name)),
                );
            }
        }
    }
}

fn spawn(state_dir: &Path, spec: &ChildSpec) -> anyhow::Result<Child> {
    let log_path = state_dir.join("logs").join(format!("{}.log", spec.name));
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    if let Some(pid) = child.id() {
        std::fs::write(
            state_dir.join("pids").join(format!("{}.pid", spec.name)),
            pid.to_string(),
        )?;
    }
    Ok(child)
}

/// SIGKILLs every showcase child with a pid file: what a forced exit of
/// `aegis up` does, so that no child outlives it.
pub fn kill_all(state_dir: &Path) {
    let me = std::process::id() as i32;
    for name in running_children(state_dir) {
        // Only our own children: a stale pid file may name a reused pid.
        if let Some(pid) = read_pid(state_dir, &name)
            && parent_of(pid) == Some(me)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The parent pid of `pid`, from `/proc/{pid}/stat` (the field after the
/// state, which follows the parenthesised command name).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// Reads the pid of a running showcase child from its pid file.
pub fn read_pid(state_dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(state_dir.join("pids").join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Names of the showcase children with a pid file.
pub fn running_children(state_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(state_dir.join("pids"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()?
                .strip_suffix(".pid")
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    names
}
