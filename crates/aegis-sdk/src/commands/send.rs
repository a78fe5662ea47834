//! Sending a command and following it to completion.

use std::time::Duration;

use aegis_contracts::{
    commands::CommandReply,
    models::rfc3339,
    names, subjects,
    wire::{HEADER_COMMAND_ID, HEADER_INSTANCE, HEADER_REPLY_TO},
};
use async_nats::{HeaderMap, Subscriber};
use futures::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tokio::time::Instant;

use super::{
    CommandError, Commands, HEADER_DEADLINE, HEADER_NOT_RUN, HEADER_SERVICE, command_inbox,
    ensure_commands_stream,
};
use crate::clock;

/// One message from the worker about a command.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum CommandUpdate {
    /// Work in progress.
    Progress {
        /// 0–100.
        percent: f32,
        /// What the worker is doing.
        message: String,
    },
    /// Done; the worker's result.
    Completed(serde_json::Value),
}

/// A queued command: read its progress with [`next`](Self::next) or wait for
/// the result with [`result`](Self::result).
#[derive(Debug)]
pub struct CommandHandle {
    id: String,
    /// The command's own reply inbox ([`command_inbox`]).
    inbox: String,
    replies: Subscriber,
    /// Whether a reply not from the addressed service was dropped (said
    /// once at WARN).
    refused_one: bool,
    deadline: Instant,
    timeout: Duration,
    done: bool,
    /// Whether a worker has been heard from about it (progress): one took
    /// it, so it may have run, whatever a later reply or check says.
    worked: bool,
    /// The instance id the latest reply named (its worker's).
    worker: Option<String>,
    /// To tell, past the deadline, whether a worker took it.
    taken: TakenCheck,
}

/// What tells whether a worker took a command: the service's worker
/// consumer has been delivered the command's stream sequence.
#[derive(Debug)]
struct TakenCheck {
    js: async_nats::jetstream::Context,
    service: String,
    /// The command's sequence in `COMMANDS`.
    sequence: u64,
}

/// How long the check past a deadline may take.
const TAKEN_CHECK: Duration = Duration::from_secs(1);

/// How long after its deadline a command still not taken is checked once
/// more before it is said never to run: a worker skips a command by its
/// own clock, which may be behind the sender's by this much.
const CLOCK_MARGIN: Duration = Duration::from_secs(1);

/// Past the deadline, once a worker is seen to have taken the command, how
/// long its word that it skipped it (taken too late) is waited for.
const SKIP_GRACE: Duration = Duration::from_millis(250);

impl TakenCheck {
    /// Past the deadline: `Some(worker_known)` when no worker took the
    /// command, neither by the deadline nor [`CLOCK_MARGIN`] after it (a
    /// worker whose clock is behind by less skips it by then); `None`
    /// when one did, or when that cannot be read.
    async fn not_taken_past_deadline(&self) -> Option<bool> {
        self.not_taken().await?;
        tokio::time::sleep(CLOCK_MARGIN).await;
        self.not_taken().await
    }

    /// `Some(worker_known)` when no worker took the command (`worker_known`:
    /// the worker's consumer exists); `None` when one did, or when that
    /// cannot be read.
    async fn not_taken(&self) -> Option<bool> {
        use async_nats::jetstream::context::ConsumerInfoErrorKind;
        let stream = self
            .js
            .get_stream_no_info(subjects::COMMANDS_STREAM)
            .await
            .ok()?;
        let check = stream.consumer_info(format!("{}_commands", self.service));
        match tokio::time::timeout(TAKEN_CHECK, check).await.ok()? {
            Ok(info) => (info.delivered.stream_sequence < self.sequence).then_some(true),
            Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Some(false),
            Err(_) => None,
        }
    }
}

