//! Helpers shared by the `aegis` binary's integration tests: running the
//! binary with its output captured, free ports for `aegis up`, the pid
//! files `aegis up` keeps, and the showcase's bus (one nats-server with its
//! users, or its three nodes as `aegis up` configures them).
#![allow(dead_code, unreachable_pub)] // each test file uses a different part

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use nix::{sys::signal::Signal, unistd::Pid};

pub mod operator_bus;
pub mod showcase_bus;
pub mod showcase_cluster;

pub const AEGIS: &str = env!("CARGO_BIN_EXE_aegis");

/// The variables that would give `aegis` credentials, a configuration or
/// a log level other than a test's own: removed where a test must see what
/// `aegis` does without them.
pub const CREDENTIAL_VARS: [&str; 11] = [
    "AEGIS_LOG",
    "AEGIS_CREDENTIALS",
    "AEGIS_CONFIG",
    "AEGIS_NATS_USER",
    "AEGIS_NATS_PASSWORD",
    "AEGIS_NATS_TOKEN",
    "AEGIS_NATS_NKEY_SEED",
    "AEGIS_NATS_CREDS",
    "AEGIS_NATS_SYSTEM_USER",
    "AEGIS_NATS_SYSTEM_PASSWORD",
    "AEGIS_NATS_SYSTEM_CREDS",
];

/// The smallest `bench rpc` run that still measures every phase: one batch
/// of latency per side, one short throughput round.
pub const TINY_RPC_BENCH: [&str; 10] = [
    "--calls",
    "100",
    "--batch",
    "100",
    "--warmup",
    "10",
    "--rounds",
    "1",
    "--round-secs",
    "0.2",
];

/// Runs `aegis` with `args` to its end (no colour); returns its success
/// and its stdout and stderr together.
pub fn run<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (bool, String) {
    let mut cmd = std::process::Command::new(AEGIS);
    cmd.args(args).env("NO_COLOR", "1");
    output(cmd)
}

/// [`run`] with `--nats-url url` after `args`, off the async runtime (a
/// test's services keep answering meanwhile).
pub async fn run_at(args: &[&str], url: &str) -> (bool, String) {
    let mut args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--nats-url".to_owned(), url.to_owned()]);
    tokio::task::spawn_blocking(move || run(&args))
        .await
        .expect("the aegis run's task")
}

