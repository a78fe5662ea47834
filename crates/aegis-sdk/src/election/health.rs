//! Health-aware leadership: what the campaign does with the instance's
//! health, told by [`Election::set_healthy`](super::Election::set_healthy).
//!
//! - An unhealthy **leader** steps aside — stops serving, then deletes the
//!   key so a standby takes over within milliseconds — but only when a
//!   healthy standby of its group is in the registry (a fresh STANDBY
//!   record: unhealthy instances write UNHEALTHY). Without one it keeps
//!   leading: a degraded leader serves better than none. The registry shows
//!   its record UNHEALTHY, and the monitor shows the key holder ACTIVE with
//!   reason `degraded`.
//! - An unhealthy **standby** gives healthy ones a head start: when the key
//!   lapses or is deleted it waits one more lease before it campaigns. A
//!   healthy standby takes the key meanwhile; if none does (every instance
//!   is unhealthy), the group still gets a leader, one lease later.
//! - A leader that stepped aside and took the key back (the standby it saw
//!   did not take over) does not step aside again for [`STEP_ASIDE_BACKOFF`],
//!   so a stale record cannot make leadership flap.
//!
//! The registry is read from the connection's one registry view (no key
//! listing), started the first time the instance is unhealthy.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_contracts::{InstanceStatus, ServiceInstance};
use chrono::{DateTime, Utc};
use tracing::debug;

use crate::Connection;

/// After stepping aside, how long before a leader may step aside again.
pub const STEP_ASIDE_BACKOFF: Duration = Duration::from_secs(5);

/// The campaign's view of this instance's health.
#[derive(Debug)]
pub(crate) struct HealthGate {
    healthy: AtomicBool,
    conn: Connection,
    service: String,
    group: String,
    me: String,
    last_step_aside: Mutex<Option<Instant>>,
}

impl HealthGate {
    pub(crate) fn new(conn: Connection, service: &str, group: &str, me: &str) -> Self {
        Self {
            healthy: AtomicBool::new(true),
            conn,
            service: service.to_owned(),
            group: group.to_owned(),
            me: me.to_owned(),
            last_step_aside: Mutex::new(None),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    pub(crate) fn set_healthy(&self, healthy: bool) {
        let was = self.healthy.swap(healthy, Ordering::AcqRel);
        if was
            && !healthy
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Start the registry view now, so the leader's next renewal tick
            // finds it loaded (without a runtime, that tick starts it).
            let discovery = self.conn.discovery();
            let service = self.service.clone();
            rt.spawn(async move {
                let _ = discovery.instances(&service).await;
            });
        }
    }

    /// For an unhealthy leader: the healthy standbys to step aside for, by
    /// instance id, if there is one and stepping aside is not backing off.
    /// Whichever of them takes the key first leads: all are named, as none
    /// is chosen. Waits at most `budget` for the registry view (a renewal
    /// must not wait on it).
    pub(crate) async fn step_aside_to(&self, budget: Duration) -> Option<Vec<String>> {
        if self.is_healthy() {
            return None;
        }
        let last = *self
            .last_step_aside
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < STEP_ASIDE_BACKOFF) {
            return None;
        }
        let records = match tokio::time::timeout(
            budget,
            self.conn.discovery().instances(&self.service),
        )
        .await
        {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => {
                debug!(error = %crate::startup::Causes(&e), "cannot read the registry to find a healthy standby");
                return None;
            }
            Err(_) => return None,
        };
        let successors = healthy_standbys(&records, &self.group, &self.me, Utc::now());
        if successors.is_empty() {
            return None;
        }
        *self
            .last_step_aside
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Some(successors)
    }

    /// For a standby whose takeover is due: whether to wait one more lease
    /// first. `deferred` says whether it already waited since the key last
    /// changed hands (the campaign resets it on every put it sees).
    pub(crate) fn defers_takeover(&self, deferred: &mut bool) -> bool {
        defer(self.is_healthy(), deferred)
    }
}

/// The standby's rule: an unhealthy standby waits once, then campaigns.
fn defer(healthy: bool, deferred: &mut bool) -> bool {
    if healthy || *deferred {
        return false;
    }
    *deferred = true;
    true
}

