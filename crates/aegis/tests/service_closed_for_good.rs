//! `aegis service` whose NATS connection is closed for good (its
//! `nats.reconnect.max_reconnects` used up: the client never reconnects,
//! even once the server is back) exits non-zero saying so, so that it is
//! restarted by whatever runs it, not only by an orchestrator watching
//! `/healthz`: left running, it would serve nothing for ever.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::{Proc, free_port};

#[test]
fn a_service_whose_connection_is_closed_for_good_exits_saying_so() {
    let mut server = NatsServer::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("aegis.toml");
    std::fs::write(&config, "[nats.reconnect]\nmax_reconnects = 2\n").unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut service = Proc::spawn(&[
        "service",
        "echo",
        "--nats-url",
        &server.url(),
        "--config",
        config.to_str().unwrap(),
        "--health-listen",
        &addr,
        "--instance-id",
        "closed-1",
    ]);
    service.wait_for("started", Duration::from_secs(20));

    // Two failed tries in a row use the limit up (the first at once, the
    // second 50 ms later); the instance's stop is bounded by its shutdown
    // timeout (10 s) however NATS is.
    server.kill();
    let status = service.exit_within(Duration::from_secs(20));
    let out = service.output();
    assert_eq!(status.code(), Some(1), "{status}\n{out}");
    let error = out
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line:\n{out}"));
    assert!(error.contains("closed for good"), "{error}");
    assert!(error.contains("max_reconnects"), "{error}");
}
