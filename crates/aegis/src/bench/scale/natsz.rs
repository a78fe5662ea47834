//! What nats-server itself says it delivered: per subscription message
//! counts from `/connz?subs=detail`, and which subscriptions are registry
//! upkeep, from `/jsz` (the deliver subjects of the consumers on the
//! registry's stream) and the liveness-beat subjects.
//!
//! Counting from the server, not from the processes, is the point: it is
//! what the bus carries, whatever a client does with it.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use serde::Deserialize;

/// The stream behind the `service_registry` bucket.
const REGISTRY_STREAM: &str = "KV_service_registry";
/// The liveness beats' subjects (`aegis.heartbeat.{service}.{instance}`).
const BEAT_PREFIX: &str = "aegis.heartbeat.";

#[derive(Debug, Deserialize)]
struct Connz {
    #[serde(default)]
    connections: Vec<Conn>,
}

#[derive(Debug, Deserialize)]
struct Conn {
    cid: u64,
    #[serde(default)]
    name: String,
    #[serde(default, rename = "subscriptions_list_detail")]
    subs: Vec<SubDetail>,
}

#[derive(Debug, Deserialize)]
struct SubDetail {
    subject: String,
    sid: String,
    #[serde(default)]
    msgs: u64,
}

#[derive(Debug, Deserialize)]
struct Jsz {
    #[serde(default)]
    account_details: Vec<AccountDetail>,
}

#[derive(Debug, Deserialize)]
struct AccountDetail {
    #[serde(default)]
    stream_detail: Vec<StreamDetail>,
}

#[derive(Debug, Deserialize)]
struct StreamDetail {
    name: String,
    #[serde(default)]
    state: Option<StreamState>,
    #[serde(default)]
    consumer_detail: Vec<ConsumerDetail>,
}

#[derive(Debug, Deserialize)]
struct StreamState {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    bytes: u64,
}

#[derive(Debug, Deserialize)]
struct ConsumerDetail {
    #[serde(default)]
    config: Option<ConsumerConfig>,
}

#[derive(Debug, Deserialize)]
struct ConsumerConfig {
    #[serde(default)]
    deliver_subject: Option<String>,
}

/// One connection's registry deliveries at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnCounts {
    /// Connection name.
    pub(crate) name: String,
    /// Registry watch deliveries, per subscription (sid → msgs).
    pub(crate) watch: HashMap<String, u64>,
    /// Liveness beats delivered, per subscription.
    pub(crate) beats: HashMap<String, u64>,
}

/// The server's counters at one moment.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Per connection id.
    pub(crate) conns: HashMap<u64, ConnCounts>,
    /// Mean size of a stored registry message (bytes), to estimate the
    /// bytes of the watch deliveries (the server counts bytes only per
    /// connection, not per subscription).
    pub(crate) mean_record_bytes: f64,
}

/// Registry deliveries between two snapshots.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Delivered {
    /// KV watch messages (records, refreshes, removal markers).
    pub(crate) watch_msgs: u64,
    /// Liveness beats.
    pub(crate) beat_msgs: u64,
    /// Estimated bytes of both.
    pub(crate) bytes: f64,
}

impl Delivered {
    /// Watch messages and beats together.
    pub(crate) fn msgs(&self) -> u64 {
        self.watch_msgs + self.beat_msgs
    }
}

/// Reads both endpoints of the server whose monitoring port is `port`.
pub(crate) async fn snapshot(http: &reqwest::Client, port: u16) -> anyhow::Result<Snapshot> {
    let base = format!("http://127.0.0.1:{port}");
    let jsz: Jsz = http
        .get(format!(
            "{base}/jsz?accounts=true&streams=true&consumers=true&config=true"
        ))
        .send()
        .await
        .context("reading /jsz")?
        .json()
        .await
        .context("decoding /jsz")?;
    let connz: Connz = http
        .get(format!("{base}/connz?subs=detail&limit=100000"))
        .send()
        .await
        .context("reading /connz")?
        .json()
        .await
        .context("decoding /connz")?;
    Ok(classify(jsz, connz))
}

