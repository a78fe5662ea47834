//! The JetStream KV chores the stateful services share: open (or create) a
//! bucket with the connection's replica count, and read a key's latest value
//! with read-your-writes. (Watches are the SDK's: `aegis_sdk::kv`.)
//!
//! A watch is one consumer at a time for the life of the process (a
//! [`feed`](aegis_sdk::feed), opened again when it breaks) — never a key
//! listing per request, which would leave a consumer behind each time.
//!
//! Why a read of our own. A bucket allows direct gets, and on a replicated
//! bucket any replica answers them — mostly the one on the node the client
//! is connected to. A replica applies a write only after the stream leader
//! has confirmed it to the writer, so a direct get right after a confirmed
//! write can miss it (measured on a 3-node cluster: a claim read back as
//! absent, an order not found right after it was created).
//! [`Bucket::read_latest`] asks the stream leader instead (`$JS.API.STREAM.MSG.GET`), which answers
//! only from state that includes every write it confirmed. It costs the
//! leader a request, so only paths that must see a write just made — by this
//! process or by the one it races — use it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aegis_sdk::Connection;
use async_nats::jetstream::{
    self, kv,
    stream::{self, LastRawMessageErrorKind},
};
use bytes::Bytes;

use tracing::warn;

use crate::TradingError;

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;

/// One of the buckets the example services keep their state in, with the
/// description it is created with and its limits.
///
/// Each is bounded so that one service's credential cannot fill the
/// account's JetStream store through it (the red team wrote 100 MB of junk
/// under a service's own keys in seconds). A bucket discards new writes
/// when full: a full bucket refuses, it never evicts an order or the fence.
/// So the bounds are wide: many times what the showcase writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShowcaseBucket {
    /// The bucket's name.
    pub bucket: &'static str,
    /// What it is created with as its description.
    pub description: &'static str,
    /// The most bytes its stream keeps (per replica).
    pub max_bytes: i64,
    /// The largest value (headers included) it takes.
    pub max_value_size: i32,
    /// Whether a value may carry its own expiry (`Nats-TTL`), with how
    /// long the marker left when one expires is kept, so that watchers see
    /// the key go; `None`: values stay until replaced or deleted.
    pub limit_markers: Option<Duration>,
}

/// `orders`: an order and the key of its client order id take about 0.82
/// KiB together (measured on the showcase). Settled orders expire after
/// order-service's `keep_settled` (6 hours by default: some 175 MiB at
/// `aegis traffic`'s default 10 orders/s), so 256 MiB holds a busy desk's
/// day; without the expiry it filled in some nine hours and then refused
/// every order. Not more: every stream reserves its `max_bytes` on each
/// node that holds a replica, and what Aegis makes must fit a node of 1 GB
/// (the podman check's) and the account's limit at R3 (`aegis
/// nats-config`'s `ACCOUNT_LIMITS`). 64 KiB per value is 100 times an
/// order.
pub const ORDERS: ShowcaseBucket = ShowcaseBucket {
    bucket: crate::order::ORDERS_BUCKET,
    description: "order-service orders",
    max_bytes: 256 * MIB,
    max_value_size: 64 * KIB as i32,
    limit_markers: Some(MARKER_TTL),
};

/// How long the marker of an expired order stays: long enough for every
/// watch (each instance's index) to see the order go.
pub(crate) const MARKER_TTL: Duration = Duration::from_secs(60);

/// `risk_limits`: one small JSON of limits (well under 1 KiB). 64 KiB per
/// value, 1 MiB in all.
pub const RISK_LIMITS: ShowcaseBucket = ShowcaseBucket {
    bucket: crate::risk::RISK_LIMITS_BUCKET,
    description: "risk-service limits",
    max_bytes: MIB,
    max_value_size: 64 * KIB as i32,
    limit_markers: None,
};

