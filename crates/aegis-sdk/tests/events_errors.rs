//! Events against a real nats-server: the errors a service author meets
//! and what they say to do — a subscription started without a handler, and
//! an event JetStream did not confirm, published again under the id the
//! error names, and a dedup id that cannot work.

mod common;

use aegis_sdk::events::{DeliveryMode, EventError};
use common::{connect, server};
use serde_json::{Value, json};

/// The `EVENTS` stream, made by `op` (see [`common::server_with_dev`]),
/// and a connection as `dev`.
async fn dev_beside_events(nats: &aegis_testkit::NatsServer) -> aegis_sdk::Connection {
    let op = common::connect_as(nats, "op").await.unwrap();
    op.events().ensure_stream().await.unwrap();
    common::connect_as(nats, "dev").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_without_a_handler_is_refused_as_such_before_any_io() {
    let nats = server();
    let conn = connect(&nats.url()).await;

    let err = conn
        .events()
        .subscribe::<Value>("trial", "quote.x", DeliveryMode::Compete)
        .start()
        .await
        .expect_err("no handler");

    assert!(matches!(err, EventError::NoHandler), "got {err:?}");
    assert!(
        conn.jetstream().get_stream("EVENTS").await.is_err(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unconfirmed_publish_names_the_id_to_publish_again_with() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    conn.events().ensure_stream().await.unwrap();
    let payload = json!({"order_id": 7});

    // The stream never answers this subject: the publish is not confirmed.
    let base = common::lose_requests(
        &nats,
        r#""events.order.created": "lost.events.order.created""#,
        "events.order.created",
    )
    .await;
    let err = conn
        .events()
        .publish("order", "created", &payload)
        .await
        .expect_err("JetStream does not confirm");
    let EventError::Publish { subject, id, .. } = err else {
        panic!("expected EventError::Publish, got {err:?}");
    };
    assert_eq!(subject, "events.order.created");
    assert!(!id.is_empty());

    // Answered again: the same id stores the event once, however often it
    // is sent.
    tokio::task::block_in_place(|| common::reload_as(&nats, &base));
    let stored = conn
        .events()
        .publish_with_id("order", "created", &id, &payload)
        .await
        .expect("published again");
    assert_eq!(stored.id, id);
    assert!(!stored.duplicate, "the lost copy was never stored");
    let again = conn
        .events()
        .publish_with_id("order", "created", &id, &payload)
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.sequence, stored.sequence);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_with_a_line_break_or_none_at_all_is_refused_before_any_io() {
    let nats = server();
    let conn = connect(&nats.url()).await;

    // A line break cannot go in a header; an empty id is not deduplicated
    // by the server, so a retry would be stored twice; the server drops
    // leading spaces, so " order-1" would be taken for "order-1".
    for id in ["order-1\r\ncreated", "order-1\ncreated", "", " order-1"] {
        let refused = conn
            .events()
            .publish_with_id("order", "created", id, &json!({"order_id": 1}))
            .await;
        let Err(EventError::InvalidId { id: named }) = refused else {
            panic!("{id:?}: expected EventError::InvalidId, got {refused:?}");
        };
        assert_eq!(named, id);
    }
    assert!(
        conn.jetstream().get_stream("EVENTS").await.is_err(),
        "nothing was sent"
    );
}

/// A user the server refuses an event's subject, or the consumer a
/// subscription creates, is told so at once, quoting the refusal: the
/// server drops what it refuses and answers nothing, and the publish used
/// to end after 5 s as "not confirmed by JetStream" (which says publish
/// again: it cannot help), the subscription after 10 s as "timed out".
/// Tried as a new user would, with a service admitted next to the
/// showcase (`aegis up --admit-service`), which may publish only in its
/// own domain and owns no consumer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_or_consumer_is_said_as_refused_at_once() {
    use aegis_sdk::events::Event;
    let nats = common::server_with_dev(
        r#"publish: { deny: [
             "events.order.>", "$JS.API.CONSUMER.CREATE.EVENTS.>",
             "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.>" ] }"#,
    );
    let conn = dev_beside_events(&nats).await;
    let quick = std::time::Duration::from_secs(2);

    let asked = std::time::Instant::now();
    let err = conn
        .events()
        .publish("order", "filled", &json!({}))
        .await
        .expect_err("refused");
    assert!(asked.elapsed() < quick, "{:?}", asked.elapsed());
    let EventError::Refused { subject, violation } = &err else {
        panic!("expected EventError::Refused, got {err:?}");
    };
    assert_eq!(subject, "events.order.filled");
    assert!(violation.contains("Permissions Violation"), "{violation}");

    let asked = std::time::Instant::now();
    let err = conn
        .events()
        .subscribe::<Value>("fx-service", "order.filled", DeliveryMode::Broadcast)
        .handler(|_: Event<Value>| async { Ok(()) })
        .start()
        .await
        .expect_err("refused");
    assert!(asked.elapsed() < quick, "{:?}", asked.elapsed());
    let text = aegis_sdk::startup::Causes(&err).to_string();
    assert!(
        matches!(err, EventError::Consumer { .. }) && text.contains("refused"),
        "{text}"
    );
}

/// A subscription is not failed by a refusal of another consumer's
/// subject that merely has its name among its tokens: here the same name
/// on another stream, refused this user while the subscription starts
/// (the subscription's own consumer on `EVENTS` is allowed). Only a
/// refusal of the `EVENTS` consumer of that name is its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_another_streams_consumer_of_the_same_name_is_not_the_subscriptions() {
    use aegis_sdk::events::Event;
    let nats = common::server_with_dev(
        r#"publish: { deny: [
             "$JS.API.CONSUMER.*.ORDERS.>", "$JS.API.CONSUMER.DURABLE.CREATE.ORDERS.>" ] }"#,
    );
    let conn = dev_beside_events(&nats).await;
    // Refused over and over while the subscription starts.
    let stop = tokio_util::sync::CancellationToken::new();
    let refused = tokio::spawn({
        let (client, stop) = (conn.client().clone(), stop.clone());
        async move {
            while !stop.is_cancelled() {
                let _ = client
                    .publish(
                        "$JS.API.CONSUMER.CREATE.ORDERS.fx-service_order_filled",
                        "".into(),
                    )
                    .await;
                tokio::task::yield_now().await;
            }
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    for _ in 0..5 {
        let sub = conn
            .events()
            .subscribe::<Value>("fx-service", "order.filled", DeliveryMode::Compete)
            .handler(|_: Event<Value>| async { Ok(()) })
            .start()
            .await;
        if let Err(err) = &sub {
            stop.cancel();
            panic!("{}", aegis_sdk::startup::Causes(err));
        }
        assert_eq!(sub.unwrap().consumer_name(), "fx-service_order_filled");
    }
    stop.cancel();
    refused.await.unwrap();
}
