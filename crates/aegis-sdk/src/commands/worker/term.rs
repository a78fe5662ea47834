//! A leader-only worker's term: where its instance stands in the
//! leadership it follows ([`Term`]), the pull loop that runs while it leads
//! ([`follow_leader`]), and how a command goes back to the work queue when
//! the term lapses or ends ([`HandBack`]).

use std::{sync::Arc, time::Duration};

use async_nats::{Client, jetstream::consumer};
use tokio::{sync::watch, time::Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    election::{Leadership, Role, view::ElectionView},
    metrics::InstanceMetrics,
    pull::{Durable, HANDLER_STOP_WAIT, Outcome},
};

/// The leadership a leader-only worker follows.
#[derive(Clone)]
pub(super) struct LeaderOf {
    /// Wakes the worker at once on a role change.
    pub(super) roles: watch::Receiver<Role>,
    /// Says whether the lease is valid right now (it lapses without a
    /// role change when renewals fail).
    pub(super) leadership: Leadership,
    /// This instance's id, as the election key names its leader.
    pub(super) instance_id: String,
    /// The election key's `(service, group)`.
    pub(super) key: Option<(String, String)>,
    /// Who holds the election key, as the connection's watch of the
    /// election keys says; set by `start`. Without it (it did not load),
    /// a lapse counts as a deposal.
    pub(super) view: Option<Arc<ElectionView>>,
    /// The election's lease: how long a lapse may last before it can no
    /// longer be told from a takeover (a standby takes the key once it has
    /// seen no renewal for this long).
    pub(super) lease: Duration,
    /// The worker's connection, which feeds `view`; set by `start`. While
    /// it is not connected, the view cannot show a takeover.
    pub(super) client: Option<Client>,
    /// The service's metrics: a command waiting for the lease counts in
    /// its queue depth.
    pub(super) metrics: Arc<InstanceMetrics>,
}

/// Where a leader-only worker's instance stands in the term its worker
/// pulls for, as [`follow_leader`] decides it; [`run_one`](super::run::run_one) follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Term {
    /// Leads with a valid lease at this epoch: commands run.
    Serving(u64),
    /// Led at this epoch and its lease ran out unrenewed, while the
    /// election key still names it at that epoch, on a connected
    /// connection, for less than a lease: it serves nothing for now and
    /// may serve again at the same epoch. Commands running go on;
    /// commands taken meanwhile wait for it to serve again.
    Lapsed(u64),
    /// A lapse that can no longer be told from a takeover, since `since`:
    /// it lasted a lease (a standby may have taken the key, and the view
    /// not shown it yet: this instance's connection may be silent), or the
    /// connection was not connected. The commands running get
    /// [`HANDLER_STOP_WAIT`] from `since`, as after a deposal, and are
    /// then handed back, unless the instance serves again at the same
    /// epoch first (proof that nobody took the key meanwhile). Commands
    /// taken meanwhile wait, as in a lapse.
    Doubted {
        /// The epoch of the term.
        epoch: u64,
        /// When the lapse came into doubt.
        since: Instant,
    },
    /// Not leading: deposed (another instance holds the key, or nobody
    /// does), stopped, or no term begun yet. The term ended on a connected
    /// connection, not in doubt: the acknowledgements of the commands taken
    /// in it reached the server, which still counts their deliveries as
    /// this worker's, so they are handed back with a NAK, at once.
    Ended,
    /// Ended in doubt ([`Term::Doubted`]), or while the connection was not
    /// connected: the server may have offered a command taken in the term
    /// to a successor already (its `ack_wait` passed without this
    /// worker's in-progress acks reaching it), and it applies a NAK or an
    /// ACK of an older delivery to the current one. So the commands of
    /// the term are handed back by sending nothing that reopens or ends
    /// them ([`HandBack::AfterAckWait`]).
    Lost,
}

/// How a command this worker will not run, or not finish, goes back to
/// the work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum HandBack {
    /// A NAK: another worker gets it at once. Only while the delivery this
    /// worker holds is the command's current one ([`Term::Ended`]).
    AtOnce,
    /// Left to the consumer's `ack_wait`: no NAK, ACK or TERM of a
    /// delivery a successor may have superseded. It is negatively
    /// acknowledged with a delay of `ack_wait`, which the server applies
    /// as an in-progress ack does: it never offers the command sooner
    /// than `ack_wait` after it lands, and a successor running it keeps it
    /// by its own in-progress acks. Unheld, the command is offered again
    /// `ack_wait` after it was handed back, at most.
    AfterAckWait,
}

