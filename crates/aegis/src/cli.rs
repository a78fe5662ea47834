//! Command-line parsing and dispatch. Configuration is read here, once
//! (flags, with `AEGIS_*` environment variables as fallbacks), and passed down.
//!
//! Why one module of over 500 lines: it is the whole command tree (every
//! subcommand's flags are in its own module; here the top level and the
//! shared connection flags) and the dispatch with its error wording, which
//! a reader looks up in one place.

use std::{
    ffi::OsString,
    io::Write,
    path::{Path, PathBuf},
    process::ExitCode,
};

use aegis_sdk::{Connection, startup::error_line, telemetry::log_layer::LogForwarder};
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::{EnvFilter, prelude::*};

use crate::{
    bench, call, chaos, command, events, init, nats_config, service, shutdown, status, traffic, up,
    up::credentials::DEFAULT_PATH,
};

mod closed_pipe;

/// Aegis: trading services on NATS — run the showcase, services and benchmarks.
#[derive(Debug, Parser)]
#[command(
    name = "aegis",
    version,
    about,
    propagate_version = true,
    after_help = "Logging: AEGIS_LOG sets the filter, in RUST_LOG's syntax (e.g. \
                  AEGIS_LOG=debug or AEGIS_LOG=aegis_sdk=trace); this binary does not read \
                  RUST_LOG."
)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the local showcase: NATS cluster, services and the monitor (Ctrl-C stops all).
    Up(up::UpArgs),
    /// Run the monitor: the management and monitoring HTTP API (and the UI).
    Api(Box<aegis_monitor::ApiArgs>),
    /// Run one service instance (order, pricing, risk or echo).
    Service(service::ServiceArgs),
    /// Create every bucket and stream Aegis uses (the example trading
    /// services' buckets too with --showcase) with the replicas asked for,
    /// and check existing ones (exit status 3 when one does not match: fix
    /// it, a retry will not; 1 on other errors).
    Init(init::InitArgs),
    /// Print the NATS accounts and per-role users with their permissions
    /// (for a nats-server config, or the Helm chart's generated user table).
    NatsConfig(nats_config::NatsConfigArgs),
    /// Call a service method through discovery and print the reply and who served it.
    Call(call::CallArgs),
    /// Send a command to a service's workers: progress on stderr, the
    /// result as JSON on stdout.
    Command(command::CommandArgs),
    /// Watch the events on the EVENTS stream (`events tail`), without
    /// consuming or changing anything.
    Events(events::EventsArgs),
    /// List the durable consumers of EVENTS and COMMANDS (`consumers
    /// list`), or delete one no program uses any more (`consumers rm`).
    Consumers(crate::consumers::ConsumersArgs),
    /// Show the registered instances (service, id, status, heartbeat age, role).
    Status(status::StatusArgs),
    /// Break the running showcase on purpose: kill instances or NATS nodes,
    /// make instances UNHEALTHY (and healthy again) or slow.
    Chaos(chaos::ChaosArgs),
    /// Send a steady flow of orders to the running showcase, a line a second
    /// of what it cost, and check at the end that no acknowledged order is lost.
    Traffic(traffic::TrafficArgs),
    /// Benchmarks comparing raw async-nats with the SDK, side by side.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// RPC latency (p50..p99.9) and throughput.
    Rpc(bench::rpc::RpcBenchArgs),
    /// JetStream event publish throughput and latency.
    Events(bench::events::EventsBenchArgs),
    /// Instances killed under load: failed calls and failover times
    /// (`--stateless` or `--sticky`).
    Failover(bench::failover::FailoverBenchArgs),
    /// The showcase under faults (instances, leaders, NATS nodes): lost,
    /// duplicated, unavailable, and what the monitor showed; exits non-zero
    /// when a bound is broken.
    Chaos(bench::chaos::ChaosBenchArgs),
    /// The registry at fleet size N: instances spread over worker
    /// processes, callers, the monitor; deliveries counted by nats-server.
    Scale(bench::scale::ScaleBenchArgs),
}

