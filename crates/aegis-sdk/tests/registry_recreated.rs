//! The registry view when the `service_registry` bucket is deleted and
//! created again (an operator's reset, a restore): its revisions start over,
//! so they can equal or fall below the ones the view remembers. The view
//! must notice the new bucket and rebuild itself from it: no stale record
//! kept for an equal revision, no eviction outliving the old bucket.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection, RegistryReader,
    contracts::ServiceInstance,
    registry::ensure_registry_bucket,
    rpc::{RpcError, WireError},
};
use async_nats::jetstream::{self, kv};
use common::{connect, eventually, server};
use serde_json::{Value, json};

const BUCKET_STREAM: &str = "KV_service_registry";

async fn raw(url: &str) -> jetstream::Context {
    jetstream::new(async_nats::connect(url).await.unwrap())
}

async fn put_record(store: &kv::Store, version: &str) -> u64 {
    let record = ServiceInstance::new("pricing-service", "pricing-1", version, chrono::Utc::now());
    store
        .put(
            "service-instances.pricing-service.pricing-1",
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap()
}

/// Deletes the bucket and creates it again as the SDK would.
async fn recreate_bucket(js: &jetstream::Context) -> kv::Store {
    js.delete_stream(BUCKET_STREAM).await.unwrap();
    ensure_registry_bucket(js, 1).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_at_an_equal_revision_in_a_new_bucket_replaces_the_old_one() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let js = raw(&nats.url()).await;
    let store = js.get_key_value("service_registry").await.unwrap();
    let first = put_record(&store, "1.0.0").await;
    eventually(Duration::from_secs(5), "version 1.0.0 seen", || {
        let r = reader.clone();
        async move {
            r.get("pricing-service", "pricing-1")
                .is_some_and(|i| i.version == "1.0.0")
        }
    })
    .await;

    let store = recreate_bucket(&js).await;
    let again = put_record(&store, "2.0.0").await;
    assert_eq!(again, first, "the new bucket's revisions start over");
    eventually(
        Duration::from_secs(15),
        "the new bucket's record replaces the old one",
        || {
            let r = reader.clone();
            async move {
                r.get("pricing-service", "pricing-1")
                    .is_some_and(|i| i.version == "2.0.0")
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_eviction_does_not_outlive_the_bucket() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let js = raw(&nats.url()).await;
    let owner = connect(&nats.url()).await;
    // Many writes first, so the evicted record's revision is high.
    let store = ensure_registry_bucket(&js, 1).await.unwrap();
    for n in 0..300u32 {
        store.put("filler", n.to_string().into()).await.unwrap();
    }
    // A record with nobody serving behind it (written by hand, so nothing
    // removes it): a call finds no responder and evicts it from the
    // caller's view.
    let record = ServiceInstance::new("echo-service", "echo-1", "1.0.0", chrono::Utc::now());
    let revision = store
        .put(
            "service-instances.echo-service.echo-1",
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(revision > 300);
    let err = client
        .rpc()
        .call::<_, Value>("echo-service", "echo", &json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }), "{err:?}");

    // The bucket starts over; the instance really serves now.
    recreate_bucket(&js).await;
    let service = start_echo(&owner).await;
    eventually(
        Duration::from_secs(15),
        "calls reach the instance in the new bucket",
        || {
            let client = client.clone();
            async move {
                client
                    .rpc()
                    .call::<_, Value>("echo-service", "echo", &json!(2))
                    .await
                    .is_ok_and(|v| v == json!(2))
            }
        },
    )
    .await;
    service.shutdown().await.unwrap();
}

async fn start_echo(conn: &Connection) -> aegis_sdk::rpc::Service {
    conn.service("echo-service", "1.0.0")
        .instance_id("echo-1")
        .heartbeat(Duration::from_secs(1))
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap()
}
