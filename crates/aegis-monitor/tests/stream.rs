//! `GET /api/stream` over a real socket: the SSE feed pushes definition
//! changes, instance changes and metrics snapshots as they happen, filters
//! by topic, and accepts the session cookie (browsers' EventSource cannot
//! send an Authorization header).

mod common;

use aegis_contracts::{MetricsSnapshot, subjects::metrics_subject};
use chrono::Utc;
use common::{ADMIN, Events, Harness, VIEWER, new_def};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pushes_definitions_instances_and_metrics() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let client = reqwest::Client::new();
    let unauth = client
        .get(format!("http://{addr}/api/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);

    let response = client
        .get(format!("http://{addr}/api/stream"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut events = Events::new(response);
    let hello = events.next_named("hello").await;
    assert_eq!(
        hello,
        json!({"topics": ["definition", "instance", "metrics"]})
    );

    // A definition created through the API.
    let r = client
        .post(format!("http://{addr}/api/services"))
        .bearer_auth(ADMIN)
        .json(&new_def("live-svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let e = events.next_named("definition").await;
    assert_eq!(e["type"], "definition");
    assert_eq!(e["serviceName"], "live-svc");
    assert_eq!(e["operation"], "PUT");
    assert_eq!(e["definition"]["owner"], "trading-team");
    assert!(e["revision"].as_u64().unwrap() > 0);

    // An instance registering.
    let conn = h.connect().await;
    let svc = conn
        .service("live-svc", "1.0.0")
        .instance_id("live-1")
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .unwrap();
    let e = events.next_named("instance").await;
    assert_eq!(e["type"], "instanceUpserted");
    assert_eq!(e["instance"]["instanceId"], "live-1");

    // A metrics snapshot.
    let snapshot = MetricsSnapshot {
        service_name: "live-svc".into(),
        instance_id: "live-1".into(),
        timestamp: Utc::now(),
        queue_depth: 42,
        ..Default::default()
    };
    conn.jetstream()
        .publish(
            metrics_subject("live-svc", "live-1"),
            serde_json::to_vec(&snapshot).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let e = loop {
        let e = events.next_named("metrics").await;
        if e["snapshot"]["queueDepth"] == 42 {
            break e;
        }
    };
    assert_eq!(e["snapshot"]["instanceId"], "live-1");

    // The instance stopping gracefully.
    svc.shutdown().await.unwrap();
    let e = loop {
        let e = events.next_named("instance").await;
        if e["type"] == "instanceRemoved" {
            break e;
        }
    };
    assert_eq!(
        e,
        json!({"type": "instanceRemoved", "serviceName": "live-svc", "instanceId": "live-1", "reason": "deregistered"})
    );

    // A deletion.
    let r = client
        .delete(format!("http://{addr}/api/services/live-svc"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let e = events.next_named("definition").await;
    assert_eq!(e["operation"], "DELETE");
    assert!(e["definition"].is_null());
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn topics_filter_and_cookie_auth() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let client = reqwest::Client::new();
    let signed_in = client
        .post(format!("http://{addr}/api/session"))
        .json(&json!({ "token": VIEWER }))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    let cookie = signed_in.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let response = client
        .get(format!("http://{addr}/api/stream?topics=definition"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut events = Events::new(response);
    assert_eq!(
        events.next_named("hello").await,
        json!({"topics": ["definition"]})
    );
    // A metrics snapshot is filtered out; the definition arrives.
    let conn = h.connect().await;
    let snapshot = MetricsSnapshot {
        service_name: "f-svc".into(),
        instance_id: "f-1".into(),
        timestamp: Utc::now(),
        ..Default::default()
    };
    conn.jetstream()
        .publish(
            metrics_subject("f-svc", "f-1"),
            serde_json::to_vec(&snapshot).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    let r = client
        .post(format!("http://{addr}/api/services"))
        .bearer_auth(ADMIN)
        .json(&new_def("filtered-svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let e = events.next_named("definition").await;
    assert_eq!(e["serviceName"], "filtered-svc");
    assert!(
        !events.seen.iter().any(|e| e == "metrics"),
        "{:?}",
        events.seen
    );
    stop.cancel();
}
