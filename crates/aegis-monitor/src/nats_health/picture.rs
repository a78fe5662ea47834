//! The picture `GET /api/nats` serves ([`NatsPicture`]) and how one is
//! derived from what was last heard ([`Tracker`]): pure logic, no I/O.
//!
//! A stream has no leader when the listing named it `missing`, or when
//! its listed leader is a server the picture shows down (the listing may
//! be seconds old: it waits 4 s for a leader that does not answer). A
//! server is down when, with the system account, it did not answer the
//! last ping round; without it, when a stream's leader reports it offline
//! or has not heard from it for [`SILENT_PEER`].

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use aegis_contracts::models::rfc3339;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::listing::{ListPage, ListedStream, Peer};

/// How long a stream's leader may not hear from a peer before the picture
/// takes it for down (no system account): raft heartbeats are sent every
/// second, so three are missed.
pub(crate) const SILENT_PEER: Duration = Duration::from_secs(3);

/// The NATS cluster as the monitor last saw it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NatsPicture {
    /// When this picture was taken (RFC 3339 UTC, milliseconds).
    #[serde(serialize_with = "rfc3339::serialize")]
    #[schema(value_type = String, format = DateTime, example = "2026-12-04T19:30:00.123Z")]
    pub as_of: DateTime<Utc>,
    /// How often the picture is refreshed, in milliseconds.
    #[schema(example = 1000)]
    pub check_every_ms: u64,
    /// Whether the JetStream API answers.
    pub jetstream: JetStreamState,
    /// Every server known, sorted by name.
    pub servers: Vec<ServerState>,
    /// Every JetStream stream (KV buckets are `KV_{bucket}`), sorted by name.
    pub streams: Vec<StreamState>,
}

/// Whether the JetStream API answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JetStreamState {
    /// The meta leader answers.
    Ok,
    /// The JetStream API did not answer in time: the meta group is
    /// electing a leader (or has no quorum).
    NoMetaLeader,
    /// The monitor has no NATS connection right now.
    Unreachable,
}

/// One NATS server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServerState {
    /// The server's name (`server_name`).
    #[schema(example = "n1")]
    pub name: String,
    /// Whether it is up.
    pub up: bool,
    /// When it was last seen going down or up (RFC 3339 UTC); null if up
    /// ever since the monitor started.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub since: Option<DateTime<Utc>>,
}

/// One JetStream stream and its raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamState {
    /// The stream's name.
    #[schema(example = "KV_orders")]
    pub name: String,
    /// Its configured number of replicas.
    #[schema(example = 3)]
    pub replicas: usize,
    /// The server leading it; null while it has none (electing one).
    #[schema(example = "n2", required = true)]
    pub leader: Option<String>,
    /// Its replica peers reported offline by its leader, or on a server
    /// the picture shows down; sorted.
    pub offline: Vec<String>,
    /// When it last lost or got a leader (RFC 3339 UTC); null if led by
    /// the same server ever since the monitor started.
    #[serde(serialize_with = "rfc3339::option::serialize")]
    #[schema(value_type = Option<String>, format = DateTime, required = true)]
    pub since: Option<DateTime<Utc>>,
}

impl NatsPicture {
    /// The picture before the first check.
    pub(crate) fn empty(at: DateTime<Utc>, every: Duration) -> Self {
        NatsPicture {
            as_of: at,
            check_every_ms: every.as_millis() as u64,
            jetstream: JetStreamState::Unreachable,
            servers: Vec::new(),
            streams: Vec::new(),
        }
    }
}

/// One stream of the last complete listing.
#[derive(Debug, Clone, Default)]
pub(crate) struct Listed {
    pub(crate) replicas: usize,
    /// `None` when the listing named it missing.
    pub(crate) leader: Option<String>,
    pub(crate) peers: Vec<Peer>,
}

/// The whole stream listing (every page), by stream name.
pub(crate) type Listing = BTreeMap<String, Listed>;