/// NATS connection flags of the commands that connect: the ones `aegis
/// api` takes too ([`aegis_monitor::NatsArgs`]: `--nats-url`, `--config`,
/// `--nats-creds`), read the same way, plus the operator credentials of a
/// local showcase.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// The connection flags every command shares.
    #[command(flatten)]
    pub connection: aegis_monitor::NatsArgs,
    /// The credentials file of `aegis up` whose operator user to connect as
    /// when no other NATS credentials are given (`call`, `command`, `events`,
    /// `consumers`, `status`, `traffic` and `chaos`; default:
    /// `.aegis/credentials` when it exists).
    #[arg(long, env = "AEGIS_CREDENTIALS")]
    pub credentials: Option<PathBuf>,
    /// The state directory of the running `aegis up` to connect to, as it
    /// was started with (`aegis up --state-dir DIR`): its nodes' URLs and
    /// TLS CA, and its operator's credentials (`DIR/credentials`) unless
    /// other credentials are given. `--nats-url` beats its nodes;
    /// AEGIS_NATS_URL does not. Refused when no `aegis up` runs there, or
    /// while it is still starting its NATS.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Why a tool pointed at a state directory finds no showcase to connect
/// to there (the same words whichever tool says it). `aegis service` waits
/// while it is the case (`service::transient`): a showcase may be starting.
/// The tools, `aegis init` among them, say it at once ([`no_showcase`]).
#[derive(Debug)]
pub(crate) struct NoShowcase {
    /// The state directory.
    dir: PathBuf,
    /// An `aegis up` runs there but has not said where its NATS is yet
    /// (it writes `nats-url` once its nodes are healthy).
    starting: bool,
    /// Why its `up.pid`, left by an `aegis up` that did not stop cleanly,
    /// names no running `aegis up` (see [`crate::up::supervisor::check_pid`]).
    stale: Option<String>,
}

impl std::fmt::Display for NoShowcase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dir = self.dir.display();
        if self.starting {
            write!(
                f,
                "the `aegis up` with state in {dir} is still starting: its NATS is not up yet \
                 (try again once it says the showcase is up)"
            )
        } else if let Some(stale) = &self.stale {
            write!(
                f,
                "no `aegis up` is running with state in {dir}: {stale}, left by an `aegis up` \
                 that did not stop cleanly (start `aegis up` again, which takes the stale file \
                 over, or pass --state-dir with the directory a running one keeps its state in)"
            )
        } else {
            write!(
                f,
                "no `aegis up` is running with state in {dir} (run this where `aegis up` runs, \
                 or pass --state-dir with the directory it keeps its state in)"
            )
        }
    }
}

impl std::error::Error for NoShowcase {}

/// Whether `error` is (or was caused by) a [`NoShowcase`]: no `aegis up`
/// runs in the state directory named, or it is still starting. Only `aegis
/// service` waits on it; `aegis init` fails at once.
pub(crate) fn no_showcase(error: &anyhow::Error) -> bool {
    error
        .chain()
        .any(|cause| cause.downcast_ref::<NoShowcase>().is_some())
}

/// The error of a tool pointed at a state directory in which no `aegis up`
/// runs.
pub(crate) fn no_showcase_in(dir: &Path) -> anyhow::Error {
    anyhow::Error::new(NoShowcase {
        dir: dir.to_path_buf(),
        starting: false,
        stale: stale_up_pid(dir),
    })
}

/// Why `dir`'s `up.pid` is stale, when there is one that names no running
/// `aegis up`: its pid is now another process's, or has exited.
fn stale_up_pid(dir: &Path) -> Option<String> {
    use crate::up::supervisor::{PidFile, check_pid};
    let path = dir.join("up.pid");
    match check_pid(&path) {
        PidFile::Reused { pid, program } => Some(format!(
            "its pid file {} is stale (pid {pid} is now another process, {program}, \
             not the `aegis up` that wrote it)",
            path.display()
        )),
        PidFile::Gone(pid) => Some(format!(
            "its pid file {} is stale (pid {pid} has exited)",
            path.display()
        )),
        PidFile::Missing | PidFile::Live(_) => None,
    }
}

/// The error of a tool pointed at a state directory whose `aegis up` runs
/// but has not written its nodes yet.
fn starting_in(dir: &Path) -> anyhow::Error {
    anyhow::Error::new(NoShowcase {
        dir: dir.to_path_buf(),
        starting: true,
        stale: None,
    })
}

