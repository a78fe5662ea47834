//! `GET /api/nats` after a node loss: each stream is shown led again as
//! soon as it has a new leader, and the all-clear ("every stream led")
//! comes within about a second of the last one getting one — not when the
//! next stream listing returns (the meta leader answers a listing taken
//! while any stream has no leader only after its 4 s wait).
//!
//! On a 3-node cluster the node leading several streams (neither the meta
//! leader nor the monitor's own node) is SIGKILLed. The test asks each of
//! those streams for its leader itself (`$JS.API.STREAM.INFO`, a request
//! every 50 ms, each answered at once by a stream that has a leader) and
//! follows the monitor's picture meanwhile. The measured times are printed
//! (`--nocapture`).

mod common;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_testkit::{NatsCluster, leaders};
use axum::http::{Method, StatusCode};
use common::{VIEWER, call_app, req};
use serde_json::Value;

/// The buckets the test makes (besides the monitor's own), all led by the
/// node it kills.
const BUCKETS: [&str; 3] = ["orders", "positions", "quotes"];
/// Most the all-clear may lag the last stream's new leader.
const LAG: Duration = Duration::from_millis(1500);
/// How much earlier than the test's own sighting the picture may say a
/// stream is led (the test asks every 50 ms): more would be a false
/// all-clear.
const EARLY: Duration = Duration::from_millis(250);

async fn picture(app: &axum::Router) -> Value {
    let reply = call_app(app, req(Method::GET, "/api/nats", Some(VIEWER), None)).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    reply.body
}

/// The leader the stream's own answer names, if it names one.
async fn leader_of(client: &async_nats::Client, stream: &str) -> Option<String> {
    let answer = client
        .send_request(
            format!("$JS.API.STREAM.INFO.{stream}"),
            async_nats::Request::new()
                .payload("".into())
                .timeout(Some(Duration::from_millis(500))),
        )
        .await
        .ok()?;
    let body: Value = serde_json::from_slice(&answer.payload).ok()?;
    body["cluster"]["leader"]
        .as_str()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
}

