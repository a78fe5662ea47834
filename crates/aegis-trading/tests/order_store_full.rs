//! A full `orders` bucket shows, against a real nats-server: every
//! order-service instance, leader and standby alike, reports UNHEALTHY
//! with the reason in words (the record's `statusDetail`), the leader
//! keeps leading (degraded: a hand-over would find the same full bucket),
//! and once there is room again (an operator raised the bound) both are
//! healthy and orders are taken again.

mod common;

use std::time::Duration;

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection, RegistryReader,
    contracts::{
        InstanceStatus, ServiceInstance,
        control::{METADATA_STATUS_DETAIL, METADATA_STATUS_REASON},
    },
    election::Role,
    rpc::{CallOptions, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, Order, OrderOptions},
};
use async_nats::jetstream::kv;
use common::{
    PATIENCE, connect, eventually, is_leader, server, start_order_risk,
    start_pricing_without_publication,
};
use serde_json::Value;

async fn create(conn: &Connection, client_order_id: &str) -> Result<Order, RpcError> {
    let req = serde_json::to_value(CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 1,
        price: None,
        client_order_id: client_order_id.into(),
    })
    .unwrap();
    let reply = conn
        .rpc()
        .call_active(
            ORDER_SERVICE,
            ORDER_GROUP,
            "create_order",
            &req,
            &CallOptions::default(),
        )
        .await?;
    Ok(reply.value)
}

async fn start_order(conn: &Connection, id: &str) -> Running {
    order::start(
        conn,
        OrderOptions {
            instance_id: Some(id.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Whether `record` says UNHEALTHY for its own check, because the order
/// store is full.
fn says_full(record: &ServiceInstance) -> bool {
    let meta = |key| record.metadata.get(key).and_then(Value::as_str);
    record.status == InstanceStatus::Unhealthy
        && meta(METADATA_STATUS_REASON) == Some("health_check")
        && meta(METADATA_STATUS_DETAIL).is_some_and(|d| d.contains("order store is full"))
}

fn healthy(record: &ServiceInstance) -> bool {
    record.status != InstanceStatus::Unhealthy
        && !record.metadata.contains_key(METADATA_STATUS_REASON)
        && !record.metadata.contains_key(METADATA_STATUS_DETAIL)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_order_store_makes_every_instance_unhealthy_and_keeps_the_leader() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let js = conn.jetstream();
    // Some forty orders fill it.
    js.create_key_value(kv::Config {
        bucket: order::ORDERS_BUCKET.into(),
        history: 1,
        max_bytes: 40 * 1024,
        limit_markers: Some(Duration::from_secs(60)),
        ..Default::default()
    })
    .await
    .unwrap();
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;
    let leader = start_order(&conn, "order-1").await;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&leader) }).await;
    let standby = start_order(&conn, "order-2").await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let record = |id: &str| reader.get(ORDER_SERVICE, id);
    eventually(PATIENCE, "both records, healthy", || async {
        ["order-1", "order-2"]
            .iter()
            .all(|id| record(id).is_some_and(|r| healthy(&r)))
    })
    .await;
    let Some(Role::Leader { epoch }) = leader.service().election().map(|e| e.role()) else {
        panic!("order-1 leads");
    };

    // Fill it: an order is refused.
    let mut taken = 0;
    let refused = loop {
        assert!(taken < 200, "a small bucket took 200 orders");
        match create(&conn, &format!("fill-{taken}")).await {
            Ok(_) => taken += 1,
            Err(e) => break e,
        }
    };
    assert!(
        refused.to_string().contains("full"),
        "the store is full: {refused}"
    );

    // Both say so, in words: the bucket is shared, its fullness a fact
    // every instance sees alike.
    eventually(
        PATIENCE,
        "the leader's record says the store is full",
        || async { record("order-1").is_some_and(|r| says_full(&r)) },
    )
    .await;
    eventually(PATIENCE, "the standby's record says it too", || async {
        record("order-2").is_some_and(|r| says_full(&r))
    })
    .await;
    let detail = record("order-1").unwrap().metadata[METADATA_STATUS_DETAIL].clone();
    assert!(
        detail
            .as_str()
            .is_some_and(|d| d.contains("of 40.0 KiB used") && d.contains("settled ones expire")),
        "the detail says how much, and what frees it: {detail}"
    );

    // Over five health checks (past the leader's three before it hands
    // over) the leader keeps leading: the standby would find the same
    // full bucket.
    let mut roles = leader.service().election().unwrap().roles();
    roles.mark_unchanged();
    let watched = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < watched {
        assert!(
            !roles.has_changed().unwrap() && !is_leader(&standby),
            "leadership moved while the store was full: {:?}",
            *roles.borrow()
        );
        assert!(
            record("order-1").is_some_and(|r| says_full(&r)),
            "the leader stays UNHEALTHY while full: {:?}",
            record("order-1")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        leader.service().election().unwrap().role(),
        Role::Leader { epoch },
        "the same term leads"
    );

    // An operator raises the bound: both are healthy, orders are taken.
    let mut stream = js.get_stream("KV_orders").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_bytes = 200 * 1024;
    js.update_stream(config).await.unwrap();
    eventually(PATIENCE, "both healthy again", || async {
        ["order-1", "order-2"]
            .iter()
            .all(|id| record(id).is_some_and(|r| healthy(&r)))
    })
    .await;
    create(&conn, "after-the-raise").await.unwrap();
    assert!(is_leader(&leader), "order-1 still leads");

    standby.shutdown().await.unwrap();
    leader.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
