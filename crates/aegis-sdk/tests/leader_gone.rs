//! A `call_active` that is not idempotent, in flight on a leader that goes
//! away, against a real nats-server:
//!
//! - the leader's process is killed (SIGKILL): once another instance leads
//!   and nothing listens for the old one any more, no reply can come, so
//!   the call ends then with "it may have run", naming the instance, and
//!   does not wait out its deadline; it is not sent again;
//! - the leader stops gracefully with the call still running past the
//!   step-down wait: it still answers (as a deposed leader), so the call
//!   waits for that answer instead of giving up on a live process.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, RequestContext, RpcError, WireError},
};
use common::{ChildInstance, connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

const SERVICE: &str = "order-service";

/// Entry point of the child processes (does nothing when run directly).
#[tokio::test]
#[ignore = "a child instance, started by the tests in this file"]
async fn child_instance() {
    common::run_child_instance().await;
}

async fn call_sleep(
    client: &Connection,
    ms: u64,
    timeout: Duration,
) -> Result<aegis_sdk::rpc::Reply<Value>, RpcError> {
    client
        .rpc()
        .call_active::<_, Value>(
            SERVICE,
            "default",
            "sleep",
            &json!({ "ms": ms }),
            &CallOptions::timeout(timeout),
        )
        .await
}

/// Waits until `call_active` reaches `id` as the leader.
async fn leads(client: &Connection, id: &str) {
    let want = Value::String(id.to_owned());
    eventually(Duration::from_secs(10), "the first instance leads", || {
        let (client, want) = (client.clone(), want.clone());
        async move {
            client
                .rpc()
                .call_active::<_, Value>(
                    SERVICE,
                    "default",
                    "whoami",
                    &json!({}),
                    &CallOptions::timeout(Duration::from_millis(500)),
                )
                .await
                .is_ok_and(|reply| reply.value == want)
        }
    })
    .await;
}

/// Waits until a process answers `$SRV.PING` for `id`.
async fn runs(client: &Connection, id: &str) {
    let subject = format!("$SRV.PING.{SERVICE}.{id}");
    eventually(Duration::from_secs(10), "the standby runs", || {
        let (client, subject) = (client.client().clone(), subject.clone());
        async move { client.request(subject, "".into()).await.is_ok() }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_on_a_killed_leader_ends_once_another_leads() {
    let nats = server();
    let url = nats.url();
    let client = connect(&url).await;
    let mut a = ChildInstance::spawn_sticky("child_instance", &url, SERVICE, "order-a", "default");
    leads(&client, "order-a").await;
    let _b = ChildInstance::spawn_sticky("child_instance", &url, SERVICE, "order-b", "default");
    runs(&client, "order-b").await;
    let mut sleeping = client.client().subscribe("child.sleeping.*").await.unwrap();
    client.client().flush().await.unwrap();

    let deadline = Duration::from_secs(15);
    let call = {
        let client = client.clone();
        tokio::spawn(async move { call_sleep(&client, 12_000, deadline).await })
    };
    let took = tokio::time::timeout(Duration::from_secs(10), sleeping.next())
        .await
        .expect("the leader takes the call")
        .unwrap();
    assert_eq!(took.subject.as_str(), "child.sleeping.order-a");
    a.kill();
    let killed = Instant::now();

    let err = call
        .await
        .unwrap()
        .expect_err("a killed leader never answers");
    let after = killed.elapsed();
    assert_eq!(
        err.code(),
        ErrorCode::Timeout,
        "its outcome is unknown: {err}"
    );
    // The lease (400 ms), the new leader's win and two probes: well
    // under a second here; not the call's 15 s deadline.
    assert!(
        after < Duration::from_secs(4),
        "the call waited {after:?} after the kill: {err}"
    );
    let RpcError::LeaderGone {
        instance_id,
        subject,
        ..
    } = &err
    else {
        panic!("expected LeaderGone, got {err:?}");
    };
    assert_eq!(instance_id, "order-a");
    assert_eq!(subject, "rpc.order-service.order-a.sleep");
    let text = err.to_string();
    assert!(
        text.contains("order-a") && text.contains("may have run"),
        "{text}"
    );
    // Not sent again: the new leader took no `sleep`.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sleeping.next())
            .await
            .is_err(),
        "the call was sent again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_stopping_gracefully_past_the_step_down_wait_is_waited_for() {
    let nats = server();
    let runs_a = Arc::new(AtomicUsize::new(0));
    let sticky = |conn: Connection, id: &'static str, runs: Arc<AtomicUsize>| async move {
        conn.service(SERVICE, "1.0.0")
            .instance_id(id)
            .single_active("default")
            .handler_with_context("whoami", |ctx: RequestContext, _: Value| async move {
                Ok::<_, WireError>(ctx.instance_id.to_string())
            })
            .handler_with_context("sleep", move |ctx: RequestContext, body: Value| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let ms = body["ms"].as_u64().unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Ok::<_, WireError>(ctx.instance_id.to_string())
                }
            })
            .start()
            .await
            .unwrap()
    };
    let client = connect(&nats.url()).await;
    let a = sticky(connect(&nats.url()).await, "order-a", runs_a.clone()).await;
    leads(&client, "order-a").await;
    let b = sticky(
        connect(&nats.url()).await,
        "order-b",
        Arc::new(AtomicUsize::new(0)),
    )
    .await;

    // Past the step-down wait (2 s): the key moves while it runs.
    let call = {
        let client = client.clone();
        tokio::spawn(async move { call_sleep(&client, 4_000, Duration::from_secs(15)).await })
    };
    eventually(Duration::from_secs(5), "A runs the call", || {
        let runs_a = runs_a.clone();
        async move { runs_a.load(Ordering::SeqCst) == 1 }
    })
    .await;
    let stop = tokio::spawn(a.shutdown());
    let result = call.await.unwrap();
    // It ran, on a leader deposed by the time it answered: said as such,
    // with its answer, not given up on as gone.
    match result {
        Err(RpcError::DeposedLeader(deposed)) => {
            assert_eq!(deposed.instance_id, "order-a");
            assert_eq!(deposed.value::<Value>().unwrap(), json!("order-a"));
        }
        Ok(reply) => assert_eq!(reply.value, json!("order-a")),
        Err(e) => panic!("expected the stopping leader's answer, got {e:?}"),
    }
    let _ = stop.await.unwrap();
    b.shutdown().await.unwrap();
}
