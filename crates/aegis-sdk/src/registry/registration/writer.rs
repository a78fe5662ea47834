//! The writing side of a registration: the record as wanted and as
//! stored, the serialized writes that compose it at write time, the
//! heartbeat loop (liveness beat, health check, write when due) and the
//! purge on deregistration. The module above builds it and hands out
//! handles to it.
//!
//! The purge (deleting the record on deregistration, tried again while
//! the registry's stream takes no writes) is in `purge`.
//!
//! Why one module of over 500 lines: the write state and the heartbeat
//! loop that drives it (beat, health check, compare-and-set write, the
//! other writer found) share one lock and one set of rules about when a
//! write is due; the purge stands alone.

mod purge;

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicBool, Ordering},
};
use std::time::Duration;

use aegis_contracts::{
    InstanceStatus, ServiceInstance,
    control::{
        METADATA_DRILL_DELAY_MS, METADATA_DRILL_DELAY_SINCE, METADATA_STATUS_DETAIL,
        METADATA_STATUS_REASON, METADATA_STATUS_SINCE, UnhealthyReason,
    },
    log::{LogKind, LogLevel, LogRecord},
    models::rfc3339,
};
use async_nats::jetstream::{self, kv};
use chrono::Utc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use purge::NoAck;
pub(super) use purge::{purge, purge_until};

use super::{AnyHealthCheck, EventHook, RETRY_INITIAL, RegistrationOptions};
use crate::registry::{
    RegistryError,
    health::{Health, Tracker},
    record::put_with_ttl,
};

/// One registration's state and what writes it, shared by the handles and
/// the heartbeat task.
pub(super) struct Inner {
    pub(super) js: jetstream::Context,
    /// The server's permission violations on the connection: a write that
    /// got no answer because the user may not publish it says so.
    pub(super) refusals: Arc<crate::connection::refusals::Refusals>,
    /// For the liveness beats (core NATS).
    pub(super) client: async_nats::Client,
    pub(super) beat_subject: async_nats::Subject,
    pub(super) store: kv::Store,
    pub(super) key: String,
    pub(super) subject: String,
    pub(super) ttl_value: String,
    pub(super) write_timeout: Duration,
    pub(super) options: RegistrationOptions,
    pub(super) state: Mutex<WriteState>,
    /// Serializes writes: each composes the record inside, so the last write
    /// carries the newest status.
    pub(super) writes: tokio::sync::Mutex<()>,
    pub(super) closed: AtomicBool,
    pub(super) health_check: Option<AnyHealthCheck>,
    pub(super) on_event: Option<EventHook>,
    /// The health verdict as last settled, for the rest of the instance.
    pub(super) health_tx: watch::Sender<Health>,
}

pub(super) struct WriteState {
    /// The record as the instance wants it (status as chosen).
    pub(super) desired: ServiceInstance,
    /// The record as last stored.
    pub(super) written: ServiceInstance,
    /// When it was stored (`None` before the first write).
    pub(super) written_at: Option<tokio::time::Instant>,
    /// The revision it was stored at: the deregistration deletes the
    /// record only while it is still this one (see [`purge`]).
    pub(super) revision: Option<u64>,
    /// Failed writes in a row. Counted and logged, and read by the
    /// readiness probe; never reported as the instance's status, since they
    /// say the registry is in trouble, not the instance.
    pub(super) failures: u32,
    /// The connection of the other process last found writing this record
    /// (said once for each).
    pub(super) found_out: Option<String>,
    /// Failing checks and the operator's verdict.
    pub(super) health: Tracker,
    /// An operator's `slow` drill: the delay in milliseconds and since
    /// when it has delayed the handlers (`None`: no drill).
    pub(super) drill: Option<(u64, chrono::DateTime<Utc>)>,
}

impl Inner {
    pub(super) fn state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the record now, with the status the health verdict decides.
    /// Counts failures.
    pub(super) async fn write(&self) -> Result<u64, RegistryError> {
        self.write_when(|_, _| true)
            .await
            .map(|r| r.unwrap_or_default())
    }

