//! The one task that sends an instance's records — lifecycle events and
//! forwarded WARN/ERROR lines — in order, each under its own message id
//! (`Nats-Msg-Id`): to the stream capturing their subject, sending a copy
//! again while the stream takes none (a leader change, the 4-9 s election
//! after its node died), so it is stored once; on core NATS while no
//! stream captures it (see [`route`](super::route)).
//!
//! A connection has one sender per instance ([`Senders`], held by the
//! [`Connection`](crate::Connection)): every
//! [`Telemetry`](super::Telemetry) made for the same instance on the same
//! connection shares it, so the service's own events and the binary's
//! forwarded log lines keep one order, and the service's stop flushes
//! both. Once every handle is gone, the task goes on sending what is
//! queued for [`FLUSH_PATIENCE`], then ends.
//!
//! Nothing here logs above DEBUG: a WARN would come back through the log
//! layer as one more record for this same sender.

use std::sync::{
    Arc, Mutex, MutexGuard, PoisonError, Weak,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use async_nats::{
    Client, HeaderMap,
    jetstream::{
        self,
        context::{GetStreamByNameErrorKind, PublishError, PublishErrorKind},
    },
};
use bytes::Bytes;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};
use tracing::debug;

use super::{
    outbox::{Outbox, Pending},
    route::{Answer, Delivery, Next, Route},
};

/// How many records wait at most; a full queue drops its oldest.
pub(super) const CAPACITY: usize = 256;

/// How long records queued before a stop (or before the last handle went)
/// are still sent.
pub(super) const FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// How long a lookup of the stream capturing the subject waits for
/// JetStream's answer.
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// A connection's live senders, one per subject, so every handle for one
/// instance shares one queue. Held by the connection: no process-wide list.
#[derive(Debug, Default)]
pub(crate) struct Senders {
    live: Mutex<Vec<Weak<Sender>>>,
}

impl Senders {
    /// The sender of `subject`'s records on `client` (this connection's
    /// client): the one already running, or a new one.
    pub(super) fn sender_for(&self, client: &Client, subject: &str) -> Arc<Sender> {
        let mut live = self.live.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|s| s.strong_count() > 0);
        if let Some(sender) = live
            .iter()
            .filter_map(Weak::upgrade)
            .find(|s| *s.shared.subject == *subject)
        {
            return sender;
        }
        let sender = Arc::new(Sender::new(client.clone(), subject));
        live.push(Arc::downgrade(&sender));
        sender
    }
}

/// A handle on the sender of one instance's records; the last one dropped
/// lets the task flush and end.
#[derive(Debug)]
pub(super) struct Sender {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    subject: Arc<str>,
    /// The message ids of this sender's records: `{ids}.{seq}`.
    ids: String,
    state: Mutex<State>,
    /// Told of every record queued, and of the close.
    wake: Notify,
    /// The number of the oldest record not settled yet
    /// ([`Outbox::unsettled_from`]), for flushes to wait on.
    settled: watch::Sender<u64>,
    /// Whether the task runs (it needs a runtime); cleared when it ends,
    /// or when its runtime shuts down under it, so a later record starts
    /// it again.
    running: AtomicBool,
    dropped: AtomicU64,
}

#[derive(Debug)]
struct State {
    outbox: Outbox,
    /// When the last handle went: the task sends what is queued until
    /// [`FLUSH_PATIENCE`] after it.
    closed_at: Option<Instant>,
}

/// What became of a record.
enum Outcome {
    Stored { copies: u32, took: Duration },
    Published,
    GaveUp(&'static str),
}

impl Sender {
    fn new(client: Client, subject: &str) -> Self {
        let sender = Self {
            shared: Arc::new(Shared {
                client,
                subject: Arc::from(subject),
                ids: nuid::next().to_string(),
                state: Mutex::new(State {
                    outbox: Outbox::new(CAPACITY),
                    closed_at: None,
                }),
                wake: Notify::new(),
                settled: watch::Sender::new(0),
                running: AtomicBool::new(false),
                dropped: AtomicU64::new(0),
            }),
        };
        sender.start();
        sender
    }

