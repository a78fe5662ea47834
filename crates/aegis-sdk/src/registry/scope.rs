//! What the registry watch covers: the services this process looked up
//! (or, once a [`RegistryReader`](super::RegistryReader) asked, the whole
//! registry), each with the scope generation that added it.
//!
//! Every call checks that its service is covered, so the check takes no
//! lock: calls read a copy of the scope published on every change
//! (`arc-swap`), and a service's last use is an atomic re-written at most
//! once a second. The watch task follows the scope through a `watch`
//! channel and reports each generation it has loaded; a service not looked
//! up for a while leaves the scope ([`WatchScope::prune_idle`]; how a
//! lookup and a prune agree is [`Covered::touch`]'s to say).

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use tokio::{sync::watch, time::Instant};
use tracing::debug;

use crate::kv_watch::Scope;

/// A lookup re-writes a service's last use only when it is this much older,
/// so calls read it (a cache line both worker threads may keep) rather
/// than write it each time.
const TOUCH_EVERY_MS: u64 = 1_000;
/// `used_ms` of a service pruned from the scope.
const PRUNED: u64 = u64::MAX;

/// What the watch covers and since which scope generation. The writers
/// keep it under a lock; calls read a copy published on every change.
#[derive(Debug, Default, Clone)]
struct ScopeState {
    /// The whole registry, since this generation.
    all: Option<u64>,
    /// Per service: the generation that added it and its last lookup.
    /// Every call hashes its service name here (the fast hasher, as in
    /// discovery's routes).
    services: HashMap<String, Arc<Covered>, foldhash::fast::RandomState>,
    generation: u64,
}

impl ScopeState {
    fn scope(&self) -> Scope {
        let keys = if self.all.is_some() {
            vec![aegis_contracts::subjects::registry_all_filter()]
        } else {
            let mut names: Vec<&String> = self.services.keys().collect();
            names.sort();
            names
                .into_iter()
                .map(|s| aegis_contracts::subjects::registry_service_filter(s))
                .collect()
        };
        Scope {
            generation: self.generation,
            keys,
        }
    }
}

/// A service in the watch's scope.
#[derive(Debug)]
struct Covered {
    /// The scope generation that added it.
    since: u64,
    /// When a call last looked it up ([`WatchScope::ms_at`]), kept to
    /// within [`TOUCH_EVERY_MS`]; [`PRUNED`] once it left the scope.
    used_ms: AtomicU64,
}

impl Covered {
    fn new(since: u64, now_ms: u64) -> Self {
        Self {
            since,
            used_ms: AtomicU64::new(now_ms),
        }
    }

    /// Notes a lookup at `now_ms`; false if the service was pruned (then
    /// the caller adds it again).
    ///
    /// A lookup and a prune settle on one atomic: the prune swaps in
    /// [`PRUNED`] only from the time it judged idle, so a lookup that wrote
    /// a newer time keeps the service, and a lookup after the prune sees
    /// it. One that wrote nothing saw a use under a second old, which no
    /// prune takes.
    fn touch(&self, now_ms: u64) -> bool {
        let used = self.used_ms.load(Ordering::Relaxed);
        if used == PRUNED {
            return false;
        }
        if now_ms.saturating_sub(used) < TOUCH_EVERY_MS {
            return true;
        }
        match self
            .used_ms
            .compare_exchange(used, now_ms, Ordering::Relaxed, Ordering::Relaxed)
        {
            Ok(_) => true,
            // Another lookup wrote first, or a prune did.
            Err(now) => now != PRUNED,
        }
    }

    /// Takes the service out of the scope if its last use is `idle_ms` old
    /// at `now_ms` (see [`Self::touch`]).
    fn prune(&self, now_ms: u64, idle_ms: u64) -> bool {
        let used = self.used_ms.load(Ordering::Relaxed);
        used != PRUNED
            && now_ms.saturating_sub(used) >= idle_ms
            && self
                .used_ms
                .compare_exchange(used, PRUNED, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The scope of one registry view's watch.
#[derive(Debug)]
pub(crate) struct WatchScope {
    state: Mutex<ScopeState>,
    /// A copy of `state` that calls read without the lock.
    published: ArcSwap<ScopeState>,
    /// What the watch follows.
    tx: watch::Sender<Scope>,
    /// The newest generation the view fully holds.
    synced: watch::Sender<u64>,
    /// The same, for calls to check without the channel's lock.
    synced_at: AtomicU64,
    /// The clock of [`Covered::used_ms`].
    born: Instant,
}

impl Default for WatchScope {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            published: ArcSwap::default(),
            tx: watch::channel(Scope::default()).0,
            synced: watch::channel(0).0,
            synced_at: AtomicU64::new(0),
            born: Instant::now(),
        }
    }
}

impl WatchScope {
    fn state(&self) -> std::sync::MutexGuard<'_, ScopeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds from the scope's making to `at`: the clock of lookups.
    fn ms_at(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(PRUNED - 1)
    }

    /// What the watch covers, as it changes.
    pub(crate) fn receiver(&self) -> watch::Receiver<Scope> {
        self.tx.subscribe()
    }

