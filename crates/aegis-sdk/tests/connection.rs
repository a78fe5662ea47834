//! Connecting against real nats-servers: refusal without JetStream, clear
//! failure when nothing listens, and recovery after the server restarts.

mod common;

use std::time::Duration;

use aegis_sdk::{
    AegisConfig, ConnectError, Connection, Secret,
    discovery::DiscoveryError,
    election::ElectionError,
    registry::RegistryError,
    rpc::{CallOptions, ErrorCode, RpcError},
};
use aegis_testkit::NatsServer;
use common::{connect, eventually};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_server_without_jetstream() {
    let nats = NatsServer::builder().jetstream(false).start().unwrap();
    let err = Connection::connect(AegisConfig::with_servers(nats.url()))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ConnectError::JetStreamUnavailable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("-js"),
        "the message says how to fix it: {err}"
    );

    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.require_jetstream = false;
    Connection::connect(config)
        .await
        .expect("core NATS alone is fine when asked for");
}

/// A server without JetStream where a plain client listens on the
/// JetStream API and never answers: JetStream that is there but silent, as
/// while a cluster chooses new leaders. Keep the subscriber while it should
/// stay silent.
async fn silent_jetstream() -> (NatsServer, async_nats::Subscriber) {
    let nats = NatsServer::builder().jetstream(false).start().unwrap();
    let silent = async_nats::connect(nats.url()).await.unwrap();
    let api = silent.subscribe("$JS.API.>").await.unwrap();
    silent.flush().await.unwrap();
    (nats, api)
}

/// JetStream that is there but does not answer (a cluster choosing new
/// JetStream leaders after a node stopped) is told from JetStream that is
/// off: the advice to start the server with `-js` would send an operator
/// the wrong way. Here something listens on the JetStream API and never
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tells_jetstream_not_answering_from_jetstream_off() {
    let (nats, _silent) = silent_jetstream().await;
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.request_timeout = Duration::from_millis(300);
    let err = Connection::connect(config).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::JetStreamNotAnswering { .. }),
        "{err:?}"
    );
    assert!(err.is_transient(), "it passes by itself: {err}");
    let text = err.to_string();
    assert!(
        !text.contains("-js") && text.contains("did not answer"),
        "the message says what happened, not to enable JetStream: {text}"
    );
}

/// A user the server refuses the JetStream API is told so at once, not
/// connected as if JetStream were only slow to answer (the check waits
/// little when the server says it runs JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_refused_the_jetstream_api_is_told_so() {
    let nats = NatsServer::builder()
        .accounts(true)
        .app_users(
            r#"[ { user: "nojs", password: "pw", permissions: { publish: { deny: ["$JS.API.>"] } } } ]"#
                .into(),
        )
        .start()
        .unwrap();
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.user = Some("nojs".to_owned());
    config.nats.password = Some(Secret::new("pw".to_owned()));
    let err = Connection::connect(config).await.unwrap_err();
    assert!(
        matches!(err, ConnectError::JetStreamRefused { .. }),
        "{err:?}"
    );
    assert!(
        !err.is_transient(),
        "a permission does not come by itself: {err}"
    );
    assert!(err.to_string().contains("$JS.API"), "{err}");
}

/// JetStream that misses a request and then answers again (a cluster that
/// has just chosen its new JetStream leaders) lets the connection through:
/// the check asks again within its time rather than wait all of it for the
/// one request that went unanswered. Seen after a NATS node was killed: a
/// new client's check got no answer for its whole 5 s, though JetStream
/// answered its next one at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jetstream_check_that_went_unanswered_is_asked_again() {
    // A genuine answer to the account check, from a server with JetStream.
    let real = NatsServer::builder().start().unwrap();
    let real_client = async_nats::connect(real.url()).await.unwrap();
    let answer = real_client
        .request("$JS.API.INFO", "".into())
        .await
        .unwrap()
        .payload;

    // Where the connection goes: it misses the first check, answers the rest.
    let nats = NatsServer::builder().jetstream(false).start().unwrap();
    let fake = async_nats::connect(nats.url()).await.unwrap();
    let mut api = fake.subscribe("$JS.API.INFO").await.unwrap();
    fake.flush().await.unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        use futures::StreamExt;
        while let Some(request) = api.next().await {
            let n = counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            if let (Some(reply), true) = (request.reply, n > 0) {
                fake.publish(reply, answer.clone()).await.unwrap();
            }
        }
    });

    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.request_timeout = Duration::from_secs(3);
    let started = std::time::Instant::now();
    let conn = Connection::connect(config).await;
    let took = started.elapsed();
    assert!(conn.is_ok(), "{:?}", conn.err());
    assert!(
        asked.load(std::sync::atomic::Ordering::SeqCst) >= 2,
        "it asked again"
    );
    assert!(
        took < Duration::from_secs(3),
        "it did not wait out the whole request timeout: {took:?}"
    );
}

