//! The conveniences that keep a small service small: connecting from the
//! environment, logging in one call, a graceful stop on Ctrl-C or SIGTERM,
//! `?` on RPC and event errors inside a handler, and chainable call
//! options.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    contracts::log::LogRecord,
    events::EventError,
    registry::{RegistryChange, RegistryReader, RemovalReason},
    rpc::{CallOptions, ErrorCode, RequestContext, RpcError, WireError},
    telemetry::InitError,
};
use common::{KillOnDrop, child_test, connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

/// A service run with `run_until(stop)` serves until `stop` resolves, then
/// stops gracefully: its record is deleted (deregistered, not expired).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_until_serves_until_the_stop_then_deregisters() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let service = common::echo_service(&conn, "until-service", "u1").await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(service.run_until(async move {
        let _ = stopped.await;
    }));
    let echoed: Value = conn
        .rpc()
        .call("until-service", "echo", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(echoed, json!({"n": 1}));
    assert!(!running.is_finished(), "it serves until told to stop");

    stop.send(()).unwrap();
    running.await.unwrap().expect("a clean stop");
    assert_eq!(
        removal(&mut changes, "until-service", "u1").await,
        RemovalReason::Deregistered
    );
}

/// The short service of the docs, in a real process: it connects from
/// `AEGIS_NATS_URL`, prints its logs (and a second `telemetry::init` is an
/// error, not a panic) and forwards its warnings to NATS, and on SIGTERM
/// deregisters and exits 0.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_service_run_until_signal_and_it_deregisters() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut logs = conn
        .client()
        .subscribe("aegis.log.signal-service.s1")
        .await
        .unwrap();

    let child = child_test("child_runs_until_signal", CHILD)
        .env("AEGIS_NATS_URL", nats.url())
        .env_remove("AEGIS_CONFIG")
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let child = KillOnDrop::new(child);

    eventually(Duration::from_secs(10), "the child registers", || {
        let found = reader.get("signal-service", "s1").is_some();
        async move { found }
    })
    .await;
    // The warning the child logs once started reaches NATS.
    let forwarded = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(msg) = logs.next().await {
            let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
            if record.message.contains("the child warns") {
                return record;
            }
        }
        panic!("the log subscription ended");
    })
    .await
    .expect("the child's warning is forwarded to NATS");
    assert_eq!(forwarded.message, "the child warns");

    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success(), "SIGTERM to the child");
    assert_eq!(
        removal(&mut changes, "signal-service", "s1").await,
        RemovalReason::Deregistered,
        "SIGTERM deregisters instead of leaving the record to expire"
    );
    let output = child.wait_with_output().await;
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child exits cleanly: {:?}\n{printed}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // `telemetry::init` prints INFO lines (its default filter), the
    // connection's own INFO lines excepted.
    assert!(printed.contains("service started"), "{printed}");
    assert!(printed.contains("service stopped"), "{printed}");
    assert!(!printed.contains("async_nats"), "{printed}");
}

/// The child of the test above. Does nothing unless started by it.
#[tokio::test]
#[ignore = "run by sigterm_stops_a_service_run_until_signal_and_it_deregisters"]
async fn child_runs_until_signal() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    aegis_sdk::telemetry::init().expect("the first subscriber of the process");
    // A second call says so instead of panicking.
    assert!(matches!(
        aegis_sdk::telemetry::init(),
        Err(InitError::AlreadyInstalled(_))
    ));
    let conn = Connection::from_env().await.expect("connect from the env");
    let service = conn
        .service("signal-service", "1.0.0")
        .instance_id("s1")
        .handler("echo", |v: Value| async move { Ok(v) })
        .start()
        .await
        .expect("start");
    tracing::warn!("the child warns");
    service.run_until_signal().await.expect("a clean stop");
    conn.drain().await.expect("drain");
}

