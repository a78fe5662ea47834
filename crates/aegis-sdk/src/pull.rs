//! The durable pull loop behind [event subscriptions](crate::events) and
//! [command workers](crate::commands).
//!
//! One task per subscription or worker pulls from its durable consumer and
//! hands each message to a handler, then acknowledges it as the handler's
//! [`Outcome`] says. The loop survives whatever the server does to the
//! consumer or its stream:
//!
//! - Before pulling, it makes sure the stream and the durable consumer exist
//!   (creating them when missing), so a consumer deleted by an operator, by a
//!   stream restore or with its stream is recreated. An existing consumer is
//!   brought to the settings asked for (`max_deliver`, `ack_wait`, ...) and
//!   keeps its start, which JetStream cannot change in place and which only
//!   mattered when it was created: its position is what it has handled.
//!   The one start that cannot be kept is "from the oldest message" asked of
//!   a consumer made to start at new ones, or made again by this SDK at a
//!   sequence for such a subscription (it would replay nothing): that
//!   start fails with [`FixedSetting`] rather than pass for applied. One
//!   at a sequence with no record of the start it was made for (an
//!   earlier SDK made it again so, keeping none, or an older instance's
//!   update dropped the record) may be the subscription's own and is
//!   taken, with a warning, after an upgrade as before it. A
//!   running loop that opens its consumer again after a failure takes it
//!   as it is, with a warning: another instance (a version without that
//!   option) made it so, and refusing it would stop this one consuming
//!   for good. A setting the server does not take fails the open too;
//!   nothing is kept quietly.
//! - Any failed pull (consumer deleted, no responders, stream gone, a refused
//!   request) is followed by a back-off (100 ms doubling to 5 s) before the
//!   next attempt, and so is a pull that ends empty right away: a consumer
//!   that cannot be had is retried, never spun on.
//! - A consumer recreated after this process received messages resumes at
//!   the oldest message this process still owes a decision on, whatever
//!   start it was configured with (starting at the oldest stored again
//!   would replay everything handled): one a handler is still running
//!   on, or one whose handler failed and that waits, negatively
//!   acknowledged, for its redelivery (the old consumer held that promise
//!   and took it along). Without either, it resumes after the newest
//!   message received, so messages stored while it was missing are not
//!   skipped. Redelivering a few already handled is the price of
//!   at-least-once. On a work-queue stream (commands), which holds only
//!   the messages not yet acknowledged, it starts at the oldest of those.
//! - The limit, in compete mode: each instance knows only the messages it
//!   received itself, and the first instance to recreate the shared
//!   consumer sets where it starts. A message another instance was
//!   handling, or that failed there and waits for its redelivery, is
//!   skipped when the consumer is recreated by an instance that had
//!   received later messages only. Broadcast consumers, and a compete
//!   service with one instance, lose nothing this way.
//!
//! How it keeps redelivery honest:
//!
//! - It asks the server only for as many messages as it has free handler
//!   slots (`concurrency`), so no message waits in this process, unseen by
//!   other instances, while its ack deadline runs out.
//! - While a handler runs, and until its message is acknowledged, it sends
//!   an in-progress acknowledgement every third of the consumer's
//!   `ack_wait`, and at least every [`SETTINGS_MAX_AGE`](settings::SETTINGS_MAX_AGE) (2 s), so long
//!   work is not redelivered elsewhere meanwhile, even when another
//!   instance lowers `ack_wait` (see below); a crashed process stops
//!   sending them and the message comes back after `ack_wait`.
//! - A handler that fails on the last delivery `max_deliver` allows, or a
//!   message that can never be handled, is copied to `DEAD_LETTER` (see
//!   [`crate::dead_letter`]) with the handler's error and terminated;
//!   deliveries that run out without a decision (the process crashed each
//!   time) reach `DEAD_LETTER` through the server's advisory.
//! - `max_deliver` and `ack_wait` here are the consumer's on the server,
//!   not this process's options: another instance (a newer version in a
//!   rolling deploy), or an operator, may have changed them since this one
//!   started. They come with the consumer when it is opened and are read
//!   again when a handler fails or runs long and they are older than
//!   [`SETTINGS_MAX_AGE`](settings::SETTINGS_MAX_AGE) (2 s): at most one JetStream API request per
//!   2 s per loop, however many handlers fail. A change is therefore
//!   seen up to 2 s late; a lowered `ack_wait` paces the in-progress
//!   acknowledgements from then on (one goes at once if already due by
//!   it).
//! - What remains: the server applies a lowered `ack_wait` at once, to
//!   the messages already delivered. One whose last in-progress
//!   acknowledgement is older than the new value is redelivered at that
//!   moment, before this process can notice. As one goes at least every
//!   2 s, that takes an `ack_wait` lowered to about 2 s or less (down to
//!   the 300 ms the options allow) while a handler runs, or in-progress
//!   acknowledgements held up on their way (a slow or silent connection):
//!   the handler then runs on another instance too, concurrently.
//!
//! How it stops: once cancelled it pulls no more and waits for the handlers
//! running, at most [`HANDLER_STOP_WAIT`] (10 s). A handler still running
//! then is abandoned (its future dropped, logged with the message's stream
//! sequence) and its message negatively acknowledged, so the server
//! redelivers it at once to another instance of a compete consumer (a
//! broadcast consumer is this instance's own: its next start gets it)
//! instead of this one keeping it alive, and its own stop waiting, for as
//! long as the handler hangs. The stop of a dropped subscription or
//! worker, which nobody awaits, ends the same way. A handler is abandoned
//! where it awaits: one that blocks its thread (a synchronous call, a busy
//! loop) is never polled to that point and still holds the stop, as it
//! holds the runtime's thread.
//!
//! Opening the consumer (creating it, or bringing an existing one to the
//! settings asked for while keeping its start) is in `durable`
//! ([`Durable`]); the consumer's delivery settings as the server holds
//! them, read again under a running loop, in `settings`
//! ([`DeliveryLimits`]); the loop, the acknowledgements and the back-off
//! are here.

