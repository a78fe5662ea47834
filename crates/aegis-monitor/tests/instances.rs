//! Instance endpoints against real SDK services registered in a real
//! nats-server: listing, by service, by id, the status summary and filter,
//! live configuration (200 from a real service and a hand-made answer, 502,
//! 504), recent events, and an instance
//! SIGKILLed in another process leaving `/api/instances` within its TTL.

mod common;

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aegis_contracts::{
    InstanceStatus,
    log::{LogKind, LogLevel, LogRecord},
    subjects::{control_subject, log_subject},
};
use aegis_sdk::{Connection, rpc::Service};
use aegis_testkit::wait::server_caught_up;
use axum::http::Method;
use chrono::Utc;
use common::{Harness, VIEWER, eventually};
use futures::StreamExt;
use serde_json::{Value, json};

async fn start_service(conn: &Connection, name: &str, id: &str) -> Service {
    conn.service(name, "1.2.3")
        .instance_id(id)
        .heartbeat(Duration::from_millis(300))
        .ttl(Duration::from_secs(2))
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .expect("start service")
}

async fn instance_count(h: &Harness) -> usize {
    h.get("/api/instances", Some(VIEWER))
        .await
        .body
        .as_array()
        .map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_real_instances() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let p1 = start_service(&conn, "pricing-service", "pricing-1").await;
    let p2 = start_service(&conn, "pricing-service", "pricing-2").await;
    let r1 = start_service(&conn, "risk-service", "risk-1").await;
    eventually(Duration::from_secs(5), "3 instances listed", || async {
        instance_count(&h).await == 3
    })
    .await;

    let all = h.get("/api/instances", Some(VIEWER)).await;
    all.expect(200, None);
    let ids: Vec<(&str, &str)> = all
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["serviceName"].as_str().unwrap(),
                i["instanceId"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("pricing-service", "pricing-1"),
            ("pricing-service", "pricing-2"),
            ("risk-service", "risk-1")
        ]
    );
    let one = &all.body[0];
    assert_eq!(one["version"], "1.2.3");
    assert_eq!(one["status"], "ACTIVE");
    assert!(one["stickyActiveGroup"].is_null());
    assert!(one["metadata"].is_object());
    chrono::DateTime::parse_from_rfc3339(one["lastHeartbeat"].as_str().unwrap()).unwrap();

    let by_service = h.get("/api/instances/pricing-service", Some(VIEWER)).await;
    by_service.expect(200, None);
    assert_eq!(by_service.body.as_array().unwrap().len(), 2);
    let unknown = h.get("/api/instances/unknown-service", Some(VIEWER)).await;
    unknown.expect(200, None);
    assert_eq!(unknown.body, json!([]));

    let got = h
        .get("/api/instances/risk-service/risk-1", Some(VIEWER))
        .await;
    got.expect(200, None);
    assert_eq!(got.body["instanceId"], "risk-1");
    h.get("/api/instances/risk-service/risk-9", Some(VIEWER))
        .await
        .expect(404, Some("INSTANCE_NOT_FOUND"));

    // Status summary and filter, with one instance UNHEALTHY and one STANDBY.
    p2.set_status(InstanceStatus::Unhealthy).await.unwrap();
    r1.set_status(InstanceStatus::Standby).await.unwrap();
    eventually(Duration::from_secs(5), "statuses visible", || async {
        h.get("/api/instances/health/summary", Some(VIEWER))
            .await
            .body
            == json!({"total": 3, "active": 1, "unhealthy": 1, "standby": 1})
    })
    .await;
    for (status, id) in [
        ("ACTIVE", "pricing-1"),
        ("UNHEALTHY", "pricing-2"),
        ("STANDBY", "risk-1"),
    ] {
        let r = h
            .get(&format!("/api/instances/status/{status}"), Some(VIEWER))
            .await;
        r.expect(200, None);
        let list = r.body.as_array().unwrap();
        assert_eq!(list.len(), 1, "{status}");
        assert_eq!(list[0]["instanceId"], id);
    }
    for bad in ["active", "RUNNING", "x"] {
        h.get(&format!("/api/instances/status/{bad}"), Some(VIEWER))
            .await
            .expect(400, Some("BAD_REQUEST"));
    }

    // A graceful stop deregisters at once.
    p1.shutdown().await.unwrap();
    eventually(Duration::from_secs(5), "pricing-1 gone", || async {
        h.get("/api/instances/pricing-service/pricing-1", Some(VIEWER))
            .await
            .status
            == 404
    })
    .await;
    let summary = h.get("/api/instances/health/summary", Some(VIEWER)).await;
    assert_eq!(summary.body["total"], 2);
    drop((p2, r1));
}

