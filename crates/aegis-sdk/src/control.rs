//! The operator's handle on a running instance, for drills: every service
//! started with [`ServiceBuilder::start`](crate::rpc::ServiceBuilder::start)
//! answers [`ControlRequest`]s on `aegis.control.{service}.{instance}` —
//! make it report UNHEALTHY (for a while or until told otherwise), make it
//! healthy again, slow its handlers down (its registry record then says
//! so: metadata `drillDelayMs`), or just report its state. `aegis
//! chaos unhealthy|healthy|slow` sends them. Only the operator role may
//! publish under `aegis.control.>` once NATS permissions are on; a request
//! JetStream relayed onto the subject (a consumer's delivery or a republish
//! some other role pointed here) is dropped unanswered
//! ([`relayed`](crate::rpc::server::relayed)).
//!
//! It also carries the instance's health to its leadership: a sticky
//! leader whose health check failed `resign_after` times in a row, or that
//! an operator made unhealthy, is told so
//! ([`Election::set_healthy`](crate::election::Election::set_healthy)) and
//! hands over to a healthy standby.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use aegis_contracts::{
    control::{ControlRequest, ControlResponse, ControlState},
    subjects,
    wire::WireError,
};
use futures::StreamExt;
use tokio::{sync::watch, task::JoinHandle};
use tracing::{debug, info, warn};

use crate::{
    election::{Leadership, Role, health::HealthGate},
    registry::{Health, RegistrationHandle},
    rpc::server::relayed,
};

/// Drill state the request path reads: the delay added to every handler.
#[derive(Debug, Default)]
pub(crate) struct Drills {
    delay_ms: AtomicU64,
}

impl Drills {
    /// The delay to add before a handler runs, if any.
    pub(crate) fn delay(&self) -> Option<Duration> {
        match self.delay_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(Duration::from_millis(ms)),
        }
    }
}

/// What the control task acts on.
pub(crate) struct Controlled {
    pub(crate) service: String,
    pub(crate) instance: String,
    pub(crate) drills: Arc<Drills>,
    pub(crate) registration: Option<RegistrationHandle>,
    pub(crate) leadership: Option<Leadership>,
}

/// Subscribes to the instance's control subject and answers requests until
/// aborted.
///
/// # Errors
/// When NATS refuses the subscription.
pub(crate) async fn start(
    client: &async_nats::Client,
    target: Controlled,
) -> Result<JoinHandle<()>, async_nats::SubscribeError> {
    let subject = subjects::instance_control_subject(&target.service, &target.instance);
    let mut requests = client.subscribe(subject).await?;
    let client = client.clone();
    Ok(tokio::spawn(async move {
        while let Some(msg) = requests.next().await {
            // A drill JetStream relayed here came from whichever role set
            // up the consumer or stream, not from the operator.
            if !relayed::admit(&msg) {
                continue;
            }
            let Some(reply) = msg.reply.clone() else {
                continue;
            };
            let response = match serde_json::from_slice::<ControlRequest>(&msg.payload) {
                Ok(request) => match request.validate() {
                    Ok(()) => target.apply(request).await,
                    Err(e) => ControlResponse::Error(e),
                },
                Err(e) => ControlResponse::Error(WireError::invalid_request(format!(
                    "not a control request ({e}); expected e.g. {{\"op\":\"unhealthy\",\"for_ms\":30000}}, {{\"op\":\"healthy\"}}, {{\"op\":\"slow\",\"delay_ms\":500}} or {{\"op\":\"status\"}}"
                ))),
            };
            let body = serde_json::to_vec(&response).unwrap_or_default();
            if let Err(e) = client.publish(reply, body.into()).await {
                debug!(error = %crate::startup::Causes(&e), "could not answer a control request");
            }
        }
    }))
}