mod durable;
mod settings;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_contracts::dead_letter::DeadLetterReason;
use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use tokio::{sync::Semaphore, time::Instant};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{Instrument, debug, info, warn};

pub(crate) use durable::{Durable, FixedSetting};
pub(crate) use settings::DeliveryLimits;
use settings::Held;

/// First and longest pause after a failed pull or consumer lookup.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one pull request waits on the server for messages. Idle
/// consumers re-pull this often; it also bounds how long a pull lost by the
/// server (a stream leader change) goes unnoticed.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// A pull that ends with nothing sooner than this was refused, not expired.
const MIN_PULL_LIFETIME: Duration = Duration::from_millis(200);

/// How long a stopping loop waits for its running handlers before it gives
/// their messages up for redelivery to another instance: as long as a
/// service's default shutdown timeout.
pub(crate) const HANDLER_STOP_WAIT: Duration = Duration::from_secs(10);

/// Most handlers one subscription or worker may run at once.
pub(crate) const MAX_CONCURRENCY: usize = 1024;
/// Shortest ack deadline accepted (in-progress acks go every third of it).
pub(crate) const MIN_ACK_WAIT: Duration = Duration::from_millis(300);

/// What to do with a message after its handler ran.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Handled: acknowledge it.
    Done,
    /// Failed for now: deliver it again after `delay`, unless this was the
    /// last delivery allowed; then dead-letter it.
    Retry {
        /// Pause before the next delivery.
        delay: Duration,
        /// What went wrong, for the dead letter.
        error: String,
    },
    /// The handler failed: as [`Retry`](Self::Retry), and the loop logs
    /// the failure with what becomes of the message, once it knows
    /// whether the server will deliver it again.
    Failed {
        /// How the failure is logged ("event handler failed").
        what: &'static str,
        /// Pause before the next delivery.
        delay: Duration,
        /// What went wrong, for the log and the dead letter.
        error: String,
    },
    /// Can never be handled (malformed): dead-letter it at once.
    Poison {
        /// What is wrong with it.
        error: String,
    },
}

