//! order-service failover against a real nats-server: three instances in
//! group `default`, a client creating orders without pause, and the leader
//! crashing (then the next one stopping gracefully) mid-stream. No
//! acknowledged order may be lost and none duplicated — in the store, in the
//! events, or downstream in risk's positions. Also: a new leader completes
//! the orders its predecessor left pending when their callers retry, and
//! expires the others; and it judges no order before its index holds the
//! fills its predecessor stored.

mod common;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, RISK_SERVICE, ReasonCode, Side};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_trading::{
    Running,
    order::{self, CreateOrder, Order, OrderList, OrderOptions, OrderStatus},
    risk::{self, Positions, RiskAssessment, RiskOptions},
};
use common::{
    PATIENCE, Recorder, barrier, connect, eventually, is_leader, server,
    start_pricing_without_publication,
};
use serde_json::{Value, json};

/// Calls the order service's leader. Every order-service method may run
/// twice without harm (create_order is idempotent by client order id), so
/// an attempt the leader does not answer within a second — it may have
/// died mid-request — is retried on whoever leads then.
async fn active<Req: serde::Serialize, Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    method: &str,
    req: &Req,
) -> Result<(Res, String), RpcError> {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let reply = conn
        .rpc()
        .call_active(ORDER_SERVICE, ORDER_GROUP, method, req, &opts)
        .await?;
    Ok((reply.value, reply.instance_id.unwrap_or_default()))
}

/// An order instance with its own connection, as a separate process has.
struct Instance {
    order: Running,
    conn: Connection,
}

impl Instance {
    async fn start(url: &str, n: usize) -> Instance {
        Self::start_with(url, n, OrderOptions::default()).await
    }

    async fn start_with(url: &str, n: usize, opts: OrderOptions) -> Instance {
        let conn = connect(url).await;
        let opts = OrderOptions {
            instance_id: Some(format!("order-{n}")),
            ..opts
        };
        let order = order::start(&conn, opts).await.unwrap();
        Instance { order, conn }
    }

    /// As close to SIGKILL as one process can do to a part of itself: the
    /// service stops without resigning or deregistering, and its connection
    /// closes under any request still in flight, whose remaining writes and
    /// reply then fail.
    async fn crash(self) {
        drop(self.order);
        let _ = self.conn.drain().await;
    }
}

