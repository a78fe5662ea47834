//! The overlap check of `aegis bench failover --sticky`: did two instances
//! ever serve as the ACTIVE leader at the same time?
//!
//! Input: every answer an instance gave *as leader* — a successful leader-only
//! call, which carries the leader's fencing epoch — with the times the
//! observer sent the request and received the reply, both on the observer's
//! own monotonic clock (one clock for every instance, so no clock skew
//! between processes enters the comparison). The instance served the request
//! at some unknown moment inside `[sent, received]`.
//!
//! A leader term is identified by its epoch (the revision of the winning
//! election write): it only grows, and one term belongs to one instance. For
//! two terms with epochs `a < b`, term `a` must have stopped serving before
//! term `b` started. The observer can prove that only when *every* answer of
//! `a` was received before *any* answer of `b` was sent: `max received(a) <
//! min sent(b)`. A pair of terms where that fails is one of two kinds:
//!
//! - **proven overlap**: some answer of `a` was sent after some answer of `b`
//!   had been received (`max sent(a) > min received(b)`): the older leader
//!   served after the newer one had — a stale leader serving;
//! - **unresolved**: answer windows of the two leaders overlap in time, so
//!   their order cannot be told apart (the observer's resolution is one round
//!   trip, plus its own scheduling delay).
//!
//! Both count against the zero target; the report keeps them apart. The
//! margin `min sent(b) − max received(a)` of each hand-over says by how much
//! the order was proven.
//!
//! Also counted: an epoch answered by two different instances, and terms
//! whose epochs do not grow in the order the terms began.
//!
//! Resolution: an overlap shorter than the gap between two probes of the same
//! instance could fall between probes and go unseen; the report gives the
//! probe period and the number of answers so the reader can judge.

use std::{collections::BTreeMap, time::Duration};

use serde::Serialize;

/// One answer given as leader.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LeaderAnswer {
    /// The instance that answered.
    pub(crate) instance: String,
    /// The fencing epoch the answer carried.
    pub(crate) epoch: u64,
    /// When the request was sent (observer clock, from the run's start).
    pub(crate) sent: Duration,
    /// When the reply was received.
    pub(crate) received: Duration,
}

/// One leader term as observed.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Term {
    /// The leader's instance id.
    pub(crate) instance: String,
    /// Its epoch.
    pub(crate) epoch: u64,
    /// Earliest send of an answer of this term (ms from the start).
    pub(crate) first_sent_ms: f64,
    /// Latest receipt of an answer of this term (ms from the start).
    pub(crate) last_received_ms: f64,
    /// Answers observed in this term.
    pub(crate) answers: usize,
}

/// A hand-over between consecutive terms and how clearly it was ordered.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Handover {
    /// Outgoing leader.
    pub(crate) from: String,
    /// Its epoch.
    pub(crate) from_epoch: u64,
    /// Incoming leader.
    pub(crate) to: String,
    /// Its epoch.
    pub(crate) to_epoch: u64,
    /// `first sent(to) − last received(from)` in ms; positive means proven
    /// ordered.
    pub(crate) margin_ms: f64,
}

/// The verdict.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OverlapReport {
    /// Leader answers analysed.
    pub(crate) answers: usize,
    /// Terms seen.
    pub(crate) terms: usize,
    /// Pairs of terms where the older one answered after the newer one.
    pub(crate) proven: usize,
    /// Pairs of terms whose answer windows overlap (order unresolved).
    pub(crate) unresolved: usize,
    /// Epochs answered by more than one instance.
    pub(crate) epoch_conflicts: usize,
    /// Consecutive terms (by first answer) whose epoch did not grow.
    pub(crate) epoch_regressions: usize,
    /// The smallest hand-over margin (ms), when there was a hand-over.
    pub(crate) min_margin_ms: Option<f64>,
    /// Every hand-over, in order.
    pub(crate) handovers: Vec<Handover>,
    /// Every term, in order of its first answer.
    pub(crate) term_list: Vec<Term>,
}

