//! `aegis bench scale`: what the registry costs as the fleet grows, measured
//! the way production runs it — every instance a real SDK registration (1 s
//! liveness beat; the record re-written on change and every `--refresh-ms`,
//! 4 s by default; `--ttl-ms` 15 s) on its own NATS connection, spread over
//! `--processes`
//! worker processes, and `--callers` caller processes that each call two
//! services. The benchmark's own process runs nats-server, the monitor and
//! the measurements; the first worker also runs a raw async-nats responder
//! (the RPC baseline), so that it and the SDK responders share a process.
//!
//! What it reports, over a `--secs` window once everything is up:
//!
//! - false expiries: records of live instances that expired (must be 0);
//! - registry deliveries counted by nats-server (`/connz` per-subscription
//!   counts of the registry watches and the liveness beats): on the whole
//!   bus, per caller process, and the rest (the monitor);
//! - CPU per caller process (all of it: calls, probes and registry upkeep)
//!   and per instance, from `/proc`;
//! - a new instance visible in a caller's view, and a crash (SIGKILL)
//!   visible in the monitor and removed from the registry;
//! - the monitor's list endpoints at fixed rates, and SSE delay to 20
//!   clients with whether any lagged;
//! - RPC p50/p99 through the SDK next to raw async-nats request/reply, in
//!   the same callers at the same time.
//!
//! - `roles.rs`: the worker, caller and crash child processes.
//! - `natsz.rs`: reading and classifying the server's counters.
//! - `monitor.rs`: HTTP load, SSE clients, crash polling.
//! - `report.rs`: the table and the JSON.
//!
//! Why this module is over 500 lines: it is the run itself, in order —
//! start the server, monitor and processes, wait for the fleet, measure
//! each item above in turn, tear down — over state every step shares.

mod monitor;
mod natsz;
pub mod report;
mod roles;

use std::{
    collections::HashSet,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection, RegistryReader, contracts::ServiceInstance, registry::Registration,
    registry::RegistrationOptions, registry::RegistryChange, registry::RemovalReason,
};
use anyhow::Context;
use clap::{Args, ValueEnum};
use futures::StreamExt;
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    process::{Child, ChildStdin, ChildStdout, Command},
};
use tokio_util::sync::CancellationToken;

use report::{ScaleReport, ScaleResults, scale_report};

use super::cpu_seconds;

/// Heartbeat (liveness beat) of every instance of the benchmark.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(1);
/// The shortest `--ttl-ms`: three heartbeats, for a registration refuses a
/// heartbeat longer than a third of its TTL (the record is re-written on a
/// beat, at least three times per TTL).
const MIN_TTL_MS: u64 = 3 * HEARTBEAT.as_millis() as u64;

/// Reads `--ttl-ms`: a whole number of milliseconds from [`MIN_TTL_MS`] to
/// a day, refused when the command line is read rather than once the
/// benchmark runs.
fn ttl_ms(s: &str) -> Result<u64, String> {
    match s.trim().parse::<u64>() {
        Ok(n) if (MIN_TTL_MS..=super::flags::DAY_MS).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a whole number of milliseconds from {MIN_TTL_MS} to {}: every instance \
             of the benchmark beats every {} ms (its heartbeat), and a heartbeat must be at \
             most a third of the TTL",
            super::flags::DAY_MS,
            HEARTBEAT.as_millis()
        )),
    }
}
/// The raw responder's subject.
pub(crate) const RAW_SUBJECT: &str = "bench.scale.raw";
/// The service of the instances killed on purpose.
pub(crate) const CRASH_SERVICE: &str = "scale-crash";
/// The service of the monitor's SSE probe instances.
const PROBE_SERVICE: &str = "scale-probe";
/// SSE clients on the monitor's stream.
const SSE_CLIENTS: usize = 20;
/// Instances killed with SIGKILL during the window.
const CRASHES: usize = 5;
/// Warm-up between everything up and the window.
const WARMUP: Duration = Duration::from_secs(3);

/// Service `k` of the benchmark.
pub(crate) fn service_name(k: usize) -> String {
    format!("scale-{k:05}")
}

/// What every fleet instance's id starts with.
const INSTANCE_PREFIX: &str = "scale-i";

/// Instance `i` of the benchmark.
pub(crate) fn instance_id(i: usize) -> String {
    format!("{INSTANCE_PREFIX}{i:05}")
}

