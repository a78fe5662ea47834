//! The monitor's bearer tokens for the showcase: taken from
//! `AEGIS_ADMIN_TOKEN` / `AEGIS_VIEWER_TOKEN` when set, else generated once
//! and kept in `.aegis/credentials` (mode 0600) so they survive restarts.
//! The key that signs the UI's session cookies (`AEGIS_SESSION_SECRET`) is
//! kept there too, so a monitor restarted by the supervisor does not sign
//! every browser out.

use std::{io::Write, os::unix::fs::OpenOptionsExt, path::Path};

use anyhow::Context;
use rand::Rng;

/// The two tokens.
#[derive(Clone)]
pub struct Credentials {
    /// Reads and writes.
    pub admin: String,
    /// Reads only.
    pub viewer: String,
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
    let mut from_file = (None, None, None);
    if let Ok(text) = std::fs::read_to_string(&path) {
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("AEGIS_ADMIN_TOKEN=") {
                from_file.0 = Some(v.trim().to_owned());
            }
            if let Some(v) = line.strip_prefix("AEGIS_VIEWER_TOKEN=") {
                from_file.1 = Some(v.trim().to_owned());
            }
            if let Some(v) = line.strip_prefix("AEGIS_SESSION_SECRET=") {
                from_file.2 = Some(v.trim().to_owned());
            }
        }
    }
    let pick = |var: &str, file: Option<String>| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .or(file)
            .unwrap_or_else(generate)
    };
    let creds = Credentials {
        admin: pick("AEGIS_ADMIN_TOKEN", from_file.0),
        viewer: pick("AEGIS_VIEWER_TOKEN", from_file.1),
        session_secret: pick("AEGIS_SESSION_SECRET", from_file.2),
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
        "# Aegis showcase monitor tokens (Authorization: Bearer <token>)\nAEGIS_ADMIN_TOKEN={}\nAEGIS_VIEWER_TOKEN={}\n# Signs the UI's session cookies\nAEGIS_SESSION_SECRET={}",
        creds.admin, creds.viewer, creds.session_secret
    )?;
    Ok(creds)
}

fn generate() -> String {
    let bytes: [u8; 24] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
