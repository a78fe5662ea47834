//! The fleet task: the one owner of the inputs (records, election holders,
//! connection states, beats). Every input change re-derives the instances
//! it concerns into the shared view and publishes what a viewer would see
//! change; a periodic pass looks for missing beats and sends the digest.
//! The reads of election keys it asks for live in `key_checks`.
//!
//! Why one module of over 500 lines: [`State`] is the one owner of the
//! inputs, and its methods (apply a record, a holder, a connection
//! change, a beat; re-derive; the periodic pass) all read and write the
//! same maps and end in the same re-derive; split by input, one change
//! would span files. The rule, the watches and the beats are elsewhere.

mod key_checks;

use super::*;
use tracing::{debug, info};

use key_checks::Judged;
pub(in crate::fleet) use key_checks::KeyChecks;

/// The inputs, owned by the fleet task.
pub(super) struct State {
    pub(super) shared: Arc<Shared>,
    pub(super) records: HashMap<Key, ServiceInstance>,
    /// Per (service, group): the key's revision and holder.
    pub(super) leaders: HashMap<Key, (u64, Option<Holder>)>,
    /// Reads of keys the records say the watch is behind on.
    pub(super) keys: KeyChecks,
    pub(super) conns: ConnectionStates,
    /// Last sign of life per instance: a beat or a record write.
    pub(super) beats: HashMap<Key, Instant>,
    /// Instances whose beats stopped.
    pub(super) unresponsive: HashSet<Key>,
    /// Instances whose record expired or vanished while their beats went
    /// on: since when, and how the registry said they left. They stay
    /// shown (see [`LAPSED_HOLD`]).
    pub(super) lapsed: HashMap<Key, (Instant, RemovalReason)>,
    /// Instances whose record expired (or vanished) while their beats had
    /// stopped but the NATS server still held their connection: hung or
    /// partitioned, still on the bus. They stay shown, `unresponsive_expired`,
    /// while the connection is open (see [`Held`]).
    pub(super) held: HashMap<Key, Held>,
    /// Since when this monitor's own connection has been up without a break
    /// (missing beats count only from then: its own reconnect is no
    /// instance's fault).
    pub(super) listening_since: Instant,
    /// The client's reconnect count at the last check.
    pub(super) connects: u64,
    pub(super) client: async_nats::Client,
}

