//! The operator's drill protocol: JSON requests on an instance's control
//! subject `aegis.control.{service}.{instance}`
//! ([`instance_control_subject`](crate::subjects::instance_control_subject))
//! and the replies, plus the spelling of the reasons an instance reports
//! itself UNHEALTHY.
//!
//! Requests are tagged by `op`:
//!
//! | request | effect |
//! | --- | --- |
//! | `{"op":"unhealthy"}` | the instance reports UNHEALTHY until `healthy` |
//! | `{"op":"unhealthy","for_ms":30000}` | the same, for 30 s |
//! | `{"op":"healthy"}` | lifts the operator's verdict (a failing check still counts) |
//! | `{"op":"slow","delay_ms":500}` | every handler waits 500 ms first (0 lifts it); the record says so ([`METADATA_DRILL_DELAY_MS`]) |
//! | `{"op":"status"}` | changes nothing; the reply tells the state |
//!
//! Every reply is a [`ControlResponse`]: `{"ok": ControlState}` or
//! `{"error": WireError}` (e.g. `INVALID_REQUEST` for an unknown `op`).
//! Only the operator role may publish under `aegis.control.>`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wire::WireError;

/// The registry record's metadata key naming why it says UNHEALTHY
/// ([`UnhealthyReason::as_str`]); absent while healthy.
pub const METADATA_STATUS_REASON: &str = "statusReason";
/// The registry record's metadata key saying since when (RFC 3339 UTC) the
/// instance has been UNHEALTHY for that reason; absent while healthy.
pub const METADATA_STATUS_SINCE: &str = "statusSince";
/// The registry record's metadata key holding what the instance's own
/// health check said of its failure (a short sentence in the service's
/// words, e.g. "the order store is full: 1.0 MiB of 1.0 MiB"); present
/// only while the record says UNHEALTHY with reason `health_check` and the
/// check gave a reason, at most [`STATUS_DETAIL_MAX_CHARS`] characters.
pub const METADATA_STATUS_DETAIL: &str = "statusDetail";
/// The longest [`METADATA_STATUS_DETAIL`] a record carries; a longer text
/// is cut at a character boundary and ends with `…`.
pub const STATUS_DETAIL_MAX_CHARS: usize = 200;

/// `text` as [`METADATA_STATUS_DETAIL`] carries it: trimmed, `None` when
/// nothing is left, and cut at a character boundary to
/// [`STATUS_DETAIL_MAX_CHARS`] characters, the last of them `…` (no space
/// before it), when longer. The SDK cuts what a check said so; the monitor
/// cuts a record's text again after removing its control characters.
///
/// ```
/// use aegis_contracts::control::cut_status_detail;
///
/// assert_eq!(cut_status_detail("  full \n").as_deref(), Some("full"));
/// assert_eq!(cut_status_detail(" "), None);
/// assert_eq!(cut_status_detail(&"x".repeat(500)).unwrap().chars().count(), 200);
/// ```
pub fn cut_status_detail(text: &str) -> Option<String> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    match text.char_indices().nth(STATUS_DETAIL_MAX_CHARS - 1) {
        Some((end, _)) if text[end..].chars().nth(1).is_some() => {
            Some(format!("{}…", text[..end].trim_end()))
        }
        _ => Some(text.to_owned()),
    }
}

/// The registry record's metadata key holding the delay (milliseconds, a
/// number) an operator's `slow` drill adds before every handler of the
/// instance; absent while no drill delays it. Only metadata, so a reader
/// that does not know it still reads the record: the instance is as
/// ACTIVE or STANDBY as before, only slower on purpose.
pub const METADATA_DRILL_DELAY_MS: &str = "drillDelayMs";
/// The registry record's metadata key saying since when (RFC 3339 UTC) an
/// operator's `slow` drill has delayed the instance's handlers (a new
/// delay keeps the start; 0 lifts the drill); absent with
/// [`METADATA_DRILL_DELAY_MS`].
pub const METADATA_DRILL_DELAY_SINCE: &str = "drillDelaySince";

