//! `aegis events tail [FILTER]`: follows the `EVENTS` stream and prints one
//! line per event: when JetStream stored it (RFC 3339, UTC), its subject,
//! its id (`Nats-Msg-Id`, `-` when it has none) and its payload as compact
//! JSON.
//!
//! It reads on an ephemeral ordered consumer of its own (one replica, in
//! memory, no acks; the server removes it 30 s after the tail stops): it
//! makes no durable consumer, acknowledges nothing, creates no stream and
//! changes none, so it takes no event from a service's subscription.

use std::process::ExitCode;

use aegis_contracts::{
    events::EventPattern,
    names::{self, NameError},
    subjects::{EVENTS_STREAM, event_filter},
};
use anyhow::Context;
use async_nats::jetstream::{
    self, ErrorCode,
    consumer::{DeliverPolicy, pull},
    context::GetStreamErrorKind,
};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::cli::ConnectArgs;

/// `aegis events`.
#[derive(Debug, Clone, Args)]
pub struct EventsArgs {
    /// What to do with the events.
    #[command(subcommand)]
    pub which: EventsCommand,
}

/// The `aegis events` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum EventsCommand {
    /// Follow the EVENTS stream on an ephemeral consumer (no durable
    /// consumer, nothing acknowledged or changed), one line per event:
    /// time, subject, id and the payload as compact JSON. By default only
    /// events published from now on; Ctrl-C stops.
    Tail(TailArgs),
}

/// `aegis events tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Which events: a domain (`order`, every action of it) or
    /// `domain.action` (`order.created`); `*` stands for any one name
    /// (`*.created`). Default: every event.
    pub filter: Option<String>,
    /// Print the events the stream still holds first, then follow.
    #[arg(long)]
    pub from_start: bool,
    /// Stop after this many events.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// Runs `aegis events`.
///
/// # Errors
/// As [`tail`].
pub async fn run(args: EventsArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    match args.which {
        EventsCommand::Tail(args) => tail(args, shutdown).await,
    }
}

/// How many errors of the consumer in a row, with no event between them,
/// end the tail: the ordered consumer makes itself again after one.
const ERRORS_IN_A_ROW: u32 = 5;

