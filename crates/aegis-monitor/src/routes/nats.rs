//! `GET /api/nats`: the NATS cluster itself — which servers are up, whether
//! the JetStream API answers, which streams have a leader — as the
//! monitor's background check last saw it (`nats_health/`, refreshed every
//! second). A request reads memory; it never asks NATS.

use axum::{Json, extract::State};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ErrorEnvelope, nats_health::NatsPicture, state::AppState};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(nats_picture))
}

/// The NATS cluster as last checked (every second): servers up or down,
/// whether the JetStream API answers, each stream's leader (null while it
/// elects one). Any replica of the monitor answers from its own check.
#[utoipa::path(
    get, path = "/api/nats", tag = "nats",
    responses(
        (status = 200, description = "The latest picture", body = NatsPicture),
        (status = 400, description = "Unknown parameter", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn nats_picture(State(state): State<AppState>) -> Json<NatsPicture> {
    Json(state.nats().current())
}
