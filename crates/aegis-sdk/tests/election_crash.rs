//! Leaders that die without resigning, against a real nats-server: a
//! SIGKILLed child process, and an `Election` dropped (aborted) in this
//! process. Either way the election key keeps the dead leader's record and a
//! standby takes over only when the lease lapses — unlike `resign`, which
//! hands over within milliseconds (`election.rs`). A 2 s lease keeps the two
//! far apart on a busy machine.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    Connection,
    election::{Election, LeaderRecord, LeaseConfig},
};
use async_nats::jetstream::kv;
use common::{connect, eventually, follows, server};

const LEASE: Duration = Duration::from_secs(2);
/// A takeover sooner than this after the death was a hand-over, not a lapse
/// (the last renewal was at most a quarter lease before the death).
const LAPSE_AT_LEAST: Duration = Duration::from_millis(1000);
const KEY: &str = "sticky-active.order-service.default";

async fn candidate(conn: &Connection, id: &str) -> Election {
    Election::start(
        conn,
        "order-service",
        "default",
        id,
        LeaseConfig::with_lease(LEASE),
    )
    .await
    .unwrap()
}

async fn elections_kv(url: &str) -> kv::Store {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    js.get_key_value("service_elections").await.unwrap()
}

/// Who the election key names now, if anyone.
async fn holder(store: &kv::Store) -> Option<LeaderRecord> {
    let entry = store.entry(KEY).await.unwrap()?;
    (entry.operation == kv::Operation::Put).then(|| serde_json::from_slice(&entry.value).unwrap())
}

/// Waits until `election` serves and returns when that happened.
async fn leads(election: &Election, within: Duration) -> Instant {
    let deadline = Instant::now() + within;
    loop {
        if election.leadership().serving_epoch().is_some() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "never took over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_election_stops_serving_and_the_lease_lapses() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let leader = candidate(&conn, "order-1").await;
    leads(&leader, Duration::from_secs(10)).await;
    let standby = candidate(&conn, "order-2").await;
    let leadership = leader.leadership();
    let store = elections_kv(&nats.url()).await;

    let dropped = Instant::now();
    drop(leader);
    assert_eq!(leadership.serving_epoch(), None, "stopped serving at once");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        holder(&store).await.map(|r| r.instance_id).as_deref(),
        Some("order-1"),
        "the key was given up: a resignation, not an abort"
    );
    let took = leads(&standby, Duration::from_secs(10)).await - dropped;
    eprintln!("takeover {took:?} after the drop (lease {LEASE:?})");
    assert!(
        took >= LAPSE_AT_LEAST,
        "took over after {took:?}: a hand-over"
    );
    standby.resign().await;
}

const CHILD_URL: &str = "AEGIS_TEST_ELECTION_CHILD_URL";

/// This test binary again, running only the election child.
struct Child(std::process::Child);

impl Child {
    fn spawn(url: &str) -> Child {
        Child(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "election_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_URL, url)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn the child"),
        )
    }

    /// SIGKILL: no resignation, no goodbye.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_leader_is_replaced_when_its_lease_lapses() {
    let nats = server();
    let mut child = Child::spawn(&nats.url());
    let conn = connect(&nats.url()).await;
    // The child leads first (its election creates the bucket).
    let js = async_nats::jetstream::new(conn.client().clone());
    eventually(Duration::from_secs(30), "the child takes the key", || {
        let js = js.clone();
        async move {
            let Ok(store) = js.get_key_value("service_elections").await else {
                return false;
            };
            holder(&store)
                .await
                .is_some_and(|r| r.instance_id == "order-child")
        }
    })
    .await;
    let standby = candidate(&conn, "order-parent").await;
    follows(&standby, "order-child").await;
    let store = elections_kv(&nats.url()).await;
    let child_epoch = store.entry(KEY).await.unwrap().unwrap().revision;

    let killed = Instant::now();
    child.kill();
    let took = leads(&standby, Duration::from_secs(10)).await - killed;
    eprintln!("takeover {took:?} after SIGKILL (lease {LEASE:?})");
    assert!(took >= LAPSE_AT_LEAST, "took over after {took:?}");
    assert!(standby.leadership().serving_epoch().unwrap() > child_epoch);
    standby.resign().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of a_sigkilled_leader_is_replaced_when_its_lease_lapses"]
async fn election_child() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let conn = connect(&url).await;
    let _election = candidate(&conn, "order-child").await;
    std::future::pending::<()>().await;
}

/// The standby's watch of the election key loses its consumer (what the
/// death of the NATS node it lives on does to it) and the leader renews
/// once more before it dies: the standby still takes over when the lease
/// lapses, not only once a watch delivers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_watch_lost_its_consumer_takes_over_when_the_lease_lapses() {
    use futures::StreamExt;
    let nats = server();
    let conn = connect(&nats.url()).await;
    let leader = candidate(&conn, "order-1").await;
    leads(&leader, Duration::from_secs(10)).await;
    let standby = candidate(&conn, "order-2").await;
    follows(&standby, "order-1").await;
    let js = async_nats::jetstream::new(conn.client().clone());
    let stream = js.get_stream("KV_service_elections").await.unwrap();
    let consumers = || async {
        stream
            .consumer_names()
            .map(|name| name.unwrap())
            .collect::<Vec<_>>()
            .await
    };
    eventually(Duration::from_secs(10), "the standby's watch", || async {
        !consumers().await.is_empty()
    })
    .await;
    for name in consumers().await {
        // One a watch left behind may expire (10 s idle) meanwhile.
        if let Err(e) = stream.delete_consumer(&name).await {
            assert!(
                matches!(
                    e.kind(),
                    async_nats::jetstream::stream::ConsumerErrorKind::JetStream(js)
                        if js.error_code() == async_nats::jetstream::ErrorCode::CONSUMER_NOT_FOUND
                ),
                "delete {name}: {e}"
            );
        }
    }
    // A renewal the standby's watch can no longer show it.
    let store = elections_kv(&nats.url()).await;
    let before = store.entry(KEY).await.unwrap().unwrap().revision;
    eventually(Duration::from_secs(5), "order-1 renews", || {
        let store = store.clone();
        async move { store.entry(KEY).await.unwrap().unwrap().revision > before }
    })
    .await;

    let dropped = Instant::now();
    drop(leader);
    let took = leads(&standby, Duration::from_secs(30)).await - dropped;
    eprintln!("takeover {took:?} after the drop (lease {LEASE:?}), the watch's consumer gone");
    assert!(
        took < LEASE + Duration::from_millis(1500),
        "took over after {took:?}"
    );
    standby.resign().await;
}
