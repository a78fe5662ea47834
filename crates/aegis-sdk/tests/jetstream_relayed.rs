//! What JetStream relays onto a request subject is not a request (security
//! review, session 36, finding 1). NATS permissions check the subject of a
//! JetStream API request, never its payload: a role that may create a
//! consumer may point its `deliver_subject` at any subject with a
//! subscriber, and a stream's `republish` (or a direct get's reply) the
//! same. The server then delivers a message of the role's choosing to an
//! instance's `rpc.{service}.{instance}.{method}`, its queue group, or its
//! `aegis.control.{service}.{instance}`, subjects the role may not publish
//! to itself.
//!
//! A real caller never sends such a message: the server marks what it
//! relays (first test, against the real nats-server), and an instance
//! refuses what carries the marks: no handler call, no drill, no request
//! counted; a plain request afterwards is served as ever.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::{
    contracts::{
        control::ControlResponse,
        subjects::{instance_control_subject, rpc_instance_subject, rpc_queue_group, rpc_subject},
    },
    registry::RegistrationOptions,
    rpc::{Service, WireError},
};
use async_nats::{
    HeaderMap, Message, Subscriber,
    header::NATS_STREAM,
    jetstream::{
        self,
        consumer::{AckPolicy, DeliverPolicy, push},
        stream::{self, Republish},
    },
};
use futures::StreamExt;
use serde_json::{Value, json};

use common::{connect, server};

const SERVICE: &str = "order-service";
const INSTANCE: &str = "order-1";
const METHOD: &str = "create_order";

/// The orders the handler was called with, by `client_order_id`.
type Seen = Arc<Mutex<Vec<String>>>;

async fn order_instance(conn: &aegis_sdk::Connection, seen: Seen) -> Service {
    conn.service(SERVICE, "1.0.0")
        .instance_id(INSTANCE)
        .registration(RegistrationOptions {
            heartbeat: Duration::from_millis(200),
            ttl: Duration::from_secs(5),
            ..Default::default()
        })
        .handler(METHOD, move |order: Value| {
            let seen = seen.clone();
            async move {
                let id = order["client_order_id"].as_str().unwrap_or("").to_owned();
                seen.lock().unwrap().push(id.clone());
                Ok::<_, WireError>(json!({ "created": id }))
            }
        })
        .start()
        .await
        .expect("start the order instance")
}

/// The next message on `sub`, within 5 s.
async fn next(sub: &mut Subscriber, what: &str) -> Message {
    tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap_or_else(|_| panic!("no message within 5 s: {what}"))
        .unwrap_or_else(|| panic!("subscription ended: {what}"))
}

