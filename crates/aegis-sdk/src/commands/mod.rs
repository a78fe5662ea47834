//! Commands: requests for work that may take a while, queued on the
//! work-queue stream `COMMANDS` at `commands.{service}.{command}`.
//!
//! - [`send`]: [`Commands::send`] queues a command and returns a
//!   [`CommandHandle`] that yields progress reports and the final result, under
//!   a timeout.
//! - [`worker`]: [`Commands::worker`] consumes the commands of a service (its
//!   instances share one durable consumer, so each command runs once) and
//!   reports progress and the result back to the sender. A deleted consumer
//!   is recreated with back-off (the commands wait in the work queue). A
//!   running command's ack deadline keeps being extended; a command whose
//!   worker dies is offered again, at most `max_deliver` times in all, so a
//!   command that crashes its process cannot crash-loop the service: after
//!   the last delivery the server's advisory lands in `DEAD_LETTER`.
//!
//! Which instances run commands: every instance of a service that starts a
//! worker takes commands from the shared work queue, a single-active
//! service's standbys included. Commands that act on the state a sticky
//! leader keeps belong on the leader: start those workers with
//! [`CommandWorkerBuilder::leader_of`], and a worker pulls only while its
//! instance leads (the commands wait in the work queue meanwhile, within
//! their deadline), and each command carries the leader's epoch. A brief
//! lapse of the leader's lease (renewals answered late: it stops serving
//! and serves again at the same epoch) runs no new command meanwhile but
//! hands none back; a deposal does, after at most 10 s. A lapse longer
//! than a lease, or one while the worker's connection is down or cut off,
//! cannot be told from a deposal: the 10 s clock runs, and a command still
//! running then is handed back unless the leader has served again at the
//! same epoch by then. Such a hand-back, after a doubt or with the
//! connection down, sends the server nothing that reopens or ends the
//! command (a successor may run it already, and the server would apply it
//! to the successor's delivery): the command's `ack_wait` returns it, so
//! the new leader gets it `ack_wait` after the hand-back at most. A clean
//! deposal, seen while connected, and a stop hand it back at once.
//!
//! Which worker runs a command, as its sender sees it: every reply a
//! worker sends (progress, result, failure) names its instance
//! ([`CommandWorkerBuilder::instance_id`]) in the `Aegis-Instance` header,
//! and [`CommandHandle::worker_instance`] gives the one the latest update
//! came from: a command taken again by another worker (its worker went
//! silent) shows up as updates from another instance. The replies' JSON
//! is unchanged, so senders that predate the header read them as before.
//!
//! Who may answer a command: its replies go to an inbox of its own
//! ([`command_inbox`], `{prefix}.cmd.{service}.{id}`), which the bus's
//! permissions let only the addressed service's user publish to. The
//! sender takes only replies that arrive there and do not name another
//! service in the `Aegis-Service` header ([`HEADER_SERVICE`]); any other
//! is dropped (a WARN, once per command). A reply without the header (a
//! worker that predates it) is taken: the inbox's permission is the
//! protection, since whoever may publish there may set the header too.
//! Upgrading: the senders and the bus's permissions change together (an
//! older sender's inbox, `{prefix}.{id}`, is refused by the new
//! permissions, and a new sender's by the old ones); workers may follow.
//!
//! Where its commands are listed: an instance of a service lists the
//! commands its process's workers take (on the same connection) in its
//! services-protocol answer (`$SRV.INFO`), next to its methods, as
//! endpoints whose metadata says `kind: command`, with the JSON Schema of
//! their payload; [`describe`](crate::rpc::describe()) reads them apart from
//! the methods, and `aegis status SERVICE`, `aegis call SERVICE --schema`
//! and `aegis command` show them.
//!
//! A command carries its deadline; a worker that picks it up after the deadline
//! does not run it. On its first delivery it says so ([`HEADER_NOT_RUN`]):
//! the sender reports [`CommandError::NotTaken`], as for a command no
//! worker took. A command delivered before (a worker took it and went
//! silent, or handed it back) may have run: that is answered TIMEOUT, and
//! a sender that saw progress never reports it not taken. A worker without a handler for a command (an older
//! version, during a rolling upgrade) hands it back for a worker that has
//! one, while its deliveries and its deadline allow; then it answers
//! NOT_FOUND, before the deadline.

pub(crate) mod catalog;
pub mod send;
pub mod worker;

use std::time::Duration;

use aegis_contracts::{names::NameError, subjects, wire::WireError};
use async_nats::jetstream::{self, stream};

pub use send::{CommandHandle, CommandUpdate};
pub use worker::{Command, CommandWorker, CommandWorkerBuilder, DEFAULT_MAX_DELIVER, Progress};

use crate::{AegisConfig, Connection, streams::bounded};

/// Header carrying the command's deadline (RFC 3339 UTC).
pub const HEADER_DEADLINE: &str = "Aegis-Deadline";

/// Header on a worker's `failed` reply saying the command did not run and
/// will not (its value says why: `expired`, taken past its deadline on its
/// first delivery; a command delivered before may have run and gets no
/// such header). The
/// sender reports it as [`CommandError::NotTaken`]; the reply's
/// `TIMEOUT` error is for senders that predate the header.
pub const HEADER_NOT_RUN: &str = "Aegis-Not-Run";

