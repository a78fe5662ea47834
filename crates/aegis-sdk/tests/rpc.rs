//! RPC against a real nats-server: round trips, deadlines, typed errors,
//! malformed input, load sharing (discovery round-robin and the queue
//! group), instance-directed calls, the NATS services protocol and graceful
//! shutdown.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_sdk::rpc::{CallOptions, Encoding, ErrorCode, RpcError, WireError};
use common::{connect, eventually, server};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Adds two integers.
#[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, JsonSchema)]
struct Sum {
    sum: i64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
struct Sleep {
    ms: u64,
}

async fn calculator(conn: &aegis_sdk::Connection, instance: &str) -> aegis_sdk::rpc::Service {
    conn.service("calculator", "1.2.0")
        .instance_id(instance)
        .handler("add", |r: Add| async move { Ok(Sum { sum: r.a + r.b }) })
        .handler("find", |key: String| async move {
            Err::<Value, _>(
                WireError::not_found(format!("no entry {key}")).with_details(json!({"key": key})),
            )
        })
        .handler("sleep", |r: Sleep| async move {
            tokio::time::sleep(Duration::from_millis(r.ms)).await;
            Ok(json!({"slept": r.ms}))
        })
        .handler("boom", |_: Value| async move {
            if true {
                panic!("handler bug");
            }
            Ok(json!(null))
        })
        // Panics before it returns its future.
        .handler("boom_early", |_: Value| {
            if true {
                panic!("handler bug before its future");
            }
            async move { Ok(json!(null)) }
        })
        .start()
        .await
        .expect("start calculator")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_round_trip_in_json_and_msgpack() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;

    let sum: Sum = conn
        .rpc()
        .call("calculator", "add", &Add { a: 2, b: 40 })
        .await
        .unwrap();
    assert_eq!(sum, Sum { sum: 42 });

    let opts = CallOptions {
        encoding: Encoding::MsgPack,
        ..Default::default()
    };
    let reply = conn
        .rpc()
        .call_with::<_, Sum>("calculator", "add", &Add { a: 1, b: 1 }, &opts)
        .await
        .unwrap();
    assert_eq!(reply.value, Sum { sum: 2 });
    assert_eq!(reply.instance_id.as_deref(), Some("calc-1"));
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_errors_and_timeouts_reach_the_caller() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;
    let rpc = conn.rpc();

    let err = rpc
        .call::<_, Value>("calculator", "find", "k1")
        .await
        .unwrap_err();
    match &err {
        RpcError::Remote { error, .. } => {
            assert_eq!(error.code, ErrorCode::NotFound);
            assert_eq!(error.message, "no entry k1");
            assert_eq!(error.details, Some(json!({"key": "k1"})));
        }
        other => panic!("expected a remote NOT_FOUND, got {other:?}"),
    }
    assert_eq!(err.code(), ErrorCode::NotFound);

    let err = rpc
        .call_with::<_, Value>(
            "calculator",
            "sleep",
            &Sleep { ms: 1_000 },
            &CallOptions::timeout(Duration::from_millis(100)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::Timeout { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::Timeout);

    // Discovery knows no instance: refused before anything is sent.
    let err = rpc
        .call::<_, Value>("nobody-home", "ping", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoInstances { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);
    // The queue-group path finds nobody listening.
    let err = rpc
        .call_balanced::<_, Value>("nobody-home", "ping", &json!({}), &CallOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }), "{err:?}");
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable);

    let err = rpc
        .call::<_, Value>("Bad_Name", "ping", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::InvalidName(_)), "{err:?}");

    // A panicking handler answers INTERNAL and the service keeps serving,
    // whether it panics in its future or before returning one.
    for method in ["boom", "boom_early"] {
        let err = rpc
            .call::<_, Value>("calculator", method, &json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::Internal, "{method}: {err}");
    }
    let sum: Sum = rpc
        .call("calculator", "add", &Add { a: 1, b: 2 })
        .await
        .unwrap();
    assert_eq!(sum.sum, 3);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_invalid_request_and_the_service_lives_on() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;
    let raw = async_nats::connect(nats.url()).await.unwrap();

