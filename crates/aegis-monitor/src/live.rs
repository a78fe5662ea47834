//! The live feed behind `GET /api/stream`: one broadcast channel that the
//! registry reader, the definitions watch and the metrics consumer publish
//! [`LiveEvent`]s into, and every SSE client subscribes to.
//!
//! A slow client that falls more than [`CAPACITY`] events behind gets a
//! `lagged` event telling it to re-read the REST endpoints, instead of
//! slowing the feed for everyone. When the feed itself falls behind the
//! fleet view (its forwarder starved), every client subscribed to
//! `instance` gets the same `lagged` event ([`LiveEvent::Lagged`]).
//!
//! Instance events are sent when something a viewer sees changes, not on
//! every heartbeat: a record write that moves only `lastHeartbeat` is no
//! event. A `digest` every [`DIGEST_EVERY`](crate::fleet::DIGEST_EVERY)
//! (topic `instance`) carries the counts, the fleet's version and the
//! instances whose beats are late, which is what keeps a viewer's
//! "last heartbeat N s ago" true (see [`FleetDigest`]). So the feed's rate
//! follows the fleet's changes, not its size.
//!
//! Metrics the same way: every snapshot goes out as a `metrics` event (for
//! a viewer of one instance, or of all), and once a second a `figures`
//! event (topic `figures`) carries, of the instances whose shown figures
//! changed, only what a dashboard card shows (see
//! `metrics_feed/figures.rs`).

use aegis_contracts::{MetricsSnapshot, ServiceDefinition};
use serde::Serialize;
use utoipa::ToSchema;

use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use chrono::{DateTime, Utc};

use crate::fleet::{Fleet, FleetChange, FleetDigest, InstanceView, LateBeat, Summary};

/// Events buffered per subscriber before it counts as lagging.
pub const CAPACITY: usize = 1024;

/// What changed in a definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum DefinitionOperation {
    /// Created or updated.
    Put,
    /// Deleted.
    Delete,
    /// Purged.
    Purge,
}

/// What a dashboard card shows of one instance's latest snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceFigures {
    /// The service.
    pub service_name: String,
    /// The instance.
    pub instance_id: String,
    /// When its latest snapshot was taken (as of when this was sent; see
    /// `late`).
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    pub timestamp: DateTime<Utc>,
    /// The length of the interval its rates cover, in seconds.
    pub interval_secs: f64,
    /// Calls per second over all its endpoints, rounded to 0.1.
    pub calls_per_sec: f64,
    /// The highest p99 latency (ms) of the endpoints called in the
    /// interval, rounded as shown (2 decimals below 1 ms, 1 below 100 ms,
    /// none above); null when none was called.
    #[schema(required = true)]
    pub p99_ms: Option<f64>,
    /// No snapshot for max(1.5 intervals, 2.5 s): `timestamp` is exact
    /// (the instance is sent again whenever it moves). When false, the
    /// latest snapshot was taken within that bound of `asOf`.
    pub late: bool,
}

/// An instance by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceName {
    /// The service.
    pub service_name: String,
    /// The instance.
    pub instance_id: String,
}

/// The figures of every instance with a snapshot (`full`), or of those
/// whose shown figures changed since the last time they were sent.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FiguresView {
    /// When they were taken (the monitor's clock).
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
    pub as_of: DateTime<Utc>,
    /// Every instance with a snapshot is listed; one not listed has none.
    pub full: bool,
    /// Intervals without a snapshot before an instance is `late`.
    pub late_after_intervals: f64,
    /// Seconds without a snapshot before an instance is `late`, at least.
    pub late_after_min_secs: f64,
    /// The instances, sorted by service and id.
    pub instances: Vec<InstanceFigures>,
    /// Instances whose snapshots are no longer held (older than the
    /// retention): they have no figures now.
    pub forgotten: Vec<InstanceName>,
}

