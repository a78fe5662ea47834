//! The showcase's secrets: the monitor's bearer tokens (taken from
//! `AEGIS_ADMIN_TOKEN` / `AEGIS_VIEWER_TOKEN` when set), the password of
//! each NATS user of the application account (one per role, see
//! [`crate::permissions`]) and of the system account, generated once and
//! kept in `.aegis/credentials` (mode 0600) so they survive restarts. The
//! key that signs the UI's session cookies (`AEGIS_SESSION_SECRET`) is kept
//! there too, so a monitor restarted by the supervisor does not sign every
//! browser out, and so is the password of the cluster routes
//! (`AEGIS_NATS_ROUTE_PASSWORD`, user `route`), without which no server
//! joins the showcase's cluster.
//!
//! The operator's user is written as `AEGIS_NATS_USER` /
//! `AEGIS_NATS_PASSWORD`, the variables every `aegis` command reads, so
//! `set -a; . .aegis/credentials; set +a` makes a shell the operator; the
//! other users' passwords are `AEGIS_NATS_PASSWORD_<USER>` (e.g.
//! `AEGIS_NATS_PASSWORD_SVC_ORDER_SERVICE`), which `aegis up` hands to each
//! child as its own `AEGIS_NATS_USER` / `AEGIS_NATS_PASSWORD`. The users of
//! the services admitted with `aegis up --admit-service NAME` (`svc-NAME`)
//! are kept the same way, for as long as each run admits them: a run that
//! does not admit one writes no password for it.

use std::{collections::BTreeMap, path::Path};

use anyhow::Context;
use rand::Rng;

use crate::permissions::{OPERATOR_USER, Role, ServiceRole, User, inbox_prefix, showcase_roles};

/// The showcase's secrets.
#[derive(Clone)]
pub struct Credentials {
    /// Monitor token: reads and writes.
    pub admin: String,
    /// Monitor token: reads only.
    pub viewer: String,
    /// Password of the NATS system account's user `sys`.
    pub nats_system_password: String,
    /// The application account's users (one per role) with their passwords.
    pub nats_users: Vec<User>,
    /// Signs the UI's session cookies.
    pub session_secret: String,
    /// Password of the cluster routes' user [`ROUTE_USER`]: a server
    /// must present it to route to a node of the showcase's cluster.
    pub route_password: String,
}

/// The user a node of the showcase's cluster routes to the others as.
pub const ROUTE_USER: &str = "route";

