//! What routing picks from: per service, the instances a call may go to
//! (ACTIVE, not evicted by this process), their call statistics and the
//! round-robin cursor.
//!
//! The registry view (`registry/cache.rs`) keeps records, revisions and
//! change events only; it tells this index of every record change through
//! [`RecordIndex`], under its own lock, so the index is never behind the
//! records a lookup reads. The selectable set is rebuilt only when it
//! changes (an instance becomes or stops being selectable, or changes the
//! methods it serves), never per call: a record re-written with nothing new
//! costs one map lookup.
//!
//! **A call takes no lock.** The candidates (revisions, evictions) are the
//! writers' alone, behind a mutex; what a call reads is published apart, as
//! snapshots swapped in whole (`arc-swap`): per service a [`Route`] with its
//! current member list, and the map of routes, re-published only when a
//! service comes or goes. Reading a snapshot writes nothing that another
//! thread reads, so the two worker threads that run a connection's calls no
//! longer pass a lock's cache line between them on every call, and a
//! heartbeat being applied never makes a call wait.
//!
//! Evictions are local and keyed to revisions: a call that found no
//! responder evicts the instance, and a newer record (the instance wrote
//! again) lifts it, or an answer to a call that tried it anyway because no
//! other instance was left ([`DiscoveryIndex::evicted`]; a connection moving
//! between NATS nodes has no responder for a few milliseconds). An
//! instance whose attempt timed out is passed over the same way, until a
//! newer record, but only while another is left: when every instance timed
//! out (an overload, or a timeout too short for the method) calls go to all
//! of them by the strategy, as if none had, rather than piling onto the
//! first that answers ([`DiscoveryIndex::pass_over`]). When the
//! bucket is created again its revisions start over, so every eviction is
//! dropped ([`RecordIndex::reset`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, atomic::AtomicUsize},
};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use arc_swap::ArcSwap;
use tracing::debug;

use super::{
    Strategy,
    stats::CallStats,
    strategy::{ActiveSet, Member},
};
use crate::registry::cache::RecordIndex;

/// One instance as routing sees it.
#[derive(Debug)]
struct Candidate {
    active: bool,
    revision: u64,
    /// The revision that was current when this process evicted it.
    evicted_at: Option<u64>,
    /// The revision that was current when an attempt on it timed out.
    timed_out_at: Option<u64>,
    stats: Arc<CallStats>,
    endpoints: Option<Arc<[String]>>,
}

impl Candidate {
    fn selectable(&self) -> bool {
        self.active && self.evicted_at.is_none() && self.timed_out_at.is_none()
    }

    /// Passed over for a timed-out attempt: picked only when no selectable
    /// instance is left.
    fn passed_over(&self) -> bool {
        self.active && self.evicted_at.is_none() && self.timed_out_at.is_some()
    }

    /// Which of the two sets it is in, if any.
    fn place(&self) -> (bool, bool) {
        (self.selectable(), self.passed_over())
    }

    fn member(&self, id: &str) -> Member {
        Member {
            id: Arc::from(id),
            stats: self.stats.clone(),
            endpoints: self.endpoints.clone(),
        }
    }
}

/// What a call reads for one service.
#[derive(Debug)]
struct Route {
    /// The selectable instances, replaced whole when they change.
    active: ArcSwap<ActiveSet>,
    /// The instances passed over for a timed-out attempt: what a call picks
    /// from when `active` has none for it.
    passed_over: ArcSwap<ActiveSet>,
    /// Round-robin position, shared by every caller on the connection.
    cursor: AtomicUsize,
}

impl Default for Route {
    /// A route whose round-robin starts at a random position: processes
    /// that make a call or two each (`aegis call`, a cron job, many
    /// clients started at once) spread over the instances instead of all
    /// going to the first.
    fn default() -> Self {
        Route {
            active: ArcSwap::default(),
            passed_over: ArcSwap::default(),
            cursor: AtomicUsize::new(rand::random::<u32>() as usize),
        }
    }
}

