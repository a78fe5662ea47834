//! `aegis chaos unhealthy|healthy|slow` and `aegis status` against a real
//! nats-server and real SDK services (issue 16): the binary finds a sticky
//! service's leader, makes it unhealthy, reports the hand-over, names what
//! exists when the target is unknown, and `aegis status` says why an
//! instance is UNHEALTHY; `healthy SERVICE` lifts the verdict from the
//! instances it was put on (not the new leader), and each verdict and lift
//! is a lifecycle event.

mod common;

use std::time::Duration;

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::log::{LogKind, LogRecord},
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use aegis_testkit::NatsServer;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};

async fn order_instance(url: &str, id: &str) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .unwrap();
    let svc = conn
        .service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("default")
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .handler(
            "quote",
            |_: Value| async move { Ok::<_, WireError>(json!({})) },
        )
        .start()
        .await
        .unwrap();
    (svc, conn)
}

/// Runs `aegis` with `args`; returns (success, stdout + stderr).
async fn aegis(args: Vec<String>) -> (bool, String) {
    tokio::task::spawn_blocking(move || common::run(&args))
        .await
        .unwrap()
}

fn args(list: &[&str], url: &str) -> Vec<String> {
    let mut v: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    v.extend(["--nats-url".to_owned(), url.to_owned()]);
    v
}

fn leader(instances: &[(Service, Connection)]) -> Option<String> {
    instances
        .iter()
        .find(|(s, _)| s.election().unwrap().role().is_leader())
        .map(|(s, _)| s.instance_id().to_owned())
}

/// Two order instances on `url`, once one leads and the leader's registry
/// view holds both records (its peer check reads them); returns them and
/// the leader's id.
async fn two_order_instances(url: &str) -> (Vec<(Service, Connection)>, String) {
    let instances = vec![
        order_instance(url, "order-a").await,
        order_instance(url, "order-b").await,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let first = loop {
        if let Some(first) = leader(&instances) {
            break first;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let conn = &instances
        .iter()
        .find(|(s, _)| s.instance_id() == first)
        .unwrap()
        .1;
    let view = aegis_sdk::RegistryReader::start(conn).await.unwrap();
    while view.by_service("order-service").len() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the leader's view lacks its peer"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (instances, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_unhealthy_hands_the_leadership_over_and_status_says_why() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (instances, first) = two_order_instances(&url).await;

    // An unknown target names what exists.
    let (ok, out) = aegis(args(&["chaos", "unhealthy", "nosuch"], &url)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("registered: order-service: order-a, order-b"),
        "{out}"
    );

    // A service name means its leader; the hand-over is reported.
    let (ok, out) = aegis(args(&["chaos", "unhealthy", "order-service"], &url)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "{first} (order-service): UNHEALTHY (forced by an operator) since"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("leadership moved from {first} to")),
        "{out}"
    );
    let second = leader(&instances).unwrap();
    assert_ne!(first, second);

    // `aegis status` says why, and since when.
    let mut status = String::new();
    for _ in 0..50 {
        let (ok, out) = aegis(args(&["status"], &url)).await;
        assert!(ok, "{out}");
        status = out;
        if status.contains("unhealthy: forced by an operator") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let line = status
        .lines()
        .find(|l| l.contains(&first))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("UNHEALTHY") && line.contains("unhealthy: forced by an operator"),
        "{status}"
    );

    // Slow, then healthy again: a standby now (leadership is sticky).
    let (ok, out) = aegis(args(&["chaos", "slow", &first, "--delay", "250ms"], &url)).await;
    assert!(ok, "{out}");
    assert!(out.contains("every handler now waits 250 ms"), "{out}");
    let (ok, out) = aegis(args(&["chaos", "healthy", &first], &url)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{first} (order-service): healthy [standby]")),
        "{out}"
    );
    assert_eq!(leader(&instances).as_deref(), Some(second.as_str()));

    // Bad input is refused before anything is sent.
    let (ok, out) = aegis(args(&["chaos", "slow", &first, "--delay", "2h"], &url)).await;
    assert!(
        !ok && out.contains("'--delay <") && out.contains("must be at most 1m"),
        "{out}"
    );
}

/// Whether `id`'s own verdict says it is healthy.
fn healthy(instances: &[(Service, Connection)], id: &str) -> bool {
    instances
        .iter()
        .find(|(s, _)| s.instance_id() == id)
        .and_then(|(s, _)| s.registration())
        .is_some_and(|r| r.handle().health().is_healthy())
}

/// The next `status_changed` event on `events`.
async fn next_status_change(events: &mut async_nats::Subscriber) -> LogRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a status_changed event within 5 s")
            .unwrap();
        let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
        if record.kind == LogKind::StatusChanged {
            return record;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_healthy_on_a_service_heals_the_instances_made_unhealthy() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (instances, first) = two_order_instances(&url).await;
    let watcher = Connection::connect(AegisConfig::with_servers(url.as_str()))
        .await
        .unwrap();
    let mut events = watcher
        .client()
        .subscribe(format!("aegis.log.order-service.{first}"))
        .await
        .unwrap();
    watcher.client().flush().await.unwrap();

    // The leader is made unhealthy and hands over; the output says how to
    // undo it, with the connection flags it was given (pasted as is, it
    // reaches the same NATS), and the event has no empty `for_ms`.
    let (ok, out) = aegis(args(&["chaos", "unhealthy", "order-service"], &url)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "undo: aegis chaos healthy {first} --nats-url {url}\n"
        )),
        "{out}"
    );
    let made = next_status_change(&mut events).await;
    assert_eq!(made.fields["to"], "UNHEALTHY", "{made:?}");
    assert_eq!(made.fields["reason"], "operator", "{made:?}");
    assert!(!made.fields.contains_key("for_ms"), "{made:?}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while leader(&instances).as_deref() == Some(first.as_str()) {
        assert!(tokio::time::Instant::now() < deadline, "no hand-over");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = leader(&instances).unwrap();

    // The service name heals the former leader, not the new one.
    let (ok, out) = aegis(args(&["chaos", "healthy", "order-service"], &url)).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("{first} (order-service): healthy [standby]")),
        "{out}"
    );
    assert!(!out.contains(&format!("{second} (order-service)")), "{out}");
    assert!(healthy(&instances, &first), "{out}");
    let lifted = next_status_change(&mut events).await;
    assert_eq!(lifted.fields["from"], "UNHEALTHY", "{lifted:?}");
    // The status its role gives it, not a word of the SDK's.
    assert_eq!(lifted.fields["to"], "STANDBY", "{lifted:?}");

    // Nothing left to lift is said, and is no failure.
    let (ok, out) = aegis(args(&["chaos", "healthy", "order-service"], &url)).await;
    assert!(ok && out.contains("nothing to lift"), "{out}");

    // `--all` is undone by the service name, on every instance.
    let (ok, out) = aegis(args(
        &["chaos", "unhealthy", "order-service", "--all"],
        &url,
    ))
    .await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "undo: aegis chaos healthy order-service --nats-url {url}\n"
        )),
        "{out}"
    );
    // Its leader leads on, degraded: a plain call, which reaches only
    // records that say ACTIVE, says so and how to reach it, where it said
    // "none ACTIVE" while `aegis status` showed the leader ACTIVE.
    let (ok, out) = aegis(args(&["call", "order-service", "quote", "{}"], &url)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("order-service is single-active") && out.contains("aegis call --active"),
        "{out}"
    );
    let (ok, out) = aegis(args(
        &["call", "order-service", "quote", "{}", "--active"],
        &url,
    ))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = aegis(args(&["chaos", "healthy", "order-service"], &url)).await;
    assert!(ok, "{out}");
    for id in ["order-a", "order-b"] {
        assert!(
            out.contains(&format!("{id} (order-service): healthy")),
            "{out}"
        );
        assert!(healthy(&instances, id), "{out}");
    }
}

