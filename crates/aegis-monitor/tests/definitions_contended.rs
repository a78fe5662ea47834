//! A blind update or delete (no revision, no `If-Match`) of a definition
//! other writers keep changing: the monitor re-reads and tries again, and
//! when every try loses the compare-and-set it says so honestly: 409
//! `CONCURRENT_UPDATE` naming the revision the definition is at now, that
//! the write was not stored, and how many tries it made. Before, it
//! answered "changed since revision 0" with `expected: 0, current: 0`:
//! the client had named no revision, and 0 is none the definition had.
//!
//! The other writers: two tasks storing puts to the definition's key as
//! fast as the server takes them (core publishes to the bucket's subject,
//! as any other tool writing the bucket would), so a write lands between
//! nearly every read of the monitor and its compare-and-set.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use aegis_contracts::subjects::DEFINITIONS_BUCKET;
use axum::http::Method;
use common::{Harness, Reply, new_def};
use serde_json::json;

const NAME: &str = "busy-service";
/// How many other writers keep changing it.
const WRITERS: usize = 8;

/// Sends `method` (blind) until one gives up on the race, at most
/// `tries` times; the replies, the last one first.
async fn until_given_up(h: &Harness, method: Method, tries: usize) -> Vec<Reply> {
    let mut replies = Vec::new();
    for i in 0..tries {
        let body =
            (method != Method::DELETE).then(|| json!({ "description": format!("blind {i}") }));
        let reply = h
            .admin(method.clone(), &format!("/api/services/{NAME}"), body)
            .await;
        let given_up = reply.status == 409;
        replies.insert(0, reply);
        if given_up {
            break;
        }
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_blind_write_that_keeps_losing_the_race_names_the_current_revision() {
    let h = Harness::start().await;
    h.admin(Method::POST, "/api/services", Some(new_def(NAME)))
        .await
        .expect(201, None);
    let conn = h.connect().await;
    let stop = Arc::new(AtomicBool::new(false));
    let subject = format!("$KV.{DEFINITIONS_BUCKET}.{NAME}");
    let mut body = new_def(NAME);
    body["created_at"] = json!("2026-01-01T00:00:00.000Z");
    body["updated_at"] = json!("2026-01-01T00:00:00.000Z");
    body["changed_by"] = json!("another-tool");
    let payload = bytes::Bytes::from(body.to_string());
    let writers: Vec<_> = (0..WRITERS)
        .map(|_| {
            let (js, stop) = (conn.jetstream().clone(), stop.clone());
            let (subject, payload) = (subject.clone(), payload.clone());
            tokio::spawn(async move {
                let mut stored = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let ack = js.publish(subject.clone(), payload.clone()).await.unwrap();
                    ack.await.unwrap();
                    stored += 1;
                }
                stored
            })
        })
        .collect();
    // Let the writers get going.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let updates = until_given_up(&h, Method::PUT, 50).await;
    let deletes = until_given_up(&h, Method::DELETE, 50).await;
    stop.store(true, Ordering::Relaxed);
    let mut stored_by_others = 0;
    for writer in writers {
        stored_by_others += writer.await.unwrap();
    }
    assert!(stored_by_others > 0);

    // The last revision of the bucket: no revision named can be past it.
    let stored = conn
        .jetstream()
        .get_stream(format!("KV_{DEFINITIONS_BUCKET}"))
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .last_sequence;
    for (what, replies) in [("PUT", &updates), ("DELETE", &deletes)] {
        let last = &replies[0];
        assert_eq!(
            last.status,
            409,
            "{what}: no blind write gave up in {} tries (the writers too slow?): {}",
            replies.len(),
            last.body
        );
        last.expect(409, Some("CONCURRENT_UPDATE"));
        let message = last.body["error"]["message"].as_str().unwrap();
        let details = &last.body["error"]["details"];
        assert!(
            !message.contains("revision 0") && !message.contains("since revision"),
            "{what}: {message}"
        );
        assert!(message.contains("not stored"), "{what}: {message}");
        let current = details["current"].as_u64().unwrap_or(0);
        // A revision the definition had while the writers ran: past the
        // create (1), at most what is stored now.
        assert!(
            current > 1 && current <= stored,
            "{what}: {details} (stored {stored})"
        );
        assert!(details.get("expected").is_none(), "{what}: {details}");
        assert_eq!(details["stored"], false, "{what}: {details}");
        assert_eq!(details["attempts"], 8, "{what}: {details}");
        assert_eq!(details["service"], NAME, "{what}: {details}");
        // Every earlier try was a write that landed (or, for a delete, found
        // the definition deleted by the try before).
        for earlier in &replies[1..] {
            assert!(
                matches!(earlier.status.as_u16(), 200 | 204 | 404),
                "{what}: {} {}",
                earlier.status,
                earlier.body
            );
        }
    }
}
