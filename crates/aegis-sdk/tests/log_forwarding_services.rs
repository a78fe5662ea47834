//! A process that runs two services forwards each WARN/ERROR line under
//! the service that logged it (an RPC handler's, a command handler's line
//! under its own service), and a line no service can be told apart for
//! once, under the service started first, marked as the process's, never
//! unmarked under one service it may not be from.
//!
//! One test in this binary: it installs the process's global subscriber
//! (`telemetry::init`), as a service binary does.

mod common;

use std::time::Duration;

use aegis_sdk::{
    commands::{Command, Progress},
    contracts::log::LogRecord,
    rpc::{RequestContext, WireError},
};
use common::{connect, server};
use futures::StreamExt;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_s_lines_go_under_its_own_name() {
    aegis_sdk::telemetry::init().expect("the first subscriber of the process");
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut alpha_logs = conn
        .client()
        .subscribe("aegis.log.alpha-service.a1")
        .await
        .unwrap();
    let mut beta_logs = conn
        .client()
        .subscribe("aegis.log.beta-service.b1")
        .await
        .unwrap();
    conn.client().flush().await.unwrap();

    let warns = |ctx: RequestContext, _: Value| async move {
        tracing::warn!("warned by {}", ctx.service);
        Ok::<_, WireError>(Value::Null)
    };
    let alpha = conn
        .service("alpha-service", "1.0.0")
        .instance_id("a1")
        .handler_with_context("warn", warns)
        .start()
        .await
        .unwrap();
    let beta = conn
        .service("beta-service", "1.0.0")
        .instance_id("b1")
        .handler_with_context("warn", warns)
        .start()
        .await
        .unwrap();

    // A command worker of beta's, started beside it: its handler runs on a
    // task of the worker's.
    let worker = conn
        .commands()
        .worker("beta-service")
        .handler("rebuild", |_: Command<Value>, _: Progress| async move {
            tracing::warn!("beta's command handler warns");
            Ok(Value::Null)
        })
        .start()
        .await
        .unwrap();
    conn.commands()
        .send(
            "beta-service",
            "rebuild",
            &Value::Null,
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap();

    let _: Value = conn
        .rpc()
        .call("beta-service", "warn", &Value::Null)
        .await
        .unwrap();
    let _: Value = conn
        .rpc()
        .call("alpha-service", "warn", &Value::Null)
        .await
        .unwrap();
    // Logged by the process, outside either service.
    tracing::warn!("the process warns");

    let alpha_lines = lines_until(&mut alpha_logs, "the process warns").await;
    // What beta got, up to its last line before the process's.
    let beta_lines = lines_until(&mut beta_logs, "warned by beta-service").await;
    let said = |lines: &[LogRecord], text: &str| lines.iter().any(|l| l.message == text);
    assert!(
        said(&beta_lines, "warned by beta-service"),
        "{beta_lines:?}"
    );
    assert!(
        !said(&beta_lines, "warned by alpha-service"),
        "{beta_lines:?}"
    );
    assert!(
        said(&alpha_lines, "warned by alpha-service"),
        "{alpha_lines:?}"
    );
    assert!(
        !said(&alpha_lines, "warned by beta-service"),
        "beta's line is not forwarded as alpha's: {alpha_lines:?}"
    );
    assert!(
        said(&beta_lines, "beta's command handler warns"),
        "{beta_lines:?}"
    );
    assert!(
        !said(&alpha_lines, "beta's command handler warns"),
        "beta's command handler's line is not forwarded as alpha's: {alpha_lines:?}"
    );
    // The process's own line is forwarded once: under alpha, started
    // first, marked as the process's.
    let line = alpha_lines
        .iter()
        .find(|l| l.message == "the process warns")
        .unwrap();
    assert_eq!(
        line.fields.get("scope"),
        Some(&Value::from("process")),
        "{line:?}"
    );
    // Beta's subject never gets it: not before beta's next line, logged
    // after it.
    let _: Value = conn
        .rpc()
        .call("beta-service", "warn", &Value::Null)
        .await
        .unwrap();
    let beta_rest = lines_until(&mut beta_logs, "warned by beta-service").await;
    let copies = beta_lines
        .iter()
        .chain(&beta_rest)
        .filter(|l| l.message == "the process warns")
        .count();
    assert_eq!(copies, 0, "the process's line went to one place only");

    worker.shutdown().await;
    alpha.shutdown().await.unwrap();
    beta.shutdown().await.unwrap();
}

/// The records on `logs` up to and with the first whose message is `last`.
async fn lines_until(logs: &mut async_nats::Subscriber, last: &str) -> Vec<LogRecord> {
    let mut lines = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(msg) = logs.next().await {
            let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
            let done = record.message == last;
            lines.push(record);
            if done {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{last:?} forwarded in time; got {lines:?}"));
    lines
}
