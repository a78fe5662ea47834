//! A sticky leader's graceful stop hands over without failing the calls
//! it is serving: a call it took before the stop is answered by it, as a
//! plain success, before the standby takes over; a call sent while it
//! steps down is served by the successor. (Before, the leader resigned
//! first and finished the call as a deposed leader: every planned
//! restart turned a non-idempotent `call_active` in flight into a
//! CONFLICT, though it had run.)

mod common;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aegis_sdk::rpc::{CallOptions, RequestContext, RpcError, Service, WireError};
use common::{connect, eventually, server};
use serde_json::{Value, json};

type Runs = Arc<Mutex<Vec<String>>>;

async fn quote_instance(url: &str, id: &str, runs: Runs) -> Service {
    let conn = connect(url).await;
    let me = id.to_owned();
    conn.service("quote-service", "1.0.0")
        .instance_id(id)
        .single_active("default")
        .handler_with_context("quote", move |ctx: RequestContext, body: Value| {
            let (runs, me) = (runs.clone(), me.clone());
            async move {
                runs.lock().unwrap().push(me.clone());
                let ms = body["sleep_ms"].as_u64().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, WireError>(json!({"by": me, "epoch": ctx.epoch}))
            }
        })
        .start()
        .await
        .unwrap()
}

fn leads(service: &Service) -> bool {
    service
        .election()
        .unwrap()
        .leadership()
        .serving_epoch()
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_in_flight_on_a_stopping_leader_is_answered_not_refused() {
    let nats = server();
    let runs: Runs = Arc::default();
    let a = quote_instance(&nats.url(), "quote-a", runs.clone()).await;
    eventually(Duration::from_secs(10), "A leads", || async { leads(&a) }).await;
    let b = quote_instance(&nats.url(), "quote-b", runs.clone()).await;
    let client = connect(&nats.url()).await;
    // Not idempotent: it must run once, and its caller must learn how.
    let opts = CallOptions::timeout(Duration::from_secs(10));
    let call = |body: Value| {
        let (client, opts) = (client.clone(), opts.clone());
        tokio::spawn(async move {
            client
                .rpc()
                .call_active::<_, Value>("quote-service", "default", "quote", &body, &opts)
                .await
        })
    };
    let slow = call(json!({"sleep_ms": 800}));
    eventually(Duration::from_secs(5), "A runs the slow call", || async {
        runs.lock().unwrap().len() == 1
    })
    .await;

    let stopping = Instant::now();
    let a_leadership = a.election().unwrap().leadership();
    let stop = tokio::spawn(a.shutdown());
    // Sent while A steps down (it takes no new call then): its successor
    // serves it.
    eventually(Duration::from_secs(5), "A steps down", || async {
        a_leadership.stepping_down()
    })
    .await;
    let during = call(json!({}));

    let slow: Result<_, RpcError> = slow.await.unwrap();
    let slow = slow.expect("the call A took before its stop is answered as a success");
    assert_eq!(slow.value["by"], "quote-a");
    let during = during.await.unwrap().expect("a call sent during the stop");
    assert_eq!(during.value["by"], "quote-b");
    stop.await.unwrap().unwrap();
    eventually(Duration::from_secs(5), "B leads", || async { leads(&b) }).await;
    assert_eq!(
        *runs.lock().unwrap(),
        ["quote-a", "quote-b"],
        "each call ran once"
    );
    // The stop waited for the call, not for the lease.
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    b.shutdown().await.unwrap();
}
