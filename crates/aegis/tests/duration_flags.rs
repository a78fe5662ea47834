//! A duration flag (`--startup-timeout`, `--duration`, `--for`, `--delay`,
//! the monitor's timeouts) too long for the clock is refused when the
//! command line is read, naming the flag, instead of panicking when it is
//! added to the time now ("overflow when adding duration to instant").

mod common;

use std::time::Duration;

use common::assert_flag_refused;

#[test]
fn a_duration_too_long_for_the_clock_is_refused_naming_the_flag() {
    const FOREVER: &str = "500000000000years";
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "init",
                "--startup-timeout",
                FOREVER,
                "--nats-url",
                "nats://127.0.0.1:1",
            ],
            "--startup-timeout",
        ),
        (
            &[
                "traffic",
                "--duration",
                FOREVER,
                "--nats-url",
                "nats://127.0.0.1:1",
            ],
            "--duration",
        ),
        (
            &["chaos", "unhealthy", "order-service", "--for", FOREVER],
            "--for",
        ),
        (&["api", "--request-timeout", FOREVER], "--request-timeout"),
        (
            &["api", "--header-read-timeout", FOREVER],
            "--header-read-timeout",
        ),
    ];
    for (args, flag) in cases {
        let out = assert_flag_refused(args, flag, Duration::from_secs(20));
        assert!(!out.contains("panicked"), "{args:?}: {out}");
    }
}