/// The state directory a showcase's credentials file sits in (`.` for a
/// bare file name).
pub(crate) fn dir_of_credentials(file: &Path) -> &Path {
    match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Whether `a` and `b` name one directory: compared once resolved (`../sd`
/// and `/tmp/sd`), or as written when either does not exist.
pub(crate) fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// Fails unless an `aegis up` runs with its state in `dir`.
///
/// # Errors
/// [`no_showcase_in`] when none does.
pub(crate) fn showcase_running_in(dir: &Path) -> anyhow::Result<()> {
    if crate::up::remote::Remote::new(dir).up_running() {
        Ok(())
    } else {
        Err(no_showcase_in(dir))
    }
}

/// The NATS URLs of the `aegis up` running with its state in `dir`.
///
/// # Errors
/// [`NoShowcase`] when none runs there, or it runs but has not written
/// them yet (still starting: no other URL is tried meanwhile, since the
/// default one may be another showcase's).
pub(crate) fn showcase_nats_url_in(dir: &Path) -> anyhow::Result<String> {
    showcase_running_in(dir)?;
    crate::up::credentials::read_nats_url(dir).ok_or_else(|| starting_in(dir))
}

/// Whether the command line `argv` gives the `--nats-url` flag (`--nats-url
/// URL` or `--nats-url=URL`), whatever its value: clap folds the flag,
/// `AEGIS_NATS_URL` and the default into one value, and so cannot tell an
/// exported variable, or the default URL given explicitly, from the flag.
fn url_flag_in(argv: impl IntoIterator<Item = OsString>) -> bool {
    argv.into_iter().any(|a| {
        a.to_str()
            .is_some_and(|a| a == "--nats-url" || a.starts_with("--nats-url="))
    })
}

/// Whether this process's command line gives the `--nats-url` flag (else
/// a `--nats-url` value is `AEGIS_NATS_URL`'s or the default).
pub(crate) fn url_flag_given() -> bool {
    url_flag_in(std::env::args_os())
}

/// The parser of every `--timeout-ms`: at least 1 ms (no request is
/// answered in no time, and the error a 0 ends in blames NATS), at most
/// ten minutes.
pub(crate) fn timeout_ms() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=600_000)
}

impl ConnectArgs {
    /// Whether a NATS URL is given that beats a showcase's nodes: the
    /// `--nats-url` flag, whatever its value (the default URL too), or,
    /// without `--state-dir`, an `AEGIS_NATS_URL` other than the default
    /// (with it, an explicit flag beats a variable exported for other uses).
    fn url_given(&self) -> bool {
        self.url_given_with(self.state_dir.is_some())
    }

    /// [`url_given`](Self::url_given), with `state_dir_given` saying whether
    /// a state directory was given, here or elsewhere on the command line
    /// (`aegis chaos --state-dir DIR ACTION`).
    pub(crate) fn url_given_with(&self, state_dir_given: bool) -> bool {
        url_flag_given()
            || (!state_dir_given
                && self.connection.nats_url != aegis_monitor::config::DEFAULT_NATS_URL)
    }

    /// The URLs to connect to: `--state-dir`'s nodes unless a URL is given
    /// ([`url_given`](Self::url_given)); else as given.
    ///
    /// # Errors
    /// [`NoShowcase`] when `--state-dir` names no running showcase, or one
    /// still starting whose nodes are needed.
    fn state_dir_url(&self) -> anyhow::Result<Option<String>> {
        let Some(dir) = &self.state_dir else {
            return Ok(None);
        };
        if self.url_given() {
            showcase_running_in(dir)?;
            Ok(None)
        } else {
            showcase_nats_url_in(dir).map(Some)
        }
    }

    /// Connects with file < environment < flags precedence.
    ///
    /// # Errors
    /// Invalid configuration, no reachable server, or credentials the
    /// server refuses.
    pub async fn connect(&self) -> anyhow::Result<Connection> {
        self.connect_with(|_| {}).await
    }

    /// Connects like [`connect`](Self::connect), as the showcase's operator
    /// when no NATS credentials are configured and a credentials file of
    /// `aegis up` is named (`--credentials`) or found at
    /// `.aegis/credentials`: what `aegis call`, `status`, `traffic` and `chaos` do, so
    /// they work next to a running showcase without exporting secrets.
    ///
    /// # Errors
    /// As [`connect`](Self::connect); also an unreadable credentials file.
    pub async fn connect_as_operator(&self) -> anyhow::Result<Connection> {
        self.connect_as_operator_with(|_| {}).await
    }