/// A handler of one message; it must not acknowledge the message itself.
/// It gets the consumer's [`DeliveryLimits`] for the delivery, to decide
/// as the loop will whether this is the last one.
pub(crate) type Handler = Arc<
    dyn Fn(Arc<jetstream::Message>, DeliveryLimits) -> BoxFuture<'static, Outcome> + Send + Sync,
>;

/// Checks the delivery options shared by subscriptions and command workers.
pub(crate) fn check_options(
    concurrency: usize,
    max_deliver: u32,
    ack_wait: Duration,
) -> Result<(), String> {
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        return Err(format!(
            "concurrency must be between 1 and {}",
            MAX_CONCURRENCY
        ));
    }
    if max_deliver == 0 {
        return Err("max_deliver must be at least 1".to_owned());
    }
    if ack_wait < MIN_ACK_WAIT {
        return Err(format!("ack_wait must be at least {:?}", MIN_ACK_WAIT));
    }
    if ack_wait > crate::clock::LONGEST_PERIOD {
        // The server holds nanoseconds in an i64: a longer wait would
        // reach it wrapped.
        return Err("ack_wait must be at most 30 days".to_owned());
    }
    Ok(())
}

/// Makes sure `DEAD_LETTER` exists before the first message can need it;
/// a refusal only loses dead letters, so it is logged, not fatal.
pub(crate) async fn ensure_dead_letters(
    js: &async_nats::jetstream::Context,
    config: &crate::AegisConfig,
) {
    if let Err(e) = crate::dead_letter::ensure_dead_letter_stream(js, config).await {
        warn!(error = %crate::startup::Causes(&e), "cannot create the DEAD_LETTER stream; messages given up on will not be kept there");
    }
}

/// Stream sequences delivered to this process: where a recreated consumer
/// resumes. It must not start past an event this process still owes a
/// decision on: one a handler is running on, or one negatively acknowledged
/// and waiting for its redelivery (which lives only in the old consumer).
/// It resumes at the oldest of those, else after the newest received.
#[derive(Debug, Default)]
struct Progress {
    in_flight: BTreeSet<u64>,
    /// Negatively acknowledged, each with when its redelivery is due.
    owed: BTreeMap<u64, Instant>,
    newest: Option<u64>,
}

impl Progress {
    fn resume_after(&self) -> Option<u64> {
        let oldest_owed = self.owed.keys().next();
        match self.in_flight.first().into_iter().chain(oldest_owed).min() {
            Some(oldest) => Some(oldest.saturating_sub(1)),
            None => self.newest,
        }
    }

    /// Records a message received; it is owed a decision until [`settled`](Self::settled).
    fn received(&mut self, sequence: u64) {
        self.in_flight.insert(sequence);
        self.newest = self.newest.max(Some(sequence));
    }

    /// Records what became of a message once its handler ended: decided
    /// for good, or owed a redelivery at `redeliver_at`.
    fn settled(&mut self, sequence: u64, redeliver_at: Option<Instant>) {
        self.in_flight.remove(&sequence);
        match redeliver_at {
            Some(at) => self.owed.insert(sequence, at),
            None => self.owed.remove(&sequence),
        };
    }

    /// Forgets the messages whose redelivery was due well before a pull
    /// issued at `pulled`, which the consumer served. The server hands due
    /// redeliveries out before new messages, to the pulls waiting, so by
    /// then some instance received them again and tracks them; in compete
    /// mode that may be another instance, which this process would never
    /// hear of. Without this, such messages would pile up here and a
    /// recreated consumer would start ever further back.
    ///
    /// A pull that got all it asked for (`filled`, `received` messages)
    /// may have left due redeliveries queued behind them: only as many of
    /// the oldest are forgotten as it received. One that ended short got
    /// everything the server had to give.
    fn forget_redelivered(&mut self, pulled: Instant, margin: Duration, filled: Option<usize>) {
        let mut forgettable = filled.unwrap_or(usize::MAX);
        self.owed.retain(|_, due| {
            let handed_out = crate::clock::deadline(*due, margin) <= pulled && forgettable > 0;
            if handed_out {
                forgettable -= 1;
            }
            !handed_out
        });
    }
}

