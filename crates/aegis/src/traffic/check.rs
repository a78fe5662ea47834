//! Checking an `aegis traffic` run: every order the service answered is
//! read back from the leader ([`read_back`]), and [`check`] says which are
//! lost, which could not be read and which were not checked.

use std::{collections::HashMap, process::ExitCode, sync::Mutex, time::Duration};

use aegis_contracts::{trading::ORDER_SERVICE, wire::ErrorCode};
use aegis_sdk::rpc::{CallOptions, RpcClient, RpcError};
use aegis_trading::order::{self, GetOrder};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::bench::lock;

use super::{INTERRUPTED, OrderAnswer, tally::abbreviated};

/// Orders read back at once when checking.
const CHECK_CONCURRENCY: usize = 16;

/// How many of the orders read back were acknowledged at once, and how
/// many settled by a retry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Answered {
    pub(super) acknowledged: usize,
    pub(super) settled: usize,
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

/// What reading acknowledged orders back from the leader found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadBack {
    /// Orders that are there.
    pub found: usize,
    /// Orders the leader does not have (`NOT_FOUND`): lost, unless they
    /// were answered longer than [`ReadBack::kept_for`] ago.
    pub missing: Vec<String>,
    /// How long the order service keeps a settled order, as its
    /// `NOT_FOUND` answers say (`order::KEPT_FOR_SECS`); `None` when none
    /// said it.
    pub kept_for: Option<Duration>,
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
            Some(Err(e)) if e.code() == ErrorCode::NotFound => {
                let kept_for = e
                    .remote()
                    .and_then(|w| w.details.as_ref())
                    .and_then(|d| d.get(order::KEPT_FOR_SECS))
                    .and_then(serde_json::Value::as_u64)
                    .map(Duration::from_secs);
                read.kept_for = read.kept_for.max(kept_for);
                read.missing.push(order_id);
            }
            Some(Err(e)) => read
                .unreadable
                .push((order_id, aegis_sdk::startup::Causes(&e).to_string())),
        }
    }
    read
}

/// Whether `e` is no answer from the order service at all (no leader, no
/// responder, no connection, the deadline passed), rather than its answer
/// about the order: every further read would wait as long.
fn unanswered(e: &RpcError) -> bool {
    e.remote().is_none() && matches!(e.code(), ErrorCode::Timeout | ErrorCode::ServiceUnavailable)
}

/// Reads the answered orders back (acknowledged, or settled by a retry;
/// each with the earliest its settling write can have been) and says which
/// have expired from the service, which are missing (lost),
/// which could not be read and which were not checked; any of them fails
/// the command, and `interrupt` ends it with [`INTERRUPTED`].
pub(super) async fn check(
    rpc: &RpcClient,
    group: &str,
    orders: Vec<(String, std::time::Instant)>,
    answered: Answered,
    timeout: Duration,
    interrupt: &CancellationToken,
) -> ExitCode {
    let total = orders.len();
    let noun = answered.noun();
    let written_from: HashMap<String, std::time::Instant> = orders.iter().cloned().collect();
    let orders: Vec<String> = orders.into_iter().map(|(id, _)| id).collect();
    eprintln!(
        "reading the {total} {noun} back from the leader of {ORDER_SERVICE} (group {group}); \
         giving up after {} without an answer (Ctrl-C stops now)",
        humantime::format_duration(timeout)
    );
    let mut read = read_back_until(rpc, group, orders, timeout, interrupt).await;
    // Settled orders expire from the service after a while, counted from
    // the write that settled them: one that may have been written longer
    // ago than that is not there by design, not lost.
    let expired = read.kept_for.map_or_else(Vec::new, |kept_for| {
        let (expired, lost) = std::mem::take(&mut read.missing)
            .into_iter()
            .partition(|id| {
                written_from
                    .get(id)
                    .is_some_and(|at| at.elapsed() >= kept_for)
            });
        read.missing = lost;
        expired
    });
    if !expired.is_empty() {
        println!(
            "{} of {total} {noun} were answered more than {} ago and have expired from \
             {ORDER_SERVICE} (its --keep-settled): not checked",
            expired.len(),
            humantime::format_duration(read.kept_for.unwrap_or_default())
        );
    }
    // A signal that came once every order was read changes nothing.
    let interrupted = interrupt.is_cancelled() && !read.not_checked.is_empty();
    if read.missing.is_empty()
        && read.unreadable.is_empty()
        && read.not_checked.is_empty()
        && !interrupted
    {
        let there = total - expired.len();
        if !expired.is_empty() {
            println!("the other {there} are there: none lost");
        } else if answered.settled == 0 {
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
