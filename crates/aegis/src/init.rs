//! `aegis init`: creates every bucket and stream Aegis uses (the SDK's
//! and the monitor's), with the replicas asked for, and checks the ones
//! that exist. With `--showcase` it also makes the example trading
//! services' buckets (`orders`, `risk_limits`, `risk_positions`): a
//! user's own server running only their services does not get them.
//! `aegis up` and the Helm chart's install/upgrade Job, which run the
//! example services, run it with `--showcase`.
//!
//! Only the operator creates them where users apply (`aegis up`, the Helm
//! chart): a stream create also chooses the stream's subjects, sources and
//! mirrors, so the role table (`crate::permissions`) gives no service and
//! not the monitor `STREAM.CREATE` or `STREAM.UPDATE`; the monitor and
//! the example services, started where one of theirs is missing, fail
//! naming `aegis init`. On a
//! server without users (a local run, a test) the services and the
//! monitor still create what is missing themselves, with the same
//! settings as here; what `init` adds there is the check. An existing
//! stream is never changed behind an operator's back by a service or the
//! monitor — but a stream with the wrong replica count (say R1
//! left from a single-node run, now on a 3-node cluster) loses data when
//! its one node dies, so `init` refuses it and names the fix: `--fix`
//! changes the replica count in place (JetStream copies the data to the new
//! peers while it keeps serving).
//!
//! The streams' limits (oldest message, bytes, messages: `[streams.*]` of
//! the configuration file) are held to the file the same way, but only
//! those it sets: a limit it leaves out keeps what the stream has (an
//! operator may have tuned it). One the file raises is raised in place, as
//! that deletes nothing; one it lowers can delete messages at once, so it
//! is a mismatch naming what it would delete until `--apply-limits` says
//! to lower it.
//!
//! The stream limits' part of the check (what the file sets, how a
//! difference is said and what lowering one would delete) is in `limits`.
//!
//! The shared buckets (registry, elections, service definitions) must
//! refuse rollups (but the registry: its limit markers need them) and be
//! bounded (`aegis_sdk::kv::SharedBucket`): one
//! made before is changed in place, here and by everything that runs
//! [`create_missing_in`] (`aegis up`), since that deletes nothing; see
//! `shared`. So are `EVENTS`' and `AEGIS_LOG`'s per-message caps
//! (`aegis_sdk::streams::message_size_cap`), which apply to new messages
//! only.
//!
//! Why one module of over 500 lines: `run` is `aegis init` as an operator
//! reads it, one check after another in the order it prints them
//! (connect, count the peers, each stream and bucket, apply or say the
//! mismatch); cutting it up would scatter that order. The parts that stand
//! alone are `limits` (stream limits) and `shared` (the shared buckets).

mod limits;
mod shared;

use std::time::Duration;

use aegis_contracts::subjects;
use aegis_sdk::streams::Limit;
use anyhow::Context;
use clap::Args;

use crate::cli::ConnectArgs;

use limits::{LimitChange, bytes, configured_limits, held_limits, limits_section, lowering_advice};

/// The exit status of `aegis init` when a bucket or stream does not match
/// (printed as MISMATCH): it needs an operator's fix, and running `init`
/// again will not mend it, so the Helm chart's Job fails at once on this
/// status instead of retrying. Any other failure (NATS not reachable,
/// JetStream not ready) exits 1 and may pass by itself.
pub const MISMATCH_EXIT: u8 = 3;

/// Options of `aegis init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Copies of every bucket and stream: 1 on a single node, 3 on a 3-node
    /// cluster (default: as many as the cluster has JetStream peers online,
    /// at most 3 — so 1 on a single node — and never fewer than the
    /// existing buckets and streams have).
    #[arg(long, env = "AEGIS_NATS_REPLICAS")]
    pub replicas: Option<usize>,
    /// Change the replica count of existing buckets and streams that differ
    /// (safe while running: JetStream moves the data).
    #[arg(long)]
    pub fix: bool,
    /// Lower the limits (oldest message, bytes, messages) of existing
    /// streams to those the configuration file sets, deleting at once the
    /// oldest messages past them. Raising a limit needs no flag.
    #[arg(long)]
    pub apply_limits: bool,
    /// Also create and check the example trading services' buckets
    /// (`orders`, `risk_limits`, `risk_positions`), as `aegis up` and the
    /// Helm chart do. Without it, only Aegis's own buckets and streams.
    #[arg(long)]
    pub showcase: bool,
    /// How long to keep trying while NATS or JetStream is not ready yet
    /// (a cluster electing its meta leader), e.g. `60s`.
    #[arg(long, env = "AEGIS_STARTUP_TIMEOUT", default_value = "60s", value_parser = aegis_monitor::config::duration_flag)]
    pub startup_timeout: Duration,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// What `init` makes: Aegis's own buckets and streams, or those and the
