//! A long-running service, as `docs/services.md` walks through it: logs
//! through `tracing` (filtered by `RUST_LOG`, warnings and errors also sent
//! to NATS for the monitor), a typed RPC method with typed errors, an event
//! subscription, and a graceful stop on Ctrl-C or SIGTERM.
//!
//! Against a plain nats-server 2.11+ with JetStream (no credentials):
//!
//! ```sh
//! nats-server -js &     # 2.11+; `make bootstrap` puts one in .tools/bin
//! aegis init            # once per server: the buckets and streams
//! cargo run -p aegis-sdk --example quote_service -- quote-1
//! aegis call quote-service get_quote '{"symbol":"AAPL"}'
//! ```
//!
//! Not against the showcase's NATS (`make up`): it admits only the users
//! it knows, and even a service admitted with `--admit-service` may not
//! consume `EVENTS`, so this example's subscription would be refused (see
//! docs/services.md and docs/security.md).

use aegis_sdk::{
    Connection,
    events::{DeliveryMode, Event},
    rpc::WireError,
    schemars::JsonSchema,
};
use serde::{Deserialize, Serialize};

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
    //    step); WARN and ERROR also go to NATS (stream AEGIS_LOG) once the
    //    service below has started. docs/services.md shows the same set-up
    //    by hand, for a subscriber of your own.
    aegis_sdk::telemetry::init()?;

    // 2. Configuration from the environment (AEGIS_NATS_URL, ...), and the
    //    instance id from the command line (in Kubernetes: the pod name).
    let conn = Connection::from_env().await?;
    let instance = std::env::args()
        .nth(1)
        .unwrap_or_else(aegis_sdk::default_instance_id);

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
    aegis_sdk::shutdown_signal().await?;

    // 5. Graceful stop: stop taking work and finish what is in flight
    //    (events, then requests; the registry record is deleted), then
    //    drain the connection. (A process with only a service ends with
    //    `.run().await?` on its builder, as examples/ten_lines.rs.)
    fills.shutdown().await;
    service.shutdown().await?;
    conn.drain().await?;
    Ok(())
}
