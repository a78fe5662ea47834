//! Service definitions in the `service_definitions` KV bucket: create,
//! read, optimistic update and delete, the audit trail, and an in-memory
//! copy of the bucket for listing.
//!
//! - Create is KV `create` (atomic: of two racing creates exactly one wins).
//! - Update and delete are compare-and-set on the entry's revision (the
//!   ETag): with a client revision a mismatch is a conflict; without one the
//!   store re-reads and retries, so a patch is never lost to a race.
//! - A write the bucket's stream certainly did not store (no leader this
//!   moment, as while a NATS node in lame duck mode hands its leaderships
//!   over) is sent again for up to 2 s ([`until_stored`]).
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
    HeaderMap, HeaderValue,
    jetstream::{
        context::PublishErrorKind,
        kv::{self, CreateErrorKind, Operation, UpdateErrorKind},
        stream::DirectGetErrorKind,
    },
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::{bus::BusError, live::LiveEvent};

mod copy;

use copy::{Covers, Definitions};

/// Header naming who wrote a delete marker.
pub(crate) const ACTOR_HEADER: &str = "Aegis-Actor";
const KV_OPERATION: &str = "KV-Operation";
const EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";
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
    #[error(transparent)]
    Bus(#[from] BusError),
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

    /// Waits (bounded) until the copy covers `revision`.
    async fn caught_up(&self, revision: u64) -> bool {
        let mut rx = self.seen.subscribe();
        tokio::time::timeout(
            READ_YOUR_WRITES,
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
        if !self.caught_up(0).await {
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

    /// The current definition and revision (read from NATS, not the copy).
    pub(crate) async fn get(&self, name: &str) -> Result<(ServiceDefinition, u64), StoreError> {
        let (stored, revision) = self.current(name).await?;
        Ok((stored.definition, revision))
    }

    async fn current(&self, name: &str) -> Result<(Stored, u64), StoreError> {
        let entry = self
            .kv
            .entry(name)
            .await
            .map_err(|e| BusError::new("reading a service definition", e))?;
        match entry {
            Some(entry) if entry.operation == Operation::Put => {
                let stored: Stored = serde_json::from_slice(&entry.value).map_err(|e| {
                    BusError::new(format!("service definition {name} is not valid JSON"), e)
                })?;
                Ok((stored, entry.revision))
            }
            _ => Err(StoreError::NotFound),
        }
    }

    /// Stores a new definition; exactly one of several racing creates wins.
    pub(crate) async fn create(
        &self,
        new: NewServiceDefinition,
        who: &str,
    ) -> Result<(ServiceDefinition, u64), StoreError> {
        let definition = new.into_definition(Utc::now());
        let value = encode(&definition, who)?;
        let revision = until_stored(|| self.kv.create(&definition.service_name, value.clone()))
            .await
            .map_err(|e| match e.kind() {
                CreateErrorKind::AlreadyExists => StoreError::AlreadyExists,
                _ => StoreError::Bus(BusError::new("creating a service definition", e)),
            })?;
        self.caught_up(revision).await;
        Ok((definition, revision))
    }

    /// Applies `patch`; with `expected` the stored revision must match it.
    pub(crate) async fn update(
        &self,
        name: &str,
        patch: &ServiceDefinitionPatch,
        expected: Option<u64>,
        who: &str,
    ) -> Result<(ServiceDefinition, u64), StoreError> {
        for _ in 0..BLIND_RETRIES {
            let (stored, current) = self.current(name).await?;
            check_expected(expected, current)?;
            let updated = patch.apply(&stored.definition, Utc::now());
            let value = encode(&updated, who)?;
            match until_stored(|| self.kv.update(name, value.clone(), current)).await {
                Ok(revision) => {
                    self.caught_up(revision).await;
                    return Ok((updated, revision));
                }
                Err(e) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    // Someone wrote in between. A client revision is now stale;
                    // a blind update re-reads and tries again.
                    if let Some(expected) = expected {
                        let current = self.current(name).await.map(|(_, r)| r).unwrap_or(0);
                        return Err(StoreError::Conflict { expected, current });
                    }
                }
                Err(e) => {
                    return Err(BusError::new("updating a service definition", e).into());
                }
            }
        }
        Err(StoreError::Conflict {
            expected: 0,
            current: 0,
        })
    }

    /// Deletes the definition (a delete marker; history keeps the trail).
    pub(crate) async fn delete(
        &self,
        name: &str,
        expected: Option<u64>,
        who: &str,
    ) -> Result<u64, StoreError> {
        for _ in 0..BLIND_RETRIES {
            let (_, current) = self.current(name).await?;
            check_expected(expected, current)?;
            let mut headers = HeaderMap::new();
            headers.insert(KV_OPERATION, "DEL");
            headers.insert(EXPECTED_LAST_SUBJECT_SEQUENCE, HeaderValue::from(current));
            headers.insert(ACTOR_HEADER, who);
            let subject = format!(
                "{}{name}",
                self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix)
            );
            let ack = until_stored(|| async {
                self.js
                    .publish_with_headers(subject.clone(), headers.clone(), bytes::Bytes::new())
                    .await?
                    .await
            })
            .await;
            match ack {
                Ok(ack) => {
                    self.caught_up(ack.sequence).await;
                    return Ok(ack.sequence);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    if let Some(expected) = expected {
                        let current = self.current(name).await.map(|(_, r)| r).unwrap_or(0);
                        return Err(StoreError::Conflict { expected, current });
                    }
                }
                Err(e) => return Err(BusError::new("deleting a service definition", e).into()),
            }
        }
        Err(StoreError::Conflict {
            expected: 0,
            current: 0,
        })
    }

    /// The audit trail of `name`, oldest first; `NotFound` if it never existed.
    pub(crate) async fn history(&self, name: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let subject = format!("{}{name}", self.kv.prefix);
        let mut out = Vec::new();
        let mut next = 1;
        // The bucket keeps at most `history` revisions per key; the bound
        // only guards against a misconfigured bucket.
        while out.len() < 1024 {
            let message = match self
                .kv
                .stream
                .direct_get_next_for_subject(&subject, Some(next))
                .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
                Err(e) => return Err(BusError::new("reading definition history", e).into()),
            };
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

fn actor(headers: &HeaderMap) -> Option<String> {
    headers.get(ACTOR_HEADER).map(|v| v.as_str().to_owned())
}

/// How long a definition write is sent again while it was certainly not
/// stored: long enough for a stream's leader change (milliseconds, as when
/// a NATS node restarted in lame duck mode hands its leaderships over),
/// short of the 4-9 s election after a node's death, which the client is
/// told of (503) rather than kept waiting.
const NOT_STORED_PATIENCE: Duration = Duration::from_secs(2);

/// Runs `write` (a compare-and-set write of the definitions bucket) again
/// while it was certainly not stored ([`write_not_stored`]), so sending it
/// again as it is cannot store it twice: after 10 ms, doubling to 200 ms,
/// for up to [`NOT_STORED_PATIENCE`] ([`write_again_while`]). Any other outcome is returned at
/// once; past the patience, the last failure. Without this a save landing
/// in a leader change failed with 503 (`tests/node_loss.rs`).
///
/// [`write_not_stored`]: aegis_sdk::streams::write_not_stored
/// [`write_again_while`]: aegis_sdk::streams::write_again_while
async fn until_stored<T, E, F, Fut>(write: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let until = tokio::time::Instant::now() + NOT_STORED_PATIENCE;
    let pauses = (Duration::from_millis(10), Duration::from_millis(200));
    let again = |e: &E| {
        let again = aegis_sdk::streams::write_not_stored(e);
        if again {
            tracing::debug!(error = %e, "a definition write was not stored (its stream between leaders?); sending it again");
        }
        again
    };
    aegis_sdk::streams::write_again_while(until, pauses, again, write).await
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
