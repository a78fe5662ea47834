//! What `aegis up` makes of the state directory it is given, before any
//! showcase starts: a directory that is not an aegis state directory is
//! refused and left as it is (not its `credentials` replaced, nor its
//! `control/` or `admitted/` files deleted); a value emptied in the
//! `credentials` file is generated anew and said by its name; a NATS
//! password the server configuration cannot hold as written is refused by
//! its name. Each run stops before NATS: at the UI (an export without
//! `index.html`) or at the port check (a port this test holds), both of
//! which come after the checks tested here.

mod common;

use std::{path::Path, process::Command};

/// `aegis up --state-dir dir` with an export that has no `index.html`: it
/// fails at the UI, the first step after the state directory is taken.
fn up_to_the_ui(dir: &Path) -> (bool, String) {
    let empty_ui = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(["up", "--state-dir"])
        .arg(dir)
        .arg("--ui-dir")
        .arg(empty_ui.path())
        .arg("--no-ui-build")
        .env("NO_COLOR", "1");
    common::output(cmd)
}

/// `aegis up --state-dir dir` with a real export and an API port this
/// test holds: it fails at the port check, after the credentials are
/// read and written.
fn up_to_the_ports(dir: &Path) -> (bool, String) {
    let ui = tempfile::tempdir().unwrap();
    std::fs::write(ui.path().join("index.html"), "<html></html>").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let api_port = held.local_addr().unwrap().port().to_string();
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(["up", "--single-node", "--state-dir"])
        .arg(dir)
        .args(["--api-port", &api_port, "--ui-dir"])
        .arg(ui.path())
        .env("NO_COLOR", "1");
    for var in [
        "AEGIS_ADMIN_TOKEN",
        "AEGIS_VIEWER_TOKEN",
        "AEGIS_SESSION_SECRET",
    ] {
        cmd.env_remove(var);
    }
    let out = common::output(cmd);
    drop(held);
    out
}

/// The value of `key` in the credentials file `text`.
fn value_of<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn a_directory_that_is_not_a_state_directory_is_refused_and_left_alone() {
    type Setup = fn(&Path);
    let cases: [(&str, Setup, &str); 3] = [
        (
            "a credentials file with no setting of aegis",
            |d| std::fs::write(d.join("credentials"), "hello world\nfoo=bar\n").unwrap(),
            "credentials",
        ),
        (
            "a file in control/ that aegis does not write",
            |d| {
                std::fs::create_dir(d.join("control")).unwrap();
                std::fs::write(d.join("control/important.txt"), "keep\n").unwrap();
            },
            "important.txt",
        ),
        (
            "an environment file in admitted/ that aegis did not write",
            |d| {
                std::fs::create_dir(d.join("admitted")).unwrap();
                std::fs::write(d.join("admitted/mine.env"), "PATH=/opt/mine\n").unwrap();
            },
            "mine.env",
        ),
    ];
    for (what, setup, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        setup(dir.path());
        let before = snapshot(dir.path());
        let (ok, out) = up_to_the_ui(dir.path());
        assert!(!ok, "{what}: {out}");
        assert!(
            out.contains("is not an aegis state directory"),
            "{what}: {out}"
        );
        assert!(
            out.contains(&dir.path().display().to_string()),
            "{what}: names the directory: {out}"
        );
        assert!(out.contains(named), "{what}: names what it found: {out}");
        assert!(
            out.contains("--state-dir") && out.contains("remove"),
            "{what}: says how to go on: {out}"
        );
        assert!(!out.contains("index.html"), "{what}: refused first: {out}");
        assert_eq!(snapshot(dir.path()), before, "{what}: left as it was");
    }
}

/// Every file under `dir` with its content.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut all = Vec::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                all.push((path.display().to_string(), "<dir>".to_owned()));
                todo.push(path);
            } else {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                all.push((path.display().to_string(), text));
            }
        }
    }
    all.sort();
    all
}

