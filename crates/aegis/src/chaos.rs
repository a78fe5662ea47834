//! `aegis chaos`: break the running showcase on purpose, for demos and
//! drills — SIGKILL a service instance (the supervisor brings it back after a
//! delay), or kill and restart a NATS node (`nats.rs`). The drills
//! `unhealthy`, `healthy` and `slow` (`drill.rs`) go to running instances
//! over NATS and need no local showcase.

mod drill;
mod nats;

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aegis_sdk::contracts::{
    control::{ControlRequest, MAX_DELAY_MS, MAX_UNHEALTHY_MS},
    models::InstanceStatus,
};
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use nix::sys::signal::Signal;

use crate::{
    cli::ConnectArgs,
    up::{remote::Remote, supervisor},
};

/// Options of `aegis chaos`.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// What to break.
    #[command(subcommand)]
    pub action: ChaosAction,
    /// The showcase's state directory (default: `.aegis`). It may be given
    /// after the action too, with its connection flags.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

impl ChaosArgs {
    /// The showcase's state directory: `--state-dir` before or after the
    /// action (the same one when both), else `.aegis`.
    ///
    /// # Errors
    /// When two different directories are given.
    fn dir(&self) -> anyhow::Result<PathBuf> {
        Ok(self.given_dir()?.unwrap_or_else(|| PathBuf::from(".aegis")))
    }

    /// The `--state-dir` given, before or after the action (the same
    /// directory when both, however written).
    ///
    /// # Errors
    /// When two different directories are given.
    fn given_dir(&self) -> anyhow::Result<Option<PathBuf>> {
        match (&self.state_dir, &self.action.nats().state_dir) {
            (Some(a), Some(b)) if !crate::cli::same_dir(a, b) => bail!(
                "two state directories given: --state-dir {} and --state-dir {}",
                a.display(),
                b.display()
            ),
            (Some(dir), _) | (None, Some(dir)) => Ok(Some(dir.clone())),
            (None, None) => Ok(None),
        }
    }
}

impl ChaosAction {
    /// The action's connection flags.
    fn nats(&self) -> &ConnectArgs {
        match self {
            ChaosAction::Kill { nats, .. }
            | ChaosAction::Unhealthy { nats, .. }
            | ChaosAction::Healthy { nats, .. }
            | ChaosAction::Slow { nats, .. }
            | ChaosAction::KillNats { nats, .. }
            | ChaosAction::RestartNats { nats, .. } => nats,
        }
    }
}

/// `nats` for the showcase in `dir`. A `--state-dir` given (`given`, as
/// either `--state-dir`) is taken as every tool takes it: that showcase's
/// nodes and operator's credentials, refused when no `aegis up` runs there
/// (never falling back to `.aegis`, which may be another showcase). Without
/// one, a drill needs no local showcase: the operator's credentials of
/// `.aegis` when it has them, else those configured.
fn showcase_flags(dir: &Path, given: bool, nats: &ConnectArgs) -> ConnectArgs {
    let mut nats = nats.clone();
    if given {
        nats.state_dir = Some(dir.to_path_buf());
        return nats;
    }
    nats.state_dir = None;
    if nats.credentials.is_none() && dir.join("credentials").is_file() {
        nats.credentials = Some(dir.join("credentials"));
    }
    nats
}

