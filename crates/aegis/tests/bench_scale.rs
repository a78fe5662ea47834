//! `aegis bench scale`, short: two fleet sizes (100 and 200 instances over
//! four worker processes, one caller per 50 instances as when the callers
//! are the instances themselves), each with its own nats-server. Asserts
//! that no live instance's record expired, that a caller's registry
//! deliveries do not grow with the fleet (it watches only the two services
//! it calls), and that the bus's registry deliveries grow linearly with the
//! fleet, not with callers × instances. The full runs and their numbers are
//! in `docs/performance.md`.

mod common;

use std::time::Duration;

use common::run_bench;
use serde_json::Value;

/// Runs the benchmark at `instances` and returns its JSON results.
fn run(instances: usize) -> Value {
    let n = instances.to_string();
    let callers = (instances / 50).to_string();
    let run = run_bench(
        &[
            "bench",
            "scale",
            "--instances",
            &n,
            "--processes",
            "4",
            "--callers",
            &callers,
            "--secs",
            "10",
            "--rate",
            "20",
            "--no-heavy-load",
        ],
        Duration::from_secs(240),
    );
    let (status, out) = (run.status, run.output);
    eprintln!("{out}");
    // Without --check the exit status says only whether it ran: timing
    // targets are the benchmark's business, not this test's.
    assert!(status.success(), "the benchmark failed ({status}):\n{out}");
    let report = run.report.expect("a JSON report");
    report["results"].clone()
}

#[test]
fn registry_cost_per_caller_is_flat_and_bus_cost_linear_in_the_fleet() {
    let small = run(100);
    let large = run(200);
    let num = |r: &Value, k: &str| r[k].as_f64().unwrap_or_else(|| panic!("no {k} in {r:#}"));
    for r in [&small, &large] {
        assert_eq!(
            num(r, "falseExpiries"),
            0.0,
            "a live instance expired: {r:#}"
        );
        assert!(num(r, "rpcCalls") > 0.0, "the callers called: {r:#}");
        assert!(
            num(r, "busRegistryMsgsPerS") > 0.0,
            "deliveries were counted: {r:#}"
        );
    }
    // A caller of two services of 10 instances gets about 5 record writes a
    // second (each unchanged record re-written every 4 s, plus its own probe
    // instances) at any fleet size; watching the whole registry it would
    // get twice as many at twice the fleet.
    let per_caller = num(&large, "callerRegistryMsgsPerS") / num(&small, "callerRegistryMsgsPerS");
    assert!(
        per_caller < 1.4,
        "per-caller deliveries grew {per_caller:.2}x with 2x the fleet:\n{small:#}\n{large:#}"
    );
    // Twice the fleet (and twice the callers): about twice the deliveries.
    // Every caller watching everything would make it about 2 x (3 + 4) /
    // (3 + 2) = 2.8x here (the monitor and the benchmark's reader watch
    // everything, as they must).
    let bus = num(&large, "busRegistryMsgsPerS") / num(&small, "busRegistryMsgsPerS");
    assert!(
        bus < 2.4,
        "bus deliveries grew {bus:.2}x with 2x the fleet:\n{small:#}\n{large:#}"
    );
}
