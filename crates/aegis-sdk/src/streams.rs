//! Creating the JetStream streams Aegis uses (`EVENTS`, `COMMANDS`,
//! `DEAD_LETTER`, and the monitor's `AEGIS_METRICS` and `AEGIS_LOG`), always
//! bounded by the configured [`StreamLimits`].
//!
//! A stream is created with its limits. An existing stream keeps the
//! limits it has — an operator may have tuned them, and processes with
//! different configurations must not fight over them — except one with no
//! byte and no message limit at all (created by an older version, or by
//! hand): that one gets the configured limits, since unbounded it would
//! fill the disk.

use async_nats::jetstream::{
    self,
    stream::{self, Stream},
};
use tracing::{info, warn};

use crate::StreamLimits;

/// `config` with `limits` applied.
///
/// ```
/// use aegis_sdk::{StreamsConfig, streams::bounded};
/// use async_nats::jetstream::stream;
///
/// let config = bounded(stream::Config { name: "EVENTS".into(), ..Default::default() }, &StreamsConfig::default().events);
/// assert!(config.max_bytes > 0 && config.max_messages > 0);
/// ```
pub fn bounded(mut config: stream::Config, limits: &StreamLimits) -> stream::Config {
    config.max_age = limits.max_age;
    config.max_bytes = i64::try_from(limits.max_bytes).unwrap_or(i64::MAX);
    config.max_messages = i64::try_from(limits.max_messages).unwrap_or(i64::MAX);
    config
}

/// Opens the stream `config` names, or creates it with `config`; bounds an
/// existing stream that has no limits (see the module docs).
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), async_nats::Error> {
/// use aegis_sdk::streams::{bounded, ensure_stream};
/// use async_nats::jetstream::stream;
///
/// let limits = conn.config().streams.events;
/// let config = stream::Config { name: "EVENTS".into(), subjects: vec!["events.>".into()], ..Default::default() };
/// ensure_stream(conn.jetstream(), bounded(config, &limits)).await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// The client's error when the stream can be neither opened nor created.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: stream::Config,
) -> Result<Stream, async_nats::Error> {
    let mut stream = js.get_or_create_stream(config.clone()).await?;
    let existing = stream.cached_info().config.clone();
    if existing.max_bytes >= 0 || existing.max_messages >= 0 {
        return Ok(stream);
    }
    let mut update = existing;
    update.max_bytes = config.max_bytes;
    update.max_messages = config.max_messages;
    if update.max_age.is_zero() {
        update.max_age = config.max_age;
    }
    match js.update_stream(update).await {
        Ok(_) => {
            info!(stream = %config.name, max_bytes = config.max_bytes, max_messages = config.max_messages, "bounded a stream that had no limits");
            // Refresh the cached info, so callers see the limits.
            let _ = stream.info().await;
        }
        Err(e) => {
            warn!(stream = %config.name, error = %e, "the stream has no size limits and cannot be given any; it may fill the disk");
        }
    }
    Ok(stream)
}
