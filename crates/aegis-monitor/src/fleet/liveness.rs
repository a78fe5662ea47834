//! Crashes seen at once: the NATS server announces every client connection
//! that opens or closes (`$SYS.ACCOUNT.{account}.CONNECT` / `.DISCONNECT`,
//! readable from the system account). Every Aegis instance records the name
//! of the connection it serves over (`metadata.natsConnection`, unique per
//! connection), so a disconnect advisory for that name means the instance
//! is gone — within milliseconds of a SIGKILL, an OOM kill or a panic,
//! instead of when its registry record's TTL runs out.
//!
//! [`ConnectionStates`] keeps, per connection name, the connection the
//! server last announced and whether it closed. A client that reconnects
//! (its NATS node died, or was restarted gracefully) is announced again by
//! the node it moved to; the disconnect of its old connection may arrive
//! before or after that, so a disconnect counts when it is about the
//! connection last announced for the name, or about one that started after
//! it (the advisory's `client.start`): the connect advisory of a client's
//! new connection is missed while the monitor's own connection reconnects
//! (its NATS node died too), and its disconnect must still count. Starts
//! are compared across servers, so one must be more than a second
//! ([`CLOCK_MARGIN`]) after the other to count as newer.
//!
//! What this cannot see: a process that hangs with its connection open, or
//! a partition between an instance and its server (the server notices only
//! at its own ping interval). The registry TTL is the backstop for those.

use std::{collections::HashMap, time::Duration};

use aegis_sdk::{AegisConfig, Connection};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Subjects of the advisories (any account).
const CONNECT: &str = "$SYS.ACCOUNT.*.CONNECT";
const DISCONNECT: &str = "$SYS.ACCOUNT.*.DISCONNECT";

/// How much later one connection's start must be than another's to count
/// as the newer one: starts are stamped by different servers, whose clocks
/// may disagree by this much (a client that reconnects within it and then
/// dies is seen down by its missing beats instead).
const CLOCK_MARGIN: chrono::TimeDelta = chrono::TimeDelta::seconds(1);

/// Whether a connection that started at `a` started clearly after one that
/// started at `b` (unknown starts never do).
fn started_after(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a > b + CLOCK_MARGIN)
}

/// How long a closed connection's state is kept (its instances' records
/// expire long before).
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// One advisory, as far as the fleet needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectionEvent {
    /// The client's connection name.
    pub(crate) name: String,
    /// Which connection: the server's id and the client id on it.
    pub(crate) connection: (String, u64),
    /// When that connection was opened (the advisory's `client.start`).
    pub(crate) started: Option<DateTime<Utc>>,
    /// `true` for a disconnect.
    pub(crate) closed: bool,
    /// When the server saw it.
    pub(crate) at: DateTime<Utc>,
}

#[derive(Deserialize)]
struct Advisory {
    timestamp: DateTime<Utc>,
    server: AdvisoryServer,
    client: AdvisoryClient,
}

#[derive(Deserialize)]
struct AdvisoryServer {
    id: String,
}

#[derive(Deserialize)]
struct AdvisoryClient {
    id: u64,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
    #[serde(default)]
    name: String,
}

/// Parses an advisory; `None` for anything unreadable or unnamed.
pub(crate) fn parse(payload: &[u8], closed: bool) -> Option<ConnectionEvent> {
    let a: Advisory = serde_json::from_slice(payload).ok()?;
    (!a.client.name.is_empty()).then_some(ConnectionEvent {
        name: a.client.name,
        connection: (a.server.id, a.client.id),
        started: a.client.start,
        closed,
        at: a.timestamp,
    })
}

/// The state of every named connection the advisories told of.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStates {
    by_name: HashMap<String, NameState>,
}

#[derive(Debug)]
struct NameState {
    /// The connection last announced (opened) for this name.
    current: Option<(String, u64)>,
    /// When that connection was opened, as its server said.
    started: Option<DateTime<Utc>>,
    /// When it closed, if it did.
    closed_at: Option<DateTime<Utc>>,
    /// When this entry last changed (for forgetting old ones).
    touched: std::time::Instant,
}

