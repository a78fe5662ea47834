//! What an instance tells the monitor, against a real nats-server: metrics
//! snapshots with real counts and percentiles, lifecycle events, and the live
//! configuration with secrets redacted.

mod common;

use std::time::Duration;

use aegis_sdk::{
    AegisConfig, Connection, Secret,
    contracts::{
        log::{LogKind, LogRecord},
        metrics::MetricsSnapshot,
    },
};
use common::server;
use futures::StreamExt;
use serde_json::{Value, json};

async fn next_event(events: &mut async_nats::Subscriber) -> LogRecord {
    let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event within 5 s")
        .unwrap();
    serde_json::from_slice(&msg.payload).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_events_and_config_reach_nats() {
    let nats = server();
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut snapshots = watcher
        .subscribe("aegis.metrics.quote-service.q-1")
        .await
        .unwrap();
    let mut events = watcher
        .subscribe("aegis.log.quote-service.q-1")
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(&watcher).await;

    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.token = None;
    let conn = Connection::connect(config).await.unwrap();
    let svc = conn
        .service("quote-service", "2.0.0")
        .instance_id("q-1")
        .single_active("desk")
        .metrics_interval(Some(Duration::from_millis(200)))
        .handler("quote", |v: Value| async move { Ok(v) })
        .start()
        .await
        .unwrap();

    // Each lifecycle event is published on its own (the hooks that raise
    // them cannot wait), so "registered" and "elected" may arrive in either
    // order: wait for both (seen once: "elected" first, in make test).
    let mut kinds = Vec::new();
    while !(kinds.contains(&LogKind::Elected) && kinds.contains(&LogKind::Registered)) {
        kinds.push(next_event(&mut events).await.kind);
    }

    for i in 0..5 {
        let _: aegis_sdk::rpc::Reply<Value> = conn
            .rpc()
            .call_active(
                "quote-service",
                "desk",
                "quote",
                &json!({"i": i}),
                &Default::default(),
            )
            .await
            .unwrap();
    }
    let snapshot = loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), snapshots.next())
            .await
            .unwrap()
            .unwrap();
        let s: MetricsSnapshot = serde_json::from_slice(&msg.payload).unwrap();
        let done = s
            .endpoints
            .iter()
            .any(|e| e.name == "quote" && e.successes == 5);
        if done {
            break s;
        }
    };
    assert_eq!(snapshot.service_name, "quote-service");
    assert_eq!(snapshot.instance_id, "q-1");
    let quote = snapshot
        .endpoints
        .iter()
        .find(|e| e.name == "quote")
        .unwrap();
    assert_eq!((quote.requests, quote.errors), (5, 0));

    let reply = watcher
        .request("aegis.control.quote-service.q-1.config", "".into())
        .await
        .unwrap();
    let cfg: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(cfg["service"], "quote-service");
    assert_eq!(cfg["singleActive"]["group"], "desk");
    assert!(cfg["connection"]["nats"]["servers"].is_array());

    svc.shutdown().await.unwrap();
    let mut kinds = Vec::new();
    while !kinds.contains(&LogKind::Deregistered) {
        kinds.push(next_event(&mut events).await.kind);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_config_answer_never_contains_secrets() {
    let nats = aegis_testkit::NatsServer::builder()
        .accounts(false)
        .extra_args(vec!["--auth".into(), "s3cret-token".into()])
        .start()
        .unwrap();
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.token = Some(Secret::new("s3cret-token"));
    let conn = Connection::connect(config).await.unwrap();
    let svc = conn
        .service("quote-service", "2.0.0")
        .instance_id("q-2")
        .handler("quote", |v: Value| async move { Ok(v) })
        .start()
        .await
        .unwrap();
    let reply = conn
        .client()
        .request("aegis.control.quote-service.q-2.config", "".into())
        .await
        .unwrap();
    let text = String::from_utf8(reply.payload.to_vec()).unwrap();
    assert!(!text.contains("s3cret-token"), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    svc.shutdown().await.unwrap();
}

/// Without `AEGIS_LOG` (an instance nobody monitors), records still reach
/// live subscribers, in order and once each: the sender finds that no
/// stream captures them and publishes them on core NATS, instead of
/// sending them again for an acknowledgement that never comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_log_stream_events_reach_live_subscribers_once() {
    use aegis_sdk::{contracts::log::LogLevel, telemetry::Telemetry};

    let nats = server();
    let subject = "aegis.log.quote-service.q-3";
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut events = watcher.subscribe(subject).await.unwrap();
    aegis_testkit::wait::server_caught_up(&watcher).await;
    let conn = common::connect(&nats.url()).await;
    let telemetry = Telemetry::new(&conn, "quote-service", "q-3");
    let started = std::time::Instant::now();
    for i in 0..5 {
        telemetry.event(telemetry.lifecycle(LogLevel::Warn, LogKind::Log, format!("line {i}")));
    }
    assert!(telemetry.flush(Duration::from_secs(5)).await, "all sent");
    eprintln!("5 records sent without a stream in {:?}", started.elapsed());
    // Published after every copy the sender sent, on the same connection.
    let marker = telemetry.lifecycle(LogLevel::Info, LogKind::Log, "marker");
    conn.client()
        .publish(subject, serde_json::to_vec(&marker).unwrap().into())
        .await
        .unwrap();
    let mut seen = Vec::new();
    loop {
        let record = next_event(&mut events).await;
        if record.message == "marker" {
            break;
        }
        seen.push(record.message);
    }
    assert_eq!(seen, ["line 0", "line 1", "line 2", "line 3", "line 4"]);
    assert_eq!(telemetry.dropped(), 0);
}

/// Every handle of one instance on one connection shares one queue (one
/// sender, one run of message ids, one order); another connection, even
/// for the same instance, has its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_of_one_instance_share_a_queue_on_their_connection_only() {
    use aegis_sdk::{contracts::log::LogLevel, telemetry::Telemetry};
    use async_nats::jetstream::{self, stream};

    let nats = server();
    let subject = "aegis.log.quote-service.q-4";
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    jetstream::new(watcher.clone())
        .create_stream(stream::Config {
            name: "AEGIS_LOG".into(),
            subjects: vec!["aegis.log.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut events = watcher.subscribe(subject).await.unwrap();
    aegis_testkit::wait::server_caught_up(&watcher).await;
    let (one, other) = (
        common::connect(&nats.url()).await,
        common::connect(&nats.url()).await,
    );
    let service = Telemetry::new(&one, "quote-service", "q-4");
    let forwarded = Telemetry::new(&one, "quote-service", "q-4");
    let elsewhere = Telemetry::new(&other, "quote-service", "q-4");
    for (i, handle) in [&service, &forwarded, &service, &elsewhere]
        .into_iter()
        .enumerate()
    {
        handle.event(handle.lifecycle(LogLevel::Warn, LogKind::Log, format!("line {i}")));
        assert!(
            handle.flush(Duration::from_secs(5)).await,
            "line {i} stored"
        );
    }

    let mut ids = Vec::new();
    for _ in 0..4 {
        let msg = tokio::time::timeout(Duration::from_secs(5), events.next())
            .await
            .expect("a record within 5 s")
            .unwrap();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .expect("stored records carry their message id")
            .to_string();
        let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
        let (run, seq) = id.rsplit_once('.').expect("{run}.{seq}");
        ids.push((record.message, run.to_owned(), seq.to_owned()));
    }
    let runs: Vec<&str> = ids.iter().map(|(_, run, _)| run.as_str()).collect();
    assert_eq!(
        runs[0], runs[1],
        "one connection's handles share a sender: {ids:?}"
    );
    assert_eq!(runs[0], runs[2], "{ids:?}");
    assert_ne!(runs[0], runs[3], "another connection has its own: {ids:?}");
    let seqs: Vec<&str> = ids.iter().map(|(_, _, seq)| seq.as_str()).collect();
    assert_eq!(seqs[..3], ["0", "1", "2"], "one queue, in order: {ids:?}");
    assert_eq!(
        service.dropped() + forwarded.dropped() + elsewhere.dropped(),
        0
    );
}