/// Pulls and handles messages until `cancel` fires, starting with
/// `consumer` (already opened by the caller, so configuration errors
/// surface at start), then waits for the handlers still running.
pub(crate) async fn run(
    durable: Durable,
    mut consumer: PullConsumer,
    handler: Handler,
    cancel: CancellationToken,
) {
    let durable = Arc::new(durable);
    let slots = Arc::new(Semaphore::new(durable.concurrency.max(1)));
    let handlers = TaskTracker::new();
    // Fired when the stop has waited long enough for the handlers.
    let abandon = CancellationToken::new();
    let progress = Arc::new(Mutex::new(Progress::default()));
    let held = Arc::new(Held::new(&consumer));
    let mut failures = 0u32;
    let mut healthy = true;
    'pulling: loop {
        if !healthy {
            failures = (failures + 1).min(16);
            let delay = BACKOFF_INITIAL
                .saturating_mul(1 << failures.min(6))
                .min(BACKOFF_MAX);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            let resume_after = lock(&progress).resume_after();
            match durable.reopen(resume_after).await {
                Ok(c) => {
                    info!(consumer = durable.name(), "consumer open again");
                    held.reopened(&c);
                    consumer = c;
                }
                Err(e) => {
                    log_failure(failures, durable.name(), "cannot open the consumer", &e);
                    continue;
                }
            }
        }
        // Ask for exactly as many messages as there are free slots.
        let first = tokio::select! {
            () = cancel.cancelled() => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let mut free = vec![first];
        while let Ok(p) = slots.clone().try_acquire_owned() {
            free.push(p);
        }
        let pulled = Instant::now();
        let batch = tokio::select! {
            () = cancel.cancelled() => break,
            batch = consumer.batch().max_messages(free.len()).expires(PULL_EXPIRES).messages() => batch,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                log_failure(failures + 1, durable.name(), "cannot pull", &e);
                healthy = false;
                continue;
            }
        };
        let asked = free.len();
        let mut received = 0usize;
        let mut stopping = false;
        healthy = loop {
            let next = if stopping {
                // The messages that arrived before the stop go to their
                // handlers as any other (a leader-only worker's hands a
                // command back as its term says): dropped with the batch,
                // each would wait out its `ack_wait` (a command's sender
                // its whole deadline) before another instance got it.
                match batch.next().now_or_never() {
                    Some(Some(Ok(message))) => Some(Ok(message)),
                    _ => break 'pulling,
                }
            } else {
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => {
                        stopping = true;
                        continue;
                    }
                    next = batch.next() => next,
                }
            };
            match next {
                Some(Ok(message)) => {
                    received += 1;
                    failures = 0;
                    let Some(slot) = free.pop() else {
                        // The server sent more than asked for; it comes back
                        // after its ack deadline.
                        warn!(
                            consumer = durable.name(),
                            "more messages than requested; leaving one for redelivery"
                        );
                        continue;
                    };
                    let sequence = message.info().ok().map(|i| i.stream_sequence);
                    if let Some(seq) = sequence {
                        lock(&progress).received(seq);
                    }
                    let (durable, consumer, handler, progress, abandon, held) = (
                        durable.clone(),
                        consumer.clone(),
                        handler.clone(),
                        progress.clone(),
                        abandon.clone(),
                        held.clone(),
                    );
                    // A handler's lines are those of the loop's service.
                    handlers.spawn(crate::telemetry::log_layer::inherit(
                        async move {
                            let message = Arc::new(message);
                            let limits = DeliveryLimits::new(
                                held.clone(),
                                durable.clone(),
                                consumer.clone(),
                            );
                            let on = Consumer {
                                durable: &durable,
                                consumer: &consumer,
                                held: &held,
                            };
                            let redeliver_at =
                                handle(on, message, limits, &handler, &abandon).await;
                            if let Some(seq) = sequence {
                                lock(&progress).settled(seq, redeliver_at);
                            }
                            drop(slot);
                        }
                        .in_current_span(),
                    ));
                }
                Some(Err(e)) => {
                    log_failure(failures + 1, durable.name(), "pull failed", &e);
                    break false;
                }
                // Expired, or everything asked for arrived. Ending empty at
                // once means the server refused the request.
                None => break received > 0 || pulled.elapsed() >= MIN_PULL_LIFETIME,
            }
        };
        if healthy {
            let filled = (received >= asked).then_some(received);
            let ack_wait = held.last().ack_wait;
            lock(&progress).forget_redelivered(pulled, ack_wait, filled);
        }
    }
    handlers.close();
    if tokio::time::timeout(HANDLER_STOP_WAIT, handlers.wait())
        .await
        .is_err()
    {
        warn!(
            consumer = durable.name(),
            running = handlers.len(),
            "handlers still running {HANDLER_STOP_WAIT:?} into the stop; abandoning them, their messages go to another instance"
        );
        abandon.cancel();
        handlers.wait().await;
    }
    debug!(consumer = durable.name(), "pull loop stopped");
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The consumer a message came from, as its handler's task sees it.
#[derive(Clone, Copy)]
struct Consumer<'a> {
    durable: &'a Durable,
    consumer: &'a PullConsumer,
    held: &'a Held,
}

