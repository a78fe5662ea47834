//! `aegis up --nats-url` (attached to a NATS it did not start) prints
//! commands that fit that NATS: they name it and use the credentials of
//! the environment, not the showcase's own NATS users (which that server
//! does not know), and they work as printed.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::{Proc, free_port};

#[test]
fn the_commands_suggested_on_an_external_nats_name_it_and_work() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let state = tempfile::tempdir().unwrap();
    let mut up = Proc::spawn(&[
        "up",
        "--nats-url",
        &url,
        "--instances",
        "order=0,pricing=0,risk=0",
        "--api-port",
        &free_port().to_string(),
        "--state-dir",
        state.path().to_str().unwrap(),
    ]);
    up.wait_for("Ctrl-C stops everything", Duration::from_secs(120));
    let out = up.output();
    let status = out
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("aegis status --watch"))
        .unwrap_or_else(|| panic!("no status command suggested:\n{out}"));
    assert!(status.contains(&format!("--nats-url {url}")), "{out}");
    let suggested: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("aegis "))
        .collect();
    assert!(suggested.len() >= 4, "{out}");
    for line in &suggested {
        assert!(
            !line.contains("--credentials"),
            "the showcase's NATS users are unknown to this server: {line}\n{out}"
        );
    }
    assert!(
        out.contains("AEGIS_NATS_"),
        "says which credentials to use:\n{out}"
    );
    let command = status
        .replace(" --watch", "")
        .replacen("aegis", common::AEGIS, 1);
    let run = std::process::Command::new("sh")
        .args(["-c", &command])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{command}\n{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    up.terminate_within(Duration::from_secs(30));
}
