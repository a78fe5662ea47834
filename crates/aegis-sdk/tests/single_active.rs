//! Sticky single-active services against a real nats-server: one ACTIVE
//! leader in the registry, standbys refusing with NOT_ACTIVE, `call_active`
//! finding the leader, and hand-over on graceful stop. A deposed leader's
//! late reply, forged records and a recreated elections bucket are in
//! `call_active.rs`.

mod common;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    contracts::models::InstanceStatus,
    rpc::{CallOptions, ErrorCode, RequestContext, Service, WireError},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

type Calls = Arc<Mutex<HashMap<String, usize>>>;

async fn order_instance(url: &str, id: &str, calls: Calls) -> (Service, Connection) {
    let conn = connect(url).await;
    let me = id.to_owned();
    let svc = conn
        .service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler_with_context("place", move |ctx: RequestContext, body: Value| {
            let (calls, me) = (calls.clone(), me.clone());
            async move {
                *calls.lock().unwrap().entry(me.clone()).or_default() += 1;
                let ms = body["sleep_ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, WireError>(json!({"by": me, "epoch": ctx.epoch}))
            }
        })
        .handler_any_role("health", |_: Value| async move { Ok(json!({"ok": true})) })
        .start()
        .await
        .unwrap();
    (svc, conn)
}

async fn leaders(conn: &Connection) -> Vec<(String, Option<u64>)> {
    let reader = aegis_sdk::RegistryReader::start(conn).await.unwrap();
    reader
        .by_service("order-service")
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .map(|i| (i.instance_id, i.epoch))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_active_leader_standbys_refuse_and_call_active_finds_the_leader() {
    let nats = server();
    let calls: Calls = Arc::default();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2", "order-3"] {
        instances.push(order_instance(&nats.url(), id, calls.clone()).await);
    }
    let client = connect(&nats.url()).await;
    eventually(Duration::from_secs(5), "one ACTIVE in the registry", || {
        let client = client.clone();
        async move { leaders(&client).await.len() == 1 }
    })
    .await;
    let reader = aegis_sdk::RegistryReader::start(&client).await.unwrap();
    let all = reader.by_service("order-service");
    assert_eq!(all.len(), 3);
    let leader = all
        .iter()
        .find(|i| i.status == InstanceStatus::Active)
        .unwrap()
        .clone();
    assert!(leader.epoch.is_some());
    for i in &all {
        assert_eq!(i.sticky_active_group.as_deref(), Some("default"));
        if i.instance_id != leader.instance_id {
            assert_eq!(i.status, InstanceStatus::Standby);
        }
    }

    // call_active lands on the leader and carries its epoch.
    for _ in 0..10 {
        let reply = client
            .rpc()
            .call_active::<_, Value>(
                "order-service",
                "default",
                "place",
                &json!({}),
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            reply.instance_id.as_deref(),
            Some(leader.instance_id.as_str())
        );
        assert_eq!(reply.epoch, leader.epoch);
        assert_eq!(reply.value["epoch"], json!(leader.epoch));
    }

    // A standby refuses without running the handler; any-role methods work everywhere.
    let standby = all
        .iter()
        .find(|i| i.status == InstanceStatus::Standby)
        .unwrap();
    let err = client
        .rpc()
        .call_instance::<_, Value>(
            "order-service",
            &standby.instance_id,
            "place",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotActive);
    assert_eq!(
        err.remote().unwrap().details,
        Some(json!({"leader": leader.instance_id}))
    );
    assert_eq!(
        calls.lock().unwrap().get(&standby.instance_id),
        None,
        "the standby ran nothing"
    );
    let ok: aegis_sdk::rpc::Reply<Value> = client
        .rpc()
        .call_instance(
            "order-service",
            &standby.instance_id,
            "health",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(ok.value["ok"], true);

    // Graceful stop of the leader hands over fast; call_active follows.
    let idx = instances
        .iter()
        .position(|(s, _)| s.instance_id() == leader.instance_id)
        .unwrap();
    let (svc, _conn) = instances.remove(idx);
    let stopped = Instant::now();
    svc.shutdown().await.unwrap();
    let reply = client
        .rpc()
        .call_active::<_, Value>(
            "order-service",
            "default",
            "place",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap();
    let took = stopped.elapsed();
    assert_ne!(
        reply.instance_id.as_deref(),
        Some(leader.instance_id.as_str())
    );
    assert!(
        reply.epoch > leader.epoch,
        "{:?} > {:?}",
        reply.epoch,
        leader.epoch
    );
    assert!(took < Duration::from_secs(2), "hand-over took {took:?}");
    for (svc, _) in instances {
        svc.shutdown().await.unwrap();
    }
}

/// An any-role method runs on every instance, and on the leader it is as
/// served by the leader: its context and its reply carry the fencing epoch;
/// on a standby neither does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_any_role_method_sees_the_epoch_on_the_leader_and_none_on_a_standby() {
    let nats = server();
    let mut instances = Vec::new();
    for id in ["order-1", "order-2"] {
        let conn = connect(&nats.url()).await;
        let svc = conn
            .service("order-service", "1.0.0")
            .instance_id(id)
            .single_active("default")
            .handler_any_role_with_context("status", |ctx: RequestContext, _: Value| async move {
                Ok::<_, WireError>(json!({ "epoch": ctx.epoch }))
            })
            .start()
            .await
            .unwrap();
        instances.push((svc, conn));
    }
    let all: Vec<_> = instances
        .iter()
        .map(|(svc, _)| svc.election().unwrap().leadership())
        .collect();
    eventually(Duration::from_secs(10), "one of them leads", || {
        let all = all.clone();
        async move { all.iter().any(|l| l.serving_epoch().is_some()) }
    })
    .await;
    let (leader, standby) = if all[0].serving_epoch().is_some() {
        (0, 1)
    } else {
        (1, 0)
    };
    let epoch = all[leader].serving_epoch().unwrap();
    let client = connect(&nats.url()).await;
    let status = |i: usize| {
        let (client, id) = (client.clone(), instances[i].0.instance_id().to_owned());
        async move {
            client
                .rpc()
                .call_instance::<_, Value>(
                    "order-service",
                    &id,
                    "status",
                    &json!({}),
                    &CallOptions::default(),
                )
                .await
                .unwrap()
        }
    };

    let on_leader = status(leader).await;
    assert_eq!(
        on_leader.value["epoch"],
        json!(epoch),
        "the handler's context"
    );
    assert_eq!(on_leader.epoch, Some(epoch), "the reply");
    let on_standby = status(standby).await;
    assert_eq!(on_standby.value["epoch"], Value::Null);
    assert_eq!(on_standby.epoch, None);
    for (svc, _) in instances {
        svc.shutdown().await.unwrap();
    }
}
