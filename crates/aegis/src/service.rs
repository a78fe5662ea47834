//! `aegis service <kind>`: runs one service instance in this process until
//! Ctrl-C / SIGTERM, then stops it gracefully (resign, deregister, finish
//! in-flight work, drain). `aegis up` and the Helm chart run these.
//!
//! The stop finishes within the service's shutdown timeout (10 s) whatever
//! the state of NATS: each step that needs the server is bounded, and what
//! could not be done is logged once with what happens instead (a record that
//! could not be removed expires with its TTL; a lease that could not be
//! handed over lapses). A second Ctrl-C / SIGTERM exits at once.

use aegis_sdk::rpc::server::ServiceError;
use aegis_trading::{TradingError, order, pricing, risk};
use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::cli::NatsArgs;

/// Which service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    /// order-service: sticky single-active order book (group `default`).
    Order,
    /// pricing-service: load-balanced quotes.
    Pricing,
    /// risk-service: load-balanced pre-trade risk checks.
    Risk,
    /// echo-service: echoes requests; the smallest Aegis service (demos, benchmarks).
    Echo,
}

/// Options of `aegis service`.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub kind: ServiceKind,
    /// Instance id, unique per process (in Kubernetes the pod name);
    /// default: host name plus a short random suffix.
    #[arg(long, env = "AEGIS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// For `echo`: run as a sticky single-active service in this group.
    #[arg(long)]
    pub single_active: Option<String>,
    /// Connection flags.
    #[command(flatten)]
    pub nats: NatsArgs,
}

enum Running {
    Order(order::RunningOrder),
    Pricing(pricing::RunningPricing),
    Risk(risk::RunningRisk),
    Echo(aegis_sdk::rpc::Service),
}

/// Runs the instance until `shutdown`.
///
/// # Errors
/// When NATS is unreachable or the service cannot start or stop cleanly.
pub async fn run(args: ServiceArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = args.nats.connect().await?;
    let id = args.instance_id.clone();
    let running = match args.kind {
        ServiceKind::Order => Running::Order(
            order::start(
                &conn,
                order::OrderOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await
            .context("starting order-service")?,
        ),
        ServiceKind::Pricing => Running::Pricing(
            pricing::start(
                &conn,
                pricing::PricingOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await
            .context("starting pricing-service")?,
        ),
        ServiceKind::Risk => Running::Risk(
            risk::start(
                &conn,
                risk::RiskOptions {
                    instance_id: id,
                    ..Default::default()
                },
            )
            .await
            .context("starting risk-service")?,
        ),
        ServiceKind::Echo => {
            let mut builder = conn
                .service("echo-service", env!("CARGO_PKG_VERSION"))
                .description("Echoes its request back; the smallest Aegis service")
                .handler("echo", |body: serde_json::Value| async move { Ok(body) });
            if let Some(group) = &args.single_active {
                builder = builder.single_active(group.clone());
            }
            if let Some(id) = id {
                builder = builder.instance_id(id);
            }
            Running::Echo(builder.start().await.context("starting echo-service")?)
        }
    };
    let (service, instance) = match &running {
        Running::Order(s) => (
            s.service().name().to_owned(),
            s.service().instance_id().to_owned(),
        ),
        Running::Pricing(s) => (
            s.service().name().to_owned(),
            s.service().instance_id().to_owned(),
        ),
        Running::Risk(s) => (
            s.service().name().to_owned(),
            s.service().instance_id().to_owned(),
        ),
        Running::Echo(s) => (s.name().to_owned(), s.instance_id().to_owned()),
    };
    if let Some(forwarder) = crate::cli::LOG_FORWARDER.get() {
        forwarder.attach(conn.client().clone(), &service, &instance);
    }
    eprintln!("{service} instance {instance} started; Ctrl-C or SIGTERM stops it gracefully");
    shutdown.cancelled().await;
    let stopped = match running {
        Running::Order(s) => settle_trading(s.shutdown().await),
        Running::Pricing(s) => settle_trading(s.shutdown().await),
        Running::Risk(s) => settle_trading(s.shutdown().await),
        Running::Echo(s) => settle(s.shutdown().await),
    };
    conn.drain().await.ok();
    stopped
}

/// A stop whose only failure was the registry record's removal went as
/// well as it could: that was logged where it happened, with what happens
/// instead (the record expires with its TTL).
fn settle(result: Result<(), ServiceError>) -> anyhow::Result<()> {
    match result {
        Ok(()) | Err(ServiceError::Registry(_)) => Ok(()),
        Err(e) => Err(e).context("stopping the service"),
    }
}

fn settle_trading(result: Result<(), TradingError>) -> anyhow::Result<()> {
    match result {
        Err(TradingError::Service(e)) => settle(Err(e)),
        other => other.context("stopping the service"),
    }
}
