//! What a dashboard costs at fleet size: a synthetic fleet of instances
//! publishing the SDK's default metrics (one snapshot every 2 s each, the
//! figures moving or not) on `aegis.metrics.{service}.{instance}`, and the
//! bytes and events per second a dashboard client is sent.
//!
//! `measure_dashboard_feed` is a benchmark that prints numbers (ignored by
//! default; run it with `-- --ignored --nocapture`; `AEGIS_FIGURES_N` sets
//! the fleet size, default 1000). Its assertions are generous: the figures
//! are in docs/performance.md.
//!
//! The other tests hold what makes the `figures` topic enough for a
//! dashboard: every instance first, then only what a card would show
//! differently, and the time of a latest snapshot once snapshots stop;
//! the `metrics` topic for one instance's page; the large JSON answers
//! gzip-compressed.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::{
    EndpointMetrics, LatencySummary, MetricsSnapshot, ServiceInstance,
    subjects::{REGISTRY_BUCKET, metrics_subject, registry_key},
};
use aegis_sdk::Connection;
use chrono::Utc;
use common::{Events, Harness, VIEWER, eventually};
use futures::StreamExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Snapshots per instance per second at the SDK's default interval (2 s).
const INTERVAL: Duration = Duration::from_secs(2);

fn service_of(n: usize) -> String {
    format!("fleet-svc-{:02}", n % 10)
}

fn instance_of(n: usize) -> String {
    format!("fleet-i{n:05}")
}

/// A snapshot shaped like a pricing-service's: five endpoints with their
/// latency summaries. With `moving`, the figures differ every time (a
/// fleet under traffic), else they stay the same (an idle fleet).
fn snapshot(n: usize, round: u64, moving: bool) -> MetricsSnapshot {
    let wobble = if moving {
        (round * 7 + n as u64) % 13
    } else {
        0
    } as f64;
    let endpoint = |name: &str, rate: f64, p99: f64| EndpointMetrics {
        name: name.to_owned(),
        requests: 1000 + round * 20,
        successes: 990 + round * 20,
        errors: 10,
        request_rate: rate,
        error_rate: 0.01,
        latency_ms: LatencySummary {
            p50: p99 / 4.0,
            p90: p99 / 2.0,
            p99,
            max: p99 * 1.7,
            mean: p99 / 3.5,
        },
    };
    MetricsSnapshot {
        service_name: service_of(n),
        instance_id: instance_of(n),
        timestamp: Utc::now(),
        uptime_secs: 600.0 + round as f64 * 2.0,
        interval_secs: INTERVAL.as_secs_f64(),
        endpoints: vec![
            endpoint("get_price", 12.3 + wobble * 0.37, 4.81 + wobble * 0.11),
            endpoint("get_quote", 8.1 + wobble * 0.21, 3.37 + wobble * 0.07),
            endpoint("subscribe", 2.05, 1.21),
            endpoint("on_trade_executed", 3.5 + wobble * 0.13, 2.2),
            endpoint("refresh_book", 0.5, 9.85),
        ],
        queue_depth: 0,
        in_flight: 1,
        custom: [("book_depth".to_owned(), 42.0)].into(),
    }
}

/// Registers `n` instances (bare records, as the registry holds them).
async fn register(conn: &Connection, n: usize) {
    let bucket = conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    for i in 0..n {
        let record = ServiceInstance::new(
            service_of(i),
            instance_of(i),
            "1.0.0",
            Utc::now() - chrono::Duration::minutes(10),
        );
        bucket
            .put(
                registry_key(&record.service_name, &record.instance_id),
                serde_json::to_vec(&record).unwrap().into(),
            )
            .await
            .unwrap();
    }
}

/// Publishes every instance's snapshot once per [`INTERVAL`], spread over
/// it (as independent instances would), until `stop`.
fn publish_fleet(conn: Connection, n: usize, moving: bool, stop: CancellationToken) {
    tokio::spawn(async move {
        let client = conn.client().clone();
        let gap = INTERVAL / n as u32;
        let mut round = 0;
        loop {
            let start = tokio::time::Instant::now();
            for i in 0..n {
                if stop.is_cancelled() {
                    return;
                }
                let s = snapshot(i, round, moving);
                let _ = client
                    .publish(
                        metrics_subject(&s.service_name, &s.instance_id),
                        serde_json::to_vec(&s).unwrap().into(),
                    )
                    .await;
                tokio::time::sleep_until(start + gap * (i as u32 + 1)).await;
            }
            round += 1;
        }
    });
}

