//! `/api/instances`: the live instances from the registry (read-only,
//! answered from the registry reader's memory), a status summary, and per
//! instance its configuration (asked live over NATS) and recent events
//! (read from `AEGIS_LOG`).
//!
//! `health` and `status` are route words here: a service so named is listed
//! under `/api/instances/{service}`, but its instances cannot be addressed
//! as `/api/instances/health/summary` or `/api/instances/status/{x}`.

use std::{str::FromStr, time::Duration};

use aegis_contracts::{
    InstanceStatus,
    log::LogRecord,
    names::{validate_instance_id, validate_service_name},
    subjects::{control_subject, log_subject},
    wire::HEADER_ERROR_CODE,
};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    bus::{self, Since},
    error::{ApiError, ErrorCode, ErrorEnvelope},
    extract::ApiQuery,
    fleet::{InstanceView, Summary},
    openapi::{InstanceStatusDoc, LogRecordDoc, ServiceInstanceDoc},
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
    /// The configuration with secrets redacted, as the instance sent it.
    #[schema(value_type = Object)]
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

/// Every registered instance, sorted by service and id.
#[utoipa::path(
    get, path = "/api/instances", tag = "instances",
    responses(
        (status = 200, description = "All instances", body = [ServiceInstanceDoc]),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn list_instances(State(state): State<AppState>) -> Json<Vec<InstanceView>> {
    Json(state.fleet().all())
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
        (status = 200, description = "Matching instances", body = [ServiceInstanceDoc]),
        (status = 400, description = "Not a status", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn by_status(
    State(state): State<AppState>,
    Path(status): Path<String>,
) -> Result<Json<Vec<InstanceView>>, ApiError> {
    let status = InstanceStatus::from_str(&status).map_err(|_| {
        ApiError::bad_param("status", "expected ACTIVE, UNHEALTHY or STANDBY").with_details(json!({
            "param": "status",
            "value": status,
            "allowed": ["ACTIVE", "UNHEALTHY", "STANDBY"],
        }))
    })?;
    Ok(Json(state.fleet().by_status(status)))
}

/// One service's instances; an unknown service has none (`[]`).
#[utoipa::path(
    get, path = "/api/instances/{service}", tag = "instances",
    params(("service" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The service's instances", body = [ServiceInstanceDoc]),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn by_service(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Json<Vec<InstanceView>> {
    Json(state.fleet().by_service(&service))
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
        (status = 502, description = "BAD_GATEWAY: the instance answered with an error or not JSON", body = ErrorEnvelope),
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
    let config: Value = serde_json::from_slice(&reply.payload).map_err(|e| {
        ApiError::new(
            ErrorCode::BadGateway,
            format!("instance {instance:?} answered with something that is not JSON"),
        )
        .with_internal(e)
    })?;
    Ok(Json(InstanceConfig {
        service_name: service,
        instance_id: instance,
        config,
    }))
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
    )
)]
async fn instance_events(
    State(state): State<AppState>,
    Path((service, instance)): Path<(String, String)>,
    ApiQuery(query): ApiQuery<EventsQuery>,
) -> Result<Json<Vec<LogRecord>>, ApiError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_param("limit", "must be between 1 and 1000"));
    }
    check_names(&service, &instance)?;
    let messages = bus::tail(
        state.logs(),
        &log_subject(&service, &instance),
        Since::Beginning,
        limit,
    )
    .await
    .map_err(|e| ApiError::unavailable("reading AEGIS_LOG", format!("{e:#}")))?;
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
