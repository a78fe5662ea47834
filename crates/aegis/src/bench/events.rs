//! `aegis bench events`: JetStream publish throughput and latency of events,
//! raw async-nats against the SDK.
//!
//! Raw: `jetstream.publish` with a `Nats-Msg-Id` (the same guarantee the SDK
//! gives) and wait for the ack; a third, reference side publishes without an
//! id, to show what dedup itself costs. SDK:
//! `events().publish(domain, action, &payload)`, which also validates the
//! names and adds a dedup id (`Nats-Msg-Id`, so the server tracks it in the
//! stream's duplicate window). Both go to the same `EVENTS` stream.

use std::{path::PathBuf, sync::Arc, time::Duration};

use aegis_sdk::{AegisConfig, Connection};
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{
    Side, order, progress,
    report::{Report, Target, mean},
    rpc::finish,
    throughput,
};

/// Options of `aegis bench events`.
#[derive(Debug, Clone, Args)]
pub struct EventsBenchArgs {
    /// Concurrent publishers in the throughput phase.
    #[arg(long, default_value_t = 64, value_parser = super::flags::at_least(1usize))]
    pub concurrency: usize,
    /// Throughput rounds per side (alternating); the throughput ratio is
    /// the median of the rounds' own ratios.
    #[arg(long, default_value_t = 6, value_parser = super::flags::at_least(1usize))]
    pub rounds: usize,
    /// Length of one throughput round in seconds.
    #[arg(long, default_value_t = 1.0, value_parser = super::flags::positive_seconds)]
    pub round_secs: f64,
    /// Sequential publishes per side measured for latency.
    #[arg(long, default_value_t = 2_000, value_parser = super::flags::at_least(1usize))]
    pub calls: usize,
    /// Publishes per side in one alternating latency batch.
    #[arg(long, default_value_t = 250, value_parser = super::flags::at_least(1usize))]
    pub batch: usize,
    /// Run the whole benchmark N times (each on a fresh server) and report
    /// each row's median, with the spread of its ratio; targets are judged
    /// on the median.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
    pub runs: u32,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,
}

#[derive(Debug, Clone, Serialize)]
struct PriceUpdated {
    symbol: String,
    price: f64,
    bid: f64,
    ask: f64,
}

/// Runs the benchmark (`--runs` times) and prints the table; returns the
/// report.
///
/// # Errors
/// When the server cannot start or a publish fails.
pub async fn run(args: EventsBenchArgs) -> anyhow::Result<Report> {
    let report = super::repeat(args.runs, || run_once(args.clone())).await?;
    finish(report, args.json.as_deref())
}

async fn run_once(args: EventsBenchArgs) -> anyhow::Result<Report> {
    super::check_sizes(args.calls, args.batch, args.concurrency, args.rounds)?;
    let started = chrono::Utc::now();
    let nats = super::start_server().await?;
    let url = nats.url();
    let sdk = Connection::connect(AegisConfig::with_servers(&url)).await?;
    sdk.events().ensure_stream().await?;
    let raw = async_nats::jetstream::new(async_nats::connect(&url).await?);
    let server_version = sdk.server_version().to_string();
    let payload = Arc::new(PriceUpdated {
        symbol: "AAPL".into(),
        price: 175.02,
        bid: 175.01,
        ask: 175.03,
    });

    // The baseline gives the same guarantee as the SDK: a dedup id per event
    // (Nats-Msg-Id), so a retried publish is stored once.
    let raw_publish = {
        let (js, payload) = (raw.clone(), payload.clone());
        move || {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                let body = serde_json::to_vec(&*payload)?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, nuid::next().as_str());
                js.publish_with_headers("events.price.raw", headers, body.into())
                    .await?
                    .await?;
                Ok(())
            }
        }
    };
    // For reference: what the dedup id itself costs (no id at all).
    let raw_plain = {
        let (js, payload) = (raw.clone(), payload.clone());
        move || {
            let (js, payload) = (js.clone(), payload.clone());
            async move {
                let body = serde_json::to_vec(&*payload)?;
                js.publish("events.price.plain", body.into()).await?.await?;
                Ok(())
            }
        }
    };
    let events = sdk.events();
    let sdk_publish = {
        let (events, payload) = (events.clone(), payload.clone());
        move || {
            let (events, payload) = (events.clone(), payload.clone());
            async move {
                events.publish("price", "updated", &*payload).await?;
                Ok(())
            }
        }
    };

    for _ in 0..200 {
        raw_publish().await?;
        sdk_publish().await?;
    }

    let mut raw_hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut sdk_hist = raw_hist.clone();
    let batches = args.calls / args.batch;
    let bar = progress((batches * 2) as u64, "sequential publish");
    for i in 0..batches {
        for side in order(i) {
            let hist = match side {
                Side::Raw => &mut raw_hist,
                Side::Sdk => &mut sdk_hist,
            };
            for _ in 0..args.batch {
                let t = std::time::Instant::now();
                match side {
                    Side::Raw => raw_publish().await?,
                    Side::Sdk => sdk_publish().await?,
                }
                hist.saturating_record(t.elapsed().as_nanos() as u64);
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();

    let round = Duration::from_secs_f64(args.round_secs);
    // Each side's rate per round, paired by round in the report.
    let (mut raw_rates, mut sdk_rates, mut plain_rate) = (Vec::new(), Vec::new(), 0.0);
    let bar = progress((args.rounds * 3) as u64, "concurrent publish");
    for i in 0..args.rounds {
        if i.is_multiple_of(2) {
            plain_rate += throughput(args.concurrency, round, raw_plain.clone()).await?;
            bar.inc(1);
        }
        for side in order(i) {
            match side {
                Side::Raw => {
                    raw_rates.push(throughput(args.concurrency, round, raw_publish.clone()).await?)
                }
                Side::Sdk => {
                    sdk_rates.push(throughput(args.concurrency, round, sdk_publish.clone()).await?)
                }
            }
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    plain_rate /= args.rounds.div_ceil(2) as f64;

    let mut report: Report = Report::new(
        "events",
        server_version,
        serde_json::json!({
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "round_secs": args.round_secs,
            "throughput_ratio": "median over the rounds of each round's sdk/raw ratio",
            "sequential_publishes_per_side": batches * args.batch,
            "batch": args.batch,
            "stream": "EVENTS (file storage, R1)",
            "raw_side": "jetstream publish with a Nats-Msg-Id per event, like the SDK",
        }),
    );
    report.started_at = aegis_contracts::models::rfc3339::format_utc(&started);
    report.add_paired(
        "jetstream publish throughput",
        "events/s",
        &raw_rates,
        &sdk_rates,
        Some(Target::AtLeast(0.95)),
    );
    report.add(
        "· vs raw without dedup id",
        "events/s",
        plain_rate,
        mean(&sdk_rates),
        None,
    );
    report.add_latency("sequential publish", &raw_hist, &sdk_hist, None);
    drop(nats);
    Ok(report)
}
