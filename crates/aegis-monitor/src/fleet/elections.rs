//! Who holds each sticky group's election key: one watch on the
//! `service_elections` bucket (keys `sticky-active.{service}.{group}`),
//! turned into [`LeaderChange`]s for the fleet task.
//!
//! The watch ([`aegis_sdk::kv::mirror`]) first loads the newest entry of
//! every key, then follows every change (renewals included, about ten a
//! second per group). When it breaks it is opened again as soon as
//! JetStream answers, which loads every key again; the fleet keeps the
//! newest revision per key, so a load changes nothing but what changed
//! meanwhile, and a key the load no longer has is told removed.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aegis_contracts::subjects;
use aegis_sdk::{Connection, election::LeaderRecord, kv::Mirrored};
use async_nats::jetstream::{kv, stream::LastRawMessageErrorKind};
use chrono::{DateTime, Utc};
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
    /// The holder's lease (zero when the record does not say).
    pub(crate) lease: Duration,
    /// When the holder says it wrote this renewal (its clock: shown, never
    /// used to decide anything).
    pub(crate) renewed_at: Option<DateTime<Utc>>,
}

/// What the fleet task is told of the election keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaderEvent {
    /// The bucket was created again: its revisions start over, so every
    /// holder known from the old one goes (the new load's changes follow).
    Reset,
    /// A change of one key.
    Change(LeaderChange),
    /// The answer to a read of one group's key from its stream's leader
    /// ([`read_key`]), asked at `asked` because a record claimed a lead
    /// the key as last seen does not give; `change` is `Ok(None)` when the
    /// key never held anything, and an error when the read failed (no
    /// answer: it says nothing of the key).
    Checked {
        service: String,
        group: String,
        asked: Instant,
        change: Result<Option<LeaderChange>, ReadFailed>,
        /// The bucket's generation when asked (see `KeyChecks`): a read
        /// of a bucket created again since says nothing.
        generation: u64,
    },
}

/// Turns one key's value (`None`: removed) at `revision` into a change
/// (`None` for keys outside the layout).
pub(crate) fn change_of(key: &str, value: Option<&[u8]>, revision: u64) -> Option<LeaderChange> {
    let (service, group) = subjects::parse_election_key(key)?;
    let record = value.and_then(|v| serde_json::from_slice::<LeaderRecord>(v).ok());
    let lease = record
        .as_ref()
        .map_or(Duration::ZERO, |r| Duration::from_millis(r.lease_ms));
    let renewed_at = record
        .as_ref()
        .and_then(|r| DateTime::parse_from_rfc3339(&r.renewed_at).ok())
        .map(|t| t.with_timezone(&Utc));
    let holder = record.map(|r| {
        let epoch = r.epoch_at(revision);
        (r.instance_id, epoch)
    });
    Some(LeaderChange {
        service,
        group,
        revision,
        holder,
        lease,
        renewed_at,
    })
}

/// Turns what the mirror of the election keys hands over into changes:
/// each key of a load and each change, and for a key that a load no
/// longer has (removed while the watch was broken) a removal.
#[derive(Debug, Default)]
struct Changes {
    /// The revision of every key the fleet was told of, and not told
    /// removed since.
    known: HashMap<String, u64>,
}

impl Changes {
    fn of(&mut self, update: Mirrored) -> Vec<LeaderEvent> {
        self.changes(update)
            .into_iter()
            .map(|change| change.map_or(LeaderEvent::Reset, LeaderEvent::Change))
            .collect()
    }

