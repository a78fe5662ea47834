//! Runs the monitor on its own, exactly as `aegis api` does (same flags and
//! `AEGIS_*` variables), for the fuzzing and load scripts and for local
//! debugging: `cargo run -p aegis-monitor --example serve -- --insecure-dev`.

use clap::Parser;
use tokio_util::sync::CancellationToken;

/// The monitor API on its own.
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    api: aegis_monitor::ApiArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AEGIS_LOG")
                .unwrap_or_else(|_| "warn,aegis_monitor=info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        token.cancel();
    });
    aegis_monitor::run(cli.api, shutdown).await
}
