//! order-service with pricing and risk against a real nats-server: the
//! create-order flow across the three services with its events observed,
//! rejections with reasons, bad input, idempotent retries (one order, one
//! set of events), resuming after a dependency outage, reads and listings,
//! and the custom metrics.

mod common;

use aegis_contracts::trading::{
    ORDER_GROUP, ORDER_SERVICE, OrderCreated, OrderFilled, OrderRejected, RISK_SERVICE, ReasonCode,
    RiskAssessed, Side,
};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, Order, OrderList, OrderOptions, OrderStatus},
    pricing::{self, PricingOptions},
    risk::{self, Positions, RiskLimits, RiskOptions},
};
use common::{
    PATIENCE, Recorder, barrier, code, connect, eventually, server, start_order_risk,
    start_pricing_without_publication,
};
use serde_json::{Value, json};

/// One instance of each service.
struct Desk {
    pricing: Running,
    risk: Running,
    order: Running,
}

impl Desk {
    async fn start(conn: &Connection) -> Desk {
        let pricing = start_pricing_without_publication(conn).await;
        let risk = start_order_risk(conn).await;
        let order = order::start(conn, OrderOptions::default()).await.unwrap();
        Desk {
            pricing,
            risk,
            order,
        }
    }

    async fn shutdown(self) {
        self.order.shutdown().await.unwrap();
        self.risk.shutdown().await.unwrap();
        self.pricing.shutdown().await.unwrap();
    }
}

fn market(client_order_id: &str, symbol: &str, side: Side, quantity: i64) -> CreateOrder {
    CreateOrder {
        symbol: symbol.into(),
        side,
        quantity,
        price: None,
        client_order_id: client_order_id.into(),
    }
}

/// Calls the order service's leader, as every order-service client does.
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

async fn create(conn: &Connection, req: &CreateOrder) -> Result<Order, RpcError> {
    active(conn, "create_order", req).await
}

async fn list(conn: &Connection, filter: Value) -> OrderList {
    active(conn, "list_orders", &filter).await.unwrap()
}

/// The order events of one order, parsed into their contract types.
fn order_events(
    recorder: &Recorder<Value>,
    order_id: &str,
) -> (Vec<OrderCreated>, Vec<OrderFilled>, Vec<OrderRejected>) {
    let mut created = Vec::new();
    let mut filled = Vec::new();
    let mut rejected = Vec::new();
    for e in recorder.events() {
        if e.payload["order_id"] != order_id {
            continue;
        }
        match e.subject.action.as_str() {
            "created" => created.push(serde_json::from_value(e.payload).unwrap()),
            "filled" => filled.push(serde_json::from_value(e.payload).unwrap()),
            "rejected" => rejected.push(serde_json::from_value(e.payload).unwrap()),
            _ => {}
        }
    }
    (created, filled, rejected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_flows_through_pricing_and_risk_and_fills() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let assessed = Recorder::<RiskAssessed>::start(&conn, "order-tests", "risk.assessed").await;
    let desk = Desk::start(&conn).await;

    let order = create(&conn, &market("c-1", "AAPL", Side::Buy, 10))
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Filled);
    assert_eq!(order.client_order_id, "c-1");
    assert_eq!(
        (order.symbol.as_str(), order.side, order.quantity),
        ("AAPL", Side::Buy, 10)
    );
    let fill_price = order.fill_price.unwrap();
    assert!((fill_price - 175.0).abs() <= 175.0 * 0.021, "{order:?}");
    assert!(order.risk_score.unwrap() < 25.0);
    assert!(order.reasons.is_empty());

    // created, then filled; the risk verdict names the order.
    barrier(&conn, &orders, "order").await;
    let (created, filled, rejected) = order_events(&orders, &order.order_id);
    assert_eq!(created.len(), 1);
    assert_eq!(filled.len(), 1);
    assert!(rejected.is_empty());
    assert_eq!(created[0].client_order_id, "c-1");
    assert_eq!(filled[0].fill_price, fill_price);
    let sequence = |action: &str| {
        orders
            .events()
            .iter()
            .find(|e| {
                e.subject.action == action && e.payload["order_id"] == order.order_id.as_str()
            })
            .unwrap()
            .sequence
    };
    assert!(sequence("created") < sequence("filled"));
    let verdict = assessed
        .wait_for("the order's assessment", |a| {
            a.order_id.as_deref() == Some(order.order_id.as_str())
        })
        .await;
    assert!(verdict.approved);

    // The fill reaches risk's positions.
    eventually(PATIENCE, "risk holds the new position", || async {
        let positions: Positions = conn
            .rpc()
            .call(RISK_SERVICE, "get_positions", &json!({}))
            .await
            .unwrap();
        positions.positions.get("AAPL") == Some(&10)
    })
    .await;

    // Reads: by id, and in the listing.
    let got: Order = active(&conn, "get_order", &json!({"order_id": order.order_id}))
        .await
        .unwrap();
    assert_eq!(got, order);
    let listed = list(&conn, json!(null)).await;
    assert_eq!((listed.total, listed.orders.len()), (1, 1));
    assert_eq!(listed.orders[0], order);

    let custom = desk.order.service().metrics().snapshot().custom;
    assert_eq!(custom["orders_created"], 1.0);
    assert_eq!(custom["orders_filled"], 1.0);
    assert_eq!(custom["orders_rejected"], 0.0);
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_limit_and_unmarketable_orders_are_rejected_with_reasons() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let desk = Desk::start(&conn).await;

    // 1 000 MSFT at about 420 is ~420 000, over the 100 000 notional limit.
    let big = create(&conn, &market("c-big", "MSFT", Side::Buy, 1_000))
        .await
        .unwrap();
    assert_eq!(big.status, OrderStatus::Rejected);
    assert_eq!(big.fill_price, None);
    assert_eq!(big.risk_score, Some(100.0));
    let codes: Vec<_> = big.reasons.iter().map(|r| r.code).collect();
    assert_eq!(codes, [ReasonCode::MaxOrderNotional]);

    // A buy limit far below the ask does not trade.
    let low = CreateOrder {
        price: Some(1.0),
        ..market("c-low", "AAPL", Side::Buy, 1)
    };
    let low = create(&conn, &low).await.unwrap();
    assert_eq!(low.status, OrderStatus::Rejected);
    assert_eq!(low.reasons[0].code, ReasonCode::LimitNotMarketable);
    // A sell limit far below the bid does, at the bid.
    let cheap = CreateOrder {
        price: Some(1.0),
        ..market("c-cheap", "AAPL", Side::Sell, 1)
    };
    let cheap = create(&conn, &cheap).await.unwrap();
    assert_eq!(cheap.status, OrderStatus::Filled);
    assert!(cheap.fill_price.unwrap() > 100.0);

    barrier(&conn, &orders, "order").await;
    let (created, filled, rejected) = order_events(&orders, &big.order_id);
    assert_eq!((created.len(), filled.len(), rejected.len()), (1, 0, 1));
    assert_eq!(rejected[0].reasons[0].code, ReasonCode::MaxOrderNotional);

    let rejected_only = list(&conn, json!({"status": "rejected"})).await;
    assert_eq!(rejected_only.total, 2);
    assert!(
        rejected_only
            .orders
            .iter()
            .all(|o| o.status == OrderStatus::Rejected)
    );
    let custom = desk.order.service().metrics().snapshot().custom;
    assert_eq!(custom["orders_rejected"], 2.0);
    assert_eq!(custom["orders_filled"], 1.0);
    desk.shutdown().await;
}