/// A child process role (internal: the benchmark starts itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Role {
    /// Registers a share of the instances.
    Worker,
    /// Calls two services.
    Caller,
    /// Holds the view of two services without calling them.
    Watcher,
    /// One instance, to be killed.
    Crash,
}

/// Options of `aegis bench scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleBenchArgs {
    /// Registered instances (each its own NATS connection).
    #[arg(long, default_value_t = 1000, value_parser = super::flags::at_least(2usize))]
    pub instances: usize,
    /// Worker processes the instances are spread over.
    #[arg(long, default_value_t = 4, value_parser = super::flags::at_least(1usize))]
    pub processes: usize,
    /// Caller processes, each calling two services.
    #[arg(long, default_value_t = 2)]
    pub callers: usize,
    /// Instances per service.
    #[arg(long, default_value_t = 10, value_parser = super::flags::at_least(1usize))]
    pub per_service: usize,
    /// Length of the measured window in seconds.
    #[arg(long, default_value_t = 30, value_parser = super::flags::within(5u64, super::flags::DAY_MS / 1000))]
    pub secs: u64,
    /// How often an unchanged record is re-written to renew its TTL, in
    /// milliseconds (the SDK's default; 1000 re-writes it every beat, as
    /// the SDK did before).
    #[arg(long, default_value_t = aegis_sdk::registry::DEFAULT_REFRESH.as_millis() as u64, value_parser = super::flags::within(1u64, super::flags::DAY_MS))]
    pub refresh_ms: u64,
    /// The records' TTL in milliseconds (the SDK's default), at least 3000:
    /// every instance beats once a second, and a heartbeat must be at most a
    /// third of the TTL.
    #[arg(long, default_value_t = aegis_sdk::registry::DEFAULT_TTL.as_millis() as u64, value_parser = ttl_ms)]
    pub ttl_ms: u64,
    /// Calls per second of each caller (alternating its two services; each
    /// call is followed by a raw request).
    #[arg(long, default_value_t = 50.0, value_parser = super::flags::positive)]
    pub rate: f64,
    /// Skip the monitor's 500 req/s phase after the window.
    #[arg(long)]
    pub no_heavy_load: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,
    /// Internal: run as a child process of the benchmark.
    #[arg(long, value_enum, hide = true)]
    pub role: Option<Role>,
    /// Internal: the server the child connects to.
    #[arg(long, hide = true)]
    pub nats_url: Option<String>,
    /// Internal: the child's index.
    #[arg(long, hide = true, default_value_t = 0)]
    pub index: usize,
    /// Internal: the caller's services, comma-separated.
    #[arg(long, hide = true)]
    pub services: Option<String>,
    /// Internal: the crash instance's id.
    #[arg(long, hide = true)]
    pub id: Option<String>,
}

impl ScaleBenchArgs {
    fn check_sizes(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.instances >= 2, "--instances must be at least 2");
        anyhow::ensure!(self.processes >= 1, "--processes must be at least 1");
        anyhow::ensure!(self.per_service >= 1, "--per-service must be at least 1");
        anyhow::ensure!(self.secs >= 5, "--secs must be at least 5");
        anyhow::ensure!(self.rate > 0.0, "--rate must be positive");
        anyhow::ensure!(
            2 * self.callers * self.per_service <= self.instances,
            "--callers {} need {} instances ({} services of --per-service {})",
            self.callers,
            2 * self.callers * self.per_service,
            2 * self.callers,
            self.per_service
        );
        Ok(())
    }

    fn served_services(&self) -> usize {
        2 * self.callers
    }

    /// A caller's or watcher's two services (`--services a,b`).
    fn two_services(&self) -> anyhow::Result<[String; 2]> {
        let list = self.services.as_deref().context("--services is required")?;
        let mut it = list.split(',').map(str::to_owned);
        Ok([
            it.next().context("two services")?,
            it.next().context("two services")?,
        ])
    }

    /// The registration timing of every instance of the benchmark.
    pub(crate) fn timing(&self) -> RegistrationOptions {
        RegistrationOptions {
            heartbeat: HEARTBEAT,
            refresh: Duration::from_millis(self.refresh_ms),
            ttl: Duration::from_millis(self.ttl_ms),
            ..Default::default()
        }
    }
}

