//! `aegis init`: creates every bucket and stream Aegis and the example
//! services use, with the replicas asked for, and checks the ones that
//! exist. `aegis up` and the Helm chart's install/upgrade Job run it.
//!
//! Why the services still create what is missing themselves: creating is
//! idempotent and uses the same settings as here, so a service started
//! before `aegis init` (a fresh local run, a test) works; what `init` adds
//! is the check. An existing stream is never changed behind an operator's
//! back by a service — but a stream with the wrong replica count (say R1
//! left from a single-node run, now on a 3-node cluster) loses data when
//! its one node dies, so `init` refuses it and names the fix: `--fix`
//! changes the replica count in place (JetStream copies the data to the new
//! peers while it keeps serving).

use std::time::Duration;

use aegis_contracts::subjects;
use anyhow::Context;
use clap::Args;

use crate::cli::ConnectArgs;

/// Options of `aegis init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Copies of every bucket and stream: 1 on a single node, 3 on a 3-node
    /// cluster.
    #[arg(long, env = "AEGIS_NATS_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// Change the replica count of existing buckets and streams that differ
    /// (safe while running: JetStream moves the data).
    #[arg(long)]
    pub fix: bool,
    /// How long to keep trying while NATS or JetStream is not ready yet
    /// (a cluster electing its meta leader), e.g. `60s`.
    #[arg(long, env = "AEGIS_STARTUP_TIMEOUT", default_value = "60s", value_parser = aegis_monitor::config::duration_flag)]
    pub startup_timeout: Duration,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// The streams behind everything `init` makes: Aegis's own, the monitor's
/// and the example services' buckets (`KV_` + bucket name).
fn expected_streams() -> Vec<String> {
    let buckets = [
        subjects::REGISTRY_BUCKET,
        subjects::ELECTIONS_BUCKET,
        subjects::DEFINITIONS_BUCKET,
        aegis_trading::order::ORDERS_BUCKET,
        aegis_trading::risk::RISK_LIMITS_BUCKET,
        aegis_trading::risk::RISK_POSITIONS_BUCKET,
    ];
    let streams = [
        subjects::EVENTS_STREAM,
        subjects::COMMANDS_STREAM,
        subjects::DEAD_LETTER_STREAM,
        subjects::METRICS_STREAM,
        subjects::LOG_STREAM,
    ];
    buckets
        .iter()
        .map(|b| format!("KV_{b}"))
        .chain(streams.iter().map(|s| (*s).to_owned()))
        .collect()
}

