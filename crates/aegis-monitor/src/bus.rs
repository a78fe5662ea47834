//! The monitor's NATS resources and how it reads recent stream messages.
//!
//! The operator creates the `service_definitions` bucket and the
//! `AEGIS_METRICS` and `AEGIS_LOG` streams ([`ensure_infrastructure`], run
//! by `aegis init`, which `aegis up` and the Helm chart's init Job run),
//! bounded by the `streams.metrics` and `streams.log` limits of the NATS
//! configuration. At start [`ensure_resources`] opens them and refuses a
//! definitions bucket that cannot work (one that expires its entries). It
//! never changes an existing stream; one that is missing it creates only
//! where its NATS user may (a server without users, as in a test): the
//! monitor's user in `aegis up` and the chart may not, since a create or
//! update also chooses a stream's subjects, sources and mirrors. A missing
//! one is then an error that names `aegis init`.
//!
//! [`tail`] reads the newest messages of one subject since a start point
//! without listing or scanning everything: one get of the subject's last
//! message answers a subject with nothing to read without any consumer;
//! otherwise it creates an ephemeral pull consumer, and when more messages
//! are pending than wanted it narrows the start sequence by bisection on
//! the consumer's pending count, then reads.
//!
//! Every temporary consumer of a request is a [`Reader`], one at a time,
//! and only under a [`ReadTurn`] of [`StreamReads`]: at most
//! [`MAX_STREAM_READS`] requests read at once, so the API never holds more
//! temporary consumers than that (the server caps consumers per stream,
//! and the metrics feed must always be able to open its own again). A
//! reader is deleted when it is done, and also when its request is cut off
//! (a client that hangs up, the request timeout): dropping it spawns the
//! delete, which keeps the turn until the consumer is gone.

use std::{sync::Arc, time::Duration};

use aegis_contracts::subjects::{
    DEFINITIONS_BUCKET, LOG_STREAM, LOG_SUBJECTS, METRICS_STREAM, METRICS_SUBJECTS,
};
use aegis_sdk::streams::bounded;
use async_nats::jetstream::{
    self, Message,
    consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull},
    kv,
    stream::{self, DiscardPolicy, LastRawMessageErrorKind, RetentionPolicy, StorageType, Stream},
};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::MonitorConfig;

/// A NATS operation that failed (the cause is logged, not shown to clients).
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
pub(crate) struct BusError {
    context: String,
    #[source]
    source: Option<async_nats::Error>,
}

impl BusError {
    pub(crate) fn new(context: impl Into<String>, source: impl Into<async_nats::Error>) -> Self {
        Self {
            context: context.into(),
            source: Some(source.into()),
        }
    }

    pub(crate) fn msg(context: impl Into<String>) -> Self {
        Self {
            context: context.into(),
            source: None,
        }
    }
}

/// Why the monitor cannot use the NATS resources it needs.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The definitions bucket expires entries, so definitions would vanish.
    #[error(
        "bucket {DEFINITIONS_BUCKET} has max_age {0:?}: service definitions must never expire; recreate the bucket without a TTL"
    )]
    DefinitionsExpire(Duration),
    /// Creating or opening a bucket or stream failed.
    #[error("cannot open or create {what}")]
    Open {
        /// Which resource.
        what: &'static str,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

/// The resources opened at start.
#[derive(Debug, Clone)]
pub(crate) struct Resources {
    pub(crate) definitions: kv::Store,
    pub(crate) metrics: Stream,
    pub(crate) logs: Stream,
}

/// Who opens the bucket and streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opener {
    /// `aegis init`: creates what is missing, bounds a stream without limits.
    Operator,
    /// The monitor at start: opens what exists, changes nothing, creates
    /// what is missing only where its user may.
    Monitor,
}

/// A bucket or stream the monitor found missing and could not create.
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} is missing (or not answering) and the monitor may not create it: \
     run `aegis init` as the operator (`aegis up` and the Helm chart's init Job do)"
)]
struct NotCreated {
    what: &'static str,
    #[source]
    source: async_nats::Error,
}

fn not_created(what: &'static str, source: impl Into<async_nats::Error>) -> SetupError {
    SetupError::Open {
        what,
        source: Box::new(NotCreated {
            what,
            source: source.into(),
        }),
    }
}