/// Runs the handler on one message, keeping its ack deadline from passing
/// until it is acknowledged, and acknowledges as the outcome says. Returns
/// when the message is due again if it is owed a redelivery (negatively
/// acknowledged, or its acknowledgement unconfirmed). When `abandon` fires
/// while the handler runs, the handler is dropped and the message
/// negatively acknowledged for immediate redelivery.
async fn handle(
    on: Consumer<'_>,
    message: Arc<jetstream::Message>,
    limits: DeliveryLimits,
    handler: &Handler,
    abandon: &CancellationToken,
) -> Option<Instant> {
    let Consumer { durable, held, .. } = on;
    let keep_alive = keep_alive(on, &message);
    tokio::pin!(keep_alive);
    let outcome = tokio::select! {
        outcome = handler(message.clone(), limits.clone()) => outcome,
        () = &mut keep_alive => unreachable!("the keep-alive loop never ends"),
        () = abandon.cancelled() => {
            let (sequence, delivered) = message
                .info()
                .map(|i| (i.stream_sequence, i.delivered))
                .unwrap_or_default();
            warn!(consumer = durable.name(), sequence, delivered, "abandoning a handler still running at the stop's time limit; its message is redelivered");
            if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
                warn!(consumer = durable.name(), sequence, error = %crate::startup::Causes(&*e), "cannot hand back an abandoned message; it is redelivered after its ack deadline");
            }
            return Some(Instant::now());
        }
    };
    let mut redeliver_at = None;
    // The decision may wait for the consumer's settings, a dead letter's
    // store or the ack's confirmation: the message stays in progress.
    let ack = tokio::select! {
        ack = decide(on, &message, &limits, outcome, &mut redeliver_at) => ack,
        () = &mut keep_alive => unreachable!("the keep-alive loop never ends"),
    };
    if let Err(e) = ack {
        warn!(consumer = durable.name(), error = %crate::startup::Causes(&*e), "acknowledgement not confirmed; the message may be delivered again");
        return Some(crate::clock::deadline(Instant::now(), held.last().ack_wait));
    }
    redeliver_at
}

/// Says the message is in progress, never ending: every
/// [`keep_alive_every`](Settings::keep_alive_every) (at most
/// [`SETTINGS_MAX_AGE`](settings::SETTINGS_MAX_AGE)), reading the consumer's settings again after
/// each beat, so the next one is paced by an `ack_wait` another instance
/// lowered (and goes at once if already due by it).
async fn keep_alive(on: Consumer<'_>, message: &jetstream::Message) {
    let mut beat = Instant::now();
    loop {
        tokio::time::sleep_until(beat + on.held.last().keep_alive_every()).await;
        beat = Instant::now();
        if let Err(e) = message.ack_with(AckKind::Progress).await {
            debug!(error = %crate::startup::Causes(&*e), "in-progress acknowledgement not sent");
        }
        // No request when they were read within SETTINGS_MAX_AGE.
        on.held.current(on.durable, on.consumer).await;
    }
}