/// example trading services' buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The SDK's and the monitor's buckets and streams.
    Aegis,
    /// Those and the example trading services' buckets (`aegis up`, the
    /// Helm chart, `aegis init --showcase`).
    WithShowcase,
}

/// The example trading services' buckets.
const SHOWCASE_BUCKETS: [&str; 3] = [
    aegis_trading::order::ORDERS_BUCKET,
    aegis_trading::risk::RISK_LIMITS_BUCKET,
    aegis_trading::risk::RISK_POSITIONS_BUCKET,
];

/// The streams behind everything `init` makes in `scope`: Aegis's own,
/// the monitor's and, with the showcase, the example services' buckets
/// (`KV_` + bucket name).
fn expected_streams(scope: Scope) -> Vec<String> {
    let mut buckets = vec![
        subjects::REGISTRY_BUCKET,
        subjects::ELECTIONS_BUCKET,
        subjects::DEFINITIONS_BUCKET,
    ];
    if scope == Scope::WithShowcase {
        buckets.extend(SHOWCASE_BUCKETS);
    }
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
/// replicas and limits; `Ok(false)` when a check failed (printed; the
/// binary exits with [`MISMATCH_EXIT`]).
///
/// # Errors
/// When NATS cannot be reached within the start-up timeout or JetStream
/// refuses to create something.
pub async fn run(args: InitArgs) -> anyhow::Result<bool> {
    if let Some(replicas) = args.replicas
        && (replicas == 0 || replicas > 5)
    {
        anyhow::bail!("--replicas must be 1 to 5 (JetStream's limit), not {replicas}");
    }
    let mut conn = connect(&args, args.replicas).await?;
    let file = args.nats.connection.config.clone();
    if args.apply_limits && file.is_none() {
        println!(
            "aegis init: no configuration file (--config, AEGIS_CONFIG), so no stream limit \
             to apply; every stream keeps its own"
        );
    }
    let limits = configured_limits(file.as_deref(), &conn.config().streams)?;
    if file.is_some() {
        println!("aegis init: {}", held_limits(&limits));
    }
    let file_shown = file
        .as_deref()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lower_command = {
        let mut command = "aegis init".to_owned();
        if let Some(replicas) = args.replicas {
            command.push_str(&format!(" --replicas {replicas}"));
        }
        let quoted =
            shlex::try_quote(&file_shown).map_or_else(|_| file_shown.clone(), |q| q.into_owned());
        command.push_str(&format!(" --config {quoted} --apply-limits"));
        command
    };
    let scope = if args.showcase {
        Scope::WithShowcase
    } else {
        Scope::Aegis
    };
    let init_command = if args.showcase {
        "aegis init --showcase"
    } else {
        "aegis init"
    };
    let mut existed = std::collections::HashMap::new();
    for name in expected_streams(scope) {
        if let Ok(mut stream) = conn.jetstream().get_stream(&name).await
            && let Ok(info) = stream.info().await
        {
            existed.insert(name, info.config.num_replicas);
        }
    }
    let explicit = args.replicas.is_some();
    let replicas = match args.replicas {
        Some(replicas) => replicas,
        None => {
            let peers = jetstream_peers(&conn).await?;
            let existing: Vec<usize> = existed.values().copied().collect();
            let (replicas, why) = default_replicas(&existing, peers);
            println!(
                "aegis init: {replicas} replica{} ({why}; --replicas sets another count)",
                plural(replicas)
            );
            if conn.config().nats.replicas != replicas {
                // The connection creates what is missing with its replicas.
                let _ = conn.drain().await;
                conn = connect(&args, Some(replicas)).await?;
            }
            replicas
        }
    };
    let wanted = if explicit { "asked for" } else { "expected" };
    let js = conn.jetstream();

    // What it changed in place (made before, by an older Aegis or by
    // hand) is said; what it made just now is not.
    let changed = create_missing_within(&conn, scope, args.startup_timeout, |e| {
        eprintln!(
            "aegis init: JetStream did not create everything yet ({}); retrying",
            aegis_sdk::startup::error_line(e)
        );
    })
    .await?;
    for changed in changed {
        println!("  {changed}");
    }

    let mut ok = true;
    for name in expected_streams(scope) {
        let mut stream = js
            .get_stream(&name)
            .await
            .with_context(|| format!("reading stream {name}"))?;
        let info = stream
            .info()
            .await
            .with_context(|| format!("reading stream {name}"))?;
        let mut config = info.config.clone();
        let how = if existed.contains_key(&name) {
            "exists"
        } else {
            "created"
        };
        let mut problems: Vec<String> = shared::still_open(&name, &info.config)
            .into_iter()
            .collect();
        let fix_replicas = config.num_replicas != replicas && args.fix;
        if config.num_replicas != replicas {
            if args.fix {
                config.num_replicas = replicas;
            } else {
                problems.push(advice(
                    info.config.num_replicas,
                    replicas,
                    wanted,
                    init_command,
                ));
            }
        }
        let mut messages = info.state.messages;
        let (mut raised, mut lowered) = (Vec::new(), Vec::new());
        for &(limit, wants) in limits.get(&name).map(Vec::as_slice).unwrap_or_default() {
            let has = limit.of_stream(&info.config);
            if has == Some(wants) {
                continue;
            }
            let change = LimitChange { limit, has, wants };
            if change.raises() {
                limit.set(&mut config, wants);
                raised.push(change);
            } else if args.apply_limits {
                limit.set(&mut config, wants);
                lowered.push(change);
            } else {
                let section = limits_section(&conn.config().streams, &name).map_or("", |s| s.0);
                problems.push(lowering_advice(
                    &change,
                    &info.state,
                    &format!("streams.{section}.{}", limit.name()),
                    &file_shown,
                    &lower_command,
                ));
            }
        }
        if config != info.config {
            let what = || {
                let mut what: Vec<String> = raised
                    .iter()
                    .chain(&lowered)
                    .map(LimitChange::describe)
                    .collect();
                if fix_replicas {
                    what.push(format!(
                        "{} -> {} replicas",
                        info.config.num_replicas, replicas
                    ));
                }
                format!("changing {name} ({})", what.join(", "))
            };
            // Placing new replicas can be refused while the cluster's
            // leader has not seen every peer yet, as when creating; the
            // same patience applies.
            let updated = aegis_sdk::streams::with_placement_patience(&name, || {
                js.update_stream(config.clone())
            })
            .await
            .with_context(what)
            .map_err(storage_advice)?;
            messages = updated.state.messages;
            if !raised.is_empty() {
                let what: Vec<String> = raised.iter().map(LimitChange::describe).collect();
                println!("  raised  {name}: {}", what.join(", "));
            }
            if !lowered.is_empty() {
                let what: Vec<String> = lowered.iter().map(LimitChange::describe).collect();
                let deleted = info.state.messages.saturating_sub(updated.state.messages);
                let freed = info.state.bytes.saturating_sub(updated.state.bytes);
                let later = if lowered.iter().any(|c| c.limit == Limit::MaxAge) {
                    "; messages past the new age go as the server expires them"
                } else {
                    ""
                };
                println!(
                    "  lowered {name}: {} (deleted {deleted} message{}, {}{later})",
                    what.join(", "),
                    if deleted == 1 { "" } else { "s" },
                    bytes(freed)
                );
            }
            if fix_replicas {
                let lowered = if replicas < info.config.num_replicas {
                    format!(" (lower fault tolerance: {})", tolerance(replicas))
                } else {
                    String::new()
                };
                println!(
                    "  fixed   {name}: {} -> {} replicas{lowered}",
                    info.config.num_replicas, replicas
                );
            }
        }
        // Buckets keep one value per key. A stream with no byte and no
        // message limit was made so by hand (streams are created bounded):
        // it keeps it, as any limit the file does not set, but is named.
        let unbounded =
            if !name.starts_with("KV_") && config.max_bytes < 0 && config.max_messages < 0 {
                "; no byte or message limit, kept: it may fill the disk"
            } else {
                ""
            };
        if problems.is_empty() {
            println!(
                "  ok      {name} ({how}; {} replica{}, {} messages{unbounded})",
                config.num_replicas,
                plural(config.num_replicas),
                messages
            );
        } else {
            ok = false;
            for p in problems {
                println!("  MISMATCH {name}: {p}");
            }
        }
    }
    conn.drain().await.ok();
    if scope == Scope::Aegis {
        let names: Vec<String> = SHOWCASE_BUCKETS.iter().map(|b| format!("KV_{b}")).collect();
        println!(
            "aegis init: the example trading services' buckets were neither made nor checked: \
             `aegis init --showcase` makes and checks them too ({})",
            names.join(", ")
        );
    }
    if ok {
        println!("aegis init: every bucket and stream is in place");
    } else {
        println!("aegis init: some buckets or streams do not match (see above)");
    }
    Ok(ok)
}

/// The most replicas [`default_replicas`] chooses on a large cluster: the
/// design's R3 (a copy survives the loss of one node).
const MOST_DEFAULT_REPLICAS: usize = 3;

/// The replica count when `--replicas` is not given, and why: as many as
/// the JetStream `peers` online, at most [`MOST_DEFAULT_REPLICAS`] (so 1 on
/// a single node), never fewer than the most the existing buckets and
/// streams have (lowering would lower their fault tolerance, which only an
/// explicit `--replicas` may ask for).
fn default_replicas(existing: &[usize], peers: usize) -> (usize, String) {
    let supported = peers.clamp(1, MOST_DEFAULT_REPLICAS);
    let most = existing.iter().copied().max().unwrap_or(0);
    if most > supported {
        (
            most,
            "what the existing buckets and streams have".to_owned(),
        )
    } else if supported == 1 {
        (1, "a single JetStream node".to_owned())
    } else if supported == MOST_DEFAULT_REPLICAS {
        (
            supported,
            format!("a JetStream cluster of {supported} or more peers"),
        )
    } else {
        (
            supported,
            format!(
                "a JetStream cluster of {supported} peers online; if it has more, one is down \
                 or still starting"
            ),
        )
    }
}

/// How many JetStream peers of the cluster `conn` reaches can hold a copy,
/// counted up to [`MOST_DEFAULT_REPLICAS`]: 1 without a cluster; else the
/// most replicas a probe stream (memory, deleted at once) can be placed
/// with. The server tells clients no cluster size, and its cluster block
/// does not say how many nodes run JetStream; placement does. A cluster
/// whose peers are not all online yet (just started) refuses placement for
/// a moment, so each count is tried with [`with_placement_patience`]
/// before a smaller one.
///
/// [`with_placement_patience`]: aegis_sdk::streams::with_placement_patience
///
/// # Errors
/// When JetStream refuses the probe for another reason than too few peers.
async fn jetstream_peers(conn: &aegis_sdk::Connection) -> anyhow::Result<usize> {
    use async_nats::jetstream::stream;

    if conn.client().server_info().cluster.is_none() {
        return Ok(1);
    }
    let js = conn.jetstream();
    let id = nuid::next().to_string();
    for replicas in (2..=MOST_DEFAULT_REPLICAS).rev() {
        let name = format!("AEGIS_INIT_PEERS_{id}");
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![format!("_aegis.init.peers.{id}")],
            storage: stream::StorageType::Memory,
            num_replicas: replicas,
            max_messages: 1,
            max_bytes: 1024,
            ..Default::default()
        };
        let created =
            aegis_sdk::streams::with_placement_patience(&name, || js.create_stream(config.clone()))
                .await;
        match created {
            Ok(_) => {
                if let Err(e) = js.delete_stream(&name).await {
                    eprintln!(
                        "aegis init: could not delete the probe stream {name} ({e}); \
                         delete it by hand"
                    );
                }
                return Ok(replicas);
            }
            Err(e) if aegis_sdk::streams::no_peers_for_placement(&e) => {}
            Err(e) => {
                return Err(
                    anyhow::Error::new(e).context("counting the JetStream peers (a probe stream)")
                );
            }
        }
    }
    Ok(1)
}

