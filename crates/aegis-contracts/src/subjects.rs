//! NATS subjects, KV keys, bucket and stream names: the one place that spells
//! them.
//!
//! Every builder takes `&str` parts and returns a `String` without checking
//! them; callers validate names with [`crate::names`] first (the SDK does so
//! when a component is built, before any network I/O). The layout follows the
//! design of record:
//!
//! | thing | subject / key |
//! | --- | --- |
//! | load-balanced RPC | `rpc.{service}.{method}`, queue group `rpc.{service}` |
//! | instance-directed RPC | `rpc.{service}.{instance}.{method}` |
//! | events | `events.{domain}.{action}` on stream `EVENTS` |
//! | commands | `commands.{service}.{command}` on stream `COMMANDS` |
//! | registry | key `service-instances.{service}.{instance}` in `service_registry` |
//! | elections | key `sticky-active.{service}.{group}` in `service_elections` |
//! | metrics / logs | `aegis.metrics.{service}.{instance}`, `aegis.log.{service}.{instance}` |
//! | liveness beats | `aegis.heartbeat.{service}.{instance}` (core NATS, not stored) |
//! | dead letters | `aegis.dead.{stream}.{consumer}` on stream `DEAD_LETTER` |
//! | control | `aegis.control.{service}.{instance}.{verb}` (e.g. `config`) |
//! | operator drills | `aegis.control.{service}.{instance}` (see [`crate::control`]) |

use crate::events::EventPattern;

/// KV bucket holding one record per live instance (per-key TTL).
pub const REGISTRY_BUCKET: &str = "service_registry";
/// KV bucket holding service definitions, keyed by service name.
pub const DEFINITIONS_BUCKET: &str = "service_definitions";
/// KV bucket holding sticky single-active election keys.
pub const ELECTIONS_BUCKET: &str = "service_elections";
/// JetStream stream carrying events.
pub const EVENTS_STREAM: &str = "EVENTS";
/// JetStream work-queue stream carrying commands.
pub const COMMANDS_STREAM: &str = "COMMANDS";
/// JetStream stream carrying metrics snapshots.
pub const METRICS_STREAM: &str = "AEGIS_METRICS";
/// JetStream stream carrying service logs.
pub const LOG_STREAM: &str = "AEGIS_LOG";
/// JetStream stream keeping messages subscriptions and workers gave up on.
pub const DEAD_LETTER_STREAM: &str = "DEAD_LETTER";
/// Subjects bound to [`EVENTS_STREAM`].
pub const EVENTS_SUBJECTS: &str = "events.>";
/// Subjects bound to [`COMMANDS_STREAM`].
pub const COMMANDS_SUBJECTS: &str = "commands.>";
/// Subjects bound to [`METRICS_STREAM`].
pub const METRICS_SUBJECTS: &str = "aegis.metrics.>";
/// Subjects bound to [`LOG_STREAM`].
pub const LOG_SUBJECTS: &str = "aegis.log.>";
/// Every instance's liveness beats (core NATS; the monitor and `aegis status`
/// subscribe).
pub const HEARTBEAT_SUBJECTS: &str = "aegis.heartbeat.>";
/// Subjects the SDK publishes dead letters on (bound to [`DEAD_LETTER_STREAM`],
/// with [`max_deliveries_advisories`] of the events and commands streams).
pub const DEAD_LETTER_SUBJECTS: &str = "aegis.dead.>";
/// First token of every registry key.
pub const REGISTRY_KEY_PREFIX: &str = "service-instances";
/// First token of every election key.
pub const ELECTION_KEY_PREFIX: &str = "sticky-active";

/// Where the SDK dead-letters a message of `stream` given up on by
/// `consumer`: `aegis.dead.{stream}.{consumer}`.
pub fn dead_letter_subject(stream: &str, consumer: &str) -> String {
    format!("aegis.dead.{stream}.{consumer}")
}

/// The server's max-deliveries advisories for every consumer of `stream`:
/// `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.*`.
pub fn max_deliveries_advisories(stream: &str) -> String {
    format!(
        "{}.{stream}.*",
        crate::dead_letter::MAX_DELIVERIES_ADVISORY_PREFIX
    )
}

/// Load-balanced RPC subject: `rpc.{service}.{method}`.
pub fn rpc_subject(service: &str, method: &str) -> String {
    dotted(&["rpc", service, method])
}

/// Queue group shared by all instances of a service: `rpc.{service}`.
pub fn rpc_queue_group(service: &str) -> String {
    format!("rpc.{service}")
}

