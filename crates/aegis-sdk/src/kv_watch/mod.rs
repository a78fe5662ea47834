//! One watch of a KV bucket feeding an in-memory view, robust to everything
//! the server can do to it. The registry view (`registry/cache.rs`, its
//! records decoded in `registry/watch.rs`) and the election view
//! (`election/view.rs`) both run on it, each started by [`start()`].
//!
//! A session is an ephemeral push consumer on the watched keys that first
//! delivers the last value of every key (the initial load, collected aside
//! and handed over whole once complete) and then every change as it lands.
//! Idle heartbeats every second prove the session alive. It is abandoned,
//! and a fresh one (a full re-load) opened with back-off, when:
//!
//! - no message or heartbeat arrived for three heartbeat intervals (the
//!   consumer's server died),
//! - a heartbeat is late and the server says the consumer, or its stream,
//!   no longer exists (deleted with its bucket: a deleted stream tells its
//!   consumers nothing),
//! - a consumer sequence is skipped (a message was lost),
//! - the client lost its connection, or made a new one since the session
//!   opened, however briefly (messages may have been missed, and a marker
//!   may have expired meanwhile).
//!
//! A fresh load rather than a resume keeps the view exact even when
//! removal markers expired during the break.
//!
//! **A watch's scope** ([`Scope`]) is a set of key filters that may
//! change while it runs (the registry view follows only the services its
//! process uses; the election view's never changes). A change of scope ends the session and opens one on
//! the new filters at once (one consumer with several filter subjects);
//! its load replaces the view as any load does, so keys that left the
//! scope leave the view and keys that joined it come in. The view keeps
//! serving meanwhile, and is not counted as broken. An empty scope opens
//! no consumer at all. While no session is healthy,
//! the last view keeps serving (stale-on-error) and reports its staleness.
//!
//! **A bucket created again** (deleted by an operator, restored from a
//! backup) starts its revisions over, so they may equal or fall below the
//! ones the view remembers, and anything the view derived from them (a
//! local eviction until a newer revision, the highest fencing epoch seen)
//! would be wrong. Each session therefore identifies the bucket by its
//! stream's creation time, read before and after the consumer is created
//! (a session that straddles a re-creation is dropped and opened again),
//! and hands its load over as *fresh* when the bucket is not the one the
//! previous load came from: the view then rebuilds itself from the load
//! alone.
//!
//! **A scope no load covers yet** (a process starting, a service newly in
//! scope) whose session cannot open (JetStream creating no consumers while
//! its cluster elects a meta leader) is loaded from the bucket's replicas
//! instead ([`snapshot`]), and the view serves that (`Sink::on_snapshot`)
//! until a session loads. So is the scope of a view whose bucket's lookup
//! is not answered yet (its stream electing a leader): [`start()`] loads it
//! by the bucket's name while looking the bucket up again. Once a
//! session has loaded, the view never takes a snapshot again: a replica's
//! values may be a few writes older than what the session delivered.
//!
//! **A view that takes refreshes** (`Sink::refreshes`: the registry and
//! election views and the public `crate::kv::mirror`) is handed the replicas' values every half second
//! while a watch that had loaded is broken (`Sink::on_refresh`), and keeps
//! only what is newer than what it holds, so a write made while JetStream
//! creates no consumers reaches it anyway.
//!
//! Why one module of over 500 lines: the follow loop and its sessions (a
//! consumer's lifetime, the bucket's identity, the staleness reported)
//! decide together when a view is fresh, stale or rebuilt; what stands
//! alone is in `snapshot` and `start`.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::{
    Client, StatusCode,
    connection::State,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, push},
        context::ConsumerInfoErrorKind,
        kv,
    },
};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

mod snapshot;
mod start;

use snapshot::BucketNames;
pub(crate) use start::{LOOKUP_BEFORE_SNAPSHOT, Lookup, Reader, Watch, start};

