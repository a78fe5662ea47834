//! The in-memory registry view shared by the [`RegistryReader`] and
//! discovery within one [`Connection`](crate::Connection).
//!
//! One background task (`watch.rs`) feeds it from a single KV watch; lookups
//! only read memory. (About 600 lines before its tests: the view's reads,
//! its writes and its watch's health share one lock and one set of
//! invariants, so they stay together.)
//!
//! **The watch covers only what the process uses.** A process that calls
//! two services holds only their records and receives only their writes,
//! however large the fleet: its cost does not grow with the number of
//! instances elsewhere, and the bus carries each record write only to the
//! processes that call that service (and the monitor), not to every
//! process. Records are written on change and re-written only every few
//! seconds to renew their TTL (`registration/writer.rs`); the per-second liveness
//! beats go on core NATS to the monitor alone. The first lookup of a service adds it to the watch's scope
//! (one consumer with a filter per service, re-opened with the new filter
//! set: a few milliseconds, once) and waits until its records are in; a
//! service not looked up for [`IDLE_SCOPE`] leaves the scope again (the
//! scope is `scope.rs`'s; a call checks it without a lock). A
//! [`RegistryReader`] (the monitor, `aegis status`) widens the scope to the
//! whole registry for the rest of the connection's life.
//!
//! The view keeps records, revisions and change events only. What routing
//! picks from (the selectable instances, call statistics, local evictions)
//! is discovery's index (`discovery/index.rs`), told of every record change
//! through [`RecordIndex`] under the view's lock: dependencies run from
//! discovery to the registry, never back.
//!
//! Revisions order records only within one bucket. When the watch reports
//! that the bucket was created again (its revisions start over), the next
//! load is applied as fresh: every eviction is dropped and records are
//! compared by content, not revision, so a record at an equal or lower
//! revision than one of the old bucket still replaces it.
//!
//! While a watch that had loaded is broken (JetStream creates no consumers
//! until its meta group has a leader, 4-9 s after that leader's node died),
//! the view takes records read from the bucket's replicas every half
//! second ([`Shared::refresh`]): only newer ones, so a replica behind
//! changes nothing, and an instance registered in that window is routed to
//! within a second (`tests/sticky_takeover_node_loss.rs`: 0.09-0.49 s, against
//! 6.5 s once the watch opened).
//!
//! **An expiry is applied after a grace** ([`expiry_grace`]). A stall of
//! the registry's stream longer than the record TTL (a cluster that lost
//! its JetStream quorum for longer than 15 s) ends with the stream
//! expiring every record nobody could write, all at once, up to a
//! heartbeat plus a write's timeout before each live instance writes its
//! record again. Taken at once, those expiries emptied the view: calls
//! failed with `RpcError::NoInstances` for up to a second although every
//! instance served (`tests/quorum_loss.rs`: 28 of 755 calls, over
//! 0.88 s). So an expiry, or a load that no longer finds a record
//! ([`RemovalReason::Vanished`]), leaves the record in the view, routed to
//! and listed as it was, for a few of its own heartbeats (`heartbeatMs`);
//! a new write of it cancels the removal, and past the grace the removal
//! is applied and announced with its reason. A deregistration or a delete
//! applies at once. For a crashed instance this adds the grace to the TTL
//! it already waited; calls to it meanwhile find no responder, evict it
//! locally and move on to another instance, and a sticky group's leader is
//! the election key's holder, not a record.
//!
//! [`RegistryReader`]: super::RegistryReader

