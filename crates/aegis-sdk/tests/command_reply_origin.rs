//! A command's sender takes progress and results only on the command's own
//! inbox (`{prefix}.cmd.{service}.{id}`), and not from a reply that names
//! another service in the `Aegis-Service` header. Here on a bus without
//! permissions (anyone may publish anywhere): a `completed` naming another
//! service is dropped, and the real worker's result is the one returned;
//! a reply without the header, as a worker built before it sends, is
//! taken. (On the showcase's bus only the addressed service's user may
//! publish to that inbox at all: `aegis/tests/command_inbox.rs`; that is
//! the protection, since a publisher may set any header.)

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

    // A forged result naming another service, and one sent elsewhere.
    let forged = br#"{"kind":"completed","result":{"forged":true}}"#;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_INSTANCE, "ledger-1");
    headers.insert(HEADER_SERVICE, "pricing-service");
    conn.client()
        .publish_with_headers(inbox.clone(), headers.clone(), forged[..].into())
        .await
        .unwrap();
    conn.client()
        .publish_with_headers(format!("{inbox}.x"), headers, forged[..].into())
        .await
        .unwrap();
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

/// A worker built before the `Aegis-Service` header sends none: its
/// replies on the command's inbox are taken, so workers need not be
/// upgraded before senders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_without_the_header_is_taken() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut handle = conn
        .commands()
        .send(
            "ledger-service",
            "rebuild_book",
            &json!({}),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    let inbox = format!("_INBOX.cmd.ledger-service.{}", handle.id());
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_INSTANCE, "ledger-1");
    conn.client()
        .publish_with_headers(
            inbox,
            headers,
            br#"{"kind":"completed","result":{"rebuilt":true}}"#[..].into(),
        )
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), handle.next())
        .await
        .expect("the reply within 10 s")
        .unwrap();
    assert_eq!(done, CommandUpdate::Completed(json!({"rebuilt": true})));
}
