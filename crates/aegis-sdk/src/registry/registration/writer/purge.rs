//! Deleting a registration's record on deregistration ([`purge`]): only
//! the revision this registration wrote, tried again while the registry's
//! stream takes no writes for now ([`purge_until`]).
//!
//! The record is replaced by a removal marker that the server drops after
//! [`REGISTRY_MARKER_TTL`], not purged with a rollup: the registry refuses
//! rollups (any service could otherwise purge every record with one; see
//! [`crate::kv::SharedBucket`]). The marker still says `PURGE`
//! ([`Marker::Purge`]), so every reader, older ones included, tells a
//! deregistration as before; the bucket keeps one value per key, so it
//! leaves what the purge left: watchers see the removal, and the key is
//! gone once the marker expires.

use std::{sync::atomic::Ordering, time::Duration};

use async_nats::jetstream::kv;
use tracing::{info, warn};

use super::super::RETRY_INITIAL;
use super::{Inner, Writer, current_writer, wrong_last_sequence};
use crate::{
    kv::Marker,
    registry::{RegistryError, bucket::REGISTRY_MARKER_TTL},
};

/// The longest pause between two attempts to delete the record.
const PURGE_PAUSE_MAX: Duration = Duration::from_secs(1);

/// Deletes the record, trying again while the registry's stream takes no
/// writes for now (no leader, or no acknowledgement in time) until `until`.
/// A stream whose leader's node died elects another in 4-9 s; a stop that
/// gave up at once left its record to expire with its TTL, listed UNHEALTHY
/// meanwhile (`tests/jetstream_leader_loss.rs`). A refusal the stream
/// answers is returned at once. Returns the last error when `until` passes.
pub(in crate::registry::registration) async fn purge_until(
    inner: &Inner,
    until: tokio::time::Instant,
) -> Result<(), RegistryError> {
    // Counted for the log; atomic only so the future stays `Send`.
    let attempts = std::sync::atomic::AtomicU32::new(0);
    let again = |e: &RegistryError| {
        let again = not_now(e);
        if again && attempts.load(Ordering::Relaxed) == 1 {
            info!(key = %inner.key, error = %crate::startup::Causes(e),
                "the registry takes no writes now (its stream electing a leader?); trying again");
        }
        again
    };
    let purged =
        crate::streams::write_again_while(until, (RETRY_INITIAL, PURGE_PAUSE_MAX), again, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            purge(inner)
        })
        .await;
    let attempts = attempts.into_inner();
    if purged.is_ok() && attempts > 1 {
        info!(key = %inner.key, attempts, "the registry took the deregistration");
    }
    purged
}

/// Whether a failed delete says "not now" rather than "no"
/// ([`kv_write_not_taken_yet`](crate::streams::kv_write_not_taken_yet), or
/// our own bound on the acknowledgement).
fn not_now(e: &RegistryError) -> bool {
    let RegistryError::Delete { source, .. } = e else {
        return false;
    };
    // Along the causes: one nobody took is wrapped in `NoStreamTookIt`.
    crate::streams::any_cause(&**source, |cause| {
        cause.downcast_ref::<NoAck>().is_some()
            || cause
                .downcast_ref::<kv::UpdateError>()
                .is_some_and(crate::streams::kv_write_not_taken_yet)
    })
}

/// No acknowledgement of a delete within the write timeout.
#[derive(Debug, thiserror::Error)]
#[error("no acknowledgement within {0:?}")]
pub(super) struct NoAck(pub(super) Duration);