/// The chaos actions.
#[derive(Debug, Clone, Subcommand)]
pub enum ChaosAction {
    /// SIGKILL an instance (`order-2`) or one instance of a service
    /// (`order-service`: its ACTIVE instance when it has one — for a sticky
    /// service, its leader, the holder of its election key).
    Kill {
        /// Instance id or service name.
        target: String,
        /// Connection flags (to find a service's ACTIVE instance).
        #[command(flatten)]
        nats: ConnectArgs,
    },
    /// Make an instance report UNHEALTHY — discovery stops routing to it and
    /// a sticky leader hands over to a healthy standby (or leads on,
    /// degraded, when none is healthy) — until `aegis chaos healthy`, or for
    /// `--for`. A service name means its leader (sticky) or first instance;
    /// with `--all`, every instance of it. Prints the command that undoes it.
    Unhealthy {
        /// Instance id or service name.
        target: String,
        /// How long, e.g. `30s` (default: until `aegis chaos healthy`).
        #[arg(long = "for", value_parser = unhealthy_for)]
        duration: Option<Duration>,
        /// Every instance of the service.
        #[arg(long)]
        all: bool,
        /// Connection flags.
        #[command(flatten)]
        nats: ConnectArgs,
    },
    /// Lift an operator's UNHEALTHY verdict (a failing health check still
    /// counts). A service name means every instance of it an operator made
    /// UNHEALTHY, wherever leadership moved since (so `healthy SERVICE`
    /// undoes `unhealthy SERVICE`); with `--all`, every instance of it.
    Healthy {
        /// Instance id, or service name (its instances an operator made
        /// UNHEALTHY).
        target: String,
        /// Every instance of the service, made UNHEALTHY or not.
        #[arg(long)]
        all: bool,
        /// Connection flags.
        #[command(flatten)]
        nats: ConnectArgs,
    },
    /// Add latency to every handler of an instance, e.g. `--delay 500ms`
    /// (`--delay 0s` removes it): the monitor charts its latency, and the
    /// p99 of its callers (`aegis traffic`) rises.
    ///
    /// It moves no traffic away: the example order service calls pricing and
    /// risk round-robin, so a slowed instance keeps its share of the calls.
    /// (The SDK's `Strategy::LeastLatency` would prefer the faster instances;
    /// the showcase's services do not use it.)
    Slow {
        /// Instance id or service name.
        target: String,
        /// The added latency per request: 1ms to one minute (0s removes it).
        #[arg(long, value_parser = slow_delay)]
        delay: Duration,
        /// Every instance of the service.
        #[arg(long)]
        all: bool,
        /// Connection flags.
        #[command(flatten)]
        nats: ConnectArgs,
    },
    /// SIGKILL NATS node N (1-based) and keep it down.
    ///
    /// This acts only on the NATS nodes of the local showcase (`aegis up`
    /// with its state in --state-dir): it signals their processes, and
    /// cannot stop a server elsewhere. The connection flags are taken as by
    /// the other actions but must name that showcase (its nodes' URL, its
    /// credentials file); any other --nats-url, --credentials, --config or
    /// --nats-creds is refused.
    KillNats {
        /// Node number.
        node: usize,
        /// Connection flags, taken as by the other actions (so the same
        /// `--credentials FILE` works on every one); they must name the
        /// showcase whose node is signalled.
        #[command(flatten)]
        nats: ConnectArgs,
    },
    /// Restart NATS node N: stop it if it runs (SIGTERM, or lame duck mode
    /// with `--graceful`), then start it again; a node stopped by
    /// `kill-nats` is started. Done once the new process runs.
    ///
    /// A running node gets SIGTERM, nats-server's quick stop: it closes
    /// every client at once (they reconnect to the other nodes; a request
    /// in flight on it is cut off), closes its JetStream files cleanly and
    /// exits within a second; the streams it led get new leaders. SIGTERM
    /// and not SIGKILL, because a restart is an operator's act: a crash is
    /// `kill-nats N` (SIGKILL, kept down) and then `restart-nats N`.
    ///
    /// This acts only on the NATS nodes of the local showcase (`aegis up`
    /// with its state in --state-dir): it stops and starts their processes,
    /// and cannot restart a server elsewhere. The connection flags are
    /// taken as by the other actions but must name that showcase; any
    /// other --nats-url, --credentials, --config or --nats-creds is refused.
    RestartNats {
        /// Node number.
        node: usize,
        /// Stop a running node the planned way instead: lame duck mode (the
        /// node hands its stream leaderships over, stops taking clients and
        /// tells its own, which move to the other nodes; it exits once they
        /// left or it closed them, within a minute).
        #[arg(long)]
        graceful: bool,
        /// Connection flags, taken as by the other actions (so the same
        /// `--credentials FILE` works on every one); they must name the
        /// showcase whose node is restarted.
        #[command(flatten)]
        nats: ConnectArgs,
    },
}

/// Runs a chaos action against the showcase in `state_dir`.
///
/// # Errors
/// When the showcase is not running (for the process actions), the target
/// is unknown, or an instance refuses or does not answer a drill.
pub async fn run(args: ChaosArgs) -> anyhow::Result<()> {
    let given_dir = args.given_dir()?;
    let given = given_dir.is_some();
    let dir = &args.dir()?;
    let again = again_flags(given_dir.as_deref(), args.action.nats());
    let drill = match &args.action {
        ChaosAction::Unhealthy {
            target,
            duration,
            all,
            nats,
        } => {
            // In range: `unhealthy_for` bounds it.
            let for_ms = duration.map(whole_ms);
            Some((target, *all, nats, ControlRequest::Unhealthy { for_ms }))
        }
        ChaosAction::Healthy { target, all, nats } => {
            Some((target, *all, nats, ControlRequest::Healthy))
        }
        ChaosAction::Slow {
            target,
            delay,
            all,
            nats,
        } => Some((
            target,
            *all,
            nats,
            ControlRequest::Slow {
                delay_ms: whole_ms(*delay),
            },
        )),
        _ => None,
    };
    if let Some((target, all, nats, request)) = drill {
        // Drills publish to `aegis.control`, which only the operator may.
        let conn = showcase_flags(dir, given, nats)
            .connect_as_operator()
            .await?;
        let result = drill::run(&conn, target, all, request, &again).await;
        let _ = conn.drain().await;
        return result;
    }
    match &args.action {
        ChaosAction::KillNats { nats, .. } => {
            nats::check_connection_flags(dir, given, nats, "kill-nats")?;
        }
        ChaosAction::RestartNats { nats, .. } => {
            nats::check_connection_flags(dir, given, nats, "restart-nats")?;
        }
        _ => {}
    }
    crate::cli::showcase_running_in(dir)?;
    let remote = Remote::new(dir);
    match args.action {
        ChaosAction::Unhealthy { .. } | ChaosAction::Healthy { .. } | ChaosAction::Slow { .. } => {
            unreachable!("drills return above")
        }
        ChaosAction::Kill { target, nats } => {
            let name = resolve(dir, given, &target, &nats).await?;
            let pid = remote.signal(&name, Signal::SIGKILL)?;
            println!(
                "SIGKILLed {name} (pid {pid}); the supervisor restarts it after a delay (unless `aegis up` runs with --no-restart)"
            );
        }
        ChaosAction::KillNats { node, nats: _ } => nats::kill(&remote, node, &again)?,
        ChaosAction::RestartNats {
            node,
            graceful,
            nats: _,
        } => {
            nats::restart(&remote, node, graceful, &again).await?;
        }
    }
    Ok(())
}

