//! order-service after its `service_elections` bucket was deleted and
//! created again while the `orders` bucket was kept. A bucket created again
//! numbers its revisions from 1, and a revision is the fencing epoch: the
//! next leader's epoch is far below the one the order store's fence holds
//! from before. The SDK's callers forget the old epochs with the old
//! bucket (`aegis-sdk/tests/call_active.rs`,
//! `the_highest_epoch_seen_does_not_outlive_the_elections_bucket`); the
//! order store's fence must too, or the new leader is refused every write;
//! and so must the epochs recorded on the orders, or an order left pending
//! under the old bucket's leader can never be decided.
//!
//! Records written by a version before terms were recorded name no
//! elections bucket and carry the old bucket's high epochs: the new
//! bucket's leader takes such a fence, and must finish such orders too, or
//! one left pending is never decided (its retries answer NOT_ACTIVE from
//! the only leader there is) and one decided but not yet announced is
//! never swept.

mod common;

use std::time::Duration;

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, Order, OrderOptions, OrderStatus},
};
use common::{
    PATIENCE, connect, eventually, is_leader, server, start_order_risk,
    start_pricing_without_publication,
};
use serde_json::Value;

fn market(client_order_id: &str) -> CreateOrder {
    CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 1,
        price: None,
        client_order_id: client_order_id.into(),
    }
}

/// Sends `req` to the leader, retried within 15 s as an order client does
/// (by its client order id).
async fn create(conn: &Connection, req: &CreateOrder) -> Result<Order, RpcError> {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(15)),
        idempotent: true,
        ..Default::default()
    };
    create_with(conn, req, &opts).await
}

async fn create_with(
    conn: &Connection,
    req: &CreateOrder,
    opts: &CallOptions,
) -> Result<Order, RpcError> {
    conn.rpc()
        .call_active(ORDER_SERVICE, ORDER_GROUP, "create_order", req, opts)
        .await
        .map(|reply| reply.value)
}

/// Fills the elections bucket first, so that the first leader's epoch is
/// high.
async fn high_epochs(conn: &Connection) {
    let elections = aegis_sdk::election::ensure_election_bucket(conn.jetstream(), 1)
        .await
        .unwrap();
    for n in 0..200u32 {
        elections.put("filler", n.to_string().into()).await.unwrap();
    }
}

/// Deletes the elections bucket (the next leader creates it again).
async fn delete_elections(conn: &Connection) {
    conn.jetstream()
        .delete_stream("KV_service_elections")
        .await
        .unwrap();
}

