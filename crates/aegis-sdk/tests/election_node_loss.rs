//! The NATS node leading the elections stream dies while a sticky leader
//! and a standby run on the other two: the stream has no leader for the 4–9
//! s its followers wait before electing one, and no lease can be renewed or
//! taken meanwhile. Without ride-out nobody serves for that long (measured
//! 6.3 s); with it (for fenced services) the leader keeps serving, and two
//! never serve at once.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::election::{Election, LeaseConfig};
use aegis_testkit::NatsCluster;
use common::connect_cluster;

/// The index (0-based) of the node leading `stream`.
async fn leader_node(conn: &aegis_sdk::Connection, stream: &str) -> usize {
    let mut s = conn.jetstream().get_stream(stream).await.unwrap();
    let name = s
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    name.trim_start_matches('n').parse::<usize>().unwrap() - 1
}

/// A ready 3-node cluster with the elections bucket (R3), a connection to
/// all of it, and the SDK's log at `filter` (shown when a test fails).
async fn elections_cluster(filter: &str) -> (NatsCluster, aegis_sdk::Connection) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let setup = connect_cluster(cluster.urls(), 3).await;
    aegis_sdk::election::ensure_election_bucket(setup.jetstream(), 3)
        .await
        .unwrap();
    (cluster, setup)
}

/// `order-a` on `a`, leading once this returns, and `order-b` on `b`
/// after it, in `order-service`'s default group, following `order-a` once
/// this returns.
async fn leader_and_standby(
    a: &aegis_sdk::Connection,
    b: &aegis_sdk::Connection,
    lease: LeaseConfig,
) -> (Election, Election) {
    let first = Election::start(a, "order-service", "default", "order-a", lease)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.leadership().serving_epoch().is_none() {
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = Election::start(b, "order-service", "default", "order-b", lease)
        .await
        .unwrap();
    common::follows(&second, "order-a").await;
    (first, second)
}

/// How the node leading the elections stream goes.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// SIGKILL: its followers elect a new leader after 4-9 s.
    Kill,
    /// SIGTERM (a planned restart): it hands its leaderships over first.
    Graceful,
}

