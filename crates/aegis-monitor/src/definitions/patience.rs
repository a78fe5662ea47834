//! Reads and writes of the definitions bucket sent again while its stream
//! cannot answer them, up to the request's deadline, and never stored
//! twice.
//!
//! When the NATS node leading the bucket's stream dies, its followers wait
//! 4-9 s before they elect a new leader; no write lands meanwhile, and
//! reads may go unanswered. A request's store work is
//! bounded by [`answer_by`], inside the API's request timeout, so it is
//! answered before the timeout's 504 cuts it off.
//!
//! Every write is a compare-and-set on the key's revision and carries its
//! own message id (`Nats-Msg-Id`), so sending it again as it is cannot
//! store it twice, whatever became of the earlier attempt:
//! - nobody took it (the stream has no leader this moment) or the stream
//!   said it is between leaders: certainly not stored; sent again;
//! - another write to the key is still being replicated (10164, which a
//!   clustered stream's leader answers in a race a single server answers
//!   with a wrong revision): certainly not stored, and the other write
//!   decides whether it can be; sent again, after a pause, it is answered
//!   for good (mostly a wrong revision: a conflict, not an outage);
//! - no acknowledgement (a timeout, a dropped connection): perhaps stored;
//!   sent again. If the first attempt landed, the stream answers the
//!   second as a duplicate of it, with its revision (within its duplicate
//!   window, 2 min for a bucket async-nats made), or, past that window,
//!   refuses it as a wrong revision: then the message that follows the
//!   expected revision on the key is read, and if it carries our id, the
//!   write is ours. A compare-and-set can land only right after the
//!   revision it expects, so nothing else can be ours.
//!
//! Past the deadline the caller is told what is known: certainly not
//! stored, or perhaps stored.

use std::{future::Future, time::Duration};

use async_nats::{
    HeaderMap, HeaderValue,
    header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID},
    jetstream::{self, context::PublishErrorKind, kv},
};
use tokio::time::Instant;

use super::DefinitionStore;
use crate::bus::BusError;

/// First pause before a read or write is sent again; it doubles up to
/// [`MAX_PAUSE`]. A leader hand-over takes milliseconds, an election
/// seconds: a write lands within 200 ms of the stream taking writes again.
const FIRST_PAUSE: Duration = Duration::from_millis(10);
const MAX_PAUSE: Duration = Duration::from_millis(200);
/// What is kept of the request timeout to answer the client: the store
/// stops trying this much before it (at most), or a quarter of a short one.
const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// When the store stops trying what a request asked of it, given the API's
/// request timeout: `request_timeout` from now less a margin to answer
/// (1 s, or a quarter of a timeout under 4 s). With the default 15 s it
/// outlasts a stream's leader election after its node died (4-9 s).
pub(crate) fn answer_by(request_timeout: Duration) -> Instant {
    Instant::now() + patience(request_timeout)
}

fn patience(request_timeout: Duration) -> Duration {
    request_timeout.saturating_sub(ANSWER_MARGIN.min(request_timeout / 4))
}

/// A compare-and-set write that did not land, and what is known of it.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The key's revision was not the expected one: someone else wrote.
    WrongRevision,
    /// It did not land as far as the store can show: `maybe_stored` when
    /// an attempt was not answered (it may land, or have landed, unseen),
    /// otherwise certainly not stored (nobody took it until the deadline,
    /// or the stream refused it).
    Failed {
        source: BusError,
        maybe_stored: bool,
    },
}

/// Reads with `read` until it succeeds, `again` says a failure is for
/// good, or `until` passes (each attempt is cut off there). A read changes
/// nothing, so any failure `again` accepts may be tried again: a request
/// nobody answered (the replica asked is gone or behind), a timeout.
pub(super) async fn read<T, E, F, Fut>(
    what: &str,
    until: Instant,
    again: impl Fn(&E) -> bool,
    mut read: F,
) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match tokio::time::timeout_at(until, read()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(BusError::msg(format!(
                    "{what}: no answer before the request's deadline"
                )));
            }
        };
        if !again(&e) || Instant::now() + pause >= until {
            return Err(BusError::new(what.to_owned(), e));
        }
        tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "{what} failed; asking again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Writes `payload` with `headers` to `key` of the definitions bucket if