impl OverlapReport {
    /// Overlaps of any kind: the number the zero target applies to.
    pub(crate) fn violations(&self) -> usize {
        self.proven + self.unresolved + self.epoch_conflicts + self.epoch_regressions
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Analyses leader answers (any order).
pub(crate) fn analyse(answers: &[LeaderAnswer]) -> OverlapReport {
    struct Acc {
        instances: Vec<String>,
        first_sent: Duration,
        first_received: Duration,
        last_sent: Duration,
        last_received: Duration,
        answers: usize,
    }
    let mut by_epoch: BTreeMap<u64, Acc> = BTreeMap::new();
    for a in answers {
        let acc = by_epoch.entry(a.epoch).or_insert_with(|| Acc {
            instances: Vec::new(),
            first_sent: a.sent,
            first_received: a.received,
            last_sent: a.sent,
            last_received: a.received,
            answers: 0,
        });
        if !acc.instances.contains(&a.instance) {
            acc.instances.push(a.instance.clone());
        }
        acc.first_sent = acc.first_sent.min(a.sent);
        acc.first_received = acc.first_received.min(a.received);
        acc.last_sent = acc.last_sent.max(a.sent);
        acc.last_received = acc.last_received.max(a.received);
        acc.answers += 1;
    }
    let epoch_conflicts = by_epoch.values().filter(|a| a.instances.len() > 1).count();
    // Ascending epochs: every later term must begin after every earlier one
    // ended.
    let terms: Vec<&Acc> = by_epoch.values().collect();
    let (mut proven, mut unresolved) = (0, 0);
    for (i, older) in terms.iter().enumerate() {
        for newer in &terms[i + 1..] {
            if older.last_sent > newer.first_received {
                proven += 1;
            } else if older.last_received >= newer.first_sent {
                unresolved += 1;
            }
        }
    }
    let mut term_list: Vec<Term> = by_epoch
        .into_iter()
        .map(|(epoch, a)| Term {
            instance: a.instances.join("+"),
            epoch,
            first_sent_ms: ms(a.first_sent),
            last_received_ms: ms(a.last_received),
            answers: a.answers,
        })
        .collect();
    term_list.sort_by(|a, b| a.first_sent_ms.total_cmp(&b.first_sent_ms));
    let handovers: Vec<Handover> = term_list
        .windows(2)
        .map(|w| Handover {
            from: w[0].instance.clone(),
            from_epoch: w[0].epoch,
            to: w[1].instance.clone(),
            to_epoch: w[1].epoch,
            margin_ms: w[1].first_sent_ms - w[0].last_received_ms,
        })
        .collect();
    let epoch_regressions = handovers
        .iter()
        .filter(|h| h.to_epoch <= h.from_epoch)
        .count();
    OverlapReport {
        answers: answers.len(),
        terms: term_list.len(),
        proven,
        unresolved,
        epoch_conflicts,
        epoch_regressions,
        min_margin_ms: handovers.iter().map(|h| h.margin_ms).min_by(f64::total_cmp),
        handovers,
        term_list,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ans(instance: &str, epoch: u64, sent_ms: u64, received_ms: u64) -> LeaderAnswer {
        LeaderAnswer {
            instance: instance.into(),
            epoch,
            sent: Duration::from_millis(sent_ms),
            received: Duration::from_millis(received_ms),
        }
    }

    #[test]
    fn clean_handovers_have_no_overlap_and_positive_margins() {
        let r = analyse(&[
            ans("a", 1, 0, 1),
            ans("a", 1, 10, 11),
            ans("b", 5, 20, 21),
            ans("b", 5, 30, 31),
            ans("c", 9, 40, 41),
        ]);
        assert_eq!(r.terms, 3);
        assert_eq!(r.violations(), 0);
        assert_eq!(r.min_margin_ms, Some(9.0));
        assert_eq!(r.handovers.len(), 2);
    }

    #[test]
    fn overlapping_windows_count_even_when_order_is_plausible() {
        // b's first answer was sent before a's last one came back.
        let r = analyse(&[ans("a", 1, 0, 10), ans("b", 2, 9, 12)]);
        assert_eq!((r.proven, r.unresolved), (0, 1));
        assert_eq!(r.violations(), 1);
        assert!(r.min_margin_ms.unwrap() < 0.0);
    }

    #[test]
    fn a_stale_leader_answering_after_its_successor_is_an_overlap() {
        let r = analyse(&[
            ans("a", 1, 0, 1),
            ans("b", 2, 10, 11),
            ans("a", 1, 20, 21),
            ans("c", 3, 30, 31),
        ]);
        // a(1) overlaps b(2); c(3) starts after both ended.
        assert_eq!((r.proven, r.unresolved), (1, 0));
    }

    #[test]
    fn epoch_conflicts_and_regressions_are_counted() {
        let r = analyse(&[ans("a", 3, 0, 1), ans("b", 3, 10, 11)]);
        assert_eq!(r.epoch_conflicts, 1);
        let r = analyse(&[ans("a", 5, 0, 1), ans("b", 4, 10, 11)]);
        // Epoch 4 began after epoch 5 ended: the epoch went backwards, and
        // in epoch order the older term (4) ran after the newer one.
        assert_eq!(r.epoch_regressions, 1);
        assert_eq!(r.proven, 1);
    }
}
