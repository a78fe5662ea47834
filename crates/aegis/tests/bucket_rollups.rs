//! Rollups on the shared buckets, against a real nats-server with the
//! showcase's users (`aegis::permissions`).
//!
//! NATS permissions check a publish's subject, never its headers. A role
//! that may write one key of a bucket could once send it with
//! `Nats-Rollup: all` and have the server purge every other subject of the
//! bucket's stream: a service wiped every instance's registry record and
//! every service's election key with one message, and the monitor wiped
//! every service definition and its history. The elections and the
//! definitions are now made (and `aegis init` changes existing ones) with
//! rollups refused, so such a message is refused and nothing is lost.
//!
//! The registry cannot refuse them: nats-server turns rollups on for a
//! stream with limit markers, which the registry needs. There a wipe is
//! undone by the live instances' next refresh of their records.

mod common;

use std::time::Duration;

use aegis_contracts::subjects::{DEFINITIONS_BUCKET, ELECTIONS_BUCKET, REGISTRY_BUCKET};
use aegis_sdk::{AegisConfig, Connection};
use aegis_testkit::{NatsServer, wait::eventually};
use async_nats::{HeaderMap, jetstream, jetstream::kv};
use common::showcase_bus::ShowcaseBus;
use futures::TryStreamExt;

/// Stores `value` at `subject` as `js`'s user, and waits for the ack.
async fn put(js: &jetstream::Context, subject: &str, value: &'static str) {
    js.publish(subject.to_owned(), value.into())
        .await
        .unwrap_or_else(|e| panic!("publish {subject}: {e}"))
        .await
        .unwrap_or_else(|e| panic!("store {subject}: {e}"));
}

/// Sends an empty message with `Nats-Rollup: {rollup}` to `subject`; what
/// the stream answered.
async fn rollup(js: &jetstream::Context, subject: &str, rollup: &str) -> Result<u64, String> {
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Rollup", rollup);
    let ack = js
        .publish_with_headers(subject.to_owned(), headers, bytes::Bytes::new())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

async fn keys(operator: &Connection, bucket: &str) -> Vec<String> {
    let store = operator.jetstream().get_key_value(bucket).await.unwrap();
    let mut keys: Vec<String> = store.keys().await.unwrap().try_collect().await.unwrap();
    keys.sort();
    keys
}

async fn history_len(operator: &Connection, bucket: &str, key: &str) -> usize {
    let store = operator.jetstream().get_key_value(bucket).await.unwrap();
    let entries: Vec<kv::Entry> = store
        .history(key)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    entries.len()
}

/// What each role legitimately wrote before the attacks.
async fn legitimate_writes(bus: &ShowcaseBus) {
    let order = bus.js("svc-order-service").await;
    let risk = bus.js("svc-risk-service").await;
    let pricing = bus.js("svc-pricing-service").await;
    let monitor = bus.js("monitor").await;
    put(
        &order,
        "$KV.service_registry.service-instances.order-service.order-1",
        r#"{"serviceName":"order-service","instanceId":"order-1"}"#,
    )
    .await;
    put(
        &risk,
        "$KV.service_registry.service-instances.risk-service.risk-1",
        r#"{"serviceName":"risk-service","instanceId":"risk-1"}"#,
    )
    .await;
    put(
        &pricing,
        "$KV.service_registry.service-instances.pricing-service.pricing-1",
        r#"{"serviceName":"pricing-service","instanceId":"pricing-1"}"#,
    )
    .await;
    put(
        &order,
        "$KV.service_elections.sticky-active.order-service.default",
        r#"{"instanceId":"order-1","epoch":0,"leaseMs":400,"renewedAt":""}"#,
    )
    .await;
    for value in [r#"{"version":"1.0.0"}"#, r#"{"version":"1.0.1"}"#] {
        put(&monitor, "$KV.service_definitions.order-service", value).await;
    }
}

/// Every rollup the red-team trial sent is refused by the stream, and the
/// buckets keep every other role's keys (and the definitions their
/// history).
async fn rollups_are_refused_and_nothing_is_lost(bus: &ShowcaseBus, operator: &Connection) {
    let pricing = bus.js("svc-pricing-service").await;
    let monitor = bus.js("monitor").await;
    let registry_before = keys(operator, REGISTRY_BUCKET).await;
    assert_eq!(registry_before.len(), 3, "{registry_before:?}");

    for (js, subject, kind) in [
        (
            &pricing,
            "$KV.service_elections.sticky-active.pricing-service.evil",
            "all",
        ),
        (&monitor, "$KV.service_definitions.zz-wipe", "all"),
        (&monitor, "$KV.service_definitions.order-service", "sub"),
    ] {
        let answer = rollup(js, subject, kind).await;
        println!("Nats-Rollup: {kind} to {subject}: {answer:?}");
        let refusal = answer.expect_err("a rollup on a shared bucket is refused");
        assert!(refusal.to_lowercase().contains("rollup"), "{refusal}");
    }

    assert_eq!(keys(operator, REGISTRY_BUCKET).await, registry_before);
    assert_eq!(
        keys(operator, ELECTIONS_BUCKET).await,
        ["sticky-active.order-service.default"]
    );
    assert_eq!(keys(operator, DEFINITIONS_BUCKET).await, ["order-service"]);
    assert_eq!(
        history_len(operator, DEFINITIONS_BUCKET, "order-service").await,
        2,
        "the definition's history is kept"
    );
}

#[tokio::test]
async fn a_rollup_on_a_shared_bucket_is_refused_and_wipes_nothing() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator().await;
    aegis::init::create_missing(&operator)
        .await
        .expect("the operator creates the streams and buckets");
    legitimate_writes(&bus).await;
    rollups_are_refused_and_nothing_is_lost(&bus, &operator).await;
}

