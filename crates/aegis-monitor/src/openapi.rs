//! The OpenAPI document, generated from the route annotations
//! (`#[utoipa::path]` on every handler, collected by `utoipa-axum`), and the
//! schemas of the wire models.
//!
//! The models live in `aegis-contracts`, whose `openapi` feature derives
//! their schemas from the types themselves; request schemas carry the
//! validation rules (patterns, lengths, no unknown fields) so a spec-driven
//! fuzzer knows what valid input looks like. One mirror is left here:
//! `ServiceInstance`, the schema of the monitor's own instance view
//! (`fleet::InstanceView`, the registry record flattened with the derived
//! status), whose flattened shape the derive would write as an `allOf`.

use std::collections::BTreeMap;

use utoipa::{
    Modify, OpenApi, ToSchema,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use aegis_contracts::{
    EndpointMetrics, InstanceStatus, LatencySummary, MetricsSnapshot, NewServiceDefinition,
    ServiceDefinition, ServiceDefinitionPatch, log::LogRecord,
};

use crate::{
    auth::{Principal, Role},
    definitions::HistoryEntry,
    error::{ErrorBody, ErrorEnvelope},
    fleet::StatusReason,
    live::{DefinitionOperation, FiguresView, InstanceFigures, InstanceName, LiveEvent},
    nats_health::{JetStreamState, NatsPicture, ServerState, StreamState},
};

/// The document's skeleton; paths are added by the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Aegis monitor API",
        description = "Management and monitoring API of an Aegis deployment: service definitions, live instances, metrics, configuration, events and a live stream. Every `/api/*` route needs `Authorization: Bearer <token>` (or the session cookie); viewers may read, admins may also write. Every error is `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        license(name = "Apache-2.0")
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    components(schemas(
        ErrorEnvelope,
        ErrorBody,
        ServiceDefinition,
        NewServiceDefinition,
        ServiceDefinitionPatch,
        ServiceInstanceDoc,
        InstanceStatus,
        StatusReason,
        MetricsSnapshot,
        EndpointMetrics,
        LatencySummary,
        LogRecord,
        HistoryEntry,
        Principal,
        Role,
        LiveEvent,
        DefinitionOperation,
        FiguresView,
        InstanceFigures,
        InstanceName,
        NatsPicture,
        JetStreamState,
        ServerState,
        StreamState,
    )),
    tags(
        (name = "services", description = "Service definitions (KV `service_definitions`)"),
        (name = "instances", description = "Live instances from the registry, their configuration and events"),
        (name = "metrics", description = "Metrics snapshots published by instances"),
        (name = "dead-letters", description = "Events and commands given up on (stream `DEAD_LETTER`)"),
        (name = "nats", description = "The NATS cluster itself: servers, the JetStream API, stream leaders"),
        (name = "stream", description = "Server-Sent Events"),
        (name = "session", description = "Browser sign-in"),
        (name = "system", description = "Health, readiness, status and the monitor's own metrics"),
    )
)]
pub(crate) struct ApiDoc;

/// Touches the derive cannot express, applied to the finished document:
/// every `/api` operation lists the 400 an unknown query parameter gets
/// ([`document_unknown_params`]), every operation the 413, 429, 503 and
/// 504 any request may get ([`document_refusals`]), and an update must name at least one of
/// owner, description, version. The latter is said as "any of three copies
/// of the fields, each requiring one", which fuzzers handle better than an
/// `allOf` around an `anyOf`.
pub(crate) fn finish(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr,
        schema::{AnyOfBuilder, Schema},
    };
    document_unknown_params(spec);
    document_refusals(spec);
    let Some(components) = spec.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(Schema::Object(fields))) =
        components.schemas.remove("ServiceDefinitionPatch")
    else {
        return;
    };
    let description = fields.description.clone();
    let one_required = ["owner", "description", "version"]
        .into_iter()
        .fold(AnyOfBuilder::new(), |any, field| {
            let mut copy = fields.clone();
            copy.required = vec![field.to_owned()];
            copy.description = None;
            any.item(Schema::Object(copy))
        })
        .description(description)
        .build();
    components.schemas.insert(
        "ServiceDefinitionPatch".to_owned(),
        Schema::AnyOf(one_required).into(),
    );
}

