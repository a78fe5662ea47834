//! Side-by-side benchmarks: raw async-nats (the baseline) and the Aegis SDK,
//! in one process, against one nats-server the benchmark starts itself.
//!
//! The machine is shared and noisy, so the two sides run in alternating
//! batches (the order flipping every batch): whatever noise there is hits
//! both alike, and the ratio is what to read.
//!
//! - [`rpc`]: sequential request/reply latency (HDR percentiles) and
//!   concurrent throughput.
//! - [`events`]: JetStream publish throughput (and latency) of events.
//! - [`report`]: the comparison table, targets and the `--json` output.
//! - [`failover`]: instances killed under load (their own server).
//! - [`chaos`]: the whole showcase under faults of services and NATS nodes.

pub mod chaos;
pub mod events;
pub mod failover;
pub mod report;
pub mod rpc;

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

/// A progress bar for `total` steps with a message, drawn on stderr.
pub(crate) fn progress(total: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<28} [{bar:36}] {pos}/{len} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Starts the benchmark's own nats-server (on free ports, removed on drop).
///
/// # Errors
/// When no suitable nats-server is installed or it does not start.
pub(crate) async fn start_server() -> anyhow::Result<aegis_testkit::NatsServer> {
    use anyhow::Context;
    tokio::task::spawn_blocking(aegis_testkit::NatsServer::start)
        .await?
        .context("starting nats-server for the benchmark (run `make bootstrap` if it is missing)")
}

/// Refuses sizes with which the alternating phases cannot run.
///
/// # Errors
/// Names the flag to fix.
pub(crate) fn check_sizes(
    calls: usize,
    batch: usize,
    concurrency: usize,
    rounds: usize,
) -> anyhow::Result<()> {
    anyhow::ensure!(
        batch > 0 && calls >= batch,
        "--calls must be at least --batch (> 0)"
    );
    anyhow::ensure!(
        concurrency > 0 && rounds > 0,
        "--concurrency and --rounds must be positive"
    );
    Ok(())
}

/// The two sides of every comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Plain async-nats, written as a careful user would without Aegis.
    Raw,
    /// The same work through the Aegis SDK.
    Sdk,
}

/// The order of the two sides in batch `i`: alternating, so neither side
/// always runs first (warm caches, CPU frequency, a neighbour's load).
pub(crate) fn order(i: usize) -> [Side; 2] {
    if i.is_multiple_of(2) {
        [Side::Raw, Side::Sdk]
    } else {
        [Side::Sdk, Side::Raw]
    }
}

/// Runs `calls` concurrently-issued operations for `duration` with
/// `concurrency` workers and returns completed operations per second.
pub(crate) async fn throughput<F, Fut>(
    concurrency: usize,
    duration: Duration,
    op: F,
) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let started = tokio::time::Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < deadline {
                op().await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0u64;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
