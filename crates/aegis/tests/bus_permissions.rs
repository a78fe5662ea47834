//! The bus's permission model against a real nats-server running the users
//! `aegis up` generates (`aegis::permissions`): who is refused what, and
//! that the real services and the monitor still do all their work with
//! their restricted credentials.
//!
//! A refusal is observed as the server states it: an `-ERR 'Permissions
//! Violation ...'` sent to the offending client (awaited through the
//! client's event callback), and for writes also as the absence of the
//! value afterwards.

mod common;

use std::time::Duration;

use aegis_sdk::{AegisConfig, ConnectError, Connection, Secret, rpc::CallOptions};
use aegis_testkit::wait::{PATIENCE, eventually};
use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use common::showcase_bus::ShowcaseBus;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const ADMIN: &str = "admin-token-for-tests-0123456789";

async fn kv_value(conn: &Connection, bucket: &str, key: &str) -> Option<bytes::Bytes> {
    let store = conn.jetstream().get_key_value(bucket).await.unwrap();
    store.get(key).await.unwrap()
}

#[tokio::test]
async fn clients_without_or_with_wrong_credentials_are_refused_at_once() {
    let bus = ShowcaseBus::start();

    let anonymous = AegisConfig::with_servers(bus.server.url());
    let err = Connection::connect(anonymous).await.unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    println!(
        "{:<20} connect without credentials   REFUSED: {err}",
        "(anonymous)"
    );
    assert!(err.to_string().contains("AEGIS_NATS_PASSWORD"), "{err}");

    let mut wrong = bus.config("svc-order-service");
    wrong.nats.password = Some(Secret::new("not-the-password"));
    let started = std::time::Instant::now();
    let err = Connection::connect(wrong).await.unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("user 'svc-order-service'"), "{text}");
    assert!(!text.contains("not-the-password"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "no retry loop");
    println!(
        "{:<20} connect with a wrong password   REFUSED: {text}",
        "svc-order-service"
    );
}

#[tokio::test]
async fn a_service_cannot_touch_what_another_service_owns() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    // risk-service creates its limits bucket; pricing must not write it.
    let _risk = aegis_trading::risk::start(
        &bus.sdk("svc-risk-service").await,
        aegis_trading::risk::RiskOptions {
            instance_id: Some("risk-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "risk-service starts with its own credentials: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });

    let mut pricing = bus.probe("svc-pricing-service").await;
    let forged = br#"{"serviceName":"order-service","instanceId":"evil","status":"ACTIVE","epoch":999999999}"#;
    for (attempt, subject) in [
        (
            "write order-service's registry key",
            "$KV.service_registry.service-instances.order-service.evil",
        ),
        (
            "write order-service's election key",
            "$KV.service_elections.sticky-active.order-service.default",
        ),
        ("write risk_limits", "$KV.risk_limits.limits"),
        ("publish an order event", "events.order.filled"),
        ("call order-service", "rpc.order-service.create_order"),
        (
            "publish a control request",
            "aegis.control.order-service.order-1.config",
        ),
    ] {
        pricing.publish_refused(attempt, subject, forged).await;
    }
    pricing
        .subscribe_refused("serve order-service's RPCs", "rpc.order-service.>")
        .await;
    pricing
        .subscribe_refused(
            "listen to order-service's control",
            "aegis.control.order-service.>",
        )
        .await;
    // Through the JetStream API too: deleting another's stream or consumer.
    pricing
        .publish_refused(
            "delete the EVENTS stream",
            "$JS.API.STREAM.DELETE.EVENTS",
            b"",
        )
        .await;
    pricing
        .publish_refused(
            "delete a consumer of EVENTS",
            "$JS.API.CONSUMER.DELETE.EVENTS.risk-1",
            b"",
        )
        .await;

    // Nothing landed.
    assert!(
        kv_value(
            &operator,
            "service_registry",
            "service-instances.order-service.evil"
        )
        .await
        .is_none()
    );
    assert!(
        kv_value(
            &operator,
            "service_elections",
            "sticky-active.order-service.default"
        )
        .await
        .is_none()
    );
    let limits = kv_value(&operator, "risk_limits", "limits").await;
    assert_ne!(limits.as_deref(), Some(&forged[..]));
}

