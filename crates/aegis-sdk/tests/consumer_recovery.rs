//! Durable consumers deleted under a running event subscription or command
//! worker (by an operator, a stream restore, a retention change): the SDK
//! recreates them with back-off and keeps consuming, and never spins while
//! it cannot.
//!
//! Each test runs on its own runtime with named worker threads and measures
//! the CPU time of exactly those threads (from `/proc/self/task/*/stat`), so
//! tests running in parallel in this binary do not blur the figure.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{
    commands::{Command, Progress},
    events::{DeliveryMode, Event},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

/// How long the tests watch the CPU after deleting a consumer.
const WINDOW: Duration = Duration::from_secs(5);
/// CPU time the SDK may burn in that window. An idle worker uses a few
/// milliseconds; a spinning one uses a whole core (5 s) or more.
const CPU_BUDGET: Duration = Duration::from_millis(1500);

/// User plus system CPU time of this process's threads named `name`.
/// `/proc` reports it in clock ticks of 1/100 s (USER_HZ is 100 on Linux).
fn cpu_of_threads(name: &str) -> Duration {
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
            continue;
        };
        // Fields after the parenthesised command: state is field 3, utime
        // and stime are fields 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        ticks += fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    Duration::from_millis(ticks * 10)
}

fn runtime(name: &str) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_deleted_event_consumer_is_recreated_without_spinning() {
    const THREADS: &str = "recover-events";
    runtime(THREADS).block_on(async {
        let nats = server();
        let conn = connect(&nats.url()).await;
        let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
        let sub = {
            let seen = seen.clone();
            conn.events()
                .subscribe::<Value>("risk-service", "order.created", DeliveryMode::Compete)
                .handler(move |e: Event<Value>| {
                    let seen = seen.clone();
                    async move {
                        seen.lock().unwrap().push(e.payload["n"].as_u64().unwrap());
                        Ok(())
                    }
                })
                .start()
                .await
                .unwrap()
        };
        conn.events()
            .publish("order", "created", &json!({"n": 1}))
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "the first event", || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().contains(&1) }
        })
        .await;

        let stream = conn.jetstream().get_stream("EVENTS").await.unwrap();
        stream.delete_consumer(sub.consumer_name()).await.unwrap();
        let cpu_before = cpu_of_threads(THREADS);
        // Published while the consumer is gone: still delivered, since the
        // consumer is recreated after the last event it handled.
        conn.events()
            .publish("order", "created", &json!({"n": 2}))
            .await
            .unwrap();
        tokio::time::sleep(WINDOW).await;
        let burnt = cpu_of_threads(THREADS) - cpu_before;
        eprintln!("CPU over {WINDOW:?} after the deletion: {burnt:?}");
        conn.events()
            .publish("order", "created", &json!({"n": 3}))
            .await
            .unwrap();
        eventually(Duration::from_secs(15), "events after the deletion", || {
            let seen = seen.clone();
            async move {
                let seen = seen.lock().unwrap();
                seen.contains(&2) && seen.contains(&3)
            }
        })
        .await;
        stream
            .consumer_info(sub.consumer_name())
            .await
            .expect("the consumer exists again");
        assert!(burnt < CPU_BUDGET, "{burnt:?} of CPU in {WINDOW:?}");
        sub.shutdown().await;
    });
}

#[test]
fn a_deleted_command_consumer_is_recreated_without_spinning() {
    const THREADS: &str = "recover-cmds";
    runtime(THREADS).block_on(async {
        let nats = server();
        let conn = connect(&nats.url()).await;
        let worker = conn
            .commands()
            .worker("order-service")
            .handler("echo", |cmd: Command<Value>, _p: Progress| async move {
                Ok(cmd.payload)
            })
            .start()
            .await
            .unwrap();
        let call = |n: u64| {
            let conn = conn.clone();
            async move {
                conn.commands()
                    .send("order-service", "echo", &json!(n), Duration::from_secs(15))
                    .await
                    .unwrap()
                    .result::<Value>()
                    .await
            }
        };
        assert_eq!(call(1).await.unwrap(), json!(1));

        let stream = conn.jetstream().get_stream("COMMANDS").await.unwrap();
        stream
            .delete_consumer("order-service_commands")
            .await
            .unwrap();
        let cpu_before = cpu_of_threads(THREADS);
        tokio::time::sleep(WINDOW).await;
        let burnt = cpu_of_threads(THREADS) - cpu_before;
        eprintln!("CPU over {WINDOW:?} after the deletion: {burnt:?}");
        assert_eq!(
            call(2)
                .await
                .expect("a command after the deletion completes"),
            json!(2)
        );
        stream
            .consumer_info("order-service_commands")
            .await
            .expect("the consumer exists again");
        assert!(burnt < CPU_BUDGET, "{burnt:?} of CPU in {WINDOW:?}");
        worker.shutdown().await;
    });
}

/// An event whose handler failed waits, negatively acknowledged, for its
/// redelivery; it is in no handler meanwhile. A consumer deleted then must
/// come back at that event, not after the newest one handled since.
#[tokio::test(flavor = "multi_thread")]
async fn an_event_waiting_for_its_redelivery_survives_a_deleted_consumer() {
    /// Failures of event 1 before its handler accepts it: the last one is
    /// followed by a 1.6 s pause before the next delivery (see the
    /// subscription's redelivery delays), ample time to delete the consumer.
    const FAILURES: usize = 5;
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failed = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sub = {
        let (seen, failed) = (seen.clone(), failed.clone());
        conn.events()
            .subscribe::<Value>("risk-service", "order.created", DeliveryMode::Compete)
            .max_deliver(10)
            .concurrency(4)
            .handler(move |e: Event<Value>| {
                let (seen, failed) = (seen.clone(), failed.clone());
                async move {
                    let n = e.payload["n"].as_u64().unwrap();
                    if n == 1 && failed.load(std::sync::atomic::Ordering::SeqCst) < FAILURES {
                        failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return Err("not yet".into());
                    }
                    seen.lock().unwrap().push(n);
                    Ok(())
                }
            })
            .start()
            .await
            .unwrap()
    };
    for n in [1, 2] {
        conn.events()
            .publish("order", "created", &json!({ "n": n }))
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(15),
        "event 1 failed its last time and event 2 is handled",
        || {
            let (seen, failed) = (seen.clone(), failed.clone());
            async move {
                failed.load(std::sync::atomic::Ordering::SeqCst) >= FAILURES
                    && seen.lock().unwrap().contains(&2)
            }
        },
    )
    .await;
    let stream = conn.jetstream().get_stream("EVENTS").await.unwrap();
    stream.delete_consumer(sub.consumer_name()).await.unwrap();
    assert!(
        !seen.lock().unwrap().contains(&1),
        "event 1 was still waiting for its redelivery when the consumer went"
    );
    conn.events()
        .publish("order", "created", &json!({"n": 3}))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(15),
        "event 3, after the deletion",
        || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().contains(&3) }
        },
    )
    .await;
    eventually(
        Duration::from_secs(15),
        "event 1, owed a redelivery when its consumer was deleted",
        || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().contains(&1) }
        },
    )
    .await;
    sub.shutdown().await;
}
