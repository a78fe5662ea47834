//! `aegis command SERVICE COMMAND [BODY]` against a real nats-server running
//! the showcase's users and permissions, and a real SDK command worker: the
//! operator's tool sends the command, prints the worker's progress on
//! stderr and its result as pretty JSON on stdout, and exits non-zero with
//! a clear line when the worker fails it, when no worker takes it, and
//! when a worker took it but did not finish in time.

mod common;

use std::time::Duration;

use aegis::permissions::ServiceRole;
use aegis_sdk::{
    commands::{Command as Cmd, Progress},
    rpc::WireError,
};
use common::operator_bus::{OperatorBus as Bus, plain_command, run_plain as run};
use serde_json::{Value, json};

/// The service the test's worker runs as, with a user of its own.
const SERVICE: &str = "recon-service";

/// Runs `aegis ARGS`, sends it SIGINT once its stderr has said `seen`;
/// returns its exit code and stderr.
fn interrupted_after(seen: &str, args: &[String]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut child = plain_command(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut text = String::new();
    while !text.contains(seen) {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            break;
        }
        text.push_str(&line);
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    err.read_to_string(&mut text).unwrap();
    (child.wait().unwrap().code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_prints_its_progress_and_result_or_why_it_failed() {
    let bus = Bus::start(ServiceRole {
        service: SERVICE.to_owned(),
        ..Default::default()
    });
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let conn = bus.sdk(&format!("svc-{SERVICE}")).await;
    let worker = conn
        .commands()
        .worker(SERVICE)
        .handler(
            "rebuild",
            |cmd: Cmd<Value>, progress: Progress| async move {
                progress.report(25.0, "reading the book").await;
                progress.report(75.0, "writing the book").await;
                Ok::<_, WireError>(json!({ "rebuilt": cmd.payload, "lines": [1, 2] }))
            },
        )
        .handler("fail", |cmd: Cmd<Value>, _: Progress| async move {
            Err::<Value, _>(
                WireError::not_found("no book for this account")
                    .with_details(json!({ "account": cmd.payload["account"] })),
            )
        })
        .handler("slow", |_: Cmd<Value>, progress: Progress| async move {
            progress.report(10.0, "started").await;
            tokio::time::sleep(Duration::from_secs(4)).await;
            Ok::<_, WireError>(json!("late"))
        })
        .start()
        .await
        .unwrap();

    // Progress on stderr, in order, with the percentage; the result as
    // pretty JSON on stdout, alone.
    let (code, out, err) = bus
        .aegis(&["command", SERVICE, "rebuild", r#"{"account":"A1"}"#])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    let result: Value = serde_json::from_str(&out).expect("stdout is the result as JSON");
    assert_eq!(
        result,
        json!({ "rebuilt": { "account": "A1" }, "lines": [1, 2] })
    );
    assert!(out.contains("\n  \"lines\": ["), "pretty: {out}");
    let first = err.find("25%").unwrap_or_else(|| panic!("{err}"));
    let second = err.find("75%").unwrap_or_else(|| panic!("{err}"));
    assert!(first < second, "{err}");
    assert!(
        err.contains("reading the book") && err.contains("writing the book"),
        "{err}"
    );

    // No body: `{}`.
    let (code, out, err) = bus.aegis(&["command", SERVICE, "rebuild"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("\"rebuilt\": {}"), "{out}");

    // The worker's error, as `aegis call` prints a service's: code,
    // message, details.
    let (code, out, err) = bus
        .aegis(&["command", SERVICE, "fail", r#"{"account":"A9"}"#])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.is_empty(), "no result: {out}");
    assert!(
        err.contains("error [NOT_FOUND]") && err.contains("no book for this account"),
        "{err}"
    );
    assert!(err.contains("details: {\"account\":\"A9\"}"), "{err}");

    // Taken, not done in time: it may have run.
    let (code, out, err) = bus
        .aegis(&["command", SERVICE, "slow", "--timeout-ms", "1500"])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("10%") && err.contains("started"), "{err}");
    assert!(
        err.contains("error [TIMEOUT]") && err.contains("did not complete within"),
        "{err}"
    );
    assert!(err.contains("may have run"), "{err}");

    // Interrupted once a worker reported progress: it runs on, and the
    // line says so rather than "queued".
    let args = bus.args(&["command", SERVICE, "slow"]);
    let (code, err) = tokio::task::spawn_blocking(move || interrupted_after("started", &args))
        .await
        .unwrap();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("was taken by a worker"), "{err}");
    assert!(!err.contains("is queued and"), "{err}");

    // No worker at all, sent anyway (`--unlisted`: for a worker yet to
    // start): never ran.
    let (code, out, err) = bus
        .aegis(&[
            "command",
            "ghost-service",
            "rebuild",
            "--timeout-ms",
            "300",
            "--unlisted",
        ])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("error [NOT_TAKEN]") && err.contains("was not taken by any worker"),
        "{err}"
    );

    // A mistyped service, no worker of which ever consumed commands:
    // refused unsent, with the services that have command workers and the
    // one it is likely a slip of.
    let (code, out, err) = bus
        .aegis(&["command", "recon-servce", "rebuild", "--timeout-ms", "5000"])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("error [NOT_FOUND]"), "{err}");
    assert!(
        err.contains("services with command workers: recon-service"),
        "{err}"
    );
    assert!(err.contains("did you mean recon-service?"), "{err}");
    assert!(!err.contains("queued"), "nothing sent: {err}");
    assert!(err.contains("--unlisted"), "{err}");

    worker.shutdown().await;
    conn.drain().await.unwrap();
    operator.drain().await.unwrap();
}

/// Bad input is refused before any connection (nothing listens there),
/// with a line that says what is wrong.
#[test]
fn bad_input_is_a_clear_error_before_connecting() {
    let port = common::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    for (args, says) in [
        (
            vec!["command", "Recon_Service", "rebuild"],
            "service name must",
        ),
        (vec!["command", SERVICE, "re-build"], "command name"),
        (vec!["command", SERVICE, "rebuild", "{nope"], "not JSON"),
    ] {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--nats-url".to_owned(), url.clone()]);
        let (code, out, err) = run(&all);
        assert_eq!(code, Some(1), "{args:?}: {out}{err}");
        assert!(err.starts_with("error: "), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(!err.contains(&url), "{args:?}: no connection tried: {err}");
    }
}
