//! Configuration of an Aegis process: where NATS is, how to authenticate, and
//! the timeouts the SDK uses.
//!
//! A process reads its configuration once and passes it down. Three sources are
//! layered, later ones winning: a TOML file, `AEGIS_*` environment variables,
//! and builder calls made by the program itself. [`ConfigLoader`] does the
//! layering; [`AegisConfig::validate`] checks the result before any network I/O.
//!
//! ```toml
//! [nats]
//! servers = ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
//! token = "s3cret"            # or user/password, nkey_seed, creds_file
//! inbox_prefix = "_INBOX_my-user"  # when the server limits each user to its own inboxes
//! tls_ca = "/etc/aegis/ca.pem"
//! pool_size = 2
//! request_timeout = "5s"
//! ping_interval = "2s"        # a silent server is given up after ~3 of these
//! replicas = 3
//!
//! [nats.reconnect]
//! initial_delay = "100ms"
//! max_delay = "5s"
//!
//! # Limits of the streams Aegis creates (defaults fit a laptop showcase).
//! [streams.events]
//! max_age = "7d"
//! max_bytes = 4294967296      # 4 GiB
//! max_messages = 20000000
//! ```
//!
//! Two parts live apart: `url` reads and redacts the server URLs (the
//! credentials their user info may carry), and `streams` holds the limits
//! of the streams Aegis creates ([`StreamsConfig`]).
//!
//! Why one module of over 500 lines: the settings, their validation and
//! the loader that reads them from file and environment (with errors that
//! name the setting and never a secret) are read together; what stands
//! alone is in `url` and `streams`.

mod streams;
mod url;

use std::{fmt, path::PathBuf, time::Duration};

use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
};
use serde::{Deserialize, Serialize, Serializer};

pub use streams::{MAX_STREAM_AGE, MIN_STREAM_BYTES, StreamLimits, StreamsConfig};
pub use url::redact_url;
pub(crate) use url::{UrlAuth, redact_urls, url_auth, without_userinfo};
use url::{is_server_url, redact_unparsed, serialize_redacted_urls, split_servers, string_or_list};

/// The environment variable prefix read by [`ConfigLoader::env`].
pub const ENV_PREFIX: &str = "AEGIS_";

/// The default [`NatsConfig::ping_interval`]: a server gone silent is
/// noticed within about three of these (6 s), well inside a registry
/// record's TTL (15 s), so an instance reconnects elsewhere and goes on
/// beating before its record expires. The NATS client's own default, a
/// ping a minute, left a partitioned connection "connected" for three
/// minutes.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(2);

/// The shortest [`NatsConfig::ping_interval`] accepted.
const MIN_PING_INTERVAL: Duration = Duration::from_millis(100);

/// A secret string (token, password, seed). It never appears in `Debug`
/// output, logs or serialized configuration.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; use only to hand it to the NATS client.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

/// The `AEGIS_NATS_*` suffixes [`ConfigLoader::env`] reads (lowercased),
/// the field each sets, and whether its value is a string: a string is
/// taken as it is but for the whitespace around it, never read as a
/// number, a boolean, a list or a table (a password `123456` or `[x]` is
/// that password), and its quotes are kept.
const ENV_KEYS: [(&str, &str, bool); 15] = [
    ("url", "nats.servers", true),
    ("token", "nats.token", true),
    ("user", "nats.user", true),
    ("password", "nats.password", true),
    ("inbox_prefix", "nats.inbox_prefix", true),
    ("nkey_seed", "nats.nkey_seed", true),
    ("creds", "nats.creds_file", true),
    ("tls_ca", "nats.tls_ca", true),
    ("tls_cert", "nats.tls_cert", true),
    ("tls_key", "nats.tls_key", true),
    ("pool_size", "nats.pool_size", false),
    ("request_timeout", "nats.request_timeout", false),
    ("connect_timeout", "nats.connect_timeout", false),
    ("ping_interval", "nats.ping_interval", false),
    ("replicas", "nats.replicas", false),
];

/// The prefix of the variables [`ConfigLoader::env`] reads.
const ENV_NATS_PREFIX: &str = "AEGIS_NATS_";

/// The variables of [`ENV_KEYS`] whose value is (`strings`) or is not a
/// string, each keyed by the field it sets. Others with the prefix
/// (`AEGIS_NATS_SERVER` names the server binary) are not ours.
fn env_provider(strings: bool) -> Env {
    Env::prefixed(ENV_NATS_PREFIX).filter_map(move |key| {
        let key = key.as_str().to_ascii_lowercase();
        ENV_KEYS
            .iter()
            .find(|(name, _, string)| *name == key && *string == strings)
            .map(|(_, field, _)| (*field).into())
    })
}

/// The fields whose values are secrets: an error about one never quotes it.
const SECRET_FIELDS: [&str; 4] = ["token", "password", "nkey_seed", "servers"];

