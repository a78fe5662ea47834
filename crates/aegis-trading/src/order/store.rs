//! Orders in the JetStream KV bucket [`ORDERS_BUCKET`], so that whichever
//! instance leads next continues where the last one stopped.
//!
//! Two kinds of keys:
//! - `client.{client_order_id}` → the order id. Written with an atomic
//!   `create`, so of any number of attempts with one client order id —
//!   retries, duplicates racing on one leader, a new leader finishing a
//!   crashed one's request — exactly one assigns the id; the others read it.
//! - `order.{order_id}` → the [`Order`] JSON. Created once, then changed
//!   only by compare-and-set on the revision read, so two writers can never
//!   both decide an order: the second one's write fails and it re-reads.
//!   (Among one leader's writers the comparison is made in the process,
//!   because the write's one server-side condition is the fence below.)
//!
//! Settled orders expire: the write that settles an order (decided, its
//! outcome announced) asks the server to remove it `keep_settled` later
//! (`Nats-TTL`), and a claim expires `keep_settled` plus `expire_after`
//! after it was made, by which time its order has settled. The server
//! leaves a marker where each was, which the index's watch takes as the
//! order gone. So a bounded bucket holds the orders of the last
//! `keep_settled` instead of filling for good, and a client order id is
//! idempotent for that long. A pending or unannounced order never
//! expires: the sweep must find it.
//! - [`FENCE_KEY`] → the term of the leader that owns the store. Every
//!   order write is conditioned on it, so a deposed leader cannot write
//!   once its successor has taken it (`fence.rs` tells how and why).
//!
//! Lookups of single orders go to the bucket's stream leader
//! (`Bucket::read_latest` in `kv.rs`), never to a replica that may
//! not have applied a write yet: the create flow reads back claims and
//! orders written a moment ago, and a caller reads the order it was just
//! answered. Listings (and a new leader's search for unfinished orders) are answered
//! from an in-memory index fed by one watch on the bucket, plus this
//! instance's own writes so a caller reads what it just wrote — never by
//! listing keys per request. The index is bounded (`index.rs`): the newest
//! orders for listings, and every unsettled one for the sweep. A new
//! leader sweeps, and judges orders, only once the watch has handed over
//! the revision of the fence it took, so the index holds everything its
//! predecessors wrote (`OrderStore::caught_up`).
//!
//! The index knows which bucket it follows, by the creation time of the
//! bucket's stream: when the bucket is deleted and created again (its
//! revisions start over), the watch, opened again on the new one, empties
//! the index and loads it anew, and a fence taken in the old bucket is not
//! taken for one in the new.
//!
//! Why one module of over 500 lines: it is one type, `OrderStore`, whose
//! reads, writes, fence and follow all go through the same bucket handle,
//! index and revision bookkeeping; what stands alone is in `index.rs` (the
//! in-memory index) and `room.rs` (the health check's room left).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{Connection, feed::Feed, kv::removal_of, rpc::WireError};
use async_nats::jetstream::{Message, consumer::DeliverPolicy};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::{
    fence::{Fence, FenceAt, bucket_created},
    index::Index,
    model::{ListOrders, Order, OrderList},
    term::Term,
};
use crate::{
    TradingError,
    kv::{Bucket, CreateError, Expect, WriteError},
};

/// The KV bucket holding orders and client order ids.
pub const ORDERS_BUCKET: &str = "orders";

/// The key in [`ORDERS_BUCKET`] that names the term of the leader owning
/// the store: JSON `{"epoch", "elections_created", "instance_id",
/// "taken_at"}`, `elections_created` being when the `service_elections`
/// bucket the epoch was won in was created (RFC 3339 UTC to the
/// nanosecond; absent when written by a version before it). A new leader
/// takes it before its first write; writes of older terms are refused from
/// then on.
pub const FENCE_KEY: &str = "fence";

/// How many order keys can be written concurrently by this instance; writes
/// to keys in one turn wait for each other (each takes two round trips).
const TURNS: usize = 64;

/// Why a store operation did not happen.
#[derive(Debug)]
pub(crate) enum StoreError {
    /// `create` found the key already there.
    Exists,
    /// The record changed since it was read (compare-and-set lost).
    Changed,
    /// This instance does not (or no longer) lead at the writer's epoch:
    /// its lease lapsed or a newer leader took the fence.
    Deposed,
    /// The server did not confirm the operation; it may or may not have
    /// happened, so the caller retries the whole (idempotent) request.
    Unavailable(String),
    /// The bucket holds its `max_bytes`: nothing was written.
    Full,
}

