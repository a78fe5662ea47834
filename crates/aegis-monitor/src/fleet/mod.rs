//! The fleet as the views show it: every registered instance with the
//! status the sources of truth give it, not only the one its record claims.
//! The API, the live stream and `aegis status` all read this.
//!
//! - `derive.rs`: the rule ([`derive()`]) — the election key's holder is the
//!   one ACTIVE instance of its sticky group, a closed connection is down.
//! - `elections.rs`: one watch on `service_elections`, who holds each key.
//! - `liveness.rs`: the NATS server's connect/disconnect advisories, read
//!   from the system account when the monitor has its credentials.
//!
//! One task owns the inputs (records from the registry reader, holders,
//! connection states) and keeps a materialized view: every input change
//! re-derives the instances it concerns and publishes those whose view
//! changed as [`FleetChange`]s. Lookups read the view from memory.
//!
//! What is detected how fast:
//!
//! | failure | seen by | after |
//! | --- | --- | --- |
//! | crash, OOM kill, panic (connection closes) | disconnect advisory | milliseconds (with system account access) |
//! | same, without system account access | registry TTL | the TTL (3 s by default) |
//! | a leader replaced (crash, pause, hand-over) | election key change | milliseconds after the new leader's write |
//! | a hung or partitioned process | registry TTL | the TTL |
//! | a graceful stop | deregistration | milliseconds |

mod derive;
mod elections;
mod liveness;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, RwLock},
    time::Duration,
};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use aegis_sdk::{
    Connection,
    registry::{METADATA_CONNECTION, RegistryChange, RegistryReader, RemovalReason},
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::ToSchema;

pub use derive::{Derived, Holder, StatusReason, derive};
pub use liveness::SystemAccessError;

use crate::config::SystemAccount;
use elections::LeaderChange;
use liveness::{ConnectionEvent, ConnectionStates};

/// Changes buffered per subscriber before a slow one lags.
const CHANGES_CAPACITY: usize = 4096;
/// How often the view is reconciled with the registry reader in full (a
/// safety net for a lagging change stream) and old connection states are
/// forgotten.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);

/// One instance as the views show it: its registry record with `status` and
/// `epoch` replaced by the derived ones, plus what the record itself said
/// and why the status is what it is.
///
/// Its OpenAPI schema is the API's `ServiceInstance` (see `openapi.rs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// The record (camelCase, as in the registry), with the derived `status`
    /// and `epoch`.
    #[serde(flatten)]
    pub instance: ServiceInstance,
    /// The status the record itself reports.
    pub reported_status: InstanceStatus,
    /// Why `status` is what it is, when that needs saying: `disconnected`
    /// (its NATS connection closed: the process is gone), `deposed` (claims
    /// ACTIVE but another instance holds its group's election key),
    /// `health_check`, `registry_writes`, `operator`, `degraded` (leads
    /// although unhealthy).
    pub status_reason: Option<StatusReason>,
    /// Since when this monitor has shown this status and reason.
    pub status_since: DateTime<Utc>,
}

/// A change of the fleet view.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetChange {
    /// An instance appeared or its view changed (a heartbeat, a status).
    Upserted(Box<InstanceView>),
    /// An instance left the registry.
    Removed {
        /// Its service.
        service: String,
        /// Its id.
        instance_id: String,
        /// Why it left.
        reason: RemovalReason,
    },
}

/// Instance counts by derived status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Summary {
    /// All registered instances.
    pub total: usize,
    /// ACTIVE ones.
    pub active: usize,
    /// UNHEALTHY ones (including those seen disconnected or deposed).
    pub unhealthy: usize,
    /// STANDBY ones.
    pub standby: usize,
}

