//! Which instances `aegis chaos` acts on, against a real nats-server and
//! real SDK services: `kill SERVICE` kills a sticky service's leader (the
//! holder of its election key), whatever the instances' own records say;
//! a drill with `--all` reaches every instance even when one of them does
//! not answer, and names the ones that did not.

mod common;

use std::{
    process::{Child, Command},
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::{
        ServiceInstance,
        control::METADATA_STATUS_REASON,
        models::InstanceStatus,
        subjects::{REGISTRY_BUCKET, registry_key},
    },
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
    let (ok, out) = common::run_at(&["chaos", "unhealthy", "order-service", "--all"], &url).await;
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
    aegis::up::supervisor::write_pid(&state.path().join("up.pid"), std::process::id()).unwrap();
    let mut stands = Vec::new();
    for name in ["order-a", "order-b"] {
        let child = Command::new("sleep").arg("600").spawn().unwrap();
        // As `aegis up` writes them: a pid file counts only for the
        // process it was written for.
        aegis::up::supervisor::write_pid(
            &state.path().join("pids").join(format!("{name}.pid")),
            child.id(),
        )
        .unwrap();
        stands.push((name, Stand(child)));
    }

    let dir = state.path().to_str().unwrap().to_owned();
    let (ok, out) = common::run_at(
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_with_all_reaches_every_instance_past_one_that_is_gone() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (a, a_conn) = instance(&url, "quote-service", "quote-a", false).await;
    let (b, _b) = instance(&url, "quote-service", "quote-b", false).await;
    let (ok, out) = common::run_at(&["chaos", "unhealthy", "quote-service", "--all"], &url).await;
    assert!(ok, "{out}");
    eventually("both UNHEALTHY", || !healthy(&a) && !healthy(&b)).await;

    // quote-0 crashed: its record stays until its TTL runs out, and no
    // process answers for it. It sorts first.
    let mut gone = ServiceInstance::new("quote-service", "quote-0", "1.0.0", chrono::Utc::now());
    gone.status = InstanceStatus::Unhealthy;
    gone.metadata
        .insert(METADATA_STATUS_REASON.into(), "operator".into());
    let registry = a_conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    registry
        .put(
            registry_key("quote-service", "quote-0"),
            serde_json::to_vec(&gone).unwrap().into(),
        )
        .await
        .unwrap();

    for all in [true, false] {
        let mut args = vec!["chaos", "healthy", "quote-service"];
        if all {
            args.push("--all");
        }
        let (ok, out) = common::run_at(&args, &url).await;
        // Every live instance was reached and is healthy again; each
        // result is printed.
        assert!(healthy(&a) && healthy(&b), "--all {all}: {out}");
        for id in ["quote-a", "quote-b"] {
            assert!(
                out.contains(&format!("{id} (quote-service): healthy")),
                "--all {all}: {out}"
            );
        }
        // The one that did not answer fails the command, named, and said
        // to be not running (not blamed on an old version).
        assert!(!ok, "--all {all}: {out}");
        let error = out
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {out}"));
        assert!(
            error.contains("quote-0") && error.contains("not running"),
            "{error}"
        );
        assert!(!error.contains("version"), "{error}");
        assert!(
            !error.contains("quote-a") && !error.contains("quote-b"),
            "{error}"
        );
        // Made unhealthy again for the second round (healthy SERVICE
        // without --all reaches those an operator made UNHEALTHY).
        if all {
            for id in ["quote-a", "quote-b"] {
                let (ok, out) = common::run_at(&["chaos", "unhealthy", id], &url).await;
                assert!(ok, "{out}");
            }
            eventually("both UNHEALTHY again", || !healthy(&a) && !healthy(&b)).await;
            let reader = aegis_sdk::RegistryReader::start(&a_conn).await.unwrap();
            eventually("the records say so", || {
                reader
                    .by_service("quote-service")
                    .iter()
                    .filter(|i| i.status == InstanceStatus::Unhealthy)
                    .count()
                    == 3
            })
            .await;
        }
    }
}

/// `chaos kill` with a name that is neither a process of the showcase nor
/// a registered service suggests the close one, as `aegis status` does,
/// and kills nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_of_an_unknown_name_suggests_the_close_one() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let (_a, _a_conn) = instance(&url, "order-service", "order-a", false).await;
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir(state.path().join("pids")).unwrap();
    aegis::up::supervisor::write_pid(&state.path().join("up.pid"), std::process::id()).unwrap();
    let child = Command::new("sleep").arg("600").spawn().unwrap();
    aegis::up::supervisor::write_pid(&state.path().join("pids/order-a.pid"), child.id()).unwrap();
    let mut stand = Stand(child);

    let dir = state.path().to_str().unwrap().to_owned();
    for (typed, close) in [("order", "order-service"), ("ordr-a", "order-a")] {
        let (ok, out) = common::run_at(&["chaos", "kill", typed, "--state-dir", &dir], &url).await;
        assert!(!ok, "{typed}: {out}");
        assert!(
            out.contains(&format!("did you mean {close}?")),
            "{typed}: {out}"
        );
        assert!(!out.contains("SIGKILLed"), "{typed}: {out}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(stand.0.try_wait().unwrap().is_none(), "order-a was killed");
}