/// A push consumer on `stream` that delivers what is published on
/// `filter` to `deliver` (in queue group `group`), acknowledging nothing.
async fn push_to(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    filter: &str,
    deliver: &str,
    group: Option<&str>,
) {
    js.get_stream(stream)
        .await
        .expect("the stream")
        .create_consumer(push::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: filter.to_owned(),
            deliver_subject: deliver.to_owned(),
            deliver_group: group.map(str::to_owned),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .expect("create the push consumer");
}

/// The instance's request count of `METHOD` as `$SRV.STATS` reports it.
async fn requests_counted(client: &async_nats::Client) -> u64 {
    let answer = client
        .request(format!("$SRV.STATS.{SERVICE}.{INSTANCE}"), "".into())
        .await
        .expect("$SRV.STATS");
    let stats: Value = serde_json::from_slice(&answer.payload).expect("stats JSON");
    stats["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .find(|e| e["name"] == METHOD)
        .and_then(|e| e["num_requests"].as_u64())
        .expect("the method's request count")
}

/// The instance's state, asked as the operator asks.
async fn control_state(client: &async_nats::Client) -> aegis_sdk::contracts::control::ControlState {
    let answer = client
        .request(
            instance_control_subject(SERVICE, INSTANCE),
            r#"{"op":"status"}"#.into(),
        )
        .await
        .expect("control status");
    match serde_json::from_slice(&answer.payload).expect("control JSON") {
        ControlResponse::Ok(state) => state,
        other => panic!("status refused: {other:?}"),
    }
}

/// A plain request to the instance-directed subject is answered and seen.
async fn plain_order(client: &async_nats::Client, subject: String, id: &str) {
    let answer = client
        .request(subject, json!({ "client_order_id": id }).to_string().into())
        .await
        .expect("a plain request is answered");
    let body: Value = serde_json::from_slice(&answer.payload).expect("JSON answer");
    assert_eq!(body, json!({ "created": id }), "{answer:?}");
}

/// The claims the SDK's guard rests on, checked against the real server:
/// every push delivery (any ack policy, headers only too) carries a
/// `$JS.ACK.` reply; its idle heartbeats carry a status; a republished
/// message and a direct get's answer carry `Nats-Stream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_marks_every_message_jetstream_relays() {
    let nats = server();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "RELAY".into(),
        subjects: vec!["relay.>".into()],
        allow_direct: true,
        republish: Some(Republish {
            source: "relay.republish".into(),
            destination: "seen.republish".into(),
            headers_only: false,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let mut seen = client.subscribe("seen.>").await.unwrap();
    // A push consumer counts only a subscription on its exact deliver
    // subject as interest (with only `seen.>` it delivers nothing).
    let mut pushed = Vec::new();
    for (name, ack, headers_only) in [
        ("none", AckPolicy::None, false),
        ("explicit", AckPolicy::Explicit, false),
        ("all", AckPolicy::All, false),
        ("headers-only", AckPolicy::None, true),
    ] {
        let deliver = format!("push.{name}");
        pushed.push((name, client.subscribe(deliver.clone()).await.unwrap()));
        js.get_stream("RELAY")
            .await
            .unwrap()
            .create_consumer(push::Config {
                durable_name: Some(format!("push-{name}")),
                filter_subject: "relay.push".into(),
                deliver_subject: deliver,
                ack_policy: ack,
                headers_only,
                deliver_policy: DeliverPolicy::New,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    client
        .publish("relay.push", r#"{"forged":true}"#.into())
        .await
        .unwrap();
    for (name, sub) in &mut pushed {
        let msg = next(sub, name).await;
        let reply = msg
            .reply
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default();
        assert!(reply.starts_with("$JS.ACK.RELAY.push-"), "{msg:?}");
        assert_eq!(
            msg.subject.as_str(),
            "relay.push",
            "delivered under its own subject"
        );
    }

    // Republished: no reply, `Nats-Stream` set.
    client
        .publish("relay.republish", r#"{"forged":true}"#.into())
        .await
        .unwrap();
    let msg = next(&mut seen, "the republished message").await;
    assert_eq!(msg.subject.as_str(), "seen.republish");
    assert!(msg.reply.is_none(), "{msg:?}");
    assert_eq!(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(NATS_STREAM))
            .map(|v| v.as_str()),
        Some("RELAY"),
        "{msg:?}"
    );

    // A direct get answers to whatever reply subject the asker names.
    client
        .publish_with_reply(
            "$JS.API.DIRECT.GET.RELAY",
            "seen.direct",
            r#"{"last_by_subj":"relay.push"}"#.into(),
        )
        .await
        .unwrap();
    let msg = next(&mut seen, "the direct get's answer").await;
    assert_eq!(msg.subject.as_str(), "seen.direct");
    assert_eq!(
        msg.headers
            .as_ref()
            .and_then(|h| h.get(NATS_STREAM))
            .map(|v| v.as_str()),
        Some("RELAY"),
        "{msg:?}"
    );

    // An idle heartbeat goes to the deliver subject itself, with a status.
    let mut beats = client.subscribe("beats").await.unwrap();
    js.get_stream("RELAY")
        .await
        .unwrap()
        .create_consumer(push::Config {
            durable_name: Some("push-beats".into()),
            filter_subject: "relay.nothing".into(),
            deliver_subject: "beats".into(),
            ack_policy: AckPolicy::None,
            idle_heartbeat: Duration::from_millis(100),
            flow_control: true,
            deliver_policy: DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap();
    let msg = next(&mut beats, "an idle heartbeat").await;
    assert_eq!(msg.subject.as_str(), "beats");
    assert!(msg.status.is_some(), "{msg:?}");
}

/// A push consumer delivering an order to the instance's own subject, its
/// shared subject, and a drill to its control subject changes nothing: no
/// handler call, no request counted, no UNHEALTHY. Plain requests on the
/// same subjects afterwards are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_push_consumer_neither_calls_nor_drills_an_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let service = order_instance(&conn, seen.clone()).await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(stream::Config {
        name: "FORGE".into(),
        subjects: vec!["forge.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let direct = rpc_instance_subject(SERVICE, INSTANCE, METHOD);
    let shared = rpc_subject(SERVICE, METHOD);
    let control = instance_control_subject(SERVICE, INSTANCE);
    let direct_group = format!("{}.{INSTANCE}", rpc_queue_group(SERVICE));
    push_to(
        &js,
        "FORGE",
        "to-direct",
        "forge.direct",
        &direct,
        Some(&direct_group),
    )
    .await;
    push_to(
        &js,
        "FORGE",
        "to-shared",
        "forge.shared",
        &shared,
        Some(&rpc_queue_group(SERVICE)),
    )
    .await;
    push_to(&js, "FORGE", "to-control", "forge.control", &control, None).await;

    // A plain subscriber on each subject sees what the instance is sent
    // at the same moment: once it saw the forged message, so did the
    // instance, ahead of any request sent after.
    let mut watch_direct = client.subscribe(direct.clone()).await.unwrap();
    let mut watch_shared = client.subscribe(shared.clone()).await.unwrap();
    let mut watch_control = client.subscribe(control.clone()).await.unwrap();
    client.flush().await.unwrap();

    for (filter, id) in [
        ("forge.direct", "forged-direct"),
        ("forge.shared", "forged-shared"),
    ] {
        client
            .publish(filter, json!({ "client_order_id": id }).to_string().into())
            .await
            .unwrap();
    }
    client
        .publish(
            "forge.control",
            r#"{"op":"unhealthy","for_ms":60000}"#.into(),
        )
        .await
        .unwrap();
    let forged = next(&mut watch_direct, "the forged direct order").await;
    assert!(
        forged
            .reply
            .as_ref()
            .is_some_and(|r| r.starts_with("$JS.ACK."))
    );
    next(&mut watch_shared, "the forged shared order").await;
    next(&mut watch_control, "the forged drill").await;

    plain_order(&client, direct, "plain-direct").await;
    plain_order(&client, shared, "plain-shared").await;
    let state = control_state(&client).await;

    assert_eq!(
        *seen.lock().unwrap(),
        ["plain-direct", "plain-shared"],
        "the handler ran only for the plain requests"
    );
    assert!(state.healthy && state.forced_until.is_none(), "{state:?}");
    assert_eq!(
        requests_counted(&client).await,
        2,
        "only the plain requests count"
    );
    service.shutdown().await.unwrap();
}

/// A stream that republishes onto the instance's subjects, and a direct
/// get answering to one of them, are refused the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_republishing_stream_or_a_direct_get_neither_calls_nor_drills_an_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let service = order_instance(&conn, seen.clone()).await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let direct = rpc_instance_subject(SERVICE, INSTANCE, METHOD);
    let control = instance_control_subject(SERVICE, INSTANCE);
    for (name, source, destination) in [
        ("REPUB_RPC", "repub.rpc", &direct),
        ("REPUB_CONTROL", "repub.control", &control),
    ] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects: vec![source.into()],
            republish: Some(Republish {
                source: source.into(),
                destination: destination.clone(),
                headers_only: false,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    js.create_stream(stream::Config {
        name: "STORE".into(),
        subjects: vec!["store.>".into()],
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let mut watch_direct = client.subscribe(direct.clone()).await.unwrap();
    let mut watch_control = client.subscribe(control.clone()).await.unwrap();
    client.flush().await.unwrap();

    let order = |id: &str| json!({ "client_order_id": id }).to_string().into();
    client
        .publish("repub.rpc", order("forged-republish"))
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert("Aegis-Test", "forged");
    client
        .publish_with_headers(
            "repub.control",
            headers,
            r#"{"op":"unhealthy","for_ms":60000}"#.into(),
        )
        .await
        .unwrap();
    next(&mut watch_direct, "the republished order").await;
    next(&mut watch_control, "the republished drill").await;
    js.publish("store.order", order("forged-direct-get"))
        .await
        .unwrap()
        .await
        .unwrap();
    client
        .publish_with_reply(
            "$JS.API.DIRECT.GET.STORE",
            direct.clone(),
            r#"{"last_by_subj":"store.order"}"#.into(),
        )
        .await
        .unwrap();
    next(&mut watch_direct, "the direct get's answer").await;

    plain_order(&client, direct, "plain").await;
    let state = control_state(&client).await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["plain"],
        "the handler ran only for the plain request"
    );
    assert!(state.healthy && state.forced_until.is_none(), "{state:?}");
    assert_eq!(
        requests_counted(&client).await,
        1,
        "only the plain request counts"
    );
    service.shutdown().await.unwrap();
}

/// A message without a reply subject is no call: nobody waits for its
/// answer, and one arrives this way only when someone else's reply is
/// aimed at the instance — a service answering a request whose reply
/// subject a caller set to this instance's subject (NATS lets a responder
/// publish once to any reply subject), or a JetStream API answer sent to
/// a reply subject its asker chose. Neither may run a handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_without_a_reply_subject_calls_no_handler() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let seen: Seen = Arc::default();
    let service = order_instance(&conn, seen.clone()).await;

    let client = async_nats::connect(nats.url()).await.unwrap();
    let direct = rpc_instance_subject(SERVICE, INSTANCE, METHOD);
    let shared = rpc_subject(SERVICE, METHOD);
    let mut watch_direct = client.subscribe(direct.clone()).await.unwrap();
    let mut watch_shared = client.subscribe(shared.clone()).await.unwrap();
    client.flush().await.unwrap();
    let order = |id: &str| json!({ "client_order_id": id }).to_string().into();
    client
        .publish(direct.clone(), order("no-reply-direct"))
        .await
        .unwrap();
    client
        .publish(shared, order("no-reply-shared"))
        .await
        .unwrap();
    // Another responder's answer aimed at the instance.
    let mut echo = client.subscribe("echo").await.unwrap();
    let echo_client = client.clone();
    tokio::spawn(async move {
        if let Some(msg) = echo.next().await
            && let Some(reply) = msg.reply
        {
            let _ = echo_client.publish(reply, msg.payload).await;
        }
    });
    client.flush().await.unwrap();
    client
        .publish_with_reply("echo", direct.clone(), order("injected-answer"))
        .await
        .unwrap();
    next(&mut watch_direct, "the reply-less order").await;
    next(&mut watch_shared, "the reply-less shared order").await;
    next(&mut watch_direct, "the echoed answer").await;

    plain_order(&client, direct, "plain").await;
    assert_eq!(
        *seen.lock().unwrap(),
        ["plain"],
        "the handler ran only for the plain request"
    );
    assert_eq!(
        requests_counted(&client).await,
        1,
        "only the plain request counts"
    );
    service.shutdown().await.unwrap();
}
