//! Which worker runs a command, as its sender hears it, against a real
//! nats-server: every reply a worker sends names its instance in the
//! `Aegis-Instance` header (an older sender ignores it), and the sender's
//! handle says which instance sent the latest update, so a command that
//! restarts on another worker is seen to.

mod common;

use std::time::Duration;

use aegis_contracts::{
    commands::CommandReply,
    models::rfc3339,
    subjects,
    wire::{HEADER_COMMAND_ID, HEADER_INSTANCE, HEADER_REPLY_TO},
};
use aegis_sdk::commands::{Command, HEADER_DEADLINE, Progress};
use common::{connect, server};
use futures::StreamExt;
use serde_json::{Value, json};

/// Read on the wire: the progress and the result of a command carry the
/// instance id of the worker that sent them, in a header, and the body
/// is what it always was (an older sender reads it as before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reply_names_the_worker_instance_in_a_header() {
    const SERVICE: &str = "ledger-service";
    let nats = server();
    let conn = connect(&nats.url()).await;
    let worker = conn
        .commands()
        .worker(SERVICE)
        .handler(
            "rebuild_book",
            |_c: Command<Value>, progress: Progress| async move {
                progress.report(50.0, "half").await;
                Ok(json!("rebuilt"))
            },
        )
        .start()
        .await
        .unwrap();

    let inbox = conn.client().new_inbox();
    let mut replies = conn.client().subscribe(inbox.clone()).await.unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(10);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_COMMAND_ID, "c-1");
    headers.insert(HEADER_REPLY_TO, inbox.as_str());
    headers.insert(HEADER_DEADLINE, rfc3339::format_utc(&deadline).as_str());
    conn.jetstream()
        .publish_with_headers(
            subjects::command_subject(SERVICE, "rebuild_book"),
            headers,
            "{}".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let mut named = Vec::new();
    for _ in 0..2 {
        let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
            .await
            .expect("the worker answers")
            .unwrap();
        // The body is the protocol's, unchanged.
        serde_json::from_slice::<CommandReply>(&reply.payload).expect("a command reply");
        let instance = reply
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_INSTANCE))
            .map(|v| v.as_str().to_owned());
        named.push(instance);
    }
    let first = named[0].clone().expect("the progress names its worker");
    assert!(!first.is_empty());
    assert_eq!(
        named[1].as_deref(),
        Some(first.as_str()),
        "the result names the same worker"
    );
    worker.shutdown().await;
}

/// A worker that reports progress and goes silent holding the command
/// (its connection closed, as a dead process's does); another worker
/// takes it after its `ack_wait` and runs it from the start. The sender's
/// handle names the first worker for its progress, then the second for
/// the progress and the result of the run that completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_taken_again_is_seen_to_run_on_the_other_worker() {
    const SERVICE: &str = "desk-book";
    const ACK_WAIT: Duration = Duration::from_secs(2);
    let nats = server();
    let sender = connect(&nats.url()).await;
    let first_conn = connect(&nats.url()).await;
    let _first = first_conn
        .commands()
        .worker(SERVICE)
        .instance_id("desk-a")
        .ack_wait(ACK_WAIT)
        .handler(
            "rebuild_book",
            |_c: Command<Value>, progress: Progress| async move {
                progress.report(10.0, "starting").await;
                std::future::pending::<Result<Value, aegis_sdk::rpc::WireError>>().await
            },
        )
        .start()
        .await
        .unwrap();

    let mut handle = sender
        .commands()
        .send(SERVICE, "rebuild_book", &json!({}), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(handle.worker_instance(), None, "no reply yet");
    handle.next().await.unwrap();
    assert_eq!(handle.worker_instance(), Some("desk-a"));
    // The first worker goes silent: no more in-progress acks or replies.
    first_conn.client().drain().await.unwrap();

    let second_conn = connect(&nats.url()).await;
    let second = second_conn
        .commands()
        .worker(SERVICE)
        .instance_id("desk-b")
        .ack_wait(ACK_WAIT)
        .handler(
            "rebuild_book",
            |_c: Command<Value>, progress: Progress| async move {
                progress.report(10.0, "starting").await;
                Ok(json!({"by": progress.instance_id()}))
            },
        )
        .start()
        .await
        .unwrap();
    handle.next().await.unwrap();
    assert_eq!(
        handle.worker_instance(),
        Some("desk-b"),
        "the progress of the run on the other worker names it"
    );
    let result = handle.next().await.unwrap();
    assert_eq!(
        result,
        aegis_sdk::commands::CommandUpdate::Completed(json!({"by": "desk-b"}))
    );
    assert_eq!(handle.worker_instance(), Some("desk-b"));
    second.shutdown().await;
}

/// An instance id the registry would refuse is refused at start, before
/// any I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_worker_instance_id_is_refused() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let err = conn
        .commands()
        .worker("desk-book")
        .instance_id("not valid!")
        .handler("rebuild_book", |_c: Command<Value>, _p: Progress| async {
            Ok(json!(null))
        })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(err, aegis_sdk::commands::CommandError::InvalidName(_)),
        "{err:?}"
    );
}
