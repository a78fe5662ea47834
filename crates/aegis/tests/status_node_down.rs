//! A one-shot `aegis status` with the NATS system user, on a 3-node
//! cluster with one node down, against a real SDK instance and the record
//! of one that is gone: what it waits once the records are loaded is
//! capped at 3 s (docs/operations.md), a dead node included. The servers'
//! lists of their connections are awaited for up to a second, and a node
//! that is down never answers: that wait must not come on top of the wait
//! for the instances' beats.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::{
        ServiceInstance,
        subjects::{REGISTRY_BUCKET, registry_key},
    },
    registry::{METADATA_HEARTBEAT_MS, RegistrationOptions},
    rpc::{Service, WireError},
};
use aegis_testkit::NatsCluster;
use serde_json::{Value, json};

/// A live instance beating every second.
async fn instance(urls: Vec<String>) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(urls.join(",")))
        .await
        .unwrap();
    let svc = conn
        .service("beat-service", "1.0.0")
        .instance_id("beat-1")
        .registration(RegistrationOptions {
            heartbeat: Duration::from_secs(1),
            ttl: Duration::from_secs(10),
            ..Default::default()
        })
        .handler(
            "noop",
            |_: Value| async move { Ok::<_, WireError>(json!({})) },
        )
        .start()
        .await
        .unwrap();
    (svc, conn)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_shot_status_waits_at_most_3_s_with_a_node_down() {
    let mut cluster = NatsCluster::start(3).expect("start nats-server (run `make bootstrap`)");
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let url = cluster.url();
    let (ok, out) = tokio::task::spawn_blocking({
        let url = url.clone();
        move || common::run(&["init", "--replicas", "3", "--nats-url", &url])
    })
    .await
    .unwrap();
    assert!(ok, "{out}");
    let svc = instance(cluster.urls()).await;
    let (sys_user, sys_password) = cluster.node(0).system_credentials();
    let (sys_user, sys_password) = (sys_user.to_owned(), sys_password.to_owned());
    // A node that is not the meta leader, so JetStream's API stays up.
    let meta = cluster.meta_leader().expect("a meta leader");
    cluster.kill_node((meta + 1) % 3);

    // Every stream that had its leader on the dead node has a new one (a
    // status run while one is still electing fails: another matter).
    let js = svc.1.jetstream();
    let deadline = Instant::now() + Duration::from_secs(30);
    for name in [
        "KV_service_registry",
        "KV_service_elections",
        "KV_service_definitions",
        "AEGIS_METRICS",
        "AEGIS_LOG",
        "EVENTS",
    ] {
        loop {
            let led = match js.get_stream(name).await {
                Ok(mut stream) => stream
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.cluster.as_ref().and_then(|c| c.leader.clone()))
                    .is_some(),
                Err(_) => false,
            };
            if led {
                break;
            }
            assert!(Instant::now() < deadline, "{name} has no leader");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // A gone instance whose record announces 2 s beats: the one-shot
    // status listens the full 3 s (one and a half intervals) for it.
    let mut gone = ServiceInstance::new("beat-service", "beat-0", "1.0.0", chrono::Utc::now());
    gone.metadata
        .insert(METADATA_HEARTBEAT_MS.into(), 2000.into());
    let registry = svc
        .1
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();

    let mut best = Duration::MAX;
    for _ in 0..3 {
        gone.last_heartbeat = chrono::Utc::now();
        registry
            .put(
                registry_key("beat-service", "beat-0"),
                serde_json::to_vec(&gone).unwrap().into(),
            )
            .await
            .unwrap();
        let args = [
            "status",
            "--nats-url",
            &url,
            "--nats-system-user",
            &sys_user,
            "--nats-system-password",
            &sys_password,
        ]
        .map(str::to_owned);
        let started = Instant::now();
        let (ok, out) = tokio::task::spawn_blocking(move || common::run(&args))
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(ok, "{out}");
        assert!(out.contains("beat-1") && out.contains("beat-0"), "{out}");
        eprintln!("{took:?}:\n{out}");
        best = best.min(took);
    }
    // The 3 s of listening, and what starting, connecting and loading the
    // records take besides (the quickest of three runs, so a stream still
    // electing its leader after the kill does not count), with room for a
    // busy 2-core machine: it took 4.1 s at best before the wait and the
    // listing ran side by side.
    assert!(
        best < Duration::from_millis(3900),
        "a one-shot status took {best:?}"
    );
}