/// A second Ctrl-C while the graceful stop waits for a slow handler ends
/// the process at once, with 130 and one line saying so, instead of being
/// swallowed until the shutdown timeout.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_ctrl_c_during_the_stop_exits_at_once() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut in_flight = conn.client().subscribe(IN_FLIGHT).await.unwrap();

    let child = child_test("child_stops_slowly", CHILD)
        .env("AEGIS_NATS_URL", nats.url())
        .env_remove("AEGIS_CONFIG")
        .env_remove("RUST_LOG")
        .spawn()
        .unwrap();
    let pid = child.id().to_string();
    let child = KillOnDrop::new(child);
    eventually(Duration::from_secs(10), "the child registers", || {
        let found = reader.get("slow-stop-service", "ss1").is_some();
        async move { found }
    })
    .await;

    // A call whose handler runs far longer than the test waits.
    let caller = conn.rpc();
    let call = tokio::spawn(async move {
        caller
            .call_with::<_, Value>(
                "slow-stop-service",
                "wait",
                &json!({}),
                &CallOptions::default().with_timeout(Duration::from_secs(60)),
            )
            .await
    });
    tokio::time::timeout(Duration::from_secs(10), in_flight.next())
        .await
        .expect("the handler starts");

    let interrupt = || {
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "SIGINT to the child");
    };
    interrupt();
    // The graceful stop is under way: it deregistered, and now waits for
    // the handler.
    assert_eq!(
        removal(&mut changes, "slow-stop-service", "ss1").await,
        RemovalReason::Deregistered
    );
    let second = std::time::Instant::now();
    interrupt();
    let output = child.wait_with_output().await;
    let took = second.elapsed();
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        took < Duration::from_secs(5),
        "exits at once, not after the 20 s shutdown timeout: {took:?}\n{printed}"
    );
    assert_eq!(output.status.code(), Some(130), "{printed}");
    assert!(
        printed.contains("Ctrl-C received while stopping; exiting now"),
        "{printed}"
    );
    call.abort();
}

/// The child of the test above. Does nothing unless started by it.
#[tokio::test]
#[ignore = "run by a_second_ctrl_c_during_the_stop_exits_at_once"]
async fn child_stops_slowly() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    aegis_sdk::telemetry::init().expect("the first subscriber of the process");
    let conn = Connection::from_env().await.expect("connect from the env");
    let service = conn
        .service("slow-stop-service", "1.0.0")
        .instance_id("ss1")
        .shutdown_timeout(Duration::from_secs(20))
        .handler_with_context("wait", |ctx: RequestContext, v: Value| async move {
            ctx.connection
                .client()
                .publish(IN_FLIGHT, "started".into())
                .await
                .expect("say the handler started");
            tokio::time::sleep(Duration::from_secs(30)).await;
            Ok(v)
        })
        .start()
        .await
        .expect("start");
    let _ = service.run_until_signal().await;
    conn.drain().await.expect("drain");
}

/// Where the slow handler of the child says it started.
const IN_FLIGHT: &str = "test.ergonomics.in-flight";

/// `Connection::from_env` reads the file `AEGIS_CONFIG` names, as the
/// `aegis` binaries do, and the `AEGIS_NATS_*` variables over it: a
/// service whose servers and settings are in a file connects with them,
/// not to the default local server. Run in a child, whose environment is
/// its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_reads_the_file_aegis_config_names() {
    let nats = server();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("aegis.toml");
    std::fs::write(
        &file,
        format!(
            "[nats]\nservers = \"{}\"\npool_size = 3\nrequest_timeout = \"250ms\"\n",
            nats.url()
        ),
    )
    .unwrap();
    let child = child_test("child_connects_from_env", CHILD)
        .env("AEGIS_CONFIG", &file)
        .env_remove("AEGIS_NATS_URL")
        // The environment wins over the file, as for the binaries.
        .env("AEGIS_NATS_POOL_SIZE", "2")
        .env(EXPECTED_URL, nats.url())
        .spawn()
        .unwrap();
    let child = KillOnDrop::new(child);
    let output = child.wait_with_output().await;
    assert!(
        output.status.success(),
        "the child connects with the file's settings: {:?}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The child of the test above. Does nothing unless started by it.
#[tokio::test]
#[ignore = "run by from_env_reads_the_file_aegis_config_names"]
async fn child_connects_from_env() {
    if std::env::var(CHILD).is_err() {
        return;
    }
    let expected = std::env::var(EXPECTED_URL).unwrap();
    let conn = Connection::from_env().await.expect("connect from the env");
    assert_eq!(conn.config().nats.servers, [expected]);
    assert_eq!(
        conn.config().nats.request_timeout,
        Duration::from_millis(250)
    );
    assert_eq!(conn.config().nats.pool_size, 2, "the variable wins");
    conn.drain().await.expect("drain");
}

/// The server URL the child of the `AEGIS_CONFIG` test must connect to.
const EXPECTED_URL: &str = "AEGIS_TEST_ERGONOMICS_EXPECTED_URL";

/// Marks the child process of the SIGTERM test.
const CHILD: &str = "AEGIS_TEST_ERGONOMICS_CHILD";

/// Waits for the removal of `service`/`instance` and says why it left.
async fn removal(
    changes: &mut (impl futures::Stream<Item = RegistryChange> + Unpin),
    service: &str,
    instance: &str,
) -> RemovalReason {
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(change) = changes.next().await {
            if let RegistryChange::Removed {
                service: s,
                instance_id,
                reason,
            } = change
                && s == service
                && instance_id == instance
            {
                return reason;
            }
        }
        panic!("the registry changes ended");
    })
    .await
    .expect("the instance leaves the registry within 10 s")
}