/// Risk judges an order at the price it trades at — the touch — not at
/// its limit: a sell limited far below the bid still trades at the bid, and
/// a buy limited far above the ask trades at the ask. The audit record
/// carries that price too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_are_judged_at_the_price_they_trade_at() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let assessed = Recorder::<RiskAssessed>::start(&conn, "order-tests", "risk.assessed").await;
    let desk = Desk::start(&conn).await;

    // 1 000 AAPL at the bid (about 175) is ~175 000, over the 100 000
    // notional limit, however low the limit price.
    let sell = CreateOrder {
        price: Some(0.01),
        ..market("c-sell-low", "AAPL", Side::Sell, 1_000)
    };
    let sell = create(&conn, &sell).await.unwrap();
    assert_eq!(sell.status, OrderStatus::Rejected, "{sell:?}");
    let codes: Vec<_> = sell.reasons.iter().map(|r| r.code).collect();
    assert_eq!(codes, [ReasonCode::MaxOrderNotional]);

    // 500 AAPL at the ask (at most about 179) is under 90 000: it fits,
    // though at its limit of 1 000 it would be 500 000.
    let buy = CreateOrder {
        price: Some(1_000.0),
        ..market("c-buy-high", "AAPL", Side::Buy, 500)
    };
    let buy = create(&conn, &buy).await.unwrap();
    assert_eq!(buy.status, OrderStatus::Filled, "{buy:?}");

    // The audit records the price each was judged at: the touch.
    let verdict = assessed
        .wait_for("the buy's assessment", |a| {
            a.order_id.as_deref() == Some(buy.order_id.as_str())
        })
        .await;
    assert_eq!(Some(verdict.price), buy.fill_price);
    let verdict = assessed
        .wait_for("the sell's assessment", |a| {
            a.order_id.as_deref() == Some(sell.order_id.as_str())
        })
        .await;
    assert!(verdict.price > 100.0, "{verdict:?}");
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_orders_are_refused_and_leave_nothing_behind() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let desk = Desk::start(&conn).await;

    let cases = [
        json!({"symbol": "AAPL", "side": "buy", "quantity": -10, "client_order_id": "b1"}),
        json!({"symbol": "AAPL", "side": "buy", "quantity": 0, "client_order_id": "b2"}),
        json!({"symbol": "AAPL", "side": "buy", "quantity": 1.5, "client_order_id": "b3"}),
        json!({"symbol": "AAPL", "side": "hold", "quantity": 10, "client_order_id": "b4"}),
        json!({"symbol": "not a symbol", "side": "buy", "quantity": 10, "client_order_id": "b5"}),
        json!({"symbol": "ZZZZ", "side": "buy", "quantity": 10, "client_order_id": "b6"}),
        json!({"symbol": "AAPL", "side": "buy", "quantity": 10, "price": -1, "client_order_id": "b7"}),
        json!({"symbol": "AAPL", "side": "buy", "quantity": 10, "client_order_id": "no spaces"}),
        json!({"symbol": "AAPL", "side": "buy", "quantity": 10}),
        json!("create an order please"),
    ];
    for bad in cases {
        let result = active::<_, Value>(&conn, "create_order", &bad).await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{bad}");
    }
    // The unknown symbol names the field, like every validation error.
    let err = active::<_, Value>(
        &conn,
        "create_order",
        &json!({"symbol": "ZZZZ", "side": "buy", "quantity": 10, "client_order_id": "b6"}),
    )
    .await
    .unwrap_err();
    let field = &err.remote().unwrap().details.as_ref().unwrap()["fields"][0];
    assert_eq!(field["field"], "symbol");
    // And says which symbols are traded.
    let said = field["message"].as_str().unwrap();
    assert!(
        said.starts_with("ZZZZ is not a traded symbol (priced: AAPL"),
        "{said}"
    );
    assert_eq!(
        list(&conn, json!({})).await.total,
        0,
        "no order was recorded"
    );

    let get = |body: Value| {
        let conn = conn.clone();
        async move { active::<_, Value>(&conn, "get_order", &body).await }
    };
    assert_eq!(
        code(get(json!({"order_id": "ord-nope"})).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(get(json!({"order_id": "a.b"})).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(code(get(json!({})).await), ErrorCode::InvalidRequest);
    for bad in [
        json!({"limit": 0}),
        json!({"limit": 1001}),
        json!({"symbol": "x y"}),
        json!({"status": "open"}),
    ] {
        let result = active::<_, Value>(&conn, "list_orders", &bad).await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{bad}");
    }
    desk.shutdown().await;
}

/// A field the request type does not have is refused, naming it, rather
/// than ignored: `limit_price` (the name the stored order uses) would
/// otherwise turn a limit order into a market order. Nothing is stored —
/// no claim of the client order id, no order. The other requests of the
/// three services refuse unknown fields alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_fields_are_refused_naming_them() {
    use aegis_contracts::trading::PRICING_SERVICE;

    let nats = server();
    let conn = connect(&nats.url()).await;
    let desk = Desk::start(&conn).await;

    let refused = |result: Result<Value, RpcError>, field: &str| {
        let err = result.expect_err("an unknown field is refused");
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    };
    let limit_price = json!({
        "symbol": "AAPL", "side": "buy", "quantity": 100,
        "limit_price": 150.0, "client_order_id": "t-lp1"
    });
    refused(
        active(&conn, "create_order", &limit_price).await,
        "limit_price",
    );
    let bucket = conn
        .jetstream()
        .get_key_value(order::ORDERS_BUCKET)
        .await
        .unwrap();
    assert_eq!(bucket.get("client.t-lp1").await.unwrap(), None, "no claim");
    assert_eq!(list(&conn, json!({})).await.total, 0, "no order");
    // The same id with the right field name is a new order, not a conflict.
    let limit = CreateOrder {
        price: Some(1.0),
        ..market("t-lp1", "AAPL", Side::Buy, 100)
    };
    let placed = create(&conn, &limit).await.unwrap();
    assert_eq!(placed.reasons[0].code, ReasonCode::LimitNotMarketable);

    refused(
        active(
            &conn,
            "get_order",
            &json!({"order_id": placed.order_id, "id": 1}),
        )
        .await,
        "id",
    );
    refused(
        active(&conn, "list_orders", &json!({"symbols": ["AAPL"]})).await,
        "symbols",
    );
    let rpc = conn.rpc();
    let assess = json!({"order": {
        "symbol": "AAPL", "side": "buy", "quantity": 1, "price": 1.0, "limit": 2.0
    }});
    refused(
        rpc.call(RISK_SERVICE, "assess_risk", &assess).await,
        "limit",
    );
    let assess = json!({"order": {
        "symbol": "AAPL", "side": "buy", "quantity": 1, "price": 1.0
    }, "dry_run": true});
    refused(
        rpc.call(RISK_SERVICE, "assess_risk", &assess).await,
        "dry_run",
    );
    refused(
        rpc.call(
            PRICING_SERVICE,
            "get_price",
            &json!({"symbol": "AAPL", "venue": "X"}),
        )
        .await,
        "venue",
    );
    refused(
        rpc.call(
            PRICING_SERVICE,
            "get_prices",
            &json!({"symbols": ["AAPL"], "depth": 2}),
        )
        .await,
        "depth",
    );
    refused(
        rpc.call(
            PRICING_SERVICE,
            "simulate_work",
            &json!({"ms": 1, "fial": true}),
        )
        .await,
        "fial",
    );
    desk.shutdown().await;
}

/// The position limit holds for orders that race or follow each other at
/// once, with risk load-balanced over two instances that each build their
/// own book from the fills: an order is judged only once every fill
/// before it counts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_position_limit_holds_for_concurrent_and_back_to_back_orders() {
    use common::positions_of;

    let nats = server();
    let conn = connect(&nats.url()).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let limits = RiskLimits {
        max_position: 100,
        ..Default::default()
    };
    let mut risks = Vec::new();
    for id in ["risk-a", "risk-b"] {
        let opts = RiskOptions {
            limits: limits.clone(),
            ..common::risk_options(id)
        };
        risks.push(risk::start(&conn, opts).await.unwrap());
    }
    let desk = order::start(&conn, OrderOptions::default()).await.unwrap();

    // Five buys of 60 at once: 60 fits the limit of 100, 120 does not.
    let racing = (0..5).map(|i| {
        let conn = conn.clone();
        async move {
            create(
                &conn,
                &market(&format!("c-race-{i}"), "NVDA", Side::Buy, 60),
            )
            .await
        }
    });
    let filled = futures::future::join_all(racing)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .filter(|o| o.status == OrderStatus::Filled)
        .count();
    // Exactly one: 60 fits from a flat position, so none filling is as
    // wrong as two (a book that counts a fill twice, say).
    assert_eq!(
        filled, 1,
        "{filled} of five buys of 60 filled under a limit of 100"
    );

    // One after another, each sent as the last one's answer arrives.
    let mut sequential = 0;
    for i in 0..8 {
        let order = create(
            &conn,
            &market(&format!("c-next-{i}"), "META", Side::Buy, 30),
        )
        .await
        .unwrap();
        if order.status == OrderStatus::Filled {
            sequential += 1;
        }
    }
    assert_eq!(sequential, 3, "buys of 30 under a limit of 100");

    for id in ["risk-a", "risk-b"] {
        eventually(PATIENCE, "the instance holds every fill", || async {
            let held = positions_of(&conn, id).await.unwrap().positions;
            held.get("META") == Some(&90)
        })
        .await;
        let held = positions_of(&conn, id).await.unwrap().positions;
        let nvda = held.get("NVDA").copied().unwrap_or(0);
        assert!(nvda <= 100 && nvda == 60 * filled as i64, "{id}: {held:?}");
    }
    desk.shutdown().await.unwrap();
    for risk in risks {
        risk.shutdown().await.unwrap();
    }
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_create_returns_the_same_order_and_publishes_nothing_new() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let desk = Desk::start(&conn).await;

    let req = market("c-retry", "GOOGL", Side::Sell, 25);
    let first = create(&conn, &req).await.unwrap();
    let again = create(&conn, &req).await.unwrap();
    assert_eq!(again, first, "the retry answers the recorded order");
    // Concurrent retries too.
    let (a, b) = tokio::join!(create(&conn, &req), create(&conn, &req));
    assert_eq!(a.unwrap(), first);
    assert_eq!(b.unwrap(), first);

    // The same key for a different order is a conflict, not a new order.
    let reused = create(&conn, &market("c-retry", "GOOGL", Side::Buy, 25)).await;
    assert_eq!(code(reused), ErrorCode::Conflict);

    let listed = list(&conn, json!({"symbol": "GOOGL"})).await;
    assert_eq!(listed.total, 1);
    barrier(&conn, &orders, "order").await;
    let (created, filled, rejected) = order_events(&orders, &first.order_id);
    assert_eq!((created.len(), filled.len(), rejected.len()), (1, 1, 0));

    let custom = desk.order.service().metrics().snapshot().custom;
    assert_eq!(custom["orders_created"], 1.0);
    assert_eq!(custom["orders_replayed"], 3.0);

    // Racing first attempts of a new key make one order between them.
    let fresh = market("c-race", "AMZN", Side::Buy, 5);
    let (a, b) = tokio::join!(create(&conn, &fresh), create(&conn, &fresh));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.order_id, b.order_id);
    assert_eq!(list(&conn, json!({"symbol": "AMZN"})).await.total, 1);
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_interrupted_by_an_outage_resumes_on_retry() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let desk = order::start(&conn, OrderOptions::default()).await.unwrap();
    let req = market("c-outage", "TSLA", Side::Buy, 3);

    // Risk is down: the order is recorded and announced, but not decided;
    // the error names it.
    let failed = create(&conn, &req).await.unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ServiceUnavailable);
    let pending = list(&conn, json!({})).await;
    assert_eq!(pending.total, 1);
    assert_eq!(pending.orders[0].status, OrderStatus::Pending);
    let details = failed.remote().unwrap().details.clone().unwrap();
    assert_eq!(details["order_id"], pending.orders[0].order_id.as_str());

    // A retry while pricing is down fails before it gets far; its error
    // names the recorded order too.
    pricing.shutdown().await.unwrap();
    let failed = create(&conn, &req).await.unwrap_err();
    let details = failed.remote().unwrap().details.clone().unwrap();
    assert_eq!(details["order_id"], pending.orders[0].order_id.as_str());
    let pricing = start_pricing_without_publication(&conn).await;

    // Risk is back: the retry finishes that same order.
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    let done = create(&conn, &req).await.unwrap();
    assert_eq!(done.order_id, pending.orders[0].order_id);
    assert_eq!(done.status, OrderStatus::Filled);
    assert_eq!(list(&conn, json!({})).await.total, 1);

    barrier(&conn, &orders, "order").await;
    let (created, filled, _) = order_events(&orders, &done.order_id);
    assert_eq!(
        (created.len(), filled.len()),
        (1, 1),
        "announced once despite two attempts"
    );
    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// An order recorded but whose `create_order` failed is not filled later