/// One service's candidates (the writers') and its route (the calls').
#[derive(Debug, Default)]
struct ServiceIndex {
    candidates: BTreeMap<String, Candidate>,
    route: Arc<Route>,
}

impl ServiceIndex {
    fn rebuild(&self) {
        let set = |keep: fn(&Candidate) -> bool| {
            let members = self
                .candidates
                .iter()
                .filter(|(_, c)| keep(c))
                .map(|(id, c)| c.member(id))
                .collect();
            Arc::new(ActiveSet::new(members))
        };
        self.route.active.store(set(Candidate::selectable));
        self.route.passed_over.store(set(Candidate::passed_over));
    }
}

/// The routes a call looks up, by service: every call hashes its service
/// name here, with a hasher some times faster than the standard one on
/// such short keys (a process routes to services it chose to call).
type Routes = HashMap<String, Arc<Route>, foldhash::fast::RandomState>;

/// The routing index of one connection.
#[derive(Debug, Default)]
pub(crate) struct DiscoveryIndex {
    /// Every service's candidates: the registry watch and evictions only.
    services: Mutex<HashMap<String, ServiceIndex>>,
    /// What calls read: a copy of the services' routes, published again
    /// when a service is added or removed.
    routes: ArcSwap<Routes>,
}

impl DiscoveryIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ServiceIndex>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes the routes of `services` (a service came or went).
    fn publish(&self, services: &HashMap<String, ServiceIndex>) {
        let routes: Routes = services
            .iter()
            .map(|(name, entry)| (name.clone(), entry.route.clone()))
            .collect();
        self.routes.store(Arc::new(routes));
    }

    /// Picks a selectable instance of `service` serving `method` (any when
    /// `None`) by `strategy`, skipping `tried`; when none is left, one
    /// passed over for a timed-out attempt.
    pub(crate) fn select(
        &self,
        service: &str,
        strategy: Strategy,
        key_hash: Option<u64>,
        method: Option<&str>,
        tried: &[Arc<str>],
    ) -> Option<Arc<Member>> {
        let routes = self.routes.load();
        let route = routes.get(service)?;
        if let Some(member) =
            route
                .active
                .load()
                .select(strategy, &route.cursor, key_hash, method, tried)
        {
            return Some(member.clone());
        }
        route
            .passed_over
            .load()
            .select(strategy, &route.cursor, key_hash, method, tried)
            .cloned()
    }

    /// Whether `service` has any instance a call may pick (whatever it
    /// serves).
    pub(crate) fn has_selectable(&self, service: &str) -> bool {
        self.routes.load().get(service).is_some_and(|r| {
            !r.active.load().members.is_empty() || !r.passed_over.load().members.is_empty()
        })
    }

    /// The ids of `service`'s selectable instances, sorted.
    pub(crate) fn selectable_ids(&self, service: &str) -> Vec<Arc<str>> {
        self.routes
            .load()
            .get(service)
            .map(|r| {
                r.active
                    .load()
                    .members
                    .iter()
                    .map(|m| m.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An ACTIVE instance of `service` serving `method` that this process
    /// evicted: what a call tries again, after a pause, when no other
    /// instance is left. The evicted ones take turns: the first after
    /// `after` (by id), or the first of all.
    pub(crate) fn evicted(
        &self,
        service: &str,
        method: Option<&str>,
        after: Option<&str>,
    ) -> Option<Arc<Member>> {
        let services = self.lock();
        let candidates: Vec<Member> = services
            .get(service)?
            .candidates
            .iter()
            .filter(|(_, c)| c.active && c.evicted_at.is_some())
            .map(|(id, c)| c.member(id))
            .filter(|m| m.serves(method))
            .collect();
        let next = after.and_then(|after| candidates.iter().find(|m| &*m.id > after));
        next.or(candidates.first()).cloned().map(Arc::new)
    }

    /// Picks `instance_id` again: it answered after it was evicted.
    pub(crate) fn restore(&self, service: &str, instance_id: &str) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        if let Some(candidate) = entry.candidates.get_mut(instance_id)
            && candidate.evicted_at.take().is_some()
        {
            debug!(
                service,
                instance = instance_id,
                "evicted instance answered again"
            );
            entry.rebuild();
        }
    }

    /// Passes `instance_id` over, an attempt on it having timed out: it is
    /// picked only when no other instance is left, until it writes a newer
    /// record. A hung process keeps its subscriptions (NATS delivers to it)
    /// and writes no record: it costs a caller one attempt, not a share of
    /// its calls until the record expires. An answer does not lift it:
    /// after an overload every instance would be passed over, and the first
    /// to answer would take every call.
    pub(crate) fn pass_over(&self, service: &str, instance_id: &str) {
        self.mark(
            service,
            instance_id,
            |c| &mut c.timed_out_at,
            "instance passed over after a timeout",
        );
    }

    /// Stops picking `instance_id` until it writes a newer record.
    pub(crate) fn evict(&self, service: &str, instance_id: &str) {
        self.mark(
            service,
            instance_id,
            |c| &mut c.evicted_at,
            "instance evicted locally",
        );
    }

    /// Sets the mark `at` picks of `instance_id` to its current revision,
    /// unless it is set already, and rebuilds its service's sets.
    fn mark(
        &self,
        service: &str,
        instance_id: &str,
        at: fn(&mut Candidate) -> &mut Option<u64>,
        what: &str,
    ) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        let Some(candidate) = entry.candidates.get_mut(instance_id) else {
            return;
        };
        let revision = candidate.revision;
        let mark = at(candidate);
        if mark.is_none() {
            *mark = Some(revision);
            debug!(service, instance = instance_id, "{what}");
            entry.rebuild();
        }
    }
}

impl RecordIndex for DiscoveryIndex {
    fn upserted(&self, instance: &ServiceInstance, revision: u64) {
        let active = instance.status == InstanceStatus::Active;
        let mut services = self.lock();
        if !services.contains_key(&instance.service_name) {
            services.insert(instance.service_name.clone(), ServiceIndex::default());
            self.publish(&services);
        }
        let Some(entry) = services.get_mut(&instance.service_name) else {
            return;
        };
        match entry.candidates.get_mut(&instance.instance_id) {
            Some(candidate) => {
                let was = candidate.place();
                let endpoints_changed = !same_endpoints(candidate.endpoints.as_deref(), instance);
                candidate.active = active;
                candidate.revision = revision;
                // A newer record lifts both marks.
                for mark in [&mut candidate.evicted_at, &mut candidate.timed_out_at] {
                    if mark.is_some_and(|at| revision > at) {
                        *mark = None;
                    }
                }
                if endpoints_changed {
                    candidate.endpoints = endpoints(instance);
                }
                if was != candidate.place() || (endpoints_changed && was != (false, false)) {
                    entry.rebuild();
                }
            }
            None => {
                entry.candidates.insert(
                    instance.instance_id.clone(),
                    Candidate {
                        active,
                        revision,
                        evicted_at: None,
                        timed_out_at: None,
                        stats: Arc::new(CallStats::default()),
                        endpoints: endpoints(instance),
                    },
                );
                if active {
                    entry.rebuild();
                }
            }
        }
    }

    fn removed(&self, service: &str, instance_id: &str) {
        let mut services = self.lock();
        let Some(entry) = services.get_mut(service) else {
            return;
        };
        if entry
            .candidates
            .remove(instance_id)
            .is_some_and(|c| c.place() != (false, false))
        {
            entry.rebuild();
        }
        if entry.candidates.is_empty() {
            services.remove(service);
            self.publish(&services);
        }
    }

    fn reset(&self) {
        for entry in self.lock().values_mut() {
            let mut dropped = false;
            for candidate in entry.candidates.values_mut() {
                for mark in [&mut candidate.evicted_at, &mut candidate.timed_out_at] {
                    dropped |= mark.take().is_some();
                }
            }
            if dropped {
                entry.rebuild();
            }
        }
    }
}

/// The methods a record says its instance serves (`metadata.endpoints`).
fn endpoints(instance: &ServiceInstance) -> Option<Arc<[String]>> {
    let list = instance.metadata.get("endpoints")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|m| m.as_str().map(str::to_owned))
            .collect(),
    )
}

