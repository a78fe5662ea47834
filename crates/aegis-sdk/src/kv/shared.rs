//! The buckets every role writes a part of — the registry, the elections
//! and the service definitions ([`SHARED_BUCKETS`]) — and the settings that
//! keep one writer from erasing or crowding out the others.
//!
//! **No rollups where the server allows it.** NATS permissions check a
//! publish's subject, never its headers. A message with `Nats-Rollup: all`
//! to any one key purges every subject of the bucket's stream, so a
//! service that may write its own election key could delete every
//! service's election key, and the monitor every service definition with
//! its history (red-team findings F3 and F7). Only the stream can refuse
//! it: the elections and the definitions are made with
//! `allow_rollup_hdrs: false` (async-nats makes every bucket with rollups
//! allowed, so [`create_or_find_shared_bucket`] makes the stream itself),
//! and the definitions also deny the stream purge API (`deny_purge`): its
//! history is the audit trail. Aegis removes a key with a marker alone,
//! never a rollup ([`remove_with_ttl`](super::remove_with_ttl), and
//! async-nats's `delete`).
//!
//! **The registry cannot refuse them.** Its limit markers (watchers see a
//! crashed instance's record expire) need rollups: nats-server (2.15.1,
//! checked) turns `allow_rollup_hdrs` on for any stream with
//! `subject_delete_marker_ttl`, and refuses `deny_purge` beside it. So a
//! service may still empty the registry with one message to its own key.
//! What bounds the harm: every live instance writes its record again at
//! its next refresh (every 4 s by default, at most a third of its TTL; the
//! write finds the key gone and writes without expecting its last
//! revision), watchers that were following keep the instances (the rollup
//! removes without markers), and every watcher logs the rollup (throttled),
//! naming the key it was sent to, and so the service that sent it. Only
//! readers that load the registry in those seconds see fewer instances.
//!
//! **Bounded.** Each bucket has a byte limit and a value size limit
//! ([`SharedBucket`]), sized with a wide margin for 1,000+ instances, so a
//! flood from one user fills at most that bucket, not the account's
//! JetStream store that every order, event and heartbeat needs (F4). The
//! buckets discard new writes when full (async-nats's KV default), and
//! the server still takes a write that replaces a key's value (checked on
//! nats-server 2.15.1 with one value per key): in a full bucket live
//! records, lease renewals, resignations and deregistrations keep working,
//! but a new key (a new instance id, a new sticky group) is refused until
//! the junk that filled it is deleted. A service can therefore still fill
//! the registry or the elections with keys of its own and keep new
//! instances from registering; it can no longer fill the account's store.
//!
//! Existing buckets made before keep what they have until the operator's
//! `aegis init` (or `aegis up`) changes them in place ([`lock_down`]): no
//! service or monitor may change a stream. The SDK warns, once at start,
//! of a shared bucket that still allows rollups ([`warn_if_open`]).

use aegis_contracts::subjects::{DEFINITIONS_BUCKET, ELECTIONS_BUCKET, REGISTRY_BUCKET};
use async_nats::jetstream::{
    self,
    context::{CreateKeyValueError, CreateKeyValueErrorKind},
    kv, stream,
};
use tracing::warn;

const KIB: i64 = 1024;
const MIB: i64 = 1024 * KIB;

/// A shared bucket's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedBucket {
    /// The bucket's name.
    pub bucket: &'static str,
    /// The most bytes the bucket's stream keeps (per replica).
    pub max_bytes: i64,
    /// The largest value (its headers included) the stream takes.
    pub max_value_size: i32,
    /// Whether the stream refuses rollups (`allow_rollup_hdrs: false`);
    /// not the registry, whose limit markers need them (see the module).
    pub refuses_rollups: bool,
    /// Whether the stream purge API is denied too (`deny_purge`): the
    /// definitions' history is the audit trail.
    pub deny_purge: bool,
}

/// `service_registry`: a record is about 0.5 KiB (451 bytes measured for a
/// service with one method; more with many methods or metadata). 32 KiB
/// per value leaves room for 60 times that; 64 MiB holds 2,000 instances
/// at that largest size and some 100,000 of the usual one (plus the
/// deregistrations' markers, kept a minute), against the 1,000+ a
/// deployment plans for.
pub const REGISTRY: SharedBucket = SharedBucket {
    bucket: REGISTRY_BUCKET,
    max_bytes: 64 * MIB,
    max_value_size: 32 * KIB as i32,
    refuses_rollups: false,
    deny_purge: false,
};