/// behind its caller's back: the caller is told the order was recorded
/// and how to settle it (retry with the same client order id), and
/// unless it does so within the bound the order is rejected as expired,
/// even though risk came back long before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_its_caller_gave_up_on_expires_rather_than_fills() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let desk = order::start(
        &conn,
        OrderOptions {
            call_timeout: std::time::Duration::from_millis(500),
            stale_after: std::time::Duration::from_secs(1),
            expire_after: std::time::Duration::from_secs(3),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Risk is down; the caller gets an error and never retries.
    let failed = create(&conn, &market("c-gone", "AMZN", Side::Buy, 2))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ServiceUnavailable, "{failed}");
    let pending = list(&conn, json!({})).await.orders[0].clone();
    assert_eq!(pending.status, OrderStatus::Pending);
    // The error names the recorded order and says how to settle it.
    let details = failed.remote().unwrap().details.clone().unwrap();
    assert_eq!(details["order_id"], pending.order_id.as_str(), "{details}");
    assert_eq!(details["client_order_id"], "c-gone", "{details}");
    let message = failed.to_string();
    assert!(
        message.contains("recorded") && message.contains("same client_order_id"),
        "{message}"
    );

    // Risk is back at once; the leader's sweep does not fill the order but,
    // past the bound, rejects it as expired.
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    eventually(PATIENCE, "the abandoned order expires", || async {
        let got: Order = active(&conn, "get_order", &json!({"order_id": pending.order_id}))
            .await
            .unwrap();
        // Decided and announced: settled for good.
        got.status != OrderStatus::Pending && got.announced
    })
    .await;
    let got: Order = active(&conn, "get_order", &json!({"order_id": pending.order_id}))
        .await
        .unwrap();
    assert_eq!(got.status, OrderStatus::Rejected, "{got:?}");
    assert_eq!(got.reasons[0].code, ReasonCode::Expired, "{got:?}");
    assert_eq!(got.fill_price, None);
    // A late retry answers the expired order; nothing was ever filled.
    let late = create(&conn, &market("c-gone", "AMZN", Side::Buy, 2))
        .await
        .unwrap();
    assert_eq!(late, got);
    barrier(&conn, &orders, "order").await;
    let (_, filled, rejected) = order_events(&orders, &got.order_id);
    assert_eq!((filled.len(), rejected.len()), (0, 1));
    assert_eq!(list(&conn, json!({})).await.total, 1);
    let positions: Positions = conn
        .rpc()
        .call(RISK_SERVICE, "get_positions", &json!({}))
        .await
        .unwrap();
    assert_eq!(positions.positions.get("AMZN"), None, "{positions:?}");
    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// A retry of a recorded, pending order that cannot be quoted is not told
