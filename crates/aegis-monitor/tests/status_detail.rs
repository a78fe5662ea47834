//! What an instance's failed health check said (`metadata.statusDetail`)
//! is shown with its reason, in the API and the live stream: for a plain
//! instance UNHEALTHY with `health_check`, and for a sticky leader that is
//! shown ACTIVE, `degraded`, because its record says so. The text comes
//! from a record anyone who can write the registry writes, so what is
//! shown has no control characters and is cut to the bound.

mod common;

use std::time::Duration;

use aegis_contracts::control::STATUS_DETAIL_MAX_CHARS;
use aegis_sdk::{
    contracts::{InstanceStatus, ServiceInstance},
    election::{LeaderRecord, ensure_election_bucket},
};
use common::{Harness, VIEWER, eventually};
use serde_json::Value;

const FULL: &str = "the order store is full: 1.0 MiB of 1.0 MiB used; orders are refused until settled ones expire (kept 6h)";

fn failing(service: &str, id: &str, reason: &str, detail: &str) -> ServiceInstance {
    let mut r = ServiceInstance::new(service, id, "1.0.0", chrono::Utc::now());
    r.status = InstanceStatus::Unhealthy;
    r.metadata.insert("statusReason".into(), reason.into());
    r.metadata.insert(
        "statusSince".into(),
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .into(),
    );
    r.metadata.insert("statusDetail".into(), detail.into());
    r
}

async fn one(h: &Harness, service: &str, id: &str) -> Option<Value> {
    let r = h
        .get(&format!("/api/instances/{service}/{id}"), Some(VIEWER))
        .await;
    (r.status == 200).then_some(r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_health_checks_words_are_shown_with_its_reason() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let conn = h.connect().await;
    let mut events = common::Events::open(addr, "instance").await;
    events.next_named("hello").await;
    let js = conn.jetstream();
    let registry = js.get_key_value("service_registry").await.unwrap();
    let write = |record: ServiceInstance| {
        let registry = registry.clone();
        async move {
            registry
                .put(
                    format!(
                        "service-instances.{}.{}",
                        record.service_name, record.instance_id
                    ),
                    serde_json::to_vec(&record).unwrap().into(),
                )
                .await
                .unwrap();
        }
    };

    // A plain instance whose check fails, with words that would move a
    // terminal's cursor and more of them than the bound.
    let long = format!("{FULL}\r\n\x1b[2J\u{202E}{}", "x".repeat(400));
    write(failing(
        "pricing-service",
        "pricing-1",
        "health_check",
        &long,
    ))
    .await;
    // One an operator made unhealthy: its record's words are not why.
    write(failing("pricing-service", "pricing-2", "operator", FULL)).await;
    // A sticky leader whose check fails: it holds the key, so ACTIVE,
    // degraded.
    let mut leader = failing("order-service", "order-1", "health_check", FULL);
    leader.sticky_active_group = Some("default".into());
    leader.epoch = Some(1);
    let keys = ensure_election_bucket(js, 1).await.unwrap();
    keys.put(
        aegis_sdk::contracts::subjects::election_key("order-service", "default"),
        serde_json::to_vec(&LeaderRecord {
            instance_id: "order-1".to_owned(),
            epoch: 0,
            lease_ms: 60_000,
            renewed_at: chrono::Utc::now().to_rfc3339(),
        })
        .unwrap()
        .into(),
    )
    .await
    .unwrap();
    write(leader).await;

    eventually(Duration::from_secs(10), "the three listed", || async {
        one(&h, "pricing-service", "pricing-1").await.is_some()
            && one(&h, "pricing-service", "pricing-2").await.is_some()
            && one(&h, "order-service", "order-1")
                .await
                .is_some_and(|i| i["status"] == "ACTIVE")
    })
    .await;

    let plain = one(&h, "pricing-service", "pricing-1").await.unwrap();
    assert_eq!(plain["statusReason"], "health_check", "{plain}");
    let shown = plain["statusDetail"].as_str().expect("a detail").to_owned();
    assert!(
        shown.starts_with(&format!("{FULL} [2Jxxx")),
        "control and format characters removed: {shown:?}"
    );
    assert!(shown.ends_with('…'), "{shown:?}");
    assert_eq!(shown.chars().count(), STATUS_DETAIL_MAX_CHARS, "{shown:?}");
    assert!(!shown.chars().any(char::is_control), "{shown:?}");
    // The record's own copy, shown with the record, is the same text: the
    // raw one (a cursor move, a bidi override, 500 characters) is no
    // more shown there than here.
    assert_eq!(plain["metadata"]["statusDetail"], shown.as_str(), "{plain}");

    let operator = one(&h, "pricing-service", "pricing-2").await.unwrap();
    assert_eq!(operator["statusReason"], "operator", "{operator}");
    assert!(
        operator.get("statusDetail").is_none(),
        "absent, not null: {operator}"
    );
    assert_eq!(operator["metadata"]["statusDetail"], FULL, "{operator}");

    let degraded = one(&h, "order-service", "order-1").await.unwrap();
    assert_eq!(
        (&degraded["status"], &degraded["statusReason"]),
        (&Value::from("ACTIVE"), &Value::from("degraded")),
        "{degraded}"
    );
    assert_eq!(degraded["statusDetail"], FULL, "{degraded}");

    // The list says the same.
    let list = h.get("/api/instances", Some(VIEWER)).await.body;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["instanceId"] == "order-1")
        .unwrap();
    assert_eq!(listed["statusDetail"], FULL, "{listed}");

    // And the live stream: the last event of each instance carries it.
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !(last
        .get("order-1")
        .is_some_and(|i| i["statusReason"] == "degraded")
        && last.contains_key("pricing-1")
        && last.contains_key("pricing-2"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stream's events: {last:#?}"
        );
        let e = events.next_named("instance").await;
        if e["type"] == "instanceUpserted" {
            let i = &e["instance"];
            last.insert(i["instanceId"].as_str().unwrap().to_owned(), i.clone());
        }
    }
    assert_eq!(
        last["order-1"]["statusDetail"], FULL,
        "{:?}",
        last["order-1"]
    );
    assert_eq!(last["pricing-1"]["statusDetail"], shown);
    assert_eq!(last["pricing-1"]["metadata"]["statusDetail"], shown);
    assert!(last["pricing-2"].get("statusDetail").is_none());

    // Healthy again: the detail goes, though the record still carries it.
    let mut healed = failing("pricing-service", "pricing-1", "health_check", FULL);
    healed.status = InstanceStatus::Active;
    write(healed).await;
    eventually(Duration::from_secs(10), "pricing-1 healthy", || async {
        one(&h, "pricing-service", "pricing-1")
            .await
            .is_some_and(|i| i["status"] == "ACTIVE")
    })
    .await;
    let healed = one(&h, "pricing-service", "pricing-1").await.unwrap();
    assert!(healed.get("statusDetail").is_none(), "{healed}");
    stop.cancel();
}
