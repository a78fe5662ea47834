//! The stream limits `aegis init` holds to the configuration file: which
//! limits the file sets per stream ([`configured_limits`]), a limit that
//! differs ([`LimitChange`]), and how a lowering not applied is said, with
//! what it would delete at once ([`lowering_advice`]).

use std::time::Duration;

use aegis_contracts::subjects;
use aegis_sdk::streams::Limit;
use anyhow::Context;

use super::{Scope, expected_streams};

/// The section of `[streams.*]` in the configuration whose limits the
/// stream `name` has, with those limits; `None` for the buckets, whose
/// limits the configuration does not set.
pub(super) fn limits_section<'a>(
    config: &'a aegis_sdk::StreamsConfig,
    name: &str,
) -> Option<(&'static str, &'a aegis_sdk::StreamLimits)> {
    match name {
        subjects::EVENTS_STREAM => Some(("events", &config.events)),
        subjects::COMMANDS_STREAM => Some(("commands", &config.commands)),
        subjects::DEAD_LETTER_STREAM => Some(("dead_letter", &config.dead_letter)),
        subjects::METRICS_STREAM => Some(("metrics", &config.metrics)),
        subjects::LOG_STREAM => Some(("log", &config.log)),
        _ => None,
    }
}

/// The limits the configuration `file` sets, per stream: what each is
/// held to. Empty without a file (the defaults apply only when a stream
/// is created).
pub(super) fn configured_limits(
    file: Option<&std::path::Path>,
    config: &aegis_sdk::StreamsConfig,
) -> anyhow::Result<std::collections::HashMap<String, Vec<(Limit, u64)>>> {
    let mut out = std::collections::HashMap::new();
    let Some(file) = file else {
        return Ok(out);
    };
    for name in expected_streams(Scope::Aegis) {
        let Some((section, limits)) = limits_section(config, &name) else {
            continue;
        };
        let set = aegis_sdk::streams::limits_set_in_file(file, section)
            .context("reading which stream limits the configuration file sets")?;
        let wanted: Vec<(Limit, u64)> = set
            .into_iter()
            .map(|limit| (limit, limit.of_limits(limits)))
            .collect();
        if !wanted.is_empty() {
            out.insert(name, wanted);
        }
    }
    Ok(out)
}

/// Which stream limits the configuration file holds the streams to
/// (`limits`, from [`configured_limits`]), in the order `init` checks the
/// streams; every other limit keeps what its stream has, as an operator
/// may have changed it by hand (the Helm chart writes only the limits its
/// values set).
pub(super) fn held_limits(limits: &std::collections::HashMap<String, Vec<(Limit, u64)>>) -> String {
    let held: Vec<String> = expected_streams(Scope::Aegis)
        .into_iter()
        .filter_map(|name| {
            let set = limits.get(&name)?;
            let names: Vec<&str> = set.iter().map(|(limit, _)| limit.name()).collect();
            Some(format!("{name} {}", names.join(", ")))
        })
        .collect();
    if held.is_empty() {
        "the configuration file sets no stream limit: every existing stream keeps its own \
         (a new one gets the defaults)"
            .to_owned()
    } else {
        format!(
            "stream limits held to the configuration file: {}; every other limit keeps what \
             its stream has (a new stream gets the default)",
            held.join("; ")
        )
    }
}

/// One limit of an existing stream that differs from the configuration's.
#[derive(Debug, Clone, Copy)]
pub(super) struct LimitChange {
    pub(super) limit: Limit,
    /// What the stream has (`None`: no limit).
    pub(super) has: Option<u64>,
    /// What the configuration file sets.
    pub(super) wants: u64,
}

impl LimitChange {
    /// Whether it only raises the limit (which deletes nothing).
    pub(super) fn raises(&self) -> bool {
        self.has.is_some_and(|has| self.wants > has)
    }

    /// `max_age 1h -> 2h`.
    pub(super) fn describe(&self) -> String {
        format!(
            "{} {} -> {}",
            self.limit.name(),
            show(self.limit, self.has),
            show(self.limit, Some(self.wants))
        )
    }

    /// What lowering the limit would delete at once from a stream in
    /// `state`, said as "would delete ...".
    fn loss(&self, state: &async_nats::jetstream::stream::State) -> String {
        let nothing = |holds: String| {
            format!("would delete nothing now ({holds}), but keep less from now on")
        };
        match self.limit {
            Limit::MaxMessages => match state.messages.checked_sub(self.wants) {
                Some(n) if n > 0 => format!(
                    "would delete the {n} oldest of its {} messages at once",
                    state.messages
                ),
                _ => nothing(format!("it holds {} messages", state.messages)),
            },
            Limit::MaxBytes => match state.bytes.checked_sub(self.wants) {
                Some(n) if n > 0 => format!(
                    "would delete the oldest messages past {}, at least {} of its {}, at once",
                    bytes(self.wants),
                    bytes(n),
                    bytes(state.bytes)
                ),
                _ => nothing(format!("it holds {}", bytes(state.bytes))),
            },
            Limit::MaxAge => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let oldest = u128::try_from(state.first_timestamp.unix_timestamp_nanos())
                    .ok()
                    .filter(|_| state.messages > 0)
                    .map(|first| {
                        let nanos = now.saturating_sub(first);
                        Duration::from_secs(
                            u64::try_from(nanos / 1_000_000_000).unwrap_or(u64::MAX),
                        )
                    });
                let wants = Duration::from_nanos(self.wants);
                match oldest {
                    Some(age) if age > wants => format!(
                        "would delete the messages older than {} at once (its oldest is {} old)",
                        humantime::format_duration(wants),
                        humantime::format_duration(age)
                    ),
                    Some(age) => nothing(format!(
                        "its oldest message is {} old",
                        humantime::format_duration(age)
                    )),
                    None => nothing("it holds no message".to_owned()),
                }
            }
        }
    }
}

