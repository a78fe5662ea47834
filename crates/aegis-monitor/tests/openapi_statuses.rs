//! The statuses the monitor gives to a whole kind of request, whatever its
//! route, are in the OpenAPI document for every operation that gives them:
//! a client generated from the document, or a proxy checking answers
//! against it, meets no undocumented status. Each test sends the kind of
//! request to every operation the document lists and compares.
//!
//! - 413: a declared body over 64 KiB, on any route (also one that takes
//!   no body, and before authentication).
//! - 429: a right bearer token from a client whose budget for wrong tokens
//!   is used up, on every route that checks a token and on `/status`.
//! - 503: any request while the monitor is starting (`NOT_READY`, NATS
//!   not reachable yet), on every route but `/health`.
//! - 504: a request that outlasts `--request-timeout`, as every route but
//!   the live stream may while NATS does not answer.

mod common;

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, header},
};
use common::{ADMIN, Harness, VIEWER};
use serde_json::{Value, json};

/// Every operation of the document: method, path template, and the path
/// with each `{parameter}` filled in.
fn operations(spec: &Value) -> Vec<(Method, String, String)> {
    let mut found = Vec::new();
    for (template, item) in spec["paths"].as_object().unwrap() {
        let mut path = String::new();
        let mut rest = template.as_str();
        while let Some(open) = rest.find('{') {
            path.push_str(&rest[..open]);
            path.push('x');
            rest = &rest[rest[open..].find('}').unwrap() + open + 1..];
        }
        path.push_str(rest);
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                found.push((m, template.clone(), path.clone()));
            }
        }
    }
    assert!(found.len() > 25, "{} operations", found.len());
    found
}

/// The description of `status` for `method template`, if it is listed.
fn documented<'a>(
    spec: &'a Value,
    method: &Method,
    template: &str,
    status: u16,
) -> Option<&'a str> {
    spec["paths"][template][method.as_str().to_lowercase()]["responses"][status.to_string()]
        .get("description")
        .and_then(Value::as_str)
}

/// Whether the operation names a bearer token among its credentials (its
/// own `security`, or the document's).
fn takes_bearer(spec: &Value, method: &Method, template: &str) -> bool {
    let operation = &spec["paths"][template][method.as_str().to_lowercase()];
    let security = operation.get("security").unwrap_or(&spec["security"]);
    security
        .as_array()
        .unwrap()
        .iter()
        .any(|requirement| requirement.get("bearer").is_some())
}

fn from(peer: SocketAddr, mut request: Request<Body>) -> Request<Body> {
    request.extensions_mut().insert(ConnectInfo(peer));
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_413_of_a_large_body() {
    let h = Harness::start().await;
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    let mut undocumented = Vec::new();
    for (method, template, path) in operations(&spec) {
        let body = vec![b'x'; 70_000];
        let request = Request::builder()
            .method(method.clone())
            .uri(&path)
            .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"))
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body))
            .unwrap();
        let reply = h
            .call(from("192.0.2.1:1000".parse().unwrap(), request))
            .await;
        assert_eq!(reply.status, 413, "{method} {path}: {}", reply.body);
        assert_eq!(reply.code(), "PAYLOAD_TOO_LARGE", "{method} {path}");
        if documented(&spec, &method, &template, 413).is_none() {
            undocumented.push(format!("{method} {template}"));
        }
    }
    assert!(
        undocumented.is_empty(),
        "413 served, not documented: {undocumented:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_that_checks_a_token_documents_its_429() {
    let h = Harness::start().await;
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    let guesser: SocketAddr = "192.0.2.2:1000".parse().unwrap();
    // The budget of wrong tokens (--sign-in-per-minute, 10) used up.
    for _ in 0..10 {
        let r = h
            .call(from(
                guesser,
                common::req(Method::GET, "/api/services", Some("wrong-token"), None),
            ))
            .await;
        r.expect(401, Some("UNAUTHORIZED"));
    }
    let mut mismatched = Vec::new();
    for (method, template, path) in operations(&spec) {
        let body = (method == Method::POST && path == "/api/session")
            .then(|| serde_json::json!({ "token": VIEWER }));
        let request = common::req(method.clone(), &path, Some(VIEWER), body);
        let reply = h.call(from(guesser, request)).await;
        let served = reply.status == 429;
        let listed = documented(&spec, &method, &template, 429);
        // Every route that checks a bearer token, /status (which reads
        // one) and signing in (which checks the one in its body) refuse
        // the guesser; the other public routes do not look.
        let checks = takes_bearer(&spec, &method, &template)
            || template == "/api/session" && method == Method::POST;
        if served != checks {
            mismatched.push(format!(
                "{method} {template}: {} (checks a token: {checks})",
                reply.status
            ));
        }
        if served {
            assert_eq!(reply.code(), "TOO_MANY_REQUESTS", "{method} {path}");
            assert!(
                reply.headers.contains_key(header::RETRY_AFTER),
                "{method} {path}"
            );
            match listed {
                Some(description) if description.contains("wrong") => {}
                Some(description) => mismatched.push(format!(
                    "{method} {template}: 429 {description:?} does not say wrong tokens get it"
                )),
                None => mismatched.push(format!("{method} {template}: 429 served, not documented")),
            }
        }
    }
    assert!(mismatched.is_empty(), "{mismatched:#?}");
}

