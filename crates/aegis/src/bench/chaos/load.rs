//! The steady flow the faults hit, and the records it leaves:
//! - clients creating orders through `call_active`, each pausing
//!   `interval` after an answer (unique client order ids, alternating buy
//!   and sell so no position limit is reached), recording send and answer
//!   times and the outcome;
//! - a subscriber to the order events, recording each event's stream
//!   sequence per order id and action;
//! - a watch of the `orders` bucket, recording every order write with its
//!   writer, fencing epoch and server time (the zombie check);
//! - a watch of the order service's election key: who holds it, since when.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use aegis_contracts::{
    subjects,
    trading::{ORDER_GROUP, ORDER_SERVICE, Side},
};
use aegis_sdk::{
    Connection,
    election::LeaderRecord,
    events::{DeliveryMode, Event, EventSubscription},
    kv::Resume,
    rpc::CallOptions,
};
use aegis_trading::order::{CreateOrder, Order, OrderStatus};
use async_nats::jetstream::kv;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bench::lock;

/// The holder of the order service's election key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The leader's instance id.
    pub(crate) instance_id: String,
    /// Its fencing epoch.
    pub(crate) epoch: u64,
}

/// A change of holder, with the server time of the winning write.
#[derive(Debug, Clone)]
pub(crate) struct Takeover {
    /// The new holder (`None`: the key was deleted by a resigning leader).
    pub(crate) holder: Option<Holder>,
    /// When JetStream stored the write.
    pub(crate) written: SystemTime,
}

/// How one `create_order` call ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// Answered with a decided order: acknowledged.
    Acked {
        /// The order's id.
        order_id: String,
        /// Filled or rejected.
        status: OrderStatus,
    },
    /// Failed (timeout, no leader, deposed leader, an error answer).
    Failed(String),
}

/// One `create_order` call.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    /// When it was sent.
    pub(crate) sent: Instant,
    /// When it was answered (or gave up).
    pub(crate) answered: Instant,
    /// How it ended.
    pub(crate) outcome: Outcome,
}

/// One write of an order record, as the `orders` bucket stored it.
#[derive(Debug, Clone)]
pub(crate) struct OrderWrite {
    /// The writer's instance id.
    pub(crate) instance_id: String,
    /// Its fencing epoch.
    pub(crate) epoch: u64,
    /// When JetStream stored it.
    pub(crate) written: SystemTime,
    /// When the watch delivered it.
    pub(crate) seen: Instant,
}

/// Everything the flow recorded.
#[derive(Debug, Default)]
pub(crate) struct Records {
    /// Every call, in the order answered.
    pub(crate) calls: Vec<Call>,
    /// Stream sequences of order events per (order id, action).
    pub(crate) events: BTreeMap<(String, String), BTreeSet<u64>>,
    /// Every order write seen.
    pub(crate) writes: Vec<OrderWrite>,
    /// Every change of the election key.
    pub(crate) takeovers: Vec<Takeover>,
}

/// Shared records and the current holder.
#[derive(Clone, Default)]
pub(crate) struct Shared {
    /// What was recorded.
    pub(crate) records: Arc<Mutex<Records>>,
    /// The election key's holder now.
    pub(crate) holder: Arc<Mutex<Option<Holder>>>,
}

/// `callers` clients each create an order, wait for the answer, pause
/// `interval` and go on, until `stop`. Closed loop on purpose: the order
/// service writes each order to an R3 bucket several times, and an open
/// loop faster than it would measure a queue, not the faults.
pub(crate) async fn orders(
    conn: Connection,
    shared: Shared,
    callers: usize,
    interval: Duration,
    deadline: Duration,
    stop: CancellationToken,
) {
    let run = nuid::next().to_string();
    let run = run[run.len() - 8..].to_owned();
    let tasks = tokio_util::task::TaskTracker::new();
    for caller in 0..callers {
        let (rpc, shared, stop, run) = (conn.rpc(), shared.clone(), stop.clone(), run.clone());
        tasks.spawn(async move {
            // create_order is idempotent by client order id: an attempt that
            // timed out may be retried on the next leader.
            let opts = CallOptions::timeout(deadline).idempotent();
            for n in 0u64.. {
                if stop.is_cancelled() {
                    return;
                }
                let req = CreateOrder {
                    symbol: "AAPL".to_owned(),
                    side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
                    quantity: 1,
                    price: None,
                    client_order_id: format!("chaos-{run}-{caller}-{n}"),
                };
                let sent = Instant::now();
                let answer = rpc
                    .call_active::<_, Order>(
                        ORDER_SERVICE,
                        ORDER_GROUP,
                        "create_order",
                        &req,
                        &opts,
                    )
                    .await;
                let outcome = match answer {
                    Ok(reply) if reply.value.status.is_final() => Outcome::Acked {
                        order_id: reply.value.order_id,
                        status: reply.value.status,
                    },
                    Ok(reply) => Outcome::Failed(format!("answered {:?}", reply.value.status)),
                    Err(e) => Outcome::Failed(aegis_sdk::startup::Causes(&e).to_string()),
                };
                lock(&shared.records).calls.push(Call {
                    sent,
                    answered: Instant::now(),
                    outcome,
                });
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(interval) => {}
                }
            }
        });
    }
    tasks.close();
    tasks.wait().await;
}

