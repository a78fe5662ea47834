//! The monitor's configuration: [`MonitorConfig`] (a plain struct with
//! defaults, what the library takes) and [`ApiArgs`] (the `aegis api` flags,
//! each with an `AEGIS_*` environment fallback, turned into a
//! `MonitorConfig` once at start). [`NatsArgs`], the NATS connection flags,
//! is shared with every other `aegis` command that connects, so they all
//! read NATS settings one way.
//!
//! Tokens are [`Secret`]s: they never appear in `Debug` output, logs or
//! `--help` (their environment values are hidden).

use std::{
    convert::Infallible,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use aegis_sdk::{AegisConfig, ConfigError, ConfigLoader, Secret};
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
    /// Address to listen on (default `127.0.0.1`: only this machine; give
    /// `0.0.0.0` or an interface's address to open it up, behind TLS).
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
    /// When session cookies are marked `Secure` (default: when the request
    /// came over HTTPS, as its proxy says).
    pub secure_cookies: CookieSecurity,
    /// Reverse proxies whose `X-Forwarded-For` names the client (for the
    /// sign-in rate limit), each an address or a CIDR range (e.g. the
    /// ingress controller's pod network); from any other peer the header
    /// is ignored, so a client cannot pick its own identity. They are
    /// also exempt from [`Self::max_connections_per_client`].
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Sign-in attempts (`POST /api/session`) one client may make per
    /// minute; the next gets 429 with `Retry-After`.
    pub sign_in_per_minute: u32,
    /// Most HTTP connections open at once (SSE streams included).
    pub max_connections: usize,
    /// Most of them one client may hold (its address; an IPv6 client's
    /// /64), so no client can take every connection; a connection past
    /// its client's share is answered 429 and closed. Trusted proxies
    /// ([`Self::trusted_proxies`]) are held to `max_connections` only:
    /// they speak for many clients.
    pub max_connections_per_client: usize,
    /// Longest a client may take to send a request's headers (and longest
    /// an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// Longest a live stream (`/api/stream`) may have an event it cannot
    /// write, its client reading nothing, before its connection is closed
    /// (default 60 s, four keep-alives; `--stream-stall-timeout`); zero
    /// never closes it.
    pub stream_stall_timeout: Duration,
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
    /// The oldest snapshot still shown as an instance's latest. How long
    /// `AEGIS_METRICS` and `AEGIS_LOG` keep messages, and how big they may
    /// grow, are `nats.streams.metrics` and `nats.streams.log`.
    pub metrics_retention: Duration,
    /// Credentials of the NATS system account, for the server's connection
    /// advisories: with them a crashed instance shows as down within
    /// milliseconds; without, when its registry record expires (its TTL).
    pub system_account: Option<SystemAccount>,
    /// How long [`crate::serve`] keeps trying to start while NATS,
    /// JetStream or the registry is not ready yet (a cluster still starting
    /// or electing its leaders); zero fails at once.
    pub startup_timeout: Duration,
}

/// When the session cookie carries the `Secure` attribute (the browser
/// then sends it over HTTPS only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CookieSecurity {
    /// `Secure` when the sign-in request came over HTTPS: the monitor
    /// speaks plain HTTP, so this is what the TLS-terminating proxy says in
    /// `X-Forwarded-Proto: https` (or `Forwarded: proto=https`). Believing
    /// the header from anyone is safe: it only decides the attribute of the
    /// cookie sent back to the same client.
    #[default]
    Auto,
    /// Always `Secure` (the UI is only ever reached over HTTPS).
    #[value(alias = "true")]
    Always,
    /// Never `Secure` (plain HTTP on a trusted network).
    #[value(alias = "false")]
    Never,
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

