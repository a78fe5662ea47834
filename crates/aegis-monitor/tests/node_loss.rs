//! A NATS node dies and the view hides nothing: on a 3-node cluster (R3
//! buckets) with seven live instances, the node that leads the registry's
//! stream is SIGKILLed; its followers wait 4–9 s before they elect a new
//! leader, and no registry write lands meanwhile. Every poll of the API for
//! 30 s must still list all seven.

mod common;

use std::time::{Duration, Instant};

use aegis_monitor::{AppState, router};
use aegis_sdk::{AegisConfig, Connection, rpc::Service};
use aegis_testkit::NatsCluster;
use common::{VIEWER, call_app, req};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

async fn connect(urls: &[String]) -> Connection {
    let mut config = AegisConfig::with_servers(urls.join(","));
    config.nats.replicas = 3;
    config.nats.request_timeout = Duration::from_secs(3);
    Connection::connect(config)
        .await
        .expect("connect to the cluster")
}

/// The server name (`n1`..`n3`) leading `stream`.
async fn stream_leader(conn: &Connection, stream: &str) -> String {
    let mut s = conn.jetstream().get_stream(stream).await.unwrap();
    s.info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_registry_streams_leader_hides_no_live_instance() {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    let urls = cluster.urls();
    let mut config = common::config(&cluster.url());
    config.nats.nats.replicas = 3;
    let state = AppState::start(config, CancellationToken::new())
        .await
        .expect("start the monitor");
    let app = router(state.clone());

    // Seven instances, each on its own connection (its own node, at random).
    let mut services: Vec<(Connection, Service)> = Vec::new();
    for (name, count) in [
        ("order-service", 3),
        ("pricing-service", 2),
        ("risk-service", 2),
    ] {
        for i in 1..=count {
            let conn = connect(&urls).await;
            let svc = conn
                .service(name, "1.0.0")
                .instance_id(format!("{name}-{i}"))
                .handler(
                    "ping",
                    |_: Value| async move { Ok(serde_json::json!("pong")) },
                )
                .start()
                .await
                .expect("service starts");
            services.push((conn, svc));
        }
    }
    let listed = || async {
        let r = call_app(
            &app,
            req(
                axum::http::Method::GET,
                "/api/instances",
                Some(VIEWER),
                None,
            ),
        )
        .await;
        r.body.as_array().map(Vec::len).unwrap_or(0)
    };
    common::eventually(
        Duration::from_secs(20),
        "seven instances listed",
        || async { listed().await == 7 },
    )
    .await;

    let leader = kill_stream_leader(&mut cluster, &services[0].0, "KV_service_registry").await;
    let killed = Instant::now();
    let mut polls = 0;
    let mut fewest = 7;
    while killed.elapsed() < Duration::from_secs(30) {
        let n = listed().await;
        polls += 1;
        fewest = fewest.min(n);
        assert_eq!(
            n,
            7,
            "only {n} of 7 instances listed {:?} after killing {leader}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let new_leader = stream_leader(&services[0].0, "KV_service_registry").await;
    eprintln!(
        "{polls} polls over 30 s, never fewer than {fewest}; new registry leader {new_leader}"
    );
    for (conn, svc) in services {
        let _ = svc.shutdown().await;
        let _ = conn.drain().await;
    }
}

/// SIGKILLs the node that leads `stream`; its name.
async fn kill_stream_leader(cluster: &mut NatsCluster, conn: &Connection, stream: &str) -> String {
    let leader = stream_leader(conn, stream).await;
    let index = cluster
        .nodes()
        .iter()
        .position(|n| n.server_name() == leader)
        .unwrap();
    eprintln!("killing {leader}, leader of {stream}");
    cluster.kill_node(index);
    leader
}

/// Moves `stream`'s leadership off server `name` (a step-down request to
/// the stream's leader), and waits until another node leads it.
async fn lead_elsewhere(conn: &Connection, stream: &str, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while stream_leader(conn, stream).await == name {
        assert!(Instant::now() < deadline, "{stream} stays on {name}");
        let _ = conn
            .client()
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                "".into(),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// `/ready` is what probes and load balancers ask: while a bucket's stream
/// elects a new leader after a node died, the monitor still serves its
/// views, so it must stay ready, and answer at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_monitor_stays_ready_and_answers_at_once_while_a_buckets_stream_has_no_leader() {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    let urls = cluster.urls();
    // The monitor on n1 only: it keeps its connection; only the stream
    // loses its leader.
    let mut config = common::config(&urls[0]);
    config.nats.nats.replicas = 3;
    let state = AppState::start(config, CancellationToken::new())
        .await
        .expect("start the monitor");
    let app = router(state.clone());
    let ready = || async {
        let asked = Instant::now();
        let r = call_app(&app, req(axum::http::Method::GET, "/ready", None, None)).await;
        (r.status.as_u16(), asked.elapsed(), r.body)
    };
    common::eventually(Duration::from_secs(20), "ready", || async {
        ready().await.0 == 200
    })
    .await;

    let setup = connect(&urls).await;
    for stream in ["KV_service_registry", "KV_service_definitions"] {
        lead_elsewhere(&setup, stream, "n1").await;
    }
    let leader = kill_stream_leader(&mut cluster, &setup, "KV_service_registry").await;
    let killed = Instant::now();
    let mut slowest = Duration::ZERO;
    while killed.elapsed() < Duration::from_secs(15) {
        let (status, took, body) = ready().await;
        slowest = slowest.max(took);
        assert_eq!(
            status,
            200,
            "not ready {:?} after killing {leader}: {body}",
            killed.elapsed()
        );
        assert!(
            took <= Duration::from_millis(500),
            "/ready took {took:?}, {:?} after killing {leader}",
            killed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("ready at every poll for 15 s; slowest answer {slowest:?}");
}
