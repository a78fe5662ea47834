//! `aegis service <kind>`: runs one service instance in this process until
//! Ctrl-C / SIGTERM, then stops it gracefully (resign, deregister, finish
//! in-flight work, drain). `aegis up` and the Helm chart run these. When its
//! NATS connection is closed for good (`nats.reconnect.max_reconnects` used
//! up; never by default) it stops the instance and exits with status 1, so
//! that it is restarted instead of staying up disconnected.
//!
//! The stop finishes within the service's shutdown timeout (10 s) whatever
//! the state of NATS: each step that needs the server is bounded, and what
//! could not be done is logged once with what happens instead (a record that
//! could not be removed expires with its TTL; a lease that could not be
//! handed over lapses). A second Ctrl-C exits at once (a second SIGTERM
//! does not: systemd and a dying parent send it more than once).

use aegis_sdk::{
    rpc::server::ServiceError,
    startup::{StartFailure, retry},
    telemetry::log_layer::LogForwarder,
};
use aegis_trading::{Running, TradingError, order, pricing, risk};
use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::cli::{ConnectArgs, NoShowcase};

/// Which service to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ServiceKind {
    /// order-service: sticky single-active order book (group `default`).
    Order,
    /// pricing-service: load-balanced quotes.
    Pricing,
    /// risk-service: load-balanced pre-trade risk checks.
    Risk,
    /// echo-service: echoes requests; the smallest Aegis service (demos, benchmarks).
    Echo,
}

