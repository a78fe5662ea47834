//! `/api/instances`: the live instances from the registry (read-only,
//! answered from the registry reader's memory), a status summary, and per
//! instance its configuration (asked live over NATS) and recent events
//! (read from `AEGIS_LOG`).
//!
//! The lists (`/api/instances`, `/api/instances/{service}`,
//! `/api/instances/status/{status}`) carry a strong `ETag` and answer 304
//! to a matching `If-None-Match`; large ones are gzip-compressed for
//! clients that accept it. The full and per-service lists are served from
//! bytes built once per change (`list_cache.rs`); filtered and paged ones
//! (`?service=a,b&status=ACTIVE&limit=100&after=a/i-1`) are built per
//! request, bounded by `limit`, and answer 304 without being built. The
//! query's filters and paging are read in `query.rs`.
//!
//! `health` and `status` are route words here: a service so named is listed
//! under `/api/instances/{service}`, but its instances cannot be addressed
//! as `/api/instances/health/summary` or `/api/instances/status/{x}`.

use std::{
    hash::{Hash, Hasher},
    time::Duration,
};

use aegis_contracts::{
    config::EffectiveConfig,
    log::LogRecord,
    names::{validate_instance_id, validate_service_name},
    subjects::{control_subject, log_subject},
    wire::HEADER_ERROR_CODE,
};
use axum::{
    Json,
    extract::{Path, State},
    http::{HeaderMap, header},
    response::Response,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

mod query;

use self::query::{ListQuery, next_link, parse_status};
use crate::{
    bus::{self, Since},
    error::{ApiError, ErrorCode, ErrorEnvelope},
    extract::ApiQuery,
    fleet::{InstanceView, Selection, Summary},
    list_cache::{self, ListCache},
    openapi::{InstanceStatusDoc, LogRecordDoc, ServiceInstanceDoc},
    redact::{keep_sdk_shape, redact_secrets},
    state::AppState,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances))
        .routes(routes!(health_summary))
        .routes(routes!(by_status))
        .routes(routes!(by_service))
        .routes(routes!(get_instance))
        .routes(routes!(instance_config))
        .routes(routes!(instance_events))
}

/// An instance's effective configuration, as it reported it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InstanceConfig {
    /// The service.
    service_name: String,
    /// The instance.
    instance_id: String,
    /// The configuration with secrets redacted, as the instance sent it:
    /// checked to be an effective configuration, and passed on whole, so
    /// fields an instance of a newer SDK adds are shown too.
    #[schema(value_type = EffectiveConfig)]
    config: Value,
}

