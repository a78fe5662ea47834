//! Helpers shared by the trading services' integration tests: a real
//! nats-server per test, SDK connections made as a user makes them, polling
//! for conditions instead of fixed sleeps, and an event recorder.
#![allow(dead_code, unreachable_pub)]

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_contracts::trading::{OrderFilled, RISK_SERVICE, Side, TradingEvent};
use aegis_sdk::{
    AegisConfig, Connection,
    election::Role,
    events::{DeliveryMode, Event, EventError, EventSubscription},
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_testkit::{NatsCluster, NatsServer, wait::until_some};
use serde::de::DeserializeOwned;
use serde_json::Value;

// Not every test binary that includes this module polls.
#[allow(unused_imports)]
pub use aegis_testkit::wait::{PATIENCE, eventually};

/// Starts a fresh JetStream-enabled server for one test.
pub fn server() -> NatsServer {
    NatsServer::start().expect("start nats-server (run `make bootstrap`)")
}

/// Connects the SDK to `url`.
pub async fn connect(url: &str) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(5);
    Connection::connect(config).await.expect("connect")
}

/// Starts a 3-node JetStream cluster for one test.
pub fn cluster() -> NatsCluster {
    NatsCluster::start(3).expect("start a 3-node nats-server cluster")
}

/// Connects the SDK to every node of `cluster`, with buckets and streams
/// replicated three times, as the showcase runs.
pub async fn connect_cluster(cluster: &NatsCluster) -> Connection {
    connect_nodes(&cluster.urls()).await
}

/// Connects the SDK to the cluster's nodes at `urls` (it learns of the
/// others from them), with buckets and streams replicated three times.
pub async fn connect_nodes(urls: &[String]) -> Connection {
    let mut config = AegisConfig::default();
    config.nats.servers = urls.to_vec();
    config.nats.replicas = 3;
    config.nats.request_timeout = Duration::from_secs(5);
    Connection::connect(config)
        .await
        .expect("connect to the cluster")
}

/// risk-service's options with the instance id `id`.
pub fn risk_options(id: &str) -> aegis_trading::risk::RiskOptions {
    aegis_trading::risk::RiskOptions {
        instance_id: Some(id.into()),
        ..Default::default()
    }
}

/// The limits risk-service's instance `instance` judges by.
pub async fn limits_of(
    conn: &Connection,
    instance: &str,
) -> Result<aegis_trading::risk::RiskLimits, RpcError> {
    risk_call(conn, instance, "get_limits", &Value::Null).await
}

/// Changes the limits through risk-service's instance `instance` by
/// `patch`; the limits it stored.
pub async fn update_limits(
    conn: &Connection,
    instance: &str,
    patch: &Value,
) -> Result<aegis_trading::risk::RiskLimits, RpcError> {
    risk_call(conn, instance, "update_limits", patch).await
}

/// The positions risk-service's instance `instance` holds.
pub async fn positions_of(
    conn: &Connection,
    instance: &str,
) -> Result<aegis_trading::risk::Positions, RpcError> {
    risk_call(conn, instance, "get_positions", &Value::Null).await
}

/// Calls `method` of risk-service's instance `instance` with `body`.
async fn risk_call<T: DeserializeOwned>(
    conn: &Connection,
    instance: &str,
    method: &str,
    body: &Value,
) -> Result<T, RpcError> {
    let reply = conn
        .rpc()
        .call_instance(
            RISK_SERVICE,
            instance,
            method,
            body,
            &CallOptions::default(),
        )
        .await?;
    Ok(reply.value)
}

/// A fill of `quantity` `symbol` for order `order_id`, as order-service
/// announces one.
pub fn fill(order_id: &str, symbol: &str, side: Side, quantity: i64) -> OrderFilled {
    OrderFilled {
        order_id: order_id.into(),
        client_order_id: format!("c-{order_id}"),
        symbol: symbol.into(),
        side,
        quantity,
        fill_price: 100.0,
        filled_at: chrono::Utc::now(),
    }
}

/// Publishes a fill as order-service does (under its order's event id, so
/// a retry is stored once); its stream sequence.
pub async fn publish_fill(conn: &Connection, event: &OrderFilled) -> Result<u64, EventError> {
    let ack = conn
        .events()
        .publish_with_id(
            OrderFilled::DOMAIN,
            OrderFilled::ACTION,
            &OrderFilled::event_id(&event.order_id),
            event,
        )
        .await?;
    Ok(ack.sequence)
}

