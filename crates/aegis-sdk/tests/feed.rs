//! `aegis_sdk::feed` against a real nats-server: messages in order from
//! where it starts, then new ones; and it ends, with the reason, when its
//! consumer goes away or the connection is re-established, rather than
//! waiting quietly for what can no longer come.

mod common;

use std::time::Duration;

use aegis_sdk::feed::{Feed, FeedBroken, feed};
use async_nats::jetstream::{consumer::DeliverPolicy, stream};
use common::{connect, server};
use futures::StreamExt;

async fn next(messages: &mut Feed) -> Result<async_nats::jetstream::Message, FeedBroken> {
    tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .expect("the feed says something within 10 s")
        .expect("the feed has not ended")
}

async fn stream_with(conn: &aegis_sdk::Connection, count: usize) -> stream::Stream {
    let js = conn.jetstream();
    let stream = js
        .create_stream(stream::Config {
            name: "FEED_TEST".into(),
            subjects: vec!["feed.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    for i in 1..=count {
        js.publish(format!("feed.{i}"), "x".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hands_over_messages_in_order_from_where_it_starts() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let stream = stream_with(&conn, 3).await;
    let deliver = DeliverPolicy::ByStartSequence { start_sequence: 2 };
    let mut messages = feed(&conn, &stream, "feed.>", deliver).await;
    for expected in [2, 3] {
        let message = next(&mut messages).await.unwrap();
        assert_eq!(message.info().unwrap().stream_sequence, expected);
    }
    conn.jetstream()
        .publish("feed.4", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let message = next(&mut messages).await.unwrap();
    assert_eq!(message.subject.as_str(), "feed.4");
}

/// The consumer deleted under it (as when its node dies): the feed ends
/// within seconds, not after async-nats's ordered consumer's 30 s and more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_when_its_consumer_is_gone() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let stream = stream_with(&conn, 1).await;
    let mut messages = feed(&conn, &stream, "feed.>", DeliverPolicy::All).await;
    next(&mut messages).await.unwrap();
    let names: Vec<String> = stream
        .consumer_names()
        .map(|name| name.unwrap())
        .collect()
        .await;
    assert_eq!(names.len(), 1, "{names:?}");
    let started = std::time::Instant::now();
    stream.delete_consumer(&names[0]).await.unwrap();
    let broken = next(&mut messages).await.unwrap_err();
    eprintln!("ended {:?} after the delete: {broken}", started.elapsed());
    assert!(
        matches!(broken, FeedBroken::Silent | FeedBroken::Consumer(_)),
        "{broken:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(messages.next().await.is_none(), "a broken feed ends");
}

/// A reconnect may lose a pull in flight: the feed ends and says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ends_when_the_connection_is_re_established() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let stream = stream_with(&conn, 1).await;
    let mut messages = feed(&conn, &stream, "feed.>", DeliverPolicy::All).await;
    next(&mut messages).await.unwrap();
    conn.client().force_reconnect().await.unwrap();
    assert_eq!(
        next(&mut messages).await.unwrap_err(),
        FeedBroken::Reconnected
    );
}

/// A feed whose stream is gone (its bucket deleted by an operator) keeps
/// trying to open, but the server's "stream not found" slows it down to
/// one attempt every 2 s at most: every instance of a fleet asking ten
/// times a second would load JetStream's API for nothing. Once the stream
/// is back, the feed opens within that pause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_longer_between_attempts_while_its_stream_is_missing() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let stream = stream_with(&conn, 0).await;
    conn.jetstream().delete_stream("FEED_TEST").await.unwrap();
    // Every attempt to make the consumer, as the server receives it (seen
    // from another connection: the SDK's does not echo its own).
    let observer = async_nats::connect(nats.url()).await.unwrap();
    let mut attempts = observer.subscribe("$JS.API.CONSUMER.>").await.unwrap();
    observer.flush().await.unwrap();
    let opening = tokio::spawn({
        let conn = conn.clone();
        async move { feed(&conn, &stream, "feed.>", DeliverPolicy::All).await }
    });
    let window = Duration::from_secs(5);
    let mut count = 0;
    let _ = tokio::time::timeout(window, async {
        while attempts.next().await.is_some() {
            count += 1;
        }
    })
    .await;
    eprintln!("{count} attempts to open in {window:?} while the stream was missing");
    assert!(count <= 8, "{count} attempts in {window:?}");

    let back = std::time::Instant::now();
    stream_with(&conn, 1).await;
    let mut messages = tokio::time::timeout(Duration::from_secs(10), opening)
        .await
        .expect("the feed opens once its stream is back")
        .unwrap();
    let took = back.elapsed();
    eprintln!("opened {took:?} after the stream was made again");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        next(&mut messages).await.unwrap().subject.as_str(),
        "feed.1"
    );
}