fn classify(jsz: Jsz, connz: Connz) -> Snapshot {
    let mut deliver = HashSet::new();
    let mut mean_record_bytes = 0.0;
    for stream in jsz
        .account_details
        .iter()
        .flat_map(|a| &a.stream_detail)
        .filter(|s| s.name == REGISTRY_STREAM)
    {
        if let Some(state) = &stream.state
            && state.messages > 0
        {
            mean_record_bytes = state.bytes as f64 / state.messages as f64;
        }
        deliver.extend(
            stream
                .consumer_detail
                .iter()
                .filter_map(|c| c.config.as_ref()?.deliver_subject.clone()),
        );
    }
    let conns = connz
        .connections
        .into_iter()
        .map(|c| {
            let mut counts = ConnCounts {
                name: c.name,
                ..Default::default()
            };
            for sub in c.subs {
                if deliver.contains(&sub.subject) {
                    counts.watch.insert(sub.sid, sub.msgs);
                } else if sub.subject.starts_with(BEAT_PREFIX) {
                    counts.beats.insert(sub.sid, sub.msgs);
                }
            }
            (c.cid, counts)
        })
        .collect();
    Snapshot {
        conns,
        mean_record_bytes,
    }
}

/// Size of one liveness beat on the wire to a subscriber, roughly: the
/// `MSG` line with its subject (the payload is empty).
const BEAT_BYTES: f64 = 80.0;

/// What was delivered between `before` and `after` to the connections
/// `which` accepts (by name). A subscription that is new in `after` (a
/// watch re-created) counts from zero.
pub(crate) fn delivered(
    before: &Snapshot,
    after: &Snapshot,
    which: impl Fn(&str) -> bool,
) -> Delivered {
    let mut out = Delivered::default();
    for (cid, now) in &after.conns {
        if !which(&now.name) {
            continue;
        }
        let then = before.conns.get(cid);
        let delta = |now: &HashMap<String, u64>, pick: fn(&ConnCounts) -> &HashMap<String, u64>| {
            now.iter()
                .map(|(sid, n)| {
                    let was = then.and_then(|t| pick(t).get(sid)).copied().unwrap_or(0);
                    n.saturating_sub(was)
                })
                .sum::<u64>()
        };
        out.watch_msgs += delta(&now.watch, |c| &c.watch);
        out.beat_msgs += delta(&now.beats, |c| &c.beats);
    }
    let mean = if after.mean_record_bytes > 0.0 {
        after.mean_record_bytes
    } else {
        before.mean_record_bytes
    };
    out.bytes = out.watch_msgs as f64 * mean + out.beat_msgs as f64 * BEAT_BYTES;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(jsz: &str, connz: &str) -> Snapshot {
        classify(
            serde_json::from_str(jsz).unwrap(),
            serde_json::from_str(connz).unwrap(),
        )
    }

    const JSZ: &str = r#"{"account_details":[{"stream_detail":[
        {"name":"KV_service_registry","state":{"messages":10,"bytes":5000},
         "consumer_detail":[{"config":{"deliver_subject":"_INBOX.w1"}}]},
        {"name":"EVENTS","consumer_detail":[{"config":{"deliver_subject":"_INBOX.ev"}}]}]}]}"#;

    #[test]
    fn counts_only_registry_subscriptions_and_their_growth() {
        let before = parse(
            JSZ,
            r#"{"connections":[{"cid":1,"name":"caller","out_msgs":5,"subscriptions_list_detail":[
                {"subject":"_INBOX.w1","sid":"1","msgs":100},
                {"subject":"_INBOX.ev","sid":"2","msgs":7}]},
              {"cid":2,"name":"monitor","subscriptions_list_detail":[
                {"subject":"aegis.heartbeat.>","sid":"9","msgs":40}]}]}"#,
        );
        let after = parse(
            JSZ,
            r#"{"connections":[{"cid":1,"name":"caller","subscriptions_list_detail":[
                {"subject":"_INBOX.w1","sid":"1","msgs":130},
                {"subject":"_INBOX.ev","sid":"2","msgs":900}]},
              {"cid":2,"name":"monitor","subscriptions_list_detail":[
                {"subject":"aegis.heartbeat.>","sid":"9","msgs":60}]}]}"#,
        );
        let caller = delivered(&before, &after, |n| n == "caller");
        assert_eq!((caller.watch_msgs, caller.beat_msgs), (30, 0));
        assert!((caller.bytes - 30.0 * 500.0).abs() < 1e-9);
        let all = delivered(&before, &after, |_| true);
        assert_eq!((all.watch_msgs, all.beat_msgs), (30, 20));
    }
}
