//! Who is on the other end of a request, as far as sign-in needs to know:
//! the client's address (for the per-client sign-in limit) and whether the
//! request came over HTTPS (for the cookie's `Secure` attribute).
//!
//! The monitor speaks plain HTTP; TLS ends at a proxy in front of it. The
//! proxy's `X-Forwarded-For` names the client only when the peer is one of
//! the configured trusted proxies — from anyone else it would let a client
//! choose its own identity and dodge the limit. `X-Forwarded-Proto` is
//! believed from anyone (see [`came_over_https`]).

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    time::Duration,
};

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

/// The address a request is attributed to. `peer` is the TCP peer (none
/// when a test calls the router directly); when it is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries further left were written by the client and prove nothing).
/// IPv6 clients count per /64, the block one subscriber usually holds.
pub(crate) fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[IpAddr],
) -> IpAddr {
    let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    let mut client = peer;
    if trusted.contains(&peer) {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusted.contains(&ip.to_canonical()) => continue,
                Ok(ip) => {
                    client = ip.to_canonical();
                    break;
                }
                // Garbage from the proxy chain: stop at the last known hop.
                Err(_) => break,
            }
        }
    }
    match client {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

/// Whether the proxy in front says the request came over HTTPS
/// (`X-Forwarded-Proto: https` or `Forwarded: proto=https`).
///
/// Believed from any sender: the answer only decides whether the cookie
/// sent back to this same client is `Secure`. A client lying about it can
/// only break or weaken its own cookie, never another user's.
pub(crate) fn came_over_https(headers: &HeaderMap) -> bool {
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim);
    if let Some(proto) = proto {
        return proto.eq_ignore_ascii_case("https");
    }
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(k, v)| {
            k.eq_ignore_ascii_case("proto") && v.trim_matches('"').eq_ignore_ascii_case("https")
        })
}

/// Sign-in attempts per client: a token bucket per client address
/// (`governor`'s GCRA), `per_minute` attempts in a burst, refilled evenly
/// over the minute.
#[derive(Debug)]
pub(crate) struct SignInLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl SignInLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let n = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: DefaultKeyedRateLimiter::keyed(Quota::per_minute(n)),
        }
    }

    /// Takes one attempt for `client`; `Err(wait)` when it has none left
    /// (try again after `wait`).
    pub(crate) fn attempt(&self, client: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Forgets clients whose buckets are full again (bounded memory).
    pub(crate) fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn peer(s: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(s.parse().unwrap(), 40000))
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9")]);
        // From the proxy: the right-most untrusted hop.
        assert_eq!(
            client_addr(peer("10.0.0.1"), &xff, &[proxy]),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        // From anyone else: the header is the client's own claim.
        assert_eq!(
            client_addr(peer("198.51.100.7"), &xff, &[proxy]),
            "198.51.100.7".parse::<IpAddr>().unwrap()
        );
        // Trusted hops in the chain are skipped.
        let chain = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.2")]);
        let trusted = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            client_addr(peer("10.0.0.1"), &chain, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(None, &xff, &[proxy]),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let a = client_addr(peer("2001:db8:1:2:aaaa::1"), &HeaderMap::new(), &[]);
        let b = client_addr(peer("2001:db8:1:2:bbbb::2"), &HeaderMap::new(), &[]);
        assert_eq!(a, b);
        let mapped = client_addr(peer("::ffff:192.0.2.1"), &HeaderMap::new(), &[]);
        assert_eq!(mapped, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn https_as_the_proxy_says() {
        assert!(came_over_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(came_over_https(&headers(&[(
            "x-forwarded-proto",
            "HTTPS, http"
        )])));
        assert!(!came_over_https(&headers(&[("x-forwarded-proto", "http")])));
        assert!(came_over_https(&headers(&[(
            "forwarded",
            "for=192.0.2.60;proto=https;by=203.0.113.43"
        )])));
        assert!(!came_over_https(&headers(&[("forwarded", "proto=http")])));
        assert!(!came_over_https(&HeaderMap::new()));
    }

    #[test]
    fn the_limiter_refuses_the_attempt_over_the_quota_per_client() {
        let limiter = SignInLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limiter.attempt(a).is_ok());
        }
        let wait = limiter.attempt(a).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert!(limiter.attempt(b).is_ok(), "another client is not limited");
    }
}