/// `error` (each of its chain) with the value of a secret field it may
/// quote replaced by what kind of value it is (`found signed int 123456`
/// becomes `found an integer`). A syntax error of a file, which shows the
/// line it is on, is cut to its position and reason.
fn without_secrets(error: figment::Error) -> figment::Error {
    use figment::error::{Actual, Kind};
    fn kind_of(actual: Actual) -> Actual {
        let kind = match actual {
            Actual::Bool(_) => "a boolean",
            Actual::Unsigned(_) | Actual::Signed(_) => "an integer",
            Actual::Float(_) => "a float",
            Actual::Char(_) | Actual::Str(_) => "a string",
            Actual::Bytes(_) => "bytes",
            Actual::Other(_) => "a value",
            other => return other,
        };
        Actual::Other(kind.to_owned())
    }
    let mut errors: Vec<figment::Error> = error.into_iter().collect();
    for e in &mut errors {
        let secret = e
            .path
            .last()
            .is_some_and(|field| SECRET_FIELDS.contains(&field.as_str()));
        let kind = std::mem::replace(&mut e.kind, Kind::Message(String::new()));
        e.kind = match kind {
            Kind::InvalidType(actual, expected) if secret => {
                Kind::InvalidType(kind_of(actual), expected)
            }
            Kind::InvalidValue(actual, expected) if secret => {
                Kind::InvalidValue(kind_of(actual), expected)
            }
            Kind::Unsupported(actual) if secret => Kind::Unsupported(kind_of(actual)),
            // The server list's own message (no list or string) quotes nothing.
            Kind::Message(_) if secret && e.path.last().is_some_and(|f| f != "servers") => {
                Kind::Message("the value is not valid here (not shown: it is a secret)".into())
            }
            Kind::Message(message) if e.path.is_empty() => Kind::Message(syntax_only(&message)),
            other => other,
        };
    }
    errors
        .into_iter()
        .rev()
        .reduce(|chain, next| chain.chain(next))
        .unwrap_or_else(|| figment::Error::from("invalid configuration".to_owned()))
}

/// A parse error in plain words: each error of figment's chain as
/// [`plain`] says it, joined by `; `.
fn parse_text(error: &figment::Error) -> String {
    let mut said: Vec<String> = Vec::new();
    for e in error.clone() {
        let text = plain(&e);
        if !said.contains(&text) {
            said.push(text);
        }
    }
    said.join("; ")
}

/// One figment error as a user reads it: where (the environment variable
/// by its full name; the file's key as the file spells it, without
/// figment's profile in front, and the file), then what is wrong, without
/// serde's jargon (`invalid value signed int `-5`, expected u64`).
fn plain(e: &figment::Error) -> String {
    use figment::{Source, error::Kind};
    let key = e.path.join(".");
    let metadata = e.metadata.as_ref();
    // The variables read as strings are merged as program values (`Code`);
    // the others come from the `Env` provider.
    let from_env = metadata.is_some_and(|m| {
        m.name.contains("environment variable") || matches!(m.source, Some(Source::Code(_)))
    });
    let variable = ENV_KEYS
        .iter()
        .find(|(_, field, _)| *field == key)
        .map(|(name, _, _)| format!("{ENV_NATS_PREFIX}{}", name.to_ascii_uppercase()));
    let file = metadata.and_then(|m| match &m.source {
        Some(source @ Source::File(_)) => Some(source.to_string()),
        _ => None,
    });
    let place = match (variable, file) {
        (Some(variable), _) if from_env => Some(variable),
        (_, Some(file)) if key.is_empty() => Some(file),
        (_, Some(file)) => Some(format!("`{key}` in {file}")),
        _ if key.is_empty() => None,
        _ => Some(format!("`{key}`")),
    };
    let listed = |names: &[&str]| {
        names
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let what = match &e.kind {
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, found {}",
                expected_words(expected),
                actual_words(actual)
            )
        }
        Kind::UnknownField(name, known) => {
            let unknown = if e.path.last() == Some(name) {
                "unknown key".to_owned()
            } else {
                format!("unknown key `{name}`")
            };
            format!("{unknown}; known keys are {}", listed(known))
        }
        Kind::UnknownVariant(name, known) => {
            format!("unknown value `{name}`; known values are {}", listed(known))
        }
        Kind::MissingField(name) => format!("missing key `{name}`"),
        Kind::DuplicateField(name) => format!("key `{name}` given twice"),
        Kind::InvalidLength(length, expected) => {
            format!("expected {expected}, found {length} item(s)")
        }
        // serde's words for a value that is none of a field's shapes (the
        // server list: one string or a list of them).
        Kind::Message(m) if m.starts_with("data did not match any variant of untagged enum") => {
            "expected a string or a list of strings".into()
        }
        Kind::ISizeOutOfRange(v) => format!("{v} is out of range"),
        Kind::USizeOutOfRange(v) => format!("{v} is out of range"),
        other => other.to_string(),
    };
    match place {
        Some(place) => format!("{place}: {what}"),
        None => what,
    }
}

/// What serde says a field expects, in words: `usize` is "a whole number
/// (0 or more)".
fn expected_words(expected: &str) -> String {
    match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number (0 or more)".into(),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number".into(),
        "f32" | "f64" => "a number".into(),
        "a boolean" | "bool" => "true or false".into(),
        other if other.starts_with("struct ") => "a table of keys".into(),
        other => other.to_owned(),
    }
}

/// A value found, as a user wrote it: `-5`, `"x"`, `true`.
fn actual_words(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Bool(v) => v.to_string(),
        Actual::Unsigned(v) => v.to_string(),
        Actual::Signed(v) => v.to_string(),
        Actual::Float(v) => v.to_string(),
        Actual::Char(v) => format!("{:?}", v.to_string()),
        Actual::Str(v) => format!("{v:?}"),
        Actual::Seq => "a list".into(),
        Actual::Map => "a table".into(),
        Actual::Other(v) => v.clone(),
        other => other.to_string(),
    }
}