    /// The heartbeat's write: only when the record changed, the last write
    /// failed, or the last one is `effective_refresh` old. `Ok(None)` when
    /// nothing was due.
    ///
    /// A failing check's changed text (`statusDetail`) alone is no change:
    /// it goes with the next write that is due anyway, at the latest the
    /// refresh. A text that says something new on every check (a byte
    /// count) would otherwise make every beat a write, which every watcher
    /// of the service receives. Its coming and going is a change, since
    /// the status or reason changes with it.
    async fn write_if_due(&self) -> Result<Option<u64>, RegistryError> {
        let refresh = self.options.effective_refresh();
        self.write_when(|st, record| {
            st.failures > 0
                || st.written_at.is_none_or(|at| at.elapsed() >= refresh)
                || !same_but_heartbeat_and_detail(&st.written, record)
        })
        .await
    }

    /// Composes the record and writes it if `due` says so.
    async fn write_when(
        &self,
        due: impl FnOnce(&WriteState, &ServiceInstance) -> bool,
    ) -> Result<Option<u64>, RegistryError> {
        let _serial = self.writes.lock().await;
        if self.closed.load(Ordering::Acquire) {
            return Err(RegistryError::Deregistered(self.key.clone()));
        }
        let (record, last) = {
            let mut st = self.state();
            self.settle(&mut st);
            let mut record = st.desired.clone();
            record.last_heartbeat = Utc::now();
            let health = st.health.health();
            match (health.reason, health.since) {
                (Some(reason), Some(since)) => {
                    record.status = InstanceStatus::Unhealthy;
                    record
                        .metadata
                        .insert(METADATA_STATUS_REASON.into(), reason.as_str().into());
                    record.metadata.insert(
                        METADATA_STATUS_SINCE.into(),
                        rfc3339::format_utc(&since).into(),
                    );
                    match health.detail {
                        Some(detail) if reason == UnhealthyReason::HealthCheck => {
                            record
                                .metadata
                                .insert(METADATA_STATUS_DETAIL.into(), detail.into());
                        }
                        _ => {
                            record.metadata.remove(METADATA_STATUS_DETAIL);
                        }
                    }
                }
                _ => {
                    record.metadata.remove(METADATA_STATUS_REASON);
                    record.metadata.remove(METADATA_STATUS_SINCE);
                    record.metadata.remove(METADATA_STATUS_DETAIL);
                }
            }
            match st.drill {
                Some((delay_ms, since)) => {
                    record
                        .metadata
                        .insert(METADATA_DRILL_DELAY_MS.into(), delay_ms.into());
                    record.metadata.insert(
                        METADATA_DRILL_DELAY_SINCE.into(),
                        rfc3339::format_utc(&since).into(),
                    );
                }
                None => {
                    record.metadata.remove(METADATA_DRILL_DELAY_MS);
                    record.metadata.remove(METADATA_DRILL_DELAY_SINCE);
                }
            }
            if !due(&st, &record) {
                return Ok(None);
            }
            (record, st.revision)
        };
        // The server drops a publish it refuses and answers nothing, but
        // says so on the connection: the write fails when that is heard,
        // not after its timeout. The put only reads and publishes, so
        // leaving it midway changes nothing.
        let result = self
            .refusals
            .unless_refused(
                crate::connection::refusals::Refusing::Publish,
                |s| s == self.subject,
                self.put(&record, last),
            )
            .await
            .unwrap_or_else(|refused| Err(refused.into()));
        let mut st = self.state();
        match result {
            Ok(revision) => {
                if st.failures > 0 {
                    info!(key = %self.key, failures = st.failures, "registry writes work again");
                    let failures = st.failures;
                    self.emit(
                        LogLevel::Info,
                        LogKind::HeartbeatFailed,
                        "registry writes work again",
                        |f| {
                            f.insert("failures".into(), failures.into());
                            f.insert("recovered".into(), true.into());
                        },
                    );
                }
                st.failures = 0;
                st.written = record;
                st.written_at = Some(tokio::time::Instant::now());
                st.revision = Some(revision);
                Ok(Some(revision))
            }
            Err(source) => {
                st.failures += 1;
                // Said once per outage. The record keeps its status: every
                // instance fails its writes alike while the registry is
                // down, and none is less fit to serve for it.
                if st.failures == self.options.unready_threshold() {
                    warn!(key = %self.key, failures = st.failures,
                        "registry writes keep failing; the record keeps its status, and /readyz \
                         says not ready until a write works again");
                }
                Err(RegistryError::Write {
                    key: self.key.clone(),
                    source: crate::streams::NoStreamTookIt::explained(source),
                })
            }
        }
    }

