//! The fleet as the views show it: every registered instance with the
//! status the sources of truth give it, not only the one its record claims.
//! The API, the live stream and `aegis status` all read this.
//!
//! - `derive.rs`: the rule ([`derive()`]) — the election key's holder is the
//!   one ACTIVE instance of its sticky group, a closed connection is down.
//! - `elections.rs`: one watch on `service_elections`, who holds each key
//!   (and when it was last renewed: a key nobody renews any more ends its
//!   term in the failover timeline, `Fleet::lapsed_at`).
//! - `liveness.rs`: the NATS server's connect/disconnect advisories, read
//!   from the system account when the monitor has its credentials.
//! - `beats.rs`: the instances' liveness beats (core NATS), which tell a
//!   hung process from a live one without waiting for the registry.
//!
//! One task owns the inputs (records from the registry reader, holders,
//! connection states) and keeps a materialized view: every input change
//! re-derives the instances it concerns and publishes those whose view
//! changed as [`FleetChange`]s. Lookups read the view from memory.
//!
//! The view is versioned, for the lists built from it (`list_cache.rs`):
//! one sequence numbers every change, and [`Versions`] tell, for the fleet
//! and for each service, the last change of any kind and the last change a
//! viewer sees — anything but `lastHeartbeat`, which every record write
//! moves. Only the latter are published as [`FleetChange::Upserted`]: a
//! refreshed record that changes nothing else reaches no SSE client. What
//! keeps heartbeat ages true instead is the [`FleetDigest`], published
//! every [`DIGEST_EVERY`]: counts, the version, and the instances whose
//! beats are late.
//!
//! What is detected how fast:
//!
//! | failure | seen by | after |
//! | --- | --- | --- |
//! | crash, OOM kill, panic (connection closes) | disconnect advisory | milliseconds (with system account access) |
//! | same, while the monitor's own NATS node dies | the servers' lists of their connections, asked once reconnected | some 200 ms |
//! | a process that dies with its NATS node | that node missing two rounds of pings (every 0.5 s) | some 1.3 s |
//! | same, without system account access | missing liveness beats | 3 heartbeats (3 s by default) |
//! | a hung or partitioned process | missing liveness beats | 3 heartbeats |
//! | same, once its record expired | its connection still open (with system account access): kept, `unresponsive_expired`, while the server holds it | — |
//! | a live instance wrongly taken for closed (a close inferred from a listing or a server's silence) | its next beat, or a record write stamped after the close, read 2 s (`REVIVE_AFTER`) after the close | 2 s and a heartbeat |
//! | a leader replaced (crash, pause, hand-over) | election key change | milliseconds after the new leader's write |
//! | a graceful stop | deregistration | milliseconds |
//! | any of these, when nothing else told | registry TTL (removal), after the registry view's grace | the TTL and the grace (15 s + 3 s by default) |
//!
//! A registry that cannot be written for a while (its stream electing a
//! leader after a NATS node died) changes nothing: records outlive such a
//! stall (their TTL is longer) and the beats, which need no JetStream, go on.
//! A stall longer than the TTL (a lost JetStream quorum) ends with the
//! stream expiring every unwritten record at once, a heartbeat before the
//! instances write them again: an instance whose beats go on stays shown
//! meanwhile, for at most `LAPSED_HOLD` (`task.rs`).