/// `risk_positions`: one key, the positions snapshot, about 40 bytes per
/// symbol held: 1 MiB per value holds some 25,000 symbols (the showcase
/// trades a handful); 16 MiB in all, history 1.
pub const RISK_POSITIONS: ShowcaseBucket = ShowcaseBucket {
    bucket: crate::risk::RISK_POSITIONS_BUCKET,
    description: "risk-service positions snapshot",
    max_bytes: 16 * MIB,
    max_value_size: MIB as i32,
    limit_markers: None,
};

/// The buckets the example services keep their state in.
pub const BUCKETS: [ShowcaseBucket; 3] = [ORDERS, RISK_LIMITS, RISK_POSITIONS];

impl ShowcaseBucket {
    /// What of `config` (its existing stream, holding `bytes`) is not
    /// bounded as it should be, each said as `setting has -> wants`, and
    /// the config with it changed. A byte limit below what the stream
    /// holds would delete values at once: it is left, and said in `kept`.
    pub fn bound(&self, config: &stream::Config, bytes: u64) -> Bound {
        // The shared buckets' rule, without their rollup and purge settings.
        let lock = aegis_sdk::kv::SharedBucket {
            bucket: self.bucket,
            max_bytes: self.max_bytes,
            max_value_size: self.max_value_size,
            refuses_rollups: false,
            deny_purge: false,
        }
        .lock_down(config, bytes);
        let (mut config, mut changes) = (lock.config, lock.changes);
        // Expiring values are turned on in place (the server allows it, and
        // never turning them off again); markers without them are not.
        if let Some(markers) = self.limit_markers {
            if !config.allow_message_ttl {
                config.allow_message_ttl = true;
                changes.push("per-value expiry off -> on".to_owned());
            }
            if config.subject_delete_marker_ttl.is_none_or(|d| d.is_zero()) {
                config.subject_delete_marker_ttl = Some(markers);
                changes.push(format!("expiry markers none -> {}s", markers.as_secs()));
            }
        }
        Bound {
            config,
            changes,
            kept: lock.kept,
        }
    }
}

/// What [`ShowcaseBucket::bound`] would change: the stream's config with
/// the changes made, each change (`setting has -> wants`), and a limit
/// left as it is, with why.
pub type Bound = aegis_sdk::kv::LockDown;

/// Bounds every existing bucket of [`BUCKETS`] that is not (made before
/// the bounds, or by hand) in place, as [`ShowcaseBucket::bound`] says; a
/// missing one is skipped. Per bucket that differed: its stream's name and
/// what was done. `aegis init --showcase` and `aegis up` run it.
///
/// # Errors
/// When JetStream refuses to read or change a bucket's stream.
pub async fn bound_buckets(
    js: &jetstream::Context,
) -> Result<Vec<(String, Bound)>, async_nats::Error> {
    let mut done = Vec::new();
    for bucket in BUCKETS {
        let name = format!("KV_{}", bucket.bucket);
        let bound =
            aegis_sdk::kv::lock_down_in_place(js, &name, |c, bytes| bucket.bound(c, bytes)).await?;
        if let Some(bound) = bound.filter(|b| !b.changes.is_empty() || b.kept.is_some()) {
            done.push((name, bound));
        }
    }
    Ok(done)
}

