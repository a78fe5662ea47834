//! The `service_registry` KV bucket: created with per-key TTL and limit
//! markers, or checked when it already exists.
//!
//! Per-key TTL lets a crashed instance's record expire on the server; limit
//! markers make the server place a removal marker when it does, so watchers
//! see the instance go instead of it silently vanishing. Both need
//! nats-server 2.11 or newer. A bucket created without them (by an older
//! tool, or by hand) is refused with a message that says how to fix it.
//!
//! It is one of the shared buckets ([`crate::kv::SharedBucket`]), made
//! bounded. Unlike the others it cannot refuse rollups: nats-server turns
//! them on for a stream with limit markers (see that module for what
//! bounds the harm). Deregistration writes a removal marker, never a
//! rollup.

use std::time::Duration;

use aegis_contracts::subjects::REGISTRY_BUCKET;
use async_nats::jetstream::{self, kv, stream};
use tracing::{debug, warn};

use super::RegistryError;

/// How long the server keeps a removal marker (a TTL expiry or a
/// deregistration's marker) before dropping it too. Live watchers see the marker at
/// once; a watcher that re-lists after a break no longer needs it.
pub const REGISTRY_MARKER_TTL: Duration = Duration::from_secs(60);

/// Values kept per key: only the latest record matters.
pub const REGISTRY_HISTORY: i64 = 1;

/// Creates the registry bucket when missing (history 1, file storage,
/// per-key TTL with limit markers, `replicas` copies, bounded as
/// [`crate::kv::REGISTRY`] says), otherwise opens it and checks
/// its settings with [`check_registry_bucket`] (and warns of no limits:
/// [`crate::kv::warn_if_open`]).
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::registry::RegistryError> {
/// let kv = aegis_sdk::registry::ensure_registry_bucket(conn.jetstream(), 3).await?;
/// println!("registry stream: {}", kv.stream_name);
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`RegistryError::Bucket`] when JetStream refuses or does not answer;
/// [`RegistryError::BucketUnusable`] when an existing bucket lacks per-key
/// TTL or limit markers, or is a mirror.
pub async fn ensure_registry_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, RegistryError> {
    let store = match crate::streams::look_up_bucket(js, REGISTRY_BUCKET).await {
        Some(Ok(store)) => store,
        not_found => {
            match not_found {
                Some(Err(e)) => {
                    debug!(error = %crate::startup::Causes(&e), "registry bucket not found; creating it")
                }
                _ => debug!("JetStream did not answer the registry bucket's lookup; creating it"),
            }
            // Another process may have created it meanwhile (or with other
            // settings): it is found, and the check decides.
            crate::kv::create_or_find_shared_bucket(js, bucket_config(replicas))
                .await
                .map_err(|e| RegistryError::Bucket {
                    bucket: REGISTRY_BUCKET.to_owned(),
                    source: e.into(),
                })?
        }
    };
    let config = &store.stream.cached_info().config;
    check_registry_bucket(config)?;
    crate::kv::warn_if_open(config);
    // Replicas count only when the bucket is made. More than asked is the
    // operator's choice (the showcase and the Helm chart make it R3, a
    // service's default is 1); fewer is less durable than asked.
    if config.num_replicas > replicas.max(1) {
        debug!(
            bucket = REGISTRY_BUCKET,
            existing = config.num_replicas,
            configured = replicas,
            "the registry bucket has more replicas than configured; using it as it is"
        );
    } else if config.num_replicas < replicas.max(1) {
        warn!(
            bucket = REGISTRY_BUCKET,
            existing = config.num_replicas,
            configured = replicas,
            "the registry bucket exists with a different replica count; using it as it is"
        );
    }
    Ok(store)
}

fn bucket_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: REGISTRY_BUCKET.to_owned(),
        description: "Aegis service registry: service-instances.{service}.{instance}, per-key TTL"
            .to_owned(),
        history: REGISTRY_HISTORY,
        storage: stream::StorageType::File,
        num_replicas: replicas.max(1),
        limit_markers: Some(REGISTRY_MARKER_TTL),
        ..Default::default()
    }
}

/// Checks that a bucket's stream settings can hold the registry: per-key TTL
/// allowed, limit markers on (a TTL expiry must reach watchers), not a
/// mirror. Rollups and purges are not needed (deregistration writes a
/// removal marker).
///
/// ```
/// use async_nats::jetstream::stream;
/// use aegis_sdk::registry::{RegistryError, check_registry_bucket};
///
/// let plain = stream::Config { name: "KV_service_registry".into(), ..Default::default() };
/// assert!(matches!(check_registry_bucket(&plain), Err(RegistryError::BucketUnusable { .. })));
/// ```
///
/// # Errors
/// [`RegistryError::BucketUnusable`] naming the first missing setting and
/// how to fix it.
pub fn check_registry_bucket(config: &stream::Config) -> Result<(), RegistryError> {
    let unusable = |reason: &str| RegistryError::BucketUnusable {
        bucket: REGISTRY_BUCKET.to_owned(),
        reason: format!(
            "{reason}; delete the bucket (`nats kv del {REGISTRY_BUCKET}`) and let Aegis recreate it \
             (needs nats-server 2.11 or newer)"
        ),
    };
    if !config.allow_message_ttl {
        return Err(unusable(
            "per-key TTL is off (stream allow_msg_ttl is false), so a crashed instance would never expire",
        ));
    }
    if config.subject_delete_marker_ttl.is_none_or(|d| d.is_zero()) {
        return Err(unusable(
            "limit markers are off (no subject_delete_marker_ttl), so watchers would not see an expired instance go",
        ));
    }
    if config.mirror.is_some() {
        return Err(unusable(
            "the bucket is a read-only mirror, so instances could not register",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usable() -> stream::Config {
        stream::Config {
            name: "KV_service_registry".into(),
            allow_message_ttl: true,
            subject_delete_marker_ttl: Some(Duration::from_secs(60)),
            ..Default::default()
        }
    }

    #[test]
    fn accepts_ttl_with_markers_and_refuses_the_rest() {
        check_registry_bucket(&usable()).unwrap();
        let reason = |c: stream::Config| match check_registry_bucket(&c) {
            Err(RegistryError::BucketUnusable { reason, .. }) => reason,
            other => panic!("expected BucketUnusable, got {other:?}"),
        };
        assert!(
            reason(stream::Config {
                allow_message_ttl: false,
                ..usable()
            })
            .contains("TTL")
        );
        assert!(
            reason(stream::Config {
                subject_delete_marker_ttl: None,
                ..usable()
            })
            .contains("limit markers")
        );
        // Deregistration needs neither rollups nor purges.
        check_registry_bucket(&stream::Config {
            deny_purge: true,
            allow_rollup: false,
            ..usable()
        })
        .unwrap();
        check_registry_bucket(&stream::Config {
            allow_rollup: true,
            ..usable()
        })
        .unwrap();
    }

    #[test]
    fn created_buckets_pass_their_own_check() {
        let config = bucket_config(3);
        assert_eq!(config.num_replicas, 3);
        assert_eq!(config.history, 1);
        assert_eq!(config.limit_markers, Some(REGISTRY_MARKER_TTL));
        assert_eq!(bucket_config(0).num_replicas, 1);
        let stream = crate::kv::REGISTRY.stream_config(&config);
        check_registry_bucket(&stream).unwrap();
        assert!(stream.max_bytes > 0 && stream.max_message_size > 0);
    }
}
