//! The three example trading services, built on the Aegis SDK. They are
//! small on purpose: read them as the SDK's worked examples.
//!
//! - [`pricing`]: pricing-service, load-balanced and stateless — quotes
//!   (`get_price`, `get_prices`) and a periodic `events.price.updated`
//!   whose dedup id makes N instances publish each quote once.
//! - [`risk`]: risk-service, load-balanced with shared state — judges
//!   orders (`assess_risk`) against limits kept in a watched KV bucket, and
//!   builds positions from `events.order.filled` consumed in broadcast mode.
//! - [`order`]: order-service, sticky single-active — `create_order` asks
//!   pricing and risk over RPC through discovery, keeps orders in the KV
//!   bucket `orders` (idempotent by `client_order_id`, fenced by the
//!   leader's epoch) and publishes `events.order.created`, then
//!   `events.order.filled` or `events.order.rejected`.
//! - `common.rs`: `echo`, `health` and `simulate_work`, which every service
//!   answers, and the counters behind each service's custom metrics.
//! - `kv.rs`: opening a bucket and following keys with one watch.
//! - [`Running`] (`running.rs`): the handle every `start` returns — the SDK
//!   service plus its background tasks, stopped with `shutdown().await`.
//! - [`TradingError`]: why a service could not start or stop.
//!
//! Every service has the same shape: `start(&conn, options)` returns a
//! [`Running`], stopped with `shutdown().await`; `aegis service
//! <order|pricing|risk>` is a thin wrapper around these calls. The event
//! payloads and service names are wire contracts, so they live in
//! [`aegis_contracts::trading`].
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use aegis_sdk::{AegisConfig, Connection};
//! use aegis_trading::{order, pricing, risk};
//!
//! let conn = Connection::connect(AegisConfig::with_servers("nats://127.0.0.1:4222")).await?;
//! let pricing = pricing::start(&conn, Default::default()).await?;
//! let risk = risk::start(&conn, Default::default()).await?;
//! let orders = order::start(&conn, Default::default()).await?;
//! // ... serve until asked to stop ...
//! orders.shutdown().await?;
//! risk.shutdown().await?;
//! pricing.shutdown().await?;
//! conn.drain().await?;
//! # Ok(()) }
//! ```

mod common;
mod error;
mod kv;
pub mod order;
pub mod pricing;
pub mod risk;
mod running;

pub use aegis_contracts::trading as contracts;
pub use common::{Health, MAX_SIMULATED_WORK, SimulateWork, WorkDone};
pub use error::TradingError;
pub use kv::{BUCKETS, Bound, ORDERS, RISK_LIMITS, RISK_POSITIONS, ShowcaseBucket, bound_buckets};
pub use running::Running;

/// Creates the buckets the example services keep their state in (orders,
/// risk limits, risk positions) where missing, with the connection's
/// replicas and their bounds ([`BUCKETS`]; [`bound_buckets`] bounds ones
/// made before), and returns their names. `aegis init --showcase` runs it; the services
/// open (or create) their own at start as well.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_trading::TradingError> {
/// for bucket in aegis_trading::ensure_buckets(&conn).await? {
///     println!("bucket {bucket} ready");
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`TradingError::Store`] naming the bucket JetStream refused.
pub async fn ensure_buckets(
    conn: &aegis_sdk::Connection,
) -> Result<Vec<&'static str>, TradingError> {
    let mut names = Vec::new();
    for bucket in kv::BUCKETS {
        kv::open_bucket(conn, bucket.bucket).await?;
        names.push(bucket.bucket);
    }
    Ok(names)
}

/// The version every example service registers with.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