/// Creates `count` orders one after the other, each retried with the same
/// client order id until it is acknowledged — what a careful client does.
/// Returns, per client order id, the acknowledged order and who served it.
async fn create_stream(
    conn: Connection,
    count: usize,
    acked: Arc<Mutex<BTreeMap<String, (Order, String)>>>,
) {
    for i in 0..count {
        let req = CreateOrder {
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: 1 + (i as i64 % 5),
            price: None,
            client_order_id: format!("c-{i:03}"),
        };
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            match active::<_, Order>(&conn, "create_order", &req).await {
                Ok((order, served_by)) => {
                    acked
                        .lock()
                        .unwrap()
                        .insert(req.client_order_id.clone(), (order, served_by));
                    break;
                }
                // Refusals of the order itself would be a bug here.
                Err(e) if matches!(e.code(), ErrorCode::InvalidRequest | ErrorCode::Conflict) => {
                    panic!("order {} refused: {e}", req.client_order_id)
                }
                // No leader, a deposed one, a timeout: retry the same order.
                Err(e) => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "order {} never acknowledged: {e}",
                        req.client_order_id
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_mid_stream_loses_no_acknowledged_order_and_duplicates_none() {
    const ORDERS: usize = 60;
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "failover-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    let mut instances: HashMap<String, Instance> = HashMap::new();
    for n in 1..=3 {
        let instance = Instance::start(&nats.url(), n).await;
        instances.insert(instance.order.instance_id().to_owned(), instance);
    }

    let acked = Arc::new(Mutex::new(BTreeMap::new()));
    let client = tokio::spawn(create_stream(
        connect(&nats.url()).await,
        ORDERS,
        acked.clone(),
    ));
    let acked_count = || acked.lock().unwrap().len();

    // A third of the way in, the leader crashes, most likely in the middle
    // of an order: no resignation, its lease has to lapse.
    eventually(PATIENCE, "a third of the orders acknowledged", || async {
        acked_count() >= ORDERS / 3
    })
    .await;
    let crashed = instances
        .iter()
        .find(|(_, i)| is_leader(&i.order))
        .map(|(id, _)| id.clone())
        .expect("a leader");
    instances.remove(&crashed).unwrap().crash().await;

    // Two thirds in, the next leader stops gracefully (it resigns).
    eventually(
        PATIENCE,
        "two thirds of the orders acknowledged",
        || async { acked_count() >= 2 * ORDERS / 3 },
    )
    .await;
    let stopped = instances
        .iter()
        .find(|(_, i)| is_leader(&i.order))
        .map(|(id, _)| id.clone())
        .expect("a new leader");
    assert_ne!(stopped, crashed);
    instances
        .remove(&stopped)
        .unwrap()
        .order
        .shutdown()
        .await
        .unwrap();

    client.await.expect("the client acknowledged every order");
    let acked = acked.lock().unwrap().clone();
    assert_eq!(acked.len(), ORDERS);

    // All three instances led at some point and served orders.
    let served: HashSet<_> = acked.values().map(|(_, by)| by.clone()).collect();
    assert_eq!(served.len(), 3, "served by {served:?}");

    // The store: one order per client order id, the acknowledged one, decided.
    let (listed, _) = active::<_, OrderList>(&conn, "list_orders", &json!({"limit": 1000}))
        .await
        .unwrap();
    assert_eq!(listed.total, ORDERS, "no order lost, none duplicated");
    let by_client: HashMap<_, _> = listed
        .orders
        .iter()
        .map(|o| (o.client_order_id.clone(), o))
        .collect();
    assert_eq!(by_client.len(), ORDERS);
    for (client_order_id, (order, _)) in &acked {
        let stored = by_client[client_order_id];
        assert_eq!(stored.order_id, order.order_id);
        assert_eq!(stored.status, OrderStatus::Filled);
        assert_eq!(order.status, OrderStatus::Filled);
    }

    // The events: each order created once and filled once, no stray orders.
    barrier(&conn, &events, "order").await;
    let mut per_order: HashMap<String, (usize, usize, usize)> = HashMap::new();
    for e in events.events() {
        let Some(id) = e.payload["order_id"].as_str() else {
            continue;
        };
        let counts = per_order.entry(id.to_owned()).or_default();
        match e.subject.action.as_str() {
            "created" => counts.0 += 1,
            "filled" => counts.1 += 1,
            "rejected" => counts.2 += 1,
            _ => {}
        }
    }
    assert_eq!(
        per_order.len(),
        ORDERS,
        "events name exactly the stored orders"
    );
    for (client_order_id, (order, _)) in &acked {
        assert_eq!(
            per_order[&order.order_id],
            (1, 1, 0),
            "events of {client_order_id}"
        );
    }

    // Downstream: risk's position is the sum of the acknowledged fills.
    let expected: i64 = acked.values().map(|(o, _)| o.quantity).sum();
    eventually(PATIENCE, "risk's position matches the fills", || async {
        let positions: Positions = conn
            .rpc()
            .call(RISK_SERVICE, "get_positions", &json!({}))
            .await
            .unwrap();
        positions.positions.get("AAPL") == Some(&expected)
    })
    .await;

    for (_, instance) in instances {
        instance.order.shutdown().await.unwrap();
    }
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// Orders a leader recorded but could not decide (risk was down) are the
/// caller's to settle by a retry with the same client order id, on
/// whichever instance leads by then: the new leader completes a retried
/// one, and rejects as expired, unfilled, one nobody retried in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_completes_retried_orders_left_pending_and_expires_the_others() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "failover-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let quick = || OrderOptions {
        call_timeout: Duration::from_millis(500),
        stale_after: Duration::from_secs(1),
        expire_after: Duration::from_secs(4),
        ..Default::default()
    };
    let first = Instance::start_with(&nats.url(), 1, quick()).await.order;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&first) }).await;
    let second = Instance::start_with(&nats.url(), 2, quick()).await.order;

    // Risk is down: both orders are recorded, and both callers told so.
    let request = |client_order_id: &str| CreateOrder {
        symbol: "MSFT".into(),
        side: Side::Sell,
        quantity: 7,
        price: None,
        client_order_id: client_order_id.into(),
    };
    let (retried, abandoned) = (request("c-retried"), request("c-abandoned"));
    let mut recorded = HashMap::new();
    for req in [&retried, &abandoned] {
        let failed = conn
            .rpc()
            .call_active::<_, Order>(
                ORDER_SERVICE,
                ORDER_GROUP,
                "create_order",
                req,
                &CallOptions::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(failed.code(), ErrorCode::ServiceUnavailable);
        let details = failed.remote().unwrap().details.clone().unwrap();
        let order_id = details["order_id"].as_str().unwrap().to_owned();
        recorded.insert(req.client_order_id.clone(), order_id);
    }
    let (listed, _) = active::<_, OrderList>(&conn, "list_orders", &json!({}))
        .await
        .unwrap();
    assert!(
        listed
            .orders
            .iter()
            .all(|o| o.status == OrderStatus::Pending)
    );

    // Risk comes back and leadership moves. The caller that retries gets
    // its order completed by the new leader.
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    first.shutdown().await.unwrap();
    let (done, served_by) = active::<_, Order>(&conn, "create_order", &retried)
        .await
        .unwrap();
    assert_eq!(served_by, "order-2");
    assert_eq!(done.order_id, recorded["c-retried"]);
    assert_eq!(done.status, OrderStatus::Filled);
    assert_eq!(
        second.service().metrics().snapshot().custom["orders_taken_over"],
        1.0
    );

    // The other is never filled: once past the bound, it expires.
    let order_id = recorded["c-abandoned"].clone();
    eventually(PATIENCE, "order-2 expired the abandoned order", || async {
        let got = active::<_, Order>(&conn, "get_order", &json!({"order_id": order_id})).await;
        // Decided and announced: settled for good.
        matches!(got, Ok((order, _)) if order.status != OrderStatus::Pending && order.announced)
    })
    .await;
    let (expired, _) = active::<_, Order>(&conn, "get_order", &json!({"order_id": order_id}))
        .await
        .unwrap();
    assert_eq!(expired.status, OrderStatus::Rejected);
    assert_eq!(expired.reasons[0].code, ReasonCode::Expired);
    assert_eq!(expired.instance_id, "order-2");

    barrier(&conn, &events, "order").await;
    let count = |action: &str, order_id: &str| {
        events
            .events()
            .into_iter()
            .filter(|e| e.subject.action == action && e.payload["order_id"] == order_id)
            .count()
    };
    assert_eq!(count("filled", &done.order_id), 1);
    assert_eq!(count("filled", &order_id), 0);
    assert_eq!(count("rejected", &order_id), 1);

    // A late retry by its caller gets that same, expired order.
    let (retried, _) = active::<_, Order>(&conn, "create_order", &abandoned)
        .await
        .unwrap();
    assert_eq!(retried, expired);
    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deposed_leader_cannot_overwrite_its_successor() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "failover-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    // A risk service that holds assessments until the test lets them go:
    // the first one (order-1's) on `first_gate`, later ones on `later_gate`.
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first_gate = Arc::new(tokio::sync::Semaphore::new(0));
    let later_gate = Arc::new(tokio::sync::Semaphore::new(0));
    let slow_risk = conn
        .service(RISK_SERVICE, "1.0.0")
        .handler("assess_risk", {
            let (calls, first_gate, later_gate) =
                (calls.clone(), first_gate.clone(), later_gate.clone());
            move |_: Value| {
                let (calls, first_gate, later_gate) =
                    (calls.clone(), first_gate.clone(), later_gate.clone());
                async move {
                    let gate = match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                        0 => first_gate,
                        _ => later_gate,
                    };
                    let _ = gate.acquire().await;
                    Ok::<_, aegis_sdk::rpc::WireError>(RiskAssessment {
                        approved: true,
                        risk_score: 1.0,
                        reasons: vec![],
                    })
                }
            }
        })
        .start()
        .await
        .unwrap();
    let risk_calls = || calls.load(std::sync::atomic::Ordering::SeqCst);

    // Timing with room for a slow machine: a lease that a busy CPU does not
    // let lapse by accident, and dependency calls that wait at the gates
    // (their attempts last 20 s, so each call enters risk once).
    let patient = || OrderOptions {
        lease: aegis_sdk::election::LeaseConfig::with_lease(Duration::from_secs(2)),
        call_timeout: Duration::from_secs(60),
        stale_after: Duration::from_secs(120),
        expire_after: Duration::from_secs(240),
        ..Default::default()
    };
    let first = Instance::start_with(&nats.url(), 1, patient()).await.order;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&first) }).await;
    let second = Instance::start_with(&nats.url(), 2, patient()).await.order;
    let req = CreateOrder {
        symbol: "NVDA".into(),
        side: Side::Buy,
        quantity: 3,
        price: None,
        client_order_id: "c-contested".into(),
    };

    // The first attempt reaches order-1 and hangs in risk, its order
    // pending; its caller waits as long as it takes.
    let first_attempt = tokio::spawn({
        let (conn, req) = (conn.clone(), req.clone());
        async move {
            let opts = CallOptions::timeout(Duration::from_secs(20));
            conn.rpc()
                .call_active::<_, Order>(ORDER_SERVICE, ORDER_GROUP, "create_order", &req, &opts)
                .await
        }
    });
    eventually(PATIENCE, "order-1 asks risk", || async {
        risk_calls() == 1
    })
    .await;

    // order-1 stops renewing its lease (a long pause, say) and order-2 takes
    // over while order-1 still holds the request. The caller retries, and
    // order-2 takes the pending order over under its newer epoch and asks
    // risk (its sweep leaves a pending order to its caller until it
    // expires).
    first.service().election().unwrap().pause_renewals(true);
    eventually(PATIENCE, "order-2 leads", || async { is_leader(&second) }).await;
    let retry = tokio::spawn({
        let (conn, req) = (conn.clone(), req.clone());
        async move { active::<_, Order>(&conn, "create_order", &req).await }
    });
    eventually(PATIENCE, "the retry asks risk", || async {
        risk_calls() >= 2
    })
    .await;

    // The retry on order-2 goes on and records the decision.
    later_gate.add_permits(100);
    let (decided, served_by) = retry.await.unwrap().unwrap();
    assert_eq!(served_by, "order-2");
    assert_eq!(decided.status, OrderStatus::Filled);

    // Now order-1 wakes up and tries to record its own decision: refused,
    // since the order was written under a newer epoch since it read it. The
    // caller of the first attempt still ends up with the one order, told
    // that a deposed leader answered (the call is not idempotent, so it is
    // not run again).
    first_gate.add_permits(1);
    // The store's fence refuses the deposed leader's write, so it answers
    // NOT_ACTIVE, which `call_active` takes as "did not run" and retries on
    // the new leader: the caller gets the one order. Should the deposed
    // leader's answer still get out, it is the one order too.
    match first_attempt.await.unwrap() {
        Ok(reply) => {
            assert_eq!(reply.value, decided);
            assert_eq!(reply.instance_id.as_deref(), Some("order-2"));
        }
        Err(RpcError::DeposedLeader(deposed)) => {
            assert_eq!(deposed.value::<Order>().unwrap(), decided)
        }
        Err(RpcError::Remote { error, .. })
            if error.code == aegis_sdk::rpc::ErrorCode::NotActive => {}
        other => panic!(
            "expected the one order, NOT_ACTIVE or the deposed leader's answer, got {other:?}"
        ),
    }

    let (stored, _) =
        active::<_, Order>(&conn, "get_order", &json!({"order_id": decided.order_id}))
            .await
            .unwrap();
    assert_eq!(stored, decided, "order-2's decision stands");
    assert_eq!(stored.instance_id, "order-2");
    assert!(stored.epoch > 0);
    assert_eq!(
        second.service().metrics().snapshot().custom["orders_taken_over"],
        1.0
    );
    assert_eq!(
        first.service().metrics().snapshot().custom["orders_filled"],
        0.0,
        "the deposed leader decided nothing"
    );
    barrier(&conn, &events, "order").await;
    let count = |action: &str| {
        events
            .events()
            .iter()
            .filter(|e| {
                e.subject.action == action && e.payload["order_id"] == decided.order_id.as_str()
            })
            .count()
    };
    assert_eq!((count("created"), count("filled")), (1, 1));

    first.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    slow_risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

