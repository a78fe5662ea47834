//! Each client's share of the connection cap, and saying when a limit is
//! hit.
//!
//! The cap (`--max-connections`) alone bounds the process, not a client:
//! the header-read timeout closes slow and idle connections, but one that
//! sends a cheap request every few seconds is never idle, so one client
//! could hold every slot and lock the others out for as long as it liked.
//! [`Shares`] holds each client to `--max-connections-per-client` of them.
//! The client is the TCP peer, all that is known when a connection is
//! accepted (a proxy's `X-Forwarded-For` comes later, with a request): an
//! IPv4 address, or an IPv6 /64, as the other per-client limits count
//! them ([`crate::auth::client::subscriber`]). Trusted proxies speak for
//! many clients and are held to the cap only; an untrusted proxy's
//! clients share its one share.
//!
//! A connection past its client's share is not left waiting: it is
//! answered `429 TOO_MANY_REQUESTS` and closed ([`refusal`]), so the
//! client learns why, while the few refusals being answered at once are
//! themselves bounded ([`REFUSING_AT_ONCE`]; past them the connection is
//! closed unanswered).
//!
//! Either limit hit is counted on `/metrics`
//! (`aegis_monitor_http_connection_limit_total{limit}`) and logged as a
//! WARN at most once per [`WARN_EVERY`] per limit ([`Throttle`]), with how
//! many went unlogged since.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, middleware, response::IntoResponse};
use serde_json::json;

use crate::{
    auth::client::{is_trusted, subscriber},
    config::TrustedProxy,
    error::{ApiError, ErrorCode},
    telemetry::{HTTP_CONNECTION_LIMIT, HTTP_CONNECTIONS},
};

/// At most one warning per limit per this interval.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(10);

/// Most refused connections answered at once; past them a refused
/// connection is closed unanswered, so refusing costs little however many
/// come.
pub(crate) const REFUSING_AT_ONCE: usize = 64;

/// Longest a refused connection is given to send its request and read the
/// 429 (its header read bounded by the server's timeout too).
pub(crate) const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// How long a refused client is told to wait before it tries again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The connections each client holds, and how many it may.
#[derive(Debug)]
pub(crate) struct Shares {
    per_client: usize,
    trusted: Vec<TrustedProxy>,
    /// Open connections per client; a client with none is absent, so
    /// there are never more entries than open connections.
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// A connection's place in its client's share, given back on drop; it
/// counts the connection on the open-connections gauge while it lives.
#[derive(Debug)]
pub(crate) struct Held {
    shares: Arc<Shares>,
    /// `None` for a trusted proxy, which holds no share.
    client: Option<IpAddr>,
}

impl Shares {
    pub(crate) fn new(per_client: usize, trusted: Vec<TrustedProxy>) -> Arc<Self> {
        Arc::new(Self {
            per_client: per_client.max(1),
            trusted,
            open: Mutex::default(),
        })
    }

    /// How many connections one client may hold.
    pub(crate) fn per_client(&self) -> usize {
        self.per_client
    }

    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a new connection from `peer`; `Err(client)` (the
    /// address it is counted under) when that client holds its share.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Held, IpAddr> {
        let client = if is_trusted(&self.trusted, peer) {
            None
        } else {
            let client = subscriber(peer);
            let mut open = self.open();
            let held = open.entry(client).or_insert(0);
            if *held >= self.per_client {
                return Err(client);
            }
            *held += 1;
            Some(client)
        };
        metrics::gauge!(HTTP_CONNECTIONS).increment(1.0);
        Ok(Held {
            shares: self.clone(),
            client,
        })
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::gauge!(HTTP_CONNECTIONS).decrement(1.0);
        let Some(client) = self.client else {
            return;
        };
        let mut open = self.shares.open();
        if let Some(held) = open.get_mut(&client) {
            *held = held.saturating_sub(1);
            if *held == 0 {
                open.remove(&client);
            }
        }
    }
}

/// Which limit was hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Limit {
    /// Every slot of `--max-connections` taken.
    Total,
    /// A client's share of them taken.
    PerClient,
}

