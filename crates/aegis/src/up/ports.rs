//! Free ports for a whole `aegis up` layout (see [`super::nats::plan`]):
//! client ports `base..base+nodes`, routes at `+2000`, monitoring at
//! `+4000`, and the monitor API right after the client ports.
//!
//! The ports come from below the kernel's ephemeral range when there is
//! room. A port the kernel hands out for `bind(0)` is also one it hands
//! out as the local end of an outgoing connection: between the check here
//! and the showcase binding it — seconds, while NATS routes and services
//! connect — such a connection can take it, and the node or the monitor
//! then cannot start. Below the range, only another listener can.
//!
//! Another listener may be one this process asked for a moment ago: tests
//! running side by side each start an `aegis up`, and a layout checked free
//! by one can be picked by the next before the first binds it. The ports
//! handed out are remembered for the life of the process and never handed
//! out twice.

use std::{
    collections::BTreeSet,
    net::{Ipv4Addr, TcpListener},
    ops::Range,
    sync::{Mutex, PoisonError},
};

/// Distance from a node's client port to its route and monitoring ports.
const SPAN: u16 = 4000;
/// The lowest base used: clear of well-known services.
const LOWEST: u16 = 10_000;

/// Every port a layout of this process has been given.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A base port whose whole layout for `nodes` NATS nodes is free now, and
/// the API port (`base + nodes`).
///
/// # Panics
/// When no layout is free after many tries (a machine out of ports).
pub fn free_layout(nodes: u16) -> (u16, u16) {
    let range = bases(nodes, ephemeral_start());
    for _ in 0..10_000 {
        let base = match &range {
            Some(r) => rand::random_range(r.clone()),
            None => match kernel_port() {
                Some(p) if p <= u16::MAX - SPAN - nodes => p,
                _ => continue,
            },
        };
        let mut ports: Vec<u16> = (0..nodes)
            .flat_map(|i| [base + i, base + 2000 + i, base + SPAN + i])
            .collect();
        ports.push(base + nodes);
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
        if ports.iter().any(|p| handed_out.contains(p)) {
            continue;
        }
        let bound: Vec<_> = ports
            .iter()
            .map(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, *p)))
            .collect();
        if bound.iter().all(Result::is_ok) {
            handed_out.extend(ports);
            return (base, base + nodes);
        }
    }
    panic!("no free ports for an `aegis up` layout of {nodes} nodes");
}

/// The bases whose layout lies wholly between [`LOWEST`] and the start of
/// the ephemeral range, if there is room for some.
fn bases(nodes: u16, ephemeral_start: Option<u16>) -> Option<Range<u16>> {
    let end = ephemeral_start?.checked_sub(SPAN + nodes + 1)?;
    (end > LOWEST + 100).then_some(LOWEST..end)
}

/// The first port of the kernel's ephemeral range (Linux).
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn kernel_port() -> Option<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).ok()?;
    Some(l.local_addr().ok()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bases_stay_below_the_ephemeral_range() {
        let r = bases(3, Some(32_768)).unwrap();
        assert_eq!(r.start, LOWEST);
        assert!(r.end - 1 + SPAN + 3 < 32_768);
        assert_eq!(bases(3, Some(12_000)), None, "no room");
        assert_eq!(bases(3, None), None);
    }

    #[test]
    fn a_layout_is_free_and_distinct() {
        let (base, api) = free_layout(3);
        assert_eq!(api, base + 3);
        TcpListener::bind((Ipv4Addr::LOCALHOST, base + SPAN + 2)).unwrap();
    }

    #[test]
    fn no_port_is_handed_out_twice() {
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let (base, _) = free_layout(3);
            for p in (0..3).flat_map(|i| [base + i, base + 2000 + i, base + SPAN + i]) {
                assert!(seen.insert(p), "port {p} handed out twice");
            }
            assert!(seen.insert(base + 3), "api port handed out twice");
        }
    }
}
