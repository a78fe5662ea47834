//! The operator's tools find a showcase by its state directory, as `aegis
//! up` and `aegis chaos` take it (`--state-dir`): its nodes' URL and its
//! operator's credentials, and, once it has stopped, an error that names
//! the directory rather than a port it never used.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::Proc;

/// `aegis ARGS` run in `cwd` (no `.aegis` there) without any credentials
/// of the environment: its success, and its stdout and stderr together.
async fn aegis_in(cwd: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(args).current_dir(cwd).env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    tokio::task::spawn_blocking(move || common::output(cmd))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tools_find_a_showcase_by_its_state_directory() {
    let state = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_owned();
    let (base, api) = common::free_up_ports();
    let mut up = Proc::spawn(&[
        "up",
        "--single-node",
        "--instances",
        "order=0,pricing=1,risk=0",
        "--base-port",
        &base.to_string(),
        "--api-port",
        &api.to_string(),
        "--state-dir",
        &dir,
    ]);
    up.wait_for("Aegis showcase is up", Duration::from_secs(150));

    // Run elsewhere, with no URL or credentials: the state directory
    // names them (pricing-1 registers soon after the showcase is up).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = aegis_in(elsewhere.path(), &["status", "--state-dir", &dir]).await;
        assert!(ok, "{out}");
        if out.contains("pricing-1") {
            break;
        }
        assert!(Instant::now() < deadline, "no pricing-1 within 30 s: {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ok, out) = aegis_in(
        elsewhere.path(),
        &["call", "pricing-service", "echo", "{}", "--state-dir", &dir],
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("served by pricing-1"), "{out}");

    up.terminate_within(Duration::from_secs(30));
    let credentials = state.path().join("credentials");
    for args in [
        vec!["status", "--state-dir", &dir],
        vec!["status", "--credentials", credentials.to_str().unwrap()],
    ] {
        let (ok, out) = aegis_in(elsewhere.path(), &args).await;
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!("no `aegis up` is running with state in {dir}")),
            "{args:?}: {out}"
        );
    }
}