/// Runs a leader and a standby on the two nodes that survive, takes the
/// elections stream's leader node down `how`, and watches for 20 s: never
/// two serving, and the longest time nobody served.
async fn serving_gap(how: Loss, lease: LeaseConfig) -> Duration {
    let (mut cluster, setup) = elections_cluster("aegis_sdk::election=debug").await;
    let doomed = leader_node(&setup, "KV_service_elections").await;
    let others: Vec<usize> = (0..3).filter(|i| *i != doomed).collect();
    // Each candidate on its own surviving node, so no client loses its
    // connection: only the stream loses its leader.
    let a = connect_cluster(vec![cluster.urls()[others[0]].clone()], 3).await;
    let b = connect_cluster(vec![cluster.urls()[others[1]].clone()], 3).await;
    let (first, second) = leader_and_standby(&a, &b, lease).await;

    let killed = Instant::now();
    let stopper = match how {
        Loss::Kill => {
            cluster.kill_node(doomed);
            None
        }
        // `stop` waits for the process to exit: off the runtime's threads.
        Loss::Graceful => Some(std::thread::spawn(move || {
            cluster.node_mut(doomed).stop();
            cluster
        })),
    };
    let mut gap_start: Option<Instant> = None;
    let mut longest = Duration::ZERO;
    let mut served_by = Vec::new();
    while killed.elapsed() < Duration::from_secs(20) {
        let s1 = first.leadership().serving_epoch();
        let s2 = second.leadership().serving_epoch();
        assert!(
            s1.is_none() || s2.is_none(),
            "two serve at once: {s1:?} {s2:?}"
        );
        match (s1.or(s2), gap_start) {
            (None, None) => gap_start = Some(Instant::now()),
            (Some(_), Some(g)) => {
                longest = longest.max(g.elapsed());
                gap_start = None;
            }
            _ => {}
        }
        let who = if s1.is_some() {
            "a"
        } else if s2.is_some() {
            "b"
        } else {
            "-"
        };
        if served_by.last().map(|(w, _)| *w) != Some(who) {
            served_by.push((who, killed.elapsed()));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(g) = gap_start {
        longest = longest.max(g.elapsed());
    }
    if let Some(stopper) = stopper {
        drop(stopper.join().unwrap());
    }
    eprintln!(
        "{how:?}, ride-out {:?}: who served after the loss: {served_by:?}; longest gap {longest:?}",
        lease.ride_out
    );
    longest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fenced_leader_rides_out_the_loss_of_the_elections_streams_leader() {
    let lease = LeaseConfig::default().with_ride_out(Duration::from_secs(15));
    let gap = serving_gap(Loss::Kill, lease).await;
    assert!(gap <= Duration::from_secs(1), "nobody served for {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_planned_restart_of_the_elections_streams_leader_costs_under_a_second() {
    // Without ride-out: the stream's leadership is handed over on SIGTERM.
    let gap = serving_gap(Loss::Graceful, LeaseConfig::default()).await;
    assert!(gap <= Duration::from_secs(1), "nobody served for {gap:?}");
}

/// A sticky leader resigns (a graceful stop) just as the elections stream
/// changes its leader, as it does when a NATS node is restarted in lame
/// duck mode beside a rolling restart of the services: for some
/// milliseconds nobody takes writes for the stream. The resignation must
/// still delete the key, so the standby takes over within milliseconds,
/// not when the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resignation_during_a_leader_change_of_the_elections_stream_hands_over_at_once() {
    let (cluster, setup) = elections_cluster("aegis_sdk::election=info").await;
    let lease = LeaseConfig::default();
    let a = connect_cluster(cluster.urls(), 3).await;
    let (first, second) = leader_and_standby(&a, &a, lease).await;

    aegis_testkit::leaders::step_down(setup.client(), "KV_service_elections").await;
    let began = Instant::now();
    first.resign().await;
    // Measured from the resignation's end, when its delete has landed: how
    // long the stream took to take writes again (some milliseconds, a few
    // hundred on a loaded machine) is not the standby's to wait for.
    let resigned = Instant::now();
    while second.leadership().serving_epoch().is_none() {
        assert!(
            resigned.elapsed() < Duration::from_secs(30),
            "the standby never took over"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = resigned.elapsed();
    eprintln!(
        "the resignation took {:?}; the standby took over {took:?} after it",
        resigned - began
    );
    assert!(
        took < lease.lease / 2,
        "the standby took over only {took:?} after the resignation: it waited for the lease ({:?}) to lapse",
        lease.lease
    );
}

/// A process that starts while the elections stream has no leader (its
/// node just died; the meta leader lives, so it answers at once that the
/// name is taken) finds the bucket that exists, whatever replica count it
/// asks for (a tool's default 1 against the cluster's R3), once the
/// stream has elected a leader: it is not refused for "stream name
/// already in use with a different configuration".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_election_bucket_is_found_while_its_stream_elects_a_leader() {
    let (mut cluster, setup) = elections_cluster("aegis_sdk=debug").await;
    let stream = "KV_service_elections";
    let meta = cluster.meta_leader().expect("a meta leader");
    let doomed = (meta + 1) % 3;
    let name = cluster.nodes()[doomed].server_name().to_owned();
    aegis_testkit::leaders::lead_on(setup.client(), stream, &name).await;
    assert_eq!(leader_node(&setup, stream).await, doomed);
    cluster.kill_node(doomed);
    let fresh = connect_cluster(cluster.urls_except(doomed), 1).await;
    let asked = Instant::now();
    let store = aegis_sdk::election::ensure_election_bucket(fresh.jetstream(), 1)
        .await
        .expect("the bucket that exists is found");
    eprintln!("found after {:?}", asked.elapsed());
    assert_eq!(store.stream.cached_info().config.num_replicas, 3);
}
