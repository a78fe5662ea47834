//! The failover timeline (`GET /api/leadership/{service}`) against a real
//! nats-server: real sticky SDK instances handing leadership over on a
//! graceful stop, a crash told apart by the missing goodbye and measured
//! from the old leader's last metrics snapshot, the same leader re-elected
//! with a new epoch after a restart as a new term, a term whose key nobody
//! renews any more as lapsed, and bad input.

mod common;

use std::time::Duration;

use aegis_contracts::{
    log::{LogKind, LogLevel, LogRecord},
    subjects::{ELECTIONS_BUCKET, log_subject, metrics_subject},
};
use aegis_sdk::{
    Connection,
    election::{LeaderRecord, Role},
    rpc::Service,
};
use chrono::Utc;
use common::{Harness, VIEWER, eventually};
use serde_json::{Value, json};

async fn sticky(conn: &Connection, id: &str) -> Service {
    conn.service("order-service", "1.0.0")
        .instance_id(id)
        .single_active("main")
        .heartbeat(Duration::from_millis(300))
        .ttl(Duration::from_secs(2))
        .handler("ping", |_: Value| async move { Ok(json!("pong")) })
        .start()
        .await
        .expect("start a sticky instance")
}

/// Stores `body` on `subject` through JetStream (the ack awaited).
async fn store(js: &async_nats::jetstream::Context, subject: String, body: Vec<u8>) {
    js.publish(subject, body.into())
        .await
        .unwrap()
        .await
        .unwrap();
}

/// An `elected` lifecycle record at `at` with fencing `epoch`, as JSON.
fn elected(at: chrono::DateTime<Utc>, epoch: u64) -> Vec<u8> {
    serde_json::to_vec(
        &LogRecord::new(
            at,
            LogLevel::Info,
            LogKind::Elected,
            "elected ACTIVE leader",
        )
        .with_field("epoch", epoch),
    )
    .unwrap()
}

async fn terms(h: &Harness, path: &str) -> Vec<Value> {
    let r = h.get(path, Some(VIEWER)).await;
    r.expect(200, None);
    r.body["terms"].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_graceful_stop_hands_over_and_the_timeline_says_how_fast() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let path = "/api/leadership/order-service?group=main";
    let first = sticky(&conn, "order-a").await;
    eventually(Duration::from_secs(10), "order-a elected", || async {
        terms(&h, path).await.len() == 1
    })
    .await;
    let second = sticky(&conn, "order-b").await;
    first.shutdown().await.expect("graceful stop");
    eventually(Duration::from_secs(10), "order-b elected", || async {
        terms(&h, path).await.len() == 2
    })
    .await;
    let t = terms(&h, path).await;
    assert_eq!(t[0]["instanceId"], "order-a");
    assert!(
        matches!(t[0]["endReason"].as_str(), Some("resigned" | "stopped")),
        "{t:?}"
    );
    assert!(t[0]["endedAt"].is_string());
    assert!(t[0]["epoch"].as_u64().is_some(), "{t:?}");
    assert_eq!(t[1]["instanceId"], "order-b");
    assert_eq!(t[1]["handoverFrom"], "order-a");
    assert_eq!(t[1]["handoverBasis"], "notice");
    let ms = t[1]["handoverMs"].as_f64().expect("a hand-over time");
    assert!((0.0..2000.0).contains(&ms), "hand-over took {ms} ms");
    assert!(t[1]["endedAt"].is_null(), "order-b still leads: {t:?}");
    assert!(t[1]["epoch"].as_u64() > t[0]["epoch"].as_u64(), "{t:?}");
    second.shutdown().await.expect("graceful stop");
}

