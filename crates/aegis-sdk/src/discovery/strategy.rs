//! How a call picks one of a service's selectable (ACTIVE, not evicted)
//! instances: [`Strategy`] and the selection over a member list.
//!
//! Every strategy skips the instances a call has already tried, so a retry
//! after a missing responder or a timed-out idempotent attempt goes
//! elsewhere.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use rand::Rng;

use super::{ring::Ring, stats::CallStats};

/// How a call chooses among a service's ACTIVE instances.
///
/// ```
/// use aegis_sdk::{discovery::Strategy, rpc::CallOptions};
///
/// let opts = CallOptions { strategy: Some(Strategy::Random), ..Default::default() };
/// assert_eq!(Strategy::default(), Strategy::RoundRobin);
/// # let _ = opts;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Strategy {
    /// Each instance in turn (one rotation per service, shared by every
    /// client on the connection, starting at a random one), so load
    /// spreads evenly, also over processes that make a call or two each.
    #[default]
    RoundRobin,
    /// A uniformly random instance.
    Random,
    /// The same key goes to the same instance while that instance lives
    /// (consistent hashing: when one leaves, only its keys move). Needs a
    /// key ([`CallOptions::sticky_key`](crate::rpc::CallOptions::sticky_key)).
    Sticky,
    /// Power of two choices: of two random instances, the one with the lower
    /// observed latency × calls in flight (as seen by this process).
    LeastLatency,
}

/// One selectable instance as the strategies see it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The instance id.
    pub(crate) id: Arc<str>,
    /// What this process observed calling it.
    pub(crate) stats: Arc<CallStats>,
    /// The methods it serves (its record's `endpoints` metadata); `None` when
    /// the record does not say, and then any method is assumed.
    pub(crate) endpoints: Option<Arc<[String]>>,
}

impl Member {
    /// Whether the instance serves `method` (any method when `None`).
    pub(crate) fn serves(&self, method: Option<&str>) -> bool {
        match (method, &self.endpoints) {
            (Some(method), Some(endpoints)) => endpoints.iter().any(|e| e == method),
            _ => true,
        }
    }
}

/// The members and what the strategies need from them; rebuilt only when
/// the selectable set changes, never per call.
#[derive(Debug, Default)]
pub(crate) struct ActiveSet {
    /// Selectable instances, sorted by id (every client agrees on the order).
    /// Each behind one reference count: a call takes one count, not one per
    /// field.
    pub(crate) members: Vec<Arc<Member>>,
    /// Built on the first sticky call after a change.
    ring: std::sync::OnceLock<Ring>,
}

impl ActiveSet {
    pub(crate) fn new(members: Vec<Member>) -> Self {
        Self {
            members: members.into_iter().map(Arc::new).collect(),
            ring: std::sync::OnceLock::new(),
        }
    }

    fn ring(&self) -> &Ring {
        self.ring
            .get_or_init(|| Ring::build(self.members.iter().map(|m| &*m.id)))
    }

