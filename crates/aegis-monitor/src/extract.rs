//! Extractors whose rejections use the API's error envelope.
//!
//! [`ApiJson`] replaces `axum::Json` for request bodies: a body that is not
//! `application/json`, not UTF-8 or compressed is 415, one over the limit 413, malformed JSON (or an
//! object giving a key twice) 400 `INVALID_JSON`, and well-formed JSON of
//! the wrong shape (missing, unknown or mistyped fields) 422
//! `VALIDATION_ERROR` naming the field. [`ApiQuery`]
//! does the same for query strings (400 `BAD_REQUEST` naming the parameter),
//! and [`refuse_unknown_params`] refuses a query parameter an `/api` route
//! does not take, whether or not the route takes any.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use aegis_contracts::FieldError;
use axum::{
    extract::{
        FromRequest, FromRequestParts, MatchedPath, Query, Request, rejection::QueryRejection,
    },
    http::{Method, StatusCode, Uri, header, request::Parts},
};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use utoipa::{
    IntoParams,
    openapi::{
        OpenApi,
        path::{Parameter, ParameterIn},
    },
};

use crate::error::{ApiError, Echoed, ErrorCode, QUERY_VALUE_CHARS};

/// Largest accepted request body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A JSON request body, rejected with the API's envelope.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiJson<T>(pub(crate) T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        readable(&req)?;
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    ErrorCode::PayloadTooLarge,
                    "the request body is larger than 64 KiB",
                )
                .with_details(json!({ "limitBytes": MAX_BODY_BYTES }))
            } else {
                ApiError::new(ErrorCode::BadRequest, "could not read the request body")
                    .with_internal(rejection.body_text())
            }
        })?;
        parse_body(&bytes).map(ApiJson)
    }
}

/// Refuses, with 415 saying why, a body this server cannot read as sent:
/// one that is not JSON by its `Content-Type`, one in a charset other than
/// UTF-8 (JSON is UTF-8; read as UTF-8, Latin-1 would be stored as other
/// text than was sent), and a compressed one (no `Content-Encoding` but
/// `identity` is decoded, and a gzip body would read as malformed JSON at
/// line 1, sending the client to look at its JSON).
fn readable(req: &Request) -> Result<(), ApiError> {
    let unsupported =
        |message: String| Err(ApiError::new(ErrorCode::UnsupportedMediaType, message));
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mut parts = content_type.split(';');
    let mime = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if !(mime == "application/json"
        || (mime.starts_with("application/") && mime.ends_with("+json")))
    {
        return unsupported("expected a body with Content-Type: application/json".to_owned());
    }
    for parameter in parts {
        let Some((name, value)) = parameter.split_once('=') else {
            continue;
        };
        let charset = value.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset") && !charset.eq_ignore_ascii_case("utf-8") {
            return unsupported(format!(
                "the body must be UTF-8 JSON; charset {} is not read",
                Echoed::new(charset, HEADER_ECHO_CHARS)
            ));
        }
    }
    for encoding in req.headers().get_all(header::CONTENT_ENCODING) {
        let encoding = encoding.to_str().unwrap_or("").trim();
        if !encoding.is_empty() && !encoding.eq_ignore_ascii_case("identity") {
            return unsupported(format!(
                "Content-Encoding {} is not accepted: send the body uncompressed",
                Echoed::new(encoding, HEADER_ECHO_CHARS)
            ));
        }
    }
    Ok(())
}

/// Longest header value (a charset, an encoding) an error echoes whole.
const HEADER_ECHO_CHARS: usize = 32;

