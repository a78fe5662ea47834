//! Creating the JetStream streams Aegis uses (`EVENTS`, `COMMANDS`,
//! `DEAD_LETTER`, and the monitor's `AEGIS_METRICS` and `AEGIS_LOG`), always
//! bounded by the configured [`StreamLimits`].
//!
//! A stream is created with its limits. An existing stream keeps the
//! limits it has — an operator may have tuned them, and processes with
//! different configurations must not fight over them — even none at all
//! (no byte and no message limit: made so by hand, or made by an SDK
//! from before its streams were bounded): bounding it would delete its
//! oldest messages at once, so it is said (a WARN, which reaches the
//! instance's log in the monitor) and left to `aegis init --apply-limits`. Only `aegis init` changes an
//! existing stream's limits to the configuration's, and only those its
//! file sets ([`limits_set_in_file`], [`Limit`]); a lower one (no limit
//! counts as the highest) only with `--apply-limits`.
//!
//! Creating a replicated stream or bucket waits, briefly, for the
//! cluster's peers to take its replicas, or for JetStream to answer
//! ([`with_placement_patience`]).

use async_nats::jetstream::{
    self,
    context::CreateStreamErrorKind,
    stream::{self, Stream},
};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::{StreamLimits, connection::refusals::Refusing};

/// How long creating a replicated stream or bucket waits for peers to
/// take its replicas (see [`with_placement_patience`]).
pub const PLACEMENT_PATIENCE: Duration = Duration::from_secs(10);

/// How long a bucket's lookup is asked again while unanswered
/// ([`look_up_bucket`]) before the bucket is created instead: the default
/// request timeout, what the one lookup used to wait.
const LOOKUP_PATIENCE: Duration = Duration::from_secs(5);

/// How long the lookup of a bucket whose name is taken is asked again
/// while unanswered ([`create_or_find_bucket`]).
const TAKEN_PATIENCE: Duration = Duration::from_secs(20);
/// Its first attempt: short, since a lookup sent while the stream has no
/// leader is never answered, and the next one should go soon after.
const TAKEN_ATTEMPT_FIRST: Duration = Duration::from_millis(500);

/// The first attempt of a JetStream request that may go unanswered
/// ([`ask_attempt`]), unless its asker says otherwise.
pub(crate) const ASK_ATTEMPT_FIRST: Duration = Duration::from_secs(1);

/// How long attempt `tries` (counted from 0) of a JetStream request that
/// may go unanswered waits for its answer before it is sent again: `first`
/// doubled per try, up to eight times `first` (1, 2, 4, then 8 s from
/// [`ASK_ATTEMPT_FIRST`]).
///
/// A request that reaches a cluster while it chooses a stream's leader (a
/// NATS node just stopped) is never answered, even once the leader is
/// chosen: waiting out the request's whole timeout (5 s by default) for it
/// keeps a new view from loading for that long after JetStream answers
/// again. Short first attempts ask again soon; the longer ones after them
/// leave a JetStream that is only slow the time it needs.
pub(crate) fn ask_attempt(first: Duration, tries: u32) -> Duration {
    first.saturating_mul(1 << tries.min(3))
}

/// Runs `ask`, a JetStream request that is safe to send again (a lookup,
/// a check), in attempts of [`ask_attempt`] from `first`, sending it again
/// while it goes unanswered, for up to `patience` in all (the last attempt
/// gets what is left). What an attempt that ended returned, answer or
/// error; `None` when none ended within `patience`.
pub(crate) async fn ask_while_silent<T, F, Fut>(
    what: &str,
    first: Duration,
    patience: Duration,
    mut ask: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let deadline = crate::clock::deadline(tokio::time::Instant::now(), patience);
    let mut tries = 0;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let attempt = ask_attempt(first, tries).min(left);
        match tokio::time::timeout(attempt, ask()).await {
            Ok(answer) => return Some(answer),
            Err(_) => {
                debug!(what, ?attempt, "JetStream did not answer; asking again");
                tries += 1;
            }
        }
    }
}

/// Looks up the KV bucket `bucket`, asked again while unanswered
/// ([`ask_while_silent`], for up to [`LOOKUP_PATIENCE`]): a lookup lost
/// while the bucket's stream chose a leader would otherwise hold a new
/// view for the request's whole timeout. `None` when JetStream never
/// answered; the caller then creates the bucket, as for one not found.
pub(crate) async fn look_up_bucket(
    js: &jetstream::Context,
    bucket: &str,
) -> Option<Result<jetstream::kv::Store, jetstream::context::KeyValueError>> {
    ask_while_silent(bucket, ASK_ATTEMPT_FIRST, LOOKUP_PATIENCE, || {
        js.get_key_value(bucket)
    })
    .await
}

/// Creates the KV bucket `config` names ([`with_placement_patience`]), or
/// finds it when JetStream says its name is taken (10058): the bucket
/// exists, perhaps with other settings than asked (a tool asking for one
/// replica of a cluster's three), and its lookup went unanswered because
/// its stream was choosing a leader (a NATS node just died). The lookup is
/// then asked again while unanswered or refused for up to
/// 20 s, longer than a stream takes to elect a leader (4 to 9 s, more on
/// a busy machine), instead of failing the process that starts in those
/// seconds. After any other
/// refusal it is looked up once more.
///
/// ```no_run
/// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), async_nats::Error> {
/// use async_nats::jetstream::kv;
/// use aegis_sdk::streams::create_or_find_bucket;
///
/// let config = kv::Config { bucket: "orders".into(), history: 1, ..Default::default() };
/// let store = create_or_find_bucket(&js, config).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The creation's error when the bucket can be neither created nor found.
pub async fn create_or_find_bucket(
    js: &jetstream::Context,
    config: jetstream::kv::Config,
) -> Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError> {
    let bucket = config.bucket.clone();
    create_or_find_bucket_with(js, &bucket, || js.create_key_value(config.clone())).await
}