/// How often the server proves an idle session alive.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a session counts as dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// Silence after which the session asks whether its consumer still
/// exists: a heartbeat a quarter of a second late. A deleted bucket takes
/// its stream's consumers with it and tells them nothing; asking turns the
/// three seconds of silence it would take to notice into about one
/// (`aegis-monitor/tests/epoch_trust.rs`: the leader of a recreated
/// elections bucket shown after 3.0 s without asking).
const SILENCE_PROBE: Duration = Duration::from_millis(1250);
/// How long that question may take; unanswered, the silence limit judges.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// The least time between two such questions of one session. A server so
/// loaded that its heartbeats run late would otherwise be asked by every
/// idle watch about once a second (a thousand instances: a thousand
/// requests a second) just when it is slow; this caps it at a fifth of
/// that. A deletion soon after a question is still noticed, by the
/// silence limit.
const PROBE_GAP: Duration = Duration::from_secs(5);
/// How often the client's connection state is checked.
const STATE_CHECK: Duration = Duration::from_millis(200);
/// How often a watch whose opening was cut off looks whether its client is
/// connected again.
const RECONNECT_CHECK: Duration = Duration::from_millis(20);
/// First and longest wait between attempts to open a session.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// The longest attempt to open a session for the first
/// [`OPEN_ATTEMPTS_CAPPED`] failures in a row, and the longest pause between
/// two. Opening takes a few milliseconds when JetStream answers; the bound
/// is how far a view may trail JetStream's return after a node died (4-9
/// s): a request sent just before the bucket's stream (or the meta group)
/// had a leader again goes unanswered, and the next is sent at most 3 s
/// later. Measured with the monitor's election keys
/// (`aegis-monitor/tests/node_loss.rs`): with attempts growing to 8 s and
/// pauses to 2 s, a takeover showed up to 3.3 s after it happened.
const OPEN_ATTEMPT_MAX: Duration = Duration::from_secs(2);
/// Failures in a row after which attempts grow again (to 8 s): a
/// JetStream that is slow rather than silent (many clients creating
/// consumers at once) still gets the time it needs.
const OPEN_ATTEMPTS_CAPPED: u32 = 5;
const OPEN_PAUSE_MAX: Duration = Duration::from_secs(1);
/// How long the server keeps an abandoned consumer with nobody listening
/// (the only way one goes: see `Session::abandon`).
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(10);

const HEADER_KV_OPERATION: &str = "KV-Operation";
const HEADER_MARKER_REASON: &str = "Nats-Marker-Reason";
const HEADER_LAST_CONSUMER: &str = "Nats-Last-Consumer";
const HEADER_CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";

/// How a key left the bucket, from the marker the server stored.
///
/// ```
/// use aegis_sdk::kv::Removal;
/// // A reader that shows deletions and purges alike:
/// fn label(how: Removal) -> &'static str {
///     match how {
///         Removal::Purged => "purged",
///         _ => "deleted",
///     }
/// }
/// assert_eq!(label(Removal::Expired), "deleted");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removal {
    /// Its TTL ran out (the server's limit marker, reason `MaxAge`).
    Expired,
    /// Purged (`KV-Operation: PURGE`, or the marker of a purge).
    Purged,
    /// Deleted (`KV-Operation: DEL`), or removed for another reason.
    Deleted,
}

