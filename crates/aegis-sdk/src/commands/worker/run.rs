//! Running one command a worker took: the handler's run and its answer to
//! the sender ([`run_one`]), and how long a command this worker has no
//! handler for is held before it goes back to the others ([`pass_on`]).

use std::{collections::HashMap, panic::AssertUnwindSafe, sync::Arc, time::Duration};

use aegis_contracts::{
    commands::CommandReply,
    wire::{HEADER_COMMAND_ID, HEADER_INSTANCE, HEADER_REPLY_TO, WireError},
};
use async_nats::Client;
use futures::FutureExt;
use tokio::sync::watch;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    election::Leadership,
    metrics::InstanceMetrics,
    pull::{HANDLER_STOP_WAIT, Outcome},
};

use super::{
    super::{HEADER_DEADLINE, HEADER_NOT_RUN, HEADER_SERVICE},
    DEFAULT_MAX_DELIVER, Erased, Progress,
    term::{HandBack, Term, doubt_runs_out, is_connected, serving_again},
};

/// Shortest and longest time a worker holds a command it has no handler
/// for before handing it back.
const PASS_ON_MIN: Duration = Duration::from_millis(100);
const PASS_ON_MAX: Duration = Duration::from_secs(2);
/// How much of its deadline a command this worker has no handler for must
/// still have after the hold: the NOT_FOUND that ends it otherwise has to
/// reach the sender before the sender gives up.
const ANSWER_MARGIN: Duration = Duration::from_millis(250);

/// How long to hold a command this worker has no handler for before
/// handing it back to the other workers; `None` when it is to be answered
/// NOT_FOUND now.
///
/// Workers of one service share one consumer, and during a rolling
/// upgrade only the newer ones know a new command. The server offers a
/// command handed back to the pull requests waiting, in turn; one held
/// keeps this worker's slot busy, so its request is not among them, and a
/// worker idle with the handler gets it. The first hold is short (the
/// usual case: such a worker is idle). A command back again found them
/// busy: each offer uses one of the `max_deliver` deliveries, so the holds
/// spread those left over the time left before the deadline (`left`;
/// `None`: no deadline). The last delivery, or the last moment that still
/// lets the answer arrive in time, answers NOT_FOUND: a command no worker
/// knows ends in a clear error before its deadline, not in a timeout or a
/// dead letter. A `max_deliver` of 0 or less (no limit on the server)
/// has no last delivery: the holds spread as if [`DEFAULT_MAX_DELIVER`]
/// applied (at least one more offer), and only the deadline ends them.
fn pass_on(delivered: i64, max_deliver: i64, left: Option<Duration>) -> Option<Duration> {
    let deliveries_left = if max_deliver <= 0 {
        u32::try_from(i64::from(DEFAULT_MAX_DELIVER).saturating_sub(delivered))
            .unwrap_or(0)
            .max(1)
    } else {
        u32::try_from(max_deliver.saturating_sub(delivered))
            .ok()
            .filter(|n| *n > 0)?
    };
    let spread = left.map_or(PASS_ON_MAX, |left| left / (deliveries_left + 1));
    let hold = if delivered <= 1 {
        PASS_ON_MIN
    } else {
        spread.clamp(PASS_ON_MIN, PASS_ON_MAX)
    };
    match left {
        Some(left) if left < hold + ANSWER_MARGIN => None,
        _ => Some(hold),
    }
}

