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
//!   term of the leader that owns the store: its epoch, and the elections
//!   bucket it won it in (`term.rs`). A leader takes it, by
//!   compare-and-set, before its first write (and at once when it becomes
//!   leader, in its recovery sweep); it never takes it from a newer term.
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
//! An epoch is a revision of the `service_elections` bucket, which may be
//! deleted and created again too (`nats kv del service_elections`): its
//! epochs then start over from 1, far below the one the fence holds. So a
//! leader learns its term when it takes the fence — which elections
//! bucket is current, by its stream's creation time, and that the
//! bucket's election key names this instance at its epoch, read from the
//! stream's leader (`Fence::bind`) — and records it in the fence. A
//! fence of the same elections bucket goes by epoch. A fence of another
//! one (or of a record that names none, written before terms were) is
//! taken only with the term read after the fence was, and the lease
//! checked again: then its bucket, which existed when the fence was read
//! and is not current after, was deleted, and in the current one nobody
//! won an epoch since this leader's. So the first leader of an elections
//! bucket created again takes orders at once, and a deposed leader of a
//! bucket deleted since — whose lease may still look valid to itself for
//! a while, its renewals unanswered — finds the key names it no longer and
//! takes nothing. Creation times are never compared as older or newer
//! (wall clocks; see `term.rs`). The term read is kept until this
//! instance's role changes.
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

use std::{
    sync::{Mutex as StdMutex, OnceLock},
    time::Duration,
};

use aegis_contracts::subjects::ELECTIONS_BUCKET;
use aegis_sdk::{
    Connection,
    election::{Election, LeaderRecord, Leadership, Role},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, OnceCell, watch};
use tracing::info;

use super::{
    store::{FENCE_KEY, StoreError, unavailable},
    term::{Standing, Term, standing},
};
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
    /// When the elections bucket that epoch was won in was created (see
    /// [`Term`]); absent in records written before it was recorded.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::term::bucket_time"
    )]
    pub(crate) elections_created: Option<i128>,
    /// That leader's instance id (informational).
    pub(crate) instance_id: String,
    /// When it took the fence (informational).
    #[serde(with = "aegis_contracts::models::rfc3339")]
    pub(crate) taken_at: DateTime<Utc>,
}

impl FenceRecord {
    /// The term of the leader that owns the store.
    pub(crate) fn term(&self) -> Term {
        Term {
            elections: self.elections_created,
            epoch: self.epoch,
        }
    }
}

/// The fence as this instance last saw it: whose term holds it, and the
/// fence key's revision (in which bucket) that term's writes are
/// conditioned on.
#[derive(Debug, Clone, Copy)]
struct Held {
    owner: Term,
    at: FenceAt,
}

/// The election this instance's writes are checked against.
#[derive(Debug)]
struct Following {
    leadership: Leadership,
    /// The lease's safety margin a write must start with.
    margin: Duration,
    /// The election key in `service_elections`.
    key: String,
    /// Role changes: a term read is forgotten at each one, since the next
    /// leadership may have been won in an elections bucket created since,
    /// even at the same epoch.
    roles: StdMutex<watch::Receiver<Role>>,
}

/// What a leader does with the fence it read (see [`decide`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Take it: nobody, or an older term, holds it.
    Take,
    /// It is this leader's already (a lost confirmation).
    Own,
    /// A newer leader of the same elections bucket holds it.
    Deposed,
    /// Held by a term of another elections bucket, or of one not recorded:
    /// read this leader's term again, now, and decide again.
    Recheck,
}

/// What a leader at `mine` does with the fence whose record names `owner`
/// (`None`: nobody, or a record that does not read). `fresh`: `mine` was
/// read after the fence — its elections bucket current and its key naming
/// this instance at `mine.epoch` — so no term of another bucket can be
/// newer: such a bucket existed when the fence was read and is not current
/// after, so it was deleted, and in the current one nobody won an epoch
/// since this leader's. A record that names no bucket is judged the same
/// way rather than by its epoch, which may be of a bucket deleted since.
fn decide(owner: Option<Term>, mine: Term, fresh: bool) -> Decision {
    let Some(owner) = owner else {
        return Decision::Take;
    };
    if owner.same_bucket(mine) {
        return match standing(owner, mine) {
            Standing::Older => Decision::Take,
            Standing::Own => Decision::Own,
            Standing::Newer => Decision::Deposed,
        };
    }
    if fresh {
        Decision::Take
    } else {
        Decision::Recheck
    }
}

