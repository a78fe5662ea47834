//! risk-service against a real nats-server: assessments with good, bad and
//! over-limit input (rejected with reasons), `events.risk.assessed`, limits
//! shared by every instance through KV, positions built from
//! `events.order.filled` on every instance, and the custom metrics.

mod common;

use std::time::Duration;

use aegis_contracts::trading::{
    OrderFilled, RISK_SERVICE, ReasonCode, RiskAssessed, Side, TradingEvent,
};
use aegis_sdk::rpc::{CallOptions, ErrorCode};
use aegis_trading::risk::{
    self, AssessRisk, OrderToAssess, Positions, RiskAssessment, RiskLimits, RiskOptions,
};
use common::{
    PATIENCE, Recorder, code, connect, eventually, fill, limits_of, positions_of, publish_fill,
    risk_options, server, update_limits,
};
use serde_json::{Value, json};

fn order(symbol: &str, side: Side, quantity: i64, price: f64) -> AssessRisk {
    AssessRisk {
        order: OrderToAssess {
            order_id: None,
            symbol: symbol.into(),
            side,
            quantity,
            price,
        },
        after_fill: None,
    }
}

/// Starts risk-service as `risk-a` with no position allowed past
/// `max_position`.
async fn start_risk_a_with_max_position(
    conn: &aegis_sdk::Connection,
    max_position: i64,
) -> aegis_trading::Running {
    risk::start(
        conn,
        RiskOptions {
            limits: RiskLimits {
                max_position,
                ..Default::default()
            },
            ..risk_options("risk-a")
        },
    )
    .await
    .unwrap()
}

/// Asks risk-service to assess `request`; the verdict, or the call's error.
async fn try_assess(
    conn: &aegis_sdk::Connection,
    request: &AssessRisk,
) -> Result<RiskAssessment, aegis_sdk::rpc::RpcError> {
    conn.rpc()
        .call::<_, RiskAssessment>(RISK_SERVICE, "assess_risk", request)
        .await
}

/// Asks risk-service to assess `request`; the call must succeed.
async fn assess(conn: &aegis_sdk::Connection, request: &AssessRisk) -> RiskAssessment {
    try_assess(conn, request).await.unwrap()
}

/// Assesses an order with no id and waits until its record is in
/// `assessed`: every assessment sent before it has been recorded too.
async fn assess_unnamed_and_wait_for_its_record(
    conn: &aegis_sdk::Connection,
    assessed: &Recorder<RiskAssessed>,
) {
    assess(conn, &order("MSFT", Side::Sell, 1, 420.0)).await;
    assessed
        .wait_for("the unnamed assessment", |e| e.order_id.is_none())
        .await;
}

/// Publishes `count` fills buying 10 `symbol` each, with order ids
/// `{id_prefix}0`, `{id_prefix}1`, ...; the sequence of the last one.
async fn publish_buys_of_10(
    conn: &aegis_sdk::Connection,
    id_prefix: &str,
    symbol: &str,
    count: usize,
) -> u64 {
    let mut seq = 0;
    for i in 0..count {
        seq = publish_fill(
            conn,
            &fill(&format!("{id_prefix}{i}"), symbol, Side::Buy, 10),
        )
        .await
        .unwrap();
    }
    seq
}

/// [`publish_buys_of_10`] of `AAPL`.
async fn publish_aapl_buys_of_10(
    conn: &aegis_sdk::Connection,
    id_prefix: &str,
    count: usize,
) -> u64 {
    publish_buys_of_10(conn, id_prefix, "AAPL", count).await
}

