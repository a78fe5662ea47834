//! Commands against a real nats-server: progress and completion, failures,
//! unknown commands, and the sender's timeout: a command no worker took is
//! told apart from one a worker took and did not finish.

mod common;

use std::time::Duration;

use aegis_sdk::{
    commands::{Command, CommandError, CommandUpdate, Progress},
    rpc::{ErrorCode, WireError},
};
use common::{connect, server};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

#[derive(Debug, Serialize, Deserialize, aegis_sdk::schemars::JsonSchema)]
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
    // Said as what it is: nobody took it (it never ran, and never will),
    // not "did not complete" (which leaves whether it ran open).
    assert!(
        matches!(
            err,
            CommandError::NotTaken {
                worker_known: false,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("no worker of this service has ever consumed"),
        "{err}"
    );
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

/// A service whose worker ran once and is stopped: its consumer stays, so
/// a command to it is queued, and nobody takes it. The sender is told
/// that the worker is not running, and that the command never ran; a
/// command a worker took and did not finish in time stays a TIMEOUT (it
/// may have run).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_is_told_apart_when_its_worker_is_down_or_slow() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let worker = conn
        .commands()
        .worker("ledger-service")
        .handler("rebuild", |_c: Command<Value>, _p: Progress| async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Ok(json!(null))
        })
        .start()
        .await
        .unwrap();
    let send = |timeout| {
        let conn = conn.clone();
        async move {
            conn.commands()
                .send("ledger-service", "rebuild", &json!({}), timeout)
                .await
                .unwrap()
                .result::<Value>()
                .await
                .unwrap_err()
        }
    };

    let slow = send(Duration::from_millis(500)).await;
    eprintln!("taken but not finished: {slow}");
    assert!(matches!(slow, CommandError::Timeout { .. }), "{slow:?}");

    worker.shutdown().await;
    let down = send(Duration::from_millis(500)).await;
    eprintln!("worker down: {down}");
    assert!(
        matches!(down, CommandError::NotTaken { worker_known: true, ref service, .. } if service == "ledger-service"),
        "{down:?}"
    );
    assert!(down.to_string().contains("took no command since"), "{down}");
}

/// A rolling upgrade: the old pods' worker handles `rebuild_book` only, the
/// new pods' also `snapshot_book`; both share the service's consumer. A
/// `snapshot_book` the old worker happens to take must be left to the new
/// one, not failed for good with "no handler".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_only_newer_workers_handle_is_left_to_them() {
    let nats = server();
    let old = connect(&nats.url()).await;
    let new = connect(&nats.url()).await;
    let sender = connect(&nats.url()).await;
    let rebuild = |_c: Command<Value>, _p: Progress| async move { Ok(json!("rebuilt")) };
    let old_worker = old
        .commands()
        .worker("book-service")
        .handler("rebuild_book", rebuild)
        .start()
        .await
        .unwrap();
    let new_worker = new
        .commands()
        .worker("book-service")
        .handler("rebuild_book", rebuild)
        .handler(
            "snapshot_book",
            |cmd: Command<Value>, _p: Progress| async move { Ok(cmd.payload) },
        )
        .start()
        .await
        .unwrap();

    let sends = (0..10).map(|i| {
        let sender = sender.clone();
        async move {
            sender
                .commands()
                .send(
                    "book-service",
                    "snapshot_book",
                    &json!(i),
                    Duration::from_secs(20),
                )
                .await
                .unwrap()
                .result::<Value>()
                .await
        }
    });
    let results = futures::future::join_all(sends).await;
    for (i, result) in results.into_iter().enumerate() {
        match result {
            Ok(value) => assert_eq!(value, json!(i)),
            Err(e) => panic!("snapshot_book {i} failed: {e:?}"),
        }
    }
    old_worker.shutdown().await;
    new_worker.shutdown().await;
}

