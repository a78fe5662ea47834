//! The shared subject of a single-active service belongs to its leader.
//!
//! Only the ACTIVE instance is in the `rpc.{service}` queue group of a
//! leader-only method's shared subject `rpc.{service}.{method}`; STANDBYs
//! are not, so a plain NATS request (any client, any language) reaches the
//! leader or, during a hand-over, gets "no responders" and retries — never a
//! standby's refusal. This task joins the queue group when the election
//! makes this instance the leader and leaves it when it stops leading (or
//! the service stops). The instance-directed subjects stay subscribed on
//! every instance: a standby still answers them NOT_ACTIVE with the
//! leader's id.
//!
//! Each term gets fresh subscriptions, read by the same
//! [`endpoint::drive`](super::endpoint::drive) loop as every other subject; leaving
//! unsubscribes them, and what had already arrived is still answered (by the
//! lease check: served while the lease is valid, refused after).

use std::{sync::Arc, time::Duration};

use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use super::endpoint::{Method, Route, drive};
use crate::election::Role;

/// How soon a failed subscription of the leader is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// What the gate needs to (un)subscribe the leader-only shared subjects.
pub(crate) struct LeaderGate {
    pub(crate) client: async_nats::Client,
    pub(crate) queue_group: String,
    /// `(shared subject, method)` of every leader-only method.
    pub(crate) methods: Vec<(String, Arc<Method>)>,
    pub(crate) tracker: TaskTracker,
    /// Cancelled when the service stops: leave for good.
    pub(crate) leave: CancellationToken,
    /// Passed to the drive loops (stop reading when NATS is unreachable).
    pub(crate) stop: CancellationToken,
}

impl LeaderGate {
    /// Follows `roles` until the service stops (`leave`) or the election ends.
    pub(crate) async fn run(self, mut roles: watch::Receiver<Role>) {
        // The subscriptions of the current term, and how many are up.
        let mut term: Option<(CancellationToken, usize)> = None;
        loop {
            let leading = roles.borrow_and_update().is_leader();
            match (&mut term, leading) {
                (None, true) => {
                    let token = self.leave.child_token();
                    let joined = self.join(&token, 0).await;
                    term = Some((token, joined));
                }
                (Some((token, joined)), true) if *joined < self.methods.len() => {
                    *joined = self.join(token, *joined).await;
                }
                (Some(_), false) => {
                    if let Some((token, _)) = term.take() {
                        debug!("stepping down: leaving the shared subjects");
                        token.cancel();
                    }
                }
                _ => {}
            }
            let incomplete = term
                .as_ref()
                .is_some_and(|(_, joined)| *joined < self.methods.len());
            tokio::select! {
                () = self.leave.cancelled() => return,
                changed = roles.changed() => {
                    if changed.is_err() {
                        // The election ended (the service is stopping).
                        if let Some((token, _)) = term.take() {
                            token.cancel();
                        }
                        return;
                    }
                }
                () = tokio::time::sleep(RETRY), if incomplete => {}
            }
        }
    }

    /// Subscribes the methods from index `from` on; returns how many are
    /// subscribed now (all of them, unless NATS refused one).
    async fn join(&self, token: &CancellationToken, from: usize) -> usize {
        for (i, (subject, method)) in self.methods.iter().enumerate().skip(from) {
            match self
                .client
                .queue_subscribe(subject.clone(), self.queue_group.clone())
                .await
            {
                Ok(subscription) => {
                    self.tracker.spawn(drive(
                        subscription,
                        method.clone(),
                        Route::Shared,
                        token.clone(),
                        self.stop.clone(),
                    ));
                }
                Err(e) => {
                    warn!(subject = %subject, error = %crate::startup::Causes(&e), "leader cannot subscribe its shared subject; retrying");
                    return i;
                }
            }
        }
        debug!(
            subjects = self.methods.len(),
            "leading: joined the shared subjects"
        );
        self.methods.len()
    }
}
