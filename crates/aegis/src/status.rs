//! `aegis status`: the registry as a terminal table — service, instance,
//! status, heartbeat age, role — optionally refreshed every second.

use std::time::Duration;

use aegis_sdk::{contracts::models::ServiceInstance, registry::RegistryReader};
use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::cli::NatsArgs;

/// Options of `aegis status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Refresh every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: NatsArgs,
}

/// Prints the table (once, or until `shutdown` with `--watch`).
///
/// # Errors
/// When NATS cannot be reached.
pub async fn run(args: StatusArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let conn = args.nats.connect().await?;
    let reader = RegistryReader::start(&conn).await?;
    loop {
        let table = render(&reader.all(), chrono::Utc::now());
        if args.watch {
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{table}\n(refreshing every second; Ctrl-C to stop)\n");
        } else {
            print!("{table}");
            return Ok(());
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Renders the instances as a table.
pub fn render(instances: &[ServiceInstance], now: chrono::DateTime<chrono::Utc>) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:<10} {:>9}  {}\n",
        "SERVICE", "INSTANCE", "STATUS", "HEARTBEAT", "ROLE"
    );
    for i in instances {
        let age = (now - i.last_heartbeat).num_milliseconds().max(0) as f64 / 1000.0;
        let role = match (&i.sticky_active_group, i.status) {
            (Some(g), aegis_sdk::contracts::models::InstanceStatus::Active) => {
                // A crashed leader's record stays ACTIVE until its TTL runs
                // out; the leader is the one with the newest epoch.
                let newest = instances
                    .iter()
                    .filter(|o| {
                        o.service_name == i.service_name
                            && o.sticky_active_group.as_ref() == Some(g)
                    })
                    .filter_map(|o| o.epoch)
                    .max();
                match i.epoch {
                    Some(e) if Some(e) == newest => format!("leader of {g} (epoch {e})"),
                    Some(e) => format!("former leader of {g} (epoch {e}), no longer heart-beating"),
                    None => format!("leader of {g}"),
                }
            }
            (Some(g), _) => format!("standby in {g}"),
            (None, _) => "load-balanced".to_owned(),
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

#[cfg(test)]
mod tests {
    use aegis_sdk::contracts::models::{InstanceStatus, ServiceInstance};

    use super::render;

    #[test]
    fn only_the_newest_epoch_is_shown_as_leader() {
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
        let table = render(&[old, new, standby], now);
        assert!(
            table.contains("former leader of default (epoch 10)"),
            "{table}"
        );
        assert!(table.contains("leader of default (epoch 42)"), "{table}");
        assert!(table.contains("standby in default"), "{table}");
        assert!(table.contains("2.0s"), "{table}");
    }
}
