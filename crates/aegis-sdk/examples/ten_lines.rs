//! The shortest complete service: logging (`RUST_LOG`; warnings also go
//! to the monitor), the connection from `AEGIS_NATS_*`, one typed method
//! (a `String` in, a `String` out, both with a JSON Schema), and a
//! graceful stop on Ctrl-C or SIGTERM (the instance deregisters, then the
//! connection is drained). Request
//! and response structs derive `JsonSchema` as in `quote_service.rs`.
//! `anyhow::Result` makes an error that ends `main` print as sentences
//! with their causes, not as Debug structs.
//!
//! ```sh
//! nats-server -js &
//! cargo run -p aegis-sdk --example ten_lines
//! aegis call greeter hello '"desk"'      # "Hello, desk!"
//! ```

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    aegis_sdk::telemetry::init()?;
    let conn = aegis_sdk::Connection::from_env().await?;
    conn.service("greeter", "1.0.0")
        .handler("hello", |name: String| async move {
            Ok(format!("Hello, {name}!"))
        })
        .run()
        .await?;
    Ok(())
}