impl Commands {
    /// Queues `command` for `service` with `payload` as JSON; the result must
    /// arrive within `timeout` from this call, queuing included (one past a
    /// century, such as `Duration::MAX`, counts as a century: the deadline
    /// the worker is sent is a date). A publish slower than `timeout`
    /// still returns the handle, whose deadline has then passed.
    ///
    /// The command is stored once, under its id, even when it is sent
    /// again: while the `COMMANDS` stream has no leader for a moment (a
    /// leader change takes milliseconds) or its acknowledgement is late.
    /// A stream that does not exist yet is created after a second of
    /// "no stream" answers, and the command sent once more.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::commands::CommandError> {
    /// use std::time::Duration;
    /// use aegis_sdk::commands::CommandUpdate;
    ///
    /// let mut handle = conn
    ///     .commands()
    ///     .send("order-service", "rebuild_book", &serde_json::json!({"account": "A1"}), Duration::from_secs(30))
    ///     .await?;
    /// loop {
    ///     match handle.next().await? {
    ///         CommandUpdate::Progress { percent, message } => {
    ///             // Which worker sent it (`None` from a worker that predates saying so).
    ///             let worker = handle.worker_instance().unwrap_or("?");
    ///             println!("{percent:.0}% {message} (on {worker})");
    ///         }
    ///         CommandUpdate::Completed(result) => { println!("done: {result}"); break; }
    ///         // Kinds of update added later.
    ///         _ => {}
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`CommandError`]: invalid names (before any I/O), an unencodable
    /// payload, or the command not being queued
    /// ([`CommandError::Publish`]; at once, quoting the server, when it
    /// refuses this user the command's subject).
    pub async fn send<T: Serialize + ?Sized>(
        &self,
        service: &str,
        command: &str,
        payload: &T,
        timeout: Duration,
    ) -> Result<CommandHandle, CommandError> {
        // One moment for both deadlines, the worker's and the handle's: a
        // slow publish (a stream created, a leader change) comes out of
        // the timeout, not on top of it.
        let (started, now) = (Instant::now(), chrono::Utc::now());
        names::validate_service_name(service)?;
        names::validate_command_name(command)?;
        let body = serde_json::to_vec(payload).map_err(CommandError::Codec)?;
        let subject = subjects::command_subject(service, command);
        let client = self.conn.client();
        let id = nuid::next().to_string();
        // The connection's reply prefix (`_INBOX_operator` for the
        // operator), with a token for the service: only its user may
        // publish there.
        let fresh = client.new_inbox();
        let prefix = fresh.rsplit_once('.').map_or(fresh.as_str(), |(p, _)| p);
        let inbox = command_inbox(prefix, service, &id);
        // Subscribe before queuing, so no reply can be missed.
        let replies = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| CommandError::Publish {
                subject: subject.clone(),
                source: e.into(),
            })?;
        let deadline = clock::utc_deadline(now, timeout);
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_COMMAND_ID, id.as_str());
        headers.insert(HEADER_REPLY_TO, inbox.as_str());
        headers.insert(HEADER_DEADLINE, rfc3339::format_utc(&deadline).as_str());
        let body = bytes::Bytes::from(body);
        // Under the command's id, so a copy sent again (no acknowledgement
        // in time, or no stream leader for a moment: a leader change takes
        // milliseconds, and a send refused then failed) is stored once.
        let publish = |headers: HeaderMap| {
            crate::streams::publish_deduplicated(
                &self.conn,
                subject.clone(),
                &id,
                headers,
                body.clone(),
            )
        };
        let ack = match publish(headers.clone()).await {
            Ok(ack) => ack,
            // Refused this user: no stream would change that, and the
            // look-up (or creation) may be refused too, losing its words.
            Err(first) if crate::connection::refusals::refusal_in(&first).is_some() => {
                return Err(CommandError::Publish {
                    subject,
                    source: first.into(),
                });
            }
            Err(first) => {
                // The stream may not exist yet: create it and try once more.
                tracing::debug!(subject, error = %first, "queuing a command failed; looking up its stream");
                ensure_commands_stream(self.conn.jetstream(), self.conn.config()).await?;
                publish(headers)
                    .await
                    .map_err(|source| CommandError::Publish {
                        subject: subject.clone(),
                        source: crate::streams::NoStreamTookIt::explained(source.into()),
                    })?
            }
        };
        Ok(CommandHandle {
            id,
            inbox,
            replies,
            refused_one: false,
            deadline: clock::deadline(started, timeout),
            timeout,
            done: false,
            worked: false,
            worker: None,
            taken: TakenCheck {
                js: self.conn.jetstream().clone(),
                service: service.to_owned(),
                sequence: ack.sequence,
            },
        })
    }
}

