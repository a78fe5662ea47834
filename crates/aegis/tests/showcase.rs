//! End to end: `aegis up --single-node` as a user runs it — seven service
//! instances come up (three order instances with exactly one ACTIVE), orders
//! go through `aegis call`, the order leader is SIGKILLed and a STANDBY takes
//! over within 2 s while `aegis traffic` sends orders (none of those it had
//! acknowledged is lost), and Ctrl-C (SIGTERM) stops everything, leaving no
//! child process behind.

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aegis_sdk::{AegisConfig, Connection, RegistryReader, contracts::models::InstanceStatus};
use common::{AEGIS, Proc, alive, free_up_ports, pids};
use nix::{sys::signal::Signal, unistd::Pid};

mod common;

struct Up {
    child: Child,
}

impl Drop for Up {
    fn drop(&mut self) {
        // A failed test must not leave the showcase running.
        let _ = nix::sys::signal::kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
    }
}

/// Runs `aegis call` as the showcase's operator (`--credentials`), with no
/// `--nats-url`: it finds the showcase's nodes in the state directory, as
/// the tools do beside a running `aegis up`. Returns success, the JSON
/// reply (stdout) and stderr.
fn call(state: &Path, args: &[&str]) -> (bool, serde_json::Value, String) {
    let out = Command::new(AEGIS)
        .arg("call")
        .args(args)
        .arg("--credentials")
        .arg(state.join("credentials"))
        .output()
        .unwrap();
    let reply = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        reply,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_showcase_runs_fails_over_and_stops_cleanly() {
    let state = tempfile::tempdir().unwrap();
    let (base, api) = free_up_ports();
    let url = format!("nats://127.0.0.1:{base}");
    let mut up = Up {
        child: Command::new(AEGIS)
            .args([
                "up",
                "--single-node",
                "--base-port",
                &base.to_string(),
                "--api-port",
                &api.to_string(),
            ])
            .arg("--state-dir")
            .arg(state.path())
            .env("AEGIS_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    };
    // The summary says it is up once all seven instances registered.
    let stdout = up.child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut printed = Vec::new();
    loop {
        let line = rx.recv_timeout(Duration::from_secs(1));
        if let Ok(line) = line {
            let done = line.contains("Aegis showcase is up");
            printed.push(line);
            if done {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "showcase did not come up:\n{}",
            printed.join("\n")
        );
        assert!(
            up.child.try_wait().unwrap().is_none(),
            "aegis up exited:\n{}",
            printed.join("\n")
        );
    }

    // Nothing connects without credentials; the operator's are in the state
    // directory.
    let refused = Connection::connect(AegisConfig::with_servers(&url)).await;
    assert!(
        matches!(refused, Err(aegis_sdk::ConnectError::Refused { .. })),
        "an anonymous client must be refused: {refused:?}"
    );
    let (user, password) = aegis::up::credentials::read_operator(&state.path().join("credentials"))
        .unwrap()
        .expect("the operator's credentials");
    let mut config = AegisConfig::with_servers(&url);
    config.nats.inbox_prefix = Some(aegis::permissions::inbox_prefix(&user));
    config.nats.user = Some(user);
    config.nats.password = Some(aegis_sdk::Secret::new(password));
    let conn = Connection::connect(config).await.unwrap();
    // The catalogue lists what runs: one definition per service kind.
    let admin = std::fs::read_to_string(state.path().join("credentials"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("AEGIS_ADMIN_TOKEN=").map(str::to_owned))
        .expect("the admin token");
    let defined: serde_json::Value = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{api}/api/services"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = defined
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|d| d["service_name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["order-service", "pricing-service", "risk-service"],
        "{defined}"
    );
    let reader = RegistryReader::start(&conn).await.unwrap();
    let by = |s: &str| reader.by_service(s);
    assert_eq!(by("order-service").len(), 3);
    assert_eq!(by("pricing-service").len(), 2);
    assert_eq!(by("risk-service").len(), 2);
    let active: Vec<_> = by("order-service")
        .into_iter()
        .filter(|i| i.status == InstanceStatus::Active)
        .collect();
    assert_eq!(active.len(), 1, "exactly one ACTIVE order instance");
    let leader = active[0].clone();

    let body = |i: usize| {
        format!(
            r#"{{"symbol":"AAPL","side":"BUY","quantity":{},"client_order_id":"e2e-{i}"}}"#,
            i + 1
        )
    };
    let mut first_order_id = String::new();
    for i in 0..3 {
        let (ok, reply, err) = call(
            state.path(),
            &["order-service", "create_order", &body(i), "--active"],
        );
        assert!(ok, "create_order failed: {err}");
        let id = reply["order_id"].as_str().expect("an order id").to_owned();
        if i == 0 {
            first_order_id = id;
        }
        assert!(
            err.contains(&format!("served by {}", leader.instance_id)),
            "{err}"
        );
    }

    // SIGKILL the leader; a STANDBY must become ACTIVE within 2 s.
    let mut children = pids(state.path());
    assert_eq!(
        children.len(),
        9,
        "nats + monitor + 7 services: {children:?}"
    );
    let pid = pids(state.path())
        .into_iter()
        .find(|(n, _)| *n == leader.instance_id)
        .map(|(_, p)| p)
        .expect("leader pid file");
    // A steady order flow across the kill (`aegis traffic`), stopped once
    // the new leader served it: every order it acknowledged must be there.
    let credentials = state.path().join("credentials");
    let mut traffic = Proc::spawn(&[
        "traffic",
        "--rate",
        "20",
        "--nats-url",
        &url,
        "--credentials",
        credentials.to_str().unwrap(),
    ]);
    traffic.wait_for(
        &format!("leader {}", leader.instance_id),
        Duration::from_secs(30),
    );
    let killed = Instant::now();
    nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let new_leader = loop {
        let next = by("order-service").into_iter().find(|i| {
            i.status == InstanceStatus::Active
                && i.instance_id != leader.instance_id
                && i.epoch > leader.epoch
        });
        if let Some(n) = next {
            break n;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "no new ACTIVE within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = killed.elapsed();
    eprintln!("new leader {} after {took:?}", new_leader.instance_id);
    traffic.wait_for(
        &format!("leader {}", new_leader.instance_id),
        Duration::from_secs(30),
    );
    traffic.signal(Signal::SIGTERM);
    let status = traffic.exit_within(Duration::from_secs(60));
    let report = traffic.output();
    eprintln!("{report}");
    assert!(status.success(), "aegis traffic: {status}\n{report}");
    assert!(report.contains("none lost"), "{report}");
    // The read-back it ends with tells an order that is there from one that
    // is not (what it would call lost).
    let read = aegis::traffic::read_back(
        &conn.rpc(),
        "default",
        vec![first_order_id.clone(), "ord-never-created".to_owned()],
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(read.found, 1, "{read:?}");
    assert_eq!(read.missing, ["ord-never-created"], "{read:?}");
    assert!(read.unreadable.is_empty(), "{read:?}");
    // The new leader continues where the old one stopped: a retried create
    // returns the same order, and the order is there.
    let (ok, reply, err) = call(
        state.path(),
        &["order-service", "create_order", &body(0), "--active"],
    );
    assert!(ok, "retry failed: {err}");
    assert_eq!(
        reply["order_id"],
        first_order_id.as_str(),
        "no second order for a retried create"
    );
    let get = format!(r#"{{"order_id":"{first_order_id}"}}"#);
    let (ok, reply, err) = call(
        state.path(),
        &["order-service", "get_order", &get, "--active"],
    );
    assert!(ok, "get_order failed: {err}");
    assert_eq!(reply["client_order_id"], "e2e-0");

    // Every component ran with its own restricted NATS user and none was
    // refused anything.
    let log = std::fs::read_to_string(state.path().join("logs/nats-n1.log")).unwrap();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(
        violations.is_empty(),
        "permission violations in the showcase:\n{}",
        violations.join("\n")
    );
    for user in [
        "svc-order-service",
        "svc-pricing-service",
        "svc-risk-service",
        "monitor",
    ] {
        let config =
            std::fs::read_to_string(state.path().join("nats/single/n1/nats-server.conf")).unwrap();
        assert!(
            config.contains(&format!("user: \"{user}\"")),
            "{user} in the config"
        );
    }

    // Ctrl-C: everything stops, nothing is left behind.
    // Every process that ran, including the restarted leader if it is back.
    children.extend(pids(state.path()));
    nix::sys::signal::kill(Pid::from_raw(up.child.id() as i32), Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "aegis up did not stop within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "aegis up exit status {status}");
    for (name, pid) in children {
        assert!(!alive(pid), "{name} (pid {pid}) is still running");
    }
    assert!(
        !state.path().join("nats-url").exists(),
        "a stopped showcase leaves no NATS URLs for the tools to find"
    );
}