    /// Adds `service` (or, with `None`, the whole registry) to the scope if
    /// it is not covered yet, notes the lookup as made `at` (a call passes
    /// the instant it began, a clock read it already made), and returns the
    /// generation the view must reach to hold it. A covered service (every
    /// call but the first) takes no lock.
    pub(crate) fn cover(&self, service: Option<&str>, at: Instant) -> u64 {
        let now = self.ms_at(at);
        {
            let published = self.published.load();
            if let Some(since) = published.all {
                return since;
            }
            if let Some(covered) = service.and_then(|name| published.services.get(name))
                && covered.touch(now)
            {
                return covered.since;
            }
        }
        let mut st = self.state();
        if let Some(since) = st.all {
            return since;
        }
        match service {
            Some(name) => {
                if let Some(covered) = st.services.get(name)
                    && covered.touch(now)
                {
                    return covered.since;
                }
                st.generation += 1;
                let generation = st.generation;
                st.services
                    .insert(name.to_owned(), Arc::new(Covered::new(generation, now)));
                self.changed(&st);
                generation
            }
            None => {
                st.generation += 1;
                let generation = st.generation;
                st.all = Some(generation);
                st.services.clear();
                self.changed(&st);
                generation
            }
        }
    }

    /// Publishes a changed scope to calls and to the watch.
    fn changed(&self, st: &ScopeState) {
        self.published.store(Arc::new(st.clone()));
        self.tx.send_replace(st.scope());
    }

    /// Removes services not looked up for `idle` from the scope (never
    /// when the whole registry is covered).
    pub(crate) fn prune_idle(&self, idle: Duration) {
        let mut st = self.state();
        if st.all.is_some() {
            return;
        }
        let (now, idle_ms) = (
            self.ms_at(Instant::now()),
            u64::try_from(idle.as_millis()).unwrap_or(u64::MAX),
        );
        let before = st.services.len();
        st.services
            .retain(|_, covered| !covered.prune(now, idle_ms));
        if st.services.len() != before {
            debug!(
                left = before - st.services.len(),
                "idle services leave the registry watch"
            );
            st.generation += 1;
            self.changed(&st);
        }
    }

    /// The watch loaded everything in scope `generation`.
    pub(crate) fn loaded(&self, generation: u64) {
        self.synced_at.fetch_max(generation, Ordering::Release);
        self.synced.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
    }

    /// Waits until the view holds scope `generation`, or `deadline`.
    pub(crate) async fn wait(&self, generation: u64, deadline: Instant) -> bool {
        if self.synced_at.load(Ordering::Acquire) >= generation {
            return true;
        }
        let mut rx = self.synced.subscribe();
        matches!(
            tokio::time::timeout_at(deadline, rx.wait_for(|g| *g >= generation)).await,
            Ok(Ok(_))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_covered_service_keeps_its_generation_until_it_idles_out() {
        let scope = WatchScope::default();
        let a = scope.cover(Some("a"), Instant::now());
        let b = scope.cover(Some("b"), Instant::now());
        assert!(b > a);
        assert_eq!(
            scope.cover(Some("a"), Instant::now()),
            a,
            "covered: same generation"
        );
        let followed = scope.receiver().borrow().clone();
        assert_eq!(followed.generation, b);
        assert_eq!(followed.keys.len(), 2);
        // Nothing is idle for two minutes yet.
        scope.prune_idle(Duration::from_secs(120));
        assert_eq!(scope.cover(Some("a"), Instant::now()), a);
        // Everything is idle for no time at all: both leave, and the next
        // lookup adds its service again under a new generation.
        scope.prune_idle(Duration::ZERO);
        assert_eq!(scope.receiver().borrow().keys.len(), 0);
        let again = scope.cover(Some("a"), Instant::now());
        assert!(again > b, "added again: {again} after {b}");
        // Covering everything covers every service from then on.
        let all = scope.cover(None, Instant::now());
        assert_eq!(scope.cover(Some("c"), Instant::now()), all);
    }

    #[test]
    fn a_lookup_and_a_prune_settle_on_one_of_them() {
        // A lookup that wrote its time first keeps the service.
        let covered = Covered::new(1, 0);
        assert!(covered.touch(5_000));
        assert!(!covered.prune(5_500, 1_000), "used 500 ms ago");
        // A prune that came first wins, and the lookup sees it.
        assert!(covered.prune(10_000, 1_000));
        assert!(!covered.touch(10_001));
        assert!(!covered.prune(20_000, 1_000), "pruned once");
        // A recent use is read, not written.
        let covered = Covered::new(1, 100);
        assert!(covered.touch(100 + TOUCH_EVERY_MS - 1));
        assert_eq!(covered.used_ms.load(Ordering::Relaxed), 100);
    }

    #[tokio::test]
    async fn a_loaded_scope_needs_no_wait() {
        let scope = WatchScope::default();
        let generation = scope.cover(Some("a"), Instant::now());
        let soon = Instant::now() + Duration::from_millis(20);
        assert!(!scope.wait(generation, soon).await, "not loaded yet");
        scope.loaded(generation);
        let now = Instant::now();
        assert!(scope.wait(generation, now).await);
    }
}
