//! `aegis bench rpc`: request/reply latency and throughput, raw async-nats
//! against the SDK.
//!
//! Both sides do the same work: the caller encodes a small order-like JSON
//! request, the responder decodes it and encodes a JSON reply, the caller
//! decodes that. The raw responder is the idiomatic async-nats loop (one
//! queue subscription, reply inline); the SDK responder is an Aegis service
//! (typed handler, `$SRV` stats, metrics, one task per request).

use std::{path::PathBuf, sync::Arc, time::Duration};

use aegis_sdk::{AegisConfig, Connection, rpc::CallOptions};
use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::{
    Side, order, progress,
    report::{Report, Target},
    throughput,
};

/// Options of `aegis bench rpc`.
#[derive(Debug, Clone, Args)]
pub struct RpcBenchArgs {
    /// Measured sequential calls per side (after warm-up).
    #[arg(long, default_value_t = 10_000)]
    pub calls: usize,
    /// Warm-up calls per side, not measured.
    #[arg(long, default_value_t = 1_000)]
    pub warmup: usize,
    /// Calls per side in one alternating batch.
    #[arg(long, default_value_t = 500)]
    pub batch: usize,
    /// Concurrent callers in the throughput phase.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Throughput rounds per side (alternating), each `--round-secs` long.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Length of one throughput round in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub round_secs: f64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,
}

/// The request both sides send.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    symbol: String,
    side: String,
    quantity: u32,
    limit: f64,
    client_order_id: String,
}

/// The reply both sides send back.
#[derive(Debug, Clone, Serialize, Deserialize)]
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
const SERVICE: &str = "bench-pricing";
const METHOD: &str = "quote";

/// Runs the benchmark and prints the table; returns the report.
///
/// # Errors
/// When the server cannot start or a call fails.
pub async fn run(args: RpcBenchArgs) -> anyhow::Result<Report> {
    anyhow::ensure!(
        args.batch > 0 && args.calls >= args.batch,
        "--calls must be at least --batch (> 0)"
    );
    anyhow::ensure!(
        args.concurrency > 0 && args.rounds > 0,
        "--concurrency and --rounds must be positive"
    );
    let nats = tokio::task::spawn_blocking(aegis_testkit::NatsServer::start)
        .await?
        .context(
            "starting nats-server for the benchmark (run `make bootstrap` if it is missing)",
        )?;
    let url = nats.url();

    // Responders, each on its own connection like a separate process.
    let raw_server = async_nats::connect(&url).await?;
    let mut sub = raw_server
        .queue_subscribe(RAW_SUBJECT, "bench.raw".into())
        .await?;
    let responder = raw_server.clone();
    let raw_task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let Some(reply) = msg.reply else { continue };
            let Ok(q) = serde_json::from_slice::<Quote>(&msg.payload) else {
                continue;
            };
            if let Ok(body) = serde_json::to_vec(&answer(q)) {
                let _ = responder.publish(reply, body.into()).await;
            }
        }
    });
    let sdk_server = Connection::connect(AegisConfig::with_servers(&url)).await?;
    let service = sdk_server
        .service(SERVICE, "1.0.0")
        .instance_id("bench-1")
        .handler(METHOD, |q: Quote| async move { Ok(answer(q)) })
        .start()
        .await?;

    // Callers.
    let raw_client = async_nats::connect(&url).await?;
    let sdk_client = Connection::connect(AegisConfig::with_servers(&url)).await?;
    let server_version = sdk_client.server_version().to_string();
    let quote = Arc::new(Quote {
        symbol: "AAPL".into(),
        side: "BUY".into(),
        quantity: 100,
        limit: 175.25,
        client_order_id: "c-000001".into(),
    });

    let raw_call = {
        let (client, quote) = (raw_client.clone(), quote.clone());
        move || {
            let (client, quote) = (client.clone(), quote.clone());
            async move {
                let body = serde_json::to_vec(&*quote)?;
                let msg = client.request(RAW_SUBJECT, body.into()).await?;
                let ack: Ack = serde_json::from_slice(&msg.payload)?;
                anyhow::ensure!(ack.accepted, "raw reply not accepted");
                Ok(())
            }
        }
    };
    let rpc = sdk_client.rpc();
    let opts = Arc::new(CallOptions::default());
    let sdk_call = {
        let (rpc, quote, opts) = (rpc.clone(), quote.clone(), opts.clone());
        move || {
            let (rpc, quote, opts) = (rpc.clone(), quote.clone(), opts.clone());
            async move {
                let ack = rpc
                    .call_balanced::<Quote, Ack>(SERVICE, METHOD, &quote, &opts)
                    .await?;
                anyhow::ensure!(ack.value.accepted, "sdk reply not accepted");
                Ok(())
            }
        }
    };

    // Warm-up.
    for _ in 0..args.warmup {
        raw_call().await?;
        sdk_call().await?;
    }

    // Sequential latency in alternating batches.
    let mut raw_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut sdk_hist = raw_hist.clone();
    let batches = args.calls / args.batch;
    let bar = progress((batches * 2) as u64, "sequential latency");
    for i in 0..batches {
        for side in order(i) {
            let hist = match side {
                Side::Raw => &mut raw_hist,
                Side::Sdk => &mut sdk_hist,
            };
            for _ in 0..args.batch {
                let t = std::time::Instant::now();
                match side {
                    Side::Raw => raw_call().await?,
                    Side::Sdk => sdk_call().await?,
                }
                hist.saturating_record(t.elapsed().as_nanos() as u64);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    // Concurrent throughput in alternating rounds.
    let round = Duration::from_secs_f64(args.round_secs);
    let (mut raw_rate, mut sdk_rate) = (0.0, 0.0);
    let bar = progress((args.rounds * 2) as u64, "concurrent throughput");
    for i in 0..args.rounds {
        for side in order(i) {
            match side {
                Side::Raw => {
                    raw_rate += throughput(args.concurrency, round, raw_call.clone()).await?
                }
                Side::Sdk => {
                    sdk_rate += throughput(args.concurrency, round, sdk_call.clone()).await?
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    raw_rate /= args.rounds as f64;
    sdk_rate /= args.rounds as f64;

    let mut report = Report::new(
        "rpc",
        server_version,
        serde_json::json!({
            "calls_per_side": batches * args.batch,
            "warmup_per_side": args.warmup,
            "batch": args.batch,
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "round_secs": args.round_secs,
            "sdk_path": "queue group rpc.{service}.{method}",
        }),
    );
    report.add_latency(
        "sequential rpc",
        &raw_hist,
        &sdk_hist,
        Some(Target::AtMost(1.05)),
    );
    report.add(
        "concurrent rpc throughput",
        "calls/s",
        raw_rate,
        sdk_rate,
        Some(Target::AtLeast(0.90)),
    );

    service.shutdown().await?;
    raw_task.abort();
    drop(nats);
    finish(report, args.json.as_deref())
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
