//! The monitor's configuration: [`MonitorConfig`] (a plain struct with
//! defaults, what the library takes) and [`ApiArgs`] (the `aegis api` flags,
//! each with an `AEGIS_*` environment fallback, turned into a
//! `MonitorConfig` once at start).
//!
//! Tokens are [`Secret`]s: they never appear in `Debug` output, logs or
//! `--help` (their environment values are hidden).

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use aegis_sdk::{AegisConfig, ConfigLoader, Secret};
use anyhow::Context;

/// Everything the monitor needs to run.
///
/// ```
/// use aegis_monitor::MonitorConfig;
/// use aegis_sdk::{AegisConfig, Secret};
///
/// let config = MonitorConfig {
///     nats: AegisConfig::with_servers("nats://127.0.0.1:4222"),
///     admin_token: Some(Secret::new("a-long-random-admin-token")),
///     ..Default::default()
/// };
/// assert_eq!(config.port, 8100);
/// ```
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Address to listen on (default `0.0.0.0`).
    pub bind: IpAddr,
    /// Port to listen on (default 8100).
    pub port: u16,
    /// NATS connection settings (servers, credentials, TLS, replicas).
    pub nats: AegisConfig,
    /// Token of the `admin` role (reads and writes); its audit name is `admin`.
    pub admin_token: Option<Secret>,
    /// Token of the `viewer` role (reads only); its audit name is `viewer`.
    pub viewer_token: Option<Secret>,
    /// A file of hashed tokens, one `role:name:sha256hex` per line (see
    /// [`crate::auth`]); may be combined with the two tokens above.
    pub token_file: Option<PathBuf>,
    /// Key that signs session cookies. Give every replica the same one so a
    /// session works on all of them; when unset each process picks a random
    /// key and sessions last until it restarts.
    pub session_secret: Option<Secret>,
    /// How long a session cookie stays valid.
    pub session_ttl: Duration,
    /// Mark session cookies `Secure` (set when the monitor is served over HTTPS).
    pub secure_cookies: bool,
    /// Allow starting without any token: every request is then treated as
    /// `admin`. For a development machine only; the monitor says so loudly.
    pub insecure_dev: bool,
    /// Directory of the UI's static export, served at `/` when set.
    pub ui_dir: Option<PathBuf>,
    /// Name of the environment shown by `/status` (e.g. `local`, `prod`).
    pub environment: String,
    /// Longest time a non-streaming request may take before a 504.
    pub request_timeout: Duration,
    /// How long an instance has to answer a live request (its configuration).
    pub control_timeout: Duration,
    /// Revisions kept per definition in `service_definitions` (the audit trail).
    pub definitions_history: i64,
    /// How long `AEGIS_METRICS` keeps snapshots (when the monitor creates it).
    pub metrics_retention: Duration,
    /// How long `AEGIS_LOG` keeps records (when the monitor creates it).
    pub log_retention: Duration,
    /// Credentials of the NATS system account, for the server's connection
    /// advisories: with them a crashed instance shows as down within
    /// milliseconds; without, when its registry record expires (its TTL).
    pub system_account: Option<SystemAccount>,
}

/// How to reach the NATS system account (same servers and TLS as
/// [`MonitorConfig::nats`], other credentials). Set `user` and `password`,
/// or `creds_file` for a JWT-based setup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SystemAccount {
    /// User name in the system account.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// A `.creds` file of a system account user.
    pub creds_file: Option<PathBuf>,
}

impl SystemAccount {
    /// The connection settings: `base`'s servers and TLS, these credentials,
    /// no JetStream (the system account has none), one client.
    pub fn connection_config(&self, base: &AegisConfig) -> AegisConfig {
        let mut config = base.clone();
        config.nats.token = None;
        config.nats.nkey_seed = None;
        config.nats.user = self.user.clone();
        config.nats.password = self.password.clone();
        config.nats.creds_file = self.creds_file.clone();
        config.nats.require_jetstream = false;
        config.nats.pool_size = 1;
        config
    }
}

/// Flags naming the NATS system account's credentials (`aegis api`,
/// `aegis status`); each also reads an `AEGIS_NATS_SYSTEM_*` variable.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SystemArgs {
    /// A user of the NATS system account; with it, crashed instances show
    /// as down at once (from the server's disconnect advisories).
    #[arg(long = "nats-system-user", env = "AEGIS_NATS_SYSTEM_USER")]
    pub user: Option<String>,
    /// Its password.
    #[arg(long = "nats-system-password", env = "AEGIS_NATS_SYSTEM_PASSWORD", hide_env_values = true, value_parser = secret)]
    pub password: Option<Secret>,
    /// A `.creds` file of a system account user (instead of user/password).
    #[arg(long = "nats-system-creds", env = "AEGIS_NATS_SYSTEM_CREDS")]
    pub creds: Option<PathBuf>,
}