/// A file's syntax error without the excerpt of the file it shows (the
/// line may hold a secret): `TOML parse error at line 2, column 9` and
/// the reason, e.g. `invalid string`.
fn syntax_only(message: &str) -> String {
    let excerpt = |line: &str| {
        let line = line.trim_start();
        line.starts_with('|')
            || line
                .split_once('|')
                .is_some_and(|(n, _)| n.trim().parse::<u64>().is_ok())
    };
    message
        .lines()
        .filter(|line| !line.trim().is_empty() && !excerpt(line))
        .collect::<Vec<_>>()
        .join(": ")
}

/// What redacted secrets are shown as.
pub const REDACTED: &str = "<redacted>";

/// How the client reconnects after losing its server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconnectPolicy {
    /// Give up after this many failed attempts in a row (at least 1);
    /// `None` (the default) retries forever, which is what a long-running
    /// service wants. Once given up, the connection is closed for good: it
    /// stays disconnected even when the server comes back, the SDK logs
    /// that at ERROR, [`Connection::is_closed_for_good`](crate::Connection::is_closed_for_good)
    /// turns true and the probes' `/healthz` fails, so the process should
    /// exit and be restarted. A small limit is spent fast: after a drop
    /// the first try goes at once, the second `initial_delay` (50 ms) later,
    /// then the pause doubles up to `max_delay`; with the defaults, 2
    /// attempts are used up within 50 ms and 10 within about 9 s.
    pub max_reconnects: Option<usize>,
    /// Delay before the second try after a drop (the first goes at once);
    /// doubles per attempt up to `max_delay`. Greater than zero.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Upper bound of the retry delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            max_reconnects: None,
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
        }
    }
}

impl ReconnectPolicy {
    /// The delay before reconnect attempt `attempt` (1-based), with exponential
    /// growth capped at `max_delay`.
    pub fn delay(&self, attempt: usize) -> Duration {
        let shift = attempt.saturating_sub(1).min(20) as u32;
        self.initial_delay
            .saturating_mul(1u32 << shift)
            .min(self.max_delay)
    }
}

/// Connection settings for NATS. Shown (`Debug`) and serialized with its
/// secrets replaced by [`REDACTED`], a password or token in a server URL
/// among them.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URLs; the client picks one and fails over to the others.
    /// In a file or `AEGIS_NATS_URL` a comma-separated string is accepted too.
    #[serde(
        deserialize_with = "string_or_list",
        serialize_with = "serialize_redacted_urls"
    )]
    pub servers: Vec<String>,
    /// Token authentication.
    pub token: Option<Secret>,
    /// User for user/password authentication.
    pub user: Option<String>,
    /// Password for user/password authentication.
    pub password: Option<Secret>,
    /// NKey seed (`SU...`) for nkey authentication.
    pub nkey_seed: Option<Secret>,
    /// A `.creds` file (JWT + seed) for decentralized authentication.
    pub creds_file: Option<PathBuf>,
    /// The prefix of this client's reply inboxes instead of `_INBOX`, e.g.
    /// `_INBOX_svc-order-service`: with a prefix per user, the server can
    /// let each user read only its own replies (the users `aegis up`
    /// generates are set up that way).
    pub inbox_prefix: Option<String>,
    /// CA bundle (PEM) used to verify the server; enables TLS.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS; needs `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require TLS even without a CA or client certificate.
    pub tls_required: bool,
    /// Number of NATS connections RPC calls are spread over (1 is plenty for
    /// most processes; more helps very high request rates).
    pub pool_size: usize,
    /// Default deadline of an RPC call.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Deadline of the initial connection attempt.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How often the client pings a server it has heard nothing from
    /// (default [`DEFAULT_PING_INTERVAL`], 2 s). The NATS client gives a
    /// connection up, and reconnects (to another node of a cluster), when
    /// a third ping is due with two still unanswered (a number fixed by
    /// the client): a server that went silent — a network partition, a
    /// frozen host — is noticed within about three intervals. Any traffic
    /// from the server counts as an answer, so a busy connection sends no
    /// pings. At least 100 ms.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// Reconnect behaviour after a lost connection.
    pub reconnect: ReconnectPolicy,
    /// Replicas of the streams and buckets the SDK creates (1 single node, 3 cluster).
    pub replicas: usize,
    /// Refuse to start when the server has no JetStream (events, commands,
    /// registry and election need it).
    pub require_jetstream: bool,
}

impl fmt::Debug for NatsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            servers,
            token,
            user,
            password,
            nkey_seed,
            creds_file,
            inbox_prefix,
            tls_ca,
            tls_cert,
            tls_key,
            tls_required,
            pool_size,
            request_timeout,
            connect_timeout,
            ping_interval,
            reconnect,
            replicas,
            require_jetstream,
        } = self;
        f.debug_struct("NatsConfig")
            .field("servers", &redact_urls(servers))
            .field("token", token)
            .field("user", user)
            .field("password", password)
            .field("nkey_seed", nkey_seed)
            .field("creds_file", creds_file)
            .field("inbox_prefix", inbox_prefix)
            .field("tls_ca", tls_ca)
            .field("tls_cert", tls_cert)
            .field("tls_key", tls_key)
            .field("tls_required", tls_required)
            .field("pool_size", pool_size)
            .field("request_timeout", request_timeout)
            .field("connect_timeout", connect_timeout)
            .field("ping_interval", ping_interval)
            .field("reconnect", reconnect)
            .field("replicas", replicas)
            .field("require_jetstream", require_jetstream)
            .finish()
    }
}

