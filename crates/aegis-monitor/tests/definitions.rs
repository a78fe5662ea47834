//! Service definitions against a real nats-server: every route and code,
//! racing creates, optimistic concurrency, the audit trail, validation edge
//! cases and malformed or oversized bodies.

mod common;

use std::time::Duration;

use aegis_contracts::subjects::DEFINITIONS_BUCKET;
use axum::http::{Method, header};
use common::{ADMIN, Harness, VIEWER, new_def, raw, req};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_read_update_delete() {
    let h = Harness::start().await;
    h.get("/api/services", Some(VIEWER)).await.expect(200, None);
    assert_eq!(h.get("/api/services", Some(VIEWER)).await.body, json!([]));

    // Create: 201, Location, ETag, server-set equal timestamps.
    let created = h
        .admin(
            Method::POST,
            "/api/services",
            Some(new_def("order-service")),
        )
        .await;
    created.expect(201, None);
    assert_eq!(
        created.headers[header::LOCATION],
        "/api/services/order-service"
    );
    let rev1 = created.etag();
    let def = &created.body;
    assert_eq!(def["service_name"], "order-service");
    assert_eq!(def["owner"], "trading-team");
    assert_eq!(def["created_at"], def["updated_at"]);
    let created_at = def["created_at"].as_str().unwrap().to_owned();
    assert!(created_at.ends_with('Z'), "{created_at}");
    chrono::DateTime::parse_from_rfc3339(&created_at).unwrap();

    // Read back, list (read-your-writes), revision.
    let got = h.get("/api/services/order-service", Some(VIEWER)).await;
    got.expect(200, None);
    assert_eq!(&got.body, def);
    assert_eq!(got.etag(), rev1);
    let list = h.get("/api/services", Some(VIEWER)).await;
    assert_eq!(list.body, json!([def]));
    let rev = h
        .get("/api/services/order-service/revision", Some(VIEWER))
        .await;
    rev.expect(200, None);
    assert_eq!(
        rev.body,
        json!({"service": "order-service", "revision": rev1})
    );

    // Update: merged, created_at kept, updated_at advanced.
    let updated = h
        .admin(
            Method::PUT,
            "/api/services/order-service",
            Some(json!({"version": "1.1.0", "description": "Orders, v1.1"})),
        )
        .await;
    updated.expect(200, None);
    let rev2 = updated.etag();
    assert!(rev2 > rev1);
    assert_eq!(updated.body["version"], "1.1.0");
    assert_eq!(updated.body["description"], "Orders, v1.1");
    assert_eq!(updated.body["owner"], "trading-team");
    assert_eq!(updated.body["created_at"], created_at.as_str());
    assert!(updated.body["updated_at"].as_str().unwrap() > created_at.as_str());
    assert_eq!(
        h.get("/api/services", Some(VIEWER)).await.body[0]["version"],
        "1.1.0"
    );

    // Delete: 204, then 404 everywhere, and gone from the list.
    h.admin(Method::DELETE, "/api/services/order-service", None)
        .await
        .expect(204, None);
    h.get("/api/services/order-service", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    h.get("/api/services/order-service/revision", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    assert_eq!(h.get("/api/services", Some(VIEWER)).await.body, json!([]));

    // A deleted name can be created again.
    h.admin(
        Method::POST,
        "/api/services",
        Some(new_def("order-service")),
    )
    .await
    .expect(201, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_found_and_conflict_codes() {
    let h = Harness::start().await;
    for (method, body) in [
        (Method::GET, None),
        (Method::PUT, Some(json!({"owner": "x"}))),
        (Method::DELETE, None),
    ] {
        h.admin(method.clone(), "/api/services/ghost-service", body)
            .await
            .expect(404, Some("SERVICE_NOT_FOUND"));
    }
    h.get("/api/services/ghost-service/history", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    // Names that cannot exist are not found either (and never reach NATS).
    for bad in ["Bad.Name", "a%3Eb", "a%2Eb%2A", "x"] {
        h.get(&format!("/api/services/{bad}"), Some(VIEWER))
            .await
            .expect(404, Some("SERVICE_NOT_FOUND"));
    }

    h.admin(Method::POST, "/api/services", Some(new_def("risk-service")))
        .await
        .expect(201, None);
    let dup = h
        .admin(Method::POST, "/api/services", Some(new_def("risk-service")))
        .await;
    dup.expect(409, Some("SERVICE_ALREADY_EXISTS"));
    assert_eq!(dup.body["error"]["details"]["service"], "risk-service");

    // `{}` and a revision alone change nothing: 400.
    for body in [json!({}), json!({"revision": 1})] {
        h.admin(Method::PUT, "/api/services/risk-service", Some(body))
            .await
            .expect(400, Some("EMPTY_UPDATE"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creates_have_exactly_one_winner() {
    let h = Harness::start().await;
    for round in 0..5 {
        let name = format!("race-{round}");
        let attempts = (0..8).map(|i| {
            let app = h.app.clone();
            let mut body = new_def(&name);
            body["owner"] = json!(format!("racer-{i}"));
            tokio::spawn(async move {
                use tower::ServiceExt;
                app.oneshot(req(Method::POST, "/api/services", Some(ADMIN), Some(body)))
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        });
        let mut statuses = Vec::new();
        for a in attempts {
            statuses.push(a.await.unwrap());
        }
        statuses.sort_unstable();
        assert_eq!(
            statuses.iter().filter(|s| **s == 201).count(),
            1,
            "{statuses:?}"
        );
        assert!(
            statuses.iter().all(|s| *s == 201 || *s == 409),
            "{statuses:?}"
        );
    }
    // Also after a delete (create over a delete marker races the same way).
    h.admin(Method::DELETE, "/api/services/race-0", None)
        .await
        .expect(204, None);
    let (a, b) = tokio::join!(
        h.admin(Method::POST, "/api/services", Some(new_def("race-0"))),
        h.admin(Method::POST, "/api/services", Some(new_def("race-0"))),
    );
    let mut s = [a.status.as_u16(), b.status.as_u16()];
    s.sort_unstable();
    assert_eq!(s, [201, 409]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_with_revision_and_if_match() {
    let h = Harness::start().await;
    let rev1 = h
        .admin(
            Method::POST,
            "/api/services",
            Some(new_def("pricing-service")),
        )
        .await
        .etag();

    // Two clients read rev1; the first update wins, the second is stale.
    let first = h
        .admin(
            Method::PUT,
            "/api/services/pricing-service",
            Some(json!({"owner": "desk-a", "revision": rev1})),
        )
        .await;
    first.expect(200, None);
    let rev2 = first.etag();
    let stale = h
        .admin(
            Method::PUT,
            "/api/services/pricing-service",
            Some(json!({"owner": "desk-b", "revision": rev1})),
        )
        .await;
    stale.expect(409, Some("CONCURRENT_UPDATE"));
    assert_eq!(stale.body["error"]["details"]["current"], rev2);
    assert_eq!(
        h.get("/api/services/pricing-service", Some(VIEWER))
            .await
            .body["owner"],
        "desk-a"
    );

    // The same with If-Match carrying the ETag.
    let put = |etag: String, owner: &str| {
        let mut r = req(
            Method::PUT,
            "/api/services/pricing-service",
            Some(ADMIN),
            Some(json!({ "owner": owner })),
        );
        r.headers_mut()
            .insert(header::IF_MATCH, etag.parse().unwrap());
        r
    };
    h.call(put(format!("\"{rev1}\""), "desk-c"))
        .await
        .expect(409, Some("CONCURRENT_UPDATE"));
    let ok = h.call(put(format!("\"{rev2}\""), "desk-d")).await;
    ok.expect(200, None);
    let rev3 = ok.etag();
    h.call(put("\"not-a-number\"".into(), "x"))
        .await
        .expect(400, Some("BAD_REQUEST"));

    // Delete honours If-Match too.
    let mut del = req(
        Method::DELETE,
        "/api/services/pricing-service",
        Some(ADMIN),
        None,
    );
    del.headers_mut()
        .insert(header::IF_MATCH, format!("\"{rev2}\"").parse().unwrap());
    h.call(del).await.expect(409, Some("CONCURRENT_UPDATE"));
    let mut del = req(
        Method::DELETE,
        "/api/services/pricing-service",
        Some(ADMIN),
        None,
    );
    del.headers_mut()
        .insert(header::IF_MATCH, format!("\"{rev3}\"").parse().unwrap());
    h.call(del).await.expect(204, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_blind_updates_all_land() {
    let h = Harness::start().await;
    h.admin(Method::POST, "/api/services", Some(new_def("blind-svc")))
        .await
        .expect(201, None);
    // Without a revision, racing updates re-read and retry: none is lost
    // to a conflict, and every one is in the history.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let app = h.app.clone();
            tokio::spawn(async move {
                use tower::ServiceExt;
                let body = json!({ "description": format!("edit {i}") });
                app.oneshot(req(
                    Method::PUT,
                    "/api/services/blind-svc",
                    Some(ADMIN),
                    Some(body),
                ))
                .await
                .unwrap()
                .status()
                .as_u16()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    let history = h.get("/api/services/blind-svc/history", Some(VIEWER)).await;
    assert_eq!(history.body.as_array().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_records_operation_time_and_who() {
    let h = Harness::start().await;
    h.admin(Method::POST, "/api/services", Some(new_def("audit-svc")))
        .await
        .expect(201, None);
    h.admin(
        Method::PUT,
        "/api/services/audit-svc",
        Some(json!({"owner": "ops"})),
    )
    .await
    .expect(200, None);
    h.admin(Method::DELETE, "/api/services/audit-svc", None)
        .await
        .expect(204, None);
    let history = h.get("/api/services/audit-svc/history", Some(VIEWER)).await;
    history.expect(200, None);
    let entries = history.body.as_array().unwrap();
    let ops: Vec<&str> = entries
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["PUT", "PUT", "DELETE"]);
    assert!(entries.iter().all(|e| e["who"] == "admin"), "{entries:?}");
    assert_eq!(entries[0]["definition"]["owner"], "trading-team");
    assert_eq!(entries[1]["definition"]["owner"], "ops");
    assert_eq!(entries[2]["definition"], Value::Null);
    let revisions: Vec<u64> = entries
        .iter()
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    for e in entries {
        chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
    }
    // The bucket keeps history and never expires entries.
    let conn = h.connect().await;
    let kv = conn
        .jetstream()
        .get_key_value(DEFINITIONS_BUCKET)
        .await
        .unwrap();
    let status = kv.status().await.unwrap();
    assert_eq!(status.history(), 64);
    assert_eq!(status.max_age(), Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_edge_cases_name_the_field() {
    let h = Harness::start().await;
    let post = |body: Value| h.admin(Method::POST, "/api/services", Some(body));
    let with = |field: &str, value: Value| {
        let mut b = new_def("edge-case-svc");
        b[field] = value;
        b
    };

    // Accepted bounds: 3 and 64 characters, owner 100, description 500.
    for (i, ok) in [
        with("service_name", json!("abc")),
        with("service_name", json!(format!("a{}", "b".repeat(63)))),
        with("service_name", json!("a-b-c")),
        with("owner", json!("o".repeat(100))),
        with("description", json!("d".repeat(500))),
        with("version", json!("1.0.0-rc.1+build.5")),
        with("version", json!("0.0.0")),
    ]
    .into_iter()
    .enumerate()
    {
        let mut body = ok;
        if body["service_name"] == "edge-case-svc" {
            body["service_name"] = json!(format!("edge-ok-{i}"));
        }
        post(body.clone()).await.expect(201, None);
    }

    // Rejected: 422 VALIDATION_ERROR naming the field.
    let cases = [
        (with("service_name", json!("ab")), "service_name"),
        (
            with("service_name", json!(format!("a{}", "b".repeat(64)))),
            "service_name",
        ),
        (
            with("service_name", json!("order--service")),
            "service_name",
        ),
        (with("service_name", json!("Order-service")), "service_name"),
        (with("service_name", json!("orDer")), "service_name"),
        (with("service_name", json!("1order")), "service_name"),
        (with("service_name", json!("order-")), "service_name"),
        (with("service_name", json!("order.svc")), "service_name"),
        (with("service_name", json!("")), "service_name"),
        (with("owner", json!("o".repeat(101))), "owner"),
        (with("owner", json!("")), "owner"),
        (with("owner", json!("   ")), "owner"),
        (with("description", json!("d".repeat(501))), "description"),
        (with("description", json!("")), "description"),
        (with("version", json!("1.0")), "version"),
        (with("version", json!("01.0.0")), "version"),
        (with("version", json!("1.01.0")), "version"),
        (with("version", json!("v1.0.0")), "version"),
        (with("owner", json!(5)), "owner"),
        (with("version", json!(null)), "version"),
    ];
    for (body, field) in cases {
        let r = post(body.clone()).await;
        r.expect(422, Some("VALIDATION_ERROR"));
        assert_eq!(r.fields(), [field], "{body}");
    }
    // Several bad fields are all named.
    let r = post(json!({
        "service_name": "X", "owner": "", "description": "", "version": "1.0"
    }))
    .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(
        r.fields(),
        ["service_name", "owner", "description", "version"]
    );

    // Missing and unknown fields.
    let mut missing = new_def("missing-owner");
    missing.as_object_mut().unwrap().remove("owner");
    let r = post(missing).await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["owner"]);
    let mut unknown = new_def("unknown-field");
    unknown["created_at"] = json!("2026-01-01T00:00:00Z");
    let r = post(unknown).await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["created_at"]);
    let r = post(json!(["not", "an", "object"])).await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["body"]);

    // Update validation: the same rules for the fields given.
    h.admin(Method::POST, "/api/services", Some(new_def("upd-svc")))
        .await
        .expect(201, None);
    for (body, field) in [
        (json!({"owner": "o".repeat(101)}), "owner"),
        (json!({"description": "d".repeat(501)}), "description"),
        (json!({"version": "1.0"}), "version"),
        (json!({"version": "01.0.0"}), "version"),
        (json!({"service_name": "renamed"}), "service_name"),
        (json!({"created_at": "2026-01-01T00:00:00Z"}), "created_at"),
        (json!({"owner": "x", "revision": -1}), "revision"),
        (json!({"owner": "x", "revision": "3"}), "revision"),
        (json!({"owner": null}), "owner"),
        (json!({"owner": "x", "version": null}), "version"),
    ] {
        let r = h
            .admin(Method::PUT, "/api/services/upd-svc", Some(body.clone()))
            .await;
        r.expect(422, Some("VALIDATION_ERROR"));
        assert_eq!(r.fields(), [field], "{body}");
    }
}

/// One 422 names every failing field: mistyped, against a rule, missing
/// or unknown, all at once, so a client fixes its body in one go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_answer_names_every_failing_field() {
    let h = Harness::start().await;
    let post = |body: Value| h.admin(Method::POST, "/api/services", Some(body));
    let r = post(json!({
        "service_name": "abc", "owner": 5, "description": "d", "version": 7
    }))
    .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["owner", "version"], "{}", r.body);
    let r = post(json!({
        "service_name": "X", "owner": 5, "description": null, "extra": 1
    }))
    .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(
        r.fields(),
        ["service_name", "owner", "description", "version", "extra"],
        "{}",
        r.body
    );
    // The message says as much.
    let message = r.body["error"]["message"].as_str().unwrap();
    for field in ["service_name", "owner", "description", "version", "extra"] {
        assert!(message.contains(field), "{message}");
    }

    h.admin(Method::POST, "/api/services", Some(new_def("upd-svc")))
        .await
        .expect(201, None);
    let r = h
        .admin(
            Method::PUT,
            "/api/services/upd-svc",
            Some(json!({ "owner": 5, "version": "1.0", "revision": "x", "bogus": 1 })),
        )
        .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(
        r.fields(),
        ["owner", "version", "revision", "bogus"],
        "{}",
        r.body
    );
}

/// PATCH, which docs/api.md lists among an admin's methods, is the
/// partial update PUT makes: the fields given change, the others stay,
/// conditional on `If-Match` or `revision`; its body may be sent as a JSON
/// merge patch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_changes_part_of_a_definition_as_put_does() {
    let h = Harness::start().await;
    let created = h
        .admin(Method::POST, "/api/services", Some(new_def("patch-svc")))
        .await;
    created.expect(201, None);
    let path = "/api/services/patch-svc";
    let patched = h
        .call(raw(
            Method::PATCH,
            path,
            ADMIN,
            "application/merge-patch+json",
            json!({ "owner": "pricing-team" }).to_string(),
        ))
        .await;
    patched.expect(200, None);
    assert_eq!(patched.body["owner"], "pricing-team");
    assert_eq!(patched.body["description"], created.body["description"]);
    assert_eq!(patched.body["created_at"], created.body["created_at"]);
    assert!(patched.etag() > created.etag());
    let read = h.get(path, Some(VIEWER)).await;
    assert_eq!(read.body["owner"], "pricing-team");

    // Conditional as PUT is: a stale revision is a conflict.
    let mut stale = req(
        Method::PATCH,
        path,
        Some(ADMIN),
        Some(json!({ "version": "2.0.0" })),
    );
    stale.headers_mut().insert(
        header::IF_MATCH,
        format!("\"{}\"", created.etag()).parse().unwrap(),
    );
    h.call(stale).await.expect(409, Some("CONCURRENT_UPDATE"));
    h.admin(Method::PATCH, path, Some(json!({})))
        .await
        .expect(400, Some("EMPTY_UPDATE"));
    h.admin(
        Method::PATCH,
        "/api/services/no-such-svc",
        Some(json!({ "owner": "x" })),
    )
    .await
    .expect(404, Some("SERVICE_NOT_FOUND"));
    // A write: admins only.
    h.call(req(
        Method::PATCH,
        path,
        Some(VIEWER),
        Some(json!({ "owner": "x" })),
    ))
    .await
    .expect(403, Some("FORBIDDEN"));
    // And documented.
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    assert!(
        spec["paths"]["/api/services/{name}"]["patch"].is_object(),
        "PATCH /api/services/{{name}} is in the OpenAPI document"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_unsupported_and_oversized_bodies() {
    let h = Harness::start().await;
    for bad in ["{", "not json", "{\"service_name\": }", ""] {
        h.call(raw(
            Method::POST,
            "/api/services",
            ADMIN,
            "application/json",
            bad,
        ))
        .await
        .expect(400, Some("INVALID_JSON"));
    }
    h.call(raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "text/plain",
        new_def("plain-text").to_string(),
    ))
    .await
    .expect(415, Some("UNSUPPORTED_MEDIA_TYPE"));
    // `application/json; charset=utf-8` and `+json` types are JSON.
    h.call(raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json; charset=utf-8",
        new_def("charset-svc").to_string(),
    ))
    .await
    .expect(201, None);

    // Over 64 KiB: 413, whether the length is declared or streamed.
    let mut big = new_def("big-svc");
    big["description"] = json!("d".repeat(70 * 1024));
    h.call(raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json",
        big.to_string(),
    ))
    .await
    .expect(413, Some("PAYLOAD_TOO_LARGE"));
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = big
        .to_string()
        .into_bytes()
        .chunks(8 * 1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let streamed = axum::body::Body::from_stream(futures::stream::iter(chunks));
    h.call(raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json",
        streamed,
    ))
    .await
    .expect(413, Some("PAYLOAD_TOO_LARGE"));
    // Just under the limit is parsed (and then fails validation: 422).
    let mut under = new_def("under-svc");
    under["description"] = json!("d".repeat(60 * 1024));
    h.call(raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json",
        under.to_string(),
    ))
    .await
    .expect(422, Some("VALIDATION_ERROR"));
}

/// A key given twice in a body is refused, named, rather than read as its
/// last value: which one the client meant cannot be known.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_given_twice_is_refused_naming_it() {
    let h = Harness::start().await;
    let r = h
        .call(raw(
            Method::POST,
            "/api/services",
            ADMIN,
            "application/json",
            r#"{"service_name": "dup-svc", "owner": "a", "description": "d", "version": "1.0.0", "owner": "b"}"#,
        ))
        .await;
    r.expect(400, Some("INVALID_JSON"));
    // One name for the key, as documented: `details.key`, nothing else.
    assert_eq!(
        r.body["error"]["details"],
        json!({ "key": "owner" }),
        "{}",
        r.body
    );
    h.get("/api/services/dup-svc", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));

    h.admin(Method::POST, "/api/services", Some(new_def("dup-svc")))
        .await
        .expect(201, None);
    let r = h
        .call(raw(
            Method::PUT,
            "/api/services/dup-svc",
            ADMIN,
            "application/json",
            r#"{"version": "2.0.0", "version": "3.0.0"}"#,
        ))
        .await;
    r.expect(400, Some("INVALID_JSON"));
    assert_eq!(r.body["error"]["details"]["key"], "version", "{}", r.body);
    let read = h.get("/api/services/dup-svc", Some(VIEWER)).await;
    assert_eq!(read.body["version"], "1.0.0");
}

/// Definition text is text a person reads: a control character (a NUL,
/// an escape that recolours a terminal) is refused naming the field;
/// newline and tab are text. A version number too large is said in the
/// user's terms, not the parser's (`exceeds u64::MAX`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_huge_versions_are_refused_in_plain_words() {
    let h = Harness::start().await;
    for (field, value) in [
        ("description", "stores\u{0}orders"),
        ("owner", "team\u{1b}[31m"),
        ("description", "line\u{7f}"),
    ] {
        let mut def = new_def("ctl-svc");
        def[field] = json!(value);
        let r = h.admin(Method::POST, "/api/services", Some(def)).await;
        r.expect(422, Some("VALIDATION_ERROR"));
        assert_eq!(r.fields(), [field], "{}", r.body);
        let message = r.body["error"]["details"]["fields"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains("control character"), "{message}");
    }
    h.get("/api/services/ctl-svc", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    let mut def = new_def("ctl-svc");
    def["description"] = json!("two lines:\n\tindented");
    h.admin(Method::POST, "/api/services", Some(def))
        .await
        .expect(201, None);
    let r = h
        .admin(
            Method::PATCH,
            "/api/services/ctl-svc",
            Some(json!({ "owner": "bell\u{7}" })),
        )
        .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["owner"], "{}", r.body);

    let r = h
        .admin(
            Method::PATCH,
            "/api/services/ctl-svc",
            Some(json!({ "version": "18446744073709551616.0.0" })),
        )
        .await;
    r.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(r.fields(), ["version"], "{}", r.body);
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        !message.contains("u64") && message.contains("too large"),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_over_a_real_socket() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let client = reqwest::Client::new();
    // A client writes the whole body before it reads the answer: it must
    // get the 413, not a broken pipe, however large the body (within 1 MiB).
    for size in [100 * 1024, 512 * 1024, 1000 * 1024] {
        let mut big = new_def("sock-big");
        big["description"] = json!("d".repeat(size));
        for _ in 0..5 {
            let r = reqwest::Client::new()
                .post(format!("http://{addr}/api/services"))
                .bearer_auth(ADMIN)
                .json(&big)
                .send()
                .await
                .unwrap_or_else(|e| panic!("a {size}-byte body: {e:?}"));
            assert_eq!(r.status(), 413);
            let body: Value = r.json().await.unwrap();
            common::assert_envelope(&body);
            assert_eq!(body["error"]["code"], "PAYLOAD_TOO_LARGE");
        }
    }
    // And a normal create over the socket.
    let r = client
        .post(format!("http://{addr}/api/services"))
        .bearer_auth(ADMIN)
        .json(&new_def("sock-ok"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    stop.cancel();
}