impl HandBack {
    /// How a command of a term that stands at `term` goes back, with the
    /// worker's connection `connected` or not.
    pub(super) fn of(term: Term, connected: bool) -> Self {
        match term {
            Term::Doubted { .. } | Term::Lost => Self::AfterAckWait,
            _ if !connected => Self::AfterAckWait,
            Term::Serving(_) | Term::Lapsed(_) | Term::Ended => Self::AtOnce,
        }
    }

    /// The outcome that hands a command back so, with `error` for the
    /// log, by a consumer whose `ack_wait` is `ack_wait`.
    pub(super) fn outcome(self, ack_wait: Duration, error: String) -> Outcome {
        let delay = match self {
            Self::AtOnce => Duration::ZERO,
            Self::AfterAckWait => ack_wait,
        };
        Outcome::Retry { delay, error }
    }
}

/// How a term ends that last stood at `last`: [`Term::Lost`] after a
/// doubt or while not `connected`, else [`Term::Ended`].
fn term_end(last: Term, connected: bool) -> Term {
    match HandBack::of(last, connected) {
        HandBack::AtOnce => Term::Ended,
        HandBack::AfterAckWait => Term::Lost,
    }
}

/// Whether `client` is connected (its acknowledgements reach the server,
/// unless the connection is silent).
pub(super) fn is_connected(client: &Client) -> bool {
    client.connection_state() == async_nats::connection::State::Connected
}

impl LeaderOf {
    /// The epoch, while this instance leads with a valid lease.
    fn serving(&self) -> Option<u64> {
        self.leadership.serving_epoch()
    }

    /// Where the term that began at `epoch` stands. A lease that ran out
    /// is a lapse while the campaign names no other leader, is not leading
    /// at another epoch, and the election key still names this instance
    /// at `epoch`: a renewal that commits then lets it serve again at the
    /// same epoch. Anything else ends the term.
    fn standing(&self, epoch: u64) -> Term {
        match self.serving() {
            Some(now) if now == epoch => return Term::Serving(epoch),
            Some(_) => return Term::Ended,
            None => {}
        }
        match self.leadership.role() {
            Role::Standby { leader: Some(_) } => return Term::Ended,
            Role::Leader { epoch: now } if now != epoch => return Term::Ended,
            Role::Standby { leader: None } | Role::Leader { .. } => {}
        }
        let holder = match (&self.view, &self.key) {
            (Some(view), Some((service, group))) => view.leaders().leader(service, group),
            _ => None,
        };
        match holder {
            Some(h) if h.instance_id == self.instance_id && h.epoch == epoch => Term::Lapsed(epoch),
            _ => Term::Ended,
        }
    }

    /// Whether the worker's connection is connected (the view it keeps
    /// can show a takeover).
    fn connected(&self) -> bool {
        self.client.as_ref().is_none_or(is_connected)
    }

    /// Waits for a role change, or at most [`LEADERSHIP_CHECK`].
    async fn next_check(&mut self) {
        tokio::select! {
            changed = self.roles.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(LEADERSHIP_CHECK).await;
                }
            }
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
        }
    }
}

/// How often a leader-only worker checks its lease between role changes:
/// a lease that lapses unrenewed stops serving without one.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(50);

/// A lapse of one term, as [`follow_leader`] follows it: since when it
/// lapsed, and since when that lapse is in doubt.
#[derive(Debug, Default)]
struct Lapse {
    began: Option<Instant>,
    doubted: Option<Instant>,
}