impl NatsConfig {
    /// Whether a server URL carries credentials in its user info
    /// (`nats://alice:s3cret@host`, or a token: `nats://tok3n@host`): the
    /// connection signs in with them, and they count as the one
    /// authentication method.
    ///
    /// ```
    /// use aegis_sdk::AegisConfig;
    /// assert!(AegisConfig::with_servers("nats://alice:s3cret@host:4222").nats.url_credentials());
    /// assert!(!AegisConfig::with_servers("nats://host:4222").nats.url_credentials());
    /// ```
    pub fn url_credentials(&self) -> bool {
        // Credentials the check refuses (two URLs disagreeing, a password
        // without a user) are credentials in a URL too.
        !matches!(url_auth(&self.servers), Ok(None))
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        Self {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            token: None,
            user: None,
            password: None,
            nkey_seed: None,
            creds_file: None,
            inbox_prefix: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            tls_required: false,
            pool_size: 1,
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            ping_interval: DEFAULT_PING_INTERVAL,
            reconnect: ReconnectPolicy::default(),
            replicas: 1,
            require_jetstream: true,
        }
    }
}

/// The whole configuration of an Aegis process.
///
/// ```
/// use std::time::Duration;
/// use aegis_sdk::AegisConfig;
///
/// let config = AegisConfig {
///     nats: aegis_sdk::NatsConfig {
///         servers: vec!["nats://127.0.0.1:4222".into()],
///         request_timeout: Duration::from_secs(2),
///         ..Default::default()
///     },
///     ..Default::default()
/// };
/// config.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AegisConfig {
    /// NATS connection settings.
    pub nats: NatsConfig,
    /// Limits of the streams Aegis creates.
    pub streams: StreamsConfig,
}

/// A configuration that cannot work, or a file that cannot be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file, an environment variable or a value failed to parse.
    /// Shown in plain words, each fault of the error's chain once: the
    /// file's key as the file spells it (`nats.request_timout` in
    /// aegis.toml) or the variable by its full name (AEGIS_NATS_REPLICAS),
    /// then what is wrong. The figment error is kept for a program to
    /// inspect; it is not the error's source, its text being this one's.
    #[error("invalid configuration: {}", parse_text(.0))]
    Parse(Box<figment::Error>),
    /// The configuration file does not exist.
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    /// A value is out of range or inconsistent with another.
    #[error("invalid configuration: {field}: {message}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `nats.pool_size`.
        field: &'static str,
        /// What is wrong and what would be right.
        message: String,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        message: message.into(),
    }
}

impl AegisConfig {
    /// A configuration for the given server URLs (comma-separated allowed),
    /// with defaults for the rest.
    pub fn with_servers(servers: impl AsRef<str>) -> Self {
        let mut config = Self::default();
        config.nats.servers = split_servers(servers.as_ref());
        config
    }

