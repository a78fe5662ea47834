//! `aegis init` against a real 3-node cluster: creates every bucket and
//! stream with the replicas asked for, is a no-op the second time, refuses
//! existing ones with another replica count (naming the fix), and `--fix`
//! changes them in place.

mod common;

use std::time::Duration;

use aegis_testkit::NatsCluster;

/// Runs `aegis init` with `args`; its exit success and stdout.
fn init(url: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["init", "--nats-url", url];
    all.extend_from_slice(args);
    common::run(&all)
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

/// A server that does not answer for a while (here: paused with SIGSTOP
/// until the first attempt has failed, as a busy or electing cluster
/// lets JetStream requests time out) does not fail the creation: it is
/// tried again within the start-up timeout. Before, the first timeout
/// failed `init` (seen in CI on a busy machine: "creating the elections
/// bucket: timed out").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_waits_out_a_server_that_does_not_answer() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let mut config = aegis_sdk::AegisConfig::with_servers(server.url());
    config.nats.request_timeout = Duration::from_millis(500);
    let conn = aegis_sdk::Connection::connect(config).await.unwrap();
    let pid = i32::try_from(server.pid().unwrap()).unwrap();
    common::signal(pid, nix::sys::signal::Signal::SIGSTOP);

    let mut failures = 0;
    let created = aegis::init::create_missing_within(&conn, Duration::from_secs(60), |_| {
        failures += 1;
        common::signal(pid, nix::sys::signal::Signal::SIGCONT);
    })
    .await;
    common::signal(pid, nix::sys::signal::Signal::SIGCONT);
    created.expect("created once the server answers again");
    assert!(failures > 0, "the first attempt should have timed out");
    let js = conn.jetstream();
    for name in STREAMS {
        js.get_stream(name)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Without `--replicas`, `init` takes what the NATS it reaches supports:
/// 3 on a JetStream cluster, 1 on a single node, and never less than the
/// existing buckets and streams have. Asked for fewer replicas than they
/// have, it does not advise lowering them without saying that this lowers
/// the fault tolerance, and names how to keep them.
#[test]
fn init_without_replicas_keeps_the_fault_tolerance_the_cluster_supports() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let url = cluster.url();

    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    for name in STREAMS {
        assert!(
            out.contains(&format!("ok      {name} (created; 3 replicas")),
            "{name}:\n{out}"
        );
    }
    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("every bucket and stream is in place"), "{out}");

    let (ok, out) = init(&url, &["--replicas", "1"]);
    assert!(!ok, "{out}");
    assert!(
        !out.contains("run `aegis init --replicas 1 --fix` to change it"),
        "{out}"
    );
    for name in STREAMS {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("MISMATCH {name}:")))
            .unwrap_or_else(|| panic!("{name}:\n{out}"));
        assert!(
            line.contains("`aegis init --replicas 3`")
                && line.contains("lower")
                && line.contains("fault tolerance"),
            "{line}"
        );
    }
    assert!(replicas_of(&cluster).iter().all(|(_, r)| *r == 3));

    // A single node: 1.
    let server = aegis_testkit::NatsServer::start().unwrap();
    let (ok, out) = init(&server.url(), &[]);
    assert!(ok, "{out}");
    assert!(out.contains("ok      EVENTS (created; 1 replica,"), "{out}");
}

/// Without `--replicas`, `init` counts the cluster's JetStream peers
/// instead of taking a cluster to have 3: on a 2-node cluster it creates
/// everything with 2 replicas (3 cannot be placed there), and checks them.
#[test]
fn init_without_replicas_uses_the_peers_a_two_node_cluster_has() {
    let mut cluster = NatsCluster::start(2).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let url = cluster.url();

    let (ok, out) = init(&url, &["--startup-timeout", "20s"]);
    assert!(ok, "{out}");
    assert!(out.contains("aegis init: 2 replicas"), "{out}");
    for name in STREAMS {
        assert!(
            out.contains(&format!("ok      {name} (created; 2 replicas")),
            "{name}:\n{out}"
        );
    }
    assert!(replicas_of(&cluster).iter().all(|(_, r)| *r == 2));
    // Nothing of the count's probe is left behind.
    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("every bucket and stream is in place"), "{out}");
    let streams = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use futures::TryStreamExt;
            let client = async_nats::connect(cluster.urls()).await.unwrap();
            let js = async_nats::jetstream::new(client);
            js.stream_names()
                .try_collect::<Vec<String>>()
                .await
                .unwrap()
        });
    assert_eq!(streams.len(), STREAMS.len(), "{streams:?}");
}

/// A bucket or stream that does not match is a mismatch a retry cannot
/// mend: `init` exits with its own status, 3, which the Helm chart's Job
/// fails at once on instead of retrying; a NATS that cannot be reached
/// (which may pass) exits 1.
#[test]
fn a_mismatch_exits_with_its_own_status() {
    let status = |args: &[&str]| {
        let out = std::process::Command::new(common::AEGIS)
            .arg("init")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let (code, out) = status(&["--nats-url", &url, "--replicas", "1"]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = status(&["--nats-url", &url, "--replicas", "3"]);
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("MISMATCH EVENTS"), "{out}");
    let (code, out) = status(&[
        "--nats-url",
        "nats://127.0.0.1:1",
        "--startup-timeout",
        "0s",
    ]);
    assert_eq!(code, Some(1), "{out}");
}
