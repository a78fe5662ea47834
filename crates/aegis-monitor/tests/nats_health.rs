//! `GET /api/nats`: the truth about NATS itself. On a 3-node cluster with
//! R3 buckets the picture shows every server up and every stream led; when
//! the node leading a chosen stream is SIGKILLed (not the meta leader, not
//! the monitor's own node), it shows that server down and that stream no
//! longer led by it — within 2 s with the system account (the stream
//! without a leader then: JetStream elects one 4-9 s after the kill),
//! later without it (the stream listing waits 4 s for a leader that does
//! not answer; by then the stream may have its new leader, and is shown
//! with it at once) — and then the stream's new leader once JetStream
//! elects one.
//!
//! The measured times are printed (`--nocapture`); the bounds asserted are
//! generous apart from the 2 s the dashboard is built on.

mod common;

use std::time::{Duration, Instant};

use aegis_monitor::AppState;
use aegis_testkit::{NatsCluster, leaders};
use axum::http::{Method, StatusCode};
use common::{VIEWER, call_app, req};
use serde_json::Value;

/// The bucket the tests kill a leader of (an order service's own bucket).
const BUCKET: &str = "orders";
const STREAM: &str = "KV_orders";

/// What a viewer gets from `GET /api/nats`.
async fn picture(app: &axum::Router) -> Value {
    let reply = call_app(app, req(Method::GET, "/api/nats", Some(VIEWER), None)).await;
    assert_eq!(reply.status, StatusCode::OK, "body: {}", reply.body);
    reply.body
}

fn server<'a>(picture: &'a Value, name: &str) -> Option<&'a Value> {
    picture["servers"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn stream<'a>(picture: &'a Value, name: &str) -> Option<&'a Value> {
    picture["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == name)
}

fn names(list: &Value) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|e| e["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts the contract's shape: every field there, lists sorted by name.
#[track_caller]
fn assert_shape(p: &Value) {
    assert!(p["asOf"].as_str().is_some_and(|s| s.ends_with('Z')), "{p}");
    assert_eq!(p["checkEveryMs"], 1000, "{p}");
    assert!(
        ["ok", "no_meta_leader", "unreachable"].contains(&p["jetstream"].as_str().unwrap_or("")),
        "{p}"
    );
    for (list, fields) in [
        ("servers", &["name", "up", "since"][..]),
        (
            "streams",
            &["name", "replicas", "leader", "offline", "since"][..],
        ),
    ] {
        let entries = p[list].as_array().unwrap_or_else(|| panic!("{list}: {p}"));
        for e in entries {
            let keys: Vec<&String> = e.as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), fields.len(), "{list} entry {e}");
            for f in fields {
                assert!(e.get(*f).is_some(), "{list} entry lacks {f}: {e}");
            }
        }
        let mut sorted = names(&p[list]);
        sorted.sort();
        assert_eq!(names(&p[list]), sorted, "{list} sorted by name");
    }
}

/// Every server up and every stream led, as far as the picture says.
fn all_well(p: &Value, servers: usize) -> bool {
    let up = p["servers"]
        .as_array()
        .is_some_and(|s| s.len() == servers && s.iter().all(|s| s["up"] == true));
    let led = p["streams"]
        .as_array()
        .is_some_and(|s| !s.is_empty() && s.iter().all(|s| s["leader"].is_string()));
    p["jetstream"] == "ok" && up && led
}

/// A 3-node cluster, a monitor on it (with system account access when
/// `system`), an R3 bucket `orders` led by a node that is neither the
/// JetStream meta leader nor the monitor's; that node's index.
struct Scene {
    cluster: NatsCluster,
    app: axum::Router,
    client: async_nats::Client,
    victim: usize,
    _state: AppState,
}

async fn scene(system: bool) -> Scene {
    let cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    let system = system.then(|| common::system_account(cluster.node(0)));
    let (state, app) = common::start_r3(&cluster.url(), system).await;
    let client = async_nats::connect(cluster.urls())
        .await
        .expect("connect to the cluster");
    async_nats::jetstream::new(client.clone())
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: BUCKET.to_owned(),
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .expect("create the R3 bucket");
    let monitor_node = state.conn().client().server_info().server_name;
    let meta = cluster
        .meta_leader()
        .expect("the cluster has a meta leader");
    let victim = (0..3)
        .find(|&i| i != meta && cluster.node(i).server_name() != monitor_node)
        .expect("a node that is neither the meta leader nor the monitor's");
    let name = cluster.node(victim).server_name().to_owned();
    leaders::lead_on(&client, STREAM, &name).await;
    eprintln!(
        "monitor on {monitor_node}, meta leader n{}, {STREAM} led by {name}",
        meta + 1
    );
    Scene {
        cluster,
        app,
        client,
        victim,
        _state: state,
    }
}

/// Waits until the picture shows all three servers up, every stream led
/// and the bucket's stream led by the victim.
async fn until_all_well(s: &Scene) -> Value {
    let victim = s.cluster.node(s.victim).server_name();
    aegis_testkit::wait::until_some(
        Duration::from_secs(15),
        "every server up, every stream led, the bucket by the victim",
        || async {
            let p = picture(&s.app).await;
            let led = stream(&p, STREAM).is_some_and(|st| st["leader"] == victim);
            (all_well(&p, 3) && led).then_some(p)
        },
    )
    .await
}

