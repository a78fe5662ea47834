//! Writes racing on one service definition on a 3-node cluster (R3
//! bucket), as two admins saving at once on the showcase: every answer is
//! the documented one — 200/201, or 409 (404 for a delete of a gone
//! definition) — never 503, and no blind update is lost.
//!
//! A clustered stream's leader refuses a compare-and-set with 10164
//! ("wrong last sequence", constant form) while another write to the same
//! key is still being replicated; a single server never does, so the
//! single-server races of `tests/definitions.rs` cannot meet it. Before the
//! fix the monitor took 10164 for a store that takes no writes and answered
//! 503 "its stream has no leader" (the API trial: 35 of 200 blind PUTs,
//! 9 of 100 If-Match losers, 9 of 50 racing creates).

mod common;

use std::{sync::Arc, time::Duration};

use aegis_testkit::{NatsCluster, leaders};
use axum::{
    Router,
    http::{Method, header},
};
use common::{ADMIN, Reply, VIEWER, call_app, connect_r3, new_def, req};
use serde_json::{Value, json};
use tokio::sync::Barrier;

const STREAM: &str = "KV_service_definitions";
const NAME: &str = "trial-svc";
const PATH: &str = "/api/services/trial-svc";

/// A 3-node cluster and a monitor on node 0, the definitions stream led
/// by node 1 (as on the showcase, where a write crosses to the leader).
async fn cluster() -> (NatsCluster, Router) {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    cluster
        .wait_ready(Duration::from_secs(30))
        .expect("the cluster is ready");
    let urls = cluster.urls();
    let (_state, app) = common::start_r3(&urls[0], None).await;
    let setup = connect_r3(&urls).await;
    let leader = cluster.nodes()[1].server_name().to_owned();
    leaders::lead_on(setup.client(), STREAM, &leader).await;
    (cluster, app)
}

/// Sends every request at the same moment (after one barrier) and returns
/// the replies in order.
async fn at_once(app: &Router, requests: Vec<axum::http::Request<axum::body::Body>>) -> Vec<Reply> {
    let barrier = Arc::new(Barrier::new(requests.len()));
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let (app, barrier) = (app.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                call_app(&app, r).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for t in tasks {
        replies.push(t.await.expect("the request task"));
    }
    replies
}

fn put(body: Value, if_match: Option<u64>) -> axum::http::Request<axum::body::Body> {
    let mut r = req(Method::PUT, PATH, Some(ADMIN), Some(body));
    if let Some(revision) = if_match {
        r.headers_mut()
            .insert(header::IF_MATCH, format!("\"{revision}\"").parse().unwrap());
    }
    r
}

/// Each reply's status and, for an error, its code and message.
fn said(replies: &[Reply]) -> Vec<String> {
    replies
        .iter()
        .map(|r| match r.status.as_u16() {
            s @ 200..=299 => s.to_string(),
            s => format!("{s} {} {}", r.code(), r.body["error"]["message"]),
        })
        .collect()
}

fn count(replies: &[Reply], status: u16) -> usize {
    replies
        .iter()
        .filter(|r| r.status.as_u16() == status)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_writes_to_one_definition_are_answered_as_documented() {
    let (_cluster, app) = cluster().await;
    call_app(
        &app,
        req(
            Method::POST,
            "/api/services",
            Some(ADMIN),
            Some(new_def(NAME)),
        ),
    )
    .await
    .expect(201, None);

    // Blind PUTs (no If-Match), each of a different field: both are
    // answered 200, and both changes are kept.
    for round in 0..40 {
        let owner = format!("owner-{round}");
        let description = format!("description {round}");
        let replies = at_once(
            &app,
            vec![
                put(json!({ "owner": owner }), None),
                put(json!({ "description": description }), None),
            ],
        )
        .await;
        assert_eq!(
            count(&replies, 200),
            2,
            "round {round}: {:?}",
            said(&replies)
        );
        let now = call_app(&app, req(Method::GET, PATH, Some(VIEWER), None)).await;
        now.expect(200, None);
        assert_eq!(
            (&now.body["owner"], &now.body["description"]),
            (&json!(owner), &json!(description)),
            "round {round}: an update was lost"
        );
    }

    // Two PUTs with the same If-Match: one 200, the other 409.
    for round in 0..40 {
        let etag = call_app(&app, req(Method::GET, PATH, Some(VIEWER), None))
            .await
            .etag();
        let replies = at_once(
            &app,
            vec![
                put(json!({ "owner": format!("a-{round}") }), Some(etag)),
                put(json!({ "owner": format!("b-{round}") }), Some(etag)),
            ],
        )
        .await;
        assert_eq!(
            (count(&replies, 200), count(&replies, 409)),
            (1, 1),
            "round {round}: {:?}",
            said(&replies)
        );
        let loser = replies.iter().find(|r| r.status == 409).unwrap();
        assert_eq!(loser.code(), "CONCURRENT_UPDATE");
        assert_eq!(loser.body["error"]["details"]["expected"], etag);
        // The winner's change is stored, the loser's is not.
        let winner = replies.iter().find(|r| r.status == 200).unwrap();
        let now = call_app(&app, req(Method::GET, PATH, Some(VIEWER), None)).await;
        assert_eq!(now.body["owner"], winner.body["owner"], "round {round}");
        assert_eq!(now.etag(), winner.etag(), "round {round}");
    }

    // Racing creates of one new name: one 201, the rest 409; then racing
    // deletes of it: one 204, the rest 404.
    for round in 0..8 {
        let name = format!("race-c{round}");
        let replies = at_once(
            &app,
            (0..6)
                .map(|_| {
                    req(
                        Method::POST,
                        "/api/services",
                        Some(ADMIN),
                        Some(new_def(&name)),
                    )
                })
                .collect(),
        )
        .await;
        assert_eq!(
            (count(&replies, 201), count(&replies, 409)),
            (1, 5),
            "create round {round}: {:?}",
            said(&replies)
        );
        let path = format!("/api/services/{name}");
        let replies = at_once(
            &app,
            (0..6)
                .map(|_| req(Method::DELETE, &path, Some(ADMIN), None))
                .collect(),
        )
        .await;
        assert_eq!(
            (count(&replies, 204), count(&replies, 404)),
            (1, 5),
            "delete round {round}: {:?}",
            said(&replies)
        );
    }
}