mod beats;
mod derive;
mod elections;
mod liveness;
mod task;

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use aegis_sdk::{
    Connection,
    registry::{
        METADATA_CONNECTION, METADATA_HEARTBEAT_MS, RegistryChange, RegistryReader, RemovalReason,
    },
};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{broadcast, mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use utoipa::ToSchema;

pub use derive::{Derived, Holder, Liveness, StatusReason, derive, reported_since, status_detail};
pub(crate) use liveness::PingRounds;
pub use liveness::SystemAccessError;

use crate::config::SystemAccount;
use elections::{LeaderChange, LeaderEvent};
use liveness::{ConnectionNews, ConnectionStates};
use task::State;

/// Changes buffered per subscriber before a slow one lags.
const CHANGES_CAPACITY: usize = 4096;
/// How often the view is reconciled with the registry reader in full (a
/// safety net for a lagging change stream) and old connection states are
/// forgotten.
const RECONCILE_EVERY: Duration = Duration::from_secs(10);
/// How often missing beats are looked for.
const BEAT_CHECK: Duration = Duration::from_millis(250);
/// Beat intervals without a beat (or a record write) after which an
/// instance is unresponsive.
const MISSED_BEATS: u32 = 3;
/// How often a [`FleetDigest`] is published.
pub const DIGEST_EVERY: Duration = Duration::from_secs(2);
/// An instance is late in a digest when its last sign of life is older
/// than this many beat intervals (one and a half: a beat is due every
/// interval, the half absorbs scheduling jitter so on-time instances are
/// not listed).
pub const LATE_AFTER_INTERVALS: f64 = 1.5;

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
    /// `unresponsive` (its beats stopped), `unresponsive_expired` (its
    /// beats stopped and its record expired, but NATS still holds its
    /// connection: hung or partitioned), `health_check`, `operator`,
    /// `degraded` (leads although unhealthy).
    pub status_reason: Option<StatusReason>,
    /// What the instance's own health check said of its failure, for
    /// `health_check` and for `degraded` when the record's reason is
    /// `health_check` (`metadata.statusDetail`, at most
    /// [`aegis_contracts::control::STATUS_DETAIL_MAX_CHARS`] characters,
    /// without control characters); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_detail: Option<String>,
    /// Since when: for `health_check`, `operator` and `degraded`, since
    /// when the instance says it has been unhealthy
    /// (`metadata.statusSince`); otherwise since when this monitor has shown
    /// this status and reason.
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    pub status_since: DateTime<Utc>,
}

impl InstanceView {
    /// Whether its process is gone (its connection closed) or hung (its
    /// beats stopped): it serves nothing, whatever its record says.
    pub fn process_down(&self) -> bool {
        matches!(
            self.status_reason,
            Some(
                StatusReason::Disconnected
                    | StatusReason::Unresponsive
                    | StatusReason::UnresponsiveExpired
            )
        )
    }

    /// Whether a viewer would see a difference from `other`: any field but
    /// `lastHeartbeat` (the time of the last record write, which moves on
    /// every refresh of an otherwise unchanged record).
    pub fn differs_visibly(&self, other: &InstanceView) -> bool {
        let InstanceView {
            instance,
            reported_status,
            status_reason,
            status_detail,
            status_since,
        } = other;
        self.reported_status != *reported_status
            || self.status_reason != *status_reason
            || self.status_detail != *status_detail
            || self.status_since != *status_since
            || !self.instance.same_but_heartbeat(instance)
    }
}

/// Where the view (or one service's part of it) stands: the numbers of the
/// last change of any kind and of the last visible one (see
/// [`InstanceView::differs_visibly`]), from one sequence shared by the
/// whole fleet. A list built at `any` is exact; one built at an older `any`
/// but the same `visible` differs only in `lastHeartbeat`s.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Versions {
    /// The last change.
    pub any: u64,
    /// The last change a viewer sees.
    pub visible: u64,
}

/// What a list asks of the view: every filter is optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Selection {
    /// Only these services (sorted, without duplicates); `None`: all.
    pub services: Option<Vec<String>>,
    /// Only these derived statuses; `None`: all.
    pub statuses: Option<Vec<InstanceStatus>>,
    /// Only instances sorted after this (service, instance id).
    pub after: Option<(String, String)>,
    /// At most this many.
    pub limit: Option<usize>,
}

/// A selection's result, read under one lock with the versions it is exact at.
#[derive(Debug, Clone)]
pub struct Selected {
    /// The fleet's versions when read.
    pub versions: Versions,
    /// The matching instances, sorted by (service, instance id).
    pub instances: Vec<InstanceView>,
    /// Whether more matched than `limit` allowed.
    pub more: bool,
}

