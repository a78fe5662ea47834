//! Mirrors the single-active election into the registry record: ACTIVE
//! with the epoch while leading, STANDBY otherwise, written at once on every
//! change, with a lifecycle event for each promotion and loss.

use aegis_contracts::{
    InstanceStatus,
    log::{EPOCH_FIELD, LogKind, LogLevel},
};
use tracing::warn;

use crate::{election::Role, registry::RegistrationHandle, telemetry::Telemetry};

/// Writes each role change to the registry record.
pub(super) async fn mirror_role(
    mut roles: tokio::sync::watch::Receiver<Role>,
    registration: RegistrationHandle,
    telemetry: Telemetry,
) {
    let mut previous: Option<Role> = None;
    loop {
        let role = roles.borrow_and_update().clone();
        let held = match &previous {
            Some(Role::Leader { epoch }) => Some(*epoch),
            _ => None,
        };
        let event = match (&role, held) {
            (Role::Leader { epoch }, None) => Some(
                telemetry
                    .lifecycle(LogLevel::Info, LogKind::Elected, "elected ACTIVE leader")
                    .with_field(EPOCH_FIELD, *epoch)
                    .with_field("from", "STANDBY")
                    .with_field("to", "ACTIVE"),
            ),
            // The epoch names the term lost, so that a reader of the log
            // need not guess it from the instance and the timing.
            (Role::Standby { leader }, Some(epoch)) => Some(
                telemetry
                    .lifecycle(
                        LogLevel::Warn,
                        LogKind::LeadershipLost,
                        "no longer the leader; now STANDBY",
                    )
                    .with_field(EPOCH_FIELD, epoch)
                    .with_field("from", "ACTIVE")
                    .with_field("to", "STANDBY")
                    .with_field("leader", leader.clone().unwrap_or_default()),
            ),
            _ => None,
        };
        if let Some(event) = event {
            telemetry.event(event);
        }
        previous = Some(role.clone());
        let written = registration
            .update(|r| match role {
                Role::Leader { epoch } => {
                    r.status = InstanceStatus::Active;
                    r.epoch = Some(epoch);
                }
                Role::Standby { .. } => {
                    r.status = InstanceStatus::Standby;
                    r.epoch = None;
                }
            })
            .await;
        if let Err(e) = written {
            // The heartbeat keeps retrying the desired record.
            warn!(error = %crate::startup::Causes(&e), "could not write the role change at once; the heartbeat retries it");
        }
        if roles.changed().await.is_err() {
            return;
        }
    }
}
