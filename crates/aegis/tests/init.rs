//! `aegis init` against a real nats-server (a 3-node cluster where replicas
//! matter): creates every bucket and stream with the replicas asked for, is
//! a no-op the second time, refuses existing ones with another replica count
//! (naming the fix), and `--fix` changes them in place; raises the stream
//! limits its config file raises, and lowers them only with
//! `--apply-limits`. The example trading services' buckets are made only
//! with `--showcase`, as `aegis up` and the Helm chart's Job ask.

mod common;

use std::time::Duration;

use aegis_testkit::NatsCluster;

/// Runs `aegis init --showcase` with `args` (as `aegis up` and the Helm
/// chart's Job run it); its exit success and stdout.
fn init(url: &str, args: &[&str]) -> (bool, String) {
    let mut all = vec!["init", "--showcase", "--nats-url", url];
    all.extend_from_slice(args);
    common::run(&all)
}

/// The example trading services' buckets, made only with `--showcase`.
const SHOWCASE: [&str; 3] = ["KV_orders", "KV_risk_limits", "KV_risk_positions"];

/// The streams `aegis init --showcase` makes.
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

/// Runs `work` with a JetStream context on the server(s) at `addrs`, on a
/// runtime of its own (these tests run `aegis` synchronously); what `work`
/// returns.
fn with_jetstream<T>(
    addrs: impl async_nats::ToServerAddrs,
    work: impl AsyncFnOnce(async_nats::jetstream::Context) -> T,
) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = async_nats::connect(addrs).await.unwrap();
            work(async_nats::jetstream::new(client)).await
        })
}

/// The names of every stream on the server(s) at `addrs`.
fn stream_names(addrs: impl async_nats::ToServerAddrs) -> Vec<String> {
    with_jetstream(addrs, async |js| {
        use futures::TryStreamExt;
        js.stream_names()
            .try_collect::<Vec<String>>()
            .await
            .unwrap()
    })
}

