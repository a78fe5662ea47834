//! Calls are granted per method, not per service: a service that calls
//! another may publish only to the methods it uses, in both subject forms
//! (load-balanced `rpc.{svc}.{method}` and instance-directed
//! `rpc.{svc}.{instance}.{method}`), and a showcase service's admin
//! methods (risk-service's `update_limits`) are the operator's alone.
//!
//! Against a real nats-server running the users `aegis up` renders
//! (`aegis::permissions`), with a real risk-service: a refusal is the
//! server's own `-ERR 'Permissions Violation ...'` to the client, and the
//! limits are read back unchanged afterwards.

mod common;

use std::time::Duration;

use aegis::permissions::{Role, admitted_services};
use aegis_sdk::{rpc::CallOptions, rpc::RpcError};
use common::showcase_bus::ShowcaseBus;
use serde_json::{Value, json};

/// The showcase's users plus one admitted service, `fx-service`.
fn fx_bus() -> ShowcaseBus {
    let admitted = admitted_services(&["fx-service".to_owned()]).unwrap();
    ShowcaseBus::start_with(admitted.into_iter().map(Role::Service))
}

fn opts() -> CallOptions {
    CallOptions::timeout(Duration::from_secs(3))
}

/// A call that reached the handler: answered, or refused by the handler
/// itself (a body it does not take), never by the server.
fn reached<T: std::fmt::Debug>(what: &str, result: Result<T, RpcError>) {
    match result {
        Ok(_) | Err(RpcError::Remote { .. }) => {}
        Err(e) => panic!("{what} did not reach the handler: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_operator_may_call_an_admin_method() {
    let bus = fx_bus();
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let _risk = aegis_trading::risk::start(
        &bus.sdk("svc-risk-service").await,
        aegis_trading::risk::RiskOptions {
            instance_id: Some("risk-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "risk-service starts: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });
    let limits_before: Value = operator
        .rpc()
        .call_instance("risk-service", "risk-1", "get_limits", &json!({}), &opts())
        .await
        .unwrap()
        .value;

    // What the red team did as order-service (F1): raise the desk's limits.
    let raise =
        br#"{"max_order_quantity":9000000000,"max_order_notional":1e15,"max_position":9000000000}"#;
    for user in ["svc-order-service", "svc-pricing-service", "svc-fx-service"] {
        let mut probe = bus.probe(user).await;
        probe
            .publish_refused(
                "call risk-service's update_limits",
                "rpc.risk-service.update_limits",
                raise,
            )
            .await;
        probe
            .publish_refused(
                "call update_limits on an instance",
                "rpc.risk-service.risk-1.update_limits",
                raise,
            )
            .await;
    }
    // Nor may a service (admitted or not) make a showcase service fail on
    // purpose, or keep its handlers busy for up to 60 s a call: the drill
    // hook `simulate_work` is the operator's (F7).
    let fail = br#"{"ms":60000,"fail":true}"#;
    for user in ["svc-order-service", "svc-pricing-service", "svc-fx-service"] {
        let mut probe = bus.probe(user).await;
        for service in ["order-service", "pricing-service", "risk-service"] {
            if user == format!("svc-{service}") {
                continue;
            }
            probe
                .publish_refused(
                    &format!("call {service}'s simulate_work"),
                    &format!("rpc.{service}.simulate_work"),
                    fail,
                )
                .await;
            probe
                .publish_refused(
                    &format!("call {service}'s simulate_work on an instance"),
                    &format!("rpc.{service}.any-1.simulate_work"),
                    fail,
                )
                .await;
        }
    }
    // order-service calls only what it uses: not even a read it does not.
    let mut order = bus.probe("svc-order-service").await;
    order
        .publish_refused(
            "call get_positions (not a method it uses)",
            "rpc.risk-service.get_positions",
            b"{}",
        )
        .await;

    // What it does use still reaches risk-service, in both forms.
    let order = bus.sdk("svc-order-service").await;
    reached(
        "order-service's assess_risk",
        order
            .rpc()
            .call_with::<_, Value>("risk-service", "assess_risk", &json!({}), &opts())
            .await,
    );
    reached(
        "order-service's assess_risk on risk-1",
        order
            .rpc()
            .call_instance::<_, Value>("risk-service", "risk-1", "assess_risk", &json!({}), &opts())
            .await,
    );
    // An admitted service calls the showcase's non-admin methods.
    let fx = bus.sdk("svc-fx-service").await;
    reached(
        "fx-service's get_limits",
        fx.rpc()
            .call_with::<_, Value>("risk-service", "get_limits", &json!({}), &opts())
            .await,
    );

    // The limits did not move; the operator still changes them.
    let limits_after: Value = operator
        .rpc()
        .call_instance("risk-service", "risk-1", "get_limits", &json!({}), &opts())
        .await
        .unwrap()
        .value;
    assert_eq!(limits_after, limits_before);
    let changed: Value = operator
        .rpc()
        .call_instance(
            "risk-service",
            "risk-1",
            "update_limits",
            &json!({"max_position": 123}),
            &opts(),
        )
        .await
        .unwrap_or_else(|e| panic!("the operator's update_limits: {e:?}"))
        .value;
    assert_eq!(changed["max_position"], 123, "{changed}");
    // The operator still drills with simulate_work.
    reached(
        "the operator's simulate_work",
        operator
            .rpc()
            .call_with::<_, Value>("risk-service", "simulate_work", &json!({"ms": 1}), &opts())
            .await,
    );
    println!(
        "{:<20} call update_limits on risk-1                        ALLOWED",
        "operator"
    );
}

/// The table the grants come from (`permissions::SHOWCASE_METHODS`) names
/// every method the running services serve, each either public or admin:
/// a method added to a service must be put on one side (until it is, no
/// service is granted it, only the operator).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_method_table_names_every_method_the_services_serve() {
    let bus = fx_bus();
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let _pricing = aegis_trading::pricing::start(
        &bus.sdk("svc-pricing-service").await,
        aegis_trading::pricing::PricingOptions {
            instance_id: Some("pricing-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _risk = aegis_trading::risk::start(
        &bus.sdk("svc-risk-service").await,
        aegis_trading::risk::RiskOptions {
            instance_id: Some("risk-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _order = aegis_trading::order::start(
        &bus.sdk("svc-order-service").await,
        aegis_trading::order::OrderOptions {
            instance_id: Some("order-1".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_or_else(|e| {
        panic!(
            "order-service starts: {e:?}\n{}",
            bus.violations().join("\n")
        )
    });
    for table in aegis::permissions::SHOWCASE_METHODS {
        let described =
            aegis_sdk::rpc::describe(operator.client(), table.service, Duration::from_secs(5))
                .await
                .unwrap();
        let mut served: Vec<&str> = described.methods.iter().map(|m| m.name.as_str()).collect();
        served.sort_unstable();
        let mut listed: Vec<&str> = table.public.iter().chain(table.admin).copied().collect();
        listed.sort_unstable();
        assert_eq!(served, listed, "{}", table.service);
    }
}
