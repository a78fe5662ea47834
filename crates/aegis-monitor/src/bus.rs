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
//! without listing or scanning everything: it creates an ephemeral pull
//! consumer, and when more messages are pending than wanted it narrows the
//! start sequence by bisection on the consumer's pending count, then reads
//! and deletes the consumer. So a request costs a bounded number of
//! consumers, each removed when the request is done.

use std::time::Duration;

use aegis_contracts::subjects::{
    DEFINITIONS_BUCKET, LOG_STREAM, LOG_SUBJECTS, METRICS_STREAM, METRICS_SUBJECTS,
};
use aegis_sdk::streams::bounded;
use async_nats::jetstream::{
    self, Message,
    consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, pull},
    kv,
    stream::{self, DiscardPolicy, RetentionPolicy, StorageType, Stream},
};
use futures::StreamExt;

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
            let what = "bucket service_definitions";
            aegis_sdk::streams::create_or_find_bucket(js, config)
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

/// The operator: opens or creates the stream and bounds it when it has no
/// limits. The monitor: opens it as it is (a stream without limits is
/// logged: `aegis init` bounds it), and creates it only when missing.
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
                "the stream has no size limits and may fill the disk; `aegis init` (as the operator) bounds it"
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

async fn consumer_at(
    stream: &Stream,
    subject: &str,
    deliver_policy: DeliverPolicy,
) -> Result<(jetstream::consumer::Consumer<pull::Config>, u64), BusError> {
    let mut consumer = stream
        .create_consumer(pull::Config {
            deliver_policy,
            filter_subject: subject.to_owned(),
            ack_policy: AckPolicy::None,
            replay_policy: ReplayPolicy::Instant,
            inactive_threshold: Duration::from_secs(30),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .map_err(|e| BusError::new("creating a reader consumer", e))?;
    let pending = consumer
        .info()
        .await
        .map_err(|e| BusError::new("reading consumer info", e))?
        .num_pending;
    Ok((consumer, pending))
}

async fn drop_consumer(stream: &Stream, consumer: &jetstream::consumer::Consumer<pull::Config>) {
    let name = consumer.cached_info().name.clone();
    if let Err(e) = stream.delete_consumer(&name).await {
        // It expires on its own after its inactivity threshold.
        tracing::debug!(consumer = %name, error = %aegis_sdk::startup::Causes(&e), "deleting a reader consumer failed");
    }
}

/// The newest `limit` messages on `subject` (no wildcards) stored since
/// `since`, oldest first.
pub(crate) async fn tail(
    stream: &Stream,
    subject: &str,
    since: Since,
    limit: usize,
) -> Result<Vec<Message>, BusError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let policy = match since {
        Since::Beginning => DeliverPolicy::All,
        Since::Time(start_time) => DeliverPolicy::ByStartTime { start_time },
    };
    let (mut consumer, mut pending) = consumer_at(stream, subject, policy).await?;
    if pending == 0 {
        drop_consumer(stream, &consumer).await;
        return Ok(Vec::new());
    }
    let limit_u64 = limit as u64;
    if pending > limit_u64.saturating_mul(2) {
        // Too many: find the start sequence that leaves about `limit`.
        let first = read(&consumer, 1).await?;
        drop_consumer(stream, &consumer).await;
        let mut lo = first
            .first()
            .and_then(|m| m.info().ok().map(|i| i.stream_sequence))
            .ok_or_else(|| BusError::msg("a pending message vanished"))?;
        let mut hi = stream
            .direct_get_last_for_subject(subject)
            .await
            .map_err(|e| BusError::new("reading the last message", e))?
            .sequence;
        // Invariant: pending(lo) > limit >= pending(hi).
        while hi > lo + 1 {
            let mid = lo + (hi - lo) / 2;
            let (probe, p) = consumer_at(
                stream,
                subject,
                DeliverPolicy::ByStartSequence {
                    start_sequence: mid,
                },
            )
            .await?;
            drop_consumer(stream, &probe).await;
            if p > limit_u64 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        (consumer, pending) = consumer_at(
            stream,
            subject,
            DeliverPolicy::ByStartSequence { start_sequence: lo },
        )
        .await?;
    }
    let messages = read(&consumer, pending as usize).await;
    drop_consumer(stream, &consumer).await;
    let mut messages = messages?;
    if messages.len() > limit {
        messages.drain(..messages.len() - limit);
    }
    Ok(messages)
}

/// Reads up to `count` messages from a fresh consumer.
async fn read(
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    count: usize,
) -> Result<Vec<Message>, BusError> {
    let mut out = Vec::with_capacity(count.min(4096));
    while out.len() < count {
        let want = (count - out.len()).min(1000);
        let mut batch = consumer
            .batch()
            .max_messages(want)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .map_err(|e| BusError::new("reading messages", e))?;
        let before = out.len();
        while let Some(message) = batch.next().await {
            out.push(message.map_err(|e| BusError::new("reading a message", e))?);
        }
        if out.len() == before {
            // Expired before anything arrived (e.g. trimmed meanwhile).
            break;
        }
    }
    Ok(out)
}
