//! `aegis command` names the worker instance that runs the command, against
//! a real nats-server running the showcase's users and permissions, and a
//! real SDK command worker: each progress line says `(on INSTANCE)`, and
//! the closing line says which instance completed it.

mod common;

use aegis::permissions::ServiceRole;
use aegis_sdk::{
    commands::{Command as Cmd, Progress},
    rpc::WireError,
};
use common::operator_bus::OperatorBus as Bus;
use serde_json::{Value, json};

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