/// The credentials file's key of the cluster routes' password.
pub const ROUTE_PASSWORD_VAR: &str = "AEGIS_NATS_ROUTE_PASSWORD";

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Loads or creates the credentials file; environment variables win. With
/// `tls_ca` (`aegis up --tls`) the file names the CA clients verify the
/// servers with (`AEGIS_NATS_TLS_CA`), so a shell that sources it, and
/// `aegis call`/`status`/`chaos` reading it, connect over TLS. `admitted`
/// are the services admitted next to the showcase
/// ([`crate::permissions::admitted_services`]): each gets its user
/// `svc-NAME` after the showcase's own.
///
/// A key whose value is empty in the file (a token "reset" by clearing
/// it) is generated anew like a missing one, and named on the terminal
/// (never its value).
///
/// # Errors
/// When the file cannot be read or written, or a NATS password in it
/// holds a `"` or a `\` (the servers' configuration quotes it), named by
/// its key.
pub fn ensure(
    state_dir: &Path,
    tls_ca: Option<&Path>,
    admitted: &[ServiceRole],
) -> anyhow::Result<Credentials> {
    let path = state_dir.join("credentials");
    let mut from_file = std::collections::HashMap::new();
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines() {
            if let Some((k, v)) = line.split_once('=')
                && !k.starts_with('#')
            {
                from_file.insert(k.trim().to_owned(), v.trim().to_owned());
            }
        }
    }
    // A key whose value was emptied (a user "resetting" a token) is one to
    // make anew, as if its line were gone: kept empty, the monitor would
    // refuse it at every start. Said by its name once written, never its
    // value.
    let emptied = std::cell::RefCell::new(Vec::new());
    let pick = |var: &str, env: bool| {
        env.then(|| std::env::var(var).ok())
            .flatten()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| from_file.get(var).filter(|v| !v.is_empty()).cloned())
            .unwrap_or_else(|| {
                if from_file.contains_key(var) {
                    emptied.borrow_mut().push(var.to_owned());
                }
                generate()
            })
    };
    let nats_users: Vec<User> = showcase_roles()
        .into_iter()
        .chain(admitted.iter().cloned().map(Role::Service))
        .map(|role: Role| {
            let name = role.user_name();
            User {
                password: pick(&password_var(&name), false),
                name,
                role,
            }
        })
        .collect();
    let creds = Credentials {
        admin: pick("AEGIS_ADMIN_TOKEN", true),
        viewer: pick("AEGIS_VIEWER_TOKEN", true),
        nats_system_password: pick("AEGIS_NATS_SYSTEM_PASSWORD", false),
        nats_users,
        session_secret: pick("AEGIS_SESSION_SECRET", true),
        // A state directory from before route authentication has none:
        // it is generated like any missing value.
        route_password: pick(ROUTE_PASSWORD_VAR, false),
    };
    // The NATS passwords go into the servers' configuration as quoted
    // strings: one the file's owner set with a quote or a backslash would
    // be read as another password, or break the file. Refused before
    // anything is written, by its name only.
    let passwords = [
        (
            "AEGIS_NATS_SYSTEM_PASSWORD".to_owned(),
            &creds.nats_system_password,
        ),
        (ROUTE_PASSWORD_VAR.to_owned(), &creds.route_password),
    ]
    .into_iter()
    .chain(
        creds
            .nats_users
            .iter()
            .map(|u| (password_var(&u.name), &u.password)),
    );
    for (var, password) in passwords {
        if password.contains(['"', '\\']) {
            anyhow::bail!(
                "{var} in {} holds a `\"` or a `\\`, which the NATS servers' configuration \
                 cannot take as written; set a password without them there, or remove the line \
                 (`aegis up` then generates one)",
                path.display()
            );
        }
    }
    let mut users = String::new();
    for user in &creds.nats_users {
        users.push_str(&format!("{}={}\n", password_var(&user.name), user.password));
    }
    let operator_inbox = inbox_prefix(OPERATOR_USER);
    if let Some(ca) = tls_ca {
        users.push_str(&format!(
            "# NATS requires TLS: the CA that signed the servers' certificate\nAEGIS_NATS_TLS_CA={}\n",
            ca.display()
        ));
    }
    let text = format!(
        "# Aegis showcase secrets. Monitor tokens (Authorization: Bearer <token>):\n\
         AEGIS_ADMIN_TOKEN={}\nAEGIS_VIEWER_TOKEN={}\n\
         # NATS: the system account's user `sys` (server events)\n\
         AEGIS_NATS_SYSTEM_USER=sys\nAEGIS_NATS_SYSTEM_PASSWORD={}\n\
         # NATS: the application account's users, one per role; the operator's\n\
         # (aegis call/status/chaos) is AEGIS_NATS_USER / AEGIS_NATS_PASSWORD\n\
         AEGIS_NATS_USER={OPERATOR_USER}\nAEGIS_NATS_INBOX_PREFIX={operator_inbox}\n{users}\
         # Signs the UI's session cookies\n\
         AEGIS_SESSION_SECRET={}\n\
         # NATS: the cluster routes' password (user `{ROUTE_USER}`); a server\n\
         # without it cannot join the showcase's cluster\n\
         {ROUTE_PASSWORD_VAR}={}\n",
        creds.admin,
        creds.viewer,
        creds.nats_system_password,
        creds.session_secret,
        creds.route_password
    );
    super::write_anew(&path, &text, 0o600)?;
    for var in emptied.into_inner() {
        super::say(&format!(
            "  … {var} was empty in {}: generated a new one there",
            path.display()
        ));
    }
    Ok(creds)
}

