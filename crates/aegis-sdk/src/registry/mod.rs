//! The service registry: one record per live instance in the KV bucket
//! `service_registry`, under `service-instances.{service}.{instance}`.
//!
//! - [`bucket`]: [`ensure_registry_bucket`] creates the bucket (per-key TTL
//!   and limit markers, nats-server 2.11+) or checks that an existing one can
//!   do what the registry needs, and refuses it with a clear message if not.
//! - [`registration`]: [`Registration`] writes an instance's record, refreshes
//!   it on a heartbeat well inside its TTL, writes status changes at once and
//!   deletes the record on [`Registration::deregister`]. A crashed instance
//!   stops refreshing; the server expires its key and places a removal marker
//!   that every watcher sees. [`crate::rpc::ServiceBuilder::start`] registers
//!   the service it starts.
//! - [`health`]: the instance's own verdict on its health (a failing check,
//!   an operator's verdict) that the registration reports as UNHEALTHY with
//!   its reason and since when.
//! - [`reader`]: [`RegistryReader`] answers "who is running" from memory (all,
//!   by service, by id, by status) and streams [`RegistryChange`]s; the
//!   monitor uses it.
//! - `cache.rs` and `watch.rs` hold the in-memory view behind the reader and
//!   [`crate::discovery`]: one KV watch per [`Connection`](crate::Connection)
//!   (on `crate::kv_watch`), started lazily, re-created when it breaks
//!   (while broken, the last known view keeps serving and reports its
//!   staleness), and rebuilt from scratch when the bucket was created again.
//!   `scope.rs` holds what that watch covers: the services the process
//!   looked up, checked by every call without a lock.
//!
//! Lookups never list keys: listing creates a consumer per call, and the
//! server caps consumers per stream (see the design of record).

pub mod bucket;
pub(crate) mod cache;
pub mod health;
pub mod reader;
mod record;
pub mod registration;
mod scope;
mod watch;

use std::time::Duration;

use aegis_contracts::{ValidationErrors, names::NameError};

pub use bucket::{
    REGISTRY_HISTORY, REGISTRY_MARKER_TTL, check_registry_bucket, ensure_registry_bucket,
};
pub use health::{Health, UnhealthyReason};
pub use reader::{RegistryChange, RegistryReader, RemovalReason};
pub(crate) use record::{hostname, standard_metadata};
#[allow(deprecated)]
pub use registration::DEFAULT_UNHEALTHY_AFTER;
pub use registration::{
    DEFAULT_HEARTBEAT, DEFAULT_REFRESH, DEFAULT_TTL, DEFAULT_UNREADY_AFTER, HealthCheck,
    HealthCheckWithReason, MAX_TTL, METADATA_CONNECTION, METADATA_HEARTBEAT_MS,
    METADATA_REFRESH_MS, METADATA_REGISTRATION, MIN_TTL, Registration, RegistrationBuilder,
    RegistrationHandle, RegistrationOptions,
};

/// Why a registry operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// A service name or instance id is invalid; nothing was written.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The record does not validate; nothing was written.
    #[error("invalid registry record")]
    InvalidRecord(#[from] ValidationErrors),
    /// Heartbeat, TTL or another option cannot work; nothing was written.
    #[error("invalid registration options: {0}")]
    InvalidOptions(String),
    /// The bucket could not be created or opened.
    #[error("cannot create or open the KV bucket {bucket}")]
    Bucket {
        /// The bucket name.
        bucket: String,
        /// The client's error.
        #[source]
        source: async_nats::Error,
    },
    /// The bucket exists but its settings cannot hold the registry.
    #[error("the KV bucket {bucket} cannot hold the service registry: {reason}")]
    BucketUnusable {
        /// The bucket name.
        bucket: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The record could not be encoded.
    #[error("cannot encode the registry record")]
    Encode(#[source] serde_json::Error),
    /// Writing the record failed or was not confirmed in time; it may not be
    /// stored.
    #[error("cannot write {key} to the registry")]
    Write {
        /// The registry key.
        key: String,
        /// The client's error; wrapped in
        /// [`NoStreamTookIt`](crate::streams::NoStreamTookIt) when nobody took
        /// the write (a stream without a leader, or none).
        #[source]
        source: async_nats::Error,
    },
    /// Removing the record failed; it will expire after its TTL.
    #[error("cannot remove {key} from the registry")]
    Delete {
        /// The registry key.
        key: String,
        /// The client's error; wrapped in
        /// [`NoStreamTookIt`](crate::streams::NoStreamTookIt) when nobody took
        /// the write (a stream without a leader, or none).
        #[source]
        source: async_nats::Error,
    },
    /// The registration was already deregistered; nothing was written.
    #[error("{0} was deregistered")]
    Deregistered(String),
    /// The registry watch did not finish its initial load in time.
    #[error("the registry view did not load within {0:?}")]
    NotSynced(Duration),
}

impl RegistryError {
    /// Whether the server refused this NATS user a registry write (a
    /// permission it lacks): asking again cannot help until the user is
    /// granted it. The error's causes quote the server's refusal. A
    /// refused removal is not told apart yet: a [`RegistryError::Delete`]
    /// says `false`.
    ///
    /// ```
    /// use aegis_sdk::registry::RegistryError;
    ///
    /// let timed_out = RegistryError::Write {
    ///     key: "service-instances.a.b".into(),
    ///     source: "no acknowledgement within 1s".into(),
    /// };
    /// assert!(!timed_out.is_refused());
    /// ```
    pub fn is_refused(&self) -> bool {
        match self {
            RegistryError::Write { source, .. } | RegistryError::Delete { source, .. } => {
                source.is::<crate::connection::refusals::Refused>()
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::models::{FieldError, ValidationErrors};

    use super::RegistryError;

    #[test]
    fn an_invalid_record_says_its_cause_once() {
        crate::rpc::tests::say_each_cause_once(RegistryError::InvalidRecord(ValidationErrors(
            vec![FieldError {
                field: "version".into(),
                message: "must be semver".into(),
            }],
        )));
    }
}