impl Limit {
    fn label(self) -> &'static str {
        match self {
            Self::Total => "max_connections",
            Self::PerClient => "per_client",
        }
    }

    /// Counts one hit on `/metrics`.
    pub(crate) fn count(self) {
        metrics::counter!(HTTP_CONNECTION_LIMIT, "limit" => self.label()).increment(1);
    }
}

/// When to log a limit hit: the first at once, then at most one per
/// `every`, each saying how many went unlogged since the one before.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    unlogged: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            unlogged: 0,
        }
    }

    /// One hit at `now`: `Some(unlogged)` when it is to be logged (with
    /// the hits not logged since the last line), `None` when it is not.
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.unlogged += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// What a connection past its client's share is served: every request is
/// answered 429 `TOO_MANY_REQUESTS` with `Retry-After` and the API's
/// security headers (the connection is served without keep-alive, so it
/// closes after). Not logged per request: [`Throttle`] says it.
pub(crate) fn refusal(per_client: usize) -> Router {
    Router::new()
        .fallback(move || async move {
            ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "this client already holds {per_client} connections to the monitor, its \
                     share of them (--max-connections-per-client): send this request on one \
                     of those, or close one first"
                ),
            )
            .with_details(json!({ "maxConnectionsPerClient": per_client }))
            .with_retry_after(RETRY_AFTER)
            .into_response()
        })
        .layer(middleware::from_fn(crate::routes::security_headers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_holds_its_share_and_gets_it_back() {
        let shares = Shares::new(2, Vec::new());
        let one: IpAddr = "192.0.2.1".parse().unwrap();
        let two: IpAddr = "192.0.2.2".parse().unwrap();
        let a = shares.admit(one).unwrap();
        let _b = shares.admit(one).unwrap();
        assert_eq!(shares.admit(one).unwrap_err(), one);
        // Another client is not held to the first one's share.
        let _c = shares.admit(two).unwrap();
        drop(a);
        let _d = shares.admit(one).unwrap();
        assert_eq!(shares.admit(one).unwrap_err(), one);
    }

    #[test]
    fn an_ipv6_client_is_its_64_and_mapped_ipv4_is_ipv4() {
        let shares = Shares::new(1, Vec::new());
        let _a = shares.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        assert!(
            shares
                .admit("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_err()
        );
        assert!(shares.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _v4 = shares.admit("192.0.2.7".parse().unwrap()).unwrap();
        assert!(shares.admit("::ffff:192.0.2.7".parse().unwrap()).is_err());
    }

    #[test]
    fn a_trusted_proxy_holds_no_share_and_no_entry() {
        let proxy: IpAddr = "10.0.0.5".parse().unwrap();
        let shares = Shares::new(1, vec![proxy.into()]);
        let held: Vec<_> = (0..5).map(|_| shares.admit(proxy).unwrap()).collect();
        assert!(shares.open().is_empty());
        drop(held);
        let one = shares.admit("192.0.2.1".parse().unwrap()).unwrap();
        assert_eq!(shares.open().len(), 1);
        drop(one);
        assert!(
            shares.open().is_empty(),
            "a client without connections is forgotten"
        );
    }

    #[test]
    fn the_throttle_logs_the_first_then_one_per_interval_with_the_rest_counted() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut throttle = Throttle::new(Duration::from_secs(10));
        assert_eq!(throttle.hit(at(0)), Some(0));
        assert_eq!(throttle.hit(at(1)), None);
        assert_eq!(throttle.hit(at(9_999)), None);
        assert_eq!(throttle.hit(at(10_000)), Some(2));
        assert_eq!(throttle.hit(at(10_001)), None);
        assert_eq!(throttle.hit(at(60_000)), Some(1));
        assert_eq!(throttle.hit(at(60_001)), None);
    }
}
