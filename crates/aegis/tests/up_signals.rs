//! How `aegis up` stops on the signals a user's terminal and system send:
//! Ctrl-C (SIGINT to the terminal's whole foreground process group) stops
//! the showcase in order and gracefully, as one SIGINT to `aegis up` alone
//! does; a closed terminal (SIGHUP) stops it the same way; and a SIGKILLed
//! `aegis up` leaves no child running.

mod common;

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{AEGIS, alive, free_up_ports, pids};
use nix::{sys::signal::Signal, unistd::Pid};

/// `aegis up --single-node` in a process group of its own, as a shell
/// starts a foreground job, with its output in `state/up.out`.
struct Up {
    child: Child,
    state: std::path::PathBuf,
    /// Its children's pids once it is up.
    children: Vec<(String, i32)>,
}

impl Up {
    fn start(state: &Path) -> Up {
        Up::start_with(state, false)
    }

    /// As [`start`](Self::start); with `hung_up`, its standard output is a
    /// pipe whose reader goes away once the showcase is up, as a closed
    /// terminal's does (a write then fails rather than blocks).
    fn start_with(state: &Path, hung_up: bool) -> Up {
        let (base, api) = free_up_ports();
        let out = std::fs::File::create(state.join("up.out")).unwrap();
        let stdout = if hung_up {
            Stdio::piped()
        } else {
            Stdio::from(out.try_clone().unwrap())
        };
        let mut child = terminal_job()
            .args([
                "up",
                "--single-node",
                "--instances",
                "order=2,pricing=1,risk=1",
                "--base-port",
                &base.to_string(),
                "--api-port",
                &api.to_string(),
            ])
            .arg("--state-dir")
            .arg(state)
            .env("AEGIS_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(out.try_clone().unwrap()))
            .process_group(0)
            .spawn()
            .unwrap();
        if let Some(piped) = child.stdout.take() {
            let mut out = out;
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                for line in std::io::BufReader::new(piped).lines().map_while(Result::ok) {
                    let _ = writeln!(out, "{line}");
                    if line.contains("Ctrl-C stops everything") {
                        // The terminal is gone: nobody reads any more.
                        return;
                    }
                }
            });
        }
        let mut up = Up {
            child,
            state: state.to_owned(),
            children: Vec::new(),
        };
        up.await_output("Ctrl-C stops everything", Duration::from_secs(120));
        up.children = pids(state);
        assert!(up.children.len() >= 6, "{:?}", up.children);
        up
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.state.join("up.out")).unwrap_or_default()
    }

    fn await_output(&mut self, needle: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.output().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("exited ({status}) before {needle:?}:\n{}", self.output());
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {within:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn exit_within(&mut self, bound: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "aegis up still running after {bound:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until none of its children runs; fails naming the first one
    /// still running after `bound`.
    fn children_gone_within(&self, bound: Duration) {
        let deadline = Instant::now() + bound;
        for (name, pid) in &self.children {
            while alive(*pid) {
                assert!(
                    Instant::now() < deadline,
                    "{name} (pid {pid}) outlived aegis up"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// The log of child `name` in the state directory.
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// Every service instance deregistered, none was forced, and the NATS
    /// node got no SIGINT of its own (it is stopped last, by `aegis up`).
    fn assert_stopped_gracefully(&self) {
        for (name, _) in &self.children {
            let log = self.log(name);
            if name.starts_with("nats-") {
                assert!(
                    !log.contains("Trapped \"interrupt\""),
                    "{name} got the terminal's SIGINT itself:\n{log}"
                );
            } else if name != "monitor" {
                assert!(!log.contains("forced exit"), "{name} was forced:\n{log}");
                assert!(
                    log.contains("deregistered"),
                    "{name} did not deregister:\n{log}"
                );
            }
        }
    }
}

/// A command that starts `aegis up` as a terminal's shell starts a job:
/// with SIGHUP's default handling. Under `nohup` (a test run started so)
/// it would inherit SIGHUP ignored, and `aegis up` keeps it ignored, as
/// it should under `nohup`: a closed terminal would then stop nothing.
/// `env --default-signal` (coreutils 8.31 or later) resets it before
/// running `aegis`, in the same process; it is used only when needed.
fn terminal_job() -> Command {
    if aegis::shutdown::hangup_ignored() {
        let mut env = Command::new("env");
        env.args(["--default-signal=HUP", AEGIS]);
        env
    } else {
        Command::new(AEGIS)
    }
}

impl Drop for Up {
    /// A failed test leaves nothing running: `aegis up` and every child it
    /// had, whatever group they are in.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for (_, pid) in self.children.iter().chain(pids(&self.state).iter()) {
            if alive(*pid) {
                common::signal(*pid, Signal::SIGKILL);
            }
        }
    }
}

#[test]
fn ctrl_c_at_the_terminal_stops_every_child_gracefully_in_order() {
    let state = tempfile::tempdir().unwrap();
    let mut up = Up::start(state.path());
    // What a terminal's Ctrl-C does: SIGINT to the whole foreground group.
    let group = Pid::from_raw(up.child.id() as i32);
    nix::sys::signal::killpg(group, Signal::SIGINT).unwrap();
    let status = up.exit_within(Duration::from_secs(40));
    assert!(status.success(), "{status}:\n{}", up.output());
    up.children_gone_within(Duration::from_secs(5));
    up.assert_stopped_gracefully();
}

#[test]
fn a_closed_terminal_stops_the_showcase_gracefully() {
    let state = tempfile::tempdir().unwrap();
    let mut up = Up::start_with(state.path(), true);
    // A closed terminal (or a lost ssh session): SIGHUP to the group,
    // twice (the shell sends it to its jobs, and the kernel again when
    // the shell exits), and the output goes nowhere.
    let group = Pid::from_raw(up.child.id() as i32);
    nix::sys::signal::killpg(group, Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    nix::sys::signal::killpg(group, Signal::SIGHUP).unwrap();
    let status = up.exit_within(Duration::from_secs(40));
    assert!(status.success(), "{status}:\n{}", up.output());
    up.children_gone_within(Duration::from_secs(5));
    up.assert_stopped_gracefully();
}

#[test]
fn a_killed_aegis_up_leaves_no_child_running() {
    let state = tempfile::tempdir().unwrap();
    let mut up = Up::start(state.path());
    up.child.kill().unwrap();
    up.child.wait().unwrap();
    // Each child gets SIGTERM and stops on its own, gracefully (services
    // within their 10 s stop bound), although the signal may come more
    // than once (once per thread of the dying parent).
    up.children_gone_within(Duration::from_secs(20));
    up.assert_stopped_gracefully();
}
