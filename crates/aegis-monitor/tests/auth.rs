//! Authentication and authorization against a real monitor: 401 without or
//! with a bad credential on every `/api` route, 403 for a viewer's writes,
//! the hashed token file, the session cookie, refusing to start without a
//! token, `--insecure-dev`, tokens never reaching the log, and guessing
//! credentials limited per client.

mod common;

use std::{
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock},
};

use aegis_monitor::{AppState, MonitorConfig, StartError, auth::AuthConfigError, hash_token};
use axum::{
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, header},
};
use common::{ADMIN, Harness, Reply, VIEWER, new_def, req};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Every `/api` route with a method and a body that would be valid.
fn api_routes() -> Vec<(Method, &'static str, Option<serde_json::Value>)> {
    vec![
        (Method::GET, "/api/services", None),
        (Method::POST, "/api/services", Some(new_def("auth-svc"))),
        (Method::GET, "/api/services/auth-svc", None),
        (
            Method::PUT,
            "/api/services/auth-svc",
            Some(json!({"owner": "x"})),
        ),
        (
            Method::PATCH,
            "/api/services/auth-svc",
            Some(json!({"owner": "x"})),
        ),
        (Method::DELETE, "/api/services/auth-svc", None),
        (Method::GET, "/api/services/auth-svc/revision", None),
        (Method::GET, "/api/services/auth-svc/history", None),
        (Method::GET, "/api/instances", None),
        (Method::GET, "/api/instances/auth-svc", None),
        (Method::GET, "/api/instances/auth-svc/i-1", None),
        (Method::GET, "/api/instances/health/summary", None),
        (Method::GET, "/api/instances/status/ACTIVE", None),
        (Method::GET, "/api/instances/auth-svc/i-1/config", None),
        (Method::GET, "/api/instances/auth-svc/i-1/events", None),
        (Method::GET, "/api/instances/auth-svc/i-1/metrics", None),
        (Method::GET, "/api/metrics", None),
        (Method::GET, "/api/stream", None),
        (Method::GET, "/api/session", None),
        (Method::GET, "/api/no-such-route", None),
    ]
}

/// Captures every log line of this test binary, to check no token leaks.
fn log_buffer() -> Arc<Mutex<Vec<u8>>> {
    static BUF: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    BUF.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let subscriber = tracing_subscriber_for_tests(move || SharedWriter(writer.clone()));
        let _ = tracing::subscriber::set_global_default(subscriber);
        buf
    })
    .clone()
}

