//! The showcase's cluster routes authenticate: the three nodes `aegis up`
//! configures (`up::nats::write_configs`, with the credentials of
//! `up::credentials::ensure`) form their cluster, and a rogue nats-server
//! on the same machine that routes to them without the route password is
//! refused, so it neither reads nor writes the application account (the
//! red team's F2: such a server joined and read every subject). The
//! password is never in a node's log.

mod common;

use std::time::Duration;

use aegis_testkit::wait::eventually;
use common::showcase_cluster::{NatsChild, ShowcaseCluster};
use futures::StreamExt;

/// The number of routes a server's monitoring port reports.
async fn routes(monitor_port: u16) -> Option<u64> {
    let url = format!("http://127.0.0.1:{monitor_port}/routez");
    let body: serde_json::Value = reqwest::get(url).await.ok()?.json().await.ok()?;
    body["num_routes"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_the_route_password_cannot_join_the_cluster() {
    let state = tempfile::tempdir().unwrap();
    let cluster = ShowcaseCluster::start(state.path()).await;
    let (creds, nodes) = (&cluster.creds, &cluster.nodes);
    // The real nodes route to each other (each has the other two).
    for node in nodes {
        eventually(Duration::from_secs(15), "the showcase's routes", || async {
            routes(node.monitor_port).await.unwrap_or(0) >= 2
        })
        .await;
    }

    // The red team's rogue: its own accounts, the showcase's cluster name,
    // a route to n1, and no route credential.
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue_client = common::free_port();
    let rogue_cluster = common::free_port();
    let rogue_monitor = common::free_port();
    let rogue_conf = rogue_dir.path().join("rogue.conf");
    std::fs::write(
        &rogue_conf,
        format!(
            "server_name: rogue\nlisten: 127.0.0.1:{rogue_client}\nhttp: 127.0.0.1:{rogue_monitor}\n\
             accounts {{ AEGIS: {{ users: [ {{ user: \"evil\", password: \"evil\" }} ] }}, \
             SYS: {{ users: [ {{ user: \"rsys\", password: \"rsys\" }} ] }} }}\n\
             system_account: SYS\n\
             cluster {{ name: aegis-showcase, listen: 127.0.0.1:{rogue_cluster}, \
             routes: [nats://127.0.0.1:{}] }}\n",
            nodes[0].cluster_port
        ),
    )
    .unwrap();
    let rogue_log = rogue_dir.path().join("rogue.log");
    let _rogue = NatsChild::start(&rogue_conf, &rogue_log);
    eventually(
        Duration::from_secs(10),
        "the rogue server listens",
        || async { routes(rogue_monitor).await.is_some() },
    )
    .await;
    let evil = async_nats::ConnectOptions::with_user_and_password("evil".into(), "evil".into())
        .connect(format!("nats://127.0.0.1:{rogue_client}"))
        .await
        .expect("connect to the rogue server");
    let mut sniffed = evil.subscribe(">").await.unwrap();
    evil.flush().await.unwrap();

    // The operator publishes on the showcase while the rogue keeps
    // trying its route (it retries every second).
    let (user, password) = (
        "operator".to_owned(),
        creds.nats_password("operator").unwrap().to_owned(),
    );
    let operator = async_nats::ConnectOptions::with_user_and_password(user, password)
        .connect(nodes[0].url())
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < deadline {
        operator
            .publish("rpc.risk-service.get_limits", "{}".into())
            .await
            .unwrap();
        operator.flush().await.unwrap();
        if let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(250), sniffed.next()).await
        {
            panic!(
                "a server without the route password joined the cluster and read {:?}",
                msg.subject
            );
        }
    }
    assert_eq!(
        routes(rogue_monitor).await,
        Some(0),
        "the rogue has no route"
    );
    let n1 = reqwest::get(format!("http://127.0.0.1:{}/routez", nodes[0].monitor_port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!n1.contains("rogue"), "n1 routes to the rogue:\n{n1}");
    let rogue_said = std::fs::read_to_string(&rogue_log).unwrap_or_default();
    assert!(
        rogue_said.contains("Authorization") || rogue_said.contains("authorization"),
        "the rogue was refused by the server, not by chance:\n{rogue_said}"
    );

    // The route password is in the credentials file and the configs
    // (mode 0600), and in no log.
    let file = std::fs::read_to_string(state.path().join("credentials")).unwrap();
    let route_password = file
        .lines()
        .find_map(|l| l.strip_prefix("AEGIS_NATS_ROUTE_PASSWORD="))
        .expect("the credentials file keeps the route password");
    assert!(route_password.len() >= 32);
    for node in nodes {
        let log = std::fs::read_to_string(&node.log).unwrap();
        assert!(!log.contains(route_password), "{} logs it", node.name);
    }
}
