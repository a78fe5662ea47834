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

mod common;

use std::net::SocketAddr;

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, header},
};
use common::{Harness, VIEWER};
use serde_json::Value;

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
