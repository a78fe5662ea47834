//! `aegis bench rpc`: request/reply latency and throughput, raw async-nats
//! against the SDK. (About 500 lines: both sides of every mode are kept
//! next to each other on purpose, so a reader sees that they do the same
//! work.)
//!
//! Both sides do the same work: the caller encodes a small order-like JSON
//! request, the responder decodes it and encodes a JSON reply, the caller
//! decodes that. The raw responder is the idiomatic async-nats loop (one
//! queue subscription, reply inline); the SDK responder is an Aegis service
//! (typed handler, `$SRV` stats, metrics, requests run as futures of one
//! task per subscription).
//!
//! The SDK client calls the way `RpcClient::call` does by default: through
//! discovery (`call_with`: pick a registered ACTIVE instance from the
//! registry view, call its instance-directed subject
//! `rpc.{service}.{instance}.{method}`). `--registry` adds `--instances` (64)
//! more instances of eight other services, registered and heart-beating on
//! the same server, so the caller's registry view takes their updates during
//! the measurement. `--balanced` uses the queue group instead
//! (`call_balanced`), whose replies name the serving instance only when
//! asked; `--who-served` asks on every call (a header on the request and
//! on the reply), to show what that costs. The raw side is the same in
//! every mode.
//!
//! `--breakdown` adds sides to both phases (latency and throughput) that
//! peel the SDK's cost apart, each step changing one thing: a raw
//! async-nats client calling a responder written on async-nats's services
//! framework (which the SDK server is built on: that framework's cost); the
//! raw client calling the SDK service's instance subject (the SDK server's
//! cost alone); the SDK connection's own NATS client sending a plain
//! request there (adds the SDK connection: its options and the other
//! traffic it carries, such as the registry watch); the SDK `RpcClient`
//! calling that instance by name (`call_instance`: adds the client's code);
//! the `RpcClient` over the queue group (the load-balanced path); and the
//! main SDK side adds
//! discovery to the client's code.
//! It also times the discovery lookup alone.
//!
//! Every run also reports each side's CPU per call in the throughput
//! phase: the CPU time this process (caller and responder) and the
//! server used over that side's rounds, divided by its calls. Where the
//! machine is shared, a neighbour's load moves the calls per second of a
//! round; it moves the CPU a call costs much less, so this row says what
//! the SDK costs when the throughput ratio is lost in noise.

use std::{future::Future, path::PathBuf, pin::Pin, sync::Arc, time::Duration};

use aegis_sdk::{
    Connection, RegistryReader, contracts::ServiceInstance, registry::Registration,
    rpc::CallOptions,
};
use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{
    counted_throughput, cpu_seconds, progress,
    report::{Report, Target},
};

/// Options of `aegis bench rpc`.
#[derive(Debug, Clone, Args)]
pub struct RpcBenchArgs {
    /// Measured sequential calls per side (after warm-up).
    #[arg(long, default_value_t = 10_000, value_parser = super::flags::at_least(1usize))]
    pub calls: usize,
    /// Warm-up calls per side, not measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Calls per side in one alternating batch.
    #[arg(long, default_value_t = 500, value_parser = super::flags::at_least(1usize))]
    pub batch: usize,
    /// Concurrent callers in the throughput phase.
    #[arg(long, default_value_t = 32, value_parser = super::flags::at_least(1usize))]
    pub concurrency: usize,
    /// Throughput rounds per side (alternating), each `--round-secs` long;
    /// the throughput ratio is the median of the rounds' own ratios.
    #[arg(long, default_value_t = 16, value_parser = super::flags::at_least(1usize))]
    pub rounds: usize,
    /// Length of one throughput round in seconds.
    #[arg(long, default_value_t = 0.25, value_parser = super::flags::positive_seconds)]
    pub round_secs: f64,
    /// Register and heart-beat `--instances` more instances while the SDK
    /// side calls through discovery.
    #[arg(long, conflicts_with = "balanced")]
    pub registry: bool,
    /// SDK side through the queue group (`call_balanced`) instead of
    /// discovery.
    #[arg(long)]
    pub balanced: bool,
    /// With `--balanced`: every call asks its reply to name the instance
    /// that served it (`CallOptions::who_served`).
    #[arg(long, requires = "balanced")]
    pub who_served: bool,
    /// With `--registry`: additional registered, heart-beating instances
    /// (spread over eight other services).
    #[arg(long, default_value_t = 64)]
    pub instances: usize,
    /// Also measure, in the latency phase, the SDK client over the queue
    /// group and a raw client calling the SDK service, to show where the
    /// overhead goes.
    #[arg(long)]
    pub breakdown: bool,
    /// Run the whole benchmark N times (each on a fresh server) and report
    /// each row's median, with the spread of its ratio; targets are judged
    /// on the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Run the throughput phase for this side alone (`raw`, `sdk`, or a
    /// `--breakdown` label): what a profiler such as `perf record` needs to
    /// tell one side's cost per call from the other's. No target is judged.
    #[arg(long, value_name = "SIDE")]
    pub only: Option<String>,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,
    /// Run with NATS users and least-privilege permissions like `aegis up`'s
    /// (responders as a service's user, callers as the operator; raw and
    /// SDK sides as the same users).
    #[arg(long)]
    pub auth: bool,
    /// Require TLS on the benchmark's server (a CA made for the run); both
    /// sides verify it.
    #[arg(long)]
    pub tls: bool,
    /// Calibration: this many nanoseconds of busy work added to every raw
    /// call, in its caller (`--busy-side client`) or its responder
    /// (`server`), to see what a microsecond of extra work per call costs
    /// the ratios. No target is judged.
    #[arg(long, value_name = "NS", default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub raw_busy_ns: u64,
    /// Where `--raw-busy-ns` spends its time.
    #[arg(long, value_enum, default_value_t = BusySide::Client, requires = "raw_busy_ns")]
    pub busy_side: BusySide,
}

