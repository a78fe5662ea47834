//! The failover timeline (`GET /api/leadership/{service}`) against a real
//! nats-server: real sticky SDK instances handing leadership over on a
//! graceful stop, a crash told apart by the missing goodbye and measured
//! from the old leader's last metrics snapshot, and bad input.

mod common;

use std::time::Duration;

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    subjects::{log_subject, metrics_subject},
};
use aegis_sdk::{Connection, rpc::Service};
use chrono::Utc;
use common::{Harness, VIEWER, eventually};
use serde_json::{Value, json};

async fn sticky(conn: &Connection, id: &str) -> Service {
    conn.service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("main")
        .heartbeat(Duration::from_millis(300))
        .ttl(Duration::from_secs(2))
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .expect("start a sticky instance")
}

async fn terms(h: &Harness, path: &str) -> Vec<Value> {
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(200, None);
    r.body["terms"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_hands_over_and_the_timeline_says_how_fast() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let path = "/api/leadership/order-service?group=main";
    let first = sticky(&conn, "order-a").await;
    eventually(Duration::from_secs(10), "order-a elected", || async {
        terms(&h, path).await.len() == 1
    })
    .await;
    let second = sticky(&conn, "order-b").await;
    first.shutdown().await.expect("graceful stop");
    eventually(Duration::from_secs(10), "order-b elected", || async {
        terms(&h, path).await.len() == 2
    })
    .await;
    let t = terms(&h, path).await;
    assert_eq!(t[0]["instanceId"], "order-a");
    assert!(
        matches!(t[0]["endReason"].as_str(), Some("resigned" | "stopped")),
        "{t:?}"
    );
    assert!(t[0]["endedAt"].is_string());
    assert!(t[0]["epoch"].as_u64().is_some(), "{t:?}");
    assert_eq!(t[1]["instanceId"], "order-b");
    assert_eq!(t[1]["handoverFrom"], "order-a");
    assert_eq!(t[1]["handoverBasis"], "notice");
    let ms = t[1]["handoverMs"].as_f64().expect("a hand-over time");
    assert!((0.0..2000.0).contains(&ms), "hand-over took {ms} ms");
    assert!(t[1]["endedAt"].is_null(), "order-b still leads: {t:?}");
    assert!(t[1]["epoch"].as_u64() > t[0]["epoch"].as_u64(), "{t:?}");
    second.shutdown().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_vanished_is_superseded_and_measured_from_its_last_snapshot() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let js = conn.jetstream();
    let publish = |subject: String, body: Vec<u8>| {
        let js = js.clone();
        async move {
            js.publish(subject, body.into())
                .await
                .unwrap()
                .await
                .unwrap()
        }
    };
    let elected = |at, epoch: u64| {
        serde_json::to_vec(
            &LogRecord::new(
                at,
                LogLevel::Info,
                LogKind::Elected,
                "elected ACTIVE leader",
            )
            .with_field("epoch", epoch),
        )
        .unwrap()
    };
    let t0 = Utc::now() - chrono::Duration::seconds(5);
    publish(log_subject("order-service", "order-x"), elected(t0, 3)).await;
    // The old leader's last sign of life: a metrics snapshot stored now.
    let snapshot = json!({
        "serviceName": "order-service", "instanceId": "order-x",
        "timestamp": Utc::now(), "uptimeSecs": 5.0, "intervalSecs": 2.0,
        "endpoints": [], "queueDepth": 0, "inFlight": 0, "custom": {}
    });
    publish(
        metrics_subject("order-service", "order-x"),
        serde_json::to_vec(&snapshot).unwrap(),
    )
    .await;
    let t1 = Utc::now() + chrono::Duration::milliseconds(300);
    publish(log_subject("order-service", "order-y"), elected(t1, 7)).await;

    let t = terms(&h, "/api/leadership/order-service").await;
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["endReason"], "superseded");
    assert_eq!(t[1]["handoverBasis"], "lastSeen");
    assert_eq!(t[1]["handoverFrom"], "order-x");
    let ms = t[1]["handoverMs"]
        .as_f64()
        .expect("bounded by the last snapshot");
    assert!((250.0..5000.0).contains(&ms), "{ms} ms");
    assert_eq!(t[1]["epoch"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_route_needs_a_token() {
    let h = Harness::start().await;
    h.get("/api/leadership/order-service", None)
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.get("/api/leadership/order-service?window=soon", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/order-service?group=a.b", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/order-service?other=1", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/Not.A.Service", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    let r = h.get("/api/leadership/quiet-service", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["terms"], json!([]));
    assert_eq!(r.body["windowSecs"], 3600);
    assert_eq!(r.body["truncated"], false);
}
