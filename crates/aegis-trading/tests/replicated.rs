//! order-service on a 3-node cluster with R3 buckets, as the showcase runs
//! it. JetStream may answer a KV read from any replica, and a replica may
//! not have applied a write its leader has already confirmed: the paths
//! that need to read what was just written must still see it.

mod common;

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, RpcError},
};
use aegis_trading::{
    order::{self, CreateOrder, Order, OrderOptions, OrderStatus},
    pricing::{self, PricingOptions},
    risk::{self, RiskOptions},
};
use common::{cluster, connect_cluster};
use serde_json::json;

async fn active<Req: serde::Serialize, Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    method: &str,
    req: &Req,
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

/// Connects as [`connect_cluster`] does, but only to a node that does not
/// lead the `orders` bucket: its local replica answers most direct reads,
/// which is where a lagging replica shows.
async fn connect_away_from_the_orders_leader(
    nats: &aegis_testkit::NatsCluster,
    conn: &Connection,
) -> Connection {
    let mut stream = conn.jetstream().get_stream("KV_orders").await.unwrap();
    let info = stream.info().await.unwrap();
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .unwrap();
    let node = nats
        .nodes()
        .iter()
        .zip(1..)
        .find(|(_, n)| format!("n{n}") != leader)
        .map(|(node, _)| node.url())
        .unwrap();
    let mut config = aegis_sdk::AegisConfig::with_servers(&node);
    config.nats.replicas = 3;
    Connection::connect(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]

async fn an_order_is_readable_right_after_it_is_created_on_r3() {
    let nats = cluster();
    let conn = connect_cluster(&nats).await;
    let pricing = pricing::start(
        &conn,
        PricingOptions {
            publish_interval: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    // The first start creates the bucket; the instance that serves runs on
    // a node away from the bucket's leader.
    order::start(&conn, OrderOptions::default())
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let away = connect_away_from_the_orders_leader(&nats, &conn).await;
    let orders = order::start(&away, OrderOptions::default()).await.unwrap();

    // Clients at work in parallel, each reading its order back at once and
    // racing a duplicate of it: the duplicate's claim reads the first one's
    // order id back right after it was written.
    let clients = (0..16).map(|client| {
        let conn = conn.clone();
        async move {
            for i in 0..15 {
                let req = CreateOrder {
                    symbol: "AAPL".into(),
                    side: Side::Buy,
                    quantity: 1,
                    price: None,
                    client_order_id: format!("c-ryw-{client}-{i}"),
                };
                let (created, duplicate) = tokio::join!(
                    active::<_, Order>(&conn, "create_order", &req),
                    active::<_, Order>(&conn, "create_order", &req)
                );
                let created = created.unwrap_or_else(|e| panic!("{req:?}: {e}"));
                let duplicate = duplicate.unwrap_or_else(|e| panic!("duplicate {req:?}: {e}"));
                assert_eq!(created.status, OrderStatus::Filled);
                assert_eq!(duplicate.order_id, created.order_id);
                let got: Order = active(&conn, "get_order", &json!({"order_id": created.order_id}))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{} not readable after create: {e}", created.order_id)
                    });
                assert!(got.status.is_final(), "{got:?}");
                assert_eq!(got.order_id, created.order_id);
            }
        }
    });
    futures::future::join_all(clients).await;
    orders.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
