//! A graceful `Connection::drain` says nothing is wrong: tried as a new
//! user would, a caller that had used `call` and `call_active` logged
//! "aegis election watch broke; serving the last known view while
//! re-creating it" (or the registry watch's) in about one drain of five,
//! since the drain closed the watch's subscription before the watch saw
//! that it was being stopped. With a log layer attached, that WARN
//! reached the monitor as a problem.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_sdk::rpc::{CallOptions, WireError};
use common::{connect, server};
use serde_json::{Value, json};
use tracing::{Event, Level, Subscriber, field::Visit};
use tracing_subscriber::{Layer, layer::Context, prelude::*};

/// Keeps the message of every WARN and ERROR event.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl<S: Subscriber> Layer<S> for Warnings {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        if *event.metadata().level() > Level::WARN {
            return;
        }
        struct Message(String);
        impl Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                use std::fmt::Write;
                let _ = write!(self.0, " {}={value:?}", field.name());
            }
        }
        let mut message = Message(String::new());
        event.record(&mut message);
        self.0.lock().unwrap().push(message.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_after_calls_logs_no_warning() {
    let warnings = Warnings::default();
    tracing_subscriber::registry().with(warnings.clone()).init();
    let nats = server();
    let conn = connect(&nats.url()).await;
    let service = conn
        .service("quiet-service", "1.0.0")
        .instance_id("quiet-1")
        .single_active("default")
        .handler("ping", |v: Value| async move { Ok::<_, WireError>(v) })
        .start()
        .await
        .unwrap();
    for round in 0..20 {
        let caller = connect(&nats.url()).await;
        let rpc = caller.rpc();
        let answer: Value = rpc
            .call("quiet-service", "ping", &json!(round))
            .await
            .unwrap();
        assert_eq!(answer, json!(round));
        let answer = rpc
            .call_active::<_, Value>(
                "quiet-service",
                "default",
                "ping",
                &json!(round),
                &CallOptions::default(),
            )
            .await
            .unwrap();
        assert_eq!(answer.value, json!(round));
        caller.drain().await.unwrap();
        // Whatever the watches would say after the drain, said by now.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let said = warnings.0.lock().unwrap().clone();
        assert!(said.is_empty(), "round {round}: a drain logged {said:#?}");
    }
    service.shutdown().await.unwrap();
}
