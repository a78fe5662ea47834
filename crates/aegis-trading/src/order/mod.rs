//! order-service: `create_order`, `get_order`, `list_orders`.
//!
//! Sticky single-active: of all instances in group `default`, one leads and
//! serves; the others stand by and answer `NOT_ACTIVE`, so callers reach the
//! leader. What makes a failover lose nothing and duplicate nothing:
//! - Orders live in the KV bucket `orders` ([`store`]), not in memory, so
//!   the next leader sees every order the last one wrote.
//! - `create_order` is idempotent by `client_order_id`: the first attempt
//!   atomically claims the id, every retry — on the same leader or the next
//!   one — finds the claim and continues or returns that order.
//! - Each write is a compare-and-set and carries the leader's term — its
//!   fencing epoch and the elections bucket it won it in (`term.rs`); a
//!   leader never overwrites an order written under a newer term, so a
//!   deposed leader that wakes up late cannot undo its successor's work,
//!   and the first leader of a `service_elections` bucket created again
//!   (its epochs started over) takes over what the old bucket's left.
//! - Writes are fenced at the store: each new leader takes the bucket's
//!   fence key, and every order write is conditioned on it and on a lease
//!   check just before, so a leader that stalled past its lease (mid-request,
//!   admitted under a valid lease) writes nothing once its successor took
//!   over — not a new order, not a decision (`fence.rs`).
//! - Events are published with dedup ids derived from the order id, so a
//!   repeat within the stream's dedup window (two minutes) is stored once;
//!   and an order records that its `events.order.created` was announced
//!   (in the write that decides it, or in one write when the attempt fails
//!   after the publish), as a decided order records its outcome, so a
//!   retry, the expiry or a sweep later than that does not publish them
//!   again. Only a crash (or a failing store) between publishing and
//!   recording can repeat one, once, and risk-service recognises a
//!   repeated fill within its own window.
//! - A leader announces the decided orders whose outcome its predecessors
//!   (or its own requests that gave up) did not, even if nobody retries.
//!   A pending order — its request failed after recording it, and the
//!   error said so, naming it — is the caller's to settle by a retry with
//!   the same client order id; one not retried within `expire_after`
//!   (30 s) is rejected as `EXPIRED`, never filled later at another market.
//!
//! What keeps the position limit: risk-service counts an order once its
//! fill comes back from `EVENTS`, so orders of one symbol take turns on the
//! leader from the assessment until their fill is published, and risk is
//! told the sequence of the newest fill the leader knows of (read from the
//! stream once per epoch, so a new leader knows its predecessors', and
//! again when the stream was created anew and its sequences started over),
//! and judges only once its book holds it (`flow.rs`, `Desk::judge`).
//!
//! The create flow: validate → claim the client order id → if the order is
//! already decided, answer it → quote from pricing-service → record the
//! order (pending) → `events.order.created`, unless the order records it
//! → risk-service `assess_risk` → decide (filled or rejected) and record
//! it, with its creation as announced → `events.order.filled` or
//! `events.order.rejected` → record it as announced → answer. A failure at any step leaves the order
//! pending, and the error names it; the caller's retry resumes it, or the
//! leader's sweep expires it.
//!
//! This file wires the service; `flow.rs` holds those steps, [`model`] the
//! records, requests and the [`decide`] rule, [`store`] the KV bucket,
//! `room.rs` the health check that says UNHEALTHY while the bucket is full.

mod fence;
mod flow;
mod index;
pub mod model;
mod room;
pub mod store;
mod term;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, PRICING_SERVICE, RISK_SERVICE};
use aegis_sdk::{
    Connection,
    election::{LeaseConfig, Role, campaign::Leadership},
    rpc::RequestContext,
};
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};
use tracing::{info, warn};

pub use model::{
    CreateOrder, GetOrder, ListOrders, MAX_LIST_LIMIT, Order, OrderList, OrderStatus, decide,
    trade_price,
};
pub use store::{FENCE_KEY, ORDERS_BUCKET};

use crate::{
    Running, TradingError,
    common::{self, Counters, Identity},
    running::StopOrder,
};
use flow::{Caller, Desk};
use store::OrderStore;

/// The field of a `get_order` NOT_FOUND's details that says how long
/// settled orders are kept, in seconds ([`OrderOptions::keep_settled`]):
/// an order answered longer ago than that may have expired rather than be
/// lost.
pub const KEPT_FOR_SECS: &str = "kept_for_secs";