/// Options of `aegis service`.
///
/// The connection flags are the operator's tools' (`ConnectArgs`), but a
/// service takes no operator's credentials: their help says so here.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("state_dir", |a| a.help(STATE_DIR_HELP).long_help(STATE_DIR_HELP)),
    mut_arg("credentials", |a| a.help(CREDENTIALS_HELP).long_help(CREDENTIALS_HELP)),
)]
pub struct ServiceArgs {
    /// Which service to run.
    #[arg(value_enum)]
    pub kind: ServiceKind,
    /// Instance id, unique per process (in Kubernetes the pod name);
    /// default: host name plus a short random suffix.
    #[arg(long, env = "AEGIS_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// For `echo`: run as a sticky single-active service in this group.
    #[arg(long)]
    pub single_active: Option<String>,
    /// How long to keep trying to start while NATS, JetStream or a bucket
    /// is not ready yet (a cluster electing its leaders, a stream being
    /// created by another instance, the `aegis up` of --state-dir not
    /// running or still starting), e.g. `60s`; `0s` fails at once.
    #[arg(long, env = "AEGIS_STARTUP_TIMEOUT", default_value = "60s", value_parser = aegis_monitor::config::duration_flag)]
    pub startup_timeout: std::time::Duration,
    /// Serve `GET /healthz` (liveness) and `GET /readyz` (readiness:
    /// connected to NATS and registered) on this address, e.g.
    /// `0.0.0.0:8081`; bound before start-up, so liveness holds while the
    /// instance waits for NATS.
    #[arg(long, env = "AEGIS_HEALTH_LISTEN")]
    pub health_listen: Option<std::net::SocketAddr>,
    /// For `order`: how long a recorded order whose `create_order` failed
    /// stays pending, waiting for a retry with the same client order id,
    /// before it is rejected as EXPIRED, e.g. `2m` (default 30s; at least
    /// 4s, twice the order service's 2 s call timeout).
    #[arg(long, env = "AEGIS_ORDER_EXPIRE_AFTER", value_parser = expire_after)]
    pub expire_after: Option<std::time::Duration>,
    /// For `order`: how long a settled order (filled or rejected, its
    /// event published) stays in the `orders` bucket, readable and listed,
    /// before the server removes it, e.g. `24h` (default 6h; whole
    /// seconds). A client order id is idempotent for that long plus
    /// --expire-after. The bucket is bounded (256 MiB): at a steady rate
    /// it holds about this long times the rate times 0.82 KiB, and refuses
    /// orders when full.
    #[arg(long, env = "AEGIS_ORDER_KEEP_SETTLED", value_parser = keep_settled)]
    pub keep_settled: Option<std::time::Duration>,
    /// For `risk`: how long an assessment waits for this instance's
    /// positions to include the fill it names before it answers "catching
    /// up; retry" (SERVICE_UNAVAILABLE), e.g. `1s` (default 500ms; below
    /// 2s, the order service's call timeout: a longer wait would outlast
    /// the order service's call, and its caller would see "risk-service
    /// is unavailable" instead).
    #[arg(long, env = "AEGIS_RISK_CATCH_UP_TIMEOUT", value_parser = catch_up_timeout)]
    pub catch_up_timeout: Option<std::time::Duration>,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// `--state-dir` of `aegis service`.
const STATE_DIR_HELP: &str = "The state directory of the `aegis up` whose NATS to join, as it \
    was started with (`aegis up --state-dir DIR`): its nodes' URLs and TLS CA only; the \
    service connects with the NATS credentials configured (AEGIS_NATS_USER and \
    AEGIS_NATS_PASSWORD, ...), never its operator's. `--nats-url` beats its nodes; \
    AEGIS_NATS_URL does not. While no `aegis up` runs there, or it is still starting its \
    NATS, the service waits (--startup-timeout).";

/// `--credentials` of `aegis service`.
const CREDENTIALS_HELP: &str = "An operator's credentials file of `aegis up`: not used by \
    `aegis service`, which connects with the NATS credentials configured (AEGIS_NATS_USER \
    and AEGIS_NATS_PASSWORD, AEGIS_NATS_TOKEN, AEGIS_NATS_NKEY_SEED, AEGIS_NATS_CREDS, \
    --nats-creds or --config).";

impl ServiceArgs {
    /// Refuses an option of one example service given to another (on the
    /// command line: the environment variables are per service, so one set
    /// for every process of a machine does not stop the others).
    fn check_kind_options(&self) -> anyhow::Result<()> {
        let given = [
            (
                "--expire-after",
                "AEGIS_ORDER_EXPIRE_AFTER",
                ServiceKind::Order,
                self.expire_after.is_some(),
            ),
            (
                "--keep-settled",
                "AEGIS_ORDER_KEEP_SETTLED",
                ServiceKind::Order,
                self.keep_settled.is_some(),
            ),
            (
                "--catch-up-timeout",
                "AEGIS_RISK_CATCH_UP_TIMEOUT",
                ServiceKind::Risk,
                self.catch_up_timeout.is_some(),
            ),
        ];
        for (flag, env, kind, set) in given {
            if set && self.kind != kind && std::env::var_os(env).is_none() {
                anyhow::bail!(
                    "{flag} is only for `aegis service {}`, not {}",
                    kind.name(),
                    self.kind.name()
                );
            }
        }
        Ok(())
    }
}

impl ServiceKind {
    /// The name `aegis service` takes it by.
    fn name(self) -> &'static str {
        match self {
            Self::Order => "order",
            Self::Pricing => "pricing",
            Self::Risk => "risk",
            Self::Echo => "echo",
        }
    }
}

/// `--expire-after`: at least twice the order service's call timeout (a
/// request still at work is not raced), said in the flag's terms.
fn expire_after(s: &str) -> Result<std::time::Duration, String> {
    let least = order::OrderOptions::default().call_timeout * 2;
    match aegis_monitor::config::duration_flag(s)? {
        d if d < least => Err(format!(
            "must be at least {} (twice the order service's call timeout)",
            humantime::format_duration(least)
        )),
        d => Ok(d),
    }
}

/// `--keep-settled`: at least a second, the server's smallest expiry.
fn keep_settled(s: &str) -> Result<std::time::Duration, String> {
    match aegis_monitor::config::duration_flag(s)? {
        d if d < std::time::Duration::from_secs(1) => {
            Err("must be at least 1s (the server's smallest expiry)".to_owned())
        }
        d => Ok(d),
    }
}

