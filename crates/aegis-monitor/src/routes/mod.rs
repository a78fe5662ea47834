//! The HTTP surface: one module per route group, assembled by [`router`]
//! with the middleware every request passes through.
//!
//! | module | routes |
//! | --- | --- |
//! | [`services`] | `/api/services[/{name}[/revision, /history]]` |
//! | [`instances`] | `/api/instances[...]`, instance config and events |
//! | [`leadership`] | `/api/leadership/{service}` (failover timeline) |
//! | [`methods`] | `/api/services/{s}/methods` (request/reply JSON Schemas) |
//! | [`metrics`] | `/api/metrics`, `/api/instances/{s}/{id}/metrics` |
//! | [`dead_letters`] | `/api/dead-letters` |
//! | [`nats`] | `/api/nats` (the NATS cluster itself) |
//! | [`stream`] | `/api/stream` (SSE) |
//! | [`session`] | `/api/session` (browser sign-in) |
//! | [`system`] | `/health`, `/ready`, `/status`, `/metrics` |
//! | [`starting`] | `/health`, `/ready` and a 503 elsewhere, before the state exists |
//!
//! Plus `/api/openapi.json` and the Swagger UI at `/api/docs`, and the UI's
//! static files at `/` when a UI directory is configured.
//!
//! Middleware, outermost first: a tracing span per request (method and
//! route, never headers or query), the error envelope and its one log line,
//! request metrics, security headers, the 64 KiB body limit, the request
//! timeout (not on the SSE stream), authentication, and the refusal of
//! query parameters a route does not take (read from the OpenAPI document,
//! so what a route is documented to take is what it takes).

pub(crate) mod dead_letters;
pub(crate) mod instances;
pub(crate) mod leadership;
pub(crate) mod methods;
pub(crate) mod metrics;
pub(crate) mod nats;
pub(crate) mod services;
pub(crate) mod session;
pub(crate) mod starting;
pub(crate) mod stream;
pub(crate) mod system;

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
};
use tower_http::{
    catch_panic::CatchPanicLayer,
    limit::RequestBodyLimitLayer,
    timeout::TimeoutLayer,
    trace::{DefaultOnFailure, TraceLayer},
};
use tracing::Level;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_swagger_ui::SwaggerUi;

use crate::{
    auth, error,
    extract::{MAX_BODY_BYTES, QueryParams},
    openapi::{self, ApiDoc},
    state::AppState,
    telemetry, ui,
};

/// The routes that finish quickly (everything but the SSE stream).
fn bounded_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(services::router())
        .merge(instances::router())
        .merge(leadership::router())
        .merge(methods::router())
        .merge(metrics::router())
        .merge(dead_letters::router())
        .merge(nats::router())
        .merge(session::router())
        .merge(system::router())
}

/// The OpenAPI document of the whole API, as served at `/api/openapi.json`.
///
/// ```
/// let spec = aegis_monitor::openapi();
/// assert!(spec.paths.paths.contains_key("/api/services"));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut spec = bounded_routes().into_openapi();
    spec.merge(stream::router().into_openapi());
    openapi::finish(&mut spec);
    spec
}

/// The whole application for `state`: API, docs, system routes and UI.
///
/// Tests call it with `tower::ServiceExt::oneshot`; [`crate::serve_on`]
/// serves it on a socket.
pub fn router(state: AppState) -> Router {
    let timeout = state.config().request_timeout;
    let (bounded, mut spec) = bounded_routes().split_for_parts();
    let (streaming, stream_spec) = stream::router().split_for_parts();
    spec.merge(stream_spec);
    openapi::finish(&mut spec);
    let query_params = QueryParams::of(&spec);
    let bounded = bounded.layer(TimeoutLayer::with_status_code(
        StatusCode::GATEWAY_TIMEOUT,
        timeout,
    ));
    let app = bounded
        .merge(streaming)
        .merge(SwaggerUi::new("/api/docs").url("/api/openapi.json", spec))
        .fallback(ui::fallback)
        .layer(middleware::from_fn_with_state(
            query_params,
            crate::extract::refuse_unknown_params,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
    hardened(app).with_state(state)
}

/// What a request span names as its route when no route matches its path.
const UNMATCHED: &str = "<unmatched>";

/// The layers every answer passes through, whatever its route: a panic
/// caught (innermost, so its 500 passes all the others), the body limits,
/// the security headers, the request metrics, the error envelope and the
/// trace span.
fn hardened<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    // A handler that panics is answered (500) and logged, not a
    // connection dropped unanswered.
    app.layer(CatchPanicLayer::custom(error::panicked))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES))
        .layer(middleware::from_fn(crate::extract::refuse_oversized))
        .layer(middleware::from_fn(security_headers))
        .layer(middleware::from_fn(telemetry::record_http))
        .layer(middleware::from_fn(error::envelope_errors))
        .layer(
            TraceLayer::new_for_http()
                // The error middleware logs every failed answer once, at a
                // level fit for it; the trace layer's own ERROR line for a
                // 5xx would be a second.
                .on_failure(DefaultOnFailure::new().level(Level::DEBUG))
                .make_span_with(|request: &Request| {
                    // The route's template, never the path itself: a path
                    // may hold what a user pasted into it (a token), and
                    // one no route matches is not ours to log.
                    let route = request
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or(UNMATCHED, |p| p.as_str())
                        .to_owned();
                    tracing::info_span!(
                        "http",
                        method = %request.method(),
                        route = %route,
                        who = tracing::field::Empty,
                    )
                }),
        )
}

/// Headers every response carries; API responses are never cached.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if api && !headers.contains_key(header::CACHE_CONTROL) {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, routing::get};
    use tower::ServiceExt;

    use super::*;

    /// A handler's panic is answered like any other fault: 500 in the
    /// envelope, with the headers every answer carries.
    #[tokio::test]
    async fn a_panic_is_answered_with_every_layers_headers() {
        let app = hardened(Router::new().route(
            "/api/boom",
            get(|| async {
                panic!("index out of bounds");
                #[allow(unreachable_code)]
                ()
            }),
        ));
        let response = app
            .oneshot(Request::get("/api/boom").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers();
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
    }
}