/// Parses a JSON object body into `T`, mapping failures to the envelope.
/// One UTF-8 byte-order mark before the JSON (PowerShell's and Notepad's
/// UTF-8 write one) is skipped: the body is the JSON after it.
///
/// # Errors
/// 400 `INVALID_JSON` for malformed JSON, and for an object that gives a
/// key twice (`details.key`); 422 `VALIDATION_ERROR` naming the field for
/// anything that parses but does not fit `T`.
pub(crate) fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = bytes.strip_prefix(UTF8_BOM).unwrap_or(bytes);
    let Checked {
        mut value,
        repeated,
    } = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(ErrorCode::InvalidJson, format!("malformed JSON: {e}"))
            .with_details(json!({ "line": e.line(), "column": e.column() }))
    })?;
    // The first repeated key is named; the client fixes its body and is
    // told of the next, if any (one name, as for every other error).
    if let Some(key) = repeated.first() {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            format!("the key {key:?} is given more than once"),
        )
        .with_details(json!({ "key": key })));
    }
    if !value.is_object() {
        return Err(ApiError::invalid_field("body", "must be a JSON object"));
    }
    integral_floats_to_integers(&mut value);
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        let field = if path == "." || path.is_empty() {
            field_in_message(&message).unwrap_or_else(|| "body".to_owned())
        } else {
            path
        };
        let errors = aegis_contracts::ValidationErrors(vec![FieldError {
            field,
            message: strip_position(&message),
        }]);
        ApiError::validation(&errors)
    })
}

/// The UTF-8 encoding of U+FEFF, the byte-order mark.
const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// A JSON document as read, and the keys its objects give more than once,
/// by path (`a.b` for `b` inside `a`). serde_json's `Value` keeps the last
/// of a repeated key silently, so a body could mean either value; reading
/// it here, key by key, lets [`parse_body`] refuse it instead.
struct Checked {
    value: Value,
    repeated: Vec<String>,
}

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl CheckedVisitor {
    fn plain(value: impl Into<Value>) -> Checked {
        Checked {
            value: value.into(),
            repeated: Vec::new(),
        }
    }
}

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Checked, E> {
        Ok(Self::plain(v))
    }

    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Self::plain(Value::Null))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        let (mut items, mut repeated) = (Vec::new(), Vec::new());
        while let Some(Checked {
            value,
            repeated: inner,
        }) = seq.next_element()?
        {
            let at = items.len();
            repeated.extend(inner.into_iter().map(|path| format!("{at}.{path}")));
            items.push(value);
        }
        Ok(Checked {
            value: Value::Array(items),
            repeated,
        })
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let (mut object, mut repeated) = (serde_json::Map::new(), Vec::new());
        while let Some(key) = map.next_key::<String>()? {
            let Checked {
                value,
                repeated: inner,
            } = map.next_value()?;
            repeated.extend(inner.into_iter().map(|path| format!("{key}.{path}")));
            if object.contains_key(&key) {
                repeated.push(key.clone());
            }
            object.insert(key, value);
        }
        Ok(Checked {
            value: Value::Object(object),
            repeated,
        })
    }
}

/// JSON has one number type: `3.0` is the integer 3 (JSON Schema agrees),
/// but serde refuses a float for an integer field. Rewrites every float
/// with no fractional part that fits an integer type as that integer.
fn integral_floats_to_integers(value: &mut Value) {
    match value {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64()
                && f.fract() == 0.0
            {
                // Exclusive upper bounds: 2^63 and 2^64 are exact as f64.
                if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                    *value = Value::from(f as u64);
                } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                    *value = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_integers),
        _ => {}
    }
}

/// serde names missing and unknown fields in backticks: "missing field `owner`".
fn field_in_message(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("missing field `")
        .or_else(|| message.strip_prefix("unknown field `"))?;
    rest.split('`').next().map(str::to_owned)
}

/// Drops serde_json's " at line 1 column 5" (meaningless for a `Value`).
fn strip_position(message: &str) -> String {
    match message.find(" at line ") {
        Some(i) => message[..i].to_owned(),
        None => message.to_owned(),
    }
}

/// A query string, read into `T` with the API's envelope: a parameter
/// given twice, or a value its parameter does not take, is 400
/// `BAD_REQUEST` naming it (`details.param`, `details.value`,
/// `details.reason`), in words taken from the parameter's documented
/// schema (`T`'s [`IntoParams`]), never serde's. Parameters a route does
/// not take are refused before the handler, by [`refuse_unknown_params`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ApiQuery<T>(pub(crate) T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + IntoParams,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        read_query(&parts.uri).map(ApiQuery)
    }
}

