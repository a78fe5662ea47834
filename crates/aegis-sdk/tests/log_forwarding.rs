//! The log layer forwards a process's WARN and ERROR lines to
//! `aegis.log.{service}.{instance}`, but not a line that only repeats a
//! lifecycle event the SDK publishes beside it (field `lifecycle`): the
//! monitor's Logs & events showed such happenings twice.

mod common;

use aegis_sdk::telemetry::log_layer::NatsLogLayer;
use aegis_testkit::wait::PATIENCE;
use common::{connect, server};
use futures::StreamExt;
use tracing_subscriber::layer::SubscriberExt;

/// A subject under `aegis.log.>` that no instance publishes on.
const PROBE: &str = "aegis.log.test-probe.probe";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_that_repeats_a_lifecycle_event_is_not_forwarded() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let mut forwarded = raw.subscribe("aegis.log.>").await.unwrap();
    // `flush` only writes the subscription to the socket: the server may
    // not have it yet when the SDK's connection publishes, and no stream
    // captures the subject here, so a line sent then reaches nobody (the
    // server answers "no responders", which is right). A probe that comes
    // back through the subscription shows the server routes to it.
    raw.publish(PROBE, "probe".into()).await.unwrap();
    let probe = tokio::time::timeout(PATIENCE, forwarded.next())
        .await
        .expect("the probe comes back through the subscription")
        .expect("the subscription is open");
    assert_eq!(probe.subject.as_str(), PROBE);

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
        let line = tokio::time::timeout(PATIENCE, forwarded.next())
            .await
            .expect("the plain warning forwarded in time")
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
