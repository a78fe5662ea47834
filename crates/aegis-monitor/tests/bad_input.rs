//! Small input edges a new user meets: a JSON body saved with a UTF-8
//! byte-order mark, definition text with invisible formatting characters,
//! and a very long value where a path takes a name.

mod common;

use axum::http::Method;
use common::{ADMIN, Harness, new_def, raw};

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
