//! `aegis bench rpc --auth --tls --runs 2`: both sides connect as
//! least-privilege users over TLS to the benchmark's own server, and the
//! report is the median of two runs with every row measured. (Ratios are judged from release runs, recorded in
//! docs/security.md, "Measured: what auth and TLS cost", not in a debug
//! build under test load.)

mod common;

use std::time::Duration;

use common::Proc;
use serde_json::Value;

#[test]
fn the_rpc_benchmark_runs_with_auth_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("rpc.json");
    let json_arg = json.display().to_string();
    let mut bench = Proc::spawn(&[
        "bench", "rpc", "--auth", "--tls", "--calls", "200", "--batch", "100", "--rounds", "1",
        "--runs", "2", "--json", &json_arg,
    ]);
    let status = bench.exit_within(Duration::from_secs(240));
    let out = bench.output();
    assert!(status.success(), "{status}:\n{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
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
