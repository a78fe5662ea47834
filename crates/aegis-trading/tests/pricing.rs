//! pricing-service against a real nats-server: quotes with good and bad
//! input, the common endpoints, load sharing between two instances, the
//! periodic `events.price.updated` (stored once per symbol and slot however
//! many instances publish), and its custom metrics.

mod common;

use std::{collections::HashSet, time::Duration};

use aegis_contracts::trading::{PRICING_SERVICE, PriceUpdated, TradingEvent};
use aegis_sdk::rpc::{CallOptions, ErrorCode};
use aegis_trading::{
    Health, WorkDone,
    pricing::{self, GetPrice, GetPrices, Prices, PricingOptions, Quote, default_symbols},
};
use common::{PATIENCE, Recorder, code, connect, eventually, server};
use serde_json::{Value, json};

fn quiet() -> PricingOptions {
    PricingOptions {
        publish_interval: None,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_price_quotes_known_symbols_and_refuses_the_rest() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = pricing::start(&conn, quiet()).await.unwrap();
    let rpc = conn.rpc();

    for (symbol, base) in [("AAPL", 175.0), ("MSFT", 420.0), ("TSLA", 250.0)] {
        let q: Quote = rpc
            .call(
                PRICING_SERVICE,
                "get_price",
                &GetPrice {
                    symbol: symbol.into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(q.symbol, symbol);
        assert!(q.bid < q.price && q.price < q.ask, "{q:?}");
        assert!((q.price - base).abs() <= base * 0.02 + 0.005, "{q:?}");
    }

    let call = |body: Value| {
        let rpc = rpc.clone();
        async move {
            rpc.call::<_, Value>(PRICING_SERVICE, "get_price", &body)
                .await
        }
    };
    assert_eq!(
        code(call(json!({"symbol": "ZZZZ"})).await),
        ErrorCode::NotFound
    );
    assert_eq!(
        code(call(json!({"symbol": "aapl"})).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(call(json!({"symbol": ""})).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(call(json!({"ticker": "AAPL"})).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(call(json!({"symbol": 42})).await),
        ErrorCode::InvalidRequest
    );

    let served = svc.service().metrics().snapshot().custom["prices_served"];
    assert_eq!(served, 3.0, "only successful quotes count");
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_prices_is_bounded_and_reports_unknown_symbols() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = pricing::start(
        &conn,
        PricingOptions {
            max_symbols_per_request: 4,
            ..quiet()
        },
    )
    .await
    .unwrap();
    let rpc = conn.rpc();
    let prices = |symbols: &[&str]| {
        let req = GetPrices {
            symbols: symbols.iter().map(|s| (*s).to_owned()).collect(),
        };
        let rpc = rpc.clone();
        async move {
            rpc.call::<_, Prices>(PRICING_SERVICE, "get_prices", &req)
                .await
        }
    };

    let got = prices(&["GOOGL", "NOPE", "AMZN"]).await.unwrap();
    let symbols: Vec<_> = got.prices.iter().map(|q| q.symbol.as_str()).collect();
    assert_eq!(symbols, ["GOOGL", "AMZN"]);
    assert_eq!(got.unknown, ["NOPE"]);
    assert!(
        got.prices
            .iter()
            .all(|q| q.bid < q.price && q.price < q.ask)
    );

    assert_eq!(code(prices(&[]).await), ErrorCode::InvalidRequest);
    assert_eq!(
        code(prices(&["A", "B", "C", "D", "E"]).await),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(prices(&["AAPL", "bad symbol"]).await),
        ErrorCode::InvalidRequest
    );
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_answers_echo_health_and_simulate_work() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let svc = pricing::start(
        &conn,
        PricingOptions {
            instance_id: Some("pricing-a".into()),
            ..quiet()
        },
    )
    .await
    .unwrap();
    let rpc = conn.rpc();

    let body = json!({"hello": ["desk", 1, null]});
    let echoed: Value = rpc.call(PRICING_SERVICE, "echo", &body).await.unwrap();
    assert_eq!(echoed, body);

    let health: Health = rpc
        .call(PRICING_SERVICE, "health", &json!(null))
        .await
        .unwrap();
    assert_eq!(health.status, "healthy");
    assert_eq!(health.service, PRICING_SERVICE);
    assert_eq!(health.instance_id, "pricing-a");
    assert_eq!(health.version, aegis_trading::VERSION);

    let started = std::time::Instant::now();
    let done: WorkDone = rpc
        .call(PRICING_SERVICE, "simulate_work", &json!({"ms": 50}))
        .await
        .unwrap();
    assert_eq!(done.slept_ms, 50);
    assert!(started.elapsed() >= Duration::from_millis(50));
    let failed = rpc
        .call::<_, Value>(
            PRICING_SERVICE,
            "simulate_work",
            &json!({"ms": 1, "fail": true}),
        )
        .await;
    assert_eq!(code(failed), ErrorCode::Internal);
    let too_long = rpc
        .call::<_, Value>(PRICING_SERVICE, "simulate_work", &json!({"ms": 60_001}))
        .await;
    assert_eq!(code(too_long), ErrorCode::InvalidRequest);
    let malformed = rpc
        .call::<_, Value>(PRICING_SERVICE, "simulate_work", &json!({"ms": -1}))
        .await;
    assert_eq!(code(malformed), ErrorCode::InvalidRequest);
    svc.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_the_calls() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let a = pricing::start(
        &conn,
        PricingOptions {
            instance_id: Some("pricing-a".into()),
            ..quiet()
        },
    )
    .await
    .unwrap();
    let b = pricing::start(
        &conn,
        PricingOptions {
            instance_id: Some("pricing-b".into()),
            ..quiet()
        },
    )
    .await
    .unwrap();
    // Round-robin through discovery: a handful of calls reach both.
    let mut served = HashSet::new();
    for _ in 0..20 {
        let reply = conn
            .rpc()
            .call_with::<_, Quote>(
                PRICING_SERVICE,
                "get_price",
                &GetPrice {
                    symbol: "AAPL".into(),
                },
                &CallOptions::default(),
            )
            .await
            .unwrap();
        served.insert(reply.instance_id.unwrap());
    }
    assert_eq!(
        served,
        HashSet::from(["pricing-a".to_owned(), "pricing-b".to_owned()])
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotes_are_published_once_per_symbol_and_slot() {
    let nats = server();
    let conn = connect(&nats.url()).await;
    let recorder = Recorder::<PriceUpdated>::start(&conn, "pricing-tests", "price.updated").await;
    let every = Some(Duration::from_millis(100));
    let a = pricing::start(
        &conn,
        PricingOptions {
            instance_id: Some("pricing-a".into()),
            publish_interval: every,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let b = pricing::start(
        &conn,
        PricingOptions {
            instance_id: Some("pricing-b".into()),
            publish_interval: every,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let (metrics_a, metrics_b) = (a.service().metrics().clone(), b.service().metrics().clone());

    let symbols = default_symbols();
    eventually(PATIENCE, "a quote of every symbol", || async {
        let seen: HashSet<String> = recorder.payloads().into_iter().map(|p| p.symbol).collect();
        seen.len() == symbols.len()
    })
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // Both instances published, but the dedup id let each (symbol, slot)
    // through once; what the two count as stored arrived. A stop abandons
    // the publish it is waiting on (`publish_quotes`), which the stream
    // may have stored with nobody left to count it: at most one per
    // instance arrives uncounted.
    let stored = ["pricing-a", "pricing-b"]
        .into_iter()
        .zip([metrics_a, metrics_b])
        .map(|(_, m)| m.snapshot().custom["price_updates_published"])
        .sum::<f64>() as usize;
    eventually(PATIENCE, "every stored quote delivered", || async {
        recorder.events().len() >= stored
    })
    .await;
    let events = recorder.events();
    assert!(
        (stored..=stored + 2).contains(&events.len()),
        "{} quotes arrived, {stored} counted as stored",
        events.len()
    );
    let ids: HashSet<_> = events.iter().map(|e| e.id.clone().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "no (symbol, slot) is stored twice");
    for e in &events {
        let q = &e.payload;
        let base = symbols[&q.symbol];
        assert!(q.bid < q.price && q.price < q.ask, "{q:?}");
        assert!((q.price - base).abs() <= base * 0.02 + 0.005, "{q:?}");
        assert!(["pricing-a", "pricing-b"].contains(&q.instance_id.as_str()));
    }
}

/// Two instances publish every symbol every slot; the stream keeps the
/// first of each (symbol, slot), but core subscribers see both. They must
/// say the same thing: the quote is a function of (symbol, second), not of
/// the instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_quote_a_symbol_alike_in_the_same_second() {
    use futures::StreamExt;

    let nats = server();
    let conn = connect(&nats.url()).await;
    // Everything both instances publish, duplicates included.
    let mut published = conn
        .client()
        .subscribe(PriceUpdated::subject())
        .await
        .unwrap();
    let start = |id: &str| {
        let conn = conn.clone();
        let id = id.to_owned();
        async move {
            pricing::start(
                &conn,
                PricingOptions {
                    instance_id: Some(id),
                    publish_interval: Some(Duration::from_millis(250)),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
        }
    };
    let a = start("pricing-a").await;
    let b = start("pricing-b").await;

    // Per dedup id (symbol and slot), the quote of each instance.
    let mut by_slot: std::collections::HashMap<String, Vec<PriceUpdated>> = Default::default();
    let mut compared = 0;
    let deadline = tokio::time::Instant::now() + common::PATIENCE;
    while compared < 40 {
        let msg = tokio::time::timeout_at(deadline, published.next())
            .await
            .expect("both instances keep publishing")
            .unwrap();
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .expect("a dedup id")
            .as_str()
            .to_owned();
        let quote: PriceUpdated = serde_json::from_slice(&msg.payload).unwrap();
        let quotes = by_slot.entry(id.clone()).or_default();
        quotes.push(quote);
        if let [first, second] = &quotes[..] {
            assert_ne!(first.instance_id, second.instance_id, "{id}");
            assert_eq!(
                (first.price, first.bid, first.ask, first.timestamp),
                (second.price, second.bid, second.ask, second.timestamp),
                "{id}: the two instances disagree"
            );
            compared += 1;
        }
    }

    // Quotes over RPC follow the same walk: two instances asked in the same
    // second answer alike.
    let rpc = conn.rpc();
    let quote_from = |instance: &'static str| {
        let rpc = rpc.clone();
        async move {
            rpc.call_instance::<_, Quote>(
                PRICING_SERVICE,
                instance,
                "get_price",
                &GetPrice {
                    symbol: "NVDA".into(),
                },
                &CallOptions::default(),
            )
            .await
            .unwrap()
            .value
        }
    };
    let mut same_second = 0;
    while same_second < 3 {
        let (qa, qb) = tokio::join!(quote_from("pricing-a"), quote_from("pricing-b"));
        // Two calls may straddle a second; those say nothing.
        if qa.timestamp == qb.timestamp {
            assert_eq!(qa, qb);
            same_second += 1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no two quotes in one second"
        );
    }
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