/// `service_elections`: a lease record is about 100 bytes (instance id,
/// epoch, lease, renewal time). 4 KiB per value is 40 times that; 8 MiB
/// holds 2,000 groups at that largest size and some 50,000 of the usual
/// one.
pub const ELECTIONS: SharedBucket = SharedBucket {
    bucket: ELECTIONS_BUCKET,
    max_bytes: 8 * MIB,
    max_value_size: 4 * KIB as i32,
    refuses_rollups: true,
    deny_purge: false,
};

/// `service_definitions`: a definition is at most about 4 KiB (owner up to
/// 100 characters, description up to 500, each at worst 6 bytes escaped
/// in JSON), usually 0.5 KiB; 16 KiB per value is 4 times the largest. 128 MiB holds 1,000 services
/// with 64 changes of history each at 2 KiB, four times the usual size.
/// Its purge API is denied: the history is the audit trail.
pub const DEFINITIONS: SharedBucket = SharedBucket {
    bucket: DEFINITIONS_BUCKET,
    max_bytes: 128 * MIB,
    max_value_size: 16 * KIB as i32,
    refuses_rollups: true,
    deny_purge: true,
};

/// Every shared bucket.
pub const SHARED_BUCKETS: [SharedBucket; 3] = [REGISTRY, ELECTIONS, DEFINITIONS];

impl SharedBucket {
    /// The shared bucket named `bucket`, if it is one.
    pub fn named(bucket: &str) -> Option<Self> {
        SHARED_BUCKETS.into_iter().find(|b| b.bucket == bucket)
    }

    /// The stream of a bucket made with `config` (as async-nats would make
    /// it, history, TTL and limit markers included), with rollups refused
    /// where [`refuses_rollups`](Self::refuses_rollups) says and this
    /// bucket's limits.
    pub fn stream_config(&self, config: &kv::Config) -> stream::Config {
        let history = config.history.max(1);
        let (allow_message_ttl, subject_delete_marker_ttl) = match config.limit_markers {
            Some(ttl) => (true, Some(ttl)),
            None => (false, None),
        };
        stream::Config {
            name: format!("KV_{}", self.bucket),
            description: Some(config.description.clone()),
            subjects: vec![format!("$KV.{}.>", self.bucket)],
            max_messages_per_subject: history,
            max_bytes: self.max_bytes,
            max_age: config.max_age,
            max_message_size: self.max_value_size,
            storage: config.storage,
            num_replicas: config.num_replicas.max(1),
            allow_rollup: !self.refuses_rollups,
            deny_delete: true,
            deny_purge: self.deny_purge,
            allow_direct: true,
            discard: stream::DiscardPolicy::New,
            allow_message_ttl,
            subject_delete_marker_ttl,
            ..Default::default()
        }
    }

    /// What of `config` (an existing stream of this bucket) differs from
    /// this bucket's settings, each said as `setting has -> wants`, and the
    /// config with them changed. A bucket with no byte limit is given this
    /// one; one with a limit keeps it, a larger one too (an operator raises
    /// a full bucket's, and a later `aegis init` or chart upgrade must not
    /// take that back). A byte limit that would delete values at once (the
    /// stream holds `bytes`, more than the limit) is left as it is and not
    /// listed: the caller names it ([`LockDown::kept`]).
    pub fn lock_down(&self, config: &stream::Config, bytes: u64) -> LockDown {
        let mut changed = config.clone();
        let mut what = Vec::new();
        let mut kept = None;
        if self.refuses_rollups && config.allow_rollup {
            changed.allow_rollup = false;
            what.push("rollups allowed -> refused".to_owned());
        }
        if self.deny_purge && !config.deny_purge {
            changed.deny_purge = true;
            what.push("purges allowed -> denied".to_owned());
        }
        if config.max_message_size <= 0 || config.max_message_size > self.max_value_size {
            changed.max_message_size = self.max_value_size;
            what.push(format!(
                "max value size {} -> {}",
                limit(i64::from(config.max_message_size)),
                limit(i64::from(self.max_value_size))
            ));
        }
        if config.max_bytes <= 0 {
            if u64::try_from(self.max_bytes).is_ok_and(|max| bytes < max) {
                changed.max_bytes = self.max_bytes;
                what.push(format!(
                    "max bytes {} -> {}",
                    limit(config.max_bytes),
                    limit(self.max_bytes)
                ));
            } else {
                kept = Some(format!(
                    "it holds {bytes} bytes, more than the {} it should be bounded to: \
                     bounding it would delete values at once; left unbounded",
                    limit(self.max_bytes)
                ));
            }
        }
        LockDown {
            config: changed,
            changes: what,
            kept,
        }
    }
}

