//! The child processes of `aegis bench scale`: this same binary started
//! with a hidden `--role`, talking to the parent over stdin/stdout lines.
//!
//! - **worker**: registers its share of the instances, each on its own NATS
//!   connection as in production (one per pod). Instances of the services
//!   the callers use also serve `echo` over RPC; the others only register.
//!   Prints `UP n` while starting and `READY` when all are up. The first
//!   worker also runs the raw async-nats responder of the RPC baseline.
//! - **caller**: one SDK connection calling two services at a fixed rate,
//!   and a raw async-nats request to the parent's raw responder alongside,
//!   so both pay the same machine. Every second it also registers a new
//!   instance of its first service on a second connection and times how
//!   long its own view takes to show it. Prints `READY {connection name}`;
//!   on `START` it resets its numbers, on `STOP` prints one JSON line
//!   ([`CallerResult`]) and exits.
//! - **watcher**: the registry upkeep of a caller alone — one SDK connection
//!   whose view covers the same two services and that looks them up every
//!   second (as a caller's discovery does), with no calls. Its CPU is what
//!   keeping the view costs. Prints `READY {connection name}`.
//!
//! All stop when stdin closes, so a parent that dies takes them along.

use std::{sync::Arc, time::Duration};

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::InstanceStatus,
    contracts::ServiceInstance,
    registry::{Registration, RegistrationOptions},
};
use anyhow::Context;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{RAW_SUBJECT, instance_id, service_name};

/// Instances started at once by a worker.
const START_PARALLEL: usize = 32;
/// How long a caller waits for a new instance to show before it counts it
/// as not seen.
const VISIBLE_TIMEOUT: Duration = Duration::from_secs(5);

fn config(url: &str) -> AegisConfig {
    let mut config = AegisConfig::with_servers(url);
    config.nats.pool_size = 1;
    config
}

async fn say(line: &str) -> anyhow::Result<()> {
    let mut out = tokio::io::stdout();
    out.write_all(line.as_bytes()).await?;
    out.write_all(b"\n").await?;
    out.flush().await?;
    Ok(())
}

/// The worker role: instances `index, index + step, ...` below `instances`.
pub(crate) async fn worker(
    url: &str,
    index: usize,
    step: usize,
    instances: usize,
    per_service: usize,
    served_services: usize,
    timing: RegistrationOptions,
) -> anyhow::Result<()> {
    // The baseline responder: the idiomatic async-nats loop, in a worker
    // like the SDK responders.
    let raw_responder = if index == 0 {
        let raw = async_nats::connect(url)
            .await
            .context("connecting the raw responder")?;
        let mut sub = raw.subscribe(RAW_SUBJECT).await?;
        Some(tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                if let Some(reply) = m.reply {
                    let _ = raw.publish(reply, m.payload).await;
                }
            }
        }))
    } else {
        None
    };
    let mine: Vec<usize> = (index..instances).step_by(step.max(1)).collect();
    let total = mine.len();
    let mut running = Vec::with_capacity(total);
    let mut conns = Vec::with_capacity(total);
    let mut starts = futures::stream::iter(mine)
        .map(|i| {
            let timing = timing.clone();
            async move {
                let conn = Connection::connect(config(url))
                    .await
                    .with_context(|| format!("connecting instance {i}"))?;
                let k = i / per_service;
                // A full service or a bare registration, held so that it
                // keeps heart-beating (and serving) until the worker stops.
                let held = if k < served_services {
                    Held::Service(Box::new(
                        conn.service(service_name(k), "1.0.0")
                            .instance_id(instance_id(i))
                            .registration(timing.clone())
                            .metrics_interval(None)
                            .handler("echo", |req: Value| async move { Ok(req) })
                            .start()
                            .await
                            .with_context(|| format!("starting instance {i}"))?,
                    ))
                } else {
                    let record = ServiceInstance::new(
                        service_name(k),
                        instance_id(i),
                        "1.0.0",
                        chrono::Utc::now(),
                    );
                    Held::Registration(
                        Registration::builder(&conn, record)
                            .options(timing.clone())
                            .start()
                            .await
                            .with_context(|| format!("registering instance {i}"))?,
                    )
                };
                anyhow::Ok((conn, held))
            }
        })
        .buffer_unordered(START_PARALLEL);
    while let Some(started) = starts.next().await {
        let (conn, r) = started?;
        conns.push(conn);
        running.push(r);
        if running.len() % 50 == 0 || running.len() == total {
            say(&format!("UP {}", running.len())).await?;
        }
    }
    drop(starts);
    say("READY").await?;
    // Until the parent closes stdin (or kills us).
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {}
    // A stop, not a crash: each instance deregisters before the process
    // ends (a dropped registration only schedules its deregistration, and
    // the runtime would end first, leaving the records to their TTL).
    // Bounded: with NATS gone each deregistration would retry for its
    // record's lifetime, and the process must still end.
    let stop = async {
        futures::stream::iter(running)
            .for_each_concurrent(START_PARALLEL, Held::stop)
            .await;
        futures::future::join_all(conns.iter().map(|c| c.drain())).await;
    };
    let _ = tokio::time::timeout(STOP_WITHIN, stop).await;
    if let Some(task) = raw_responder {
        task.abort();
    }
    Ok(())
}