impl Controlled {
    async fn apply(&self, request: ControlRequest) -> ControlResponse {
        let written = match &request {
            ControlRequest::Unhealthy { for_ms } => {
                let Some(registration) = &self.registration else {
                    return self.unregistered();
                };
                // INFO: the registration's `status_changed` event is what
                // the monitor shows; a forwarded WARN line would repeat it.
                info!(
                    for_ms = *for_ms,
                    "control: an operator makes this instance UNHEALTHY"
                );
                registration
                    .force_unhealthy(for_ms.map(Duration::from_millis))
                    .await
            }
            ControlRequest::Healthy => {
                let Some(registration) = &self.registration else {
                    return self.unregistered();
                };
                info!("control: an operator lifts the UNHEALTHY verdict");
                registration.lift_unhealthy().await
            }
            ControlRequest::Slow { delay_ms } => {
                if *delay_ms == 0 {
                    info!("control: an operator lifts the delay of the handlers");
                } else {
                    info!(delay_ms, "control: an operator delays every handler");
                }
                self.drills.delay_ms.store(*delay_ms, Ordering::Relaxed);
                // The record says so, as it says an operator's verdict:
                // a latency the drill makes is not chased as a real one.
                // Written after the reply: the delay holds from now on,
                // and a write waits for a heartbeat's in progress (or,
                // with no registry quorum, for its timeout), which the
                // operator's tool must not wait for. The heartbeat
                // writes it again if this write fails.
                if let Some(registration) = self.registration.clone() {
                    let delay = Duration::from_millis(*delay_ms);
                    tokio::spawn(crate::telemetry::log_layer::inherit(async move {
                        if let Err(e) = registration.set_drill_delay(delay).await {
                            warn!(error = %crate::startup::Causes(&e), "control: the record could not say the drill at once; the heartbeat retries");
                        }
                    }));
                }
                Ok(())
            }
            ControlRequest::Status => Ok(()),
        };
        if let Err(e) = written {
            // The verdict holds; the heartbeat retries the write.
            warn!(error = %crate::startup::Causes(&e), "control: the record could not be written at once; the heartbeat retries");
        }
        ControlResponse::Ok(self.state())
    }

    fn unregistered(&self) -> ControlResponse {
        ControlResponse::Error(WireError::new(
            aegis_contracts::ErrorCode::Conflict,
            format!(
                "{} is not registered, so it reports no health to make unhealthy",
                self.instance
            ),
        ))
    }

    fn state(&self) -> ControlState {
        let health = self
            .registration
            .as_ref()
            .map(RegistrationHandle::health)
            .unwrap_or_default();
        ControlState {
            service: self.service.clone(),
            instance: self.instance.clone(),
            healthy: health.is_healthy(),
            reason: health.reason,
            since: health.since,
            forced_until: health.forced_until,
            delay_ms: self.drills.delay_ms.load(Ordering::Relaxed),
            role: self.leadership.as_ref().map(|l| {
                match l.role() {
                    Role::Leader { .. } => "leader",
                    Role::Standby { .. } => "standby",
                }
                .to_owned()
            }),
        }
    }
}

/// Whether the leadership should count this instance healthy: no
/// operator's verdict, and fewer than `resign_after` failed checks in a row.
pub(crate) fn fit_to_lead(health: &Health, resign_after: u32) -> bool {
    !health.forced && health.failed_checks < resign_after.max(1)
}

/// Tells the election each change of the instance's fitness to lead.
pub(crate) fn mirror_health(
    mut health: watch::Receiver<Health>,
    gate: Arc<HealthGate>,
    resign_after: u32,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let fit = fit_to_lead(&health.borrow_and_update(), resign_after);
            if fit != gate.is_healthy() {
                if fit {
                    info!("healthy again: campaigning as usual");
                } else {
                    warn!(
                        "unhealthy: a leader hands over to a healthy standby, a standby lets healthy ones go first"
                    );
                }
                gate.set_healthy(fit);
            }
            if health.changed().await.is_err() {
                return;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitness_counts_checks_in_a_row_and_the_operator() {
        let h = |failed_checks, forced| Health {
            failed_checks,
            forced,
            ..Health::default()
        };
        assert!(fit_to_lead(&h(0, false), 3));
        assert!(fit_to_lead(&h(2, false), 3));
        assert!(!fit_to_lead(&h(3, false), 3));
        assert!(!fit_to_lead(&h(0, true), 3));
        assert!(!fit_to_lead(&h(1, false), 0), "0 means 1");
    }
}
