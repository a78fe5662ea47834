//! Following a JetStream KV bucket for as long as a process runs.
//!
//! [`follow`] hands every entry of the watched keys to a closure: first the
//! latest value of each key, then every change as it lands. When the watch
//! breaks (its server node died, the client reconnected, the bucket's stream
//! moved its leader) it is opened again with back-off, as often as it takes,
//! until cancelled. It suits a bucket with too many keys to load into one
//! batch, or to read from the replicas while a watch is down; the chaos
//! bench (`aegis bench chaos`) follows order-service's bucket and election
//! key with it. Its watch is a [`feed`](crate::feed): it breaks as soon as
//! its consumer may be gone. On async-nats's own watch (an ordered
//! consumer), a change made after the watch's consumer was deleted was
//! handed over 10.05 s late in five runs of five; on a feed, 53 ms
//! (`tests/kv_follow.rs`). order-service's own order index no longer runs
//! on `follow`: it opens its watch itself, a feed on [`reopening`], to
//! know which bucket each opening is on (the bucket may be deleted and
//! created again), so those timings measure `follow`, not it.
//!
//! [`reopening`] is the loop under it, for any stream of items that can be
//! opened again from where it broke — a [`feed`](crate::feed) over a
//! stream from a sequence on, say. [`reopening_woken`] is that loop told
//! when to open again at once (the risk service follows its fills so,
//! woken by advisories that their stream was created again).
//!
//! [`mirror()`] (the monitor's election feed and service definitions,
//! risk-service's limits) keeps a reader current with the latest value of
//! every watched key on the watch the SDK's own registry and election
//! views run on (idle heartbeats every second, sequence gaps, a bucket
//! created again, bounded attempts to open it, and the bucket's replicas
//! read while JetStream cannot open it). Where a cluster loses a node, it
//! is current again as soon as JetStream answers; `follow`, while it ran
//! on async-nats's ordered consumer, took seconds longer: a risk
//! instance on a killed node judged by old limits for 0.7 to 4.7 s after
//! an update on it, and 0.4 s on `mirror`
//! (`aegis-trading/tests/node_loss.rs`); a monitor listed another
//! replica's new service definition 1.6 to 4.5 s late on it, and
//! within 0.31 s on `mirror` (`aegis-monitor/tests/node_loss.rs`).
//! `follow` hands over every revision ([`Resume::AfterLast`]); `mirror`
//! only the latest of each key, and after a break a load that says how
//! far it covers the bucket (`through`), reading the replicas while no
//! consumer can be made.

use std::time::Duration;

use async_nats::jetstream::{consumer::DeliverPolicy, kv};
use futures::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    Connection,
    feed::{FeedBroken, feed},
};

mod mirror;
mod shared;

pub use crate::kv_watch::{Removal, removal_of};
pub use mirror::{MirrorError, Mirrored, MirroredEntry, mirror};
pub use shared::{
    DEFINITIONS, ELECTIONS, LockDown, REGISTRY, SHARED_BUCKETS, SharedBucket,
    create_or_find_shared_bucket, lock_down_in_place, warn_if_open,
};

/// The pause before the first re-open; it doubles up to [`MAX_PAUSE`] while
/// the watch cannot be opened or breaks again at once.
pub(crate) const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to open the watch.
pub(crate) const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Where a watch opened again after a break starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Resume {
    /// The latest value of every key again, then changes: the reader must
    /// ignore revisions it has applied. The new bucket's entries are handed
    /// over even if the bucket was deleted and created again meanwhile (its
    /// revisions start over: a reader that drops revisions at or below the
    /// ones it saw must tell that case apart itself).
    Replay,
    /// Every entry after the last one handed over, so nothing is handed
    /// over twice. Only for a bucket that is never created again (its
    /// revisions would start over and be skipped).
    AfterLast,
}