/// Merges listing pages; `local` names the server answering for streams
/// listed without cluster information (a server without clustering).
pub(crate) fn listing_of(pages: Vec<ListPage>, local: &str) -> Listing {
    let mut out = Listing::new();
    for page in pages {
        for s in page.streams {
            let (name, listed) = listed_of(s, local);
            out.insert(name, listed);
        }
        for name in page.missing {
            out.entry(name).or_default().leader = None;
        }
    }
    out
}

/// One stream as the listing or its own `STREAM.INFO` answer describes
/// it, by name.
pub(crate) fn listed_of(s: ListedStream, local: &str) -> (String, Listed) {
    // Without cluster information the server is not clustered and leads
    // all its streams itself; with it, an empty leader is none (a member
    // answering for a group it sees leaderless).
    let (leader, cluster) = match s.cluster {
        Some(c) => (c.leader.clone().filter(|l| !l.is_empty()), c),
        None => (Some(local.to_owned()), Default::default()),
    };
    (
        s.config.name,
        Listed {
            replicas: s.config.num_replicas,
            leader,
            peers: cluster.replicas,
        },
    )
}

/// What one check heard.
#[derive(Debug, Default)]
pub(crate) struct Heard {
    /// The monitor's connection is up.
    pub(crate) connected: bool,
    /// The server the monitor is connected to.
    pub(crate) local: Option<String>,
    /// The JetStream API answered.
    pub(crate) meta_answered: bool,
    /// With the system account: the servers that answered this round.
    pub(crate) answered: Option<BTreeSet<String>>,
}

/// How long a server shown down, and no stream's peer, stays shown.
const FORGET_DOWN: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

#[derive(Debug)]
struct Seen<T> {
    value: T,
    since: Option<DateTime<Utc>>,
}

/// What the task remembers between checks: the last listing and the
/// transitions that give `since`.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    listing: Listing,
    /// The peers of each stream last seen with a leader (a missing
    /// stream is listed without them).
    peers_of: BTreeMap<String, BTreeSet<String>>,
    /// The leader each stream was last listed with.
    led_by: BTreeMap<String, String>,
    servers: BTreeMap<String, Seen<bool>>,
    streams: BTreeMap<String, Seen<Option<String>>>,
    /// When the listing in use was asked for.
    listing_asked: Option<Instant>,
    /// Streams whose own answer named a leader, asked after the listing in
    /// use was: fresher than it, and than a listing asked before them.
    probed: BTreeMap<String, (Instant, Listed)>,
}

impl Tracker {
    /// Takes a new complete listing, asked for at `asked`. A stream that
    /// named its leader itself since then is still shown as it answered.
    pub(crate) fn listed(&mut self, listing: Listing, asked: Instant) {
        if self.listing_asked.is_some_and(|last| last > asked) {
            return;
        }
        self.listing_asked = Some(asked);
        self.probed.retain(|_, (at, _)| *at > asked);
        for (name, listed) in &listing {
            if let Some(leader) = &listed.leader {
                self.led_by.insert(name.clone(), leader.clone());
                let peers = self.peers_of.entry(name.clone()).or_default();
                peers.clear();
                peers.insert(leader.clone());
                peers.extend(listed.peers.iter().map(|p| p.name.clone()));
            }
        }
        // A missing stream is named without its size: the size last listed.
        let mut listing = listing;
        for (name, new) in listing.iter_mut() {
            if new.replicas == 0 {
                new.replicas = self.listing.get(name).map_or(0, |old| old.replicas);
            }
        }
        self.peers_of.retain(|name, _| listing.contains_key(name));
        self.led_by.retain(|name, _| listing.contains_key(name));
        self.probed.retain(|name, _| listing.contains_key(name));
        self.listing = listing;
    }

