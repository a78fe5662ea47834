//! `aegis events tail [FILTER]` against a real nats-server running the
//! showcase's users and permissions, and a real SDK publisher: the
//! operator's tool follows `EVENTS` on an ephemeral ordered consumer,
//! prints one line per event (time, subject, id, compact JSON payload),
//! only new events unless `--from-start`, only those FILTER selects, and
//! stops after `--limit N`. It creates no durable consumer and no stream.

mod common;

use std::time::{Duration, Instant};

use aegis::permissions::ServiceRole;
use aegis_sdk::Connection;
use common::{
    Proc,
    operator_bus::{OperatorBus as Bus, run_plain as run},
};
use futures::StreamExt;
use serde_json::json;

/// The service the test's publisher runs as, publishing in `recon`.
const SERVICE: &str = "recon-service";

/// [`SERVICE`]'s role: it publishes in `recon`.
fn recon_role() -> ServiceRole {
    ServiceRole {
        service: SERVICE.to_owned(),
        event_domains: vec!["recon".to_owned()],
        ..Default::default()
    }
}

/// The names of `EVENTS`' consumers that are durable.
async fn durable_consumers(conn: &Connection) -> Vec<String> {
    let stream = conn.jetstream().get_stream("EVENTS").await.unwrap();
    stream
        .consumers()
        .filter_map(|c| async move { c.ok()?.config.durable_name })
        .collect()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_the_events_it_selects_and_changes_nothing() {
    let bus = Bus::start(recon_role());
    let operator = bus.sdk("operator").await;

    // No EVENTS stream yet: a clear error, and the tail does not make one.
    let (code, out, err) = bus.aegis(&["events", "tail", "--limit", "1"]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("no EVENTS stream") && err.contains("aegis init"),
        "{err}"
    );
    assert!(
        operator.jetstream().get_stream("EVENTS").await.is_err(),
        "the tail created the stream"
    );

    aegis::init::create_missing(&operator).await.unwrap();
    let publisher = bus.sdk(&format!("svc-{SERVICE}")).await;
    let events = publisher.events();
    let started = events
        .publish("recon", "started", &json!({ "account": "A1", "n": 1 }))
        .await
        .unwrap();
    let finished = events
        .publish("recon", "finished", &json!({ "account": "A1", "ok": true }))
        .await
        .unwrap();

    // From the start: both, in order, one line each, payload compact.
    let (code, out, err) = bus
        .aegis(&["events", "tail", "--from-start", "--limit", "2"])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    let fields: Vec<&str> = lines[0].split(' ').collect();
    assert!(
        chrono::DateTime::parse_from_rfc3339(fields[0]).is_ok(),
        "starts with the time: {}",
        lines[0]
    );
    assert_eq!(fields[1], "events.recon.started", "{}", lines[0]);
    assert_eq!(fields[2], started.id, "{}", lines[0]);
    assert_eq!(
        fields[3..].join(" "),
        r#"{"account":"A1","n":1}"#,
        "{}",
        lines[0]
    );
    assert!(
        lines[1].contains(&format!("events.recon.finished {} ", finished.id)),
        "{out}"
    );
    assert!(lines[1].ends_with(r#"{"account":"A1","ok":true}"#), "{out}");

    // A filter `domain.action` selects that action only.
    let (code, out, err) = bus
        .aegis(&[
            "events",
            "tail",
            "recon.finished",
            "--from-start",
            "--limit",
            "1",
        ])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("events.recon.finished"), "{out}");

    // By default only new events: started once it follows, it prints the
    // one published after that, not the two stored before.
    let args = bus.args(&["events", "tail", "recon", "--limit", "1"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tail = Proc::spawn(&args);
    tail.wait_for("following events.recon.*", Duration::from_secs(15));
    let later = events
        .publish("recon", "finished", &json!({ "account": "A2" }))
        .await
        .unwrap();
    let status = tail.exit_within(Duration::from_secs(15));
    let out = tail.output();
    assert!(status.success(), "{status}: {out}");
    assert!(out.contains(&later.id), "{out}");
    assert!(
        !out.contains(&started.id) && !out.contains(&finished.id),
        "{out}"
    );

    // No durable consumer made, nothing stored.
    assert_eq!(durable_consumers(&operator).await, Vec::<String>::new());
    let mut stream = operator.jetstream().get_stream("EVENTS").await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 3);

    publisher.drain().await.unwrap();
    operator.drain().await.unwrap();
}

/// Ctrl-C ends a tail without `--limit` at once and cleanly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_stops_on_a_signal() {
    let bus = Bus::start(recon_role());
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let args = bus.args(&["events", "tail"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut tail = Proc::spawn(&args);
    tail.wait_for("following events.>", Duration::from_secs(15));
    let started = Instant::now();
    tail.signal(nix::sys::signal::Signal::SIGINT);
    let status = tail.exit_within(Duration::from_secs(5));
    assert!(status.success(), "{status}: {}", tail.output());
    assert!(started.elapsed() < Duration::from_secs(5));
    operator.drain().await.unwrap();
}

/// A FILTER that is no `domain` or `domain.action` is refused before any
/// connection (nothing listens there), in the SDK's words.
#[test]
fn a_bad_filter_is_a_clear_error_before_connecting() {
    let port = common::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    for (filter, says) in [
        ("Recon", "event domain"),
        ("recon.Done", "event action"),
        ("recon.done.now", "expected {domain}.{action}"),
        ("", "empty"),
    ] {
        let args: Vec<String> = ["events", "tail", filter, "--nats-url", &url]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let (code, out, err) = run(&args);
        assert_eq!(code, Some(1), "{filter:?}: {out}{err}");
        assert!(err.starts_with("error: "), "{filter:?}: {err}");
        assert!(err.contains(says), "{filter:?}: {err}");
        assert!(!err.contains("panicked"), "{filter:?}: {err}");
        assert!(
            !err.contains(&url),
            "{filter:?}: no connection tried: {err}"
        );
    }
}