/// Follows the keys of `store` that match `filter` (NATS wildcards allowed;
/// `>` for all): hands `apply` the latest entry of each, then every change,
/// until `cancel`. A broken watch is opened again as `resume` says, after a
/// pause that grows from 50 ms to 2 s while it keeps failing. Entries
/// include deletions and purges (see [`kv::Entry::operation`]); an entry's
/// `delta` of 0 says nothing more was pending when it was sent, which marks
/// the end of the initial load.
///
/// The watch is a [`feed`] over `conn`: it breaks, and
/// is opened again, as soon as its consumer may be gone (its node died, the
/// connection was re-established), not after the tens of seconds
/// async-nats's own watch waits for idle heartbeats it no longer gets.
///
/// Returns when cancelled; spawn it.
///
/// ```no_run
/// use aegis_sdk::kv::{Resume, follow};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let limits = conn.jetstream().get_key_value("risk_limits").await?;
/// let cancel = CancellationToken::new();
/// tokio::spawn(follow(conn.clone(), limits, "limits", Resume::Replay, cancel.clone(), |entry| {
///     println!("{} is now revision {}", entry.key, entry.revision);
/// }));
/// // ... and on the way out:
/// cancel.cancel();
/// # Ok(()) }
/// ```
pub async fn follow<F>(
    conn: Connection,
    store: kv::Store,
    filter: impl Into<String>,
    resume: Resume,
    cancel: CancellationToken,
    mut apply: F,
) where
    F: FnMut(kv::Entry),
{
    let filter = filter.into();
    let what = format!("KV bucket {} ({filter})", store.name);
    let subjects = format!("{}{filter}", store.prefix);
    reopening(
        &what,
        None::<u64>,
        cancel,
        |last| {
            let deliver = match (resume, *last) {
                (Resume::AfterLast, Some(revision)) => DeliverPolicy::ByStartSequence {
                    start_sequence: revision + 1,
                },
                _ => DeliverPolicy::LastPerSubject,
            };
            let (conn, store, subjects) = (conn.clone(), store.clone(), subjects.clone());
            async move {
                Ok::<_, std::convert::Infallible>(entries(&conn, &store, subjects, deliver).await)
            }
        },
        |last, entry: kv::Entry| {
            *last = Some(entry.revision);
            apply(entry);
        },
    )
    .await;
}

/// The marker [`remove_with_ttl`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// `KV-Operation: DEL`: readers tell a deletion.
    Delete,
    /// `KV-Operation: PURGE`, but without the `Nats-Rollup` header a
    /// purge carries: readers tell a purge (the registry a deregistration,
    /// as before), while the stream removes nothing but what its limits
    /// remove. Only in a bucket of history 1 does it leave what a purge
    /// leaves: the marker alone.
    Purge,
}

/// Removes `key` of `store` with a marker (see [`Marker`]) that the server
/// drops after `ttl` (`None`: kept), expecting `revision` as the key's
/// last when given. Never a rollup, which the shared buckets refuse (see
/// [`SharedBucket`]): async-nats purges only with one, and deletes only
/// without a TTL.
///
/// # Errors
/// As async-nats's `delete_expect_revision`: a refusal for another last
/// revision is of kind `WrongLastRevision`, with the publish error as its
/// source.
pub async fn remove_with_ttl(
    js: &async_nats::jetstream::Context,
    store: &kv::Store,
    key: &str,
    marker: Marker,
    revision: Option<u64>,
    ttl: Option<Duration>,
) -> Result<(), kv::DeleteError> {
    let mut headers = async_nats::HeaderMap::new();
    let operation = match marker {
        Marker::Delete => "DEL",
        Marker::Purge => "PURGE",
    };
    headers.insert("KV-Operation", operation);
    if let Some(ttl) = ttl {
        // A Go duration; the server takes one of at least a second.
        headers.insert(
            async_nats::header::NATS_MESSAGE_TTL,
            format!("{}ms", ttl.as_millis()).as_str(),
        );
    }
    if let Some(revision) = revision {
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
            revision.to_string().as_str(),
        );
    }
    let prefix = store.put_prefix.as_deref().unwrap_or(&store.prefix);
    js.publish_with_headers(format!("{prefix}{key}"), headers, bytes::Bytes::new())
        .await?
        .await?;
    Ok(())
}

