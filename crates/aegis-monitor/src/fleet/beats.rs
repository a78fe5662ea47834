//! Liveness beats: every instance publishes an empty core-NATS message on
//! `aegis.heartbeat.{service}.{instance}` each heartbeat interval
//! (`metadata.heartbeatMs`), whatever its registry writes do. The monitor
//! subscribes to all of them: beats that stop for three intervals mark the
//! instance `unresponsive` — a hung or partitioned process, or a crash when
//! no disconnect advisory is read — long before its record's TTL; beats
//! that go on keep a live instance shown as live while the registry's
//! stream has no leader (a NATS node died).

use aegis_contracts::subjects::{HEARTBEAT_SUBJECTS, parse_heartbeat_subject};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::warn;

/// Subscribes to every instance's beats and forwards `(service, instance)`
/// until `cancel`.
pub(crate) async fn follow(
    client: async_nats::Client,
    tx: mpsc::UnboundedSender<(String, String)>,
    cancel: CancellationToken,
    tasks: &TaskTracker,
) -> Result<(), async_nats::SubscribeError> {
    let mut beats = client.subscribe(HEARTBEAT_SUBJECTS).await?;
    tasks.spawn(async move {
        loop {
            let msg = tokio::select! {
                () = cancel.cancelled() => return,
                msg = beats.next() => msg,
            };
            let Some(msg) = msg else {
                warn!("the liveness beat subscription ended");
                return;
            };
            if let Some(key) = parse_heartbeat_subject(msg.subject.as_str())
                && tx.send(key).is_err()
            {
                return;
            }
        }
    });
    Ok(())
}
