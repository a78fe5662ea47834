//! `aegis bench` refuses, when it reads its command line, a number no
//! benchmark can run with (a 0 ms deadline, no rounds, no callers, a
//! negative, NaN or overlong time): it names the flag and exits at once, before any
//! server or instance starts, as `--timeout-ms 0` is refused elsewhere.

mod common;

use std::time::Duration;

use common::assert_flag_refused;

#[test]
fn numbers_no_benchmark_can_run_with_are_refused_naming_the_flag() {
    let cases: &[(&str, &[&str], &str)] = &[
        (
            "failover",
            &["--stateless", "--deadline-ms", "0"],
            "--deadline-ms",
        ),
        (
            "failover",
            &["--sticky", "--deadline-ms", "0"],
            "--deadline-ms",
        ),
        (
            "failover",
            &["--sticky", "--attempt-timeout-ms", "0"],
            "--attempt-timeout-ms",
        ),
        (
            "failover",
            &["--stateless", "--instances", "1"],
            "--instances",
        ),
        ("failover", &["--stateless", "--kills", "0"], "--kills"),
        (
            "failover",
            &["--stateless", "--interval-secs", "0"],
            "--interval-secs",
        ),
        (
            "failover",
            &["--stateless", "--down-secs=-1"],
            "--down-secs",
        ),
        ("failover", &["--stateless", "--rate", "0"], "--rate"),
        ("failover", &["--stateless", "--callers", "0"], "--callers"),
        ("failover", &["--sticky", "--rounds", "0"], "--rounds"),
        ("failover", &["--sticky", "--probe-ms", "0"], "--probe-ms"),
        ("chaos", &["--rounds", "0"], "--rounds"),
        ("chaos", &["--callers", "0"], "--callers"),
        ("chaos", &["--call-deadline-ms", "0"], "--call-deadline-ms"),
        ("chaos", &["--poll-ms", "0"], "--poll-ms"),
        ("chaos", &["--settle-secs", "NaN"], "--settle-secs"),
        ("chaos", &["--warmup-secs=-1"], "--warmup-secs"),
        ("scale", &["--instances", "1"], "--instances"),
        ("scale", &["--processes", "0"], "--processes"),
        ("scale", &["--per-service", "0"], "--per-service"),
        ("scale", &["--secs", "4"], "--secs"),
        ("scale", &["--refresh-ms", "0"], "--refresh-ms"),
        ("scale", &["--ttl-ms", "0"], "--ttl-ms"),
        ("scale", &["--rate", "0"], "--rate"),
        ("events", &["--concurrency", "0"], "--concurrency"),
        ("events", &["--rounds", "0"], "--rounds"),
        ("events", &["--round-secs", "0"], "--round-secs"),
        ("events", &["--calls", "0"], "--calls"),
        ("events", &["--batch", "0"], "--batch"),
        ("events", &["--runs", "0"], "--runs"),
        ("rpc", &["--calls", "0"], "--calls"),
        ("rpc", &["--batch", "0"], "--batch"),
        ("rpc", &["--concurrency", "0"], "--concurrency"),
        ("rpc", &["--rounds", "0"], "--rounds"),
        ("rpc", &["--round-secs", "0"], "--round-secs"),
        // Times too long for a Duration panicked once the benchmark ran.
        ("rpc", &["--round-secs", "1e300"], "--round-secs"),
        ("events", &["--round-secs", "1e300"], "--round-secs"),
        ("chaos", &["--settle-secs", "1e300"], "--settle-secs"),
        (
            "failover",
            &["--stateless", "--interval-secs", "1e300"],
            "--interval-secs",
        ),
        (
            "failover",
            &["--stateless", "--down-secs", "1e300"],
            "--down-secs",
        ),
        ("failover", &["--stateless", "--rate", "1e-300"], "--rate"),
        (
            "failover",
            &["--sticky", "--probe-ms", "18446744073709551615"],
            "--probe-ms",
        ),
        (
            "chaos",
            &["--call-interval-ms", "18446744073709551615"],
            "--call-interval-ms",
        ),
        ("chaos", &["--poll-ms", "18446744073709551615"], "--poll-ms"),
        ("scale", &["--secs", "18446744073709551615"], "--secs"),
        ("scale", &["--ttl-ms", "18446744073709551615"], "--ttl-ms"),
    ];
    for (bench, flags, flag) in cases {
        let mut args = vec!["bench", bench];
        args.extend_from_slice(flags);
        // A flag that is not refused starts the benchmark: the bound ends
        // the test then (and the drop stops the benchmark with SIGTERM).
        assert_flag_refused(&args, flag, Duration::from_secs(10));
    }
}