/// Counter: orders recorded.
pub const METRIC_CREATED: &str = "orders_created";
/// Counter: orders filled.
pub const METRIC_FILLED: &str = "orders_filled";
/// Counter: orders rejected.
pub const METRIC_REJECTED: &str = "orders_rejected";
/// Counter: retries answered with an order already decided.
pub const METRIC_REPLAYED: &str = "orders_replayed";
/// Counter: pending orders this instance took over from an older leader.
pub const METRIC_TAKEN_OVER: &str = "orders_taken_over";
/// Counter: pending orders rejected as expired (also counted as rejected).
pub const METRIC_EXPIRED: &str = "orders_expired";

/// How to run an order instance.
#[derive(Debug, Clone)]
pub struct OrderOptions {
    /// The instance id; host name plus a random suffix when `None`.
    pub instance_id: Option<String>,
    /// The single-active group: `default`, the only one accepted, since
    /// the order book (the bucket [`ORDERS_BUCKET`] and its fence) is one
    /// per NATS account and one group's leader writes it.
    pub group: String,
    /// The pricing service to quote from (default `pricing-service`).
    pub pricing_service: String,
    /// The risk service to ask (default `risk-service`).
    pub risk_service: String,
    /// Deadline of each pricing or risk call, retries included (default 2 s).
    pub call_timeout: Duration,
    /// Lease timing of the leader election (default: the SDK's 400 ms
    /// lease, riding out an unreachable elections stream for up to
    /// [`RIDE_OUT`]); a shorter lease fails over faster and renews more
    /// often.
    pub lease: LeaseConfig,
    /// How long an order of the current leader may stay decided but not
    /// announced before the leader announces it itself, its request having
    /// given up (default 10 s, at least twice `call_timeout` so a request
    /// still at work is not raced; the leader sweeps every half of it).
    /// Orders an older leader left so are announced as soon as leadership
    /// changes.
    pub stale_after: Duration,
    /// How long a recorded order may stay pending — its `create_order`
    /// failed after recording it — before the sweep rejects it with reason
    /// `EXPIRED` (default 30 s, at least twice `call_timeout` so a request
    /// still at work is not raced). Until then only a
    /// retry with the same `client_order_id` decides it, at the market of
    /// that moment; a retry after it answers the expired order. A pending
    /// order is never filled behind its caller's back.
    pub expire_after: Duration,
    /// How many of the newest orders the instance keeps in memory for
    /// `list_orders` (default 10 000, a few MB); older ones stay in the
    /// bucket, readable with `get_order`, for `keep_settled`. Unsettled
    /// orders are kept whatever their age, for the recovery sweep.
    pub index_capacity: usize,
    /// How long a settled order (decided, its outcome announced) stays in
    /// the bucket, readable and listed, before the server removes it
    /// (default [`KEEP_SETTLED`], whole seconds, at least 1 s). A client
    /// order id is idempotent for that long plus `expire_after`: a retry
    /// later than that is a new order. The bucket is bounded, so without
    /// an expiry it would fill and refuse every order; at a steady rate it
    /// holds about `keep_settled` times the rate times 0.82 KiB.
    pub keep_settled: Duration,
}

/// How long order-service keeps a settled order by default: 6 hours, some
/// 175 MiB of the `orders` bucket's 256 MiB at `aegis traffic`'s default
/// 10 orders a second.
pub const KEEP_SETTLED: Duration = Duration::from_secs(6 * 3600);

/// How long the order leader keeps serving while the elections stream has
/// no leader (a NATS node died; JetStream elects a new one after 4–9 s, and
/// `aegis bench chaos` measured 9.5–11.8 s until leases could be written
/// again) and its own connection is up. Safe here because every order write
/// is fenced by the store (see `fence.rs`): were another instance to lead
/// meanwhile, this one's writes would be refused.
pub const RIDE_OUT: Duration = Duration::from_secs(20);

impl Default for OrderOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            group: ORDER_GROUP.to_owned(),
            pricing_service: PRICING_SERVICE.to_owned(),
            risk_service: RISK_SERVICE.to_owned(),
            call_timeout: Duration::from_secs(2),
            lease: LeaseConfig::default().with_ride_out(RIDE_OUT),
            stale_after: Duration::from_secs(10),
            expire_after: Duration::from_secs(30),
            index_capacity: 10_000,
            keep_settled: KEEP_SETTLED,
        }
    }
}