/// Run as a child process by `sigkilled_instance_leaves_within_its_ttl`:
/// registers one instance and waits to be killed. A no-op in a normal run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_instance_for_sigkill() {
    let Ok(url) = std::env::var("AEGIS_MONITOR_TEST_CHILD_NATS") else {
        return;
    };
    let conn = common::connect(&url).await;
    let _service = start_service(&conn, "order-service", "order-doomed").await;
    println!("CHILD READY");
    tokio::time::sleep(Duration::from_secs(120)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_instance_leaves_within_its_ttl() {
    let h = Harness::start().await;
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["child_instance_for_sigkill", "--exact", "--nocapture"])
        .env("AEGIS_MONITOR_TEST_CHILD_NATS", h.nats.url())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let path = "/api/instances/order-service/order-doomed";
    eventually(Duration::from_secs(20), "child registered", || async {
        h.get(path, Some(VIEWER)).await.status == 200
    })
    .await;
    // SIGKILL: no deregistration, the key must expire on the server.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed = Instant::now();
    let ttl = Duration::from_secs(2);
    eventually(
        ttl + Duration::from_secs(5),
        "killed instance gone",
        || async { h.get(path, Some(VIEWER)).await.status == 404 },
    )
    .await;
    let gone_after = killed.elapsed();
    println!("SIGKILLed instance left /api/instances after {gone_after:?} (TTL {ttl:?})");
    assert!(
        !h.get("/api/instances", Some(VIEWER))
            .await
            .body
            .to_string()
            .contains("order-doomed")
    );
}

/// The control timeout the 504 cases wait out; short, so the test is quick.
const SHORT_CONTROL_TIMEOUT: Duration = Duration::from_millis(500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_config_times_out_with_504() {
    let h = Harness::start_with(|c| c.control_timeout = SHORT_CONTROL_TIMEOUT).await;
    let conn = h.connect().await;
    let path = "/api/instances/pricing-service/pricing-1/config";

    // Not registered: no such instance.
    h.get(path, Some(VIEWER))
        .await
        .expect(404, Some("INSTANCE_NOT_FOUND"));

    // Registered, but nobody answers: 504 after the control timeout.
    let _pricing = common::register_bare(&h, &conn, "pricing-service", "pricing-1").await;
    let started = Instant::now();
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(504, Some("GATEWAY_TIMEOUT"));
    assert_eq!(r.body["error"]["details"]["instanceId"], "pricing-1");
    assert_eq!(r.body["error"]["details"]["reason"], "no_responders");
    assert!(started.elapsed() < Duration::from_secs(3));

    // A responder that takes the request but is too slow: 504 too.
    let mut slow = conn
        .client()
        .subscribe(control_subject("pricing-service", "pricing-1", "config"))
        .await
        .unwrap();
    server_caught_up(conn.client()).await;
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(504, Some("GATEWAY_TIMEOUT"));
    assert_eq!(r.body["error"]["details"]["reason"], "timeout");
    assert_eq!(
        r.body["error"]["details"]["timeoutMs"],
        SHORT_CONTROL_TIMEOUT.as_millis() as u64
    );
    assert!(
        slow.next().await.is_some(),
        "the request reached the instance"
    );
}

/// Answers the config requests of `instance` of `service` on its control
/// subject, as an instance would: with `bodies` in turn, the last one for
/// every request after. Listening once it returns; abort it to stop.
async fn answer_config(
    conn: &aegis_sdk::Connection,
    service: &str,
    instance: &str,
    bodies: &[String],
) -> tokio::task::JoinHandle<()> {
    let mut sub = conn
        .client()
        .subscribe(control_subject(service, instance, "config"))
        .await
        .unwrap();
    server_caught_up(conn.client()).await;
    let client = conn.client().clone();
    let bodies = bodies.to_vec();
    tokio::spawn(async move {
        let mut next = 0;
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let body = bodies[next.min(bodies.len() - 1)].clone();
                next += 1;
                client.publish(reply, body.into()).await.unwrap();
            }
        }
    })
}

/// A real SDK service's answer reads as the contract's effective
/// configuration, so the monitor serves it (the SDK and the monitor share
/// `aegis_contracts::config::EffectiveConfig`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_service_config_passes_through() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let svc = start_service(&conn, "pricing-service", "pricing-7").await;
    let path = "/api/instances/pricing-service/pricing-7/config";
    eventually(Duration::from_secs(5), "instance listed", || async {
        h.get(path, Some(VIEWER)).await.status != 404
    })
    .await;
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(200, None);
    let config: aegis_contracts::config::EffectiveConfig =
        serde_json::from_value(r.body["config"].clone()).unwrap();
    assert_eq!(config.service, "pricing-service");
    assert_eq!(config.instance_id, "pricing-7");
    assert_eq!(config.version, "1.2.3");
    assert_eq!(config.registration.map(|r| r.ttl_ms), Some(2000));
    svc.shutdown().await.unwrap();
}

