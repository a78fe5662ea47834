//! Serving the monitor UI's static export, and the fallback for every path
//! no route matched.
//!
//! Unknown `/api/*` paths are 404 `NOT_FOUND` in the error envelope. Other
//! paths are files of the UI directory when one is configured: `/services`
//! is `services.html` when that exists (how a Next.js static export names
//! its pages), a directory is its `index.html`, and a missing page is the
//! export's `404.html` (status 404) or, for a single-page build without
//! one, `index.html`. Without a UI directory every other path is 404.
//!
//! Pages with a dynamic segment are exported once, for the placeholder
//! `_` (`services/_.html`, its payload `services/_.txt` and the segment
//! files under `services/_/`); any other value of that segment is served
//! the placeholder's files, so `/services/order-1` survives a reload and a
//! client-side navigation finds its payload. The page reads the real value
//! from the address.

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
            // Not the path: the error is logged, and a path may hold what
            // a user pasted into it by mistake (a token).
            format!("no route for {} at this path", request.method()),
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
    if let Some(rewritten) =
        placeholder_page(dir, request.uri()).or_else(|| html_page(dir, request.uri()))
    {
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

/// The placeholder segment of dynamic routes in the export.
const PLACEHOLDER: &str = "_";

/// `/services/order-1[.txt|/file]` → `/services/_[.txt|/file]` when the
/// requested file does not exist but the placeholder's does: one rule for
/// every dynamic segment directly under a top-level page folder.
fn placeholder_page(dir: &Path, uri: &Uri) -> Option<Uri> {
    let path = uri.path().trim_start_matches('/');
    let (section, rest) = path.split_once('/')?;
    if section.is_empty() || rest.is_empty() || !safe(section) {
        return None;
    }
    let (segment, tail) = match rest.split_once('/') {
        Some((segment, tail)) => (segment, Some(tail)),
        None => (rest, None),
    };
    let (value, suffix) = match (tail, segment.strip_suffix(".txt")) {
        (None, Some(stem)) => (stem, ".txt"),
        (None, None) => (segment, ".html"),
        (Some(_), _) => (segment, ""),
    };
    if value == PLACEHOLDER || value.is_empty() || !safe(value) {
        return None;
    }
    let exists = |relative: &str| {
        let mut file = PathBuf::from(dir);
        for component in Path::new(relative).components() {
            match component {
                Component::Normal(part) => file.push(part),
                _ => return false,
            }
        }
        file.is_file()
    };
    if exists(path) || !exists(&format!("{section}/{PLACEHOLDER}.html")) {
        return None;
    }
    let target = match tail {
        Some(tail) => format!("/{section}/{PLACEHOLDER}/{tail}"),
        None => format!("/{section}/{PLACEHOLDER}{suffix}"),
    };
    if !exists(target.trim_start_matches('/')) {
        return None;
    }
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    format!("{target}{query}").parse().ok()
}

/// A path segment that names a folder inside the UI directory.
fn safe(segment: &str) -> bool {
    !matches!(segment, "." | "..") && !segment.contains('\\')
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

    #[test]
    fn dynamic_segments_are_served_the_placeholder_pages() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("services/_")).unwrap();
        std::fs::write(dir.path().join("services/_.html"), "x").unwrap();
        std::fs::write(dir.path().join("services/_.txt"), "x").unwrap();
        std::fs::write(dir.path().join("services/_/__next._tree.txt"), "x").unwrap();
        std::fs::write(dir.path().join("index.html"), "x").unwrap();
        let uri = |s: &str| s.parse::<Uri>().unwrap();
        let page = |s: &str| placeholder_page(dir.path(), &uri(s)).map(|u| u.to_string());
        assert_eq!(
            page("/services/order-1").as_deref(),
            Some("/services/_.html")
        );
        assert_eq!(page("/services/order-1/").as_deref(), None);
        assert_eq!(
            page("/services/order-1?x=1").as_deref(),
            Some("/services/_.html?x=1")
        );
        assert_eq!(
            page("/services/order-1.txt").as_deref(),
            Some("/services/_.txt")
        );
        assert_eq!(
            page("/services/order-1/__next._tree.txt").as_deref(),
            Some("/services/_/__next._tree.txt")
        );
        // Existing files, other folders, the placeholder itself and escapes stay as they are.
        assert_eq!(page("/services/_.html"), None);
        assert_eq!(page("/services/_"), None);
        assert_eq!(page("/manage/x"), None);
        assert_eq!(page("/services/order-1/missing.txt"), None);
        assert_eq!(page("/services/../index.html"), None);
        assert_eq!(page("/../services/x"), None);
    }
}