/// Whether a stored message removes its key, and how: the server's limit
/// marker for an expired TTL (`Nats-Marker-Reason: MaxAge`), a purge, or a
/// delete. For readers of a bucket's raw messages (a feed, a stream read).
///
/// ```
/// let mut headers = async_nats::HeaderMap::new();
/// headers.insert("Nats-Marker-Reason", "MaxAge");
/// assert_eq!(aegis_sdk::kv::removal_of(&headers), Some(aegis_sdk::kv::Removal::Expired));
/// assert_eq!(aegis_sdk::kv::removal_of(&async_nats::HeaderMap::new()), None);
/// ```
pub fn removal_of(headers: &async_nats::HeaderMap) -> Option<Removal> {
    if let Some(marker) = headers.get(HEADER_MARKER_REASON) {
        return Some(match marker.as_str() {
            "MaxAge" => Removal::Expired,
            "Purge" => Removal::Purged,
            _ => Removal::Deleted,
        });
    }
    match headers.get(HEADER_KV_OPERATION).map(|op| op.as_str()) {
        None | Some("PUT") => None,
        Some("PURGE") => Some(Removal::Purged),
        Some(_) => Some(Removal::Deleted),
    }
}

/// A warning logged at most once per [`Throttled::EVERY`] per process,
/// with a count of the ones not logged in between: a flood of what it
/// warns of (junk records in a bucket every process watches, say) must not
/// multiply into every watcher's log.
pub(crate) struct Throttled {
    /// When it was last logged (ms since the process's first use, plus
    /// one; 0 for never).
    last: std::sync::atomic::AtomicU64,
    /// How many went unlogged since.
    unlogged: std::sync::atomic::AtomicU64,
}

impl Throttled {
    /// The interval: one line per 10 s, as the RPC server's refusals.
    pub(crate) const EVERY: Duration = Duration::from_secs(10);