    /// [`connect_as_operator`](Self::connect_as_operator) with `adjust`
    /// applied to the configuration (`aegis init` sets the replicas).
    ///
    /// # Errors
    /// As [`connect_as_operator`](Self::connect_as_operator).
    pub async fn connect_as_operator_with(
        &self,
        adjust: impl FnOnce(&mut aegis_sdk::AegisConfig) + Send + 'static,
    ) -> anyhow::Result<Connection> {
        let dir_url = self.state_dir_url()?;
        let file = self.credentials_file();
        // No URL given: the running showcase's nodes, all of them, from
        // its state directory (named, or the one the credentials are in;
        // with only the default, the tools fail while its first node is
        // down).
        let showcase_url = match &self.state_dir {
            Some(_) => dir_url,
            None => file.as_deref().and_then(showcase_nats_url),
        };
        let mut connection = self.connection.clone();
        let url_given = self.url_given();
        // A showcase's credentials file with no nodes written beside it: its
        // `aegis up` still starting says so (as `--state-dir` does; the
        // default URL may be another showcase's). With none running there,
        // the default URL is tried, but a failure there is blamed on the
        // showcase that stopped, not on a port it may never have used.
        let stopped = match (&showcase_url, &file) {
            (None, Some(path)) if !url_given => {
                let dir = dir_of_credentials(path);
                if crate::up::remote::Remote::new(dir).up_running() {
                    return Err(starting_in(dir));
                }
                Some(dir.to_path_buf())
            }
            _ => None,
        };
        if !url_given && let Some(url) = showcase_url {
            connection.nats_url = url;
        }
        let (operator, tls_ca) = match &file {
            // A file given by name must be one; the default one found in
            // the working directory is used only when it is.
            Some(path) if self.credentials.is_some() || self.state_dir.is_some() => (
                Some(read_operator(path)?),
                crate::up::credentials::read_tls_ca(path)?,
            ),
            Some(path) => (
                crate::up::credentials::read_operator(path)?,
                crate::up::credentials::read_tls_ca(path)?,
            ),
            None => (None, None),
        };
        let mut config = connection
            .load(adjust)
            .context("loading the NATS configuration")?;
        let n = &mut config.nats;
        let none_given = n.user.is_none()
            && n.token.is_none()
            && n.nkey_seed.is_none()
            && n.creds_file.is_none()
            && !n.url_credentials();
        // Whose credentials these are, for the error when they are refused.
        let used = match operator {
            Some((user, password)) if none_given => {
                n.inbox_prefix = Some(crate::permissions::inbox_prefix(&user));
                n.user = Some(user);
                n.password = Some(aegis_sdk::Secret::new(password));
                UsedCredentials::Operator(file.unwrap_or_default())
            }
            _ if none_given => UsedCredentials::None,
            _ => UsedCredentials::Configured,
        };
        if n.tls_ca.is_none() {
            n.tls_ca = tls_ca;
        }
        // A refusal is said in the tools' terms; nothing waits on it (the
        // same credentials would be refused again).
        Connection::connect(config).await.map_err(|e| match e {
            aegis_sdk::ConnectError::Refused {
                servers,
                who,
                source,
            } => used.refused(&servers, &who, source, self.state_dir.as_deref()),
            e => {
                let e = connect_error(e, &connection.nats_url);
                match &stopped {
                    Some(dir) => e.context(no_showcase_in(dir).to_string()),
                    None => e,
                }
            }
        })
    }

    /// The credentials file of `aegis up` to connect as its operator with:
    /// `--credentials`, else the one in `--state-dir` when it exists (with
    /// `--state-dir`, never another: `.aegis` may be another showcase's),
    /// else `.aegis/credentials` when it exists.
    pub fn credentials_file(&self) -> Option<PathBuf> {
        if let Some(file) = &self.credentials {
            return Some(file.clone());
        }
        let file = match &self.state_dir {
            Some(dir) => dir.join("credentials"),
            None => PathBuf::from(DEFAULT_PATH),
        };
        file.is_file().then_some(file)
    }

