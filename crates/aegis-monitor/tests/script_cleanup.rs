//! The clean-up of the project's scripts (`scripts/lib/procs.sh`, used by
//! `scripts/fuzz-api.sh` and `scripts/load-api.sh`) leaves no process: a
//! nats-server and the `fake_instances` population are started the way the
//! scripts start them, and the script's exit must stop both — clients
//! before the server — also when the server died first.

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

/// The `fake_instances` example next to this test binary (`cargo test`
/// builds every example of the package before running the tests).
fn fake_instances() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().unwrap().parent().unwrap();
    let path = debug.join("examples").join("fake_instances");
    assert!(
        path.is_file(),
        "{} is missing: run the tests with `cargo test -p aegis-monitor` (which builds the examples)",
        path.display()
    );
    path
}

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z ")
}

/// Runs a script that starts NATS and 8 instances with `start_bg`, optionally
/// SIGKILLs NATS, and exits; returns the pids it started, how long the exit
/// (the clean-up) took, and the script's output.
fn run_script(kill_nats_first: bool) -> (Vec<i32>, Duration, String) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let nats = aegis_testkit::nats_server_binary().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let script = format!(
        r#"
set -euo pipefail
source "{root}/scripts/lib/procs.sh"
trap stop_all EXIT
port() {{ python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }}
P="$(port)"
start_bg nats "{nats}" -js -a 127.0.0.1 -p "$P" -sd "{dir}/js" >"{dir}/nats.log" 2>&1
for _ in $(seq 1 100); do (exec 3<>/dev/tcp/127.0.0.1/$P) 2>/dev/null && break; sleep 0.1; done
start_bg instances "{fake}" "nats://127.0.0.1:$P" 8 >"{dir}/instances.log" 2>&1
for _ in $(seq 1 300); do grep -q "instances registered" "{dir}/instances.log" && break; sleep 0.1; done
grep -q "instances registered" "{dir}/instances.log"
echo "pids ${{PROC_PIDS[*]}}"
if [ "{kill}" = 1 ]; then kill -KILL "${{PROC_PIDS[0]}}"; sleep 2; fi
echo "exiting $(date +%s.%N)"
"#,
        root = root.display(),
        nats = nats.display(),
        dir = dir.path().display(),
        fake = fake_instances().display(),
        kill = u8::from(kill_nats_first),
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    let ended = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let text = format!("{stdout}\n{stderr}");
    let nats_log = std::fs::read_to_string(dir.path().join("nats.log")).unwrap_or_default();
    let tail: Vec<&str> = nats_log.lines().rev().take(15).collect();
    assert!(
        out.status.success(),
        "the script failed:\n{text}\nnats.log (last lines, newest first):\n{}",
        tail.join("\n")
    );
    let pids: Vec<i32> = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pids "))
        .expect("the script printed its pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let exiting: f64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("exiting "))
        .unwrap()
        .parse()
        .unwrap();
    (
        pids,
        Duration::from_secs_f64((ended - exiting).max(0.0)),
        text,
    )
}

#[test]
fn the_scripts_clean_up_stops_clients_before_the_server_and_leaves_nothing() {
    let started = Instant::now();
    let (pids, took, out) = run_script(false);
    assert_eq!(pids.len(), 2, "{out}");
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the script:\n{out}");
    }
    assert!(
        took < Duration::from_secs(15),
        "the clean-up took {took:?}:\n{out}"
    );
    eprintln!("clean-up took {took:?} (whole run {:?})", started.elapsed());
}

#[test]
fn the_clean_up_leaves_nothing_when_nats_died_first() {
    let (pids, took, out) = run_script(true);
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} outlived the script:\n{out}");
    }
    // fake_instances stops its 8 instances at once, each bounded, instead
    // of hanging on the missing server (the reported defect) or taking
    // one timeout per instance.
    assert!(
        took < Duration::from_secs(15),
        "the clean-up took {took:?}:\n{out}"
    );
    assert!(
        !out.contains("ignored SIGTERM"),
        "a process had to be killed:\n{out}"
    );
    eprintln!("clean-up after a NATS crash took {took:?}");
}
