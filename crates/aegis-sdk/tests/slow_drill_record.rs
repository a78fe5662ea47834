//! An operator's `slow` drill (`aegis chaos slow`) shows in the instance's
//! registry record, as an operator's UNHEALTHY verdict does: metadata
//! `drillDelayMs` (and `drillDelaySince`) while the delay holds, written
//! at once, and gone again once the delay is lifted (`delay_ms` 0). So
//! the monitor, the UI and `aegis status` can say the instance is slowed
//! on purpose, and an operator does not chase a latency problem the drill
//! made. The drill changes nothing else in the record: the instance stays
//! ACTIVE.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    contracts::{
        InstanceStatus, ServiceInstance,
        control::{ControlResponse, ControlState},
        subjects::instance_control_subject,
    },
    registry::RegistrationOptions,
    rpc::WireError,
};
use aegis_testkit::wait::until_some;
use common::{connect, server};
use serde_json::{Value, json};

const SERVICE: &str = "risk-service";
const INSTANCE: &str = "risk-1";

async fn control_ok(conn: &Connection, req: Value) -> ControlState {
    let reply = conn
        .client()
        .request(
            instance_control_subject(SERVICE, INSTANCE),
            serde_json::to_vec(&req).unwrap().into(),
        )
        .await
        .expect("the instance answers its control subject");
    match serde_json::from_slice(&reply.payload).expect("a ControlResponse") {
        ControlResponse::Ok(state) => state,
        ControlResponse::Error(e) => panic!("control refused: {e}"),
    }
}

/// How soon a drill's change is in the record to count as written at
/// once: well before the record's next refresh (4 s by default), with
/// room for a loaded machine's write and read (a heartbeat and a round
/// trip, some 300 ms, when it is quiet).
const AT_ONCE: Duration = Duration::from_secs(2);

/// The instance's record once `cond` holds, read from the registry
/// itself, within `within`.
async fn record_when(
    conn: &Connection,
    within: Duration,
    what: &str,
    cond: impl Fn(&ServiceInstance) -> bool,
) -> ServiceInstance {
    let store = conn
        .jetstream()
        .get_key_value(aegis_sdk::contracts::subjects::REGISTRY_BUCKET)
        .await
        .expect("the registry bucket");
    let key = aegis_sdk::contracts::subjects::registry_key(SERVICE, INSTANCE);
    until_some(within, what, || async {
        let bytes = store.get(&key).await.ok()??;
        let record: ServiceInstance = serde_json::from_slice(&bytes).ok()?;
        cond(&record).then_some(record)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drill_is_in_the_record_until_lifted() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let heartbeat = Duration::from_millis(200);
    let _svc = conn
        .service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .registration(RegistrationOptions {
            heartbeat,
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .handler("check", |_: Value| async {
            Ok::<_, WireError>(json!(true))
        })
        .start()
        .await
        .unwrap();
    let before = record_when(&conn, Duration::from_secs(3), "the record", |_| true).await;
    assert!(!before.metadata.contains_key("drillDelayMs"), "{before:?}");

    let state = control_ok(&conn, json!({"op": "slow", "delay_ms": 500})).await;
    assert_eq!(state.delay_ms, 500);
    // Written at once, not at the next refresh (4 s by default).
    let slowed = record_when(&conn, AT_ONCE, "the record saying drillDelayMs 500", |r| {
        r.metadata.get("drillDelayMs") == Some(&json!(500))
    })
    .await;
    assert_eq!(
        slowed.status,
        InstanceStatus::Active,
        "a slowed instance is still ACTIVE"
    );
    assert!(
        !slowed.metadata.contains_key("statusReason"),
        "slowed is not unhealthy: {slowed:?}"
    );
    let since = slowed
        .metadata
        .get("drillDelaySince")
        .and_then(Value::as_str)
        .expect("drillDelaySince while slowed");
    let since = chrono::DateTime::parse_from_rfc3339(since).expect("RFC 3339");
    assert!((chrono::Utc::now() - since.to_utc()).num_seconds().abs() < 5);

    // A new delay is written too, and keeps its start.
    control_ok(&conn, json!({"op": "slow", "delay_ms": 750})).await;
    let changed = record_when(&conn, AT_ONCE, "the record saying drillDelayMs 750", |r| {
        r.metadata.get("drillDelayMs") == Some(&json!(750))
    })
    .await;
    assert_eq!(
        changed.metadata.get("drillDelaySince"),
        slowed.metadata.get("drillDelaySince"),
        "the drill goes on: same start"
    );

    // The heartbeat keeps it in the record.
    tokio::time::sleep(heartbeat * 2).await;
    let kept = record_when(&conn, AT_ONCE, "the record", |_| true).await;
    assert_eq!(kept.metadata.get("drillDelayMs"), Some(&json!(750)));

    let state = control_ok(&conn, json!({"op": "slow", "delay_ms": 0})).await;
    assert_eq!(state.delay_ms, 0);
    let lifted = record_when(&conn, AT_ONCE, "the record without drillDelayMs", |r| {
        !r.metadata.contains_key("drillDelayMs")
    })
    .await;
    assert!(
        !lifted.metadata.contains_key("drillDelaySince"),
        "{lifted:?}"
    );
    assert_eq!(lifted.status, InstanceStatus::Active);
}

/// The drill is answered at once, its record written after the reply: with
/// the registry's stream out of quorum (two of three nodes killed) a
/// record write waits out its timeout (the heartbeat, 3 s here), and the
/// operator's tool, which waits 3 s for an answer, must not wait for it.
/// The delay holds from the answer on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_drill_is_answered_before_its_record_is_written() {
    let mut cluster = aegis_testkit::NatsCluster::start(3).unwrap();
    // The service and the operator both on node 0, which survives.
    let conn = common::connect_cluster(vec![cluster.node(0).url()], 3).await;
    let _svc = conn
        .service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .registration(RegistrationOptions {
            heartbeat: Duration::from_secs(3),
            ttl: Duration::from_secs(30),
            ..Default::default()
        })
        .handler("check", |_: Value| async {
            Ok::<_, WireError>(json!(true))
        })
        .start()
        .await
        .unwrap();
    record_when(&conn, Duration::from_secs(5), "the record", |_| true).await;

    // Node 0 leads the registry's stream, so once the others die a write
    // reaches a leader that cannot commit it and goes unanswered (one with
    // no leader at all would be refused at once).
    let stream = format!("KV_{}", aegis_sdk::contracts::subjects::REGISTRY_BUCKET);
    let node0 = cluster.node(0).server_name().to_owned();
    until_some(
        Duration::from_secs(30),
        "node 0 leading the registry",
        || {
            let (conn, stream, node0) = (conn.clone(), stream.clone(), node0.clone());
            async move {
                let leader = conn
                    .jetstream()
                    .get_stream(&stream)
                    .await
                    .ok()?
                    .info()
                    .await
                    .ok()?
                    .cluster
                    .clone()?
                    .leader?;
                if leader == node0 {
                    return Some(());
                }
                let _ = conn
                    .client()
                    .request(
                        format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                        "".into(),
                    )
                    .await;
                tokio::time::sleep(Duration::from_millis(300)).await;
                None
            }
        },
    )
    .await;

    cluster.kill_node(1);
    cluster.kill_node(2);
    let asked = std::time::Instant::now();
    let state = control_ok(&conn, json!({"op": "slow", "delay_ms": 500})).await;
    let took = asked.elapsed();
    assert_eq!(state.delay_ms, 500);
    assert!(
        took < Duration::from_secs(1),
        "answered after {took:?}: the reply waited for the record's write"
    );
}