/// A lapse of the lease, made as in the SDK's `commands_lapse.rs`: the
/// nats-server is stopped (SIGSTOP) until the leader stops serving, with
/// no standby to take over. It serves again at the same epoch: the
/// timeline says it resumed, not that it handed over to itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_serving_again_after_a_lapse_of_its_lease_resumed() {
    let mut h = Harness::start().await;
    let conn = h.connect().await;
    let path = "/api/leadership/order-service?group=main";
    let leader = sticky(&conn, "order-a").await;
    let election = leader.election().unwrap();
    let leadership = election.leadership();
    eventually(Duration::from_secs(10), "order-a elected", || async {
        terms(&h, path).await.len() == 1
    })
    .await;
    let epoch = leadership.serving_epoch().expect("order-a serves");

    // Until its renewal fails: it then steps down to STANDBY, keeping the
    // key (a lease run out with no renewal tried yet changes no role).
    h.nats.pause();
    eventually(
        Duration::from_secs(10),
        "order-a steps down when its lease runs out unrenewed",
        || async { matches!(election.role(), Role::Standby { .. }) },
    )
    .await;
    h.nats.resume();
    eventually(Duration::from_secs(10), "order-a serves again", || async {
        leadership.serving_epoch().is_some()
    })
    .await;
    assert_eq!(
        leadership.serving_epoch(),
        Some(epoch),
        "a lapse, not a new term"
    );

    eventually(
        Duration::from_secs(10),
        "the timeline reads the resumption",
        || async { terms(&h, path).await.len() == 2 },
    )
    .await;
    let t = terms(&h, path).await;
    // It said why it stopped serving.
    assert_eq!(t[0]["endReason"], "lapsed", "{t:?}");
    assert_eq!(t[1]["instanceId"], "order-a");
    assert_eq!(t[1]["epoch"].as_u64(), Some(epoch), "{t:?}");
    assert_eq!(t[1]["handoverFrom"], "order-a");
    assert_eq!(t[1]["handoverBasis"], "resumed", "{t:?}");
    let ms = t[1]["handoverMs"]
        .as_f64()
        .expect("how long it did not serve");
    assert!((0.0..20_000.0).contains(&ms), "{ms} ms");
    assert!(t[1]["endedAt"].is_null(), "order-a leads on: {t:?}");
    leader.shutdown().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_vanished_is_superseded_and_measured_from_its_last_snapshot() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let js = conn.jetstream();
    let publish = |subject: String, body: Vec<u8>| store(js, subject, body);
    let t0 = Utc::now() - chrono::Duration::seconds(5);
    publish(log_subject("order-service", "order-x"), elected(t0, 3)).await;
    // The old leader's last sign of life: a metrics snapshot stored now.
    let snapshot = json!({
        "serviceName": "order-service", "instanceId": "order-x",
        "timestamp": Utc::now(), "uptimeSecs": 5.0, "intervalSecs": 2.0,
        "endpoints": [], "queueDepth": 0, "inFlight": 0, "custom": {}
    });
    publish(
        metrics_subject("order-service", "order-x"),
        serde_json::to_vec(&snapshot).unwrap(),
    )
    .await;
    let t1 = Utc::now() + chrono::Duration::milliseconds(300);
    publish(log_subject("order-service", "order-y"), elected(t1, 7)).await;

    let t = terms(&h, "/api/leadership/order-service").await;
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[0]["endReason"], "superseded");
    assert_eq!(t[1]["handoverBasis"], "lastSeen");
    assert_eq!(t[1]["handoverFrom"], "order-x");
    let ms = t[1]["handoverMs"]
        .as_f64()
        .expect("bounded by the last snapshot");
    assert!((250.0..5000.0).contains(&ms), "{ms} ms");
    assert_eq!(t[1]["epoch"], 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_re_elected_after_a_restart_has_a_new_term_and_the_gap_is_nobodys() {
    // The whole fleet stopped and started again: order-x led with epoch 3,
    // its process died without a goodbye, the new process under the same id
    // published a snapshot and then won the key again with epoch 9.
    let h = Harness::start().await;
    let conn = h.connect().await;
    let js = conn.jetstream();
    let publish = |subject: String, body: Vec<u8>| store(js, subject, body);
    let snapshot = |uptime: f64| {
        serde_json::to_vec(&json!({
            "serviceName": "order-service", "instanceId": "order-x",
            "timestamp": Utc::now(), "uptimeSecs": uptime, "intervalSecs": 2.0,
            "endpoints": [], "queueDepth": 0, "inFlight": 0, "custom": {}
        }))
        .unwrap()
    };
    let subject = metrics_subject("order-service", "order-x");
    let t0 = Utc::now() - chrono::Duration::seconds(5);
    publish(log_subject("order-service", "order-x"), elected(t0, 3)).await;
    // The old process's last sign of life (running since before t0).
    publish(subject.clone(), snapshot(6.0)).await;
    let old_seen = Utc::now();
    // The new process, started just now, publishes before it is elected.
    publish(subject.clone(), snapshot(0.05)).await;
    let t1 = Utc::now() + chrono::Duration::milliseconds(300);
    publish(log_subject("order-service", "order-x"), elected(t1, 9)).await;

    let t = terms(&h, "/api/leadership/order-service").await;
    assert_eq!(t.len(), 2, "a new epoch is a new term: {t:?}");
    assert_eq!(
        (t[0]["epoch"].as_u64(), t[1]["epoch"].as_u64()),
        (Some(3), Some(9))
    );
    assert_eq!(t[0]["endReason"], "superseded");
    let ended: chrono::DateTime<Utc> = t[0]["endedAt"].as_str().unwrap().parse().unwrap();
    assert!(
        ended <= old_seen,
        "the old term ends at the old process's last snapshot, not later: {t:?}"
    );
    assert_eq!(t[1]["handoverFrom"], "order-x");
    assert_eq!(t[1]["handoverBasis"], "lastSeen");
    let ms = t[1]["handoverMs"]
        .as_f64()
        .expect("measured from the last snapshot");
    assert!((250.0..5000.0).contains(&ms), "{ms} ms");
    assert!(t[1]["endedAt"].is_null(), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_term_whose_key_is_no_longer_renewed_has_lapsed_while_a_live_one_lasts() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    // A real leader, renewing its key, on another service.
    let live = sticky(&conn, "order-live").await;
    eventually(Duration::from_secs(10), "order-live elected", || async {
        terms(&h, "/api/leadership/order-service").await.len() == 1
    })
    .await;
    // A leader that died (or a fleet that was stopped): its key names it
    // but nobody renews it and nobody is there to take it over.
    let js = conn.jetstream();
    let keys = js.get_key_value(ELECTIONS_BUCKET).await.unwrap();
    let renewed_at = Utc::now();
    let record = LeaderRecord {
        instance_id: "lapse-1".to_owned(),
        epoch: 0,
        lease_ms: 400,
        renewed_at: renewed_at.to_rfc3339(),
    };
    let epoch = keys
        .put(
            "sticky-active.lapse-service.main",
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
    let elected = LogRecord::new(
        renewed_at,
        LogLevel::Info,
        LogKind::Elected,
        "elected ACTIVE leader",
    )
    .with_field("epoch", epoch);
    js.publish(
        log_subject("lapse-service", "lapse-1"),
        serde_json::to_vec(&elected).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();

    eventually(
        Duration::from_secs(10),
        "the unrenewed term lapsed",
        || async {
            let t = terms(&h, "/api/leadership/lapse-service").await;
            t.len() == 1 && t[0]["endReason"] == "lapsed"
        },
    )
    .await;
    let t = terms(&h, "/api/leadership/lapse-service").await;
    assert_eq!(t[0]["epoch"], epoch, "{t:?}");
    let ended: chrono::DateTime<Utc> = t[0]["endedAt"].as_str().unwrap().parse().unwrap();
    // Its last renewal plus its lease, not when the monitor noticed.
    assert_eq!(
        ended,
        renewed_at + chrono::Duration::milliseconds(400),
        "{t:?}"
    );
    // The live leader has renewed all along (longer than a lease and the
    // slack by now): its term lasts.
    let t = terms(&h, "/api/leadership/order-service").await;
    assert_eq!(t.len(), 1, "{t:?}");
    assert!(t[0]["endedAt"].is_null(), "a renewed term lasts: {t:?}");
    live.shutdown().await.expect("graceful stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_and_the_route_needs_a_token() {
    let h = Harness::start().await;
    h.get("/api/leadership/order-service", None)
        .await
        .expect(401, Some("UNAUTHORIZED"));
    h.get("/api/leadership/order-service?window=soon", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/order-service?group=a.b", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/order-service?other=1", Some(VIEWER))
        .await
        .expect(400, Some("BAD_REQUEST"));
    h.get("/api/leadership/Not.A.Service", Some(VIEWER))
        .await
        .expect(404, Some("SERVICE_NOT_FOUND"));
    let r = h.get("/api/leadership/quiet-service", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["terms"], json!([]));
    assert_eq!(r.body["windowSecs"], 3600);
    assert_eq!(r.body["truncated"], false);
    // A window longer than `AEGIS_LOG` keeps is clamped to 24 h, as the
    // metrics history clamps its own, and `windowSecs` says so.
    for (window, secs) in [("48h", 86_400), ("24h", 86_400), ("0s", 1)] {
        let path = format!("/api/leadership/quiet-service?window={window}");
        let r = h.get(&path, Some(VIEWER)).await;
        r.expect(200, None);
        assert_eq!(r.body["windowSecs"], secs, "{path}: {}", r.body);
    }
    let r = h
        .get(
            "/api/instances/quiet-service/q-1/metrics?window=48h",
            Some(VIEWER),
        )
        .await;
    r.expect(200, None);
    assert_eq!(r.body["windowSecs"], 3600, "{}", r.body);
}

/// A key that goes unrenewed while its holder still beats has not lapsed:
/// what stalled is the key's watch (after a NATS node died, the elections
/// stream elects a leader for seconds), not the leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrenewed_key_whose_holder_still_beats_has_not_lapsed() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    // stall-1 runs and beats (a registered instance), but its key below is
    // never renewed: as the monitor sees it while the watch is stalled.
    let _running = conn
        .service("stall-service", "1.0.0")
        .instance_id("stall-1")
        .handler("noop", |_: Value| async move {
            Ok::<_, aegis_sdk::rpc::WireError>(json!({}))
        })
        .start()
        .await
        .unwrap();
    let js = conn.jetstream();
    let keys = js.get_key_value(ELECTIONS_BUCKET).await.unwrap();
    let renewed_at = Utc::now();
    let record = LeaderRecord {
        instance_id: "stall-1".to_owned(),
        epoch: 0,
        lease_ms: 400,
        renewed_at: renewed_at.to_rfc3339(),
    };
    let epoch = keys
        .put(
            "sticky-active.stall-service.main",
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap();
    store(
        js,
        log_subject("stall-service", "stall-1"),
        elected(renewed_at, epoch),
    )
    .await;
    eventually(Duration::from_secs(10), "the term is listed", || async {
        terms(&h, "/api/leadership/stall-service").await.len() == 1
    })
    .await;
    // Past the lease and the slack, with beats going on: the term lasts.
    let quiet_until = tokio::time::Instant::now() + Duration::from_millis(2500);
    while tokio::time::Instant::now() < quiet_until {
        let t = terms(&h, "/api/leadership/stall-service").await;
        assert!(
            t[0]["endedAt"].is_null(),
            "a beating holder's term lasts: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// An incident: the fleet logs WARN/ERROR records on the same subjects as
/// its lifecycle records, more of them in the window than one request
/// scans. The newest records are the ones read, so the leader elected
/// after the flood is the current one, and the answer says older records
/// were skipped. Nothing is known of the unread middle: a leader elected
/// before it is not linked to one elected after it, and leads on only
/// while its election key names it; one whose key names nobody (it
/// stopped in the middle) is not shown leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_warnings_does_not_hide_the_latest_election() {
    let h = Harness::start().await;
    let conn = h.connect().await;
    let js = conn.jetstream();
    let t0 = Utc::now() - chrono::Duration::seconds(60);
    store(js, log_subject("order-service", "order-x"), elected(t0, 3)).await;
    // Another service whose leader was elected before the same flood and
    // leads on (its key names it): it is not lost to the newest records.
    store(js, log_subject("risk-service", "risk-x"), elected(t0, 5)).await;
    let keys = js.get_key_value(ELECTIONS_BUCKET).await.unwrap();
    let record = LeaderRecord {
        instance_id: "risk-x".to_owned(),
        epoch: 5,
        lease_ms: 600_000,
        renewed_at: Utc::now().to_rfc3339(),
    };
    keys.put(
        "sticky-active.risk-service.default",
        serde_json::to_vec(&record).unwrap().into(),
    )
    .await
    .unwrap();
    // A third, whose leader was elected before the flood and whose key
    // names nobody now: its term ended in the unread middle.
    store(js, log_subject("audit-service", "audit-x"), elected(t0, 4)).await;
    // More than the 20 000 records a request scans, spread over three
    // noisy instances (the stream keeps 10 000 per instance).
    let warning = serde_json::to_vec(&LogRecord::new(
        Utc::now(),
        LogLevel::Warn,
        LogKind::Log,
        "downstream timed out",
    ))
    .unwrap();
    for (service, noisy) in [
        ("order-service", "order-n1"),
        ("order-service", "order-n2"),
        ("order-service", "order-n3"),
        ("risk-service", "risk-n1"),
        ("risk-service", "risk-n2"),
        ("risk-service", "risk-n3"),
        ("audit-service", "audit-n1"),
        ("audit-service", "audit-n2"),
        ("audit-service", "audit-n3"),
    ] {
        for _ in 0..7 {
            let mut acks = Vec::with_capacity(1000);
            for _ in 0..1000 {
                let ack = js
                    .publish(log_subject(service, noisy), warning.clone().into())
                    .await
                    .unwrap();
                acks.push(ack);
            }
            for ack in acks {
                ack.await.unwrap();
            }
        }
    }
    let t1 = Utc::now();
    store(js, log_subject("order-service", "order-y"), elected(t1, 7)).await;

    let r = h.get("/api/leadership/order-service", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["truncated"], true, "{}", r.body);
    let t = r.body["terms"].as_array().cloned().unwrap_or_default();
    let last = t.last().expect("a term");
    assert_eq!(last["instanceId"], "order-y", "{t:?}");
    assert_eq!(last["epoch"], 7, "{t:?}");
    assert!(last["endedAt"].is_null(), "order-y leads now: {t:?}");
    assert_eq!(t.len(), 2, "the first election is read too: {t:?}");
    assert!(
        last["handoverFrom"].is_null() && last["handoverMs"].is_null(),
        "no hand-over across the unread middle: {t:?}"
    );
    assert_eq!(t[0]["instanceId"], "order-x", "{t:?}");
    assert_eq!(t[0]["endReason"], "unread", "{t:?}");

    let r = h.get("/api/leadership/risk-service", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["truncated"], true, "{}", r.body);
    let t = r.body["terms"].as_array().cloned().unwrap_or_default();
    let last = t.last().expect("the leader elected before the flood");
    assert_eq!(last["instanceId"], "risk-x", "{t:?}");
    assert!(last["endedAt"].is_null(), "risk-x leads on: {t:?}");

    let r = h.get("/api/leadership/audit-service", Some(VIEWER)).await;
    r.expect(200, None);
    assert_eq!(r.body["truncated"], true, "{}", r.body);
    let t = r.body["terms"].as_array().cloned().unwrap_or_default();
    let last = t.last().expect("the leader elected before the flood");
    assert_eq!(last["instanceId"], "audit-x", "{t:?}");
    assert_eq!(last["endReason"], "unread", "audit-x leads no more: {t:?}");
    assert!(!last["endedAt"].is_null(), "{t:?}");
}
