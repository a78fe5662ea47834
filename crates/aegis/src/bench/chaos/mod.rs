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
//!
//! The table is an [`Outcome`]; the bounds (0 lost, 0 duplicated,
//! 0 ms with two ACTIVE, a dead instance shown down within 1 s) decide the
//! exit status.

pub(crate) mod analysis;
pub mod faults;
pub(crate) mod load;
pub(crate) mod poller;
pub(crate) mod showcase;

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
    poller::{Poller, Truth, lock},
    showcase::Showcase,
};
use super::report::{Bound, Outcome, percentile};

/// Options of `aegis bench chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosBenchArgs {
    /// The faults, in order (default: all): kill-instance, kill-leader,
    /// term-leader, stop-leader, kill-nats-1, kill-nats-2, kill-nats-3,
    /// restart-nats.
    #[arg(long, value_delimiter = ',')]
    pub faults: Vec<Fault>,
    /// How many times to run the sequence of faults.
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Clients creating orders, each one call at a time.
    #[arg(long, default_value_t = 1)]
    pub callers: usize,
    /// Pause of a client after an answer, before its next `create_order` (ms).
    #[arg(long, default_value_t = 20)]
    pub call_interval_ms: u64,
    /// Deadline of one `create_order` call (ms).
    #[arg(long, default_value_t = 5_000)]
    pub call_deadline_ms: u64,
    /// How often the monitor API is polled (ms).
    #[arg(long, default_value_t = 20)]
    pub poll_ms: u64,
    /// Seconds a killed instance stays down while the views settle.
    #[arg(long, default_value_t = 4.0)]
    pub settle_secs: f64,
    /// Seconds a killed NATS node stays down (JetStream elects new stream
    /// leaders within 4–9 s).
    #[arg(long, default_value_t = 12.0)]
    pub nats_down_secs: f64,
    /// Seconds the stopped leader stays stopped after a standby took over.
    #[arg(long, default_value_t = 1.0)]
    pub stop_secs: f64,
    /// Seconds of steady flow after a recovery, before the next fault.
    #[arg(long, default_value_t = 2.0)]
    pub pause_secs: f64,
    /// Seconds of steady flow before the first fault.
    #[arg(long, default_value_t = 3.0)]
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
    table(&mut outcome, &injected, &base, &per, &records, polls.len());
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

/// Rows: per fault, then the totals with their bounds.
fn table(
    outcome: &mut Outcome,
    injected: &[Injected],
    base: &analysis::FaultNumbers,
    per: &[analysis::FaultNumbers],
    records: &load::Records,
    polls: usize,
) {
    let zero = Some(Bound::AtMost(0.0));
    // Failed calls are reported, not bounded: what a fault costs callers is
    // what is measured; loss, duplicates and false views are the bounds.
    outcome.add(
        "before the faults: failed calls",
        "calls",
        base.failed_calls as f64,
        None,
    );
    for (f, n) in injected.iter().zip(per) {
        let name = if f.stream_leaders.is_empty() {
            format!("{} ({})", f.name, f.victim)
        } else {
            format!("{} (led {})", f.name, f.stream_leaders.len())
        };
        outcome.add(
            &format!("{name}: unavailable"),
            "ms",
            n.unavailable_ms.round(),
            None,
        );
        outcome.add(
            &format!("{}: failed calls", f.name),
            "calls",
            n.failed_calls as f64,
            None,
        );
        if let Some(d) = n.down_seen_ms {
            outcome.add(
                &format!("{}: shown down after", f.name),
                "ms",
                d.round(),
                Some(Bound::AtMost(1000.0)),
            );
        }
        let late = if n.untrue_at_settle_end {
            " (during recovery)"
        } else {
            ""
        };
        match n.view_true_after_ms {
            Some(v) => outcome.add(
                &format!("{}: view true again after{late}", f.name),
                "ms",
                v.round(),
                None,
            ),
            None => outcome.add(
                &format!("{}: view untrue after recovery", f.name),
                "polls",
                1.0,
                zero,
            ),
        }
        if n.two_active_polls > 0 {
            outcome.add(
                &format!("{}: two ACTIVE visible", f.name),
                "ms",
                n.two_active_ms.round(),
                zero,
            );
        }
    }
    over_rounds(outcome, injected, per);
    let sum = |f: fn(&analysis::FaultNumbers) -> usize| {
        (f(base) + per.iter().map(f).sum::<usize>()) as f64
    };
    let calls = records.calls.len();
    let acked = records
        .calls
        .iter()
        .filter(|c| matches!(c.outcome, load::Outcome::Acked { .. }))
        .count();
    outcome.add("orders acknowledged", "orders", acked as f64, None);
    outcome.add(
        "calls failed (all faults)",
        "calls",
        (calls - acked) as f64,
        None,
    );
    outcome.add(
        "acknowledged orders lost",
        "orders",
        sum(|n| n.acked_lost),
        zero,
    );
    outcome.add(
        "duplicate fills",
        "orders",
        sum(|n| n.duplicate_fills),
        zero,
    );
    outcome.add(
        "acknowledged events lost",
        "orders",
        sum(|n| n.events_lost),
        zero,
    );
    outcome.add(
        "writes under a deposed epoch",
        "writes",
        sum(|n| n.stale_epoch_writes),
        zero,
    );
    let two: f64 = base.two_active_ms + per.iter().map(|n| n.two_active_ms).sum::<f64>();
    outcome.add(
        &format!("two ACTIVE visible ({polls} polls)"),
        "ms",
        two.round(),
        zero,
    );
    let down: Vec<f64> = per.iter().filter_map(|n| n.down_seen_ms).collect();
    if let Some(p99) = percentile(&down, 0.99) {
        outcome.add(
            "dead instance shown down p99",
            "ms",
            p99.round(),
            Some(Bound::AtMost(1000.0)),
        );
    }
    let recovery: Vec<f64> = injected.iter().map(|f| f.recovery_ms).collect();
    if let Some(max) = percentile(&recovery, 1.0) {
        outcome.add("fault to full fleet, max", "ms", max.round(), None);
    }
}

