//! A one-shot command (`aegis status`, `aegis call`) with no NATS to reach
//! says so once, names the URL it tried and what to do, and exits with
//! failure.

mod common;

use std::time::Duration;

use common::{Proc, free_port};

#[test]
fn a_command_without_nats_says_what_to_do() {
    // A free port: nothing listens there.
    let url = format!("nats://127.0.0.1:{}", free_port());
    for args in [
        vec!["status", "--nats-url", url.as_str()],
        vec![
            "call",
            "order-service",
            "get_order",
            "{}",
            "--nats-url",
            url.as_str(),
        ],
    ] {
        let mut cmd = Proc::spawn(&args);
        let status = cmd.exit_within(Duration::from_secs(30));
        let out = cmd.output();
        assert!(!status.success(), "{args:?}: {status}\n{out}");
        let error = out
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{args:?}: no error line:\n{out}"));
        assert!(error.contains(&url), "names the URL tried: {error}");
        assert!(
            error.contains("`aegis up` starts one") && error.contains("--nats-url"),
            "says what to do: {error}"
        );
        assert_eq!(
            error.matches("os error").count(),
            1,
            "says the cause once: {error}"
        );
    }
}
