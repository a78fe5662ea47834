//! The definitions bucket's stream loses its leader, and the API still
//! does what it was asked, once, within the request's deadline.
//!
//! On a 3-node cluster (R3 buckets) the monitor is connected to a node
//! that does not lead `KV_service_definitions`. When the leading node is
//! SIGKILLed, the followers wait 4–9 s before they elect a new leader; no
//! write lands meanwhile, and a read may find nobody to answer it. When
//! the leading node is paused (SIGSTOP) instead, a write sent to it is
//! neither refused nor acknowledged: its outcome is unknown until the node
//! goes on or another leads the stream.
//!
//! Reads and writes sent in those windows must be answered as soon as the
//! stream can answer them (within the request's deadline, 15 s here), and
//! no write may land twice: the audit trail (`/history`) shows each change
//! once.

mod common;

use std::time::{Duration, Instant};

use aegis_sdk::Connection;
use aegis_testkit::{NatsCluster, leaders};
use axum::{Router, http::Method};
use common::{ADMIN, Reply, call_app, connect_r3, req};
use serde_json::{Value, json};

const STREAM: &str = "KV_service_definitions";

/// Where the monitor is connected when the node leading the stream fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Monitor {
    /// On node 0 only: it keeps its connection.
    Elsewhere,
    /// On the failing node (the others known): it reconnects to another.
    OnTheFailingNode,
}

/// A 3-node cluster, a monitor, a plain connection to every node, and
/// `KV_service_definitions` led by the node a test kills or pauses (its
/// index is returned).
async fn cluster_with_monitor(monitor: Monitor) -> (NatsCluster, Router, Connection, usize) {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    cluster
        .wait_ready(Duration::from_secs(30))
        .expect("the cluster is ready");
    let urls = cluster.urls();
    let url = match monitor {
        Monitor::Elsewhere => urls[0].clone(),
        Monitor::OnTheFailingNode => urls.join(","),
    };
    let (state, app) = common::start_r3(&url, None).await;
    let doomed = match monitor {
        Monitor::Elsewhere => 1,
        Monitor::OnTheFailingNode => {
            let on = state.conn().client().server_info().server_name;
            cluster
                .nodes()
                .iter()
                .position(|n| n.server_name() == on)
                .expect("the monitor's node is one of the cluster's")
        }
    };
    let setup = connect_r3(&urls).await;
    let name = cluster.nodes()[doomed].server_name().to_owned();
    leaders::lead_on(setup.client(), STREAM, &name).await;
    (cluster, app, setup, doomed)
}

/// `method path` as admin, with how long it took.
async fn timed(app: &Router, method: Method, path: &str, body: Option<Value>) -> (Reply, Duration) {
    let asked = Instant::now();
    let reply = call_app(app, req(method, path, Some(ADMIN), body)).await;
    (reply, asked.elapsed())
}

/// `order-service`'s version set to 1.1.0 if its revision is still
/// `revision` (`If-Match`), and how long the answer took.
async fn timed_update(app: &Router, revision: u64) -> (Reply, Duration) {
    let mut r = req(
        Method::PUT,
        "/api/services/order-service",
        Some(ADMIN),
        Some(json!({ "version": "1.1.0" })),
    );
    r.headers_mut()
        .insert("If-Match", format!("\"{revision}\"").parse().unwrap());
    let asked = Instant::now();
    let reply = call_app(app, r).await;
    (reply, asked.elapsed())
}

/// The operations of `name`'s audit trail, oldest first.
async fn trail(app: &Router, name: &str) -> Vec<String> {
    let r = call_app(
        app,
        req(
            Method::GET,
            &format!("/api/services/{name}/history"),
            Some(ADMIN),
            None,
        ),
    )
    .await;
    r.expect(200, None);
    r.body
        .as_array()
        .expect("a list")
        .iter()
        .map(|e| e["operation"].as_str().unwrap_or("?").to_owned())
        .collect()
}

/// The node leading the definitions stream is SIGKILLed; at once a read,
/// a create, an update (with `If-Match`) and a delete are sent. Before the
/// fix the read and the create's look-up answered 503 within milliseconds
/// and the writes gave up after 2 s, while the stream elected a new leader
/// 4–9 s after the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_sent_while_the_definitions_stream_has_no_leader_are_done_once() {
    requests_while_leaderless(Monitor::Elsewhere).await;
}

