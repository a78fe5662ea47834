//! A long-running service, as `docs/services.md` walks through it: logs
//! through `tracing` (filtered by `RUST_LOG`, warnings and errors also sent
//! to NATS for the monitor), a typed RPC method with typed errors, an event
//! subscription, and a graceful stop on Ctrl-C or SIGTERM.
//!
//! ```sh
//! make up                      # or any nats-server 2.11+ with JetStream
//! AEGIS_NATS_URL=nats://127.0.0.1:4222 \
//!   cargo run -p aegis-sdk --example quote_service -- quote-1
//! aegis call quote-service get_quote '{"symbol":"AAPL"}'
//! ```
//!
//! (With `make up` the bus needs credentials: see docs/security.md.)

use aegis_sdk::{
    ConfigLoader, Connection,
    events::{DeliveryMode, Event},
    rpc::WireError,
    schemars::JsonSchema,
    telemetry::log_layer::NatsLogLayer,
};
use serde::{Deserialize, Serialize};
use tracing_subscriber::{EnvFilter, filter::LevelFilter, prelude::*};

/// Asks for the price of a symbol.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
struct QuoteRequest {
    /// The ticker, e.g. `AAPL`.
    symbol: String,
}

/// A price.
#[derive(Debug, Deserialize, Serialize, JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
struct Quote {
    symbol: String,
    price: f64,
}

/// The event this service listens to: `events.order.filled`.
#[derive(Debug, Deserialize)]
struct OrderFilled {
    symbol: String,
    quantity: u32,
}

const SERVICE: &str = "quote-service";

// `anyhow::Result`: an error that ends `main` prints as a sentence and its
// causes ("Error: cannot connect to NATS at nats://127.0.0.1:4222 /
// Caused by: ..."), where `Box<dyn Error>` would print its Debug structs.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // 1. Logging: the SDK emits `tracing` events; the binary installs the
    //    subscriber. RUST_LOG filters what is printed (default: info, and
    //    warnings of async-nats, whose INFO lines tell each connection
    //    step); WARN and ERROR also go to NATS once attached below.
    let (nats_logs, forwarder) = NatsLogLayer::new();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,async_nats=warn"));
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(filter))
        // Filtered like the printed layer: unfiltered, its "WARN and up
        // only" would silence the printed lines below WARN too.
        .with(nats_logs.with_filter(LevelFilter::WARN))
        .init();

    // 2. Configuration from the environment (AEGIS_NATS_URL, ...), and the
    //    instance id from the command line (in Kubernetes: the pod name).
    let config = ConfigLoader::new().env().load()?;
    let instance = std::env::args()
        .nth(1)
        .unwrap_or_else(aegis_sdk::default_instance_id);
    let conn = Connection::connect(config).await?;

    // 3. Serve. Names are checked by `start` before any I/O.
    let service = conn
        .service(SERVICE, "1.0.0")
        .instance_id(&instance)
        .description("Prices of symbols")
        .handler("get_quote", |req: QuoteRequest| async move {
            match req.symbol.as_str() {
                "AAPL" => Ok(Quote {
                    symbol: req.symbol,
                    price: 175.0,
                }),
                other => Err(WireError::not_found(format!("no quote for {other}"))
                    .with_details(serde_json::json!({ "symbol": other }))),
            }
        })
        .start()
        .await?;
    forwarder.attach(&conn, service.name(), service.instance_id());

    // 4. Events: every instance sees each fill (broadcast), under a
    //    consumer named after this instance.
    let fills = conn
        .events()
        .subscribe::<OrderFilled>(SERVICE, "order.filled", DeliveryMode::Broadcast)
        .instance_id(&instance)
        .handler(|event: Event<OrderFilled>| async move {
            tracing::info!(symbol = %event.payload.symbol, quantity = event.payload.quantity, "fill");
            Ok(())
        })
        .start()
        .await?;

    tracing::info!(%instance, "{SERVICE} started; Ctrl-C or SIGTERM stops it");
    stop_signal().await;

    // 5. Graceful stop: stop taking work and finish what is in flight
    //    (events, then requests; the registry record is deleted), then
    //    drain the connection.
    fills.shutdown().await;
    service.shutdown().await?;
    conn.drain().await?;
    Ok(())
}

/// Resolves on Ctrl-C, or SIGTERM (what Kubernetes and `aegis up` send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await.expect("Ctrl-C handler");
}