/// The parser of every duration flag (`90s`, `15m`, `2h`): a duration
/// too long for the clock (`500000000000years`) is refused here, naming
/// the flag, rather than panicking once added to the time now. The bound
/// is the SDK's for every period an option may name,
/// [`aegis_sdk::clock::LONGEST_PERIOD`] (thirty days). A flag with a
/// lower bound of its own parses with [`duration_flag_any_length`]
/// instead, so a value of any size is told that bound.
///
/// # Errors
/// Not a duration, or longer than thirty days.
///
/// ```
/// use std::time::Duration;
/// use aegis_monitor::config::duration_flag;
///
/// assert_eq!(duration_flag("90s"), Ok(Duration::from_secs(90)));
/// assert!(duration_flag("500000000000years").is_err());
/// ```
pub fn duration_flag(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| e.to_string())?;
    if d > aegis_sdk::clock::LONGEST_PERIOD {
        return Err("must be at most 30 days".to_owned());
    }
    Ok(d)
}

/// The parser of a duration flag whose own bound, below the thirty days
/// of [`duration_flag`], its caller checks next (e.g. `aegis chaos
/// unhealthy --for`, at most one day): a value of any length parses, one
/// too long even for a [`Duration`] as [`Duration::MAX`], so the caller's
/// "must be at most ..." answers `31d` and `1000000000y` alike. Through
/// [`duration_flag`] those were told "must be at most 30 days" first, and
/// then `30d` the flag's own bound.
///
/// Only for a caller that bounds the value itself: unbounded, a duration
/// may be too long to add to the time now.
///
/// # Errors
/// Not a duration.
///
/// ```
/// use std::time::Duration;
/// use aegis_monitor::config::duration_flag_any_length;
///
/// assert_eq!(duration_flag_any_length("31d"), Ok(Duration::from_secs(31 * 86_400)));
/// assert_eq!(duration_flag_any_length("99999999999999999999y"), Ok(Duration::MAX));
/// assert!(duration_flag_any_length("soon").is_err());
/// ```
pub fn duration_flag_any_length(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s.trim()) {
        Err(humantime::DurationError::NumberOverflow) => Ok(Duration::MAX),
        parsed => parsed.map_err(|e| e.to_string()),
    }
}

/// [`duration_flag`] for a setting that zero would break (a timeout every
/// request would hit at once): zero is refused too.
///
/// # Errors
/// As [`duration_flag`], or zero.
///
/// ```
/// use aegis_monitor::config::positive_duration_flag;
///
/// assert!(positive_duration_flag("15s").is_ok());
/// assert_eq!(positive_duration_flag("0s"), Err("must be greater than zero".to_owned()));
/// ```
pub fn positive_duration_flag(s: &str) -> Result<Duration, String> {
    match duration_flag(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
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
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 8100,
            nats: AegisConfig::default(),
            admin_token: None,
            viewer_token: None,
            token_file: None,
            session_secret: None,
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: CookieSecurity::Auto,
            trusted_proxies: Vec::new(),
            sign_in_per_minute: 10,
            max_connections: 1024,
            max_connections_per_client: 256,
            header_read_timeout: Duration::from_secs(10),
            stream_stall_timeout: Duration::from_secs(60),
            insecure_dev: false,
            ui_dir: None,
            environment: "local".to_owned(),
            request_timeout: Duration::from_secs(15),
            control_timeout: Duration::from_secs(2),
            definitions_history: 64,
            metrics_retention: Duration::from_secs(3600),
            system_account: None,
            startup_timeout: Duration::from_secs(60),
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

    /// Checks the settings that would break the monitor once started
    /// (the authentication setup is checked apart): what [`crate::serve`]
    /// and [`crate::AppState::start`] do before any I/O.
    ///
    /// ```
    /// use std::time::Duration;
    /// use aegis_monitor::MonitorConfig;
    ///
    /// assert!(MonitorConfig::default().check().is_ok());
    /// let zero = MonitorConfig { request_timeout: Duration::ZERO, ..Default::default() };
    /// assert!(zero.check().unwrap_err().to_string().contains("AEGIS_API_REQUEST_TIMEOUT"));
    /// ```
    ///
    /// # Errors
    /// [`SettingError`]: a zero request or header read timeout, a UI
    /// directory that is not a built export.
    pub fn check(&self) -> Result<(), SettingError> {
        if self.request_timeout.is_zero() {
            return Err(SettingError::ZeroRequestTimeout);
        }
        if self.header_read_timeout.is_zero() {
            return Err(SettingError::ZeroHeaderReadTimeout);
        }
        if let Some(dir) = &self.ui_dir {
            let why = if !dir.exists() {
                Some("no such directory")
            } else if !dir.is_dir() {
                Some("not a directory")
            } else if !dir.join("index.html").is_file() {
                Some("no index.html there, so `/` would answer 404")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(SettingError::UiDir {
                    dir: dir.clone(),
                    why,
                });
            }
        }
        Ok(())
    }
}

/// A setting [`MonitorConfig::check`] refuses: the monitor would start and
/// then fail every request (or serve no UI).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingError {
    /// `request_timeout` is zero: every request would be a 504.
    #[error(
        "--request-timeout (AEGIS_API_REQUEST_TIMEOUT) is 0: every request would time out at \
         once (504); give a positive duration, such as the default 15s"
    )]
    ZeroRequestTimeout,
    /// `header_read_timeout` is zero: every connection would be cut off.
    #[error(
        "--header-read-timeout (AEGIS_API_HEADER_READ_TIMEOUT) is 0: every connection would be \
         cut off before its request; give a positive duration, such as the default 10s"
    )]
    ZeroHeaderReadTimeout,
    /// `ui_dir` is not a directory holding a built export.
    #[error(
        "--ui-dir (AEGIS_UI_DIR) {}: {why}; give the directory of the UI's built export (`make \
         ui` builds ui/out), or leave it unset to serve the API only",
        dir.display()
    )]
    UiDir {
        /// The directory as given.
        dir: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// The NATS server the commands reach when told no other (`--nats-url`):
/// a local one on the standard port, as `aegis up` starts by default.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";

/// The NATS connection flags of every `aegis` command that connects (`api`,
/// `service`, `call`, `status`, `chaos`, `init`), each with an `AEGIS_*`
/// environment fallback. One definition, so their names, defaults and
/// precedence cannot drift apart between commands.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "AEGIS_NATS_URL",
        default_value = DEFAULT_NATS_URL
    )]
    pub nats_url: String,
    /// A TOML configuration file for the NATS connection (credentials, TLS,
    /// replicas; see the SDK's `config` docs). `AEGIS_NATS_*` variables apply too.
    #[arg(long, env = "AEGIS_CONFIG")]
    pub config: Option<PathBuf>,
    /// A NATS `.creds` file.
    #[arg(long = "nats-creds", env = "AEGIS_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
}

