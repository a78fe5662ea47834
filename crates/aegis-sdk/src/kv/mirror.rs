//! [`mirror`]: the latest value of every watched key of a bucket, handed to
//! a reader on the watch the SDK's registry and election views run on
//! (`crate::kv_watch`).

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
};

use async_nats::jetstream::context::KeyValueError;
use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    Connection,
    kv_watch::{self, KvEntry, Removal, Scope, Sink},
};

/// What a mirror's consumer calls itself, and its name in the log.
const DESCRIPTION: &str = "aegis KV mirror";

/// One key's latest value, as [`mirror`] hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MirroredEntry {
    /// The key, without the bucket's prefix.
    pub key: String,
    /// Its value.
    pub value: Bytes,
    /// Its revision in the bucket.
    pub revision: u64,
}

impl MirroredEntry {
    /// An entry, as a reader's tests make one.
    ///
    /// ```
    /// let entry = aegis_sdk::kv::MirroredEntry::new("limits", "{}", 7);
    /// assert_eq!((entry.key.as_str(), entry.revision), ("limits", 7));
    /// ```
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>, revision: u64) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            revision,
        }
    }
}

/// Why [`mirror`] did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// `keys` was empty: name the keys to follow (`>` for all).
    #[error("no keys to mirror: give a key or a filter (`>` for every key)")]
    NoKeys,
    /// The bucket could not be looked up.
    #[error("cannot look up the bucket to mirror")]
    Bucket(#[source] KeyValueError),
}

/// What [`mirror`] tells its reader, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mirrored {
    /// The latest value of every watched key, replacing everything handed
    /// over before: first when the mirror starts, and again each time its
    /// watch opens after a break. A key handed over before and missing
    /// here was removed meanwhile.
    Loaded {
        /// Every watched key that has a value.
        entries: Vec<MirroredEntry>,
        /// The bucket was created again since the last load: its revisions
        /// started over, so they may be at or below ones seen before.
        fresh: bool,
        /// Read from the bucket's replicas while no watch could open yet
        /// (JetStream electing leaders after a node died): a replica may be
        /// a few writes behind. A watch's own load follows once it opens.
        snapshot: bool,
        /// The highest revision the load covers, removal markers included
        /// (0 for an empty bucket): a write at or below it is in
        /// `entries`, or was replaced or removed before the load.
        through: u64,
    },
    /// A key was written: seen on the watch, or, while the watch is broken,
    /// read from the bucket's replicas (only what is newer than what the
    /// reader was told).
    Put(MirroredEntry),
    /// A key was deleted, purged or expired by the marker stored at
    /// `revision`.
    Removed {
        /// The key, without the bucket's prefix.
        key: String,
        /// The marker's revision.
        revision: u64,
        /// How the key left the bucket.
        how: Removal,
    },
    /// The watch broke: what was handed over stands, perhaps behind, until
    /// the next [`Mirrored::Loaded`].
    Broken,
}

