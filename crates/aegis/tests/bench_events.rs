//! `aegis bench events`: raw JetStream publishes and the SDK's, side by
//! side on the benchmark's own server; the throughput ratio is the median
//! of the rounds' own ratios and is judged against 0.95. (Ratios are
//! judged from release runs, recorded in docs/performance.md, not in a
//! debug build under test load.)

mod common;

use std::time::Duration;

use common::{report_row, run_bench};

#[test]
fn the_events_benchmark_pairs_its_rounds_and_judges_its_target() {
    let run = run_bench(
        &[
            "bench",
            "events",
            "--rounds",
            "3",
            "--round-secs",
            "0.2",
            "--calls",
            "100",
            "--batch",
            "50",
        ],
        Duration::from_secs(240),
    );
    let (status, out) = (run.status, run.output);
    assert!(status.success(), "{status}:\n{out}");
    let report = run.report.expect("a JSON report");
    assert!(
        report["parameters"]["throughput_ratio"]
            .as_str()
            .is_some_and(|how| how.contains("median")),
        "{report:#}"
    );
    let row = report_row(&report, "jetstream publish throughput");
    for side in ["raw", "sdk", "ratio"] {
        assert!(
            row[side].as_f64().is_some_and(|v| v.is_finite() && v > 0.0),
            "{side} not measured: {row}"
        );
    }
    assert_eq!(row["target"]["kind"], "at_least", "{row}");
    assert_eq!(row["target"]["ratio"].as_f64(), Some(0.95), "{row}");
}