/// What a stream with `has` replicas where `want` are wanted should do:
/// raising them is the fix; lowering them is said to lower the fault
/// tolerance, next to how to keep them. `init` is the command to run
/// (`aegis init`, with `--showcase` when that made the check).
fn advice(has: usize, want: usize, wanted: &str, init: &str) -> String {
    if want > has {
        format!(
            "{has} replicas, {wanted} {want}: run `{init} --replicas {want} --fix` to change it"
        )
    } else {
        format!(
            "{has} replicas, {wanted} {want}: to keep them, run `{init} --replicas {has}`; \
             `{init} --replicas {want} --fix` would lower them, and the fault tolerance \
             with them ({}, {})",
            tolerance(want),
            tolerance(has)
        )
    }
}

/// How many node losses `replicas` copies survive, in words.
fn tolerance(replicas: usize) -> String {
    match (replicas.saturating_sub(1)) / 2 {
        0 => format!(
            "{replicas} replica{} survive{} the loss of no node",
            plural(replicas),
            if replicas == 1 { "s" } else { "" }
        ),
        n => format!(
            "{replicas} replicas survive the loss of {n} node{}",
            plural(n)
        ),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Creates every bucket and stream that is missing, the example services'
/// buckets included (what `aegis up` runs), with the connection's
/// replicas and stream limits; existing ones are left as they are, but
/// for the shared buckets' rollups and limits, which are set in place
/// (see the module).
///
/// # Errors
/// Naming what JetStream refused to create (or did not answer for).
pub async fn create_missing(conn: &aegis_sdk::Connection) -> anyhow::Result<()> {
    create_missing_in(conn, Scope::WithShowcase).await?;
    Ok(())
}

/// One change [`create_missing_in`] made in place to a bucket or stream
/// that existed before it ran (made by an older Aegis, the monitor, a
/// service on a server without users, or by hand), or a limit it kept;
/// shown as `aegis init` and `aegis up` print it, e.g.
/// `bounded KV_orders: per-value expiry off -> on`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    /// `locked` (a shared bucket or stream), `bounded` (an example
    /// service's bucket) or `kept` (a limit left as it is, and why).
    pub how: &'static str,
    /// The stream (`KV_` + bucket name for a bucket).
    pub name: String,
    /// What changed (`setting has -> wants`, comma-separated), or why it
    /// was kept.
    pub what: String,
}

impl std::fmt::Display for Changed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<7} {}: {}", self.how, self.name, self.what)
    }
}

