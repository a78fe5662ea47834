//! A sustained order flow against the three trading services, measuring
//! their memory: pricing, risk and order each run in a child process of
//! their own (this program, started again with `--role`), so each one's
//! resident set can be read from `/proc`; the parent creates orders at a
//! fixed rate through `call_active`, as an order-service client does, and
//! prints a line per interval: orders sent, answered, failed, latency, and
//! the resident set of each service (and of nats-server when it started
//! one).
//!
//! ```sh
//! cargo run --release -p aegis-trading --example soak -- --rate 200 --duration 10m
//! cargo run --release -p aegis-trading --example soak -- --nats-url nats://127.0.0.1:4222
//! ```
//!
//! Without `--nats-url` it starts a nats-server of its own (the testkit's,
//! in a temporary directory, removed at the end). Linux only (`/proc`).

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{AegisConfig, Connection, rpc::CallOptions};
use aegis_trading::{
    order::{self, CreateOrder, Order, OrderOptions},
    pricing::{self, PricingOptions},
    risk::{self, RiskOptions},
};
use anyhow::{Context, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use tokio::{process::Command, sync::Semaphore};

#[derive(Debug, Parser)]
#[command(about = "Sustained order flow; memory of each trading service over time")]
struct Args {
    /// Orders per second.
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// How long to run (e.g. 10m, 1h).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How often to print a line.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    report_every: Duration,
    /// Most orders in flight; an order that would exceed it is counted as
    /// shed, not sent.
    #[arg(long, default_value_t = 400)]
    max_in_flight: usize,
    /// NATS to use; a nats-server of its own when absent.
    #[arg(long)]
    nats_url: Option<String>,
    /// Internal: run one service until killed (pricing, risk or order).
    #[arg(long, hide = true)]
    role: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(role) = &args.role {
        let url = args
            .nats_url
            .as_deref()
            .context("--role needs --nats-url")?;
        return serve(role, url).await;
    }
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let own_server = match &args.nats_url {
        Some(_) => None,
        None => Some(aegis_testkit::NatsServer::start().context("starting nats-server")?),
    };
    let url = match (&args.nats_url, &own_server) {
        (Some(url), _) => url.clone(),
        (None, Some(server)) => server.url(),
        (None, None) => unreachable!("a server was started"),
    };
    let server_pid = own_server.as_ref().and_then(|s| s.pid());

    let exe = std::env::current_exe().context("finding this program")?;
    let mut children = BTreeMap::new();
    for role in ["pricing", "risk", "order"] {
        let child = Command::new(&exe)
            .args(["--role", role, "--nats-url", &url])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the {role} process"))?;
        children.insert(role, child);
    }
    let conn = connect(&url).await?;
    wait_for_leader(&conn).await?;
    println!(
        "soak: {} orders/s for {}, a line every {} (nats {url})",
        args.rate,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.report_every)
    );
    println!(
        "{:>7} {:>9} {:>9} {:>6} {:>6} {:>7} {:>7} {:>8} | {:>8} {:>8} {:>8} {:>8}",
        "t",
        "sent",
        "ok",
        "failed",
        "shed",
        "rate/s",
        "p50 ms",
        "p99 ms",
        "order",
        "risk",
        "pricing",
        "nats"
    );

    let stats = Arc::new(Stats::default());
    let interval_latency = Arc::new(Mutex::new(histogram()));
    let total_latency = Arc::new(Mutex::new(histogram()));
    let slots = Arc::new(Semaphore::new(args.max_in_flight));
    let run = nuid::next().to_string();
    let started = Instant::now();
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / args.rate);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut next_report = started + args.report_every;
    let mut last_ok = 0;
    let mut samples = Vec::new();
    let mut n: u64 = 0;
    while started.elapsed() < args.duration {
        ticks.tick().await;
        n += 1;
        stats.sent.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.shed.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let req = order_request(&run, n);
        let (conn, task_stats) = (conn.clone(), stats.clone());
        let (task_interval, task_total) = (interval_latency.clone(), total_latency.clone());
        tokio::spawn(async move {
            let (stats, interval_latency, total_latency) = (task_stats, task_interval, task_total);
            let _slot = slot;
            let sent = Instant::now();
            let opts = CallOptions {
                timeout: Some(Duration::from_secs(10)),
                idempotent: true,
                ..Default::default()
            };
            let result = conn
                .rpc()
                .call_active::<_, Order>(ORDER_SERVICE, ORDER_GROUP, "create_order", &req, &opts)
                .await;
            let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
            match result {
                Ok(_) => {
                    stats.ok.fetch_add(1, Ordering::Relaxed);
                    let _ = interval_latency.lock().unwrap().record(micros);
                    let _ = total_latency.lock().unwrap().record(micros);
                }
                Err(_) => {
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        if Instant::now() >= next_report {
            next_report += args.report_every;
            let sample = sample(&children, server_pid);
            let ok = stats.ok.load(Ordering::Relaxed);
            let rate = (ok - last_ok) as f64 / args.report_every.as_secs_f64();
            last_ok = ok;
            let latency = std::mem::replace(&mut *interval_latency.lock().unwrap(), histogram());
            println!(
                "{:>7} {:>9} {:>9} {:>6} {:>6} {:>7.1} {:>7.1} {:>8.1} | {:>8} {:>8} {:>8} {:>8}",
                humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
                    .to_string(),
                stats.sent.load(Ordering::Relaxed),
                ok,
                stats.failed.load(Ordering::Relaxed),
                stats.shed.load(Ordering::Relaxed),
                rate,
                latency.value_at_quantile(0.5) as f64 / 1000.0,
                latency.value_at_quantile(0.99) as f64 / 1000.0,
                mib(sample.get("order")),
                mib(sample.get("risk")),
                mib(sample.get("pricing")),
                mib(sample.get("nats")),
            );
            samples.push(sample);
        }
    }
    // Let the orders in flight finish.
    let _ = slots.acquire_many(args.max_in_flight as u32).await;
    let total = total_latency.lock().unwrap().clone();
    println!(
        "done: {} sent, {} ok, {} failed, {} shed in {}; latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        stats.sent.load(Ordering::Relaxed),
        stats.ok.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed),
        stats.shed.load(Ordering::Relaxed),
        humantime::format_duration(Duration::from_secs(started.elapsed().as_secs())),
        total.value_at_quantile(0.5) as f64 / 1000.0,
        total.value_at_quantile(0.99) as f64 / 1000.0,
        total.max() as f64 / 1000.0,
    );
    for role in ["order", "risk", "pricing", "nats"] {
        let rss: Vec<u64> = samples
            .iter()
            .filter_map(|s| s.get(role).copied())
            .collect();
        if let (Some(first), Some(last), Some(max)) = (rss.first(), rss.last(), rss.iter().max()) {
            println!(
                "{role:>8} RSS: first {} MiB, last {} MiB, max {} MiB",
                mib(Some(first)),
                mib(Some(last)),
                mib(Some(max))
            );
        }
    }
    for (_, mut child) in children {
        let _ = child.kill().await;
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Stats {
    sent: AtomicU64,
    ok: AtomicU64,
    failed: AtomicU64,
    shed: AtomicU64,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// A market order of one share, rotating symbols and sides so positions
/// stay small and every order fills.
fn order_request(run: &str, n: u64) -> CreateOrder {
    const SYMBOLS: [&str; 10] = [
        "AAPL", "MSFT", "GOOGL", "AMZN", "TSLA", "NVDA", "META", "JPM", "V", "NFLX",
    ];
    CreateOrder {
        symbol: SYMBOLS[(n % 10) as usize].to_owned(),
        side: if (n / 10).is_multiple_of(2) {
            Side::Buy
        } else {
            Side::Sell
        },
        quantity: 1,
        price: None,
        client_order_id: format!("soak-{run}-{n}"),
    }
}

/// Resident set size in bytes of each child (and nats-server), by role.
fn sample(
    children: &BTreeMap<&'static str, tokio::process::Child>,
    server_pid: Option<u32>,
) -> BTreeMap<&'static str, u64> {
    let mut rss = BTreeMap::new();
    for (role, child) in children {
        if let Some(bytes) = child.id().and_then(resident_bytes) {
            rss.insert(*role, bytes);
        }
    }
    if let Some(bytes) = server_pid.and_then(resident_bytes) {
        rss.insert("nats", bytes);
    }
    rss
}

fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn mib(bytes: Option<&u64>) -> String {
    bytes.map_or_else(
        || "-".to_owned(),
        |b| format!("{:.1}", *b as f64 / (1024.0 * 1024.0)),
    )
}

async fn connect(url: &str) -> anyhow::Result<Connection> {
    Connection::connect(AegisConfig::with_servers(url))
        .await
        .with_context(|| format!("connecting to {url}"))
}

/// Waits until order-service answers on its leader.
async fn wait_for_leader(conn: &Connection) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = conn
            .rpc()
            .call_active::<_, serde_json::Value>(
                ORDER_SERVICE,
                ORDER_GROUP,
                "list_orders",
                &serde_json::json!({"limit": 1}),
                &CallOptions::timeout(Duration::from_secs(2)),
            )
            .await;
        if listed.is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("order-service did not come up within a minute");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child: one service until killed.
async fn serve(role: &str, url: &str) -> anyhow::Result<()> {
    let conn = connect(url).await?;
    let id = Some(format!("{role}-soak"));
    let _running: Box<dyn std::any::Any> = match role {
        "pricing" => Box::new(
            pricing::start(
                &conn,
                PricingOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await?,
        ),
        "risk" => Box::new(
            risk::start(
                &conn,
                RiskOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await?,
        ),
        "order" => Box::new(
            order::start(
                &conn,
                OrderOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await?,
        ),
        other => bail!("unknown role {other}"),
    };
    std::future::pending::<()>().await;
    Ok(())
}
