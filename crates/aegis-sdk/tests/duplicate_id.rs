//! Two processes started with one instance id (a copy-pasted id, or a
//! Deployment's replicas sharing one `AEGIS_INSTANCE_ID`): requests to
//! the instance land on either, its registry record flips between the
//! two, and a sticky service's standby answers as the id the leader
//! holds. The second is refused at start while the first one runs; an id
//! whose process stopped or died is free at once.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    rpc::{Service, WireError, server::ServiceError},
};
use async_nats::jetstream::kv;
use common::{ChildInstance, connect, server};

async fn ledger(conn: &Connection, id: &str) -> Result<Service, ServiceError> {
    conn.service("ledger", "1.0.0")
        .instance_id(id)
        // A builder's own `host` is its own: the SDK names the process
        // under keys of its own.
        .metadata("host", "db-primary.internal")
        .single_active("default")
        .handler("post", |v: serde_json::Value| async move {
            Ok::<_, WireError>(v)
        })
        .start()
        .await
}

/// The connection named by the record of `ledger.{id}`, if any.
async fn registered_by(url: &str, id: &str) -> Option<String> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    // Not there until the first instance registers.
    let store = js
        .get_key_value(aegis_contracts::subjects::REGISTRY_BUCKET)
        .await
        .ok()?;
    let entry = store
        .entry(format!("service-instances.ledger.{id}"))
        .await
        .unwrap()?;
    (entry.operation == kv::Operation::Put).then(|| {
        let record: serde_json::Value = serde_json::from_slice(&entry.value).unwrap();
        record["metadata"]["natsConnection"]
            .as_str()
            .unwrap()
            .to_owned()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_with_a_running_instances_id_is_refused() {
    let nats = server();
    let (first, second) = (connect(&nats.url()).await, connect(&nats.url()).await);
    let running = ledger(&first, "ledger-1").await.unwrap();
    let leads = || {
        running
            .election()
            .unwrap()
            .leadership()
            .serving_epoch()
            .is_some()
    };
    common::eventually(Duration::from_secs(10), "the first leads", || async {
        leads()
    })
    .await;

    let refused = ledger(&second, "ledger-1").await;
    let Err(e) = refused else {
        panic!("the second process with ledger-1 started");
    };
    assert!(
        matches!(&e, ServiceError::InstanceIdInUse { service, instance, .. }
            if service == "ledger" && instance == "ledger-1"),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains("ledger-1") && message.contains(&std::process::id().to_string()),
        "names the id and the process holding it: {message}"
    );
    // The refused start left the running instance as it was.
    assert_eq!(
        registered_by(&nats.url(), "ledger-1").await.as_deref(),
        Some(first.connection_name())
    );
    assert!(leads(), "the running instance still leads");
    let info = second
        .client()
        .request("$SRV.INFO.ledger.ledger-1", bytes::Bytes::new())
        .await
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&info.payload).unwrap();
    assert_eq!(info["metadata"]["host"], "db-primary.internal", "{info}");
    running.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_whose_process_stopped_is_free() {
    let nats = server();
    let (first, second) = (connect(&nats.url()).await, connect(&nats.url()).await);
    ledger(&first, "ledger-1")
        .await
        .unwrap()
        .shutdown()
        .await
        .unwrap();
    let next = ledger(&second, "ledger-1").await.unwrap();
    assert_eq!(
        registered_by(&nats.url(), "ledger-1").await.as_deref(),
        Some(second.connection_name())
    );
    next.shutdown().await.unwrap();
}

/// A crashed process's record outlives it by its TTL; its id is free at
/// once all the same, since nothing answers for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_whose_process_died_is_free_before_its_record_expires() {
    let nats = server();
    let mut child = ChildInstance::spawn_sticky(
        "duplicate_id_child",
        &nats.url(),
        "ledger",
        "ledger-1",
        "default",
    );
    let url = nats.url();
    common::eventually(Duration::from_secs(20), "the child registers", || {
        let url = url.clone();
        async move { registered_by(&url, "ledger-1").await.is_some() }
    })
    .await;
    child.kill();
    let conn = connect(&nats.url()).await;
    let asked = std::time::Instant::now();
    let started = ledger(&conn, "ledger-1").await;
    assert!(started.is_ok(), "{:?}", started.err());
    // Nobody answers for the id: "no responders" at once, not the 500 ms
    // the start waits for an answer before it goes on unsure.
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "started after {:?}",
        asked.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by the tests above"]
async fn duplicate_id_child() {
    common::run_child_instance().await;
}
