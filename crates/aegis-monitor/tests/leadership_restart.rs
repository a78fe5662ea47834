//! The failover timeline (`GET /api/leadership/{service}`) against a real
//! nats-server: a stop and start of the whole fleet is no hand-over. A
//! stopping leader steps down (it waits for its requests, resigns, then
//! deregisters), so its goodbye comes after its standbys' have; the new
//! leader's process is known to have started after that goodbye from its
//! `registered` record, read from `AEGIS_LOG` with the others.

mod common;

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    subjects::log_subject,
};
use chrono::{DateTime, Duration, Utc};
use common::{Harness, VIEWER};
use serde_json::Value;

/// Stores a lifecycle record of `kind` at `at` as `instance` of
/// `order-service`, naming `epoch` when given (the ack awaited).
async fn store(h: &Harness, at: DateTime<Utc>, instance: &str, kind: LogKind, epoch: Option<u64>) {
    let conn = h.connect().await;
    let mut record = LogRecord::new(at, LogLevel::Info, kind, "lifecycle");
    if let Some(epoch) = epoch {
        record = record.with_field("epoch", epoch);
    }
    conn.jetstream()
        .publish(
            log_subject("order-service", instance),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_started_after_the_old_one_let_go_is_shown_restarted() {
    let h = Harness::start().await;
    let t0 = Utc::now() - Duration::seconds(60);
    let ms = Duration::milliseconds;
    for instance in ["order-1", "order-2", "order-3"] {
        store(&h, t0, instance, LogKind::Registered, None).await;
    }
    store(&h, t0 + ms(100), "order-2", LogKind::Elected, Some(5)).await;
    // Everything is stopped: the standbys first, the leader last.
    let stop = t0 + Duration::seconds(20);
    store(&h, stop, "order-1", LogKind::Deregistered, None).await;
    store(&h, stop + ms(10), "order-3", LogKind::Deregistered, None).await;
    let left = stop + ms(291);
    store(&h, left, "order-2", LogKind::LeadershipLost, Some(5)).await;
    store(&h, left + ms(1), "order-2", LogKind::Deregistered, Some(5)).await;
    // And started again: new processes, one of which wins.
    store(&h, left + ms(100), "order-1", LogKind::Registered, None).await;
    store(&h, left + ms(110), "order-3", LogKind::Registered, None).await;
    store(&h, left + ms(120), "order-2", LogKind::Registered, None).await;
    store(&h, left + ms(206), "order-1", LogKind::Elected, Some(90)).await;

    let r = h.get("/api/leadership/order-service", Some(VIEWER)).await;
    r.expect(200, None);
    let t: Vec<Value> = r.body["terms"].as_array().cloned().unwrap_or_default();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["endReason"], "resigned", "{t:?}");
    assert_eq!(t[1]["instanceId"], "order-1", "{t:?}");
    assert_eq!(t[1]["handoverFrom"], "order-2", "{t:?}");
    assert_eq!(t[1]["handoverMs"].as_f64(), Some(206.0), "{t:?}");
    assert_eq!(t[1]["handoverBasis"], "restart", "{t:?}");
    // Its registration ends nothing: it leads on.
    assert!(t[1]["endedAt"].is_null(), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_that_ran_before_the_let_go_hands_over() {
    let h = Harness::start().await;
    let t0 = Utc::now() - Duration::seconds(60);
    let ms = Duration::milliseconds;
    for instance in ["order-1", "order-2"] {
        store(&h, t0, instance, LogKind::Registered, None).await;
    }
    store(&h, t0 + ms(100), "order-2", LogKind::Elected, Some(5)).await;
    let left = t0 + Duration::seconds(20);
    store(&h, left, "order-2", LogKind::LeadershipLost, Some(5)).await;
    store(&h, left + ms(1), "order-2", LogKind::Deregistered, Some(5)).await;
    store(&h, left + ms(40), "order-1", LogKind::Elected, Some(9)).await;

    let r = h.get("/api/leadership/order-service", Some(VIEWER)).await;
    r.expect(200, None);
    let t: Vec<Value> = r.body["terms"].as_array().cloned().unwrap_or_default();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[1]["handoverMs"].as_f64(), Some(40.0), "{t:?}");
    assert_eq!(t[1]["handoverBasis"], "notice", "{t:?}");
}
