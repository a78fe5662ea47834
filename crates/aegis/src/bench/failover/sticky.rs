//! `aegis bench failover --sticky`: three `aegis service echo
//! --single-active default` processes; round after round the current leader
//! is SIGKILLed (first phase) or stopped with SIGTERM (second phase) and
//! restarted, while
//!
//! - a client calls `call_active` in a loop (idempotent, short pause between
//!   calls): the failover time of a round is from the signal to the first
//!   successful call served by another instance;
//! - a plain caller (async-nats only, no SDK) does the same with plain
//!   requests to the shared subject `rpc.echo-service.echo`, retrying on
//!   no-responders and timeouts only, as any NATS client in any language
//!   would: only the leader is in that subject's queue group. Its failover
//!   time is measured the same way (the serving instance is read from the
//!   reply's `Aegis-Instance` header);
//! - a prober calls every instance directly (`call_instance`) every
//!   `--probe-ms`: a leader answers with its epoch, a standby with
//!   NOT_ACTIVE, a dead one has no responder. The prober's leader answers
//!   go to the [overlap](super::overlap) check. (The client's do not: a
//!   `call_active` that retried has a window spanning the whole failover,
//!   and the moment it was served is only known to lie at its end.)
//! - a registry poller reads the registry view at the same rate and counts
//!   moments where two live instances are advertised ACTIVE (a killed
//!   incarnation's record lingers until its TTL and is not live).
//!
//! All times are taken on this process's monotonic clock.
//!
//! Why one module of over 500 lines: it is one run, read top to bottom —
//! the fleet's start, the actors above sharing the round's state, the
//! rounds of both phases, and the table. The overlap analysis, the fleet
//! and the report are elsewhere.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection, RegistryReader,
    contracts::InstanceStatus,
    rpc::{CallOptions, ErrorCode},
};
use anyhow::Context;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    FailoverBenchArgs,
    fleet::{Fleet, METHOD, SERVICE},
    overlap::{LeaderAnswer, analyse},
    wait_for, wait_until,
};
use crate::bench::{
    lock, progress,
    report::{Bound, Outcome, percentile},
};

/// The sticky group the instances run in.
const GROUP: &str = "default";
/// The lease the instances run with (`aegis service echo` uses the SDK's).
const LEASE: Duration = aegis_sdk::election::DEFAULT_LEASE;

/// How a round stops the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Stop {
    /// SIGKILL: the lease must lapse.
    Kill,
    /// SIGTERM: the leader resigns.
    Graceful,
}

/// One round as it happened.
#[derive(Debug, Clone, Serialize)]
struct Round {
    stop: Stop,
    /// The stopped leader.
    leader: String,
    epoch: u64,
    /// When the signal was sent (from the start).
    #[serde(skip)]
    at: Duration,
}

/// What one round measured.
#[derive(Debug, Clone, Serialize)]
struct RoundResult {
    stop: Stop,
    leader: String,
    epoch: u64,
    signal_at_ms: f64,
    /// Signal → first successful `call_active` served by another instance.
    client_ms: Option<f64>,
    /// Signal → first successful plain request served by another instance.
    plain_ms: Option<f64>,
    /// Signal → first answer of a newer epoch to anyone (prober or client).
    leader_serving_ms: Option<f64>,
    /// Signal → the registry view first advertising another live ACTIVE.
    registry_ms: Option<f64>,
    new_leader: Option<String>,
}

/// A `call_active` of the client.
struct Call {
    sent: Duration,
    received: Duration,
    outcome: Result<(String, u64), ErrorCode>,
}

/// The shared state of the background tasks.
#[derive(Default)]
struct Observed {
    calls: Vec<Call>,
    /// Every leader answer, the client's and the prober's.
    answers: Vec<LeaderAnswer>,
    /// The prober's leader answers (one attempt each): the overlap input.
    probe_answers: Vec<LeaderAnswer>,
    probes: usize,
    probe_kinds: BTreeMap<&'static str, usize>,
    /// Probes that got no answer at all: (sent, instance).
    probe_timeouts: Vec<(Duration, String)>,
    /// (time, live ACTIVE instance ids) at every change of that set.
    registry: Vec<(Duration, Vec<String>)>,
    registry_polls: usize,
    /// Polls that saw two or more live ACTIVE instances.
    registry_overlap_polls: usize,
    /// Time spent with two or more live ACTIVE instances advertised.
    registry_overlap_time: Duration,
    /// The client's latest success: (received, instance, epoch).
    last_ok: Option<(Duration, String, u64)>,
    /// The plain caller's requests.
    plain: Vec<PlainCall>,
}