/// that retrying decides it: while its symbol is not traded (pricing's
/// catalog changed) no retry can, and it says so and when the order
/// expires. And a retry past the expiry bound learns that the order
/// expired, even while pricing is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_of_a_pending_order_that_cannot_be_quoted_is_told_the_truth() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let desk = order::start(
        &conn,
        OrderOptions {
            call_timeout: std::time::Duration::from_millis(500),
            expire_after: std::time::Duration::from_secs(3),
            // No sweep expires it before the retry does.
            stale_after: std::time::Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Risk is down: the order is recorded, pending.
    let req = market("c-unquoted", "TSLA", Side::Buy, 3);
    let failed = create(&conn, &req).await.unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ServiceUnavailable, "{failed}");

    // Pricing comes back without TSLA in its catalog.
    pricing.shutdown().await.unwrap();
    let mut symbols = pricing::default_symbols();
    symbols.remove("TSLA");
    let pricing = pricing::start(
        &conn,
        PricingOptions {
            publish_interval: None,
            symbols,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let failed = create(&conn, &req).await.unwrap_err();
    let message = failed.to_string();
    let details = failed.remote().unwrap().details.clone().unwrap();
    assert_eq!(details["status"], "pending", "{details}");
    assert!(!message.contains("decided by retrying"), "{message}");
    assert!(message.contains("not quoted"), "{message}");
    assert!(message.contains("expired"), "{message}");

    // Past the bound, with pricing down: the retry answers the expired order.
    pricing.shutdown().await.unwrap();
    let order_id = details["order_id"].as_str().unwrap().to_owned();
    let created: Order = active(&conn, "get_order", &json!({"order_id": order_id}))
        .await
        .unwrap();
    let due = created.created_at + chrono::Duration::seconds(3);
    tokio::time::sleep(
        (due - chrono::Utc::now())
            .to_std()
            .unwrap_or_default()
            .saturating_add(std::time::Duration::from_millis(100)),
    )
    .await;
    let late = create(&conn, &req).await.unwrap();
    assert_eq!(late.order_id, order_id);
    assert_eq!(late.status, OrderStatus::Rejected, "{late:?}");
    assert_eq!(late.reasons[0].code, ReasonCode::Expired, "{late:?}");
    desk.shutdown().await.unwrap();
}

/// An order decided and stored whose outcome event could not be published
/// is not said to expire: the error says how it was decided and that its
/// event follows (on a retry, or from the leader's sweep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_order_whose_event_failed_is_said_to_be_decided() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let desk = Desk::start(&conn).await;

    // As the operator: EVENTS stops capturing fills, so publishing one
    // finds no stream and fails.
    let js = conn.jetstream();
    let mut config = js
        .get_stream("EVENTS")
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.subjects = vec![
        "events.order.created".into(),
        "events.order.rejected".into(),
        "events.risk.>".into(),
        "events.price.>".into(),
    ];
    js.update_stream(config.clone()).await.unwrap();

    let failed = create(&conn, &market("c-unheard", "AAPL", Side::Buy, 5))
        .await
        .unwrap_err();
    assert_eq!(failed.code(), ErrorCode::ServiceUnavailable, "{failed}");
    let message = failed.to_string();
    let details = failed.remote().unwrap().details.clone().unwrap();
    let order_id = details["order_id"].as_str().unwrap().to_owned();
    let got: Order = active(&conn, "get_order", &json!({"order_id": order_id}))
        .await
        .unwrap();
    assert_eq!(got.status, OrderStatus::Filled, "{got:?}");
    assert!(!message.contains("expired"), "{message}");
    assert!(message.contains("is filled"), "{message}");
    assert_eq!(details["status"], "filled", "{details}");

    // Fills are captured again: a retry publishes the fill and answers it.
    config.subjects = vec!["events.>".into()];
    js.update_stream(config).await.unwrap();
    let done = create(&conn, &market("c-unheard", "AAPL", Side::Buy, 5))
        .await
        .unwrap();
    assert_eq!(done.order_id, order_id);
    assert_eq!(done.status, OrderStatus::Filled);
    assert!(done.announced, "{done:?}");
    desk.shutdown().await;
}

