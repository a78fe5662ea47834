//! A service's commands are listed where its methods are: an instance whose
//! connection runs a command worker of its service lists the worker's
//! commands in its `$SRV.INFO` answer, as endpoints marked `kind: command`
//! on their subject `commands.{service}.{command}`, with the JSON Schema of
//! their payload; [`describe`](aegis_sdk::rpc::describe) sorts them from
//! the methods. A worker that stops is no longer listed.

mod common;

use std::time::Duration;

use aegis_sdk::{
    commands::{Command, Progress},
    rpc::WireError,
};
use common::{connect, eventually, server};
use serde::Deserialize;
use serde_json::{Value, json};

/// Reconciles one account's book with the exchange.
#[derive(Debug, Deserialize, aegis_sdk::schemars::JsonSchema)]
#[allow(dead_code)]
struct Reconcile {
    account: String,
}

/// The `$SRV.INFO` answer of `ledger-1`.
async fn info(client: &async_nats::Client) -> Value {
    let reply = client
        .request("$SRV.INFO.ledger.ledger-1", "".into())
        .await
        .unwrap();
    serde_json::from_slice(&reply.payload).unwrap()
}

/// The endpoints of an INFO answer marked as commands, by name.
fn commands(info: &Value) -> Vec<&Value> {
    info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["kind"] == "command")
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_lists_the_commands_its_worker_takes() {
    let nats = server();
    let conn = connect(&nats.url()).await;
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
    let probe = async_nats::connect(nats.url()).await.unwrap();

    let described = info(&probe).await;
    let listed = commands(&described);
    let names: Vec<&str> = listed.iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["reconcile", "compact"], "{described}");
    let reconcile = listed[0];
    assert_eq!(reconcile["subject"], "commands.ledger.reconcile");
    assert_eq!(reconcile["metadata"]["leader_only"], "false");
    assert_eq!(
        reconcile["metadata"]["description"],
        "Reconciles one account's book with the exchange."
    );
    let schema: Value =
        serde_json::from_str(reconcile["metadata"]["request_schema"].as_str().unwrap()).unwrap();
    assert_eq!(
        schema["properties"]["account"]["type"], "string",
        "{schema}"
    );
    // The method is still listed, as a method.
    let method = &described["endpoints"][0];
    assert_eq!(method["name"], "balance");
    assert!(method["metadata"].get("kind").is_none(), "{method}");

    // Callers' side: commands apart from methods.
    let d = aegis_sdk::rpc::describe(&probe, "ledger", Duration::from_secs(2))
        .await
        .unwrap();
    let methods: Vec<&str> = d.methods.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(methods, ["balance"]);
    let commands_seen: Vec<&str> = d.commands.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(commands_seen, ["reconcile", "compact"]);
    assert_eq!(d.commands[0].subject, "commands.ledger.reconcile");
    assert!(!d.commands[0].leader_only);
    assert_eq!(
        d.commands[0].payload_schema.as_ref().unwrap()["properties"]["account"]["type"],
        "string"
    );

    // A stopped worker is no longer listed; the methods stay.
    worker.shutdown().await;
    eventually(
        Duration::from_secs(5),
        "the stopped worker is unlisted",
        || async { commands(&info(&probe).await).is_empty() },
    )
    .await;
    let d = aegis_sdk::rpc::describe(&probe, "ledger", Duration::from_secs(2))
        .await
        .unwrap();
    assert!(d.commands.is_empty());
    assert_eq!(d.methods.len(), 1);

    service.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_only_worker_is_listed_by_the_instance_it_follows() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let start = |id: &'static str| {
        conn.service("book", "1.0.0")
            .instance_id(id)
            .single_active("default")
            .handler("best_bid", |_: ()| async move {
                Ok::<_, WireError>(json!(null))
            })
            .start()
    };
    let first = start("book-1").await.unwrap();
    let second = start("book-2").await.unwrap();
    let worker = conn
        .commands()
        .worker("book")
        .leader_of(&first)
        .handler("rebuild", |_: Command<Value>, _: Progress| async move {
            Ok::<_, WireError>(json!(null))
        })
        .start()
        .await
        .unwrap();
    let probe = async_nats::connect(nats.url()).await.unwrap();
    let info = |id: &'static str| {
        let probe = probe.clone();
        async move {
            let reply = probe
                .request(format!("$SRV.INFO.book.{id}"), "".into())
                .await
                .unwrap();
            serde_json::from_slice::<Value>(&reply.payload).unwrap()
        }
    };
    let followed = info("book-1").await;
    let listed = commands(&followed);
    assert_eq!(listed.len(), 1, "{followed}");
    assert_eq!(listed[0]["name"], "rebuild");
    assert_eq!(listed[0]["metadata"]["leader_only"], "true");
    let other = info("book-2").await;
    assert!(commands(&other).is_empty(), "{other}");

    worker.shutdown().await;
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}
