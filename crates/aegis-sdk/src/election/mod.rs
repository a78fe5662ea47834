//! Sticky single-active: one ACTIVE instance per (service, group), the others
//! STANDBY, with fast takeover when the leader dies.
//!
//! - [`lease`]: the timing rules (pure logic) that keep two leaders from ever
//!   serving at once.
//! - [`campaign`]: the task that campaigns, renews and watches the election
//!   key `sticky-active.{service}.{group}` in the KV bucket
//!   `service_elections`, publishing the [`Role`] through a watch channel.
//! - [`health`]: health-aware leadership — an unhealthy leader hands over to
//!   a healthy standby (or leads on, degraded, when there is none); an
//!   unhealthy standby lets healthy ones take over first.
//! - `view.rs`: the callers' side — who holds each election key, and the
//!   highest epoch seen, from one watch per connection; what
//!   [`call_active`](crate::rpc::RpcClient::call_active) routes by.
//!
//! How it works. Candidates take the key with an atomic create; the leader
//! renews its lease by compare-and-set on the key's revision every
//! `renew_interval`. The revision of the winning write is the **fencing
//! epoch**: it only grows, and every reply the leader sends carries it, so
//! downstream systems and callers can refuse a deposed leader's late writes.
//! A standby that sees no renewal for a whole `lease` takes over by CAS on the
//! last revision it saw (so only one standby can win). A takeover stored
//! but not acknowledged leaves the key naming its standby (at epoch 0),
//! which then takes it at once by a fresh CAS; any other record naming this
//! instance (a predecessor's with the same id, or a live duplicate's
//! renewal) is waited out like any other leader's. A standby never names
//! itself as its leader. A leader whose last
//! successful renewal was *sent* more than `lease − safety_margin` ago stops
//! serving, which is before any standby — which counts from when it
//! *received* that renewal — can take over. It stops serving but not
//! renewing: while the key may still be its own, it renews by
//! compare-and-set on the revision it last wrote, and a renewal that
//! commits (proof that nobody took the key meanwhile) lets it serve again
//! at the same epoch; it stands by only once the key names another or is
//! gone (or its renewals were paused for a drill). A graceful stop
//! ([`Election::resign`]) deletes the key, and a standby takes over within
//! milliseconds. A crash deletes nothing: the standbys wait out the lease.
//! Dropping an [`Election`] behaves like the crash (it stops serving at
//! once but leaves the key to lapse), so a leader that was not stopped
//! gracefully never hands over as if it had been — and tests that mean to
//! exercise lease expiry can drop, or, to be sure, SIGKILL a child process
//! (`tests/election_crash.rs` does both).

pub mod campaign;
pub mod health;
pub mod lease;
pub(crate) mod view;

use std::time::Duration;

use aegis_contracts::{names::NameError, subjects};
use async_nats::jetstream::{self, kv};
use serde::{Deserialize, Serialize};

pub use campaign::{Election, Leadership};
pub use lease::LeaseConfig;

/// The role of this instance in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This instance is the leader and may serve; `epoch` fences its writes.
    Leader {
        /// The fencing epoch (revision of the winning write).
        epoch: u64,
    },
    /// Another instance leads (or nobody yet).
    Standby {
        /// The leader's instance id, when known.
        leader: Option<String>,
    },
}

impl Role {
    /// Whether this is the leader role.
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// Why an election could not start or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ElectionError {
    /// The service, group or instance name is invalid; nothing was started.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// The lease settings cannot keep leaders apart.
    #[error("invalid election timing: {0}")]
    InvalidTiming(String),
    /// The `service_elections` bucket could not be created or opened.
    #[error("cannot create or open the service_elections bucket")]
    Bucket(#[source] async_nats::Error),
    /// The view of the election keys did not load in time.
    #[error("the election keys did not load within {0:?}")]
    NotSynced(std::time::Duration),
}

/// What the leader writes to the election key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// The leader's instance id.
    pub instance_id: String,
    /// Its fencing epoch (0 in the very first write, before the revision is known).
    pub epoch: u64,
    /// Lease length in milliseconds.
    pub lease_ms: u64,
    /// When it was last renewed (RFC 3339 UTC; informational, never used for timing).
    pub renewed_at: String,
}

impl LeaderRecord {
    /// The fencing epoch this record stands for, stored at `revision` of
    /// its election key: its `epoch`, or `revision` itself in a takeover's
    /// first write (epoch 0, written before the revision is known).
    pub fn epoch_at(&self, revision: u64) -> u64 {
        if self.epoch == 0 {
            revision
        } else {
            self.epoch
        }
    }
}

/// Creates the `service_elections` bucket when missing (history 1, the
/// connection's replicas, rollups refused and bounded as
/// [`crate::kv::ELECTIONS`] says), waiting for peers to place it on, or
/// finds it while its stream chooses a leader
/// ([`create_or_find_shared_bucket`](crate::kv::create_or_find_shared_bucket)).
/// An existing bucket that still allows rollups, or has no limits, is
/// warned of ([`crate::kv::warn_if_open`]): with rollups, any service
/// could delete every group's key with one message from its own. A
/// resignation deletes the key with a delete marker, never a purge.
///
/// # Errors
/// [`ElectionError::Bucket`] when JetStream refuses.
pub async fn ensure_election_bucket(
    js: &jetstream::Context,
    replicas: usize,
) -> Result<kv::Store, ElectionError> {
    if let Some(Ok(store)) = crate::streams::look_up_bucket(js, subjects::ELECTIONS_BUCKET).await {
        crate::kv::warn_if_open(&store.stream.cached_info().config);
        return Ok(store);
    }
    let config = kv::Config {
        bucket: subjects::ELECTIONS_BUCKET.to_owned(),
        description: "Aegis sticky single-active leases (sticky-active.{service}.{group})"
            .to_owned(),
        history: 1,
        num_replicas: replicas,
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    };
    let store = crate::kv::create_or_find_shared_bucket(js, config)
        .await
        .map_err(|e| ElectionError::Bucket(e.into()))?;
    crate::kv::warn_if_open(&store.stream.cached_info().config);
    Ok(store)
}

/// Default lease: short enough for sub-second failover, long enough to ride
/// out scheduling hiccups on a busy machine.
pub const DEFAULT_LEASE: Duration = Duration::from_millis(400);
