//! A view's start: its bucket's lookup, bounded, then the watch.
//!
//! A watch needs its bucket's store, and finding it takes a JetStream
//! lookup (STREAM.INFO) that only the bucket's stream leader answers.
//! [`start`] waits [`LOOKUP_BEFORE_SNAPSHOT`] for it: found, the watch
//! runs on the store. Not answered (the node that led the stream died and
//! its followers are electing another, 4-9 s), the view loads its keys from
//! the bucket's replicas by the bucket's name ([`super::snapshot`]) while
//! the lookup is asked again in the background ([`run_when_found`]), and
//! the watch opens once it answers. What the lookups found, or why they
//! failed, is kept in a [`Lookup`] the view holds.
//!
//! The registry view (`registry/cache.rs`) and the election view
//! (`election/view.rs`) both start this way.

use std::{
    fmt::Display,
    future::Future,
    sync::{Arc, Mutex, OnceLock, PoisonError},
    time::Duration,
};

use async_nats::{
    Client,
    jetstream::{self, kv, stream::Stream},
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{
    RETRY_INITIAL, RETRY_MAX, Scope, Sink,
    snapshot::{self, BucketNames},
};
use crate::connection::DropWatch;

/// How long a view's start waits for its bucket's lookup before it loads
/// the view from the bucket's replicas meanwhile ([`run_when_found`]).
pub(crate) const LOOKUP_BEFORE_SNAPSHOT: Duration = Duration::from_millis(500);
/// How soon a snapshot that got nothing is asked for again, while the
/// bucket's lookup is not answered ([`run_when_found`]).
const SNAPSHOT_RETRY: Duration = Duration::from_millis(250);

/// The connection's parts a watch reads its bucket over.
pub(crate) struct Reader {
    pub(crate) js: jetstream::Context,
    pub(crate) client: Client,
    /// Tells when `client`'s connection drops.
    pub(crate) drops: DropWatch,
}

/// A watch to run: which bucket, which keys, over what, into which view.
pub(crate) struct Watch<S> {
    /// The bucket's name (a snapshot reads it by name before it is found).
    pub(crate) bucket: &'static str,
    /// The consumer's description, also the watch's name in the logs.
    pub(crate) description: &'static str,
    pub(crate) reader: Reader,
    /// The keys to follow, as they change. A view that follows fixed keys
    /// keeps the sender, so that the scope never closes while it lives.
    pub(crate) scope: watch::Receiver<Scope>,
    pub(crate) sink: Arc<S>,
    /// Stops the watch.
    pub(crate) cancel: CancellationToken,
}

/// What a view's start learned of its bucket, kept for the view's life.
#[derive(Debug, Clone, Default)]
pub(crate) struct Lookup {
    /// The bucket's stream, once a lookup answered.
    stream: Arc<OnceLock<Stream>>,
    /// Why the last lookup in the background failed, while none has
    /// succeeded.
    failure: Arc<Mutex<Option<String>>>,
}

impl Lookup {
    /// The bucket's stream, once a lookup answered.
    pub(crate) fn stream(&self) -> Option<&Stream> {
        self.stream.get()
    }

    /// Why the bucket's lookup in the background failed last, while none
    /// has succeeded: what a view that cannot load reports instead of a
    /// bare timeout.
    pub(crate) fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn found(&self, store: &kv::Store) {
        let _ = self.stream.set(store.stream.clone());
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    fn failed(&self, why: String) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(why);
    }
}

/// Looks the bucket up (`find`, given the watch's JetStream context) for up to [`LOOKUP_BEFORE_SNAPSHOT`] and
/// spawns the task that feeds `watch.sink` until `watch.cancel` fires: on
/// the store if the lookup answered, else from the bucket's replicas until
/// a lookup in the background answers ([`run_when_found`]).
///
/// # Errors
/// The lookup's own error, when it answered with one in time (no task is
/// spawned then).
pub(crate) async fn start<S, F, Fut, E>(mut find: F, watch: Watch<S>) -> Result<Lookup, E>
where
    S: Sink,
    F: FnMut(jetstream::Context) -> Fut + Send + 'static,
    Fut: Future<Output = Result<kv::Store, E>> + Send + 'static,
    E: Display + Send + 'static,
{
    let lookup = Lookup::default();
    match tokio::time::timeout(LOOKUP_BEFORE_SNAPSHOT, find(watch.reader.js.clone())).await {
        Ok(store) => {
            let store = store?;
            lookup.found(&store);
            tokio::spawn(super::follow(store, watch, None, 0));
        }
        Err(_) => {
            debug!(
                "the bucket of the {} is not found yet (its lookup is unanswered); loading from its replicas meanwhile",
                watch.description
            );
            tokio::spawn(run_when_found(find, lookup.clone(), watch));
        }
    }
    Ok(lookup)
}

/// Feeds the watch's sink for a bucket whose lookup (`find`) has not
/// answered yet: until it does, the keys the scope names are loaded from
/// the bucket's replicas (served as a snapshot, `Sink::on_snapshot`),
/// asked again every [`SNAPSHOT_RETRY`] until one comes, and again
/// whenever the scope changes. `find` runs again, after a pause, when it
/// fails; `lookup` keeps each outcome. Once it gives the store, the watch
/// runs on it until cancelled.
async fn run_when_found<S, F, Fut, E>(mut find: F, lookup: Lookup, mut watch: Watch<S>)
where
    S: Sink,
    F: FnMut(jetstream::Context) -> Fut,
    Fut: Future<Output = Result<kv::Store, E>>,
    E: Display,
{
    let names = BucketNames::of(watch.bucket);
    let description = watch.description;
    let mut covered: Option<u64> = None;
    let mut pause = RETRY_INITIAL;
    let mut finding = std::pin::pin!(find(watch.reader.js.clone()));
    let mut next_snapshot = tokio::time::Instant::now();
    let mut refresher = snapshot::Refresher::new(&watch.reader.client, &names, &*watch.sink, 0);
    let store = loop {
        let current = watch.scope.borrow_and_update().clone();
        let due = covered != Some(current.generation);
        // Once a snapshot serves the scope, a view that takes refreshes
        // reads the replicas again every REFRESH_EVERY meanwhile.
        let refresh = !due && !current.keys.is_empty() && watch.sink.refreshes();
        // The lookup first: a snapshot in progress holds up the loop (up to
        // its patience), and the lookup's request should be out by then.
        tokio::select! {
            biased;
            () = watch.cancel.cancelled() => return,
            result = &mut finding => match result {
                Ok(store) => break store,
                Err(e) => {
                    lookup.failed(e.to_string());
                    warn!(error = %e, "cannot find the bucket of the {description}; trying again");
                    tokio::select! {
                        () = watch.cancel.cancelled() => return,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(RETRY_MAX);
                    finding.set(find(watch.reader.js.clone()));
                }
            },
            changed = watch.scope.changed() => if changed.is_err() { return },
            () = tokio::time::sleep_until(next_snapshot), if due || refresh => {
                if refresh {
                    refresher.once(&current).await;
                    next_snapshot = tokio::time::Instant::now() + snapshot::REFRESH_EVERY;
                } else if current.keys.is_empty() {
                    current.load_empty(&*watch.sink);
                    covered = Some(current.generation);
                } else if let Some(through) = snapshot::serve(&watch.reader.client, &names, &current, description, &*watch.sink).await {
                    covered = Some(current.generation);
                    refresher.read_to(through);
                    next_snapshot = tokio::time::Instant::now() + snapshot::REFRESH_EVERY;
                } else {
                    next_snapshot = tokio::time::Instant::now() + SNAPSHOT_RETRY;
                }
            }
        }
    };
    lookup.found(&store);
    let floor = refresher.floor();
    super::follow(store, watch, covered, floor).await;
}
