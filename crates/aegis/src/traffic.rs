//! `aegis traffic`: a steady flow of orders into a running showcase, so
//! its dashboard has something to show and a fault has something to cost.
//!
//! Clients create orders on the order service's leader (`call_active`,
//! idempotent by client order id, so an attempt cut off by a failover is
//! retried on the next leader), each at its share of `--rate` and never
//! more than one call at a time. Every order goes through pricing and risk
//! too, so all three services carry load. Each second one line says what
//! that second did: orders answered and failed (by error code), the
//! slowest answers, and who served. At the end (`--duration`, Ctrl-C or
//! SIGTERM) the flow stops, the calls in flight finish, and every order
//! the service answered is read back from the leader (`get_order`): an
//! answered order that is not there is a lost order, said by id, and the
//! command exits non-zero. A run in which no order was answered at all
//! exits non-zero too.
//!
//! An order whose call failed without saying what became of it (a
//! TIMEOUT, or a failure after which the service may have recorded it) is
//! not counted failed: like any trading client, the client settles it by
//! sending `create_order` again with the same client order id, at least
//! once and for as long as the order service's expire window
//! ([`SETTLE_WITHIN`]) after that call failed: the service answers the
//! order it recorded (its decision, or its rejection as `EXPIRED` once too
//! late to trade), or places it if it never was. So
//! the summary tells apart the orders acknowledged at once, those settled
//! by a retry (read back with them), those that certainly failed (nothing
//! was sent, or the service refused the request) and those whose outcome
//! stayed unknown (no retry decided it): a retry with the same client
//! order id, named in the list, still tells.
//!
//! Once the flow has stopped, each wait says what it waits for and is
//! bounded: the orders in flight by their call's deadline (`--timeout-ms`)
//! or, one whose outcome is unknown, by the settle window after it and a
//! last retry's deadline (twice `--timeout-ms` plus 30 s in all), the
//! read-back by giving up once the order service has answered nothing for
//! a whole deadline (the showcase stopped, or lost its leader), the orders
//! left saying "not checked". A Ctrl-C or SIGTERM then (the first, when
//! `--duration` ended the flow; the next, when a signal did) ends the
//! command at once with exit code 130, claiming nothing about the orders
//! it did not read.
//!
//! The parts apart: `tally` counts what each call told of its order and
//! writes the per-second line and the summary's counts; `check` reads the
//! answered orders back and says which are lost ([`read_back`],
//! [`ReadBack`]).

mod check;
mod tally;

use std::{
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE, Side};
use aegis_sdk::rpc::{CallOptions, RpcClient, RpcError};
use aegis_trading::order::{CreateOrder, Order};
use anyhow::Context;
use clap::Args;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{bench::lock, cli::ConnectArgs};

use check::{Answered, check};
pub use check::{ReadBack, read_back};
use tally::{Said, Tally, Window, abbreviated, failures, millis, report_line, said};

/// The symbols the orders cycle through (all quoted by the pricing service).
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "NVDA", "GOOGL", "AMZN"];

/// Most orders a client may be asked to send a second.
const MAX_RATE: f64 = 10_000.0;

/// How long after its first call failed an order whose outcome is unknown
/// is retried (at least once): the order service's expire window
/// (`expire_after`, 30 s by default), within which a recorded order can
/// still be decided, not expired (a later retry is answered its rejection
/// as `EXPIRED`). Each retry waits longer than the last, from 0.2 s up to
/// 2 s.
pub const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// The pause before the first retry of an order whose outcome is unknown.
const FIRST_RETRY_AFTER: Duration = Duration::from_millis(200);

/// The longest pause between two retries of an order.
const LAST_RETRY_AFTER: Duration = Duration::from_secs(2);

/// `aegis traffic`.
#[derive(Debug, Clone, Args)]
pub struct TrafficArgs {
    /// Orders per second, over all clients.
    #[arg(long, default_value_t = 10.0, value_parser = parse_rate)]
    pub rate: f64,
    /// Clients sending orders, each waiting for its answer before its next.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub clients: u16,
    /// Stop after this long, e.g. `30s` or `5m` (default: until Ctrl-C).
    #[arg(long, value_parser = aegis_monitor::config::duration_flag)]
    pub duration: Option<Duration>,
    /// Deadline of each `create_order` call, its attempts on a new leader
    /// included (ms, 1 to 600000); an order whose call fails with its
    /// outcome unknown is retried for 30 s more, each retry with this
    /// deadline, so an order may take twice this plus 30 s.
    #[arg(long, default_value_t = 5_000, value_parser = crate::cli::timeout_ms())]
    pub timeout_ms: u64,
    /// The order service's sticky group.
    #[arg(long, default_value = ORDER_GROUP)]
    pub group: String,
    /// Do not read the acknowledged orders back at the end.
    #[arg(long)]
    pub no_check: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .parse()
        .map_err(|_| format!("`{s}` is not a number of orders per second"))?;
    if rate.is_finite() && rate > 0.0 && rate <= MAX_RATE {
        Ok(rate)
    } else {
        Err(format!("the rate must be above 0 and at most {MAX_RATE}"))
    }
}

