//! The results table of `aegis bench chaos`: per fault, its rounds summed
//! up per kind, then the totals with the bounds that decide the exit status.

use super::{
    analysis,
    faults::{Fault, Injected},
    load,
};
use crate::bench::report::{Bound, Outcome, percentile};

/// Rows: per fault, then the totals with their bounds.
pub(super) fn table(
    outcome: &mut Outcome,
    injected: &[Injected],
    base: &analysis::FaultNumbers,
    per: &[analysis::FaultNumbers],
    records: &load::Records,
    polls: usize,
) {
    let zero = Some(Bound::AtMost(0.0));
    // Failed calls are reported, not bounded: what a fault costs callers is
    // what is measured; loss, duplicates and false views are the bounds.
    outcome.add(
        "before the faults: failed calls",
        "calls",
        base.failed_calls as f64,
        None,
    );
    for (f, n) in injected.iter().zip(per) {
        let name = if f.stream_leaders.is_empty() {
            format!("{} ({})", f.name, f.victim)
        } else {
            format!("{} (led {})", f.name, f.stream_leaders.len())
        };
        outcome.add(
            &format!("{name}: unavailable"),
            "ms",
            n.unavailable_ms.round(),
            None,
        );
        outcome.add(
            &format!("{}: failed calls", f.name),
            "calls",
            n.failed_calls as f64,
            None,
        );
        if let Some(d) = n.down_seen_ms {
            outcome.add(
                &format!("{}: shown down after", f.name),
                "ms",
                d.round(),
                Some(Bound::AtMost(1000.0)),
            );
        }
        let late = if n.untrue_at_settle_end {
            " (during recovery)"
        } else {
            ""
        };
        match n.view_true_after_ms {
            Some(v) => outcome.add(
                &format!("{}: view true again after{late}", f.name),
                "ms",
                v.round(),
                None,
            ),
            None => outcome.add(
                &format!("{}: view untrue after recovery", f.name),
                "polls",
                1.0,
                zero,
            ),
        }
        if n.two_active_polls > 0 {
            outcome.add(
                &format!("{}: two ACTIVE visible", f.name),
                "ms",
                n.two_active_ms.round(),
                zero,
            );
        }
    }
    over_rounds(outcome, injected, per);
    let sum = |f: fn(&analysis::FaultNumbers) -> usize| {
        (f(base) + per.iter().map(f).sum::<usize>()) as f64
    };
    let calls = records.calls.len();
    let acked = records
        .calls
        .iter()
        .filter(|c| matches!(c.outcome, load::Outcome::Acked { .. }))
        .count();
    outcome.add("orders acknowledged", "orders", acked as f64, None);
    outcome.add(
        "calls failed (all faults)",
        "calls",
        (calls - acked) as f64,
        None,
    );
    outcome.add(
        "acknowledged orders lost",
        "orders",
        sum(|n| n.acked_lost),
        zero,
    );
    outcome.add(
        "duplicate fills",
        "orders",
        sum(|n| n.duplicate_fills),
        zero,
    );
    outcome.add(
        "acknowledged events lost",
        "orders",
        sum(|n| n.events_lost),
        zero,
    );
    outcome.add(
        "writes under a deposed epoch",
        "writes",
        sum(|n| n.stale_epoch_writes),
        zero,
    );
    let two: f64 = base.two_active_ms + per.iter().map(|n| n.two_active_ms).sum::<f64>();
    outcome.add(
        &format!("two ACTIVE visible ({polls} polls)"),
        "ms",
        two.round(),
        zero,
    );
    let down: Vec<f64> = per.iter().filter_map(|n| n.down_seen_ms).collect();
    if let Some(p99) = percentile(&down, 0.99) {
        outcome.add(
            "dead instance shown down p99",
            "ms",
            p99.round(),
            Some(Bound::AtMost(1000.0)),
        );
    }
    let recovery: Vec<f64> = injected.iter().map(|f| f.recovery_ms).collect();
    if let Some(max) = percentile(&recovery, 1.0) {
        outcome.add("fault to full fleet, max", "ms", max.round(), None);
    }
}

/// The streams an order waits on: its leader's election key and its store.
/// A NATS node that leads one of them costs the sticky order service a
/// JetStream election when it dies.
const ORDER_PATH_STREAMS: [&str; 2] = ["KV_service_elections", "KV_orders"];

