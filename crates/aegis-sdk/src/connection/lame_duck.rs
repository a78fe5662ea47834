//! Leaving a NATS server that announced a planned shutdown (lame duck
//! mode) without losing a reply.
//!
//! NATS delivers a reply only to the connection that asked, and a service
//! may answer only on the connection a request came in on, so a client
//! that reconnected with requests in flight loses their replies. Each
//! pooled client counts its requests in flight ([`ClientLoad`]: asked and
//! awaiting a reply, or received and not yet answered); on a lame duck
//! notice [`move_off_lame_ducks`] waits for a moment with none (at most
//! [`MOVE_IDLE_WAIT`]), flushes and reconnects to another server of the
//! pool ([`move_target`]). New requests wait for the move meanwhile
//! ([`ClientLoad::settled`]), an RPC call no longer than its timeout; [`Outstanding`] ends a wait for a reply that can
//! no longer come.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_nats::Client;
use tracing::{debug, info};

/// How long a client whose server entered lame duck mode waits for a moment
/// with no request in flight before it moves anyway.
///
/// The server lets clients go only after its grace period (10 s by default,
/// 1 s in `aegis up`), so there is time; a client that is never idle still
/// moves, and its requests in flight end as on any dropped connection.
const MOVE_IDLE_WAIT: Duration = Duration::from_millis(500);

/// How long a move waits for the replies already written to be sent.
const MOVE_FLUSH_WAIT: Duration = Duration::from_millis(100);

/// What one pooled client is doing, for a move off a stopping server.
#[derive(Debug, Default)]
pub(crate) struct ClientLoad {
    /// Requests in flight on it: sent and awaiting their reply, or received
    /// and not yet answered.
    busy: AtomicUsize,
    /// Of those, the requests received and not yet answered.
    serving: AtomicUsize,
    /// Set while it moves away from a server in lame duck mode, so the next
    /// connection attempt goes at once to another server.
    pub(super) moving: std::sync::atomic::AtomicBool,
    /// Connection attempts made by the current move.
    pub(super) move_tries: AtomicUsize,
    /// Set from the server's lame duck notice until the client is connected
    /// elsewhere: new requests wait for the move rather than delay it.
    pub(super) leaving: std::sync::atomic::AtomicBool,
    /// Wakes the requests waiting for a move.
    moved: tokio::sync::Notify,
    /// The client's count of connections made when the last notice came.
    notice_connects: AtomicU64,
    /// Wakes the requests in flight when it drops.
    dropped: tokio::sync::Notify,
}

