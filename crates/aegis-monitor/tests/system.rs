//! System routes and the cross-cutting behaviour: health, readiness (also
//! when NATS goes away), status with measured values, Prometheus metrics,
//! the OpenAPI document and Swagger UI, the envelope on 404/405/timeouts,
//! the UI's static files and graceful shutdown over a real socket.

mod common;

use std::time::Duration;

use aegis_monitor::{ErrorCode, serve_on};
use axum::http::{Method, StatusCode, header};
use common::{ADMIN, Harness, VIEWER, eventually, new_def, req};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_status() {
    let h = Harness::start().await;
    let health = h.get("/health", None).await;
    health.expect(200, None);
    assert_eq!(health.body, json!({"status": "ok"}));

    let ready = h.get("/ready", None).await;
    ready.expect(200, None);
    assert_eq!(ready.body["status"], "ready");
    assert!(
        ready.body["checks"]
            .as_object()
            .unwrap()
            .values()
            .all(|v| v == true)
    );

    h.admin(Method::POST, "/api/services", Some(new_def("status-svc")))
        .await
        .expect(201, None);
    // Signed in: the NATS server's identity is included (see hardening.rs
    // for what an anonymous caller gets).
    let status = h.get("/status", Some(VIEWER)).await;
    status.expect(200, None);
    let s = &status.body;
    assert_eq!(s["service"], "aegis-monitor");
    assert_eq!(s["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s["environment"], "local");
    assert_eq!(s["authMode"], "tokens");
    assert!(s["uptimeSecs"].as_f64().unwrap() >= 0.0);
    chrono::DateTime::parse_from_rfc3339(s["startedAt"].as_str().unwrap()).unwrap();
    assert_eq!(s["nats"]["connected"], true);
    assert_eq!(s["nats"]["serverVersion"], aegis_version(&h));
    assert_eq!(s["nats"]["jetstream"], true);
    assert!(s["nats"]["streams"].as_u64().unwrap() >= 3, "{s}");
    assert_eq!(s["definitions"], 1);
    assert_eq!(
        s["instances"],
        json!({"total": 0, "active": 0, "unhealthy": 0, "standby": 0})
    );
    // The environment name is configuration, not a constant.
    let prod = Harness::start_with(|c| c.environment = "prod-eu".into()).await;
    assert_eq!(
        prod.get("/status", None).await.body["environment"],
        "prod-eu"
    );
}

fn aegis_version(h: &Harness) -> String {
    let bin = aegis_testkit::nats_server_binary().unwrap();
    let (a, b, c) = aegis_testkit::server_version(&bin).unwrap();
    let _ = h;
    format!("{a}.{b}.{c}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_when_nats_is_gone() {
    let mut h = Harness::start().await;
    h.get("/ready", None).await.expect(200, None);
    h.nats.kill();
    let app = h.app.clone();
    eventually(Duration::from_secs(10), "503 from /ready", || {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            let r = app
                .oneshot(req(Method::GET, "/ready", None, None))
                .await
                .unwrap();
            r.status() == StatusCode::SERVICE_UNAVAILABLE
        }
    })
    .await;
    let r = h.get("/ready", None).await;
    r.expect(503, Some("NOT_READY"));
    assert_eq!(r.body["error"]["details"]["checks"]["natsConnected"], false);
    // Liveness does not depend on NATS.
    h.get("/health", None).await.expect(200, None);
    // A write while NATS is down is an honest 503, never a success.
    let w = h
        .admin(Method::POST, "/api/services", Some(new_def("down-svc")))
        .await;
    assert!(
        w.status == StatusCode::SERVICE_UNAVAILABLE || w.status == StatusCode::GATEWAY_TIMEOUT,
        "{w:?}"
    );
    // NATS back: ready again.
    h.nats.restart().unwrap();
    let app = h.app.clone();
    eventually(Duration::from_secs(20), "ready again", || {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            let r = app
                .oneshot(req(Method::GET, "/ready", None, None))
                .await
                .unwrap();
            r.status() == StatusCode::OK
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_metrics_count_requests() {
    let h = Harness::start().await;
    h.get("/api/services", Some(VIEWER)).await.expect(200, None);
    h.get("/api/services/nope-svc", Some(VIEWER))
        .await
        .expect(404, None);
    let m = h.get("/metrics", None).await;
    m.expect(200, None);
    assert!(
        m.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = m.body.as_str().unwrap();
    assert!(
        text.contains(
            r#"aegis_monitor_http_requests_total{method="GET",route="/api/services",status="200"}"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"route="/api/services/{name}",status="404""#),
        "{text}"
    );
    assert!(text.contains("aegis_monitor_http_request_duration_seconds_bucket"));
    assert!(text.contains("aegis_monitor_nats_connected 1"), "{text}");
    // Raw paths never become labels (bounded cardinality).
    assert!(!text.contains("nope-svc"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_and_swagger_ui() {
    let h = Harness::start().await;
    let spec = h.get("/api/openapi.json", None).await;
    spec.expect(200, None);
    let paths = spec.body["paths"].as_object().unwrap();
    for p in [
        "/api/services",
        "/api/services/{name}",
        "/api/services/{name}/revision",
        "/api/services/{name}/history",
        "/api/instances",
        "/api/instances/{service}",
        "/api/instances/{service}/{instanceId}",
        "/api/instances/health/summary",
        "/api/instances/status/{status}",
        "/api/instances/{service}/{instanceId}/config",
        "/api/instances/{service}/{instanceId}/events",
        "/api/instances/{service}/{instanceId}/metrics",
        "/api/metrics",
        "/api/stream",
        "/api/session",
        "/health",
        "/ready",
        "/status",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing from the spec");
    }
    assert_eq!(
        spec.body,
        serde_json::to_value(aegis_monitor::openapi()).unwrap()
    );
    let schemas = &spec.body["components"]["schemas"];
    assert_eq!(
        schemas["NewServiceDefinition"]["additionalProperties"],
        false
    );
    let patch = schemas["ServiceDefinitionPatch"]["anyOf"]
        .as_array()
        .unwrap();
    assert_eq!(patch.len(), 3);
    assert!(patch.iter().all(|p| p["additionalProperties"] == false));
    assert!(spec.body["components"]["securitySchemes"]["bearer"].is_object());
    let docs = h.get("/api/docs/", None).await;
    docs.expect(200, None);
    assert!(
        docs.body.as_str().unwrap().contains("swagger"),
        "swagger UI page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framework_errors_use_the_envelope() {
    let h = Harness::start().await;
    h.get("/api/does-not-exist", Some(VIEWER))
        .await
        .expect(404, Some("NOT_FOUND"));
    h.get("/nothing-here", None)
        .await
        .expect(404, Some("NOT_FOUND"));
    let r = h
        .admin(Method::PATCH, "/api/services", Some(json!({})))
        .await;
    r.expect(405, Some("METHOD_NOT_ALLOWED"));
    assert!(r.headers.contains_key(header::ALLOW));
    h.get("/api/instances/status/RUNNING", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get(
        "/api/instances/a-svc/i-1/metrics?window=forever",
        Some(VIEWER),
    )
    .await
    .expect(400, Some("BAD_REQUEST"));
    h.get("/api/instances/a-svc/i-1/events?limit=0", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/instances/a-svc/i-1/events?limit=abc", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/instances/a-svc/i-1/events?nope=1", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/stream?topics=weather", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    // API answers are never cached and say what they are.
    let r = h.get("/api/services", Some(VIEWER)).await;
    assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
    assert_eq!(r.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert!(ErrorCode::ALL.len() >= 19);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_with_504() {
    let h = Harness::start_with(|c| {
        c.request_timeout = Duration::from_millis(300);
        c.control_timeout = Duration::from_secs(10);
    })
    .await;
    // An instance that takes the request and never answers.
    let conn = h.connect().await;
    let _registration = common::register_bare(&h, &conn, "slow-svc", "i-1").await;
    let _silent = conn
        .client()
        .subscribe("aegis.control.slow-svc.i-1.config")
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(conn.client()).await;
    let started = std::time::Instant::now();
    let r = h
        .get("/api/instances/slow-svc/i-1/config", Some(VIEWER))
        .await;
    r.expect(504, Some("GATEWAY_TIMEOUT"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_ui_directory() {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(ui.path().join("index.html"), "<html>home</html>").unwrap();
    std::fs::write(ui.path().join("services.html"), "<html>services</html>").unwrap();
    std::fs::write(ui.path().join("404.html"), "<html>lost</html>").unwrap();
    std::fs::create_dir(ui.path().join("_next")).unwrap();
    std::fs::write(ui.path().join("_next/app.js"), "console.log(1)").unwrap();
    let dir = ui.path().to_owned();
    let h = Harness::start_with(|c| c.ui_dir = Some(dir)).await;
    let home = h.get("/", None).await;
    home.expect(200, None);
    assert_eq!(home.body, Value::String("<html>home</html>".into()));
    assert_eq!(
        h.get("/services", None).await.body,
        Value::String("<html>services</html>".into())
    );
    let js = h.get("/_next/app.js", None).await;
    js.expect(200, None);
    let lost = h.get("/nowhere", None).await;
    assert_eq!(lost.status, 404);
    assert_eq!(lost.body, Value::String("<html>lost</html>".into()));
    let escape = h.get("/../Cargo.toml", None).await;
    assert!(!escape.body.to_string().contains("[package]"));
    // The API is not shadowed by the UI.
    h.get("/api/nowhere", Some(VIEWER))
        .await
        .expect(404, Some("NOT_FOUND"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_socket_and_graceful_shutdown() {
    let h = Harness::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_on(listener, h.state.clone(), shutdown.clone()));
    let client = reqwest::Client::new();
    let r = client
        .get(format!("http://{addr}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client
        .post(format!("http://{addr}/api/services"))
        .bearer_auth(ADMIN)
        .json(&new_def("socket-svc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    // An open SSE stream must not hold the shutdown up.
    let stream = client
        .get(format!("http://{addr}/api/stream"))
        .bearer_auth(VIEWER)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let started = std::time::Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(8), server)
        .await
        .expect("shutdown finished")
        .unwrap()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    drop(stream);
    assert!(
        client
            .get(format!("http://{addr}/health"))
            .send()
            .await
            .is_err(),
        "no longer listening"
    );
}

/// `nats.reconnect.max_reconnects` used up: the monitor's connection is
/// closed for good and stays so when the server comes back. `/health`, what
/// an orchestrator restarts the process on, must then fail, or the monitor
/// lives on out of service forever (`/ready` alone takes it out of service).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_fails_once_the_connection_is_closed_for_good() {
    let mut h = Harness::start_with(|c| c.nats.nats.reconnect.max_reconnects = Some(2)).await;
    h.get("/health", None).await.expect(200, None);
    h.nats.kill();
    eventually(
        Duration::from_secs(10),
        "the connection closed for good",
        || async { h.state.conn().is_closed_for_good() },
    )
    .await;
    h.nats.restart().expect("restart nats-server");
    let health = h.get("/health", None).await;
    assert_eq!(
        health.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        health.body
    );
    assert!(
        health.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("closed for good")),
        "{}",
        health.body
    );
    h.get("/ready", None).await.expect(503, None);
}
