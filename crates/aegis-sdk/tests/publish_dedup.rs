//! `streams::publish_deduplicated`: a message whose acknowledgement does not
//! come, or whose stream has no leader this moment, is sent again under the
//! same id, so a stream that changes leader mid-publish costs a fraction of
//! a second instead of a whole timeout (or an error), and nothing is stored
//! twice.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::streams::{publish_deduplicated, with_placement_patience};
use aegis_testkit::NatsCluster;
use async_nats::{
    HeaderMap,
    jetstream::{context::PublishErrorKind, stream},
};

async fn stream_info(js: &async_nats::jetstream::Context) -> stream::Info {
    js.get_stream("EV")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone()
}

fn expect_subject_sequence(seq: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        seq.to_string().as_str(),
    );
    headers
}

#[tokio::test]
async fn the_same_id_is_stored_once_and_a_stale_expectation_refused_at_once() {
    let server = common::server();
    let conn = common::connect(&server.url()).await;
    conn.jetstream()
        .create_stream(stream::Config {
            name: "T".into(),
            subjects: vec!["t.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let publish = |id: &'static str, headers: HeaderMap| {
        publish_deduplicated(&conn, "t.a".into(), id, headers, "x".into())
    };

    let first = publish("write-1", HeaderMap::new()).await.unwrap();
    assert_eq!((first.sequence, first.duplicate), (1, false));
    let again = publish("write-1", HeaderMap::new()).await.unwrap();
    assert_eq!((again.sequence, again.duplicate), (1, true));

    // A compare-and-set sent again after its first copy landed is refused
    // (the server checks the expectation before the id): the subject's
    // last message names the write that landed.
    let started = Instant::now();
    let refused = publish("write-2", expect_subject_sequence(0))
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), PublishErrorKind::WrongLastSequence);
    assert!(started.elapsed() < Duration::from_millis(500));
    let last = conn
        .jetstream()
        .get_stream("T")
        .await
        .unwrap()
        .get_last_raw_message_by_subject("t.a")
        .await
        .unwrap();
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .map(|v| v.as_str());
    assert_eq!(id, Some("write-1"));

    // No stream covers the subject: said within a second (a stream between
    // two leaders answers the same for a few milliseconds).
    let started = Instant::now();
    let missing =
        publish_deduplicated(&conn, "nowhere.a".into(), "w", HeaderMap::new(), "x".into())
            .await
            .unwrap_err();
    assert_eq!(missing.kind(), PublishErrorKind::StreamNotFound);
    assert!(started.elapsed() < Duration::from_millis(1500));
}

#[tokio::test]
async fn publishes_ride_out_stream_leader_changes() {
    let mut cluster = NatsCluster::start(3).unwrap();
    cluster.wait_ready(Duration::from_secs(30)).unwrap();
    let conn = common::connect_cluster(cluster.urls(), 3).await;
    let js = conn.jetstream().clone();
    // The meta leader may still lack a peer's statistics when the cluster
    // reads ready, and refuses placement until they come: the SDK's own
    // creations wait that out, and so does this one.
    let config = stream::Config {
        name: "EV".into(),
        subjects: vec!["ev.>".into()],
        num_replicas: 3,
        ..Default::default()
    };
    with_placement_patience("EV", || js.create_stream(config.clone()))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let (conn, stop) = (conn.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let (mut sent, mut slowest) = (0u64, Duration::ZERO);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                publish_deduplicated(
                    &conn,
                    format!("ev.{p}"),
                    &format!("{p}-{sent}"),
                    HeaderMap::new(),
                    "x".into(),
                )
                .await
                .unwrap_or_else(|e| panic!("publish {p}-{sent} failed: {e}"));
                slowest = slowest.max(started.elapsed());
                sent += 1;
            }
            (sent, slowest)
        }));
    }

    let mut leader = String::new();
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = stream_info(&js)
            .await
            .cluster
            .and_then(|c| c.leader)
            .unwrap_or_default();
        let _ = conn
            .client()
            .request("$JS.API.STREAM.LEADER.STEPDOWN.EV", "".into())
            .await;
        common::eventually(Duration::from_secs(15), "a new stream leader", || {
            let js = js.clone();
            let before = before.clone();
            async move {
                let Ok(mut stream) = js.get_stream("EV").await else {
                    return false;
                };
                stream
                    .info()
                    .await
                    .ok()
                    .and_then(|i| i.cluster.clone())
                    .and_then(|c| c.leader)
                    .is_some_and(|l| l != before)
            }
        })
        .await;
        leader = before;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);

    let (mut total, mut slowest) = (0, Duration::ZERO);
    for publisher in publishers {
        let (sent, slow) = publisher.await.unwrap();
        total += sent;
        slowest = slowest.max(slow);
    }
    let stored = stream_info(&js).await.state.messages;
    eprintln!(
        "{total} publishes across 6 leader changes (last from {leader}); slowest {slowest:?}"
    );
    assert_eq!(stored, total, "every acknowledged message stored once");
    assert!(
        slowest < Duration::from_millis(1500),
        "the slowest publish took {slowest:?}"
    );
}