/// Runs `cmd` to its end: its success, and its stdout and stderr together.
pub fn output(mut cmd: std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A child process whose stderr lines arrive on a channel; killed on drop.
pub struct Proc {
    pub child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Proc {
    pub fn spawn(args: &[&str]) -> Proc {
        Self::spawn_with_env(args, &[])
    }

    /// As [`Proc::spawn`], with `env` added to the environment.
    pub fn spawn_with_env(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut child = Command::new(AEGIS)
            .args(args)
            .envs(env.iter().copied())
            .env("AEGIS_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Proc {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// `aegis up` attached to the NATS at `url`, with `instances` (e.g.
    /// `order=2,pricing=0,risk=0`) and its state in `state`, once it says
    /// it is up (within `within`).
    #[allow(dead_code)] // Not every test binary that includes this module starts one.
    pub fn up_attached(url: &str, instances: &str, state: &Path, within: Duration) -> Proc {
        let mut up = Proc::spawn(&[
            "up",
            "--nats-url",
            url,
            "--instances",
            instances,
            "--api-port",
            &free_port().to_string(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        up.wait_for("Ctrl-C stops everything", within);
        up
    }

    /// `aegis up --single-node --no-ui-build` on free ports, with
    /// `instances` and its state in `state`, once it says it is up.
    #[allow(dead_code)] // Not every test binary that includes this module starts one.
    pub fn up_single_node(instances: &str, state: &Path) -> Proc {
        let (base, api) = free_up_ports();
        let mut up = Proc::spawn(&[
            "up",
            "--single-node",
            "--no-ui-build",
            "--instances",
            instances,
            "--base-port",
            &base.to_string(),
            "--api-port",
            &api.to_string(),
            "--state-dir",
            state.to_str().unwrap(),
        ]);
        up.wait_for("Ctrl-C stops everything", Duration::from_secs(180));
        up
    }

    /// Waits for an output line containing `needle`.
    pub fn wait_for(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                let hit = line.contains(needle);
                self.seen.push(line);
                if hit {
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
        }
        panic!("no {needle:?} within {within:?}:\n{}", self.output());
    }

    /// Every line read so far; once the process has exited, every line it
    /// wrote (the reader threads are given up to 2 s to reach the end of
    /// its output).
    pub fn output(&mut self) -> String {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Some(left) = deadline.checked_duration_since(Instant::now()) {
                match self.lines.recv_timeout(left) {
                    Ok(line) => self.seen.push(line),
                    Err(_) => break,
                }
            }
        }
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        self.seen.join("\n")
    }

    pub fn signal(&self, signal: Signal) {
        // An exited process that was not reaped yet takes signals too, so
        // this fails only on a real error.
        let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), signal);
    }

    /// Waits until the process exits; fails the test, with its output, when
    /// it is still running after `bound`.
    pub fn exit_within(&mut self, bound: Duration) -> std::process::ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < bound,
                "still running after {bound:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends SIGTERM and returns how long the process took to exit; fails
    /// the test when it is still running after `bound`.
    pub fn terminate_within(&mut self, bound: Duration) -> Duration {
        let sent = Instant::now();
        self.signal(Signal::SIGTERM);
        let status = self.exit_within(bound);
        let took = sent.elapsed();
        assert!(
            status.success(),
            "exit status {status} after SIGTERM:\n{}",
            self.output()
        );
        took
    }
}

impl Drop for Proc {
    /// Stops the process as an operator would (SIGTERM, so `aegis up` stops
    /// its children too), and SIGKILLs it only when it is still running
    /// 20 s later: a SIGKILLed `aegis up` leaves its NATS nodes and services
    /// running for the rest of the machine's life.
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(20);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A base port whose +0, +1, +2000 and +4000 neighbours are free (what
/// `aegis up --single-node --base-port` uses), and an API port.
pub fn free_up_ports() -> (u16, u16) {
    free_ports_for(1)
}

/// The same for `aegis up` with a 3-node cluster: client ports base..base+2
/// (routes +2000, monitoring +4000) and the API on base+3.
pub fn free_cluster_ports() -> (u16, u16) {
    free_ports_for(3)
}

fn free_ports_for(nodes: u16) -> (u16, u16) {
    aegis::up::ports::free_layout(nodes)
}

/// The children `aegis up` has pid files for: `(name, pid)`.
pub fn pids(state: &Path) -> Vec<(String, i32)> {
    std::fs::read_dir(state.join("pids"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.strip_suffix(".pid")?.to_owned();
            let pid = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((name, pid))
        })
        .collect()
}

/// Whether a process runs (a zombie counts as gone).
pub fn alive(pid: i32) -> bool {
    aegis::up::remote::process_alive(pid)
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: Signal) {
    let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
}

/// A plain NATS client of one user, and the errors the server sent it: a
/// refusal is observed as the server states it (`-ERR 'Permissions
/// Violation for ...'`), not inferred from a timeout.
pub struct Probe {
    pub user: String,
    pub client: async_nats::Client,
    errors: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Probe {
    /// Connects to `url` as `user`.
    pub async fn connect(url: &str, user: &str, password: &str) -> Probe {
        let (tx, errors) = tokio::sync::mpsc::unbounded_channel();
        let client =
            async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
                .event_callback(move |event| {
                    let tx = tx.clone();
                    async move {
                        if let async_nats::Event::ServerError(async_nats::ServerError::Other(
                            text,
                        )) = event
                        {
                            let _ = tx.send(text);
                        }
                    }
                })
                .connect(url)
                .await
                .unwrap_or_else(|e| panic!("connect as {user}: {e}"));
        Probe {
            user: user.to_owned(),
            client,
            errors,
        }
    }

    /// Waits for the server's permission violation naming `subject`, and
    /// prints the attempt and the refusal.
    pub async fn refused(&mut self, attempt: &str, subject: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let text = tokio::time::timeout_at(deadline, self.errors.recv())
                .await
                .unwrap_or_else(|_| {
                    panic!("{}: {attempt} was not refused by the server", self.user)
                })
                .expect("client alive");
            if text.contains("Permissions Violation") && text.contains(subject) {
                println!("{:<20} {attempt:<52} REFUSED: {text}", self.user);
                return;
            }
        }
    }

    /// Publishes to `subject` and waits for the refusal.
    pub async fn publish_refused(&mut self, attempt: &str, subject: &str, body: &'static [u8]) {
        self.client
            .publish(subject.to_owned(), body.into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.refused(attempt, subject).await;
    }

    /// Publishes with `headers` (e.g. a KV delete marker) and waits for the
    /// refusal.
    pub async fn publish_headers_refused(
        &mut self,
        attempt: &str,
        subject: &str,
        headers: async_nats::HeaderMap,
    ) {
        self.client
            .publish_with_headers(subject.to_owned(), headers, bytes::Bytes::new())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.refused(attempt, subject).await;
    }

    /// Subscribes to `subject` and waits for the refusal.
    pub async fn subscribe_refused(&mut self, attempt: &str, subject: &str) {
        let _sub = self.client.subscribe(subject.to_owned()).await.unwrap();
        self.client.flush().await.unwrap();
        self.refused(attempt, subject).await;
    }
}

/// An `aegis bench ...` run: how it ended, what it printed, and the JSON
/// report it wrote (`None` when it wrote none).
pub struct BenchRun {
    pub status: std::process::ExitStatus,
    pub output: String,
    pub report: Option<serde_json::Value>,
}

/// Runs `aegis` with `args` plus `--json` into a temporary file, waiting up
/// to `within` for it to exit.
pub fn run_bench(args: &[&str], within: Duration) -> BenchRun {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let json_arg = json.display().to_string();
    let mut all = args.to_vec();
    all.extend(["--json", &json_arg]);
    let mut bench = Proc::spawn(&all);
    let status = bench.exit_within(within);
    let output = bench.output();
    let report = std::fs::read_to_string(&json)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("the report is JSON"));
    BenchRun {
        status,
        output,
        report,
    }
}

/// The row of a benchmark report whose metric starts with `metric`.
pub fn report_row<'a>(report: &'a serde_json::Value, metric: &str) -> &'a serde_json::Value {
    report["rows"]
        .as_array()
        .expect("the report has rows")
        .iter()
        .find(|r| r["metric"].as_str().is_some_and(|m| m.starts_with(metric)))
        .unwrap_or_else(|| panic!("no row {metric:?} in {report:#}"))
}

/// Runs `aegis` with `args` and asserts that it refuses them as clap
/// refuses a bad flag value: exit 2 within `bound` (a value that is not
/// refused starts the command, and the bound ends the test then), with an
/// error line naming `flag`. Returns everything it printed.
pub fn assert_flag_refused(args: &[&str], flag: &str, bound: Duration) -> String {
    let mut cmd = Proc::spawn(args);
    let status = cmd.exit_within(bound);
    let out = cmd.output();
    assert_eq!(status.code(), Some(2), "{args:?}: {status}\n{out}");
    let error = out
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("{args:?}: no error line:\n{out}"));
    assert!(
        error.contains("invalid value") && error.contains(&format!("'{flag} <")),
        "{args:?}: names the flag: {error}"
    );
    out
}
