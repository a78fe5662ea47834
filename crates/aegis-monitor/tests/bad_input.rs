//! Small input edges a new user meets: a JSON body saved with a UTF-8
//! byte-order mark, definition text with invisible formatting characters,
//! and a very long value where a path takes a name.

mod common;

use axum::http::Method;
use common::{ADMIN, Harness, VIEWER, new_def, raw, req};
use serde_json::json;

/// A body whose JSON is preceded by a UTF-8 BOM (PowerShell's and
/// Notepad's UTF-8) is the JSON after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_body_after_a_byte_order_mark_is_read() {
    let h = Harness::start().await;
    let mut body = b"\xEF\xBB\xBF".to_vec();
    body.extend(new_def("bom-service").to_string().as_bytes());
    let reply = h
        .call(raw(
            Method::POST,
            "/api/services",
            ADMIN,
            "application/json",
            body,
        ))
        .await;
    reply.expect(201, None);
    assert_eq!(reply.body["service_name"], "bom-service", "{}", reply.body);

    // Only one BOM, only at the start: anything else is still malformed.
    for bad in [
        &b"\xEF\xBB\xBF\xEF\xBB\xBF{}"[..],
        b"\xEF\xBB\xBF",
        b" \xEF\xBB\xBF{}",
    ] {
        let reply = h
            .call(raw(
                Method::POST,
                "/api/services",
                ADMIN,
                "application/json",
                bad.to_vec(),
            ))
            .await;
        reply.expect(400, Some("INVALID_JSON"));
    }
}

/// Bidi controls and zero-width characters in `owner` / `description`
/// are refused, naming the field and the code point, on create and update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_formatting_characters_are_refused_in_definition_text() {
    let h = Harness::start().await;
    let cases = [
        ("owner", "\u{202e}evil\u{202c}", "U+202E"),
        ("description", "zero\u{200b}width", "U+200B"),
        ("owner", "a\u{2066}b", "U+2066"),
        ("description", "left\u{200e}mark", "U+200E"),
        ("description", "\u{feff}bom inside", "U+FEFF"),
        ("owner", "word\u{2060}joiner", "U+2060"),
    ];
    for (field, text, code_point) in cases {
        let mut body = new_def("text-service");
        body[field] = json!(text);
        let reply = h.admin(Method::POST, "/api/services", Some(body)).await;
        reply.expect(422, Some("VALIDATION_ERROR"));
        assert_eq!(reply.fields(), [field], "{text:?}: {}", reply.body);
        let message = reply.body["error"]["details"]["fields"][0]["message"]
            .as_str()
            .unwrap();
        assert!(message.contains(code_point), "{text:?}: {message}");
    }

    h.admin(Method::POST, "/api/services", Some(new_def("text-service")))
        .await
        .expect(201, None);
    let reply = h
        .admin(
            Method::PATCH,
            "/api/services/text-service",
            Some(json!({"description": "zero\u{200b}width"})),
        )
        .await;
    reply.expect(422, Some("VALIDATION_ERROR"));
    assert_eq!(reply.fields(), ["description"], "{}", reply.body);

    // Other non-ASCII text is fine, the joiners included: an emoji sequence
    // (U+200D) and a Persian word (U+200C) are written with them.
    h.admin(
        Method::PATCH,
        "/api/services/text-service",
        Some(json!({"owner": "équipe 取引 👩‍💻", "description": "Ünïcödé\ttext\nمی‌خواهم"})),
    )
    .await
    .expect(200, None);
}

/// A long value where a path takes a name is not echoed whole: a short
/// prefix, "…", and its length (in characters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_path_value_is_not_echoed_whole() {
    let h = Harness::start().await;
    let long = "a".repeat(5000);
    for path in [
        format!("/api/services/{long}"),
        format!("/api/services/{long}/history"),
    ] {
        let reply = h.call(req(Method::GET, &path, Some(VIEWER), None)).await;
        reply.expect(404, Some("SERVICE_NOT_FOUND"));
        let text = reply.body.to_string();
        assert!(text.len() < 600, "{} bytes: {text}", text.len());
        assert!(!text.contains(&"a".repeat(100)), "{text}");
        let message = reply.body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains('…') && message.contains("5000"),
            "{message}"
        );
        let details = &reply.body["error"]["details"];
        assert_eq!(
            details["service"],
            format!("{}…", "a".repeat(32)),
            "{details}"
        );
        assert_eq!(details["length"], 5000, "{details}");
    }
    // A name of ordinary length is still echoed as given.
    let reply = h
        .call(req(
            Method::GET,
            "/api/services/no-such-service",
            Some(VIEWER),
            None,
        ))
        .await;
    reply.expect(404, Some("SERVICE_NOT_FOUND"));
    assert_eq!(reply.body["error"]["details"]["service"], "no-such-service");
}