use std::{
    collections::{BTreeMap, HashMap},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::{ServiceInstance, subjects::REGISTRY_BUCKET};
use async_nats::jetstream::stream::Stream;
use tokio::sync::{Notify, broadcast, watch};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{
    METADATA_HEARTBEAT_MS, RegistryChange, RegistryError, RemovalReason,
    bucket::ensure_registry_bucket, scope::WatchScope,
};
use crate::kv_watch::{self, Scope};

/// Told of every change of the view's records, under the view's lock, so
/// an index built on them (discovery's routing index) is never behind the
/// records a lookup reads. Defined here so that the registry does not
/// depend on the parts built on it.
pub(crate) trait RecordIndex: Send + Sync + std::fmt::Debug {
    /// A record was stored (new, changed or re-written) at `revision`.
    /// Runs for every record write: it must be cheap when nothing changed.
    fn upserted(&self, instance: &ServiceInstance, revision: u64);
    /// A record left the view.
    fn removed(&self, service: &str, instance_id: &str);
    /// The bucket was created again: its revisions start over, so whatever
    /// was keyed to the old ones is dropped.
    fn reset(&self);
}

/// Changes buffered per subscriber before a slow one starts missing some.
const CHANGES_CAPACITY: usize = 4096;
/// A service not looked up for this long leaves the watch's scope.
pub(crate) const IDLE_SCOPE: Duration = Duration::from_secs(120);
/// The longest an expired record stays in the view ([`expiry_grace`]).
pub(crate) const EXPIRY_GRACE_MAX: Duration = Duration::from_secs(10);

/// How long an expired (or vanished) record stays in the view before its
/// removal is applied, unless its instance writes it again first: the time
/// a live instance takes to write it once its registry takes writes again.
/// Its writer retries with back-off capped at its heartbeat, each write
/// given the heartbeat clamped to 0.5-5 s (`RegistrationOptions`), so that
/// is one write's timeout plus a heartbeat; one more heartbeat is slack.
/// Capped at [`EXPIRY_GRACE_MAX`]. A record that gives no heartbeat
/// (`heartbeatMs`, written by every Aegis registration) is removed at once.
pub(crate) fn expiry_grace(instance: &ServiceInstance) -> Option<Duration> {
    let heartbeat = instance
        .metadata
        .get(METADATA_HEARTBEAT_MS)
        .and_then(serde_json::Value::as_u64)
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)?;
    let write_timeout = heartbeat.clamp(Duration::from_millis(500), Duration::from_secs(5));
    Some(
        write_timeout
            .saturating_add(heartbeat.saturating_mul(2))
            .min(EXPIRY_GRACE_MAX),
    )
}

/// The shared view and the task that feeds it; the task stops when the last
/// handle drops or [`RegistryCache::stop`] is called.
#[derive(Debug)]
pub(crate) struct RegistryCache {
    shared: Arc<Shared>,
    /// The bucket's stream once found, or why looking it up failed (see
    /// [`Self::start`]).
    lookup: kv_watch::Lookup,
    cancel: CancellationToken,
}

impl Drop for RegistryCache {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl RegistryCache {
    /// Ensures the bucket, starts the watch task and waits up to `timeout`
    /// for the initial load. A bucket whose lookup is not answered within
    /// [`kv_watch::LOOKUP_BEFORE_SNAPSHOT`] (its stream electing a leader)
    /// is looked up again in the background, and the view loads from the
    /// bucket's replicas meanwhile ([`kv_watch::start`]); a failure of
    /// those lookups is kept for [`Self::lookup_failure`].
    pub(crate) async fn start(
        js: &async_nats::jetstream::Context,
        client: async_nats::Client,
        drops: crate::connection::DropWatch,
        replicas: usize,
        timeout: Duration,
        index: Arc<dyn RecordIndex>,
    ) -> Result<RegistryCache, RegistryError> {
        let shared = Arc::new(Shared::new(index));
        let cancel = CancellationToken::new();
        let lookup = kv_watch::start(
            move |js| async move { ensure_registry_bucket(&js, replicas).await },
            kv_watch::Watch {
                bucket: REGISTRY_BUCKET,
                description: super::watch::DESCRIPTION,
                reader: kv_watch::Reader {
                    js: js.clone(),
                    client,
                    drops,
                },
                scope: shared.scope_receiver(),
                sink: shared.clone(),
                cancel: cancel.clone(),
            },
        )
        .await?;
        {
            // Idle services leave the scope; the task holds the view weakly
            // so that it never keeps it alive.
            let (view, cancel) = (Arc::downgrade(&shared), cancel.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(IDLE_SCOPE / 4);
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    match view.upgrade() {
                        Some(view) => view.prune_idle(IDLE_SCOPE),
                        None => return,
                    }
                }
            });
        }
        {
            // Applies expiries whose grace ran out; held weakly as above.
            let (view, cancel) = (Arc::downgrade(&shared), cancel.clone());
            let lapsed = shared.lapsed.clone();
            tokio::spawn(async move {
                loop {
                    // Armed before the sweep, so a lapse noted during it
                    // wakes the next wait.
                    let noted = lapsed.notified();
                    tokio::pin!(noted);
                    noted.as_mut().enable();
                    let next = match view.upgrade() {
                        Some(view) => view.sweep_lapsed(Instant::now()),
                        None => return,
                    };
                    let until = next.map_or_else(
                        || tokio::time::Instant::now() + IDLE_SCOPE,
                        tokio::time::Instant::from_std,
                    );
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = noted => {}
                        () = tokio::time::sleep_until(until) => {}
                    }
                }
            });
        }
        let cache = RegistryCache {
            shared,
            lookup,
            cancel,
        };
        let mut loaded = cache.shared.loaded.subscribe();
        match tokio::time::timeout(timeout, loaded.wait_for(|l| *l)).await {
            Ok(Ok(_)) => Ok(cache),
            _ => Err(RegistryError::NotSynced(timeout)),
        }
    }

    /// Why the bucket's lookup in the background failed last, while none
    /// has succeeded: what a view that cannot load reports instead of a
    /// bare timeout.
    pub(crate) fn lookup_failure(&self) -> Option<String> {
        self.lookup.failure()
    }

    /// The view.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Makes the view cover `service` (see the module docs), or with `None`
    /// the whole registry from now on, noting the lookup as made `at`, and
    /// waits, up to `deadline`, until its records are in. Returns whether
    /// they are.
    pub(crate) async fn cover(
        &self,
        service: Option<&str>,
        at: tokio::time::Instant,
        deadline: tokio::time::Instant,
    ) -> bool {
        let generation = self.shared.cover(service, at);
        self.shared.wait_scope(generation, deadline).await
    }

    /// Waits until every registry write acknowledged before this call is in
    /// the view, or `deadline` passes; see [`Shared::catch_up`].
    pub(crate) async fn catch_up(&self, deadline: tokio::time::Instant) -> bool {
        match self.lookup.stream() {
            Some(stream) => self.shared.catch_up(stream, deadline).await,
            // Not found yet: the view is a snapshot, not known current.
            None => false,
        }
    }

    /// Stops the watch task (its consumer is left to the server, which
    /// removes it after 10 s idle); the view keeps its last state.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }
}