/// Whether the election key's last record, `(revision, value)` (`None`
/// as the value: deleted), names `instance_id` as the leader at `epoch`,
/// the epoch the record stands for as the SDK reads it
/// ([`LeaderRecord::epoch_at`]).
fn names(record: Option<(u64, Option<Bytes>)>, instance_id: &str, epoch: u64) -> bool {
    let Some((revision, Some(value))) = record else {
        return false;
    };
    serde_json::from_slice::<LeaderRecord>(&value)
        .is_ok_and(|leader| leader.instance_id == instance_id && leader.epoch_at(revision) == epoch)
}

/// This instance's side of the fence.
#[derive(Debug)]
pub(crate) struct Fence {
    /// The connection the buckets are asked on.
    conn: Connection,
    instance_id: String,
    /// The election; set once the service runs.
    following: OnceLock<Following>,
    /// One taker at a time, so concurrent first writes take the fence once.
    held: Mutex<Option<Held>>,
    /// This instance's term as last read (see [`bind`](Self::bind)); only
    /// read and written under `held`.
    bound: StdMutex<Option<Term>>,
    /// The `service_elections` bucket, opened at the first read; by name,
    /// so it reads whichever bucket of that name is there.
    elections: OnceCell<Bucket>,
}

impl Fence {
    pub(crate) fn new(conn: &Connection, instance_id: &str) -> Self {
        Self {
            conn: conn.clone(),
            instance_id: instance_id.to_owned(),
            following: OnceLock::new(),
            held: Mutex::new(None),
            bound: StdMutex::new(None),
            elections: OnceCell::new(),
        }
    }

    /// Starts checking writes against `election`, with `margin` of lease
    /// left required. Until then every write is refused.
    pub(crate) fn follow(&self, election: &Election, margin: Duration) {
        let _ = self.following.set(Following {
            leadership: election.leadership(),
            margin,
            key: election.key().to_owned(),
            roles: StdMutex::new(election.roles()),
        });
    }

    /// Refuses unless this instance leads at `epoch` with the margin left.
    pub(crate) fn check_lease(&self, epoch: u64) -> Result<(), StoreError> {
        match self.following.get() {
            Some(f) if f.leadership.holds(epoch, f.margin) => Ok(()),
            _ => Err(StoreError::Deposed),
        }
    }

    /// The fence key revision that writes at `epoch` are conditioned on,
    /// and the bucket it is in, taking the fence first when an older leader
    /// (or nobody) holds it.
    ///
    /// # Errors
    /// [`StoreError::Deposed`] when a newer term holds the fence, or this
    /// instance does not lead at `epoch` in the current elections bucket;
    /// [`StoreError::Unavailable`] when a bucket does not answer.
    pub(crate) async fn revision(
        &self,
        bucket: &Bucket,
        epoch: u64,
    ) -> Result<FenceAt, StoreError> {
        self.take(bucket, epoch).await.map(|held| held.at)
    }

    /// This instance's term at `epoch`, as of the fence it holds, taking
    /// the fence first if it does not: the term its writes carry and
    /// records are judged against ([`standing`]).
    ///
    /// # Errors
    /// As [`revision`](Self::revision).
    pub(crate) async fn term(&self, bucket: &Bucket, epoch: u64) -> Result<Term, StoreError> {
        self.take(bucket, epoch).await.map(|held| held.owner)
    }