/// Runs the benchmark, or a child role of it.
///
/// # Errors
/// Bad sizes, no nats-server, a child that fails to start.
pub async fn run(args: ScaleBenchArgs) -> anyhow::Result<Option<ScaleReport>> {
    args.timing()
        .validate()
        .context("--refresh-ms and --ttl-ms")?;
    if let Some(role) = args.role {
        let url = args.nats_url.as_deref().context("--nats-url is required")?;
        let timing = args.timing();
        match role {
            Role::Worker => {
                roles::worker(
                    url,
                    args.index,
                    args.processes,
                    args.instances,
                    args.per_service,
                    args.served_services(),
                    timing,
                )
                .await?
            }
            Role::Caller => {
                roles::caller(url, args.index, args.two_services()?, args.rate, timing).await?
            }
            Role::Watcher => roles::watcher(url, args.two_services()?).await?,
            Role::Crash => {
                roles::crash(url, args.id.as_deref().context("--id is required")?, timing).await?
            }
        }
        return Ok(None);
    }
    args.check_sizes()?;
    let logs = tempfile::Builder::new()
        .prefix("aegis-bench-scale-")
        .tempdir()
        .context("creating a folder for the children's logs")?;
    let report = match orchestrate(&args, logs.path()).await {
        Ok(report) => report,
        Err(e) => {
            // The children's logs say why; keep them.
            let kept = logs.keep();
            return Err(e.context(format!("children's logs kept in {}", kept.display())));
        }
    };
    report.finish(args.json.as_deref())?;
    Ok(Some(report))
}

/// A child process and its line protocol.
struct Kid {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Kid {
    fn spawn(exe: &std::path::Path, args: &[String], log: &std::path::Path) -> anyhow::Result<Kid> {
        let log =
            std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = Command::new(exe)
            .args(["bench", "scale"])
            .args(args)
            .env("AEGIS_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting a benchmark child process")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("child stdout")?;
        Ok(Kid {
            child,
            stdin,
            lines: BufReader::new(stdout).lines(),
        })
    }

    async fn line(&mut self, within: Duration) -> anyhow::Result<String> {
        match tokio::time::timeout(within, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => Ok(line),
            Ok(Ok(None)) => anyhow::bail!("a benchmark child exited (see its log)"),
            Ok(Err(e)) => Err(e).context("reading a benchmark child"),
            Err(_) => anyhow::bail!("a benchmark child said nothing for {within:?}"),
        }
    }

    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("child stdin closed")?;
        stdin.write_all(format!("{line}\n").as_bytes()).await?;
        stdin.flush().await?;
        Ok(())
    }

    fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    fn kill_now(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
    }
}

/// CPU seconds (user + system) a process has used, from `/proc`.
/// Starts `count` children of `role`, child `c` on services `2c` and
/// `2c + 1`, and waits for each one's `READY {connection}`; returns the
/// children and their connection names.
async fn start_per_caller(
    role: &str,
    count: usize,
    exe: &std::path::Path,
    logs: &std::path::Path,
    common: &impl Fn(&str, usize) -> Vec<String>,
) -> anyhow::Result<(Vec<Kid>, Vec<String>)> {
    let mut kids = Vec::with_capacity(count);
    let mut conns = Vec::with_capacity(count);
    for c in 0..count {
        let mut a = common(role, c);
        a.extend([
            "--services".to_owned(),
            format!("{},{}", service_name(2 * c), service_name(2 * c + 1)),
        ]);
        let mut kid = Kid::spawn(exe, &a, &logs.join(format!("{role}-{c}.log")))?;
        let line = kid
            .line(Duration::from_secs(60))
            .await
            .with_context(|| format!("a {role}"))?;
        let name = line
            .strip_prefix("READY ")
            .with_context(|| format!("a {role} said {line:?}"))?
            .to_owned();
        conns.push(name);
        kids.push(kid);
    }
    Ok((kids, conns))
}

fn cpu_of(kids: &[Kid]) -> Vec<Option<f64>> {
    kids.iter().map(|k| k.pid().and_then(cpu_seconds)).collect()
}

fn cpu_delta(before: &[Option<f64>], after: &[Option<f64>]) -> Vec<f64> {
    before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| Some(a.as_ref()? - b.as_ref()?))
        .collect()
}

