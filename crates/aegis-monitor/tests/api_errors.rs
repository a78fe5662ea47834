//! The errors a client meets across routes, as a new user of the API meets
//! them: a wrong query parameter is named in `details.param`, in the
//! envelope's words, never the framework's.

mod common;

use common::{Harness, VIEWER};

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
        // A parameter given twice.
        ("/api/instances?limit=1&limit=2".to_owned(), "limit", None),
        (format!("{instance}/events?limit=1&limit=2"), "limit", None),
    ];
    for (path, param, value) in cases {
        let reply = h.get(&path, Some(VIEWER)).await;
        assert_bad_param(&reply, &path, param, value);
    }
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
