//! The rule that turns a registry record into what the views show: pure
//! functions of the record, the holder of its sticky group's election key
//! and the state of its NATS connection, so the rule can be tested without
//! NATS and is the same in the API, the live stream and `aegis status`.
//!
//! The record is the instance's own claim, written by it at its last
//! heartbeat; the election key and the server's connection events are
//! the sources of truth for leadership and liveness. So:
//!
//! 1. An instance whose NATS connection closed (the server's disconnect
//!    advisory) is down: `UNHEALTHY`, reason `disconnected`, whatever its
//!    record says. Its record expires with its TTL. One whose liveness
//!    beats stopped (hung, partitioned, or crashed where no advisory is
//!    read) is `UNHEALTHY`, reason `unresponsive`, until they resume. One
//!    whose record then expired while the server still holds its
//!    connection (hung or partitioned, not gone) stays shown, `UNHEALTHY`,
//!    reason `unresponsive_expired`, until the connection closes or the
//!    beats resume.
//! 2. In a sticky group, the holder of the election key is the `ACTIVE`
//!    instance, with the key's fencing epoch (a record that still says
//!    STANDBY a few milliseconds after the election is shown as what it
//!    is). Any other record that claims ACTIVE is `UNHEALTHY`, reason
//!    `deposed`. So at most one instance per (service, group) is ACTIVE in
//!    every view, at every moment.
//! 3. Otherwise the record's status stands, with the reason it gives
//!    (`metadata.statusReason`: `health_check`, `operator`) and since when
//!    (`metadata.statusSince`). A key
//!    holder whose record says UNHEALTHY stays ACTIVE with reason
//!    `degraded`: no healthy standby could take over, and a degraded leader
//!    serves better than none (its record still names the underlying
//!    reason).
//!
//! With the reason `health_check`, and with `degraded` when the record's
//! own reason is `health_check`, goes what the instance's health check said
//! (`metadata.statusDetail`): text from a record, so without control
//! characters and cut again as the SDK cuts it
//! ([`cut_status_detail`](aegis_contracts::control::cut_status_detail)):
//! see [`status_detail`].

use aegis_contracts::control::{METADATA_STATUS_DETAIL, METADATA_STATUS_REASON, cut_status_detail};
use aegis_contracts::{InstanceStatus, ServiceInstance};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Why an instance shows the status it shows, when that needs saying.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StatusReason {
    /// Its NATS connection closed (the process died or was disconnected);
    /// the record stays until its TTL runs out.
    Disconnected,
    /// Its liveness beats stopped (a hung or partitioned process, or a crash
    /// seen without the server's advisories); shown until they resume or
    /// the record expires.
    Unresponsive,
    /// Its liveness beats stopped and its record expired, but the NATS
    /// server still holds its connection open: a hung or partitioned
    /// process, still on the bus (seen with system account access only).
    /// Shown until the connection closes (then `Disconnected`, and gone),
    /// or until it beats and writes its record again.
    UnresponsiveExpired,
    /// Its record claims the lead of a sticky group whose election key
    /// another instance holds (a crashed or paused former leader): ACTIVE,
    /// or UNHEALTHY with an epoch, as a degraded leader writes it.
    Deposed,
    /// Its own health check fails.
    HealthCheck,
    /// An operator made it unhealthy on purpose (`aegis chaos unhealthy`).
    Operator,
    /// It leads its sticky group although unhealthy, because no healthy
    /// instance could take over.
    Degraded,
}

