//! Helpers shared by the monitor's integration tests: a real nats-server and
//! a started [`AppState`] per test, requests through the router with
//! `tower::ServiceExt::oneshot`, a real socket when a test needs one, and
//! polling instead of fixed sleeps.
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, time::Duration};

use aegis_monitor::{AppState, MonitorConfig, router};
use aegis_sdk::{AegisConfig, Connection, Secret};
use aegis_testkit::NatsServer;
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use futures::StreamExt;
use http_body_util::BodyExt;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

/// The admin token every test monitor accepts.
pub const ADMIN: &str = "admin-token-for-tests-0123456789";
/// The viewer token every test monitor accepts.
pub const VIEWER: &str = "viewer-token-for-tests-0123456789";

/// A nats-server, a monitor state on it, and its router.
pub struct Harness {
    pub nats: NatsServer,
    pub state: AppState,
    pub app: Router,
}

/// The configuration tests use, pointing at `url`.
pub fn config(url: &str) -> MonitorConfig {
    let mut nats = AegisConfig::with_servers(url);
    nats.nats.request_timeout = Duration::from_secs(3);
    MonitorConfig {
        nats,
        admin_token: Some(Secret::new(ADMIN)),
        viewer_token: Some(Secret::new(VIEWER)),
        // Generous, so a loaded machine does not turn an answer into a 504;
        // tests of the timeout itself set a short one.
        control_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

impl Harness {
    /// Starts a fresh server and monitor.
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    /// Starts a fresh server and a monitor that reads the server's
    /// connection advisories through the system account.
    pub async fn start_with_system_account() -> Harness {
        let nats = NatsServer::start().expect("start nats-server");
        let mut config = config(&nats.url());
        config.system_account = Some(system_account(&nats));
        let state = AppState::start(config, CancellationToken::new())
            .await
            .expect("start the monitor with system account access");
        let app = router(state.clone());
        Harness { nats, state, app }
    }

    /// Starts a fresh server and a monitor whose config `tweak` adjusts.
    pub async fn start_with(tweak: impl FnOnce(&mut MonitorConfig)) -> Harness {
        let nats = NatsServer::start().expect("start nats-server");
        let mut config = config(&nats.url());
        tweak(&mut config);
        let state = AppState::start(config, CancellationToken::new())
            .await
            .expect("start the monitor");
        let app = router(state.clone());
        Harness { nats, state, app }
    }

    /// A plain SDK connection to the same server.
    pub async fn connect(&self) -> Connection {
        connect(&self.nats.url()).await
    }

    /// Sends one request through the router.
    pub async fn call(&self, request: Request<Body>) -> Reply {
        call_app(&self.app, request).await
    }

    /// Another monitor replica (its own state) on the same NATS.
    pub async fn replica(&self) -> Router {
        let state = AppState::start(config(&self.nats.url()), CancellationToken::new())
            .await
            .expect("start a second monitor");
        router(state)
    }

    /// GET `path` with `token`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(req(Method::GET, path, token, None)).await
    }

    /// `method` `path` as admin with a JSON body.
    pub async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(req(method, path, Some(ADMIN), body)).await
    }

    /// Serves the router on a real socket (the monitor's own server, with
    /// its limits); stops when the token is cancelled.
    pub async fn serve(&self) -> (SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let app = self.app.clone();
        let s = stop.clone();
        let limits = aegis_monitor::server::Limits::from(self.state.config());
        tokio::spawn(async move {
            aegis_monitor::server::serve_router(listener, app, limits, s)
                .await
                .unwrap();
        });
        (addr, stop)
    }
}

/// A monitor on `url` (one URL, or several joined with commas) with R3
/// buckets, as the tests on a 3-node cluster start it; with `system`, it
/// reads the servers' connection advisories through that account.
pub async fn start_r3(
    url: &str,
    system: Option<aegis_monitor::SystemAccount>,
) -> (AppState, Router) {
    let mut config = config(url);
    config.nats.nats.replicas = 3;
    config.system_account = system;
    let state = AppState::start(config, CancellationToken::new())
        .await
        .expect("start the monitor");
    let app = router(state.clone());
    (state, app)
}

/// An SDK connection to a 3-node cluster's `urls`, with R3 buckets and
/// short timeouts, for the set-up and faults of the cluster tests.
pub async fn connect_r3(urls: &[String]) -> Connection {
    let mut config = AegisConfig::with_servers(urls.join(","));
    config.nats.replicas = 3;
    config.nats.request_timeout = Duration::from_secs(3);
    Connection::connect(config)
        .await
        .expect("connect to the cluster")
}

/// The test server's system account, as the monitor takes it.
pub fn system_account(nats: &NatsServer) -> aegis_monitor::SystemAccount {
    let (user, password) = nats.system_credentials();
    aegis_monitor::SystemAccount {
        user: Some(user.to_owned()),
        password: Some(Secret::new(password)),
        creds_file: None,
    }
}

