//! Authentication and authorization of `/api/*`.
//!
//! Two roles: `viewer` may read (GET, HEAD), `admin` may also write (POST,
//! PUT, PATCH, DELETE). A request proves its role with
//! `Authorization: Bearer <token>` or with the session cookie the UI gets
//! from `POST /api/session` ([`session`]). No or a wrong credential is 401
//! `UNAUTHORIZED`; a viewer writing is 403 `FORBIDDEN`.
//!
//! Tokens come from the configuration (admin and viewer token, a file of
//! hashed tokens — see [`tokens`]); only their SHA-256 digests are kept, and
//! they are compared in constant time. Tokens are never logged: the request
//! trace records method and path only, never headers.
//!
//! Signing in is limited per client (`client.rs`): the attempt over
//! `sign_in_per_minute` gets 429 `TOO_MANY_REQUESTS` with `Retry-After`.
//! Wrong tokens are limited per client as well, with the same setting: a
//! bad bearer token on any `/api` route, on `/status` (which tells a right
//! token from a wrong one) or when signing in uses one unit of the client's
//! budget; once it is used up, every bearer token from that client, right
//! or wrong, gets 429 with `Retry-After` before it is looked at, until the
//! budget refills (a unit every `60 / sign_in_per_minute` seconds, so for
//! as long as a guesser keeps on). Right tokens use nothing, so other
//! clients are unaffected. A session cookie is signed with the monitor's
//! key and cannot be guessed: it is neither counted nor refused, so a user
//! signed in from an address a guesser shares keeps working. Signing out
//! revokes the session server-side ([`session`]).
//!
//! With no token configured the monitor refuses to start unless
//! `insecure_dev` is set; then every request acts as `admin` under the name
//! `insecure-dev`, and the monitor warns loudly at start and in `/status`.

pub(crate) mod client;
pub mod session;
pub mod tokens;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, Method, header},
    middleware::Next,
    response::Response,
};
use chrono::Utc;
use serde::Serialize;
use utoipa::ToSchema;

pub use tokens::{TokenConfigError, hash_token};

use crate::{
    config::{CookieSecurity, MonitorConfig},
    error::{ApiError, ErrorCode},
    state::AppState,
};
use client::{FailureLimiter, ForwardingWarning, SignInLimiter};
use session::SessionSigner;
use tokens::{TokenEntry, TokenSet};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum Role {
    /// Reads only.
    Viewer = 0,
    /// Reads and writes.
    Admin = 1,
}

impl Role {
    /// `admin` or `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Self::Viewer),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }

    /// Whether this role may send `method`.
    pub fn may(self, method: &Method) -> bool {
        match self {
            Self::Admin => true,
            Self::Viewer => matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who made a request: the token's name (recorded in the audit trail) and
/// its role. Handlers find it in the request extensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Principal {
    /// `admin` / `viewer` for the configured tokens, the file entry's name
    /// otherwise, `insecure-dev` without authentication.
    pub name: String,
    /// The role.
    pub role: Role,
}

/// Below this many characters a configured admin or viewer token is
/// warned about.
const MIN_TOKEN_CHARS: usize = 16;

/// Below this many characters the session secret is warned about (what
/// `aegis up` and the Helm chart generate is longer).
const MIN_SESSION_SECRET_CHARS: usize = 32;

/// Why the monitor refuses to start with this authentication setup.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// No token configured and no `insecure_dev`.
    #[error(
        "no API token configured: set AEGIS_ADMIN_TOKEN (and optionally AEGIS_VIEWER_TOKEN) or AEGIS_TOKEN_FILE; to run WITHOUT authentication on a development machine pass --insecure-dev"
    )]
    NoTokens,
    /// A token source is unusable.
    #[error(transparent)]
    Token(#[from] TokenConfigError),
}

