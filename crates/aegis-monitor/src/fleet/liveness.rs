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
//! An advisory sent while the monitor's connection to the system account
//! is down (its NATS node died) never reaches it. So when that connection
//! comes back, and when it first opens, every server is asked for its open
//! connections (`$SYS.REQ.SERVER.PING.CONNZ`, [`Listing`]): a connection
//! last announced on a server whose complete list lacks it has closed.
//! Measured (`tests/truth.rs`): an instance SIGKILLed as the monitor's
//! node died was shown down after 0.2 s, where its missing beats took 3.4.
//! A listing closes only what it could have seen: a connection the server
//! has accepted but not read the CONNECT of yet is listed without a name,
//! and still counts as open; and one announced after the listing was asked
//! for is left to what follows (after a NATS restart, with every client
//! reconnecting at once, the scale trial saw 132 of 1,010 live instances
//! taken for closed so, and shown down for good).
//!
//! A server that dies (SIGKILL) sends no disconnect advisory for its
//! clients. Every server is pinged twice a second ([`ping_servers`]); one
//! that answered before and misses two rounds is taken for dead, and so is
//! every connection last announced on it: a live client has moved to
//! another server by then, and its connect advisory opens it again.
//! Measured (`tests/truth.rs`): an instance killed with its node was shown
//! down after 1.25-1.27 s, where its missing beats took 3.1. A server that
//! said it is leaving (`$SYS.SERVER.{id}.LAMEDUCK`, `.SHUTDOWN`: a planned
//! restart) is never judged by its silence: its clients leave it over the
//! lame duck period, each announced where it arrives (without this, `aegis
//! bench chaos` saw four live instances of a restarted node shown down for
//! 1.08 s).
//!
//! Every such judgement is an inference, and a sign of life overrules it:
//! a beat, or a record write stamped after the close, that reaches this
//! monitor [`REVIVE_AFTER`] after it took a connection for closed proves
//! that the instance's connection (or a new one under the same name,
//! whose connect advisory was missed) lives ([`ConnectionStates::sign_of_life`]).
//!
//! What this cannot see: a process that hangs with its connection open, or
//! a partition between an instance and its server (the server notices only
//! at its own ping interval). The missing beats tell those, and the
//! registry TTL ends their records; what this adds is that their
//! connection is still open ([`ConnectionStates::is_open`]), so one whose
//! record expired is not taken for gone while the server holds it
//! (`unresponsive_expired`, `task.rs`).

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    time::Duration,
};

use aegis_sdk::{AegisConfig, Connection};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Subjects of the advisories (any account).
const CONNECT: &str = "$SYS.ACCOUNT.*.CONNECT";
const DISCONNECT: &str = "$SYS.ACCOUNT.*.DISCONNECT";
/// Asks every server for its open connections (each answers once).
const CONNZ: &str = "$SYS.REQ.SERVER.PING.CONNZ";
/// A server entering lame duck mode or shutting down says so here
/// (`$SYS.SERVER.{id}.LAMEDUCK`, `.SHUTDOWN`).
const SERVER_LEAVING: &str = "$SYS.SERVER.*.*";
/// The most connections one server lists; a server with more sends a first
/// page, which opens connections but closes none.
const LISTING_LIMIT: usize = 10_000;
/// How long answers to [`CONNZ`] are awaited.
const LISTING_WAIT: Duration = Duration::from_secs(2);
/// How often the advisories' connection is checked for a reconnect.
const STATE_CHECK: Duration = Duration::from_millis(50);
/// How often every server is pinged ([`ping_servers`]), and how long its
/// answers are awaited.
const SERVER_CHECK: Duration = Duration::from_millis(500);
const PING_WAIT: Duration = Duration::from_millis(400);
/// Rounds of pings a server that answered before may miss before it is
/// taken for dead, with every connection on it.
const MISSED_ROUNDS: u32 = 2;
/// Rounds after which a silent server is forgotten (ten minutes).
const FORGET_SILENT_ROUNDS: u32 = 1200;

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

/// How long after this monitor took a connection for closed a sign of
/// life of its instance reopens it ([`ConnectionStates::sign_of_life`]): a
/// beat sent before the connection closed, and read late (this monitor
/// busy, its other connection slower), must not bring a dead instance
/// back. A live one beats again within its interval after that.
pub(crate) const REVIVE_AFTER: Duration = Duration::from_secs(2);

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

/// What a server says of its open connections ([`list_connections`]): read
/// when the monitor starts following the advisories and whenever its
/// connection for them comes back, so that advisories sent meanwhile are
/// not missed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listing {
    /// The server's id.
    pub(crate) server: String,
    /// Its name (empty if it gave none).
    pub(crate) server_name: String,
    /// Its clock when it listed them.
    pub(crate) at: DateTime<Utc>,
    /// Each named open connection: its name, client id and start.
    pub(crate) open: Vec<(String, u64, Option<DateTime<Utc>>)>,
    /// The client ids of the open connections listed without a name: the
    /// server has accepted them but not read their CONNECT yet (a client
    /// reconnecting right then). Open all the same: the name last
    /// announced on one of them is not closed by this listing.
    pub(crate) unnamed: Vec<u64>,
    /// When this monitor asked for it: a connection announced to it after
    /// that may be missing from the listing without having closed.
    pub(crate) asked: std::time::Instant,
    /// Whether `open` is every open connection (not a first page).
    pub(crate) complete: bool,
}