impl Credentials {
    /// The password of the application account's user `name`.
    pub fn nats_password(&self, name: &str) -> Option<&str> {
        self.nats_users
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.password.as_str())
    }

    /// The environment that makes a child connect as `name` (with its
    /// own reply-inbox prefix, the only inboxes it may read).
    pub fn nats_env(&self, name: &str) -> Vec<(String, String)> {
        self.nats_password(name)
            .map(|password| {
                vec![
                    ("AEGIS_NATS_USER".to_owned(), name.to_owned()),
                    ("AEGIS_NATS_PASSWORD".to_owned(), password.to_owned()),
                    ("AEGIS_NATS_INBOX_PREFIX".to_owned(), inbox_prefix(name)),
                ]
            })
            .unwrap_or_default()
    }
}

/// The variable a user's password is kept under: `AEGIS_NATS_PASSWORD` for
/// the operator, `AEGIS_NATS_PASSWORD_<USER>` for the others.
pub fn password_var(user: &str) -> String {
    if user == OPERATOR_USER {
        "AEGIS_NATS_PASSWORD".to_owned()
    } else {
        format!(
            "AEGIS_NATS_PASSWORD_{}",
            user.to_ascii_uppercase().replace('-', "_")
        )
    }
}

/// The variables of the environment `aegis up` was started with (`vars`)
/// that a child of it must not inherit: what the credentials file holds
/// (a shell that did `set -a; . .aegis/credentials` has them all), so that
/// each child gets only the credentials `aegis up` hands it.
///
/// - Always: the other users' passwords (`AEGIS_NATS_PASSWORD_<USER>`),
///   the routes' password and the monitor's tokens and session key (the
///   monitor is given its own).
/// - The system account's user and password: for every child but the
///   monitor; for the monitor too on the showcase's own servers
///   (`own_nats`), where it is given them.
/// - The operator's user, password and inbox prefix (`AEGIS_NATS_USER`,
///   `AEGIS_NATS_PASSWORD`, `AEGIS_NATS_INBOX_PREFIX`): on the showcase's
///   own servers, where each child is given its own. On an external NATS
///   (`aegis up --nats-url`) they are the credentials the children are
///   meant to connect with, and are kept.
pub fn not_inherited(
    vars: impl IntoIterator<Item = String>,
    own_nats: bool,
    monitor: bool,
) -> Vec<String> {
    vars.into_iter()
        .filter(|var| {
            let system = var == "AEGIS_NATS_SYSTEM_USER" || var == "AEGIS_NATS_SYSTEM_PASSWORD";
            let operator = var == "AEGIS_NATS_USER"
                || var == "AEGIS_NATS_PASSWORD"
                || var == "AEGIS_NATS_INBOX_PREFIX";
            var.starts_with("AEGIS_NATS_PASSWORD_")
                || var == ROUTE_PASSWORD_VAR
                || var == "AEGIS_ADMIN_TOKEN"
                || var == "AEGIS_VIEWER_TOKEN"
                || var == "AEGIS_SESSION_SECRET"
                || (system && (own_nats || !monitor))
                || (operator && own_nats)
        })
        .collect()
}

/// Where the operator's tools look for the credentials file when none is
/// named: `aegis up`'s default state directory, from the directory it was
/// started in.
pub const DEFAULT_PATH: &str = ".aegis/credentials";

/// Reads the operator's user and password from a credentials file written
/// by `aegis up` (`None` when the file has none).
///
/// # Errors
/// When the file cannot be read.
pub fn read_operator(path: &Path) -> anyhow::Result<Option<(String, String)>> {
    read_user(path, "AEGIS_NATS_USER", "AEGIS_NATS_PASSWORD")
}

/// Reads the NATS system account's user and password from a credentials
/// file written by `aegis up` (`AEGIS_NATS_SYSTEM_USER` /
/// `AEGIS_NATS_SYSTEM_PASSWORD`; `None` when the file has none): with them
/// `aegis status` sees a crashed instance's connection close, as the
/// monitor `aegis up` starts does.
///
/// # Errors
/// When the file cannot be read.
pub fn read_system(path: &Path) -> anyhow::Result<Option<(String, String)>> {
    read_user(path, "AEGIS_NATS_SYSTEM_USER", "AEGIS_NATS_SYSTEM_PASSWORD")
}

