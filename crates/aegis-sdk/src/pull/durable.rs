//! The durable consumer a pull loop reads: created when missing (with its
//! stream), else brought to the settings asked for, keeping its start,
//! which JetStream cannot change in place.

use std::sync::Arc;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, PullConsumer, pull},
    context::ConsumerInfoErrorKind,
    stream::{RetentionPolicy, Stream},
};
use futures::future::BoxFuture;
use tracing::{debug, warn};

/// Finds or creates the stream a consumer lives on.
pub(crate) type EnsureStream =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Stream, async_nats::Error>> + Send + Sync>;

/// The consumer metadata key under which a consumer this SDK made again
/// at a sequence keeps the start it was configured with (`all` or `new`):
/// its own start no longer says whether it began at the oldest message.
const START_METADATA: &str = "aegis_start";

/// Everything the loop needs to know about its consumer.
#[derive(Clone)]
pub(crate) struct Durable {
    /// Finds or creates the stream.
    pub(crate) ensure_stream: EnsureStream,
    /// The consumer's configuration (its `durable_name` is its name).
    pub(crate) config: pull::Config,
    /// Wait for the server to confirm acknowledgements (commands: an
    /// unconfirmed ack may run the command again).
    pub(crate) confirm_acks: bool,
    /// Handlers run at once (1 keeps the stream's order).
    pub(crate) concurrency: usize,
}

/// A setting asked of an existing consumer that JetStream cannot change in
/// place, and that does not hold for it; the open changed nothing.
#[derive(Debug, thiserror::Error)]
#[error("the consumer {consumer} already exists and its {setting} cannot be applied: {detail}")]
pub(crate) struct FixedSetting {
    /// The consumer's name.
    pub(crate) consumer: String,
    /// The option as the caller spells it (`deliver_all`, `max_deliver`).
    pub(crate) setting: &'static str,
    /// Why, and what to do instead.
    pub(crate) detail: String,
}

impl Durable {
    pub(super) fn name(&self) -> &str {
        self.config.durable_name.as_deref().unwrap_or_default()
    }

    /// The stream and the consumer: created when missing, else brought to
    /// this process's settings. `resume_after` is the last stream sequence
    /// handled, used only when the consumer has to be created again.
    ///
    /// An existing consumer keeps its start (`deliver_policy` and its
    /// start sequence or time), which JetStream cannot change in place:
    /// it only chose where a new consumer began, and moving it would need
    /// the consumer deleted and created again, which loses its position
    /// (the redeliveries it owes, and where it is in the stream): that
    /// would replay or skip messages behind the caller's back. Everything
    /// else is updated and then checked.
    ///
    /// # Errors
    /// The client's error when the stream or the consumer cannot be had
    /// or the server refuses the settings; a [`FixedSetting`] when
    /// "from the oldest message" is asked of a consumer that did not
    /// start there (see [`update_of`](Self::update_of)), or the server
    /// kept another `max_deliver` or `ack_wait`.
    pub(crate) async fn open(&self) -> Result<PullConsumer, async_nats::Error> {
        self.open_as(None, false).await
    }

    /// As [`open`](Self::open), for a running loop that lost its consumer:
    /// `resume_after` is the last stream sequence handled, where a consumer
    /// made again resumes, and a start that cannot apply to the consumer
    /// found is not refused (it is logged).
    pub(super) async fn reopen(
        &self,
        resume_after: Option<u64>,
    ) -> Result<PullConsumer, async_nats::Error> {
        self.open_as(resume_after, true).await
    }