/// Changes in place every existing bucket and stream of `scope` whose
/// settings are not those Aegis makes them with and that may be changed
/// without deleting anything (see the module); what it changed or kept,
/// pushed onto `changed`. A missing one is skipped.
async fn change_existing(
    js: &async_nats::jetstream::Context,
    scope: Scope,
    changed: &mut Vec<Changed>,
) -> anyhow::Result<()> {
    let mut locked = shared::lock_down_shared(js)
        .await
        .context("refusing rollups on the shared buckets and bounding them")?;
    locked.extend(
        shared::cap_shared_streams(js)
            .await
            .context("capping the shared streams' message size")?,
    );
    let mut bounded = Vec::new();
    if scope == Scope::WithShowcase {
        bounded = aegis_trading::bound_buckets(js)
            .await
            .map_err(|e| anyhow::anyhow!(e))
            .context("bounding the example services' buckets")?
            .into_iter()
            .map(|(name, bound)| (name, bound.changes, bound.kept))
            .collect();
    }
    let locked = locked
        .into_iter()
        .map(|l| ("locked", l.name, l.changes, l.kept));
    let bounded = bounded
        .into_iter()
        .map(|(name, changes, kept)| ("bounded", name, changes, kept));
    for (how, name, changes, kept) in locked.chain(bounded) {
        if !changes.is_empty() {
            changed.push(Changed {
                how,
                name: name.clone(),
                what: changes.join(", "),
            });
        }
        if let Some(kept) = kept {
            changed.push(Changed {
                how: "kept",
                name,
                what: kept,
            });
        }
    }
    Ok(())
}

