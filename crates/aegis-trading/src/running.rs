//! [`Running`]: the handle every example service's `start` returns — the
//! SDK service plus the background tasks the service feeds or is fed by
//! (pricing's quote publisher, risk's fill follower and limits watch,
//! order's bucket follower and recovery sweep). One type, so `aegis
//! service`, tests and benchmarks hold and stop any of them the same way.

use aegis_sdk::rpc::Service;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::TradingError;

/// A running service instance. [`shutdown`](Self::shutdown) stops it
/// gracefully; dropping it stops its background tasks and serving at once
/// (a single-active instance does not resign then, as a crash would not: a
/// standby takes over when the lease lapses).
///
/// A plain SDK [`Service`] with no tasks of its own converts with
/// [`From`], so callers that also run bare services hold one type.
#[derive(Debug)]
pub struct Running {
    service: Service,
    tasks: Vec<JoinHandle<()>>,
    /// Cancels `tasks` when fired or dropped.
    stop: Option<DropGuard>,
    order: StopOrder,
}

/// When a graceful stop ends the background tasks, relative to the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StopOrder {
    /// Tasks first: they only feed the outside world (pricing's quotes), so
    /// nothing is published once the instance starts leaving.
    TasksFirst,
    /// The service first: its handlers read what the tasks keep (positions,
    /// the order index), so the tasks run until requests in flight finish.
    ServiceFirst,
}

impl Running {
    /// `service` with `tasks` that stop when `cancel` fires, in `order`.
    pub(crate) fn new(
        service: Service,
        tasks: Vec<JoinHandle<()>>,
        cancel: CancellationToken,
        order: StopOrder,
    ) -> Self {
        Self {
            service,
            tasks,
            stop: Some(cancel.drop_guard()),
            order,
        }
    }

    /// This instance's id.
    pub fn instance_id(&self) -> &str {
        self.service.instance_id()
    }

    /// The RPC service (metrics, registration, election, status).
    pub fn service(&self) -> &Service {
        &self.service
    }

    /// Stops gracefully. The service's own stop resigns (single-active),
    /// deregisters and finishes the requests in flight; the background
    /// tasks are cancelled and awaited before or after it, as the service
    /// needs (see `StopOrder`). A resigning order leader's writes after the
    /// resignation are refused (NOT_ACTIVE: no lease, and soon the
    /// successor's fence); their idempotent callers retry on the new
    /// leader (a handler's own NOT_ACTIVE resends only idempotent calls).
    ///
    /// # Errors
    /// [`TradingError::Service`] when the service did not stop cleanly; the
    /// background tasks stop anyway.
    pub async fn shutdown(self) -> Result<(), TradingError> {
        let Self {
            service,
            tasks,
            stop,
            order,
        } = self;
        let stop_tasks = async move {
            drop(stop);
            for task in tasks {
                let _ = task.await;
            }
        };
        let stopped = match order {
            StopOrder::TasksFirst => {
                stop_tasks.await;
                service.shutdown().await
            }
            StopOrder::ServiceFirst => {
                let stopped = service.shutdown().await;
                stop_tasks.await;
                stopped
            }
        };
        stopped?;
        Ok(())
    }
}

impl From<Service> for Running {
    /// A service with no background tasks of its own.
    fn from(service: Service) -> Self {
        Self {
            service,
            tasks: Vec::new(),
            stop: None,
            order: StopOrder::ServiceFirst,
        }
    }
}
