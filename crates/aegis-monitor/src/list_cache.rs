//! The instance lists as bytes built once per change, not per request:
//! `GET /api/instances` and `GET /api/instances/{service}` serve JSON that
//! was serialized when the fleet view last changed (lazily, by the first
//! request after the change; the requests that arrive meanwhile wait for
//! that one build instead of each building their own), gzip-compressed once
//! on first demand, with a strong `ETag` so an unchanged list costs a 304.
//!
//! When an entry is stale is decided by the fleet's [`Versions`]: a visible
//! change (a status, a reason, metadata …) rebuilds it on the next request;
//! changes of `lastHeartbeat` alone (every record write moves it, thousands
//! a second in a large fleet) rebuild it at most every
//! [`HEARTBEAT_STALENESS`]. While requests keep coming that happens in the
//! background, started once the body is half that old, so nobody waits for
//! the serialization; the first request after a quiet spell finds a body
//! older than the bound and waits for a fresh one instead (serving the old
//! one while rebuilding behind would show heartbeats as old as the spell).
//! A list may so show a `lastHeartbeat` at most that much older than the
//! newest record write; everything else in it is current.
//! Heartbeat ages are kept true by the SSE digest anyway.
//!
//! Lists built per request (the metrics, which change every second) are
//! not kept, but are sent gzip-compressed the same way
//! ([`respond_built`]).
//!
//! The `ETag` is `"{nonce}-{version}"`: the per-process nonce keeps two
//! monitor replicas (or a restarted one) from ever sharing a tag for
//! different bodies; the version is the fleet's change number the body is
//! exact at. The gzip body has its own tag (`…-gz`), as a strong tag names
//! one representation.

