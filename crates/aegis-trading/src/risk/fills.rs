//! Positions from `events.order.filled`, complete on every start.
//!
//! The book lives in memory, so each start must rebuild all of it — also
//! when the instance restarts under the same id, and also once the fills it
//! was built from have left the `EVENTS` stream (7 days, or its size limit).
//! A durable consumer named after the instance cannot do that: restarted
//! within its inactivity window it resumes after the last fill it acked,
//! with an empty book. So:
//!
//! - **Snapshots.** Every `snapshot_interval`, and on shutdown, an instance
//!   whose book moved writes it to the key `snapshot` of the KV bucket
//!   [`RISK_POSITIONS_BUCKET`]: positions, the stream sequence they are as of,
//!   and where the fills its dedup window remembers begin. Instances of the
//!   service share the key; a write goes by compare-and-set and only
//!   forward (a snapshot as of an older sequence never replaces a newer one),
//!   and all instances hold the same book, so whoever writes, it is right.
//! - **Replay with a fresh consumer.** On start an instance reads the
//!   snapshot (from the stream leader), then reads the fills from the
//!   snapshot's replay point on with an ephemeral consumer of its own,
//!   made again from the next fill on any gap, on a reconnect and when the
//!   server's heartbeats stop — and follows new ones with the same
//!   consumer. Fills up to the snapshot's sequence are only remembered
//!   (to recognise repeats); later ones are applied. Without a snapshot it
//!   replays the whole stream.
//! - The service starts answering only once the replay has reached the last
//!   fill stored when it started: an assessment must not see half a book.
//!
//! - **A stream created again.** Sequences are those of one `EVENTS`
//!   stream, known by when it was created; the snapshot records it. When
//!   an operator deletes the stream and creates it again, its sequences
//!   start over below the snapshot's and would read as fills applied
//!   before, freezing the positions. So the book starts over on the new
//!   stream (`Book::rebase`): at start, when the snapshot is of another
//!   stream, and while it runs, each time the feed of fills is made
//!   again (the old stream's consumer went with it). JetStream's
//!   advisories that the stream was deleted, created or restored
//!   ([`follow_changes`]) end the feed at once and wake a follower waiting
//!   for the stream to be back; until the follower has looked which stream
//!   there is, an assessment that names a fill waits: the book's old
//!   sequences would only look further on than the new stream's.
//!
//! If the stream lost events after the snapshot's sequence (a snapshot older
//! than the retention — its writers all down for a week), the book misses
//! them; the start says so in the log.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aegis_contracts::{
    subjects::EVENTS_STREAM,
    trading::{OrderFilled, TradingEvent},
};
use aegis_sdk::feed::{Feed, feed};
use aegis_sdk::{Connection, events::EventError};
use async_nats::jetstream::{
    consumer::DeliverPolicy,
    context::RequestErrorKind,
    stream::{LastRawMessageErrorKind, Stream},
};
use chrono::{DateTime, Utc};
use futures::{StreamExt, future::BoxFuture, stream::TakeUntil};
use serde::{Deserialize, Serialize};
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{
    Risk,
    book::{Book, Place},
};
use crate::{
    TradingError,
    kv::{Bucket, Expect, WriteError},
};

/// The KV bucket holding the positions snapshot (key `snapshot`).
pub const RISK_POSITIONS_BUCKET: &str = "risk_positions";
const SNAPSHOT_KEY: &str = "snapshot";

/// What the key `snapshot` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Snapshot {
    /// Net quantity per symbol.
    positions: BTreeMap<String, i64>,
    /// The `EVENTS` sequence of the last fill the positions include.
    last_event_sequence: u64,
    /// Where a restored book starts replaying, to remember the fills the
    /// writer's dedup window held.
    replay_from: u64,
    /// When the `EVENTS` stream those sequences are of was created
    /// (absent in snapshots written before it was recorded).
    #[serde(default)]
    stream_created: Option<DateTime<Utc>>,
    /// When the last fill the positions include was stored (stream time).
    #[serde(default)]
    last_fill_at: Option<DateTime<Utc>>,
    /// The instance that wrote it (informational).
    instance_id: String,
    /// When (informational).
    #[serde(with = "aegis_contracts::models::rfc3339")]
    taken_at: DateTime<Utc>,
}