/// Where `--raw-busy-ns` adds its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BusySide {
    /// In the raw caller, before each request.
    Client,
    /// In the raw responder, before each reply.
    Server,
}

/// Spins for `busy` (calibration; `--raw-busy-ns`).
fn busy_wait(busy: Duration) {
    if busy.is_zero() {
        return;
    }
    let start = std::time::Instant::now();
    while start.elapsed() < busy {
        std::hint::spin_loop();
    }
}

/// One way of making the call, boxed so the latency phase can rotate over
/// any number of them.
type Caller =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>> + Send + Sync>;

fn boxed<F, Fut>(f: F) -> Caller
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    Arc::new(move || Box::pin(f()))
}

use super::{BenchBus, FILL_SERVICES, Who};

/// A side that sends the quote as a plain async-nats request on `subject`
/// from `client` and decodes the reply (the raw baseline, and the
/// breakdown's plain requests).
fn raw_side(
    client: &async_nats::Client,
    subject: &str,
    quote: &Arc<Quote>,
    busy: Duration,
) -> Caller {
    let (client, subject, quote) = (client.clone(), subject.to_owned(), quote.clone());
    boxed(move || {
        let (client, subject, quote) = (client.clone(), subject.clone(), quote.clone());
        async move {
            busy_wait(busy);
            let body = serde_json::to_vec(&*quote)?;
            let msg = client.request(subject, body.into()).await?;
            let ack: Ack = serde_json::from_slice(&msg.payload)?;
            anyhow::ensure!(ack.accepted, "reply not accepted");
            Ok(())
        }
    })
}

/// The throughput ratio the SDK side must reach: 0.95 through discovery
/// (the plain call), 0.90 through the queue group (with `--who-served` too,
/// though there it pays for a header each way the raw side does not), and
/// 0.90 with `--registry` (the foundation's target; that mode's own is its
/// p99).
fn throughput_target(args: &RpcBenchArgs) -> f64 {
    if args.balanced || args.registry {
        0.90
    } else {
        0.95
    }
}

/// A side that makes one SDK call, `call`, with the client, the quote and
/// the options every SDK side shares.
fn sdk_side<F, Fut>(
    rpc: &aegis_sdk::rpc::RpcClient,
    quote: &Arc<Quote>,
    opts: &Arc<CallOptions>,
    call: F,
) -> Caller
where
    F: Fn(aegis_sdk::rpc::RpcClient, Arc<Quote>, Arc<CallOptions>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let (rpc, quote, opts) = (rpc.clone(), quote.clone(), opts.clone());
    boxed(move || call(rpc.clone(), quote.clone(), opts.clone()))
}

/// The registered, heart-beating instances of `--registry`, on their own
/// connections (one per filler service, like separate processes).
struct Filler {
    registrations: Vec<Registration>,
    conns: Vec<Connection>,
}