/// Opens `bucket` (one of [`BUCKETS`]), creating it (file storage, history
/// 1, the connection's replicas, bounded as [`BUCKETS`] says) when it does not exist yet and the user
/// may (a server without users; the services' users of `aegis up` and the
/// Helm chart may not: `aegis init` creates it, and the error says so); a
/// cluster whose peers are not all online yet is given a moment to place
/// it.
pub(crate) async fn open_bucket(
    conn: &Connection,
    bucket: &str,
) -> Result<kv::Store, TradingError> {
    let limits = BUCKETS.iter().find(|b| b.bucket == bucket);
    let js = conn.jetstream();
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    let config = kv::Config {
        bucket: bucket.to_owned(),
        description: limits.map_or("", |b| b.description).to_owned(),
        history: 1,
        max_bytes: limits.map_or(-1, |b| b.max_bytes),
        max_value_size: limits.map_or(-1, |b| b.max_value_size),
        limit_markers: limits.and_then(|b| b.limit_markers),
        num_replicas: conn.config().nats.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    aegis_sdk::streams::create_or_find_bucket(js, config)
        .await
        .map_err(|e| TradingError::Store {
            bucket: bucket.to_owned(),
            source: Box::new(NotCreated {
                bucket: bucket.to_owned(),
                source: e.into(),
            }),
        })
}

/// A bucket that was missing and could not be created: under the users of
/// `aegis up` and the Helm chart a service may not create one (a create
/// also chooses the stream's subjects), `aegis init` does.
#[derive(Debug, thiserror::Error)]
#[error(
    "bucket {bucket} is missing (or not answering) and this service may not create it: \
     run `aegis init --showcase` as the operator (`aegis up` and the Helm chart's init Job do)"
)]
struct NotCreated {
    bucket: String,
    #[source]
    source: async_nats::Error,
}

/// A bucket and the JetStream context to write to it with headers of our
/// own: reads with read-your-writes and conditional writes whose refusal
/// is told apart from a failure.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    /// The bucket, for watches and plain operations.
    pub(crate) kv: kv::Store,
    /// Ends a request whose connection dropped at once, rather than after
    /// the JetStream timeout: a writer holding a fence lock meanwhile
    /// would stall every order behind it.
    conn: Connection,
    /// Whether the bucket's stream takes values with their own expiry
    /// (`allow_msg_ttl`), as it was when opened; turned off when the
    /// stream refuses one (made again by hand without it). A bucket made
    /// before it expires nothing until `aegis init` turns it on.
    expiring: Arc<AtomicBool>,
}

/// What a conditional write ([`Bucket::put_if`]) expects to find.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Expect<'a> {
    /// The key's last revision (0: the key was never written).
    Revision(u64),
    /// The last revision of another key of the bucket: the write lands
    /// only while that key is unchanged (a fence).
    KeyAt {
        /// The other key.
        key: &'a str,
        /// Its expected last revision.
        revision: u64,
    },
}

/// Why a conditional write did not land.
#[derive(Debug)]
pub(crate) enum WriteError {
    /// What it expected was not there: the key (or the fence) changed.
    Conflict,
    /// The bucket holds its `max_bytes` and takes no new value: nothing
    /// was written.
    Full,
    /// The server did not confirm; the write may or may not have landed.
    Failed(async_nats::Error),
}

impl Bucket {
    /// `kv` and a context to publish to it.
    pub(crate) fn new(conn: &Connection, kv: kv::Store) -> Self {
        let expiring = kv.stream.cached_info().config.allow_message_ttl;
        Self {
            kv,
            conn: conn.clone(),
            expiring: Arc::new(AtomicBool::new(expiring)),
        }
    }

    /// The error of a write this bucket refused for being full.
    pub(crate) fn full_error(&self) -> async_nats::Error {
        Box::new(BucketFull {
            bucket: self.kv.name.clone(),
        })
    }

    /// Whether values written with an expiry expire
    /// ([`put_if_expiring`](Self::put_if_expiring)).
    pub(crate) fn expiring(&self) -> bool {
        self.expiring.load(Ordering::Relaxed)
    }

    /// The stream subject of `key`.
    fn subject(&self, key: &str) -> String {
        format!(
            "{}{key}",
            self.kv.put_prefix.as_ref().unwrap_or(&self.kv.prefix)
        )
    }

    /// The latest value of `key` and its revision, read from the bucket's
    /// stream leader so that it includes every confirmed write; `None` when
    /// the key was never written, or deleted or purged since.
    pub(crate) async fn read_latest(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Bytes)>, async_nats::Error> {
        Ok(match self.last_record(key).await? {
            Some((revision, Some(value))) => Some((revision, value)),
            _ => None,
        })
    }