impl NatsArgs {
    /// Flags naming only these servers: no file, no `.creds` file.
    pub fn with_servers(url: impl Into<String>) -> Self {
        Self {
            nats_url: url.into(),
            config: None,
            nats_creds: None,
        }
    }

    /// The connection settings these flags describe, with precedence file <
    /// `AEGIS_NATS_*` environment < flags < `adjust` (what the command
    /// itself must set, e.g. `aegis init`'s replicas).
    ///
    /// ```
    /// let args = aegis_monitor::NatsArgs::with_servers("nats://a:4222, nats://b:4222,");
    /// let config = args.load(|c| c.nats.pool_size = 1).unwrap();
    /// assert_eq!(config.nats.servers, ["nats://a:4222", "nats://b:4222"]);
    /// ```
    ///
    /// # Errors
    /// [`ConfigError`] for a missing or invalid file, a variable that does
    /// not parse, or settings that fail validation.
    pub fn load(
        &self,
        adjust: impl FnOnce(&mut AegisConfig) + Send + 'static,
    ) -> Result<AegisConfig, ConfigError> {
        let url = self.nats_url.clone();
        let creds = self.nats_creds.clone();
        ConfigLoader::new()
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
                adjust(c);
            })
            .load()
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
    /// Address to listen on. The default, 127.0.0.1, reaches this machine
    /// only; `0.0.0.0` opens it to the network (put TLS in front).
    #[arg(
        long,
        visible_alias = "listen",
        env = "AEGIS_API_BIND",
        default_value = "127.0.0.1"
    )]
    pub bind: IpAddr,
    /// The NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
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
    /// When session cookies are `Secure`: `auto` (when the proxy says the
    /// request came over HTTPS, `X-Forwarded-Proto: https`), `always`
    /// (also the bare flag), `never`.
    #[arg(
        long,
        env = "AEGIS_SECURE_COOKIES",
        value_enum,
        default_value_t = CookieSecurity::Auto,
        num_args = 0..=1,
        default_missing_value = "always"
    )]
    pub secure_cookies: CookieSecurity,
    /// A reverse proxy whose `X-Forwarded-For` is believed: an address
    /// (`10.0.0.5`) or a CIDR range (`10.0.0.0/8`, `fd00::/8`), e.g. the
    /// ingress controller's pod network, whose pods change address on
    /// every restart (repeat, or comma-separate); used to tell clients
    /// apart for the sign-in limit, and exempt from the per-client share of
    /// connections.
    #[arg(
        long = "trusted-proxy",
        env = "AEGIS_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<TrustedProxy>,
    /// Sign-in attempts one client may make per minute.
    #[arg(long, env = "AEGIS_SIGN_IN_PER_MINUTE", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub sign_in_per_minute: u32,
    /// Most HTTP connections open at once (SSE streams included).
    #[arg(long, env = "AEGIS_API_MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections: usize,
    /// Most connections one client address (an IPv6 client: its /64) may
    /// hold, so no client can take them all; past it, 429. Trusted proxies
    /// are exempt (they speak for many clients).
    #[arg(long, env = "AEGIS_API_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 256, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub max_connections_per_client: usize,
    /// Longest a client may take to send a request's headers (e.g. `10s`).
    #[arg(long, env = "AEGIS_API_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = positive_duration_flag)]
    pub header_read_timeout: Duration,
    /// Longest a live stream (`/api/stream`) may have an event it cannot
    /// write, its client reading nothing, before its connection is closed
    /// (e.g. `60s`; `0s` never closes it).
    #[arg(long, env = "AEGIS_API_STREAM_STALL_TIMEOUT", default_value = "60s", value_parser = duration_flag)]
    pub stream_stall_timeout: Duration,
    /// Directory of the UI's static files (a built export, with its
    /// index.html), served at `/`.
    #[arg(long, env = "AEGIS_UI_DIR")]
    pub ui_dir: Option<PathBuf>,
    /// Environment name shown by `/status`.
    #[arg(long, env = "AEGIS_ENVIRONMENT", default_value = "local")]
    pub environment: String,
    /// Longest time a request may take (e.g. `15s`).
    #[arg(long, env = "AEGIS_API_REQUEST_TIMEOUT", default_value = "15s", value_parser = positive_duration_flag)]
    pub request_timeout: Duration,
    /// Run WITHOUT authentication when no token is configured (development only).
    #[arg(long)]
    pub insecure_dev: bool,
    /// How long to keep trying to start while NATS, JetStream or the
    /// registry is not ready yet (e.g. `60s`; `0s` fails at once).
    #[arg(long, env = "AEGIS_STARTUP_TIMEOUT", default_value = "60s", value_parser = duration_flag)]
    pub startup_timeout: Duration,
    /// The NATS system account (instant crash detection).
    #[command(flatten)]
    pub system: SystemArgs,
}