struct SharedWriter(Arc<Mutex<Vec<u8>>>);

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tracing_subscriber_for_tests<W>(
    make: impl Fn() -> W + Send + Sync + 'static,
) -> impl tracing::Subscriber + Send + Sync
where
    W: Write + 'static,
{
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(make)
        .with_ansi(false)
        .finish()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_route_needs_a_valid_credential() {
    let logs = log_buffer();
    // Every request here comes from the same (absent) peer: a budget for
    // wrong credentials big enough for all of them.
    let h = Harness::start_with(|c| c.sign_in_per_minute = 1000).await;
    for (method, path, body) in api_routes() {
        for auth in [
            None,
            Some("Bearer wrong-token"),
            Some("Bearer "),
            Some("Basic YWRtaW46YWRtaW4="),
            Some(ADMIN), // the token without the scheme
        ] {
            let mut r = req(method.clone(), path, None, body.clone());
            if let Some(a) = auth {
                r.headers_mut()
                    .insert(header::AUTHORIZATION, a.parse().unwrap());
            }
            let reply = h.call(r).await;
            reply.expect(401, Some("UNAUTHORIZED"));
            assert_eq!(
                reply.headers[header::WWW_AUTHENTICATE],
                "Bearer realm=\"aegis\"",
                "{method} {path}"
            );
        }
    }
    // Public routes stay public.
    for path in ["/health", "/status", "/metrics", "/api/openapi.json"] {
        assert_eq!(h.get(path, None).await.status, 200, "{path}");
    }
    // A wrong or right token never shows up in logs or answers.
    let reply = h.get("/api/services", Some(ADMIN)).await;
    assert!(!reply.body.to_string().contains(ADMIN));
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(text.contains("request rejected"), "logging is captured");
    for secret in [ADMIN, VIEWER, "wrong-token", "YWRtaW46YWRtaW4="] {
        assert!(!text.contains(secret), "{secret} leaked into the log");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewers_read_and_admins_write() {
    let h = Harness::start().await;
    h.admin(Method::POST, "/api/services", Some(new_def("auth-svc")))
        .await
        .expect(201, None);
    for (method, path, body) in api_routes() {
        let reply = h.call(req(method.clone(), path, Some(VIEWER), body)).await;
        if method == Method::GET {
            assert!(
                ![401, 403].contains(&reply.status.as_u16()),
                "viewer GET {path}: {}",
                reply.status
            );
        } else {
            reply.expect(403, Some("FORBIDDEN"));
            assert_eq!(reply.body["error"]["details"]["role"], "viewer");
        }
    }
    // The viewer's attempts changed nothing.
    let def = h.get("/api/services/auth-svc", Some(VIEWER)).await;
    def.expect(200, None);
    assert_eq!(def.body["owner"], "trading-team");
    let me = h.get("/api/session", Some(VIEWER)).await;
    assert_eq!(me.body, json!({"name": "viewer", "role": "viewer"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hashed_token_file_names_the_writer() {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    writeln!(file, "# ops").unwrap();
    writeln!(
        file,
        "admin:ops-alice:{}",
        hash_token("alice-secret-token-xyz")
    )
    .unwrap();
    writeln!(
        file,
        "viewer:grafana:{}",
        hash_token("grafana-secret-token-xyz")
    )
    .unwrap();
    let path = file.path().to_owned();
    let h = Harness::start_with(|c| {
        c.admin_token = None;
        c.viewer_token = None;
        c.token_file = Some(path);
    })
    .await;
    h.get("/api/services", Some(ADMIN))
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.call(req(
        Method::POST,
        "/api/services",
        Some("grafana-secret-token-xyz"),
        Some(new_def("file-svc")),
    ))
    .await
    .expect(403, Some("FORBIDDEN"));
    h.call(req(
        Method::POST,
        "/api/services",
        Some("alice-secret-token-xyz"),
        Some(new_def("file-svc")),
    ))
    .await
    .expect(201, None);
    let history = h
        .get(
            "/api/services/file-svc/history",
            Some("grafana-secret-token-xyz"),
        )
        .await;
    assert_eq!(history.body[0]["who"], "ops-alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_cookie_sign_in_and_out() {
    let h = Harness::start().await;
    let sign_in = |token: &str| {
        req(
            Method::POST,
            "/api/session",
            None,
            Some(json!({ "token": token })),
        )
    };
    h.call(sign_in("nope"))
        .await
        .expect(401, Some("UNAUTHORIZED"));
    let reply = h.call(sign_in(VIEWER)).await;
    reply.expect(200, None);
    assert_eq!(reply.body["role"], "viewer");
    let set_cookie = reply.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Strict"), "{set_cookie}");
    assert!(!set_cookie.contains(VIEWER), "the cookie is not the token");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    let with_cookie = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut r = req(method, path, None, body);
        r.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        r
    };
    h.call(with_cookie(Method::GET, "/api/services", None))
        .await
        .expect(200, None);
    h.call(with_cookie(
        Method::POST,
        "/api/services",
        Some(new_def("cookie-svc")),
    ))
    .await
    .expect(403, Some("FORBIDDEN"));
    let me = h.call(with_cookie(Method::GET, "/api/session", None)).await;
    assert_eq!(me.body["name"], "viewer");
    // A tampered cookie is refused.
    let mut bad = req(Method::GET, "/api/services", None, None);
    bad.headers_mut().insert(
        header::COOKIE,
        cookie.replace("v2.viewer", "v2.admin").parse().unwrap(),
    );
    h.call(bad).await.expect(401, Some("UNAUTHORIZED"));
    // Signing out clears it.
    let out = h
        .call(req(Method::DELETE, "/api/session", None, None))
        .await;
    out.expect(204, None);
    assert!(
        out.headers[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_to_start_without_a_token() {
    // No NATS is needed: the check comes before any I/O.
    let config = MonitorConfig {
        nats: aegis_sdk::AegisConfig::with_servers("nats://127.0.0.1:1"),
        ..Default::default()
    };
    let err = AppState::start(config, CancellationToken::new())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StartError::Auth(AuthConfigError::NoTokens)),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("AEGIS_ADMIN_TOKEN"), "{message}");
    assert!(message.contains("--insecure-dev"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insecure_dev_lets_everyone_in_and_says_so() {
    let h = Harness::start_with(|c| {
        c.admin_token = None;
        c.viewer_token = None;
        c.insecure_dev = true;
    })
    .await;
    h.call(req(
        Method::POST,
        "/api/services",
        None,
        Some(new_def("dev-svc")),
    ))
    .await
    .expect(201, None);
    let status = h.get("/status", None).await;
    assert_eq!(status.body["authMode"], "insecure-dev");
    let history = h.get("/api/services/dev-svc/history", None).await;
    assert_eq!(history.body[0]["who"], "insecure-dev");
}

/// `request` as if it came over TCP from `peer`, with `X-Forwarded-For`
/// when given.
fn from(mut request: Request<Body>, peer: &str, forwarded: Option<&str>) -> Request<Body> {
    let peer: SocketAddr = peer.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(peer));
    if let Some(f) = forwarded {
        request
            .headers_mut()
            .insert("x-forwarded-for", f.parse().unwrap());
    }
    request
}

/// A GET of `path` with `Authorization: Bearer token`, from `client`
/// behind the trusted proxy.
fn behind_proxy(path: &str, token: Option<&str>, client: &str) -> Request<Body> {
    from(
        req(Method::GET, path, token, None),
        "10.0.0.1:40000",
        Some(client),
    )
}

/// Asserts a 429 in the envelope with a `Retry-After` of 1 to 60 seconds.
#[track_caller]
fn assert_limited(reply: &Reply) {
    reply.expect(429, Some("TOO_MANY_REQUESTS"));
    let retry: u64 = reply.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guessing_credentials_is_limited_per_client() {
    const LIMIT: u32 = 5;
    let h = Harness::start_with(|c| {
        c.sign_in_per_minute = LIMIT;
        c.trusted_proxies = vec!["10.0.0.1".parse().unwrap()];
    })
    .await;
    let guesser = "203.0.113.5";
    let colleague = "203.0.113.6";

    // Wrong bearer tokens on an /api route: 401 up to the limit, then 429
    // before the token is even looked at, so the right one is refused too.
    for n in 1..=LIMIT {
        let r = h
            .call(behind_proxy("/api/services", Some("guess"), guesser))
            .await;
        assert_eq!(r.status, 401, "guess {n}: {}", r.body);
    }
    assert_limited(
        &h.call(behind_proxy("/api/services", Some("guess"), guesser))
            .await,
    );
    assert_limited(
        &h.call(behind_proxy("/api/services", Some(ADMIN), guesser))
            .await,
    );
    // `/status` is no way around it: with a credential it is limited too;
    // without one it answers as always.
    assert_limited(
        &h.call(behind_proxy("/status", Some("guess"), guesser))
            .await,
    );
    assert_limited(&h.call(behind_proxy("/status", Some(ADMIN), guesser)).await);
    h.call(behind_proxy("/status", None, guesser))
        .await
        .expect(200, None);
    // The probes are not limited.
    h.call(behind_proxy("/health", Some("guess"), guesser))
        .await
        .expect(200, None);
    let ready = h.call(behind_proxy("/ready", Some("guess"), guesser)).await;
    assert_ne!(ready.status, 429, "{}", ready.body);
    // Another client behind the same proxy is not affected.
    h.call(behind_proxy("/api/services", Some(ADMIN), colleague))
        .await
        .expect(200, None);
    let status = h
        .call(behind_proxy("/status", Some(VIEWER), colleague))
        .await;
    status.expect(200, None);
    assert!(
        status.body["nats"]["serverVersion"].is_string(),
        "{}",
        status.body
    );

    // `/status` tells a right token from a wrong one, so guesses there
    // count the same.
    let prober = "203.0.113.7";
    for n in 1..=LIMIT {
        let r = h.call(behind_proxy("/status", Some("guess"), prober)).await;
        assert_eq!(r.status, 200, "guess {n}: {}", r.body);
        assert!(r.body["nats"]["serverVersion"].is_null(), "{}", r.body);
    }
    assert_limited(&h.call(behind_proxy("/status", Some("guess"), prober)).await);
    assert_limited(
        &h.call(behind_proxy("/api/services", Some(VIEWER), prober))
            .await,
    );

    // A session cookie is signed: it cannot be guessed, so cookies are
    // never counted nor refused for the address's guesses. A user signed
    // in from an address a guesser shares (one NAT, one proxy that is not
    // trusted) keeps working while the guessing goes on.
    let shared = "203.0.113.8";
    let sign_in = from(
        req(
            Method::POST,
            "/api/session",
            None,
            Some(json!({ "token": VIEWER })),
        ),
        "10.0.0.1:40000",
        Some(shared),
    );
    let signed_in = h.call(sign_in).await;
    signed_in.expect(200, None);
    let cookie = signed_in.headers[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let with_cookie = |cookie: &str| {
        let mut r = behind_proxy("/api/services", None, shared);
        r.headers_mut()
            .insert(header::COOKIE, cookie.parse().unwrap());
        r
    };
    for n in 1..=LIMIT {
        let r = h
            .call(behind_proxy("/api/services", Some("guess"), shared))
            .await;
        assert_eq!(r.status, 401, "guess {n}: {}", r.body);
    }
    assert_limited(
        &h.call(behind_proxy("/api/services", Some("guess"), shared))
            .await,
    );
    h.call(with_cookie(&cookie)).await.expect(200, None);
    let forged = "aegis_session=v2.admin.61646d696e.9999999999.00.00.00";
    for n in 1..=LIMIT + 2 {
        let r = h.call(with_cookie(forged)).await;
        assert_eq!(r.status, 401, "forgery {n}: {}", r.body);
    }
    h.call(with_cookie(&cookie)).await.expect(200, None);
}

/// The ingress controller's pods get new addresses on every restart: a
/// trusted range (their pod network) keeps telling their clients apart
/// whichever pod a request comes through, and a peer outside the range
/// still cannot pick its own identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_range_tells_clients_apart_behind_any_proxy_in_it() {
    const LIMIT: u32 = 2;
    let h = Harness::start_with(|c| {
        c.sign_in_per_minute = LIMIT;
        c.trusted_proxies = vec!["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()];
    })
    .await;
    let sign_in = |peer: &str, client: &str| {
        from(
            req(
                Method::POST,
                "/api/session",
                None,
                Some(json!({ "token": VIEWER })),
            ),
            peer,
            Some(client),
        )
    };
    // One client, through three pods of the controller (before and after
    // restarts): one budget, its own.
    let client = "203.0.113.30";
    for pod in ["10.1.2.3:40000", "10.200.0.9:40000"] {
        h.call(sign_in(pod, client)).await.expect(200, None);
    }
    assert_limited(&h.call(sign_in("[fd00::7]:40000", client)).await);
    // Other clients behind the same pods are not affected.
    for (pod, other) in [
        ("10.1.2.3:40000", "203.0.113.31"),
        ("10.44.0.1:40000", "203.0.113.32"),
        ("[fd00::7]:40000", "2001:db8::33"),
    ] {
        h.call(sign_in(pod, other)).await.expect(200, None);
    }
    // A peer outside the range is its own client, whatever it forwards.
    let outside = "192.0.2.40:40000";
    for forged in ["203.0.113.41", "203.0.113.42"] {
        h.call(sign_in(outside, forged)).await.expect(200, None);
    }
    assert_limited(&h.call(sign_in(outside, "203.0.113.43")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_warned_about_once() {
    let logs = log_buffer();
    // No trusted proxy: this peer's `X-Forwarded-For` is ignored, so all
    // clients behind it share one budget. Worth saying, once.
    let h = Harness::start().await;
    let proxy = "192.0.2.99:40000";
    for client in ["203.0.113.20", "203.0.113.21", "203.0.113.22"] {
        h.call(from(
            req(Method::GET, "/api/services", Some(VIEWER), None),
            proxy,
            Some(client),
        ))
        .await
        .expect(200, None);
        h.call(from(
            req(
                Method::POST,
                "/api/session",
                None,
                Some(json!({ "token": VIEWER })),
            ),
            proxy,
            Some(client),
        ))
        .await
        .expect(200, None);
    }
    // The log is this binary's: other tests' peers are left out.
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("WARN") && l.contains("AEGIS_TRUSTED_PROXIES") && l.contains("192.0.2.99")
        })
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
    assert!(!warnings[0].contains("203.0.113.2"), "{}", warnings[0]);
}

/// What an anonymous client learns of the routes from a 401 is no more
/// than the public OpenAPI document says: a method a route does not take
/// is 401 (authentication runs first) with axum's `Allow` header, which
/// names only methods the document lists for that path (and HEAD, which
/// GET brings). An unknown path is 401 without one. So the header maps
/// nothing that `GET /api/openapi.json`, public by design, does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anonymous_401_tells_no_route_the_public_document_does_not() {
    let h = Harness::start().await;
    let public = h.get("/api/openapi.json", None).await;
    public.expect(200, None);
    let paths = public.body["paths"].as_object().unwrap().clone();
    let mut told = 0;
    for (template, item) in &paths {
        if !template.starts_with("/api/") || template == "/api/session" {
            continue;
        }
        let path = template.replace('{', "x").replace('}', "");
        for method in [Method::OPTIONS, Method::TRACE] {
            let reply = h.call(req(method.clone(), &path, None, None)).await;
            reply.expect(401, Some("UNAUTHORIZED"));
            let Some(allow) = reply.headers.get(header::ALLOW) else {
                continue;
            };
            told += 1;
            for allowed in allow.to_str().unwrap().split(',').map(str::trim) {
                let documented = item.get(allowed.to_lowercase()).is_some()
                    || (allowed == "HEAD" && item.get("get").is_some());
                assert!(
                    documented,
                    "{method} {template}: Allow names {allowed}, the document does not"
                );
            }
        }
    }
    assert!(
        told > 0,
        "no Allow header seen: the premise changed, re-read this test"
    );
    let unknown = h
        .call(req(Method::OPTIONS, "/api/secret-admin", None, None))
        .await;
    unknown.expect(401, Some("UNAUTHORIZED"));
    assert!(unknown.headers.get(header::ALLOW).is_none());
}