    /// Picks a member that serves `method` by `strategy`, skipping ids in
    /// `tried`. `cursor` is the service's round-robin position; `key_hash`
    /// the sticky key's hash.
    pub(crate) fn select(
        &self,
        strategy: Strategy,
        cursor: &AtomicUsize,
        key_hash: Option<u64>,
        method: Option<&str>,
        tried: &[Arc<str>],
    ) -> Option<&Arc<Member>> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let usable = |i: usize| {
            let m = &self.members[i];
            m.serves(method) && !tried.iter().any(|t| **t == *m.id)
        };
        let scan_from = |start: usize| {
            (0..n)
                .map(|step| (start + step) % n)
                .find(|&i| usable(i))
                .map(|i| &self.members[i])
        };
        match strategy {
            Strategy::RoundRobin => scan_from(cursor.fetch_add(1, Ordering::Relaxed) % n),
            Strategy::Random => scan_from(rand::rng().random_range(0..n)),
            Strategy::Sticky => match key_hash {
                Some(h) => self
                    .ring()
                    .owner(h, |i| !usable(i))
                    .map(|i| &self.members[i]),
                None => scan_from(cursor.fetch_add(1, Ordering::Relaxed) % n),
            },
            Strategy::LeastLatency => {
                let eligible: Vec<usize> = (0..n).filter(|&i| usable(i)).collect();
                match eligible.len() {
                    0 => None,
                    1 => Some(&self.members[eligible[0]]),
                    len => {
                        let mut rng = rand::rng();
                        let a = rng.random_range(0..len);
                        let b = (a + rng.random_range(1..len)) % len;
                        let (a, b) = (&self.members[eligible[a]], &self.members[eligible[b]]);
                        Some(if b.stats.score() < a.stats.score() {
                            b
                        } else {
                            a
                        })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::ring::hash_key;
    use std::{collections::HashMap, time::Duration};

    fn set(ids: &[&str]) -> ActiveSet {
        ActiveSet::new(
            ids.iter()
                .map(|id| Member {
                    id: Arc::from(*id),
                    stats: Arc::new(CallStats::default()),
                    endpoints: Some(Arc::from(vec!["m".to_owned()])),
                })
                .collect(),
        )
    }

    fn pick(s: &ActiveSet, strategy: Strategy, key: Option<&str>, tried: &[Arc<str>]) -> String {
        static CURSOR: AtomicUsize = AtomicUsize::new(0);
        s.select(strategy, &CURSOR, key.map(hash_key), Some("m"), tried)
            .map(|m| m.id.to_string())
            .unwrap_or_default()
    }

    #[test]
    fn round_robin_is_exactly_even() {
        let s = set(&["a", "b", "c"]);
        let cursor = AtomicUsize::new(0);
        let mut counts: HashMap<String, usize> = HashMap::new();
        for _ in 0..300 {
            let m = s
                .select(Strategy::RoundRobin, &cursor, None, None, &[])
                .unwrap();
            *counts.entry(m.id.to_string()).or_default() += 1;
        }
        assert_eq!(counts.values().copied().collect::<Vec<_>>(), [100; 3]);
    }

    #[test]
    fn every_strategy_skips_tried_instances() {
        let s = set(&["a", "b", "c"]);
        let tried: Vec<Arc<str>> = vec![Arc::from("a"), Arc::from("c")];
        for strategy in [
            Strategy::RoundRobin,
            Strategy::Random,
            Strategy::Sticky,
            Strategy::LeastLatency,
        ] {
            for _ in 0..20 {
                assert_eq!(pick(&s, strategy, Some("key"), &tried), "b", "{strategy:?}");
            }
        }
        let all: Vec<Arc<str>> = ["a", "b", "c"].into_iter().map(Arc::from).collect();
        assert_eq!(pick(&s, Strategy::RoundRobin, None, &all), "");
        assert_eq!(pick(&set(&[]), Strategy::Random, None, &[]), "");
    }

    #[test]
    fn instances_not_serving_the_method_are_skipped() {
        let mut s = set(&["a", "b"]);
        Arc::make_mut(&mut s.members[0]).endpoints = Some(Arc::from(vec!["other".to_owned()]));
        Arc::make_mut(&mut s.members[1]).endpoints = None;
        let cursor = AtomicUsize::new(0);
        for _ in 0..10 {
            let m = s.select(Strategy::RoundRobin, &cursor, None, Some("m"), &[]);
            assert_eq!(&*m.unwrap().id, "b");
        }
        Arc::make_mut(&mut s.members[1]).endpoints = Some(Arc::from(vec!["other".to_owned()]));
        assert!(
            s.select(Strategy::Random, &cursor, None, Some("m"), &[])
                .is_none()
        );
        assert!(
            s.select(Strategy::Random, &cursor, None, None, &[])
                .is_some()
        );
    }

    #[test]
    fn sticky_keeps_a_key_on_one_instance() {
        let s = set(&["a", "b", "c"]);
        let first = pick(&s, Strategy::Sticky, Some("acct-7"), &[]);
        for _ in 0..50 {
            assert_eq!(pick(&s, Strategy::Sticky, Some("acct-7"), &[]), first);
        }
    }

    #[test]
    fn least_latency_prefers_the_faster_instance() {
        let s = set(&["fast", "slow"]);
        s.members[0].stats.observe(Duration::from_micros(100));
        s.members[1].stats.observe(Duration::from_millis(50));
        for _ in 0..50 {
            assert_eq!(pick(&s, Strategy::LeastLatency, None, &[]), "fast");
        }
    }
}