/// The flags a command printed for the operator to run next (`undo: aegis
/// chaos healthy ...`, `aegis chaos restart-nats N`) needs to act on the
/// same showcase, as this one was given them: the `--state-dir`, a
/// `--nats-url` other than the default (any password in it redacted: it
/// is never printed), and the `--credentials`, `--config` and
/// `--nats-creds` files, each quoted for a POSIX shell (a path may have a
/// space in it); none when none was given.
fn again_flags(given: Option<&Path>, nats: &ConnectArgs) -> String {
    let quote = |text: &str| {
        shlex::try_quote(text).map_or_else(|_| text.to_owned(), std::borrow::Cow::into_owned)
    };
    let path = |flag: &str, p: &Path| format!(" {flag} {}", quote(&p.display().to_string()));
    let mut flags = String::new();
    if let Some(dir) = given {
        flags.push_str(&path("--state-dir", dir));
    }
    let connection = &nats.connection;
    if connection.nats_url != aegis_monitor::config::DEFAULT_NATS_URL {
        let url = crate::up::redacted(&connection.nats_url);
        flags.push_str(&format!(" --nats-url {}", quote(&url)));
    }
    for (flag, file) in [
        ("--credentials", &nats.credentials),
        ("--config", &connection.config),
        ("--nats-creds", &connection.nats_creds),
    ] {
        if let Some(file) = file {
            flags.push_str(&path(flag, file));
        }
    }
    flags
}

/// `--for` of `unhealthy`: 1 ms to one day, the bounds the instance holds
/// the request to, said here in the flag's terms (the instance would name
/// its wire field, `for_ms`).
fn unhealthy_for(s: &str) -> Result<Duration, String> {
    let longest = Duration::from_millis(MAX_UNHEALTHY_MS);
    match aegis_monitor::config::duration_flag_any_length(s)? {
        d if d < Duration::from_millis(1) => Err("must be at least 1ms".to_owned()),
        d if d > longest => Err(format!(
            "must be at most {} (one day)",
            humantime::format_duration(longest)
        )),
        d => Ok(d),
    }
}

/// `--delay` of `slow`: 1 ms to one minute, or 0 (which lifts a delay), the
/// bounds the instance holds the request to (it would name its wire field,
/// `delay_ms`). A delay below a millisecond is refused, not rounded to the
/// 0 that would lift the drill instead.
fn slow_delay(s: &str) -> Result<Duration, String> {
    let longest = Duration::from_millis(MAX_DELAY_MS);
    match aegis_monitor::config::duration_flag_any_length(s)? {
        d if !d.is_zero() && d < Duration::from_millis(1) => {
            Err("must be at least 1ms (or 0s, which removes the delay)".to_owned())
        }
        d if d > longest => Err(format!(
            "must be at most {} (one minute)",
            humantime::format_duration(longest)
        )),
        d => Ok(d),
    }
}