#[test]
fn a_previous_state_directory_an_empty_one_and_a_missing_one_are_taken() {
    // What an earlier `aegis up` left: its credentials (with an admitted
    // service's password), logs, pid files, a hold, an environment file.
    let previous = tempfile::tempdir().unwrap();
    let d = previous.path();
    let fx = aegis::permissions::admitted_services(&["fx-service".to_owned()]).unwrap();
    let creds = aegis::up::credentials::ensure(d, None, &fx).unwrap();
    aegis::up::admitted::write(d, &fx, "nats://127.0.0.1:4222", None, &creds).unwrap();
    for sub in ["logs", "pids", "control", "nats/cluster/n1/jetstream"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join("logs/monitor.log"), "an earlier run\n").unwrap();
    std::fs::write(d.join("control/hold-order-1"), "").unwrap();
    std::fs::write(d.join("definitions-registered"), "").unwrap();
    // An environment file an interrupted write left empty, and a file of
    // the user's own beside them, which `aegis up` never deletes.
    std::fs::write(d.join("admitted/cut-service.env"), "").unwrap();
    std::fs::write(d.join("admitted/NOTES.txt"), "how we run fx\n").unwrap();

    let empty = tempfile::tempdir().unwrap();
    let missing = empty.path().join("not-yet");
    // Files of the user's own and nothing of aegis yet: its output
    // redirected into the directory (`aegis bench chaos` does), notes.
    let own = tempfile::tempdir().unwrap();
    std::fs::write(own.path().join("up.out"), "").unwrap();
    std::fs::write(own.path().join("notes.txt"), "mine\n").unwrap();
    std::fs::create_dir(own.path().join("src")).unwrap();
    for dir in [d, empty.path(), missing.as_path(), own.path()] {
        let (ok, out) = up_to_the_ui(dir);
        assert!(!ok, "{}: {out}", dir.display());
        assert!(
            out.contains("no index.html there"),
            "{}: taken: {out}",
            dir.display()
        );
    }
}

#[test]
fn an_emptied_credential_is_generated_anew_and_named_never_shown() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("credentials");
    std::fs::write(&file, "AEGIS_ADMIN_TOKEN=\nAEGIS_NATS_SYSTEM_PASSWORD=  \n").unwrap();
    let (ok, out) = up_to_the_ports(dir.path());
    assert!(!ok, "{out}");
    assert!(
        out.contains("already in use"),
        "stopped at the ports: {out}"
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for key in ["AEGIS_ADMIN_TOKEN", "AEGIS_NATS_SYSTEM_PASSWORD"] {
        let value = value_of(&text, key).unwrap_or_default();
        assert!(value.len() >= 32, "{key} generated anew");
        assert!(!out.contains(value), "{key}'s value shown: {out}");
        assert!(out.contains(key), "{key} named: {out}");
    }
    assert!(out.contains("empty"), "{out}");
    // Kept from then on: the next run finds it set and says nothing.
    let admin = value_of(&text, "AEGIS_ADMIN_TOKEN").unwrap().to_owned();
    let (_, again) = up_to_the_ports(dir.path());
    assert!(!again.contains("AEGIS_ADMIN_TOKEN"), "{again}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(value_of(&text, "AEGIS_ADMIN_TOKEN"), Some(admin.as_str()));
}

#[test]
fn a_nats_password_the_server_configuration_cannot_hold_is_refused_by_its_name() {
    for password in ["ab\"c d", "back\\slash"] {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        let text = format!("AEGIS_NATS_PASSWORD_SVC_RISK_SERVICE={password}\n");
        std::fs::write(&file, &text).unwrap();
        let (ok, out) = up_to_the_ports(dir.path());
        assert!(!ok, "{out}");
        assert!(
            out.contains("AEGIS_NATS_PASSWORD_SVC_RISK_SERVICE"),
            "named: {out}"
        );
        assert!(!out.contains(password), "the value shown: {out}");
        assert!(!out.contains("already in use"), "refused first: {out}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text, "kept");
        let confs = snapshot(dir.path());
        assert!(
            !confs.iter().any(|(p, _)| p.ends_with("nats-server.conf")),
            "{confs:?}"
        );
    }
}
