//! A NATS node dies and the services' shared state stays current: on a
//! 3-node cluster with R3 buckets, what one instance writes reaches the
//! others within a second of the write, also the ones whose own node died.

mod common;

use std::time::{Duration, Instant};

use aegis_testkit::{NatsCluster, leaders, wait::until_some};
use aegis_trading::risk::{self, RiskLimits};
use common::{PATIENCE, connect_nodes, eventually, limits_of, risk_options, update_limits};
use serde_json::json;

/// risk-b's node dies while it leads the limits bucket's stream and the
/// JetStream meta group, so no write lands until the stream elects a new
/// leader (4–9 s), and no consumer can be made until the meta group has
/// one. An operator tightens the limits through risk-a as soon as
/// the bucket takes writes: risk-b, reconnected to a surviving node, must
/// judge by them within a second, not go on approving orders by the old
/// ones while its watch waits to be opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limits_update_reaches_an_instance_whose_node_died_within_a_second() {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    cluster
        .wait_ready(Duration::from_secs(30))
        .expect("the cluster is ready");
    let urls = cluster.urls();
    // risk-b on the node that leads the meta group (it reconnects to the
    // others, which its server announces, once that node dies).
    let b_index = cluster
        .meta_leader()
        .expect("the cluster has a meta leader");
    let b_node = cluster.nodes()[b_index].server_name().to_owned();
    let b_conn = connect_nodes(&urls[b_index..=b_index]).await;
    let elsewhere = cluster.urls_except(b_index);
    let a_conn = connect_nodes(&elsewhere[..1]).await;
    let caller = connect_nodes(&elsewhere[1..]).await;

    let a = risk::start(&a_conn, risk_options("risk-a")).await.unwrap();
    let b = risk::start(&b_conn, risk_options("risk-b")).await.unwrap();
    let before = until_some(PATIENCE, "risk-b answers", || async {
        limits_of(&caller, "risk-b").await.ok()
    })
    .await;
    assert_eq!(before, RiskLimits::default());
    // The worst case: the node leads the bucket's stream and the meta
    // group, so no write lands and no consumer can be made for seconds.
    leaders::lead_on(caller.client(), "KV_risk_limits", &b_node).await;
    assert_eq!(cluster.meta_leader(), Some(b_index), "the meta group moved");
    eprintln!("killing {b_node}: risk-b's node, leading KV_risk_limits and the meta group");
    cluster.kill_node(b_index);
    let killed = Instant::now();

    let quantity = RiskLimits::default().max_order_quantity / 2;
    let updated = until_some(
        Duration::from_secs(60),
        "the update through risk-a lands",
        || async {
            update_limits(
                &caller,
                "risk-a",
                &json!({ "max_order_quantity": quantity }),
            )
            .await
            .ok()
        },
    )
    .await;
    let written = Instant::now();
    assert_eq!(updated.max_order_quantity, quantity);
    eventually(PATIENCE, "risk-b judges by the new limits", || async {
        limits_of(&caller, "risk-b").await.ok().as_ref() == Some(&updated)
    })
    .await;
    let shown = written.elapsed();
    eprintln!(
        "update written {:?} after the kill; risk-b judged by it {shown:?} later",
        written - killed
    );
    assert!(
        shown <= Duration::from_secs(1),
        "risk-b judged by the new limits only {shown:?} after they were written"
    );
    // Not unwrapped: the registry's stream may still be electing a leader
    // (its node was killed too), and then a deregistration is refused,
    // "stream not found", and the record expires instead (seen in one run
    // of ten).
    let _ = a.shutdown().await;
    let _ = b.shutdown().await;
}
