//! The shared streams' per-message cap, against a real nats-server with
//! the showcase's users: every service publishes into `EVENTS` and
//! `AEGIS_LOG`, which drop their oldest messages when full, so one message
//! of the server's largest payload (1 MiB) took a large share of them (a
//! red-team run pushed every order and risk event out of `EVENTS` with 140
//! such events, and every order-service log line out of `AEGIS_LOG` with
//! 35). The streams now refuse a message above 64 KiB; one of the usual
//! size is taken, and nothing else is evicted.

mod common;

use aegis_contracts::subjects::{EVENTS_STREAM, LOG_STREAM};
use async_nats::jetstream;
use common::showcase_bus::ShowcaseBus;

/// Publishes `size` bytes to `subject` as `js`'s user; what the stream
/// answered.
async fn publish(js: &jetstream::Context, subject: &str, size: usize) -> Result<u64, String> {
    let ack = js
        .publish(subject.to_owned(), vec![b'x'; size].into())
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

#[tokio::test]
async fn one_large_message_cannot_take_a_share_of_the_shared_streams() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator().await;
    aegis::init::create_missing(&operator)
        .await
        .expect("the operator creates the streams and buckets");
    let order = bus.js("svc-order-service").await;
    let pricing = bus.js("svc-pricing-service").await;
    publish(&order, "events.order.filled", 500)
        .await
        .expect("an order event of the usual size is taken");
    publish(&order, "aegis.log.order-service.order-1", 300)
        .await
        .expect("a log record of the usual size is taken");

    for subject in ["events.price.flood", "aegis.log.pricing-service.flood"] {
        let answer = publish(&pricing, subject, 1_000_000).await;
        println!("1 MB to {subject}: {answer:?}");
        let refusal = answer.expect_err("a message of 1 MB is refused");
        assert!(refusal.contains("size"), "{refusal}");
        publish(&pricing, subject, 60 * 1024)
            .await
            .expect("one under the cap is taken");
    }
    for name in [EVENTS_STREAM, LOG_STREAM] {
        let mut stream = operator.jetstream().get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.max_message_size, 64 * 1024, "{name}");
        assert_eq!(info.state.messages, 2, "{name}: nothing evicted");
    }
}

/// Streams made before the cap get it from what `aegis up` and `aegis
/// init` run, keeping their messages.
#[tokio::test]
async fn streams_made_without_a_cap_get_it_in_place() {
    let bus = ShowcaseBus::start();
    let operator = bus.operator().await;
    let js = operator.jetstream();
    for (name, subjects) in [(EVENTS_STREAM, "events.>"), (LOG_STREAM, "aegis.log.>")] {
        js.create_stream(jetstream::stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            max_bytes: 32 * 1024 * 1024,
            max_messages: 100_000,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let order = bus.js("svc-order-service").await;
    publish(&order, "events.order.filled", 500).await.unwrap();
    aegis::init::create_missing(&operator).await.unwrap();
    for name in [EVENTS_STREAM, LOG_STREAM] {
        let mut stream = js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.max_message_size, 64 * 1024, "{name}");
    }
    let mut events = js.get_stream(EVENTS_STREAM).await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 1, "kept");
}