/// A worker busy past a command's deadline takes it afterwards and skips
/// it: the command never ran, so the sender is told NotTaken (which says
/// it may be sent again), not Timeout or Failed (which leave whether it
/// ran open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_its_busy_worker_takes_past_the_deadline_is_not_taken() {
    use std::sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    };
    let nats = server();
    let conn = connect(&nats.url()).await;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let ran = Arc::new(AtomicUsize::new(0));
    let worker = {
        let (gate, ran) = (gate.clone(), ran.clone());
        conn.commands()
            .worker("risk-service")
            .handler("block", move |_c: Command<Value>, _p: Progress| {
                let (gate, started_tx) = (gate.clone(), started_tx.clone());
                async move {
                    let _ = started_tx.send(());
                    let _permit = gate.acquire().await;
                    Ok(json!("unblocked"))
                }
            })
            .handler("recompute", move |_c: Command<Value>, _p: Progress| {
                let ran = ran.clone();
                async move {
                    ran.fetch_add(1, Ordering::SeqCst);
                    Ok(json!(null))
                }
            })
            .concurrency(1)
            .start()
            .await
            .unwrap()
    };
    let blocking = conn
        .commands()
        .send("risk-service", "block", &json!({}), Duration::from_secs(30))
        .await
        .unwrap();
    started.recv().await.unwrap();

    let timeout = Duration::from_secs(1);
    let handle = conn
        .commands()
        .send("risk-service", "recompute", &json!({}), timeout)
        .await
        .unwrap();
    // Free the worker once the command's deadline has passed.
    let past_deadline = tokio::time::Instant::now() + timeout + Duration::from_millis(100);
    let release = {
        let gate = gate.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(past_deadline).await;
            gate.add_permits(1);
        })
    };
    let err = handle.result::<Value>().await.unwrap_err();
    assert!(
        matches!(
            err,
            CommandError::NotTaken {
                worker_known: true,
                ..
            }
        ),
        "{err:?}"
    );
    release.await.unwrap();
    assert_eq!(
        blocking.result::<Value>().await.unwrap(),
        json!("unblocked")
    );
    worker.shutdown().await;
    assert_eq!(
        ran.load(Ordering::SeqCst),
        0,
        "the expired command never ran"
    );
}

/// The timeout bounds `send` and `result` together, from the moment `send`
/// is called: a slow publish (here the `COMMANDS` stream does not exist
/// yet, so `send` first hears "no stream" for a second, then creates it)
/// is not added on top.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_counts_from_the_send_whatever_the_publish_takes() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let timeout = Duration::from_secs(2);
    let started = std::time::Instant::now();
    let handle = conn
        .commands()
        .send("quote-service", "reprice", &json!({}), timeout)
        .await
        .unwrap();
    let sent = started.elapsed();
    let err = handle.result::<Value>().await.unwrap_err();
    let took = started.elapsed();
    eprintln!("send took {sent:?}, send and result {took:?}");
    assert!(matches!(err, CommandError::NotTaken { .. }), "{err:?}");
    // NotTaken comes a second or so after the deadline (asked again then);
    // half a second more for the checks themselves.
    assert!(
        took < timeout + Duration::from_millis(1_500),
        "send took {sent:?}, send and result {took:?}"
    );
}

/// A command the server refuses this user is told as not queued at once,
/// quoting the refusal: not followed by a look-up (or creation) of the
/// `COMMANDS` stream and a second send, which cannot help. A user that
/// may not create the stream (a service's user, on a server where nobody
/// created it yet) used to wait out that creation and be told "cannot
/// create or find the COMMANDS stream", the refusal lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_the_server_refuses_this_user_says_so_at_once() {
    let nats = common::server_with_dev(
        r#"publish: { deny: [ "commands.order-service.>", "$JS.API.STREAM.CREATE.>" ] }"#,
    );
    let conn = common::connect_as(&nats, "dev").await.unwrap();
    let asked = std::time::Instant::now();
    let err = conn
        .commands()
        .send(
            "order-service",
            "rebuild_book",
            &json!({}),
            Duration::from_secs(30),
        )
        .await
        .expect_err("refused");
    let text = aegis_sdk::startup::Causes(&err).to_string();
    assert!(
        matches!(err, CommandError::Publish { .. }) && text.contains("NATS refused this user"),
        "{text}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
}
