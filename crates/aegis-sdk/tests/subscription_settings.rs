//! Event-subscription settings against a real nats-server: what a
//! subscriber asks for (`max_deliver`, `ack_wait`) reaches the durable
//! consumer even when it already exists with a start JetStream cannot
//! change (`deliver_all` toggled, or a consumer the SDK re-created to
//! resume at a sequence); a start that cannot apply fails with an error
//! naming it; and a handler failing on the last delivery the server allows
//! is dead-lettered with its error, whatever this process was configured
//! with.

mod common;

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aegis_contracts::dead_letter::DeadLetterReason;
use aegis_sdk::{
    Connection,
    events::{DeliveryMode, Event, EventError, EventSubscription, SubscriptionBuilder},
};
use async_nats::jetstream::consumer::{DeliverPolicy, FromConsumer, pull};
use common::{Captured, connect, eventually, server};
use serde_json::{Value, json};

const EVENTS: &str = "EVENTS";

/// Everything this binary logs at INFO and above.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| Captured::install(tracing::Level::INFO))
}

fn subscription(conn: &Connection, service: &str) -> SubscriptionBuilder<Value> {
    conn.events()
        .subscribe::<Value>(service, "order.created", DeliveryMode::Compete)
        .handler(|_: Event<Value>| async { Ok(()) })
}

/// The server's view of a consumer: (deliver policy, max_deliver, ack_wait).
async fn consumer_settings(conn: &Connection, name: &str) -> (DeliverPolicy, i64, Duration) {
    let info = conn
        .jetstream()
        .get_stream(EVENTS)
        .await
        .unwrap()
        .consumer_info(name)
        .await
        .unwrap();
    (
        info.config.deliver_policy,
        info.config.max_deliver,
        info.config.ack_wait,
    )
}

/// Waits until `count` says `n`.
async fn handled(count: &AtomicU64, n: u64) {
    eventually(Duration::from_secs(20), "the events handled", || async {
        count.load(Ordering::SeqCst) >= n
    })
    .await;
}

/// Asserts that `started` failed with the consumer `name`'s `setting`
/// named, in the variant and in the text.
async fn assert_refused(
    conn: &Connection,
    started: Result<EventSubscription, EventError>,
    name: &str,
    setting: &str,
) {
    match &started {
        Err(EventError::ConsumerSetting {
            name: n,
            setting: s,
            ..
        }) => {
            assert_eq!(n, name);
            assert_eq!(s, &setting);
        }
        Err(e) => panic!("another error: {e}"),
        Ok(sub) => {
            let settings = consumer_settings(conn, sub.consumer_name()).await;
            panic!("started, with the server's settings {settings:?}");
        }
    }
    let text = started.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(text.contains(setting), "{text}");
}

/// Starts `again` (a subscription to the consumer `name`, which exists),
/// asserts the server holds `settings` for it (deliver policy,
/// `max_deliver`, `ack_wait`), and stops it.
async fn starts_with(
    conn: &Connection,
    again: SubscriptionBuilder<Value>,
    name: &str,
    settings: (DeliverPolicy, i64, Duration),
) {
    let again = again.start().await.expect("starts again");
    assert_eq!(consumer_settings(conn, name).await, settings);
    again.shutdown().await;
}

/// The trial's first case: a consumer made to start at new events cannot
/// start over from the oldest; `.deliver_all()` added later must say so
/// instead of starting with neither the replay nor the new `max_deliver`.
#[tokio::test]
async fn deliver_all_on_an_existing_consumer_fails_naming_it_and_changes_nothing() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let first = subscription(&conn, "settings-a")
        .max_deliver(2)
        .start()
        .await
        .unwrap();
    let name = first.consumer_name().to_owned();
    first.shutdown().await;

    let again = subscription(&conn, "settings-a")
        .deliver_all()
        .max_deliver(4)
        .start()
        .await;
    assert_refused(&conn, again, &name, "deliver_all").await;
    // The consumer is as it was: the refusal changed nothing half-way.
    assert_eq!(
        consumer_settings(&conn, &name).await,
        (DeliverPolicy::New, 2, Duration::from_secs(30))
    );
}