/// Opens the definitions bucket and the metrics and log streams, as the
/// monitor does at start.
pub(crate) async fn ensure_resources(
    js: &jetstream::Context,
    config: &MonitorConfig,
) -> Result<Resources, SetupError> {
    open_resources(
        js,
        &config.nats,
        config.definitions_history,
        Opener::Monitor,
    )
    .await
}

/// Creates the monitor's bucket and streams where missing —
/// `service_definitions` (keeping `definitions_history` changes per
/// definition), `AEGIS_METRICS` and `AEGIS_LOG` — with the replicas and
/// stream limits of `nats`, and bounds a stream of them that has no
/// limits. `aegis init` runs it, as the operator; the monitor itself only
/// opens them.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_monitor::SetupError> {
/// aegis_monitor::ensure_infrastructure(conn.jetstream(), conn.config(), 64).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`SetupError`] naming what JetStream refused, or a definitions bucket
/// whose entries expire.
pub async fn ensure_infrastructure(
    js: &jetstream::Context,
    nats: &aegis_sdk::AegisConfig,
    definitions_history: i64,
) -> Result<(), SetupError> {
    open_resources(js, nats, definitions_history, Opener::Operator)
        .await
        .map(drop)
}

async fn open_resources(
    js: &jetstream::Context,
    nats: &aegis_sdk::AegisConfig,
    definitions_history: i64,
    opener: Opener,
) -> Result<Resources, SetupError> {
    let replicas = nats.nats.replicas;
    let definitions = match js.get_key_value(DEFINITIONS_BUCKET).await {
        Ok(store) => store,
        Err(_) => {
            let config = kv::Config {
                bucket: DEFINITIONS_BUCKET.to_owned(),
                description: "Aegis service definitions (history is the audit trail)".to_owned(),
                history: definitions_history,
                num_replicas: replicas,
                storage: StorageType::File,
                ..Default::default()
            };
            // Another replica may have created it meanwhile: it is found.
            // Made as a shared bucket: rollups refused (one message with
            // `Nats-Rollup: all` would erase every definition and its
            // history), purges denied, bounded (`aegis_sdk::kv::DEFINITIONS`).
            let what = "bucket service_definitions";
            aegis_sdk::kv::create_or_find_shared_bucket(js, config)
                .await
                .map_err(|e| match opener {
                    Opener::Operator => SetupError::Open {
                        what,
                        source: e.into(),
                    },
                    Opener::Monitor => not_created(what, e),
                })?
        }
    };
    let mut stream = definitions.stream.clone();
    let info = stream.info().await.map_err(|e| SetupError::Open {
        what: "bucket service_definitions",
        source: e.into(),
    })?;
    if !info.config.max_age.is_zero() {
        return Err(SetupError::DefinitionsExpire(info.config.max_age));
    }
    // One made before (or by hand) that still takes rollups: said, with
    // the fix (`aegis init`); the monitor changes no stream.
    aegis_sdk::kv::warn_if_open(&info.config);
    if info.config.max_messages_per_subject < 2 {
        tracing::warn!(
            history = info.config.max_messages_per_subject,
            "bucket service_definitions keeps no history; the audit trail shows only the latest change"
        );
    }
    let limits = &nats.streams;
    let metrics = ensure_stream(
        js,
        bounded(
            stream::Config {
                name: METRICS_STREAM.to_owned(),
                description: Some("Aegis instance metrics snapshots".to_owned()),
                subjects: vec![METRICS_SUBJECTS.to_owned()],
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                num_replicas: replicas,
                storage: StorageType::File,
                allow_direct: true,
                ..Default::default()
            },
            &limits.metrics,
        ),
        "stream AEGIS_METRICS",
        opener,
    )
    .await?;
    let logs = ensure_stream(
        js,
        bounded(
            stream::Config {
                name: LOG_STREAM.to_owned(),
                description: Some("Aegis instance lifecycle events and WARN/ERROR logs".to_owned()),
                subjects: vec![LOG_SUBJECTS.to_owned()],
                retention: RetentionPolicy::Limits,
                discard: DiscardPolicy::Old,
                max_messages_per_subject: 10_000,
                num_replicas: replicas,
                storage: StorageType::File,
                allow_direct: true,
                ..Default::default()
            },
            &limits.log,
        ),
        "stream AEGIS_LOG",
        opener,
    )
    .await?;
    Ok(Resources {
        definitions,
        metrics,
        logs,
    })
}