/// Instance-directed RPC subject: `rpc.{service}.{instance}.{method}`.
pub fn rpc_instance_subject(service: &str, instance: &str, method: &str) -> String {
    dotted(&["rpc", service, instance, method])
}

/// Event subject: `events.{domain}.{action}`.
pub fn event_subject(domain: &str, action: &str) -> String {
    dotted(&["events", domain, action])
}

/// `parts` joined by dots, in one allocation of the right size: the
/// subjects above are built on every call and publish, where `format!`'s
/// machinery showed in profiles.
fn dotted(parts: &[&str]) -> String {
    let len = parts.iter().map(|p| p.len() + 1).sum::<usize>();
    let mut subject = String::with_capacity(len);
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            subject.push('.');
        }
        subject.push_str(part);
    }
    subject
}

/// Stream filter subject for a pattern: `events.{pattern}`.
pub fn event_filter(pattern: &EventPattern) -> String {
    format!("events.{}", pattern.as_str())
}

/// Command subject: `commands.{service}.{command}`.
pub fn command_subject(service: &str, command: &str) -> String {
    format!("commands.{service}.{command}")
}

/// Filter selecting every command of a service: `commands.{service}.*`.
pub fn command_filter(service: &str) -> String {
    format!("commands.{service}.*")
}

/// Registry key: `service-instances.{service}.{instance}`.
pub fn registry_key(service: &str, instance: &str) -> String {
    format!("{REGISTRY_KEY_PREFIX}.{service}.{instance}")
}

/// Watch filter for one service's instances: `service-instances.{service}.*`.
pub fn registry_service_filter(service: &str) -> String {
    format!("{REGISTRY_KEY_PREFIX}.{service}.*")
}

/// Watch filter for every instance: `service-instances.>`.
pub fn registry_all_filter() -> String {
    format!("{REGISTRY_KEY_PREFIX}.>")
}

/// Splits `service-instances.{service}.{instance}` into `(service, instance)`.
///
/// Returns `None` unless the key has exactly that shape with two non-empty,
/// wildcard-free parts; the parts are not otherwise validated.
pub fn parse_registry_key(key: &str) -> Option<(String, String)> {
    parse_three(key, REGISTRY_KEY_PREFIX)
}

/// Election key: `sticky-active.{service}.{group}`.
pub fn election_key(service: &str, group: &str) -> String {
    format!("{ELECTION_KEY_PREFIX}.{service}.{group}")
}

/// Splits `sticky-active.{service}.{group}` into `(service, group)`.
///
/// Returns `None` unless the key has exactly that shape with two non-empty,
/// wildcard-free parts; the parts are not otherwise validated.
pub fn parse_election_key(key: &str) -> Option<(String, String)> {
    parse_three(key, ELECTION_KEY_PREFIX)
}

/// Metrics snapshot subject: `aegis.metrics.{service}.{instance}`.
pub fn metrics_subject(service: &str, instance: &str) -> String {
    format!("aegis.metrics.{service}.{instance}")
}

/// Liveness beat subject: `aegis.heartbeat.{service}.{instance}`.
pub fn heartbeat_subject(service: &str, instance: &str) -> String {
    format!("aegis.heartbeat.{service}.{instance}")
}

/// `aegis.heartbeat.{service}.{instance}` → (service, instance), for subjects
/// of exactly that shape.
pub fn parse_heartbeat_subject(subject: &str) -> Option<(String, String)> {
    parse_three(subject.strip_prefix("aegis.")?, "heartbeat")
}

/// Log subject: `aegis.log.{service}.{instance}`.
pub fn log_subject(service: &str, instance: &str) -> String {
    format!("aegis.log.{service}.{instance}")
}

/// Control subject for one instance: `aegis.control.{service}.{instance}.{verb}`
/// (verbs such as `config`).
pub fn control_subject(service: &str, instance: &str, verb: &str) -> String {
    format!("aegis.control.{service}.{instance}.{verb}")
}

/// The operator's drill subject of one instance:
/// `aegis.control.{service}.{instance}` (request/reply, JSON
/// [`ControlRequest`](crate::control::ControlRequest)s). Only the operator
/// role may publish under `aegis.control.>`.
pub fn instance_control_subject(service: &str, instance: &str) -> String {
    format!("aegis.control.{service}.{instance}")
}

fn parse_three(key: &str, prefix: &str) -> Option<(String, String)> {
    let mut tokens = key.split('.');
    match (tokens.next(), tokens.next(), tokens.next(), tokens.next()) {
        (Some(p), Some(a), Some(b), None) if p == prefix && plain(a) && plain(b) => {
            Some((a.to_owned(), b.to_owned()))
        }
        _ => None,
    }
}