/// The entries of `store` on `subjects` (the bucket's prefix and a key
/// filter), from where `deliver` says, read on a [`feed`] over `conn`: it
/// ends with an error as soon as its consumer may be gone. A message that
/// is not one of the bucket's entries is skipped with a warning (opened
/// again, the feed would stop at it again).
pub(crate) async fn entries(
    conn: &Connection,
    store: &kv::Store,
    subjects: String,
    deliver: DeliverPolicy,
) -> impl futures::Stream<Item = Result<kv::Entry, FeedBroken>> + use<> {
    let messages = feed(conn, &store.stream, subjects, deliver).await;
    let (bucket, prefix) = (store.name.clone(), store.prefix.clone());
    let mut seen_current = false;
    messages.filter_map(move |message| {
        std::future::ready(match message {
            Err(broken) => Some(Err(broken)),
            Ok(message) => {
                let entry = entry_of(&message, &bucket, &prefix, &mut seen_current);
                if entry.is_none() {
                    warn!(subject = %message.subject, "skipping a message that is not a KV entry");
                }
                entry.map(Ok)
            }
        })
    })
}

/// The KV entry a bucket's stream message holds; `None` when the message
/// has no JetStream metadata or is not one of the bucket's keys.
/// `seen_current` turns true with the first entry nothing was pending
/// after, as async-nats's own watch marks it.
fn entry_of(
    message: &async_nats::jetstream::Message,
    bucket: &str,
    prefix: &str,
    seen_current: &mut bool,
) -> Option<kv::Entry> {
    let info = message.info().ok()?;
    let key = message.subject.strip_prefix(prefix)?.to_owned();
    let operation = match message.headers.as_ref().and_then(removal_of) {
        None => kv::Operation::Put,
        Some(Removal::Deleted) => kv::Operation::Delete,
        // An expired key is told as a purge, as async-nats tells it.
        Some(_) => kv::Operation::Purge,
    };
    *seen_current |= info.pending == 0;
    Some(kv::Entry {
        bucket: bucket.to_owned(),
        key,
        value: message.payload.clone(),
        revision: info.stream_sequence,
        delta: info.pending,
        created: info.published,
        operation,
        seen_current: *seen_current,
    })
}

/// Opens a stream of items with `open` and hands each to `apply`, until
/// `cancel`; when the stream fails or ends, opens it again after a pause
/// that grows from 50 ms to 2 s while it keeps failing (and drops back to
/// 50 ms once an item comes). `position` is the reader's own state, which
/// `apply` moves on and `open` starts from, so a stream opened again picks
/// up where the last one left off (or replays, if `open` says so).
/// `what` names the stream in the log.
///
/// It opens the stream again only when the stream fails or ends: a
/// [`feed`] ends as soon as it may have lost its place.
/// (async-nats's ordered consumer ends on neither when its consumer dies
/// with a NATS node: it waits for two missed idle heartbeats, fixed at
/// 15 s, and makes itself again, following nothing meanwhile.)
///
/// Returns when cancelled; spawn it.
///
/// ```no_run
/// use aegis_sdk::{feed::feed, kv::reopening};
/// use async_nats::jetstream::consumer::DeliverPolicy;
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let stream = conn.jetstream().get_stream("EVENTS").await?;
/// let cancel = CancellationToken::new();
/// // Every order event from sequence 1 on, each once, across breaks.
/// reopening(
///     "order events",
///     1u64,
///     cancel,
///     |next| {
///         let (conn, stream, start_sequence) = (conn.clone(), stream.clone(), *next);
///         async move {
///             let deliver = DeliverPolicy::ByStartSequence { start_sequence };
///             let events = feed(&conn, &stream, "events.order.>", deliver).await;
///             Ok::<_, std::convert::Infallible>(events)
///         }
///     },
///     |next, message: async_nats::jetstream::Message| {
///         if let Ok(info) = message.info() {
///             *next = info.stream_sequence + 1;
///         }
///     },
/// )
/// .await;
/// # Ok(()) }
/// ```
pub async fn reopening<P, T, E, S, O, Fut, OpenError, A>(
    what: &str,
    position: P,
    cancel: CancellationToken,
    open: O,
    apply: A,
) where
    O: FnMut(&P) -> Fut,
    Fut: std::future::Future<Output = Result<S, OpenError>>,
    OpenError: std::fmt::Display,
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
    A: FnMut(&mut P, T),
{
    let items = reopened(
        what,
        position,
        None::<watch::Receiver<()>>,
        Reset::OnItem,
        open,
        apply,
    );
    until_cancelled(items, cancel).await;
}