/// The `(name, value)` pairs of `uri`'s query, percent-decoded, in order.
fn query_pairs(uri: &Uri) -> Vec<(String, String)> {
    // Reading pairs cannot fail: form decoding is lossy, never strict.
    Query::<Vec<(String, String)>>::try_from_uri(uri)
        .map(|q| q.0)
        .unwrap_or_default()
}

fn read_query<T: DeserializeOwned + IntoParams>(uri: &Uri) -> Result<T, ApiError> {
    let pairs = query_pairs(uri);
    let params = T::into_params(|| Some(ParameterIn::Query));
    let mut seen = HashSet::new();
    for (name, value) in &pairs {
        if !seen.insert(name.as_str()) {
            return Err(bad_value(name, value, "given more than once"));
        }
    }
    // A whole-number parameter is held to its documented range here, so
    // every route says `limit=0`, `limit=-1` and `limit=ten` the one way
    // (the handlers only pick the default).
    for (name, value) in &pairs {
        if let Some(documented) = params.iter().find(|p| p.name == *name)
            && let Some(range) = WholeNumber::of(documented)
            && !range.takes(value)
        {
            return Err(bad_value(name, value, &range.to_string()));
        }
    }
    Query::<T>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|rejection| {
            let Some((param, serde_says)) = failed_param(&rejection) else {
                return ApiError::new(ErrorCode::BadRequest, "the query string cannot be read")
                    .with_internal(rejection.body_text());
            };
            let value = pairs
                .iter()
                .find(|(name, _)| *name == param)
                .map(|(_, value)| value.as_str());
            match (params.iter().find(|p| p.name == param), value) {
                (Some(documented), Some(value)) => {
                    let reason = WholeNumber::of(documented)
                        .map_or_else(|| strip_position(&serde_says), |r| r.to_string());
                    bad_value(&param, value, &reason)
                }
                // Not a parameter of `T`: only reached where no
                // `refuse_unknown_params` ran first.
                _ => unknown_param(&param, value, &names(&params)),
            }
        })
}

/// The parameter a query string failed on, and serde's reason: the path
/// of a value that did not fit, or the name serde gives a parameter it
/// does not know.
fn failed_param(rejection: &QueryRejection) -> Option<(String, String)> {
    // axum keeps serde_path_to_error's error as the rejection's cause.
    type PathError = serde_path_to_error::Error<serde::de::value::Error>;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(rejection);
    while let Some(error) = cause {
        if let Some(failed) = error.downcast_ref::<PathError>() {
            let message = failed.inner().to_string();
            let path = failed.path().to_string();
            let param = if path == "." || path.is_empty() {
                field_in_message(&message)?
            } else {
                path
            };
            return Some((param, message));
        }
        cause = error.source();
    }
    None
}

/// A `window` query parameter (`90s`, `15m`, `1h`): `default` when absent
/// or empty, else clamped to 1 s..`longest` (what its stream keeps); the
/// answer's `windowSecs` says the window covered.
///
/// # Errors
/// 400 `BAD_REQUEST` for a value that is not a duration.
pub(crate) fn window(
    value: Option<&str>,
    default: std::time::Duration,
    longest: std::time::Duration,
) -> Result<std::time::Duration, ApiError> {
    match value.map(str::trim) {
        None | Some("") => Ok(default),
        Some(w) => humantime::parse_duration(w)
            .map(|d| d.clamp(std::time::Duration::from_secs(1), longest))
            .map_err(|_| bad_value("window", w, "expected a duration such as 90s, 15m or 1h")),
    }
}