impl From<StoreError> for WireError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(detail) => {
                warn!(error = %detail, "order store unavailable");
                WireError::service_unavailable("the order store is unavailable; retry")
            }
            StoreError::Full => {
                warn!(
                    bucket = ORDERS_BUCKET,
                    "the order store is full: orders are refused until settled ones expire \
                     (keep_settled) or an operator raises the bucket's max_bytes"
                );
                WireError::service_unavailable(
                    "the order store is full (bucket orders holds its max_bytes): orders are \
                     taken again as settled ones expire, or once an operator raises its bound",
                )
            }
            StoreError::Deposed => {
                WireError::not_active("this instance no longer leads; retry on the active instance")
            }
            StoreError::Exists | StoreError::Changed => WireError::new(
                aegis_sdk::rpc::ErrorCode::Conflict,
                "the order changed concurrently; retry",
            ),
        }
    }
}

/// `e` as the store's unavailability; a write no stream took says it most
/// likely has no leader right now (read alone, the client's "no stream
/// found for given subject" is a missing stream).
pub(super) fn unavailable(e: impl Into<async_nats::Error>) -> StoreError {
    StoreError::Unavailable(aegis_sdk::streams::NoStreamTookIt::explained(e.into()).to_string())
}

/// How long the store keeps what no longer needs keeping.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Keep {
    /// A settled order, from the write that settled it.
    pub(crate) settled: Duration,
    /// How long a pending order may wait for its caller's retry before the
    /// sweep expires it (`expire_after`): a claim outlives its order's
    /// settling by at least that.
    pub(crate) pending: Duration,
}

impl Keep {
    /// An hour for settled orders, 30 s for pending ones.
    #[cfg(test)]
    pub(crate) const FOR_TESTS: Keep = Keep {
        settled: Duration::from_secs(3600),
        pending: Duration::from_secs(30),
    };

    /// How long a claim is kept from when it was made.
    fn claims(&self) -> Duration {
        self.settled.saturating_add(self.pending)
    }
}

/// Which bucket the index follows, and how far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Followed {
    /// When the bucket's stream was created (`fence::bucket_created`);
    /// `None` until the watch first opened.
    bucket: Option<i128>,
    /// The highest revision of that bucket the watch has handed over (0:
    /// none).
    revision: u64,
}

/// The order store of one instance: the bucket and the listing index.
#[derive(Debug)]
pub(crate) struct OrderStore {
    bucket: Bucket,
    /// The connection the watch reads on.
    conn: Connection,
    /// Refuses writes of a deposed leader.
    pub(super) fence: Fence,
    /// Per-order turns: this instance's writers of one order (a request and
    /// the recovery sweep) compare and write one at a time.
    turns: Box<[tokio::sync::Mutex<()>]>,
    /// The newest orders and the unsettled ones (`index.rs`).
    index: Mutex<Index>,
    /// How long a settled order, and a claim, is kept.
    keep: Keep,
    /// Whether the index has caught up with the bucket.
    loaded: watch::Sender<bool>,
    /// The bucket the watch follows and the highest revision of it the
    /// watch has handed over. The watch covers the fence key too, and hands
    /// over in revision order, so once this reaches the fence revision a
    /// leader holds in the same bucket, the index holds every order written
    /// before that leader took the fence (see
    /// [`caught_up`](Self::caught_up)).
    followed: watch::Sender<Followed>,
    /// Held across each fenced write. Every order write expects the fence
    /// key's revision, and a clustered stream's leader refuses (`10164`) a
    /// write whose expectation names a subject with another such write still
    /// being replicated — so concurrent order writes on R3 refused each
    /// other and the leader answered NOT_ACTIVE to its own clients. One at a
    /// time, a refusal means what it says: another leader moved the fence.
    /// The cost is one replication round trip per write (about 1–2 ms on
    /// one host), which bounds this instance's write rate, not its reads.
    fenced_writes: tokio::sync::Mutex<()>,
}

impl OrderStore {
    /// The bucket's stream, for its info (`room.rs`).
    pub(super) fn stream(&self) -> async_nats::jetstream::stream::Stream {
        self.bucket.kv.stream.clone()
    }