async fn orchestrate(args: &ScaleBenchArgs, logs: &std::path::Path) -> anyhow::Result<ScaleReport> {
    let started_at = chrono::Utc::now();
    let exe = std::env::current_exe().context("finding the aegis binary")?;
    let server = super::start_server().await?;
    let url = server.url();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .context("building the HTTP client")?;

    let operator = Connection::connect(aegis_sdk::AegisConfig::with_servers(&url)).await?;
    crate::init::create_missing(&operator).await?;
    let server_version = operator.server_version().to_string();

    // The monitor, with the system account so crashes show at once.
    let shutdown = CancellationToken::new();
    let token = format!("bench-{}", nuid::next());
    let (user, password) = server.system_credentials();
    let state = aegis_monitor::AppState::start(
        aegis_monitor::MonitorConfig {
            nats: aegis_sdk::AegisConfig::with_servers(&url),
            admin_token: Some(aegis_sdk::Secret::new(token.clone())),
            system_account: Some(aegis_monitor::SystemAccount {
                user: Some(user.to_owned()),
                password: Some(aegis_sdk::Secret::new(password.to_owned())),
                creds_file: None,
            }),
            max_connections: 4096,
            // Every load and SSE client of the bench is on 127.0.0.1.
            max_connections_per_client: 4096,
            ..Default::default()
        },
        shutdown.clone(),
    )
    .await
    .context("starting the monitor")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = monitor::Api {
        base: format!("http://{}", listener.local_addr()?),
        token,
        http: http.clone(),
    };
    let monitor_task = tokio::spawn(aegis_monitor::serve_on(listener, state, shutdown.clone()));

    // Every registry change as a watcher of the whole registry sees it.
    let reader = RegistryReader::start(&operator).await?;
    let crashed: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Arc::default();
    let removed_after: Arc<Mutex<Vec<u64>>> = Arc::default();
    let false_expiries: Arc<Mutex<Vec<String>>> = Arc::default();
    let watch_task = {
        let (crashed, removed_after, false_expiries) = (
            crashed.clone(),
            removed_after.clone(),
            false_expiries.clone(),
        );
        let mut changes = Box::pin(reader.changes());
        tokio::spawn(async move {
            while let Some(change) = changes.next().await {
                if let RegistryChange::Removed {
                    instance_id,
                    reason,
                    ..
                } = change
                {
                    let killed = crashed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&instance_id)
                        .copied();
                    match killed {
                        Some(t) => removed_after
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push(t.elapsed().as_micros() as u64),
                        // Only the fleet's instances live all along; a
                        // probe whose deregistration timed out expires
                        // as it should.
                        None if reason == RemovalReason::Expired
                            && instance_id.starts_with(INSTANCE_PREFIX) =>
                        {
                            false_expiries
                                .lock()
                                .unwrap_or_else(|e| e.into_inner())
                                .push(instance_id)
                        }
                        None => {}
                    }
                }
            }
        })
    };

    // Workers.
    let bar = super::progress(args.instances as u64, "registering instances");
    let common = |role: &str, index: usize| {
        vec![
            "--role".to_owned(),
            role.to_owned(),
            "--nats-url".to_owned(),
            url.clone(),
            "--index".to_owned(),
            index.to_string(),
            "--instances".to_owned(),
            args.instances.to_string(),
            "--processes".to_owned(),
            args.processes.to_string(),
            "--callers".to_owned(),
            args.callers.to_string(),
            "--per-service".to_owned(),
            args.per_service.to_string(),
            "--rate".to_owned(),
            args.rate.to_string(),
            "--refresh-ms".to_owned(),
            args.refresh_ms.to_string(),
            "--ttl-ms".to_owned(),
            args.ttl_ms.to_string(),
        ]
    };
    let mut workers = Vec::new();
    for w in 0..args.processes {
        workers.push(Kid::spawn(
            &exe,
            &common("worker", w),
            &logs.join(format!("worker-{w}.log")),
        )?);
    }
    let mut up = vec![0u64; workers.len()];
    let per_worker_wait = Duration::from_secs(120);
    for (w, kid) in workers.iter_mut().enumerate() {
        loop {
            let line = kid
                .line(per_worker_wait)
                .await
                .with_context(|| format!("worker {w}"))?;
            if line == "READY" {
                break;
            }
            if let Some(n) = line.strip_prefix("UP ").and_then(|n| n.parse().ok()) {
                up[w] = n;
                bar.set_position(up.iter().sum());
            }
        }
    }
    bar.finish_and_clear();
    let all_seen = Instant::now() + Duration::from_secs(60);
    while reader.all().len() < args.instances {
        anyhow::ensure!(
            Instant::now() < all_seen,
            "only {} of {} instances are in the registry",
            reader.all().len(),
            args.instances
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Crash instances, each its own process.
    let mut crash_kids = Vec::new();
    for c in 0..CRASHES {
        let mut a = common("crash", c);
        a.extend(["--id".to_owned(), format!("crash-{c}")]);
        let mut kid = Kid::spawn(&exe, &a, &logs.join(format!("crash-{c}.log")))?;
        kid.line(Duration::from_secs(30))
            .await
            .context("a crash instance")?;
        crash_kids.push(kid);
    }

    // Callers, and one watcher beside each on the same two services: the
    // caller's registry upkeep alone.
    let (mut callers, caller_conns) =
        start_per_caller("caller", args.callers, &exe, logs, &common).await?;
    let (mut watchers, watcher_conns) =
        start_per_caller("watcher", args.callers, &exe, logs, &common).await?;

    // SSE clients, connected before the window.
    let probes: monitor::Probes = Arc::default();
    let sse_stop = CancellationToken::new();
    let sse_ready = Arc::new(tokio::sync::Barrier::new(SSE_CLIENTS + 1));
    let sse_task = {
        let (api, probes, stop, ready) = (
            api.clone(),
            probes.clone(),
            sse_stop.clone(),
            sse_ready.clone(),
        );
        tokio::spawn(
            async move { monitor::sse_clients(&api, SSE_CLIENTS, probes, ready, stop).await },
        )
    };
    sse_ready.wait().await;
    tokio::time::sleep(WARMUP).await;

    // ---- the window ----------------------------------------------------
    let window = Duration::from_secs(args.secs);
    let before = natsz::snapshot(&http, server.monitor_port()).await?;
    let cpu_workers_0 = cpu_of(&workers);
    let cpu_callers_0 = cpu_of(&callers);
    let cpu_watchers_0 = cpu_of(&watchers);
    for kid in &mut callers {
        kid.send("START").await?;
    }
    false_expiries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let window_start = Instant::now();
    let bar = super::progress(args.secs, "measuring");
    let ticker = {
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                bar.inc(1);
            }
        })
    };

    // The monitor at 50 req/s on both lists, all window long.
    let full_50 = {
        let api = api.clone();
        tokio::spawn(async move {
            monitor::load(&api, vec!["/api/instances".into()], 50.0, window).await
        })
    };
    let per_service_paths: Vec<String> = (0..(args.instances / args.per_service).max(1))
        .map(|k| format!("/api/instances/{}", service_name(k)))
        .collect();
    let svc_50 = {
        let (api, paths) = (api.clone(), per_service_paths.clone());
        tokio::spawn(async move { monitor::load(&api, paths, 50.0, window).await })
    };

    // SSE probes: a new instance every 500 ms, gone 250 ms later.
    let probe_task = {
        let (probes, url, timing) = (probes.clone(), url.clone(), args.timing());
        tokio::spawn(async move {
            let conn = Connection::connect(aegis_sdk::AegisConfig::with_servers(&url)).await?;
            let (mut n, mut not_started, mut failed) = (0u64, 0u64, 0u64);
            let until = Instant::now() + window;
            while Instant::now() < until {
                n += 1;
                let id = format!("sse-{n}");
                let record =
                    ServiceInstance::new(PROBE_SERVICE, id.clone(), "1.0.0", chrono::Utc::now());
                let started = Registration::builder(&conn, record)
                    .options(timing.clone())
                    .start()
                    .await;
                let Ok(registration) = started else {
                    not_started += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                };
                probes
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, Instant::now());
                tokio::time::sleep(Duration::from_millis(250)).await;
                if registration.deregister().await.is_err() {
                    failed += 1;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            anyhow::Ok((n - not_started, not_started + failed))
        })
    };

    // Crashes, spread over the window.
    let mut crash_monitor_us = Vec::new();
    let mut crash_missed = 0usize;
    let gap = window / (CRASHES as u32 + 1);
    for (c, kid) in crash_kids.iter_mut().enumerate() {
        tokio::time::sleep_until((window_start + gap * (c as u32 + 1)).into()).await;
        let id = format!("crash-{c}");
        let killed = Instant::now();
        crashed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), killed);
        kid.kill_now();
        match monitor::crash_seen(
            &api,
            CRASH_SERVICE,
            &id,
            killed,
            gap.min(Duration::from_secs(4)),
        )
        .await
        {
            Some(d) => crash_monitor_us.push(d.as_micros() as u64),
            None => crash_missed += 1,
        }
    }
    tokio::time::sleep_until((window_start + window).into()).await;

    let after = natsz::snapshot(&http, server.monitor_port()).await?;
    let cpu_workers_1 = cpu_of(&workers);
    let cpu_callers_1 = cpu_of(&callers);
    let cpu_watchers_1 = cpu_of(&watchers);
    let window_secs = window_start.elapsed().as_secs_f64();
    let false_expired: Vec<String> = false_expiries
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mut caller_results = Vec::new();
    for kid in &mut callers {
        kid.send("STOP").await?;
        let line = kid.line(Duration::from_secs(30)).await?;
        caller_results.push(
            serde_json::from_str::<roles::CallerResult>(&line)
                .with_context(|| format!("a caller's result {line:?}"))?,
        );
    }
    ticker.abort();
    bar.finish_and_clear();
    let full_50 = full_50.await?;
    let svc_50 = svc_50.await?;
    let (probes_sent, probe_failures) = probe_task.await??;
    // Let the last probe's events arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    sse_stop.cancel();
    let sse = sse_task.await?;

    // The monitor under heavy load, after the window (it would disturb it).
    let heavy = if args.no_heavy_load {
        None
    } else {
        let heavy_secs = Duration::from_secs((args.secs / 3).clamp(3, 10));
        let bar = super::progress(2, "monitor at 500 req/s");
        let svc = monitor::load(&api, per_service_paths.clone(), 500.0, heavy_secs).await;
        bar.inc(1);
        let full = monitor::load(&api, vec!["/api/instances".into()], 500.0, heavy_secs).await;
        bar.finish_and_clear();
        Some((full, svc))
    };

    // ---- numbers -------------------------------------------------------
    let callers_set: HashSet<&str> = caller_conns
        .iter()
        .chain(&watcher_conns)
        .map(String::as_str)
        .collect();
    let total = natsz::delivered(&before, &after, |_| true);
    let per_caller: Vec<natsz::Delivered> = caller_conns
        .iter()
        .map(|name| natsz::delivered(&before, &after, |n| n == name))
        .collect();
    let others = natsz::delivered(&before, &after, |n| !callers_set.contains(n));
    let caller_cpu = cpu_delta(&cpu_callers_0, &cpu_callers_1);
    let watcher_cpu = cpu_delta(&cpu_watchers_0, &cpu_watchers_1);
    let per_watcher: Vec<f64> = watcher_conns
        .iter()
        .map(|name| natsz::delivered(&before, &after, |n| n == name).msgs() as f64)
        .collect();
    let worker_cpu = cpu_delta(&cpu_workers_0, &cpu_workers_1);
    let visible: Vec<u64> = caller_results
        .iter()
        .flat_map(|r| r.visible_ms.iter().map(|ms| (ms * 1e3) as u64))
        .collect();
    let not_seen: u64 = caller_results.iter().map(|r| r.not_seen).sum();
    let removed: Vec<u64> = removed_after
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let sse_expected = probes_sent as usize * SSE_CLIENTS;
    let results = ScaleResults {
        instances: args.instances,
        window_secs,
        false_expiries: false_expired.len(),
        false_expired_ids: false_expired.into_iter().take(20).collect(),
        bus_registry_msgs_per_s: total.msgs() as f64 / window_secs,
        bus_registry_bytes_per_s: total.bytes / window_secs,
        bus_watch_msgs_per_s: total.watch_msgs as f64 / window_secs,
        bus_beat_msgs_per_s: total.beat_msgs as f64 / window_secs,
        caller_registry_msgs_per_s: mean(
            &per_caller
                .iter()
                .map(|d| d.msgs() as f64 / window_secs)
                .collect::<Vec<_>>(),
        ),
        caller_registry_bytes_per_s: mean(
            &per_caller
                .iter()
                .map(|d| d.bytes / window_secs)
                .collect::<Vec<_>>(),
        ),
        other_registry_msgs_per_s: others.msgs() as f64 / window_secs,
        caller_cpu_pct: mean(
            &caller_cpu
                .iter()
                .map(|s| s / window_secs * 100.0)
                .collect::<Vec<_>>(),
        ),
        upkeep_cpu_pct: mean(
            &watcher_cpu
                .iter()
                .map(|s| s / window_secs * 100.0)
                .collect::<Vec<_>>(),
        ),
        watcher_registry_msgs_per_s: mean(&per_watcher) / window_secs,
        instance_cpu_pct: worker_cpu.iter().sum::<f64>() / window_secs * 100.0
            / args.instances as f64,
        new_visible_ms: monitor::quantiles_ms(&visible),
        new_not_seen: not_seen,
        crash_monitor_ms: monitor::quantiles_ms(&crash_monitor_us),
        crash_monitor_missed: crash_missed,
        crash_removed_ms: monitor::quantiles_ms(&removed),
        list_full_50: full_50,
        list_service_50: svc_50,
        list_full_500: heavy.map(|h| h.0),
        list_service_500: heavy.map(|h| h.1),
        sse_delay_ms: monitor::quantiles_ms(&sse.delays),
        sse_missed: sse_expected.saturating_sub(sse.delays.len()),
        sse_early: sse.early,
        sse_lagged_clients: sse.lagged_clients,
        sse_broken_clients: sse.broken_clients,
        rpc_sdk_us: [
            mean(
                &caller_results
                    .iter()
                    .map(|r| r.sdk_us[0])
                    .collect::<Vec<_>>(),
            ),
            mean(
                &caller_results
                    .iter()
                    .map(|r| r.sdk_us[1])
                    .collect::<Vec<_>>(),
            ),
        ],
        rpc_raw_us: [
            mean(
                &caller_results
                    .iter()
                    .map(|r| r.raw_us[0])
                    .collect::<Vec<_>>(),
            ),
            mean(
                &caller_results
                    .iter()
                    .map(|r| r.raw_us[1])
                    .collect::<Vec<_>>(),
            ),
        ],
        probe_write_failures: probe_failures,
        rpc_calls: caller_results.iter().map(|r| r.calls).sum(),
        rpc_errors: caller_results.iter().map(|r| r.errors).sum(),
    };

    // ---- stop ----------------------------------------------------------
    for kid in workers
        .iter_mut()
        .chain(callers.iter_mut())
        .chain(watchers.iter_mut())
        .chain(crash_kids.iter_mut())
    {
        kid.stdin = None;
        kid.kill_now();
    }
    for kid in workers
        .iter_mut()
        .chain(callers.iter_mut())
        .chain(watchers.iter_mut())
        .chain(crash_kids.iter_mut())
    {
        let _ = kid.child.wait().await;
    }
    watch_task.abort();
    drop(reader);
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(15), monitor_task).await;
    let _ = operator.drain().await;
    drop(server);

    scale_report(
        server_version,
        started_at,
        serde_json::json!({
            "instances": args.instances,
            "processes": args.processes,
            "callers": args.callers,
            "perService": args.per_service,
            "secs": args.secs,
            "rate": args.rate,
            "heartbeatMs": HEARTBEAT.as_millis() as u64,
            "refreshMs": args.timing().effective_refresh().as_millis() as u64,
            "ttlMs": args.ttl_ms,
            "sseClients": SSE_CLIENTS,
            "crashes": CRASHES,
        }),
        &results,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--ttl-ms` takes exactly the TTLs a registration with the
    /// benchmark's heartbeat accepts, from three beats to a day.
    #[test]
    fn the_ttl_flag_takes_what_a_registration_accepts() {
        let timing = |ttl: u64| RegistrationOptions {
            heartbeat: HEARTBEAT,
            ttl: Duration::from_millis(ttl),
            ..Default::default()
        };
        for ttl in ["3000", "3001", "15000", "86400000"] {
            let n = ttl_ms(ttl).unwrap_or_else(|e| panic!("{ttl}: {e}"));
            timing(n).validate().unwrap();
        }
        for ttl in ["0", "2999", "86400001", "-1", "3s", ""] {
            let err = ttl_ms(ttl).unwrap_err();
            assert!(err.contains("3000") && err.contains("heartbeat"), "{err}");
        }
        timing(MIN_TTL_MS - 1).validate().unwrap_err();
    }
}
