//! Helpers shared by the SDK's integration tests: a real nats-server per test
//! and polling for conditions instead of fixed sleeps.
#![allow(dead_code, unreachable_pub)]

use std::{future::Future, time::Duration};

use aegis_sdk::{AegisConfig, Connection};
use aegis_testkit::NatsServer;

/// Starts a fresh JetStream-enabled server for one test.
pub fn server() -> NatsServer {
    NatsServer::start().expect("start nats-server (run `make bootstrap`)")
}

/// Connects the SDK to `url` with a short request timeout.
pub async fn connect(url: &str) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(2);
    Connection::connect(config).await.expect("connect")
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if cond().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
