//! Liveness beats: every instance publishes an empty core-NATS message on
//! `aegis.heartbeat.{service}.{instance}` each heartbeat interval
//! (`metadata.heartbeatMs`), whatever its registry writes do. The monitor
//! subscribes to all of them: beats that stop for three intervals mark the
//! instance `unresponsive` — a hung or partitioned process, or a crash when
//! no disconnect advisory is read — long before its record's TTL; beats
//! that go on keep a live instance shown as live while the registry's
//! stream has no leader (a NATS node died).
//!
//! A beat JetStream relayed onto a beat subject is dropped with a
//! rate-limited warning ([`relayed`]): a role that may create a stream
//! or a consumer, or read a stream directly, could otherwise keep any
//! instance shown alive.

use aegis_contracts::subjects::{HEARTBEAT_SUBJECTS, parse_heartbeat_subject};
use aegis_sdk::rpc::server::relayed;
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
            // A beat JetStream relayed here (a republish, a direct get's
            // answer, a push consumer's heartbeat) was sent by whichever
            // role set it up, not by the instance: it would keep a dead
            // instance shown alive.
            if !relayed::admit(&msg) {
                continue;
            }
            if let Some(key) = parse_heartbeat_subject(msg.subject.as_str())
                && tx.send(key).is_err()
            {
                return;
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use async_nats::{
        Subscriber,
        jetstream::{
            self,
            consumer::{AckPolicy, DeliverPolicy, push},
            stream::{self, Republish},
        },
    };

    use super::*;

    async fn next(sub: &mut Subscriber, what: &str) -> async_nats::Message {
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .unwrap_or_else(|_| panic!("no message within 5 s: {what}"))
            .unwrap_or_else(|| panic!("subscription ended: {what}"))
    }

    /// A role that may create streams or consumers, or read a stream
    /// directly, can make the server send to a beat subject it may not
    /// publish to (a republish, a direct get's answer, a push consumer's
    /// idle heartbeats): none of these keeps an instance shown alive. A
    /// plain beat after them is the first one forwarded.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn beats_jetstream_relays_are_not_forwarded() {
        let nats = aegis_testkit::NatsServer::start().expect("start nats-server");
        let monitor = async_nats::connect(nats.url()).await.unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        follow(monitor.clone(), tx, cancel.clone(), &tasks)
            .await
            .unwrap();
        monitor.flush().await.unwrap();

        let client = async_nats::connect(nats.url()).await.unwrap();
        let js = jetstream::new(client.clone());
        let ghost = |n: u8| format!("aegis.heartbeat.ghost-service.ghost-{n}");
        js.create_stream(stream::Config {
            name: "REPUB".into(),
            subjects: vec!["forge.beat".into()],
            republish: Some(Republish {
                source: "forge.beat".into(),
                destination: ghost(1),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
        let store = js
            .create_stream(stream::Config {
                name: "STORE".into(),
                subjects: vec!["store.>".into()],
                allow_direct: true,
                ..Default::default()
            })
            .await
            .unwrap();
        // Another connection's subscription on the exact subjects: a push
        // consumer counts no wildcard one as interest, and what it sees,
        // the monitor's subscription was sent at the same moment.
        let mut watch = Vec::new();
        for n in 1..=3 {
            watch.push(client.subscribe(ghost(n)).await.unwrap());
        }
        store
            .create_consumer(push::Config {
                durable_name: Some("beats".into()),
                filter_subject: "store.none".into(),
                deliver_subject: ghost(3),
                ack_policy: AckPolicy::None,
                deliver_policy: DeliverPolicy::New,
                idle_heartbeat: Duration::from_millis(100),
                flow_control: true,
                ..Default::default()
            })
            .await
            .unwrap();

        js.publish("forge.beat", "".into())
            .await
            .unwrap()
            .await
            .unwrap();
        next(&mut watch[0], "the republished beat").await;
        js.publish("store.beat", "".into())
            .await
            .unwrap()
            .await
            .unwrap();
        client
            .publish_with_reply(
                "$JS.API.DIRECT.GET.STORE",
                ghost(2),
                r#"{"last_by_subj":"store.beat"}"#.into(),
            )
            .await
            .unwrap();
        next(&mut watch[1], "the direct get's answer").await;
        next(&mut watch[2], "the consumer's idle heartbeat").await;

        client
            .publish("aegis.heartbeat.real-service.real-1", "".into())
            .await
            .unwrap();
        let first = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a beat within 5 s")
            .expect("the beat channel is open");
        assert_eq!(first, ("real-service".to_owned(), "real-1".to_owned()));
        cancel.cancel();
    }
}
