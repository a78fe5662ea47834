//! The commands `aegis chaos` prints to undo what it did (`undo: aegis
//! chaos healthy ...`, "`aegis chaos restart-nats N` brings it back") name
//! the `--state-dir` it was given: copied as printed, they act on the same
//! showcase, not on `.aegis` (which may be another one, or none).

mod common;

use std::path::Path;

use common::Proc;

/// `aegis up --single-node` with one pricing instance, once it is up.
fn up(state: &Path) -> Proc {
    Proc::up_single_node("order=0,pricing=1,risk=0", state)
}

/// Runs the printed `command` (starting with `aegis `) in a shell, from a
/// directory with no `.aegis`; its success and output.
fn run_printed(command: &str) -> (bool, String) {
    let elsewhere = tempfile::tempdir().unwrap();
    let command = command.replacen("aegis", common::AEGIS, 1);
    let mut sh = std::process::Command::new("sh");
    sh.arg("-c").arg(&command).current_dir(elsewhere.path());
    common::output(sh)
}

#[test]
fn the_commands_chaos_prints_name_the_state_dir_it_was_given() {
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let dir = state.to_str().unwrap();
    let _showcase = up(state);

    let (ok, out) = common::run(&[
        "chaos",
        "unhealthy",
        "pricing-1",
        "--for",
        "10m",
        "--state-dir",
        dir,
    ]);
    assert!(ok, "{out}");
    let undo = out
        .lines()
        .find_map(|l| l.strip_prefix("undo: "))
        .unwrap_or_else(|| panic!("no undo line:\n{out}"));
    assert!(undo.contains(&format!("--state-dir {dir}")), "{undo}");
    let (ok, healed) = run_printed(undo);
    assert!(ok, "{undo}:\n{healed}");

    let (ok, out) = common::run(&["chaos", "--state-dir", dir, "kill-nats", "1"]);
    assert!(ok, "{out}");
    let back = out
        .split('`')
        .find(|part| part.starts_with("aegis chaos restart-nats"))
        .unwrap_or_else(|| panic!("no restart command:\n{out}"));
    assert!(back.contains(&format!("--state-dir {dir}")), "{back}");
    let (ok, restarted) = run_printed(back);
    assert!(ok, "{back}:\n{restarted}");
    assert!(restarted.contains("restarted"), "{restarted}");
}
