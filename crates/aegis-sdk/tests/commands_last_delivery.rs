//! The last delivery of a command, as the server's consumer allows it,
//! against a real nats-server: a worker that cannot run a command (it has
//! no handler for it) answers the sender on that delivery, with the
//! consumer's `max_deliver` on the server, not the one the worker was
//! built with. A command that never ran ends in a clear error, not in a
//! dead letter and a timeout that says it may have run.

mod common;

use std::time::{Duration, Instant};

use aegis_contracts::subjects;
use aegis_sdk::{
    Connection,
    commands::{Command, CommandError, CommandWorker, Progress},
    rpc::ErrorCode,
};
use async_nats::jetstream::consumer::{FromConsumer, pull};
use common::{connect, server};
use serde_json::{Value, json};

const SERVICE: &str = "ledger-service";

/// Starts a command worker for `service` that runs only `rebuild_book`.
async fn start_rebuilding_worker(conn: &Connection, service: &str) -> CommandWorker {
    conn.commands()
        .worker(service)
        .handler(
            "rebuild_book",
            |_: Command<Value>, _: Progress| async move { Ok(json!("rebuilt")) },
        )
        .start()
        .await
        .unwrap()
}

/// Sets the `max_deliver` of `service`'s commands consumer on the server,
/// as an operator may, behind the workers' backs.
async fn set_max_deliver_on_server(conn: &Connection, service: &str, max_deliver: i64) {
    let stream = conn
        .jetstream()
        .get_stream(subjects::COMMANDS_STREAM)
        .await
        .unwrap();
    let name = format!("{service}_commands");
    let info = stream.consumer_info(&name).await.unwrap();
    let mut config = pull::Config::try_from_consumer_config(info.config).unwrap();
    config.max_deliver = max_deliver;
    stream.update_consumer(config).await.unwrap();
}

/// The review's probe E2: the worker keeps the default `max_deliver` (5);
/// the consumer's on the server is lowered to 2 (by an operator, or by a
/// worker of another version started with 2). A command no worker knows
/// is answered NOT_FOUND on the second delivery, well before its deadline,
/// and nothing is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_no_worker_knows_is_answered_on_the_last_delivery_the_server_allows() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let worker = start_rebuilding_worker(&conn, SERVICE).await;
    set_max_deliver_on_server(&conn, SERVICE, 2).await;
    // Time itself is the condition here: the worker goes by the settings
    // it read from the server at most 2 s before (see pull.rs).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let sent = Instant::now();
    let timeout = Duration::from_secs(10);
    let err = conn
        .commands()
        .send(SERVICE, "unknown_cmd", &json!({}), timeout)
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    let took = sent.elapsed();
    match &err {
        CommandError::Failed(e) => assert_eq!(e.code, ErrorCode::NotFound, "{err:?}"),
        other => panic!("not answered NOT_FOUND after {took:?}: {other:?}"),
    }
    assert!(took < timeout / 2, "answered only after {took:?}");
    let dead = aegis_sdk::dead_letter::recent(conn.jetstream(), 10)
        .await
        .unwrap();
    assert!(dead.is_empty(), "dead-lettered: {dead:?}");
    worker.shutdown().await;
}

/// The review's D3: an unlimited `max_deliver` on the server (-1, set by
/// an operator) has no last delivery. A worker without a command's
/// handler (an older version during a rollout) passes it on to the one
/// with it, as it does under a limit, instead of answering NOT_FOUND at
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_unlimited_deliveries_a_worker_without_the_handler_passes_the_command_on() {
    const UNLIMITED: &str = "unlimited-service";
    let nats = server();
    let conn = connect(&nats.url()).await;
    let knowing = conn
        .commands()
        .worker(UNLIMITED)
        .handler(
            "rebuild_book",
            |_: Command<Value>, _: Progress| async move { Ok(json!("rebuilt")) },
        )
        .handler(
            "compact_book",
            |_: Command<Value>, _: Progress| async move { Ok(json!("compacted")) },
        )
        .start()
        .await
        .unwrap();
    let older = start_rebuilding_worker(&conn, UNLIMITED).await;
    set_max_deliver_on_server(&conn, UNLIMITED, -1).await;
    // Time itself is the condition here: the workers go by the settings
    // they read from the server at most 2 s before (see pull.rs).
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let sends = (0..10).map(|_| async {
        conn.commands()
            .send(
                UNLIMITED,
                "compact_book",
                &json!({}),
                Duration::from_secs(10),
            )
            .await
            .unwrap()
            .result::<Value>()
            .await
    });
    let results = futures::future::join_all(sends).await;
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(failed.is_empty(), "not all completed: {failed:?}");
    older.shutdown().await;
    knowing.shutdown().await;
}
