//! A leader whose lease lapses for a moment (its renewals went unanswered)
//! stops serving and serves again at the same epoch: its `leader_of`
//! command worker runs nothing new meanwhile, but the commands it is
//! running are not handed back, however long they take, and the commands
//! sent meanwhile run as soon as it serves again. Only a real deposal (a
//! successor, the key deleted, the stop) hands running commands back.
//!
//! The lapse is made as in `tests/election_start.rs`: the nats-server is
//! stopped (SIGSTOP) until the leader stops serving, then for a lease
//! more, and there is no standby to take over.

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
    election::LeaseConfig,
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

const SERVICE: &str = "book-service";
/// Longer than the 10 s a deposed worker lets a running command go on.
const LONG_RUN: Duration = Duration::from_secs(12);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lapse_of_the_lease_neither_hands_back_running_commands_nor_stalls_new_ones() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new(
            "aegis_sdk::election=debug,aegis_sdk::commands=debug",
        ))
        .try_init();
    let mut nats = server();
    let conn = connect(&nats.url()).await;
    let service = conn
        .service(SERVICE, "1.0.0")
        .instance_id("book-1")
        .single_active("default")
        .handler_any_role("ping", |_: Value| async move { Ok(json!({"ok": true})) })
        .start()
        .await
        .unwrap();
    let election = service.election().unwrap();
    let leadership = election.leadership();
    eventually(Duration::from_secs(10), "book-1 leads", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    let epoch = leadership.serving_epoch().unwrap();

    let long_starts = Arc::new(AtomicUsize::new(0));
    let worker = conn
        .commands()
        .worker(SERVICE)
        .leader_of(&service)
        .concurrency(2)
        .handler("rebuild_book", {
            let starts = long_starts.clone();
            move |cmd: Command<Value>, _: Progress| {
                let starts = starts.clone();
                async move {
                    starts.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(LONG_RUN).await;
                    Ok(json!({"epoch": cmd.epoch}))
                }
            }
        })
        .handler("quote", |cmd: Command<Value>, _: Progress| async move {
            Ok(json!({"epoch": cmd.epoch}))
        })
        .start()
        .await
        .unwrap();

    let sender = connect(&nats.url()).await;
    let long = sender
        .commands()
        .send(SERVICE, "rebuild_book", &json!({}), Duration::from_secs(40))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the long command runs", || {
        let n = long_starts.load(Ordering::SeqCst);
        async move { n == 1 }
    })
    .await;

    // The lapse: no renewal is answered until the leader stops serving,
    // and for a lease more.
    nats.pause();
    eventually(
        Duration::from_secs(10),
        "book-1 stops serving when its lease runs out",
        || async { leadership.serving_epoch().is_none() },
    )
    .await;
    // Sent while it does not serve: stored once the server runs again.
    let quote = tokio::spawn({
        let sender = sender.clone();
        async move {
            sender
                .commands()
                .send(SERVICE, "quote", &json!({}), Duration::from_secs(5))
                .await
                .unwrap()
                .result::<Value>()
                .await
        }
    });
    tokio::time::sleep(LeaseConfig::default().lease).await;
    nats.resume();
    eventually(Duration::from_secs(10), "book-1 serves again", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    assert_eq!(
        leadership.serving_epoch(),
        Some(epoch),
        "a lapse, not a new term"
    );

    // The command sent during the lapse runs as soon as book-1 serves
    // again, beside the long one, well before the long one ends.
    let quoted = quote.await.unwrap();
    assert_eq!(
        quoted.unwrap(),
        json!({"epoch": epoch}),
        "the command sent during the lapse did not run once book-1 served again"
    );
    // The long command was not handed back and run again: it completes,
    // from its only start.
    let rebuilt: Value = long.result().await.unwrap();
    assert_eq!(rebuilt, json!({"epoch": epoch}));
    assert_eq!(
        long_starts.load(Ordering::SeqCst),
        1,
        "the running command was handed back at the lapse and ran again"
    );

    worker.shutdown().await;
    service.shutdown().await.unwrap();
}
