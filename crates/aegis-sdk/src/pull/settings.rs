//! The consumer's settings that decide its deliveries (`max_deliver`,
//! `ack_wait`) as the server holds them, read again under a running loop
//! ([`Held`]), and as each message goes by them ([`DeliveryLimits`]).

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::{self, consumer::PullConsumer};
use tokio::time::Instant;
use tracing::{debug, info};

use super::{Durable, is_last_delivery, lock};

/// How old the consumer's settings as last read from the server may be
/// when a handler's failure is decided on them, or while a handler runs
/// (another instance may have lowered `ack_wait` meanwhile): they are read
/// again at most this often, however many handlers fail or run.
pub(super) const SETTINGS_MAX_AGE: Duration = Duration::from_secs(2);
/// How long a read of the consumer's settings may take; past it, the last
/// ones read stand until the next.
const SETTINGS_READ_WAIT: Duration = Duration::from_secs(1);

/// The consumer's settings that decide its deliveries, as the server holds
/// them: `max_deliver` (whether a failure is the last delivery) and
/// `ack_wait` (how often a running handler's message must be said to be in
/// progress). Another instance, or an operator, may change them under a
/// running loop, so they are read again when older than
/// [`SETTINGS_MAX_AGE`] and needed: one read at a time for the whole loop.
pub(super) struct Held {
    settings: Mutex<Settings>,
    reading: tokio::sync::Mutex<()>,
}

/// One reading of [`Held`].
#[derive(Debug, Clone, Copy)]
pub(super) struct Settings {
    pub(super) max_deliver: i64,
    pub(super) ack_wait: Duration,
    pub(super) read_at: Instant,
}

impl Held {
    /// The settings of a consumer just opened (its answer holds them).
    pub(super) fn new(consumer: &PullConsumer) -> Self {
        Self {
            settings: Mutex::new(Settings::of(consumer)),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// The settings of a consumer opened again.
    pub(super) fn reopened(&self, consumer: &PullConsumer) {
        *lock(&self.settings) = Settings::of(consumer);
    }

    /// The settings last read, however old.
    pub(super) fn last(&self) -> Settings {
        *lock(&self.settings)
    }

    /// The settings read at most [`SETTINGS_MAX_AGE`] ago, reading them
    /// now if need be; the last ones read when the server does not answer
    /// within [`SETTINGS_READ_WAIT`].
    pub(super) async fn current(&self, durable: &Durable, consumer: &PullConsumer) -> Settings {
        let fresh = |s: Settings| s.read_at.elapsed() < SETTINGS_MAX_AGE;
        let last = self.last();
        if fresh(last) {
            return last;
        }
        let _reading = self.reading.lock().await;
        let last = self.last();
        if fresh(last) {
            return last;
        }
        let read = tokio::time::timeout(SETTINGS_READ_WAIT, consumer.get_info()).await;
        let mut settings = lock(&self.settings);
        match read {
            Ok(Ok(info)) => {
                let now = Settings::from_config(&info.config);
                if (now.max_deliver, now.ack_wait) != (settings.max_deliver, settings.ack_wait) {
                    info!(consumer = durable.name(), max_deliver = now.max_deliver, ack_wait = ?now.ack_wait, "the consumer's settings changed on the server; going by them");
                }
                *settings = now;
            }
            Ok(Err(e)) => {
                debug!(consumer = durable.name(), error = %crate::startup::Causes(&e), "cannot read the consumer's settings; going by the last read");
                settings.read_at = Instant::now();
            }
            Err(_) => {
                debug!(
                    consumer = durable.name(),
                    "the consumer's settings not read in time; going by the last read"
                );
                settings.read_at = Instant::now();
            }
        }
        *settings
    }
}

/// The consumer's `max_deliver` and `ack_wait` as one delivery of a
/// message goes by them: read through [`Held`] (at most
/// [`SETTINGS_MAX_AGE`] old) the first time they are asked for, then the
/// same for the rest of the delivery. A handler that decides for itself
/// whether a delivery is the last (a command worker answers its sender
/// then, rather than hand the command back) and the loop that acts on its
/// outcome so go by one value: a refresh between the two cannot turn a
/// hand-back into a dead letter nobody was told of.
#[derive(Clone)]
pub(crate) struct DeliveryLimits {
    held: Arc<Held>,
    durable: Arc<Durable>,
    consumer: PullConsumer,
    read: Arc<tokio::sync::OnceCell<Settings>>,
}

impl DeliveryLimits {
    pub(super) fn new(held: Arc<Held>, durable: Arc<Durable>, consumer: PullConsumer) -> Self {
        Self {
            held,
            durable,
            consumer,
            read: Arc::default(),
        }
    }

    async fn settings(&self) -> Settings {
        *self
            .read
            .get_or_init(|| self.held.current(&self.durable, &self.consumer))
            .await
    }

    /// The consumer's `max_deliver` on the server (0 or less: no limit).
    pub(crate) async fn max_deliver(&self) -> i64 {
        self.settings().await.max_deliver
    }

    /// The consumer's `ack_wait` on the server.
    pub(crate) async fn ack_wait(&self) -> Duration {
        self.settings().await.ack_wait
    }

    /// Whether delivery `delivered` is the last the consumer allows.
    pub(crate) async fn is_last(&self, delivered: i64) -> bool {
        is_last_delivery(delivered, self.max_deliver().await)
    }
}

impl Settings {
    fn of(consumer: &PullConsumer) -> Self {
        Self::from_config(&consumer.cached_info().config)
    }

    fn from_config(config: &jetstream::consumer::Config) -> Self {
        Self {
            max_deliver: config.max_deliver,
            ack_wait: config.ack_wait,
            read_at: Instant::now(),
        }
    }

    /// How often a running handler's message is said to be in progress:
    /// every third of `ack_wait`, and at least every [`SETTINGS_MAX_AGE`]
    /// whatever it is. The server may hold a lower `ack_wait` than the one
    /// last read (another instance lowered it), and it redelivers at once a
    /// message whose last in-progress acknowledgement is older than that:
    /// beating this often keeps a running handler through any `ack_wait`
    /// lowered to more than about 2 s. The cost is one small publish per
    /// running handler per 2 s.
    pub(super) fn keep_alive_every(&self) -> Duration {
        (self.ack_wait / 3).clamp(Duration::from_millis(50), SETTINGS_MAX_AGE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pull::MIN_ACK_WAIT;

    const ACK_WAIT: Duration = Duration::from_secs(30);

    #[test]
    fn a_running_handler_is_said_in_progress_at_least_every_settings_read() {
        let every = |ack_wait| {
            Settings {
                max_deliver: 3,
                ack_wait,
                read_at: Instant::now(),
            }
            .keep_alive_every()
        };
        // At 30 s, not every 10 s: another instance may lower it to 3 s.
        assert_eq!(every(ACK_WAIT), SETTINGS_MAX_AGE);
        assert_eq!(every(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(every(MIN_ACK_WAIT), Duration::from_millis(100));
    }
}