/// `--catch-up-timeout`: greater than zero, and below the order service's
/// call timeout — order-service waits that long for risk's answer, so a
/// longer catch-up wait would turn "catching up; retry" into "risk-service
/// is unavailable" (and a verdict nobody waits for) — said in the flag's
/// terms.
fn catch_up_timeout(s: &str) -> Result<std::time::Duration, String> {
    let call = order::OrderOptions::default().call_timeout;
    match aegis_monitor::config::duration_flag_any_length(s)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d if d >= call => Err(format!(
            "must be below {} (the order service's call timeout: it waits that long for \
             risk's answer, so a longer wait turns \"catching up; retry\" into \"risk-service \
             is unavailable\")",
            humantime::format_duration(call)
        )),
        d => Ok(d),
    }
}

/// Runs the instance until `shutdown`. Once it is connected, `logs` (the
/// forwarder of the binary's log layer) sends this process's WARN/ERROR
/// lines to NATS under the instance's name.
///
/// Start-up waits for what is not ready yet — no reachable server, a
/// JetStream still electing its leaders, a bucket another instance is
/// creating — retrying for up to `--startup-timeout`; a configuration that
/// cannot work fails at once.
///
/// # Errors
/// When the configuration is invalid, the service could not start within the
/// start-up timeout, it cannot stop cleanly, or its NATS connection is
/// closed for good (`nats.reconnect.max_reconnects` used up: the instance is
/// stopped and the error says so).
pub async fn run(
    args: ServiceArgs,
    shutdown: CancellationToken,
    logs: LogForwarder,
) -> anyhow::Result<()> {
    args.check_kind_options()?;
    let probes = aegis_sdk::probes::Probes::new();
    if let Some(addr) = args.health_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the health listener to {addr} (--health-listen)"))?;
        let serving = probes.clone();
        tokio::spawn(async move {
            if let Err(e) = serving.serve(listener).await {
                tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "the health listener stopped");
            }
        });
    }
    let started = retry(args.startup_timeout, &shutdown, || start(&args), transient).await;
    let (conn, running) = match started {
        Ok(Some(started)) => started,
        Ok(None) => return Ok(()),
        Err(StartFailure::Permanent(e)) => return Err(e),
        Err(StartFailure::TimedOut { last, attempts }) => {
            return Err(last.context(format!(
                "not started within the start-up timeout ({}; {attempts} attempts)",
                humantime::format_duration(args.startup_timeout)
            )));
        }
    };
    let sdk_service = running.service();
    let (service, instance) = (
        sdk_service.name().to_owned(),
        sdk_service.instance_id().to_owned(),
    );
    probes.running(&conn, sdk_service.registration().map(|r| r.handle()));
    logs.attach(&conn, &service, &instance);
    eprintln!("{service} instance {instance} started; Ctrl-C or SIGTERM stops it gracefully");
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = closed_for_good(&conn) => {
            // Nothing on this connection works again: stop what can be
            // stopped and exit non-zero, so that whatever runs the process
            // (Kubernetes, systemd, `aegis up`, a shell loop) starts it
            // anew. /healthz keeps failing until then: no `stopping()`.
            let max = conn.config().nats.reconnect.max_reconnects.unwrap_or_default();
            let stopped = settle(running.shutdown().await);
            if let Err(e) = stopped {
                tracing::warn!(error = %format!("{e:#}"), "the instance did not stop cleanly");
            }
            anyhow::bail!(
                "{service} instance {instance}: its NATS connection is closed for good ({max} \
                 reconnect attempts in a row failed, nats.reconnect.max_reconnects) and never \
                 reconnects, even once the server is back; exiting so that it is restarted \
                 (leave max_reconnects unset to reconnect forever)"
            );
        }
    }
    probes.stopping();
    let stopped = settle(running.shutdown().await);
    conn.drain().await.ok();
    stopped
}

/// How often [`closed_for_good`] looks at the connection.
const CLOSED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

/// Returns once `conn` is closed for good: one of its clients used up
/// `nats.reconnect.max_reconnects` and tries no more
/// ([`aegis_sdk::Connection::is_closed_for_good`], a flag the SDK sets, so
/// it is looked at every [`CLOSED_POLL`]). Never, with the default of
/// reconnecting forever.
async fn closed_for_good(conn: &aegis_sdk::Connection) {
    if conn.config().nats.reconnect.max_reconnects.is_none() {
        return std::future::pending().await;
    }
    let mut tick = tokio::time::interval(CLOSED_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        if conn.is_closed_for_good() {
            return;
        }
    }
}

