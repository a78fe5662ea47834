//! What a configuration error says, as a service's user reads it: the
//! file's key as the file spells it (not figment's `default.` profile in
//! front), the environment variable by its full name, and the fault in
//! plain words rather than serde's (`invalid value signed int `-5`,
//! expected u64`, nested backticks).

#![allow(clippy::result_large_err)] // figment's Jail closures return its large error type

mod common;

use aegis_sdk::{ConfigLoader, Connection, startup::Causes};

fn said(file: Option<&str>, env: bool) -> String {
    let mut loader = ConfigLoader::new().file_opt(file);
    if env {
        loader = loader.env();
    }
    let err = loader.load().expect_err("the configuration is refused");
    Causes(&err).to_string()
}

#[test]
fn a_misspelt_key_in_a_file_is_named_as_the_file_spells_it() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("c1.toml", "[nats]\nrequest_timout = \"5s\"\n")?;
        let text = said(Some("c1.toml"), false);
        assert!(
            text.starts_with(
                "invalid configuration: `nats.request_timout` in c1.toml: unknown key; \
                 known keys are `servers`, "
            ),
            "{text}"
        );
        assert!(text.contains("`request_timeout`"), "{text}");
        assert!(!text.contains("default."), "figment's profile: {text}");
        assert!(!text.contains("expected `one of"), "{text}");
        Ok(())
    });
}

#[test]
fn a_value_of_the_wrong_kind_in_a_file_says_what_was_expected_in_words() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("c2.toml", "[nats]\nreplicas = -5\n")?;
        let text = said(Some("c2.toml"), false);
        assert_eq!(
            text,
            "invalid configuration: `nats.replicas` in c2.toml: expected a whole number \
             (0 or more), found -5"
        );
        jail.create_file("c3.toml", "[nats]\nrequest_timeout = 5\n")?;
        let text = said(Some("c3.toml"), false);
        assert!(
            text.starts_with("invalid configuration: `nats.request_timeout` in c3.toml: expected"),
            "{text}"
        );
        assert!(text.ends_with("found 5"), "{text}");
        jail.create_file("c4.toml", "[nats]\nservers = 5\n")?;
        assert_eq!(
            said(Some("c4.toml"), false),
            "invalid configuration: `nats.servers` in c4.toml: expected a string or a list of \
             strings"
        );
        Ok(())
    });
}

/// Against a real server: `Connection::from_env`, as a service starts,
/// refuses the variable before connecting and names it.
#[test]
fn a_bad_variable_is_named_by_its_full_name() {
    let nats = common::server();
    figment::Jail::expect_with(|jail| {
        jail.set_env("AEGIS_NATS_URL", nats.url());
        jail.set_env("AEGIS_NATS_REPLICAS", "x");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(Connection::from_env())
            .expect_err("the variable does not parse");
        let text = Causes(&err).to_string();
        assert_eq!(
            text,
            "invalid configuration: AEGIS_NATS_REPLICAS: expected a whole number (0 or more), \
             found \"x\""
        );
        jail.set_env("AEGIS_NATS_REPLICAS", "2");
        jail.set_env("AEGIS_NATS_REQUEST_TIMEOUT", "soon");
        let text = said(None, true);
        assert!(
            text.starts_with("invalid configuration: AEGIS_NATS_REQUEST_TIMEOUT: "),
            "{text}"
        );
        assert!(!text.contains("NATS.REQUEST_TIMEOUT"), "{text}");
        Ok(())
    });
}