/// The answering cases run with the harness's generous control timeout:
/// a loaded machine must not turn a 200 into a 504.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_config_live_over_nats() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let path = "/api/instances/pricing-service/pricing-1/config";

    // Not registered: no such instance.
    h.get(path, Some(VIEWER))
        .await
        .expect(404, Some("INSTANCE_NOT_FOUND"));
    let _pricing = common::register_bare(&h, &conn, "pricing-service", "pricing-1").await;
    let _risk = common::register_bare(&h, &conn, "risk-service", "risk-1").await;

    // An instance that answers with its redacted config: 200, as the
    // contract reads it. A field of a newer SDK is left out: the monitor
    // cannot know it holds no secret.
    let sent = json!({
        "service": "pricing-service", "instanceId": "pricing-1", "version": "1.0.0",
        "sdkVersion": "0.1.0", "singleActive": null,
        "registration": {"heartbeatMs": 1000, "refreshMs": 4000, "ttlMs": 15000},
        "metricsIntervalMs": 2000, "shutdownTimeoutMs": 10000,
        "connection": {"nats": {"servers": ["nats://x:4222"], "token": "<redacted>"}},
        "addedByANewerSdk": true
    });
    let responder = answer_config(&conn, "pricing-service", "pricing-1", &[sent.to_string()]).await;
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(200, None);
    let mut shown = sent.clone();
    shown.as_object_mut().unwrap().remove("addedByANewerSdk");
    assert_eq!(
        r.body,
        json!({
            "serviceName": "pricing-service",
            "instanceId": "pricing-1",
            "config": shown
        })
    );
    responder.abort();

    // An answer that is not JSON, then JSON that is not an effective
    // configuration: 502 both times.
    let bodies = [
        "not json".to_owned(),
        r#"{"nats": {"servers": []}}"#.to_owned(),
    ];
    let responder = answer_config(&conn, "risk-service", "risk-1", &bodies).await;
    for _ in 0..2 {
        h.get("/api/instances/risk-service/risk-1/config", Some(VIEWER))
            .await
            .expect(502, Some("BAD_GATEWAY"));
    }
    responder.abort();

    // Names that would change the subject never reach NATS.
    h.get("/api/instances/a%2Eb/x/config", Some(VIEWER))
        .await
        .expect(404, Some("INSTANCE_NOT_FOUND"));
    h.get("/api/instances/pricing-service/%3E/config", Some(VIEWER))
        .await
        .expect(404, Some("INSTANCE_NOT_FOUND"));
}

