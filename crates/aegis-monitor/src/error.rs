//! The API's one error type, [`ApiError`], and its stable JSON envelope
//! `{"error": {"code", "message", "details"}}`.
//!
//! Handlers and extractors return `ApiError`; its [`IntoResponse`] writes the
//! envelope and leaves an `ErrorReport` in the response extensions. The
//! `envelope_errors` middleware is the one place that logs errors (with the
//! internal cause, which never reaches the client) and that wraps error
//! responses made by the framework itself (405, 413 from the body limit, the
//! request timeout) in the same envelope, so every error a client sees has
//! one shape and a stable [`ErrorCode`].

use std::{borrow::Cow, fmt};

use aegis_contracts::ValidationErrors;
use axum::{
    Json,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

/// Every error code the API sends. The spelling (`as_str`) is the contract;
/// clients branch on it, never on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400: a parameter or the request is wrong.
    BadRequest,
    /// 400: the body is not well-formed JSON.
    InvalidJson,
    /// 400: an update that changes nothing (`{}`).
    EmptyUpdate,
    /// 401: no credentials, or credentials that are not valid.
    Unauthorized,
    /// 403: valid credentials whose role may not do this (a viewer writing).
    Forbidden,
    /// 404: no such route.
    NotFound,
    /// 404: no such service definition.
    ServiceNotFound,
    /// 404: no such instance.
    InstanceNotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 409: a definition with this name already exists.
    ServiceAlreadyExists,
    /// 409: the definition changed since the revision the client read.
    ConcurrentUpdate,
    /// 413: the body is larger than the limit (64 KiB).
    PayloadTooLarge,
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the body is well-formed but a field is invalid, missing or unknown.
    ValidationError,
    /// 429: too many attempts from this client (sign-in); the
    /// `Retry-After` header says when to try again.
    TooManyRequests,
    /// 500: a fault on our side; details are in the server log only.
    InternalError,
    /// 502: an instance answered, but with an error or an unreadable reply.
    BadGateway,
    /// 503: NATS is unreachable or a needed resource is not available.
    ServiceUnavailable,
    /// 503 (from `/ready`): not ready to serve.
    NotReady,
    /// 504: an instance or NATS did not answer in time, or the request took
    /// longer than the server's limit.
    GatewayTimeout,
}

impl ErrorCode {
    /// Every code, for documentation and tests.
    pub const ALL: [ErrorCode; 20] = [
        Self::BadRequest,
        Self::InvalidJson,
        Self::EmptyUpdate,
        Self::Unauthorized,
        Self::Forbidden,
        Self::NotFound,
        Self::ServiceNotFound,
        Self::InstanceNotFound,
        Self::MethodNotAllowed,
        Self::ServiceAlreadyExists,
        Self::ConcurrentUpdate,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::ValidationError,
        Self::TooManyRequests,
        Self::InternalError,
        Self::BadGateway,
        Self::ServiceUnavailable,
        Self::NotReady,
        Self::GatewayTimeout,
    ];

