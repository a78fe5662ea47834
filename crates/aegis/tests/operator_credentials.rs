//! The operator's tools (`status`, `call`, `traffic`, `chaos`) refused by a
//! NATS that wants credentials say so once, in their own words, and name
//! where a showcase keeps the credentials however it was started.

mod common;

use std::{path::Path, process::Command};

use aegis_testkit::NatsServer;
use common::{AEGIS, CREDENTIAL_VARS};

/// Runs `aegis ARGS` in `dir` with none of the environment that would give
/// it credentials or change its logging; returns success and stderr.
fn aegis_in(dir: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(AEGIS);
    cmd.args(args).current_dir(dir).env("NO_COLOR", "1");
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tool_without_credentials_says_so_once_and_where_they_are() {
    let nats = NatsServer::builder()
        .app_users(r#"[ { user: "app", password: "s3cret" } ]"#.into())
        .start()
        .expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    // No `.aegis/credentials` here to be found.
    let cwd = tempfile::tempdir().unwrap();
    for args in [
        &["status"][..],
        &["call", "order-service", "get_order", "{}"],
        &["traffic", "--duration", "1s"],
        &["chaos", "unhealthy", "order-1"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--nats-url", &url]);
        let (ok, err) = aegis_in(cwd.path(), &args);
        assert!(!ok, "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(
            lines.len(),
            1,
            "{args:?}: only the error, no log line:\n{err}"
        );
        assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
        // `aegis up` keeps them in its state directory: `.aegis` unless
        // it was started with --state-dir.
        assert!(
            err.contains("<state-dir>/credentials") && err.contains("--credentials"),
            "{args:?}: names where the credentials are: {err}"
        );
        assert!(
            !err.contains("<that directory>/.aegis/credentials"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_file_that_is_not_a_credentials_file_is_refused_before_connecting() {
    // Another file of a state directory, as a user may pick by mistake.
    let state = tempfile::tempdir().unwrap();
    let wrong = state.path().join("nats-url");
    std::fs::write(&wrong, "nats://127.0.0.1:4222\n").unwrap();
    let wrong = wrong.display().to_string();
    // Nothing listens there: the file is checked before any connection.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    for args in [
        &["status"][..],
        &["call", "order-service", "get_order", "{}"],
        &["traffic", "--duration", "1s"],
        &["chaos", "unhealthy", "order-1"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--nats-url", &url, "--credentials", &wrong]);
        let (ok, err) = aegis_in(state.path(), &args);
        assert!(!ok, "{args:?}: {err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(
            err.contains(&wrong) && err.contains("not a credentials file"),
            "{args:?}: names the file and what it is not: {err}"
        );
        assert!(
            err.contains("AEGIS_NATS_USER") && err.contains("AEGIS_NATS_PASSWORD"),
            "{args:?}: says what a credentials file holds: {err}"
        );
        assert!(!err.contains(&url), "{args:?}: no connection tried: {err}");
    }
}

/// A user and password in `--nats-url` are the credentials the tool signs
/// in with, even where a showcase's credentials file would be found, and
/// an error never prints the password.
#[test]
fn credentials_in_the_url_are_used_and_never_printed() {
    let nats = NatsServer::builder()
        .app_users(r#"[ { user: "alice", password: "s3cret" } ]"#.into())
        .start()
        .expect("start nats-server (run `make bootstrap`)");
    // A showcase's credentials file, for the operator this NATS does not know.
    let cwd = tempfile::tempdir().unwrap();
    std::fs::create_dir(cwd.path().join(".aegis")).unwrap();
    std::fs::write(
        cwd.path().join(".aegis/credentials"),
        "AEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD=other-pw\n",
    )
    .unwrap();
    let with = |userinfo: &str| {
        nats.url()
            .replace("nats://", &format!("nats://{userinfo}@"))
    };
    let (ok, err) = aegis_in(cwd.path(), &["status", "--nats-url", &with("alice:s3cret")]);
    assert!(ok, "signed in as alice: {err}");
    let (ok, err) = aegis_in(
        cwd.path(),
        &["status", "--nats-url", &with("alice:wr0ng-pw")],
    );
    assert!(!ok, "{err}");
    assert!(!err.contains("wr0ng-pw"), "{err}");
    assert!(err.contains("alice"), "names who was refused: {err}");
    // A configuration the SDK refuses names the URL, redacted.
    let two = format!("{},{}", with("alice:s3cret"), with("bob:an0ther-pw"));
    let (ok, err) = aegis_in(cwd.path(), &["status", "--nats-url", &two]);
    assert!(!ok, "{err}");
    assert!(
        !err.contains("s3cret") && !err.contains("an0ther-pw"),
        "{err}"
    );
}
