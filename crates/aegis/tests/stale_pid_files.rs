//! Pid files an `aegis up` left behind (killed, out of memory, a power
//! loss: its clean-up never ran) may name a pid that another process has
//! now. `aegis chaos kill` must not signal that process, and `aegis up`
//! must not take it for a running `aegis up` (nor tell the user to kill
//! it); a pid file counts only while its pid is still the process it was
//! written for. Every process here is the test's own: stand-ins (`sleep`)
//! for showcase children, and this test process for the `aegis up`.

mod common;

use std::{
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use aegis::up::{
    remote::Remote,
    supervisor::{PidFile, check_pid, write_pid},
};

/// A process of this test (killed on drop).
struct Stand(Child);

impl Stand {
    fn sleep() -> Stand {
        Stand(Command::new("sleep").arg("600").spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Whether it still runs, after a moment for a signal to land.
    fn survives(&mut self) -> bool {
        std::thread::sleep(Duration::from_millis(300));
        self.0.try_wait().unwrap().is_none()
    }

    /// Whether it has died within `within` (a SIGKILLed process takes a
    /// moment to die, more on a loaded host).
    fn dies_within(&mut self, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        loop {
            if self.0.try_wait().unwrap().is_some() {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Stand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A state directory whose `aegis up` is this test process, as `aegis up`
/// writes its `up.pid`.
fn state_of_a_running_up() -> tempfile::TempDir {
    let state = tempfile::tempdir().unwrap();
    std::fs::create_dir(state.path().join("pids")).unwrap();
    write_pid(&state.path().join("up.pid"), std::process::id()).unwrap();
    state
}

fn pid_file(state: &Path, name: &str) -> std::path::PathBuf {
    state.join("pids").join(format!("{name}.pid"))
}

/// A pid file written (as `aegis up` writes them) for an earlier process
/// that had the pid `stand` has now: its recorded start time is another.
fn write_for_an_earlier_process(path: &Path, stand: &Stand) {
    write_pid(path, stand.pid()).unwrap();
    let start = format!("{}.start", path.display());
    let recorded = std::fs::read_to_string(&start).unwrap();
    let (ticks, boot) = recorded.trim().split_once(' ').unwrap();
    let earlier: u64 = ticks.parse::<u64>().unwrap().saturating_sub(1);
    std::fs::write(&start, format!("{earlier} {boot}")).unwrap();
}

#[test]
fn chaos_kill_does_not_signal_the_process_a_stale_pid_file_names() {
    let state = state_of_a_running_up();
    let dir = state.path().to_str().unwrap();
    // order-9: a pid file of an older `aegis up` (the pid alone), whose pid
    // is now a `sleep`; order-8: one recording another start time.
    let mut old_format = Stand::sleep();
    std::fs::write(
        pid_file(state.path(), "order-9"),
        old_format.pid().to_string(),
    )
    .unwrap();
    let mut reused = Stand::sleep();
    write_for_an_earlier_process(&pid_file(state.path(), "order-8"), &reused);

    for (name, stand) in [("order-9", &mut old_format), ("order-8", &mut reused)] {
        let (ok, out) = common::run(&["chaos", "kill", name, "--state-dir", dir]);
        assert!(!ok, "{name}: {out}");
        assert!(!out.contains("SIGKILLed"), "{name}: {out}");
        assert!(
            out.contains("stale") && out.contains(&format!("pid {}", stand.pid())),
            "{name}: said why: {out}"
        );
        assert!(out.contains("sleep"), "{name}: names what has it: {out}");
        assert!(stand.survives(), "{name}: the process was signalled: {out}");
    }

    // The process a pid file was written for is still killed.
    let mut child = Stand::sleep();
    write_pid(&pid_file(state.path(), "order-7"), child.pid()).unwrap();
    let (ok, out) = common::run(&["chaos", "kill", "order-7", "--state-dir", dir]);
    assert!(ok, "{out}");
    assert!(
        out.contains(&format!("SIGKILLed order-7 (pid {})", child.pid())),
        "{out}"
    );
    assert!(
        child.dies_within(aegis_testkit::wait::PATIENCE),
        "order-7 still runs: {out}"
    );
}

#[test]
fn up_takes_over_a_stale_up_pid_and_names_no_process_to_kill() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    // Fails once past the lock, at the UI, so no showcase starts.
    let empty_ui = tempfile::tempdir().unwrap();
    let up = |dir: &str| {
        common::run(&[
            "up",
            "--state-dir",
            dir,
            "--ui-dir",
            empty_ui.path().to_str().unwrap(),
            "--no-ui-build",
        ])
    };

    // An older `aegis up`'s file (the pid alone), now naming a `sleep`;
    // then one recording another start time.
    let mut sleeper = Stand::sleep();
    let up_pid = state.path().join("up.pid");
    for older in [true, false] {
        if older {
            std::fs::write(&up_pid, sleeper.pid().to_string()).unwrap();
        } else {
            write_for_an_earlier_process(&up_pid, &sleeper);
        }
        let (ok, out) = up(dir);
        assert!(!ok, "{out}");
        assert!(!out.contains("already running"), "older {older}: {out}");
        assert!(!out.contains("kill"), "older {older}: {out}");
        assert!(
            out.contains("stale") && out.contains(&format!("pid {}", sleeper.pid())),
            "older {older}: said so: {out}"
        );
        assert!(out.contains("no index.html there"), "older {older}: {out}");
        assert!(sleeper.survives(), "older {older}");
    }

    // A running `aegis up` (this test process, as it writes its file) is
    // still one.
    let running = state_of_a_running_up();
    let (ok, out) = up(running.path().to_str().unwrap());
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!(
            "aegis up is already running (pid {})",
            std::process::id()
        )),
        "{out}"
    );
}

#[test]
fn a_pid_file_without_a_start_time_counts_only_for_the_programs_aegis_up_runs() {
    // A real nats-server of this test's own, on a port of its own.
    let binary = aegis_testkit::nats_server_binary().expect("nats-server (run `make bootstrap`)");
    let mut nats = Stand(
        Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &common::free_port().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let sleeper = Stand::sleep();
    let state = state_of_a_running_up();
    std::fs::write(pid_file(state.path(), "nats-n1"), nats.pid().to_string()).unwrap();
    std::fs::write(pid_file(state.path(), "order-1"), sleeper.pid().to_string()).unwrap();

    let remote = Remote::new(state.path());
    assert!(remote.up_running());
    assert!(remote.alive("nats-n1"), "an older aegis up's nats-server");
    assert!(!remote.alive("order-1"), "a sleep is no showcase child");
    assert_eq!(
        check_pid(&pid_file(state.path(), "order-1")),
        PidFile::Reused {
            pid: i32::try_from(sleeper.pid()).unwrap(),
            program: "sleep".to_owned()
        }
    );
    assert!(nats.survives());
}

#[test]
fn chaos_says_the_up_pid_is_stale_when_it_is() {
    // An `aegis up` that did not stop cleanly left its `up.pid`: its pid
    // is now a `sleep` (a file of an older `aegis up`, then one recording
    // another start time), or nobody's.
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap();
    let up_pid = state.path().join("up.pid");
    let sleeper = Stand::sleep();
    let mut gone = Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    for case in ["older", "reused", "gone"] {
        match case {
            "older" => std::fs::write(&up_pid, sleeper.pid().to_string()).unwrap(),
            "reused" => write_for_an_earlier_process(&up_pid, &sleeper),
            _ => {
                supervisor_remove_start(&up_pid);
                std::fs::write(&up_pid, gone.id().to_string()).unwrap();
            }
        }
        let pid = if case == "gone" {
            gone.id()
        } else {
            sleeper.pid()
        };
        let (ok, out) = common::run(&["chaos", "kill", "order-1", "--state-dir", dir]);
        assert!(!ok, "{case}: {out}");
        assert!(
            out.contains(&format!("no `aegis up` is running with state in {dir}")),
            "{case}: {out}"
        );
        assert!(
            out.contains("stale") && out.contains(&format!("pid {pid}")),
            "{case}: says the pid file is stale: {out}"
        );
        if case != "gone" {
            assert!(out.contains("sleep"), "{case}: names what has it: {out}");
        }
    }
}

/// Removes the start file beside a pid file (as an older `aegis up` left).
fn supervisor_remove_start(path: &Path) {
    let _ = std::fs::remove_file(format!("{}.start", path.display()));
}
