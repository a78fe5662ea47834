//! `GET /api/services/{service}/methods`: what each method of a running
//! service takes and returns — its description and the JSON Schemas of its
//! request and reply — as its instances publish them in the services
//! protocol (`$SRV.INFO`), derived from the handlers' Rust types, and the
//! commands its command workers take (`kind: command` endpoints) with the
//! schemas of their payloads. The UI and operators read payload shapes here
//! instead of guessing them.
//!
//! One request asks every instance at once (`describe_each`). Methods come
//! from the first instance that answers, as every instance of a service
//! serves the same ones. Commands are gathered from every instance: each
//! lists only those its own process's workers take (a `leader_of` worker:
//! on the leader it follows only), so the first answer alone could miss
//! them.

use std::time::Duration;

use aegis_contracts::names::validate_service_name;
use aegis_sdk::rpc::{CommandDescription, RpcError, ServiceDescription};
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
    /// The commands its instances' command workers take, in the order the
    /// first instance listing each declares them; empty when none runs a
    /// worker.
    commands: Vec<CommandSchema>,
}

/// One command a service takes, sent with `aegis command` or
/// `commands.{service}.{command}` on the COMMANDS stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CommandSchema {
    /// The command name.
    name: String,
    /// Its subject, `commands.{service}.{command}`.
    subject: String,
    /// What it does (the payload type's doc comment), when known.
    description: Option<String>,
    /// Whether only the leader of a single-active service takes it.
    leader_only: bool,
    /// JSON Schema of the payload (derived from the worker's type).
    #[schema(value_type = Option<Object>)]
    payload_schema: Option<serde_json::Value>,
    /// The instances that list it (their processes run its worker), sorted.
    instance_ids: Vec<String>,
}

impl CommandSchema {
    fn new(c: CommandDescription, instance_id: &str) -> Self {
        Self {
            name: c.name,
            subject: c.subject,
            description: c.description,
            leader_only: c.leader_only,
            payload_schema: c.payload_schema,
            instance_ids: vec![instance_id.to_owned()],
        }
    }
}

/// The commands of every answer, each once: described as the first answer
/// listing it does, with every instance that lists it.
fn gather_commands(answers: Vec<ServiceDescription>) -> Vec<CommandSchema> {
    let mut gathered: Vec<CommandSchema> = Vec::new();
    for answer in answers {
        for c in answer.commands {
            match gathered.iter_mut().find(|g| g.name == c.name) {
                Some(g) => {
                    if !g.instance_ids.contains(&answer.instance_id) {
                        g.instance_ids.push(answer.instance_id.clone());
                    }
                }
                None => gathered.push(CommandSchema::new(c, &answer.instance_id)),
            }
        }
    }
    for g in &mut gathered {
        g.instance_ids.sort();
    }
    gathered
}

impl ServiceMethods {
    /// The methods of `d` with the commands of `answers` (every instance's
    /// description, `d`'s among them).
    fn new(d: ServiceDescription, answers: Vec<ServiceDescription>) -> Self {
        Self {
            commands: gather_commands(answers),
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
/// requests and replies, as one of its instances describes them, and the
/// commands its instances' workers take with the schemas of their payloads.
#[utoipa::path(
    get, path = "/api/services/{service}/methods", tag = "instances",
    params(("service" = String, Path, description = "Service name")),
    responses(
        (status = 200, description = "The service's methods and commands", body = ServiceMethods),
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
    if let Err(e) = validate_service_name(&service) {
        return Err(
            ApiError::no_service("no service", &service).with_detail("reason", e.to_string())
        );
    }
    // One round of asking: every instance answers the one request, the
    // first answer's methods are shown, and all of them give the commands.
    match aegis_sdk::rpc::describe_each(state.conn().client(), &service, DESCRIBE_TIMEOUT).await {
        Ok(answers) => match answers.first().cloned() {
            Some(first) => Ok(Json(ServiceMethods::new(first, answers))),
            // describe_each never returns an empty list; were it to, no
            // instance answered.
            None => Err(ApiError::no_service(
                "no running instance answers for service",
                &service,
            )),
        },
        Err(RpcError::NoResponders { .. }) => Err(ApiError::no_service(
            "no running instance answers for service",
            &service,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(id: &str, commands: &[(&str, bool)]) -> ServiceDescription {
        ServiceDescription {
            service: "ledger".into(),
            version: "1.0.0".into(),
            instance_id: id.into(),
            methods: Vec::new(),
            commands: commands
                .iter()
                .map(|(name, leader_only)| CommandDescription {
                    name: (*name).into(),
                    subject: format!("commands.ledger.{name}"),
                    description: None,
                    leader_only: *leader_only,
                    payload_schema: None,
                })
                .collect(),
        }
    }

    #[test]
    fn each_command_is_listed_once_with_every_instance_that_takes_it() {
        let gathered = gather_commands(vec![
            answer("ledger-2", &[("compact", false)]),
            answer("ledger-1", &[("reconcile", true), ("compact", false)]),
            answer("ledger-3", &[]),
        ]);
        let seen: Vec<(&str, bool, Vec<&str>)> = gathered
            .iter()
            .map(|c| {
                (
                    c.name.as_str(),
                    c.leader_only,
                    c.instance_ids.iter().map(String::as_str).collect(),
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("compact", false, vec!["ledger-1", "ledger-2"]),
                ("reconcile", true, vec!["ledger-1"]),
            ]
        );
        assert!(gather_commands(vec![answer("ledger-1", &[])]).is_empty());
    }
}
