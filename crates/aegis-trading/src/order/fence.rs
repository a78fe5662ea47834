//! The fence of the order store: what keeps a deposed leader from writing.
//!
//! The SDK admits a leader-only request under a valid lease, but the
//! handler may then run for seconds (two dependency calls), and the process
//! may stall anywhere — a GC pause, a frozen VM, SIGSTOP. Meanwhile its
//! lease lapses and a standby takes over. Checking the lease again before a
//! write narrows that window but cannot close it: the stall can fall between
//! the check and the write. So the store itself refuses the write:
//!
//! - The key [`FENCE_KEY`] in the orders bucket names the
//!   epoch of the leader that owns the store. A leader takes it, by
//!   compare-and-set, before its first write (and at once when it becomes
//!   leader, in its recovery sweep); it never takes it from a newer epoch.
//! - Every order write is conditioned on the fence key's revision being the
//!   one this leader wrote (`Nats-Expected-Last-Subject-Sequence` with
//!   `Nats-Expected-Last-Subject-Sequence-Subject` naming the fence key).
//!   Once a newer leader has taken the fence, every write of the old one is
//!   refused by the stream, however late it arrives.
//! - Before each write the lease is checked too, with
//!   [`margin`](super::OrderOptions::lease) (the lease's safety margin), so a
//!   leader whose lease is about to lapse does not even try.
//!
//! Writes the old leader made before the new one took the fence stand: in
//! the bucket's order they came first, and the new leader sees and
//! continues them. Its index is fed by a watch, which may not have handed
//! them over yet when it takes the fence (the watch lags, or is being
//! opened again after its consumer was lost with a node), so it waits until
//! the watch has handed over the fence key's revision before it sweeps or
//! judges an order (`OrderStore::caught_up`).
//!
//! A revision means something only in one bucket: deleted and created
//! again, the bucket's revisions start over. So the fence is held together
//! with the bucket it was taken in, known by its stream's creation time
//! ([`bucket_created`]), and the index knows which bucket its watch
//! follows; a leader holding the fence of a bucket deleted since takes it
//! again in the new one.
//!
//! One condition per write: a JetStream write can expect one subject's
//! revision, so the order's own compare-and-set among this leader's
//! concurrent writers (a request and the recovery sweep) is done in the
//! process: one turn per order key at a time, with the current revision read
//! from the stream leader inside the turn (see `store.rs`).
//!
//! Claims (`client.*`) are not fenced: a claim only maps a client order id to
//! an order id, and a deposed leader's claim is harmless — the new leader
//! reads it and records the order under that id itself.

use std::{sync::OnceLock, time::Duration};

use aegis_sdk::{Connection, election::Leadership};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::info;

use super::store::{FENCE_KEY, StoreError, unavailable};
use crate::kv::{Bucket, Expect, WriteError};

/// When the bucket's stream was created, in nanoseconds since the Unix
/// epoch: which bucket this is. A bucket deleted and created again is
/// another one, whose revisions started over. Asked again after a short
/// wait within `conn`'s request timeout, as the bucket's other reads are:
/// a request that reaches the stream while it elects a leader can go
/// unanswered, and would otherwise hold the fence (and the orders behind
/// it) for the whole JetStream timeout.
pub(crate) async fn bucket_created(
    conn: &Connection,
    bucket: &Bucket,
) -> Result<i128, async_nats::Error> {
    let mut patience = aegis_sdk::streams::Patience::new(conn);
    while let Some(wait) = patience.next_wait() {
        if let Ok(info) = tokio::time::timeout(wait, bucket.kv.stream.get_info()).await {
            return Ok(info?.created.unix_timestamp_nanos());
        }
    }
    Err(format!(
        "no answer from stream {} within {:?}",
        bucket.kv.stream_name,
        conn.config().nats.request_timeout
    )
    .into())
}

/// The fence as a write is conditioned on it: the fence key's revision in
/// the bucket created at `bucket` (see [`bucket_created`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FenceAt {
    /// The fence key's revision.
    pub(crate) revision: u64,
    /// When the bucket it is a revision of was created.
    pub(crate) bucket: i128,
}

/// What the fence key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FenceRecord {
    /// The epoch of the leader that owns the store.
    pub(crate) epoch: u64,
    /// That leader's instance id (informational).
    pub(crate) instance_id: String,
    /// When it took the fence (informational).
    #[serde(with = "aegis_contracts::models::rfc3339")]
    pub(crate) taken_at: DateTime<Utc>,
}