impl Filler {
    async fn start(bus: &BenchBus, instances: usize) -> anyhow::Result<Filler> {
        let mut conns = Vec::new();
        for _ in 0..FILL_SERVICES.min(instances) {
            conns.push(Connection::connect(bus.sdk_config(Who::Filler)).await?);
        }
        let bar = progress(instances as u64, "registering instances");
        let mut registrations = Vec::with_capacity(instances);
        for i in 0..instances {
            let k = i % conns.len();
            let record = ServiceInstance::new(
                format!("bench-fill-{k}"),
                format!("fill-{k}-{i}"),
                "1.0.0",
                chrono::Utc::now(),
            );
            // Default timing: heartbeat every second, TTL 3 s.
            let registration = Registration::builder(&conns[k], record)
                .start()
                .await
                .with_context(|| format!("registering filler instance {i}"))?;
            registrations.push(registration);
            bar.inc(1);
        }
        bar.finish_and_clear();
        Ok(Filler {
            registrations,
            conns,
        })
    }

    async fn stop(self) {
        for r in self.registrations {
            let _ = r.deregister().await;
        }
        for c in self.conns {
            let _ = c.drain().await;
        }
    }
}

/// The request both sides send.
#[derive(Debug, Clone, Serialize, Deserialize, aegis_sdk::schemars::JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
struct Quote {
    symbol: String,
    side: String,
    quantity: u32,
    limit: f64,
    client_order_id: String,
}

/// The reply both sides send back.
#[derive(Debug, Clone, Serialize, Deserialize, aegis_sdk::schemars::JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
struct Ack {
    client_order_id: String,
    accepted: bool,
    price: f64,
}

fn answer(q: Quote) -> Ack {
    Ack {
        client_order_id: q.client_order_id,
        accepted: q.quantity > 0,
        price: q.limit,
    }
}

const RAW_SUBJECT: &str = "bench.raw.quote";
const PLAIN_SUBJECT: &str = "bench.plain.quote";
const SERVICE: &str = super::BENCH_SERVICE;
const METHOD: &str = "quote";
const INSTANCE: &str = "bench-1";

/// Runs the benchmark (`--runs` times) and prints the table; returns the
/// report.
///
/// # Errors
/// When the server cannot start or a call fails.
pub async fn run(args: RpcBenchArgs) -> anyhow::Result<Report> {
    let report = super::repeat(args.runs, || run_once(args.clone())).await?;
    finish(report, args.json.as_deref())
}