/// [`create_or_find_bucket`] with `create` making the bucket (the shared
/// buckets make their stream themselves, with rollups refused:
/// [`create_or_find_shared_bucket`](crate::kv::create_or_find_shared_bucket)).
pub(crate) async fn create_or_find_bucket_with<F, Fut>(
    js: &jetstream::Context,
    bucket: &str,
    create: F,
) -> Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<
            Output = Result<jetstream::kv::Store, jetstream::context::CreateKeyValueError>,
        >,
{
    match with_placement_patience(bucket, create).await {
        Ok(store) => Ok(store),
        Err(taken) if name_taken(&taken) => {
            debug!(
                bucket,
                "the bucket exists but did not answer its lookup; asking again"
            );
            // Unanswered ([`ask_while_silent`]), or answered with an error
            // (a stream without a leader can be refused as well as left
            // silent): asked again, not sooner than a first attempt later.
            let deadline = crate::clock::deadline(tokio::time::Instant::now(), TAKEN_PATIENCE);
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                let lookup = || js.get_key_value(bucket);
                match ask_while_silent(bucket, TAKEN_ATTEMPT_FIRST, left, lookup).await {
                    Some(Ok(store)) => return Ok(store),
                    Some(Err(e)) => {
                        debug!(bucket, error = %crate::startup::Causes(&e), "the bucket's lookup was refused; asking again");
                        tokio::time::sleep(TAKEN_ATTEMPT_FIRST.min(left)).await;
                    }
                    None => return Err(taken),
                }
            }
        }
        // Any other refusal (a user who may read a bucket but not create
        // one, as a monitor): one more lookup, which may find it now.
        Err(e) => js.get_key_value(bucket).await.map_err(|_| e),
    }
}