    /// The changes an update makes, a reset as `None`.
    fn changes(&mut self, update: Mirrored) -> Vec<Option<LeaderChange>> {
        match update {
            Mirrored::Loaded { entries, fresh, .. } => {
                let mut changes = Vec::with_capacity(entries.len() + 1);
                if fresh {
                    // Revisions started over: nothing known survives.
                    self.known.clear();
                    changes.push(None);
                }
                let mut gone = std::mem::take(&mut self.known);
                for entry in entries {
                    gone.remove(&entry.key);
                    self.known.insert(entry.key.clone(), entry.revision);
                    changes.extend(
                        change_of(&entry.key, Some(&entry.value), entry.revision).map(Some),
                    );
                }
                // Removed at a revision the load does not say, above the
                // last one seen; any later write of the key is higher
                // still (it comes after the removal).
                for (key, revision) in gone {
                    changes.extend(change_of(&key, None, revision + 1).map(Some));
                }
                changes
            }
            Mirrored::Put(entry) => {
                self.known.insert(entry.key.clone(), entry.revision);
                change_of(&entry.key, Some(&entry.value), entry.revision)
                    .map(Some)
                    .into_iter()
                    .collect()
            }
            Mirrored::Removed { key, revision, .. } => {
                self.known.remove(&key);
                change_of(&key, None, revision)
                    .map(Some)
                    .into_iter()
                    .collect()
            }
            _ => Vec::new(),
        }
    }
}

/// A read of one election key that got no answer: it timed out, or
/// JetStream answered with an error (the monitor's connection
/// reconnecting, the stream choosing a leader or catching up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadFailed;

/// How long a read of one key ([`read_key`]) may take.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads `group`'s key from its stream's leader, which has every write it
/// confirmed (a replica, or the watch while it opens again after a NATS
/// node died, may not): the key's change, a removal included; `Ok(None)`
/// when the key never held anything, [`ReadFailed`] when the read got no
/// answer.
pub(crate) async fn read_key(
    bucket: &kv::Store,
    service: &str,
    group: &str,
) -> Result<Option<LeaderChange>, ReadFailed> {
    let key = subjects::election_key(service, group);
    let subject = format!("{}{key}", bucket.prefix);
    let read = tokio::time::timeout(
        READ_TIMEOUT,
        bucket.stream.get_last_raw_message_by_subject(&subject),
    )
    .await;
    let message = match read {
        Ok(Ok(message)) => message,
        Ok(Err(e)) if e.kind() == LastRawMessageErrorKind::NoMessageFound => return Ok(None),
        Ok(Err(e)) => {
            debug!(key, error = %aegis_sdk::startup::Causes(&e), "could not read an election key");
            return Err(ReadFailed);
        }
        Err(_) => {
            debug!(key, "reading an election key timed out");
            return Err(ReadFailed);
        }
    };
    // A delete or purge marker, or the server's marker of an expired key.
    let removed = aegis_sdk::kv::removal_of(&message.headers).is_some();
    Ok(change_of(
        &key,
        (!removed).then_some(&message.payload[..]),
        message.sequence,
    ))
}

/// Creates the election bucket if it is missing, mirrors its keys
/// ([`aegis_sdk::kv::mirror`]: current again as soon as JetStream is, after
/// a NATS node dies), sends the newest holder of every key and every
/// change to `tx` until `cancel` or until nobody reads them, and returns
/// the bucket (for [`read_key`]) once the first load is sent (5 s at most).
pub(crate) async fn follow(
    conn: &Connection,
    tx: mpsc::UnboundedSender<LeaderEvent>,
    cancel: CancellationToken,
) -> Result<kv::Store, aegis_sdk::election::ElectionError> {
    let bucket =
        aegis_sdk::election::ensure_election_bucket(conn.jetstream(), conn.config().nats.replicas)
            .await?;
    let (loaded, load) = tokio::sync::oneshot::channel();
    let mut loaded = Some(loaded);
    // Stops following when nobody reads the changes any more.
    let stop = cancel.child_token();
    let unread = stop.clone();
    let mut changes = Changes::default();
    aegis_sdk::kv::mirror(
        conn,
        subjects::ELECTIONS_BUCKET,
        format!("{KEY_PREFIX}>"),
        stop,
        move |update| {
            let load_done = matches!(update, Mirrored::Loaded { .. });
            for change in changes.of(update) {
                if tx.send(change).is_err() {
                    unread.cancel();
                }
            }
            if load_done && let Some(loaded) = loaded.take() {
                let _ = loaded.send(());
            }
        },
    )
    .await
    .map_err(|e| aegis_sdk::election::ElectionError::Bucket(e.into()))?;
    if tokio::time::timeout(Duration::from_secs(5), load)
        .await
        .is_err()
    {
        warn!("the election keys did not load within 5 s; continuing with what arrived");
    }
    Ok(bucket)
}