/// `aegis status` shows how recent each instance's last sign of life is,
/// not how old its record is: an unchanged record is rewritten only every
/// few beats (here every 3 s), while liveness beats come every 250 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_ages_come_from_the_beats_not_the_last_record_write() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(url.as_str()))
        .await
        .unwrap();
    let _svc = conn
        .service("beat-service", "1.0.0")
        .instance_id("beat-1")
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(250),
            refresh: Duration::from_secs(3),
            ttl: Duration::from_secs(10),
            ..Default::default()
        })
        .handler(
            "noop",
            |_: Value| async move { Ok::<_, WireError>(json!({})) },
        )
        .start()
        .await
        .unwrap();
    let reg = _svc.registration().unwrap().handle();
    // A moment when the stored record is at least 1.5 s old.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while chrono::Utc::now() - reg.record().last_heartbeat < chrono::Duration::milliseconds(1500) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record never aged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (ok, out) = aegis(args(&["status"], &url)).await;
    assert!(ok, "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("beat-1"))
        .unwrap_or_else(|| panic!("no beat-1 line: {out}"));
    let age: f64 = line
        .split_whitespace()
        .find_map(|w| w.strip_suffix('s').and_then(|n| n.parse().ok()))
        .unwrap_or_else(|| panic!("no age in {line:?}"));
    assert!(
        age < 1.0,
        "the age of the last beat, not of the record: {line}"
    );
}

/// Tried as a new operator would: with a NATS node killed, `aegis status`
/// printed the usual table (its clients had moved to the others) while the
/// monitor's banner said "2 of 3 servers up". It names the node now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_names_a_configured_nats_server_that_does_not_answer() {
    let mut cluster = aegis_testkit::NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let urls = cluster.urls();
    let all = urls.join(",");
    // Three copies of each bucket, as on a showcase's cluster.
    let (ok, out) = aegis(vec![
        "init".into(),
        "--replicas".into(),
        "3".into(),
        "--nats-url".into(),
        all.clone(),
    ])
    .await;
    assert!(ok, "{out}");
    let (ok, out) = aegis(vec!["status".into(), "--nats-url".into(), all.clone()]).await;
    assert!(ok, "{out}");
    assert!(!out.contains("does not answer"), "{out}");
    // A node that leads neither the JetStream meta group nor a stream the
    // status reads: its loss costs the table nothing (one that led the
    // registry's stream would hold the view up for the 4-9 s of an
    // election, which is not this test's matter).
    let victim = (0..3)
        .find(|i| Some(*i) != cluster.meta_leader())
        .expect("a node that does not lead the meta group");
    let client = async_nats::connect(urls.as_slice()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let streams: Vec<String> = js.stream_names().try_collect().await.unwrap();
    let name = cluster.nodes()[victim].server_name().to_owned();
    for stream in &streams {
        aegis_testkit::leaders::lead_elsewhere(&client, stream, &name).await;
    }
    assert_ne!(cluster.meta_leader(), Some(victim), "the meta group moved");
    cluster.kill_node(victim);
    let (ok, out) = aegis(vec!["status".into(), "--nats-url".into(), all]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!(
            "NATS: {} does not answer (1 of 3 servers configured)",
            urls[victim]
        )),
        "{out}"
    );
}