    /// Opens (or creates) the bucket for instance `instance_id`, listing at
    /// most the newest `index_capacity` orders.
    pub(crate) async fn open(
        conn: &Connection,
        instance_id: &str,
        index_capacity: usize,
        keep: Keep,
    ) -> Result<Arc<Self>, TradingError> {
        let kv = crate::kv::open_bucket(conn, ORDERS_BUCKET).await?;
        let bucket = Bucket::new(conn, kv);
        if !bucket.expiring() {
            warn!(
                bucket = ORDERS_BUCKET,
                "settled orders do not expire: the bucket was made before per-value expiry; \
                 run `aegis init --showcase` as the operator to turn it on, or the bucket fills \
                 and refuses orders"
            );
        }
        Ok(Arc::new(Self {
            bucket,
            keep,
            conn: conn.clone(),
            fence: Fence::new(conn, instance_id),
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
            index: Mutex::new(Index::new(index_capacity)),
            loaded: watch::Sender::new(false),
            followed: watch::Sender::new(Followed::default()),
            fenced_writes: tokio::sync::Mutex::new(()),
        }))
    }

    /// Starts feeding the index from the bucket until `cancel`.
    ///
    /// The watch covers every key, not just `order.*`: then a non-empty
    /// bucket always replays at least one entry, and the first entry with
    /// nothing after it (`delta == 0`) marks the index as
    /// [loaded](Self::loaded) — an empty bucket is loaded at once. Opened
    /// again (it broke), it replays the latest entry of every key; on a
    /// bucket created since, it first empties the index
    /// ([`open_watch`](Self::open_watch)).
    pub(crate) async fn follow(
        self: &Arc<Self>,
        cancel: CancellationToken,
    ) -> Result<JoinHandle<()>, TradingError> {
        let status = self
            .bucket
            .kv
            .status()
            .await
            .map_err(|e| TradingError::Store {
                bucket: ORDERS_BUCKET.to_owned(),
                source: e.into(),
            })?;
        if status.values() == 0 {
            self.loaded.send_replace(true);
        }
        let (opener, taker) = (self.clone(), self.clone());
        Ok(tokio::spawn(async move {
            aegis_sdk::kv::reopening(
                &format!("KV bucket {ORDERS_BUCKET}"),
                (),
                cancel,
                |()| {
                    let store = opener.clone();
                    async move { store.open_watch().await }
                },
                |(), message| taker.take(&message),
            )
            .await;
        }))
    }

    /// Opens the watch on the bucket as it is now: the latest entry of
    /// every key, then every change. When the bucket is not the one the
    /// index followed (deleted and created again: its revisions started
    /// over), the index is emptied and loads anew. The bucket is read
    /// before and after the watch's consumer is made, so the watch is
    /// known to be on the bucket it is labelled with: a bucket deleted
    /// after that ends the watch, which is then opened again.
    async fn open_watch(&self) -> Result<Feed, async_nats::Error> {
        let before = bucket_created(&self.conn, &self.bucket).await?;
        let subjects = format!("{}>", self.bucket.kv.prefix);
        let feed = aegis_sdk::feed::feed(
            &self.conn,
            &self.bucket.kv.stream,
            subjects,
            DeliverPolicy::LastPerSubject,
        )
        .await;
        let mut patience = aegis_sdk::streams::Patience::new(&self.conn);
        let info = loop {
            let Some(wait) = patience.next_wait() else {
                return Err("no answer from the orders bucket's stream".into());
            };
            if let Ok(info) = tokio::time::timeout(wait, self.bucket.kv.stream.get_info()).await {
                break info?;
            }
        };
        let created = info.created.unix_timestamp_nanos();
        if created != before {
            return Err("the orders bucket was created again while its watch opened".into());
        }
        let previous = self.followed.borrow().bucket;
        if previous != Some(created) {
            if previous.is_some() {
                warn!(
                    bucket = ORDERS_BUCKET,
                    "the orders bucket was created again: indexing it from the start"
                );
                self.loaded.send_replace(false);
                self.index.lock().unwrap_or_else(|e| e.into_inner()).clear();
            }
            self.followed.send_replace(Followed {
                bucket: Some(created),
                revision: 0,
            });
        }
        if info.state.messages == 0 {
            self.loaded.send_replace(true);
        }
        Ok(feed)
    }

