//! Single-node tests: a real `nats-server` per test, reached with async-nats.

use std::path::Path;
use std::time::Duration;

use aegis_testkit::{NatsServer, TestkitError};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn stream_config(name: &str) -> stream::Config {
    stream::Config {
        name: name.into(),
        subjects: vec![format!("{}.>", name.to_lowercase())],
        ..Default::default()
    }
}

#[tokio::test]
async fn publish_and_subscribe() -> TestResult {
    let server = NatsServer::start()?;
    let client = async_nats::connect(server.url()).await?;
    let mut sub = client.subscribe("greet.*").await?;
    client.flush().await?;
    client.publish("greet.joe", "hello".into()).await?;
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await?
        .expect("subscription open");
    assert_eq!(msg.subject.as_str(), "greet.joe");
    assert_eq!(msg.payload.as_ref(), b"hello");
    Ok(())
}

#[tokio::test]
async fn jetstream_is_available() -> TestResult {
    let server = NatsServer::start()?;
    let js = jetstream::new(async_nats::connect(server.url()).await?);
    let mut orders = js.create_stream(stream_config("ORDERS")).await?;
    js.publish("orders.new", "1".into()).await?.await?;
    assert_eq!(orders.info().await?.state.messages, 1);
    assert!(server.store_dir().join("jetstream").exists());
    Ok(())
}

/// After `server_caught_up`, a request from another connection always
/// finds a subscription made just before it: 200 fresh subjects, each
/// asked once, no "no responders" (which `flush` alone lets through).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_caught_up_puts_subscriptions_in_force() -> TestResult {
    let server = NatsServer::start()?;
    let responder = async_nats::connect(server.url()).await?;
    let asker = async_nats::connect(server.url()).await?;
    for i in 0..200 {
        let subject = format!("svc.{i}");
        let mut sub = responder.subscribe(subject.clone()).await?;
        aegis_testkit::wait::server_caught_up(&responder).await;
        let answer = tokio::spawn({
            let responder = responder.clone();
            async move {
                let msg = sub.next().await.expect("subscription open");
                let reply = msg.reply.expect("a request");
                responder.publish(reply, "yes".into()).await.unwrap();
            }
        });
        let reply = asker.request(subject, "?".into()).await?;
        assert_eq!(&reply.payload[..], b"yes");
        answer.await?;
    }
    Ok(())
}

#[tokio::test]
async fn core_only_server_has_no_jetstream() -> TestResult {
    let server = NatsServer::builder().jetstream(false).start()?;
    let client = async_nats::connect(server.url()).await?;
    let mut sub = client.subscribe("ping").await?;
    client.flush().await?;
    client.publish("ping", "x".into()).await?;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await?
            .is_some()
    );

    let js = jetstream::new(client);
    let err = js
        .create_stream(stream_config("NOPE"))
        .await
        .expect_err("JetStream is off");
    // Without JetStream nobody answers the API subject.
    assert!(
        matches!(
            err.kind(),
            jetstream::context::CreateStreamErrorKind::JetStreamUnavailable
                | jetstream::context::CreateStreamErrorKind::TimedOut
        ),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_and_restart_keep_ports_and_store() -> TestResult {
    let mut server = NatsServer::start()?;
    let (port, url) = (server.port(), server.url());
    let js = jetstream::new(async_nats::connect(&url).await?);
    js.create_stream(stream_config("KEEP")).await?;
    js.publish("keep.a", "1".into()).await?.await?;

    server.kill();
    server.kill(); // idempotent
    assert!(!server.is_running());
    assert_eq!(server.pid(), None);

    server.restart()?;
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    let js = jetstream::new(async_nats::connect(&url).await?);
    assert_eq!(js.get_stream("KEEP").await?.info().await?.state.messages, 1);

    server.stop();
    server.stop(); // idempotent
    assert!(!server.is_running());
    server.restart()?;
    assert!(server.is_running());
    Ok(())
}

#[test]
fn drop_kills_the_process_and_removes_the_store() -> TestResult {
    let server = NatsServer::start()?;
    let pid = server.pid().expect("running");
    let store = server.store_dir().to_path_buf();
    let log = server.log_path();
    assert!(std::fs::read_to_string(&log)?.contains("Server is ready"));
    assert!(store.exists());
    drop(server);
    assert!(!store.exists());
    assert!(!log.exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
    Ok(())
}

#[test]
fn drop_during_a_panic_cleans_up() {
    let store = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(|| {
        let server = NatsServer::start().expect("start");
        *store.lock().unwrap() = Some((server.store_dir().to_path_buf(), server.pid().unwrap()));
        panic!("test failure while the server runs");
    });
    assert!(result.is_err());
    let (store, pid) = store.into_inner().unwrap().expect("server started");
    assert!(!store.exists());
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn a_failing_server_reports_its_log() {
    let err = NatsServer::builder()
        .extra_args(vec!["-p".into(), "99999".into()])
        .ready_timeout(Duration::from_secs(5))
        .start()
        .expect_err("invalid port");
    match err {
        // The server exits at once; the error quotes its fatal log line.
        TestkitError::NotReady { log_tail, .. } => {
            assert!(log_tail.contains("invalid port"), "{log_tail}")
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn servers_run_side_by_side() -> TestResult {
    let a = NatsServer::start()?;
    let b = NatsServer::builder().server_name("second".into()).start()?;
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
    assert_eq!(b.server_name(), "second");
    Ok(())
}
