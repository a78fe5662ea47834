//! Every timestamp the API writes has one form, RFC 3339 UTC with
//! milliseconds and `Z` (`2026-12-06T03:01:54.980Z`), as
//! `aegis_contracts::models::rfc3339` promises: a script that compares
//! them as strings, or parses them with one format, must not meet
//! nanoseconds in some fields and milliseconds in others.

mod common;

use std::time::Duration;

use aegis_sdk::rpc::Service;
use axum::http::Method;
use common::{Events, Harness, VIEWER, eventually, req};
use serde_json::{Value, json};

/// `2026-12-06T03:01:54.980Z`: date, time, three decimals, `Z`.
fn has_the_one_form(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 24
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'.',
            23 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

/// Every string in `value` that reads as an RFC 3339 time, with its path.
fn timestamps(value: &Value, path: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) if chrono::DateTime::parse_from_rfc3339(s).is_ok() => {
            found.push((path.to_owned(), s.clone()));
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                timestamps(item, &format!("{path}[{i}]"), found);
            }
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                timestamps(v, &format!("{path}.{k}"), found);
            }
        }
        _ => {}
    }
}

/// The timestamps of `value` not in the one form.
fn odd(value: &Value, what: &str) -> Vec<(String, String)> {
    let mut found = Vec::new();
    timestamps(value, what, &mut found);
    assert!(!found.is_empty(), "{what} has timestamps: {value}");
    found.retain(|(_, s)| !has_the_one_form(s));
    found
}

async fn start_service(conn: &aegis_sdk::Connection) -> Service {
    conn.service("stamp-service", "1.0.0")
        .instance_id("stamp-1")
        .heartbeat(Duration::from_millis(300))
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .expect("start service")
}

#[test]
fn the_form_is_told_apart() {
    assert!(has_the_one_form("2026-12-06T03:01:54.980Z"));
    assert!(!has_the_one_form("2026-12-06T03:01:54.980934240Z"));
    assert!(!has_the_one_form("2026-12-06T03:01:54Z"));
    assert!(!has_the_one_form("2026-12-06T03:01:54.980+00:00"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_timestamp_the_api_writes_has_milliseconds_and_z() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let service = start_service(&conn).await;
    eventually(Duration::from_secs(5), "the instance is listed", || async {
        h.get("/api/instances", Some(VIEWER))
            .await
            .body
            .as_array()
            .is_some_and(|all| !all.is_empty())
    })
    .await;

    let mut wrong = Vec::new();
    let instances = h.get("/api/instances", Some(VIEWER)).await;
    wrong.extend(odd(&instances.body, "/api/instances"));
    let status = h.get("/status", Some(VIEWER)).await;
    wrong.extend(odd(&status.body, "/status"));
    let signed_in = h
        .call(req(
            Method::POST,
            "/api/session",
            None,
            Some(json!({ "token": VIEWER })),
        ))
        .await;
    signed_in.expect(200, None);
    wrong.extend(odd(&signed_in.body, "POST /api/session"));

    // The live stream's digest.
    let (addr, stop) = h.serve().await;
    let mut events = Events::open(addr, "instance").await;
    let digest = events.next_named("digest").await;
    wrong.extend(odd(&digest, "digest"));

    assert!(
        wrong.is_empty(),
        "timestamps not in the one form: {wrong:?}"
    );
    stop.cancel();
    service.shutdown().await.unwrap();
}