/// A reverse proxy the monitor believes about who its client is: one
/// address (`10.0.0.5`, `fd00::5`) or a CIDR range of them (`10.0.0.0/8`,
/// `fd00::/8`). A range suits proxies whose addresses change, such as an
/// ingress controller's pods, which get a new one on every restart.
///
/// ```
/// use aegis_monitor::TrustedProxy;
///
/// let pods: TrustedProxy = "10.0.0.0/8".parse().unwrap();
/// assert!(pods.contains("10.1.2.3".parse().unwrap()));
/// assert!(!pods.contains("192.0.2.1".parse().unwrap()));
/// assert!("0.0.0.0/0".parse::<TrustedProxy>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TrustedProxy(ipnet::IpNet);

impl TrustedProxy {
    /// Whether `ip` is this proxy, or one in its range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl From<IpAddr> for TrustedProxy {
    fn from(ip: IpAddr) -> Self {
        Self(ipnet::IpNet::from(ip.to_canonical()))
    }
}

impl std::fmt::Display for TrustedProxy {
    /// An address as itself, a range as `address/prefix`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

/// Why an entry of `--trusted-proxy` (`AEGIS_TRUSTED_PROXIES`) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustedProxyError {
    /// Neither an address nor `address/prefix`.
    #[error(
        "`{0}` is not an IP address: give an address (10.0.0.5, fd00::5) or a CIDR range \
         (10.0.0.0/8, fd00::/8)"
    )]
    NotAnAddress(String),
    /// The part after `/` is not a prefix length the address family has.
    #[error("`{entry}`: the prefix length must be a number from 1 to {max}")]
    PrefixLength {
        /// The entry as given.
        entry: String,
        /// The family's longest prefix (32 or 128).
        max: u8,
    },
    /// A `/0` range: every peer would be trusted.
    #[error(
        "`{0}` would trust every peer, so any client could name its own address for the \
         sign-in limit: give the proxies' own addresses or network range"
    )]
    EveryPeer(String),
}

