//! Services of your own run next to the showcase (`aegis up
//! --admit-service NAME`): for each, the environment file
//! `<state-dir>/admitted/NAME.env` that makes a process connect to the
//! showcase's NATS as the user `svc-NAME` (its role is
//! [`crate::permissions::admitted_services`]'s; its password is kept in the
//! credentials file with the others', see [`super::credentials`]).
//!
//! The file holds only `NAME=value` lines, no comments and no quoting
//! but where a path needs it, so both `set -a; . FILE; set +a` and
//! `env $(cat FILE) PROGRAM` read it. Each run writes the files of the
//! services it admits and removes the others': a service no longer
//! admitted has no user on the servers, and no file says otherwise.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::credentials::Credentials;
use crate::permissions::{Role, ServiceRole};

/// The directory of the environment files in the state directory.
pub const DIR: &str = "admitted";

/// The environment file of the admitted service `service`.
pub fn env_path(state_dir: &Path, service: &str) -> PathBuf {
    state_dir.join(DIR).join(format!("{service}.env"))
}

/// Writes the environment file of each service in `admitted` (mode 0600:
/// it holds a password) and removes every other `*.env` file of the
/// directory. `url` is every node's client URL, comma-separated;
/// `tls_ca` the CA the servers' certificate is checked with, when TLS is
/// required.
///
/// # Errors
/// When the directory or a file cannot be written.
pub fn write(
    state_dir: &Path,
    admitted: &[ServiceRole],
    url: &str,
    tls_ca: Option<&Path>,
    creds: &Credentials,
) -> anyhow::Result<()> {
    let dir = state_dir.join(DIR);
    remove_stale(&dir, admitted);
    if admitted.is_empty() {
        // An empty directory is left alone; nothing in it is stale.
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for service in admitted {
        let user = Role::Service(service.clone()).user_name();
        let mut text = format!("AEGIS_NATS_URL={url}\n");
        for (var, value) in creds.nats_env(&user) {
            text.push_str(&format!("{var}={value}\n"));
        }
        if let Some(ca) = tls_ca {
            text.push_str(&format!(
                "AEGIS_NATS_TLS_CA={}\n",
                super::shell_quoted(&ca.display().to_string())
            ));
        }
        // Made anew, so a file another mode left is not reused.
        super::write_anew(&env_path(state_dir, &service.service), &text, 0o600)?;
    }
    Ok(())
}

/// Removes the `*.env` files of `dir` that no service of `admitted` owns.
fn remove_stale(dir: &Path, admitted: &[ServiceRole]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(service) = name.to_str().and_then(|n| n.strip_suffix(".env")) else {
            continue;
        };
        if !admitted.iter().any(|s| s.service == service) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The banner's lines for the admitted services: for each, the one
/// command that runs it (from its own crate) as its user. No password.
pub fn banner(state_dir: &Path, admitted: &[ServiceRole]) -> Vec<String> {
    if admitted.is_empty() {
        return Vec::new();
    }
    let mut lines = vec![
        "Your services (run each from its crate; it connects as svc-NAME, calls the public \
         methods of the showcase's services (not their admin methods) and every method of the \
         other admitted ones, publishes events.DOMAIN.>; see docs/services.md):"
            .to_owned(),
    ];
    for service in admitted {
        let file = env_path(state_dir, &service.service);
        lines.push(format!(
            "  set -a; . {}; set +a; cargo run      # {} as svc-{}, events.{}.>",
            super::shell_quoted(&file.display().to_string()),
            service.service,
            service.service,
            service.event_domains.join(",")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::permissions::admitted_services;

    #[test]
    fn each_admitted_service_gets_its_file_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path();
        let fx = admitted_services(&["fx-service".to_owned()]).unwrap();
        let creds = super::super::credentials::ensure(state, None, &fx).unwrap();
        let url = "nats://127.0.0.1:4222,nats://127.0.0.1:4223";
        write(state, &fx, url, None, &creds).unwrap();
        let path = env_path(state, "fx-service");
        let text = std::fs::read_to_string(&path).unwrap();
        let password = creds.nats_password("svc-fx-service").unwrap();
        let again = super::super::credentials::ensure(state, None, &fx).unwrap();
        assert_eq!(
            again.nats_password("svc-fx-service"),
            Some(password),
            "kept"
        );
        assert_eq!(
            text,
            format!(
                "AEGIS_NATS_URL={url}\nAEGIS_NATS_USER=svc-fx-service\n\
                 AEGIS_NATS_PASSWORD={password}\nAEGIS_NATS_INBOX_PREFIX=_INBOX_svc-fx-service\n"
            )
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let banner = banner(state, &fx).join("\n");
        assert!(banner.contains(&path.display().to_string()), "{banner}");
        assert!(!banner.contains(password), "{banner}");

        // The next run admits another service: fx-service's file goes, and
        // so does its password.
        let book = admitted_services(&["book".to_owned()]).unwrap();
        let creds = super::super::credentials::ensure(state, None, &book).unwrap();
        write(state, &book, url, None, &creds).unwrap();
        assert!(!path.exists());
        assert!(env_path(state, "book").exists());
        assert_eq!(creds.nats_password("svc-fx-service"), None);
        let kept = std::fs::read_to_string(state.join("credentials")).unwrap();
        assert!(!kept.contains("SVC_FX_SERVICE") && kept.contains("SVC_BOOK"));
    }
}