    /// The fence as this instance holds it at `epoch`, taken first when an
    /// older term (or nobody) holds it.
    async fn take(&self, bucket: &Bucket, epoch: u64) -> Result<Held, StoreError> {
        let mut held = self.held.lock().await;
        if let (Some(h), Some(mine)) = (*held, self.bound(epoch)) {
            if h.owner == mine {
                return Ok(h);
            }
            if h.owner.same_bucket(mine) && standing(h.owner, mine) == Standing::Newer {
                return Err(StoreError::Deposed);
            }
        }
        // A lost compare-and-set means another leader took it meanwhile:
        // read again and see whose it is now. The bucket is read before
        // and after: a fence read or taken in a bucket created again in
        // between is read again.
        'read: for _ in 0..5 {
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
                    value
                        .and_then(|v| serde_json::from_slice::<FenceRecord>(&v).ok())
                        .map(|record| record.term()),
                ),
            };
            let at = FenceAt {
                revision: expected,
                bucket: created,
            };
            // This leader's term, read after the fence unless known.
            let (mut mine, mut fresh) = match self.bound(epoch) {
                Some(mine) => (mine, false),
                None => (self.bind(epoch).await?, true),
            };
            // At most twice round: a term read after the fence is fresh,
            // and `decide` never asks for a fresh one again.
            loop {
                match decide(owner, mine, fresh) {
                    Decision::Take => break,
                    Decision::Recheck => (mine, fresh) = (self.bind(epoch).await?, true),
                    Decision::Own => {
                        if !still().await? {
                            continue 'read;
                        }
                        let h = Held { owner: mine, at };
                        *held = Some(h);
                        return Ok(h);
                    }
                    Decision::Deposed => {
                        if let Some(owner) = owner {
                            *held = Some(Held { owner, at });
                        }
                        return Err(StoreError::Deposed);
                    }
                }
            }
            // The reads took time, the term's the longest: a fence (of
            // another elections bucket, say) is taken only by a leader
            // whose lease still holds.
            self.check_lease(epoch)?;
            let record = FenceRecord {
                epoch,
                elections_created: mine.elections,
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
                    match owner {
                        Some(owner) if !owner.same_bucket(mine) => info!(
                            epoch,
                            revision,
                            from_epoch = owner.epoch,
                            "took the order store's fence from a leader of an elections bucket \
                             deleted since (or one that did not record it)"
                        ),
                        _ => info!(epoch, revision, "took the order store's fence"),
                    }
                    let h = Held {
                        owner: mine,
                        at: FenceAt {
                            revision,
                            bucket: created,
                        },
                    };
                    *held = Some(h);
                    return Ok(h);
                }
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Full) => return Err(StoreError::Full),
                Err(WriteError::Failed(e)) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "the fence keeps changing".to_owned(),
        ))
    }

    /// This instance's term at `epoch` as last read, unless its role
    /// changed since (then it is forgotten: the next leadership may be in
    /// an elections bucket created since, even at the same epoch). Called
    /// under `held`, as [`bind`](Self::bind) is.
    fn bound(&self, epoch: u64) -> Option<Term> {
        let mut bound = self.bound.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(following) = self.following.get() {
            let mut roles = following.roles.lock().unwrap_or_else(|e| e.into_inner());
            if roles.has_changed().unwrap_or(false) {
                roles.borrow_and_update();
                *bound = None;
            }
        }
        bound.filter(|term| term.epoch == epoch)
    }

    /// Reads this instance's term at `epoch`: which elections bucket is
    /// current, and that its election key names this instance at `epoch`
    /// — read from the stream's leader, with the bucket asked before and
    /// after, so the epoch is known to be that bucket's. The SDK's
    /// election does not say which bucket it won in, and the bucket may
    /// have been created again since (the lease of a leader whose renewals
    /// go unanswered is ridden out for a while); labelled with the new
    /// bucket, the old epoch would pass for a newer term than its new
    /// leader's. Called under `held`.
    ///
    /// # Errors
    /// [`StoreError::Deposed`] when the key names another leader or term;
    /// [`StoreError::Unavailable`] when the bucket does not answer.
    async fn bind(&self, epoch: u64) -> Result<Term, StoreError> {
        let Some(following) = self.following.get() else {
            return Err(StoreError::Deposed);
        };
        let elections = self
            .elections
            .get_or_try_init(|| async {
                let kv = self
                    .conn
                    .jetstream()
                    .get_key_value(ELECTIONS_BUCKET)
                    .await
                    .map_err(unavailable)?;
                Ok::<_, StoreError>(Bucket::new(&self.conn, kv))
            })
            .await?;
        for _ in 0..3 {
            let before = bucket_created(&self.conn, elections)
                .await
                .map_err(unavailable)?;
            let record = elections
                .last_record(&following.key)
                .await
                .map_err(unavailable)?;
            let after = bucket_created(&self.conn, elections)
                .await
                .map_err(unavailable)?;
            if after != before {
                continue;
            }
            if !names(record, &self.instance_id, epoch) {
                return Err(StoreError::Deposed);
            }
            let term = Term {
                elections: Some(before),
                epoch,
            };
            *self.bound.lock().unwrap_or_else(|e| e.into_inner()) = Some(term);
            return Ok(term);
        }
        Err(StoreError::Unavailable(
            "the elections bucket keeps being created again".to_owned(),
        ))
    }

    /// A write at `epoch` was refused by the fence — another leader took
    /// it — or the fence held is in a bucket deleted since. Forget it, so
    /// the next write reads whose it is.
    pub(crate) async fn moved(&self, epoch: u64) {
        let mut held = self.held.lock().await;
        if held.is_some_and(|h| h.owner.epoch == epoch) {
            *held = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::trading::{ORDER_GROUP, ORDER_SERVICE};
    use aegis_sdk::{AegisConfig, election::LeaseConfig};
    use aegis_testkit::NatsServer;

    use super::*;
    use crate::order::store::{ORDERS_BUCKET, OrderStore};

    /// An hour, in the nanoseconds buckets are told apart by.
    const HOUR: i128 = 3_600_000_000_000;

    fn term(elections: Option<i128>, epoch: u64) -> Term {
        Term { elections, epoch }
    }

    /// In one elections bucket the fence goes by epoch, as it did: a
    /// deposed leader never takes it from a newer one, and its own is
    /// its own.
    #[test]
    fn in_one_elections_bucket_the_fence_goes_by_epoch() {
        let mine = term(Some(9 * HOUR), 40);
        for fresh in [false, true] {
            let decided = |owner| decide(Some(term(Some(9 * HOUR), owner)), mine, fresh);
            assert_eq!(decided(39), Decision::Take);
            assert_eq!(decided(40), Decision::Own);
            assert_eq!(decided(41), Decision::Deposed);
            assert_eq!(decided(u64::MAX), Decision::Deposed);
        }
        assert_eq!(decide(None, mine, false), Decision::Take, "nobody's");
    }

    /// The defect: after the elections bucket was created again, the
    /// fence of the old bucket's leader, at a far higher epoch, refused
    /// the new leader for good. A fence of another bucket, or of none
    /// recorded, is taken once this leader's term is read again after it
    /// — whatever the epochs — and never on the strength of a term read
    /// before it, which may be of a bucket deleted since.
    #[test]
    fn a_fence_of_another_elections_bucket_is_taken_once_the_term_is_read_after_it() {
        let mine = term(Some(9 * HOUR), 3);
        for owner in [
            term(Some(5 * HOUR), 250),
            term(Some(12 * HOUR), 250),
            term(Some(5 * HOUR), 1),
            term(None, 250),
            term(None, 3),
            term(None, 1),
        ] {
            assert_eq!(
                decide(Some(owner), mine, false),
                Decision::Recheck,
                "{owner:?}"
            );
            assert_eq!(decide(Some(owner), mine, true), Decision::Take, "{owner:?}");
        }
    }

    /// The fence record of a version before terms still reads, as a term
    /// of no known bucket; the record now carries the bucket.
    #[test]
    fn fence_records_without_the_elections_bucket_still_read() {
        let old: FenceRecord = serde_json::from_str(
            r#"{"epoch":250,"instance_id":"order-1","taken_at":"2026-01-02T03:04:05.678Z"}"#,
        )
        .unwrap();
        assert_eq!(old.term(), term(None, 250));
        let new = FenceRecord {
            elections_created: Some(9 * HOUR),
            ..old
        };
        let json = serde_json::to_string(&new).unwrap();
        assert!(
            json.contains(r#""elections_created":"1970-01-01T09:00:00.000000000Z""#),
            "{json}"
        );
        let read: FenceRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(read.term(), term(Some(9 * HOUR), 250));
    }

    /// The election key names this instance at its epoch: the record's
    /// epoch once renewed, the revision in a takeover's first write.
    #[test]
    fn the_election_key_names_the_leader_at_its_epoch() {
        let record = |instance: &str, epoch: u64| -> Option<Bytes> {
            Some(
                serde_json::to_vec(&LeaderRecord {
                    instance_id: instance.into(),
                    epoch,
                    lease_ms: 400,
                    renewed_at: "2026-01-02T03:04:05.678Z".into(),
                })
                .unwrap()
                .into(),
            )
        };
        assert!(names(Some((7, record("order-2", 0))), "order-2", 7));
        assert!(names(Some((9, record("order-2", 7))), "order-2", 7));
        assert!(!names(Some((9, record("order-2", 0))), "order-2", 7));
        assert!(!names(Some((9, record("order-1", 7))), "order-2", 7));
        assert!(!names(Some((12, record("order-2", 11))), "order-2", 7));
        assert!(!names(Some((9, None)), "order-2", 7), "deleted");
        assert!(!names(None, "order-2", 7), "never written");
        assert!(!names(Some((7, Some(Bytes::from("junk")))), "order-2", 7));
    }

    /// Against real buckets and a real election: a fence of the current
    /// elections bucket at a newer epoch is never taken; one of another
    /// bucket, or of none recorded, at a far higher epoch is taken, the
    /// election key naming this leader at its epoch.
    #[tokio::test]
    async fn the_fence_is_taken_from_another_elections_bucket_never_from_a_newer_term() {
        let server = NatsServer::start().expect("start nats-server");
        let mut config = AegisConfig::with_servers(server.url());
        config.nats.request_timeout = Duration::from_secs(5);
        let conn = Connection::connect(config).await.expect("connect");
        let store = OrderStore::open(
            &conn,
            "order-test",
            16,
            crate::order::store::Keep::FOR_TESTS,
        )
        .await
        .unwrap();
        let election = Election::start(
            &conn,
            ORDER_SERVICE,
            ORDER_GROUP,
            "order-test",
            LeaseConfig::default(),
        )
        .await
        .unwrap();
        let mut roles = election.roles();
        let epoch = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Role::Leader { epoch } = *roles.borrow_and_update() {
                    return epoch;
                }
                roles.changed().await.unwrap();
            }
        })
        .await
        .expect("the election is won");
        store.fence.follow(&election, Duration::from_millis(50));

        let mine = store.term(epoch).await.unwrap();
        let elections = conn
            .jetstream()
            .get_key_value(ELECTIONS_BUCKET)
            .await
            .unwrap();
        let created = elections
            .stream
            .get_info()
            .await
            .unwrap()
            .created
            .unix_timestamp_nanos();
        assert_eq!(mine, term(Some(created), epoch));

        let orders = conn.jetstream().get_key_value(ORDERS_BUCKET).await.unwrap();
        let fence = || async {
            let entry = orders.entry(FENCE_KEY).await.unwrap().unwrap();
            serde_json::from_slice::<FenceRecord>(&entry.value).unwrap()
        };
        let taken_by_another = |elections_created| {
            let record = FenceRecord {
                epoch: epoch + 100,
                elections_created,
                instance_id: "order-elsewhere".into(),
                taken_at: Utc::now(),
            };
            let orders = orders.clone();
            async move {
                let bytes = serde_json::to_vec(&record).unwrap();
                orders.put(FENCE_KEY, bytes.into()).await.unwrap();
            }
        };
        for other in [Some(created - HOUR), Some(created + HOUR), None] {
            taken_by_another(other).await;
            // As when a write was refused: whose is it now?
            store.fence.moved(epoch).await;
            assert_eq!(store.term(epoch).await.unwrap(), mine, "{other:?}");
            assert_eq!(fence().await.term(), mine, "{other:?}");
        }
        taken_by_another(Some(created)).await;
        store.fence.moved(epoch).await;
        assert!(
            matches!(store.term(epoch).await, Err(StoreError::Deposed)),
            "taken from a newer leader of the current elections bucket"
        );
        assert_eq!(fence().await.term(), term(Some(created), epoch + 100));
        election.resign().await;
    }
}
