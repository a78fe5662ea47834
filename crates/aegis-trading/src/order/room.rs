//! Whether the order store has room for another order: order-service's
//! health check, which says UNHEALTHY with the reason in words while the
//! `orders` bucket is full, so the dashboard and `aegis status` show what
//! only the refusals (SERVICE_UNAVAILABLE) and the log said before.
//!
//! It is a fact about the shared bucket, read from its stream's info
//! (`KV_orders`: the bytes it holds against its `max_bytes`, its messages
//! against `max_messages` when set), so every instance, leader and
//! standbys, sees it alike. A check on "my last write was refused" would
//! leave the standbys healthy: the leader would hand over after its
//! failed checks, to a standby that finds the same full bucket, and
//! leadership would go round. With every instance unhealthy, the SDK keeps
//! the leader leading, shown as degraded.
//!
//! - Full is "no room for one more order": the bytes held plus
//!   [`ORDER_ROOM`] reach the bound (or the messages plus the two an order
//!   writes). A bucket without a bound (`max_bytes` -1) always has room.
//! - One stream info request per [`READ_EVERY`] at most, made by the check
//!   (every heartbeat, 1 s): a heartbeat costs at most one JetStream API
//!   call, and nothing is read while nothing checks. The check waits for
//!   the answer a moment ([`READ_WAIT`]), then answers from the last one.
//! - An info that cannot be read (a NATS node lost, the stream electing a
//!   leader) passes, logged at debug: the store being unreachable is
//!   another matter, which every instance would fail alike for seconds, and
//!   the leadership must not move for it.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::stream;
use tokio::{sync::watch, time::Instant};
use tracing::debug;

/// The room one more order takes, with a margin: its claim and its record
/// take some 0.82 KiB together as stored.
pub(crate) const ORDER_ROOM: u64 = 1024;

/// How often the bucket's stream info is read at most (the heartbeat
/// checks every second: each check reads once).
const READ_EVERY: Duration = Duration::from_millis(500);

/// How long a check waits for the read it started before it answers from
/// the last one (the SDK bounds the check by the heartbeat).
const READ_WAIT: Duration = Duration::from_millis(250);

/// How long one read may take before it counts as unreadable.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// The order store's room, as its health check reads it. Cloned into the
/// check.
#[derive(Debug, Clone)]
pub(crate) struct Room {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    stream: stream::Stream,
    /// How long settled orders are kept, for the reason's words.
    keep_settled: Duration,
    state: Mutex<State>,
    /// Counts the reads done, for a check waiting on one.
    reads: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct State {
    /// When the last read was started.
    started: Option<Instant>,
    in_flight: bool,
    /// Why the store is full, as last read (`None`: room, or unreadable).
    full: Option<String>,
}

impl Room {
    /// The room of the bucket whose stream is `stream`.
    pub(crate) fn new(stream: stream::Stream, keep_settled: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                stream,
                keep_settled,
                state: Mutex::new(State::default()),
                reads: watch::channel(0).0,
            }),
        }
    }

    /// The health check: `Err` with the reason while the store is full.
    pub(crate) async fn check(&self) -> Result<(), String> {
        let mut reads = self.shared.reads.subscribe();
        reads.mark_unchanged();
        if self.read_if_due() {
            let _ = tokio::time::timeout(READ_WAIT, reads.changed()).await;
        }
        match &self.shared.state().full {
            Some(why) => Err(why.clone()),
            None => Ok(()),
        }
    }

    /// Starts a read of the stream's info unless one is under way or the
    /// last began less than [`READ_EVERY`] ago. Whether it started one.
    /// The read runs on its own, so a check that stops waiting for it
    /// (or is dropped at the heartbeat's bound) does not cancel it.
    fn read_if_due(&self) -> bool {
        {
            let mut st = self.shared.state();
            if st.in_flight || st.started.is_some_and(|at| at.elapsed() < READ_EVERY) {
                return false;
            }
            st.in_flight = true;
            st.started = Some(Instant::now());
        }
        let shared = self.shared.clone();
        tokio::spawn(async move {
            let mut stream = shared.stream.clone();
            let full = match tokio::time::timeout(READ_TIMEOUT, stream.info()).await {
                Ok(Ok(info)) => full(
                    &info.config,
                    Held {
                        bytes: info.state.bytes,
                        messages: info.state.messages,
                    },
                    shared.keep_settled,
                ),
                Ok(Err(e)) => {
                    debug!(error = %e, "the order store's stream info cannot be read; \
                        its room is not judged meanwhile");
                    None
                }
                Err(_) => {
                    debug!(timeout = ?READ_TIMEOUT, "the order store's stream info took too \
                        long; its room is not judged meanwhile");
                    None
                }
            };
            {
                let mut st = shared.state();
                st.full = full;
                st.in_flight = false;
            }
            shared.reads.send_modify(|n| *n = n.wrapping_add(1));
        });
        true
    }
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a bucket's stream holds (from its info's state).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Held {
    pub(crate) bytes: u64,
    pub(crate) messages: u64,
}

