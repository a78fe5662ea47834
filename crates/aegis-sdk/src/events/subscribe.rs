//! Subscribing to events through durable JetStream consumers.
//!
//! Compete mode shares one durable consumer per (service, pattern), so the
//! instances of a service split the events between them. Broadcast mode gives
//! each instance its own durable consumer (removed by the server after it has
//! been unused for [`BROADCAST_INACTIVE_THRESHOLD`]), so every instance sees
//! every event.

use std::{
    error::Error as StdError, fmt, future::Future, marker::PhantomData, panic::AssertUnwindSafe,
    sync::Arc, time::Duration,
};

use aegis_contracts::{
    events::{EventPattern, EventSubject},
    names, subjects,
};
use async_nats::jetstream::consumer::{self, pull as js_pull};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use serde::de::DeserializeOwned;
use tracing::{Instrument, info, info_span, warn};

use super::{EventError, Events, ensure_events_stream};
use crate::{
    connection::refusals::Refusing,
    pull::{self, Durable, Outcome},
    task::Background,
};

/// Deliveries of one event before it is dead-lettered, by default: with the
/// growing pause between them (0.1 s doubling to 10 s), about half a
/// minute of retries.
pub const DEFAULT_MAX_DELIVER: u32 = 10;
/// Default ack deadline.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

/// How long an unused broadcast consumer survives on the server.
pub const BROADCAST_INACTIVE_THRESHOLD: Duration = Duration::from_secs(300);

/// Who gets an event among the instances of a service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryMode {
    /// One instance of the service handles each event (work sharing).
    Compete,
    /// Every instance handles each event (cache updates, projections).
    Broadcast,
}

/// An event delivered to a handler.
#[derive(Debug, Clone)]
pub struct Event<T> {
    /// Domain and action it was published under.
    pub subject: EventSubject,
    /// Its dedup id (`Nats-Msg-Id`): the SDK's publishers always set one
    /// (a fresh one per `publish`, the caller's with `publish_with_id`);
    /// `None` for a message another client published without one.
    pub id: Option<String>,
    /// Sequence number in the `EVENTS` stream.
    pub sequence: u64,
    /// Delivery attempt, 1 for the first.
    pub delivered: u64,
    /// When JetStream stored it.
    pub published: DateTime<Utc>,
    /// The decoded payload.
    pub payload: T,
}

/// The error a handler returns to have the event delivered again later.
///
/// Any error type that is `Error + Send + Sync + 'static` converts into it
/// with `?` or `.into()`, `anyhow::Error` too: `work().await?` inside the
/// handler works as is; return `Err(anyhow::anyhow!("db down").into())`
/// rather than `Err(anyhow::anyhow!(...))`, and end a handler whose body
/// is an `anyhow::Result<()>` with `.map_err(Into::into)` (see
/// [`SubscriptionBuilder::handler`]). The handler's error type is fixed
/// rather than generic so that `async { Ok(()) }` needs no annotation.
pub type HandlerError = Box<dyn StdError + Send + Sync>;

type BoxedHandler<T> = Arc<
    dyn Fn(Event<T>) -> futures::future::BoxFuture<'static, Result<(), HandlerError>> + Send + Sync,
>;

/// Configures a subscription; finish with [`handler`](Self::handler) and
/// [`start`](Self::start).
///
/// The options apply to the durable consumer on every `start`, also when
/// it already exists: a changed [`max_deliver`](Self::max_deliver) or
/// [`ack_wait`](Self::ack_wait) takes effect, and one the server does not
/// take fails the start ([`EventError::ConsumerSetting`]).
#[must_use = "a subscription builder subscribes to nothing until .handler(...).start().await"]
pub struct SubscriptionBuilder<T> {
    events: Events,
    service: String,
    instance: Option<String>,
    pattern: String,
    mode: DeliveryMode,
    ack_wait: Duration,
    max_deliver: u32,
    concurrency: usize,
    deliver_all: bool,
    handler: Option<BoxedHandler<T>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> fmt::Debug for SubscriptionBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionBuilder")
            .field("service", &self.service)
            .field("pattern", &self.pattern)
            .field("mode", &self.mode)
            .finish()
    }
}

