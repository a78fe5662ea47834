//! A service's commands, shown where its methods are: against a real
//! nats-server, a service with a command worker, and the operator's tools
//! asked what it takes. `aegis call SERVICE --schema` lists its methods and
//! its commands, `aegis call SERVICE COMMAND --schema` describes a command,
//! `aegis status SERVICE` lists both, and `aegis command` with a mistyped
//! command says which it has, without sending it.

mod common;

use aegis_sdk::{
    AegisConfig, Connection,
    commands::{Command, Progress},
    rpc::WireError,
};
use aegis_testkit::NatsServer;
use serde::Deserialize;
use serde_json::{Value, json};

/// Reconciles one account's book with the exchange.
#[derive(Debug, Deserialize, aegis_sdk::schemars::JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
#[allow(dead_code)]
struct Reconcile {
    account: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_tools_show_a_services_commands() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let service = conn
        .service("ledger", "1.0.0")
        .instance_id("ledger-1")
        .handler(
            "balance",
            |_: ()| async move { Ok::<_, WireError>(json!(0)) },
        )
        .start()
        .await
        .unwrap();
    let worker = conn
        .commands()
        .worker("ledger")
        .handler(
            "reconcile",
            |cmd: Command<Reconcile>, _: Progress| async move {
                Ok::<_, WireError>(json!(cmd.payload.account))
            },
        )
        .handler("compact", |_: Command<Value>, _: Progress| async move {
            Ok::<_, WireError>(json!(null))
        })
        .start()
        .await
        .unwrap();

    // The whole listing: methods and commands.
    let (ok, out) = common::run_at(&["call", "ledger", "--schema"], &url).await;
    assert!(ok, "{out}");
    for name in [
        "balance",
        "reconcile",
        "compact",
        "commands.ledger.reconcile",
    ] {
        assert!(out.contains(name), "{name}: {out}");
    }

    // One command: its payload's schema, and how to send it.
    let (ok, out) = common::run_at(&["call", "ledger", "reconcile", "--schema"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"account\""), "{out}");
    assert!(out.contains("aegis command ledger reconcile"), "{out}");

    // A name that is neither: what it has.
    let (ok, out) = common::run_at(&["call", "ledger", "nope", "--schema"], &url).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("methods: balance") && out.contains("commands: reconcile, compact"),
        "{out}"
    );

    // The status of the service: its instance, its methods and commands.
    let (ok, out) = common::run_at(&["status", "ledger"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains("ledger-1"), "{out}");
    assert!(
        out.contains("commands: reconcile, compact") && out.contains("methods: balance"),
        "{out}"
    );

    // A mistyped command is refused with the names it has, unsent.
    let (ok, out) = common::run_at(
        &["command", "ledger", "reconcle", "--timeout-ms", "20000"],
        &url,
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("it has: reconcile, compact"), "{out}");
    assert!(!out.contains("queued"), "it was not sent: {out}");
    // --unlisted sends it all the same (a worker elsewhere may take it);
    // here none does.
    let (ok, out) = common::run_at(
        &[
            "command",
            "ledger",
            "reconcle",
            "--unlisted",
            "--timeout-ms",
            "3000",
        ],
        &url,
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("queued"), "it was sent: {out}");
    // A known one still runs.
    let (ok, out) = common::run_at(
        &["command", "ledger", "reconcile", r#"{"account":"A1"}"#],
        &url,
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("\"A1\""), "{out}");

    worker.shutdown().await;
    service.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}