/// A body the server cannot read as sent is 415 naming why, not a 400
/// "malformed JSON ... line 1 column 1" that sends the client looking at
/// its JSON: a compressed body (`Content-Encoding: gzip`: the server
/// decompresses none), and a charset other than UTF-8 (JSON is UTF-8; a
/// Latin-1 body read as UTF-8 would store other text than was sent).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compressed_body_or_another_charset_is_415_saying_why() {
    let h = Harness::start().await;
    let body = new_def("media-svc").to_string();
    let mut gzipped = raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json",
        body.clone(),
    );
    gzipped.headers_mut().insert(
        axum::http::header::CONTENT_ENCODING,
        "gzip".parse().unwrap(),
    );
    let reply = h.call(gzipped).await;
    reply.expect(415, Some("UNSUPPORTED_MEDIA_TYPE"));
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("gzip"),
        "{}",
        reply.body
    );
    let reply = h
        .call(raw(
            Method::POST,
            "/api/services",
            ADMIN,
            "application/json; charset=iso-8859-1",
            body.clone(),
        ))
        .await;
    reply.expect(415, Some("UNSUPPORTED_MEDIA_TYPE"));
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("UTF-8"),
        "{}",
        reply.body
    );
    // Nothing was stored by either.
    h.get("/api/services/media-svc", Some(VIEWER))
        .await
        .expect(404, None);
    // `identity` is no encoding, and UTF-8 in any case is UTF-8.
    let mut plain = raw(
        Method::POST,
        "/api/services",
        ADMIN,
        "application/json; charset=\"UTF-8\"",
        body,
    );
    plain.headers_mut().insert(
        axum::http::header::CONTENT_ENCODING,
        "identity".parse().unwrap(),
    );
    h.call(plain).await.expect(201, None);
}

/// The same for every other route a name or an instance id is given in
/// (the path, or a query parameter naming one): a value longer than any
/// name of its kind is echoed as its first 32 characters and "…", with its
/// length, never whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_value_is_not_echoed_whole_on_any_route() {
    let h = Harness::start().await;
    let long = "a".repeat(5000);
    let cut = format!("{}…", "a".repeat(32));
    // (path, status, code, the details field holding the value, its length's)
    let cases = [
        (
            format!("/api/services/{long}/methods"),
            404,
            "SERVICE_NOT_FOUND",
            "service",
            "length",
        ),
        (
            format!("/api/leadership/{long}"),
            404,
            "SERVICE_NOT_FOUND",
            "service",
            "length",
        ),
        (
            format!("/api/instances/{long}/x"),
            404,
            "INSTANCE_NOT_FOUND",
            "service",
            "serviceLength",
        ),
        (
            format!("/api/instances/order-service/{long}"),
            404,
            "INSTANCE_NOT_FOUND",
            "instanceId",
            "instanceIdLength",
        ),
        (
            format!("/api/instances/{long}/x/config"),
            404,
            "INSTANCE_NOT_FOUND",
            "service",
            "serviceLength",
        ),
        (
            format!("/api/instances/order-service/{long}/config"),
            404,
            "INSTANCE_NOT_FOUND",
            "instanceId",
            "instanceIdLength",
        ),
        (
            format!("/api/instances/{long}/x/events"),
            404,
            "INSTANCE_NOT_FOUND",
            "service",
            "serviceLength",
        ),
        (
            format!("/api/instances/order-service/{long}/events"),
            404,
            "INSTANCE_NOT_FOUND",
            "instanceId",
            "instanceIdLength",
        ),
        (
            format!("/api/instances/{long}/x/metrics"),
            404,
            "INSTANCE_NOT_FOUND",
            "service",
            "serviceLength",
        ),
        (
            format!("/api/instances/order-service/{long}/metrics"),
            404,
            "INSTANCE_NOT_FOUND",
            "instanceId",
            "instanceIdLength",
        ),
        (
            format!("/api/instances?service={long}"),
            400,
            "BAD_REQUEST",
            "value",
            "length",
        ),
        (
            format!("/api/instances?after={long}/x"),
            400,
            "BAD_REQUEST",
            "value",
            "length",
        ),
    ];
    for (path, status, code, field, length) in cases {
        let reply = h.call(req(Method::GET, &path, Some(VIEWER), None)).await;
        let shown = &path[..60];
        assert_eq!(
            reply.status.as_u16(),
            status,
            "{shown}: {}",
            &reply.body.to_string()[..200.min(reply.body.to_string().len())]
        );
        assert_eq!(reply.code(), code, "{shown}");
        let text = reply.body.to_string();
        assert!(
            text.len() < 800,
            "{shown}: {} bytes: {:.300}",
            text.len(),
            text
        );
        assert!(!text.contains(&"a".repeat(100)), "{shown}: {:.300}", text);
        let details = &reply.body["error"]["details"];
        let echoed = details[field].as_str().unwrap_or_default();
        assert!(echoed.starts_with(&cut), "{shown}: {details}");
        assert!(
            details[length].as_u64().is_some_and(|n| n >= 5000),
            "{shown}: {details}"
        );
    }
    // A valid name no instance answers for is named in the details too.
    let reply = h
        .call(req(
            Method::GET,
            "/api/services/abc/methods",
            Some(VIEWER),
            None,
        ))
        .await;
    reply.expect(404, Some("SERVICE_NOT_FOUND"));
    assert_eq!(
        reply.body["error"]["details"]["service"], "abc",
        "{}",
        reply.body
    );
    // Values of ordinary length are still echoed as given.
    let reply = h
        .call(req(
            Method::GET,
            "/api/instances/order-service/order-9",
            Some(VIEWER),
            None,
        ))
        .await;
    reply.expect(404, Some("INSTANCE_NOT_FOUND"));
    assert_eq!(reply.body["error"]["details"]["instanceId"], "order-9");
    assert!(
        reply.body["error"]["details"]
            .get("instanceIdLength")
            .is_none()
    );
}

