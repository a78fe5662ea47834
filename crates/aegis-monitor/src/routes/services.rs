//! `/api/services`: CRUD on service definitions, their revision (the ETag)
//! and their audit trail.
//!
//! Writes need the admin role (checked by the auth middleware). Updates and
//! deletes are optimistic: a `revision` in the body or an `If-Match` header
//! that is not the stored revision is 409 `CONCURRENT_UPDATE`.

use aegis_contracts::{ServiceDefinition, names::validate_service_name};
use aegis_sdk::startup::Causes;
use axum::{
    Extension, Json,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Principal,
    definitions::{HistoryEntry, StoreError, answer_by},
    error::{ApiError, ErrorCode, ErrorEnvelope},
    extract::ApiJson,
    openapi::{NewServiceDefinitionDoc, ServiceDefinitionDoc, ServiceDefinitionPatchDoc},
    state::AppState,
};

mod body;

use self::body::{CreateBody, UpdateBody};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_services, create_service))
        .routes(routes!(
            get_service,
            update_service,
            patch_service,
            delete_service
        ))
        .routes(routes!(get_revision))
        .routes(routes!(get_history))
}

/// A definition's current revision.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServiceRevision {
    /// The service name.
    service: String,
    /// The KV revision (also the ETag).
    revision: u64,
}