/// Runs one command and reports its end to the sender. Whatever the handler
/// says, the command is done (a failure is its result); only a crash of the
/// process leaves it to be delivered again. A command this worker has no
/// handler for is left to other workers while [`pass_on`] allows. With
/// `following` (a leader-only worker: the leadership, and where its term
/// stands), one taken while the lease has lapsed waits until this instance
/// serves again; one taken while this instance does not lead (it was
/// deposed as the command arrived, or while it waited) is handed back
/// unrun, as [`HandBack`] says. One whose deadline passed while it waited
/// in a term in doubt is handed back too, unanswered, unless this is its
/// last delivery: a successor may run it.
///
/// A command past its deadline is not run. On its first delivery it is
/// answered "not run" ([`HEADER_NOT_RUN`]): no worker took it before. On
/// a later one a worker did (one that died holding it, as a crashed
/// leader does, or one that handed it back, which cannot be told apart
/// here), so it may have run: it is answered TIMEOUT, "may have run",
/// without the header, and the WARN says so.
///
/// The last delivery is the last the consumer on the server allows
/// (`limits`), which another worker's start or an operator may have
/// changed since this worker started, not this worker's own option: the
/// pull loop dead-letters a command handed back on the delivery it deems
/// the last, and the sender of a command that never ran would hear
/// nothing until its deadline, then that it may have run.
pub(super) async fn run_one(
    msg: Arc<async_nats::jetstream::Message>,
    client: Client,
    instance: Arc<str>,
    handlers: Arc<HashMap<String, Erased>>,
    limits: crate::pull::DeliveryLimits,
    following: Option<(Leadership, watch::Receiver<Term>, Arc<InstanceMetrics>)>,
) -> Outcome {
    let header = |name: &str| {
        msg.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_owned())
    };
    let id = header(HEADER_COMMAND_ID).unwrap_or_default();
    let reply_to = header(HEADER_REPLY_TO);
    let name = msg
        .subject
        .rsplit('.')
        .next()
        .unwrap_or_default()
        .to_owned();
    let mut now = chrono::Utc::now();
    let deadline = header(HEADER_DEADLINE)
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
        .map(|d| d.with_timezone(&chrono::Utc));
    let span = info_span!("command", command = %name, id = %id);
    let expired = |now| deadline.is_some_and(|d| d < now);
    let delivered = msg.info().map(|i| i.delivered).unwrap_or(1);
    // Only a first delivery proves that no worker took the command before
    // (one that died holding it, or one stopped while running it, may have
    // run part of it; the server offers it again at its ack_wait, which is
    // at or after its deadline when the timeout is no longer).
    let first_delivery = msg.info().is_ok_and(|i| i.delivered == 1);
    let answer_expired = || async {
        if !first_delivery {
            span.in_scope(|| {
                warn!(
                    delivered,
                    "command expired after a worker had taken it (this is a later delivery): it may have run; not running it again"
                )
            });
            // No "not run" header: the sender reports that it may have run.
            let reply = CommandReply::Failed {
                error: WireError::timeout(format!(
                    "its deadline passed before it was done: a worker took it earlier (this is delivery {delivered}), so it may have run; check its effect before sending it again"
                )),
            };
            send_reply(
                &client,
                reply_to.as_deref(),
                &reply,
                None,
                &instance,
                service_of(&msg.subject),
            )
            .await;
            return Outcome::Done;
        }
        span.in_scope(|| info!("command expired before it was picked up; not running it"));
        // Said in a header, so the sender tells "never ran" from a
        // handler's own TIMEOUT error.
        let reply = CommandReply::Failed {
            error: WireError::timeout("the command expired before a worker picked it up"),
        };
        send_reply(
            &client,
            reply_to.as_deref(),
            &reply,
            Some("expired"),
            &instance,
            service_of(&msg.subject),
        )
        .await;
        Outcome::Done
    };
    if expired(now) {
        return answer_expired().await;
    }
    let watching = following.clone();
    // `Ok(None)`: not leader-only; `Err`: not to run here.
    let epoch = match following {
        None => Ok(None),
        Some((leadership, terms, metrics)) => match leadership.serving_epoch() {
            Some(epoch) => Ok(Some(epoch)),
            None => {
                let left = deadline.map(|d| (d - now).to_std().unwrap_or_default());
                span.in_scope(|| {
                    debug!("taken while this instance does not serve; waiting for its lease")
                });
                // Received and not started: in the service's queue depth
                // until it runs or goes back.
                let queued = metrics.enqueue();
                let standing = terms.clone();
                let waited = match left {
                    Some(left) => tokio::time::timeout(left, serving_again(&leadership, terms))
                        .await
                        .ok(),
                    None => Some(serving_again(&leadership, terms).await),
                };
                drop(queued);
                now = chrono::Utc::now();
                let hand_back = match waited {
                    Some(Err(hand_back)) => hand_back,
                    _ => HandBack::of(*standing.borrow(), is_connected(&client)),
                };
                if expired(now) || waited.is_none() {
                    // Its deadline passed while it waited. In a term in
                    // doubt a successor may run it: its ACK would end the
                    // successor's delivery.
                    if hand_back == HandBack::AfterAckWait && !limits.is_last(delivered).await {
                        span.in_scope(|| {
                            debug!("its deadline passed while this instance's term was in doubt; leaving it to its ack_wait, unanswered")
                        });
                        return hand_back.outcome(
                            limits.ack_wait().await,
                            "expired while its instance's term was in doubt".to_owned(),
                        );
                    }
                    return answer_expired().await;
                }
                waited.unwrap_or(Err(hand_back)).map(Some)
            }
        },
    };
    let reply = if let Err(hand_back) = epoch {
        if !limits.is_last(delivered).await {
            span.in_scope(|| {
                debug!(
                    ?hand_back,
                    "taken just as this instance stopped leading; handing it back unrun"
                )
            });
            if hand_back == HandBack::AtOnce {
                // Held briefly, so this worker's own pull (stopping) does
                // not take it again.
                tokio::time::sleep(PASS_ON_MIN).await;
            }
            return hand_back.outcome(
                limits.ack_wait().await,
                "taken by an instance that no longer leads".to_owned(),
            );
        }
        CommandReply::Failed {
            error: WireError::not_active(
                "the command's last delivery reached an instance that no longer leads; it did not run",
            ),
        }
    } else if let Some(handler) = handlers.get(&name) {
        let progress = Progress {
            client: client.clone(),
            reply_to: reply_to.clone(),
            acker: msg.clone(),
            instance: instance.clone(),
        };
        let fut = handler(
            id,
            name.clone(),
            msg.payload.clone(),
            epoch.ok().flatten(),
            progress,
        );
        let run = AssertUnwindSafe(fut)
            .catch_unwind()
            .instrument(span.clone());
        let ran = match watching {
            None => Some(run.await),
            Some((leadership, terms, _)) => tokio::select! {
                ran = run => Some(ran),
                () = doubt_runs_out(&leadership, terms) => None,
            },
        };
        match ran {
            None => {
                span.in_scope(|| {
                    warn!(
                        "this instance has not served for {HANDLER_STOP_WAIT:?} since its lapse came into doubt: a successor may lead; dropping the command's handler and handing the command back (the server offers it again after its ack_wait)"
                    )
                });
                // A successor may hold the command's current delivery.
                return HandBack::AfterAckWait.outcome(
                    limits.ack_wait().await,
                    "handed back by an instance that may no longer lead".to_owned(),
                );
            }
            Some(Ok(Ok(result))) => CommandReply::Completed { result },
            Some(Ok(Err(error))) => CommandReply::Failed { error },
            Some(Err(panic)) => {
                let said = crate::task::panic_text(&*panic);
                span.in_scope(|| warn!(panic = said, "command handler panicked"));
                CommandReply::Failed {
                    error: WireError::internal("the command handler panicked"),
                }
            }
        }
    } else {
        let left = deadline.map(|d| (d - now).to_std().unwrap_or_default());
        if let Some(hold) = pass_on(delivered, limits.max_deliver().await, left) {
            span.in_scope(|| {
                debug!(
                    ?hold,
                    delivered, "no handler here; handing the command back for another worker"
                )
            });
            tokio::time::sleep(hold).await;
            return Outcome::Retry {
                delay: Duration::ZERO,
                error: format!("no handler for command `{name}`"),
            };
        }
        CommandReply::Failed {
            error: WireError::not_found(format!("no handler for command `{name}`")),
        }
    };
    send_reply(
        &client,
        reply_to.as_deref(),
        &reply,
        None,
        &instance,
        service_of(&msg.subject),
    )
    .await;
    Outcome::Done
}