    /// Queues one record's JSON; never waits.
    pub(super) fn send(&self, body: Bytes) {
        let evicted = {
            let mut state = self.shared.lock();
            let evicted = state.outbox.push(body);
            self.shared.publish_settled(&state);
            evicted
        };
        self.shared.wake.notify_one();
        self.start();
        if let Some(evicted) = evicted {
            self.shared
                .count_dropped(1, "the queue was full", evicted.seq);
        }
    }

    /// Waits until every record queued before the call is settled, for up
    /// to `within`; whether they all were.
    pub(super) async fn flush(&self, within: Duration) -> bool {
        self.start();
        let until = self.shared.lock().outbox.next_seq();
        let mut settled = self.shared.settled.subscribe();
        tokio::time::timeout(within, settled.wait_for(|from| *from >= until))
            .await
            .is_ok_and(|seen| seen.is_ok())
    }

    /// Records given up so far.
    /// The client the records leave on.
    pub(super) fn client(&self) -> &Client {
        &self.shared.client
    }

    pub(super) fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Spawns the task, once, when a runtime is at hand (the records
    /// queued meanwhile wait for it).
    fn start(&self) {
        if self.shared.running.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .shared
            .running
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // Made before the spawn and moved into the task, so a task
            // dropped before its first poll (its runtime shutting down)
            // clears the flag too.
            let running = Running(self.shared.clone());
            runtime.spawn(async move {
                run(running.0.clone()).await;
                drop(running);
            });
        }
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.shared.lock().closed_at = Some(Instant::now());
        self.shared.wake.notify_one();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_settled(&self, state: &State) {
        self.settled.send_replace(state.outbox.unsettled_from());
    }

    /// Records `n` records given up (the last numbered `seq`), logged at
    /// DEBUG on the 1st, 2nd, 4th, 8th… so a flood logs little.
    fn count_dropped(&self, n: u64, why: &'static str, seq: u64) {
        let before = self.dropped.fetch_add(n, Ordering::Relaxed);
        let total = before + n;
        if (before + 1..=total).any(u64::is_power_of_two) {
            debug!(subject = %self.subject, seq, total, why, "dropped telemetry records");
        }
    }

    /// When queued records stop being sent, once the last handle went.
    fn give_up_by(&self) -> Option<Instant> {
        self.lock().closed_at.map(|at| at + FLUSH_PATIENCE)
    }
}

/// The task: sends each record in turn until the last handle went and the
/// queue is flushed (or [`FLUSH_PATIENCE`] passed).
async fn run(shared: Arc<Shared>) {
    let js = jetstream::new(shared.client.clone());
    let mut route = Route::new();
    loop {
        let (next, closed_at) = {
            let mut state = shared.lock();
            (state.outbox.take(), state.closed_at)
        };
        let Some(record) = next else {
            if closed_at.is_some() {
                return;
            }
            shared.wake.notified().await;
            continue;
        };
        let outcome = deliver(&shared, &js, &mut route, &record).await;
        match outcome {
            Outcome::Stored { copies, took } if copies > 1 => {
                debug!(subject = %shared.subject, seq = record.seq, copies, ?took,
                    "a telemetry record sent again was stored");
            }
            Outcome::Stored { .. } | Outcome::Published => {}
            Outcome::GaveUp(why) => shared.count_dropped(1, why, record.seq),
        }
        let mut state = shared.lock();
        state.outbox.settle();
        let late = state
            .closed_at
            .is_some_and(|at| Instant::now() >= at + FLUSH_PATIENCE);
        let unsent = if late { state.outbox.clear() } else { 0 };
        let last = state.outbox.next_seq().saturating_sub(1);
        shared.publish_settled(&state);
        drop(state);
        if unsent > 0 {
            shared.count_dropped(unsent as u64, "not sent before the stop", last);
        }
    }
}

/// Clears [`Shared::running`] when the task ends, or is dropped with its
/// runtime.
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Release);
    }
}

