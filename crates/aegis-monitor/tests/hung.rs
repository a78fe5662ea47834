//! A hung process (SIGSTOP) keeps its NATS connection open while its beats
//! stop and its registry record expires. With the system account, the
//! monitor can see the connection is still held, so the instance stays
//! listed, UNHEALTHY `unresponsive_expired`, for as long as the server
//! holds it: not dropped while it sits on the bus (and may come back).
//! Once the connection closes it is shown `disconnected`, then removed, as
//! a process that died. Without the system account nothing tells a hung
//! process from a dead one after the TTL: it is removed, as before.
//!
//! Instances run as child processes with a 250 ms heartbeat and a 2 s TTL,
//! frozen with `aegis_testkit::process::freeze`.

mod common;

use std::time::{Duration, Instant};

use common::{ChildInstance, Harness, VIEWER, eventually};
use serde_json::Value;

const CHILD_ENV: &str = "AEGIS_HUNG_CHILD";
const SERVICE: &str = "hung-service";

/// Run as a child process (a no-op in a normal run): starts one instance
/// named by `AEGIS_HUNG_CHILD=url,id` with a 250 ms heartbeat and a 2 s
/// TTL, and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_instance() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (url, id) = spec.split_once(',').expect("url,id");
    let conn = common::connect(url).await;
    let _service = conn
        .service(SERVICE, "1.0.0")
        .instance_id(id)
        .heartbeat(Duration::from_millis(250))
        .ttl(Duration::from_secs(2))
        .handler(
            "ping",
            |_: Value| async move { Ok(serde_json::json!("pong")) },
        )
        .start()
        .await
        .expect("the child instance starts");
    tokio::time::sleep(Duration::from_secs(300)).await;
}

/// A child process running instance `id`; killed on drop.
fn spawn_child(url: &str, id: &str) -> ChildInstance {
    ChildInstance::spawn(CHILD_ENV, &format!("{url},{id}"))
}

/// `id` as shown, `None` when the monitor answers 404. Any other answer
/// fails the test with what it was: under load a failed read is not the
/// same finding as an instance dropped from the views.
async fn shown(h: &Harness, id: &str) -> Option<Value> {
    let reply = h
        .get(&format!("/api/instances/{SERVICE}/{id}"), Some(VIEWER))
        .await;
    match reply.status.as_u16() {
        200 => Some(reply.body),
        404 => None,
        status => panic!("reading {id} answered {status}: {:#}", reply.body),
    }
}

/// `(status, statusReason)` as shown, `None` when not listed.
async fn status_of(h: &Harness, id: &str) -> Option<(String, Value)> {
    shown(h, id).await.map(|b| {
        (
            b["status"].as_str().unwrap_or_default().to_owned(),
            b["statusReason"].clone(),
        )
    })
}

/// Whether the fleet list (`/api/instances`) names `id`.
async fn listed(h: &Harness, id: &str) -> bool {
    let body = h.get("/api/instances", Some(VIEWER)).await.body;
    body.as_array()
        .or_else(|| body["instances"].as_array())
        .is_some_and(|all| all.iter().any(|i| i["instanceId"] == id))
}