/// [`reopening`], and woken: a change told on `wake` since the stream was
/// last opened ends the pause before the next opening, so the stream is
/// opened again at once when it ends (and at once, if it ended already and
/// the loop is pausing). Only the pause: the stream itself ends when it
/// should, on the same signal if need be (as below). A change told while
/// the stream is being opened is not lost (the loop takes the wake's
/// changes as seen just before each opening, not after it), and each
/// opening takes the changes told before it as seen: a wake ends one pause,
/// and the pauses after it grow as ever, however often the wake is told
/// (told many times between two openings, it is told once).
///
/// The risk service follows its fills so: a stream advisory that `EVENTS`
/// was created again ends its feed of fills, and the feed is made again on
/// the new stream within milliseconds, however long the pause had grown
/// while the old one kept breaking.
///
/// Returns when cancelled; spawn it.
///
/// ```no_run
/// use aegis_sdk::{feed::feed, kv::reopening_woken};
/// use async_nats::jetstream::consumer::DeliverPolicy;
/// use futures::StreamExt;
/// use tokio::sync::watch;
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let stream = conn.jetstream().get_stream("EVENTS").await?;
/// let cancel = CancellationToken::new();
/// // Told, say, when the stream is created again.
/// let (recreated, woken) = watch::channel(0u64);
/// let told = recreated.clone();
/// tokio::spawn(reopening_woken(
///     "order events",
///     1u64,
///     cancel.clone(),
///     woken,
///     move |next| {
///         let (conn, stream, start_sequence) = (conn.clone(), stream.clone(), *next);
///         // This feed ends on the next change told from here on, and the
///         // loop opens the next one without a pause.
///         let mut ends = told.subscribe();
///         async move {
///             let deliver = DeliverPolicy::ByStartSequence { start_sequence };
///             let events = feed(&conn, &stream, "events.order.>", deliver).await;
///             let told: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
///                 let _ = ends.changed().await;
///             });
///             Ok::<_, std::convert::Infallible>(events.take_until(told))
///         }
///     },
///     |next, message: async_nats::jetstream::Message| {
///         if let Ok(info) = message.info() {
///             *next = info.stream_sequence + 1;
///         }
///     },
/// ));
/// // ... and when the stream has been created again:
/// recreated.send_modify(|times| *times += 1);
/// # Ok(()) }
/// ```
pub async fn reopening_woken<P, T, E, S, O, Fut, OpenError, A, W>(
    what: &str,
    position: P,
    cancel: CancellationToken,
    wake: watch::Receiver<W>,
    open: O,
    apply: A,
) where
    O: FnMut(&P) -> Fut,
    Fut: std::future::Future<Output = Result<S, OpenError>>,
    OpenError: std::fmt::Display,
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
    A: FnMut(&mut P, T),
{
    let items = reopened(what, position, Some(wake), Reset::OnItem, open, apply);
    until_cancelled(items, cancel).await;
}

/// Drives `items` until `cancel` (they never end).
async fn until_cancelled(items: impl futures::Stream<Item = ()>, cancel: CancellationToken) {
    let mut items = std::pin::pin!(items);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            next = items.next() => if next.is_none() { return },
        }
    }
}

/// When the pause before opening a stream again drops back to the
/// shortest.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Reset {
    /// Whenever an item comes.
    OnItem,
    /// When a stream ends or fails after it stayed open this long: for a
    /// stream whose every opening hands over an item at once (a key's
    /// latest entry), which says nothing of whether it lasts.
    Lasted(Duration),
}