/// Publishes the first fill of an `EVENTS` stream created again (a buy of
/// `quantity` `symbol`) and checks that it is stored at sequence 1.
async fn publish_first_buy_of_new_events(
    conn: &aegis_sdk::Connection,
    order_id: &str,
    symbol: &str,
    quantity: i64,
) -> u64 {
    let seq = publish_fill(conn, &fill(order_id, symbol, Side::Buy, quantity))
        .await
        .unwrap();
    assert_eq!(seq, 1, "the new stream starts over");
    seq
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_within_limits_pass_and_others_are_rejected_with_reasons() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let assessed =
        Recorder::<RiskAssessed>::start(&conn, "risk-tests", &RiskAssessed::pattern()).await;
    let svc = risk::start(
        &conn,
        RiskOptions {
            limits: RiskLimits {
                max_order_notional: 100_000.0,
                allowed_symbols: vec!["AAPL".into(), "MSFT".into()],
                ..Default::default()
            },
            ..risk_options("risk-a")
        },
    )
    .await
    .unwrap();
    let rpc = conn.rpc();

    let ok: RiskAssessment = rpc
        .call(
            RISK_SERVICE,
            "assess_risk",
            &order("AAPL", Side::Buy, 100, 175.0),
        )
        .await
        .unwrap();
    assert!(ok.approved, "{ok:?}");
    assert!(ok.reasons.is_empty());
    assert!(ok.risk_score > 0.0 && ok.risk_score < 25.0, "{ok:?}");

    // 1 000 × 175 = 175 000 is over the 100 000 notional limit.
    let big: RiskAssessment = rpc
        .call(
            RISK_SERVICE,
            "assess_risk",
            &order("AAPL", Side::Buy, 1_000, 175.0),
        )
        .await
        .unwrap();
    assert!(!big.approved);
    assert_eq!(big.risk_score, 100.0);
    let codes: Vec<_> = big.reasons.iter().map(|r| r.code).collect();
    assert_eq!(codes, [ReasonCode::MaxOrderNotional]);

    let elsewhere: RiskAssessment = rpc
        .call(
            RISK_SERVICE,
            "assess_risk",
            &order("TSLA", Side::Sell, 1, 250.0),
        )
        .await
        .unwrap();
    assert_eq!(elsewhere.reasons[0].code, ReasonCode::SymbolNotAllowed);

    // Bad input never reaches the rules.
    for bad in [
        json!({"order": {"symbol": "AAPL", "side": "buy", "quantity": -5, "price": 1.0}}),
        json!({"order": {"symbol": "AAPL", "side": "buy", "quantity": 0, "price": 1.0}}),
        json!({"order": {"symbol": "aapl", "side": "buy", "quantity": 5, "price": 1.0}}),
        json!({"order": {"symbol": "AAPL", "side": "hold", "quantity": 5, "price": 1.0}}),
        json!({"order": {"symbol": "AAPL", "side": "buy", "quantity": 5, "price": -1.0}}),
        json!({"order": {"symbol": "AAPL", "side": "buy", "quantity": 5}}),
        json!({"symbol": "AAPL"}),
    ] {
        let result = rpc
            .call::<_, Value>(RISK_SERVICE, "assess_risk", &bad)
            .await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{bad}");
    }
    let fields = rpc
        .call::<_, Value>(
            RISK_SERVICE,
            "assess_risk",
            &json!({"order": {"symbol": "aapl", "side": "buy", "quantity": -5, "price": 1.0}}),
        )
        .await
        .unwrap_err();
    let details = fields.remote().unwrap().details.clone().unwrap();
    let named: Vec<_> = details["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(named, ["symbol", "quantity"]);

    // Each verdict is on the record.
    let rejected = assessed
        .wait_for("the over-limit assessment", |e| {
            !e.approved && e.symbol == "AAPL"
        })
        .await;
    assert_eq!(rejected.reasons[0].code, ReasonCode::MaxOrderNotional);
    assert_eq!(rejected.instance_id, "risk-a");
    eventually(PATIENCE, "three assessments recorded", || async {
        assessed.payloads().len() == 3
    })
    .await;

    let custom = svc.service().metrics().snapshot().custom;
    assert_eq!(custom["assessments"], 3.0);
    assert_eq!(custom["rejections"], 2.0);
    assert_eq!(custom["risk_score_lt25"], 1.0);
    assert_eq!(custom["risk_score_ge75"], 2.0);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assessment_named_after_an_order_is_recorded_once() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let assessed =
        Recorder::<RiskAssessed>::start(&conn, "risk-tests", &RiskAssessed::pattern()).await;
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let mut req = order("MSFT", Side::Buy, 10, 420.0);
    req.order.order_id = Some("ord-1".into());
    for _ in 0..2 {
        let verdict: RiskAssessment = assess(&conn, &req).await;
        assert!(verdict.approved);
    }
    // A later, unnamed assessment proves the stream moved past both.
    assess_unnamed_and_wait_for_its_record(&conn, &assessed).await;
    let named: Vec<_> = assessed
        .payloads()
        .into_iter()
        .filter(|e| e.order_id.as_deref() == Some("ord-1"))
        .collect();
    assert_eq!(named.len(), 1, "{named:?}");
    svc.shutdown().await.unwrap();
}

/// An order judged again after the limits changed (its first verdict
/// stored, its decision not: order-service retries it) gets a different
/// verdict; the audit trail holds both, so it never says only "rejected"
/// for an order that was approved and filled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_verdict_for_an_order_is_recorded_too() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let assessed =
        Recorder::<RiskAssessed>::start(&conn, "risk-tests", &RiskAssessed::pattern()).await;
    let svc = risk::start(
        &conn,
        RiskOptions {
            limits: RiskLimits {
                max_order_quantity: 5,
                ..Default::default()
            },
            ..risk_options("risk-a")
        },
    )
    .await
    .unwrap();
    let mut req = order("MSFT", Side::Buy, 10, 420.0);
    req.order.order_id = Some("ord-1".into());
    let first: RiskAssessment = assess(&conn, &req).await;
    assert!(!first.approved, "{first:?}");
    update_limits(&conn, "risk-a", &json!({"max_order_quantity": 100}))
        .await
        .unwrap();
    let second: RiskAssessment = assess(&conn, &req).await;
    assert!(second.approved, "{second:?}");
    // A later, unnamed assessment proves the stream moved past both.
    assess_unnamed_and_wait_for_its_record(&conn, &assessed).await;
    let verdicts: Vec<bool> = assessed
        .payloads()
        .into_iter()
        .filter(|e| e.order_id.as_deref() == Some("ord-1"))
        .map(|e| e.approved)
        .collect();
    assert_eq!(verdicts, [false, true]);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_updates_are_validated_and_reach_every_instance() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let a = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let b = risk::start(&conn, risk_options("risk-b")).await.unwrap();
    let rpc = conn.rpc();
    assert_eq!(
        limits_of(&conn, "risk-b").await.unwrap(),
        RiskLimits::default()
    );

    for bad in [
        json!({"max_order_notional": -1}),
        json!({"max_order_quantity": 0}),
        json!({"max_position": -10}),
        json!({"allowed_symbols": ["ok"]}),
        json!({"max_notional": 5}),
        json!({"max_order_quantity": "many"}),
        json!({}),
    ] {
        let result = rpc
            .call::<_, Value>(RISK_SERVICE, "update_limits", &bad)
            .await;
        assert_eq!(code(result), ErrorCode::InvalidRequest, "{bad}");
    }
    assert_eq!(
        limits_of(&conn, "risk-a").await.unwrap(),
        RiskLimits::default(),
        "nothing changed"
    );

    let updated = update_limits(
        &conn,
        "risk-a",
        &json!({"max_order_notional": 5000.0, "allowed_symbols": ["AAPL"]}),
    )
    .await
    .unwrap();
    assert_eq!(updated.max_order_notional, 5000.0);
    assert_eq!(updated.allowed_symbols, ["AAPL"]);
    assert_eq!(
        updated.max_order_quantity,
        RiskLimits::default().max_order_quantity
    );

    // The other instance judges by the new limits too, once its watch delivers.
    eventually(PATIENCE, "risk-b sees the new limits", || async {
        limits_of(&conn, "risk-b").await.unwrap() == updated
    })
    .await;
    let verdict = rpc
        .call_instance::<_, RiskAssessment>(
            RISK_SERVICE,
            "risk-b",
            "assess_risk",
            &order("AAPL", Side::Buy, 100, 175.0),
            &CallOptions::default(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(verdict.reasons[0].code, ReasonCode::MaxOrderNotional);

    // A restarted instance keeps the stored limits, not its configured ones.
    a.shutdown().await.unwrap();
    let a = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    assert_eq!(limits_of(&conn, "risk-a").await.unwrap(), updated);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// The limits bucket deleted and created again (by hand, or restored from
/// a backup): its revisions start over below the ones an instance has
/// seen, yet the instance must judge by what the new bucket holds, not
/// keep the old limits because their revision was higher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_in_a_bucket_created_again_replace_the_old_ones() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let a = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    // Three updates: the old bucket's last revision is above the new one's.
    for quantity in [900, 800, 700] {
        update_limits(&conn, "risk-a", &json!({ "max_order_quantity": quantity }))
            .await
            .unwrap();
    }
    assert_eq!(
        limits_of(&conn, "risk-a").await.unwrap().max_order_quantity,
        700
    );

    let js = conn.jetstream();
    js.delete_key_value(risk::RISK_LIMITS_BUCKET).await.unwrap();
    let bucket = js
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: risk::RISK_LIMITS_BUCKET.to_owned(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let restored = RiskLimits {
        max_order_quantity: 55,
        ..RiskLimits::default()
    };
    bucket
        .put("limits", serde_json::to_vec(&restored).unwrap().into())
        .await
        .unwrap();
    eventually(
        PATIENCE,
        "risk-a judges by the limits of the bucket created again",
        || async { limits_of(&conn, "risk-a").await.unwrap() == restored },
    )
    .await;
    a.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_builds_positions_from_fills_once_each() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let publish = |event: OrderFilled, id: &str| {
        let events = conn.events();
        let id = id.to_owned();
        async move {
            events
                .publish_with_id(OrderFilled::DOMAIN, OrderFilled::ACTION, &id, &event)
                .await
                .unwrap();
        }
    };
    // A fill before the instances start: replayed from the stream.
    conn.events().ensure_stream().await.unwrap();
    publish(fill("o1", "AAPL", Side::Buy, 100), "f1").await;
    let a = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let b = risk::start(&conn, risk_options("risk-b")).await.unwrap();
    publish(fill("o2", "AAPL", Side::Sell, 30), "f2").await;
    publish(fill("o3", "TSLA", Side::Sell, 5), "f3").await;
    // The same fill again under another event id (a republish after the
    // dedup window): applied once.
    publish(fill("o3", "TSLA", Side::Sell, 5), "f3-again").await;

    for instance in ["risk-a", "risk-b"] {
        eventually(
            PATIENCE,
            &format!("{instance} holds every position"),
            || async {
                let positions = positions_of(&conn, instance).await.unwrap();
                positions.positions.get("AAPL") == Some(&70)
                    && positions.positions.get("TSLA") == Some(&-5)
                    && positions.last_event_sequence == 4
            },
        )
        .await;
    }
    assert_eq!(
        a.service().metrics().snapshot().custom["fills_applied"],
        3.0
    );

    // The position counts: with a 100-share limit, buying 40 more AAPL
    // (to 110) is refused, selling is not.
    let _: RiskLimits = conn
        .rpc()
        .call(RISK_SERVICE, "update_limits", &json!({"max_position": 100}))
        .await
        .unwrap();
    for instance in ["risk-a", "risk-b"] {
        eventually(
            PATIENCE,
            &format!("{instance} refuses the position breach"),
            || async {
                let verdict = conn
                    .rpc()
                    .call_instance::<_, RiskAssessment>(
                        RISK_SERVICE,
                        instance,
                        "assess_risk",
                        &order("AAPL", Side::Buy, 40, 100.0),
                        &CallOptions::default(),
                    )
                    .await
                    .unwrap()
                    .value;
                verdict
                    .reasons
                    .iter()
                    .any(|r| r.code == ReasonCode::MaxPosition)
            },
        )
        .await;
    }
    let sell: RiskAssessment = conn
        .rpc()
        .call(
            RISK_SERVICE,
            "assess_risk",
            &order("AAPL", Side::Sell, 40, 100.0),
        )
        .await
        .unwrap();
    assert!(sell.approved, "{sell:?}");
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// An order id that cannot name an order (nor its audit record) is bad
/// input, said so, not "could not be recorded; retry".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_order_id_is_an_invalid_request() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    for bad in ["a\nb".to_owned(), " ord-1".to_owned(), "x".repeat(100_000)] {
        let mut req = order("AAPL", Side::Buy, 1, 100.0);
        req.order.order_id = Some(bad.clone());
        let err = conn
            .rpc()
            .call::<_, RiskAssessment>(RISK_SERVICE, "assess_risk", &req)
            .await
            .unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest, "{:.40}: {err}", bad);
        assert_eq!(
            err.remote().unwrap().details.as_ref().unwrap()["fields"][0]["field"],
            "order_id"
        );
    }
    svc.shutdown().await.unwrap();
}

/// An assessment that names the newest fill its caller knows of is judged
/// by positions that hold it. A number past every fill the stream holds
/// (the caller learnt it from an `EVENTS` stream created again since) is
/// judged by the newest fill there is, rather than wait for one that never
/// comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assessment_waits_for_the_fill_it_names() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = start_risk_a_with_max_position(&conn, 100).await;
    let sequence = publish_fill(&conn, &fill("o1", "AAPL", Side::Buy, 90))
        .await
        .unwrap();
    // Sent at once, it is judged with the fill of 90 counted: 90 + 20 > 100.
    let mut buy = order("AAPL", Side::Buy, 20, 100.0);
    buy.after_fill = Some(sequence);
    let verdict: RiskAssessment = assess(&conn, &buy).await;
    assert_eq!(
        verdict.reasons[0].code,
        ReasonCode::MaxPosition,
        "{verdict:?}"
    );

    // A fill the stream does not hold: judged by the newest one it does.
    buy.after_fill = Some(sequence + 1_000);
    let verdict: RiskAssessment = assess(&conn, &buy).await;
    assert_eq!(
        verdict.reasons[0].code,
        ReasonCode::MaxPosition,
        "{verdict:?}"
    );
    svc.shutdown().await.unwrap();
}

