//! A stream's messages on a filter, read on an ephemeral consumer of this
//! process's own that says when it may have lost its place, so a reader
//! opens it again at once: after a NATS node died, it is current again
//! within about half a second of JetStream making consumers again.
//!
//! async-nats's ordered consumer makes itself again on its own, but it
//! notices a consumer lost with its node only after two missed idle
//! heartbeats, fixed at 15 s: a risk instance whose node died counted a
//! fill 39 s late on it, or not within 15 s (2 runs of 14,
//! `aegis-trading/tests/node_loss.rs`). A [`Feed`] ends instead, with
//! [`FeedBroken`], when
//!
//! - the server's heartbeats stop (every second while nothing comes; two
//!   missed end it): the consumer's node died, or the pull was lost;
//! - the connection was re-established (checked four times a second): a
//!   pull in flight may have been lost with the old connection;
//! - a delivery was skipped (the consumer's sequence jumped).
//!
//! [`feed`] makes the consumer in attempts of at most half a second, again
//! and again until one succeeds: while JetStream elects a leader after a
//! node died, a request is never answered, and a longer wait would only
//! delay the first answer once it is back. Only while the server answers
//! that the stream is not there (a bucket deleted) do the attempts slow
//! down, to one every 2 s: a fleet's readers of a stream deleted for good
//! asked ten times a second each before (`tests/feed.rs`: 49 attempts in
//! 5 s, now 6).

use std::{
    pin::Pin,
    sync::atomic::Ordering,
    task::{Context, Poll},
    time::Duration,
};

use async_nats::jetstream::{
    ErrorCode, Message,
    consumer::{AckPolicy, DeliverPolicy, pull},
    stream::{ConsumerError, ConsumerErrorKind, Stream},
};
use futures::StreamExt;
use tracing::{debug, warn};

use crate::Connection;

/// The idle heartbeat the server sends a pull while no message comes.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long a pull waits for messages before the next is sent.
const EXPIRES: Duration = Duration::from_secs(5);
/// One attempt to make the consumer.
const OPEN_ATTEMPT: Duration = Duration::from_millis(500);
/// The pause between two attempts.
const OPEN_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause between two attempts while the server answers that
/// the stream is not there (the pause doubles from [`OPEN_PAUSE`]): a
/// stream deleted for good would otherwise be asked for ten times a
/// second by every reader of it, for as long as they run.
const MISSING_PAUSE_MAX: Duration = Duration::from_secs(2);
/// Attempts failing this long are logged as a warning, once.
const OPEN_WARN_AFTER: Duration = Duration::from_secs(10);
/// How often a feed looks whether the connection was re-established.
const RECONNECT_CHECK: Duration = Duration::from_millis(250);

/// Why a [`Feed`] ended: open a new one from the message after the last
/// one handled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FeedBroken {
    /// Two idle heartbeats were missed: the consumer's node died, or the
    /// pull was lost.
    #[error("no heartbeat from the server: the consumer or its node is gone")]
    Silent,
    /// The connection was re-established: a pull in flight may be lost.
    #[error("the NATS connection was re-established")]
    Reconnected,
    /// A delivery was skipped.
    #[error("a message was skipped (delivery {got} after {last})")]
    Skipped {
        /// The consumer sequence of the last message handed over.
        last: u64,
        /// The one that came next.
        got: u64,
    },
    /// The server ended the pull or a delivery was unreadable.
    #[error("{0}")]
    Consumer(String),
}

/// The messages [`feed`] reads, in order; after its first error it ends.
pub struct Feed {
    inner: Pin<Box<dyn futures::Stream<Item = Result<Message, FeedBroken>> + Send>>,
    broken: bool,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").finish_non_exhaustive()
    }
}

impl futures::Stream for Feed {
    type Item = Result<Message, FeedBroken>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.broken {
            return Poll::Ready(None);
        }
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(Some(Err(_))) = &next {
            self.broken = true;
        }
        next
    }
}

