//! A `Service` or `EventSubscription` dropped without `shutdown()` says so
//! in one WARN naming it (tried as a new user would: `let _ = ...start()`
//! stopped the service at once, without a word); one that was shut down
//! says nothing of the kind. Against a real nats-server.

mod common;

use std::{sync::OnceLock, time::Duration};

use aegis_sdk::events::{DeliveryMode, Event};
use common::{Captured, connect, eventually, server};
use serde_json::Value;

/// Everything this binary logs at INFO and above.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| Captured::install(tracing::Level::INFO))
}

/// The lines logged that mention `what` and a drop without shutdown.
fn drop_lines(what: &str) -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(what) && l.contains("dropped without shutdown"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_dropped_without_shutdown_warns_once_naming_it() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let dropped = common::echo_service(&conn, "drop-svc", "drop-1").await;
    drop(dropped);
    eventually(Duration::from_secs(5), "the drop's WARN", || async {
        !drop_lines("drop-svc/drop-1").is_empty()
    })
    .await;
    let lines = drop_lines("drop-svc/drop-1");
    eprintln!("{lines:#?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("lapses"), "{}", lines[0]);

    let stopped = common::echo_service(&conn, "drop-svc", "drop-2").await;
    stopped.shutdown().await.unwrap();
    let quiet = common::echo_service(&conn, "drop-svc", "drop-3").await;
    quiet.run_until(async {}).await.unwrap();
    assert!(drop_lines("drop-2").is_empty(), "{}", logs().text());
    assert!(drop_lines("drop-3").is_empty(), "{}", logs().text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_dropped_without_shutdown_warns_once_naming_it() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let subscribe = |service: &'static str| {
        conn.events()
            .subscribe::<Value>(service, "quote.served", DeliveryMode::Compete)
            .handler(|_: Event<Value>| async { Ok(()) })
            .start()
    };
    let dropped = subscribe("drop-client").await.unwrap();
    let name = dropped.consumer_name().to_owned();
    drop(dropped);
    eventually(Duration::from_secs(5), "the drop's WARN", || async {
        !drop_lines(&name).is_empty()
    })
    .await;
    let lines = drop_lines(&name);
    eprintln!("{lines:#?}");
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);

    let stopped = subscribe("quiet-client").await.unwrap();
    let quiet = stopped.consumer_name().to_owned();
    stopped.shutdown().await;
    assert!(drop_lines(&quiet).is_empty(), "{}", logs().text());
}