/// The stream and bucket behind the book.
#[derive(Debug, Clone)]
pub(crate) struct Fills {
    stream: Stream,
    /// The connection the feed of fills is read on.
    conn: Connection,
    bucket: Bucket,
    instance_id: String,
}

impl Fills {
    /// Opens the `EVENTS` stream (creating it when missing) and the
    /// snapshot bucket.
    pub(crate) async fn open(conn: &Connection, instance_id: &str) -> Result<Self, TradingError> {
        let stream = conn.events().ensure_stream().await?;
        let kv = crate::kv::open_bucket(conn, RISK_POSITIONS_BUCKET).await?;
        Ok(Self {
            stream,
            conn: conn.clone(),
            bucket: Bucket::new(conn, kv),
            instance_id: instance_id.to_owned(),
        })
    }

    /// The book as of the latest snapshot (empty without one).
    pub(crate) async fn restore(
        &self,
        window: Duration,
        capacity: usize,
    ) -> Result<(Book, u64), TradingError> {
        let stored = self
            .bucket
            .read_latest(SNAPSHOT_KEY)
            .await
            .map_err(|e| self.store_error(e))?;
        let snapshot = stored.and_then(|(_, value)| {
            serde_json::from_slice::<Snapshot>(&value)
                .inspect_err(
                    |e| warn!(error = %aegis_sdk::startup::Causes(e), "ignoring a positions snapshot that does not decode"),
                )
                .ok()
        });
        let stream = self.identity().await?;
        let Some(snapshot) = snapshot else {
            let mut book = Book::new(window, capacity);
            book.rebase(stream.created);
            return Ok((book, 1));
        };
        info!(
            sequence = snapshot.last_event_sequence,
            by = %snapshot.instance_id,
            "positions restored from the snapshot"
        );
        // A snapshot from before the stream was recorded is of another
        // stream when it is ahead of this one.
        let of_stream = snapshot.stream_created.or_else(|| {
            (snapshot.last_event_sequence > stream.last_sequence)
                .then_some(DateTime::<Utc>::MIN_UTC)
        });
        let mut book = Book::restore(
            snapshot.positions,
            Place {
                last_event_sequence: snapshot.last_event_sequence,
                replay_from: snapshot.replay_from,
                stream: of_stream,
                last_fill_at: snapshot.last_fill_at,
            },
            window,
            capacity,
        );
        if book.rebase(stream.created) {
            warn!(
                snapshot = snapshot.last_event_sequence,
                "EVENTS was created again since the positions snapshot: keeping its positions \
                 and counting the fills of the new stream from its first"
            );
            return Ok((book, stream.first_sequence.max(1)));
        }
        let first = stream.first_sequence;
        if first > snapshot.last_event_sequence + 1 {
            warn!(
                snapshot = snapshot.last_event_sequence,
                first_in_stream = first,
                "EVENTS no longer holds every event after the positions snapshot; \
                 fills among them are missing from the positions"
            );
        }
        let replay_from = snapshot
            .replay_from
            .clamp(1, snapshot.last_event_sequence + 1);
        Ok((book, replay_from))
    }

    /// The sequence of the last fill stored now (0: none).
    pub(crate) async fn last_fill(&self) -> Result<u64, TradingError> {
        match self
            .stream
            .get_last_raw_message_by_subject(&OrderFilled::subject())
            .await
        {
            Ok(msg) => Ok(msg.sequence),
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
            Err(e) => Err(self.events_error(e.into())),
        }
    }

    /// Which `EVENTS` stream there is now, and what it holds.
    async fn identity(&self) -> Result<Identity, TradingError> {
        let info = self
            .stream
            .get_info()
            .await
            .map_err(|e| self.events_error(e.into()))?;
        Ok(Identity::of(&info))
    }

