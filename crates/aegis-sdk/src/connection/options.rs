//! The options of one pooled client: credentials, TLS, timeouts, the
//! reconnect policy, and the connection events that feed the
//! [`Connection`](super::Connection)'s drop counters, permission
//! refusals and lame duck moves.

use std::sync::{Arc, atomic::Ordering};

use async_nats::ConnectOptions;
use tracing::{info, warn};

use super::{
    ConnectError,
    lame_duck::{ClientLoad, move_target},
    refusals::Refusals,
};
use crate::config::{AegisConfig, UrlAuth};

/// What one client's connection events feed.
pub(super) struct ClientHooks {
    /// Set once the connection drains on purpose.
    pub(super) draining: Arc<std::sync::atomic::AtomicBool>,
    /// Set once the client stops reconnecting (its reconnect limit used up).
    pub(super) closed_for_good: Arc<std::sync::atomic::AtomicBool>,
    /// The permission violations the server reported.
    pub(super) refused: Arc<Refusals>,
    /// Bumped when its server enters lame duck mode.
    pub(super) lame_duck: tokio::sync::watch::Sender<u64>,
    /// The client's requests in flight, whether it is moving, and its drops.
    pub(super) load: Arc<ClientLoad>,
}

pub(super) async fn connect_options(
    config: &AegisConfig,
    base_name: &str,
    index: usize,
    hooks: ClientHooks,
) -> Result<ConnectOptions, ConnectError> {
    let ClientHooks {
        draining,
        closed_for_good,
        refused,
        lame_duck,
        load,
    } = hooks;
    let n = &config.nats;
    let mut options = ConnectOptions::new();
    if let Some(path) = &n.creds_file {
        options =
            options
                .credentials_file(path)
                .await
                .map_err(|source| ConnectError::Credentials {
                    path: path.display().to_string(),
                    source,
                })?;
    }
    if let Some(token) = &n.token {
        options = options.token(token.expose().to_owned());
    }
    if let (Some(user), Some(password)) = (&n.user, &n.password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(seed) = &n.nkey_seed {
        options = options.nkey(seed.expose().to_owned());
    }
    // The client sends no user info of a URL itself.
    match crate::config::url_auth(&n.servers)? {
        Some(UrlAuth::UserPassword { user, password }) => {
            options = options.user_and_password(user, password.expose().to_owned());
        }
        Some(UrlAuth::Token(token)) => options = options.token(token.expose().to_owned()),
        None => {}
    }
    if let Some(prefix) = &n.inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    if let Some(ca) = &n.tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&n.tls_cert, &n.tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if n.tls_required {
        options = options.require_tls(true);
    }
    let policy = n.reconnect.clone();
    let max_reconnects = n.reconnect.max_reconnects;
    let connected_before = std::sync::atomic::AtomicBool::new(false);
    // When the connection was lost, for the line that says it is back.
    let lost_at = std::sync::Mutex::new(None::<std::time::Instant>);
    // The primary client (index 0) carries the base name itself: it is the
    // one instances register, serve and heart-beat over.
    let name = if index == 0 {
        base_name.to_owned()
    } else {
        format!("{base_name}-{index}")
    };
    Ok(options
        .name(name)
        .connection_timeout(n.connect_timeout)
        .request_timeout(Some(n.request_timeout))
        .ping_interval(n.ping_interval)
        .max_reconnects(n.reconnect.max_reconnects)
        .reconnect_delay_callback(move |attempt| try_delay(&policy, attempt))
        .reconnect_to_server_callback({
            let load = load.clone();
            move |servers, info| {
                let target = load
                    .moving
                    .load(Ordering::Relaxed)
                    .then(|| move_target(&servers, &info, &load.move_tries))
                    .flatten();
                async move { target }
            }
        })
        .event_callback(move |event| {
            let draining = draining.load(Ordering::Relaxed);
            let first = matches!(event, async_nats::Event::Connected)
                && !connected_before.swap(true, Ordering::Relaxed);
            if !draining && matches!(event, async_nats::Event::Disconnected) {
                // Before the log: requests in flight learn it at once.
                load.connection_dropped();
            }
            let mut lost = lost_at.lock().unwrap_or_else(|e| e.into_inner());
            let down_for = match event {
                async_nats::Event::Disconnected if !draining => {
                    lost.get_or_insert_with(std::time::Instant::now);
                    None
                }
                async_nats::Event::Connected => lost.take().map(|at| at.elapsed()),
                _ => None,
            };
            drop(lost);
            match &event {
                // Kept before the log, here in the client's event order:
                // an operation that then fails for want of the permission
                // finds it (see `Connection::refusal`).
                async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                    if text.contains("Permissions Violation") =>
                {
                    refused.record(text.clone());
                }
                async_nats::Event::LameDuckMode if !draining => {
                    load.leaving.store(true, Ordering::Release);
                    lame_duck.send_modify(|n| *n += 1);
                }
                async_nats::Event::Connected => load.connected(),
                // The client's connection task has ended: it reconnects no more.
                async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                    closed_for_good.store(true, Ordering::Release);
                }
                _ => {}
            }
            async move {
                match event {
                    // What this user may not do: said once per attempt, so
                    // a missing permission is visible in the log.
                    async_nats::Event::ServerError(async_nats::ServerError::Other(text))
                        if text.contains("Permissions Violation") =>
                    {
                        warn!(refusal = %text, "NATS refused an operation");
                    }
                    // The first connection is told by `Connection::connect`
                    // ("connected to NATS ..."), once.
                    async_nats::Event::Connected if first => {
                        tracing::debug!("NATS connection established")
                    }
                    // At the level the loss was told, so that wherever
                    // that went (the monitor takes WARN and above) the
                    // return goes too.
                    async_nats::Event::Connected => match down_for {
                        Some(down) => warn!(
                            down_ms = down.as_millis() as u64,
                            "NATS connection re-established after {:.1} s",
                            down.as_secs_f64()
                        ),
                        None => info!("NATS connection re-established"),
                    },
                    async_nats::Event::Disconnected if draining => {
                        tracing::debug!("NATS connection closed after draining")
                    }
                    async_nats::Event::Disconnected => warn!("NATS connection lost; reconnecting"),
                    async_nats::Event::ClientError(async_nats::ClientError::MaxReconnects) => {
                        tracing::error!(
                            max_reconnects = ?max_reconnects,
                            "NATS connection closed for good: {} reconnect attempts in a row \
                             failed (nats.reconnect.max_reconnects), and the client tries no \
                             more, even once the server is back; restart the process (the \
                             probes' /healthz now fails)",
                            max_reconnects.unwrap_or_default()
                        )
                    }
                    async_nats::Event::LameDuckMode => {
                        info!(
                            "the NATS server is shutting down (lame duck mode); moving to another"
                        )
                    }
                    other => tracing::debug!(event = %other, "NATS client event"),
                }
            }
        }))
}

/// The pause before async-nats' connection try `attempt` (1-based, the
/// first try included, counted again from 1 after a connection drops).
fn try_delay(policy: &crate::config::ReconnectPolicy, attempt: usize) -> std::time::Duration {
    match attempt.checked_sub(1) {
        // The first try: no pause (there is nothing to back off from).
        None | Some(0) => std::time::Duration::ZERO,
        Some(retry) => policy.delay(retry),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// async-nats counts a connection's very first try as attempt 1 and
    /// asks for a delay before it too: that try (and the first after a
    /// connection dropped) goes at once, and the policy's `initial_delay`
    /// is the pause before the first retry, as its docs say.
    #[test]
    fn the_first_try_goes_at_once_and_retries_follow_the_policy() {
        let policy = crate::config::ReconnectPolicy::default();
        assert_eq!(try_delay(&policy, 1), Duration::ZERO);
        assert_eq!(try_delay(&policy, 2), Duration::from_millis(50));
        assert_eq!(try_delay(&policy, 3), Duration::from_millis(100));
    }
}
