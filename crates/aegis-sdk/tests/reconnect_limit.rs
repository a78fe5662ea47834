//! `nats.reconnect.max_reconnects` used up: the client stops reconnecting
//! for good, even when the server comes back. The SDK says so at ERROR,
//! [`Connection::is_closed_for_good`] turns true, and (feature `probes`)
//! `/healthz` fails from then on, so an orchestrator restarts the process
//! instead of leaving it out of service forever.

mod common;

use std::time::Duration;

use aegis_sdk::{AegisConfig, Connection};
use common::{Captured, echo_service, eventually, server};

/// The status code `GET path` gets from the probes at `addr`.
#[cfg(feature = "probes")]
async fn status(addr: std::net::SocketAddr, path: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: probes\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {answer:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_reconnect_limit_closes_the_connection_for_good_and_says_so() {
    let logs = Captured::install(tracing::Level::INFO);
    let mut nats = server();
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.request_timeout = Duration::from_secs(2);
    config.nats.reconnect.max_reconnects = Some(2);
    let conn = Connection::connect(config).await.unwrap();
    let service = echo_service(&conn, "limit-service", "limit-1").await;
    assert!(!conn.is_closed_for_good());

    #[cfg(feature = "probes")]
    let probes_at = {
        let probes = aegis_sdk::probes::Probes::new();
        probes.running(&conn, service.registration().map(|r| r.handle()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(probes.serve(listener));
        assert_eq!(status(addr, "/healthz").await, 200);
        addr
    };

    // Two failed tries in a row use the limit up: the first comes at once,
    // the second 50 ms later.
    nats.kill();
    eventually(
        Duration::from_secs(10),
        "the connection is closed for good",
        || {
            let conn = conn.clone();
            async move { conn.is_closed_for_good() }
        },
    )
    .await;
    eventually(Duration::from_secs(5), "the SDK says so at ERROR", || {
        let logs = logs.clone();
        async move {
            logs.text()
                .lines()
                .any(|l| l.contains("ERROR") && l.contains("closed for good"))
        }
    })
    .await;

    // The server comes back; this connection does not.
    nats.restart().unwrap();
    let fresh = common::connect(&nats.url()).await;
    assert!(fresh.is_connected());
    assert!(!fresh.is_closed_for_good());
    assert!(conn.is_closed_for_good());
    assert!(!conn.is_connected());
    #[cfg(feature = "probes")]
    {
        assert_eq!(status(probes_at, "/healthz").await, 503);
        assert_eq!(status(probes_at, "/readyz").await, 503);
    }
    drop(service);
}