    /// The key's last record from the stream leader: its revision and
    /// value, the value `None` for a delete or purge marker (whose revision
    /// a compare-and-set must still name).
    pub(crate) async fn last_record(
        &self,
        key: &str,
    ) -> Result<Option<(u64, Option<Bytes>)>, async_nats::Error> {
        Ok(self.last_message(key).await?.map(|msg| {
            let removed = aegis_sdk::kv::removal_of(&msg.headers).is_some();
            (msg.sequence, (!removed).then_some(msg.payload))
        }))
    }

    /// The key's last message from the stream leader, headers included;
    /// `None` when the key never had one.
    async fn last_message(
        &self,
        key: &str,
    ) -> Result<Option<async_nats::jetstream::message::StreamMessage>, async_nats::Error> {
        let subject = format!("{}{key}", self.kv.prefix);
        // A read is asked again when its connection drops (twice at most),
        // and when no answer came within a short wait: a request that
        // reaches a stream while it changes leader can go unanswered, and
        // would otherwise hold the order flow for the whole timeout.
        let mut patience = aegis_sdk::streams::Patience::new(&self.conn);
        let mut drops = 0;
        let read = loop {
            let Some(wait) = patience.next_wait() else {
                return Err(format!(
                    "no answer from stream {} for {subject} within {:?}",
                    self.kv.stream_name,
                    self.conn.config().nats.request_timeout
                )
                .into());
            };
            let attempt = self
                .conn
                .unless_dropped(self.kv.stream.get_last_raw_message_by_subject(&subject));
            match tokio::time::timeout(wait, attempt).await {
                Ok(Ok(read)) => break read,
                Ok(Err(dropped)) if drops == 2 => return Err(dropped.into()),
                Ok(Err(_)) => drops += 1,
                Err(_) => {}
            }
        };
        match read {
            Ok(msg) => Ok(Some(msg)),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes `value` to `key` if `expect` holds, and returns the new
    /// revision.
    ///
    /// A refusal is [`WriteError::Conflict`] whichever way the server says
    /// it: `10071` (wrong last sequence), or `10164`, which a clustered
    /// stream's leader answers while another write to the same key is still
    /// being replicated — also a lost race, which the `kv` client reports
    /// as an unexplained error.
    pub(crate) async fn put_if(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect<'_>,
    ) -> Result<u64, WriteError> {
        self.put_if_expiring(key, value, expect, None).await
    }

    /// [`put_if`](Self::put_if), the value expiring `ttl` after it was
    /// written (the server removes it and leaves a marker) when the
    /// bucket allows it ([`expiring`](Self::expiring)); kept without an
    /// expiry when it does not.
    pub(crate) async fn put_if_expiring(
        &self,
        key: &str,
        value: Bytes,
        expect: Expect<'_>,
        ttl: Option<Duration>,
    ) -> Result<u64, WriteError> {
        let mut headers = async_nats::HeaderMap::new();
        let ttl = ttl.filter(|_| self.expiring());
        if let Some(ttl) = ttl {
            // Whole seconds, at least one: the server's smallest TTL.
            headers.insert(
                async_nats::header::NATS_MESSAGE_TTL,
                format!("{}s", ttl.as_secs().max(1)).as_str(),
            );
        }
        match expect {
            Expect::Revision(revision) => {
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    revision.to_string().as_str(),
                );
            }
            Expect::KeyAt { key, revision } => {
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                    revision.to_string().as_str(),
                );
                // Server 2.11+: the expectation is checked on this subject
                // instead of the written one.
                headers.insert(
                    "Nats-Expected-Last-Subject-Sequence-Subject",
                    self.subject(key).as_str(),
                );
            }
        }
        // Sent again under the same id when the acknowledgement is slow (a
        // stream changing leader drops a write without a word). The stream
        // checks the expected revision before the id, so a copy of a write
        // that landed is refused as a conflict: the key's last record then
        // tells whether that write was this one. Whether it landed when no
        // answer came at all is the caller's question.
        let id = nuid::next();
        let ack = aegis_sdk::streams::publish_deduplicated(
            &self.conn,
            self.subject(key),
            &id.to_string(),
            headers,
            // Bytes: a cheap clone, kept to write again without an expiry.
            value.clone(),
        )
        .await;
        match ack {
            Ok(ack) => Ok(ack.sequence),
            Err(e) if refused(&e) => match self.written_by(key, &id.to_string()).await {
                // Refused only because its own first copy had landed.
                Ok(Some(revision)) => Ok(revision),
                Ok(None) => Err(WriteError::Conflict),
                // Whether it landed cannot be told: not a conflict.
                Err(e) => Err(WriteError::Failed(e)),
            },
            Err(e) if ttl.is_some() && has_code(&e, jetstream::ErrorCode::MESSAGE_TTL_DISABLED) => {
                // The bucket was made again without expiring values since
                // it was opened: write as it allows, and say so once.
                if self.expiring.swap(false, Ordering::Relaxed) {
                    warn!(
                        bucket = %self.kv.name,
                        "the bucket no longer takes values that expire (made again without \
                         per-value expiry): values are kept for good until `aegis init` turns it on"
                    );
                }
                Box::pin(self.put_if_expiring(key, value, expect, None)).await
            }
            Err(e) if full(&e) => Err(WriteError::Full),
            Err(e) => Err(WriteError::Failed(e.into())),
        }
    }