/// A service pulls, acknowledges, changes or deletes only its own durable
/// consumers: the consumer-name token of every JetStream subject that
/// carries one is granted exactly, and the forms that hide the name
/// (`CONSUMER.DURABLE.CREATE`, `CONSUMER.CREATE.{stream}` without a name,
/// whose payload may name any consumer) are refused.
#[tokio::test]
async fn a_service_uses_only_its_own_durable_consumers() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    // order-service makes its command queue as its worker does.
    let order = bus.sdk("svc-order-service").await;
    let queue = order
        .jetstream()
        .get_stream("COMMANDS")
        .await
        .unwrap()
        .create_consumer(async_nats::jetstream::consumer::pull::Config {
            durable_name: Some("order-service_commands".into()),
            filter_subject: "commands.order-service.*".into(),
            ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("order-service creates its own command queue");
    operator
        .jetstream()
        .publish(
            "commands.order-service.cancel_all",
            r#"{"for":"order-service only"}"#.into(),
        )
        .await
        .unwrap()
        .await
        .expect("the operator queues a command");

    let mut pricing = bus.probe("svc-pricing-service").await;
    for (attempt, subject, body) in [
        (
            "pull order-service's commands",
            "$JS.API.CONSUMER.MSG.NEXT.COMMANDS.order-service_commands",
            &br#"{"batch":1}"#[..],
        ),
        (
            "re-point order-service's queue to its own",
            "$JS.API.CONSUMER.CREATE.COMMANDS.order-service_commands.commands.pricing-service.*",
            br#"{"stream_name":"COMMANDS","config":{"durable_name":"order-service_commands","filter_subject":"commands.pricing-service.*","ack_policy":"explicit"}}"#,
        ),
        (
            "change a queue through the legacy durable form",
            "$JS.API.CONSUMER.DURABLE.CREATE.COMMANDS.order-service_commands",
            br#"{"stream_name":"COMMANDS","config":{"durable_name":"order-service_commands","filter_subject":"commands.pricing-service.*","ack_policy":"explicit"}}"#,
        ),
        (
            "change a queue through an unnamed create",
            "$JS.API.CONSUMER.CREATE.COMMANDS",
            br#"{"stream_name":"COMMANDS","config":{"name":"order-service_commands","filter_subject":"commands.pricing-service.*","ack_policy":"explicit"}}"#,
        ),
        (
            "acknowledge order-service's command",
            "$JS.ACK.COMMANDS.order-service_commands.1.1.1.0.0",
            b"+ACK",
        ),
        (
            "read order-service's queue",
            "$JS.API.CONSUMER.INFO.COMMANDS.order-service_commands",
            b"",
        ),
        (
            "delete order-service's queue",
            "$JS.API.CONSUMER.DELETE.COMMANDS.order-service_commands",
            b"",
        ),
        (
            "create a consumer on EVENTS",
            "$JS.API.CONSUMER.CREATE.EVENTS.evil.events.price.evil",
            br#"{"stream_name":"EVENTS","config":{"name":"evil","filter_subject":"events.price.evil"}}"#,
        ),
        (
            "create an unnamed consumer on EVENTS",
            "$JS.API.CONSUMER.CREATE.EVENTS",
            br#"{"stream_name":"EVENTS","config":{"filter_subject":"events.price.evil"}}"#,
        ),
        (
            "pull from a consumer on EVENTS",
            "$JS.API.CONSUMER.MSG.NEXT.EVENTS.risk-service_order_all",
            br#"{"batch":1}"#,
        ),
        (
            "acknowledge an event of another's consumer",
            "$JS.ACK.EVENTS.risk-service_order_all.1.1.1.0.0",
            b"+ACK",
        ),
    ] {
        pricing.publish_refused(attempt, subject, body).await;
    }

    // The queue is as order-service made it, its command still waiting,
    // and order-service itself takes it.
    let info = operator
        .jetstream()
        .get_stream("COMMANDS")
        .await
        .unwrap()
        .consumer_info("order-service_commands")
        .await
        .unwrap();
    assert_eq!(info.config.filter_subject, "commands.order-service.*");
    assert_eq!(info.num_pending, 1, "{info:?}");
    let mut batch = queue
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .expect("order-service pulls its own queue");
    let command = futures::StreamExt::next(&mut batch)
        .await
        .expect("the command is there")
        .unwrap();
    assert_eq!(&command.payload[..], br#"{"for":"order-service only"}"#);
    command
        .ack()
        .await
        .expect("order-service acks its own command");
    let violations: Vec<String> = bus
        .violations()
        .into_iter()
        .filter(|l| l.contains("svc-order-service"))
        .collect();
    assert!(
        violations.is_empty(),
        "order-service was refused: {violations:?}"
    );
}

/// risk-service reads the fills on an ephemeral consumer of its own
/// (`aegis_sdk::feed`), pulled with async-nats, which looks the consumer up
/// (`CONSUMER.INFO.EVENTS.{name}`) after every reconnect before it pulls
/// again. Refused, that was a permissions violation in risk-service's log
/// at each NATS reconnect (and the pull waited for the look-up to time
/// out). The look-up is granted on `EVENTS` only, as the feed's pull is;
/// another stream's consumers stay out of reach, and no role without a
/// feed may look up a consumer of `EVENTS`.
#[tokio::test]
async fn a_feed_looks_up_its_consumer_after_a_reconnect() {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    use futures::StreamExt;

    let bus = ShowcaseBus::start();
    let _operator = bus.operator_with_streams().await;
    let (tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
    let risk = async_nats::ConnectOptions::with_user_and_password(
        "svc-risk-service".into(),
        bus.password("svc-risk-service").into(),
    )
    .custom_inbox_prefix(aegis::permissions::inbox_prefix("svc-risk-service"))
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(async_nats::ServerError::Other(text)) = event {
                let _ = tx.send(text);
            }
        }
    })
    .connect(bus.server.url())
    .await
    .unwrap();
    // The consumer as `aegis_sdk::feed` makes it.
    let consumer = async_nats::jetstream::new(risk.clone())
        .get_stream("EVENTS")
        .await
        .unwrap()
        .create_consumer(pull::Config {
            filter_subject: "events.order.filled".into(),
            ack_policy: AckPolicy::None,
            inactive_threshold: Duration::from_secs(10),
            memory_storage: true,
            num_replicas: 1,
            ..Default::default()
        })
        .await
        .expect("risk-service makes a feed's consumer on EVENTS");
    let name = consumer.cached_info().name.clone();
    let mut messages = consumer
        .stream()
        .heartbeat(Duration::from_secs(1))
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .unwrap();

    risk.force_reconnect().await.unwrap();
    bus.js("svc-order-service")
        .await
        .publish("events.order.filled", r#"{"after":"the reconnect"}"#.into())
        .await
        .unwrap()
        .await
        .expect("order-service publishes a fill");
    let got = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "the pull did not go on after the reconnect within 5 s; refused: {:?}",
                std::iter::from_fn(|| refused.try_recv().ok()).collect::<Vec<_>>()
            )
        })
        .expect("the pull goes on")
        .expect("a message, not an error");
    assert_eq!(&got.payload[..], br#"{"after":"the reconnect"}"#);
    let info = consumer
        .get_info()
        .await
        .expect("risk-service looks up its feed's consumer");
    assert_eq!(info.name, name);
    let violations: Vec<String> = std::iter::from_fn(|| refused.try_recv().ok())
        .filter(|e| e.contains("Permissions Violation"))
        .collect();
    assert!(
        violations.is_empty(),
        "risk-service was refused: {violations:?}"
    );

    let mut risk = bus.probe("svc-risk-service").await;
    for (attempt, subject) in [
        (
            "look up another stream's consumer",
            "$JS.API.CONSUMER.INFO.COMMANDS.order-service_commands",
        ),
        (
            "look up another stream's consumer (a bucket's)",
            "$JS.API.CONSUMER.INFO.KV_orders.any",
        ),
    ] {
        risk.publish_refused(attempt, subject, b"").await;
    }
    let delete = format!("$JS.API.CONSUMER.DELETE.EVENTS.{name}");
    risk.client
        .publish(delete.clone(), bytes::Bytes::new())
        .await
        .unwrap();
    risk.client.flush().await.unwrap();
    risk.refused("delete its feed's consumer", &delete).await;
    let lookup = format!("$JS.API.CONSUMER.INFO.EVENTS.{name}");
    let mut pricing = bus.probe("svc-pricing-service").await;
    pricing
        .client
        .publish(lookup.clone(), bytes::Bytes::new())
        .await
        .unwrap();
    pricing.client.flush().await.unwrap();
    pricing
        .refused("look up a consumer of EVENTS (no feed)", &lookup)
        .await;
}

