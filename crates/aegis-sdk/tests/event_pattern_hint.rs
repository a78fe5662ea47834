//! A subscription whose pattern matches no event the `EVENTS` stream holds
//! says so once at its start, naming the domains the stream does hold (a
//! typo such as `qoute.*` was accepted silently: no event came, and
//! nothing said why); the subscription is made all the same, since events
//! may come later. Against a real nats-server.

mod common;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use aegis_sdk::events::{DeliveryMode, Event};
use common::{Captured, connect, eventually, server};
use serde_json::{Value, json};

/// Everything this binary logs at INFO and above.
fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| Captured::install(tracing::Level::INFO))
}

/// The lines logged that mention `pattern` and say no event matched it.
fn hint_lines(consumer: &str) -> Vec<String> {
    logs()
        .text()
        .lines()
        .filter(|l| l.contains(consumer) && l.contains("no event"))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pattern_no_stored_event_matches_is_told_with_the_domains_there_are() {
    logs();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = conn.events();
    events
        .publish("quote", "served", &json!({"symbol": "AAPL"}))
        .await
        .unwrap();
    events
        .publish("order", "created", &json!({"id": 1}))
        .await
        .unwrap();

    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let saw = |what: &'static str| {
        let seen = seen.clone();
        async move { seen.lock().unwrap().iter().any(|s| s.contains(what)) }
    };
    let subscribe = |pattern: &'static str| {
        let seen = seen.clone();
        events
            .subscribe::<Value>("typo-client", pattern, DeliveryMode::Compete)
            .deliver_all()
            .handler(move |e: Event<Value>| {
                seen.lock().unwrap().push(e.subject.to_string());
                async { Ok(()) }
            })
            .start()
    };
    let typo = subscribe("qoute.*").await.unwrap();
    let lines = hint_lines(typo.consumer_name());
    eprintln!("{lines:#?}");
    assert_eq!(lines.len(), 1, "{}", logs().text());
    assert!(lines[0].contains("qoute.*"), "{}", lines[0]);
    assert!(lines[0].contains("order, quote"), "{}", lines[0]);

    // A pattern that matches says nothing of the kind, and is served.
    let right = subscribe("quote.*").await.unwrap();
    assert!(
        hint_lines(right.consumer_name()).is_empty(),
        "{}",
        logs().text()
    );
    eventually(Duration::from_secs(10), "the stored event", || saw("quote")).await;

    // `>` matches anything: never told, even on an empty stream.
    let all = subscribe(">").await.unwrap();
    assert!(hint_lines(all.consumer_name()).is_empty());

    // The typo's subscription is made all the same: a later event reaches it.
    events
        .publish("qoute", "served", &json!({"symbol": "MSFT"}))
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the typo's event", || saw("qoute")).await;
    typo.shutdown().await;
    right.shutdown().await;
    all.shutdown().await;
}
