//! The log layer forwards a process's WARN and ERROR lines to
//! `aegis.log.{service}.{instance}`, but not a line that only repeats a
//! lifecycle event the SDK publishes beside it (field `lifecycle`): the
//! monitor's Logs & events showed such happenings twice.

mod common;

use std::time::Duration;

use aegis_sdk::telemetry::log_layer::NatsLogLayer;
use common::{connect, server};
use futures::StreamExt;
use tracing_subscriber::layer::SubscriberExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_repeats_a_lifecycle_event_is_not_forwarded() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let mut forwarded = raw.subscribe("aegis.log.>").await.unwrap();
    raw.flush().await.unwrap();

    let (layer, forwarder) = NatsLogLayer::new();
    forwarder.attach(&conn, "order-service", "order-1");
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!(lifecycle = true, "heartbeat failed; retrying");
        tracing::warn!("a plain warning");
    });

    // Lines go out in order (one sender per instance), a copy again when
    // no stream takes it: read up to the plain warning.
    let mut before = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(15), forwarded.next())
            .await
            .expect("the plain warning forwarded within 15 s")
            .expect("the subscription is open");
        let text = String::from_utf8_lossy(&line.payload).into_owned();
        if text.contains("a plain warning") {
            break;
        }
        before.push(text);
    }
    assert!(
        before.iter().all(|t| !t.contains("heartbeat failed")),
        "forwarded before the plain warning: {before:?}"
    );
}