    /// The revision of `key`'s last record when the write with message id
    /// `id` made it; `None` when another write is the last.
    async fn written_by(&self, key: &str, id: &str) -> Result<Option<u64>, async_nats::Error> {
        Ok(self.last_message(key).await?.and_then(|last| {
            let ours = last
                .headers
                .get(async_nats::header::NATS_MESSAGE_ID)
                .is_some_and(|v| v.as_str() == id);
            ours.then_some(last.sequence)
        }))
    }

    /// Writes `key` only if it holds no value, like `kv::Store::create`,
    /// whose check after a refused write is a direct get — on a lagging
    /// replica that takes a key that exists for a missing one, and the
    /// create fails with a confusing error instead of "exists".
    pub(crate) async fn create(&self, key: &str, value: Bytes) -> Result<u64, CreateError> {
        self.create_expiring(key, value, None).await
    }

    /// [`create`](Self::create), the value expiring `ttl` after it was
    /// written, as [`put_if_expiring`](Self::put_if_expiring) says.
    pub(crate) async fn create_expiring(
        &self,
        key: &str,
        value: Bytes,
        ttl: Option<Duration>,
    ) -> Result<u64, CreateError> {
        match self
            .put_if_expiring(key, value.clone(), Expect::Revision(0), ttl)
            .await
        {
            Ok(revision) => return Ok(revision),
            Err(WriteError::Conflict) => {}
            Err(WriteError::Full) => return Err(CreateError::Full),
            Err(WriteError::Failed(e)) => return Err(CreateError::Failed(e)),
        }
        match self.last_record(key).await.map_err(CreateError::Failed)? {
            // Deleted, purged or expired: it may be created again, over the
            // marker.
            Some((marker, None)) => match self
                .put_if_expiring(key, value, Expect::Revision(marker), ttl)
                .await
            {
                Ok(revision) => Ok(revision),
                Err(WriteError::Conflict) => Err(CreateError::Exists),
                Err(WriteError::Full) => Err(CreateError::Full),
                Err(WriteError::Failed(e)) => Err(CreateError::Failed(e)),
            },
            // A value, or (a racing write not applied yet) about to be one.
            _ => Err(CreateError::Exists),
        }
    }
}

