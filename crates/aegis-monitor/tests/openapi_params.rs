//! What the OpenAPI document says a query parameter takes, the server
//! takes: a value valid against the parameter's documented schema is
//! never refused 400. A client generated from the document (or a fuzzer,
//! `scripts/fuzz-api.sh`) builds its values from those schemas; a
//! parameter documented as any string, which the server then refuses,
//! makes such a client send requests that cannot succeed.
//!
//! Each query parameter of each operation is sent alone with every value
//! of a small set that its documented schema allows; the answer may be
//! anything but 400 (a 404 for the filled-in path is fine: the query was
//! taken).

mod common;

use axum::http::Method;
use common::{Harness, VIEWER, req};
use serde_json::Value;

/// Values tried for every parameter: valid ones for each kind of
/// parameter the API has, and near misses of each.
const CANDIDATES: &[&str] = &[
    "",
    " ",
    "m",
    "A",
    "0",
    "1",
    "-1",
    "1001",
    "ab",
    "order-service",
    "order-service,risk-service",
    "a--b",
    "order-",
    "order-service/order-1",
    "order-service/x_y-z",
    "m/x",
    "a--b/x",
    "order-service/",
    "order-service/-x",
    "ACTIVE",
    "UNHEALTHY,STANDBY",
    "active",
    "ACTIVE,",
    "1h",
    "90s",
    "15m",
    "soon",
    "0s",
    "instance",
    "instance,definition",
    "metrics,bogus",
    "group-1",
    "g_1",
    "-g",
];

/// The path of `template` with each `{parameter}` filled in with a valid
/// name or id.
fn fill(template: &str) -> String {
    template
        .replace("{service}", "order-service")
        .replace("{name}", "order-service")
        .replace("{instanceId}", "order-1")
        .replace("{status}", "ACTIVE")
}

/// `value` as the JSON the documented schema is checked against: a
/// number for an integer parameter when it reads as one.
fn as_json(schema: &Value, value: &str) -> Value {
    match (schema["type"].as_str(), value.parse::<i64>()) {
        (Some("integer"), Ok(n)) => Value::from(n),
        _ => Value::from(value),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_query_value_the_document_allows_is_taken() {
    let h = Harness::start().await;
    let spec = serde_json::to_value(aegis_monitor::openapi()).unwrap();
    let mut refused = Vec::new();
    let mut tried = 0;
    for (template, item) in spec["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let params = operation["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for param in params.iter().filter(|p| p["in"] == "query") {
                let name = param["name"].as_str().unwrap();
                let schema = &param["schema"];
                let validator = jsonschema::validator_for(schema)
                    .unwrap_or_else(|e| panic!("{template} {name}: {e}"));
                for value in CANDIDATES {
                    if !validator.is_valid(&as_json(schema, value)) {
                        continue;
                    }
                    tried += 1;
                    let query: String = url_encode(&[(name, value)]);
                    let path = format!("{}?{query}", fill(template));
                    let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    let reply = h.call(req(m.clone(), &path, Some(VIEWER), None)).await;
                    if reply.status == 400 {
                        refused.push(format!(
                            "{m} {template}?{name}={value:?}: {}",
                            reply.body["error"]["message"]
                        ));
                    }
                }
            }
        }
    }
    assert!(tried > 20, "{tried} values tried");
    assert!(
        refused.is_empty(),
        "documented as valid, refused 400: {refused:#?}"
    );
}

/// `pairs` as a query string.
fn url_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let encode = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                            (b as char).to_string()
                        }
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", encode(k), encode(v))
        })
        .collect::<Vec<_>>()
        .join("&")
}