/// How long a worker whose stdin closed takes to stop its instances at
/// most before it ends anyway (their records then expire with their TTL).
const STOP_WITHIN: Duration = Duration::from_secs(3);

/// What a worker holds per instance: a serving service or a bare
/// registration.
enum Held {
    Service(Box<aegis_sdk::rpc::Service>),
    Registration(Registration),
}

impl Held {
    /// Stops serving and deregisters; a failure is the record's TTL's to
    /// end, so it is not the worker's to report.
    async fn stop(self) {
        match self {
            Self::Service(service) => {
                let _ = (*service).shutdown().await;
            }
            Self::Registration(registration) => {
                let _ = registration.deregister().await;
            }
        }
    }
}

/// What a caller measured between `START` and `STOP`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct CallerResult {
    /// The caller's SDK connection name (to find it in `/connz`).
    pub(crate) connection: String,
    /// SDK call latencies, µs: p50, p99.
    pub(crate) sdk_us: [f64; 2],
    /// Raw async-nats request latencies, µs: p50, p99.
    pub(crate) raw_us: [f64; 2],
    /// SDK calls made / failed.
    pub(crate) calls: u64,
    /// Failed SDK calls.
    pub(crate) errors: u64,
    /// New instance visible in this caller's view, ms, one per probe.
    pub(crate) visible_ms: Vec<f64>,
    /// Probes not seen within the timeout.
    pub(crate) not_seen: u64,
}

struct Numbers {
    sdk: Histogram<u64>,
    raw: Histogram<u64>,
    calls: u64,
    errors: u64,
    visible_ms: Vec<f64>,
    not_seen: u64,
}

impl Numbers {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds");
        Self {
            sdk: h(),
            raw: h(),
            calls: 0,
            errors: 0,
            visible_ms: Vec::new(),
            not_seen: 0,
        }
    }
}