    /// [`identity`](Self::identity) for the follower, which must not be
    /// held up by it: `None` when the server did not answer within
    /// [`IDENTITY_WAIT`] (a stream without a leader for seconds after a
    /// NATS node died: the feed itself copes with that), an error when it
    /// answered with one (no stream, say: deleted and not yet created
    /// again, so the feed waits for it rather than start on it unchecked).
    async fn identity_now(&self) -> Result<Option<Identity>, TradingError> {
        match tokio::time::timeout(IDENTITY_WAIT, self.stream.get_info()).await {
            Ok(Ok(info)) => Ok(Some(Identity::of(&info))),
            Ok(Err(e)) if e.kind() != RequestErrorKind::TimedOut => {
                Err(self.events_error(e.into()))
            }
            Ok(Err(_)) | Err(_) => {
                debug!("EVENTS did not say which stream it is in time; following on unchecked");
                Ok(None)
            }
        }
    }

    /// Subscribes to JetStream's advisories that `EVENTS` was deleted,
    /// created or restored (see [`follow_changes`]): made before the book
    /// learns which stream there is, so none after it is missed.
    pub(crate) async fn changes(&self) -> Result<Changes, TradingError> {
        let mut subscribers = Vec::new();
        for action in STREAM_CHANGES {
            let subject = format!("$JS.EVENT.ADVISORY.STREAM.{action}.{EVENTS_STREAM}");
            let subscriber = self
                .conn
                .client()
                .subscribe(subject)
                .await
                .map_err(|e| self.events_error(e.into()))?;
            subscribers.push(subscriber);
        }
        Ok(Changes(futures::stream::select_all(subscribers)))
    }

    /// Follows fills from `from` on into `risk`'s book until `cancel`,
    /// reporting the last sequence seen on `progress`.
    ///
    /// Each time it makes its feed (again), it looks which stream there is:
    /// one created again since has sequences that started over, and the
    /// book starts over on it, from its first fill.
    ///
    /// The feed is made again after a pause that doubles, from 50 ms up to
    /// 2 s, while it breaks without handing over a fill — except that an
    /// advisory that `EVENTS` changed, told since the feed was last made,
    /// ends the pause at once ([`aegis_sdk::kv::reopening_woken`]; the
    /// feed itself ends on the advisory): the book follows a stream
    /// created again within milliseconds however often the feed broke
    /// before, rather than keep the gone stream's sequences for up to 2 s
    /// (assessments naming a fill are refused meanwhile).
    ///
    /// On an [`aegis_sdk::feed`] rather than async-nats's ordered
    /// consumer: that one notices a consumer lost with its NATS node only
    /// after two missed 15 s heartbeats, and an instance whose node died
    /// counted a fill stored after the node's death 39 s late, or not
    /// within 15 s (2 of 14 runs of
    /// `tests/node_loss.rs::a_fill_reaches_an_instance_whose_node_died_within_seconds`),
    /// judging position limits by a book that missed it meanwhile. On the
    /// feed: 22 runs, 17 within 2 ms, the others 0.27 to 1.49 s (the meta
    /// group, which makes consumers, came back after the stream took the
    /// fill).
    pub(crate) fn follow(
        &self,
        risk: Arc<Risk>,
        from: u64,
        progress: watch::Sender<u64>,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let fills = self.clone();
        tokio::spawn(async move {
            // Told of the stream's advisories: one told since the feed was
            // last made (or while it pauses) ends the pause.
            let told = risk.changes.subscribe();
            let (fills, risk) = (&fills, &risk);
            aegis_sdk::kv::reopening_woken(
                "the feed of fills",
                from.max(1),
                cancel,
                told,
                |next| fills.open_feed(risk, *next),
                |next, message: async_nats::jetstream::Message| {
                    let Ok(info) = message.info() else { return };
                    let sequence = info.stream_sequence;
                    let stored = DateTime::from_timestamp(
                        info.published.unix_timestamp(),
                        info.published.nanosecond(),
                    )
                    .unwrap_or_else(Utc::now);
                    risk.apply_fill(sequence, stored, &message.payload);
                    *next = sequence + 1;
                    progress.send_replace(sequence);
                },
            )
            .await;
        })
    }

