//! Metrics against a real nats-server: the monitor creates `AEGIS_METRICS`,
//! serves the latest snapshot of every live instance, and the history of
//! one instance over a window read back from the stream.

mod common;

use std::time::Duration;

use aegis_contracts::{
    EndpointMetrics, LatencySummary, MetricsSnapshot,
    subjects::{METRICS_STREAM, metrics_subject},
};
use aegis_sdk::Connection;
use chrono::Utc;
use common::{Harness, VIEWER, eventually};
use serde_json::{Value, json};

fn snapshot(service: &str, instance: &str, n: u64) -> MetricsSnapshot {
    MetricsSnapshot {
        service_name: service.into(),
        instance_id: instance.into(),
        timestamp: Utc::now(),
        uptime_secs: n as f64,
        interval_secs: 1.0,
        endpoints: vec![EndpointMetrics {
            name: "getPrice".into(),
            requests: n * 10,
            successes: n * 9,
            errors: n,
            request_rate: 10.0,
            error_rate: 1.0,
            latency_ms: LatencySummary {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                max: 4.0,
                mean: 1.5,
            },
        }],
        queue_depth: n,
        in_flight: 0,
        custom: Default::default(),
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_snapshot_per_live_instance() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    // The monitor created the stream with the settings.
    let mut stream = conn.jetstream().get_stream(METRICS_STREAM).await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, ["aegis.metrics.>"]);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));

    let svc = conn
        .service("pricing-service", "1.0.0")
        .instance_id("pricing-1")
        .handler("getPrice", |_: Value| async move { Ok(json!(1)) })
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "instance listed", || async {
        h.get("/api/metrics", Some(VIEWER))
            .await
            .body
            .as_array()
            .map_or(0, Vec::len)
            == 1
    })
    .await;
    // Before any snapshot of ours: the instance with whatever it published
    // (null until its SDK publishes one).
    for n in 1..=3 {
        publish(&conn, &snapshot("pricing-service", "pricing-1", n)).await;
    }
    // A snapshot of an instance that is not registered is not "live".
    publish(&conn, &snapshot("ghost-service", "ghost-1", 7)).await;
    eventually(Duration::from_secs(5), "latest snapshot", || async {
        h.get("/api/metrics", Some(VIEWER)).await.body[0]["snapshot"]["queueDepth"] == 3
    })
    .await;
    let r = h.get("/api/metrics", Some(VIEWER)).await;
    r.expect(200, None);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    let entry = &list[0];
    assert_eq!(entry["serviceName"], "pricing-service");
    assert_eq!(entry["instanceId"], "pricing-1");
    assert_eq!(entry["status"], "ACTIVE");
    let ep = &entry["snapshot"]["endpoints"][0];
    assert_eq!(ep["name"], "getPrice");
    assert_eq!(ep["requests"], 30);
    assert_eq!(ep["successes"], 27);
    assert_eq!(ep["errors"], 3);
    assert_eq!(ep["requestRate"], 10.0);
    assert_eq!(ep["errorRate"], 1.0);
    assert_eq!(ep["latencyMs"]["p99"], 3.0);
    drop(svc);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_knows_the_latest_at_once() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let _svc = conn
        .service("risk-service", "1.0.0")
        .instance_id("risk-1")
        .handler("check", |_: Value| async move { Ok(json!(true)) })
        .start()
        .await
        .unwrap();
    for n in 1..=5 {
        publish(&conn, &snapshot("risk-service", "risk-1", n)).await;
    }
    // A second monitor on the same NATS reads the stream, not the first one.
    let other = h.replica().await;
    let get = |path: &'static str| {
        let other = other.clone();
        async move {
            common::call_app(
                &other,
                common::req(axum::http::Method::GET, path, Some(VIEWER), None),
            )
            .await
        }
    };
    eventually(Duration::from_secs(5), "second replica sees it", || async {
        let body = get("/api/metrics").await.body;
        body.as_array().map_or(0, Vec::len) == 1 && body[0]["snapshot"]["queueDepth"] == 5
    })
    .await;
    let hist = get("/api/instances/risk-service/risk-1/metrics?window=5m").await;
    assert_eq!(hist.body["snapshots"].as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_over_a_window() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    for n in 1..=40 {
        publish(&conn, &snapshot("order-service", "order-1", n)).await;
        publish(&conn, &snapshot("order-service", "order-2", n)).await;
    }
    let path = "/api/instances/order-service/order-1/metrics";
    let r = h.get(&format!("{path}?window=15m"), Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["serviceName"], "order-service");
    assert_eq!(r.body["instanceId"], "order-1");
    assert_eq!(r.body["windowSecs"], 900);
    let snaps = r.body["snapshots"].as_array().unwrap();
    assert_eq!(snaps.len(), 40);
    assert_eq!(snaps[0]["queueDepth"], 1);
    assert_eq!(snaps[39]["queueDepth"], 40);
    assert!(snaps.iter().all(|s| s["instanceId"] == "order-1"));
    // Default window, and a limit keeps the newest.
    let r = h.get(&format!("{path}?limit=5"), Some(VIEWER)).await;
    let depths: Vec<u64> = r.body["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["queueDepth"].as_u64().unwrap())
        .collect();
    assert_eq!(depths, [36, 37, 38, 39, 40]);
    assert_eq!(r.body["windowSecs"], 900);
    // A window that starts after the last snapshot is empty.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let r = h.get(&format!("{path}?window=1s"), Some(VIEWER)).await;
    assert_eq!(r.body["snapshots"], json!([]));
    // Unknown instance: empty history, not an error.
    let r = h
        .get("/api/instances/order-service/nobody/metrics", Some(VIEWER))
        .await;
    r.expect(200, None);
    assert_eq!(r.body["snapshots"], json!([]));
    // Windows are clamped to what the stream keeps.
    let r = h.get(&format!("{path}?window=2h"), Some(VIEWER)).await;
    assert_eq!(r.body["windowSecs"], 3600);
    assert_eq!(r.body["snapshots"].as_array().unwrap().len(), 40);
    let r = h.get(&format!("{path}?window="), Some(VIEWER)).await;
    assert_eq!(r.body["windowSecs"], 900);
    for bad in ["window=abc", "window=-5m", "limit=0", "limit=2001", "x=1"] {
        h.get(&format!("{path}?{bad}"), Some(VIEWER))
            .await
            .expect(400, Some("BAD_REQUEST"));
    }
}
