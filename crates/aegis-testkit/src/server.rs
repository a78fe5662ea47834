//! [`NatsServer`]: one `nats-server` process on free ports with its own
//! temporary directory (config, log and JetStream store).
//!
//! The process is killed and the directory removed when the value is
//! dropped, including during a panic's unwind.

use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::builder::NatsServerBuilder;
use crate::config::NodeConfig;
use crate::error::TestkitError;
use crate::net::{has_meta_leader, http_get};
use crate::support::PORT_ATTEMPTS;

/// How long [`NatsServer::start`] and restarts wait for `/healthz` by default.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// Pause between readiness probes.
const POLL: Duration = Duration::from_millis(25);
/// Lines of log quoted in [`TestkitError::NotReady`].
const LOG_TAIL_LINES: usize = 40;

/// A running `nats-server` for tests, listening on `127.0.0.1`.
///
/// Blocking calls ([`start`](Self::start), [`restart`](Self::restart),
/// [`stop`](Self::stop)) poll with short sleeps; from a current-thread tokio
/// runtime they pause the client's background tasks while they run, which
/// tests rarely mind (use `spawn_blocking` if yours does).
#[derive(Debug)]
pub struct NatsServer {
    binary: PathBuf,
    config: NodeConfig,
    extra_args: Vec<String>,
    ready_timeout: Duration,
    child: Option<Child>,
    /// Where in the log the current run started, so errors quote only it.
    log_offset: u64,
    /// Last field: removed only after `Drop::drop` has killed the process.
    dir: TempDir,
}