/// A plain request of the no-SDK caller (retries included).
struct PlainCall {
    sent: Duration,
    received: Duration,
    /// The instance that answered, or what went wrong.
    outcome: Result<String, String>,
    /// Attempts that met no responder or timed out first.
    retries: u32,
}

type Shared<T> = Arc<Mutex<T>>;

/// Runs the sticky failover benchmark against the server at `url`.
pub(crate) async fn run(args: &FailoverBenchArgs, url: &str) -> anyhow::Result<Outcome> {
    anyhow::ensure!(args.instances >= 2, "--instances must be at least 2");
    anyhow::ensure!(args.rounds > 0, "--rounds must be positive");
    anyhow::ensure!(args.probe_ms > 0, "--probe-ms must be positive");
    let started = chrono::Utc::now();
    let client = Connection::connect(AegisConfig::with_servers(url)).await?;
    let observer = Connection::connect(AegisConfig::with_servers(url)).await?;
    let server_version = client.server_version().to_string();
    let registry = RegistryReader::start(&observer)
        .await
        .context("starting the registry view")?;
    let mut fleet = Fleet::new(args.instances, url, Some(GROUP))?;
    let result = drive(args, url, &client, &observer, &registry, &mut fleet).await;
    if result.is_err() || args.keep_logs {
        fleet.keep_logs();
        eprintln!("instance logs: {}", fleet.log_dir().display());
    }
    let (rounds, observed, elapsed) = result?;
    drop(fleet);
    client.drain().await.ok();
    observer.drain().await.ok();
    report(args, server_version, started, &rounds, &observed, elapsed)
}

type Run = (Vec<Round>, Observed, Duration);