/// Checks credentials; built once from the configuration.
#[derive(Debug, Clone)]
pub(crate) struct Authenticator {
    tokens: TokenSet,
    insecure: bool,
    sessions: SessionSigner,
    cookies: CookieSecurity,
    trusted_proxies: Arc<[crate::config::TrustedProxy]>,
    sign_ins: Arc<SignInLimiter>,
    /// Wrong credentials per client (same quota as signing in).
    failures: Arc<FailureLimiter>,
    /// Said once: `X-Forwarded-For` from a peer that is not trusted.
    forwarding: Arc<ForwardingWarning>,
}

/// Why a presented credential was refused, and whether that counts as a
/// guess.
struct Refused {
    error: ApiError,
    /// False for a session cookie the monitor itself signed that has
    /// expired, been signed out, or lost its token: that is no guess.
    guess: bool,
}

impl Authenticator {
    /// Checks the authentication setup alone, as [`from_config`](Self::from_config)
    /// would refuse it: what the monitor does before any I/O.
    pub(crate) fn check(config: &MonitorConfig) -> Result<(), AuthConfigError> {
        Self::tokens(config).map(drop)
    }

    /// What is weak in the authentication setup, one line each, never a
    /// secret's value: a short admin or viewer token (online guessing), a
    /// short session secret (the key of the cookies' MAC: whoever holds one
    /// cookie, a viewer's included, may guess it offline and sign an admin
    /// cookie). [`crate::serve`] logs them once, after its check; they are
    /// not logged by [`check`](Self::check) or [`from_config`](Self::from_config),
    /// which a start runs several times.
    pub(crate) fn warnings(config: &MonitorConfig) -> Vec<String> {
        let mut warnings = Vec::new();
        for (role, token) in [
            (Role::Admin, &config.admin_token),
            (Role::Viewer, &config.viewer_token),
        ] {
            if token
                .as_ref()
                .is_some_and(|t| t.expose().chars().count() < MIN_TOKEN_CHARS)
            {
                warnings.push(format!(
                    "the {role} token is shorter than {MIN_TOKEN_CHARS} characters; use a long \
                     random token"
                ));
            }
        }
        if config
            .session_secret
            .as_ref()
            .is_some_and(|s| s.expose().chars().count() < MIN_SESSION_SECRET_CHARS)
        {
            warnings.push(format!(
                "the session secret is shorter than {MIN_SESSION_SECRET_CHARS} characters \
                 (AEGIS_SESSION_SECRET, --session-secret): it signs the session cookies, and \
                 whoever holds one cookie may guess a short one offline and sign an admin \
                 cookie; use a long random secret (`openssl rand -hex 32`)"
            ));
        }
        warnings
    }

    /// The configured tokens; none only with `insecure_dev`.
    fn tokens(config: &MonitorConfig) -> Result<TokenSet, AuthConfigError> {
        let mut tokens = TokenSet::default();
        if let Some(t) = &config.admin_token {
            tokens.add_plain(Role::Admin, t.expose())?;
        }
        if let Some(t) = &config.viewer_token {
            tokens.add_plain(Role::Viewer, t.expose())?;
        }
        if let Some(path) = &config.token_file {
            tokens.add_file(path)?;
        }
        if tokens.is_empty() && !config.insecure_dev {
            return Err(AuthConfigError::NoTokens);
        }
        Ok(tokens)
    }

    pub(crate) fn from_config(config: &MonitorConfig) -> Result<Self, AuthConfigError> {
        let tokens = Self::tokens(config)?;
        let insecure = tokens.is_empty();
        if config.insecure_dev && !insecure {
            tracing::warn!(
                "--insecure-dev ignored: tokens are configured, so authentication stays on"
            );
        }
        Ok(Self {
            tokens,
            insecure,
            sessions: SessionSigner::new(
                config.session_secret.as_ref().map(|s| s.expose()),
                config.session_ttl,
            ),
            cookies: config.secure_cookies,
            trusted_proxies: config.trusted_proxies.clone().into(),
            sign_ins: Arc::new(SignInLimiter::new(config.sign_in_per_minute)),
            failures: Arc::new(FailureLimiter::new(config.sign_in_per_minute)),
            forwarding: Arc::default(),
        })
    }

