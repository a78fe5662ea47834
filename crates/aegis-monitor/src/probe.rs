//! What `/ready` and `/status` ask JetStream (do both buckets exist, how
//! many streams and consumers the account has), asked at most once per
//! [`PROBE_TTL`] whatever the request rate.
//!
//! Both routes are public (load balancers and probes call them without
//! credentials), so each hit must not turn into JetStream API requests: a
//! client hammering `/ready` would otherwise load the NATS cluster through
//! the monitor. One probe runs at a time; callers arriving meanwhile wait
//! for its answer instead of starting their own.

use std::time::{Duration, Instant};

use aegis_contracts::subjects::{DEFINITIONS_BUCKET, REGISTRY_BUCKET};
use aegis_sdk::Connection;
use tokio::sync::Mutex;

/// How long a probe's answer is reused.
pub(crate) const PROBE_TTL: Duration = Duration::from_secs(1);
/// Longest a probe may take; a slow JetStream answers "not there".
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

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

/// The last probe and when it was taken.
#[derive(Debug, Default)]
pub(crate) struct JetStreamProbe {
    last: Mutex<Option<(Instant, Probe)>>,
}

impl JetStreamProbe {
    /// The last answer if younger than [`PROBE_TTL`], else a fresh one.
    /// Disconnected: everything false, without asking (and not cached, so
    /// the first call after reconnecting asks).
    pub(crate) async fn get(&self, conn: &Connection) -> Probe {
        if !conn.is_connected() {
            return Probe::default();
        }
        // Held across the probe: concurrent callers share one probe.
        let mut last = self.last.lock().await;
        if let Some((at, probe)) = *last
            && at.elapsed() < PROBE_TTL
        {
            return probe;
        }
        let probe = ask(conn).await;
        *last = Some((Instant::now(), probe));
        probe
    }
}

async fn ask(conn: &Connection) -> Probe {
    let js = conn.jetstream();
    let (definitions, registry, account) = tokio::join!(
        tokio::time::timeout(PROBE_TIMEOUT, js.get_key_value(DEFINITIONS_BUCKET)),
        tokio::time::timeout(PROBE_TIMEOUT, js.get_key_value(REGISTRY_BUCKET)),
        tokio::time::timeout(PROBE_TIMEOUT, js.query_account()),
    );
    Probe {
        definitions_bucket: matches!(definitions, Ok(Ok(_))),
        registry_bucket: matches!(registry, Ok(Ok(_))),
        account: match account {
            Ok(Ok(a)) => Some((a.streams, a.consumers)),
            _ => None,
        },
    }
}
