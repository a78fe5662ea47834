//! What `/ready` and `/status` ask JetStream (do both buckets exist, how
//! many streams and consumers the account has), asked at most once per
//! [`PROBE_TTL`] whatever the request rate, and never waited on for long.
//!
//! Both routes are public (load balancers and probes call them without
//! credentials), so each hit must not turn into JetStream API requests: a
//! client hammering `/ready` would otherwise load the NATS cluster through
//! the monitor. One probe runs at a time, in the background; callers get
//! its answer when it comes within [`ANSWER_WAIT`], else the last one.
//!
//! A bucket's stream answers nothing while it elects a new leader (4–9 s
//! after the NATS node leading it died); the monitor still serves its views
//! then. So a bucket is "missing" only when JetStream says so; a probe that
//! gets no answer keeps the last definite one.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_contracts::subjects::{DEFINITIONS_BUCKET, REGISTRY_BUCKET};
use aegis_sdk::Connection;
use async_nats::jetstream::{self, ErrorCode, context::GetStreamErrorKind};
use tokio::sync::Notify;

/// How long a probe's answer is reused.
pub(crate) const PROBE_TTL: Duration = Duration::from_secs(1);
/// Longest a probe may take; a JetStream that answers nothing by then
/// leaves the last definite answer standing.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a caller waits for a probe under way before it gets the last
/// answer (the first probe is always waited for).
const ANSWER_WAIT: Duration = Duration::from_millis(250);

/// One probe's answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Probe {
    /// The `service_definitions` bucket exists.
    pub(crate) definitions_bucket: bool,
    /// The `service_registry` bucket exists.
    pub(crate) registry_bucket: bool,
    /// Streams and consumers in the account, when it could be read.
    pub(crate) account: Option<(usize, usize)>,
}

#[derive(Debug, Default)]
struct Last {
    answer: Option<(Instant, Probe)>,
    running: bool,
}

/// The last probe, when it was taken, and whether one is under way.
#[derive(Debug, Default)]
pub(crate) struct JetStreamProbe {
    last: Arc<Mutex<Last>>,
    answered: Arc<Notify>,
}

impl JetStreamProbe {
    /// The last answer if younger than [`PROBE_TTL`]; else starts a probe
    /// (unless one runs) and returns its answer if it comes within
    /// [`ANSWER_WAIT`] — or [`PROBE_TIMEOUT`] for the very first — and the
    /// last answer otherwise. Disconnected: everything false, without
    /// asking.
    pub(crate) async fn get(&self, conn: &Connection) -> Probe {
        if !conn.is_connected() {
            return Probe::default();
        }
        let answered = self.answered.notified();
        tokio::pin!(answered);
        // Registered before looking, so an answer landing in between wakes.
        answered.as_mut().enable();
        let first = {
            let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((at, probe)) = last.answer
                && at.elapsed() < PROBE_TTL
            {
                return probe;
            }
            if !last.running {
                last.running = true;
                let (last, notify, conn) = (self.last.clone(), self.answered.clone(), conn.clone());
                tokio::spawn(async move {
                    let fresh = ask(&conn).await;
                    let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
                    let before = last.answer.map(|(_, p)| p);
                    last.answer = Some((Instant::now(), fresh.over(before)));
                    last.running = false;
                    drop(last);
                    notify.notify_waiters();
                });
            }
            last.answer.is_none()
        };
        let wait = if first {
            PROBE_TIMEOUT + ANSWER_WAIT
        } else {
            ANSWER_WAIT
        };
        let _ = tokio::time::timeout(wait, answered).await;
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .answer
            .map(|(_, p)| p)
            .unwrap_or_default()
    }
}

/// What a probe found out about a bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    Exists,
    Missing,
    /// No answer, or an error that does not say.
    Unknown,
}

/// One probe's raw findings.
#[derive(Debug, Clone, Copy)]
struct Fresh {
    definitions: Found,
    registry: Found,
    account: Option<(usize, usize)>,
}

impl Fresh {
    /// The answer, keeping `before`'s where this probe learnt nothing.
    fn over(self, before: Option<Probe>) -> Probe {
        let keep = |found: Found, was: Option<bool>| match found {
            Found::Exists => true,
            Found::Missing => false,
            Found::Unknown => was.unwrap_or(false),
        };
        Probe {
            definitions_bucket: keep(self.definitions, before.map(|p| p.definitions_bucket)),
            registry_bucket: keep(self.registry, before.map(|p| p.registry_bucket)),
            account: self.account,
        }
    }
}

async fn ask(conn: &Connection) -> Fresh {
    let js = conn.jetstream();
    let (definitions, registry, account) = tokio::join!(
        bucket(js, DEFINITIONS_BUCKET),
        bucket(js, REGISTRY_BUCKET),
        tokio::time::timeout(PROBE_TIMEOUT, js.query_account()),
    );
    Fresh {
        definitions,
        registry,
        account: match account {
            Ok(Ok(a)) => Some((a.streams, a.consumers)),
            _ => None,
        },
    }
}

/// Whether the bucket's stream exists, as far as JetStream says.
async fn bucket(js: &jetstream::Context, name: &str) -> Found {
    match tokio::time::timeout(PROBE_TIMEOUT, js.get_stream(format!("KV_{name}"))).await {
        Ok(Ok(_)) => Found::Exists,
        Ok(Err(e)) => match e.kind() {
            GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                Found::Missing
            }
            _ => Found::Unknown,
        },
        Err(_) => Found::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_answer_keeps_the_last_definite_one() {
        let fresh = |d, r| Fresh {
            definitions: d,
            registry: r,
            account: None,
        };
        let both = fresh(Found::Exists, Found::Exists).over(None);
        assert!(both.definitions_bucket && both.registry_bucket);
        let kept = fresh(Found::Unknown, Found::Unknown).over(Some(both));
        assert_eq!(kept, both);
        let gone = fresh(Found::Missing, Found::Unknown).over(Some(both));
        assert!(!gone.definitions_bucket && gone.registry_bucket);
        let never = fresh(Found::Unknown, Found::Unknown).over(None);
        assert!(!never.definitions_bucket && !never.registry_bucket);
    }
}
