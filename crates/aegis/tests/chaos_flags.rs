//! The drills' bounds are said in the flags' terms (`--delay`, `--for`),
//! when the command line is read, before anything is sent: not in the
//! control protocol's field names (`delay_ms`, `for_ms`) from an instance
//! that refused the request.

mod common;

use std::time::Duration;

use aegis_testkit::NatsServer;
use common::{Proc, run};

#[test]
fn a_drill_beyond_its_bound_is_refused_in_the_flags_terms() {
    let nats = NatsServer::start().expect("start nats-server (run `make bootstrap`)");
    let url = nats.url();
    let mut service = Proc::spawn(&["service", "echo", "--nats-url", &url]);
    service.wait_for("started; Ctrl-C or SIGTERM", Duration::from_secs(30));
    let state = tempfile::tempdir().unwrap();
    let state = state.path().display().to_string();
    for (args, flag, bound) in [
        (
            &["chaos", "slow", "echo-service", "--delay", "2m"][..],
            "--delay",
            "at most 1m",
        ),
        // Below a millisecond: not rounded to 0, which lifts the drill.
        (
            &["chaos", "slow", "echo-service", "--delay", "999us"],
            "--delay",
            "at least 1ms",
        ),
        (
            &["chaos", "slow", "echo-service", "--delay", "1ns"],
            "--delay",
            "at least 1ms",
        ),
        (
            &["chaos", "unhealthy", "echo-service", "--for", "2days"],
            "--for",
            "at most 1day",
        ),
        (
            &["chaos", "unhealthy", "echo-service", "--for", "0s"],
            "--for",
            "at least 1ms",
        ),
    ] {
        let mut args = args.to_vec();
        args.extend(["--nats-url", &url, "--state-dir", &state]);
        let (ok, out) = run(&args);
        assert!(!ok, "{args:?}: accepted:\n{out}");
        for internal in ["delay_ms", "for_ms"] {
            assert!(!out.contains(internal), "{args:?}: says {internal}:\n{out}");
        }
        assert!(
            out.contains(&format!("'{flag} <")) && out.contains(bound),
            "{args:?}: names {flag} and its bound ({bound}):\n{out}"
        );
    }
}

/// `chaos slow --help` says what the drill shows, and claims no routing
/// the showcase does not do: its order service calls pricing round-robin,
/// so a slowed instance keeps its share of the calls.
#[test]
fn slow_help_claims_no_latency_aware_routing() {
    let (ok, out) = run(&["chaos", "slow", "--help"]);
    assert!(ok, "{out}");
    let text = out.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(!text.contains("latency-aware routing"), "{text}");
    assert!(text.contains("keeps its share"), "{text}");
    assert!(text.contains("p99"), "{text}");
}

/// `kill-nats` and `restart-nats` take the connection flags the other
/// actions take (what `aegis up`'s banner teaches to append), so the same
/// `--credentials FILE` suffix works on every chaos command; here they get
/// as far as finding no showcase.
#[test]
fn nats_node_actions_accept_the_connection_flags() {
    let state = tempfile::tempdir().unwrap();
    let credentials = state.path().join("credentials");
    std::fs::write(&credentials, "").unwrap();
    let (state, credentials) = (
        state.path().display().to_string(),
        credentials.display().to_string(),
    );
    for action in [
        &["kill-nats", "1"][..],
        &["restart-nats", "1", "--graceful"],
    ] {
        let mut args = vec!["chaos"];
        args.extend_from_slice(action);
        args.extend(["--credentials", &credentials, "--state-dir", &state]);
        let (ok, out) = run(&args);
        assert!(!ok, "{args:?}:\n{out}");
        assert!(!out.contains("unexpected argument"), "{args:?}:\n{out}");
        assert!(out.contains("no `aegis up` is running"), "{args:?}:\n{out}");
    }
}
