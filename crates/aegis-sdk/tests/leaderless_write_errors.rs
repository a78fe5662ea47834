//! A write whose stream has no leader (the NATS node that held it died)
//! is answered "no responders", which async-nats reports as "no stream
//! found for given subject": read alone, a missing stream, a configuration
//! error. The SDK's errors say what it most likely is: the stream has no
//! leader right now (JetStream elects one within seconds), or it does not
//! exist (`aegis init`). Against a real cluster, streams of one replica
//! whose only node is killed: they stay without a leader.

mod common;

use std::time::Duration;

use aegis_sdk::{
    contracts::{
        InstanceStatus,
        log::{LogKind, LogRecord},
    },
    startup::Causes,
};
use aegis_testkit::{NatsCluster, leaders::stream_leader};
use common::connect_cluster;
use futures::StreamExt;
use serde_json::Value;

/// What each error must say, beside its own words.
fn assert_says_leaderless_or_missing(text: &str) {
    assert!(
        text.contains("no leader right now") && text.contains("elects a new one within seconds"),
        "says the stream may have no leader: {text}"
    );
    assert!(
        text.contains("does not exist (run `aegis init`)"),
        "says the stream may not exist: {text}"
    );
}

/// The index of the node leading `stream` (named `n1`, `n2`, ...).
async fn leading_node(client: &async_nats::Client, stream: &str) -> usize {
    let name = stream_leader(client, stream)
        .await
        .unwrap_or_else(|| panic!("{stream} has a leader"));
    name.trim_start_matches('n').parse::<usize>().unwrap() - 1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_stream_without_a_leader_says_what_that_likely_means() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let setup = connect_cluster(cluster.urls(), 1).await;
    aegis_sdk::registry::ensure_registry_bucket(setup.jetstream(), 1)
        .await
        .unwrap();
    setup.events().ensure_stream().await.unwrap();
    let registry_node = leading_node(setup.client(), "KV_service_registry").await;
    let events_node = leading_node(setup.client(), "EVENTS").await;

    // The registry: a status change, and the heartbeat's event.
    let conn = connect_cluster(cluster.urls_except(registry_node), 1).await;
    let svc = conn
        .service("quiet-service", "1.0.0")
        .instance_id("quiet-1")
        .heartbeat(Duration::from_millis(200))
        .handler("echo", |v: Value| async move { Ok(v) })
        .start()
        .await
        .unwrap();
    let mut events = conn
        .client()
        .subscribe("aegis.log.quiet-service.quiet-1")
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(conn.client()).await;
    cluster.kill_node(registry_node);
    // Until the others drop their route to it, a write is forwarded to
    // the dead node and times out instead of being answered.
    cluster
        .wait_unrouted(registry_node, Duration::from_secs(10))
        .unwrap();

    let err = svc
        .set_status(InstanceStatus::Unhealthy)
        .await
        .expect_err("no registry write is taken");
    let text = Causes(&err).to_string();
    assert!(
        text.contains("cannot write service-instances.quiet-service.quiet-1 to the registry"),
        "{text}"
    );
    assert_says_leaderless_or_missing(&text);

    let failed = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = events.next().await {
            let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
            if record.kind != LogKind::HeartbeatFailed || record.fields.contains_key("recovered") {
                continue;
            }
            // A beat's write in flight as the node died was sent to it and
            // is never answered: it times out. The next ones are answered.
            let error = record.fields["error"].as_str().unwrap_or_default();
            if !error.contains("no acknowledgement within") {
                return record;
            }
        }
        panic!("the event subscription ended");
    })
    .await
    .expect("a heartbeat_failed event within 10 s");
    let error = failed.fields["error"].as_str().unwrap().to_owned();
    assert_says_leaderless_or_missing(&error);

    // Events: a publish to EVENTS without its leader.
    if events_node != registry_node {
        cluster.restart_node(registry_node).unwrap();
        cluster.wait_ready(Duration::from_secs(30)).unwrap();
        cluster.kill_node(events_node);
    }
    cluster
        .wait_unrouted(events_node, Duration::from_secs(10))
        .unwrap();
    let publisher = connect_cluster(cluster.urls_except(events_node), 1).await;
    let err = publisher
        .events()
        .publish("order", "created", &serde_json::json!({"order_id": 1}))
        .await
        .expect_err("no event is taken");
    let text = Causes(&err).to_string();
    assert!(text.contains("on events.order.created"), "{text}");
    assert_says_leaderless_or_missing(&text);
}
