//! A slip in a call's names is told as a slip, against a real nats-server
//! (tried as a new user would: a mistyped service came back as "no ACTIVE
//! instance ... is registered", which reads as an outage to retry):
//!
//! - a service the registry holds no record of says so, and names the
//!   registered services with a similar name ("did you mean ...?"); its
//!   code stays SERVICE_UNAVAILABLE (it may be a service not started yet);
//! - a service whose records are there but none ACTIVE says how many;
//! - a method the service does not list names the ones it does.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    contracts::InstanceStatus,
    rpc::{CallOptions, ErrorCode, RpcError, Service, WireError},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

/// `quote-service` with two methods, `get_quote` and `price_order`.
async fn quote_service(conn: &Connection, id: &str) -> Service {
    conn.service("quote-service", "1.0.0")
        .instance_id(id)
        .handler("get_quote", |v: Value| async move { Ok::<_, WireError>(v) })
        .handler(
            "price_order",
            |v: Value| async move { Ok::<_, WireError>(v) },
        )
        .start()
        .await
        .unwrap()
}

async fn call(client: &Connection, service: &str, method: &str) -> Result<Value, RpcError> {
    client
        .rpc()
        .call_with::<_, Value>(
            service,
            method,
            &json!({}),
            &CallOptions::timeout(Duration::from_secs(2)),
        )
        .await
        .map(|r| r.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_the_registry_has_no_record_of_is_told_with_the_names_it_may_mean() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _quotes = quote_service(&client, "q-1").await;
    let _other = common::echo_service(&client, "order-service", "o-1").await;
    call(&client, "quote-service", "get_quote").await.unwrap();

    let err = call(&client, "qoute-service", "get_quote")
        .await
        .unwrap_err();
    eprintln!("typo: {err} ({:?})", err.code());
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    assert!(
        matches!(&err, RpcError::NoInstances { service, records: 0, similar }
            if service == "qoute-service" && similar == &["quote-service".to_owned()]),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("holds no record"), "{message}");
    assert!(message.contains("did you mean quote-service?"), "{message}");

    // Nothing like it registered: no guess, but still "no record".
    let err = call(&client, "ghost-service", "get_quote")
        .await
        .unwrap_err();
    eprintln!("unknown: {err}");
    assert!(
        matches!(&err, RpcError::NoInstances { records: 0, similar, .. } if similar.is_empty()),
        "{err:?}"
    );
    assert!(err.to_string().contains("holds no record"), "{err}");
    assert!(!err.to_string().contains("did you mean"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_records_but_none_active_says_how_many_it_has() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let quotes = quote_service(&client, "q-1").await;
    call(&client, "quote-service", "get_quote").await.unwrap();
    quotes.set_status(InstanceStatus::Standby).await.unwrap();

    eventually(Duration::from_secs(10), "the standby is not called", || {
        let client = client.clone();
        async move { call(&client, "quote-service", "get_quote").await.is_err() }
    })
    .await;
    let err = call(&client, "quote-service", "get_quote")
        .await
        .unwrap_err();
    eprintln!("none active: {err}");
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    assert!(
        matches!(&err, RpcError::NoInstances { records: 1, similar, .. } if similar.is_empty()),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("no ACTIVE instance of quote-service"),
        "{message}"
    );
    assert!(message.contains("1 record"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_service_does_not_list_names_the_ones_it_does() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _quotes = quote_service(&client, "q-1").await;
    call(&client, "quote-service", "get_quote").await.unwrap();

    let err = call(&client, "quote-service", "get_qoute")
        .await
        .unwrap_err();
    eprintln!("typo: {err}");
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(
        matches!(&err, RpcError::NoSuchMethod { methods, .. }
            if methods == &["get_quote".to_owned(), "price_order".to_owned()]),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "no instance of quote-service serves get_qoute (it has: get_quote, price_order)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_to_a_service_the_registry_has_no_record_of_says_so_at_its_deadline() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _ledger = client
        .service("ledger-service", "1.0.0")
        .instance_id("ledger-1")
        .single_active("default")
        .handler(
            "post_entry",
            |v: Value| async move { Ok::<_, WireError>(v) },
        )
        .start()
        .await
        .unwrap();
    let active = |service: &'static str| {
        let client = client.clone();
        async move {
            client
                .rpc()
                .call_active::<_, Value>(
                    service,
                    "default",
                    "post_entry",
                    &json!({}),
                    &CallOptions::timeout(Duration::from_secs(1)),
                )
                .await
        }
    };
    eventually(Duration::from_secs(10), "the ledger leads", || async {
        active("ledger-service").await.is_ok()
    })
    .await;

    let err = active("ledgre-service").await.unwrap_err();
    eprintln!("typo: {err} ({:?})", err.code());
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    assert!(
        matches!(&err, RpcError::NoLeader { similar: Some(similar), .. }
            if similar == &["ledger-service".to_owned()]),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("`default`"), "{message}");
    assert!(message.contains("holds no record"), "{message}");
    assert!(
        message.contains("did you mean ledger-service?"),
        "{message}"
    );
}