#[allow(clippy::too_many_lines)]
async fn drive(
    args: &FailoverBenchArgs,
    url: &str,
    client: &Connection,
    observer: &Connection,
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
        "the instances to register and elect a leader",
        || {
            let active = live_active(registry, &HashSet::new());
            active.len() == 1
                && ids.iter().all(|id| {
                    registry
                        .get(SERVICE, id)
                        .is_some_and(|i| i.status != InstanceStatus::Unhealthy)
                })
        },
    )
    .await?;

    let base = Instant::now();
    let since = move || base.elapsed();
    let observed: Shared<Observed> = Arc::default();
    let dead: Shared<HashSet<String>> = Arc::default();
    let targets: Shared<Vec<String>> = Arc::new(Mutex::new(fleet.ids()));
    let stop = CancellationToken::new();
    let _stop_guard = stop.clone().drop_guard();
    let mut tasks = Vec::new();

    // The client.
    {
        let (rpc, observed, stop) = (client.rpc(), observed.clone(), stop.clone());
        let pause = Duration::from_millis(args.call_interval_ms);
        let opts = CallOptions {
            timeout: Some(Duration::from_millis(args.deadline_ms)),
            idempotent: true,
            attempt_timeout: Some(Duration::from_millis(args.attempt_timeout_ms)),
            ..Default::default()
        };
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let body = serde_json::json!({ "n": i });
                let sent = since();
                let result = rpc
                    .call_active::<_, serde_json::Value>(SERVICE, GROUP, METHOD, &body, &opts)
                    .await;
                let received = since();
                let outcome = match result {
                    Ok(r) if r.value == body => match (r.instance_id, r.epoch) {
                        (Some(id), Some(epoch)) => Ok((id, epoch)),
                        _ => Err(ErrorCode::Internal),
                    },
                    Ok(_) => Err(ErrorCode::Internal),
                    Err(e) => Err(e.code()),
                };
                {
                    let mut o = lock(&observed);
                    if let Ok((id, epoch)) = &outcome {
                        o.answers.push(LeaderAnswer {
                            instance: id.clone(),
                            epoch: *epoch,
                            sent,
                            received,
                        });
                        o.last_ok = Some((received, id.clone(), *epoch));
                    }
                    o.calls.push(Call {
                        sent,
                        received,
                        outcome,
                    });
                }
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }

    // The plain caller.
    {
        let plain = async_nats::ConnectOptions::new()
            .request_timeout(Some(Duration::from_millis(args.attempt_timeout_ms)))
            .connect(url)
            .await
            .context("connecting the plain caller")?;
        let (observed, stop) = (observed.clone(), stop.clone());
        let pause = Duration::from_millis(args.call_interval_ms);
        let deadline = Duration::from_millis(args.deadline_ms);
        tasks.push(tokio::spawn(async move {
            let subject = format!("rpc.{SERVICE}.{METHOD}");
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let sent = since();
                let (outcome, retries) =
                    plain_request(&plain, &subject, i, sent + deadline, &since).await;
                let received = since();
                lock(&observed).plain.push(PlainCall {
                    sent,
                    received,
                    outcome,
                    retries,
                });
                if !pause.is_zero() {
                    tokio::time::sleep(pause).await;
                }
            }
        }));
    }

    // The prober: one task per slot, probing that slot's current incarnation.
    let probe_every = Duration::from_millis(args.probe_ms);
    for slot in 0..n {
        let (rpc, observed, stop, targets) = (
            observer.rpc(),
            observed.clone(),
            stop.clone(),
            targets.clone(),
        );
        let opts = CallOptions::timeout(Duration::from_millis(250));
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(probe_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let body = serde_json::json!({});
            while !stop.is_cancelled() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let id = lock(&targets)[slot].clone();
                let sent = since();
                let result = rpc
                    .call_instance::<_, serde_json::Value>(SERVICE, &id, METHOD, &body, &opts)
                    .await;
                let received = since();
                let kind = match &result {
                    Ok(r) if r.epoch.is_some() => "leader",
                    Ok(_) => "answer without epoch",
                    Err(e) if e.code() == ErrorCode::NotActive => "standby (NOT_ACTIVE)",
                    Err(e) if e.code() == ErrorCode::ServiceUnavailable => "gone (no responder)",
                    Err(e) if e.code() == ErrorCode::Timeout => "timeout",
                    Err(_) => "other error",
                };
                let mut o = lock(&observed);
                o.probes += 1;
                *o.probe_kinds.entry(kind).or_default() += 1;
                if kind == "timeout" {
                    o.probe_timeouts.push((sent, id.clone()));
                }
                if let Ok(reply) = result
                    && let Some(epoch) = reply.epoch
                {
                    let answer = LeaderAnswer {
                        instance: reply.instance_id.unwrap_or(id),
                        epoch,
                        sent,
                        received,
                    };
                    o.answers.push(answer.clone());
                    o.probe_answers.push(answer);
                }
            }
        }));
    }

    // The registry poller.
    {
        let (registry, observed, stop, dead) = (
            registry.clone(),
            observed.clone(),
            stop.clone(),
            dead.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(probe_every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut previous: Option<(Duration, Vec<String>)> = None;
            while !stop.is_cancelled() {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                let dead_now = lock(&dead).clone();
                let active = live_active(&registry, &dead_now);
                let now = since();
                let mut o = lock(&observed);
                o.registry_polls += 1;
                if let Some((at, ids)) = &previous
                    && ids.len() > 1
                {
                    o.registry_overlap_time += now.saturating_sub(*at);
                }
                if active.len() > 1 {
                    o.registry_overlap_polls += 1;
                }
                if previous.as_ref().is_none_or(|(_, ids)| *ids != active) {
                    o.registry.push((now, active.clone()));
                }
                previous = Some((now, active));
            }
        }));
    }

    // The rounds.
    let mut rounds = Vec::new();
    let renew_us = u64::try_from(LEASE.as_micros() / 4)
        .unwrap_or(100_000)
        .max(1);
    let round_timeout = Duration::from_secs(10);
    for stop_kind in [Stop::Kill, Stop::Graceful] {
        let bar = progress(
            args.rounds as u64,
            match stop_kind {
                Stop::Kill => "SIGKILL the leader",
                Stop::Graceful => "SIGTERM the leader",
            },
        );
        for _ in 0..args.rounds {
            // Steady state: the client's latest success is fresh and from a
            // live incarnation.
            let (leader, epoch) = wait_steady(fleet, &observed, &since).await?;
            let slot = fleet
                .slot_of(&leader)
                .with_context(|| format!("leader {leader} is not a running instance"))?;
            // A random pause first, so the signal lands at a random phase
            // of the leader's renewal cycle (the kill failover depends on it).
            let jitter = Duration::from_micros(rand::random_range(0..renew_us));
            tokio::time::sleep(jitter).await;
            let at = since();
            match stop_kind {
                Stop::Kill => {
                    // A killed incarnation's record lingers until its TTL:
                    // not live from this moment.
                    lock(&dead).insert(leader.clone());
                    fleet.kill(slot).await?;
                }
                Stop::Graceful => fleet.terminate(slot)?,
            }
            rounds.push(Round {
                stop: stop_kind,
                leader: leader.clone(),
                epoch,
                at,
            });
            // Wait until both callers are served by someone else.
            let served = wait_until(fleet, round_timeout, || {
                let o = lock(&observed);
                o.last_ok
                    .as_ref()
                    .is_some_and(|(t, id, _)| *t > at && *id != leader)
                    && o.plain.iter().rev().any(|c| {
                        c.received > at && c.outcome.as_ref().is_ok_and(|id| *id != leader)
                    })
            })
            .await?;
            if !served {
                bar.println(format!(
                    "round missed: no call served by a new leader within {round_timeout:?} of stopping {leader}"
                ));
            }
            if stop_kind == Stop::Graceful {
                let status = fleet.wait_exit(slot, Duration::from_secs(10)).await?;
                if !status.success() {
                    bar.println(format!("{leader} exited with {status} after SIGTERM"));
                }
                lock(&dead).insert(leader.clone());
            }
            let id = fleet.start(slot)?;
            lock(&targets)[slot] = id.clone();
            wait_for(
                fleet,
                Duration::from_secs(20),
                "the restarted instance",
                || {
                    registry
                        .get(SERVICE, &id)
                        .is_some_and(|i| i.status == InstanceStatus::Standby)
                },
            )
            .await?;
            bar.set_message(format!(
                "{} {leader}",
                match stop_kind {
                    Stop::Kill => "killed",
                    Stop::Graceful => "stopped",
                }
            ));
            bar.inc(1);
            // Let the newcomer's election watch settle before the next round.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        bar.finish_and_clear();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    for t in tasks {
        t.await.context("an observer task failed")?;
    }
    let elapsed = since();
    let observed = std::mem::take(&mut *lock(&observed));
    Ok((rounds, observed, elapsed))
}