    for body in [&b"not json"[..], b"{\"a\": \"x\"}", b"\xff\xfe", b"[1,2,3]"] {
        let reply = raw
            .request("rpc.calculator.add", body.to_vec().into())
            .await
            .unwrap();
        let headers = reply.headers.expect("error headers");
        assert_eq!(
            headers.get("Aegis-Error-Code").unwrap().as_str(),
            "INVALID_REQUEST"
        );
        assert_eq!(
            headers.get("Nats-Service-Error-Code").unwrap().as_str(),
            "400"
        );
    }
    // Wrong shape through the typed client maps to the same code.
    let err = conn
        .rpc()
        .call::<_, Sum>("calculator", "add", &json!({"a": 1}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::InvalidRequest);
    // An unknown encoding is refused too.
    let mut h = async_nats::HeaderMap::new();
    h.insert("Aegis-Encoding", "xml");
    let reply = raw
        .request_with_headers("rpc.calculator.add", h, "<a/>".into())
        .await
        .unwrap();
    assert_eq!(
        reply
            .headers
            .unwrap()
            .get("Aegis-Error-Code")
            .unwrap()
            .as_str(),
        "INVALID_REQUEST"
    );

    let sum: Sum = conn
        .rpc()
        .call("calculator", "add", &Add { a: 5, b: 5 })
        .await
        .unwrap();
    assert_eq!(sum.sum, 10);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_share_load_and_directed_calls_pin_one_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let mut services = Vec::new();
    for id in ["calc-a", "calc-b", "calc-c"] {
        // Each instance on its own connection, as separate processes would be.
        let c = connect(&nats.url()).await;
        services.push((calculator(&c, id).await, c));
    }
    // Discovery round-robin: every instance exactly in turn.
    let mut served: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let reply = conn
            .rpc()
            .call_with::<_, Sum>(
                "calculator",
                "add",
                &Add { a: i, b: 1 },
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.value.sum, i + 1);
        *served.entry(reply.instance_id.unwrap()).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "all three instances served: {served:?}");
    for (id, n) in &served {
        assert_eq!(*n, 100, "{id} served {n} of 300: {served:?}");
    }
    // The queue group spreads load too (the server picks, randomly); asked,
    // each reply names who served it.
    let mut served: HashMap<String, usize> = HashMap::new();
    for i in 0..300 {
        let reply = conn
            .rpc()
            .call_balanced::<_, Sum>(
                "calculator",
                "add",
                &Add { a: i, b: 1 },
                &CallOptions::default().who_served(),
            )
            .await
            .unwrap();
        *served.entry(reply.instance_id.unwrap()).or_default() += 1;
    }
    // Unasked, a load-balanced reply carries no name (nor any header).
    let reply = conn
        .rpc()
        .call_balanced::<_, Sum>(
            "calculator",
            "add",
            &Add { a: 1, b: 1 },
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!((reply.value.sum, reply.instance_id), (2, None));
    let raw = conn
        .client()
        .request(
            "rpc.calculator.add",
            serde_json::to_vec(&Add { a: 1, b: 1 }).unwrap().into(),
        )
        .await
        .unwrap();
    assert!(raw.headers.is_none(), "{:?}", raw.headers);
    // A plain NATS client asks with the request header.
    let mut ask = async_nats::HeaderMap::new();
    ask.insert(aegis_sdk::contracts::wire::HEADER_WANT_INSTANCE, "1");
    let raw = conn
        .client()
        .request_with_headers(
            "rpc.calculator.add",
            ask,
            serde_json::to_vec(&Add { a: 1, b: 1 }).unwrap().into(),
        )
        .await
        .unwrap();
    let named = raw
        .headers
        .as_ref()
        .and_then(|h| h.get(aegis_sdk::contracts::wire::HEADER_INSTANCE));
    assert!(
        named.is_some_and(|v| ["calc-a", "calc-b", "calc-c"].contains(&v.as_str())),
        "{:?}",
        raw.headers
    );
    assert_eq!(served.len(), 3, "all three instances served: {served:?}");
    for (id, n) in &served {
        assert!(*n >= 30, "{id} served only {n} of 300: {served:?}");
    }

    for _ in 0..20 {
        let reply = conn
            .rpc()
            .call_instance::<_, Sum>(
                "calculator",
                "calc-b",
                "add",
                &Add { a: 1, b: 1 },
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.instance_id.as_deref(), Some("calc-b"));
    }
    let err = conn
        .rpc()
        .call_instance::<_, Sum>(
            "calculator",
            "calc-zzz",
            "add",
            &Add { a: 1, b: 1 },
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }));
    for (svc, _) in services {
        svc.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_the_nats_services_protocol() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let _: Sum = conn
        .rpc()
        .call("calculator", "add", &Add { a: 1, b: 1 })
        .await
        .unwrap();
    let _ = conn.rpc().call::<_, Value>("calculator", "find", "x").await;

    let ping: Value = serde_json::from_slice(
        &raw.request("$SRV.PING.calculator", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(ping["type"], "io.nats.micro.v1.ping_response");
    assert_eq!(ping["name"], "calculator");
    assert_eq!(ping["version"], "1.2.0");
    assert_eq!(ping["metadata"]["instance_id"], "calc-1");

    let info: Value = serde_json::from_slice(
        &raw.request("$SRV.INFO.calculator", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(info["type"], "io.nats.micro.v1.info_response");
    assert_eq!(info["id"], "calc-1");
    // One endpoint per method, in declaration order, named by the method;
    // its subject is the shared one, the instance-directed one is metadata.
    let endpoints = info["endpoints"].as_array().unwrap();
    let names: Vec<&str> = endpoints
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["add", "find", "sleep", "boom", "boom_early"]);
    assert_eq!(endpoints[0]["subject"], "rpc.calculator.add");
    assert_eq!(endpoints[0]["queue_group"], "rpc.calculator");
    assert_eq!(
        endpoints[0]["metadata"]["direct_subject"],
        "rpc.calculator.calc-1.add"
    );
    assert_eq!(endpoints[0]["metadata"]["leader_only"], "false");

    let stats: Value = serde_json::from_slice(
        &raw.request("$SRV.STATS.calculator", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    assert_eq!(stats["type"], "io.nats.micro.v1.stats_response");
    let endpoint = |name: &str| {
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    // The routed call arrived on the instance-directed subject, the plain
    // one on the shared subject: one endpoint counts both.
    let _ = raw
        .request("rpc.calculator.add", r#"{"a":1,"b":2}"#.into())
        .await
        .unwrap();
    let stats: Value = serde_json::from_slice(
        &raw.request("$SRV.STATS.calculator.calc-1", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    let now = |name: &str| {
        stats["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(endpoint("add")["num_requests"], 1);
    assert_eq!(now("add")["num_requests"], 2);
    assert_eq!(now("add")["num_errors"], 0);
    assert_eq!(now("find")["num_errors"], 1);
    assert!(
        now("find")["last_error"]
            .as_str()
            .unwrap()
            .starts_with("404:"),
        "{}",
        now("find")
    );
    assert_eq!(stats["endpoints"].as_array().unwrap().len(), 5);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_schemas_validate_real_requests_and_replies() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let info: Value = serde_json::from_slice(
        &raw.request("$SRV.INFO.calculator.calc-1", "".into())
            .await
            .unwrap()
            .payload,
    )
    .unwrap();
    let add = info["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "add")
        .unwrap()
        .clone();
    // The description is the request type's doc comment.
    assert_eq!(add["metadata"]["description"], "Adds two integers.");
    let schema = |key: &str| -> jsonschema::Validator {
        let text = add["metadata"][key].as_str().unwrap();
        jsonschema::validator_for(&serde_json::from_str(text).unwrap()).unwrap()
    };
    let (request, response) = (schema("request_schema"), schema("response_schema"));

    // A real request and its real reply, on the wire.
    let body = json!({"a": 20, "b": 22});
    assert!(request.is_valid(&body));
    let reply = raw
        .request("rpc.calculator.add", body.to_string().into())
        .await
        .unwrap();
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply, json!({"sum": 42}));
    assert!(response.is_valid(&reply), "{reply}");

    // What the service refuses, the schema refuses too. (The converse does
    // not quite hold: serde also takes a struct as an array, `[20, 22]`,
    // which the schema, describing the object form, refuses.)
    for bad in [json!({"a": 1}), json!({"a": "1", "b": 2}), json!("20+22")] {
        assert!(!request.is_valid(&bad), "{bad} passed the schema");
        let answer = raw
            .request("rpc.calculator.add", bad.to_string().into())
            .await
            .unwrap();
        let code = answer
            .headers
            .as_ref()
            .and_then(|h| h.get("Aegis-Error-Code"))
            .map(|v| v.as_str().to_owned());
        assert_eq!(code.as_deref(), Some("INVALID_REQUEST"), "{bad}");
    }
    assert!(!response.is_valid(&json!({"sum": "42"})));
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_in_flight_requests_then_stops_taking_new_ones() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = calculator(&conn, "calc-1").await;
    let started = Arc::new(AtomicUsize::new(0));
    let rpc = conn.rpc();
    let in_flight = {
        let rpc = rpc.clone();
        let started = started.clone();
        tokio::spawn(async move {
            started.fetch_add(1, Ordering::SeqCst);
            rpc.call::<_, Value>("calculator", "sleep", &Sleep { ms: 400 })
                .await
        })
    };
    // Wait until the service has the request in hand.
    let metrics = svc.metrics().clone();
    eventually(Duration::from_secs(5), "request in flight", || {
        let m = metrics.clone();
        async move { m.in_flight() == 1 }
    })
    .await;
    svc.shutdown().await.unwrap();
    let reply = in_flight
        .await
        .unwrap()
        .expect("in-flight request completed");
    assert_eq!(reply["slept"], 400);
    // Deregistered before it stopped listening: discovery no longer knows it,
    // and nobody listens on the queue group either.
    let err = rpc
        .call::<_, Sum>("calculator", "add", &Add { a: 1, b: 1 })
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoInstances { .. }), "{err:?}");
    let err = rpc
        .call_balanced::<_, Sum>(
            "calculator",
            "add",
            &Add { a: 1, b: 1 },
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }), "{err:?}");
    conn.drain().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_declarations_fail_before_any_io() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let bad = conn
        .service("calculator", "1.0.0")
        .handler("not-a-method", |r: Add| async move { Ok(Sum { sum: r.a }) })
        .start()
        .await;
    assert!(matches!(
        bad,
        Err(aegis_sdk::rpc::server::ServiceError::InvalidName(_))
    ));
    let bad = conn
        .service("calculator", "1.0")
        .handler("add", |r: Add| async move { Ok(Sum { sum: r.a }) })
        .start()
        .await;
    assert!(matches!(
        bad,
        Err(aegis_sdk::rpc::server::ServiceError::InvalidVersion(_))
    ));
    let bad = conn
        .service("calculator", "1.0.0")
        .handler("add", |r: Add| async move { Ok(Sum { sum: r.a }) })
        .handler("add", |r: Add| async move { Ok(Sum { sum: r.b }) })
        .start()
        .await;
    assert!(matches!(
        bad,
        Err(aegis_sdk::rpc::server::ServiceError::DuplicateMethod(_))
    ));
}