/// Acknowledges a message as its handler's outcome says.
async fn decide(
    on: Consumer<'_>,
    message: &jetstream::Message,
    limits: &DeliveryLimits,
    outcome: Outcome,
    redeliver_at: &mut Option<Instant>,
) -> Result<(), async_nats::Error> {
    let durable = on.durable;
    match outcome {
        Outcome::Done if durable.confirm_acks => message.double_ack().await,
        Outcome::Done => message.ack().await,
        Outcome::Retry { delay, error } => {
            let failure = Failure {
                logged_as: None,
                delay,
                error,
            };
            failed(on, message, limits, failure, redeliver_at).await
        }
        Outcome::Failed { what, delay, error } => {
            let failure = Failure {
                logged_as: Some(what),
                delay,
                error,
            };
            failed(on, message, limits, failure, redeliver_at).await
        }
        Outcome::Poison { error } => {
            give_up(durable, message, DeadLetterReason::Undecodable, &error).await
        }
    }
}

/// A handler's failure: how it is logged (`None`: not at all) and what
/// the message needs.
struct Failure {
    logged_as: Option<&'static str>,
    delay: Duration,
    error: String,
}

/// Hands a failed message back for redelivery after its delay, setting
/// `redeliver_at`, or dead-letters it when the server will not deliver
/// it again.
async fn failed(
    on: Consumer<'_>,
    message: &jetstream::Message,
    limits: &DeliveryLimits,
    failure: Failure,
    redeliver_at: &mut Option<Instant>,
) -> Result<(), async_nats::Error> {
    let durable = on.durable;
    let (sequence, delivered) = message
        .info()
        .map(|i| (i.stream_sequence, i.delivered))
        .unwrap_or((0, 1));
    let max_deliver = limits.max_deliver().await;
    let last = is_last_delivery(delivered, max_deliver);
    let Failure {
        logged_as,
        delay,
        error,
    } = failure;
    if let Some(what) = logged_as {
        let next = after_failure(last);
        warn!(consumer = durable.name(), subject = %message.subject, sequence, delivered, max_deliver, %error, "{what}; {next}");
    }
    if last {
        return give_up(durable, message, DeadLetterReason::HandlerFailed, &error).await;
    }
    *redeliver_at = Some(crate::clock::deadline(Instant::now(), delay));
    message.ack_with(AckKind::Nak(Some(delay))).await
}

/// Whether delivery `delivered` is the last that `max_deliver` allows (0
/// or less: no limit): a failure then goes to `DEAD_LETTER`, not back to
/// the server.
pub(crate) fn is_last_delivery(delivered: i64, max_deliver: i64) -> bool {
    max_deliver > 0 && delivered >= max_deliver
}

/// What becomes of a message whose handler failed, as its log line says.
fn after_failure(last: bool) -> &'static str {
    if last {
        "the last delivery allowed; dead-lettering it"
    } else {
        "will redeliver"
    }
}

/// Copies the message to `DEAD_LETTER` and stops its redelivery. When the
/// copy cannot be stored, a failed handler's message is left to the server
/// (its deliveries run out and the advisory reaches `DEAD_LETTER`); a
/// malformed one is terminated anyway, as it stays in its stream.
async fn give_up(
    durable: &Durable,
    message: &jetstream::Message,
    reason: DeadLetterReason,
    error: &str,
) -> Result<(), async_nats::Error> {
    let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
    match crate::dead_letter::bury(message, durable.name(), reason, error).await {
        Ok(()) => {
            warn!(consumer = durable.name(), sequence, reason = reason.as_str(), %error, "message dead-lettered");
        }
        Err(e) if reason == DeadLetterReason::HandlerFailed => {
            warn!(consumer = durable.name(), sequence, error = %crate::startup::Causes(&*e), "cannot store a dead letter; leaving the message to its last redelivery");
            return message.ack_with(AckKind::Nak(Some(BACKOFF_MAX))).await;
        }
        Err(e) => {
            warn!(consumer = durable.name(), sequence, error = %crate::startup::Causes(&*e), "cannot store a dead letter; terminating the malformed message anyway (it stays in its stream)");
        }
    }
    message.ack_with(AckKind::Term).await
}