    /// Checks that the configuration can work.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let n = &self.nats;
        if n.servers.is_empty() {
            return Err(invalid(
                "nats.servers",
                "at least one server URL is required",
            ));
        }
        for url in &n.servers {
            if !is_server_url(url) {
                return Err(invalid(
                    "nats.servers",
                    format!(
                        "`{}` is not a NATS URL (expected nats://host:port or host:port)",
                        redact_unparsed(url)
                    ),
                ));
            }
        }
        let methods = [
            n.token.is_some(),
            n.user.is_some() || n.password.is_some(),
            n.nkey_seed.is_some(),
            n.creds_file.is_some(),
            url_auth(&n.servers)?.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        if methods > 1 {
            return Err(invalid(
                "nats",
                "choose one authentication method: token, user/password, nkey_seed, creds_file \
                 or user info in the server URLs",
            ));
        }
        if n.user.is_some() != n.password.is_some() {
            return Err(invalid(
                "nats.user",
                "user and password must be given together",
            ));
        }
        if let Some(prefix) = &n.inbox_prefix
            && (prefix.is_empty()
                || prefix.contains(|c: char| c.is_whitespace() || matches!(c, '*' | '>'))
                || prefix.split('.').any(str::is_empty))
        {
            return Err(invalid(
                "nats.inbox_prefix",
                format!("`{prefix}` is not a subject prefix (e.g. _INBOX_my-user)"),
            ));
        }
        if n.tls_cert.is_some() != n.tls_key.is_some() {
            return Err(invalid(
                "nats.tls_cert",
                "tls_cert and tls_key must be given together",
            ));
        }
        for (field, path) in [
            ("nats.creds_file", &n.creds_file),
            ("nats.tls_ca", &n.tls_ca),
            ("nats.tls_cert", &n.tls_cert),
            ("nats.tls_key", &n.tls_key),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(invalid(
                    field,
                    format!("file {} does not exist", path.display()),
                ));
            }
        }
        if n.pool_size == 0 || n.pool_size > 64 {
            return Err(invalid("nats.pool_size", "must be between 1 and 64"));
        }
        if n.request_timeout.is_zero() {
            return Err(invalid("nats.request_timeout", "must be greater than zero"));
        }
        if n.connect_timeout.is_zero() {
            return Err(invalid("nats.connect_timeout", "must be greater than zero"));
        }
        if n.ping_interval < MIN_PING_INTERVAL {
            return Err(invalid(
                "nats.ping_interval",
                "must be at least 100ms (the server answers every ping; shorter only adds load)",
            ));
        }
        if n.reconnect.max_reconnects == Some(0) {
            return Err(invalid(
                "nats.reconnect.max_reconnects",
                "must be at least 1 (the NATS client would read 0 as no limit); leave it \
                 unset to reconnect forever",
            ));
        }
        if n.reconnect.initial_delay.is_zero() {
            return Err(invalid(
                "nats.reconnect.initial_delay",
                "must be greater than zero: a zero delay stays zero as it doubles, and the \
                 client would retry a server that is down without a pause",
            ));
        }
        if n.reconnect.initial_delay > n.reconnect.max_delay {
            return Err(invalid(
                "nats.reconnect.initial_delay",
                "must not exceed reconnect.max_delay",
            ));
        }
        if !matches!(n.replicas, 1..=5) {
            return Err(invalid("nats.replicas", "must be between 1 and 5"));
        }
        self.streams.validate()
    }

    /// The configuration as JSON with every secret replaced by `<redacted>`,
    /// fit to show an operator.
    pub fn redacted(&self) -> serde_json::Value {
        // `Secret` serializes as the redaction marker, so plain serialization is safe.
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

type Override = Box<dyn FnOnce(&mut AegisConfig) + Send>;

/// Layers file, environment and program-set values into an [`AegisConfig`].
///
/// Precedence, lowest first: defaults, the file, `AEGIS_*` variables, then
/// whatever the program sets with [`ConfigLoader::set`].
///
/// Environment variables (read only when [`ConfigLoader::env`] is called, so a
/// library never reads the environment behind its caller's back):
///
/// | variable | field |
/// | --- | --- |
/// | `AEGIS_NATS_URL` | `nats.servers` (comma-separated) |
/// | `AEGIS_NATS_TOKEN` | `nats.token` |
/// | `AEGIS_NATS_USER` / `AEGIS_NATS_PASSWORD` | `nats.user` / `nats.password` |
/// | `AEGIS_NATS_NKEY_SEED` | `nats.nkey_seed` |
/// | `AEGIS_NATS_CREDS` | `nats.creds_file` |
/// | `AEGIS_NATS_INBOX_PREFIX` | `nats.inbox_prefix` |
/// | `AEGIS_NATS_TLS_CA` / `_TLS_CERT` / `_TLS_KEY` | `nats.tls_ca` / `tls_cert` / `tls_key` |
/// | `AEGIS_NATS_POOL_SIZE` | `nats.pool_size` |
/// | `AEGIS_NATS_REQUEST_TIMEOUT` | `nats.request_timeout` (e.g. `3s`) |
/// | `AEGIS_NATS_CONNECT_TIMEOUT` | `nats.connect_timeout` |
/// | `AEGIS_NATS_PING_INTERVAL` | `nats.ping_interval` (e.g. `2s`) |
/// | `AEGIS_NATS_REPLICAS` | `nats.replicas` |
///
/// A string setting (URL, token, user, password, seed, inbox prefix, file
/// paths) is taken as the variable holds it but for the whitespace around
/// it (spaces, tabs, a trailing newline as a file-made Kubernetes Secret
/// has), which is dropped: `123456`, `true`, `[x]` or `"quoted"` (quotes
/// kept) is that password. A password that begins or ends with whitespace
/// is set in the file instead. An error about a
/// secret setting (token, password, seed, server URLs) says what kind of
/// value it found, never the value.
///
/// ```no_run
/// use aegis_sdk::ConfigLoader;
///
/// let config = ConfigLoader::new()
///     .file("aegis.toml")
///     .env()
///     .set(|c| c.nats.pool_size = 2)
///     .load()
///     .expect("valid configuration");
/// ```
#[derive(Default)]
pub struct ConfigLoader {
    file: Option<PathBuf>,
    env: bool,
    overrides: Vec<Override>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("file", &self.file)
            .field("env", &self.env)
            .field("overrides", &self.overrides.len())
            .finish()
    }
}

impl ConfigLoader {
    /// A loader with only the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads this TOML file (it must exist).
    pub fn file(mut self, path: impl Into<PathBuf>) -> Self {
        self.file = Some(path.into());
        self
    }

    /// Reads this TOML file when a path is given.
    pub fn file_opt(mut self, path: Option<impl Into<PathBuf>>) -> Self {
        self.file = path.map(Into::into);
        self
    }

    /// Reads the `AEGIS_NATS_*` environment variables.
    pub fn env(mut self) -> Self {
        self.env = true;
        self
    }

    /// Applies a program-set value; these win over file and environment.
    pub fn set(mut self, f: impl FnOnce(&mut AegisConfig) + Send + 'static) -> Self {
        self.overrides.push(Box::new(f));
        self
    }