/// The longest `for_ms` an `unhealthy` request may ask for: one day.
pub const MAX_UNHEALTHY_MS: u64 = 24 * 60 * 60 * 1000;
/// The longest `delay_ms` a `slow` request may ask for: one minute.
pub const MAX_DELAY_MS: u64 = 60_000;

/// One drill request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// Report UNHEALTHY (and, as a leader, hand over) until `healthy`, or
    /// for `for_ms` milliseconds.
    Unhealthy {
        /// How long; absent means until a `healthy` request.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        for_ms: Option<u64>,
    },
    /// Lift the operator's verdict.
    Healthy,
    /// Delay every handler by `delay_ms` before it runs (0 lifts it).
    Slow {
        /// The added latency in milliseconds.
        delay_ms: u64,
    },
    /// Report the state, change nothing.
    Status,
}

impl ControlRequest {
    /// Checks the bounds (`for_ms` 1 ms to one day, `delay_ms` up to one
    /// minute).
    ///
    /// # Errors
    /// An `INVALID_REQUEST` [`WireError`] naming the field.
    pub fn validate(&self) -> Result<(), WireError> {
        match self {
            Self::Unhealthy { for_ms: Some(ms) } if *ms == 0 || *ms > MAX_UNHEALTHY_MS => {
                Err(WireError::invalid_request(format!(
                    "for_ms must be between 1 and {MAX_UNHEALTHY_MS} (one day), got {ms}"
                )))
            }
            Self::Slow { delay_ms } if *delay_ms > MAX_DELAY_MS => Err(WireError::invalid_request(
                format!("delay_ms must be at most {MAX_DELAY_MS} (one minute), got {delay_ms}"),
            )),
            _ => Ok(()),
        }
    }
}

/// Why an instance reports itself UNHEALTHY.
///
/// A reply of an instance of another version may name a reason this build
/// does not know (an older SDK's `registry_writes`); it decodes as
/// [`Unknown`](Self::Unknown) rather than failing the whole reply, so an
/// operator's tools work against a mixed fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnhealthyReason {
    /// An operator made it unhealthy (`aegis chaos unhealthy`).
    Operator,
    /// Its own health check fails.
    HealthCheck,
    /// A reason this build does not know, read from another version's
    /// reply. Never sent by this build; shown as `unknown`.
    #[serde(other)]
    Unknown,
}

