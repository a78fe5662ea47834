//! `aegis bench rpc --auth --tls --runs 2`: both sides connect as
//! least-privilege users over TLS to the benchmark's own server, and the
//! report is the median of two runs with every row measured. (Ratios are judged from release runs, recorded in
//! docs/security.md, "Measured: what auth and TLS cost", not in a debug
//! build under test load.)

mod common;

use std::time::Duration;

use common::{Proc, TINY_RPC_BENCH, report_row, run_bench};

#[test]
fn the_rpc_benchmark_runs_with_auth_and_tls() {
    let run = run_bench(
        &[
            "bench", "rpc", "--auth", "--tls", "--calls", "200", "--batch", "100", "--rounds", "1",
            "--runs", "2",
        ],
        Duration::from_secs(240),
    );
    let (status, out) = (run.status, run.output);
    assert!(status.success(), "{status}:\n{out}");
    let report = run.report.expect("a JSON report");
    assert_eq!(report["parameters"]["auth"], true);
    assert_eq!(report["parameters"]["tls"], true);
    assert_eq!(report["parameters"]["runs"], 2);
    assert!(out.contains("median of 2 runs"), "{out}");
    let rows = report["rows"].as_array().unwrap();
    assert!(rows.len() >= 5, "{report:#}");
    for row in rows {
        let measured = |side: &str| row[side].as_f64().is_some_and(|v| v > 0.0);
        assert!(measured("raw") && measured("sdk"), "unmeasured row {row}");
        let ratios = row["ratios"].as_array().expect("each run's ratio");
        assert_eq!(ratios.len(), 2, "{row}");
    }
}

/// `--breakdown` measures every side's throughput too; `--only` runs the
/// throughput phase for one side alone (for a profiler) and judges no
/// target; a side that does not exist is refused by name.
#[test]
fn the_breakdown_measures_throughput_and_one_side_can_run_alone() {
    let mut wrong = Proc::spawn(&[
        "bench", "rpc", "--only", "nope", "--calls", "100", "--batch", "100",
    ]);
    let status = wrong.exit_within(Duration::from_secs(120));
    let out = wrong.output();
    assert!(!status.success(), "{out}");
    assert!(
        out.contains("--only \"nope\" names no side") && out.contains("\"raw\", \"sdk\""),
        "{out}"
    );

    let side = "sdk client, by instance";
    let args = [
        &["bench", "rpc", "--breakdown", "--only", side][..],
        &TINY_RPC_BENCH[..],
    ]
    .concat();
    let run = run_bench(&args, Duration::from_secs(240));
    let (status, out) = (run.status, run.output);
    assert!(status.success(), "{status}:\n{out}");
    let report = run.report.expect("a JSON report");
    let row = |name: &str| report_row(&report, name);
    let alone = row(&format!("· {side} throughput"));
    assert!(alone["sdk"].as_f64().unwrap() > 0.0, "{alone}");
    assert_eq!(
        alone["raw"].as_f64(),
        Some(0.0),
        "the raw side ran: {alone}"
    );
    let main = row("concurrent rpc throughput");
    assert_eq!(main["sdk"].as_f64(), Some(0.0), "the sdk side ran: {main}");
    assert!(main["target"].is_null(), "a target was judged: {main}");
    assert!(out.contains("· raw client→sdk server p50"), "{out}");
}

/// `--raw-busy-ns` (calibration) adds busy work to each raw call where it
/// is asked, judges no target, and says so in its report.
#[test]
fn a_calibration_run_slows_the_raw_side_and_judges_nothing() {
    let args = [
        &[
            "bench",
            "rpc",
            "--raw-busy-ns",
            "500000",
            "--busy-side",
            "server",
        ][..],
        &TINY_RPC_BENCH[..],
    ]
    .concat();
    let run = run_bench(&args, Duration::from_secs(240));
    let (status, out) = (run.status, run.output);
    assert!(status.success(), "{status}:\n{out}");
    assert!(out.contains("no target judged in this run"), "{out}");
    let report = run.report.expect("a JSON report");
    assert_eq!(report["parameters"]["raw_busy_ns"], 500_000);
    assert_eq!(report["parameters"]["busy_side"], "server");
    for row in report["rows"].as_array().unwrap() {
        assert!(row["target"].is_null(), "a target was judged: {row}");
    }
    let p50 = report_row(&report, "sequential rpc p50");
    assert!(
        p50["raw"].as_f64().unwrap() >= 500.0,
        "every raw call waits 0.5 ms in its responder: {p50}"
    );
}
