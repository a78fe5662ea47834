//! Every stop path finishes within its shutdown timeout when NATS is gone:
//! a service instance, the monitor and `aegis up` are each started against a
//! real nats-server, the server is killed, and the time from SIGTERM to exit
//! is measured. A Ctrl-C after the stop began forces an immediate exit.

mod common;

use std::time::{Duration, Instant};

use common::{Proc, alive, free_port, pids};

use aegis_testkit::NatsServer;
use futures::StreamExt;
use nix::sys::signal::Signal;

/// The longest any of these processes may take from SIGTERM to exit: the
/// SDK's default shutdown timeout (10 s) plus a margin for a busy machine.
const STOP_BOUND: Duration = Duration::from_secs(15);

/// Waits until a metrics snapshot of the pricing instance counts a request
/// in flight: the call is in its handler.
fn wait_until_in_flight(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = async_nats::connect(url).await.unwrap();
        let mut snapshots = client
            .subscribe("aegis.metrics.pricing-service.>")
            .await
            .unwrap();
        let wait = async {
            while let Some(msg) = snapshots.next().await {
                let snapshot: serde_json::Value = serde_json::from_slice(&msg.payload).unwrap();
                if snapshot["inFlight"].as_u64().unwrap_or(0) > 0 {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("the call never reached the service");
    });
}

#[test]
fn a_service_stops_on_sigterm_after_its_nats_server_died() {
    for kind in ["pricing", "order", "risk"] {
        let mut server = NatsServer::start().unwrap();
        let url = server.url();
        let mut service = Proc::spawn(&["service", kind, "--nats-url", &url]);
        service.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
        server.kill();
        // Let the client notice that the server is gone and start failing
        // heartbeats, as in the reported case.
        service.wait_for("NATS connection lost", Duration::from_secs(10));
        std::thread::sleep(Duration::from_secs(2));
        let took = service.terminate_within(STOP_BOUND);
        eprintln!("{kind}: stopped {took:?} after SIGTERM");
        let out = service.output();
        assert!(
            out.contains("expires with its TTL") || out.contains("expire"),
            "{kind}: the log says what could not be done:\n{out}"
        );
    }
}

#[test]
fn a_second_ctrl_c_forces_the_exit() {
    // A stop that has to wait: a handler is busy for 30 s, so the graceful
    // stop would wait out its 10 s timeout; a Ctrl-C (SIGINT) after the
    // SIGTERM cuts it short. (A second SIGTERM does not: systemd and a
    // dying parent send it more than once without anyone asking twice.)
    let server = NatsServer::start().unwrap();
    let url = server.url();
    let mut service = Proc::spawn(&["service", "pricing", "--nats-url", &url]);
    service.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
    let mut caller = Proc::spawn(&[
        "call",
        "pricing-service",
        "simulate_work",
        r#"{"ms":30000}"#,
        "--timeout-ms",
        "40000",
        "--nats-url",
        &url,
    ]);
    wait_until_in_flight(&url);
    service.signal(Signal::SIGTERM);
    service.wait_for("shutdown requested", Duration::from_secs(5));
    service.signal(Signal::SIGINT);
    // The Ctrl-C forces the exit within 2 s.
    let status = service.exit_within(Duration::from_secs(2));
    assert!(!status.success(), "a forced exit is not a clean one");
    let _ = caller.child.kill();
}

#[test]
fn the_monitor_stops_on_sigterm_after_its_nats_server_died() {
    let mut server = NatsServer::start().unwrap();
    let url = server.url();
    let port = free_port().to_string();
    let mut api = Proc::spawn(&[
        "api",
        "--nats-url",
        &url,
        "--port",
        &port,
        "--bind",
        "127.0.0.1",
        "--insecure-dev",
    ]);
    // Started (not only bound): its connection is up.
    api.wait_for("monitor API listening", Duration::from_secs(30));
    server.kill();
    api.wait_for("NATS connection lost", Duration::from_secs(10));
    std::thread::sleep(Duration::from_secs(2));
    let took = api.terminate_within(STOP_BOUND);
    eprintln!("monitor: stopped {took:?} after SIGTERM");
}

/// `aegis up --single-node` on free ports, with its state in `state`.
fn start_up(state: &std::path::Path) -> Proc {
    Proc::up_single_node("order=2,pricing=1,risk=1", state)
}

#[test]
fn aegis_up_stops_on_sigterm_after_its_nats_node_died() {
    let state = tempfile::tempdir().unwrap();
    let mut up = start_up(state.path());
    let children = pids(state.path());
    let nats = children
        .iter()
        .find(|(n, _)| n.starts_with("nats-"))
        .map(|(_, p)| *p)
        .expect("a NATS child");
    common::signal(nats, Signal::SIGKILL);
    std::thread::sleep(Duration::from_secs(2));
    // Services stop within their 10 s timeout, in parallel; then the
    // monitor and NATS (restarted meanwhile by the supervisor, or not).
    let took = up.terminate_within(Duration::from_secs(25));
    eprintln!("aegis up: stopped {took:?} after SIGTERM:\n{}", up.output());
    for (name, pid) in children.iter().chain(pids(state.path()).iter()) {
        assert!(!alive(*pid), "{name} (pid {pid}) is still running");
    }
}

#[test]
fn a_forced_stop_of_aegis_up_leaves_no_child() {
    let state = tempfile::tempdir().unwrap();
    let mut up = start_up(state.path());
    let children = pids(state.path());
    assert!(children.len() >= 6, "{children:?}");
    up.signal(Signal::SIGTERM);
    up.wait_for("shutdown requested", Duration::from_secs(5));
    up.signal(Signal::SIGINT);
    // A Ctrl-C after the stop began forces the exit within 5 s.
    let status = up.exit_within(Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "the exit was forced");
    let deadline = Instant::now() + Duration::from_secs(5);
    for (name, pid) in &children {
        while alive(*pid) {
            assert!(
                Instant::now() < deadline,
                "{name} (pid {pid}) outlived a forced stop"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
