//! Child processes of the showcase and of the benchmarks: started with
//! their logs under `{state}/logs/`, their pids under `{state}/pids/` (so
//! `aegis chaos` can find them), restarted after a delay when they die
//! unless told not to, signalled, awaited or killed one by one (the
//! failover benchmark's fleet), and stopped in order — services, then the
//! monitor, then NATS. Every child is killed when the supervisor drops,
//! and stops when the supervisor's process dies (a parent-death signal).
//!
//! `aegis chaos` talks to a running supervisor through files in
//! `.aegis/control/`: `hold-NAME` keeps a killed child down, `restart-NAME`
//! starts it again.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
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
    /// Environment variables it must not inherit.
    pub unset: Vec<String>,
}

struct Slot {
    spec: ChildSpec,
    child: Option<Child>,
    restart_at: Option<Instant>,
    restarts: u32,
    /// Signalled to stop: its exit is expected.
    stopping: bool,
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
            stopping: false,
        });
        Ok(())
    }

    fn slot(&mut self, name: &str) -> anyhow::Result<&mut Slot> {
        self.slots
            .iter_mut()
            .find(|s| s.spec.name == name)
            .with_context(|| format!("no child named {name}"))
    }

    /// The running child's process, or an error naming it.
    fn running(&mut self, name: &str) -> anyhow::Result<&mut Child> {
        self.slot(name)?
            .child
            .as_mut()
            .with_context(|| format!("{name} is not running"))
    }

    /// Whether the child named `name` runs (started, not yet exited).
    pub fn is_running(&mut self, name: &str) -> bool {
        self.slot(name)
            .ok()
            .and_then(|s| s.child.as_mut())
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Whether the child named `name` has exited and nothing will start it
    /// again: `--no-restart`, or stopped on purpose. Seen after a [`tick`].
    ///
    /// [`tick`]: Supervisor::tick
    pub fn is_down_for_good(&mut self, name: &str) -> bool {
        let restart_asked = restart_path(&self.state_dir, name).exists();
        self.slot(name)
            .is_ok_and(|s| s.child.is_none() && s.restart_at.is_none() && !restart_asked)
    }

    /// Sends `signal` to a running child; SIGTERM and SIGINT mark its exit
    /// as expected: not reported, not restarted.
    ///
    /// # Errors
    /// When no such child runs or the signal cannot be sent.
    pub fn signal(&mut self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let pid = self
            .running(name)?
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .with_context(|| format!("{name} has exited"))?;
        nix::sys::signal::kill(Pid::from_raw(pid), signal)
            .with_context(|| format!("sending {signal} to {name} (pid {pid})"))?;
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) {
            self.slot(name)?.stopping = true;
        }
        Ok(())
    }

    /// SIGKILLs a running child and reaps it.
    ///
    /// # Errors
    /// When no such child runs.
    pub async fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let slot = self.slot(name)?;
        slot.stopping = true;
        let mut child = slot
            .child
            .take()
            .with_context(|| format!("{name} is not running"))?;
        child
            .start_kill()
            .with_context(|| format!("killing {name}"))?;
        child.wait().await?;
        remove_pid(&self.pid_path(name));
        Ok(())
    }

    /// Waits up to `timeout` for a child to exit and returns its status;
    /// SIGKILLs it after that.
    ///
    /// # Errors
    /// When no such child runs, or it did not exit in time.
    pub async fn wait_exit(
        &mut self,
        name: &str,
        timeout: Duration,
    ) -> anyhow::Result<std::process::ExitStatus> {
        let mut child = self
            .slot(name)?
            .child
            .take()
            .with_context(|| format!("{name} is not running"))?;
        remove_pid(&self.pid_path(name));
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("{name} did not stop within {timeout:?}")
            }
        }
    }

    /// Fails when a child exited that nobody stopped (it could not start,
    /// or crashed); the error names its log. For supervisors that do not
    /// restart.
    ///
    /// # Errors
    /// The first such child.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for slot in self.slots.iter_mut().filter(|s| !s.stopping) {
            if let Some(child) = &mut slot.child
                && let Some(status) = child.try_wait()?
            {
                slot.child = None;
                bail!(
                    "{} exited on its own ({status}); see {}",
                    slot.spec.name,
                    log_path(&self.state_dir, &slot.spec.name).display()
                );
            }
        }
        Ok(())
    }

    /// SIGKILLs every child without waiting (what dropping does too).
    pub fn kill_now(&mut self) {
        for slot in &mut self.slots {
            if let Some(child) = &mut slot.child {
                let _ = child.start_kill();
            }
        }
    }

    fn pid_path(&self, name: &str) -> PathBuf {
        pid_path(&self.state_dir, name)
    }

    /// The log file of a child.
    pub fn log_path(&self, name: &str) -> PathBuf {
        log_path(&self.state_dir, name)
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
        for slot in &mut self.slots {
            let name = slot.spec.name.clone();
            let hold = hold_path(&self.state_dir, &name);
            let held = hold.exists();
            let restart_req = restart_path(&self.state_dir, &name);
            if let Some(child) = &mut slot.child
                && let Ok(Some(status)) = child.try_wait()
            {
                slot.child = None;
                remove_pid(&pid_path(&self.state_dir, &name));
                if slot.stopping {
                    // Stopped on purpose (SIGTERM or SIGINT through `signal`;
                    // `kill` reaps its child itself): not a crash.
                    info!(child = %name, %status, "stopped");
                } else if held {
                    // `aegis chaos` stopped it (kill-nats, restart-nats):
                    // planned by the operator, and restarted when asked.
                    info!(child = %name, %status, "exited; held down by `aegis chaos` until restart-nats");
                } else if self.restart {
                    // A clean exit is planned (an operator's SIGTERM to its
                    // pid, to restart one instance); any other, a crash.
                    if status.success() {
                        info!(child = %name, %status, delay = ?self.restart_delay, "exited; restarting after a delay");
                    } else {
                        warn!(child = %name, %status, delay = ?self.restart_delay, "exited; restarting after a delay");
                    }
                    slot.restart_at = Some(Instant::now() + self.restart_delay);
                } else {
                    warn!(child = %name, %status, "exited; not restarting (--no-restart)");
                }
            }
            if restart_req.exists() {
                let _ = std::fs::remove_file(&restart_req);
                let _ = std::fs::remove_file(&hold);
                if slot.child.is_none() {
                    slot.restart_at = Some(Instant::now());
                }
            }
            if slot.child.is_none()
                && !hold.exists()
                && slot.restart_at.is_some_and(|t| Instant::now() >= t)
            {
                slot.restart_at = None;
                match spawn(&self.state_dir, &slot.spec) {
                    Ok(child) => {
                        slot.restarts += 1;
                        info!(child = %name, restarts = slot.restarts, "restarted");
                        slot.child = Some(child);
                        slot.stopping = false;
                    }
                    Err(e) => {
                        warn!(child = %name, error = %aegis_sdk::startup::error_line(&e), "restart failed; trying again later");
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
                remove_pid(&pid_path(&self.state_dir, &slot.spec.name));
            }
        }
    }
}

/// Where child `name`'s pid file is.
pub(crate) fn pid_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("pids").join(format!("{name}.pid"))
}

