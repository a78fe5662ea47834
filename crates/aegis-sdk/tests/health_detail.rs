//! A health check that says why it fails, against a real nats-server: the
//! registry record carries what it said (metadata `statusDetail`, cut to
//! its bound) while it fails, not while an operator's verdict holds, and
//! drops it once the check passes; a text that changes on every check is
//! not written on every beat.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    contracts::{
        InstanceStatus, ServiceInstance,
        control::{METADATA_STATUS_DETAIL, METADATA_STATUS_REASON, STATUS_DETAIL_MAX_CHARS},
    },
    registry::RegistryReader,
    rpc::WireError,
};
use common::{connect, eventually, server};
use futures::StreamExt;
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(10);

fn detail(record: &ServiceInstance) -> Option<&str> {
    record
        .metadata
        .get(METADATA_STATUS_DETAIL)
        .and_then(Value::as_str)
}

fn reason(record: &ServiceInstance) -> Option<&str> {
    record
        .metadata
        .get(METADATA_STATUS_REASON)
        .and_then(Value::as_str)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_says_why_the_check_fails_and_drops_it_when_it_passes() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let watcher = connect(&nats.url()).await;
    let reader = RegistryReader::start(&watcher).await.unwrap();
    let verdict: Arc<Mutex<Result<(), String>>> = Arc::new(Mutex::new(Ok(())));
    let check = verdict.clone();
    let svc = conn
        .service("detail-service", "1.0.0")
        .instance_id("d-1")
        .heartbeat(Duration::from_millis(100))
        .refresh(Duration::from_millis(600))
        .ttl(Duration::from_secs(3))
        .health_check_with_reason(move || {
            let said = check.lock().unwrap().clone();
            async move { said }
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    let record = || reader.get("detail-service", "d-1");

    eventually(PATIENCE, "the record, healthy", || async {
        record().is_some_and(|r| r.status == InstanceStatus::Active && detail(&r).is_none())
    })
    .await;

    // Failing: UNHEALTHY for the check, and why.
    let full = "the store is full: 1.0 MiB of 1.0 MiB used";
    *verdict.lock().unwrap() = Err(full.to_owned());
    eventually(PATIENCE, "the record says why it fails", || async {
        record().is_some_and(|r| {
            r.status == InstanceStatus::Unhealthy
                && reason(&r) == Some("health_check")
                && detail(&r) == Some(full)
        })
    })
    .await;
    let health = svc.registration().unwrap().health();
    assert_eq!(health.detail.as_deref(), Some(full));

    // A long text is cut to its bound, ending with an ellipsis.
    *verdict.lock().unwrap() = Err(format!("{} and why", "é".repeat(300)));
    eventually(PATIENCE, "a long reason is cut", || async {
        record().is_some_and(|r| {
            detail(&r).is_some_and(|d| {
                d.chars().count() == STATUS_DETAIL_MAX_CHARS
                    && d.ends_with('…')
                    && d.starts_with("éé")
            })
        })
    })
    .await;

    // An operator's verdict takes over: its reason is not the check's.
    let reg = svc.registration().unwrap();
    reg.force_unhealthy(None).await.unwrap();
    eventually(
        PATIENCE,
        "the operator's verdict says no detail",
        || async {
            record().is_some_and(|r| reason(&r) == Some("operator") && detail(&r).is_none())
        },
    )
    .await;
    reg.lift_unhealthy().await.unwrap();
    eventually(PATIENCE, "the check's reason again", || async {
        record().is_some_and(|r| reason(&r) == Some("health_check") && detail(&r).is_some())
    })
    .await;

    // Passing: healthy, and the text is gone.
    *verdict.lock().unwrap() = Ok(());
    eventually(PATIENCE, "healthy again, and no detail", || async {
        record().is_some_and(|r| {
            r.status == InstanceStatus::Active && reason(&r).is_none() && detail(&r).is_none()
        })
    })
    .await;
    assert_eq!(svc.registration().unwrap().health().detail, None);

    svc.shutdown().await.unwrap();
}

/// A check that names a count says something new on every beat: the text
/// is written with the refresh, not with every beat, which every watcher
/// of the service would receive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reason_that_changes_every_check_is_written_with_the_refresh() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let watcher = connect(&nats.url()).await;
    let reader = RegistryReader::start(&watcher).await.unwrap();
    let checks = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = checks.clone();
    let svc = conn
        .service("counting-service", "1.0.0")
        .instance_id("c-1")
        .heartbeat(Duration::from_millis(100))
        .refresh(Duration::from_millis(600))
        .ttl(Duration::from_secs(3))
        .health_check_with_reason(move || {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move { Err(format!("{n} bytes too many")) }
        })
        .handler("echo", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    eventually(PATIENCE, "the record says why it fails", || async {
        reader
            .get("counting-service", "c-1")
            .is_some_and(|r| detail(&r).is_some_and(|d| d.ends_with("bytes too many")))
    })
    .await;

    // 2.4 s of a failing check: 24 beats with 24 texts, 4 refreshes.
    let mut changes = Box::pin(reader.changes());
    let window = Duration::from_millis(2400);
    let started = Instant::now();
    let mut texts = Vec::new();
    while let Some(left) = window.checked_sub(started.elapsed()) {
        tokio::select! {
            change = changes.next() => {
                if let aegis_sdk::registry::RegistryChange::Upserted(r) =
                    change.expect("change stream")
                    && r.instance_id == "c-1"
                {
                    texts.push(detail(&r).map(str::to_owned));
                }
            }
            () = tokio::time::sleep(left) => break,
        }
    }
    assert!(
        (2..=6).contains(&texts.len()),
        "{} record writes in 2.4 s: {texts:?}",
        texts.len()
    );
    // Each write carries the newest text.
    texts.dedup();
    assert!(texts.len() >= 2, "the text moved on: {texts:?}");
    assert!(texts.iter().all(Option::is_some), "{texts:?}");

    svc.shutdown().await.unwrap();
}