/// Buckets made before rollups were turned off (as async-nats makes any
/// bucket: rollups allowed) are changed in place by what `aegis up` and
/// `aegis init` run, keeping their keys.
#[tokio::test]
async fn buckets_made_with_rollups_are_changed_in_place() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator().await;
    let js = operator.jetstream();
    for (bucket, history, markers) in [
        (REGISTRY_BUCKET, 1, Some(Duration::from_secs(60))),
        (ELECTIONS_BUCKET, 1, None),
        (DEFINITIONS_BUCKET, 64, None),
    ] {
        let store = js
            .create_key_value(kv::Config {
                bucket: bucket.to_owned(),
                history,
                limit_markers: markers,
                ..Default::default()
            })
            .await
            .unwrap();
        let config = store.stream.cached_info().config.clone();
        assert!(config.allow_rollup, "the old way allowed rollups");
    }
    legitimate_writes(&bus).await;

    aegis::init::create_missing(&operator)
        .await
        .expect("the operator's init changes the buckets");
    for bucket in [REGISTRY_BUCKET, ELECTIONS_BUCKET, DEFINITIONS_BUCKET] {
        let mut stream = js.get_stream(format!("KV_{bucket}")).await.unwrap();
        let config = stream.info().await.unwrap().config.clone();
        assert_eq!(
            config.allow_rollup,
            bucket == REGISTRY_BUCKET,
            "{bucket}: rollups off now, but on the registry (limit markers need them)"
        );
        assert!(config.max_bytes > 0, "{bucket}: bounded now");
        assert!(config.max_message_size > 0, "{bucket}: values bounded now");
    }
    rollups_are_refused_and_nothing_is_lost(&bus, &operator).await;
}

/// The registry keeps rollups (nats-server turns them on for its limit
/// markers): a service may still empty it with one message. The live
/// instances write their records again at their next refresh (every third
/// of their TTL at most).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_rollup_is_undone_by_the_next_refresh() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator().await;
    aegis::init::create_missing(&operator)
        .await
        .expect("the operator creates the streams and buckets");
    let mut services = Vec::new();
    for (user, service, id) in [
        ("svc-order-service", "order-service", "order-1"),
        ("svc-risk-service", "risk-service", "risk-1"),
    ] {
        let conn = bus.sdk(user).await;
        let started = conn
            .service(service, "1.0.0")
            .instance_id(id)
            .heartbeat(Duration::from_millis(300))
            // An unchanged record is written again every third of the
            // TTL (4 s at the default 15 s): every 1 s here.
            .ttl(Duration::from_secs(3))
            .handler("echo", |v: serde_json::Value| async move {
                Ok::<_, aegis_sdk::rpc::WireError>(v)
            })
            .start()
            .await
            .unwrap_or_else(|e| panic!("{service} starts as {user}: {e}"));
        services.push((conn, started));
    }
    let both = [
        "service-instances.order-service.order-1".to_owned(),
        "service-instances.risk-service.risk-1".to_owned(),
    ];
    eventually(
        Duration::from_secs(10),
        "both instances registered",
        || async { keys(&operator, REGISTRY_BUCKET).await == both },
    )
    .await;

    let pricing = bus.js("svc-pricing-service").await;
    let wiped = rollup(
        &pricing,
        "$KV.service_registry.service-instances.pricing-service.evil",
        "all",
    )
    .await;
    let wiped_at = std::time::Instant::now();
    println!("Nats-Rollup: all to the registry: {wiped:?}");
    wiped.expect(
        "the registry takes rollups (its limit markers need them); if this is refused now, \
         the server lets the registry refuse them: say so in docs/security.md",
    );
    eventually(
        Duration::from_secs(3),
        "both instances back in the registry within a refresh",
        || async {
            let keys = keys(&operator, REGISTRY_BUCKET).await;
            both.iter().all(|k| keys.contains(k))
        },
    )
    .await;
    println!(
        "the live instances wrote their records again {:?} after the wipe",
        wiped_at.elapsed()
    );
}

/// The monitor makes the definitions bucket itself where it may (a server
/// without users): made so, it refuses rollups and purges before any
/// `aegis init` changes it.
#[tokio::test]
async fn the_monitor_makes_the_definitions_bucket_without_rollups() {
    let nats = NatsServer::start().expect("start nats-server");
    let conn = Connection::connect(AegisConfig::with_servers(nats.url()))
        .await
        .unwrap();
    aegis_monitor::ensure_infrastructure(conn.jetstream(), conn.config(), 64)
        .await
        .expect("the monitor's bucket and streams");
    let mut stream = conn
        .jetstream()
        .get_stream(format!("KV_{DEFINITIONS_BUCKET}"))
        .await
        .unwrap();
    let config = stream.info().await.unwrap().config.clone();
    assert!(!config.allow_rollup, "rollups refused");
    assert!(config.deny_purge, "purges denied");
    assert_eq!(config.max_messages_per_subject, 64, "history kept");
    assert!(
        config.max_bytes > 0 && config.max_message_size > 0,
        "bounded"
    );
}
