//! The two JetStream KV chores the stateful services share: open (or create)
//! a bucket with the connection's replica count, and follow keys with a watch
//! that re-opens itself when the server drops it.
//!
//! A watch is one ordered consumer for the life of the process — never a key
//! listing per request, which would leave a consumer behind each time.

use std::time::Duration;

use aegis_sdk::Connection;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::TradingError;

/// Opens `bucket`, creating it (file storage, history 1, the connection's
/// replicas) when it does not exist yet.
pub(crate) async fn open_bucket(
    conn: &Connection,
    bucket: &str,
    description: &str,
) -> Result<kv::Store, TradingError> {
    let js = conn.jetstream();
    if let Ok(store) = js.get_key_value(bucket).await {
        return Ok(store);
    }
    js.create_key_value(kv::Config {
        bucket: bucket.to_owned(),
        description: description.to_owned(),
        history: 1,
        num_replicas: conn.config().nats.replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| TradingError::Store {
        bucket: bucket.to_owned(),
        source: e.into(),
    })
}

/// Follows `key` (wildcards allowed): first the latest entry of each
/// matching key, then every change, handed to `apply` until `cancel`. When
/// the watch breaks it is re-opened after a short pause, which replays the
/// latest entries — `apply` must therefore ignore revisions it has seen.
pub(crate) fn spawn_watch<F>(
    store: kv::Store,
    key: String,
    cancel: CancellationToken,
    mut apply: F,
) -> JoinHandle<()>
where
    F: FnMut(kv::Entry) + Send + 'static,
{
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(50);
        while !cancel.is_cancelled() {
            match store.watch_with_history(&key).await {
                Ok(mut entries) => loop {
                    let next = tokio::select! {
                        () = cancel.cancelled() => return,
                        next = entries.next() => next,
                    };
                    match next {
                        Some(Ok(entry)) => {
                            pause = Duration::from_millis(50);
                            apply(entry);
                        }
                        Some(Err(e)) => {
                            debug!(error = %e, key, "KV watch interrupted; re-opening");
                            break;
                        }
                        None => break,
                    }
                },
                Err(e) => warn!(error = %e, key, "cannot watch KV; retrying"),
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(5));
        }
    })
}
