//! Metrics against a real nats-server: the monitor creates `AEGIS_METRICS`,
//! serves the latest snapshot of every live instance, and the history of
//! one instance over a window read back from the stream; a process that is
//! gone, or an earlier one under a restarted id, shows no live figures.

mod common;

use std::time::Duration;

use aegis_contracts::{
    EndpointMetrics, LatencySummary, MetricsSnapshot, ServiceInstance,
    subjects::{METRICS_STREAM, REGISTRY_BUCKET, metrics_subject, registry_key},
};
use aegis_sdk::{Connection, registry::METADATA_HEARTBEAT_MS};
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gone_or_restarted_process_shows_no_live_figures() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let bucket = conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    let put = |record: ServiceInstance| {
        let bucket = bucket.clone();
        async move {
            bucket
                .put(
                    registry_key(&record.service_name, &record.instance_id),
                    serde_json::to_vec(&record).unwrap().into(),
                )
                .await
                .unwrap();
        }
    };
    // restarted-1: a snapshot of its previous process (its last, 5 s ago),
    // then the record of a new process under the same id that has
    // published nothing yet.
    let mut previous = snapshot("pricing-service", "restarted-1", 5);
    previous.timestamp = Utc::now() - chrono::Duration::seconds(5);
    publish(&conn, &previous).await;
    put(ServiceInstance::new(
        "pricing-service",
        "restarted-1",
        "1.0.0",
        Utc::now(),
    ))
    .await;
    // hung-1: announces 200 ms beats and never beats (a killed or hung
    // process, seen without the server's advisories), after one snapshot.
    let mut hung = ServiceInstance::new("pricing-service", "hung-1", "1.0.0", Utc::now());
    hung.metadata
        .insert(METADATA_HEARTBEAT_MS.into(), json!(200));
    put(hung).await;
    publish(&conn, &snapshot("pricing-service", "hung-1", 3)).await;
    // fresh-1: running, its snapshot published last (the feed is ordered:
    // once this one shows, the others have arrived).
    put(ServiceInstance::new(
        "pricing-service",
        "fresh-1",
        "1.0.0",
        Utc::now(),
    ))
    .await;
    publish(&conn, &snapshot("pricing-service", "fresh-1", 1)).await;

    let entry = |list: &Value, id: &str| -> Value {
        list.as_array()
            .and_then(|a| a.iter().find(|e| e["instanceId"] == id).cloned())
            .unwrap_or(Value::Null)
    };
    eventually(
        Duration::from_secs(10),
        "fresh-1 has figures and hung-1 is down",
        || async {
            let list = h.get("/api/metrics", Some(VIEWER)).await.body;
            entry(&list, "fresh-1")["snapshot"].is_object()
                && entry(&list, "hung-1")["status"] == "UNHEALTHY"
        },
    )
    .await;
    let list = h.get("/api/metrics", Some(VIEWER)).await.body;
    assert!(
        entry(&list, "hung-1")["snapshot"].is_null(),
        "a process whose beats stopped shows no live figures: {list}"
    );
    assert!(
        entry(&list, "restarted-1")["snapshot"].is_null(),
        "the previous process's figures are not the new one's: {list}"
    );
    // The new process's first snapshot is shown.
    publish(&conn, &snapshot("pricing-service", "restarted-1", 1)).await;
    eventually(
        Duration::from_secs(5),
        "restarted-1's own figures",
        || async {
            let list = h.get("/api/metrics", Some(VIEWER)).await.body;
            entry(&list, "restarted-1")["snapshot"]["uptimeSecs"] == 1.0
        },
    )
    .await;
}