/// A handler that calls another service with `?` passes the remote error
/// on as it came: its code, message and details.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_error_passes_through_a_handler_with_question_mark() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let _prices = conn
        .service("prices", "1.0.0")
        .handler("get", |symbol: String| async move {
            Err::<f64, _>(
                WireError::not_found(format!("no price for {symbol}"))
                    .with_details(json!({"symbol": symbol})),
            )
        })
        .start()
        .await
        .unwrap();
    let rpc = conn.rpc();
    let _quotes = conn
        .service("quotes", "1.0.0")
        .handler("quote", move |symbol: String| {
            let rpc = rpc.clone();
            async move {
                let price: f64 = rpc.call("prices", "get", &symbol).await?;
                Ok(price)
            }
        })
        .start()
        .await
        .unwrap();
    let err = conn
        .rpc()
        .call::<_, f64>("quotes", "quote", &"MSFT")
        .await
        .unwrap_err();
    let remote = err.remote().expect("an answer of the service");
    assert_eq!(remote.code, ErrorCode::NotFound);
    assert_eq!(remote.message, "no price for MSFT");
    assert_eq!(remote.details, Some(json!({"symbol": "MSFT"})));
}

/// A call that failed on this side becomes what the handler's own caller
/// can act on: TIMEOUT when the dependency did not answer in time,
/// SERVICE_UNAVAILABLE when nothing reached it, INTERNAL for the
/// handler's own mistakes (never INVALID_REQUEST, which would blame the
/// caller).
#[test]
fn a_local_call_failure_becomes_the_code_its_caller_can_act_on() {
    let timeout = WireError::from(RpcError::Timeout {
        subject: "rpc.prices.get".to_owned(),
        timeout: Duration::from_secs(2),
    });
    assert_eq!(timeout.code, ErrorCode::Timeout);
    assert!(timeout.message.contains("rpc.prices.get"), "{timeout:?}");

    let none = WireError::from(RpcError::NoInstances {
        service: "prices".to_owned(),
        records: 1,
        similar: Vec::new(),
    });
    assert_eq!(none.code, ErrorCode::ServiceUnavailable);
    assert_eq!(
        none.message,
        "no ACTIVE instance of prices is registered (1 record, not ACTIVE)"
    );

    let bad = WireError::from(RpcError::InvalidOptions {
        option: "timeout",
        reason: "must not be zero",
    });
    assert_eq!(bad.code, ErrorCode::Internal);
}

/// A dependency's NOT_ACTIVE does not travel on as NOT_ACTIVE: the
/// handler's caller would take it for "this instance is not the leader"
/// and retry elsewhere, although the handler may have done its work.
#[test]
fn a_dependency_not_active_is_service_unavailable() {
    let err = WireError::from(RpcError::Remote {
        subject: "rpc.ledger.post".to_owned(),
        error: WireError::not_active("a standby").with_details(json!({"leader": "l2"})),
    });
    assert_eq!(err.code, ErrorCode::ServiceUnavailable);
    assert_eq!(err.details, Some(json!({"leader": "l2"})));
}

/// Event errors: JetStream not confirming the event is an unknown
/// outcome (it may be stored), so TIMEOUT, which invites no retry of a
/// call that is not idempotent; a stream that cannot be reached stored
/// nothing, so SERVICE_UNAVAILABLE; a name, id or payload the handler
/// built wrong is INTERNAL.
#[test]
fn an_event_error_becomes_timeout_service_unavailable_or_internal() {
    let unconfirmed = WireError::from(EventError::Publish {
        subject: "events.price.changed".to_owned(),
        id: "e1".to_owned(),
        source: "no ack".into(),
    });
    assert_eq!(unconfirmed.code, ErrorCode::Timeout);
    assert!(
        !unconfirmed.message.contains("no ack"),
        "the cause stays in the log: {unconfirmed:?}"
    );
    let no_stream = WireError::from(EventError::Stream("no stream".into()));
    assert_eq!(no_stream.code, ErrorCode::ServiceUnavailable);
    let bad_id = WireError::from(EventError::InvalidId { id: String::new() });
    assert_eq!(bad_id.code, ErrorCode::Internal);
}