impl UnhealthyReason {
    /// The wire spelling, e.g. `health_check`; `unknown` for
    /// [`Unknown`](Self::Unknown).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::HealthCheck => "health_check",
            Self::Unknown => "unknown",
        }
    }

    /// Parses the wire spelling of a known reason; `None` for anything
    /// else (`unknown` included).
    pub fn parse(s: &str) -> Option<UnhealthyReason> {
        [Self::Operator, Self::HealthCheck]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// An instance's health and drill state, as its control subject reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlState {
    /// The service name.
    pub service: String,
    /// The instance id.
    pub instance: String,
    /// Whether it reports itself healthy.
    pub healthy: bool,
    /// Why not, when it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<UnhealthyReason>,
    /// Since when it has been unhealthy.
    #[serde(
        default,
        with = "crate::models::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<DateTime<Utc>>,
    /// When an operator's time-limited verdict ends.
    #[serde(
        default,
        with = "crate::models::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub forced_until: Option<DateTime<Utc>>,
    /// The delay added to every handler, in milliseconds.
    pub delay_ms: u64,
    /// `leader`, `standby` (single-active services) or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// The reply to a [`ControlRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlResponse {
    /// Done; the state after the request.
    Ok(ControlState),
    /// Refused.
    Error(WireError),
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_long_detail_is_cut_at_a_character_boundary() {
        let max = STATUS_DETAIL_MAX_CHARS;
        let exact = "é".repeat(max);
        assert_eq!(cut_status_detail(&exact).as_deref(), Some(exact.as_str()));
        let long = format!("{exact}ü and more");
        let cut = cut_status_detail(&long).unwrap();
        assert_eq!(cut.chars().count(), max);
        assert!(cut.ends_with('…'), "{cut}");
        assert_eq!(cut, format!("{}…", "é".repeat(max - 1)));
        // A space before the cut is not kept before the ellipsis.
        let spaced = format!("{} {}", "a".repeat(max - 2), "b".repeat(10));
        assert_eq!(
            cut_status_detail(&spaced).unwrap(),
            format!("{}…", "a".repeat(max - 2))
        );
        assert_eq!(cut_status_detail(""), None);
    }

    #[test]
    fn requests_parse_from_their_documented_json() {
        let parse = |v: serde_json::Value| serde_json::from_value::<ControlRequest>(v);
        assert_eq!(
            parse(json!({"op": "unhealthy"})).unwrap(),
            ControlRequest::Unhealthy { for_ms: None }
        );
        assert_eq!(
            parse(json!({"op": "unhealthy", "for_ms": 30000})).unwrap(),
            ControlRequest::Unhealthy {
                for_ms: Some(30_000)
            }
        );
        assert_eq!(
            parse(json!({"op": "healthy"})).unwrap(),
            ControlRequest::Healthy
        );
        assert_eq!(
            parse(json!({"op": "slow", "delay_ms": 500})).unwrap(),
            ControlRequest::Slow { delay_ms: 500 }
        );
        assert!(parse(json!({"op": "explode"})).is_err());
        assert!(parse(json!({"op": "slow"})).is_err(), "delay_ms required");
        assert!(
            parse(json!({"op": "unhealthy", "for": 30000})).is_err(),
            "a misspelt field is refused, not ignored"
        );
    }

    /// An instance of another version may name a reason this build does
    /// not know (`registry_writes` from an older SDK): its reply still
    /// decodes, the reason shown as unknown, so a drill against a mixed
    /// fleet reads its state.
    #[test]
    fn a_reply_with_an_unknown_reason_still_decodes() {
        let reply = json!({"ok": {
            "service": "pricing-service",
            "instance": "p-1",
            "healthy": false,
            "reason": "registry_writes",
            "since": "2026-12-05T12:00:00Z",
            "delay_ms": 0
        }});
        let ControlResponse::Ok(state) = serde_json::from_value::<ControlResponse>(reply).unwrap()
        else {
            panic!("an ok reply");
        };
        assert!(!state.healthy);
        assert_eq!(state.reason, Some(UnhealthyReason::Unknown));
        assert_eq!(UnhealthyReason::Unknown.as_str(), "unknown");
        // The records side is unchanged: an unknown spelling parses to None.
        assert_eq!(UnhealthyReason::parse("registry_writes"), None);
        assert_eq!(UnhealthyReason::parse("unknown"), None);
    }

    #[test]
    fn bounds_are_checked() {
        assert!(
            ControlRequest::Unhealthy { for_ms: Some(0) }
                .validate()
                .is_err()
        );
        assert!(
            ControlRequest::Unhealthy {
                for_ms: Some(MAX_UNHEALTHY_MS + 1)
            }
            .validate()
            .is_err()
        );
        assert!(
            ControlRequest::Slow {
                delay_ms: MAX_DELAY_MS + 1
            }
            .validate()
            .is_err()
        );
        ControlRequest::Slow { delay_ms: 0 }.validate().unwrap();
        ControlRequest::Unhealthy { for_ms: None }
            .validate()
            .unwrap();
    }

    #[test]
    fn reasons_round_trip() {
        for r in [UnhealthyReason::Operator, UnhealthyReason::HealthCheck] {
            assert_eq!(UnhealthyReason::parse(r.as_str()), Some(r));
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        }
    }

    #[test]
    fn responses_are_tagged_ok_or_error() {
        let err = ControlResponse::Error(WireError::invalid_request("no"));
        let v = serde_json::to_value(&err).unwrap();
        assert_eq!(v["error"]["code"], "INVALID_REQUEST");
        let back: ControlResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, err);
    }
}