use std::{
    collections::HashMap,
    io::Write,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;

use crate::{
    error::ApiError,
    fleet::{InstanceView, Versions},
};

/// How long a list may lag behind record writes that moved nothing but
/// `lastHeartbeat`.
pub(crate) const HEARTBEAT_STALENESS: Duration = Duration::from_secs(1);
/// Bodies from this size on are sent gzip-compressed to clients that
/// accept it (smaller ones gain too little for the work).
pub(crate) const GZIP_FROM: usize = 16 * 1024;

/// One cached list.
#[derive(Debug, Default)]
struct Slot {
    /// Held while building after a visible change, so the requests that
    /// arrive meanwhile wait for that build instead of each serializing.
    entry: tokio::sync::Mutex<Option<Arc<Cached>>>,
    /// A background rebuild (heartbeats only) is under way.
    refreshing: AtomicBool,
}

/// The cached lists of one monitor process.
#[derive(Debug)]
pub(crate) struct ListCache {
    nonce: u64,
    staleness: Duration,
    full: Arc<Slot>,
    /// Per service with instances; entries of services that left are
    /// dropped on their next request.
    services: Mutex<HashMap<String, Arc<Slot>>>,
}

/// One list, serialized at `versions`.
#[derive(Debug)]
pub(crate) struct Cached {
    versions: Versions,
    built_at: Instant,
    etag: String,
    json: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Cached {
    /// Whether this entry may answer for a view now at `now`.
    fn serves(&self, now: Versions, max_staleness: Duration) -> bool {
        self.versions.any >= now.any
            || (self.versions.visible >= now.visible && self.built_at.elapsed() < max_staleness)
    }

    /// The answer to a request with `headers`: the body (gzip when accepted
    /// and worth it), or 304 when the client holds it.
    pub(crate) fn respond(&self, headers: &HeaderMap) -> Response {
        respond(headers, &self.etag, &self.json, || {
            self.gzip.get_or_init(|| gzip(&self.json)).clone()
        })
    }

    #[cfg(test)]
    fn versions(&self) -> Versions {
        self.versions
    }
}

impl ListCache {
    /// An empty cache with a fresh nonce.
    pub(crate) fn new() -> Self {
        Self {
            nonce: rand::random(),
            staleness: HEARTBEAT_STALENESS,
            full: Arc::default(),
            services: Mutex::default(),
        }
    }

    /// A strong `ETag` value (quoted) for a body exact at `version`, with
    /// `variant` naming what distinguishes it from other lists at the same
    /// version (empty for the plain lists).
    pub(crate) fn etag(&self, version: u64, variant: &str) -> String {
        if variant.is_empty() {
            format!("\"{:016x}-{version}\"", self.nonce)
        } else {
            format!("\"{:016x}-{version}-{variant}\"", self.nonce)
        }
    }

    /// The full list: `current` gives the view's versions now, `build` reads
    /// the instances with the versions they are exact at.
    pub(crate) async fn full(
        &self,
        current: impl FnOnce() -> Versions,
        build: impl FnOnce() -> (Versions, Vec<InstanceView>),
    ) -> Result<Arc<Cached>, serde_json::Error> {
        self.get_or_build(&self.full, current, build).await
    }

    /// One service's list; `current` gives its versions now, `None` when
    /// the service has no instance (then nothing is cached and the caller
    /// answers `[]` itself).
    pub(crate) async fn service(
        &self,
        service: &str,
        current: impl Fn() -> Option<Versions>,
        build: impl FnOnce() -> (Versions, Vec<InstanceView>),
    ) -> Result<Option<Arc<Cached>>, serde_json::Error> {
        let slot = {
            let mut services = self.services.lock().unwrap_or_else(|e| e.into_inner());
            if current().is_none() {
                services.remove(service);
                return Ok(None);
            }
            services.entry(service.to_owned()).or_default().clone()
        };
        let Some(now) = current() else {
            return Ok(None);
        };
        self.get_or_build(&slot, || now, build).await.map(Some)
    }

    async fn get_or_build(
        &self,
        slot: &Arc<Slot>,
        current: impl FnOnce() -> Versions,
        build: impl FnOnce() -> (Versions, Vec<InstanceView>),
    ) -> Result<Arc<Cached>, serde_json::Error> {
        let mut entry = slot.entry.lock().await;
        let now = current();
        if let Some(cached) = entry.as_ref()
            && cached.serves(now, self.staleness)
        {
            // Only `lastHeartbeat`s moved, if anything, and within the
            // bound. Past half of it one request starts a rebuild in the
            // background: while requests keep coming the body is renewed
            // before it leaves the bound, and none of them waits for it.
            let age = cached.built_at.elapsed();
            let behind = cached.versions.any < now.any;
            if behind && age >= self.staleness / 2 && !slot.refreshing.swap(true, Ordering::SeqCst)
            {
                let (versions, instances) = build();
                let (slot, etag) = (slot.clone(), self.etag(versions.any, ""));
                let served = cached.clone();
                drop(entry);
                tokio::task::spawn_blocking(move || {
                    match serialize(versions, etag, &instances) {
                        Ok(fresh) => {
                            let mut entry = slot.entry.blocking_lock();
                            if entry.as_ref().is_none_or(|c| c.versions.any < versions.any) {
                                *entry = Some(Arc::new(fresh));
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %aegis_sdk::startup::Causes(&e), "cannot serialize the instance list");
                        }
                    }
                    slot.refreshing.store(false, Ordering::SeqCst);
                });
                return Ok(served);
            }
            return Ok(cached.clone());
        }
        // A visible change, or heartbeats that moved longer ago than the
        // bound (the first request after a quiet spell: the body may be
        // minutes old, and serving it while rebuilding behind would break
        // the bound by that much). Built here while the lock keeps the
        // requests arriving meanwhile waiting for this build.
        let (versions, instances) = build();
        let cached = Arc::new(serialize(
            versions,
            self.etag(versions.any, ""),
            &instances,
        )?);
        *entry = Some(cached.clone());
        Ok(cached)
    }
}

fn serialize(
    versions: Versions,
    etag: String,
    instances: &[InstanceView],
) -> Result<Cached, serde_json::Error> {
    Ok(Cached {
        versions,
        built_at: Instant::now(),
        etag,
        json: Bytes::from(serde_json::to_vec(instances)?),
        gzip: OnceLock::new(),
    })
}

/// Answers with `json` under `etag`: 304 when `If-None-Match` names it; the
/// gzip body from `gzipped` (tagged `…-gz`) when the client accepts gzip and
/// the body is large enough.
pub(crate) fn respond(
    headers: &HeaderMap,
    etag: &str,
    json: &Bytes,
    gzipped: impl FnOnce() -> Bytes,
) -> Response {
    let compress = json.len() >= GZIP_FROM && accepts_gzip(headers);
    let tag = if compress {
        format!("{}-gz\"", etag.trim_end_matches('"'))
    } else {
        etag.to_owned()
    };
    let tag_value = HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"\""));
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    if none_match(headers, &tag) {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, tag_value), vary]).into_response();
    }
    let json_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if compress {
        let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        let body = Body::from(gzipped());
        return ([(header::ETAG, tag_value), vary, json_type, encoding], body).into_response();
    }
    (
        [(header::ETAG, tag_value), vary, json_type],
        Body::from(json.clone()),
    )
        .into_response()
}