/// Bytes and events a client of `/api/stream?{query}` is sent over `window`.
async fn measure_stream(addr: std::net::SocketAddr, query: &str, window: Duration) -> (u64, u64) {
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/api/stream?{query}"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (bytes, events) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (b, e) = (bytes.clone(), events.clone());
    let reader = tokio::spawn(async move {
        let mut body = response.bytes_stream();
        while let Some(Ok(chunk)) = body.next().await {
            b.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            let blocks = chunk.windows(7).filter(|w| w == b"\nevent:").count()
                + usize::from(chunk.starts_with(b"event:"));
            e.fetch_add(blocks as u64, Ordering::Relaxed);
        }
    });
    // Past the hello and whatever a new client is sent first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (b0, e0) = (
        bytes.load(Ordering::Relaxed),
        events.load(Ordering::Relaxed),
    );
    tokio::time::sleep(window).await;
    let measured = (
        bytes.load(Ordering::Relaxed) - b0,
        events.load(Ordering::Relaxed) - e0,
    );
    reader.abort();
    measured
}

/// Size on the wire of `GET {path}` (with `Accept-Encoding: gzip` when
/// `gzip`), and its `Content-Encoding`.
async fn measure_get(addr: std::net::SocketAddr, path: &str, gzip: bool) -> (usize, String) {
    let mut request = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(VIEWER);
    if gzip {
        request = request.header("accept-encoding", "gzip, br");
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "{path}");
    let encoding = response
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| "identity".to_owned());
    (response.bytes().await.unwrap().len(), encoding)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: run with --ignored --nocapture"]