impl Events {
    /// Subscribes `service` to events matching `pattern` (`order.created`,
    /// `order.*`, `*.filled`, `order.>`; the `events.` prefix is optional).
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::events::EventError> {
    /// use aegis_sdk::events::{DeliveryMode, Event};
    ///
    /// let sub = conn
    ///     .events()
    ///     .subscribe::<serde_json::Value>("risk-service", "order.filled", DeliveryMode::Compete)
    ///     .handler(|event: Event<serde_json::Value>| async move {
    ///         println!("filled: {}", event.payload);
    ///         Ok(())
    ///     })
    ///     .start()
    ///     .await?;
    /// sub.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn subscribe<T>(
        &self,
        service: &str,
        pattern: &str,
        mode: DeliveryMode,
    ) -> SubscriptionBuilder<T> {
        SubscriptionBuilder {
            events: self.clone(),
            service: service.to_owned(),
            instance: None,
            pattern: pattern.to_owned(),
            mode,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: DEFAULT_MAX_DELIVER,
            concurrency: 1,
            deliver_all: false,
            handler: None,
            _t: PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send + 'static> SubscriptionBuilder<T> {
    /// The instance id, which names this instance's own durable consumer
    /// in [`DeliveryMode::Broadcast`] (`{service}_{instance}_{pattern}`);
    /// [`DeliveryMode::Compete`] checks it and does not use it. Same rules
    /// as a service's instance id (`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`);
    /// usually the same value as the service's.
    ///
    /// Optional. Default: a fresh [`default_instance_id`](crate::default_instance_id)
    /// (host name plus a random suffix) at each `start`. In broadcast mode
    /// that means a new consumer on every restart: it sees only events
    /// published after it started (unless
    /// [`deliver_all`](Self::deliver_all)), events published while the
    /// process was down are not delivered to it, and the previous run's
    /// consumer stays on the server until unused for
    /// [`BROADCAST_INACTIVE_THRESHOLD`]. Set a stable id (in Kubernetes the
    /// pod name of a StatefulSet, or any id that survives the restart) to
    /// resume after the last event handled when back within that time.
    /// Two running instances with the same id share one broadcast consumer
    /// and split its events.
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance = Some(id.into());
        self
    }

    /// How long the server waits for an acknowledgement before it offers
    /// an event again (default 30 s, from 300 ms to 30 days). A running handler
    /// keeps extending it, so this bounds how long a crashed instance holds
    /// an event, not how long a handler may take. It extends it by the
    /// consumer's value on the server, which another instance's start may
    /// have changed (looked up at most every 2 s while a handler runs).
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Deliveries of one event before it is given up on and copied to
    /// `DEAD_LETTER` (default [`DEFAULT_MAX_DELIVER`]; at least 1). A new
    /// value replaces the existing consumer's on `start`, for the events
    /// it holds too. Whether a failure was the last delivery is decided by
    /// the consumer's value on the server, looked up at most every 2 s.
    pub fn max_deliver(mut self, n: u32) -> Self {
        self.max_deliver = n;
        self
    }

    /// Handlers run at once (default 1, which keeps the stream's order; at
    /// most 1024). The subscription pulls only as many events as it has
    /// free handlers.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n;
        self
    }

