//! Registers N real SDK service instances (spread over a few services) and
//! keeps them heart-beating until Ctrl-C or SIGTERM: the population for the
//! `GET /api/instances` load benchmark (`scripts/load-api.sh`) and the
//! fuzzing run (`scripts/fuzz-api.sh`). Each instance also answers
//! `aegis.control.{service}.{instance}.config` with the redacted
//! configuration, as the monitor's configuration endpoint expects.
//!
//! `cargo run -p aegis-monitor --example fake_instances -- nats://127.0.0.1:4222 100`

use std::time::Duration;

use aegis_contracts::subjects::control_subject;
use aegis_sdk::{AegisConfig, Connection};
use anyhow::Context;
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let count: usize = args
        .next()
        .map(|n| n.parse())
        .transpose()
        .context("the count must be a number")?
        .unwrap_or(100);
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .context("connecting to NATS")?;
    let services = [
        "order-service",
        "pricing-service",
        "risk-service",
        "quote-service",
    ];
    let mut running = Vec::with_capacity(count);
    for i in 0..count {
        let service = services[i % services.len()];
        let svc = conn
            .service(service, "1.0.0")
            .instance_id(format!("{service}-{i:03}"))
            .heartbeat(Duration::from_secs(1))
            .ttl(Duration::from_secs(5))
            .metadata("zone", format!("zone-{}", i % 3))
            .handler("ping", |_: Value| async move { Ok(json!("pong")) })
            .start()
            .await
            .with_context(|| format!("starting instance {i}"))?;
        let mut requests = conn
            .client()
            .subscribe(control_subject(service, svc.instance_id(), "config"))
            .await
            .context("subscribing to the config control subject")?;
        let client = conn.client().clone();
        let config = serde_json::to_vec(&conn.config().redacted())?;
        tokio::spawn(async move {
            while let Some(request) = requests.next().await {
                if let Some(reply) = request.reply {
                    let _ = client.publish(reply, config.clone().into()).await;
                }
            }
        });
        running.push(svc);
    }
    println!("{count} instances registered; Ctrl-C stops");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // All at once: each stop is bounded by its shutdown timeout, and one
    // after another they would add up (seconds each while NATS is gone).
    // A second signal exits at once.
    let stop = async {
        futures::future::join_all(running.into_iter().map(|svc| svc.shutdown())).await;
        conn.drain().await.ok();
    };
    tokio::select! {
        () = stop => Ok(()),
        _ = tokio::signal::ctrl_c() => std::process::exit(130),
        _ = term.recv() => std::process::exit(130),
    }
}
