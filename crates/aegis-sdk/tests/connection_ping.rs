//! A connection whose server goes silent (a partition, a frozen host) is
//! seen as disconnected within a few ping intervals, not after minutes:
//! the client pings an idle server every `nats.ping_interval` and gives
//! the connection up when two pings in a row go unanswered.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{AegisConfig, Connection};
use common::{eventually, server};

/// With the default settings a frozen server is noticed in seconds (the
/// NATS client's own default, a ping a minute, took three minutes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_server_is_seen_as_gone_within_seconds_by_default() {
    let mut nats = server();
    let config = AegisConfig::with_servers(nats.url());
    let interval = config.nats.ping_interval;
    let conn = Connection::connect(config).await.expect("connect");
    assert!(conn.is_connected());

    nats.pause();
    let paused = Instant::now();
    // Two unanswered pings, then the third tick disconnects: three
    // intervals, and a generous margin for a busy machine.
    eventually(
        interval * 3 + Duration::from_secs(4),
        "the connection to the frozen server is seen as down",
        || {
            let down = !conn.is_connected();
            async move { down }
        },
    )
    .await;
    let took = paused.elapsed();
    nats.resume();
    assert!(
        took >= interval,
        "not before a ping could go unanswered: {took:?}"
    );
}

/// The interval is a setting: a short one notices sooner.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shorter_ping_interval_notices_sooner() {
    let mut nats = server();
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.ping_interval = Duration::from_millis(300);
    let conn = Connection::connect(config).await.expect("connect");

    nats.pause();
    eventually(
        Duration::from_millis(900) + Duration::from_secs(2),
        "the connection to the frozen server is seen as down",
        || {
            let down = !conn.is_connected();
            async move { down }
        },
    )
    .await;
    nats.resume();
    eventually(Duration::from_secs(10), "it reconnects", || {
        let up = conn.is_connected();
        async move { up }
    })
    .await;
}
