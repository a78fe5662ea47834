//! A sticky leader's goodbyes name the term they end, against a real
//! nats-server: its `leadership_lost` record carries the fencing epoch it
//! lost and, when it stops while leading, its `deregistered` record the
//! epoch it held. A standby's `deregistered` carries none. A reader of
//! `AEGIS_LOG` (the monitor's failover timeline) then need not guess which
//! term a goodbye ends.

mod common;

use std::time::Duration;

use aegis_sdk::{
    Connection,
    contracts::{
        InstanceStatus,
        control::ControlResponse,
        log::{LogKind, LogRecord},
        subjects::instance_control_subject,
    },
    election::Role,
    registry::RegistrationOptions,
    rpc::Service,
};
use common::{connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

const SERVICE: &str = "goodbye-service";

async fn instance(url: &str, id: &str) -> Service {
    connect(url)
        .await
        .service(SERVICE, "1.0.0")
        .instance_id(id)
        .single_active("default")
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .resign_after_failed_checks(1)
        .handler("echo", |v: Value| async move { Ok(v) })
        .start()
        .await
        .unwrap()
}

fn epoch_of(service: &Service) -> Option<u64> {
    match service.election()?.role() {
        Role::Leader { epoch } => Some(epoch),
        Role::Standby { .. } => None,
    }
}

/// The next record of `kind` published by `instance`.
async fn next_of(events: &mut async_nats::Subscriber, instance: &str, kind: LogKind) -> LogRecord {
    let subject = format!("aegis.log.{SERVICE}.{instance}");
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let msg = events.next().await.expect("the subscription lasts");
            let record: LogRecord = serde_json::from_slice(&msg.payload).unwrap();
            if msg.subject.as_str() == subject && record.kind == kind {
                return record;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{instance} published {kind} within 10 s"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_goodbyes_carry_the_epoch_of_the_term_they_end() {
    let nats = server();
    let watcher = async_nats::connect(nats.url()).await.unwrap();
    let mut events = watcher
        .subscribe(format!("aegis.log.{SERVICE}.*"))
        .await
        .unwrap();
    aegis_testkit::wait::server_caught_up(&watcher).await;

    let first = instance(&nats.url(), "g-1").await;
    eventually(Duration::from_secs(5), "g-1 leads", || async {
        epoch_of(&first).is_some()
    })
    .await;
    let second = instance(&nats.url(), "g-2").await;
    let client: Connection = connect(&nats.url()).await;
    // The leader hands over only to a standby it sees in the registry.
    eventually(Duration::from_secs(5), "g-2 is a STANDBY", || async {
        let all = client.discovery().instances(SERVICE).await.unwrap();
        all.iter()
            .any(|i| i.instance_id == "g-2" && i.status == InstanceStatus::Standby)
    })
    .await;
    let lost_epoch = epoch_of(&first).unwrap();
    let elected = next_of(&mut events, "g-1", LogKind::Elected).await;
    assert_eq!(elected.fields["epoch"], json!(lost_epoch));

    // An operator's drill: g-1 resigns, g-2 takes over.
    let reply = client
        .client()
        .request(
            instance_control_subject(SERVICE, "g-1"),
            serde_json::to_vec(&json!({"op": "unhealthy"}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let answer: ControlResponse = serde_json::from_slice(&reply.payload).unwrap();
    assert!(matches!(answer, ControlResponse::Ok(_)), "{answer:?}");
    let lost = next_of(&mut events, "g-1", LogKind::LeadershipLost).await;
    assert_eq!(
        lost.fields.get("epoch"),
        Some(&json!(lost_epoch)),
        "{lost:?}"
    );

    eventually(Duration::from_secs(5), "g-2 leads", || async {
        epoch_of(&second).is_some()
    })
    .await;
    let held = epoch_of(&second).unwrap();
    assert!(held > lost_epoch, "{held} after {lost_epoch}");

    // A standby's (here an unhealthy one's) deregistered ends no term: no
    // epoch. It stops first, so it cannot take the lead back.
    first.shutdown().await.unwrap();
    let stopped = next_of(&mut events, "g-1", LogKind::Deregistered).await;
    assert_eq!(stopped.fields.get("epoch"), None, "{stopped:?}");

    // The leader stops: its deregistered record names the term it held.
    second.shutdown().await.unwrap();
    let stopped = next_of(&mut events, "g-2", LogKind::Deregistered).await;
    assert_eq!(
        stopped.fields.get("epoch"),
        Some(&json!(held)),
        "{stopped:?}"
    );
}