/// Waits until `id` is shown with `reason`, asserting at every poll that it
/// stays listed (and UNHEALTHY once it is down).
async fn stays_listed_until(h: &Harness, id: &str, reason: &str, within: Duration, since: Instant) {
    let deadline = Instant::now() + within;
    loop {
        let Some((status, shown_reason)) = status_of(h, id).await else {
            panic!(
                "{id} dropped from the views {:?} after it was frozen, while its process \
                 lives and NATS holds its connection",
                since.elapsed()
            );
        };
        if shown_reason == reason {
            assert_eq!(status, "UNHEALTHY", "{id} shown {reason}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not shown {reason} within {within:?}: {status} {shown_reason}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_instance_stays_shown_while_nats_holds_its_connection() {
    let h = Harness::start_with_system_account().await;
    let url = h.nats.url();
    let mut child = spawn_child(&url, "hung-1");
    let _other = spawn_child(&url, "live-1");
    eventually(Duration::from_secs(30), "both listed ACTIVE", || async {
        status_of(&h, "hung-1")
            .await
            .is_some_and(|(s, _)| s == "ACTIVE")
            && status_of(&h, "live-1")
                .await
                .is_some_and(|(s, _)| s == "ACTIVE")
    })
    .await;

    aegis_testkit::process::freeze(child.pid());
    let frozen = Instant::now();
    stays_listed_until(&h, "hung-1", "unresponsive", Duration::from_secs(8), frozen).await;
    eprintln!("unresponsive after {:?}", frozen.elapsed());
    // The record expires 2 s after its last write (and the registry view's
    // grace): from then on only the open connection says it is there.
    stays_listed_until(
        &h,
        "hung-1",
        "unresponsive_expired",
        Duration::from_secs(15),
        frozen,
    )
    .await;
    let expired = frozen.elapsed();
    eprintln!("unresponsive_expired after {expired:?}");
    // And it stays, well past the registry's and the monitor's holds.
    while frozen.elapsed() < expired + Duration::from_secs(12) {
        let shown = status_of(&h, "hung-1").await;
        assert_eq!(
            shown,
            Some(("UNHEALTHY".to_owned(), "unresponsive_expired".into())),
            "{:?} after it was frozen",
            frozen.elapsed()
        );
        assert!(listed(&h, "hung-1").await, "not in /api/instances");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let summary = h
        .get("/api/instances/health/summary", Some(VIEWER))
        .await
        .body;
    assert_eq!(
        (&summary["total"], &summary["unhealthy"]),
        (&2.into(), &1.into()),
        "{summary:#}"
    );

    // Resumed, it writes its record again and is shown live.
    aegis_testkit::process::thaw(child.pid());
    let thawed = Instant::now();
    eventually(Duration::from_secs(5), "live again", || async {
        status_of(&h, "hung-1").await == Some(("ACTIVE".to_owned(), Value::Null))
    })
    .await;
    eprintln!("live again {:?} after it was thawed", thawed.elapsed());

    // Frozen again and then killed: the connection closes, so it is shown
    // down as a process that died, and then leaves.
    aegis_testkit::process::freeze(child.pid());
    let frozen = Instant::now();
    stays_listed_until(
        &h,
        "hung-1",
        "unresponsive_expired",
        Duration::from_secs(15),
        frozen,
    )
    .await;
    child.kill();
    let killed = Instant::now();
    stays_listed_until(&h, "hung-1", "disconnected", Duration::from_secs(3), killed).await;
    eprintln!("disconnected {:?} after the kill", killed.elapsed());
    eventually(Duration::from_secs(20), "gone after the kill", || async {
        status_of(&h, "hung-1").await.is_none()
    })
    .await;
    eprintln!("gone {:?} after the kill", killed.elapsed());
    assert_eq!(
        status_of(&h, "live-1").await,
        Some(("ACTIVE".to_owned(), Value::Null))
    );
}

/// Without the system account the monitor cannot see connections: a hung
/// instance leaves with its record, as a dead one does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_system_account_access_a_hung_instance_leaves_with_its_record() {
    let h = Harness::start().await;
    let child = spawn_child(&h.nats.url(), "hung-2");
    eventually(Duration::from_secs(30), "listed ACTIVE", || async {
        status_of(&h, "hung-2")
            .await
            .is_some_and(|(s, _)| s == "ACTIVE")
    })
    .await;
    aegis_testkit::process::freeze(child.pid());
    let frozen = Instant::now();
    eventually(Duration::from_secs(15), "gone with its record", || async {
        status_of(&h, "hung-2").await.is_none()
    })
    .await;
    eprintln!("gone {:?} after it was frozen", frozen.elapsed());
    aegis_testkit::process::thaw(child.pid());
}
