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
//! - Each write is a compare-and-set and carries the leader's fencing epoch;
//!   a leader never overwrites an order written under a newer epoch, so a
//!   deposed leader that wakes up late cannot undo its successor's work.
//! - Events are published with dedup ids derived from the order id, so
//!   finishing an order twice stores each event once.
//!
//! The create flow: validate → claim the client order id → if the order is
//! already decided, answer it → quote from pricing-service → record the
//! order (pending) → `events.order.created` → risk-service `assess_risk` →
//! decide (filled or rejected) and record it → `events.order.filled` or
//! `events.order.rejected` → answer. A failure at any step leaves the order
//! pending and the caller's retry resumes it.

pub mod model;
pub mod store;

use std::{sync::Arc, time::Duration};

use aegis_contracts::trading::{
    ORDER_GROUP, ORDER_SERVICE, OrderCreated, OrderFilled, OrderRejected, PRICING_SERVICE,
    RISK_SERVICE, TradingEvent, validate_symbol,
};
use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RequestContext, RpcError, Service, WireError},
};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::warn;

pub use model::{
    CreateOrder, GetOrder, ListOrders, MAX_LIST_LIMIT, Order, OrderList, OrderStatus, decide,
};
pub use store::ORDERS_BUCKET;

use crate::{
    TradingError,
    common::{self, Counters},
    pricing::{GetPrice, Quote},
    risk::{AssessRisk, OrderToAssess, RiskAssessment},
};
use store::{OrderStore, StoreError};

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

/// How to run an order instance.
#[derive(Debug, Clone)]
pub struct OrderOptions {
    /// The instance id; host name plus a random suffix when `None`.
    pub instance_id: Option<String>,
    /// The single-active group (default `default`).
    pub group: String,
    /// The pricing service to quote from (default `pricing-service`).
    pub pricing_service: String,
    /// The risk service to ask (default `risk-service`).
    pub risk_service: String,
    /// Deadline of each pricing or risk call, retries included (default 2 s).
    pub call_timeout: Duration,
}

impl Default for OrderOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            group: ORDER_GROUP.to_owned(),
            pricing_service: PRICING_SERVICE.to_owned(),
            risk_service: RISK_SERVICE.to_owned(),
            call_timeout: Duration::from_secs(2),
        }
    }
}

/// The instance's state: where orders live and whom to ask.
#[derive(Debug)]
struct Desk {
    conn: Connection,
    store: Arc<OrderStore>,
    pricing: String,
    risk: String,
    call_timeout: Duration,
    counters: Counters,
}

/// The fencing epoch of the leadership this request is served under.
fn leader_epoch(_ctx: &RequestContext) -> u64 {
    // Until the SDK attaches the leader's epoch to requests every write
    // carries 0, and compare-and-set alone keeps writers apart.
    0
}

