//! Two `create_order` requests with one client order id running at once on
//! the leader — what a client's retry does when its first attempt is slow
//! and still at work — against a real nats-server: one order, one fill,
//! and one risk verdict in the audit trail, never a second verdict made
//! after the order was decided.

mod common;

use std::{sync::atomic::Ordering, time::Duration};

use aegis_contracts::trading::{ORDER_SERVICE, RiskAssessed, Side, TradingEvent};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, RpcError},
};
use aegis_trading::{
    order::{self, CreateOrder, Order, OrderOptions, OrderStatus},
    risk::{self, RiskLimits, RiskOptions},
};
use common::{PATIENCE, Recorder, connect, eventually, gated_pricing, is_leader, server};

/// Sends `req` to `instance` once (no retry of its own).
async fn create_on(
    conn: &Connection,
    instance: &str,
    req: &CreateOrder,
) -> Result<Order, RpcError> {
    conn.rpc()
        .call_instance::<_, Order>(
            ORDER_SERVICE,
            instance,
            "create_order",
            req,
            &CallOptions::timeout(Duration::from_secs(30)),
        )
        .await
        .map(|reply| reply.value)
}

/// The duplicate waited for the symbol's turn while the first request
/// decided and announced the order, then had risk judge the order again —
/// by a position that now held the order's own fill — and risk stored a
/// second verdict: under a position limit the order just filled up to,
/// "rejected, MAX_POSITION" for an order that is filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_request_does_not_have_a_decided_order_judged_again() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let assessed =
        Recorder::<RiskAssessed>::start(&conn, "dup-tests", &RiskAssessed::pattern()).await;
    let (pricing, gate, quotes) = gated_pricing(&conn, 2).await;
    let risk = risk::start(
        &conn,
        RiskOptions {
            limits: RiskLimits {
                max_position: 10,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let desk = order::start(
        &conn,
        OrderOptions {
            instance_id: Some("order-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&desk) }).await;

    let req = CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 10,
        price: None,
        client_order_id: "c-twice".into(),
    };
    // Both attempts are at work at once: each waits for its quote.
    let first = tokio::spawn({
        let (conn, req) = (conn.clone(), req.clone());
        async move { create_on(&conn, "order-1", &req).await }
    });
    eventually(PATIENCE, "the first attempt asks for a quote", || async {
        quotes.load(Ordering::SeqCst) == 1
    })
    .await;
    let second = tokio::spawn({
        let (conn, req) = (conn.clone(), req.clone());
        async move { create_on(&conn, "order-1", &req).await }
    });
    eventually(PATIENCE, "the second attempt asks for a quote", || async {
        quotes.load(Ordering::SeqCst) == 2
    })
    .await;
    gate.add_permits(2);
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!(first.status, OrderStatus::Filled, "{first:?}");
    assert_eq!(second, first, "one order for one client order id");

    // Every assessment is stored before its reply; an unnamed one asked now
    // is stored after both attempts' and shows the recorder got that far.
    let probe = risk::AssessRisk {
        order: risk::OrderToAssess {
            order_id: None,
            symbol: "MSFT".into(),
            side: Side::Sell,
            quantity: 1,
            price: 1.0,
        },
        after_fill: None,
    };
    let _: risk::RiskAssessment = conn
        .rpc()
        .call(
            aegis_contracts::trading::RISK_SERVICE,
            "assess_risk",
            &probe,
        )
        .await
        .unwrap();
    assessed
        .wait_for("the probe's verdict", |e| e.symbol == "MSFT")
        .await;
    let verdicts: Vec<RiskAssessed> = assessed
        .payloads()
        .into_iter()
        .filter(|e| e.order_id.as_deref() == Some(first.order_id.as_str()))
        .collect();
    assert_eq!(
        verdicts.len(),
        1,
        "the order was judged once, not again after it filled: {verdicts:#?}"
    );
    assert!(verdicts[0].approved, "{verdicts:#?}");

    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