impl State {
    pub(super) async fn run(
        mut self,
        registry: RegistryReader,
        registry_changes: impl futures::Stream<Item = RegistryChange> + Send,
        mut leaders: mpsc::UnboundedReceiver<LeaderEvent>,
        mut conns: mpsc::UnboundedReceiver<ConnectionNews>,
        mut beats: mpsc::UnboundedReceiver<Key>,
        cancel: CancellationToken,
    ) {
        futures::pin_mut!(registry_changes);
        let mut beat_check = tokio::time::interval(BEAT_CHECK);
        beat_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut digest = tokio::time::interval(DIGEST_EVERY);
        digest.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut conns_open = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                change = registry_changes.next() => match change {
                    Some(change) => self.apply_registry(change),
                    None => return,
                },
                Some(event) = leaders.recv() => self.apply_leader_event(event),
                Some(key) = beats.recv() => self.beat(key),
                _ = beat_check.tick() => {
                    // Beats already received but not yet applied are no
                    // missed beats: a busy monitor must not mark a live
                    // fleet unresponsive because its own queue is behind.
                    while let Ok(key) = beats.try_recv() {
                        self.beat(key);
                    }
                    self.check_beats();
                }
                _ = digest.tick() => self.publish_digest(),
                event = conns.recv(), if conns_open => match event {
                    Some(event) => self.apply_connection(&event),
                    None => conns_open = false,
                },
                _ = reconcile.tick() => {
                    self.conns.forget_old();
                    self.reconcile(&registry, registry_changes.as_mut());
                }
            }
        }
    }

    /// Applies one change of the registry reader's view.
    fn apply_registry(&mut self, change: RegistryChange) {
        match change {
            RegistryChange::Upserted(record) => self.upsert(record),
            RegistryChange::Removed {
                service,
                instance_id,
                reason,
            } => self.remove(service, instance_id, reason),
        }
    }

    pub(super) fn upsert(&mut self, record: ServiceInstance) {
        let key = (record.service_name.clone(), record.instance_id.clone());
        let record_written = record.last_heartbeat;
        self.records.insert(key.clone(), record);
        self.lapsed.remove(&key);
        self.held.remove(&key);
        self.keys.arrived.insert(key.clone(), Instant::now());
        // A record write is a sign of life too (at the time it says it was
        // written: loading an old record is none).
        self.beats.insert(key.clone(), Instant::now());
        self.signed(&key, record_written);
        self.unresponsive.remove(&key);
        self.refresh(&key);
        // Written after its connection was taken for closed: it lives.
        if let Some(name) = self.records.get(&key).and_then(connection_of)
            && self.conns.sign_of_life(name, Some(record_written))
        {
            let name = name.to_owned();
            self.revived(&name);
        }
    }

    fn beat(&mut self, key: Key) {
        if !self.records.contains_key(&key) {
            return;
        }
        self.beats.insert(key.clone(), Instant::now());
        self.signed(&key, Utc::now());
        // A beat after its connection was taken for closed: it lives.
        if let Some(name) = self.records.get(&key).and_then(connection_of)
            && self.conns.sign_of_life(name, None)
        {
            let name = name.to_owned();
            self.revived(&name);
        }
        // A held instance that beats again was hung, not gone: it writes
        // its record again within a heartbeat, and is held as any other
        // live instance without a record meanwhile.
        let resumed = match self.held.remove(&key) {
            Some(held) => {
                self.lapsed
                    .insert(key.clone(), (Instant::now(), held.reason));
                true
            }
            None => false,
        };
        if self.unresponsive.remove(&key) || resumed {
            self.refresh(&key);
        }
    }

    /// Shows again the instances served over the connection `name`, which
    /// a sign of life of one of them reopened.
    fn revived(&mut self, name: &str) {
        info!(
            connection = name,
            "a sign of life after its connection was taken for closed: shown open again"
        );
        let affected: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| connection_of(r) == Some(name))
            .map(|(k, _)| k.clone())
            .collect();
        self.refresh_all(&affected);
    }

    /// Marks instances whose beats stopped, and takes care that this
    /// monitor's own reconnect does not count against them.
    fn check_beats(&mut self) {
        use std::sync::atomic::Ordering;
        let connects = self.client.statistics().connects.load(Ordering::Relaxed);
        let connected = self.client.connection_state() == async_nats::connection::State::Connected;
        if !connected || connects != self.connects {
            self.connects = connects;
            self.listening_since = Instant::now();
            return;
        }
        let now = Instant::now();
        let gone: Vec<(Key, RemovalReason)> = self
            .lapsed
            .iter()
            .filter(|(k, (since, _))| {
                now.duration_since(*since) > LAPSED_HOLD || !self.still_beating(k)
            })
            .map(|(k, (_, reason))| (k.clone(), *reason))
            .collect();
        for ((service, id), reason) in gone {
            self.drop_instance((service, id), reason);
        }
        self.check_held(now);
        let stale: Vec<Key> = self
            .records
            .iter()
            .filter(|(k, _)| !self.unresponsive.contains(*k))
            .filter(|(k, r)| self.beats_missed(k, r, now) == Some(true))
            .map(|(k, _)| k.clone())
            .collect();
        self.unresponsive.extend(stale.iter().cloned());
        self.refresh_all(&stale);
    }

    /// Lets go of held instances whose connection is no longer open: one
    /// whose close was seen is shown `disconnected` (as a process that
    /// died) for [`CLOSED_HOLD`] and then removed as its record was; one
    /// whose connection this monitor no longer knows of at all is removed
    /// at once.
    fn check_held(&mut self, now: Instant) {
        let mut gone = Vec::new();
        for (key, held) in &mut self.held {
            let name = self.records.get(key).and_then(connection_of);
            if name.is_some_and(|name| self.conns.is_open(name)) {
                held.closed = None;
                continue;
            }
            if name.is_none_or(|name| self.conns.closed_at(name).is_none()) {
                gone.push((key.clone(), held.reason));
                continue;
            }
            let closed = *held.closed.get_or_insert(now);
            if now.duration_since(closed) > CLOSED_HOLD {
                gone.push((key.clone(), held.reason));
            }
        }
        for (key, reason) in gone {
            self.drop_instance(key, reason);
        }
    }

    /// Whether `key`'s record may be held after it expired: its beats have
    /// stopped, and the NATS server still holds its connection open (with
    /// system account access only; without it a hung process cannot be
    /// told from a dead one).
    fn connection_held(&self, key: &Key) -> bool {
        let Some(record) = self.records.get(key) else {
            return false;
        };
        self.shared.advisories
            && (self.unresponsive.contains(key)
                || self.beats_missed(key, record, Instant::now()) == Some(true))
            && connection_of(record).is_some_and(|name| self.conns.is_open(name))
    }

    /// Notes when the connection `name` of `key` closed, as its disconnect
    /// advisory said (`None`: it is open, or its close was only inferred),
    /// for [`Fleet::closes`]. The same connection open again (a reconnect)
    /// drops the time noted for it; a new connection under the same id (a
    /// restart) keeps the old ones' (up to [`CLOSES_PER_INSTANCE`]).
    fn closed(&self, key: &Key, name: &str, at: Option<DateTime<Utc>>) {
        let mut closed = self.shared.closed.lock().unwrap_or_else(|e| e.into_inner());
        let Some(at) = at else {
            if let Some(closes) = closed.get_mut(key) {
                closes.retain(|(noted, _)| noted != name);
                if closes.is_empty() {
                    closed.remove(key);
                }
            }
            return;
        };
        let closes = closed.entry(key.clone()).or_default();
        match closes.iter_mut().find(|(noted, _)| noted == name) {
            Some((_, noted_at)) if *noted_at == at => return,
            Some((_, noted_at)) => *noted_at = at,
            None => closes.push_back((name.to_owned(), at)),
        }
        // Advisories may come out of order: the oldest close is the one
        // to go, not the first one told.
        closes.make_contiguous().sort_by_key(|(_, at)| *at);
        if closes.len() > CLOSES_PER_INSTANCE {
            closes.pop_front();
        }
        if closed.len() > CLOSED_KEPT
            && let Some(oldest) = closed
                .iter()
                .min_by_key(|(_, closes)| closes.back().map(|(_, at)| *at))
                .map(|(k, _)| k.clone())
        {
            closed.remove(&oldest);
        }
    }

    /// Notes a sign of life of `key` at `at`, for [`Fleet::last_sign_of_life`].
    fn signed(&self, key: &Key, at: DateTime<Utc>) {
        // No sign of life is from the future: a record written by a clock
        // that runs ahead is one from now at the latest, or a dead
        // instance would look alive until its clock's lead ran out.
        let at = at.min(Utc::now());
        let mut signs = self.shared.signs.lock().unwrap_or_else(|e| e.into_inner());
        let last = signs.entry(key.clone()).or_insert(at);
        *last = (*last).max(at);
    }

    /// Whether `key` (of `record`) has gone [`MISSED_BEATS`] beat
    /// intervals without a beat or a record write by `now`, counting from
    /// when this monitor's connection last came up; `None` when its record
    /// gives no interval or nothing was heard of it.
    fn beats_missed(&self, key: &Key, record: &ServiceInstance, now: Instant) -> Option<bool> {
        let interval = beat_interval(record)?;
        let last = (*self.beats.get(key)?).max(self.listening_since);
        Some(now.duration_since(last) > interval * MISSED_BEATS)
    }

    /// Whether `key`'s process is known to live: its beats (or record
    /// writes) are on time and its connection is not known closed.
    fn still_beating(&self, key: &Key) -> bool {
        let Some(record) = self.records.get(key) else {
            return false;
        };
        self.beats_missed(key, record, Instant::now()) == Some(false)
            && !self.unresponsive.contains(key)
            && connection_of(record).is_none_or(|name| self.conns.closed_at(name).is_none())
    }

    fn remove(&mut self, service: String, instance_id: String, reason: RemovalReason) {
        let key = (service, instance_id);
        // A record the server expired (or a fresh load no longer has) while
        // its instance beats on was left unwritten by a stalled registry,
        // not by its instance: the stream expires every such record at
        // once when it takes writes again, a heartbeat before the
        // instances write them anew. Shown until then, or until it stops.
        if matches!(reason, RemovalReason::Expired | RemovalReason::Vanished) {
            if self.lapsed.contains_key(&key) || self.held.contains_key(&key) {
                return;
            }
            if self.still_beating(&key) {
                debug!(service = %key.0, instance = %key.1, reason = reason.as_str(), "record gone while the instance beats; still shown");
                self.lapsed.insert(key, (Instant::now(), reason));
                return;
            }
            // Its beats stopped, but NATS still holds its connection: a
            // hung or partitioned process, not a gone one. Shown while the
            // connection stays open.
            if self.connection_held(&key) {
                debug!(service = %key.0, instance = %key.1, reason = reason.as_str(), "record gone while the instance is unresponsive and its connection open; still shown");
                self.held.insert(
                    key.clone(),
                    Held {
                        reason,
                        closed: None,
                    },
                );
                self.refresh(&key);
                return;
            }
        }
        self.drop_instance(key, reason);
    }

    /// Takes `key` out of the view at once, held or not.
    fn drop_instance(&mut self, key: Key, reason: RemovalReason) {
        self.lapsed.remove(&key);
        self.held.remove(&key);
        self.records.remove(&key);
        self.keys.arrived.remove(&key);
        self.beats.remove(&key);
        self.shared
            .signs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.unresponsive.remove(&key);
        let removed = {
            let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
            let removed = view.instances.remove(&key).is_some();
            if removed {
                view.bump(&key.0, true);
                // A service with no instance left has no versions: its
                // cached list is dropped rather than kept for a name.
                if service_range(&view.instances, &key.0).next().is_none() {
                    view.services.remove(&key.0);
                }
            }
            removed
        };
        if removed {
            let (service, instance_id) = key;
            let _ = self.shared.changes.send(FleetChange::Removed {
                service,
                instance_id,
                reason,
            });
        }
    }

    pub(super) fn apply_leader_event(&mut self, event: LeaderEvent) {
        match event {
            LeaderEvent::Change(change) => self.apply_leader(change),
            LeaderEvent::Reset => self.reset_leaders(),
            LeaderEvent::Checked {
                service,
                group,
                asked,
                change,
                generation,
            } => {
                let group_key = (service, group);
                self.keys.asking.remove(&group_key);
                if generation != self.keys.generation {
                    return;
                }
                // Only an answer counts: a read that failed says nothing of
                // the key, and a record held back for it stays held (and
                // the key is read again) while its hold lasts.
                if let Ok(change) = change {
                    if let Some(change) = change {
                        self.apply_leader(change);
                    }
                    self.keys.checked.insert(group_key.clone(), asked);
                }
                // Records held back for this read are shown as the key
                // now says, whatever it said; after a failed read, those
                // still held ask again.
                let affected: Vec<Key> = self
                    .records
                    .iter()
                    .filter(|(_, r)| {
                        r.service_name == group_key.0
                            && r.sticky_active_group.as_deref() == Some(&group_key.1)
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                self.refresh_all(&affected);
            }
        }
    }

    /// The election bucket was created again: its revisions start over, so
    /// every holder known from the old one goes, and every sticky record is
    /// shown anew; the new bucket's load follows as changes.
    fn reset_leaders(&mut self) {
        self.leaders.clear();
        // Reads of the old bucket say nothing of the new one.
        self.keys.checked.clear();
        self.keys.generation += 1;
        self.shared
            .leases
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let sticky: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| r.sticky_active_group.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        self.refresh_all(&sticky);
    }

    pub(super) fn apply_leader(&mut self, change: LeaderChange) {
        let group_key = (change.service.clone(), change.group.clone());
        let holder = change
            .holder
            .map(|(instance_id, epoch)| Holder { instance_id, epoch });
        let renewal = match self.leaders.get(&group_key) {
            Some((revision, _)) if *revision >= change.revision => return,
            // Same holder, newer revision: nothing to show but that the
            // lease is alive.
            Some((_, old)) => *old == holder,
            None => false,
        };
        self.shared
            .renewed(&group_key, &holder, change.lease, change.renewed_at);
        self.leaders.insert(group_key, (change.revision, holder));
        if renewal {
            return;
        }
        let affected: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| {
                r.service_name == change.service
                    && r.sticky_active_group.as_deref() == Some(&change.group)
            })
            .map(|(k, _)| k.clone())
            .collect();
        self.refresh_all(&affected);
    }

    fn apply_connection(&mut self, news: &ConnectionNews) {
        let changed: HashSet<String> = match news {
            ConnectionNews::Advisory(event) => {
                if !self.conns.apply(event) {
                    return;
                }
                HashSet::from([event.name.clone()])
            }
            ConnectionNews::Listed(listing) => self.conns.apply_listing(listing),
            ConnectionNews::Answered(round) => self.conns.apply_answered(round),
            ConnectionNews::Leaving(server) => {
                self.conns.leaving(server);
                return;
            }
        };
        if changed.is_empty() {
            return;
        }
        let affected: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| connection_of(r).is_some_and(|name| changed.contains(name)))
            .map(|(k, _)| k.clone())
            .collect();
        self.refresh_all(&affected);
    }

    /// Brings the records in line with the registry reader (after a lagged
    /// change stream, changes may have been missed).
    ///
    /// The reader's view runs ahead of its change stream: what it holds
    /// now may still wait in `pending`, behind older changes of the same
    /// instances. Measured against that view, an instance that left would
    /// be removed as "vanished" and brought back by its last write still
    /// queued, and a record would be set to its newest version and then
    /// back to an older one. So the queue is applied first, and the
    /// instances that changes arriving meanwhile concern are left to those
    /// changes (they are at least as new as the view read).
    fn reconcile(
        &mut self,
        registry: &RegistryReader,
        mut pending: std::pin::Pin<&mut impl futures::Stream<Item = RegistryChange>>,
    ) {
        use futures::FutureExt;
        let mut drain = |state: &mut Self| {
            let mut touched = HashSet::new();
            while let Some(Some(change)) = pending.next().now_or_never() {
                touched.insert(match &change {
                    RegistryChange::Upserted(r) => (r.service_name.clone(), r.instance_id.clone()),
                    RegistryChange::Removed {
                        service,
                        instance_id,
                        ..
                    } => (service.clone(), instance_id.clone()),
                });
                state.apply_registry(change);
            }
            touched
        };
        drain(self);
        let current: HashMap<Key, ServiceInstance> = registry
            .all()
            .into_iter()
            .map(|r| ((r.service_name.clone(), r.instance_id.clone()), r))
            .collect();
        let touched = drain(self);
        let gone: Vec<Key> = self
            .records
            .keys()
            .filter(|k| !current.contains_key(*k) && !touched.contains(*k))
            .cloned()
            .collect();
        for (service, id) in gone {
            self.remove(service, id, RemovalReason::Vanished);
        }
        for (key, record) in current {
            if !touched.contains(&key) && self.records.get(&key) != Some(&record) {
                self.upsert(record);
            }
        }
        // The last read of a group's key matters only to its records: a
        // group with none left (renamed, or its service gone) is forgotten.
        let groups: HashSet<Key> = self
            .records
            .values()
            .filter_map(|r| {
                let group = r.sticky_active_group.clone()?;
                Some((r.service_name.clone(), group))
            })
            .collect();
        self.keys.checked.retain(|group, _| groups.contains(group));
        // So does a removed key's last revision: kept while the group has
        // records (it orders what a read of the key answers after) or a
        // read of it is on its way (whose answer may be older); a held key
        // stays, as its holder is shown when an instance of it comes back,
        // and goes once the key is removed (its leader resigns or steps
        // aside and deletes it, or it is purged). A lapsed lease removes
        // nothing, nor does a crash: the key of a group whose last leader
        // crashed stays in the bucket, and so does its entry here, so this
        // map grows only as far as the bucket's own leftover keys.
        let asking = &self.keys.asking;
        self.leaders.retain(|group, (_, holder)| {
            holder.is_some() || groups.contains(group) || asking.contains(group)
        });
    }

    /// Re-derives one instance's view; publishes it when it changed.
    fn refresh(&mut self, key: &Key) {
        self.refresh_all(std::slice::from_ref(key));
    }

    /// Re-derives the views of `keys` (the members of a sticky group whose
    /// key moved, or the instances on a connection that closed) and lands
    /// them in the shared view under one lock, so that no reader sees half
    /// a move: the new leader ACTIVE beside the old one not yet deposed.
    /// Publishes those that changed with every demotion before any
    /// promotion, so a viewer applying them one by one never holds two
    /// ACTIVE in a group either.
    fn refresh_all(&mut self, keys: &[Key]) {
        let derived: Vec<Rederived> = keys.iter().filter_map(|k| self.rederive(k)).collect();
        if derived.is_empty() {
            return;
        }
        let mut changed = Vec::new();
        let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
        for one in derived {
            if let Some((next, true)) = one.land(&mut view) {
                changed.push(next);
            }
        }
        drop(view);
        // Stable: otherwise in the order asked.
        changed.sort_by_key(|next| next.instance.status == InstanceStatus::Active);
        for next in changed {
            let _ = self
                .shared
                .changes
                .send(FleetChange::Upserted(Box::new(next)));
        }
    }

    /// What one instance is to be shown as now; `None` when it has no
    /// record, or is to be held back from a first showing (see
    /// [`Judged::Hold`]).
    fn rederive(&mut self, key: &Key) -> Option<Rederived> {
        let record = self.records.get(key)?;
        let group_key = record
            .sticky_active_group
            .as_ref()
            .map(|g| (record.service_name.clone(), g.clone()));
        let (revision, holder) = group_key
            .as_ref()
            .and_then(|g| self.leaders.get(g))
            .map_or((0, None), |(revision, h)| (*revision, h.as_ref()));
        let connection = connection_of(record);
        let closed_at = connection.and_then(|name| self.conns.closed_at(name));
        if let Some(name) = connection {
            self.closed(key, name, self.conns.advised_closed_at(name));
        }
        let liveness = if closed_at.is_some() {
            Liveness::Disconnected
        } else if self.held.contains_key(key) {
            Liveness::UnresponsiveExpired
        } else if self.unresponsive.contains(key) {
            Liveness::Unresponsive
        } else {
            Liveness::Live
        };
        let mut derived = derive(record, holder, liveness);
        if let Some(group_key) = group_key {
            match self.keys.judge(key, &group_key, record, revision, holder) {
                Judged::Shown => {}
                // A process known to be down is shown down whatever it
                // claims.
                Judged::Ask | Judged::Hold if liveness != Liveness::Live => {
                    self.keys.ask(group_key);
                }
                Judged::Ask => self.keys.ask(group_key),
                Judged::Hold => {
                    self.keys.ask(group_key);
                    if self
                        .shared
                        .view
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .instances
                        .contains_key(key)
                    {
                        return None;
                    }
                    // Shown for the first time: not as the leader (the key
                    // as seen has another) and not as deposed (it may not
                    // be) until the read answers.
                    derived = Derived {
                        status: InstanceStatus::Standby,
                        reason: None,
                        epoch: record.epoch,
                        detail: None,
                    };
                }
            }
        }
        let mut instance = record.clone();
        instance.status = derived.status;
        instance.epoch = derived.epoch;
        derive::clean_record_detail(&mut instance);
        Some(Rederived {
            key: key.clone(),
            reported_status: record.status,
            reported_since: reported_since(record),
            instance,
            reason: derived.reason,
            detail: derived.detail,
            closed_at,
        })
    }

    /// Publishes the digest: counts, version and late beats, in order with
    /// the changes published before it.
    fn publish_digest(&self) {
        let now = Instant::now();
        let as_of = Utc::now();
        let mut late: Vec<LateBeat> = self
            .records
            .iter()
            .filter_map(|(key, record)| {
                let interval = beat_interval(record)?;
                let age = now.duration_since(*self.beats.get(key)?);
                (age > interval.mul_f64(LATE_AFTER_INTERVALS)).then(|| LateBeat {
                    service_name: key.0.clone(),
                    instance_id: key.1.clone(),
                    last_beat: as_of
                        - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX),
                })
            })
            .collect();
        late.sort_by(|a, b| {
            (&a.service_name, &a.instance_id).cmp(&(&b.service_name, &b.instance_id))
        });
        let (version, summary) = {
            let view = self.shared.view.read().unwrap_or_else(|e| e.into_inner());
            (view.fleet.visible, summarize(&view.instances))
        };
        let _ = self
            .shared
            .changes
            .send(FleetChange::Digest(Box::new(FleetDigest {
                as_of,
                version,
                summary,
                late_after_intervals: LATE_AFTER_INTERVALS,
                late,
            })));
    }
}

