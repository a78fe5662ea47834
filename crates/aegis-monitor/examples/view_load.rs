//! Measures what a large fleet costs the monitor's views, against a running
//! monitor (the `serve` example) and population (the `fake_instances`
//! example):
//!
//! - `GET /api/instances` and `GET /api/instances/{service}` at a fixed
//!   rate (open loop: a slow answer does not delay the next request),
//!   latency to the last byte, p50/p99, one path after the other;
//! - SSE clients on `/api/stream?topics=instance` while the lists are
//!   loaded: how long after a probe instance's registration was
//!   acknowledged its `instance` event reaches each client (p50/p99), how
//!   many events of any kind they received per second, and whether any was
//!   told it lagged.
//!
//! ```text
//! cargo run -p aegis-monitor --example view_load -- \
//!     --api http://127.0.0.1:8100 --token "$TOKEN" --nats nats://127.0.0.1:4222 \
//!     --rate 50 --secs 20 --service order-service
//! ```

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::ServiceInstance;
use aegis_sdk::{AegisConfig, Connection, registry::Registration};
use anyhow::Context;
use clap::Parser;
use futures::StreamExt;

#[derive(Debug, Parser)]
struct Args {
    /// The monitor's base URL.
    #[arg(long)]
    api: String,
    /// A viewer or admin token.
    #[arg(long, env = "AEGIS_TOKEN")]
    token: String,
    /// NATS, for the probe instances.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Requests per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Seconds per path.
    #[arg(long, default_value_t = 20)]
    secs: u64,
    /// The service of the per-service list.
    #[arg(long, default_value = "order-service")]
    service: String,
    /// SSE clients.
    #[arg(long, default_value_t = 20)]
    sse: usize,
}

/// Shared by the SSE clients: when each probe's event arrived, per client.
#[derive(Default)]
struct Seen {
    arrivals: Mutex<Vec<HashMap<String, Instant>>>,
    events: AtomicU64,
    lagged: AtomicU64,
    broken: AtomicBool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http = reqwest::Client::new();
    let seen = Arc::new(Seen::default());
    seen.arrivals
        .lock()
        .unwrap()
        .resize_with(args.sse, HashMap::new);
    for client in 0..args.sse {
        let response = http
            .get(format!("{}/api/stream?topics=instance", args.api))
            .bearer_auth(&args.token)
            .send()
            .await
            .context("opening the stream")?;
        anyhow::ensure!(
            response.status().is_success(),
            "stream: {}",
            response.status()
        );
        tokio::spawn(read_stream(response, client, seen.clone()));
    }
    let conn = Connection::connect(AegisConfig::with_servers(&args.nats))
        .await
        .context("connecting to NATS")?;

    let sse_started = Instant::now();
    let events_before = seen.events.load(Ordering::Relaxed);
    let mut acks = HashMap::new();
    let mut probes = Vec::new();
    for path in [
        "/api/instances".to_owned(),
        format!("/api/instances/{}", args.service),
    ] {
        let load = tokio::spawn(load(
            http.clone(),
            format!("{}{path}", args.api),
            args.token.clone(),
            args.rate,
            Duration::from_secs(args.secs),
        ));
        // A probe instance registers every 500 ms meanwhile.
        while !load.is_finished() {
            let id = format!("probe-{}", probes.len());
            let record = ServiceInstance::new("view-probe", &id, "1.0.0", chrono::Utc::now());
            let registration = Registration::builder(&conn, record)
                .start()
                .await
                .context("registering a probe")?;
            acks.insert(id, Instant::now());
            probes.push(registration);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let (p50, p99, mean_bytes, failed, achieved) = load.await?;
        println!(
            "{path}: p50 {p50:.1} ms, p99 {p99:.1} ms at {achieved:.1} req/s (asked {}), {mean_bytes:.0} bytes, {failed} failed",
            args.rate
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = sse_started.elapsed().as_secs_f64();
    let events = seen.events.load(Ordering::Relaxed) - events_before;
    let mut delays = Vec::new();
    let mut missing = 0;
    for arrivals in seen.arrivals.lock().unwrap().iter() {
        for (id, ack) in &acks {
            match arrivals.get(id) {
                Some(at) => delays.push(at.saturating_duration_since(*ack).as_micros() as u64),
                None => missing += 1,
            }
        }
    }
    let (p50, p99) = quantiles_ms(&mut delays);
    println!(
        "SSE ({} clients, {} probes): delay p50 {p50:.1} ms, p99 {p99:.1} ms; {missing} probe events missing; {:.1} events/s per client; {} clients lagged{}",
        args.sse,
        acks.len(),
        events as f64 / window / args.sse as f64,
        seen.lagged.load(Ordering::Relaxed),
        if seen.broken.load(Ordering::Relaxed) {
            "; a stream broke"
        } else {
            ""
        },
    );
    for p in probes {
        let _ = p.deregister().await;
    }
    Ok(())
}

/// GETs `url` at `rate` for `duration`: (p50 ms, p99 ms, mean bytes, failed, achieved rate).
async fn load(
    http: reqwest::Client,
    url: String,
    token: String,
    rate: f64,
    duration: Duration,
) -> (f64, f64, f64, u64, f64) {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let bytes = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    while started.elapsed() < duration {
        tick.tick().await;
        let request = http.get(&url).bearer_auth(&token);
        let (latencies, bytes, failed) = (latencies.clone(), bytes.clone(), failed.clone());
        tasks.spawn(async move {
            let t = Instant::now();
            let body = match request.send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                _ => None,
            };
            match body {
                Some(body) => {
                    latencies
                        .lock()
                        .unwrap()
                        .push(t.elapsed().as_micros() as u64);
                    bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                }
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    let answered = latencies.len();
    let (p50, p99) = quantiles_ms(&mut latencies);
    let mean = bytes.load(Ordering::Relaxed) as f64 / answered.max(1) as f64;
    (
        p50,
        p99,
        mean,
        failed.load(Ordering::Relaxed),
        answered as f64 / elapsed,
    )
}

/// Reads one stream: counts events, notes `lagged`, times probe upserts.
async fn read_stream(response: reqwest::Response, client: usize, seen: Arc<Seen>) {
    let mut body = response.bytes_stream();
    let mut buf = String::new();
    let mut lagged = false;
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            seen.broken.store(true, Ordering::Relaxed);
            return;
        };
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = "";
            let mut data = "";
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data = v.trim();
                }
            }
            if event.is_empty() {
                continue;
            }
            seen.events.fetch_add(1, Ordering::Relaxed);
            if event == "lagged" && !lagged {
                lagged = true;
                seen.lagged.fetch_add(1, Ordering::Relaxed);
            }
            if event == "instance"
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(data)
                && v["type"] == "instanceUpserted"
                && v["instance"]["serviceName"] == "view-probe"
                && let Some(id) = v["instance"]["instanceId"].as_str()
            {
                let now = Instant::now();
                seen.arrivals.lock().unwrap()[client]
                    .entry(id.to_owned())
                    .or_insert(now);
            }
        }
    }
}

fn quantiles_ms(samples: &mut [u64]) -> (f64, f64) {
    if samples.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    (at(0.5), at(0.99))
}
