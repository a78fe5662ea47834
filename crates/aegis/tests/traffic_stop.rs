//! `aegis traffic` against a real nats-server and a real SDK order service:
//! once stopped (`--duration` over), no client starts a new order — the
//! orders in flight finish and that is all — and a run in which no order
//! was acknowledged fails.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE};
use aegis_sdk::{
    AegisConfig, Connection,
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use aegis_testkit::NatsServer;
use aegis_trading::order::{CreateOrder, Order, OrderStatus};

/// How long the order service takes to answer: longer than the run, so
/// every client's first order is still in flight when it stops.
const ANSWER_AFTER: Duration = Duration::from_millis(1500);

/// An order service leading its group on `url` that fills every order
/// after [`ANSWER_AFTER`], counting the orders it was sent.
async fn slow_order_service(url: &str, received: Arc<AtomicU64>) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .unwrap();
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
            let received = received.clone();
            async move {
                let n = received.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(ANSWER_AFTER).await;
                let mut order = Order::new(format!("ord-{n}"), &req, 1, "order-1");
                order.status = OrderStatus::Filled;
                Ok::<_, WireError>(serde_json::to_value(order).unwrap())
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
async fn once_stopped_no_client_starts_another_order() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let received = Arc::new(AtomicU64::new(0));
    let _svc = slow_order_service(&url, received.clone()).await;

    // 8 clients, each due to send every 100 ms: each sends its first order
    // at once, and it is answered only after the 1 s run. A client that
    // started another once stopped would show here as a ninth order.
    let args: Vec<String> = [
        "traffic",
        "--duration",
        "1s",
        "--clients",
        "8",
        "--rate",
        "80",
        "--timeout-ms",
        "10000",
        "--no-check",
        "--nats-url",
        &url,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let started = Instant::now();
    let (ok, out) = tokio::task::spawn_blocking(move || common::run(&args))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(ok, "{out}");
    assert_eq!(
        received.load(Ordering::SeqCst),
        8,
        "one order per client, none after the stop:\n{out}"
    );
    assert!(out.contains("8 orders sent"), "{out}");
    assert!(out.contains("8 acknowledged"), "{out}");
    // The stop, then the orders in flight: one answer later, not the many
    // rounds it sent before (room for a process start on a busy machine).
    assert!(
        took < Duration::from_secs(1) + 3 * ANSWER_AFTER,
        "{took:?}\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_in_which_no_order_was_acknowledged_fails() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // No order service at all: every order fails.
    let (ok, out) = tokio::task::spawn_blocking(move || {
        common::run(&[
            "traffic",
            "--duration",
            "1s",
            "--clients",
            "1",
            "--rate",
            "2",
            "--timeout-ms",
            "300",
            "--nats-url",
            &url,
        ])
    })
    .await
    .unwrap();
    assert!(!ok, "a run where nothing worked must fail:\n{out}");
    assert!(out.contains("0 acknowledged"), "{out}");
    assert!(out.contains("no order was acknowledged"), "{out}");
}
