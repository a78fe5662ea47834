//! `aegis bench chaos`: the showcase under a steady order flow while faults
//! are injected one after the other, measuring what traders and operators
//! would see.
//!
//! The benchmark starts `aegis up` (this same binary: 3 NATS nodes, order
//! ×3, pricing ×2, risk ×2, the monitor) with a temporary state directory,
//! runs a client creating orders through `call_active` (20 ms between an
//! answer and the next call), a
//! subscriber to the order events, watches of the `orders` bucket and the
//! election key, and a poller of the monitor API; then injects each fault,
//! lets it settle, recovers and waits for the full fleet before the next.
//! At the end every acknowledged order is read back.
//!
//! - `showcase.rs`: the `aegis up` child and its state directory.
//! - `load.rs`: the order flow, the event subscriber and the watches.
//! - `poller.rs`: the API's view judged against the truth at every poll.
//! - [`faults`]: the faults and their recovery.
//! - `analysis.rs`: the per-fault numbers.
//! - `table.rs`: those numbers as the results table, with their bounds.
//!
//! The table is an [`Outcome`]; the bounds (0 lost, 0 duplicated,
//! 0 ms with two ACTIVE, a dead instance shown down within 1 s) decide the
//! exit status.

pub(crate) mod analysis;
pub mod faults;
pub(crate) mod load;
pub(crate) mod poller;
pub(crate) mod showcase;
mod table;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context;
use clap::Args;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::{
    faults::{Bench, Fault, Injected},
    load::Shared,
    poller::{Poller, Truth},
    showcase::Showcase,
};
use super::report::Outcome;
use crate::bench::lock;

/// Options of `aegis bench chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosBenchArgs {
    /// The faults, in order (default: all): kill-instance, kill-leader,
    /// term-leader, stop-leader, kill-nats-1, kill-nats-2, kill-nats-3,
    /// restart-nats.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// How many times to run the sequence of faults.
    #[arg(long, default_value_t = 1, value_parser = super::flags::at_least(1usize))]
    pub rounds: usize,
    /// Clients creating orders, each one call at a time.
    #[arg(long, default_value_t = 1, value_parser = super::flags::at_least(1usize))]
    pub callers: usize,
    /// Pause of a client after an answer, before its next `create_order` (ms).
    #[arg(long, default_value_t = 20, value_parser = super::flags::within(0u64, super::flags::DAY_MS))]
    pub call_interval_ms: u64,
    /// Deadline of one `create_order` call (ms).
    #[arg(long, default_value_t = 5_000, value_parser = crate::cli::timeout_ms())]
    pub call_deadline_ms: u64,
    /// How often the monitor API is polled (ms).
    #[arg(long, default_value_t = 20, value_parser = super::flags::within(1u64, super::flags::DAY_MS))]
    pub poll_ms: u64,
    /// Seconds a killed instance stays down while the views settle.
    #[arg(long, default_value_t = 4.0, value_parser = super::flags::seconds)]
    pub settle_secs: f64,
    /// Seconds a killed NATS node stays down (JetStream elects new stream
    /// leaders within 4–9 s).
    #[arg(long, default_value_t = 12.0, value_parser = super::flags::seconds)]
    pub nats_down_secs: f64,
    /// Seconds the stopped leader stays stopped after a standby took over.
    #[arg(long, default_value_t = 1.0, value_parser = super::flags::seconds)]
    pub stop_secs: f64,
    /// Seconds of steady flow after a recovery, before the next fault.
    #[arg(long, default_value_t = 2.0, value_parser = super::flags::seconds)]
    pub pause_secs: f64,
    /// Seconds of steady flow before the first fault.
    #[arg(long, default_value_t = 3.0, value_parser = super::flags::seconds)]
    pub warmup_secs: f64,
    /// Keep the showcase's state directory and logs (the path is printed).
    #[arg(long)]
    pub keep_logs: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The instances the showcase runs.
const INSTANCES: &str = "order=3,pricing=2,risk=2";

