//! The answers hyper (the HTTP/1.1 server under axum) makes itself, before
//! any of the monitor's code runs, and so without the API's error shape:
//! docs/api.md ("Errors") lists them, and this test holds that list true.
//! hyper has no hook for them: on a request head it cannot parse it writes
//! a bare status line (`content-length: 0`) and closes the connection.
//!
//! - a request target over 65,534 bytes: 414;
//! - more than 100 header fields: 431;
//! - a malformed request line: 400.
//!
//! Just under each limit the request reaches the monitor, which answers in
//! its own shape.

mod common;

use std::{net::SocketAddr, time::Duration};

use common::{Harness, VIEWER};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (the request line and headers, without the blank line) on
/// a new connection; the whole answer as text.
async fn raw(addr: SocketAddr, head: &str) -> String {
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(format!("{head}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut answer))
        .await
        .expect("an answer and a closed connection within 10 s")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

fn status(answer: &str) -> &str {
    answer.split(' ').nth(1).unwrap_or("")
}

/// The body of an answer (after the head), as sent.
fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

/// `n` header fields in all (with the request's own Host and Connection).
fn headers(n: usize) -> String {
    let mut h = String::from("Host: monitor");
    for i in 0..n - 2 {
        h.push_str(&format!("\r\nX-H{i}: v"));
    }
    h
}

#[tokio::test]
async fn what_hyper_answers_before_the_app_has_no_body() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let auth = format!("Authorization: Bearer {VIEWER}");

    // The request target: 65,534 bytes reach the app, one more does not.
    let long = |len: usize| format!("/api/services/{}", "a".repeat(len - 14));
    let answer = raw(
        addr,
        &format!("GET {} HTTP/1.1\r\nHost: m\r\n{auth}", long(65_534)),
    )
    .await;
    assert_eq!(status(&answer), "404", "{:.300}", answer);
    assert!(
        body(&answer).contains("\"code\":\"SERVICE_NOT_FOUND\""),
        "{:.300}",
        answer
    );
    let answer = raw(
        addr,
        &format!("GET {} HTTP/1.1\r\nHost: m\r\n{auth}", long(65_535)),
    )
    .await;
    assert_eq!(status(&answer), "414", "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("content-length: 0"),
        "{answer}"
    );
    assert_eq!(body(&answer), "", "{answer}");

    // Header fields: 100 reach the app, 101 do not.
    let answer = raw(addr, &format!("GET /api/nope HTTP/1.1\r\n{}", headers(100))).await;
    assert_eq!(status(&answer), "401", "{answer}");
    assert!(
        body(&answer).contains("\"code\":\"UNAUTHORIZED\""),
        "{answer}"
    );
    let answer = raw(addr, &format!("GET /api/nope HTTP/1.1\r\n{}", headers(101))).await;
    assert_eq!(status(&answer), "431", "{answer}");
    assert_eq!(body(&answer), "", "{answer}");

    // A request line hyper cannot parse.
    let answer = raw(addr, "GET /api/nope HTTP/1.1 extra\r\nHost: m").await;
    assert_eq!(status(&answer), "400", "{answer}");
    assert_eq!(body(&answer), "", "{answer}");
    stop.cancel();
}