/// Runs `aegis events tail`: events on stdout until `--limit` of them were
/// printed or `shutdown` is cancelled (Ctrl-C), what it follows on stderr.
///
/// # Errors
/// An invalid filter (before connecting), no connection to NATS, no
/// `EVENTS` stream, or a consumer that fails again and again.
pub async fn tail(args: TailArgs, shutdown: CancellationToken) -> anyhow::Result<ExitCode> {
    let subject = filter_subject(args.filter.as_deref()).with_context(|| {
        format!(
            "invalid FILTER {:?} (expected a domain such as `order`, or `domain.action` such as \
             `order.created`)",
            args.filter.as_deref().unwrap_or_default()
        )
    })?;
    let conn = args.nats.connect_as_operator().await?;
    // Looked up, never created: a tail changes nothing on the server.
    let Some(stream) = find_stream(conn.jetstream(), EVENTS_STREAM).await? else {
        anyhow::bail!(
            "there is no {EVENTS_STREAM} stream on this NATS: no event was published yet, and \
             `aegis init` (which creates the streams) has not run"
        )
    };
    let deliver_policy = if args.from_start {
        DeliverPolicy::All
    } else {
        DeliverPolicy::New
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.clone(),
            deliver_policy,
            description: Some("aegis events tail".to_owned()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating an ephemeral consumer on {EVENTS_STREAM}"))?;
    let mut messages = consumer
        .messages()
        .await
        .with_context(|| format!("reading {EVENTS_STREAM}"))?;
    eprintln!(
        "following {subject} ({}{}; Ctrl-C stops)",
        if args.from_start {
            "from the first event the stream holds"
        } else {
            "new events only"
        },
        match args.limit {
            Some(n) => format!(", until {n} event{}", if n == 1 { "" } else { "s" }),
            None => String::new(),
        }
    );
    let mut printed = 0u64;
    let mut errors = 0u32;
    loop {
        if args.limit.is_some_and(|limit| printed >= limit) {
            return Ok(ExitCode::SUCCESS);
        }
        let next = tokio::select! {
            next = messages.next() => next,
            () = shutdown.cancelled() => return Ok(ExitCode::SUCCESS),
        };
        match next {
            Some(Ok(message)) => {
                errors = 0;
                println!("{}", event_line(&message));
                printed += 1;
            }
            Some(Err(e)) => {
                errors += 1;
                if errors >= ERRORS_IN_A_ROW {
                    return Err(anyhow::Error::new(e).context(format!(
                        "reading {EVENTS_STREAM} failed {ERRORS_IN_A_ROW} times in a row"
                    )));
                }
                eprintln!("warning: reading {EVENTS_STREAM}: {e}; following on");
            }
            None => anyhow::bail!("the {EVENTS_STREAM} consumer ended"),
        }
    }
}

/// The stream `name`, looked up (never created); `None` when JetStream
/// answers that it does not exist. `aegis events` and `aegis consumers`
/// say so in their own words.
///
/// # Errors
/// Any other failure to look it up.
pub(crate) async fn find_stream(
    js: &jetstream::Context,
    name: &str,
) -> anyhow::Result<Option<jetstream::stream::Stream>> {
    let error = match js.get_stream(name).await {
        Ok(stream) => return Ok(Some(stream)),
        Err(e) => e,
    };
    match error.kind() {
        GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND => {
            Ok(None)
        }
        _ => Err(anyhow::Error::new(error).context(format!("looking up the {name} stream"))),
    }
}

/// The subject filter of a tail's FILTER: none is every event, a domain
/// every action of it, `domain.action` (or a pattern with `*` or `>`)
/// what it names; names checked by the SDK's rules.
///
/// # Errors
/// The SDK's name error for an invalid domain or action, or a pattern of
/// the wrong shape.
pub fn filter_subject(filter: Option<&str>) -> Result<String, NameError> {
    match filter {
        None => Ok("events.>".to_owned()),
        Some(domain) if !domain.contains(['.', '*', '>']) => {
            names::validate_event_domain(domain)?;
            Ok(format!("events.{domain}.*"))
        }
        Some(pattern) => Ok(event_filter(&EventPattern::parse(pattern)?)),
    }
}

/// One event as a line: stored time, subject, id, compact JSON payload.
fn event_line(message: &jetstream::Message) -> String {
    let time = message
        .info()
        .ok()
        .and_then(|i| {
            DateTime::<Utc>::from_timestamp(i.published.unix_timestamp(), i.published.nanosecond())
        })
        .map_or_else(
            || "-".to_owned(),
            |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
        );
    let id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
        .map_or("-", |v| v.as_str());
    format!(
        "{time} {} {id} {}",
        message.subject,
        payload_text(&message.payload)
    )
}

/// A payload as compact JSON; one that is not JSON is said so, with its
/// text when it is UTF-8 (escaped, so it stays on one line).
fn payload_text(payload: &[u8]) -> String {
    match serde_json::from_slice::<serde_json::Value>(payload) {
        Ok(value) => value.to_string(),
        Err(_) => match std::str::from_utf8(payload) {
            Ok(text) => format!("(not JSON) {text:?}"),
            Err(_) => format!("(not JSON, {} bytes)", payload.len()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_filter_is_a_domain_or_domain_action() {
        assert_eq!(filter_subject(None).unwrap(), "events.>");
        assert_eq!(filter_subject(Some("order")).unwrap(), "events.order.*");
        assert_eq!(
            filter_subject(Some("order.created")).unwrap(),
            "events.order.created"
        );
        assert_eq!(
            filter_subject(Some("*.created")).unwrap(),
            "events.*.created"
        );
        for bad in ["", "Order", "order.Created", "order.created.now", "or*der"] {
            assert!(filter_subject(Some(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_payload_is_compact_json_or_said_not_to_be() {
        assert_eq!(
            payload_text(br#"{ "a" : [1, 2] }"#),
            r#"{"a":[1,2]}"#.to_owned()
        );
        assert_eq!(payload_text(b"hi\nthere"), r#"(not JSON) "hi\nthere""#);
        assert_eq!(payload_text(&[0xff, 0xfe]), "(not JSON, 2 bytes)");
    }
}
