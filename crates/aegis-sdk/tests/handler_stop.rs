//! Stopping an event subscription or a command worker while its handler
//! hangs: the stop waits for the handler only so long, then gives the
//! message up so that another instance of the service gets it, instead of
//! keeping it alive (and the process from stopping) forever.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    commands::{Command, Progress},
    events::{DeliveryMode, Event},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

/// How long a stop waits for its handlers (the SDK's default), plus a
/// generous allowance for a slow machine.
const STOP_BOUND: Duration = Duration::from_secs(10 + 10);

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_event_handler_does_not_hold_the_stop_and_its_event_goes_elsewhere() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let hung = Arc::new(AtomicBool::new(false));
    let first = {
        let hung = hung.clone();
        conn.events()
            .subscribe::<Value>("risk-service", "order.created", DeliveryMode::Compete)
            .instance_id("risk-1")
            .handler(move |_: Event<Value>| {
                let hung = hung.clone();
                async move {
                    hung.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await;
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
    eventually(Duration::from_secs(15), "the first handler hangs", || {
        let hung = hung.clone();
        async move { hung.load(Ordering::SeqCst) }
    })
    .await;

    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let second = {
        let seen = seen.clone();
        conn.events()
            .subscribe::<Value>("risk-service", "order.created", DeliveryMode::Compete)
            .instance_id("risk-2")
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
    let started = Instant::now();
    tokio::time::timeout(STOP_BOUND, first.shutdown())
        .await
        .expect("the stop ends although its handler hangs");
    eprintln!("stopped in {:?}", started.elapsed());
    eventually(
        Duration::from_secs(15),
        "the event, at the other instance",
        || {
            let seen = seen.clone();
            async move { seen.lock().unwrap().contains(&1) }
        },
    )
    .await;
    second.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hung_command_handler_does_not_hold_the_stop_and_its_command_goes_elsewhere() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let hung = Arc::new(AtomicBool::new(false));
    let first = {
        let hung = hung.clone();
        conn.commands()
            .worker("order-service")
            .handler("echo", move |_: Command<Value>, _p: Progress| {
                let hung = hung.clone();
                async move {
                    hung.store(true, Ordering::SeqCst);
                    std::future::pending::<()>().await;
                    Ok(Value::Null)
                }
            })
            .start()
            .await
            .unwrap()
    };
    let sent = conn
        .commands()
        .send("order-service", "echo", &json!(1), Duration::from_secs(60))
        .await
        .unwrap();
    eventually(Duration::from_secs(15), "the first handler hangs", || {
        let hung = hung.clone();
        async move { hung.load(Ordering::SeqCst) }
    })
    .await;
    let second = conn
        .commands()
        .worker("order-service")
        .handler("echo", |cmd: Command<Value>, _p: Progress| async move {
            Ok(cmd.payload)
        })
        .start()
        .await
        .unwrap();
    let started = Instant::now();
    tokio::time::timeout(STOP_BOUND, first.shutdown())
        .await
        .expect("the stop ends although its handler hangs");
    eprintln!("stopped in {:?}", started.elapsed());
    let result = tokio::time::timeout(Duration::from_secs(30), sent.result::<Value>())
        .await
        .expect("the command completes at the other worker")
        .unwrap();
    assert_eq!(result, json!(1));
    second.shutdown().await;
}