/// [`create_missing`] of what `scope` names: first changes the existing
/// buckets and streams that differ in place, saying what it changed (see
/// [`Changed`]), then creates the missing ones and sets the settings of
/// those it made open (the monitor's definitions, made by async-nats),
/// which are not named.
///
/// # Errors
/// Naming what JetStream refused to create (or did not answer for).
pub async fn create_missing_in(
    conn: &aegis_sdk::Connection,
    scope: Scope,
) -> anyhow::Result<Vec<Changed>> {
    let mut changed = Vec::new();
    create_missing_into(conn, scope, &mut changed).await?;
    Ok(changed)
}

/// [`create_missing_in`], pushing what it changed onto `changed` as it
/// goes, so a later failure loses none of it.
async fn create_missing_into(
    conn: &aegis_sdk::Connection,
    scope: Scope,
    changed: &mut Vec<Changed>,
) -> anyhow::Result<()> {
    let js = conn.jetstream();
    let config = conn.config();
    let replicas = config.nats.replicas;
    change_existing(js, scope, changed).await?;
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
    if scope == Scope::WithShowcase {
        aegis_trading::ensure_buckets(conn)
            .await
            .context("creating the example services' buckets")?;
    }
    // What was just made: changing it is no news.
    change_existing(js, scope, &mut Vec::new()).await
}