    /// Takes one entry the watch handed over into the index.
    fn take(&self, message: &Message) {
        let Ok(info) = message.info() else {
            warn!(subject = %message.subject, "skipping a message that is not a KV entry");
            return;
        };
        let (revision, pending) = (info.stream_sequence, info.pending);
        let key = message
            .subject
            .strip_prefix(self.bucket.kv.prefix.as_str())
            .unwrap_or_default();
        let removed = message.headers.as_ref().and_then(removal_of).is_some();
        if let Some(order_id) = key.strip_prefix("order.") {
            if removed {
                // Expired (or deleted by hand): gone from the store, so
                // from listings and the sweep too.
                self.index
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(order_id, revision);
            } else {
                match serde_json::from_slice::<Order>(&message.payload) {
                    Ok(order) => self.remember(revision, order),
                    Err(e) => {
                        warn!(key, error = %aegis_sdk::startup::Causes(&e), "ignoring an order that does not decode")
                    }
                }
            }
        }
        if pending == 0 {
            self.loaded.send_replace(true);
        }
        // A watch opened again replays from older revisions: keep the
        // highest, which it handed over in order before.
        self.followed.send_if_modified(|followed| {
            let higher = revision > followed.revision;
            if higher {
                followed.revision = revision;
            }
            higher
        });
    }

    /// Waits until the index holds every order stored when
    /// [`follow`](Self::follow) started.
    pub(crate) async fn loaded(&self) {
        let mut loaded = self.loaded.subscribe();
        // The sender lives as long as the store, so this cannot fail.
        let _ = loaded.wait_for(|done| *done).await;
    }

    /// Waits until the index holds every order written before this
    /// instance took the fence for `epoch` (taking it first if it has not):
    /// the watch, on the bucket the fence is in, has handed over the fence
    /// key's revision. Until then an older leader's last writes — a fill
    /// decided but not announced, say — may be stored but not indexed yet:
    /// the watch may lag, or be opened again after its consumer was lost
    /// with a NATS node or its bucket was created again. When the watch
    /// follows another bucket than the fence's, the bucket is asked which
    /// one is current (see [`reached`](Self::reached)): the fence's, and
    /// the watch is waited for; another, and the fence is taken again in
    /// it. Costs nothing once the watch has passed the fence: no request
    /// is made.
    ///
    /// # Errors
    /// [`StoreError::Deposed`] when a newer leader holds the fence;
    /// [`StoreError::Unavailable`] when the fence cannot be read or taken.
    pub(crate) async fn caught_up(&self, epoch: u64) -> Result<(), StoreError> {
        for _ in 0..3 {
            let fence = self.fence.revision(&self.bucket, epoch).await?;
            match self.reached(fence).await? {
                Reached::Fence => return Ok(()),
                Reached::Moved => self.fence.moved(epoch).await,
            }
        }
        Err(StoreError::Unavailable(
            "the orders bucket keeps being created again".to_owned(),
        ))
    }

    /// Waits until the watch has handed over `fence`, or until `fence` is
    /// known to be in a bucket deleted since. While the watch follows the
    /// fence's bucket, no request is made; when it follows another, the
    /// bucket is asked which one is current (once for each bucket the
    /// watch moves to), since creation times are wall-clock and say
    /// nothing of which bucket came first.
    async fn reached(&self, fence: FenceAt) -> Result<Reached, StoreError> {
        let mut followed = self.followed.subscribe();
        // The bucket the watch followed when the current one was asked,
        // and the answer.
        let mut asked: Option<(i128, i128)> = None;
        loop {
            let now = *followed.borrow_and_update();
            let current = asked
                .filter(|(watched, _)| Some(*watched) == now.bucket)
                .map(|(_, current)| current);
            match standing(now, fence, current) {
                Standing::CaughtUp => return Ok(Reached::Fence),
                Standing::Moved => return Ok(Reached::Moved),
                Standing::Ask => {
                    let current = bucket_created(&self.conn, &self.bucket)
                        .await
                        .map_err(unavailable)?;
                    if let Some(watched) = now.bucket {
                        asked = Some((watched, current));
                    }
                }
                Standing::Wait => {
                    // The sender lives as long as the store.
                    followed.changed().await.map_err(unavailable)?;
                }
            }
        }
    }