    /// When the durable consumer is first created, start from the oldest
    /// stored event instead of new ones only.
    ///
    /// Where a consumer starts is fixed when it is created (JetStream
    /// cannot change it in place): an existing consumer goes on from its
    /// position, with or without this option. Added for a consumer that
    /// was created to start at new events (or made again at its position
    /// after it was lost, for subscriptions without this option), it
    /// cannot replay anything, and [`start`](Self::start) fails with
    /// [`EventError::ConsumerSetting`] instead of starting without it. A
    /// running subscription whose consumer is deleted and made so by
    /// another instance (a version without this option) takes it as it is,
    /// with a warning, and goes on from its position. To replay what is stored, use a
    /// new durable name (another service name, or in
    /// [`DeliveryMode::Broadcast`] another [`instance_id`](Self::instance_id))
    /// or delete the consumer first (`aegis consumers rm EVENTS <name>`,
    /// or `nats consumer rm EVENTS <name>`),
    /// which loses its position and the redeliveries it owes. The SDK
    /// never deletes it for you: a consumer shared by running instances
    /// would replay or skip events under them. A consumer deleted under
    /// a running subscription is made again where it was, not from the
    /// oldest event (see [`crate::events`]).
    pub fn deliver_all(mut self) -> Self {
        self.deliver_all = true;
        self
    }

    /// The handler: `Ok(())` acknowledges; `Err(_)` (or a panic) has the
    /// event delivered again after a back-off. Its error is a
    /// [`HandlerError`]; an `anyhow::Error` (or any other error type)
    /// converts with `?` or `.into()`:
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::events::EventError> {
    /// use aegis_sdk::events::{DeliveryMode, Event};
    /// use serde_json::Value;
    ///
    /// async fn store(event: &Event<Value>) -> anyhow::Result<()> {
    ///     anyhow::ensure!(event.payload.is_object(), "not an object");
    ///     Ok(())
    /// }
    ///
    /// let sub = conn
    ///     .events()
    ///     .subscribe::<Value>("risk-service", "order.*", DeliveryMode::Compete)
    ///     .handler(|event: Event<Value>| async move {
    ///         store(&event).await?; // anyhow::Error converts with `?`
    ///         if event.delivered > 5 {
    ///             return Err(anyhow::anyhow!("gave up on {}", event.subject).into());
    ///         }
    ///         Ok(())
    ///     })
    ///     .start()
    ///     .await?;
    /// // Or a handler whose body is an anyhow::Result<()>:
    /// let sub2 = conn
    ///     .events()
    ///     .subscribe::<Value>("audit-service", "order.*", DeliveryMode::Compete)
    ///     .handler(|event: Event<Value>| async move { store(&event).await.map_err(Into::into) })
    ///     .start()
    ///     .await?;
    /// # sub.shutdown().await; sub2.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub fn handler<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Event<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        self.handler = Some(Arc::new(move |e| f(e).boxed()));
        self
    }