impl CommandHandle {
    /// The command's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The instance id of the worker that sent the latest update (or the
    /// failure) [`next`](Self::next) returned: the worker running the
    /// command, as its progress names it. It changes when the command is
    /// taken again by another worker (its worker went silent: it died, or
    /// lost its lead) and runs there from the start. `None` before any
    /// reply, and for replies of a worker that predates naming itself.
    ///
    /// Workers name it in the `Aegis-Instance` header of every reply
    /// (their [`instance_id`](super::CommandWorkerBuilder::instance_id)),
    /// not in the reply's JSON, which is unchanged: older senders read
    /// the replies as before.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::commands::CommandError> {
    /// use std::time::Duration;
    /// use aegis_sdk::commands::CommandUpdate;
    ///
    /// let mut handle = conn
    ///     .commands()
    ///     .send("order-service", "rebuild_book", &serde_json::json!({}), Duration::from_secs(60))
    ///     .await?;
    /// let mut running_on: Option<String> = None;
    /// loop {
    ///     let update = handle.next().await?;
    ///     let worker = handle.worker_instance().map(str::to_owned);
    ///     if running_on.is_some() && worker.is_some() && worker != running_on {
    ///         println!("restarted on {}", worker.as_deref().unwrap_or("?"));
    ///     }
    ///     running_on = worker.or(running_on);
    ///     if let CommandUpdate::Completed(result) = update {
    ///         println!("done on {}: {result}", running_on.as_deref().unwrap_or("?"));
    ///         break;
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn worker_instance(&self) -> Option<&str> {
        self.worker.as_deref()
    }

    /// The next update: progress, or the completion (after which the handle
    /// is finished).
    ///
    /// # Errors
    /// [`CommandError::Failed`] when the worker reports failure;
    /// [`CommandError::NotTaken`] when the worker that took the command
    /// skipped it (taken past its deadline, on its first delivery), or
    /// past the deadline when no worker took it (asked of JetStream then
    /// and once more a second later, so a NotTaken comes a second or so
    /// after the deadline), else [`CommandError::Timeout`]. Never
    /// NotTaken once a worker has reported progress for the command: it
    /// may have run (its worker may have died since, and the next worker
    /// skipped it). [`CommandError::Closed`] when called again after the
    /// end.
    pub async fn next(&mut self) -> Result<CommandUpdate, CommandError> {
        if self.done {
            return Err(CommandError::Closed(self.id.clone()));
        }
        loop {
            let msg = match tokio::time::timeout_at(self.deadline, self.replies.next()).await {
                Err(_) => {
                    self.done = true;
                    return Err(self.past_deadline().await);
                }
                Ok(None) => {
                    self.done = true;
                    return Err(CommandError::Closed(self.id.clone()));
                }
                Ok(Some(msg)) => msg,
            };
            if !from_addressed(&msg, &self.inbox, &self.taken.service) {
                self.refuse(&msg);
                continue;
            }
            let not_run = skipped_unrun(&msg);
            let Ok(reply) = serde_json::from_slice::<CommandReply>(&msg.payload) else {
                tracing::debug!(command = %self.id, "ignoring an unreadable command reply");
                continue;
            };
            self.worker = worker_of(&msg);
            return match reply {
                CommandReply::Progress { percent, message } => {
                    self.worked = true;
                    Ok(CommandUpdate::Progress { percent, message })
                }
                CommandReply::Completed { result } => {
                    self.done = true;
                    Ok(CommandUpdate::Completed(result))
                }
                // Skipped by its worker: it did not run, whatever the
                // error says (a TIMEOUT, for older senders), unless a
                // worker reported progress for it (the skip is of a later
                // delivery, by a worker that predates telling them apart).
                CommandReply::Failed { .. } if not_run => {
                    self.done = true;
                    Err(if self.worked {
                        self.timed_out()
                    } else {
                        self.not_taken(true)
                    })
                }
                CommandReply::Failed { error } => {
                    self.done = true;
                    Err(CommandError::Failed(error))
                }
            };
        }
    }

    /// Past the deadline: NotTaken when no worker took the command, or
    /// when the worker that took it says it skipped it (it may say so
    /// while the taken check runs, or just after: taken late, it shows as
    /// taken); else Timeout. Timeout at once when a worker reported
    /// progress, and Timeout as soon as a reply other than a skip comes
    /// (a worker took it).
    async fn past_deadline(&mut self) -> CommandError {
        if self.worked {
            return self.timed_out();
        }
        let not_taken = {
            let Self {
                replies,
                taken,
                inbox,
                ..
            } = self;
            let mut sign = std::pin::pin!(worker_sign(replies, inbox, &taken.service));
            tokio::select! {
                verdict = taken.not_taken_past_deadline() => match verdict {
                    Some(worker_known) => Some(worker_known),
                    None => match tokio::time::timeout(SKIP_GRACE, &mut sign).await {
                        Ok(Sign::Skipped) => Some(true),
                        Ok(Sign::Worked) | Err(_) => None,
                    },
                },
                sign = &mut sign => match sign {
                    Sign::Skipped => Some(true),
                    Sign::Worked => None,
                },
            }
        };
        match not_taken {
            Some(worker_known) => self.not_taken(worker_known),
            None => self.timed_out(),
        }
    }

