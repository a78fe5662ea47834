//! `aegis service`'s options of the example services that a deployment
//! may need to tune: order-service's `--expire-after` (how long a pending
//! order waits for its caller's retry) and `--keep-settled` (how long a
//! settled order is kept), and risk-service's
//! `--catch-up-timeout` (how long an assessment waits for the fill it
//! names). Bounds are said in the flags' terms, at once; a flag given to a
//! service it does not belong to is refused, not ignored.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::{Proc, assert_flag_refused, run};

#[test]
fn the_services_take_their_tuning_flags() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let mut order = Proc::spawn(&[
        "service",
        "order",
        "--expire-after",
        "45s",
        "--keep-settled",
        "24h",
        "--nats-url",
        &url,
        "--instance-id",
        "order-opts-1",
    ]);
    order.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
    let mut risk = Proc::spawn_with_env(
        &[
            "service",
            "risk",
            "--nats-url",
            &url,
            "--instance-id",
            "risk-opts-1",
        ],
        &[("AEGIS_RISK_CATCH_UP_TIMEOUT", "1500ms")],
    );
    risk.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
}

#[test]
fn bounds_are_said_in_the_flags_terms() {
    let bound = Duration::from_secs(20);
    let out = assert_flag_refused(
        &["service", "order", "--expire-after", "1s"],
        "--expire-after",
        bound,
    );
    assert!(out.contains("at least 4s"), "{out}");
    assert!(!out.contains("call_timeout"), "{out}");
    let out = assert_flag_refused(
        &["service", "risk", "--catch-up-timeout", "0s"],
        "--catch-up-timeout",
        bound,
    );
    assert!(out.contains("greater than zero"), "{out}");
    let out = assert_flag_refused(
        &["service", "order", "--keep-settled", "500ms"],
        "--keep-settled",
        bound,
    );
    assert!(out.contains("at least 1s"), "{out}");
    let out = assert_flag_refused(
        &["service", "order", "--keep-settled", "40d"],
        "--keep-settled",
        bound,
    );
    assert!(out.contains("at most 30 days"), "{out}");
}

/// order-service waits 2 s for risk's answer: a catch-up wait that long or
/// longer turns "catching up; retry" into "risk-service is unavailable".
#[test]
fn a_catch_up_timeout_the_order_service_cannot_wait_for_is_refused() {
    let bound = Duration::from_secs(20);
    for value in ["2s", "3s", "1m"] {
        let out = assert_flag_refused(
            &["service", "risk", "--catch-up-timeout", value],
            "--catch-up-timeout",
            bound,
        );
        assert!(out.contains("below 2s"), "{value}: {out}");
        assert!(out.contains("call timeout"), "{value}: {out}");
        assert!(!out.contains("call_timeout"), "{value}: {out}");
    }
    let (_, help) = run(&["service", "--help"]);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
    let said = help
        .split("--catch-up-timeout")
        .nth(1)
        .unwrap_or_else(|| panic!("no --catch-up-timeout in the help:\n{help}"));
    assert!(!said.contains("e.g. `2s`"), "{said}");
    assert!(said.contains("below 2s"), "{said}");
}

#[test]
fn a_flag_of_another_service_is_refused() {
    for (args, flag) in [
        (
            &["service", "pricing", "--expire-after", "45s"][..],
            "--expire-after",
        ),
        (
            &["service", "risk", "--keep-settled", "1h"],
            "--keep-settled",
        ),
        (
            &["service", "order", "--catch-up-timeout", "1s"],
            "--catch-up-timeout",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend([
            "--nats-url",
            "nats://127.0.0.1:1",
            "--startup-timeout",
            "0s",
        ]);
        let (ok, out) = run(&args);
        assert!(!ok, "{args:?}: accepted:\n{out}");
        assert!(
            out.contains(flag) && out.contains("only for"),
            "{args:?}: {out}"
        );
    }
}
