//! `aegis init` against a real 3-node cluster: creates every bucket and
//! stream with the replicas asked for, is a no-op the second time, refuses
//! existing ones with another replica count (naming the fix), and `--fix`
//! changes them in place.

mod common;

use std::time::Duration;

use aegis_testkit::NatsCluster;
use common::AEGIS;

/// Runs `aegis init` with `args`; its exit success and stdout.
fn init(url: &str, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(AEGIS)
        .arg("init")
        .args(["--nats-url", url])
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

/// The streams `aegis init` makes.
const STREAMS: [&str; 11] = [
    "KV_service_registry",
    "KV_service_elections",
    "KV_service_definitions",
    "KV_orders",
    "KV_risk_limits",
    "KV_risk_positions",
    "EVENTS",
    "COMMANDS",
    "DEAD_LETTER",
    "AEGIS_METRICS",
    "AEGIS_LOG",
];

fn replicas_of(cluster: &NatsCluster) -> Vec<(String, usize)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = async_nats::connect(cluster.urls()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            let mut out = Vec::new();
            for name in STREAMS {
                let mut stream = js.get_stream(name).await.unwrap();
                let info = stream.info().await.unwrap();
                out.push((name.to_owned(), info.config.num_replicas));
            }
            out
        })
}

#[test]
fn init_creates_checks_and_fixes_replicas() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let url = cluster.url();

    // A single-node habit on a cluster: everything at R1.
    let (ok, out) = init(&url, &["--replicas", "1"]);
    assert!(ok, "{out}");
    for name in STREAMS {
        assert!(
            out.contains(&format!("ok      {name} (created; 1 replica")),
            "{name}:\n{out}"
        );
    }

    // Asked for R3 now: refused, each mismatch named with the fix.
    let (ok, out) = init(&url, &["--replicas", "3"]);
    assert!(!ok, "{out}");
    for name in STREAMS {
        assert!(
            out.contains(&format!(
                "MISMATCH {name}: 1 replicas, asked for 3: run `aegis init --replicas 3 --fix`"
            )),
            "{name}:\n{out}"
        );
    }

    let (ok, out) = init(&url, &["--replicas", "3", "--fix"]);
    assert!(ok, "{out}");
    assert!(out.contains("fixed   EVENTS: 1 -> 3 replicas"), "{out}");
    assert!(
        replicas_of(&cluster).iter().all(|(_, r)| *r == 3),
        "{:?}",
        replicas_of(&cluster)
    );

    // A second run finds everything in place.
    let (ok, out) = init(&url, &["--replicas", "3"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("ok      KV_orders (exists; 3 replicas"),
        "{out}"
    );
    assert!(out.contains("every bucket and stream is in place"), "{out}");
}

#[test]
fn init_refuses_an_impossible_replica_count_before_connecting() {
    let (ok, out) = init("nats://127.0.0.1:1", &["--replicas", "7"]);
    assert!(!ok);
    assert!(out.contains("--replicas must be 1 to 5"), "{out}");
}

/// A cluster that loses its meta leader while `init` creates (here: two of
/// three nodes gone, one brought back after the first failure) makes the
/// JetStream requests time out; creating is tried again until it works,
/// within the start-up timeout. Before, the first timeout failed `init`
/// (seen in CI on a busy machine: "creating the elections bucket: timed
/// out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_waits_out_a_cluster_without_a_meta_leader() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let mut config = aegis_sdk::AegisConfig::with_servers(cluster.node(0).url());
    config.nats.request_timeout = Duration::from_secs(1);
    let conn = aegis_sdk::Connection::connect(config).await.unwrap();
    cluster.kill_node(1);
    cluster.kill_node(2);

    // Node 1 comes back once the first attempt has failed.
    let (failed_tx, failed_rx) = std::sync::mpsc::channel::<()>();
    let restarter = std::thread::spawn(move || {
        failed_rx.recv().unwrap();
        cluster.restart_node(1).unwrap();
        cluster
    });
    let mut failures = 0;
    aegis::init::create_missing_within(&conn, Duration::from_secs(60), |_| {
        failures += 1;
        failed_tx.send(()).ok();
    })
    .await
    .expect("created once the cluster has a meta leader again");
    assert!(failures > 0, "the first attempt should have timed out");
    let _cluster = restarter.join().unwrap();
    let js = conn.jetstream();
    for name in STREAMS {
        js.get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}
