//! Who leads each sticky group, as the election keys say: one KV watch of
//! the `service_elections` bucket per [`Connection`](crate::Connection)
//! (on `crate::kv_watch`), started by the first
//! [`call_active`](crate::rpc::RpcClient::call_active) and answering from
//! memory afterwards.
//!
//! This is what `call_active` trusts, rather than registry records: a
//! record says what its writer claims, while the election key holds only
//! what a winning compare-and-set wrote. For each group the view keeps the
//! holder (instance and fencing epoch) and the highest epoch it has seen,
//! which is how a late reply from a deposed leader is told apart. The epoch
//! of a holder is the revision of its winning write: the record's `epoch`
//! once renewals have written it, the key's revision in the first write.
//!
//! While the watch is broken (its connection's node died, and JetStream
//! creates no consumers until its meta group has a leader again, 4-9 s),
//! the view reads the bucket's replicas every half second and takes a
//! holder whose epoch is above every one it has seen: a caller routes to a
//! leader elected in that window within a second, not once the watch
//! opens (`tests/sticky_takeover_node_loss.rs`: 0.3-0.4 s instead of 6.3 s).
//!
//! The highest epoch lives as long as the bucket: when the watch reports a
//! bucket created again (its revisions start over), the view forgets it and
//! rebuilds from the new bucket alone, so its leaders are served.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_contracts::subjects;
use async_nats::Client;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{ElectionError, LeaderRecord, ensure_election_bucket};
use crate::kv_watch::{self, KvEntry, Scope, Sink};

/// The holder of one election key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Holder {
    /// The leader's instance id.
    pub(crate) instance_id: String,
    /// Its fencing epoch.
    pub(crate) epoch: u64,
}

#[derive(Debug, Default)]
struct Groups {
    /// Holder per election key.
    holders: HashMap<String, Holder>,
    /// Highest epoch seen per election key in this bucket.
    highest: HashMap<String, u64>,
}

impl Groups {
    fn hold(&mut self, key: String, holder: Holder) {
        let highest = self.highest.entry(key.clone()).or_insert(0);
        *highest = (*highest).max(holder.epoch);
        self.holders.insert(key, holder);
    }
}

/// The view itself, fed by the watch.
#[derive(Debug)]
pub(crate) struct Leaders {
    groups: Mutex<Groups>,
    /// Bumped on every change, so callers between leaders wake at once.
    version: watch::Sender<u64>,
    loaded: watch::Sender<bool>,
}

impl Leaders {
    fn new() -> Self {
        Self {
            groups: Mutex::default(),
            version: watch::channel(0).0,
            loaded: watch::channel(false).0,
        }
    }