/// Kills the scene's victim and follows the picture: returns how long it
/// took to show the server down, the stream no longer led by it, and the stream
/// led again (by another node).
async fn kill_and_follow(s: &mut Scene, leaderless_within: Duration) -> [Duration; 3] {
    let name = s.cluster.node(s.victim).server_name().to_owned();
    let before = picture(&s.app).await;
    assert_eq!(stream(&before, STREAM).unwrap()["leader"], name.as_str());
    eprintln!("killing {name}, leader of {STREAM}");
    s.cluster.kill_node(s.victim);
    let killed = Instant::now();
    let (mut down, mut leaderless) = (None, None);
    let mut last = Value::Null;
    while (down.is_none() || leaderless.is_none()) && killed.elapsed() < leaderless_within {
        let p = picture(&s.app).await;
        if down.is_none() && server(&p, &name).is_some_and(|v| v["up"] == false) {
            down = Some(killed.elapsed());
        }
        // Without a leader, or (the server seen down late) led by another.
        if leaderless.is_none() && stream(&p, STREAM).is_some_and(|v| v["leader"] != name.as_str())
        {
            leaderless = Some(killed.elapsed());
        }
        last = p;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (Some(down), Some(leaderless)) = (down, leaderless) else {
        panic!(
            "{leaderless_within:?} after the kill: {name} down {down:?}, {STREAM} leaderless {leaderless:?}; last picture {last}"
        );
    };
    eprintln!(
        "{name} shown down after {down:?}, {STREAM} no longer led by it after {leaderless:?}"
    );
    let p = picture(&s.app).await;
    assert_shape(&p);
    assert!(server(&p, &name).unwrap()["since"].is_string(), "{p}");
    let led_again = aegis_testkit::wait::until_some(
        Duration::from_secs(15),
        "the stream led again by another node",
        || async {
            let p = picture(&s.app).await;
            let st = stream(&p, STREAM)?;
            (st["leader"].is_string() && st["leader"] != name.as_str())
                .then(|| (killed.elapsed(), p))
        },
    )
    .await;
    let (elected, p) = led_again;
    let st = stream(&p, STREAM).unwrap();
    eprintln!(
        "{STREAM} shown led by {} after {elected:?}: {st}",
        st["leader"]
    );
    assert!(st["since"].is_string(), "{st}");
    assert_eq!(server(&p, &name).unwrap()["up"], false, "{p}");
    let truth = leaders::stream_leader(&s.client, STREAM).await;
    assert_eq!(truth.as_deref(), st["leader"].as_str(), "JetStream says");
    [down, leaderless, elected]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_system_account_a_dead_node_and_its_leaderless_stream_show_within_two_seconds() {
    let mut s = scene(true).await;
    let p = until_all_well(&s).await;
    assert_shape(&p);
    assert_eq!(names(&p["servers"]), ["n1", "n2", "n3"], "{p}");
    let st = stream(&p, STREAM).expect("the bucket's stream is listed");
    assert_eq!(st["replicas"], 3, "{st}");
    assert_eq!(st["offline"], serde_json::json!([]), "{st}");
    for name in ["KV_service_registry", "KV_service_definitions", "AEGIS_LOG"] {
        assert!(stream(&p, name).is_some(), "{name} listed: {p}");
    }
    assert!(
        p["servers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["since"].is_null()),
        "always up since the monitor started: {p}"
    );

    let [down, leaderless, _] = kill_and_follow(&mut s, Duration::from_secs(2)).await;
    assert!(down < Duration::from_secs(2), "down after {down:?}");
    assert!(
        leaderless < Duration::from_secs(2),
        "leaderless after {leaderless:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_system_account_the_stream_listing_shows_the_same_later() {
    let mut s = scene(false).await;
    let p = until_all_well(&s).await;
    assert_shape(&p);
    assert_eq!(names(&p["servers"]), ["n1", "n2", "n3"], "{p}");
    // The listing waits 4 s for a leader that does not answer, and a peer
    // is taken for dead after 3 s of silence: generous here, measured above.
    kill_and_follow(&mut s, Duration::from_secs(15)).await;
}

#[tokio::test]
async fn a_single_server_is_one_server_leading_every_stream() {
    for system in [false, true] {
        let h = if system {
            common::Harness::start_with_system_account().await
        } else {
            common::Harness::start().await
        };
        let name = h.nats.server_name().to_owned();
        let p = aegis_testkit::wait::until_some(
            Duration::from_secs(10),
            "the picture of a single server",
            || async {
                let p = picture(&h.app).await;
                all_well(&p, 1).then_some(p)
            },
        )
        .await;
        assert_shape(&p);
        assert_eq!(names(&p["servers"]), std::slice::from_ref(&name), "{p}");
        for st in p["streams"].as_array().unwrap() {
            assert_eq!(st["replicas"], 1, "{st}");
            assert_eq!(st["leader"], name.as_str(), "{st}");
            assert!(st["since"].is_null(), "{st}");
        }
        assert!(stream(&p, "KV_service_definitions").is_some(), "{p}");
    }
}

#[tokio::test]
async fn the_picture_needs_a_viewer_or_an_admin() {
    let h = common::Harness::start().await;
    h.get("/api/nats", None)
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.get("/api/nats", Some(common::ADMIN))
        .await
        .expect(200, None);
    h.get("/api/nats", Some(VIEWER)).await.expect(200, None);
}
