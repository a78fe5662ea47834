//! Commands against a real nats-server: progress and completion, failures,
//! unknown commands, and the sender's timeout.

mod common;

use std::time::Duration;

use aegis_sdk::{
    commands::{Command, CommandError, CommandUpdate, Progress},
    rpc::{ErrorCode, WireError},
};
use common::{connect, server};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize)]
struct Rebuild {
    account: String,
    fail: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_then_completion_reach_the_sender() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let worker = conn
        .commands()
        .worker("order-service")
        .handler(
            "rebuild_book",
            |cmd: Command<Rebuild>, progress: Progress| async move {
                if cmd.payload.fail {
                    return Err(WireError::invalid_request("account is frozen"));
                }
                progress.report(25.0, "loading").await;
                progress.report(75.0, "replaying").await;
                Ok(json!({"account": cmd.payload.account, "orders": 3}))
            },
        )
        .start()
        .await
        .unwrap();

    let mut handle = conn
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &Rebuild {
                account: "A1".into(),
                fail: false,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let mut updates = Vec::new();
    loop {
        let u = handle.next().await.unwrap();
        let done = matches!(u, CommandUpdate::Completed(_));
        updates.push(u);
        if done {
            break;
        }
    }
    assert_eq!(
        updates,
        vec![
            CommandUpdate::Progress {
                percent: 25.0,
                message: "loading".into()
            },
            CommandUpdate::Progress {
                percent: 75.0,
                message: "replaying".into()
            },
            CommandUpdate::Completed(json!({"account": "A1", "orders": 3})),
        ]
    );

    let failed = conn
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &Rebuild {
                account: "A2".into(),
                fail: true,
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    match failed {
        CommandError::Failed(e) => {
            assert_eq!(e.code, ErrorCode::InvalidRequest);
            assert_eq!(e.message, "account is frozen");
        }
        other => panic!("expected Failed, got {other:?}"),
    }

    let unknown = conn
        .commands()
        .send(
            "order-service",
            "no_such_command",
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    assert!(
        matches!(unknown, CommandError::Failed(ref e) if e.code == ErrorCode::NotFound),
        "{unknown:?}"
    );

    let bad_payload = conn
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &json!({"nope": 1}),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    assert!(
        matches!(bad_payload, CommandError::Failed(ref e) if e.code == ErrorCode::InvalidRequest)
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_nobody_takes_times_out_and_is_not_run_later() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let started = std::time::Instant::now();
    let err = conn
        .commands()
        .send(
            "risk-service",
            "recompute",
            &json!({}),
            Duration::from_millis(300),
        )
        .await
        .unwrap()
        .result::<Value>()
        .await
        .unwrap_err();
    assert!(matches!(err, CommandError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A worker that starts later sees the expired command and does not run it.
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ran2 = ran.clone();
    let worker = conn
        .commands()
        .worker("risk-service")
        .handler("recompute", move |_c: Command<Value>, _p: Progress| {
            let ran = ran2.clone();
            async move {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                Ok(json!(null))
            }
        })
        .start()
        .await
        .unwrap();
    // A fresh command proves the worker is consuming; the expired one came first.
    let ok: Value = conn
        .commands()
        .send(
            "risk-service",
            "recompute",
            &json!({}),
            Duration::from_secs(10),
        )
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(ok, Value::Null);
    worker.shutdown().await;
    assert_eq!(
        ran.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the fresh command ran"
    );
}
