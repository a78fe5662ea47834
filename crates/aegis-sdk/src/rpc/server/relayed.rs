//! Refusing what JetStream relays onto a request subject.
//!
//! NATS permissions check the subject of a JetStream API request, never its
//! payload. A role that may create a consumer may give it any
//! `deliver_subject` (and `deliver_group`); one that may create or update a
//! stream may give it any `republish` destination; one that may read a
//! stream directly may name any reply subject for the answer. The server
//! then sends a message whose body the role chose to an instance's
//! `rpc.{service}.{instance}.{method}`, its queue group, or its
//! `aegis.control.{service}.{instance}`: subjects the role may not publish
//! to itself. Only a subscription on the exact subject counts as interest
//! for a push consumer, so it reaches exactly such subscriptions.
//!
//! A real caller never sends such a message, and the server marks every
//! one (checked against nats-server 2.15 in `tests/jetstream_relayed.rs`):
//! a push delivery carries a reply subject under `$JS.ACK.` whatever the
//! ack policy (`ack_policy: none` included), its flow-control requests one
//! under `$JS.FC.`; its idle heartbeats carry a status line; a republished
//! message and a direct get's answer carry the `Nats-Stream` header. So
//! every core subscription of the SDK that acts on what it is sent (each
//! method's request subjects, the instance's control subject) and the
//! monitor's liveness beats drop a message with any of these marks,
//! [`relayed_by_jetstream`]: no handler runs, no request is counted, no
//! reply is sent. The check is a byte-prefix comparison, a field test and
//! one header lookup per request. Each refusal is logged at WARN, naming
//! the subject, and the stream and consumer when the marks tell them
//! (never the payload), at most once every 10 seconds per process, with a
//! count of those refused in between ([`admit`]).
//!
//! What it does not cover: the JetStream API's own answers (a stream's
//! publish acknowledgement, an info response) also go to any reply subject
//! the asker names, unmarked; their bodies are the server's JSON, not the
//! asker's, and carry no reply subject, so the control subject ignores
//! them. Roles that may create consumers or streams are limited by the
//! NATS permissions themselves (`aegis::permissions`).