#[cfg(test)]
mod tests {
    use aegis_sdk::kv::{MirroredEntry, Removal};

    use super::*;

    const KEY: &str = "sticky-active.order-service.default";
    const OTHER: &str = "sticky-active.risk-service.default";

    fn record(instance: &str, epoch: u64) -> String {
        serde_json::to_string(&LeaderRecord {
            instance_id: instance.to_owned(),
            epoch,
            lease_ms: 2000,
            renewed_at: "2026-12-03T18:00:00Z".to_owned(),
        })
        .unwrap()
    }

    fn put(key: &str, instance: &str, revision: u64) -> MirroredEntry {
        MirroredEntry::new(key, record(instance, revision), revision)
    }

    fn told(events: &[LeaderEvent]) -> Vec<(String, u64, Option<String>)> {
        let mut told: Vec<_> = events
            .iter()
            .map(|event| {
                let LeaderEvent::Change(c) = event else {
                    return ("(reset)".to_owned(), 0, None);
                };
                (
                    c.service.clone(),
                    c.revision,
                    c.holder.as_ref().map(|h| h.0.clone()),
                )
            })
            .collect();
        told.sort();
        told
    }

    /// A key a load no longer has was removed while the watch was broken:
    /// the fleet is told so, above the last revision it saw, so that any
    /// later write of the key (higher still) is taken.
    #[test]
    fn a_key_a_load_lacks_is_told_removed() {
        let mut changes = Changes::default();
        let first = changes.of(Mirrored::Loaded {
            entries: vec![put(KEY, "order-1", 4), put(OTHER, "risk-1", 5)],
            fresh: false,
            snapshot: false,
            through: 5,
        });
        assert_eq!(told(&first).len(), 2);
        let again = changes.of(Mirrored::Loaded {
            entries: vec![put(KEY, "order-2", 9)],
            fresh: false,
            snapshot: false,
            through: 9,
        });
        assert_eq!(
            told(&again),
            vec![
                ("order-service".into(), 9, Some("order-2".into())),
                ("risk-service".into(), 6, None),
            ]
        );
        let removed = changes.of(Mirrored::Removed {
            key: KEY.into(),
            revision: 11,
            how: Removal::Deleted,
        });
        assert_eq!(told(&removed), vec![("order-service".into(), 11, None)]);
        // Nothing known is left to be told removed.
        let empty = changes.of(Mirrored::Loaded {
            entries: vec![],
            fresh: false,
            snapshot: false,
            through: 11,
        });
        assert!(empty.is_empty(), "{empty:?}");
    }

    /// A bucket created again starts its revisions over: the fleet is told
    /// to forget every holder first, and no removal is made up for keys of
    /// the old bucket.
    #[test]
    fn a_fresh_load_resets_first() {
        let mut changes = Changes::default();
        changes.of(Mirrored::Loaded {
            entries: vec![put(KEY, "order-1", 40), put(OTHER, "risk-1", 41)],
            fresh: false,
            snapshot: false,
            through: 41,
        });
        let fresh = changes.of(Mirrored::Loaded {
            entries: vec![put(KEY, "order-2", 2)],
            fresh: true,
            snapshot: false,
            through: 2,
        });
        assert_eq!(fresh.first(), Some(&LeaderEvent::Reset));
        assert_eq!(
            told(&fresh[1..]),
            vec![("order-service".into(), 2, Some("order-2".into()))]
        );
        // Keys outside the layout make no event, and no reset.
        let outside = changes.of(Mirrored::Put(MirroredEntry::new("elsewhere", "x", 3)));
        assert!(outside.is_empty(), "{outside:?}");
    }

    #[test]
    fn a_winning_write_takes_its_revision_as_its_epoch() {
        let first = record("order-1", 0);
        let change = change_of(KEY, Some(first.as_bytes()), 12).expect("an election key");
        assert_eq!(change.holder, Some(("order-1".to_owned(), 12)));
        assert_eq!(change.lease, Duration::from_secs(2));
        assert!(change_of("elsewhere", None, 1).is_none());
    }
}
