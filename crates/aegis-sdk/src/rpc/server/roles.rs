//! Mirrors the single-active election into the registry record: ACTIVE
//! with the epoch while leading, STANDBY otherwise, written at once on every
//! change, with a lifecycle event for each promotion and loss, and one
//! INFO line when an instance follows a leader as a standby (at start, or
//! when another instance takes the lead), naming the leader.

use aegis_contracts::{
    InstanceStatus,
    log::{EPOCH_FIELD, LAPSED_FIELD, LogKind, LogLevel},
};
use tracing::{info, warn};

use crate::{
    election::{Leadership, Role},
    registry::RegistrationHandle,
    telemetry::Telemetry,
};

/// Writes each role change to the registry record.
pub(super) async fn mirror_role(
    mut roles: tokio::sync::watch::Receiver<Role>,
    leadership: Leadership,
    registration: RegistrationHandle,
    telemetry: Telemetry,
) {
    let mut previous: Option<Role> = None;
    // The leader the last standby line (or loss event) named.
    let mut named: Option<String> = None;
    loop {
        let role = roles.borrow_and_update().clone();
        // Read with the role it goes with: a renewal may end the lapse
        // (and change the role again) at any moment.
        let lapsed = leadership.lapsed();
        if let Some(leader) = follows(previous.as_ref(), &mut named, &role) {
            info!(leader = %leader, "STANDBY: {leader} leads; this instance takes over if it stops");
        }
        for change in changes(previous.as_ref(), &role) {
            let event = match change {
                Change::Elected(epoch) => telemetry
                    .lifecycle(LogLevel::Info, LogKind::Elected, "elected ACTIVE leader")
                    .with_field(EPOCH_FIELD, epoch)
                    .with_field("from", "STANDBY")
                    .with_field("to", "ACTIVE"),
                // The epoch names the term lost, so that a reader of the log
                // need not guess it from the instance and the timing. A
                // lease that ran out unrenewed, the key kept, says so: the
                // loss may be a pause, ended by an `elected` at the same
                // epoch.
                Change::Lost { epoch, leader } => {
                    let said = if lapsed {
                        "lease ran out unrenewed; not serving, still renewing"
                    } else {
                        "no longer the leader; now STANDBY"
                    };
                    let event = telemetry
                        .lifecycle(LogLevel::Warn, LogKind::LeadershipLost, said)
                        .with_field(EPOCH_FIELD, epoch)
                        .with_field("from", "ACTIVE")
                        .with_field("to", "STANDBY")
                        .with_field("leader", leader.unwrap_or_default());
                    if lapsed {
                        event.with_field(LAPSED_FIELD, true)
                    } else {
                        event
                    }
                }
            };
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

/// A lifecycle event a role change writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    /// Won the election at this epoch.
    Elected(u64),
    /// Lost the term at `epoch`; `leader` leads now, when known.
    Lost { epoch: u64, leader: Option<String> },
}

/// The events that going from `previous` (`None`: the first role seen) to
/// `role` writes, in the order they happened.
///
/// The role is watched, so a loss and a new win that come while the last
/// change is still being written (a lease lost and won again at once) are
/// seen as one change from one epoch to another: both are told, so that
/// the log shows the new term rather than the old one lasting on.
fn changes(previous: Option<&Role>, role: &Role) -> Vec<Change> {
    match (previous, role) {
        (Some(Role::Leader { epoch: held }), Role::Leader { epoch }) if held != epoch => vec![
            Change::Lost {
                epoch: *held,
                leader: None,
            },
            Change::Elected(*epoch),
        ],
        (Some(Role::Leader { .. }), Role::Leader { .. }) => Vec::new(),
        (_, Role::Leader { epoch }) => vec![Change::Elected(*epoch)],
        (Some(Role::Leader { epoch }), Role::Standby { leader }) => vec![Change::Lost {
            epoch: *epoch,
            leader: leader.clone(),
        }],
        (_, Role::Standby { .. }) => Vec::new(),
    }
}

/// The leader a standby now follows that no line has named yet: `Some`
/// once per leader (at start, or when another instance takes the lead),
/// never while the same leader renews, nor while no leader is known (an
/// instance starts as a standby with none before it reads the key, and
/// may win it). A loss already names the new leader in its own event, so
/// it is only remembered in `named`.
fn follows(previous: Option<&Role>, named: &mut Option<String>, role: &Role) -> Option<String> {
    match role {
        Role::Leader { .. } => {
            *named = None;
            None
        }
        Role::Standby { leader: None } => None,
        Role::Standby {
            leader: Some(leader),
        } => {
            if named.as_deref() == Some(leader.as_str()) {
                return None;
            }
            *named = Some(leader.clone());
            (!matches!(previous, Some(Role::Leader { .. }))).then(|| leader.clone())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leader(epoch: u64) -> Role {
        Role::Leader { epoch }
    }

    fn standby(leader: &str) -> Role {
        Role::Standby {
            leader: Some(leader.to_owned()),
        }
    }

    #[test]
    fn each_promotion_and_loss_is_one_event_naming_its_epoch() {
        assert_eq!(changes(None, &leader(3)), [Change::Elected(3)]);
        assert_eq!(
            changes(Some(&standby("b")), &leader(3)),
            [Change::Elected(3)]
        );
        assert_eq!(
            changes(Some(&leader(3)), &standby("b")),
            [Change::Lost {
                epoch: 3,
                leader: Some("b".into())
            }]
        );
        assert_eq!(changes(None, &standby("b")), []);
        assert_eq!(changes(Some(&standby("b")), &standby("c")), []);
        // The same term seen again (a lease renewed after it ran out).
        assert_eq!(changes(Some(&leader(3)), &leader(3)), []);
    }

    /// A loss and a new win seen as one change (see [`changes`]).
    #[test]
    fn a_term_lost_and_won_again_unseen_is_told_as_both() {
        assert_eq!(
            changes(Some(&leader(3)), &leader(7)),
            [
                Change::Lost {
                    epoch: 3,
                    leader: None
                },
                Change::Elected(7)
            ]
        );
    }

    /// A standby says once that it is one and whom it follows; the same
    /// leader renewing, or no leader known yet, says nothing.
    #[test]
    fn a_standby_names_its_leader_once_per_leader() {
        let mut named = None;
        let unknown = Role::Standby { leader: None };
        // Before the key is read: nothing to say (it may win).
        assert_eq!(follows(None, &mut named, &unknown), None);
        assert_eq!(
            follows(Some(&unknown), &mut named, &standby("a")),
            Some("a".to_owned())
        );
        // The same leader seen again (renewals): no line.
        assert_eq!(
            follows(Some(&standby("a")), &mut named, &standby("a")),
            None
        );
        assert_eq!(follows(Some(&standby("a")), &mut named, &unknown), None);
        assert_eq!(follows(Some(&unknown), &mut named, &standby("a")), None);
        // Another took the lead: named once.
        assert_eq!(
            follows(Some(&standby("a")), &mut named, &standby("b")),
            Some("b".to_owned())
        );
        // A leader that lost: its loss event names the leader already.
        assert_eq!(follows(Some(&standby("b")), &mut named, &leader(4)), None);
        assert_eq!(follows(Some(&leader(4)), &mut named, &standby("b")), None);
        assert_eq!(named.as_deref(), Some("b"));
    }
}