/// A limit's value as the configuration file writes it: an age in
/// humantime (`7days`), a count of bytes or messages; `none` for no limit.
fn show(limit: Limit, value: Option<u64>) -> String {
    match (limit, value) {
        (_, None) => "none".to_owned(),
        (Limit::MaxAge, Some(nanos)) => {
            humantime::format_duration(Duration::from_nanos(nanos)).to_string()
        }
        (_, Some(n)) => n.to_string(),
    }
}

/// `bytes` for a reader: `1.5 MiB`.
pub(super) fn bytes(bytes: u64) -> String {
    bytesize::ByteSize(bytes).display().iec().to_string()
}

/// How a limit is left out of the file the Helm chart renders, where the
/// file is not the operator's to edit: out of the values, and where the
/// values never set it (a release upgraded from chart 0.3.0 with
/// `--reuse-values`, which keeps that chart's 15 defaults), the docs' way.
const FROM_THE_CHART: &str = "of the values, for the file the Helm chart renders; a release \
     upgraded from chart 0.3.0 with --reuse-values still writes every limit: see \
     docs/deployment.md, \"Upgrading from chart 0.3.0\"";

/// The mismatch of a lowering not applied: what the stream has and the
/// file wants, what lowering deletes, and both fixes (`command` lowers it).
pub(super) fn lowering_advice(
    change: &LimitChange,
    state: &async_nats::jetstream::stream::State,
    key: &str,
    file: &str,
    command: &str,
) -> String {
    let keep = match change.has {
        Some(_) => format!(
            "set {key} = {} in {file}, or leave it out of the file ({FROM_THE_CHART})",
            match change.limit {
                Limit::MaxAge => format!("\"{}\"", show(change.limit, change.has)),
                _ => show(change.limit, change.has),
            }
        ),
        None => format!("leave {key} out of {file} ({FROM_THE_CHART})"),
    };
    format!(
        "{} is a lowering, which {}; to lower it, run `{command}`; \
         to keep it, {keep}",
        change.describe(),
        change.loss(state)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lowering names what the stream has, what the file wants, what it
    /// would delete, and both fixes; the value to keep is written as the
    /// file takes it.
    #[test]
    fn a_lowered_limit_is_said_with_what_it_would_delete() {
        let state: async_nats::jetstream::stream::State =
            serde_json::from_value(serde_json::json!({
                "messages": 30, "bytes": 3 * 1024 * 1024, "first_seq": 1,
                "first_ts": "2020-01-01T00:00:00Z", "last_seq": 30,
                "last_ts": "2020-01-02T00:00:00Z", "consumer_count": 0
            }))
            .unwrap();
        let change = |limit, has, wants| LimitChange { limit, has, wants };
        assert_eq!(
            lowering_advice(
                &change(Limit::MaxMessages, Some(100), 10),
                &state,
                "streams.events.max_messages",
                "a.toml",
                "aegis init --config a.toml --apply-limits"
            ),
            "max_messages 100 -> 10 is a lowering, which would delete the 20 oldest of its 30 \
             messages at once; to lower it, run `aegis init --config a.toml --apply-limits`; \
             to keep it, set streams.events.max_messages = 100 in a.toml, or leave it out of \
             the file (of the values, for the file the Helm chart renders; a release upgraded \
             from chart 0.3.0 with --reuse-values still writes every limit: see \
             docs/deployment.md, \"Upgrading from chart 0.3.0\")"
        );
        let age = lowering_advice(
            &change(
                Limit::MaxAge,
                Some(7 * 86_400 * 1_000_000_000),
                3_600_000_000_000,
            ),
            &state,
            "streams.events.max_age",
            "a.toml",
            "x",
        );
        assert!(
            age.starts_with("max_age 7days -> 1h is a lowering, which would delete the messages older than 1h at once")
                && age.contains("set streams.events.max_age = \"7days\" in a.toml, or leave it out of the file (of the values, for the file the Helm chart renders;"),
            "{age}"
        );
        let bytes = change(Limit::MaxBytes, None, 2 * 1024 * 1024).loss(&state);
        assert_eq!(
            bytes,
            "would delete the oldest messages past 2.0 MiB, at least 1.0 MiB of its 3.0 MiB, at once"
        );
        assert!(!change(Limit::MaxBytes, None, 5).raises());
        assert!(change(Limit::MaxBytes, Some(4), 5).raises());
        assert!(!change(Limit::MaxBytes, Some(6), 5).raises());
    }

    /// The limits the file sets are named per stream; the rest are kept.
    #[test]
    fn the_limits_held_are_named_and_the_rest_kept() {
        let mut limits = std::collections::HashMap::new();
        assert!(held_limits(&limits).starts_with("the configuration file sets no stream limit"));
        limits.insert("AEGIS_LOG".to_owned(), vec![(Limit::MaxMessages, 10)]);
        limits.insert(
            "EVENTS".to_owned(),
            vec![(Limit::MaxAge, 1), (Limit::MaxBytes, 2)],
        );
        assert_eq!(
            held_limits(&limits),
            "stream limits held to the configuration file: EVENTS max_age, max_bytes; \
             AEGIS_LOG max_messages; every other limit keeps what its stream has (a new \
             stream gets the default)"
        );
    }
}