    /// The client behind `peer` and `headers`, as the limits count it.
    fn client(&self, peer: Option<SocketAddr>, headers: &HeaderMap) -> IpAddr {
        self.forwarding.check(peer, headers, &self.trusted_proxies);
        client::client_addr(peer, headers, &self.trusted_proxies)
    }

    /// 429 for a client whose budget for wrong credentials is used up.
    fn too_many_failures(client: IpAddr, wait: std::time::Duration) -> ApiError {
        tracing::warn!(%client, "wrong credentials over the limit");
        ApiError::new(
            ErrorCode::TooManyRequests,
            "too many wrong credentials from this address; try again later",
        )
        .with_retry_after(wait)
    }

    /// Counts one sign-in attempt from the client behind `peer` and
    /// `headers`.
    ///
    /// # Errors
    /// 429 `TOO_MANY_REQUESTS` with `Retry-After` when the client has used
    /// up its attempts for the minute, or its budget for wrong credentials.
    pub(crate) fn sign_in_attempt(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<(), ApiError> {
        let client = self.client(peer, headers);
        // Wrong tokens sent elsewhere use up signing in too, and the other
        // way round: one budget for guesses, wherever they are made.
        self.failures
            .take(client)
            .map_err(|wait| Self::too_many_failures(client, wait))?;
        self.failures.refund(client);
        self.sign_ins.attempt(client).map_err(|wait| {
            tracing::warn!(%client, "sign-in attempts over the limit");
            ApiError::new(
                ErrorCode::TooManyRequests,
                "too many sign-in attempts from this address; try again later",
            )
            .with_retry_after(wait)
        })
    }

    /// Forgets clients whose sign-in budget is full again.
    pub(crate) fn forget_idle_clients(&self) {
        self.sign_ins.forget_idle();
        self.failures.forget_idle();
    }

    /// Whether a session cookie sent in answer to `headers` is `Secure`.
    pub(crate) fn secure_cookie(&self, headers: &HeaderMap) -> bool {
        match self.cookies {
            CookieSecurity::Always => true,
            CookieSecurity::Never => false,
            CookieSecurity::Auto => client::came_over_https(headers),
        }
    }

    /// Signs out the session cookie in `headers`, if it has a valid one.
    pub(crate) fn sign_out(&self, headers: &HeaderMap) -> bool {
        session_cookie(headers)
            .is_some_and(|value| self.sessions.revoke(value, &self.tokens, Utc::now()))
    }

    /// Whether authentication is off (`insecure_dev` without tokens).
    pub(crate) fn is_insecure(&self) -> bool {
        self.insecure
    }

    pub(crate) fn sessions(&self) -> &SessionSigner {
        &self.sessions
    }

    /// The entry for a token presented to sign in, after
    /// [`sign_in_attempt`](Self::sign_in_attempt) let the client try; a
    /// wrong token uses one unit of the client's budget for wrong
    /// credentials.
    ///
    /// # Errors
    /// 401 when the token is not valid; 429 when the client's budget for
    /// wrong credentials is used up (a concurrent guess used the last unit).
    pub(crate) fn verify_sign_in_token(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
        token: &str,
    ) -> Result<&TokenEntry, ApiError> {
        let client = client::client_addr(peer, headers, &self.trusted_proxies);
        self.failures
            .take(client)
            .map_err(|wait| Self::too_many_failures(client, wait))?;
        let entry = self.tokens.verify(token);
        match entry {
            Some(entry) => {
                self.failures.refund(client);
                Ok(entry)
            }
            None => Err(ApiError::new(ErrorCode::Unauthorized, "invalid token")),
        }
    }

    /// Who sent these headers, from the client behind `peer`, counting a
    /// wrong credential against the client's budget.
    ///
    /// # Errors
    /// 401 when there is no credential or it is not valid; 429
    /// `TOO_MANY_REQUESTS` with `Retry-After`, before the credential is
    /// looked at, when the client has used up its budget for wrong
    /// credentials.
    pub(crate) fn authenticate_client(
        &self,
        peer: Option<SocketAddr>,
        headers: &HeaderMap,
    ) -> Result<Principal, ApiError> {
        // A session cookie is signed with the monitor's key: it cannot be
        // guessed, so it neither counts against the budget nor is refused
        // by it (a user signed in from an address a guesser shares keeps
        // working). Only a bearer token is something to guess.
        if self.insecure || !headers.contains_key(header::AUTHORIZATION) {
            return self.authenticate(headers);
        }
        let client = self.client(peer, headers);
        self.failures
            .take(client)
            .map_err(|wait| Self::too_many_failures(client, wait))?;
        match self.check_credential(headers) {
            Ok(principal) => {
                self.failures.refund(client);
                Ok(principal)
            }
            Err(Refused { error, guess }) => {
                if !guess {
                    self.failures.refund(client);
                }
                Err(error)
            }
        }
    }

    /// Who sent these headers, without counting a wrong credential: only
    /// for headers already let through by [`authenticate_client`]
    /// (rechecking an open stream) or whose answer does not depend on the
    /// result beyond what the middleware limited (`/status`). Anything
    /// that tells a caller whether its credential is right must go
    /// through [`authenticate_client`].
    ///
    /// [`authenticate_client`]: Self::authenticate_client
    ///
    /// # Errors
    /// 401 when there is no credential or it is not valid.
    pub(crate) fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        self.check_credential(headers).map_err(|r| r.error)
    }