/// the key's last revision is `expected`, sending it again while that is
/// safe and useful (see the module's note) until `until`; returns the
/// revision it was stored at.
pub(super) async fn compare_and_set(
    what: &str,
    store: &DefinitionStore,
    key: &str,
    mut headers: HeaderMap,
    payload: bytes::Bytes,
    expected: u64,
    until: Instant,
) -> Result<u64, WriteError> {
    let (js, store) = (&store.js, &store.kv);
    let subject = format!(
        "{}{key}",
        store.put_prefix.as_ref().unwrap_or(&store.prefix)
    );
    let id = format!("aegis-definition-{:032x}", rand::random::<u128>());
    headers.insert(
        NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        HeaderValue::from(expected),
    );
    headers.insert(NATS_MESSAGE_ID, id.as_str());
    let mut maybe_stored = false;
    let mut pause = FIRST_PAUSE;
    loop {
        let sent = async {
            js.publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await?
                .await
        };
        let e = match tokio::time::timeout_at(until, sent).await {
            Ok(Ok(ack)) => {
                if ack.duplicate {
                    tracing::debug!(
                        key,
                        revision = ack.sequence,
                        "{what}: an earlier attempt had landed"
                    );
                }
                return Ok(ack.sequence);
            }
            Ok(Err(e)) if e.kind() == PublishErrorKind::WrongLastSequence => {
                if !maybe_stored {
                    return Err(WriteError::WrongRevision);
                }
                return match landed_after(store, key, expected, &id, until).await {
                    Ok(Some(revision)) => Ok(revision),
                    Ok(None) => Err(WriteError::WrongRevision),
                    Err(source) => Err(WriteError::Failed {
                        source,
                        maybe_stored,
                    }),
                };
            }
            Ok(Err(e)) => e,
            Err(_) => {
                return Err(WriteError::Failed {
                    source: BusError::msg(format!(
                        "{what}: not acknowledged before the request's deadline"
                    )),
                    maybe_stored: true,
                });
            }
        };
        let unanswered = matches!(
            e.kind(),
            PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe
        );
        maybe_stored |= unanswered;
        let again = unanswered
            || aegis_sdk::streams::write_not_stored(&e)
            || in_process(&e)
            || aegis_sdk::streams::another_write_in_flight(&e);
        if !again || Instant::now() + pause >= until {
            return Err(WriteError::Failed {
                source: BusError::new(what.to_owned(), e),
                maybe_stored,
            });
        }
        tracing::debug!(error = %aegis_sdk::startup::Causes(&e), maybe_stored, "{what}: not stored yet (its stream between leaders, or another write to the key in flight); sending it again");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// The revision of the message that follows `expected` on `key`, if it is
/// the write with message id `id`; `None` if it is another's.
async fn landed_after(
    store: &kv::Store,
    key: &str,
    expected: u64,
    id: &str,
    until: Instant,
) -> Result<Option<u64>, BusError> {
    let subject = format!("{}{key}", store.prefix);
    let next = read(
        "reading what followed a definition's revision",
        until,
        |_: &jetstream::stream::DirectGetError| true,
        || {
            store
                .stream
                .direct_get_next_for_subject(&subject, Some(expected + 1))
        },
    )
    .await?;
    let ours = next
        .headers
        .get(NATS_MESSAGE_ID)
        .is_some_and(|v| v.as_str() == id);
    Ok(ours.then_some(next.sequence))
}

/// Whether the stream answered that a copy of this message (same id) is
/// still being stored (10158): an earlier attempt is on its way.
fn in_process(e: &jetstream::context::PublishError) -> bool {
    use std::error::Error as _;
    e.source()
        .and_then(|s| s.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code().0 == 10158)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_stops_trying_before_the_request_times_out() {
        let secs = Duration::from_secs;
        assert_eq!(patience(secs(15)), secs(14));
        assert_eq!(patience(secs(4)), secs(3));
        assert_eq!(patience(secs(2)), Duration::from_millis(1500));
        assert_eq!(patience(Duration::ZERO), Duration::ZERO);
    }
}