/// Subscribes to every order event (a broadcast consumer of its own).
///
/// # Errors
/// When the subscription cannot start.
/// How soon the subscriber's consumer sends an unacknowledged event again.
/// An event sent to this process over a connection that died with its NATS
/// node is lost in transit and comes again only after this; the run waits
/// at least three of these for missing events at the end, so an event in
/// the stream is never counted lost for being late.
pub(crate) const EVENT_ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub(crate) async fn subscribe_events(
    conn: &Connection,
    shared: &Shared,
) -> anyhow::Result<EventSubscription> {
    let records = shared.records.clone();
    let sub = conn
        .events()
        .subscribe::<serde_json::Value>("chaos-bench", "order.*", DeliveryMode::Broadcast)
        .instance_id(format!("bench-{}", nuid::next()))
        .ack_wait(EVENT_ACK_WAIT)
        .handler(move |event: Event<serde_json::Value>| {
            let records = records.clone();
            async move {
                if let Some(id) = event.payload.get("order_id").and_then(|v| v.as_str()) {
                    lock(&records)
                        .events
                        .entry((id.to_owned(), event.subject.action.clone()))
                        .or_default()
                        .insert(event.sequence);
                }
                Ok(())
            }
        })
        .start()
        .await?;
    Ok(sub)
}

/// Follows the `orders` bucket until `stop`, recording order writes; a
/// watch broken by a node loss is opened again after the last revision
/// ([`aegis_sdk::kv::follow`]), at once rather than after async-nats's
/// heartbeat timeouts, so a write's `seen` falls in the right window.
pub(crate) async fn watch_orders(conn: Connection, shared: Shared, stop: CancellationToken) {
    let Some(kv) = bucket(&conn, aegis_trading::order::ORDERS_BUCKET, &stop).await else {
        return;
    };
    let apply = move |entry: kv::Entry| {
        if let Ok(order) = serde_json::from_slice::<Order>(&entry.value) {
            lock(&shared.records).writes.push(OrderWrite {
                instance_id: order.instance_id,
                epoch: order.epoch,
                written: SystemTime::from(entry.created),
                seen: Instant::now(),
            });
        }
    };
    aegis_sdk::kv::follow(conn, kv, ">", Resume::AfterLast, stop, apply).await;
}

/// Follows the order service's election key until `stop`.
pub(crate) async fn watch_election(conn: Connection, shared: Shared, stop: CancellationToken) {
    let Some(kv) = bucket(&conn, subjects::ELECTIONS_BUCKET, &stop).await else {
        return;
    };
    let key = subjects::election_key(ORDER_SERVICE, ORDER_GROUP);
    let apply = move |entry: kv::Entry| {
        let holder = match entry.operation {
            kv::Operation::Put => serde_json::from_slice::<LeaderRecord>(&entry.value)
                .ok()
                .map(|r| Holder {
                    epoch: r.epoch_at(entry.revision),
                    instance_id: r.instance_id,
                }),
            _ => None,
        };
        let mut current = lock(&shared.holder);
        if *current != holder {
            current.clone_from(&holder);
            lock(&shared.records).takeovers.push(Takeover {
                holder,
                written: SystemTime::from(entry.created),
            });
        }
    };
    aegis_sdk::kv::follow(conn, kv, key, Resume::Replay, stop, apply).await;
}

/// The KV bucket `name`, tried every 200 ms until it opens; `None` once
/// `stop` is cancelled.
async fn bucket(conn: &Connection, name: &str, stop: &CancellationToken) -> Option<kv::Store> {
    loop {
        if let Ok(kv) = conn.jetstream().get_key_value(name).await {
            return Some(kv);
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}