async fn run_once(args: RpcBenchArgs) -> anyhow::Result<Report> {
    super::check_sizes(args.calls, args.batch, args.concurrency, args.rounds)?;
    let started = chrono::Utc::now();
    let bus = BenchBus::start(args.auth, args.tls).await?;

    // Responders, each on its own connection like a separate process.
    let raw_server = bus.raw(Who::Server).await?;
    let mut sub = raw_server
        .queue_subscribe(RAW_SUBJECT, "bench.raw".into())
        .await?;
    let responder = raw_server.clone();
    let busy = Duration::from_nanos(args.raw_busy_ns);
    let (client_busy, server_busy) = match args.busy_side {
        BusySide::Client => (busy, Duration::ZERO),
        BusySide::Server => (Duration::ZERO, busy),
    };
    let raw_task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            busy_wait(server_busy);
            let Some(reply) = msg.reply else { continue };
            let Ok(q) = serde_json::from_slice::<Quote>(&msg.payload) else {
                continue;
            };
            if let Ok(body) = serde_json::to_vec(&answer(q)) {
                let _ = responder.publish(reply, body.into()).await;
            }
        }
    });
    // For --breakdown: the same responder written on async-nats's own
    // services framework (`$SRV` stats per endpoint), which the SDK server
    // is built on — to tell that framework's cost from the SDK's own.
    let plain_service_task = if args.breakdown {
        use async_nats::service::ServiceExt;
        let client = bus.raw(Who::Server).await?;
        let svc = client
            .service_builder()
            .start("bench-plain", "1.0.0")
            .await
            .map_err(|e| anyhow::anyhow!("starting the plain async-nats service: {e}"))?;
        let mut endpoint = svc
            .endpoint(PLAIN_SUBJECT)
            .await
            .map_err(|e| anyhow::anyhow!("adding the plain endpoint: {e}"))?;
        Some(tokio::spawn(async move {
            let _keep = (svc, client);
            while let Some(request) = endpoint.next().await {
                let Ok(q) = serde_json::from_slice::<Quote>(&request.message.payload) else {
                    continue;
                };
                if let Ok(body) = serde_json::to_vec(&answer(q)) {
                    let _ = request.respond(Ok(body.into())).await;
                }
            }
        }))
    } else {
        None
    };
    let sdk_server = Connection::connect(bus.sdk_config(Who::Server)).await?;
    let service = sdk_server
        .service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .handler(METHOD, |q: Quote| async move { Ok(answer(q)) })
        .start()
        .await?;

    let filler = if args.registry {
        Some(Filler::start(&bus, args.instances).await?)
    } else {
        None
    };

    // Callers.
    let raw_client = bus.raw(Who::Client).await?;
    let sdk_client = Connection::connect(bus.sdk_config(Who::Client)).await?;
    let server_version = sdk_client.server_version().to_string();
    // The caller's registry view (the one discovery routes with): wait until
    // it holds every instance, and count the updates it takes meanwhile.
    let view = if !args.balanced {
        let reader = RegistryReader::start(&sdk_client)
            .await
            .context("starting the registry view")?;
        let expected = if args.registry { args.instances + 1 } else { 1 };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reader.all().len() < expected {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the registry view holds {} of {expected} instances after 10 s",
                reader.all().len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let updates = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = updates.clone();
        let changes = reader.changes();
        let counting = tokio::spawn(async move {
            futures::pin_mut!(changes);
            while changes.next().await.is_some() {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Some((reader, updates, counting, std::time::Instant::now()))
    } else {
        None
    };
    let quote = Arc::new(Quote {
        symbol: "AAPL".into(),
        side: "BUY".into(),
        quantity: 100,
        limit: 175.25,
        client_order_id: "c-000001".into(),
    });

    let rpc = sdk_client.rpc();
    let opts = Arc::new(CallOptions {
        who_served: args.who_served,
        ..CallOptions::default()
    });
    let instance_subject =
        aegis_sdk::contracts::subjects::rpc_instance_subject(SERVICE, INSTANCE, METHOD);
    let balanced = || {
        sdk_side(&rpc, &quote, &opts, |rpc, quote, opts| async move {
            let ack = rpc
                .call_balanced::<Quote, Ack>(SERVICE, METHOD, &quote, &opts)
                .await?;
            anyhow::ensure!(ack.value.accepted, "sdk reply not accepted");
            Ok(())
        })
    };

    // The sides of the latency phase: raw and SDK first, then the breakdown.
    let mut sides: Vec<(&str, Caller)> = vec![(
        "raw",
        raw_side(&raw_client, RAW_SUBJECT, &quote, client_busy),
    )];
    if !args.balanced {
        // Through discovery, as `RpcClient::call` does.
        let discovery = sdk_side(&rpc, &quote, &opts, |rpc, quote, opts| async move {
            let ack = rpc
                .call_with::<Quote, Ack>(SERVICE, METHOD, &quote, &opts)
                .await?;
            anyhow::ensure!(ack.value.accepted, "sdk reply not accepted");
            anyhow::ensure!(
                ack.instance_id.as_deref() == Some(INSTANCE),
                "served by {:?}, not {INSTANCE}",
                ack.instance_id
            );
            Ok(())
        });
        sides.push(("sdk", discovery));
    } else {
        sides.push(("sdk", balanced()));
    }
    if args.breakdown {
        // A raw client calling the plain async-nats service.
        sides.push((
            "raw client→nats service",
            raw_side(&raw_client, PLAIN_SUBJECT, &quote, Duration::ZERO),
        ));
        // A raw async-nats client calling the SDK service's instance subject.
        sides.push((
            "raw client→sdk server",
            raw_side(&raw_client, &instance_subject, &quote, Duration::ZERO),
        ));
        // The SDK connection's own NATS client, plain request, same subject.
        sides.push((
            "sdk conn, plain req",
            raw_side(
                sdk_client.pooled(),
                &instance_subject,
                &quote,
                Duration::ZERO,
            ),
        ));
        // The SDK client calling the instance by name: no discovery, and a
        // reply without headers.
        let by_instance = sdk_side(&rpc, &quote, &opts, |rpc, quote, opts| async move {
            let ack = rpc
                .call_instance::<Quote, Ack>(SERVICE, INSTANCE, METHOD, &quote, &opts)
                .await?;
            anyhow::ensure!(ack.value.accepted, "sdk reply not accepted");
            Ok(())
        });
        sides.push(("sdk client, by instance", by_instance));
        if !args.balanced {
            sides.push(("sdk client, queue grp", balanced()));
        }
    }
    let labels: Vec<&str> = sides.iter().map(|(label, _)| *label).collect();
    if let Some(only) = &args.only {
        anyhow::ensure!(
            labels.contains(&only.as_str()),
            "--only {only:?} names no side of this run; the sides are {labels:?}"
        );
    }

    // Warm-up.
    for _ in 0..args.warmup {
        for (_, call) in &sides {
            call().await?;
        }
    }

    // Sequential latency in batches, rotating which side goes first.
    let template = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut hists = vec![template; sides.len()];
    let batches = args.calls / args.batch;
    let bar = progress((batches * sides.len()) as u64, "sequential latency");
    for i in 0..batches {
        for k in 0..sides.len() {
            let s = (i + k) % sides.len();
            let (_, call) = &sides[s];
            let hist = &mut hists[s];
            for _ in 0..args.batch {
                let t = std::time::Instant::now();
                call().await?;
                hist.saturating_record(t.elapsed().as_nanos() as u64);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let lookup = if !args.balanced && args.breakdown {
        Some(time_lookup(&sdk_client).await?)
    } else {
        None
    };

    // Concurrent throughput in rounds, rotating which side goes first
    // (with --breakdown, every side of the latency phase takes its turn).
    let round = Duration::from_secs_f64(args.round_secs);
    // Each side's rate in each round, paired by round in the report.
    let mut rates = vec![Vec::with_capacity(args.rounds); sides.len()];
    // Each side's CPU seconds (this process and the server) and calls.
    let (own_pid, server_pid) = (std::process::id(), bus.server.pid());
    let cpu_secs = || Some(cpu_seconds(own_pid)? + cpu_seconds(server_pid?)?);
    let mut cpu = vec![Some((0.0, 0u64)); sides.len()];
    let bar = progress((args.rounds * sides.len()) as u64, "concurrent throughput");
    for i in 0..args.rounds {
        for k in 0..sides.len() {
            let s = (i + k) % sides.len();
            if args.only.as_deref().is_some_and(|only| only != labels[s]) {
                continue;
            }
            let call = sides[s].1.clone();
            let before = cpu_secs();
            let rate = counted_throughput(args.concurrency, round, move || call()).await?;
            rates[s].push(rate.per_sec());
            cpu[s] = match (cpu[s], before, cpu_secs()) {
                (Some((secs, ops)), Some(before), Some(after)) => {
                    Some((secs + (after - before), ops + rate.ops))
                }
                _ => None,
            };
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    drop(sides);

    let mut parameters = serde_json::json!({
        "calls_per_side": batches * args.batch,
        "warmup_per_side": args.warmup,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "rounds": args.rounds,
        "round_secs": args.round_secs,
        "throughput_ratio": "median over the rounds of each round's sdk/raw ratio",
        "sdk_path": if !args.balanced {
            "discovery: call_with -> rpc.{service}.{instance}.{method}"
        } else {
            "queue group rpc.{service}.{method}"
        },
    });
    if let Some((reader, updates, counting, since)) = view {
        counting.abort();
        let seconds = since.elapsed().as_secs_f64();
        let updates = updates.load(std::sync::atomic::Ordering::Relaxed);
        // Every filler instance must still be there with a record written
        // within its refresh interval (plus slack).
        let now = chrono::Utc::now();
        let all = reader.all();
        let fresh = all
            .iter()
            .filter(|i| i.service_name.starts_with("bench-fill-"))
            .filter(|i| {
                let refresh_ms = i
                    .metadata
                    .get(aegis_sdk::registry::METADATA_REFRESH_MS)
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(1_000);
                (now - i.last_heartbeat).num_milliseconds() < refresh_ms + 1_500
            })
            .count();
        let filler_count = if args.registry { args.instances } else { 0 };
        anyhow::ensure!(
            fresh == filler_count,
            "only {fresh} of {filler_count} filler instances wrote their record within their refresh interval"
        );
        parameters["registered_instances"] = (all.len()).into();
        parameters["extra_instances_heartbeating"] = filler_count.into();
        parameters["registry_updates_seen_by_caller_per_s"] = (updates as f64 / seconds).into();
        if let Some((p50, p99)) = lookup {
            parameters["discovery_lookup_ns"] = serde_json::json!({ "p50": p50, "p99": p99 });
        }
    }
    parameters["who_served"] = serde_json::json!(args.who_served);
    parameters["auth"] = serde_json::json!(args.auth);
    parameters["tls"] = serde_json::json!(args.tls);
    if args.raw_busy_ns > 0 {
        parameters["raw_busy_ns"] = serde_json::json!(args.raw_busy_ns);
        parameters["busy_side"] = serde_json::json!(format!("{:?}", args.busy_side).to_lowercase());
    }
    let mode = if args.registry {
        "rpc --registry"
    } else if args.who_served {
        "rpc --balanced --who-served"
    } else if args.balanced {
        "rpc --balanced"
    } else {
        "rpc"
    };
    let title = format!(
        "{mode}{}{}",
        if args.auth { " --auth" } else { "" },
        if args.tls { " --tls" } else { "" }
    );
    let mut report: Report = Report::new(&title, server_version, parameters);
    // The report is built after the run; it says when the run began.
    report.started_at = aegis_contracts::models::rfc3339::format_utc(&started);
    // A calibration run slows the raw side on purpose: nothing to judge.
    let judged = args.raw_busy_ns == 0;
    report.add_latency(
        "sequential rpc",
        &hists[0],
        &hists[1],
        judged.then_some(Target::AtMost(1.05)),
    );
    for (k, hist) in hists.iter().enumerate().skip(2) {
        let label = format!("· {}", labels[k]);
        for (q, name) in [(0.5, "p50"), (0.99, "p99")] {
            let us = |h: &Histogram<u64>| h.value_at_quantile(q) as f64 / 1000.0;
            report.add(
                &format!("{label} {name}"),
                "µs",
                us(&hists[0]),
                us(hist),
                None,
            );
        }
    }
    report.add_paired(
        "concurrent rpc throughput",
        "calls/s",
        &rates[0],
        &rates[1],
        (judged && args.only.is_none()).then_some(Target::AtLeast(throughput_target(&args))),
    );
    for (k, rate) in rates.iter().enumerate().skip(2) {
        let label = format!("· {} throughput", labels[k]);
        report.add_paired(&label, "calls/s", &rates[0], rate, None);
    }
    // What a call costs in CPU, whatever else the machine runs: the
    // throughput phase's CPU time (this process, both ends of each side,
    // and the server) per call.
    let per_call: Vec<Option<f64>> = cpu
        .iter()
        .map(|used| match *used {
            Some((secs, ops)) if ops > 0 => Some(secs * 1e6 / ops as f64),
            _ => None,
        })
        .collect();
    if let Some(raw) = per_call[0] {
        for (k, side) in per_call.iter().enumerate().skip(1) {
            let Some(side) = *side else { continue };
            let label = if k == 1 {
                "cpu per call, throughput phase".to_owned()
            } else {
                format!("· {} cpu per call", labels[k])
            };
            report.add(&label, "µs", raw, side, None);
        }
    }

    service.shutdown().await?;
    if let Some(filler) = filler {
        filler.stop().await;
    }
    raw_task.abort();
    if let Some(task) = plain_service_task {
        task.abort();
    }
    // Close our connections before the server goes, so none of them
    // reports a lost connection on the way out.
    sdk_client.drain().await.ok();
    sdk_server.drain().await.ok();
    drop(bus);
    if let Some((p50, p99)) = lookup {
        println!("discovery lookup alone (in memory, {LOOKUPS} picks): p50 {p50} ns, p99 {p99} ns");
    }
    Ok(report)
}

/// Picks measured for the discovery lookup alone.
const LOOKUPS: usize = 100_000;

/// The time one discovery pick takes by itself (`Discovery::select`, which
/// does the call path's pick and also clones the record): p50 and p99 in ns.
async fn time_lookup(conn: &Connection) -> anyhow::Result<(u64, u64)> {
    let discovery = conn.discovery();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 1_000_000_000, 3)?;
    for _ in 0..LOOKUPS {
        let t = std::time::Instant::now();
        let picked = discovery
            .select(SERVICE, aegis_sdk::Strategy::RoundRobin, None)
            .await?;
        hist.saturating_record(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(picked.is_some(), "discovery found no instance of {SERVICE}");
    }
    Ok((hist.value_at_quantile(0.5), hist.value_at_quantile(0.99)))
}

/// Prints the report, writes the JSON file when asked.
pub(crate) fn finish(report: Report, json: Option<&std::path::Path>) -> anyhow::Result<Report> {
    report.print(&mut std::io::stdout().lock())?;
    if let Some(path) = json {
        report.write_json(path)?;
        println!("results written to {}", path.display());
    }
    Ok(report)
}
