//! `aegis call SERVICE METHOD` with no body, against a real nats-server and
//! a real SDK service: a method that takes no argument (`|_: ()|`, whose
//! request schema is `null`) is sent `null`, not `{}` (which it refused
//! as "invalid type: map, expected unit"); any other method still gets
//! `{}`, and a body given explicitly is sent as it is. A body may come
//! from standard input (`-`) or a file (`@PATH`), and one that is not JSON
//! is quoted in its error by a short prefix and its size, not whole.

mod common;

use std::{
    io::Write,
    process::{Command, Stdio},
};

use aegis_sdk::{AegisConfig, Connection, rpc::WireError};
use aegis_testkit::NatsServer;
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_body_sends_what_the_method_takes() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let service = conn
        .service("unit-service", "1.0.0")
        .instance_id("unit-1")
        .handler(
            "ping",
            |_: ()| async move { Ok::<_, WireError>(json!("pong")) },
        )
        .handler(
            "echo",
            |body: Value| async move { Ok::<_, WireError>(body) },
        )
        .start()
        .await
        .unwrap();

    // A method that takes nothing: no body is `null`.
    let (ok, out) = common::run_at(&["call", "unit-service", "ping"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"pong\""), "{out}");

    // A method that takes anything: no body is still `{}`.
    let (ok, out) = common::run_at(&["call", "unit-service", "echo"], &url).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("{}"), "{out}");

    // A body given is sent as it is, `{}` to `ping` included: its refusal
    // now says what to pass.
    let (ok, out) = common::run_at(&["call", "unit-service", "echo", "[1,2]"], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains('1') && out.contains('2'), "{out}");
    let (ok, out) = common::run_at(&["call", "unit-service", "ping", "{}"], &url).await;
    assert!(!ok, "{out}");
    assert!(out.contains("INVALID_REQUEST"), "{out}");
    assert!(
        out.contains("takes no argument") && out.contains("null"),
        "says to pass null: {out}"
    );

    service.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}

/// Runs `aegis call ARGS --nats-url url` with `stdin` on its standard
/// input; returns its success, its stdout and its stderr.
async fn call_with_stdin(args: &[&str], url: &str, stdin: &[u8]) -> (bool, String, String) {
    let mut cmd = Command::new(common::AEGIS);
    cmd.arg("call")
        .args(args)
        .args(["--nats-url", url])
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let stdin = stdin.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut child = cmd.spawn().unwrap();
        // A command that does not read it may have exited: a broken pipe.
        let _ = child.stdin.take().unwrap().write_all(&stdin);
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_comes_from_stdin_or_a_file_and_a_bad_one_is_quoted_short() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let conn = Connection::connect(AegisConfig::with_servers(&url))
        .await
        .unwrap();
    let service = conn
        .service("echo-service", "1.0.0")
        .instance_id("echo-1")
        .handler(
            "echo",
            |body: Value| async move { Ok::<_, WireError>(body) },
        )
        .start()
        .await
        .unwrap();

    // From standard input, larger than one argument may be.
    let big = json!({ "text": "x".repeat(200_000) });
    let (ok, out, err) = call_with_stdin(
        &["echo-service", "echo", "-"],
        &url,
        big.to_string().as_bytes(),
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), big);

    // From a file.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("body.json");
    std::fs::write(&file, "{\"symbol\": \"AAPL\"}\n").unwrap();
    let at = format!("@{}", file.display());
    let (ok, out) = common::run_at(&["call", "echo-service", "echo", &at], &url).await;
    assert!(ok, "{out}");
    assert!(out.contains("\"AAPL\""), "{out}");
    let missing = format!("@{}", dir.path().join("none.json").display());
    let (ok, out) = common::run_at(&["call", "echo-service", "echo", &missing], &url).await;
    assert!(!ok, "{out}");
    assert!(out.contains("none.json"), "{out}");

    // A JSON string is still a body, even `"-"`.
    let (ok, out) = common::run_at(&["call", "echo-service", "echo", "\"-\""], &url).await;
    assert!(ok, "{out}");
    assert!(out.starts_with("\"-\""), "{out}");

    // Not JSON: the size, not 120 KB on one line; from an argument, standard
    // input or a file alike. Only the argument, which the user typed, is
    // quoted (a short prefix): a file or a pipe may be a secret passed by
    // mistake (a token file), which must not reach a terminal or a CI log.
    let bad = "[".repeat(120_000);
    std::fs::write(&file, &bad).unwrap();
    let (ok, out) = common::run_at(&["call", "echo-service", "echo", &bad], &url).await;
    let (ok_stdin, _, err_stdin) =
        call_with_stdin(&["echo-service", "echo", "-"], &url, bad.as_bytes()).await;
    let (ok_file, out_file) = common::run_at(&["call", "echo-service", "echo", &at], &url).await;
    for (quoted, ok, out) in [
        (true, ok, out),
        (false, ok_stdin, err_stdin),
        (false, ok_file, out_file),
    ] {
        assert!(!ok, "{out}");
        assert!(
            out.len() < 400,
            "{} bytes: {}",
            out.len(),
            out.chars().take(400).collect::<String>()
        );
        assert!(
            out.contains("not JSON") && out.contains("120000 bytes"),
            "{out}"
        );
        assert_eq!(out.contains("[[[…"), quoted, "{out}");
    }

    service.shutdown().await.unwrap();
    conn.drain().await.unwrap();
}