/// What [`SharedBucket::lock_down`] would change.
#[derive(Debug, Clone)]
pub struct LockDown {
    /// The stream's config with the changes made.
    pub config: stream::Config,
    /// Each change, said as `setting has -> wants`; empty when none.
    pub changes: Vec<String>,
    /// A limit left as it is, and why.
    pub kept: Option<String>,
}

/// Changes the existing stream `name` as `rule` says, given the stream's
/// config and the bytes it holds (a [`SharedBucket::lock_down`], or a
/// rule of one's own built on it), when it changes anything; a cluster
/// still placing the stream is given a moment. Returns what the rule said,
/// changes and what it kept; `None` for a stream that does not exist. It
/// logs the changes only at DEBUG: saying them is the caller's.
/// `aegis init` runs it over the shared buckets and the example services'.
///
/// ```no_run
/// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), async_nats::Error> {
/// use aegis_sdk::kv::{ELECTIONS, lock_down_in_place};
///
/// let name = format!("KV_{}", ELECTIONS.bucket);
/// if let Some(done) = lock_down_in_place(&js, &name, |c, bytes| ELECTIONS.lock_down(c, bytes)).await? {
///     println!("{name}: {}", done.changes.join(", "));
/// }
/// # Ok(()) }
/// ```
///
/// # Errors
/// When JetStream refuses to read the stream, or to change it (the error
/// names the changes).
pub async fn lock_down_in_place(
    js: &jetstream::Context,
    name: &str,
    rule: impl Fn(&stream::Config, u64) -> LockDown,
) -> Result<Option<LockDown>, async_nats::Error> {
    let Ok(mut stream) = js.get_stream(name).await else {
        return Ok(None);
    };
    let info = stream
        .info()
        .await
        .map_err(|e| format!("reading stream {name}: {e}"))?
        .clone();
    let lock = rule(&info.config, info.state.bytes);
    if !lock.changes.is_empty() {
        crate::streams::with_placement_patience(name, || js.update_stream(lock.config.clone()))
            .await
            .map_err(|e| format!("changing {name} ({}): {e}", lock.changes.join(", ")))?;
        // DEBUG: the changes are returned, and the caller says them in its
        // own words (`aegis up` and `aegis init` print them); at INFO the
        // console said each change twice.
        tracing::debug!(stream = %name, changes = %lock.changes.join(", "), "changed a bucket's settings in place");
    }
    Ok(Some(lock))
}

fn limit(value: i64) -> String {
    match value {
        v if v <= 0 => "none".to_owned(),
        v if v % MIB == 0 => format!("{} MiB", v / MIB),
        v if v % KIB == 0 => format!("{} KiB", v / KIB),
        v => format!("{v} bytes"),
    }
}

