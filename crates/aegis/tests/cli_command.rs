//! `aegis command SERVICE COMMAND [BODY]` against a real nats-server running
//! the showcase's users and permissions, and a real SDK command worker: the
//! operator's tool sends the command, prints the worker's progress on
//! stderr and its result as pretty JSON on stdout, and exits non-zero with
//! a clear line when the worker fails it, when no worker takes it, and
//! when a worker took it but did not finish in time.

mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use aegis::permissions::{Role, ServiceRole, User, render_users, showcase_roles};
use aegis_sdk::{
    AegisConfig, Connection, Secret,
    commands::{Command as Cmd, Progress},
    rpc::WireError,
};
use aegis_testkit::NatsServer;
use common::{AEGIS, CREDENTIAL_VARS};
use serde_json::{Value, json};

/// The service the test's worker runs as, with a user of its own.
const SERVICE: &str = "recon-service";

/// A nats-server with the showcase's users plus one for [`SERVICE`], and
/// the operator's credentials file as `aegis up` writes it.
struct Bus {
    server: NatsServer,
    users: Vec<User>,
    _dir: tempfile::TempDir,
    credentials: PathBuf,
}

impl Bus {
    fn start() -> Bus {
        let mut roles = showcase_roles();
        roles.push(Role::Service(ServiceRole {
            service: SERVICE.to_owned(),
            ..Default::default()
        }));
        let users: Vec<User> = roles
            .into_iter()
            .map(|role| User {
                name: role.user_name(),
                password: format!("pw-{}", nuid::next()),
                role,
            })
            .collect();
        let server = NatsServer::builder()
            .app_users(render_users(&users))
            .start()
            .expect("start nats-server (run `make bootstrap`)");
        let dir = tempfile::tempdir().unwrap();
        let credentials = dir.path().join("credentials");
        let operator = users.iter().find(|u| u.name == "operator").unwrap();
        std::fs::write(
            &credentials,
            format!(
                "AEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD={}\n",
                operator.password
            ),
        )
        .unwrap();
        Bus {
            server,
            users,
            _dir: dir,
            credentials,
        }
    }

    async fn sdk(&self, user: &str) -> Connection {
        let password = &self.users.iter().find(|u| u.name == user).unwrap().password;
        let mut config = AegisConfig::with_servers(self.server.url());
        config.nats.user = Some(user.to_owned());
        config.nats.password = Some(Secret::new(password));
        config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(user));
        Connection::connect(config).await.unwrap()
    }

    /// Runs `aegis ARGS` as the operator; returns (exit code, stdout, stderr).
    async fn aegis(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend([
            "--nats-url".to_owned(),
            self.server.url(),
            "--credentials".to_owned(),
            self.credentials.display().to_string(),
        ]);
        tokio::task::spawn_blocking(move || run(&all))
            .await
            .unwrap()
    }
}

/// Runs `aegis ARGS` with none of the environment that would give it other
/// credentials or logging; returns (exit code, stdout, stderr).
fn run(args: &[String]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(AEGIS);
    cmd.args(args).env("NO_COLOR", "1");
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `aegis ARGS`, sends it SIGINT once its stderr has said `seen`;
/// returns its exit code and stderr.
fn interrupted_after(seen: &str, args: &[String]) -> (Option<i32>, String) {
    use std::io::{BufRead, BufReader, Read};
    let mut cmd = Command::new(AEGIS);
    cmd.args(args)
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for var in CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    let mut child = cmd.spawn().unwrap();
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
    let bus = Bus::start();
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
    let args: Vec<String> = [
        "command",
        SERVICE,
        "slow",
        "--nats-url",
        &bus.server.url(),
        "--credentials",
        &bus.credentials.display().to_string(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let (code, err) = tokio::task::spawn_blocking(move || interrupted_after("started", &args))
        .await
        .unwrap();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("was taken by a worker"), "{err}");
    assert!(!err.contains("is queued and"), "{err}");

    // No worker at all: never ran.
    let (code, out, err) = bus
        .aegis(&["command", "ghost-service", "rebuild", "--timeout-ms", "300"])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("error [NOT_TAKEN]") && err.contains("was not taken by any worker"),
        "{err}"
    );

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
