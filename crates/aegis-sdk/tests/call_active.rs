//! `call_active` and fencing epochs against a real nats-server:
//!
//! - a reply a deposed leader sends late, stamped with its old epoch, is
//!   handed to the caller as executed by a deposed leader; only an
//!   idempotent call is retried on the new leader;
//! - the leader and its epoch come from the election key, so a forged
//!   registry record claiming a huge epoch (with a rogue responder behind
//!   it) neither receives calls nor poisons the highest epoch remembered;
//! - the highest epoch remembered does not outlive the `service_elections`
//!   bucket: a leader of a bucket created again is served;
//! - a leader that answers "unavailable; retry" is asked again by an
//!   idempotent call, within its deadline.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    contracts::{InstanceStatus, ServiceInstance},
    rpc::{CallOptions, RequestContext, RpcError, Service, WireError},
};
use async_nats::HeaderMap;
use common::{connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

type Calls = Arc<Mutex<HashMap<String, usize>>>;

async fn order_instance(url: &str, id: &str, calls: Calls) -> Service {
    let conn = connect(url).await;
    let me = id.to_owned();
    conn.service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler_with_context("place", move |ctx: RequestContext, body: Value| {
            let (calls, me) = (calls.clone(), me.clone());
            async move {
                let runs = {
                    let mut calls = calls.lock().unwrap();
                    let runs = calls.entry(me.clone()).or_default();
                    *runs += 1;
                    *runs
                };
                // Its first `unavailable_runs` runs answer as a leader whose
                // store is briefly out does.
                if body["unavailable_runs"]
                    .as_u64()
                    .is_some_and(|n| runs as u64 <= n)
                {
                    return Err(WireError::service_unavailable("the store is out; retry"));
                }
                // `sleep_only` names the one instance that sleeps.
                let sleeps = body.get("sleep_only").is_none_or(|only| *only == *me);
                let ms = if sleeps {
                    body["sleep_ms"].as_u64().unwrap_or(0)
                } else {
                    0
                };
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, WireError>(json!({"by": me, "epoch": ctx.epoch}))
            }
        })
        .start()
        .await
        .unwrap()
}

fn serving_epoch(service: &Service) -> Option<u64> {
    service.election().unwrap().leadership().serving_epoch()
}

async fn leads(service: &Service) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while serving_epoch(service).is_none() {
        assert!(
            Instant::now() < deadline,
            "{} never led",
            service.instance_id()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn place(
    client: &Connection,
    body: Value,
    opts: &CallOptions,
) -> Result<aegis_sdk::rpc::Reply<Value>, RpcError> {
    client
        .rpc()
        .call_active::<_, Value>("order-service", "default", "place", &body, opts)
        .await
}

/// A sticks the slow call, pauses past its lease, B takes over, A answers
/// late: returns (the slow call's result, A's epoch, B's epoch, calls).
async fn late_reply_from_a_deposed_leader(
    opts: CallOptions,
) -> (
    Result<aegis_sdk::rpc::Reply<Value>, RpcError>,
    u64,
    u64,
    HashMap<String, usize>,
) {
    let nats = server();
    let calls: Calls = Arc::default();
    let a = order_instance(&nats.url(), "order-a", calls.clone()).await;
    leads(&a).await;
    let b = order_instance(&nats.url(), "order-b", calls.clone()).await;
    let epoch_a = serving_epoch(&a).unwrap();
    let client = connect(&nats.url()).await;
    let slow = {
        let client = client.clone();
        tokio::spawn(async move { place(&client, json!({"sleep_ms": 1500}), &opts).await })
    };
    eventually(Duration::from_secs(5), "A runs the slow call", || {
        let calls = calls.clone();
        async move { calls.lock().unwrap().get("order-a") == Some(&1) }
    })
    .await;
    a.election().unwrap().pause_renewals(true);
    leads(&b).await;
    let epoch_b = serving_epoch(&b).unwrap();
    assert!(epoch_b > epoch_a);
    let result = slow.await.unwrap();
    let calls = calls.lock().unwrap().clone();
    b.shutdown().await.unwrap();
    a.shutdown().await.unwrap();
    (result, epoch_a, epoch_b, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_from_a_deposed_leader_is_returned_as_such_and_not_run_again() {
    let (result, epoch_a, epoch_b, calls) =
        late_reply_from_a_deposed_leader(CallOptions::timeout(Duration::from_secs(10))).await;
    let err = result.expect_err("a deposed leader's reply is not a plain success");
    let RpcError::DeposedLeader(deposed) = &err else {
        panic!("expected DeposedLeader, got {err:?}");
    };
    assert_eq!(deposed.instance_id, "order-a");
    assert_eq!(deposed.epoch, epoch_a);
    assert_eq!(deposed.current_epoch, Some(epoch_b));
    // It ran, and here is what it answered.
    let value: Value = deposed.value().unwrap();
    assert_eq!(value["by"], "order-a");
    assert_eq!(
        calls.get("order-b"),
        None,
        "a call that is not idempotent ran twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_answered_by_a_deposed_leader_is_retried_on_the_new_one() {
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(10)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let (result, _, epoch_b, calls) = late_reply_from_a_deposed_leader(opts).await;
    let reply = result.unwrap();
    assert_eq!(reply.instance_id.as_deref(), Some("order-b"));
    assert_eq!(reply.epoch, Some(epoch_b));
    assert_eq!(calls.get("order-b"), Some(&1));
}

/// An idempotent call in flight on a leader that stops answering (killed
/// or frozen) moves to the new leader as soon as the election key names
/// it, instead of waiting out its attempt timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_on_a_replaced_leader_moves_to_the_new_one_at_once() {
    let nats = server();
    let calls: Calls = Arc::default();
    let a = order_instance(&nats.url(), "order-a", calls.clone()).await;
    leads(&a).await;
    let b = order_instance(&nats.url(), "order-b", calls.clone()).await;
    let client = connect(&nats.url()).await;
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(20)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_secs(8)),
        ..Default::default()
    };
    let stuck = {
        let client = client.clone();
        // A takes it and does not answer for 10 s (as good as hung).
        let body = json!({"sleep_ms": 10_000, "sleep_only": "order-a"});
        tokio::spawn(async move { place(&client, body, &opts).await })
    };
    eventually(Duration::from_secs(5), "A runs the call", || {
        let calls = calls.clone();
        async move { calls.lock().unwrap().get("order-a") == Some(&1) }
    })
    .await;
    a.election().unwrap().pause_renewals(true);
    leads(&b).await;
    let b_leads = Instant::now();
    let reply = stuck.await.unwrap().unwrap();
    let after = b_leads.elapsed();
    assert_eq!(reply.instance_id.as_deref(), Some("order-b"));
    // Not after A's 8 s attempt timeout.
    assert!(
        after < Duration::from_secs(2),
        "the call reached the new leader late: {after:?} after it led"
    );
    assert!(
        calls.lock().unwrap().get("order-b") == Some(&1),
        "B ran it once"
    );
    b.shutdown().await.unwrap();
    drop(a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_registry_record_neither_gets_calls_nor_poisons_the_epoch() {
    let nats = server();
    let calls: Calls = Arc::default();
    let leader = order_instance(&nats.url(), "order-1", calls.clone()).await;
    leads(&leader).await;
    let epoch = serving_epoch(&leader).unwrap();

    // A rogue answers for an instance whose forged record claims to lead
    // with a huge epoch.
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let rogue_calls = Arc::new(AtomicUsize::new(0));
    let mut inbox = raw
        .subscribe("rpc.order-service.order-forged.place")
        .await
        .unwrap();
    let rogue = {
        let (raw, rogue_calls) = (raw.clone(), rogue_calls.clone());
        tokio::spawn(async move {
            while let Some(request) = inbox.next().await {
                rogue_calls.fetch_add(1, Ordering::SeqCst);
                let mut headers = HeaderMap::new();
                headers.insert("Aegis-Epoch", "1000000");
                let reply = request.reply.unwrap();
                raw.publish_with_headers(reply, headers, r#"{"by":"rogue"}"#.into())
                    .await
                    .unwrap();
            }
        })
    };
    let mut forged =
        ServiceInstance::new("order-service", "order-forged", "1.0.0", chrono::Utc::now());
    forged.status = InstanceStatus::Active;
    forged.sticky_active_group = Some("default".into());
    forged.epoch = Some(1_000_000);
    let js = async_nats::jetstream::new(raw.clone());
    js.get_key_value("service_registry")
        .await
        .unwrap()
        .put(
            "service-instances.order-service.order-forged",
            serde_json::to_vec(&forged).unwrap().into(),
        )
        .await
        .unwrap();
    let client = connect(&nats.url()).await;
    let reader = aegis_sdk::RegistryReader::start(&client).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "the forged record is visible",
        || {
            let reader = reader.clone();
            async move { reader.get("order-service", "order-forged").is_some() }
        },
    )
    .await;

    for _ in 0..5 {
        let reply = place(&client, json!({}), &CallOptions::default())
            .await
            .expect("the real leader answers");
        assert_eq!(reply.instance_id.as_deref(), Some("order-1"));
        assert_eq!(reply.epoch, Some(epoch));
        assert_eq!(reply.value["by"], "order-1");
    }
    assert_eq!(
        rogue_calls.load(Ordering::SeqCst),
        0,
        "the rogue was called"
    );
    assert_eq!(calls.lock().unwrap().get("order-1"), Some(&5));
    rogue.abort();
    leader.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_highest_epoch_seen_does_not_outlive_the_elections_bucket() {
    let nats = server();
    let calls: Calls = Arc::default();
    // Many writes first, so the first leader's epoch is high.
    let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let store = aegis_sdk::election::ensure_election_bucket(&js, 1)
        .await
        .unwrap();
    for n in 0..200u32 {
        store.put("filler", n.to_string().into()).await.unwrap();
    }
    let first = order_instance(&nats.url(), "order-1", calls.clone()).await;
    leads(&first).await;
    let client = connect(&nats.url()).await;
    let reply = place(&client, json!({}), &CallOptions::default())
        .await
        .unwrap();
    let old_epoch = reply.epoch.unwrap();
    assert!(old_epoch > 200);
    first.shutdown().await.unwrap();

    // The bucket starts over; the next leader's epoch is small.
    js.delete_stream("KV_service_elections").await.unwrap();
    let second = order_instance(&nats.url(), "order-2", calls.clone()).await;
    leads(&second).await;
    let new_epoch = serving_epoch(&second).unwrap();
    assert!(new_epoch < old_epoch);
    let reply = place(
        &client,
        json!({}),
        &CallOptions::timeout(Duration::from_secs(15)),
    )
    .await
    .expect("the new bucket's leader is served");
    assert_eq!(reply.instance_id.as_deref(), Some("order-2"));
    assert_eq!(reply.epoch, Some(new_epoch));
    second.shutdown().await.unwrap();
}

/// A new connection's election view whose first JetStream requests are
/// lost (as those sent while a NATS node's death leaves the bucket's
/// stream without a leader: never answered, even once the leader is back)
/// loads as soon as JetStream answers again, not after a request's whole
/// timeout. Seen after a NATS node kill: an `aegis call --active` failed
/// with "the election keys did not load within 3s", and the next one, a
/// moment later, loaded them in 33 ms. Here subject mappings in the
/// clients' account (`mappings`, the inside of a `mappings: { }` block)
/// send the requests where nothing answers, and are taken away half a
/// second into the call; `probe` is one of those subjects.
async fn call_active_while_requests_are_lost(mappings: &str, probe: &str) {
    let nats = server();
    let leader = order_instance(&nats.url(), "order-1", Calls::default()).await;
    leads(&leader).await;

    let base = common::lose_requests(&nats, mappings, probe).await;

    // The default request timeout, 5 s: longer than the call's 3 s.
    let client = Connection::connect(aegis_sdk::AegisConfig::with_servers(nats.url()))
        .await
        .unwrap();
    let opts = CallOptions::timeout(Duration::from_secs(3));
    let call = place(&client, json!({}), &opts);
    let answer_again = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        tokio::task::block_in_place(|| common::reload_as(&nats, &base));
    };
    let (reply, ()) = tokio::join!(call, answer_again);
    let reply = reply.expect("served once JetStream answers again");
    assert_eq!(reply.instance_id.as_deref(), Some("order-1"));
    leader.shutdown().await.unwrap();
}

/// The bucket's lookup is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_view_whose_bucket_lookup_is_lost_loads_once_jetstream_answers() {
    call_active_while_requests_are_lost(
        r#""$JS.API.STREAM.INFO.KV_service_elections": "lost.stream.info""#,
        "$JS.API.STREAM.INFO.KV_service_elections",
    )
    .await;
}

/// The bucket is found, but the watch's consumer creation is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_view_whose_watch_creation_is_lost_loads_once_jetstream_answers() {
    call_active_while_requests_are_lost(
        r#""$JS.API.CONSUMER.CREATE.KV_service_elections": "lost.create", "$JS.API.CONSUMER.CREATE.KV_service_elections.>": "lost.create.>""#,
        "$JS.API.CONSUMER.CREATE.KV_service_elections.x.y",
    )
    .await;
}

/// A leader whose store is briefly out answers SERVICE_UNAVAILABLE (the
/// order service after a NATS node dies, its KV write unconfirmed): an
/// idempotent call asks it again after a pause and is served; a call that
/// is not idempotent gets the answer as it is, having run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_answered_unavailable_by_the_leader_asks_it_again() {
    let nats = server();
    let calls: Calls = Arc::default();
    let leader = order_instance(&nats.url(), "order-1", calls.clone()).await;
    leads(&leader).await;
    let client = connect(&nats.url()).await;

    let once = CallOptions::timeout(Duration::from_secs(5));
    let err = place(&client, json!({"unavailable_runs": 1}), &once)
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        aegis_sdk::rpc::ErrorCode::ServiceUnavailable,
        "{err:?}"
    );
    assert_eq!(calls.lock().unwrap().get("order-1"), Some(&1));

    calls.lock().unwrap().clear();
    let retried = CallOptions::timeout(Duration::from_secs(5)).idempotent();
    let reply = place(&client, json!({"unavailable_runs": 2}), &retried)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "served once the leader can: {e:?} after {:?}",
                calls.lock().unwrap()
            )
        });
    assert_eq!(reply.instance_id.as_deref(), Some("order-1"));
    assert_eq!(calls.lock().unwrap().get("order-1"), Some(&3));
    leader.shutdown().await.unwrap();
}
