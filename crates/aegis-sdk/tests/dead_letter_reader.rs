//! `dead_letter::recent` as the monitor runs it: connected as a user with
//! only the monitor's grants on `DEAD_LETTER` (consume, not delete: see
//! `aegis::permissions`, the monitor role), against a real nats-server.
//! Reading the dead letters must not wait on a request the server refuses,
//! and must leave no consumer behind for good.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use aegis_sdk::{
    AegisConfig, Connection, Secret,
    events::{DeliveryMode, Event},
};
use aegis_testkit::NatsServer;
use common::eventually;
use serde_json::{Value, json};

/// The monitor's grants on `DEAD_LETTER` and the origin streams it looks
/// originals up in, written out as `aegis::permissions` renders them (the
/// SDK cannot depend on that crate): consume `DEAD_LETTER`, read `EVENTS`.
const USERS: &str = r#"[
  { user: "admin", password: "admin-pw" },
  { user: "monitor", password: "monitor-pw", permissions: {
      publish: { allow: [
        "$JS.API.INFO",
        "$JS.API.STREAM.INFO.DEAD_LETTER",
        "$JS.API.STREAM.MSG.GET.DEAD_LETTER",
        "$JS.API.DIRECT.GET.DEAD_LETTER",
        "$JS.API.DIRECT.GET.DEAD_LETTER.>",
        "$JS.API.CONSUMER.CREATE.DEAD_LETTER",
        "$JS.API.CONSUMER.CREATE.DEAD_LETTER.>",
        "$JS.API.CONSUMER.INFO.DEAD_LETTER.*",
        "$JS.API.CONSUMER.MSG.NEXT.DEAD_LETTER.*",
        "$JS.ACK.DEAD_LETTER.>",
        "$JS.FC.DEAD_LETTER.>",
        "$JS.API.STREAM.INFO.EVENTS",
        "$JS.API.STREAM.MSG.GET.EVENTS",
        "$JS.API.DIRECT.GET.EVENTS",
        "$JS.API.DIRECT.GET.EVENTS.>"
      ] }
      subscribe: { allow: ["_INBOX_monitor.>"] }
  } }
]"#;

/// Connects as `user`, with a request timeout long enough that a request
/// left unanswered stands out from a quick read.
async fn connect_as(server: &NatsServer, user: &str, password: &str) -> Connection {
    let mut config = AegisConfig::with_servers(server.url());
    config.nats.user = Some(user.to_owned());
    config.nats.password = Some(Secret::new(password));
    config.nats.inbox_prefix = Some(format!("_INBOX_{user}"));
    config.nats.request_timeout = Duration::from_secs(10);
    Connection::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connect as {user}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_reads_dead_letters_without_waiting_on_a_refused_delete() {
    let nats = NatsServer::builder()
        .app_users(USERS.to_owned())
        .start()
        .expect("start nats-server with an admin and a monitor user");
    let admin = connect_as(&nats, "admin", "admin-pw").await;
    let failures = Arc::new(AtomicUsize::new(0));
    let sub = {
        let failures = failures.clone();
        admin
            .events()
            .subscribe::<Value>("audit-service", "order.created", DeliveryMode::Compete)
            .max_deliver(1)
            .handler(move |_e: Event<Value>| {
                failures.fetch_add(1, Ordering::SeqCst);
                async { Err("the ledger is closed".into()) }
            })
            .start()
            .await
            .unwrap()
    };
    admin
        .events()
        .publish("order", "created", &json!({"n": 1}))
        .await
        .unwrap();
    let js = admin.jetstream().clone();
    eventually(Duration::from_secs(30), "a dead letter", || {
        let js = js.clone();
        async move {
            aegis_sdk::dead_letter::recent(&js, 10)
                .await
                .is_ok_and(|d| d.len() == 1)
        }
    })
    .await;

    let monitor = connect_as(&nats, "monitor", "monitor-pw").await;
    for _ in 0..2 {
        let started = Instant::now();
        let dead = aegis_sdk::dead_letter::recent(monitor.jetstream(), 10)
            .await
            .expect("the monitor reads dead letters");
        let took = started.elapsed();
        assert_eq!(dead.len(), 1, "{dead:?}");
        assert_eq!(dead[0].payload, Some(json!({"n": 1})));
        // Generous: a read takes milliseconds; a refused request waits out
        // the 10 s timeout.
        assert!(took < Duration::from_secs(5), "reading took {took:?}");
    }
    // The readers it leaves behind go by themselves.
    eventually(Duration::from_secs(30), "no reader consumer left", || {
        let js = js.clone();
        async move {
            let mut stream = js.get_stream("DEAD_LETTER").await.unwrap();
            stream.info().await.unwrap().state.consumer_count == 0
        }
    })
    .await;
    sub.shutdown().await;
}