/// What a chain of errors says, each cause after the one it caused.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        next = cause.source();
    }
    text
}

/// The monitor reads and checks its streams and bucket but neither creates
/// nor changes a stream: a `STREAM.UPDATE` of `AEGIS_LOG` with `sources`
/// or more `subjects` would copy into it every bucket and every role's
/// replies. `aegis init` (the operator) creates them; a monitor started
/// where one is missing says so.
#[tokio::test]
async fn the_monitor_creates_and_changes_no_stream() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    let mut monitor = bus.probe("monitor").await;
    for (attempt, subject, body) in [
        (
            "copy a bucket into AEGIS_LOG",
            "$JS.API.STREAM.UPDATE.AEGIS_LOG",
            &br#"{"name":"AEGIS_LOG","subjects":["aegis.log.>"],"sources":[{"name":"KV_risk_limits"}]}"#[..],
        ),
        (
            "capture the operator's replies",
            "$JS.API.STREAM.UPDATE.AEGIS_METRICS",
            br#"{"name":"AEGIS_METRICS","subjects":["aegis.metrics.>","_INBOX_operator.>"]}"#,
        ),
        (
            "create AEGIS_LOG",
            "$JS.API.STREAM.CREATE.AEGIS_LOG",
            br#"{"name":"AEGIS_LOG","subjects":["aegis.log.>","rpc.>"]}"#,
        ),
        (
            "create the definitions bucket",
            "$JS.API.STREAM.CREATE.KV_service_definitions",
            br#"{"name":"KV_service_definitions","subjects":["$KV.service_definitions.>","_INBOX_operator.>"]}"#,
        ),
    ] {
        monitor.publish_refused(attempt, subject, body).await;
    }
    let mut log = operator.jetstream().get_stream("AEGIS_LOG").await.unwrap();
    let config = log.info().await.unwrap().config.clone();
    assert_eq!(config.subjects, ["aegis.log.>"]);
    assert!(config.sources.unwrap_or_default().is_empty());

    // Started where AEGIS_LOG is missing, the monitor names the fix.
    operator
        .jetstream()
        .delete_stream("AEGIS_LOG")
        .await
        .unwrap();
    let started = aegis_monitor::AppState::start(
        aegis_monitor::MonitorConfig {
            nats: bus.config("monitor"),
            admin_token: Some(Secret::new(ADMIN)),
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let err = match started {
        Ok(state) => {
            state.shutdown().await;
            panic!("the monitor started without AEGIS_LOG (it created it?)");
        }
        Err(e) => causes(&e),
    };
    println!("{:<20} start without AEGIS_LOG  REFUSED: {err}", "monitor");
    assert!(
        err.contains("AEGIS_LOG") && err.contains("aegis init"),
        "{err}"
    );
    assert!(
        operator.jetstream().get_stream("AEGIS_LOG").await.is_err(),
        "the monitor created AEGIS_LOG"
    );
}

/// A service may not create the streams of the buckets it owns: a create
/// also chooses the stream's subjects, so while a bucket is missing (a
/// restore, a fresh install whose service starts before the init Job) its
/// owner could make it capture the operator's replies or the control
/// subjects. `aegis init` creates them; a service started where one is
/// missing says so.
#[tokio::test]
async fn a_service_creates_no_bucket_and_names_the_fix_for_a_missing_one() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    operator
        .jetstream()
        .delete_stream("KV_risk_positions")
        .await
        .unwrap();
    let mut risk = bus.probe("svc-risk-service").await;
    risk.publish_refused(
        "create its bucket capturing others' subjects",
        "$JS.API.STREAM.CREATE.KV_risk_positions",
        br#"{"name":"KV_risk_positions","subjects":["$KV.risk_positions.>","_INBOX_operator.>","aegis.control.>"]}"#,
    )
    .await;

    let started = aegis_trading::risk::start(
        &bus.sdk("svc-risk-service").await,
        aegis_trading::risk::RiskOptions {
            instance_id: Some("risk-1".into()),
            ..Default::default()
        },
    )
    .await;
    let err = match started {
        Ok(risk) => {
            risk.shutdown().await.unwrap();
            panic!("risk-service started without its positions bucket (it created it?)");
        }
        Err(e) => causes(&e),
    };
    println!(
        "{:<20} start without risk_positions  REFUSED: {err}",
        "svc-risk-service"
    );
    assert!(
        err.contains("risk_positions") && err.contains("aegis init"),
        "{err}"
    );
    assert!(
        operator
            .jetstream()
            .get_stream("KV_risk_positions")
            .await
            .is_err(),
        "risk-service created its bucket"
    );
}