/// The positions of `instance` once it has seen the fill stored at `sequence`.
async fn positions_after(conn: &aegis_sdk::Connection, instance: &str, sequence: u64) -> Positions {
    eventually(PATIENCE, &format!("{instance} saw #{sequence}"), || async {
        positions_of(conn, instance)
            .await
            .is_ok_and(|p| p.last_event_sequence >= sequence)
    })
    .await;
    positions_of(conn, instance).await.unwrap()
}

/// A fill whose quantity is not positive is no fill order-service makes:
/// it is passed over, said in the log, and the fills after it count. Taken
/// as it came, a sell of -5 was counted as a buy of 5, and a sell of
/// i64::MIN overflowed when signed — a panic that ended the fill follower
/// (debug builds), a wrap that turned the sell into a huge short (release).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_of_no_positive_quantity_is_passed_over() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    for (order_id, side, quantity) in [
        ("bad-1", Side::Sell, -5),
        ("bad-2", Side::Sell, i64::MIN),
        ("bad-3", Side::Buy, 0),
    ] {
        publish_fill(&conn, &fill(order_id, "AAPL", side, quantity))
            .await
            .unwrap();
    }
    let seq = publish_fill(&conn, &fill("good", "AAPL", Side::Buy, 10))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-a", seq).await;
    assert_eq!(positions.positions.get("AAPL"), Some(&10), "{positions:?}");
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_survive_a_restart_under_the_same_id() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let risk_1 = risk::start(&conn, risk_options("risk-1")).await.unwrap();
    let seq = publish_fill(&conn, &fill("o1", "AAPL", Side::Buy, 100))
        .await
        .unwrap();
    assert_eq!(
        positions_after(&conn, "risk-1", seq).await.positions["AAPL"],
        100
    );

    // Stopped and started again with the same id, as a supervisor or
    // Kubernetes does.
    risk_1.shutdown().await.unwrap();
    let risk_1 = risk::start(&conn, risk_options("risk-1")).await.unwrap();
    let seq = publish_fill(&conn, &fill("o2", "AAPL", Side::Buy, 1))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-1", seq).await;
    assert_eq!(positions.positions["AAPL"], 101, "{positions:?}");

    // Crashed (no shutdown) and started again.
    drop(risk_1);
    let risk_1 = risk::start(&conn, risk_options("risk-1")).await.unwrap();
    let seq = publish_fill(&conn, &fill("o3", "AAPL", Side::Buy, 1))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-1", seq).await;
    assert_eq!(positions.positions["AAPL"], 102, "{positions:?}");
    risk_1.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_outlive_the_retention_of_the_fills() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let risk_1 = risk::start(&conn, risk_options("risk-1")).await.unwrap();
    publish_fill(&conn, &fill("o1", "AAPL", Side::Buy, 100))
        .await
        .unwrap();
    let seq = publish_fill(&conn, &fill("o2", "TSLA", Side::Sell, 5))
        .await
        .unwrap();
    positions_after(&conn, "risk-1", seq).await;
    risk_1.shutdown().await.unwrap();

    // The stream no longer holds those fills (past its retention, say).
    let mut events = conn.jetstream().get_stream("EVENTS").await.unwrap();
    events.purge().filter(OrderFilled::subject()).await.unwrap();
    assert_eq!(events.info().await.unwrap().state.messages, 0);

    // A new instance, and the old one restarted, still hold them.
    for instance in ["risk-2", "risk-1"] {
        let risk = risk::start(&conn, risk_options(instance)).await.unwrap();
        let positions = positions_after(&conn, instance, seq).await;
        assert_eq!(
            positions.positions.get("AAPL"),
            Some(&100),
            "{instance}: {positions:?}"
        );
        assert_eq!(
            positions.positions.get("TSLA"),
            Some(&-5),
            "{instance}: {positions:?}"
        );
        risk.shutdown().await.unwrap();
    }
    let risk = risk::start(&conn, risk_options("risk-1")).await.unwrap();
    let seq = publish_fill(&conn, &fill("o3", "AAPL", Side::Buy, 1))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-1", seq).await;
    assert_eq!(positions.positions["AAPL"], 101, "{positions:?}");
    risk.shutdown().await.unwrap();
}