/// Sends one record: on core NATS while its subject has no stream, else to
/// JetStream under its message id until stored or given up.
async fn deliver(
    shared: &Shared,
    js: &jetstream::Context,
    route: &mut Route,
    record: &Pending,
) -> Outcome {
    let subject = shared.subject.to_string();
    if !route.goes_to_stream(Instant::now()) {
        return match shared.client.publish(subject, record.body.clone()).await {
            Ok(()) => Outcome::Published,
            Err(_) => Outcome::GaveUp("the client refused the publish"),
        };
    }
    let mut headers = HeaderMap::new();
    let id = format!("{}.{}", shared.ids, record.seq);
    headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
    let mut delivery = Delivery::new(Instant::now());
    loop {
        if let Some(by) = shared.give_up_by() {
            delivery.give_up_by(by);
        }
        let sent = Instant::now();
        let wait = delivery.ack_wait(sent);
        let publish = async {
            js.publish_with_headers(subject.clone(), headers.clone(), record.body.clone())
                .await?
                .await
        };
        let answer = match tokio::time::timeout(wait, publish).await {
            Ok(Ok(_)) => Answer::Stored,
            Ok(Err(e)) => answer_to(&e),
            Err(_) => Answer::NoAck,
        };
        let mut next = route.after(&mut delivery, answer, Instant::now());
        if next == Next::LookUp {
            let captured = look_up(js, &subject).await;
            next = route.looked_up(&mut delivery, captured, answer, Instant::now());
        }
        match next {
            Next::Stored => {
                return Outcome::Stored {
                    copies: delivery.copies,
                    took: delivery.started().elapsed(),
                };
            }
            Next::Published => return Outcome::Published,
            Next::GiveUp if answer == Answer::Refused => {
                return Outcome::GaveUp("the stream refused it");
            }
            Next::GiveUp => return Outcome::GaveUp("not stored in time"),
            // A copy is sent again at once only after its whole wait: one
            // that failed early (a connection going down) is not resent
            // in a tight loop.
            Next::Again(pause) if answer == Answer::NoAck => {
                tokio::time::sleep_until(sent + wait.max(pause)).await;
            }
            Next::Again(pause) => tokio::time::sleep(pause).await,
            Next::LookUp => {}
        }
    }
}

/// What a failed publish says (see [`Answer`]).
fn answer_to(e: &PublishError) -> Answer {
    match e.kind() {
        // async-nats reports "no responders" so.
        PublishErrorKind::StreamNotFound => Answer::NobodyTook,
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => Answer::NoAck,
        PublishErrorKind::MaxAckPending => Answer::NotNow,
        _ if crate::streams::write_not_stored(e) || in_process(e) => Answer::NotNow,
        _ => Answer::Refused,
    }
}

/// Whether the stream answered that a copy with this id is still being
/// stored (10158).
fn in_process(e: &PublishError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code().0 == 10158)
}

/// Whether a stream captures `subject`: `None` when JetStream did not
/// answer in time (its meta group electing a leader) or refused to.
async fn look_up(js: &jetstream::Context, subject: &str) -> Option<bool> {
    match tokio::time::timeout(LOOKUP_WAIT, js.stream_by_subject(subject)).await {
        Ok(Ok(_)) => Some(true),
        Ok(Err(e)) if e.kind() == GetStreamByNameErrorKind::NotFound => Some(false),
        Ok(Err(_)) | Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sender's task spawned on a runtime that shuts down before the
    /// task ever ran leaves the sender not running, so the next record
    /// (on another runtime) starts a task again instead of waiting
    /// forever behind a flag that says one runs.
    #[test]
    fn a_task_dropped_before_it_ran_leaves_the_sender_startable() {
        let nats = aegis_testkit::NatsServer::start().unwrap();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        // The spawn happens as the sender is made; the block ends before
        // the runtime polls the task, and the runtime is dropped with it.
        let sender = first.block_on(async {
            let client = async_nats::connect(nats.url()).await.unwrap();
            Sender::new(client, "aegis.log.test-service.t-1")
        });
        assert!(sender.shared.running.load(Ordering::Acquire));
        drop(first);
        assert!(
            !sender.shared.running.load(Ordering::Acquire),
            "the task went with its runtime, and the flag with it"
        );
    }
}