/// A service dead-letters only what its own consumers give up on: the
/// dead-letter subject `aegis.dead.{stream}.{consumer}` names the consumer,
/// and consumer names carry the service, so pricing cannot file a dead
/// letter the monitor would show as order-service's.
#[tokio::test]
async fn a_service_dead_letters_only_for_its_own_consumers() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    let mut pricing = bus.probe("svc-pricing-service").await;
    for (attempt, subject) in [
        (
            "dead-letter order-service's command",
            "aegis.dead.COMMANDS.order-service_commands",
        ),
        (
            "dead-letter an event for risk-service",
            "aegis.dead.EVENTS.risk-service_order_all",
        ),
        ("dead-letter outside the layout", "aegis.dead.forged"),
    ] {
        pricing
            .publish_refused(attempt, subject, br#"{"forged":true}"#)
            .await;
    }
    // Its own queue's dead letters it may file.
    let own = bus.sdk("svc-pricing-service").await;
    own.jetstream()
        .publish("aegis.dead.COMMANDS.pricing-service_commands", "{}".into())
        .await
        .unwrap()
        .await
        .expect("pricing dead-letters its own command");
    let stored = operator
        .jetstream()
        .get_stream("DEAD_LETTER")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert_eq!(stored, 1, "only pricing's own dead letter is stored");
}