use std::{
    sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

use async_nats::{Message, header::NATS_STREAM};
use tracing::warn;

/// The reply-subject prefix JetStream gives everything a push consumer
/// delivers (`$JS.ACK.`) and its flow-control requests (`$JS.FC.`); no
/// client's inbox starts with it.
const JETSTREAM_REPLY: &[u8] = b"$JS.";

/// At most one refusal warning per this interval, per process, in ms.
const WARN_EVERY_MS: u64 = 10_000;

/// Whether `msg` was sent by JetStream on a client's behalf (a push
/// consumer's delivery or heartbeat, a republished message, a direct get's
/// answer) rather than published by a client. Such a message is never a
/// request: whoever set it up chose its body and its subject, and NATS
/// checked neither against that role's publish permissions.
#[inline]
pub fn relayed_by_jetstream(msg: &Message) -> bool {
    msg.reply
        .as_ref()
        .is_some_and(|reply| reply.as_bytes().starts_with(JETSTREAM_REPLY))
        || msg.status.is_some()
        || msg
            .headers
            .as_ref()
            .is_some_and(|headers| headers.get(NATS_STREAM).is_some())
}

/// Whether to act on `msg`, a request to a core subscription: `false` for
/// one [relayed by JetStream](relayed_by_jetstream), which is dropped with
/// a rate-limited warning naming its subject (never its payload).
#[inline]
pub fn admit(msg: &Message) -> bool {
    if relayed_by_jetstream(msg) {
        refused(msg, Refusal::Relayed);
        false
    } else {
        true
    }
}

/// Whether to run a method on `msg`: it must be [admitted](admit) and
/// carry a reply subject. A message without one is no call — nobody waits
/// for its answer — and arrives on a method's subject only when someone
/// else's answer is aimed there: a service answering a request whose reply
/// subject its caller set to this method's subject (a responder may publish
/// once to any reply subject), or a JetStream API answer sent to a reply
/// subject its asker chose. Dropped with the same rate-limited warning.
#[inline]
pub fn admit_call(msg: &Message) -> bool {
    if msg.reply.is_none() && !relayed_by_jetstream(msg) {
        refused(msg, Refusal::NoReply);
        return false;
    }
    admit(msg)
}

/// Why a message was dropped.
#[derive(Clone, Copy)]
enum Refusal {
    Relayed,
    NoReply,
}

/// When the last warning was logged (ms since [`epoch`], plus one; 0 for
/// never), and how many refusals went unlogged since.
static LAST_WARNED: AtomicU64 = AtomicU64::new(0);
static UNLOGGED: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

#[cold]
fn refused(msg: &Message, why: Refusal) {
    let now = u64::try_from(epoch().elapsed().as_millis())
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let last = LAST_WARNED.load(Ordering::Relaxed);
    let due = last == 0 || now.saturating_sub(last) >= WARN_EVERY_MS;
    if !due
        || LAST_WARNED
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        UNLOGGED.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let also = UNLOGGED.swap(0, Ordering::Relaxed);
    if let Refusal::NoReply = why {
        warn!(
            subject = %msg.subject,
            also_refused = also,
            "refused a message without a reply subject on a method's subject: no caller \
             waits for it (it is another responder's answer, or a JetStream API answer, \
             aimed here), so no handler runs. Check who sends requests with this reply subject"
        );
        return;
    }
    let (stream, consumer) = origin(msg);
    warn!(
        subject = %msg.subject,
        stream = stream.unwrap_or("?"),
        consumer = consumer.unwrap_or("-"),
        also_refused = also,
        "refused a message JetStream relayed onto a request subject (a consumer's delivery, \
         a republish or a direct get that some role pointed here); no caller sends one, so \
         it is dropped unanswered. Check who may create consumers and streams"
    );
}

/// The stream and consumer a relayed message names: a push delivery's
/// reply is `$JS.ACK.{stream}.{consumer}.…`, a republished message or a
/// direct get's answer has `Nats-Stream`.
fn origin(msg: &Message) -> (Option<&str>, Option<&str>) {
    if let Some(rest) = msg
        .reply
        .as_ref()
        .and_then(|reply| reply.as_str().strip_prefix("$JS.ACK."))
    {
        let mut tokens = rest.split('.');
        return (tokens.next(), tokens.next());
    }
    let stream = msg
        .headers
        .as_ref()
        .and_then(|headers| headers.get(NATS_STREAM))
        .map(|value| value.as_str());
    (stream, None)
}

#[cfg(test)]
mod tests {
    use async_nats::{HeaderMap, Subject};
    use bytes::Bytes;

    use super::*;

    fn message(reply: Option<&str>, headers: Option<HeaderMap>) -> Message {
        Message {
            subject: Subject::from("rpc.order-service.order-1.create_order"),
            reply: reply.map(Subject::from),
            payload: Bytes::from_static(b"{}"),
            headers,
            status: None,
            description: None,
            length: 0,
        }
    }

    #[test]
    fn only_what_jetstream_marks_is_refused() {
        assert!(!relayed_by_jetstream(&message(None, None)));
        assert!(!relayed_by_jetstream(&message(Some("_INBOX.abc.1"), None)));
        assert!(!relayed_by_jetstream(&message(
            Some("_INBOX_svc-pricing-service.x"),
            Some(HeaderMap::from_iter([(
                "Aegis-Request-Id".parse().unwrap(),
                "r-1".parse().unwrap()
            )]))
        )));
        // A client's reply subject merely containing the marks is fine.
        assert!(!relayed_by_jetstream(&message(
            Some("_INBOX.$JS.ACK.x"),
            None
        )));

        assert!(relayed_by_jetstream(&message(
            Some("$JS.ACK.EVENTS.evil.1.3.1.1796461054765627246.0"),
            None
        )));
        assert!(relayed_by_jetstream(&message(
            Some("$JS.FC.EVENTS.evil.x"),
            None
        )));
        let mut republished = HeaderMap::new();
        republished.insert(NATS_STREAM, "EVENTS");
        assert!(relayed_by_jetstream(&message(None, Some(republished))));
        let mut heartbeat = message(None, Some(HeaderMap::new()));
        heartbeat.status = Some(async_nats::StatusCode::IDLE_HEARTBEAT);
        assert!(relayed_by_jetstream(&heartbeat));
    }

    #[test]
    fn a_refusal_names_the_stream_and_consumer_it_came_from() {
        let pushed = message(Some("$JS.ACK.EVENTS.evil.1.3.1.17.0"), None);
        assert_eq!(origin(&pushed), (Some("EVENTS"), Some("evil")));
        let mut headers = HeaderMap::new();
        headers.insert(NATS_STREAM, "AEGIS_LOG");
        assert_eq!(
            origin(&message(None, Some(headers))),
            (Some("AEGIS_LOG"), None)
        );
        assert!(!admit(&pushed));
        assert!(admit(&message(Some("_INBOX.1"), None)));
    }

    #[test]
    fn a_call_needs_a_reply_subject() {
        assert!(admit_call(&message(Some("_INBOX.1"), None)));
        assert!(!admit_call(&message(None, None)));
        assert!(!admit_call(&message(
            Some("$JS.ACK.EVENTS.evil.1.3.1.17.0"),
            None
        )));
        // The control subject answers only a reply subject anyway: `admit`
        // lets a reply-less message through for it to ignore.
        assert!(admit(&message(None, None)));
    }
}