    /// Connects like [`connect`](Self::connect), with `adjust` applied to
    /// the configuration last.
    ///
    /// # Errors
    /// Invalid configuration, no reachable server, or credentials the
    /// server refuses.
    pub async fn connect_with(
        &self,
        adjust: impl FnOnce(&mut aegis_sdk::AegisConfig) + Send + 'static,
    ) -> anyhow::Result<Connection> {
        // `--state-dir`: that showcase's nodes (unless a URL is given) and
        // TLS CA, with the credentials configured, not its operator's.
        let mut connection = self.connection.clone();
        let mut tls_ca = None;
        if let Some(url) = self.state_dir_url()? {
            connection.nats_url = url;
        }
        if let Some(dir) = &self.state_dir {
            let file = dir.join("credentials");
            // Written before its NATS starts; missing only very early.
            if !file.is_file() {
                return Err(anyhow::Error::new(NoShowcase {
                    dir: dir.clone(),
                    starting: true,
                    stale: None,
                }));
            }
            tls_ca = crate::up::credentials::read_tls_ca(&file)?;
        }
        let mut config = connection
            .load(adjust)
            .context("loading the NATS configuration")?;
        if config.nats.tls_ca.is_none() {
            config.nats.tls_ca = tls_ca;
        }
        // A refusal is said in this command's terms: it takes no
        // operator's credentials (`--credentials`, `--state-dir`'s).
        Connection::connect(config).await.map_err(|e| match e {
            aegis_sdk::ConnectError::Refused {
                servers,
                who,
                source,
            } => anyhow::anyhow!(
                "NATS at {servers} refused the credentials {who} ({}): `aegis service` \
                 connects with the NATS credentials configured, not an operator's: set \
                 AEGIS_NATS_USER and AEGIS_NATS_PASSWORD (or AEGIS_NATS_TOKEN, \
                 AEGIS_NATS_NKEY_SEED, AEGIS_NATS_CREDS, --nats-creds, or a --config file) to \
                 a user this server knows (`aegis up` writes its users' passwords to \
                 <state-dir>/credentials; --state-dir gives only its nodes and TLS CA)",
                source.kind()
            ),
            e => connect_error(e, &connection.nats_url),
        })
    }
}

/// The operator's user and password from a credentials file of `aegis up`.
///
/// # Errors
/// When it cannot be read, or is no such file: it names neither (another
/// file of the state directory, say), and connecting without them would
/// end in a refusal that does not name the file.
fn read_operator(path: &std::path::Path) -> anyhow::Result<(String, String)> {
    crate::up::credentials::read_operator(path)?.with_context(|| {
        format!(
            "{} is not a credentials file of `aegis up`: it has no AEGIS_NATS_USER and \
             AEGIS_NATS_PASSWORD lines (the operator's user and password, which `aegis up` \
             writes to <state-dir>/credentials)",
            path.display()
        )
    })
}

/// Checks a service name given on the command line, before anything is
/// sent; a name refused only for its capitals offers its lowercase form
/// (`Order-Service`: did you mean order-service?).
///
/// # Errors
/// The name's [`NameError`](aegis_sdk::contracts::names::NameError).
pub(crate) fn check_service_name(name: &str) -> anyhow::Result<()> {
    use aegis_sdk::contracts::names::validate_service_name;
    let Err(e) = validate_service_name(name) else {
        return Ok(());
    };
    let lower = name.to_ascii_lowercase();
    if lower != name && validate_service_name(&lower).is_ok() {
        anyhow::bail!("{e}; did you mean {lower}?");
    }
    Err(e.into())
}

/// The SDK's connection error, told where when it does not say itself.
fn connect_error(error: aegis_sdk::ConnectError, url: &str) -> anyhow::Error {
    // The SDK's error names the servers when none answered; the others are
    // told where. The SDK's error stays in the chain: `service` and `init`
    // wait on it (`service::transient`). The tools say where servers are
    // set in their own terms (`hint`: --nats-url), not the SDK's for a
    // program of its own.
    match error {
        aegis_sdk::ConnectError::Connect {
            servers, source, ..
        } => anyhow::Error::new(aegis_sdk::ConnectError::Connect {
            servers,
            default: false,
            source,
        }),
        // A password the URL may carry is never printed.
        other => anyhow::Error::new(other).context(format!(
            "connecting to NATS at {}",
            crate::up::redacted(url)
        )),
    }
}

/// Where `aegis up` keeps the operator's credentials, for the errors of a
/// refused operator's tool: in `state_dir`'s, when one was given.
fn where_credentials(state_dir: Option<&std::path::Path>) -> String {
    match state_dir {
        Some(dir) => format!(
            "The operator's are in {}, which the `aegis up` with state there wrote",
            dir.join("credentials").display()
        ),
        None => "The operator's are in the credentials file `aegis up` writes in its state \
                 directory: pass --credentials .aegis/credentials from the directory it was \
                 started in, or --credentials <state-dir>/credentials when it was started with \
                 --state-dir <state-dir>"
            .to_owned(),
    }
}

/// Which credentials an operator's tool connected with.
enum UsedCredentials {
    /// None: no NATS credentials configured, no showcase credentials file.
    None,
    /// The operator's, from this credentials file of `aegis up`.
    Operator(PathBuf),
    /// The NATS credentials configured (environment, config file, flags).
    Configured,
}