/// The trial's probe `q`: made with `.deliver_all()`, started again without
/// it and with new `max_deliver` and `ack_wait`; the new ones apply and the
/// consumer keeps its position.
#[tokio::test]
async fn settings_apply_when_deliver_all_is_dropped() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let first = subscription(&conn, "settings-q")
        .deliver_all()
        .start()
        .await
        .unwrap();
    let name = first.consumer_name().to_owned();
    first.shutdown().await;

    let again = subscription(&conn, "settings-q")
        .max_deliver(7)
        .ack_wait(Duration::from_secs(42));
    starts_with(
        &conn,
        again,
        &name,
        (DeliverPolicy::All, 7, Duration::from_secs(42)),
    )
    .await;
}

/// A running subscription of `service`, counting the events it handled.
async fn counting(
    conn: &Connection,
    service: &str,
    deliver_all: bool,
    count: Arc<AtomicU64>,
) -> EventSubscription {
    let mut builder = conn
        .events()
        .subscribe::<Value>(service, "order.created", DeliveryMode::Compete)
        .handler(move |_: Event<Value>| {
            let count = count.clone();
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        });
    if deliver_all {
        builder = builder.deliver_all();
    }
    builder.start().await.unwrap()
}

async fn publish(conn: &Connection, n: u64) {
    conn.events()
        .publish("order", "created", &json!({ "n": n }))
        .await
        .unwrap();
}

/// Has the SDK re-create `service`'s consumer to resume at a sequence: a
/// subscription (with `.deliver_all()` or not) handles an event, its
/// consumer is deleted under it, and it handles the next one through the
/// consumer it made again. Returns the consumer's name and its start.
async fn recreated_by_the_sdk(
    conn: &Connection,
    service: &str,
    deliver_all: bool,
) -> (String, DeliverPolicy) {
    let count = Arc::new(AtomicU64::new(0));
    let first = counting(conn, service, deliver_all, count.clone()).await;
    let name = first.consumer_name().to_owned();
    publish(conn, 1).await;
    handled(&count, 1).await;
    let stream = conn.jetstream().get_stream(EVENTS).await.unwrap();
    stream.delete_consumer(&name).await.unwrap();
    publish(conn, 2).await;
    handled(&count, 2).await;
    let (policy, _, _) = consumer_settings(conn, &name).await;
    assert!(
        matches!(policy, DeliverPolicy::ByStartSequence { .. }),
        "re-created to resume at a sequence: {policy:?}"
    );
    first.shutdown().await;
    (name, policy)
}

/// A consumer the SDK re-created to resume at a sequence (after it was
/// deleted under a running subscription) takes later settings too.
#[tokio::test]
async fn settings_apply_to_a_consumer_the_sdk_recreated() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (name, policy) = recreated_by_the_sdk(&conn, "settings-r", false).await;

    let again = subscription(&conn, "settings-r")
        .max_deliver(4)
        .ack_wait(Duration::from_secs(5));
    starts_with(&conn, again, &name, (policy, 4, Duration::from_secs(5))).await;
}

/// The review's D6, case a: a consumer made to start at new events, and
/// re-created by the SDK at a sequence, cannot replay the stream either:
/// `.deliver_all()` added then fails as it does on the consumer first made,
/// instead of starting and replaying nothing.
#[tokio::test]
async fn deliver_all_on_a_consumer_the_sdk_recreated_for_new_events_fails() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (name, policy) = recreated_by_the_sdk(&conn, "settings-n", false).await;

    let again = subscription(&conn, "settings-n")
        .deliver_all()
        .start()
        .await;
    assert_refused(&conn, again, &name, "deliver_all").await;
    assert_eq!(consumer_settings(&conn, &name).await.0, policy);
}

/// A consumer made with `.deliver_all()` and re-created by the SDK at a
/// sequence is still the one those subscriptions made: they start again
/// with `.deliver_all()` (it goes on from its position).
#[tokio::test]
async fn deliver_all_starts_again_on_its_consumer_the_sdk_recreated() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (name, policy) = recreated_by_the_sdk(&conn, "settings-d", true).await;

    let again = subscription(&conn, "settings-d")
        .deliver_all()
        .max_deliver(3);
    starts_with(&conn, again, &name, (policy, 3, Duration::from_secs(30))).await;
}