/// [`create_missing_in`] `scope`, tried again until `timeout` has passed: a cluster
/// that is electing its meta or stream leaders (just started, restarted on
/// its data, or only busy) lets JetStream requests time out for a while.
/// `on_retry` hears each failure that will be tried again; the last one is
/// returned. What every attempt changed in place ([`Changed`]), in order.
///
/// # Errors
/// The last attempt's error, once `timeout` has passed.
pub async fn create_missing_within(
    conn: &aegis_sdk::Connection,
    scope: Scope,
    timeout: Duration,
    mut on_retry: impl FnMut(&anyhow::Error),
) -> anyhow::Result<Vec<Changed>> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut pause = Duration::from_millis(250);
    let mut changed = Vec::new();
    loop {
        match create_missing_into(conn, scope, &mut changed).await {
            Ok(()) => return Ok(changed),
            // Waiting does not make room.
            Err(e) if storage_refused(&e) => return Err(storage_advice(e)),
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                on_retry(&e);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.context("creating the streams and buckets")),
        }
    }
}

/// Whether JetStream refused `e`'s stream for want of storage (error code
/// 10047): the account's JetStream limit `max_file` (which every stream
/// reserves its `max_bytes` times its replicas against) or a server's
/// `max_file_store` is smaller than the streams' limits need.
fn storage_refused(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        let said = cause.to_string();
        said.contains("10047") || said.contains("insufficient storage resources")
    })
}

/// `e`, with what to do when JetStream refused it for want of storage
/// ([`storage_refused`]).
fn storage_advice(e: anyhow::Error) -> anyhow::Error {
    if !storage_refused(&e) {
        return e;
    }
    let limits = crate::nats_config::ACCOUNT_LIMITS;
    e.context(format!(
        "the streams' limits need more storage than JetStream has for the account: each \
         stream and bucket reserves its max_bytes times its replicas against the AEGIS \
         account's JetStream limit max_file ({} GiB as `aegis up` and `aegis nats-config` \
         write it; the Helm chart's nats.jetstream.account.maxFile), and within each server's \
         max_file_store. Lower the [streams.*] max_bytes of the configuration, or raise the \
         account's max_file (and the servers' max_file_store) to fit",
        limits.max_file / (1024 * 1024 * 1024)
    ))
}

/// Connects, retrying while NATS or JetStream is not ready yet (a fresh
/// cluster electing its meta leader) until the start-up timeout; but not
/// for a showcase: with no `aegis up` running in `--state-dir`, or one still
/// starting there, it fails at once (only `aegis service` waits for one).
/// `replicas` (when given) is what it creates buckets and streams with.
async fn connect(
    args: &InitArgs,
    replicas: Option<usize>,
) -> anyhow::Result<aegis_sdk::Connection> {
    let deadline = tokio::time::Instant::now() + args.startup_timeout;
    let mut pause = Duration::from_millis(200);
    loop {
        match args
            .nats
            .connect_as_operator_with(move |c| {
                if let Some(replicas) = replicas {
                    c.nats.replicas = replicas;
                }
            })
            .await
        {
            Ok(conn) => return Ok(conn),
            Err(e)
                if tokio::time::Instant::now() + pause < deadline
                    && !crate::cli::no_showcase(&e)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_keeps_what_exists_and_what_the_cluster_supports() {
        assert_eq!(default_replicas(&[], 1).0, 1);
        assert_eq!(default_replicas(&[], 3).0, 3);
        assert_eq!(default_replicas(&[], 2).0, 2);
        assert_eq!(default_replicas(&[], 5).0, 3);
        assert_eq!(default_replicas(&[1, 1], 3).0, 3);
        assert_eq!(default_replicas(&[3, 1], 1).0, 3);
        assert_eq!(default_replicas(&[3], 2).0, 3);
        assert_eq!(default_replicas(&[5], 3).0, 5);
        assert!(
            default_replicas(&[], 2)
                .1
                .starts_with("a JetStream cluster of 2 peers online")
        );
    }

    #[test]
    fn lowering_is_never_advised_without_its_cost() {
        assert_eq!(
            advice(1, 3, "asked for", "aegis init"),
            "1 replicas, asked for 3: run `aegis init --replicas 3 --fix` to change it"
        );
        assert_eq!(
            advice(3, 1, "asked for", "aegis init"),
            "3 replicas, asked for 1: to keep them, run `aegis init --replicas 3`; \
             `aegis init --replicas 1 --fix` would lower them, and the fault tolerance with \
             them (1 replica survives the loss of no node, 3 replicas survive the loss of 1 node)"
        );
    }
}