/// Starts an order-service instance on `conn`: opens the `orders` bucket,
/// follows it for listings, and serves `echo`, `health`, `simulate_work`,
/// `create_order`, `get_order` and `list_orders`.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_trading::TradingError> {
/// use aegis_trading::order::{self, OrderOptions};
///
/// let orders = order::start(&conn, OrderOptions {
///     instance_id: Some("order-1".into()),
///     ..Default::default()
/// }).await?;
/// orders.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`TradingError::InvalidOptions`] before any I/O (bad names, zero
/// timeout); [`TradingError::Store`] when the bucket cannot be used;
/// [`TradingError::Events`] when the `EVENTS` stream cannot be created;
/// [`TradingError::Service`] when the service cannot start.
pub async fn start(conn: &Connection, opts: OrderOptions) -> Result<Running, TradingError> {
    validate(&opts)?;
    let instance_id = opts
        .instance_id
        .unwrap_or_else(aegis_sdk::default_instance_id);
    let id = Identity::new(ORDER_SERVICE, &instance_id);
    let keep = store::Keep {
        settled: opts.keep_settled,
        pending: opts.expire_after,
    };
    let store = OrderStore::open(conn, &instance_id, opts.index_capacity, keep).await?;
    let events = conn.events().ensure_stream().await?;
    let cancel = CancellationToken::new();
    // A start that fails from here on (the SDK refusing the service, say)
    // stops the tasks it started.
    let stop_on_failure = cancel.clone().drop_guard();
    let follower = store.follow(cancel.clone()).await?;
    let desk = Arc::new(Desk {
        conn: conn.clone(),
        store,
        events,
        pricing: opts.pricing_service,
        risk: opts.risk_service,
        call_timeout: opts.call_timeout,
        expire_after: opts.expire_after,
        stale_after: opts.stale_after,
        counters: Counters::new(&[
            METRIC_CREATED,
            METRIC_FILLED,
            METRIC_REJECTED,
            METRIC_REPLAYED,
            METRIC_TAKEN_OVER,
            METRIC_EXPIRED,
        ]),
        symbols: Default::default(),
        newest_fill: Default::default(),
    });

    let service = conn
        .service(ORDER_SERVICE, crate::VERSION)
        .description(
            "Creates orders (idempotent by client_order_id); one active instance per group",
        )
        .instance_id(&instance_id)
        // What an operator tunes (`aegis service order --help`), shown with
        // the instance's record.
        .metadata(
            "keep_settled",
            humantime::format_duration(opts.keep_settled).to_string(),
        )
        .metadata(
            "expire_after",
            humantime::format_duration(opts.expire_after).to_string(),
        )
        // A full store says so in the record, on every instance alike (a
        // fact about the shared bucket: the leader keeps leading, degraded,
        // rather than handing over to a standby that finds it full too).
        .health_check_with_reason({
            let room = room::Room::new(desk.store.stream(), opts.keep_settled);
            move || {
                let room = room.clone();
                async move { room.check().await }
            }
        })
        // One leader serves; the others stand by, answer NOT_ACTIVE, and
        // take over when its lease lapses.
        .single_active(&opts.group)
        .lease(opts.lease)
        // Standbys answer these too: they say nothing about orders.
        .handler_any_role("echo", common::echo)
        .handler_any_role("health", common::health(id.clone()))
        .handler_any_role("simulate_work", common::simulate_work(id))
        // Leader-only: the SDK runs them only under a valid lease and hands
        // them its fencing epoch in the request context.
        .handler_with_context("create_order", {
            let desk = desk.clone();
            move |ctx: RequestContext, req: CreateOrder| {
                let desk = desk.clone();
                async move { desk.create_order(ctx, req).await }
            }
        })
        .handler("get_order", {
            let desk = desk.clone();
            move |req: GetOrder| {
                let desk = desk.clone();
                async move { desk.get_order(req).await }
            }
        })
        .handler_with_context("list_orders", {
            let desk = desk.clone();
            move |ctx: RequestContext, req: Option<ListOrders>| {
                let desk = desk.clone();
                async move { desk.list_orders(ctx, req).await }
            }
        })
        .start()
        .await?;
    drop(stop_on_failure.disarm());
    info!(
        keep_settled = %humantime::format_duration(opts.keep_settled),
        expire_after = %humantime::format_duration(opts.expire_after),
        "keeping settled orders for keep_settled; a pending order waits expire_after for its retry"
    );
    desk.counters.attach(service.metrics().clone());
    if let Some(election) = service.election() {
        // A write must start with at least the lease's safety margin left:
        // the margin that covers message delay for serving covers the
        // write's way to the store too.
        desk.store.fence.follow(election, opts.lease.safety_margin);
    }
    let recovery = service.election().map(|election| {
        tokio::spawn(recover_while_leading(
            desk,
            election.roles(),
            election.leadership(),
            Arc::from(instance_id.as_str()),
            opts.stale_after,
            cancel.clone(),
        ))
    });
    // Stopping, the service goes first — it resigns, so a standby takes
    // over while this one finishes the requests it already took — and the
    // bucket follower keeps the index those requests read until then.
    Ok(Running::new(
        service,
        std::iter::once(follower).chain(recovery).collect(),
        cancel,
        StopOrder::ServiceFirst,
    ))
}