impl Lapse {
    /// Where the term stands, from what [`LeaderOf::standing`] says
    /// (`standing`), at `now`: a lapse longer than `lease`, or one while
    /// the connection is not `connected`, is in doubt from then on, until
    /// the instance serves again.
    fn judge(&mut self, standing: Term, now: Instant, lease: Duration, connected: bool) -> Term {
        match standing {
            Term::Lapsed(epoch) => {
                let began = *self.began.get_or_insert(now);
                if self.doubted.is_none()
                    && (!connected || now.saturating_duration_since(began) >= lease)
                {
                    self.doubted = Some(now);
                }
                match self.doubted {
                    Some(since) => Term::Doubted { epoch, since },
                    None => Term::Lapsed(epoch),
                }
            }
            other => {
                *self = Self::default();
                other
            }
        }
    }
}

/// Runs the pull loop of a leader-only worker while its instance leads:
/// one loop per term, stopped when the term ends (it lets the commands
/// running finish, as a stop does) and started again on the next. A lapse
/// of the lease does not end the term: the loop goes on, its commands
/// running go on, and those it takes wait (in [`run_one`](super::run::run_one)) until the
/// instance serves again at the same epoch, or the term ends. `terms`
/// tells [`run_one`](super::run::run_one) where the term stands.
pub(super) async fn follow_leader(
    durable: Durable,
    consumer: consumer::PullConsumer,
    handler: crate::pull::Handler,
    mut leader: LeaderOf,
    terms: watch::Sender<Term>,
    cancel: CancellationToken,
) {
    loop {
        let epoch = loop {
            if let Some(epoch) = leader.serving() {
                break epoch;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = leader.next_check() => {}
            }
        };
        info!(epoch, "leading: taking commands");
        terms.send_replace(Term::Serving(epoch));
        let term = cancel.child_token();
        let run = crate::pull::run(
            durable.clone(),
            consumer.clone(),
            handler.clone(),
            term.clone(),
        );
        tokio::pin!(run);
        let mut lapse = Lapse::default();
        let ended = async {
            loop {
                let standing = leader.standing(epoch);
                if standing == Term::Ended {
                    return;
                }
                let standing =
                    lapse.judge(standing, Instant::now(), leader.lease, leader.connected());
                let was = *terms.borrow();
                if was != standing {
                    terms.send_replace(standing);
                }
                match (was, standing) {
                    (Term::Serving(_), Term::Lapsed(_)) => info!(
                        epoch,
                        "lease ran out unrenewed, the key still this instance's: running no new command until it is renewed; the commands running go on"
                    ),
                    (Term::Serving(_) | Term::Lapsed(_), Term::Doubted { .. }) => warn!(
                        epoch,
                        connected = leader.connected(),
                        "lease not renewed for a lease, or the connection is down: a successor may lead unseen; the commands running are handed back in {HANDLER_STOP_WAIT:?} unless the lease is renewed first"
                    ),
                    (Term::Lapsed(_) | Term::Doubted { .. }, Term::Serving(_)) => {
                        info!(epoch, "lease renewed: running commands again")
                    }
                    _ => {}
                }
                leader.next_check().await;
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                // Commands waiting for the lease are handed back now, as
                // the term's end says. Read apart: the borrow would block
                // the send.
                let end = term_end(*terms.borrow(), leader.connected());
                terms.send_replace(end);
                run.await;
                return;
            }
            // Only the worker's own stop ends a term's loop.
            () = &mut run => return,
            () = ended => {
                info!(epoch, "no longer leading: taking no more commands");
                // Read apart: the borrow would block the send.
                let end = term_end(*terms.borrow(), leader.connected());
                terms.send_replace(end);
                term.cancel();
                run.await;
            }
        }
        if cancel.is_cancelled() {
            return;
        }
    }
}

/// Waits until this instance serves (its epoch), or until its worker's
/// term ends (how its commands go back): what a command taken during a
/// lapse of the lease waits for.
pub(super) async fn serving_again(
    leadership: &Leadership,
    mut terms: watch::Receiver<Term>,
) -> Result<u64, HandBack> {
    loop {
        if let Some(epoch) = leadership.serving_epoch() {
            return Ok(epoch);
        }
        match *terms.borrow_and_update() {
            Term::Ended => return Err(HandBack::AtOnce),
            Term::Lost => return Err(HandBack::AfterAckWait),
            Term::Serving(_) | Term::Lapsed(_) | Term::Doubted { .. } => {}
        }
        tokio::select! {
            changed = terms.changed() => {
                if changed.is_err() {
                    // The worker is gone: as its term last stood.
                    return Err(HandBack::of(*terms.borrow(), true));
                }
            }
            () = tokio::time::sleep(LEADERSHIP_CHECK) => {}
        }
    }
}

