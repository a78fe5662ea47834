//! A `NOT_ACTIVE` that a handler returns itself, after whatever work it
//! did, is an ordinary error: a call that is not idempotent is not sent
//! again. Only a standby's own refusal (the handler never ran) is retried.

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
    rpc::{CallOptions, ErrorCode, Service, WireError},
};
use common::{connect, eventually, server};
use serde_json::Value;

/// An instance whose `write` counts its runs and then says its lease is
/// nearly gone (NOT_ACTIVE), as a leader's handler may after its write.
async fn writer(
    conn: &Connection,
    id: &str,
    single_active: bool,
    runs: Arc<AtomicUsize>,
) -> Service {
    let builder = conn.service("ledger", "1.0.0").instance_id(id);
    let builder = if single_active {
        builder.single_active("default")
    } else {
        builder
    };
    builder
        .handler("write", move |_: Value| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Err::<Value, _>(WireError::not_active("wrote, but my lease is nearly gone"))
            }
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaders_own_not_active_ends_a_call_active_that_is_not_idempotent() {
    let nats = server();
    let runs = Arc::new(AtomicUsize::new(0));
    let service = writer(&connect(&nats.url()).await, "ledger-1", true, runs.clone()).await;
    let election = service.election().unwrap().leadership();
    eventually(Duration::from_secs(10), "ledger-1 leads", || {
        let election = election.clone();
        async move { election.serving_epoch().is_some() }
    })
    .await;
    let client = connect(&nats.url()).await;

    let opts = CallOptions::timeout(Duration::from_secs(1));
    let started = Instant::now();
    let err = client
        .rpc()
        .call_active::<_, Value>("ledger", "default", "write", &Value::Null, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotActive, "{err:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "sent once, run once");
    assert!(
        started.elapsed() < Duration::from_millis(900),
        "ended at the answer, not at the deadline: {:?}",
        started.elapsed()
    );

    // An idempotent call may run again.
    runs.store(0, Ordering::SeqCst);
    let again = CallOptions::timeout(Duration::from_secs(1)).idempotent();
    client
        .rpc()
        .call_active::<_, Value>("ledger", "default", "write", &Value::Null, &again)
        .await
        .unwrap_err();
    assert!(runs.load(Ordering::SeqCst) >= 1);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instances_own_not_active_ends_a_call_with_that_is_not_idempotent() {
    let nats = server();
    let runs = Arc::new(AtomicUsize::new(0));
    // Two instances: a call retried on a refusal would run on both.
    let mut services = Vec::new();
    for id in ["ledger-1", "ledger-2"] {
        services.push(writer(&connect(&nats.url()).await, id, false, runs.clone()).await);
    }
    let client = connect(&nats.url()).await;

    let opts = CallOptions::timeout(Duration::from_secs(1));
    let err = client
        .rpc()
        .call_with::<_, Value>("ledger", "write", &Value::Null, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.code(), ErrorCode::NotActive, "{err:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "sent once, run once");
    for service in services {
        service.shutdown().await.unwrap();
    }
}

/// The refusal that callers may send again says so on the wire, for any
/// client: a standby's reply carries `Aegis-Refused`, a handler's own
/// NOT_ACTIVE does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_standbys_refusal_is_marked_as_refused() {
    let nats = server();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut services = Vec::new();
    for id in ["ledger-1", "ledger-2"] {
        services.push(writer(&connect(&nats.url()).await, id, true, runs.clone()).await);
    }
    let all = services
        .iter()
        .map(|s| s.election().unwrap().leadership())
        .collect::<Vec<_>>();
    eventually(Duration::from_secs(10), "one of them leads", || {
        let all = all.clone();
        async move { all.iter().any(|l| l.serving_epoch().is_some()) }
    })
    .await;
    let (leader, standby) = if all[0].serving_epoch().is_some() {
        ("ledger-1", "ledger-2")
    } else {
        ("ledger-2", "ledger-1")
    };
    let raw = async_nats::connect(nats.url()).await.unwrap();
    let ask = |id: &str| {
        let raw = raw.clone();
        let subject = format!("rpc.ledger.{id}.write");
        async move { raw.request(subject, "null".into()).await.unwrap() }
    };

    let refusal = ask(standby).await;
    let headers = refusal.headers.expect("an error reply has headers");
    assert_eq!(
        headers.get("Aegis-Error-Code").map(|v| v.as_str()),
        Some("NOT_ACTIVE")
    );
    assert_eq!(
        headers.get("Aegis-Refused").map(|v| v.as_str()),
        Some("standby")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0, "the standby ran nothing");

    let own = ask(leader).await;
    let headers = own.headers.expect("an error reply has headers");
    assert_eq!(
        headers.get("Aegis-Error-Code").map(|v| v.as_str()),
        Some("NOT_ACTIVE")
    );
    assert!(headers.get("Aegis-Refused").is_none(), "{headers:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    for service in services {
        service.shutdown().await.unwrap();
    }
}