impl ClientLoad {
    /// Returns once `client` is not leaving a server in lame duck mode, or
    /// after twice [`MOVE_IDLE_WAIT`] (a move that could not happen).
    /// Returns at once while the connection serves a request (`serving`,
    /// the primary client's count): the request may be one a handler
    /// sends, and the move waits for that handler.
    /// Returns how long it waited: zero, without reading the clock, on the
    /// common path (no move under way). A caller with a shorter deadline
    /// bounds the wait itself (an RPC call by its attempt's timeout).
    pub(super) async fn settled(&self, client: &Client, serving: &ClientLoad) -> Duration {
        if !self.leaving.load(Ordering::Acquire) || serving.serving.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        // The flag is cleared by the `Connected` event, which a full event
        // channel could lose: a connection made since the notice counts too.
        if self.reconnected_since_notice(client) {
            self.leaving.store(false, Ordering::Release);
            return Duration::ZERO;
        }
        let waiting = tokio::time::Instant::now();
        let moved = async {
            loop {
                let notified = self.moved.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !self.leaving.load(Ordering::Acquire) {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(2 * MOVE_IDLE_WAIT, moved).await;
        waiting.elapsed()
    }

    /// Whether `client` made a connection since the last lame duck notice.
    fn reconnected_since_notice(&self, client: &Client) -> bool {
        client.statistics().connects.load(Ordering::Relaxed)
            > self.notice_connects.load(Ordering::Relaxed)
    }

    /// The client is connected again (after a move or any reconnect).
    pub(super) fn connected(&self) {
        self.moving.store(false, Ordering::Relaxed);
        self.leaving.store(false, Ordering::Release);
        self.moved.notify_waiters();
    }

    /// The connection dropped: requests in flight stop waiting for replies
    /// that cannot come. Called from the client's event callback, before
    /// anything else it does.
    pub(super) fn connection_dropped(&self) {
        self.dropped.notify_waiters();
    }

    /// Counts a request sent and awaiting its reply until the guard drops,
    /// and tells when the connection drops meanwhile.
    ///
    /// Borrowed, not counted in a reference: a call touches no shared count
    /// but the load's own (measured in docs/performance.md).
    pub(crate) fn enter(&self) -> Outstanding<'_> {
        Outstanding {
            dropped: self.dropped.notified(),
            counted: Counted::new(self, false),
        }
    }

    /// Counts a request received and not yet answered until the guard drops.
    pub(crate) fn enter_serving(&self) -> Counted<'_> {
        Counted::new(self, true)
    }
}

/// One request in flight on a client (see [`ClientLoad::enter`]): resolves
/// [`guard`](Self::guard) when the client's connection drops after the
/// request was counted.
#[derive(Debug)]
pub(crate) struct Outstanding<'a> {
    /// Made when the request was counted, it completes on any drop from
    /// then on, polled or not yet (`Notify::notify_waiters` counts its
    /// calls). It registers with the `Notify` only once polled: one lock
    /// to register and one to leave, none for a request that never waits.
    dropped: tokio::sync::futures::Notified<'a>,
    counted: Counted<'a>,
}

/// A request counted in its client's load until this drops.
#[derive(Debug)]
pub(crate) struct Counted<'a> {
    load: &'a ClientLoad,
    serving: bool,
}

impl<'a> Counted<'a> {
    fn new(load: &'a ClientLoad, serving: bool) -> Self {
        if serving {
            load.serving.fetch_add(1, Ordering::Relaxed);
        }
        load.busy.fetch_add(1, Ordering::Relaxed);
        Self { load, serving }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if self.serving {
            self.load.serving.fetch_sub(1, Ordering::Relaxed);
        }
        self.load.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Outstanding<'_> {
    /// Runs `work` unless the connection drops first, which ends the wait
    /// at once: a reply in flight on a dropped connection cannot come.
    pub(crate) async fn guard<F: std::future::Future>(
        self,
        work: F,
    ) -> Result<F::Output, super::ConnectionDropped> {
        let Outstanding { dropped, counted } = self;
        let out = tokio::select! {
            biased;
            out = work => Ok(out),
            () = dropped => Err(super::ConnectionDropped),
        };
        drop(counted);
        out
    }
}

/// What makes an [`Outstanding`] for one client from a task that holds no
/// [`Connection`](super::Connection) (the registry and election watches).
/// Cheap to clone.
#[derive(Clone)]
pub(crate) struct DropWatch {
    load: Arc<ClientLoad>,
}

impl DropWatch {
    pub(super) fn new(load: Arc<ClientLoad>) -> Self {
        Self { load }
    }

    /// Tells when the connection drops from now on, counting as a request
    /// in flight on it meanwhile (a move off a server in lame duck mode
    /// waits for it).
    pub(crate) fn dropped(&self) -> Outstanding<'_> {
        self.load.enter()
    }
}