/// Holds or lets go the deliveries of consumer `name` of the `orders`
/// bucket's stream (JetStream's consumer pause, server 2.11+): while held,
/// the watch reading it hands nothing over, as when its consumer is being
/// made again after its node died — but for as long as the test says.
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
            format!("$JS.API.CONSUMER.PAUSE.KV_{}.{name}", order::ORDERS_BUCKET),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["paused"], json!(hold), "{reply}");
}

/// The names of the consumers on the `orders` bucket's stream.
async fn order_watches(conn: &Connection) -> HashSet<String> {
    use futures::TryStreamExt;
    let stream = conn
        .jetstream()
        .get_stream(format!("KV_{}", order::ORDERS_BUCKET))
        .await
        .unwrap();
    stream.consumer_names().try_collect().await.unwrap()
}

/// A fill the old leader stored just before it was deposed, and which has
/// not reached the new leader's index yet (its watch is being made again,
/// or lags): the new leader must not judge an order of that symbol without
/// it. Before, it waited only for its index's first load, so it neither
/// announced that fill nor counted it, and risk passed an order that took
/// the position past its limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_judges_no_order_before_its_index_holds_the_old_leaders_fills() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "failover-tests", "order.*").await;
    let pricing = start_pricing_without_publication(&conn).await;
    let risk = risk::start(
        &conn,
        RiskOptions {
            limits: risk::RiskLimits {
                max_position: 100,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Requests give up on the index after a second; the sweep runs only
    // when leadership changes within the test.
    let opts = || OrderOptions {
        call_timeout: Duration::from_secs(1),
        stale_after: Duration::from_secs(120),
        expire_after: Duration::from_secs(240),
        ..Default::default()
    };
    let first = Instance::start_with(&nats.url(), 1, opts()).await.order;
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&first) }).await;
    eventually(PATIENCE, "order-1 watches the orders", || async {
        order_watches(&conn).await.len() == 1
    })
    .await;
    let before = order_watches(&conn).await;
    let second = Instance::start_with(&nats.url(), 2, opts()).await.order;
    eventually(PATIENCE, "order-2 watches the orders", || async {
        order_watches(&conn).await.len() == 2
    })
    .await;
    let watch = order_watches(&conn)
        .await
        .difference(&before)
        .next()
        .unwrap()
        .clone();
    // order-2's watch has handed over everything stored (the fence): its
    // index is loaded. From here on it hands over nothing.
    let mut stream = conn
        .jetstream()
        .get_stream(format!("KV_{}", order::ORDERS_BUCKET))
        .await
        .unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    eventually(PATIENCE, "order-2's index is loaded", || async {
        let info = stream.consumer_info(&watch).await.unwrap();
        info.delivered.stream_sequence >= last && info.num_pending == 0
    })
    .await;
    hold_watch(&conn, &watch, true).await;

    // order-1 stores a fill of 60 AAPL and stops before announcing it.
    let Some(aegis_sdk::election::Role::Leader { epoch }) =
        first.service().election().map(|e| e.role())
    else {
        panic!("order-1 does not lead")
    };
    let old = CreateOrder {
        symbol: "AAPL".into(),
        side: Side::Buy,
        quantity: 60,
        price: None,
        client_order_id: "c-old".into(),
    };
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
    first.shutdown().await.unwrap();
    eventually(PATIENCE, "order-2 leads", || async { is_leader(&second) }).await;

    // Another 60 AAPL, while order-2's index misses the first: it must not
    // be judged (60 fits a flat position; 120 does not).
    let next = CreateOrder {
        client_order_id: "c-next".into(),
        ..old.clone()
    };
    let create = || async {
        conn.rpc()
            .call_instance::<_, Order>(
                ORDER_SERVICE,
                "order-2",
                "create_order",
                &next,
                &CallOptions::timeout(Duration::from_secs(15)),
            )
            .await
    };
    let early = create().await.map(|reply| reply.value);
    let refused = early.as_ref().expect_err("judged without order-1's fill");
    assert_eq!(refused.code(), ErrorCode::ServiceUnavailable, "{refused}");

    // The watch catches up: order-2 announces the fill (its sweep, which
    // waited for the index too), and the next order is judged with it.
    hold_watch(&conn, &watch, false).await;
    events
        .wait_for("order-1's fill, announced by order-2", |e| {
            e["order_id"] == "ord-old" && e.get("fill_price").is_some()
        })
        .await;
    let judged = create().await.unwrap().value;
    assert_eq!(judged.status, OrderStatus::Rejected, "{judged:?}");
    assert_eq!(judged.reasons[0].code, ReasonCode::MaxPosition);
    eventually(PATIENCE, "risk holds the one fill", || async {
        let positions: Positions = conn
            .rpc()
            .call(RISK_SERVICE, "get_positions", &json!({}))
            .await
            .unwrap();
        positions.positions.get("AAPL") == Some(&60)
    })
    .await;

    second.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
