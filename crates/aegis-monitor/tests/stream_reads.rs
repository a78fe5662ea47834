//! The temporary consumers the API reads streams with (instance events,
//! metrics history, the leadership timeline), against a real nats-server:
//! a request that is cut off (the client hangs up, the request timeout
//! answers 504) leaves none behind, and a flood of concurrent reads never
//! holds more than the cap, the rest waiting briefly or answered 503.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    subjects::log_subject,
};
use axum::http::StatusCode;
use common::{Harness, VIEWER, eventually};

/// The most requests that read a stream at once (the monitor's cap).
const CAP: u64 = 8;

/// Stores `per_instance` WARN records for each of `instances` of
/// order-service in `AEGIS_LOG`, the acks awaited.
async fn flood_log(h: &Harness, instances: &[&str], per_instance: usize) {
    let conn = h.connect().await;
    let js = conn.jetstream();
    let body = serde_json::to_vec(&LogRecord::new(
        chrono::Utc::now(),
        LogLevel::Warn,
        LogKind::Log,
        "a warning among many",
    ))
    .unwrap();
    for instance in instances {
        let subject = log_subject("order-service", instance);
        for chunk in 0..per_instance.div_ceil(1000) {
            let mut acks = Vec::new();
            for _ in 0..(per_instance - chunk * 1000).min(1000) {
                acks.push(
                    js.publish(subject.clone(), body.clone().into())
                        .await
                        .unwrap(),
                );
            }
            for ack in acks {
                ack.await.unwrap();
            }
        }
    }
}

/// How many consumers `AEGIS_LOG` has now (the monitor's reads are its
/// only consumers).
async fn log_consumers(h: &Harness) -> u64 {
    let conn = h.connect().await;
    consumers_on(&conn).await
}

async fn consumers_on(conn: &aegis_sdk::Connection) -> u64 {
    let stream = conn.jetstream().get_stream("AEGIS_LOG").await.unwrap();
    stream.get_info().await.unwrap().state.consumer_count as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_cut_off_by_a_hang_up_leaves_no_consumer_behind() {
    let h = Harness::start().await;
    flood_log(&h, &["order-a", "order-b", "order-c"], 9_000).await;
    let (addr, stop) = h.serve().await;
    let watcher = h.connect().await;
    // The leadership timeline of 27,000 records reads long enough to be
    // caught mid-read; the other routes read through the same readers.
    for _ in 0..2 {
        let path = "/api/leadership/order-service?window=1h";
        let url = format!("http://{addr}{path}");
        let client = tokio::spawn(async move {
            let _ = reqwest::Client::new()
                .get(url)
                .bearer_auth(VIEWER)
                .send()
                .await;
        });
        // Hang up while the request reads through a consumer.
        eventually(Duration::from_secs(10), "the read's consumer", || async {
            consumers_on(&watcher).await > 0
        })
        .await;
        client.abort();
        let _ = client.await;
        // Far sooner than the consumer's inactivity threshold (30 s).
        eventually(
            Duration::from_secs(5),
            &format!("no consumer left by {path}"),
            || async { consumers_on(&watcher).await == 0 },
        )
        .await;
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_cut_off_by_the_request_timeout_leaves_no_consumer_behind() {
    let h = Harness::start_with(|c| c.request_timeout = Duration::from_millis(150)).await;
    flood_log(&h, &["order-a", "order-b", "order-c"], 9_000).await;
    let r = h
        .get("/api/leadership/order-service?window=1h", Some(VIEWER))
        .await;
    // Reading 20,000 records takes longer than the timeout.
    r.expect(504, Some("GATEWAY_TIMEOUT"));
    eventually(
        Duration::from_secs(5),
        "no consumer left behind",
        || async { log_consumers(&h).await == 0 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_reads_never_holds_more_consumers_than_the_cap() {
    let h = Harness::start().await;
    flood_log(&h, &["order-a"], 9_000).await;
    let watcher = h.connect().await;
    let most = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (most, done) = (most.clone(), done.clone());
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(consumers_on(&watcher).await, Ordering::Relaxed);
            }
        })
    };
    let h = Arc::new(h);
    let requests: Vec<_> = (0..40)
        .map(|i| {
            let h = h.clone();
            let path = if i % 4 == 0 {
                "/api/leadership/order-service?window=1h".to_owned()
            } else {
                "/api/instances/order-service/order-a/events?limit=1000".to_owned()
            };
            tokio::spawn(async move { h.get(&path, Some(VIEWER)).await })
        })
        .collect();
    let mut answered = 0;
    for request in requests {
        let r = request.await.unwrap();
        match r.status {
            StatusCode::OK => answered += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                r.expect(503, Some("SERVICE_UNAVAILABLE"));
                assert!(r.headers.contains_key("retry-after"), "{r:?}");
            }
            _ => panic!("unexpected answer: {r:?}"),
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(answered > 0, "some reads are served");
    let most = most.load(Ordering::Relaxed);
    assert!(
        most <= CAP,
        "{most} consumers at once, more than the cap of {CAP}"
    );
    eventually(
        Duration::from_secs(5),
        "no consumer left behind",
        || async { log_consumers(&h).await == 0 },
    )
    .await;
}