impl ConnectionStates {
    /// Applies one advisory; returns whether the name's closed state changed.
    pub(crate) fn apply(&mut self, event: &ConnectionEvent) -> bool {
        let state = self
            .by_name
            .entry(event.name.clone())
            .or_insert_with(|| NameState {
                current: None,
                started: None,
                closed_at: None,
                touched: std::time::Instant::now(),
            });
        state.touched = std::time::Instant::now();
        let was_closed = state.closed_at.is_some();
        let same = state.current.as_ref() == Some(&event.connection);
        if event.closed {
            // A late disconnect of a connection the client already replaced
            // says nothing about the client. One of a connection that
            // started clearly after the one last announced does: its connect
            // advisory was missed (the monitor's own connection was
            // reconnecting), and it is the client's latest.
            if state.current.is_none() || same {
                state.current = Some(event.connection.clone());
                state.started = state.started.or(event.started);
                state.closed_at.get_or_insert(event.at);
            } else if started_after(event.started, state.started) {
                state.current = Some(event.connection.clone());
                state.started = event.started;
                state.closed_at = Some(event.at);
            }
        } else {
            // The connect and disconnect advisories arrive on two
            // subscriptions, so a connection's disconnect may be read
            // before its connect: that connect, or one of a connection
            // clearly older than the current, says nothing new.
            let stale = (same && state.closed_at.is_some())
                || (!same && started_after(state.started, event.started));
            if !stale {
                state.current = Some(event.connection.clone());
                state.started = event.started;
                state.closed_at = None;
            }
        }
        was_closed != state.closed_at.is_some()
    }

    /// When the connection named `name` closed, if it is known to be closed.
    pub(crate) fn closed_at(&self, name: &str) -> Option<DateTime<Utc>> {
        self.by_name.get(name).and_then(|s| s.closed_at)
    }

    /// Forgets names untouched for a long time.
    pub(crate) fn forget_old(&mut self) {
        self.by_name
            .retain(|_, s| s.closed_at.is_none() || s.touched.elapsed() < FORGET_AFTER);
    }
}

/// How the monitor reaches the system account.
#[derive(Debug, Clone)]
pub(crate) struct SystemAccess {
    pub(crate) config: AegisConfig,
}