/// The healthy standbys of `group` other than `me` in `records`, by
/// instance id: STANDBY records (unhealthy instances write UNHEALTHY)
/// whose last heartbeat is recent for their own cadence (a crashed
/// instance's record lingers until its TTL).
pub(crate) fn healthy_standbys(
    records: &[ServiceInstance],
    group: &str,
    me: &str,
    now: DateTime<Utc>,
) -> Vec<String> {
    let mut ids: Vec<String> = records
        .iter()
        .filter(|r| r.instance_id != me)
        .filter(|r| r.sticky_active_group.as_deref() == Some(group))
        .filter(|r| r.status == InstanceStatus::Standby)
        .filter(|r| {
            // An unchanged record is re-written every `refreshMs` (older
            // SDKs: every `heartbeatMs`).
            let metadata_ms = |key| r.metadata.get(key).and_then(serde_json::Value::as_u64);
            let refresh_ms = metadata_ms(crate::registry::METADATA_REFRESH_MS)
                .or_else(|| metadata_ms(crate::registry::METADATA_HEARTBEAT_MS))
                .unwrap_or(1000);
            // Two missed refreshes plus slack for a busy machine. A standby
            // that died within that window may still be chosen: the leader
            // then steps aside for nobody, and after a lease a live
            // instance (itself included) takes the key again.
            let fresh_ms = i64::try_from(refresh_ms.saturating_mul(2))
                .unwrap_or(i64::MAX)
                .saturating_add(1000);
            (now - r.last_heartbeat).num_milliseconds() <= fresh_ms
        })
        .map(|r| r.instance_id.clone())
        .collect();
    ids.sort();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, status: InstanceStatus, age_ms: i64, now: DateTime<Utc>) -> ServiceInstance {
        let mut r = ServiceInstance::new(
            "order-service",
            id,
            "1.0.0",
            now - chrono::Duration::milliseconds(age_ms),
        );
        r.status = status;
        r.sticky_active_group = Some("default".into());
        r.metadata.insert("heartbeatMs".into(), 200.into());
        r
    }

    #[test]
    fn only_a_fresh_standby_of_the_group_counts() {
        let now = Utc::now();
        let me = rec("o1", InstanceStatus::Unhealthy, 0, now);
        let sick = rec("o2", InstanceStatus::Unhealthy, 0, now);
        let stale = rec("o3", InstanceStatus::Standby, 5_000, now);
        let mut other_group = rec("o4", InstanceStatus::Standby, 0, now);
        other_group.sticky_active_group = Some("eu".into());
        let all = vec![me.clone(), sick, stale, other_group];
        assert!(healthy_standbys(&all, "default", "o1", now).is_empty());

        let good = rec("o5", InstanceStatus::Standby, 300, now);
        let mut with_good = all.clone();
        with_good.push(good);
        assert_eq!(healthy_standbys(&with_good, "default", "o1", now), ["o5"]);
        // Never itself, whatever its record says.
        let mut me_standby = me;
        me_standby.status = InstanceStatus::Standby;
        assert!(healthy_standbys(&[me_standby], "default", "o1", now).is_empty());
    }

    #[test]
    fn every_healthy_standby_is_named_as_none_is_chosen() {
        // Two healthy standbys: either may take the key, so a leader that
        // steps aside names both (it once named the first by id, and its
        // log then named the wrong successor when the other won).
        let now = Utc::now();
        let standbys = vec![
            rec("o3", InstanceStatus::Standby, 0, now),
            rec("o2", InstanceStatus::Standby, 0, now),
        ];
        assert_eq!(
            healthy_standbys(&standbys, "default", "o1", now),
            ["o2", "o3"]
        );
    }

    #[test]
    fn a_record_refreshed_less_often_than_the_clock_holds_is_fresh_not_a_panic() {
        // Another process's record says it refreshes every u64::MAX ms.
        let now = Utc::now();
        let mut slow = rec("o2", InstanceStatus::Standby, 60_000, now);
        slow.metadata.insert("refreshMs".into(), u64::MAX.into());
        assert_eq!(healthy_standbys(&[slow], "default", "o1", now), ["o2"]);
    }

    #[test]
    fn an_unhealthy_standby_waits_once_per_hand_over() {
        let mut deferred = false;
        assert!(!defer(true, &mut deferred), "a healthy standby never waits");
        assert!(
            defer(false, &mut deferred),
            "an unhealthy one waits a lease"
        );
        assert!(
            !defer(false, &mut deferred),
            "then takes over: no leader is worse"
        );
        deferred = false; // a put was seen: the key changed hands
        assert!(defer(false, &mut deferred));
    }
}
