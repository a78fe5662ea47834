//! What an instance tells the monitor about itself, over NATS:
//!
//! - metrics snapshots ([`MetricsSnapshot`]) every few seconds on
//!   `aegis.metrics.{service}.{instance}` (stream `AEGIS_METRICS`);
//! - lifecycle events and WARN/ERROR log lines ([`LogRecord`]) on
//!   `aegis.log.{service}.{instance}` (stream `AEGIS_LOG`) — see [`log_layer`]
//!   for forwarding a binary's own WARN/ERROR logs;
//! - its effective configuration, secrets redacted, answered live on
//!   `aegis.control.{service}.{instance}.config`.
//!
//! Publishing is fire-and-forget on core NATS: the streams (created by the
//! monitor or `aegis up`) capture what is published, and an instance never
//! slows down or fails because nobody is watching.

pub mod log_layer;

use std::{sync::Arc, time::Duration};

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    metrics::MetricsSnapshot,
    subjects,
};
use async_nats::Client;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::{metrics::InstanceMetrics, task::Background};

/// Default interval of metrics snapshots.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// Publishes an instance's events, metrics and configuration.
#[derive(Debug, Clone)]
pub struct Telemetry {
    client: Client,
    log_subject: Arc<str>,
}

impl Telemetry {
    /// Telemetry for `service`/`instance` on `client`.
    pub fn new(client: Client, service: &str, instance: &str) -> Self {
        Self {
            client,
            log_subject: Arc::from(subjects::log_subject(service, instance)),
        }
    }

    /// Publishes one lifecycle event or log line (never waits, never fails).
    pub fn event(&self, record: LogRecord) {
        let Ok(body) = serde_json::to_vec(&record) else {
            return;
        };
        let client = self.client.clone();
        let subject = self.log_subject.to_string();
        // publish() only queues into the client's channel; spawn so that even
        // a full channel never blocks the caller.
        tokio::spawn(async move {
            if let Err(e) = client.publish(subject, body.into()).await {
                debug!(error = %e, "could not publish a lifecycle event");
            }
        });
    }

    /// Shorthand for an event with the current time.
    pub fn lifecycle(
        &self,
        level: LogLevel,
        kind: LogKind,
        message: impl Into<String>,
    ) -> LogRecord {
        LogRecord::new(chrono::Utc::now(), level, kind, message)
    }
}

/// Background tasks of an instance's telemetry; stopped on drop.
#[derive(Debug)]
pub(crate) struct TelemetryTasks {
    tasks: Background,
}

impl TelemetryTasks {
    /// Starts the metrics publisher (unless `interval` is `None`) and the
    /// configuration responder.
    pub(crate) async fn start(
        client: Client,
        service: &str,
        instance: &str,
        metrics: Arc<InstanceMetrics>,
        interval: Option<Duration>,
        config: aegis_contracts::config::EffectiveConfig,
    ) -> Result<Self, async_nats::SubscribeError> {
        let tasks = Background::new();
        if let Some(interval) = interval {
            let subject = subjects::metrics_subject(service, instance);
            let client = client.clone();
            tasks.spawn(|cancel| publish_metrics(client, subject, metrics, interval, cancel));
        }
        let mut control = client
            .subscribe(subjects::control_subject(service, instance, "config"))
            .await?;
        let responder = client.clone();
        let body: bytes::Bytes = serde_json::to_vec(&config).unwrap_or_default().into();
        tasks.spawn(|stop| async move {
            loop {
                let msg = tokio::select! {
                    () = stop.cancelled() => return,
                    msg = control.next() => msg,
                };
                let Some(msg) = msg else { return };
                if let Some(reply) = msg.reply {
                    let _ = responder.publish(reply, body.clone()).await;
                }
            }
        });
        Ok(Self { tasks })
    }

    /// Stops the tasks (the last snapshot is published first).
    pub(crate) async fn stop(self) {
        self.tasks.stop().await;
    }
}

/// How long stopping waits for the last metrics snapshot to leave.
const FINAL_FLUSH: Duration = Duration::from_millis(500);

async fn publish_metrics(
    client: Client,
    subject: String,
    metrics: Arc<InstanceMetrics>,
    interval: Duration,
    cancel: CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        let stopping = tokio::select! {
            () = cancel.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let snapshot: MetricsSnapshot = metrics.snapshot(metrics.in_flight());
        if let Ok(body) = serde_json::to_vec(&snapshot)
            && let Err(e) = client.publish(subject.clone(), body.into()).await
        {
            debug!(error = %e, "could not publish a metrics snapshot");
        }
        if stopping {
            // The last snapshot is worth a short wait, not a hang: a flush
            // without a server waits for a reconnect that may never come.
            if client.connection_state() == async_nats::connection::State::Connected {
                let _ = tokio::time::timeout(FINAL_FLUSH, client.flush()).await;
            }
            return;
        }
    }
}