    /// The wire spelling, e.g. `SERVICE_NOT_FOUND`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "BAD_REQUEST",
            Self::InvalidJson => "INVALID_JSON",
            Self::EmptyUpdate => "EMPTY_UPDATE",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::ServiceNotFound => "SERVICE_NOT_FOUND",
            Self::InstanceNotFound => "INSTANCE_NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::ServiceAlreadyExists => "SERVICE_ALREADY_EXISTS",
            Self::ConcurrentUpdate => "CONCURRENT_UPDATE",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::UnsupportedMediaType => "UNSUPPORTED_MEDIA_TYPE",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::TooManyRequests => "TOO_MANY_REQUESTS",
            Self::InternalError => "INTERNAL_ERROR",
            Self::BadGateway => "BAD_GATEWAY",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::NotReady => "NOT_READY",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadRequest | Self::InvalidJson | Self::EmptyUpdate => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::NotFound | Self::ServiceNotFound | Self::InstanceNotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::ServiceAlreadyExists | Self::ConcurrentUpdate => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::ValidationError => StatusCode::UNPROCESSABLE_ENTITY,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::ServiceUnavailable | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The code for an error response the framework made without an
    /// [`ApiError`] (method not allowed, body limit, timeout, ...).
    fn for_status(status: StatusCode) -> Self {
        match status {
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::UnsupportedMediaType,
            StatusCode::UNPROCESSABLE_ENTITY => Self::ValidationError,
            StatusCode::TOO_MANY_REQUESTS => Self::TooManyRequests,
            StatusCode::BAD_GATEWAY => Self::BadGateway,
            StatusCode::SERVICE_UNAVAILABLE => Self::ServiceUnavailable,
            StatusCode::GATEWAY_TIMEOUT | StatusCode::REQUEST_TIMEOUT => Self::GatewayTimeout,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::InternalError,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long a client is told to wait (`Retry-After`) before asking again
/// when a stream did not answer: about what is left of a stream's leader
/// election (4-9 s after a node's death) once a request has tried for its
/// couple of seconds.
pub(crate) const LEADERLESS_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(5);

/// The longest service name (`validate_service_name`).
pub(crate) const SERVICE_NAME_CHARS: usize = 64;
/// The longest instance id (`validate_instance_id`).
pub(crate) const INSTANCE_ID_CHARS: usize = 128;
/// The longest query parameter value echoed whole: longer than any value
/// a parameter takes (a number, a duration, a status, a topic; a list of
/// services and the `after` cursor are echoed by their own kinds).
pub(crate) const QUERY_VALUE_CHARS: usize = 64;
/// How much of a value longer than any of its kind an answer echoes.
const ECHOED_PREFIX_CHARS: usize = 32;

/// A value from a request as an answer echoes it: whole when it is no
/// longer than a value of its kind can be, otherwise its first 32
/// characters and "…", with its length (in characters). A token pasted
/// where a name goes is then neither sent back nor logged (the message is)
/// whole, and a 5,000-character name does not make a 10 KB answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Echoed {
    /// What the answer shows.
    pub(crate) shown: String,
    /// The value's length when `shown` is cut.
    pub(crate) length: Option<usize>,
}

impl Echoed {
    pub(crate) fn new(value: &str, longest: usize) -> Self {
        let length = value.chars().count();
        if length <= longest {
            return Self {
                shown: value.to_owned(),
                length: None,
            };
        }
        let mut shown: String = value.chars().take(ECHOED_PREFIX_CHARS).collect();
        shown.push('…');
        Self {
            shown,
            length: Some(length),
        }
    }
}

impl fmt::Display for Echoed {
    /// Quoted, with the length when cut: `"abc…" (5000 characters)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown)?;
        if let Some(length) = self.length {
            write!(f, " ({length} characters)")?;
        }
        Ok(())
    }
}

/// An API error: a code, a message fit for the client, optional structured
/// details, and an internal cause that is logged but never sent.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    message: Cow<'static, str>,
    details: Value,
    internal: Option<String>,
    www_authenticate: bool,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `code` and a client-facing `message`.
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Value::Object(Default::default()),
            internal: None,
            www_authenticate: code == ErrorCode::Unauthorized,
            retry_after: None,
        }
    }

    /// Adds structured details (an object) for the client.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Sends `Retry-After` (whole seconds, rounded up, at least 1) with the
    /// error.
    pub fn with_retry_after(mut self, wait: std::time::Duration) -> Self {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.retry_after = Some(secs.max(1));
        self
    }

    /// Records an internal cause for the log; the client never sees it.
    pub fn with_internal(mut self, cause: impl fmt::Display) -> Self {
        self.internal = Some(format!("{cause:#}"));
        self
    }

    /// A 500 whose cause is logged as `context: cause`.
    pub fn internal(context: &str, cause: impl fmt::Display) -> Self {
        Self::new(ErrorCode::InternalError, "internal error")
            .with_internal(format!("{context}: {cause}"))
    }

    /// A 503 for a NATS request that failed (not a stream read: see
    /// [`ApiError::stream_unavailable`]); the cause is logged.
    pub fn unavailable(context: &str, cause: impl fmt::Display) -> Self {
        Self::new(
            ErrorCode::ServiceUnavailable,
            "NATS does not answer the monitor right now (see /ready for its connection); \
             try again shortly",
        )
        .with_internal(format!("{context}: {cause}"))
    }

    /// A 503 for a read of the JetStream stream `stream` that failed: what
    /// could not be read (`what`, e.g. "the instance's events"), the two
    /// likely reasons, and when to try again (`Retry-After`), with
    /// `details.stream` naming the stream. Reads change nothing, so unlike
    /// a write's 503 there is nothing to say about what was stored. The
    /// log gets `cause` with every error it wraps ([`Causes`]): the
    /// monitor's stream errors say only their own step ("reading a
    /// message") and keep what NATS answered as their source.
    ///
    /// [`Causes`]: aegis_sdk::startup::Causes
    pub fn stream_unavailable(
        what: &str,
        stream: &str,
        cause: &(dyn std::error::Error + 'static),
    ) -> Self {
        Self::new(
            ErrorCode::ServiceUnavailable,
            format!(
                "{what} cannot be read right now (NATS is unreachable, or the {stream} \
                 stream has no leader, as while JetStream elects one after a NATS node \
                 was lost, which usually takes seconds); try again shortly"
            ),
        )
        .with_details(json!({ "stream": stream }))
        .with_retry_after(LEADERLESS_RETRY_AFTER)
        .with_internal(format!(
            "reading {stream}: {}",
            aegis_sdk::startup::Causes(cause)
        ))
    }

    /// 400 BAD_REQUEST naming a parameter.
    pub fn bad_param(param: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(ErrorCode::BadRequest, format!("invalid {param}: {message}"))
            .with_details(json!({ "param": param, "reason": message }))
    }

    /// 422 VALIDATION_ERROR listing every failing field.
    pub fn validation(errors: &ValidationErrors) -> Self {
        Self::new(ErrorCode::ValidationError, errors.to_string())
            .with_details(json!({ "fields": errors.0 }))
    }

    /// 422 VALIDATION_ERROR for one field.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        let message = message.into();
        Self::new(
            ErrorCode::ValidationError,
            format!("validation failed: {field}: {message}"),
        )
        .with_details(json!({ "fields": [{ "field": field, "message": message }] }))
    }

    /// 404 SERVICE_NOT_FOUND for a definition: `details.service` is the
    /// name as given, or, when longer than any service name, cut
    /// (see `Echoed`) with `details.length`.
    pub fn service_not_found(name: &str) -> Self {
        Self::no_service("no service definition named", name)
    }

    /// 404 SERVICE_NOT_FOUND saying `what` of `name` (e.g. "no service"),
    /// the name echoed as [`ApiError::service_not_found`] does.
    pub(crate) fn no_service(what: &str, name: &str) -> Self {
        let name = Echoed::new(name, SERVICE_NAME_CHARS);
        let mut details = json!({ "service": name.shown });
        if let Some(length) = name.length {
            details["length"] = length.into();
        }
        Self::new(ErrorCode::ServiceNotFound, format!("{what} {name}")).with_details(details)
    }

    /// 404 INSTANCE_NOT_FOUND: `details.service` and `details.instanceId`
    /// as given, or, each when longer than any value of its kind, cut
    /// (see `Echoed`) with `details.serviceLength` / `instanceIdLength`.
    pub fn instance_not_found(service: &str, instance: &str) -> Self {
        let service = Echoed::new(service, SERVICE_NAME_CHARS);
        let instance = Echoed::new(instance, INSTANCE_ID_CHARS);
        let mut details = json!({ "service": service.shown, "instanceId": instance.shown });
        if let Some(length) = service.length {
            details["serviceLength"] = length.into();
        }
        if let Some(length) = instance.length {
            details["instanceIdLength"] = length.into();
        }
        Self::new(
            ErrorCode::InstanceNotFound,
            format!("no instance {instance} of service {service}"),
        )
        .with_details(details)
    }

    /// Adds `key` to the details with what `echoed` shows, and `length_key`
    /// with its length when it is cut.
    pub(crate) fn with_echoed(self, key: &str, length_key: &str, echoed: &Echoed) -> Self {
        let error = self.with_detail(key, echoed.shown.clone());
        match echoed.length {
            Some(length) => error.with_detail(length_key, length),
            None => error,
        }
    }

    /// Adds `key: value` to the details (an object).
    pub(crate) fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        if let Value::Object(details) = &mut self.details {
            details.insert(key.to_owned(), value.into());
        }
        self
    }

    /// The error's code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The client-facing message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The structured details sent to the client (an object).
    pub fn details(&self) -> &Value {
        &self.details
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// The JSON body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorEnvelope {
    /// The error.
    pub error: ErrorBody,
}