/// Why the system account's advisories cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum SystemAccessError {
    /// The system account connection failed (wrong credentials, no server).
    #[error("cannot connect to the NATS system account")]
    Connect(#[source] aegis_sdk::ConnectError),
    /// The server refused the subscription (the user may not read `$SYS`).
    #[error("cannot subscribe to the connection advisories ($SYS.ACCOUNT.*.CONNECT/DISCONNECT)")]
    Subscribe(#[source] async_nats::Error),
}

/// Connects to the system account and forwards connect/disconnect
/// advisories until `cancel`. Returns the connection (drain it on stop).
pub(crate) async fn follow(
    access: SystemAccess,
    tx: mpsc::UnboundedSender<ConnectionEvent>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<Connection, SystemAccessError> {
    let conn = Connection::connect(access.config)
        .await
        .map_err(SystemAccessError::Connect)?;
    let client = conn.client().clone();
    let sub = |e: async_nats::SubscribeError| SystemAccessError::Subscribe(e.into());
    let mut opened = client.subscribe(CONNECT).await.map_err(sub)?;
    let mut closed = client.subscribe(DISCONNECT).await.map_err(sub)?;
    // A permissions violation arrives asynchronously; a flush round trip
    // makes it (and a dead connection) show before we claim to follow.
    client
        .flush()
        .await
        .map_err(|e| SystemAccessError::Subscribe(e.into()))?;
    info!("following the NATS server's connection advisories (crashes are seen at once)");
    tasks.spawn(async move {
        loop {
            let (msg, is_close) = tokio::select! {
                () = cancel.cancelled() => return,
                m = opened.next() => (m, false),
                m = closed.next() => (m, true),
            };
            let Some(msg) = msg else {
                warn!("the connection advisories subscription ended; crashes are now seen at the registry TTL");
                return;
            };
            if let Some(event) = parse(&msg.payload, is_close)
                && tx.send(event).is_err()
            {
                return;
            }
        }
    });
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str, server: &str, cid: u64, closed: bool) -> ConnectionEvent {
        ConnectionEvent {
            name: name.into(),
            connection: (server.into(), cid),
            started: None,
            closed,
            at: Utc::now(),
        }
    }

    #[test]
    fn a_disconnect_closes_the_name_and_a_reconnect_opens_it() {
        let mut s = ConnectionStates::default();
        assert!(!s.apply(&event("a", "s1", 1, false)));
        assert!(s.closed_at("a").is_none());
        assert!(s.apply(&event("a", "s1", 1, true)));
        assert!(s.closed_at("a").is_some());
        assert!(s.apply(&event("a", "s2", 7, false)));
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_late_disconnect_of_a_replaced_connection_is_ignored() {
        // The client moved to s2 (announced first); s1's disconnect arrives after.
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply(&event("a", "s2", 4, false));
        assert!(!s.apply(&event("a", "s1", 1, true)));
        assert!(s.closed_at("a").is_none());
    }

    fn started(mut e: ConnectionEvent, secs_after_epoch: i64) -> ConnectionEvent {
        e.started = DateTime::from_timestamp(secs_after_epoch, 0);
        e
    }

    #[test]
    fn a_disconnect_of_a_newer_connection_whose_connect_was_missed_counts() {
        // The client moved from s1 to s2 while the monitor's own connection
        // was reconnecting, so s2's connect advisory never reached it. When
        // the client dies, s2's disconnect is about a connection that
        // started after the one last announced: the client is gone.
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        assert!(s.apply(&started(event("a", "s2", 9, true), 200)));
        assert!(s.closed_at("a").is_some());
        // A reconnect after that opens it again, as always.
        assert!(s.apply(&started(event("a", "s3", 2, false), 300)));
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_late_disconnect_of_an_older_connection_is_ignored_by_its_start() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s2", 4, false), 200));
        assert!(!s.apply(&started(event("a", "s1", 1, true), 100)));
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_disconnect_read_before_its_connect_keeps_the_client_down() {
        // The client moved to s2 and died at once; the two advisories of
        // its s2 connection were read in the wrong order.
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        assert!(s.apply(&started(event("a", "s2", 9, true), 200)));
        assert!(!s.apply(&started(event("a", "s2", 9, false), 200)));
        assert!(s.closed_at("a").is_some());
    }

    #[test]
    fn a_late_connect_of_an_older_connection_is_ignored() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s2", 4, false), 200));
        assert!(!s.apply(&started(event("a", "s1", 1, false), 100)));
        // The current one's disconnect still counts.
        assert!(s.apply(&started(event("a", "s2", 4, true), 200)));
    }

    #[test]
    fn starts_within_the_clock_margin_are_not_taken_as_newer() {
        // s2's clock is a little behind s1's: a late disconnect of the old
        // s1 connection must not close the live s2 one.
        let at = |secs, nanos| DateTime::from_timestamp(secs, nanos);
        let mut s = ConnectionStates::default();
        let mut old = event("a", "s1", 1, false);
        old.started = at(100, 0);
        s.apply(&old);
        let mut new = event("a", "s2", 4, false);
        new.started = at(99, 500_000_000);
        s.apply(&new);
        old.closed = true;
        assert!(!s.apply(&old));
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_disconnect_of_an_unknown_connection_counts() {
        // The monitor started after the client connected.
        let mut s = ConnectionStates::default();
        assert!(s.apply(&event("b", "s1", 3, true)));
        assert!(s.closed_at("b").is_some());
    }

    #[test]
    fn advisories_parse() {
        let json = br#"{"type":"io.nats.server.advisory.v1.client_disconnect","timestamp":"2026-11-30T13:17:35.989517889Z",
            "server":{"name":"n1","id":"NDWF","ver":"2.15.1"},
            "client":{"start":"2026-11-30T13:17:30.5Z","id":8,"acc":"AEGIS","name":"aegis-1-x","kind":"Client"},"reason":"Client Closed"}"#;
        let e = parse(json, true).unwrap();
        assert_eq!(e.name, "aegis-1-x");
        assert_eq!(e.started, "2026-11-30T13:17:30.5Z".parse().ok());
        assert_eq!(e.connection, ("NDWF".to_owned(), 8));
        assert!(e.closed);
        let unnamed =
            br#"{"timestamp":"2026-11-30T13:17:35Z","server":{"id":"S"},"client":{"id":1}}"#;
        assert!(parse(unnamed, true).is_none());
        assert!(parse(b"not json", true).is_none());
    }
}
