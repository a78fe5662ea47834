//! Events: facts published to `events.{domain}.{action}` on the JetStream
//! stream `EVENTS`, processed at least once.
//!
//! - [`publish`]: [`Events::publish`] stores an event with a dedup id
//!   (`Nats-Msg-Id`), so a retried publish is stored once.
//! - [`subscribe`]: [`Events::subscribe`] consumes a pattern through a durable
//!   consumer, in [`DeliveryMode::Compete`] (one instance of the service gets
//!   each event) or [`DeliveryMode::Broadcast`] (every instance gets each).
//!   An event is acknowledged only after its handler succeeds; a failed
//!   handler gets it again after a back-off, up to `max_deliver` times,
//!   then it is copied to `DEAD_LETTER` ([`crate::dead_letter`]).
//!   Subscriptions pull only as many events as they have free handlers
//!   ([`SubscriptionBuilder::concurrency`]) and keep a running handler's
//!   ack deadline from passing. Handler errors never stop the
//!   subscription, and neither does its consumer vanishing: the pull loop
//!   (shared with commands) recreates it with back-off, resuming after the
//!   last event handled.

pub mod publish;
pub mod subscribe;

use std::time::Duration;

use aegis_contracts::{names::NameError, subjects};
use async_nats::jetstream::{self, stream};

pub use publish::Published;
pub use subscribe::{
    DEFAULT_ACK_WAIT, DEFAULT_MAX_DELIVER, DeliveryMode, Event, EventSubscription,
    SubscriptionBuilder,
};

use crate::{AegisConfig, Connection, streams::bounded};

/// Window within which a repeated dedup id is dropped by the server.
pub const EVENTS_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// Event publishing and subscriptions. Get one from [`Connection::events`].
#[derive(Debug, Clone)]
pub struct Events {
    pub(crate) conn: Connection,
}

/// Why an event operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// A domain, action, pattern or consumer name is invalid; nothing was sent.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The dedup id given to [`Events::publish_with_id`] cannot work: it is
    /// empty (the server deduplicates no empty id, so a retry would be
    /// stored twice), starts with a space (the server drops it, and would
    /// take `" x"` for `"x"`) or holds a carriage return or line feed (a
    /// header value cannot). Any other non-empty text will do; nothing
    /// was sent.
    #[error(
        "invalid event id {id:?}: a dedup id {}",
        crate::streams::DEDUP_ID_RULE
    )]
    InvalidId {
        /// The id given.
        id: String,
    },
    /// The payload could not be encoded.
    #[error("cannot encode the event payload")]
    Encode(#[source] serde_json::Error),
    /// The `EVENTS` stream could not be created or found.
    #[error("cannot create or find the EVENTS stream")]
    Stream(#[source] async_nats::Error),
    /// The server did not confirm storing the event; it may or may not be
    /// stored. Publish it again with
    /// [`Events::publish_with_id`] and this `id` within
    /// [`EVENTS_DUPLICATE_WINDOW`] of the first attempt: the server stores
    /// it at most once (unless a message on another subject had taken the
    /// id: see [`Events::publish_with_id`]).
    #[error("the event {id} on {subject} was not confirmed by JetStream")]
    Publish {
        /// The subject published to.
        subject: String,
        /// The dedup id (`Nats-Msg-Id`) the event was sent with.
        id: String,
        /// The client's error; wrapped in
        /// [`NoStreamTookIt`](crate::streams::NoStreamTookIt) when nobody took
        /// the write (a stream without a leader, or none).
        #[source]
        source: async_nats::Error,
    },
    /// The server refused this NATS user publishing to `subject` (a
    /// service's user publishes only in its own event domains): nothing
    /// was stored, and publishing again cannot help until the user is
    /// granted it.
    #[error(
        "NATS refused this user publishing to {subject} ({violation}); nothing was stored: \
         grant the user that permission, or publish in a domain it may"
    )]
    Refused {
        /// The subject published to.
        subject: String,
        /// The server's text, e.g. `Permissions Violation for Publish to "..."`.
        violation: String,
    },
    /// [`SubscriptionBuilder::start`] was called before
    /// [`SubscriptionBuilder::handler`]; nothing was started.
    #[error("the event subscription has no handler: set one with .handler(...) before .start()")]
    NoHandler,
    /// Concurrency, `max_deliver` or `ack_wait` cannot work; nothing was
    /// started.
    #[error("invalid subscription options: {0}")]
    InvalidOptions(String),
    /// The durable consumer exists and cannot take a setting asked for
    /// (JetStream cannot change it in place, or kept another value);
    /// nothing was started and the consumer was not changed. `detail`
    /// says what to do instead, e.g. use a new durable name; see
    /// [`SubscriptionBuilder::deliver_all`].
    #[error("the consumer {name} already exists and its {setting} cannot be applied: {detail}")]
    ConsumerSetting {
        /// The consumer name.
        name: String,
        /// The option as the builder spells it (`deliver_all`,
        /// `max_deliver`, `ack_wait`).
        setting: &'static str,
        /// Why, and what to do instead.
        detail: String,
    },
    /// The durable consumer could not be created, or the server refused
    /// the settings asked of it.
    #[error("cannot create the consumer {name}")]
    Consumer {
        /// The consumer name.
        name: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
}

impl Events {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Creates the `EVENTS` stream if it does not exist (subjects `events.>`,
    /// file storage, 2-minute dedup window, the connection's replicas, the
    /// limits of [`StreamsConfig::events`](crate::StreamsConfig::events);
    /// the oldest events go first). An existing stream keeps its settings
    /// (see [`crate::streams`]).
    ///
    /// # Errors
    /// [`EventError::Stream`] when JetStream refuses.
    pub async fn ensure_stream(&self) -> Result<jetstream::stream::Stream, EventError> {
        ensure_events_stream(self.conn.jetstream(), self.conn.config()).await
    }
}

/// Creates the `EVENTS` stream when missing; see [`Events::ensure_stream`].
///
/// # Errors
/// [`EventError::Stream`] when JetStream refuses.
pub async fn ensure_events_stream(
    js: &jetstream::Context,
    config: &AegisConfig,
) -> Result<jetstream::stream::Stream, EventError> {
    let stream = stream::Config {
        name: subjects::EVENTS_STREAM.to_owned(),
        subjects: vec![subjects::EVENTS_SUBJECTS.to_owned()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        duplicate_window: EVENTS_DUPLICATE_WINDOW,
        num_replicas: config.nats.replicas,
        discard: stream::DiscardPolicy::Old,
        description: Some("Aegis domain events (events.{domain}.{action})".to_owned()),
        ..Default::default()
    };
    crate::streams::ensure_stream(js, bounded(stream, &config.streams.events))
        .await
        .map_err(EventError::Stream)
}
