//! `telemetry::init` prints plain lines when its output is not a terminal:
//! a service run under systemd, docker or Kubernetes has its output
//! collected into a file or a pipe, where colour codes are noise
//! (`\x1b[32m INFO\x1b[0m`). Run in a child whose output goes to a file,
//! as `service > svc.log 2>&1` would.

mod common;

use aegis_sdk::Connection;
use common::{KillOnDrop, child_test, server};

/// Marks the child process.
const CHILD: &str = "AEGIS_TEST_TELEMETRY_PLAIN_CHILD";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_logging_to_a_file_writes_no_colour_codes() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("svc.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = child_test("child_logs_to_a_file", CHILD)
        .env("AEGIS_NATS_URL", nats.url())
        .env_remove("AEGIS_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        // What a terminal session exports; the output is still a file.
        .env("TERM", "xterm-256color")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let output = KillOnDrop::new(child).wait_with_output().await;
    let printed = std::fs::read(&log_path).unwrap();
    let text = String::from_utf8_lossy(&printed);
    assert!(output.status.success(), "{:?}\n{text}", output.status);
    assert!(text.contains("INFO"), "INFO lines are printed: {text}");
    assert!(text.contains("the child warns"), "{text}");
    assert!(
        !printed.contains(&0x1b),
        "no ESC byte (colour code) in a log file: {text:?}"
    );
}

/// The child of the test above. Does nothing unless started by it.
#[tokio::test]
#[ignore = "run by a_service_logging_to_a_file_writes_no_colour_codes"]
async fn child_logs_to_a_file() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    aegis_sdk::telemetry::init().expect("init");
    let conn = Connection::from_env().await.expect("connect from the env");
    let service = conn
        .service("plain-log-service", "1.0.0")
        .handler("echo", |v: serde_json::Value| async move { Ok(v) })
        .start()
        .await
        .expect("start");
    tracing::warn!("the child warns");
    service.shutdown().await.expect("shutdown");
    conn.drain().await.expect("drain");
}
