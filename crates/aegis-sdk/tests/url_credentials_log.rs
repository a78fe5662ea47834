//! A password in a server URL never reaches the log, not even the NATS
//! client's own DEBUG lines about its connection attempts (which print
//! the address they try); and a reconnect is told at the level its loss
//! was.

mod common;

use std::time::Duration;

use aegis_sdk::{AegisConfig, Connection};
use common::{Captured, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_server_url_is_not_logged_at_debug() {
    let logs = Captured::install(tracing::Level::DEBUG);
    let mut nats = aegis_testkit::NatsServer::builder()
        .app_users(r#"[ { user: "alice", password: "s3cretpw" } ]"#.to_owned())
        .start()
        .expect("start nats-server with a user");
    let url = nats.url().replace("nats://", "nats://alice:s3cretpw@");
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(2);
    let conn = Connection::connect(config)
        .await
        .expect("signed in with the URL's user and password");
    // A reconnect: more attempts, each logged with its address.
    nats.kill();
    nats.restart().unwrap();
    eventually(Duration::from_secs(15), "reconnected", || {
        let conn = conn.clone();
        async move { conn.is_connected() }
    })
    .await;
    let text = logs.text();
    assert!(
        text.contains("attempting connection"),
        "the client's DEBUG lines are captured: {text}"
    );
    assert!(!text.contains("s3cretpw"), "{text}");
    // The loss and the return are both WARN, so both reach the monitor
    // (which takes WARN and above): an operator reading an instance's
    // lines sees the connection came back, and after how long.
    let back = text
        .lines()
        .find(|l| l.contains("NATS connection re-established after"))
        .unwrap_or_else(|| panic!("no line says the connection came back: {text}"));
    assert!(back.contains("WARN"), "{back}");
}