/// The loop under [`reopening`] and [`reopening_woken`], as a stream of
/// what `apply` returns for each item, for a reader that pulls (in a
/// `select!`, say) rather than hands each item on; it never ends. Opens
/// the stream with `open` from `position`, hands each item and `position`
/// to `apply`, and when the stream fails or ends opens it again after a
/// pause that grows from 50 ms to 2 s, dropping back to 50 ms as `reset`
/// says; a change on `wake` since the stream was last opened ends the
/// pause. `what` names the stream in the log.
pub(crate) fn reopened<P, T, E, S, O, Fut, OpenError, A, U, W>(
    what: &str,
    position: P,
    wake: Option<watch::Receiver<W>>,
    reset: Reset,
    open: O,
    apply: A,
) -> impl futures::Stream<Item = U>
where
    O: FnMut(&P) -> Fut,
    Fut: std::future::Future<Output = Result<S, OpenError>>,
    OpenError: std::fmt::Display,
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
    A: FnMut(&mut P, T) -> U,
{
    let loop_state = Reopened {
        what: what.to_owned(),
        position,
        wake,
        reset,
        open,
        apply,
        items: None,
        opened_at: tokio::time::Instant::now(),
        pause: FIRST_PAUSE,
    };
    futures::stream::unfold(loop_state, |mut loop_state| async move {
        let item = loop_state.next().await;
        Some((item, loop_state))
    })
}

/// [`reopened`]'s state.
struct Reopened<P, S, O, A, W> {
    what: String,
    position: P,
    wake: Option<watch::Receiver<W>>,
    reset: Reset,
    open: O,
    apply: A,
    /// The stream opened, until it fails or ends.
    items: Option<S>,
    opened_at: tokio::time::Instant,
    /// The pause before the next opening.
    pause: Duration,
}

impl<P, T, E, S, O, Fut, OpenError, A, U, W> Reopened<P, S, O, A, W>
where
    O: FnMut(&P) -> Fut,
    Fut: std::future::Future<Output = Result<S, OpenError>>,
    OpenError: std::fmt::Display,
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
    A: FnMut(&mut P, T) -> U,
{
    /// What `apply` makes of the next item, opening the stream (again)
    /// as often as it takes.
    async fn next(&mut self) -> U {
        let what = self.what.as_str();
        loop {
            let items = match &mut self.items {
                Some(items) => items,
                None => {
                    // Changes told from here on, while the stream is being
                    // opened too, end the pause after it.
                    if let Some(wake) = &mut self.wake {
                        wake.mark_unchanged();
                    }
                    match (self.open)(&self.position).await {
                        Ok(items) => {
                            self.opened_at = tokio::time::Instant::now();
                            self.items.insert(items)
                        }
                        Err(e) => {
                            warn!(error = %e, what, "cannot open; retrying");
                            pause(&mut self.pause, &mut self.wake).await;
                            continue;
                        }
                    }
                }
            };
            match items.next().await {
                Some(Ok(item)) => {
                    if let Reset::OnItem = self.reset {
                        self.pause = FIRST_PAUSE;
                    }
                    return (self.apply)(&mut self.position, item);
                }
                Some(Err(e)) => {
                    debug!(error = %e, what, "interrupted; opening it again");
                }
                None => {}
            }
            self.items = None;
            if let Reset::Lasted(steady) = self.reset
                && self.opened_at.elapsed() >= steady
            {
                self.pause = FIRST_PAUSE;
            }
            pause(&mut self.pause, &mut self.wake).await;
        }
    }
}

/// Waits `pause`, or until `wake` tells a change it has not seen, and
/// doubles `pause` up to [`MAX_PAUSE`].
async fn pause<W>(pause: &mut Duration, wake: &mut Option<watch::Receiver<W>>) {
    let woken = async {
        // A wake whose sender is gone tells nothing more.
        if let Some(wake) = wake
            && wake.changed().await.is_ok()
        {
            return;
        }
        std::future::pending().await
    };
    tokio::select! {
        () = tokio::time::sleep(*pause) => {}
        () = woken => {}
    }
    *pause = (*pause * 2).min(MAX_PAUSE);
}
