//! Health-aware routing and leadership against a real nats-server (issue
//! 16): an operator's drill on `aegis.control.{service}.{instance}` or a
//! failing health check makes a sticky leader hand over to a healthy
//! standby, routed calls avoid an unhealthy instance until it recovers, a
//! group whose every instance is unhealthy keeps its (degraded) leader, and
//! `slow` adds latency to handlers.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    contracts::{
        InstanceStatus,
        control::{ControlResponse, ControlState, UnhealthyReason},
        subjects::instance_control_subject,
    },
    registry::RegistrationOptions,
    rpc::{CallOptions, ErrorCode, Service, WireError},
};
use aegis_testkit::wait::until_some;
use common::{connect, eventually, server};
use serde_json::{Value, json};

type Calls = Arc<Mutex<HashMap<String, u64>>>;

const SERVICE: &str = "order-service";

fn fast_registration() -> RegistrationOptions {
    RegistrationOptions {
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(5),
        ..Default::default()
    }
}

async fn order_instance(
    url: &str,
    id: &str,
    calls: Calls,
    healthy: Option<Arc<AtomicBool>>,
) -> (Service, Connection) {
    let conn = connect(url).await;
    let me = id.to_owned();
    let mut builder = conn
        .service(SERVICE, "1.0.0")
        .instance_id(id)
        .single_active("default")
        .registration(fast_registration())
        .resign_after_failed_checks(2)
        .handler("quote", move |_: Value| {
            let (calls, me) = (calls.clone(), me.clone());
            async move {
                *calls.lock().unwrap().entry(me.clone()).or_default() += 1;
                Ok::<_, WireError>(json!({"by": me}))
            }
        });
    if let Some(flag) = healthy {
        builder = builder.health_check(move || {
            let flag = flag.clone();
            async move { flag.load(Ordering::SeqCst) }
        });
    }
    (builder.start().await.unwrap(), conn)
}

async fn control(conn: &Connection, service: &str, instance: &str, req: Value) -> ControlResponse {
    let reply = conn
        .client()
        .request(
            instance_control_subject(service, instance),
            serde_json::to_vec(&req).unwrap().into(),
        )
        .await
        .expect("the instance answers its control subject");
    serde_json::from_slice(&reply.payload).expect("a ControlResponse")
}

async fn control_ok(conn: &Connection, service: &str, instance: &str, req: Value) -> ControlState {
    match control(conn, service, instance, req).await {
        ControlResponse::Ok(state) => state,
        ControlResponse::Error(e) => panic!("control refused: {e}"),
    }
}

fn leader_of(instances: &[(Service, Connection)]) -> Option<String> {
    let leaders: Vec<_> = instances
        .iter()
        .filter(|(s, _)| s.election().unwrap().role().is_leader())
        .map(|(s, _)| s.instance_id().to_owned())
        .collect();
    assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
    leaders.into_iter().next()
}

async fn wait_for_leader(instances: &[(Service, Connection)]) -> String {
    eventually(Duration::from_secs(5), "a leader", || async {
        leader_of(instances).is_some()
    })
    .await;
    leader_of(instances).unwrap()
}