/// While this instance leads, sees to the orders left unsettled (announces
/// decided ones, expires pending ones past `expire_after`): at once when
/// it becomes leader (once the index holds every order stored before it
/// took the fence), then every `stale_after / 2`. A request for one of
/// them may race the sweep; compare-and-set lets exactly one of the two
/// decide it. The wait for the index ends when the role changes, and is
/// begun again after `stale_after / 2` (saying so), so no sweep waits on it
/// for ever.
async fn recover_while_leading(
    desk: Arc<Desk>,
    mut roles: watch::Receiver<Role>,
    leadership: Leadership,
    instance_id: Arc<str>,
    stale_after: Duration,
    cancel: CancellationToken,
) {
    // The expiry of what an older version left
    // (`OrderStore::expire_written_before`): begun by a leadership, again
    // by the next if it did not finish; aborted with the sweep.
    let expiry_done = Arc::new(AtomicBool::new(false));
    let mut expiry_given: Option<(tokio::time::Instant, AbortOnDropHandle<()>)> = None;
    loop {
        let role = roles.borrow_and_update().clone();
        let next = if let Role::Leader { epoch } = role {
            let still_leading = || leadership.serving_epoch() == Some(epoch);
            // Before the fence: in a bucket full of what an older version
            // kept, the fence cannot be written until this made room.
            if !expiry_done.load(Ordering::Acquire)
                && expiry_given.as_ref().is_none_or(|(begun, task)| {
                    task.is_finished() && begun.elapsed() >= EXPIRY_RETRY
                })
            {
                let task = expire_written_before(
                    desk.clone(),
                    leadership.clone(),
                    epoch,
                    expiry_done.clone(),
                );
                let task = AbortOnDropHandle::new(tokio::spawn(task));
                expiry_given = Some((tokio::time::Instant::now(), task));
            }
            let ready = async {
                // Fence the old leader out before reading what it left:
                // learning its term, this leader takes the fence.
                let term = match desk.store.term(epoch).await {
                    Ok(term) => term,
                    Err(e) => {
                        warn!(epoch, error = ?e, "cannot take the order store's fence yet");
                        return None;
                    }
                };
                desk.store.loaded().await;
                // Loaded is not enough: the index must hold what the old
                // leader wrote before the fence moved, which its watch may
                // not have handed over yet (lagging, or opened again after
                // its consumer was lost with a node).
                if let Err(e) = desk.store.caught_up(epoch).await {
                    warn!(epoch, error = ?e, "cannot sweep the order store yet");
                    return None;
                }
                Some(Caller {
                    instance_id: instance_id.clone(),
                    request_id: None,
                    term,
                })
            };
            // The index waits on its watch, which may not catch up for a
            // long time (the bucket cannot be read, or is gone): the wait
            // ends when the role changes — a sweep waiting for an old
            // epoch would otherwise hold up the sweeps of the next — and is
            // given up, and begun again, after `stale_after / 2`.
            let wait = stale_after / 2;
            let ready = tokio::select! {
                () = cancel.cancelled() => return,
                changed = roles.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    continue;
                }
                ready = tokio::time::timeout(wait, ready) => ready,
            };
            match ready {
                Ok(Some(caller)) => {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = desk.resume_pending(&caller, stale_after, still_leading) => {}
                    }
                }
                Ok(None) => {}
                Err(_) => {
                    warn!(
                        epoch,
                        waited = ?wait,
                        "the order index has not caught up with the order store's fence; waiting again"
                    );
                    continue;
                }
            }
            stale_after / 2
        } else {
            Duration::MAX
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            changed = roles.changed() => if changed.is_err() { return },
            () = sleep_or_forever(next) => {}
        }
    }
}

