//! Following a JetStream KV bucket for as long as a process runs.
//!
//! [`follow`] hands every entry of the watched keys to a closure: first the
//! latest value of each key, then every change as it lands. When the watch
//! breaks (its server node died, the client reconnected, the bucket's stream
//! moved its leader) it is opened again with back-off, as often as it takes,
//! until cancelled. The example services follow their own buckets with it
//! and the monitor follows the election and definition buckets.
//!
//! The SDK's registry and election views run on a stricter watch of their
//! own (idle heartbeats, sequence gaps, a bucket created again); this one
//! is for state whose reader can take a replay.

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The pause before the first re-open; it doubles up to [`MAX_PAUSE`] while
/// the watch cannot be opened or breaks again at once.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
/// The longest pause between two attempts to open the watch.
const MAX_PAUSE: Duration = Duration::from_secs(2);

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
/// Returns when cancelled; spawn it.
///
/// ```no_run
/// use aegis_sdk::kv::{Resume, follow};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let limits = conn.jetstream().get_key_value("risk_limits").await?;
/// let cancel = CancellationToken::new();
/// tokio::spawn(follow(limits, "limits", Resume::Replay, cancel.clone(), |entry| {
///     println!("{} is now revision {}", entry.key, entry.revision);
/// }));
/// // ... and on the way out:
/// cancel.cancel();
/// # Ok(()) }
/// ```
pub async fn follow<F>(
    store: kv::Store,
    filter: impl Into<String>,
    resume: Resume,
    cancel: CancellationToken,
    mut apply: F,
) where
    F: FnMut(kv::Entry),
{
    let filter = filter.into();
    let mut last: Option<u64> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        let opened = match (resume, last) {
            (Resume::AfterLast, Some(revision)) => {
                store.watch_from_revision(&filter, revision + 1).await
            }
            _ => store.watch_with_history(&filter).await,
        };
        match opened {
            Ok(mut entries) => loop {
                let next = tokio::select! {
                    () = cancel.cancelled() => return,
                    next = entries.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        pause = FIRST_PAUSE;
                        last = Some(entry.revision);
                        apply(entry);
                    }
                    Some(Err(e)) => {
                        debug!(error = %e, bucket = %store.name, %filter, "KV watch interrupted; opening it again");
                        break;
                    }
                    None => break,
                }
            },
            Err(e) => {
                warn!(error = %e, bucket = %store.name, %filter, "cannot watch the KV bucket; retrying");
            }
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