    /// Makes the feed of fills from `next` on, on the stream there is (see
    /// [`follow`](Self::follow)); it ends when `EVENTS` changes.
    async fn open_feed(
        &self,
        risk: &Risk,
        next: u64,
    ) -> Result<TakeUntil<Feed, BoxFuture<'static, ()>>, TradingError> {
        let mut pause = PAUSE_FIRST;
        loop {
            // Told of the stream's advisories from here on.
            let mut changes = risk.changes.subscribe();
            let generation = *changes.borrow_and_update();
            let start_sequence = match self.identity_now().await {
                Ok(Some(stream)) => risk.follow_stream(stream.created, next, generation),
                Ok(None) if risk.fresh() => next,
                Ok(None) => {
                    return Err(self.events_error(
                        "EVENTS changed, and does not say which stream it is now".into(),
                    ));
                }
                // Deleted, and told so: wait for it to be created.
                Err(e) if !risk.fresh() => {
                    debug!(error = %e, "EVENTS is not there; waiting for it");
                    tokio::select! {
                        () = changed(&mut changes) => {}
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(PAUSE_MAX);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let deliver = DeliverPolicy::ByStartSequence { start_sequence };
            // The stream may change while the feed is made, or while it
            // runs: the feed then ends, and is made again on the stream
            // there is.
            let made = tokio::select! {
                made = feed(&self.conn, &self.stream, OrderFilled::subject(), deliver) => made,
                () = changed(&mut changes) => continue,
            };
            let until_changed: BoxFuture<'static, ()> =
                Box::pin(async move { changed(&mut changes).await });
            return Ok(made.take_until(until_changed));
        }
    }

    /// Writes `risk`'s book as the snapshot every `every`, when it moved,
    /// and once more on `cancel`.
    pub(crate) fn snapshot_every(
        &self,
        risk: Arc<Risk>,
        every: Duration,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let fills = self.clone();
        tokio::spawn(async move {
            let mut written = (None, 0);
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let stop = tokio::select! {
                    () = cancel.cancelled() => true,
                    _ = ticks.tick() => false,
                };
                match fills.write_snapshot(&risk, written).await {
                    Ok(sequence) => written = sequence,
                    Err(e) => {
                        debug!(error = %aegis_sdk::startup::Causes(&*e), "positions snapshot not written; will try again")
                    }
                }
                if stop {
                    return;
                }
            }
        })
    }

    /// Writes the book as the snapshot unless it is not past `written` or
    /// the stored one is as recent; returns where the snapshot now on
    /// record is. A snapshot of a stream created later is more recent
    /// whatever its sequence (this instance has yet to start over on it);
    /// one of a stream created earlier is older.
    async fn write_snapshot(
        &self,
        risk: &Risk,
        written: Written,
    ) -> Result<Written, async_nats::Error> {
        let (positions, place) = risk.snapshot();
        let ours = (place.stream, place.last_event_sequence);
        if !newer(ours, written) {
            return Ok(written);
        }
        let snapshot = Snapshot {
            positions,
            last_event_sequence: place.last_event_sequence,
            replay_from: place.replay_from,
            stream_created: place.stream,
            last_fill_at: place.last_fill_at,
            instance_id: self.instance_id.clone(),
            taken_at: Utc::now(),
        };
        let bytes: bytes::Bytes = serde_json::to_vec(&snapshot)?.into();
        // Two rounds: another instance may write between our read and write.
        for _ in 0..2 {
            let stored = self.bucket.last_record(SNAPSHOT_KEY).await?;
            let revision = match &stored {
                Some((revision, Some(value))) => {
                    let theirs = serde_json::from_slice::<Snapshot>(value)
                        .map_or((None, 0), |s| (s.stream_created, s.last_event_sequence));
                    if !newer(ours, theirs) {
                        return Ok(theirs);
                    }
                    *revision
                }
                Some((revision, None)) => *revision,
                None => 0,
            };
            match self
                .bucket
                .put_if(SNAPSHOT_KEY, bytes.clone(), Expect::Revision(revision))
                .await
            {
                Ok(_) => return Ok(ours),
                Err(WriteError::Conflict) => continue,
                Err(WriteError::Full) => return Err(self.bucket.full_error()),
                Err(WriteError::Failed(e)) => return Err(e),
            }
        }
        Ok(written)
    }

    fn store_error(&self, source: async_nats::Error) -> TradingError {
        TradingError::Store {
            bucket: RISK_POSITIONS_BUCKET.to_owned(),
            source,
        }
    }

    fn events_error(&self, source: async_nats::Error) -> TradingError {
        TradingError::Events(EventError::Consumer {
            name: format!("fills of {}", self.instance_id),
            source,
        })
    }
}

/// Where a snapshot is: the stream's creation time and the sequence.
type Written = (Option<DateTime<Utc>>, u64);

/// Whether a snapshot at `ours` is more recent than one at `theirs`.
fn newer(ours: Written, theirs: Written) -> bool {
    match (ours.0, theirs.0) {
        (Some(a), Some(b)) if a != b => a > b,
        // Theirs is from before streams were recorded: replacing it is
        // safe even if it was ahead, a restart then replays more.
        (Some(_), None) => true,
        _ => ours.1 > theirs.1,
    }
}

/// How long the follower waits to learn which stream there is.
const IDENTITY_WAIT: Duration = Duration::from_millis(500);

/// Which `EVENTS` stream there is, and the sequences it holds.
#[derive(Debug, Clone, Copy)]
struct Identity {
    /// When it was created: a stream deleted and created again differs.
    created: DateTime<Utc>,
    first_sequence: u64,
    last_sequence: u64,
}

impl Identity {
    fn of(info: &async_nats::jetstream::stream::Info) -> Self {
        Self {
            created: DateTime::from_timestamp(
                info.created.unix_timestamp(),
                info.created.nanosecond(),
            )
            .unwrap_or(DateTime::<Utc>::MIN_UTC),
            first_sequence: info.state.first_sequence,
            last_sequence: info.state.last_sequence,
        }
    }
}

/// The advisories of `EVENTS` after which its sequences may have started
/// over: deleted, created (again), restored from a backup.
const STREAM_CHANGES: [&str; 3] = ["DELETED", "CREATED", "RESTORE_COMPLETE"];

/// The first pause before [`Fills::open_feed`] looks again for a stream
/// it was told is gone, unless told that `EVENTS` changed first; it
/// doubles up to [`PAUSE_MAX`]. (The pause before the feed is made again
/// is `aegis_sdk::kv::reopening_woken`'s, of the same length.)
const PAUSE_FIRST: Duration = Duration::from_millis(50);
/// The longest such pause.
const PAUSE_MAX: Duration = Duration::from_secs(2);

/// JetStream's advisories that `EVENTS` changed ([`Fills::changes`]).
pub(crate) struct Changes(futures::stream::SelectAll<async_nats::Subscriber>);

/// Tells `risk` of each change of `EVENTS` at once, until `cancel`: its
/// book is then of a stream that may be gone, and assessments naming a
/// fill wait until the follower has looked which stream there is
/// ([`Risk::fresh`](super::Risk::fresh)).
pub(crate) fn follow_changes(
    mut changes: Changes,
    risk: Arc<Risk>,
    cancel: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let advisory = tokio::select! {
                () = cancel.cancelled() => return,
                advisory = changes.0.next() => advisory,
            };
            let Some(advisory) = advisory else { return };
            info!(
                subject = %advisory.subject,
                "EVENTS changed; assessments wait for the positions to follow the stream there is"
            );
            risk.changes.send_modify(|generation| *generation += 1);
        }
    })
}

/// Ends when `changes` changes (never once its sender is gone).
pub(crate) async fn changed(changes: &mut watch::Receiver<u64>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