/// No role deletes the consumers of a bucket it only reads: the
/// registry and election watches of the monitor (and of every service)
/// live there, and a loop deleting them kept every reader on a stale view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_role_deletes_the_watches_of_another() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    let state = aegis_monitor::AppState::start(
        aegis_monitor::MonitorConfig {
            nats: bus.config("monitor"),
            admin_token: Some(Secret::new(ADMIN)),
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .expect("the monitor starts");
    let names = |stream: &'static str| {
        let js = operator.jetstream().clone();
        async move {
            let stream = js.get_stream(stream).await.unwrap();
            let names: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream.consumer_names())
                .await
                .into_iter()
                .map(Result::unwrap)
                .collect();
            names
        }
    };
    let mut pricing = bus.probe("svc-pricing-service").await;
    let mut monitor = bus.probe("monitor").await;
    let mut watched = Vec::new();
    for stream in ["KV_service_registry", "KV_service_elections"] {
        let consumers = names(stream).await;
        assert!(!consumers.is_empty(), "the monitor watches {stream}");
        for consumer in &consumers {
            let subject = format!("$JS.API.CONSUMER.DELETE.{stream}.{consumer}");
            pricing
                .client
                .publish(subject.clone(), bytes::Bytes::new())
                .await
                .unwrap();
            pricing.client.flush().await.unwrap();
            pricing
                .refused("delete the monitor's watch", &subject)
                .await;
        }
        watched.push((stream, consumers));
    }
    // Nor the monitor a service's watch (any name: the subject decides).
    monitor
        .publish_refused(
            "delete a registry watch",
            "$JS.API.CONSUMER.DELETE.KV_service_registry.any",
            b"",
        )
        .await;
    for (stream, consumers) in watched {
        let now = names(stream).await;
        for consumer in consumers {
            assert!(now.contains(&consumer), "{stream}: {consumer} was deleted");
        }
    }
    state.shutdown().await;
}

/// The NATS banner asks each stream without a leader for its info
/// (`STREAM.INFO`) until it is led again: every stream, the services'
/// buckets included, since a node lost takes their leaders too. The
/// monitor was allowed only its own and `EVENTS`/`COMMANDS`, so while
/// `KV_orders` had no leader it logged a permission violation every 0.75
/// s, in the middle of an incident. `STREAM.LIST`, which it may send,
/// already answers every stream's info: this shows it nothing new. It
/// still reads no message of a bucket it does not own.
#[tokio::test]
async fn the_monitor_asks_any_stream_for_its_info_but_reads_no_other_bucket() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    let monitor = bus.sdk("monitor").await;
    let mut names = operator.jetstream().stream_names();
    let mut asked = Vec::new();
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        let name = name.unwrap();
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            monitor
                .client()
                .request(format!("$JS.API.STREAM.INFO.{name}"), "".into()),
        )
        .await
        .unwrap_or_else(|_| panic!("no answer to STREAM.INFO of {name}"))
        .unwrap_or_else(|e| panic!("STREAM.INFO of {name}: {e}"));
        let info: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(info["config"]["name"], name.as_str(), "{info}");
        asked.push(name);
    }
    assert!(asked.iter().any(|n| n == "KV_orders"), "{asked:?}");
    let violations = bus.violations();
    assert!(
        violations.iter().all(|l| !l.contains("STREAM.INFO")),
        "{violations:?}"
    );
    let mut monitor = bus.probe("monitor").await;
    monitor
        .publish_refused(
            "read an order",
            "$JS.API.DIRECT.GET.KV_orders.$KV.orders.fence",
            b"",
        )
        .await;
    monitor
        .publish_refused(
            "read the risk limits",
            "$JS.API.STREAM.MSG.GET.KV_risk_limits",
            br#"{"last_by_subj":"$KV.risk_limits.limits"}"#,
        )
        .await;
}