    /// Writes `record`, expecting the key's last revision to be `last`, the
    /// one this registration wrote last. Instance ids are unique per
    /// process, and the start refuses one that a running process answers
    /// to, but two processes started within milliseconds of each other
    /// both pass that check: each then overwrites the other's record, and
    /// requests to the instance go to either. The expectation finds that
    /// out at the next write. When the key moved on, whoever wrote it
    /// decides the retry: another process is reported (once for each) and
    /// written over, since the record is this process's too; our own record
    /// (a write whose acknowledgement was missed) is expected instead; no
    /// record (expired, or deleted) is written afresh.
    ///
    /// On a cluster the stream may refuse it because another write of the
    /// record is still being replicated (the other writer's, or one of
    /// ours whose acknowledgement timed out): neither stored nor moved on
    /// yet. It is sent again as it is once that write settled
    /// ([`resend_while_in_flight`]), and that answer is for good.
    async fn put(
        &self,
        record: &ServiceInstance,
        last: Option<u64>,
    ) -> Result<u64, async_nats::Error> {
        let put = |expected| {
            resend_while_in_flight(self.write_timeout, move || {
                put_with_ttl(
                    &self.js,
                    &self.subject,
                    &self.ttl_value,
                    record,
                    self.write_timeout,
                    expected,
                )
            })
        };
        let Some(last) = last else {
            return put(None).await;
        };
        match put(Some(last)).await {
            Err(e) if wrong_last_sequence(&*e) => {}
            done => return done,
        }
        let expected = match current_writer(self).await? {
            Writer::Nobody => None,
            Writer::Us(revision) => Some(revision),
            Writer::Other(other) => {
                self.found_out(&other);
                None
            }
        };
        put(expected).await
    }

    /// Says that `other` writes this instance's record: an ERROR line and a
    /// `duplicate_instance_id` event, once for each other connection.
    fn found_out(&self, other: &OtherWriter) {
        {
            let mut st = self.state();
            if st.found_out.as_ref() == Some(&other.connection) {
                return;
            }
            st.found_out = Some(other.connection.clone());
        }
        let host = other.host.as_deref().unwrap_or("an unknown host");
        let pid = other
            .pid
            .map_or_else(|| "an unknown pid".to_owned(), |pid| format!("pid {pid}"));
        let message = if other.same_connection {
            format!(
                "another registration of this process writes the registry record of {}: \
                 two services run under one instance id (one started before the other \
                 stopped?), and requests to it go to either",
                self.key
            )
        } else {
            format!(
                "another process ({host}, {pid}, connection {}) writes the registry record of {}: \
                 two processes run under one instance id, and requests to it go to either; \
                 give each process its own id",
                other.connection, self.key
            )
        };
        tracing::error!(key = %self.key, other = %other.connection, "{message}");
        self.emit(
            LogLevel::Error,
            LogKind::DuplicateInstanceId,
            &message,
            |f| {
                f.insert("otherConnection".into(), other.connection.clone().into());
                if let Some(host) = &other.host {
                    f.insert("otherHost".into(), host.clone().into());
                }
                if let Some(pid) = other.pid {
                    f.insert("otherPid".into(), pid.into());
                }
            },
        );
    }

