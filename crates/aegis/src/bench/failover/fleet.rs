//! The echo-service instances of a failover benchmark, each a real child
//! process (`aegis service echo`, this same binary), so that SIGKILL and
//! SIGTERM hit a whole process with its own NATS connection.
//!
//! Every start of a slot is a new incarnation with its own instance id
//! (`echo-a-1`, then `echo-a-2` after a restart, ...), the way a restarted pod
//! gets a new name: the dead incarnation's registry record (which lingers
//! until its TTL) is never confused with the new one's. The children are
//! run by `aegis up`'s supervisor (`up::supervisor`), which never restarts
//! them here; they are killed when the fleet drops, on error and on Ctrl-C
//! alike; their logs go to a temporary folder that is kept when the
//! benchmark fails.

use std::{path::PathBuf, process::ExitStatus, time::Duration};

use anyhow::Context;
use nix::sys::signal::Signal;

use crate::up::supervisor::{ChildSpec, Kind, Supervisor};

/// The service every child runs.
pub(crate) const SERVICE: &str = "echo-service";
/// Its method.
pub(crate) const METHOD: &str = "echo";

struct Slot {
    name: String,
    incarnation: u32,
    /// The current incarnation's instance id, also its child's name.
    id: String,
}

/// The child processes, by slot, run by the same supervisor as `aegis up`
/// (never restarted: a benchmark restarts a slot itself, as a new
/// incarnation).
pub(crate) struct Fleet {
    exe: PathBuf,
    url: String,
    single_active: Option<String>,
    state_dir: PathBuf,
    supervisor: Supervisor,
    slots: Vec<Slot>,
    keep_logs: bool,
}

impl Fleet {
    /// A fleet of `n` slots (nothing started yet) for the server at `url`;
    /// `single_active` makes the children a sticky single-active group.
    pub(crate) fn new(n: usize, url: &str, single_active: Option<&str>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding the aegis binary to start instances")?;
        let state_dir = std::env::temp_dir().join(format!(
            "aegis-bench-failover-{}-{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        ));
        let supervisor = Supervisor::new(&state_dir, false)
            .with_context(|| format!("creating {}", state_dir.display()))?;
        let slots = (0..n)
            .map(|i| Slot {
                name: slot_name(i),
                incarnation: 0,
                id: String::new(),
            })
            .collect();
        Ok(Self {
            exe,
            url: url.to_owned(),
            single_active: single_active.map(str::to_owned),
            state_dir,
            supervisor,
            slots,
            keep_logs: false,
        })
    }

    /// Number of slots.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Where the children's logs are.
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.state_dir.join("logs")
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
        anyhow::ensure!(
            s.id.is_empty() || !self.supervisor.is_running(&s.id),
            "slot {} is still running",
            s.name
        );
        s.incarnation += 1;
        let id = format!("echo-{}-{}", s.name, s.incarnation);
        let mut args = vec![
            "service".to_owned(),
            "echo".to_owned(),
            "--instance-id".to_owned(),
            id.clone(),
            "--nats-url".to_owned(),
            self.url.clone(),
        ];
        if let Some(group) = &self.single_active {
            args.extend(["--single-active".to_owned(), group.clone()]);
        }
        self.supervisor.start(ChildSpec {
            name: id.clone(),
            kind: Kind::Service,
            program: self.exe.clone(),
            args,
            env: Vec::new(),
            unset: vec!["AEGIS_CONFIG".to_owned(), "AEGIS_INSTANCE_ID".to_owned()],
        })?;
        s.id.clone_from(&id);
        Ok(id)
    }

    /// Fails when a started child has already exited (it could not start);
    /// the error names its log.
    pub(crate) fn check_alive(&mut self) -> anyhow::Result<()> {
        self.supervisor.check_alive()
    }

    /// SIGKILLs the slot's process and reaps it.
    pub(crate) async fn kill(&mut self, slot: usize) -> anyhow::Result<()> {
        self.supervisor.kill(&self.slots[slot].id).await
    }

    /// Sends SIGTERM to the slot's process (a graceful stop).
    pub(crate) fn terminate(&mut self, slot: usize) -> anyhow::Result<()> {
        self.supervisor
            .signal(&self.slots[slot].id, Signal::SIGTERM)
    }

    /// Waits up to `timeout` for the slot's process to exit (SIGKILL after
    /// that) and returns its status.
    pub(crate) async fn wait_exit(
        &mut self,
        slot: usize,
        timeout: Duration,
    ) -> anyhow::Result<ExitStatus> {
        self.supervisor
            .wait_exit(&self.slots[slot].id, timeout)
            .await
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.supervisor.kill_now();
        if !self.keep_logs {
            let _ = std::fs::remove_dir_all(&self.state_dir);
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