/// Which servers answered one round of [`ping_servers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Answered {
    /// The ids of the servers that answered.
    pub(crate) servers: HashSet<String>,
    /// When the round was asked.
    pub(crate) at: DateTime<Utc>,
}

/// The servers that answered the latest round of [`ping_servers`], by
/// name, for the view of the NATS cluster (`/api/nats`), which reads the
/// fleet's rounds instead of pinging every server itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PingRound {
    /// The names of the servers that answered.
    pub(crate) names: BTreeSet<String>,
    /// When the round was asked.
    pub(crate) asked: tokio::time::Instant,
}

/// The latest [`PingRound`]; `None` until the first one ends.
pub(crate) type PingRounds = watch::Receiver<Option<PingRound>>;

/// What the fleet task is told of connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ConnectionNews {
    /// One advisory.
    Advisory(ConnectionEvent),
    /// One server's list of its open connections.
    Listed(Listing),
    /// Which servers answered a round of pings.
    Answered(Answered),
    /// A server said it is leaving (lame duck mode, or shutting down): its
    /// clients move off it themselves, each announced where it arrives,
    /// so its silence is not taken for their death.
    Leaving(String),
}

/// The state of every named connection the advisories told of.
#[derive(Debug, Default)]
pub(crate) struct ConnectionStates {
    by_name: HashMap<String, NameState>,
    /// Per server that ever answered a ping: the rounds it has missed
    /// since it last answered.
    servers: HashMap<String, u32>,
    /// Servers that said they are leaving: never judged by their silence.
    leaving: HashSet<String>,
}

#[derive(Debug)]
struct NameState {
    /// The connection last announced (opened) for this name.
    current: Option<(String, u64)>,
    /// When that connection was opened, as its server said.
    started: Option<DateTime<Utc>>,
    /// When it closed, if it did.
    closed_at: Option<DateTime<Utc>>,
    /// Whether `closed_at` is the time a disconnect advisory gave (when the
    /// connection closed), not when a listing or the server's silence told
    /// this monitor (later).
    advised: bool,
    /// Whether it was taken for closed only because its server fell
    /// silent ([`ConnectionStates::apply_answered`]): the server answering
    /// again opens it again.
    silenced: bool,
    /// When this monitor last learnt the connection is open (an advisory
    /// or a listing that opened it, or a sign of life): a listing asked
    /// for before that does not close it.
    announced: Option<std::time::Instant>,
    /// When this monitor took it for closed: a sign of life that reaches
    /// it [`REVIVE_AFTER`] later reopens it.
    closed_seen: Option<std::time::Instant>,
    /// Whether it was reopened by a sign of life of its instance after its
    /// close: the instance lives, over `current` or over a newer connection
    /// not announced to this monitor. Neither a listing that lacks
    /// `current`, nor the silence of its server, nor a late disconnect of
    /// `current` closes it again; any announcement of a connection of the
    /// name replaces it.
    revived: bool,
    /// When this entry last changed (for forgetting old ones).
    touched: std::time::Instant,
}

impl NameState {
    /// Takes the connection for closed at `at` (the server's time, or when
    /// a listing or a round of pings said so).
    fn close(&mut self, at: DateTime<Utc>, advised: bool, silenced: bool) {
        let now = std::time::Instant::now();
        self.closed_at = Some(at);
        self.advised = advised;
        self.silenced = silenced;
        self.revived = false;
        self.closed_seen = Some(now);
        self.touched = now;
    }

