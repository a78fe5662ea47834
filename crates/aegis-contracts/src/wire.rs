//! The RPC error sent over the wire and the header names Aegis uses.
//!
//! [`WireError`] is a small serializable value with a stable [`ErrorCode`],
//! separate from any Rust error type: handlers return it, the SDK puts its
//! code in the [`HEADER_ERROR_CODE`] header (and the numeric
//! [`ErrorCode::status`] in the NATS services-protocol
//! `Nats-Service-Error-Code` header), and clients branch on the code, never on
//! the message.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Header carrying an error's [`ErrorCode`] string (e.g. `NOT_FOUND`).
pub const HEADER_ERROR_CODE: &str = "Aegis-Error-Code";
/// Header carrying an error's JSON details, when any.
pub const HEADER_ERROR_DETAILS: &str = "Aegis-Error-Details";
/// Header naming the instance that handled a request. Error replies carry
/// it, and so do successful replies on a service's shared subject when they
/// come from a leader-only method or the request asked with
/// [`HEADER_WANT_INSTANCE`].
pub const HEADER_INSTANCE: &str = "Aegis-Instance";
/// Request header (any value) asking a load-balanced reply to name the
/// instance that served it in [`HEADER_INSTANCE`]. Replies do not name it
/// unasked: a header on every reply costs the server, NATS and the caller
/// about 8 % of the load-balanced path's throughput (docs/performance.md).
pub const HEADER_WANT_INSTANCE: &str = "Aegis-Want-Instance";
/// Header naming the payload encoding ([`ENCODING_JSON`] or [`ENCODING_MSGPACK`]).
pub const HEADER_ENCODING: &str = "Aegis-Encoding";
/// Header carrying a request id for tracing.
pub const HEADER_REQUEST_ID: &str = "Aegis-Request-Id";
/// Header carrying the fencing epoch of a sticky leader.
pub const HEADER_EPOCH: &str = "Aegis-Epoch";
/// Header carrying a command's id (also its dedup id).
pub const HEADER_COMMAND_ID: &str = "Aegis-Command-Id";
/// Header naming where command progress and results are sent.
pub const HEADER_REPLY_TO: &str = "Aegis-Reply-To";
/// Header marking a command progress message.
pub const HEADER_PROGRESS: &str = "Aegis-Progress";
/// [`HEADER_ENCODING`] value for JSON payloads (the default).
pub const ENCODING_JSON: &str = "json";
/// [`HEADER_ENCODING`] value for MessagePack payloads.
pub const ENCODING_MSGPACK: &str = "msgpack";

/// Longest message [`WireError::header_safe_message`] returns, in bytes.
pub const MAX_HEADER_MESSAGE_BYTES: usize = 1024;