impl Desk {
    async fn create_order(
        &self,
        ctx: RequestContext,
        req: CreateOrder,
    ) -> Result<Order, WireError> {
        req.validate().map_err(common::invalid)?;
        let epoch = leader_epoch(&ctx);
        let candidate = format!("ord-{}", nuid::next());
        let order_id = self.store.claim(&req.client_order_id, &candidate).await?;

        let found = self.store.load(&order_id).await?;
        if let Some((_, order)) = &found {
            if !order.matches(&req) {
                return Err(WireError::new(
                    ErrorCode::Conflict,
                    format!(
                        "client_order_id {} was used for a different order ({})",
                        req.client_order_id, order.order_id
                    ),
                ));
            }
            if order.status.is_final() {
                return self.replay(order.clone()).await;
            }
        }
        // Quote before recording, so an unknown symbol leaves no order behind.
        let quote = self.quote(&ctx, &req.symbol).await?;
        let (revision, order) = match found {
            Some(found) => found,
            None => {
                let order = Order::new(order_id, &req, epoch, &ctx.instance_id);
                match self.store.insert(&order).await {
                    Ok(revision) => {
                        self.counters.add(METRIC_CREATED, 1.0);
                        (revision, order)
                    }
                    // A duplicate request on this leader got there first.
                    Err(StoreError::Exists) => self.reload(&order.order_id, epoch).await?,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if order.status.is_final() {
            return self.replay(order).await;
        }
        self.finish(&ctx, epoch, revision, order, &quote).await
    }

    /// Takes a pending order to its decision, fenced by `epoch`.
    async fn finish(
        &self,
        ctx: &RequestContext,
        epoch: u64,
        mut revision: u64,
        mut order: Order,
        quote: &Quote,
    ) -> Result<Order, WireError> {
        if order.epoch > epoch {
            return Err(deposed());
        }
        if order.epoch < epoch {
            // An older leader recorded it and never decided it: claim it for
            // this epoch first, so that leader's late write fails.
            order.epoch = epoch;
            order.instance_id = ctx.instance_id.to_string();
            revision = match self.store.replace(&order, revision).await {
                Ok(revision) => revision,
                Err(StoreError::Changed) => return self.after_race(&order.order_id, epoch).await,
                Err(e) => return Err(e.into()),
            };
            self.counters.add(METRIC_TAKEN_OVER, 1.0);
        }
        self.publish(
            OrderCreated::event_id(&order.order_id),
            &order.created_event(),
        )
        .await?;

        let assessment = self.assess(ctx, &order, quote).await?;
        decide(&mut order, quote, &assessment);
        order.instance_id = ctx.instance_id.to_string();
        match self.store.replace(&order, revision).await {
            Ok(_) => {}
            Err(StoreError::Changed) => return self.after_race(&order.order_id, epoch).await,
            Err(e) => return Err(e.into()),
        }
        self.announce(&order).await?;
        let decided = if order.status == OrderStatus::Filled {
            METRIC_FILLED
        } else {
            METRIC_REJECTED
        };
        self.counters.add(decided, 1.0);
        Ok(order)
    }

    /// Answers a retry of a decided order. Its outcome event is published
    /// again: the first attempt may have stopped between recording the
    /// decision and publishing it, and the dedup id stores it once.
    async fn replay(&self, order: Order) -> Result<Order, WireError> {
        self.announce(&order).await?;
        self.counters.add(METRIC_REPLAYED, 1.0);
        Ok(order)
    }

    /// Someone else wrote the order since we read it: a duplicate request
    /// decided it (answer that), or a newer leader took it over (step aside).
    async fn after_race(&self, order_id: &str, epoch: u64) -> Result<Order, WireError> {
        let (_, order) = self.reload(order_id, epoch).await?;
        if order.status.is_final() {
            return self.replay(order).await;
        }
        Err(StoreError::Changed.into())
    }

    async fn reload(&self, order_id: &str, epoch: u64) -> Result<(u64, Order), WireError> {
        let (revision, order) = self
            .store
            .load(order_id)
            .await?
            .ok_or_else(|| WireError::internal(format!("order {order_id} vanished")))?;
        if order.epoch > epoch && !order.status.is_final() {
            return Err(deposed());
        }
        Ok((revision, order))
    }

    async fn announce(&self, order: &Order) -> Result<(), WireError> {
        if let Some(filled) = order.filled_event() {
            self.publish(OrderFilled::event_id(&order.order_id), &filled)
                .await?;
        }
        if let Some(rejected) = order.rejected_event() {
            self.publish(OrderRejected::event_id(&order.order_id), &rejected)
                .await?;
        }
        Ok(())
    }

    async fn publish<E: TradingEvent>(&self, id: String, event: &E) -> Result<(), WireError> {
        self.conn
            .events()
            .publish_with_id(E::DOMAIN, E::ACTION, &id, event)
            .await
            .map(drop)
            .map_err(|e| {
                warn!(error = %e, id, "cannot publish an order event");
                WireError::service_unavailable("the order event could not be published; retry")
            })
    }

    /// Options for calls to pricing and risk: both are safe to repeat (a
    /// quote is a read; an assessment is named after the order), so an
    /// attempt that times out is retried on another instance.
    fn call_options(&self, ctx: &RequestContext) -> CallOptions {
        CallOptions {
            timeout: Some(self.call_timeout),
            idempotent: true,
            request_id: ctx.request_id.clone(),
            ..Default::default()
        }
    }

    async fn quote(&self, ctx: &RequestContext, symbol: &str) -> Result<Quote, WireError> {
        let req = GetPrice {
            symbol: symbol.to_owned(),
        };
        match self
            .call(&self.pricing, "get_price", &req, &self.call_options(ctx))
            .await
        {
            Ok(quote) => Ok(quote),
            Err(e) if e.code() == ErrorCode::NotFound => Err(common::invalid(
                aegis_contracts::models::ValidationErrors(vec![aegis_contracts::FieldError {
                    field: "symbol".to_owned(),
                    message: format!("{symbol} is not a traded symbol"),
                }]),
            )),
            Err(e) => Err(dependency_failed(&self.pricing, &e)),
        }
    }

    async fn assess(
        &self,
        ctx: &RequestContext,
        order: &Order,
        quote: &Quote,
    ) -> Result<RiskAssessment, WireError> {
        let req = AssessRisk {
            order: OrderToAssess {
                order_id: Some(order.order_id.clone()),
                symbol: order.symbol.clone(),
                side: order.side,
                quantity: order.quantity,
                price: order.limit_price.unwrap_or(quote.price),
            },
        };
        self.call(&self.risk, "assess_risk", &req, &self.call_options(ctx))
            .await
            .map_err(|e| dependency_failed(&self.risk, &e))
    }

    async fn call<Req: Serialize, Res: serde::de::DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Res, RpcError> {
        // Through discovery: an ACTIVE instance is picked and one that died
        // is skipped within the deadline.
        let reply = self
            .conn
            .rpc()
            .call_with(service, method, req, opts)
            .await?;
        Ok(reply.value)
    }

    async fn get_order(&self, req: GetOrder) -> Result<Order, WireError> {
        // Order ids are KV key tokens; anything else cannot name an order.
        if aegis_contracts::trading::validate_client_order_id(&req.order_id).is_err() {
            return Err(WireError::invalid_request(
                "order_id is not a valid order id",
            ));
        }
        match self.store.load(&req.order_id).await? {
            Some((_, order)) => Ok(order),
            None => Err(WireError::not_found(format!("no order {}", req.order_id))),
        }
    }

    fn list_orders(&self, req: Option<ListOrders>) -> Result<OrderList, WireError> {
        let req = req.unwrap_or_default();
        let limit = req.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(WireError::invalid_request(format!(
                "limit must be 1 to {MAX_LIST_LIMIT}"
            )));
        }
        if let Some(symbol) = &req.symbol {
            validate_symbol(symbol).map_err(|e| WireError::invalid_request(e.message))?;
        }
        Ok(self.store.list(&req, limit))
    }
}

fn deposed() -> WireError {
    WireError::not_active("a newer leader owns this order; retry on the active instance")
}

fn dependency_failed(service: &str, e: &RpcError) -> WireError {
    warn!(service, error = %e, "a dependency call failed");
    match e.code() {
        ErrorCode::Timeout => WireError::new(
            ErrorCode::Timeout,
            format!("{service} did not answer in time; retry"),
        ),
        _ => WireError::service_unavailable(format!("{service} is unavailable; retry")),
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
pub async fn start(conn: &Connection, opts: OrderOptions) -> Result<RunningOrder, TradingError> {
    validate(&opts)?;
    let store = OrderStore::open(conn).await?;
    conn.events().ensure_stream().await?;
    let cancel = CancellationToken::new();
    let follower = store.follow(cancel.clone());
    let desk = Arc::new(Desk {
        conn: conn.clone(),
        store,
        pricing: opts.pricing_service,
        risk: opts.risk_service,
        call_timeout: opts.call_timeout,
        counters: Counters::new(&[
            METRIC_CREATED,
            METRIC_FILLED,
            METRIC_REJECTED,
            METRIC_REPLAYED,
            METRIC_TAKEN_OVER,
        ]),
    });

    let mut builder = conn
        .service(ORDER_SERVICE, crate::VERSION)
        .description(
            "Creates orders (idempotent by client_order_id); one active instance per group",
        )
        .metadata("group", &opts.group)
        .handler("echo", common::echo)
        .handler_with_context("health", common::health(std::time::Instant::now()))
        .handler_with_context("simulate_work", common::simulate_work)
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
        .handler("list_orders", {
            let desk = desk.clone();
            move |req: Option<ListOrders>| futures::future::ready(desk.list_orders(req))
        });
    if let Some(id) = opts.instance_id {
        builder = builder.instance_id(id);
    }
    let service = builder.start().await?;
    desk.counters.attach(service.metrics().clone());
    Ok(RunningOrder {
        service,
        follower,
        stop: cancel.drop_guard(),
    })
}

fn validate(opts: &OrderOptions) -> Result<(), TradingError> {
    let invalid = |m: String| Err(TradingError::InvalidOptions(m));
    if let Err(e) = aegis_contracts::validate_group_name(&opts.group) {
        return invalid(e.to_string());
    }
    for service in [&opts.pricing_service, &opts.risk_service] {
        if let Err(e) = aegis_contracts::validate_service_name(service) {
            return invalid(e.to_string());
        }
    }
    if opts.call_timeout.is_zero() {
        return invalid("call_timeout must be positive".into());
    }
    Ok(())
}

/// A running order instance. [`shutdown`](Self::shutdown) stops it
/// gracefully; dropping it stops serving at once.
#[derive(Debug)]
pub struct RunningOrder {
    service: Service,
    follower: JoinHandle<()>,
    stop: DropGuard,
}

impl RunningOrder {
    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        self.service.instance_id()
    }

    /// The RPC service (metrics, registration, status).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Stops the service gracefully (deregister, finish orders in flight),
    /// then stops following the bucket.
    ///
    /// # Errors
    /// [`TradingError::Service`] when the service did not stop cleanly.
    pub async fn shutdown(self) -> Result<(), TradingError> {
        let Self {
            service,
            follower,
            stop,
        } = self;
        let stopped = service.shutdown().await;
        drop(stop);
        let _ = follower.await;
        stopped?;
        Ok(())
    }
}