/// What a 400 for an unknown query parameter is called where a route
/// documents no 400 of its own.
const UNKNOWN_PARAM: &str = "BAD_REQUEST: an unknown query parameter";

/// Every `/api` operation can answer 400: `refuse_unknown_params` (in
/// `extract.rs`) refuses a query parameter the operation does not list,
/// also on routes that take none. Said here, once, for every operation,
/// rather than in each route's annotations, where a new route would
/// forget it: a missing 400 gets one with the error envelope, and a 400
/// that names other causes gets this one added to its description.
fn document_unknown_params(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    for (path, item) in spec.paths.paths.iter_mut() {
        if !path.starts_with("/api/") {
            continue;
        }
        for operation in operations(item) {
            let responses = &mut operation.responses.responses;
            match responses.get_mut("400") {
                Some(RefOr::T(response)) => {
                    if !response.description.contains("nknown") {
                        response.description =
                            format!("{}; or an unknown query parameter", response.description);
                    }
                }
                Some(RefOr::Ref(_)) => {}
                None => {
                    let envelope = ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                        .build();
                    let response = ResponseBuilder::new()
                        .description(UNKNOWN_PARAM)
                        .content("application/json", envelope)
                        .build();
                    responses.insert("400".to_owned(), response.into());
                }
            }
        }
    }
}

/// The operations of a path the API serves (it has no HEAD, OPTIONS or
/// TRACE operations of its own).
fn operations(
    item: &mut utoipa::openapi::path::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.post,
        &mut item.put,
        &mut item.patch,
        &mut item.delete,
    ]
    .into_iter()
    .flatten()
}

/// Why any request may get 413, whatever its route.
const TOO_LARGE: &str = "PAYLOAD_TOO_LARGE: a body over 64 KiB (a declared length is refused before \
                         authentication, on every route, also one that takes no body)";

/// Why a request with a bearer token may get 429, whatever its route.
const WRONG_TOKENS: &str = "this client's budget for wrong bearer tokens is used up (any token \
                            from it is refused, before it is checked, until the budget refills)";

/// Why any request may get 429, whatever its route.
const CONNECTION_SHARE: &str = "this client already holds its share of connections \
                                (--max-connections-per-client; the connection is closed after)";

/// Why any request but `/health` may get 503 (the starting monitor's
/// answer to every other path, `routes/starting.rs`).
const STARTING: &str = "NOT_READY: the monitor is starting (NATS, JetStream or the registry \
                        not ready yet; see --startup-timeout); Retry-After says when to try again";

/// Why any request but the live stream's may get 504 (the timeout layer
/// around every other route, `routes/mod.rs`).
const TIMED_OUT: &str =
    "GATEWAY_TIMEOUT: the request took longer than --request-timeout (15 s by default)";