async fn measure_dashboard_feed() {
    let n: usize = std::env::var("AEGIS_FIGURES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let window = Duration::from_secs(10);
    let h = Harness::start().await;
    let (addr, stop_server) = h.serve().await;
    let conn = h.connect().await;
    register(&conn, n).await;
    eventually(Duration::from_secs(30), "every instance listed", || async {
        h.get("/api/instances", Some(VIEWER))
            .await
            .body
            .as_array()
            .map(Vec::len)
            == Some(n)
    })
    .await;
    let sample = serde_json::to_vec(&snapshot(0, 0, true)).unwrap().len();
    println!("fleet: {n} instances, one snapshot every 2 s each ({sample} bytes)");

    for moving in [true, false] {
        let stop = CancellationToken::new();
        publish_fleet(h.connect().await, n, moving, stop.clone());
        // Every instance has published at least once.
        tokio::time::sleep(INTERVAL * 2).await;
        let kind = if moving { "moving" } else { "constant" };
        for query in ["topics=instance,metrics", "topics=instance,figures"] {
            let started = Instant::now();
            let (bytes, events) = measure_stream(addr, query, window).await;
            let secs = window.as_secs_f64();
            println!(
                "{kind:>8} figures  {query:<32} {:>8.1} KB/s {:>7.1} events/s (measured over {:.1} s)",
                bytes as f64 / secs / 1000.0,
                events as f64 / secs,
                started.elapsed().as_secs_f64(),
            );
        }
        for path in ["/api/metrics", "/api/metrics/figures"] {
            let (plain, _) = measure_get(addr, path, false).await;
            let (wire, encoding) = measure_get(addr, path, true).await;
            println!(
                "{kind:>8} figures  GET {path:<28} {:>8.1} KB, {:>8.1} KB on the wire with gzip accepted ({encoding})",
                plain as f64 / 1000.0,
                wire as f64 / 1000.0,
            );
        }
        stop.cancel();
        tokio::time::sleep(INTERVAL).await;
    }
    stop_server.cancel();
}

/// Publishes `s` and waits for the stream's ack.
async fn publish(conn: &Connection, s: &MetricsSnapshot) {
    conn.jetstream()
        .publish(
            metrics_subject(&s.service_name, &s.instance_id),
            serde_json::to_vec(s).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

/// The entries of a `figures` event, by instance id.
fn listed(event: &Value) -> Vec<(String, Value)> {
    event["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["instanceId"].as_str().unwrap().to_owned(), f.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn figures_come_first_in_full_then_only_when_a_card_would_change() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let conn = h.connect().await;
    // Held before the client connects: in its first, full event.
    publish(&conn, &snapshot(1, 0, false)).await;
    eventually(Duration::from_secs(5), "the feed holds it", || async {
        h.get("/api/metrics/figures", Some(VIEWER)).await.body["instances"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;

    let mut events = Events::open(addr, "figures").await;
    assert_eq!(
        events.next_named("hello").await["topics"],
        serde_json::json!(["figures"])
    );
    let full = events.next_named("figures").await;
    assert_eq!(full["full"], true, "{full}");
    assert_eq!(full["type"], "figures");
    let first = listed(&full);
    assert_eq!(first.len(), 1, "{full}");
    let f = &first[0].1;
    // What the card shows: calls/s summed, the highest p99 of the
    // endpoints called, rounded as shown.
    assert_eq!(f["callsPerSec"], 26.4, "{f}");
    assert_eq!(f["p99Ms"], 9.8, "{f}");
    assert_eq!(f["late"], false);
    assert_eq!(full["lateAfterIntervals"], 1.5);

    // A new instance: sent once.
    publish(&conn, &snapshot(2, 0, false)).await;
    loop {
        let e = events.next_named("figures").await;
        assert_eq!(e["full"], false);
        if listed(&e).iter().any(|(id, _)| *id == instance_of(2)) {
            break;
        }
    }
    // Newer snapshots that read the same: nothing sent for 2 s.
    for round in 1..=2 {
        publish(&conn, &snapshot(1, round, false)).await;
        publish(&conn, &snapshot(2, round, false)).await;
        let e = events.next_named("figures").await;
        assert!(listed(&e).is_empty(), "nothing a card shows changed: {e}");
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    // One moves: only it is sent.
    publish(&conn, &snapshot(2, 1, true)).await;
    let moved = loop {
        let e = events.next_named("figures").await;
        let l = listed(&e);
        if !l.is_empty() {
            break l;
        }
    };
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert_eq!(moved[0].0, instance_of(2));
    assert_ne!(moved[0].1["callsPerSec"], 26.4);

    // Instance 1 publishes no more: within 1.5 intervals (3 s) and a tick
    // it is sent late, with the time of its latest snapshot.
    let last = snapshot(1, 3, false);
    publish(&conn, &last).await;
    let late = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            let e = events.next_named("figures").await;
            if let Some((_, f)) = listed(&e)
                .into_iter()
                .find(|(id, f)| *id == instance_of(1) && f["late"] == true)
            {
                break f;
            }
        }
    })
    .await
    .expect("sent late");
    let at: chrono::DateTime<Utc> = late["timestamp"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        at.timestamp_millis(),
        last.timestamp.timestamp_millis(),
        "{late}"
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_page_gets_the_metrics_of_its_instance_only() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let conn = h.connect().await;
    let mut events = Events::open(
        addr,
        &format!(
            "metrics&service={}&instance={}",
            service_of(2),
            instance_of(2)
        ),
    )
    .await;
    events.next_named("hello").await;
    publish(&conn, &snapshot(1, 0, false)).await;
    publish(&conn, &snapshot(2, 0, false)).await;
    let e = events.next_named("metrics").await;
    assert_eq!(e["snapshot"]["instanceId"], instance_of(2), "{e}");
    // A full snapshot, endpoints and all.
    assert_eq!(e["snapshot"]["endpoints"].as_array().unwrap().len(), 5);

    for bad in ["instance=-x", "service=Nope", "topics=metrics,bogus"] {
        let r = h.get(&format!("/api/stream?{bad}"), Some(VIEWER)).await;
        r.expect(400, Some("BAD_REQUEST"));
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_metrics_answers_are_gzipped_and_one_instance_can_be_asked_for() {
    use std::io::Read;
    const N: usize = 30;
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let conn = h.connect().await;
    register(&conn, N).await;
    for i in 0..N {
        publish(&conn, &snapshot(i, 0, false)).await;
    }
    eventually(Duration::from_secs(10), "every snapshot held", || async {
        let body = h.get("/api/metrics", Some(VIEWER)).await.body;
        body.as_array()
            .is_some_and(|a| a.len() == N && a.iter().all(|m| !m["snapshot"].is_null()))
    })
    .await;

    let client = reqwest::Client::new();
    let get = |path: &str, gzip: bool| {
        let mut r = client
            .get(format!("http://{addr}{path}"))
            .bearer_auth(VIEWER);
        if gzip {
            r = r.header("accept-encoding", "gzip");
        }
        r.send()
    };
    let plain = get("/api/metrics", false).await.unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let plain: Value = plain.json().await.unwrap();
    let zipped = get("/api/metrics", true).await.unwrap();
    assert_eq!(zipped.headers()["content-encoding"], "gzip");
    assert_eq!(zipped.headers()["vary"], "accept-encoding");
    let bytes = zipped.bytes().await.unwrap();
    let mut json = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut json)
        .unwrap();
    assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), plain);
    assert!(
        bytes.len() * 5 < json.len(),
        "{} of {}",
        bytes.len(),
        json.len()
    );

    let one = h
        .get(
            &format!("/api/metrics?instance={}", instance_of(7)),
            Some(VIEWER),
        )
        .await;
    let one = one.body.as_array().unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["instanceId"], instance_of(7));
    h.get("/api/metrics?instance=a.b", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    stop.cancel();
}