/// Whether `err`, or an error it wraps, is JetStream refusing a stream's
/// creation because its name is taken (10058).
fn name_taken(err: &(dyn std::error::Error + 'static)) -> bool {
    let taken = |e: &jetstream::Error| e.error_code() == jetstream::ErrorCode::STREAM_NAME_EXIST;
    any_cause(err, |e| {
        matches!(creation_kind(e), Some(CreateStreamErrorKind::JetStream(js)) if taken(&js))
            || e.downcast_ref::<jetstream::Error>().is_some_and(taken)
    })
}

/// Whether `err`, or an error it wraps, is JetStream refusing to place a
/// stream's replicas because too few peers are online (10005, "no suitable
/// peers for placement"): seen in a cluster that has just started, before
/// its leader has seen every node.
///
/// ```
/// use aegis_sdk::streams::no_peers_for_placement;
///
/// let other = std::io::Error::other("something else");
/// assert!(!no_peers_for_placement(&other));
/// ```
pub fn no_peers_for_placement(err: &(dyn std::error::Error + 'static)) -> bool {
    let no_peers = |e: &jetstream::Error| e.error_code() == jetstream::ErrorCode::CLUSTER_NO_PEERS;
    any_cause(err, |e| {
        matches!(creation_kind(e), Some(CreateStreamErrorKind::JetStream(js)) if no_peers(&js))
            || e.downcast_ref::<jetstream::Error>().is_some_and(no_peers)
    })
}

/// Whether `err`, or an error it wraps, is a stream's creation that
/// JetStream did not answer within the request's timeout.
fn not_answered(err: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(err, |e| {
        creation_kind(e) == Some(CreateStreamErrorKind::TimedOut)
    })
}

/// Whether `found` holds for `err` or any error it wraps.
///
/// ```
/// use async_nats::jetstream::context::{PublishError, PublishErrorKind};
///
/// let e = PublishError::new(PublishErrorKind::TimedOut);
/// assert!(aegis_sdk::streams::any_cause(&e, |c| c.downcast_ref::<PublishError>().is_some()));
/// ```
pub fn any_cause(
    err: &(dyn std::error::Error + 'static),
    found: impl Fn(&(dyn std::error::Error + 'static)) -> bool,
) -> bool {
    std::iter::successors(Some(err), |e| e.source()).any(found)
}

/// How a stream's creation failed, when `e` is that failure.
fn creation_kind(e: &(dyn std::error::Error + 'static)) -> Option<CreateStreamErrorKind> {
    e.downcast_ref::<jetstream::context::CreateStreamError>()
        .map(jetstream::context::CreateStreamError::kind)
}

/// Runs `create` (the creation of a stream or a bucket named `what`, or a
/// change of its replicas) again
/// while JetStream refuses it for want of online peers
/// ([`no_peers_for_placement`]) or does not answer it in time, for up to
/// [`PLACEMENT_PATIENCE`]: pausing 100 ms, doubled up to a second. Any
/// other outcome is returned at once; past the patience, the last failure
/// itself.
///
/// A replicated bucket created right after its cluster started (`aegis
/// up`, a Kubernetes rollout) would otherwise fail the service starting
/// with it, though the peers come online a moment later; and a cluster
/// choosing its JetStream leaders may leave a creation unanswered for
/// seconds. Creating again is safe: a stream that exists with the same
/// settings is simply returned.
///
/// ```no_run
/// # async fn demo(js: async_nats::jetstream::Context) -> Result<(), async_nats::Error> {
/// use aegis_sdk::streams::with_placement_patience;
/// use async_nats::jetstream::kv;
///
/// let config = kv::Config { bucket: "orders".into(), num_replicas: 3, ..Default::default() };
/// let store = with_placement_patience("orders", || js.create_key_value(config.clone())).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// What the last call of `create` returned.
pub async fn with_placement_patience<T, E, F, Fut>(what: &str, mut create: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
    E: std::error::Error + 'static,
{
    let deadline = tokio::time::Instant::now() + PLACEMENT_PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        let e = match create().await {
            Err(e) => e,
            done => return done,
        };
        let why = if not_answered(&e) {
            "JetStream did not answer in time (choosing its leaders?)"
        } else if no_peers_for_placement(&e) {
            "JetStream has too few peers online to place it yet"
        } else {
            return Err(e);
        };
        if tokio::time::Instant::now() + pause > deadline {
            warn!(what, error = %crate::startup::Causes(&e), "{why}; giving up");
            return Err(e);
        }
        info!(what, "{why}; trying again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// The largest message `EVENTS` and `AEGIS_LOG` take (headers included),
/// 64 KiB. Every service publishes into these shared streams, which drop
/// their oldest messages when full: without a cap one publish of the
/// server's largest payload (1 MiB) took almost 1 % of `EVENTS`' default
/// 128 MiB and 3 % of `AEGIS_LOG`'s 32 MiB, and a red-team run pushed every
/// order and risk event out with 140 of them. Events and log records are
/// small JSON documents (an order's fields; a log line with its fields),
/// so 64 KiB leaves a wide margin; a larger one is refused by the stream
/// (an event's publish fails with the server's "message size exceeds
/// maximum allowed"; a forwarded log record is dropped). A cap
/// bounds what one message takes, not what many take: per-writer budgets
/// would (see docs/security.md).
pub const SHARED_STREAM_MAX_MESSAGE_SIZE: i32 = 64 * 1024;

/// The per-message cap of the stream `name`, where Aegis sets one:
/// [`SHARED_STREAM_MAX_MESSAGE_SIZE`] on `EVENTS` and `AEGIS_LOG`.
pub fn message_size_cap(name: &str) -> Option<i32> {
    use aegis_contracts::subjects::{EVENTS_STREAM, LOG_STREAM};
    (name == EVENTS_STREAM || name == LOG_STREAM).then_some(SHARED_STREAM_MAX_MESSAGE_SIZE)
}

/// `config` with `limits` applied, and its per-message cap where Aegis
/// sets one ([`message_size_cap`]).
///
/// ```
/// use aegis_sdk::{StreamsConfig, streams::bounded};
/// use async_nats::jetstream::stream;
///
/// let config = bounded(stream::Config { name: "EVENTS".into(), ..Default::default() }, &StreamsConfig::default().events);
/// assert!(config.max_bytes > 0 && config.max_messages > 0);
/// ```
pub fn bounded(mut config: stream::Config, limits: &StreamLimits) -> stream::Config {
    config.max_age = limits.max_age;
    config.max_bytes = i64::try_from(limits.max_bytes).unwrap_or(i64::MAX);
    config.max_messages = i64::try_from(limits.max_messages).unwrap_or(i64::MAX);
    if let Some(cap) = message_size_cap(&config.name) {
        config.max_message_size = cap;
    }
    config
}

/// One limit of a stream that [`StreamLimits`] sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// The oldest message kept (`max_age`).
    MaxAge,
    /// The most bytes stored, per replica (`max_bytes`).
    MaxBytes,
    /// The most messages stored (`max_messages`).
    MaxMessages,
}

impl Limit {
    /// Every limit, in the order the configuration lists them.
    pub const ALL: [Self; 3] = [Self::MaxAge, Self::MaxBytes, Self::MaxMessages];

    /// Its name in the configuration and in the server's stream config.
    pub fn name(self) -> &'static str {
        match self {
            Self::MaxAge => "max_age",
            Self::MaxBytes => "max_bytes",
            Self::MaxMessages => "max_messages",
        }
    }

    /// What a stream's `config` (as the server holds it) has: `None` for
    /// no limit; an age in nanoseconds.
    ///
    /// ```
    /// use aegis_sdk::streams::Limit;
    /// use async_nats::jetstream::stream;
    ///
    /// let config = stream::Config { max_messages: 10, max_bytes: -1, ..Default::default() };
    /// assert_eq!(Limit::MaxMessages.of_stream(&config), Some(10));
    /// assert_eq!(Limit::MaxBytes.of_stream(&config), None);
    /// assert_eq!(Limit::MaxAge.of_stream(&config), None);
    /// ```
    pub fn of_stream(self, config: &stream::Config) -> Option<u64> {
        let value = match self {
            Self::MaxAge => u64::try_from(config.max_age.as_nanos()).unwrap_or(u64::MAX),
            Self::MaxBytes => u64::try_from(config.max_bytes).unwrap_or(0),
            Self::MaxMessages => u64::try_from(config.max_messages).unwrap_or(0),
        };
        (value > 0).then_some(value)
    }

    /// What `limits` set it to, in the units of [`of_stream`](Self::of_stream).
    pub fn of_limits(self, limits: &StreamLimits) -> u64 {
        match self {
            Self::MaxAge => u64::try_from(limits.max_age.as_nanos()).unwrap_or(u64::MAX),
            Self::MaxBytes => limits.max_bytes,
            Self::MaxMessages => limits.max_messages,
        }
    }

    /// Sets it to `value` (units of [`of_stream`](Self::of_stream)) in a
    /// stream's `config`.
    pub fn set(self, config: &mut stream::Config, value: u64) {
        match self {
            Self::MaxAge => config.max_age = Duration::from_nanos(value),
            Self::MaxBytes => config.max_bytes = i64::try_from(value).unwrap_or(i64::MAX),
            Self::MaxMessages => config.max_messages = i64::try_from(value).unwrap_or(i64::MAX),
        }
    }
}

/// The limits of the stream section `section` (`events`, `commands`,
/// `dead_letter`, `metrics` or `log`: `[streams.<section>]`) that the TOML
/// configuration `file` sets itself; the others are the defaults
/// ([`crate::StreamsConfig`]).
///
/// # Errors
/// When the file cannot be read as TOML (the error names the file, not its
/// content, which may hold credentials).
pub fn limits_set_in_file(
    file: &std::path::Path,
    section: &str,
) -> Result<Vec<Limit>, crate::ConfigError> {
    use figment::{
        Profile, Provider,
        providers::{Format, Toml},
        value::Value,
    };
    let unreadable = || {
        crate::ConfigError::Parse(Box::new(figment::Error::from(format!(
            "{} cannot be read as a TOML configuration",
            file.display()
        ))))
    };
    let data = Toml::file_exact(file).data().map_err(|_| unreadable())?;
    let Some(dict) = data.get(&Profile::Default) else {
        return Ok(Vec::new());
    };
    let root = Value::from(dict.clone());
    Ok(Limit::ALL
        .into_iter()
        .filter(|limit| {
            root.find_ref(&format!("streams.{section}.{}", limit.name()))
                .is_some()
        })
        .collect())
}

/// Opens the stream `config` names, or creates it with `config`. An
/// existing stream is left as it is, its limits included, even when it has
/// none (see the module docs); one without a byte or message limit is
/// logged, as it may fill the disk.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), async_nats::Error> {
/// use aegis_sdk::streams::{bounded, ensure_stream};
/// use async_nats::jetstream::stream;
///
/// let limits = conn.config().streams.events;
/// let config = stream::Config { name: "EVENTS".into(), subjects: vec!["events.>".into()], ..Default::default() };
/// ensure_stream(conn.jetstream(), bounded(config, &limits)).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The client's error when the stream can be neither opened nor created.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<Stream, async_nats::Error> {
    let stream =
        with_placement_patience(&config.name, || js.get_or_create_stream(config.clone())).await?;
    let existing = &stream.cached_info().config;
    if existing.max_bytes < 0 && existing.max_messages < 0 {
        warn!(
            stream = %config.name,
            "the stream has no byte or message limit and is kept so (it may fill the disk; \
             `aegis init --apply-limits` with the limits in its configuration file bounds it)"
        );
    }
    Ok(stream)
}

/// The first wait for a stream's answer before a request is asked again;
/// doubled per attempt up to [`ANSWER_WAIT_MAX`] (see [`Patience`]).
const ANSWER_WAIT_FIRST: Duration = Duration::from_millis(250);
const ANSWER_WAIT_MAX: Duration = Duration::from_secs(1);

/// The waits of a stream request that is asked again while its answer is
/// slow to come: 250 ms, doubled per attempt up to 1 s, until the
/// connection's `request_timeout`. A request that reaches a stream while it
/// changes leader can go unanswered; asked again, it reaches the new one
/// instead of waiting out the whole timeout. Only for requests that may be
/// asked twice: reads, and writes under one message id
/// ([`publish_deduplicated`]).
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection, stream: async_nats::jetstream::stream::Stream) {
/// use aegis_sdk::streams::Patience;
///
/// let mut patience = Patience::new(&conn);
/// while let Some(wait) = patience.next_wait() {
///     let read = stream.get_last_raw_message_by_subject("orders.o-1");
///     if let Ok(answer) = tokio::time::timeout(wait, read).await {
///         println!("{:?}", answer.map(|m| m.sequence));
///         break;
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Patience {
    deadline: tokio::time::Instant,
    wait: Duration,
}

impl Patience {
    /// Starts now, with `conn`'s `request_timeout` as the deadline.
    pub fn new(conn: &crate::Connection) -> Self {
        Self {
            deadline: crate::clock::deadline(
                tokio::time::Instant::now(),
                conn.config().nats.request_timeout,
            ),
            wait: ANSWER_WAIT_FIRST,
        }
    }

    /// How long the next attempt may wait for its answer (never past the
    /// deadline), or `None` once the deadline passed.
    pub fn next_wait(&mut self) -> Option<Duration> {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        let wait = self.wait.min(left);
        self.wait = (self.wait * 2).min(ANSWER_WAIT_MAX);
        Some(wait)
    }

    /// When the attempts end.
    pub fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }
}
/// The pause before a message is sent again to a stream without a leader;
/// doubled up to [`LEADERLESS_PAUSE_MAX`].
const LEADERLESS_PAUSE_FIRST: Duration = Duration::from_millis(10);
const LEADERLESS_PAUSE_MAX: Duration = Duration::from_millis(200);
/// How long "no stream" answers are taken for a stream between leaders.
const LEADERLESS_PATIENCE: Duration = Duration::from_secs(1);

/// What [`is_dedup_id`] asks of an id, as the errors refusing one say it.
pub(crate) const DEDUP_ID_RULE: &str =
    "must be non-empty, not start with a space and hold no carriage return or line feed";

/// Whether `id` works as a dedup id (`Nats-Msg-Id`): the server
/// deduplicates no empty id, drops a header value's leading spaces (so
/// `" x"` would be taken for `"x"`, and `"  "` for no id), and a header
/// value cannot hold a carriage return or line feed (async-nats panics on
/// one).
///
/// ```
/// use aegis_sdk::streams::is_dedup_id;
/// assert!(is_dedup_id("order-c-1:filled"));
/// assert!(!is_dedup_id(""));
/// assert!(!is_dedup_id(" order-c-1"));
/// assert!(!is_dedup_id("order\nc-1"));
/// ```
pub fn is_dedup_id(id: &str) -> bool {
    !id.is_empty() && !id.starts_with(' ') && !id.contains(['\r', '\n'])
}

/// `id` made this process's own: `{id}~{hash}`, a hash of `id` keyed with
/// a key random per process. The same `id` gives the same result for the
/// life of the process, so its retries are deduplicated, while no other
/// process can guess it: JetStream's dedup window is one namespace per
/// stream, and any publisher to the stream could otherwise store a
/// message of its own under a predictable id first, making the real one
/// a "duplicate" that is never stored.
pub(crate) fn own_id(id: &str) -> String {
    use std::hash::BuildHasher;
    static KEY: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    let hash = KEY
        .get_or_init(std::collections::hash_map::RandomState::new)
        .hash_one(id);
    format!("{id}~{hash:016x}")
}

/// Publishes `payload` to a stream with the message id `id`
/// (`Nats-Msg-Id`), sending it again — the same id, so the stream stores it
/// once — when no acknowledgement comes within a short wait, until the
/// connection's `request_timeout`.
///
/// A message published while its stream changes leader (a NATS node
/// restarting hands its leaderships over) can be dropped without an answer;
/// a plain publish then waits out its whole timeout, seconds in which a
/// caller gives up. Sent again after 250 ms, it lands on the new leader.
/// A message that did land the first time is acknowledged again as a
/// duplicate with its original sequence (the stream's duplicate window,
/// two minutes by default, must cover the retries). A stream without a
/// leader for a moment answers "no stream" (no responders): the message is
/// sent again after a short pause, for up to a second (a leader hand-over
/// takes milliseconds), after which the stream is taken as missing.
///
/// A compare-and-set (an expected last sequence in `headers`) whose first
/// copy landed is refused as [`PublishErrorKind::WrongLastSequence`] when
/// sent again — the server checks the expectation before the id — so the
/// caller tells its own write from another's by the `Nats-Msg-Id` of the
/// subject's last message.
///
/// The id must be non-empty, not start with a space and hold no carriage
/// return or line feed ([`is_dedup_id`]); any other is refused before
/// anything is sent.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), async_nats::jetstream::context::PublishError> {
/// use aegis_sdk::streams::publish_deduplicated;
///
/// let ack = publish_deduplicated(
///     &conn,
///     "events.order.created".into(),
///     "order-1:created",
///     async_nats::HeaderMap::new(),
///     "{}".into(),
/// )
/// .await?;
/// println!("stored at {} (again: {})", ack.sequence, ack.duplicate);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`PublishErrorKind::Other`] at once for an id that cannot work, and as
/// soon as the server says it refuses this user the subject (the error's
/// source quotes it; nothing was stored); the
/// stream's refusal (a wrong expected sequence, ...) at once; no
/// stream after a second of "no stream" answers; [`PublishErrorKind::TimedOut`] when no
/// acknowledgement came before the deadline (the message may have been
/// stored).
///
/// [`PublishErrorKind::TimedOut`]: jetstream::context::PublishErrorKind::TimedOut
/// [`PublishErrorKind::Other`]: jetstream::context::PublishErrorKind::Other
/// [`PublishErrorKind::WrongLastSequence`]: jetstream::context::PublishErrorKind::WrongLastSequence
pub async fn publish_deduplicated(
    conn: &crate::Connection,
    subject: String,
    id: &str,
    mut headers: async_nats::HeaderMap,
    payload: bytes::Bytes,
) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
    use jetstream::context::{PublishError, PublishErrorKind};
    if !is_dedup_id(id) {
        return Err(PublishError::with_source(
            PublishErrorKind::Other,
            format!("invalid message id {id:?}: it {DEDUP_ID_RULE}"),
        ));
    }
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id);
    let started = tokio::time::Instant::now();
    let sending = async {
        let mut patience = Patience::new(conn);
        let deadline = patience.deadline();
        let mut leaderless_pause = LEADERLESS_PAUSE_FIRST;
        let mut attempts = 0u32;
        while let Some(wait) = patience.next_wait() {
            attempts += 1;
            let publish = async {
                conn.jetstream()
                    .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                    .await?
                    .await
            };
            let outcome = tokio::time::timeout(wait, conn.unless_dropped(publish)).await;
            match outcome {
                Ok(Ok(Ok(ack))) => {
                    if attempts > 1 {
                        debug!(
                            subject,
                            id, attempts, "stream acknowledged a message sent again"
                        );
                    }
                    return Ok(ack);
                }
                // No responders: its stream has no leader this moment, or no
                // stream covers the subject. A leader hand-over takes
                // milliseconds; past LEADERLESS_PATIENCE (or the deadline) it
                // is taken as missing, and said so.
                Ok(Ok(Err(e))) if e.kind() == PublishErrorKind::StreamNotFound => {
                    let now = tokio::time::Instant::now();
                    if started.elapsed() + leaderless_pause > LEADERLESS_PATIENCE
                        || now + leaderless_pause >= deadline
                    {
                        return Err(e);
                    }
                    tokio::time::sleep(leaderless_pause).await;
                    leaderless_pause = (leaderless_pause * 2).min(LEADERLESS_PAUSE_MAX);
                }
                // A copy still being stored holds the id (10158), or the stream
                // is between leaders (10163, 10008): send it again after a pause.
                Ok(Ok(Err(e))) if transient(&e) => {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(leaderless_pause.min(left)).await;
                    leaderless_pause = (leaderless_pause * 2).min(LEADERLESS_PAUSE_MAX);
                }
                Ok(Ok(Err(e)))
                    if !matches!(
                        e.kind(),
                        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                    ) =>
                {
                    return Err(e);
                }
                // No answer yet, or the connection dropped: send it again.
                Ok(Ok(Err(_))) | Ok(Err(_)) | Err(_) => {}
            }
        }
        Err(PublishError::new(PublishErrorKind::TimedOut))
    };
    // The server drops a publish it refuses this user and answers
    // nothing: the refusal, once heard, ends the attempts with its words.
    conn.refusals()
        .unless_refused(Refusing::Publish, |s| s == subject, sending)
        .await
        .unwrap_or_else(|refused| Err(PublishError::with_source(PublishErrorKind::Other, refused)))
}

/// Whether a failed KV write (put, update, delete, purge) says "not now"
/// rather than "no": nobody took it (async-nats reports a publish nobody
/// answered as `StreamNotFound`: the bucket's stream has no leader this
/// moment, as during a leader change or for the 4-9 s of an election after
/// a node's death), it was not acknowledged in time, or the stream is
/// between leaders. A refusal the stream answers (a wrong revision) or
/// the client makes (an invalid key) is not. A write the server's
/// permissions drop goes unanswered too, so it looks like one nobody took
/// and is tried again until its caller's bound; the connection logs the
/// server's refusal.
pub(crate) fn kv_write_not_taken_yet(e: &jetstream::kv::UpdateError) -> bool {
    use jetstream::context::{PublishError, PublishErrorKind};
    e.kind() == jetstream::kv::UpdateErrorKind::TimedOut
        || write_not_stored(e)
        || any_cause(e, |cause| {
            cause.downcast_ref::<PublishError>().is_some_and(|p| {
                matches!(
                    p.kind(),
                    PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
                )
            })
        })
}

/// Runs `write` until it is done or fails for good. A failure `again`
/// takes for "not now" (a stream without a leader this moment, say:
/// [`write_not_stored`]) is followed by a pause, doubling from `first` to
/// `max`, and another attempt, as long as that pause ends before `until`;
/// `again` is asked only then. Returns the last outcome.
///
/// The SDK sends a resignation and a deregistration again this way, and
/// the monitor its service-definition writes: a stream changing its leader
/// takes no writes for some milliseconds, and one refused then would
/// otherwise fail.
///
/// ```no_run
/// # async fn demo(kv: async_nats::jetstream::kv::Store) -> Result<u64, async_nats::jetstream::kv::UpdateError> {
/// use std::time::Duration;
/// use aegis_sdk::streams::{write_again_while, write_not_stored};
///
/// let until = tokio::time::Instant::now() + Duration::from_secs(2);
/// let pauses = (Duration::from_millis(10), Duration::from_millis(200));
/// write_again_while(until, pauses, |e| write_not_stored(e), || {
///     kv.update("limits", "{}".into(), 7)
/// })
/// .await
/// # }
/// ```
pub async fn write_again_while<T, E, W, Fut>(
    until: tokio::time::Instant,
    (first, max): (Duration, Duration),
    mut again: impl FnMut(&E) -> bool,
    mut write: W,
) -> Result<T, E>
where
    W: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = first;
    loop {
        match write().await {
            Err(e) if tokio::time::Instant::now() + pause < until && again(&e) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(max);
            }
            done => return done,
        }
    }
}

/// Whether a failed JetStream write was certainly not stored, so sending
/// it again as it is cannot store it twice: nobody took it (async-nats
/// reports a publish nobody answered as `StreamNotFound`: the stream has
/// no leader this moment, as for some milliseconds while a NATS node in
/// lame duck mode hands its leaderships over), or the stream answered that
/// it is between leaders (10163, 10008). `e` is the publish's error, or
/// any error that wraps it: a KV put's, create's, update's or delete's.
/// A timeout is not such a failure: the write may have been stored.
///
/// A compare-and-set write (a KV `create` or `update`) refused this way
/// may be sent again with the same expected revision.
///
/// ```no_run
/// # async fn demo(kv: async_nats::jetstream::kv::Store) -> Result<(), async_nats::jetstream::kv::UpdateError> {
/// use aegis_sdk::streams::write_not_stored;
/// match kv.update("limits", "{}".into(), 7).await {
///     Err(e) if write_not_stored(&e) => println!("not stored: it may be sent again as it is"),
///     other => println!("stored at revision {}", other?),
/// }
/// # Ok(()) }
/// ```
///
/// [`write_again_while`] sends a write again while this holds.
pub fn write_not_stored(e: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::context::{PublishError, PublishErrorKind};
    any_cause(e, |cause| {
        cause
            .downcast_ref::<PublishError>()
            .is_some_and(|p| p.kind() == PublishErrorKind::StreamNotFound || between_leaders(p))
    })
}

/// Whether a stream refused a compare-and-set write (an expected last
/// sequence of its subject: a KV `create` or `update`) because another
/// write to the same subject is still being replicated: 10164, "wrong
/// last sequence" in its constant form. Only a clustered stream's leader
/// answers it; a single server checks at once and answers 10071, which
/// async-nats reports as `WrongLastSequence`, while 10164 gets no kind of
/// its own. `e` is the publish's error, or any error that wraps it.
///
/// The write was not stored, and the refusal does not yet say whether it
/// can be: that turns on the write in flight, which mostly lands and makes
/// this one a lost race. Sent again as it is once that write settled (a
/// few milliseconds), it is answered for good — stored, a duplicate of an
/// earlier attempt of its own, or a wrong revision. A caller that takes
/// only `WrongLastSequence` for a lost race takes this one for a failure.
///
/// ```
/// use async_nats::jetstream::context::{PublishError, PublishErrorKind};
/// use aegis_sdk::streams::another_write_in_flight;
///
/// let wrong = PublishError::new(PublishErrorKind::WrongLastSequence);
/// assert!(!another_write_in_flight(&wrong));
/// ```
pub fn another_write_in_flight(e: &(dyn std::error::Error + 'static)) -> bool {
    any_cause(e, |cause| {
        cause.downcast_ref::<jetstream::Error>().is_some_and(|e| {
            e.error_code() == jetstream::ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT
        })
    })
}

/// A JetStream write nobody took: the server's "no responders" (503),
/// which async-nats words "no stream found for given subject". Read alone
/// that is a missing stream, a configuration error; most often the stream
/// exists and has no leader this moment (the NATS node that led it died,
/// and its replicas elect another within seconds). Its text says both;
/// its [`source`](std::error::Error::source) is the client's error, so
/// [`write_not_stored`] and a downcast along the causes still find it.
///
/// The SDK's errors for a registry write, an event publish and a command
/// queued carry it as their source in that case.
///
/// ```
/// use async_nats::jetstream::context::{PublishError, PublishErrorKind};
/// use aegis_sdk::streams::{NoStreamTookIt, write_not_stored};
///
/// let e = NoStreamTookIt::new(PublishError::new(PublishErrorKind::StreamNotFound).into());
/// assert!(e.to_string().contains("no leader right now"));
/// assert!(write_not_stored(&e));
/// ```
#[derive(Debug)]
pub struct NoStreamTookIt(async_nats::Error);

impl NoStreamTookIt {
    /// Wraps `source`, the client's error for a write nobody took.
    pub fn new(source: async_nats::Error) -> Self {
        Self(source)
    }

    /// `source` as it is, or wrapped in [`NoStreamTookIt`] when it (or an
    /// error it wraps) is a publish nobody took: for a write of your own to
    /// a bucket or stream, whose error would otherwise read as a missing
    /// stream.
    ///
    /// ```
    /// use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    /// use aegis_sdk::streams::NoStreamTookIt;
    ///
    /// let nobody = NoStreamTookIt::explained(PublishError::new(PublishErrorKind::StreamNotFound).into());
    /// assert!(nobody.to_string().contains("no leader right now"));
    /// let other = NoStreamTookIt::explained(PublishError::new(PublishErrorKind::TimedOut).into());
    /// assert!(!other.to_string().contains("no leader"));
    /// ```
    pub fn explained(source: async_nats::Error) -> async_nats::Error {
        if nobody_took(&*source) {
            Box::new(Self(source))
        } else {
            source
        }
    }
}

impl std::fmt::Display for NoStreamTookIt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(
            "no stream took the write: its stream has no leader right now (a NATS node was \
             lost; JetStream elects a new one within seconds) or does not exist (run `aegis init`)",
        )
    }
}

