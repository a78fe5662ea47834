//! How long order-service keeps settled orders, against a real nats-server:
//! a bounded `orders` bucket keeps taking orders once the settled ones it
//! holds have expired, and a full one says so; a bucket made before orders
//! expired is turned to it in place, and what it held expires too.

mod common;

use std::time::Duration;

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, Order, OrderList, OrderOptions, OrderStatus},
};
use async_nats::jetstream::kv;
use common::{connect, eventually, server, start_order_risk, start_pricing_without_publication};
use serde_json::{Value, json};

const PATIENCE: Duration = Duration::from_secs(20);

async fn call<Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    method: &str,
    req: &Value,
) -> Result<Res, RpcError> {
    let opts = CallOptions::default();
    let reply = conn
        .rpc()
        .call_active(ORDER_SERVICE, ORDER_GROUP, method, req, &opts)
        .await?;
    Ok(reply.value)
}

fn buy(client_order_id: &str) -> Value {
    serde_json::to_value(CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 1,
        price: None,
        client_order_id: client_order_id.into(),
    })
    .unwrap()
}

/// Whether `order_id` is gone from the order service (NOT_FOUND).
async fn gone(conn: &Connection, order_id: &str) -> bool {
    call::<Order>(conn, "get_order", &json!({ "order_id": order_id }))
        .await
        .is_err_and(|e| e.code() == ErrorCode::NotFound)
}