impl StatusReason {
    /// The wire spelling, e.g. `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Disconnected => "disconnected",
            Self::Unresponsive => "unresponsive",
            Self::UnresponsiveExpired => "unresponsive_expired",
            Self::Deposed => "deposed",
            Self::HealthCheck => "health_check",
            Self::Operator => "operator",
            Self::Degraded => "degraded",
        }
    }

    /// Parses the wire spelling; `None` for anything else.
    pub fn parse(s: &str) -> Option<StatusReason> {
        [
            Self::Disconnected,
            Self::Unresponsive,
            Self::UnresponsiveExpired,
            Self::Deposed,
            Self::HealthCheck,
            Self::Operator,
            Self::Degraded,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

/// Since when the record says its instance has been UNHEALTHY for the
/// reason it gives (`metadata.statusSince`, RFC 3339), if it says so.
pub fn reported_since(record: &ServiceInstance) -> Option<chrono::DateTime<chrono::Utc>> {
    if record.status != InstanceStatus::Unhealthy {
        return None;
    }
    record
        .metadata
        .get(aegis_contracts::control::METADATA_STATUS_SINCE)?
        .as_str()
        .and_then(|s| aegis_contracts::models::rfc3339::parse_utc(s).ok())
}

/// What the monitor knows of an instance's process, apart from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Liveness {
    /// Nothing says it is gone.
    #[default]
    Live,
    /// Its NATS connection closed.
    Disconnected,
    /// Its liveness beats stopped.
    Unresponsive,
    /// Its liveness beats stopped and its record expired, while its NATS
    /// connection is still open.
    UnresponsiveExpired,
}

/// The holder of a sticky group's election key, as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The leader's instance id.
    pub instance_id: String,
    /// Its fencing epoch (the revision of its winning write).
    pub epoch: u64,
}

/// What the views show for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Derived {
    /// The status to show.
    pub status: InstanceStatus,
    /// Why, when that needs saying.
    pub reason: Option<StatusReason>,
    /// The fencing epoch to show (the key's, for the leader).
    pub epoch: Option<u64>,
    /// What the instance's own health check said of its failure, for the
    /// reason `health_check` and for `degraded` when the record's own
    /// reason is `health_check` (see [`status_detail`]).
    pub detail: Option<String>,
}

/// What `record` says its failed health check said
/// (`metadata.statusDetail`), as it may be shown: only while the record
/// says UNHEALTHY with reason `health_check`; control characters removed
/// (a line break or tab becomes a space, runs of white space one), then
/// cut as a record carries it
/// ([`cut_status_detail`](aegis_contracts::control::cut_status_detail):
/// 200 characters at most, ending with `…`). `None` when there is
/// nothing to show.
pub fn status_detail(record: &ServiceInstance) -> Option<String> {
    if record.status != InstanceStatus::Unhealthy
        || record
            .metadata
            .get(METADATA_STATUS_REASON)
            .and_then(|v| v.as_str())
            != Some(StatusReason::HealthCheck.as_str())
    {
        return None;
    }
    clean_detail(record.metadata.get(METADATA_STATUS_DETAIL)?.as_str()?)
}

/// `raw`, a health check's words from a record, as they may be shown:
/// format characters removed, control characters and runs of white space
/// one space, cut to the bound. `None` when nothing is left.
fn clean_detail(raw: &str) -> Option<String> {
    // Format characters (bidirectional overrides, zero-width joiners) are
    // not control characters but reorder or hide what a viewer reads;
    // taken out first, so the words around one join as they read.
    let visible: String = raw.chars().filter(|c| !is_format(*c)).collect();
    let clean = visible
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    cut_status_detail(&clean)
}

/// `record`'s own copy of its health check's words
/// (`metadata.statusDetail`), made fit to show with the record as
/// [`status_detail`] makes it (whatever the status), or taken out when
/// nothing is left: the views show the whole record, and its raw text
/// could move a terminal's cursor or reverse what a viewer reads.
pub(crate) fn clean_record_detail(record: &mut ServiceInstance) {
    let Some(raw) = record
        .metadata
        .get(METADATA_STATUS_DETAIL)
        .and_then(|v| v.as_str())
    else {
        return;
    };
    match clean_detail(raw) {
        Some(clean) if clean == raw => {}
        Some(clean) => {
            record
                .metadata
                .insert(METADATA_STATUS_DETAIL.into(), clean.into());
        }
        None => {
            record.metadata.remove(METADATA_STATUS_DETAIL);
        }
    }
}

/// Unicode format characters that change how text around them reads:
/// bidirectional marks, embeddings, overrides and isolates, zero-width
/// characters, the byte order mark.
fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            // Tag characters: invisible, and read by some renderers.
            | '\u{E0000}'..='\u{E007F}'
    )
}

