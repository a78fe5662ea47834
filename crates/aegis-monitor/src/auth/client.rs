//! Who is on the other end of a request, as far as authentication needs to
//! know: the client's address (for the per-client limits on signing in and
//! on wrong credentials) and whether the request came over HTTPS (for the
//! cookie's `Secure` attribute).
//!
//! The monitor speaks plain HTTP; TLS ends at a proxy in front of it. The
//! proxy's `X-Forwarded-For` names the client only when the peer is one of
//! the configured trusted proxies — from anyone else it would let a client
//! choose its own identity and dodge the limit. `X-Forwarded-Proto` is
//! believed from anyone (see [`came_over_https`]).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::http::HeaderMap;
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};

use crate::config::TrustedProxy;

/// Whether `ip` is one of the `trusted` proxies or in one of their ranges.
fn trusts(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusted.iter().any(|proxy| proxy.contains(ip))
}

/// The address a request is attributed to. `peer` is the TCP peer (none
/// when a test calls the router directly); when it is a trusted proxy, the
/// right-most `X-Forwarded-For` entry that is not itself a trusted proxy
/// (entries further left were written by the client and prove nothing).
/// IPv6 clients count per /64, the block one subscriber usually holds.
pub(crate) fn client_addr(
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    trusted: &[TrustedProxy],
) -> IpAddr {
    let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
        return IpAddr::from([0, 0, 0, 0]);
    };
    let mut client = peer;
    if trusts(trusted, peer) {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in forwarded.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) if trusts(trusted, ip.to_canonical()) => continue,
                Ok(ip) => {
                    client = ip.to_canonical();
                    break;
                }
                // Garbage from the proxy chain: stop at the last known hop.
                Err(_) => break,
            }
        }
    }
    subscriber(client)
}

/// The address a client is counted under, by the per-client limits (these
/// and the connection share, `server/shares.rs`): an IPv4 address as
/// itself (also when mapped into IPv6), an IPv6 address as its /64, the
/// block one subscriber usually holds, so a client cannot dodge a limit
/// by hopping addresses within it.
pub(crate) fn subscriber(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let mut segments = v6.segments();
            segments[4..].fill(0);
            IpAddr::V6(Ipv6Addr::from(segments))
        }
        v4 => v4,
    }
}

/// Whether `ip` is one of the `trusted` proxies or in one of their ranges
/// (for the connection share, which exempts them).
pub(crate) fn is_trusted(trusted: &[TrustedProxy], ip: IpAddr) -> bool {
    trusts(trusted, ip.to_canonical())
}

/// Says once per process (per [`ForwardingWarning`]) that a peer which is
/// not a trusted proxy sends `X-Forwarded-For`: the header is ignored, so
/// every client behind that proxy shares one budget for signing in and for
/// wrong credentials.
#[derive(Debug, Default)]
pub(crate) struct ForwardingWarning {
    warned: AtomicBool,
}

impl ForwardingWarning {
    /// Logs the warning if `peer` is untrusted, sent `X-Forwarded-For`,
    /// and nothing was logged yet; returns whether it logged now. The
    /// header's value is client-chosen and stays out of the log.
    pub(crate) fn check(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        trusted: &[TrustedProxy],
    ) -> bool {
        let Some(peer) = peer.map(|p| p.ip().to_canonical()) else {
            return false;
        };
        if trusts(trusted, peer)
            || !headers.contains_key("x-forwarded-for")
            || self.warned.load(Ordering::Relaxed)
            || self.warned.swap(true, Ordering::Relaxed)
        {
            return false;
        }
        tracing::warn!(
            %peer,
            "requests from {peer} carry X-Forwarded-For, but {peer} is not a trusted proxy: \
             the header is ignored and every client behind it shares one limit for signing in \
             and for wrong credentials; if it is your reverse proxy, set AEGIS_TRUSTED_PROXIES \
             (--trusted-proxy) to its address or its network's range, e.g. the ingress \
             controller's pod network (logged once)"
        );
        true
    }
}

/// Most clients [`FailureLimiter`] remembers at once; past it, clients whose
/// budget is full again are forgotten before a new one is added.
const MAX_TRACKED_CLIENTS: usize = 100_000;

/// Wrong credentials per client: `per_minute` in a burst, refilled evenly
/// over the minute (GCRA, as [`SignInLimiter`]). Unlike signing in, only
/// failures count: a check [`take`](Self::take)s one unit before the
/// credential is looked at and [`refund`](Self::refund)s it when the
/// credential was right, so a client with a valid credential spends
/// nothing, and concurrent guesses cannot overshoot the limit.
#[derive(Debug)]
pub(crate) struct FailureLimiter {
    /// Time between two refilled units.
    interval: Duration,
    /// The burst: `per_minute` intervals, one minute.
    window: Duration,
    /// Per client, when its budget is full again (the GCRA's theoretical
    /// arrival time); clients with a full budget are absent.
    full_at: Mutex<HashMap<IpAddr, Instant>>,
}

impl FailureLimiter {
    pub(crate) fn new(per_minute: u32) -> Self {
        let n = per_minute.max(1);
        let window = Duration::from_secs(60);
        Self {
            interval: window / n,
            window,
            full_at: Mutex::default(),
        }
    }