/// An instance whose beats are late, as of a digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LateBeat {
    /// Its service.
    pub service_name: String,
    /// Its id.
    pub instance_id: String,
    /// Its last sign of life seen by this monitor: a liveness beat or a
    /// record write (RFC 3339).
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    pub last_beat: DateTime<Utc>,
}

/// The state of the fleet every [`DIGEST_EVERY`]: what keeps a viewer's
/// counts and heartbeat ages true without an event per heartbeat.
///
/// The rule it states: as of `asOf`, every listed instance whose record
/// announces a beat interval (`metadata.heartbeatMs`) and that is not in
/// `late` has shown a sign of life (a liveness beat or a record write)
/// within [`LATE_AFTER_INTERVALS`] × its interval. `late` names the others
/// with their last sign of life, unresponsive ones included.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FleetDigest {
    /// When it was taken.
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    pub as_of: DateTime<Utc>,
    /// The fleet's visible version (see [`Versions`]): it moves exactly
    /// when an `instance` event is published.
    pub version: u64,
    /// Counts by derived status.
    pub summary: Summary,
    /// How many beat intervals an instance may go without a sign of life
    /// before it is listed in `late`.
    pub late_after_intervals: f64,
    /// The instances whose last sign of life is older than that.
    pub late: Vec<LateBeat>,
}