/// The path of `template` with each `{parameter}` filled in with a valid
/// name or id (so the request reaches what it asks of NATS), and the body
/// the operation takes, if any.
fn valid_request(method: &Method, template: &str) -> (String, Option<Value>) {
    let path = template
        .replace("{service}", "order-service")
        .replace("{name}", "order-service")
        .replace("{instanceId}", "order-1")
        .replace("{status}", "ACTIVE");
    let body = match (method.as_str(), template) {
        ("POST", "/api/services") => Some(common::new_def("probe-service")),
        ("POST", "/api/session") => Some(json!({ "token": VIEWER })),
        ("PUT" | "PATCH", _) => Some(json!({ "description": "changed" })),
        _ => None,
    };
    (path, body)
}

/// While the monitor is starting (here: its NATS never answers) every
/// route but `/health` answers 503 `NOT_READY` with `Retry-After`, so
/// every operation that does lists a 503 that says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_documents_the_503_of_a_monitor_still_starting() {
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    // A port nobody listens on: the monitor keeps trying to start.
    let nats_port = free_port();
    let mut config = common::config(&format!("nats://127.0.0.1:{nats_port}"));
    config.port = free_port();
    config.startup_timeout = std::time::Duration::from_secs(120);
    let base = format!("http://127.0.0.1:{}", config.port);
    let shutdown = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(aegis_monitor::serve(config, shutdown.clone()));
    let client = reqwest::Client::new();
    let mut up = false;
    for _ in 0..200 {
        if client.get(format!("{base}/health")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(up, "the starting monitor does not listen");
    let mut mismatched = Vec::new();
    for (method, template, _) in operations(&spec) {
        let (path, body) = valid_request(&method, &template);
        let mut request = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(ADMIN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let reply = request.send().await.unwrap();
        let status = reply.status().as_u16();
        let retry_after = reply.headers().contains_key(header::RETRY_AFTER);
        if template == "/health" {
            assert_eq!(status, 200, "GET /health while starting");
            continue;
        }
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 503, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "NOT_READY", "{method} {path}");
        assert!(retry_after, "{method} {path}: no Retry-After");
        match documented(&spec, &method, &template, 503) {
            Some(description) if description.contains("starting") => {}
            Some(description) => mismatched.push(format!(
                "{method} {template}: 503 {description:?} does not say a starting monitor gives it"
            )),
            None => mismatched.push(format!("{method} {template}: 503 served, not documented")),
        }
    }
    shutdown.cancel();
    let _ = serving.await;
    assert!(mismatched.is_empty(), "{mismatched:#?}");
}

/// A request that outlasts the request timeout is answered 504
/// `GATEWAY_TIMEOUT`. With NATS frozen (it holds the connection and
/// answers nothing) and a 1 s request timeout, every operation is sent at
/// once: each 503 or 504 it gives is documented, and every operation but
/// the live stream lists the request timeout's 504 (what a route waits
/// on can change; the timeout wraps them all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_that_can_time_out_documents_its_504() {
    let mut h = Harness::start_with(|c| {
        c.request_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    let mut mismatched = Vec::new();
    for (method, template, _) in operations(&spec) {
        let listed = documented(&spec, &method, &template, 504);
        match (template.as_str(), listed) {
            ("/api/stream", None) => {}
            ("/api/stream", Some(_)) => mismatched.push("GET /api/stream: lists a 504".to_owned()),
            (_, Some(description)) if description.contains("--request-timeout") => {}
            (_, Some(description)) => mismatched.push(format!(
                "{method} {template}: 504 {description:?} does not name the request timeout"
            )),
            (_, None) => mismatched.push(format!("{method} {template}: no 504 listed")),
        }
    }
    h.nats.pause();
    let calls = operations(&spec)
        .into_iter()
        .filter(|(_, template, _)| template != "/api/stream")
        .map(|(method, template, _)| {
            let (path, body) = valid_request(&method, &template);
            let token = if method == Method::GET { VIEWER } else { ADMIN };
            let request = common::req(method.clone(), &path, Some(token), body);
            let app = h.app.clone();
            async move {
                let reply = common::call_app(&app, request).await;
                (method, template, reply)
            }
        });
    let replies = futures::future::join_all(calls).await;
    h.nats.resume();
    let mut timed_out = 0;
    for (method, template, reply) in replies {
        let status = reply.status.as_u16();
        if status == 504 {
            timed_out += 1;
        }
        if (status == 503 || status == 504)
            && documented(&spec, &method, &template, status).is_none()
        {
            mismatched.push(format!(
                "{method} {template}: {status} {} served, not documented",
                reply.code()
            ));
        }
    }
    assert!(timed_out > 0, "no request timed out while NATS was frozen");
    assert!(mismatched.is_empty(), "{mismatched:#?}");
}

/// A loopback port nobody listens on (bound, then let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
