//! Which stop signals force the exit: a supervisor that sends SIGTERM twice
//! (systemd's `ExecStop=kill -TERM` then its own SIGTERM, a wrapper that
//! forwards TERM to a process group) still gets the graceful stop; a
//! second Ctrl-C forces the exit, and its log lines reach NATS first.

#![cfg(unix)]

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    contracts::log::LogRecord,
    registry::{RegistryChange, RegistryReader, RemovalReason},
    rpc::{CallOptions, RequestContext, server::ServiceError},
};
use common::{KillOnDrop, child_test, connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

/// Two SIGTERMs 5 ms apart while a handler runs: the process still stops
/// gracefully. It deregisters (the record does not wait to expire), waits
/// for the handler up to its shutdown timeout, and exits 0; the line about
/// the second SIGTERM reaches NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_does_not_cut_the_graceful_stop() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut logs = conn.client().subscribe(LOGS).await.unwrap();
    let (child, _call) = start_child_with_a_call(&nats, &conn, &reader).await;
    let pid = child.pid();

    signal("-TERM", &pid);
    std::thread::sleep(Duration::from_millis(5));
    signal("-TERM", &pid);

    assert_eq!(
        removal(&mut changes).await,
        RemovalReason::Deregistered,
        "the graceful stop deregisters"
    );
    let output = child.wait_with_output().await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{printed}");
    assert!(printed.contains("service stopped"), "{printed}");
    forwarded(&mut logs, "SIGTERM received again").await;
}

/// A Ctrl-C after the first signal ends the process at once with 130, and
/// the line saying so is on NATS before the exit (the forwarded lines are
/// flushed first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_forces_the_exit_after_flushing_the_logs() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut logs = conn.client().subscribe(LOGS).await.unwrap();
    let (child, _call) = start_child_with_a_call(&nats, &conn, &reader).await;
    let pid = child.pid();

    signal("-TERM", &pid);
    assert_eq!(removal(&mut changes).await, RemovalReason::Deregistered);
    let second = std::time::Instant::now();
    signal("-INT", &pid);
    let output = child.wait_with_output().await;
    let took = second.elapsed();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        took < Duration::from_secs(5),
        "exits at once, not after the 20 s shutdown timeout: {took:?}\n{printed}"
    );
    assert_eq!(output.status.code(), Some(130), "{printed}");
    forwarded(&mut logs, "Ctrl-C received while stopping; exiting now").await;
}

/// A Ctrl-C after the service's stop has returned, while the process
/// still winds down (a long `conn.drain()`), with `telemetry::init()` and
/// nothing attached: no service runs any more, yet the line saying the
/// exit is forced still reaches NATS, under the service that stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctrl_c_after_the_stop_returned_still_reaches_nats() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut logs = conn.client().subscribe(LOGS).await.unwrap();
    let mut stopped = conn.client().subscribe(STOPPED).await.unwrap();
    let (child, _call) = start_child(&nats, &conn, &reader, Some(CHILD_WINDS_DOWN)).await;
    let pid = child.pid();

    signal("-TERM", &pid);
    tokio::time::timeout(Duration::from_secs(10), stopped.next())
        .await
        .expect("run_until_signal returns");
    signal("-INT", &pid);
    let output = child.wait_with_output().await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(130), "{printed}");
    forwarded(&mut logs, "Ctrl-C received while stopping; exiting now").await;
}

/// `ServiceBuilder::run`, all a one-service `main` ends with: a SIGTERM
/// stops the service gracefully (it deregisters, waits its 2 s shutdown
/// timeout for the handler in flight), `run` returns that timeout as its
/// error, the process exits 0, and the warning logged during the stop
/// reaches NATS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_stops_on_sigterm_and_drains_what_the_stop_logged() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut logs = conn.client().subscribe(LOGS).await.unwrap();
    let (child, _call) = start_child(&nats, &conn, &reader, Some(CHILD_RUNS)).await;

    signal("-TERM", &child.pid());
    assert_eq!(removal(&mut changes).await, RemovalReason::Deregistered);
    let output = child.wait_with_output().await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{printed}");
    assert!(printed.contains("service stopped"), "{printed}");
    forwarded(&mut logs, "handlers still running at the shutdown timeout").await;
}

