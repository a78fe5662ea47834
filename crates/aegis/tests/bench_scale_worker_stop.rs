//! A worker process of `aegis bench scale` stops its instances when its
//! parent closes its stdin: each deregisters before the process ends. The
//! scale trial watched a worker of 100 instances stopped that way: the UI
//! showed 100 crashes ("the process is gone") whose records waited out
//! their TTL, since a dropped registration only schedules its
//! deregistration and the runtime ended first.

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aegis_testkit::NatsServer;
use futures::StreamExt;

const INSTANCES: usize = 20;

async fn registered(js: &async_nats::jetstream::Context) -> usize {
    let Ok(kv) = js.get_key_value("service_registry").await else {
        return 0;
    };
    let Ok(keys) = kv.keys().await else {
        return 0;
    };
    keys.filter_map(|k| async move { k.ok() }).count().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_stdin_closes_deregisters_its_instances() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_aegis"))
        .args([
            "bench",
            "scale",
            "--role",
            "worker",
            "--nats-url",
            &url,
            "--index",
            "0",
            "--processes",
            "1",
            "--instances",
            &INSTANCES.to_string(),
            "--callers",
            "0",
            "--per-service",
            "10",
        ])
        .env("AEGIS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(worker.stdout.take().unwrap());
    let ready = tokio::task::spawn_blocking(move || {
        stdout
            .lines()
            .map_while(Result::ok)
            .any(|l| l.trim() == "READY")
    });
    assert!(
        tokio::time::timeout(Duration::from_secs(60), ready)
            .await
            .expect("READY within 60 s")
            .unwrap(),
        "the worker ended before READY"
    );
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    assert_eq!(registered(&js).await, INSTANCES);

    // The parent's stop: stdin closes.
    drop(worker.stdin.take());
    let stopped = Instant::now();
    let status = tokio::task::spawn_blocking(move || worker.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    // Gone with the process, not after the TTL (15 s by default).
    let left = registered(&js).await;
    assert_eq!(
        left,
        0,
        "{left} records left {:?} after stdin closed",
        stopped.elapsed()
    );
}
