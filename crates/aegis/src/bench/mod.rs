//! Side-by-side benchmarks: raw async-nats (the baseline) and the Aegis SDK,
//! in one process, against one nats-server the benchmark starts itself.
//!
//! The machine is shared and noisy, so the two sides run in alternating
//! batches (the order flipping every batch): whatever noise there is hits
//! both alike, and the ratio is what to read.
//!
//! - [`rpc`]: sequential request/reply latency (HDR percentiles) and
//!   concurrent throughput.
//! - [`events`]: JetStream publish throughput (and latency) of events.
//! - [`report`]: the one result type of every benchmark but `scale`: a
//!   table of rows (compared with raw async-nats, or single values with a
//!   bound), the verdict and the `--json` output.
//! - [`failover`]: instances killed under load (their own server).
//! - [`chaos`]: the whole showcase under faults of services and NATS nodes.
//! - [`scale`]: the registry's cost as the fleet grows (instances in
//!   worker processes, callers, the monitor), read from nats-server.
//! - `flags`: the value parsers that refuse numeric flags no benchmark
//!   can run with (0 rounds, a 0 ms deadline, a negative time).

pub mod chaos;
pub mod events;
pub mod failover;
mod flags;
pub mod report;
pub mod rpc;
pub mod scale;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `total` steps with a message, drawn on stderr. Where
/// stderr is no terminal (a CI log, a pipe) the bar is not drawn; the
/// phase's start is said in one line instead, so a long run still shows
/// where it is.
pub(crate) fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:36}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    if bar.is_hidden() {
        eprintln!("{what}…");
    }
    bar
}

/// `m`'s guard, also after a thread panicked holding it: what the
/// benchmarks and `aegis traffic` record stays readable for their report.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The benchmark's own nats-server and how each side connects to it:
/// anonymously, or (`--auth`) as users with least-privilege permissions
/// like those `aegis up` generates (see [`crate::permissions`]), each with
/// its own reply-inbox prefix. Raw async-nats and the SDK connect as the
/// same users, so both pay the same permission checks.
pub(crate) struct BenchBus {
    /// The server (stopped on drop).
    pub(crate) server: aegis_testkit::NatsServer,
    users: Option<Vec<crate::permissions::User>>,
    /// With `--tls`: the CA both sides verify the server with, and the
    /// directory holding it (removed on drop).
    tls: Option<(std::path::PathBuf, tempfile::TempDir)>,
}

/// Who connects, with `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    /// The responders (raw, plain and SDK): the service's user.
    Server,
    /// The callers: the operator's user.
    Client,
    /// The `--registry` filler instances: their services' user.
    Filler,
}

/// The services the benchmarks serve and register.
pub(crate) const BENCH_SERVICE: &str = "bench-pricing";
/// How many filler services `--registry` spreads its instances over.
pub(crate) const FILL_SERVICES: usize = 8;

impl BenchBus {
    /// Starts the server, with users and permissions when `auth`, and
    /// requiring TLS (a CA and certificate made as `aegis up --tls` makes
    /// them) when `tls`.
    ///
    /// # Errors
    /// When no suitable nats-server is installed or it does not start.
    pub(crate) async fn start(auth: bool, tls: bool) -> anyhow::Result<BenchBus> {
        use crate::permissions::{Grants, Role, ServiceRole, User, render_users};
        use anyhow::Context;
        let tls = if tls {
            let dir = tempfile::Builder::new()
                .prefix("aegis-bench-tls-")
                .tempdir()?;
            let files = crate::up::tls::ensure(dir.path())?;
            Some((files, dir))
        } else {
            None
        };
        let tls_args: Vec<String> = tls
            .as_ref()
            .map(|(f, _)| {
                vec![
                    "--tls".to_owned(),
                    "--tlscert".to_owned(),
                    f.cert.display().to_string(),
                    "--tlskey".to_owned(),
                    f.key.display().to_string(),
                ]
            })
            .unwrap_or_default();
        let tls = tls.map(|(f, dir)| (f.ca, dir));
        if !auth {
            let server = tokio::task::spawn_blocking(move || {
                aegis_testkit::NatsServer::builder()
                    .extra_args(tls_args)
                    .start()
            })
            .await?
            .context(
                "starting nats-server for the benchmark (run `make bootstrap` if it is missing)",
            )?;
            return Ok(BenchBus {
                server,
                users: None,
                tls,
            });
        }
        let service = |name: &str| {
            Role::Service(ServiceRole {
                service: name.to_owned(),
                ..Default::default()
            })
            .grants()
        };
        let mut server = service(BENCH_SERVICE);
        // The raw and plain async-nats responders of the same benchmark.
        server.subscribe.extend([
            "bench.>".to_owned(),
            "$SRV.*.bench-plain".to_owned(),
            "$SRV.*.bench-plain.*".to_owned(),
        ]);
        let mut client = Role::Operator.grants();
        client.publish.push("bench.>".to_owned());
        let mut filler = Grants::default();
        for k in 0..FILL_SERVICES {
            let g = service(&format!("bench-fill-{k}"));
            filler.publish.extend(g.publish);
            filler.subscribe.extend(g.subscribe);
        }
        let users: Vec<User> = [
            ("svc-bench-pricing", server),
            ("operator", client),
            ("svc-bench-fill", filler),
        ]
        .into_iter()
        .map(|(name, mut grants)| {
            // Role::grants adds the inbox prefix again; keep one.
            grants.subscribe.retain(|s| !s.starts_with("_INBOX"));
            grants.allow_responses = true;
            User {
                name: name.to_owned(),
                password: format!("bench-{}", nuid::next()),
                role: Role::Custom {
                    user: name.to_owned(),
                    grants,
                },
            }
        })
        .collect();
        let text = render_users(&users);
        let server = tokio::task::spawn_blocking(move || {
            aegis_testkit::NatsServer::builder()
                .app_users(text)
                .extra_args(tls_args)
                .start()
        })
        .await?
        .context("starting nats-server with users for the benchmark")?;
        let bus = BenchBus {
            server,
            users: Some(users),
            tls,
        };
        // As in the showcase, the operator creates the shared streams and
        // buckets; services may not.
        let operator = aegis_sdk::Connection::connect(bus.sdk_config(Who::Client)).await?;
        crate::init::create_missing(&operator).await?;
        operator.drain().await?;
        Ok(bus)
    }