impl std::error::Error for NoStreamTookIt {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether `e`, or an error it wraps, is a publish nobody took (async-nats
/// reports one as `StreamNotFound`).
fn nobody_took(e: &(dyn std::error::Error + 'static)) -> bool {
    use jetstream::context::{PublishError, PublishErrorKind};
    any_cause(e, |cause| {
        cause
            .downcast_ref::<PublishError>()
            .is_some_and(|p| p.kind() == PublishErrorKind::StreamNotFound)
    })
}

/// Whether a stream answered a publish that it, or JetStream, is between
/// leaders (10163, 10008).
fn between_leaders(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| matches!(e.error_code().0, 10163 | 10008))
}

/// Whether a stream's refusal says "not now" rather than "no": a copy of
/// the message still being stored holds its id (10158, "duplicate message
/// id is in process"), or the stream or JetStream is between leaders
/// (10163, 10008).
fn transient(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    between_leaders(e)
        || e.source()
            .and_then(|s| s.downcast_ref::<jetstream::Error>())
            .is_some_and(|e| e.error_code().0 == 10158)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use async_nats::jetstream::context::{
        CreateKeyValueError, CreateKeyValueErrorKind, CreateStreamError, CreateStreamErrorKind,
    };

    use super::*;

    /// Only the limits a file writes count as set: the others are the
    /// defaults, which must not override what an existing stream has.
    #[test]
    fn a_file_sets_only_the_limits_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aegis.toml");
        std::fs::write(
            &path,
            "[nats]\nreplicas = 1\n[streams.events]\nmax_age = \"2h\"\nmax_messages = 5\n\
             [streams.dead_letter]\nmax_bytes = 2097152\n",
        )
        .unwrap();
        assert_eq!(
            limits_set_in_file(&path, "events").unwrap(),
            [Limit::MaxAge, Limit::MaxMessages]
        );
        assert_eq!(
            limits_set_in_file(&path, "dead_letter").unwrap(),
            [Limit::MaxBytes]
        );
        assert!(limits_set_in_file(&path, "log").unwrap().is_empty());
        std::fs::write(&path, "password = \"s3cret\"\n[streams\n").unwrap();
        let e = limits_set_in_file(&path, "events").unwrap_err();
        let said = format!(
            "{e}: {:?}",
            std::error::Error::source(&e).map(ToString::to_string)
        );
        assert!(
            !said.contains("s3cret") && said.contains("aegis.toml"),
            "{said}"
        );
    }

    /// The refusal as a creation gets it: the server's error body, read by
    /// async-nats into the creation's error, wrapped by the bucket's.
    fn refusal(code: u64, description: &str) -> CreateKeyValueError {
        let body = serde_json::json!({ "code": 500, "err_code": code, "description": description });
        let js: jetstream::Error = serde_json::from_value(body).unwrap();
        let create = CreateStreamError::new(CreateStreamErrorKind::JetStream(js));
        CreateKeyValueError::with_source(CreateKeyValueErrorKind::BucketCreate, create)
    }

    /// A publish the stream refused with JetStream error `code`.
    fn refused_publish(code: u64) -> jetstream::context::PublishError {
        let body = serde_json::json!({ "code": 503, "err_code": code, "description": "x" });
        let js: jetstream::Error = serde_json::from_value(body).unwrap();
        jetstream::context::PublishError::with_source(
            jetstream::context::PublishErrorKind::Other,
            js,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_is_sent_again_while_not_now_and_within_its_bound() {
        let pauses = (Duration::from_millis(10), Duration::from_millis(40));
        let start = tokio::time::Instant::now();
        let tries = AtomicU32::new(0);
        let write = || async {
            let n = tries.fetch_add(1, Ordering::Relaxed) + 1;
            if n < 5 { Err(n) } else { Ok(n) }
        };
        // Not now four times: paused 10, 20, 40, 40 ms, then done.
        let done = write_again_while(start + Duration::from_secs(1), pauses, |_| true, write).await;
        assert_eq!(done, Ok(5));
        assert_eq!(start.elapsed(), Duration::from_millis(110));

        // A refusal for good ends it at once.
        tries.store(0, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        let done =
            write_again_while(start + Duration::from_secs(1), pauses, |_| false, write).await;
        assert_eq!((done, start.elapsed()), (Err(1), Duration::ZERO));

        // No pause that would end past the bound: the last failure is returned.
        tries.store(0, Ordering::Relaxed);
        let start = tokio::time::Instant::now();
        let done =
            write_again_while(start + Duration::from_millis(35), pauses, |_| true, write).await;
        assert_eq!((done, start.elapsed()), (Err(3), Duration::from_millis(30)));
    }

    #[test]
    fn a_write_nobody_took_or_refused_between_leaders_was_not_stored() {
        use jetstream::context::{PublishError, PublishErrorKind};
        use jetstream::kv::{CreateError, UpdateError};
        let nobody = || PublishError::new(PublishErrorKind::StreamNotFound);
        assert!(write_not_stored(&nobody()));
        assert!(write_not_stored(&UpdateError::from(nobody())));
        assert!(write_not_stored(&CreateError::from(UpdateError::from(
            nobody()
        ))));
        assert!(write_not_stored(&refused_publish(10163)));
        assert!(write_not_stored(&refused_publish(10008)));
    }

    #[test]
    fn a_write_that_timed_out_or_was_refused_for_good_may_have_been_stored_or_never_will() {
        use jetstream::context::{PublishError, PublishErrorKind};
        use jetstream::kv::UpdateError;
        for kind in [
            PublishErrorKind::TimedOut,
            PublishErrorKind::WrongLastSequence,
            PublishErrorKind::BrokenPipe,
        ] {
            assert!(!write_not_stored(&PublishError::new(kind)), "{kind:?}");
        }
        // In process (10158): it will be stored.
        assert!(!write_not_stored(&refused_publish(10158)));
        assert!(!write_not_stored(&UpdateError::from(PublishError::new(
            PublishErrorKind::WrongLastSequence
        ))));
    }

    #[test]
    fn a_compare_and_set_refused_for_another_write_in_flight_is_told_apart() {
        use jetstream::context::{PublishError, PublishErrorKind};
        use jetstream::kv::{CreateError, UpdateError};
        assert!(another_write_in_flight(&refused_publish(10164)));
        assert!(another_write_in_flight(&UpdateError::from(
            refused_publish(10164)
        )));
        assert!(another_write_in_flight(&CreateError::from(
            UpdateError::from(refused_publish(10164))
        )));
        // Refused for good, or not refused for this: not in flight.
        assert!(!another_write_in_flight(&refused_publish(10071)));
        assert!(!another_write_in_flight(&PublishError::new(
            PublishErrorKind::WrongLastSequence
        )));
        assert!(!another_write_in_flight(&refused_publish(10158)));
        // Not stored either way, but not "no leader": told apart.
        assert!(!write_not_stored(&refused_publish(10164)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_went_unanswered_is_sent_again() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let answer = ask_while_silent(
            "bucket",
            ASK_ATTEMPT_FIRST,
            Duration::from_secs(10),
            || async {
                if calls.fetch_add(1, Ordering::Relaxed) == 0 {
                    // Lost: no answer ever comes.
                    std::future::pending::<()>().await;
                }
                "found"
            },
        )
        .await;
        assert_eq!(answer, Some("found"));
        assert_eq!(calls.load(Ordering::Relaxed), 2);
        assert_eq!(
            started.elapsed(),
            ASK_ATTEMPT_FIRST,
            "asked again after the first attempt"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn asking_ends_with_none_once_its_patience_is_spent() {
        let calls = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let answer = ask_while_silent(
            "bucket",
            ASK_ATTEMPT_FIRST,
            Duration::from_secs(5),
            || async {
                calls.fetch_add(1, Ordering::Relaxed);
                std::future::pending::<&str>().await
            },
        )
        .await;
        assert_eq!(answer, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // 1 s, 2 s, then the 2 s left.
        assert_eq!(calls.load(Ordering::Relaxed), 3);
        assert_eq!(
            [0, 1, 2, 3, 9].map(|tries| ask_attempt(ASK_ATTEMPT_FIRST, tries)),
            [1, 2, 4, 8, 8].map(Duration::from_secs)
        );
    }

    fn no_peers() -> CreateKeyValueError {
        refusal(10005, "no suitable peers for placement, peer offline")
    }

    #[test]
    fn a_refusal_for_want_of_peers_is_told_from_others() {
        assert!(no_peers_for_placement(&no_peers()));
        let stream = CreateStreamError::new(CreateStreamErrorKind::JetStream(
            serde_json::from_value(serde_json::json!({ "code": 500, "err_code": 10005 })).unwrap(),
        ));
        assert!(no_peers_for_placement(&stream));
        assert!(!no_peers_for_placement(&refusal(
            10058,
            "stream name already in use"
        )));
        assert!(!no_peers_for_placement(&CreateKeyValueError::new(
            CreateKeyValueErrorKind::TimedOut
        )));
    }

    #[tokio::test]
    async fn a_creation_refused_for_want_of_peers_is_tried_again_until_placed() {
        let calls = AtomicU32::new(0);
        let placed = with_placement_patience("orders", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 | 1 => Err(no_peers()),
                _ => Ok("placed"),
            }
        })
        .await;
        assert_eq!(placed.unwrap(), "placed");
        assert_eq!(calls.load(Ordering::Relaxed), 3);
    }

    /// A creation JetStream did not answer in time, as async-nats reports
    /// it (seen once in a full test run: a bucket's creation on a
    /// three-node cluster that had just formed).
    fn not_answered() -> CreateKeyValueError {
        CreateKeyValueError::with_source(
            CreateKeyValueErrorKind::TimedOut,
            CreateStreamError::new(CreateStreamErrorKind::TimedOut),
        )
    }

    #[tokio::test]
    async fn a_creation_jetstream_did_not_answer_is_tried_again() {
        let calls = AtomicU32::new(0);
        let created = with_placement_patience("risk_limits", || async {
            match calls.fetch_add(1, Ordering::Relaxed) {
                0 => Err(not_answered()),
                _ => Ok("created"),
            }
        })
        .await;
        assert_eq!(created.unwrap(), "created");
        assert_eq!(calls.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_name_taken_is_told_from_other_refusals() {
        assert!(name_taken(&refusal(10058, "stream name already in use")));
        assert!(!name_taken(&no_peers()));
        assert!(!name_taken(&not_answered()));
    }

    #[tokio::test]
    async fn any_other_refusal_is_returned_at_once() {
        let calls = AtomicU32::new(0);
        let refused: Result<(), _> = with_placement_patience("orders", || async {
            calls.fetch_add(1, Ordering::Relaxed);
            Err(refusal(10058, "stream name already in use"))
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
