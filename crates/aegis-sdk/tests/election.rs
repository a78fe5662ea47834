//! Sticky single-active elections against real nats-servers: one leader,
//! strictly growing epochs, takeover after an abort (the lease lapses; a
//! SIGKILLed leader is in `election_crash.rs`), fast resign hand-over,
//! self-fencing of a paused leader, independent groups, and a node restart in
//! a 3-node cluster.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::{
    AegisConfig, Connection,
    election::{Election, LeaseConfig, Role},
};
use aegis_testkit::NatsCluster;
use common::{connect, eventually, server};

async fn candidates(conn: &Connection, group: &str, n: usize) -> Vec<Election> {
    let mut v = Vec::new();
    for i in 0..n {
        v.push(
            Election::start(
                conn,
                "order-service",
                group,
                &format!("order-{i}"),
                LeaseConfig::default(),
            )
            .await
            .unwrap(),
        );
    }
    v
}

fn serving(elections: &[Election]) -> Vec<(usize, u64)> {
    elections
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.leadership().serving_epoch().map(|ep| (i, ep)))
        .collect()
}

async fn one_leader(elections: &[Election]) -> (usize, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = serving(elections);
        assert!(s.len() <= 1, "two leaders serving at once: {s:?}");
        if s.len() == 1 {
            return s[0];
        }
        assert!(Instant::now() < deadline, "no leader elected");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_one_leader_and_epochs_grow_across_failovers() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut elections = candidates(&conn, "default", 3).await;
    let (leader, mut epoch) = one_leader(&elections).await;
    for e in elections
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, e)| e)
    {
        assert!(matches!(e.role(), Role::Standby { .. }));
    }

    for round in 0..3 {
        let (leader, _) = one_leader(&elections).await;
        // An abort (drop): no resignation, the lease must lapse. A real
        // crash, a SIGKILLed process, is in election_crash.rs.
        let crashed_at = Instant::now();
        drop(elections.remove(leader));
        let (_, next) = one_leader(&elections).await;
        let took = crashed_at.elapsed();
        assert!(
            next > epoch,
            "round {round}: epoch {next} must exceed {epoch}"
        );
        assert!(took < Duration::from_secs(2), "failover took {took:?}");
        epoch = next;
        elections.push(
            Election::start(
                &conn,
                "order-service",
                "default",
                &format!("order-new-{round}"),
                LeaseConfig::default(),
            )
            .await
            .unwrap(),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_campaigns_produce_one_winner() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let starts = (0..6).map(|i| {
        let conn = conn.clone();
        async move {
            Election::start(
                &conn,
                "order-service",
                "race",
                &format!("r{i}"),
                LeaseConfig::default(),
            )
            .await
            .unwrap()
        }
    });
    let elections = futures::future::join_all(starts).await;
    one_leader(&elections).await;
    // Stays one for several leases.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        assert!(serving(&elections).len() <= 1);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(serving(&elections).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resign_hands_over_within_milliseconds() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut elections = candidates(&conn, "default", 3).await;
    let (leader, epoch) = one_leader(&elections).await;
    let started = Instant::now();
    elections.remove(leader).resign().await;
    let (_, next) = one_leader(&elections).await;
    let took = started.elapsed();
    assert!(next > epoch);
    assert!(
        took < Duration::from_millis(300),
        "hand-over took {took:?}, expected well under the lease"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_leader_stops_serving_before_a_standby_takes_over() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let elections = candidates(&conn, "default", 2).await;
    let (leader, epoch) = one_leader(&elections).await;
    elections[leader].pause_renewals(true);
    let standby = 1 - leader;
    // Watch every few ms that the two never serve together.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = serving(&elections);
        assert!(s.len() <= 1, "overlap: {s:?}");
        if s.iter().any(|(i, _)| *i == standby) {
            break;
        }
        assert!(Instant::now() < deadline, "standby never took over");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let new_epoch = elections[standby].leadership().serving_epoch().unwrap();
    assert!(new_epoch > epoch);
    assert_eq!(elections[leader].leadership().serving_epoch(), None);
    // Resumed, the old leader finds it lost and stays standby.
    elections[leader].pause_renewals(false);
    eventually(
        Duration::from_secs(5),
        "old leader knows it is standby",
        || {
            let r = elections[leader].role();
            async move { matches!(r, Role::Standby { .. }) }
        },
    )
    .await;
    assert_eq!(serving(&elections), vec![(standby, new_epoch)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_elect_independently() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut a = candidates(&conn, "accounts-a", 2).await;
    let b = candidates(&conn, "accounts-b", 2).await;
    let (la, ea) = one_leader(&a).await;
    let (lb, eb) = one_leader(&b).await;
    drop(a.remove(la));
    // Group a fails over to its other candidate; group b is untouched by
    // it: the same leader at the same epoch once a's new one serves.
    let (_, new_ea) = one_leader(&a).await;
    assert!(new_ea > ea, "group a's new term: {new_ea} after {ea}");
    assert_eq!(serving(&b), [(lb, eb)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn election_survives_a_node_restart_in_a_cluster() {
    let mut cluster = NatsCluster::start(3).unwrap();
    let mut config = AegisConfig::default();
    config.nats.servers = cluster.urls();
    config.nats.replicas = 3;
    let conn = Connection::connect(config).await.unwrap();
    let lease = LeaseConfig::with_lease(Duration::from_secs(2));
    let mut elections = Vec::new();
    for i in 0..3 {
        elections.push(
            Election::start(&conn, "order-service", "default", &format!("c{i}"), lease)
                .await
                .unwrap(),
        );
    }
    let (_, epoch) = one_leader(&elections).await;
    for node in 0..3 {
        cluster.kill_node(node);
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.restart_node(node).unwrap();
    }
    // After the turbulence there is again exactly one leader, never two.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = serving(&elections);
        assert!(s.len() <= 1, "overlap: {s:?}");
        if s.len() == 1 {
            assert!(s[0].1 >= epoch);
            break;
        }
        assert!(Instant::now() < deadline, "no leader after node restarts");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A renewal that commits after the leader stopped waiting for it (a slow
/// R3 fsync, a stream-leader change) leaves the leader with a stale
/// revision. Simulated exactly: the leader's own record is written again
/// behind its back, as the late commit would. The leader must re-read the
/// key, find itself at its epoch, and keep leading — not step down and make
/// everyone wait a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewal_that_committed_late_does_not_depose_the_leader() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let elections = candidates(&conn, "default", 2).await;
    let kv = conn
        .jetstream()
        .get_key_value(aegis_contracts::subjects::ELECTIONS_BUCKET)
        .await
        .unwrap();
    let (leader, epoch) = one_leader(&elections).await;
    let key = elections[leader].key().to_owned();
    // Only a renewal can commit late, and a renewal's record names its
    // epoch; the takeover's record (epoch 0, the epoch being its revision)
    // is written once, by a create or a compare-and-set that cannot commit
    // twice. So the simulation waits for the first renewal.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let entry = kv.entry(&key).await.unwrap().unwrap();
        let record: aegis_sdk::election::LeaderRecord =
            serde_json::from_slice(&entry.value).unwrap();
        if record.epoch == epoch {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the leader never renewed: {record:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut roles = elections[leader].roles();
    for _ in 0..3 {
        // The leader's latest record, committed once more.
        let entry = kv.entry(&key).await.unwrap().unwrap();
        kv.put(&key, entry.value).await.unwrap();
        // Two renewal rounds later it must still lead at the same epoch and
        // never have left (a step-down shows in the role channel).
        let renew = LeaseConfig::default().renew_interval;
        tokio::time::sleep(renew * 3).await;
        assert!(
            !roles.has_changed().unwrap(),
            "the leader's role changed to {:?} after a late commit",
            *roles.borrow_and_update()
        );
        assert_eq!(serving(&elections), vec![(leader, epoch)]);
    }
}

/// A takeover whose write was stored but not acknowledged (the reply lost,
/// or timed out) leaves the key naming the standby that sent it. That
/// standby must take it as its own — lead at once — and never defer to
/// itself: a Standby naming itself as leader renews nothing for a whole
/// lease, while callers route to it and it answers NOT_ACTIVE.
///
/// Simulated: the leader aborts (its record stays), and the test writes
/// the standby's takeover record (epoch 0, by compare-and-set on the
/// leader's revision) before the standby's own attempt, which waits out
/// a lease of 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_stored_unacknowledged_is_taken_as_won() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let config = LeaseConfig::with_lease(Duration::from_secs(2));
    let mut elections = Vec::new();
    for i in 0..2 {
        let id = format!("order-{i}");
        elections.push(
            Election::start(&conn, "order-service", "unacked", &id, config)
                .await
                .unwrap(),
        );
    }
    let kv = conn
        .jetstream()
        .get_key_value(aegis_contracts::subjects::ELECTIONS_BUCKET)
        .await
        .unwrap();
    let (leader, _) = one_leader(&elections).await;
    let key = elections[leader].key().to_owned();
    drop(elections.remove(leader));
    let standby = elections.remove(0);
    let me = format!("order-{}", 1 - leader);
    // Every role the standby takes from here on.
    let mut roles = standby.roles();
    let seen = tokio::spawn(async move {
        let mut seen = vec![roles.borrow_and_update().clone()];
        while roles.changed().await.is_ok() {
            let role = roles.borrow_and_update().clone();
            let leads = role.is_leader();
            seen.push(role);
            if leads {
                break;
            }
        }
        seen
    });
    let record = aegis_sdk::election::LeaderRecord {
        instance_id: me.clone(),
        epoch: 0,
        lease_ms: 2000,
        renewed_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    // Over the leader's current record: read again when a renewal came
    // between the read and the write (seen on a busy machine).
    loop {
        let entry = kv.entry(&key).await.unwrap().unwrap();
        let written = kv
            .update(
                &key,
                serde_json::to_vec(&record).unwrap().into(),
                entry.revision,
            )
            .await;
        match written {
            Ok(_) => break,
            Err(e) if e.kind() == async_nats::jetstream::kv::UpdateErrorKind::WrongLastRevision => {
            }
            Err(e) => panic!("{e}"),
        }
    }
    let written = Instant::now();
    let seen = tokio::time::timeout(Duration::from_secs(10), seen)
        .await
        .expect("the standby never led")
        .unwrap();
    let took = written.elapsed();
    assert!(
        !seen.contains(&Role::Standby {
            leader: Some(me.clone())
        }),
        "{me} deferred to itself: {seen:?}"
    );
    assert!(
        took < Duration::from_secs(1),
        "{me} led {took:?} after its takeover was stored (lease 2 s): {seen:?}"
    );
    assert!(standby.leadership().serving_epoch().is_some());
}

/// A record naming this instance that was in the key before it started
/// is not its own write: a process before it with the same id wrote it,
/// and may still serve until its lease lapses. The new candidate waits
/// that lease out like any standby, without ever naming itself as the
/// leader it defers to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_a_predecessor_with_the_same_id_is_waited_out_not_deferred_to() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let lease = Duration::from_secs(2);
    // Creates the bucket.
    let other = Election::start(
        &conn,
        "order-service",
        "other",
        "order-9",
        LeaseConfig::default(),
    )
    .await
    .unwrap();
    let kv = conn
        .jetstream()
        .get_key_value(aegis_contracts::subjects::ELECTIONS_BUCKET)
        .await
        .unwrap();
    let record = aegis_sdk::election::LeaderRecord {
        instance_id: "order-1".to_owned(),
        epoch: 7,
        lease_ms: 2000,
        renewed_at: "2026-01-01T00:00:00Z".to_owned(),
    };
    let key = aegis_contracts::subjects::election_key("order-service", "restarted");
    kv.create(&key, serde_json::to_vec(&record).unwrap().into())
        .await
        .unwrap();
    let written = Instant::now();
    let election = Election::start(
        &conn,
        "order-service",
        "restarted",
        "order-1",
        LeaseConfig::with_lease(lease),
    )
    .await
    .unwrap();
    let mut roles = election.roles();
    let mut seen = vec![roles.borrow_and_update().clone()];
    while !seen.last().is_some_and(Role::is_leader) {
        tokio::time::timeout(Duration::from_secs(10), roles.changed())
            .await
            .expect("never led")
            .unwrap();
        seen.push(roles.borrow_and_update().clone());
    }
    let took = written.elapsed();
    assert!(
        !seen.contains(&Role::Standby {
            leader: Some("order-1".to_owned())
        }),
        "order-1 deferred to itself: {seen:?}"
    );
    assert!(
        took >= lease,
        "took over a predecessor's key after {took:?}, within its lease"
    );
    drop(other);
}

/// Two live campaigns under one instance id (a copy-pasted id, or a
/// service started again in place before the old one stopped): the second
/// must wait the first out, never take the key while the first renews it.
/// A review of 0f12ffd found the second taking the first's next renewal
/// for its own unacknowledged write and the two leading at once, then
/// swapping the lead at every renewal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_campaign_under_the_same_id_is_never_taken_over() {
    let nats = server();
    let (a, b) = (connect(&nats.url()).await, connect(&nats.url()).await);
    let lease = Duration::from_secs(2);
    let first = Election::start(
        &a,
        "order-service",
        "twins",
        "order-1",
        LeaseConfig::with_lease(lease),
    )
    .await
    .unwrap();
    let mut roles = first.roles();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !roles.borrow_and_update().is_leader() {
            roles.changed().await.unwrap();
        }
    })
    .await
    .expect("the first leads");
    let epoch = first.leadership().serving_epoch();
    let second = Election::start(
        &b,
        "order-service",
        "twins",
        "order-1",
        LeaseConfig::with_lease(lease),
    )
    .await
    .unwrap();
    let (first_view, second_view) = (first.leadership(), second.leadership());
    let watched = Instant::now();
    while watched.elapsed() < lease * 3 {
        assert!(
            second_view.serving_epoch().is_none(),
            "the second campaign leads beside the first after {:?}",
            watched.elapsed()
        );
        assert_eq!(first_view.serving_epoch(), epoch, "the first lost its lead");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