/// Header on every reply of a worker naming the service whose command it
/// ran (the `{service}` of `commands.{service}.{command}`). A sender
/// takes a reply only when it names the service the command was sent to
/// (and arrives on that command's own inbox, see [`command_inbox`]).
pub const HEADER_SERVICE: &str = "Aegis-Service";

/// The inbox a command for `service` is answered on, under the sender's
/// reply-inbox `prefix`: `{prefix}.cmd.{service}.{id}` (`id`: the
/// command's id).
///
/// Its own token for the service lets the server's permissions say who
/// may answer: a service's user is granted `_INBOX_operator.cmd.{service}.*`
/// only, so no other service can push a forged progress report or result
/// into a command it was not sent, and none can reach the operator's
/// request-reply inboxes (`_INBOX_operator.{nuid}.{n}`, three tokens).
///
/// ```
/// use aegis_sdk::commands::command_inbox;
/// assert_eq!(
///     command_inbox("_INBOX_operator", "order-service", "abc"),
///     "_INBOX_operator.cmd.order-service.abc"
/// );
/// ```
pub fn command_inbox(prefix: &str, service: &str, id: &str) -> String {
    format!("{prefix}.cmd.{service}.{id}")
}

/// Commands to services. Get one from [`Connection::commands`].
#[derive(Debug, Clone)]
pub struct Commands {
    pub(crate) conn: Connection,
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// A service or command name is invalid; nothing was sent.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The payload or result could not be encoded or decoded.
    #[error("cannot encode or decode a command payload")]
    Codec(#[source] serde_json::Error),
    /// The `COMMANDS` stream could not be created or found.
    #[error("cannot create or find the COMMANDS stream")]
    Stream(#[source] async_nats::Error),
    /// The command was not confirmed as queued.
    #[error("the command on {subject} was not queued")]
    Publish {
        /// The subject published to.
        subject: String,
        /// The client's error; wrapped in
        /// [`NoStreamTookIt`](crate::streams::NoStreamTookIt) when nobody took
        /// the write (a stream without a leader, or none).
        #[source]
        source: async_nats::Error,
    },
    /// No result arrived before the deadline, and a worker took the
    /// command (or whether one did could not be read): it may have run,
    /// or may still be running.
    #[error("command {id} did not complete within {timeout:?}")]
    Timeout {
        /// The command id.
        id: String,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// No result arrived before the deadline because no worker took the
    /// command, by then nor a second later, or because the worker that
    /// took it did so past its deadline, on its first delivery, and skipped
    /// it (and said so): it never ran, and will not (a worker skips a command past its
    /// deadline, by its own clock: one more than a second behind the
    /// sender's could still run it), so it may be sent again once a worker
    /// of the service runs. As the consumer's leader reports it: one that
    /// failed over just after a delivery may report it undelivered.
    #[error(
        "command {id} was not taken by any worker of {service} within {timeout:?}: {}",
        if *.worker_known { "its worker took no command since this one was queued (it is down, or busy with earlier ones)" } else { "no worker of this service has ever consumed commands (start one with Commands::worker)" }
    )]
    NotTaken {
        /// The command id.
        id: String,
        /// The service it was sent to.
        service: String,
        /// The deadline that passed.
        timeout: Duration,
        /// Whether the service's worker consumer exists (a worker ran
        /// once): then it is down, or stuck on earlier commands.
        worker_known: bool,
    },
    /// The worker reported a failure.
    #[error("command failed: {0}")]
    Failed(WireError),
    /// The reply subscription ended unexpectedly (connection closed).
    #[error("the reply channel of command {0} closed")]
    Closed(String),
    /// Concurrency, `max_deliver` or `ack_wait` cannot work; nothing was
    /// started.
    #[error("invalid worker options: {0}")]
    InvalidOptions(String),
    /// The worker's consumer could not be created.
    #[error("cannot create the command consumer {name}")]
    Consumer {
        /// The consumer name.
        name: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

impl Commands {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Creates the `COMMANDS` work-queue stream if it does not exist.
    ///
    /// # Errors
    /// [`CommandError::Stream`] when JetStream refuses.
    pub async fn ensure_stream(&self) -> Result<jetstream::stream::Stream, CommandError> {
        ensure_commands_stream(self.conn.jetstream(), self.conn.config()).await
    }
}

/// Creates the `COMMANDS` work-queue stream when missing, with the limits
/// of [`StreamsConfig::commands`](crate::StreamsConfig::commands). When
/// full it refuses new commands (the sender gets
/// [`CommandError::Publish`]) rather than dropping queued ones.
///
/// # Errors
/// [`CommandError::Stream`] when JetStream refuses.
pub async fn ensure_commands_stream(
    js: &jetstream::Context,
    config: &AegisConfig,
) -> Result<jetstream::stream::Stream, CommandError> {
    let stream = stream::Config {
        name: subjects::COMMANDS_STREAM.to_owned(),
        subjects: vec![subjects::COMMANDS_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        discard: stream::DiscardPolicy::New,
        duplicate_window: Duration::from_secs(120),
        num_replicas: config.nats.replicas,
        description: Some("Aegis commands (commands.{service}.{command})".to_owned()),
        ..Default::default()
    };
    crate::streams::ensure_stream(js, bounded(stream, &config.streams.commands))
        .await
        .map_err(CommandError::Stream)
}
