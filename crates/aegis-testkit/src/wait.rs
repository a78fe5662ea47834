//! Awaiting a condition in an async test instead of sleeping a fixed time:
//! [`eventually`] polls until something holds, [`until_some`] until
//! something is found and returns it. Both panic with what they waited for
//! once the bound passes, so a failing test says why.
//!
//! The bound is a ceiling, not a wait: a condition met at once returns at
//! once. [`PATIENCE`] is a generous default for a slow CI machine.

use std::{future::Future, time::Duration};

/// A generous bound for anything a test awaits: a slow, loaded CI machine
/// must not fail a test that is right.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// How often a condition is polled: short enough to add little to a test,
/// long enough not to load the server being observed.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` every [`POLL`] until it is true.
///
/// ```no_run
/// # async fn demo(ready: std::sync::Arc<std::sync::atomic::AtomicBool>) {
/// use aegis_testkit::wait::{PATIENCE, eventually};
/// use std::sync::atomic::Ordering;
///
/// eventually(PATIENCE, "the flag is set", || async { ready.load(Ordering::SeqCst) }).await;
/// # }
/// ```
///
/// # Panics
/// With "timed out waiting for: {what}" when `cond` is still false after
/// `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    until_some(timeout, what, || {
        let met = cond();
        async move { met.await.then_some(()) }
    })
    .await;
}

/// Polls `find` every [`POLL`] until it returns `Some`, and returns what it
/// found.
///
/// ```no_run
/// # async fn demo(seen: std::sync::Arc<std::sync::Mutex<Vec<u64>>>) {
/// use aegis_testkit::wait::{PATIENCE, until_some};
///
/// let big = until_some(PATIENCE, "a value over 10", || async {
///     seen.lock().unwrap().iter().copied().find(|v| *v > 10)
/// })
/// .await;
/// # }
/// ```
///
/// # Panics
/// With "timed out waiting for: {what}" when `find` still returns `None`
/// after `timeout`.
pub async fn until_some<T, F, Fut>(timeout: Duration, what: &str, mut find: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(found) = find().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Returns once the server has applied every subscription `client` sent
/// before the call.
///
/// `Client::flush` only writes the client's buffer to the socket: a
/// request another connection makes right after it can still reach the
/// server before the `SUB` is in effect (and find no responders, or an
/// unsubscribed one). The server handles one connection's protocol in
/// order, so once a message published to a fresh inbox this client
/// subscribes to comes back, every earlier `SUB` and `UNSUB` is in force.
///
/// ```no_run
/// # async fn demo(client: async_nats::Client) {
/// let sub = client.subscribe("aegis.control.svc.i-1.config").await.unwrap();
/// aegis_testkit::wait::server_caught_up(&client).await;
/// // A request from any connection now reaches `sub`.
/// # }
/// ```
///
/// The client needs permission to subscribe and publish to its inbox
/// prefix; under narrower permissions any request the server answers on
/// the same connection (e.g. a JetStream account query) is the barrier.
///
/// # Panics
/// When the echo has not come back within [`PATIENCE`], or the client
/// cannot subscribe or publish.
pub async fn server_caught_up(client: &async_nats::Client) {
    use futures::StreamExt;
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .expect("subscribe to the echo inbox");
    client
        .publish(inbox, Default::default())
        .await
        .expect("publish the echo");
    tokio::time::timeout(PATIENCE, echo.next())
        .await
        .expect("timed out waiting for: the server to echo a message")
        .expect("the echo subscription ended");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn returns_once_the_condition_holds() {
        let polls = AtomicU32::new(0);
        let found = until_some(Duration::from_secs(5), "the third poll", || async {
            let n = polls.fetch_add(1, Ordering::SeqCst) + 1;
            (n == 3).then_some(n)
        })
        .await;
        assert_eq!(found, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "timed out waiting for: never")]
    async fn panics_naming_what_it_waited_for() {
        eventually(Duration::from_millis(60), "never", || async { false }).await;
    }
}
