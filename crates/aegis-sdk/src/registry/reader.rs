//! [`RegistryReader`]: who is running, answered from memory, plus a stream of
//! changes. For components that watch services rather than call them (the
//! monitor, `aegis status`).
//!
//! Every reader on a [`Connection`] shares that connection's one KV watch
//! (the same one discovery uses), so starting readers is free after the
//! first and no lookup ever lists keys on the server.

use std::{sync::Arc, time::Duration};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::{RegistryError, cache::RegistryCache};
use crate::Connection;

/// One change of the registry as a reader sees it.
///
/// Deliberately exhaustive: a reader that keeps a view (the monitor) must
/// handle every kind of change, so a new kind should break its build rather
/// than be dropped by a wildcard arm.
#[derive(Debug, Clone, PartialEq)]
pub enum RegistryChange {
    /// An instance registered, refreshed its heartbeat or changed its record.
    Upserted(ServiceInstance),
    /// An instance deregistered, or its record expired after a crash.
    Removed {
        /// The service.
        service: String,
        /// The instance that left.
        instance_id: String,
        /// Why it left.
        reason: RemovalReason,
    },
}

/// Why an instance left the registry view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RemovalReason {
    /// It deregistered (a graceful stop purges its record).
    Deregistered,
    /// Its record expired on the server: no heartbeat within its TTL (a
    /// crash, a hang or a partition).
    Expired,
    /// Someone else deleted its record, or the record became unreadable.
    Deleted,
    /// A fresh load of the view (after the watch broke) no longer found it;
    /// how it left is not known.
    Vanished,
}

impl RemovalReason {
    /// The reason as a lower-case word: `deregistered`, `expired`,
    /// `deleted` or `vanished`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Deregistered => "deregistered",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::Vanished => "vanished",
        }
    }
}

impl RegistryChange {
    /// The service the change is about.
    pub fn service(&self) -> &str {
        match self {
            RegistryChange::Upserted(i) => &i.service_name,
            RegistryChange::Removed { service, .. } => service,
        }
    }

    /// The instance the change is about.
    pub fn instance_id(&self) -> &str {
        match self {
            RegistryChange::Upserted(i) => &i.instance_id,
            RegistryChange::Removed { instance_id, .. } => instance_id,
        }
    }
}

/// A live, in-memory view of every registered instance. Cheap to clone.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::registry::RegistryError> {
/// use aegis_sdk::registry::RegistryReader;
///
/// let reader = RegistryReader::start(&conn).await?;
/// for instance in reader.by_service("pricing-service") {
///     println!("{} {} {}", instance.instance_id, instance.status, instance.last_heartbeat);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct RegistryReader {
    cache: Arc<RegistryCache>,
}

impl RegistryReader {
    /// Starts (or joins) the connection's registry watch, creating the
    /// bucket if absent, and returns once the current registry is loaded.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::registry::RegistryError> {
    /// let reader = aegis_sdk::registry::RegistryReader::start(&conn).await?;
    /// assert!(reader.is_synced());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`RegistryError::Bucket`] or [`RegistryError::BucketUnusable`] when the
    /// bucket cannot be created or used; [`RegistryError::NotSynced`] when the
    /// initial load does not finish within the connection's request timeout
    /// or 5 s, whichever is longer.
    pub async fn start(conn: &Connection) -> Result<RegistryReader, RegistryError> {
        Ok(RegistryReader {
            cache: conn.registry_covering(None).await?,
        })
    }

    /// Every instance, sorted by (service, instance).
    pub fn all(&self) -> Vec<ServiceInstance> {
        self.cache.shared().all()
    }

    /// One service's instances, sorted by instance id.
    pub fn by_service(&self, service: &str) -> Vec<ServiceInstance> {
        self.cache.shared().by_service(service)
    }

    /// One instance, if registered.
    pub fn get(&self, service: &str, instance_id: &str) -> Option<ServiceInstance> {
        self.cache.shared().get(service, instance_id)
    }

    /// Every instance with this status, sorted by (service, instance).
    pub fn by_status(&self, status: InstanceStatus) -> Vec<ServiceInstance> {
        let mut all = self.all();
        all.retain(|i| i.status == status);
        all
    }

    /// The changes from now on. A subscriber that falls more than a few
    /// thousand changes behind skips the oldest (a warning is logged); re-read
    /// [`all`](Self::all) to catch up.
    pub fn changes(&self) -> impl Stream<Item = RegistryChange> + Send + 'static {
        let rx = self.cache.shared().subscribe();
        futures::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(change) => return Some((change, rx)),
                    Err(RecvError::Lagged(n)) => {
                        warn!(skipped = n, "a registry change subscriber fell behind");
                    }
                    Err(RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Whether the initial load is done and the watch is alive. While false
    /// after a load, the view serves its last known state.
    pub fn is_synced(&self) -> bool {
        self.cache.shared().is_synced()
    }

    /// How long the view has been serving possibly outdated state because the
    /// watch broke; `None` while synced.
    pub fn staleness(&self) -> Option<Duration> {
        self.cache.shared().staleness()
    }

    /// How many times the watch was re-created after breaking.
    pub fn resyncs(&self) -> u64 {
        self.cache.shared().resyncs()
    }

    /// Waits until every registry write the server acknowledged before this
    /// call is visible here (one JetStream API request, no listing). Returns
    /// whether that was confirmed within `timeout` (one too long for the
    /// clock, such as `Duration::MAX`, waits as long as it takes).
    ///
    /// ```no_run
    /// # async fn demo(reader: aegis_sdk::registry::RegistryReader) {
    /// use std::time::Duration;
    /// if reader.catch_up(Duration::from_secs(1)).await {
    ///     println!("{} instances", reader.all().len());
    /// }
    /// # }
    /// ```
    pub async fn catch_up(&self, timeout: Duration) -> bool {
        self.cache
            .catch_up(crate::clock::deadline(tokio::time::Instant::now(), timeout))
            .await
    }
}