/// The inside of [`ErrorEnvelope`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable code, e.g. `SERVICE_NOT_FOUND`; clients branch on it.
    #[schema(example = "SERVICE_NOT_FOUND")]
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Structured context, e.g. `{"fields": [{"field", "message"}]}` for
    /// VALIDATION_ERROR; an empty object when there is none.
    #[schema(value_type = Object)]
    pub details: Value,
}

/// Left in a response's extensions by [`ApiError::into_response`] so the
/// middleware can log the error once, with its internal cause.
#[derive(Debug, Clone)]
pub(crate) struct ErrorReport {
    code: ErrorCode,
    message: String,
    internal: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.code.as_str().to_owned(),
                message: self.message.to_string(),
                details: self.details,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"aegis\""),
            );
        }
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response.extensions_mut().insert(ErrorReport {
            code: self.code,
            message: self.message.into_owned(),
            internal: self.internal,
        });
        response
    }
}

/// Middleware: logs every error response once and gives framework-made error
/// responses (no [`ErrorReport`]) the standard envelope.
pub(crate) async fn envelope_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    match parts.extensions.remove::<ErrorReport>() {
        Some(report) => {
            log_error(status, &report);
            Response::from_parts(parts, body)
        }
        // A page of the UI (e.g. its 404.html) stays a page.
        None if is_html(&parts.headers) => Response::from_parts(parts, body),
        None => {
            let code = ErrorCode::for_status(status);
            let message = match code {
                ErrorCode::PayloadTooLarge => "the request body is larger than 64 KiB".to_owned(),
                ErrorCode::MethodNotAllowed => "method not allowed on this route".to_owned(),
                ErrorCode::GatewayTimeout => "the request took too long".to_owned(),
                ErrorCode::NotFound => "no such route".to_owned(),
                _ => status
                    .canonical_reason()
                    .unwrap_or("request failed")
                    .to_owned(),
            };
            let mut rebuilt = ApiError::new(code, message).into_response();
            *rebuilt.status_mut() = status;
            // Keep headers the framework set (e.g. `Allow` on a 405).
            for (name, value) in parts.headers.iter() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    rebuilt.headers_mut().insert(name.clone(), value.clone());
                }
            }
            if let Some(report) = rebuilt.extensions_mut().remove::<ErrorReport>() {
                log_error(status, &report);
            }
            rebuilt
        }
    }
}