    pub(crate) const fn new() -> Self {
        Self {
            last: std::sync::atomic::AtomicU64::new(0),
            unlogged: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// `Some(n)` when this one is to be logged, `n` the ones not logged
    /// since the last; `None` (counted) otherwise.
    pub(crate) fn due(&self) -> Option<u64> {
        static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        let epoch = *EPOCH.get_or_init(std::time::Instant::now);
        let now = u64::try_from(epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let every = u64::try_from(Self::EVERY.as_millis()).unwrap_or(u64::MAX);
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= every;
        if !due
            || self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// Rollups seen on a watched bucket (see [`warn_of_rollup`]).
static ROLLUPS: Throttled = Throttled::new();

/// Warns (throttled) of a message with a `Nats-Rollup` header on `key` of
/// `bucket`: the server removed every other key of the bucket (`all`) or
/// the key's older values (`sub`), without removal markers, so no watcher
/// is told of those removals. Aegis itself never sends one; the shared
/// buckets but the registry refuse them (`crate::kv::SharedBucket`).
fn warn_of_rollup(bucket: &str, key: &str, rollup: &str) {
    if let Some(also) = ROLLUPS.due() {
        warn!(
            bucket,
            key,
            rollup,
            also_seen = also,
            "a rollup was sent to this key: the server removed {} without telling any watcher;              whoever may write this key sent it (Aegis never does). Live instances write their              registry records again at their next refresh",
            if rollup == "all" {
                "every other key of the bucket"
            } else {
                "the key's older values"
            }
        );
    }
}

/// The latest value of one key.
#[derive(Debug, Clone)]
pub(crate) struct KvEntry {
    /// The key, without the bucket's subject prefix.
    pub(crate) key: String,
    /// Its value.
    pub(crate) value: Bytes,
    /// Its revision (stream sequence) in the bucket.
    pub(crate) revision: u64,
}

/// What a watch feeds.
pub(crate) trait Sink: Send + Sync + 'static {
    /// A session with this consumer starts.
    fn on_session(&self, consumer: String);
    /// The session's initial load: the latest value of every key that has
    /// one. `fresh` when the bucket is not the one the previous load came
    /// from (created again): nothing derived from the old one may survive.
    /// `through`: the highest revision the load covers, removal markers
    /// included (0 for an empty bucket).
    fn on_load(&self, entries: Vec<KvEntry>, fresh: bool, through: u64);
    /// A key was written after the load.
    fn on_put(&self, entry: KvEntry);
    /// A key was deleted, purged or expired after the load, by the marker
    /// stored at `revision`.
    fn on_remove(&self, key: &str, removal: Removal, revision: u64);
    /// The session applied the message with this consumer sequence.
    fn on_applied(&self, consumer_sequence: u64);
    /// The initial load is in: the view is current.
    fn on_synced(&self);
    /// The load just handed over is a snapshot read from the bucket's
    /// replicas (see `snapshot.rs`), not a session's: the view may serve
    /// it, but counts as broken until a session loads.
    fn on_snapshot(&self);
    /// The session broke; the view keeps serving what it has.
    fn on_broken(&self);
    /// Whether the view takes [`on_refresh`](Self::on_refresh): only then
    /// are the replicas read while its watch is broken.
    fn refreshes(&self) -> bool {
        false
    }
    /// While the view serves a load and its watch is broken: the last
    /// values the bucket's replicas hold, read every
    /// `snapshot::REFRESH_EVERY`. A replica may be behind what the view
    /// holds, and a key it lacks says nothing: take only what is newer, a
    /// revision above the one the view has for that key, or, for a key it
    /// lacks, above `floor`: the highest revision the view was handed
    /// (loads with their removal markers, changes, removals) or an earlier
    /// refresh read up to. A key the view lacks at or below it was removed.
    fn on_refresh(&self, _entries: Vec<KvEntry>, _floor: u64) {}
    /// The view now holds everything in the scope of this generation
    /// (scoped watches only).
    fn on_scope_synced(&self, _generation: u64) {}
}

/// What a scoped watch follows: key filters (without the bucket's prefix)
/// and a generation that grows with every change, so a waiter can tell
/// when the view covers what it asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    /// Bumped on every change.
    pub(crate) generation: u64,
    /// The key filters; none means nothing is watched.
    pub(crate) keys: Vec<String>,
}

impl Scope {
    /// The key filters as subjects of the bucket whose keys have `prefix`
    /// (what a consumer filters on, and what a snapshot asks for).
    fn subjects(&self, prefix: &str) -> Vec<String> {
        self.keys.iter().map(|k| format!("{prefix}{k}")).collect()
    }

    /// Hands `sink` the view of an empty scope: nothing to follow, so an
    /// empty load, current at once, and no consumer.
    fn load_empty<S: Sink>(&self, sink: &S) {
        sink.on_load(Vec::new(), false, 0);
        sink.on_synced();
        sink.on_scope_synced(self.generation);
    }
}

/// Why a session ended.
enum End {
    /// Cancelled: stop.
    Cancelled,
    /// The scope changed: open the next session at once.
    Rescoped,
    /// It broke, for this reason.
    Broken(String),
}

/// Feeds the watch's sink from `store`, following the keys its scope names
/// as they change, until it is cancelled or its scope closes; a load
/// already covered scope generation `covered`, and the view was handed the
/// bucket up to revision `floor` (see `snapshot::Refresher`).
async fn follow<S: Sink>(store: kv::Store, watch: Watch<S>, mut covered: Option<u64>, floor: u64) {
    let Watch {
        bucket: _,
        description,
        reader: Reader { js, client, drops },
        mut scope,
        sink,
        cancel,
    } = watch;
    let names = BucketNames::of_store(&store);
    // Whether a session's load ever came in: from then on, the view is
    // never loaded from a snapshot again (a replica's values may be a few
    // writes older than what a session delivered).
    let mut watched = false;
    // Whether the last session broke or the last attempt failed: while the
    // view serves a load (a session's, or a snapshot) and its watch is
    // broken, a view that takes refreshes gets them from the replicas.
    let mut broken = false;
    let mut refresher = snapshot::Refresher::new(&client, &names, &*sink, floor);
    let mut failures: u32 = 0;
    let mut bucket: Option<time::OffsetDateTime> = None;
    loop {
        let current = scope.borrow_and_update().clone();
        if current.keys.is_empty() {
            current.load_empty(&*sink);
            covered = Some(current.generation);
            tokio::select! {
                () = cancel.cancelled() => return,
                changed = scope.changed() => if changed.is_err() { return },
            }
            continue;
        }
        // Opening takes JetStream requests; if the connection drops under
        // them their replies cannot come, so it starts over as soon as the
        // client is connected again rather than wait out their timeout. Not
        // a failure: no back-off. (A consumer created just before the drop
        // has nobody listening and goes after INACTIVE_THRESHOLD.)
        let opening =
            drops
                .dropped()
                .guard(Session::open(&store, &js, &client, &current, description));
        // Bounded by an attempt that grows with the failures, up to
        // OPEN_ATTEMPT_MAX for the first few: a request lost while the bucket's stream chose
        // a leader is never answered, and the view stays behind until the
        // attempt ends, however soon JetStream answers again. Before any
        // session loaded, the first is shorter, so that a snapshot stands
        // in sooner.
        let first = if watched {
            crate::streams::ASK_ATTEMPT_FIRST
        } else {
            LOOKUP_BEFORE_SNAPSHOT
        };
        let attempt = crate::streams::ask_attempt(first, failures);
        let attempt = if failures < OPEN_ATTEMPTS_CAPPED {
            attempt.min(OPEN_ATTEMPT_MAX)
        } else {
            attempt
        };
        let serving = watched || covered == Some(current.generation);
        let opened = refresher.during(serving && broken, &current, async {
            tokio::select! {
                () = cancel.cancelled() => None,
                opened = tokio::time::timeout(attempt, opening) => Some(opened.unwrap_or_else(|_| {
                    Ok(Err(format!(
                        "JetStream did not answer within {attempt:?} (choosing a leader for the bucket's stream?)"
                    )
                    .into()))
                })),
            }
        })
        .await;
        let Some(opened) = opened else { return };
        let Ok(opened) = opened else {
            debug!(
                "the connection dropped while the {description} opened; opening it again once reconnected"
            );
            tokio::select! {
                () = cancel.cancelled() => return,
                () = connected(&client) => {}
            }
            continue;
        };
        match opened {
            Ok(mut session) => {
                if failures > 0 {
                    info!(bucket = %store.name, consumer = %session.consumer, "{description} re-established");
                }
                failures = 0;
                broken = false;
                session.fresh = bucket.is_some_and(|b| b != session.bucket);
                if session.fresh {
                    info!(bucket = %store.name, "the bucket was created again; rebuilding the view from it");
                }
                sink.on_session(session.consumer.clone());
                let end = session
                    .run(&store, &js, &client, &*sink, &mut scope, &cancel)
                    .await;
                if session.loading.is_none() {
                    covered = Some(session.generation);
                    watched = true;
                    // The bucket the view now holds. Taken only once its
                    // load was handed over: a session on a bucket created
                    // again that ends before (a rescope, a reconnect) leaves
                    // the next one to load it as new, not over the old
                    // bucket's view.
                    bucket = Some(session.bucket);
                }
                if session.fresh {
                    refresher.restart_at(session.read_to);
                } else {
                    refresher.read_to(session.read_to);
                }
                session.abandon(&store);
                match end {
                    End::Cancelled => return,
                    End::Rescoped => continue,
                    // A stop (`Connection::drain` stops the watches, then
                    // drains the client) may close the subscription before
                    // this loop sees the cancellation: nothing broke.
                    End::Broken(_) if cancel.is_cancelled() => return,
                    End::Broken(reason) => {
                        warn!(bucket = %store.name, %reason, "{description} broke; serving the last known view while re-creating it");
                        sink.on_broken();
                        broken = true;
                    }
                }
            }
            Err(e) => {
                failures += 1;
                sink.on_broken();
                broken = true;
                if failures == 1 || failures.is_power_of_two() {
                    warn!(bucket = %store.name, error = %crate::startup::Causes(&*e), attempt = failures, "cannot open the {description}; retrying");
                } else {
                    debug!(bucket = %store.name, error = %crate::startup::Causes(&*e), attempt = failures, "cannot open the {description}; retrying");
                }
                if !watched
                    && covered != Some(current.generation)
                    && let Some(through) =
                        snapshot::serve(&client, &names, &current, description, &*sink).await
                {
                    covered = Some(current.generation);
                    refresher.read_to(through);
                }
            }
        }
        let delay = RETRY_INITIAL
            .saturating_mul(1 << failures.min(5))
            .min(OPEN_PAUSE_MAX);
        // A snapshot may have come in since the attempt.
        let serving = watched || covered == Some(current.generation);
        let paused = refresher
            .during(serving && broken, &current, async {
                tokio::select! {
                    () = cancel.cancelled() => false,
                    () = tokio::time::sleep(delay) => true,
                }
            })
            .await;
        if !paused {
            return;
        }
    }
}

/// Returns once `client` is connected (at once when it is).
async fn connected(client: &Client) {
    while client.connection_state() != State::Connected {
        tokio::time::sleep(RECONNECT_CHECK).await;
    }
}

/// When the bucket's stream was created: what tells one incarnation of a
/// bucket from the next.
async fn bucket_created(
    js: &jetstream::Context,
    store: &kv::Store,
) -> Result<time::OffsetDateTime, async_nats::Error> {
    let stream = js.get_stream(&store.stream_name).await?;
    Ok(stream.cached_info().created)
}

struct Session {
    subscriber: async_nats::Subscriber,
    consumer: String,
    /// The bucket this session reads (its stream's creation time).
    bucket: time::OffsetDateTime,
    /// Whether the load goes over as fresh.
    fresh: bool,
    /// The initial load being collected; `None` once it was handed over.
    loading: Option<std::collections::HashMap<String, KvEntry>>,
    /// The highest revision this session delivered, removal markers
    /// included.
    read_to: u64,
    /// Last values the server had to deliver when the consumer was created.
    initial_pending: u64,
    /// The scope generation this session follows.
    generation: u64,
    last_consumer_sequence: u64,
    /// The client's count of connections made when the session opened: a
    /// reconnect, however brief, may have lost deliveries.
    connects: u64,
}

impl Session {
    async fn open(
        store: &kv::Store,
        js: &jetstream::Context,
        client: &Client,
        scope: &Scope,
        description: &str,
    ) -> Result<Session, async_nats::Error> {
        if client.connection_state() != State::Connected {
            return Err("not connected to NATS".into());
        }
        let connects = client.statistics().connects.load(Ordering::Relaxed);
        let before = bucket_created(js, store).await?;
        let inbox = client.new_inbox();
        // Subscribe first so nothing delivered right after creation is lost.
        let subscriber = client.subscribe(inbox.clone()).await?;
        let mut filters = scope.subjects(&store.prefix);
        // One filter goes in `filter_subject` (any server); several in
        // `filter_subjects` (2.10+, which the SDK requires anyway).
        let (filter_subject, filter_subjects) = if filters.len() == 1 {
            (filters.remove(0), Vec::new())
        } else {
            (String::new(), filters)
        };
        let consumer = store
            .stream
            .create_consumer(push::Config {
                deliver_subject: inbox,
                description: Some(description.to_owned()),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                filter_subject,
                filter_subjects,
                replay_policy: ReplayPolicy::Instant,
                flow_control: true,
                idle_heartbeat: IDLE_HEARTBEAT,
                inactive_threshold: INACTIVE_THRESHOLD,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await?;
        let info = consumer.cached_info().clone();
        let after = bucket_created(js, store).await;
        if after.as_ref().ok() != Some(&before) {
            // Left to the server, as every abandoned consumer (see
            // `Session::abandon`).
            drop(subscriber);
            return Err("the bucket was replaced while the watch opened".into());
        }
        debug!(consumer = %info.name, pending = info.num_pending, "watch opened");
        Ok(Session {
            subscriber,
            consumer: info.name.clone(),
            bucket: before,
            fresh: false,
            loading: Some(std::collections::HashMap::new()),
            read_to: 0,
            initial_pending: info.num_pending,
            generation: scope.generation,
            last_consumer_sequence: 0,
            connects,
        })
    }

    /// Applies messages until the session breaks, the scope changes or
    /// `cancel` fires.
    async fn run<S: Sink>(
        &mut self,
        store: &kv::Store,
        js: &jetstream::Context,
        client: &Client,
        sink: &S,
        scope: &mut tokio::sync::watch::Receiver<Scope>,
        cancel: &CancellationToken,
    ) -> End {
        // An empty bucket delivers nothing: the load is complete at once.
        if self.initial_pending == 0 {
            self.finish_load(sink);
        }
        let silence = tokio::time::sleep(SILENCE_LIMIT);
        tokio::pin!(silence);
        // Asked once a heartbeat is late, and at most once per PROBE_GAP:
        // after a question the next is due no sooner than that (past the
        // silence limit, unless a message comes meanwhile).
        let probe = tokio::time::sleep(SILENCE_PROBE);
        tokio::pin!(probe);
        let mut next_probe = tokio::time::Instant::now();
        let mut state_check = tokio::time::interval(STATE_CHECK);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return End::Cancelled,
                changed = scope.changed() => {
                    // A closed scope: whoever owned the view is gone.
                    return if changed.is_ok() { End::Rescoped } else { End::Cancelled };
                }
                () = &mut silence => {
                    return End::Broken(format!("no message or heartbeat for {SILENCE_LIMIT:?}"));
                }
                () = &mut probe => {
                    next_probe = tokio::time::Instant::now() + PROBE_GAP;
                    probe.as_mut().reset(next_probe);
                    if let Some(reason) = self.consumer_gone(store).await {
                        return End::Broken(reason);
                    }
                }
                _ = state_check.tick() => {
                    if client.connection_state() != State::Connected {
                        return End::Broken("the NATS connection was lost".to_owned());
                    }
                    // Reconnected between two checks (a move off a server
                    // in lame duck mode takes milliseconds): deliveries may
                    // have gone to the closed connection, and the consumer
                    // may have lived on the server that went away.
                    if client.statistics().connects.load(Ordering::Relaxed) != self.connects {
                        return End::Broken("the NATS connection was re-established".to_owned());
                    }
                }
                message = self.subscriber.next() => {
                    let Some(message) = message else {
                        return End::Broken("the watch subscription closed".to_owned());
                    };
                    let now = tokio::time::Instant::now();
                    silence.as_mut().reset(now + SILENCE_LIMIT);
                    probe.as_mut().reset((now + SILENCE_PROBE).max(next_probe));
                    if let Err(reason) = self.handle(message, js, store, client, sink).await {
                        return End::Broken(reason);
                    }
                }
            }
        }
    }

    /// Why the session is over when the server says its consumer (or the
    /// consumer's stream) no longer exists; `None` for any other answer,
    /// or none within [`PROBE_TIMEOUT`] (JetStream choosing a leader), which
    /// leave it to the silence limit.
    async fn consumer_gone(&self, store: &kv::Store) -> Option<String> {
        let asked = tokio::time::timeout(PROBE_TIMEOUT, store.stream.consumer_info(&self.consumer));
        match asked.await {
            Ok(Err(e))
                if matches!(
                    e.kind(),
                    ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound
                ) =>
            {
                Some(format!(
                    "the watch's consumer is gone ({e}); was the bucket deleted?"
                ))
            }
            _ => None,
        }
    }

    fn finish_load<S: Sink>(&mut self, sink: &S) {
        if let Some(loaded) = self.loading.take() {
            debug!(keys = loaded.len(), fresh = self.fresh, "view loaded");
            let mut entries: Vec<KvEntry> = loaded.into_values().collect();
            entries.sort_by_key(|e| e.revision);
            sink.on_load(entries, self.fresh, self.read_to);
            sink.on_synced();
            sink.on_scope_synced(self.generation);
        }
    }

    async fn handle<S: Sink>(
        &mut self,
        message: async_nats::Message,
        js: &jetstream::Context,
        store: &kv::Store,
        client: &Client,
        sink: &S,
    ) -> Result<(), String> {
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {
                // Flow-control requests carry a reply subject; answering
                // lets the server keep sending.
                if let Some(reply) = &message.reply {
                    let _ = client.publish(reply.clone(), Bytes::new()).await;
                }
                if let Some(headers) = &message.headers {
                    if let Some(stalled) = headers.get(HEADER_CONSUMER_STALLED) {
                        let _ = client
                            .publish(stalled.as_str().to_owned(), Bytes::new())
                            .await;
                    }
                    if let Some(last) = headers.get(HEADER_LAST_CONSUMER)
                        && last.as_str().parse::<u64>().ok() != Some(self.last_consumer_sequence)
                    {
                        return Err(format!(
                            "the server delivered up to {} but this watch saw {}",
                            last.as_str(),
                            self.last_consumer_sequence
                        ));
                    }
                }
                return Ok(());
            }
            Some(status) => {
                return Err(format!(
                    "the server ended the watch ({status} {})",
                    message.description.as_deref().unwrap_or("")
                ));
            }
            None => {}
        }
        let message = jetstream::Message {
            message,
            context: js.clone(),
        };
        let (consumer_sequence, stream_sequence, pending) = match message.info() {
            Ok(info) => (info.consumer_sequence, info.stream_sequence, info.pending),
            Err(e) => return Err(format!("unreadable delivery metadata: {e}")),
        };
        self.read_to = self.read_to.max(stream_sequence);
        if consumer_sequence != self.last_consumer_sequence + 1 {
            return Err(format!(
                "a message was skipped (expected {}, got {consumer_sequence})",
                self.last_consumer_sequence + 1
            ));
        }
        self.last_consumer_sequence = consumer_sequence;
        if let Some(key) = message.subject.as_str().strip_prefix(store.prefix.as_str()) {
            if let Some(rollup) = message
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_ROLLUP))
            {
                warn_of_rollup(&store.name, key, rollup.as_str());
            }
            let removal = message.headers.as_ref().and_then(removal_of);
            match (&mut self.loading, removal) {
                (Some(loading), Some(_)) => {
                    loading.remove(key);
                }
                (Some(loading), None) => {
                    let entry = KvEntry {
                        key: key.to_owned(),
                        value: message.payload.clone(),
                        revision: stream_sequence,
                    };
                    loading.insert(entry.key.clone(), entry);
                }
                (None, Some(removal)) => sink.on_remove(key, removal, stream_sequence),
                (None, None) => sink.on_put(KvEntry {
                    key: key.to_owned(),
                    value: message.payload.clone(),
                    revision: stream_sequence,
                }),
            }
        }
        if pending == 0 {
            self.finish_load(sink);
        }
        sink.on_applied(consumer_sequence);
        Ok(())
    }

    /// Stops listening; the server removes the consumer once nobody has
    /// listened for [`INACTIVE_THRESHOLD`]. It is not deleted: a reader
    /// of a bucket it does not own (a service, the monitor on the registry
    /// and elections) may not delete consumers there under the users of
    /// `aegis up` and the Helm chart, since an ephemeral consumer's
    /// server-chosen name cannot be granted apart from every other
    /// reader's; a refused delete would be a permission violation in the
    /// server's log and this process's on every rescope and stop.
    fn abandon(self, _store: &kv::Store) {
        drop(self.subscriber);
    }
}
