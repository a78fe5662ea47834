//! `GET /api/services/{service}/methods` asks the service's instances to
//! describe themselves once per request (one `$SRV.INFO.{service}`
//! request), and still tells a service no instance runs (404) from one
//! whose instances do not answer in time (504). Against a real nats-server.

mod common;

use std::time::Duration;

use aegis_sdk::rpc::WireError;
use common::{Harness, VIEWER};
use futures::StreamExt;
use serde_json::json;

/// Subscribes `client` to `subject` and returns once the server holds the
/// interest: a flush only writes the SUB to the socket, and the server
/// may take a request from another connection (the monitor's) before it
/// reads it. A probe on `probe` (which `subject` matches, and which the
/// test's readers skip, as it has no reply subject) sent on the same
/// connection comes back only after the SUB was taken.
async fn listening(
    client: &async_nats::Client,
    subject: &str,
    probe: &str,
) -> async_nats::Subscriber {
    let mut sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.publish(probe.to_owned(), "".into()).await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("the probe comes back")
        .expect("the subscription is open");
    assert_eq!(msg.subject.as_str(), probe);
    sub
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_get_of_the_methods_asks_the_instances_once() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let service = conn
        .service("ledger", "1.0.0")
        .instance_id("ledger-1")
        .handler(
            "balance",
            |_: ()| async move { Ok::<_, WireError>(json!(0)) },
        )
        .start()
        .await
        .unwrap();

    // A plain listener alongside the service sees every INFO request.
    let watcher = h.connect().await;
    let mut asked = listening(watcher.client(), "$SRV.INFO.>", "$SRV.INFO.probe").await;

    let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["methods"][0]["name"], "balance", "{}", r.body);

    // A marker sent after the GET: every request the GET made arrives
    // before it on the listener's ordered subscription.
    watcher
        .client()
        .publish("$SRV.INFO.marker-after-get", "".into())
        .await
        .unwrap();
    watcher.client().flush().await.unwrap();
    let mut subjects = Vec::new();
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), asked.next())
            .await
            .expect("the marker arrives")
            .expect("the subscription is open");
        if msg.subject.as_str() == "$SRV.INFO.marker-after-get" {
            break;
        }
        subjects.push(msg.subject.to_string());
    }
    assert_eq!(
        subjects,
        ["$SRV.INFO.ledger"],
        "one GET asks the service's instances once"
    );

    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_methods_route_tells_no_instance_from_no_answer_in_time() {
    let h = Harness::start().await;
    // Nothing listens: no instance runs.
    let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
    r.expect(404, Some("SERVICE_NOT_FOUND"));

    // Something listens on the service's INFO subject but never answers.
    let silent = h.connect().await;
    let _listening = listening(silent.client(), "$SRV.INFO.ledger", "$SRV.INFO.ledger").await;
    let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
    r.expect(504, Some("GATEWAY_TIMEOUT"));
}

/// Every instance answers something that is not a services-protocol INFO
/// reply: the route says so (502) as soon as no more answers come, not
/// after the whole 2 s it waits for a first answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_unreadable_answers_are_a_bad_gateway_at_once() {
    let h = Harness::start().await;
    let garbled = h.connect().await;
    let mut asked = listening(garbled.client(), "$SRV.INFO.ledger", "$SRV.INFO.ledger").await;
    let client = garbled.client().clone();
    let answering = tokio::spawn(async move {
        while let Some(msg) = asked.next().await {
            if let Some(reply) = msg.reply {
                client.publish(reply, "not json".into()).await.unwrap();
                client.flush().await.unwrap();
            }
        }
    });

    let started = std::time::Instant::now();
    let r = h.get("/api/services/ledger/methods", Some(VIEWER)).await;
    let took = started.elapsed();
    r.expect(502, Some("BAD_GATEWAY"));
    assert!(
        took < Duration::from_secs(1),
        "an unreadable answer is known at once; took {took:?}"
    );
    answering.abort();
}