/// Deletes `EVENTS` and creates it again, as an operator may: its
/// sequences start over below the ones the positions were built from.
async fn create_events_again(conn: &aegis_sdk::Connection) {
    conn.jetstream().delete_stream("EVENTS").await.unwrap();
    conn.events().ensure_stream().await.unwrap();
}

/// `EVENTS` created again under a running instance: the new stream's fills
/// move its positions (kept from before: those trades happened), rather
/// than be taken for fills it applied already because their sequences are
/// not above the old stream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_instance_counts_the_fills_of_an_events_stream_created_again() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let seq = publish_aapl_buys_of_10(&conn, "o", 3).await;
    assert_eq!(
        positions_after(&conn, "risk-a", seq).await.positions["AAPL"],
        30
    );

    create_events_again(&conn).await;
    let seq = publish_first_buy_of_new_events(&conn, "n1", "AAPL", 5).await;
    eventually(PATIENCE, "the new stream's fill is counted", || async {
        positions_of(&conn, "risk-a")
            .await
            .is_ok_and(|p| p.positions.get("AAPL") == Some(&35) && p.last_event_sequence == seq)
    })
    .await;
    let seq = publish_fill(&conn, &fill("n2", "AAPL", Side::Sell, 1))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-a", seq).await;
    assert_eq!(positions.positions["AAPL"], 34, "{positions:?}");
    svc.shutdown().await.unwrap();
}

