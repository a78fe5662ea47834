//! `aegis service --health-listen`: the liveness and readiness probes an
//! orchestrator uses, against a real nats-server. Liveness holds while the
//! instance waits for NATS; readiness is 503 (`starting`) until it runs,
//! 200 while it is connected and registered, 503 when its NATS server is
//! gone. The monitor (`aegis api`) waits for NATS at start too, rather
//! than exiting, and answers its probes meanwhile; a port already taken
//! stops it at once.

mod common;

use std::time::{Duration, Instant};

use aegis_testkit::NatsServer;
use common::{Proc, free_port};

/// Runs `request` to its end on a runtime of its own (these tests drive
/// processes and wait on them, so they are not async).
fn block_on<T>(request: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(request)
}

/// `GET http://{addr}{path}`: the status and the JSON body.
fn get(addr: &str, path: &str) -> (u16, serde_json::Value) {
    block_on(async {
        let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    })
}

/// GETs `path` as a browser navigating to it would (`Accept: text/html`);
/// returns the status, the content type and the body.
fn get_page(addr: &str, path: &str) -> (u16, String, String) {
    block_on(async {
        let r = reqwest::Client::new()
            .get(format!("http://{addr}{path}"))
            .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
            .send()
            .await
            .unwrap();
        let kind = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (r.status().as_u16(), kind, r.text().await.unwrap())
    })
}

/// Polls `path` until it answers `status`; returns the body.
fn until_status(addr: &str, path: &str, status: u16, within: Duration) -> serde_json::Value {
    let deadline = Instant::now() + within;
    loop {
        let answer = block_on(reqwest::get(format!("http://{addr}{path}")));
        if let Ok(r) = answer
            && r.status().as_u16() == status
        {
            drop(r);
            return get(addr, path).1;
        }
        assert!(Instant::now() < deadline, "{path} never answered {status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn liveness_holds_while_waiting_for_nats_and_readiness_says_starting() {
    let addr = format!("127.0.0.1:{}", free_port());
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let mut service = Proc::spawn(&[
        "service",
        "echo",
        "--nats-url",
        &nowhere,
        "--health-listen",
        &addr,
    ]);
    let alive = until_status(&addr, "/healthz", 200, Duration::from_secs(20));
    assert_eq!(alive["alive"], true);
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 503);
    assert_eq!(body["ready"], false);
    assert_eq!(body["reasons"][0], "starting");
    // Unreachable NATS is a wait, not the end: it tries again (and fails
    // the test if it exits first).
    service.wait_for("retrying", Duration::from_secs(20));
    assert!(
        matches!(service.child.try_wait(), Ok(None)),
        "still waiting for NATS:\n{}",
        service.output()
    );
}

#[test]
fn readiness_follows_the_nats_connection() {
    let mut server = NatsServer::start().unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut service = Proc::spawn(&[
        "service",
        "pricing",
        "--nats-url",
        &server.url(),
        "--health-listen",
        &addr,
    ]);
    service.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
    let (status, body) = get(&addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, serde_json::json!({ "ready": true, "reasons": [] }));

    server.kill();
    let body = until_status(&addr, "/readyz", 503, Duration::from_secs(10));
    let reasons = body["reasons"].to_string();
    assert!(reasons.contains("not connected to NATS"), "{body}");
    // Liveness does not follow NATS: an outage must not restart everyone.
    assert_eq!(get(&addr, "/healthz").0, 200);
}

/// `aegis api` without tokens on `port`, for the NATS server at `nats_url`.
fn monitor(nats_url: &str, port: &str) -> Proc {
    Proc::spawn(&[
        "api",
        "--insecure-dev",
        "--nats-url",
        nats_url,
        "--port",
        port,
    ])
}

#[test]
fn the_monitor_waits_for_nats_at_start() {
    // Its server not running yet, as when a cluster and the monitor are
    // deployed together.
    let mut server = NatsServer::start().unwrap();
    server.stop();
    let addr = format!("127.0.0.1:{}", free_port());
    let port = addr.rsplit(':').next().unwrap().to_owned();
    let mut monitor = monitor(&server.url(), &port);
    monitor.wait_for("cannot start yet", Duration::from_secs(20));
    assert!(
        monitor.child.try_wait().unwrap().is_none(),
        "the monitor exited instead of waiting:\n{}",
        monitor.output()
    );
    // While it waits it already listens: alive, not ready, and saying
    // what it waits for (and no more: no address, no error text).
    let (status, health) = get(&addr, "/health");
    assert_eq!(
        (status, &health["status"]),
        (200, &"starting".into()),
        "{health}"
    );
    let (status, ready) = get(&addr, "/ready");
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["error"]["code"], "NOT_READY", "{ready}");
    assert_eq!(ready["error"]["details"]["waitingFor"], "nats", "{ready}");
    let nats_port = server.url().rsplit(':').next().unwrap().to_owned();
    assert!(
        !ready.to_string().contains(&nats_port) && !ready.to_string().contains("127.0.0.1"),
        "the readiness answer names where NATS is: {ready}"
    );
    let (status, services) = get(&addr, "/api/services");
    assert_eq!(status, 503, "{services}");
    assert_eq!(services["error"]["code"], "NOT_READY", "{services}");
    // A browser opening the dashboard gets a page that says so and
    // reloads itself, not a JSON error.
    let (status, kind, page) = get_page(&addr, "/");
    assert_eq!(status, 503, "{page}");
    assert!(kind.starts_with("text/html"), "{kind}: {page}");
    assert!(
        page.contains("starting") && page.contains("http-equiv=\"refresh\""),
        "{page}"
    );
    assert!(
        !page.contains(&nats_port),
        "the page names where NATS is: {page}"
    );
    server.restart().unwrap();
    let ready = until_status(&addr, "/ready", 200, Duration::from_secs(30));
    assert_eq!(ready["status"], "ready", "{ready}");
    // The same listener now serves the whole API.
    assert_eq!(
        get(&addr, "/health"),
        (200, serde_json::json!({"status": "ok"}))
    );
}

#[test]
fn a_monitor_whose_port_is_taken_says_so_at_once() {
    // NATS down too: the port is checked first, not after a minute of
    // waiting for a server.
    let mut server = NatsServer::start().unwrap();
    server.stop();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut monitor = monitor(&server.url(), &port);
    let status = monitor.exit_within(Duration::from_secs(10));
    assert!(!status.success());
    let output = monitor.output();
    assert!(
        output.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{output}"
    );
}