#[tokio::test]
async fn the_monitor_cannot_call_services_or_write_the_registry() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;
    let mut monitor = bus.probe("monitor").await;
    monitor
        .publish_refused(
            "call create_order",
            "rpc.order-service.create_order",
            br#"{"symbol":"AAPL","side":"BUY","quantity":1}"#,
        )
        .await;
    monitor
        .publish_refused(
            "call create_order on an instance",
            "rpc.order-service.order-1.create_order",
            b"{}",
        )
        .await;
    monitor
        .publish_refused(
            "write a registry key",
            "$KV.service_registry.service-instances.order-service.evil",
            b"{}",
        )
        .await;
    monitor
        .publish_refused(
            "write an election key",
            "$KV.service_elections.sticky-active.order-service.default",
            b"x",
        )
        .await;
    monitor
        .publish_refused(
            "send a control verb",
            "aegis.control.order-service.order-1.drain",
            b"",
        )
        .await;
    monitor
        .publish_refused("send a command", "commands.order-service.cancel_all", b"{}")
        .await;
    assert!(
        kv_value(
            &operator,
            "service_registry",
            "service-instances.order-service.evil"
        )
        .await
        .is_none()
    );
}

#[tokio::test]
async fn only_the_operator_publishes_control_requests() {
    let bus = ShowcaseBus::start();
    // An instance of order-service listens on its own control subject.
    let order = bus.sdk("svc-order-service").await;
    let mut control = order
        .client()
        .subscribe("aegis.control.order-service.order-1.drain")
        .await
        .unwrap();
    // A round trip on the same connection puts the SUB in force (a service
    // may not publish to its own inbox, so `server_caught_up` cannot).
    order.jetstream().query_account().await.unwrap();

    let operator = bus.probe("operator").await;
    operator
        .client
        .publish("aegis.control.order-service.order-1.drain", "now".into())
        .await
        .unwrap();
    let got = tokio::time::timeout(PATIENCE, futures::StreamExt::next(&mut control))
        .await
        .expect("the operator's control request arrives")
        .unwrap();
    assert_eq!(&got.payload[..], b"now");
    println!(
        "{:<20} publish aegis.control.order-service.order-1.drain  DELIVERED",
        "operator"
    );

    for service in [
        "svc-order-service",
        "svc-pricing-service",
        "svc-risk-service",
    ] {
        let mut probe = bus.probe(service).await;
        probe
            .publish_refused(
                "publish a control request",
                "aegis.control.order-service.order-1.drain",
                b"now",
            )
            .await;
    }
    // The drill subject itself (`aegis chaos unhealthy`): only the operator
    // may make an instance unhealthy, not a service, not the monitor.
    for role in ["svc-pricing-service", "monitor"] {
        let mut probe = bus.probe(role).await;
        probe
            .publish_refused(
                "force an instance unhealthy",
                "aegis.control.order-service.order-1",
                br#"{"op":"unhealthy"}"#,
            )
            .await;
    }
}

