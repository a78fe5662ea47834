//! The views tell the truth under faults: instances run as child processes
//! (so a SIGKILL is real), the API is polled every 20 ms, and every poll
//! must show at most one ACTIVE instance per sticky group — the holder of
//! the election key — while a SIGKILLed instance shows as down within a
//! second (from the server's disconnect advisory, not the registry TTL).

mod common;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aegis_sdk::rpc::Service;
use common::{ChildInstance, Harness, VIEWER, eventually};
use serde_json::Value;

const CHILD_ENV: &str = "AEGIS_TRUTH_CHILD";

/// Run as a child process (a no-op in a normal run): starts one instance
/// named by `AEGIS_TRUTH_CHILD=url,service,id,group` (group `-` for none)
/// and waits to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_instance() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let parts: Vec<&str> = spec.split(',').collect();
    let (url, service, id, group) = (parts[0], parts[1], parts[2], parts[3]);
    let conn = common::connect(url).await;
    let group = (group != "-").then_some(group);
    let _service: Service = common::ping_service(&conn, service, id, group).await;
    tokio::time::sleep(Duration::from_secs(120)).await;
}

/// A child process running instance `id` of `service`, in sticky `group`
/// if given; killed on drop.
fn spawn_child(url: &str, service: &str, id: &str, group: Option<&str>) -> ChildInstance {
    ChildInstance::spawn(
        CHILD_ENV,
        &format!("{url},{service},{id},{}", group.unwrap_or("-")),
    )
}

