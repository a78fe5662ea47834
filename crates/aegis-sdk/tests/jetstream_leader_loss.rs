//! A NATS node that led some of JetStream dies, and a process starts
//! before the cluster has elected new leaders (its Raft election timeout:
//! 4-9 s):
//!
//! - it led the meta group: JetStream answers no account check and creates
//!   no consumer, so the new process can open neither its registry watch
//!   nor its election watch;
//! - it led the elections bucket's stream: nobody answers that bucket's
//!   lookup.
//!
//! Either way the buckets' replicas still answer reads, and the services
//! still answer calls: a new caller loads its views from the replicas (one
//! batched direct get each) and is served before the leaders are back.
//!
//! A service that stops while the registry's stream elects its leader
//! deletes its record once the stream takes writes again, within its
//! shutdown timeout.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    Connection,
    election::LeaseConfig,
    rpc::{CallOptions, WireError},
};
use aegis_testkit::NatsCluster;
use aegis_testkit::leaders::{lead_elsewhere, stream_leader};
use common::{connect_cluster, echo_service, eventually};
use serde_json::{Value, json};

/// A cluster, and the services the new caller calls ([`Fixture::start`]).
struct Fixture {
    cluster: NatsCluster,
    _services: Connection,
    _echo: aegis_sdk::rpc::Service,
    _sticky: aegis_sdk::rpc::Service,
}

impl Fixture {
    /// Starts a 3-node cluster and, on the nodes other than the one
    /// `doomed` picks (given the cluster), a plain service (`echo-service`)
    /// and a sticky one (`order-service`, leading). Returns the fixture,
    /// the doomed node and the URLs of the others.
    async fn start(
        prepare: impl AsyncFnOnce(&mut NatsCluster, &Connection) -> usize,
    ) -> (Fixture, usize, Vec<String>) {
        // Buckets made first, on all nodes, so `prepare` can place them.
        let (mut cluster, setup) = common::cluster_with_buckets().await;
        let doomed = prepare(&mut cluster, &setup).await;
        let survivors = cluster.urls_except(doomed);
        let services = connect_cluster(survivors.clone(), 3).await;
        let echo = echo_service(&services, "echo-service", "echo-1").await;
        let sticky = services
            .service("order-service", "1.0.0")
            .instance_id("order-1")
            .single_active("default")
            // It rides out the elections stream's election, as a leader
            // whose writes are fenced may (the order service's are).
            .lease(LeaseConfig::default().with_ride_out(Duration::from_secs(15)))
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
        let fixture = Fixture {
            cluster,
            _services: services,
            _echo: echo,
            _sticky: sticky,
        };
        (fixture, doomed, survivors)
    }
}

/// Connects a new caller to `urls` and has it call both services, each
/// call given 5 s; how long after `since` both were served.
async fn new_caller_served(urls: Vec<String>, since: Instant) -> Duration {
    let caller = connect_cluster(urls, 3).await;
    let opts = CallOptions::timeout(Duration::from_secs(5));
    let echoed: Value = caller
        .rpc()
        .call_with("echo-service", "echo", &json!({"n": 1}), &opts)
        .await
        .expect("the plain service is found and served")
        .value;
    assert_eq!(echoed, json!({"n": 1}));
    let placed = caller
        .rpc()
        .call_active::<_, Value>("order-service", "default", "place", &json!({"n": 2}), &opts)
        .await
        .expect("the sticky leader is found and served");
    assert_eq!(placed.value, json!({"n": 2}));
    since.elapsed()
}

/// How long after `since` JetStream answers `subject` again, asked every
/// 250 ms (a request sent while its group has no leader is never answered,
/// so each try is a new one).
async fn answers_again(urls: Vec<String>, subject: &'static str, since: Instant) -> Duration {
    let client = async_nats::connect(urls).await.unwrap();
    loop {
        let asked = client.request(subject, "".into());
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(250), asked).await {
            return since.elapsed();
        }
    }
}

/// Kills node `doomed`, has a new caller connected to `survivors` call
/// both services, and requires them served before JetStream answers
/// `subject` again (`what` names the group that lost its leader).
async fn served_before(
    cluster: &mut NatsCluster,
    doomed: usize,
    survivors: Vec<String>,
    subject: &'static str,
    what: &str,
) {
    cluster.kill_node(doomed);
    let killed = Instant::now();
    let back = tokio::spawn(answers_again(survivors.clone(), subject, killed));
    let served = new_caller_served(survivors, killed).await;
    let back = back.await.unwrap();
    eprintln!("served {served:?} after the kill; {what} answered again after {back:?}");
    assert!(
        served < back,
        "served {served:?} after the kill, but only after {what} answered again ({back:?})"
    );
}

