//! A service name that the registry has no record of is said to be
//! unknown, with the names it has and the close one, by `aegis status
//! SERVICE` (exiting non-zero) and `aegis call`: not read as an empty fleet
//! or an outage. A service whose records are all down still reads as one.

mod common;

use std::{path::Path, process::Command, time::Duration};

use aegis_sdk::{
    AegisConfig, Connection,
    contracts::{
        ServiceInstance,
        models::InstanceStatus,
        subjects::{REGISTRY_BUCKET, registry_key},
    },
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

/// A live instance of `beat-service` on `url`.
async fn instance(url: &str) -> (Service, Connection) {
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .unwrap();
    let svc = conn
        .service("beat-service", "1.0.0")
        .instance_id("beat-1")
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(500),
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
    (svc, conn)
}

/// `aegis ARGS` run in `cwd` (no `.aegis` there) without any credentials
/// of the environment: its success, and its stdout and stderr together.
async fn aegis_in(cwd: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(args).current_dir(cwd).env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    tokio::task::spawn_blocking(move || common::output(cmd))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_registry_never_heard_of_is_said_to_be_unknown() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let elsewhere = tempfile::tempdir().unwrap();
    let (svc, conn) = instance(&url).await;

    // A mistyped name: no record of it at all.
    let (ok, out) = aegis_in(elsewhere.path(), &["status", "beat", "--nats-url", &url]).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("no instance of beat is registered")
            && out.contains("known services: beat-service")
            && out.contains("did you mean beat-service?"),
        "{out}"
    );
    assert!(!out.contains("(no instances registered)"), "{out}");
    let (ok, out) = aegis_in(
        elsewhere.path(),
        &["call", "beta-service", "noop", "--nats-url", &url],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("no instance of beta-service is registered")
            && out.contains("did you mean beat-service?"),
        "{out}"
    );
    assert!(!out.contains("SERVICE_UNAVAILABLE"), "{out}");

    // A service whose records are all down still reads as an outage.
    let mut gone = ServiceInstance::new("gone-service", "gone-1", "1.0.0", chrono::Utc::now());
    gone.status = InstanceStatus::Unhealthy;
    let registry = conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    registry
        .put(
            registry_key("gone-service", "gone-1"),
            serde_json::to_vec(&gone).unwrap().into(),
        )
        .await
        .unwrap();
    let (ok, out) = aegis_in(
        elsewhere.path(),
        &["call", "gone-service", "noop", "--nats-url", &url],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("SERVICE_UNAVAILABLE") && !out.contains("ever registered"),
        "{out}"
    );
    let (ok, out) = aegis_in(
        elsewhere.path(),
        &["status", "gone-service", "--nats-url", &url],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("gone-1"), "{out}");
    drop(svc);
}
