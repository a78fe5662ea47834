//! `GET /api/services/{service}/methods` against a real nats-server: the
//! methods of a running service and, in `commands`, the commands its
//! instances' command workers take, with their payload schema, whichever
//! instance answers first.

mod common;

use std::time::Duration;

use aegis_sdk::{
    commands::{Command, Progress},
    rpc::WireError,
};
use common::{Harness, VIEWER, eventually};
use serde::Deserialize;
use serde_json::json;

/// Reconciles one account's book with the exchange.
#[derive(Debug, Deserialize, aegis_sdk::schemars::JsonSchema)]
#[schemars(crate = "aegis_sdk::schemars")]
#[allow(dead_code)]
struct Reconcile {
    account: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_methods_route_lists_the_commands_a_service_takes() {
    let h = Harness::start().await;
    // One process runs an instance and the service's command worker; a
    // second runs an instance only, so it lists no command.
    let with_worker = h.connect().await;
    let without = h.connect().await;
    let start = |conn: &aegis_sdk::Connection, id: &'static str| {
        conn.service("ledger", "1.0.0")
            .instance_id(id)
            .handler(
                "balance",
                |_: ()| async move { Ok::<_, WireError>(json!(0)) },
            )
            .start()
    };
    let first = start(&with_worker, "ledger-1").await.unwrap();
    let second = start(&without, "ledger-2").await.unwrap();
    let worker = with_worker
        .commands()
        .worker("ledger")
        .handler(
            "reconcile",
            |cmd: Command<Reconcile>, _: Progress| async move {
                Ok::<_, WireError>(json!(cmd.payload.account))
            },
        )
        .start()
        .await
        .unwrap();

    // Whichever instance answers first, the command is listed.
    for _ in 0..5 {
        let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
        r.expect(200, None);
        let methods: Vec<&str> = r.body["methods"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        assert_eq!(methods, ["balance"], "{}", r.body);
        let commands = r.body["commands"].as_array().expect("a commands list");
        assert_eq!(commands.len(), 1, "{}", r.body);
        let c = &commands[0];
        assert_eq!(c["name"], "reconcile");
        assert_eq!(c["subject"], "commands.ledger.reconcile");
        assert_eq!(c["leaderOnly"], false);
        assert_eq!(
            c["description"],
            "Reconciles one account's book with the exchange."
        );
        assert_eq!(
            c["payloadSchema"]["properties"]["account"]["type"], "string",
            "{c}"
        );
        assert_eq!(c["instanceIds"], json!(["ledger-1"]), "{c}");
    }

    // A stopped worker's command goes; the methods stay.
    worker.shutdown().await;
    eventually(
        Duration::from_secs(5),
        "the stopped worker's command is unlisted",
        || async {
            let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
            r.body["commands"] == json!([]) && r.body["methods"].as_array().unwrap().len() == 1
        },
    )
    .await;

    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_methods_route_says_when_no_instance_answers() {
    let h = Harness::start().await;
    let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
    r.expect(404, Some("SERVICE_NOT_FOUND"));
    let r = h
        .get("/api/services/Not_A_Service/methods", Some(VIEWER))
        .await;
    r.expect(404, Some("SERVICE_NOT_FOUND"));
}
