//! Client-side discovery: which instance of a service a call goes to.
//!
//! - [`Discovery`] answers from the connection's in-memory registry view
//!   (fed by one KV watch, shared with the
//!   [`RegistryReader`](crate::registry::RegistryReader); a new instance is
//!   visible as soon as the watch delivers its record, typically within a
//!   few milliseconds). Only ACTIVE instances are selected for calls. The
//!   watch covers only the services this connection looks up (the first
//!   lookup of a service adds it, a few milliseconds once; two idle
//!   minutes remove it), so a process's registry cost does not grow with
//!   the fleet.
//! - [`strategy`]: [`Strategy`] — round-robin (default), random, sticky by
//!   key, latency-aware (power of two choices).
//! - `index.rs`: per service, the instances a call may pick (ACTIVE, not
//!   evicted here), their statistics and the round-robin cursor, kept in
//!   step with the registry view's records.
//! - `ring.rs`: the consistent-hash ring behind sticky selection.
//! - `stats.rs`: per-instance latency and in-flight counts this process
//!   observed, for the latency-aware strategy.
//!
//! [`RpcClient::call`](crate::rpc::RpcClient::call) routes through discovery
//! and sends on the chosen instance's own subject; an instance that turns
//! out to have no responder is evicted from this process's view (until it
//! writes a newer record or answers again), one that lets an attempt time
//! out is passed over while another is left (until it writes a newer
//! record), and the call tries another at once (after a timeout, only an
//! idempotent call). If the watch
//! breaks, the last known view keeps serving (stale-on-error) while the
//! watch is re-created.

pub(crate) mod index;
pub(crate) mod ring;
pub(crate) mod stats;
pub mod strategy;

use aegis_contracts::{ServiceInstance, names, names::NameError};

pub use strategy::Strategy;

use crate::{Connection, registry::RegistryError};

/// Why a discovery lookup failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// The service or instance name is invalid.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The registry view could not be started.
    #[error("the service registry is unavailable")]
    Registry(#[from] RegistryError),
    /// [`Strategy::Sticky`] was asked for without a key.
    #[error("sticky selection needs a key")]
    MissingStickyKey,
}

/// Looks up instances of services. Cheap to clone; get one from
/// [`Connection::discovery`].
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::discovery::DiscoveryError> {
/// use aegis_sdk::discovery::Strategy;
///
/// let discovery = conn.discovery();
/// if let Some(instance) = discovery.select("pricing-service", Strategy::RoundRobin, None).await? {
///     println!("would call {}", instance.instance_id);
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Discovery {
    conn: Connection,
}

impl Discovery {
    pub(crate) fn new(conn: Connection) -> Self {
        Self { conn }
    }

    /// Every registered instance of `service`, whatever its status, sorted
    /// by instance id.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::discovery::DiscoveryError> {
    /// let all = conn.discovery().instances("risk-service").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`DiscoveryError::InvalidName`]; [`DiscoveryError::Registry`] when the
    /// registry view cannot be started.
    pub async fn instances(&self, service: &str) -> Result<Vec<ServiceInstance>, DiscoveryError> {
        names::validate_service_name(service)?;
        Ok(self
            .conn
            .registry_covering(Some(service))
            .await?
            .shared()
            .by_service(service))
    }

    /// The instances a call to `service` would choose from now: ACTIVE and
    /// not evicted by this process, sorted by instance id.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::discovery::DiscoveryError> {
    /// let n = conn.discovery().selectable("risk-service").await?.len();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`instances`](Self::instances).
    pub async fn selectable(&self, service: &str) -> Result<Vec<ServiceInstance>, DiscoveryError> {
        names::validate_service_name(service)?;
        let view = self.conn.registry_covering(Some(service)).await?;
        Ok(self
            .conn
            .discovery_index()
            .selectable_ids(service)
            .iter()
            .filter_map(|id| view.shared().get(service, id))
            .collect())
    }

    /// Picks one selectable instance of `service` the way a call would.
    /// `sticky_key` is required for [`Strategy::Sticky`] and ignored
    /// otherwise.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::discovery::DiscoveryError> {
    /// use aegis_sdk::discovery::Strategy;
    /// let owner = conn.discovery().select("order-service", Strategy::Sticky, Some("account-42")).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`instances`](Self::instances); [`DiscoveryError::MissingStickyKey`].
    pub async fn select(
        &self,
        service: &str,
        strategy: Strategy,
        sticky_key: Option<&str>,
    ) -> Result<Option<ServiceInstance>, DiscoveryError> {
        names::validate_service_name(service)?;
        if strategy == Strategy::Sticky && sticky_key.is_none() {
            return Err(DiscoveryError::MissingStickyKey);
        }
        let view = self.conn.registry_covering(Some(service)).await?;
        let key_hash = sticky_key.map(ring::hash_key);
        Ok(self
            .conn
            .discovery_index()
            .select(service, strategy, key_hash, None, &[])
            .and_then(|member| view.shared().get(service, &member.id)))
    }

    /// Stops this process from choosing `instance` until it writes a newer
    /// record (other processes and the registry are not affected). Calls do
    /// this themselves when an instance has no responder.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_sdk::discovery::DiscoveryError> {
    /// conn.discovery().evict("pricing-service", "pricing-2").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`instances`](Self::instances).
    pub async fn evict(&self, service: &str, instance: &str) -> Result<(), DiscoveryError> {
        names::validate_service_name(service)?;
        names::validate_instance_id(instance)?;
        self.conn.registry_covering(Some(service)).await?;
        self.conn.discovery_index().evict(service, instance);
        Ok(())
    }
}