/// After an upgrade: a `.deliver_all()` subscription's consumer that an
/// earlier SDK made again at a sequence carries no record of the start it
/// was configured with (and an older instance's update wipes that record
/// in a mixed fleet). It is of unknown origin, so it is taken, with a
/// warning, rather than refused: refusing it would stop the service from
/// starting on its own consumer.
#[tokio::test]
async fn deliver_all_starts_on_a_consumer_made_again_without_a_record_of_its_start() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let first = subscription(&conn, "settings-u")
        .deliver_all()
        .start()
        .await
        .unwrap();
    let name = first.consumer_name().to_owned();
    first.shutdown().await;
    // As an earlier SDK left it: at a sequence, no metadata.
    let stream = conn.jetstream().get_stream(EVENTS).await.unwrap();
    let info = stream.consumer_info(&name).await.unwrap();
    let mut config = pull::Config::try_from_consumer_config(info.config).unwrap();
    config.deliver_policy = DeliverPolicy::ByStartSequence { start_sequence: 2 };
    config.metadata.clear();
    stream.delete_consumer(&name).await.unwrap();
    stream.create_consumer(config).await.unwrap();

    let again = subscription(&conn, "settings-u")
        .deliver_all()
        .max_deliver(3);
    starts_with(
        &conn,
        again,
        &name,
        (
            DeliverPolicy::ByStartSequence { start_sequence: 2 },
            3,
            Duration::from_secs(30),
        ),
    )
    .await;
    let text = logs().text();
    assert!(
        text.lines()
            .any(|l| l.contains(&name) && l.contains("WARN") && l.contains("deliver_all")),
        "the start says it took a consumer of unknown start: {text}"
    );
}

/// The review's D6, case b: a mixed fleet. A running `.deliver_all()`
/// instance's consumer is deleted and made again, to start at new events,
/// by an instance of a version without it. The running instance joins that
/// consumer (its start can only apply to a consumer it makes) rather than
/// refuse it at every re-open and stop consuming for good.
#[tokio::test]
async fn a_running_deliver_all_subscription_joins_a_consumer_made_again_for_new_events() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let count = Arc::new(AtomicU64::new(0));
    let running = counting(&conn, "settings-m", true, count.clone()).await;
    let name = running.consumer_name().to_owned();
    publish(&conn, 1).await;
    handled(&count, 1).await;

    // As the other version's start would make it: at new events.
    let stream = conn.jetstream().get_stream(EVENTS).await.unwrap();
    let info = stream.consumer_info(&name).await.unwrap();
    let mut config = pull::Config::try_from_consumer_config(info.config).unwrap();
    config.deliver_policy = DeliverPolicy::New;
    stream.delete_consumer(&name).await.unwrap();
    stream.create_consumer(config).await.unwrap();

    publish(&conn, 2).await;
    handled(&count, 2).await;
    assert_eq!(consumer_settings(&conn, &name).await.0, DeliverPolicy::New);
    running.shutdown().await;
}

/// A subscription whose handler always fails, counting its runs.
async fn failing(
    conn: &Connection,
    service: &str,
    max_deliver: Option<u32>,
    runs: Arc<AtomicU64>,
) -> EventSubscription {
    let mut builder = conn
        .events()
        .subscribe::<Value>(service, "order.created", DeliveryMode::Compete)
        .ack_wait(Duration::from_secs(5))
        .handler(move |e: Event<Value>| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err(format!("the ledger refused attempt {}", e.delivered).into())
            }
        });
    if let Some(n) = max_deliver {
        builder = builder.max_deliver(n);
    }
    builder.start().await.unwrap()
}