/// `err` is a call's registry view not holding its service before the
/// deadline: nothing was sent, so SERVICE_UNAVAILABLE, not a timeout.
fn assert_registry_view_late(err: &RpcError) {
    assert!(
        matches!(
            err,
            RpcError::Discovery(DiscoveryError::Registry(RegistryError::NotSynced(_)))
        ),
        "{err:?}"
    );
    assert_eq!(
        err.code(),
        ErrorCode::ServiceUnavailable,
        "nothing was sent"
    );
}

/// A call whose view (the registry behind discovery, the election keys
/// behind `call_active`) cannot load before its deadline says so, and that
/// nothing was sent: not a timeout naming the method's subject, which reads
/// as if the service did not answer. After a NATS node dies, JetStream can
/// stay silent for seconds while it chooses new leaders; here something
/// listens on the JetStream API and never answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_view_cannot_load_says_so_not_timeout() {
    let (nats, _silent) = silent_jetstream().await;
    let mut config = AegisConfig::with_servers(nats.url());
    config.nats.require_jetstream = false;
    let conn = Connection::connect(config).await.unwrap();
    let opts = CallOptions::timeout(Duration::from_millis(300));

    let err = conn
        .rpc()
        .call_with::<_, Value>("order-service", "create_order", &json!({}), &opts)
        .await
        .unwrap_err();
    assert_registry_view_late(&err);

    let err = conn
        .rpc()
        .call_active::<_, Value>(
            "order-service",
            "default",
            "create_order",
            &json!({}),
            &opts,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, RpcError::Election(ElectionError::NotSynced(_))),
        "{err:?}"
    );
    assert_eq!(
        err.code(),
        ErrorCode::ServiceUnavailable,
        "nothing was sent"
    );
}