#[tokio::test]
async fn only_the_operator_backs_up_and_restores_streams() {
    let bus = ShowcaseBus::start();
    // `nats stream backup` acks each snapshot chunk on the first subject,
    // `nats stream restore` uploads the chunks to the second (the server
    // names both in its snapshot and restore replies).
    let subjects = [
        "$JS.SNAPSHOT.ACK.KV_service_definitions.Fq1tFQXyNcwFhyZ5xZw3Kc.1024",
        "$JS.SNAPSHOT.RESTORE.KV_service_definitions.Fq1tFQXyNcwFhyZ5xZw3Kc",
    ];
    let operator = bus.probe("operator").await;
    for subject in subjects {
        operator
            .client
            .publish(subject, "chunk".into())
            .await
            .unwrap();
    }
    // The server has handled both publishes, and logged any refusal, once
    // the flush's PONG is back.
    operator.client.flush().await.unwrap();

    let mut pricing = bus.probe("svc-pricing-service").await;
    for (attempt, subject) in ["ack a snapshot chunk", "upload a restore chunk"]
        .into_iter()
        .zip(subjects)
    {
        pricing.publish_refused(attempt, subject, b"chunk").await;
    }

    // The server logs every violation with the account and user
    // (`"AEGIS/user:operator"`): the service's are there, the operator's
    // are not.
    let logged: Vec<String> = bus
        .violations()
        .into_iter()
        .filter(|l| l.contains("$JS.SNAPSHOT."))
        .collect();
    for subject in subjects {
        assert!(
            logged
                .iter()
                .any(|l| l.contains(subject) && l.contains("/user:svc-pricing-service\"")),
            "no logged refusal of {subject} for pricing:\n{}",
            logged.join("\n")
        );
    }
    let by_operator: Vec<&String> = logged
        .iter()
        .filter(|l| l.contains("/user:operator\""))
        .collect();
    assert!(
        by_operator.is_empty(),
        "the operator was refused: {by_operator:?}"
    );
    for subject in subjects {
        println!("{:<20} publish {subject:<52} ALLOWED", "operator");
    }
}

#[tokio::test]
async fn no_role_reads_or_forges_the_replies_of_another() {
    let bus = ShowcaseBus::start();
    let mut monitor = bus.probe("monitor").await;
    monitor
        .subscribe_refused("read every reply", "_INBOX.>")
        .await;
    monitor
        .subscribe_refused("read the operator's replies", "_INBOX_operator.>")
        .await;
    let mut pricing = bus.probe("svc-pricing-service").await;
    pricing
        .subscribe_refused("read order-service's replies", "_INBOX_svc-order-service.>")
        .await;
    // A request inbox of the operator's (three tokens), as pricing would
    // see it on a request the operator sent it.
    pricing
        .publish_refused(
            "push a forged reply to the operator",
            "_INBOX_operator.Fq1tFQXyNcwFhyZ5xZw3Kc.7",
            br#"{"order_id":"forged"}"#,
        )
        .await;

    // A client of a restricted user without its inbox prefix is told so,
    // within its request timeout, instead of hanging.
    let mut config = bus.config("svc-pricing-service");
    config.nats.inbox_prefix = None;
    let err = Connection::connect(config).await.unwrap_err();
    assert!(matches!(err, ConnectError::InboxRefused { .. }), "{err:?}");
    assert!(err.to_string().contains("AEGIS_NATS_INBOX_PREFIX"), "{err}");
}

async fn get(app: &axum::Router, path: &str) -> (StatusCode, Value) {
    send(app, Method::GET, path, None).await
}

