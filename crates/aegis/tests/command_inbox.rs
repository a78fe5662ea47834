//! A command's progress and result can come only from the service it was
//! sent to: its reply inbox is one only that service's user may publish
//! to (`_INBOX_operator.cmd.{service}.{id}`), and the sender takes replies
//! only from there, naming that service. The red team's F6: pricing-service
//! published a forged `completed` to an operator's command for
//! order-service, and `aegis command` printed it as done.
//!
//! Against a real nats-server running the users `aegis up` renders
//! (`aegis::permissions`): a refusal is the server's own `-ERR`.

mod common;

use std::time::Duration;

use aegis_contracts::wire::{HEADER_INSTANCE, HEADER_REPLY_TO};
use aegis_sdk::{Connection, commands::CommandError};
use common::showcase_bus::ShowcaseBus;
use serde_json::{Value, json};

/// The reply inbox the queued command of `subject` names (what the red
/// team read off the monitoring port).
async fn reply_inbox(operator: &Connection, subject: &str) -> String {
    let stream = operator.jetstream().get_stream("COMMANDS").await.unwrap();
    let msg = stream
        .get_last_raw_message_by_subject(subject)
        .await
        .unwrap();
    msg.headers
        .get(HEADER_REPLY_TO)
        .expect("the command names its reply inbox")
        .as_str()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_addressed_service_answers_a_command() {
    let bus = ShowcaseBus::start();
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();

    // A command no worker takes (as `aegis command ... --unlisted`).
    let handle = operator
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &json!({}),
            Duration::from_secs(4),
        )
        .await
        .unwrap();
    let inbox = reply_inbox(&operator, "commands.order-service.rebuild_book").await;
    assert!(
        !inbox.starts_with("_INBOX_operator.") || inbox.split('.').count() != 3,
        "a command's inbox is not of the operator's request-reply form: {inbox}"
    );

    // Pricing forges the result; so does risk with a progress report.
    let forged = br#"{"kind":"completed","result":{"forged_by":"svc-pricing-service","ok":true}}"#;
    for user in ["svc-pricing-service", "svc-risk-service", "monitor"] {
        let mut probe = bus.probe(user).await;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(HEADER_INSTANCE, "order-1");
        probe
            .client
            .publish_with_headers(inbox.clone(), headers, forged[..].into())
            .await
            .unwrap();
        probe.client.flush().await.unwrap();
        probe.refused("forge a command's result", &inbox).await;
    }
    // The command was never run, and the sender says so.
    match handle.result::<Value>().await {
        Err(CommandError::NotTaken { .. }) => {}
        other => panic!("the sender took a forged reply: {other:?}"),
    }

    // order-service's own worker still reports to the operator.
    let order = bus.sdk("svc-order-service").await;
    let _worker =
        order
            .commands()
            .worker("order-service")
            .instance_id("order-1")
            .handler(
                "rebuild_book",
                |_: aegis_sdk::commands::Command<Value>,
                 progress: aegis_sdk::commands::Progress| async move {
                    progress.report(50.0, "halfway").await;
                    Ok::<_, aegis_contracts::wire::WireError>(json!({"rebuilt": true}))
                },
            )
            .start()
            .await
            .unwrap();
    let mut handle = operator
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut updates = Vec::new();
    loop {
        let update = handle.next().await.unwrap();
        updates.push(update.clone());
        if let aegis_sdk::commands::CommandUpdate::Completed(result) = update {
            assert_eq!(result, json!({"rebuilt": true}));
            break;
        }
    }
    assert_eq!(handle.worker_instance(), Some("order-1"));
    assert_eq!(updates.len(), 2, "{updates:?}");
}
