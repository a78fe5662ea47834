//! Free ports, a minimal HTTP/1.0 client for the monitoring endpoint, and
//! readers of what it answers.
//!
//! Hand-written over `std::net` so the testkit needs no HTTP dependency: it
//! only ever asks `127.0.0.1` for `/healthz`, `/jsz` and `/routez`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Picks `n` distinct free ports on 127.0.0.1. All listeners stay bound
/// until every port is chosen, so the ports differ from each other; another
/// process may still grab one before the server binds it, which the caller
/// handles by retrying.
pub(crate) fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<io::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Sends `GET path` to `127.0.0.1:port` and returns the status code and body.
pub(crate) fn http_get(port: u16, path: &str) -> io::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    parse_response(&String::from_utf8_lossy(&response))
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "malformed HTTP response"))
}

fn parse_response(text: &str) -> Option<(u16, String)> {
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head
        .lines()
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, body.to_owned()))
}

/// The `remote_name` of every route in a `/routez` answer (a pooled route
/// appears once per connection).
pub(crate) fn route_remote_names(routez: &str) -> Vec<String> {
    let Ok(routez) = serde_json::from_str::<Value>(routez) else {
        return Vec::new();
    };
    routez["routes"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|route| route["remote_name"].as_str().map(str::to_owned))
        .collect()
}

/// The `meta_cluster` object of a `/jsz` answer (`Null` when absent or
/// unreadable).
fn meta_cluster(jsz: &str) -> Value {
    serde_json::from_str::<Value>(jsz).map_or(Value::Null, |mut v| v["meta_cluster"].take())
}

/// True when a `/jsz` body shows a JetStream meta leader: the server omits
/// `meta_cluster.leader` (or leaves it empty) while none is elected.
pub(crate) fn has_meta_leader(jsz: &str) -> bool {
    meta_leader_name(jsz).is_some()
}

/// The name of the JetStream meta leader a `/jsz` body shows, if any.
pub(crate) fn meta_leader_name(jsz: &str) -> Option<String> {
    meta_cluster(jsz)["leader"]
        .as_str()
        .filter(|leader| !leader.is_empty())
        .map(str::to_owned)
}

/// True when `server`'s `/jsz` body shows it leads the meta group and sees
/// each of `peers` as a current replica it does not count offline: what
/// placing a replicated stream (an R3 bucket) needs. Routes come first;
/// the leader learns a peer is online a little later, and until then such
/// a stream fails with "no suitable peers for placement, peer offline".
/// Needed, not always enough: the leader also waits for each peer's
/// statistics, which no endpoint shows, so a creation right after start
/// may still be refused for a moment (the SDK's `with_placement_patience`
/// asks again).
pub(crate) fn leads_with_peers_online(jsz: &str, server: &str, peers: &[&str]) -> bool {
    let meta = meta_cluster(jsz);
    if meta["leader"] != server {
        return false;
    }
    let replicas = meta["replicas"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    peers.iter().all(|peer| {
        replicas
            .iter()
            .any(|r| r["name"] == *peer && r["current"] == true && r["offline"] != true)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_remote_names_are_read() {
        let routez = r#"{"server_id":"S1","routes":[{"rid":1,"remote_id":"S2","remote_name":"n2","pooled":true},
            {"rid":2,"remote_id":"S3", "remote_name" : "n3"}]}"#;
        assert_eq!(route_remote_names(routez), ["n2", "n3"]);
        assert!(route_remote_names(r#"{"routes":[]}"#).is_empty());
    }

    #[test]
    fn free_ports_are_distinct() {
        let mut ports = free_ports(6).unwrap();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 6);
    }

    #[test]
    fn parses_status_and_body() {
        let r = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(parse_response(r), Some((503, "{}".to_owned())));
        assert_eq!(parse_response("garbage"), None);
    }

    #[test]
    fn finds_the_meta_leader() {
        let with = r#"{"meta_cluster": {"name": "c", "leader": "n3", "peer": "x",
            "replicas": [{"name": "n2", "current": true}]}}"#;
        let without = r#"{"meta_cluster": {"name": "c", "peer": "x",
            "replicas": [{"name": "n2", "leader": "bogus"}]}}"#;
        let empty = r#"{"meta_cluster": {"name": "c", "leader": ""}}"#;
        assert!(has_meta_leader(with));
        assert!(!has_meta_leader(without));
        assert!(!has_meta_leader(empty));
        assert!(!has_meta_leader(r#"{"streams": 0}"#));
    }

    #[test]
    fn the_meta_leader_sees_its_peers_online() {
        let jsz = r#"{"meta_cluster": {"leader": "n1", "replicas": [
            {"name": "n2", "current": true},
            {"name": "n3", "current": true, "offline": true}]}}"#;
        assert!(leads_with_peers_online(jsz, "n1", &["n2"]));
        assert!(!leads_with_peers_online(jsz, "n1", &["n2", "n3"]));
        assert!(!leads_with_peers_online(jsz, "n2", &["n1"]));
        let behind =
            r#"{"meta_cluster": {"leader": "n1", "replicas": [{"name": "n2", "current": false}]}}"#;
        assert!(!leads_with_peers_online(behind, "n1", &["n2"]));
        assert!(leads_with_peers_online(
            r#"{"meta_cluster": {"leader": "n1"}}"#,
            "n1",
            &[]
        ));
    }
}