/// Keeps `apply` current with the latest value of every key of `bucket`
/// that matches `keys` (NATS wildcards allowed; `>` for all), until
/// `cancel`: a [`Mirrored::Loaded`] first, then each change.
///
/// The watch under it is the one the SDK's registry and election views
/// run on. It notices a break within three seconds even when nothing is
/// written (the server proves it alive every second; a bucket deleted
/// under it, within about one and a quarter), opens again soon
/// after JetStream answers (each attempt at most 2 s, a pause of at most
/// 1 s between them), and loads every key again when it does. While it
/// cannot open (JetStream creates no consumers while its cluster elects a
/// meta leader, 4-9 s after that leader's node died), the bucket's
/// replicas are read every half second, and what is newer is handed over:
/// writes made in that window (a sticky group's new leader) reach the
/// reader within a second. [`follow`](super::follow), which reads no
/// replicas, hands them over once JetStream makes consumers again.
///
/// Waits for the bucket's lookup (up to half a second; a bucket whose
/// stream is electing a leader is looked up again in the background, its
/// replicas read meanwhile), then runs in a task of its own.
///
/// ```no_run
/// use aegis_sdk::kv::{Mirrored, mirror};
/// use tokio_util::sync::CancellationToken;
///
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), Box<dyn std::error::Error>> {
/// let cancel = CancellationToken::new();
/// mirror(&conn, "risk_limits", ">", cancel.clone(), |update| match update {
///     Mirrored::Loaded { entries, .. } => println!("{} limits", entries.len()),
///     Mirrored::Put(entry) => println!("{} is now revision {}", entry.key, entry.revision),
///     Mirrored::Removed { key, .. } => println!("{key} removed"),
///     _ => {}
/// })
/// .await?;
/// // ... and on the way out:
/// cancel.cancel();
/// # Ok(()) }
/// ```
///
/// `apply` runs on the mirror's task, one update at a time: it must not
/// block (hand the update to a channel if it has more to do). It may be
/// called once more just after `cancel`.
///
/// # Errors
/// [`MirrorError::NoKeys`] for an empty `keys`; [`MirrorError::Bucket`]
/// when the bucket's lookup answered with an error within half a second
/// (no such bucket, or no permission to read it). Nothing runs then. A
/// lookup not answered by then is asked again in the background, and its
/// failures are logged and retried, not returned.
pub async fn mirror<F>(
    conn: &Connection,
    bucket: &'static str,
    keys: impl Into<String>,
    cancel: CancellationToken,
    apply: F,
) -> Result<(), MirrorError>
where
    F: FnMut(Mirrored) + Send + 'static,
{
    let keys = keys.into();
    if keys.is_empty() {
        return Err(MirrorError::NoKeys);
    }
    // The scope never changes: the task holds its sender.
    let (keys, scope) = watch::channel(Scope {
        generation: 0,
        keys: vec![keys],
    });
    let sink = std::sync::Arc::new(Reader::new(apply, keys));
    kv_watch::start(
        move |js| async move { js.get_key_value(bucket).await },
        kv_watch::Watch {
            bucket,
            description: DESCRIPTION,
            reader: kv_watch::Reader {
                js: conn.jetstream().clone(),
                client: conn.client().clone(),
                drops: conn.drop_watch(),
            },
            scope,
            sink,
            cancel,
        },
    )
    .await
    .map(|_lookup| ())
    .map_err(MirrorError::Bucket)
}

/// The watch's sink: turns what the watch hands over into [`Mirrored`].
struct Reader<F> {
    state: Mutex<State<F>>,
}

struct State<F> {
    apply: F,
    /// A load handed over and not yet told (entries, fresh, through): a
    /// watch's load is told once it is complete (`on_synced`), a snapshot
    /// once marked as one.
    loading: Option<(Vec<KvEntry>, bool, u64)>,
    /// Told [`Mirrored::Broken`] since the last load: told once per break.
    broken: bool,
    /// The revision of every key the reader was told of (a removal's is
    /// its marker's), so that a refresh tells only what is newer.
    known: HashMap<String, u64>,
    /// The scope's sender, so that it stays open while the mirror runs.
    _keys: watch::Sender<Scope>,
}

impl<F> State<F> {
    /// The watch handed over `key` at `revision`.
    fn seen(&mut self, key: &str, revision: u64) {
        self.known.insert(key.to_owned(), revision);
    }
}

impl<F: FnMut(Mirrored)> Reader<F> {
    /// A reader told nothing yet, holding the sender of its scope `keys`.
    fn new(apply: F, keys: watch::Sender<Scope>) -> Self {
        Self {
            state: Mutex::new(State {
                apply,
                loading: None,
                broken: false,
                known: HashMap::new(),
                _keys: keys,
            }),
        }
    }

    fn tell_load(&self, snapshot: bool) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((entries, fresh, through)) = state.loading.take() {
            state.broken = false;
            state.known = entries
                .iter()
                .map(|e| (e.key.clone(), e.revision))
                .collect();
            (state.apply)(Mirrored::Loaded {
                entries: entries.into_iter().map(mirrored).collect(),
                fresh,
                snapshot,
                through,
            });
        }
    }
}

fn mirrored(entry: KvEntry) -> MirroredEntry {
    MirroredEntry {
        key: entry.key,
        value: entry.value,
        revision: entry.revision,
    }
}