/// One plain request with retries on no-responders and timeouts only, until
/// `deadline` (on the benchmark's clock): the serving instance (from the
/// `Aegis-Instance` header), or what went wrong, and how many retries.
async fn plain_request(
    client: &async_nats::Client,
    subject: &str,
    n: u64,
    deadline: Duration,
    since: &impl Fn() -> Duration,
) -> (Result<String, String>, u32) {
    use async_nats::client::RequestErrorKind;
    let body = serde_json::json!({ "n": n }).to_string();
    let mut retries = 0;
    loop {
        match client
            .request(subject.to_owned(), body.clone().into())
            .await
        {
            Ok(msg) => {
                let header = |name: &str| {
                    msg.headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.as_str().to_owned())
                };
                if let Some(code) = header(aegis_sdk::contracts::wire::HEADER_ERROR_CODE) {
                    return (Err(code), retries);
                }
                if msg.payload != body.as_bytes() {
                    return (Err("wrong answer".to_owned()), retries);
                }
                return match header(aegis_sdk::contracts::wire::HEADER_INSTANCE) {
                    Some(id) => (Ok(id), retries),
                    None => (Err("no Aegis-Instance header".to_owned()), retries),
                };
            }
            Err(e)
                if matches!(
                    e.kind(),
                    RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
                ) =>
            {
                if since() >= deadline {
                    return (Err(format!("{:?} until the deadline", e.kind())), retries);
                }
                retries += 1;
                // A hand-over takes a lease at most: poll briskly, not hot.
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => return (Err(e.to_string()), retries),
        }
    }
}