    /// Creates the stream and durable consumer if needed and starts consuming.
    ///
    /// # Errors
    /// Before any I/O: [`EventError::InvalidName`] for an invalid service
    /// name, pattern or instance id, [`EventError::NoHandler`] without a
    /// [`handler`](Self::handler), [`EventError::InvalidOptions`] for
    /// options that cannot work. Then [`EventError::Consumer`] when
    /// JetStream refuses the stream, the consumer or its settings, and
    /// [`EventError::ConsumerSetting`] when the existing consumer cannot
    /// take one of them (see [`deliver_all`](Self::deliver_all)).
    pub async fn start(self) -> Result<EventSubscription, EventError> {
        names::validate_service_name(&self.service)?;
        let pattern = EventPattern::parse(&self.pattern)?;
        let instance = self.instance.unwrap_or_else(crate::default_instance_id);
        names::validate_instance_id(&instance)?;
        let handler = self.handler.ok_or(EventError::NoHandler)?;
        pull::check_options(self.concurrency, self.max_deliver, self.ack_wait)
            .map_err(EventError::InvalidOptions)?;
        let name = match self.mode {
            DeliveryMode::Compete => format!("{}_{}", self.service, pattern.durable_suffix()),
            DeliveryMode::Broadcast => {
                format!("{}_{}_{}", self.service, instance, pattern.durable_suffix())
            }
        };
        let mode = match self.mode {
            DeliveryMode::Compete => "compete",
            DeliveryMode::Broadcast => "broadcast",
        };
        let config = js_pull::Config {
            durable_name: Some(name.clone()),
            description: Some(format!(
                "Aegis events of {} matching {pattern} ({mode})",
                self.service
            )),
            filter_subject: subjects::event_filter(&pattern),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: i64::from(self.max_deliver),
            deliver_policy: if self.deliver_all {
                consumer::DeliverPolicy::All
            } else {
                consumer::DeliverPolicy::New
            },
            inactive_threshold: match self.mode {
                DeliveryMode::Compete => Duration::ZERO,
                DeliveryMode::Broadcast => BROADCAST_INACTIVE_THRESHOLD,
            },
            num_replicas: 0,
            ..Default::default()
        };
        let js = self.events.conn.jetstream().clone();
        let aegis = self.events.conn.config().clone();
        let durable = Durable {
            ensure_stream: Arc::new(move || {
                let (js, aegis) = (js.clone(), aegis.clone());
                async move {
                    pull::ensure_dead_letters(&js, &aegis).await;
                    ensure_events_stream(&js, &aegis)
                        .await
                        .map_err(async_nats::Error::from)
                }
                .boxed()
            }),
            config,
            confirm_acks: false,
            concurrency: self.concurrency,
        };
        // The server drops a consumer create it refuses this user and
        // answers nothing: the refusal, once heard, ends the wait.
        let opened = self
            .events
            .conn
            .refusals()
            .unless_refused(
                Refusing::Publish,
                |s| names_consumer(s, subjects::EVENTS_STREAM, &name),
                durable.open(),
            )
            .await
            .unwrap_or_else(|refused| Err(refused.into()));
        let consumer = opened.map_err(|source| match source.downcast::<pull::FixedSetting>() {
            Ok(fixed) => EventError::ConsumerSetting {
                name: fixed.consumer,
                setting: fixed.setting,
                detail: fixed.detail,
            },
            Err(source) => EventError::Consumer {
                name: name.clone(),
                source,
            },
        })?;
        let process: pull::Handler =
            // An event's handler leaves the last delivery to the loop.
            Arc::new(move |message, _| process(message, handler.clone()).boxed());
        let tasks = Background::new();
        let span = info_span!("events", service = %self.service, consumer = %name);
        // Its lines (the loop's and the handler's) are its service's.
        let (service, owner_instance) = (self.service.clone(), instance);
        tasks.spawn(|cancel| {
            crate::telemetry::log_layer::owned_by_name(
                &service,
                Some(&owner_instance),
                pull::run(durable, consumer, process, cancel).instrument(span),
            )
        });
        info!(service = %self.service, consumer = %name, pattern = %pattern, mode = ?self.mode, "subscribed to events");
        if let Some(domains) = unmatched(self.events.conn.jetstream(), &pattern).await {
            let held = if domains.is_empty() {
                "it holds no event yet".to_owned()
            } else {
                format!("the domains it holds: {}", domains.join(", "))
            };
            let text = format!(
                "no event in the {stream} stream matches the pattern {pattern} ({held}): check \
                 its spelling; the subscription waits for such events all the same, and its \
                 durable consumer stays until deleted (`aegis consumers rm {stream} {name}`, \
                 `nats consumer rm {stream} {name}`, or \
                 JetStream's `$JS.API.CONSUMER.DELETE.{stream}.{name}`)",
                stream = subjects::EVENTS_STREAM
            );
            // A domain the stream has never held, when it holds others, is
            // most likely a slip; otherwise the events may not have come yet.
            let domain = pattern.as_str().split('.').next().unwrap_or_default();
            if !domains.is_empty() && domain != "*" && !domains.iter().any(|d| d == domain) {
                warn!(service = %self.service, consumer = %name, "{text}");
            } else {
                info!(service = %self.service, consumer = %name, "{text}");
            }
        }
        Ok(EventSubscription {
            name,
            tasks,
            stopping: false,
        })
    }
}

