//! A command whose worker died holding it, against a real nats-server. The
//! server offers it again `ack_wait` after the worker's last in-progress
//! ack; with a timeout no longer than `ack_wait`, that is at or after the
//! command's deadline, so the next worker skips it. It may have run (the
//! dead worker took it): the sender is told TIMEOUT, never NOT_TAKEN ("it
//! never ran, send it again"), and no worker says it never ran.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_contracts::{
    commands::CommandReply,
    models::rfc3339,
    subjects,
    wire::{HEADER_COMMAND_ID, HEADER_REPLY_TO},
};
use aegis_sdk::{
    Connection,
    commands::{
        Command, CommandError, CommandUpdate, CommandWorker, HEADER_DEADLINE, HEADER_NOT_RUN,
        HEADER_SERVICE, Progress,
    },
    rpc::{ErrorCode, WireError},
};
use async_nats::jetstream::consumer::PullConsumer;
use common::{KillOnDrop, child_test, connect, eventually, server};
use futures::StreamExt;
use serde_json::{Value, json};

/// The ack_wait of every worker here: a dead worker's command is offered
/// again this long after its last in-progress ack.
const ACK_WAIT: Duration = Duration::from_secs(2);

/// Marks the child process and says where its NATS server is.
const CHILD_URL: &str = "AEGIS_TEST_COMMANDS_CRASH_URL";

/// The service of the child's worker.
const DESK: &str = "desk-book";

/// A worker of `service` whose `rebuild_book` counts its runs and completes.
async fn counting_worker(
    conn: &Connection,
    service: &str,
    runs: Arc<AtomicUsize>,
) -> CommandWorker {
    conn.commands()
        .worker(service)
        .ack_wait(ACK_WAIT)
        .handler("rebuild_book", move |_c: Command<Value>, _p: Progress| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(json!("rebuilt"))
            }
        })
        .start()
        .await
        .unwrap()
}

/// The consumer the workers of `service` share.
async fn worker_consumer(conn: &Connection, service: &str) -> PullConsumer {
    conn.jetstream()
        .get_stream(subjects::COMMANDS_STREAM)
        .await
        .unwrap()
        .get_consumer(&format!("{service}_commands"))
        .await
        .unwrap()
}

/// Waits until the workers of `service` hold no command and none waits.
async fn queue_settles(conn: &Connection, service: &str) {
    let js = conn.jetstream().clone();
    let name = format!("{service}_commands");
    eventually(Duration::from_secs(10), "the command is done with", || {
        let (js, name) = (js.clone(), name.clone());
        async move {
            let stream = js.get_stream(subjects::COMMANDS_STREAM).await.unwrap();
            let info = stream.consumer_info(name).await.unwrap();
            info.num_ack_pending == 0 && info.num_pending == 0
        }
    })
    .await;
}

/// The developer trial's case: a worker reports progress and is killed
/// (SIGKILL) holding the command; another worker starts. The command comes
/// back at its deadline, and the sender, which printed the dead worker's
/// progress, is told it may have run, not that it never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_worker_was_killed_after_progress_may_have_run() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let child = child_test("worker_that_dies_holding_a_command", CHILD_URL)
        .env(CHILD_URL, nats.url())
        .env_remove("AEGIS_CONFIG")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop::new(child);
    let js = conn.jetstream().clone();
    eventually(Duration::from_secs(20), "the child's worker pulls", || {
        let js = js.clone();
        async move {
            let Ok(stream) = js.get_stream(subjects::COMMANDS_STREAM).await else {
                return false;
            };
            stream
                .consumer_info(format!("{DESK}_commands"))
                .await
                .is_ok_and(|info| info.num_waiting > 0)
        }
    })
    .await;

    // The timeout of the trial's command equals ack_wait, as the defaults do.
    let mut handle = conn
        .commands()
        .send(DESK, "rebuild_book", &json!({"account": "K1"}), ACK_WAIT)
        .await
        .unwrap();
    let first = handle.next().await.unwrap();
    assert!(matches!(first, CommandUpdate::Progress { .. }), "{first:?}");
    child.kill();

    let runs = Arc::new(AtomicUsize::new(0));
    let successor = counting_worker(&conn, DESK, runs.clone()).await;
    let err = handle.next().await.unwrap_err();
    assert!(
        matches!(err, CommandError::Timeout { .. }),
        "a worker took it and reported progress, so it may have run: {err:?}"
    );
    queue_settles(&conn, DESK).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        0,
        "run again past its deadline"
    );
    successor.shutdown().await;
}