/// Why the fleet view could not start.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The registry reader could not start.
    #[error("cannot start the registry reader")]
    Registry(#[source] aegis_sdk::registry::RegistryError),
    /// The election bucket could not be opened.
    #[error("cannot follow the election keys")]
    Elections(#[source] aegis_sdk::election::ElectionError),
    /// System account credentials were given but do not work.
    #[error(transparent)]
    System(#[from] SystemAccessError),
}

type Key = (String, String);

/// The live fleet view; cheap to clone. Its task stops when cancelled.
#[derive(Debug, Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: RegistryReader,
    view: RwLock<BTreeMap<Key, InstanceView>>,
    changes: broadcast::Sender<FleetChange>,
    advisories: bool,
    system_conn: Option<Connection>,
}

impl Fleet {
    /// Starts following the registry (through `conn`'s registry reader), the
    /// election keys and, with `system`, the server's connection advisories;
    /// returns once the current state is loaded.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_monitor::fleet::FleetError> {
    /// use aegis_monitor::fleet::Fleet;
    /// let tasks = tokio_util::task::TaskTracker::new();
    /// let fleet = Fleet::start(&conn, None, Default::default(), &tasks).await?;
    /// for i in fleet.all() {
    ///     println!("{} {} {:?}", i.instance.instance_id, i.instance.status, i.status_reason);
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`FleetError`]: the registry or election bucket cannot be used, or
    /// system account credentials were given and are refused.
    pub async fn start(
        conn: &Connection,
        system: Option<&SystemAccount>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Fleet, FleetError> {
        let registry = RegistryReader::start(conn)
            .await
            .map_err(FleetError::Registry)?;
        // Subscribe before reading, so nothing falls in between.
        let registry_changes = registry.changes();
        let (leaders_tx, mut leaders_rx) = mpsc::unbounded_channel();
        elections::follow(
            conn.jetstream(),
            conn.config().nats.replicas,
            leaders_tx,
            cancel.clone(),
            tasks,
        )
        .await
        .map_err(FleetError::Elections)?;
        let (conns_tx, conns_rx) = mpsc::unbounded_channel();
        let system_conn = match system {
            Some(account) => Some(
                liveness::follow(
                    liveness::SystemAccess {
                        config: account.connection_config(conn.config()),
                    },
                    conns_tx,
                    cancel.clone(),
                    tasks,
                )
                .await?,
            ),
            None => {
                drop(conns_tx);
                None
            }
        };
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            view: RwLock::default(),
            changes,
            advisories: system_conn.is_some(),
            system_conn,
        });
        let mut state = State {
            shared: shared.clone(),
            records: HashMap::new(),
            leaders: HashMap::new(),
            conns: ConnectionStates::default(),
        };
        while let Ok(change) = leaders_rx.try_recv() {
            state.apply_leader(change);
        }
        for record in registry.all() {
            state.upsert(record);
        }
        tasks.spawn(state.run(registry, registry_changes, leaders_rx, conns_rx, cancel));
        Ok(Fleet { shared })
    }

    /// Every instance, sorted by (service, instance).
    pub fn all(&self) -> Vec<InstanceView> {
        self.read().values().cloned().collect()
    }

    /// One service's instances, sorted by instance id.
    pub fn by_service(&self, service: &str) -> Vec<InstanceView> {
        self.read()
            .range((service.to_owned(), String::new())..)
            .take_while(|((s, _), _)| s == service)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One instance, if registered.
    pub fn get(&self, service: &str, instance_id: &str) -> Option<InstanceView> {
        self.read()
            .get(&(service.to_owned(), instance_id.to_owned()))
            .cloned()
    }

    /// Every instance whose derived status is `status`.
    pub fn by_status(&self, status: InstanceStatus) -> Vec<InstanceView> {
        self.read()
            .values()
            .filter(|v| v.instance.status == status)
            .cloned()
            .collect()
    }

    /// Counts by derived status.
    pub fn summary(&self) -> Summary {
        let mut s = Summary::default();
        for v in self.read().values() {
            match v.instance.status {
                InstanceStatus::Active => s.active += 1,
                InstanceStatus::Unhealthy => s.unhealthy += 1,
                InstanceStatus::Standby => s.standby += 1,
            }
        }
        s.total = s.active + s.unhealthy + s.standby;
        s
    }

    /// The changes from now on (a subscriber more than a few thousand behind
    /// gets `Lagged` and should re-read [`all`](Self::all)).
    pub fn subscribe(&self) -> broadcast::Receiver<FleetChange> {
        self.shared.changes.subscribe()
    }

    /// Whether the registry watch is loaded and alive (while false, the view
    /// serves the last known state).
    pub fn is_synced(&self) -> bool {
        self.shared.registry.is_synced()
    }

    /// Whether crashes are seen from the server's connection advisories
    /// (system account access) rather than at the registry TTL.
    pub fn sees_disconnects(&self) -> bool {
        self.shared.advisories
    }

    /// Drains the system account connection, if any (the last step of a
    /// stop).
    pub async fn drain(&self) {
        if let Some(conn) = &self.shared.system_conn {
            let _ = conn.drain().await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<Key, InstanceView>> {
        self.shared.view.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The inputs, owned by the fleet task.
struct State {
    shared: Arc<Shared>,
    records: HashMap<Key, ServiceInstance>,
    /// Per (service, group): the key's revision and holder.
    leaders: HashMap<Key, (u64, Option<Holder>)>,
    conns: ConnectionStates,
}

impl State {
    async fn run(
        mut self,
        registry: RegistryReader,
        registry_changes: impl futures::Stream<Item = RegistryChange> + Send,
        mut leaders: mpsc::UnboundedReceiver<LeaderChange>,
        mut conns: mpsc::UnboundedReceiver<ConnectionEvent>,
        cancel: CancellationToken,
    ) {
        futures::pin_mut!(registry_changes);
        let mut reconcile = tokio::time::interval(RECONCILE_EVERY);
        reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        reconcile.tick().await;
        let mut conns_open = true;
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                change = registry_changes.next() => match change {
                    Some(RegistryChange::Upserted(record)) => self.upsert(record),
                    Some(RegistryChange::Removed { service, instance_id, reason }) => {
                        self.remove(service, instance_id, reason);
                    }
                    None => return,
                },
                Some(change) = leaders.recv() => self.apply_leader(change),
                event = conns.recv(), if conns_open => match event {
                    Some(event) => self.apply_connection(&event),
                    None => conns_open = false,
                },
                _ = reconcile.tick() => {
                    self.conns.forget_old();
                    self.reconcile(&registry);
                }
            }
        }
    }

    fn upsert(&mut self, record: ServiceInstance) {
        let key = (record.service_name.clone(), record.instance_id.clone());
        self.records.insert(key.clone(), record);
        self.refresh(&key);
    }

    fn remove(&mut self, service: String, instance_id: String, reason: RemovalReason) {
        let key = (service, instance_id);
        self.records.remove(&key);
        let removed = self
            .shared
            .view
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .is_some();
        if removed {
            let (service, instance_id) = key;
            let _ = self.shared.changes.send(FleetChange::Removed {
                service,
                instance_id,
                reason,
            });
        }
    }

    fn apply_leader(&mut self, change: LeaderChange) {
        let group_key = (change.service.clone(), change.group.clone());
        let holder = change
            .holder
            .map(|(instance_id, epoch)| Holder { instance_id, epoch });
        match self.leaders.get(&group_key) {
            Some((revision, _)) if *revision >= change.revision => return,
            Some((_, old)) if *old == holder => {
                // A renewal: same holder, newer revision; nothing to show.
                self.leaders.insert(group_key, (change.revision, holder));
                return;
            }
            _ => {}
        }
        self.leaders.insert(group_key, (change.revision, holder));
        let affected: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| {
                r.service_name == change.service
                    && r.sticky_active_group.as_deref() == Some(&change.group)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in affected {
            self.refresh(&key);
        }
    }

    fn apply_connection(&mut self, event: &ConnectionEvent) {
        if !self.conns.apply(event) {
            return;
        }
        let affected: Vec<Key> = self
            .records
            .iter()
            .filter(|(_, r)| connection_of(r) == Some(event.name.as_str()))
            .map(|(k, _)| k.clone())
            .collect();
        for key in affected {
            self.refresh(&key);
        }
    }

    /// Brings the records in line with the registry reader (after a lagged
    /// change stream, changes may have been missed).
    fn reconcile(&mut self, registry: &RegistryReader) {
        let current: HashMap<Key, ServiceInstance> = registry
            .all()
            .into_iter()
            .map(|r| ((r.service_name.clone(), r.instance_id.clone()), r))
            .collect();
        let gone: Vec<Key> = self
            .records
            .keys()
            .filter(|k| !current.contains_key(*k))
            .cloned()
            .collect();
        for (service, id) in gone {
            self.remove(service, id, RemovalReason::Vanished);
        }
        for (key, record) in current {
            if self.records.get(&key) != Some(&record) {
                self.upsert(record);
            }
        }
    }

    /// Re-derives one instance's view; publishes it when it changed.
    fn refresh(&mut self, key: &Key) {
        let Some(record) = self.records.get(key) else {
            return;
        };
        let holder = record.sticky_active_group.as_ref().and_then(|g| {
            self.leaders
                .get(&(record.service_name.clone(), g.clone()))
                .and_then(|(_, h)| h.as_ref())
        });
        let closed_at = connection_of(record).and_then(|name| self.conns.closed_at(name));
        let derived = derive(record, holder, closed_at.is_some());
        let mut instance = record.clone();
        instance.status = derived.status;
        instance.epoch = derived.epoch;
        let mut view = self.shared.view.write().unwrap_or_else(|e| e.into_inner());
        let since = match view.get(key) {
            Some(old)
                if old.instance.status == derived.status && old.status_reason == derived.reason =>
            {
                old.status_since
            }
            _ => match derived.reason {
                Some(StatusReason::Disconnected) => closed_at.unwrap_or_else(Utc::now),
                _ => Utc::now(),
            },
        };
        let next = InstanceView {
            reported_status: record.status,
            instance,
            status_reason: derived.reason,
            status_since: since,
        };
        if view.get(key) == Some(&next) {
            return;
        }
        view.insert(key.clone(), next.clone());
        drop(view);
        let _ = self
            .shared
            .changes
            .send(FleetChange::Upserted(Box::new(next)));
    }
}

/// The NATS connection name a record says its instance serves over.
fn connection_of(record: &ServiceInstance) -> Option<&str> {
    record
        .metadata
        .get(METADATA_CONNECTION)
        .and_then(|v| v.as_str())
}
