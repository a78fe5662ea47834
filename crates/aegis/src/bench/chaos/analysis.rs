//! From the records to the verdict: per fault, the unavailability window,
//! failed calls, acknowledged orders lost, duplicate fills, acknowledged
//! events lost, writes under a deposed epoch, how long two ACTIVE were
//! visible, how soon a dead instance was shown down and how soon the view
//! was true again.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE};
use aegis_sdk::{Connection, rpc::CallOptions};
use aegis_trading::order::{GetOrder, Order, OrderStatus};
use futures::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    faults::{Injected, ms},
    load::{Outcome, Records},
    poller::Poll,
};

/// The numbers of one fault (or of the quiet time before the first).
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct FaultNumbers {
    /// Longest gap between two successful creates around the fault (ms).
    pub(crate) unavailable_ms: f64,
    /// Calls sent in the fault's window.
    pub(crate) calls: usize,
    /// Calls that failed in the fault's window: counted by when they
    /// failed, so a call sent just before a fault and failed by it counts
    /// for that fault, not for the one before.
    pub(crate) failed_calls: usize,
    /// Acknowledged orders not readable (or not final, or changed) at the end.
    pub(crate) acked_lost: usize,
    /// Orders with more than one `order.filled` event.
    pub(crate) duplicate_fills: usize,
    /// Acknowledged orders whose created or outcome event never arrived.
    pub(crate) events_lost: usize,
    /// Order writes under an epoch older than the election's latest.
    pub(crate) stale_epoch_writes: usize,
    /// Time two ACTIVE instances of one group were visible in the API (ms).
    pub(crate) two_active_ms: f64,
    /// Polls showing two ACTIVE.
    pub(crate) two_active_polls: usize,
    /// From the signal to the first poll showing the victim down (ms);
    /// for faults that end a service process.
    pub(crate) down_seen_ms: Option<f64>,
    /// From the signal until the view was true for good (ms), while the
    /// victim was still down.
    pub(crate) view_true_after_ms: Option<f64>,
    /// The view was still untrue when the victim came back (or the NATS
    /// node was started again).
    pub(crate) untrue_at_settle_end: bool,
    /// A few of the differences seen (for the JSON).
    pub(crate) example_mismatches: Vec<String>,
    /// Why calls failed (a few, for the JSON).
    pub(crate) example_failures: Vec<String>,
    /// Who wrote under a deposed epoch (`instance@epoch`).
    pub(crate) stale_writers: Vec<String>,
}

/// What the final read-back found per acknowledged order.
#[derive(Debug, Default)]
pub(crate) struct ReadBack {
    /// Order ids not readable as acknowledged.
    pub(crate) lost: HashSet<String>,
}

/// The acknowledged orders: (order id, status answered).
pub(crate) fn acked(records: &Records) -> Vec<(String, OrderStatus)> {
    records
        .calls
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Acked { order_id, status } => Some((order_id.clone(), *status)),
            Outcome::Failed(_) => None,
        })
        .collect()
}