/// Logs a failure loudly the first time and then at powers of two, so a
/// long outage does not flood the log.
fn log_failure(attempt: u32, consumer: &str, what: &str, error: &dyn std::fmt::Display) {
    if attempt <= 1 || attempt.is_power_of_two() {
        warn!(consumer, attempt, error = %error, "{what}; retrying with back-off");
    } else {
        debug!(consumer, attempt, error = %error, "{what}; retrying with back-off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK_WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn a_failure_on_the_last_delivery_allowed_says_it_is_dead_lettered() {
        for (delivered, max_deliver, said) in [
            (1, 3, "will redeliver"),
            (2, 3, "will redeliver"),
            (3, 3, "the last delivery allowed; dead-lettering it"),
            (1, 1, "the last delivery allowed; dead-lettering it"),
            (5, 0, "will redeliver"),
        ] {
            let last = is_last_delivery(delivered, max_deliver);
            assert_eq!(after_failure(last), said, "{delivered} of {max_deliver}");
        }
    }

    #[test]
    fn a_recreated_consumer_resumes_after_the_newest_when_nothing_is_owed() {
        let mut p = Progress::default();
        assert_eq!(p.resume_after(), None);
        for seq in [41, 42] {
            p.received(seq);
            p.settled(seq, None);
        }
        assert_eq!(p.resume_after(), Some(42));
    }

    #[test]
    fn a_recreated_consumer_resumes_at_the_oldest_handler_running() {
        let mut p = Progress::default();
        p.received(41);
        p.received(42);
        p.settled(42, None);
        assert_eq!(p.resume_after(), Some(40));
    }

    /// The review's case: 41 failed and waits 3.2 s for its redelivery, 42
    /// is handled; a consumer recreated now must start at 41.
    #[test]
    fn a_recreated_consumer_resumes_at_the_oldest_message_owed_a_redelivery() {
        let now = Instant::now();
        let mut p = Progress::default();
        p.received(41);
        p.received(42);
        p.settled(41, Some(now + Duration::from_millis(3200)));
        p.settled(42, None);
        assert_eq!(p.resume_after(), Some(40));
        // Redelivered and handled: nothing is owed any more.
        p.received(41);
        p.settled(41, None);
        assert_eq!(p.resume_after(), Some(42));
    }

    #[test]
    fn a_redelivery_long_due_when_the_consumer_served_a_pull_is_forgotten() {
        let now = Instant::now();
        let due = now + Duration::from_secs(1);
        let mut p = Progress::default();
        p.received(41);
        p.received(42);
        p.settled(41, Some(due));
        p.settled(42, None);
        // A pull before the redelivery was (well) due proves nothing.
        p.forget_redelivered(due + ACK_WAIT / 2, ACK_WAIT, None);
        assert_eq!(p.resume_after(), Some(40));
        // One well after: the server handed it to some instance, which
        // tracks it now.
        p.forget_redelivered(due + ACK_WAIT, ACK_WAIT, None);
        assert_eq!(p.resume_after(), Some(42));
    }

    /// A pull for one message (one free slot) that got it may have left
    /// other due redeliveries queued on the server: only one is forgotten.
    #[test]
    fn a_full_pull_forgets_no_more_redeliveries_than_it_received() {
        let now = Instant::now();
        let due = now + Duration::from_secs(1);
        let mut p = Progress::default();
        for seq in [43, 45, 52] {
            p.received(seq);
        }
        p.settled(43, Some(due));
        p.settled(45, Some(due));
        // 52 still runs; a pull for the one free slot gets 43 again.
        p.received(43);
        p.forget_redelivered(due + ACK_WAIT, ACK_WAIT, Some(1));
        p.settled(43, None);
        assert_eq!(p.resume_after(), Some(44), "45 is still owed");
        // A pull that ended short: the server had nothing more to give.
        p.forget_redelivered(due + ACK_WAIT, ACK_WAIT, None);
        assert_eq!(p.resume_after(), Some(51), "52 still runs");
    }
}