/// The CA (`AEGIS_NATS_TLS_CA`) a credentials file names, when `aegis up`
/// runs with `--tls`.
///
/// # Errors
/// When the file cannot be read.
pub fn read_tls_ca(path: &Path) -> anyhow::Result<Option<std::path::PathBuf>> {
    Ok(read_vars(path)?
        .remove("AEGIS_NATS_TLS_CA")
        .map(std::path::PathBuf::from))
}

/// The user and password a credentials file names under `user_var` and
/// `password_var`, when it names both.
fn read_user(
    path: &Path,
    user_var: &str,
    password_var: &str,
) -> anyhow::Result<Option<(String, String)>> {
    let mut vars = read_vars(path)?;
    match (vars.remove(user_var), vars.remove(password_var)) {
        (Some(user), Some(password)) => Ok(Some((user, password))),
        (None, None) => Ok(None),
        (Some(_), None) => anyhow::bail!(
            "the credentials file {} names {user_var} but no {password_var}",
            path.display()
        ),
        (None, Some(_)) => anyhow::bail!(
            "the credentials file {} names {password_var} but no {user_var}",
            path.display()
        ),
    }
}

/// The `NAME=value` lines of a credentials file (blank lines and `#`
/// comments skipped). Any other line is refused by its number, never
/// shown: it may hold a secret.
fn read_vars(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the credentials file {}", path.display()))?;
    let mut vars = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            anyhow::bail!(
                "{} is not a credentials file of `aegis up`: its line {} is not NAME=value \
                 (the file `aegis up` writes to <state-dir>/credentials holds such lines, \
                 AEGIS_NATS_USER and AEGIS_NATS_PASSWORD among them)",
                path.display(),
                number + 1
            );
        };
        vars.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    Ok(vars)
}

fn generate() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file in the state directory that names the running showcase's NATS
/// client URLs (comma-separated), so that `aegis call`, `status`, `traffic`
/// and `chaos` reach every node without `--nats-url`, and so still connect
/// while the first node is down. Not a secret; removed when `aegis up`
/// stops.
pub const NATS_URL_FILE: &str = "nats-url";

/// Writes [`NATS_URL_FILE`] in `state_dir`, readable by its owner only
/// (the URL of an external NATS may carry a password).
///
/// # Errors
/// When the file cannot be written.
pub fn write_nats_url(state_dir: &Path, url: &str) -> anyhow::Result<()> {
    // A file an older version left readable by others is made anew.
    super::write_anew(&state_dir.join(NATS_URL_FILE), &format!("{url}\n"), 0o600)
}

/// Removes [`NATS_URL_FILE`] from `state_dir` (nothing to do when absent).
pub fn remove_nats_url(state_dir: &Path) {
    let _ = std::fs::remove_file(state_dir.join(NATS_URL_FILE));
}

