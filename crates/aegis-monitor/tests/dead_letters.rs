//! Dead letters against a real nats-server: `GET /api/dead-letters` lists,
//! newest first, an event whose handler kept failing (copied by the SDK)
//! and a command whose deliveries ran out (the server's advisory, with the
//! original looked up in `COMMANDS`); it checks its limit, needs a token,
//! and is empty before anything was given up on.

mod common;

use std::time::Duration;

use aegis_sdk::events::{DeliveryMode, Event};
use common::{Harness, VIEWER, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_what_subscribers_and_workers_gave_up_on() {
    let h = Harness::start().await;
    // Nothing given up on yet (no DEAD_LETTER stream at all).
    let r = h.get("/api/dead-letters", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body, json!([]));

    let conn = h.connect().await;
    let sub = conn
        .events()
        .subscribe::<Value>("ledger-service", "order.filled", DeliveryMode::Compete)
        .max_deliver(2)
        .handler(|_e: Event<Value>| async { Err("the ledger is closed".into()) })
        .start()
        .await
        .unwrap();
    conn.events()
        .publish("order", "filled", &json!({"order_id": "o-1"}))
        .await
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "the event dead-lettered",
        || async {
            h.get("/api/dead-letters", Some(VIEWER))
                .await
                .body
                .as_array()
                .is_some_and(|a| a.len() == 1)
        },
    )
    .await;

    // A command whose deliveries ran out: what the server announces when
    // every worker that took it died. Announced here by hand, for a command
    // really queued in COMMANDS.
    let queued = conn
        .commands()
        .send(
            "crashy-service",
            "boom",
            &json!({"k": 1}),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    drop(queued);
    let stream = conn.jetstream().get_stream("COMMANDS").await.unwrap();
    let seq = stream
        .get_last_raw_message_by_subject("commands.crashy-service.boom")
        .await
        .unwrap()
        .sequence;
    let advisory = json!({
        "type": "io.nats.jetstream.advisory.v1.max_deliver",
        "id": "test", "timestamp": "2026-01-01T00:00:00Z",
        "stream": "COMMANDS", "consumer": "crashy-service_commands",
        "stream_seq": seq, "deliveries": 5
    });
    conn.jetstream()
        .publish(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.COMMANDS.crashy-service_commands",
            advisory.to_string().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let r = h.get("/api/dead-letters", Some(VIEWER)).await;
    r.expect(200, None);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let (command, event) = (&list[0], &list[1]);
    assert!(
        command["id"].as_u64() > event["id"].as_u64(),
        "newest first"
    );

    assert_eq!(event["reason"], "handler_failed");
    assert_eq!(event["stream"], "EVENTS");
    assert_eq!(event["consumer"], sub.consumer_name());
    assert_eq!(event["subject"], "events.order.filled");
    assert_eq!(event["deliveries"], 2);
    assert_eq!(event["error"], "the ledger is closed");
    assert_eq!(event["payload"], json!({"order_id": "o-1"}));
    assert!(event["deadAt"].as_str().unwrap().ends_with('Z'));

    assert_eq!(command["reason"], "max_deliveries");
    assert_eq!(command["stream"], "COMMANDS");
    assert_eq!(command["consumer"], "crashy-service_commands");
    assert_eq!(command["streamSequence"], seq);
    assert_eq!(command["deliveries"], 5);
    assert_eq!(command["subject"], "commands.crashy-service.boom");
    assert_eq!(command["payload"], json!({"k": 1}));
    assert_eq!(command["error"], Value::Null);

    let r = h.get("/api/dead-letters?limit=1", Some(VIEWER)).await;
    assert_eq!(r.body.as_array().unwrap().len(), 1);
    assert_eq!(r.body[0]["reason"], "max_deliveries");
    for bad in ["limit=0", "limit=1001", "limit=x", "stream=EVENTS"] {
        h.get(&format!("/api/dead-letters?{bad}"), Some(VIEWER))
            .await
            .expect(400, Some("BAD_REQUEST"));
    }
    h.get("/api/dead-letters", None)
        .await
        .expect(401, Some("UNAUTHORIZED"));

    // Documented, with its record.
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    assert!(spec["paths"]["/api/dead-letters"]["get"].is_object());
    let schema = &spec["components"]["schemas"]["DeadLetter"];
    assert!(
        schema["properties"]["streamSequence"].is_object(),
        "{schema}"
    );
    sub.shutdown().await;
}
