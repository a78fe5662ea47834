//! [`Background`]: the one handle the SDK keeps for the tasks behind a
//! running component (an event subscription's pull loop, a command worker,
//! a registration's heartbeat, an instance's telemetry).
//!
//! Every such component stops the same two ways: gracefully, by telling its
//! tasks to stop and waiting for the work in progress, or at once when its
//! handle is dropped, by telling them to stop without waiting. The tasks
//! share one [`CancellationToken`] and a [`TaskTracker`], so a component
//! with several tasks stops them together.
//!
//! The election is the exception and keeps its own handle: dropping it must
//! *abort* the campaign, because a cancelled campaign resigns, and a
//! dropped (crashed) leader must keep its key until the lease lapses.

use std::future::Future;

use tokio_util::{sync::CancellationToken, task::TaskTracker};

/// Tasks that stop together: [`stop`](Self::stop) cancels them and waits;
/// dropping the handle cancels them without waiting.
#[derive(Debug, Default)]
pub(crate) struct Background {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Background {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Spawns the task `make` builds from the shared token; it must return
    /// soon after the token is cancelled. Its log lines are those of the
    /// service whose work spawns it (see `telemetry::log_layer`).
    pub(crate) fn spawn<F>(&self, make: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker
            .spawn(crate::telemetry::log_layer::inherit(make(
                self.cancel.clone(),
            )));
    }

    /// Tells every task to stop, at once, and returns a future that ends
    /// when they all have. The future owns what it needs, so a `Drop` can
    /// hand it to the runtime.
    pub(crate) fn stop(&self) -> impl Future<Output = ()> + Send + 'static {
        self.cancel.cancel();
        self.tracker.close();
        let tracker = self.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(crate) fn is_stopped(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// What a caught panic said (`panic!("bad math")` gives "bad math"), for
/// the log line of a handler that panicked: without it the reason is only
/// in stderr's panic report, not in the WARN a log layer forwards.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("a panic without a message")
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use super::*;

    /// A task that counts its own end once it was cancelled, after a pause
    /// that stands for the work in progress.
    async fn finishing(ended: Arc<AtomicUsize>, cancel: CancellationToken) {
        cancel.cancelled().await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        ended.fetch_add(1, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn stop_waits_for_every_task() {
        let ended = Arc::new(AtomicUsize::new(0));
        let tasks = Background::new();
        tasks.spawn(|cancel| finishing(ended.clone(), cancel));
        tasks.spawn(|cancel| finishing(ended.clone(), cancel));
        assert!(!tasks.is_stopped());
        tasks.stop().await;
        assert!(tasks.is_stopped());
        assert_eq!(ended.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn drop_cancels_without_waiting() {
        let ended = Arc::new(AtomicUsize::new(0));
        let tasks = Background::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tasks.spawn(|cancel| async move {
            cancel.cancelled().await;
            let _ = tx.send(());
        });
        tasks.spawn(|cancel| finishing(ended.clone(), cancel));
        drop(tasks);
        tokio::time::timeout(Duration::from_secs(5), rx)
            .await
            .expect("a dropped handle cancels its tasks")
            .expect("the task saw the cancellation");
        assert_eq!(
            ended.load(Ordering::SeqCst),
            0,
            "the drop did not wait for the work in progress"
        );
    }
}
