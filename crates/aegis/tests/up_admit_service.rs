//! `aegis up --admit-service NAME`: a service of one's own, written with
//! the SDK, joins the running showcase as the user `svc-NAME` with the
//! settings of `<state-dir>/admitted/NAME.env`. It registers, serves the
//! operator's `aegis call`, shows in `aegis status` and the monitor's API,
//! and calls the showcase's pricing-service; it may not serve another
//! name or publish in another service's event domain. A run without the
//! flag admits it no more. A name that cannot be admitted is refused
//! before anything starts.

mod common;

use std::{collections::BTreeMap, path::Path, time::Duration};

use aegis_sdk::{AegisConfig, ConnectError, Connection, Secret, rpc::WireError};
use common::{Proc, free_up_ports};
use serde_json::{Value, json};

const NAME: &str = "fx-service";

/// `aegis up` on one node with one instance of each showcase service,
/// admitting `admit`, once it says it is up.
fn up(state: &Path, admit: &[&str]) -> Proc {
    let (base, api) = free_up_ports();
    let (base, api) = (base.to_string(), api.to_string());
    let mut args = vec![
        "up",
        "--single-node",
        "--no-ui-build",
        "--instances",
        "order=1,pricing=1,risk=1",
        "--base-port",
        &base,
        "--api-port",
        &api,
        "--state-dir",
        state.to_str().unwrap(),
    ];
    for name in admit {
        args.extend(["--admit-service", name]);
    }
    let mut up = Proc::spawn(&args);
    up.wait_for("Ctrl-C stops everything", Duration::from_secs(180));
    up
}

/// The `NAME=value` lines of a file.
fn vars(path: &Path) -> BTreeMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// The SDK's configuration from an admitted service's environment file, as
/// `ConfigLoader::env` would read it from a shell that sourced the file.
fn config(env: &BTreeMap<String, String>) -> AegisConfig {
    let mut config = AegisConfig::with_servers(&env["AEGIS_NATS_URL"]);
    config.nats.user = Some(env["AEGIS_NATS_USER"].clone());
    config.nats.password = Some(Secret::new(env["AEGIS_NATS_PASSWORD"].clone()));
    config.nats.inbox_prefix = Some(env["AEGIS_NATS_INBOX_PREFIX"].clone());
    config
}

/// `aegis ARGS --state-dir state` (the operator, found in the state
/// directory): its success and output.
fn aegis(state: &Path, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new(common::AEGIS);
    cmd.args(args)
        .args(["--state-dir", state.to_str().unwrap()])
        .env("NO_COLOR", "1");
    for var in common::CREDENTIAL_VARS {
        cmd.env_remove(var);
    }
    common::output(cmd)
}

#[test]
fn an_admitted_service_joins_the_showcase_and_a_run_without_the_flag_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut showcase = up(&state, &[NAME]);
    let banner = showcase.output();
    let env_file = state.join("admitted").join(format!("{NAME}.env"));
    let env = vars(&env_file);
    assert_eq!(env["AEGIS_NATS_USER"], "svc-fx-service");
    assert_eq!(env["AEGIS_NATS_INBOX_PREFIX"], "_INBOX_svc-fx-service");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&env_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        banner.contains(&format!("set -a; . {}; set +a;", env_file.display())),
        "{banner}"
    );
    assert!(!banner.contains(&env["AEGIS_NATS_PASSWORD"]), "{banner}");
    let api_port = banner
        .lines()
        .find_map(|l| l.trim().strip_prefix("API         http://127.0.0.1:"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no API line:\n{banner}"))
        .to_owned();

    // The service, as examples/ten_lines.rs writes it, started with the
    // file's settings.
    let (conn, svc) = rt.block_on(async {
        let conn = Connection::connect(config(&env)).await.unwrap();
        let svc = conn
            .service(NAME, "1.0.0")
            .instance_id("fx-1")
            .handler("hello", |name: String| async move {
                Ok::<_, WireError>(format!("Hello, {name}!"))
            })
            .start()
            .await
            .unwrap();
        (conn, svc)
    });

    // The operator calls it; status and the monitor list it.
    let (ok, out) = aegis(&state, &["call", NAME, "hello", "\"desk\""]);
    assert!(ok && out.contains("Hello, desk!"), "{out}");
    let (ok, out) = aegis(&state, &["status"]);
    assert!(ok && out.contains(NAME) && out.contains("fx-1"), "{out}");
    let viewer = vars(&state.join("credentials"))["AEGIS_VIEWER_TOKEN"].clone();
    let listed: Value = rt.block_on(async {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{api_port}/api/instances/{NAME}"))
            .bearer_auth(viewer)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(listed.to_string().contains("fx-1"), "{listed}");

    rt.block_on(async {
        // It calls the showcase's services.
        let quote: Value = conn
            .rpc()
            .call("pricing-service", "get_price", &json!({"symbol": "AAPL"}))
            .await
            .unwrap();
        assert!(quote.get("price").is_some(), "{quote}");

        // It may not serve another name: NATS refuses the registry write
        // and the subscriptions, and the start fails.
        let other = tokio::time::timeout(
            Duration::from_secs(60),
            conn.service("other-service", "1.0.0")
                .instance_id("other-1")
                .handler(
                    "hello",
                    |name: String| async move { Ok::<_, WireError>(name) },
                )
                .start(),
        )
        .await
        .expect("the start of another name ends");
        assert!(other.is_err(), "svc-fx-service served other-service");

        // Nor publish in another service's event domain.
        let first = env["AEGIS_NATS_URL"].split(',').next().unwrap().to_owned();
        let mut probe =
            common::Probe::connect(&first, &env["AEGIS_NATS_USER"], &env["AEGIS_NATS_PASSWORD"])
                .await;
        probe
            .publish_refused("publish events.order.filled", "events.order.filled", b"{}")
            .await;

        svc.shutdown().await.unwrap();
        conn.drain().await.unwrap();
    });
    showcase.terminate_within(Duration::from_secs(40));

    // A run without the flag: no file, no password, and the server
    // refuses the user.
    let mut showcase = up(&state, &[]);
    assert!(!env_file.exists(), "an earlier run's file is kept");
    assert!(
        !std::fs::read_to_string(state.join("credentials"))
            .unwrap()
            .contains("SVC_FX_SERVICE")
    );
    let url = std::fs::read_to_string(state.join("nats-url")).unwrap();
    let mut old = env.clone();
    old.insert("AEGIS_NATS_URL".to_owned(), url.trim().to_owned());
    let refused = rt.block_on(Connection::connect(config(&old)));
    assert!(
        matches!(refused, Err(ConnectError::Refused { .. })),
        "{:?}",
        refused.map(|_| ())
    );
    showcase.terminate_within(Duration::from_secs(40));
}

#[test]
fn a_name_that_cannot_be_admitted_is_refused_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_arg = state.to_str().unwrap();
    for (names, said) in [
        (&["Fx-service"][..], "not a service name"),
        (&["fx--service"][..], "must not contain \"--\""),
        (
            &["pricing-service"][..],
            "one of the showcase's own services",
        ),
        (
            &["ledger", "ledger-service"][..],
            "would both publish events.ledger.>",
        ),
    ] {
        let mut args = vec!["up", "--single-node", "--state-dir", state_arg];
        for name in names {
            args.extend(["--admit-service", name]);
        }
        let (ok, out) = common::run(&args);
        assert!(!ok, "{names:?}: {out}");
        assert!(
            out.contains(said) && out.contains("--admit-service"),
            "{names:?}: {out}"
        );
        assert!(!state.exists(), "{names:?}: the state directory was made");
    }
}
