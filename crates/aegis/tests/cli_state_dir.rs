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

/// `dir` made to look like the state directory of a running `aegis up`:
/// its `up.pid` names this (live) test process (written as `aegis up` writes
/// it, with its start time), its credentials file names
/// an operator, and, when given, its `nats-url` file names `url` (none: a
/// showcase whose NATS is not up yet).
fn fake_showcase(dir: &Path, url: Option<&str>) {
    std::fs::create_dir_all(dir).unwrap();
    aegis::up::supervisor::write_pid(&dir.join("up.pid"), std::process::id()).unwrap();
    std::fs::write(
        dir.join("credentials"),
        "AEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD=secret\n",
    )
    .unwrap();
    if let Some(url) = url {
        std::fs::write(dir.join("nats-url"), url).unwrap();
    }
}

/// As [`aegis_in`], with `env` added.
async fn aegis_with_env(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(args).current_dir(cwd).env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    tokio::task::spawn_blocking(move || common::output(cmd))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_given_a_state_dir_with_no_showcase_is_refused_not_sent_to_the_local_one() {
    // A showcase in the working directory's `.aegis`, and a mistyped
    // --state-dir: the drill must not fall back to `.aegis`.
    let cwd = tempfile::tempdir().unwrap();
    fake_showcase(&cwd.path().join(".aegis"), Some("nats://127.0.0.1:1"));
    let typo = tempfile::tempdir().unwrap();
    let typo = typo.path().to_str().unwrap();
    for args in [
        vec![
            "chaos",
            "unhealthy",
            "pricing-service",
            "--for",
            "1s",
            "--state-dir",
            typo,
        ],
        vec!["chaos", "--state-dir", typo, "healthy", "pricing-service"],
    ] {
        let (ok, out) = aegis_in(cwd.path(), &args).await;
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!("no `aegis up` is running with state in {typo}")),
            "{args:?}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_showcase_whose_nats_is_not_up_yet_is_said_to_be_starting() {
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), None);
    let dir = state.path().to_str().unwrap();
    let (ok, out) = aegis_in(state.path(), &["status", "--state-dir", dir]).await;
    assert!(!ok, "{out}");
    assert!(out.contains("is still starting"), "{out}");
    assert!(!out.contains("4222"), "no default URL is tried: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_explicit_state_dir_beats_aegis_nats_url_and_the_flag_beats_both() {
    let nats =
        aegis_testkit::NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), Some(&nats.url()));
    let dir = state.path().to_str().unwrap();
    let elsewhere = [("AEGIS_NATS_URL", "nats://127.0.0.1:1")];
    // The test server knows no operator of this fake showcase: reaching
    // it, and being refused there, shows which URL won.
    let (_, out) = aegis_with_env(state.path(), &["status", "--state-dir", dir], &elsewhere).await;
    assert!(
        out.contains(&format!("NATS at {}", nats.url())) && !out.contains("127.0.0.1:1"),
        "--state-dir wins over AEGIS_NATS_URL: {out}"
    );
    let (ok, out) = aegis_with_env(
        state.path(),
        &[
            "status",
            "--state-dir",
            dir,
            "--nats-url",
            "nats://127.0.0.1:1",
        ],
        &[],
    )
    .await;
    assert!(!ok, "--nats-url wins over --state-dir: {out}");
    assert!(out.contains("127.0.0.1:1"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_within_its_startup_timeout_for_the_showcase_to_start() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let mut service = Proc::spawn(&[
        "service",
        "echo",
        "--instance-id",
        "echo-waits",
        "--state-dir",
        dir,
        "--startup-timeout",
        "60s",
    ]);
    // It says what it waits for, first no showcase, then one starting.
    service.wait_for(
        &format!("waiting for `aegis up` with state in {dir}"),
        Duration::from_secs(30),
    );
    fake_showcase(state.path(), None);
    service.wait_for("is still starting", Duration::from_secs(30));
    let nats =
        aegis_testkit::NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    std::fs::write(state.path().join("nats-url"), nats.url()).unwrap();
    service.wait_for("instance echo-waits started", Duration::from_secs(30));
    service.terminate_within(Duration::from_secs(30));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_service_is_not_told_of_a_flag_it_ignores() {
    let nats =
        aegis_testkit::NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), Some(&nats.url()));
    let dir = state.path().to_str().unwrap();
    let mut cmd = Command::new(common::AEGIS);
    cmd.args([
        "service",
        "echo",
        "--state-dir",
        dir,
        "--startup-timeout",
        "0s",
    ])
    .env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    cmd.envs([
        ("AEGIS_NATS_USER", "nobody"),
        ("AEGIS_NATS_PASSWORD", "wrong"),
    ]);
    let (ok, out) = tokio::task::spawn_blocking(move || common::output(cmd))
        .await
        .unwrap();
    assert!(!ok, "{out}");
    assert!(out.contains("refused"), "{out}");
    assert!(out.contains("AEGIS_NATS_USER"), "{out}");
    assert!(
        !out.contains("--credentials"),
        "a flag `aegis service` ignores: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_given_a_state_dir_with_no_showcase_fails_at_once() {
    // Nothing to wait for: no `aegis up` runs there (a typo, or a stopped
    // showcase). Only `aegis service` waits for a showcase to start.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let started = Instant::now();
    let (ok, out) = aegis_in(
        state.path(),
        &["init", "--state-dir", dir, "--startup-timeout", "20s"],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("no `aegis up` is running with state in {dir}")),
        "{out}"
    );
    assert!(!out.contains("retrying"), "{out}");
    // Well under the 20 s it would wait (3 s unloaded; slack for a busy
    // machine).
    assert!(started.elapsed() < Duration::from_secs(10), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nats_given_a_state_dir_ignores_an_exported_aegis_nats_url() {
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), Some("nats://127.0.0.1:4333"));
    let dir = state.path().to_str().unwrap();
    let elsewhere = [("AEGIS_NATS_URL", "nats://elsewhere:4222")];
    for args in [
        vec!["chaos", "--state-dir", dir, "kill-nats", "1"],
        vec!["chaos", "kill-nats", "1", "--state-dir", dir],
    ] {
        // The fake showcase runs no node: it fails, but not over a flag
        // never given.
        let (ok, out) = aegis_with_env(state.path(), &args, &elsewhere).await;
        assert!(!ok, "{args:?}: {out}");
        assert!(
            !out.contains("is none of its nodes") && !out.contains("--nats-url"),
            "{args:?}: {out}"
        );
    }
    // Without --state-dir (the showcase of `.aegis`) the variable is still
    // refused, by its name.
    let cwd = tempfile::tempdir().unwrap();
    fake_showcase(&cwd.path().join(".aegis"), Some("nats://127.0.0.1:4333"));
    let (ok, out) = aegis_with_env(cwd.path(), &["chaos", "kill-nats", "1"], &elsewhere).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("AEGIS_NATS_URL nats://elsewhere:4222 is none of its nodes")
            && !out.contains("--nats-url"),
        "{out}"
    );
    // The flag itself is still refused.
    let (ok, out) = aegis_with_env(
        state.path(),
        &[
            "chaos",
            "--state-dir",
            dir,
            "kill-nats",
            "1",
            "--nats-url",
            "nats://elsewhere:4222",
        ],
        &[],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("is none of its nodes"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_url_given_with_the_default_value_still_beats_a_state_dir() {
    // Nothing is expected to listen on 4333; the error (or answer) shows
    // which URL was tried.
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), Some("nats://127.0.0.1:4333"));
    let dir = state.path().to_str().unwrap();
    let (ok, out) = aegis_in(
        state.path(),
        &[
            "status",
            "--state-dir",
            dir,
            "--nats-url",
            "nats://127.0.0.1:4222",
        ],
    )
    .await;
    assert!(!out.contains("4333"), "the flag wins: {out}");
    if !ok {
        assert!(out.contains("127.0.0.1:4222"), "{out}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_credentials_of_a_showcase_still_starting_say_so() {
    // `aegis up --state-dir D` teaches `--credentials D/credentials`; while
    // it starts, the default URL (maybe another showcase's) is not tried.
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), None);
    let credentials = state.path().join("credentials");
    let cwd = tempfile::tempdir().unwrap();
    let (ok, out) = aegis_in(
        cwd.path(),
        &["status", "--credentials", credentials.to_str().unwrap()],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(out.contains("is still starting"), "{out}");
    assert!(!out.contains("4222"), "no default URL is tried: {out}");
}

/// Tried as a new operator would: other credentials in the environment,
/// refused by the showcase given with --state-dir, were answered with
/// advice to pass `--credentials .aegis/credentials` "from the directory it
/// was started in". The error names the directory given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_told_where_the_given_showcase_keeps_its_own() {
    let nats = aegis_testkit::NatsServer::builder()
        .app_users(r#"[ { user: "operator", password: "secret" } ]"#.into())
        .start()
        .expect("start nats-server (run `make bootstrap`)");
    let state = tempfile::tempdir().unwrap();
    fake_showcase(state.path(), Some(&nats.url()));
    let dir = state.path().to_str().unwrap();
    let (ok, out) = aegis_with_env(
        state.path(),
        &["status", "--state-dir", dir],
        &[
            ("AEGIS_NATS_USER", "svc-order-service"),
            ("AEGIS_NATS_PASSWORD", "guess"),
        ],
    )
    .await;
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "The operator's are in {}",
            state.path().join("credentials").display()
        )),
        "{out}"
    );
    assert!(!out.contains(".aegis/credentials"), "{out}");
}