/// Resolves when a command running under a leader-only worker is to be
/// handed back: [`HANDLER_STOP_WAIT`] after its term's lapse came into
/// doubt ([`Term::Doubted`]), unless the instance served again before.
/// A deposal that follows the doubt keeps its clock; one without a doubt
/// before it is the pull loop's stop, which has its own. Never resolves
/// otherwise.
pub(super) async fn doubt_runs_out(leadership: &Leadership, mut terms: watch::Receiver<Term>) {
    let mut due: Option<Instant> = None;
    loop {
        match *terms.borrow_and_update() {
            Term::Doubted { since, .. } => due = Some(since + HANDLER_STOP_WAIT),
            Term::Serving(_) | Term::Lapsed(_) => due = None,
            Term::Ended | Term::Lost => {}
        }
        let clock = async {
            match due {
                Some(due) => tokio::time::sleep_until(due).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = terms.changed() => {
                if changed.is_err() {
                    // The worker is gone: its pull loop's stop bounds
                    // the command.
                    std::future::pending::<()>().await;
                }
            }
            () = clock => {
                if leadership.serving_epoch().is_none() {
                    return;
                }
                // Serving again: the term says so within a check.
                tokio::time::sleep(LEADERSHIP_CHECK).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lapse_longer_than_a_lease_or_while_disconnected_is_in_doubt_until_it_serves() {
        let lease = Duration::from_millis(400);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut lapse = Lapse::default();
        // A short lapse on a connected connection rides out.
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(0), lease, true),
            Term::Lapsed(7)
        );
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(399), lease, true),
            Term::Lapsed(7)
        );
        // A lease into it, it is in doubt, and stays so from then.
        let doubted = Term::Doubted {
            epoch: 7,
            since: ms(400),
        };
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(400), lease, true), doubted);
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(5000), lease, true), doubted);
        // Serving again ends it; the next lapse counts afresh.
        assert_eq!(
            lapse.judge(Term::Serving(7), ms(5100), lease, true),
            Term::Serving(7)
        );
        assert_eq!(
            lapse.judge(Term::Lapsed(7), ms(5200), lease, true),
            Term::Lapsed(7)
        );
        // Disconnected: in doubt at once, and still once connected again.
        let mut lapse = Lapse::default();
        let doubted = Term::Doubted {
            epoch: 7,
            since: ms(10),
        };
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(10), lease, false), doubted);
        assert_eq!(lapse.judge(Term::Lapsed(7), ms(20), lease, true), doubted);
        assert_eq!(lapse.judge(Term::Ended, ms(30), lease, true), Term::Ended);
    }

    #[test]
    fn a_term_ended_in_doubt_or_while_disconnected_hands_its_commands_back_by_ack_wait() {
        let doubted = Term::Doubted {
            epoch: 7,
            since: Instant::now(),
        };
        // A clean deposal or stop, on a connected connection: a NAK at once.
        assert_eq!(term_end(Term::Serving(7), true), Term::Ended);
        assert_eq!(term_end(Term::Lapsed(7), true), Term::Ended);
        assert_eq!(HandBack::of(Term::Ended, true), HandBack::AtOnce);
        // After a doubt, or while disconnected: nothing that reopens it.
        assert_eq!(term_end(doubted, true), Term::Lost);
        assert_eq!(term_end(Term::Serving(7), false), Term::Lost);
        assert_eq!(HandBack::of(Term::Lost, true), HandBack::AfterAckWait);
        assert_eq!(HandBack::of(doubted, true), HandBack::AfterAckWait);
        // Left to ack_wait: a NAK the server takes as an in-progress ack.
        let ack_wait = Duration::from_secs(5);
        match HandBack::AfterAckWait.outcome(ack_wait, String::new()) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, ack_wait),
            _ => panic!("not a hand-back"),
        }
        match HandBack::AtOnce.outcome(ack_wait, String::new()) {
            Outcome::Retry { delay, .. } => assert_eq!(delay, Duration::ZERO),
            _ => panic!("not a hand-back"),
        }
    }
}
