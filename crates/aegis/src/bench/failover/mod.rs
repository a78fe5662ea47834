//! `aegis bench failover`: what callers see when instances die, with the
//! instances as real child processes (`aegis service echo`) against a
//! nats-server the benchmark starts itself.
//!
//! - `--stateless` ([`stateless`]): steady idempotent calls through
//!   discovery while one instance at a time is SIGKILLed and restarted;
//!   counts failed calls (target 0) and reports the latency they paid.
//! - `--sticky` ([`sticky`]): a single-active group of three; the leader is
//!   SIGKILLed (then, in a second phase, stopped with SIGTERM) round after
//!   round while a client calls `call_active`; reports the time from the
//!   signal to the first call served by the new leader, and an observer
//!   that checks that no two instances ever served as leader at once
//!   ([`overlap`] holds that analysis).
//! - [`fleet`]: the child processes, one incarnation per start, run by
//!   `aegis up`'s supervisor (killed on drop, on error and Ctrl-C).
//!
//! The result is an [`Outcome`]: single measured values with their bounds.

pub mod fleet;
pub mod overlap;
pub mod stateless;
pub mod sticky;

use std::{path::PathBuf, time::Duration};

use clap::{ArgGroup, Args};

use self::fleet::Fleet;
use super::report::Outcome;

/// Options of `aegis bench failover`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("mode").required(true).args(["stateless", "sticky"])))]
pub struct FailoverBenchArgs {
    /// Load-balanced instances; SIGKILL one at a time under steady calls.
    #[arg(long)]
    pub stateless: bool,
    /// A sticky single-active group; kill (then gracefully stop) the leader.
    #[arg(long)]
    pub sticky: bool,
    /// Instances (child processes).
    #[arg(long, default_value_t = 3, value_parser = super::flags::at_least(2usize))]
    pub instances: usize,

    /// --stateless: how many SIGKILLs (one instance each, round-robin).
    #[arg(long, default_value_t = 6, value_parser = super::flags::at_least(1usize))]
    pub kills: usize,
    /// --stateless: seconds from one kill to the next.
    #[arg(long, default_value_t = 3.0, value_parser = super::flags::positive_seconds)]
    pub interval_secs: f64,
    /// --stateless: seconds a killed instance stays down before its restart.
    #[arg(long, default_value_t = 1.0, value_parser = super::flags::seconds)]
    pub down_secs: f64,
    /// --stateless: total calls per second over all callers.
    #[arg(long, default_value_t = 400.0, value_parser = super::flags::positive)]
    pub rate: f64,
    /// --stateless: concurrent callers.
    #[arg(long, default_value_t = 4, value_parser = super::flags::at_least(1usize))]
    pub callers: usize,
    /// Deadline of one call, retries included (ms).
    #[arg(long, default_value_t = 2_000, value_parser = crate::cli::timeout_ms())]
    pub deadline_ms: u64,
    /// Deadline of one attempt of an idempotent call (ms); a call whose
    /// instance died under it moves on after this.
    #[arg(long, default_value_t = 250, value_parser = crate::cli::timeout_ms())]
    pub attempt_timeout_ms: u64,

    /// --sticky: kill rounds, and as many graceful (SIGTERM) rounds.
    #[arg(long, default_value_t = 30, value_parser = super::flags::at_least(1usize))]
    pub rounds: usize,
    /// --sticky: the overlap observer probes every instance this often (ms).
    #[arg(long, default_value_t = 5, value_parser = super::flags::within(1u64, super::flags::DAY_MS))]
    pub probe_ms: u64,
    /// --sticky: pause between the client's `call_active` calls (ms).
    #[arg(long, default_value_t = 2, value_parser = super::flags::within(0u64, super::flags::DAY_MS))]
    pub call_interval_ms: u64,
    /// Keep the instances' logs (their folder is printed).
    #[arg(long)]
    pub keep_logs: bool,
    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    pub check: bool,
}

/// Runs the benchmark and prints the table; returns the outcome. (`aegis
/// bench` drops it on Ctrl-C or SIGTERM: its fleet's processes are killed
/// on the way out.)
///
/// # Errors
/// When the server or an instance cannot start.
pub async fn run(args: FailoverBenchArgs) -> anyhow::Result<Outcome> {
    let nats = super::start_server().await?;
    let url = nats.url();
    let outcome = if args.sticky {
        sticky::run(&args, &url).await?
    } else {
        stateless::run(&args, &url).await?
    };
    drop(nats);
    Ok(outcome)
}

/// Polls `ready` every 5 ms until it holds; fails after `timeout`, or at
/// once when a child exited on its own.
pub(crate) async fn wait_for(
    fleet: &mut Fleet,
    timeout: Duration,
    what: &str,
    ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    if wait_until(fleet, timeout, ready).await? {
        return Ok(());
    }
    anyhow::bail!(
        "timed out after {timeout:?} waiting for {what} (instance logs: {})",
        fleet.log_dir().display()
    )
}

/// Polls `ready` every millisecond until it holds (`true`) or `timeout`
/// passes (`false`); fails at once when a child exited on its own.
pub(crate) async fn wait_until(
    fleet: &mut Fleet,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if ready() {
            return Ok(true);
        }
        fleet.check_alive()?;
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