    /// Checks the credential in `headers`.
    fn check_credential(&self, headers: &HeaderMap) -> Result<Principal, Refused> {
        let refused = |error| Refused { error, guess: true };
        if self.insecure {
            return Ok(Principal {
                name: "insecure-dev".to_owned(),
                role: Role::Admin,
            });
        }
        if let Some(value) = headers.get(header::AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| {
                    let (scheme, token) = v.split_once(' ')?;
                    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                })
                .ok_or_else(|| {
                    refused(ApiError::new(
                        ErrorCode::Unauthorized,
                        "the Authorization header must be `Bearer <token>`",
                    ))
                })?;
            return self
                .tokens
                .verify(token)
                .map(|e| e.principal.clone())
                .ok_or_else(|| refused(ApiError::new(ErrorCode::Unauthorized, "invalid token")));
        }
        if let Some(cookie) = session_cookie(headers) {
            return self
                .sessions
                .verify(cookie, &self.tokens, Utc::now())
                .ok_or_else(|| Refused {
                    error: ApiError::new(
                        ErrorCode::Unauthorized,
                        "the session has expired or is not valid; sign in again",
                    ),
                    // Never asked about: a cookie is not counted.
                    guess: false,
                });
        }
        Err(Refused {
            error: ApiError::new(
                ErrorCode::Unauthorized,
                "authentication required: send `Authorization: Bearer <token>`",
            ),
            guess: false,
        })
    }
}

/// The session cookie's value among `headers`' cookies.
fn session_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(session::cookie_value)
}

/// Whether a request needs credentials: everything under `/api` except the
/// API description (`/api/openapi.json`, `/api/docs`) and signing in or out
/// (`POST`/`DELETE /api/session`). Unknown `/api` paths need them too (a
/// 401, not a 404). That hides no route: the API description lists them
/// all for anyone, and a 401 for a method a route does not take keeps
/// axum's `Allow` header.
pub(crate) fn needs_auth(method: &Method, path: &str) -> bool {
    let api = path == "/api" || path.starts_with("/api/");
    if !api {
        return false;
    }
    let docs = path == "/api/openapi.json" || path == "/api/docs" || path.starts_with("/api/docs/");
    let session = path == "/api/session" && matches!(*method, Method::POST | Method::DELETE);
    !(docs || session)
}

