//! The monitor under hostile or careless clients, over real sockets and a
//! real nats-server: slow-header clients are cut off and cannot exhaust
//! the connection slots; `/ready` and `/status` do not turn every anonymous
//! hit into JetStream requests and tell the NATS server's identity only to
//! signed-in callers; the live stream ends when its session lapses;
//! signing out revokes the session on the server; sign-in attempts are
//! limited per client.

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, header},
};
use common::{Harness, VIEWER, req};
use futures::StreamExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A connection that sends a request's headers one byte every 200 ms and
/// never finishes them; returns when the server closes it.
async fn slow_header_client(addr: SocketAddr) -> Instant {
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /health HTTP/1.1\r\nHost: monitor\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        tokio::select! {
            read = socket.read(&mut buf) => match read {
                // Closed (or refused with a 408) by the server.
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if socket.write_all(b"x").await.is_err() {
                    return Instant::now();
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_header_clients_are_cut_off_and_do_not_block_others() {
    let h = Harness::start_with(|c| {
        c.max_connections = 8;
        c.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let (addr, stop) = h.serve().await;
    // Three times as many slow clients as there are connection slots.
    let started = Instant::now();
    let slow: Vec<_> = (0..24)
        .map(|_| tokio::spawn(slow_header_client(addr)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // A normal client is answered once slots free up: within a few
    // header timeouts, not never.
    let asked = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        reqwest::get(format!("http://{addr}/health")),
    )
    .await
    .expect("a normal request is answered while slow clients keep coming")
    .unwrap();
    assert_eq!(r.status(), 200);
    let waited = asked.elapsed();
    assert!(waited < Duration::from_secs(8), "waited {waited:?}");

    // Every slow client was disconnected by the server; none held on for
    // long past the header timeout (three rounds of 8 slots, 1 s each).
    for task in slow {
        let closed_at = tokio::time::timeout(Duration::from_secs(15), task)
            .await
            .expect("the server closed the slow connection")
            .unwrap();
        assert!(
            closed_at.duration_since(started) < Duration::from_secs(12),
            "a slow client held on for {:?}",
            closed_at.duration_since(started)
        );
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_and_status_ask_jetstream_at_most_once_a_second() {
    let h = Harness::start().await;
    // Every JetStream API request in the account is a message on
    // `$JS.API.>`: count the ones /ready and /status make.
    let spy = async_nats::connect(h.nats.url()).await.unwrap();
    let mut sub = spy.subscribe("$JS.API.>").await.unwrap();
    aegis_testkit::wait::server_caught_up(&spy).await;
    // The harness's start filled the cache; let that result age out (the
    // cache keeps it 1 s), so the first hit below must ask JetStream and
    // the count proves the spy sees the probe's requests.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let counted = Arc::new(AtomicUsize::new(0));
    let counter = {
        let counted = counted.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let s = m.subject.as_str();
                if s == "$JS.API.INFO"
                    || s == "$JS.API.STREAM.INFO.KV_service_definitions"
                    || s == "$JS.API.STREAM.INFO.KV_service_registry"
                {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            }
        })
    };
    let started = Instant::now();
    for _ in 0..40 {
        h.get("/ready", None).await.expect(200, None);
        h.get("/status", None).await.expect(200, None);
    }
    let elapsed = started.elapsed();
    spy.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // One probe (three requests) per started second, plus one for the
    // probe in flight at the start and a little background slack.
    let probes = elapsed.as_secs() as usize + 2;
    let n = counted.load(Ordering::SeqCst);
    assert!(
        n <= probes * 3,
        "{n} JetStream requests for 80 hits in {elapsed:?} (at most {} expected)",
        probes * 3
    );
    assert!(n >= 1, "the probe asked JetStream at least once");
    counter.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_the_nats_server_only_to_signed_in_callers() {
    let h = Harness::start().await;
    let anonymous = h.get("/status", None).await;
    anonymous.expect(200, None);
    let nats = &anonymous.body["nats"];
    assert_eq!(nats["connected"], true);
    for hidden in ["serverId", "serverName", "serverVersion", "cluster"] {
        assert!(
            nats.get(hidden).is_none(),
            "{hidden} shown to anyone: {nats}"
        );
    }
    // A wrong token is anonymous too (and still 200: /status is public).
    let wrong = h.get("/status", Some("not-a-token")).await;
    wrong.expect(200, None);
    assert!(wrong.body["nats"].get("serverId").is_none());

    let viewer = h.get("/status", Some(VIEWER)).await;
    let nats = &viewer.body["nats"];
    assert!(
        nats["serverId"].as_str().is_some_and(|s| !s.is_empty()),
        "{nats}"
    );
    assert!(nats["serverName"].as_str().is_some(), "{nats}");
    assert!(nats["serverVersion"].as_str().is_some(), "{nats}");

    // The session cookie counts as signed in.
    let cookie = sign_in(&h, VIEWER, None).await;
    let mut with_cookie = req(Method::GET, "/status", None, None);
    with_cookie
        .headers_mut()
        .insert(header::COOKIE, cookie.parse().unwrap());
    let r = h.call(with_cookie).await;
    assert!(r.body["nats"]["serverId"].is_string(), "{}", r.body);
}

/// Signs in with `token` (from `peer`, if given) and returns the
/// `name=value` of the session cookie.
async fn sign_in(h: &Harness, token: &str, peer: Option<SocketAddr>) -> String {
    let r = h.call(sign_in_request(token, peer)).await;
    r.expect(200, None);
    r.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

fn sign_in_request(token: &str, peer: Option<SocketAddr>) -> Request<Body> {
    let mut r = req(
        Method::POST,
        "/api/session",
        None,
        Some(json!({ "token": token })),
    );
    if let Some(peer) = peer {
        r.extensions_mut().insert(ConnectInfo(peer));
    }
    r
}

/// Reads an SSE response until it ends; returns the event names seen.
async fn read_until_end(response: reqwest::Response) -> Vec<String> {
    let mut names = Vec::new();
    let mut text = String::new();
    let mut body = response.bytes_stream();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else { break };
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
            names.push(name.trim().to_owned());
        }
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_ends_when_its_session_expires() {
    let h = Harness::start_with(|c| c.session_ttl = Duration::from_secs(2)).await;
    let (addr, stop) = h.serve().await;
    let cookie = sign_in(&h, VIEWER, None).await;
    let opened = Instant::now();
    let response = reqwest::Client::new()
        .get(format!("http://{addr}/api/stream"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = tokio::time::timeout(Duration::from_secs(15), read_until_end(response))
        .await
        .expect("the stream ended after the session expired");
    let lasted = opened.elapsed();
    assert_eq!(
        events.first().map(String::as_str),
        Some("hello"),
        "{events:?}"
    );
    assert_eq!(
        events.last().map(String::as_str),
        Some("expired"),
        "{events:?}"
    );
    // It lived while the session did (expiry is in whole seconds, so at
    // least one of the two), and ended soon after.
    assert!(
        lasted >= Duration::from_millis(900),
        "ended after {lasted:?}"
    );
    assert!(lasted < Duration::from_secs(6), "ended after {lasted:?}");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_out_revokes_the_session_on_the_server() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let cookie = sign_in(&h, VIEWER, None).await;
    let with_cookie = |method: Method, path: &str| {
        let mut r = req(method, path, None, None);
        r.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        r
    };
    h.call(with_cookie(Method::GET, "/api/session"))
        .await
        .expect(200, None);
    let stream = reqwest::Client::new()
        .get(format!("http://{addr}/api/stream"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let reading = tokio::spawn(read_until_end(stream));

    h.call(with_cookie(Method::DELETE, "/api/session"))
        .await
        .expect(204, None);
    // The old cookie, replayed, is refused everywhere.
    h.call(with_cookie(Method::GET, "/api/session"))
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.call(with_cookie(Method::GET, "/api/services"))
        .await
        .expect(401, Some("UNAUTHORIZED"));
    // And the stream it opened ends.
    let events = tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the stream ended after sign-out")
        .unwrap();
    assert_eq!(
        events.last().map(String::as_str),
        Some("expired"),
        "{events:?}"
    );
    // Signing in again gives a new session that works.
    let fresh = sign_in(&h, VIEWER, None).await;
    let mut r = req(Method::GET, "/api/session", None, None);
    r.headers_mut()
        .insert(header::COOKIE, fresh.parse().unwrap());
    h.call(r).await.expect(200, None);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_attempts_are_limited_per_client() {
    let h = Harness::start().await;
    let attacker: SocketAddr = "198.51.100.7:50000".parse().unwrap();
    let colleague: SocketAddr = "198.51.100.8:50000".parse().unwrap();
    for n in 1..=10 {
        let r = h.call(sign_in_request("wrong-guess", Some(attacker))).await;
        assert_eq!(r.status, 401, "attempt {n}: {}", r.body);
    }
    let eleventh = h.call(sign_in_request("wrong-guess", Some(attacker))).await;
    eleventh.expect(429, Some("TOO_MANY_REQUESTS"));
    let retry: u64 = eleventh.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    // Once limited, even the right token is refused: a right guess must
    // look like a wrong one.
    h.call(sign_in_request(VIEWER, Some(attacker)))
        .await
        .expect(429, Some("TOO_MANY_REQUESTS"));
    // Another client signs in as usual.
    sign_in(&h, VIEWER, Some(colleague)).await;
    // Bearer tokens on other routes are not affected.
    h.get("/api/services", Some(VIEWER)).await.expect(200, None);
}
