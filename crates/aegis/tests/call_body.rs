//! `aegis call SERVICE METHOD` with no body, against a real nats-server and
//! a real SDK service: a method that takes no argument (`|_: ()|`, whose
//! request schema is `null`) is sent `null`, not `{}` (which it refused
//! as "invalid type: map, expected unit"); any other method still gets
//! `{}`, and a body given explicitly is sent as it is.

mod common;

use aegis_sdk::{AegisConfig, Connection, rpc::WireError};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_body_sends_what_the_method_takes() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let service = conn
        .service("unit-service", "1.0.0")
        .instance_id("unit-1")
        .handler(
            "ping",
            |_: ()| async move { Ok::<_, WireError>(json!("pong")) },
        )
        .handler(
            "echo",
            |body: Value| async move { Ok::<_, WireError>(body) },
        )
        .start()
        .await
        .unwrap();

    // A method that takes nothing: no body is `null`.
    let (ok, out) = common::run_at(&["call", "unit-service", "ping"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"pong\""), "{out}");

    // A method that takes anything: no body is still `{}`.
    let (ok, out) = common::run_at(&["call", "unit-service", "echo"], &url).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("{}"), "{out}");

    // A body given is sent as it is, `{}` to `ping` included: its refusal
    // now says what to pass.
    let (ok, out) = common::run_at(&["call", "unit-service", "echo", "[1,2]"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains('1') && out.contains('2'), "{out}");
    let (ok, out) = common::run_at(&["call", "unit-service", "ping", "{}"], &url).await;
    assert!(!ok, "{out}");
    assert!(out.contains("INVALID_REQUEST"), "{out}");
    assert!(
        out.contains("takes no argument") && out.contains("null"),
        "says to pass null: {out}"
    );

    service.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}