/// Waits until the client's latest success is at most 50 ms old and from a
/// running incarnation; returns that leader and its epoch.
async fn wait_steady(
    fleet: &mut Fleet,
    observed: &Shared<Observed>,
    since: &impl Fn() -> Duration,
) -> anyhow::Result<(String, u64)> {
    let mut found = None;
    wait_for(fleet, Duration::from_secs(10), "a steady leader", || {
        let o = lock(observed);
        found = o.last_ok.as_ref().and_then(|(t, id, epoch)| {
            (since().saturating_sub(*t) < Duration::from_millis(50)).then(|| (id.clone(), *epoch))
        });
        found.is_some()
    })
    .await?;
    let (leader, epoch) = found.context("no steady leader")?;
    anyhow::ensure!(
        fleet.slot_of(&leader).is_some(),
        "the client is served by {leader}, which is not a running instance"
    );
    Ok((leader, epoch))
}

/// The live instances the registry view advertises ACTIVE in the group.
fn live_active(registry: &RegistryReader, dead: &HashSet<String>) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .by_service(SERVICE)
        .into_iter()
        .filter(|i| {
            i.status == InstanceStatus::Active
                && i.sticky_active_group.as_deref() == Some(GROUP)
                && !dead.contains(&i.instance_id)
        })
        .map(|i| i.instance_id)
        .collect();
    ids.sort();
    ids
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Turns what was observed into per-round results and the outcome table.
fn report(
    args: &FailoverBenchArgs,
    server_version: String,
    started: chrono::DateTime<chrono::Utc>,
    rounds: &[Round],
    o: &Observed,
    elapsed: Duration,
) -> anyhow::Result<Outcome> {
    let results: Vec<RoundResult> = rounds
        .iter()
        .map(|r| {
            let first_call = o.calls.iter().find(|c| {
                c.received > r.at && matches!(&c.outcome, Ok((id, _)) if *id != r.leader)
            });
            let first_plain = o
                .plain
                .iter()
                .find(|c| c.received > r.at && matches!(&c.outcome, Ok(id) if *id != r.leader));
            let serving = o
                .answers
                .iter()
                .filter(|a| a.received > r.at && a.epoch > r.epoch)
                .map(|a| a.received)
                .min();
            let registry = o
                .registry
                .iter()
                .find(|(t, ids)| *t > r.at && ids.iter().any(|id| *id != r.leader))
                .map(|(t, _)| *t);
            RoundResult {
                stop: r.stop,
                leader: r.leader.clone(),
                epoch: r.epoch,
                signal_at_ms: ms(r.at),
                client_ms: first_call.map(|c| ms(c.received - r.at)),
                plain_ms: first_plain.map(|c| ms(c.received - r.at)),
                leader_serving_ms: serving.map(|t| ms(t - r.at)),
                registry_ms: registry.map(|t| ms(t - r.at)),
                new_leader: first_call
                    .and_then(|c| c.outcome.as_ref().ok().map(|(id, _)| id.clone())),
            }
        })
        .collect();
    let overlap = analyse(&o.probe_answers);
    let failed: Vec<&Call> = o.calls.iter().filter(|c| c.outcome.is_err()).collect();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for c in &failed {
        if let Err(code) = &c.outcome {
            *errors.entry(code.to_string()).or_default() += 1;
        }
    }
    let worst_call = o
        .calls
        .iter()
        .map(|c| ms(c.received - c.sent))
        .max_by(f64::total_cmp)
        .unwrap_or(0.0);

    let lease_ms = u64::try_from(LEASE.as_millis()).unwrap_or(u64::MAX);
    let mut out = Outcome::new(
        "failover --sticky",
        server_version,
        serde_json::json!({
            "instances": args.instances,
            "instance_kind": "child processes: aegis service echo --single-active default",
            "rounds_per_stop_kind": args.rounds,
            "lease_ms": lease_ms,
            "lease_source": "SDK default (aegis service echo has no lease option)",
            "client": "call_active in a loop, idempotent",
            "plain_client": "async-nats requests to rpc.echo-service.echo, retried on no-responders and attempt timeouts only",
            "call_interval_ms": args.call_interval_ms,
            "deadline_ms": args.deadline_ms,
            "attempt_timeout_ms": args.attempt_timeout_ms,
            "probe_every_ms": args.probe_ms,
            "percentiles": "nearest rank over the rounds (with 30 rounds p99 is the maximum)",
        }),
    );
    out.set_started(started);
    let mut summaries = serde_json::Map::new();
    for (stop, name, target) in [
        (Stop::Kill, "kill", 500.0),
        (Stop::Graceful, "graceful", 50.0),
    ] {
        let mine: Vec<&RoundResult> = results.iter().filter(|r| r.stop == stop).collect();
        let client: Vec<f64> = mine.iter().filter_map(|r| r.client_ms).collect();
        let serving: Vec<f64> = mine.iter().filter_map(|r| r.leader_serving_ms).collect();
        let reg: Vec<f64> = mine.iter().filter_map(|r| r.registry_ms).collect();
        let missed = mine.len() - client.len();
        let p = |s: &[f64], q| percentile(s, q).unwrap_or(f64::NAN);
        let label = match stop {
            Stop::Kill => "SIGKILL → first call served by new leader",
            Stop::Graceful => "SIGTERM → first call served by new leader",
        };
        out.add(&format!("{label} p50"), "ms", p(&client, 0.5), None);
        out.add(
            &format!("{label} p99"),
            "ms",
            p(&client, 0.99),
            Some(Bound::AtMost(target)),
        );
        out.add(&format!("{label} max"), "ms", p(&client, 1.0), None);
        let plain: Vec<f64> = mine.iter().filter_map(|r| r.plain_ms).collect();
        let plain_label = match stop {
            Stop::Kill => "plain request SIGKILL → first served by new leader",
            Stop::Graceful => "plain request SIGTERM → first served by new leader",
        };
        out.add(&format!("{plain_label} p50"), "ms", p(&plain, 0.5), None);
        out.add(&format!("{plain_label} p99"), "ms", p(&plain, 0.99), None);
        out.add(&format!("{plain_label} max"), "ms", p(&plain, 1.0), None);
        out.add(
            &format!("{name}: rounds without a plain request served"),
            "rounds",
            (mine.len() - plain.len()) as f64,
            Some(Bound::AtMost(0.0)),
        );
        out.add(
            &format!("{name}: new leader first answers, p99"),
            "ms",
            p(&serving, 0.99),
            None,
        );
        out.add(
            &format!("{name}: rounds without a new leader in 10 s"),
            "rounds",
            missed as f64,
            Some(Bound::AtMost(0.0)),
        );
        summaries.insert(
            name.to_owned(),
            serde_json::json!({
                "rounds": mine.len(),
                "missed": missed,
                "p50_ms": p(&client, 0.5),
                "p99_ms": p(&client, 0.99),
                "max_ms": p(&client, 1.0),
                "target_p99_ms": target,
                "new_leader_serving_ms": {
                    "p50": p(&serving, 0.5), "p99": p(&serving, 0.99), "max": p(&serving, 1.0),
                },
                "plain_request_ms": {
                    "p50": p(&plain, 0.5), "p99": p(&plain, 0.99), "max": p(&plain, 1.0),
                    "missed": mine.len() - plain.len(),
                    "samples": plain,
                },
                "registry_shows_new_leader_ms": {
                    "p50": p(&reg, 0.5), "p99": p(&reg, 0.99), "max": p(&reg, 1.0),
                },
                "samples_ms": client,
            }),
        );
    }
    out.add(
        "overlap: two leaders answering at once",
        "count",
        overlap.violations() as f64,
        Some(Bound::AtMost(0.0)),
    );
    out.add(
        "overlap: of which proven (stale leader served)",
        "count",
        (overlap.proven + overlap.epoch_conflicts + overlap.epoch_regressions) as f64,
        None,
    );
    out.add(
        "overlap: of which unresolved (windows overlap)",
        "count",
        overlap.unresolved as f64,
        None,
    );
    out.add(
        "overlap: smallest proven hand-over margin",
        "ms",
        overlap.min_margin_ms.unwrap_or(f64::NAN),
        None,
    );
    out.add(
        "leader answers checked (probes)",
        "answers",
        overlap.answers as f64,
        None,
    );
    out.add("direct probes", "probes", o.probes as f64, None);
    out.add(
        "registry: polls with 2+ live ACTIVE",
        "polls",
        o.registry_overlap_polls as f64,
        None,
    );
    out.add("client calls", "calls", o.calls.len() as f64, None);
    out.add("client calls failed", "calls", failed.len() as f64, None);
    out.add("client worst call latency", "ms", worst_call, None);
    let plain_failed: Vec<&PlainCall> = o.plain.iter().filter(|c| c.outcome.is_err()).collect();
    let mut plain_errors: BTreeMap<String, usize> = BTreeMap::new();
    for c in &plain_failed {
        if let Err(e) = &c.outcome {
            *plain_errors.entry(e.clone()).or_default() += 1;
        }
    }
    out.add("plain requests", "calls", o.plain.len() as f64, None);
    out.add(
        "plain requests failed",
        "calls",
        plain_failed.len() as f64,
        Some(Bound::AtMost(0.0)),
    );
    out.add(
        "plain requests retried (no responders, timeout)",
        "attempts",
        o.plain.iter().map(|c| f64::from(c.retries)).sum(),
        None,
    );

    let mut results_json = serde_json::Map::new();
    results_json.extend(summaries);
    results_json.insert(
        "overlap".into(),
        serde_json::json!({
            "count": overlap.violations(),
            "proven": overlap.proven,
            "unresolved": overlap.unresolved,
            "input": "direct probes only (one attempt each)",
            "epoch_conflicts": overlap.epoch_conflicts,
            "epoch_regressions": overlap.epoch_regressions,
            "min_handover_margin_ms": overlap.min_margin_ms,
            "leader_answers": overlap.answers,
            "terms": overlap.terms,
            "probes": o.probes,
            "probe_outcomes": o.probe_kinds,
            "probe_timeouts": o.probe_timeouts.iter().map(|(t, id)| serde_json::json!({
                "sent_at_ms": ms(*t), "instance": id,
            })).collect::<Vec<_>>(),
            "registry_polls": o.registry_polls,
            "registry_polls_with_two_live_active": o.registry_overlap_polls,
            "registry_two_live_active_ms": ms(o.registry_overlap_time),
            "handovers": overlap.handovers,
        }),
    );
    let slow_calls: Vec<serde_json::Value> = o
        .calls
        .iter()
        .filter(|c| c.received - c.sent > Duration::from_millis(100))
        .map(|c| {
            serde_json::json!({
                "sent_at_ms": ms(c.sent),
                "latency_ms": ms(c.received - c.sent),
                "outcome": match &c.outcome {
                    Ok((id, epoch)) => format!("{id} epoch {epoch}"),
                    Err(code) => code.to_string(),
                },
            })
        })
        .collect();
    results_json.insert(
        "client".into(),
        serde_json::json!({
            "calls_slower_than_100ms": slow_calls,
            "calls": o.calls.len(),
            "failed": failed.len(),
            "errors_by_code": errors,
            "worst_latency_ms": worst_call,
        }),
    );
    results_json.insert(
        "plain".into(),
        serde_json::json!({
            "subject": format!("rpc.{SERVICE}.{METHOD}"),
            "calls": o.plain.len(),
            "failed": plain_failed.len(),
            "errors": plain_errors,
            "retries": o.plain.iter().map(|c| u64::from(c.retries)).sum::<u64>(),
            "worst_latency_ms": o.plain.iter().map(|c| ms(c.received - c.sent)).fold(0.0, f64::max),
        }),
    );
    results_json.insert("rounds".into(), serde_json::to_value(&results)?);
    results_json.insert("duration_s".into(), elapsed.as_secs_f64().into());
    out.results = serde_json::Value::Object(results_json);
    out.finish(args.json.as_deref())?;
    Ok(out)
}
