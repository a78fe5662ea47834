//! What keeps the monitor's views cheap for a large fleet, against real
//! registrations in a real nats-server: the instance lists carry strong
//! ETags (304 while unchanged, a new tag after a visible change), large
//! ones are gzip-compressed, `?service=&status=&limit=&after=` filter and
//! page them (bad values: 400 in the usual envelope); the live stream sends
//! an `instance` event for a status change but none for a record refresh
//! that moves only `lastHeartbeat`, a `digest` every 2 s naming the
//! instances whose beats are late, and `lagged` to a client that fell
//! behind, which then goes on receiving; the first list after a quiet
//! spell shows heartbeats within the documented bound.

mod common;

use std::{io::Read, time::Duration};

use aegis_contracts::{
    InstanceStatus, MetricsSnapshot, ServiceInstance,
    subjects::{REGISTRY_BUCKET, metrics_subject, registry_key},
};
use aegis_sdk::{
    Connection,
    registry::{METADATA_HEARTBEAT_MS, Registration},
};
use axum::{
    body::Body,
    http::{HeaderMap, Method, Request, StatusCode, header},
};
use common::{Events, Harness, Reply, VIEWER, eventually};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Registers `service`/`id` with beats every `heartbeat`.
async fn register(conn: &Connection, service: &str, id: &str, heartbeat: Duration) -> Registration {
    let record = ServiceInstance::new(service, id, "1.0.0", chrono::Utc::now());
    // The record re-written on every beat (the SDK's default is every 4 s):
    // the tests watch what refreshes do to the lists and the stream.
    Registration::builder(conn, record)
        .heartbeat(heartbeat)
        .refresh(heartbeat)
        .start()
        .await
        .expect("register")
}

/// GET `path` as the viewer with extra headers; the raw body as well.
async fn get_with(
    h: &Harness,
    path: &str,
    headers: &[(header::HeaderName, &str)],
) -> (Reply, Vec<u8>) {
    let mut b = Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::AUTHORIZATION, format!("Bearer {VIEWER}"));
    for (name, value) in headers {
        b = b.header(name, *value);
    }
    let response = h
        .app
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (
        Reply {
            status,
            headers,
            body,
        },
        bytes,
    )
}

fn etag(headers: &HeaderMap) -> String {
    headers[header::ETAG].to_str().unwrap().to_owned()
}

