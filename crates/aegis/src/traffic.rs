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

use std::{
    collections::BTreeMap,
    process::ExitCode,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_contracts::{
    trading::{ORDER_GROUP, ORDER_SERVICE, Side},
    wire::ErrorCode,
};
use aegis_sdk::rpc::{CallOptions, RpcClient, RpcError};
use aegis_trading::order::{CreateOrder, GetOrder, Order, OrderStatus};
use anyhow::Context;
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::{bench::lock, cli::ConnectArgs};

/// The symbols the orders cycle through (all quoted by the pricing service).
const SYMBOLS: [&str; 5] = ["AAPL", "MSFT", "NVDA", "GOOGL", "AMZN"];

/// Orders read back at once when checking.
const CHECK_CONCURRENCY: usize = 16;

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

/// What the clients did, since the last report line and in all.
#[derive(Debug)]
struct Tally {
    window: Window,
    /// Orders answered by their first call (the SDK's own attempts on a
    /// new leader included).
    acked: Vec<String>,
    /// Of the acknowledged, the filled (the rest were rejected).
    filled: u64,
    /// Orders whose first call failed with their outcome unknown, answered
    /// by a retry with the same client order id.
    settled: Vec<String>,
    /// Of the settled, the filled (the rest were rejected).
    settled_filled: u64,
    /// Orders that certainly were not recorded, by error code.
    failed: BTreeMap<String, u64>,
    /// Orders whose outcome stayed unknown (no retry was answered), by the
    /// last error code.
    unknown: BTreeMap<String, u64>,
    /// Their client order ids.
    unknown_ids: Vec<String>,
    /// Latency of the acknowledged orders.
    latency: Histogram<u64>,
}

/// One report line's worth.
#[derive(Debug)]
struct Window {
    /// Orders answered (acknowledged, or settled by a retry).
    ok: u64,
    /// Calls that failed (first calls and retries), by error code.
    failed: BTreeMap<String, u64>,
    latency: Histogram<u64>,
    /// The instance (and epoch) of the last answer.
    served_by: Option<(String, Option<u64>)>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Window {
    fn new() -> Self {
        Self {
            ok: 0,
            failed: BTreeMap::new(),
            latency: histogram(),
            served_by: None,
        }
    }
}

impl Tally {
    fn new() -> Self {
        Self {
            window: Window::new(),
            acked: Vec::new(),
            filled: 0,
            settled: Vec::new(),
            settled_filled: 0,
            failed: BTreeMap::new(),
            unknown: BTreeMap::new(),
            unknown_ids: Vec::new(),
            latency: histogram(),
        }
    }

    /// One `create_order` call that took `took` and `said` so; `retry`:
    /// whether it re-sent an order whose outcome was unknown. A decided
    /// order is answered (acknowledged, or settled by the retry); a failed
    /// call counts on this second's line only, its order being retried or
    /// given up on ([`Tally::gave_up`]).
    fn record(&mut self, took: Duration, said: &Said, retry: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        match said {
            Said::Decided {
                order_id,
                filled,
                served_by,
            } => {
                self.window.latency.saturating_record(micros);
                self.window.ok += 1;
                if served_by.is_some() {
                    self.window.served_by.clone_from(served_by);
                }
                if retry {
                    self.settled_filled += u64::from(*filled);
                    self.settled.push(order_id.clone());
                } else {
                    self.latency.saturating_record(micros);
                    self.filled += u64::from(*filled);
                    self.acked.push(order_id.clone());
                }
            }
            Said::NotPlaced(code) | Said::Unknown(code) => {
                *self.window.failed.entry(code.clone()).or_default() += 1;
            }
        }
    }

    /// An order no call answered, `said` being what the last one said:
    /// failed if that proves nothing was recorded, else unknown.
    fn gave_up(&mut self, said: &Said, client_order_id: &str) {
        match said {
            Said::NotPlaced(code) => *self.failed.entry(code.clone()).or_default() += 1,
            Said::Unknown(code) => {
                *self.unknown.entry(code.clone()).or_default() += 1;
                self.unknown_ids.push(client_order_id.to_owned());
            }
            Said::Decided { .. } => {}
        }
    }

    /// Orders sent: answered, failed, or of unknown outcome.
    fn sent(&self) -> u64 {
        self.answered() + self.failed.values().sum::<u64>() + self.unknown.values().sum::<u64>()
    }

    /// Orders answered: acknowledged, or settled by a retry.
    fn answered(&self) -> u64 {
        (self.acked.len() + self.settled.len()) as u64
    }

    /// Acknowledged orders the risk check refused.
    fn rejected(&self) -> u64 {
        self.acked.len() as u64 - self.filled
    }

    /// `3 settled by a retry (2 filled, 1 rejected)`, or `0 settled by a
    /// retry`.
    fn settled_text(&self) -> String {
        let settled = self.settled.len() as u64;
        if settled == 0 {
            return "0 settled by a retry".to_owned();
        }
        format!(
            "{settled} settled by a retry ({} filled, {} rejected)",
            self.settled_filled,
            settled - self.settled_filled
        )
    }
}

/// What one `create_order` call told of its order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    /// It is decided (filled or rejected): the call answered it, or failed
    /// saying its decision is stored (only its event was not published
    /// yet). `served_by`: the instance (and epoch) that answered, when
    /// known.
    Decided {
        order_id: String,
        filled: bool,
        served_by: Option<(String, Option<u64>)>,
    },
    /// It certainly was not recorded (by this call): nothing was sent (no
    /// leader, no instance, a bad name), or the service refused the
    /// request itself (`INVALID_REQUEST`, `CONFLICT`, ...). The error code.
    NotPlaced(String),
    /// Nobody can tell from this call: it may have been recorded, pending
    /// or decided (a TIMEOUT; a failure the service said is of a recorded
    /// order; a SERVICE_UNAVAILABLE, NOT_ACTIVE or INTERNAL, which may
    /// also be the last of the SDK's attempts on the leaders after one that
    /// timed out). A retry with the same client order id settles it. The
    /// error code.
    Unknown(String),
}

/// What `answer` tells of its order.
fn said(answer: OrderAnswer) -> Said {
    let e = match answer {
        Ok(reply) if reply.value.status.is_final() => {
            return Said::Decided {
                filled: reply.value.status == OrderStatus::Filled,
                order_id: reply.value.order_id,
                served_by: reply.instance_id.map(|id| (id, reply.epoch)),
            };
        }
        // Recorded, not decided: a retry decides it.
        Ok(reply) => return Said::Unknown(format!("{:?}", reply.value.status).to_uppercase()),
        Err(e) => e,
    };
    // Its decision is stored (only its event was not published yet): the
    // order was placed, and is read back with the rest.
    if let Some((order_id, filled)) = decided(&e) {
        return Said::Decided {
            order_id,
            filled,
            served_by: None,
        };
    }
    let code = e.code().to_string();
    let certain = match &e {
        RpcError::Remote { error, .. } => {
            let names_an_order = error
                .details
                .as_ref()
                .is_some_and(|d| d.get("order_id").is_some());
            !names_an_order
                && !matches!(
                    error.code,
                    ErrorCode::Timeout
                        | ErrorCode::ServiceUnavailable
                        | ErrorCode::NotActive
                        | ErrorCode::Internal
                )
        }
        // Said only when no attempt was sent.
        RpcError::InvalidName(_)
        | RpcError::Encode(_)
        | RpcError::InvalidOptions { .. }
        | RpcError::NoInstances { .. }
        | RpcError::NoSuchMethod { .. }
        | RpcError::NoLeader { .. }
        | RpcError::UnknownGroup { .. }
        | RpcError::NotSingleActive { .. }
        | RpcError::Discovery(_)
        | RpcError::Election(_) => true,
        // Timeout, ConnectionLost, NoResponders (perhaps after an attempt
        // that timed out), DeposedLeader, Decode, Transport, and whatever
        // a later SDK adds: it may have run.
        _ => false,
    };
    if certain {
        Said::NotPlaced(code)
    } else {
        Said::Unknown(code)
    }
}

/// The order a failed `create_order` names as decided — its decision
/// stored, only its event not yet published (`details.status` `filled` or
/// `rejected`) — and whether it filled; `None` for any other failure (a
/// `pending` order expires unless retried).
fn decided(e: &RpcError) -> Option<(String, bool)> {
    let RpcError::Remote { error, .. } = e else {
        return None;
    };
    let details = error.details.as_ref()?;
    let filled = match details.get("status")?.as_str()? {
        "filled" => true,
        "rejected" => false,
        _ => return None,
    };
    Some((details.get("order_id")?.as_str()?.to_owned(), filled))
}

/// `12 [TIMEOUT×2, UNAVAILABLE×1]`, or `0`.
fn failures(failed: &BTreeMap<String, u64>) -> String {
    let total: u64 = failed.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let kinds: Vec<String> = failed.iter().map(|(k, n)| format!("{k}×{n}")).collect();
    format!("{total} [{}]", kinds.join(", "))
}

fn millis(micros: u64) -> String {
    if micros >= 1_000_000 {
        format!("{:.2} s", micros as f64 / 1e6)
    } else {
        format!("{:.1} ms", micros as f64 / 1e3)
    }
}

/// One report line: the second's answers, failures, p99 and who served;
/// `at` is its time since the start, `None` for what came after the last
/// line printed (up to the stop, and the calls in flight then).
fn report_line(at: Option<Duration>, window: &Window) -> String {
    let at = at.map_or_else(
        || "last".to_owned(),
        |t| format!("{:.1} s", t.as_secs_f64()),
    );
    let mut line = format!(
        "{at:>9}  ok {:>4}  failed {}",
        window.ok,
        failures(&window.failed)
    );
    if window.ok > 0 {
        line.push_str(&format!(
            "  p99 {}",
            millis(window.latency.value_at_quantile(0.99))
        ));
    }
    if let Some((instance, epoch)) = &window.served_by {
        line.push_str(&format!("  leader {instance}"));
        if let Some(epoch) = epoch {
            line.push_str(&format!(" (epoch {epoch})"));
        }
    }
    line
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
    let mut orders = tally.acked;
    orders.extend(tally.settled);
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

/// How many of the orders read back were acknowledged at once, and how
/// many settled by a retry.
#[derive(Debug, Clone, Copy)]
struct Answered {
    acknowledged: usize,
    settled: usize,
}

impl Answered {
    /// `acknowledged orders`, or `answered orders` when some were settled
    /// by a retry.
    fn noun(self) -> &'static str {
        if self.settled == 0 {
            "acknowledged orders"
        } else {
            "answered orders"
        }
    }
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

/// What reading acknowledged orders back from the leader found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// Orders that are there.
    pub found: usize,
    /// Orders the leader does not have (`NOT_FOUND`): lost.
    pub missing: Vec<String>,
    /// Orders that could not be read (another error), with why.
    pub unreadable: Vec<(String, String)>,
    /// Orders not read at all: the read-back gave up ([`ReadBack::gave_up`])
    /// or was stopped before their answer came.
    pub not_checked: Vec<String>,
    /// Why the read-back gave up before the end, when it did: the order
    /// service answered nothing for a whole deadline (the error of the read
    /// that found so).
    pub gave_up: Option<String>,
}

/// Reads each of `order_ids` back from the leader of the order service's
/// `group` (`get_order`, a few at a time), with a progress bar. Gives up
/// once the service has answered nothing for `timeout` (each read's
/// deadline): the orders left are [`ReadBack::not_checked`].
pub async fn read_back(
    rpc: &RpcClient,
    group: &str,
    order_ids: Vec<String>,
    timeout: Duration,
) -> ReadBack {
    read_back_until(rpc, group, order_ids, timeout, &CancellationToken::new()).await
}

/// [`read_back`], stopped early when `stop` is cancelled: the reads in
/// flight are dropped (reading is idempotent) and the orders left are
/// [`ReadBack::not_checked`].
async fn read_back_until(
    rpc: &RpcClient,
    group: &str,
    order_ids: Vec<String>,
    timeout: Duration,
    stop: &CancellationToken,
) -> ReadBack {
    let bar = crate::bench::progress(order_ids.len() as u64, "reading the orders back");
    let opts = CallOptions::timeout(timeout).idempotent();
    // Cancelled on `stop`, or on giving up.
    let halt = stop.child_token();
    // When the service last answered anything (an order, or an error of
    // its own): a read that got no answer gives up on the rest only when
    // nothing else was answered for a whole deadline either, so one slow
    // read among answered ones does not end the check.
    let last_answer = Mutex::new(Instant::now());
    let gave_up: Mutex<Option<String>> = Mutex::new(None);
    let answers: Vec<(String, Option<OrderAnswer>)> = futures::stream::iter(order_ids)
        .map(|order_id| {
            let (opts, bar, halt, last_answer, gave_up) =
                (&opts, &bar, &halt, &last_answer, &gave_up);
            async move {
                if halt.is_cancelled() {
                    return (order_id, None);
                }
                let req = GetOrder {
                    order_id: order_id.clone(),
                };
                let call = rpc.call_active(ORDER_SERVICE, group, "get_order", &req, opts);
                let answer = tokio::select! {
                    () = halt.cancelled() => return (order_id, None),
                    answer = call => answer,
                };
                bar.inc(1);
                match &answer {
                    Err(e) if unanswered(e) => {
                        if lock(last_answer).elapsed() >= timeout {
                            lock(gave_up)
                                .get_or_insert_with(|| aegis_sdk::startup::Causes(e).to_string());
                            halt.cancel();
                            return (order_id, None);
                        }
                    }
                    _ => *lock(last_answer) = Instant::now(),
                }
                (order_id, Some(answer))
            }
        })
        .buffer_unordered(CHECK_CONCURRENCY)
        .collect()
        .await;
    bar.finish_and_clear();
    let mut read = ReadBack {
        gave_up: gave_up.into_inner().unwrap_or_else(|e| e.into_inner()),
        ..ReadBack::default()
    };
    for (order_id, answer) in answers {
        match answer {
            None => read.not_checked.push(order_id),
            Some(Ok(reply)) if reply.value.order_id == order_id => read.found += 1,
            Some(Ok(reply)) => {
                let why = format!("answered with order {}", reply.value.order_id);
                read.unreadable.push((order_id, why));
            }
            Some(Err(e)) if e.code() == ErrorCode::NotFound => read.missing.push(order_id),
            Some(Err(e)) => read
                .unreadable
                .push((order_id, aegis_sdk::startup::Causes(&e).to_string())),
        }
    }
    read
}

/// A `create_order` or `get_order` call's outcome.
type OrderAnswer = Result<aegis_sdk::rpc::Reply<Order>, RpcError>;

/// Whether `e` is no answer from the order service at all (no leader, no
/// responder, no connection, the deadline passed), rather than its answer
/// about the order: every further read would wait as long.
fn unanswered(e: &RpcError) -> bool {
    e.remote().is_none() && matches!(e.code(), ErrorCode::Timeout | ErrorCode::ServiceUnavailable)
}

/// Reads the answered orders back (acknowledged, or settled by a retry)
/// and says which are missing (lost),
/// which could not be read and which were not checked; any of them fails
/// the command, and `interrupt` ends it with [`INTERRUPTED`].
async fn check(
    rpc: &RpcClient,
    group: &str,
    orders: Vec<String>,
    answered: Answered,
    timeout: Duration,
    interrupt: &CancellationToken,
) -> ExitCode {
    let total = orders.len();
    let noun = answered.noun();
    eprintln!(
        "reading the {total} {noun} back from the leader of {ORDER_SERVICE} (group {group}); \
         giving up after {} without an answer (Ctrl-C stops now)",
        humantime::format_duration(timeout)
    );
    let read = read_back_until(rpc, group, orders, timeout, interrupt).await;
    // A signal that came once every order was read changes nothing.
    let interrupted = interrupt.is_cancelled() && !read.not_checked.is_empty();
    if read.missing.is_empty()
        && read.unreadable.is_empty()
        && read.not_checked.is_empty()
        && !interrupted
    {
        if answered.settled == 0 {
            println!("all {total} acknowledged orders are there: none lost");
        } else {
            println!(
                "all {total} orders answered ({} acknowledged, {} settled by a retry) are there: none lost",
                answered.acknowledged, answered.settled
            );
        }
        return ExitCode::SUCCESS;
    }
    if !read.missing.is_empty() {
        let ids: Vec<&str> = read.missing.iter().map(String::as_str).collect();
        println!(
            "LOST: {} of {total} {noun} are not there: {}",
            ids.len(),
            abbreviated(&ids)
        );
    }
    if let Some((id, why)) = read.unreadable.first() {
        println!(
            "{} of {total} {noun} could not be read back (first: {id}: {why})",
            read.unreadable.len()
        );
    }
    if interrupted {
        eprintln!(
            "traffic interrupted while reading the orders back: {} of {total} not checked",
            read.not_checked.len()
        );
        return ExitCode::from(INTERRUPTED);
    }
    if !read.not_checked.is_empty() {
        println!(
            "{} of {total} {noun} not checked: {ORDER_SERVICE} answered nothing for {} ({})",
            read.not_checked.len(),
            humantime::format_duration(timeout),
            read.gave_up.as_deref().unwrap_or("no answer")
        );
    }
    ExitCode::FAILURE
}

/// The first ids of a list, and how many more.
fn abbreviated(ids: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

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

    #[test]
    fn a_report_line_says_the_second_failures_by_code_and_the_leader() {
        let mut window = Window::new();
        assert_eq!(
            report_line(Some(Duration::from_secs(3)), &window),
            "    3.0 s  ok    0  failed 0"
        );
        assert_eq!(report_line(None, &window), "     last  ok    0  failed 0");
        window.ok = 9;
        window.latency.saturating_record(2_500);
        window.failed.insert("TIMEOUT".into(), 2);
        window.failed.insert("NOT_ACTIVE".into(), 1);
        window.served_by = Some(("order-2".into(), Some(3)));
        assert_eq!(
            report_line(Some(Duration::from_millis(12_040)), &window),
            "   12.0 s  ok    9  failed 3 [NOT_ACTIVE×1, TIMEOUT×2]  p99 2.5 ms  leader order-2 (epoch 3)"
        );
    }

    fn reply(status: OrderStatus) -> OrderAnswer {
        let request = CreateOrder {
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: 1,
            price: None,
            client_order_id: "c-1".into(),
        };
        let mut order = Order::new("ord-1".into(), &request, 1, "order-1");
        order.status = status;
        Ok(aegis_sdk::rpc::Reply {
            value: order,
            instance_id: Some("order-1".into()),
            epoch: Some(1),
        })
    }

    fn timeout() -> RpcError {
        RpcError::Timeout {
            subject: "rpc.order-service.create_order".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn remote(error: aegis_sdk::rpc::WireError) -> RpcError {
        RpcError::Remote {
            subject: "rpc.order-service.create_order".into(),
            error,
        }
    }

    /// A failed create_order whose error says the order is decided (its
    /// decision stored, only its event not yet published) was placed.
    fn failed_with_status(status: &str) -> OrderAnswer {
        Err(remote(
            aegis_sdk::rpc::WireError::service_unavailable(
                "the order event could not be published; retry",
            )
            .with_details(serde_json::json!({
                "order_id": format!("ord-{status}"),
                "client_order_id": "c-1",
                "status": status,
            })),
        ))
    }

    #[test]
    fn a_call_says_an_order_decided_certainly_not_placed_or_unknown() {
        let decided = |order_id: &str, filled| Said::Decided {
            order_id: order_id.into(),
            filled,
            served_by: None,
        };
        assert_eq!(
            said(reply(OrderStatus::Filled)),
            Said::Decided {
                order_id: "ord-1".into(),
                filled: true,
                served_by: Some(("order-1".into(), Some(1))),
            }
        );
        assert_eq!(
            said(failed_with_status("filled")),
            decided("ord-filled", true)
        );
        assert_eq!(
            said(failed_with_status("rejected")),
            decided("ord-rejected", false)
        );
        let unknown = |code: &str| Said::Unknown(code.into());
        // Recorded and pending: a retry decides it.
        assert_eq!(said(reply(OrderStatus::Pending)), unknown("PENDING"));
        assert_eq!(
            said(failed_with_status("pending")),
            unknown("SERVICE_UNAVAILABLE")
        );
        // Perhaps recorded.
        assert_eq!(said(Err(timeout())), unknown("TIMEOUT"));
        assert_eq!(
            said(Err(RpcError::NoResponders {
                subject: "rpc.order-service.order-1.create_order".into()
            })),
            unknown("SERVICE_UNAVAILABLE")
        );
        assert_eq!(
            said(Err(remote(aegis_sdk::rpc::WireError::service_unavailable(
                "pricing-service is unavailable; retry"
            )))),
            unknown("SERVICE_UNAVAILABLE")
        );
        // Certainly not recorded: nothing sent, or refused as invalid.
        assert_eq!(
            said(Err(RpcError::NoLeader {
                service: "order-service".into(),
                group: "default".into(),
                waited: Duration::from_secs(5),
            })),
            Said::NotPlaced("SERVICE_UNAVAILABLE".into())
        );
        assert_eq!(
            said(Err(remote(aegis_sdk::rpc::WireError::invalid_request(
                "symbol: XYZ is not a traded symbol"
            )))),
            Said::NotPlaced("INVALID_REQUEST".into())
        );
    }

    #[test]
    fn a_tally_tells_acknowledged_settled_failed_and_unknown_orders_apart() {
        let mut tally = Tally::new();
        let ms = Duration::from_millis(2);
        tally.record(ms, &said(reply(OrderStatus::Filled)), false);
        tally.record(ms, &said(failed_with_status("rejected")), false);
        // Timed out, then settled by a retry.
        tally.record(Duration::from_secs(5), &said(Err(timeout())), false);
        tally.record(ms, &said(failed_with_status("filled")), true);
        // Timed out, and no retry answered.
        let lost_track = said(Err(timeout()));
        tally.record(Duration::from_secs(5), &lost_track, false);
        tally.gave_up(&lost_track, "c-9");
        // Nothing sent.
        let no_leader = said(Err(RpcError::NoLeader {
            service: "order-service".into(),
            group: "default".into(),
            waited: Duration::from_secs(5),
        }));
        tally.record(Duration::from_secs(5), &no_leader, false);
        tally.gave_up(&no_leader, "c-10");
        assert_eq!(tally.sent(), 5);
        assert_eq!(tally.answered(), 3);
        assert_eq!((tally.filled, tally.rejected()), (1, 1));
        assert_eq!(tally.acked, ["ord-1", "ord-rejected"]);
        assert_eq!(tally.settled, ["ord-filled"]);
        assert_eq!(
            tally.settled_text(),
            "1 settled by a retry (1 filled, 0 rejected)"
        );
        assert_eq!(failures(&tally.failed), "1 [SERVICE_UNAVAILABLE×1]");
        assert_eq!(failures(&tally.unknown), "1 [TIMEOUT×1]");
        assert_eq!(tally.unknown_ids, ["c-9"]);
        // The second's line: every answer, every failed call.
        assert_eq!(tally.window.ok, 3);
        assert_eq!(
            failures(&tally.window.failed),
            "3 [SERVICE_UNAVAILABLE×1, TIMEOUT×2]"
        );
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

    #[test]
    fn long_lists_of_ids_are_cut_short() {
        let ids: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(
            abbreviated(&ids),
            "o0, o1, o2, o3, o4, o5, o6, o7, o8, o9 and 2 more"
        );
        assert_eq!(abbreviated(&ids[..2]), "o0, o1");
    }
}
