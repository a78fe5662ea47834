//! A registration made without a service (`Registration::builder`) owns
//! the lines of its own work: a WARN its health check logs (on the
//! registration's heartbeat task) is forwarded under the service and
//! instance it registers as, not under another service the process runs,
//! nor left unforwarded.
//!
//! One test in this binary: it installs the process's global subscriber
//! (`telemetry::init`), as a service binary does.

mod common;

use std::time::Duration;

use aegis_sdk::{
    contracts::{ServiceInstance, log::LogRecord},
    registry::Registration,
    rpc::{RequestContext, WireError},
};
use common::{connect, server};
use futures::StreamExt;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_registration_s_lines_go_under_what_it_registers_as() {
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

    // The process runs one service: a line of nobody's would go under it.
    let beta = conn
        .service("beta-service", "1.0.0")
        .instance_id("b1")
        .handler_with_context("warn", |ctx: RequestContext, _: Value| async move {
            tracing::warn!("warned by {}", ctx.service);
            Ok::<_, WireError>(Value::Null)
        })
        .start()
        .await
        .unwrap();

    let record = ServiceInstance::new("alpha-service", "a1", "1.0.0", chrono::Utc::now());
    let alpha = Registration::builder(&conn, record)
        .heartbeat(Duration::from_millis(200))
        .health_check(|| async {
            tracing::warn!("alpha's health check warns");
            true
        })
        .start()
        .await
        .unwrap();

    let alpha_lines = lines_until(&mut alpha_logs, "alpha's health check warns").await;
    let line = alpha_lines
        .iter()
        .find(|l| l.message == "alpha's health check warns")
        .unwrap();
    assert_eq!(
        line.fields.get("scope"),
        None,
        "its own line, not the process's: {line:?}"
    );
    // Beta never gets it: not before its own line, logged after it.
    let _: Value = conn
        .rpc()
        .call("beta-service", "warn", &Value::Null)
        .await
        .unwrap();
    let beta_lines = lines_until(&mut beta_logs, "warned by beta-service").await;
    assert!(
        !beta_lines
            .iter()
            .any(|l| l.message == "alpha's health check warns"),
        "the registration's line is not beta's: {beta_lines:?}"
    );

    alpha.deregister().await.unwrap();
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