/// The refusals any request may meet before its route's own code runs, or
/// whatever its code waits for, said once here for every operation
/// rather than in each route's annotations, where a new route would
/// forget them:
///
/// - 413 `PAYLOAD_TOO_LARGE`: the body limit is a layer around every route
///   (`extract::refuse_oversized`), so a route that takes no body answers
///   it too;
/// - 429 `TOO_MANY_REQUESTS`: a client that used up its budget for wrong
///   bearer tokens, on every operation that takes one (its own `security`
///   or the document's names `bearer`: the authenticated routes and
///   `/status`); and on any operation, a connection past its client's
///   share (`server/shares.rs`). With `Retry-After`;
/// - 503 `NOT_READY`: while the monitor is starting, every path but
///   `/health` (which says `starting`), with `Retry-After`;
/// - 504 `GATEWAY_TIMEOUT`: the request timeout wraps every route but the
///   live stream, whatever the route waits on.
///
/// A status an operation already lists keeps its description, with the
/// missing reason added.
fn document_refusals(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let default_bearer = spec
        .security
        .iter()
        .flatten()
        .any(|requirement| requirement_names(requirement).contains(&"bearer".to_owned()));
    let envelope = || {
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
            .build()
    };
    for (path, item) in spec.paths.paths.iter_mut() {
        let starting = path != "/health";
        let bounded = path != "/api/stream";
        for operation in operations(item) {
            let bearer = match &operation.security {
                Some(requirements) => requirements
                    .iter()
                    .any(|r| requirement_names(r).contains(&"bearer".to_owned())),
                None => default_bearer,
            };
            let responses = &mut operation.responses.responses;
            responses.entry("413".to_owned()).or_insert_with(|| {
                ResponseBuilder::new()
                    .description(TOO_LARGE)
                    .content("application/json", envelope())
                    .build()
                    .into()
            });
            let mut reasons = Vec::new();
            if bearer {
                reasons.push(WRONG_TOKENS);
            }
            reasons.push(CONNECTION_SHARE);
            match responses.get_mut("429") {
                Some(RefOr::T(response)) => {
                    for reason in reasons {
                        let key = if reason == WRONG_TOKENS {
                            "wrong"
                        } else {
                            "share of connections"
                        };
                        if !response.description.contains(key) {
                            response.description = format!("{}; or {reason}", response.description);
                        }
                    }
                }
                Some(RefOr::Ref(_)) => {}
                None => {
                    let response = ResponseBuilder::new()
                        .description(format!("TOO_MANY_REQUESTS: {}", reasons.join("; or ")))
                        .content("application/json", envelope())
                        .header("Retry-After", retry_after())
                        .build();
                    responses.insert("429".to_owned(), response.into());
                }
            }
            if starting {
                add_reason(responses, "503", "starting", STARTING, true);
            }
            if bounded {
                add_reason(responses, "504", "--request-timeout", TIMED_OUT, false);
            }
        }
    }
}

/// The `Retry-After` header of an answer that has one.
fn retry_after() -> utoipa::openapi::header::Header {
    use utoipa::openapi::{
        header::HeaderBuilder,
        schema::{ObjectBuilder, SchemaType, Type},
    };
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(SchemaType::Type(Type::Integer)))
        .description(Some("Seconds to wait before trying again"))
        .build()
}

/// Lists `status` with `reason` (which starts with its code): a new
/// answer with the error envelope, or `reason` added to the description
/// of one listed already, unless it says `key`; with `Retry-After` when
/// `retry` is set.
fn add_reason(
    responses: &mut BTreeMap<String, utoipa::openapi::RefOr<utoipa::openapi::Response>>,
    status: &str,
    key: &str,
    reason: &str,
    retry: bool,
) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            if !response.description.contains(key) {
                response.description = format!("{}; or {reason}", response.description);
            }
            if retry && !response.headers.contains_key("Retry-After") {
                response
                    .headers
                    .insert("Retry-After".to_owned(), retry_after());
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let envelope = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("ErrorEnvelope")))
                .build();
            let mut response = ResponseBuilder::new()
                .description(reason)
                .content("application/json", envelope);
            if retry {
                response = response.header("Retry-After", retry_after());
            }
            responses.insert(status.to_owned(), response.build().into());
        }
    }
}

/// The names of the schemes a security requirement asks for.
fn requirement_names(requirement: &utoipa::openapi::security::SecurityRequirement) -> Vec<String> {
    serde_json::to_value(requirement)
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default()
}

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An admin or viewer token"))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                crate::auth::session::COOKIE_NAME,
            ))),
        );
    }
}

// The route modules name the schemas by these paths; each is the contract
// type itself now (`aegis-contracts` derives `ToSchema` with its `openapi`
// feature), so the document describes what is actually served.
pub(crate) type ServiceDefinitionDoc = aegis_contracts::ServiceDefinition;
pub(crate) type NewServiceDefinitionDoc = aegis_contracts::NewServiceDefinition;
pub(crate) type ServiceDefinitionPatchDoc = aegis_contracts::ServiceDefinitionPatch;
pub(crate) type InstanceStatusDoc = aegis_contracts::InstanceStatus;
pub(crate) type MetricsSnapshotDoc = aegis_contracts::MetricsSnapshot;
pub(crate) type LogRecordDoc = aegis_contracts::log::LogRecord;

