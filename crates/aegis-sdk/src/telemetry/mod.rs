//! What an instance tells the monitor about itself, over NATS:
//!
//! - metrics snapshots ([`MetricsSnapshot`]) every few seconds on
//!   `aegis.metrics.{service}.{instance}` (stream `AEGIS_METRICS`);
//! - lifecycle events and WARN/ERROR log lines ([`LogRecord`]) on
//!   `aegis.log.{service}.{instance}` (stream `AEGIS_LOG`) — see [`init`]
//!   for a binary's logging in one call (printed, and its WARN/ERROR
//!   forwarded), or [`log_layer`] to add the forwarding to a subscriber
//!   of its own;
//! - its effective configuration, secrets redacted, answered live on
//!   `aegis.control.{service}.{instance}.config`.
//!
//! An instance never slows down or fails because of its telemetry, and
//! never because nobody is watching. Metrics snapshots are plain core
//! NATS publishes: the stream (created by the monitor or `aegis up`)
//! captures what is published, and a lost snapshot is replaced by the
//! next. Records are history the monitor builds its views from (the
//! leadership timeline is made of `elected` events), so each is stored
//! once, in order:
//!
//! - [`Telemetry::event`] queues the record and returns; one background
//!   sender per instance (and connection) sends the queue in order. A full
//!   queue (256 records) drops its oldest, counted in
//!   [`Telemetry::dropped`];
//! - each record is published to JetStream under its own message id
//!   (`Nats-Msg-Id`) and sent again, the same id, while no
//!   acknowledgement comes — while the stream has no leader, for the 4-9 s
//!   of its election after the NATS node leading it died, say — for up to
//!   20 s, then given up (counted). The stream stores it once;
//! - while no stream captures the subject (nobody created `AEGIS_LOG`: an
//!   instance without a monitor), records go on core NATS, and JetStream
//!   is tried again every 10 s;
//! - a service's stop waits, briefly (2 s at most), for the records queued
//!   before it (its `deregistered` event among them); so does the sender
//!   once the last [`Telemetry`] handle is dropped.
//!
//! A JetStream publish reaches live core subscribers too, so one sent
//! again reaches them again; copies carry the same `Nats-Msg-Id` header.

mod init;
pub mod log_layer;
mod outbox;
mod route;
mod sender;

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

use crate::{Connection, metrics::InstanceMetrics, task::Background};
pub use init::{DEFAULT_LOG_FILTER, InitError, init};
use sender::Sender;
pub(crate) use sender::Senders;

/// Default interval of metrics snapshots.
pub const DEFAULT_METRICS_INTERVAL: Duration = Duration::from_secs(2);

/// Publishes an instance's lifecycle events and log lines (see the module
/// docs for how they are delivered). Clones share one queue.
#[derive(Debug, Clone)]
pub struct Telemetry {
    sender: Arc<Sender>,
}

impl Telemetry {
    /// Telemetry for `service`/`instance` on `conn`. Every `Telemetry` of
    /// one instance on one connection shares the same queue and sender, so
    /// their records keep one order (a service's own events and the ones
    /// its binary's [`log_layer`] forwards). The sender is a Tokio task,
    /// started once the handle is made, or a record sent, within a runtime.
    ///
    /// ```no_run
    /// # async fn demo(conn: aegis_sdk::Connection) {
    /// use aegis_sdk::{contracts::log::{LogKind, LogLevel}, telemetry::Telemetry};
    ///
    /// let telemetry = Telemetry::new(&conn, "pricing-service", "pricing-1");
    /// telemetry.event(telemetry.lifecycle(LogLevel::Info, LogKind::Log, "warming up"));
    /// # }
    /// ```
    pub fn new(conn: &Connection, service: &str, instance: &str) -> Self {
        let subject = subjects::log_subject(service, instance);
        Self {
            sender: conn.telemetry_senders().sender_for(conn.client(), &subject),
        }
    }

    /// Queues one lifecycle event or log line for the background sender:
    /// never waits, never fails (a record that cannot be stored is counted
    /// in [`dropped`](Self::dropped)).
    ///
    /// ```no_run
    /// # fn demo(telemetry: aegis_sdk::telemetry::Telemetry) {
    /// use aegis_sdk::contracts::log::{LogKind, LogLevel};
    ///
    /// let event = telemetry
    ///     .lifecycle(LogLevel::Warn, LogKind::Log, "quote feed stale")
    ///     .with_field("feed", "fx");
    /// telemetry.event(event);
    /// # }
    /// ```
    pub fn event(&self, record: LogRecord) {
        let Ok(body) = serde_json::to_vec(&record) else {
            return;
        };
        self.sender.send(body.into());
    }

    /// Waits until every record queued before the call has been stored
    /// (or published, or given up), for up to `within`. Returns whether
    /// they all were.
    ///
    /// ```no_run
    /// # async fn demo(telemetry: aegis_sdk::telemetry::Telemetry) {
    /// use std::time::Duration;
    ///
    /// if !telemetry.flush(Duration::from_secs(2)).await {
    ///     eprintln!("some events were still on their way");
    /// }
    /// # }
    /// ```
    pub async fn flush(&self, within: Duration) -> bool {
        self.sender.flush(within).await
    }

    /// Like [`flush`](Self::flush), then the connection's own buffer too
    /// (a record sent on core NATS counts as sent once buffered), all
    /// within `within`: for a process about to exit.
    pub(crate) async fn flush_to_server(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        self.flush(within).await;
        let _ = tokio::time::timeout_at(deadline, self.sender.client().flush()).await;
    }

    /// How many records were given up so far: pushed out of a full queue,
    /// refused by the stream, or not stored within 20 s.
    ///
    /// ```no_run
    /// # fn demo(telemetry: aegis_sdk::telemetry::Telemetry) {
    /// println!("{} telemetry records lost", telemetry.dropped());
    /// # }
    /// ```
    pub fn dropped(&self) -> u64 {
        self.sender.dropped()
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
    /// The instance's records: a stop waits for the ones queued before it.
    records: Telemetry,
}

impl TelemetryTasks {
    /// Starts the metrics publisher (unless `interval` is `None`) and the
    /// configuration responder on `client`, and holds the instance's
    /// `records` so a stop can wait for them.
    pub(crate) async fn start(
        client: Client,
        records: Telemetry,
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
        Ok(Self { tasks, records })
    }

    /// Stops the tasks (the last snapshot is published first) while the
    /// records queued so far are sent, for up to [`sender::FLUSH_PATIENCE`].
    pub(crate) async fn stop(self) {
        let flushed = async {
            if !self.records.flush(sender::FLUSH_PATIENCE).await {
                debug!("telemetry records still unsent at the stop");
            }
        };
        tokio::join!(self.tasks.stop(), flushed);
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
        let snapshot: MetricsSnapshot = metrics.snapshot();
        if let Ok(body) = serde_json::to_vec(&snapshot)
            && let Err(e) = client.publish(subject.clone(), body.into()).await
        {
            debug!(error = %crate::startup::Causes(&e), "could not publish a metrics snapshot");
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
