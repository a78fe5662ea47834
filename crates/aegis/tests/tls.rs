//! `aegis up --tls`: a 3-node cluster that requires TLS on client
//! connections and mutual TLS on its routes, with a CA made in the state
//! directory. The services and the monitor come up over TLS; the operator's
//! `aegis call` works from the credentials file alone; a client that does
//! not use TLS, or does not trust the showcase's CA, is refused; the route
//! ports speak TLS only.

mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    time::Duration,
};

use aegis_sdk::{AegisConfig, Connection, Secret};
use common::{AEGIS, Proc, free_cluster_ports};

fn operator_config(url: &str, state: &std::path::Path) -> AegisConfig {
    let (user, password) = aegis::up::credentials::read_operator(&state.join("credentials"))
        .unwrap()
        .expect("the operator's credentials");
    let mut config = AegisConfig::with_servers(url);
    config.nats.connect_timeout = Duration::from_secs(2);
    config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(&user));
    config.nats.user = Some(user);
    config.nats.password = Some(Secret::new(password));
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_required_on_clients_and_routes_and_everything_works_over_it() {
    let state = tempfile::tempdir().unwrap();
    let (base, api) = free_cluster_ports();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("nats://127.0.0.1:{}", base + i))
        .collect();
    let url = urls.join(",");
    let state_arg = state.path().display().to_string();
    let mut up = Proc::spawn(&[
        "up",
        "--tls",
        "--instances",
        "order=2,pricing=1,risk=1",
        "--base-port",
        &base.to_string(),
        "--api-port",
        &api.to_string(),
        "--state-dir",
        &state_arg,
    ]);
    up.wait_for("Aegis showcase is up", Duration::from_secs(150));
    // The summary's lines after the first arrive through a reader thread:
    // await the line rather than read what has arrived so far.
    up.wait_for("TLS required", Duration::from_secs(10));

    // The operator, from the credentials file (which names the CA).
    let called = Command::new(AEGIS)
        .args([
            "call",
            "order-service",
            "create_order",
            "--active",
            r#"{"symbol":"AAPL","side":"BUY","quantity":5,"client_order_id":"tls-1"}"#,
            "--nats-url",
            &url,
            "--credentials",
        ])
        .arg(state.path().join("credentials"))
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        called.status.success(),
        "aegis call over TLS: {}",
        String::from_utf8_lossy(&called.stderr)
    );

    // The right credentials without TLS: refused.
    let plain = Connection::connect(operator_config(&url, state.path())).await;
    assert!(plain.is_err(), "a client without TLS must be refused");
    // TLS without trusting the showcase's CA (the system's roots): refused.
    let mut untrusting = operator_config(&url, state.path());
    untrusting.nats.tls_required = true;
    let untrusted = Connection::connect(untrusting).await;
    assert!(
        untrusted.is_err(),
        "the server's certificate is the showcase CA's"
    );
    // With the CA: connected, and the whole fleet registered over TLS.
    let mut trusting = operator_config(&url, state.path());
    trusting.nats.tls_ca = Some(state.path().join("tls/ca.pem"));
    let conn = Connection::connect(trusting)
        .await
        .expect("TLS with the CA");
    let reader = aegis_sdk::RegistryReader::start(&conn).await.unwrap();
    assert_eq!(reader.all().len(), 4, "order ×2, pricing ×1, risk ×1");

    // The client port announces TLS; a route port sends nothing in clear
    // (TLS first) and the cluster formed all the same.
    for i in 0..3u16 {
        let info = first_bytes(base + i);
        assert!(
            info.contains("\"tls_required\":true"),
            "client port: {info}"
        );
        let route = first_bytes(base + 2000 + i);
        assert!(
            route.is_empty(),
            "route port {} spoke in clear: {route}",
            base + 2000 + i
        );
    }
    drop(conn);
}

/// What a port sends first within half a second of connecting.
fn first_bytes(port: u16) -> String {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = stream.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}
