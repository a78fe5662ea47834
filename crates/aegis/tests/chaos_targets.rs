//! Which instances `aegis chaos` acts on, against a real nats-server and
//! real SDK services: `kill SERVICE` kills a sticky service's leader (the
//! holder of its election key), whatever the instances' own records say.

mod common;

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::models::InstanceStatus,
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

/// A service instance on `url`: of a sticky group when `sticky`.
async fn instance(url: &str, service: &str, id: &str, sticky: bool) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .unwrap();
    let mut builder = conn
        .service(service, "1.0.0")
        .instance_id(id)
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .handler(
            "quote",
            |_: Value| async move { Ok::<_, WireError>(json!({})) },
        );
    if sticky {
        builder = builder.single_active("default");
    }
    let svc = builder.start().await.unwrap();
    (svc, conn)
}

/// Runs `aegis` with `list` and `--nats-url url`; returns (success, output).
async fn aegis(list: &[&str], url: &str) -> (bool, String) {
    let mut args: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
    args.extend(["--nats-url".to_owned(), url.to_owned()]);
    tokio::task::spawn_blocking(move || common::run(&args))
        .await
        .unwrap()
}

/// Waits until `check` holds, for up to 5 s.
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn leads(svc: &Service) -> bool {
    svc.election().unwrap().role().is_leader()
}

fn healthy(svc: &Service) -> bool {
    svc.registration().unwrap().handle().health().is_healthy()
}

/// A process standing in for a showcase child (killed on drop).
struct Stand(Child);

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_service_kills_the_holder_of_the_election_key() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // order-b leads; order-a, first by name, stands by.
    let (b, _b) = instance(&url, "order-service", "order-b", true).await;
    eventually("order-b leads", || leads(&b)).await;
    let (a, _a) = instance(&url, "order-service", "order-a", true).await;
    // Both made UNHEALTHY: no healthy standby, so order-b leads on,
    // degraded, and no record says ACTIVE.
    let (ok, out) = aegis(&["chaos", "unhealthy", "order-service", "--all"], &url).await;
    assert!(ok, "{out}");
    eventually("both UNHEALTHY", || !healthy(&a) && !healthy(&b)).await;
    assert!(leads(&b) && !leads(&a));
    let conn = Connection::connect(AegisConfig::with_servers(url.as_str()))
        .await
        .unwrap();
    let reader = aegis_sdk::RegistryReader::start(&conn).await.unwrap();
    eventually("the records say UNHEALTHY", || {
        let records = reader.by_service("order-service");
        records.len() == 2
            && records
                .iter()
                .all(|i| i.status == InstanceStatus::Unhealthy)
    })
    .await;

    // A showcase state dir whose children order-a and order-b are
    // stand-in processes; this test process is its `aegis up`.
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir(state.path().join("pids")).unwrap();
    std::fs::write(state.path().join("up.pid"), std::process::id().to_string()).unwrap();
    let mut stands = Vec::new();
    for name in ["order-a", "order-b"] {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        std::fs::write(
            state.path().join("pids").join(format!("{name}.pid")),
            child.id().to_string(),
        )
        .unwrap();
        stands.push((name, Stand(child)));
    }

    let dir = state.path().to_str().unwrap().to_owned();
    let (ok, out) = aegis(
        &["chaos", "kill", "order-service", "--state-dir", &dir],
        &url,
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("SIGKILLed order-b"), "the leader: {out}");
    let killed = stands.iter_mut().find(|(n, _)| *n == "order-b").unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while killed.1.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "order-b's process still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spared = stands.iter_mut().find(|(n, _)| *n == "order-a").unwrap();
    assert!(
        spared.1.0.try_wait().unwrap().is_none(),
        "the standby lives"
    );
}
