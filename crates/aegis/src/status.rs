//! `aegis status`: the fleet as a terminal table — service, instance,
//! status, heartbeat age, role — optionally refreshed every second.
//!
//! It shows what the monitor shows (`aegis_monitor::fleet`): the holder of a
//! sticky group's election key is its one ACTIVE instance, a live former
//! leader whose record still says ACTIVE is shown as deposed (a dead one as
//! down), and with the NATS system account's credentials a crashed
//! instance shows as disconnected at once.

use std::time::Duration;

use aegis_monitor::{
    SystemArgs,
    fleet::{Fleet, InstanceView, StatusReason},
};
use aegis_sdk::contracts::{control::METADATA_STATUS_REASON, models::InstanceStatus};
use clap::Args;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::cli::ConnectArgs;

/// The longest `aegis status` waits for a liveness beat of every instance
/// before it prints (one beat interval, a second by default).
const BEAT_PATIENCE: Duration = Duration::from_secs(2);

/// Options of `aegis status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Refresh every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
    /// The NATS system account (crashed instances shown at once).
    #[command(flatten)]
    pub system: SystemArgs,
}

/// Prints the table (once, or until `shutdown` with `--watch`).
///
/// # Errors
/// When NATS cannot be reached, or system account credentials are refused.
pub async fn run(args: StatusArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = args.nats.connect_as_operator().await?;
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    let since = chrono::Utc::now();
    let fleet = Fleet::start(&conn, args.system.account().as_ref(), stop.clone(), &tasks).await?;
    // One beat of each instance first: the records alone are rewritten only
    // every few beats, so their ages would read up to seconds old.
    fleet.await_beats(since, BEAT_PATIENCE).await;
    let result = loop {
        let table = render(&with_last_signs(&fleet), chrono::Utc::now());
        if args.watch {
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{table}\n(refreshing every second; Ctrl-C to stop)\n");
        } else {
            print!("{table}");
            break Ok(());
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    stop.cancel();
    fleet.drain().await;
    result
}

/// The fleet's instances, each with its last sign of life (a liveness
/// beat, every heartbeat interval) as its heartbeat when that is newer than
/// the record's, which the instance rewrites only every few beats.
fn with_last_signs(fleet: &Fleet) -> Vec<InstanceView> {
    let mut all = fleet.all();
    for v in &mut all {
        let i = &mut v.instance;
        if let Some(seen) = fleet.last_sign_of_life(&i.service_name, &i.instance_id) {
            i.last_heartbeat = i.last_heartbeat.max(seen);
        }
    }
    all
}

/// Renders the instances as a table.
pub fn render(instances: &[InstanceView], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:<10} {:>9}  {}\n",
        "SERVICE", "INSTANCE", "STATUS", "HEARTBEAT", "ROLE"
    );
    for v in instances {
        let i = &v.instance;
        let age = (now - i.last_heartbeat).num_milliseconds().max(0) as f64 / 1000.0;
        let role = match (&i.sticky_active_group, i.status, v.status_reason) {
            (group, _, Some(r @ (StatusReason::Disconnected | StatusReason::Unresponsive))) => {
                let down = if r == StatusReason::Disconnected {
                    format!(
                        "down: connection closed {} ago (record expires with its TTL)",
                        ago(now, v.status_since)
                    )
                } else {
                    // Since its last beat: the age the HEARTBEAT column
                    // shows, not since the beats were found missing.
                    format!("unresponsive: no liveness beat for {age:.1}s")
                };
                // What it was when it died: a dead leader is down, not
                // deposed (that is for a live one that lost its lead).
                match (group, v.reported_status, i.epoch) {
                    (Some(g), InstanceStatus::Active, Some(e)) => {
                        format!("former leader of {g} (epoch {e}), {down}")
                    }
                    (Some(g), InstanceStatus::Active, None) => {
                        format!("former leader of {g}, {down}")
                    }
                    (Some(g), _, _) => format!("standby in {g}, {down}"),
                    (None, _, _) => down,
                }
            }
            (Some(g), _, Some(StatusReason::Deposed)) => match i.epoch {
                Some(e) => format!("former leader of {g} (epoch {e}), deposed"),
                None => format!("former leader of {g}, deposed"),
            },
            (Some(g), InstanceStatus::Active, reason) => {
                let degraded = if reason == Some(StatusReason::Degraded) {
                    let why = i
                        .metadata
                        .get(METADATA_STATUS_REASON)
                        .and_then(|v| v.as_str())
                        .and_then(StatusReason::parse)
                        .map_or("unhealthy", explain);
                    format!(
                        ", degraded: {why} for {} (no healthy standby)",
                        ago(now, v.status_since)
                    )
                } else {
                    String::new()
                };
                match i.epoch {
                    Some(e) => format!("leader of {g} (epoch {e}){degraded}"),
                    None => format!("leader of {g}{degraded}"),
                }
            }
            (Some(g), _, _) => format!("standby in {g}"),
            (None, _, _) => "load-balanced".to_owned(),
        };
        let role = match v.status_reason {
            Some(
                r @ (StatusReason::HealthCheck
                | StatusReason::RegistryWrites
                | StatusReason::Operator),
            ) => format!(
                "{role}; unhealthy: {} for {} (since {})",
                explain(r),
                ago(now, v.status_since),
                v.status_since.format("%H:%M:%S UTC")
            ),
            Some(r)
                if !matches!(
                    r,
                    StatusReason::Disconnected
                        | StatusReason::Deposed
                        | StatusReason::Degraded
                        | StatusReason::Unresponsive
                ) =>
            {
                format!("{role} ({})", r.as_str())
            }
            _ => role,
        };
        out.push_str(&format!(
            "{:<20} {:<24} {:<10} {:>8.1}s  {}\n",
            i.service_name,
            i.instance_id,
            i.status.as_str(),
            age,
            role
        ));
    }
    if instances.is_empty() {
        out.push_str("(no instances registered)\n");
    }
    out
}

