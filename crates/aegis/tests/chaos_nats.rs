//! `aegis chaos kill-nats` and `restart-nats` against a running `aegis up`
//! (one NATS node, no service instances: the node is what is broken): a
//! restart of a running node is a real one, a new process with a new pid.

mod common;

use std::{
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use common::{Proc, alive, free_up_ports};

/// `aegis up --single-node` with no service instances, once it is up.
fn up(state: &Path) -> Proc {
    let (base, api) = free_up_ports();
    up_on(state, base, api)
}

/// [`up`] with its first NATS port `base` and its API on `api`.
fn up_on(state: &Path, base: u16, api: u16) -> Proc {
    let state = state.display().to_string();
    let mut up = Proc::spawn(&[
        "up",
        "--single-node",
        "--instances",
        "order=0,pricing=0,risk=0",
        "--base-port",
        &base.to_string(),
        "--api-port",
        &api.to_string(),
        "--state-dir",
        &state,
    ]);
    up.wait_for("Ctrl-C stops everything", Duration::from_secs(120));
    up
}

/// Runs `aegis chaos --state-dir STATE ARGS`; returns success, stdout and
/// stderr together, and how long it took.
fn chaos(state: &Path, args: &[&str]) -> (bool, String, Duration) {
    let started = Instant::now();
    let mut all = vec!["chaos".as_ref(), "--state-dir".as_ref(), state.as_os_str()];
    all.extend(args.iter().map(std::ffi::OsStr::new));
    let (ok, out) = common::run(&all);
    (ok, out, started.elapsed())
}

fn pid(state: &Path, name: &str) -> Option<i32> {
    aegis::up::supervisor::read_pid(state, name)
}

/// The control files left in the state directory.
fn control_files(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("control"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// How often the node's log says it started.
fn starts(state: &Path) -> usize {
    std::fs::read_to_string(state.join("logs/nats-n1.log"))
        .unwrap()
        .matches("Starting nats-server")
        .count()
}

/// Waits until the node's log says it started `n` times: the command
/// returns once the new process runs, which may be before it wrote a line.
fn started_times(state: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while starts(state) < n {
        assert!(
            Instant::now() < deadline,
            "the node's log shows {} starts, not {n}",
            starts(state)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(starts(state), n);
}

/// Waits until `pid` has exited: a SIGKILLed process takes a moment to
/// die (all of nats-server's threads must stop), more on a loaded host.
fn gone_within(pid: i32, within: Duration, out: &str) {
    let deadline = Instant::now() + within;
    while alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still runs: {out}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_nats_restarts_a_running_node() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let mut showcase = up(state);
    let old = pid(state, "nats-n1").expect("the node's pid file");
    assert_eq!(starts(state), 1);

    let (ok, out, _) = chaos(state, &["restart-nats", "1"]);
    assert!(ok, "{out}");
    let new = pid(state, "nats-n1").expect("the restarted node's pid file");
    assert_ne!(new, old, "a new process: {out}");
    assert!(!alive(old), "the old process is gone: {out}");
    assert!(alive(new), "the new process runs: {out}");
    assert!(
        out.contains(&format!("pid {old}")) && out.contains(&format!("pid {new}")),
        "says which process stopped and which runs now: {out}"
    );
    started_times(state, 2);
    assert_eq!(control_files(state), Vec::<String>::new());

    // A node killed (and held down) is started again.
    let (ok, out, _) = chaos(state, &["kill-nats", "1"]);
    assert!(ok, "{out}");
    let (ok, out, _) = chaos(state, &["restart-nats", "1"]);
    assert!(ok, "{out}");
    let third = pid(state, "nats-n1").expect("the node's pid file");
    assert!(third != new && alive(third), "{out}");
    assert_eq!(control_files(state), Vec::<String>::new());
    assert!(
        showcase.child.try_wait().unwrap().is_none(),
        "aegis up still runs:\n{}",
        showcase.output()
    );
}

#[test]
fn a_node_the_showcase_does_not_run_is_refused_at_once() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let _showcase = up(state);
    for args in [
        &["restart-nats", "9"][..],
        &["restart-nats", "0"],
        &["restart-nats", "2", "--graceful"],
        &["kill-nats", "0"],
        &["kill-nats", "7"],
    ] {
        let (ok, out, took) = chaos(state, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(
            out.contains(&format!(
                "no such NATS node {} (the showcase runs node 1 only)",
                args[1]
            )),
            "{args:?}: {out}"
        );
        // Not after waiting for a supervisor that has no such child.
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(control_files(state), Vec::<String>::new(), "{args:?}");
    }
}

/// A state directory whose `aegis up` is gone (killed, its pid file left
/// behind) has no supervisor to obey a control file: said at once, and no
/// control file written.
#[test]
fn a_showcase_that_is_not_running_is_said_at_once() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let mut exited = Command::new("true").spawn().unwrap();
    exited.wait().unwrap();
    std::fs::write(state.join("up.pid"), exited.id().to_string()).unwrap();
    std::fs::create_dir_all(state.join("control")).unwrap();
    for args in [&["restart-nats", "1"][..], &["kill-nats", "1"]] {
        let (ok, out, took) = chaos(state, args);
        assert!(!ok, "{args:?}: {out}");
        assert!(out.contains("no `aegis up` is running"), "{args:?}: {out}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(control_files(state), Vec::<String>::new(), "{args:?}");
    }
}

/// The banner names each node's monitoring endpoint (`/varz`, `/jsz`,
/// `/healthz`), at the port `aegis up` configured: base + 4000.
#[test]
fn the_banner_names_the_nats_monitoring_port() {
    let state = tempfile::tempdir().unwrap();
    let (base, api) = free_up_ports();
    let mut showcase = up_on(state.path(), base, api);
    let out = showcase.output();
    let monitoring = format!("http://127.0.0.1:{}", base + 4000);
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with("monitoring: "))
        .unwrap_or_else(|| panic!("no monitoring line:\n{out}"));
    assert!(line.contains(&monitoring), "{line}");
}

/// `kill-nats` and `restart-nats` signal the processes of the local
/// showcase's nodes: connection flags that name anything else (another
/// server, another showcase's credentials, a NATS config) are refused,
/// not silently ignored, and the showcase's node is left alone. Flags that
/// name this showcase (its nodes' URL, its credentials file) are taken.
#[test]
fn connection_flags_naming_another_nats_are_refused() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let _showcase = up(state);
    let node = pid(state, "nats-n1").expect("the node's pid file");
    let elsewhere = tempfile::tempdir().unwrap();
    let other_credentials = elsewhere.path().join("credentials");
    std::fs::copy(state.join("credentials"), &other_credentials).unwrap();
    let other_credentials = other_credentials.display().to_string();
    for (args, named) in [
        (
            &["kill-nats", "1", "--nats-url", "nats://127.0.0.1:1"][..],
            "--nats-url",
        ),
        (
            &["restart-nats", "1", "--credentials", &other_credentials],
            "--credentials",
        ),
        (
            &["kill-nats", "1", "--nats-creds", "/dev/null"],
            "--nats-creds",
        ),
    ] {
        let (ok, out, _) = chaos(state, args);
        assert!(!ok, "{args:?}: accepted:\n{out}");
        assert!(
            out.contains("acts only on the NATS nodes of the local showcase"),
            "{args:?}: {out}"
        );
        assert!(out.contains(named), "{args:?}: names {named}: {out}");
        assert_eq!(pid(state, "nats-n1"), Some(node), "{args:?}: {out}");
        assert!(alive(node), "{args:?}: the node was left alone: {out}");
        assert_eq!(control_files(state), Vec::<String>::new(), "{args:?}");
    }

    // What names this showcase is taken.
    let url = std::fs::read_to_string(state.join("nats-url")).unwrap();
    let credentials = state.join("credentials").display().to_string();
    let (ok, out, _) = chaos(
        state,
        &[
            "kill-nats",
            "1",
            "--nats-url",
            url.trim(),
            "--credentials",
            &credentials,
        ],
    );
    assert!(ok, "{out}");
    gone_within(node, Duration::from_secs(5), &out);
    let (ok, out, _) = chaos(state, &["restart-nats", "1", "--nats-url", url.trim()]);
    assert!(ok, "{out}");

    let (ok, out) = common::run(&["chaos", "kill-nats", "--help"]);
    assert!(ok, "{out}");
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        text.contains("acts only on the NATS nodes of the local showcase"),
        "{text}"
    );
}