/// A change of the fleet view.
#[derive(Debug, Clone, PartialEq)]
pub enum FleetChange {
    /// An instance appeared or its view changed visibly (a status, a
    /// reason, metadata …; never `lastHeartbeat` alone).
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
    /// The periodic digest, in order with the changes before it.
    Digest(Box<FleetDigest>),
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
    /// The liveness beats could not be subscribed to.
    #[error("cannot subscribe to the liveness beats")]
    Beats(#[source] async_nats::SubscribeError),
    /// System account credentials were given but do not work.
    #[error(transparent)]
    System(#[from] SystemAccessError),
}

type Key = (String, String);

/// The materialized view and its versions.
#[derive(Debug, Default)]
struct View {
    instances: BTreeMap<Key, InstanceView>,
    /// The last number handed out.
    seq: u64,
    fleet: Versions,
    services: HashMap<String, Versions>,
}

impl View {
    /// Numbers a change of `service`'s part of the view.
    fn bump(&mut self, service: &str, visible: bool) {
        self.seq += 1;
        let seq = self.seq;
        let service = match self.services.get_mut(service) {
            Some(v) => v,
            None => self.services.entry(service.to_owned()).or_default(),
        };
        for v in [&mut self.fleet, service] {
            v.any = seq;
            if visible {
                v.visible = seq;
            }
        }
    }
}

/// The live fleet view; cheap to clone. Its task stops when cancelled.
#[derive(Debug, Clone)]
pub struct Fleet {
    shared: Arc<Shared>,
}

/// What this monitor last saw of one election key.
#[derive(Debug, Clone)]
struct LeaseSeen {
    holder: Option<Holder>,
    lease: Duration,
    /// When this monitor saw the last write (a renewal or a take-over).
    seen: Instant,
    /// When the holder says it wrote it (its clock; shown, not relied on).
    renewed_at: Option<DateTime<Utc>>,
}

/// How many instances' disconnect times are kept ([`Fleet::closes`]).
const CLOSED_KEPT: usize = 4096;
/// How many disconnect times are kept per instance ([`Fleet::closes`]):
/// each crash of a leader measures its own hand-over, also once the same
/// instance has crashed again since.
const CLOSES_PER_INSTANCE: usize = 8;

/// One instance's connection closes: each connection's name and when it
/// closed, oldest first.
type Closes = VecDeque<(String, DateTime<Utc>)>;

/// How long past its lease a key may go unrenewed before its term is said
/// to have lapsed: this monitor's own delays (a busy fleet task, a slow
/// watch) must not end a live leader's term.
const LAPSE_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Shared {
    registry: RegistryReader,
    view: RwLock<View>,
    /// Per (service, group): the election key as last seen. Apart from the
    /// view: it changes with every renewal, which no viewer sees.
    leases: std::sync::Mutex<HashMap<Key, LeaseSeen>>,
    /// Per instance: its last sign of life (a liveness beat or a record
    /// write). Apart from the view for the same reason: it moves every beat.
    signs: std::sync::Mutex<HashMap<Key, DateTime<Utc>>>,
    /// Per instance: when its connections closed, oldest first, as the
    /// server's disconnect advisories said (with system account access).
    /// Kept after its record is gone, for the failover timeline; at most
    /// [`CLOSES_PER_INSTANCE`] each and [`CLOSED_KEPT`] instances, the
    /// oldest dropped first. With each connection's name, so that
    /// connection open again (a reconnect) drops its close.
    closed: std::sync::Mutex<HashMap<Key, Closes>>,
    changes: broadcast::Sender<FleetChange>,
    advisories: bool,
    system_conn: Option<Connection>,
    /// Which servers answer the pings, round by round (with the system
    /// account).
    pings: Option<liveness::PingRounds>,
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
        let elections = elections::follow(conn, leaders_tx.clone(), cancel.clone())
            .await
            .map_err(FleetError::Elections)?;
        let (beats_tx, beats_rx) = mpsc::unbounded_channel();
        beats::follow(conn.client().clone(), beats_tx, cancel.clone(), tasks)
            .await
            .map_err(FleetError::Beats)?;
        let (conns_tx, conns_rx) = mpsc::unbounded_channel();
        let (system_conn, pings) = match system {
            Some(account) => {
                let (conn, pings) = liveness::follow(
                    liveness::SystemAccess {
                        config: account.connection_config(conn.config()),
                    },
                    conns_tx,
                    cancel.clone(),
                    tasks,
                )
                .await?;
                (Some(conn), Some(pings))
            }
            None => {
                drop(conns_tx);
                (None, None)
            }
        };
        let (changes, _) = broadcast::channel(CHANGES_CAPACITY);
        let shared = Arc::new(Shared {
            registry: registry.clone(),
            view: RwLock::default(),
            leases: std::sync::Mutex::default(),
            signs: std::sync::Mutex::default(),
            closed: std::sync::Mutex::default(),
            changes,
            advisories: system_conn.is_some(),
            system_conn,
            pings,
        });
        let client = conn.client().clone();
        let mut state = State {
            shared: shared.clone(),
            records: HashMap::new(),
            leaders: HashMap::new(),
            keys: task::KeyChecks::new(elections, leaders_tx),
            conns: ConnectionStates::default(),
            beats: HashMap::new(),
            unresponsive: HashSet::new(),
            lapsed: HashMap::new(),
            held: HashMap::new(),
            listening_since: Instant::now(),
            connects: client
                .statistics()
                .connects
                .load(std::sync::atomic::Ordering::Relaxed),
            client,
        };
        while let Ok(event) = leaders_rx.try_recv() {
            state.apply_leader_event(event);
        }
        for record in registry.all() {
            state.upsert(record);
        }
        tasks.spawn(state.run(
            registry,
            registry_changes,
            leaders_rx,
            conns_rx,
            beats_rx,
            cancel,
        ));
        Ok(Fleet { shared })
    }

    /// Every instance, sorted by (service, instance).
    pub fn all(&self) -> Vec<InstanceView> {
        self.read().instances.values().cloned().collect()
    }

    /// One service's instances, sorted by instance id.
    pub fn by_service(&self, service: &str) -> Vec<InstanceView> {
        service_range(&self.read().instances, service)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// One instance, if registered.
    pub fn get(&self, service: &str, instance_id: &str) -> Option<InstanceView> {
        self.read()
            .instances
            .get(&(service.to_owned(), instance_id.to_owned()))
            .cloned()
    }

    /// Every instance whose derived status is `status`.
    pub fn by_status(&self, status: InstanceStatus) -> Vec<InstanceView> {
        self.read()
            .instances
            .values()
            .filter(|v| v.instance.status == status)
            .cloned()
            .collect()
    }

    /// The whole fleet's versions.
    pub fn versions(&self) -> Versions {
        self.read().fleet
    }

    /// One service's versions; `None` for a service with no instance.
    pub fn service_versions(&self, service: &str) -> Option<Versions> {
        self.read().services.get(service).copied()
    }

    /// One service's instances with its versions (`None`: no instance),
    /// read under one lock.
    pub fn service_list(&self, service: &str) -> (Option<Versions>, Vec<InstanceView>) {
        let view = self.read();
        let instances = service_range(&view.instances, service)
            .map(|(_, v)| v.clone())
            .collect();
        (view.services.get(service).copied(), instances)
    }

    /// The instances `selection` asks for, with the versions they are exact
    /// at (read under one lock, so the two agree).
    pub fn select(&self, selection: &Selection) -> Selected {
        let view = self.read();
        let after = selection.after.as_ref();
        let wanted = |(k, v): &(&Key, &InstanceView)| {
            after.is_none_or(|a| *k > a)
                && selection
                    .statuses
                    .as_ref()
                    .is_none_or(|s| s.contains(&v.instance.status))
        };
        let limit = selection.limit.unwrap_or(usize::MAX);
        let mut instances = Vec::new();
        let mut more = false;
        let mut take = |items: &mut dyn Iterator<Item = (&Key, &InstanceView)>| {
            for (_, v) in items.filter(wanted) {
                if instances.len() == limit {
                    more = true;
                    return false;
                }
                instances.push(v.clone());
            }
            true
        };
        match &selection.services {
            None => {
                take(&mut view.instances.iter());
            }
            Some(services) => {
                for service in services {
                    if !take(&mut service_range(&view.instances, service)) {
                        break;
                    }
                }
            }
        }
        Selected {
            versions: view.fleet,
            instances,
            more,
        }
    }

    /// Counts by derived status.
    pub fn summary(&self) -> Summary {
        summarize(&self.read().instances)
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

    /// How long the view has served its last known state because the
    /// registry watch broke; `None` while synced (or before the first load).
    pub fn staleness(&self) -> Option<std::time::Duration> {
        self.shared.registry.staleness()
    }

    /// Whether crashes are seen from the server's connection advisories
    /// (system account access) rather than at the registry TTL.
    pub fn sees_disconnects(&self) -> bool {
        self.shared.advisories
    }

    /// The rounds of pings of every NATS server, with the system account:
    /// the NATS view reads them rather than pinging every server itself.
    pub(crate) fn server_pings(&self) -> Option<liveness::PingRounds> {
        self.shared.pings.clone()
    }

    /// Drains the system account connection, if any (the last step of a
    /// stop).
    pub async fn drain(&self) {
        if let Some(conn) = &self.shared.system_conn {
            let _ = conn.drain().await;
        }
    }

    /// When `instance_id` of `service` last showed a sign of life to this
    /// fleet view: a liveness beat (every heartbeat interval) or a record
    /// write. Newer than the record's `lastHeartbeat`, which the instance
    /// rewrites only every few beats when nothing changed.
    pub fn last_sign_of_life(&self, service: &str, instance_id: &str) -> Option<DateTime<Utc>> {
        let signs = self.shared.signs.lock().unwrap_or_else(|e| e.into_inner());
        signs
            .get(&(service.to_owned(), instance_id.to_owned()))
            .copied()
    }

    /// When the connections of `instance_id` of `service` closed, oldest
    /// first (the last [`CLOSES_PER_INSTANCE`]), as the NATS server's
    /// disconnect advisories said: one per process that crashed under that
    /// id; kept after its record is gone, dropped when the same connection
    /// opens again (a reconnect). Empty without system account access,
    /// when this monitor saw no such close (it started later, or the
    /// instance never crashed), and when a close was only inferred (later
    /// than it happened).
    pub(crate) fn closes(&self, service: &str, instance_id: &str) -> Vec<DateTime<Utc>> {
        self.shared
            .closes(&(service.to_owned(), instance_id.to_owned()))
    }

    /// When the term of `instance_id` with fencing `epoch` lapsed, if it
    /// did: one of `service`'s election keys still names it, but has not
    /// been renewed for longer than its lease (a leader that died, or a
    /// whole fleet that was stopped, deletes nothing; its key just stops
    /// being renewed until someone takes it over). The time is its last
    /// renewal plus the lease. `None` while it is renewed, while its holder
    /// still beats (the key's watch stalled, not the leader), or when no
    /// key names it.
    pub(crate) fn lapsed_at(
        &self,
        service: &str,
        instance_id: &str,
        epoch: u64,
    ) -> Option<DateTime<Utc>> {
        let (quiet, lease, renewed_at) = {
            let leases = self.shared.leases.lock().unwrap_or_else(|e| e.into_inner());
            let seen = leases
                .iter()
                .filter(|((s, _), _)| s == service)
                .map(|(_, seen)| seen)
                .find(|seen| {
                    seen.holder
                        .as_ref()
                        .is_some_and(|h| h.instance_id == instance_id && h.epoch == epoch)
                })?;
            (seen.seen.elapsed(), seen.lease, seen.renewed_at)
        };
        if lease.is_zero() || quiet <= lease + LAPSE_SLACK {
            return None;
        }
        // A holder that still beats is alive: what stalled is the key's
        // watch (the elections stream choosing a leader after a NATS node
        // died), not its lease.
        if self
            .get(service, instance_id)
            .is_some_and(|v| !v.process_down())
        {
            return None;
        }
        let renewed = renewed_at
            .unwrap_or_else(|| Utc::now() - chrono::Duration::from_std(quiet).unwrap_or_default());
        Some(renewed + chrono::Duration::from_std(lease).unwrap_or_default())
    }

    /// Who `service`'s election keys name, as this monitor last saw them:
    /// every group's, or only `group`'s.
    pub(crate) fn holders(&self, service: &str, group: Option<&str>) -> Vec<Holder> {
        let leases = self.shared.leases.lock().unwrap_or_else(|e| e.into_inner());
        leases
            .iter()
            .filter(|((s, g), _)| s == service && group.is_none_or(|group| g == group))
            .filter_map(|(_, seen)| seen.holder.clone())
            .collect()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, View> {
        self.shared.view.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// See [`Fleet::closes`].
    fn closes(&self, key: &Key) -> Vec<DateTime<Utc>> {
        let closed = self.closed.lock().unwrap_or_else(|e| e.into_inner());
        closed
            .get(key)
            .map(|closes| closes.iter().map(|(_, at)| *at).collect())
            .unwrap_or_default()
    }

    /// Notes a write of a group's election key; a removal of it (no
    /// holder) forgets the group's lease: no term can lapse on a key that
    /// is gone, and groups that are done with must not pile up.
    fn renewed(
        &self,
        group: &Key,
        holder: &Option<Holder>,
        lease: Duration,
        renewed_at: Option<DateTime<Utc>>,
    ) {
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if holder.is_none() {
            leases.remove(group);
            return;
        }
        let seen = LeaseSeen {
            holder: holder.clone(),
            lease,
            seen: Instant::now(),
            renewed_at,
        };
        leases.insert(group.clone(), seen);
    }
}

/// One service's part of the view.
fn service_range<'a>(
    instances: &'a BTreeMap<Key, InstanceView>,
    service: &'a str,
) -> impl Iterator<Item = (&'a Key, &'a InstanceView)> + 'a {
    instances
        .range((service.to_owned(), String::new())..)
        .take_while(move |((s, _), _)| s == service)
}

fn summarize(instances: &BTreeMap<Key, InstanceView>) -> Summary {
    let mut s = Summary::default();
    for v in instances.values() {
        match v.instance.status {
            InstanceStatus::Active => s.active += 1,
            InstanceStatus::Unhealthy => s.unhealthy += 1,
            InstanceStatus::Standby => s.standby += 1,
        }
    }
    s.total = s.active + s.unhealthy + s.standby;
    s
}