/// An instance started from a positions snapshot of an `EVENTS` stream
/// that was created again since: it keeps the snapshot's positions and
/// counts every fill of the new stream, also those stored at sequences the
/// snapshot had passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_an_events_stream_created_again_does_not_freeze_positions() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let seq = publish_aapl_buys_of_10(&conn, "o", 3).await;
    positions_after(&conn, "risk-a", seq).await;
    // Stopping writes the snapshot, as of sequence 3.
    svc.shutdown().await.unwrap();

    create_events_again(&conn).await;
    publish_fill(&conn, &fill("n1", "AAPL", Side::Buy, 5))
        .await
        .unwrap();
    let svc = risk::start(&conn, risk_options("risk-a")).await.unwrap();
    let positions = positions_of(&conn, "risk-a").await.unwrap();
    assert_eq!(
        (
            positions.positions.get("AAPL"),
            positions.last_event_sequence
        ),
        (Some(&35), 1),
        "{positions:?}"
    );
    let seq = publish_fill(&conn, &fill("n2", "AAPL", Side::Buy, 1))
        .await
        .unwrap();
    let positions = positions_after(&conn, "risk-a", seq).await;
    assert_eq!(positions.positions["AAPL"], 36, "{positions:?}");
    svc.shutdown().await.unwrap();
}

