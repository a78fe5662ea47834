//! `GET /api/services/{service}/methods`: what each method of a running
//! service takes and returns — its description and the JSON Schemas of its
//! request and reply — as its instances publish them in the services
//! protocol (`$SRV.INFO`), derived from the handlers' Rust types. The UI and
//! operators read payload shapes here instead of guessing them.

use std::time::Duration;

use aegis_contracts::names::validate_service_name;
use aegis_sdk::rpc::{RpcError, ServiceDescription};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::Serialize;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorCode, ErrorEnvelope},
    state::AppState,
};

/// How long one instance has to describe its service.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(methods))
}

/// One method of a service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct MethodSchema {
    /// The method name.
    name: String,
    /// Its shared subject, `rpc.{service}.{method}`.
    subject: String,
    /// What it does, when the service says.
    description: Option<String>,
    /// Whether only the leader of a single-active service runs it.
    leader_only: bool,
    /// JSON Schema of the request body (derived from the handler's type).
    #[schema(value_type = Option<Object>)]
    request_schema: Option<serde_json::Value>,
    /// JSON Schema of a successful reply.
    #[schema(value_type = Option<Object>)]
    response_schema: Option<serde_json::Value>,
}

/// The methods of a running service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceMethods {
    /// The service.
    service_name: String,
    /// The version of the instance that described it.
    version: String,
    /// The instance that described it.
    instance_id: String,
    /// Methods in the order the service declares them.
    methods: Vec<MethodSchema>,
}

impl From<ServiceDescription> for ServiceMethods {
    fn from(d: ServiceDescription) -> Self {
        Self {
            service_name: d.service,
            version: d.version,
            instance_id: d.instance_id,
            methods: d
                .methods
                .into_iter()
                .map(|m| MethodSchema {
                    name: m.name,
                    subject: m.subject,
                    description: m.description,
                    leader_only: m.leader_only,
                    request_schema: m.request_schema,
                    response_schema: m.response_schema,
                })
                .collect(),
        }
    }
}

/// The methods of a running service with the JSON Schemas of their
/// requests and replies, as one of its instances describes them.
#[utoipa::path(
    get, path = "/api/services/{service}/methods", tag = "instances",
    params(("service" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The service's methods", body = ServiceMethods),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND: no running instance answers", body = ErrorEnvelope),
        (status = 502, description = "BAD_GATEWAY: an unreadable answer", body = ErrorEnvelope),
        (status = 503, description = "NATS is unreachable", body = ErrorEnvelope),
        (status = 504, description = "GATEWAY_TIMEOUT: no answer in time", body = ErrorEnvelope),
    )
)]
async fn methods(
    State(state): State<AppState>,
    Path(service): Path<String>,
) -> Result<Json<ServiceMethods>, ApiError> {
    if validate_service_name(&service).is_err() {
        return Err(ApiError::new(
            ErrorCode::ServiceNotFound,
            format!("no service {service:?}"),
        ));
    }
    match aegis_sdk::rpc::describe(state.conn().client(), &service, DESCRIBE_TIMEOUT).await {
        Ok(described) => Ok(Json(described.into())),
        Err(RpcError::NoResponders { .. }) => Err(ApiError::new(
            ErrorCode::ServiceNotFound,
            format!("no running instance of {service} answers"),
        )),
        Err(RpcError::Timeout { .. }) => Err(ApiError::new(
            ErrorCode::GatewayTimeout,
            format!("no instance of {service} described it in time"),
        )),
        Err(e @ RpcError::Decode { .. }) => Err(ApiError::new(
            ErrorCode::BadGateway,
            "an instance answered with an unreadable description",
        )
        // The decode error says only what it was doing; serde's reason is
        // its source.
        .with_internal(aegis_sdk::startup::Causes(&e).to_string())),
        Err(e) => Err(ApiError::unavailable("describing a service", e)),
    }
}