impl SystemArgs {
    /// The system account these flags name, if any.
    pub fn account(&self) -> Option<SystemAccount> {
        (self.user.is_some() || self.creds.is_some()).then(|| SystemAccount {
            user: self.user.clone(),
            password: self.password.clone(),
            creds_file: self.creds.clone(),
        })
    }
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8100,
            nats: AegisConfig::default(),
            admin_token: None,
            viewer_token: None,
            token_file: None,
            session_secret: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            insecure_dev: false,
            ui_dir: None,
            environment: "local".to_owned(),
            request_timeout: Duration::from_secs(15),
            control_timeout: Duration::from_secs(2),
            definitions_history: 64,
            metrics_retention: Duration::from_secs(3600),
            log_retention: Duration::from_secs(24 * 3600),
            system_account: None,
        }
    }
}

impl MonitorConfig {
    /// The socket address to listen on.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }

    /// Whether any token source is configured.
    pub fn has_tokens(&self) -> bool {
        self.admin_token.is_some() || self.viewer_token.is_some() || self.token_file.is_some()
    }
}

/// Flags of `aegis api`; every one also reads an `AEGIS_*` variable.
///
/// Prefer the environment (or the token file) over flags for tokens: flags
/// are visible to other users in the process list.
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArgs {
    /// Port to listen on.
    #[arg(long, env = "AEGIS_API_PORT", default_value_t = 8100)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "AEGIS_API_BIND", default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "AEGIS_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// A TOML configuration file for the NATS connection (credentials, TLS,
    /// replicas; see the SDK's `config` docs). `AEGIS_NATS_*` variables apply too.
    #[arg(long, env = "AEGIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// A NATS `.creds` file.
    #[arg(long = "nats-creds", env = "AEGIS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// Token of the admin role (reads and writes).
    #[arg(long, env = "AEGIS_ADMIN_TOKEN", hide_env_values = true, value_parser = secret)]
    pub admin_token: Option<Secret>,
    /// Token of the viewer role (reads only).
    #[arg(long, env = "AEGIS_VIEWER_TOKEN", hide_env_values = true, value_parser = secret)]
    pub viewer_token: Option<Secret>,
    /// File of hashed tokens, one `role:name:sha256hex` per line.
    #[arg(long, env = "AEGIS_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Key signing session cookies; give all replicas the same one.
    #[arg(long, env = "AEGIS_SESSION_SECRET", hide_env_values = true, value_parser = secret)]
    pub session_secret: Option<Secret>,
    /// Mark session cookies Secure (when served over HTTPS).
    #[arg(long, env = "AEGIS_SECURE_COOKIES")]
    pub secure_cookies: bool,
    /// Directory of the UI's static files, served at `/`.
    #[arg(long, env = "AEGIS_UI_DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Environment name shown by `/status`.
    #[arg(long, env = "AEGIS_ENVIRONMENT", default_value = "local")]
    pub environment: String,
    /// Longest time a request may take (e.g. `15s`).
    #[arg(long, env = "AEGIS_API_REQUEST_TIMEOUT", default_value = "15s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,
    /// Run WITHOUT authentication when no token is configured (development only).
    #[arg(long)]
    pub insecure_dev: bool,
    /// The NATS system account (instant crash detection).
    #[command(flatten)]
    pub system: SystemArgs,
}

fn secret(s: &str) -> Result<Secret, Infallible> {
    Ok(Secret::new(s))
}

impl ApiArgs {
    /// The configuration these flags describe; reads the NATS file and the
    /// `AEGIS_NATS_*` variables (precedence: file < environment < flags).
    ///
    /// # Errors
    /// An unreadable or invalid NATS configuration.
    pub fn into_config(self) -> anyhow::Result<MonitorConfig> {
        let url = self.nats_url.clone();
        let creds = self.nats_creds.clone();
        let nats = ConfigLoader::new()
            .file_opt(self.config.clone())
            .env()
            .set(move |c| {
                c.nats.servers = url
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                if creds.is_some() {
                    c.nats.creds_file = creds;
                }
            })
            .load()
            .context("loading the NATS configuration")?;
        Ok(MonitorConfig {
            bind: self.bind,
            port: self.port,
            nats,
            admin_token: self.admin_token,
            viewer_token: self.viewer_token,
            token_file: self.token_file,
            session_secret: self.session_secret,
            secure_cookies: self.secure_cookies,
            insecure_dev: self.insecure_dev,
            ui_dir: self.ui_dir,
            environment: self.environment,
            request_timeout: self.request_timeout,
            system_account: self.system.account(),
            ..MonitorConfig::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        api: ApiArgs,
    }

    #[test]
    fn flags_parse_and_secrets_stay_hidden() {
        let cli = Cli::try_parse_from([
            "aegis",
            "--port",
            "9000",
            "--admin-token",
            "hunter2-admin",
            "--insecure-dev",
            "--request-timeout",
            "3s",
        ])
        .unwrap();
        assert_eq!(cli.api.port, 9000);
        assert!(cli.api.insecure_dev);
        assert_eq!(cli.api.request_timeout, Duration::from_secs(3));
        assert_eq!(
            cli.api.admin_token.as_ref().unwrap().expose(),
            "hunter2-admin"
        );
        assert!(!format!("{:?}", cli.api).contains("hunter2"));
    }

    #[test]
    fn defaults() {
        let c = MonitorConfig::default();
        assert_eq!(c.listen_addr().port(), 8100);
        assert!(!c.has_tokens());
        assert!(!c.insecure_dev);
    }
}