/// Runs `aegis traffic` until `--duration` passes or `shutdown` is
/// cancelled; exits non-zero when an acknowledged order is missing, or when
/// no order was acknowledged at all.
///
/// # Errors
/// An invalid group name, or no connection to NATS.
pub async fn run(args: TrafficArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    aegis_contracts::names::validate_group_name(&args.group)
        .with_context(|| format!("--group {:?}", args.group))?;
    let conn = args.nats.connect_as_operator().await?;
    let rpc = conn.rpc();
    let stop = shutdown.child_token();
    if let Some(duration) = args.duration {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(duration).await;
            stop.cancel();
        });
    }
    let timeout = Duration::from_millis(args.timeout_ms);
    println!(
        "sending {} orders/s from {} client(s) to {ORDER_SERVICE} (group {}); {}",
        args.rate,
        args.clients,
        args.group,
        match args.duration {
            Some(d) => format!("for {}", humantime::format_duration(d)),
            None => "Ctrl-C stops".to_owned(),
        }
    );
    let tally = Arc::new(Mutex::new(Tally::new()));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let run = nuid::next().to_string();
    let run = Arc::<str>::from(&run[run.len() - 8..]);
    let tasks = tokio_util::task::TaskTracker::new();
    // Each client sends at its share of the rate, the clients spread over
    // one period so the flow is even.
    let period = Duration::from_secs_f64(f64::from(args.clients) / args.rate);
    for client in 0..args.clients {
        let offset = period.mul_f64(f64::from(client) / f64::from(args.clients));
        let (rpc, tally, in_flight, stop, run, group) = (
            rpc.clone(),
            tally.clone(),
            in_flight.clone(),
            stop.clone(),
            run.clone(),
            args.group.clone(),
        );
        tasks.spawn(async move {
            let mut ticks = tokio::time::interval_at(started + offset, period);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            for n in 0u64.. {
                // The stop first: once stopped, a due tick (an order that
                // waited for a slow answer) starts no new order.
                tokio::select! {
                    biased;
                    () = stop.cancelled() => return,
                    _ = ticks.tick() => {}
                }
                let order = CreateOrder {
                    symbol: SYMBOLS[(n as usize) % SYMBOLS.len()].to_owned(),
                    // Alternating, so positions stay within the risk limits.
                    side: if n % 2 == 0 { Side::Buy } else { Side::Sell },
                    quantity: 1,
                    price: None,
                    client_order_id: format!("traffic-{run}-{client}-{n}"),
                };
                in_flight.fetch_add(1, Ordering::SeqCst);
                place(&rpc, &group, &order, timeout, &tally).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    tasks.close();

    let mut seconds =
        tokio::time::interval_at(started + Duration::from_secs(1), Duration::from_secs(1));
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = seconds.tick() => {
                let window = std::mem::replace(&mut lock(&tally).window, Window::new());
                println!("{}", report_line(Some(started.elapsed()), &window));
            }
        }
    }
    let elapsed = started.elapsed();
    let interrupt = interrupt_from_now(&shutdown);
    // The orders in flight are answered or given up (each call within its
    // deadline, an unknown one's retries within SETTLE_WITHIN after); a
    // wait longer than a moment is said, and a signal ends it.
    let wait = tasks.wait();
    tokio::pin!(wait);
    if tokio::time::timeout(Duration::from_millis(200), &mut wait)
        .await
        .is_err()
    {
        eprintln!(
            "stopped; waiting for {} order(s) in flight, each answered or given up within {} \
             (one whose outcome is unknown: retried for {} more after its call failed, each \
             retry within that deadline) (Ctrl-C stops now)",
            in_flight.load(Ordering::SeqCst),
            humantime::format_duration(timeout),
            humantime::format_duration(SETTLE_WITHIN)
        );
        tokio::select! {
            biased;
            () = interrupt.cancelled() => {
                eprintln!("traffic interrupted while orders were in flight: no summary, no orders read back");
                return Ok(ExitCode::from(INTERRUPTED));
            }
            () = &mut wait => {}
        }
    }
    let tally = std::mem::replace(&mut *lock(&tally), Tally::new());
    // What came after the last line, calls in flight at the stop included.
    if tally.window.ok > 0 || !tally.window.failed.is_empty() {
        println!("{}", report_line(None, &tally.window));
    }
    println!(
        "{} orders sent in {:.1} s: {} acknowledged ({} filled, {} rejected), {}, failed {}, unknown {}",
        tally.sent(),
        elapsed.as_secs_f64(),
        tally.acked.len(),
        tally.filled,
        tally.rejected(),
        tally.settled_text(),
        failures(&tally.failed),
        failures(&tally.unknown)
    );
    if !tally.unknown_ids.is_empty() {
        let ids: Vec<&str> = tally.unknown_ids.iter().map(String::as_str).collect();
        println!(
            "outcome unknown (retried for {} after the first call failed, no retry decided \
             it; a create_order with the same client_order_id tells): {}",
            humantime::format_duration(SETTLE_WITHIN),
            abbreviated(&ids)
        );
    }
    if !tally.acked.is_empty() {
        println!(
            "latency of acknowledged orders: p50 {}, p99 {}, max {}",
            millis(tally.latency.value_at_quantile(0.5)),
            millis(tally.latency.value_at_quantile(0.99)),
            millis(tally.latency.max())
        );
    }
    if tally.answered() == 0 {
        // Nothing worked: a check that ran this must tell it from a good run.
        if tally.sent() == 0 {
            println!("no order was acknowledged: the run stopped before any order was sent");
        } else if tally.unknown.is_empty() {
            println!(
                "no order was acknowledged: all {} failed ({})",
                tally.sent(),
                failures(&tally.failed)
            );
        } else {
            println!(
                "no order was acknowledged: of {}, failed {}, unknown {}",
                tally.sent(),
                failures(&tally.failed),
                failures(&tally.unknown)
            );
        }
        return Ok(ExitCode::FAILURE);
    }
    if args.no_check {
        return Ok(ExitCode::SUCCESS);
    }
    let answered = Answered {
        acknowledged: tally.acked.len(),
        settled: tally.settled.len(),
    };
    // Each with the earliest its settling write can have been: the call
    // began at most its deadline before the answer, and a retry answered
    // within SETTLE_WITHIN after a first call that failed.
    let since = |at: std::time::Instant, before: Duration| at.checked_sub(before).unwrap_or(at);
    let mut orders: Vec<_> = (tally.acked.into_iter())
        .map(|(id, at)| (id, since(at, timeout)))
        .collect();
    orders.extend(
        (tally.settled.into_iter()).map(|(id, at)| (id, since(at, timeout + SETTLE_WITHIN))),
    );
    Ok(check(&rpc, &args.group, orders, answered, timeout, &interrupt).await)
}

/// Sends `order` (`create_order` on the group's leader) and, when the
/// outcome is unknown, settles it by retrying with the same client order
/// id — after a pause growing from [`FIRST_RETRY_AFTER`] to
/// [`LAST_RETRY_AFTER`], each retry starting within [`SETTLE_WITHIN`] of
/// the first call's failure ([`retry_at`]), so at least one is sent —
/// until a call answers it; every call is counted in `tally`, and the
/// order as answered, failed or unknown.
async fn place(
    rpc: &RpcClient,
    group: &str,
    order: &CreateOrder,
    timeout: Duration,
    tally: &Mutex<Tally>,
) {
    let first = Instant::now();
    let mut told = said(create(rpc, group, order, timeout).await);
    lock(tally).record(first.elapsed(), &told, false);
    let known = Instant::now();
    let mut pause = FIRST_RETRY_AFTER;
    while let Said::Unknown(_) = &told {
        let Some(retry_at) = retry_at(known, Instant::now(), pause, SETTLE_WITHIN) else {
            break;
        };
        tokio::time::sleep_until(retry_at).await;
        let sent = Instant::now();
        told = said(create(rpc, group, order, timeout).await);
        lock(tally).record(sent.elapsed(), &told, true);
        // A retry that certainly recorded nothing says nothing of the
        // earlier calls: the order may still have been recorded by one.
        if let Said::NotPlaced(code) = &told {
            told = Said::Unknown(code.clone());
        }
        pause = (pause * 2).min(LAST_RETRY_AFTER);
    }
    lock(tally).gave_up(&told, &order.client_order_id);
}

/// When to send the next retry of an order whose outcome is unknown, the
/// pause before it being `pause` from `now`: within `within` (the settle
/// window) of `known`, when its first call's outcome was known (unknown),
/// so that, whatever that call's deadline, the order is retried at least
/// once; `None` once the window is over.
///
/// A retry within the window of a recorded, pending order decides it (the
/// order service's `expire_after` counts from the order's creation, no
/// earlier than its first call); one that comes later, the first call
/// having taken long, is answered the order rejected as `EXPIRED`: either
/// way the retry tells what became of the order.
fn retry_at(known: Instant, now: Instant, pause: Duration, within: Duration) -> Option<Instant> {
    let at = now + pause;
    (at < known + within).then_some(at)
}

/// The exit code of a command stopped by Ctrl-C or SIGTERM (128 + SIGINT),
/// as `aegis bench` uses.
const INTERRUPTED: u8 = 130;

/// A token cancelled by the next Ctrl-C or SIGTERM from now on, and by
/// `shutdown` if it is not cancelled yet: the signal that stopped the flow
/// asked for the read-back that follows, a later one asks to stop waiting.
/// (A second Ctrl-C also forces the exit in [`crate::shutdown`]; SIGTERM,
/// which a supervisor may send more than once, does not.)
fn interrupt_from_now(shutdown: &CancellationToken) -> CancellationToken {
    let interrupt = CancellationToken::new();
    let mut signals = Interrupts::listen();
    let shutdown_pending = !shutdown.is_cancelled();
    let (shutdown, fire) = (shutdown.clone(), interrupt.clone());
    tokio::spawn(async move {
        tokio::select! {
            () = signals.next() => {}
            () = shutdown.cancelled(), if shutdown_pending => {}
        }
        fire.cancel();
    });
    interrupt
}

/// Ctrl-C and SIGTERM, listened to from creation on. SIGHUP is left to
/// [`crate::shutdown`], which keeps it ignored under `nohup`.
struct Interrupts {
    #[cfg(unix)]
    int: Option<tokio::signal::unix::Signal>,
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Interrupts {
    fn listen() -> Self {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Self {
                int: signal(SignalKind::interrupt()).ok(),
                term: signal(SignalKind::terminate()).ok(),
            }
        }
        #[cfg(not(unix))]
        {
            Self {}
        }
    }

    /// The next Ctrl-C or SIGTERM.
    async fn next(&mut self) {
        #[cfg(unix)]
        {
            async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            }
            tokio::select! {
                () = recv(&mut self.int) => {}
                () = recv(&mut self.term) => {}
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// One order on the group's leader.
async fn create(
    rpc: &RpcClient,
    group: &str,
    order: &CreateOrder,
    timeout: Duration,
) -> Result<aegis_sdk::rpc::Reply<Order>, RpcError> {
    // Idempotent by client order id: an attempt that timed out may be
    // retried on the next leader without a second order.
    let opts = CallOptions::timeout(timeout).idempotent();
    rpc.call_active(ORDER_SERVICE, group, "create_order", order, &opts)
        .await
}

/// A `create_order` or `get_order` call's outcome.
type OrderAnswer = Result<aegis_sdk::rpc::Reply<Order>, RpcError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_must_be_a_positive_number_within_bounds() {
        assert_eq!(parse_rate("2.5"), Ok(2.5));
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-1").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("inf").is_err());
        assert!(parse_rate("fast").unwrap_err().contains("not a number"));
        assert!(parse_rate("20000").is_err());
    }

    /// An order whose first call ran to its deadline is retried at least
    /// once, whatever `--timeout-ms`: the settle window counts from when
    /// its outcome was known (unknown), not from when it was sent.
    #[test]
    fn an_unknown_order_is_retried_whatever_its_deadline() {
        let t0 = Instant::now();
        for timeout in [5, 29, 30, 60, 600] {
            let known = t0 + Duration::from_secs(timeout);
            assert_eq!(
                retry_at(known, known, FIRST_RETRY_AFTER, SETTLE_WITHIN),
                Some(known + FIRST_RETRY_AFTER),
                "--timeout-ms {timeout}000"
            );
            // Retried for the whole window after it, and no longer.
            let late = known + SETTLE_WITHIN - Duration::from_secs(1);
            assert_eq!(retry_at(known, late, LAST_RETRY_AFTER, SETTLE_WITHIN), None);
            let last = late - LAST_RETRY_AFTER;
            assert_eq!(
                retry_at(known, last, LAST_RETRY_AFTER, SETTLE_WITHIN),
                Some(last + LAST_RETRY_AFTER)
            );
        }
    }

    /// `--timeout-ms` says what it bounds: each call, and not the order,
    /// which a retry may settle for 30 s more.
    #[test]
    fn the_timeout_help_names_the_settle_window() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            traffic: TrafficArgs,
        }
        let cli = <Cli as clap::CommandFactory>::command();
        let help = cli
            .get_arguments()
            .find(|a| a.get_id() == "timeout_ms")
            .and_then(|a| a.get_help())
            .map(ToString::to_string)
            .unwrap_or_default();
        assert!(help.contains("each `create_order` call"), "{help}");
        assert!(help.contains("30 s"), "{help}");
    }
}