/// EVENTS deleted and created again under a running order leader (its
/// sequences start over), with risk's positions started afresh: the
/// leader's next order fills, rather than have risk wait for a fill at the
/// old stream's sequence that the new one has not reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_fill_after_the_events_stream_is_created_again() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let Desk {
        pricing,
        risk,
        order,
    } = Desk::start(&conn).await;
    for i in 0..3 {
        let done = create(&conn, &market(&format!("c-old-{i}"), "AAPL", Side::Buy, 5))
            .await
            .unwrap();
        assert_eq!(done.status, OrderStatus::Filled, "{done:?}");
    }

    // As the operator: EVENTS and risk's positions start over.
    risk.shutdown().await.unwrap();
    let js = conn.jetstream();
    js.delete_stream("EVENTS").await.unwrap();
    js.delete_key_value(risk::RISK_POSITIONS_BUCKET)
        .await
        .unwrap();
    conn.events().ensure_stream().await.unwrap();
    let risk = start_order_risk(&conn).await;

    // The first order after it fills, and so do the next ones.
    for i in 0..2 {
        let done = create(&conn, &market(&format!("c-new-{i}"), "AAPL", Side::Buy, 5))
            .await
            .unwrap();
        assert_eq!(done.status, OrderStatus::Filled, "{done:?}");
    }
    let positions: Positions = conn
        .rpc()
        .call(RISK_SERVICE, "get_positions", &json!({}))
        .await
        .unwrap();
    assert_eq!(positions.positions.get("AAPL"), Some(&10), "{positions:?}");
    order.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// EVENTS created again, and risk's positions started afresh, and the new
