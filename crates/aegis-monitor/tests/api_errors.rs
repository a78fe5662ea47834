//! The errors a client meets across routes, as a new user of the API meets
//! them: a wrong query parameter is named in `details.param`, in the
//! envelope's words, never the framework's; a definition write its
//! stream cannot take says that it was not stored and when to try again;
//! a read of a stream that does not answer says what it could not read,
//! from which stream, and when to try again.

mod common;

use std::time::Duration;

use aegis_testkit::{NatsCluster, leaders};
use axum::http::{Method, header};
use common::{ADMIN, Harness, VIEWER, call_app, new_def, req};

/// `GET path` as a viewer is 400 `BAD_REQUEST` naming `param` (and the
/// value it was given, when there was one), in our own words.
#[track_caller]
fn assert_bad_param(reply: &common::Reply, path: &str, param: &str, value: Option<&str>) {
    reply.expect(400, Some("BAD_REQUEST"));
    let details = &reply.body["error"]["details"];
    assert_eq!(details["param"], param, "{path}: {}", reply.body);
    if let Some(value) = value {
        assert_eq!(details["value"], value, "{path}: {}", reply.body);
    }
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("deserialize") && !message.contains('`'),
        "{path}: the framework's words: {message}"
    );
    assert!(message.contains(param), "{path}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_query_parameter_is_named_on_every_route() {
    let h = Harness::start().await;
    let instance = "/api/instances/order-service/order-1";
    let cases = [
        // Unknown parameters, on routes with parameters and without.
        ("/api/instances?foo=1".to_owned(), "foo", Some("1")),
        (format!("{instance}/events?foo=1"), "foo", Some("1")),
        (format!("{instance}/metrics?foo=1"), "foo", Some("1")),
        (
            "/api/leadership/order-service?foo=1".to_owned(),
            "foo",
            Some("1"),
        ),
        ("/api/dead-letters?foo=1".to_owned(), "foo", Some("1")),
        ("/api/stream?foo=1".to_owned(), "foo", Some("1")),
        ("/api/services?owner=me".to_owned(), "owner", Some("me")),
        ("/api/instances/health/summary?x".to_owned(), "x", None),
        // Values that are not what the parameter takes.
        ("/api/instances?limit=-1".to_owned(), "limit", Some("-1")),
        ("/api/instances?limit=ten".to_owned(), "limit", Some("ten")),
        (format!("{instance}/events?limit=-1"), "limit", Some("-1")),
        (format!("{instance}/events?limit=1.5"), "limit", Some("1.5")),
        (format!("{instance}/metrics?limit=x"), "limit", Some("x")),
        ("/api/dead-letters?limit=-5".to_owned(), "limit", Some("-5")),
        // A parameter given twice (the value is the repeated one).
        (
            "/api/instances?limit=1&limit=2".to_owned(),
            "limit",
            Some("2"),
        ),
        (
            format!("{instance}/events?limit=1&limit=2"),
            "limit",
            Some("2"),
        ),
    ];
    for (path, param, value) in cases {
        let reply = h.get(&path, Some(VIEWER)).await;
        assert_bad_param(&reply, &path, param, value);
    }
    // Every `limit` out of its range is said the one way, with the value,
    // whether it is a whole number or not.
    let limits = [
        ("/api/instances?limit=0".to_owned(), "0", 1000),
        ("/api/instances?limit=-1".to_owned(), "-1", 1000),
        ("/api/instances?limit=1001".to_owned(), "1001", 1000),
        (format!("{instance}/events?limit=0"), "0", 1000),
        (format!("{instance}/events?limit=1001"), "1001", 1000),
        (format!("{instance}/events?limit=ten"), "ten", 1000),
        (format!("{instance}/metrics?limit=0"), "0", 2000),
        (format!("{instance}/metrics?limit=2001"), "2001", 2000),
        ("/api/dead-letters?limit=0".to_owned(), "0", 1000),
        ("/api/dead-letters?limit=1001".to_owned(), "1001", 1000),
    ];
    for (path, value, max) in limits {
        let reply = h.get(&path, Some(VIEWER)).await;
        assert_bad_param(&reply, &path, "limit", Some(value));
        let reason = format!("must be a whole number from 1 to {max}");
        assert_eq!(
            reply.body["error"],
            serde_json::json!({
                "code": "BAD_REQUEST",
                "message": format!("invalid limit: {reason}"),
                "details": { "param": "limit", "value": value, "reason": reason },
            }),
            "{path}"
        );
    }
    let repeated = h.get("/api/instances?limit=1&limit=2", Some(VIEWER)).await;
    assert_eq!(
        repeated.body["error"]["details"],
        serde_json::json!({ "param": "limit", "value": "2", "reason": "given more than once" }),
    );
    // What they take is still taken.
    for path in [
        "/api/instances?limit=5&service=order-service".to_owned(),
        format!("{instance}/events?limit=5"),
        "/api/dead-letters?limit=5".to_owned(),
        "/api/services".to_owned(),
    ] {
        h.get(&path, Some(VIEWER)).await.expect(200, None);
    }
}

