//! What a caller is told when a call cannot be made as asked, against a
//! real nats-server:
//!
//! - `call_active` on a service that is not single-active says so at
//!   once; a group no registered instance is in (a wrong name, or one
//!   whose only instance restarts) is waited for until the deadline, and
//!   the error then names it and the groups there are; so is a group whose
//!   leader never appears;
//! - `call_active` of a method the leader's record does not list is
//!   NOT_FOUND at once, as with `call`, not a dead leader retried until the
//!   deadline;
//! - `call_balanced` of a method no registered instance lists is
//!   NOT_FOUND at once too, not "no instance is serving" it;
//! - a zero `timeout` or `attempt_timeout`, or a `request_id` with a line
//!   break (no header can carry it), is refused before any I/O by every
//!   call style, and the handler never runs;
//! - a TIMEOUT states how long the call waited, not its whole deadline,
//!   when it gave up early.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    Connection,
    rpc::{CallOptions, ErrorCode, Reply, RpcError, Service, WireError},
};
use common::{connect, eventually, server};
use serde_json::{Value, json};

/// An instance of the single-active `ledger-service` in group `default`,
/// with one method, `post_entry`.
async fn ledger_instance(url: &str, id: &str) -> Service {
    ledger_in(url, id, "default").await
}

/// An instance of `ledger-service` in `group`.
async fn ledger_in(url: &str, id: &str, group: &str) -> Service {
    connect(url)
        .await
        .service("ledger-service", "1.0.0")
        .instance_id(id)
        .single_active(group)
        .handler(
            "post_entry",
            |v: Value| async move { Ok::<_, WireError>(v) },
        )
        .start()
        .await
        .unwrap()
}

/// `call_active` of `method` of `service`'s `group` with `{}` and a
/// deadline of `timeout`, and how long it took to answer.
async fn call_active_timed(
    client: &Connection,
    service: &str,
    group: &str,
    method: &str,
    timeout: Duration,
) -> (Result<Reply<Value>, RpcError>, Duration) {
    let started = Instant::now();
    let result = client
        .rpc()
        .call_active::<_, Value>(
            service,
            group,
            method,
            &json!({}),
            &CallOptions::timeout(timeout),
        )
        .await;
    (result, started.elapsed())
}

/// Two ledger instances, one of them leading, as `client` sees it.
async fn two_ledgers(url: &str, client: &Connection) -> (Service, Service) {
    let a = ledger_instance(url, "ledger-1").await;
    let b = ledger_instance(url, "ledger-2").await;
    eventually(Duration::from_secs(10), "a ledger leader serves", || {
        let client = client.clone();
        async move {
            client
                .rpc()
                .call_active::<_, Value>(
                    "ledger-service",
                    "default",
                    "post_entry",
                    &json!({}),
                    &CallOptions::timeout(Duration::from_millis(500)),
                )
                .await
                .is_ok()
        }
    })
    .await;
    (a, b)
}