/// The beat interval a record announces (`metadata.heartbeatMs`); `None`
/// for records of instances that do not beat.
pub(super) fn beat_interval(record: &ServiceInstance) -> Option<Duration> {
    let ms = record.metadata.get(METADATA_HEARTBEAT_MS)?.as_u64()?;
    (ms > 0).then(|| Duration::from_millis(ms).max(Duration::from_millis(250)))
}

/// The NATS connection name a record says its instance serves over.
fn connection_of(record: &ServiceInstance) -> Option<&str> {
    record
        .metadata
        .get(METADATA_CONNECTION)
        .and_then(|v| v.as_str())
}

/// How long an instance whose record expired (or vanished) while its
/// beats went on stays shown without a record write. Its instance writes
/// again within a heartbeat (its retries back off to that) once the
/// registry's stream takes writes, plus one write's timeout; a process
/// that beats but no longer writes its record goes after this.
pub(super) const LAPSED_HOLD: Duration = Duration::from_secs(10);

/// How long a held instance (see [`Held`]) whose connection closed is
/// shown `disconnected` before it is removed: long enough for a viewer to
/// see why it leaves, as a process that died is shown down until its
/// record expires.
pub(super) const CLOSED_HOLD: Duration = Duration::from_secs(5);

/// An instance kept after its record expired, because the NATS server
/// still holds its connection ([`State::held`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    /// How the registry said its record left (told when it is removed).
    pub(super) reason: RemovalReason,
    /// When this monitor first found its connection closed, if it did.
    pub(super) closed: Option<Instant>,
}

