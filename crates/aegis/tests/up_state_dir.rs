//! What `aegis up` makes of the credentials file of its state directory,
//! before any showcase starts: a value emptied there is generated anew and
//! said by its name; a NATS password the server configuration cannot hold
//! as written is refused by its name. Each run stops before NATS, at the
//! port check (a port this test holds), which comes after the credentials
//! are read and written.

mod common;

use std::{path::Path, process::Command};

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