fn ids(body: &Value) -> Vec<String> {
    body.as_array()
        .expect("a list")
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["serviceName"].as_str().unwrap(),
                i["instanceId"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_answer_304_until_something_visible_changes() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let reg = register(&conn, "etag-service", "etag-1", Duration::from_secs(1)).await;
    let _other = register(&conn, "other-service", "other-1", Duration::from_secs(1)).await;
    eventually(Duration::from_secs(5), "both listed", || async {
        h.get("/api/instances", Some(VIEWER))
            .await
            .body
            .as_array()
            .map_or(0, Vec::len)
            == 2
    })
    .await;

    for path in [
        "/api/instances",
        "/api/instances/etag-service",
        "/api/instances?status=ACTIVE",
    ] {
        // A record refresh may move `lastHeartbeat` between two requests
        // (then the list is rebuilt within a second): retried until one
        // pair sees the same version.
        eventually(
            Duration::from_secs(10),
            "a 304 for an unchanged list",
            || async {
                let (first, _) = get_with(&h, path, &[]).await;
                first.expect(200, None);
                let tag = etag(&first.headers);
                assert!(
                    tag.starts_with('"') && !tag.starts_with("W/"),
                    "a strong tag: {tag}"
                );
                let (again, bytes) = get_with(&h, path, &[(header::IF_NONE_MATCH, &tag)]).await;
                if again.status == StatusCode::NOT_MODIFIED {
                    assert!(bytes.is_empty(), "{path}: a 304 has no body");
                    assert_eq!(etag(&again.headers), tag);
                    return true;
                }
                again.expect(200, None);
                false
            },
        )
        .await;
    }

    // A visible change: the old tags no longer match, the new body shows it.
    let (before, _) = get_with(&h, "/api/instances", &[]).await;
    let (before_svc, _) = get_with(&h, "/api/instances/etag-service", &[]).await;
    reg.update(|r| {
        r.metadata.insert("zone".into(), json!("eu-2"));
    })
    .await
    .unwrap();
    for (path, old) in [
        ("/api/instances", etag(&before.headers)),
        ("/api/instances/etag-service", etag(&before_svc.headers)),
    ] {
        eventually(Duration::from_secs(5), "the change served", || async {
            let (r, _) = get_with(&h, path, &[(header::IF_NONE_MATCH, &old)]).await;
            if r.status != StatusCode::OK {
                return false;
            }
            assert_ne!(etag(&r.headers), old);
            r.body
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["instanceId"] == "etag-1" && i["metadata"]["zone"] == "eu-2")
        })
        .await;
    }

    // A service without instances: `[]`, with a tag too.
    let (none, _) = get_with(&h, "/api/instances/no-such-service", &[]).await;
    none.expect(200, None);
    assert_eq!(none.body, json!([]));
    let (again, _) = get_with(
        &h,
        "/api/instances/no-such-service",
        &[(header::IF_NONE_MATCH, &etag(&none.headers))],
    )
    .await;
    assert_eq!(again.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lists_filter_page_and_compress() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let mut regs = Vec::new();
    for service in ["alpha-service", "beta-service", "gamma-service"] {
        for i in 0..20 {
            regs.push(
                register(
                    &conn,
                    service,
                    &format!("{}-{i:02}", &service[..1]),
                    Duration::from_secs(1),
                )
                .await,
            );
        }
    }
    // Five of beta's instances stand by.
    for r in &regs[20..25] {
        r.set_status(InstanceStatus::Standby).await.unwrap();
    }
    eventually(
        Duration::from_secs(10),
        "60 listed, 5 standing by",
        || async {
            let all = h.get("/api/instances", Some(VIEWER)).await.body;
            let standby = h
                .get("/api/instances/status/STANDBY", Some(VIEWER))
                .await
                .body;
            all.as_array().map_or(0, Vec::len) == 60 && standby.as_array().map_or(0, Vec::len) == 5
        },
    )
    .await;
    let all = ids(&h.get("/api/instances", Some(VIEWER)).await.body);

    // By service (sorted, duplicates ignored), by status, both.
    let r = h
        .get(
            "/api/instances?service=gamma-service,alpha-service,alpha-service",
            Some(VIEWER),
        )
        .await;
    r.expect(200, None);
    let expected: Vec<String> = all
        .iter()
        .filter(|k| k.starts_with("alpha-service/") || k.starts_with("gamma-service/"))
        .cloned()
        .collect();
    assert_eq!(ids(&r.body), expected);
    let r = h
        .get(
            "/api/instances?service=beta-service&status=STANDBY",
            Some(VIEWER),
        )
        .await;
    assert_eq!(
        ids(&r.body),
        [
            "beta-service/b-00",
            "beta-service/b-01",
            "beta-service/b-02",
            "beta-service/b-03",
            "beta-service/b-04"
        ]
    );
    let r = h
        .get("/api/instances?status=ACTIVE,UNHEALTHY", Some(VIEWER))
        .await;
    assert_eq!(r.body.as_array().unwrap().len(), 55);
    let r = h
        .get("/api/instances?service=beta-service", Some(VIEWER))
        .await;
    assert_eq!(
        ids(&r.body),
        ids(&h
            .get("/api/instances/beta-service", Some(VIEWER))
            .await
            .body)
    );

    // Pages of 15 over two services, following `Link: rel="next"`.
    let mut path = "/api/instances?service=alpha-service,gamma-service&limit=15".to_owned();
    let mut paged = Vec::new();
    let mut pages = 0;
    loop {
        let r = h.get(&path, Some(VIEWER)).await;
        r.expect(200, None);
        pages += 1;
        let page = ids(&r.body);
        assert!(page.len() <= 15);
        paged.extend(page);
        let Some(link) = r.headers.get(header::LINK) else {
            break;
        };
        let link = link.to_str().unwrap();
        assert!(link.ends_with("; rel=\"next\""), "{link}");
        path = link[1..link.find('>').unwrap()].to_owned();
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(paged, expected);
    let r = h
        .get(
            "/api/instances?after=beta-service/b-18&limit=3",
            Some(VIEWER),
        )
        .await;
    assert_eq!(
        ids(&r.body),
        [
            "beta-service/b-19",
            "gamma-service/g-00",
            "gamma-service/g-01"
        ]
    );

    // Bad values: 400 in the envelope, naming the parameter.
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("status=BOGUS", "status"),
        ("status=", "status"),
        ("service=Not_A_Name", "service"),
        ("after=no-cursor", "after"),
        ("after=alpha-service/", "after"),
    ] {
        let r = h
            .get(&format!("/api/instances?{query}"), Some(VIEWER))
            .await;
        r.expect(400, Some("BAD_REQUEST"));
        assert_eq!(
            r.body["error"]["details"]["param"], param,
            "{query}: {}",
            r.body
        );
    }
    for query in ["limit=abc", "pageSize=3"] {
        h.get(&format!("/api/instances?{query}"), Some(VIEWER))
            .await
            .expect(400, Some("BAD_REQUEST"));
    }

    // The full list (60 records, over 16 KiB) gzip-compressed on request,
    // the same JSON once decoded, under its own tag.
    let (plain, plain_bytes) = get_with(&h, "/api/instances", &[]).await;
    let (zipped, zipped_bytes) = get_with(
        &h,
        "/api/instances",
        &[(header::ACCEPT_ENCODING, "gzip, br")],
    )
    .await;
    assert!(plain_bytes.len() > 16 * 1024, "{} bytes", plain_bytes.len());
    assert_eq!(zipped.headers[header::CONTENT_ENCODING], "gzip");
    assert!(
        zipped.headers[header::VARY]
            .to_str()
            .unwrap()
            .contains("accept-encoding")
    );
    assert!(
        zipped_bytes.len() * 4 < plain_bytes.len(),
        "{} of {} bytes",
        zipped_bytes.len(),
        plain_bytes.len()
    );
    let mut decoded = Vec::new();
    flate2::read::GzDecoder::new(&zipped_bytes[..])
        .read_to_end(&mut decoded)
        .unwrap();
    let decoded: Value = serde_json::from_slice(&decoded).unwrap();
    assert_eq!(ids(&decoded), ids(&plain.body));
    assert_ne!(etag(&zipped.headers), etag(&plain.headers));
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stream_sends_changes_and_a_digest_not_heartbeats() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let mut events = Events::open(addr, "instance").await;
    events.next_named("hello").await;

    let conn = h.connect().await;
    let reg = register(
        &conn,
        "quiet-service",
        "quiet-1",
        Duration::from_millis(200),
    )
    .await;
    let first = events.next_named("instance").await;
    assert_eq!(first["type"], "instanceUpserted");
    assert_eq!(first["instance"]["status"], "ACTIVE");
    let seen_before = events.seen.len();

    // The record is rewritten (every heartbeat, 200 ms) while nothing else
    // of it changes: its `lastHeartbeat` moves, several times.
    let path = "/api/instances/quiet-service/quiet-1";
    let last =
        std::cell::RefCell::new(h.get(path, Some(VIEWER)).await.body["lastHeartbeat"].clone());
    let refreshes = std::cell::Cell::new(0);
    eventually(
        Duration::from_secs(10),
        "three record refreshes",
        || async {
            let now = h.get(path, Some(VIEWER)).await.body["lastHeartbeat"].clone();
            if now != *last.borrow() {
                *last.borrow_mut() = now;
                refreshes.set(refreshes.get() + 1);
            }
            refreshes.get() >= 3
        },
    )
    .await;

    // A status change is an event, and the first one since registering:
    // none was sent for the refreshes.
    reg.set_status(InstanceStatus::Unhealthy).await.unwrap();
    let changed = events.next_named("instance").await;
    assert_eq!(changed["type"], "instanceUpserted");
    assert_eq!(changed["instance"]["status"], "UNHEALTHY", "{changed}");
    let instance_events = events.seen[seen_before..]
        .iter()
        .filter(|e| *e == "instance")
        .count();
    assert_eq!(
        instance_events,
        1,
        "events since registering: {:?}",
        &events.seen[seen_before..]
    );

    // The digest: counts as of now, and the version.
    let digest = loop {
        let d = events.next_named("digest").await;
        if d["summary"]["unhealthy"] == 1 {
            break d;
        }
    };
    assert_eq!(digest["type"], "digest");
    assert_eq!(
        digest["summary"],
        json!({"total": 1, "active": 0, "unhealthy": 1, "standby": 0})
    );
    assert!(chrono::DateTime::parse_from_rfc3339(digest["asOf"].as_str().unwrap()).is_ok());
    assert!(digest["version"].as_u64().unwrap() > 0);
    assert_eq!(digest["lateAfterIntervals"], 1.5);

    // A record that announces 200 ms beats and never beats (written
    // straight into the bucket): late in the next digests, with the time of
    // its write as its last sign of life.
    let raw = async_nats::connect(h.nats.url()).await.unwrap();
    let mut silent = ServiceInstance::new("quiet-service", "silent-1", "1.0.0", chrono::Utc::now());
    silent
        .metadata
        .insert(METADATA_HEARTBEAT_MS.into(), json!(200));
    let written = chrono::Utc::now();
    async_nats::jetstream::new(raw)
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap()
        .put(
            registry_key("quiet-service", "silent-1"),
            serde_json::to_vec(&silent).unwrap().into(),
        )
        .await
        .unwrap();
    let late = loop {
        let d = events.next_named("digest").await;
        let late = d["late"].as_array().unwrap().clone();
        if let Some(entry) = late.iter().find(|l| l["instanceId"] == "silent-1") {
            assert_eq!(d["summary"]["total"], 2);
            break entry.clone();
        }
    };
    let last_beat =
        chrono::DateTime::parse_from_rfc3339(late["lastBeat"].as_str().unwrap()).unwrap();
    let off = (last_beat.with_timezone(&chrono::Utc) - written)
        .num_milliseconds()
        .abs();
    assert!(off < 1000, "last beat {last_beat} vs written {written}");
    assert_eq!(late["serviceName"], "quiet-service");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lagging_client_is_told_and_recovers() {
    let h = Harness::start().await;
    let (addr, stop) = h.serve().await;
    let mut events = Events::open(addr, "metrics").await;
    events.next_named("hello").await;

    // Far more snapshots than the feed buffers (1024) plus what the socket
    // holds, while this client reads nothing.
    // About 3 KB each, so the socket's buffers fill after a few thousand.
    let padding: std::collections::BTreeMap<String, f64> = (0..100)
        .map(|k| (format!("padding_metric_{k:03}"), k as f64))
        .collect();
    // Plain publishes (the stream stores them all the same): JetStream
    // publishes would wait for their acks every few hundred.
    let conn = h.connect().await;
    let client = conn.client().clone();
    for i in 0..6000u64 {
        let snapshot = MetricsSnapshot {
            service_name: "busy-service".into(),
            instance_id: "busy-1".into(),
            timestamp: chrono::Utc::now(),
            queue_depth: i,
            custom: padding.clone(),
            ..Default::default()
        };
        client
            .publish(
                metrics_subject("busy-service", "busy-1"),
                serde_json::to_vec(&snapshot).unwrap().into(),
            )
            .await
            .unwrap();
    }
    client.flush().await.unwrap();
    let lagged = events.next_named("lagged").await;
    assert!(lagged["skipped"].as_u64().unwrap() > 0, "{lagged}");

    // Still subscribed: a new snapshot arrives.
    let snapshot = MetricsSnapshot {
        service_name: "busy-service".into(),
        instance_id: "busy-1".into(),
        timestamp: chrono::Utc::now(),
        queue_depth: 1_000_000,
        ..Default::default()
    };
    conn.jetstream()
        .publish(
            metrics_subject("busy-service", "busy-1"),
            serde_json::to_vec(&snapshot).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    loop {
        let e = events.next_named("metrics").await;
        if e["snapshot"]["queueDepth"] == 1_000_000 {
            break;
        }
    }
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_first_list_after_a_quiet_spell_has_current_heartbeats() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let _reg = register(&conn, "quiet-list", "ql-1", Duration::from_millis(200)).await;
    let heartbeat = |body: &Value| -> chrono::DateTime<chrono::Utc> {
        body[0]["lastHeartbeat"]
            .as_str()
            .expect("a listed instance")
            .parse()
            .unwrap()
    };
    eventually(Duration::from_secs(5), "listed", || async {
        h.get("/api/instances", Some(VIEWER))
            .await
            .body
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let first = heartbeat(&h.get("/api/instances", Some(VIEWER)).await.body);
    h.get("/api/instances/quiet-list", Some(VIEWER))
        .await
        .expect(200, None);

    // No API request from here on while the record is rewritten every
    // 200 ms; the bucket (not the API) says when the newest write is well
    // past the 1 s bound.
    let bucket = conn
        .jetstream()
        .get_key_value(REGISTRY_BUCKET)
        .await
        .unwrap();
    let key = registry_key("quiet-list", "ql-1");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let written = loop {
        let entry = bucket.get(&key).await.unwrap().expect("the record");
        let record: ServiceInstance = serde_json::from_slice(&entry).unwrap();
        if record.last_heartbeat > first + chrono::Duration::seconds(3) {
            break record.last_heartbeat;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the record is not refreshed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // docs/api.md: a list shows a lastHeartbeat at most 1 s older than the
    // newest record write, the first answer after a quiet spell included.
    let listed = heartbeat(&h.get("/api/instances", Some(VIEWER)).await.body);
    assert!(
        listed >= written - chrono::Duration::seconds(1),
        "listed {listed}, first {first}, newest write {written}"
    );
    let listed = heartbeat(&h.get("/api/instances/quiet-list", Some(VIEWER)).await.body);
    assert!(
        listed >= written - chrono::Duration::seconds(1),
        "service list: listed {listed}, newest write {written}"
    );
}
