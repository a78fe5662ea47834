//! The pull loop and the consumer's settings on the server, against a real
//! nats-server: a storm of handler failures does not become a storm of
//! `$JS.API.CONSUMER.INFO` requests; an instance running a long handler
//! keeps it when another instance lowers the consumer's `ack_wait`, early
//! or late in the handler's run; and a `.deliver_all()` consumer deleted
//! under a running subscription resumes where it was instead of replaying
//! the stream.

mod common;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    events::{DeliveryMode, Event, SubscriptionBuilder},
};
use common::{connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

const EVENTS: &str = "EVENTS";

fn subscribe(conn: &Connection, service: &str) -> SubscriptionBuilder<Value> {
    conn.events()
        .subscribe::<Value>(service, "order.created", DeliveryMode::Compete)
}

/// Counts the messages on `subject` seen by a plain subscriber (JetStream
/// API requests go through the server, so a subscriber sees them).
async fn spy(url: &str, subject: String) -> Arc<AtomicU64> {
    let raw = async_nats::connect(url).await.unwrap();
    let mut sub = raw.subscribe(subject).await.unwrap();
    raw.flush().await.unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let count = seen.clone();
    tokio::spawn(async move {
        let _raw = raw;
        while sub.next().await.is_some() {
            count.fetch_add(1, Ordering::SeqCst);
        }
    });
    seen
}

/// The review's probe E1: 200 events, each failing on all of its 3
/// deliveries, cost a handful of consumer look-ups, not one per failure.
#[tokio::test]
async fn failures_do_not_each_ask_the_server_for_the_consumer() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let runs = Arc::new(AtomicU64::new(0));
    let counter = runs.clone();
    let sub = subscribe(&conn, "pull-storm")
        .concurrency(64)
        .max_deliver(3)
        .ack_wait(Duration::from_secs(5))
        .handler(move |_: Event<Value>| {
            let runs = counter.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err("the ledger is down".into())
            }
        })
        .start()
        .await
        .unwrap();
    let name = sub.consumer_name().to_owned();
    let asked = spy(
        &nats.url(),
        format!("$JS.API.CONSUMER.INFO.{EVENTS}.{name}"),
    )
    .await;
    let started = std::time::Instant::now();
    for n in 0..200 {
        conn.events()
            .publish("order", "created", &json!({ "n": n }))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(60), "600 handler runs", || async {
        runs.load(Ordering::SeqCst) >= 600
    })
    .await;
    let js = conn.jetstream().clone();
    eventually(Duration::from_secs(30), "200 dead letters", || {
        let js = js.clone();
        async move {
            aegis_sdk::dead_letter::recent(&js, 500)
                .await
                .is_ok_and(|d| d.len() >= 200)
        }
    })
    .await;
    let elapsed = started.elapsed();
    let requests = asked.load(Ordering::SeqCst);
    // A look-up at most every 2 s, plus a few.
    let bound = 3 + elapsed.as_secs() / 2;
    assert!(
        requests <= bound,
        "{requests} consumer look-ups for 600 failures in {elapsed:?} (at most {bound})"
    );
    sub.shutdown().await;
}

/// The review's probe E3: an instance (v1, `ack_wait` 30 s) runs a 6 s
/// handler; a newer one (v2) starts with `ack_wait` 3 s, which the server
/// now holds. v1 keeps its event: it is not run again on v2 meanwhile.
#[tokio::test]
async fn a_lowered_ack_wait_does_not_redeliver_a_running_handler() {
    lowered_ack_wait_keeps_the_handler("pull-ackwait", Duration::from_secs(6), Duration::ZERO)
        .await;
}

/// E3 with v2 starting 5 s into a 14 s handler: by then v1's last
/// in-progress acknowledgement must be younger than v2's 3 s, or the
/// server redelivers the event to v2 the moment it lowers `ack_wait`.
#[tokio::test]
async fn an_ack_wait_lowered_late_in_a_handler_does_not_redeliver_it() {
    lowered_ack_wait_keeps_the_handler(
        "pull-ackwait-late",
        Duration::from_secs(14),
        Duration::from_secs(5),
    )
    .await;
}