/// Where child `name`'s log is.
fn log_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("logs").join(format!("{name}.log"))
}

/// The control file that keeps child `name` down once it exits.
pub(crate) fn hold_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("control").join(format!("hold-{name}"))
}

/// The control file that asks for child `name` to be started again.
pub(crate) fn restart_path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("control").join(format!("restart-{name}"))
}

fn spawn(state_dir: &Path, spec: &ChildSpec) -> anyhow::Result<Child> {
    let log_path = log_path(state_dir, &spec.name);
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("opening {}", log_path.display()))?;
    let mut cmd = command(&spec.program);
    for name in &spec.unset {
        cmd.env_remove(name);
    }
    cmd.args(&spec.args)
        .envs(spec.env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let child = spawner::spawn(cmd)
        .with_context(|| format!("starting {} ({})", spec.name, spec.program.display()))?;
    if let Some(pid) = child.id() {
        write_pid(&pid_path(state_dir, &spec.name), pid)?;
    }
    Ok(child)
}

/// The command that starts `program` as a child the supervisor alone stops:
///
/// - In a process group of its own, so the signal a terminal sends its
///   foreground group (Ctrl-C's SIGINT, a closed terminal's SIGHUP) reaches
///   only the supervisor, which then stops the children once each, in
///   order. Children that got the terminal's SIGINT as well would all stop
///   at once, out of that order (NATS with the services), and a second
///   Ctrl-C would force every one of them out without deregistering,
///   resigning or draining.
/// - (Linux) Sent SIGTERM when the supervisor dies without stopping it
///   (SIGKILL, a crash), so that no child outlives it holding its ports:
///   the parent-death signal (`PR_SET_PDEATHSIG`). This crate has no
///   unsafe code, so it cannot set it between fork and exec; instead an
///   `aegis` child sets it on itself as it starts
///   ([`crate::shutdown::STOP_WITH_PARENT_ENV`]), and another program
///   (nats-server) is started through `setpriv --pdeathsig TERM`
///   (util-linux), which sets it and then execs the program in the same
///   process, when this machine has a `setpriv` that can.
///
/// The kernel sends that signal when the *thread* that forked the child
/// exits, not the process: see [`spawner`].
fn command(program: &Path) -> Command {
    let own = std::env::current_exe().is_ok_and(|exe| exe == program);
    let mut cmd = match setpriv() {
        Some(setpriv) if !own => {
            let mut cmd = Command::new(setpriv);
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(program);
            cmd
        }
        _ => Command::new(program),
    };
    cmd.process_group(0).env(
        crate::shutdown::STOP_WITH_PARENT_ENV,
        std::process::id().to_string(),
    );
    cmd
}