/// stream already past the old newest fill's sequence (pricing publishes
/// prices into it all the time) before the leader's next order: that order
/// fills at once, rather than have risk wait for a fill at the old
/// stream's sequence and fail it as "catching up".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_order_fills_once_a_new_events_stream_passed_the_old_fills() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let Desk {
        pricing,
        risk,
        order,
    } = Desk::start(&conn).await;
    let mut newest = 0;
    for i in 0..3 {
        let done = create(&conn, &market(&format!("c-old-{i}"), "AAPL", Side::Buy, 5))
            .await
            .unwrap();
        assert_eq!(done.status, OrderStatus::Filled, "{done:?}");
        newest = risk_positions(&conn).await.last_event_sequence;
    }
    assert!(newest > 0);

    risk.shutdown().await.unwrap();
    let js = conn.jetstream();
    js.delete_stream("EVENTS").await.unwrap();
    js.delete_key_value(risk::RISK_POSITIONS_BUCKET)
        .await
        .unwrap();
    conn.events().ensure_stream().await.unwrap();
    for i in 0..newest + 5 {
        conn.events()
            .publish("price", "test", &json!({ "tick": i }))
            .await
            .unwrap();
    }
    let risk = start_order_risk(&conn).await;

    let done = create(&conn, &market("c-new-0", "AAPL", Side::Buy, 5))
        .await
        .unwrap();
    assert_eq!(done.status, OrderStatus::Filled, "{done:?}");
    eventually(PATIENCE, "risk counts the new fill", || async {
        risk_positions(&conn).await.positions.get("AAPL") == Some(&5)
    })
    .await;
    order.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// The positions risk-service holds (any instance).