/// v1 (`ack_wait` 30 s) runs a handler lasting `run`; `v2_after` after
/// the handler started, v2 starts with `ack_wait` 3 s. The handler is
/// started once, on v1.
async fn lowered_ack_wait_keeps_the_handler(service: &str, run: Duration, v2_after: Duration) {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let starts: Arc<Mutex<Vec<(String, u64, Instant)>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let instance = |who: &'static str, ack_wait: Duration| {
        let (starts, done) = (starts.clone(), done.clone());
        subscribe(&conn, service)
            .ack_wait(ack_wait)
            .handler(move |e: Event<Value>| {
                let (starts, done) = (starts.clone(), done.clone());
                async move {
                    let n = e.payload["n"].as_u64().unwrap_or_default();
                    starts
                        .lock()
                        .unwrap()
                        .push((who.to_owned(), n, Instant::now()));
                    tokio::time::sleep(run).await;
                    done.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            })
            .start()
    };
    let v1 = instance("v1", Duration::from_secs(30)).await.unwrap();
    conn.events()
        .publish("order", "created", &json!({"n": 0}))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "v1 runs the event", || async {
        !starts.lock().unwrap().is_empty()
    })
    .await;
    // The condition is the handler's age: how long since v1's last
    // in-progress acknowledgement when v2 lowers `ack_wait`.
    let started = starts.lock().unwrap()[0].2;
    tokio::time::sleep_until((started + v2_after).into()).await;
    let v2 = instance("v2", Duration::from_secs(3)).await.unwrap();
    eventually(
        run + Duration::from_secs(15),
        "the handler done",
        || async { done.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    let seen: Vec<_> = starts
        .lock()
        .unwrap()
        .iter()
        .map(|(who, n, at)| (who.clone(), *n, at.duration_since(started)))
        .collect();
    let who: Vec<_> = seen.iter().map(|(who, n, _)| (who.clone(), *n)).collect();
    assert_eq!(who, vec![("v1".to_owned(), 0)], "handler starts: {seen:?}");
    v2.shutdown().await;
    v1.shutdown().await;
}

/// The review's probe E4: a `.deliver_all()` subscription handles events
/// 0-2, its consumer is deleted, event 3 is published. The consumer made
/// again resumes where it was: nothing is handled again beyond the one
/// the docs allow.
#[tokio::test]
async fn a_deleted_deliver_all_consumer_resumes_where_it_was() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let runs: Arc<Mutex<BTreeMap<u64, u64>>> = Arc::default();
    let seen = runs.clone();
    let sub = subscribe(&conn, "pull-resume")
        .deliver_all()
        .handler(move |e: Event<Value>| {
            let seen = seen.clone();
            async move {
                let n = e.payload["n"].as_u64().unwrap_or_default();
                *seen.lock().unwrap().entry(n).or_default() += 1;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let name = sub.consumer_name().to_owned();
    let events = conn.events();
    for n in 0..3 {
        events
            .publish("order", "created", &json!({ "n": n }))
            .await
            .unwrap();
    }
    let handled = |n: u64| {
        let runs = runs.clone();
        async move { runs.lock().unwrap().contains_key(&n) }
    };
    eventually(Duration::from_secs(20), "events 0-2 handled", || handled(2)).await;
    let stream = conn.jetstream().get_stream(EVENTS).await.unwrap();
    stream.delete_consumer(&name).await.unwrap();
    events
        .publish("order", "created", &json!({"n": 3}))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "event 3 handled", || handled(3)).await;
    let runs = runs.lock().unwrap().clone();
    let total: u64 = runs.values().sum();
    assert!(total <= 5, "handler runs per event: {runs:?}");
    sub.shutdown().await;
}