/// One instance as the cache keeps it.
#[derive(Debug)]
struct Record {
    instance: ServiceInstance,
    revision: u64,
    /// Its record expired (or vanished from a load): removed, for this
    /// reason, at this time unless written again first ([`expiry_grace`]).
    lapse: Option<(Instant, RemovalReason)>,
}

/// Everything known about one service.
#[derive(Debug, Default)]
pub(crate) struct ServiceEntry {
    records: BTreeMap<String, Record>,
}

#[derive(Debug, Default)]
struct Health {
    /// When the view stopped being current (watch broke); `None` while synced
    /// or before the first load.
    stale_since: Option<Instant>,
    /// Watches re-created after a break.
    resyncs: u64,
    /// The live watch consumer, for catch-up checks.
    consumer: Option<String>,
    /// Bumped on every new watch session.
    generation: u64,
}

/// The view itself.
#[derive(Debug)]
pub(crate) struct Shared {
    /// What the watch covers (every call checks it, without a lock).
    scope: WatchScope,
    services: RwLock<HashMap<String, ServiceEntry>>,
    /// Told of every record change (discovery's routing index).
    index: Arc<dyn RecordIndex>,
    changes: broadcast::Sender<RegistryChange>,
    synced: AtomicBool,
    loaded: watch::Sender<bool>,
    health: Mutex<Health>,
    /// Consumer sequence of the last message applied in this session.
    processed: AtomicU64,
    progress: Notify,
    /// Wakes the task that applies lapsed removals when one is noted.
    lapsed: Arc<Notify>,
}

/// A full load: (service, instance) → (record, revision).
pub(crate) type Snapshot = HashMap<(String, String), (ServiceInstance, u64)>;