    /// Ids of the orders the leader whose term is `leader` should see to,
    /// oldest first: decided ones not yet announced, last written by an
    /// older term (`term.rs`) or
    /// by itself before `stale_before` (their request gave up), and pending
    /// ones created before `expire_before`.
    pub(crate) fn unfinished(
        &self,
        leader: Term,
        stale_before: DateTime<Utc>,
        expire_before: DateTime<Utc>,
    ) -> Vec<String> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unfinished(leader, stale_before, expire_before)
    }

    /// Ids of the filled orders of `symbol` whose fill is not announced yet
    /// (its publish failed, or a deposed leader stored the decision and
    /// stopped), oldest first.
    pub(crate) fn unannounced_fills(&self, symbol: &str) -> Vec<String> {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unannounced_fills(symbol)
    }

    /// Whether `order_id` is known to have been written since `revision`:
    /// by another writer of this instance (a duplicate request, the sweep),
    /// whose writes the index takes as they land, or by an older leader,
    /// once the index has caught up with the fence. Answered from memory;
    /// `false` when the index does not hold the order.
    pub(crate) fn written_since(&self, order_id: &str, revision: u64) -> bool {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .revision(order_id)
            .is_some_and(|known| known > revision)
    }

    /// The order id for `client_order_id`: `candidate` if this call is the
    /// first to claim it, otherwise the id the first claim stored.
    pub(crate) async fn claim(
        &self,
        client_order_id: &str,
        candidate: &str,
    ) -> Result<String, StoreError> {
        let key = format!("client.{client_order_id}");
        // The second round covers a claim that expired, or was purged by
        // hand, between our create and our read.
        for _ in 0..2 {
            let claim = candidate.to_owned().into();
            match self
                .bucket
                .create_expiring(&key, claim, Some(self.keep.claims()))
                .await
            {
                Ok(_) => return Ok(candidate.to_owned()),
                Err(CreateError::Exists) => {
                    let claimed = self.bucket.read_latest(&key).await.map_err(unavailable)?;
                    if let Some((_, id)) = claimed {
                        return String::from_utf8(id.to_vec()).map_err(unavailable);
                    }
                }
                Err(CreateError::Full) => return Err(StoreError::Full),
                Err(CreateError::Failed(e)) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(format!(
            "cannot read the claim {key}"
        )))
    }

    /// Gives an expiry to what was written before the bucket took values
    /// that expire (the bucket of a version that kept every order, turned
    /// on in place by `aegis init`): each settled order and each claim
    /// written without one, and only if it is still its key's last
    /// revision, is removed (a delete marker that expires in turn) when
    /// its time is up, or written again, unchanged, expiring what is left
    /// of it. Without it such a bucket keeps them for good, and one full
    /// before the upgrade stays full: a full bucket takes the small
    /// markers in place of values (a key holds one message), which makes
    /// room, but not a value written again, larger by its headers. Reads
    /// every key's last message once, on a feed, while `go_on` holds;
    /// returns how many it removed or wrote again, or an error when one
    /// could not be (the next attempt goes through the bucket again). A
    /// bucket that does not take expiring values is left.
    pub(crate) async fn expire_written_before(
        &self,
        go_on: impl Fn() -> bool,
    ) -> Result<usize, async_nats::Error> {
        if !self.bucket.expiring() {
            return Ok(0);
        }
        let info = self.bucket.kv.stream.get_info().await?;
        if info.state.messages == 0 {
            return Ok(0);
        }
        let subjects = format!("{}>", self.bucket.kv.prefix);
        let mut feed = aegis_sdk::feed::feed(
            &self.conn,
            &self.bucket.kv.stream,
            subjects,
            DeliverPolicy::LastPerSubject,
        )
        .await;
        let (mut written, mut full) = (0, 0);
        while go_on() {
            let Some(message) = feed.next().await else {
                break;
            };
            let message = message?;
            let info = message.info()?;
            let (revision, pending) = (info.stream_sequence, info.pending);
            let published = DateTime::from_timestamp_nanos(
                i64::try_from(info.published.unix_timestamp_nanos()).unwrap_or(i64::MAX),
            );
            match self.unexpiring(&message, published) {
                None => {}
                Some((key, None)) => {
                    let removed = aegis_sdk::kv::remove_with_ttl(
                        self.conn.jetstream(),
                        &self.bucket.kv,
                        key,
                        aegis_sdk::kv::Marker::Delete,
                        Some(revision),
                        Some(crate::kv::MARKER_TTL),
                    )
                    .await;
                    match removed {
                        Ok(()) => written += 1,
                        // Written since: by a flow that gives it its expiry.
                        Err(e) if e.kind() == async_nats::jetstream::kv::DeleteErrorKind::WrongLastRevision => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Some((key, Some(ttl))) => {
                    let value = message.payload.clone();
                    match self
                        .bucket
                        .put_if_expiring(key, value, Expect::Revision(revision), Some(ttl))
                        .await
                    {
                        Ok(_) => written += 1,
                        Err(WriteError::Conflict) => {}
                        // Left for the next attempt, by when its time may be
                        // up, and the removals made room.
                        Err(WriteError::Full) => full += 1,
                        Err(WriteError::Failed(e)) => return Err(e),
                    }
                }
            }
            if pending == 0 {
                break;
            }
        }
        if full > 0 {
            return Err(format!(
                "{full} could not be written again in a full bucket ({written} done)"
            )
            .into());
        }
        Ok(written)
    }

    /// The key of `message` and the expiry to give it (`None`: its time is
    /// up), when it is a settled order or a claim written without one.
    fn unexpiring<'m>(
        &self,
        message: &'m Message,
        published: DateTime<Utc>,
    ) -> Option<(&'m str, Option<Duration>)> {
        let headers = message.headers.as_ref();
        if headers.is_some_and(|h| {
            h.get(async_nats::header::NATS_MESSAGE_TTL).is_some() || removal_of(h).is_some()
        }) {
            return None;
        }
        let key = message
            .subject
            .strip_prefix(self.bucket.kv.prefix.as_str())?;
        let (since, keep) = if key.starts_with("order.") {
            let order: Order = serde_json::from_slice(&message.payload).ok()?;
            if !order.is_settled() {
                return None;
            }
            (order.updated_at, self.keep.settled)
        } else if key.starts_with("client.") {
            (published, self.keep.claims())
        } else {
            return None;
        };
        let age = (Utc::now() - since).to_std().unwrap_or_default();
        let left = keep.saturating_sub(age);
        Some((key, (left >= Duration::from_secs(1)).then_some(left)))
    }

    /// How long a settled order is kept.
    pub(crate) fn keep_settled(&self) -> Duration {
        self.keep.settled
    }

    /// The stored order and its revision.
    pub(crate) async fn load(&self, order_id: &str) -> Result<Option<(u64, Order)>, StoreError> {
        let Some((revision, value)) = self
            .bucket
            .read_latest(&format!("order.{order_id}"))
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let order: Order = serde_json::from_slice(&value).map_err(unavailable)?;
        self.remember(revision, order.clone());
        Ok(Some((revision, order)))
    }

    /// This leader's term at `epoch` (the elections bucket it won `epoch`
    /// in, and `epoch`), as of the fence it holds — taken first if it does
    /// not: what its writes carry and the orders it finds are judged
    /// against. Costs nothing once the fence is held. A new leader calls it
    /// at once rather than at its first write, so the old one's writes stop
    /// at once.
    ///
    /// # Errors
    /// [`StoreError::Deposed`] when this instance does not lead at `epoch`
    /// (its lease, or the current elections bucket, says so) or a newer
    /// term holds the fence; [`StoreError::Unavailable`] when a bucket does
    /// not answer.
    pub(crate) async fn term(&self, epoch: u64) -> Result<Term, StoreError> {
        self.fence.check_lease(epoch)?;
        self.fence.term(&self.bucket, epoch).await
    }

    /// Stores a new order, written under `order.epoch`;
    /// [`StoreError::Exists`] if its key is taken.
    pub(crate) async fn insert(&self, order: &Order) -> Result<u64, StoreError> {
        self.write(order, 0).await
    }

    /// Replaces the order stored at `revision`, written under `order.epoch`;
    /// [`StoreError::Changed`] if it was written since.
    pub(crate) async fn replace(&self, order: &Order, revision: u64) -> Result<u64, StoreError> {
        self.write(order, revision).await
    }

    /// Writes `order` if its key is at `expected` (0: absent), and only if
    /// this instance still leads at `order.epoch` and holds the fence.
    async fn write(&self, order: &Order, expected: u64) -> Result<u64, StoreError> {
        let epoch = order.epoch;
        let key = format!("order.{}", order.order_id);
        let bytes = serde_json::to_vec(order).map_err(unavailable)?;
        self.fence.check_lease(epoch)?;
        let fence = self.fence.revision(&self.bucket, epoch).await?;

        let _turn = self.turns[turn_of(&key)].lock().await;
        // The order's own compare-and-set, among this instance's writers;
        // other instances are kept out by the fence.
        let current = self
            .bucket
            .last_record(&key)
            .await
            .map_err(unavailable)?
            .map_or(0, |(revision, _)| revision);
        if current != expected {
            return Err(if expected == 0 {
                StoreError::Exists
            } else {
                StoreError::Changed
            });
        }
        // One fenced write in flight at a time (see `fenced_writes`).
        let _fenced = self.fenced_writes.lock().await;
        // The read (and the wait) took time; the lease may have run short.
        self.fence.check_lease(epoch)?;
        // Settled, it expires (the module's docs); until then it stays.
        let settled = order.is_settled();
        let written = self
            .bucket
            .put_if_expiring(
                &key,
                bytes.into(),
                Expect::KeyAt {
                    key: FENCE_KEY,
                    revision: fence.revision,
                },
                settled.then_some(self.keep.settled),
            )
            .await;
        match written {
            Ok(revision) => {
                self.remember(revision, order.clone());
                Ok(revision)
            }
            Err(WriteError::Conflict) => {
                warn!(
                    epoch,
                    key, "a newer leader took the order store's fence; write refused"
                );
                self.fence.moved(epoch).await;
                Err(StoreError::Deposed)
            }
            Err(WriteError::Full) => Err(StoreError::Full),
            Err(WriteError::Failed(e)) => Err(unavailable(e)),
        }
    }

    /// Orders matching `req`, newest first (the caller validated `req`).
    pub(crate) fn list(&self, req: &ListOrders, limit: usize) -> OrderList {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .list(req, limit)
    }

    fn remember(&self, revision: u64, order: Order) {
        self.index
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remember(revision, order);
    }
}

/// How [`OrderStore::reached`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// The watch has handed over the fence's revision in its bucket.
    Fence,
    /// The fence is in a bucket deleted since: take it again.
    Moved,
}