/// Reads every acknowledged order back through the leader.
pub(crate) async fn read_back(conn: &Connection, acked: Vec<(String, OrderStatus)>) -> ReadBack {
    let rpc = conn.rpc();
    let opts = CallOptions::timeout(Duration::from_secs(10)).idempotent();
    let lost: HashSet<String> = futures::stream::iter(acked)
        .map(|(order_id, status)| {
            let (rpc, opts) = (rpc.clone(), opts.clone());
            async move {
                let req = GetOrder {
                    order_id: order_id.clone(),
                };
                let got = rpc
                    .call_active::<_, Order>(ORDER_SERVICE, ORDER_GROUP, "get_order", &req, &opts)
                    .await;
                match got {
                    Ok(r) if r.value.status == status => None,
                    _ => Some(order_id),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    ReadBack { lost }
}

/// Acknowledged orders still missing an event.
pub(crate) fn missing_events(records: &Records) -> HashSet<String> {
    let has = |id: &str, action: &str| {
        records
            .events
            .get(&(id.to_owned(), action.to_owned()))
            .is_some_and(|s| !s.is_empty())
    };
    records
        .calls
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Acked { order_id, status } => {
                let outcome = if *status == OrderStatus::Filled {
                    "filled"
                } else {
                    "rejected"
                };
                (!(has(order_id, "created") && has(order_id, outcome))).then(|| order_id.clone())
            }
            Outcome::Failed(_) => None,
        })
        .collect()
}

/// For the JSON: each acknowledged order still missing an event, with the
/// events of it that did arrive (action and stream sequences).
pub(crate) fn describe_missing(records: &Records, missing: &HashSet<String>) -> serde_json::Value {
    let mut ids: Vec<&String> = missing.iter().collect();
    ids.sort();
    ids.into_iter()
        .map(|id| {
            let arrived: serde_json::Map<String, serde_json::Value> = records
                .events
                .iter()
                .filter(|((order, _), _)| order == id)
                .map(|((_, action), sequences)| (action.clone(), serde_json::json!(sequences)))
                .collect();
            serde_json::json!({ "order_id": id, "arrived": arrived })
        })
        .collect()
}

/// The numbers of each window: `[start, end)` per fault, the first
/// starting at `begin` (the quiet baseline is the window before it).
pub(crate) fn numbers(
    faults: &[Injected],
    records: &Records,
    polls: &[Poll],
    read_back: &ReadBack,
    missing: &HashSet<String>,
    begin: Instant,
    end: Instant,
) -> (FaultNumbers, Vec<FaultNumbers>) {
    let starts: Vec<Instant> = faults.iter().filter_map(|f| f.injected).collect();
    // Which window a moment belongs to: None before the first fault.
    let window = |t: Instant| starts.iter().rposition(|s| *s <= t);
    let mut per: Vec<FaultNumbers> = vec![FaultNumbers::default(); faults.len()];
    let mut base = FaultNumbers::default();
    let order_window: HashMap<&str, Option<usize>> = records
        .calls
        .iter()
        .filter_map(|c| match &c.outcome {
            Outcome::Acked { order_id, .. } => Some((order_id.as_str(), window(c.sent))),
            Outcome::Failed(_) => None,
        })
        .collect();
    // The numbers of window `w` (`None`: before the first fault).
    macro_rules! at {
        ($w:expr) => {
            match $w {
                Some(i) => &mut per[i],
                None => &mut base,
            }
        };
    }
    for c in &records.calls {
        at!(window(c.sent)).calls += 1;
        if let Outcome::Failed(why) = &c.outcome {
            let n = at!(window(c.answered));
            n.failed_calls += 1;
            if n.example_failures.len() < 3 && !n.example_failures.contains(why) {
                n.example_failures.push(why.clone());
            }
        }
    }
    for id in &read_back.lost {
        at!(order_window.get(id.as_str()).copied().flatten()).acked_lost += 1;
    }
    for id in missing {
        at!(order_window.get(id.as_str()).copied().flatten()).events_lost += 1;
    }
    for ((id, action), seqs) in &records.events {
        if action == "filled" && seqs.len() > 1 {
            at!(order_window.get(id.as_str()).copied().flatten()).duplicate_fills += 1;
        }
    }
    // Writes under an epoch older than one the election had already
    // committed when the write was stored: a deposed leader writing.
    for w in &records.writes {
        let newer = records
            .takeovers
            .iter()
            .filter(|t| t.written < w.written)
            .filter_map(|t| t.holder.as_ref().map(|h| h.epoch))
            .max()
            .unwrap_or(0);
        if w.epoch < newer {
            let n = at!(window(w.seen));
            n.stale_epoch_writes += 1;
            let who = format!("{}@{}", w.instance_id, w.epoch);
            if !n.stale_writers.contains(&who) {
                n.stale_writers.push(who);
            }
        }
    }
    for pair in polls.windows(2) {
        let (p, next) = (&pair[0], &pair[1]);
        if p.two_active {
            let n = at!(window(p.at));
            n.two_active_ms += ms(next.at - p.at);
            n.two_active_polls += 1;
        }
    }
    let mut acked: Vec<Instant> = records
        .calls
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Acked { .. }))
        .map(|c| c.answered)
        .collect();
    acked.sort();
    // Each gap between two successful answers (the last one running to the
    // end) belongs to the window its middle falls in: an outage begins a
    // little before the fault that causes it.
    for (from, to) in gaps(&acked, begin, end) {
        let n = at!(window(from + (to - from) / 2));
        n.unavailable_ms = n.unavailable_ms.max(ms(to - from));
    }
    for (i, f) in faults.iter().enumerate() {
        let (Some(injected), Some(settled), Some(recovered)) = (f.injected, f.settled, f.recovered)
        else {
            continue;
        };
        let n = &mut per[i];
        if f.fault.is_some_and(|f| f.kills_a_service()) {
            n.down_seen_ms = polls
                .iter()
                .find(|p| p.at > injected && !p.up.contains(&f.victim))
                .map(|p| ms(p.at - injected));
        }
        // While the victim is still down; when the view is untrue at the
        // end of that, until it was true during the recovery.
        n.view_true_after_ms = true_after(polls, injected, settled);
        if n.view_true_after_ms.is_none() {
            n.untrue_at_settle_end = true;
            n.view_true_after_ms = true_after(polls, injected, recovered);
        }
        let mut examples: Vec<String> = polls
            .iter()
            .filter(|p| p.at > injected && p.at <= recovered)
            .flat_map(|p| p.mismatches.iter().cloned())
            .collect();
        examples.dedup();
        examples.truncate(5);
        n.example_mismatches = examples;
    }
    (base, per)
}