impl NatsServer {
    /// Starts a single JetStream-enabled server and waits until it is healthy.
    ///
    /// # Errors
    ///
    /// [`TestkitError::BinaryNotFound`] when no `nats-server` >= 2.11 is
    /// installed, [`TestkitError::NotReady`] when it does not become healthy
    /// within 30 s.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = aegis_testkit::NatsServer::start()?;
    /// let client = async_nats::connect(server.url()).await?;
    /// client.publish("greet", "hi".into()).await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn start() -> Result<Self, TestkitError> {
        Self::builder().start()
    }

    /// A builder for a server with non-default options.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::builder().jetstream(false).start()?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Writes the config file into `dir`; the process is not started yet.
    pub(crate) fn prepare(
        binary: PathBuf,
        config: NodeConfig,
        extra_args: Vec<String>,
        ready_timeout: Duration,
        dir: TempDir,
    ) -> Result<Self, TestkitError> {
        fs::create_dir_all(&config.store_dir)?;
        fs::write(dir.path().join("nats-server.conf"), config.render())?;
        Ok(Self {
            binary,
            config,
            extra_args,
            ready_timeout,
            child: None,
            log_offset: 0,
            dir,
        })
    }

    /// The client URL, `nats://127.0.0.1:{port}`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// assert!(server.url().starts_with("nats://127.0.0.1:"));
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.config.port)
    }

    /// The client URL with the system account's credentials
    /// (`nats://sys:{password}@127.0.0.1:{port}`): a connection on it reads
    /// server events such as `$SYS.ACCOUNT.*.DISCONNECT`. Clients without
    /// credentials (plain [`url`](Self::url)) land in the application
    /// account `AEGIS`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = aegis_testkit::NatsServer::start()?;
    /// let system = async_nats::connect(server.system_url()).await?;
    /// let _events = system.subscribe("$SYS.ACCOUNT.*.DISCONNECT").await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn system_url(&self) -> String {
        format!(
            "nats://{}:{}@127.0.0.1:{}",
            crate::config::SYSTEM_USER,
            self.config.system_password,
            self.config.port
        )
    }

    /// The system account's user name and password (see
    /// [`system_url`](Self::system_url)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// let (user, password) = server.system_credentials();
    /// assert_eq!(user, "sys");
    /// # let _ = password;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn system_credentials(&self) -> (&str, &str) {
        (crate::config::SYSTEM_USER, &self.config.system_password)
    }

    /// The client port.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn port(&self) -> u16 {
        self.config.port
    }

    /// The HTTP monitoring port (`/healthz`, `/varz`, `/jsz`, ...).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// let varz = format!("http://127.0.0.1:{}/varz", server.monitor_port());
    /// # let _ = varz;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn monitor_port(&self) -> u16 {
        self.config.monitor_port
    }

    /// The cluster (route) port, for nodes of a [`NatsCluster`](crate::NatsCluster).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert!(cluster.node(0).cluster_port().is_some());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn cluster_port(&self) -> Option<u16> {
        self.config.cluster.as_ref().map(|c| c.port)
    }

    /// The `server_name` (`n1`, `n2`, ... in a cluster).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let cluster = aegis_testkit::NatsCluster::start(3)?;
    /// assert_eq!(cluster.node(0).server_name(), "n1");
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn server_name(&self) -> &str {
        &self.config.server_name
    }

    /// The JetStream store directory (inside the temporary directory, so it
    /// survives restarts and is removed on drop).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// assert!(server.store_dir().exists());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn store_dir(&self) -> &Path {
        &self.config.store_dir
    }

    /// The server's log file (stdout and stderr of every run, appended).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// let log = std::fs::read_to_string(server.log_path())?;
    /// assert!(log.contains("Server is ready"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The config file the server runs with.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let server = aegis_testkit::NatsServer::start()?;
    /// println!("{}", std::fs::read_to_string(server.config_path())?);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.conf")
    }

    /// The process id, or `None` after [`kill`](Self::kill) or [`stop`](Self::stop).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// assert!(server.pid().is_some());
    /// server.kill();
    /// assert!(server.pid().is_none());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// True while the process is alive (it may have exited on its own).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// assert!(server.is_running());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills the process with SIGKILL (a crash, no goodbye to the cluster)
    /// and waits for it. Does nothing when it is not running.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// server.kill();
    /// assert!(!server.is_running());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Fails only when the process already exited; `wait` reaps it.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the process gracefully: SIGTERM, then SIGKILL if it is still
    /// running after 10 s. Does nothing when it is not running.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// server.stop();
    /// assert!(!server.is_running());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn stop(&mut self) {
        if self.signal("-TERM") {
            let deadline = Instant::now() + STOP_GRACE;
            while let Some(child) = self.child.as_mut()
                && Instant::now() < deadline
                && matches!(child.try_wait(), Ok(None))
            {
                thread::sleep(POLL);
            }
        }
        self.kill();
    }

    /// Sends `signal` (`-TERM`, `-USR2`, ...) to the process if it runs;
    /// returns whether it was sent. Only an unreaped child is signalled: its
    /// pid cannot have been reused. std can only SIGKILL; `kill` avoids a
    /// libc dependency.
    fn signal(&mut self, signal: &str) -> bool {
        let Some(child) = self.child.as_mut() else {
            return false;
        };
        matches!(child.try_wait(), Ok(None)) && crate::process::signal(child.id(), signal)
    }

    /// Puts the server in lame duck mode (SIGUSR2), the first step of a
    /// planned shutdown: it stops accepting clients, hands the JetStream
    /// leaderships it holds to other nodes, tells its clients (they may move
    /// on their own), and after its grace period (10 s by default) closes
    /// the clients left, then exits. Returns at once; does nothing when the
    /// server is not running.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut cluster = aegis_testkit::NatsCluster::start(3)?;
    /// cluster.node_mut(0).enter_lame_duck();
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn enter_lame_duck(&mut self) {
        self.signal("-USR2");
    }

    /// Freezes the process (SIGSTOP): its connections stay open but nothing
    /// is read or answered, as with a hung or overloaded server. Requests
    /// sent meanwhile wait. [`resume`](Self::resume) lets it go on;
    /// [`kill`](Self::kill) ends a frozen server at once (a graceful stop
    /// would wait out its grace period).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// server.pause();
    /// server.resume();
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    ///
    /// Returns once every thread of the process is stopped (Linux: read
    /// from `/proc`): `kill` returns when the signal is queued, and on a
    /// loaded machine the server went on for milliseconds after, answering
    /// what was sent meanwhile.
    ///
    /// # Panics
    ///
    /// When the process is not stopped within 5 s (it died, and is not
    /// reaped yet): a test would go on believing it frozen.
    pub fn pause(&mut self) {
        if !self.signal("-STOP") {
            return;
        }
        if let Some(pid) = self.pid() {
            crate::process::wait_stopped(pid, "nats-server");
        }
    }

    /// Lets a [`pause`](Self::pause)d process go on (SIGCONT).
    pub fn resume(&mut self) {
        self.signal("-CONT");
    }

    /// Stops the server (gracefully, if running) and starts it again on the
    /// same ports with the same store, then waits until it is healthy (and,
    /// in a cluster, sees a JetStream meta leader).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Spawn`] or [`TestkitError::NotReady`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// server.kill();
    /// server.restart()?;
    /// assert!(server.is_running());
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let mut attempt = 1;
        loop {
            self.spawn()?;
            match self.wait_until(Instant::now() + self.ready_timeout) {
                // The ports are fixed now; a lingering socket may still hold
                // one for a moment, so wait and try again.
                Err(e) if e.is_port_conflict() && attempt < PORT_ATTEMPTS => {
                    self.kill();
                    attempt += 1;
                    thread::sleep(Duration::from_millis(250));
                }
                result => return result,
            }
        }
    }

    /// Waits up to `timeout` until the server is healthy (and, in a
    /// cluster, sees a JetStream meta leader), e.g. after other nodes were
    /// killed or restarted.
    ///
    /// # Errors
    ///
    /// [`TestkitError::NotReady`] when it is not running, exits, or times out.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// let mut server = aegis_testkit::NatsServer::start()?;
    /// server.wait_ready(Duration::from_secs(5))?;
    /// # Ok::<(), aegis_testkit::TestkitError>(())
    /// ```
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), TestkitError> {
        self.wait_until(Instant::now() + timeout)
    }

    /// Starts the process, its output appended to the log file.
    pub(crate) fn spawn(&mut self) -> Result<(), TestkitError> {
        self.kill();
        let mut log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        self.log_offset = log.metadata()?.len();
        writeln!(
            log,
            "[aegis-testkit] starting {} -c {}",
            self.binary.display(),
            self.config_path().display()
        )?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(self.config_path())
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|source| TestkitError::Spawn {
                path: self.binary.clone(),
                source,
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Polls the monitoring endpoint until ready, the process exits, or
    /// `deadline` passes.
    pub(crate) fn wait_until(&mut self, deadline: Instant) -> Result<(), TestkitError> {
        loop {
            let Some(child) = self.child.as_mut() else {
                return Err(self.not_ready("the server is not running".into()));
            };
            if let Some(status) = child.try_wait()? {
                return Err(self.not_ready(format!("the process exited ({status})")));
            }
            if self.probe() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(self.not_ready("timed out waiting for /healthz".into()));
            }
            thread::sleep(POLL);
        }
    }

    /// `/healthz` answers 200 once the server (and JetStream, if on) is up;
    /// a clustered node additionally needs an elected meta leader.
    fn probe(&self) -> bool {
        let port = self.config.monitor_port;
        if !matches!(http_get(port, "/healthz"), Ok((200, _))) {
            return false;
        }
        if self.config.cluster.is_none() || !self.config.jetstream {
            return true;
        }
        matches!(http_get(port, "/jsz"), Ok((200, body)) if has_meta_leader(&body))
    }

    /// The server names this node has routes to (from `/routez`); `None`
    /// when it does not answer (frozen, busy, starting), which tells
    /// nothing about its routes.
    pub(crate) fn route_peers(&self) -> Option<Vec<String>> {
        match http_get(self.config.monitor_port, "/routez") {
            Ok((200, body)) => Some(crate::net::route_remote_names(&body)),
            _ => None,
        }
    }

    pub(crate) fn not_ready(&self, reason: String) -> TestkitError {
        TestkitError::NotReady {
            server_name: self.config.server_name.clone(),
            reason,
            log_tail: self
                .log_tail()
                .unwrap_or_else(|e| format!("(log unreadable: {e})")),
        }
    }

    /// The last lines the current run wrote to the log.
    fn log_tail(&self) -> io::Result<String> {
        const MAX_BYTES: u64 = 64 * 1024;
        let mut file = File::open(self.log_path())?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(
            self.log_offset.max(len.saturating_sub(MAX_BYTES)),
        ))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        Ok(lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n"))
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