/// The service of a command's subject, `commands.{service}.{command}`.
pub(super) fn service_of(subject: &str) -> &str {
    subject.split('.').nth(1).unwrap_or_default()
}

/// Sends `reply` to the sender, naming this worker's `instance` in
/// [`HEADER_INSTANCE`] and its `service` in [`HEADER_SERVICE`] (the
/// sender takes no reply without it); `not_run` (why) marks a command
/// skipped unrun with [`HEADER_NOT_RUN`].
pub(super) async fn send_reply(
    client: &Client,
    reply_to: Option<&str>,
    reply: &CommandReply,
    not_run: Option<&str>,
    instance: &str,
    service: &str,
) {
    let Some(reply_to) = reply_to else { return };
    match serde_json::to_vec(reply) {
        Ok(body) => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_INSTANCE, instance);
            headers.insert(HEADER_SERVICE, service);
            if let Some(why) = not_run {
                headers.insert(HEADER_NOT_RUN, why);
            }
            let sent = client
                .publish_with_headers(reply_to.to_owned(), headers, body.into())
                .await;
            if let Err(e) = sent {
                debug!(error = %crate::startup::Causes(&e), "could not send a command reply");
            }
        }
        Err(e) => warn!(error = %crate::startup::Causes(&e), "cannot encode a command reply"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_command_without_a_handler_here_is_handed_back_while_its_deadline_allows() {
        // First time: a short hold (an idle worker with the handler takes it).
        assert_eq!(pass_on(1, 5, Some(10 * SECOND)), Some(PASS_ON_MIN));
        assert_eq!(pass_on(1, 5, None), Some(PASS_ON_MIN));
        // Back again: the three offers left share the eight seconds left...
        assert_eq!(pass_on(2, 5, Some(8 * SECOND)), Some(2 * SECOND));
        // ...never holding it longer than the longest hold, nor shorter
        // than the shortest.
        assert_eq!(pass_on(2, 5, None), Some(PASS_ON_MAX));
        assert_eq!(pass_on(2, 5, Some(3600 * SECOND)), Some(PASS_ON_MAX));
        assert_eq!(
            pass_on(2, 5, Some(Duration::from_millis(400))),
            Some(PASS_ON_MIN)
        );
    }

    #[test]
    fn a_command_no_worker_handles_is_answered_before_it_expires() {
        // The last delivery answers, whatever the time left.
        assert_eq!(pass_on(5, 5, None), None);
        assert_eq!(pass_on(1, 1, Some(3600 * SECOND)), None);
        assert_eq!(pass_on(9, 5, None), None);
        // No limit on the server: never the last delivery, only the
        // deadline ends the holds.
        assert_eq!(pass_on(1, -1, Some(10 * SECOND)), Some(PASS_ON_MIN));
        assert_eq!(pass_on(1, 0, None), Some(PASS_ON_MIN));
        assert_eq!(pass_on(40, -1, None), Some(PASS_ON_MAX));
        assert_eq!(pass_on(40, -1, Some(Duration::from_millis(300))), None);
        // Too little time left for another offer and the answer.
        assert_eq!(pass_on(1, 5, Some(Duration::from_millis(300))), None);
        assert_eq!(pass_on(1, 5, Some(Duration::ZERO)), None);
        // Each offer leaves room for the answer before the deadline.
        for left_ms in (0..20_000).step_by(37) {
            let left = Duration::from_millis(left_ms);
            for delivered in 1..=5 {
                if let Some(pause) = pass_on(delivered, 5, Some(left)) {
                    assert!(pause + ANSWER_MARGIN <= left, "{left:?} {delivered}");
                }
            }
        }
    }
}
