//! A planned NATS node shutdown (lame duck mode, SIGUSR2): the server tells
//! its clients before it lets them go, and the SDK moves each connection to
//! another node at a moment with no request in flight on it — at once, not
//! when the server closes it after its grace period — so a service and its
//! callers on that node lose no call and no reply.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection,
    rpc::{CallOptions, RpcError},
};
use aegis_testkit::NatsCluster;
use serde_json::{Value, json};

/// Connects to node 1 only (the others are learnt from it), so the
/// connection starts there.
async fn connect_to_first(cluster: &NatsCluster) -> Connection {
    let mut config = AegisConfig::with_servers(&cluster.urls()[0]);
    config.nats.replicas = 3;
    config.nats.request_timeout = Duration::from_secs(2);
    Connection::connect(config)
        .await
        .expect("connect to node 1")
}

fn server_name(conn: &Connection) -> String {
    conn.client().server_info().server_name
}

#[tokio::test]
async fn connections_leave_a_lame_duck_node_at_once_and_no_call_fails() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let server = connect_to_first(&cluster).await;
    let caller = connect_to_first(&cluster).await;
    let first = cluster.node(0).server_name().to_owned();
    assert_eq!(server_name(&server), first);
    assert_eq!(server_name(&caller), first);

    let _service = server
        .service("ld-service", "1.0.0")
        .instance_id("ld-1")
        .handler("work", |n: Value| async move {
            // Long enough that a request is often in flight on the service.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(n)
        })
        .start()
        .await
        .unwrap();
    common::eventually(
        Duration::from_secs(10),
        "the caller reaches the service",
        || {
            let rpc = caller.rpc();
            async move {
                rpc.call::<_, Value>("ld-service", "work", &json!(0))
                    .await
                    .is_ok()
            }
        },
    )
    .await;

    // Four callers in a steady flow through the shutdown.
    let stop = Arc::new(AtomicBool::new(false));
    let mut flows = Vec::new();
    for _ in 0..4 {
        let (rpc, stop) = (caller.rpc(), stop.clone());
        flows.push(tokio::spawn(async move {
            let opts = CallOptions::default().idempotent();
            let mut outcomes: Vec<(Duration, Result<(), RpcError>)> = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let res = rpc
                    .call_with::<_, Value>("ld-service", "work", &json!(n), &opts)
                    .await
                    .map(|reply| assert_eq!(reply.value, json!(n)));
                outcomes.push((started.elapsed(), res));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            outcomes
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let signalled = Instant::now();
    cluster.node_mut(0).enter_lame_duck();
    // The server closes its clients only after its 10 s grace period: a
    // connection that left sooner moved by itself. The notice comes once
    // the server handed its stream leaderships over (about a second), and
    // a busy client waits up to 500 ms for a quiet moment.
    common::eventually(
        Duration::from_secs(6),
        "both connections leave the lame duck node",
        || {
            let moved = server_name(&server) != first && server_name(&caller) != first;
            async move { moved }
        },
    )
    .await;
    let moved_after = signalled.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);

    // The caller's registry view follows on after the move: a new instance
    // shows within a second (a watch left on the closed connection, or on a
    // consumer that lived on the stopping node, would wait out its 3 s
    // silence limit).
    let _second = server
        .service("ld-service", "1.0.0")
        .instance_id("ld-2")
        .handler("work", |n: Value| async move { Ok(n) })
        .start()
        .await
        .unwrap();
    let registered = Instant::now();
    common::eventually(
        Duration::from_secs(5),
        "the caller's view shows the new instance",
        || {
            let d = caller.discovery();
            async move {
                d.instances("ld-service")
                    .await
                    .is_ok_and(|i| i.iter().any(|i| i.instance_id == "ld-2"))
            }
        },
    )
    .await;
    let seen_after = registered.elapsed();

    let mut calls = 0;
    let mut slowest = Duration::ZERO;
    for flow in flows {
        for (took, res) in flow.await.unwrap() {
            calls += 1;
            slowest = slowest.max(took);
            if let Err(e) = res {
                panic!("a call failed across the lame duck move: {e}");
            }
        }
    }
    assert!(
        moved_after < Duration::from_secs(6),
        "moving took {moved_after:?}"
    );
    assert!(calls > 100, "only {calls} calls were made");
    assert!(
        slowest < Duration::from_secs(1),
        "the slowest of {calls} calls took {slowest:?}"
    );
    assert!(
        seen_after < Duration::from_secs(1),
        "the new instance was seen after {seen_after:?}"
    );
    eprintln!(
        "moved in {moved_after:?}; {calls} calls, the slowest {slowest:?}; new instance seen after {seen_after:?}"
    );
}

/// While the connection waits to leave a lame duck node (a slow call in
/// flight keeps it from moving at once), a short call waits for the move
/// no longer than its own timeout: it ends by its deadline, not a second
/// later.
#[tokio::test]
async fn a_short_call_waits_no_longer_than_its_timeout_for_a_move_off_a_lame_duck_node() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    // The service stays on node 2; the caller starts on node 1, with one
    // client, so that the slow call holds the one every call goes through.
    let mut config = AegisConfig::with_servers(&cluster.urls()[1]);
    config.nats.replicas = 3;
    let server = Connection::connect(config).await.unwrap();
    let mut config = AegisConfig::with_servers(&cluster.urls()[0]);
    config.nats.replicas = 3;
    config.nats.pool_size = 1;
    let caller = Connection::connect(config).await.unwrap();
    let first = cluster.node(0).server_name().to_owned();
    assert_eq!(server_name(&caller), first);

    let _service = server
        .service("ld-service", "1.0.0")
        .instance_id("ld-1")
        .handler("work", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(ms)
        })
        .start()
        .await
        .unwrap();
    let short = CallOptions::timeout(Duration::from_millis(50));
    common::eventually(
        Duration::from_secs(10),
        "the caller reaches the service",
        || {
            let rpc = caller.rpc();
            let short = short.clone();
            async move {
                rpc.call_with::<_, u64>("ld-service", "work", &0, &short)
                    .await
                    .is_ok()
            }
        },
    )
    .await;

    let slow = {
        let rpc = caller.rpc();
        tokio::spawn(async move {
            let opts = CallOptions::timeout(Duration::from_secs(10));
            rpc.call_with::<_, u64>("ld-service", "work", &5_000, &opts)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    cluster.node_mut(0).enter_lame_duck();

    // The notice comes about a second after the signal; the move waits up
    // to 500 ms for the slow call, then goes anyway.
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let started = Instant::now();
        let _ = caller
            .rpc()
            .call_with::<_, u64>("ld-service", "work", &0, &short)
            .await;
        slowest = slowest.max(started.elapsed());
        calls += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_ne!(server_name(&caller), first, "the caller never moved");
    assert!(
        slowest < Duration::from_millis(200),
        "the slowest of {calls} calls with a 50 ms timeout took {slowest:?}"
    );
    eprintln!("{calls} calls with a 50 ms timeout, the slowest {slowest:?}");
    slow.abort();
}