/// The error code of a failed call (panics on success).
pub fn code<T: std::fmt::Debug>(result: Result<T, RpcError>) -> ErrorCode {
    result.expect_err("the call should fail").code()
}

/// Every event matching a pattern, recorded from the start of the stream.
#[derive(Debug)]
pub struct Recorder<T> {
    seen: Arc<Mutex<Vec<Event<T>>>>,
    _sub: EventSubscription,
}

impl<T: DeserializeOwned + Clone + Send + 'static> Recorder<T> {
    /// Records events matching `pattern` (durable consumer named after `name`).
    pub async fn start(conn: &Connection, name: &str, pattern: &str) -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let sub = conn
            .events()
            .subscribe::<T>(name, pattern, DeliveryMode::Compete)
            .deliver_all()
            .handler(move |event: Event<T>| {
                sink.lock().unwrap().push(event);
                futures::future::ready(Ok(()))
            })
            .start()
            .await
            .expect("subscribe");
        Self { seen, _sub: sub }
    }

    /// The payloads recorded so far.
    pub fn payloads(&self) -> Vec<T> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|e| e.payload.clone())
            .collect()
    }

    /// The events recorded so far.
    pub fn events(&self) -> Vec<Event<T>> {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until some recorded payload satisfies `pred`, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&T) -> bool) -> T {
        let what = format!("event: {what}");
        until_some(PATIENCE, &what, || {
            let found = self.payloads().into_iter().find(|p| pred(p));
            async move { found }
        })
        .await
    }
}

/// Waits until every event published before this call has been handed to
/// `recorder` (which must match `{domain}.barrier`): a barrier event is
/// published and, since one consumer delivers in stream order, seeing it
/// means everything stored before it was seen too. Lets a test assert that
/// something did *not* happen without sleeping.
pub async fn barrier(conn: &Connection, recorder: &Recorder<Value>, domain: &str) {
    let id = nuid::next().to_string();
    conn.events()
        .publish(domain, "barrier", &serde_json::json!({ "barrier": id }))
        .await
        .expect("publish barrier");
    recorder
        .wait_for("the barrier", |v| v["barrier"] == id.as_str())
        .await;
}

/// Whether `instance` leads its single-active group now.
pub fn is_leader(instance: &aegis_trading::Running) -> bool {
    instance
        .service()
        .election()
        .is_some_and(|e| matches!(e.role(), Role::Leader { .. }))
}

/// Starts risk-service with the limits the order tests trade under: at
/// most 100,000 of notional per order, the rest the defaults.
// Not every test binary that includes this module starts risk so.
#[allow(dead_code)]
pub async fn start_order_risk(conn: &Connection) -> aegis_trading::Running {
    aegis_trading::risk::start(
        conn,
        aegis_trading::risk::RiskOptions {
            limits: aegis_trading::risk::RiskLimits {
                max_order_notional: 100_000.0,
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// Starts pricing-service with no periodic price publication: prices are
/// made only when asked for (a quote), so the tests see no stray events.
pub async fn start_pricing_without_publication(conn: &Connection) -> aegis_trading::Running {
    aegis_trading::pricing::start(
        conn,
        aegis_trading::pricing::PricingOptions {
            publish_interval: None,
            ..Default::default()
        },
    )
    .await
    .unwrap()
}

/// A pricing service whose first `held` quotes wait until the test opens
/// `gate`; how many quotes were asked for.
pub async fn gated_pricing(
    conn: &Connection,
    held: usize,
) -> (
    aegis_sdk::rpc::Service,
    Arc<tokio::sync::Semaphore>,
    Arc<std::sync::atomic::AtomicUsize>,
) {
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let service = conn
        .service(aegis_contracts::trading::PRICING_SERVICE, "1.0.0")
        .handler("get_price", {
            let (gate, calls) = (gate.clone(), calls.clone());
            move |req: aegis_trading::pricing::GetPrice| {
                let (gate, calls) = (gate.clone(), calls.clone());
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < held {
                        let _ = gate.acquire().await;
                    }
                    let base = aegis_trading::pricing::default_symbols()
                        .get(&req.symbol)
                        .copied()
                        .ok_or_else(|| aegis_sdk::rpc::WireError::not_found("unknown symbol"))?;
                    Ok::<aegis_trading::pricing::Quote, aegis_sdk::rpc::WireError>(
                        aegis_trading::pricing::quote_at(&req.symbol, base, chrono::Utc::now()),
                    )
                }
            }
        })
        .start()
        .await
        .unwrap();
    (service, gate, calls)
}