/// Where the watch stands against a fence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// It has handed over the fence's revision, in the fence's bucket.
    CaughtUp,
    /// It has yet to: wait for it to hand over more, or to move on to the
    /// fence's bucket.
    Wait,
    /// It follows another bucket than the fence's: which one is current?
    Ask,
    /// The fence is in a bucket deleted since: it must be taken again.
    Moved,
}

/// Where a watch that has `followed` stands against `fence`, given the
/// creation time of the bucket now current if it was asked (`current`)
/// while the watch followed the bucket it follows now.
///
/// When the buckets differ, their creation times are not compared: they
/// are the wall clock of whichever server made each, which may have
/// stepped back (or be another server's, behind) when the bucket was made
/// again. Only which bucket is current tells: the fence's, and the watch
/// lags behind its re-creation and will move on to it; any other, and the
/// fence's bucket was deleted since.
fn standing(followed: Followed, fence: FenceAt, current: Option<i128>) -> Standing {
    match followed.bucket {
        None => Standing::Wait,
        Some(bucket) if bucket == fence.bucket => {
            if followed.revision >= fence.revision {
                Standing::CaughtUp
            } else {
                Standing::Wait
            }
        }
        Some(_) => match current {
            None => Standing::Ask,
            Some(current) if current == fence.bucket => Standing::Wait,
            Some(_) => Standing::Moved,
        },
    }
}