/// `EVENTS` deleted and created again, at once or some seconds later (the
/// feed of fills backs off while the stream is missing), and a fill stored
/// in the new stream at a sequence below the book's: an assessment naming
/// that fill is judged with it, never by the positions of the old stream
/// whose sequence only looks further on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_of_an_events_stream_created_again_is_counted_before_judging() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = start_risk_a_with_max_position(&conn, 100).await;
    for (symbol, pause) in [("AAPL", Duration::ZERO), ("MSFT", Duration::from_secs(3))] {
        let seq = publish_buys_of_10(&conn, &format!("{symbol}-o"), symbol, 5).await;
        positions_after(&conn, "risk-a", seq).await;
        assert!(seq >= 5);

        conn.jetstream().delete_stream("EVENTS").await.unwrap();
        tokio::time::sleep(pause).await;
        conn.events().ensure_stream().await.unwrap();
        let seq = publish_first_buy_of_new_events(&conn, &format!("{symbol}-n1"), symbol, 45).await;

        // 50 + 45 + 20 > 100.
        let mut buy = order(symbol, Side::Buy, 20, 100.0);
        buy.after_fill = Some(seq);
        let verdict: RiskAssessment = assess(&conn, &buy).await;
        let positions = positions_of(&conn, "risk-a").await.unwrap();
        assert!(
            !verdict.approved && verdict.reasons[0].code == ReasonCode::MaxPosition,
            "pause {pause:?}: {verdict:?}; positions {positions:?}"
        );
        assert_eq!(positions.positions[symbol], 95, "{positions:?}");
    }
    svc.shutdown().await.unwrap();
}

