//! The one KV watch per connection that feeds the registry view.
//!
//! A session is an ephemeral push consumer on the registry keys that first
//! delivers the last value of every key (the initial load, collected aside
//! and swapped in whole once complete) and then every change as it lands.
//! Idle heartbeats every second prove the session alive. It is abandoned,
//! and a fresh one (a full re-load) opened with back-off, when:
//!
//! - no message or heartbeat arrived for three heartbeat intervals (the
//!   consumer's server died, or the consumer was deleted),
//! - a consumer sequence is skipped (a message was lost),
//! - the client lost its connection (messages may have been missed, and a
//!   marker may have expired meanwhile).
//!
//! A fresh load rather than a resume keeps the view exact even when
//! removal markers expired during the break. While no session is healthy,
//! the last view keeps serving (stale-on-error) and reports its staleness.

use std::{collections::HashMap, sync::Arc, time::Duration};

use aegis_contracts::{ServiceInstance, subjects};
use async_nats::{
    Client, StatusCode,
    connection::State,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, ReplayPolicy, push},
        kv,
    },
};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{RemovalReason, cache::Shared};

/// How often the server proves an idle session alive.
const IDLE_HEARTBEAT: Duration = Duration::from_secs(1);
/// Silence after which a session counts as dead.
const SILENCE_LIMIT: Duration = Duration::from_secs(3);
/// How often the client's connection state is checked.
const STATE_CHECK: Duration = Duration::from_millis(200);
/// First and longest wait between attempts to open a session.
const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How long the server keeps an abandoned consumer with nobody listening.
const INACTIVE_THRESHOLD: Duration = Duration::from_secs(10);

const HEADER_KV_OPERATION: &str = "KV-Operation";
const HEADER_MARKER_REASON: &str = "Nats-Marker-Reason";
const HEADER_LAST_CONSUMER: &str = "Nats-Last-Consumer";
const HEADER_CONSUMER_STALLED: &str = "Nats-Consumer-Stalled";

/// Feeds `shared` until `cancel` fires.
pub(crate) async fn run(
    store: kv::Store,
    js: jetstream::Context,
    client: Client,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        let opened = tokio::select! {
            () = cancel.cancelled() => return,
            opened = Session::open(&store, &client) => opened,
        };
        match opened {
            Ok(mut session) => {
                if failures > 0 {
                    info!(consumer = %session.consumer, "registry watch re-established");
                }
                failures = 0;
                shared.begin_session(session.consumer.clone());
                let reason = session.run(&store, &js, &client, &shared, &cancel).await;
                session.abandon(&store);
                match reason {
                    None => return,
                    Some(reason) => {
                        warn!(%reason, "registry watch broke; serving the last known view while re-creating it");
                        shared.mark_broken();
                    }
                }
            }
            Err(e) => {
                failures += 1;
                shared.mark_broken();
                if failures == 1 || failures.is_power_of_two() {
                    warn!(error = %e, attempt = failures, "cannot open the registry watch; retrying");
                } else {
                    debug!(error = %e, attempt = failures, "cannot open the registry watch; retrying");
                }
            }
        }
        let delay = RETRY_INITIAL
            .saturating_mul(1 << failures.min(5))
            .min(RETRY_MAX);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

struct Session {
    subscriber: async_nats::Subscriber,
    consumer: String,
    /// The initial load being collected; `None` once it was swapped in.
    loading: Option<HashMap<(String, String), (ServiceInstance, u64)>>,
    /// Last values the server had to deliver when the consumer was created.
    initial_pending: u64,
    last_consumer_sequence: u64,
}

impl Session {
    async fn open(store: &kv::Store, client: &Client) -> Result<Session, async_nats::Error> {
        if client.connection_state() != State::Connected {
            return Err("not connected to NATS".into());
        }
        let inbox = client.new_inbox();
        // Subscribe first so nothing delivered right after creation is lost.
        let subscriber = client.subscribe(inbox.clone()).await?;
        let consumer = store
            .stream
            .create_consumer(push::Config {
                deliver_subject: inbox,
                description: Some("aegis registry watch".to_owned()),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ack_policy: AckPolicy::None,
                filter_subject: format!("{}{}", store.prefix, subjects::registry_all_filter()),
                replay_policy: ReplayPolicy::Instant,
                flow_control: true,
                idle_heartbeat: IDLE_HEARTBEAT,
                inactive_threshold: INACTIVE_THRESHOLD,
                memory_storage: true,
                num_replicas: 1,
                ..Default::default()
            })
            .await?;
        let info = consumer.cached_info();
        debug!(consumer = %info.name, pending = info.num_pending, "registry watch opened");
        Ok(Session {
            subscriber,
            consumer: info.name.clone(),
            loading: Some(HashMap::new()),
            initial_pending: info.num_pending,
            last_consumer_sequence: 0,
        })
    }

    /// Applies messages until the session breaks (returns why) or `cancel`
    /// fires (returns `None`).
    async fn run(
        &mut self,
        store: &kv::Store,
        js: &jetstream::Context,
        client: &Client,
        shared: &Shared,
        cancel: &CancellationToken,
    ) -> Option<String> {
        // An empty bucket delivers nothing: the load is complete at once.
        if self.initial_pending == 0 {
            self.finish_load(shared);
        }
        let silence = tokio::time::sleep(SILENCE_LIMIT);
        tokio::pin!(silence);
        let mut state_check = tokio::time::interval(STATE_CHECK);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return None,
                () = &mut silence => {
                    return Some(format!("no message or heartbeat for {SILENCE_LIMIT:?}"));
                }
                _ = state_check.tick() => {
                    if client.connection_state() != State::Connected {
                        return Some("the NATS connection was lost".to_owned());
                    }
                }
                message = self.subscriber.next() => {
                    let Some(message) = message else {
                        return Some("the watch subscription closed".to_owned());
                    };
                    silence.as_mut().reset(tokio::time::Instant::now() + SILENCE_LIMIT);
                    if let Err(reason) = self.handle(message, js, store, client, shared).await {
                        return Some(reason);
                    }
                }
            }
        }
    }

    fn finish_load(&mut self, shared: &Shared) {
        if let Some(snapshot) = self.loading.take() {
            debug!(instances = snapshot.len(), "registry view loaded");
            shared.replace_all(snapshot);
            shared.mark_synced();
        }
    }

    async fn handle(
        &mut self,
        message: async_nats::Message,
        js: &jetstream::Context,
        store: &kv::Store,
        client: &Client,
        shared: &Shared,
    ) -> Result<(), String> {
        match message.status {
            Some(StatusCode::IDLE_HEARTBEAT) => {
                // Flow-control requests carry a reply subject; answering
                // lets the server keep sending.
                if let Some(reply) = &message.reply {
                    let _ = client.publish(reply.clone(), bytes::Bytes::new()).await;
                }
                if let Some(headers) = &message.headers {
                    if let Some(stalled) = headers.get(HEADER_CONSUMER_STALLED) {
                        let _ = client
                            .publish(stalled.as_str().to_owned(), bytes::Bytes::new())
                            .await;
                    }
                    if let Some(last) = headers.get(HEADER_LAST_CONSUMER)
                        && last.as_str().parse::<u64>().ok() != Some(self.last_consumer_sequence)
                    {
                        return Err(format!(
                            "the server delivered up to {} but this watch saw {}",
                            last.as_str(),
                            self.last_consumer_sequence
                        ));
                    }
                }
                return Ok(());
            }
            Some(status) => {
                return Err(format!(
                    "the server ended the watch ({status} {})",
                    message.description.as_deref().unwrap_or("")
                ));
            }
            None => {}
        }
        let message = jetstream::Message {
            message,
            context: js.clone(),
        };
        let (consumer_sequence, stream_sequence, pending) = match message.info() {
            Ok(info) => (info.consumer_sequence, info.stream_sequence, info.pending),
            Err(e) => return Err(format!("unreadable delivery metadata: {e}")),
        };
        if consumer_sequence != self.last_consumer_sequence + 1 {
            return Err(format!(
                "a message was skipped (expected {}, got {consumer_sequence})",
                self.last_consumer_sequence + 1
            ));
        }
        self.last_consumer_sequence = consumer_sequence;
        let change = decode(&message.message, &store.prefix);
        match (&mut self.loading, change) {
            (_, Decoded::Ignore) => {}
            (Some(loading), Decoded::Put(instance)) => {
                let key = (instance.service_name.clone(), instance.instance_id.clone());
                loading.insert(key, (*instance, stream_sequence));
            }
            (Some(loading), Decoded::Remove(service, id, _)) => {
                loading.remove(&(service, id));
            }
            (None, Decoded::Put(instance)) => shared.upsert(*instance, stream_sequence),
            (None, Decoded::Remove(service, id, reason)) => shared.remove(&service, &id, reason),
        }
        if pending == 0 {
            self.finish_load(shared);
        }
        shared.applied(consumer_sequence);
        Ok(())
    }

    /// Deletes the consumer in the background (best effort: the server drops
    /// it after [`INACTIVE_THRESHOLD`] anyway).
    fn abandon(self, store: &kv::Store) {
        let stream = store.stream.clone();
        let consumer = self.consumer;
        drop(self.subscriber);
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(2), stream.delete_consumer(&consumer))
                .await;
        });
    }
}