/// Whether `known` is what the record says, without allocating (this runs
/// for every record write).
fn same_endpoints(known: Option<&[String]>, instance: &ServiceInstance) -> bool {
    let said = instance
        .metadata
        .get("endpoints")
        .and_then(serde_json::Value::as_array);
    match (known, said) {
        (None, None) => true,
        (Some(known), Some(said)) => {
            let said = said.iter().filter_map(serde_json::Value::as_str);
            known.iter().map(String::as_str).eq(said)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::cache::{
        Shared, Snapshot,
        fixtures::{inst, reload_keep_changed_new},
    };
    use serde_json::json;

    /// A registry view feeding a routing index, as on a connection.
    fn view() -> (Shared, Arc<DiscoveryIndex>) {
        let index = Arc::new(DiscoveryIndex::default());
        (Shared::new(index.clone()), index)
    }

    fn pick(index: &DiscoveryIndex, service: &str) -> Option<String> {
        index
            .select(service, Strategy::RoundRobin, None, Some("m"), &[])
            .map(|m| m.id.to_string())
    }

    #[test]
    fn only_active_instances_are_picked_and_removals_leave() {
        let (view, index) = view();
        view.upsert(inst("svc", "b", InstanceStatus::Active), 1);
        view.upsert(inst("svc", "a", InstanceStatus::Standby), 2);
        assert_eq!(index.selectable_ids("svc").len(), 1);
        assert_eq!(pick(&index, "svc").as_deref(), Some("b"));
        assert!(
            index
                .select("svc", Strategy::RoundRobin, None, Some("other"), &[])
                .is_none(),
            "an instance that does not serve the method is not picked"
        );
        view.remove("svc", "b", crate::registry::RemovalReason::Expired);
        assert_eq!(pick(&index, "svc"), None);
        assert!(!index.has_selectable("svc"));
    }

    /// The trial's case: every `aegis call` is a new process, and each one
    /// went to pricing-1 (22 of 22), the first by id. Fresh indexes start
    /// their round-robin apart: 64 of them over three instances do not all
    /// pick the same first (a chance of 3 in 3^64 if they are random).
    #[test]
    fn a_fresh_index_does_not_always_start_at_the_first_instance() {
        let firsts: std::collections::BTreeSet<String> = (0..64)
            .map(|_| {
                let (view, index) = view();
                for (id, revision) in [("a", 1), ("b", 2), ("c", 3)] {
                    view.upsert(inst("svc", id, InstanceStatus::Active), revision);
                }
                pick(&index, "svc").unwrap()
            })
            .collect();
        assert!(firsts.len() > 1, "every fresh index started at {firsts:?}");
    }

    #[test]
    fn evictions_last_until_a_newer_record() {
        let (view, index) = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 10);
        index.evict("svc", "a");
        assert_eq!(pick(&index, "svc"), None);
        assert_eq!(
            view.by_service("svc").len(),
            1,
            "the registry view keeps it"
        );
        // A replayed (same) revision does not lift the eviction; a new one does.
        view.upsert(inst("svc", "a", InstanceStatus::Active), 10);
        assert_eq!(pick(&index, "svc"), None);
        view.upsert(inst("svc", "a", InstanceStatus::Active), 11);
        assert_eq!(pick(&index, "svc").as_deref(), Some("a"));
    }

    #[test]
    fn one_passed_over_is_picked_only_when_none_other_is_left() {
        let (view, index) = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 1);
        view.upsert(inst("svc", "b", InstanceStatus::Active), 2);
        index.pass_over("svc", "a");
        for _ in 0..4 {
            assert_eq!(pick(&index, "svc").as_deref(), Some("b"));
        }
        assert_eq!(index.selectable_ids("svc").len(), 1);
        // Every one passed over: all of them by the strategy, as if none was.
        index.pass_over("svc", "b");
        let picked: std::collections::BTreeSet<_> =
            (0..4).filter_map(|_| pick(&index, "svc")).collect();
        assert_eq!(picked.len(), 2, "{picked:?}");
        assert!(index.has_selectable("svc"));
        // Its newer record lifts it (b's own revision is 2; a's is 1).
        view.upsert(inst("svc", "a", InstanceStatus::Active), 3);
        for _ in 0..4 {
            assert_eq!(pick(&index, "svc").as_deref(), Some("a"));
        }
        // A bucket made again drops it.
        index.pass_over("svc", "a");
        index.reset();
        let picked: std::collections::BTreeSet<_> =
            (0..4).filter_map(|_| pick(&index, "svc")).collect();
        assert_eq!(picked.len(), 2, "{picked:?}");
    }

    #[test]
    fn a_new_endpoint_list_is_routed_by() {
        let (view, index) = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 1);
        let mut more = inst("svc", "a", InstanceStatus::Active);
        more.metadata.insert("endpoints".into(), json!(["m", "n"]));
        view.upsert(more, 2);
        assert!(
            index
                .select("svc", Strategy::RoundRobin, None, Some("n"), &[])
                .is_some()
        );
    }

    #[test]
    fn an_evicted_instance_is_offered_apart_and_restored_by_an_answer() {
        let (view, index) = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 1);
        index.evict("svc", "a");
        assert_eq!(pick(&index, "svc"), None);
        assert_eq!(
            index
                .evicted("svc", Some("m"), None)
                .map(|m| m.id.to_string()),
            Some("a".to_owned())
        );
        // Several evicted ones take turns.
        view.upsert(inst("svc", "b", InstanceStatus::Active), 2);
        index.evict("svc", "b");
        let next = |after| {
            index
                .evicted("svc", Some("m"), after)
                .map(|m| m.id.to_string())
        };
        assert_eq!(next(Some("a")).as_deref(), Some("b"));
        assert_eq!(next(Some("b")).as_deref(), Some("a"));
        index.restore("svc", "b");
        index.restore("svc", "a");
        assert!(index.evicted("svc", Some("m"), None).is_none());
        assert_eq!(
            index.selectable_ids("svc"),
            [Arc::from("a"), Arc::from("b")]
        );
    }

    #[test]
    fn an_unchanged_record_in_a_reload_keeps_its_eviction() {
        let (view, index) = view();
        view.upsert(inst("svc", "keep", InstanceStatus::Active), 1);
        view.upsert(inst("svc", "changed", InstanceStatus::Active), 3);
        index.evict("svc", "keep");
        view.replace_all(reload_keep_changed_new(), false);
        assert_eq!(pick(&index, "svc").as_deref(), Some("new"));
    }

    #[test]
    fn a_fresh_load_from_a_new_bucket_forgets_revisions_and_evictions() {
        let (view, index) = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 300);
        view.upsert(inst("svc", "b", InstanceStatus::Active), 301);
        index.evict("svc", "a");
        index.evict("svc", "b");
        let mut changed = inst("svc", "b", InstanceStatus::Active);
        changed.version = "2.0.0".into();
        let mut snapshot = Snapshot::new();
        let same = view.get("svc", "a").unwrap();
        snapshot.insert(("svc".into(), "a".into()), (same, 1));
        snapshot.insert(("svc".into(), "b".into()), (changed, 2));
        view.replace_all(snapshot, true);
        // Both routable again.
        assert_eq!(index.selectable_ids("svc").len(), 2);
        // Revisions continue from the new bucket's: a later write lifts a
        // later eviction as usual.
        index.evict("svc", "a");
        assert_eq!(index.selectable_ids("svc").len(), 1);
        view.upsert(inst("svc", "a", InstanceStatus::Active), 3);
        assert!(index.selectable_ids("svc").iter().any(|id| &**id == "a"));
    }
}
