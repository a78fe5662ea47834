//! The live feed behind `GET /api/stream`: one broadcast channel that the
//! registry reader, the definitions watch and the metrics consumer publish
//! [`LiveEvent`]s into, and every SSE client subscribes to.
//!
//! A slow client that falls more than [`CAPACITY`] events behind gets a
//! `lagged` event telling it to re-read the REST endpoints, instead of
//! slowing the feed for everyone.

use aegis_contracts::{MetricsSnapshot, ServiceDefinition};
use serde::Serialize;
use utoipa::ToSchema;

use tokio::sync::broadcast;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::fleet::{Fleet, FleetChange, InstanceView};

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

/// One change pushed to SSE clients. The SSE event name is
/// [`LiveEvent::name`]; the data is this value as JSON (camelCase).
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(
    tag = "type",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum LiveEvent {
    /// An instance registered, refreshed its heartbeat or its shown status
    /// changed (event `instance`). The instance is as `/api/instances`
    /// shows it: derived `status`, `reportedStatus`, `statusReason`,
    /// `statusSince`.
    InstanceUpserted {
        /// The instance.
        #[schema(value_type = crate::openapi::ServiceInstanceDoc)]
        instance: Box<InstanceView>,
    },
    /// An instance's record was removed (event `instance`).
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
    Metrics {
        /// The snapshot.
        #[schema(value_type = Object)]
        snapshot: MetricsSnapshot,
    },
}

impl LiveEvent {
    /// The SSE event name: `instance`, `definition` or `metrics`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::InstanceUpserted { .. } | Self::InstanceRemoved { .. } => "instance",
            Self::Definition { .. } => "definition",
            Self::Metrics { .. } => "metrics",
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
    let mut changes = fleet.subscribe();
    tasks.spawn(async move {
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
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(skipped = n, "the live feed fell behind the fleet view");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let _ = live.send(event);
        }
    });
}