    async fn run_health_check(&self) {
        let Some(check) = &self.health_check else {
            return;
        };
        let result = tokio::time::timeout(self.options.heartbeat, check())
            .await
            .unwrap_or_else(|_| {
                Err(Some(format!(
                    "the health check did not answer within the heartbeat ({:?})",
                    self.options.heartbeat
                )))
            });
        let healthy = result.is_ok();
        let mut st = self.state();
        let was_failing = st.health.failed_checks() > 0;
        st.health.check(result);
        // What it said, as the record carries it (trimmed and cut).
        let said = st.health.detail().map(str::to_owned);
        if was_failing == healthy {
            if healthy {
                info!(key = %self.key, "health check passes again");
            } else {
                // Published as a `status_changed` event below, when a hook
                // publishes events: then the line is only printed.
                let lifecycle = self.on_event.is_some();
                warn!(key = %self.key, lifecycle, detail = said.as_deref(),
                    "health check failed; reporting UNHEALTHY");
            }
            // Healthy, it reports the status it chose (by its role).
            let chosen = st.desired.status.as_str();
            let (from, to) = if healthy {
                ("UNHEALTHY", chosen)
            } else {
                (chosen, "UNHEALTHY")
            };
            self.emit(
                LogLevel::Warn,
                LogKind::StatusChanged,
                "health check changed the reported status",
                |f| {
                    f.insert("from".into(), from.into());
                    f.insert("to".into(), to.into());
                    f.insert("reason".into(), "health_check".into());
                    if let Some(said) = &said {
                        f.insert("detail".into(), said.clone().into());
                    }
                },
            );
        }
        self.settle(&mut st);
    }

    /// Settles the health verdict at the current time (an operator's
    /// verdict whose time is up ends) and tells the instance when it changed.
    pub(super) fn settle(&self, st: &mut WriteState) {
        let now = tokio::time::Instant::now();
        // Only a verdict whose time is up runs out here; one lifted (or
        // replaced) was told as such by whoever did it. The health before
        // is taken only then: this runs on every beat.
        let before = st
            .health
            .forced_until()
            .is_some_and(|until| until <= now)
            .then(|| st.health.health());
        if let Some(ended) = st.health.settle(now, Utc::now())
            && ended == crate::registry::UnhealthyReason::Operator
            && let Some(before) = before
        {
            info!(key = %self.key, "the operator's unhealthy verdict ran out");
            let after = st.health.health();
            self.emit(
                LogLevel::Info,
                LogKind::StatusChanged,
                "the operator's UNHEALTHY verdict ran out",
                |f| super::verdict_fields(f, st.desired.status, &before, &after),
            );
        }
        let health = st.health.health();
        self.health_tx.send_if_modified(|h| {
            if *h != health {
                *h = health;
                true
            } else {
                false
            }
        });
    }
}

/// Whether `written` and `record` differ only in their heartbeat and the
/// text of a failing check (`statusDetail` present in both): see
/// [`Inner::write_if_due`].
fn same_but_heartbeat_and_detail(written: &ServiceInstance, record: &ServiceInstance) -> bool {
    match (
        written.metadata.get(METADATA_STATUS_DETAIL),
        record.metadata.get(METADATA_STATUS_DETAIL),
    ) {
        (Some(was), Some(is)) if was != is => {
            let mut record = record.clone();
            record
                .metadata
                .insert(METADATA_STATUS_DETAIL.into(), was.clone());
            written.same_but_heartbeat(&record)
        }
        _ => written.same_but_heartbeat(record),
    }
}

/// The registration's background work: the liveness beat and the record's
/// upkeep, side by side until `cancel` (or the deregistration).
pub(super) async fn heartbeat(inner: Arc<Inner>, cancel: CancellationToken) {
    tokio::join!(beat(&inner, &cancel), upkeep(&inner, &cancel));
}

/// The liveness beat (core NATS), on a fixed cadence of its own: neither
/// the health check (up to an interval) nor the KV write (up to its write
/// timeout, then retries) may space it out, since the monitor and `aegis
/// status` call an instance unresponsive by its missed beats
/// (`tests/registry.rs`). It needs no JetStream either, so it keeps the
/// monitor's view true while the registry's stream elects a leader.
async fn beat(inner: &Inner, cancel: &CancellationToken) {
    let mut every = tokio::time::interval(inner.options.heartbeat);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The record was just written: the first beat is due an interval on.
    every.reset();
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = every.tick() => {}
        }
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let _ = inner
            .client
            .publish(inner.beat_subject.clone(), bytes::Bytes::new())
            .await;
    }
}