/// `setpriv`, when it is found and can set a parent-death signal (Linux,
/// util-linux 2.33 or later); checked once.
fn setpriv() -> Option<&'static Path> {
    static SETPRIV: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            if !cfg!(target_os = "linux") {
                return None;
            }
            let path = std::env::var_os("PATH").unwrap_or_default();
            let Some(found) = std::env::split_paths(&path)
                .chain(["/usr/bin".into(), "/bin".into()])
                .map(|dir| dir.join("setpriv"))
                .find(|p| p.is_file())
            else {
                warn!("no setpriv here (util-linux): the NATS nodes would outlive a killed aegis up");
                return None;
            };
            let works = std::process::Command::new(&found)
                .args(["--pdeathsig", "TERM", "--", "true"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if !works {
                warn!(setpriv = %found.display(), "setpriv cannot set a parent-death signal; NATS nodes would outlive a killed supervisor");
            }
            works.then_some(found)
        })
        .as_deref()
}

/// The one thread every child is forked from.
///
/// A child's parent-death signal (see [`command`]) fires when the thread
/// that forked it exits, not the process. A runtime's threads come and go
/// (a blocking-pool thread ends when idle, a worker that blocks in place is
/// replaced), so a child forked from one of them could be stopped while
/// the supervisor runs on. This thread is started once and never ends: it
/// exits only with the process.
mod spawner {
    use std::{
        io,
        sync::{OnceLock, mpsc},
    };

    use tokio::process::{Child, Command};

    type Job = (
        Command,
        tokio::runtime::Handle,
        mpsc::Sender<io::Result<Child>>,
    );

    /// Spawns `cmd` from the spawner thread, registered with the caller's
    /// runtime (which reaps it and awaits its exit).
    pub(super) fn spawn(cmd: Command) -> io::Result<Child> {
        static JOBS: OnceLock<io::Result<mpsc::Sender<Job>>> = OnceLock::new();
        let jobs = JOBS
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<Job>();
                std::thread::Builder::new()
                    .name("aegis-spawner".into())
                    .spawn(move || {
                        for (mut cmd, runtime, reply) in rx {
                            let _in_runtime = runtime.enter();
                            let _ = reply.send(cmd.spawn());
                        }
                    })
                    .map(|_| tx)
            })
            .as_ref()
            .map_err(|e| io::Error::new(e.kind(), format!("starting the spawner thread: {e}")))?;
        let runtime = tokio::runtime::Handle::try_current().map_err(io::Error::other)?;
        let (reply, answer) = mpsc::channel();
        jobs.send((cmd, runtime, reply))
            .map_err(|_| io::Error::other("the spawner thread is gone"))?;
        answer
            .recv()
            .map_err(|_| io::Error::other("the spawner thread is gone"))?
    }
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