/// The fence as this instance holds it: the epoch it took it for and the
/// fence key's revision its writes are conditioned on, in which bucket.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: u64,
    at: FenceAt,
}

/// This instance's side of the fence.
#[derive(Debug)]
pub(crate) struct Fence {
    /// The connection the bucket is asked on.
    conn: Connection,
    instance_id: String,
    /// The election's view and the lease margin; set once the service runs.
    leadership: OnceLock<(Leadership, Duration)>,
    /// One taker at a time, so concurrent first writes take the fence once.
    held: Mutex<Option<Held>>,
}

impl Fence {
    pub(crate) fn new(conn: &Connection, instance_id: &str) -> Self {
        Self {
            conn: conn.clone(),
            instance_id: instance_id.to_owned(),
            leadership: OnceLock::new(),
            held: Mutex::new(None),
        }
    }

    /// Starts checking writes against `leadership`, with `margin` of lease
    /// left required. Until then every write is refused.
    pub(crate) fn follow(&self, leadership: Leadership, margin: Duration) {
        let _ = self.leadership.set((leadership, margin));
    }

    /// Refuses unless this instance leads at `epoch` with the margin left.
    pub(crate) fn check_lease(&self, epoch: u64) -> Result<(), StoreError> {
        match self.leadership.get() {
            Some((leadership, margin)) if leadership.holds(epoch, *margin) => Ok(()),
            _ => Err(StoreError::Deposed),
        }
    }

    /// The fence key revision that writes at `epoch` are conditioned on,
    /// and the bucket it is in, taking the fence first when an older leader
    /// (or nobody) holds it.
    ///
    /// # Errors
    /// [`StoreError::Deposed`] when a newer epoch holds the fence;
    /// [`StoreError::Unavailable`] when the bucket does not answer.
    pub(crate) async fn revision(
        &self,
        bucket: &Bucket,
        epoch: u64,
    ) -> Result<FenceAt, StoreError> {
        let mut held = self.held.lock().await;
        match *held {
            Some(h) if h.epoch == epoch => return Ok(h.at),
            Some(h) if h.epoch > epoch => return Err(StoreError::Deposed),
            _ => {}
        }
        // A lost compare-and-set means another leader took it meanwhile:
        // read again and see whose it is now. The bucket is read before
        // and after: a fence read or taken in a bucket created again in
        // between is read again.
        for _ in 0..5 {
            self.check_lease(epoch)?;
            let created = bucket_created(&self.conn, bucket)
                .await
                .map_err(unavailable)?;
            let still = || async {
                bucket_created(&self.conn, bucket)
                    .await
                    .map(|now| now == created)
                    .map_err(unavailable)
            };
            let current = bucket.last_record(FENCE_KEY).await.map_err(unavailable)?;
            let (expected, owner) = match current {
                None => (0, None),
                Some((revision, value)) => (
                    revision,
                    value.and_then(|v| serde_json::from_slice::<FenceRecord>(&v).ok()),
                ),
            };
            if let Some(owner) = owner {
                let at = FenceAt {
                    revision: expected,
                    bucket: created,
                };
                if owner.epoch > epoch {
                    *held = Some(Held {
                        epoch: owner.epoch,
                        at,
                    });
                    return Err(StoreError::Deposed);
                }
                if owner.epoch == epoch {
                    // Taken by this leader before (a lost confirmation).
                    if !still().await? {
                        continue;
                    }
                    *held = Some(Held { epoch, at });
                    return Ok(at);
                }
            }
            let record = FenceRecord {
                epoch,
                instance_id: self.instance_id.clone(),
                taken_at: Utc::now(),
            };
            let bytes =
                serde_json::to_vec(&record).map_err(|e| StoreError::Unavailable(e.to_string()))?;
            match bucket
                .put_if(FENCE_KEY, bytes.into(), Expect::Revision(expected))
                .await
            {
                Ok(revision) => {
                    if !still().await? {
                        continue;
                    }
                    info!(epoch, revision, "took the order store's fence");
                    let at = FenceAt {
                        revision,
                        bucket: created,
                    };
                    *held = Some(Held { epoch, at });
                    return Ok(at);
                }
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Failed(e)) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "the fence keeps changing".to_owned(),
        ))
    }

    /// A write at `epoch` was refused by the fence — another leader took
    /// it — or the fence held is in a bucket deleted since. Forget it, so
    /// the next write reads whose it is.
    pub(crate) async fn moved(&self, epoch: u64) {
        let mut held = self.held.lock().await;
        if held.is_some_and(|h| h.epoch == epoch) {
            *held = None;
        }
    }
}
