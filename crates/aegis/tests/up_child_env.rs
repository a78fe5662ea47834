//! `aegis up` hands each child only the credentials that child needs, even
//! when the shell that started it holds them all: the docs have the
//! operator `set -a; . .aegis/credentials; set +a` to become the operator,
//! and `aegis up` run from that shell must not give a service (nor a NATS
//! node) the other users' passwords, the system and route passwords or
//! the monitor's tokens. Read from each child's `/proc/PID/environ`.

#![cfg(target_os = "linux")]

mod common;

use std::{path::Path, time::Duration};

use common::{Proc, free_up_ports, pids};

/// A secret with `what` in it, long enough for a token.
fn secret(what: &str) -> String {
    format!("{what}{}{}", nuid::next(), nuid::next())
}

/// The `NAME=value` entries of process `pid`'s environment.
fn environ(pid: i32) -> Vec<(String, String)> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    raw.split(|b| *b == 0)
        .filter_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (k, v) = entry.split_once('=')?;
            Some((k.to_owned(), v.to_owned()))
        })
        .collect()
}

/// `aegis up` on one node with one pricing-service instance, from a shell
/// whose environment is `env`.
fn up(state: &Path, env: &[(&str, &str)]) -> Proc {
    let (base, api) = free_up_ports();
    let (base, api) = (base.to_string(), api.to_string());
    let mut up = Proc::spawn_with_env(
        &[
            "up",
            "--single-node",
            "--no-ui-build",
            "--instances",
            "order=0,pricing=1,risk=0",
            "--base-port",
            &base,
            "--api-port",
            &api,
            "--state-dir",
            state.to_str().unwrap(),
        ],
        env,
    );
    up.wait_for("Ctrl-C stops everything", Duration::from_secs(180));
    up
}

#[test]
fn a_child_inherits_no_credential_of_the_shell_that_started_aegis_up() {
    let state = tempfile::tempdir().unwrap();
    // The credentials file of an earlier run, and a shell that sourced it.
    let secrets: Vec<(&str, String)> = vec![
        ("AEGIS_ADMIN_TOKEN", secret("admin")),
        ("AEGIS_VIEWER_TOKEN", secret("viewer")),
        ("AEGIS_NATS_SYSTEM_PASSWORD", secret("system")),
        ("AEGIS_NATS_PASSWORD", secret("operator")),
        ("AEGIS_NATS_PASSWORD_SVC_ORDER_SERVICE", secret("order")),
        ("AEGIS_NATS_PASSWORD_SVC_PRICING_SERVICE", secret("pricing")),
        ("AEGIS_NATS_PASSWORD_SVC_RISK_SERVICE", secret("risk")),
        ("AEGIS_NATS_PASSWORD_MONITOR", secret("monitor")),
        ("AEGIS_SESSION_SECRET", secret("session")),
        ("AEGIS_NATS_ROUTE_PASSWORD", secret("route")),
    ];
    let mut file = String::from("# Aegis showcase secrets\n");
    let mut env: Vec<(&str, &str)> = vec![
        ("AEGIS_NATS_USER", "operator"),
        ("AEGIS_NATS_INBOX_PREFIX", "_INBOX_operator"),
        ("AEGIS_NATS_SYSTEM_USER", "sys"),
    ];
    for (var, value) in &secrets {
        file.push_str(&format!("{var}={value}\n"));
        env.push((var, value));
    }
    std::fs::write(state.path().join("credentials"), file).unwrap();
    let up = up(state.path(), &env);

    let children = pids(state.path());
    let names: Vec<&str> = children.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains(&"pricing-1") && names.contains(&"monitor") && names.len() >= 3,
        "{names:?}"
    );
    let mut leaks = Vec::new();
    for (name, pid) in &children {
        // What each child is given by `aegis up` itself.
        let own: &[&str] = match name.as_str() {
            "pricing-1" => &["AEGIS_NATS_PASSWORD_SVC_PRICING_SERVICE"],
            "monitor" => &[
                "AEGIS_NATS_PASSWORD_MONITOR",
                "AEGIS_ADMIN_TOKEN",
                "AEGIS_VIEWER_TOKEN",
                "AEGIS_SESSION_SECRET",
                "AEGIS_NATS_SYSTEM_PASSWORD",
            ],
            _ => &[],
        };
        for (k, v) in environ(*pid) {
            if k.starts_with("AEGIS_NATS_PASSWORD_") {
                leaks.push(format!("{name}: {k}"));
            }
            for (var, value) in &secrets {
                if v.contains(value.as_str()) && !own.contains(var) {
                    leaks.push(format!("{name}: {k} holds {var}"));
                }
            }
            if k == "AEGIS_NATS_USER" && v == "operator" {
                leaks.push(format!("{name}: AEGIS_NATS_USER=operator"));
            }
        }
    }
    drop(up);
    assert!(
        leaks.is_empty(),
        "children inherited credentials:\n{}",
        leaks.join("\n")
    );
}
