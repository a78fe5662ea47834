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
//!   stream restore or with its stream is recreated.
//! - Any failed pull (consumer deleted, no responders, stream gone, a refused
//!   request) is followed by a back-off (100 ms doubling to 5 s) before the
//!   next attempt, and so is a pull that ends empty right away: a consumer
//!   that cannot be had is retried, never spun on.
//! - A consumer recreated after this process handled messages resumes after
//!   the last stream sequence it handled (when it was configured to start at
//!   new messages), so messages stored while it was missing are not skipped.
//!   Redelivering a few already handled is the price of at-least-once.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind,
    consumer::{DeliverPolicy, PullConsumer, pull},
    stream::Stream,
};
use futures::{StreamExt, future::BoxFuture};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// First and longest pause after a failed pull or consumer lookup.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How long one pull request waits on the server for messages. Idle
/// consumers re-pull this often; it also bounds how long a pull lost by the
/// server (a stream leader change) goes unnoticed.
const PULL_EXPIRES: Duration = Duration::from_secs(10);
/// A pull that ends with nothing sooner than this was refused, not expired.
const MIN_PULL_LIFETIME: Duration = Duration::from_millis(200);

/// What to do with a message after its handler ran.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Handled: acknowledge it.
    Done,
    /// Failed for now: deliver it again after `delay`.
    Retry {
        /// Pause before the next delivery.
        delay: Duration,
    },
    /// Can never be handled (malformed): stop redelivering it.
    Poison,
}

/// A handler of one message; it must not acknowledge the message itself.
pub(crate) type Handler =
    Arc<dyn Fn(Arc<jetstream::Message>) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Finds or creates the stream a consumer lives on.
pub(crate) type EnsureStream =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Stream, async_nats::Error>> + Send + Sync>;

/// Everything the loop needs to know about its consumer.
pub(crate) struct Durable {
    /// Finds or creates the stream.
    pub(crate) ensure_stream: EnsureStream,
    /// The consumer's configuration (its `durable_name` is its name).
    pub(crate) config: pull::Config,
    /// Wait for the server to confirm acknowledgements (commands: an
    /// unconfirmed ack may run the command again).
    pub(crate) confirm_acks: bool,
}

impl Durable {
    fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// The stream and the consumer, created when missing. `resume_after` is
    /// the last stream sequence handled, used only when the consumer has to
    /// be created again.
    pub(crate) async fn open(
        &self,
        resume_after: Option<u64>,
    ) -> Result<PullConsumer, async_nats::Error> {
        let stream = (self.ensure_stream)().await?;
        let mut config = self.config.clone();
        if let (Some(seq), DeliverPolicy::New) = (resume_after, &config.deliver_policy) {
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            };
        }
        Ok(stream.get_or_create_consumer(self.name(), config).await?)
    }
}

/// Pulls and handles messages until `cancel` fires, starting with
/// `consumer` (already opened by the caller, so configuration errors
/// surface at start).
pub(crate) async fn run(
    durable: Durable,
    mut consumer: PullConsumer,
    handler: Handler,
    cancel: CancellationToken,
) {
    let mut failures = 0u32;
    let mut last_handled: Option<u64> = None;
    let mut healthy = true;
    loop {
        if !healthy {
            failures = (failures + 1).min(16);
            let delay = BACKOFF_INITIAL
                .saturating_mul(1 << failures.min(6))
                .min(BACKOFF_MAX);
            tokio::select! {
                () = cancel.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
            match durable.open(last_handled).await {
                Ok(c) => {
                    info!(consumer = durable.name(), "consumer open again");
                    consumer = c;
                }
                Err(e) => {
                    log_failure(failures, durable.name(), "cannot open the consumer", &e);
                    continue;
                }
            }
        }
        let pulled = Instant::now();
        let batch = tokio::select! {
            () = cancel.cancelled() => break,
            batch = consumer.batch().max_messages(1).expires(PULL_EXPIRES).messages() => batch,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                log_failure(failures + 1, durable.name(), "cannot pull", &e);
                healthy = false;
                continue;
            }
        };
        let mut received = 0usize;
        healthy = loop {
            let next = tokio::select! {
                biased;
                () = cancel.cancelled() => return,
                next = batch.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    received += 1;
                    failures = 0;
                    let sequence = message.info().ok().map(|i| i.stream_sequence);
                    handle(&durable, Arc::new(message), &handler).await;
                    if sequence > last_handled {
                        last_handled = sequence;
                    }
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
    }
    debug!(consumer = durable.name(), "pull loop stopped");
}

/// Runs the handler on one message and acknowledges as it says.
async fn handle(durable: &Durable, message: Arc<jetstream::Message>, handler: &Handler) {
    let outcome = handler(message.clone()).await;
    let ack = match outcome {
        Outcome::Done if durable.confirm_acks => message.double_ack().await,
        Outcome::Done => message.ack().await,
        Outcome::Retry { delay } => message.ack_with(AckKind::Nak(Some(delay))).await,
        Outcome::Poison => message.ack_with(AckKind::Term).await,
    };
    if let Err(e) = ack {
        warn!(consumer = durable.name(), error = %e, "acknowledgement not confirmed; the message may be delivered again");
    }
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
