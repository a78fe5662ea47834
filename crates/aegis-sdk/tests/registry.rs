//! The service registry against a real nats-server: the record and its
//! fields, heartbeats, graceful and crash removal (a SIGKILLed child
//! process), re-registration of a deleted key, status changes, heartbeat
//! failures, bucket checks, and the reader's queries and change stream.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    contracts::{InstanceStatus, ServiceInstance},
    registry::{RegistryChange, RegistryError, RegistryReader, RemovalReason},
    rpc::{CallOptions, RpcError, Service, WireError, server::ServiceError},
};
use async_nats::jetstream::kv;
use common::{ChildInstance, connect, eventually, server};
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

async fn echo_service(
    conn: &Connection,
    service: &str,
    id: &str,
    heartbeat: Duration,
    ttl: Duration,
) -> Service {
    conn.service(service, "1.4.2")
        .instance_id(id)
        .heartbeat(heartbeat)
        .ttl(ttl)
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .handler("slow", |ms: u64| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok::<_, WireError>(ms)
        })
        .start()
        .await
        .expect("service starts")
}

/// The next change matching `pred`, or a panic after `timeout`.
async fn next_change(
    changes: &mut (impl Stream<Item = RegistryChange> + Unpin),
    timeout: Duration,
    what: &str,
    pred: impl Fn(&RegistryChange) -> bool,
) -> RegistryChange {
    tokio::time::timeout(timeout, async {
        loop {
            let change = changes.next().await.expect("change stream ended");
            if pred(&change) {
                return change;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for: {what}"))
}

fn is_removal(service: &str, id: &str) -> impl Fn(&RegistryChange) -> bool {
    let (service, id) = (service.to_owned(), id.to_owned());
    move |c| matches!(c, RegistryChange::Removed { service: s, instance_id: i, .. } if *s == service && *i == id)
}

async fn raw_kv(url: &str) -> kv::Store {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_key_value("service_registry").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_appears_with_the_right_fields() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let before = chrono::Utc::now();
    let svc = conn
        .service("pricing-service", "1.4.2")
        .instance_id("pricing-1")
        .metadata("zone", "eu-1")
        .handler("get_price", |_: Value| async { Ok::<_, WireError>(1.0) })
        .handler("quote", |_: Value| async { Ok::<_, WireError>(2.0) })
        .start()
        .await
        .unwrap();

    // The stored JSON, read without the SDK.
    let store = raw_kv(&nats.url()).await;
    let entry = store
        .entry("service-instances.pricing-service.pricing-1")
        .await
        .unwrap()
        .expect("the record is stored under the contract key");
    let v: Value = serde_json::from_slice(&entry.value).unwrap();
    assert_eq!(v["serviceName"], "pricing-service");
    assert_eq!(v["instanceId"], "pricing-1");
    assert_eq!(v["version"], "1.4.2");
    assert_eq!(v["status"], "ACTIVE");
    assert_eq!(v["stickyActiveGroup"], Value::Null);
    let beat = chrono::DateTime::parse_from_rfc3339(v["lastHeartbeat"].as_str().unwrap()).unwrap();
    assert!(beat >= before - chrono::Duration::seconds(1));
    assert!(v["lastHeartbeat"].as_str().unwrap().ends_with('Z'));
    let meta = &v["metadata"];
    assert_eq!(meta["pid"], json!(std::process::id()));
    assert_eq!(meta["endpoints"], json!(["get_price", "quote"]));
    assert_eq!(meta["sdkVersion"], json!(aegis_sdk::SDK_VERSION));
    assert_eq!(meta["zone"], "eu-1");
    assert!(meta["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(meta["startTime"].as_str().is_some());
    assert!(v["startedAt"].as_str().is_some());

    // Stored with the per-key TTL, in a bucket with TTL and limit markers.
    let stream = store.stream.clone();
    let last = stream
        .direct_get_last_for_subject(
            "$KV.service_registry.service-instances.pricing-service.pricing-1",
        )
        .await
        .unwrap();
    assert_eq!(last.headers.get("Nats-TTL").unwrap().as_str(), "15000ms");
    let config = &stream.cached_info().config;
    assert!(config.allow_message_ttl);
    assert!(config.subject_delete_marker_ttl.is_some());

    // The reader sees the same record.
    let reader = RegistryReader::start(&conn).await.unwrap();
    let seen = reader.get("pricing-service", "pricing-1").unwrap();
    assert_eq!(seen.metadata["zone"], "eu-1");
    assert_eq!(
        svc.registration().unwrap().key(),
        "service-instances.pricing-service.pricing-1"
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_advance_last_heartbeat() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&connect(&nats.url()).await)
        .await
        .unwrap();
    let mut changes = Box::pin(reader.changes());
    let svc = echo_service(
        &conn,
        "beat-service",
        "beat-1",
        Duration::from_millis(200),
        Duration::from_secs(2),
    )
    .await;
    let mut beats = Vec::new();
    while beats.len() < 4 {
        if let RegistryChange::Upserted(i) =
            next_change(&mut changes, Duration::from_secs(5), "a heartbeat", |c| {
                c.instance_id() == "beat-1"
            })
            .await
        {
            beats.push(i.last_heartbeat);
        }
    }
    assert!(beats.windows(2).all(|w| w[1] > w[0]), "{beats:?}");
    let spacing = (beats[3] - beats[1]).num_milliseconds();
    assert!(
        (200..2000).contains(&spacing),
        "two beats took {spacing} ms"
    );
    svc.shutdown().await.unwrap();
}

/// Beats go out every heartbeat; the record is re-written only every
/// `refresh` while nothing changes, and at the next beat when something does
/// (here a failing health check), so watchers are not sent one message per
/// instance per beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unchanged_record_is_rewritten_only_every_refresh() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let watcher = connect(&nats.url()).await;
    let reader = RegistryReader::start(&watcher).await.unwrap();
    let mut changes = Box::pin(reader.changes());
    let mut beats = watcher
        .client()
        .subscribe(aegis_sdk::contracts::subjects::heartbeat_subject(
            "refresh-service",
            "r-1",
        ))
        .await
        .unwrap();
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let check = healthy.clone();
    let svc = conn
        .service("refresh-service", "1.0.0")
        .instance_id("r-1")
        .heartbeat(Duration::from_millis(100))
        .refresh(Duration::from_millis(600))
        .ttl(Duration::from_secs(3))
        .health_check(move || {
            let healthy = check.load(std::sync::atomic::Ordering::Relaxed);
            async move { healthy }
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    let first = next_change(&mut changes, Duration::from_secs(5), "the record", |c| {
        c.instance_id() == "r-1"
    })
    .await;
    let RegistryChange::Upserted(first) = first else {
        panic!("expected the record, got {first:?}");
    };
    assert_eq!(first.metadata["refreshMs"], 600);
    assert_eq!(first.metadata["heartbeatMs"], 100);

    // 2.4 s of an unchanged record: 24 beats, 4 writes.
    let window = Duration::from_millis(2400);
    let started = Instant::now();
    let (mut writes, mut beat_count) = (0, 0);
    while let Some(left) = window.checked_sub(started.elapsed()) {
        tokio::select! {
            change = changes.next() => {
                if change.expect("change stream").instance_id() == "r-1" {
                    writes += 1;
                }
            }
            beat = beats.next() => {
                beat.expect("beat subscription");
                beat_count += 1;
            }
            () = tokio::time::sleep(left) => break,
        }
    }
    assert!((2..=6).contains(&writes), "{writes} record writes in 2.4 s");
    assert!(
        beat_count >= 15,
        "only {beat_count} liveness beats in 2.4 s"
    );

    // A change is written at the next beat, not at the next refresh.
    healthy.store(false, std::sync::atomic::Ordering::Relaxed);
    let failed = Instant::now();
    next_change(&mut changes, Duration::from_secs(5), "UNHEALTHY", |c| {
        matches!(c, RegistryChange::Upserted(i)
            if i.instance_id == "r-1" && i.status == InstanceStatus::Unhealthy)
    })
    .await;
    assert!(
        failed.elapsed() < Duration::from_millis(450),
        "the failing check was written after {:?}",
        failed.elapsed()
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stop_deregisters_before_it_stops_serving() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let client = connect(&nats.url()).await;
    let reader = RegistryReader::start(&client).await.unwrap();
    let svc = echo_service(
        &conn,
        "stop-service",
        "stop-1",
        Duration::from_secs(1),
        Duration::from_secs(3),
    )
    .await;
    eventually(Duration::from_secs(5), "registered", || {
        let r = reader.clone();
        async move { r.get("stop-service", "stop-1").is_some() }
    })
    .await;
    let mut changes = Box::pin(reader.changes());

    // A request is in flight when the shutdown starts.
    let rpc = client.rpc();
    let in_flight =
        tokio::spawn(async move { rpc.call::<_, u64>("stop-service", "slow", &800u64).await });
    let metrics = svc.metrics().clone();
    eventually(Duration::from_secs(5), "request in flight", || {
        let m = metrics.clone();
        async move { m.in_flight() == 1 }
    })
    .await;
    let shutdown = tokio::spawn(svc.shutdown());
    let removal = next_change(
        &mut changes,
        Duration::from_secs(5),
        "the removal",
        is_removal("stop-service", "stop-1"),
    )
    .await;
    assert!(
        matches!(
            removal,
            RegistryChange::Removed {
                reason: RemovalReason::Deregistered,
                ..
            }
        ),
        "{removal:?}"
    );
    // Deregistered while the request still runs: discovery stopped first.
    assert!(
        !in_flight.is_finished(),
        "the removal came after the request ended"
    );
    assert_eq!(in_flight.await.unwrap().unwrap(), 800);
    shutdown.await.unwrap().unwrap();
    assert!(reader.get("stop-service", "stop-1").is_none());
    let entry = raw_kv(&nats.url())
        .await
        .entry("service-instances.stop-service.stop-1")
        .await
        .unwrap();
    assert!(
        entry.is_none_or(|e| e.operation != kv::Operation::Put),
        "the key is deleted on the server"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_instance_disappears_after_its_ttl() {
    let nats = server();
    let reader = RegistryReader::start(&connect(&nats.url()).await)
        .await
        .unwrap();
    let ttl = Duration::from_secs(2);
    let mut child = ChildInstance::spawn(
        "child_instance",
        &nats.url(),
        "crash-service",
        "crash-1",
        Duration::from_millis(500),
        ttl,
    );
    eventually(Duration::from_secs(30), "the child registered", || {
        let r = reader.clone();
        async move { r.get("crash-service", "crash-1").is_some() }
    })
    .await;
    let mut changes = Box::pin(reader.changes());
    child.kill();
    let killed = Instant::now();
    let removal = next_change(
        &mut changes,
        ttl + Duration::from_secs(15),
        "the crashed instance's removal",
        is_removal("crash-service", "crash-1"),
    )
    .await;
    assert!(
        matches!(
            removal,
            RegistryChange::Removed {
                reason: RemovalReason::Expired,
                ..
            }
        ),
        "{removal:?}"
    );
    let gone_after = killed.elapsed();
    eprintln!(
        "SIGKILLed instance removed {gone_after:?} after the kill (TTL {ttl:?}, heartbeat 500ms)"
    );
    // It expired on the server after its TTL, not at the kill (the server's
    // expiry timer may fire a little early, so the bound is loose).
    assert!(gone_after >= ttl / 2, "{gone_after:?}");
    assert!(reader.get("crash-service", "crash-1").is_none());
    assert!(reader.is_synced());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of a_sigkilled_instance_disappears_after_its_ttl"]
async fn child_instance() {
    common::run_child_instance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_key_is_registered_again() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&conn).await.unwrap();
    let svc = echo_service(
        &conn,
        "again-service",
        "again-1",
        Duration::from_millis(300),
        Duration::from_secs(3),
    )
    .await;
    let mut changes = Box::pin(reader.changes());
    raw_kv(&nats.url())
        .await
        .delete("service-instances.again-service.again-1")
        .await
        .unwrap();
    let removal = next_change(
        &mut changes,
        Duration::from_secs(5),
        "the deletion",
        is_removal("again-service", "again-1"),
    )
    .await;
    assert!(
        matches!(
            removal,
            RegistryChange::Removed {
                reason: RemovalReason::Deleted,
                ..
            }
        ),
        "{removal:?}"
    );
    next_change(
        &mut changes,
        Duration::from_secs(5),
        "the re-registration",
        |c| matches!(c, RegistryChange::Upserted(i) if i.instance_id == "again-1"),
    )
    .await;
    assert_eq!(
        reader.get("again-service", "again-1").unwrap().status,
        InstanceStatus::Active
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_written_at_once_and_steer_discovery() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let client = connect(&nats.url()).await;
    let reader = RegistryReader::start(&client).await.unwrap();
    // A heartbeat far longer than the test: only the immediate write can
    // carry the change.
    let svc = echo_service(
        &conn,
        "status-service",
        "status-1",
        Duration::from_secs(30),
        Duration::from_secs(90),
    )
    .await;
    let rpc = client.rpc();
    let ok: Value = rpc.call("status-service", "echo", &json!(1)).await.unwrap();
    assert_eq!(ok, json!(1));

    for status in [
        InstanceStatus::Unhealthy,
        InstanceStatus::Standby,
        InstanceStatus::Active,
    ] {
        let changed = Instant::now();
        svc.set_status(status).await.unwrap();
        eventually(Duration::from_secs(2), &format!("status {status}"), || {
            let r = reader.clone();
            async move {
                r.get("status-service", "status-1")
                    .is_some_and(|i| i.status == status)
            }
        })
        .await;
        eprintln!("status {status} visible after {:?}", changed.elapsed());
        let call = rpc
            .call::<_, Value>("status-service", "echo", &json!(2))
            .await;
        match status {
            InstanceStatus::Active => assert!(call.is_ok(), "{call:?}"),
            _ => assert!(
                matches!(call, Err(RpcError::NoInstances { .. })),
                "{call:?}"
            ),
        }
    }
    assert_eq!(svc.registration().unwrap().status(), InstanceStatus::Active);
    svc.shutdown().await.unwrap();
}

/// Failed registry writes are a fact about the registry, not about the
/// instance: after a registry outage longer than `unready_after` writes,
/// every instance of every service would otherwise report itself UNHEALTHY
/// with its first write that works again (discovery skipping all of them
/// at once) and a sticky leader would step aside for it. The record keeps
/// the chosen status, and the health verdict never changes; the failures
/// are still counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_registry_writes_change_neither_status_nor_health() {
    let mut nats = server();
    let conn = connect(&nats.url()).await;
    let svc = conn
        .service("flaky-service", "1.0.0")
        .instance_id("flaky-1")
        .registration(aegis_sdk::registry::RegistrationOptions {
            // A beat apart, the first write that works and the next one
            // are told apart by polling.
            heartbeat: Duration::from_secs(1),
            // Every beat writes, so failures count from the outage on.
            refresh: Duration::from_secs(1),
            // Long enough that the record survives the outage.
            ttl: Duration::from_secs(60),
            unready_after: 3,
            ..Default::default()
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    let registration = svc.registration().unwrap().handle();
    let health = registration.health_changes();
    nats.kill();
    eventually(
        Duration::from_secs(20),
        "more failed writes in a row than unready_after",
        || {
            let r = registration.clone();
            async move { r.consecutive_failures() > 3 }
        },
    )
    .await;
    nats.restart().unwrap();
    // The failure count drops to 0 with the first write that works, under
    // the lock that stores that write's record.
    eventually(Duration::from_secs(20), "a write works again", || {
        let r = registration.clone();
        async move { r.consecutive_failures() == 0 }
    })
    .await;
    let record = registration.record();
    assert_eq!(
        record.status,
        InstanceStatus::Active,
        "the first write that works again carries the chosen status: {record:?}"
    );
    assert!(
        !record
            .metadata
            .contains_key(aegis_sdk::contracts::control::METADATA_STATUS_REASON),
        "{:?}",
        record.metadata
    );
    assert!(
        !health.has_changed().unwrap(),
        "the health verdict changed: {:?}",
        registration.health()
    );
    assert!(registration.health().is_healthy());
    let reader = RegistryReader::start(&connect(&nats.url()).await)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "the registry shows ACTIVE", || {
        let r = reader.clone();
        async move {
            r.get("flaky-service", "flaky-1")
                .is_some_and(|i| i.status == InstanceStatus::Active)
        }
    })
    .await;
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_without_ttl_support_is_refused() {
    let nats = server();
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    js.create_key_value(kv::Config {
        bucket: "service_registry".into(),
        history: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    let conn = connect(&nats.url()).await;
    let err = RegistryReader::start(&conn).await.unwrap_err();
    assert!(
        matches!(err, RegistryError::BucketUnusable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("TTL"), "{err}");
    let err = conn
        .service("any-service", "1.0.0")
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::Registry(RegistryError::BucketUnusable { .. })
        ),
        "{err:?}"
    );
    // Nothing routes either, and the caller is told why.
    let err = conn
        .rpc()
        .call::<_, Value>("any-service", "echo", &json!(1))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Discovery(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_timing_is_refused_before_any_io_and_registration_can_be_skipped() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let err = conn
        .service("timing-service", "1.0.0")
        .heartbeat(Duration::from_secs(3))
        .ttl(Duration::from_secs(3))
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::Registry(RegistryError::InvalidOptions(_))
        ),
        "{err:?}"
    );

    let svc = conn
        .service("hidden-service", "1.0.0")
        .instance_id("hidden-1")
        .register(false)
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    assert!(svc.registration().is_none());
    assert!(matches!(
        svc.set_status(InstanceStatus::Standby).await,
        Err(ServiceError::NotRegistered)
    ));
    let rpc = conn.rpc();
    assert!(matches!(
        rpc.call::<_, Value>("hidden-service", "echo", &json!(1))
            .await,
        Err(RpcError::NoInstances { .. })
    ));
    let reply = rpc
        .call_balanced::<_, Value>(
            "hidden-service",
            "echo",
            &json!(1),
            &CallOptions::default().who_served(),
        )
        .await
        .unwrap();
    assert_eq!(reply.instance_id.as_deref(), Some("hidden-1"));
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reader_answers_queries_and_streams_changes() {
    let nats = server();
    let reader_conn = connect(&nats.url()).await;
    let reader = RegistryReader::start(&reader_conn).await.unwrap();
    assert!(reader.is_synced());
    assert!(reader.all().is_empty());
    assert_eq!(reader.staleness(), None);
    let mut changes = Box::pin(reader.changes());

    let conn = connect(&nats.url()).await;
    let beat = Duration::from_secs(1);
    let ttl = Duration::from_secs(3);
    let mut services = Vec::new();
    for (service, id) in [
        ("risk-service", "r-2"),
        ("risk-service", "r-1"),
        ("order-service", "o-1"),
    ] {
        services.push(echo_service(&conn, service, id, beat, ttl).await);
    }
    services[0]
        .set_status(InstanceStatus::Standby)
        .await
        .unwrap();
    eventually(
        Duration::from_secs(5),
        "three instances, one STANDBY",
        || {
            let r = reader.clone();
            async move { r.all().len() == 3 && r.by_status(InstanceStatus::Standby).len() == 1 }
        },
    )
    .await;

    let ids = |v: Vec<ServiceInstance>| {
        v.into_iter()
            .map(|i| format!("{}/{}", i.service_name, i.instance_id))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        ids(reader.all()),
        ["order-service/o-1", "risk-service/r-1", "risk-service/r-2"]
    );
    assert_eq!(
        ids(reader.by_service("risk-service")),
        ["risk-service/r-1", "risk-service/r-2"]
    );
    assert_eq!(
        ids(reader.by_status(InstanceStatus::Standby)),
        ["risk-service/r-2"]
    );
    assert_eq!(
        ids(reader.by_status(InstanceStatus::Active)),
        ["order-service/o-1", "risk-service/r-1"]
    );
    assert_eq!(reader.get("risk-service", "r-1").unwrap().version, "1.4.2");
    assert!(reader.get("risk-service", "r-9").is_none());
    assert!(reader.by_service("nobody").is_empty());

    // The change stream saw every registration and will see the removal.
    let mut upserted: HashMap<String, usize> = HashMap::new();
    while upserted.len() < 3 {
        if let RegistryChange::Upserted(i) =
            next_change(&mut changes, Duration::from_secs(5), "upserts", |_| true).await
        {
            *upserted.entry(i.instance_id).or_default() += 1;
        }
    }
    let order = services.pop().unwrap();
    order.shutdown().await.unwrap();
    next_change(
        &mut changes,
        Duration::from_secs(5),
        "order-service removal",
        is_removal("order-service", "o-1"),
    )
    .await;
    assert_eq!(reader.all().len(), 2);
    // A second reader on the same connection shares the one watch.
    let again = RegistryReader::start(&reader_conn).await.unwrap();
    assert_eq!(again.all(), reader.all());
    for s in services {
        s.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_instances_are_visible_to_readers_within_milliseconds() {
    let nats = server();
    let reader = RegistryReader::start(&connect(&nats.url()).await)
        .await
        .unwrap();
    let conn = connect(&nats.url()).await;
    let mut after_start = Vec::new();
    let mut services = Vec::new();
    for i in 0..10 {
        let id = format!("fast-{i}");
        let begun = Instant::now();
        let svc = echo_service(
            &conn,
            "visible-service",
            &id,
            Duration::from_secs(1),
            Duration::from_secs(3),
        )
        .await;
        let started = Instant::now();
        while reader.get("visible-service", &id).is_none() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{id} never became visible"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        after_start.push(started.elapsed());
        eprintln!(
            "{id}: start() took {:?}; visible {:?} after start() returned",
            started - begun,
            after_start.last().unwrap()
        );
        services.push(svc);
    }
    after_start.sort();
    let worst = *after_start.last().unwrap();
    eprintln!(
        "visibility after registration: median {:?}, worst {worst:?}",
        after_start[5]
    );
    // The design target is 100 ms; the test bound is generous for slow machines.
    assert!(worst < Duration::from_secs(1), "{worst:?}");
    for s in services {
        s.shutdown().await.unwrap();
    }
}

/// A registration of `service`/`instance` whose lifecycle events are kept,
/// and what takes those of them `keep` accepts that came since it last ran.
async fn registration_with_events(
    conn: &aegis_sdk::Connection,
    service: &str,
    instance: &str,
    keep: fn(&aegis_sdk::contracts::log::LogRecord) -> bool,
) -> (
    aegis_sdk::registry::Registration,
    impl Fn() -> Vec<aegis_sdk::contracts::log::LogRecord>,
) {
    use aegis_sdk::{contracts::log::LogRecord, registry::Registration};
    let events: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
    let sink = events.clone();
    let record = ServiceInstance::new(service, instance, "1.0.0", chrono::Utc::now());
    let reg = Registration::builder(conn, record)
        .on_event(Arc::new(move |r: LogRecord| sink.lock().unwrap().push(r)))
        .start()
        .await
        .unwrap();
    let taken = move || {
        std::mem::take(&mut *events.lock().unwrap())
            .into_iter()
            .filter(keep)
            .collect()
    };
    (reg, taken)
}

/// An operator's verdict, its lift and its running out are each one
/// `status_changed` event (the monitor's event list shows them), with no
/// field written as a Rust `None`; a lift with no verdict in force is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operators_verdict_its_lift_and_its_end_are_events() {
    use aegis_sdk::contracts::log::LogKind;
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (reg, changes) = registration_with_events(&conn, "verdict-service", "verdict-1", |r| {
        r.kind == LogKind::StatusChanged
    })
    .await;
    changes();

    reg.lift_unhealthy().await.unwrap();
    assert!(changes().is_empty(), "nothing was lifted");

    reg.force_unhealthy(None).await.unwrap();
    let made = changes();
    assert_eq!(made.len(), 1, "{made:?}");
    assert_eq!(
        Value::Object(made[0].fields.clone()),
        json!({"from": "ACTIVE", "to": "UNHEALTHY", "reason": "operator"})
    );
    assert!(!serde_json::to_string(&made[0]).unwrap().contains("None"));

    reg.lift_unhealthy().await.unwrap();
    let lifted = changes();
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    assert_eq!(lifted[0].fields["from"], "UNHEALTHY");
    assert_eq!(lifted[0].fields["to"], "ACTIVE");

    reg.force_unhealthy(Some(Duration::from_millis(300)))
        .await
        .unwrap();
    let timed = changes();
    assert_eq!(timed[0].fields["for_ms"], 300, "{timed:?}");
    assert!(timed[0].fields["until"].is_string(), "{timed:?}");
    eventually(Duration::from_secs(5), "the verdict runs out", || async {
        reg.health().is_healthy()
    })
    .await;
    let ended = changes();
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0].message, "the operator's UNHEALTHY verdict ran out");
    assert_eq!(ended[0].fields["to"], "ACTIVE");
    reg.deregister().await.unwrap();
}

/// An operator's `slow` drill, a change of its delay and its lift are each
/// one event (the instance's Logs & events list shows them beside the
/// verdicts), so latency an operator made is seen as made; the same delay
/// again, or a lift with no drill, is none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drill_its_change_and_its_lift_are_events() {
    use aegis_sdk::contracts::log::LogLevel;
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (reg, drills) = registration_with_events(&conn, "drill-service", "drill-1", |r| {
        r.message.contains("slow drill")
    })
    .await;
    drills();

    reg.set_drill_delay(Duration::ZERO).await.unwrap();
    assert!(drills().is_empty(), "nothing was lifted");

    reg.set_drill_delay(Duration::from_millis(500))
        .await
        .unwrap();
    let set = drills();
    assert_eq!(set.len(), 1, "{set:?}");
    assert_eq!(set[0].level, LogLevel::Warn);
    assert_eq!(set[0].fields["delay_ms"], 500, "{set:?}");
    assert!(set[0].fields["since"].is_string(), "{set:?}");

    reg.set_drill_delay(Duration::from_millis(500))
        .await
        .unwrap();
    assert!(drills().is_empty(), "the same delay again is no change");

    reg.set_drill_delay(Duration::from_millis(750))
        .await
        .unwrap();
    let changed = drills();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0].fields["delay_ms"], 750);
    assert_eq!(changed[0].fields["from_ms"], 500);
    assert_eq!(changed[0].fields["since"], set[0].fields["since"]);

    reg.set_drill_delay(Duration::ZERO).await.unwrap();
    let lifted = drills();
    assert_eq!(lifted.len(), 1, "{lifted:?}");
    assert_eq!(lifted[0].level, LogLevel::Info);
    assert_eq!(lifted[0].fields["from_ms"], 750);
    assert!(!serde_json::to_string(&lifted).unwrap().contains("None"));
    reg.deregister().await.unwrap();
}

/// Instance ids are unique per process; when two processes use one anyway
/// (a copy-pasted id), the one that stops must not delete the record the
/// other one wrote last: the survivor would vanish from discovery until
/// its next refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_the_record_another_process_wrote_under_the_same_id() {
    use aegis_sdk::registry::Registration;
    let nats = server();
    let (first, second) = (connect(&nats.url()).await, connect(&nats.url()).await);
    let record = || ServiceInstance::new("dup-service", "dup-1", "1.0.0", chrono::Utc::now());
    let early = Registration::builder(&first, record())
        .start()
        .await
        .unwrap();
    let late = Registration::builder(&second, record())
        .start()
        .await
        .unwrap();
    let kv = raw_kv(&nats.url()).await;
    let key = "service-instances.dup-service.dup-1";
    let written_by = |entry: Option<kv::Entry>| {
        entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| serde_json::from_slice::<ServiceInstance>(&e.value).unwrap())
            .and_then(|r| r.metadata.get("natsConnection").cloned())
    };
    let survivor = Some(Value::from(second.connection_name()));
    assert_eq!(written_by(kv.entry(key).await.unwrap()), survivor);

    early.deregister().await.unwrap();
    assert_eq!(
        written_by(kv.entry(key).await.unwrap()),
        survivor,
        "the record of the process still running is kept"
    );
    late.deregister().await.unwrap();
    assert_eq!(
        written_by(kv.entry(key).await.unwrap()),
        None,
        "its own stop removes it"
    );
}

/// A service restarted in place (a second registration under the same id
/// on the same connection, the first stopped after it): the first one's
/// deregistration took the record as its own, since it named the same
/// connection, and deleted the one its successor wrote, which vanished from
/// discovery until its next refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_leaves_the_record_a_later_registration_on_the_same_connection_wrote() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (before, after) = registered_twice(&conn).await;
    let kv = raw_kv(&nats.url()).await;
    the_earlier_stop_leaves_the_later_record(before, after, &kv).await;
}

/// The key of [`registered_twice`]'s record.
const AGAIN_KEY: &str = "service-instances.again-service.again-1";

/// Two registrations of again-service/again-1 on `conn`, the earlier
/// first.
async fn registered_twice(
    conn: &Connection,
) -> (
    aegis_sdk::registry::Registration,
    aegis_sdk::registry::Registration,
) {
    use aegis_sdk::registry::Registration;
    let record = || ServiceInstance::new("again-service", "again-1", "1.0.0", chrono::Utc::now());
    let before = Registration::builder(conn, record()).start().await.unwrap();
    let after = Registration::builder(conn, record()).start().await.unwrap();
    (before, after)
}

/// Stops `before`, and asserts the record `after` wrote is still there;
/// then stops `after`.
async fn the_earlier_stop_leaves_the_later_record(
    before: aegis_sdk::registry::Registration,
    after: aegis_sdk::registry::Registration,
    kv: &kv::Store,
) {
    before.deregister().await.unwrap();
    let entry = kv.entry(AGAIN_KEY).await.unwrap();
    assert!(
        entry.is_some_and(|e| e.operation == kv::Operation::Put),
        "the later registration's record is kept"
    );
    after.deregister().await.unwrap();
}

/// The metadata the registry keeps for itself (which registration and
/// connection wrote the record, its cadence) outlives an update that
/// clears the rest: without it, an earlier registration's stop on the
/// same connection took the later one's record for its own and deleted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_keeps_the_metadata_the_registry_keeps_for_itself() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let (before, after) = registered_twice(&conn).await;
    let kv = raw_kv(&nats.url()).await;
    let key = AGAIN_KEY;
    let stored = |entry: Option<kv::Entry>| -> Value {
        serde_json::from_slice(&entry.expect("a record").value).unwrap()
    };
    let written = stored(kv.entry(key).await.unwrap());
    after
        .update(|r| {
            r.metadata.clear();
            r.metadata.insert("zone".into(), "eu-1".into());
        })
        .await
        .unwrap();
    let updated = stored(kv.entry(key).await.unwrap());
    assert_eq!(updated["metadata"]["zone"], "eu-1");
    for kept in [
        "registrationId",
        "natsConnection",
        "heartbeatMs",
        "refreshMs",
    ] {
        assert!(!written["metadata"][kept].is_null(), "{kept} was written");
        assert_eq!(
            updated["metadata"][kept], written["metadata"][kept],
            "{kept} is kept"
        );
    }
    the_earlier_stop_leaves_the_later_record(before, after, &kv).await;
}

/// Two processes with one instance id that both got past the start's
/// check (started within milliseconds of each other, or one whose check
/// found no answer in time) are found out afterwards: each write expects
/// the record this process wrote last, and finding another process's
/// record there, each says so, naming the other's connection, host and
/// pid. Both stay registered (the record is still theirs to keep).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_with_one_id_find_each_other_out() {
    use aegis_sdk::contracts::log::{LogKind, LogLevel, LogRecord};
    use aegis_sdk::registry::Registration;
    let nats = server();
    let (first, second) = (connect(&nats.url()).await, connect(&nats.url()).await);
    let record = || {
        let mut record = ServiceInstance::new("dup-service", "dup-1", "1.0.0", chrono::Utc::now());
        record.metadata.insert("host".into(), "desk-7".into());
        record
            .metadata
            .insert("pid".into(), std::process::id().into());
        record
    };
    let heard = |conn: &Connection| {
        let events = Arc::new(Mutex::new(Vec::<LogRecord>::new()));
        let sink = events.clone();
        let registration = Registration::builder(conn, record())
            .heartbeat(Duration::from_millis(100))
            .refresh(Duration::from_millis(300))
            .on_event(Arc::new(move |e| sink.lock().unwrap().push(e)));
        (registration, events)
    };
    let (early, early_heard) = heard(&first);
    let early = early.start().await.unwrap();
    let (late, late_heard) = heard(&second);
    let late = late.start().await.unwrap();

    let found_out = |events: &Arc<Mutex<Vec<LogRecord>>>, other: &Connection| {
        let events = events.lock().unwrap();
        let found: Vec<&LogRecord> = events
            .iter()
            .filter(|e| e.kind == LogKind::DuplicateInstanceId)
            .collect();
        found.first().map(|e| {
            assert_eq!(e.level, LogLevel::Error);
            assert_eq!(e.fields["otherConnection"], other.connection_name());
            assert_eq!(e.fields["otherPid"], std::process::id());
            assert_eq!(e.fields["otherHost"], "desk-7");
            assert!(e.message.contains("dup-1"), "{}", e.message);
            found.len()
        })
    };
    eventually(
        Duration::from_secs(5),
        "the first finds the second out",
        || {
            let seen = found_out(&early_heard, &second).is_some();
            async move { seen }
        },
    )
    .await;
    eventually(
        Duration::from_secs(5),
        "the second finds the first out",
        || {
            let seen = found_out(&late_heard, &first).is_some();
            async move { seen }
        },
    )
    .await;
    // Said once for the same other process, not at every write: six more
    // writes of the key (three refreshes each) say nothing more.
    let kv = raw_kv(&nats.url()).await;
    let key = "service-instances.dup-service.dup-1";
    let revision = || async {
        kv.entry(key)
            .await
            .unwrap()
            .map(|e| (e.revision, e.operation))
    };
    let (seen, _) = revision().await.expect("the record");
    eventually(Duration::from_secs(5), "six more writes", || async {
        revision()
            .await
            .is_some_and(|(r, op)| r >= seen + 6 && op == kv::Operation::Put)
    })
    .await;
    assert_eq!(found_out(&early_heard, &second), Some(1));
    assert_eq!(found_out(&late_heard, &first), Some(1));
    early.deregister().await.unwrap();
    late.deregister().await.unwrap();
}

/// The liveness beat keeps its own cadence whatever the health check and
/// the record's write take: the monitor and `aegis status` call an
/// instance unresponsive by missed beats, and a slow check is no missed
/// beat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_health_check_does_not_space_out_the_beats() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut beats = conn
        .client()
        .subscribe(aegis_sdk::contracts::subjects::heartbeat_subject(
            "slow-check",
            "s-1",
        ))
        .await
        .unwrap();
    let every = Duration::from_millis(200);
    let svc = conn
        .service("slow-check", "1.0.0")
        .instance_id("s-1")
        .heartbeat(every)
        .ttl(Duration::from_secs(3))
        // Most of an interval, as a check of a database might take.
        .health_check(|| async {
            tokio::time::sleep(Duration::from_millis(180)).await;
            true
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    beats.next().await.expect("a first beat");
    let mut last = Instant::now();
    let mut gaps = Vec::new();
    for _ in 0..8 {
        tokio::time::timeout(Duration::from_secs(5), beats.next())
            .await
            .expect("a beat within 5 s")
            .expect("beat subscription");
        gaps.push(last.elapsed());
        last = Instant::now();
    }
    // A beat that waited for the check would come some 380 ms apart,
    // every time: the median says so. One late beat (a loaded machine
    // holding a task up) is no spacing, only no missed beat.
    gaps.sort();
    let (median, widest) = (gaps[gaps.len() / 2], gaps[gaps.len() - 1]);
    assert!(
        median < every.mul_f64(1.5) && widest < every * 3,
        "beats {every:?} apart, but gaps were {gaps:?}"
    );
    svc.shutdown().await.unwrap();
}