/// A node dies while it leads the definitions bucket's stream: for the
/// 4-9 s JetStream takes to elect another leader, no write can be stored.
/// The store keeps trying until shortly before the request's deadline
/// (`tests/definitions_leader_loss.rs` shows writes landing once the
/// stream has a leader again); a request whose deadline is shorter than
/// the election gets 503, which says what is true and what to do: which
/// definition, when to try again (`Retry-After`), and whether the write
/// was stored when that is known (`details.stored: false`: nothing was
/// sent, or nobody took it); not that "the message bus is not available"
/// (the monitor's connection is fine all along).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_definition_write_its_stream_cannot_take_says_it_was_not_stored() {
    let mut cluster = NatsCluster::start(3).expect("start a 3-node cluster");
    cluster
        .wait_ready(Duration::from_secs(30))
        .expect("the cluster is ready");
    let urls = cluster.urls();
    // The monitor on node 0, answering within 2 s; node 1 leads the
    // bucket's stream, and dies.
    let mut config = common::config(&urls[0]);
    config.nats.nats.replicas = 3;
    config.request_timeout = Duration::from_secs(2);
    let state = aegis_monitor::AppState::start(config, tokio_util::sync::CancellationToken::new())
        .await
        .expect("start the monitor");
    let app = aegis_monitor::router(state);
    let setup = common::connect(&urls[0]).await;
    let doomed = cluster.nodes()[1].server_name().to_owned();
    leaders::lead_on(setup.client(), "KV_service_definitions", &doomed).await;
    cluster.kill_node(1);

    let r = call_app(
        &app,
        req(
            Method::POST,
            "/api/services",
            Some(ADMIN),
            Some(new_def("late-service")),
        ),
    )
    .await;
    r.expect(503, Some("SERVICE_UNAVAILABLE"));
    let details = &r.body["error"]["details"];
    assert_eq!(details["service"], "late-service", "{}", r.body);
    assert!(
        details.get("stored").is_none_or(|stored| stored == false),
        "{}",
        r.body
    );
    assert!(
        r.headers.contains_key(header::RETRY_AFTER),
        "Retry-After: {:?}",
        r.headers
    );
}

/// NATS goes away: each read of a stream (an instance's events and
/// metrics, a service's leadership history, the dead letters) is 503
/// `SERVICE_UNAVAILABLE` saying what could not be read and from which
/// stream (`details.stream`), with `Retry-After`; not that "the message
/// bus is not available".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_read_nats_cannot_answer_says_what_and_when_to_try_again() {
    let mut h = Harness::start().await;
    let instance = "/api/instances/order-service/order-1";
    let reads = [
        (format!("{instance}/events"), "events", "AEGIS_LOG"),
        (format!("{instance}/metrics"), "metrics", "AEGIS_METRICS"),
        (
            "/api/leadership/order-service".to_owned(),
            "leadership",
            "AEGIS_LOG",
        ),
        (
            "/api/dead-letters".to_owned(),
            "dead letters",
            "DEAD_LETTER",
        ),
    ];
    for (path, _, _) in &reads {
        h.get(path, Some(VIEWER)).await.expect(200, None);
    }
    h.nats.kill();
    for (path, what, stream) in &reads {
        let r = h.get(path, Some(VIEWER)).await;
        r.expect(503, Some("SERVICE_UNAVAILABLE"));
        assert_eq!(
            r.body["error"]["details"]["stream"], *stream,
            "{path}: {}",
            r.body
        );
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(what) && message.contains(stream) && message.contains("try again"),
            "{path}: {message}"
        );
        assert!(
            r.headers.contains_key(header::RETRY_AFTER),
            "{path}: Retry-After: {:?}",
            r.headers
        );
    }
}