/// Moves client `index` off its server each time that server announces
/// lame duck mode (a planned shutdown): at a moment with no request in
/// flight on it, so no reply is lost, since NATS delivers a reply only to
/// the connection that asked and a service may answer only on the
/// connection a request came in on. Ends with the connection.
pub(super) async fn move_off_lame_ducks(
    inner: std::sync::Weak<super::Inner>,
    index: usize,
    mut notices: tokio::sync::watch::Receiver<u64>,
) {
    while notices.changed().await.is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        let load = inner.loads[index].clone();
        let client = inner.clients[index].clone();
        drop(inner);
        load.notice_connects.store(
            client.statistics().connects.load(Ordering::Relaxed),
            Ordering::Relaxed,
        );
        let deadline = tokio::time::Instant::now() + MOVE_IDLE_WAIT;
        while load.busy.load(Ordering::Relaxed) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Already elsewhere (a reconnect while waiting, or a second notice
        // for a move that is done): nothing to move off.
        if !load.leaving.load(Ordering::Acquire) || load.reconnected_since_notice(&client) {
            load.connected();
            continue;
        }
        // Replies written but not yet sent would be lost with the socket;
        // bounded, as a connection the server already closed never flushes.
        match tokio::time::timeout(MOVE_FLUSH_WAIT, client.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                debug!(error = %crate::startup::Causes(&e), "could not flush before moving off a lame duck server")
            }
            Err(_) => debug!("flushing before moving off a lame duck server took too long"),
        }
        let busy = load.busy.load(Ordering::Relaxed);
        load.move_tries.store(0, Ordering::Relaxed);
        load.moving.store(true, Ordering::Relaxed);
        if let Err(e) = client.force_reconnect().await {
            load.connected();
            debug!(error = %crate::startup::Causes(&e), "could not move off a server in lame duck mode");
        } else if busy > 0 {
            info!(
                in_flight = busy,
                "moved off a server in lame duck mode with requests in flight"
            );
        }
    }
}

/// The server a moving client tries next: each of the pool once, skipping
/// the one it is leaving where that can be told from its address, with no
/// delay (the usual back-off is for servers that fail, and this one only
/// stops); then `None`, the usual selection and back-off.
pub(super) fn move_target(
    servers: &[async_nats::Server],
    leaving: &async_nats::ServerInfo,
    tries: &AtomicUsize,
) -> Option<async_nats::ReconnectToServer> {
    let wildcard = matches!(leaving.host.as_str(), "" | "0.0.0.0" | "::" | "[::]");
    let is_leaving = |s: &async_nats::Server| {
        s.addr.port() == leaving.port && (wildcard || s.addr.host() == leaving.host)
    };
    let others: Vec<_> = servers.iter().filter(|s| !is_leaving(s)).collect();
    let pool: Vec<_> = if others.is_empty() {
        servers.iter().collect()
    } else {
        others
    };
    let tried = tries.fetch_add(1, Ordering::Relaxed);
    pool.get(tried).map(|s| async_nats::ReconnectToServer {
        addr: s.addr.clone(),
        delay: Some(Duration::ZERO),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missed drop would wait forever: bounded, so the test fails instead.
    const MISSED: Duration = Duration::from_secs(2);

    #[tokio::test]
    async fn a_drop_ends_the_guarded_wait_whenever_it_comes() {
        let load = ClientLoad::default();

        // Before the wait starts (between sending and waiting).
        let early = load.enter();
        load.connection_dropped();
        let out = tokio::time::timeout(MISSED, early.guard(std::future::pending::<()>())).await;
        assert!(
            matches!(out, Ok(Err(_))),
            "a drop before the wait was missed"
        );

        // While waiting.
        let waiting = load.enter();
        assert_eq!(load.busy.load(Ordering::Relaxed), 1);
        let wait = tokio::time::timeout(MISSED, waiting.guard(std::future::pending::<()>()));
        let (out, ()) = tokio::join!(wait, async {
            tokio::task::yield_now().await;
            load.connection_dropped();
        });
        assert!(
            matches!(out, Ok(Err(_))),
            "a drop during the wait was missed"
        );

        // A drop before the request was counted is not its drop.
        let serving = load.enter_serving();
        assert_eq!(load.serving.load(Ordering::Relaxed), 1);
        let later = load.enter();
        // The work waits once, so the guard does look at the drops.
        let work = async {
            tokio::task::yield_now().await;
            7
        };
        assert_eq!(later.guard(work).await.ok(), Some(7));
        drop(serving);
        assert_eq!(
            load.busy.load(Ordering::Relaxed),
            0,
            "a guard stays counted"
        );
        assert_eq!(load.serving.load(Ordering::Relaxed), 0);
    }
}