async fn instances(h: &Harness, service: &str) -> Vec<Value> {
    h.get(&format!("/api/instances/{service}"), Some(VIEWER))
        .await
        .body
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn active_ids(list: &[Value]) -> Vec<String> {
    list.iter()
        .filter(|i| i["status"] == "ACTIVE")
        .map(|i| i["instanceId"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Child processes running `ids` of `service` in one sticky group, once
/// the monitor lists them all with one leader.
async fn sticky_group(
    h: &Harness,
    url: &str,
    service: &str,
    ids: &[&str],
) -> HashMap<String, ChildInstance> {
    let children = ids
        .iter()
        .map(|id| {
            (
                (*id).to_owned(),
                spawn_child(url, service, id, Some("default")),
            )
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        &format!("{} instances, one leader", ids.len()),
        || async {
            let list = instances(h, service).await;
            list.len() == ids.len() && active_ids(&list).len() == 1
        },
    )
    .await;
    children
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_sigkill_never_shows_two_active_and_the_dead_leader_is_down_at_once() {
    let h = Harness::start_with_system_account().await;
    let service = "truth-service";
    let url = h.nats.url();
    let mut children = sticky_group(&h, &url, service, &["t1", "t2", "t3"]).await;

    for round in 0..2 {
        let list = instances(&h, service).await;
        let leader = active_ids(&list).remove(0);
        let epoch = list
            .iter()
            .find(|i| i["instanceId"] == leader.as_str())
            .and_then(|i| i["epoch"].as_u64())
            .expect("the leader shows its epoch");
        children.get_mut(&leader).unwrap().kill();
        let killed = Instant::now();
        let mut down_after = None;
        let mut new_leader_after = None;
        let mut polls = 0;
        // Poll every 20 ms for 4 s: past the takeover and past the dead
        // leader's TTL (3 s), when its record still claims ACTIVE.
        while killed.elapsed() < Duration::from_secs(4) {
            let list = instances(&h, service).await;
            polls += 1;
            let active = active_ids(&list);
            assert!(
                active.len() <= 1,
                "round {round}: two ACTIVE at {:?}: {list:#?}",
                killed.elapsed()
            );
            if let Some(dead) = list.iter().find(|i| i["instanceId"] == leader.as_str()) {
                if down_after.is_some() {
                    assert_ne!(
                        dead["status"], "ACTIVE",
                        "the dead leader is never shown ACTIVE again once seen down"
                    );
                }
                if down_after.is_none() && dead["statusReason"] == "disconnected" {
                    assert_eq!(dead["status"], "UNHEALTHY");
                    down_after = Some(killed.elapsed());
                }
            } else if down_after.is_none() {
                down_after = Some(killed.elapsed());
            }
            if new_leader_after.is_none()
                && let Some(new) = active.first().filter(|id| **id != leader)
            {
                let shown = list
                    .iter()
                    .find(|i| i["instanceId"] == new.as_str())
                    .unwrap();
                assert!(shown["epoch"].as_u64().unwrap() > epoch, "{shown}");
                new_leader_after = Some(killed.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let down_after = down_after.expect("the dead leader was shown down");
        let new_leader_after = new_leader_after.expect("a new leader was shown");
        eprintln!(
            "round {round}: leader {leader} shown down after {down_after:?}, new leader after {new_leader_after:?} ({polls} polls, never two ACTIVE)"
        );
        assert!(down_after < Duration::from_secs(1), "{down_after:?}");
        assert!(
            new_leader_after < Duration::from_secs(2),
            "{new_leader_after:?}"
        );
        // Back to three for the next round.
        children.insert(
            leader.clone(),
            spawn_child(&url, service, &leader, Some("default")),
        );
        eventually(Duration::from_secs(30), "three instances again", || async {
            let list = instances(&h, service).await;
            list.len() == 3
                && list.iter().all(|i| i["statusReason"].is_null())
                && active_ids(&list).len() == 1
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_non_leader_is_down_within_a_second() {
    let h = Harness::start_with_system_account().await;
    let url = h.nats.url();
    let mut child = spawn_child(&url, "plain-service", "p1", None);
    let _other = spawn_child(&url, "plain-service", "p2", None);
    eventually(Duration::from_secs(30), "two instances", || async {
        instances(&h, "plain-service").await.len() == 2
    })
    .await;
    child.kill();
    let killed = Instant::now();
    let path = "/api/instances/plain-service/p1";
    let shown = loop {
        let r = h.get(path, Some(VIEWER)).await;
        if r.body["statusReason"] == "disconnected" {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "not shown down before its TTL: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    eprintln!("SIGKILLed instance shown down after {shown:?}");
    assert!(shown < Duration::from_secs(1), "{shown:?}");
    let r = h.get(path, Some(VIEWER)).await;
    assert_eq!(r.body["status"], "UNHEALTHY");
    assert_eq!(r.body["reportedStatus"], "ACTIVE");
    assert!(r.body["statusSince"].is_string());
    // The other one is untouched, and the summary counts the dead one as
    // unhealthy until its record expires.
    let other = h.get("/api/instances/plain-service/p2", Some(VIEWER)).await;
    assert_eq!(other.body["status"], "ACTIVE");
    assert!(other.body["statusReason"].is_null());
    let summary = h.get("/api/instances/health/summary", Some(VIEWER)).await;
    assert_eq!(summary.body["unhealthy"], 1, "{}", summary.body);
    eventually(
        Duration::from_secs(25),
        "the record expires (15 s TTL)",
        || async { h.get(path, Some(VIEWER)).await.status == 404 },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_system_account_access_the_leader_is_still_the_key_holder() {
    // No advisories: the dead leader stays listed until its TTL, but never
    // as ACTIVE once a standby took the key.
    let h = Harness::start().await;
    let service = "truth-service";
    let url = h.nats.url();
    let mut a = spawn_child(&url, service, "a", Some("default"));
    let mut b = spawn_child(&url, service, "b", Some("default"));
    // The leader's own record must say ACTIVE before it dies: the monitor
    // shows the key holder ACTIVE from the election key at once, and a
    // leader killed before its record caught up leaves a STANDBY record,
    // which is shown as such until its beats are missed.
    eventually(
        Duration::from_secs(30),
        "two instances, one leader whose record says so",
        || async {
            let list = instances(&h, service).await;
            list.len() == 2
                && active_ids(&list).len() == 1
                && list.iter().any(|i| i["reportedStatus"] == "ACTIVE")
        },
    )
    .await;
    let list = instances(&h, service).await;
    let leader = list
        .iter()
        .find(|i| i["status"] == "ACTIVE" && i["reportedStatus"] == "ACTIVE")
        .and_then(|i| i["instanceId"].as_str())
        .expect("the leader's record still says ACTIVE")
        .to_owned();
    if leader == "a" {
        a.kill()
    } else {
        b.kill()
    }
    // Once the standby is shown ACTIVE, the dead leader's record (which
    // still says ACTIVE) is shown UNHEALTHY: `deposed` by the key, or
    // `unresponsive` once three liveness beats were missed, whichever the
    // election's speed on this machine lets come first.
    let killed = Instant::now();
    let mut shown = None;
    while killed.elapsed() < Duration::from_secs(10) {
        let list = instances(&h, service).await;
        let active = active_ids(&list);
        assert!(active.len() <= 1, "two ACTIVE: {list:#?}");
        if active.first().is_some_and(|id| *id != leader)
            && let Some(dead) = list.iter().find(|i| i["instanceId"] == leader.as_str())
        {
            assert_eq!(dead["status"], "UNHEALTHY", "{dead:#}");
            assert_eq!(dead["reportedStatus"], "ACTIVE", "{dead:#}");
            let reason = dead["statusReason"].as_str().unwrap_or_default().to_owned();
            assert!(
                reason == "deposed" || reason == "unresponsive",
                "{reason:?}: {dead:#}"
            );
            shown = Some(reason);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reason = shown.expect("a new leader shown beside the dead leader's record within 10 s");
    eprintln!(
        "the dead leader shown {reason} after {:?}",
        killed.elapsed()
    );
    // And never two ACTIVE for a while after.
    let shown_at = Instant::now();
    while shown_at.elapsed() < Duration::from_secs(1) {
        let list = instances(&h, service).await;
        assert!(active_ids(&list).len() <= 1, "two ACTIVE: {list:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_instance_is_shown_unresponsive_until_it_beats_again() {
    // SIGSTOP keeps the connection open (no advisory): the missing liveness
    // beats tell, after three heartbeat intervals, not at the 15 s TTL.
    let h = Harness::start_with_system_account().await;
    let url = h.nats.url();
    let child = spawn_child(&url, "plain-service", "hung-1", None);
    let path = "/api/instances/plain-service/hung-1";
    eventually(Duration::from_secs(30), "registered", || async {
        h.get(path, Some(VIEWER)).await.status == 200
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped = Instant::now();
    eventually(Duration::from_secs(8), "shown unresponsive", || async {
        h.get(path, Some(VIEWER)).await.body["statusReason"] == "unresponsive"
    })
    .await;
    let after = stopped.elapsed();
    eprintln!("SIGSTOPped instance shown unresponsive after {after:?}");
    assert!(
        after >= Duration::from_secs(2),
        "{after:?}: not before three missed beats"
    );
    assert_eq!(h.get(path, Some(VIEWER)).await.body["status"], "UNHEALTHY");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    eventually(Duration::from_secs(5), "live again", || async {
        let b = h.get(path, Some(VIEWER)).await.body;
        b["status"] == "ACTIVE" && b["statusReason"].is_null()
    })
    .await;
}

/// The connect and disconnect advisories say when the connection started
/// (`client.start`): the monitor tells a client's newer connection from an
/// older one by it when it missed the newer one's connect advisory (its
/// own connection was reconnecting), so this server behaviour is relied on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_advisories_say_when_the_connection_started() {
    let h = Harness::start_with_system_account().await;
    let (user, password) = h.nats.system_credentials();
    let system = async_nats::ConnectOptions::with_user_and_password(user.into(), password.into())
        .connect(h.nats.system_url())
        .await
        .unwrap();
    let mut opened = system.subscribe("$SYS.ACCOUNT.*.CONNECT").await.unwrap();
    let mut closed = system.subscribe("$SYS.ACCOUNT.*.DISCONNECT").await.unwrap();
    aegis_testkit::wait::server_caught_up(&system).await;

    let client = async_nats::ConnectOptions::new()
        .name("advisory-start-probe")
        .connect(h.nats.url())
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(&client).await;
    drop(client);

    let opened_at = start_of(&mut opened, "advisory-start-probe").await;
    let closed_at = start_of(&mut closed, "advisory-start-probe").await;
    assert!(
        opened_at.is_string(),
        "connect advisory without client.start"
    );
    assert_eq!(
        opened_at, closed_at,
        "both name the same connection's start"
    );
}

/// The `client.start` of the next advisory about the connection `name`.
async fn start_of(sub: &mut async_nats::Subscriber, name: &str) -> Value {
    use futures::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("an advisory within 10 s")
            .unwrap();
        let advisory: Value = serde_json::from_slice(&msg.payload).unwrap();
        if advisory["client"]["name"] == name {
            return advisory["client"]["start"].clone();
        }
    }
}

/// A monitor (R3 buckets, the system account's advisories) whose two
/// connections go to node `node` of `cluster` only, as its router.
async fn monitor_on(cluster: &aegis_testkit::NatsCluster, node: usize) -> axum::Router {
    let system = common::system_account(cluster.node(node));
    common::start_r3(&cluster.urls()[node], Some(system))
        .await
        .1
}

/// What a viewer gets for instance `id` of plain-service.
async fn plain_instance(app: &axum::Router, id: &str) -> Value {
    common::call_app(
        app,
        common::req(
            axum::http::Method::GET,
            &format!("/api/instances/plain-service/{id}"),
            Some(VIEWER),
            None,
        ),
    )
    .await
    .body
}

/// Polls instance `id` until it is shown UNHEALTHY: how long after
/// `killed`, and the reason shown (10 s at most).
async fn shown_down(app: &axum::Router, id: &str, killed: Instant) -> (Duration, Value) {
    loop {
        let v = plain_instance(app, id).await;
        if v["status"] == "UNHEALTHY" {
            return (killed.elapsed(), v["statusReason"].clone());
        }
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "{id} not shown down within 10 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An instance is SIGKILLed at the moment the NATS node the monitor reads
/// the server's advisories through dies: the disconnect advisory of the
/// instance's connection (on a node that lives) is sent while the monitor
/// has no connection to read it on. Once reconnected, the monitor must
/// still show the instance down within a second, not wait for its missing
/// beats (3 heartbeats).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkilled_instance_is_down_within_a_second_while_the_monitors_node_dies() {
    let mut cluster = aegis_testkit::NatsCluster::start(3).expect("start a 3-node cluster");
    // The monitor (both its connections) on node 2, the instance on node 0.
    let app = monitor_on(&cluster, 2).await;
    let mut child = spawn_child(&cluster.urls()[0], "plain-service", "p1", None);
    eventually(Duration::from_secs(30), "p1 shown ACTIVE", || async {
        plain_instance(&app, "p1").await["status"] == "ACTIVE"
    })
    .await;

    cluster.kill_node(2);
    child.kill();
    let (shown, reason) = shown_down(&app, "p1", Instant::now()).await;
    eprintln!("SIGKILLed with the monitor's node: shown down ({reason}) after {shown:?}");
    assert!(
        shown < Duration::from_secs(1),
        "shown down after {shown:?} ({reason})"
    );
    assert_eq!(reason, "disconnected");
}

/// An instance dies with the NATS node it is connected to: no server is
/// left to send its disconnect advisory. The monitor (on another node)
/// must not wait for three missed beats: once the dead node stops
/// answering, its clients that have not moved to another node are shown
/// down. A live client of that node moves and is shown live.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_instance_killed_with_its_nats_node_is_shown_down_before_its_beats_are_missed() {
    let mut cluster = aegis_testkit::NatsCluster::start(3).expect("start a 3-node cluster");
    let app = monitor_on(&cluster, 2).await;
    let url = cluster.urls()[0].clone();
    let mut dying = spawn_child(&url, "plain-service", "p1", None);
    let _moving = spawn_child(&url, "plain-service", "p2", None);
    for id in ["p1", "p2"] {
        eventually(Duration::from_secs(30), "both shown ACTIVE", || async {
            plain_instance(&app, id).await["status"] == "ACTIVE"
        })
        .await;
    }

    cluster.kill_node(0);
    dying.kill();
    let (shown, reason) = shown_down(&app, "p1", Instant::now()).await;
    eprintln!("killed with its NATS node: shown down ({reason}) after {shown:?}");
    assert!(
        shown < Duration::from_secs(2),
        "shown down after {shown:?} ({reason})"
    );
    assert_eq!(reason, "disconnected");
    eventually(
        Duration::from_secs(10),
        "p2, moved to a live node, shown ACTIVE",
        || async { plain_instance(&app, "p2").await["status"] == "ACTIVE" },
    )
    .await;
}

/// The failover timeline of a SIGKILLed leader: with the server's
/// disconnect advisory in hand, the hand-over is measured from the moment
/// the old leader's connection closed, not bounded by its last metrics
/// snapshot (up to a metrics interval, 2 s, earlier), and its term ends
/// then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leaders_hand_over_is_measured_from_its_disconnect() {
    let h = Harness::start_with_system_account().await;
    let service = "timeline-service";
    let url = h.nats.url();
    let mut children = sticky_group(&h, &url, service, &["k1", "k2"]).await;
    let path = format!("/api/leadership/{service}");
    let terms = || async {
        let r = h.get(&path, Some(VIEWER)).await;
        r.body["terms"].as_array().cloned().unwrap_or_default()
    };
    // A leader whose lease ran out while both processes started (a loaded
    // machine) is replaced within a second; kill the one that has held
    // the lead for longer than a lease, as the list and the timeline agree.
    let settled = || async {
        let list = instances(&h, service).await;
        let t = terms().await;
        let active = active_ids(&list);
        let open = t.last().filter(|term| term["endedAt"].is_null());
        match (active.as_slice(), open) {
            ([one], Some(term)) if term["instanceId"] == one.as_str() => {
                Some((one.clone(), term["epoch"].clone(), t.len(), list))
            }
            _ => None,
        }
    };
    let (leader, epoch, terms_before, before) = loop {
        let first = aegis_testkit::wait::until_some(
            Duration::from_secs(30),
            "a leader both views agree on",
            settled,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        match settled().await {
            Some(again) if again.0 == first.0 && again.1 == first.1 => break again,
            _ => continue,
        }
    };
    children.get_mut(&leader).unwrap().kill();
    // Generous: on a loaded machine the new leader's `elected` record
    // reaches AEGIS_LOG late (it failed once within 10 s under a build,
    // and twice within 30 s in a full `make test`). What was seen is said
    // if it never comes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let t = loop {
        let t = terms().await;
        if t.len() > terms_before {
            break t[t.len() - 2..].to_vec();
        }
        if Instant::now() >= deadline {
            let list = instances(&h, service).await;
            panic!(
                "no term of the standby within 60 s after killing {leader} (epoch {epoch}): \
                 {t:#?}; listed when killed: {before:#?}; listed now: {list:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(t[0]["instanceId"], leader.as_str(), "{t:#?}");
    assert_eq!(t[1]["handoverFrom"], leader.as_str(), "{t:#?}");
    assert_eq!(t[1]["handoverBasis"], "disconnect", "{t:#?}");
    let ms = t[1]["handoverMs"].as_f64().expect("a hand-over time");
    assert!((0.0..1500.0).contains(&ms), "hand-over of {ms} ms: {t:#?}");
    let ended = t[0]["endedAt"].as_str().expect("the old term ended");
    let elected = t[1]["electedAt"].as_str().unwrap();
    assert!(ended <= elected, "{t:#?}");
}

/// The election key moving straight from one live instance to another
/// (a paused leader, or a crash seen without the server's advisories,
/// whose lease ran out before its beats were missed) re-derives both
/// records. The live stream, applied event by event as the UI applies
/// it, and every list read meanwhile never show both ACTIVE: the old
/// leader's demotion goes out before the new one's promotion, and both
/// land in the view at once. Moved back and forth, so whichever order the
/// monitor keeps the two records in, one of the moves has the new leader
/// second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_moving_between_live_instances_never_shows_two_active() {
    use aegis_sdk::{
        contracts::{InstanceStatus, ServiceInstance},
        election::{LeaderRecord, ensure_election_bucket},
        registry::Registration,
    };
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let service = "moving-service";
    let conn = h.connect().await;
    let mut registrations = Vec::new();
    for id in ["m1", "m2"] {
        let mut record = ServiceInstance::new(service, id, "1.0.0", chrono::Utc::now());
        record.status = InstanceStatus::Standby;
        record.sticky_active_group = Some("default".into());
        registrations.push(Registration::builder(&conn, record).start().await.unwrap());
    }
    eventually(Duration::from_secs(10), "two standbys listed", || async {
        instances(&h, service).await.len() == 2
    })
    .await;
    let mut events = common::Events::open(addr, "instance").await;
    events.next_named("hello").await;
    let keys = ensure_election_bucket(conn.jetstream(), 1).await.unwrap();
    let key = aegis_sdk::contracts::subjects::election_key(service, "default");
    let mut shown: HashMap<String, String> = HashMap::new();
    for (round, leader) in ["m1", "m2", "m1", "m2", "m1", "m2"].into_iter().enumerate() {
        let record = LeaderRecord {
            instance_id: leader.to_owned(),
            epoch: 0,
            lease_ms: 60_000,
            renewed_at: chrono::Utc::now().to_rfc3339(),
        };
        keys.put(&key, serde_json::to_vec(&record).unwrap().into())
            .await
            .unwrap();
        // Lists read while the move is applied.
        let lists = async {
            for _ in 0..20 {
                let list = instances(&h, service).await;
                assert!(
                    active_ids(&list).len() <= 1,
                    "round {round}: two ACTIVE in a list: {list:#?}"
                );
            }
        };
        let stream = async {
            while shown.get(leader).map(String::as_str) != Some("ACTIVE") {
                let e = events.next_named("instance").await;
                let instance = &e["instance"];
                shown.insert(
                    instance["instanceId"].as_str().unwrap().to_owned(),
                    instance["status"].as_str().unwrap().to_owned(),
                );
                let active: Vec<&String> = shown
                    .iter()
                    .filter(|(_, s)| *s == "ACTIVE")
                    .map(|(id, _)| id)
                    .collect();
                assert!(
                    active.len() <= 1,
                    "round {round}: the stream shows {active:?} ACTIVE at once"
                );
            }
        };
        tokio::join!(lists, stream);
    }
    stop.cancel();
    drop(registrations);
}

/// A record of `service`/`id` with a 2 s TTL and the heartbeat interval
/// `announced` (in ms), written once, and beats for it every 250 ms until
/// the token is cancelled: a live instance whose registry writes stopped
/// landing. Returns when it was written, the token and the beating task.
async fn unwritten_but_beating(
    h: &Harness,
    service: &str,
    id: &str,
    announced: u64,
) -> (
    Instant,
    tokio_util::sync::CancellationToken,
    tokio::task::JoinHandle<()>,
) {
    let client = async_nats::connect(h.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    let mut record =
        aegis_contracts::ServiceInstance::new(service, id, "1.0.0", chrono::Utc::now());
    record
        .metadata
        .insert("heartbeatMs".into(), serde_json::json!(announced));
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-TTL", "2s");
    js.publish_with_headers(
        format!("$KV.service_registry.service-instances.{service}.{id}"),
        headers,
        serde_json::to_vec(&record).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let written = Instant::now();
    let beating = tokio_util::sync::CancellationToken::new();
    let beats = {
        let beating = beating.clone();
        let subject = aegis_contracts::subjects::heartbeat_subject(service, id);
        tokio::spawn(async move {
            while !beating.is_cancelled() {
                client.publish(subject.clone(), "".into()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    (written, beating, beats)
}

/// A record that expires while its instance's liveness beats go on (the
/// registry's stream took no write for longer than the TTL: a lost
/// JetStream quorum, whose return expires every record at once) leaves
/// the instance listed until it writes again; once its beats stop too,
/// it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_whose_record_expired_stays_listed_while_it_beats() {
    let h = Harness::start().await;
    let (service, id) = ("lapse-service", "lapse-1");
    // Beats every 250 ms against an announced second: a beat task held up
    // for most of a second by a loaded machine is not a dead instance
    // (unresponsive after three missed intervals, 3 s), and the check
    // below is of the expiry, not of the machine's scheduling.
    let (written, beating, beats) = unwritten_but_beating(&h, service, id, 1_000).await;
    let path = format!("/api/instances/{service}/{id}");
    eventually(Duration::from_secs(5), "listed", || async {
        h.get(&path, Some(VIEWER)).await.status == 200
    })
    .await;
    // The record expires 2 s after its write, and the registry view's
    // grace (3 s at this heartbeat) ends at 5 s; the beats go on for 4 s
    // more, which only the monitor's hold keeps it listed through.
    while written.elapsed() < Duration::from_secs(9) {
        let reply = h.get(&path, Some(VIEWER)).await;
        assert_eq!(
            reply.status,
            200,
            "not listed {:?} after its record was written, though it beats",
            written.elapsed()
        );
        assert_eq!(reply.body["status"], "ACTIVE", "{:#}", reply.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    beating.cancel();
    beats.await.unwrap();
    let stopped = Instant::now();
    eventually(
        aegis_testkit::wait::PATIENCE,
        "gone once it stops beating",
        || async { h.get(&path, Some(VIEWER)).await.status == 404 },
    )
    .await;
    eprintln!("gone {:?} after its last beat", stopped.elapsed());
}

/// The hold is bounded: an instance that beats on but never writes its
/// record again (its registration stuck) leaves the lists once the
/// registry view's grace (1 s at a 250 ms heartbeat) and the monitor's
/// 10 s hold have passed, beats or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_beats_but_never_writes_again_leaves_after_the_hold() {
    let h = Harness::start().await;
    let (service, id) = ("stuck-service", "stuck-1");
    let (written, beating, beats) = unwritten_but_beating(&h, service, id, 250).await;
    let path = format!("/api/instances/{service}/{id}");
    eventually(Duration::from_secs(5), "listed", || async {
        h.get(&path, Some(VIEWER)).await.status == 200
    })
    .await;
    // Expiry at 2 s, the view's grace to 3 s, the hold to 13 s.
    eventually(
        Duration::from_secs(20),
        "gone after the hold while it still beats",
        || async { h.get(&path, Some(VIEWER)).await.status == 404 },
    )
    .await;
    let gone = written.elapsed();
    eprintln!("gone {gone:?} after its only write, beating throughout");
    assert!(!beats.is_finished(), "the beats stopped");
    assert!(
        gone >= Duration::from_secs(12),
        "gone at {gone:?}: before the hold ran out"
    );
    assert!(
        gone < Duration::from_secs(16),
        "gone at {gone:?}: the hold ran long"
    );
    beating.cancel();
    beats.await.unwrap();
}