/// A plain (not single-active) `quote-service` whose `get_quote` counts its
/// runs.
async fn quote_service(conn: &Connection, runs: Arc<AtomicUsize>) -> Service {
    conn.service("quote-service", "1.0.0")
        .instance_id("quote-1")
        .handler("get_quote", move |v: Value| {
            let runs = runs.clone();
            async move {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok::<_, WireError>(v)
            }
        })
        .handler("slow", |v: Value| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok::<_, WireError>(v)
        })
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_on_a_group_nobody_is_in_says_so_at_its_deadline_and_names_it() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _ledgers = two_ledgers(&nats.url(), &client).await;

    let (err, took) = call_active_timed(
        &client,
        "ledger-service",
        "no-such-group",
        "post_entry",
        Duration::from_secs(1),
    )
    .await;
    let err = err.unwrap_err();
    eprintln!("wrong group: {err} ({:?}) after {took:?}", err.code());
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    let message = err.to_string();
    assert!(message.contains("no-such-group"), "{message}");
    assert!(message.contains("default"), "{message}");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_on_a_service_that_is_not_single_active_says_so_at_once() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let _quotes = quote_service(&client, runs.clone()).await;
    // The service is known (a plain call is served).
    let _: Value = client
        .rpc()
        .call("quote-service", "get_quote", &json!({}))
        .await
        .unwrap();

    let (err, took) = call_active_timed(
        &client,
        "quote-service",
        "default",
        "get_quote",
        Duration::from_secs(5),
    )
    .await;
    let err = err.unwrap_err();
    eprintln!("not single-active: {err} ({:?}) after {took:?}", err.code());
    assert_eq!(err.code(), ErrorCode::InvalidRequest, "{err}");
    assert!(err.to_string().contains("single-active"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "only the plain call ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_waits_its_deadline_for_a_leader_nobody_registered_and_names_the_group() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let (err, took) = call_active_timed(
        &client,
        "ledger-service",
        "default",
        "post_entry",
        Duration::from_secs(1),
    )
    .await;
    let err = err.unwrap_err();
    eprintln!("no leader: {err} ({:?}) after {took:?}", err.code());
    assert_eq!(err.code(), ErrorCode::ServiceUnavailable, "{err}");
    assert!(err.to_string().contains("`default`"), "{err}");
    assert!(took >= Duration::from_millis(900), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_of_a_method_the_leader_does_not_list_is_not_found_at_once() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _ledgers = two_ledgers(&nats.url(), &client).await;

    let (err, took) = call_active_timed(
        &client,
        "ledger-service",
        "default",
        "no_such_method",
        Duration::from_secs(5),
    )
    .await;
    let err = err.unwrap_err();
    eprintln!("missing method: {err} ({:?}) after {took:?}", err.code());
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(err.to_string().contains("no_such_method"), "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // The leader was not taken for dead: the next call is served.
    client
        .rpc()
        .call_active::<_, Value>(
            "ledger-service",
            "default",
            "post_entry",
            &json!({}),
            &CallOptions::timeout(Duration::from_secs(2)),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_balanced_of_a_method_no_instance_lists_is_not_found_at_once() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let _quotes = quote_service(&client, runs.clone()).await;
    let rpc = client.rpc();
    let opts = CallOptions::timeout(Duration::from_secs(5));

    let started = Instant::now();
    let err = rpc
        .call_balanced::<_, Value>("quote-service", "no_such_method", &json!({}), &opts)
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("missing method: {err} ({:?}) after {took:?}", err.code());
    assert!(
        matches!(&err, RpcError::NoSuchMethod { service, method, .. }
            if service == "quote-service" && method == "no_such_method"),
        "{err}"
    );
    assert_eq!(err.code(), ErrorCode::NotFound, "{err}");
    assert!(took < Duration::from_secs(2), "took {took:?}");

    // A service nobody registered is still nobody serving it.
    let err = rpc
        .call_balanced::<_, Value>("no-such-service", "get_quote", &json!({}), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }), "{err}");

    // The method that is listed is served as before.
    rpc.call_balanced::<_, Value>("quote-service", "get_quote", &json!({}), &opts)
        .await
        .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

/// Asking the registry why nobody answered must not create it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_balanced_with_nobody_serving_creates_no_registry() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let err = client
        .rpc()
        .call_balanced::<_, Value>(
            "quote-service",
            "get_quote",
            &json!({}),
            &CallOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RpcError::NoResponders { .. }), "{err}");
    let bucket = client
        .jetstream()
        .get_key_value(aegis_sdk::contracts::subjects::REGISTRY_BUCKET)
        .await;
    assert!(bucket.is_err(), "the call created the registry bucket");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_timeout_or_a_request_id_that_breaks_a_header_is_refused_before_any_io_by_every_call_style()
 {
    let nats = server();
    let client = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let _quotes = quote_service(&client, runs.clone()).await;
    let _ledgers = two_ledgers(&nats.url(), &client).await;

    let zero_timeout = CallOptions::timeout(Duration::ZERO);
    let zero_attempt = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        idempotent: true,
        attempt_timeout: Some(Duration::ZERO),
        ..Default::default()
    };
    // A header value cannot hold a line break (async-nats panics on one).
    let broken_id = CallOptions {
        request_id: Some("req-1\r\nX-Injected: 1".to_owned()),
        ..Default::default()
    };
    let rpc = client.rpc();
    let q = json!({});
    for (what, opts) in [
        ("timeout", &zero_timeout),
        ("attempt_timeout", &zero_attempt),
        ("request_id", &broken_id),
    ] {
        let results: [(&str, Result<(), RpcError>); 4] = [
            (
                "call_with",
                rpc.call_with::<_, Value>("quote-service", "get_quote", &q, opts)
                    .await
                    .map(drop),
            ),
            (
                "call_balanced",
                rpc.call_balanced::<_, Value>("quote-service", "get_quote", &q, opts)
                    .await
                    .map(drop),
            ),
            (
                "call_instance",
                rpc.call_instance::<_, Value>("quote-service", "quote-1", "get_quote", &q, opts)
                    .await
                    .map(drop),
            ),
            (
                "call_active",
                rpc.call_active::<_, Value>("ledger-service", "default", "post_entry", &q, opts)
                    .await
                    .map(drop),
            ),
        ];
        for (style, result) in results {
            let err = match result {
                Ok(()) => panic!("{style} with a zero {what} was served"),
                Err(e) => e,
            };
            eprintln!("{style}, zero {what}: {err} ({:?})", err.code());
            assert_eq!(err.code(), ErrorCode::InvalidRequest, "{style}: {err}");
            assert!(
                matches!(err, RpcError::InvalidOptions { option, .. } if option == what),
                "{style}: {err:?}"
            );
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "no handler ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_states_how_long_the_call_waited_when_it_gave_up_early() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _quotes = quote_service(&client, Arc::default()).await;
    // One instance: once its attempt times out nobody is left to try.
    let opts = CallOptions {
        timeout: Some(Duration::from_secs(5)),
        idempotent: true,
        attempt_timeout: Some(Duration::from_millis(200)),
        ..Default::default()
    };
    let started = Instant::now();
    let err = client
        .rpc()
        .call_with::<_, Value>("quote-service", "slow", &json!({}), &opts)
        .await
        .unwrap_err();
    let took = started.elapsed();
    eprintln!("gave up early: {err} after {took:?}");
    let RpcError::Timeout { timeout, .. } = err else {
        panic!("not a timeout: {err}");
    };
    assert!(
        timeout <= took,
        "says it waited {timeout:?}, waited {took:?}"
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");
}

/// A service sharded in two groups, each with one instance: group `b`'s
/// instance is restarted (a graceful stop deletes its record, then a new
/// process registers). A call to `b` meanwhile is a call to a group that
/// is restarting, not to a group that does not exist: it waits for the
/// new leader within its deadline, as it would with no instance at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_active_waits_for_a_group_whose_only_instance_restarts() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let _a = ledger_in(&nats.url(), "ledger-a1", "a").await;
    let b = ledger_in(&nats.url(), "ledger-b1", "b").await;
    let call = |group: &'static str, timeout: Duration| {
        let client = client.clone();
        async move {
            client
                .rpc()
                .call_active::<_, Value>(
                    "ledger-service",
                    group,
                    "post_entry",
                    &json!({}),
                    &CallOptions::timeout(timeout),
                )
                .await
        }
    };
    eventually(Duration::from_secs(10), "both groups serve", || async {
        call("a", Duration::from_millis(500)).await.is_ok()
            && call("b", Duration::from_millis(500)).await.is_ok()
    })
    .await;

    b.shutdown().await.unwrap();
    let started = Instant::now();
    let waiting = tokio::spawn(call("b", Duration::from_secs(5)));
    tokio::time::sleep(Duration::from_millis(500)).await; // the restart's gap
    let _b2 = ledger_in(&nats.url(), "ledger-b2", "b").await;
    let served = waiting.await.unwrap();
    eprintln!(
        "call to the restarting group: {:?} after {:?}",
        served.as_ref().map(|r| &r.instance_id),
        started.elapsed()
    );
    let reply = served.expect("served by the restarted group's new leader");
    assert_eq!(reply.instance_id.as_deref(), Some("ledger-b2"));
}

/// A deadline too far for the clock (`Duration::MAX`, "no deadline to
/// speak of") is a call like any other, not a panic when added to the
/// time now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_with_a_deadline_too_far_for_the_clock_is_served() {
    let nats = server();
    let client = connect(&nats.url()).await;
    let runs = Arc::new(AtomicUsize::new(0));
    let _quotes = quote_service(&client, runs.clone()).await;
    let _ledgers = two_ledgers(&nats.url(), &client).await;
    let forever = CallOptions {
        timeout: Some(Duration::MAX),
        attempt_timeout: Some(Duration::MAX),
        idempotent: true,
        ..Default::default()
    };
    let rpc = client.rpc();
    rpc.call_with::<_, Value>("quote-service", "get_quote", &json!({}), &forever)
        .await
        .unwrap();
    rpc.call_balanced::<_, Value>("quote-service", "get_quote", &json!({}), &forever)
        .await
        .unwrap();
    rpc.call_active::<_, Value>(
        "ledger-service",
        "default",
        "post_entry",
        &json!({}),
        &forever,
    )
    .await
    .unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

/// A call the server refuses this user (its permissions do not name the
/// service) is told as refused, quoting the server, not as a TIMEOUT that
/// says "nobody knows whether it ran" and invites a retry: the server
/// drops the request without a word, and it never reached the service.
/// An idempotent call is not tried again on another instance for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_the_server_refuses_this_user_says_so() {
    let nats = common::server_with_dev(r#"publish: { deny: ["rpc.quote-service.>"] }"#);
    let as_user = |user| common::connect_as(&nats, user);
    let runs = Arc::new(AtomicUsize::new(0));
    let _svc = quote_service(&as_user("op").await.unwrap(), runs.clone()).await;
    let conn = as_user("dev").await.unwrap();
    let mut opts = CallOptions::timeout(Duration::from_millis(800));
    opts.idempotent = true;
    let err = conn
        .rpc()
        .call_with::<_, Value>("quote-service", "get_quote", &json!({}), &opts)
        .await
        .expect_err("refused");
    let RpcError::Refused { subject, violation } = &err else {
        panic!("expected RpcError::Refused, got {err:?}");
    };
    assert_eq!(subject, "rpc.quote-service.quote-1.get_quote");
    assert!(violation.contains("Permissions Violation"), "{violation}");
    assert_eq!(err.code(), ErrorCode::Forbidden);
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}