fn plain(token: &str) -> bool {
    !token.is_empty() && !token.contains(['*', '>'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_subjects() {
        assert_eq!(
            rpc_subject("order-service", "place"),
            "rpc.order-service.place"
        );
        assert_eq!(rpc_queue_group("order-service"), "rpc.order-service");
        assert_eq!(
            rpc_instance_subject("order-service", "order-1", "place"),
            "rpc.order-service.order-1.place"
        );
    }

    #[test]
    fn event_and_command_subjects() {
        assert_eq!(event_subject("order", "created"), "events.order.created");
        let p = EventPattern::parse("order.*").unwrap();
        assert_eq!(event_filter(&p), "events.order.*");
        assert_eq!(event_filter(&EventPattern::parse(">").unwrap()), "events.>");
        assert_eq!(command_subject("risk", "recalc"), "commands.risk.recalc");
        assert_eq!(command_filter("risk"), "commands.risk.*");
    }

    #[test]
    fn registry_keys() {
        let key = registry_key("order-service", "pod-1");
        assert_eq!(key, "service-instances.order-service.pod-1");
        assert_eq!(
            parse_registry_key(&key),
            Some(("order-service".into(), "pod-1".into()))
        );
        assert_eq!(
            registry_service_filter("order-service"),
            "service-instances.order-service.*"
        );
        assert_eq!(registry_all_filter(), "service-instances.>");
        for bad in [
            "",
            "service-instances",
            "service-instances.a",
            "service-instances.a.",
            "service-instances..b",
            "service-instances.a.b.c",
            "service-instances.a.*",
            "sticky-active.a.b",
            "other.a.b",
        ] {
            assert_eq!(parse_registry_key(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn election_keys() {
        let key = election_key("order-service", "default");
        assert_eq!(key, "sticky-active.order-service.default");
        assert_eq!(
            parse_election_key(&key),
            Some(("order-service".into(), "default".into()))
        );
        assert_eq!(parse_election_key("service-instances.a.b"), None);
        assert_eq!(parse_election_key("sticky-active.a"), None);
        assert_eq!(parse_election_key("sticky-active.a.b.c"), None);
    }

    #[test]
    fn observability_subjects() {
        assert_eq!(metrics_subject("svc", "i1"), "aegis.metrics.svc.i1");
        assert_eq!(heartbeat_subject("svc", "i1"), "aegis.heartbeat.svc.i1");
        assert_eq!(
            parse_heartbeat_subject("aegis.heartbeat.svc.i1"),
            Some(("svc".to_owned(), "i1".to_owned()))
        );
        assert_eq!(parse_heartbeat_subject("aegis.heartbeat.svc"), None);
        assert_eq!(parse_heartbeat_subject("aegis.metrics.svc.i1"), None);
        assert_eq!(log_subject("svc", "i1"), "aegis.log.svc.i1");
        assert_eq!(
            control_subject("svc", "i1", "config"),
            "aegis.control.svc.i1.config"
        );
        assert_eq!(
            instance_control_subject("svc", "i1"),
            "aegis.control.svc.i1"
        );
    }

    #[test]
    fn builders_fall_under_stream_subjects() {
        let under = |subject: &str, filter: &str| subject.starts_with(filter.trim_end_matches('>'));
        assert!(under(&event_subject("a", "b"), EVENTS_SUBJECTS));
        assert!(under(&command_subject("a", "b"), COMMANDS_SUBJECTS));
        assert!(under(&metrics_subject("a", "b"), METRICS_SUBJECTS));
        assert!(under(&log_subject("a", "b"), LOG_SUBJECTS));
        assert!(under(
            &dead_letter_subject("EVENTS", "c"),
            DEAD_LETTER_SUBJECTS
        ));
        assert_eq!(
            max_deliveries_advisories("COMMANDS"),
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.COMMANDS.*"
        );
        assert_eq!(REGISTRY_BUCKET, "service_registry");
        assert_eq!(DEFINITIONS_BUCKET, "service_definitions");
        assert_eq!(ELECTIONS_BUCKET, "service_elections");
        assert_eq!(
            (EVENTS_STREAM, COMMANDS_STREAM, METRICS_STREAM, LOG_STREAM),
            ("EVENTS", "COMMANDS", "AEGIS_METRICS", "AEGIS_LOG")
        );
    }
}