/// The operator: opens or creates the stream (an existing one keeps its
/// limits, even none). The monitor: opens it as it is (a stream without
/// limits is logged: `aegis init --apply-limits` bounds it), and creates it
/// only when missing.
async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
    what: &'static str,
    opener: Opener,
) -> Result<Stream, SetupError> {
    if opener == Opener::Operator {
        return aegis_sdk::streams::ensure_stream(js, config)
            .await
            .map_err(|source| SetupError::Open { what, source });
    }
    if let Ok(stream) = js.get_stream(&config.name).await {
        let existing = &stream.cached_info().config;
        if existing.max_bytes < 0 && existing.max_messages < 0 {
            tracing::warn!(
                stream = %config.name,
                "the stream has no size limits and may fill the disk; `aegis init --apply-limits` (as the operator) bounds it"
            );
        }
        return Ok(stream);
    }
    aegis_sdk::streams::with_placement_patience(&config.name, || {
        js.get_or_create_stream(config.clone())
    })
    .await
    .map_err(|e| not_created(what, e))
}

/// Where [`tail`] starts reading.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Since {
    /// From the oldest message kept.
    Beginning,
    /// From messages stored at or after this time.
    Time(time::OffsetDateTime),
}

/// How many requests may read streams through temporary consumers at once
/// (each holds at most one consumer at a time).
pub(crate) const MAX_STREAM_READS: usize = 8;

/// How long a request waits for its turn to read before it is refused.
const TURN_WAIT: Duration = Duration::from_secs(2);

/// The pauses before a pull refused before any message is sent again
/// ([`Reader::read`]), one per attempt, 310 ms in all.
const PULL_PAUSES: [Duration; 5] = [
    Duration::from_millis(10),
    Duration::from_millis(20),
    Duration::from_millis(40),
    Duration::from_millis(80),
    Duration::from_millis(160),
];

/// How long the consumer of a reader whose delete failed (NATS
/// unreachable) stays: the server removes it after this much inactivity.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(30);

/// The cap on requests reading streams through temporary consumers; one
/// per monitor, shared by every route that reads a stream's history.
#[derive(Debug, Clone)]
pub(crate) struct StreamReads {
    turns: Arc<Semaphore>,
    wait: Duration,
}

impl Default for StreamReads {
    fn default() -> Self {
        Self {
            turns: Arc::new(Semaphore::new(MAX_STREAM_READS)),
            wait: TURN_WAIT,
        }
    }
}

/// Every turn to read a stream was taken for longer than a request waits.
#[derive(Debug, thiserror::Error)]
#[error(
    "the monitor is busy: {MAX_STREAM_READS} requests are reading stream history at once; try again in a moment"
)]
pub(crate) struct Busy;

impl From<Busy> for crate::error::ApiError {
    /// A 503 that says the monitor is busy (not that NATS is down), with
    /// `details.maxStreamReads` and a `Retry-After` of a second: turns
    /// free as soon as the reads in progress end.
    fn from(busy: Busy) -> Self {
        crate::error::ApiError::new(
            crate::error::ErrorCode::ServiceUnavailable,
            busy.to_string(),
        )
        .with_details(serde_json::json!({ "maxStreamReads": MAX_STREAM_READS }))
        .with_retry_after(Duration::from_secs(1))
    }
}

impl StreamReads {
    /// A turn to read, waiting briefly for one when all are taken.
    ///
    /// # Errors
    /// [`Busy`] when none was free within the wait.
    pub(crate) async fn turn(&self) -> Result<ReadTurn, Busy> {
        match tokio::time::timeout(self.wait, self.turns.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(ReadTurn {
                _permit: Arc::new(permit),
            }),
            // Never closed; a timeout is the answer either way.
            _ => Err(Busy),
        }
    }
}

/// One request's turn to read streams: held by the request and by each of
/// its readers until that reader's consumer is deleted, so a request cut
/// off does not free its turn before its consumer is gone.
#[derive(Debug, Clone)]
pub(crate) struct ReadTurn {
    _permit: Arc<OwnedSemaphorePermit>,
}

/// A temporary pull consumer of one subject (no acks, in memory), deleted
/// by [`Reader::close`], or on drop when its request is cut off.
pub(crate) struct Reader {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    deleter: Deleter,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("consumer", &self.deleter.name)
            .finish_non_exhaustive()
    }
}