impl<F: FnMut(Mirrored) + Send + 'static> Sink for Reader<F> {
    fn on_session(&self, _consumer: String) {}

    fn on_load(&self, entries: Vec<KvEntry>, fresh: bool, through: u64) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .loading = Some((entries, fresh, through));
    }

    fn on_put(&self, entry: KvEntry) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.seen(&entry.key, entry.revision);
        (state.apply)(Mirrored::Put(mirrored(entry)));
    }

    fn on_remove(&self, key: &str, removal: Removal, revision: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.seen(key, revision);
        (state.apply)(Mirrored::Removed {
            key: key.to_owned(),
            revision,
            how: removal,
        });
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn on_refresh(&self, entries: Vec<KvEntry>, floor: u64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            let above = state.known.get(&entry.key).copied().unwrap_or(floor);
            if entry.revision > above {
                state.known.insert(entry.key.clone(), entry.revision);
                (state.apply)(Mirrored::Put(mirrored(entry)));
            }
        }
    }

    fn on_applied(&self, _consumer_sequence: u64) {}

    fn on_synced(&self) {
        self.tell_load(false);
    }

    fn on_snapshot(&self) {
        self.tell_load(true);
    }

    fn on_broken(&self) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !std::mem::replace(&mut state.broken, true) {
            (state.apply)(Mirrored::Broken);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn entry(key: &str, revision: u64) -> KvEntry {
        KvEntry {
            key: key.to_owned(),
            value: Bytes::from(format!("{key}@{revision}")),
            revision,
        }
    }

    /// What a test reader was told.
    type Told = Arc<Mutex<Vec<Mirrored>>>;

    fn reader() -> (Reader<impl FnMut(Mirrored) + Send>, Told) {
        let told = Arc::new(Mutex::new(Vec::new()));
        let sink = told.clone();
        let (keys, _) = watch::channel(Scope::default());
        let reader = Reader::new(move |u| sink.lock().unwrap().push(u), keys);
        (reader, told)
    }

    fn puts(told: &Mutex<Vec<Mirrored>>) -> Vec<(String, u64)> {
        told.lock()
            .unwrap()
            .drain(..)
            .filter_map(|u| match u {
                Mirrored::Put(e) => Some((e.key, e.revision)),
                _ => None,
            })
            .collect()
    }

    /// A refresh reads a replica, which may be behind: only what is newer
    /// than what the reader was told is handed over, once.
    #[test]
    fn a_refresh_hands_over_only_what_is_newer() {
        let (reader, told) = reader();
        reader.on_load(vec![entry("a", 3), entry("b", 5)], false, 5);
        reader.on_synced();
        reader.on_remove("b", Removal::Deleted, 6);
        told.lock().unwrap().clear();
        // The watch was handed the bucket up to 6 ("e", removed at 6
        // before the load, is not in it): the floor of the first refresh.

        reader.on_refresh(
            vec![
                entry("a", 3), // what the reader has
                entry("b", 5), // removed since, at 6: a replica behind
                entry("c", 4), // a key the reader never had, older than 6
                entry("e", 6), // removed before the load: a replica behind
                entry("d", 7), // written while the watch was broken
                entry("a", 8), // so was this
            ],
            6,
        );
        assert_eq!(puts(&told), vec![("d".into(), 7), ("a".into(), 8)]);
        // That read went up to 9, the floor of the next ones.
        reader.on_refresh(vec![entry("a", 8), entry("d", 7)], 9);
        assert!(puts(&told).is_empty(), "told twice");
        // A replica further behind than the last read cannot bring back a
        // key that read went past.
        reader.on_refresh(vec![entry("f", 9)], 9);
        assert!(puts(&told).is_empty(), "a key read past came back");
    }

    #[test]
    fn a_load_is_told_when_complete_and_a_break_once() {
        let (reader, told) = reader();
        reader.on_load(vec![entry("a", 1)], false, 1);
        assert!(told.lock().unwrap().is_empty(), "told before complete");
        reader.on_snapshot();
        reader.on_broken();
        reader.on_broken();
        reader.on_load(vec![entry("a", 2)], true, 2);
        reader.on_synced();
        let told = told.lock().unwrap();
        assert!(
            matches!(
                told.as_slice(),
                [
                    Mirrored::Loaded {
                        snapshot: true,
                        fresh: false,
                        ..
                    },
                    Mirrored::Broken,
                    Mirrored::Loaded {
                        snapshot: false,
                        fresh: true,
                        ..
                    },
                ]
            ),
            "{told:?}"
        );
    }
}