/// How long looking up whether a pattern matches a stored event may take
/// (it holds up the subscription's start).
const MATCH_LOOKUP_LIMIT: Duration = Duration::from_secs(1);

/// When the `EVENTS` stream holds no event on a subject `pattern`
/// matches: the event domains it does hold, sorted (a hint that the
/// pattern may be misspelt). `None` when one matches, for `>` (which
/// matches anything), or when the stream cannot say within
/// [`MATCH_LOOKUP_LIMIT`]. One stream info request with a subjects filter,
/// and one more, for the domains, only when nothing matches.
async fn unmatched(
    js: &async_nats::jetstream::Context,
    pattern: &EventPattern,
) -> Option<Vec<String>> {
    use futures::TryStreamExt;
    if pattern.as_str() == ">" {
        return None;
    }
    let lookup = async {
        let stream = js.get_stream_no_info(subjects::EVENTS_STREAM).await.ok()?;
        let mut matching = stream
            .info_with_subjects(subjects::event_filter(pattern))
            .await
            .ok()?;
        if matching.try_next().await.ok()?.is_some() {
            return None;
        }
        let mut all = stream.info_with_subjects("events.>").await.ok()?;
        let mut domains = Vec::new();
        while let Some((subject, _)) = all.try_next().await.ok()? {
            if let Some(domain) = subject.split('.').nth(1) {
                domains.push(domain.to_owned());
            }
        }
        domains.sort();
        domains.dedup();
        Some(domains)
    };
    tokio::time::timeout(MATCH_LOOKUP_LIMIT, lookup)
        .await
        .ok()
        .flatten()
}

/// Delay before a failed event is offered again: grows with attempts, max 10 s.
fn redelivery_delay(delivered: u64) -> Duration {
    let shift = delivered.saturating_sub(1).min(7) as u32;
    Duration::from_millis(100u64 << shift).min(Duration::from_secs(10))
}

/// Decodes one event and runs the handler on it. A failure is logged by
/// the pull loop, which knows whether the server will deliver it again.
async fn process<T: DeserializeOwned>(
    msg: Arc<async_nats::jetstream::Message>,
    handler: BoxedHandler<T>,
) -> Outcome {
    let (sequence, delivered, published) = match msg.info() {
        Ok(i) => (
            i.stream_sequence,
            u64::try_from(i.delivered).unwrap_or(1),
            DateTime::<Utc>::from_timestamp(i.published.unix_timestamp(), i.published.nanosecond())
                .unwrap_or_else(Utc::now),
        ),
        Err(_) => (0, 1, Utc::now()),
    };
    let subject = match EventSubject::parse(&msg.subject) {
        Ok(s) => s,
        Err(e) => {
            warn!(subject = %msg.subject, error = %crate::startup::Causes(&e), "event on a malformed subject; not redelivering it");
            return Outcome::Poison {
                error: format!("malformed event subject: {e}"),
            };
        }
    };
    let payload: T = match serde_json::from_slice(&msg.payload) {
        Ok(p) => p,
        Err(e) => {
            warn!(subject = %msg.subject, sequence, error = %crate::startup::Causes(&e), "event payload does not decode; not redelivering it (it stays in the stream)");
            return Outcome::Poison {
                error: format!("the payload does not decode: {e}"),
            };
        }
    };
    let id = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map(|v| v.as_str().to_owned());
    let event = Event {
        subject,
        id,
        sequence,
        delivered,
        published,
        payload,
    };
    let span = info_span!("event", subject = %msg.subject, sequence, delivered);
    let outcome = AssertUnwindSafe(handler(event))
        .catch_unwind()
        .instrument(span)
        .await;
    match outcome {
        Ok(Ok(())) => Outcome::Done,
        Ok(Err(e)) => Outcome::Failed {
            what: "event handler failed",
            delay: redelivery_delay(delivered),
            error: crate::startup::Causes(&*e).to_string(),
        },
        Err(panic) => Outcome::Failed {
            what: "event handler panicked",
            delay: redelivery_delay(delivered),
            // Kept with a dead letter: for the operator, not a caller.
            error: format!("the handler panicked: {}", crate::task::panic_text(&*panic)),
        },
    }
}