    fn user(&self, who: Who) -> Option<&crate::permissions::User> {
        let name = match who {
            Who::Server => "svc-bench-pricing",
            Who::Client => "operator",
            Who::Filler => "svc-bench-fill",
        };
        self.users.as_ref()?.iter().find(|u| u.name == name)
    }

    /// The SDK configuration of `who`.
    pub(crate) fn sdk_config(&self, who: Who) -> aegis_sdk::AegisConfig {
        let mut config = aegis_sdk::AegisConfig::with_servers(self.server.url());
        if let Some(user) = self.user(who) {
            config.nats.user = Some(user.name.clone());
            config.nats.password = Some(aegis_sdk::Secret::new(user.password.clone()));
            config.nats.inbox_prefix = Some(crate::permissions::inbox_prefix(&user.name));
        }
        config.nats.tls_ca = self.tls.as_ref().map(|(ca, _)| ca.clone());
        config
    }

    /// A raw async-nats client of `who`.
    ///
    /// # Errors
    /// When the server refuses or cannot be reached.
    pub(crate) async fn raw(&self, who: Who) -> anyhow::Result<async_nats::Client> {
        let mut options = async_nats::ConnectOptions::new();
        if let Some(user) = self.user(who) {
            options = options
                .user_and_password(user.name.clone(), user.password.clone())
                .custom_inbox_prefix(crate::permissions::inbox_prefix(&user.name));
        }
        if let Some((ca, _)) = &self.tls {
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        Ok(options.connect(self.server.url()).await?)
    }
}

/// Starts the benchmark's own nats-server (on free ports, removed on drop).
///
/// # Errors
/// When no suitable nats-server is installed or it does not start.
/// Runs a benchmark `runs` times and reports the median of each row (see
/// [`report::Report::median_of`]); each run's own table is printed as it
/// ends. One run is reported as it is.
pub(crate) async fn repeat<F, Fut>(runs: u32, mut once: F) -> anyhow::Result<report::Report>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<report::Report>>,
{
    if runs <= 1 {
        return once().await;
    }
    let mut reports = Vec::new();
    for i in 1..=runs {
        println!("\n== run {i} of {runs}");
        let report = anyhow::Context::with_context(once().await, || format!("run {i} of {runs}"))?;
        report.print(&mut std::io::stdout().lock())?;
        reports.push(report);
    }
    println!("\n== median of {runs} runs");
    report::Report::median_of(reports)
}

pub(crate) async fn start_server() -> anyhow::Result<aegis_testkit::NatsServer> {
    use anyhow::Context;
    tokio::task::spawn_blocking(aegis_testkit::NatsServer::start)
        .await?
        .context("starting nats-server for the benchmark (run `make bootstrap` if it is missing)")
}

/// Refuses sizes with which the alternating phases cannot run.
///
/// # Errors
/// Names the flag to fix.
pub(crate) fn check_sizes(
    calls: usize,
    batch: usize,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        batch > 0 && calls >= batch,
        "--calls must be at least --batch (> 0)"
    );
    anyhow::ensure!(
        concurrency > 0 && rounds > 0,
        "--concurrency and --rounds must be positive"
    );
    Ok(())
}

/// The two sides of every comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Plain async-nats, written as a careful user would without Aegis.
    Raw,
    /// The same work through the Aegis SDK.
    Sdk,
}

/// The order of the two sides in batch `i`: alternating, so neither side
/// always runs first (warm caches, CPU frequency, a neighbour's load).
pub(crate) fn order(i: usize) -> [Side; 2] {
    if i.is_multiple_of(2) {
        [Side::Raw, Side::Sdk]
    } else {
        [Side::Sdk, Side::Raw]
    }
}

/// Runs `calls` concurrently-issued operations for `duration` with
/// `concurrency` workers and returns completed operations per second.
pub(crate) async fn throughput<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    Ok(counted_throughput(concurrency, duration, op)
        .await?
        .per_sec())
}

/// The operations one throughput round completed, and in how long.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rate {
    pub(crate) ops: u64,
    pub(crate) secs: f64,
}

impl Rate {
    pub(crate) fn per_sec(self) -> f64 {
        self.ops as f64 / self.secs
    }
}

/// CPU time, in seconds, that process `pid` has used so far, from
/// `/proc/{pid}/stat` (10 ms ticks); `None` where it cannot be read.
pub(crate) fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // /proc counts in USER_HZ, which Linux fixes at 100 for user space.
    Some((utime + stime) / 100.0)
}

/// [`throughput`], with the operations counted.
pub(crate) async fn counted_throughput<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<Rate>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = tokio::time::Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                op().await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut ops = 0u64;
    for t in tasks {
        ops += t.await??;
    }
    Ok(Rate {
        ops,
        secs: started.elapsed().as_secs_f64(),
    })
}
