//! The showcase under test: `aegis up` (this same binary) started as a child
//! on free ports with a temporary state directory, and everything the
//! benchmark reads from that directory the way `aegis chaos` and
//! `aegis status` do — pids under `pids/`, the supervisor's control files
//! under `control/`, the monitor's tokens in `credentials`.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aegis_sdk::{AegisConfig, Connection};
use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};

use crate::up::remote::{Remote, process_alive};

/// NATS nodes of the showcase's cluster.
pub(crate) const NODES: usize = 3;

/// A running `aegis up`; stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Showcase {
    child: Child,
    state: Option<tempfile::TempDir>,
    path: PathBuf,
    /// First NATS client port (nodes use base, base+1, base+2).
    base_port: u16,
    /// The monitor API's port.
    pub(crate) api_port: u16,
    keep: bool,
    remote: Remote,
}

impl Showcase {
    /// Starts `aegis up` with 3 NATS nodes and `instances` services.
    ///
    /// # Errors
    /// When the binary cannot be started.
    pub(crate) fn start(instances: &str, keep: bool) -> anyhow::Result<Showcase> {
        let state = tempfile::Builder::new()
            .prefix("aegis-bench-chaos-")
            .tempdir()
            .context("creating the showcase's state directory")?;
        let (base_port, api_port) = crate::up::ports::free_layout(NODES as u16);
        let exe = std::env::current_exe().context("locating the aegis binary")?;
        let log = std::fs::File::create(state.path().join("up.log"))?;
        let child = Command::new(exe)
            .args(["up", "--instances", instances, "--base-port"])
            .arg(base_port.to_string())
            .arg("--api-port")
            .arg(api_port.to_string())
            .arg("--state-dir")
            .arg(state.path())
            .env("AEGIS_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting `aegis up`")?;
        Ok(Showcase {
            child,
            remote: Remote::new(state.path()),
            path: state.path().to_owned(),
            state: Some(state),
            base_port,
            api_port,
            keep,
        })
    }

    /// The state directory.
    pub(crate) fn dir(&self) -> &Path {
        self.path.as_path()
    }

    /// The NATS client URLs of the nodes.
    pub(crate) fn nats_urls(&self) -> Vec<String> {
        (0..NODES)
            .map(|i| format!("nats://127.0.0.1:{}", self.base_port + i as u16))
            .collect()
    }

    /// The NATS monitoring port of node `n` (1-based).
    pub(crate) fn nats_monitor_port(&self, n: usize) -> u16 {
        self.base_port + 4000 + (n - 1) as u16
    }

    /// The monitor API's base URL.
    pub(crate) fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.api_port)
    }

    /// Fails when `aegis up` exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!(
                "`aegis up` exited ({status}); its output is in {}",
                self.dir().join("up.log").display()
            );
        }
        Ok(())
    }

    /// The monitor's viewer token, from the credentials file.
    ///
    /// # Errors
    /// When the file is missing or has no viewer token.
    pub(crate) fn viewer_token(&self) -> anyhow::Result<String> {
        credential(self.dir(), "AEGIS_VIEWER_TOKEN")
    }

    /// Its children, to signal, hold and restart.
    pub(crate) fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Where the logs are.
    pub(crate) fn log_dir(&self) -> PathBuf {
        self.dir().join("logs")
    }
}

impl Drop for Showcase {
    fn drop(&mut self) {
        // SIGTERM lets the supervisor stop its children in order; SIGKILL
        // (kill_on_drop) would leave them running.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(40);
            while process_alive(pid as i32) && std::time::Instant::now() < deadline {
                let _ = self.child.try_wait();
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if self.keep
            && let Some(state) = self.state.take()
        {
            eprintln!("showcase state and logs kept in {}", state.keep().display());
        }
    }
}

/// The connection settings of the benchmark's own NATS clients, from the
/// showcase's state directory. The one place that knows how a client
/// authenticates to the showcase's NATS: as the operator, whose user and
/// password `aegis up` keeps in its credentials file (see
/// `crate::permissions`), with the operator's own reply-inbox prefix.
///
/// # Errors
/// When the credentials file cannot be read or names no operator.
pub(crate) fn nats_config(showcase: &Showcase) -> anyhow::Result<AegisConfig> {
    let mut config = AegisConfig::with_servers(showcase.nats_urls().join(","));
    config.nats.connect_timeout = Duration::from_secs(2);
    config.nats.replicas = NODES;
    let path = showcase.dir().join("credentials");
    let (user, password) = crate::up::credentials::read_operator(&path)?
        .with_context(|| format!("no operator user in {}", path.display()))?;
    config.nats.tls_ca = crate::up::credentials::read_tls_ca(&path)?;
    config.nats.inbox_prefix = Some(crate::permissions::inbox_prefix(&user));
    config.nats.user = Some(user);
    config.nats.password = Some(aegis_sdk::Secret::new(password));
    Ok(config)
}

/// Connects with [`nats_config`].
///
/// # Errors
/// When no node answers.
pub(crate) async fn connect(showcase: &Showcase) -> anyhow::Result<Connection> {
    Connection::connect(nats_config(showcase)?)
        .await
        .context("connecting to the showcase's NATS")
}

/// Reads `key=value` from the showcase's credentials file.
fn credential(dir: &Path, key: &str) -> anyhow::Result<String> {
    let path = dir.join("credentials");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
        .with_context(|| format!("no {key} in {}", path.display()))
}