    fn groups(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// The holder of `service`/`group`'s key, if anyone holds it.
    pub(crate) fn leader(&self, service: &str, group: &str) -> Option<Holder> {
        self.groups()
            .holders
            .get(&subjects::election_key(service, group))
            .cloned()
    }

    /// The highest epoch seen for `service`/`group` in this bucket.
    pub(crate) fn highest_epoch(&self, service: &str, group: &str) -> Option<u64> {
        self.groups()
            .highest
            .get(&subjects::election_key(service, group))
            .copied()
    }

    /// Changes from now on (the value is a counter).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

/// The holder an election key's value names, or `None` for a value that
/// is not a leader record.
fn holder(entry: &KvEntry) -> Option<Holder> {
    subjects::parse_election_key(&entry.key)?;
    let record: LeaderRecord = serde_json::from_slice(&entry.value).ok()?;
    Some(Holder {
        epoch: record.epoch_at(entry.revision),
        instance_id: record.instance_id,
    })
}

impl Sink for Leaders {
    fn on_session(&self, _consumer: String) {}

    fn on_load(&self, entries: Vec<KvEntry>, fresh: bool, _through: u64) {
        {
            let mut groups = self.groups();
            groups.holders.clear();
            if fresh {
                groups.highest.clear();
            }
            for entry in entries {
                if let Some(h) = holder(&entry) {
                    groups.hold(entry.key, h);
                }
            }
        }
        self.bump();
    }

    fn on_put(&self, entry: KvEntry) {
        match holder(&entry) {
            Some(h) => self.groups().hold(entry.key, h),
            None => {
                debug!(key = %entry.key, "ignoring a value that is not a leader record");
                return;
            }
        }
        self.bump();
    }

    fn on_remove(&self, key: &str, _removal: crate::kv_watch::Removal, _revision: u64) {
        if self.groups().holders.remove(key).is_some() {
            self.bump();
        }
    }

    fn on_applied(&self, _consumer_sequence: u64) {}

    fn on_synced(&self) {
        self.loaded.send_replace(true);
    }

    fn on_snapshot(&self) {
        // Served as it is: a leader read from a replica is at worst a
        // moment old, and a deposed one refuses the call (NOT_ACTIVE).
        self.loaded.send_replace(true);
    }

    fn on_broken(&self) {}

    fn refreshes(&self) -> bool {
        true
    }

    /// While the watch is broken: a holder whose epoch (its winning
    /// revision) is above `floor`, every revision the view was handed or an
    /// earlier refresh read up to, won an election the watch has not shown
    /// (every epoch the view holds is at or below the floor). A replica
    /// behind holds only older terms, or the holder of a key that was
    /// removed since (at a revision the floor covers), so it changes
    /// nothing. Removals are not learned this way: a call to a holder that
    /// resigned is refused, and waits for the next.
    fn on_refresh(&self, entries: Vec<KvEntry>, floor: u64) {
        let mut changed = false;
        {
            let mut groups = self.groups();
            for entry in entries {
                if let Some(h) = holder(&entry)
                    && h.epoch > floor
                {
                    debug!(key = %entry.key, instance = %h.instance_id, epoch = h.epoch,
                        "a new leader read from the bucket's replicas while the watch is broken");
                    groups.hold(entry.key, h);
                    changed = true;
                }
            }
        }
        if changed {
            self.bump();
        }
    }
}

/// The view and the task feeding it; the task stops on drop or
/// [`ElectionView::stop`].
#[derive(Debug)]
pub(crate) struct ElectionView {
    leaders: Arc<Leaders>,
    /// The watch's keys, which never change: held so that its scope stays
    /// open while the view lives.
    _keys: watch::Sender<Scope>,
    cancel: CancellationToken,
}

impl Drop for ElectionView {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl ElectionView {
    /// Ensures the bucket, starts the watch and waits up to `timeout` for
    /// the initial load. A bucket whose lookup is not answered within
    /// [`kv_watch::LOOKUP_BEFORE_SNAPSHOT`] (its stream electing a leader)
    /// is looked up again in the background while the keys load from the
    /// bucket's replicas ([`kv_watch::start`]); when none loads in
    /// time, the lookup's last failure is the error, if it failed.
    pub(crate) async fn start(
        js: &async_nats::jetstream::Context,
        client: Client,
        drops: crate::connection::DropWatch,
        replicas: usize,
        timeout: Duration,
    ) -> Result<ElectionView, ElectionError> {
        let leaders = Arc::new(Leaders::new());
        let cancel = CancellationToken::new();
        let (keys, scope) = watch::channel(Scope {
            generation: 0,
            keys: vec![format!("{}.>", subjects::ELECTION_KEY_PREFIX)],
        });
        let lookup = kv_watch::start(
            move |js| async move { ensure_election_bucket(&js, replicas).await },
            kv_watch::Watch {
                bucket: subjects::ELECTIONS_BUCKET,
                description: "aegis election watch",
                reader: kv_watch::Reader {
                    js: js.clone(),
                    client,
                    drops,
                },
                scope,
                sink: leaders.clone(),
                cancel: cancel.clone(),
            },
        )
        .await?;
        let view = ElectionView {
            leaders,
            _keys: keys,
            cancel,
        };
        let mut loaded = view.leaders.loaded.subscribe();
        match tokio::time::timeout(timeout, loaded.wait_for(|l| *l)).await {
            Ok(Ok(_)) => Ok(view),
            _ => match lookup.failure() {
                Some(why) => Err(ElectionError::Bucket(why.into())),
                None => Err(ElectionError::NotSynced(timeout)),
            },
        }
    }

    /// The leaders.
    pub(crate) fn leaders(&self) -> &Leaders {
        &self.leaders
    }

    /// Stops the watch; the view keeps its last state.
    pub(crate) fn stop(&self) {
        self.cancel.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, instance: &str, epoch: u64, revision: u64) -> KvEntry {
        let record = LeaderRecord {
            instance_id: instance.into(),
            epoch,
            lease_ms: 400,
            renewed_at: "2026-01-01T00:00:00.000Z".into(),
        };
        KvEntry {
            key: key.into(),
            value: serde_json::to_vec(&record).unwrap().into(),
            revision,
        }
    }

    const KEY: &str = "sticky-active.order-service.default";

    #[test]
    fn holders_epochs_and_a_new_bucket() {
        let view = Leaders::new();
        let mut changes = view.subscribe();
        // The first write carries epoch 0: its revision is the epoch.
        view.on_load(vec![entry(KEY, "order-1", 0, 40)], false, 40);
        assert_eq!(
            view.leader("order-service", "default"),
            Some(Holder {
                instance_id: "order-1".into(),
                epoch: 40
            })
        );
        assert!(changes.has_changed().unwrap());
        changes.mark_unchanged();
        // Renewals keep the epoch; a takeover raises it; a resignation
        // leaves no holder but the highest epoch stays.
        view.on_put(entry(KEY, "order-1", 40, 41));
        view.on_put(entry(KEY, "order-2", 0, 57));
        view.on_remove(KEY, crate::kv_watch::Removal::Deleted, 9);
        assert_eq!(view.leader("order-service", "default"), None);
        assert_eq!(view.highest_epoch("order-service", "default"), Some(57));
        assert!(changes.has_changed().unwrap());
        // A reconnect to the same bucket keeps it; a new bucket does not.
        view.on_load(vec![entry(KEY, "order-3", 0, 3)], false, 3);
        assert_eq!(view.highest_epoch("order-service", "default"), Some(57));
        view.on_load(vec![entry(KEY, "order-3", 0, 3)], true, 3);
        assert_eq!(view.highest_epoch("order-service", "default"), Some(3));
        // Values that are not leader records, or keys outside the layout,
        // are no leaders.
        view.on_put(KvEntry {
            key: "filler".into(),
            value: "x".into(),
            revision: 9,
        });
        assert_eq!(view.leader("filler", "x"), None);
    }

    /// A refresh reads a replica while the watch is broken: only a holder
    /// with an epoch above every one seen is a new leader; a replica behind
    /// changes nothing.
    #[test]
    fn a_refresh_takes_only_a_newer_term() {
        const RESIGNED: &str = "sticky-active.risk-service.default";
        let view = Leaders::new();
        view.on_load(vec![entry(KEY, "order-1", 40, 45)], false, 45);
        // The load read up to 50 (RESIGNED's holder resigned at 50): the
        // floor the watch judges refreshes by.
        let floor = 50;
        let mut changes = view.subscribe();
        changes.mark_unchanged();
        // The same term renewed, an older term, and the resigned holder
        // read from a replica behind its resignation: nothing new.
        view.on_refresh(vec![entry(KEY, "order-1", 40, 47)], floor);
        view.on_refresh(vec![entry(KEY, "order-0", 12, 30)], floor);
        view.on_refresh(vec![entry(RESIGNED, "risk-1", 44, 49)], floor);
        assert!(!changes.has_changed().unwrap());
        assert_eq!(view.leader("risk-service", "default"), None);
        assert_eq!(view.leader("order-service", "default").unwrap().epoch, 40);
        // A takeover the watch has not shown.
        view.on_refresh(vec![entry(KEY, "order-2", 0, 52)], floor);
        assert!(changes.has_changed().unwrap());
        assert_eq!(
            view.leader("order-service", "default"),
            Some(Holder {
                instance_id: "order-2".into(),
                epoch: 52
            })
        );
    }
}
