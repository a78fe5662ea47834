//! What a stop that runs out of time reports: the requests still running
//! (not the subscription loops serving them).

mod common;

use std::time::Duration;

use aegis_sdk::{
    registry::{RegistrationOptions, RegistryError},
    rpc::{CallOptions, WireError, server::ServiceError},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

/// Three requests of one method still in their handler at the shutdown
/// timeout are three requests still running, not one (its loop).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_that_times_out_counts_the_requests_still_running() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let service = conn
        .service("slow-service", "1.0.0")
        .instance_id("s1")
        .shutdown_timeout(Duration::from_millis(300))
        .handler("slow", |v: Value| async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, WireError>(v)
        })
        .start()
        .await
        .unwrap();
    let metrics = service.metrics().clone();
    let calls: Vec<_> = (0..3)
        .map(|n| {
            let rpc = conn.rpc();
            tokio::spawn(async move {
                rpc.call_instance::<_, Value>(
                    "slow-service",
                    "s1",
                    "slow",
                    &json!({ "n": n }),
                    &CallOptions::default(),
                )
                .await
            })
        })
        .collect();
    eventually(
        Duration::from_secs(5),
        "the three calls reach the handler",
        || {
            let in_flight = metrics.in_flight();
            async move { in_flight == 3 }
        },
    )
    .await;
    match service.shutdown().await {
        Err(ServiceError::ShutdownTimeout(3)) => {}
        other => panic!("expected ShutdownTimeout(3), got {other:?}"),
    }
    for call in calls {
        call.abort();
    }
}

/// A registry that does not confirm the deregistration before the stop's
/// time is up (here the server is frozen) is a registry error: no request
/// was running, so it is no shutdown time-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deregistration_that_overruns_the_stop_is_a_registry_error() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("aegis_sdk=debug"))
        .with_test_writer()
        .try_init();
    let mut nats = server();
    let conn = connect(&nats.url()).await;
    let timeout = Duration::from_millis(1500);
    let service = conn
        .service("idle-service", "1.0.0")
        .instance_id("i1")
        .shutdown_timeout(timeout)
        // One delete may wait 3 s for its acknowledgement, twice the stop.
        .registration(RegistrationOptions {
            heartbeat: Duration::from_secs(3),
            ..Default::default()
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    // Frozen, the server keeps the connection open but confirms nothing:
    // the delete waits out its write timeout (`pause` returns once every
    // thread of the server is stopped: on a loaded machine the server went
    // on for milliseconds after `kill` returned, and stored the purge).
    nats.pause();
    let started = std::time::Instant::now();
    let stopped = service.shutdown().await;
    let took = started.elapsed();
    nats.resume();
    match stopped {
        Err(ServiceError::Registry(RegistryError::Delete { key, .. })) => {
            assert!(key.contains("i1"), "{key}");
        }
        other => panic!("expected a registry error, got {other:?}"),
    }
    assert!(
        took < timeout + Duration::from_secs(1),
        "the stop took {took:?}"
    );
}