/// Writes `pid` to the pid file at `path`, and beside it (`PATH.start`)
/// what tells that process from a later one given the same pid: its start
/// time (field 22 of `/proc/PID/stat`, clock ticks after boot) and the
/// boot it started in (`/proc/sys/kernel/random/boot_id`). A pid alone
/// names whatever process has it now: the pid files of an `aegis up` that
/// died without its clean-up (SIGKILL, OOM, power loss) stay behind, and
/// low pids are reused at once after a reboot. The pid file itself holds
/// only the pid, as before (`kill $(cat pids/NAME.pid)` and older readers
/// go on working).
///
/// # Errors
/// When the pid file cannot be written.
pub fn write_pid(path: &Path, pid: u32) -> std::io::Result<()> {
    let start = start_path(path);
    match i32::try_from(pid).ok().and_then(identity) {
        Some(identity) => std::fs::write(&start, identity)?,
        None => {
            let _ = std::fs::remove_file(&start);
        }
    }
    std::fs::write(path, pid.to_string())
}

/// Removes a pid file written by [`write_pid`], and its start file.
pub fn remove_pid(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(start_path(path));
}

/// What a pid file says of its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidFile {
    /// No pid file (or none with a pid in it).
    Missing,
    /// The process the file was written for, still running.
    Live(i32),
    /// Its process exited (or is a zombie, not yet reaped).
    Gone(i32),
    /// Stale: the pid now belongs to another process (named by its
    /// `comm`), which must not be signalled.
    Reused {
        /// The pid in the file.
        pid: i32,
        /// The program that has it now.
        program: String,
    },
}

impl PidFile {
    /// The pid of the process the file was written for, while it runs.
    pub fn live(&self) -> Option<i32> {
        match self {
            PidFile::Live(pid) => Some(*pid),
            _ => None,
        }
    }
}

/// Reads the pid file at `path` and checks that its pid is still the
/// process it was written for: the start time and boot recorded beside
/// it match. A file without them (written by an older `aegis up`) is taken
/// conservatively: its process counts only when its program is `aegis` or
/// `nats-server` (`/proc/PID/exe`, or the first word of its command line
/// when that cannot be read), the only programs `aegis up` runs.
pub fn check_pid(path: &Path) -> PidFile {
    let Some(pid) = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse::<i32>().ok())
    else {
        return PidFile::Missing;
    };
    if !super::remote::process_alive(pid) {
        return PidFile::Gone(pid);
    }
    let same = match std::fs::read_to_string(start_path(path)) {
        Ok(recorded) => identity(pid).is_some_and(|now| now == recorded.trim()),
        Err(_) => program_of(pid).is_some_and(|p| p == "aegis" || p == "nats-server"),
    };
    if same {
        PidFile::Live(pid)
    } else {
        let program = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        // Gone meanwhile: then it is just gone.
        if super::remote::process_alive(pid) {
            PidFile::Reused { pid, program }
        } else {
            PidFile::Gone(pid)
        }
    }
}

/// Where the start file of the pid file at `path` is.
fn start_path(path: &Path) -> PathBuf {
    let mut start = path.as_os_str().to_owned();
    start.push(".start");
    PathBuf::from(start)
}

/// `pid`'s start time and the boot it started in, as a start file holds
/// them: `TICKS BOOT_ID`.
fn identity(pid: i32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22; the fields after the parenthesised command name start at
    // field 3 (the state).
    let start: u64 = stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(format!("{start} {}", boot.trim()))
}

/// The file name of `pid`'s program: of `/proc/PID/exe` (a binary
/// replaced since it started reads `NAME (deleted)`), else of the first
/// word of its command line (another user's process hides its exe).
fn program_of(pid: i32) -> Option<String> {
    let path = match std::fs::read_link(format!("/proc/{pid}/exe")) {
        Ok(exe) => exe,
        Err(_) => {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let first = cmdline.split(|b| *b == 0).next()?;
            PathBuf::from(String::from_utf8_lossy(first).into_owned())
        }
    };
    let name = path.file_name()?.to_str()?;
    Some(name.strip_suffix(" (deleted)").unwrap_or(name).to_owned())
}