/// The URLs a running showcase wrote in `state_dir`, if any.
pub fn read_nats_url(state_dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(state_dir.join(NATS_URL_FILE)).ok()?;
    let url = text.trim();
    (!url.is_empty()).then(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_inherits_no_credential_but_an_external_nats_user() {
        let shell: Vec<String> = [
            "HOME",
            "PATH",
            "AEGIS_LOG",
            "AEGIS_NATS_URL",
            "AEGIS_ADMIN_TOKEN",
            "AEGIS_VIEWER_TOKEN",
            "AEGIS_SESSION_SECRET",
            "AEGIS_NATS_ROUTE_PASSWORD",
            "AEGIS_NATS_SYSTEM_USER",
            "AEGIS_NATS_SYSTEM_PASSWORD",
            "AEGIS_NATS_USER",
            "AEGIS_NATS_PASSWORD",
            "AEGIS_NATS_INBOX_PREFIX",
            "AEGIS_NATS_PASSWORD_SVC_ORDER_SERVICE",
            "AEGIS_NATS_PASSWORD_SVC_FX_SERVICE",
            "AEGIS_NATS_PASSWORD_MONITOR",
        ]
        .map(str::to_owned)
        .to_vec();
        let secrets = &shell[4..];
        // The showcase's own servers: every credential goes, for every child.
        for monitor in [false, true] {
            assert_eq!(not_inherited(shell.clone(), true, monitor), secrets);
        }
        // An external NATS: the operator's user is what the children connect
        // as; the monitor keeps the system user it may be meant to use.
        let kept = |monitor| {
            let gone = not_inherited(shell.clone(), false, monitor);
            shell[4..]
                .iter()
                .filter(|v| !gone.contains(v))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(
            kept(false),
            [
                "AEGIS_NATS_USER",
                "AEGIS_NATS_PASSWORD",
                "AEGIS_NATS_INBOX_PREFIX"
            ]
        );
        assert_eq!(
            kept(true),
            [
                "AEGIS_NATS_SYSTEM_USER",
                "AEGIS_NATS_SYSTEM_PASSWORD",
                "AEGIS_NATS_USER",
                "AEGIS_NATS_PASSWORD",
                "AEGIS_NATS_INBOX_PREFIX"
            ]
        );
    }

    #[test]
    fn the_file_written_names_the_operator_and_the_system_user() {
        let dir = tempfile::tempdir().unwrap();
        let creds = ensure(dir.path(), None, &[]).unwrap();
        let file = dir.path().join("credentials");
        let (user, password) = read_operator(&file).unwrap().unwrap();
        assert_eq!(user, OPERATOR_USER);
        assert_eq!(creds.nats_password(OPERATOR_USER), Some(password.as_str()));
        assert_eq!(
            read_system(&file).unwrap(),
            Some(("sys".to_owned(), creds.nats_system_password.clone()))
        );
        assert_eq!(read_tls_ca(&file).unwrap(), None);
        std::fs::write(&file, "AEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD=x\n").unwrap();
        assert_eq!(read_system(&file).unwrap(), None, "no system user named");
    }

    /// A hand-edited file with a line that is no `NAME=value` is refused
    /// naming the line, never showing it (it may hold a secret); a user
    /// named without a password is said too, not taken for no user.
    #[test]
    fn a_line_that_is_no_setting_is_refused_by_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("credentials");
        std::fs::write(
            &file,
            "# aegis up\n\nAEGIS_NATS_USER=operator\nAEGIS_NATS_PASSWORD s3cret\n",
        )
        .unwrap();
        let err = format!("{:#}", read_operator(&file).unwrap_err());
        assert!(
            err.contains("line 4") && err.contains("NAME=value"),
            "{err}"
        );
        assert!(!err.contains("s3cret"), "{err}");

        std::fs::write(&file, "AEGIS_NATS_USER=operator\n").unwrap();
        let err = format!("{:#}", read_operator(&file).unwrap_err());
        assert!(err.contains("AEGIS_NATS_PASSWORD"), "{err}");
    }

    /// A state directory from before route authentication has no route
    /// password: one is generated and kept, and kept again on the next
    /// start, the other values unchanged.
    #[test]
    fn an_older_file_without_the_route_password_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure(dir.path(), None, &[]).unwrap();
        let file = dir.path().join("credentials");
        let older: String = std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(ROUTE_PASSWORD_VAR))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&file, older).unwrap();
        let second = ensure(dir.path(), None, &[]).unwrap();
        assert_eq!(second.route_password.len(), 48);
        assert_ne!(second.route_password, first.route_password);
        assert_eq!(second.admin, first.admin);
        assert_eq!(
            second.nats_password(OPERATOR_USER),
            first.nats_password(OPERATOR_USER)
        );
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains(&format!("{ROUTE_PASSWORD_VAR}={}\n", second.route_password)));
        let third = ensure(dir.path(), None, &[]).unwrap();
        assert_eq!(third.route_password, second.route_password);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{third:?}").contains(&third.route_password));
    }

    #[test]
    fn the_showcase_urls_are_written_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_nats_url(dir.path()), None);
        let urls = "nats://127.0.0.1:4222,nats://127.0.0.1:4223";
        write_nats_url(dir.path(), urls).unwrap();
        assert_eq!(read_nats_url(dir.path()).as_deref(), Some(urls));
        remove_nats_url(dir.path());
        assert_eq!(read_nats_url(dir.path()), None);
        std::fs::write(dir.path().join(NATS_URL_FILE), "\n").unwrap();
        assert_eq!(read_nats_url(dir.path()), None, "an empty file names none");
    }
}