/// The stable code of a [`WireError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No such method, service or resource.
    NotFound,
    /// The request was malformed or failed validation.
    InvalidRequest,
    /// The call did not finish within its deadline.
    Timeout,
    /// No instance could take the call.
    ServiceUnavailable,
    /// A STANDBY instance of a sticky group got a call; re-discover and retry.
    NotActive,
    /// A concurrent change won (stale revision, duplicate).
    Conflict,
    /// Missing or invalid credentials.
    Unauthorized,
    /// Valid credentials without the needed permission.
    Forbidden,
    /// Anything else; details stay on the server.
    Internal,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: [ErrorCode; 9] = [
        Self::NotFound,
        Self::InvalidRequest,
        Self::Timeout,
        Self::ServiceUnavailable,
        Self::NotActive,
        Self::Conflict,
        Self::Unauthorized,
        Self::Forbidden,
        Self::Internal,
    ];

    /// The wire spelling, e.g. `NOT_FOUND`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::NotFound => "NOT_FOUND",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::Timeout => "TIMEOUT",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::NotActive => "NOT_ACTIVE",
            Self::Conflict => "CONFLICT",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::Internal => "INTERNAL",
        }
    }

    /// The HTTP-like status used as the NATS services-protocol
    /// `Nats-Service-Error-Code`.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::InvalidRequest => 400,
            Self::Timeout => 504,
            Self::ServiceUnavailable => 503,
            Self::NotActive | Self::Conflict => 409,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::Internal => 500,
        }
    }

    /// Best-effort inverse of [`status`](Self::status), for replies that
    /// carry only the numeric code: 409 reads as `Conflict` (NOT_ACTIVE is
    /// told apart by the [`HEADER_ERROR_CODE`] header), 408 as `Timeout`,
    /// anything unknown as `Internal`.
    pub fn from_status(status: u16) -> ErrorCode {
        match status {
            400 => Self::InvalidRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            408 | 504 => Self::Timeout,
            409 => Self::Conflict,
            503 => Self::ServiceUnavailable,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not an [`ErrorCode`] spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code {0:?}")]
pub struct ParseErrorCodeError(pub String);

impl FromStr for ErrorCode {
    type Err = ParseErrorCodeError;

    /// Parses the exact wire spelling (e.g. `NOT_ACTIVE`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| ParseErrorCodeError(s.to_owned()))
    }
}

/// The error a handler returns to a caller, as sent over the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct WireError {
    /// The stable code callers branch on.
    pub code: ErrorCode,
    /// A human-readable message; never an internal detail.
    pub message: String,
    /// Optional structured details (e.g. validation field errors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl WireError {
    /// An error with `code` and `message`, without details.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    /// The same error carrying `details`.
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// A [`ErrorCode::NotFound`] error.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// An [`ErrorCode::InvalidRequest`] error.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// An [`ErrorCode::Internal`] error.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    /// An [`ErrorCode::NotActive`] error.
    pub fn not_active(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotActive, message)
    }

    /// An [`ErrorCode::ServiceUnavailable`] error.
    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::ServiceUnavailable, message)
    }

    /// An [`ErrorCode::Timeout`] error.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Timeout, message)
    }

    /// An [`ErrorCode::Conflict`] error.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }

    /// The message made safe for a NATS header value: CR, LF and other
    /// control characters removed, at most [`MAX_HEADER_MESSAGE_BYTES`] bytes
    /// (cut on a character boundary).
    pub fn header_safe_message(&self) -> String {
        let mut out = String::with_capacity(self.message.len().min(MAX_HEADER_MESSAGE_BYTES));
        for ch in self.message.chars().filter(|c| !c.is_control()) {
            if out.len() + ch.len_utf8() > MAX_HEADER_MESSAGE_BYTES {
                break;
            }
            out.push(ch);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn codes_spell_and_parse() {
        let expected = [
            ("NOT_FOUND", 404),
            ("INVALID_REQUEST", 400),
            ("TIMEOUT", 504),
            ("SERVICE_UNAVAILABLE", 503),
            ("NOT_ACTIVE", 409),
            ("CONFLICT", 409),
            ("UNAUTHORIZED", 401),
            ("FORBIDDEN", 403),
            ("INTERNAL", 500),
        ];
        for (code, (s, status)) in ErrorCode::ALL.into_iter().zip(expected) {
            assert_eq!(code.as_str(), s);
            assert_eq!(code.to_string(), s);
            assert_eq!(code.status(), status);
            assert_eq!(s.parse::<ErrorCode>(), Ok(code));
            assert_eq!(serde_json::to_value(code).unwrap(), json!(s));
            assert_eq!(serde_json::from_value::<ErrorCode>(json!(s)).unwrap(), code);
        }
        assert_eq!(
            "not_found".parse::<ErrorCode>(),
            Err(ParseErrorCodeError("not_found".into()))
        );
        assert!("BOGUS".parse::<ErrorCode>().is_err());
        assert!(serde_json::from_value::<ErrorCode>(json!("BOGUS")).is_err());
    }

    #[test]
    fn from_status_is_best_effort() {
        for code in ErrorCode::ALL {
            let back = ErrorCode::from_status(code.status());
            if code == ErrorCode::NotActive {
                assert_eq!(back, ErrorCode::Conflict);
            } else {
                assert_eq!(back, code);
            }
        }
        assert_eq!(ErrorCode::from_status(408), ErrorCode::Timeout);
        assert_eq!(ErrorCode::from_status(418), ErrorCode::Internal);
        assert_eq!(ErrorCode::from_status(0), ErrorCode::Internal);
    }

    #[test]
    fn wire_error_json() {
        let e = WireError::not_found("no such order");
        assert_eq!(e.code, ErrorCode::NotFound);
        assert_eq!(e.to_string(), "NOT_FOUND: no such order");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"code": "NOT_FOUND", "message": "no such order"})
        );
        let d = WireError::invalid_request("bad").with_details(json!([{"field": "qty"}]));
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(v["details"], json!([{"field": "qty"}]));
        assert_eq!(serde_json::from_value::<WireError>(v).unwrap(), d);
        let minimal: WireError =
            serde_json::from_value(json!({"code": "TIMEOUT", "message": "slow"})).unwrap();
        assert_eq!(minimal, WireError::timeout("slow"));
    }

    #[test]
    fn shortcuts() {
        assert_eq!(WireError::internal("x").code, ErrorCode::Internal);
        assert_eq!(WireError::not_active("x").code, ErrorCode::NotActive);
        assert_eq!(
            WireError::service_unavailable("x").code,
            ErrorCode::ServiceUnavailable
        );
        assert_eq!(WireError::conflict("x").code, ErrorCode::Conflict);
        assert_eq!(
            WireError::new(ErrorCode::Forbidden, "x").code,
            ErrorCode::Forbidden
        );
    }

    #[test]
    fn header_safe_message() {
        let e = WireError::internal("line1\r\nline2\tx\u{0}\u{7f}é");
        assert_eq!(e.header_safe_message(), "line1line2xé");
        let long = WireError::internal("a".repeat(2000));
        assert_eq!(long.header_safe_message().len(), MAX_HEADER_MESSAGE_BYTES);
        // 'é' is two bytes; 1023 'a' + 'é' would be 1025, so it is dropped.
        let boundary = WireError::internal(format!("{}é", "a".repeat(1023)));
        let s = boundary.header_safe_message();
        assert_eq!(s.len(), 1023);
        assert!(s.chars().all(|c| c == 'a'));
        assert_eq!(WireError::internal("").header_safe_message(), "");
    }

    #[test]
    fn header_names() {
        assert_eq!(HEADER_ERROR_CODE, "Aegis-Error-Code");
        assert_eq!(HEADER_EPOCH, "Aegis-Epoch");
        assert_eq!((ENCODING_JSON, ENCODING_MSGPACK), ("json", "msgpack"));
    }
}