/// Why an instance reports itself UNHEALTHY, in words.
fn explain(reason: StatusReason) -> &'static str {
    match reason {
        StatusReason::Operator => "forced by an operator",
        StatusReason::HealthCheck => "its health check fails",
        StatusReason::RegistryWrites => "its registry writes failed",
        _ => reason.as_str(),
    }
}

/// `3.2s`, from `since` to `now`.
fn ago(now: chrono::DateTime<chrono::Utc>, since: chrono::DateTime<chrono::Utc>) -> String {
    format!(
        "{:.1}s",
        (now - since).num_milliseconds().max(0) as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use aegis_monitor::fleet::{Holder, InstanceView, Liveness, derive};
    use aegis_sdk::contracts::models::{InstanceStatus, ServiceInstance};
    use chrono::{Duration, Utc};

    use super::render;

    fn view(record: ServiceInstance, holder: Option<&Holder>, down: bool) -> InstanceView {
        let liveness = if down {
            Liveness::Disconnected
        } else {
            Liveness::Live
        };
        view_as(record, holder, liveness)
    }

    fn view_as(
        record: ServiceInstance,
        holder: Option<&Holder>,
        liveness: Liveness,
    ) -> InstanceView {
        let d = derive(&record, holder, liveness);
        let mut instance = record.clone();
        instance.status = d.status;
        instance.epoch = d.epoch;
        InstanceView {
            instance,
            reported_status: record.status,
            status_reason: d.reason,
            status_since: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_the_key_holder_is_shown_as_leader() {
        let now = chrono::Utc::now();
        let mut old = ServiceInstance::new("order-service", "order-1", "1.0.0", now);
        old.sticky_active_group = Some("default".into());
        old.epoch = Some(10);
        old.last_heartbeat = now - chrono::Duration::seconds(2);
        let mut new = old.clone();
        new.instance_id = "order-2".into();
        new.epoch = Some(42);
        new.last_heartbeat = now;
        let mut standby = old.clone();
        standby.instance_id = "order-3".into();
        standby.status = InstanceStatus::Standby;
        standby.epoch = None;
        let mut crashed = old.clone();
        crashed.instance_id = "order-4".into();
        crashed.status = InstanceStatus::Standby;
        let holder = Holder {
            instance_id: "order-2".into(),
            epoch: 42,
        };
        let views = [
            view(old, Some(&holder), false),
            view(new, Some(&holder), false),
            view(standby, Some(&holder), false),
            view(crashed, Some(&holder), true),
        ];
        let table = render(&views, now);
        assert!(
            table.contains("former leader of default (epoch 10), deposed"),
            "{table}"
        );
        assert!(table.contains("leader of default (epoch 42)"), "{table}");
        assert!(table.contains("standby in default"), "{table}");
        assert!(table.contains("down: connection closed"), "{table}");
        assert!(table.contains("2.0s"), "{table}");
        assert_eq!(table.matches(" ACTIVE ").count(), 1, "{table}");
    }

    #[test]
    fn unhealthy_instances_say_why_and_since_when() {
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::seconds(3);
        let mut sick = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", now);
        sick.status = InstanceStatus::Unhealthy;
        sick.metadata
            .insert("statusReason".into(), "operator".into());
        let mut leader = ServiceInstance::new("order-service", "order-1", "1.0.0", now);
        leader.status = InstanceStatus::Unhealthy;
        leader.sticky_active_group = Some("default".into());
        leader
            .metadata
            .insert("statusReason".into(), "health_check".into());
        let holder = Holder {
            instance_id: "order-1".into(),
            epoch: 5,
        };
        let mut views = [view(sick, None, false), view(leader, Some(&holder), false)];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now);
        assert!(
            table.contains("load-balanced; unhealthy: forced by an operator for 3.0s (since"),
            "{table}"
        );
        assert!(
            table.contains(
                "leader of default (epoch 5), degraded: its health check fails for 3.0s (no healthy standby)"
            ),
            "{table}"
        );
        assert_eq!(table.matches(" ACTIVE ").count(), 1, "{table}");
    }

    /// The row of `instance` in `table`.
    fn row<'a>(table: &'a str, instance: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(instance))
            .unwrap_or_else(|| panic!("no row for {instance}:\n{table}"))
    }

    #[test]
    fn an_unresponsive_instance_is_silent_since_its_last_beat() {
        let now = Utc::now();
        let last_beat = now - Duration::milliseconds(3500);
        let record = ServiceInstance::new("risk-service", "risk-2", "1.0.0", last_beat);
        let mut v = view_as(record, None, Liveness::Unresponsive);
        // The fleet found its beats missing three intervals after the last.
        v.status_since = now - Duration::milliseconds(200);
        let table = render(&[v], now);
        let line = row(&table, "risk-2");
        assert!(
            line.contains("3.5s  unresponsive: no liveness beat for 3.5s"),
            "the same age in both places: {table}"
        );
    }

    #[test]
    fn a_dead_leader_is_down_and_only_a_live_one_deposed() {
        let now = Utc::now();
        let mut dead = ServiceInstance::new("order-service", "order-2", "1.0.0", now);
        dead.sticky_active_group = Some("default".into());
        dead.epoch = Some(372);
        dead.last_heartbeat = now - Duration::milliseconds(2600);
        let mut hung = dead.clone();
        hung.instance_id = "order-3".into();
        let mut paused = dead.clone();
        paused.instance_id = "order-4".into();
        let mut standby = dead.clone();
        standby.instance_id = "order-5".into();
        standby.status = InstanceStatus::Standby;
        standby.epoch = None;
        let holder = Holder {
            instance_id: "order-1".into(),
            epoch: 380,
        };
        let since = now - Duration::milliseconds(300);
        let mut views = [
            view_as(dead, Some(&holder), Liveness::Disconnected),
            view_as(hung, Some(&holder), Liveness::Unresponsive),
            view_as(paused, Some(&holder), Liveness::Live),
            view_as(standby, Some(&holder), Liveness::Disconnected),
        ];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now);
        assert!(
            row(&table, "order-2")
                .contains("former leader of default (epoch 372), down: connection closed 0.3s ago"),
            "{table}"
        );
        assert!(
            row(&table, "order-3")
                .contains("former leader of default (epoch 372), unresponsive: no liveness beat"),
            "{table}"
        );
        assert!(
            row(&table, "order-4").contains("former leader of default (epoch 372), deposed"),
            "{table}"
        );
        assert!(
            row(&table, "order-5").contains("standby in default, down: connection closed"),
            "{table}"
        );
        assert_eq!(table.matches("deposed").count(), 1, "{table}");
        assert_eq!(table.matches(" ACTIVE ").count(), 0, "{table}");
    }
}