/// The child of the tests above. Does nothing unless started by them.
#[tokio::test]
#[ignore = "run by the tests of this file"]
async fn child_serves_a_slow_handler() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    aegis_sdk::telemetry::init().expect("the first subscriber of the process");
    let conn = Connection::from_env().await.expect("connect from the env");
    let timeout = std::env::var(CHILD_TIMEOUT_MS).expect("the shutdown timeout");
    let builder = conn
        .service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .shutdown_timeout(Duration::from_millis(timeout.parse().unwrap()))
        .handler_with_context("wait", |ctx: RequestContext, v: Value| async move {
            ctx.connection
                .client()
                .publish(IN_FLIGHT, "started".into())
                .await
                .expect("say the handler started");
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(v)
        });
    // The stop ends by the shutdown timeout (the handler outlives it): an
    // error the process reports, not a failure of the test.
    if std::env::var(CHILD_RUNS).is_ok() {
        match builder.run().await {
            Err(ServiceError::ShutdownTimeout(_)) => {}
            other => panic!("run ends by the shutdown timeout: {other:?}"),
        }
        return;
    }
    let service = builder.start().await.expect("start");
    if let Err(e) = service.run_until_signal().await {
        tracing::info!(error = %e, "the stop ended by its timeout");
    }
    if std::env::var(CHILD_WINDS_DOWN).is_ok() {
        conn.client()
            .publish(STOPPED, "stopped".into())
            .await
            .expect("say the stop returned");
        conn.client().flush().await.expect("flush");
        // Stands for a drain that takes long: what a second Ctrl-C cuts.
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    conn.drain().await.expect("drain");
}

const SERVICE: &str = "signals-service";
const INSTANCE: &str = "sg1";
const LOGS: &str = "aegis.log.signals-service.sg1";
/// Where the slow handler of the child says it started.
const IN_FLIGHT: &str = "test.shutdown-signals.in-flight";
/// Where the child says its `run_until_signal` returned.
const STOPPED: &str = "test.shutdown-signals.stopped";
/// Makes the child wait 30 s between its stop and its drain.
const CHILD_WINDS_DOWN: &str = "AEGIS_TEST_SHUTDOWN_SIGNALS_WINDS_DOWN";
/// Makes the child end with `ServiceBuilder::run` (start, serve until the
/// signal, stop, drain) instead of its steps one by one.
const CHILD_RUNS: &str = "AEGIS_TEST_SHUTDOWN_SIGNALS_RUNS";
/// Marks the child process.
const CHILD: &str = "AEGIS_TEST_SHUTDOWN_SIGNALS_CHILD";
/// The child's shutdown timeout, in milliseconds.
const CHILD_TIMEOUT_MS: &str = "AEGIS_TEST_SHUTDOWN_SIGNALS_TIMEOUT_MS";

/// Starts the child (a 2 s shutdown timeout: the stop waits that long for
/// the handler) and a call whose handler runs far longer than the test.
async fn start_child_with_a_call(
    nats: &aegis_testkit::NatsServer,
    conn: &Connection,
    reader: &RegistryReader,
) -> (KillOnDrop, tokio::task::JoinHandle<()>) {
    start_child(nats, conn, reader, None).await
}

/// [`start_child_with_a_call`], with the child waiting 30 s between its
/// stop and its drain with `CHILD_WINDS_DOWN`, or through
/// `ServiceBuilder::run` with `CHILD_RUNS` (the variable given is set).
async fn start_child(
    nats: &aegis_testkit::NatsServer,
    conn: &Connection,
    reader: &RegistryReader,
    with: Option<&str>,
) -> (KillOnDrop, tokio::task::JoinHandle<()>) {
    let mut in_flight = conn.client().subscribe(IN_FLIGHT).await.unwrap();
    let mut command = child_test("child_serves_a_slow_handler", CHILD);
    if let Some(variable) = with {
        command.env(variable, "1");
    }
    let child = command
        .env(CHILD_TIMEOUT_MS, "2000")
        .env("AEGIS_NATS_URL", nats.url())
        .env_remove("AEGIS_CONFIG")
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let child = KillOnDrop::new(child);
    eventually(Duration::from_secs(10), "the child registers", || {
        let found = reader.get(SERVICE, INSTANCE).is_some();
        async move { found }
    })
    .await;
    let caller = conn.rpc();
    let call = tokio::spawn(async move {
        let _ = caller
            .call_with::<_, Value>(
                SERVICE,
                "wait",
                &json!({}),
                &CallOptions::default().with_timeout(Duration::from_secs(60)),
            )
            .await;
    });
    tokio::time::timeout(Duration::from_secs(10), in_flight.next())
        .await
        .expect("the handler starts");
    (child, call)
}

fn signal(which: &str, pid: &str) {
    let sent = std::process::Command::new("kill")
        .args([which, pid])
        .status()
        .unwrap();
    assert!(sent.success(), "kill {which} to the child");
}

/// Waits for the forwarded log line that contains `text`.
async fn forwarded(logs: &mut async_nats::Subscriber, text: &str) -> LogRecord {
    tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = logs.next().await {
            let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
            if record.message.contains(text) {
                return record;
            }
        }
        panic!("the log subscription ended");
    })
    .await
    .unwrap_or_else(|_| panic!("a line with {text:?} is forwarded to NATS"))
}

/// Waits for the removal of the child's instance and says why it left.
async fn removal(
    changes: &mut (impl futures::Stream<Item = RegistryChange> + Unpin),
) -> RemovalReason {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(change) = changes.next().await {
            if let RegistryChange::Removed {
                service,
                instance_id,
                reason,
            } = change
                && service == SERVICE
                && instance_id == INSTANCE
            {
                return reason;
            }
        }
        panic!("the registry changes ended");
    })
    .await
    .expect("the instance leaves the registry within 10 s")
}