enum Decoded {
    Put(Box<ServiceInstance>),
    Remove(String, String, RemovalReason),
    Ignore,
}

/// Whether a stored message removes its key, and why: the server's limit
/// marker for an expired TTL (`Nats-Marker-Reason: MaxAge`), a purge (how
/// an instance deregisters), or a delete.
fn removal_reason(headers: &async_nats::HeaderMap) -> Option<RemovalReason> {
    if let Some(marker) = headers.get(HEADER_MARKER_REASON) {
        return Some(match marker.as_str() {
            "MaxAge" => RemovalReason::Expired,
            "Purge" => RemovalReason::Deregistered,
            _ => RemovalReason::Deleted,
        });
    }
    match headers.get(HEADER_KV_OPERATION).map(|op| op.as_str()) {
        None | Some("PUT") => None,
        Some("PURGE") => Some(RemovalReason::Deregistered),
        Some(_) => Some(RemovalReason::Deleted),
    }
}

/// Turns one stored message into a change of the view.
fn decode(message: &async_nats::Message, prefix: &str) -> Decoded {
    let Some(key) = message.subject.as_str().strip_prefix(prefix) else {
        return Decoded::Ignore;
    };
    let Some((service, id)) = subjects::parse_registry_key(key) else {
        debug!(key, "ignoring a key outside the registry layout");
        return Decoded::Ignore;
    };
    if let Some(reason) = message.headers.as_ref().and_then(removal_reason) {
        return Decoded::Remove(service, id, reason);
    }
    match serde_json::from_slice::<ServiceInstance>(&message.payload) {
        Ok(instance) if instance.service_name == service && instance.instance_id == id => {
            Decoded::Put(Box::new(instance))
        }
        Ok(_) => {
            warn!(
                key,
                "ignoring a registry record whose names disagree with its key"
            );
            Decoded::Remove(service, id, RemovalReason::Deleted)
        }
        Err(e) => {
            warn!(key, error = %e, "ignoring an unreadable registry record");
            Decoded::Remove(service, id, RemovalReason::Deleted)
        }
    }
}
