//! Free ports and a minimal HTTP/1.0 client for the monitoring endpoint.
//!
//! Hand-written over `std::net` so the testkit needs no HTTP dependency: it
//! only ever asks `127.0.0.1` for `/healthz` and `/jsz`.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

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

/// True when a `/jsz` body shows a JetStream meta leader, i.e.
/// `"meta_cluster": { ..., "leader": "n2", ... }`. The server omits
/// `leader` while none is elected; it precedes the nested `replicas`, so
/// only the fields before the first nested value are looked at.
/// The `remote_name` of every route in a `/routez` answer (a pooled route
/// appears once per connection).
pub(crate) fn route_remote_names(routez: &str) -> Vec<String> {
    const FIELD: &str = "\"remote_name\"";
    let mut names = Vec::new();
    let mut rest = routez;
    while let Some(at) = rest.find(FIELD) {
        rest = &rest[at + FIELD.len()..];
        let value = rest
            .trim_start()
            .strip_prefix(':')
            .map(str::trim_start)
            .and_then(|v| v.strip_prefix('"'));
        if let Some(value) = value
            && let Some(end) = value.find('"')
        {
            names.push(value[..end].to_owned());
        }
    }
    names
}

pub(crate) fn has_meta_leader(jsz: &str) -> bool {
    let Some(start) = jsz.find("\"meta_cluster\"") else {
        return false;
    };
    let rest = &jsz[start..];
    let Some(open) = rest.find('{') else {
        return false;
    };
    // The object's own fields up to its first nested value or its end.
    let rest = &rest[open + 1..];
    let object = &rest[..rest.find(['{', '[', '}']).unwrap_or(rest.len())];
    let Some(at) = object.find("\"leader\"") else {
        return false;
    };
    let value = object[at + "\"leader\"".len()..]
        .trim_start()
        .strip_prefix(':')
        .map(str::trim_start)
        .and_then(|v| v.strip_prefix('"'));
    matches!(value, Some(v) if !v.starts_with('"'))
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
}
