//! order-service writes are fenced at the store: a leader admitted a
//! request under a valid lease, then stalled (a long GC pause, a frozen
//! VM — here a real SIGSTOP of a child process) past its lease while a
//! standby took over. When it wakes mid-request it must not write: not a
//! new order, not a decision. And a leader whose lease still looks valid to
//! itself must not write once a newer leader has moved the store's fence.

mod common;

use std::{
    process::{Child, Command, Stdio},
    sync::atomic::Ordering,
    time::Duration,
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::{
    Connection,
    election::LeaseConfig,
    rpc::{CallOptions, ErrorCode},
};
use aegis_trading::{
    order::{self, CreateOrder, Order, OrderList, OrderOptions, OrderStatus},
    risk::{self, RiskOptions},
};
use common::{PATIENCE, Recorder, barrier, connect, eventually, gated_pricing, is_leader, server};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::{Value, json};

const CHILD_ENV: &str = "AEGIS_TRADING_TEST_CHILD_NATS";

/// Order options with room for a slow machine: a lease a busy CPU does not
/// let lapse by accident, and dependency calls that wait as long as the
/// test holds them.
fn patient(instance: &str) -> OrderOptions {
    OrderOptions {
        instance_id: Some(instance.to_owned()),
        lease: LeaseConfig::with_lease(Duration::from_secs(2)),
        call_timeout: Duration::from_secs(60),
        stale_after: Duration::from_secs(120),
        expire_after: Duration::from_secs(240),
        ..Default::default()
    }
}

fn contested() -> CreateOrder {
    CreateOrder {
        symbol: "NVDA".into(),
        side: Side::Buy,
        quantity: 3,
        price: None,
        client_order_id: "c-zombie".into(),
    }
}

/// Sends `req` to `instance` only — never retried elsewhere — and waits as
/// long as it takes.
async fn create_on(
    conn: &Connection,
    instance: &str,
    req: &CreateOrder,
) -> Result<Order, ErrorCode> {
    conn.rpc()
        .call_instance::<_, Order>(
            ORDER_SERVICE,
            instance,
            "create_order",
            req,
            &CallOptions::timeout(Duration::from_secs(60)),
        )
        .await
        .map(|reply| reply.value)
        .map_err(|e| e.code())
}

async fn on_leader<Res: serde::de::DeserializeOwned>(
    conn: &Connection,
    method: &str,
    req: &impl serde::Serialize,
) -> Res {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(15)),
        idempotent: true,
        ..Default::default()
    };
    conn.rpc()
        .call_active(ORDER_SERVICE, ORDER_GROUP, method, req, &opts)
        .await
        .unwrap()
        .value
}

/// The order stored under `client_order_id`, read from the bucket itself.
async fn stored_order(conn: &Connection, client_order_id: &str) -> Option<Order> {
    let orders = conn
        .jetstream()
        .get_key_value(order::ORDERS_BUCKET)
        .await
        .unwrap();
    let order_id = orders
        .get(format!("client.{client_order_id}"))
        .await
        .unwrap()?;
    let order_id = String::from_utf8(order_id.to_vec()).unwrap();
    let order = orders.get(format!("order.{order_id}")).await.unwrap()?;
    Some(serde_json::from_slice(&order).unwrap())
}

/// The order instance `order-1` as a process of its own, so that it can
/// really be stopped. Killed when dropped.
struct ChildInstance(Child);

impl ChildInstance {
    fn spawn(url: &str) -> Self {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["child_order_instance", "--exact", "--nocapture"])
            .env(CHILD_ENV, url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self(child)
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).unwrap());
        kill(pid, signal).unwrap();
    }
}

impl Drop for ChildInstance {
    fn drop(&mut self) {
        let _ = self.signal_quietly(Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl ChildInstance {
    fn signal_quietly(&self, signal: Signal) -> nix::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.0.id()).unwrap_or(0));
        kill(pid, signal)
    }
}