async fn order_instance(conn: &Connection, id: &str) -> Running {
    let instance = order::start(
        conn,
        OrderOptions {
            instance_id: Some(id.into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(PATIENCE, "the order instance leads", || async {
        is_leader(&instance)
    })
    .await;
    instance
}

/// Records `req` pending under a first leader, order-1, while risk is
/// down (so under the old bucket's epoch), and stops that leader; the
/// order's id.
async fn left_pending(conn: &Connection, req: &CreateOrder) -> String {
    let first = order_instance(conn, "order-1").await;
    let failed = create_with(conn, req, &CallOptions::default())
        .await
        .unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ServiceUnavailable, "{failed:?}");
    let details = failed.remote().unwrap().details.clone().unwrap();
    let order_id = details["order_id"].as_str().unwrap().to_owned();
    first.shutdown().await.unwrap();
    order_id
}

/// Deletes the elections bucket, starts risk and a new leader, order-2,
/// and retries `req` as its caller would: the retry fills the pending
/// order `order_id` on the new bucket's leader.
async fn decided_after_the_elections_bucket_is_created_again(
    conn: &Connection,
    req: &CreateOrder,
    order_id: &str,
) {
    delete_elections(conn).await;
    let risk = start_order_risk(conn).await;
    let second = order_instance(conn, "order-2").await;
    let order = create(conn, req)
        .await
        .expect("the new bucket's leader decides the pending order");
    assert_eq!(order.order_id, order_id);
    assert_eq!(order.status, OrderStatus::Filled);
    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_taken_after_the_elections_bucket_is_created_again() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    high_epochs(&conn).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;

    let first = order_instance(&conn, "order-1").await;
    let order = create(&conn, &market("c-before")).await.unwrap();
    assert_eq!(order.status, OrderStatus::Filled);
    assert!(order.epoch > 200, "{order:?}");
    first.shutdown().await.unwrap();

    // The elections bucket starts over; the orders bucket (and its fence,
    // taken at the old epoch) stays.
    delete_elections(&conn).await;
    let second = order_instance(&conn, "order-2").await;

    let order = create(&conn, &market("c-after"))
        .await
        .expect("the new bucket's leader takes orders");
    assert_eq!(order.status, OrderStatus::Filled);
    assert_eq!(order.instance_id, "order-2");

    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_left_pending_before_the_elections_bucket_was_created_again_is_decided() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    high_epochs(&conn).await;
    let pricing = start_pricing_without_publication(&conn).await;

    let req = market("c-pending");
    let order_id = left_pending(&conn, &req).await;

    decided_after_the_elections_bucket_is_created_again(&conn, &req, &order_id).await;
    pricing.shutdown().await.unwrap();
}

/// The orders bucket.
async fn orders(conn: &Connection) -> async_nats::jetstream::kv::Store {
    conn.jetstream()
        .get_key_value(order::ORDERS_BUCKET)
        .await
        .unwrap()
}

/// The stored JSON of `key` in the orders bucket.
async fn stored(conn: &Connection, key: &str) -> (u64, Value) {
    let entry = orders(conn)
        .await
        .entry(key)
        .await
        .unwrap()
        .expect("stored");
    (
        entry.revision,
        serde_json::from_slice(&entry.value).unwrap(),
    )
}

/// Rewrites `key` in the orders bucket as a version before terms wrote it
/// (no `elections_created`), changed further by `edit`.
async fn as_before_terms(conn: &Connection, key: &str, edit: impl FnOnce(&mut Value)) {
    let (revision, mut value) = stored(conn, key).await;
    let fields = value.as_object_mut().unwrap();
    assert!(
        fields.remove("elections_created").is_some(),
        "{key}: {value}"
    );
    edit(&mut value);
    orders(conn)
        .await
        .update(key, serde_json::to_vec(&value).unwrap().into(), revision)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_order_recorded_before_terms_is_decided_after_the_elections_bucket_is_created_again()
 {
    let nats = server();
    let conn = connect(&nats.url()).await;
    high_epochs(&conn).await;
    let pricing = start_pricing_without_publication(&conn).await;

    let req = market("c-legacy-pending");
    let order_id = left_pending(&conn, &req).await;
    as_before_terms(&conn, &format!("order.{order_id}"), |_| {}).await;
    as_before_terms(&conn, order::FENCE_KEY, |_| {}).await;

    decided_after_the_elections_bucket_is_created_again(&conn, &req, &order_id).await;
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unannounced_fill_recorded_before_terms_is_swept_after_the_elections_bucket_is_created_again()
 {
    let nats = server();
    let conn = connect(&nats.url()).await;
    high_epochs(&conn).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;

    let first = order_instance(&conn, "order-1").await;
    let order = create(&conn, &market("c-legacy-filled")).await.unwrap();
    assert_eq!(order.status, OrderStatus::Filled);
    first.shutdown().await.unwrap();
    // As if its leader stopped between deciding it and recording that its
    // fill was announced.
    let key = format!("order.{}", order.order_id);
    as_before_terms(&conn, &key, |v| v["announced"] = Value::Bool(false)).await;
    as_before_terms(&conn, order::FENCE_KEY, |_| {}).await;

    delete_elections(&conn).await;
    let second = order_instance(&conn, "order-2").await;
    eventually(
        PATIENCE,
        "the new bucket's leader sweeps the unannounced fill",
        || async { stored(&conn, &key).await.1["announced"] == Value::Bool(true) },
    )
    .await;

    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
