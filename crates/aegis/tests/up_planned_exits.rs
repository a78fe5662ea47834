//! `aegis up`'s supervisor logs a child's exit at INFO when it was planned
//! (an instance stopped cleanly, as an operator's SIGTERM to its pid
//! stops it; a NATS node `aegis chaos` holds down until restart-nats) and
//! keeps WARN for the exits nobody planned (a crash, `aegis chaos kill`'s
//! SIGKILL): a WARN reads as an alarm.

#![cfg(target_os = "linux")]

mod common;

use std::{path::Path, time::Duration};

use common::{Proc, pids};
use nix::sys::signal::Signal;

/// `aegis up --single-node` with one pricing instance, once it is up.
fn up(state: &Path) -> Proc {
    Proc::up_single_node("order=0,pricing=1,risk=0", state)
}

fn pid_of(state: &Path, name: &str) -> i32 {
    pids(state)
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no pid file of {name}"))
        .1
}

/// The supervisor's lines about `child` exiting, the last one last.
fn exits(up: &mut Proc, child: &str) -> Vec<String> {
    up.output()
        .lines()
        .filter(|l| l.contains("exited") && l.contains(&format!("child={child} ")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn planned_exits_are_logged_at_info_and_crashes_at_warn() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let mut up = up(state);

    // An operator restarts one instance: SIGTERM to its pid.
    common::signal(pid_of(state, "pricing-1"), Signal::SIGTERM);
    up.wait_for("restarted child=pricing-1", Duration::from_secs(30));
    let clean = exits(&mut up, "pricing-1");
    assert_eq!(clean.len(), 1, "{clean:?}");
    assert!(
        clean[0].contains(" INFO ") && clean[0].contains("exit status: 0"),
        "a clean exit is no alarm: {}",
        clean[0]
    );

    // A NATS node restarted by `aegis chaos`: held down, then started.
    let dir = state.to_str().unwrap();
    let (ok, out) = common::run(&["chaos", "--state-dir", dir, "restart-nats", "1"]);
    assert!(ok, "{out}");
    up.wait_for("restarted child=nats-n1", Duration::from_secs(30));
    let held = exits(&mut up, "nats-n1");
    assert_eq!(held.len(), 1, "{held:?}");
    assert!(
        held[0].contains(" INFO ") && held[0].contains("restart-nats"),
        "a restart-nats in progress is no alarm: {}",
        held[0]
    );

    // A crash (the kill drill's SIGKILL) stays a warning.
    let (ok, out) = common::run(&["chaos", "--state-dir", dir, "kill", "pricing-1"]);
    assert!(ok, "{out}");
    up.wait_for(
        "restarted child=pricing-1 restarts=2",
        Duration::from_secs(30),
    );
    let crash = exits(&mut up, "pricing-1");
    assert_eq!(crash.len(), 2, "{crash:?}");
    assert!(
        crash[1].contains(" WARN ") && crash[1].contains("SIGKILL"),
        "a crash is one: {}",
        crash[1]
    );
}
