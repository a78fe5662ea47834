//! `aegis api` without any token refuses to start before any I/O, as
//! docs/api.md says: before it binds its port and before it logs that it
//! is starting.

mod common;

use std::process::Command;

#[test]
fn without_a_token_the_api_refuses_before_binding_or_logging() {
    // The port is taken: a monitor that bound first would fail on it,
    // and say so, instead of naming the missing token.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let mut cmd = Command::new(common::AEGIS);
    cmd.args(["api", "--port", &port, "--nats-url", "nats://127.0.0.1:1"])
        .env("NO_COLOR", "1")
        .env("AEGIS_LOG", "info");
    for var in [
        "AEGIS_ADMIN_TOKEN",
        "AEGIS_VIEWER_TOKEN",
        "AEGIS_TOKEN_FILE",
        "AEGIS_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    let out = cmd.output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("no API token configured") && all.contains("--insecure-dev"),
        "names the missing token: {all}"
    );
    assert!(
        !all.contains("monitor API starting"),
        "logged a start first: {all}"
    );
    assert!(!all.contains("cannot listen"), "bound first: {all}");
}