impl UsedCredentials {
    /// The error when NATS at `servers` refused them (`source`, the
    /// server's words): what was refused and what to do, in the tools'
    /// terms (the SDK's own error speaks to any program).
    fn refused(
        &self,
        servers: &str,
        who: &str,
        source: async_nats::ConnectError,
        state_dir: Option<&std::path::Path>,
    ) -> anyhow::Error {
        // The kind alone: the error's text repeats it.
        let kind = source.kind();
        let where_credentials = where_credentials(state_dir);
        let what = match self {
            UsedCredentials::None => format!(
                "NATS at {servers} refused a client without credentials ({kind}): none were \
                 given, and this directory has no {DEFAULT_PATH}. {where_credentials}"
            ),
            UsedCredentials::Operator(file) => format!(
                "NATS at {servers} refused the operator's credentials from {} ({kind}): \
                 that file is not the one of the showcase running this NATS. {where_credentials}",
                file.display()
            ),
            UsedCredentials::Configured => format!(
                "NATS at {servers} refused the credentials {who} ({kind}): set \
                 AEGIS_NATS_USER and AEGIS_NATS_PASSWORD (or AEGIS_NATS_TOKEN, \
                 AEGIS_NATS_NKEY_SEED, AEGIS_NATS_CREDS, --nats-creds) to a user this server \
                 knows, or unset them to connect as a showcase's operator. {where_credentials}"
            ),
        };
        anyhow::anyhow!(what)
    }
}

/// The NATS URLs a running `aegis up` wrote beside its `credentials` file.
fn showcase_nats_url(credentials: &std::path::Path) -> Option<String> {
    crate::up::credentials::read_nats_url(credentials.parent()?)
}

/// Parses arguments, installs tracing and runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Long-running commands say what they do; one-shot commands print only
    // their answer (and real problems).
    let default_filter = match cli.command {
        Command::Up(_) | Command::Api(_) | Command::Service(_) => {
            "warn,aegis=info,aegis_sdk=info,aegis_monitor=info,aegis_trading=info"
        }
        // async-nats logs a refused or failed connection itself, at ERROR;
        // these commands say it once, in their own words.
        _ => "error,async_nats=off",
    };
    let filter =
        EnvFilter::try_from_env("AEGIS_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter));
    // WARN/ERROR lines of a service instance also go to AEGIS_LOG once it is
    // connected (`service::run` attaches the forwarder), so the monitor
    // shows them. Only `aegis service` forwards: the other commands attach
    // nothing, and a layer in them would forward the lines of the services
    // they run in-process (`aegis bench`'s workers run ten, with hundreds
    // of registrations) under those services.
    let (nats_logs, forwarder) = aegis_sdk::telemetry::log_layer::NatsLogLayer::new();
    let nats_logs = matches!(cli.command, Command::Service(_))
        .then(|| nats_logs.with_filter(tracing_subscriber::filter::LevelFilter::WARN));
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                // Colour for a person at a terminal, none in log files
                // (`aegis up` sends its children's output to files).
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_filter(filter),
        )
        .with(nats_logs)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A closed stdout (`aegis call … | head`) ends the command quietly:
    // the print's panic unwinds, dropping what the command started, and is
    // not reported (see `closed_pipe`).
    closed_pipe::silence_cut_off_prints();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(run(cli, forwarder))
    }));
    match outcome {
        Err(_) | Ok(Ok(_)) if closed_pipe::print_cut_off() => {
            ExitCode::from(closed_pipe::EXIT_STATUS)
        }
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Ok(code)) => code,
        Ok(Err(e)) if closed_pipe::caused(&e) => ExitCode::from(closed_pipe::EXIT_STATUS),
        Ok(Err(e)) => {
            // Not `eprintln!`: with stderr gone too it would panic.
            let _ = writeln!(std::io::stderr(), "error: {}{}", error_line(&e), hint(&e));
            ExitCode::FAILURE
        }
    }
}

