//! `aegis bench chaos`, short: the showcase (3 NATS nodes, order ×3,
//! pricing ×2, risk ×2) under a steady order flow survives a leader SIGKILL
//! and a NATS node SIGKILL with no acknowledged order or event lost, no
//! duplicate fill, never two ACTIVE in the API, and the dead leader shown
//! down within a second — the benchmark's own bounds, which set its exit
//! status. The full sequence and its numbers are in `docs/performance.md`.

mod common;

use std::time::Duration;

use common::{report_row, run_bench};

#[test]
fn a_leader_kill_and_a_nats_node_kill_lose_nothing_and_show_one_leader() {
    let run = run_bench(
        &[
            "bench",
            "chaos",
            "--faults",
            "kill-leader,kill-nats-2",
            "--nats-down-secs",
            "10",
        ],
        Duration::from_secs(480),
    );
    let (status, out) = (run.status, run.output);
    eprintln!("{out}");
    assert!(status.success(), "a bound was broken ({status}):\n{out}");

    let report = run.report.expect("a JSON report");
    let row = |metric: &str| -> f64 { report_row(&report, metric)["value"].as_f64().unwrap() };
    // The flow really ran, through both faults.
    assert!(row("orders acknowledged") > 50.0, "{report:#}");
    assert_eq!(row("acknowledged orders lost"), 0.0);
    assert_eq!(row("duplicate fills"), 0.0);
    assert_eq!(row("acknowledged events lost"), 0.0);
    assert_eq!(row("two ACTIVE visible"), 0.0);
    assert!(row("kill-leader: shown down after") <= 1000.0);
    let faults = report["results"]["faults"].as_array().unwrap();
    assert_eq!(faults.len(), 2);
    assert_eq!(faults[1]["fault"]["victim"], "nats-n2");
}
