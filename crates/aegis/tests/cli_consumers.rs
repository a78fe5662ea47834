//! `aegis consumers list|rm` against a real nats-server running the
//! showcase's users and permissions, with a real SDK subscriber: the
//! operator's tool lists the durable consumers of EVENTS with who reads
//! each, refuses to delete one a running subscriber reads (unless
//! `--force`), deletes a stray one, and names the consumers there are when
//! asked for one that is not.

mod common;

use aegis::permissions::ServiceRole;
use aegis_sdk::events::{DeliveryMode, Event};
use aegis_testkit::wait::{PATIENCE, until_some};
use common::operator_bus::OperatorBus as Bus;
use serde_json::{Value, json};

const SERVICE: &str = "recon-service";
/// The compete consumer of `recon.*`, as the SDK names it.
const LIVE: &str = "recon-service_recon_any";
/// A consumer left by the service's old name: its program is gone, and it
/// holds back every event of `recon.*` since.
const STRAY: &str = "recon-old_recon_any";

fn recon_role() -> ServiceRole {
    ServiceRole {
        service: SERVICE.to_owned(),
        event_domains: vec!["recon".to_owned()],
        event_consumers: vec![LIVE.to_owned(), STRAY.to_owned()],
        ..Default::default()
    }
}

/// Subscribes `service` to `recon.*` with a handler that does nothing.
async fn subscribe(
    conn: &aegis_sdk::Connection,
    service: &str,
) -> aegis_sdk::events::EventSubscription {
    conn.events()
        .subscribe::<Value>(service, "recon.*", DeliveryMode::Compete)
        .handler(|_: Event<Value>| async { Ok(()) })
        .start()
        .await
        .unwrap()
}

/// The line of `out` naming `consumer`.
fn line_of<'a>(out: &'a str, consumer: &str) -> &'a str {
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(consumer))
        .unwrap_or_else(|| panic!("no line for {consumer} in:\n{out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_shows_who_reads_and_rm_deletes_only_a_stray() {
    let bus = Bus::start(recon_role());
    let operator = bus.sdk("operator").await;

    // Before `aegis init`: no stream, said, and nothing made.
    let (code, out, err) = bus.aegis(&["consumers", "list"]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        err.contains("no EVENTS stream on this NATS (`aegis init` makes it)"),
        "{err}"
    );
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = bus.aegis(&["consumers", "list", "--stream", "NOPE"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("no NOPE stream on this NATS\n"), "{err}");

    aegis::init::create_missing(&operator).await.unwrap();
    let service = bus.sdk(&format!("svc-{SERVICE}")).await;
    let live = subscribe(&service, SERVICE).await;
    // The stray: made by a subscriber that has stopped since, holding back
    // the events published after it.
    let stray = subscribe(&service, "recon-old").await;
    assert_eq!(stray.consumer_name(), STRAY);
    stray.shutdown().await;
    let publisher = service.events();
    for n in 0..3 {
        publisher
            .publish("recon", "started", &json!({ "n": n }))
            .await
            .unwrap();
    }

    // The live one has its subscriber's pull waiting; the stray none.
    let listed = until_some(
        PATIENCE,
        "the live consumer listed with a reader",
        || async {
            let (code, out, err) = bus.aegis(&["consumers", "list"]).await;
            assert_eq!(code, Some(0), "{out}{err}");
            let readers = |name: &str| {
                line_of(&out, name)
                    .split_whitespace()
                    .nth(3)
                    .map(str::to_owned)
            };
            (readers(LIVE).as_deref() != Some("0")).then_some(out)
        },
    )
    .await;
    let header: Vec<&str> = listed.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "STREAM", "CONSUMER", "FILTER", "READERS", "PENDING", "UNACKED", "LAST", "ACTIVE"
        ]
    );
    let stray_line: Vec<&str> = line_of(&listed, STRAY).split_whitespace().collect();
    // Nobody reads it; it holds back the three events.
    assert_eq!(
        stray_line[..5],
        ["EVENTS", STRAY, "events.recon.*", "0", "3"],
        "{listed}"
    );
    assert!(
        listed.contains("aegis consumers rm STREAM NAME"),
        "{listed}"
    );

    // One a subscriber reads is refused, and stays.
    let (code, out, err) = bus.aegis(&["consumers", "rm", "EVENTS", LIVE]).await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("is in use") && err.contains("--force"),
        "{err}"
    );
    let events = operator.jetstream().get_stream("EVENTS").await.unwrap();
    assert!(
        events.consumer_info(LIVE).await.is_ok(),
        "deleted though in use"
    );

    // A name that is not there names those that are.
    let (code, out, err) = bus
        .aegis(&["consumers", "rm", "EVENTS", "recon-servic"])
        .await;
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("EVENTS has no consumer recon-servic") && err.contains(LIVE),
        "{err}"
    );

    // The stray goes.
    let (code, out, err) = bus.aegis(&["consumers", "rm", "EVENTS", STRAY]).await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!(
            "deleted consumer {STRAY} of EVENTS: it held back 3 messages not yet delivered"
        )),
        "{out}"
    );
    assert!(
        events.consumer_info(STRAY).await.is_err(),
        "the stray is still there"
    );
    assert!(events.consumer_info(LIVE).await.is_ok());

    // --force deletes one in use.
    let (code, out, err) = bus
        .aegis(&["consumers", "rm", "EVENTS", LIVE, "--force"])
        .await;
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(
        out.contains(&format!("deleted consumer {LIVE} of EVENTS")),
        "{out}"
    );
    // Its running subscriber makes it again, as the refusal said.
    until_some(PATIENCE, "the live consumer made again", || async {
        events.consumer_info(LIVE).await.ok()
    })
    .await;
    live.shutdown().await;
}

/// A subscriber busy with an event has no pull open (its one handler slot
/// is taken): its consumer is still in use, and `rm` refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rm_refuses_a_consumer_whose_subscriber_is_handling_an_event() {
    let bus = Bus::start(recon_role());
    let operator = bus.sdk("operator").await;
    aegis::init::create_missing(&operator).await.unwrap();
    let service = bus.sdk(&format!("svc-{SERVICE}")).await;
    let (started, mut handling) = tokio::sync::mpsc::unbounded_channel();
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let hold = release.clone();
    let live = service
        .events()
        .subscribe::<Value>(SERVICE, "recon.*", DeliveryMode::Compete)
        .handler(move |_: Event<Value>| {
            let (started, hold) = (started.clone(), hold.clone());
            async move {
                let _ = started.send(());
                hold.notified().await;
                Ok(())
            }
        })
        .start()
        .await
        .unwrap();
    service
        .events()
        .publish("recon", "started", &json!({ "n": 1 }))
        .await
        .unwrap();
    tokio::time::timeout(PATIENCE, handling.recv())
        .await
        .expect("the handler never started")
        .unwrap();

    let (code, out, err) = bus.aegis(&["consumers", "rm", "EVENTS", LIVE]).await;
    release.notify_one();
    assert_eq!(
        code,
        Some(1),
        "deleted while its subscriber handled an event: {out}{err}"
    );
    assert!(err.contains("is in use"), "{err}");
    let events = operator.jetstream().get_stream("EVENTS").await.unwrap();
    assert!(
        events.consumer_info(LIVE).await.is_ok(),
        "deleted though in use"
    );
    live.shutdown().await;
}