/// Calls `quote` on the leader in a loop until told to stop; returns
/// (calls, failures).
fn call_loop(client: Connection, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        let opts = CallOptions::timeout(Duration::from_secs(2)).idempotent();
        while !stop.load(Ordering::SeqCst) {
            let t = Instant::now();
            match client
                .rpc()
                .call_active::<_, Value>(SERVICE, "default", "quote", &json!({}), &opts)
                .await
            {
                Ok(_) => ok += 1,
                Err(e) => {
                    eprintln!("call failed after {:?}: {e}", t.elapsed());
                    failed += 1;
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_leader_hands_over_within_a_second_and_no_call_fails() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2", "order-3"] {
        instances.push(order_instance(&nats.url(), id, calls.clone(), None).await);
    }
    let leader = wait_for_leader(&instances).await;
    let client = connect(&nats.url()).await;
    // Standbys are in the registry before the drill, so the leader sees them.
    eventually(Duration::from_secs(5), "two STANDBY records", || async {
        let all = client.discovery().instances(SERVICE).await.unwrap();
        all.iter()
            .filter(|i| i.status == InstanceStatus::Standby)
            .count()
            == 2
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let caller = call_loop(client.clone(), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let state = control_ok(&client, SERVICE, &leader, json!({"op": "unhealthy"})).await;
    assert!(!state.healthy);
    assert_eq!(state.reason, Some(UnhealthyReason::Operator));
    let mut successor = None;
    eventually(Duration::from_secs(5), "another leader", || {
        let found = leader_of(&instances).filter(|l| *l != leader);
        successor = found.clone();
        async move { found.is_some() }
    })
    .await;
    let handover = started.elapsed();
    let successor = successor.unwrap();
    eprintln!("hand-over from {leader} to {successor} took {handover:?}");
    assert!(
        handover < Duration::from_secs(1),
        "hand-over took {handover:?}"
    );

    // Calls keep flowing to the successor; the old leader does not come back.
    let served_before = calls.lock().unwrap().get(&successor).copied().unwrap_or(0);
    eventually(
        aegis_testkit::wait::PATIENCE,
        "the successor serves ten more calls",
        || async {
            calls.lock().unwrap().get(&successor).copied().unwrap_or(0) > served_before + 10
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (ok, failed) = caller.await.unwrap();
    assert_eq!(failed, 0, "{ok} calls succeeded, {failed} failed");
    assert!(ok > 10, "only {ok} calls");
    assert!(calls.lock().unwrap()[&successor] > served_before);
    assert_eq!(leader_of(&instances).as_deref(), Some(successor.as_str()));

    // The old leader's record says why it is UNHEALTHY, and since when.
    let record =
        eventually_record(&client, &leader, |r| r.status == InstanceStatus::Unhealthy).await;
    assert_eq!(record.metadata["statusReason"], "operator");
    assert!(record.metadata["statusSince"].is_string());

    // Recovery: healthy again, it stays a standby (leadership is sticky).
    let state = control_ok(&client, SERVICE, &leader, json!({"op": "healthy"})).await;
    assert!(state.healthy);
    assert_eq!(state.role.as_deref(), Some("standby"));
    let record = eventually_record(&client, &leader, |r| r.status == InstanceStatus::Standby).await;
    assert!(!record.metadata.contains_key("statusReason"));
    assert_eq!(leader_of(&instances).as_deref(), Some(successor.as_str()));
}

async fn eventually_record(
    client: &Connection,
    instance: &str,
    cond: impl Fn(&aegis_sdk::contracts::ServiceInstance) -> bool,
) -> aegis_sdk::contracts::ServiceInstance {
    until_some(Duration::from_secs(5), "the record", || async {
        let all = client.discovery().instances(SERVICE).await.unwrap();
        all.into_iter()
            .find(|r| r.instance_id == instance && cond(r))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failing_its_health_check_hands_over_after_the_configured_checks() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut flags = HashMap::new();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2"] {
        let flag = Arc::new(AtomicBool::new(true));
        flags.insert(id.to_owned(), flag.clone());
        instances.push(order_instance(&nats.url(), id, calls.clone(), Some(flag)).await);
    }
    let leader = wait_for_leader(&instances).await;
    let client = connect(&nats.url()).await;
    eventually(Duration::from_secs(5), "a STANDBY record", || async {
        let all = client.discovery().instances(SERVICE).await.unwrap();
        all.iter().any(|i| i.status == InstanceStatus::Standby)
    })
    .await;

    flags[&leader].store(false, Ordering::SeqCst);
    let failing = Instant::now();
    // The first failed check already shows in the record, with its reason.
    let record =
        eventually_record(&client, &leader, |r| r.status == InstanceStatus::Unhealthy).await;
    assert_eq!(record.metadata["statusReason"], "health_check");
    eventually(Duration::from_secs(5), "the standby leads", || async {
        leader_of(&instances).is_some_and(|l| l != leader)
    })
    .await;
    let took = failing.elapsed();
    eprintln!("hand-over after a failing check: {took:?} (2 checks, 200 ms apart)");
    // Two checks in a row must fail first: not on the first one.
    assert!(took >= Duration::from_millis(200), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_unhealthy_keeps_a_degraded_leader_until_a_standby_recovers() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2"] {
        instances.push(order_instance(&nats.url(), id, calls.clone(), None).await);
    }
    let leader = wait_for_leader(&instances).await;
    let standby = if leader == "order-1" {
        "order-2"
    } else {
        "order-1"
    };
    let client = connect(&nats.url()).await;
    control_ok(&client, SERVICE, standby, json!({"op": "unhealthy"})).await;
    eventually_record(&client, standby, |r| r.status == InstanceStatus::Unhealthy).await;
    control_ok(&client, SERVICE, &leader, json!({"op": "unhealthy"})).await;

    // Several leases and checks later the same instance still leads, and
    // serves.
    let watch_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < watch_until {
        assert_eq!(leader_of(&instances).as_deref(), Some(leader.as_str()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reply = client
        .rpc()
        .call_active::<_, Value>(
            SERVICE,
            "default",
            "quote",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(reply.instance_id.as_deref(), Some(leader.as_str()));
    // Its record says UNHEALTHY (the monitor shows it ACTIVE, degraded).
    let record =
        eventually_record(&client, &leader, |r| r.status == InstanceStatus::Unhealthy).await;
    assert_eq!(record.metadata["statusReason"], "operator");
    assert!(record.epoch.is_some(), "it still writes its epoch");

    // The standby recovers: the degraded leader hands over to it.
    control_ok(&client, SERVICE, standby, json!({"op": "healthy"})).await;
    eventually(
        Duration::from_secs(3),
        "the recovered standby leads",
        || async { leader_of(&instances).as_deref() == Some(standby) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_standby_lets_a_healthy_one_take_over() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2", "order-3"] {
        instances.push(order_instance(&nats.url(), id, calls.clone(), None).await);
    }
    let leader = wait_for_leader(&instances).await;
    let client = connect(&nats.url()).await;
    let standbys: Vec<String> = instances
        .iter()
        .map(|(s, _)| s.instance_id().to_owned())
        .filter(|id| *id != leader)
        .collect();
    // The unhealthy one is the first by id: ordering gives it no head start.
    let (sick, well) = (&standbys[0], &standbys[1]);
    control_ok(&client, SERVICE, sick, json!({"op": "unhealthy"})).await;

    let i = instances
        .iter()
        .position(|(s, _)| s.instance_id() == leader)
        .unwrap();
    let (old, _conn) = instances.remove(i);
    old.shutdown().await.unwrap();
    eventually(Duration::from_secs(3), "a new leader", || async {
        leader_of(&instances).is_some()
    })
    .await;
    assert_eq!(leader_of(&instances).as_deref(), Some(well.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_instance_receives_no_routed_calls_until_it_recovers() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut services = Vec::new();
    for id in ["pricing-1", "pricing-2"] {
        let conn = connect(&nats.url()).await;
        let (calls, me) = (calls.clone(), id.to_owned());
        let svc = conn
            .service("pricing-service", "1.0.0")
            .instance_id(id)
            .registration(fast_registration())
            .handler("price", move |_: Value| {
                let (calls, me) = (calls.clone(), me.clone());
                async move {
                    *calls.lock().unwrap().entry(me).or_default() += 1;
                    Ok::<_, WireError>(json!({"price": 1.0}))
                }
            })
            .start()
            .await
            .unwrap();
        services.push((svc, conn));
    }
    let client = connect(&nats.url()).await;
    let selectable = |client: Connection| async move {
        client
            .discovery()
            .selectable("pricing-service")
            .await
            .unwrap()
            .into_iter()
            .map(|i| i.instance_id)
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(5), "both selectable", || {
        let c = client.clone();
        async move { selectable(c).await.len() == 2 }
    })
    .await;

    let state = control_ok(
        &client,
        "pricing-service",
        "pricing-1",
        json!({"op": "unhealthy", "for_ms": 60_000}),
    )
    .await;
    assert!(state.forced_until.is_some());
    eventually(Duration::from_secs(5), "pricing-1 out of rotation", || {
        let c = client.clone();
        async move { selectable(c).await == ["pricing-2"] }
    })
    .await;
    let count = |id: &str| calls.lock().unwrap().get(id).copied().unwrap_or(0);
    let before = count("pricing-1");
    for _ in 0..50 {
        client
            .rpc()
            .call::<_, Value>("pricing-service", "price", &json!({}))
            .await
            .unwrap();
    }
    assert_eq!(
        count("pricing-1"),
        before,
        "an unhealthy instance was routed calls"
    );

    control_ok(
        &client,
        "pricing-service",
        "pricing-1",
        json!({"op": "healthy"}),
    )
    .await;
    eventually(Duration::from_secs(5), "pricing-1 back in rotation", || {
        let c = client.clone();
        async move { selectable(c).await.len() == 2 }
    })
    .await;
    for _ in 0..50 {
        client
            .rpc()
            .call::<_, Value>("pricing-service", "price", &json!({}))
            .await
            .unwrap();
    }
    let after = count("pricing-1") - before;
    eprintln!("pricing-1 served {after} of 50 calls after recovering");
    assert!(after >= 10, "only {after} of 50 calls after recovery");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_verdict_ends_by_itself_and_slow_delays_handlers() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let served = Arc::new(AtomicU64::new(0));
    let counter = served.clone();
    let _svc = conn
        .service("risk-service", "1.0.0")
        .instance_id("risk-1")
        .registration(fast_registration())
        .handler("check", move |_: Value| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok::<_, WireError>(json!(true))
            }
        })
        .start()
        .await
        .unwrap();

    let state = control_ok(
        &conn,
        "risk-service",
        "risk-1",
        json!({"op": "unhealthy", "for_ms": 400}),
    )
    .await;
    assert!(!state.healthy);
    eventually_status(&conn, InstanceStatus::Unhealthy).await;
    let until = Instant::now() + Duration::from_secs(3);
    eventually_status(&conn, InstanceStatus::Active).await;
    assert!(Instant::now() < until);
    let state = control_ok(&conn, "risk-service", "risk-1", json!({"op": "status"})).await;
    assert!(state.healthy && state.reason.is_none() && state.since.is_none());

    let state = control_ok(
        &conn,
        "risk-service",
        "risk-1",
        json!({"op": "slow", "delay_ms": 300}),
    )
    .await;
    assert_eq!(state.delay_ms, 300);
    let call = || async {
        let t = Instant::now();
        conn.rpc()
            .call_instance::<_, Value>(
                "risk-service",
                "risk-1",
                "check",
                &json!({}),
                &CallOptions::default(),
            )
            .await
            .unwrap();
        t.elapsed()
    };
    let slow = call().await;
    assert!(slow >= Duration::from_millis(300), "{slow:?}");
    control_ok(
        &conn,
        "risk-service",
        "risk-1",
        json!({"op": "slow", "delay_ms": 0}),
    )
    .await;
    let fast = call().await;
    assert!(fast < Duration::from_millis(300), "{fast:?}");

    // Bad requests get a clear refusal, and change nothing.
    for bad in [
        json!({"op": "explode"}),
        json!({"op": "slow", "delay_ms": 3_600_000}),
        json!({"op": "unhealthy", "for_ms": 0}),
    ] {
        match control(&conn, "risk-service", "risk-1", bad.clone()).await {
            ControlResponse::Error(e) => assert_eq!(e.code, ErrorCode::InvalidRequest, "{bad}"),
            ControlResponse::Ok(s) => panic!("{bad} accepted: {s:?}"),
        }
    }
    let state = control_ok(&conn, "risk-service", "risk-1", json!({"op": "status"})).await;
    assert!(state.healthy);
    assert_eq!(state.delay_ms, 0);
}

async fn eventually_status(conn: &Connection, status: InstanceStatus) {
    eventually(
        Duration::from_secs(3),
        &format!("risk-1 {status:?}"),
        || async {
            conn.discovery()
                .instances("risk-service")
                .await
                .unwrap()
                .iter()
                .any(|i| i.instance_id == "risk-1" && i.status == status)
        },
    )
    .await;
}