/// A long query value is echoed cut too, whatever refuses it: a
/// whole-number parameter out of range (`limit`), a parameter given twice,
/// a `window` that is not a duration, an unknown status or topic, and an
/// unknown parameter (its name and its value). Before, every one of these
/// was sent back whole, in `details.value` and the message: 5,000 digits
/// of `limit` made a 10 KB answer (and log line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_query_value_is_not_echoed_whole() {
    let h = Harness::start().await;
    let digits = "1".repeat(5000);
    let letters = "a".repeat(5000);
    // (path, the details field holding the value, its length's)
    let cases = [
        (
            format!("/api/dead-letters?limit={digits}"),
            "value",
            "length",
        ),
        (format!("/api/instances?limit={digits}"), "value", "length"),
        (
            format!("/api/instances/order-service/order-1/events?limit={digits}"),
            "value",
            "length",
        ),
        (
            format!("/api/instances?limit=5&limit={digits}"),
            "value",
            "length",
        ),
        (
            format!("/api/leadership/order-service?window={letters}"),
            "value",
            "length",
        ),
        (
            format!("/api/instances?status={letters}"),
            "value",
            "length",
        ),
        (
            format!("/api/instances/status/{letters}"),
            "value",
            "length",
        ),
        (format!("/api/instances?bogus={letters}"), "value", "length"),
        (
            format!("/api/instances?{letters}=1"),
            "param",
            "paramLength",
        ),
        (format!("/api/stream?topics={letters}"), "value", "length"),
    ];
    for (path, field, length) in cases {
        let reply = h.call(req(Method::GET, &path, Some(VIEWER), None)).await;
        let shown = &path[..path.len().min(60)];
        let text = reply.body.to_string();
        assert_eq!(reply.status.as_u16(), 400, "{shown}: {text:.300}");
        assert_eq!(reply.code(), "BAD_REQUEST", "{shown}");
        assert!(
            text.len() < 800,
            "{shown}: {} bytes: {text:.300}",
            text.len()
        );
        for run in ["1", "a"] {
            assert!(!text.contains(&run.repeat(100)), "{shown}: {text:.300}");
        }
        let details = &reply.body["error"]["details"];
        let echoed = details[field].as_str().unwrap_or_default();
        assert!(
            echoed.ends_with('…') && echoed.chars().count() == 33,
            "{shown}: {details}"
        );
        assert_eq!(details[length], 5000, "{shown}: {details}");
    }
    // A value of ordinary length is still echoed as given.
    let reply = h
        .call(req(
            Method::GET,
            "/api/instances?limit=-1",
            Some(VIEWER),
            None,
        ))
        .await;
    reply.expect(400, Some("BAD_REQUEST"));
    assert_eq!(reply.body["error"]["details"]["value"], "-1");
    assert!(reply.body["error"]["details"].get("length").is_none());
}