    fn clients(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant>> {
        self.full_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one unit for `client` before its credential is checked;
    /// `Err(wait)` when it has none left (try again after `wait`).
    pub(crate) fn take(&self, client: IpAddr) -> Result<(), Duration> {
        self.take_at(client, Instant::now())
    }

    fn take_at(&self, client: IpAddr, now: Instant) -> Result<(), Duration> {
        let mut clients = self.clients();
        let full_at = clients.get(&client).copied().unwrap_or(now).max(now);
        let next = full_at + self.interval;
        let allowed_until = now + self.window;
        if next > allowed_until {
            return Err(next - allowed_until);
        }
        if clients.len() >= MAX_TRACKED_CLIENTS && !clients.contains_key(&client) {
            clients.retain(|_, t| *t > now);
        }
        clients.insert(client, next);
        Ok(())
    }

    /// Gives back the unit [`take`](Self::take) took: the credential was
    /// right (or was no guess).
    pub(crate) fn refund(&self, client: IpAddr) {
        self.refund_at(client, Instant::now());
    }

    fn refund_at(&self, client: IpAddr, now: Instant) {
        let mut clients = self.clients();
        if let Some(full_at) = clients.get_mut(&client) {
            match full_at.checked_sub(self.interval) {
                Some(t) if t > now => *full_at = t,
                _ => {
                    clients.remove(&client);
                }
            }
        }
    }

    /// Forgets clients whose budget is full again (bounded memory).
    pub(crate) fn forget_idle(&self) {
        let now = Instant::now();
        let mut clients = self.clients();
        clients.retain(|_, t| *t > now);
        clients.shrink_to_fit();
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
        let proxy: TrustedProxy = "10.0.0.1".parse().unwrap();
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
        let trusted: [TrustedProxy; 2] = ["10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap()];
        assert_eq!(
            client_addr(peer("10.0.0.1"), &chain, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_addr(None, &xff, &[proxy]),
            "0.0.0.0".parse::<IpAddr>().unwrap()
        );
    }

    /// A range trusts every proxy in it (the ingress controller's pods,
    /// whatever address a restart gives them), and no peer outside it.
    #[test]
    fn a_trusted_range_trusts_every_proxy_in_it() {
        let trusted: [TrustedProxy; 2] =
            ["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
        let xff = headers(&[("x-forwarded-for", "1.1.1.1, 203.0.113.9, 10.9.9.9")]);
        let client: IpAddr = "203.0.113.9".parse().unwrap();
        for proxy in ["10.1.2.3", "10.200.0.9", "fd00::7", "::ffff:10.1.2.3"] {
            assert_eq!(client_addr(peer(proxy), &xff, &trusted), client, "{proxy}");
        }
        for outside in ["11.0.0.1", "fe80::1"] {
            let own = client_addr(peer(outside), &xff, &trusted);
            assert_eq!(own, client_addr(peer(outside), &HeaderMap::new(), &[]));
        }
        let warning = ForwardingWarning::default();
        assert!(!warning.check(peer("10.1.2.3"), &xff, &trusted));
        assert!(warning.check(peer("11.0.0.1"), &xff, &trusted));
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

    #[test]
    fn only_failures_use_up_the_budget_and_it_refills() {
        let limiter = FailureLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        // Right credentials (take, then refund) cost nothing.
        for _ in 0..10 {
            limiter.take_at(a, t0).unwrap();
            limiter.refund_at(a, t0);
        }
        // Three wrong ones are allowed, the fourth check is refused.
        for _ in 0..3 {
            limiter.take_at(a, t0).unwrap();
        }
        let wait = limiter.take_at(a, t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(20));
        // Refused checks cost nothing either: the wait does not grow.
        assert_eq!(limiter.take_at(a, t0).unwrap_err(), wait);
        limiter
            .take_at(b, t0)
            .expect("another client is not limited");
        // After the wait, one check again; after the minute, all three.
        limiter.take_at(a, t0 + wait).unwrap();
        limiter.refund_at(a, t0 + wait);
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            limiter.take_at(a, later).unwrap();
        }
        assert!(limiter.take_at(a, later).is_err());
    }

    #[test]
    fn a_full_budget_is_forgotten() {
        let limiter = FailureLimiter::new(3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        limiter.take(a).unwrap();
        limiter.refund(a);
        assert!(
            limiter.clients().is_empty(),
            "a right credential leaves no trace"
        );
        limiter
            .take_at(a, Instant::now() - Duration::from_secs(30))
            .unwrap();
        limiter.forget_idle();
        assert!(limiter.clients().is_empty());
    }

    #[test]
    fn forwarding_from_an_untrusted_peer_is_reported_once() {
        let warning = ForwardingWarning::default();
        let proxy: TrustedProxy = "10.0.0.1".parse().unwrap();
        let xff = headers(&[("x-forwarded-for", "203.0.113.9")]);
        // Not from a trusted proxy, not with the header, not without a peer.
        assert!(!warning.check(peer("10.0.0.1"), &xff, &[proxy]));
        assert!(!warning.check(peer("198.51.100.7"), &HeaderMap::new(), &[proxy]));
        assert!(!warning.check(None, &xff, &[proxy]));
        // Once, then never again.
        assert!(warning.check(peer("198.51.100.7"), &xff, &[proxy]));
        assert!(!warning.check(peer("198.51.100.7"), &xff, &[proxy]));
        assert!(!warning.check(peer("198.51.100.8"), &xff, &[]));
    }
}
