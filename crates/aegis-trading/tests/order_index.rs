//! order-service's in-memory order index against a real nats-server: what
//! a leader judges and lists by when its index is not current — the
//! `orders` bucket was deleted and created again, or the watch feeding the
//! index holds back what the old leader stored.

mod common;

use std::{collections::HashSet, time::Duration};

use aegis_contracts::trading::{ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, ListOrders, Order, OrderList, OrderOptions, OrderStatus},
    risk::{self, RiskOptions},
};
use async_nats::jetstream::{self, kv};
use common::{
    PATIENCE, Recorder, connect, eventually, is_leader, server, start_pricing_without_publication,
};
use serde_json::{Value, json};

/// The `orders` bucket's stream.
fn orders_stream() -> String {
    format!("KV_{}", order::ORDERS_BUCKET)
}

/// Holds or lets go the deliveries of consumer `name` of the `orders`
/// bucket's stream (JetStream's consumer pause, server 2.11+): while held,
/// the watch reading it hands nothing over, as when it lags or is being
/// made again after its node died.
async fn hold_watch(conn: &Connection, name: &str, hold: bool) {
    let body = if hold {
        let until = chrono::Utc::now() + chrono::Duration::minutes(10);
        json!({ "pause_until": until.to_rfc3339() })
    } else {
        json!({})
    };
    let reply = conn
        .client()
        .request(
            format!("$JS.API.CONSUMER.PAUSE.{}.{name}", orders_stream()),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["paused"], json!(hold), "{reply}");
}

/// The names of the consumers on the `orders` bucket's stream (none while
/// it is missing).
async fn order_watches(conn: &Connection) -> HashSet<String> {
    use futures::TryStreamExt;
    match conn.jetstream().get_stream(orders_stream()).await {
        Ok(stream) => stream
            .consumer_names()
            .try_collect()
            .await
            .unwrap_or_default(),
        Err(_) => HashSet::new(),
    }
}

/// Waits until `watches` consumers follow the `orders` bucket and each has
/// handed over everything stored: the indexes fed by them are current.
async fn watches_current(conn: &Connection, watches: usize) -> HashSet<String> {
    eventually(PATIENCE, "the order watches are current", || async {
        let names = order_watches(conn).await;
        if names.len() != watches {
            return false;
        }
        let Ok(mut stream) = conn.jetstream().get_stream(orders_stream()).await else {
            return false;
        };
        let Ok(last) = stream.info().await.map(|i| i.state.last_sequence) else {
            return false;
        };
        for name in &names {
            match stream.consumer_info(name).await {
                Ok(info) if info.num_pending == 0 && info.delivered.stream_sequence >= last => {}
                _ => return false,
            }
        }
        true
    })
    .await;
    order_watches(conn).await
}

/// Requests give up on the index after a second; the sweep runs only when
/// leadership changes within the test.
fn options(n: usize) -> OrderOptions {
    OrderOptions {
        instance_id: Some(format!("order-{n}")),
        call_timeout: Duration::from_secs(1),
        stale_after: Duration::from_secs(120),
        expire_after: Duration::from_secs(240),
        ..Default::default()
    }
}

/// An order instance on its own connection, as a separate process has.
async fn start_order(url: &str, n: usize) -> Running {
    let conn = connect(url).await;
    order::start(&conn, options(n)).await.unwrap()
}

/// Calls `method` on order instance `instance`.
async fn call<Req: serde::Serialize, Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    instance: &str,
    method: &str,
    req: &Req,
) -> Result<Res, RpcError> {
    conn.rpc()
        .call_instance::<_, Res>(
            ORDER_SERVICE,
            instance,
            method,
            req,
            &CallOptions::timeout(Duration::from_secs(15)),
        )
        .await
        .map(|reply| reply.value)
}

fn buy(symbol: &str, quantity: i64, client_order_id: &str) -> CreateOrder {
    CreateOrder {
        symbol: symbol.into(),
        side: Side::Buy,
        quantity,
        price: None,
        client_order_id: client_order_id.into(),
    }
}

/// The epoch `instance` leads at.
fn epoch_of(instance: &Running) -> u64 {
    match instance.service().election().map(|e| e.role()) {
        Some(aegis_sdk::election::Role::Leader { epoch }) => epoch,
        other => panic!("not the leader: {other:?}"),
    }
}

/// Stores, as leader `epoch` would, a fill of `quantity` AAPL decided but
/// not announced: what a leader leaves when it stops between the two.
async fn store_unannounced_fill(conn: &Connection, epoch: u64, quantity: i64) {
    let old = buy("AAPL", quantity, "c-old");
    let mut filled = Order::new("ord-old".into(), &old, epoch, "order-1");
    filled.status = OrderStatus::Filled;
    filled.fill_price = Some(100.0);
    let orders = conn
        .jetstream()
        .get_key_value(order::ORDERS_BUCKET)
        .await
        .unwrap();
    orders.put("client.c-old", "ord-old".into()).await.unwrap();
    orders
        .put("order.ord-old", serde_json::to_vec(&filled).unwrap().into())
        .await
        .unwrap();
}