async fn risk_positions(conn: &Connection) -> Positions {
    conn.rpc()
        .call(RISK_SERVICE, "get_positions", &json!({}))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_metrics_travel_in_the_published_snapshots() {
    use aegis_contracts::{MetricsSnapshot, subjects};
    use futures::StreamExt;

    let nats = server();
    let conn = connect(&nats.url()).await;
    // What the monitor reads: each instance's snapshots on core NATS.
    let mut snapshots = conn
        .client()
        .subscribe(subjects::metrics_subject("*", "*"))
        .await
        .unwrap();
    let desk = Desk::start(&conn).await;
    create(&conn, &market("c-m1", "AAPL", Side::Buy, 5))
        .await
        .unwrap();
    create(&conn, &market("c-m2", "MSFT", Side::Buy, 1_000))
        .await
        .unwrap();

    let wanted = [
        ("order-service", "orders_created", 2.0),
        ("order-service", "orders_filled", 1.0),
        ("order-service", "orders_rejected", 1.0),
        ("pricing-service", "prices_served", 2.0),
        ("risk-service", "assessments", 2.0),
        ("risk-service", "rejections", 1.0),
        ("risk-service", "risk_score_ge75", 1.0),
    ];
    let mut seen = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while seen.len() < wanted.len() {
        let msg = tokio::time::timeout_at(deadline, snapshots.next())
            .await
            .expect("snapshots carrying the service metrics")
            .unwrap();
        let snapshot: MetricsSnapshot = serde_json::from_slice(&msg.payload).unwrap();
        for (service, name, value) in wanted {
            if snapshot.service_name == service && snapshot.custom.get(name) == Some(&value) {
                seen.insert(name);
            }
        }
    }
    desk.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_order_id_reused_concurrently_for_another_order_is_a_conflict() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let desk = Desk::start(&conn).await;

    // Pairs of different orders racing under one client order id: one of
    // each pair is recorded; the other must be told CONFLICT, never handed
    // the winner's order as its own.
    let pairs = (0..10).map(|i| {
        let conn = conn.clone();
        async move {
            let key = format!("c-shared-{i}");
            let aapl = market(&key, "AAPL", Side::Buy, 10);
            let msft = market(&key, "MSFT", Side::Buy, 10);
            let (a, m) = tokio::join!(create(&conn, &aapl), create(&conn, &msft));
            (aapl, a, msft, m)
        }
    });
    for (aapl, a, msft, m) in futures::future::join_all(pairs).await {
        let outcomes = [(&aapl, a), (&msft, m)];
        let mut won = 0;
        for (req, result) in outcomes {
            match result {
                Ok(order) => {
                    won += 1;
                    assert!(order.matches(req), "{req:?} was answered with {order:?}");
                    // Filled at its own symbol's quote, not the other's.
                    let base = if order.symbol == "AAPL" { 175.0 } else { 420.0 };
                    let fill = order.fill_price.unwrap();
                    assert!((fill - base).abs() <= base * 0.021, "{order:?}");
                }
                Err(e) => assert_eq!(e.code(), ErrorCode::Conflict, "{req:?}: {e}"),
            }
        }
        assert_eq!(won, 1, "exactly one order per client order id");
    }
    assert_eq!(list(&conn, json!({})).await.total, 10);
    desk.shutdown().await;
}

/// An EVENTS stream that forgets dedup ids after a second (the services
/// leave an existing stream as it is), so a test need not wait the
/// production two minutes.
async fn events_forgetting_ids_after_a_second(conn: &Connection) {
    conn.jetstream()
        .create_stream(async_nats::jetstream::stream::Config {
            name: "EVENTS".into(),
            subjects: vec!["events.>".into()],
            duplicate_window: std::time::Duration::from_secs(1),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Waits until EVENTS has forgotten the dedup ids stored so far: a probe
/// published now is stored again once its id is forgotten.
async fn dedup_window_passed(conn: &Connection) {
    let probe = nuid::next().to_string();
    let events = conn.events();
    events
        .publish_with_id("probe", "sent", &probe, &json!({}))
        .await
        .unwrap();
    eventually(PATIENCE, "the dedup window has passed", || async {
        !events
            .publish_with_id("probe", "sent", &probe, &json!({}))
            .await
            .unwrap()
            .duplicate
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decided_order_is_announced_once_even_past_the_dedup_window() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    events_forgetting_ids_after_a_second(&conn).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let desk = Desk::start(&conn).await;

    let req = market("c-late-retry", "AAPL", Side::Buy, 4);
    let filled = create(&conn, &req).await.unwrap();
    assert_eq!(filled.status, OrderStatus::Filled);
    let big = market("c-late-reject", "MSFT", Side::Buy, 1_000);
    let rejected = create(&conn, &big).await.unwrap();
    assert_eq!(rejected.status, OrderStatus::Rejected);

    // Until the stream has forgotten the outcome events' dedup ids.
    dedup_window_passed(&conn).await;

    // Late retries answer the decided orders and announce nothing again.
    assert_eq!(create(&conn, &req).await.unwrap(), filled);
    assert_eq!(create(&conn, &big).await.unwrap(), rejected);
    barrier(&conn, &orders, "order").await;
    let (_, f, _) = order_events(&orders, &filled.order_id);
    assert_eq!(f.len(), 1, "filled announced {} times", f.len());
    let (_, _, r) = order_events(&orders, &rejected.order_id);
    assert_eq!(r.len(), 1, "rejected announced {} times", r.len());
    desk.shutdown().await;
}

/// An order is announced created once, also when its first attempt
/// published `events.order.created` and failed after it (risk down), and
/// what settles it comes after the stream forgot the event's dedup id: a
/// retry that fills it, or the sweep that expires it. The order records
/// that its creation was announced, as it does its outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_is_announced_created_once_even_past_the_dedup_window() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    events_forgetting_ids_after_a_second(&conn).await;
    let orders = Recorder::<Value>::start(&conn, "order-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let desk = order::start(
        &conn,
        OrderOptions {
            call_timeout: std::time::Duration::from_millis(500),
            stale_after: std::time::Duration::from_secs(1),
            expire_after: std::time::Duration::from_secs(8),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Risk is down: both orders are recorded and announced created, not
    // decided. One will be retried, the other left to expire.
    let retried = market("c-created-retried", "AAPL", Side::Buy, 2);
    let abandoned = market("c-created-abandoned", "MSFT", Side::Buy, 3);
    let mut pending = Vec::new();
    for req in [&retried, &abandoned] {
        let failed = create(&conn, req).await.unwrap_err();
        assert_eq!(failed.code(), ErrorCode::ServiceUnavailable, "{failed}");
        let details = failed.remote().unwrap().details.clone().unwrap();
        pending.push(details["order_id"].as_str().unwrap().to_owned());
    }

    // Until the stream has forgotten the created events' dedup ids.
    dedup_window_passed(&conn).await;

    // Risk is back: the retry fills its order; the sweep expires the other.
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    let done = create(&conn, &retried).await.unwrap();
    assert_eq!(done.order_id, pending[0]);
    assert_eq!(done.status, OrderStatus::Filled, "{done:?}");
    eventually(PATIENCE, "the abandoned order expires", || async {
        let got: Order = active(&conn, "get_order", &json!({"order_id": pending[1]}))
            .await
            .unwrap();
        got.status != OrderStatus::Pending && got.announced
    })
    .await;

    barrier(&conn, &orders, "order").await;
    let (created, filled, _) = order_events(&orders, &pending[0]);
    assert_eq!(
        (created.len(), filled.len()),
        (1, 1),
        "retried past the dedup window: created, filled"
    );
    let (created, filled, rejected) = order_events(&orders, &pending[1]);
    assert_eq!(
        (created.len(), filled.len(), rejected.len()),
        (1, 0, 1),
        "expired past the dedup window: created, filled, rejected"
    );
    assert_eq!(rejected[0].reasons[0].code, ReasonCode::Expired);
    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_hold_the_newest_orders_within_a_bounded_index() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    let bounded = || OrderOptions {
        index_capacity: 20,
        ..Default::default()
    };
    let desk = order::start(&conn, bounded()).await.unwrap();

    let mut created = Vec::new();
    for i in 0..30 {
        let order = create(&conn, &market(&format!("c-many-{i}"), "AAPL", Side::Buy, 1))
            .await
            .unwrap();
        created.push(order);
    }
    let check = |listed: OrderList| {
        assert_eq!((listed.total, listed.orders.len()), (20, 20));
        assert!(
            listed.truncated,
            "older orders were left out, and it says so"
        );
        let ids: Vec<_> = listed.orders.iter().map(|o| o.order_id.clone()).collect();
        let newest: Vec<_> = created
            .iter()
            .rev()
            .take(20)
            .map(|o| o.order_id.clone())
            .collect();
        assert_eq!(ids, newest, "the newest, newest first");
    };
    check(list(&conn, json!({"limit": 1000})).await);
    // Any order is still one read away.
    let oldest: Order = active(
        &conn,
        "get_order",
        &json!({"order_id": created[0].order_id}),
    )
    .await
    .unwrap();
    assert_eq!(oldest, created[0]);

    // A restarted instance rebuilds the same bounded index from the bucket.
    desk.shutdown().await.unwrap();
    let desk = order::start(&conn, bounded()).await.unwrap();
    eventually(PATIENCE, "the index is rebuilt", || async {
        active::<_, OrderList>(&conn, "list_orders", &json!({}))
            .await
            .is_ok_and(|l| l.total == 20)
    })
    .await;
    check(list(&conn, json!({"limit": 1000})).await);
    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// A start refused by the SDK (here: the instance id is in use) stops what
/// it had started before the service: the order bucket's follower.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_start_leaves_no_follower_behind() {
    let nats = common::server();
    let (first, second) = (
        common::connect(&nats.url()).await,
        common::connect(&nats.url()).await,
    );
    let opts = || OrderOptions {
        instance_id: Some("order-1".into()),
        ..Default::default()
    };
    let running = order::start(&first, opts()).await.unwrap();
    let consumers = || async {
        let mut stream = first
            .jetstream()
            .get_stream(format!("KV_{}", order::ORDERS_BUCKET))
            .await
            .unwrap();
        stream.info().await.unwrap().state.consumer_count
    };
    let before = consumers().await;

    let refused = order::start(&second, opts()).await;
    assert!(
        matches!(
            refused,
            Err(aegis_trading::TradingError::Service(
                aegis_sdk::rpc::server::ServiceError::InstanceIdInUse { .. }
            ))
        ),
        "{:?}",
        refused.err()
    );
    // A stopped follower's consumer goes when the server finds it idle
    // (10 s); a follower left running keeps it for good.
    common::eventually(
        std::time::Duration::from_secs(30),
        "the refused start's follower is gone",
        || async { consumers().await == before },
    )
    .await;
    running.shutdown().await.unwrap();
}