fn is_html(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"))
}

/// The one line a failed request gets: a client's mistake at info, a
/// monitor not ready (starting, NATS gone: a state the probes report, not
/// a fault of this request) at warn, any other server error at error with
/// its internal cause. (The trace layer's own failure line is turned down
/// to debug in `routes/mod.rs`, so this stays the only one.)
fn log_error(status: StatusCode, report: &ErrorReport) {
    let code = report.code.as_str();
    let status_code = status.as_u16();
    if report.code == ErrorCode::NotReady {
        tracing::warn!(
            status = status_code,
            code,
            error = %report.message,
            "request answered: not ready"
        );
    } else if status.is_server_error() {
        tracing::error!(
            status = status_code,
            code,
            error = %report.message,
            cause = report.internal.as_deref().unwrap_or(""),
            "request failed"
        );
    } else {
        tracing::info!(
            status = status_code,
            code,
            error = %report.message,
            "request rejected"
        );
    }
}

/// The answer to a request whose handler panicked (installed with
/// `CatchPanicLayer`): a 500 in the envelope, like any other fault on our
/// side; what the panic said goes to the log only.
pub(crate) fn panicked(panic: Box<dyn std::any::Any + Send>) -> Response {
    let said = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    ApiError::internal("the request's handler panicked", said).into_response()
}