impl Shared {
    pub(crate) fn new(index: Arc<dyn RecordIndex>) -> Self {
        Self {
            index,
            scope: WatchScope::default(),
            services: RwLock::new(HashMap::new()),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            synced: AtomicBool::new(false),
            loaded: watch::channel(false).0,
            health: Mutex::new(Health::default()),
            processed: AtomicU64::new(0),
            progress: Notify::new(),
            lapsed: Arc::new(Notify::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ServiceEntry>> {
        self.services.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ServiceEntry>> {
        self.services.write().unwrap_or_else(|e| e.into_inner())
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, change: RegistryChange) {
        // No subscribers is fine: nobody asked for changes.
        let _ = self.changes.send(change);
    }

    // ---- reads -------------------------------------------------------------

    /// Every instance, sorted by (service, instance).
    pub(crate) fn all(&self) -> Vec<ServiceInstance> {
        let services = self.read();
        let mut names: Vec<&String> = services.keys().collect();
        names.sort();
        names
            .into_iter()
            .flat_map(|s| services[s].records.values().map(|r| r.instance.clone()))
            .collect()
    }

    /// One service's instances, sorted by instance id.
    pub(crate) fn by_service(&self, service: &str) -> Vec<ServiceInstance> {
        self.read()
            .get(service)
            .map(|e| e.records.values().map(|r| r.instance.clone()).collect())
            .unwrap_or_default()
    }

    /// One instance.
    pub(crate) fn get(&self, service: &str, instance_id: &str) -> Option<ServiceInstance> {
        self.read()
            .get(service)
            .and_then(|e| e.records.get(instance_id))
            .map(|r| r.instance.clone())
    }

    /// New changes from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<RegistryChange> {
        self.changes.subscribe()
    }

    /// Initial load done and the watch alive.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced.load(Ordering::Acquire)
    }

    /// How long the view has been serving possibly outdated data.
    pub(crate) fn staleness(&self) -> Option<Duration> {
        self.health().stale_since.map(|t| t.elapsed())
    }

    /// Watches re-created after a break.
    pub(crate) fn resyncs(&self) -> u64 {
        self.health().resyncs
    }

    /// Waits until every registry write acknowledged before this call is in
    /// the view, or `deadline` passes. Costs one JetStream API request (no
    /// consumer is created). Returns whether the view is known current.
    pub(crate) async fn catch_up(&self, stream: &Stream, deadline: tokio::time::Instant) -> bool {
        let (consumer, generation) = {
            let h = self.health();
            match (&h.consumer, self.is_synced()) {
                (Some(c), true) => (c.clone(), h.generation),
                _ => return false,
            }
        };
        let info = match tokio::time::timeout_at(deadline, stream.consumer_info(&consumer)).await {
            Ok(Ok(info)) => info,
            Ok(Err(e)) => {
                debug!(error = %crate::startup::Causes(&e), "registry catch-up: consumer info failed");
                return false;
            }
            Err(_) => return false,
        };
        let target = info.delivered.consumer_sequence + info.num_pending;
        loop {
            let notified = self.progress.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.health().generation != generation {
                return false;
            }
            if self.processed.load(Ordering::Acquire) >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    // ---- scope -------------------------------------------------------------

    /// What the watch follows, as it changes.
    pub(crate) fn scope_receiver(&self) -> watch::Receiver<Scope> {
        self.scope.receiver()
    }

    /// Adds `service` (or, with `None`, the whole registry) to the scope if
    /// it is not covered yet, notes the lookup, and returns the generation
    /// the view must reach to hold it ([`WatchScope::cover`]).
    pub(crate) fn cover(&self, service: Option<&str>, at: tokio::time::Instant) -> u64 {
        self.scope.cover(service, at)
    }

    /// Removes services not looked up for `idle` from the scope.
    pub(crate) fn prune_idle(&self, idle: Duration) {
        self.scope.prune_idle(idle);
    }

    /// The watch loaded everything in scope `generation`.
    pub(crate) fn scope_loaded(&self, generation: u64) {
        self.scope.loaded(generation);
    }

    /// Waits until the view holds scope `generation`, or `deadline`.
    pub(crate) async fn wait_scope(&self, generation: u64, deadline: tokio::time::Instant) -> bool {
        self.scope.wait(generation, deadline).await
    }

    // ---- writes (the watch task and routing) ------------------------------

    /// Applies a put seen by the watch. Called for every heartbeat of every
    /// instance, so it allocates only for new records and for subscribers.
    pub(crate) fn upsert(&self, instance: ServiceInstance, revision: u64) {
        let event = (self.changes.receiver_count() > 0).then(|| instance.clone());
        {
            let mut services = self.write();
            if !services.contains_key(&instance.service_name) {
                services.insert(instance.service_name.clone(), ServiceEntry::default());
            }
            let Some(entry) = services.get_mut(&instance.service_name) else {
                return;
            };
            self.index.upserted(&instance, revision);
            match entry.records.get_mut(&instance.instance_id) {
                Some(record) => {
                    if record.lapse.take().is_some() {
                        // Written again: the expiry was a stall's, not a
                        // departure.
                        debug!(service = %instance.service_name, instance = %instance.instance_id,
                            "an expired record was written again within its grace");
                    }
                    record.instance = instance;
                    record.revision = revision;
                }
                None => {
                    let id = instance.instance_id.clone();
                    entry.records.insert(
                        id,
                        Record {
                            instance,
                            revision,
                            lapse: None,
                        },
                    );
                }
            }
        }
        if let Some(instance) = event {
            self.emit(RegistryChange::Upserted(instance));
        }
    }

    /// Applies a removal seen by the watch (delete, purge or TTL expiry),
    /// or by a load that no longer finds the record. An expiry or a
    /// vanishing waits out the record's [`expiry_grace`] first (see the
    /// module docs): the record stays, and is removed by
    /// [`Self::sweep_lapsed`] unless written again meanwhile. Any other
    /// removal applies at once, a pending one included.
    pub(crate) fn remove(&self, service: &str, instance_id: &str, reason: RemovalReason) {
        if matches!(reason, RemovalReason::Expired | RemovalReason::Vanished) {
            let mut services = self.write();
            let Some(record) = services
                .get_mut(service)
                .and_then(|e| e.records.get_mut(instance_id))
            else {
                return;
            };
            if record.lapse.is_some() {
                return;
            }
            if let Some(grace) = expiry_grace(&record.instance) {
                let until = Instant::now() + grace;
                debug!(
                    service,
                    instance = instance_id,
                    reason = reason.as_str(),
                    ?grace,
                    "a record left the registry; kept for its grace in case it is written again"
                );
                record.lapse = Some((until, reason));
                drop(services);
                self.lapsed.notify_one();
                return;
            }
        }
        self.remove_now(service, instance_id, reason);
    }

    /// Applies the removals whose grace ended by `now`, and returns when
    /// the next one ends, if any is pending.
    pub(crate) fn sweep_lapsed(&self, now: Instant) -> Option<Instant> {
        // Found and removed under one lock: a write landing in between
        // would otherwise be removed.
        let (removed, next) = {
            let mut services = self.write();
            let mut due = Vec::new();
            let mut next: Option<Instant> = None;
            for (service, entry) in services.iter() {
                for (id, record) in &entry.records {
                    match record.lapse {
                        Some((until, reason)) if until <= now => {
                            due.push((service.clone(), id.clone(), reason));
                        }
                        Some((until, _)) => next = Some(next.map_or(until, |n| n.min(until))),
                        None => {}
                    }
                }
            }
            let removed: Vec<_> = due
                .into_iter()
                .filter(|(service, id, _)| self.take(&mut services, service, id))
                .collect();
            (removed, next)
        };
        for (service, id, reason) in removed {
            self.announce_removal(&service, &id, reason);
        }
        next
    }

    /// Removes a record at once and announces it.
    fn remove_now(&self, service: &str, instance_id: &str, reason: RemovalReason) {
        let removed = self.take(&mut self.write(), service, instance_id);
        if removed {
            self.announce_removal(service, instance_id, reason);
        }
    }

    /// Takes a record out of `services` (the view, write-locked) and the
    /// index; returns whether there was one.
    fn take(
        &self,
        services: &mut HashMap<String, ServiceEntry>,
        service: &str,
        instance_id: &str,
    ) -> bool {
        let Some(entry) = services.get_mut(service) else {
            return false;
        };
        let removed = entry.records.remove(instance_id).is_some();
        if removed {
            self.index.removed(service, instance_id);
        }
        if entry.records.is_empty() {
            services.remove(service);
        }
        removed
    }

    fn announce_removal(&self, service: &str, instance_id: &str, reason: RemovalReason) {
        self.emit(RegistryChange::Removed {
            service: service.to_owned(),
            instance_id: instance_id.to_owned(),
            reason,
        });
    }

    /// Records read from the bucket's replicas while the watch is broken
    /// (`kv_watch`'s refresh), with their revisions: a replica may be
    /// behind the view, so only a record newer than the view's for its
    /// instance is taken, or for an instance the view lacks, one newer than
    /// `floor`, the highest revision the view was handed or an earlier
    /// refresh read up to (an older one was removed since). Removals are
    /// not learned this way.
    pub(crate) fn refresh(&self, records: Vec<(ServiceInstance, u64)>, floor: u64) {
        let newer: Vec<_> = {
            let services = self.read();
            records
                .into_iter()
                .filter(|(instance, revision)| {
                    let held = services
                        .get(&instance.service_name)
                        .and_then(|e| e.records.get(&instance.instance_id));
                    *revision > held.map_or(floor, |r| r.revision)
                })
                .collect()
        };
        for (instance, revision) in newer {
            debug!(service = %instance.service_name, instance = %instance.instance_id, revision,
                "a record read from the bucket's replicas while the watch is broken");
            self.upsert(instance, revision);
        }
    }

    /// Replaces the whole view with a load, emitting the differences. The
    /// index keeps what it knows of unchanged records (local evictions,
    /// call statistics); with `fresh` (the bucket was created again, so its
    /// revisions say nothing about the old ones) it is reset and a record
    /// counts as unchanged only when its content is.
    pub(crate) fn replace_all(&self, mut snapshot: Snapshot, fresh: bool) {
        let mut removed = Vec::new();
        {
            let mut services = self.write();
            if fresh {
                self.index.reset();
            }
            for (service, entry) in services.iter_mut() {
                for (id, record) in entry.records.iter_mut() {
                    let key = (service.clone(), id.clone());
                    if snapshot.contains_key(&key) {
                        // Stored again: a pending removal is off.
                        record.lapse = None;
                    }
                    match snapshot.get(&key) {
                        None => removed.push(key),
                        // Unchanged: no event.
                        Some((_, rev)) if !fresh && *rev == record.revision => {
                            snapshot.remove(&key);
                        }
                        Some((instance, rev)) if fresh && *instance == record.instance => {
                            record.revision = *rev;
                            self.index.upserted(instance, *rev);
                            snapshot.remove(&key);
                        }
                        // Changed: upserted below. In a new bucket its
                        // revision may be lower than the old one.
                        Some(_) if fresh => record.revision = 0,
                        Some(_) => {}
                    }
                }
            }
        }
        for (service, id) in removed {
            self.remove(&service, &id, RemovalReason::Vanished);
        }
        let mut upserts: Vec<_> = snapshot.into_values().collect();
        upserts.sort_by_key(|(_, rev)| *rev);
        for (instance, rev) in upserts {
            self.upsert(instance, rev);
        }
    }

    // ---- watch health ------------------------------------------------------

    /// A new watch session is starting with this consumer.
    pub(crate) fn begin_session(&self, consumer: String) {
        let mut h = self.health();
        h.generation += 1;
        h.consumer = Some(consumer);
        self.processed.store(0, Ordering::Release);
        drop(h);
        self.progress.notify_waiters();
    }

    /// The session applied the message with this consumer sequence.
    pub(crate) fn applied(&self, consumer_sequence: u64) {
        self.processed.store(consumer_sequence, Ordering::Release);
        self.progress.notify_waiters();
    }

    /// The session finished its initial load: the view is current.
    pub(crate) fn mark_synced(&self) {
        let mut h = self.health();
        if h.stale_since.take().is_some() {
            h.resyncs += 1;
        }
        self.synced.store(true, Ordering::Release);
        drop(h);
        self.loaded.send_replace(true);
        self.progress.notify_waiters();
    }

    /// The view was loaded from a snapshot of the bucket's replicas: it
    /// serves it, counted stale since the first such load, until a
    /// session loads (no resync is counted for a snapshot).
    pub(crate) fn mark_snapshot(&self) {
        let mut h = self.health();
        h.consumer = None;
        h.generation += 1;
        if h.stale_since.is_none() {
            h.stale_since = Some(Instant::now());
        }
        self.synced.store(false, Ordering::Release);
        drop(h);
        self.loaded.send_replace(true);
        self.progress.notify_waiters();
    }

    /// The watch broke; the view keeps serving what it has.
    pub(crate) fn mark_broken(&self) {
        let mut h = self.health();
        h.consumer = None;
        h.generation += 1;
        if *self.loaded.borrow() && h.stale_since.is_none() {
            h.stale_since = Some(Instant::now());
        }
        self.synced.store(false, Ordering::Release);
        drop(h);
        self.progress.notify_waiters();
    }
}

/// Records and snapshots the view's tests and the routing index's share.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::Snapshot;
    use aegis_contracts::{InstanceStatus, ServiceInstance};
    use chrono::Utc;
    use serde_json::json;

    /// A record of `service`/`id` in `status`, serving method `m`.
    pub(crate) fn inst(service: &str, id: &str, status: InstanceStatus) -> ServiceInstance {
        let mut i = ServiceInstance::new(service, id, "1.0.0", Utc::now());
        i.status = status;
        i.metadata.insert("endpoints".into(), json!(["m"]));
        i
    }

    /// A reload of service `svc` against a view holding `keep` (revision
    /// 1), `changed` (3) and perhaps `gone`: `keep` unchanged, `changed`
    /// now STANDBY at revision 7, `new` ACTIVE at 8, `gone` absent.
    pub(crate) fn reload_keep_changed_new() -> Snapshot {
        let mut snapshot = Snapshot::new();
        for (id, status, revision) in [
            ("keep", InstanceStatus::Active, 1),
            ("changed", InstanceStatus::Standby, 7),
            ("new", InstanceStatus::Active, 8),
        ] {
            snapshot.insert(
                ("svc".into(), id.into()),
                (inst("svc", id, status), revision),
            );
        }
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{inst, reload_keep_changed_new};
    use super::*;
    use aegis_contracts::InstanceStatus;

    /// The view alone, with no index built on it.
    #[derive(Debug)]
    struct NoIndex;

    impl RecordIndex for NoIndex {
        fn upserted(&self, _: &ServiceInstance, _: u64) {}
        fn removed(&self, _: &str, _: &str) {}
        fn reset(&self) {}
    }

    fn view() -> Shared {
        Shared::new(Arc::new(NoIndex))
    }

    #[test]
    fn upserts_removals_and_changes() {
        let view = view();
        let mut rx = view.subscribe();
        view.upsert(inst("svc", "b", InstanceStatus::Active), 1);
        view.upsert(inst("svc", "a", InstanceStatus::Standby), 2);
        view.upsert(inst("other", "x", InstanceStatus::Active), 3);
        let ids: Vec<_> = view.all().into_iter().map(|i| i.instance_id).collect();
        assert_eq!(ids, ["x", "a", "b"], "sorted by service, then instance");
        view.remove("svc", "b", RemovalReason::Expired);
        view.remove("svc", "nope", RemovalReason::Expired);
        assert_eq!(view.by_service("svc").len(), 1);
        view.remove("svc", "a", RemovalReason::Expired);
        assert!(view.by_service("svc").is_empty());
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push(change);
        }
        assert_eq!(
            seen.len(),
            5,
            "three upserts and two real removals: {seen:?}"
        );
        assert!(
            matches!(&seen[3], RegistryChange::Removed { instance_id, .. } if instance_id == "b")
        );
    }

    /// A record that beats every `ms` milliseconds.
    fn beating(id: &str, ms: u64) -> ServiceInstance {
        let mut i = inst("svc", id, InstanceStatus::Active);
        i.metadata
            .insert(METADATA_HEARTBEAT_MS.into(), serde_json::json!(ms));
        i
    }

    #[test]
    fn the_grace_is_a_write_and_two_heartbeats_capped() {
        let grace = |ms| expiry_grace(&beating("a", ms));
        assert_eq!(grace(1000), Some(Duration::from_secs(3)));
        assert_eq!(grace(100), Some(Duration::from_millis(700)));
        assert_eq!(grace(30_000), Some(EXPIRY_GRACE_MAX));
        assert_eq!(grace(0), None, "0 says it does not beat");
        assert_eq!(
            expiry_grace(&inst("svc", "a", InstanceStatus::Active)),
            None
        );
    }

    /// The invariant: an expiry takes a record out of the view only once
    /// its grace has passed without a new write of it, and is then
    /// announced with its reason; a new write within the grace cancels it;
    /// a deregistration is never held.
    #[test]
    fn an_expiry_waits_out_its_grace_unless_written_again() {
        let view = view();
        let mut rx = view.subscribe();
        view.upsert(beating("stalled", 1000), 1);
        view.upsert(beating("crashed", 1000), 2);
        view.upsert(beating("left", 1000), 3);
        let start = Instant::now();
        view.remove("svc", "stalled", RemovalReason::Expired);
        view.remove("svc", "crashed", RemovalReason::Expired);
        view.remove("svc", "left", RemovalReason::Deregistered);
        let ids = |v: &Shared| -> Vec<String> {
            v.by_service("svc")
                .into_iter()
                .map(|i| i.instance_id)
                .collect()
        };
        assert_eq!(ids(&view), ["crashed", "stalled"], "expiries held");
        view.upsert(beating("stalled", 1000), 4);
        // A second marker for a held record changes nothing.
        view.remove("svc", "crashed", RemovalReason::Expired);
        let next = view.sweep_lapsed(start);
        assert!(next.is_some_and(|n| n >= start + Duration::from_secs(3)));
        assert_eq!(ids(&view), ["crashed", "stalled"]);
        assert_eq!(view.sweep_lapsed(start + Duration::from_secs(4)), None);
        assert_eq!(ids(&view), ["stalled"], "written again within the grace");
        let removals: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|c| match c {
                RegistryChange::Removed {
                    instance_id,
                    reason,
                    ..
                } => Some((instance_id, reason)),
                RegistryChange::Upserted(_) => None,
            })
            .collect();
        assert_eq!(
            removals,
            [
                ("left".to_owned(), RemovalReason::Deregistered),
                ("crashed".to_owned(), RemovalReason::Expired)
            ]
        );
    }

    /// A held record that is then deleted goes at once, with that reason;
    /// one a load finds again stays.
    #[test]
    fn a_held_record_can_still_be_deleted_or_found_again() {
        let view = view();
        view.upsert(beating("a", 1000), 1);
        view.upsert(beating("b", 1000), 2);
        let mut rx = view.subscribe();
        view.remove("svc", "a", RemovalReason::Expired);
        view.remove("svc", "a", RemovalReason::Deleted);
        assert!(view.get("svc", "a").is_none());
        let mut snapshot = Snapshot::new();
        snapshot.insert(("svc".into(), "b".into()), (beating("b", 1000), 2));
        view.remove("svc", "b", RemovalReason::Vanished);
        view.replace_all(snapshot, false);
        assert_eq!(view.sweep_lapsed(Instant::now() + EXPIRY_GRACE_MAX), None);
        assert!(view.get("svc", "b").is_some(), "loaded again: not removed");
        let seen: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok()).collect();
        assert!(
            matches!(&seen[..], [RegistryChange::Removed { instance_id, reason: RemovalReason::Deleted, .. }] if instance_id == "a"),
            "{seen:?}"
        );
    }

    #[test]
    fn a_reload_emits_only_the_differences() {
        let view = view();
        view.upsert(inst("svc", "keep", InstanceStatus::Active), 1);
        view.upsert(inst("svc", "gone", InstanceStatus::Active), 2);
        view.upsert(inst("svc", "changed", InstanceStatus::Active), 3);
        let mut rx = view.subscribe();
        view.replace_all(reload_keep_changed_new(), false);
        let mut seen = Vec::new();
        while let Ok(change) = rx.try_recv() {
            seen.push((
                change.instance_id().to_owned(),
                matches!(change, RegistryChange::Upserted(_)),
            ));
        }
        assert_eq!(
            seen,
            [
                ("gone".into(), false),
                ("changed".into(), true),
                ("new".into(), true)
            ]
        );
    }

    #[test]
    fn a_fresh_load_from_a_new_bucket_forgets_revisions_and_evictions() {
        let view = view();
        view.upsert(inst("svc", "a", InstanceStatus::Active), 300);
        view.upsert(inst("svc", "b", InstanceStatus::Active), 301);
        let mut rx = view.subscribe();
        let mut changed = inst("svc", "b", InstanceStatus::Active);
        changed.version = "2.0.0".into();
        let mut snapshot = Snapshot::new();
        let same = view.get("svc", "a").unwrap();
        snapshot.insert(("svc".into(), "a".into()), (same, 1));
        snapshot.insert(("svc".into(), "b".into()), (changed, 2));
        view.replace_all(snapshot, true);
        // b's new content in, and only b announced.
        assert_eq!(view.get("svc", "b").unwrap().version, "2.0.0");
        let seen: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|c| c.instance_id().to_owned())
            .collect();
        assert_eq!(seen, ["b"]);
        // Revisions continue from the new bucket's.
        view.upsert(inst("svc", "a", InstanceStatus::Active), 3);
        assert!(view.by_service("svc").iter().any(|i| i.instance_id == "a"));
    }