/// 400 `BAD_REQUEST` for a value `param` does not take: the one shape of
/// every such answer (`details.param`, `details.value`, `details.reason`).
/// A value longer than any a parameter takes is echoed cut ([`Echoed`]),
/// with `details.length`.
pub(crate) fn bad_value(param: &str, value: &str, reason: &str) -> ApiError {
    ApiError::bad_param(param, reason)
        .with_details(json!({ "param": param, "reason": reason }))
        .with_echoed("value", "length", &Echoed::new(value, QUERY_VALUE_CHARS))
}

/// What a documented whole-number parameter takes: its schema's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WholeNumber {
    min: Option<i64>,
    max: Option<i64>,
}

impl WholeNumber {
    /// The range of `param`, when its schema says it is an integer.
    fn of(param: &Parameter) -> Option<Self> {
        let schema = serde_json::to_value(param.schema.as_ref()?).ok()?;
        (schema["type"] == "integer").then(|| Self {
            min: schema["minimum"].as_i64(),
            max: schema["maximum"].as_i64(),
        })
    }

    /// Whether `value` is a whole number in range.
    fn takes(self, value: &str) -> bool {
        value.parse::<i64>().is_ok_and(|n| {
            self.min.is_none_or(|min| n >= min) && self.max.is_none_or(|max| n <= max)
        })
    }
}

impl std::fmt::Display for WholeNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.min, self.max) {
            (Some(min), Some(max)) => write!(f, "must be a whole number from {min} to {max}"),
            (Some(min), None) => write!(f, "must be a whole number of at least {min}"),
            (None, Some(max)) => write!(f, "must be a whole number of at most {max}"),
            (None, None) => f.write_str("must be a whole number"),
        }
    }
}

fn names(params: &[Parameter]) -> Vec<String> {
    params.iter().map(|p| p.name.clone()).collect()
}

/// 400 for a query parameter the route does not take. Its name and value
/// are echoed cut when longer than any a parameter has ([`Echoed`]), with
/// `details.paramLength` and `details.length`.
fn unknown_param(param: &str, value: Option<&str>, allowed: &[String]) -> ApiError {
    let takes = if allowed.is_empty() {
        "this route takes none".to_owned()
    } else {
        format!("this route takes {}", allowed.join(", "))
    };
    let name = Echoed::new(param, QUERY_VALUE_CHARS);
    let error = ApiError::new(
        ErrorCode::BadRequest,
        format!("unknown query parameter {name}; {takes}"),
    )
    .with_details(json!({ "reason": "unknown parameter", "allowed": allowed }))
    .with_echoed("param", "paramLength", &name);
    match value {
        Some(value) => error.with_echoed("value", "length", &Echoed::new(value, QUERY_VALUE_CHARS)),
        None => error.with_detail("value", Value::Null),
    }
}

/// The query parameters each `/api` route takes, as the OpenAPI document
/// lists them, by method and route template.
#[derive(Debug, Clone, Default)]
pub(crate) struct QueryParams(Arc<HashMap<(Method, String), Vec<String>>>);

impl QueryParams {
    /// What `spec` says each of its `/api` operations takes.
    pub(crate) fn of(spec: &OpenApi) -> Self {
        let mut routes = HashMap::new();
        for (path, item) in spec.paths.paths.iter() {
            if !path.starts_with("/api/") {
                continue;
            }
            let operations = [
                (Method::GET, &item.get),
                (Method::POST, &item.post),
                (Method::PUT, &item.put),
                (Method::PATCH, &item.patch),
                (Method::DELETE, &item.delete),
            ];
            for (method, operation) in operations {
                let Some(operation) = operation else {
                    continue;
                };
                let taken = item
                    .parameters
                    .iter()
                    .chain(operation.parameters.iter())
                    .flatten()
                    .filter(|p| p.parameter_in == ParameterIn::Query)
                    .map(|p| p.name.clone())
                    .collect();
                routes.insert((method, path.clone()), taken);
            }
        }
        Self(Arc::new(routes))
    }

    fn taken(&self, method: &Method, route: &str) -> Option<&Vec<String>> {
        let method = if method == Method::HEAD {
            Method::GET
        } else {
            method.clone()
        };
        self.0.get(&(method, route.to_owned()))
    }
}

