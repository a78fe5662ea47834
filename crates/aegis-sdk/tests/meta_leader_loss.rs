//! The NATS node leading the JetStream meta group dies. Until the cluster
//! elects another leader (its Raft election timeout: 4-9 s) JetStream
//! answers no account check and creates no consumer, so a process that
//! starts meanwhile can open neither its registry watch nor its election
//! watch. The buckets' streams still have their leaders and replicas, and
//! the services still answer: a new caller loads its views from the
//! replicas (one batched direct get each) and is served at once.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    Connection,
    rpc::{CallOptions, WireError},
};
use aegis_testkit::NatsCluster;
use common::{connect_cluster, echo_service, eventually};
use serde_json::{Value, json};

/// The name of the node leading `stream`, from the stream's info.
async fn stream_leader(conn: &Connection, stream: &str) -> Option<String> {
    let mut s = conn.jetstream().get_stream(stream).await.ok()?;
    s.info().await.ok()?.cluster.as_ref()?.leader.clone()
}

/// Makes a node other than `node` lead `stream`: this test is about the
/// meta group's election, not a stream's own.
async fn move_leader_off(conn: &Connection, stream: &str, node: &str) {
    if stream_leader(conn, stream).await.as_deref() == Some(node) {
        conn.client()
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                "".into(),
            )
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(15),
        "the stream led elsewhere",
        || async {
            stream_leader(conn, stream)
                .await
                .is_some_and(|leader| leader != node)
        },
    )
    .await;
}

/// How long after `since` JetStream's meta group answers the account check
/// again, asked every 250 ms (a request sent while it has no leader is
/// never answered, so each try is a new one).
async fn meta_answers_again(urls: Vec<String>, since: Instant) -> Duration {
    let client = async_nats::connect(urls).await.unwrap();
    loop {
        let asked = client.request("$JS.API.INFO", "".into());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), asked).await {
            return since.elapsed();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_caller_is_served_while_the_meta_leader_is_replaced() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let doomed = cluster
        .meta_leader()
        .expect("the cluster has a meta leader");
    let doomed_name = cluster.node(doomed).server_name().to_owned();
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != doomed)
        .map(|i| cluster.urls()[i].clone())
        .collect();

    // A plain and a sticky service, on the nodes that survive.
    let services = connect_cluster(survivors.clone(), 3).await;
    let _echo = echo_service(&services, "echo-service", "echo-1").await;
    let sticky = services
        .service("order-service", "1.0.0")
        .instance_id("order-1")
        .single_active("default")
        .handler("place", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "order-1 leads", || async {
        sticky
            .election()
            .is_some_and(|e| e.leadership().serving_epoch().is_some())
    })
    .await;
    for stream in ["KV_service_registry", "KV_service_elections"] {
        move_leader_off(&services, stream, &doomed_name).await;
    }
    assert_eq!(
        cluster.meta_leader(),
        Some(doomed),
        "the meta leader stayed put"
    );

    cluster.kill_node(doomed);
    let killed = Instant::now();
    let meta_back = tokio::spawn(meta_answers_again(survivors.clone(), killed));

    let caller = connect_cluster(survivors, 3).await;
    let echoed: Value = caller
        .rpc()
        .call("echo-service", "echo", &json!({"n": 1}))
        .await
        .expect("the plain service is found and served");
    assert_eq!(echoed, json!({"n": 1}));
    let placed = caller
        .rpc()
        .call_active::<_, Value>(
            "order-service",
            "default",
            "place",
            &json!({"n": 2}),
            &CallOptions::default(),
        )
        .await
        .expect("the sticky leader is found and served");
    assert_eq!(placed.value, json!({"n": 2}));
    let served = killed.elapsed();

    let meta = meta_back.await.unwrap();
    eprintln!(
        "served {served:?} after the kill; JetStream's meta group answered again after {meta:?}"
    );
    assert!(
        served < meta,
        "served {served:?} after the kill, but only after the meta group answered again ({meta:?})"
    );
}