/// Middleware: for routes that [`needs_auth`], 401 without valid
/// credentials and 403 for a write by a viewer; puts the [`Principal`] into
/// the request extensions. On those routes and on `/status` (whose answer
/// shows whether a credential was accepted), a client that has used up its
/// budget for wrong credentials gets 429 before its credential is checked,
/// and a wrong credential uses one unit of it.
pub(crate) async fn require_auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(p)| *p);
    if request.uri().path() == "/status" {
        // Only the limit applies here: without a valid credential /status
        // still answers, showing less.
        if let Err(e) = state.auth().authenticate_client(peer, request.headers())
            && e.code() == ErrorCode::TooManyRequests
        {
            return Err(e);
        }
        return Ok(next.run(request).await);
    }
    if !needs_auth(request.method(), request.uri().path()) {
        return Ok(next.run(request).await);
    }
    let principal = state.auth().authenticate_client(peer, request.headers())?;
    if !principal.role.may(request.method()) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "the {} role may only read; writes need the admin role",
                principal.role
            ),
        )
        .with_details(serde_json::json!({ "role": principal.role.as_str() })));
    }
    tracing::Span::current().record("who", principal.name.as_str());
    request.extensions_mut().insert(principal);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_sdk::Secret;
    use axum::http::HeaderValue;

    fn config() -> MonitorConfig {
        MonitorConfig {
            admin_token: Some(Secret::new("admin-token-0123456789")),
            viewer_token: Some(Secret::new("viewer-token-0123456789")),
            ..Default::default()
        }
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn refuses_to_start_without_tokens() {
        assert!(matches!(
            Authenticator::from_config(&MonitorConfig::default()),
            Err(AuthConfigError::NoTokens)
        ));
        let dev = Authenticator::from_config(&MonitorConfig {
            insecure_dev: true,
            ..Default::default()
        })
        .unwrap();
        assert!(dev.is_insecure());
        assert_eq!(
            dev.authenticate(&HeaderMap::new()).unwrap().role,
            Role::Admin
        );
        // insecure_dev does not switch authentication off when tokens exist.
        let both = Authenticator::from_config(&MonitorConfig {
            insecure_dev: true,
            ..config()
        })
        .unwrap();
        assert!(!both.is_insecure());
        assert!(both.authenticate(&HeaderMap::new()).is_err());
    }

    #[test]
    fn bearer_tokens_map_to_roles() {
        let a = Authenticator::from_config(&config()).unwrap();
        let p = a
            .authenticate(&headers("Bearer admin-token-0123456789"))
            .unwrap();
        assert_eq!(p.role, Role::Admin);
        let p = a
            .authenticate(&headers("bearer viewer-token-0123456789"))
            .unwrap();
        assert_eq!(p.role, Role::Viewer);
        for bad in [
            "Bearer nope",
            "Basic abc",
            "Bearer",
            "admin-token-0123456789",
        ] {
            let e = a.authenticate(&headers(bad)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unauthorized, "{bad}");
            assert!(!e.message().contains("admin-token"));
        }
        assert_eq!(
            a.authenticate(&HeaderMap::new()).unwrap_err().code(),
            ErrorCode::Unauthorized
        );
    }

    #[test]
    fn which_paths_need_auth() {
        for (m, p) in [
            (Method::GET, "/api/services"),
            (Method::GET, "/api/nope"),
            (Method::GET, "/api"),
            (Method::GET, "/api/session"),
            (Method::GET, "/api/stream"),
        ] {
            assert!(needs_auth(&m, p), "{m} {p}");
        }
        for (m, p) in [
            (Method::GET, "/health"),
            (Method::GET, "/metrics"),
            (Method::GET, "/"),
            (Method::GET, "/apis"),
            (Method::GET, "/api/openapi.json"),
            (Method::GET, "/api/docs/"),
            (Method::POST, "/api/session"),
            (Method::DELETE, "/api/session"),
        ] {
            assert!(!needs_auth(&m, p), "{m} {p}");
        }
    }

    #[test]
    fn roles_and_methods() {
        assert!(Role::Viewer.may(&Method::GET));
        assert!(!Role::Viewer.may(&Method::POST));
        assert!(!Role::Viewer.may(&Method::DELETE));
        assert!(Role::Admin.may(&Method::PUT));
    }
}