#[cfg(test)]
impl ApiError {
    /// The fields a validation error names, in order (for tests).
    pub(crate) fn failing_fields(&self) -> Vec<String> {
        self.details()["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| f["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value as long as its kind allows is echoed whole; one character
    /// more, cut to 32 characters (not bytes) and "…", with its length.
    #[test]
    fn a_value_longer_than_its_kind_is_echoed_cut() {
        let whole = Echoed::new(&"a".repeat(64), SERVICE_NAME_CHARS);
        assert_eq!(whole.shown.len(), 64);
        assert_eq!(whole.length, None);
        assert_eq!(whole.to_string(), format!("{:?}", "a".repeat(64)));
        let cut = Echoed::new(&"é".repeat(65), SERVICE_NAME_CHARS);
        assert_eq!(cut.shown, format!("{}…", "é".repeat(32)));
        assert_eq!(cut.length, Some(65));
        assert!(cut.to_string().ends_with("(65 characters)"), "{cut}");
        let instance = ApiError::instance_not_found("svc", &"i".repeat(129));
        assert_eq!(instance.details()["instanceIdLength"], 129);
        assert_eq!(instance.details()["service"], "svc");
        assert!(instance.details().get("serviceLength").is_none());
    }

    /// A handler's panic is answered as INTERNAL_ERROR in the envelope,
    /// its text kept for the log and out of the answer.
    #[tokio::test]
    async fn a_panic_is_an_internal_error_whose_text_stays_in_the_log() {
        for panic in [
            Box::new("index out of bounds") as Box<dyn std::any::Any + Send>,
            Box::new(String::from("index out of bounds")),
        ] {
            let response = panicked(panic);
            assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            let report = response
                .extensions()
                .get::<ErrorReport>()
                .expect("logged by the error middleware");
            assert!(
                report
                    .internal
                    .as_deref()
                    .is_some_and(|i| i.contains("index out of bounds")),
                "{:?}",
                report.internal
            );
            let body = axum::body::to_bytes(response.into_body(), 4096)
                .await
                .unwrap();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
            assert!(!body.to_string().contains("out of bounds"), "{body}");
        }
    }

    #[test]
    fn codes_are_unique_and_map_to_their_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!(code.status().is_client_error() || code.status().is_server_error());
            assert_eq!(code.as_str(), code.as_str().to_ascii_uppercase());
        }
    }

    #[test]
    fn internal_cause_stays_out_of_the_body() {
        let response = ApiError::internal("reading kv", "secret detail").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let report = response.extensions().get::<ErrorReport>().unwrap();
        assert_eq!(
            report.internal.as_deref(),
            Some("reading kv: secret detail")
        );
        assert_eq!(report.message, "internal error");
    }

    /// A failed stream read says what it could not read, which stream,
    /// why that happens and when to try again; never "the bus". The log
    /// gets the whole chain of causes: before, the routes formatted the
    /// monitor's `BusError` with `{:#}`, which (a thiserror type, not
    /// anyhow) said only its own step, "reading a message", and left out
    /// what NATS answered.
    #[test]
    fn a_failed_stream_read_says_what_and_when_to_try_again() {
        let nats = std::io::Error::other(
            "error while processing messages from the stream: 409, Some(\"Leadership Change\")",
        );
        let read = crate::bus::BusError::new("reading a message", nats);
        let response = ApiError::stream_unavailable("the instance's events", "AEGIS_LOG", &read)
            .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        let report = response.extensions().get::<ErrorReport>().unwrap();
        assert_eq!(report.code, ErrorCode::ServiceUnavailable);
        assert!(
            report
                .message
                .starts_with("the instance's events cannot be read")
                && report.message.contains("AEGIS_LOG")
                && report.message.ends_with("try again shortly"),
            "{}",
            report.message
        );
        assert_eq!(
            report.internal.as_deref(),
            Some(
                "reading AEGIS_LOG: reading a message: error while processing messages \
                 from the stream: 409, Some(\"Leadership Change\")"
            )
        );
    }
}