impl Reader {
    /// Creates a consumer of `subject` on `stream` delivering by
    /// `deliver_policy`, under `turn`; returns it and how many messages it
    /// has pending.
    ///
    /// # Errors
    /// [`BusError`] when the consumer cannot be created or asked.
    pub(crate) async fn open(
        stream: &Stream,
        subject: &str,
        deliver_policy: DeliverPolicy,
        turn: &ReadTurn,
    ) -> Result<(Reader, u64), BusError> {
        // Named, and armed to be deleted, before it is asked for: a
        // request cut off while the server creates it (or an answer lost)
        // must not leave it behind.
        let deleter = Deleter {
            stream: stream.clone(),
            name: format!("aegis-monitor-read-{:016x}", rand::random::<u64>()),
            turn: turn.clone(),
            armed: true,
        };
        let consumer = stream
            .create_consumer(pull::Config {
                name: Some(deleter.name.clone()),
                deliver_policy,
                filter_subject: subject.to_owned(),
                ack_policy: AckPolicy::None,
                replay_policy: ReplayPolicy::Instant,
                inactive_threshold: INACTIVE_THRESHOLD,
                memory_storage: true,
                ..Default::default()
            })
            .await
            .map_err(|e| BusError::new("creating a reader consumer", e))?;
        let mut reader = Reader { consumer, deleter };
        let pending = reader
            .consumer
            .info()
            .await
            .map_err(|e| BusError::new("reading consumer info", e))?
            .num_pending;
        Ok((reader, pending))
    }