/// Answers with the JSON `build` makes, built and (when the client accepts
/// it and the body is large enough) gzip-compressed off the async threads:
/// a megabyte takes milliseconds. No `ETag`: the body is not kept.
///
/// # Errors
///
/// An internal error when `build` fails.
pub(crate) async fn respond_built(
    headers: HeaderMap,
    build: impl FnOnce() -> Result<Vec<u8>, serde_json::Error> + Send + 'static,
) -> Result<Response, ApiError> {
    let compress = accepts_gzip(&headers);
    let built = tokio::task::spawn_blocking(move || {
        build().map(|json| {
            let zipped = (compress && json.len() >= GZIP_FROM).then(|| gzip(&json));
            (Bytes::from(json), zipped)
        })
    })
    .await
    .map_err(|e| ApiError::internal("building a JSON answer", e))?
    .map_err(|e| ApiError::internal("serializing a JSON answer", e))?;
    let vary = (header::VARY, HeaderValue::from_static("accept-encoding"));
    let json_type = (
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(match built {
        (_, Some(zipped)) => {
            let encoding = (header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            ([vary, json_type, encoding], Body::from(zipped)).into_response()
        }
        (json, None) => ([vary, json_type], Body::from(json)).into_response(),
    })
}

/// Adds `name: value` to a response.
pub(crate) fn with_header(mut response: Response, name: HeaderName, value: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
    response
}

/// gzip at the fastest level: JSON lists shrink about tenfold even so, and
/// the work stays a few milliseconds per megabyte.
pub(crate) fn gzip(data: &[u8]) -> Bytes {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(data);
    Bytes::from(encoder.finish().unwrap_or_default())
}

/// Whether `Accept-Encoding` accepts gzip (a `gzip` or `*` entry whose
/// quality is not 0).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|entry| {
            let mut parts = entry.split(';').map(str::trim);
            let coding = parts.next().unwrap_or_default();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && !refused
        })
}

