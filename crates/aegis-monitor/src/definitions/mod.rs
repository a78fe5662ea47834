//! Service definitions in the `service_definitions` KV bucket: create,
//! read, optimistic update and delete, the audit trail, and an in-memory
//! copy of the bucket for listing.
//!
//! - Create is KV `create` (atomic: of two racing creates exactly one wins).
//! - Update and delete are compare-and-set on the entry's revision (the
//!   ETag): with a client revision a mismatch is a conflict; without one the
//!   store re-reads and retries, so a patch is never lost to a race.
//! - A read or write the bucket's stream cannot answer now (no leader, as
//!   for the 4-9 s of an election after the node leading it died) is sent
//!   again until the request's deadline ([`answer_by`]); a write that was
//!   not acknowledged is sent again too, as it is: each write is a
//!   compare-and-set with its own message id, so it lands once
//!   (`patience.rs`). Before, reads were not tried again, writes for 2 s
//!   only, and an unacknowledged write was answered 503 "not known"
//!   (`tests/definitions_leader_loss.rs`).
//! - Who made a change: a put's stored JSON carries `changed_by` next to the
//!   definition fields (readers of [`ServiceDefinition`] ignore it); a
//!   delete marker carries the `Aegis-Actor` header. [`DefinitionStore::history`]
//!   reads both back with direct gets (no consumer per request).
//! - Listing never lists keys per request (each listing makes a consumer):
//!   one mirror of the bucket per process ([`aegis_sdk::kv::mirror`]) keeps
//!   [`DefinitionStore::list`]'s copy current (`copy.rs`), and every write
//!   waits until the copy has it, so a client reads its own writes. After a
//!   NATS node dies, the mirror is current again as soon as JetStream
//!   answers: another replica's writes are listed here within a second
//!   (`tests/node_loss.rs`), where a watch on async-nats's ordered
//!   consumer trailed by 1.6 to 4.5 s.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use aegis_contracts::{
    ServiceDefinition, ServiceDefinitionPatch, models::NewServiceDefinition, models::rfc3339,
    subjects::DEFINITIONS_BUCKET,
};
use aegis_sdk::{Connection, kv::Mirrored};
use async_nats::{
    HeaderMap,
    jetstream::{
        kv::{self, EntryErrorKind, Operation},
        stream::DirectGetErrorKind,
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{bus::BusError, live::LiveEvent};

mod copy;
mod patience;

use copy::{Covers, Definitions};
use patience::WriteError;
pub(crate) use patience::answer_by;

/// Header naming who wrote a delete marker.
pub(crate) const ACTOR_HEADER: &str = "Aegis-Actor";
const KV_OPERATION: &str = "KV-Operation";
/// Attempts of a blind (revision-less) update or delete racing other writers.
const BLIND_RETRIES: usize = 8;
/// Longest a write waits for the watch to see it.
const READ_YOUR_WRITES: Duration = Duration::from_secs(2);

/// What is stored under a service's key.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    definition: ServiceDefinition,
    /// The principal that wrote this revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    changed_by: Option<String>,
}

/// Why a definition operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("service definition not found")]
    NotFound,
    #[error("service definition already exists")]
    AlreadyExists,
    #[error("stale revision: expected {expected}, current {current}")]
    Conflict { expected: u64, current: u64 },
    /// A blind write (no revision given) lost the compare-and-set to
    /// other writers on each of its `attempts`, and was not stored;
    /// `current` is the revision read after the last, when it could be.
    #[error("changed by other writers during each of {attempts} tries (now at {current:?})")]
    Contended {
        current: Option<u64>,
        attempts: usize,
    },
    /// A write that certainly was not stored: nobody took it until the
    /// deadline, or the stream refused it; it may be sent again as it is.
    #[error("not stored: {0}")]
    NotStored(#[source] BusError),
    /// NATS did not do what was asked, and for a write, whether it was
    /// stored is not known.
    #[error(transparent)]
    Bus(#[from] BusError),
}

impl StoreError {
    /// What a failed write says: certainly not stored, or not known.
    fn from_write(e: WriteError) -> Self {
        match e {
            WriteError::WrongRevision => Self::Conflict {
                expected: 0,
                current: 0,
            },
            WriteError::Failed {
                source,
                maybe_stored: false,
            } => Self::NotStored(source),
            WriteError::Failed { source, .. } => Self::Bus(source),
        }
    }
}

/// One change in a definition's audit trail.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    /// The KV revision of this change.
    pub revision: u64,
    /// When it was stored (RFC 3339 UTC).
    #[serde(with = "rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub time: DateTime<Utc>,
    /// `PUT`, `DELETE` or `PURGE`.
    #[schema(example = "PUT")]
    pub operation: String,
    /// The token name that made the change (`admin`, `viewer`, a token-file
    /// name, `insecure-dev`); null when unknown (written by another tool).
    pub who: Option<String>,
    /// The definition as of this change; null for deletes.
    pub definition: Option<ServiceDefinition>,
}

/// The definitions bucket plus its watched in-memory copy.
#[derive(Debug, Clone)]
pub(crate) struct DefinitionStore {
    kv: kv::Store,
    js: async_nats::jetstream::Context,
    cache: Arc<RwLock<Definitions>>,
    /// How far the copy covers the bucket: every revision up to this one;
    /// `None` until its first load.
    seen: watch::Sender<Option<u64>>,
    /// The revision of each removal the copy has seen since its last
    /// fresh load, for names it no longer holds: a read answered with an
    /// older put came from a replica behind ([`known_revision`]).
    ///
    /// [`known_revision`]: Self::known_revision
    removed: Arc<RwLock<std::collections::HashMap<String, u64>>>,
}

impl DefinitionStore {
    /// Starts the mirror that keeps the in-memory copy current; returns
    /// once it runs (its first load may still be on the way: [`list`]
    /// waits for it).
    ///
    /// [`list`]: Self::list
    pub(crate) async fn start(
        conn: &Connection,
        kv: kv::Store,
        live: broadcast::Sender<LiveEvent>,
        cancel: CancellationToken,
    ) -> Result<Self, BusError> {
        let store = Self {
            kv,
            js: conn.jetstream().clone(),
            cache: Arc::default(),
            seen: watch::Sender::new(None),
            removed: Arc::default(),
        };
        let copy = store.clone();
        aegis_sdk::kv::mirror(conn, DEFINITIONS_BUCKET, ">", cancel, move |update| {
            copy.apply(update, &live);
        })
        .await
        .map_err(|e| BusError::new("following bucket service_definitions", e))?;
        Ok(store)
    }

    /// Applies one of the mirror's updates to the copy and tells viewers.
    fn apply(&self, update: Mirrored, live: &broadcast::Sender<LiveEvent>) {
        {
            let mut removed = self.removed.write().unwrap_or_else(|e| e.into_inner());
            match &update {
                Mirrored::Removed { key, revision, .. } => {
                    removed.insert(key.clone(), *revision);
                }
                Mirrored::Put(entry) => {
                    removed.remove(&entry.key);
                }
                Mirrored::Loaded { fresh: true, .. } => removed.clear(),
                Mirrored::Loaded { entries, .. } => {
                    for entry in entries {
                        removed.remove(&entry.key);
                    }
                }
                _ => {}
            }
        }
        let applied = {
            // Never held across an await.
            let mut cache = self.cache.write().unwrap_or_else(|e| e.into_inner());
            copy::apply(&mut cache, update)
        };
        match applied.covers {
            Covers::Same => {}
            Covers::AtLeast(revision) => self
                .seen
                .send_modify(|seen| *seen = Some(seen.unwrap_or(0).max(revision))),
            Covers::Restarted(revision) => {
                self.seen.send_replace(Some(revision));
            }
        }
        for event in applied.events {
            let _ = live.send(event);
        }
    }

    /// Waits until the copy covers `revision`, for [`READ_YOUR_WRITES`]
    /// at most and not past `until`.
    async fn caught_up(&self, revision: u64, until: Instant) -> bool {
        let mut rx = self.seen.subscribe();
        tokio::time::timeout_at(
            until.min(Instant::now() + READ_YOUR_WRITES),
            rx.wait_for(|seen| seen.is_some_and(|seen| seen >= revision)),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    /// Whether the in-memory copy has loaded the bucket.
    pub(crate) fn is_synced(&self) -> bool {
        self.seen.borrow().is_some()
    }

    /// Every definition with its revision, sorted by name.
    pub(crate) async fn list(&self) -> Vec<(ServiceDefinition, u64)> {
        if !self.caught_up(0, Instant::now() + READ_YOUR_WRITES).await {
            tracing::warn!("listing definitions before the bucket loaded");
        }
        let cache = self.cache.read().unwrap_or_else(|e| e.into_inner());
        cache
            .values()
            .map(|c| (c.definition.clone(), c.revision))
            .collect()
    }

    /// Number of definitions in the in-memory copy.
    pub(crate) fn count(&self) -> usize {
        self.cache.read().map(|c| c.len()).unwrap_or(0)
    }

    /// The current definition and revision (read from NATS, not the copy),
    /// asked again until `until` while NATS does not answer.
    pub(crate) async fn get(
        &self,
        name: &str,
        until: Instant,
    ) -> Result<(ServiceDefinition, u64), StoreError> {
        let (stored, revision) = self.current(name, until).await?;
        Ok((stored.definition, revision))
    }

    async fn current(&self, name: &str, until: Instant) -> Result<(Stored, u64), StoreError> {
        match self.entry(name, until).await? {
            Some(entry) if entry.operation == Operation::Put => {
                let stored: Stored = serde_json::from_slice(&entry.value).map_err(|e| {
                    BusError::new(format!("service definition {name} is not valid JSON"), e)
                })?;
                Ok((stored, entry.revision))
            }
            _ => Err(StoreError::NotFound),
        }
    }

    /// The revision at which the copy holds `name`, if it does. Reads
    /// are answered by any replica of the bucket's stream; one answering
    /// with less has not caught up (a node that was paused or cut off,
    /// back in the cluster), and a read right after a write must not show
    /// the write undone.
    fn known_revision(&self, name: &str) -> Option<u64> {
        let held = self
            .cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .map(|c| c.revision);
        let removed = self
            .removed
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .copied();
        held.max(removed)
    }

    /// What a read of `name` asked now, with the request's `until`, must
    /// reach to be taken as caught up.
    fn freshness(&self, name: &str, until: Instant) -> Freshness {
        Freshness {
            known: self.known_revision(name),
            until: until.min(Instant::now() + READ_YOUR_WRITES),
        }
    }

    /// The last entry of `name` (a put or a delete marker), asked again
    /// until `until` while NATS does not answer, and for up to
    /// [`READ_YOUR_WRITES`] while the replica answering is behind the copy.
    async fn entry(&self, name: &str, until: Instant) -> Result<Option<kv::Entry>, BusError> {
        let fresh = self.freshness(name, until);
        patience::read(
            "reading a service definition",
            until,
            |e: &EntryRead| match e {
                EntryRead::Failed(e) => e.kind() != EntryErrorKind::InvalidKey,
                EntryRead::Behind { .. } => true,
            },
            || async {
                let entry = self.kv.entry(name).await.map_err(EntryRead::Failed)?;
                let answered = entry.as_ref().map_or(0, |e| e.revision);
                match fresh.behind(answered) {
                    Some(known) => Err(EntryRead::Behind { answered, known }),
                    None => Ok(entry),
                }
            },
        )
        .await
    }

    /// Stores a new definition; exactly one of several racing creates wins.
    /// Gives up at `until`.
    pub(crate) async fn create(
        &self,
        new: NewServiceDefinition,
        who: &str,
        until: Instant,
    ) -> Result<(ServiceDefinition, u64), StoreError> {
        let definition = new.into_definition(Utc::now());
        let name = definition.service_name.clone();
        let value = encode(&definition, who)?;
        for _ in 0..BLIND_RETRIES {
            // Nothing is written before this read answers: a failure is
            // "not stored".
            let expected = match self.entry(&name, until).await {
                Ok(None) => 0,
                // Deleted or purged: created again on top of the marker.
                Ok(Some(entry)) if entry.operation != Operation::Put => entry.revision,
                Ok(Some(_)) => return Err(StoreError::AlreadyExists),
                Err(e) => return Err(StoreError::NotStored(e)),
            };
            let written = patience::compare_and_set(
                "creating a service definition",
                self,
                &name,
                HeaderMap::new(),
                value.clone(),
                expected,
                until,
            )
            .await;
            match written {
                Ok(revision) => {
                    self.caught_up(revision, until).await;
                    return Ok((definition, revision));
                }
                // Someone wrote in between: read again (a put now is
                // theirs: it already exists).
                Err(WriteError::WrongRevision) => {}
                Err(e) => return Err(StoreError::from_write(e)),
            }
        }
        Err(StoreError::AlreadyExists)
    }

    /// Applies `patch`; with `expected` the stored revision must match it.
    /// Gives up at `until`.
    pub(crate) async fn update(
        &self,
        name: &str,
        patch: &ServiceDefinitionPatch,
        expected: Option<u64>,
        who: &str,
        until: Instant,
    ) -> Result<(ServiceDefinition, u64), StoreError> {
        for _ in 0..BLIND_RETRIES {
            let (stored, current) = self.current(name, until).await.map_err(not_written)?;
            check_expected(expected, current)?;
            let updated = patch.apply(&stored.definition, Utc::now());
            let value = encode(&updated, who)?;
            let written = patience::compare_and_set(
                "updating a service definition",
                self,
                name,
                HeaderMap::new(),
                value,
                current,
                until,
            )
            .await;
            match written {
                Ok(revision) => {
                    self.caught_up(revision, until).await;
                    return Ok((updated, revision));
                }
                // Someone wrote in between. A client revision is now stale;
                // a blind update re-reads and tries again.
                Err(WriteError::WrongRevision) => {
                    if let Some(expected) = expected {
                        return Err(self.conflict(name, expected, until).await);
                    }
                }
                Err(e) => return Err(StoreError::from_write(e)),
            }
        }
        Err(self.contended(name, until).await)
    }

    /// Deletes the definition (a delete marker; history keeps the trail).
    /// Gives up at `until`.
    pub(crate) async fn delete(
        &self,
        name: &str,
        expected: Option<u64>,
        who: &str,
        until: Instant,
    ) -> Result<u64, StoreError> {
        for _ in 0..BLIND_RETRIES {
            let (_, current) = self.current(name, until).await.map_err(not_written)?;
            check_expected(expected, current)?;
            let mut headers = HeaderMap::new();
            headers.insert(KV_OPERATION, "DEL");
            headers.insert(ACTOR_HEADER, who);
            let written = patience::compare_and_set(
                "deleting a service definition",
                self,
                name,
                headers,
                bytes::Bytes::new(),
                current,
                until,
            )
            .await;
            match written {
                Ok(revision) => {
                    self.caught_up(revision, until).await;
                    return Ok(revision);
                }
                Err(WriteError::WrongRevision) => {
                    if let Some(expected) = expected {
                        return Err(self.conflict(name, expected, until).await);
                    }
                }
                Err(e) => return Err(StoreError::from_write(e)),
            }
        }
        Err(self.contended(name, until).await)
    }

    /// The conflict of a write that expected `expected`, with the revision
    /// now stored (0 when it cannot be read).
    async fn conflict(&self, name: &str, expected: u64, until: Instant) -> StoreError {
        let current = self.current(name, until).await.map(|(_, r)| r).unwrap_or(0);
        StoreError::Conflict { expected, current }
    }

    /// What a blind write that lost every one of its tries says: the
    /// revision the definition is at now (none when it cannot be read), or
    /// that it is gone, when another writer deleted it meanwhile.
    async fn contended(&self, name: &str, until: Instant) -> StoreError {
        let current = match self.current(name, until).await {
            Ok((_, revision)) => Some(revision),
            Err(StoreError::NotFound) => return StoreError::NotFound,
            Err(_) => None,
        };
        StoreError::Contended {
            current,
            attempts: BLIND_RETRIES,
        }
    }

    /// The audit trail of `name`, oldest first; `NotFound` if it never existed.
    /// Asked again until `until` while NATS does not answer.
    /// A replica behind the copy (see [`known_revision`](Self::known_revision))
    /// is asked again, for up to [`READ_YOUR_WRITES`].
    pub(crate) async fn history(
        &self,
        name: &str,
        until: Instant,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let fresh = self.freshness(name, until);
        loop {
            let history = self.history_once(name, until).await;
            let answered = match &history {
                Ok(entries) => entries.last().map_or(0, |e| e.revision),
                Err(StoreError::NotFound) => 0,
                Err(_) => return history,
            };
            match fresh.behind(answered) {
                Some(known) => {
                    tracing::debug!(
                        name,
                        answered,
                        known,
                        "a replica behind the copy answered the history; asking again"
                    );
                    tokio::time::sleep(BEHIND_PAUSE).await;
                }
                None => return history,
            }
        }
    }

    async fn history_once(
        &self,
        name: &str,
        until: Instant,
    ) -> Result<Vec<HistoryEntry>, StoreError> {
        let subject = format!("{}{name}", self.kv.prefix);
        let mut out = Vec::new();
        let mut next = 1;
        // The bucket keeps at most `history` revisions per key; the bound
        // only guards against a misconfigured bucket.
        while out.len() < 1024 {
            let message = patience::read(
                "reading definition history",
                until,
                |_: &async_nats::jetstream::stream::DirectGetError| true,
                || async {
                    match self
                        .kv
                        .stream
                        .direct_get_next_for_subject(&subject, Some(next))
                        .await
                    {
                        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                        got => got.map(Some),
                    }
                },
            )
            .await?;
            let Some(message) = message else { break };
            next = message.sequence + 1;
            let op = message
                .headers
                .get(KV_OPERATION)
                .map(|v| v.as_str().to_owned());
            let (operation, definition, who) = match op.as_deref() {
                Some("DEL") => ("DELETE", None, actor(&message.headers)),
                Some("PURGE") => ("PURGE", None, actor(&message.headers)),
                _ => match serde_json::from_slice::<Stored>(&message.payload) {
                    Ok(s) => ("PUT", Some(s.definition), s.changed_by),
                    Err(_) => ("PUT", None, None),
                },
            };
            let nanos = message.time.unix_timestamp_nanos();
            out.push(HistoryEntry {
                revision: message.sequence,
                time: DateTime::from_timestamp_nanos(i64::try_from(nanos).unwrap_or(0)),
                operation: operation.to_owned(),
                who,
                definition,
            });
        }
        if out.is_empty() {
            return Err(StoreError::NotFound);
        }
        Ok(out)
    }
}

/// The revision a read must reach (what the copy holds or saw removed),
/// checked until `until` (at most [`READ_YOUR_WRITES`]); past that, what a
/// replica answers is taken as it is (a bucket made again starts its
/// revisions over).
struct Freshness {
    known: Option<u64>,
    until: Instant,
}

impl Freshness {
    /// The revision a read answered with `answered` falls short of, while
    /// that still counts; `None` when it is caught up, or the wait is over.
    fn behind(&self, answered: u64) -> Option<u64> {
        self.known
            .filter(|&known| answered < known && Instant::now() < self.until)
    }
}

/// A read of a definition that failed, or came from a replica behind.
#[derive(Debug, thiserror::Error)]
enum EntryRead {
    #[error(transparent)]
    Failed(kv::EntryError),
    #[error("a replica at revision {answered} answered, behind the copy's {known}")]
    Behind { answered: u64, known: u64 },
}

/// The pause before a history read that a replica behind answered is
/// asked again.
const BEHIND_PAUSE: Duration = Duration::from_millis(20);

fn actor(headers: &HeaderMap) -> Option<String> {
    headers.get(ACTOR_HEADER).map(|v| v.as_str().to_owned())
}

/// A read that failed before a write was sent: nothing was stored.
fn not_written(e: StoreError) -> StoreError {
    match e {
        StoreError::Bus(e) => StoreError::NotStored(e),
        other => other,
    }
}

fn check_expected(expected: Option<u64>, current: u64) -> Result<(), StoreError> {
    match expected {
        Some(expected) if expected != current => Err(StoreError::Conflict { expected, current }),
        _ => Ok(()),
    }
}

fn encode(definition: &ServiceDefinition, who: &str) -> Result<bytes::Bytes, StoreError> {
    let stored = Stored {
        definition: definition.clone(),
        changed_by: Some(who.to_owned()),
    };
    serde_json::to_vec(&stored)
        .map(Into::into)
        .map_err(|e| StoreError::Bus(BusError::new("encoding a service definition", e)))
}