/// Sends one request through `app`.
pub async fn call_app(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let streaming = headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streaming {
        // An endless stream: the status and headers are the answer.
        return Reply {
            status,
            headers,
            body: Value::Null,
        };
    }
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// A request with an optional bearer token and JSON body.
pub fn req(method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(v) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(v.to_string()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

/// A request with a raw body and content type.
pub fn raw(
    method: Method,
    path: &str,
    token: &str,
    content_type: &str,
    body: impl Into<Body>,
) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

/// A response, with the body parsed as JSON (or a JSON string when it is not).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The error code of an error envelope.
    pub fn code(&self) -> &str {
        self.body["error"]["code"]
            .as_str()
            .unwrap_or("<no envelope>")
    }

    /// Asserts the status and, for errors, the envelope's shape and code.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Self {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        if let Some(code) = code {
            assert_envelope(&self.body);
            assert_eq!(self.code(), code, "body: {}", self.body);
        }
        self
    }

    /// The fields named by a VALIDATION_ERROR.
    pub fn fields(&self) -> Vec<String> {
        self.body["error"]["details"]["fields"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|f| f["field"].as_str().unwrap().to_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ETag as a revision number.
    pub fn etag(&self) -> u64 {
        self.headers[header::ETAG]
            .to_str()
            .unwrap()
            .trim_matches('"')
            .parse()
            .unwrap()
    }
}

/// Asserts `{"error": {"code": string, "message": string, "details": object}}`
/// and nothing else.
#[track_caller]
pub fn assert_envelope(body: &Value) {
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "only `error`: {body}");
    let e = body["error"].as_object().expect("error object");
    assert_eq!(e.len(), 3, "code, message, details: {body}");
    assert!(
        e["code"].is_string() && e["message"].is_string() && e["details"].is_object(),
        "{body}"
    );
}

/// An SDK connection with short timeouts.
pub async fn connect(url: &str) -> Connection {
    let mut config = AegisConfig::with_servers(url);
    config.nats.request_timeout = Duration::from_secs(3);
    Connection::connect(config).await.expect("connect")
}

/// Registers a bare instance record (no service behind it, so nothing
/// answers its control subjects) and waits until the monitor lists it.
pub async fn register_bare(
    h: &Harness,
    conn: &Connection,
    service: &str,
    instance: &str,
) -> aegis_sdk::registry::Registration {
    let record =
        aegis_contracts::ServiceInstance::new(service, instance, "1.0.0", chrono::Utc::now());
    let registration = aegis_sdk::registry::Registration::builder(conn, record)
        .start()
        .await
        .expect("register");
    let path = format!("/api/instances/{service}/{instance}");
    eventually(Duration::from_secs(5), "instance listed", || async {
        h.get(&path, Some(VIEWER)).await.status == StatusCode::OK
    })
    .await;
    registration
}

/// A valid create body.
pub fn new_def(name: &str) -> Value {
    serde_json::json!({
        "service_name": name,
        "owner": "trading-team",
        "description": "Places and tracks orders",
        "version": "1.0.0"
    })
}

// Not every test binary that includes this module polls.
#[allow(unused_imports)]
pub use aegis_testkit::wait::eventually;

/// Reads SSE events (`event:` + `data:` lines) from a streaming response.
pub struct Events {
    body: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    buf: String,
    /// Names of every event read so far.
    pub seen: Vec<String>,
}

impl Events {
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: String::new(),
            seen: Vec::new(),
        }
    }

    /// Opens `/api/stream?topics={topics}` on the monitor served at
    /// `addr`, as the viewer.
    // Not every test binary that includes this module opens a stream.
    #[allow(dead_code)]
    pub async fn open(addr: SocketAddr, topics: &str) -> Self {
        let response = reqwest::Client::new()
            .get(format!("http://{addr}/api/stream?topics={topics}"))
            .bearer_auth(VIEWER)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "the stream of {topics} opens");
        Self::new(response)
    }

    /// The next event whose name is `name`, within 10 s.
    pub async fn next_named(&mut self, name: &str) -> Value {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Some(end) = self.buf.find("\n\n") {
                    let block: String = self.buf.drain(..end + 2).collect();
                    let mut event = "message";
                    let mut data = String::new();
                    for line in block.lines() {
                        if let Some(v) = line.strip_prefix("event:") {
                            event = v.trim();
                        } else if let Some(v) = line.strip_prefix("data:") {
                            data.push_str(v.trim());
                        }
                    }
                    self.seen.push(event.to_owned());
                    if event == name {
                        return serde_json::from_str(&data).unwrap();
                    }
                    continue;
                }
                let chunk = self.body.next().await.expect("stream open").unwrap();
                self.buf.push_str(&String::from_utf8_lossy(&chunk));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no `{name}` event within 10 s"))
    }
}

/// Starts instance `id` of `service` on `conn`, answering `ping` with
/// `"pong"`, in sticky `group` if given.
pub async fn ping_service(
    conn: &Connection,
    service: &str,
    id: &str,
    group: Option<&str>,
) -> aegis_sdk::rpc::Service {
    let mut builder =
        conn.service(service, "1.0.0")
            .instance_id(id)
            .handler(
                "ping",
                |_: Value| async move { Ok(serde_json::json!("pong")) },
            );
    if let Some(group) = group {
        builder = builder.single_active(group);
    }
    builder.start().await.expect("the service starts")
}

/// This test binary run again as a child process that runs only its
/// `child_instance` test, told what to start by `var=spec` (a test without
/// the variable does nothing): an instance whose SIGKILL or SIGSTOP is
/// real. Killed on drop.
#[allow(dead_code)]
pub struct ChildInstance(std::process::Child);

#[allow(dead_code)]
impl ChildInstance {
    /// Starts the child with `var` set to `spec`.
    pub fn spawn(var: &str, spec: &str) -> ChildInstance {
        ChildInstance(
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["child_instance", "--exact", "--nocapture"])
                .env(var, spec)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        )
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, as in a crash (a frozen process dies too): its connection
    /// closes.
    pub fn kill(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for ChildInstance {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