/// Every stored definition, sorted by name.
#[utoipa::path(
    get, path = "/api/services", tag = "services",
    responses(
        (status = 200, description = "All definitions", body = [ServiceDefinitionDoc]),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn list_services(State(state): State<AppState>) -> Json<Vec<ServiceDefinition>> {
    Json(
        state
            .definitions()
            .list()
            .await
            .into_iter()
            .map(|(d, _)| d)
            .collect(),
    )
}

/// Creates a definition; `created_at` and `updated_at` are set by the server.
#[utoipa::path(
    post, path = "/api/services", tag = "services",
    request_body = NewServiceDefinitionDoc,
    responses(
        (status = 201, description = "Created", body = ServiceDefinitionDoc,
            headers(("Location" = String, description = "/api/services/{name}"), ("ETag" = String, description = "The revision"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 403, description = "Not an admin", body = ErrorEnvelope),
        (status = 409, description = "SERVICE_ALREADY_EXISTS", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not take the write before the request's deadline (NATS unreachable, or its stream without a leader that long); details.stored is false when it certainly was not stored, absent when that is not known; Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn create_service(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    ApiJson(body): ApiJson<CreateBody>,
) -> Result<Response, ApiError> {
    let body = body.read()?;
    let name = body.service_name.clone();
    let (definition, revision) = state
        .definitions()
        .create(body, &who.name, until(&state))
        .await
        .map_err(|e| store_error(&name, e, Asked::Write))?;
    let mut headers = etag(revision);
    if let Ok(location) = HeaderValue::from_str(&format!("/api/services/{name}")) {
        headers.insert(header::LOCATION, location);
    }
    Ok((StatusCode::CREATED, headers, Json(definition)).into_response())
}

/// One definition; its revision is in the `ETag` header.
#[utoipa::path(
    get, path = "/api/services/{name}", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The definition", body = ServiceDefinitionDoc,
            headers(("ETag" = String, description = "The revision"))),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not answer before the request's deadline (NATS unreachable, or its stream without a leader that long); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn get_service(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let (definition, revision) = state
        .definitions()
        .get(&name, until(&state))
        .await
        .map_err(|e| store_error(&name, e, Asked::Read))?;
    Ok((etag(revision), Json(definition)).into_response())
}

/// Changes owner, description and/or version; `created_at` is kept and
/// `updated_at` advances. Conditional on `revision` or `If-Match` when given.
/// The same as `PATCH`: the fields given change, the others stay.
#[utoipa::path(
    put, path = "/api/services/{name}", tag = "services",
    params(
        ("name" = String, Path, description = "Service name"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(|\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#, description = "The revision (ETag) last read, e.g. \"12\"; empty or `*` means any"),
    ),
    request_body = ServiceDefinitionPatchDoc,
    responses(
        (status = 200, description = "The updated definition", body = ServiceDefinitionDoc,
            headers(("ETag" = String, description = "The new revision"))),
        (status = 400, description = "Malformed JSON, empty update or bad If-Match", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 403, description = "Not an admin", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONCURRENT_UPDATE: the revision given (`revision` or `If-Match`) is not the stored one (details.expected, details.current); or, without one, other writers changed the definition during each of the write's tries (details.current, details.attempts, details.stored false)", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not take the write before the request's deadline (NATS unreachable, or its stream without a leader that long); details.stored is false when it certainly was not stored, absent when that is not known; Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn update_service(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&state, &who, &name, &headers, body).await
}

/// Changes owner, description and/or version, as `PUT` does: the fields
/// given change, the others stay. The body may be sent as
/// `application/merge-patch+json`; no field can be removed, so `null` is
/// refused. Conditional on `revision` or `If-Match` when given.
#[utoipa::path(
    patch, path = "/api/services/{name}", tag = "services",
    params(
        ("name" = String, Path, description = "Service name"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(|\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#, description = "The revision (ETag) last read, e.g. \"12\"; empty or `*` means any"),
    ),
    request_body = ServiceDefinitionPatchDoc,
    responses(
        (status = 200, description = "The updated definition", body = ServiceDefinitionDoc,
            headers(("ETag" = String, description = "The new revision"))),
        (status = 400, description = "Malformed JSON, empty update or bad If-Match", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 403, description = "Not an admin", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONCURRENT_UPDATE: the revision given (`revision` or `If-Match`) is not the stored one (details.expected, details.current); or, without one, other writers changed the definition during each of the write's tries (details.current, details.attempts, details.stored false)", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not take the write before the request's deadline (NATS unreachable, or its stream without a leader that long); details.stored is false when it certainly was not stored, absent when that is not known; Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn patch_service(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<UpdateBody>,
) -> Result<Response, ApiError> {
    update(&state, &who, &name, &headers, body).await
}

/// The update behind `PUT` and `PATCH`.
async fn update(
    state: &AppState,
    who: &Principal,
    name: &str,
    headers: &HeaderMap,
    body: UpdateBody,
) -> Result<Response, ApiError> {
    let patch = body.read()?;
    let expected = expected_revision(patch.revision, headers)?;
    check_name(name)?;
    let (definition, revision) = state
        .definitions()
        .update(name, &patch, expected, &who.name, until(state))
        .await
        .map_err(|e| store_error(name, e, Asked::Write))?;
    Ok((etag(revision), Json(definition)).into_response())
}

/// Deletes a definition (its history stays). Conditional on `If-Match`.
#[utoipa::path(
    delete, path = "/api/services/{name}", tag = "services",
    params(
        ("name" = String, Path, description = "Service name"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(|\*|(W/)?"[0-9]{1,18}"|[0-9]{1,18})$"#, description = "The revision (ETag) last read, e.g. \"12\"; empty or `*` means any"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Bad If-Match", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 403, description = "Not an admin", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND", body = ErrorEnvelope),
        (status = 409, description = "CONCURRENT_UPDATE: the revision given (`revision` or `If-Match`) is not the stored one (details.expected, details.current); or, without one, other writers changed the definition during each of the write's tries (details.current, details.attempts, details.stored false)", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not take the write before the request's deadline (NATS unreachable, or its stream without a leader that long); details.stored is false when it certainly was not stored, absent when that is not known; Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn delete_service(
    State(state): State<AppState>,
    Extension(who): Extension<Principal>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let expected = expected_revision(None, &headers)?;
    check_name(&name)?;
    state
        .definitions()
        .delete(&name, expected, &who.name, until(&state))
        .await
        .map_err(|e| store_error(&name, e, Asked::Write))?;
    Ok(StatusCode::NO_CONTENT)
}

/// The current revision of a definition.
#[utoipa::path(
    get, path = "/api/services/{name}/revision", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The revision", body = ServiceRevision),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not answer before the request's deadline (NATS unreachable, or its stream without a leader that long); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn get_revision(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ServiceRevision>, ApiError> {
    check_name(&name)?;
    let (_, revision) = state
        .definitions()
        .get(&name, until(&state))
        .await
        .map_err(|e| store_error(&name, e, Asked::Read))?;
    Ok(Json(ServiceRevision {
        service: name,
        revision,
    }))
}

/// The audit trail, oldest first: every kept revision with its time,
/// operation (PUT, DELETE, PURGE) and who made it. Deleted definitions keep
/// their trail.
#[utoipa::path(
    get, path = "/api/services/{name}/history", tag = "services",
    params(("name" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The changes, oldest first", body = [HistoryEntry]),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND (never existed)", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the definitions store did not answer before the request's deadline (NATS unreachable, or its stream without a leader that long); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn get_history(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Vec<HistoryEntry>>, ApiError> {
    check_name(&name)?;
    state
        .definitions()
        .history(&name, until(&state))
        .await
        .map(Json)
        .map_err(|e| store_error(&name, e, Asked::Read))
}

/// A name that is not a valid service name cannot exist (and must not
/// reach a KV key or subject): 404, with why. A value longer than any
/// service name (a token pasted where a name goes) is echoed cut
/// ([`crate::error::Echoed`]), in the answer and so in the log.
fn check_name(name: &str) -> Result<(), ApiError> {
    validate_service_name(name)
        .map_err(|e| ApiError::service_not_found(name).with_detail("reason", e.to_string()))
}

/// When the definitions store stops trying what this request asked (its
/// stream may be electing a leader), so it answers before the request
/// times out.
fn until(state: &AppState) -> tokio::time::Instant {
    answer_by(state.config().request_timeout)
}

fn etag(revision: u64) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&format!("\"{revision}\"")) {
        headers.insert(header::ETAG, v);
    }
    headers
}

/// The revision a write is conditional on: the body's `revision`, the
/// `If-Match` header, or none (`*` or absent). Both given and different
/// cannot both be current: a conflict.
fn expected_revision(body: Option<u64>, headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let header = match headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => parse_if_match(value)?,
    };
    match (body, header) {
        (Some(b), Some(h)) if b != h => Err(ApiError::new(
            ErrorCode::ConcurrentUpdate,
            format!("body revision {b} and If-Match {h} differ"),
        )
        .with_details(json!({ "expected": b, "ifMatch": h }))),
        (b, h) => Ok(b.or(h)),
    }
}

fn parse_if_match(value: &HeaderValue) -> Result<Option<u64>, ApiError> {
    let bad = || {
        ApiError::bad_param(
            "If-Match",
            "expected one revision as an entity tag, e.g. \"12\"",
        )
    };
    let s = value.to_str().map_err(|_| bad())?.trim();
    if s.is_empty() || s == "*" {
        return Ok(None);
    }
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s);
    s.parse::<u64>().map(Some).map_err(|_| bad())
}

/// What a handler asked the definitions store for: what a failure of the
/// bus means for the client depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Asked {
    Read,
    Write,
}

fn store_error(name: &str, e: StoreError, asked: Asked) -> ApiError {
    match e {
        StoreError::NotFound => ApiError::service_not_found(name),
        StoreError::AlreadyExists => ApiError::new(
            ErrorCode::ServiceAlreadyExists,
            format!("a service definition named {name:?} already exists"),
        )
        .with_details(json!({ "service": name })),
        StoreError::Conflict { expected, current } => ApiError::new(
            ErrorCode::ConcurrentUpdate,
            format!(
                "service definition {name:?} changed since revision {expected}; read it again and retry"
            ),
        )
        .with_details(json!({ "service": name, "expected": expected, "current": current })),
        StoreError::Contended { current, attempts } => contended(name, current, attempts),
        StoreError::NotStored(e) => no_answer(name, &e, Asked::Write, Stored::No),
        StoreError::Bus(e) => no_answer(name, &e, asked, Stored::Unknown),
    }
}

/// 409 `CONCURRENT_UPDATE` for a blind write (no revision given) that
/// other writers beat on each of its `attempts`: it was not stored, the
/// definition is at `current` now (when that could be read), and sending
/// it again, or with `If-Match` on that revision, may land. No
/// `details.expected`: the client expected no revision.
fn contended(name: &str, current: Option<u64>, attempts: usize) -> ApiError {
    let now = match current {
        Some(revision) => format!(
            " and is now at revision {revision}; this write was not stored: send it again \
             (with If-Match: \"{revision}\" to apply it to that revision only)"
        ),
        None => "; this write was not stored: read it and send the write again".to_owned(),
    };
    let mut details = json!({ "service": name, "attempts": attempts, "stored": false });
    if let Some(revision) = current {
        details["current"] = revision.into();
    }
    ApiError::new(
        ErrorCode::ConcurrentUpdate,
        format!(
            "service definition {name:?} was changed by other writers during each of this \
             write's {attempts} tries{now}"
        ),
    )
    .with_details(details)
}

/// What is known of whether a write that failed was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// Certainly not: nothing was sent, nobody took it, or the stream
    /// refused it.
    No,
    /// Perhaps: an attempt was not acknowledged.
    Unknown,
}

/// 503 `SERVICE_UNAVAILABLE` when the definitions store did not do what
/// was asked before the request's deadline: NATS unreachable, or the
/// bucket's stream without a leader for that long (the node leading it
/// died; JetStream elects another in 4-9 s, and the store keeps trying
/// until shortly before the request times out), when the monitor's own
/// connection is fine and "the bus is not available" would be untrue.
/// What is known of a write is said: `details.stored: false` when it
/// certainly was not stored, so it may be sent again as it is; nothing
/// when that is not known (an attempt was not acknowledged).
fn no_answer(
    name: &str,
    e: &(dyn std::error::Error + 'static),
    asked: Asked,
    stored: Stored,
) -> ApiError {
    let not_stored = asked == Asked::Write && stored == Stored::No;
    let message = if not_stored {
        "the service definitions store takes no writes right now (its stream has no leader, \
         as while JetStream elects one after a NATS node was lost, which usually takes \
         seconds); this write was not stored: send it again shortly"
    } else {
        match asked {
            Asked::Read => {
                "the service definitions store does not answer right now (NATS is unreachable, \
                 or the store's stream has no leader, as while JetStream elects one after a \
                 NATS node was lost, which usually takes seconds); try again shortly"
            }
            Asked::Write => {
                "the service definitions store does not answer right now (NATS is unreachable, \
                 or the store's stream has no leader, as while JetStream elects one after a \
                 NATS node was lost, which usually takes seconds); whether this write was \
                 stored is not known: read the definition before sending it again"
            }
        }
    };
    let details = if not_stored {
        json!({ "service": name, "stored": false })
    } else {
        json!({ "service": name })
    };
    ApiError::new(ErrorCode::ServiceUnavailable, message)
        .with_details(details)
        .with_retry_after(crate::error::LEADERLESS_RETRY_AFTER)
        .with_internal(format!("service definitions: {}", Causes(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hm(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::IF_MATCH, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(expected_revision(None, &HeaderMap::new()).unwrap(), None);
        assert_eq!(expected_revision(None, &hm("\"7\"")).unwrap(), Some(7));
        assert_eq!(expected_revision(None, &hm("W/\"7\"")).unwrap(), Some(7));
        assert_eq!(expected_revision(None, &hm("7")).unwrap(), Some(7));
        assert_eq!(expected_revision(None, &hm("*")).unwrap(), None);
        assert_eq!(expected_revision(None, &hm("")).unwrap(), None);
        assert_eq!(expected_revision(Some(3), &hm("*")).unwrap(), Some(3));
        assert_eq!(expected_revision(Some(3), &hm("\"3\"")).unwrap(), Some(3));
        assert_eq!(
            expected_revision(Some(3), &hm("\"4\"")).unwrap_err().code(),
            ErrorCode::ConcurrentUpdate
        );
        assert_eq!(
            expected_revision(None, &hm("\"a\"")).unwrap_err().code(),
            ErrorCode::BadRequest
        );
    }
}