/// The worker of the test above, in a child process: it reports progress
/// and then holds the command until it is killed. Does nothing unless
/// started by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "helper: the child process of a_command_whose_worker_was_killed_after_progress_may_have_run"]
async fn worker_that_dies_holding_a_command() {
    let Ok(url) = std::env::var(CHILD_URL) else {
        return;
    };
    let conn = connect(&url).await;
    let _worker = conn
        .commands()
        .worker(DESK)
        .ack_wait(ACK_WAIT)
        .handler(
            "rebuild_book",
            |_c: Command<Value>, progress: Progress| async move {
                progress.report(10.0, "starting").await;
                std::future::pending::<Result<Value, WireError>>().await
            },
        )
        .start()
        .await
        .expect("the child's worker starts");
    std::future::pending::<()>().await;
}

/// What the next worker says, read on the wire: a command delivered before
/// (here taken by a worker that never answered, as a dead one) and offered
/// again past its deadline is answered TIMEOUT, "may have run", without the
/// header that says it never ran, whether or not its sender saw progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_never_says_a_command_delivered_before_did_not_run() {
    const SERVICE: &str = "ledger-service";
    let nats = server();
    let conn = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    // Makes the stream and the consumer, which outlive it.
    counting_worker(&conn, SERVICE, runs.clone())
        .await
        .shutdown()
        .await;

    let inbox = conn.client().new_inbox();
    let mut replies = conn.client().subscribe(inbox.clone()).await.unwrap();
    let deadline = chrono::Utc::now() + chrono::Duration::seconds(1);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_COMMAND_ID, "c-1");
    headers.insert(HEADER_REPLY_TO, inbox.as_str());
    headers.insert(HEADER_DEADLINE, rfc3339::format_utc(&deadline).as_str());
    conn.jetstream()
        .publish_with_headers(
            subjects::command_subject(SERVICE, "rebuild_book"),
            headers,
            "{}".into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    // A worker takes it and dies: no ack, no reply.
    let taken = worker_consumer(&conn, SERVICE)
        .await
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("the command is delivered")
        .unwrap();
    assert_eq!(taken.info().unwrap().delivered, 1);

    // Offered again ACK_WAIT later: past its deadline.
    let successor = counting_worker(&conn, SERVICE, runs.clone()).await;
    let reply = tokio::time::timeout(Duration::from_secs(10), replies.next())
        .await
        .expect("the next worker answers")
        .unwrap();
    let not_run = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_NOT_RUN))
        .map(|v| v.as_str().to_owned());
    assert_eq!(not_run, None, "said it never ran, on its second delivery");
    match serde_json::from_slice::<CommandReply>(&reply.payload).unwrap() {
        CommandReply::Failed { error } => {
            assert_eq!(error.code, ErrorCode::Timeout, "{error:?}");
            assert!(error.message.contains("may have run"), "{error:?}");
        }
        other => panic!("not a TIMEOUT: {other:?}"),
    }
    queue_settles(&conn, SERVICE).await;
    assert_eq!(runs.load(Ordering::SeqCst), 0, "run past its deadline");
    successor.shutdown().await;
}

/// A worker of an older version says "not run" on any expired delivery; a
/// sender that has had progress for the command knows better: a worker
/// took it, so it may have run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sender_that_saw_progress_never_reports_not_taken() {
    const SERVICE: &str = "risk-service";
    let nats = server();
    let conn = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    counting_worker(&conn, SERVICE, runs).await.shutdown().await;
    let mut handle = conn
        .commands()
        .send(SERVICE, "rebuild_book", &json!({}), Duration::from_secs(10))
        .await
        .unwrap();

    // The older worker: progress, then (its second delivery, past the
    // deadline by its clock) a skip marked "not run".
    let taken = worker_consumer(&conn, SERVICE)
        .await
        .fetch()
        .max_messages(1)
        .messages()
        .await
        .unwrap()
        .next()
        .await
        .expect("the command is delivered")
        .unwrap();
    let reply_to = taken
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_REPLY_TO))
        .unwrap()
        .as_str()
        .to_owned();
    // As a worker of the service sends it: the sender takes only replies
    // that name the service it sent the command to.
    let progress = serde_json::to_vec(&CommandReply::progress(10.0, "starting")).unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_SERVICE, SERVICE);
    conn.client()
        .publish_with_headers(reply_to.clone(), headers, progress.into())
        .await
        .unwrap();
    let first = handle.next().await.unwrap();
    assert!(matches!(first, CommandUpdate::Progress { .. }), "{first:?}");
    let skipped = serde_json::to_vec(&CommandReply::Failed {
        error: WireError::timeout("the command expired before a worker picked it up"),
    })
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(HEADER_NOT_RUN, "expired");
    headers.insert(HEADER_SERVICE, SERVICE);
    conn.client()
        .publish_with_headers(reply_to, headers, skipped.into())
        .await
        .unwrap();
    taken.ack().await.unwrap();

    let err = handle.next().await.unwrap_err();
    assert!(
        matches!(err, CommandError::Timeout { .. }),
        "it had progress, so it may have run: {err:?}"
    );
}
