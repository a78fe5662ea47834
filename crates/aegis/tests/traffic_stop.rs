//! `aegis traffic` against a real nats-server and a real SDK order
//! service, as it stops:
//! - once stopped (`--duration` over), no client starts a new order — the
//!   orders in flight finish and that is all — and a run in which no order
//!   was acknowledged fails;
//! - while it waits for the orders in flight or reads the acknowledged
//!   orders back, Ctrl-C or SIGTERM still stops it (exit 130), and when the
//!   showcase it sends to is gone the read-back gives up within one order's
//!   deadline, saying what it waited for, instead of waiting once per order.

mod common;

use std::{
    process::ExitStatus,
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
use aegis_trading::order::{CreateOrder, GetOrder, Order, OrderStatus};
use common::Proc;
use nix::sys::signal::Signal;

/// How long the order service takes, per method.
#[derive(Clone, Copy)]
struct Delays {
    create: Duration,
    get: Duration,
}

/// An order service leading its group on `url` that fills every order
/// after `delays.create` and reads one back after `delays.get`, counting
/// the orders it was sent in `received`.
async fn order_service(
    url: &str,
    delays: Delays,
    received: Arc<AtomicU64>,
) -> (Service, Connection) {
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
                tokio::time::sleep(delays.create).await;
                let mut order = Order::new(format!("ord-{n}"), &req, 1, "order-1");
                order.status = OrderStatus::Filled;
                Ok::<_, WireError>(serde_json::to_value(order).unwrap())
            }
        })
        .handler("get_order", move |req: GetOrder| async move {
            tokio::time::sleep(delays.get).await;
            let request = CreateOrder {
                symbol: "AAPL".into(),
                side: aegis_contracts::trading::Side::Buy,
                quantity: 1,
                price: None,
                client_order_id: "c-1".into(),
            };
            let order = Order::new(req.order_id, &request, 1, "order-1");
            Ok::<_, WireError>(serde_json::to_value(order).unwrap())
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

/// How long the order service of the stop test takes to answer: longer
/// than the run, so every client's first order is still in flight when it
/// stops.
const ANSWER_AFTER: Duration = Duration::from_millis(1500);

/// `aegis traffic` for 1 s at `rate` from 4 clients, each order's deadline
/// `timeout_ms`, once it prints `phase`.
fn traffic_until(url: &str, rate: &str, timeout_ms: &str, phase: &str) -> Proc {
    let mut traffic = Proc::spawn(&[
        "traffic",
        "--duration",
        "1s",
        "--clients",
        "4",
        "--rate",
        rate,
        "--timeout-ms",
        timeout_ms,
        "--nats-url",
        url,
    ]);
    traffic.wait_for(phase, Duration::from_secs(30));
    traffic
}

/// Sends `signal` and expects the exit within a few seconds, with 130.
fn interrupted_by(traffic: &mut Proc, signal: Signal) -> (ExitStatus, String) {
    traffic.signal(signal);
    let status = traffic.exit_within(Duration::from_secs(5));
    let out = traffic.output();
    assert_eq!(status.code(), Some(130), "{status}\n{out}");
    (status, out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_read_back_of_an_order_service_that_does_not_answer() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // Orders are filled at once; reading one back takes longer than any
    // test would wait.
    let delays = Delays {
        create: Duration::ZERO,
        get: Duration::from_secs(600),
    };
    let _svc = order_service(&url, delays, Arc::default()).await;
    let mut traffic = tokio::task::spawn_blocking(move || {
        traffic_until(&url, "20", "60000", "reading the orders back")
    })
    .await
    .unwrap();
    let (_, out) = interrupted_by(&mut traffic, Signal::SIGTERM);
    assert!(
        out.contains("interrupted"),
        "says it was interrupted:\n{out}"
    );
    assert!(
        !out.contains("none lost"),
        "an interrupted read-back claims nothing:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_the_wait_for_orders_in_flight() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // Every order is still in flight when the 1 s run ends.
    let delays = Delays {
        create: Duration::from_secs(600),
        get: Duration::ZERO,
    };
    let _svc = order_service(&url, delays, Arc::default()).await;
    let mut traffic =
        tokio::task::spawn_blocking(move || traffic_until(&url, "20", "60000", "in flight, each"))
            .await
            .unwrap();
    let (_, out) = interrupted_by(&mut traffic, Signal::SIGINT);
    assert!(
        out.contains("interrupted"),
        "says it was interrupted:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_gives_up_within_a_deadline_once_the_server_is_gone() {
    let mut nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // Reading back the ~200 orders of the run takes a few seconds, and the
    // server stops as it begins.
    let delays = Delays {
        create: Duration::ZERO,
        get: Duration::from_millis(300),
    };
    let _svc = order_service(&url, delays, Arc::default()).await;
    let mut traffic = tokio::task::spawn_blocking(move || {
        traffic_until(&url, "200", "2000", "reading the orders back")
    })
    .await
    .unwrap();
    let stopped = Instant::now();
    nats.kill();
    // One order's deadline (2 s) and a process's exit, not one deadline
    // per 16 orders (~25 s).
    let status = tokio::task::spawn_blocking(move || {
        let status = traffic.exit_within(Duration::from_secs(10));
        (status, traffic.output())
    })
    .await
    .unwrap();
    let (status, out) = status;
    let took = stopped.elapsed();
    eprintln!("{out}");
    assert_eq!(status.code(), Some(1), "{status} after {took:?}\n{out}");
    assert!(
        out.contains("not checked"),
        "says which orders it could not check:\n{out}"
    );
    assert!(!out.contains("none lost"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_stopped_no_client_starts_another_order() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let received = Arc::new(AtomicU64::new(0));
    // Every client's first order is still in flight when the 1 s run stops.
    let delays = Delays {
        create: ANSWER_AFTER,
        get: Duration::ZERO,
    };
    let _svc = order_service(&url, delays, received.clone()).await;

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
