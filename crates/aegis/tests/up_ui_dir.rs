//! `aegis up --ui-dir DIR --no-ui-build`: a directory given with `--ui-dir`
//! is served as it is and never built, so saying so again with
//! `--no-ui-build` (a script that always passes it) is accepted, and the
//! showcase serves that directory.

mod common;

use std::time::{Duration, Instant};

use aegis_testkit::NatsServer;
use common::{Proc, free_port};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ui_dir_with_no_ui_build_is_served_as_it_is() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let state = tempfile::tempdir().unwrap();
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(
        ui.path().join("index.html"),
        "<html><body>prebuilt export</body></html>",
    )
    .unwrap();
    let port = free_port();
    let args: Vec<String> = [
        "up",
        "--nats-url",
        &nats.url(),
        "--instances",
        "order=0,pricing=0,risk=0",
        "--api-port",
        &port.to_string(),
        "--state-dir",
        state.path().to_str().unwrap(),
        "--ui-dir",
        ui.path().to_str().unwrap(),
        "--no-ui-build",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let mut up = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut up = Proc::spawn(&args);
        up.wait_for("Ctrl-C stops everything", Duration::from_secs(120));
        up
    })
    .await
    .unwrap();
    let url = format!("http://127.0.0.1:{port}/");
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let answer = async { reqwest::get(&url).await?.error_for_status()?.text().await };
        match answer.await {
            Ok(body) => break body,
            Err(e) => assert!(Instant::now() < deadline, "{url}: {e}\n{}", up.output()),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(body.contains("prebuilt export"), "{body}");
    tokio::task::spawn_blocking(move || up.terminate_within(Duration::from_secs(30)))
        .await
        .unwrap();
}

#[test]
fn a_ui_dir_with_no_ui_build_is_still_checked_for_an_export() {
    let empty = tempfile::tempdir().unwrap();
    let (ok, out) = common::run(&[
        "up",
        "--ui-dir",
        empty.path().to_str().unwrap(),
        "--no-ui-build",
    ]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("no index.html there"),
        "refused for what is wrong, not for the combination:\n{out}"
    );
}