/// Why a bucket whose stream has `config` and holds `state` has no room
/// for one more order; `None` while it has.
pub(crate) fn full(config: &stream::Config, state: Held, keep_settled: Duration) -> Option<String> {
    let used = if config.max_bytes > 0
        && state.bytes.saturating_add(ORDER_ROOM) >= config.max_bytes.unsigned_abs()
    {
        format!(
            "{} of {} used",
            bytes(state.bytes),
            bytes(config.max_bytes.unsigned_abs())
        )
    } else if config.max_messages > 0
        && state.messages.saturating_add(2) > config.max_messages.unsigned_abs()
    {
        format!("{} of {} entries used", state.messages, config.max_messages)
    } else {
        return None;
    };
    let until = if config.allow_message_ttl {
        format!(
            "orders are refused until settled ones expire (kept {}) or its bound is raised",
            humantime::format_duration(keep_settled)
        )
    } else {
        // Made before settled orders expired: `aegis init` turns it on.
        "orders are refused until its bound is raised (this bucket keeps settled orders \
         for good until `aegis init` turns expiry on)"
            .to_owned()
    };
    Some(format!("the order store is full: {used}; {until}"))
}

/// `n` bytes for a reader: `1.5 MiB`.
fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(max_bytes: i64, max_messages: i64, expiring: bool) -> stream::Config {
        stream::Config {
            name: "KV_orders".into(),
            max_bytes,
            max_messages,
            allow_message_ttl: expiring,
            ..Default::default()
        }
    }

    fn holding(bytes: u64, messages: u64) -> Held {
        Held { bytes, messages }
    }

    const KEEP: Duration = Duration::from_secs(6 * 3600);

    #[test]
    fn full_is_no_room_for_one_more_order() {
        let mib = 1024 * 1024;
        let config = bucket(mib, -1, true);
        assert_eq!(full(&config, holding(0, 0), KEEP), None);
        assert_eq!(
            full(&config, holding(mib as u64 - ORDER_ROOM - 1, 1000), KEEP),
            None
        );
        let said = full(&config, holding(mib as u64 - ORDER_ROOM, 1000), KEEP).unwrap();
        assert_eq!(
            said,
            "the order store is full: 1023.0 KiB of 1.0 MiB used; orders are refused until \
             settled ones expire (kept 6h) or its bound is raised"
        );
        assert!(said.chars().count() <= aegis_sdk::contracts::control::STATUS_DETAIL_MAX_CHARS);
        let said = full(&config, holding(mib as u64, 1000), KEEP).unwrap();
        assert!(said.contains("1.0 MiB of 1.0 MiB used"), "{said}");
    }

    #[test]
    fn an_unbounded_bucket_always_has_room() {
        let config = bucket(-1, -1, true);
        assert_eq!(full(&config, holding(u64::MAX, u64::MAX), KEEP), None);
        assert_eq!(
            full(&bucket(0, 0, true), holding(1 << 40, 1 << 30), KEEP),
            None
        );
    }

    #[test]
    fn a_message_bound_counts_the_two_keys_of_an_order() {
        let config = bucket(-1, 100, true);
        assert_eq!(full(&config, holding(10, 98), KEEP), None);
        let said = full(&config, holding(10, 99), KEEP).unwrap();
        assert!(said.contains("99 of 100 entries used"), "{said}");
    }

    #[test]
    fn a_bucket_that_expires_nothing_says_what_frees_it() {
        let said = full(&bucket(4096, -1, false), holding(4096, 10), KEEP).unwrap();
        assert!(said.contains("aegis init"), "{said}");
        assert!(!said.contains("expire (kept"), "{said}");
    }
}
