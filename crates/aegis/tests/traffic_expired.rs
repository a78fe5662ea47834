//! `aegis traffic` against order-service keeping settled orders for a
//! short while (`keep_settled`): a run longer than that reads back orders
//! that expired by design, and says so, rather than calling them lost.

mod common;

use std::time::Duration;

use aegis_sdk::{AegisConfig, Connection};
use aegis_testkit::NatsServer;
use aegis_trading::{order, pricing, risk};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_that_expired_by_design_are_not_called_lost() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let pricing = pricing::start(
        &conn,
        pricing::PricingOptions {
            publish_interval: None,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let risk = risk::start(&conn, risk::RiskOptions::default())
        .await
        .unwrap();
    let desk = order::start(
        &conn,
        order::OrderOptions {
            keep_settled: Duration::from_secs(1),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let (ok, out) = tokio::task::spawn_blocking(move || {
        common::run(&[
            "traffic",
            "--duration",
            "4s",
            "--clients",
            "1",
            "--rate",
            "5",
            "--timeout-ms",
            "500",
            "--nats-url",
            &url,
        ])
    })
    .await
    .unwrap();
    eprintln!("{out}");
    assert!(ok, "{out}");
    assert!(!out.contains("LOST"), "{out}");
    assert!(
        out.contains("have expired from order-service (its --keep-settled): not checked"),
        "{out}"
    );
    assert!(out.contains("none lost"), "{out}");

    desk.shutdown().await.unwrap();
    risk.shutdown().await.unwrap();
    pricing.shutdown().await.unwrap();
}
