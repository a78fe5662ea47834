//! `aegis traffic` against a real nats-server and an SDK order service
//! that records an order but answers only after the client's deadline: the
//! order's outcome is unknown to the client, not failed. Like a trading
//! client, `aegis traffic` settles it by sending `create_order` again with
//! the same client order id (idempotent: the service answers the order it
//! recorded), counts it as settled by a retry, and reads it back with the
//! acknowledged orders.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE};
use aegis_sdk::{
    AegisConfig, Connection,
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use aegis_testkit::NatsServer;
use aegis_trading::order::{CreateOrder, GetOrder, Order, OrderStatus};

/// The client's deadline of one order in the test (`--timeout-ms`).
const TIMEOUT_MS: u64 = 500;

/// How long a slow order's calls wait after it was recorded: well past the
/// client's deadline, and past the attempts the SDK makes within it.
const SLOW_ANSWER: Duration = Duration::from_millis(3 * TIMEOUT_MS);

/// The orders recorded, by client order id, and when.
type Book = Arc<Mutex<HashMap<String, (Order, Instant)>>>;

/// An order service leading its group on `url` that records and fills
/// every order at once, as the real one does idempotently by client order
/// id (a repeat answers the recorded order); each client's first order
/// (`…-0`) is answered, to every call, only [`SLOW_ANSWER`] after it was
/// recorded (as by a leader whose store stalled after the write).
async fn order_service(url: &str, book: Book) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .unwrap();
    let reads = book.clone();
    let svc = conn
        .service(ORDER_SERVICE, "1.0.0")
        .instance_id("order-1")
        .single_active(ORDER_GROUP)
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .handler("create_order", move |req: CreateOrder| {
            let book = book.clone();
            async move {
                let (order, recorded) = {
                    let mut book = book.lock().unwrap();
                    let n = book.len();
                    book.entry(req.client_order_id.clone())
                        .or_insert_with(|| {
                            let mut order = Order::new(format!("ord-{n}"), &req, 1, "order-1");
                            order.status = OrderStatus::Filled;
                            (order, Instant::now())
                        })
                        .clone()
                };
                if req.client_order_id.ends_with("-0") {
                    tokio::time::sleep_until((recorded + SLOW_ANSWER).into()).await;
                }
                Ok::<_, WireError>(serde_json::to_value(order).unwrap())
            }
        })
        .handler("get_order", move |req: GetOrder| {
            let found = reads
                .lock()
                .unwrap()
                .values()
                .find(|(o, _)| o.order_id == req.order_id)
                .map(|(o, _)| o.clone());
            async move {
                match found {
                    Some(order) => Ok(serde_json::to_value(order).unwrap()),
                    None => Err(WireError::not_found(format!("no order {}", req.order_id))),
                }
            }
        })
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !svc.election().unwrap().role().is_leader() {
        assert!(Instant::now() < deadline, "the order service never led");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (svc, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_answered_after_the_deadline_is_settled_by_a_retry_not_failed() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let book = Book::default();
    let _svc = order_service(&url, book.clone()).await;
    // Two clients: each one's first order is recorded (and filled) at once
    // but answered after its deadline.
    let (ok, out) = tokio::task::spawn_blocking(move || {
        common::run(&[
            "traffic",
            "--duration",
            "2s",
            "--clients",
            "2",
            "--rate",
            "4",
            "--timeout-ms",
            &TIMEOUT_MS.to_string(),
            "--nats-url",
            &url,
        ])
    })
    .await
    .unwrap();
    eprintln!("{out}");
    let recorded = book.lock().unwrap().len();
    assert!(ok, "{out}");
    assert!(recorded >= 2, "{recorded} orders recorded\n{out}");
    // Two orders timed out: neither is failed, both are settled as the
    // service recorded them (filled), and nothing is left unknown.
    assert!(
        out.contains("2 settled by a retry (2 filled, 0 rejected), failed 0, unknown 0"),
        "{out}"
    );
    assert!(
        out.contains(&format!("{recorded} orders sent in",)),
        "every recorded order is counted once:\n{out}"
    );
    assert!(
        out.contains(&format!(
            "all {recorded} orders answered ({} acknowledged, 2 settled by a retry) are there: none lost",
            recorded - 2
        )),
        "the settled orders are read back with the acknowledged ones:\n{out}"
    );
}
