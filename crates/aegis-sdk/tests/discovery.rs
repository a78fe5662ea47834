//! Discovery and routed calls against real nats-servers: strategies
//! (round-robin, sticky, random, latency-aware), only ACTIVE instances,
//! failover around a SIGKILLed instance process, idempotent retries on a
//! per-attempt timeout, fast SERVICE_UNAVAILABLE, and survival of a broken
//! watch and of a node restart in a 3-node cluster.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    contracts::InstanceStatus,
    discovery::{DiscoveryError, Strategy},
    registry::{RegistrationOptions, RegistryChange, RegistryReader},
    rpc::{CallOptions, ErrorCode, RequestContext, RpcError, Service, WireError},
};
use aegis_testkit::{NatsCluster, wait::PATIENCE};
use common::{ChildInstance, connect, connect_cluster, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

/// An instance of `service` whose `whoami` answers its id and whose `sleep`
/// sleeps only on instances named `slow-*`.
async fn instance(
    conn: &Connection,
    service: &str,
    id: &str,
    options: RegistrationOptions,
) -> Service {
    conn.service(service, "1.0.0")
        .instance_id(id)
        .registration(options)
        .handler_with_context("whoami", |ctx: RequestContext, _: Value| async move {
            Ok::<_, WireError>(ctx.instance_id.to_string())
        })
        .handler_with_context("sleep", |ctx: RequestContext, ms: u64| async move {
            if ctx.instance_id.starts_with("slow") {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok::<_, WireError>(ctx.instance_id.to_string())
        })
        .start()
        .await
        .expect("instance starts")
}

/// `n` instances of `service`, each on its own connection like separate
/// processes.
async fn instances(url: &str, service: &str, ids: &[&str]) -> Vec<(Service, Connection)> {
    let mut out = Vec::new();
    for id in ids {
        let c = connect(url).await;
        out.push((
            instance(&c, service, id, RegistrationOptions::default()).await,
            c,
        ));
    }
    out
}

async fn wait_selectable(conn: &Connection, service: &str, n: usize) {
    let discovery = conn.discovery();
    eventually(
        Duration::from_secs(10),
        &format!("{n} selectable instances of {service}"),
        || {
            let d = discovery.clone();
            async move {
                d.selectable(service)
                    .await
                    .map(|v| v.len() == n)
                    .unwrap_or(false)
            }
        },
    )
    .await;
}

async fn whoami(conn: &Connection, service: &str, opts: &CallOptions) -> Result<String, RpcError> {
    conn.rpc()
        .call_with::<_, String>(service, "whoami", &json!({}), opts)
        .await
        .map(|r| {
            assert_eq!(
                r.instance_id.as_deref(),
                Some(r.value.as_str()),
                "the reply names its server"
            );
            r.value
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_hits_all_three_equally_and_other_strategies_spread() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _instances = instances(&nats.url(), "rr-service", &["rr-a", "rr-b", "rr-c"]).await;
    wait_selectable(&client, "rr-service", 3).await;

    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..300 {
        *counts
            .entry(
                whoami(&client, "rr-service", &CallOptions::default())
                    .await
                    .unwrap(),
            )
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(
        counts.values().all(|n| *n == 100),
        "round-robin is exact: {counts:?}"
    );

    // Random reaches everyone. Latency-aware (two random choices, the
    // faster wins) never picks the slowest of three while latencies hold
    // still and calls come one at a time, so it reaches at least two.
    for (strategy, at_least) in [(Strategy::Random, 3), (Strategy::LeastLatency, 2)] {
        let opts = CallOptions {
            strategy: Some(strategy),
            ..Default::default()
        };
        let mut seen = HashSet::new();
        for _ in 0..150 {
            seen.insert(whoami(&client, "rr-service", &opts).await.unwrap());
        }
        assert!(seen.len() >= at_least, "{strategy:?} reached {seen:?}");
    }
    // A client-wide default works as well.
    let rpc = client.rpc().with_strategy(Strategy::Random);
    assert_eq!(rpc.strategy(), Strategy::Random);
    let _: String = rpc.call("rr-service", "whoami", &json!({})).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keeps_a_key_on_one_instance_and_moves_only_the_departed_share() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let mut running = instances(&nats.url(), "sticky-service", &["st-a", "st-b", "st-c"]).await;
    wait_selectable(&client, "sticky-service", 3).await;

    let keys: Vec<String> = (0..120).map(|i| format!("account-{i}")).collect();
    let mut owner: HashMap<String, String> = HashMap::new();
    for key in &keys {
        let opts = CallOptions::default().sticky(key.clone());
        let first = whoami(&client, "sticky-service", &opts).await.unwrap();
        for _ in 0..3 {
            assert_eq!(
                whoami(&client, "sticky-service", &opts).await.unwrap(),
                first,
                "{key}"
            );
        }
        owner.insert(key.clone(), first);
    }
    let per_instance =
        |o: &HashMap<String, String>, id: &str| o.values().filter(|v| *v == id).count();
    for id in ["st-a", "st-b", "st-c"] {
        assert!(
            per_instance(&owner, id) > 10,
            "{id} owns too few keys: {owner:?}"
        );
    }
    // The discovery API agrees with the calls.
    let picked = client
        .discovery()
        .select("sticky-service", Strategy::Sticky, Some("account-7"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(picked.instance_id, owner["account-7"]);
    assert!(matches!(
        client
            .discovery()
            .select("sticky-service", Strategy::Sticky, None)
            .await,
        Err(DiscoveryError::MissingStickyKey)
    ));

    // st-b leaves gracefully.
    let (b, _conn) = running.remove(1);
    b.shutdown().await.unwrap();
    wait_selectable(&client, "sticky-service", 2).await;
    let mut moved = 0;
    for key in &keys {
        let now = whoami(
            &client,
            "sticky-service",
            &CallOptions::default().sticky(key.clone()),
        )
        .await
        .unwrap();
        if owner[key] == "st-b" {
            assert_ne!(now, "st-b");
            moved += 1;
        } else {
            assert_eq!(now, owner[key], "{key} moved although its instance stayed");
        }
    }
    assert_eq!(moved, per_instance(&owner, "st-b"));
    eprintln!(
        "st-b left: {moved} of {} keys moved, all of them its own",
        keys.len()
    );

    // Sticky without a key is refused before anything is sent.
    let err = whoami(
        &client,
        "sticky-service",
        &CallOptions {
            strategy: Some(Strategy::Sticky),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_active_instances_are_selected() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let running = instances(
        &nats.url(),
        "mixed-service",
        &["m-active", "m-standby", "m-sick"],
    )
    .await;
    running[1]
        .0
        .set_status(InstanceStatus::Standby)
        .await
        .unwrap();
    running[2]
        .0
        .set_status(InstanceStatus::Unhealthy)
        .await
        .unwrap();
    wait_selectable(&client, "mixed-service", 1).await;
    for _ in 0..30 {
        assert_eq!(
            whoami(&client, "mixed-service", &CallOptions::default())
                .await
                .unwrap(),
            "m-active"
        );
    }
    assert_eq!(
        client
            .discovery()
            .instances("mixed-service")
            .await
            .unwrap()
            .len(),
        3
    );
    running[0]
        .0
        .set_status(InstanceStatus::Standby)
        .await
        .unwrap();
    wait_selectable(&client, "mixed-service", 0).await;
    let err = whoami(&client, "mixed-service", &CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoInstances { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_to_a_method_nobody_serves_evicts_nobody() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _running = instances(&nats.url(), "typo-service", &["t-1", "t-2"]).await;
    wait_selectable(&client, "typo-service", 2).await;
    for _ in 0..5 {
        let err = client
            .rpc()
            .call::<_, Value>("typo-service", "whoamy", &json!({}))
            .await
            .unwrap_err();
        assert!(matches!(err, RpcError::NoSuchMethod { .. }), "{err:?}");
        assert_eq!(err.code(), ErrorCode::NotFound);
    }
    // Nothing was sent and nobody was evicted.
    assert_eq!(
        client
            .discovery()
            .selectable("typo-service")
            .await
            .unwrap()
            .len(),
        2
    );
    whoami(&client, "typo-service", &CallOptions::default())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_instances_fails_fast_with_service_unavailable() {
    let nats = server();
    let client = connect(&nats.url()).await;
    // The first call starts the registry view; later ones answer from memory.
    let mut took = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let err = client
            .rpc()
            .call_with::<_, Value>(
                "ghost-service",
                "anything",
                &json!({}),
                &CallOptions::timeout(Duration::from_secs(10)),
            )
            .await
            .unwrap_err();
        took.push(started.elapsed());
        assert!(
            matches!(&err, RpcError::NoInstances { service, .. } if service == "ghost-service"),
            "{err:?}"
        );
        assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    }
    eprintln!("NoInstances after {took:?} (deadline 10 s)");
    assert!(took.iter().all(|t| *t < Duration::from_secs(2)), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_instance_is_routed_around_without_failed_idempotent_calls() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _alive = instances(&nats.url(), "failover-service", &["fo-a", "fo-b"]).await;
    let mut victim = ChildInstance::spawn(
        "child_instance",
        &nats.url(),
        "failover-service",
        "fo-victim",
        Duration::from_secs(1),
        Duration::from_secs(3),
    );
    wait_selectable(&client, "failover-service", 3).await;

    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicUsize::new(0));
    let by_victim = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (client, stop, failed) = (client.clone(), stop.clone(), failed.clone());
        let by_victim = by_victim.clone();
        workers.push(tokio::spawn(async move {
            let opts = CallOptions {
                timeout: Some(Duration::from_secs(2)),
                idempotent: true,
                ..Default::default()
            };
            let mut served: HashMap<String, usize> = HashMap::new();
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                match client
                    .rpc()
                    .call_with::<_, String>("failover-service", "whoami", &json!({}), &opts)
                    .await
                {
                    Ok(r) => {
                        if r.value == "fo-victim" {
                            by_victim.fetch_add(1, Ordering::Relaxed);
                        }
                        *served.entry(r.value).or_default() += 1;
                    }
                    Err(e) => {
                        eprintln!("failed call: {e:?}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                worst = worst.max(started.elapsed());
            }
            (served, worst)
        }));
    }
    // Once the victim has taken its share, SIGKILL it mid-traffic.
    eventually(PATIENCE, "the victim served a call", || async {
        by_victim.load(Ordering::Relaxed) > 0
    })
    .await;
    victim.kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut served: HashMap<String, usize> = HashMap::new();
    let mut worst = Duration::ZERO;
    for w in workers {
        let (s, w) = w.await.unwrap();
        worst = worst.max(w);
        for (k, v) in s {
            *served.entry(k).or_default() += v;
        }
    }
    eprintln!(
        "served {served:?}; worst call {worst:?}; failed {}",
        failed.load(Ordering::Relaxed)
    );
    assert_eq!(failed.load(Ordering::Relaxed), 0, "idempotent calls failed");
    assert!(
        served.get("fo-victim").copied().unwrap_or(0) > 0,
        "the victim never served: {served:?}"
    );
    assert!(served["fo-a"] > 0 && served["fo-b"] > 0, "{served:?}");
    // Evicted locally at once, although its record lives until the TTL.
    let selectable: Vec<String> = client
        .discovery()
        .selectable("failover-service")
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(selectable, ["fo-a", "fo-b"]);
}

/// A frozen instance (a hung process: its subscriptions stay, nothing
/// answers, its record is not refreshed) costs a caller one attempt's
/// timeout, not one call in every few until its record expires; once it
/// runs again, its next record has it picked again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_instance_costs_a_caller_one_attempt_timeout() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _alive = instances(&nats.url(), "frozen-service", &["fz-a", "fz-b"]).await;
    let mut frozen = ChildInstance::spawn(
        "child_instance",
        &nats.url(),
        "frozen-service",
        "fz-frozen",
        Duration::from_secs(1),
        Duration::from_secs(60),
    );
    wait_selectable(&client, "frozen-service", 3).await;
    frozen.freeze();
    // Far above what a call to a live instance takes even on a loaded
    // machine, so only a call that waited for the frozen one counts.
    let attempt = Duration::from_secs(2);
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        idempotent: true,
        attempt_timeout: Some(attempt),
        ..Default::default()
    };
    let mut waited = Vec::new();
    for _ in 0..12 {
        let started = Instant::now();
        let served = whoami(&client, "frozen-service", &opts).await.unwrap();
        assert_ne!(served, "fz-frozen");
        waited.push(started.elapsed());
    }
    let timed_out = waited.iter().filter(|w| **w >= attempt).count();
    assert_eq!(
        timed_out, 1,
        "only the first call sent to the frozen instance waits for it: {waited:?}"
    );
    frozen.thaw();
    eventually(
        Duration::from_secs(15),
        "the thawed instance is called again",
        || {
            let (client, opts) = (client.clone(), opts.clone());
            async move {
                whoami(&client, "frozen-service", &opts)
                    .await
                    .is_ok_and(|served| served == "fz-frozen")
            }
        },
    )
    .await;
}

/// Every instance too slow for a caller (an overload, or a timeout too
/// short for the method): each times out once and is passed over, but
/// once they answer again the caller spreads its calls over all of them,
/// rather than piling them onto the first that answered until the others
/// re-write their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_instance_timed_out_calls_spread_over_all_again() {
    let nats = server();
    let overloaded = Arc::new(AtomicBool::new(true));
    let mut running = Vec::new();
    for id in ["busy-1", "busy-2", "busy-3"] {
        let conn = connect(&nats.url()).await;
        let overloaded = overloaded.clone();
        let service = conn
            .service("busy-service", "1.0.0")
            .instance_id(id)
            .handler_with_context("whoami", move |ctx: RequestContext, _: Value| {
                let overloaded = overloaded.clone();
                async move {
                    if overloaded.load(Ordering::SeqCst) {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                    Ok::<_, WireError>(ctx.instance_id.to_string())
                }
            })
            .start()
            .await
            .expect("instance starts");
        running.push((service, conn));
    }
    let client = connect(&nats.url()).await;
    wait_selectable(&client, "busy-service", 3).await;
    let short = CallOptions::timeout(Duration::from_millis(200));
    for _ in 0..3 {
        let r = whoami(&client, "busy-service", &short).await;
        assert!(matches!(r, Err(RpcError::Timeout { .. })), "{r:?}");
    }
    overloaded.store(false, Ordering::SeqCst);
    let mut served: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let id = whoami(
            &client,
            "busy-service",
            &CallOptions::timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
        *served.entry(id).or_default() += 1;
    }
    assert!(
        served.len() == 3 && served.values().all(|n| *n >= 5),
        "the calls after the overload went to: {served:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of a_killed_instance_is_routed_around_without_failed_idempotent_calls"]
async fn child_instance() {
    common::run_child_instance().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_calls_retry_elsewhere_when_an_attempt_times_out() {
    let nats = server();
    let client = connect(&nats.url()).await;
    // Sorted ids: round-robin alternates fast-1, slow-1.
    let _running = instances(&nats.url(), "hang-service", &["fast-1", "slow-1"]).await;
    wait_selectable(&client, "hang-service", 2).await;
    let idempotent = CallOptions {
        timeout: Some(Duration::from_secs(3)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    for _ in 0..6 {
        let started = Instant::now();
        let reply = client
            .rpc()
            .call_with::<_, String>("hang-service", "sleep", &10_000u64, &idempotent)
            .await
            .unwrap();
        assert_eq!(reply.value, "fast-1");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // Not idempotent: the attempt on the slow instance is not repeated.
    // A caller of its own: the one above no longer picks slow-1, which
    // timed out, until it writes a newer record.
    let fresh = connect(&nats.url()).await;
    wait_selectable(&fresh, "hang-service", 2).await;
    let mut timeouts = 0;
    for _ in 0..2 {
        let r = fresh
            .rpc()
            .call_with::<_, String>(
                "hang-service",
                "sleep",
                &10_000u64,
                &CallOptions::timeout(Duration::from_millis(300)),
            )
            .await;
        if let Err(e) = r {
            assert!(matches!(e, RpcError::Timeout { .. }), "{e:?}");
            timeouts += 1;
        }
    }
    assert_eq!(
        timeouts, 1,
        "exactly the call that went to slow-1 timed out"
    );
}

/// Deletes every consumer on the registry stream: the watch loses its
/// consumer without any error on the client side.
async fn delete_registry_consumers(url: &str) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream("KV_service_registry").await.unwrap();
    let names: Vec<String> = stream
        .consumer_names()
        .filter_map(|n| async move { n.ok() })
        .collect()
        .await;
    for name in &names {
        // One a watch left behind may expire (10 s idle) meanwhile.
        if let Err(e) = stream.delete_consumer(name).await {
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
    names.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_survives_a_watch_interruption() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let reader = RegistryReader::start(&client).await.unwrap();
    let mut running = instances(&nats.url(), "watch-service", &["w-1", "w-2"]).await;
    wait_selectable(&client, "watch-service", 2).await;

    let deleted = delete_registry_consumers(&nats.url()).await;
    assert!(deleted >= 1, "the watch had a consumer");
    let broke = Instant::now();
    // While the watch is gone, the last view serves every call.
    let mut staleness_seen = None;
    while broke.elapsed() < Duration::from_millis(1500) {
        whoami(&client, "watch-service", &CallOptions::default())
            .await
            .unwrap();
        staleness_seen = staleness_seen.or(reader.staleness());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Changes made during the break: one instance joins, one leaves.
    let joined = connect(&nats.url()).await;
    let w3 = instance(
        &joined,
        "watch-service",
        "w-3",
        RegistrationOptions::default(),
    )
    .await;
    let (w1, _c) = running.remove(0);
    w1.shutdown().await.unwrap();
    eventually(
        Duration::from_secs(20),
        "the watch re-created and caught up",
        || {
            let r = reader.clone();
            async move {
                r.is_synced() && r.resyncs() >= 1 && {
                    let ids: Vec<String> = r
                        .by_service("watch-service")
                        .into_iter()
                        .map(|i| i.instance_id)
                        .collect();
                    ids == ["w-2", "w-3"]
                }
            }
        },
    )
    .await;
    eprintln!(
        "watch re-created {:?} after its consumer was deleted; staleness reported while broken: {staleness_seen:?}",
        broke.elapsed()
    );
    assert_eq!(reader.staleness(), None);
    let mut seen = HashSet::new();
    for _ in 0..10 {
        seen.insert(
            whoami(&client, "watch-service", &CallOptions::default())
                .await
                .unwrap(),
        );
    }
    assert_eq!(seen, HashSet::from(["w-2".to_owned(), "w-3".to_owned()]));
    w3.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_survives_a_node_restart_in_a_3_node_cluster() {
    let mut cluster = NatsCluster::start(3).expect("3-node cluster");
    let urls = cluster.urls();
    // A stream leader election can stall registry writes for several
    // seconds: a TTL well above that keeps the records alive through it,
    // at the price of a crashed instance staying listed that long.
    let options = RegistrationOptions {
        heartbeat: Duration::from_secs(1),
        ttl: Duration::from_secs(20),
        ..Default::default()
    };
    let mut running = Vec::new();
    // One instance per node: the client picks a random server from a list,
    // and with all three on the node killed below (it happened: 319 calls
    // failed while none of them was reachable) no instance could answer
    // during the restart, which is not what this test is about.
    for (i, id) in ["c-1", "c-2", "c-3"].into_iter().enumerate() {
        let c = connect_cluster(vec![urls[i].clone()], 3).await;
        running.push((
            instance(&c, "cluster-service", id, options.clone()).await,
            c,
        ));
    }
    // Kill the node leading the registry stream (the hardest case); the
    // caller is connected to the other two, so only the registry and the
    // instances feel the crash.
    let js = running[0].1.jetstream().clone();
    let leader = js
        .get_stream("KV_service_registry")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .expect("a stream leader");
    let victim = cluster
        .nodes()
        .iter()
        .position(|n| n.server_name() == leader)
        .unwrap();
    let others = cluster.urls_except(victim);
    let client = connect_cluster(others, 3).await;
    let reader = RegistryReader::start(&client).await.unwrap();
    wait_selectable(&client, "cluster-service", 3).await;
    let mut changes = Box::pin(reader.changes());

    let stop = Arc::new(AtomicBool::new(false));
    let caller = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let opts = CallOptions {
                timeout: Some(Duration::from_secs(3)),
                idempotent: true,
                ..Default::default()
            };
            let (mut ok, mut failed) = (0usize, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match whoami(&client, "cluster-service", &opts).await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(format!("{e:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };

    let killed = Instant::now();
    cluster.kill_node(victim);
    eprintln!("killed {leader} (registry stream leader)");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart_node(victim).expect("node rejoins");
    eprintln!("{leader} rejoined {:?} after the kill", killed.elapsed());
    // Every instance heart-beats again (a fresh record from each) ...
    let mut beat_again = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while beat_again.len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, changes.next()).await {
            Ok(Some(RegistryChange::Upserted(i))) if i.status == InstanceStatus::Active => {
                beat_again.insert(i.instance_id);
            }
            Ok(Some(RegistryChange::Removed { instance_id, .. })) => {
                panic!("{instance_id} was lost from the registry during the restart")
            }
            Ok(Some(_)) => {}
            other => panic!("instances did not heart-beat again: {other:?}, got {beat_again:?}"),
        }
    }
    eprintln!(
        "all instances heart-beating again {:?} after the kill",
        killed.elapsed()
    );
    eventually(Duration::from_secs(20), "the view is synced", || {
        let r = reader.clone();
        async move { r.is_synced() }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = caller.await.unwrap();
    eprintln!(
        "calls during the restart: {ok} ok, {} failed {failed:?}; resyncs {}",
        failed.len(),
        reader.resyncs()
    );
    assert!(failed.is_empty(), "idempotent calls failed: {failed:?}");
    assert!(ok > 50, "{ok}");
    assert_eq!(reader.by_service("cluster-service").len(), 3);
    wait_selectable(&client, "cluster-service", 3).await;
    for (s, _) in running {
        s.shutdown().await.unwrap();
    }
}

/// The filter subjects of every registry watch consumer on the server.
async fn registry_watch_filters(url: &str) -> Vec<Vec<String>> {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let stream = js.get_stream("KV_service_registry").await.unwrap();
    let infos: Vec<_> = stream
        .consumers()
        .filter_map(|c| async move { c.ok() })
        .collect()
        .await;
    infos
        .into_iter()
        .filter(|i| i.config.description.as_deref() == Some("aegis registry watch"))
        .map(|i| {
            let mut f = i.config.filter_subjects.clone();
            if !i.config.filter_subject.is_empty() {
                f.push(i.config.filter_subject.clone());
            }
            f.sort();
            f
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_watches_only_the_services_it_uses_and_a_reader_all() {
    let nats = server();
    let url = nats.url();
    let _a = instances(&url, "alpha-service", &["a-1"]).await;
    let _b = instances(&url, "beta-service", &["b-1"]).await;
    let _c = instances(&url, "gamma-service", &["c-1"]).await;
    let filter = |s: &str| format!("$KV.service_registry.service-instances.{s}.*");

    // A caller of one service holds and receives only that service.
    let caller = connect(&url).await;
    assert_eq!(
        whoami(&caller, "alpha-service", &CallOptions::default())
            .await
            .unwrap(),
        "a-1"
    );
    assert_eq!(
        registry_watch_filters(&url).await,
        [vec![filter("alpha-service")]],
        "the caller's watch covers the one service it called"
    );
    // A second service joins the same (one) watch, loaded before the lookup
    // answers.
    let listed = caller.discovery().instances("beta-service").await.unwrap();
    assert_eq!(listed.len(), 1, "beta's record is in at once: {listed:?}");
    // The watch it replaced is left to the server, which removes it after
    // its 10 s inactive threshold (a reader may not delete consumers on
    // the registry under the showcase's users).
    eventually(
        Duration::from_secs(20),
        "one watch on alpha and beta",
        || async {
            registry_watch_filters(&url).await
                == [vec![filter("alpha-service"), filter("beta-service")]]
        },
    )
    .await;
    // A registry reader on the same connection widens it to everything.
    let reader = RegistryReader::start(&caller).await.unwrap();
    assert_eq!(reader.all().len(), 3, "the reader sees the whole registry");
    eventually(
        Duration::from_secs(20),
        "one watch on everything",
        || async {
            registry_watch_filters(&url).await
                == [vec!["$KV.service_registry.service-instances.>".to_owned()]]
        },
    )
    .await;
    // Calls keep working across the re-scoping.
    assert_eq!(
        whoami(&caller, "beta-service", &CallOptions::default())
            .await
            .unwrap(),
        "b-1"
    );
}

/// A new connection's registry view whose bucket lookup is lost (as one
/// sent while a NATS node's death leaves the bucket's stream without a
/// leader: never answered, even once the leader is back) loads as soon as
/// JetStream answers again, so a call through discovery with a 3 s
/// deadline is served rather than told the view did not load. The same
/// case for the election view, with the watch's creation lost too, is in
/// `call_active.rs`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_view_whose_bucket_lookup_is_lost_loads_once_jetstream_answers() {
    let nats = server();
    let service_conn = connect(&nats.url()).await;
    let _service = common::echo_service(&service_conn, "pricing-service", "pricing-1").await;
    let base = common::lose_requests(
        &nats,
        r#""$JS.API.STREAM.INFO.KV_service_registry": "lost.stream.info""#,
        "$JS.API.STREAM.INFO.KV_service_registry",
    )
    .await;

    // The default request timeout, 5 s: longer than the call's 3 s.
    let client = aegis_sdk::Connection::connect(aegis_sdk::AegisConfig::with_servers(nats.url()))
        .await
        .unwrap();
    let opts = aegis_sdk::rpc::CallOptions::timeout(std::time::Duration::from_secs(3));
    let (rpc, body) = (client.rpc(), json!({"n": 1}));
    let call = rpc.call_with::<_, Value>("pricing-service", "echo", &body, &opts);
    let answer_again = async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| common::reload_as(&nats, &base));
    };
    let (reply, ()) = tokio::join!(call, answer_again);
    let reply = reply.expect("served once JetStream answers again");
    assert_eq!(reply.value, json!({"n": 1}));
}

/// An instance of `flaky-service` whose `work` answers SERVICE_UNAVAILABLE
/// (as a service does whose store is briefly out) while `unavailable`
/// says so, counting every run in `runs`.
async fn flaky_instance(
    conn: &Connection,
    id: &str,
    unavailable: Arc<AtomicUsize>,
    runs: Arc<AtomicUsize>,
) -> Service {
    conn.service("flaky-service", "1.0.0")
        .instance_id(id)
        .handler_with_context("work", move |ctx: RequestContext, _: Value| {
            let (unavailable, runs) = (unavailable.clone(), runs.clone());
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                let left = unavailable.load(Ordering::SeqCst);
                if left > 0 {
                    // usize::MAX: unavailable for good.
                    if left != usize::MAX {
                        unavailable.store(left - 1, Ordering::SeqCst);
                    }
                    return Err(WireError::service_unavailable("the store is out; retry"));
                }
                Ok::<_, WireError>(ctx.instance_id.to_string())
            }
        })
        .start()
        .await
        .expect("instance starts")
}

fn idempotent_within(timeout: Duration) -> CallOptions {
    CallOptions {
        timeout: Some(timeout),
        idempotent: true,
        ..Default::default()
    }
}

async fn work(conn: &Connection, opts: &CallOptions) -> Result<String, RpcError> {
    conn.rpc()
        .call_with::<_, String>("flaky-service", "work", &json!({}), opts)
        .await
        .map(|reply| reply.value)
}

/// An instance that answers "unavailable; retry" ran nothing an idempotent
/// call cannot repeat: the call asks it again after a pause, within its
/// deadline, rather than hand the caller an error a moment before the
/// instance could serve. Another call gets the answer as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_answered_unavailable_asks_again_within_its_deadline() {
    let nats = server();
    let (unavailable, runs) = (Arc::new(AtomicUsize::new(1)), Arc::default());
    let server_conn = connect(&nats.url()).await;
    let _only = flaky_instance(
        &server_conn,
        "flaky-1",
        unavailable.clone(),
        Arc::clone(&runs),
    )
    .await;
    let client = connect(&nats.url()).await;
    wait_selectable(&client, "flaky-service", 1).await;

    let once = CallOptions::timeout(Duration::from_secs(5));
    let err = work(&client, &once).await.unwrap_err();
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err:?}");
    assert!(err.to_string().contains("the store is out"), "{err}");
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a call that is not idempotent runs once"
    );

    runs.store(0, Ordering::SeqCst);
    unavailable.store(2, Ordering::SeqCst);
    let served = work(&client, &idempotent_within(Duration::from_secs(5)))
        .await
        .expect("served once the instance can");
    assert_eq!(served, "flaky-1");
    assert_eq!(runs.load(Ordering::SeqCst), 3);

    // For good: the instance's own answer, by the deadline.
    runs.store(0, Ordering::SeqCst);
    unavailable.store(usize::MAX, Ordering::SeqCst);
    let started = Instant::now();
    let err = work(&client, &idempotent_within(Duration::from_secs(1)))
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(&err, RpcError::Remote { .. }) && err.code() == ErrorCode::ServiceUnavailable,
        "the instance's answer, not a timeout: {err:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "ended by its deadline: {took:?}"
    );
    let asked = runs.load(Ordering::SeqCst);
    assert!(
        (2..=8).contains(&asked),
        "asked again after pauses, not in a loop: {asked}"
    );
}

/// An instance slow to answer "unavailable; retry" (a store waiting out
/// its own timeout): the call's deadline ends an attempt after an earlier
/// one was answered. The caller learns what the instance said, not only
/// that time ran out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_cut_by_its_deadline_reports_the_answer_it_had() {
    let nats = server();
    let server_conn = connect(&nats.url()).await;
    let _slow = server_conn
        .service("slow-store-service", "1.0.0")
        .instance_id("slow-1")
        .handler("work", |_: Value| async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Err::<Value, _>(WireError::service_unavailable("the store is out; retry"))
        })
        .start()
        .await
        .expect("instance starts");
    let client = connect(&nats.url()).await;
    wait_selectable(&client, "slow-store-service", 1).await;
    let err = client
        .rpc()
        .call_with::<_, Value>(
            "slow-store-service",
            "work",
            &json!({}),
            // Answered after 0.6 s; asked again after 0.1 s; that attempt
            // is cut by the deadline at 1.5 s.
            &CallOptions {
                attempt_timeout: Some(Duration::from_secs(1)),
                ..idempotent_within(Duration::from_millis(1500))
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, RpcError::Remote { .. }) && err.code() == ErrorCode::ServiceUnavailable,
        "the instance's answer, not a timeout: {err:?}"
    );
    assert!(err.to_string().contains("the store is out"), "{err}");
}

/// With another instance to ask, an idempotent call answered "unavailable"
/// goes there at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_answered_unavailable_moves_to_another_instance() {
    let nats = server();
    let (down_runs, up_runs) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (a, b) = (connect(&nats.url()).await, connect(&nats.url()).await);
    let _down = flaky_instance(
        &a,
        "down-1",
        Arc::new(AtomicUsize::new(usize::MAX)),
        down_runs.clone(),
    )
    .await;
    let _up = flaky_instance(&b, "up-1", Arc::default(), up_runs.clone()).await;
    let client = connect(&nats.url()).await;
    wait_selectable(&client, "flaky-service", 2).await;
    for _ in 0..4 {
        let started = Instant::now();
        let served = work(&client, &idempotent_within(Duration::from_secs(5)))
            .await
            .unwrap();
        assert_eq!(served, "up-1");
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(up_runs.load(Ordering::SeqCst), 4);
    assert!(down_runs.load(Ordering::SeqCst) <= 4);
}