/// Deletes the record once, if it is still the one this registration
/// wrote last.
///
/// Instance ids are unique per process, but nothing stops two processes
/// from using one (a copy-pasted id): each overwrites the other's record
/// at every write, and the one that stops must not delete the record the
/// other wrote last, or the survivor vanishes from discovery until its
/// next write (`tests/registry.rs`). So the delete expects our last
/// revision; when the key moved on since, whoever wrote it decides: a
/// record naming our connection is ours (a write whose acknowledgement we
/// missed) and is deleted; another process's is left, with a warning; no
/// record is nothing to delete.
pub(in crate::registry::registration) async fn purge(inner: &Inner) -> Result<(), RegistryError> {
    let Some(revision) = inner.state().revision else {
        return purge_as(inner, None).await;
    };
    match purge_as(inner, Some(revision)).await {
        Err(e) if moved_on(&e) => {
            match current_writer(inner)
                .await
                .map_err(|source| RegistryError::Delete {
                    key: inner.key.clone(),
                    source,
                })? {
                Writer::Nobody => Ok(()),
                // Expecting the revision read, so a record another process
                // writes meanwhile is not deleted with it.
                Writer::Us(revision) => purge_as(inner, Some(revision)).await,
                // A later registration of this process (a service started
                // again in place) wrote it: its record now.
                Writer::Other(other) if other.same_connection => {
                    info!(key = %inner.key,
                        "a later registration of this process wrote this instance's registry record; leaving it");
                    Ok(())
                }
                Writer::Other(other) => {
                    warn!(key = %inner.key, other = %other.connection,
                    "another process wrote this instance's registry record under the same instance id \
                     (ids must be unique per process); leaving its record");
                    Ok(())
                }
            }
        }
        other => other,
    }
}

/// One delete, expecting `revision` as the key's last when given.
async fn purge_as(inner: &Inner, revision: Option<u64>) -> Result<(), RegistryError> {
    let delete = |source: async_nats::Error| RegistryError::Delete {
        key: inner.key.clone(),
        source,
    };
    // A delete refused for another write of the record in flight (10164)
    // is sent again once that write settled: it then either deletes, or
    // finds the key moved on, which `purge` sorts out.
    let purge = super::resend_while_in_flight(inner.write_timeout, || async {
        crate::kv::remove_with_ttl(
            &inner.js,
            &inner.store,
            &inner.key,
            Marker::Purge,
            revision,
            Some(REGISTRY_MARKER_TTL),
        )
        .await
        .map_err(async_nats::Error::from)
    });
    match tokio::time::timeout(inner.write_timeout, purge).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(delete(crate::streams::NoStreamTookIt::explained(e))),
        Err(_) => Err(delete(NoAck(inner.write_timeout).into())),
    }
}

/// Whether a delete was refused because the key's last revision is not
/// the one expected.
fn moved_on(e: &RegistryError) -> bool {
    let RegistryError::Delete { source, .. } = e else {
        return false;
    };
    source
        .downcast_ref::<kv::UpdateError>()
        .is_some_and(|e| crate::streams::any_cause(e, wrong_last_sequence))
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};

    use super::*;

    fn delete(source: async_nats::Error) -> RegistryError {
        RegistryError::Delete {
            key: "service-instances.a.b".into(),
            source,
        }
    }

    fn refused(kind: PublishErrorKind) -> RegistryError {
        delete(kv::UpdateError::from(PublishError::new(kind)).into())
    }

    #[test]
    fn a_delete_nobody_took_or_acknowledged_is_tried_again() {
        assert!(not_now(&refused(PublishErrorKind::StreamNotFound)));
        assert!(not_now(&refused(PublishErrorKind::TimedOut)));
        assert!(not_now(&delete(NoAck(Duration::from_secs(1)).into())));
        assert!(not_now(&delete(
            kv::UpdateError::new(kv::UpdateErrorKind::TimedOut).into()
        )));
    }

    #[test]
    fn a_delete_refused_for_good_is_not() {
        assert!(!not_now(&refused(PublishErrorKind::WrongLastSequence)));
        assert!(!not_now(&refused(PublishErrorKind::Other)));
        assert!(!not_now(&delete(
            kv::UpdateError::new(kv::UpdateErrorKind::InvalidKey).into()
        )));
        assert!(!not_now(&RegistryError::Deregistered(
            "service-instances.a.b".into()
        )));
    }
}