async fn send(
    app: &axum::Router,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {ADMIN}"));
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_and_the_monitor_work_with_their_own_credentials() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator_with_streams().await;

    let state = aegis_monitor::AppState::start(
        aegis_monitor::MonitorConfig {
            nats: bus.config("monitor"),
            admin_token: Some(Secret::new(ADMIN)),
            viewer_token: Some(Secret::new("viewer-token-for-tests-0123456789")),
            control_timeout: Duration::from_secs(2),
            ..Default::default()
        },
        tokio_util::sync::CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "the monitor starts with its own credentials: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });
    let app = aegis_monitor::router(state.clone());

    let pricing = aegis_trading::pricing::start(
        &bus.sdk("svc-pricing-service").await,
        aegis_trading::pricing::PricingOptions {
            instance_id: Some("pricing-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "pricing-service starts: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });
    // A second process started with pricing-1's id, on the same user, is
    // told the id is taken: its user may ask who serves it.
    let twin = aegis_trading::pricing::start(
        &bus.sdk("svc-pricing-service").await,
        aegis_trading::pricing::PricingOptions {
            instance_id: Some("pricing-1".into()),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(
            twin,
            Err(aegis_trading::TradingError::Service(
                aegis_sdk::rpc::server::ServiceError::InstanceIdInUse { .. }
            ))
        ),
        "{:?}\n{}",
        twin.err(),
        bus.violations().join("\n")
    );
    let risk = aegis_trading::risk::start(
        &bus.sdk("svc-risk-service").await,
        aegis_trading::risk::RiskOptions {
            instance_id: Some("risk-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "risk-service starts with its own credentials: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });
    let mut orders = Vec::new();
    for i in 1..=2 {
        orders.push(
            aegis_trading::order::start(
                &bus.sdk("svc-order-service").await,
                aegis_trading::order::OrderOptions {
                    instance_id: Some(format!("order-{i}")),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "order-service starts: {e:?}\n{}",
                    bus.violations().join("\n")
                )
            }),
        );
    }

    // The operator calls the elected leader; the leader calls pricing and
    // risk, stores the order and publishes its events, which risk consumes.
    let rpc = operator.rpc();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let reply: Value = loop {
        match rpc
            .call_active::<Value, Value>(
                "order-service",
                "default",
                "create_order",
                &json!({"symbol":"AAPL","side":"BUY","quantity":10,"client_order_id":"perm-1"}),
                &CallOptions::default(),
            )
            .await
        {
            Ok(r) => break r.value,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "no order-service leader took the order: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(reply["order_id"].is_string(), "{reply}");
    let price: Value = rpc
        .call("pricing-service", "get_price", &json!({"symbol":"AAPL"}))
        .await
        .expect("the operator calls pricing-service");
    assert!(!price.is_null());

    // The monitor sees all four instances, one ACTIVE order leader, reads
    // an instance's config and writes a service definition.
    eventually(PATIENCE, "the monitor lists the four instances", || {
        let app = app.clone();
        async move {
            let (status, body) = get(&app, "/api/instances").await;
            status == StatusCode::OK && body.as_array().is_some_and(|a| a.len() == 4)
        }
    })
    .await;
    let (status, body) = get(&app, "/api/instances/order-service").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let active = body
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["status"] == "ACTIVE")
        .count();
    assert_eq!(active, 1, "{body}");
    let (status, body) = get(&app, "/api/instances/pricing-service/pricing-1/config").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = send(
        &app,
        Method::POST,
        "/api/services",
        Some(json!({"service_name":"order-service","owner":"desk","description":"orders","version":"1.0.0"})),
    )
    .await;
    assert!(status.is_success(), "{status} {body}");

    // Commands: the operator queues one for risk-service, whose worker
    // (on risk-service's own user) runs it and reports back.
    let risk_conn = bus.sdk("svc-risk-service").await;
    let worker = risk_conn
        .commands()
        .worker("risk-service")
        .handler(
            "recompute",
            |c: aegis_sdk::commands::Command<Value>, p: aegis_sdk::commands::Progress| async move {
                p.report(50.0, "halfway").await;
                Ok(json!({"recomputed": c.payload["book"]}))
            },
        )
        .start()
        .await
        .expect("risk-service consumes its own commands");
    let done: Value = operator
        .commands()
        .send(
            "risk-service",
            "recompute",
            &json!({"book": "main"}),
            PATIENCE,
        )
        .await
        .expect("the operator queues a command")
        .result()
        .await
        .expect("the command completes");
    assert_eq!(done["recomputed"], "main");
    worker.shutdown().await;

    // Metrics snapshots of the services reach the monitor.
    eventually(
        PATIENCE,
        "the monitor has metrics of every instance",
        || {
            let app = app.clone();
            async move {
                let (status, body) = get(&app, "/api/metrics").await;
                let text = body.to_string();
                status == StatusCode::OK
                    && ["pricing-1", "risk-1", "order-1", "order-2"]
                        .iter()
                        .all(|i| text.contains(i))
            }
        },
    )
    .await;

    // An instance whose events nobody took looks for the stream capturing
    // their subject (its telemetry's sender).
    let captured_by = bus
        .sdk("svc-pricing-service")
        .await
        .jetstream()
        .stream_by_subject("aegis.log.pricing-service.pricing-1")
        .await
        .expect("a service may ask which stream captures its events");
    assert_eq!(captured_by, "AEGIS_LOG");

    for o in orders {
        o.shutdown().await.unwrap();
    }
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
    state.shutdown().await;

    let violations = bus.violations();
    assert!(
        violations.is_empty(),
        "the real services and the monitor ran into permission violations:\n{}",
        violations.join("\n")
    );
}