    #[test]
    fn health_tracks_staleness_after_the_first_load() {
        let view = view();
        view.mark_broken();
        assert_eq!(view.staleness(), None, "nothing served yet, nothing stale");
        view.begin_session("c1".into());
        view.mark_synced();
        assert!(view.is_synced());
        view.mark_broken();
        assert!(!view.is_synced());
        assert!(view.staleness().is_some());
        view.begin_session("c2".into());
        view.mark_synced();
        assert_eq!(view.staleness(), None);
        assert_eq!(view.resyncs(), 1);
    }

    #[test]
    fn a_snapshot_is_served_as_stale_and_is_no_resync() {
        let view = view();
        view.mark_snapshot();
        assert!(*view.loaded.borrow(), "a snapshot lets the view serve");
        assert!(!view.is_synced(), "but not as current");
        let stale = view.staleness().expect("stale from the first snapshot");
        view.mark_broken();
        view.mark_snapshot();
        assert!(
            view.staleness().unwrap() >= stale,
            "still stale since the first"
        );
        assert_eq!(view.resyncs(), 0);
        view.begin_session("c1".into());
        view.mark_synced();
        assert!(view.is_synced());
        assert_eq!(view.staleness(), None);
    }

    /// A refresh reads a replica while the watch is broken: a newer record
    /// is taken, and a record the view lacks only above every revision the
    /// watch handed over; a replica behind changes nothing.
    #[test]
    fn a_refresh_takes_only_newer_records() {
        let v = view();
        let mut snapshot = Snapshot::new();
        snapshot.insert(
            ("svc".into(), "a".into()),
            (inst("svc", "a", InstanceStatus::Active), 5),
        );
        v.replace_all(snapshot, false);
        // The load read up to 10: an instance removed at 10 is not in it.
        v.refresh(
            vec![
                (inst("svc", "a", InstanceStatus::Active), 5),
                (inst("svc", "gone", InstanceStatus::Active), 9),
                (inst("svc", "a", InstanceStatus::Unhealthy), 11),
                (inst("svc", "new", InstanceStatus::Active), 12),
            ],
            10,
        );
        let ids: Vec<_> = v
            .by_service("svc")
            .into_iter()
            .map(|i| (i.instance_id, i.status))
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        assert_eq!(
            ids,
            vec![
                ("a".to_owned(), InstanceStatus::Unhealthy),
                ("new".to_owned(), InstanceStatus::Active)
            ]
        );
        // An older read of the same records changes nothing.
        // Nor does a replica further behind than the last read, which went
        // up to 14 (the floor is raised to it).
        v.refresh(
            vec![
                (inst("svc", "a", InstanceStatus::Active), 5),
                (inst("svc", "later-gone", InstanceStatus::Active), 13),
            ],
            14,
        );
        assert!(v.get("svc", "later-gone").is_none());
        assert_eq!(
            v.get("svc", "a").map(|i| i.status),
            Some(InstanceStatus::Unhealthy)
        );
    }
}
