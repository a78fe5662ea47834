//! `aegis up` says the showcase is up only once each sticky group has a
//! leader of this run — the holder of its election key, written since the
//! run started — and its table shows that holder as the group's ACTIVE
//! instance: not a registry record, or an election key, that an earlier
//! run left behind (a leader that was killed, or forced to exit, resigns
//! nothing).

mod common;

use std::time::Duration;

use aegis_sdk::{
    contracts::{ServiceInstance, subjects},
    election::LeaderRecord,
};
use aegis_testkit::NatsServer;
use common::Proc;

/// An ACTIVE record of order-service's group `default` under `id`, as an
/// earlier run that did not stop cleanly leaves it (until its TTL).
async fn leave_active_record(js: &async_nats::jetstream::Context, id: &str) {
    let mut record = ServiceInstance::new("order-service", id, "1.0.0", chrono::Utc::now());
    record.sticky_active_group = Some("default".into());
    js.get_key_value(subjects::REGISTRY_BUCKET)
        .await
        .unwrap()
        .put(
            subjects::registry_key("order-service", id),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_left_by_an_earlier_run_is_not_taken_for_this_runs() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (ok, out) = common::run(&["init", "--nats-url", &url]);
    assert!(ok, "{out}");

    // What an earlier run whose leader, order-3, did not stop cleanly left:
    // its record, still saying ACTIVE, and the election key naming it.
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    leave_active_record(&js, "order-3").await;
    let elections = js.get_key_value(subjects::ELECTIONS_BUCKET).await.unwrap();
    let key = subjects::election_key("order-service", "default");
    let leftover = LeaderRecord {
        instance_id: "order-3".into(),
        epoch: 7,
        lease_ms: 3000,
        renewed_at: "2026-12-01T00:00:00Z".into(),
    };
    elections
        .put(&key, serde_json::to_vec(&leftover).unwrap().into())
        .await
        .unwrap();

    // This run has order-1 and order-2 only.
    let state = tempfile::tempdir().unwrap();
    let mut up = Proc::up_attached(
        &url,
        "order=2,pricing=0,risk=0",
        state.path(),
        Duration::from_secs(120),
    );
    let out = up.output();
    let active: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|cols| cols.first() == Some(&"order-service") && cols.get(2) == Some(&"ACTIVE"))
        .map(|cols| cols[1])
        .collect();
    assert_eq!(active.len(), 1, "one ACTIVE order instance:\n{out}");
    assert!(
        ["order-1", "order-2"].contains(&active[0]),
        "the ACTIVE one is of this run:\n{out}"
    );
    let holder: LeaderRecord =
        serde_json::from_slice(&elections.get(&key).await.unwrap().expect("a leader")).unwrap();
    assert_eq!(holder.instance_id, active[0], "{out}");
    up.terminate_within(Duration::from_secs(30));
}

/// A record an earlier run left, of a sticky service this run does not
/// start (`--instances order=0`), names a group nobody here will lead: the
/// showcase is up without waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_a_service_not_started_is_not_waited_for() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (ok, out) = common::run(&["init", "--nats-url", &url]);
    assert!(ok, "{out}");
    let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
    leave_active_record(&js, "order-3").await;
    let state = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let mut up = Proc::up_attached(
        &url,
        "order=0,pricing=1,risk=0",
        state.path(),
        Duration::from_secs(50),
    );
    assert!(!up.output().contains("no leader for"), "{}", up.output());
    eprintln!("up after {:?}", started.elapsed());
    up.terminate_within(Duration::from_secs(30));
}