/// One instance's view as re-derived, before it lands in the shared view.
struct Rederived {
    key: Key,
    reported_status: InstanceStatus,
    /// Since when the record says it has been unhealthy, if it says so.
    reported_since: Option<DateTime<Utc>>,
    /// The record as shown: the derived status and epoch.
    instance: ServiceInstance,
    reason: Option<StatusReason>,
    /// What its health check said, with the reason (see [`Derived::detail`]).
    detail: Option<String>,
    /// When its connection closed, if it did.
    closed_at: Option<DateTime<Utc>>,
}

impl Rederived {
    /// Puts it in `view`; the new view and whether a viewer sees the change,
    /// or `None` when nothing changed.
    fn land(self, view: &mut View) -> Option<(InstanceView, bool)> {
        let old = view.instances.get(&self.key);
        let since = match old {
            Some(old)
                if old.instance.status == self.instance.status
                    && old.status_reason == self.reason =>
            {
                old.status_since
            }
            _ => match self.reason {
                Some(StatusReason::Disconnected) => self.closed_at.unwrap_or_else(Utc::now),
                // The instance says since when it has been unhealthy (and so,
                // as a leader, degraded): truer than when this monitor noticed.
                Some(
                    StatusReason::HealthCheck | StatusReason::Operator | StatusReason::Degraded,
                ) => self.reported_since.unwrap_or_else(Utc::now),
                _ => Utc::now(),
            },
        };
        let next = InstanceView {
            reported_status: self.reported_status,
            instance: self.instance,
            status_reason: self.reason,
            status_detail: self.detail,
            status_since: since,
        };
        if old == Some(&next) {
            return None;
        }
        let visible = old.is_none_or(|old| old.differs_visibly(&next));
        view.bump(&self.key.0, visible);
        view.instances.insert(self.key, next.clone());
        Some((next, visible))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aegis_sdk::{AegisConfig, registry::Registration};
    use async_nats::jetstream::kv;
    use futures::FutureExt;

    use super::*;

    const SERVICE: &str = "order-service";
    const GROUP: &str = "default";

    /// A fleet task's state over `nats`, reading election keys from
    /// `bucket`, with the receiver of its key reads' answers.
    async fn rig(
        nats: &aegis_testkit::NatsServer,
        bucket: kv::Store,
    ) -> (State, RegistryReader, mpsc::UnboundedReceiver<LeaderEvent>) {
        let mut config = AegisConfig::with_servers(nats.url());
        config.nats.request_timeout = Duration::from_secs(3);
        let conn = Connection::connect(config).await.expect("connect");
        let registry = RegistryReader::start(&conn).await.expect("registry");
        let (answers, answered) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            view: RwLock::default(),
            leases: std::sync::Mutex::default(),
            signs: std::sync::Mutex::default(),
            closed: std::sync::Mutex::default(),
            changes: broadcast::channel(CHANGES_CAPACITY).0,
            advisories: false,
            system_conn: None,
            pings: None,
        });
        let client = conn.client().clone();
        let state = State {
            shared,
            records: HashMap::new(),
            leaders: HashMap::new(),
            keys: KeyChecks::new(bucket, answers),
            conns: ConnectionStates::default(),
            beats: HashMap::new(),
            unresponsive: HashSet::new(),
            lapsed: HashMap::new(),
            held: HashMap::new(),
            listening_since: Instant::now(),
            connects: 0,
            client,
        };
        (state, registry, answered)
    }

    async fn bucket(nats: &aegis_testkit::NatsServer, name: &str) -> kv::Store {
        let client = async_nats::connect(nats.url()).await.expect("connect");
        async_nats::jetstream::new(client)
            .create_key_value(kv::Config {
                bucket: name.to_owned(),
                ..Default::default()
            })
            .await
            .expect("bucket")
    }

    fn leader_record(id: &str, epoch: u64) -> ServiceInstance {
        let mut r = ServiceInstance::new(SERVICE, id, "1.0.0", Utc::now());
        r.sticky_active_group = Some(GROUP.to_owned());
        r.epoch = Some(epoch);
        r
    }

    fn shown(state: &State, id: &str) -> Option<InstanceView> {
        let view = state.shared.view.read().unwrap();
        view.instances
            .get(&(SERVICE.to_owned(), id.to_owned()))
            .cloned()
    }

    /// Each crash of an instance keeps its own close: a leader killed,
    /// restarted under its id and killed again still has the first close
    /// for the first term's hand-over (the trial saw the first hand-over
    /// re-measured from a metrics snapshot, and its term end 0.6 s before
    /// the kill). A reconnect drops only its own connection's close; the
    /// oldest go past [`CLOSES_PER_INSTANCE`].
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_crash_of_an_instance_keeps_its_close() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let elections = bucket(&nats, "elections").await;
        let (state, _registry, _answered) = rig(&nats, elections).await;
        let key = (SERVICE.to_owned(), "o1".to_owned());
        let t = |s: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + s, 0).unwrap();
        state.closed(&key, "o1-first", Some(t(10)));
        state.closed(&key, "o1-second", Some(t(70)));
        // Told again (every re-derivation tells it): nothing changes.
        state.closed(&key, "o1-first", Some(t(10)));
        assert_eq!(state.shared.closes(&key), [t(10), t(70)]);
        // The second process reconnected (its close was a network blip).
        state.closed(&key, "o1-second", None);
        assert_eq!(state.shared.closes(&key), [t(10)]);
        state.closed(&key, "o1-first", None);
        assert!(state.shared.closes(&key).is_empty());
        for i in 0..CLOSES_PER_INSTANCE as i64 + 2 {
            state.closed(&key, &format!("o1-{i}"), Some(t(i)));
        }
        let kept = state.shared.closes(&key);
        assert_eq!(kept.len(), CLOSES_PER_INSTANCE);
        assert_eq!(kept[0], t(2), "the oldest went first");
        // A close told late, older than every one kept, is the one to go.
        state.closed(&key, "o1-late", Some(t(-5)));
        assert_eq!(state.shared.closes(&key), kept);
    }

    /// The review's node-loss case: the new leader's record (ACTIVE at
    /// epoch 20) arrives while the key as seen still names the old one
    /// (revision 10), and the read of the key from its stream's leader
    /// fails at once (here: the stream is gone; in the field, the
    /// monitor reconnecting or the stream catching up). A failed read is
    /// no answer: the new leader is not shown deposed on its strength,
    /// and the key is read again while the record is held.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_key_read_deposes_nobody() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let broken = bucket(&nats, "broken_elections").await;
        let client = async_nats::connect(nats.url()).await.expect("connect");
        async_nats::jetstream::new(client)
            .delete_stream("KV_broken_elections")
            .await
            .expect("delete the bucket's stream");
        let (mut state, _registry, mut answered) = rig(&nats, broken).await;
        state.apply_leader(LeaderChange {
            service: SERVICE.to_owned(),
            group: GROUP.to_owned(),
            revision: 10,
            holder: Some(("order-1".to_owned(), 10)),
            lease: Duration::from_secs(2),
            renewed_at: None,
        });
        state.upsert(leader_record("order-1", 10));
        state.upsert(leader_record("order-2", 20));
        assert_eq!(
            shown(&state, "order-2").map(|v| v.instance.status),
            Some(InstanceStatus::Standby),
            "held back while the key is read"
        );
        let answer = tokio::time::timeout(Duration::from_secs(5), answered.recv())
            .await
            .expect("the read answers within 5 s")
            .expect("an answer");
        state.apply_leader_event(answer);
        let b = shown(&state, "order-2").expect("order-2 shown");
        assert_ne!(
            b.status_reason,
            Some(StatusReason::Deposed),
            "a failed read deposed the new leader: {b:?}"
        );
        assert!(
            state
                .keys
                .asking
                .contains(&(SERVICE.to_owned(), GROUP.to_owned())),
            "the key is read again while the record is held"
        );
    }

    /// Everything the fleet published so far.
    fn published(rx: &mut broadcast::Receiver<FleetChange>) -> Vec<FleetChange> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    /// The review's reconcile race: an instance deregisters after a
    /// record write; the registry reader's view no longer has it, while
    /// its last write and its removal still wait in the change stream
    /// when the periodic reconcile runs. The reconcile must not remove it
    /// as "vanished" and let the queued write bring it back: it is
    /// removed once, as deregistered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reconcile_behind_queued_changes_neither_revives_nor_misnames() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let elections = bucket(&nats, "elections").await;
        let (mut state, registry, _answered) = rig(&nats, elections).await;
        let mut config = AegisConfig::with_servers(nats.url());
        config.nats.request_timeout = Duration::from_secs(3);
        let conn = Connection::connect(config).await.expect("connect");
        let record = ServiceInstance::new(SERVICE, "order-9", "1.0.0", Utc::now());
        let registration = Registration::builder(&conn, record)
            .start()
            .await
            .expect("register");
        let key = (SERVICE.to_owned(), "order-9".to_owned());
        let deadline = Instant::now() + Duration::from_secs(5);
        while registry.get(SERVICE, "order-9").is_none() {
            assert!(Instant::now() < deadline, "the reader never saw the record");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // As first seen without a beat interval (written by a process
        // that announces no beats): nothing but the registry keeps it.
        let mut first = registry.get(SERVICE, "order-9").unwrap();
        first.metadata.remove(METADATA_HEARTBEAT_MS);
        state.upsert(first);
        let mut seen = state.shared.changes.subscribe();

        // From here the fleet task is "busy": the changes queue up.
        let changes = registry.changes();
        futures::pin_mut!(changes);
        registration
            .update(|r| {
                r.metadata.insert("zone".into(), "b".into());
            })
            .await
            .expect("update");
        registration.deregister().await.expect("deregister");
        let deadline = Instant::now() + Duration::from_secs(5);
        while registry.get(SERVICE, "order-9").is_some() {
            assert!(
                Instant::now() < deadline,
                "the reader never saw the removal"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        state.reconcile(&registry, changes.as_mut());
        // What the task's loop does next: the rest of the queue.
        while let Some(Some(change)) = changes.next().now_or_never() {
            state.apply_registry(change);
        }
        let told = published(&mut seen);
        let removed_at = told
            .iter()
            .position(|c| matches!(c, FleetChange::Removed { .. }));
        assert!(
            removed_at.is_some_and(|at| told[at..]
                .iter()
                .all(|c| !matches!(c, FleetChange::Upserted(_)))),
            "shown again after its removal: {told:?}"
        );
        assert!(
            !state.records.contains_key(&key) && shown(&state, "order-9").is_none(),
            "the instance came back: {told:?}"
        );
        assert!(
            matches!(
                &told[..],
                [.., FleetChange::Removed { instance_id, reason: RemovalReason::Deregistered, .. }]
                    if instance_id == "order-9"
            ) && told.iter().all(|c| !matches!(
                c,
                FleetChange::Removed {
                    reason: RemovalReason::Vanished,
                    ..
                }
            )),
            "removed once, as deregistered: {told:?}"
        );
    }

    /// What the monitor keeps per sticky group goes with the group: the
    /// lease seen of a key that was removed, and the time of the last
    /// read of a key whose group has no instance left. A fleet that
    /// renames its groups, or a long run of short-lived services, does
    /// not grow them for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn per_group_entries_go_with_their_group() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let elections = bucket(&nats, "elections").await;
        let (mut state, registry, _answered) = rig(&nats, elections).await;
        let group = (SERVICE.to_owned(), GROUP.to_owned());
        let key = |revision, holder: Option<(String, u64)>| LeaderChange {
            service: SERVICE.to_owned(),
            group: GROUP.to_owned(),
            revision,
            holder,
            lease: Duration::from_secs(2),
            renewed_at: None,
        };
        state.apply_leader(key(10, Some(("order-1".to_owned(), 10))));
        let leases = |state: &State| state.shared.leases.lock().unwrap().len();
        assert_eq!(leases(&state), 1);
        // The key removed (the group's last leader resigned and left).
        state.apply_leader(key(11, None));
        assert_eq!(leases(&state), 0, "the lease of a removed key is kept");

        // A read answered for a group whose instances then all left.
        state.upsert(leader_record("order-1", 10));
        state.keys.checked.insert(group.clone(), Instant::now());
        state.remove(
            SERVICE.to_owned(),
            "order-1".to_owned(),
            RemovalReason::Deregistered,
        );
        let changes = registry.changes();
        futures::pin_mut!(changes);
        state.reconcile(&registry, changes.as_mut());
        assert!(
            !state.keys.checked.contains_key(&group),
            "the read of a group with no instance is kept"
        );
    }

    /// The key last seen of a group goes with the group: once its key is
    /// removed (the last leader resigned; a lapsed lease removes nothing) and no
    /// instance of the group is left, the fleet keeps nothing of it; a
    /// removed key whose group still has instances is kept (its revision
    /// orders what is read of the key after), and so is a held key. A long
    /// run of short-lived services, or groups renamed, does not grow the
    /// map for ever.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_key_seen_of_a_group_goes_with_the_group() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let elections = bucket(&nats, "elections").await;
        let (mut state, registry, _answered) = rig(&nats, elections).await;
        let group = (SERVICE.to_owned(), GROUP.to_owned());
        let key = |revision, holder: Option<(String, u64)>| LeaderChange {
            service: SERVICE.to_owned(),
            group: GROUP.to_owned(),
            revision,
            holder,
            lease: Duration::from_secs(2),
            renewed_at: None,
        };
        let changes = registry.changes();
        futures::pin_mut!(changes);

        // A held key stays, instance or not.
        state.apply_leader(key(10, Some(("order-1".to_owned(), 10))));
        state.reconcile(&registry, changes.as_mut());
        assert!(state.leaders.contains_key(&group));

        // Removed while an instance of the group is still listed (here
        // held as lapsed: the registry reader has no record of it, but it
        // beats on): kept.
        let mut beating = leader_record("order-1", 10);
        beating
            .metadata
            .insert(METADATA_HEARTBEAT_MS.to_owned(), serde_json::json!(60_000));
        state.upsert(beating);
        state.apply_leader(key(11, None));
        state.reconcile(&registry, changes.as_mut());
        assert!(
            state
                .records
                .contains_key(&(SERVICE.to_owned(), "order-1".to_owned()))
        );
        assert_eq!(state.leaders.get(&group), Some(&(11, None)));

        // The group's last instance gone too: forgotten.
        state.remove(
            SERVICE.to_owned(),
            "order-1".to_owned(),
            RemovalReason::Deregistered,
        );
        state.reconcile(&registry, changes.as_mut());
        assert!(
            !state.leaders.contains_key(&group),
            "the removed key of a group with no instance is kept: {:?}",
            state.leaders
        );

        // A new election of the group is taken as before.
        state.apply_leader(key(12, Some(("order-2".to_owned(), 12))));
        assert_eq!(
            state.leaders.get(&group),
            Some(&(
                12,
                Some(Holder {
                    instance_id: "order-2".to_owned(),
                    epoch: 12
                })
            ))
        );
    }

    /// A connection taken for closed by a listing that could not see it
    /// (the scale trial's NATS restart) is open again on its instance's
    /// next sign of life: a beat read [`REVIVE_AFTER`] after the close, or
    /// a record write stamped after it. One read at once, or a record
    /// written before the close, changes nothing: a dead instance's last
    /// beat and write, read late, do not bring it back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sign_of_life_reopens_a_connection_taken_for_closed() {
        use crate::fleet::liveness::{ConnectionEvent, Listing, REVIVE_AFTER};
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let elections = bucket(&nats, "elections").await;
        let (mut state, _registry, _answered) = rig(&nats, elections).await;
        let mut record = ServiceInstance::new(SERVICE, "r1", "1.0.0", Utc::now());
        record
            .metadata
            .insert(METADATA_CONNECTION.to_owned(), serde_json::json!("conn-r1"));
        record
            .metadata
            .insert(METADATA_HEARTBEAT_MS.to_owned(), serde_json::json!(60_000));
        let key = (SERVICE.to_owned(), "r1".to_owned());
        let connection = |server: &str, cid, closed| {
            ConnectionNews::Advisory(ConnectionEvent {
                name: "conn-r1".to_owned(),
                connection: (server.to_owned(), cid),
                started: Some(Utc::now() - chrono::TimeDelta::seconds(10)),
                closed,
                at: Utc::now(),
            })
        };
        state.apply_connection(&connection("S1", 5, false));
        state.upsert(record.clone());
        let reason = |state: &State| {
            let v = shown(state, "r1").expect("r1 shown");
            (v.instance.status, v.status_reason)
        };
        assert_eq!(reason(&state), (InstanceStatus::Active, None));

        // S1's listing lacks it (wrongly, as the race had it).
        state.apply_connection(&ConnectionNews::Listed(Listing {
            server: "S1".to_owned(),
            server_name: String::new(),
            at: Utc::now(),
            open: Vec::new(),
            unnamed: Vec::new(),
            asked: Instant::now(),
            complete: true,
        }));
        let down = (InstanceStatus::Unhealthy, Some(StatusReason::Disconnected));
        assert_eq!(reason(&state), down);
        state.beat(key.clone());
        assert_eq!(reason(&state), down, "a beat read at once");
        tokio::time::sleep(REVIVE_AFTER + Duration::from_millis(50)).await;
        state.beat(key.clone());
        assert_eq!(reason(&state), (InstanceStatus::Active, None), "beats on");

        // Its newer connection closes (the server's word); its last
        // record, written before that, is read late: still down.
        let mut before = record.clone();
        before.last_heartbeat = Utc::now() - chrono::TimeDelta::seconds(5);
        state.apply_connection(&ConnectionNews::Advisory(ConnectionEvent {
            started: Some(Utc::now()),
            ..match connection("S2", 9, true) {
                ConnectionNews::Advisory(e) => e,
                _ => unreachable!(),
            }
        }));
        assert_eq!(reason(&state), down);
        tokio::time::sleep(REVIVE_AFTER + Duration::from_millis(50)).await;
        state.upsert(before);
        assert_eq!(reason(&state), down, "a record written before the close");
        // It reconnected under the same name, its connect advisory missed:
        // its next record write tells.
        let mut after = record;
        after.last_heartbeat = Utc::now();
        state.upsert(after);
        assert_eq!(
            reason(&state),
            (InstanceStatus::Active, None),
            "written after"
        );
    }
}
