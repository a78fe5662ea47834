//! `aegis_sdk::kv::mirror` against a real nats-server: the initial load,
//! then every write and removal with its revision; a bucket that does not
//! exist is an error at once; cancelling ends it.

mod common;

use std::time::Duration;

use aegis_sdk::kv::{Mirrored, Removal, mirror};
use async_nats::jetstream::kv;
use common::{connect, server};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const BUCKET: &str = "mirror_test";

async fn next(rx: &mut mpsc::UnboundedReceiver<Mirrored>) -> Mirrored {
    tokio::time::timeout(Duration::from_secs(15), rx.recv())
        .await
        .expect("an update within 15 s")
        .expect("the mirror still running")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loads_then_hands_over_writes_and_removals() {
    let server = server();
    let conn = connect(&server.url()).await;
    let store = conn
        .jetstream()
        .create_key_value(kv::Config {
            bucket: BUCKET.to_owned(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    store.put("a.1", "old".into()).await.unwrap();
    let a1 = store.put("a.1", "new".into()).await.unwrap();
    store.put("b.1", "out of scope".into()).await.unwrap();
    store.put("a.2", "gone".into()).await.unwrap();
    store.delete("a.2").await.unwrap();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    mirror(&conn, BUCKET, "a.>", cancel.clone(), move |update| {
        let _ = tx.send(update);
    })
    .await
    .expect("the mirror starts");

    let Mirrored::Loaded {
        entries,
        fresh,
        snapshot,
        through,
        ..
    } = next(&mut rx).await
    else {
        panic!("a load first");
    };
    assert!(!fresh && !snapshot);
    let loaded: Vec<_> = entries
        .iter()
        .map(|e| (e.key.as_str(), e.revision, e.value.as_ref()))
        .collect();
    assert_eq!(loaded, vec![("a.1", a1, b"new".as_slice())]);
    // b.1, a.2 and a.2's delete marker came after a.1's last write.
    assert_eq!(through, a1 + 3, "the load covers a.2's removal");

    let a3 = store.put("a.3", "x".into()).await.unwrap();
    store.put("b.2", "out of scope".into()).await.unwrap();
    match next(&mut rx).await {
        Mirrored::Put(e) => assert_eq!((e.key.as_str(), e.revision), ("a.3", a3)),
        other => panic!("expected a.3 written, got {other:?}"),
    }
    store.delete("a.1").await.unwrap();
    match next(&mut rx).await {
        Mirrored::Removed { key, revision, how } => {
            assert_eq!((key.as_str(), how), ("a.1", Removal::Deleted));
            assert!(revision > a3, "the marker's revision: {revision}");
        }
        other => panic!("expected a.1 removed, got {other:?}"),
    }

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), async {
        while rx.recv().await.is_some() {}
    })
    .await
    .expect("cancelling ends the mirror (its sender drops)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_bucket_is_an_error() {
    let server = server();
    let conn = connect(&server.url()).await;
    let started = mirror(
        &conn,
        "no_such_bucket",
        ">",
        CancellationToken::new(),
        |_| {},
    )
    .await;
    assert!(started.is_err(), "a mirror of a missing bucket started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_keys_is_an_error_that_says_so() {
    let server = server();
    let conn = connect(&server.url()).await;
    let started = mirror(&conn, BUCKET, "", CancellationToken::new(), |_| {}).await;
    let err = started.expect_err("a mirror of no keys started");
    assert!(err.to_string().contains("no keys"), "{err}");
}