/// Applies the rule (see the module docs) to `record`, given the holder of
/// its sticky group's key (`None`: no key, or not a sticky instance) and
/// what is known of its process.
pub fn derive(record: &ServiceInstance, holder: Option<&Holder>, liveness: Liveness) -> Derived {
    let own_reason = record
        .metadata
        .get(METADATA_STATUS_REASON)
        .and_then(|v| v.as_str())
        .and_then(StatusReason::parse);
    let down = match liveness {
        Liveness::Live => None,
        Liveness::Disconnected => Some(StatusReason::Disconnected),
        Liveness::Unresponsive => Some(StatusReason::Unresponsive),
        Liveness::UnresponsiveExpired => Some(StatusReason::UnresponsiveExpired),
    };
    if down.is_some() {
        return Derived {
            status: InstanceStatus::Unhealthy,
            reason: down,
            epoch: record.epoch,
            detail: None,
        };
    }
    if record.sticky_active_group.is_some() {
        if let Some(h) = holder.filter(|h| h.instance_id == record.instance_id) {
            let degraded = record.status == InstanceStatus::Unhealthy;
            return Derived {
                status: InstanceStatus::Active,
                reason: degraded.then_some(StatusReason::Degraded),
                epoch: Some(h.epoch),
                detail: status_detail(record),
            };
        }
        if claims_the_lead(record) {
            return Derived {
                status: InstanceStatus::Unhealthy,
                reason: Some(StatusReason::Deposed),
                epoch: record.epoch,
                detail: None,
            };
        }
    }
    Derived {
        status: record.status,
        reason: match record.status {
            InstanceStatus::Unhealthy => own_reason,
            _ => None,
        },
        epoch: record.epoch,
        detail: status_detail(record),
    }
}