/// The record's upkeep: the health check, then the write when due, every
/// heartbeat (sooner when an operator's time-limited verdict ends), with
/// back-off while writes fail.
async fn upkeep(inner: &Inner, cancel: &CancellationToken) {
    let mut delay = inner.options.heartbeat;
    loop {
        // An operator's time-limited verdict ends on time, not at the next beat.
        let wake = tokio::time::Instant::now() + delay;
        let wake = match inner.state().health.forced_until() {
            Some(until) => wake.min(until),
            None => wake,
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep_until(wake) => {}
        }
        let work = async {
            inner.run_health_check().await;
            inner.write_if_due().await
        };
        let result = tokio::select! {
            () = cancel.cancelled() => return,
            result = work => result,
        };
        delay = match result {
            Ok(revision) => {
                if let Some(revision) = revision {
                    debug!(key = %inner.key, revision, "record refreshed");
                }
                inner.options.heartbeat
            }
            Err(RegistryError::Deregistered(_)) => return,
            Err(e) => {
                let failures = inner.state().failures;
                if failures == 1 || failures.is_multiple_of(10) {
                    // Published as a `heartbeat_failed` event below, when a
                    // hook publishes events: then the line is only printed.
                    let lifecycle = inner.on_event.is_some();
                    warn!(key = %inner.key, failures, lifecycle, error = %crate::startup::Causes(&e), "heartbeat failed; retrying");
                    inner.emit(
                        LogLevel::Warn,
                        LogKind::HeartbeatFailed,
                        "heartbeat failed; retrying",
                        |f| {
                            f.insert("failures".into(), failures.into());
                            f.insert(
                                "error".into(),
                                crate::startup::Causes(&e).to_string().into(),
                            );
                        },
                    );
                } else {
                    debug!(key = %inner.key, failures, error = %crate::startup::Causes(&e), "heartbeat failed; retrying");
                }
                RETRY_INITIAL
                    .saturating_mul(1 << (failures - 1).min(10))
                    .min(inner.options.heartbeat)
            }
        };
    }
}

/// The first pause before a write refused for another write of the key
/// in flight is sent again; it doubles up to [`IN_FLIGHT_PAUSE_MAX`].
/// Replicating a write takes milliseconds.
const IN_FLIGHT_PAUSE_FIRST: Duration = Duration::from_millis(5);
const IN_FLIGHT_PAUSE_MAX: Duration = Duration::from_millis(50);

/// Runs the compare-and-set `write` again, for up to `bound`, while the
/// stream refuses it because another write of the same key is being
/// replicated (10164,
/// [`another_write_in_flight`](crate::streams::another_write_in_flight)):
/// a refusal that says nothing yet about the revision expected. Once the
/// other write settled, the answer is "stored" or "wrong last revision",
/// which the caller handles as any other.
pub(super) async fn resend_while_in_flight<T, Fut>(
    bound: Duration,
    write: impl FnMut() -> Fut,
) -> Result<T, async_nats::Error>
where
    Fut: std::future::Future<Output = Result<T, async_nats::Error>>,
{
    crate::streams::write_again_while(
        tokio::time::Instant::now() + bound,
        (IN_FLIGHT_PAUSE_FIRST, IN_FLIGHT_PAUSE_MAX),
        |e: &async_nats::Error| {
            let again = crate::streams::another_write_in_flight(&**e);
            if again {
                debug!(error = %e, "another write of the record is in flight; sending this one again");
            }
            again
        },
        write,
    )
    .await
}

