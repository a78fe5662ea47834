//! The scripted attack on a running `aegis up` (`scripts/attack.sh` runs
//! this test and prints its output): each abuse issue 12 lists, tried as an
//! outsider (no or wrong credentials) and as a wrong role (pricing-service's
//! and the monitor's own credentials, taken from the showcase's credentials
//! file), each printed with the server's refusal. Afterwards the showcase
//! still serves: the operator's `create_order` reaches the elected leader.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use aegis_sdk::{AegisConfig, ConnectError, Connection, Secret, rpc::CallOptions};
use common::{Probe, Proc, free_up_ports};
use serde_json::{Value, json};

fn read_credentials(state: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(state.join("credentials"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn config(url: &str, user: Option<(&str, &str)>) -> AegisConfig {
    let mut config = AegisConfig::with_servers(url);
    if let Some((user, password)) = user {
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(Secret::new(password));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
    }
    config
}

async fn outsider_refused(attempt: &str, url: &str, user: Option<(&str, &str)>) {
    let err = Connection::connect(config(url, user)).await.unwrap_err();
    assert!(matches!(err, ConnectError::Refused { .. }), "{err:?}");
    let shown = user.map_or("(anonymous)", |(u, _)| u);
    println!("{shown:<20} {attempt:<52} REFUSED: authorization violation");
}

/// A plain HTTP/1.0 GET of the server's monitoring endpoint.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

fn kv_delete() -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    headers
}

/// Whether a message arrives on `answers` within 5 s.
async fn answered(answers: &mut async_nats::Subscriber) -> bool {
    use futures::StreamExt;
    matches!(
        tokio::time::timeout(Duration::from_secs(5), answers.next()).await,
        Ok(Some(_))
    )
}

/// The system user `sys` (in the monitor's environment and the credentials
/// file) does what Aegis does with it: the monitor follows the connection
/// advisories and pings every server with it (`_INBOX_monitor`, since it
/// keeps the monitor's inbox prefix), `aegis status` asks the servers for
/// their statistics and open and closed connections (`_INBOX_operator`),
/// and `nats server list` (as `scripts/nats-tooling.py` sends it, default
/// `_INBOX`) is answered; the server logs no violation of any of it. Then
/// the requests that change a server, and reading the whole system
/// account's traffic, are refused.
async fn system_user_does_its_work_and_no_more(
    state: &Path,
    url: &str,
    sys_pw: &str,
    operator_pw: &str,
) {
    println!("\n== as the system user (its own role) ==");
    let mut status = std::process::Command::new(common::AEGIS);
    status
        .args(["status", "--nats-url", url, "--credentials"])
        .arg(state.join("credentials"))
        .env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        status.env_remove(var);
    }
    let (ok, out) = common::output(status);
    assert!(ok, "aegis status failed:\n{out}");
    assert!(!out.contains("warning"), "aegis status:\n{out}");
    println!(
        "{:<20} {:<52} OK",
        "sys", "aegis status (advisories, STATSZ, CONNZ)"
    );

    let log = std::fs::read_to_string(state.join("logs/nats-n1.log")).unwrap();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(
        violations.is_empty(),
        "the monitor or aegis status was refused something:\n{}",
        violations.join("\n")
    );

    let mut sys = Probe::connect(url, "sys", sys_pw).await;
    for prefix in ["_INBOX", "_INBOX_monitor", "_INBOX_operator"] {
        for (request, body) in [
            ("$SYS.REQ.SERVER.PING", ""),
            ("$SYS.REQ.SERVER.PING.STATSZ", ""),
            ("$SYS.REQ.SERVER.PING.CONNZ", r#"{"state":2,"limit":10}"#),
        ] {
            let inbox = format!("{prefix}.{}", nuid::next());
            let mut answers = sys.client.subscribe(inbox.clone()).await.unwrap();
            sys.client
                .publish_with_reply(request, inbox, body.to_owned().into())
                .await
                .unwrap();
            assert!(answered(&mut answers).await, "{request} to {prefix}");
        }
    }
    let mut opened = sys
        .client
        .subscribe("$SYS.ACCOUNT.*.CONNECT")
        .await
        .unwrap();
    let mut closed = sys
        .client
        .subscribe("$SYS.ACCOUNT.*.DISCONNECT")
        .await
        .unwrap();
    let _leaving = sys.client.subscribe("$SYS.SERVER.*.*").await.unwrap();
    sys.client.flush().await.unwrap();
    let passer_by = Probe::connect(url, "operator", operator_pw).await;
    assert!(answered(&mut opened).await, "no connect advisory");
    passer_by.client.drain().await.unwrap();
    assert!(answered(&mut closed).await, "no disconnect advisory");
    println!("{:<20} {:<52} OK", "sys", "advisories, PING, STATSZ, CONNZ");
    let server = sys.client.server_info().server_id;
    sys.publish_refused(
        "kick a connection",
        &format!("$SYS.REQ.SERVER.{server}.KICK"),
        br#"{"cid":999999999}"#,
    )
    .await;
    sys.publish_refused(
        "reload the server's config",
        &format!("$SYS.REQ.SERVER.{server}.RELOAD"),
        b"",
    )
    .await;
    sys.publish_refused(
        "read every server's settings (VARZ)",
        "$SYS.REQ.SERVER.PING.VARZ",
        b"",
    )
    .await;
    sys.subscribe_refused("read all of the system account's traffic", ">")
        .await;
    sys.publish_refused(
        "put the server in lame duck mode",
        &format!("$SYS.REQ.SERVER.{server}.LDM"),
        b"",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuses_of_the_bus_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let (base, api) = free_up_ports();
    let url = format!("nats://127.0.0.1:{base}");
    let state_dir = state.path().to_str().unwrap();
    let mut up = Proc::spawn(&[
        "up",
        "--single-node",
        "--base-port",
        &base.to_string(),
        "--api-port",
        &api.to_string(),
        "--state-dir",
        state_dir,
    ]);
    up.wait_for("Aegis showcase is up", Duration::from_secs(120));
    let creds = read_credentials(state.path());
    let password = |var: &str| creds.get(var).unwrap().clone();
    let pricing_pw = password("AEGIS_NATS_PASSWORD_SVC_PRICING_SERVICE");
    let monitor_pw = password("AEGIS_NATS_PASSWORD_MONITOR");
    let operator_pw = password("AEGIS_NATS_PASSWORD");

    // Who is connected as whom: every child with its own role's user.
    let connz = http_get(base + 4000, "/connz?auth=1&limit=1024");
    let connz: Value = serde_json::from_str(&connz).expect("connz JSON");
    let mut users: BTreeMap<String, usize> = BTreeMap::new();
    for c in connz["connections"].as_array().unwrap() {
        let user = c["authorized_user"].as_str().unwrap_or("(none)").to_owned();
        *users.entry(user).or_default() += 1;
    }
    println!("\n== connections of the running showcase, by NATS user ==");
    for (user, n) in &users {
        println!("{user:<20} {n} connection(s)");
    }
    for user in [
        "svc-order-service",
        "svc-pricing-service",
        "svc-risk-service",
        "monitor",
        "operator",
        // the monitor's system connection: it follows the advisories
        "sys",
    ] {
        assert!(
            users.contains_key(user),
            "no connection as {user}: {users:?}"
        );
    }
    assert!(!users.contains_key("(none)"), "{users:?}");

    system_user_does_its_work_and_no_more(
        state.path(),
        &url,
        &password("AEGIS_NATS_SYSTEM_PASSWORD"),
        &operator_pw,
    )
    .await;

    println!("\n== as an outsider ==");
    outsider_refused("connect without credentials", &url, None).await;
    outsider_refused(
        "connect as the old default user `aegis`",
        &url,
        Some(("aegis", "")),
    )
    .await;
    outsider_refused(
        "connect as order-service with a guessed password",
        &url,
        Some(("svc-order-service", "order-service")),
    )
    .await;
    outsider_refused(
        "connect as the operator with the monitor's password",
        &url,
        Some(("operator", &monitor_pw)),
    )
    .await;

    println!("\n== as pricing-service (a wrong role) ==");
    let mut pricing = Probe::connect(&url, "svc-pricing-service", &pricing_pw).await;
    let forged_record = br#"{"serviceName":"order-service","instanceId":"evil","version":"9.9.9","status":"ACTIVE","lastHeartbeat":"2030-01-01T00:00:00Z","stickyActiveGroup":"default","metadata":{},"epoch":18446744073709551000}"#;
    pricing
        .publish_refused(
            "call create_order",
            "rpc.order-service.create_order",
            br#"{"symbol":"AAPL","side":"BUY","quantity":1000000,"client_order_id":"x"}"#,
        )
        .await;
    pricing
        .publish_refused(
            "write $KV.risk_limits.limits",
            "$KV.risk_limits.limits",
            br#"{"max_order_notional":1e18}"#,
        )
        .await;
    pricing
        .publish_refused(
            "publish events.order.filled",
            "events.order.filled",
            br#"{"order_id":"fake"}"#,
        )
        .await;
    pricing
        .publish_refused(
            "write an ACTIVE record with a huge epoch",
            "$KV.service_registry.service-instances.order-service.evil",
            forged_record,
        )
        .await;
    pricing
        .publish_refused(
            "write the order-service election key",
            "$KV.service_elections.sticky-active.order-service.default",
            b"evil",
        )
        .await;
    pricing
        .publish_headers_refused(
            "delete the order-service election key",
            "$KV.service_elections.sticky-active.order-service.default",
            kv_delete(),
        )
        .await;
    pricing
        .publish_refused(
            "forge a service definition (changed_by)",
            "$KV.service_definitions.order-service",
            br#"{"service_name":"order-service","owner":"evil","changed_by":"admin"}"#,
        )
        .await;
    pricing
        .publish_refused(
            "delete a consumer of EVENTS",
            "$JS.API.CONSUMER.DELETE.EVENTS.risk-1",
            b"",
        )
        .await;
    pricing
        .publish_refused(
            "purge the registry",
            "$JS.API.STREAM.PURGE.KV_service_registry",
            b"",
        )
        .await;
    pricing
        .publish_refused(
            "delete the EVENTS stream",
            "$JS.API.STREAM.DELETE.EVENTS",
            b"",
        )
        .await;
    pricing
        .publish_refused(
            "publish a control request",
            "aegis.control.order-service.order-1.config",
            b"",
        )
        .await;
    pricing
        .subscribe_refused("serve rpc.order-service.>", "rpc.order-service.>")
        .await;
    pricing
        .subscribe_refused("read every reply in the account", "_INBOX.>")
        .await;
    pricing
        .subscribe_refused("read the operator's replies", "_INBOX_operator.>")
        .await;
    pricing
        .publish_refused(
            "push a forged reply to an operator request",
            "_INBOX_operator.Fq1tFQXyNcwFhyZ5xZw3Kc.7",
            br#"{"order_id":"forged"}"#,
        )
        .await;

    println!("\n== as the monitor (a wrong role) ==");
    let mut monitor = Probe::connect(&url, "monitor", &monitor_pw).await;
    monitor
        .publish_refused(
            "call create_order",
            "rpc.order-service.create_order",
            br#"{"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"m"}"#,
        )
        .await;
    monitor
        .publish_refused(
            "write an ACTIVE record with a huge epoch",
            "$KV.service_registry.service-instances.order-service.evil",
            forged_record,
        )
        .await;
    monitor
        .publish_refused(
            "write $KV.risk_limits.limits",
            "$KV.risk_limits.limits",
            b"{}",
        )
        .await;
    monitor
        .publish_refused(
            "delete the orders bucket",
            "$JS.API.STREAM.DELETE.KV_orders",
            b"",
        )
        .await;
    monitor
        .publish_refused(
            "send a control verb other than config",
            "aegis.control.order-service.order-1.drain",
            b"",
        )
        .await;

    println!("\n== the showcase still serves ==");
    let operator = Connection::connect(config(&url, Some(("operator", &operator_pw))))
        .await
        .unwrap();
    let reply = operator
        .rpc()
        .call_active::<Value, Value>(
            "order-service",
            "default",
            "create_order",
            &json!({"symbol":"AAPL","side":"BUY","quantity":1,"client_order_id":"after-attack"}),
            &CallOptions::default(),
        )
        .await
        .expect("the operator's call reaches the leader");
    println!(
        "{:<20} {:<52} OK: served by {} (epoch {:?})",
        "operator",
        "create_order --active",
        reply.instance_id.as_deref().unwrap_or("?"),
        reply.epoch
    );
    assert!(reply.value["order_id"].is_string(), "{}", reply.value);
    let registry = operator
        .jetstream()
        .get_key_value("service_registry")
        .await
        .unwrap();
    assert!(
        registry
            .get("service-instances.order-service.evil")
            .await
            .unwrap()
            .is_none(),
        "no forged record landed"
    );
    operator.drain().await.unwrap();

    up.terminate_within(Duration::from_secs(30));
}