/// Makes the `orders` bucket of `max_bytes`: as `aegis init` makes it
/// (`expiring`), or as it was made before settled orders expired.
async fn orders_bucket(conn: &Connection, max_bytes: i64, expiring: bool) {
    conn.jetstream()
        .create_key_value(kv::Config {
            bucket: order::ORDERS_BUCKET.into(),
            history: 1,
            max_bytes,
            limit_markers: expiring.then_some(Duration::from_secs(60)),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// pricing, risk and order-service keeping settled orders for `keep`.
struct Desk {
    pricing: Running,
    risk: Running,
    order: Running,
}

fn keeping(keep: Duration) -> OrderOptions {
    OrderOptions {
        keep_settled: keep,
        ..Default::default()
    }
}

impl Desk {
    async fn start(conn: &Connection, keep: Duration) -> Desk {
        Desk {
            pricing: start_pricing_without_publication(conn).await,
            risk: start_order_risk(conn).await,
            order: order::start(conn, keeping(keep)).await.unwrap(),
        }
    }

    /// Stops order-service and starts it again (an upgrade).
    async fn restart_order(self, conn: &Connection, keep: Duration) -> Desk {
        self.order.shutdown().await.unwrap();
        Desk {
            order: order::start(conn, keeping(keep)).await.unwrap(),
            ..self
        }
    }

    async fn shutdown(self) {
        self.order.shutdown().await.unwrap();
        self.risk.shutdown().await.unwrap();
        self.pricing.shutdown().await.unwrap();
    }
}

/// Creates orders until one is refused: the orders taken, and the refusal.
async fn fill(conn: &Connection, prefix: &str) -> (Vec<Order>, RpcError) {
    let mut taken = Vec::new();
    loop {
        assert!(taken.len() < 200, "a small bucket took 200 orders");
        let client_order_id = format!("{prefix}-{}", taken.len());
        match call::<Order>(conn, "create_order", &buy(&client_order_id)).await {
            Ok(order) => taken.push(order),
            Err(e) => return (taken, e),
        }
    }
}

/// A desk left running fills any bound, however wide, if it keeps every
/// order: the showcase's 256 MiB took about nine hours of `aegis traffic`,
/// then refused every order. Settled orders now expire after
/// `keep_settled`, so the bucket takes orders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_orders_bucket_takes_orders_again_once_settled_ones_expire() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    // Some forty orders fill it.
    orders_bucket(&conn, 40 * 1024, true).await;
    let desk = Desk::start(&conn, Duration::from_secs(2)).await;

    // What it keeps for is shown with its record.
    let reader = aegis_sdk::RegistryReader::start(&conn).await.unwrap();
    eventually(PATIENCE, "the record names keep_settled", || async {
        reader.all().iter().any(|i| {
            i.service_name == ORDER_SERVICE
                && i.metadata.get("keep_settled").and_then(|v| v.as_str()) == Some("2s")
        })
    })
    .await;

    // Fill the bucket: each order takes two keys of some 0.8 KiB together.
    let (taken, refused) = fill(&conn, "fill").await;
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

    // Once the settled orders expired, orders are taken again.
    eventually(
        PATIENCE,
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
    eventually(PATIENCE, "the last order taken expired", || {
        gone(&conn, last)
    })
    .await;
    let first = json!({ "order_id": taken[0].order_id });
    let said = call::<Order>(&conn, "get_order", &first).await.unwrap_err();
    assert_eq!(said.code(), ErrorCode::NotFound);
    assert_eq!(
        said.remote().and_then(|w| w.details.clone()),
        Some(json!({ "kept_for_secs": 2 })),
        "a reader can tell an order that may have expired: {said:?}"
    );
    assert!(
        said.to_string().contains("settled orders are kept for 2s"),
        "{said}"
    );
    eventually(PATIENCE, "expired orders leave the listing", || async {
        let listed: OrderList = call(&conn, "list_orders", &json!({"limit": 1000}))
            .await
            .unwrap();
        listed
            .orders
            .iter()
            .all(|o| !taken.iter().any(|t| t.order_id == o.order_id))
    })
    .await;

    desk.shutdown().await;
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
    orders_bucket(&conn, aegis_trading::ORDERS.max_bytes, false).await;
    let keep = Duration::from_secs(1);
    let desk = Desk::start(&conn, keep).await;
    let before: Order = call(&conn, "create_order", &buy("before-upgrade"))
        .await
        .unwrap();

    let done = aegis_trading::bound_buckets(js).await.unwrap();
    let (_, bound) = done
        .iter()
        .find(|(name, _)| name == "KV_orders")
        .expect("the orders bucket was changed");
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

    let desk = desk.restart_order(&conn, keep).await;
    let after: Order = call(&conn, "create_order", &buy("after-upgrade"))
        .await
        .unwrap();
    eventually(
        PATIENCE,
        "an order settled after the upgrade expires",
        || gone(&conn, &after.order_id),
    )
    .await;
    // One written before is given its expiry by the new leader too.
    eventually(
        PATIENCE,
        "the order written before the upgrade expires",
        || gone(&conn, &before.order_id),
    )
    .await;

    desk.shutdown().await;
}

/// What a version that kept every order left in the bucket is given an
/// expiry too, or a bucket full of it before the upgrade stays full for
/// good (found by the day-2 trial): the new leader removes what has had
/// its time, and gives the rest what is left of it, so the full bucket
/// takes orders again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_written_before_expiry_expire_after_the_upgrade() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    // Made as before, and small: filled by the old version's orders (on a
    // bucket without per-value expiry, the service keeps what it writes).
    orders_bucket(&conn, 40 * 1024, false).await;
    let keep = Duration::from_secs(2);
    let desk = Desk::start(&conn, keep).await;
    let (before, _) = fill(&conn, "old").await;
    // Their time is up at the first attempt (one still within it would be
    // written again, which a full bucket refuses until the next attempt).
    tokio::time::sleep_until(tokio::time::Instant::now() + keep).await;

    // The upgrade: init turns expiry on, the new version starts.
    aegis_trading::bound_buckets(conn.jetstream())
        .await
        .unwrap();
    let desk = desk.restart_order(&conn, keep).await;
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
    eventually(PATIENCE, "the old orders expired", || {
        gone(&conn, &before[0].order_id)
    })
    .await;

    desk.shutdown().await;
}