fn replicas_of(cluster: &NatsCluster) -> Vec<(String, usize)> {
    with_jetstream(cluster.urls(), async |js| {
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
                "MISMATCH {name}: 1 replicas, asked for 3: \
                 run `aegis init --showcase --replicas 3 --fix`"
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

/// On a user's own server, `aegis init` makes what Aegis itself uses (the
/// SDK's and the monitor's buckets and streams) and says that the example
/// services' buckets are left out; `--showcase` adds them.
#[test]
fn the_example_services_buckets_are_made_only_with_showcase() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let (ok, out) = common::run(&["init", "--nats-url", &url]);
    assert!(ok, "{out}");
    for name in STREAMS.iter().filter(|n| !SHOWCASE.contains(n)) {
        assert!(
            out.contains(&format!("ok      {name} (created;")),
            "{name}:\n{out}"
        );
    }
    for name in SHOWCASE {
        assert!(!out.contains(&format!("ok      {name}")), "{name}:\n{out}");
    }
    assert!(
        out.contains(
            "the example trading services' buckets were neither made nor checked: \
             `aegis init --showcase`"
        ),
        "{out}"
    );
    let made = stream_names(url.as_str());
    assert_eq!(made.len(), STREAMS.len() - SHOWCASE.len(), "{made:?}");
    assert!(
        SHOWCASE.iter().all(|n| !made.iter().any(|m| m == n)),
        "{made:?}"
    );

    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    for name in SHOWCASE {
        assert!(
            out.contains(&format!("ok      {name} (created;")),
            "{name}:\n{out}"
        );
    }
    assert_eq!(stream_names(url.as_str()).len(), STREAMS.len());
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
    let created = aegis::init::create_missing_within(
        &conn,
        aegis::init::Scope::WithShowcase,
        Duration::from_secs(60),
        |_| {
            failures += 1;
            common::signal(pid, nix::sys::signal::Signal::SIGCONT);
        },
    )
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
        !out.contains("run `aegis init --showcase --replicas 1 --fix` to change it"),
        "{out}"
    );
    for name in STREAMS {
        let line = out
            .lines()
            .find(|l| l.contains(&format!("MISMATCH {name}:")))
            .unwrap_or_else(|| panic!("{name}:\n{out}"));
        assert!(
            line.contains("`aegis init --showcase --replicas 3`")
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
    let streams = stream_names(cluster.urls());
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

/// The limits of the stream `name` on the server `url`: its oldest
/// message, bytes and messages, and how many messages it holds.
fn limits_of(url: &str, name: &str) -> (Duration, i64, i64, u64) {
    with_jetstream(url, async |js| {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        (
            info.config.max_age,
            info.config.max_bytes,
            info.config.max_messages,
            info.state.messages,
        )
    })
}

/// Changes the stream `name`'s limits by hand (as `nats stream edit`).
fn edit_stream(
    url: &str,
    name: &str,
    edit: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) {
    with_jetstream(url, async |js| {
        let mut stream = js.get_stream(name).await.unwrap();
        let mut config = stream.info().await.unwrap().config.clone();
        edit(&mut config);
        js.update_stream(config).await.unwrap();
    });
}

/// A configuration file holding `toml`.
fn config_file(dir: &tempfile::TempDir, name: &str, toml: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_owned()
}

const HOUR: Duration = Duration::from_secs(3600);
const MIB: i64 = 1024 * 1024;

/// A limit the configuration raises on an existing stream is raised in
/// place (it deletes nothing); one the configuration does not set keeps
/// what the stream has, even when someone changed it by hand. Before,
/// `init` said nothing and the stream kept its old limits: a chart
/// upgrade with `streams.events.maxAge` raised changed nothing.
#[test]
fn init_raises_a_limit_the_configuration_raises() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    let first = config_file(&dir, "first.toml", "[streams.events]\nmax_age = \"1h\"\n");
    let (ok, out) = init(&url, &["--config", &first]);
    assert!(ok, "{out}");
    assert_eq!(limits_of(&url, "EVENTS").0, HOUR);
    edit_stream(&url, "EVENTS", |c| c.max_bytes = 200 * MIB);

    let raised = config_file(&dir, "raised.toml", "[streams.events]\nmax_age = \"2h\"\n");
    let (ok, out) = init(&url, &["--config", &raised]);
    assert!(ok, "{out}");
    assert!(out.contains("raised  EVENTS: max_age 1h -> 2h"), "{out}");
    let (age, bytes, _, _) = limits_of(&url, "EVENTS");
    assert_eq!(age, 2 * HOUR, "{out}");
    assert_eq!(bytes, 200 * MIB, "not set in the file: kept\n{out}");
    assert!(!out.contains("max_bytes"), "{out}");
    assert!(out.contains("every bucket and stream is in place"), "{out}");

    // In place now: nothing more to say.
    let (ok, out) = init(&url, &["--config", &raised]);
    assert!(ok, "{out}");
    assert!(!out.contains("raised"), "{out}");
    assert!(out.contains("ok      EVENTS (exists;"), "{out}");
}

/// A limit the configuration lowers can delete messages at once: without
/// `--apply-limits` it is a mismatch (exit status 3) naming what the
/// stream has, what is wanted, what lowering would delete, and both fixes;
/// the stream keeps everything. With `--apply-limits` it is lowered and
/// says what went.
#[test]
fn init_lowers_a_limit_only_when_told_and_says_what_goes() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    with_jetstream(url.as_str(), async |js| {
        for i in 0..25 {
            js.publish("events.test.x", format!("{i}").into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let (_, _, before, messages) = limits_of(&url, "EVENTS");
    assert_eq!(messages, 25);

    let dir = tempfile::tempdir().unwrap();
    let lower = config_file(&dir, "lower.toml", "[streams.events]\nmax_messages = 10\n");
    let out = std::process::Command::new(common::AEGIS)
        .args(["init", "--nats-url", &url, "--config", &lower])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains("MISMATCH EVENTS:"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("max_messages {before} -> 10"))
            && line.contains("15 oldest")
            && line.contains(&format!("aegis init --config {lower} --apply-limits"))
            && line.contains(&format!("streams.events.max_messages = {before}")),
        "{line}"
    );
    assert_eq!(limits_of(&url, "EVENTS").2, before, "{text}");
    assert_eq!(limits_of(&url, "EVENTS").3, 25, "{text}");

    let (ok, out) = init(&url, &["--config", &lower, "--apply-limits"]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "lowered EVENTS: max_messages {before} -> 10 (deleted 15 messages"
        )),
        "{out}"
    );
    let (_, _, max, messages) = limits_of(&url, "EVENTS");
    assert_eq!((max, messages), (10, 10), "{out}");
}

/// A bucket's byte bound an operator raised by hand (as docs/operations.md
/// tells them to when the order store is full) is kept: `init` bounds a
/// bucket that has no bound, and never lowers one. Before, every `aegis
/// up` and every chart upgrade (its init Job) put `orders` back to
/// 256 MiB, and a store near full refused orders again.
#[test]
fn init_keeps_a_bucket_bound_raised_by_hand() {
    let server = aegis_testkit::NatsServer::start().unwrap();
    let url = server.url();
    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    assert_eq!(limits_of(&url, "KV_orders").1, 256 * MIB);
    edit_stream(&url, "KV_orders", |c| c.max_bytes = 512 * MIB);
    edit_stream(&url, "KV_service_registry", |c| c.max_bytes = 128 * MIB);

    let (ok, out) = init(&url, &[]);
    assert!(ok, "{out}");
    assert_eq!(limits_of(&url, "KV_orders").1, 512 * MIB, "{out}");
    assert_eq!(limits_of(&url, "KV_service_registry").1, 128 * MIB, "{out}");
    assert!(!out.contains("max bytes"), "{out}");
    assert!(out.contains("every bucket and stream is in place"), "{out}");
}