    /// Takes the connection for open again (a server said so, or its
    /// instance showed it lives).
    fn reopen(&mut self) {
        let now = std::time::Instant::now();
        self.closed_at = None;
        self.advised = false;
        self.silenced = false;
        self.closed_seen = None;
        self.announced = Some(now);
        self.touched = now;
    }
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
                advised: false,
                silenced: false,
                announced: None,
                closed_seen: None,
                revived: false,
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
            // A name reopened by its instance's sign of life outlived the
            // connection last announced: that one's disconnect (read late)
            // says nothing new.
            if same && state.revived {
            } else if state.current.is_none() || same {
                state.current = Some(event.connection.clone());
                state.started = state.started.or(event.started);
                // The server's word replaces the guess from its silence.
                if state.silenced || state.closed_at.is_none() {
                    state.close(event.at, true, false);
                }
            } else if started_after(event.started, state.started) {
                state.current = Some(event.connection.clone());
                state.started = event.started;
                state.close(event.at, true, false);
            }
        } else {
            // The connect and disconnect advisories arrive on two
            // subscriptions, so a connection's disconnect may be read
            // before its connect: that connect, or one of a connection
            // clearly older than the current, says nothing new.
            // A connection taken for closed only because its server fell
            // silent is open when a server says so.
            // So does a late connect of the connection a name reopened by
            // a sign of life outlived.
            let stale = (same && state.closed_at.is_some() && !state.silenced)
                || (same && state.revived)
                || (!same && started_after(state.started, event.started));
            if !stale {
                state.current = Some(event.connection.clone());
                state.started = event.started;
                state.revived = false;
                state.reopen();
            }
        }
        was_closed != state.closed_at.is_some()
    }

    /// Applies one server's list of its open connections; returns the
    /// names whose closed state changed. Each listed connection counts as
    /// announced. A connection last announced on that server that the
    /// complete list lacks, named or not, has closed, at the latest when
    /// the server listed (its disconnect advisory was missed: sent while
    /// the monitor reconnected) — unless it was announced to this monitor
    /// after the listing was asked for (the server may have listed it
    /// before it knew its name, or before it was accepted), or reopened by
    /// its instance's sign of life. Connections on servers that did not
    /// answer (dead) are left to the beats.
    pub(crate) fn apply_listing(&mut self, listing: &Listing) -> HashSet<String> {
        let mut changed = HashSet::new();
        for (name, cid, started) in &listing.open {
            let event = ConnectionEvent {
                name: name.clone(),
                connection: (listing.server.clone(), *cid),
                started: *started,
                closed: false,
                at: listing.at,
            };
            if self.apply(&event) {
                changed.insert(name.clone());
            }
        }
        if !listing.complete {
            return changed;
        }
        let open: HashSet<u64> = listing
            .open
            .iter()
            .map(|(_, cid, _)| *cid)
            .chain(listing.unnamed.iter().copied())
            .collect();
        for (name, state) in &mut self.by_name {
            let gone = state.closed_at.is_none()
                && !state.revived
                && state
                    .current
                    .as_ref()
                    .is_some_and(|(server, cid)| *server == listing.server && !open.contains(cid))
                // A connection opened after the server listed is not in it.
                && state.started.is_none_or(|started| started <= listing.at)
                // Nor, maybe, one announced after the listing was asked for.
                && state.announced.is_none_or(|announced| announced <= listing.asked);
            if gone {
                state.close(listing.at, false, false);
                changed.insert(name.clone());
            }
        }
        changed
    }

    /// Applies a round of pings; returns the names whose closed state
    /// changed. A server that answered before and has missed
    /// [`MISSED_ROUNDS`] rounds since is gone (SIGKILLed: it sends no
    /// disconnect advisory for its clients), and so is every connection
    /// last announced on it: a client that lives has moved to another
    /// server by then (its connect advisory, or the next listing, opens it
    /// again). A round nobody answered (this monitor's own connection is
    /// down) says nothing.
    pub(crate) fn apply_answered(&mut self, round: &Answered) -> HashSet<String> {
        let mut changed = HashSet::new();
        // Fewer than half of the servers known alive: more likely this
        // monitor's view is partial (its connection on a node whose routes
        // are not up yet) than that the others died.
        let alive = self
            .servers
            .values()
            .filter(|missed| **missed < MISSED_ROUNDS)
            .count();
        if round.servers.is_empty() || round.servers.len() * 2 < alive {
            return changed;
        }
        let mut back = HashSet::new();
        for server in &round.servers {
            if self.leaving.contains(server) {
                continue;
            }
            if self
                .servers
                .insert(server.clone(), 0)
                .is_some_and(|missed| missed >= MISSED_ROUNDS)
            {
                back.insert(server.clone());
            }
        }
        let mut gone = HashSet::new();
        self.servers.retain(|server, missed| {
            if !round.servers.contains(server) {
                *missed += 1;
                if *missed >= MISSED_ROUNDS {
                    gone.insert(server.clone());
                }
            }
            // A server silent this long is forgotten (its clients closed
            // long ago; a restarted node comes back under a new id).
            *missed < FORGET_SILENT_ROUNDS
        });
        if gone.is_empty() && back.is_empty() {
            return changed;
        }
        for (name, state) in &mut self.by_name {
            let Some((server, _)) = state.current.as_ref() else {
                continue;
            };
            // A name reopened by its instance's sign of life lives
            // elsewhere: it is not judged by its old server's silence.
            if state.closed_at.is_none() && !state.revived && gone.contains(server) {
                state.close(round.at, false, true);
                changed.insert(name.clone());
            } else if state.silenced && back.contains(server) {
                // Only slow, not dead: its clients were never told closed.
                state.reopen();
                changed.insert(name.clone());
            }
        }
        changed
    }

    /// Notes a sign of life of the instance served over the connection
    /// `name`, read now: a beat (`written` `None`), or a record write its
    /// instance stamped `written`. Returns whether that reopened the
    /// connection: it was taken for closed at least [`REVIVE_AFTER`] ago,
    /// and a record write is stamped clearly after the close. A process
    /// that beats or writes after its connection closed is not gone: the
    /// close was inferred wrongly (a listing or a round of pings), or the
    /// instance reconnected under the same name and its connect advisory
    /// was missed.
    pub(crate) fn sign_of_life(&mut self, name: &str, written: Option<DateTime<Utc>>) -> bool {
        let Some(state) = self.by_name.get_mut(name) else {
            return false;
        };
        let (Some(closed_at), Some(seen)) = (state.closed_at, state.closed_seen) else {
            return false;
        };
        if seen.elapsed() < REVIVE_AFTER
            || written.is_some_and(|written| written <= closed_at + CLOCK_MARGIN)
        {
            return false;
        }
        state.reopen();
        state.revived = true;
        true
    }

    /// Notes that `server` said it is leaving (see [`ConnectionNews::Leaving`]).
    pub(crate) fn leaving(&mut self, server: &str) {
        self.servers.remove(server);
        self.leaving.insert(server.to_owned());
    }

    /// Whether the connection named `name` is known to be open: a server
    /// announced or listed it, and nothing since said it closed (a hung
    /// process's connection stays open until its server gives up on it).
    pub(crate) fn is_open(&self, name: &str) -> bool {
        self.by_name
            .get(name)
            .is_some_and(|s| s.current.is_some() && s.closed_at.is_none())
    }

    /// When the connection named `name` closed, if it is known to be closed.
    pub(crate) fn closed_at(&self, name: &str) -> Option<DateTime<Utc>> {
        self.by_name.get(name).and_then(|s| s.closed_at)
    }

    /// When the connection named `name` closed, as its disconnect advisory
    /// said: `None` while it is open, and when its close was only inferred
    /// (a listing without it, its server's silence), later than it was.
    pub(crate) fn advised_closed_at(&self, name: &str) -> Option<DateTime<Utc>> {
        self.by_name
            .get(name)
            .filter(|s| s.advised)
            .and_then(|s| s.closed_at)
    }

    /// Forgets names untouched for a long time: closed ones, and open ones
    /// whose server no longer answers the pings (it left, and their
    /// disconnect advisory was lost: nothing would ever close them). Open
    /// ones on a server that answers are kept, however old; so is
    /// everything before the first round of pings has answered.
    pub(crate) fn forget_old(&mut self) {
        // Servers that left: each restart brings a new id; a handful is
        // plenty to remember.
        if self.leaving.len() > 64 {
            self.leaving.clear();
        }
        let servers = &self.servers;
        self.by_name.retain(|_, s| {
            let server_gone = !servers.is_empty()
                && s.current
                    .as_ref()
                    .is_some_and(|(server, _)| !servers.contains_key(server));
            (s.closed_at.is_none() && !server_gone) || s.touched.elapsed() < FORGET_AFTER
        });
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

/// Asks every server for one of its connections (a ping: the answer is
/// small) and sends which servers answered within [`PING_WAIT`], to the
/// fleet task by id and to `rounds` by name.
async fn ping_servers(
    client: async_nats::Client,
    tx: mpsc::UnboundedSender<ConnectionNews>,
    rounds: watch::Sender<Option<PingRound>>,
) {
    if client.connection_state() != async_nats::connection::State::Connected {
        return;
    }
    let (at, asked) = (Utc::now(), tokio::time::Instant::now());
    let mut servers = HashSet::new();
    let mut names = BTreeSet::new();
    ask_every_server(&client, 1, PING_WAIT, |listing| {
        servers.insert(listing.server);
        if !listing.server_name.is_empty() {
            names.insert(listing.server_name);
        }
        true
    })
    .await;
    // A later round may have ended first (this one's answers were slow).
    rounds.send_if_modified(|latest| {
        let newer = latest.as_ref().is_none_or(|l| l.asked < asked);
        if newer {
            *latest = Some(PingRound { names, asked });
        }
        newer
    });
    let _ = tx.send(ConnectionNews::Answered(Answered { servers, at }));
}

/// Asks every server for its connections (`$SYS.REQ.SERVER.PING.CONNZ`)
/// and sends each answer to `tx` as it comes, for up to [`LISTING_WAIT`].
async fn list_connections(client: async_nats::Client, tx: mpsc::UnboundedSender<ConnectionNews>) {
    ask_every_server(&client, LISTING_LIMIT, LISTING_WAIT, |listing| {
        tx.send(ConnectionNews::Listed(listing)).is_ok()
    })
    .await;
}

/// Asks every server for at most `limit` of its connections ([`CONNZ`])
/// and hands each readable answer to `each` as it comes, for up to `wait`
/// or until `each` says it wants no more.
async fn ask_every_server(
    client: &async_nats::Client,
    limit: usize,
    wait: Duration,
    mut each: impl FnMut(Listing) -> bool,
) {
    let inbox = client.new_inbox();
    let Ok(mut answers) = client.subscribe(inbox.clone()).await else {
        return;
    };
    let ask = serde_json::json!({ "limit": limit }).to_string();
    let asked = std::time::Instant::now();
    if let Err(e) = client.publish_with_reply(CONNZ, inbox, ask.into()).await {
        warn!(error = %aegis_sdk::startup::Causes(&e), "could not ask the servers for their connections");
        return;
    }
    let until = tokio::time::Instant::now() + wait;
    while let Ok(Some(answer)) = tokio::time::timeout_at(until, answers.next()).await {
        match parse_listing(&answer.payload, asked) {
            Some(listing) => {
                if !each(listing) {
                    return;
                }
            }
            None => warn!("a server's list of connections could not be read"),
        }
    }
}

#[derive(Deserialize)]
struct ConnzAnswer {
    #[serde(default)]
    server: ConnzServer,
    data: Connz,
}

#[derive(Deserialize, Default)]
struct ConnzServer {
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct Connz {
    server_id: String,
    now: DateTime<Utc>,
    #[serde(default)]
    total: usize,
    #[serde(default)]
    connections: Vec<ConnzEntry>,
}

#[derive(Deserialize)]
struct ConnzEntry {
    cid: u64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    start: Option<DateTime<Utc>>,
}

/// Parses one server's answer to [`CONNZ`], asked for at `asked`; `None`
/// for anything unreadable.
pub(crate) fn parse_listing(payload: &[u8], asked: std::time::Instant) -> Option<Listing> {
    let answer: ConnzAnswer = serde_json::from_slice(payload).ok()?;
    let data = answer.data;
    let complete = data.connections.len() >= data.total;
    let (named, unnamed): (Vec<ConnzEntry>, Vec<ConnzEntry>) = data
        .connections
        .into_iter()
        .partition(|c| !c.name.is_empty());
    Some(Listing {
        server: data.server_id,
        server_name: answer.server.name,
        at: data.now,
        open: named
            .into_iter()
            .map(|c| (c.name, c.cid, c.start))
            .collect(),
        unnamed: unnamed.into_iter().map(|c| c.cid).collect(),
        asked,
        complete,
    })
}

/// Connects to the system account and forwards connect/disconnect
/// advisories until `cancel`, every server's list of its connections
/// when it starts and whenever its connection comes back (advisories sent
/// meanwhile were missed), and the rounds of pings. Returns the connection
/// (drain it on stop) and the rounds.
pub(crate) async fn follow(
    access: SystemAccess,
    tx: mpsc::UnboundedSender<ConnectionNews>,
    cancel: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(Connection, PingRounds), SystemAccessError> {
    let conn = Connection::connect(access.config)
        .await
        .map_err(SystemAccessError::Connect)?;
    let client = conn.client().clone();
    let sub = |e: async_nats::SubscribeError| SystemAccessError::Subscribe(e.into());
    let mut opened = client.subscribe(CONNECT).await.map_err(sub)?;
    let mut closed = client.subscribe(DISCONNECT).await.map_err(sub)?;
    let mut leaving = client.subscribe(SERVER_LEAVING).await.map_err(sub)?;
    // A permissions violation arrives asynchronously; a flush round trip
    // makes it (and a dead connection) show before we claim to follow.
    client
        .flush()
        .await
        .map_err(|e| SystemAccessError::Subscribe(e.into()))?;
    info!("following the NATS server's connection advisories (crashes are seen at once)");
    // Subscribed first, so nothing falls between the list and the advisories.
    tasks.spawn(list_connections(client.clone(), tx.clone()));
    let (rounds, rounds_rx) = watch::channel(None);
    tasks.spawn(async move {
        use std::sync::atomic::Ordering;
        let connects = || client.statistics().connects.load(Ordering::Relaxed);
        let mut listed_at = connects();
        let mut state_check = tokio::time::interval(STATE_CHECK);
        state_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut server_check = tokio::time::interval(SERVER_CHECK);
        server_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let (msg, is_close) = tokio::select! {
                () = cancel.cancelled() => return,
                m = opened.next() => (m, false),
                m = closed.next() => (m, true),
                Some(m) = leaving.next() => {
                    // $SYS.SERVER.{id}.LAMEDUCK or .SHUTDOWN (the other
                    // server events under this wildcard say nothing here)
                    let tokens: Vec<&str> = m.subject.split('.').collect();
                    if let [_, _, id, "LAMEDUCK" | "SHUTDOWN"] = tokens[..]
                        && tx.send(ConnectionNews::Leaving(id.to_owned())).is_err()
                    {
                        return;
                    }
                    continue;
                }
                _ = server_check.tick() => {
                    tokio::spawn(ping_servers(client.clone(), tx.clone(), rounds.clone()));
                    continue;
                }
                _ = state_check.tick() => {
                    let now = connects();
                    if now != listed_at
                        && client.connection_state() == async_nats::connection::State::Connected
                    {
                        listed_at = now;
                        info!("connected to NATS again: asking the servers which connections are open");
                        tokio::spawn(list_connections(client.clone(), tx.clone()));
                    }
                    continue;
                }
            };
            let Some(msg) = msg else {
                warn!("the connection advisories subscription ended; crashes are now seen at the registry TTL");
                return;
            };
            if let Some(event) = parse(&msg.payload, is_close)
                && tx.send(ConnectionNews::Advisory(event)).is_err()
            {
                return;
            }
        }
    });
    Ok((conn, rounds_rx))
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
    fn only_a_connection_announced_and_not_closed_is_open() {
        let mut s = ConnectionStates::default();
        assert!(!s.is_open("a"), "never announced");
        s.apply(&event("a", "s1", 1, false));
        assert!(s.is_open("a"));
        s.apply(&event("a", "s1", 1, true));
        assert!(!s.is_open("a"));
        // A disconnect of one never announced: closed, not open.
        s.apply(&event("b", "s1", 2, true));
        assert!(!s.is_open("b"));
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

    fn listing(server: &str, open: &[(&str, u64, i64)], complete: bool) -> Listing {
        Listing {
            server: server.into(),
            server_name: String::new(),
            at: DateTime::from_timestamp(1_000, 0).unwrap(),
            open: open
                .iter()
                .map(|(name, cid, start)| {
                    ((*name).into(), *cid, DateTime::from_timestamp(*start, 0))
                })
                .collect(),
            unnamed: Vec::new(),
            asked: std::time::Instant::now(),
            complete,
        }
    }

    /// The scale trial's restart (finding 1): a client reconnecting as the
    /// monitor's listing is taken is announced by its connect advisory
    /// (read first), while the server listed its connection before it read
    /// its CONNECT: without a name. The listing must not close it; one that
    /// lacks a connection's client id altogether still closes it.
    #[test]
    fn a_connection_listed_without_a_name_is_not_closed_by_the_listing() {
        let json = br#"{"server":{"name":"n1","id":"S1"},"data":{"server_id":"S1","now":"1970-01-01T00:16:40Z",
            "num_connections":2,"total":2,"offset":0,"limit":10000,"connections":[
            {"cid":5,"name":"c","start":"1970-01-01T00:01:40Z"},
            {"cid":6,"start":"1970-01-01T00:16:39.9Z"}]}}"#;
        let asked = std::time::Instant::now();
        let mut s = ConnectionStates::default();
        // "a" moved to S1 (cid 6) just before the listing; "b" died on S1
        // while the monitor reconnected; "c" lives there.
        s.apply(&started(event("a", "S1", 6, false), 999));
        s.apply(&started(event("b", "S1", 2, false), 100));
        s.apply(&started(event("c", "S1", 5, false), 100));
        // Announced before the listing was asked for, to rule that out.
        for state in s.by_name.values_mut() {
            state.announced = asked.checked_sub(Duration::from_millis(1));
        }
        let listing = parse_listing(json, asked).unwrap();
        assert_eq!(listing.unnamed, vec![6]);
        let changed = s.apply_listing(&listing);
        assert_eq!(changed, HashSet::from(["b".to_owned()]));
        assert!(s.closed_at("a").is_none(), "mid-handshake, not closed");
        assert!(s.is_open("a"));
        assert!(s.closed_at("c").is_none());
    }

    /// The same race when the server listed the connection before it even
    /// accepted it (its start reads a little earlier than the listing's
    /// `now`: another clock, or a slow listing): announced to the monitor
    /// after it asked, it is not closed by that listing. A listing asked
    /// for after the announcement still closes it.
    #[test]
    fn a_listing_closes_no_connection_announced_after_it_was_asked() {
        let mut s = ConnectionStates::default();
        let mut early = listing("s1", &[], true);
        s.apply(&started(event("a", "s1", 1, false), 999));
        assert!(s.apply_listing(&early).is_empty());
        assert!(s.closed_at("a").is_none());
        early.asked = std::time::Instant::now();
        assert_eq!(s.apply_listing(&early), HashSet::from(["a".to_owned()]));
        assert!(s.closed_at("a").is_some());
    }

    /// Takes `name`'s close for one this monitor learnt `ago`.
    fn closed_ago(s: &mut ConnectionStates, name: &str, ago: Duration) {
        let state = s.by_name.get_mut(name).unwrap();
        state.closed_seen = std::time::Instant::now().checked_sub(ago);
    }

    /// A beat (or a record write stamped after the close) read well after
    /// a connection was taken for closed reopens it: the instance lives.
    /// One read at once (sent before the close, read late) does not, nor
    /// does a record written before the close. Reopened so, neither the
    /// next listing that lacks the old connection, nor its server's
    /// silence, nor its late disconnect closes it again; a newer
    /// connection's disconnect does.
    #[test]
    fn a_sign_of_life_after_a_close_reopens_it() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        s.apply_answered(&round(&["s1"]));
        let mut relisted = listing("s1", &[], true);
        relisted.asked = std::time::Instant::now();
        assert_eq!(s.apply_listing(&relisted), HashSet::from(["a".to_owned()]));
        let closed_at = s.closed_at("a").unwrap();

        assert!(!s.sign_of_life("a", None), "a beat read at once");
        assert!(!s.sign_of_life("nobody", None));
        closed_ago(&mut s, "a", REVIVE_AFTER + Duration::from_millis(10));
        assert!(
            !s.sign_of_life("a", Some(closed_at)),
            "a record written before the close"
        );
        assert!(s.closed_at("a").is_some());
        assert!(s.sign_of_life("a", Some(closed_at + chrono::TimeDelta::seconds(2))));
        assert!(s.closed_at("a").is_none() && s.is_open("a"));
        assert!(!s.sign_of_life("a", None), "open already");

        relisted.asked = std::time::Instant::now();
        assert!(s.apply_listing(&relisted).is_empty(), "{:?}", s.by_name);
        s.apply(&started(event("a", "s1", 1, true), 100));
        for _ in 0..3 {
            assert!(s.apply_answered(&round(&[])).is_empty());
            assert!(s.apply_answered(&round(&["s2"])).is_empty());
        }
        assert!(s.closed_at("a").is_none());
        // Its newer connection (never announced) closes: gone.
        assert!(s.apply(&started(event("a", "s2", 4, true), 300)));
        assert!(s.closed_at("a").is_some());
        // A beat right after does not reopen it; one long after does.
        assert!(!s.sign_of_life("a", None));
        closed_ago(&mut s, "a", REVIVE_AFTER + Duration::from_millis(10));
        assert!(s.sign_of_life("a", None));
    }

    /// The silence of a server reopens on a beat as any other inferred close.
    #[test]
    fn a_sign_of_life_overrules_a_silent_servers_verdict() {
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply_answered(&round(&["s1", "s2"]));
        s.apply_answered(&round(&["s2"]));
        assert_eq!(
            s.apply_answered(&round(&["s2"])),
            HashSet::from(["a".to_owned()])
        );
        closed_ago(&mut s, "a", REVIVE_AFTER + Duration::from_millis(10));
        assert!(s.sign_of_life("a", None));
        for _ in 0..3 {
            assert!(s.apply_answered(&round(&["s2"])).is_empty());
        }
        assert!(s.is_open("a"));
        // Announced on s2 after all: an ordinary open connection again.
        assert!(!s.apply(&event("a", "s2", 7, false)));
        assert!(s.apply(&event("a", "s2", 7, true)));
        assert!(s.closed_at("a").is_some());
    }

    /// The failover timeline measures a hand-over from a close time only
    /// when a disconnect advisory gave it: a close inferred from a listing
    /// is when this monitor learnt of it, later; and a connection open
    /// again (a reconnect, a move off a lame-duck server) has no close time.
    #[test]
    fn only_an_advised_close_of_a_connection_still_closed_has_a_close_time() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        s.apply(&event("a", "s1", 1, true));
        assert!(s.advised_closed_at("a").is_some());
        s.apply(&started(event("a", "s2", 5, false), 200));
        assert!(s.advised_closed_at("a").is_none(), "open again");

        s.apply(&started(event("b", "s1", 2, false), 100));
        s.apply_listing(&listing("s1", &[], true));
        assert!(s.closed_at("b").is_some());
        assert!(s.advised_closed_at("b").is_none(), "inferred, not advised");
        // The advisory after the listing does not move the close time the
        // views show, and is not taken for an exact one either.
        s.apply(&event("b", "s1", 2, true));
        assert!(s.advised_closed_at("b").is_none());
    }

    #[test]
    fn a_connection_a_complete_listing_lacks_has_closed() {
        // The monitor was reconnecting when "a" died on s1, "b" moved from
        // s1 to s2, and "c" lives on s1; "d" is on s3, which did not answer.
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        s.apply(&started(event("b", "s1", 2, false), 100));
        s.apply(&started(event("c", "s1", 3, false), 100));
        s.apply(&started(event("d", "s3", 4, false), 100));
        let changed = s.apply_listing(&listing("s2", &[("b", 7, 900)], true));
        assert!(changed.is_empty(), "{changed:?}");
        let changed = s.apply_listing(&listing("s1", &[("c", 3, 100)], true));
        assert_eq!(changed, HashSet::from(["a".to_owned()]));
        assert!(s.closed_at("a").is_some());
        assert!(s.closed_at("b").is_none(), "it moved to s2");
        assert!(s.closed_at("c").is_none());
        assert!(s.closed_at("d").is_none(), "its server did not answer");
    }

    #[test]
    fn a_first_page_opens_connections_but_closes_none() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 100));
        assert!(
            s.apply_listing(&listing("s1", &[("e", 5, 100)], false))
                .is_empty()
        );
        assert!(s.closed_at("a").is_none());
        // A listed connection counts as announced: its disconnect counts.
        assert!(s.apply(&started(event("e", "s1", 5, true), 100)));
    }

    #[test]
    fn a_connection_opened_after_the_listing_is_not_closed_by_it() {
        let mut s = ConnectionStates::default();
        s.apply(&started(event("a", "s1", 1, false), 2_000));
        assert!(s.apply_listing(&listing("s1", &[], true)).is_empty());
        assert!(s.closed_at("a").is_none());
    }

    fn round(servers: &[&str]) -> Answered {
        Answered {
            servers: servers.iter().map(|s| (*s).to_owned()).collect(),
            at: Utc::now(),
        }
    }

    /// A connection on a server that left (a lame-duck shutdown) whose
    /// disconnect advisory was lost is never closed: it is forgotten once
    /// untouched as long as a closed one, or every `aegis call` run on
    /// that server would be kept for good. One on a server that answers
    /// is kept, however old.
    #[test]
    fn an_open_connection_on_a_server_gone_is_forgotten_in_time() {
        let mut s = ConnectionStates::default();
        s.apply(&event("on-left", "s1", 1, false));
        s.apply(&event("on-live", "s2", 2, false));
        s.apply_answered(&round(&["s1", "s2"]));
        s.leaving("s1");
        let long_ago = std::time::Instant::now()
            .checked_sub(FORGET_AFTER + Duration::from_secs(1))
            .expect("an instant that long ago");
        for state in s.by_name.values_mut() {
            state.touched = long_ago;
        }
        s.forget_old();
        assert!(!s.by_name.contains_key("on-left"), "{:?}", s.by_name.keys());
        assert!(s.by_name.contains_key("on-live"));
    }

    #[test]
    fn the_clients_left_on_a_server_that_stopped_answering_are_gone() {
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply(&event("b", "s1", 2, false));
        s.apply(&event("c", "s2", 3, false));
        assert!(s.apply_answered(&round(&["s1", "s2"])).is_empty());
        // s1 dies; "b" moves to s2 at once, "a" does not.
        s.apply(&event("b", "s2", 9, false));
        assert!(
            s.apply_answered(&round(&["s2"])).is_empty(),
            "one missed round is not enough"
        );
        assert_eq!(
            s.apply_answered(&round(&["s2"])),
            HashSet::from(["a".to_owned()])
        );
        assert!(s.closed_at("a").is_some());
        assert!(s.closed_at("b").is_none() && s.closed_at("c").is_none());
        // Told once; a later connect opens it again.
        assert!(s.apply_answered(&round(&["s2"])).is_empty());
        assert!(s.apply(&event("a", "s2", 11, false)));
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_server_that_said_it_is_leaving_is_not_judged_by_its_silence() {
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply_answered(&round(&["s1", "s2"]));
        s.leaving("s1");
        for _ in 0..3 {
            assert!(s.apply_answered(&round(&["s2"])).is_empty());
        }
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_server_that_answers_again_was_only_slow() {
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply(&event("b", "s2", 2, false));
        s.apply(&event("c", "s3", 3, false));
        s.apply_answered(&round(&["s1", "s2", "s3"]));
        s.apply_answered(&round(&["s2", "s3"]));
        assert_eq!(
            s.apply_answered(&round(&["s2", "s3"])),
            HashSet::from(["a".to_owned()])
        );
        assert!(s.closed_at("a").is_some());
        assert_eq!(
            s.apply_answered(&round(&["s1", "s2", "s3"])),
            HashSet::from(["a".to_owned()])
        );
        assert!(s.closed_at("a").is_none(), "its server answers again");
        // A disconnect seen meanwhile is the server's word, and stands.
        s.apply_answered(&round(&["s2", "s3"]));
        s.apply_answered(&round(&["s2", "s3"]));
        s.apply(&event("a", "s1", 1, true));
        s.apply_answered(&round(&["s1", "s2", "s3"]));
        assert!(s.closed_at("a").is_some());
    }

    #[test]
    fn a_round_most_servers_miss_says_nothing() {
        // The monitor on a node whose routes are not up yet hears only it.
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply(&event("b", "s2", 2, false));
        s.apply_answered(&round(&["s1", "s2", "s3"]));
        for _ in 0..3 {
            assert!(s.apply_answered(&round(&["s3"])).is_empty());
        }
        assert!(s.closed_at("a").is_none() && s.closed_at("b").is_none());
    }

    #[test]
    fn a_round_nobody_answered_says_nothing() {
        let mut s = ConnectionStates::default();
        s.apply(&event("a", "s1", 1, false));
        s.apply_answered(&round(&["s1"]));
        for _ in 0..5 {
            assert!(s.apply_answered(&round(&[])).is_empty());
        }
        assert!(s.closed_at("a").is_none());
    }

    #[test]
    fn a_servers_listing_parses() {
        let json = br#"{"server":{"name":"n1","id":"NDWF"},"data":{"server_id":"NDWF","now":"2026-12-04T19:00:00Z",
            "num_connections":2,"total":2,"offset":0,"limit":10000,"connections":[
            {"cid":5,"name":"aegis-1-x","start":"2026-12-04T18:59:00Z","ip":"127.0.0.1"},
            {"cid":6,"start":"2026-12-04T18:59:30Z"}]}}"#;
        let l = parse_listing(json, std::time::Instant::now()).unwrap();
        assert_eq!((l.server.as_str(), l.server_name.as_str()), ("NDWF", "n1"));
        assert!(l.complete);
        assert_eq!(l.open.len(), 1, "the unnamed one is apart");
        assert_eq!(l.unnamed, vec![6]);
        assert_eq!(l.open[0].0, "aegis-1-x");
        assert_eq!(l.open[0].1, 5);
        let paged = br#"{"data":{"server_id":"S","now":"2026-12-04T19:00:00Z","total":3,"connections":[{"cid":1,"name":"a"}]}}"#;
        let now = std::time::Instant::now();
        assert!(!parse_listing(paged, now).unwrap().complete);
        assert!(parse_listing(b"{}", now).is_none());
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
