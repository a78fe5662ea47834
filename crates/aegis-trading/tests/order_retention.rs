//! How long order-service keeps settled orders, against a real nats-server:
//! a bounded `orders` bucket keeps taking orders once the settled ones it
//! holds have expired, and a full one says so.

mod common;

use std::time::Duration;

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::order::{self, CreateOrder, Order, OrderOptions, OrderStatus};
use async_nats::jetstream::kv;
use common::{connect, eventually, server, start_order_risk, start_pricing_without_publication};
use serde_json::json;

async fn call<Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    method: &str,
    req: &serde_json::Value,
) -> Result<Res, RpcError> {
    let reply = conn
        .rpc()
        .call_active(
            ORDER_SERVICE,
            ORDER_GROUP,
            method,
            req,
            &CallOptions::default(),
        )
        .await?;
    Ok(reply.value)
}

fn buy(client_order_id: &str) -> serde_json::Value {
    serde_json::to_value(CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 1,
        price: None,
        client_order_id: client_order_id.into(),
    })
    .unwrap()
}

/// The `orders` bucket as `aegis init` makes it, but small: some forty
/// orders fill it.
async fn small_orders_bucket(conn: &Connection) {
    conn.jetstream()
        .create_key_value(kv::Config {
            bucket: order::ORDERS_BUCKET.into(),
            history: 1,
            max_bytes: 40 * 1024,
            limit_markers: Some(Duration::from_secs(60)),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// A desk left running fills any bound, however wide, if it keeps every
/// order: the showcase's 256 MiB took about nine hours of `aegis traffic`,
/// then refused every order. Settled orders now expire after
/// `keep_settled`, so the bucket takes orders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_orders_bucket_takes_orders_again_once_settled_ones_expire() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    small_orders_bucket(&conn).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;
    let desk = order::start(
        &conn,
        OrderOptions {
            keep_settled: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // What it keeps for is shown with its record.
    let reader = aegis_sdk::RegistryReader::start(&conn).await.unwrap();
    eventually(
        Duration::from_secs(10),
        "the record names keep_settled",
        || async {
            reader.all().iter().any(|i| {
                i.service_name == ORDER_SERVICE
                    && i.metadata.get("keep_settled").and_then(|v| v.as_str()) == Some("2s")
            })
        },
    )
    .await;

    // Fill the bucket: each order takes two keys of some 0.8 KiB together.
    let mut taken = Vec::new();
    let refused = loop {
        assert!(taken.len() < 200, "a 40 KiB bucket took 200 orders");
        match call::<Order>(
            &conn,
            "create_order",
            &buy(&format!("fill-{}", taken.len())),
        )
        .await
        {
            Ok(order) => taken.push(order),
            Err(e) => break e,
        }
    };
    assert!(taken.len() >= 10, "only {} orders fit", taken.len());
    assert!(
        taken.iter().all(|o| o.status == OrderStatus::Filled),
        "{taken:?}"
    );
    let said = refused.to_string();
    assert!(
        said.contains("full") && said.contains(order::ORDERS_BUCKET),
        "a full bucket is named as the cause: {said}"
    );

    // Once the settled orders expired, orders are taken again, many more
    // than the bucket holds at once.
    eventually(
        Duration::from_secs(20),
        "an order is taken once the settled ones expired",
        || async {
            call::<Order>(&conn, "create_order", &buy("after-expiry"))
                .await
                .is_ok()
        },
    )
    .await;
    // An expired order is gone: not read, and (once the index's watch has
    // seen its marker) not listed.
    let last = &taken[taken.len() - 1].order_id;
    eventually(
        Duration::from_secs(20),
        "the last order taken expired",
        || async {
            call::<Order>(&conn, "get_order", &json!({"order_id": last}))
                .await
                .is_err_and(|e| e.code() == ErrorCode::NotFound)
        },
    )
    .await;
    let gone = call::<Order>(&conn, "get_order", &json!({"order_id": taken[0].order_id}))
        .await
        .unwrap_err();
    assert_eq!(gone.code(), ErrorCode::NotFound);
    assert_eq!(
        gone.remote().and_then(|w| w.details.clone()),
        Some(json!({ "kept_for_secs": 2 })),
        "a reader can tell an order that may have expired: {gone:?}"
    );
    assert!(
        gone.to_string().contains("settled orders are kept for 2s"),
        "{gone}"
    );
    eventually(
        Duration::from_secs(20),
        "expired orders leave the listing",
        || async {
            let listed: order::OrderList = call(&conn, "list_orders", &json!({"limit": 1000}))
                .await
                .unwrap();
            listed
                .orders
                .iter()
                .all(|o| !taken.iter().any(|t| t.order_id == o.order_id))
        },
    )
    .await;

    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// A bucket made before settled orders expired (every `aegis up` state
/// directory and chart release before it): the service still takes orders,
/// kept without an expiry, and `aegis init`'s bounding turns expiry on in
/// place, after which a restarted service's settled orders expire, and
/// so do those written before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_made_before_expiry_is_turned_on_in_place() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let js = conn.jetstream();
    js.create_key_value(kv::Config {
        bucket: order::ORDERS_BUCKET.into(),
        history: 1,
        max_bytes: aegis_trading::ORDERS.max_bytes,
        ..Default::default()
    })
    .await
    .unwrap();
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;
    let opts = || OrderOptions {
        keep_settled: Duration::from_secs(1),
        ..Default::default()
    };
    let desk = order::start(&conn, opts()).await.unwrap();
    let before: Order = call(&conn, "create_order", &buy("before-upgrade"))
        .await
        .unwrap();
    desk.shutdown().await.unwrap();

    let done = aegis_trading::bound_buckets(js).await.unwrap();
    let (stream, bound) = done
        .iter()
        .find(|(name, _)| name == "KV_orders")
        .expect("the orders bucket was changed");
    assert_eq!(stream, "KV_orders");
    for change in ["per-value expiry off -> on", "expiry markers none -> 60s"] {
        assert!(
            bound.changes.iter().any(|c| c == change),
            "{change}: {:?}",
            bound.changes
        );
    }
    let mut stream = js.get_stream("KV_orders").await.unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(config.allow_message_ttl);
    assert_eq!(
        config.subject_delete_marker_ttl,
        Some(Duration::from_secs(60))
    );
    assert!(
        aegis_trading::bound_buckets(js).await.unwrap().is_empty(),
        "a second bounding changes nothing"
    );

    let desk = order::start(&conn, opts()).await.unwrap();
    let after: Order = call(&conn, "create_order", &buy("after-upgrade"))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "an order settled after the upgrade expires",
        || async {
            call::<Order>(&conn, "get_order", &json!({"order_id": after.order_id}))
                .await
                .is_err_and(|e| e.code() == ErrorCode::NotFound)
        },
    )
    .await;
    // One written before is given its expiry by the new leader too.
    eventually(
        Duration::from_secs(20),
        "the order written before the upgrade expires",
        || async {
            call::<Order>(&conn, "get_order", &json!({"order_id": before.order_id}))
                .await
                .is_err_and(|e| e.code() == ErrorCode::NotFound)
        },
    )
    .await;

    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// What a version that kept every order left in the bucket is given an
/// expiry too, or a bucket full of it before the upgrade stays full for
/// good (found by the day-2 trial): the leader writes each settled order
/// and claim written without one again, unchanged, expiring what is left
/// of its time, so the full bucket takes orders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_written_before_expiry_expire_after_the_upgrade() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let js = conn.jetstream();
    // Made as before, and small: filled by the old version's orders.
    js.create_key_value(kv::Config {
        bucket: order::ORDERS_BUCKET.into(),
        history: 1,
        max_bytes: 40 * 1024,
        ..Default::default()
    })
    .await
    .unwrap();
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_order_risk(&conn).await;
    let opts = || OrderOptions {
        keep_settled: Duration::from_secs(2),
        ..Default::default()
    };
    // Without per-value expiry the service keeps what it writes, as the
    // old version did.
    let desk = order::start(&conn, opts()).await.unwrap();
    let mut before = Vec::new();
    loop {
        assert!(before.len() < 200, "a 40 KiB bucket took 200 orders");
        match call::<Order>(
            &conn,
            "create_order",
            &buy(&format!("old-{}", before.len())),
        )
        .await
        {
            Ok(order) => before.push(order),
            Err(_) => break,
        }
    }
    let filled = tokio::time::Instant::now();
    desk.shutdown().await.unwrap();
    // Their time is up (at the first attempt; one still within it is
    // written again, which a full bucket refuses until the next).
    tokio::time::sleep_until(filled + opts().keep_settled).await;

    // The upgrade: init turns expiry on, the new version starts.
    aegis_trading::bound_buckets(js).await.unwrap();
    let desk = order::start(&conn, opts()).await.unwrap();
    eventually(
        Duration::from_secs(30),
        "the full bucket takes an order again",
        || async {
            call::<Order>(&conn, "create_order", &buy("after-upgrade"))
                .await
                .is_ok()
        },
    )
    .await;
    eventually(
        Duration::from_secs(20),
        "the old orders expired",
        || async {
            call::<Order>(&conn, "get_order", &json!({"order_id": before[0].order_id}))
                .await
                .is_err_and(|e| e.code() == ErrorCode::NotFound)
        },
    )
    .await;

    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