/// How long after an attempt that did not go through the whole bucket
/// [`expire_written_before`] is tried again.
const EXPIRY_RETRY: Duration = Duration::from_secs(60);

/// Gives an expiry to what a version that kept every order left in the
/// bucket (`OrderStore::expire_written_before`) while this instance leads
/// at `epoch`; sets `done` once it went through the whole bucket, and says
/// what it did.
async fn expire_written_before(
    desk: Arc<Desk>,
    leadership: Leadership,
    epoch: u64,
    done: Arc<AtomicBool>,
) {
    let leading = || leadership.serving_epoch() == Some(epoch);
    match desk.store.expire_written_before(leading).await {
        Ok(n) => {
            if leading() {
                done.store(true, Ordering::Release);
            }
            if n > 0 {
                info!(
                    bucket = ORDERS_BUCKET,
                    written = n,
                    "gave an expiry to the settled orders and claims written before the bucket \
                     expired them"
                );
            }
        }
        Err(e) => warn!(
            bucket = ORDERS_BUCKET,
            error = %aegis_sdk::startup::Causes(&*e),
            "could not give an expiry to all the orders written before the bucket expired them; \
             tried again in a minute"
        ),
    }
}

async fn sleep_or_forever(d: Duration) {
    match tokio::time::Instant::now().checked_add(d) {
        Some(until) => tokio::time::sleep_until(until).await,
        None => std::future::pending().await,
    }
}

fn validate(opts: &OrderOptions) -> Result<(), TradingError> {
    let invalid = |m: String| Err(TradingError::InvalidOptions(m));
    if let Err(e) = aegis_contracts::validate_group_name(&opts.group) {
        return invalid(e.to_string());
    }
    // One book: every leader writes the one bucket under its one fence and
    // sweeps every pending order in it, so the leaders of two groups would
    // depose each other's writes by turns and finish each other's orders.
    if opts.group != ORDER_GROUP {
        return invalid(format!(
            "group must be `{ORDER_GROUP}`, not `{}`: order-service keeps one order book \
             (the bucket `{ORDERS_BUCKET}` and its fence) that one group's leader writes; \
             a second desk needs a NATS account of its own",
            opts.group
        ));
    }
    for service in [&opts.pricing_service, &opts.risk_service] {
        if let Err(e) = aegis_contracts::validate_service_name(service) {
            return invalid(e.to_string());
        }
    }
    if opts.call_timeout.is_zero() {
        return invalid("call_timeout must be positive".into());
    }
    if opts.stale_after < opts.call_timeout * 2 {
        return invalid("stale_after must be at least twice call_timeout".into());
    }
    if opts.expire_after < opts.call_timeout * 2 {
        return invalid("expire_after must be at least twice call_timeout".into());
    }
    if opts.keep_settled < Duration::from_secs(1) {
        return invalid(format!(
            "keep_settled must be at least 1 s (the server's smallest expiry), not {:?}",
            opts.keep_settled
        ));
    }
    if let Err(e) = opts.lease.validate() {
        return invalid(e.to_string());
    }
    if opts.index_capacity == 0 {
        return invalid("index_capacity must be positive".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The trading review: two groups share the one bucket and its fence,
    /// so the leader of each deposes the other's writes by turns, and each
    /// sweeps the other's orders. Only the one group runs.
    #[test]
    fn only_the_one_group_keeps_the_book() {
        assert!(validate(&OrderOptions::default()).is_ok());
        let opts = OrderOptions {
            group: "eu".into(),
            ..Default::default()
        };
        match validate(&opts) {
            Err(TradingError::InvalidOptions(m)) => {
                assert!(m.contains("default") && m.contains(ORDERS_BUCKET), "{m}")
            }
            other => panic!("a second group accepted: {other:?}"),
        }
    }
}