/// Query of the events endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// How many of the newest records to return (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// Every registered instance, sorted by service and id; optionally only
/// some services and statuses, a page at a time.
///
/// Without a filter the list is served from bytes built once per change.
/// Every answer carries a strong `ETag`; a matching `If-None-Match` gets
/// 304. A list may show a `lastHeartbeat` up to 1 s older than the newest
/// record write (everything else is current); the live stream's `digest`
/// keeps heartbeat ages true.
#[utoipa::path(
    get, path = "/api/instances", tag = "instances",
    params(ListQuery),
    responses(
        (status = 200, description = "The instances, sorted by service and id", body = [ServiceInstanceDoc],
            headers(
                ("ETag" = String, description = "Strong tag of this body"),
                ("Link" = String, description = "With `limit`, when more match: `<…>; rel=\"next\"`"),
            )),
        (status = 304, description = "Unchanged since the `If-None-Match` tag"),
        (status = 400, description = "Bad service, status, limit or after", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn list_instances(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response, ApiError> {
    let selection = query.selection()?;
    if selection == Selection::default() {
        let fleet = state.fleet();
        let cached = state
            .lists()
            .full(
                || fleet.versions(),
                || {
                    let s = fleet.select(&Selection::default());
                    (s.versions, s.instances)
                },
            )
            .await
            .map_err(serialize_error)?;
        return Ok(cached.respond(&headers));
    }
    if let (Some([service]), None, None, None) = (
        selection.services.as_deref(),
        &selection.statuses,
        &selection.after,
        selection.limit,
    ) {
        return service_list(&state, &headers, service).await;
    }
    selected(&state, &headers, &selection)
}

/// A filtered or paged list: built per request, 304 without building.
fn selected(
    state: &AppState,
    headers: &HeaderMap,
    selection: &Selection,
) -> Result<Response, ApiError> {
    let lists = state.lists();
    let variant = {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        selection.hash(&mut h);
        format!("q{:016x}", h.finish())
    };
    // The body is a function of the view's version and the selection: a
    // client holding this version's tag needs nothing built.
    let etag = lists.etag(state.fleet().versions().any, &variant);
    if let Some(response) = not_modified(headers, &etag) {
        return Ok(response);
    }
    let found = state.fleet().select(selection);
    let etag = lists.etag(found.versions.any, &variant);
    let json = bytes::Bytes::from(serde_json::to_vec(&found.instances).map_err(serialize_error)?);
    let response = list_cache::respond(headers, &etag, &json, || list_cache::gzip(&json));
    let next = found
        .more
        .then(|| found.instances.last())
        .flatten()
        .map(|last| {
            next_link(
                selection,
                &last.instance.service_name,
                &last.instance.instance_id,
            )
        });
    Ok(match next {
        Some(link) => list_cache::with_header(response, header::LINK, &link),
        None => response,
    })
}

/// 304 when `headers` hold `etag` (in either encoding's form).
fn not_modified(headers: &HeaderMap, etag: &str) -> Option<Response> {
    let gz = format!("{}-gz\"", etag.trim_end_matches('"'));
    let held = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .find(|t| *t == etag || *t == gz)?
        .to_owned();
    Some(list_cache::respond(
        headers,
        &held,
        &bytes::Bytes::new(),
        bytes::Bytes::new,
    ))
}

/// One service's list from the cache; `[]` for a service with no instance.
async fn service_list(
    state: &AppState,
    headers: &HeaderMap,
    service: &str,
) -> Result<Response, ApiError> {
    let fleet = state.fleet();
    let cached = state
        .lists()
        .service(
            service,
            || fleet.service_versions(service),
            || {
                let (versions, instances) = fleet.service_list(service);
                // Gone since the check: an empty list at the fleet's
                // version, which the next request replaces.
                (versions.unwrap_or_else(|| fleet.versions()), instances)
            },
        )
        .await
        .map_err(serialize_error)?;
    Ok(match cached {
        Some(cached) => cached.respond(headers),
        None => empty_list(state.lists(), headers),
    })
}

/// `[]`, the same for every service without instances.
fn empty_list(lists: &ListCache, headers: &HeaderMap) -> Response {
    let json = bytes::Bytes::from_static(b"[]");
    list_cache::respond(headers, &lists.etag(0, "empty"), &json, || json.clone())
}

fn serialize_error(e: serde_json::Error) -> ApiError {
    ApiError::internal("serializing the instance list", e)
}

/// Instance counts by status.
#[utoipa::path(
    get, path = "/api/instances/health/summary", tag = "instances",
    responses(
        (status = 200, description = "Counts", body = Summary),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn health_summary(State(state): State<AppState>) -> Json<Summary> {
    Json(state.fleet().summary())
}

/// Instances with one status.
#[utoipa::path(
    get, path = "/api/instances/status/{status}", tag = "instances",
    params(("status" = InstanceStatusDoc, Path, description = "ACTIVE, UNHEALTHY or STANDBY")),
    responses(
        (status = 200, description = "Matching instances", body = [ServiceInstanceDoc],
            headers(("ETag" = String, description = "Strong tag of this body"))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag"),
        (status = 400, description = "Not a status", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn by_status(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(status): Path<String>,
) -> Result<Response, ApiError> {
    let status = parse_status("status", &status)?;
    let selection = Selection {
        statuses: Some(vec![status]),
        ..Selection::default()
    };
    selected(&state, &headers, &selection)
}

/// One service's instances; an unknown service has none (`[]`). Served
/// from bytes built once per change of this service.
#[utoipa::path(
    get, path = "/api/instances/{service}", tag = "instances",
    params(("service" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The service's instances", body = [ServiceInstanceDoc],
            headers(("ETag" = String, description = "Strong tag of this body"))),
        (status = 304, description = "Unchanged since the `If-None-Match` tag"),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn by_service(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    service_list(&state, &headers, &service).await
}

/// One instance.
#[utoipa::path(
    get, path = "/api/instances/{service}/{instanceId}", tag = "instances",
    params(
        ("service" = String, Path, description = "Service name"),
        ("instanceId" = String, Path, description = "Instance id"),
    ),
    responses(
        (status = 200, description = "The instance", body = ServiceInstanceDoc),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "INSTANCE_NOT_FOUND", body = ErrorEnvelope),
    )
)]
async fn get_instance(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
) -> Result<Json<InstanceView>, ApiError> {
    state
        .fleet()
        .get(&service, &instance)
        .map(Json)
        .ok_or_else(|| ApiError::instance_not_found(&service, &instance))
}

/// The instance's effective configuration (secrets redacted), asked live
/// over NATS on `aegis.control.{service}.{instanceId}.config`: 404 when no
/// such instance is registered, 504 when it is but does not answer in time.
#[utoipa::path(
    get, path = "/api/instances/{service}/{instanceId}/config", tag = "instances",
    params(
        ("service" = String, Path, description = "Service name"),
        ("instanceId" = String, Path, description = "Instance id"),
    ),
    responses(
        (status = 200, description = "The configuration", body = InstanceConfig),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "INSTANCE_NOT_FOUND (not registered)", body = ErrorEnvelope),
        (status = 502, description = "BAD_GATEWAY: the instance answered with an error or not with an effective configuration", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: NATS does not answer the monitor (see /ready for its connection)", body = ErrorEnvelope),
        (status = 504, description = "GATEWAY_TIMEOUT: no answer in time", body = ErrorEnvelope),
    )
)]
async fn instance_config(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
) -> Result<Json<InstanceConfig>, ApiError> {
    check_names(&service, &instance)?;
    if state.fleet().get(&service, &instance).is_none() {
        return Err(ApiError::instance_not_found(&service, &instance));
    }
    let subject = control_subject(&service, &instance, "config");
    let timeout = state.config().control_timeout;
    let request = state.conn().pooled().request(subject, bytes::Bytes::new());
    let reply = match tokio::time::timeout(timeout, request).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(e)) => {
            let reason = match e.kind() {
                async_nats::client::RequestErrorKind::NoResponders => "no_responders",
                async_nats::client::RequestErrorKind::TimedOut => "timeout",
                _ => {
                    return Err(ApiError::unavailable(
                        "asking an instance for its config",
                        e,
                    ));
                }
            };
            return Err(no_answer(&service, &instance, timeout, reason));
        }
        Err(_) => return Err(no_answer(&service, &instance, timeout, "timeout")),
    };
    if let Some(code) = reply
        .headers
        .as_ref()
        .and_then(|h| h.get(HEADER_ERROR_CODE))
    {
        return Err(ApiError::new(
            ErrorCode::BadGateway,
            format!("instance {instance:?} answered with an error"),
        )
        .with_details(
            json!({ "service": service, "instanceId": instance, "instanceCode": code.as_str() }),
        ));
    }
    let config = read_effective_config(&reply.payload).map_err(|e| {
        ApiError::new(
            ErrorCode::BadGateway,
            format!("instance {instance:?} answered with something that is not its effective configuration"),
        )
        .with_details(json!({ "service": service, "instanceId": instance, "parseError": e.to_string() }))
    })?;
    Ok(Json(InstanceConfig {
        service_name: service,
        instance_id: instance,
        config,
    }))
}

/// The instance's answer as JSON with its secrets redacted, once it reads
/// as an [`EffectiveConfig`]. Redacted here too, not only by the SDK: an
/// instance of another or an older SDK, or any process allowed to answer
/// the subject, may send secrets, and viewers must never see them (nor in
/// the parse error of a 502, hence redacting before the check).
/// Shown as the contract reads it (a field a newer SDK adds is left out:
/// nothing says it holds no secret), its connection settings kept to the
/// keys the SDK writes.
fn read_effective_config(payload: &[u8]) -> Result<Value, serde_json::Error> {
    let mut config: Value = serde_json::from_slice(payload)?;
    redact_secrets(&mut config);
    let mut read = EffectiveConfig::deserialize(&config)?;
    read.connection = keep_sdk_shape(&read.connection);
    serde_json::to_value(read)
}

fn no_answer(service: &str, instance: &str, timeout: Duration, reason: &str) -> ApiError {
    ApiError::new(
        ErrorCode::GatewayTimeout,
        format!(
            "instance {instance:?} of {service:?} did not answer within {} ms",
            timeout.as_millis()
        ),
    )
    .with_details(json!({
        "service": service,
        "instanceId": instance,
        "reason": reason,
        "timeoutMs": timeout.as_millis() as u64,
    }))
}

/// The newest lifecycle events and WARN/ERROR log records the instance
/// published to `AEGIS_LOG`, oldest first. Also for instances that are gone
/// (to see why); `[]` when there are none.
#[utoipa::path(
    get, path = "/api/instances/{service}/{instanceId}/events", tag = "instances",
    params(
        ("service" = String, Path, description = "Service name"),
        ("instanceId" = String, Path, description = "Instance id"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "Records, oldest first", body = [LogRecordDoc]),
        (status = 400, description = "Bad limit", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "INSTANCE_NOT_FOUND (not a valid name)", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the stream AEGIS_LOG cannot be read (NATS unreachable, or the stream has no leader), or the monitor is busy (8 requests were reading stream history for all of the 2 s this one waited; details.maxStreamReads); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn instance_events(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<LogRecord>>, ApiError> {
    // In its documented range: `ApiQuery` holds it there.
    let limit = query.limit.unwrap_or(100);
    check_names(&service, &instance)?;
    let turn = state.stream_reads().turn().await?;
    let messages = bus::tail(
        state.logs(),
        &log_subject(&service, &instance),
        Since::Beginning,
        limit,
        &turn,
    )
    .await
    .map_err(|e| ApiError::stream_unavailable("the instance's events", "AEGIS_LOG", &e))?;
    Ok(Json(
        messages
            .iter()
            .filter_map(|m| serde_json::from_slice::<LogRecord>(&m.payload).ok())
            .collect(),
    ))
}

/// Names that fail validation cannot belong to an instance, and must not be
/// spliced into a subject (a `.` or `>` would address something else).
pub(crate) fn check_names(service: &str, instance: &str) -> Result<(), ApiError> {
    if validate_service_name(service).is_err() || validate_instance_id(instance).is_err() {
        return Err(ApiError::instance_not_found(service, instance));
    }
    Ok(())
}
