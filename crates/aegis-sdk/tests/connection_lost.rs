//! A call whose own NATS connection drops while it waits for the reply:
//! the reply can never come (NATS delivers it only to the connection that
//! asked), so the call ends at once instead of at its deadline — an
//! idempotent call is sent again once reconnected and answered; any other
//! returns `ConnectionLost` (it may have run).

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection,
    rpc::{CallOptions, RpcError, Service},
};
use aegis_testkit::NatsCluster;
use common::connect_cluster;
use serde_json::{Value, json};

/// A 3-node cluster, a service on node 2 whose first call never answers,
/// a count of the calls its handler took, and a caller that knows only
/// node 1 (it learns the others from it).
async fn setup() -> (
    NatsCluster,
    Connection,
    Service,
    Arc<AtomicUsize>,
    Connection,
) {
    // The SDK's log, shown when a test fails: one run in many once timed
    // out instead of sending its call again, and said nothing more.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("aegis_sdk=debug"))
        .with_test_writer()
        .try_init();
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let urls = cluster.urls();
    let server = connect_cluster(vec![urls[1].clone()], 3).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let taken = calls.clone();
    let service = server
        .service("slow-service", "1.0.0")
        .instance_id("slow-1")
        .handler("work", move |_: Value| {
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    std::future::pending::<()>().await;
                }
                Ok(json!("done"))
            }
        })
        .start()
        .await
        .unwrap();
    let mut config = AegisConfig::with_servers(&urls[0]);
    config.nats.replicas = 3;
    config.nats.request_timeout = Duration::from_secs(30);
    let caller = Connection::connect(config).await.unwrap();
    (cluster, server, service, taken, caller)
}

/// Sends `work` with `opts`, kills node 1 (the caller's) once the handler
/// holds the call, and returns the outcome and how long after the kill it
/// came.
async fn call_across_the_drop(opts: CallOptions) -> (Result<Value, RpcError>, Duration) {
    let (mut cluster, server, service, taken, caller) = setup().await;
    // Routed once first, so the call below goes straight out.
    common::eventually(
        Duration::from_secs(10),
        "the caller sees the instance",
        || {
            let d = caller.discovery();
            async move {
                d.instances("slow-service")
                    .await
                    .is_ok_and(|i| !i.is_empty())
            }
        },
    )
    .await;
    let rpc = caller.rpc();
    let call = tokio::spawn(async move {
        rpc.call_with::<_, Value>("slow-service", "work", &json!({}), &opts)
            .await
            .map(|r| r.value)
    });
    // The drop must come while the call waits for its reply: were it sent
    // only after the reconnect, it would be the first the handler takes,
    // the one that never answers.
    common::eventually(
        aegis_testkit::wait::PATIENCE,
        "the handler took the call",
        || async { taken.load(Ordering::SeqCst) >= 1 },
    )
    .await;
    let killed = Instant::now();
    cluster.kill_node(0);
    let outcome = call.await.unwrap();
    let after = killed.elapsed();
    let _ = service.shutdown().await;
    drop(server);
    (outcome, after)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_is_sent_again_once_reconnected() {
    let opts = CallOptions {
        attempt_timeout: Some(Duration::from_secs(20)),
        ..CallOptions::timeout(Duration::from_secs(30)).idempotent()
    };
    let (outcome, after) = call_across_the_drop(opts).await;
    assert_eq!(outcome.unwrap(), json!("done"));
    assert!(
        after < Duration::from_secs(5),
        "answered {after:?} after the drop"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_other_call_says_at_once_that_its_connection_dropped() {
    let (outcome, after) =
        call_across_the_drop(CallOptions::timeout(Duration::from_secs(30))).await;
    assert!(
        matches!(outcome, Err(RpcError::ConnectionLost { .. })),
        "{outcome:?}"
    );
    assert!(
        after < Duration::from_secs(2),
        "ended {after:?} after the drop"
    );
}

/// An echo service on its own connection, and a caller (10 s request
/// timeout, twice the JetStream API's 5 s; one client, so its statistics
/// count every message the caller sends) that has not called yet.
async fn echo_and_caller(nats: &aegis_testkit::NatsServer) -> (Connection, Service, Connection) {
    let server = common::connect(&nats.url()).await;
    let service = common::echo_service(&server, "echo-service", "echo-1").await;
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.request_timeout = Duration::from_secs(10);
    config.nats.pool_size = 1;
    let caller = Connection::connect(config).await.unwrap();
    (server, service, caller)
}

/// Calls `service` while the server hangs (the call's JetStream requests
/// wait), then kills the server and starts it again on the same port and
/// store, so the caller's connection drops under those requests. Asserts
/// the call is answered, within 3 s of the server's return.
async fn answered_across_a_hang_and_restart(
    nats: &mut aegis_testkit::NatsServer,
    caller: &Connection,
    service: &'static str,
) {
    nats.pause();
    let sent = caller.client().statistics();
    let before = sent.out_messages.load(Ordering::Relaxed);
    let rpc = caller.rpc();
    let call =
        tokio::spawn(async move { rpc.call::<_, Value>(service, "echo", &json!("hi")).await });
    // The drop must come under the call's first request (to the frozen
    // server): were it sent only after the restart, it would be answered
    // at once and the test would show nothing.
    common::eventually(
        aegis_testkit::wait::PATIENCE,
        "the call's first request went out",
        || async { sent.out_messages.load(Ordering::Relaxed) > before },
    )
    .await;
    nats.kill();
    nats.restart().expect("restart nats-server");
    let back = Instant::now();
    let reply = call.await.unwrap();
    let after = back.elapsed();
    assert_eq!(reply.unwrap(), json!("hi"));
    assert!(
        after < Duration::from_secs(3),
        "answered {after:?} after the server came back"
    );
}

/// A process's first call opens its registry view (the bucket, then a
/// watch) with JetStream requests on its connection. When that connection
/// drops while they wait, their replies cannot come; the view must start
/// again on the new connection at once, not after the requests' 5 s
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_call_whose_registry_view_was_starting_when_the_connection_dropped() {
    let mut nats = common::server();
    let (_server, _service, caller) = echo_and_caller(&nats).await;
    answered_across_a_hang_and_restart(&mut nats, &caller, "echo-service").await;
}

/// The same for a view that is already running: a call to another service
/// widens the watch, which opens a new consumer while the connection drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_registry_watch_was_reopening_when_the_connection_dropped() {
    let mut nats = common::server();
    let (_server, _service, caller) = echo_and_caller(&nats).await;
    let other = common::connect(&nats.url()).await;
    let _other = common::echo_service(&other, "other-service", "other-1").await;
    caller
        .rpc()
        .call::<_, Value>("echo-service", "echo", &json!("first"))
        .await
        .unwrap();
    answered_across_a_hang_and_restart(&mut nats, &caller, "other-service").await;
}
