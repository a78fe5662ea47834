//! Every command that prints ends quietly when whoever reads its output
//! has gone (`aegis call … --schema | head -25`): no panic, no stack
//! trace, nothing on stderr — the exit a shell shows for `cat` in the same
//! place. The read end of stdout is closed before the command starts, so
//! its first write meets the closed pipe every run, not one run in five.

mod common;

use std::{
    path::Path,
    process::{Command, ExitStatus, Stdio},
    time::Duration,
};

use aegis_testkit::NatsServer;
use common::Proc;

/// Runs `aegis ARGS` in `dir` with stdout a pipe nobody reads any more;
/// returns how it ended and its stderr.
fn with_closed_stdout(dir: &Path, args: &[&str]) -> (ExitStatus, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped());
    for var in ["AEGIS_LOG", "AEGIS_CREDENTIALS", "AEGIS_CONFIG"] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `status` is a quiet end: 0 when the command had finished what it had
/// to say, else the one a closed pipe gives a shell's tools (141, 128 +
/// SIGPIPE); never Rust's panic exit (101); and nothing on stderr.
fn assert_quiet(args: &[&str], status: ExitStatus, stderr: &str) {
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "{args:?} panicked on a closed stdout ({status}):\n{stderr}"
    );
    assert!(
        matches!(status.code(), Some(0 | 141)),
        "{args:?}: {status}:\n{stderr}"
    );
    assert_eq!(stderr.trim(), "", "{args:?}: quiet");
}

#[test]
fn commands_without_nats_end_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--help"][..],
        &["call", "--help"],
        &["--version"],
        &["nats-config"],
        &["nats-config", "--format", "helm-values"],
    ] {
        let (status, stderr) = with_closed_stdout(dir.path(), args);
        assert_quiet(args, status, &stderr);
    }
}

#[test]
fn call_and_status_end_quietly_on_a_closed_stdout() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let mut service = Proc::spawn(&["service", "pricing", "--nats-url", &url]);
    service.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["call", "pricing-service", "get_price", "--schema"][..],
        &[
            "call",
            "pricing-service",
            "get_price",
            r#"{"symbol":"AAPL"}"#,
        ],
        &["status"],
    ] {
        let mut args = args.to_vec();
        args.extend(["--nats-url", &url]);
        // Several runs: the panic used to depend on who was first.
        for _ in 0..3 {
            let (status, stderr) = with_closed_stdout(dir.path(), &args);
            // `call` says who served it on stderr once the reply is out;
            // with nobody reading the reply it never gets that far.
            assert_quiet(&args, status, &stderr);
        }
    }
}

#[test]
fn a_benchmark_ends_quietly_on_a_closed_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let args = [&["bench", "rpc"][..], &common::TINY_RPC_BENCH[..]].concat();
    let (status, stderr) = with_closed_stdout(dir.path(), &args);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "panicked on a closed stdout ({status}):\n{stderr}"
    );
    assert!(
        matches!(status.code(), Some(0 | 141)),
        "{status}:\n{stderr}"
    );
}