/// Runs `aegis init`: creates what is missing, then checks every stream's
/// replicas and limits; `Ok(false)` when a check failed (printed).
///
/// # Errors
/// When NATS cannot be reached within the start-up timeout or JetStream
/// refuses to create something.
pub async fn run(args: InitArgs) -> anyhow::Result<bool> {
    if args.replicas == 0 || args.replicas > 5 {
        anyhow::bail!(
            "--replicas must be 1 to 5 (JetStream's limit), not {}",
            args.replicas
        );
    }
    let conn = connect(&args).await?;
    let js = conn.jetstream();
    let mut existed = std::collections::HashSet::new();
    for name in expected_streams() {
        if js.get_stream(&name).await.is_ok() {
            existed.insert(name);
        }
    }

    create_missing_within(&conn, args.startup_timeout, |e| {
        eprintln!(
            "aegis init: JetStream did not create everything yet ({}); retrying",
            aegis_sdk::startup::error_line(e)
        );
    })
    .await?;

    let mut ok = true;
    for name in expected_streams() {
        let mut stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("reading stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("reading stream {name}"))?;
        let mut config = info.config.clone();
        let how = if existed.contains(&name) {
            "exists"
        } else {
            "created"
        };
        let mut problems = Vec::new();
        if config.num_replicas != args.replicas {
            if args.fix {
                config.num_replicas = args.replicas;
                // Placing the new replicas can be refused while the
                // cluster's leader has not seen every peer yet, as when
                // creating; the same patience applies.
                aegis_sdk::streams::with_placement_patience(&name, || {
                    js.update_stream(config.clone())
                })
                .await
                .with_context(|| {
                    format!(
                        "changing {name} from {} to {} replicas",
                        info.config.num_replicas, args.replicas
                    )
                })?;
                println!(
                    "  fixed   {name}: {} -> {} replicas",
                    info.config.num_replicas, args.replicas
                );
            } else {
                problems.push(format!(
                    "{} replicas, asked for {}: run `aegis init --replicas {} --fix` to change it",
                    info.config.num_replicas, args.replicas, args.replicas
                ));
            }
        }
        // Buckets keep one value per key; the streams must be bounded.
        if !name.starts_with("KV_") && config.max_bytes < 0 && config.max_messages < 0 {
            problems.push("no byte or message limit (it would fill the disk)".to_owned());
        }
        if problems.is_empty() {
            println!(
                "  ok      {name} ({how}; {} replica{}, {} messages)",
                config.num_replicas,
                if config.num_replicas == 1 { "" } else { "s" },
                info.state.messages
            );
        } else {
            ok = false;
            for p in problems {
                println!("  MISMATCH {name}: {p}");
            }
        }
    }
    conn.drain().await.ok();
    if ok {
        println!("aegis init: every bucket and stream is in place");
    } else {
        println!("aegis init: some buckets or streams do not match (see above)");
    }
    Ok(ok)
}

/// Creates every bucket and stream that is missing, with the connection's
/// replicas and stream limits; existing ones are left as they are.
///
/// # Errors
/// Naming what JetStream refused to create (or did not answer for).
pub async fn create_missing(conn: &aegis_sdk::Connection) -> anyhow::Result<()> {
    let js = conn.jetstream();
    let config = conn.config();
    let replicas = config.nats.replicas;
    aegis_sdk::registry::ensure_registry_bucket(js, replicas)
        .await
        .context("creating the registry bucket")?;
    aegis_sdk::election::ensure_election_bucket(js, replicas)
        .await
        .context("creating the elections bucket")?;
    aegis_sdk::events::ensure_events_stream(js, config)
        .await
        .context("creating the EVENTS stream")?;
    aegis_sdk::commands::ensure_commands_stream(js, config)
        .await
        .context("creating the COMMANDS stream")?;
    aegis_sdk::dead_letter::ensure_dead_letter_stream(js, config)
        .await
        .context("creating the DEAD_LETTER stream")?;
    aegis_monitor::ensure_infrastructure(
        js,
        config,
        aegis_monitor::MonitorConfig::default().definitions_history,
    )
    .await
    .context("creating the monitor's bucket and streams")?;
    aegis_trading::ensure_buckets(conn)
        .await
        .context("creating the example services' buckets")?;
    Ok(())
}

/// [`create_missing`], tried again until `timeout` has passed: a cluster
/// that is electing its meta or stream leaders (just started, restarted on
/// its data, or only busy) lets JetStream requests time out for a while.
/// `on_retry` hears each failure that will be tried again; the last one is
/// returned.
///
/// # Errors
/// The last attempt's error, once `timeout` has passed.
pub async fn create_missing_within(
    conn: &aegis_sdk::Connection,
    timeout: Duration,
    mut on_retry: impl FnMut(&anyhow::Error),
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(250);
    loop {
        match create_missing(conn).await {
            Ok(()) => return Ok(()),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                on_retry(&e);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.context("creating the streams and buckets")),
        }
    }
}

/// Connects, retrying while NATS or JetStream is not ready yet (a fresh
/// cluster electing its meta leader) until the start-up timeout.
async fn connect(args: &InitArgs) -> anyhow::Result<aegis_sdk::Connection> {
    let deadline = tokio::time::Instant::now() + args.startup_timeout;
    let mut pause = Duration::from_millis(200);
    loop {
        let replicas = args.replicas;
        match args
            .nats
            .connect_as_operator_with(move |c| c.nats.replicas = replicas)
            .await
        {
            Ok(conn) => return Ok(conn),
            Err(e)
                if tokio::time::Instant::now() + pause < deadline
                    && crate::service::transient(&e) =>
            {
                eprintln!(
                    "aegis init: NATS not ready yet ({}); retrying",
                    aegis_sdk::startup::error_line(&e)
                );
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e),
        }
    }
}
