//! `aegis_sdk::kv::follow` against a real nats-server: the initial load then
//! every change, deletions included; cancelling ends it; a bucket that is
//! missing at first is waited for; after a break the watch opens again,
//! replaying (a bucket created again is followed) or after the last
//! revision handed over.

mod common;

use std::time::Duration;

use aegis_sdk::kv::{Resume, follow};
use async_nats::jetstream::kv::{self, Operation};
use common::{connect, server};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "follow_test";

/// What `follow` handed over: key, revision, operation.
type Seen = (String, u64, Operation);

/// Starts `follow` on `store`, sending what it hands over to the receiver.
fn start(
    conn: &aegis_sdk::Connection,
    store: kv::Store,
    resume: Resume,
    cancel: &CancellationToken,
) -> (tokio::task::JoinHandle<()>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(follow(
        conn.clone(),
        store,
        ">",
        resume,
        cancel.clone(),
        move |e| {
            let _ = tx.send((e.key, e.revision, e.operation));
        },
    ));
    (task, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("an entry within 15 s")
        .expect("follow still running")
}

async fn bucket(js: &async_nats::jetstream::Context) -> kv::Store {
    js.create_key_value(kv::Config {
        bucket: BUCKET.to_owned(),
        history: 1,
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_then_follows_changes_until_cancelled() {
    let server = server();
    let conn = connect(&server.url()).await;
    let store = bucket(conn.jetstream()).await;
    store.put("a", "1".into()).await.unwrap();
    store.put("a", "2".into()).await.unwrap();
    store.put("b", "1".into()).await.unwrap();

    let cancel = CancellationToken::new();
    let (task, mut rx) = start(&conn, store.clone(), Resume::Replay, &cancel);
    // The load: the latest value of each key only.
    assert_eq!(next(&mut rx).await, ("a".into(), 2, Operation::Put));
    assert_eq!(next(&mut rx).await, ("b".into(), 3, Operation::Put));
    // Then every change, a deletion included.
    store.delete("a").await.unwrap();
    store.put("c", "1".into()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("a".into(), 4, Operation::Delete));
    assert_eq!(next(&mut rx).await, ("c".into(), 5, Operation::Put));

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("follow ends once cancelled")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_waited_for() {
    let server = server();
    let conn = connect(&server.url()).await;
    let js = conn.jetstream();
    // A handle on a bucket, then the bucket gone: opening the watch fails.
    let store = bucket(js).await;
    js.delete_key_value(BUCKET).await.unwrap();

    let cancel = CancellationToken::new();
    let (_task, mut rx) = start(&conn, store, Resume::Replay, &cancel);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_err(), "nothing to hand over yet");
    // Created again: the next attempt opens the watch.
    let again = bucket(js).await;
    again.put("a", "1".into()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("a".into(), 1, Operation::Put));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_break_resume_after_last_skips_what_it_handed_over() {
    let server = server();
    let conn = connect(&server.url()).await;
    let js = conn.jetstream();
    let store = bucket(js).await;
    store.put("a", "1".into()).await.unwrap();
    store.put("b", "1".into()).await.unwrap();
    let cancel = CancellationToken::new();
    let (_task, mut rx) = start(&conn, store, Resume::AfterLast, &cancel);
    assert_eq!(next(&mut rx).await.1, 1);
    assert_eq!(next(&mut rx).await.1, 2);

    // Breaking the watch: the bucket deleted and created again (which is
    // what AfterLast must not be used for, but it shows where it resumes).
    js.delete_key_value(BUCKET).await.unwrap();
    let again = bucket(js).await;
    for key in ["p", "q", "r"] {
        again.put(key, "1".into()).await.unwrap();
    }
    // Revisions 1 and 2 were handed over: it resumes at 3.
    assert_eq!(next(&mut rx).await, ("r".into(), 3, Operation::Put));
    cancel.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_created_again_is_followed_when_replaying() {
    let server = server();
    let conn = connect(&server.url()).await;
    let js = conn.jetstream();
    let store = bucket(js).await;
    store.put("a", "1".into()).await.unwrap();
    let cancel = CancellationToken::new();
    let (_task, mut rx) = start(&conn, store, Resume::Replay, &cancel);
    assert_eq!(next(&mut rx).await, ("a".into(), 1, Operation::Put));

    js.delete_key_value(BUCKET).await.unwrap();
    let again = bucket(js).await;
    again.put("x", "1".into()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("x".into(), 1, Operation::Put));
    cancel.cancel();
}

/// The watch's consumer deleted under it, as when the NATS node it lives
/// on dies: a change made afterwards is handed over within seconds, not
/// after the tens of seconds an ordered consumer waits for heartbeats it
/// no longer gets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_after_its_consumer_is_gone_is_handed_over_within_seconds() {
    use futures::StreamExt;
    let server = server();
    let conn = connect(&server.url()).await;
    let js = conn.jetstream();
    let store = bucket(js).await;
    store.put("a", "1".into()).await.unwrap();
    let cancel = CancellationToken::new();
    let (_task, mut rx) = start(&conn, store.clone(), Resume::AfterLast, &cancel);
    assert_eq!(next(&mut rx).await, ("a".into(), 1, Operation::Put));

    let stream = js.get_stream(format!("KV_{BUCKET}")).await.unwrap();
    let names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    assert_eq!(names.len(), 1, "one consumer, the watch's: {names:?}");
    stream.delete_consumer(&names[0]).await.unwrap();
    let started = std::time::Instant::now();
    store.put("b", "1".into()).await.unwrap();
    assert_eq!(next(&mut rx).await, ("b".into(), 2, Operation::Put));
    let took = started.elapsed();
    eprintln!("handed over {took:?} after the consumer was deleted");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    cancel.cancel();
}