/// The streams an order waits on: its leader's election key and its store.
/// A NATS node that leads one of them costs the sticky order service a
/// JetStream election when it dies.
const ORDER_PATH_STREAMS: [&str; 2] = ["KV_service_elections", "KV_orders"];

/// What a fault is, for comparing rounds: the fault itself, or for a NATS
/// node's SIGKILL, which of the order path's stream leaders it held (the
/// node's number says nothing: leaders move between rounds).
fn kind_of(f: &Injected) -> String {
    match f.fault {
        // No leader read at all: the queries timed out, or it led nothing.
        Some(Fault::KillNats(_)) if f.stream_leaders.is_empty() => {
            "kill a NATS node whose stream leaders were not read".to_owned()
        }
        Some(Fault::KillNats(_)) => {
            let led: Vec<&str> = ORDER_PATH_STREAMS
                .into_iter()
                .filter(|s| f.stream_leaders.iter().any(|l| l == s))
                .collect();
            if led.is_empty() {
                "kill a NATS node leading neither KV_service_elections nor KV_orders".to_owned()
            } else {
                format!("kill the NATS node leading {}", led.join(" and "))
            }
        }
        Some(fault) => fault.to_string(),
        None => f.name.clone(),
    }
}

/// Per kind of fault injected more than once: the unavailability's p50 and
/// max over its injections, and the failed calls in all of them.
fn over_rounds(outcome: &mut Outcome, injected: &[Injected], per: &[analysis::FaultNumbers]) {
    let mut kinds: Vec<(String, Vec<f64>, usize)> = Vec::new();
    for (f, n) in injected.iter().zip(per) {
        let kind = kind_of(f);
        let at = match kinds.iter().position(|(k, ..)| *k == kind) {
            Some(at) => at,
            None => {
                kinds.push((kind, Vec::new(), 0));
                kinds.len() - 1
            }
        };
        kinds[at].1.push(n.unavailable_ms);
        kinds[at].2 += n.failed_calls;
    }
    for (kind, unavailable, failed) in kinds {
        let times = unavailable.len();
        let (Some(p50), Some(max)) = (percentile(&unavailable, 0.5), percentile(&unavailable, 1.0))
        else {
            continue;
        };
        if times < 2 {
            continue;
        }
        outcome.add(
            &format!("{kind} ×{times}: unavailable p50"),
            "ms",
            p50.round(),
            None,
        );
        outcome.add(
            &format!("{kind} ×{times}: unavailable max"),
            "ms",
            max.round(),
            None,
        );
        outcome.add(
            &format!("{kind} ×{times}: failed calls"),
            "calls",
            failed as f64,
            None,
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn injected(fault: Fault, leaders: &[&str]) -> Injected {
        Injected {
            name: fault.to_string(),
            victim: "x".to_owned(),
            stream_leaders: leaders.iter().map(|l| (*l).to_owned()).collect(),
            fault: Some(fault),
            injected: None,
            settled: None,
            recovered: None,
            recovery_ms: 0.0,
        }
    }

    fn numbers(unavailable_ms: f64, failed_calls: usize) -> analysis::FaultNumbers {
        analysis::FaultNumbers {
            unavailable_ms,
            failed_calls,
            ..Default::default()
        }
    }

    #[test]
    fn rounds_are_summed_up_per_kind_and_nats_kills_by_the_leaders_they_held() {
        let injected = [
            injected(Fault::KillLeader, &[]),
            injected(Fault::KillNats(1), &["EVENTS", "KV_orders"]),
            injected(Fault::KillNats(2), &["EVENTS"]),
            injected(Fault::KillLeader, &[]),
            injected(Fault::KillNats(3), &["KV_orders"]),
            injected(Fault::KillLeader, &[]),
            injected(Fault::TermLeader, &[]),
        ];
        let per = [
            numbers(300.0, 0),
            numbers(6000.0, 2),
            numbers(50.0, 0),
            numbers(500.0, 1),
            numbers(7000.0, 1),
            numbers(400.0, 0),
            numbers(90.0, 0),
        ];
        let mut outcome = Outcome::new("chaos", "2.12".into(), serde_json::json!({}));
        over_rounds(&mut outcome, &injected, &per);
        let rows: Vec<(String, f64)> = outcome
            .rows
            .iter()
            .map(|r| (r.metric.clone(), r.value))
            .collect();
        let row = |m: &str| rows.iter().find(|(n, _)| n == m).map(|(_, v)| *v);
        assert_eq!(row("kill-leader ×3: unavailable p50"), Some(400.0));
        assert_eq!(row("kill-leader ×3: unavailable max"), Some(500.0));
        assert_eq!(row("kill-leader ×3: failed calls"), Some(1.0));
        let orders = "kill the NATS node leading KV_orders ×2";
        assert_eq!(row(&format!("{orders}: unavailable p50")), Some(6000.0));
        assert_eq!(row(&format!("{orders}: unavailable max")), Some(7000.0));
        assert_eq!(row(&format!("{orders}: failed calls")), Some(3.0));
        // Kinds seen once have their own rows already.
        assert_eq!(rows.len(), 6, "{rows:?}");
    }
}
