//! Connections that closed before this `aegis status` started listening.
//!
//! The fleet view learns of a crash from the server's disconnect advisory,
//! which reaches only a view that was already listening; the servers' own
//! lists of their connections (`$SYS.REQ.SERVER.PING.CONNZ`) are what it
//! reads at start, and they say which connections are open, not which of
//! the ones it never saw closed. A one-shot `aegis status` starts after the
//! crash it is asked about, so it asks every server once for its open
//! *and* recently closed connections (`"state": 2`, all; a server keeps
//! the last 10,000 closed by default): a connection that some server lists
//! closed and none lists open is gone, since the time that server gives.
//!
//! It judges only when every server of the cluster answered (their count
//! is what the first `$SYS.REQ.SERVER.PING.STATSZ` answer calls
//! `active_servers`) with a complete list: a client that reconnected to a
//! server that did not answer would otherwise be taken for gone.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;

/// Asks every server for its connections.
const CONNZ: &str = "$SYS.REQ.SERVER.PING.CONNZ";
/// Asks every server for its statistics, which count the cluster's servers.
const STATSZ: &str = "$SYS.REQ.SERVER.PING.STATSZ";
/// The most connections (open and closed) one server lists; a server with
/// more sends a first page, and nothing is judged.
const LIMIT: usize = 10_000;

#[derive(Deserialize)]
struct StatszAnswer {
    statsz: Statsz,
}

#[derive(Deserialize)]
struct Statsz {
    #[serde(default)]
    active_servers: usize,
}

#[derive(Deserialize)]
struct ConnzAnswer {
    server: Server,
    data: Connz,
}

#[derive(Deserialize)]
struct Server {
    id: String,
}

#[derive(Deserialize)]
struct Connz {
    #[serde(default)]
    total: usize,
    #[serde(default)]
    connections: Vec<ConnInfo>,
}

#[derive(Deserialize)]
struct ConnInfo {
    #[serde(default)]
    name: String,
    /// When it closed; absent while open.
    #[serde(default)]
    stop: Option<DateTime<Utc>>,
}

/// Per connection name that every server's list shows closed and none
/// open: when it closed (the latest time a server gives). Empty when not
/// every server answered within `wait` with a complete list.
///
/// # Errors
/// When the requests cannot be sent (the system account connection broke).
pub(super) async fn closed_connections(
    system: &async_nats::Client,
    wait: Duration,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let until = tokio::time::Instant::now() + wait;
    let stats_inbox = system.new_inbox();
    let mut stats = system.subscribe(stats_inbox.clone()).await?;
    let conns_inbox = system.new_inbox();
    let mut conns = system.subscribe(conns_inbox.clone()).await?;
    system
        .publish_with_reply(STATSZ, stats_inbox, "".into())
        .await?;
    let ask = serde_json::json!({ "state": 2, "limit": LIMIT }).to_string();
    system
        .publish_with_reply(CONNZ, conns_inbox, ask.into())
        .await?;
    let servers = loop {
        match tokio::time::timeout_at(until, stats.next()).await {
            Ok(Some(m)) => match serde_json::from_slice::<StatszAnswer>(&m.payload) {
                Ok(a) if a.statsz.active_servers > 0 => break a.statsz.active_servers,
                _ => continue,
            },
            _ => return Ok(HashMap::new()),
        }
    };
    let mut answered = HashSet::new();
    let mut open = HashSet::new();
    let mut closed: HashMap<String, DateTime<Utc>> = HashMap::new();
    while answered.len() < servers {
        let Ok(Some(m)) = tokio::time::timeout_at(until, conns.next()).await else {
            return Ok(HashMap::new());
        };
        let Ok(answer) = serde_json::from_slice::<ConnzAnswer>(&m.payload) else {
            continue;
        };
        if answer.data.connections.len() < answer.data.total {
            return Ok(HashMap::new());
        }
        answered.insert(answer.server.id);
        for c in answer.data.connections {
            match c.stop {
                _ if c.name.is_empty() => {}
                None => {
                    open.insert(c.name);
                }
                Some(stop) => {
                    let at = closed.entry(c.name).or_insert(stop);
                    *at = (*at).max(stop);
                }
            }
        }
    }
    closed.retain(|name, _| !open.contains(name));
    Ok(closed)
}