/// One change pushed to SSE clients. The SSE event name is
/// [`LiveEvent::name`]; the data is this value as JSON (camelCase).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum LiveEvent {
    /// An instance registered or something a viewer sees of it changed
    /// (event `instance`): status, reason, epoch, version, metadata,
    /// group … — never `lastHeartbeat` alone. The instance is as
    /// `/api/instances` shows it: derived `status`, `reportedStatus`,
    /// `statusReason`, `statusSince`.
    // Per variant too: utoipa does not read `rename_all_fields`.
    #[serde(rename_all = "camelCase")]
    InstanceUpserted {
        /// The instance.
        #[schema(value_type = crate::openapi::ServiceInstanceDoc)]
        instance: Box<InstanceView>,
    },
    /// An instance's record was removed (event `instance`).
    #[serde(rename_all = "camelCase")]
    InstanceRemoved {
        /// Its service.
        service_name: String,
        /// Its id.
        instance_id: String,
        /// Why: `deregistered` (a graceful stop), `expired` (no heartbeat
        /// within its TTL), `deleted` (removed by someone else) or
        /// `vanished` (not found after the monitor re-loaded the registry).
        reason: String,
    },
    /// A definition was created, updated or deleted (event `definition`).
    #[serde(rename_all = "camelCase")]
    Definition {
        /// The service.
        service_name: String,
        /// The KV revision of the change.
        revision: u64,
        /// What happened.
        operation: DefinitionOperation,
        /// The definition after a put; null after a delete.
        #[schema(value_type = Option<Object>)]
        definition: Option<ServiceDefinition>,
    },
    /// An instance published a metrics snapshot (event `metrics`).
    #[serde(rename_all = "camelCase")]
    Metrics {
        /// The snapshot.
        #[schema(value_type = Object)]
        snapshot: MetricsSnapshot,
    },
    /// What dashboard cards show of the instances' metrics (event and
    /// topic `figures`): once a second, the instances whose shown figures
    /// (calls per second, p99, at the precision shown) or lateness changed;
    /// first after `hello`, every instance (`full`). As of `asOf`, every
    /// listed or earlier sent instance not `late` has a snapshot taken
    /// within max(`lateAfterIntervals` × its interval,
    /// `lateAfterMinSecs`); a late one's `timestamp` is its latest
    /// snapshot's, sent again whenever it moves.
    #[serde(rename_all = "camelCase")]
    Figures {
        /// When they were taken (the monitor's clock).
        #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
        as_of: DateTime<Utc>,
        /// Every instance with a snapshot is listed (the first event after
        /// `hello`); one not listed has none.
        full: bool,
        /// Intervals without a snapshot before an instance is `late`.
        late_after_intervals: f64,
        /// Seconds without a snapshot before an instance is `late`, at least.
        late_after_min_secs: f64,
        /// The instances whose figures changed (all of them when `full`).
        instances: Vec<InstanceFigures>,
        /// Instances whose snapshots are no longer held: no figures now.
        forgotten: Vec<InstanceName>,
    },
    /// The fleet's digest, every 2 s (event `digest`, sent with topic
    /// `instance`, in order with the instance events). As of `asOf`, every
    /// instance whose record announces a beat interval
    /// (`metadata.heartbeatMs`) and that is not in `late` has shown a sign
    /// of life (a liveness beat or a record write) within
    /// `lateAfterIntervals` × that interval; `late` gives the others their
    /// last sign of life. `summary` counts the instances as the instance
    /// events left them; `version` moves exactly when an instance event is
    /// sent.
    #[serde(rename_all = "camelCase")]
    Digest {
        /// When it was taken.
        #[serde(serialize_with = "aegis_contracts::models::rfc3339::serialize")]
        as_of: DateTime<Utc>,
        /// The fleet's visible version.
        version: u64,
        /// Counts by derived status.
        summary: Summary,
        /// Intervals without a sign of life before an instance is late.
        late_after_intervals: f64,
        /// The late instances and their last sign of life.
        late: Vec<LateBeat>,
    },
    /// The feed itself fell behind the fleet view and lost `skipped` of
    /// its changes, for every client at once (topic `instance`). A client
    /// gets it as the `lagged` event (`{"skipped": n}`) it gets when it
    /// falls behind alone, and re-reads the REST endpoints. Not in the
    /// schema: its data is not this type's JSON.
    #[serde(skip)]
    Lagged {
        /// How many fleet changes were lost.
        skipped: u64,
    },
}

