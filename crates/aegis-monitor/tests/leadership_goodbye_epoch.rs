//! The failover timeline (`GET /api/leadership/{service}`) against a real
//! nats-server: a goodbye that names its term's fencing epoch ends that
//! term only, even when it is stamped after a later election of the same
//! instance (its host's clock ahead), so the newer term is never shown
//! ended by a goodbye written before it began.

mod common;

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    subjects::log_subject,
};
use chrono::{DateTime, Utc};
use common::{Harness, VIEWER};
use serde_json::Value;

/// Stores a lifecycle record of `kind` at `at`, naming `epoch`, as
/// `order-x` of `order-service` (the ack awaited).
async fn store(h: &Harness, at: DateTime<Utc>, kind: LogKind, epoch: u64) {
    let conn = h.connect().await;
    let body = serde_json::to_vec(
        &LogRecord::new(at, LogLevel::Info, kind, "leadership").with_field("epoch", epoch),
    )
    .unwrap();
    conn.jetstream()
        .publish(log_subject("order-service", "order-x"), body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_goodbye_of_an_earlier_term_does_not_end_the_instances_new_term() {
    let h = Harness::start().await;
    let t0 = Utc::now() - chrono::Duration::seconds(30);
    // order-x leads at epoch 3, on a host whose clock runs 8 s ahead: its
    // goodbye, written 2 s after its election, is stamped 10 s after it.
    store(&h, t0, LogKind::Elected, 3).await;
    store(
        &h,
        t0 + chrono::Duration::seconds(10),
        LogKind::LeadershipLost,
        3,
    )
    .await;
    // order-x started again on a host whose clock is right, and won the
    // key back at epoch 4: stored after the goodbye, stamped before it.
    let again = t0 + chrono::Duration::seconds(5);
    store(&h, again, LogKind::Elected, 4).await;

    let r = h.get("/api/leadership/order-service", Some(VIEWER)).await;
    r.expect(200, None);
    let t: Vec<Value> = r.body["terms"].as_array().cloned().unwrap_or_default();
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(
        (t[0]["epoch"].as_u64(), t[1]["epoch"].as_u64()),
        (Some(3), Some(4)),
        "{t:?}"
    );
    // The term at epoch 4 leads on: the goodbye names epoch 3.
    assert!(
        t[1]["endedAt"].is_null(),
        "ended by epoch 3's goodbye: {t:?}"
    );
    assert!(t[1]["endReason"].is_null(), "{t:?}");
    // The term at epoch 3 ended no later than epoch 4 began.
    let ended: DateTime<Utc> = t[0]["endedAt"]
        .as_str()
        .expect("epoch 3 ended")
        .parse()
        .unwrap();
    assert!(ended <= again, "{t:?}");
}