/// What a fault is, for comparing rounds: the fault itself, or for a NATS
/// node's SIGKILL, which of the order path's stream leaders it held (the
/// node's number says nothing: leaders move between rounds).
fn kind_of(f: &Injected) -> String {
    match f.fault {
        // No leader read at all: the queries timed out, or it led nothing.
        Some(Fault::KillNats(_)) if f.stream_leaders.is_empty() => {
            "kill a NATS node whose stream leaders were not read".to_owned()
        }
        Some(Fault::KillNats(_)) => {
            let led: Vec<&str> = ORDER_PATH_STREAMS
                .into_iter()
                .filter(|s| f.stream_leaders.iter().any(|l| l == s))
                .collect();
            if led.is_empty() {
                "kill a NATS node leading neither KV_service_elections nor KV_orders".to_owned()
            } else {
                format!("kill the NATS node leading {}", led.join(" and "))
            }
        }
        Some(fault) => fault.to_string(),
        None => f.name.clone(),
    }
}

/// Per kind of fault injected more than once: the unavailability's p50 and
/// max over its injections, and the failed calls in all of them.
fn over_rounds(outcome: &mut Outcome, injected: &[Injected], per: &[analysis::FaultNumbers]) {
    let mut kinds: Vec<(String, Vec<f64>, usize)> = Vec::new();
    for (f, n) in injected.iter().zip(per) {
        let kind = kind_of(f);
        let at = match kinds.iter().position(|(k, ..)| *k == kind) {
            Some(at) => at,
            None => {
                kinds.push((kind, Vec::new(), 0));
                kinds.len() - 1
            }
        };
        kinds[at].1.push(n.unavailable_ms);
        kinds[at].2 += n.failed_calls;
    }
    for (kind, unavailable, failed) in kinds {
        let times = unavailable.len();
        let (Some(p50), Some(max)) = (percentile(&unavailable, 0.5), percentile(&unavailable, 1.0))
        else {
            continue;
        };
        if times < 2 {
            continue;
        }
        outcome.add(
            &format!("{kind} ×{times}: unavailable p50"),
            "ms",
            p50.round(),
            None,
        );
        outcome.add(
            &format!("{kind} ×{times}: unavailable max"),
            "ms",
            max.round(),
            None,
        );
        outcome.add(
            &format!("{kind} ×{times}: failed calls"),
            "calls",
            failed as f64,
            None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn injected(fault: Fault, leaders: &[&str]) -> Injected {
        Injected {
            name: fault.to_string(),
            victim: "x".to_owned(),
            stream_leaders: leaders.iter().map(|l| (*l).to_owned()).collect(),
            fault: Some(fault),
            injected: None,
            settled: None,
            recovered: None,
            recovery_ms: 0.0,
        }
    }

    fn numbers(unavailable_ms: f64, failed_calls: usize) -> analysis::FaultNumbers {
        analysis::FaultNumbers {
            unavailable_ms,
            failed_calls,
            ..Default::default()
        }
    }

    #[test]
    fn rounds_are_summed_up_per_kind_and_nats_kills_by_the_leaders_they_held() {
        let injected = [
            injected(Fault::KillLeader, &[]),
            injected(Fault::KillNats(1), &["EVENTS", "KV_orders"]),
            injected(Fault::KillNats(2), &["EVENTS"]),
            injected(Fault::KillLeader, &[]),
            injected(Fault::KillNats(3), &["KV_orders"]),
            injected(Fault::KillLeader, &[]),
            injected(Fault::TermLeader, &[]),
        ];
        let per = [
            numbers(300.0, 0),
            numbers(6000.0, 2),
            numbers(50.0, 0),
            numbers(500.0, 1),
            numbers(7000.0, 1),
            numbers(400.0, 0),
            numbers(90.0, 0),
        ];
        let mut outcome = Outcome::new("chaos", "2.12".into(), serde_json::json!({}));
        over_rounds(&mut outcome, &injected, &per);
        let rows: Vec<(String, f64)> = outcome
            .rows
            .iter()
            .map(|r| (r.metric.clone(), r.value))
            .collect();
        let row = |m: &str| rows.iter().find(|(n, _)| n == m).map(|(_, v)| *v);
        assert_eq!(row("kill-leader ×3: unavailable p50"), Some(400.0));
        assert_eq!(row("kill-leader ×3: unavailable max"), Some(500.0));
        assert_eq!(row("kill-leader ×3: failed calls"), Some(1.0));
        let orders = "kill the NATS node leading KV_orders ×2";
        assert_eq!(row(&format!("{orders}: unavailable p50")), Some(6000.0));
        assert_eq!(row(&format!("{orders}: unavailable max")), Some(7000.0));
        assert_eq!(row(&format!("{orders}: failed calls")), Some(3.0));
        // Kinds seen once have their own rows already.
        assert_eq!(rows.len(), 6, "{rows:?}");
    }
}
