//! `/api/session`: the browser sign-in. `POST` exchanges a token for an
//! `HttpOnly`, `SameSite=Strict` session cookie; `GET` says who the caller
//! is; `DELETE` signs out. `POST` and `DELETE` need no credentials (they are
//! the way in and out); `GET` does, like every other `/api/*` route.
//!
//! Sign-in attempts are limited per client (429 with `Retry-After` over
//! the limit), counted before the token is checked so that a right guess
//! and a wrong one look the same once the limit is reached. A wrong token
//! also uses the client's budget for wrong credentials, which bearer tokens
//! and session cookies on every other route share. Signing out
//! revokes the cookie on the server, so a copy of it stops working too.
//! The cookie is `Secure` as `secure_cookies` decides.

use std::net::SocketAddr;

use axum::{
    Extension, Json,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::{Principal, Role},
    error::{ApiError, ErrorEnvelope},
    extract::ApiJson,
    state::AppState,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(whoami, sign_in, sign_out))
}

/// The sign-in body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SignIn {
    /// An admin or viewer token.
    #[schema(min_length = 1)]
    token: String,
}

/// Who the caller is.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SessionInfo {
    /// The token's name.
    name: String,
    /// Its role.
    role: Role,
    /// When the session cookie expires (sign-in only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    #[serde(serialize_with = "aegis_contracts::models::rfc3339::option::serialize")]
    expires_at: Option<DateTime<Utc>>,
}

/// Who the caller is (token or session).
#[utoipa::path(
    get, path = "/api/session", tag = "session",
    responses(
        (status = 200, description = "The caller", body = SessionInfo),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
    )
)]
async fn whoami(Extension(who): Extension<Principal>) -> Json<SessionInfo> {
    Json(SessionInfo {
        name: who.name,
        role: who.role,
        expires_at: None,
    })
}

/// Exchanges a token for a session cookie (`aegis_session`, HttpOnly,
/// SameSite=Strict).
#[utoipa::path(
    post, path = "/api/session", tag = "session",
    security(()),
    request_body = SignIn,
    responses(
        (status = 200, description = "Signed in; the cookie is set", body = SessionInfo,
            headers(("Set-Cookie" = String, description = "The session cookie"))),
        (status = 400, description = "Malformed JSON", body = ErrorEnvelope),
        (status = 401, description = "Invalid token", body = ErrorEnvelope),
        (status = 413, description = "Body over 64 KiB", body = ErrorEnvelope),
        (status = 415, description = "Not JSON", body = ErrorEnvelope),
        (status = 422, description = "VALIDATION_ERROR", body = ErrorEnvelope),
        (status = 429, description = "TOO_MANY_REQUESTS: this client's sign-in attempts, or its budget for wrong tokens, are used up for now",
            body = ErrorEnvelope,
            headers(("Retry-After" = u64, description = "Seconds until the next attempt is allowed"))),
    )
)]
async fn sign_in(
    State(state): State<AppState>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    request_headers: HeaderMap,
    ApiJson(body): ApiJson<SignIn>,
) -> Result<Response, ApiError> {
    let auth = state.auth();
    let peer = peer.map(|Extension(ConnectInfo(p))| p);
    auth.sign_in_attempt(peer, &request_headers)?;
    if auth.is_insecure() {
        return Ok(Json(SessionInfo {
            name: "insecure-dev".to_owned(),
            role: Role::Admin,
            expires_at: None,
        })
        .into_response());
    }
    let entry = auth.verify_sign_in_token(peer, &request_headers, &body.token)?;
    let (value, expires) = auth.sessions().issue(entry, Utc::now());
    let mut headers = HeaderMap::new();
    let secure = auth.secure_cookie(&request_headers);
    if let Ok(cookie) = HeaderValue::from_str(&auth.sessions().set_cookie(&value, secure)) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    let info = SessionInfo {
        name: entry.principal.name.clone(),
        role: entry.principal.role,
        expires_at: Some(expires),
    };
    Ok((headers, Json(info)).into_response())
}

/// Signs out: revokes the session cookie on the server (a copy of it is
/// refused from now on) and clears it in the browser.
#[utoipa::path(
    delete, path = "/api/session", tag = "session",
    security(()),
    responses((status = 204, description = "Signed out; the session is revoked and the cookie cleared"))
)]
async fn sign_out(State(state): State<AppState>, request_headers: HeaderMap) -> Response {
    let auth = state.auth();
    auth.sign_out(&request_headers);
    let secure = auth.secure_cookie(&request_headers);
    let mut headers = HeaderMap::new();
    if let Ok(cookie) = HeaderValue::from_str(&auth.sessions().clear_cookie(secure)) {
        headers.insert(header::SET_COOKIE, cookie);
    }
    (StatusCode::NO_CONTENT, headers).into_response()
}