/// The messages of `stream` on `filter` (NATS wildcards allowed), from where
/// `deliver` says on, on an ephemeral pull consumer (one replica, in
/// memory, no acks) made over `conn`. Waits until the consumer is made,
/// trying every 0.6 s at most (every 2 s while the server answers that
/// the stream is not there); drop the future to give up.
///
/// Read it until an error, then open a new one from the message after the
/// last one handled ([`DeliverPolicy::ByStartSequence`]): see the module
/// for when it ends. The consumer is removed by the server 10 s after its
/// last pull.
///
/// ```no_run
/// use aegis_sdk::feed::feed;
/// use async_nats::jetstream::consumer::DeliverPolicy;
/// use futures::StreamExt;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), async_nats::Error> {
/// let stream = conn.jetstream().get_stream("EVENTS").await?;
/// let mut next = 1;
/// loop {
///     let deliver = DeliverPolicy::ByStartSequence { start_sequence: next };
///     let mut messages = feed(&conn, &stream, "events.order.>", deliver).await;
///     while let Some(Ok(message)) = messages.next().await {
///         next = message.info()?.stream_sequence + 1;
///         println!("{}", message.subject);
///     }
/// }
/// # }
/// ```
pub async fn feed(
    conn: &Connection,
    stream: &Stream,
    filter: impl Into<String>,
    deliver: DeliverPolicy,
) -> Feed {
    let filter = filter.into();
    let statistics = conn.client().statistics();
    let connects = move || statistics.connects.load(Ordering::Relaxed);
    let started = tokio::time::Instant::now();
    let mut warned = false;
    // Before the next attempt; grows while the stream is missing.
    let mut pause = OPEN_PAUSE;
    let (messages, connected) = loop {
        // Read before the consumer is made: a reconnect after it ends the
        // feed.
        let connected = connects();
        let attempt = async {
            let consumer = stream
                .create_consumer(pull::Config {
                    filter_subject: filter.clone(),
                    deliver_policy: deliver,
                    ack_policy: AckPolicy::None,
                    inactive_threshold: EXPIRES * 2,
                    memory_storage: true,
                    num_replicas: 1,
                    ..Default::default()
                })
                .await
                .map_err(|e| (stream_missing(&e), e.into()))?;
            let messages = consumer
                .stream()
                .heartbeat(HEARTBEAT)
                .expires(EXPIRES)
                .messages()
                .await
                .map_err(|e| (false, async_nats::Error::from(e)))?;
            Ok::<_, (bool, async_nats::Error)>(messages)
        };
        let (why, missing) = match tokio::time::timeout(OPEN_ATTEMPT, attempt).await {
            Ok(Ok(messages)) => break (messages, connected),
            Ok(Err((missing, e))) => (e.to_string(), missing),
            Err(_) => (
                format!("JetStream did not answer within {OPEN_ATTEMPT:?}"),
                false,
            ),
        };
        if !warned && started.elapsed() >= OPEN_WARN_AFTER {
            warned = true;
            warn!(filter, error = %why, "cannot open a feed for {OPEN_WARN_AFTER:?}; still trying");
        } else {
            debug!(filter, error = %why, "cannot open a feed yet");
        }
        tokio::time::sleep(pause).await;
        // Only an answer says the stream is gone; a request not answered
        // (JetStream electing a leader) is tried again soon, which is what
        // makes a feed current again quickly after a node died.
        pause = if missing {
            (pause * 2).min(MISSING_PAUSE_MAX)
        } else {
            OPEN_PAUSE
        };
    };
    let reconnected =
        futures::stream::unfold(tokio::time::interval(RECONNECT_CHECK), move |mut ticks| {
            let connects = connects.clone();
            async move {
                loop {
                    ticks.tick().await;
                    if connects() != connected {
                        return Some((Err(FeedBroken::Reconnected), ticks));
                    }
                }
            }
        });
    let mut last = 0;
    let delivered = messages.map(move |delivered| {
        let message = delivered.map_err(|e| match e.kind() {
            pull::MessagesErrorKind::MissingHeartbeat => FeedBroken::Silent,
            _ => FeedBroken::Consumer(e.to_string()),
        })?;
        let got = message
            .info()
            .map_err(|e| FeedBroken::Consumer(e.to_string()))?
            .consumer_sequence;
        if got != last + 1 {
            return Err(FeedBroken::Skipped { last, got });
        }
        last = got;
        Ok(message)
    });
    Feed {
        inner: Box::pin(futures::stream::select(delivered, Box::pin(reconnected))),
        broken: false,
    }
}

/// Whether the server answered that the stream is not there.
fn stream_missing(e: &ConsumerError) -> bool {
    matches!(e.kind(), ConsumerErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}
