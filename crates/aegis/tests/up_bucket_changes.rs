//! `aegis up` on a NATS whose buckets were made by an older Aegis changes
//! them in place (as `aegis init --showcase` does) and says what it
//! changed, with the lines `init` prints: an operator upgrading a showcase
//! most wants to see them. Buckets it has just made itself are not named.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::Proc;

#[test]
fn up_names_each_change_it_makes_to_an_existing_bucket() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let client = async_nats::connect(&url).await.unwrap();
            let js = async_nats::jetstream::new(client);
            // The orders bucket as an Aegis before settled orders expired
            // made it: bounded, but with no per-value expiry.
            js.create_key_value(async_nats::jetstream::kv::Config {
                bucket: aegis_trading::order::ORDERS_BUCKET.into(),
                history: 1,
                max_bytes: aegis_trading::ORDERS.max_bytes,
                max_value_size: aegis_trading::ORDERS.max_value_size,
                ..Default::default()
            })
            .await
            .unwrap();
        });

    let state = tempfile::tempdir().unwrap();
    let mut up = Proc::up_attached(
        &url,
        "order=0,pricing=0,risk=0",
        state.path(),
        Duration::from_secs(120),
    );
    let out = up.output();
    let bounded = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("bounded KV_orders:"))
        .unwrap_or_else(|| panic!("no line names the change to KV_orders:\n{out}"));
    assert!(
        bounded.contains("per-value expiry off -> on")
            && bounded.contains("expiry markers none -> 60s"),
        "{bounded}\n{out}"
    );
    for made in ["locked ", "bounded KV_risk", "capped "] {
        assert!(
            !out.lines().map(str::trim).any(|l| l.starts_with(made)),
            "a bucket or stream `up` made itself is not a change to name ({made:?}):\n{out}"
        );
    }
}
