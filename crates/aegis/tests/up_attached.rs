//! `aegis up --nats-url` (attached to a NATS it did not start) prints
//! commands that fit that NATS: they name it and use the credentials of
//! the environment, not the showcase's own NATS users (which that server
//! does not know), and they work as printed.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::Proc;

#[test]
fn the_commands_suggested_on_an_external_nats_name_it_and_work() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let state = tempfile::tempdir().unwrap();
    let mut up = Proc::up_attached(
        &url,
        "order=0,pricing=0,risk=0",
        state.path(),
        Duration::from_secs(120),
    );
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

/// A password in `--nats-url` signs the showcase in and is printed
/// nowhere: not in the summary, not in the commands it suggests, and the
/// file that keeps the URL for the tools is readable by its owner only.
#[test]
fn a_password_in_the_external_url_is_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    let nats = NatsServer::builder()
        .app_users(r#"[ { user: "alice", password: "s3cret-pw" } ]"#.into())
        .start()
        .expect("start nats-server (run `make bootstrap`)");
    let url = nats.url().replace("nats://", "nats://alice:s3cret-pw@");
    let state = tempfile::tempdir().unwrap();
    let mut up = Proc::up_attached(
        &url,
        "order=0,pricing=0,risk=0",
        state.path(),
        Duration::from_secs(120),
    );
    let out = up.output();
    assert!(!out.contains("s3cret-pw"), "{out}");
    assert!(out.contains("alice:<redacted>@"), "{out}");
    let kept = state.path().join("nats-url");
    let mode = std::fs::metadata(&kept).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{kept:?} is {mode:o}");
    up.terminate_within(Duration::from_secs(30));
    assert!(!up.output().contains("s3cret-pw"));
}
