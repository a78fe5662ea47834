//! `aegis up` starts robustly: a fresh 3-node cluster comes up with no
//! service crashing and being restarted (services wait for JetStream and
//! their buckets), a state directory serves both topologies (each keeps its
//! own data), a NATS node that cannot start is reported with the server's
//! own words, at once, the showcase is not said to be up before its
//! monitor serves, and the commands it suggests work as printed.

mod common;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use common::{Proc, free_cluster_ports, free_up_ports};

fn up(state: &Path, cluster: bool) -> Proc {
    let (base, api) = if cluster {
        free_cluster_ports()
    } else {
        free_up_ports()
    };
    let mut args = vec![
        "up".to_owned(),
        "--base-port".to_owned(),
        base.to_string(),
        "--api-port".to_owned(),
        api.to_string(),
        "--state-dir".to_owned(),
        state.display().to_string(),
    ];
    if !cluster {
        args.push("--single-node".to_owned());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Proc::spawn(&args)
}

#[test]
fn a_fresh_cluster_comes_up_without_restarting_any_service() {
    // A state directory whose path has a space, as a home directory may:
    // the suggested commands must still work pasted into a shell.
    let state = tempfile::Builder::new()
        .prefix("aegis state ")
        .tempdir()
        .unwrap();
    let mut cluster = up(state.path(), true);
    cluster.wait_for("Aegis showcase is up", Duration::from_secs(180));
    cluster.wait_for("Ctrl-C stops everything", Duration::from_secs(10));
    let out = cluster.output();
    assert!(
        !out.contains("restarting after a delay"),
        "a child crashed while the cluster came up:\n{out}"
    );
    // The commands it suggests work as printed, pasted into a shell, for
    // this showcase on its own ports and state directory.
    let suggested = |start: &str| {
        out.lines()
            .map(str::trim)
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no {start:?} suggested:\n{out}"))
            .replacen("aegis", common::AEGIS, 1)
    };
    for command in [
        suggested("aegis status --watch").replace(" --watch", ""),
        suggested("aegis call order-service create_order"),
        // Until Ctrl-C as suggested; here for two seconds.
        format!(
            "{} --duration 2s",
            suggested("aegis traffic").split(" #").next().unwrap()
        ),
        suggested("aegis chaos kill order-service"),
    ] {
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
    }
    let took = cluster.terminate_within(Duration::from_secs(40));
    eprintln!("cluster showcase stopped {took:?} after SIGTERM");
}

#[test]
fn one_state_directory_serves_both_topologies() {
    let state = tempfile::tempdir().unwrap();
    for cluster in [true, false, true] {
        let mut run = up(state.path(), cluster);
        run.wait_for("Aegis showcase is up", Duration::from_secs(180));
        run.terminate_within(Duration::from_secs(40));
    }
    assert!(state.path().join("nats/cluster/n3").is_dir());
    assert!(state.path().join("nats/single/n1").is_dir());
}

#[test]
fn a_node_that_cannot_start_is_reported_with_its_reason_at_once() {
    // Cluster data (R3 streams) where a single node keeps its own: what a
    // mode switch used to do, and what a hand-copied store can still do.
    let state = tempfile::tempdir().unwrap();
    let mut cluster = up(state.path(), true);
    cluster.wait_for("Aegis showcase is up", Duration::from_secs(180));
    cluster.terminate_within(Duration::from_secs(40));
    let single = state.path().join("nats/single/n1");
    std::fs::create_dir_all(&single).unwrap();
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(state.path().join("nats/cluster/n1/jetstream"))
        .arg(&single)
        .status()
        .unwrap();
    assert!(status.success());
    let started = Instant::now();
    let mut run = up(state.path(), false);
    let exit = run.exit_within(Duration::from_secs(25));
    let out = run.output();
    assert!(!exit.success(), "{out}");
    assert!(
        out.contains("replicas") && out.contains("failed to start"),
        "the error names the cause:\n{out}"
    );
    eprintln!("refused after {:?}", started.elapsed());
}

#[test]
fn the_showcase_is_not_said_up_while_its_monitor_cannot_start() {
    // A setting only the monitor reads, and refuses: it exits at once and,
    // with `--no-restart`, nothing brings it back. Twice in one state
    // directory (whose monitor log is kept across runs), with two
    // different refusals: each run's error quotes its own.
    let state = tempfile::tempdir().unwrap();
    let (base, api) = free_up_ports();
    let (base, api) = (base.to_string(), api.to_string());
    for (var, value, flag) in [
        ("AEGIS_API_MAX_CONNECTIONS", "0", "max-connections"),
        (
            "AEGIS_API_HEADER_READ_TIMEOUT",
            "soon",
            "header-read-timeout",
        ),
    ] {
        let mut run = Proc::spawn_with_env(
            &[
                "up",
                "--single-node",
                "--no-restart",
                "--base-port",
                &base,
                "--api-port",
                &api,
                "--state-dir",
                state.path().to_str().unwrap(),
            ],
            &[(var, value)],
        );
        let exit = run.exit_within(Duration::from_secs(60));
        let out = run.output();
        assert!(!exit.success(), "{out}");
        assert!(!out.contains("Aegis showcase is up"), "{out}");
        let error = out
            .lines()
            .find(|l| l.starts_with("error: the monitor"))
            .unwrap_or_else(|| panic!("no error naming the monitor:\n{out}"));
        assert!(error.contains("monitor.log"), "{error}");
        assert!(error.contains(flag), "not this run's refusal: {error}");
    }
}