/// Reads the pid of a running showcase child from its pid file.
pub fn read_pid(state_dir: &Path, name: &str) -> Option<i32> {
    std::fs::read_to_string(pid_path(state_dir, name))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, script: &str) -> ChildSpec {
        ChildSpec {
            name: name.to_owned(),
            kind: Kind::Service,
            program: "/bin/sh".into(),
            args: vec!["-c".to_owned(), script.to_owned()],
            env: vec![("SUPERVISOR_TEST_SET".to_owned(), "yes".to_owned())],
            // Set in every process that runs this test.
            unset: vec!["HOME".to_owned()],
        }
    }

    #[tokio::test]
    async fn children_are_signalled_awaited_killed_and_checked_one_by_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path(), false).unwrap();
        sup.start(spec(
            "env",
            "echo \"set=$SUPERVISOR_TEST_SET home=${HOME:-none}\"",
        ))
        .unwrap();
        sup.start(spec("sleeper", "exec /bin/sleep 30")).unwrap();
        sup.start(spec("victim", "exec /bin/sleep 30")).unwrap();
        assert!(read_pid(dir.path(), "sleeper").is_some());

        let status = sup.wait_exit("env", Duration::from_secs(10)).await.unwrap();
        assert!(status.success());
        let log = std::fs::read_to_string(sup.log_path("env")).unwrap();
        assert!(log.contains("set=yes home=none"), "{log}");

        sup.signal("sleeper", Signal::SIGTERM).unwrap();
        let status = sup
            .wait_exit("sleeper", Duration::from_secs(10))
            .await
            .unwrap();
        assert!(!status.success());
        assert!(read_pid(dir.path(), "sleeper").is_none());

        sup.kill("victim").await.unwrap();
        assert!(!sup.is_running("victim"));
        assert!(sup.signal("victim", Signal::SIGTERM).is_err());

        // A child that exits without being stopped is reported, with its log.
        sup.start(spec("crasher", "exit 3")).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Err(e) = sup.check_alive() {
                    return e;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap();
        assert!(
            err.to_string().contains("crasher exited on its own"),
            "{err}"
        );
        assert!(err.to_string().contains("crasher.log"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_child_outlives_the_thread_that_started_it() {
        if setpriv().is_none() {
            eprintln!("no setpriv that sets a parent-death signal here; skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        Supervisor::new(dir.path(), false).unwrap();
        let runtime = tokio::runtime::Handle::current();
        // Started from a thread that ends once the child runs (its
        // parent-death signal is set by then), as a runtime's blocking-pool
        // thread may: the signal is tied to the thread that forked, so the
        // child must not be forked there.
        let path = dir.path().to_owned();
        let mut child = std::thread::spawn(move || {
            let _in_runtime = runtime.enter();
            let child = spawn(&path, &spec("orphan", "echo ready; exec /bin/sleep 30")).unwrap();
            let log = log_path(&path, "orphan");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("ready")
            {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the child did not start"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            child
        })
        .join()
        .unwrap();
        let lived = tokio::time::timeout(Duration::from_millis(500), child.wait()).await;
        assert!(lived.is_err(), "the child died with its thread: {lived:?}");
        child.start_kill().unwrap();
    }

    /// Ticks until `done` holds, or fails after 10 s.
    async fn tick_until(sup: &mut Supervisor, what: &str, done: impl Fn(&mut Supervisor) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !done(sup) {
            assert!(
                Instant::now() < deadline,
                "{what} did not happen within 10 s"
            );
            sup.tick();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_restarting_supervisor_restarts_a_crash_but_not_a_child_it_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let mut sup = Supervisor::new(dir.path(), true).unwrap();
        sup.restart_delay = Duration::from_millis(10);
        sup.start(spec("crashes", "exec /bin/sleep 30")).unwrap();
        sup.start(spec("stopped", "exec /bin/sleep 30")).unwrap();

        // Killed from outside, as `aegis chaos kill` does: restarted.
        let pid = read_pid(dir.path(), "crashes").unwrap();
        nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
        tick_until(&mut sup, "the restart", |s| {
            s.slot("crashes").unwrap().restarts == 1
        })
        .await;
        assert!(sup.is_running("crashes"));

        // Stopped by the supervisor itself: stays down.
        sup.signal("stopped", Signal::SIGTERM).unwrap();
        tick_until(&mut sup, "the stop", |s| {
            s.slot("stopped").unwrap().child.is_none()
        })
        .await;
        let quiet = Instant::now() + Duration::from_millis(200);
        while Instant::now() < quiet {
            sup.tick();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!sup.is_running("stopped"));
        assert_eq!(sup.slot("stopped").unwrap().restarts, 0);
        sup.kill_now();
    }
}
