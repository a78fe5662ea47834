//! A benchmark stopped by SIGTERM (`timeout`, a CI job cancelled, `kill`)
//! stops the nats-server it started and removes its directory, instead of
//! leaving them for the rest of the machine's life.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{Proc, alive, signal};
use nix::sys::signal::Signal;

/// Kills the servers found when the test ends, whatever it found: a
/// failing run does not leave them behind either.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            signal(*pid, Signal::SIGKILL);
        }
    }
}

/// The nats-server processes whose parent is `parent`, each with the
/// directory of its config file (`-c <dir>/nats-server.conf`).
fn nats_children(parent: u32) -> Vec<(i32, PathBuf)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid ...`: the command may hold spaces.
            let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
            if comm != "nats-server" || ppid != parent {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let config = args.iter().position(|a| *a == b"-c").map(|i| args[i + 1])?;
            let dir = PathBuf::from(std::str::from_utf8(config).ok()?)
                .parent()?
                .to_path_buf();
            Some((pid, dir))
        })
        .collect()
}

#[test]
fn sigterm_stops_the_benchmarks_nats_server_and_removes_its_directory() {
    // A latency phase long enough to be interrupted in.
    let mut bench = Proc::spawn(&[
        "bench", "rpc", "--calls", "10000000", "--batch", "1000", "--rounds", "1",
    ]);
    let pid = bench.child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let servers = loop {
        let found = nats_children(pid);
        if !found.is_empty() {
            break found;
        }
        assert!(
            Instant::now() < deadline,
            "no nats-server started by the benchmark:\n{}",
            bench.output()
        );
        assert!(
            matches!(bench.child.try_wait(), Ok(None)),
            "the benchmark ended before it was interrupted:\n{}",
            bench.output()
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let _cleanup = KillOnDrop(servers.iter().map(|(pid, _)| *pid).collect());
    // Mid-run: measuring latency (a phase said in a line where no
    // progress bar is drawn).
    bench.wait_for("sequential latency", Duration::from_secs(60));
    bench.signal(Signal::SIGTERM);
    let status = bench.exit_within(Duration::from_secs(20));
    assert!(
        !status.success(),
        "an interrupted run is no success: {status}"
    );
    let out = bench.output();

    let deadline = Instant::now() + Duration::from_secs(5);
    for (server, dir) in servers {
        while alive(server) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive(server),
            "nats-server {server} still runs after the benchmark stopped:\n{out}"
        );
        assert!(!dir.exists(), "{} is left behind:\n{out}", dir.display());
    }
    assert!(
        out.contains("interrupted"),
        "says it was interrupted:\n{out}"
    );
}