/// The same, when the monitor was connected to the node that died: it
/// reconnects to another within milliseconds, and asks again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn requests_sent_while_the_monitors_node_and_the_streams_leader_died_are_done_once() {
    requests_while_leaderless(Monitor::OnTheFailingNode).await;
}

async fn requests_while_leaderless(monitor: Monitor) {
    let (mut cluster, app, setup, doomed) = cluster_with_monitor(monitor).await;
    let created = |name: &'static str| {
        let app = app.clone();
        async move {
            let (r, _) = timed(
                &app,
                Method::POST,
                "/api/services",
                Some(common::new_def(name)),
            )
            .await;
            r.expect(201, None);
            r.etag()
        }
    };
    let order = created("order-service").await;
    created("pricing-service").await;

    eprintln!(
        "killing {}, leader of {STREAM} (monitor {monitor:?})",
        cluster.nodes()[doomed].server_name()
    );
    cluster.kill_node(doomed);
    let killed = Instant::now();
    let (read, history, create, update, delete) = tokio::join!(
        timed(&app, Method::GET, "/api/services/order-service", None),
        timed(
            &app,
            Method::GET,
            "/api/services/order-service/history",
            None
        ),
        timed(
            &app,
            Method::POST,
            "/api/services",
            Some(common::new_def("risk-service"))
        ),
        timed_update(&app, order),
        timed(&app, Method::DELETE, "/api/services/pricing-service", None),
    );
    let new_leader = leaders::stream_leader(setup.client(), STREAM).await;
    eprintln!(
        "{STREAM} led by {new_leader:?} {:?} after the kill",
        killed.elapsed()
    );
    let answers = [
        ("GET order-service", read, 200),
        ("GET order-service/history", history, 200),
        ("POST risk-service", create, 201),
        ("PUT order-service", update, 200),
        ("DELETE pricing-service", delete, 204),
    ];
    for (what, (reply, took), _) in &answers {
        eprintln!("{what}: {} after {took:?}: {}", reply.status, reply.body);
    }
    for (what, (reply, _), want) in &answers {
        assert_eq!(
            reply.status.as_u16(),
            *want,
            "{what} while {STREAM} had no leader: {}",
            reply.body
        );
    }

    // Each change stored once.
    assert_eq!(trail(&app, "risk-service").await, ["PUT"]);
    assert_eq!(trail(&app, "order-service").await, ["PUT", "PUT"]);
    assert_eq!(trail(&app, "pricing-service").await, ["PUT", "DELETE"]);
}

/// The node leading the definitions stream is paused past the
/// acknowledgement wait (5 s) while an update sent to it waits for its
/// answer, then goes on. Before the fix the API answered 503 "whether this
/// write was stored is not known" when the acknowledgement timed out,
/// though the update may land (and did) once the node went on. Now the
/// store sends the same write again (the same compare-and-set, the same
/// message id): it lands once, and the API says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_update_whose_acknowledgement_is_lost_is_stored_once_and_said_so() {
    let (mut cluster, app, _setup, doomed) = cluster_with_monitor(Monitor::Elsewhere).await;
    let (r, _) = timed(
        &app,
        Method::POST,
        "/api/services",
        Some(common::new_def("order-service")),
    )
    .await;
    r.expect(201, None);
    let revision = r.etag();

    eprintln!(
        "pausing {}, leader of {STREAM}",
        cluster.nodes()[doomed].server_name()
    );
    cluster.node_mut(doomed).pause();
    let update = tokio::spawn({
        let app = app.clone();
        async move { timed_update(&app, revision).await }
    });
    // A fault that lasts past the acknowledgement wait (5 s), not a wait
    // for a condition: the update's first attempt must time out.
    tokio::time::sleep(Duration::from_secs(6)).await;
    cluster.node_mut(doomed).resume();
    let (reply, took) = update.await.unwrap();
    eprintln!(
        "PUT answered {} after {took:?}: {}",
        reply.status, reply.body
    );
    let trail = trail(&app, "order-service").await;
    eprintln!("trail: {trail:?}");
    assert!(
        trail.len() <= 2,
        "the update stored at most once: {trail:?}"
    );
    reply.expect(200, None);
    assert_eq!(reply.body["version"], "1.1.0");
    assert_eq!(trail, ["PUT", "PUT"], "the update stored once");
}
