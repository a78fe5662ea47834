//! The queue depth an instance publishes counts the messages it received
//! and has not started handling, apart from the requests it is handling
//! (in flight): it is no copy of the in-flight count.
//!
//! Messages wait in an instance where a sticky leader's `leader_of`
//! command worker takes commands while the leader's lease has lapsed:
//! they wait for the lease before they run. The lapse is made by refusing
//! the leader's renewals in the election bucket (its stream takes no
//! message as large as a renewal) while the key still names the leader,
//! and undone by taking the limit away: the leader serves again at the
//! same epoch and the waiting commands run.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_sdk::{
    commands::{Command, Progress},
    contracts::{metrics::MetricsSnapshot, subjects},
    rpc::CallOptions,
};
use common::{connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;

const SERVICE: &str = "book-service";
const INSTANCE: &str = "book-1";
const WAITING: usize = 3;

/// Sets the largest message the election bucket's stream takes (`-1`: no
/// limit).
async fn election_writes_up_to(js: &async_nats::jetstream::Context, max_msg_size: i32) {
    let name = format!("KV_{}", subjects::ELECTIONS_BUCKET);
    let mut config = js
        .get_stream(&name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    config.max_message_size = max_msg_size;
    js.update_stream(config).await.unwrap();
}

/// The next published snapshot of `book-1` that `ok` accepts.
async fn snapshot_where(
    snapshots: &mut async_nats::Subscriber,
    what: &str,
    ok: impl Fn(&MetricsSnapshot) -> bool,
) -> MetricsSnapshot {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = None;
    loop {
        let Ok(msg) = tokio::time::timeout_at(deadline, snapshots.next()).await else {
            panic!("no snapshot where {what} within 10 s; the last: {last:?}");
        };
        let s: MetricsSnapshot = serde_json::from_slice(&msg.unwrap().payload).unwrap();
        if ok(&s) {
            return s;
        }
        last = Some(s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_counts_commands_waiting_for_the_lease_apart_from_requests_in_flight() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut snapshots = watcher
        .subscribe(subjects::metrics_subject(SERVICE, INSTANCE))
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(&watcher).await;

    let release = Arc::new(Notify::new());
    let service = conn
        .service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .single_active("default")
        .metrics_interval(Some(Duration::from_millis(100)))
        .handler_any_role("hold", {
            let release = release.clone();
            move |_: Value| {
                let release = release.clone();
                async move {
                    release.notified().await;
                    Ok(json!({"held": true}))
                }
            }
        })
        .start()
        .await
        .unwrap();
    let leadership = service.election().unwrap().leadership();
    eventually(Duration::from_secs(10), "book-1 leads", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    let epoch = leadership.serving_epoch().unwrap();

    let starts = Arc::new(AtomicUsize::new(0));
    let worker = conn
        .commands()
        .worker(SERVICE)
        .leader_of(&service)
        .concurrency(WAITING)
        .handler("rebuild_book", {
            let starts = starts.clone();
            move |cmd: Command<Value>, _: Progress| {
                let starts = starts.clone();
                async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    Ok(json!({"epoch": cmd.epoch}))
                }
            }
        })
        .start()
        .await
        .unwrap();

    // One request running: in flight, not waiting.
    let caller = connect(&nats.url()).await;
    let patient = CallOptions {
        timeout: Some(Duration::from_secs(30)),
        ..CallOptions::default()
    };
    let held = tokio::spawn({
        let caller = caller.clone();
        async move {
            caller
                .rpc()
                .call_instance::<_, Value>(SERVICE, INSTANCE, "hold", &json!({}), &patient)
                .await
        }
    });
    let s = snapshot_where(&mut snapshots, "one request is in flight", |s| {
        s.in_flight == 1
    })
    .await;
    assert_eq!(s.queue_depth, 0, "a running request is not waiting: {s:?}");

    // The lapse: the leader's renewals are refused, the key still names it.
    election_writes_up_to(conn.jetstream(), 16).await;
    eventually(
        Duration::from_secs(10),
        "book-1 stops serving when its lease runs out",
        || async { leadership.serving_epoch().is_none() },
    )
    .await;

    // Commands taken meanwhile wait for the lease, unstarted.
    let sent: Vec<_> = (0..WAITING)
        .map(|i| {
            let caller = caller.clone();
            tokio::spawn(async move {
                caller
                    .commands()
                    .send(
                        SERVICE,
                        "rebuild_book",
                        &json!({"i": i}),
                        Duration::from_secs(30),
                    )
                    .await
                    .unwrap()
                    .result::<Value>()
                    .await
            })
        })
        .collect();
    let s = snapshot_where(&mut snapshots, "the commands wait", |s| {
        s.queue_depth == WAITING as u64
    })
    .await;
    assert_eq!(s.in_flight, 1, "only the held request runs: {s:?}");
    assert_eq!(starts.load(Ordering::SeqCst), 0, "no command started");

    // The lease renewed: the commands run and leave the queue.
    election_writes_up_to(conn.jetstream(), -1).await;
    for command in sent {
        let result = command.await.unwrap().unwrap();
        assert_eq!(result, json!({"epoch": epoch}));
    }
    assert_eq!(starts.load(Ordering::SeqCst), WAITING);
    release.notify_one();
    held.await.unwrap().unwrap();
    snapshot_where(&mut snapshots, "nothing waits or runs", |s| {
        s.queue_depth == 0 && s.in_flight == 0
    })
    .await;

    worker.shutdown().await;
    service.shutdown().await.unwrap();
}