/// Risk with a position limit of 100.
async fn start_risk(conn: &Connection) -> Running {
    risk::start(
        conn,
        RiskOptions {
            limits: risk::RiskLimits {
                max_position: 100,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// An operator deletes the `orders` bucket and creates it again: its
/// revisions start over, below the ones a running instance's index has
/// seen. A new leader whose index still follows the old bucket — its watch
/// has not handed over the new bucket's entries — must not take the old
/// bucket's revisions for having caught up with the fence it takes in the
/// new one. Before, it judged an order at once, without the fill the old
/// leader had stored in the new bucket, and passed a position of 120 under
/// a limit of 100; and its listings held the old bucket's orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_judges_no_order_by_an_index_of_a_bucket_deleted_since() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "index-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_risk(&conn).await;
    let first = start_order(&nats.url(), 1).await;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&first) }).await;
    // Orders in the first bucket: its revisions pass the few the new
    // bucket will have when order-2 takes the fence in it.
    for i in 0..2 {
        let order: Order = call(
            &conn,
            "order-1",
            "create_order",
            &buy("MSFT", 1, &format!("c-{i}")),
        )
        .await
        .unwrap();
        assert_eq!(order.status, OrderStatus::Filled);
    }
    let second = start_order(&nats.url(), 2).await;
    watches_current(&conn, 2).await;

    let js = conn.jetstream();
    js.delete_key_value(order::ORDERS_BUCKET).await.unwrap();
    js.create_key_value(kv::Config {
        bucket: order::ORDERS_BUCKET.to_owned(),
        description: "order-service orders".to_owned(),
        history: 1,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap();
    // Both watches follow the new bucket; from here on they hand over
    // nothing (order-1's does not matter: it is about to stop).
    let watches = watches_current(&conn, 2).await;
    for watch in &watches {
        hold_watch(&conn, watch, true).await;
    }

    // order-1 stores a fill of 60 AAPL in the new bucket and stops before
    // announcing it.
    store_unannounced_fill(&conn, epoch_of(&first), 60).await;
    first.shutdown().await.unwrap();
    eventually(PATIENCE, "order-2 leads", || async { is_leader(&second) }).await;

    // Another 60 AAPL: judged without the first, it would pass.
    let next = buy("AAPL", 60, "c-next");
    let early = call::<_, Order>(&conn, "order-2", "create_order", &next).await;
    let refused = early
        .as_ref()
        .expect_err("judged by an index of the deleted bucket");
    assert_eq!(refused.code(), ErrorCode::ServiceUnavailable, "{refused}");

    // The watch catches up: order-2 announces the fill, judges the retry
    // with it, and lists only the new bucket's orders.
    for watch in order_watches(&conn).await {
        hold_watch(&conn, &watch, false).await;
    }
    events
        .wait_for("order-1's fill, announced by order-2", |e| {
            e["order_id"] == "ord-old" && e.get("fill_price").is_some()
        })
        .await;
    let retried: Order = call(&conn, "order-2", "create_order", &next).await.unwrap();
    assert_eq!(retried.status, OrderStatus::Rejected, "{retried:?}");
    let listed: OrderList = call(&conn, "order-2", "list_orders", &ListOrders::default())
        .await
        .unwrap();
    let mut ids: Vec<&str> = listed
        .orders
        .iter()
        .map(|o| o.client_order_id.as_str())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["c-next", "c-old"], "{listed:?}");

    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// A new leader whose watch has not handed over what the old leader stored
/// before it stopped (the watch lags, or is being made again): a listing
/// from its index would miss that order and not say so. Before, it
/// answered at once without it; now it waits for the index to catch up
/// with the fence, as an order's judgement does, and past the call timeout
/// answers SERVICE_UNAVAILABLE "catching up; retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_lists_no_orders_before_its_index_holds_the_old_leaders() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = start_risk(&conn).await;
    let first = start_order(&nats.url(), 1).await;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&first) }).await;
    let before = watches_current(&conn, 1).await;
    let second = start_order(&nats.url(), 2).await;
    let watch = watches_current(&conn, 2)
        .await
        .difference(&before)
        .next()
        .unwrap()
        .clone();
    hold_watch(&conn, &watch, true).await;

    store_unannounced_fill(&conn, epoch_of(&first), 60).await;
    first.shutdown().await.unwrap();
    eventually(PATIENCE, "order-2 leads", || async { is_leader(&second) }).await;

    let early = call::<_, OrderList>(&conn, "order-2", "list_orders", &ListOrders::default()).await;
    let refused = early
        .as_ref()
        .expect_err("listed without order-1's last order");
    assert_eq!(refused.code(), ErrorCode::ServiceUnavailable, "{refused}");
    assert!(refused.to_string().contains("catching up"), "{refused}");

    hold_watch(&conn, &watch, false).await;
    let listed: OrderList = call(&conn, "order-2", "list_orders", &ListOrders::default())
        .await
        .unwrap();
    assert_eq!(
        listed
            .orders
            .iter()
            .map(|o| o.client_order_id.as_str())
            .collect::<Vec<_>>(),
        ["c-old"],
        "{listed:?}"
    );

    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
