//! The monitor trusts the election key, not what a registry record claims
//! (issue 12 item 2): a forged record that says ACTIVE with a huge epoch,
//! written by anyone who can write the registry, is never shown as the
//! leader, and the real leader keeps the key's epoch in every view.

mod common;

use std::time::{Duration, Instant};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use common::{Harness, VIEWER, eventually};
use serde_json::{Value, json};

const SERVICE: &str = "order-service";

async fn instances(h: &Harness) -> Vec<Value> {
    let r = h.get("/api/instances", Some(VIEWER)).await;
    r.expect(200, None);
    r.body.as_array().cloned().unwrap_or_default()
}

fn find<'a>(list: &'a [Value], id: &str) -> Option<&'a Value> {
    list.iter().find(|i| i["instanceId"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_active_record_with_a_huge_epoch_is_not_shown_as_leader() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let _leader = conn
        .service(SERVICE, "1.0.0")
        .instance_id("order-1")
        .single_active("default")
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .expect("start the real leader");
    eventually(Duration::from_secs(10), "order-1 shown ACTIVE", || async {
        let list = instances(&h).await;
        find(&list, "order-1").is_some_and(|i| i["status"] == "ACTIVE")
    })
    .await;
    let list = instances(&h).await;
    let real_epoch = find(&list, "order-1").unwrap()["epoch"].as_u64().unwrap();

    // Anyone who can write the registry bucket claims the lead.
    let raw = async_nats::connect(h.nats.url()).await.unwrap();
    let mut forged = ServiceInstance::new(SERVICE, "order-forged", "1.0.0", chrono::Utc::now());
    forged.status = InstanceStatus::Active;
    forged.sticky_active_group = Some("default".into());
    forged.epoch = Some(1_000_000);
    async_nats::jetstream::new(raw)
        .get_key_value("service_registry")
        .await
        .unwrap()
        .put(
            format!("service-instances.{SERVICE}.order-forged"),
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "the forged record listed",
        || async { find(&instances(&h).await, "order-forged").is_some() },
    )
    .await;

    // Watched for a while: the forger is never ACTIVE, the real leader
    // always is, with the key's epoch; the summary counts one ACTIVE.
    let watched = Instant::now();
    while watched.elapsed() < Duration::from_secs(2) {
        let list = instances(&h).await;
        let f = find(&list, "order-forged").expect("the forged record stays listed");
        assert_ne!(f["status"], "ACTIVE", "the forger shown as leader: {f}");
        assert_eq!(f["reportedStatus"], "ACTIVE", "{f}");
        let leader = find(&list, "order-1").unwrap();
        assert_eq!(leader["status"], "ACTIVE", "{leader}");
        assert_eq!(leader["epoch"].as_u64(), Some(real_epoch), "{leader}");
        let active: Vec<_> = list.iter().filter(|i| i["status"] == "ACTIVE").collect();
        assert_eq!(active.len(), 1, "{list:#?}");
        let status = h.get("/status", None).await;
        assert_eq!(status.body["instances"]["active"], 1, "{}", status.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let list = instances(&h).await;
    assert_eq!(
        find(&list, "order-forged").unwrap()["statusReason"],
        "deposed",
        "a record claiming a lead the key does not give is shown as deposed"
    );
}

/// The epochs the monitor trusts start over with the elections bucket: a
/// `service_elections` deleted and created again (an operator's reset, a
/// cluster rebuilt) numbers its revisions from 1, so the next leader's
/// epoch is far below the last one the monitor saw. That leader must be
/// shown as the leader, with its own epoch, not held back as older than a
/// key that no longer exists.
///
/// How soon: a deleted stream tells its consumers nothing. The monitor's
/// watch of the bucket asks whether its consumer still exists as soon as a
/// heartbeat is late, about 1.25 s after the last one (measured: the new
/// leader shown 1.24-1.25 s after its election). Until then the new leader
/// is listed UNHEALTHY, "deposed". Without the question the watch noticed
/// only after three silent seconds (3.0 s, every run); the bound says the
/// question was asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_of_a_recreated_elections_bucket_is_shown_with_its_new_epoch() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    // Many writes first, so the first leader's epoch is high.
    let js = async_nats::jetstream::new(async_nats::connect(h.nats.url()).await.unwrap());
    let store = aegis_sdk::election::ensure_election_bucket(&js, 1)
        .await
        .unwrap();
    for n in 0..200u32 {
        store.put("filler", n.to_string().into()).await.unwrap();
    }
    let first = common::ping_service(&conn, SERVICE, "order-1", Some("default")).await;
    eventually(Duration::from_secs(10), "order-1 shown ACTIVE", || async {
        let list = instances(&h).await;
        find(&list, "order-1").is_some_and(|i| i["status"] == "ACTIVE")
    })
    .await;
    let old_epoch = find(&instances(&h).await, "order-1").unwrap()["epoch"]
        .as_u64()
        .expect("the leader shows its epoch");
    assert!(old_epoch > 200, "{old_epoch}");
    first.shutdown().await.expect("graceful stop");

    // The bucket starts over; the next leader's epoch is small.
    js.delete_stream("KV_service_elections").await.unwrap();
    let second = common::ping_service(&conn, SERVICE, "order-2", Some("default")).await;
    let new_epoch =
        aegis_testkit::wait::until_some(Duration::from_secs(10), "order-2 leads", || async {
            second.election().unwrap().leadership().serving_epoch()
        })
        .await;
    let elected = Instant::now();
    assert!(new_epoch < old_epoch, "{new_epoch} < {old_epoch}");
    eventually(
        Duration::from_secs(10),
        "order-2 shown ACTIVE at its new epoch",
        || async {
            let list = instances(&h).await;
            find(&list, "order-2")
                .is_some_and(|i| i["status"] == "ACTIVE" && i["epoch"].as_u64() == Some(new_epoch))
        },
    )
    .await;
    let shown = elected.elapsed();
    println!(
        "order-2 shown ACTIVE at epoch {new_epoch} (was {old_epoch}) {shown:?} after its election"
    );
    assert!(
        shown < Duration::from_millis(2800),
        "shown after {shown:?}: the watch waited for its silence limit (3 s)"
    );
    let list = instances(&h).await;
    let active: Vec<_> = list.iter().filter(|i| i["status"] == "ACTIVE").collect();
    assert_eq!(active.len(), 1, "{list:#?}");
    second.shutdown().await.expect("graceful stop");
}
