//! `aegis call SERVICE METHOD --instance ID` with an ID that is not one of
//! the service's registered instances, against a real nats-server and real
//! SDK services: a slip, said as one (the service's instances, the close
//! one, and the service the ID belongs to when it is another's), not a
//! bare "no instance is serving rpc.SERVICE.ID.METHOD".

mod common;

use aegis_sdk::{AegisConfig, Connection, rpc::WireError};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_the_service_does_not_have_is_said_to_be_one() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let mut services = Vec::new();
    for (service, id) in [
        ("pricing-service", "pricing-1"),
        ("pricing-service", "pricing-2"),
        ("order-service", "order-2"),
    ] {
        services.push(
            conn.service(service, "1.0.0")
                .instance_id(id)
                .handler("get_price", |_: Value| async move {
                    Ok::<_, WireError>(json!(1))
                })
                .start()
                .await
                .unwrap(),
        );
    }
    let call = |instance: &'static str| {
        let url = url.clone();
        async move {
            common::run_at(
                &[
                    "call",
                    "pricing-service",
                    "get_price",
                    "{}",
                    "--instance",
                    instance,
                ],
                &url,
            )
            .await
        }
    };

    let (ok, out) = call("pricing-1").await;
    assert!(ok, "{out}");
    assert!(out.contains("served by pricing-1"), "{out}");

    let (ok, out) = call("nope-9").await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("nope-9 is not a registered instance of pricing-service")
            && out.contains("pricing-1, pricing-2"),
        "names the service's instances: {out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");

    let (ok, out) = call("pricng-1").await;
    assert!(!ok, "{out}");
    assert!(out.contains("did you mean pricing-1?"), "{out}");

    let (ok, out) = call("order-2").await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("order-2 is an instance of order-service, not of pricing-service")
            && out.contains("pricing-1, pricing-2"),
        "names the service it belongs to: {out}"
    );

    for service in services {
        service.shutdown().await.unwrap();
    }
    conn.drain().await.unwrap();
}