    /// Takes a stream's own answer to `STREAM.INFO`, asked at `asked`,
    /// when it names a leader: the stream is shown led again, whatever the
    /// listing (which may be seconds old) says, until a listing asked
    /// after it. An answer naming no leader changes nothing: the stream is
    /// shown as the listing and the servers say, which errs towards alarm.
    /// Servers are judged from the listing alone: a leader elected a
    /// moment ago does not yet know which of its peers are gone.
    pub(crate) fn probed(&mut self, asked: Instant, name: &str, answer: Listed) {
        if answer.leader.is_none()
            || !self.listing.contains_key(name)
            || self.listing_asked.is_some_and(|listing| listing > asked)
        {
            return;
        }
        self.probed.insert(name.to_owned(), (asked, answer));
    }

    /// The picture at `now` from what was `heard` and the last listing.
    pub(crate) fn picture(
        &mut self,
        heard: &Heard,
        now: DateTime<Utc>,
        every: Duration,
    ) -> NatsPicture {
        let jetstream = if !heard.connected {
            JetStreamState::Unreachable
        } else if !heard.meta_answered {
            JetStreamState::NoMetaLeader
        } else {
            JetStreamState::Ok
        };
        let up = self.servers_up(heard, now);
        let servers = up
            .iter()
            .map(|(name, &up)| ServerState {
                name: name.clone(),
                up,
                since: remember(&mut self.servers, name, up, up, now),
            })
            .collect::<Vec<_>>();
        self.servers.retain(|name, _| up.contains_key(name));
        let is_down = |name: &str| up.get(name) == Some(&false);
        let mut streams = Vec::with_capacity(self.listing.len());
        for (name, listed) in &self.listing {
            let replicas = listed.replicas;
            // A stream's own answer since the listing, if it named a leader.
            let listed = self.probed.get(name).map_or(listed, |(_, answer)| answer);
            let leader = listed.leader.clone().filter(|l| !is_down(l));
            let mut offline: BTreeSet<String> = listed
                .peers
                .iter()
                .filter(|p| p.offline)
                .map(|p| p.name.clone())
                .collect();
            if let Some(peers) = self.peers_of.get(name) {
                offline.extend(peers.iter().filter(|p| is_down(p)).cloned());
            }
            let led = leader.is_some();
            let since = remember(&mut self.streams, name, leader.clone(), led, now);
            streams.push(StreamState {
                name: name.clone(),
                replicas: if listed.replicas == 0 {
                    replicas
                } else {
                    listed.replicas
                },
                leader,
                offline: offline.into_iter().collect(),
                since,
            });
        }
        let listing = &self.listing;
        self.streams.retain(|name, _| listing.contains_key(name));
        NatsPicture {
            as_of: now,
            check_every_ms: every.as_millis() as u64,
            jetstream,
            servers,
            streams,
        }
    }

    /// Every server known and whether it is up.
    fn servers_up(&self, heard: &Heard, now: DateTime<Utc>) -> BTreeMap<String, bool> {
        // A server down this long and no stream's peer any more is
        // forgotten: a node removed for good, or a standalone server
        // named by its id, which is new at each start.
        let forget_before = now - FORGET_DOWN;
        let mut known: BTreeSet<String> = self
            .servers
            .iter()
            .filter(|(_, seen)| seen.value || seen.since.is_none_or(|since| since > forget_before))
            .map(|(name, _)| name.clone())
            .collect();
        known.extend(self.peers_of.values().flatten().cloned());
        known.extend(heard.local.iter().cloned());
        // A round nobody answered, or fewer than half of the servers up
        // (the monitor's own system connection dropping mid-round), says
        // more about the monitor than about them: the listing decides.
        let up_before = self.servers.values().filter(|seen| seen.value).count();
        let answered = heard
            .answered
            .as_ref()
            .filter(|a| !a.is_empty() && a.len() * 2 >= up_before);
        if let Some(answered) = answered {
            known.extend(answered.iter().cloned());
            return known
                .into_iter()
                .map(|name| {
                    let up = answered.contains(&name);
                    (name, up)
                })
                .collect();
        }
        // Without the system account: the listing's evidence. A listed
        // leader answered the meta leader, so it was up; the last leader of
        // a missing stream did not; a peer up to date
        // with its leader is up; one reported offline or silent is down (a
        // new leader reports a peer it never heard from as not current,
        // active 0: no evidence either way).
        let mut alive = BTreeSet::new();
        let mut dead = BTreeSet::new();
        // Stronger than a peer's report in the same listing, which its
        // leader may have given up to 4 s earlier.
        let mut gone = BTreeSet::new();
        for (name, listed) in &self.listing {
            if listed.leader.is_none() {
                // Missing: its last leader did not answer for 4 s.
                gone.extend(self.led_by.get(name).cloned());
            }
            if let Some(leader) = &listed.leader {
                alive.insert(leader.clone());
                for p in &listed.peers {
                    if p.offline || p.active > SILENT_PEER {
                        dead.insert(p.name.clone());
                    } else if p.current {
                        alive.insert(p.name.clone());
                    }
                }
            }
        }
        if heard.connected {
            alive.extend(heard.local.iter().cloned());
        }
        known
            .into_iter()
            .map(|name| {
                let up = if gone.contains(&name) {
                    false
                } else if alive.contains(&name) {
                    true
                } else if dead.contains(&name) {
                    false
                } else {
                    // No news: as last shown.
                    self.servers.get(&name).is_none_or(|s| s.value)
                };
                (name, up)
            })
            .collect()
    }
}