/// Creates the shared bucket `config` names, as [`SharedBucket::stream_config`]
/// makes it, or finds it (with whatever settings it has) as
/// [`create_or_find_bucket`](crate::streams::create_or_find_bucket) does.
///
/// # Errors
/// The creation's error when the bucket can be neither created nor found;
/// [`CreateKeyValueErrorKind::InvalidStoreName`] for a bucket that is not a
/// shared one.
pub async fn create_or_find_shared_bucket(
    js: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, CreateKeyValueError> {
    let Some(shared) = SharedBucket::named(&config.bucket) else {
        return Err(CreateKeyValueError::new(
            CreateKeyValueErrorKind::InvalidStoreName,
        ));
    };
    let stream = shared.stream_config(&config);
    crate::streams::create_or_find_bucket_with(js, &config.bucket, || async {
        js.create_stream(stream.clone()).await.map_err(|e| {
            let kind = if e.kind() == jetstream::context::CreateStreamErrorKind::TimedOut {
                CreateKeyValueErrorKind::TimedOut
            } else {
                CreateKeyValueErrorKind::BucketCreate
            };
            CreateKeyValueError::with_source(kind, e)
        })?;
        js.get_key_value(&config.bucket)
            .await
            .map_err(|e| CreateKeyValueError::with_source(CreateKeyValueErrorKind::JetStream, e))
    })
    .await
}

/// Warns when the existing shared bucket behind `config` still allows
/// rollups or has no limits, naming the fix (`aegis init`, as the
/// operator): a service or the monitor may not change a stream.
pub fn warn_if_open(config: &stream::Config) {
    let Some(bucket) = config
        .name
        .strip_prefix("KV_")
        .and_then(SharedBucket::named)
    else {
        return;
    };
    if bucket.refuses_rollups && config.allow_rollup {
        warn!(
            bucket = bucket.bucket,
            "this shared bucket allows rollups: any user that may write one of its keys can purge \
             all of them with one message (Nats-Rollup: all); run `aegis init` as the operator to \
             turn them off"
        );
    }
    if config.max_bytes <= 0 || config.max_message_size <= 0 {
        warn!(
            bucket = bucket.bucket,
            "this shared bucket has no byte or value size limit: one user could fill the \
             account's JetStream storage through it; run `aegis init` as the operator to bound it"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_shared_buckets_refuse_rollups_and_are_bounded() {
        for bucket in SHARED_BUCKETS {
            let config = bucket.stream_config(&kv::Config {
                bucket: bucket.bucket.to_owned(),
                history: 0,
                limit_markers: Some(Duration::from_secs(60)),
                ..Default::default()
            });
            assert_eq!(config.allow_rollup, !bucket.refuses_rollups);
            assert!(config.max_bytes > 0 && config.max_message_size > 0);
            assert_eq!(config.max_messages_per_subject, 1);
            assert!(config.allow_message_ttl);
            assert_eq!(config.subjects, [format!("$KV.{}.>", bucket.bucket)]);
            assert!(bucket.lock_down(&config, 0).changes.is_empty());
        }
        assert!(DEFINITIONS.stream_config(&kv::Config::default()).deny_purge);
    }

    #[test]
    fn an_open_bucket_is_locked_down_without_deleting() {
        let open = stream::Config {
            name: "KV_service_elections".into(),
            allow_rollup: true,
            max_bytes: -1,
            max_message_size: -1,
            ..Default::default()
        };
        let done = ELECTIONS.lock_down(&open, 1000);
        assert_eq!(
            done.changes,
            [
                "rollups allowed -> refused",
                "max value size none -> 4 KiB",
                "max bytes none -> 8 MiB"
            ]
        );
        assert!(!done.config.allow_rollup && done.kept.is_none());
        // A byte limit raised by hand is kept; only a missing one is set.
        let raised = stream::Config {
            max_bytes: 4 * ELECTIONS.max_bytes,
            ..done.config.clone()
        };
        let again = ELECTIONS.lock_down(&raised, 1000);
        assert!(again.changes.is_empty(), "{:?}", again.changes);
        assert_eq!(again.config.max_bytes, 4 * ELECTIONS.max_bytes);
        let full = ELECTIONS.lock_down(&open, 100 * 1024 * 1024);
        assert_eq!(full.config.max_bytes, -1);
        assert!(full.kept.unwrap().contains("would delete"));
        // Tighter limits an operator chose are kept.
        let tight = stream::Config {
            max_bytes: 1024,
            max_message_size: 512,
            ..open.clone()
        };
        assert_eq!(ELECTIONS.lock_down(&tight, 0).changes.len(), 1);
        // The registry keeps its rollups (its limit markers need them).
        assert_eq!(
            REGISTRY.lock_down(&open, 0).changes,
            ["max value size none -> 32 KiB", "max bytes none -> 64 MiB"]
        );
    }
}
