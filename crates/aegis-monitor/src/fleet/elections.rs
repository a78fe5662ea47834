//! Who holds each sticky group's election key: one watch on the
//! `service_elections` bucket (keys `sticky-active.{service}.{group}`),
//! turned into [`LeaderChange`]s for the fleet task.
//!
//! The watch is an ordered consumer that first replays the newest entry of
//! every key, then follows every change (renewals included, about ten a
//! second per group). When it breaks it is re-opened, which replays again;
//! the fleet keeps the newest revision per key, so replays change nothing.

use std::time::Duration;

use aegis_contracts::subjects;
use aegis_sdk::election::LeaderRecord;
use async_nats::jetstream::kv::{self, Operation};
use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

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
    /// The holder's lease (zero when the record does not say).
    pub(crate) lease: Duration,
    /// When the holder says it wrote this renewal (its clock: shown, never
    /// used to decide anything).
    pub(crate) renewed_at: Option<DateTime<Utc>>,
}

/// Turns one KV entry into a change (`None` for keys outside the layout).
pub(crate) fn change_of(entry: &kv::Entry) -> Option<LeaderChange> {
    let (service, group) = subjects::parse_election_key(&entry.key)?;
    let record = match entry.operation {
        Operation::Put => serde_json::from_slice::<LeaderRecord>(&entry.value).ok(),
        Operation::Delete | Operation::Purge => None,
    };
    let lease = record
        .as_ref()
        .map_or(Duration::ZERO, |r| Duration::from_millis(r.lease_ms));
    let renewed_at = record
        .as_ref()
        .and_then(|r| DateTime::parse_from_rfc3339(&r.renewed_at).ok())
        .map(|t| t.with_timezone(&Utc));
    // The winning write carries epoch 0 (its revision was not known yet):
    // its own revision is the epoch.
    let holder = record.map(|r| {
        let epoch = if r.epoch == 0 {
            entry.revision
        } else {
            r.epoch
        };
        (r.instance_id, epoch)
    });
    Some(LeaderChange {
        service,
        group,
        revision: entry.revision,
        holder,
        lease,
        renewed_at,
    })
}

/// Opens (or creates) the election bucket, sends the newest entry of every
/// key, and returns once those are sent (5 s at most); a task then follows
/// the bucket ([`aegis_sdk::kv::follow`], replaying after a break) and keeps
/// sending changes until `cancel`.
pub(crate) async fn follow(
    js: &async_nats::jetstream::Context,
    replicas: usize,
    tx: mpsc::UnboundedSender<LeaderChange>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), aegis_sdk::election::ElectionError> {
    let store = aegis_sdk::election::ensure_election_bucket(js, replicas).await?;
    // The initial replay is done when an entry says nothing is pending, or
    // at once for a bucket without messages.
    let stored = store
        .stream
        .clone()
        .info()
        .await
        .map(|i| i.state.messages)
        .unwrap_or(1);
    let (loaded, load) = tokio::sync::oneshot::channel();
    let mut loaded = (stored > 0).then_some(loaded);
    // Stops following when nobody reads the changes any more.
    let stop = cancel.child_token();
    let unread = stop.clone();
    tasks.spawn(aegis_sdk::kv::follow(
        store,
        format!("{KEY_PREFIX}>"),
        aegis_sdk::kv::Resume::Replay,
        stop,
        move |entry| {
            let last = entry.delta == 0;
            if let Some(change) = change_of(&entry)
                && tx.send(change).is_err()
            {
                unread.cancel();
            }
            if last && let Some(loaded) = loaded.take() {
                let _ = loaded.send(());
            }
        },
    ));
    if stored > 0
        && tokio::time::timeout(Duration::from_secs(5), load)
            .await
            .is_err()
    {
        warn!("the election keys did not load within 5 s; continuing with what arrived");
    }
    Ok(())
}
