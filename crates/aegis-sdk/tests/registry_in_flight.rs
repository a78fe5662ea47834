//! Registry writes that meet another write of the same record still in
//! flight, on a 3-node cluster: the stream's leader refuses a
//! compare-and-set on a key while another write to it is being replicated
//! (10164), which a single server never answers. Two registrations under
//! one instance id (a service started again in place before the first
//! stopped, or a copy-pasted id) write one record, and their writes meet.
//! Such a refusal is a lost race, not a registry in trouble.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{
    Connection,
    contracts::{
        ServiceInstance,
        log::{LogKind, LogRecord},
    },
    registry::Registration,
};
use aegis_testkit::NatsCluster;
use common::connect_cluster;

/// How often the racing registrations write: every beat, the shortest
/// the options take, so that their writes meet within a few seconds.
const OFTEN: Duration = Duration::from_millis(10);

/// A registration of race-service/r1 on `conn` writing every [`OFTEN`],
/// keeping its lifecycle events in `events`.
async fn often(conn: &Connection, events: &Arc<Mutex<Vec<LogRecord>>>) -> Registration {
    let sink = events.clone();
    let record = ServiceInstance::new("race-service", "r1", "1.0.0", chrono::Utc::now());
    Registration::builder(conn, record)
        .heartbeat(OFTEN)
        .refresh(OFTEN)
        .on_event(Arc::new(move |r: LogRecord| sink.lock().unwrap().push(r)))
        .start()
        .await
        .expect("register race-service/r1")
}

/// Two processes under one id: each says so once (an ERROR and a
/// `duplicate_instance_id` event), and neither reports its heartbeat as
/// failing when its write only met the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_meeting_the_other_writers_is_no_heartbeat_failure() {
    let cluster = NatsCluster::start(3).unwrap();
    let mut urls = cluster.urls();
    let events: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
    let mut registrations = Vec::new();
    for _ in 0..2 {
        let conn = connect_cluster(urls.clone(), 3).await;
        registrations.push(often(&conn, &events).await);
        // The other one on another node first.
        urls.rotate_left(1);
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    let kinds = |kind: LogKind| {
        events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.kind == kind)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        !kinds(LogKind::DuplicateInstanceId).is_empty(),
        "the duplicate is reported"
    );
    // Only the refusals for a write in flight (the server's code 10164,
    // which the event's error names) are this test's: under load the two
    // writers also overwrite each other between a read and a write, a
    // refusal of another kind.
    let failed: Vec<_> = kinds(LogKind::HeartbeatFailed)
        .into_iter()
        .filter(|e| {
            e.fields
                .get("error")
                .and_then(|e| e.as_str())
                .is_some_and(|e| e.contains("error code 10164"))
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} heartbeat failures reported for a write in flight, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    // Their stops are the next test's.
    drop(registrations);
}

/// A service started again in place (a second registration under the same
/// id on the same connection) while the first still writes: the first
/// one's stop must not fail because the successor's write is in flight as
/// it deletes: sent again, its delete finds the record moved on and leaves
/// it to the successor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_meeting_the_successors_write_still_deregisters() {
    let cluster = NatsCluster::start(3).unwrap();
    let conn = connect_cluster(cluster.urls(), 3).await;
    let events: Arc<Mutex<Vec<LogRecord>>> = Arc::default();
    let successor = often(&conn, &events).await;
    for round in 0..100 {
        let before = often(&conn, &events).await;
        // A few writes of each, meeting.
        tokio::time::sleep(OFTEN * (3 + round % 4)).await;
        // Only a refusal for a write in flight (10164, which the error
        // names) is this test's: a successor writing this often also
        // overwrites the record between the stop's read and its delete.
        if let Err(e) = before.deregister().await {
            let e = aegis_sdk::startup::Causes(&e).to_string();
            assert!(
                !e.contains("error code 10164"),
                "round {round}: the stop failed: {e}"
            );
        }
    }
    successor.deregister().await.unwrap();
}
