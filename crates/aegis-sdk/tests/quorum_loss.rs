//! Two of a cluster's three NATS nodes die for longer than a registry
//! record's TTL: JetStream has no quorum, so no registry write lands, while
//! core NATS keeps working through the third node. When the two come back,
//! the registry's stream expires every record nobody could write at once,
//! up to a heartbeat (plus a write's timeout) before each instance writes
//! its record again. The instances served throughout: a caller on the
//! surviving node must be served throughout too, not told that the service
//! has no instances.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::rpc::{CallOptions, RpcError};
use common::connect_cluster;
use serde_json::{Value, json};

/// One call that failed: when, from the start of the loss, and why.
#[derive(Debug)]
struct Failure {
    at: Duration,
    phase: &'static str,
    error: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_is_served_through_a_lost_quorum_and_its_return() {
    // The registry view's log, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "aegis_sdk::registry=debug,aegis_sdk::kv_watch=debug,aegis_sdk::rpc=debug",
        ))
        .with_test_writer()
        .try_init();
    let (mut cluster, _setup) = common::cluster_with_buckets().await;
    let urls = cluster.urls();
    // Three instances, each on its own connection to every node: those on
    // a node that dies move to the survivor.
    let mut services = Vec::new();
    for i in 1..=3 {
        let conn = connect_cluster(urls.clone(), 3).await;
        let svc = conn
            .service("echo-service", "1.0.0")
            .instance_id(format!("echo-{i}"))
            // Default options: every instance's writes fail for longer than
            // `unready_after`, which must not take it out of discovery.
            .handler("echo", |v: Value| async move { Ok(v) })
            .start()
            .await
            .expect("start the echo service");
        services.push((conn, svc));
    }
    let caller = connect_cluster(vec![urls[0].clone()], 3).await;
    common::eventually(
        Duration::from_secs(10),
        "the caller sees three instances",
        || async {
            caller
                .discovery()
                .selectable("echo-service")
                .await
                .is_ok_and(|s| s.len() == 3)
        },
    )
    .await;

    // Idempotent: a request sent at the instant its instance's node dies
    // is lost with the node (an unknown outcome, TIMEOUT, whatever the
    // registry says); it is tried again on another instance. What this
    // test is about is the caller's view of the instances: a call must
    // never find none to send to.
    let opts = CallOptions::timeout(Duration::from_secs(1)).idempotent();
    let mut failures: Vec<Failure> = Vec::new();
    let mut calls = 0u32;
    let mut call = async |n: u32, at: Duration, phase: &'static str| {
        calls += 1;
        let result: Result<Value, RpcError> = caller
            .rpc()
            .call_with("echo-service", "echo", &json!({ "n": n }), &opts)
            .await
            .map(|r| r.value);
        match result {
            Ok(v) if v == json!({ "n": n }) => {}
            Ok(v) => failures.push(Failure {
                at,
                phase,
                error: format!("answered {v}"),
            }),
            Err(e) => failures.push(Failure {
                at,
                phase,
                error: format!("{e:?}"),
            }),
        }
    };

    eprintln!("killing nodes 1 and 2: no JetStream quorum");
    cluster.kill_node(1);
    cluster.kill_node(2);
    let lost = Instant::now();
    let mut n = 0;
    // Longer than a record's TTL (15 s by default).
    while lost.elapsed() < Duration::from_secs(17) {
        n += 1;
        call(n, lost.elapsed(), "lost").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    eprintln!("restarting nodes 1 and 2 after {:?}", lost.elapsed());
    // Restarted off the runtime, calls going on meanwhile: the expiries
    // can land before the restart returns.
    let restart = tokio::task::spawn_blocking(move || {
        cluster.restart_node(1).expect("restart node 1");
        cluster.restart_node(2).expect("restart node 2");
        cluster
    });
    let back = Instant::now();
    while back.elapsed() < Duration::from_secs(10) {
        n += 1;
        call(n, lost.elapsed(), "back").await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let selectable = caller
        .discovery()
        .selectable("echo-service")
        .await
        .map(|s| s.len());
    eprintln!(
        "{calls} calls over {:?}, {} failed; {selectable:?} selectable at the end",
        lost.elapsed(),
        failures.len()
    );
    for f in &failures {
        eprintln!("failed at {:?} ({}): {}", f.at, f.phase, f.error);
    }
    assert!(
        failures.is_empty(),
        "{} of {calls} calls failed (restart at {:?}), first: {:?}, last: {:?}",
        failures.len(),
        back.duration_since(lost),
        failures.first(),
        failures.last()
    );
    let _cluster = restart.await.expect("the restart");
    for (conn, svc) in services {
        let _ = svc.shutdown().await;
        let _ = conn.drain().await;
    }
}