/// `d` in whole milliseconds (the flags' parsers bound it far below
/// `u64::MAX`).
fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An instance id as is; a service name → its ACTIVE instance: for a
/// sticky service the holder of its election key, else one whose record
/// says ACTIVE (or the first, when none does).
async fn resolve(
    dir: &std::path::Path,
    given: bool,
    target: &str,
    nats: &ConnectArgs,
) -> anyhow::Result<String> {
    let running = supervisor::running_children(dir);
    if running.iter().any(|n| n == target) {
        return Ok(target.to_owned());
    }
    // The operator's credentials of this showcase, unless others are named.
    let conn = showcase_flags(dir, given, nats)
        .connect_as_operator()
        .await?;
    let reader = aegis_sdk::registry::RegistryReader::start(&conn).await?;
    let mut instances = reader.by_service(target);
    if instances.is_empty() {
        // The names it may have meant, and the close one (as `aegis status`
        // suggests a service).
        let services = reader.all().into_iter().map(|i| i.service_name);
        bail!(
            "`{target}` is neither a showcase process nor a registered service{}",
            crate::status::names_and_close_one(
                target,
                running.iter().cloned().chain(services),
                "showcase processes and registered services",
                "no showcase process runs and no service is registered",
            )
        );
    }
    // A sticky service's ACTIVE instance is the holder of its group's
    // election key. The records' own status is not: a leader leading on,
    // degraded, says UNHEALTHY, and a deposed one may still say ACTIVE.
    instances.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
    let mut groups_seen = Vec::new();
    for instance in &instances {
        let Some(group) = instance.sticky_active_group.as_deref() else {
            continue;
        };
        if groups_seen.contains(&group) {
            continue;
        }
        groups_seen.push(group);
        if let Some(leader) = drill::leader(&conn, instance).await
            && running.contains(&leader.instance_id)
        {
            return Ok(leader.instance_id);
        }
    }
    // A plain service (or a group without a leader): an ACTIVE instance.
    instances.sort_by_key(|i| i.status != InstanceStatus::Active);
    instances
        .into_iter()
        .map(|i| i.instance_id)
        .find(|id| running.contains(id))
        .with_context(|| format!("no instance of {target} is a process of this showcase"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flags_printed_to_run_next_reach_the_same_nats_and_keep_secrets() {
        let mut nats = ConnectArgs {
            connection: aegis_monitor::NatsArgs::with_servers(
                aegis_monitor::config::DEFAULT_NATS_URL,
            ),
            credentials: None,
            state_dir: None,
        };
        // Nothing given: nothing to repeat.
        assert_eq!(again_flags(None, &nats), "");
        nats.connection.nats_url = "nats://op:s3cret@10.0.0.5:4222".into();
        nats.credentials = Some("/srv/my showcase/credentials".into());
        nats.connection.nats_creds = Some("/srv/ops.creds".into());
        let flags = again_flags(Some(Path::new("/tmp/state")), &nats);
        assert_eq!(
            flags,
            " --state-dir /tmp/state --nats-url 'nats://op:<redacted>@10.0.0.5:4222' \
             --credentials '/srv/my showcase/credentials' --nats-creds /srv/ops.creds"
        );
        assert!(!flags.contains("s3cret"), "{flags}");
    }

    #[test]
    fn the_drill_flags_hold_the_instances_bounds() {
        assert_eq!(slow_delay("0s"), Ok(Duration::ZERO));
        assert_eq!(slow_delay("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(slow_delay("1ms"), Ok(Duration::from_millis(1)));
        for below in ["999us", "1ns"] {
            assert_eq!(
                slow_delay(below),
                Err("must be at least 1ms (or 0s, which removes the delay)".into()),
                "{below}"
            );
        }
        assert_eq!(
            slow_delay("61s"),
            Err("must be at most 1m (one minute)".into())
        );
        assert_eq!(unhealthy_for("1ms"), Ok(Duration::from_millis(1)));
        assert_eq!(unhealthy_for("24h"), Ok(Duration::from_secs(86_400)));
        assert_eq!(unhealthy_for("0s"), Err("must be at least 1ms".into()));
        assert_eq!(
            unhealthy_for("25h"),
            Err("must be at most 1day (one day)".into())
        );
        // What is sent is what the instance takes.
        let minute = whole_ms(Duration::from_secs(60));
        assert!(ControlRequest::Slow { delay_ms: minute }.validate().is_ok());
        let day = whole_ms(Duration::from_secs(86_400));
        assert!(
            ControlRequest::Unhealthy { for_ms: Some(day) }
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn one_state_directory_written_two_ways_is_one() {
        use clap::Parser;
        let state = tempfile::tempdir().unwrap();
        let abs = state.path().to_str().unwrap().to_owned();
        let name = state.path().file_name().unwrap().to_str().unwrap();
        let other_way = format!("{abs}/../{name}/.");
        let parse = |a: &str, b: &str| {
            let cli = crate::cli::Cli::try_parse_from([
                "aegis",
                "chaos",
                "--state-dir",
                a,
                "unhealthy",
                "s",
                "--for",
                "1s",
                "--state-dir",
                b,
            ])
            .unwrap();
            let crate::cli::Command::Chaos(args) = cli.command else {
                panic!("parsed as another command");
            };
            args.dir()
        };
        assert!(parse(&other_way, &abs).is_ok(), "{other_way} is {abs}");
        let other = tempfile::tempdir().unwrap();
        let err = parse(&abs, other.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("two state directories"), "{err}");
    }
}
