//! Dead letters: the messages event subscriptions and command workers gave
//! up on, newest first, read from the `DEAD_LETTER` stream (so any replica
//! answers the same). See `aegis_sdk::dead_letter` for how they get there.

use aegis_contracts::DeadLetter;
use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ErrorEnvelope},
    extract::ApiQuery,
    state::AppState,
};

/// Dead letters one answer holds by default.
const DEFAULT_LIMIT: usize = 100;
// `ListQuery` documents the most one answer holds (its `limit`'s
// maximum, which `ApiQuery` enforces): the SDK's.
const _: () = assert!(aegis_sdk::dead_letter::MAX_RECENT == 1000);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_dead_letters))
}

/// Query of the list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// How many of the newest to return (1–1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// A message given up on (documentation mirror of the contract's
/// `DeadLetter`).
#[derive(ToSchema)]
#[schema(as = DeadLetter)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub(crate) struct DeadLetterDoc {
    /// Its sequence number in `DEAD_LETTER`.
    id: u64,
    /// When it was given up on (RFC 3339 UTC).
    #[schema(format = DateTime)]
    dead_at: String,
    /// Why: the handler failed on its last allowed delivery, the message can
    /// never be handled, or its deliveries ran out with nobody deciding (the
    /// handling process crashed each time).
    reason: DeadLetterReasonDoc,
    /// The stream the original lives in (`EVENTS`, `COMMANDS`).
    #[schema(example = "EVENTS")]
    stream: String,
    /// The durable consumer that gave up on it.
    #[schema(example = "risk-service_order_filled")]
    consumer: String,
    /// The original's sequence number in its stream.
    stream_sequence: u64,
    /// How many times it was delivered.
    deliveries: u64,
    /// The subject it was published on, when known.
    subject: Option<String>,
    /// The handler's last error, when there was one.
    error: Option<String>,
    /// The original payload: JSON when it is JSON, else its text; null when
    /// its stream no longer holds it.
    payload: Option<serde_json::Value>,
}

/// Why a message became a dead letter.
#[derive(ToSchema)]
#[schema(as = DeadLetterReason)]
#[allow(dead_code)]
pub(crate) enum DeadLetterReasonDoc {
    /// The handler failed (or panicked) on the last allowed delivery.
    #[schema(rename = "handler_failed")]
    HandlerFailed,
    /// The payload or subject is malformed; it can never be handled.
    #[schema(rename = "undecodable")]
    Undecodable,
    /// Deliveries ran out with nobody deciding.
    #[schema(rename = "max_deliveries")]
    MaxDeliveries,
}

/// The newest dead letters, newest first: events and commands their
/// subscribers or workers gave up on, with the original payload while its
/// stream still holds it. An empty list when nothing was ever given up on.
#[utoipa::path(
    get, path = "/api/dead-letters", tag = "dead-letters",
    params(ListQuery),
    responses(
        (status = 200, description = "Newest first", body = [DeadLetterDoc]),
        (status = 400, description = "Bad limit or unknown parameter", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the stream DEAD_LETTER cannot be read (NATS unreachable, or the stream has no leader); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn list_dead_letters(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<Vec<DeadLetter>>, ApiError> {
    // In its documented range: `ApiQuery` holds it there.
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    let mut list = aegis_sdk::dead_letter::recent(state.conn().jetstream(), limit)
        .await
        .map_err(|e| ApiError::stream_unavailable("the dead letters", "DEAD_LETTER", &e))?;
    list.reverse();
    Ok(Json(list))
}
