//! Who holds each sticky group's election key: one watch on the
//! `service_elections` bucket (keys `sticky-active.{service}.{group}`),
//! turned into [`LeaderChange`]s for the fleet task.
//!
//! The watch is an ordered consumer that first replays the newest entry of
//! every key, then follows every change (renewals included, about ten a
//! second per group). When it breaks it is re-opened, which replays again;
//! the fleet keeps the newest revision per key, so replays change nothing.

use std::time::Duration;

use aegis_contracts::subjects::{self, ELECTIONS_BUCKET};
use aegis_sdk::election::LeaderRecord;
use async_nats::jetstream::kv::{self, Operation};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// The key prefix of election keys.
const KEY_PREFIX: &str = "sticky-active.";

/// A change of one group's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaderChange {
    pub(crate) service: String,
    pub(crate) group: String,
    /// The key's revision (renewals raise it; stale ones are ignored).
    pub(crate) revision: u64,
    /// The holder and its fencing epoch; `None` after a resignation.
    pub(crate) holder: Option<(String, u64)>,
}

/// Turns one KV entry into a change (`None` for keys outside the layout).
pub(crate) fn change_of(entry: &kv::Entry) -> Option<LeaderChange> {
    let (service, group) = subjects::parse_election_key(&entry.key)?;
    let holder = match entry.operation {
        Operation::Put => serde_json::from_slice::<LeaderRecord>(&entry.value)
            .ok()
            // The winning write carries epoch 0 (its revision was not known
            // yet): its own revision is the epoch.
            .map(|r| {
                let epoch = if r.epoch == 0 {
                    entry.revision
                } else {
                    r.epoch
                };
                (r.instance_id, epoch)
            }),
        Operation::Delete | Operation::Purge => None,
    };
    Some(LeaderChange {
        service,
        group,
        revision: entry.revision,
        holder,
    })
}

/// Opens (or creates) the election bucket, sends the newest entry of every
/// key, and returns once those are sent; a task then follows the bucket and
/// keeps sending changes until `cancel`.
pub(crate) async fn follow(
    js: &async_nats::jetstream::Context,
    replicas: usize,
    tx: mpsc::UnboundedSender<LeaderChange>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), aegis_sdk::election::ElectionError> {
    let store = aegis_sdk::election::ensure_election_bucket(js, replicas).await?;
    let mut watch = open(&store).await;
    // The initial replay: done when an entry says nothing is pending, or at
    // once for a bucket without messages.
    let stored = store
        .stream
        .clone()
        .info()
        .await
        .map(|i| i.state.messages)
        .unwrap_or(1);
    if stored > 0
        && let Some(entries) = watch.as_mut()
    {
        let load = async {
            while let Some(Ok(entry)) = entries.next().await {
                let last = entry.delta == 0;
                if let Some(change) = change_of(&entry) {
                    let _ = tx.send(change);
                }
                if last {
                    return;
                }
            }
        };
        if tokio::time::timeout(Duration::from_secs(5), load)
            .await
            .is_err()
        {
            warn!("the election keys did not load within 5 s; continuing with what arrived");
        }
    }
    tasks.spawn(async move {
        let mut pause = Duration::from_millis(100);
        loop {
            if let Some(mut entries) = watch.take() {
                loop {
                    let next = tokio::select! {
                        () = cancel.cancelled() => return,
                        next = entries.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => {
                            pause = Duration::from_millis(100);
                            if let Some(change) = change_of(&entry)
                                && tx.send(change).is_err()
                            {
                                return;
                            }
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, "election watch interrupted; re-opening");
                            break;
                        }
                        None => break,
                    }
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(2));
            watch = open(&store).await;
        }
    });
    Ok(())
}

async fn open(store: &kv::Store) -> Option<kv::Watch> {
    match store.watch_with_history(format!("{KEY_PREFIX}>")).await {
        Ok(w) => Some(w),
        Err(e) => {
            warn!(error = %e, bucket = ELECTIONS_BUCKET, "cannot watch the election keys; retrying");
            None
        }
    }
}