    /// Builds and validates the configuration.
    ///
    /// # Errors
    /// [`ConfigError`] when the file is missing or malformed, a variable does
    /// not parse, or the result fails [`AegisConfig::validate`].
    pub fn load(self) -> Result<AegisConfig, ConfigError> {
        // Figment takes the defaults serialized; they hold no secret, and
        // `Secret` would serialize only as the redaction marker anyway.
        let mut figment = Figment::from(Serialized::defaults(AegisConfig::default()));
        if let Some(path) = &self.file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.clone()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        if self.env {
            // Figment reads a variable's value as TOML-like data (`123456`
            // an integer, `[x]` a list, `"x"` unquoted): the strings are
            // taken from it as they are instead, but for the whitespace
            // around them, which figment dropped too (a Secret made from a
            // file ending in a newline holds `s3cret\n`).
            for (field, value) in env_provider(true).iter() {
                let value = value.trim_matches(|c: char| c.is_ascii_whitespace());
                figment = figment.merge(Serialized::default(field.as_str(), value));
            }
            figment = figment.merge(env_provider(false));
        }
        let mut config: AegisConfig = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(without_secrets(e))))?;
        for f in self.overrides {
            f(&mut config);
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail closures return its large error type
mod tests {
    use super::*;

    /// A URL refused as no NATS URL is named without the password it may
    /// carry (one with `#`, `/` or `?` is what makes it unparseable).
    #[test]
    fn a_refused_url_is_named_without_its_password() {
        for url in [
            "nats://alice:pa#ss@127.0.0.1:4222",
            "nats://alice:p/w@h:4222?x",
        ] {
            let err = AegisConfig::with_servers(url).validate().unwrap_err();
            let said = err.to_string();
            assert!(said.contains("is not a NATS URL"), "{said}");
            assert!(!said.contains("pa#ss") && !said.contains("p/w"), "{said}");
        }
    }

    #[test]
    fn defaults_are_valid() {
        AegisConfig::default().validate().unwrap();
    }

    #[test]
    fn the_ping_interval_comes_from_file_env_or_program_and_is_checked() {
        assert_eq!(
            AegisConfig::default().nats.ping_interval,
            DEFAULT_PING_INTERVAL
        );
        figment::Jail::expect_with(|jail| {
            jail.create_file("aegis.toml", "[nats]\nping_interval = \"5s\"\n")?;
            let config = ConfigLoader::new().file("aegis.toml").load().unwrap();
            assert_eq!(config.nats.ping_interval, Duration::from_secs(5));
            jail.set_env("AEGIS_NATS_PING_INTERVAL", "750ms");
            let config = ConfigLoader::new().file("aegis.toml").env().load().unwrap();
            assert_eq!(config.nats.ping_interval, Duration::from_millis(750));
            let config = ConfigLoader::new()
                .env()
                .set(|c| c.nats.ping_interval = Duration::from_secs(1))
                .load()
                .unwrap();
            assert_eq!(config.nats.ping_interval, Duration::from_secs(1));
            jail.set_env("AEGIS_NATS_PING_INTERVAL", "10ms");
            let err = ConfigLoader::new().env().load().unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { field, .. } if *field == "nats.ping_interval"),
                "{err:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn file_env_and_overrides_layer_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.toml");
        std::fs::write(
            &path,
            "[nats]\nservers = \"nats://a:1,nats://b:2\"\npool_size = 3\nrequest_timeout = \"250ms\"\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("AEGIS_NATS_POOL_SIZE", "4");
            jail.set_env("AEGIS_NATS_TOKEN", "tok");
            // Not a config key: names the server binary for tools and tests.
            jail.set_env("AEGIS_NATS_SERVER", "/opt/nats-server");
            let config = ConfigLoader::new()
                .file(&path)
                .env()
                .set(|c| c.nats.replicas = 3)
                .load()
                .unwrap();
            assert_eq!(config.nats.servers, vec!["nats://a:1", "nats://b:2"]);
            assert_eq!(config.nats.pool_size, 4, "env wins over file");
            assert_eq!(config.nats.request_timeout, Duration::from_millis(250));
            assert_eq!(config.nats.token.as_ref().unwrap().expose(), "tok");
            assert_eq!(config.nats.replicas, 3, "program wins over all");
            Ok(())
        });
    }

    #[test]
    fn bad_values_are_named() {
        let mut c = AegisConfig::default();
        c.nats.pool_size = 0;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "nats.pool_size",
                ..
            })
        ));
        let mut c = AegisConfig::default();
        c.nats.token = Some(Secret::new("a"));
        c.nats.nkey_seed = Some(Secret::new("b"));
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid { field: "nats", .. })
        ));
        let mut c = AegisConfig::default();
        c.nats.inbox_prefix = Some("_INBOX.>".into());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "nats.inbox_prefix",
                ..
            })
        ));
        let c = AegisConfig::with_servers("http://x:1");
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "nats.servers",
                ..
            })
        ));
        assert!(matches!(
            ConfigLoader::new().file("/nonexistent/aegis.toml").load(),
            Err(ConfigError::MissingFile(_))
        ));
    }

    #[test]
    fn server_urls_must_be_host_and_port() {
        // A missing colon would otherwise be read as host `nats` with a
        // path, and fail later as a DNS error a start loop retries.
        for bad in [
            "nats//127.0.0.1:4222",
            "nats:/127.0.0.1:4222",
            "nats://127.0.0.1:4222/x",
            "tls://host:4222/path",
            "nats://",
            "nats://host:notaport",
        ] {
            let err = AegisConfig::with_servers(bad).validate().unwrap_err();
            assert!(
                matches!(
                    &err,
                    ConfigError::Invalid {
                        field: "nats.servers",
                        ..
                    }
                ),
                "{bad}: {err:?}"
            );
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
        for good in [
            "nats://127.0.0.1:4222",
            "127.0.0.1:4222",
            "localhost",
            "nats://user:pass@host:4222",
            "tls://host:4222/",
            "ws://host:8080/nats",
            "wss://host/ws",
            "nats://[::1]:4222",
        ] {
            AegisConfig::with_servers(good)
                .validate()
                .unwrap_or_else(|e| panic!("{good}: {e}"));
        }
    }

    #[test]
    fn unknown_keys_and_bad_types_are_parse_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[nats]\nserverz = \"x\"\n")?;
            assert!(matches!(
                ConfigLoader::new().file("a.toml").load(),
                Err(ConfigError::Parse(_))
            ));
            jail.set_env("AEGIS_NATS_POOL_SIZE", "many");
            assert!(matches!(
                ConfigLoader::new().env().load(),
                Err(ConfigError::Parse(_))
            ));
            Ok(())
        });
    }

    /// The string settings from the environment are taken as they are: a
    /// password of digits, `true`, a list or a table in TOML's syntax, or
    /// one in quotes, is that password.
    #[test]
    fn string_variables_are_taken_verbatim() {
        figment::Jail::expect_with(|jail| {
            for (password, user) in [
                ("123456", "1001"),
                ("true", "bob"),
                ("[hunter2]", "bob"),
                ("{a=b}", "bob"),
                ("\"abc\"", "bob"),
                ("1.5", "bob"),
                ("in side", "bob"),
            ] {
                jail.set_env("AEGIS_NATS_USER", user);
                jail.set_env("AEGIS_NATS_PASSWORD", password);
                let config = ConfigLoader::new()
                    .env()
                    .load()
                    .unwrap_or_else(|e| panic!("{password:?}: {}", crate::startup::Causes(&e)));
                let n = &config.nats;
                assert_eq!(n.password.as_ref().unwrap().expose(), password);
                assert_eq!(n.user.as_deref(), Some(user));
            }
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            for token in ["20251205", "{a=s3cret}", "[1, 2]", "false"] {
                jail.set_env("AEGIS_NATS_TOKEN", token);
                let config = ConfigLoader::new().env().load().unwrap();
                assert_eq!(config.nats.token.as_ref().unwrap().expose(), token);
            }
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("AEGIS_NATS_NKEY_SEED", "12345");
            jail.set_env("AEGIS_NATS_INBOX_PREFIX", "42");
            let config = ConfigLoader::new().env().load().unwrap();
            assert_eq!(config.nats.nkey_seed.as_ref().unwrap().expose(), "12345");
            assert_eq!(config.nats.inbox_prefix.as_deref(), Some("42"));
            // The numbers are read as numbers still.
            jail.set_env("AEGIS_NATS_POOL_SIZE", "3");
            jail.set_env("AEGIS_NATS_REQUEST_TIMEOUT", "3s");
            jail.set_env("AEGIS_NATS_URL", "nats://a:1, nats://b:2");
            let config = ConfigLoader::new().env().load().unwrap();
            assert_eq!(config.nats.pool_size, 3);
            assert_eq!(config.nats.request_timeout, Duration::from_secs(3));
            assert_eq!(config.nats.servers, vec!["nats://a:1", "nats://b:2"]);
            Ok(())
        });
    }

    /// A string setting from the environment loses the whitespace around
    /// it, as it did when figment parsed it: a Kubernetes Secret made
    /// `--from-file` of a file ending in a newline gives `s3cret\n`, and the
    /// password is `s3cret`. What is inside is kept, and is still a string.
    #[test]
    fn string_variables_lose_the_whitespace_around_them() {
        use std::path::Path;
        figment::Jail::expect_with(|jail| {
            for (password, expected) in [
                ("s3cret\n", "s3cret"),
                ("s3cret\r\n", "s3cret"),
                ("  s3cret \t\n", "s3cret"),
                (" 123456\n", "123456"),
                ("[x]\n", "[x]"),
                ("\"a b\"\n", "\"a b\""),
            ] {
                jail.set_env("AEGIS_NATS_USER", "bob\n");
                jail.set_env("AEGIS_NATS_PASSWORD", password);
                let config = ConfigLoader::new()
                    .env()
                    .load()
                    .unwrap_or_else(|e| panic!("{password:?}: {}", crate::startup::Causes(&e)));
                let n = &config.nats;
                assert_eq!(n.password.as_ref().unwrap().expose(), expected);
                assert_eq!(n.user.as_deref(), Some("bob"));
            }
            Ok(())
        });
        figment::Jail::expect_with(|jail| {
            jail.set_env("AEGIS_NATS_TOKEN", "t0ken\r\n");
            jail.set_env("AEGIS_NATS_INBOX_PREFIX", " _MY \n");
            jail.create_file("ca.pem", "not read here")?;
            jail.set_env("AEGIS_NATS_TLS_CA", "ca.pem\n");
            jail.set_env("AEGIS_NATS_URL", "nats://a:1\n");
            let config = ConfigLoader::new().env().load().unwrap();
            let n = &config.nats;
            assert_eq!(n.token.as_ref().unwrap().expose(), "t0ken");
            assert_eq!(n.inbox_prefix.as_deref(), Some("_MY"));
            assert_eq!(n.tls_ca.as_deref(), Some(Path::new("ca.pem")));
            assert_eq!(n.servers, vec!["nats://a:1"]);
            jail.clear_env();
            jail.set_env("AEGIS_NATS_NKEY_SEED", "SUABC\n");
            let config = ConfigLoader::new().env().load().unwrap();
            assert_eq!(config.nats.nkey_seed.as_ref().unwrap().expose(), "SUABC");
            jail.clear_env();
            jail.create_file("a.creds", "not read here")?;
            jail.set_env("AEGIS_NATS_CREDS", "a.creds\n");
            let config = ConfigLoader::new().env().load().unwrap();
            assert_eq!(
                config.nats.creds_file.as_deref(),
                Some(Path::new("a.creds"))
            );
            Ok(())
        });
    }

    /// A secret that does not parse is not quoted by the error saying so,
    /// whether the error is shown, shown with its causes, or debugged.
    #[test]
    fn an_error_never_quotes_a_secret() {
        figment::Jail::expect_with(|jail| {
            for (file, secret) in [
                ("[nats]\ntoken = 987654321\n", "987654321"),
                (
                    "[nats]\npassword = [\"hunter2\"]\nuser = \"bob\"\n",
                    "hunter2",
                ),
                (
                    "[nats]\nnkey_seed = { seed = \"SUAB3CRET\" }\n",
                    "SUAB3CRET",
                ),
                ("[nats]\ntoken = 12.75\n", "12.75"),
                ("[nats]\npassword = true\nuser = \"bob\"\n", "true"),
                ("[nats]\ntoken = s3cret-unquoted\n", "s3cret-unquoted"),
                ("[nats]\ntoken = \"s3cret\n", "s3cret"),
            ] {
                jail.create_file("secret.toml", file)?;
                let err = ConfigLoader::new().file("secret.toml").load().unwrap_err();
                assert!(matches!(err, ConfigError::Parse(_)), "{err:?}");
                let said = format!("{} | {:?}", crate::startup::Causes(&err), err);
                assert!(!said.contains(secret), "{file}: {said}");
                assert!(said.contains("secret.toml"), "{file}: {said}");
            }
            Ok(())
        });
    }

    #[test]
    fn secrets_are_redacted() {
        let mut c = AegisConfig::default();
        c.nats.token = Some(Secret::new("hunter2"));
        let shown = c.redacted().to_string();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains(REDACTED));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    /// A password or token in a server URL is a secret as well.
    #[test]
    fn secrets_in_server_urls_are_redacted() {
        let c = AegisConfig::with_servers("nats://alice:s3cret@host:4222,tls://tok3n@other/ws");
        let shown = c.redacted().to_string();
        assert!(
            !shown.contains("s3cret") && !shown.contains("tok3n"),
            "{shown}"
        );
        assert!(
            shown.contains("nats://alice:<redacted>@host:4222"),
            "{shown}"
        );
        assert!(shown.contains("tls://<redacted>@other/ws"), "{shown}");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(redact_url("nats://127.0.0.1:4222"), "nats://127.0.0.1:4222");
        assert_eq!(redact_url("u:p@h"), "u:<redacted>@h");
        assert_eq!(redact_url("ws://h/path@x"), "ws://h/path@x");
    }

    /// A password holding `/` ends the URL's authority early for a plain
    /// reading: it is hidden all the same, in `redacted()` and `Debug` too.
    #[test]
    fn a_password_with_a_slash_is_redacted() {
        for (url, password) in [
            ("nats://alice:p/w@h:4222", "p/w"),
            ("nats://alice:123/w@h:4222", "123/w"),
            ("tls://alice:a/b/c@h", "a/b/c"),
            ("nats://alice:p/w@h:4222,nats://alice:p/w@g:4222", "p/w"),
        ] {
            let c = AegisConfig::with_servers(url);
            for shown in [
                redact_url(url),
                c.redacted().to_string(),
                format!("{c:?}"),
                format!("{:?}", c.nats),
            ] {
                assert!(!shown.contains(password), "{url}: {shown}");
                assert!(shown.contains("alice:<redacted>@"), "{url}: {shown}");
            }
        }
    }

    /// The NATS client reads a limit of 0 as no limit at all: "give up
    /// after 0 failed attempts" would retry forever, so it is refused.
    #[test]
    fn a_reconnect_limit_of_zero_is_refused() {
        let mut c = AegisConfig::default();
        c.nats.reconnect.max_reconnects = Some(0);
        let err = c.validate().unwrap_err();
        assert!(
            matches!(
                &err,
                ConfigError::Invalid {
                    field: "nats.reconnect.max_reconnects",
                    ..
                }
            ),
            "{err:?}"
        );
        for fine in [None, Some(1), Some(10)] {
            c.nats.reconnect.max_reconnects = fine;
            c.validate().unwrap();
        }
    }

    /// A zero reconnect delay stays zero however it doubles: the client
    /// would retry a down server in a loop without a pause.
    #[test]
    fn a_zero_reconnect_delay_is_refused() {
        for (initial, max) in [
            (Duration::ZERO, Duration::ZERO),
            (Duration::ZERO, Duration::from_secs(2)),
        ] {
            let mut c = AegisConfig::default();
            c.nats.reconnect.initial_delay = initial;
            c.nats.reconnect.max_delay = max;
            let err = c.validate().unwrap_err();
            assert!(
                matches!(
                    &err,
                    ConfigError::Invalid {
                        field: "nats.reconnect.initial_delay",
                        ..
                    }
                ),
                "{initial:?}/{max:?}: {err:?}"
            );
        }
        let mut c = AegisConfig::default();
        c.nats.reconnect.initial_delay = Duration::from_millis(1);
        c.validate().unwrap();
    }

    #[test]
    fn reconnect_delay_grows_and_caps() {
        let p = ReconnectPolicy::default();
        assert_eq!(p.delay(1), Duration::from_millis(50));
        assert_eq!(p.delay(2), Duration::from_millis(100));
        assert_eq!(p.delay(100), Duration::from_secs(2));
    }
}
