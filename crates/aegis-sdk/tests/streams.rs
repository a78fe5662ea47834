//! Stream limits against a real nats-server: `EVENTS`, `COMMANDS` and
//! `DEAD_LETTER` are created bounded by the configured limits, an unbounded
//! stream (made so by hand) is kept as it is, the server enforces them
//! (`COMMANDS` refuses new commands when full rather than dropping queued
//! ones), and durable consumers say what they are — including one an older
//! version created without a delivery limit.

mod common;

use std::time::Duration;

use aegis_sdk::{
    AegisConfig, Connection, StreamLimits, StreamsConfig,
    commands::{Command, CommandError, Progress},
    events::{DeliveryMode, Event},
};
use async_nats::jetstream::stream;
use common::server;
use serde_json::{Value, json};

async fn connect_with(url: &str, streams: StreamsConfig) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(2);
    config.streams = streams;
    Connection::connect(config).await.unwrap()
}

async fn stream_config(conn: &Connection, name: &str) -> stream::Config {
    conn.jetstream()
        .get_stream(name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone()
}

fn assert_bounded(config: &stream::Config, limits: &StreamLimits) {
    assert_eq!(config.max_age, limits.max_age, "{}", config.name);
    assert_eq!(config.max_bytes, limits.max_bytes as i64, "{}", config.name);
    assert_eq!(
        config.max_messages, limits.max_messages as i64,
        "{}",
        config.name
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_bounded_and_consumers_described() {
    let nats = server();
    let defaults = StreamsConfig::default();
    let conn = connect_with(&nats.url(), defaults.clone()).await;
    let sub = conn
        .events()
        .subscribe::<Value>("risk-service", "order.*", DeliveryMode::Broadcast)
        .instance_id("risk-1")
        .handler(|_e: Event<Value>| async { Ok(()) })
        .start()
        .await
        .unwrap();
    let worker = conn
        .commands()
        .worker("order-service")
        .handler("noop", |_c: Command<Value>, _p: Progress| async {
            Ok(json!(null))
        })
        .start()
        .await
        .unwrap();

    assert_bounded(&stream_config(&conn, "EVENTS").await, &defaults.events);
    assert_bounded(&stream_config(&conn, "COMMANDS").await, &defaults.commands);
    assert_bounded(
        &stream_config(&conn, "DEAD_LETTER").await,
        &defaults.dead_letter,
    );
    assert_eq!(
        stream_config(&conn, "COMMANDS").await.discard,
        stream::DiscardPolicy::New
    );

    let js = conn.jetstream();
    let events = js.get_stream("EVENTS").await.unwrap();
    let info = events.consumer_info(sub.consumer_name()).await.unwrap();
    assert_eq!(
        info.config.description.as_deref(),
        Some("Aegis events of risk-service matching order.* (broadcast)")
    );
    let commands = js.get_stream("COMMANDS").await.unwrap();
    let info = commands
        .consumer_info("order-service_commands")
        .await
        .unwrap();
    assert_eq!(
        info.config.description.as_deref(),
        Some("Aegis commands of order-service")
    );
    sub.shutdown().await;
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_stream_is_kept_and_configured_limits_are_enforced() {
    let nats = server();
    // EVENTS made unbounded by hand: no size limits at all.
    let raw = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    raw.create_stream(stream::Config {
        name: "EVENTS".into(),
        subjects: vec!["events.>".into()],
        max_age: Duration::from_secs(7 * 24 * 3600),
        ..Default::default()
    })
    .await
    .unwrap();
    let streams = StreamsConfig {
        events: StreamLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 8 * 1024 * 1024,
            max_messages: 50,
        },
        commands: StreamLimits {
            max_age: Duration::from_secs(3600),
            max_bytes: 1024 * 1024,
            max_messages: 2,
        },
        ..Default::default()
    };
    let conn = connect_with(&nats.url(), streams.clone()).await;
    conn.events().ensure_stream().await.unwrap();
    let events = stream_config(&conn, "EVENTS").await;
    assert_eq!(
        (events.max_bytes, events.max_messages),
        (-1, -1),
        "bounding it would delete its oldest messages: it is kept"
    );
    // Created anew, it gets the configured limits.
    raw.delete_stream("EVENTS").await.unwrap();
    conn.events().ensure_stream().await.unwrap();
    let events = stream_config(&conn, "EVENTS").await;
    assert_eq!(events.max_bytes, 8 * 1024 * 1024);
    assert_eq!(events.max_messages, 50);
    assert_eq!(events.max_age, Duration::from_secs(3600));
    for n in 0..60 {
        conn.events()
            .publish("price", "updated", &json!({"n": n}))
            .await
            .unwrap();
    }
    let mut stream = conn.jetstream().get_stream("EVENTS").await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 50, "the oldest ten were dropped");
    assert_eq!(state.first_sequence, 11);

    // A full COMMANDS refuses the next command; the queued ones stay.
    for n in 0..2 {
        conn.commands()
            .send("idle-service", "work", &json!(n), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let refused = conn
        .commands()
        .send("idle-service", "work", &json!(2), Duration::from_secs(60))
        .await;
    assert!(
        matches!(refused, Err(CommandError::Publish { .. })),
        "{refused:?}"
    );
    let mut commands = conn.jetstream().get_stream("COMMANDS").await.unwrap();
    assert_eq!(commands.info().await.unwrap().state.messages, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_consumer_gets_this_versions_settings() {
    let nats = server();
    let conn = connect_with(&nats.url(), StreamsConfig::default()).await;
    // The durable consumer as an older version created it: unlimited
    // deliveries, no description.
    let events = conn.events().ensure_stream().await.unwrap();
    events
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("risk-service_order_filled".into()),
            filter_subject: "events.order.filled".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ack_wait: Duration::from_secs(30),
            max_deliver: -1,
            ..Default::default()
        })
        .await
        .unwrap();
    let sub = conn
        .events()
        .subscribe::<Value>("risk-service", "order.filled", DeliveryMode::Compete)
        .handler(|_e: Event<Value>| async { Ok(()) })
        .start()
        .await
        .unwrap();
    assert_eq!(sub.consumer_name(), "risk-service_order_filled");
    let info = events.consumer_info(sub.consumer_name()).await.unwrap();
    assert_eq!(
        info.config.max_deliver,
        i64::from(aegis_sdk::events::DEFAULT_MAX_DELIVER)
    );
    assert!(info.config.description.is_some());
    sub.shutdown().await;
}