    /// Drops a reply that does not come from the addressed service: said
    /// at WARN for the first, at DEBUG after (a flood must not flood the
    /// log).
    fn refuse(&mut self, msg: &async_nats::Message) {
        let claimed = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_SERVICE))
            .map(|v| v.as_str().to_owned());
        if self.refused_one {
            tracing::debug!(command = %self.id, ?claimed, "ignoring another reply not from the addressed service");
        } else {
            self.refused_one = true;
            tracing::warn!(
                command = %self.id,
                service = %self.taken.service,
                subject = %msg.subject,
                ?claimed,
                "ignoring a command reply that does not come from the service the command was sent to"
            );
        }
    }

    /// A worker took the command, and it did not complete in time.
    fn timed_out(&self) -> CommandError {
        CommandError::Timeout {
            id: self.id.clone(),
            timeout: self.timeout,
        }
    }

    fn not_taken(&self, worker_known: bool) -> CommandError {
        CommandError::NotTaken {
            id: self.id.clone(),
            service: self.taken.service.clone(),
            timeout: self.timeout,
            worker_known,
        }
    }

    /// Waits for the result, skipping progress reports, and decodes it.
    ///
    /// # Errors
    /// As [`next`](Self::next), plus [`CommandError::Codec`] when the result
    /// is not an `R`.
    pub async fn result<R: DeserializeOwned>(mut self) -> Result<R, CommandError> {
        loop {
            if let CommandUpdate::Completed(value) = self.next().await? {
                return serde_json::from_value(value).map_err(CommandError::Codec);
            }
        }
    }

    /// The updates as a stream, ending after the completion or the first error.
    pub fn into_stream(self) -> impl Stream<Item = Result<CommandUpdate, CommandError>> {
        futures::stream::unfold(self, |mut handle| async move {
            if handle.done {
                return None;
            }
            let item = handle.next().await;
            Some((item, handle))
        })
    }
}

/// The instance id a reply names its worker by, if any.
fn worker_of(msg: &async_nats::Message) -> Option<String> {
    msg.headers
        .as_ref()
        .and_then(|h| h.get(HEADER_INSTANCE))
        .map(|v| v.as_str().to_owned())
        .filter(|v| !v.is_empty())
}

/// Whether `msg` is a reply of the addressed `service`: it arrived on the
/// command's own `inbox` (which only that service's user may publish to,
/// on a bus with the Aegis permissions), and does not name another
/// service in [`HEADER_SERVICE`]. A reply without the header is taken: a
/// worker built before it sends none, and the header proves nothing the
/// inbox's permission does not (whoever may publish there may set it).
fn from_addressed(msg: &async_nats::Message, inbox: &str, service: &str) -> bool {
    msg.subject.as_str() == inbox
        && msg
            .headers
            .as_ref()
            .and_then(|h| h.get(HEADER_SERVICE))
            .is_none_or(|v| v.as_str() == service)
}

/// Whether a reply says its worker skipped the command unrun.
fn skipped_unrun(msg: &async_nats::Message) -> bool {
    msg.headers
        .as_ref()
        .is_some_and(|h| h.get(HEADER_NOT_RUN).is_some())
}

/// What a reply past the deadline says of the command's worker.
enum Sign {
    /// It skipped the command unrun.
    Skipped,
    /// It ran, or may have run, the command: progress, a result, or a
    /// failure not marked "not run".
    Worked,
}

/// Ends at the first readable reply of the addressed `service`, saying
/// what it shows; unreadable ones, and others', are dropped.
async fn worker_sign(replies: &mut Subscriber, inbox: &str, service: &str) -> Sign {
    while let Some(msg) = replies.next().await {
        if !from_addressed(&msg, inbox, service) {
            continue;
        }
        if skipped_unrun(&msg) {
            return Sign::Skipped;
        }
        if serde_json::from_slice::<CommandReply>(&msg.payload).is_ok() {
            return Sign::Worked;
        }
    }
    std::future::pending().await
}