/// An instance that answers its config subject with secrets in it (an
/// older or foreign SDK, or any process allowed to answer that subject):
/// the monitor redacts them itself, at any depth and in URLs, and passes
/// every other value on as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_config_secrets_are_redacted_by_the_monitor() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let path = "/api/instances/pricing-service/pricing-9/config";
    let _pricing = common::register_bare(&h, &conn, "pricing-service", "pricing-9").await;

    let secrets = [
        "hunter2-pass",
        "s3cret-in-url",
        "tok3n-in-url",
        "tok-abc123",
        "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5In0",
        "creds-body-secret",
        "pem-body-secret",
        "nested-secret-42",
        "api-key-value",
        "urlpass-in-prose",
        "k8s-env-secret",
        "pw-short-key",
        "conn-string-secret",
        "top-level-secret",
    ];
    // The SDK's own shape (`AegisConfig`: `nats`, `streams`), with secrets
    // where the SDK keeps them and where it never would: what a name list
    // misses (`pw`, an env list's `value`, a `password=` in a connection
    // string) goes with every key the SDK does not write.
    let sent = json!({
        "service": "pricing-service", "instanceId": "pricing-9", "version": "1.0.0",
        "sdkVersion": "0.0.9", "singleActive": null,
        "registration": {"heartbeatMs": 1000, "refreshMs": 4000, "ttlMs": 15000},
        "metricsIntervalMs": 2000, "shutdownTimeoutMs": 10000,
        "connection": {
            "nats": {
                "servers": [
                    "nats://alice:s3cret-in-url@h1:4222",
                    "tls://tok3n-in-url@h2:4443/ws",
                    "nats://plain:4222"
                ],
                "user": "alice",
                "password": "hunter2-pass",
                "token": "tok-abc123",
                "nkey_seed": "SUAMLK2ZNL35WSMW37E7UD4VZ7ELPKW7DHC3BWBSD2GCZ7IUQQXZIORRBU",
                "creds_file": "/etc/aegis/pricing.creds",
                "tls_key": "/etc/aegis/tls.key",
                "request_timeout": "5s",
                "reconnect": {"initial_delay": "50ms", "userJWT": "eyJ0eXAiOiJKV1QiLCJhbGciOiJlZDI1NTE5In0"},
                "pw": "pw-short-key",
                "env": [{"name": "NATS_PASSWORD", "value": "k8s-env-secret"}],
                "dsn": "host=db password=conn-string-secret",
                "pool": [{"auth": {"PASS": "nested-secret-42"}}],
                "API_KEY": "api-key-value",
                "note": "fallback to nats://bob:urlpass-in-prose@backup:4222 if h1 is down"
            },
            "creds": "-----BEGIN NATS USER JWT-----\ncreds-body-secret\n------END NATS USER JWT------",
            "tls": {"privateKey": "-----BEGIN PRIVATE KEY-----\npem-body-secret\n-----END PRIVATE KEY-----"}
        },
        "addedByANewerSdk": {"env": [{"name": "PASSWORD", "value": "top-level-secret"}]}
    });
    let responder = answer_config(&conn, "pricing-service", "pricing-9", &[sent.to_string()]).await;
    let r = h.get(path, Some(VIEWER)).await;
    responder.abort();
    r.expect(200, None);
    let shown = r.body.to_string();
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret:?} leaked in {shown}");
    }
    // Only what the contract and the SDK's settings name is shown, its
    // secrets redacted.
    assert_eq!(
        r.body["config"],
        json!({
            "service": "pricing-service", "instanceId": "pricing-9", "version": "1.0.0",
            "sdkVersion": "0.0.9", "singleActive": null,
            "registration": {"heartbeatMs": 1000, "refreshMs": 4000, "ttlMs": 15000},
            "metricsIntervalMs": 2000, "shutdownTimeoutMs": 10000,
            "connection": {
                "nats": {
                    "servers": [
                        "nats://alice:<redacted>@h1:4222",
                        "tls://<redacted>@h2:4443/ws",
                        "nats://plain:4222"
                    ],
                    "user": "alice",
                    "password": "<redacted>",
                    "token": "<redacted>",
                    "nkey_seed": "<redacted>",
                    "creds_file": "/etc/aegis/pricing.creds",
                    "tls_key": "/etc/aegis/tls.key",
                    "request_timeout": "5s",
                    "reconnect": {"initial_delay": "50ms"}
                }
            }
        })
    );
    assert_eq!(r.body["instanceId"], "pricing-9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recent_events_from_the_log_stream() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let js = conn.jetstream();
    let path = "/api/instances/order-service/order-1/events";
    assert_eq!(h.get(path, Some(VIEWER)).await.body, json!([]));

    let t0 = Utc::now();
    let records: Vec<LogRecord> = (0..250)
        .map(|i| {
            let (level, kind) = match i % 5 {
                0 => (LogLevel::Info, LogKind::Registered),
                1 => (LogLevel::Info, LogKind::StatusChanged),
                2 => (LogLevel::Warn, LogKind::HeartbeatFailed),
                3 => (LogLevel::Error, LogKind::Log),
                _ => (LogLevel::Info, LogKind::Elected),
            };
            LogRecord::new(
                t0 + chrono::Duration::milliseconds(i),
                level,
                kind,
                format!("record {i}"),
            )
            .with_field("i", i)
        })
        .collect();
    for (i, r) in records.iter().enumerate() {
        // Interleave another instance so the subject's sequences are sparse.
        js.publish(
            log_subject("order-service", "order-2"),
            serde_json::to_vec(r).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
        let _ = i;
        js.publish(
            log_subject("order-service", "order-1"),
            serde_json::to_vec(r).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // Default: the newest 100, oldest first.
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(200, None);
    let list = r.body.as_array().unwrap();
    assert_eq!(list.len(), 100);
    assert_eq!(list[0]["message"], "record 150");
    assert_eq!(list[99]["message"], "record 249");
    assert_eq!(list[99]["fields"]["i"], 249);
    assert!(
        list.iter()
            .all(|e| e["level"].is_string() && e["kind"].is_string())
    );
    // A small limit finds the newest ones without reading everything.
    let r = h.get(&format!("{path}?limit=3"), Some(VIEWER)).await;
    let messages: Vec<&str> = r
        .body
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["record 247", "record 248", "record 249"]);
    // More than there are: all of them.
    let r = h.get(&format!("{path}?limit=1000"), Some(VIEWER)).await;
    assert_eq!(r.body.as_array().unwrap().len(), 250);
    // No reader consumers are left behind.
    let mut stream = js.get_stream("AEGIS_LOG").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.consumer_count, 0, "reader consumers deleted");

    h.admin(
        Method::GET,
        "/api/instances/order-service/order-1/events?limit=1001",
        None,
    )
    .await
    .expect(400, Some("BAD_REQUEST"));
}
