//! `aegis bench failover --stateless`: steady idempotent calls through
//! discovery (`call_with`, instance-directed subjects, round-robin) against
//! echo instances that are SIGKILLed one at a time and restarted.
//!
//! What can go wrong for a caller when an instance dies: a call routed to it
//! after its connection closed finds no responder (the client evicts it and
//! tries another at once); a call that was in flight inside it when it died
//! never gets an answer (the idempotent call gives up on that attempt after
//! `--attempt-timeout-ms` and retries elsewhere). Either way the call must
//! succeed: the target is zero failed calls. The latency of those calls is
//! the price, reported as the worst latency and the percentiles.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection, RegistryReader, contracts::InstanceStatus, rpc::CallOptions,
};
use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{
    FailoverBenchArgs,
    fleet::{Fleet, METHOD, SERVICE},
    wait_for,
};
use crate::bench::{
    progress,
    report::{Bound, Outcome, percentile},
};

/// One call as the caller saw it.
struct CallRecord {
    /// When it was sent, from the start of the run.
    at: Duration,
    latency: Duration,
    /// The instance that served it, or the error code.
    outcome: Result<String, String>,
}

/// Runs the stateless failover benchmark against the server at `url`.
pub(crate) async fn run(args: &FailoverBenchArgs, url: &str) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.instances >= 2, "--instances must be at least 2");
    anyhow::ensure!(
        args.callers > 0 && args.rate > 0.0,
        "--callers and --rate must be positive"
    );
    let started = chrono::Utc::now();
    let conn = Connection::connect(AegisConfig::with_servers(url)).await?;
    let server_version = conn.server_version().to_string();
    let registry = RegistryReader::start(&conn)
        .await
        .context("starting the registry view")?;
    let mut fleet = Fleet::new(args.instances, url, None)?;
    let result = drive(args, &conn, &registry, &mut fleet).await;
    if result.is_err() || args.keep_logs {
        fleet.keep_logs();
        eprintln!("instance logs: {}", fleet.log_dir().display());
    }
    let (records, kills, elapsed) = result?;
    drop(fleet);
    conn.drain().await.ok();

    let calls = records.len();
    let failed: Vec<&CallRecord> = records.iter().filter(|r| r.outcome.is_err()).collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for r in &failed {
        if let Err(code) = &r.outcome {
            *errors.entry(code.clone()).or_default() += 1;
        }
    }
    let mut served: BTreeMap<String, usize> = BTreeMap::new();
    for r in &records {
        if let Ok(id) = &r.outcome {
            *served.entry(id.clone()).or_default() += 1;
        }
    }
    let ms: Vec<f64> = records
        .iter()
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    let window = Duration::from_secs(1);
    let near_kill: Vec<f64> = records
        .iter()
        .filter(|r| {
            kills
                .iter()
                .any(|(k, _)| r.at + r.latency >= *k && r.at <= *k + window)
        })
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    let slow = ms.iter().filter(|&&m| m > 50.0).count();
    let pct = |s: &[f64], q| percentile(s, q).unwrap_or(f64::NAN);

    let mut out = Outcome::new(
        "failover --stateless",
        server_version,
        serde_json::json!({
            "instances": args.instances,
            "instance_kind": "child processes: aegis service echo",
            "kills": args.kills,
            "kill_signal": "SIGKILL",
            "seconds_between_kills": args.interval_secs,
            "down_secs": args.down_secs,
            "callers": args.callers,
            "target_rate_calls_per_s": args.rate,
            "call": "call_with (discovery, round-robin, rpc.{service}.{instance}.{method}), idempotent",
            "deadline_ms": args.deadline_ms,
            "attempt_timeout_ms": args.attempt_timeout_ms,
        }),
    );
    out.set_started(started);
    out.add("calls", "calls", calls as f64, None);
    out.add(
        "achieved rate",
        "calls/s",
        calls as f64 / elapsed.as_secs_f64(),
        None,
    );
    out.add("instances SIGKILLed", "kills", kills.len() as f64, None);
    out.add(
        "failed idempotent calls",
        "calls",
        failed.len() as f64,
        Some(Bound::AtMost(0.0)),
    );
    out.add("latency p50", "ms", pct(&ms, 0.50), None);
    out.add("latency p99", "ms", pct(&ms, 0.99), None);
    out.add("latency p99.9", "ms", pct(&ms, 0.999), None);
    out.add("worst latency", "ms", pct(&ms, 1.0), None);
    out.add(
        "worst latency within 1 s of a kill",
        "ms",
        pct(&near_kill, 1.0),
        None,
    );
    out.add("calls slower than 50 ms", "calls", slow as f64, None);
    out.results = serde_json::json!({
        "calls": calls,
        "failed": failed.len(),
        "errors_by_code": errors,
        "served_by_instance": served,
        "latency_ms": {
            "p50": pct(&ms, 0.50),
            "p90": pct(&ms, 0.90),
            "p99": pct(&ms, 0.99),
            "p99_9": pct(&ms, 0.999),
            "max": pct(&ms, 1.0),
        },
        "worst_latency_within_1s_of_kill_ms": pct(&near_kill, 1.0),
        "calls_slower_than_50ms": slow,
        "slowest_calls": slowest(&records, 30),
        "kills": kills.iter().map(|(at, id)| serde_json::json!({
            "at_ms": at.as_secs_f64() * 1e3,
            "instance": id,
        })).collect::<Vec<_>>(),
        "duration_s": elapsed.as_secs_f64(),
    });
    out.finish(args.json.as_deref())?;
    Ok(out)
}