/// The turn of an order key: a hash, so different orders rarely share one.
fn turn_of(key: &str) -> usize {
    use std::hash::{BuildHasher, RandomState};
    static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let hash = HASHER.get_or_init(RandomState::new).hash_one(key);
    (hash % TURNS as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use aegis_sdk::{AegisConfig, Connection};
    use aegis_testkit::NatsServer;

    use super::*;

    /// An hour, in the nanoseconds buckets are told apart by.
    const HOUR: i128 = 3_600_000_000_000;

    /// A write no stream took (its stream between leaders, as when a NATS
    /// node is lost) is told as that, not as a missing stream.
    #[test]
    fn a_write_no_stream_took_says_the_stream_may_have_no_leader() {
        use async_nats::jetstream::context::{PublishError, PublishErrorKind};
        let StoreError::Unavailable(detail) =
            unavailable(PublishError::new(PublishErrorKind::StreamNotFound))
        else {
            panic!("not unavailable");
        };
        assert!(detail.contains("no leader right now"), "{detail}");
        let StoreError::Unavailable(detail) =
            unavailable(PublishError::new(PublishErrorKind::TimedOut))
        else {
            panic!("not unavailable");
        };
        assert!(!detail.contains("no leader"), "{detail}");
    }

    fn at(bucket: i128, revision: u64) -> FenceAt {
        FenceAt { revision, bucket }
    }

    fn following(bucket: i128, revision: u64) -> Followed {
        Followed {
            bucket: Some(bucket),
            revision,
        }
    }

    /// The order review: the bucket was created again with an earlier
    /// creation time than the one the fence is in (a clock stepped back,
    /// or the meta leader moved to a server whose clock is behind), and
    /// the watch follows the new bucket. Before, the watch was taken for
    /// lagging behind the fence's bucket and waited for ever; the fence's
    /// bucket is not current, so the fence moved.
    #[test]
    fn a_fence_in_a_bucket_deleted_since_moved_whatever_the_clocks_say() {
        let fence = at(9 * HOUR, 3);
        assert_eq!(
            standing(following(5 * HOUR, 10), fence, Some(5 * HOUR)),
            Standing::Moved
        );
        assert_eq!(
            standing(following(12 * HOUR, 10), fence, Some(12 * HOUR)),
            Standing::Moved
        );
        // A third bucket is current: the fence moved too.
        assert_eq!(
            standing(following(5 * HOUR, 10), fence, Some(7 * HOUR)),
            Standing::Moved
        );
    }

    /// The watch lags behind a re-creation: the fence is in the current
    /// bucket, whatever its creation time says against the watch's.
    #[test]
    fn a_watch_behind_the_current_bucket_is_waited_for() {
        for watched in [5 * HOUR, 12 * HOUR] {
            let fence = at(9 * HOUR, 3);
            assert_eq!(standing(following(watched, 10), fence, None), Standing::Ask);
            assert_eq!(
                standing(following(watched, 10), fence, Some(9 * HOUR)),
                Standing::Wait
            );
        }
    }

    /// On the fence's bucket nothing is asked: the revision decides.
    #[test]
    fn on_the_fences_bucket_only_the_revision_counts() {
        let fence = at(9 * HOUR, 3);
        assert_eq!(
            standing(following(9 * HOUR, 2), fence, None),
            Standing::Wait
        );
        assert_eq!(
            standing(following(9 * HOUR, 3), fence, None),
            Standing::CaughtUp
        );
        assert_eq!(standing(Followed::default(), fence, None), Standing::Wait);
    }

    async fn store(server: &NatsServer) -> Arc<OrderStore> {
        let mut config = AegisConfig::with_servers(server.url());
        config.nats.request_timeout = Duration::from_secs(5);
        let conn = Connection::connect(config).await.expect("connect");
        OrderStore::open(&conn, "order-test", 16, Keep::FOR_TESTS)
            .await
            .unwrap()
    }

    /// Against a real bucket: the watch follows the current bucket, made
    /// an hour earlier by its clock than the one the fence was taken in.
    /// Before, this waited for ever (every request answered
    /// SERVICE_UNAVAILABLE, the recovery sweep hung); now the fence is
    /// found moved, after one read of the bucket.
    #[tokio::test]
    async fn a_fence_of_a_later_stamped_deleted_bucket_is_found_moved() {
        let server = NatsServer::start().expect("start nats-server");
        let store = store(&server).await;
        let current = bucket_created(&store.conn, &store.bucket).await.unwrap();
        store.followed.send_replace(following(current, 0));
        let reached = tokio::time::timeout(
            Duration::from_secs(10),
            store.reached(at(current + HOUR, 1)),
        )
        .await
        .expect("waited for a watch that follows the current bucket");
        assert_eq!(reached.unwrap(), Reached::Moved);
    }

    /// Against a real bucket: the watch still follows a bucket deleted
    /// since (stamped later, by a clock that stepped back), the fence is
    /// in the current one. It is waited for — not taken for a moved fence,
    /// which would be taken again and again until the request failed —
    /// and caught up with once it moves to the current bucket and hands
    /// over the fence's revision.
    #[tokio::test]
    async fn a_watch_behind_a_re_creation_is_waited_for() {
        let server = NatsServer::start().expect("start nats-server");
        let store = store(&server).await;
        let current = bucket_created(&store.conn, &store.bucket).await.unwrap();
        store.followed.send_replace(following(current + HOUR, 50));
        let fence = at(current, 3);
        let waiting = tokio::spawn({
            let store = store.clone();
            async move { store.reached(fence).await }
        });
        // Nothing changes it: it must still be waiting (bounded check of
        // something that must not happen).
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!waiting.is_finished(), "{:?}", waiting.await);
        store.followed.send_replace(following(current, 2));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished(), "{:?}", waiting.await);
        store.followed.send_replace(following(current, 3));
        let reached = tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the watch caught up with the fence")
            .unwrap();
        assert_eq!(reached.unwrap(), Reached::Fence);
    }
}
