//! Durations too long for the clock, given wherever the SDK takes one: a
//! wait (a timeout, a grace, a configured request timeout) is served as
//! "effectively forever"; a period or lifetime that cannot make sense (a
//! registry TTL, a lease, a metrics interval, an ack wait) is refused
//! before any I/O. Never a panic ("overflow when adding duration to
//! instant").

mod common;

use std::time::Duration;

use aegis_sdk::{
    AegisConfig, Connection, RegistryReader,
    commands::{Command, CommandError, CommandUpdate, Progress},
    election::{ElectionError, LeaseConfig},
    events::{DeliveryMode, Event, EventError},
    registry::{RegistrationOptions, RegistryError},
    rpc::{WireError, server::ServiceError},
    startup::{self, StartFailure},
};
use common::{connect, echo_service, eventually, server};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A connection whose configured timeouts are as long as a `Duration` goes.
async fn connect_forever(url: &str) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::MAX;
    config.nats.connect_timeout = Duration::MAX;
    Connection::connect(config).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_request_timeout_too_long_for_the_clock_is_served() {
    let nats = server();
    let conn = connect_forever(&nats.url()).await;
    let _service = echo_service(&conn, "echo-service", "e1").await;
    let reply: Value = conn
        .rpc()
        .call("echo-service", "echo", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(reply, json!({"n": 1}));
    let reader = RegistryReader::start(&conn).await.unwrap();
    assert!(reader.catch_up(Duration::from_secs(5)).await);
    conn.events()
        .publish("order", "created", &json!({"id": 1}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_catch_up_too_long_for_the_clock_is_served() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let _service = echo_service(&conn, "echo-service", "e1").await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    assert!(reader.catch_up(Duration::MAX).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_with_a_timeout_too_long_for_the_clock_is_served() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let _worker = conn
        .commands()
        .worker("order-service")
        .handler(
            "rebuild_book",
            |cmd: Command<Value>, _: Progress| async move { Ok(cmd.payload) },
        )
        .start()
        .await
        .unwrap();
    // Past what chrono and the monotonic clock can hold, and far enough
    // that the deadline is in a year chrono holds but RFC 3339 does not.
    for timeout in [Duration::MAX, Duration::from_secs(20_000 * 365 * 24 * 3600)] {
        let mut handle = conn
            .commands()
            .send("order-service", "rebuild_book", &json!({"a": 1}), timeout)
            .await
            .unwrap();
        loop {
            match handle.next().await.unwrap() {
                CommandUpdate::Completed(v) => {
                    assert_eq!(v, json!({"a": 1}));
                    break;
                }
                CommandUpdate::Progress { .. } => {}
                other => panic!("unexpected update {other:?}"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_timeout_too_long_for_the_clock_stops_the_service() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let forever = conn
        .service("echo-service", "1.0.0")
        .instance_id("e1")
        .shutdown_timeout(Duration::MAX)
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    forever.shutdown().await.unwrap();
}

/// A drain grace as long as the shutdown timeout leaves the stop no time
/// to wait for requests in flight: every stop would report a time-out
/// with nothing running. Refused before start, with what to change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_grace_that_uses_up_the_shutdown_timeout_is_refused_before_start() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    for (grace, timeout) in [
        (Duration::MAX, Duration::from_millis(500)),
        (Duration::from_secs(1), Duration::from_secs(1)),
    ] {
        let started = conn
            .service("echo-service", "1.0.0")
            .instance_id("e2")
            .shutdown_timeout(timeout)
            .drain_grace(grace)
            .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
            .start()
            .await;
        let Err(ServiceError::InvalidTiming {
            option: "drain_grace",
            message,
        }) = started
        else {
            let stopped = match started {
                Ok(service) => format!("started; its stop: {:?}", service.shutdown().await),
                Err(e) => format!("{e:?}"),
            };
            panic!("{grace:?} of {timeout:?}: {stopped}");
        };
        assert!(message.contains("shutdown timeout"), "{message}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_timing_too_long_for_the_clock_is_refused_before_start() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let too_long = [
        RegistrationOptions {
            ttl: Duration::MAX,
            heartbeat: Duration::from_secs(1_000_000_000_000),
            ..Default::default()
        },
        RegistrationOptions {
            ttl: Duration::MAX,
            ..Default::default()
        },
    ];
    for options in too_long {
        assert!(matches!(
            options.validate(),
            Err(RegistryError::InvalidOptions(_))
        ));
        let started = conn
            .service("echo-service", "1.0.0")
            .registration(options)
            .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
            .start()
            .await;
        assert!(
            matches!(
                started,
                Err(ServiceError::Registry(RegistryError::InvalidOptions(_)))
            ),
            "{started:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_too_long_for_the_clock_is_refused_before_start() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    for lease in [
        LeaseConfig::with_lease(Duration::MAX),
        LeaseConfig {
            renew_interval: Duration::MAX,
            ..Default::default()
        },
        LeaseConfig {
            safety_margin: Duration::MAX,
            ..Default::default()
        },
    ] {
        assert!(matches!(
            lease.validate(),
            Err(ElectionError::InvalidTiming(_))
        ));
        let started = conn
            .service("ledger-service", "1.0.0")
            .single_active("default")
            .lease(lease)
            .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
            .start()
            .await;
        assert!(
            matches!(
                started,
                Err(ServiceError::Election(ElectionError::InvalidTiming(_)))
            ),
            "{started:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_asked_to_hold_for_longer_than_the_clock_holds_does_not() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let service = conn
        .service("ledger-service", "1.0.0")
        .single_active("default")
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    let leadership = service.election().unwrap().leadership();
    eventually(Duration::from_secs(10), "the only instance leads", || {
        let leads = leadership.serving_epoch().is_some();
        async move { leads }
    })
    .await;
    let epoch = leadership.serving_epoch().unwrap();
    assert!(leadership.holds(epoch, Duration::ZERO));
    assert!(!leadership.holds(epoch, Duration::MAX));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metrics_interval_that_cannot_tick_is_refused_before_start() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    for every in [Duration::MAX, Duration::ZERO] {
        let started = conn
            .service("echo-service", "1.0.0")
            .metrics_interval(Some(every))
            .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
            .start()
            .await;
        assert!(
            matches!(
                started,
                Err(ServiceError::InvalidTiming {
                    option: "metrics_interval",
                    ..
                })
            ),
            "{every:?}: {started:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ack_wait_the_server_cannot_hold_is_refused_before_start() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let subscribed = conn
        .events()
        .subscribe::<Value>("risk-service", "order.*", DeliveryMode::Compete)
        .ack_wait(Duration::MAX)
        .handler(|_: Event<Value>| async move { Ok(()) })
        .start()
        .await;
    assert!(
        matches!(subscribed, Err(EventError::InvalidOptions(_))),
        "{:?}",
        subscribed.err()
    );
    let worker = conn
        .commands()
        .worker("order-service")
        .ack_wait(Duration::MAX)
        .handler(
            "rebuild_book",
            |c: Command<Value>, _: Progress| async move { Ok(c.payload) },
        )
        .start()
        .await;
    assert!(
        matches!(worker, Err(CommandError::InvalidOptions(_))),
        "{:?}",
        worker.err()
    );
}

#[tokio::test]
async fn a_start_retried_for_longer_than_the_clock_holds_runs() {
    let shutdown = CancellationToken::new();
    let mut tries = 0;
    let started = startup::retry(
        Duration::MAX,
        &shutdown,
        || {
            tries += 1;
            let this = tries;
            async move { if this < 2 { Err("not yet") } else { Ok(this) } }
        },
        |_| true,
    )
    .await;
    assert!(
        matches!(started, Ok(Some(2))),
        "{:?}",
        started
            .err()
            .map(|e| matches!(e, StartFailure::Permanent(_)))
    );
}