/// Middleware: a request to an `/api` route with a query parameter the
/// route does not take (per the OpenAPI document) is answered 400
/// `BAD_REQUEST` naming it, so a misspelt filter never passes for no
/// filter. `/health`, `/ready`, `/status` and `/metrics` are left alone:
/// probes and scrapers may add parameters of their own.
pub(crate) async fn refuse_unknown_params(
    axum::extract::State(params): axum::extract::State<QueryParams>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;

    let taken = request
        .extensions()
        .get::<MatchedPath>()
        .and_then(|route| params.taken(request.method(), route.as_str()));
    if let Some(taken) = taken
        && request.uri().query().is_some()
        && let Some((param, value)) = query_pairs(request.uri())
            .into_iter()
            .find(|(name, _)| !taken.contains(name))
    {
        return unknown_param(&param, Some(&value), taken).into_response();
    }
    next.run(request).await
}

/// How much of an oversized body is read and thrown away before the 413 is
/// sent. Reading it lets an ordinary client, which writes the whole body
/// before it reads the answer, see the 413 instead of a broken pipe; past
/// this bound (or [`DRAIN_TIMEOUT`]) the connection is closed instead.
const DRAIN_LIMIT_BYTES: usize = 1024 * 1024;
/// How long an oversized body is drained at most.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Middleware: a request whose `Content-Length` is over [`MAX_BODY_BYTES`]
/// is answered 413 `PAYLOAD_TOO_LARGE` without reaching a handler; its body
/// is read (up to [`DRAIN_LIMIT_BYTES`]) and dropped first, so the client
/// sees the answer. Bodies without a length are cut at the limit by the
/// extractors.
pub(crate) async fn refuse_oversized(
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use futures::StreamExt;

    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let Some(declared) = declared.filter(|&n| n > MAX_BODY_BYTES as u64) else {
        return next.run(req).await;
    };
    if declared <= DRAIN_LIMIT_BYTES as u64 {
        let mut body = req.into_body().into_data_stream();
        let drain = async {
            let mut read = 0usize;
            while let Some(Ok(chunk)) = body.next().await {
                read += chunk.len();
                if read > DRAIN_LIMIT_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        "the request body is larger than 64 KiB",
    )
    .with_details(json!({ "limitBytes": MAX_BODY_BYTES }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_contracts::NewServiceDefinition;

    fn err(body: &str) -> ApiError {
        parse_body::<NewServiceDefinition>(body.as_bytes()).unwrap_err()
    }

    #[test]
    fn malformed_json_is_400() {
        assert_eq!(err("{").code(), ErrorCode::InvalidJson);
        assert_eq!(err("not json").code(), ErrorCode::InvalidJson);
        assert_eq!(err("").code(), ErrorCode::InvalidJson);
    }

    #[test]
    fn one_leading_byte_order_mark_is_skipped() {
        let v: Value = parse_body(b"\xEF\xBB\xBF{\"a\": 1}").unwrap();
        assert_eq!(v, json!({ "a": 1 }));
        for bad in [
            &b"\xEF\xBB\xBF"[..],
            b"\xEF\xBB\xBF\xEF\xBB\xBF{}",
            b" \xEF\xBB\xBF{}",
        ] {
            assert_eq!(
                parse_body::<Value>(bad).unwrap_err().code(),
                ErrorCode::InvalidJson
            );
        }
    }

    #[test]
    fn a_key_given_twice_is_refused_naming_it() {
        let e = err(r#"{"owner": "a", "owner": "b"}"#);
        assert_eq!(e.code(), ErrorCode::InvalidJson);
        assert_eq!(e.details()["key"], "owner");
        let e = parse_body::<Value>(br#"{"a": {"b": 1, "b": 2}, "c": [{"d": 1, "d": 1}]}"#)
            .unwrap_err();
        assert_eq!(e.details(), &json!({ "key": "a.b" }));
        // Everything else reads as serde_json reads it.
        let body = r#"{"s": "x\u00e9", "n": [1, -2, 2.5, 18446744073709551615], "t": true, "z": null, "o": {}}"#;
        let expected: Value = serde_json::from_str(body).unwrap();
        assert_eq!(parse_body::<Value>(body.as_bytes()).unwrap(), expected);
    }

    #[test]
    fn wrong_shapes_are_422_naming_the_field() {
        let e = err(r#"{"service_name":"abc","owner":"o","description":"d"}"#);
        assert_eq!(e.code(), ErrorCode::ValidationError);
        assert_eq!(e.failing_fields(), ["version"]);
        let e =
            err(r#"{"service_name":"abc","owner":"o","description":"d","version":"1.0.0","x":1}"#);
        assert_eq!(e.failing_fields(), ["x"]);
        let e = err(r#"{"service_name":"abc","owner":5,"description":"d","version":"1.0.0"}"#);
        assert_eq!(e.failing_fields(), ["owner"]);
        assert!(!e.message().contains("line"));
        assert_eq!(err("[]").failing_fields(), ["body"]);
        // 3.0 is the integer 3; 3.5 is not.
        let p: aegis_contracts::ServiceDefinitionPatch =
            parse_body(br#"{"owner": "x", "revision": 3.0}"#).unwrap();
        assert_eq!(p.revision, Some(3));
        let e = parse_body::<aegis_contracts::ServiceDefinitionPatch>(
            br#"{"owner": "x", "revision": 3.5}"#,
        )
        .unwrap_err();
        assert_eq!(e.failing_fields(), ["revision"]);
        assert_eq!(err("3").failing_fields(), ["body"]);
    }

    #[derive(Debug, serde::Deserialize, IntoParams)]
    #[serde(deny_unknown_fields)]
    #[into_params(parameter_in = Query)]
    #[allow(dead_code)]
    struct Paging {
        #[param(minimum = 1, maximum = 1000)]
        limit: Option<usize>,
        after: Option<String>,
    }

    fn query(q: &str) -> Result<Paging, ApiError> {
        read_query::<Paging>(&format!("/x?{q}").parse().unwrap())
    }

    #[test]
    fn query_errors_name_the_parameter_in_our_words() {
        let p = query("limit=5&after=a%2Fb").unwrap();
        assert_eq!((p.limit, p.after.as_deref()), (Some(5), Some("a/b")));
        assert!(query("").is_ok());

        let e = query("limit=-1").unwrap_err();
        assert_eq!(e.code(), ErrorCode::BadRequest);
        assert_eq!(
            e.details(),
            &json!({ "param": "limit", "value": "-1", "reason": "must be a whole number from 1 to 1000" })
        );
        assert_eq!(
            e.message(),
            "invalid limit: must be a whole number from 1 to 1000"
        );
        assert_eq!(query("limit=").unwrap_err().details()["value"], "");

        // In range or not, whole or not: one message, with the value.
        for value in ["0", "1001", "ten", "1.5", "99999999999999999999"] {
            let e = query(&format!("limit={value}")).unwrap_err();
            assert_eq!(
                e.details(),
                &json!({ "param": "limit", "value": value, "reason": "must be a whole number from 1 to 1000" }),
                "{value}"
            );
        }
        assert_eq!(query("limit=1000").unwrap().limit, Some(1000));

        let e = query("limit=1&limit=2").unwrap_err();
        assert_eq!(
            e.details(),
            &json!({ "param": "limit", "value": "2", "reason": "given more than once" })
        );
        assert_eq!(e.message(), "invalid limit: given more than once");

        // Where no middleware refused it first.
        let e = query("foo=1").unwrap_err();
        assert_eq!(e.details()["param"], "foo");
        assert_eq!(e.details()["allowed"], json!(["limit", "after"]));
        assert_eq!(
            e.message(),
            "unknown query parameter \"foo\"; this route takes limit, after"
        );
    }
}