/// The registry record of a live instance (camelCase; more fields may appear).
#[derive(ToSchema)]
#[schema(as = ServiceInstance)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct ServiceInstanceDoc {
    /// Service name.
    service_name: String,
    /// Instance id.
    instance_id: String,
    /// Semver version.
    version: String,
    /// Status.
    status: InstanceStatus,
    /// Last heartbeat (RFC 3339 UTC).
    #[schema(format = DateTime)]
    last_heartbeat: String,
    /// Sticky single-active group, or null.
    sticky_active_group: Option<String>,
    /// Free-form metadata.
    metadata: BTreeMap<String, serde_json::Value>,
    /// Process start (RFC 3339 UTC), when known.
    #[schema(format = DateTime, required = false)]
    started_at: Option<String>,
    /// Fencing epoch while ACTIVE leader of a group.
    #[schema(required = false)]
    epoch: Option<u64>,
    /// The status the record itself reports (`status` is the derived truth:
    /// the holder of a sticky group's election key is its one ACTIVE
    /// instance, a closed connection is UNHEALTHY).
    reported_status: InstanceStatus,
    /// Why `status` is what it is, when that needs saying.
    status_reason: Option<StatusReason>,
    /// What the instance's own health check said of its failure (at most
    /// 200 characters, no control characters): with `health_check`, and
    /// with `degraded` when the record's own reason is `health_check`;
    /// absent otherwise.
    #[schema(value_type = String, required = false, max_length = 200)]
    status_detail: Option<String>,
    /// Since when (RFC 3339 UTC): for `health_check`, `operator` and
    /// `degraded`, since when the instance says it has been unhealthy;
    /// otherwise since when the monitor has shown this status and reason.
    #[schema(format = DateTime)]
    status_since: String,
}

/// What `validate_service_name` accepts, as an OpenAPI pattern.
pub(crate) const SERVICE_NAME_PATTERN: &str = "^[a-z](?:[a-z0-9]|-(?!-)){1,62}[a-z0-9]$";
/// What `validate_instance_id` accepts, as an OpenAPI pattern.
pub(crate) const INSTANCE_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$";
/// A `window` query parameter (`90s`, `15m`, `1h`; empty for the default).
pub(crate) const WINDOW_PATTERN: &str = "^([1-9][0-9]{0,5}(s|m|h))?$";

/// The schema of a string query parameter with a pattern.
fn pattern_param(pattern: &str) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .pattern(Some(pattern))
        .into()
}

/// Schemas of string query parameters, one per pattern, for
/// `#[param(value_type = Option<...>, inline)]`: the attribute's `pattern`
/// takes only a string literal, so a pattern named once is put into the
/// document through a type. Only the schema comes from the type; the
/// description, example and `required` still come from the field.
macro_rules! pattern_params {
    ($($(#[$doc:meta])* $name:ident = $pattern:expr;)*) => {$(
        $(#[$doc])*
        pub(crate) struct $name;
        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                pattern_param($pattern)
            }
        }
        impl ToSchema for $name {}
    )*};
}

pattern_params! {
    /// A service name (`SERVICE_NAME_PATTERN`).
    ServiceNameParam = SERVICE_NAME_PATTERN;
    /// An instance id (`INSTANCE_ID_PATTERN`).
    InstanceIdParam = INSTANCE_ID_PATTERN;
    /// A window (`WINDOW_PATTERN`).
    WindowParam = WINDOW_PATTERN;
}

#[cfg(test)]
mod tests {
    use utoipa::openapi::{RefOr, path::Operation};