/// Whether `record` says its instance leads its sticky group: ACTIVE, or
/// UNHEALTHY with a fencing epoch (a leader that is degraded writes its
/// record UNHEALTHY and keeps its epoch; a standby's record has none).
pub(crate) fn claims_the_lead(record: &ServiceInstance) -> bool {
    match record.status {
        InstanceStatus::Active => true,
        InstanceStatus::Unhealthy => record.epoch.is_some(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_contracts::control::STATUS_DETAIL_MAX_CHARS;
    use chrono::Utc;

    fn record(id: &str, status: InstanceStatus, group: Option<&str>) -> ServiceInstance {
        let mut r = ServiceInstance::new("order-service", id, "1.0.0", Utc::now());
        r.status = status;
        r.sticky_active_group = group.map(str::to_owned);
        r
    }

    fn holder(id: &str, epoch: u64) -> Holder {
        Holder {
            instance_id: id.into(),
            epoch,
        }
    }

    #[test]
    fn at_most_one_active_per_group_whatever_the_records_claim() {
        // Every combination of claims in a group of three, with and without
        // a key holder: the derived view never has two ACTIVE, and the one
        // ACTIVE is the holder.
        use InstanceStatus::*;
        let statuses = [Active, Standby, Unhealthy];
        for a in statuses {
            for b in statuses {
                for c in statuses {
                    for h in [None, Some("o1"), Some("o2"), Some("gone")] {
                        let h = h.map(|id| holder(id, 7));
                        let recs = [
                            record("o1", a, Some("default")),
                            record("o2", b, Some("default")),
                            record("o3", c, Some("default")),
                        ];
                        let active: Vec<_> = recs
                            .iter()
                            .filter(|r| derive(r, h.as_ref(), Liveness::Live).status == Active)
                            .map(|r| r.instance_id.clone())
                            .collect();
                        assert!(active.len() <= 1, "{a:?} {b:?} {c:?} {h:?}: {active:?}");
                        if let Some(one) = active.first() {
                            assert_eq!(Some(one), h.as_ref().map(|h| &h.instance_id));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_record_claiming_active_without_the_key_is_deposed() {
        let r = record("o1", InstanceStatus::Active, Some("default"));
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Live);
        assert_eq!(d.status, InstanceStatus::Unhealthy);
        assert_eq!(d.reason, Some(StatusReason::Deposed));
    }

    #[test]
    fn a_degraded_leader_that_lost_the_key_is_deposed_and_an_unhealthy_standby_is_not() {
        // A leader's record says UNHEALTHY while it is degraded, and keeps
        // its epoch: a standby's record has none.
        let mut r = record("o1", InstanceStatus::Unhealthy, Some("default"));
        r.metadata
            .insert("statusReason".into(), "health_check".into());
        r.epoch = Some(5);
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Live);
        assert_eq!(d.status, InstanceStatus::Unhealthy);
        assert_eq!(d.reason, Some(StatusReason::Deposed));
        assert_eq!(d.epoch, Some(5));
        r.epoch = None;
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Live);
        assert_eq!(d.reason, Some(StatusReason::HealthCheck));
    }

    #[test]
    fn the_key_holder_is_active_with_the_keys_epoch() {
        let mut r = record("o2", InstanceStatus::Standby, Some("default"));
        r.epoch = Some(3);
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Live);
        assert_eq!(d.status, InstanceStatus::Active);
        assert_eq!(d.epoch, Some(9));
        assert_eq!(d.reason, None);
        r.status = InstanceStatus::Unhealthy;
        assert_eq!(
            derive(&r, Some(&holder("o2", 9)), Liveness::Live).reason,
            Some(StatusReason::Degraded)
        );
    }

    #[test]
    fn a_closed_connection_is_down_even_for_the_key_holder() {
        let r = record("o2", InstanceStatus::Active, Some("default"));
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Disconnected);
        assert_eq!(d.status, InstanceStatus::Unhealthy);
        assert_eq!(d.reason, Some(StatusReason::Disconnected));
        let p = record("p1", InstanceStatus::Active, None);
        assert_eq!(
            derive(&p, None, Liveness::Disconnected).reason,
            Some(StatusReason::Disconnected)
        );
    }

    #[test]
    fn the_records_own_since_is_read_only_while_unhealthy() {
        let mut r = record("p1", InstanceStatus::Unhealthy, None);
        assert_eq!(reported_since(&r), None);
        r.metadata
            .insert("statusSince".into(), "2026-11-30T16:00:00.000Z".into());
        assert_eq!(
            reported_since(&r).map(|t| t.to_rfc3339()),
            Some("2026-11-30T16:00:00+00:00".to_owned())
        );
        r.status = InstanceStatus::Active;
        assert_eq!(reported_since(&r), None);
    }

    const FULL: &str = "the order store is full: 1.0 MiB of 1.0 MiB used; orders are refused until settled ones expire (kept 6h)";

    fn failing(id: &str, group: Option<&str>, reason: &str, detail: &str) -> ServiceInstance {
        let mut r = record(id, InstanceStatus::Unhealthy, group);
        r.metadata.insert("statusReason".into(), reason.into());
        r.metadata.insert("statusDetail".into(), detail.into());
        r
    }

    #[test]
    fn the_health_checks_detail_goes_with_its_reason() {
        let r = failing("p1", None, "health_check", FULL);
        let d = derive(&r, None, Liveness::Live);
        assert_eq!(d.reason, Some(StatusReason::HealthCheck));
        assert_eq!(d.detail.as_deref(), Some(FULL));
        // An operator's unhealthy says no more than that.
        let r = failing("p1", None, "operator", FULL);
        assert_eq!(derive(&r, None, Liveness::Live).detail, None);
        // A process known down: the record's claim is not why.
        let r = failing("p1", None, "health_check", FULL);
        for liveness in [
            Liveness::Disconnected,
            Liveness::Unresponsive,
            Liveness::UnresponsiveExpired,
        ] {
            assert_eq!(derive(&r, None, liveness).detail, None, "{liveness:?}");
        }
        // A healthy record that still carries a stale detail shows none.
        let mut r = failing("p1", None, "health_check", FULL);
        r.status = InstanceStatus::Active;
        assert_eq!(derive(&r, None, Liveness::Live).detail, None);
    }

    #[test]
    fn a_degraded_leader_shows_what_its_health_check_said() {
        let mut r = failing("o1", Some("default"), "health_check", FULL);
        r.epoch = Some(4);
        let d = derive(&r, Some(&holder("o1", 9)), Liveness::Live);
        assert_eq!(
            (d.status, d.reason, d.detail.as_deref()),
            (
                InstanceStatus::Active,
                Some(StatusReason::Degraded),
                Some(FULL)
            )
        );
        // Degraded by an operator: no detail.
        let mut r = failing("o1", Some("default"), "operator", FULL);
        r.epoch = Some(4);
        let d = derive(&r, Some(&holder("o1", 9)), Liveness::Live);
        assert_eq!((d.reason, d.detail), (Some(StatusReason::Degraded), None));
        // Deposed: the reason is the key, not the health check.
        let mut r = failing("o1", Some("default"), "health_check", FULL);
        r.epoch = Some(4);
        let d = derive(&r, Some(&holder("o2", 9)), Liveness::Live);
        assert_eq!((d.reason, d.detail), (Some(StatusReason::Deposed), None));
    }

    #[test]
    fn a_detail_is_untrusted_text_cut_and_cleaned() {
        let detail = |text: &str| status_detail(&failing("p1", None, "health_check", text));
        assert_eq!(
            detail("full\r\n\x1b[31mred\x1b[0m\tnow\u{0}").as_deref(),
            Some("full [31mred [0m now")
        );
        assert_eq!(
            detail("a\u{202E}b\u{200B}c\u{FEFF}").as_deref(),
            Some("abc")
        );
        // A format character between spaces leaves one space, not two;
        // tag characters go too.
        assert_eq!(
            detail("a \u{200B} b\u{E0001}\u{E0041}").as_deref(),
            Some("a b")
        );
        assert_eq!(detail(" \n\t "), None);
        assert_eq!(detail(""), None);
        let mut r = failing("p1", None, "health_check", "x");
        r.metadata.insert("statusDetail".into(), 42.into());
        assert_eq!(status_detail(&r), None);
        // Exactly the bound stands; one more is cut to it, with `…`.
        let exact = "é".repeat(STATUS_DETAIL_MAX_CHARS);
        assert_eq!(detail(&exact).as_deref(), Some(exact.as_str()));
        let long = "ü".repeat(STATUS_DETAIL_MAX_CHARS * 20);
        let cut = detail(&long).unwrap();
        assert_eq!(cut.chars().count(), STATUS_DETAIL_MAX_CHARS);
        assert!(cut.ends_with("ü…"), "{cut}");
        // No space before the `…`.
        let words = format!("{} tail", "a".repeat(STATUS_DETAIL_MAX_CHARS - 2));
        assert!(detail(&words).unwrap().ends_with("a…"));
    }

    #[test]
    fn plain_records_keep_their_status_and_reason() {
        let mut r = record("p1", InstanceStatus::Unhealthy, None);
        r.metadata
            .insert("statusReason".into(), "health_check".into());
        let d = derive(&r, None, Liveness::Live);
        assert_eq!(d.status, InstanceStatus::Unhealthy);
        assert_eq!(d.reason, Some(StatusReason::HealthCheck));
        r.status = InstanceStatus::Active;
        assert_eq!(derive(&r, None, Liveness::Live).reason, None);
        assert_eq!(
            derive(&r, None, Liveness::Unresponsive).reason,
            Some(StatusReason::Unresponsive)
        );
        let held = derive(&r, None, Liveness::UnresponsiveExpired);
        assert_eq!(
            (held.status, held.reason),
            (
                InstanceStatus::Unhealthy,
                Some(StatusReason::UnresponsiveExpired)
            )
        );
        for reason in [
            StatusReason::Disconnected,
            StatusReason::Unresponsive,
            StatusReason::UnresponsiveExpired,
            StatusReason::Deposed,
            StatusReason::HealthCheck,
            StatusReason::Operator,
            StatusReason::Degraded,
        ] {
            assert_eq!(StatusReason::parse(reason.as_str()), Some(reason));
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                serde_json::json!(reason.as_str())
            );
        }
    }
}