/// The same for a service the running registry view does not cover yet:
/// its first call adds it to the watch and waits for its records, and a
/// watch that cannot take it in before the deadline (here the server is
/// frozen) is the view not loading, not the service not answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_whose_service_the_view_cannot_take_in_says_so_not_timeout() {
    let mut nats = NatsServer::start().unwrap();
    let conn = connect(&nats.url()).await;
    let opts = CallOptions::timeout(Duration::from_millis(300));
    let first = conn
        .rpc()
        .call_with::<_, Value>("pricing-service", "get_price", &json!({}), &opts)
        .await
        .unwrap_err();
    assert!(
        matches!(first, RpcError::NoInstances { .. }),
        "the view is running: {first:?}"
    );

    nats.pause();
    let err = conn
        .rpc()
        .call_with::<_, Value>("order-service", "create_order", &json!({}), &opts)
        .await
        .unwrap_err();
    nats.resume();
    assert_registry_view_late(&err);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_an_unreachable_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = AegisConfig::with_servers(format!("nats://127.0.0.1:{port}"));
    config.nats.connect_timeout = Duration::from_millis(500);
    let err = Connection::connect(config).await.unwrap_err();
    assert!(matches!(err, ConnectError::Connect { .. }), "{err:?}");

    // A password in the URL is not said back.
    let mut config = AegisConfig::with_servers(format!("nats://alice:s3cret@127.0.0.1:{port}"));
    config.nats.connect_timeout = Duration::from_millis(500);
    let err = Connection::connect(config).await.unwrap_err();
    let said = format!("{} {err:?}", aegis_sdk::startup::Causes(&err));
    assert!(!said.contains("s3cret"), "{said}");
    assert!(said.contains("alice:<redacted>@127.0.0.1"), "{said}");

    let err = Connection::connect(AegisConfig::with_servers(""))
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Config(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_and_client_recover_after_the_server_restarts() {
    let mut nats = NatsServer::start().unwrap();
    let server_conn = connect(&nats.url()).await;
    let client_conn = connect(&nats.url()).await;
    let svc = common::echo_service(&server_conn, "echo-service", "echo-1").await;
    let v: Value = client_conn
        .rpc()
        .call("echo-service", "echo", &json!({"n": 1}))
        .await
        .unwrap();
    assert_eq!(v, json!({"n": 1}));

    nats.kill();
    let down: Result<Value, _> = client_conn
        .rpc()
        .call("echo-service", "echo", &json!({}))
        .await;
    assert!(down.is_err());
    nats.restart().unwrap();

    let rpc = client_conn.rpc();
    eventually(Duration::from_secs(15), "calls succeed after restart", || {
        let rpc = rpc.clone();
        async move {
            matches!(rpc.call::<_, Value>("echo-service", "echo", &json!({"n": 2})).await, Ok(v) if v == json!({"n": 2}))
        }
    })
    .await;
    assert!(client_conn.is_connected());
    svc.shutdown().await.unwrap();
}

/// A connection made with a password in its URL does not show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_in_a_server_url_is_not_shown() {
    let nats = aegis_testkit::NatsServer::builder()
        .app_users(r#"[ { user: "alice", password: "s3cret" } ]"#.to_owned())
        .start()
        .expect("start nats-server with a user");
    let url = nats.url().replace("nats://", "nats://alice:s3cret@");
    let conn = Connection::connect(AegisConfig::with_servers(url))
        .await
        .expect("signed in with the URL's user and password");
    let shown = format!("{conn:?} {}", conn.config().redacted());
    assert!(!shown.contains("s3cret"), "{shown}");
}

/// A user and password in the server URL (percent-encoded where the URL
/// needs it) are what the connection signs in with: the NATS client
/// leaves a URL's user info unsent, and such a URL was refused as a
/// client without credentials. A token alone (`nats://tok3n@host`) is a
/// token. The URLs' credentials are one authentication method, like the
/// configured ones, and two URLs with different credentials are refused
/// before any I/O.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_server_url_sign_in() {
    let nats = aegis_testkit::NatsServer::builder()
        .app_users(r#"[ { user: "alice", password: "s3cret@ex" } ]"#.to_owned())
        .start()
        .expect("start nats-server with a user");
    let with = |userinfo: &str| {
        nats.url()
            .replace("nats://", &format!("nats://{userinfo}@"))
    };
    let conn = Connection::connect(AegisConfig::with_servers(with("alice:s3cret%40ex")))
        .await
        .expect("the URL's user and password sign in");
    assert!(conn.is_connected());
    let wrong = Connection::connect(AegisConfig::with_servers(with("alice:wrong")))
        .await
        .expect_err("a wrong password is refused");
    let said = wrong.to_string();
    assert!(said.contains("for user 'alice'"), "{said}");
    assert!(!said.contains("wrong"), "{said}");

    let mut both = AegisConfig::with_servers(with("alice:s3cret%40ex"));
    both.nats.token = Some(aegis_sdk::config::Secret::new("t"));
    assert!(matches!(
        Connection::connect(both).await,
        Err(aegis_sdk::ConnectError::Config(_))
    ));
    let mut two = AegisConfig::with_servers(with("alice:s3cret%40ex"));
    two.nats.servers.push(with("bob:other"));
    let refused = Connection::connect(two).await.expect_err("two users");
    assert!(
        matches!(refused, aegis_sdk::ConnectError::Config(_)),
        "{refused}"
    );
    assert!(!refused.to_string().contains("other"), "{refused}");
}