impl LiveEvent {
    /// The SSE event name: `instance`, `digest`, `definition`, `metrics`,
    /// `figures` or `lagged`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InstanceUpserted { .. } | Self::InstanceRemoved { .. } => "instance",
            Self::Digest { .. } => "digest",
            Self::Lagged { .. } => "lagged",
            Self::Definition { .. } => "definition",
            Self::Metrics { .. } => "metrics",
            Self::Figures { .. } => "figures",
        }
    }

    /// The topic a client subscribes to for it (`?topics=`): the event
    /// name, but `instance` for the digest and the feed's own lag (the
    /// changes it lost are instance changes).
    pub fn topic(&self) -> &'static str {
        match self {
            Self::Digest { .. } | Self::Lagged { .. } => "instance",
            other => other.name(),
        }
    }
}

impl From<FleetDigest> for LiveEvent {
    fn from(d: FleetDigest) -> Self {
        Self::Digest {
            as_of: d.as_of,
            version: d.version,
            summary: d.summary,
            late_after_intervals: d.late_after_intervals,
            late: d.late,
        }
    }
}

impl From<FiguresView> for LiveEvent {
    fn from(f: FiguresView) -> Self {
        Self::Figures {
            as_of: f.as_of,
            full: f.full,
            late_after_intervals: f.late_after_intervals,
            late_after_min_secs: f.late_after_min_secs,
            instances: f.instances,
            forgotten: f.forgotten,
        }
    }
}

/// Forwards the fleet's changes to the live feed until cancelled.
pub(crate) fn forward_fleet(
    fleet: Fleet,
    live: broadcast::Sender<LiveEvent>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) {
    tasks.spawn(forward(fleet.subscribe(), live, cancel));
}

/// Turns each fleet change from `changes` into a live event on `live`,
/// until cancelled or the fleet stops.
async fn forward(
    mut changes: broadcast::Receiver<FleetChange>,
    live: broadcast::Sender<LiveEvent>,
    cancel: CancellationToken,
) {
    loop {
        let change = tokio::select! {
            () = cancel.cancelled() => return,
            change = changes.recv() => change,
        };
        let event = match change {
            Ok(FleetChange::Upserted(instance)) => LiveEvent::InstanceUpserted { instance },
            Ok(FleetChange::Removed {
                service,
                instance_id,
                reason,
            }) => LiveEvent::InstanceRemoved {
                service_name: service,
                instance_id,
                reason: reason.as_str().to_owned(),
            },
            Ok(FleetChange::Digest(digest)) => LiveEvent::from(*digest),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Every client missed these changes: each is told, so that
                // it re-reads instead of showing what it no longer knows.
                tracing::warn!(skipped = n, "the live feed fell behind the fleet view");
                LiveEvent::Lagged { skipped: n }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let _ = live.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A forwarder that falls behind the fleet loses changes for every
    /// client at once: every client is told (`lagged`), so that each
    /// re-reads, rather than none of them.
    #[tokio::test]
    async fn a_forwarder_that_lags_tells_every_client() {
        let (fleet, changes) = broadcast::channel(4);
        let (live, mut client) = broadcast::channel(CAPACITY);
        let removed = |n: usize| FleetChange::Removed {
            service: "order-service".to_owned(),
            instance_id: format!("order-{n}"),
            reason: aegis_sdk::registry::RemovalReason::Deregistered,
        };
        // More than the forwarder's buffer before it reads any.
        for n in 0..10 {
            fleet.send(removed(n)).unwrap();
        }
        drop(fleet);
        forward(changes, live, CancellationToken::new()).await;
        let told: Vec<LiveEvent> = std::iter::from_fn(|| client.try_recv().ok()).collect();
        assert!(
            matches!(told.first(), Some(LiveEvent::Lagged { skipped: 6 })),
            "{told:?}"
        );
        assert_eq!(told.first().map(LiveEvent::name), Some("lagged"));
        assert_eq!(told.first().map(LiveEvent::topic), Some("instance"));
        assert_eq!(told.len(), 5, "the lag, then the 4 changes kept: {told:?}");
    }
}