/// From `from` until the view was true for good within `(from, to]` (ms);
/// `None` when the last poll of that stretch was untrue.
fn true_after(polls: &[Poll], from: Instant, to: Instant) -> Option<f64> {
    let stretch: Vec<&Poll> = polls.iter().filter(|p| p.at > from && p.at <= to).collect();
    match stretch.iter().rposition(|p| !p.mismatches.is_empty()) {
        None => Some(0.0),
        Some(last_bad) => stretch.get(last_bad + 1).map(|p| ms(p.at - from)),
    }
}

/// The stretches without a successful answer: from `begin` to the first,
/// between consecutive ones, from the last to `end`.
fn gaps(acked: &[Instant], begin: Instant, end: Instant) -> Vec<(Instant, Instant)> {
    let mut points = vec![begin];
    points.extend(acked.iter().copied().filter(|t| *t >= begin && *t <= end));
    points.push(end);
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call sent in one fault's window and failed in the next: its
    /// failure is the next fault's.
    #[test]
    fn a_failure_counts_for_the_window_it_happened_in() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let fault = |name: &str, injected: u64| Injected {
            name: name.into(),
            victim: "nats-n1".into(),
            stream_leaders: vec![],
            fault: None,
            injected: Some(at(injected)),
            settled: None,
            recovered: None,
            recovery_ms: 0.0,
        };
        let call = |sent: u64, answered: u64, outcome: Outcome| super::super::load::Call {
            sent: at(sent),
            answered: at(answered),
            outcome,
        };
        let records = Records {
            calls: vec![
                call(
                    50,
                    60,
                    Outcome::Acked {
                        order_id: "o-1".into(),
                        status: OrderStatus::Filled,
                    },
                ),
                call(990, 1500, Outcome::Failed("SERVICE_UNAVAILABLE".into())),
            ],
            ..Records::default()
        };
        let faults = [fault("stop-leader", 0), fault("kill-nats-1", 1000)];
        let (_, per) = numbers(
            &faults,
            &records,
            &[],
            &ReadBack::default(),
            &HashSet::new(),
            at(0),
            at(2000),
        );
        assert_eq!((per[0].calls, per[0].failed_calls), (2, 0));
        assert_eq!((per[1].calls, per[1].failed_calls), (0, 1));
        assert_eq!(per[1].example_failures, ["SERVICE_UNAVAILABLE"]);
    }

    #[test]
    fn gaps_between_answers() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let acked = [at(10), at(20), at(1020)];
        let g = gaps(&acked, at(0), at(1100));
        let lengths: Vec<f64> = g.iter().map(|(a, b)| ms(*b - *a)).collect();
        assert_eq!(lengths, vec![10.0, 10.0, 1000.0, 80.0]);
    }
}