impl std::str::FromStr for TrustedProxy {
    type Err = TrustedProxyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let entry = s.trim();
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| TrustedProxyError::NotAnAddress(entry.to_owned()))?;
        let Some(prefix) = prefix else {
            return Ok(addr.into());
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_error = || TrustedProxyError::PrefixLength {
            entry: entry.to_owned(),
            max,
        };
        let len: u8 = prefix.parse().map_err(|_| prefix_error())?;
        if len == 0 {
            return Err(TrustedProxyError::EveryPeer(entry.to_owned()));
        }
        let net = ipnet::IpNet::new(addr, len).map_err(|_| prefix_error())?;
        Ok(Self(net.trunc()))
    }
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
        let nats = self
            .nats
            .load(|_| {})
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
            trusted_proxies: self.trusted_proxies,
            sign_in_per_minute: self.sign_in_per_minute,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            header_read_timeout: self.header_read_timeout,
            stream_stall_timeout: self.stream_stall_timeout,
            insecure_dev: self.insecure_dev,
            ui_dir: self.ui_dir,
            environment: self.environment,
            request_timeout: self.request_timeout,
            system_account: self.system.account(),
            startup_timeout: self.startup_timeout,
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

    /// A flag may name as long as an SDK option (a lease, a TTL, an ack
    /// wait) and no longer: one bound, the SDK's, not a copy of its number.
    #[test]
    fn a_flag_may_name_the_sdks_longest_period_and_no_more() {
        let longest = aegis_sdk::clock::LONGEST_PERIOD;
        let flag = |d: Duration| duration_flag(&humantime::format_duration(d).to_string());
        assert_eq!(flag(longest), Ok(longest));
        assert_eq!(
            flag(longest + Duration::from_secs(1)),
            Err("must be at most 30 days".to_owned())
        );
    }

    /// A flag with a bound of its own below thirty days (as `aegis chaos
    /// unhealthy --for`, one day) names that bound whatever the size of the
    /// value: `31d` is not told "at most 30 days" first, and then `30d`
    /// "at most 1day".
    #[test]
    fn a_flag_with_its_own_bound_names_it_for_a_value_of_any_size() {
        let day = Duration::from_secs(86_400);
        let for_flag = |s: &str| match duration_flag_any_length(s)? {
            d if d > day => Err(format!(
                "must be at most {} (one day)",
                humantime::format_duration(day)
            )),
            d => Ok(d),
        };
        let bound = Err("must be at most 1day (one day)".to_owned());
        for over in [
            "2d",
            "30d",
            "31d",
            "1y",
            "500000000000years",
            "99999999999999999999y",
        ] {
            assert_eq!(for_flag(over), bound, "{over}");
        }
        assert_eq!(for_flag("1day"), Ok(day));
        assert!(for_flag("tomorrow").is_err());
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
    fn binds_loopback_unless_told_and_cookie_modes_parse() {
        let cli = Cli::try_parse_from(["aegis"]).unwrap();
        assert_eq!(cli.api.bind, IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert_eq!(cli.api.secure_cookies, CookieSecurity::Auto);
        assert_eq!(MonitorConfig::default().bind, cli.api.bind);
        let cli =
            Cli::try_parse_from(["aegis", "--listen", "0.0.0.0", "--secure-cookies"]).unwrap();
        assert_eq!(cli.api.bind, IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        assert_eq!(cli.api.secure_cookies, CookieSecurity::Always);
        let cli = Cli::try_parse_from([
            "aegis",
            "--secure-cookies=never",
            "--trusted-proxy",
            "10.0.0.1,10.0.0.2",
        ])
        .unwrap();
        assert_eq!(cli.api.secure_cookies, CookieSecurity::Never);
        assert_eq!(cli.api.trusted_proxies.len(), 2);
        assert!(Cli::try_parse_from(["aegis", "--max-connections", "0"]).is_err());
        assert!(Cli::try_parse_from(["aegis", "--max-connections-per-client", "0"]).is_err());
        assert_eq!(cli.api.max_connections_per_client, 256);
        for flag in ["--request-timeout", "--header-read-timeout"] {
            let error = Cli::try_parse_from(["aegis", flag, "0s"])
                .err()
                .unwrap_or_else(|| panic!("{flag} 0s accepted"))
                .to_string();
            assert!(error.contains("greater than zero"), "{error}");
        }
        assert!(Cli::try_parse_from(["aegis", "--sign-in-per-minute", "0"]).is_err());
    }

    /// A proxy is an address or a CIDR range (the ingress controller's pods
    /// change address on every restart; their network does not); a bad
    /// entry is refused, naming the flag, the entry and what is wrong.
    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let cli = Cli::try_parse_from([
            "aegis",
            "--trusted-proxy",
            "10.0.0.5, 10.0.0.0/8",
            "--trusted-proxy",
            "fd00::/8",
        ])
        .unwrap();
        let trusted = cli
            .api
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>();
        assert_eq!(trusted, ["10.0.0.5", "10.0.0.0/8", "fd00::/8"]);
        for (bad, why) in [
            ("10.0.0.0/33", "prefix length"),
            ("fd00::/129", "prefix length"),
            ("10.0.0.0/x", "prefix length"),
            ("10.0.0/8", "not an IP address"),
            ("ingress-nginx", "not an IP address"),
            ("", "not an IP address"),
            ("0.0.0.0/0", "every peer"),
            ("::/0", "every peer"),
        ] {
            let error = Cli::try_parse_from(["aegis", "--trusted-proxy", bad])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"))
                .to_string();
            assert!(
                error.contains("--trusted-proxy") && error.contains(bad) && error.contains(why),
                "{bad:?}: {error}"
            );
        }
    }

    /// The live stream's cut-off for a client that reads nothing is set
    /// like the other limits: a flag with an `AEGIS_API_*` variable,
    /// listed in `--help`, its default the library's; `0s` switches it
    /// off, as the library documents. Before, only the library could set it.
    #[test]
    fn the_stream_stall_cut_off_is_a_flag_like_the_other_limits() {
        use clap::CommandFactory;
        let cli = Cli::try_parse_from(["aegis"]).unwrap();
        assert_eq!(
            cli.api.into_config().unwrap().stream_stall_timeout,
            MonitorConfig::default().stream_stall_timeout
        );
        for (given, expected) in [("5s", 5), ("2m", 120), ("0s", 0)] {
            let cli = Cli::try_parse_from(["aegis", "--stream-stall-timeout", given]).unwrap();
            let config = cli.api.into_config().unwrap();
            assert_eq!(config.stream_stall_timeout, Duration::from_secs(expected));
        }
        assert!(Cli::try_parse_from(["aegis", "--stream-stall-timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["aegis", "--stream-stall-timeout", "31d"]).is_err());
        let command = Cli::command();
        let flag = command
            .get_arguments()
            .find(|a| a.get_long() == Some("stream-stall-timeout"))
            .expect("a --stream-stall-timeout flag");
        assert_eq!(
            flag.get_env().and_then(|e| e.to_str()),
            Some("AEGIS_API_STREAM_STALL_TIMEOUT")
        );
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("--stream-stall-timeout"), "{help}");
    }

    #[test]
    fn defaults() {
        let c = MonitorConfig::default();
        assert_eq!(c.listen_addr().port(), 8100);
        assert!(!c.has_tokens());
        assert!(!c.insecure_dev);
    }
}