/// Whether `If-None-Match` names `etag` (or is `*`). Compared weakly, as
/// RFC 9110 asks for this header: a `W/` prefix is ignored.
fn none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|tag| tag == "*" || tag.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn v(any: u64, visible: u64) -> Versions {
        Versions { any, visible }
    }

    /// A build that counts its calls and returns an empty list at `at`.
    fn counted(
        calls: &AtomicUsize,
        at: Versions,
    ) -> impl FnOnce() -> (Versions, Vec<InstanceView>) + '_ {
        move || {
            calls.fetch_add(1, Ordering::SeqCst);
            (at, Vec::new())
        }
    }

    #[tokio::test]
    async fn unchanged_view_is_served_from_the_cache() {
        let cache = ListCache::new();
        let calls = AtomicUsize::new(0);
        let first = cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        let second = cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.etag, cache.etag(3, ""));
    }

    #[tokio::test]
    async fn a_visible_change_rebuilds_at_once() {
        let cache = ListCache::new();
        let calls = AtomicUsize::new(0);
        cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        let rebuilt = cache
            .full(|| v(4, 4), counted(&calls, v(4, 4)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(rebuilt.versions(), v(4, 4));
        assert_ne!(rebuilt.etag, cache.etag(3, ""));
    }

    #[tokio::test]
    async fn heartbeat_only_changes_wait_for_the_staleness_bound() {
        let cache = ListCache::new();
        let calls = AtomicUsize::new(0);
        cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        // Only lastHeartbeat moved: the old body still answers.
        let served = cache
            .full(|| v(9, 3), counted(&calls, v(9, 3)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(served.versions(), v(3, 3));
        let entry = cache.full.entry.lock().await.clone().unwrap();
        assert!(!entry.serves(v(9, 3), Duration::ZERO));
        assert!(entry.serves(v(3, 3), Duration::ZERO));
    }

    /// Makes the cached full list look built `ago`.
    async fn age_full(cache: &ListCache, ago: Duration) {
        let mut entry = cache.full.entry.lock().await;
        let old = entry.take().unwrap();
        *entry = Some(Arc::new(Cached {
            versions: old.versions,
            built_at: Instant::now() - ago,
            etag: old.etag.clone(),
            json: old.json.clone(),
            gzip: OnceLock::new(),
        }));
    }

    #[tokio::test]
    async fn after_a_quiet_spell_heartbeats_are_rebuilt_before_answering() {
        let cache = ListCache::new();
        let calls = AtomicUsize::new(0);
        cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        // Nobody asked for 30 s while records kept being refreshed: the
        // first request must not get heartbeats 30 s old.
        age_full(&cache, Duration::from_secs(30)).await;
        let served = cache
            .full(|| v(9, 3), counted(&calls, v(9, 3)))
            .await
            .unwrap();
        assert_eq!(served.versions(), v(9, 3));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn within_the_bound_heartbeats_are_rebuilt_in_the_background() {
        let mut cache = ListCache::new();
        cache.staleness = Duration::from_secs(10);
        let calls = AtomicUsize::new(0);
        cache
            .full(|| v(3, 3), counted(&calls, v(3, 3)))
            .await
            .unwrap();
        // Past half the bound, the request is answered with the body as it
        // is (still within the bound) at once; the rebuild runs behind it,
        // started once.
        age_full(&cache, Duration::from_secs(6)).await;
        let served = cache
            .full(|| v(9, 3), counted(&calls, v(9, 3)))
            .await
            .unwrap();
        assert_eq!(served.versions(), v(3, 3));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = cache
                .full(|| v(9, 3), counted(&calls, v(9, 3)))
                .await
                .unwrap();
            if now.versions() == v(9, 3) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the background rebuild never landed"
            );
            tokio::task::yield_now().await;
        }
        // A visible change is never answered with the old body.
        let visible = cache
            .full(|| v(10, 10), counted(&calls, v(10, 10)))
            .await
            .unwrap();
        assert_eq!(visible.versions(), v(10, 10));
    }

    #[tokio::test]
    async fn concurrent_requests_after_a_change_build_once() {
        let cache = Arc::new(ListCache::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, calls) = (cache.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                cache
                    .full(
                        || v(5, 5),
                        || {
                            calls.fetch_add(1, Ordering::SeqCst);
                            (v(5, 5), Vec::new())
                        },
                    )
                    .await
                    .unwrap()
                    .versions()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), v(5, 5));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn services_are_cached_apart_and_dropped_when_gone() {
        let cache = ListCache::new();
        let calls = AtomicUsize::new(0);
        cache
            .service("a-svc", || Some(v(2, 2)), counted(&calls, v(2, 2)))
            .await
            .unwrap();
        cache
            .service("b-svc", || Some(v(4, 4)), counted(&calls, v(4, 4)))
            .await
            .unwrap();
        // A change in b leaves a's entry standing.
        cache
            .service("a-svc", || Some(v(2, 2)), counted(&calls, v(2, 2)))
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let gone = cache
            .service("a-svc", || None, counted(&calls, v(9, 9)))
            .await
            .unwrap();
        assert!(gone.is_none());
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert!(!cache.services.lock().unwrap().contains_key("a-svc"));
    }

    #[test]
    fn if_none_match_and_accept_encoding_are_parsed() {
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, "\"x\", W/\"abc-1\"".parse().unwrap());
        assert!(none_match(&h, "\"abc-1\""));
        assert!(!none_match(&h, "\"abc-2\""));
        h.insert(header::ACCEPT_ENCODING, "br, gzip;q=0".parse().unwrap());
        assert!(!accepts_gzip(&h));
        h.insert(
            header::ACCEPT_ENCODING,
            "br, gzip, deflate".parse().unwrap(),
        );
        assert!(accepts_gzip(&h));
    }

    #[test]
    fn large_bodies_are_gzipped_for_clients_that_accept_it() {
        let json = Bytes::from(format!("[{}]", "1,".repeat(GZIP_FROM)).replace(",]", "]"));
        let mut h = HeaderMap::new();
        let plain = respond(&h, "\"t-1\"", &json, || gzip(&json));
        assert_eq!(plain.headers()[header::ETAG], "\"t-1\"");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        h.insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        let zipped = respond(&h, "\"t-1\"", &json, || gzip(&json));
        assert_eq!(zipped.headers()[header::ETAG], "\"t-1-gz\"");
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        h.insert(header::IF_NONE_MATCH, "\"t-1-gz\"".parse().unwrap());
        let not_modified = respond(&h, "\"t-1\"", &json, || gzip(&json));
        assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    }
}
