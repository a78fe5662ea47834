//! Serving the monitor UI's static export, and the fallback for every path
//! no route matched.
//!
//! Unknown `/api/*` paths are 404 `NOT_FOUND` in the error envelope. Other
//! paths are files of the UI directory when one is configured: `/services`
//! is `services.html` when that exists (how a Next.js static export names
//! its pages), a directory is its `index.html`, and a missing page is the
//! export's `404.html` (status 404) or, for a single-page build without
//! one, `index.html`. Without a UI directory every other path is 404.

use std::path::{Component, Path, PathBuf};

use axum::{
    extract::{Request, State},
    http::{Method, Uri},
    response::{IntoResponse, Response},
};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};

use crate::{
    error::{ApiError, ErrorCode},
    state::AppState,
};

/// The router's fallback.
pub(crate) async fn fallback(State(state): State<AppState>, request: Request) -> Response {
    let path = request.uri().path();
    let api = path == "/api" || path.starts_with("/api/");
    match (&state.config().ui_dir, api) {
        (Some(dir), false) => serve(dir, request).await,
        _ => ApiError::new(
            ErrorCode::NotFound,
            format!("no route for {} {}", request.method(), request.uri().path()),
        )
        .into_response(),
    }
}

async fn serve(dir: &Path, mut request: Request) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return ApiError::new(
            ErrorCode::MethodNotAllowed,
            "the UI only answers GET and HEAD",
        )
        .into_response();
    }
    if let Some(rewritten) = html_page(dir, request.uri()) {
        *request.uri_mut() = rewritten;
    }
    let not_found = dir.join("404.html");
    let service = ServeDir::new(dir).append_index_html_on_directories(true);
    let result = if not_found.is_file() {
        service
            .not_found_service(ServeFile::new(not_found))
            .oneshot(request)
            .await
    } else {
        service
            .fallback(ServeFile::new(dir.join("index.html")))
            .oneshot(request)
            .await
    };
    match result {
        Ok(response) => response.into_response(),
        Err(e) => ApiError::internal("serving a UI file", e).into_response(),
    }
}

/// `/a/b` → `/a/b.html` when that file exists and the path has no extension.
fn html_page(dir: &Path, uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    let trimmed = path.trim_matches('/');
    if trimmed.is_empty() || Path::new(trimmed).extension().is_some() {
        return None;
    }
    let mut file = PathBuf::from(dir);
    for component in Path::new(trimmed).components() {
        match component {
            Component::Normal(part) => file.push(part),
            // `..`, roots and prefixes never leave the UI directory.
            _ => return None,
        }
    }
    file.set_extension("html");
    if !file.is_file() {
        return None;
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("/{trimmed}.html{query}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_map_to_html_files_inside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("services.html"), "x").unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/b.html"), "x").unwrap();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(
            html_page(dir.path(), &uri("/services?x=1")).unwrap(),
            "/services.html?x=1"
        );
        assert_eq!(html_page(dir.path(), &uri("/a/b/")).unwrap(), "/a/b.html");
        assert!(html_page(dir.path(), &uri("/missing")).is_none());
        assert!(html_page(dir.path(), &uri("/services.html")).is_none());
        assert!(html_page(dir.path(), &uri("/")).is_none());
        assert!(html_page(dir.path(), &uri("/../services")).is_none());
    }
}