/// Whether `e` is a write the stream refused because the key's last
/// revision was not the one expected.
fn wrong_last_sequence(e: &(dyn std::error::Error + 'static)) -> bool {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    e.downcast_ref::<PublishError>()
        .is_some_and(|p| p.kind() == PublishErrorKind::WrongLastSequence)
}

/// Who wrote the key's current value.
enum Writer {
    Nobody,
    /// Us, at this revision.
    Us(u64),
    /// Another process.
    Other(OtherWriter),
}

/// Another registration writing the record (another process's, or one
/// of this process under the same id), as its record names it.
struct OtherWriter {
    connection: String,
    /// On this registration's own connection: the same process.
    same_connection: bool,
    host: Option<String>,
    pid: Option<u64>,
}

async fn current_writer(inner: &Inner) -> Result<Writer, async_nats::Error> {
    let entry = match tokio::time::timeout(inner.write_timeout, inner.store.entry(&inner.key)).await
    {
        Ok(Ok(entry)) => entry,
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => return Err(NoAck(inner.write_timeout).into()),
    };
    let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
        return Ok(Writer::Nobody);
    };
    let text = |r: &ServiceInstance, key: &str| {
        r.metadata
            .get(key)
            .and_then(|c| c.as_str())
            .map(str::to_owned)
    };
    let Ok(theirs) = serde_json::from_slice::<ServiceInstance>(&entry.value) else {
        return Ok(Writer::Us(entry.revision));
    };
    let (our_connection, our_registration) = {
        let st = inner.state();
        (
            text(&st.desired, super::METADATA_CONNECTION),
            text(&st.desired, super::METADATA_REGISTRATION),
        )
    };
    let their_connection = text(&theirs, super::METADATA_CONNECTION);
    // A registration id, where both records have one, tells the two apart
    // even on one connection; else (a record of an older SDK) the
    // connection does.
    let other = match (
        our_registration,
        text(&theirs, super::METADATA_REGISTRATION),
    ) {
        (Some(ours), Some(theirs)) => ours != theirs,
        _ => their_connection.is_some() && their_connection != our_connection,
    };
    if !other {
        return Ok(Writer::Us(entry.revision));
    }
    let connection = their_connection.unwrap_or_default();
    Ok(Writer::Other(OtherWriter {
        same_connection: Some(&connection) == our_connection.as_ref(),
        connection,
        host: text(&theirs, "host"),
        pid: theirs
            .metadata
            .get("pid")
            .and_then(serde_json::Value::as_u64),
    }))
}

impl Inner {
    /// Hands a lifecycle event to the hook, if any.
    pub(super) fn emit(
        &self,
        level: LogLevel,
        kind: LogKind,
        message: &str,
        fields: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>),
    ) {
        if let Some(hook) = &self.on_event {
            let mut record = LogRecord::new(chrono::Utc::now(), level, kind, message);
            fields(&mut record.fields);
            hook(record);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: InstanceStatus, detail: Option<&str>) -> ServiceInstance {
        let mut r = ServiceInstance::new("s", "s-1", "1.0.0", Utc::now());
        r.status = status;
        if let Some(detail) = detail {
            r.metadata
                .insert(METADATA_STATUS_DETAIL.into(), detail.into());
        }
        r
    }

    /// A failing check's text that changes (a byte count) is no reason to
    /// write on the beat; its coming and going, and any other change, is.
    #[test]
    fn a_changed_detail_alone_waits_for_the_refresh() {
        let unhealthy = InstanceStatus::Unhealthy;
        let written = record(unhealthy, Some("full: 1.0 MiB of 1.0 MiB"));
        let mut later = record(unhealthy, Some("full: 1.1 MiB of 1.0 MiB"));
        later.started_at = written.started_at;
        later.last_heartbeat = Utc::now();
        assert!(same_but_heartbeat_and_detail(&written, &later));

        let mut gone = later.clone();
        gone.metadata.remove(METADATA_STATUS_DETAIL);
        assert!(!same_but_heartbeat_and_detail(&written, &gone));
        assert!(!same_but_heartbeat_and_detail(&gone, &later));

        let mut other = later.clone();
        other.status = InstanceStatus::Active;
        assert!(!same_but_heartbeat_and_detail(&written, &other));
        let mut meta = later;
        meta.metadata.insert("zone".into(), "eu-1".into());
        assert!(!same_but_heartbeat_and_detail(&written, &meta));
    }
}
