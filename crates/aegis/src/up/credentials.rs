//! The showcase's secrets: the monitor's bearer tokens (taken from
//! `AEGIS_ADMIN_TOKEN` / `AEGIS_VIEWER_TOKEN` when set) and the NATS
//! passwords of the application and system accounts, generated once and
//! kept in `.aegis/credentials` (mode 0600) so they survive restarts. The
//! key that signs the UI's session cookies (`AEGIS_SESSION_SECRET`) is kept
//! there too, so a monitor restarted by the supervisor does not sign every
//! browser out.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::Context;
use rand::Rng;

/// The showcase's secrets.
#[derive(Clone)]
pub struct Credentials {
    /// Monitor token: reads and writes.
    pub admin: String,
    /// Monitor token: reads only.
    pub viewer: String,
    /// Password of the NATS system account's user `sys`.
    pub nats_system_password: String,
    /// Password of the application account's user `aegis`.
    pub nats_app_password: String,
    /// Signs the UI's session cookies.
    pub session_secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Loads or creates the credentials file; environment variables win.
///
/// # Errors
/// When the file cannot be read or written.
pub fn ensure(state_dir: &Path) -> anyhow::Result<Credentials> {
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
    let pick = |var: &str, env: bool| {
        env.then(|| std::env::var(var).ok())
            .flatten()
            .filter(|v| !v.trim().is_empty())
            .or_else(|| from_file.get(var).cloned())
            .unwrap_or_else(generate)
    };
    let creds = Credentials {
        admin: pick("AEGIS_ADMIN_TOKEN", true),
        viewer: pick("AEGIS_VIEWER_TOKEN", true),
        nats_system_password: pick("AEGIS_NATS_SYSTEM_PASSWORD", false),
        nats_app_password: pick("AEGIS_NATS_APP_PASSWORD", false),
        session_secret: pick("AEGIS_SESSION_SECRET", true),
    };
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    writeln!(
        file,
        "# Aegis showcase secrets. Monitor tokens (Authorization: Bearer <token>):\n\
         AEGIS_ADMIN_TOKEN={}\nAEGIS_VIEWER_TOKEN={}\n\
         # NATS: the system account's user `sys` (server events), the application account's user `aegis`\n\
         AEGIS_NATS_SYSTEM_USER=sys\nAEGIS_NATS_SYSTEM_PASSWORD={}\nAEGIS_NATS_APP_PASSWORD={}\n\
         # Signs the UI's session cookies\n\
         AEGIS_SESSION_SECRET={}",
        creds.admin,
        creds.viewer,
        creds.nats_system_password,
        creds.nats_app_password,
        creds.session_secret
    )?;
    Ok(creds)
}

fn generate() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