/// Runs the benchmark and prints the table; returns the outcome. Ctrl-C or
/// SIGTERM stops it (the showcase is stopped on the way out).
///
/// # Errors
/// When the showcase does not start or recover, or the run is interrupted.
pub async fn run(args: ChaosBenchArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(
        args.callers > 0 && args.poll_ms > 0,
        "--callers and --poll-ms must be positive"
    );
    let faults = if args.faults.is_empty() {
        Fault::all()
    } else {
        args.faults.clone()
    };
    let interrupted = crate::shutdown::on_signals();
    let mut showcase = Showcase::start(INSTANCES, args.keep_logs)?;
    tokio::select! {
        r = measure(&args, &faults, &mut showcase) => r,
        () = interrupted.cancelled() => anyhow::bail!("interrupted; showcase stopped"),
    }
}

async fn measure(
    args: &ChaosBenchArgs,
    faults: &[Fault],
    showcase: &mut Showcase,
) -> anyhow::Result<Outcome> {
    let started_wall = chrono::Utc::now();
    let bar = super::progress(
        (faults.len() * args.rounds) as u64 + 1,
        "starting the showcase",
    );
    let expected: Vec<String> = INSTANCES
        .split(',')
        .filter_map(|p| p.split_once('='))
        .flat_map(|(kind, n)| {
            let n: usize = n.parse().unwrap_or(0);
            (1..=n).map(move |i| format!("{kind}-{i}"))
        })
        .collect();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;
    wait_ready(showcase, &http, expected.len()).await?;
    let conn = showcase::connect(showcase).await?;
    let server_version = conn.client().server_info().version.clone();

    let shared = Shared::default();
    let truth = Arc::new(Mutex::new(Truth::default()));
    let polls = Arc::new(Mutex::new(Vec::new()));
    let stop_flow = CancellationToken::new();
    let stop_watch = CancellationToken::new();
    let _guard = (
        stop_flow.clone().drop_guard(),
        stop_watch.clone().drop_guard(),
    );
    let election = tokio::spawn(load::watch_election(
        conn.clone(),
        shared.clone(),
        stop_watch.clone(),
    ));
    let writes = tokio::spawn(load::watch_orders(
        conn.clone(),
        shared.clone(),
        stop_watch.clone(),
    ));
    let subscription = load::subscribe_events(&conn, &shared)
        .await
        .context("subscribing to the order events")?;
    let poller = tokio::spawn(
        Poller {
            expected: expected.clone(),
            children: showcase.remote().clone(),
            api: showcase.api(),
            token: showcase.viewer_token()?,
            holder: shared.holder.clone(),
            truth: truth.clone(),
            polls: polls.clone(),
        }
        .run(Duration::from_millis(args.poll_ms), stop_watch.clone()),
    );
    let mut bench = Bench {
        showcase,
        js: conn.jetstream().clone(),
        shared: shared.clone(),
        truth,
        polls: polls.clone(),
        expected,
        http,
        settle: Duration::from_secs_f64(args.settle_secs),
        nats_down: Duration::from_secs_f64(args.nats_down_secs),
        stop_past_takeover: Duration::from_secs_f64(args.stop_secs),
    };
    bench.wait_fleet(Duration::from_secs(60)).await?;

    let begin = Instant::now();
    let flow = tokio::spawn(load::orders(
        conn.clone(),
        shared.clone(),
        args.callers,
        Duration::from_millis(args.call_interval_ms),
        Duration::from_millis(args.call_deadline_ms),
        stop_flow.clone(),
    ));
    bar.set_message("warming up");
    tokio::time::sleep(Duration::from_secs_f64(args.warmup_secs)).await;
    bar.inc(1);
    let mut injected: Vec<Injected> = Vec::new();
    for round in 1..=args.rounds {
        for fault in faults {
            let name = if args.rounds > 1 {
                format!("r{round} {fault}")
            } else {
                fault.to_string()
            };
            bar.set_message(name.clone());
            let done = bench.inject(*fault, name).await?;
            tracing::info!(fault = %done.name, victim = %done.victim, recovery_ms = done.recovery_ms, "fault recovered");
            injected.push(done);
            // Quiet flow between faults, so each outage stands alone.
            tokio::time::sleep(Duration::from_secs_f64(args.pause_secs)).await;
            bar.inc(1);
        }
    }
    stop_flow.cancel();
    flow.await?;
    let end = Instant::now();

    bar.set_message("reading back");
    tracing::info!(
        calls = lock(&shared.records).calls.len(),
        "flow stopped; reading the orders back"
    );
    // The records' lock is never held across an await: the subscriber and
    // the watches take it from the runtime's threads.
    let acked = analysis::acked(&lock(&shared.records));
    let read_back = analysis::read_back(&conn, acked).await;
    // The subscriber may trail the stream after a node loss: give it time.
    let deadline = Instant::now() + Duration::from_secs(20).max(load::EVENT_ACK_WAIT * 3);
    let missing = loop {
        let missing = analysis::missing_events(&lock(&shared.records));
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tracing::info!(
        lost = read_back.lost.len(),
        missing_events = missing.len(),
        "read back"
    );
    stop_watch.cancel();
    let _ = tokio::join!(election, writes, poller);
    subscription.shutdown().await;
    bar.finish_and_clear();

    let records = lock(&shared.records);
    let polls = lock(&polls);
    let (base, per) = analysis::numbers(
        &injected, &records, &polls, &read_back, &missing, begin, end,
    );
    let mut outcome = Outcome::new(
        "chaos",
        server_version,
        serde_json::json!({
            "instances": INSTANCES,
            "nats_nodes": showcase::NODES,
            "faults": faults.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "rounds": args.rounds,
            "callers": args.callers,
            "call_interval_ms": args.call_interval_ms,
            "call_deadline_ms": args.call_deadline_ms,
            "poll_ms": args.poll_ms,
            "settle_secs": args.settle_secs,
            "nats_down_secs": args.nats_down_secs,
            "stop_secs": args.stop_secs,
        }),
    );
    outcome.set_started(started_wall);
    table::table(&mut outcome, &injected, &base, &per, &records, polls.len());
    outcome.results = serde_json::json!({
        "baseline": base,
        "faults": injected.iter().zip(&per).map(|(f, n)| serde_json::json!({
            "fault": f,
            "numbers": n,
        })).collect::<Vec<_>>(),
        "calls": records.calls.len(),
        "polls": polls.len(),
        "order_writes": records.writes.len(),
        "missing_events": analysis::describe_missing(&records, &missing),
        "leader_changes": records.takeovers.len(),
    });
    drop((records, polls));
    outcome.finish(args.json.as_deref())?;
    Ok(outcome)
}

/// Waits for the monitor's `/ready` and `expected` instances in its list;
/// on timeout, says which was missing and shows the end of `aegis up`'s log.
async fn wait_ready(
    showcase: &mut Showcase,
    http: &reqwest::Client,
    expected: usize,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut missing;
    loop {
        showcase.check_running()?;
        let ready = http.get(format!("{}/ready", showcase.api())).send().await;
        match ready {
            Ok(r) if r.status().is_success() => match showcase.viewer_token() {
                Ok(token) => {
                    let listed = http
                        .get(format!("{}/api/instances", showcase.api()))
                        .bearer_auth(token)
                        .send()
                        .await;
                    match listed {
                        Ok(r) => match r.json::<Vec<serde_json::Value>>().await {
                            Ok(list) if list.len() >= expected => return Ok(()),
                            Ok(list) => {
                                let ids: Vec<&str> = list
                                    .iter()
                                    .filter_map(|i| i["instanceId"].as_str())
                                    .collect();
                                missing = format!(
                                    "{} of {expected} instances listed: {}",
                                    list.len(),
                                    ids.join(" ")
                                );
                            }
                            Err(e) => missing = format!("GET /api/instances: {e}"),
                        },
                        Err(e) => missing = format!("GET /api/instances: {e}"),
                    }
                }
                Err(e) => missing = format!("no viewer token: {e:#}"),
            },
            Ok(r) => {
                let status = r.status();
                missing = format!("/ready {status}: {}", r.text().await.unwrap_or_default());
            }
            Err(e) => missing = format!("/ready: {e}"),
        }
        if Instant::now() > deadline {
            let log = showcase.dir().join("up.log");
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            anyhow::bail!(
                "the showcase was not ready within 180 s ({missing}); the end of {}:\n{tail}",
                log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
