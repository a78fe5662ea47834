//! `aegis command` names the worker instance that runs the command, against
//! a real nats-server running the showcase's users and permissions, and a
//! real SDK command worker: each progress line says `(on INSTANCE)`, and
//! the closing line says which instance completed it. A command taken
//! again by the same instance (its process restarted under the same id)
//! is said as a restart on it.

mod common;

use aegis::permissions::ServiceRole;
use aegis_sdk::{
    commands::{Command as Cmd, Progress},
    rpc::WireError,
};
use common::operator_bus::OperatorBus as Bus;
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};

/// The service the test's worker runs as, with a user of its own.
const SERVICE: &str = "recon-service";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_s_progress_names_the_worker_running_it() {
    let bus = Bus::start(ServiceRole {
        service: SERVICE.to_owned(),
        ..Default::default()
    });
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let conn = bus.sdk(&format!("svc-{SERVICE}")).await;
    let worker = conn
        .commands()
        .worker(SERVICE)
        .instance_id("recon-7")
        .handler("rebuild", |_: Cmd<Value>, progress: Progress| async move {
            progress.report(25.0, "reading the book").await;
            Ok::<_, WireError>(json!("rebuilt"))
        })
        .start()
        .await
        .unwrap();

    let (code, out, err) = bus.aegis(&["command", SERVICE, "rebuild"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("progress  25% reading the book (on recon-7)"),
        "{err}"
    );
    assert!(err.contains("completed on recon-7"), "{err}");
    assert!(!err.contains("restarted"), "one run, on one worker: {err}");
    worker.shutdown().await;
}

/// A worker with a fixed instance id reports progress and goes silent (its
/// process died); restarted under the same id, it takes the command again
/// once the first run's `ack_wait` ran out and runs it from the start:
/// `aegis command` says the restart on that instance, the work may have
/// run partly before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_taken_again_by_the_same_instance_is_said_as_a_restart() {
    const ACK_WAIT: Duration = Duration::from_secs(2);
    let bus = Bus::start(ServiceRole {
        service: SERVICE.to_owned(),
        ..Default::default()
    });
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let first_conn = bus.sdk(&format!("svc-{SERVICE}")).await;
    let halfway = Arc::new(tokio::sync::Notify::new());
    let reached = halfway.clone();
    let _first = first_conn
        .commands()
        .worker(SERVICE)
        .instance_id("recon-7")
        .ack_wait(ACK_WAIT)
        .handler("rebuild", move |_: Cmd<Value>, progress: Progress| {
            let reached = reached.clone();
            async move {
                progress.report(10.0, "starting").await;
                progress.report(60.0, "half").await;
                reached.notify_one();
                std::future::pending::<Result<Value, WireError>>().await
            }
        })
        .start()
        .await
        .unwrap();

    let restart = async {
        halfway.notified().await;
        // The first process goes silent: no more in-progress acks.
        first_conn.client().drain().await.unwrap();
        let conn = bus.sdk(&format!("svc-{SERVICE}")).await;
        conn.commands()
            .worker(SERVICE)
            .instance_id("recon-7")
            .ack_wait(ACK_WAIT)
            .handler("rebuild", |_: Cmd<Value>, progress: Progress| async move {
                progress.report(10.0, "starting").await;
                Ok::<_, WireError>(json!("rebuilt"))
            })
            .start()
            .await
            .unwrap()
    };
    let ((code, out, err), second) = tokio::join!(
        bus.aegis(&["command", SERVICE, "rebuild", "--timeout-ms", "30000"]),
        restart
    );
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("restarted on recon-7: progress went back from 60% to 10%"),
        "{err}"
    );
    assert!(err.contains("may have run partly"), "{err}");
    assert!(err.contains("completed on recon-7"), "{err}");
    second.shutdown().await;
}
