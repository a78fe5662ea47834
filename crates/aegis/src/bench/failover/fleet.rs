//! The echo-service instances of a failover benchmark, each a real child
//! process (`aegis service echo`, this same binary), so that SIGKILL and
//! SIGTERM hit a whole process with its own NATS connection.
//!
//! Every start of a slot is a new incarnation with its own instance id
//! (`echo-a-1`, then `echo-a-2` after a restart, ...), the way a restarted pod
//! gets a new name: the dead incarnation's registry record (which lingers
//! until its TTL) is never confused with the new one's. Children are killed
//! when the fleet drops, on error and on Ctrl-C alike; their logs go to a
//! temporary folder that is kept when the benchmark fails.

use std::{
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::Context;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

/// The service every child runs.
pub(crate) const SERVICE: &str = "echo-service";
/// Its method.
pub(crate) const METHOD: &str = "echo";

struct Slot {
    name: String,
    incarnation: u32,
    id: String,
    child: Option<Child>,
    /// Sent SIGTERM: its exit is expected.
    stopping: bool,
}

/// The child processes, by slot.
pub(crate) struct Fleet {
    exe: PathBuf,
    url: String,
    single_active: Option<String>,
    log_dir: PathBuf,
    slots: Vec<Slot>,
    keep_logs: bool,
}

impl Fleet {
    /// A fleet of `n` slots (nothing started yet) for the server at `url`;
    /// `single_active` makes the children a sticky single-active group.
    pub(crate) fn new(n: usize, url: &str, single_active: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the aegis binary to start instances")?;
        let log_dir = std::env::temp_dir().join(format!(
            "aegis-bench-failover-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        ));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;
        let slots = (0..n)
            .map(|i| Slot {
                name: slot_name(i),
                incarnation: 0,
                id: String::new(),
                child: None,
                stopping: false,
            })
            .collect();
        Ok(Self {
            exe,
            url: url.to_owned(),
            single_active: single_active.map(str::to_owned),
            log_dir,
            slots,
            keep_logs: false,
        })
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Where the children's logs are.
    pub(crate) fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// Keep the logs when the fleet drops (on failure, or when asked).
    pub(crate) fn keep_logs(&mut self) {
        self.keep_logs = true;
    }

    /// The instance id of the slot's current incarnation.
    pub(crate) fn id(&self, slot: usize) -> &str {
        &self.slots[slot].id
    }

    /// The slot whose current incarnation has this instance id.
    pub(crate) fn slot_of(&self, id: &str) -> Option<usize> {
        self.slots.iter().position(|s| s.id == id)
    }

    /// The current instance ids, by slot.
    pub(crate) fn ids(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.id.clone()).collect()
    }

    /// Starts the slot's next incarnation and returns its instance id.
    pub(crate) fn start(&mut self, slot: usize) -> anyhow::Result<String> {
        let s = &mut self.slots[slot];
        anyhow::ensure!(s.child.is_none(), "slot {} is still running", s.name);
        s.incarnation += 1;
        s.stopping = false;
        s.id = format!("echo-{}-{}", s.name, s.incarnation);
        let log_path = self.log_dir.join(format!("{}.log", s.id));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.args([
            "service",
            "echo",
            "--instance-id",
            &s.id,
            "--nats-url",
            &self.url,
        ]);
        if let Some(group) = &self.single_active {
            cmd.args(["--single-active", group]);
        }
        cmd.env_remove("AEGIS_CONFIG")
            .env_remove("AEGIS_INSTANCE_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} ({})", s.id, self.exe.display()))?;
        s.child = Some(child);
        Ok(s.id.clone())
    }

    /// Fails when a started child has already exited (it could not start);
    /// the error names its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        for s in self.slots.iter_mut().filter(|s| !s.stopping) {
            if let Some(child) = &mut s.child
                && let Some(status) = child.try_wait()?
            {
                s.child = None;
                anyhow::bail!(
                    "instance {} exited on its own ({status}); see {}",
                    s.id,
                    self.log_dir.join(format!("{}.log", s.id)).display()
                );
            }
        }
        Ok(())
    }

    /// SIGKILLs the slot's process and reaps it.
    pub(crate) async fn kill(&mut self, slot: usize) -> anyhow::Result<()> {
        let s = &mut self.slots[slot];
        let mut child = s
            .child
            .take()
            .with_context(|| format!("slot {} is not running", s.name))?;
        child
            .start_kill()
            .with_context(|| format!("killing {}", s.id))?;
        child.wait().await?;
        Ok(())
    }

    /// Sends SIGTERM to the slot's process (a graceful stop).
    pub(crate) fn terminate(&mut self, slot: usize) -> anyhow::Result<()> {
        let s = &mut self.slots[slot];
        s.stopping = true;
        let pid = s
            .child
            .as_ref()
            .and_then(Child::id)
            .with_context(|| format!("slot {} is not running", s.name))?;
        let pid = i32::try_from(pid).context("pid out of range")?;
        nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM)
            .with_context(|| format!("sending SIGTERM to {}", s.id))?;
        Ok(())
    }

    /// Waits up to `timeout` for the slot's process to exit (SIGKILL after
    /// that) and returns its status.
    pub(crate) async fn wait_exit(
        &mut self,
        slot: usize,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        let s = &mut self.slots[slot];
        let mut child = s
            .child
            .take()
            .with_context(|| format!("slot {} is not running", s.name))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                anyhow::bail!("{} did not stop within {timeout:?} of SIGTERM", s.id)
            }
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.slots {
            if let Some(child) = &mut s.child {
                let _ = child.start_kill();
            }
        }
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

fn slot_name(i: usize) -> String {
    const NAMES: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    match NAMES.get(i) {
        Some(c) => (*c as char).to_string(),
        None => format!("s{i}"),
    }
}