/// Run as a child process by `a_leader_paused_past_its_lease_writes_nothing_when_it_wakes`:
/// order instance `order-1`, until killed. A no-op in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_order_instance() {
    let Ok(url) = std::env::var(CHILD_ENV) else {
        return;
    };
    let conn = connect(&url).await;
    let _order = order::start(&conn, patient("order-1")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_wakes() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = Recorder::<Value>::start(&conn, "fencing-tests", "order.*").await;
    let (pricing, gate, quotes) = gated_pricing(&conn, 1).await;
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();

    // order-1 runs in a child process and leads; order-2 stands by here.
    let child = ChildInstance::spawn(&nats.url());
    eventually(PATIENCE, "order-1 leads", || async {
        conn.rpc()
            .call_instance::<_, Value>(
                ORDER_SERVICE,
                "order-1",
                "list_orders",
                &json!({}),
                &CallOptions::timeout(Duration::from_secs(2)),
            )
            .await
            .is_ok()
    })
    .await;
    let standby = order::start(&connect(&nats.url()).await, patient("order-2"))
        .await
        .unwrap();

    // order-1 takes a request and waits for its quote.
    let zombie_request = tokio::spawn({
        let conn = conn.clone();
        async move { create_on(&conn, "order-1", &contested()).await }
    });
    eventually(PATIENCE, "order-1 asks for a quote", || async {
        quotes.load(Ordering::SeqCst) == 1
    })
    .await;

    // It freezes; its lease lapses and order-2 takes over.
    child.signal(Signal::SIGSTOP);
    eventually(PATIENCE, "order-2 leads", || async { is_leader(&standby) }).await;

    // It wakes with the quote in its socket and carries on with the request
    // it was admitted for under its old lease.
    gate.add_permits(1);
    child.signal(Signal::SIGCONT);
    let answer = zombie_request.await.unwrap();
    assert_eq!(
        answer.as_ref().map(|o| (&o.instance_id, o.epoch)).err(),
        Some(&ErrorCode::NotActive),
        "the deposed leader answered {answer:?}"
    );

    // Nothing of it is in the store or the stream.
    assert_eq!(stored_order(&conn, "c-zombie").await, None);
    barrier(&conn, &events, "order").await;
    let published: Vec<_> = events
        .events()
        .into_iter()
        .filter(|e| e.subject.action != "barrier")
        .collect();
    assert!(published.is_empty(), "{published:?}");

    // The caller retries on the leader and gets one order, written by it.
    let order: Order = on_leader(&conn, "create_order", &contested()).await;
    assert_eq!(order.status, OrderStatus::Filled);
    assert_eq!(order.instance_id, "order-2");
    let stored: OrderList = on_leader(&conn, "list_orders", &json!({})).await;
    assert_eq!(stored.total, 1);

    drop(child);
    standby.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_writes_nothing_once_a_newer_leader_has_moved_the_fence() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (pricing, gate, quotes) = gated_pricing(&conn, 1).await;
    let risk = risk::start(&conn, RiskOptions::default()).await.unwrap();
    let leader = order::start(&conn, patient("order-1")).await.unwrap();
    eventually(PATIENCE, "order-1 leads", || async { is_leader(&leader) }).await;

    let request = tokio::spawn({
        let conn = conn.clone();
        async move { create_on(&conn, "order-1", &contested()).await }
    });
    eventually(PATIENCE, "order-1 asks for a quote", || async {
        quotes.load(Ordering::SeqCst) == 1
    })
    .await;

    // A leader this one never heard of (it was cut off from the elections
    // bucket, say) takes the store's fence, as every new leader does before
    // its first write. order-1's lease still looks valid to itself.
    let orders = conn
        .jetstream()
        .get_key_value(order::ORDERS_BUCKET)
        .await
        .unwrap();
    let fence = orders.entry(order::FENCE_KEY).await.unwrap();
    let newer = json!({"epoch": u64::MAX / 2, "instance_id": "order-elsewhere"});
    let bytes = serde_json::to_vec(&newer).unwrap().into();
    match fence {
        Some(fence) => orders
            .update(order::FENCE_KEY, bytes, fence.revision)
            .await
            .unwrap(),
        None => orders.create(order::FENCE_KEY, bytes).await.unwrap(),
    };

    gate.add_permits(1);
    assert!(is_leader(&leader), "the lease is not what stops it here");
    assert_eq!(request.await.unwrap().err(), Some(ErrorCode::NotActive));
    let stored: OrderList = conn
        .rpc()
        .call_instance::<_, OrderList>(
            ORDER_SERVICE,
            "order-1",
            "list_orders",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(stored.total, 0, "{:?}", stored.orders);
    assert_eq!(stored_order(&conn, "c-zombie").await, None);

    leader.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
