//! Cluster tests: three real `nats-server` nodes, an R3 stream, and a node
//! that crashes and rejoins.

use std::time::{Duration, Instant};

use aegis_testkit::NatsCluster;
use async_nats::jetstream::{self, stream};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Publishes with retries: while a stream leader is re-elected the publish
/// may time out or find no responders.
async fn publish_eventually(
    js: &jetstream::Context,
    subject: &'static str,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let attempt = async { js.publish(subject, "x".into()).await?.await };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                eprintln!("publish retry ({subject}): {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Creates `config`'s stream, asking again for up to 30 s while the meta
/// leader refuses to place its replicas: a ready cluster's leader sees every
/// peer online, but may still wait for a peer's statistics, which no
/// monitoring endpoint shows.
async fn create_eventually(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match js.create_stream(config.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() < deadline && e.to_string().contains("no suitable peers") => {
                eprintln!("create retry ({}): {e}", config.name);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn r3_stream_survives_a_node_crash_and_the_node_rejoins() -> TestResult {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3)?;
    eprintln!("3-node cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.url().split(',').count(), 3);
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.server_name()).collect();
    assert_eq!(names, ["n1", "n2", "n3"]);

    // Connected to n2 and n3 only, so killing n1 never cuts this client off.
    let client = async_nats::connect(cluster.urls()[1..].to_vec()).await?;
    let js = jetstream::new(client);
    create_eventually(
        &js,
        stream::Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            num_replicas: 3,
            ..Default::default()
        },
    )
    .await?;
    publish_eventually(&js, "orders.before").await?;

    cluster.kill_node(0);
    assert!(!cluster.node_mut(0).is_running());
    for _ in 0..5 {
        publish_eventually(&js, "orders.during").await?;
    }

    let restarted = Instant::now();
    cluster.restart_node(0)?;
    eprintln!("n1 rejoined in {:?}", restarted.elapsed());
    assert!(cluster.node_mut(0).is_running());

    // n1 itself serves the stream again, with everything it missed.
    let direct = jetstream::new(async_nats::connect(cluster.node(0).url()).await?);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = direct.get_stream("ORDERS").await?.info().await?.clone();
        let peers_current = info
            .cluster
            .as_ref()
            .is_some_and(|c| c.replicas.iter().all(|r| r.current));
        if info.state.messages == 6 && peers_current {
            break;
        }
        assert!(Instant::now() < deadline, "stream not caught up: {info:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_ready(Duration::from_secs(10))?;
    Ok(())
}

#[test]
fn dropping_a_cluster_stops_every_node() -> TestResult {
    let cluster = NatsCluster::start(3)?;
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid()).collect();
    let stores: Vec<_> = cluster
        .nodes()
        .iter()
        .map(|n| n.store_dir().to_path_buf())
        .collect();
    assert_eq!(pids.len(), 3);
    drop(cluster);
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }
    for store in stores {
        assert!(!store.exists());
    }
    Ok(())
}

/// A node that cannot be asked (frozen: its monitoring port does not
/// answer) may still route to the dead node: the wait does not take its
/// silence for "no route".
#[test]
fn waiting_for_a_dead_node_unrouted_does_not_take_a_silent_node_for_a_yes() -> TestResult {
    let mut cluster = NatsCluster::start(3)?;
    cluster.wait_ready(Duration::from_secs(30))?;
    cluster.node_mut(1).pause();
    cluster.kill_node(2);
    let waited = cluster.wait_unrouted(2, Duration::from_secs(3));
    cluster.node_mut(1).resume();
    let err = waited.expect_err("a frozen node was counted as unrouted");
    assert!(err.to_string().contains("n2"), "{err}");
    // Once it answers again, it drops the route.
    cluster.wait_unrouted(2, Duration::from_secs(30))?;
    Ok(())
}