/// Records `value` for `name`; returns since when it has been so. A
/// value first seen and `healthy` has no `since` (it may have been so
/// long before the monitor started); one first seen unhealthy, and any
/// later change, is stamped `now`.
fn remember<T: PartialEq>(
    seen: &mut BTreeMap<String, Seen<T>>,
    name: &str,
    value: T,
    healthy: bool,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match seen.get_mut(name) {
        Some(s) => {
            if s.value != value {
                s.value = value;
                s.since = Some(now);
            }
            s.since
        }
        None => {
            let since = (!healthy).then_some(now);
            seen.insert(name.to_owned(), Seen { value, since });
            since
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    fn peer(name: &str, active_ms: u64) -> Peer {
        Peer {
            name: name.to_owned(),
            current: active_ms > 0,
            offline: false,
            active: Duration::from_millis(active_ms),
        }
    }

    fn led(leader: &str, peers: Vec<Peer>) -> Listed {
        Listed {
            replicas: 3,
            leader: Some(leader.to_owned()),
            peers,
        }
    }

    fn heard(answered: Option<&[&str]>) -> Heard {
        Heard {
            connected: true,
            local: Some("n1".to_owned()),
            meta_answered: true,
            answered: answered.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    #[test]
    fn a_stream_led_by_a_server_that_stopped_answering_has_no_leader() {
        let mut tracker = Tracker::default();
        tracker.listed(
            Listing::from([(
                "KV_orders".to_owned(),
                led("n3", vec![peer("n1", 5), peer("n2", 5)]),
            )]),
            Instant::now(),
        );
        let p = tracker.picture(&heard(Some(&["n1", "n2", "n3"])), t(0), EVERY);
        assert_eq!(p.streams[0].leader.as_deref(), Some("n3"));
        assert!(p.servers.iter().all(|s| s.up && s.since.is_none()));
        assert_eq!(p.streams[0].since, None);

        // n3 dies; the listing (seconds old) still names it leader.
        let p = tracker.picture(&heard(Some(&["n1", "n2"])), t(1), EVERY);
        assert_eq!(p.streams[0].leader, None);
        assert_eq!(p.streams[0].offline, ["n3"]);
        assert_eq!(p.streams[0].since, Some(t(1)));
        let n3 = &p.servers[2];
        assert_eq!(
            (n3.name.as_str(), n3.up, n3.since),
            ("n3", false, Some(t(1)))
        );

        // The listing names it missing, then led by n2.
        let mut missing = Listing::new();
        missing.insert("KV_orders".to_owned(), Listed::default());
        tracker.listed(missing, Instant::now());
        let p = tracker.picture(&heard(Some(&["n1", "n2"])), t(4), EVERY);
        assert_eq!((p.streams[0].replicas, p.streams[0].since), (3, Some(t(1))));
        assert_eq!(p.streams[0].offline, ["n3"]);
        tracker.listed(
            Listing::from([(
                "KV_orders".to_owned(),
                led("n2", vec![peer("n1", 5), peer("n3", 0)]),
            )]),
            Instant::now(),
        );
        let p = tracker.picture(&heard(Some(&["n1", "n2"])), t(6), EVERY);
        assert_eq!(p.streams[0].leader.as_deref(), Some("n2"));
        assert_eq!(p.streams[0].since, Some(t(6)));
        assert_eq!(p.streams[0].offline, ["n3"]);
    }

    /// A stream's own answer naming a leader shows it led at once, and a
    /// listing asked before that answer (taken while it had none) does
    /// not undo it; one asked after it is the truth again. An answer older
    /// than the listing in use, or naming no leader, changes nothing.
    #[test]
    fn a_streams_own_answer_shows_its_new_leader_before_the_next_listing() {
        let mut tracker = Tracker::default();
        let listing_of = |leader: Option<&str>| {
            Listing::from([(
                "KV_orders".to_owned(),
                match leader {
                    Some(l) => led(l, vec![peer("n1", 5), peer("n2", 5)]),
                    None => Listed::default(),
                },
            )])
        };
        tracker.listed(listing_of(Some("n3")), Instant::now());
        let h = heard(Some(&["n1", "n2"]));
        let p = tracker.picture(&h, t(1), EVERY);
        assert_eq!(p.streams[0].leader, None, "n3 is down");

        let slow_listing = Instant::now();
        let early = Instant::now();
        let no_leader = Listed {
            replicas: 3,
            leader: None,
            peers: vec![],
        };
        tracker.probed(early, "KV_orders", no_leader);
        assert_eq!(tracker.picture(&h, t(2), EVERY).streams[0].leader, None);
        let answer = led("n2", vec![peer("n1", 5), peer("n3", 0)]);
        tracker.probed(Instant::now(), "KV_orders", answer.clone());
        tracker.probed(Instant::now(), "KV_unknown", answer.clone());
        let p = tracker.picture(&h, t(3), EVERY);
        assert_eq!(p.streams.len(), 1);
        let st = &p.streams[0];
        assert_eq!(st.leader.as_deref(), Some("n2"));
        assert_eq!((st.replicas, st.since), (3, Some(t(3))));
        assert_eq!(st.offline, ["n3"], "a peer on a server shown down");

        // The listing asked before the answer returns: missing.
        tracker.listed(listing_of(None), slow_listing);
        let p = tracker.picture(&h, t(4), EVERY);
        assert_eq!(p.streams[0].leader.as_deref(), Some("n2"));
        assert_eq!(p.streams[0].replicas, 3);

        // One asked after it is the truth again, and an answer older than
        // it is not taken.
        tracker.listed(listing_of(None), Instant::now());
        tracker.probed(early, "KV_orders", answer);
        assert_eq!(tracker.picture(&h, t(5), EVERY).streams[0].leader, None);
    }

    /// A round of pings the monitor's own system connection lost (its
    /// node died mid-round: nobody answered), or that fewer than half of
    /// the servers up answered, says more about the monitor than about
    /// the servers: it judges none of them, and the listing's evidence is
    /// used instead, as the fleet's view does with the same rounds.
    #[test]
    fn a_round_nobody_or_few_answered_judges_no_server() {
        let mut tracker = Tracker::default();
        tracker.listed(
            Listing::from([(
                "KV_orders".to_owned(),
                led("n3", vec![peer("n1", 5), peer("n2", 5)]),
            )]),
            Instant::now(),
        );
        let all = tracker.picture(&heard(Some(&["n1", "n2", "n3"])), t(0), EVERY);
        assert!(all.servers.iter().all(|s| s.up), "{:?}", all.servers);
        for few in [&[][..], &["n2"][..]] {
            let p = tracker.picture(&heard(Some(few)), t(1), EVERY);
            assert!(
                p.servers.iter().all(|s| s.up),
                "after a round answered by {few:?}: {:?}",
                p.servers
            );
            assert_eq!(p.streams[0].leader.as_deref(), Some("n3"));
        }
        // Two of three answering still judges the third.
        let p = tracker.picture(&heard(Some(&["n1", "n2"])), t(2), EVERY);
        let down: Vec<_> = p
            .servers
            .iter()
            .filter(|s| !s.up)
            .map(|s| &s.name)
            .collect();
        assert_eq!(down, ["n3"]);
    }

    #[test]
    fn without_the_system_account_a_silent_peer_is_down() {
        let mut tracker = Tracker::default();
        tracker.listed(
            Listing::from([
                (
                    "A".to_owned(),
                    led("n1", vec![peer("n2", 5), peer("n3", 5)]),
                ),
                (
                    "B".to_owned(),
                    led("n3", vec![peer("n1", 5), peer("n2", 5)]),
                ),
            ]),
            Instant::now(),
        );
        let p = tracker.picture(&heard(None), t(0), EVERY);
        assert!(p.servers.iter().all(|s| s.up), "{p:?}");
        tracker.listed(
            Listing::from([
                (
                    "A".to_owned(),
                    led("n1", vec![peer("n2", 5), peer("n3", 4_000)]),
                ),
                ("B".to_owned(), Listed::default()),
            ]),
            Instant::now(),
        );
        let p = tracker.picture(&heard(None), t(5), EVERY);
        let up: Vec<_> = p.servers.iter().map(|s| (s.name.as_str(), s.up)).collect();
        assert_eq!(up, [("n1", true), ("n2", true), ("n3", false)]);
        assert_eq!(p.streams[1].leader, None);
        assert_eq!(p.streams[1].offline, ["n3"]);
    }

    #[test]
    fn no_connection_and_no_meta_leader_are_told_apart() {
        let mut tracker = Tracker::default();
        let mut h = heard(None);
        h.meta_answered = false;
        assert_eq!(
            tracker.picture(&h, t(0), EVERY).jetstream,
            JetStreamState::NoMetaLeader
        );
        h.connected = false;
        assert_eq!(
            tracker.picture(&h, t(0), EVERY).jetstream,
            JetStreamState::Unreachable
        );
    }

    #[test]
    fn the_picture_is_the_documented_json() {
        let mut tracker = Tracker::default();
        tracker.listed(
            Listing::from([("KV_orders".to_owned(), led("n1", vec![]))]),
            Instant::now(),
        );
        let mut p = tracker.picture(&heard(Some(&["n1"])), t(0), EVERY);
        p.as_of = "2026-12-04T19:30:00.123Z".parse().unwrap();
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            serde_json::json!({
                "asOf": "2026-12-04T19:30:00.123Z",
                "checkEveryMs": 1000,
                "jetstream": "ok",
                "servers": [{"name": "n1", "up": true, "since": null}],
                "streams": [{"name": "KV_orders", "replicas": 3, "leader": "n1", "offline": [], "since": null}],
            })
        );
    }

    #[test]
    fn a_server_down_for_long_and_no_streams_peer_is_forgotten() {
        let mut t = Tracker::default();
        let t0: DateTime<Utc> = "2026-12-04T10:00:00Z".parse().unwrap();
        let every = Duration::from_secs(1);
        let heard = |answered: &[&str]| Heard {
            connected: true,
            local: Some("b".into()),
            meta_answered: true,
            answered: Some(answered.iter().map(|s| (*s).to_owned()).collect()),
        };
        t.picture(&heard(&["a", "b"]), t0, every);
        let p = t.picture(&heard(&["b"]), t0 + chrono::TimeDelta::seconds(1), every);
        assert!(p.servers.iter().any(|s| s.name == "a" && !s.up));
        let p = t.picture(&heard(&["b"]), t0 + chrono::TimeDelta::minutes(11), every);
        assert!(p.servers.iter().all(|s| s.name != "a"), "{:?}", p.servers);
    }
}
