//! `aegis_sdk::kv::reopening_woken`: a wake told since the stream was last
//! opened ends the pause before the next opening — told while a stream is
//! read (which ends itself on it), while it is being opened, or during the
//! pause — and each wake ends one pause only, so a wake does not turn the
//! loop into a busy one.
//!
//! The streams here are made up, to break when the test says: the pause
//! grows from 50 ms to 2 s while opening fails, so once it has grown, an
//! opening within a few hundred milliseconds of a wake is the wake's doing.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use aegis_sdk::kv::reopening_woken;
use futures::{StreamExt, stream::BoxStream};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
    time::{Instant, timeout},
};
use tokio_util::sync::CancellationToken;

/// What an opening hands over: an item or the stream's break.
type Item = Result<u32, String>;

/// How the `n`th opening (from 1) goes.
#[derive(Clone, Copy)]
enum Opening {
    /// Fails.
    Fails,
    /// Waits for the test's go, then fails.
    FailsOnGo,
    /// Opens a stream that hands nothing over and ends on the next wake.
    EndsOnWake,
}

/// The openings of a running `reopening_woken`, as the test sees them.
struct Run {
    opened: mpsc::UnboundedReceiver<Instant>,
    wake: watch::Sender<u64>,
    go: Arc<Notify>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// Starts `reopening_woken` with openings that go as `plan` says (by their
/// number, from 1; those after its last fail).
fn start(plan: fn(usize) -> Opening) -> Run {
    let (opened_tx, opened) = mpsc::unbounded_channel();
    let (wake, woken) = watch::channel(0u64);
    let go = Arc::new(Notify::new());
    let cancel = CancellationToken::new();
    let count = Arc::new(AtomicUsize::new(0));
    let (wake_for_open, go_for_open) = (wake.clone(), go.clone());
    let task = tokio::spawn(reopening_woken(
        "made-up stream",
        (),
        cancel.clone(),
        woken,
        move |_: &()| {
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            let _ = opened_tx.send(Instant::now());
            let (mut ends, go) = (wake_for_open.subscribe(), go_for_open.clone());
            async move {
                match plan(n) {
                    Opening::Fails => Err(format!("opening {n} failed")),
                    Opening::FailsOnGo => {
                        go.notified().await;
                        Err(format!("opening {n} failed"))
                    }
                    Opening::EndsOnWake => {
                        let woken = async move {
                            let _ = ends.changed().await;
                        };
                        let items: BoxStream<'static, Item> =
                            futures::stream::pending().take_until(woken).boxed();
                        Ok(items)
                    }
                }
            }
        },
        |_: &mut (), _: u32| {},
    ));
    Run {
        opened,
        wake,
        go,
        cancel,
        task,
    }
}

impl Run {
    /// When the next opening began; fails after `within`.
    async fn next_opening(&mut self, within: Duration) -> Instant {
        timeout(within, self.opened.recv())
            .await
            .unwrap_or_else(|_| panic!("no opening within {within:?}"))
            .expect("the loop is running")
    }

    /// Waits for the first `n` openings: failing ones, the pause after the
    /// last of them has grown to 800 ms or more.
    async fn openings(&mut self, n: usize) -> Instant {
        let mut last = None;
        for _ in 0..n {
            last = Some(self.next_opening(Duration::from_secs(5)).await);
        }
        last.expect("n > 0")
    }

    fn wake(&self) {
        self.wake.send_modify(|told| *told += 1);
    }

    async fn stop(self) {
        self.cancel.cancel();
        timeout(Duration::from_secs(1), self.task)
            .await
            .expect("cancelled, it returns")
            .expect("it does not panic");
    }
}

/// Far below the pause the openings have grown to (800 ms, then 1.6 s).
const AT_ONCE: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_wake_during_the_pause_opens_again_at_once_and_ends_that_pause_only() {
    let mut run = start(|_| Opening::Fails);
    // Failed five times: the pauses were 50, 100, 200 and 400 ms, and now
    // 800 ms.
    run.openings(5).await;
    // Told a hundred times over; one wake as far as the loop goes.
    for _ in 0..100 {
        run.wake();
    }
    let woken = Instant::now();
    let reopened = run.next_opening(AT_ONCE).await;
    assert!(reopened - woken < AT_ONCE);
    // Not woken again: the next pause is waited out in full (1.6 s), not
    // cut short by the wake already told.
    let next = run.next_opening(Duration::from_secs(3)).await;
    assert!(
        next - reopened >= Duration::from_millis(1500),
        "opened again after {:?} with no new wake",
        next - reopened
    );
    run.stop().await;
}

#[tokio::test]
async fn a_wake_while_the_stream_is_read_opens_it_again_at_once_once_it_ends() {
    let mut run = start(|n| {
        if n == 6 {
            Opening::EndsOnWake
        } else {
            Opening::Fails
        }
    });
    run.openings(5).await;
    // The sixth opening hands a stream that is read until the wake.
    run.next_opening(Duration::from_secs(2)).await;
    run.wake();
    let woken = Instant::now();
    let reopened = run.next_opening(AT_ONCE).await;
    assert!(reopened - woken < AT_ONCE);
    run.stop().await;
}

#[tokio::test]
async fn a_wake_while_the_stream_is_being_opened_is_not_lost() {
    let mut run = start(|n| {
        if n == 6 {
            Opening::FailsOnGo
        } else {
            Opening::Fails
        }
    });
    run.openings(5).await;
    // The sixth opening has begun, and waits for the go: told meanwhile.
    run.next_opening(Duration::from_secs(2)).await;
    run.wake();
    run.go.notify_one();
    let failed = Instant::now();
    let reopened = run.next_opening(AT_ONCE).await;
    assert!(reopened - failed < AT_ONCE);
    run.stop().await;
}

#[tokio::test]
async fn a_wake_told_before_the_last_opening_began_does_not_end_its_pause() {
    let mut run = start(|_| Opening::Fails);
    run.openings(5).await;
    // Told during the 800 ms pause before the sixth opening: that pause
    // ends (well within it, so an ignored wake fails here), and the one
    // after the sixth (1.6 s) is waited out.
    run.wake();
    let woken = Instant::now();
    let sixth = run.next_opening(AT_ONCE).await;
    assert!(sixth - woken < AT_ONCE);
    let seventh = run.next_opening(Duration::from_secs(3)).await;
    assert!(
        seventh - sixth >= Duration::from_millis(1500),
        "opened again after {:?}",
        seventh - sixth
    );
    run.stop().await;
}
