//! A command's sender takes progress and results only from the service it
//! sent the command to: on the command's own inbox
//! (`{prefix}.cmd.{service}.{id}`) and naming that service in the
//! `Aegis-Service` header, as every worker's reply does. Here on a bus
//! without permissions (anyone may publish anywhere): a forged
//! `completed` without the header, or naming another service, is dropped,
//! and the real worker's result is the one returned. (On the showcase's
//! bus only the addressed service's user may publish to that inbox at
//! all: `aegis/tests/command_inbox.rs`.)

mod common;

use std::time::Duration;

use aegis_contracts::wire::{HEADER_INSTANCE, HEADER_REPLY_TO};
use aegis_sdk::commands::{Command, CommandUpdate, HEADER_SERVICE, Progress};
use common::{connect, server};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_not_from_the_addressed_service_are_dropped() {
    const SERVICE: &str = "ledger-service";
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut handle = conn
        .commands()
        .send(SERVICE, "rebuild_book", &json!({}), Duration::from_secs(20))
        .await
        .unwrap();
    let stream = conn.jetstream().get_stream("COMMANDS").await.unwrap();
    let queued = stream
        .get_last_raw_message_by_subject("commands.ledger-service.rebuild_book")
        .await
        .unwrap();
    let inbox = queued
        .headers
        .get(HEADER_REPLY_TO)
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(
        inbox,
        format!("_INBOX.cmd.{SERVICE}.{}", handle.id()),
        "the command's own inbox, under the connection's prefix"
    );

    // Forged results: no service named, another service named.
    let forged = br#"{"kind":"completed","result":{"forged":true}}"#;
    for claimed in [None, Some("pricing-service")] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_INSTANCE, "ledger-1");
        if let Some(service) = claimed {
            headers.insert(HEADER_SERVICE, service);
        }
        conn.client()
            .publish_with_headers(inbox.clone(), headers, forged[..].into())
            .await
            .unwrap();
    }
    conn.client().flush().await.unwrap();

    // The real worker, started after the forgeries were sent.
    let _worker = conn
        .commands()
        .worker(SERVICE)
        .instance_id("ledger-1")
        .handler(
            "rebuild_book",
            |_c: Command<Value>, progress: Progress| async move {
                progress.report(50.0, "half").await;
                Ok(json!({"rebuilt": true}))
            },
        )
        .start()
        .await
        .unwrap();
    let first = handle.next().await.unwrap();
    assert_eq!(
        first,
        CommandUpdate::Progress {
            percent: 50.0,
            message: "half".to_owned()
        }
    );
    let done = handle.next().await.unwrap();
    assert_eq!(done, CommandUpdate::Completed(json!({"rebuilt": true})));
    assert_eq!(handle.worker_instance(), Some("ledger-1"));
}
