//! A service whose NATS user may not do what serving needs fails its start
//! saying so, naming what the server refused. Tried as a new user would:
//! a service run with the showcase operator's credentials ended after
//! 5 s with "cannot write service-instances.fx-service.fx-1 to the
//! registry: no acknowledgement within 1s", while the cause, the server's
//! permission violations, was only in WARN lines; and a service refused
//! its request subscriptions started as if it served.

use std::time::Duration;

use aegis_sdk::{AegisConfig, Connection, Secret, rpc::WireError, startup::Causes};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

/// A server with one user, `dev`, allowed everything but `deny`.
fn server_denying(deny: &str) -> NatsServer {
    NatsServer::builder()
        .accounts(true)
        .app_users(format!(
            r#"[ {{ user: "dev", password: "pw", permissions: {{ {deny} }} }} ]"#
        ))
        .start()
        .unwrap()
}

async fn connect_as_dev(nats: &NatsServer) -> Connection {
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.user = Some("dev".to_owned());
    config.nats.password = Some(Secret::new("pw".to_owned()));
    Connection::connect(config).await.expect("connected as dev")
}

async fn start_fx(
    conn: &Connection,
) -> Result<aegis_sdk::rpc::Service, aegis_sdk::rpc::server::ServiceError> {
    conn.service("fx-service", "1.0.0")
        .instance_id("fx-1")
        .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registry_write_is_said_as_refused() {
    let nats = server_denying(r#"publish: { deny: ["$KV.service_registry.>"] }"#);
    let conn = connect_as_dev(&nats).await;
    let started = tokio::time::Instant::now();
    let err = start_fx(&conn)
        .await
        .expect_err("no registry write, no start");
    let text = Causes(&err).to_string();
    eprintln!("start refused: {text}");
    assert!(
        text.contains("refused")
            && text.contains("$KV.service_registry.service-instances.fx-service.fx-1"),
        "the error says what the server refused: {text}"
    );
    assert!(
        matches!(&err, aegis_sdk::rpc::server::ServiceError::Registry(r) if r.is_refused()),
        "{err:?}"
    );
    // Not retried: asking again cannot help.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_subscription_fails_the_start() {
    let nats = server_denying(r#"subscribe: { deny: ["rpc.fx-service.>"] }"#);
    let conn = connect_as_dev(&nats).await;
    let err = start_fx(&conn)
        .await
        .expect_err("a service that cannot hear its requests does not start");
    let text = Causes(&err).to_string();
    eprintln!("start refused: {text}");
    assert!(
        text.contains("refused") && text.contains("rpc.fx-service."),
        "the error says what the server refused: {text}"
    );
}