/// Runs the parsed command; `logs` is the forwarder of the log layer
/// `main` installed, which a service instance attaches once connected.
async fn run(cli: Cli, logs: LogForwarder) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Up(args) => {
            let state_dir = args.state_dir.clone();
            let shutdown = shutdown::on_signals_then(move || up::supervisor::kill_all(&state_dir));
            up::run(args, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Api(args) => {
            aegis_monitor::run(*args, shutdown::on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Service(args) => {
            service::run(args, shutdown::on_signals(), logs).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(args) => {
            status::run(args, shutdown::on_signals()).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chaos(args) => {
            chaos::run(args).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Call(args) => call::run(args).await,
        Command::Command(args) => command::run(args, shutdown::on_signals()).await,
        Command::Events(args) => events::run(args, shutdown::on_signals()).await,
        Command::Consumers(args) => crate::consumers::run(args).await,
        Command::Traffic(args) => traffic::run(args, shutdown::on_signals()).await,
        Command::NatsConfig(args) => {
            nats_config::run(&args);
            Ok(ExitCode::SUCCESS)
        }
        Command::Init(args) => Ok(if init::run(args).await? {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(init::MISMATCH_EXIT)
        }),
        Command::Bench { which } => {
            // Interrupted (Ctrl-C, SIGTERM from `timeout` or a cancelled
            // job), the benchmark is dropped: what it started (its
            // nats-server and directories, `aegis up`, worker processes)
            // is stopped by its owners' drops instead of being left running.
            let shutdown = shutdown::on_signals();
            let bench = async {
                anyhow::Ok(match which {
                    BenchCommand::Rpc(a) => {
                        let check = a.check;
                        (bench::rpc::run(a).await?.passed(), check)
                    }
                    BenchCommand::Events(a) => {
                        let check = a.check;
                        (bench::events::run(a).await?.passed(), check)
                    }
                    BenchCommand::Failover(a) => {
                        let check = a.check;
                        (bench::failover::run(a).await?.passed(), check)
                    }
                    // Losing an order is never a mere number: always checked.
                    BenchCommand::Chaos(a) => (bench::chaos::run(a).await?.passed(), true),
                    BenchCommand::Scale(a) => {
                        let check = a.check;
                        // A child role reports nothing itself.
                        let passed = bench::scale::run(a).await?.is_none_or(|r| r.passed());
                        (passed, check)
                    }
                })
            };
            let (passed, check) = tokio::select! {
                done = bench => done?,
                () = shutdown.cancelled() => {
                    eprintln!("benchmark interrupted: no results; what it started is stopped");
                    return Ok(ExitCode::from(130));
                }
            };
            Ok(if check && !passed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// What to do about `error`, when the CLI knows: no NATS answered.
fn hint(error: &anyhow::Error) -> &'static str {
    let unreachable = error.chain().any(|cause| {
        matches!(
            cause.downcast_ref::<aegis_sdk::ConnectError>(),
            Some(aegis_sdk::ConnectError::Connect { source, .. })
                if matches!(
                    source.kind(),
                    async_nats::ConnectErrorKind::Io | async_nats::ConnectErrorKind::TimedOut
                )
        )
    });
    if unreachable {
        ". Is a NATS server running there (`aegis up` starts one)? \
         Otherwise point --nats-url (or AEGIS_NATS_URL) at yours"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_name_in_capitals_offers_its_lowercase_form() {
        assert!(check_service_name("order-service").is_ok());
        let said = check_service_name("Order-Service").unwrap_err().to_string();
        assert!(
            said.starts_with("service name must be lowercase: 'O' at position 0")
                && said.ends_with("; did you mean order-service?"),
            "{said}"
        );
        // Not a name in lowercase either: no offer.
        let said = check_service_name("Order Service").unwrap_err().to_string();
        assert!(!said.contains("did you mean"), "{said}");
    }
    use clap::CommandFactory;

    #[test]
    fn an_error_is_said_once_with_each_cause_that_adds_something() {
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let repeated = anyhow::Error::new(io)
            .context(format!(
                "IO error: {}",
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
            ))
            .context("cannot connect to NATS at nats://127.0.0.1:4222");
        assert_eq!(
            error_line(&repeated),
            "cannot connect to NATS at nats://127.0.0.1:4222: IO error: connection refused"
        );
        let plain = anyhow::anyhow!("the file is missing").context("loading the configuration");
        assert_eq!(
            error_line(&plain),
            "loading the configuration: the file is missing"
        );
    }

    /// Clap checks a command's definition only when that subcommand is
    /// parsed; this checks every one (e.g. two flattened argument groups
    /// with the same id).
    #[test]
    fn every_subcommand_is_well_formed() {
        Cli::command().debug_assert();
    }

    /// Every `--timeout-ms` refuses 0 when parsed: no request can be
    /// answered in no time, and the error it would end in blames NATS.
    #[test]
    fn no_timeout_ms_takes_zero() {
        fn visit(cmd: &clap::Command, path: &mut Vec<String>, found: &mut Vec<Vec<String>>) {
            if cmd
                .get_arguments()
                .any(|a| a.get_long() == Some("timeout-ms"))
            {
                // With a value for each required positional argument, so
                // the parse gets as far as the flag.
                let mut argv = path.clone();
                argv.extend(
                    cmd.get_positionals()
                        .filter(|a| a.is_required_set())
                        .map(|_| "x".to_owned()),
                );
                found.push(argv);
            }
            for sub in cmd.get_subcommands() {
                path.push(sub.get_name().to_owned());
                visit(sub, path, found);
                path.pop();
            }
        }
        let mut found = Vec::new();
        visit(&Cli::command(), &mut vec!["aegis".to_owned()], &mut found);
        assert!(found.iter().any(|p| p[1] == "call"), "{found:?}");
        for mut argv in found {
            argv.extend(["--timeout-ms".to_owned(), "0".to_owned()]);
            let err = Cli::try_parse_from(&argv).expect_err(&argv.join(" "));
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{}: {err}",
                argv.join(" ")
            );
        }
    }

    #[test]
    fn connecting_commands_share_the_monitor_flags() {
        let creds = tempfile::NamedTempFile::new().unwrap();
        let cli = Cli::try_parse_from([
            "aegis".as_ref(),
            "service".as_ref(),
            "echo".as_ref(),
            "--nats-url".as_ref(),
            "nats://a:4222,nats://b:4222,".as_ref(),
            "--nats-creds".as_ref(),
            creds.path().as_os_str(),
        ])
        .unwrap();
        let Command::Service(args) = cli.command else {
            panic!("parsed as another command");
        };
        let config = args.nats.connection.load(|_| {}).unwrap();
        assert_eq!(config.nats.servers, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.nats.creds_file.as_deref(), Some(creds.path()));
    }

    /// The help of `name` under subcommand `command`, on one line.
    fn help_of(command: &str, name: &str) -> String {
        use clap::CommandFactory;
        let cli = Cli::command();
        let sub = cli.find_subcommand(command).unwrap();
        let arg = sub
            .get_arguments()
            .find(|a| a.get_id() == name)
            .unwrap_or_else(|| panic!("{command} takes no {name}"));
        let help = arg.get_long_help().or(arg.get_help()).unwrap().to_string();
        help.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn the_help_of_state_dir_says_what_each_command_takes_from_it() {
        let service = help_of("service", "state_dir");
        assert!(!service.contains("operator's credentials"), "{service}");
        assert!(service.contains("TLS CA"), "{service}");
        let credentials = help_of("service", "credentials");
        assert!(
            credentials.contains("not used by `aegis service`"),
            "{credentials}"
        );
        for tool in ["status", "call", "traffic"] {
            let help = help_of(tool, "state_dir");
            assert!(help.contains("operator's credentials"), "{tool}: {help}");
        }
    }

    #[test]
    fn only_the_flag_beats_a_state_directory_not_aegis_nats_url() {
        let argv = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        let url = "nats://elsewhere:4222";
        // No flag: the value is AEGIS_NATS_URL's or the default.
        assert!(!url_flag_in(argv(&["aegis", "status", "--state-dir", "d"])));
        // The flag, in either form, whatever its value.
        assert!(url_flag_in(argv(&["aegis", "status", "--nats-url", url])));
        let joined = format!("--nats-url={url}");
        assert!(url_flag_in(argv(&["aegis", "status", &joined])));
        assert!(url_flag_in(argv(&[
            "aegis",
            "status",
            "--nats-url",
            aegis_monitor::config::DEFAULT_NATS_URL
        ])));
    }

    #[test]
    fn a_state_directory_is_running_starting_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let err = showcase_nats_url_in(dir.path()).unwrap_err().to_string();
        assert!(
            err.starts_with("no `aegis up` is running with state in"),
            "{err}"
        );
        crate::up::supervisor::write_pid(&dir.path().join("up.pid"), std::process::id()).unwrap();
        let err = showcase_nats_url_in(dir.path()).unwrap_err();
        assert!(crate::service::transient(&err), "a service waits on it");
        assert!(err.to_string().contains("is still starting"), "{err}");
        crate::up::credentials::write_nats_url(dir.path(), "nats://127.0.0.1:4333").unwrap();
        assert_eq!(
            showcase_nats_url_in(dir.path()).unwrap(),
            "nats://127.0.0.1:4333"
        );
    }
}