    async fn open_as(
        &self,
        resume_after: Option<u64>,
        again: bool,
    ) -> Result<PullConsumer, async_nats::Error> {
        let stream = (self.ensure_stream)().await?;
        let work_queue = stream.cached_info().config.retention == RetentionPolicy::WorkQueue;
        // Twice at most: a consumer another instance creates between the
        // look-up and the create is then found and updated.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let config = match stream.consumer_info(self.name()).await {
                Ok(existing) => self.update_of(&existing.config, again)?,
                Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
                    self.creation(resume_after, work_queue)
                }
                Err(e) => return Err(e.into()),
            };
            match stream.create_consumer(config).await {
                Ok(consumer) => {
                    self.check_applied(&consumer.cached_info().config)?;
                    return Ok(consumer);
                }
                Err(e) if attempt < 2 => {
                    debug!(consumer = self.name(), error = %crate::startup::Causes(&e), "consumer not created or updated; looking it up again");
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The configuration of a consumer created now: after a loss it
    /// resumes after `resume_after`, whatever start it was configured
    /// with (starting at the oldest again would replay what was handled),
    /// except on a work-queue stream, which holds only the messages not
    /// yet acknowledged: there it starts at the oldest of those, so one
    /// another instance still owes is not skipped.
    ///
    /// One made again at a sequence records the start it was configured
    /// with ([`START_METADATA`]), so that a later start still tells one
    /// made to start at the oldest message from one made for new ones.
    fn creation(&self, resume_after: Option<u64>, work_queue: bool) -> pull::Config {
        let mut config = self.config.clone();
        if let (Some(seq), false) = (resume_after, work_queue) {
            let configured = match self.config.deliver_policy {
                DeliverPolicy::All => "all",
                _ => "new",
            };
            config
                .metadata
                .insert(START_METADATA.to_owned(), configured.to_owned());
            config.deliver_policy = DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            };
        }
        config
    }

    /// The update of the consumer `existing`: this process's settings with
    /// the consumer's own start (and the metadata that says where it was
    /// configured to start).
    ///
    /// "From the oldest message" asked of a consumer made to start at new
    /// messages, or made again at a sequence for a subscription that did,
    /// would replay nothing: refused with a [`FixedSetting`], unless the
    /// loop opens it `again` (the consumer was made so under it by another
    /// instance); that is logged, and it goes on from the consumer's
    /// position. A consumer at a sequence with no record of the start it
    /// was made for (an earlier SDK's, or one an older instance updated)
    /// is taken with a warning: it may be the subscription's own.
    fn update_of(
        &self,
        existing: &jetstream::consumer::Config,
        again: bool,
    ) -> Result<pull::Config, FixedSetting> {
        let mut config = self.config.clone();
        config.deliver_policy = existing.deliver_policy;
        // The server keeps its own `_nats.` entries itself.
        config.metadata = existing
            .metadata
            .iter()
            .filter(|(k, _)| !k.starts_with("_nats."))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if self.config.deliver_policy != DeliverPolicy::All
            || existing.deliver_policy == DeliverPolicy::All
        {
            return Ok(config);
        }
        let made = match (
            existing.deliver_policy,
            existing.metadata.get(START_METADATA).map(String::as_str),
        ) {
            (_, Some("all")) => return Ok(config),
            (DeliverPolicy::New, _) => "created to start at new messages",
            (_, Some("new")) => {
                "made again at a position in the stream for a subscription that started at new messages"
            }
            // No record of the start it was configured with: made again at
            // a position by an earlier SDK (which kept none), its record
            // wiped by an older instance's update, or made by hand. It may
            // well be this subscription's own; refusing it would keep the
            // service from starting on it. Taken, and said.
            _ => {
                warn!(
                    consumer = self.name(),
                    start = ?existing.deliver_policy,
                    "the consumer starts at a position in the stream and has no record of the start it was made for (an earlier SDK made it again so, or an older instance's update dropped the record); going on from its position: deliver_all applies only to a consumer this instance makes"
                );
                return Ok(config);
            }
        };
        if again {
            warn!(
                consumer = self.name(),
                start = ?existing.deliver_policy,
                "the consumer was made again by another instance, {made}; going on from its position: deliver_all applies only to a consumer this instance makes"
            );
            return Ok(config);
        }
        Err(FixedSetting {
            consumer: self.name().to_owned(),
            setting: "deliver_all",
            detail: format!(
                "it was {made} and has its position since; JetStream cannot move its start, \
                so nothing stored before it began would be replayed. Drop .deliver_all() to \
                go on from its position, or, to start from the oldest stored message, use a \
                new durable name (another service name, or in broadcast mode another \
                instance id), or delete the consumer first (which loses its position and the \
                redeliveries it owes)"
            ),
        })
    }

    /// Checks that the server holds the settings asked for.
    fn check_applied(&self, held: &jetstream::consumer::Config) -> Result<(), FixedSetting> {
        let differs =
            |setting, asked: &dyn std::fmt::Debug, held: &dyn std::fmt::Debug| FixedSetting {
                consumer: self.name().to_owned(),
                setting,
                detail: format!("{setting} {asked:?} was asked for and the server kept {held:?}"),
            };
        if held.max_deliver != self.config.max_deliver {
            return Err(differs(
                "max_deliver",
                &self.config.max_deliver,
                &held.max_deliver,
            ));
        }
        if held.ack_wait != self.config.ack_wait {
            return Err(differs("ack_wait", &self.config.ack_wait, &held.ack_wait));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A durable `c` whose consumer is made to start at `start`.
    fn durable(start: DeliverPolicy) -> Durable {
        Durable {
            ensure_stream: Arc::new(|| Box::pin(async { Err("not used".into()) })),
            config: pull::Config {
                durable_name: Some("c".to_owned()),
                deliver_policy: start,
                ..Default::default()
            },
            confirm_acks: false,
            concurrency: 1,
        }
    }

    /// The review's probe E4: a consumer made to start at the oldest
    /// message and deleted under a running loop resumes where it was, as
    /// one made to start at new messages does; on a work-queue stream
    /// (which holds only what is not acknowledged) it starts at the oldest.
    #[test]
    fn a_consumer_made_again_resumes_where_it_was_whatever_its_start() {
        for start in [DeliverPolicy::All, DeliverPolicy::New] {
            let durable = durable(start);
            let resumed = DeliverPolicy::ByStartSequence { start_sequence: 42 };
            assert_eq!(durable.creation(Some(41), false).deliver_policy, resumed);
            assert_eq!(durable.creation(None, false).deliver_policy, start);
            assert_eq!(durable.creation(Some(41), true).deliver_policy, start);
        }
    }

    /// The review's D6: "from the oldest message" holds for a consumer
    /// made to start there, and for one made again at a sequence for such
    /// a subscription, not for one made for new messages, whichever way.
    #[test]
    fn deliver_all_applies_only_to_a_consumer_that_began_at_the_oldest() {
        let (all, new) = (durable(DeliverPolicy::All), durable(DeliverPolicy::New));
        let remade = |by: &Durable| {
            let made = by.creation(Some(41), false);
            jetstream::consumer::Config {
                deliver_policy: made.deliver_policy,
                metadata: made.metadata,
                ..Default::default()
            }
        };
        let made_new = jetstream::consumer::Config {
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        };
        // Refused at a start, whether the SDK made it again or not.
        for existing in [&made_new, &remade(&new)] {
            let refused = all.update_of(existing, false).unwrap_err();
            assert_eq!(refused.setting, "deliver_all");
            // A running loop opening it again goes on from its position.
            let joined = all.update_of(existing, true).unwrap();
            assert_eq!(joined.deliver_policy, existing.deliver_policy);
        }
        // Its own consumer, made again: it keeps the start and the record
        // of it, and drops the server's own entries.
        let mut existing = remade(&all);
        existing
            .metadata
            .insert("_nats.level".to_owned(), "1".to_owned());
        let update = all.update_of(&existing, false).unwrap();
        assert_eq!(update.deliver_policy, existing.deliver_policy);
        assert_eq!(
            update.metadata.get(START_METADATA).map(String::as_str),
            Some("all")
        );
        assert!(!update.metadata.contains_key("_nats.level"));
        // Without .deliver_all() any start is kept.
        assert!(new.update_of(&remade(&all), false).is_ok());
        // At a sequence with no record (an earlier SDK made it again):
        // taken, at its position.
        let unrecorded = jetstream::consumer::Config {
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 2 },
            ..Default::default()
        };
        let taken = all.update_of(&unrecorded, false).unwrap();
        assert_eq!(taken.deliver_policy, unrecorded.deliver_policy);
    }
}
