//! A caller already running when the NATS node it is connected to dies,
//! while that node leads the meta group: the caller reconnects to another
//! node at once, but its election watch cannot open again until the meta
//! group has a new leader (4-9 s). A sticky group's leader, on another
//! node, stops meanwhile, and its standby takes over as soon as the lease
//! lapses: the elections stream, led elsewhere, takes the write. The
//! caller must route to the new leader within a second of its election,
//! from the bucket's replicas, not only once its watch opens; a registry
//! reader must list an instance registered in that window as soon.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    Connection,
    election::Role,
    rpc::{CallOptions, Service, WireError},
};
use aegis_testkit::leaders::lead_elsewhere;
use common::{connect_cluster, eventually};
use serde_json::{Value, json};

async fn sticky(urls: &[String], id: &str) -> (Connection, Option<Service>) {
    let conn = connect_cluster(urls.to_vec(), 3).await;
    let svc = conn
        .service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler("place", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    (conn, Some(svc))
}

fn leads(svc: &Option<Service>) -> bool {
    svc.as_ref()
        .and_then(Service::election)
        .is_some_and(|e| matches!(e.role(), Role::Leader { .. }))
}

/// Waits until the election whose roles these are leads (30 s at most).
async fn takes_over(roles: &mut tokio::sync::watch::Receiver<Role>) {
    tokio::time::timeout(
        Duration::from_secs(30),
        roles.wait_for(|r| matches!(r, Role::Leader { .. })),
    )
    .await
    .expect("the standby takes over within 30 s")
    .expect("its election runs");
}

/// A 3-node cluster with both buckets, the node leading its meta group
/// (the one a test kills) and `stream` led by another; that node's index
/// and the URLs of the others.
async fn doom_the_meta_leader(stream: &str) -> (aegis_testkit::NatsCluster, usize, Vec<String>) {
    let (cluster, setup) = common::cluster_with_buckets().await;
    let doomed = cluster
        .meta_leader()
        .expect("the cluster has a meta leader");
    let name = cluster.node(doomed).server_name().to_owned();
    lead_elsewhere(setup.client(), stream, &name).await;
    let survivors = cluster.urls_except(doomed);
    (cluster, doomed, survivors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_caller_follows_a_takeover_while_its_watch_cannot_open() {
    // The elections stream keeps its leader: the takeover is written while
    // only the meta group elects one.
    let (mut cluster, doomed, survivors) = doom_the_meta_leader("KV_service_elections").await;
    let urls = cluster.urls();
    let mut services = [
        sticky(&survivors[..1], "order-1").await,
        sticky(&survivors[1..], "order-2").await,
    ];
    eventually(Duration::from_secs(10), "one leader", || async {
        services.iter().filter(|(_, s)| leads(s)).count() == 1
    })
    .await;
    let leader = services.iter().position(|(_, s)| leads(s)).unwrap();
    let standby = 1 - leader;
    let standby_id = format!("order-{}", standby + 1);

    // The caller, given the doomed node only (the server tells it the
    // others), its election view loaded by a first call.
    let caller = connect_cluster(vec![urls[doomed].clone()], 3).await;
    let opts = CallOptions::timeout(Duration::from_secs(10));
    let (rpc, body) = (caller.rpc(), json!({"n": 1}));
    let place = || rpc.call_active::<_, Value>("order-service", "default", "place", &body, &opts);
    place().await.expect("served before the kill");

    assert_eq!(cluster.meta_leader(), Some(doomed), "the meta leader moved");
    let mut roles = services[standby]
        .1
        .as_ref()
        .unwrap()
        .election()
        .unwrap()
        .roles();
    cluster.kill_node(doomed);
    let killed = Instant::now();
    drop(services[leader].1.take());
    takes_over(&mut roles).await;
    let elected = Instant::now();
    let reply = place().await.expect("the new leader serves the call");
    let took = elected.elapsed();
    eprintln!(
        "{standby_id} elected {:?} after the kill; the caller was served by {:?} {took:?} after the election",
        elected - killed,
        reply.instance_id
    );
    assert_eq!(reply.instance_id.as_deref(), Some(standby_id.as_str()));
    assert!(
        took <= Duration::from_secs(1),
        "served {took:?} after the election"
    );
}

/// The same loss, seen by a running registry reader: an instance that
/// registers while the reader's watch cannot open (the registry's stream,
/// led elsewhere, takes its record) must be listed within a second of its
/// registration, from the bucket's replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_running_reader_lists_an_instance_registered_while_its_watch_cannot_open() {
    let (mut cluster, doomed, survivors) = doom_the_meta_leader("KV_service_registry").await;
    let urls = cluster.urls();
    let services = connect_cluster(survivors, 3).await;
    let _first = common::echo_service(&services, "pricing-service", "pricing-1").await;

    let reader_conn = connect_cluster(vec![urls[doomed].clone()], 3).await;
    let reader = aegis_sdk::RegistryReader::start(&reader_conn)
        .await
        .unwrap();
    let listed = |id: &str| {
        reader
            .by_service("pricing-service")
            .iter()
            .any(|i| i.instance_id == id)
    };
    eventually(Duration::from_secs(10), "pricing-1 listed", || async {
        listed("pricing-1")
    })
    .await;

    assert_eq!(cluster.meta_leader(), Some(doomed), "the meta leader moved");
    cluster.kill_node(doomed);
    let killed = Instant::now();
    eventually(
        Duration::from_secs(10),
        "the reader's watch broken",
        || async { reader.staleness().is_some() },
    )
    .await;
    // The registry's stream takes the record at once (its leader lives).
    let _second = common::echo_service(&services, "pricing-service", "pricing-2").await;
    let registered = Instant::now();
    while !listed("pricing-2") {
        assert!(
            registered.elapsed() < Duration::from_secs(30),
            "pricing-2 never listed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let took = registered.elapsed();
    eprintln!(
        "pricing-2 registered {:?} after the kill, listed {took:?} after that",
        registered - killed
    );
    assert!(
        took <= Duration::from_secs(1),
        "listed {took:?} after its registration"
    );
}

/// The standby itself on the node that dies, which leads the meta group;
/// the leader, on another node, dies as well. The elections stream, led
/// elsewhere, takes writes throughout: the standby, reconnected to
/// another node, must take over once the lease lapses, without waiting
/// for its watch, which cannot open again until the meta group has a new
/// leader (4-9 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_while_its_watch_cannot_open() {
    let (mut cluster, doomed, survivors) = doom_the_meta_leader("KV_service_elections").await;
    let urls = cluster.urls();
    let mut leader = sticky(&survivors[..1], "order-1").await;
    eventually(Duration::from_secs(10), "order-1 leads", || async {
        leads(&leader.1)
    })
    .await;
    let standby = sticky(&[urls[doomed].clone()], "order-2").await;
    let mut roles = standby.1.as_ref().unwrap().election().unwrap().roles();
    eventually(Duration::from_secs(10), "order-2 follows order-1", || {
        let role = roles.borrow_and_update().clone();
        async move {
            role == Role::Standby {
                leader: Some("order-1".into()),
            }
        }
    })
    .await;

    assert_eq!(cluster.meta_leader(), Some(doomed), "the meta leader moved");
    cluster.kill_node(doomed);
    let killed = Instant::now();
    drop(leader.1.take());
    takes_over(&mut roles).await;
    let took = killed.elapsed();
    eprintln!("order-2 took over {took:?} after the kill (lease 400 ms)");
    assert!(took <= Duration::from_secs(3), "took over after {took:?}");
}