/// One attempt to connect and start the instance.
async fn start(args: &ServiceArgs) -> anyhow::Result<(aegis_sdk::Connection, Running)> {
    let conn = args.nats.connect().await.map_err(|e| {
        // Waited on (`transient`): say for what.
        match (&args.nats.state_dir, e.downcast_ref::<NoShowcase>()) {
            (Some(dir), Some(_)) => e.context(format!(
                "waiting for `aegis up` with state in {}",
                dir.display()
            )),
            _ => e,
        }
    })?;
    let id = args.instance_id.clone();
    let running = match args.kind {
        ServiceKind::Order => order::start(&conn, {
            let defaults = order::OrderOptions::default();
            order::OrderOptions {
                instance_id: id,
                expire_after: args.expire_after.unwrap_or(defaults.expire_after),
                keep_settled: args.keep_settled.unwrap_or(defaults.keep_settled),
                ..defaults
            }
        })
        .await
        .context("starting order-service")?,
        ServiceKind::Pricing => pricing::start(
            &conn,
            pricing::PricingOptions {
                instance_id: id,
                ..Default::default()
            },
        )
        .await
        .context("starting pricing-service")?,
        ServiceKind::Risk => risk::start(&conn, {
            let defaults = risk::RiskOptions::default();
            risk::RiskOptions {
                instance_id: id,
                catch_up_timeout: args.catch_up_timeout.unwrap_or(defaults.catch_up_timeout),
                ..defaults
            }
        })
        .await
        .context("starting risk-service")?,
        ServiceKind::Echo => {
            let mut builder = conn
                .service("echo-service", env!("CARGO_PKG_VERSION"))
                .description("Echoes its request back; the smallest Aegis service")
                .handler("echo", |body: serde_json::Value| async move { Ok(body) });
            if let Some(group) = &args.single_active {
                builder = builder.single_active(group.clone());
            }
            if let Some(id) = id {
                builder = builder.instance_id(id);
            }
            Running::from(builder.start().await.context("starting echo-service")?)
        }
    };
    Ok((conn, running))
}

/// Whether a start-up failure may pass by itself (something not ready yet)
/// rather than need a fix (a bad name, a bad option, a server too old).
pub(crate) fn transient(error: &anyhow::Error) -> bool {
    use aegis_sdk::ConnectError;
    for cause in error.chain() {
        // The `aegis up` of --state-dir not running yet, or starting.
        if cause.downcast_ref::<NoShowcase>().is_some() {
            return true;
        }
        if let Some(e) = cause.downcast_ref::<ConnectError>() {
            return e.is_transient();
        }
        if let Some(e) = cause.downcast_ref::<TradingError>() {
            return match e {
                TradingError::InvalidOptions(_) => false,
                TradingError::Service(s) => !permanent(s),
                _ => true,
            };
        }
        if let Some(e) = cause.downcast_ref::<ServiceError>() {
            return !permanent(e);
        }
    }
    false
}

fn permanent(e: &ServiceError) -> bool {
    use aegis_sdk::registry::RegistryError;
    match e {
        ServiceError::Registry(r) => {
            matches!(
                r,
                RegistryError::InvalidName(_)
                    | RegistryError::InvalidRecord(_)
                    | RegistryError::InvalidOptions(_)
                    | RegistryError::BucketUnusable { .. }
            ) || r.is_refused()
        }
        ServiceError::Nats(_) | ServiceError::Election(_) => false,
        _ => true,
    }
}

/// A stop whose only failure was the registry record's removal went as
/// well as it could: that was logged where it happened, with what happens
/// instead (the record expires with its TTL).
fn settle(result: Result<(), TradingError>) -> anyhow::Result<()> {
    match result {
        Ok(()) | Err(TradingError::Service(ServiceError::Registry(_))) => Ok(()),
        Err(TradingError::Service(e)) => Err(e).context("stopping the service"),
        Err(e) => Err(e).context("stopping the service"),
    }
}