/// A running subscription. [`shutdown`](Self::shutdown) stops pulling and
/// waits for the handlers in progress. Dropping it stops pulling at once
/// without waiting: handlers already running go on in the background, the
/// same as after `shutdown`, and acknowledge their events as usual. In
/// both cases a handler still running 10 s into the stop is abandoned and
/// its event redelivered at once: to another instance in compete mode, to
/// this instance's next start in broadcast mode.
/// To have no handler running past a point, call `shutdown` and await it.
/// A drop without `shutdown` logs one WARN naming the consumer.
#[derive(Debug)]
#[must_use = "dropping the subscription stops taking events: bind it to a named variable (`let _sub = ...`, not `let _`) and call shutdown() to stop"]
pub struct EventSubscription {
    name: String,
    tasks: Background,
    /// Whether [`EventSubscription::shutdown`] was called: a drop without
    /// it says so (see `Drop`).
    stopping: bool,
}

impl Drop for EventSubscription {
    fn drop(&mut self) {
        if !self.stopping {
            warn!(consumer = %self.name,
                "event subscription {} dropped without shutdown(): it no longer takes events \
                 (its durable consumer stays on the server, and events wait there); keep the \
                 EventSubscription in a named variable and call shutdown() to stop",
                self.name);
        }
    }
}

impl EventSubscription {
    /// The durable consumer's name.
    pub fn consumer_name(&self) -> &str {
        &self.name
    }

    /// Stops pulling and waits for the handlers in progress to finish and
    /// acknowledge their events; one still running after 10 s is abandoned
    /// and its event redelivered.
    pub async fn shutdown(mut self) {
        self.stopping = true;
        self.tasks.stop().await;
    }
}

/// Whether `subject` is a JetStream API request about the consumer `name`
/// of `stream` (`$JS.API.CONSUMER.INFO.EVENTS.{name}`,
/// `$JS.API.CONSUMER.CREATE.EVENTS.{name}[.{filter}]`,
/// `$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.{name}`): not one that merely
/// has `name` among its tokens, as the same name on another stream, or a
/// filter subject's token, would.
fn names_consumer(subject: &str, stream: &str, name: &str) -> bool {
    let Some(rest) = subject.strip_prefix("$JS.API.CONSUMER.") else {
        return false;
    };
    let rest = rest.strip_prefix("DURABLE.").unwrap_or(rest);
    let mut tokens = rest.split('.').skip(1);
    tokens.next() == Some(stream) && tokens.next() == Some(name)
}

#[cfg(test)]
mod tests {
    use super::names_consumer;

    #[test]
    fn only_the_streams_consumer_of_that_name_is_named() {
        let named = |s: &str| names_consumer(s, "EVENTS", "fx_order_filled");
        assert!(named("$JS.API.CONSUMER.INFO.EVENTS.fx_order_filled"));
        assert!(named(
            "$JS.API.CONSUMER.CREATE.EVENTS.fx_order_filled.events.order.filled"
        ));
        assert!(named(
            "$JS.API.CONSUMER.DURABLE.CREATE.EVENTS.fx_order_filled"
        ));
        assert!(!named("$JS.API.CONSUMER.CREATE.ORDERS.fx_order_filled"));
        assert!(!named(
            "$JS.API.CONSUMER.CREATE.EVENTS.other.events.fx_order_filled.x"
        ));
        assert!(!named("$JS.API.CONSUMER.CREATE.EVENTS.fx_order_filled_2"));
        assert!(!named("$JS.API.STREAM.INFO.EVENTS"));
    }
}