    /// Reads up to `count` messages.
    ///
    /// A batch answered by an error before any message is asked for again
    /// after a pause ([`PULL_PAUSES`]): on a cluster the consumer is made
    /// on any node, and a pull sent right after it was made can reach the
    /// monitor's node before that node knows who serves it, and come back
    /// "no responders" (503) though the consumer is there (about one pull
    /// in 10,000 under load on a healthy 3-node cluster; the API answered
    /// those 503 "NATS is unreachable"). Nothing was delivered, and the
    /// consumer acknowledges nothing, so the next pull reads the same.
    ///
    /// # Errors
    /// [`BusError`] when a batch cannot be fetched.
    pub(crate) async fn read(&self, count: usize) -> Result<Vec<Message>, BusError> {
        let mut out = Vec::with_capacity(count.min(4096));
        let mut pauses = PULL_PAUSES.iter();
        while out.len() < count {
            let want = (count - out.len()).min(1000);
            let mut batch = self
                .consumer
                .batch()
                .max_messages(want)
                .expires(Duration::from_secs(2))
                .messages()
                .await
                .map_err(|e| BusError::new("reading messages", e))?;
            let before = out.len();
            let mut failed = None;
            while let Some(message) = batch.next().await {
                match message {
                    Ok(message) => out.push(message),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failed {
                match pauses.next() {
                    Some(&pause) if out.len() == before => {
                        tracing::debug!(consumer = %self.deleter.name, error = %aegis_sdk::startup::Causes(&*e), "a pull was refused before any message; asking again");
                        tokio::time::sleep(pause).await;
                        continue;
                    }
                    _ => return Err(BusError::new("reading a message", e)),
                }
            }
            if out.len() == before {
                // Expired before anything arrived (e.g. trimmed meanwhile).
                break;
            }
        }
        Ok(out)
    }

    /// Deletes the consumer now (the next reader of the request is opened
    /// after it is gone, so a request holds one at a time).
    pub(crate) async fn close(self) {
        self.deleter.delete_now().await;
    }
}

/// Deletes a reader's consumer: at once when asked, else when dropped
/// armed (its request was cut off, or failed), in the background, holding
/// the request's turn until the consumer is gone.
struct Deleter {
    stream: Stream,
    name: String,
    turn: ReadTurn,
    armed: bool,
}

impl Deleter {
    async fn delete_now(mut self) {
        delete(&self.stream, &self.name).await;
        self.armed = false;
    }
}

impl Drop for Deleter {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Without a runtime (the process is ending) it expires on its own.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let stream = self.stream.clone();
        let name = std::mem::take(&mut self.name);
        let turn = self.turn.clone();
        runtime.spawn(async move {
            delete(&stream, &name).await;
            drop(turn);
        });
    }
}

async fn delete(stream: &Stream, name: &str) {
    if let Err(e) = stream.delete_consumer(name).await {
        // Never created (cut off before), or NATS unreachable: then it
        // expires on its own after its inactivity threshold.
        tracing::debug!(consumer = %name, error = %aegis_sdk::startup::Causes(&e), "deleting a reader consumer failed");
    }
}

/// The newest `limit` messages on `subject` (no wildcards) stored since
/// `since`, oldest first, read under `turn`.
pub(crate) async fn tail(
    stream: &Stream,
    subject: &str,
    since: Since,
    limit: usize,
    turn: &ReadTurn,
) -> Result<Vec<Message>, BusError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    // The subject's last message, asked of the stream's leader in one
    // request: none, or none since the start (an instance that logged
    // nothing, a chart of an instance gone quiet), is an answer without a
    // consumer. When it cannot be asked, the consumer tells.
    let last = match stream.get_last_raw_message_by_subject(subject).await {
        Ok(last) => Some(last),
        Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(Vec::new()),
        Err(_) => None,
    };
    let policy = match since {
        Since::Beginning => DeliverPolicy::All,
        Since::Time(start_time) => {
            if last.as_ref().is_some_and(|m| m.time < start_time) {
                return Ok(Vec::new());
            }
            DeliverPolicy::ByStartTime { start_time }
        }
    };
    let (mut reader, mut pending) = Reader::open(stream, subject, policy, turn).await?;
    if pending == 0 {
        reader.close().await;
        return Ok(Vec::new());
    }
    let limit_u64 = limit as u64;
    if pending > limit_u64.saturating_mul(2) {
        // Too many: find the start sequence that leaves about `limit`.
        let first = reader.read(1).await?;
        reader.close().await;
        let mut lo = first
            .first()
            .and_then(|m| m.info().ok().map(|i| i.stream_sequence))
            .ok_or_else(|| BusError::msg("a pending message vanished"))?;
        let mut hi = match last {
            Some(last) => last.sequence,
            None => {
                stream
                    .direct_get_last_for_subject(subject)
                    .await
                    .map_err(|e| BusError::new("reading the last message", e))?
                    .sequence
            }
        };
        // Invariant: pending(lo) > limit >= pending(hi).
        while hi > lo + 1 {
            let mid = lo + (hi - lo) / 2;
            let (probe, p) = Reader::open(
                stream,
                subject,
                DeliverPolicy::ByStartSequence {
                    start_sequence: mid,
                },
                turn,
            )
            .await?;
            probe.close().await;
            if p > limit_u64 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (reader, pending) = Reader::open(
            stream,
            subject,
            DeliverPolicy::ByStartSequence { start_sequence: lo },
            turn,
        )
        .await?;
    }
    let messages = reader.read(pending as usize).await;
    reader.close().await;
    let mut messages = messages?;
    if messages.len() > limit {
        messages.drain(..messages.len() - limit);
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pull that nobody takes at first, as on a cluster when the pull
    /// reaches the monitor's node before that node learns which node
    /// serves the consumer just made ("no responders", 503), is asked
    /// again, and the read answers every message. Here the consumer is
    /// deleted under the reader and made again a moment later; on a
    /// 3-node cluster under load the same refusal came about once in
    /// 10,000 reads, and each was answered 503 "NATS is unreachable".
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pull_nobody_takes_at_first_is_asked_again() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let client = async_nats::connect(nats.url()).await.expect("connect");
        let js = jetstream::new(client);
        let stream = js
            .create_stream(stream::Config {
                name: "READS".to_owned(),
                subjects: vec!["reads.>".to_owned()],
                ..Default::default()
            })
            .await
            .expect("create the stream");
        for i in 0..5 {
            js.publish("reads.a", format!("{i}").into())
                .await
                .expect("publish")
                .await
                .expect("stored");
        }
        let turn = StreamReads::default().turn().await.expect("a turn");
        let (reader, pending) = Reader::open(&stream, "reads.a", DeliverPolicy::All, &turn)
            .await
            .expect("open a reader");
        assert_eq!(pending, 5);
        let config = reader.consumer.cached_info().config.clone();
        stream
            .delete_consumer(&reader.deleter.name)
            .await
            .expect("delete the reader's consumer");
        let again = {
            let stream = stream.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(15)).await;
                stream
                    .create_consumer(config)
                    .await
                    .expect("make the consumer again");
            })
        };
        let read = reader.read(5).await;
        again.await.expect("made again");
        let read = read.expect("the read is answered once the consumer is there");
        let bodies: Vec<_> = read.iter().map(|m| m.payload.clone()).collect();
        assert_eq!(bodies, ["0", "1", "2", "3", "4"].map(bytes::Bytes::from));
        reader.close().await;
    }
}
