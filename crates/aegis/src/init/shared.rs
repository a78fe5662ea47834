//! The shared buckets' settings (`aegis_sdk::kv::SharedBucket`): rollups
//! refused (but on the registry, whose limit markers need them), the
//! definitions' purges denied, byte and value size limits.
//! Buckets made before these settings (by an older `aegis init`, the
//! monitor, a service on a server without users, or by hand) are changed in
//! place: turning rollups off and bounding a bucket that holds less than
//! its bound deletes nothing, so it needs no flag, as raising a stream
//! limit needs none. A bucket that already holds more than its bound keeps
//! having none (bounding it would delete values at once), and is named.

use aegis_sdk::kv::{SHARED_BUCKETS, lock_down_in_place};
use anyhow::Context;

/// What [`lock_down_shared`] did to one bucket.
#[derive(Debug, Clone)]
pub(super) struct Locked {
    /// The bucket's stream (`KV_` + bucket name).
    pub(super) name: String,
    /// Each change made, `setting has -> wants`.
    pub(super) changes: Vec<String>,
    /// A limit left as it is, and why.
    pub(super) kept: Option<String>,
}

/// Changes every existing shared bucket whose settings are not the
/// shared buckets' (see the module); a missing one is skipped. What was
/// changed or kept, per bucket that differed.
///
/// # Errors
/// When JetStream refuses to read or change a bucket's stream.
pub(super) async fn lock_down_shared(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<Vec<Locked>> {
    let mut done = Vec::new();
    for bucket in SHARED_BUCKETS {
        let name = format!("KV_{}", bucket.bucket);
        let locked = lock_down_in_place(js, &name, |config, bytes| bucket.lock_down(config, bytes))
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        let Some(lock) = locked else {
            continue;
        };
        if !lock.changes.is_empty() || lock.kept.is_some() {
            done.push(Locked {
                name,
                changes: lock.changes,
                kept: lock.kept,
            });
        }
    }
    Ok(done)
}

/// Sets the per-message cap of the shared streams that have none or a
/// larger one (`aegis_sdk::streams::message_size_cap`: `EVENTS` and
/// `AEGIS_LOG`): it applies to new messages only, so it deletes nothing
/// and needs no flag. What changed, per stream; a missing stream is
/// skipped.
///
/// # Errors
/// When JetStream refuses to read or change a stream.
pub(super) async fn cap_shared_streams(
    js: &async_nats::jetstream::Context,
) -> anyhow::Result<Vec<Locked>> {
    use aegis_contracts::subjects::{EVENTS_STREAM, LOG_STREAM};

    let mut done = Vec::new();
    for name in [EVENTS_STREAM, LOG_STREAM] {
        let Some(cap) = aegis_sdk::streams::message_size_cap(name) else {
            continue;
        };
        let Ok(mut stream) = js.get_stream(name).await else {
            continue;
        };
        let mut config = stream
            .info()
            .await
            .with_context(|| format!("reading stream {name}"))?
            .config
            .clone();
        let has = config.max_message_size;
        if has > 0 && has <= cap {
            continue;
        }
        config.max_message_size = cap;
        let what = format!(
            "max message size {} -> {} KiB",
            if has > 0 {
                format!("{has} bytes")
            } else {
                "none".to_owned()
            },
            cap / 1024
        );
        aegis_sdk::streams::with_placement_patience(name, || js.update_stream(config.clone()))
            .await
            .with_context(|| format!("changing {name} ({what})"))?;
        tracing::info!(stream = %name, change = %what, "capped a shared stream's messages");
        done.push(Locked {
            name: name.to_owned(),
            changes: vec![what],
            kept: None,
        });
    }
    Ok(done)
}

/// What is still wrong with the shared bucket `name`'s `config` after
/// [`lock_down_shared`], for `init`'s check; `None` for another stream or
/// a bucket as it should be.
pub(super) fn still_open(
    name: &str,
    config: &async_nats::jetstream::stream::Config,
) -> Option<String> {
    let bucket = aegis_sdk::kv::SharedBucket::named(name.strip_prefix("KV_")?)?;
    if bucket.refuses_rollups && config.allow_rollup {
        return Some(
            "allows rollups (Nats-Rollup), so any user that may write one of its keys can purge \
             all of them; `aegis init` could not turn them off"
                .to_owned(),
        );
    }
    if bucket.deny_purge && !config.deny_purge {
        return Some("allows purges of its audit trail".to_owned());
    }
    None
}