/// A dependency that refuses this service's own request (INVALID_REQUEST,
/// UNAUTHORIZED, FORBIDDEN) or has no such method or group blames this
/// service, not its caller: INTERNAL, with neither the dependency's words
/// nor its details. Domain answers (a resource NOT_FOUND, CONFLICT) pass
/// on with their details.
#[test]
fn a_dependency_refusing_this_service_is_internal() {
    for code in [
        ErrorCode::InvalidRequest,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
    ] {
        let err = WireError::from(RpcError::Remote {
            subject: "rpc.prices.get".to_owned(),
            error: WireError::new(code, "cannot decode the request: missing field `x`")
                .with_details(json!({"field": "x"})),
        });
        assert_eq!(err.code, ErrorCode::Internal, "{code:?}");
        assert!(!err.message.contains("missing field"), "{err:?}");
        assert_eq!(err.details, None, "{code:?}");
    }
    let no_method = WireError::from(RpcError::NoSuchMethod {
        service: "prices".to_owned(),
        method: "gett".to_owned(),
        methods: vec!["get".to_owned()],
    });
    assert_eq!(no_method.code, ErrorCode::Internal);
    let no_group = WireError::from(RpcError::UnknownGroup {
        service: "ledger".to_owned(),
        group: "eu".to_owned(),
        groups: vec!["us".to_owned()],
    });
    assert_eq!(no_group.code, ErrorCode::Internal);
    let conflict = WireError::from(RpcError::Remote {
        subject: "rpc.ledger.post".to_owned(),
        error: WireError::conflict("stale revision").with_details(json!({"revision": 3})),
    });
    assert_eq!(conflict.code, ErrorCode::Conflict);
    assert_eq!(conflict.details, Some(json!({"revision": 3})));
}

/// End to end: a dependency's INVALID_REQUEST about a request the handler
/// built reaches the outer caller as INTERNAL, not as its own fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_invalid_request_through_question_mark_is_internal() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let _prices = conn
        .service("prices", "1.0.0")
        .handler("get", |_: String| async move {
            Err::<f64, _>(WireError::invalid_request("missing field `venue`"))
        })
        .start()
        .await
        .unwrap();
    let rpc = conn.rpc();
    let _quotes = conn
        .service("quotes", "1.0.0")
        .handler("quote", move |symbol: String| {
            let rpc = rpc.clone();
            async move {
                let price: f64 = rpc.call("prices", "get", &symbol).await?;
                Ok(price)
            }
        })
        .start()
        .await
        .unwrap();
    let err = conn
        .rpc()
        .call::<_, f64>("quotes", "quote", &"MSFT")
        .await
        .unwrap_err();
    let remote = err.remote().expect("an answer of the service");
    assert_eq!(remote.code, ErrorCode::Internal, "{remote:?}");
    assert!(!remote.message.contains("venue"), "{remote:?}");
}

/// `?` on an event publish inside a handler compiles and answers the
/// caller with the mapped code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_error_in_a_handler_answers_internal() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let events = conn.events();
    let _service = conn
        .service("publisher", "1.0.0")
        .handler("publish", move |domain: String| {
            let events = events.clone();
            async move {
                events.publish(&domain, "changed", &json!({})).await?;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    let err = conn
        .rpc()
        .call::<_, ()>("publisher", "publish", &"not a domain")
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::Internal, "{err}");
}

/// `CallOptions` chain a deadline like their other settings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_options_chain_a_timeout() {
    let opts = CallOptions::default()
        .idempotent()
        .with_timeout(Duration::from_millis(300));
    assert_eq!(opts.timeout, Some(Duration::from_millis(300)));
    assert!(opts.idempotent);
    // The constructor stays.
    assert_eq!(
        CallOptions::timeout(Duration::from_secs(1)).timeout,
        Some(Duration::from_secs(1))
    );

    let nats = server();
    let conn = connect(&nats.url()).await;
    let _slow = conn
        .service("slow", "1.0.0")
        .handler("wait", |v: Value| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(v)
        })
        .start()
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let err = conn
        .rpc()
        .call_with::<_, Value>(
            "slow",
            "wait",
            &json!({}),
            &CallOptions::default().with_timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// A handler reaches the connection through its context: no clone of it
/// captured in the closure and cloned again on every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_calls_and_publishes_through_its_context() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let _prices = conn
        .service("prices", "1.0.0")
        .handler("get", |_: String| async move { Ok(175.0) })
        .start()
        .await
        .unwrap();
    let _quotes = conn
        .service("quotes", "1.0.0")
        .handler_with_context("quote", |ctx: RequestContext, symbol: String| async move {
            let price: f64 = ctx.connection.rpc().call("prices", "get", &symbol).await?;
            ctx.connection
                .events()
                .publish("quote", "served", &json!({"symbol": symbol}))
                .await?;
            Ok(price)
        })
        .start()
        .await
        .unwrap();
    let price: f64 = conn.rpc().call("quotes", "quote", &"AAPL").await.unwrap();
    assert_eq!(price, 175.0);
}