/// Moves the leadership of `stream` off the node leading the JetStream
/// meta group; the index and name of the node that leads it then.
async fn leader_apart_from_meta(
    cluster: &NatsCluster,
    client: &async_nats::Client,
    stream: &str,
) -> (usize, String) {
    let meta = cluster
        .meta_leader()
        .expect("the cluster has a meta leader");
    let meta_name = cluster.node(meta).server_name().to_owned();
    lead_elsewhere(client, stream, &meta_name).await;
    let leader = stream_leader(client, stream)
        .await
        .unwrap_or_else(|| panic!("{stream} has a leader"));
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.server_name() == leader)
        .expect("the leader is a node of the cluster");
    (index, leader)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_caller_is_served_while_the_meta_leader_is_replaced() {
    let (mut fixture, doomed, survivors) = Fixture::start(async |cluster, setup| {
        let doomed = cluster
            .meta_leader()
            .expect("the cluster has a meta leader");
        let name = cluster.node(doomed).server_name().to_owned();
        // The streams' own elections are the other test's.
        for stream in ["KV_service_registry", "KV_service_elections"] {
            lead_elsewhere(setup.client(), stream, &name).await;
        }
        doomed
    })
    .await;
    let cluster = &mut fixture.cluster;
    assert_eq!(
        cluster.meta_leader(),
        Some(doomed),
        "the meta leader stayed put"
    );
    served_before(cluster, doomed, survivors, "$JS.API.INFO", "the meta group").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_caller_is_served_while_the_elections_stream_elects_its_leader() {
    let (mut fixture, doomed, survivors) = Fixture::start(async |cluster, setup| {
        // A node that leads the elections stream but not the meta group
        // (that is the other test) nor the registry stream.
        let (doomed, leader) =
            leader_apart_from_meta(cluster, setup.client(), "KV_service_elections").await;
        lead_elsewhere(setup.client(), "KV_service_registry", &leader).await;
        doomed
    })
    .await;
    let cluster = &mut fixture.cluster;
    assert_ne!(
        cluster.meta_leader(),
        Some(doomed),
        "the meta leader stayed put"
    );

    served_before(
        cluster,
        doomed,
        survivors,
        "$JS.API.STREAM.INFO.KV_service_elections",
        "the elections stream",
    )
    .await;
}

/// The node that leads the registry's stream (not the meta group) dies, and
/// a service on the other nodes stops at once: no server takes its
/// deregistration until the stream has a new leader (4-9 s). The stop must
/// wait for it, within the shutdown timeout, and delete the record; it
/// failed at once ("no stream found for given subject"), and the record
/// stayed, listed UNHEALTHY, until its TTL ran out.
#[tokio::test(flavor = "multi_thread")]
async fn a_service_stopped_while_the_registry_stream_elects_its_leader_deregisters() {
    const KEY: &str = "service-instances.echo-service.echo-1";
    let (mut cluster, setup) = common::cluster_with_buckets().await;
    let (doomed, _) = leader_apart_from_meta(&cluster, setup.client(), "KV_service_registry").await;
    let services = connect_cluster(cluster.urls_except(doomed), 3).await;
    let echo = services
        .service("echo-service", "1.0.0")
        .instance_id("echo-1")
        // Room for the longest election (9 s) and the stop's other steps.
        .shutdown_timeout(Duration::from_secs(14))
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .expect("start the echo service");
    let registry = services
        .jetstream()
        .get_key_value("service_registry")
        .await
        .expect("the registry bucket");
    assert!(registry.get(KEY).await.unwrap().is_some(), "registered");

    cluster.kill_node(doomed);
    let killed = Instant::now();
    let stopped = echo.shutdown().await;
    let took = killed.elapsed();
    eprintln!("the stop returned {stopped:?} {took:?} after the kill");
    stopped.expect("the stop deregisters once the stream takes writes");
    assert_eq!(
        registry.get(KEY).await.expect("read the record"),
        None,
        "the record is deleted"
    );
}

/// A command is queued while the `COMMANDS` stream changes its leader (a
/// NATS node restarted in lame duck mode steps it down): for some
/// milliseconds nobody takes writes for the stream. The send must queue
/// it, not fail ("the command not being queued") and leave the caller to
/// send it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_command_sent_while_its_stream_changes_leader_is_queued() {
    let (_cluster, setup) = common::cluster_with_buckets().await;
    aegis_sdk::commands::ensure_commands_stream(setup.jetstream(), setup.config())
        .await
        .expect("the commands stream");
    for round in 0..3 {
        aegis_testkit::leaders::step_down(setup.client(), "COMMANDS").await;
        let asked = Instant::now();
        let sent = setup
            .commands()
            .send(
                "order-service",
                "rebuild_book",
                &json!({ "round": round }),
                Duration::from_secs(10),
            )
            .await;
        eprintln!(
            "round {round}: queued {:?} after {:?}",
            sent.as_ref().map(|h| h.id().to_owned()),
            asked.elapsed()
        );
        sent.expect("the command is queued");
    }
}
