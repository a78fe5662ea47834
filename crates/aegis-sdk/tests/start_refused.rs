//! A service whose NATS user may not do what serving needs fails its start
//! saying so, naming what the server refused. Tried as a new user would:
//! a service run with the showcase operator's credentials ended after
//! 5 s with "cannot write service-instances.fx-service.fx-1 to the
//! registry: no acknowledgement within 1s", while the cause, the server's
//! permission violations, was only in WARN lines; and a service refused
//! its request subscriptions started as if it served. What the check
//! must not blame: a refusal on the same connection that is not of a
//! subscription (a call of the service the user may not make is a refused
//! publish to `rpc.{service}.{method}`, and says nothing about hearing
//! requests).

mod common;

use std::time::Duration;

use aegis_sdk::{Connection, rpc::WireError, startup::Causes};
use common::{connect_as, server_with_dev};
use serde_json::{Value, json};

async fn start_fx(
    conn: &Connection,
) -> Result<aegis_sdk::rpc::Service, aegis_sdk::rpc::server::ServiceError> {
    conn.service("fx-service", "1.0.0")
        .instance_id("fx-1")
        .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
        .start()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registry_write_is_said_as_refused() {
    let nats = server_with_dev(r#"publish: { deny: ["$KV.service_registry.>"] }"#);
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let started = tokio::time::Instant::now();
    let err = start_fx(&conn)
        .await
        .expect_err("no registry write, no start");
    let text = Causes(&err).to_string();
    eprintln!("start refused: {text}");
    assert!(
        text.contains("refused")
            && text.contains("$KV.service_registry.service-instances.fx-service.fx-1"),
        "the error says what the server refused: {text}"
    );
    assert!(
        matches!(&err, aegis_sdk::rpc::server::ServiceError::Registry(r) if r.is_refused()),
        "{err:?}"
    );
    // Not retried: asking again cannot help.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_request_subscription_fails_the_start() {
    let nats = server_with_dev(r#"subscribe: { deny: ["rpc.fx-service.>"] }"#);
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let err = start_fx(&conn)
        .await
        .expect_err("a service that cannot hear its requests does not start");
    let text = Causes(&err).to_string();
    eprintln!("start refused: {text}");
    assert!(
        text.contains("refused") && text.contains("rpc.fx-service."),
        "the error says what the server refused: {text}"
    );
}

/// A process that serves fx-service and, on the same connection, tries to
/// call it without the right to (the service role grants subscribing to
/// `rpc.{own}.>`, publishing only to the services it names): the server
/// refuses those publishes while the service starts, and the start, which
/// can hear every request, must not fail for them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_on_the_connection_does_not_fail_the_start() {
    let nats = server_with_dev(r#"publish: { deny: ["rpc.fx-service.>"] }"#);
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let caller = conn.client().clone();
    let calling = tokio::spawn(async move {
        loop {
            let _ = caller.publish("rpc.fx-service.convert", "{}".into()).await;
            // As often as the connection takes them: a refusal lands in
            // every moment of the start.
            let _ = caller.flush().await;
        }
    });
    // The refusals are coming in before the start begins. The check's
    // window is short: several starts, each of which must not fail.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for attempt in 0..5 {
        let started = conn
            .service("fx-service", "1.0.0")
            .instance_id("fx-1")
            .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
            .start()
            .await;
        let service = started.unwrap_or_else(|e| {
            panic!("start {attempt}: the service hears its requests, yet: {e:?}")
        });
        service.shutdown().await.unwrap();
    }
    calling.abort();
}

/// A user that may not ping `$SRV.PING.{service}.*` (a hand-made user
/// without the service role's grant): the check's ping is refused, and its
/// refusal, after those of the subscriptions sent before it, ends the wait
/// at once rather than after the ping's 500 ms wait, on every start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_ping_does_not_slow_the_start() {
    let nats = server_with_dev(r#"publish: { deny: ["$SRV.PING.>"] }"#);
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let started = std::time::Instant::now();
    let service = conn
        .service("fx-service", "1.0.0")
        .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
        .start()
        .await
        .expect("a service that hears its requests starts");
    let took = started.elapsed();
    service.shutdown().await.unwrap();
    // A start takes a few milliseconds locally; the ping's wait is 500 ms.
    assert!(took < Duration::from_millis(400), "{took:?}");

    // And a refused subscription is still found without the ping's answer.
    let nats = server_with_dev(
        r#"publish: { deny: ["$SRV.PING.>"] }, subscribe: { deny: ["rpc.fx-service.>"] }"#,
    );
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let started = std::time::Instant::now();
    let err = conn
        .service("fx-service", "1.0.0")
        .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
        .start()
        .await
        .expect_err("a service that cannot hear its requests does not start");
    assert!(
        matches!(err, aegis_sdk::rpc::server::ServiceError::Refused { .. }),
        "{err:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
}

/// A refused registry write fails when the server's refusal is heard, not
/// after the write's own timeout (1 s by default): the refusal says all
/// there is to say, as docs/troubleshooting.md promises ("fails at once").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_registry_write_fails_when_refused() {
    let nats = server_with_dev(r#"publish: { deny: ["$KV.service_registry.>"] }"#);
    let conn = connect_as(&nats, "dev").await.expect("connected as dev");
    let started = std::time::Instant::now();
    let err = conn
        .service("fx-service", "1.0.0")
        .instance_id("fx-1")
        .handler("convert", |_: Value| async { Ok::<_, WireError>(json!(1)) })
        .start()
        .await
        .expect_err("no registry write, no start");
    assert!(
        matches!(&err, aegis_sdk::rpc::server::ServiceError::Registry(r) if r.is_refused()),
        "{err:?}"
    );
    // Locally the refusal comes in milliseconds; the write's timeout is 1 s.
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
}