/// Waits for the one dead letter and returns it.
async fn dead_letter(conn: &Connection) -> aegis_contracts::dead_letter::DeadLetter {
    let js = conn.jetstream().clone();
    eventually(Duration::from_secs(30), "a dead letter", || {
        let js = js.clone();
        async move {
            aegis_sdk::dead_letter::recent(&js, 10)
                .await
                .is_ok_and(|d| !d.is_empty())
        }
    })
    .await;
    let mut dead = aegis_sdk::dead_letter::recent(&js, 10).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    dead.remove(0)
}

/// The WARN lines logged about `consumer`'s failed handler.
fn failure_lines(consumer: &str) -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(consumer) && l.contains("handler failed"))
        .map(str::to_owned)
        .collect()
}

/// The trial's probe `r`: made with `.deliver_all().max_deliver(2)`,
/// started again with `.max_deliver(4)` and a failing handler. The handler
/// runs 4 times, the last failure says it is dead-lettered, and the dead
/// letter carries the handler's error.
#[tokio::test]
async fn a_new_max_deliver_is_what_the_handler_gets() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let first = subscription(&conn, "settings-f")
        .deliver_all()
        .max_deliver(2)
        .start()
        .await
        .unwrap();
    let name = first.consumer_name().to_owned();
    first.shutdown().await;

    let runs = Arc::new(AtomicU64::new(0));
    let sub = failing(&conn, "settings-f", Some(4), runs.clone()).await;
    conn.events()
        .publish("order", "created", &json!({"n": 1}))
        .await
        .unwrap();
    let dead = dead_letter(&conn).await;
    assert_eq!(runs.load(Ordering::SeqCst), 4, "handler runs");
    assert_eq!(dead.reason, DeadLetterReason::HandlerFailed, "{dead:?}");
    assert_eq!(dead.deliveries, 4, "{dead:?}");
    assert!(
        dead.error
            .as_deref()
            .is_some_and(|e| e.contains("the ledger refused attempt 4")),
        "{dead:?}"
    );
    let lines = failure_lines(&name);
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert!(
        lines[..3].iter().all(|l| l.contains("will redeliver")),
        "{lines:#?}"
    );
    assert!(!lines[3].contains("will redeliver"), "{lines:#?}");
    assert!(lines[3].contains("dead-letter"), "{lines:#?}");
    sub.shutdown().await;
}

/// Another instance (here: an operator, or a newer version of the service)
/// lowered the consumer's `max_deliver` under a running subscription. The
/// failure on the last delivery the server allows is dead-lettered with the
/// handler's error instead of being promised a redelivery that never comes.
///
/// The subscription goes by the settings it read from the server at most
/// 2 s before a failure (reading them at every failure would load the
/// JetStream API most when things go wrong): the event comes once those
/// read at the start are that old.
#[tokio::test]
async fn the_last_delivery_is_the_one_the_server_allows() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let runs = Arc::new(AtomicU64::new(0));
    let sub = failing(&conn, "settings-l", Some(4), runs.clone()).await;
    let name = sub.consumer_name().to_owned();
    let stream = conn.jetstream().get_stream(EVENTS).await.unwrap();
    let info = stream.consumer_info(&name).await.unwrap();
    let mut config = pull::Config::try_from_consumer_config(info.config).unwrap();
    config.max_deliver = 2;
    stream.update_consumer(config).await.unwrap();
    // Time itself is the condition here: the age of the settings read.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    conn.events()
        .publish("order", "created", &json!({"n": 1}))
        .await
        .unwrap();
    let dead = dead_letter(&conn).await;
    assert_eq!(runs.load(Ordering::SeqCst), 2, "handler runs");
    assert_eq!(dead.reason, DeadLetterReason::HandlerFailed, "{dead:?}");
    assert!(
        dead.error
            .as_deref()
            .is_some_and(|e| e.contains("the ledger refused attempt 2")),
        "{dead:?}"
    );
    let lines = failure_lines(&name);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert!(lines[0].contains("will redeliver"), "{lines:#?}");
    assert!(!lines[1].contains("will redeliver"), "{lines:#?}");
    let changed = logs()
        .text()
        .lines()
        .filter(|l| l.contains(&name) && l.contains("settings changed on the server"))
        .count();
    assert_eq!(changed, 1, "{}", logs().text());
    sub.shutdown().await;
}