type Run = (Vec<CallRecord>, Vec<(Duration, String)>, Duration);

async fn drive(
    args: &FailoverBenchArgs,
    conn: &Connection,
    registry: &RegistryReader,
    fleet: &mut Fleet,
) -> anyhow::Result<Run> {
    let n = fleet.len();
    for slot in 0..n {
        fleet.start(slot)?;
    }
    let ids = fleet.ids();
    wait_for(
        fleet,
        Duration::from_secs(20),
        "the instances to register",
        || ids.iter().all(|id| is_active(registry, id)),
    )
    .await?;

    let base = Instant::now();
    let records = Arc::new(Mutex::new(Vec::<CallRecord>::new()));
    let stop = CancellationToken::new();
    let opts = Arc::new(CallOptions {
        timeout: Some(Duration::from_millis(args.deadline_ms)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_millis(args.attempt_timeout_ms)),
        ..Default::default()
    });
    let period = Duration::from_secs_f64(args.callers as f64 / args.rate);
    let mut callers = Vec::new();
    for c in 0..args.callers {
        let (rpc, opts, records, stop) = (conn.rpc(), opts.clone(), records.clone(), stop.clone());
        // Spread the callers over one period so the load is even.
        let offset = period.mul_f64(c as f64 / args.callers as f64);
        callers.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut i = 0u64;
            while !stop.is_cancelled() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                i += 1;
                let body = serde_json::json!({ "caller": c, "n": i });
                let sent = Instant::now();
                let result = rpc
                    .call_with::<_, serde_json::Value>(SERVICE, METHOD, &body, &opts)
                    .await;
                let latency = sent.elapsed();
                let outcome = match result {
                    Ok(reply) if reply.value == body => {
                        Ok(reply.instance_id.unwrap_or_else(|| "unknown".into()))
                    }
                    Ok(_) => Err("WRONG_REPLY".to_owned()),
                    Err(e) => Err(e.code().to_string()),
                };
                records
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(CallRecord {
                        at: sent - base,
                        latency,
                        outcome,
                    });
            }
        }));
    }
    // Stop the callers whatever happens below.
    let _stop_guard = stop.clone().drop_guard();

    let interval = Duration::from_secs_f64(args.interval_secs);
    let down = Duration::from_secs_f64(args.down_secs);
    let bar = progress(args.kills as u64, "SIGKILL and restart");
    tokio::time::sleep(interval).await;
    let mut kills = Vec::new();
    for k in 0..args.kills {
        let round_start = Instant::now();
        let slot = k % n;
        let victim = fleet.id(slot).to_owned();
        kills.push((base.elapsed(), victim.clone()));
        fleet.kill(slot).await?;
        bar.set_message(format!("killed {victim}"));
        tokio::time::sleep(down).await;
        let id = fleet.start(slot)?;
        wait_for(
            fleet,
            Duration::from_secs(20),
            "the restarted instance",
            || is_active(registry, &id),
        )
        .await?;
        bar.inc(1);
        tokio::time::sleep(interval.saturating_sub(round_start.elapsed())).await;
    }
    bar.finish_and_clear();
    tokio::time::sleep(interval).await;
    stop.cancel();
    for c in callers {
        c.await.context("a caller task failed")?;
    }
    let elapsed = base.elapsed();
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((records, kills, elapsed))
}

fn is_active(registry: &RegistryReader, id: &str) -> bool {
    registry
        .get(SERVICE, id)
        .is_some_and(|i| i.status == InstanceStatus::Active)
}

/// The `n` slowest calls: when they were sent, how long they took, who
/// served them (or the error) — to see where the time went.
fn slowest(records: &[CallRecord], n: usize) -> Vec<serde_json::Value> {
    let mut by_latency: Vec<&CallRecord> = records.iter().collect();
    by_latency.sort_by_key(|r| std::cmp::Reverse(r.latency));
    by_latency
        .into_iter()
        .take(n)
        .map(|r| {
            serde_json::json!({
                "sent_at_ms": r.at.as_secs_f64() * 1e3,
                "latency_ms": r.latency.as_secs_f64() * 1e3,
                "outcome": match &r.outcome {
                    Ok(id) => id.clone(),
                    Err(code) => code.clone(),
                },
            })
        })
        .collect()
}