/// A write refused because the bucket holds its `max_bytes`.
#[derive(Debug, thiserror::Error)]
#[error(
    "bucket {bucket} is full: it holds its max_bytes and takes no new key until values expire \
     or are deleted, or an operator raises its bound (docs/deployment.md)"
)]
pub(crate) struct BucketFull {
    bucket: String,
}

/// Why [`Bucket::create`] did not write.
#[derive(Debug)]
pub(crate) enum CreateError {
    /// The key holds a value.
    Exists,
    /// The bucket is full ([`WriteError::Full`]).
    Full,
    /// The server did not confirm; the key may or may not have been written.
    Failed(async_nats::Error),
}

/// Whether the server refused a conditional publish because what it
/// expected was not there (see [`Bucket::put_if`]).
/// async-nats gives 10071 its own kind; 10164 is told by the SDK's
/// [`another_write_in_flight`](aegis_sdk::streams::another_write_in_flight).
fn refused(e: &jetstream::context::PublishError) -> bool {
    e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence
        || aegis_sdk::streams::another_write_in_flight(e)
}

/// Whether the server refused a publish because the stream holds its
/// `max_bytes` (it discards new writes when full).
fn full(e: &jetstream::context::PublishError) -> bool {
    jetstream_error(e, |e| {
        e.error_code() == jetstream::ErrorCode::STREAM_STORE_FAILED
            && e.to_string().contains("maximum bytes exceeded")
    })
}

/// Whether the server refused a publish with `code`.
fn has_code(e: &jetstream::context::PublishError, code: jetstream::ErrorCode) -> bool {
    jetstream_error(e, |e| e.error_code() == code)
}

/// Whether `found` holds for the JetStream error `e` is, or wraps.
fn jetstream_error(
    e: &jetstream::context::PublishError,
    found: impl Fn(&jetstream::Error) -> bool,
) -> bool {
    aegis_sdk::streams::any_cause(e, |c| {
        c.downcast_ref::<jetstream::Error>().is_some_and(&found)
    })
}

#[cfg(test)]
mod bound_tests {
    use super::*;

    #[test]
    fn an_unbounded_bucket_is_bounded_without_deleting() {
        let open = stream::Config {
            name: "KV_orders".into(),
            max_bytes: -1,
            max_message_size: -1,
            ..Default::default()
        };
        let done = ORDERS.bound(&open, 1000);
        assert_eq!(
            done.changes,
            [
                "max value size none -> 64 KiB",
                "max bytes none -> 256 MiB",
                "per-value expiry off -> on",
                "expiry markers none -> 60s"
            ]
        );
        assert_eq!(done.config.max_bytes, ORDERS.max_bytes);
        assert!(done.config.allow_message_ttl);
        // The buckets without expiring values are not given it.
        let limits = RISK_LIMITS.bound(&open, 0);
        assert!(!limits.config.allow_message_ttl);
        assert!(limits.config.subject_delete_marker_ttl.is_none());
        assert!(done.kept.is_none());
        // Holding more than the bound: left unbounded, and said.
        let full = ORDERS.bound(&open, 300 * 1024 * 1024);
        assert_eq!(full.config.max_bytes, -1);
        assert!(full.kept.unwrap().contains("would delete"));
        // Tighter limits an operator chose are kept; bounded ones unchanged.
        assert!(ORDERS.bound(&done.config, 0).changes.is_empty());
        let tight = stream::Config {
            max_bytes: MIB,
            max_message_size: 1024,
            ..open
        };
        assert!(RISK_POSITIONS.bound(&tight, 0).changes.is_empty());
        // What every bucket reserves per replica stays small enough for a
        // node of 1 GB beside the rest of what Aegis makes.
        let total: i64 = BUCKETS.iter().map(|b| b.max_bytes).sum();
        assert!(total <= 300 * MIB, "{total}");
    }
}
