//! Events against a real nats-server: compete and broadcast delivery, dedup,
//! redelivery after a failed handler, poison messages, and a handler that
//! outlives its dropped subscription.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::events::{DeliveryMode, Event};
use common::{connect, eventually, server};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct OrderCreated {
    order_id: u32,
}

type Seen = Arc<Mutex<HashMap<String, Vec<u32>>>>;

async fn subscriber(
    conn: &aegis_sdk::Connection,
    service: &str,
    instance: &str,
    pattern: &str,
    mode: DeliveryMode,
    seen: Seen,
) -> aegis_sdk::events::EventSubscription {
    let who = instance.to_owned();
    conn.events()
        .subscribe::<OrderCreated>(service, pattern, mode)
        .instance_id(instance)
        .handler(move |e: Event<OrderCreated>| {
            let seen = seen.clone();
            let who = who.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .entry(who)
                    .or_default()
                    .push(e.payload.order_id);
                Ok(())
            }
        })
        .start()
        .await
        .expect("subscribe")
}

fn total(seen: &Seen) -> usize {
    seen.lock().unwrap().values().map(Vec::len).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compete_mode_delivers_each_event_to_one_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let a = subscriber(
        &conn,
        "risk-service",
        "risk-a",
        "order.*",
        DeliveryMode::Compete,
        seen.clone(),
    )
    .await;
    let b = subscriber(
        &conn,
        "risk-service",
        "risk-b",
        "order.*",
        DeliveryMode::Compete,
        seen.clone(),
    )
    .await;
    assert_eq!(a.consumer_name(), b.consumer_name());
    for i in 0..40 {
        conn.events()
            .publish("order", "created", &OrderCreated { order_id: i })
            .await
            .unwrap();
    }
    // Another domain must not match the pattern.
    conn.events()
        .publish("price", "updated", &OrderCreated { order_id: 999 })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "40 events handled", || {
        let seen = seen.clone();
        async move { total(&seen) >= 40 }
    })
    .await;
    let mut all: Vec<u32> = seen.lock().unwrap().values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        (0..40).collect::<Vec<_>>(),
        "each event exactly once, none from price.*"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_mode_delivers_every_event_to_every_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let a = subscriber(
        &conn,
        "pricing-service",
        "p-a",
        "order.created",
        DeliveryMode::Broadcast,
        seen.clone(),
    )
    .await;
    let b = subscriber(
        &conn,
        "pricing-service",
        "p-b",
        "order.created",
        DeliveryMode::Broadcast,
        seen.clone(),
    )
    .await;
    assert_ne!(a.consumer_name(), b.consumer_name());
    for i in 0..10 {
        conn.events()
            .publish("order", "created", &OrderCreated { order_id: i })
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "both instances got all 10", || {
        let seen = seen.clone();
        async move { total(&seen) >= 20 }
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen["p-a"], (0..10).collect::<Vec<_>>());
    assert_eq!(seen["p-b"], (0..10).collect::<Vec<_>>());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_handlers_get_the_event_again_and_the_subscription_survives() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let attempts: Arc<Mutex<HashMap<u32, Vec<u64>>>> = Arc::default();
    let done: Arc<Mutex<Vec<u32>>> = Arc::default();
    let (att, dn) = (attempts.clone(), done.clone());
    let sub = conn
        .events()
        .subscribe::<OrderCreated>("order-service", "order.created", DeliveryMode::Compete)
        .handler(move |e: Event<OrderCreated>| {
            let (att, dn) = (att.clone(), dn.clone());
            async move {
                att.lock()
                    .unwrap()
                    .entry(e.payload.order_id)
                    .or_default()
                    .push(e.delivered);
                if e.delivered < 2 {
                    return Err("downstream not ready".into());
                }
                if e.payload.order_id == 3 && e.delivered < 3 {
                    panic!("a bug on the second try");
                }
                dn.lock().unwrap().push(e.payload.order_id);
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    // Poison first: raw bytes that do not decode must not stop the subscription.
    conn.jetstream()
        .publish("events.order.created", "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    for i in 0..5 {
        conn.events()
            .publish("order", "created", &OrderCreated { order_id: i })
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(15),
        "all 5 handled after retries",
        || {
            let done = done.clone();
            async move { done.lock().unwrap().len() >= 5 }
        },
    )
    .await;
    let attempts = attempts.lock().unwrap().clone();
    for i in 0..5 {
        let tries = &attempts[&i];
        assert!(
            tries.len() >= 2 && tries[0] == 1 && tries[1] == 2,
            "event {i}: {tries:?}"
        );
    }
    assert_eq!(
        attempts[&3].len(),
        3,
        "panic counted as failure and retried"
    );
    let mut done = done.lock().unwrap().clone();
    done.sort_unstable();
    assert_eq!(done, vec![0, 1, 2, 3, 4]);
    sub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dedup_id_stores_a_retried_publish_once() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let sub = subscriber(
        &conn,
        "risk-service",
        "r1",
        "order.>",
        DeliveryMode::Compete,
        seen.clone(),
    )
    .await;
    let first = conn
        .events()
        .publish_with_id("order", "filled", "fill-123", &OrderCreated { order_id: 1 })
        .await
        .unwrap();
    let again = conn
        .events()
        .publish_with_id("order", "filled", "fill-123", &OrderCreated { order_id: 1 })
        .await
        .unwrap();
    assert!(!first.duplicate);
    assert!(again.duplicate);
    assert_eq!(first.sequence, again.sequence);
    conn.events()
        .publish("order", "filled", &OrderCreated { order_id: 2 })
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "two distinct events", || {
        let seen = seen.clone();
        async move { total(&seen) >= 2 }
    })
    .await;
    assert_eq!(total(&seen), 2);
    sub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_names_are_refused_before_io() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    assert!(matches!(
        conn.events().publish("Order", "created", &1).await,
        Err(aegis_sdk::events::EventError::InvalidName(_))
    ));
    let bad = conn
        .events()
        .subscribe::<u32>("risk-service", ">.created", DeliveryMode::Compete)
        .handler(|_e| async { Ok(()) })
        .start()
        .await;
    assert!(matches!(
        bad,
        Err(aegis_sdk::events::EventError::InvalidName(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_publish_creates_the_stream() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let stored = conn
        .events()
        .publish("order", "created", &OrderCreated { order_id: 7 })
        .await
        .expect("the stream is created on first need");
    assert_eq!(stored.sequence, 1);
    let info = conn
        .jetstream()
        .get_stream("EVENTS")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(info.state.messages, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_running_when_its_subscription_is_dropped_finishes_and_acknowledges() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
    let started_tx = Arc::new(Mutex::new(Some(started_tx)));
    let release = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(Mutex::new(Vec::new()));
    let sub = {
        let (release, runs) = (release.clone(), runs.clone());
        conn.events()
            .subscribe::<OrderCreated>("audit-service", "order.created", DeliveryMode::Compete)
            .ack_wait(Duration::from_secs(1))
            .handler(move |e: Event<OrderCreated>| {
                let (started_tx, release, runs) =
                    (started_tx.clone(), release.clone(), runs.clone());
                async move {
                    runs.lock().unwrap().push(e.delivered);
                    if let Some(tx) = started_tx.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                    release.notified().await;
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap()
    };
    let consumer = sub.consumer_name().to_owned();
    conn.events()
        .publish("order", "created", &OrderCreated { order_id: 1 })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(30), started)
        .await
        .expect("the handler started")
        .unwrap();

    drop(sub);
    release.notify_one();

    // The handler still ran to its end and its event was acknowledged,
    // not left to be redelivered.
    let js = conn.jetstream().clone();
    eventually(Duration::from_secs(30), "the event acknowledged", || {
        let (js, consumer) = (js.clone(), consumer.clone());
        async move {
            let info = js
                .get_stream("EVENTS")
                .await
                .unwrap()
                .consumer_info(consumer)
                .await
                .unwrap();
            info.ack_floor.stream_sequence == 1 && info.num_ack_pending == 0
        }
    })
    .await;
    assert_eq!(*runs.lock().unwrap(), vec![1], "run once, not redelivered");
}

/// JetStream's dedup window is one namespace per stream: another publisher
/// that learned an event's id first (risk-service sees each order id before
/// its fill) can store a message of its own under it on its own subject.
/// The real event must still be stored, on its subject, not dropped as a
/// "duplicate" of the squatter's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_whose_id_another_subject_took_is_still_stored() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    conn.events()
        .publish("risk", "warmup", &OrderCreated { order_id: 0 })
        .await
        .unwrap();
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(raw);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, "fill-456");
    let squat = js
        .publish_with_headers("events.risk.decoy", headers, "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(!squat.duplicate);

    let real = conn
        .events()
        .publish_with_id("order", "filled", "fill-456", &OrderCreated { order_id: 7 })
        .await
        .unwrap();
    assert!(!real.duplicate, "{real:?}");
    let stored = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .get_raw_message(real.sequence)
        .await
        .unwrap();
    assert_eq!(stored.subject.as_str(), "events.order.filled");
    // A true repeat of the real event is still one.
    let again = conn
        .events()
        .publish_with_id("order", "filled", &real.id, &OrderCreated { order_id: 7 })
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, real.sequence);
}