/// The caller role.
pub(crate) async fn caller(
    url: &str,
    index: usize,
    services: [String; 2],
    rate: f64,
    timing: RegistrationOptions,
) -> anyhow::Result<()> {
    let conn = Connection::connect(config(url))
        .await
        .context("connecting the caller")?;
    let raw = async_nats::connect(url)
        .await
        .context("connecting the raw client")?;
    let probe_conn = Connection::connect(config(url))
        .await
        .context("connecting the probe")?;
    let rpc = conn.rpc();
    let payload = json!({"symbol": "AAPL", "quantity": 10, "side": "BUY"});
    let raw_payload = bytes::Bytes::from(serde_json::to_vec(&payload)?);
    // The first calls open the registry view.
    for service in &services {
        rpc.call::<_, Value>(service, "echo", &payload)
            .await
            .with_context(|| format!("first call to {service}"))?;
    }
    say(&format!("READY {}", conn.connection_name())).await?;

    let numbers = Arc::new(std::sync::Mutex::new(Numbers::new()));
    let cancel = tokio_util::sync::CancellationToken::new();

    let calls = {
        let (numbers, cancel, services) = (numbers.clone(), cancel.clone(), services.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(0.1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut turn = 0usize;
            while !cancel.is_cancelled() {
                tick.tick().await;
                let service = &services[turn % 2];
                // Which side goes first alternates (every other pair of
                // turns, so across both services): the first call after a
                // timer wake-up meets colder caches than the second.
                let sdk_first = (turn / 2).is_multiple_of(2);
                turn += 1;
                let sdk_call = async {
                    let t = std::time::Instant::now();
                    let ok = rpc
                        .call::<_, Value>(service, "echo", &payload)
                        .await
                        .is_ok();
                    (ok, t.elapsed())
                };
                let raw_call = async {
                    let t = std::time::Instant::now();
                    let ok = raw.request(RAW_SUBJECT, raw_payload.clone()).await.is_ok();
                    (ok, t.elapsed())
                };
                let ((ok, sdk), (raw_ok, raw_took)) = if sdk_first {
                    let sdk = sdk_call.await;
                    (sdk, raw_call.await)
                } else {
                    let raw = raw_call.await;
                    (sdk_call.await, raw)
                };
                let mut n = numbers.lock().unwrap_or_else(|e| e.into_inner());
                n.calls += 1;
                if ok {
                    let _ = n.sdk.record(sdk.as_micros().max(1) as u64);
                } else {
                    n.errors += 1;
                }
                if raw_ok {
                    let _ = n.raw.record(raw_took.as_micros().max(1) as u64);
                }
            }
        })
    };

    let probes = {
        let (numbers, cancel) = (numbers.clone(), cancel.clone());
        let discovery = conn.discovery();
        let service = services[0].clone();
        tokio::spawn(async move {
            let mut n = 0u64;
            while !cancel.is_cancelled() {
                tokio::time::sleep(Duration::from_secs(1)).await;
                n += 1;
                let id = format!("probe-c{index}-{n}");
                let mut record =
                    ServiceInstance::new(service.clone(), id.clone(), "1.0.0", chrono::Utc::now());
                // Not routable: the probe serves nothing.
                record.status = InstanceStatus::Standby;
                let Ok(registration) = Registration::builder(&probe_conn, record)
                    .options(timing.clone())
                    .start()
                    .await
                else {
                    continue;
                };
                let written = std::time::Instant::now();
                let seen = loop {
                    let listed = discovery.instances(&service).await;
                    if listed.is_ok_and(|l| l.iter().any(|i| i.instance_id == id)) {
                        break Some(written.elapsed());
                    }
                    if written.elapsed() > VISIBLE_TIMEOUT {
                        break None;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                };
                {
                    let mut n = numbers.lock().unwrap_or_else(|e| e.into_inner());
                    match seen {
                        Some(d) => n.visible_ms.push(d.as_secs_f64() * 1e3),
                        None => n.not_seen += 1,
                    }
                }
                let _ = registration.deregister().await;
            }
        })
    };

    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        match line.trim() {
            "START" => *numbers.lock().unwrap_or_else(|e| e.into_inner()) = Numbers::new(),
            "STOP" => break,
            _ => {}
        }
    }
    let result = {
        let n = numbers.lock().unwrap_or_else(|e| e.into_inner());
        let q = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64;
        CallerResult {
            connection: conn.connection_name().to_owned(),
            sdk_us: [q(&n.sdk, 0.5), q(&n.sdk, 0.99)],
            raw_us: [q(&n.raw, 0.5), q(&n.raw, 0.99)],
            calls: n.calls,
            errors: n.errors,
            visible_ms: n.visible_ms.clone(),
            not_seen: n.not_seen,
        }
    };
    say(&serde_json::to_string(&result)?).await?;
    cancel.cancel();
    calls.abort();
    probes.abort();
    Ok(())
}

/// The watcher role: holds the view of `services` and looks them up every
/// second until stdin closes.
pub(crate) async fn watcher(url: &str, services: [String; 2]) -> anyhow::Result<()> {
    let conn = Connection::connect(config(url))
        .await
        .context("connecting the watcher")?;
    let discovery = conn.discovery();
    for service in &services {
        discovery
            .instances(service)
            .await
            .with_context(|| format!("loading the view of {service}"))?;
    }
    say(&format!("READY {}", conn.connection_name())).await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            line = lines.next_line() => {
                if line?.is_none() {
                    return Ok(());
                }
            }
            _ = tick.tick() => {
                for service in &services {
                    let _ = discovery.selectable(service).await;
                }
            }
        }
    }
}

/// The crash role: one instance on its own connection, killed by the
/// parent with SIGKILL.
pub(crate) async fn crash(url: &str, id: &str, timing: RegistrationOptions) -> anyhow::Result<()> {
    let conn = Connection::connect(config(url))
        .await
        .context("connecting the crash instance")?;
    let record = ServiceInstance::new(super::CRASH_SERVICE, id, "1.0.0", chrono::Utc::now());
    let _registration = Registration::builder(&conn, record)
        .options(timing)
        .start()
        .await
        .context("registering the crash instance")?;
    say("READY").await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while lines.next_line().await?.is_some() {}
    Ok(())
}