    /// The `/api` operations of the served document, by method and path.
    fn api_operations(spec: &utoipa::openapi::OpenApi) -> Vec<(String, &Operation)> {
        let mut found = Vec::new();
        for (path, item) in spec.paths.paths.iter() {
            if !path.starts_with("/api/") {
                continue;
            }
            let operations = [
                ("GET", &item.get),
                ("POST", &item.post),
                ("PUT", &item.put),
                ("PATCH", &item.patch),
                ("DELETE", &item.delete),
                ("HEAD", &item.head),
                ("OPTIONS", &item.options),
                ("TRACE", &item.trace),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    found.push((format!("{method} {path}"), operation));
                }
            }
        }
        found
    }

    /// Any `/api` operation answers 400 to a query parameter it does not
    /// take (`refuse_unknown_params`), so the document lists a 400 with
    /// the error envelope for every one, including those taking none.
    #[test]
    fn every_api_operation_lists_the_400_an_unknown_parameter_gets() {
        let spec = crate::openapi();
        let operations = api_operations(&spec);
        assert!(operations.len() > 20, "{} operations", operations.len());
        let mut missing = Vec::new();
        for (name, operation) in operations {
            let Some(RefOr::T(response)) = operation.responses.responses.get("400") else {
                missing.push(format!("{name}: no 400"));
                continue;
            };
            let body = response
                .content
                .get("application/json")
                .and_then(|content| content.schema.as_ref());
            match body {
                Some(RefOr::Ref(r)) if r.ref_location == "#/components/schemas/ErrorEnvelope" => {}
                _ => missing.push(format!("{name}: 400 without the ErrorEnvelope body")),
            }
            if !response.description.contains("nknown") {
                missing.push(format!(
                    "{name}: 400 {:?} does not say an unknown parameter gets it",
                    response.description
                ));
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// Any request but `/health` may meet a monitor still starting (503
    /// `NOT_READY`, with `Retry-After`), and any but the live stream's the
    /// request timeout (504), so every such operation lists them.
    #[test]
    fn every_operation_lists_the_503_and_504_of_starting_and_the_timeout() {
        let spec = serde_json::to_value(crate::openapi()).unwrap();
        let mut missing = Vec::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = &operation["responses"];
                let unavailable = responses["503"]["description"].as_str();
                match (path.as_str(), unavailable) {
                    ("/health", _) => {}
                    (_, Some(d)) if d.contains("starting") => {
                        if responses["503"]["headers"].get("Retry-After").is_none() {
                            missing.push(format!("{method} {path}: 503 without Retry-After"));
                        }
                    }
                    (_, d) => missing.push(format!("{method} {path}: 503 {d:?}")),
                }
                let timed_out = responses["504"]["description"].as_str();
                match (path.as_str(), timed_out) {
                    ("/api/stream", None) => {}
                    (_, Some(d)) if path != "/api/stream" && d.contains("--request-timeout") => {}
                    (_, d) => missing.push(format!("{method} {path}: 504 {d:?}")),
                }
            }
        }
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// Any request may meet the body limit (413) and the connection share
    /// (429), whatever its route, so every operation of the document, not
    /// only the `/api` ones, lists both; the 429 with `Retry-After`.
    #[test]
    fn every_operation_lists_the_413_and_429_any_request_may_get() {
        let spec = serde_json::to_value(crate::openapi()).unwrap();
        let mut missing = Vec::new();
        let mut operations = 0;
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                operations += 1;
                let responses = &operation["responses"];
                if responses.get("413").is_none() {
                    missing.push(format!("{method} {path}: no 413"));
                }
                let too_many = &responses["429"];
                let description = too_many["description"].as_str().unwrap_or_default();
                if !description.contains("share of connections") {
                    missing.push(format!("{method} {path}: 429 {description:?}"));
                }
                if too_many["headers"].get("Retry-After").is_none() {
                    missing.push(format!("{method} {path}: 429 without Retry-After"));
                }
            }
        }
        assert!(operations > 25, "{operations} operations");
        assert!(missing.is_empty(), "{missing:#?}");
    }

    /// Every operation that reads or writes the definitions store can
    /// answer 503 (it waits out a leader election only up to the
    /// request's deadline), and so can asking an instance for its config.
    #[test]
    fn the_operations_that_wait_on_nats_list_their_503() {
        let spec = crate::openapi();
        let waiting: Vec<_> = api_operations(&spec)
            .into_iter()
            .filter(|(name, _)| {
                // The list is served from the monitor's copy.
                let definitions = name.contains(" /api/services")
                    && name != "GET /api/services"
                    && !name.ends_with("/methods");
                definitions || name.ends_with("/config")
            })
            .collect();
        // create, get, put, patch, delete, revision, history; config.
        assert_eq!(
            waiting.len(),
            8,
            "{:?}",
            waiting.iter().map(|(n, _)| n).collect::<Vec<_>>()
        );
        let unlisted: Vec<&String> = waiting
            .iter()
            .filter(|(_, operation)| !operation.responses.responses.contains_key("503"))
            .map(|(name, _)| name)
            .collect();
        assert!(unlisted.is_empty(), "no 503 listed: {unlisted:#?}");
    }
}
