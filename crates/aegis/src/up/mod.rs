//! `aegis up`: the local showcase on one machine.
//!
//! Starts a nats-server (JetStream, state under `.aegis/`) as a child process
//! unless `--nats-url` points at an existing one, then the service instances as
//! separate child processes of this same binary, prints where to look, and on
//! Ctrl-C / SIGTERM stops the children (services first, NATS last) and exits.
//! A second `aegis up` while one runs says so instead of fighting over ports.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use aegis_sdk::{AegisConfig, Connection};
use anyhow::{Context, bail};
use clap::Args;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Options of `aegis up`.
#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Use this existing NATS (comma-separated URLs) and start no server.
    #[arg(long = "nats-url", env = "AEGIS_NATS_URL")]
    pub nats_url: Option<String>,
    /// Client port of the NATS server started here.
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Where state (JetStream data, logs, credentials) lives.
    #[arg(long, default_value = ".aegis")]
    pub state_dir: PathBuf,
    /// How many echo-service instances to run.
    #[arg(long, default_value_t = 2)]
    pub echo_instances: usize,
}

struct Managed {
    name: String,
    child: Child,
}

/// Runs the showcase until `shutdown` is cancelled.
///
/// # Errors
/// When another `aegis up` holds the state directory, a port is taken, or a
/// child cannot start.
pub async fn run(args: UpArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.state_dir)
        .with_context(|| format!("creating the state directory {}", args.state_dir.display()))?;
    let state_dir = args.state_dir.canonicalize()?;
    let _lock = PidLock::acquire(&state_dir.join("up.pid"))?;
    let logs = state_dir.join("logs");
    std::fs::create_dir_all(&logs)?;

    let mut children: Vec<Managed> = Vec::new();
    let url = match &args.nats_url {
        Some(url) => url.clone(),
        None => {
            let child = start_nats(&state_dir, args.nats_port, &logs).await?;
            children.push(Managed {
                name: "nats-server".into(),
                child,
            });
            format!("nats://127.0.0.1:{}", args.nats_port)
        }
    };
    let conn = wait_for_nats(&url, &shutdown).await?;
    let version = conn.server_version().to_string();

    let exe = std::env::current_exe().context("locating the aegis binary")?;
    let mut instances = Vec::new();
    for i in 1..=args.echo_instances {
        let id = format!("echo-{i}");
        let log = std::fs::File::create(logs.join(format!("{id}.log")))?;
        let child = Command::new(&exe)
            .args(["service", "echo", "--instance-id", &id, "--nats-url", &url])
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {id}"))?;
        children.push(Managed {
            name: id.clone(),
            child,
        });
        instances.push(id);
    }

    println!();
    println!("Aegis showcase is up");
    println!("  NATS            {url} (nats-server {version})");
    println!("  state           {}", state_dir.display());
    println!("  logs            {}", logs.display());
    println!(
        "  echo-service    {} ({} instances)",
        instances.join(", "),
        instances.len()
    );
    println!();
    println!("Try:  aegis call echo-service echo '{{\"hello\":\"desk\"}}' --nats-url {url}");
    println!("Ctrl-C stops everything.");

    let exited = watch_children(&mut children, &shutdown).await;
    if let Some(name) = exited {
        warn!(child = %name, "a child process exited; stopping the showcase");
    }
    drop(conn);
    stop_all(children).await;
    println!("Aegis showcase stopped.");
    Ok(())
}

async fn start_nats(state_dir: &Path, port: u16, logs: &Path) -> anyhow::Result<Child> {
    if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        bail!(
            "port {port} is taken: is another NATS running? Use --nats-url to attach to it or --nats-port to pick another"
        );
    }
    let binary = aegis_testkit::nats_server_binary().context("finding nats-server")?;
    let store = state_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let log = std::fs::File::create(logs.join("nats-server.log"))?;
    info!(binary = %binary.display(), port, "starting nats-server");
    Command::new(binary)
        .args([
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-js",
            "--server_name",
            "aegis-1",
            "-sd",
        ])
        .arg(&store)
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log))
        .kill_on_drop(true)
        .spawn()
        .context("starting nats-server")
}

async fn wait_for_nats(url: &str, shutdown: &CancellationToken) -> anyhow::Result<Connection> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut config = AegisConfig::with_servers(url);
        config.nats.connect_timeout = Duration::from_secs(1);
        match Connection::connect(config).await {
            Ok(c) => return Ok(c),
            Err(e) if tokio::time::Instant::now() > deadline => {
                return Err(e).with_context(|| format!("NATS at {url} did not become ready"));
            }
            Err(_) => {}
        }
        tokio::select! {
            () = shutdown.cancelled() => bail!("interrupted while waiting for NATS"),
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

/// Waits for shutdown, or for a child to exit (returns its name).
async fn watch_children(children: &mut [Managed], shutdown: &CancellationToken) -> Option<String> {
    loop {
        for c in children.iter_mut() {
            if let Ok(Some(status)) = c.child.try_wait() {
                warn!(child = %c.name, %status, "child exited");
                return Some(c.name.clone());
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

/// Stops services first (SIGTERM, then SIGKILL after 10 s), NATS last.
async fn stop_all(mut children: Vec<Managed>) {
    let nats = children
        .iter()
        .position(|c| c.name == "nats-server")
        .map(|i| children.remove(i));
    for c in &children {
        terminate(&c.child);
    }
    for c in &mut children {
        reap(c).await;
    }
    if let Some(mut n) = nats {
        terminate(&n.child);
        reap(&mut n).await;
    }
}

fn terminate(child: &Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

async fn reap(c: &mut Managed) {
    match tokio::time::timeout(Duration::from_secs(10), c.child.wait()).await {
        Ok(_) => info!(child = %c.name, "stopped"),
        Err(_) => {
            warn!(child = %c.name, "did not stop within 10 s; killing it");
            let _ = c.child.kill().await;
        }
    }
}

/// A pid file that keeps two `aegis up` from sharing one state directory.
struct PidLock(PathBuf);

impl PidLock {
    fn acquire(path: &Path) -> anyhow::Result<PidLock> {
        if let Ok(text) = std::fs::read_to_string(path)
            && let Ok(pid) = text.trim().parse::<i32>()
            && nix::sys::signal::kill(Pid::from_raw(pid), None).is_ok()
            && pid != std::process::id() as i32
        {
            bail!(
                "aegis up is already running (pid {pid}, state {}); stop it with Ctrl-C or `kill {pid}` first",
                path.parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            );
        }
        std::fs::write(path, std::process::id().to_string())
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(PidLock(path.to_owned()))
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