/// The streams the picture shows without a leader (or led by `dead`).
fn leaderless(p: &Value, dead: &str) -> Vec<String> {
    p["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter(|s| !s["leader"].is_string() || s["leader"] == dead)
                .map(|s| s["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_stream_is_shown_led_again_within_a_second_and_a_half_of_its_new_leader() {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    let system = common::system_account(cluster.node(0));
    let (state, app) = common::start_r3(&cluster.url(), Some(system)).await;
    let client = async_nats::connect(cluster.urls())
        .await
        .expect("connect to the cluster");
    let js = async_nats::jetstream::new(client.clone());
    for bucket in BUCKETS {
        js.create_key_value(async_nats::jetstream::kv::Config {
            bucket: bucket.to_owned(),
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("create an R3 bucket");
    }
    let monitor_node = state.conn().client().server_info().server_name;
    let meta = cluster.meta_leader().expect("a meta leader");
    let victim = (0..3)
        .find(|&i| i != meta && cluster.node(i).server_name() != monitor_node)
        .expect("a node that is neither the meta leader nor the monitor's");
    let dead = cluster.node(victim).server_name().to_owned();
    for bucket in BUCKETS {
        leaders::lead_on(&client, &format!("KV_{bucket}"), &dead).await;
    }
    // Every stream the picture lists, and led, before the kill.
    let before = aegis_testkit::wait::until_some(
        Duration::from_secs(20),
        "every stream listed and led, the test's by the victim",
        || async {
            let p = picture(&app).await;
            let streams = p["streams"].as_array()?;
            let ours = BUCKETS.iter().all(|b| {
                streams
                    .iter()
                    .any(|s| s["name"] == format!("KV_{b}") && s["leader"] == dead.as_str())
            });
            (ours && leaderless(&p, "").is_empty()).then_some(p)
        },
    )
    .await;
    let mut led_by_victim = Vec::new();
    for s in before["streams"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap().to_owned();
        if leaders::stream_leader(&client, &name).await.as_deref() == Some(dead.as_str()) {
            led_by_victim.push(name);
        }
    }
    eprintln!(
        "monitor on {monitor_node}, meta leader n{}; killing {dead}, leader of {led_by_victim:?}",
        meta + 1
    );

    // The test's own eyes: a client on the nodes that stay up.
    let truth_client = async_nats::connect(cluster.urls_except(victim))
        .await
        .expect("connect to the surviving nodes");
    cluster.kill_node(victim);
    let killed = Instant::now();

    // When each stream first named a leader other than the dead node.
    let led_again: Arc<Mutex<BTreeMap<String, Duration>>> = Arc::default();
    let mut askers = Vec::new();
    for name in &led_by_victim {
        let (client, name, dead, led_again) = (
            truth_client.clone(),
            name.clone(),
            dead.clone(),
            led_again.clone(),
        );
        askers.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(50));
            loop {
                tick.tick().await;
                if led_again.lock().unwrap().contains_key(&name) {
                    return;
                }
                let (client, name, dead, led_again) = (
                    client.clone(),
                    name.clone(),
                    dead.clone(),
                    led_again.clone(),
                );
                tokio::spawn(async move {
                    if leader_of(&client, &name)
                        .await
                        .is_some_and(|leader| leader != dead)
                    {
                        led_again
                            .lock()
                            .unwrap()
                            .entry(name)
                            .or_insert_with(|| killed.elapsed());
                    }
                });
            }
        }));
    }

    // The picture, every 20 ms: when it first showed a stream without a
    // leader, and when after that it first showed every stream led.
    let mut shown_leaderless = None;
    let mut shown_led: BTreeMap<String, Duration> = BTreeMap::new();
    let mut all_clear = None;
    let mut last = Value::Null;
    while killed.elapsed() < Duration::from_secs(30) {
        let p = picture(&app).await;
        let at = killed.elapsed();
        let missing = leaderless(&p, &dead);
        if !missing.is_empty() && shown_leaderless.is_none() {
            shown_leaderless = Some(at);
        }
        if shown_leaderless.is_some() {
            for name in &led_by_victim {
                if !missing.contains(name) {
                    shown_led.entry(name.clone()).or_insert(at);
                }
            }
            if missing.is_empty() {
                all_clear = Some(at);
                last = p;
                break;
            }
        }
        last = p;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the askers see every stream led too.
    aegis_testkit::wait::until_some(
        Duration::from_secs(20),
        "every stream the dead node led named a new leader",
        || async { (led_again.lock().unwrap().len() == led_by_victim.len()).then_some(()) },
    )
    .await;
    for a in askers {
        a.abort();
    }
    let truth = led_again.lock().unwrap().clone();
    eprintln!("new leaders named (since the kill): {truth:?}");
    eprintln!("shown led (since the kill): {shown_led:?}");
    eprintln!("shown leaderless from {shown_leaderless:?}, all clear at {all_clear:?}");
    let shown_leaderless =
        shown_leaderless.unwrap_or_else(|| panic!("never shown a stream without a leader: {last}"));
    let all_clear = all_clear.unwrap_or_else(|| panic!("no all-clear within 30 s: {last}"));
    let last_led = *truth.values().max().expect("the dead node led streams");
    assert!(
        shown_leaderless < last_led,
        "shown leaderless at {shown_leaderless:?}, after the last stream was led again at {last_led:?}"
    );
    // Never a false all-clear: not before the last stream had a leader.
    assert!(
        all_clear + EARLY >= last_led,
        "all-clear at {all_clear:?}, but the last stream named a new leader at {last_led:?}"
    );
    assert!(
        all_clear <= last_led + LAG,
        "all-clear at {all_clear:?}, {:?} after the last stream named a new leader ({last_led:?}): {last}",
        all_clear.saturating_sub(last_led)
    );
    // And each stream on its own, not only once all are back.
    for (name, led) in &truth {
        let shown = shown_led[name];
        assert!(
            shown + EARLY >= *led && shown <= *led + LAG,
            "{name}: new leader named at {led:?}, shown led at {shown:?}"
        );
    }
}
