//! What the JetStream API answers, parsed: one page of
//! `$JS.API.STREAM.LIST` ([`ListPage`], read by hand because async-nats's
//! `streams()` drops its `missing` list).

use std::time::Duration;

use serde::Deserialize;

/// One page of `$JS.API.STREAM.LIST`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListPage {
    #[serde(default)]
    pub(crate) total: usize,
    #[serde(default)]
    pub(crate) limit: usize,
    #[serde(default)]
    pub(crate) streams: Vec<ListedStream>,
    /// Streams whose leader did not answer the meta leader in time (it
    /// waits 4 s): they have no leader now. Clustered servers only.
    #[serde(default)]
    pub(crate) missing: Vec<String>,
}

/// A JetStream API error (`{"code", "err_code", "description"}`).
#[derive(Debug, Deserialize)]
pub(crate) struct ApiError {
    #[serde(default)]
    pub(crate) code: u16,
    #[serde(default)]
    pub(crate) err_code: u16,
    #[serde(default)]
    pub(crate) description: String,
}

/// A stream of the listing, as far as the picture needs it.
#[derive(Debug, Deserialize)]
pub(crate) struct ListedStream {
    pub(crate) config: ListedConfig,
    /// Absent on a server without clustering.
    #[serde(default)]
    pub(crate) cluster: Option<ListedCluster>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ListedConfig {
    pub(crate) name: String,
    #[serde(default = "one")]
    pub(crate) num_replicas: usize,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ListedCluster {
    #[serde(default)]
    pub(crate) leader: Option<String>,
    /// The other peers, as the leader sees them.
    #[serde(default)]
    pub(crate) replicas: Vec<Peer>,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Peer {
    pub(crate) name: String,
    /// Up to date with its leader.
    #[serde(default)]
    pub(crate) current: bool,
    #[serde(default)]
    pub(crate) offline: bool,
    /// How long since the leader last heard from it (nanoseconds on the
    /// wire; absent when never).
    #[serde(default, with = "nanos")]
    pub(crate) active: Duration,
}

mod nanos {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        // Signed on the wire; a negative (never seen) reads as zero.
        Ok(Duration::from_nanos(
            i64::deserialize(d)?.max(0).unsigned_abs(),
        ))
    }
}

/// Parses one page of the stream listing.
#[cfg(test)]
pub(crate) fn parse_page(payload: &[u8]) -> Result<ListPage, serde_json::Error> {
    serde_json::from_slice(payload)
}

/// The error a JetStream API answer carries, if it is one.
pub(crate) fn api_error(payload: &[u8]) -> Option<ApiError> {
    #[derive(Deserialize)]
    struct Answer {
        error: Option<ApiError>,
    }
    serde_json::from_slice::<Answer>(payload).ok()?.error
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real answer of nats-server 2.15.1 (3-node cluster), taken while
    /// the node leading `KV_orders` had just been SIGKILLed: the stream
    /// is named in `missing` and absent from `streams`.
    const MISSING: &[u8] = include_bytes!("stream_list_missing.json");

    #[test]
    fn a_listing_names_the_streams_whose_leader_did_not_answer() {
        assert!(api_error(MISSING).is_none());
        let page = parse_page(MISSING).unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(page.limit, 256);
        assert_eq!(page.missing, ["KV_orders"]);
        assert_eq!(page.streams.len(), 1);
        let other = &page.streams[0];
        assert_eq!(other.config.name, "KV_other");
        assert_eq!(other.config.num_replicas, 3);
        let cluster = other.cluster.as_ref().unwrap();
        assert_eq!(cluster.leader.as_deref(), Some("n3"));
        let peers: Vec<_> = cluster.replicas.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(peers, ["n1", "n2"]);
        assert!(cluster.replicas.iter().all(|p| !p.offline && p.current));
        assert_eq!(
            cluster.replicas[1].active,
            Duration::from_nanos(517_621_547)
        );
    }

    #[test]
    fn an_api_error_is_read_as_one() {
        let e = api_error(
            br#"{"type":"io.nats.jetstream.api.v1.stream_list_response","error":{"code":503,"err_code":10008,"description":"JetStream system temporarily unavailable"}}"#,
        )
        .unwrap();
        assert_eq!((e.code, e.err_code), (503, 10008));
    }
}