/// `EVENTS` deleted and not yet created again: the book is of a stream
/// that is gone, and an assessment naming a fill gets no verdict from it
/// (its old sequence only looks further on than the next stream's) but
/// "catching up; retry"; once the stream is there again with a fill, that
/// fill is counted before the order is judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_order_naming_a_fill_is_judged_while_events_is_gone() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = start_risk_a_with_max_position(&conn, 100).await;
    let seq = publish_aapl_buys_of_10(&conn, "o", 5).await;
    positions_after(&conn, "risk-a", seq).await;

    conn.jetstream().delete_stream("EVENTS").await.unwrap();
    let mut buy = order("AAPL", Side::Buy, 20, 100.0);
    buy.after_fill = Some(1);
    let gone = try_assess(&conn, &buy).await;
    assert!(
        matches!(&gone, Err(e) if e.code() == ErrorCode::ServiceUnavailable
            && e.to_string().contains("catching up; retry")),
        "{gone:?}"
    );

    conn.events().ensure_stream().await.unwrap();
    let seq = publish_first_buy_of_new_events(&conn, "n1", "AAPL", 45).await;
    buy.after_fill = Some(seq);
    // 50 + 45 + 20 > 100.
    let verdict: RiskAssessment = assess(&conn, &buy).await;
    assert!(
        !verdict.approved && verdict.reasons[0].code == ReasonCode::MaxPosition,
        "{verdict:?}"
    );
    svc.shutdown().await.unwrap();
}

/// The feed of fills broken again and again without a fill in between
/// (here by advisories that `EVENTS` was created; node restarts and
/// reconnects do the same) backs off to its longest pause. `EVENTS` then
/// deleted and created again at once, with a fill of the new stream at a
/// sequence below the book's: an assessment naming it is judged with it,
/// at once — the advisory that the stream is back ends the back-off — and
/// never by the old stream's positions once the catch-up timeout has run
/// out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_of_events_created_again_is_counted_however_far_the_feed_backed_off() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = start_risk_a_with_max_position(&conn, 100).await;
    let seq = publish_aapl_buys_of_10(&conn, "o", 5).await;
    positions_after(&conn, "risk-a", seq).await;

    // Each advisory ends the feed; 4 s of them, and no fill, double its
    // pause up to the longest (50 ms, 100 ms, ... 2 s).
    for _ in 0..80 {
        conn.client()
            .publish("$JS.EVENT.ADVISORY.STREAM.CREATED.EVENTS", "{}".into())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The feed is made again on EVENTS: an assessment naming a fill the
    // book holds is answered without waiting (well inside the 500 ms
    // catch-up timeout, with room for a loaded machine).
    eventually(PATIENCE, "the feed follows EVENTS again", || async {
        let mut probe = order("MSFT", Side::Buy, 1, 100.0);
        probe.after_fill = Some(seq);
        let asked = std::time::Instant::now();
        let answer = try_assess(&conn, &probe).await;
        answer.is_ok_and(|v| v.approved) && asked.elapsed() < Duration::from_millis(450)
    })
    .await;

    create_events_again(&conn).await;
    let seq = publish_first_buy_of_new_events(&conn, "n1", "AAPL", 45).await;
    // 50 + 45 + 20 > 100.
    let mut buy = order("AAPL", Side::Buy, 20, 100.0);
    buy.after_fill = Some(seq);
    let verdict = try_assess(&conn, &buy).await;
    let positions = positions_of(&conn, "risk-a").await.unwrap();
    assert!(
        matches!(&verdict, Ok(v) if !v.approved && v.reasons[0].code == ReasonCode::MaxPosition),
        "{verdict:?}; positions {positions:?}"
    );
    svc.shutdown().await.unwrap();
}
