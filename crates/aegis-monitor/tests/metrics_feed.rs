//! The metrics feed against a real nats-server: when it is opened again
//! (here: the server restarted, so the connection was re-established) it
//! reads the last snapshot of every subject once more, and only the ones
//! it did not hold yet go out on the live stream; and a snapshot stamped
//! in the future does not hold back the ones published after it.

mod common;

use std::time::Duration;

use aegis_contracts::{
    MetricsSnapshot, ServiceInstance,
    subjects::{REGISTRY_BUCKET, metrics_subject, registry_key},
};
use aegis_sdk::Connection;
use chrono::Utc;
use common::{Events, Harness, VIEWER, eventually};

fn snapshot(service: &str, instance: &str, queue_depth: u64) -> MetricsSnapshot {
    MetricsSnapshot {
        service_name: service.into(),
        instance_id: instance.into(),
        timestamp: Utc::now(),
        queue_depth,
        ..Default::default()
    }
}

/// Publishes `s` and waits for the stream's ack; false if it failed (the
/// connection is being re-established).
async fn try_publish(conn: &Connection, s: &MetricsSnapshot) -> bool {
    let Ok(ack) = conn
        .jetstream()
        .publish(
            metrics_subject(&s.service_name, &s.instance_id),
            serde_json::to_vec(s).unwrap().into(),
        )
        .await
    else {
        return false;
    };
    ack.await.is_ok()
}

/// After a NATS node died the feed is opened again from the last message
/// of every subject; those it already held must not go out to every live
/// client again (with more than the live channel's capacity of them, every
/// client was told it lagged, just when an operator was watching).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reopened_feed_does_not_send_the_snapshots_it_holds_again() {
    const HELD: u64 = 20;
    let mut h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let mut events = Events::open(addr, "metrics").await;
    events.next_named("hello").await;

    let conn = h.connect().await;
    for n in 1..=HELD {
        let s = snapshot("replay-service", &format!("replay-{n}"), n);
        assert!(try_publish(&conn, &s).await, "publish {n}");
    }
    // The feed holds them all once each was sent live (in order).
    let mut seen = 0;
    while seen < HELD {
        let e = events.next_named("metrics").await;
        assert_eq!(e["snapshot"]["queueDepth"], seen + 1, "{e}");
        seen += 1;
    }

    // The server restarts: the monitor's connection is re-established and
    // the feed is opened again, reading the last snapshot of every subject.
    h.nats.restart().expect("restart nats-server");
    // A new snapshot, published after the restart, is the last message of
    // the stream: once it is sent live the replay before it is done.
    let marker = snapshot("replay-service", "marker-1", 1000);
    eventually(
        Duration::from_secs(20),
        "a snapshot published after the restart",
        || try_publish(&conn, &marker),
    )
    .await;
    let mut again = Vec::new();
    loop {
        let e = events.next_named("metrics").await;
        if e["snapshot"]["instanceId"] == "marker-1" {
            break;
        }
        again.push(e["snapshot"]["instanceId"].clone());
    }
    assert!(
        again.is_empty(),
        "snapshots the feed already held were sent live again: {again:?}"
    );
    stop.cancel();
}

/// One snapshot stamped in the future (its publisher's clock was stepped
/// back afterwards) must not freeze the instance's figures until wall time
/// catches up: the next snapshot in the stream is the latest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_stamped_in_the_future_does_not_hold_back_the_next() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let bucket = conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    let record = ServiceInstance::new(
        "clock-service",
        "clock-1",
        "1.0.0",
        Utc::now() - chrono::Duration::minutes(1),
    );
    bucket
        .put(
            registry_key(&record.service_name, &record.instance_id),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
    let shown = || async {
        h.get("/api/metrics", Some(VIEWER)).await.body[0]["snapshot"]["queueDepth"].clone()
    };

    let mut ahead = snapshot("clock-service", "clock-1", 1);
    ahead.timestamp = Utc::now() + chrono::Duration::hours(1);
    assert!(try_publish(&conn, &ahead).await);
    eventually(
        Duration::from_secs(5),
        "the snapshot from ahead",
        || async { shown().await == 1 },
    )
    .await;
    // The clock was stepped back: the next snapshot is stamped earlier.
    assert!(try_publish(&conn, &snapshot("clock-service", "clock-1", 2)).await);
    eventually(Duration::from_secs(5), "the next snapshot", || async {
        shown().await == 2
    })
    .await;
}
