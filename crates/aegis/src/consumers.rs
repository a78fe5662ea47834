//! `aegis consumers`: the durable consumers of the `EVENTS` and `COMMANDS`
//! streams (`list`), and deleting one no program uses any more (`rm`).
//!
//! A durable consumer stays on the server until it is deleted, also when
//! no program uses it (a misspelt pattern, a renamed service, a test run):
//! a compete consumer keeps the events for a subscriber that never comes.
//! `list` shows, per consumer, whether a subscriber is reading it now (the
//! pull requests waiting on it: an SDK subscriber always has one open
//! while it has a free handler slot), what it has delivered and not had
//! acknowledged, and when it last delivered or was acknowledged; `rm`
//! deletes one, and refuses one a subscriber may be reading (a pull
//! waiting, a delivery unacknowledged, activity in the last 30 s) unless
//! `--force`.
//! Ephemeral consumers (an `aegis events tail`, the KV watches) are not
//! listed: the server removes them by itself.

use std::process::ExitCode;

use aegis_contracts::subjects::{COMMANDS_STREAM, EVENTS_STREAM};
use anyhow::Context;
use async_nats::jetstream::{consumer::Info, context::ConsumerInfoErrorKind, stream::Stream};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use futures::TryStreamExt;

use crate::{cli::ConnectArgs, events::find_stream};

/// `aegis consumers`.
#[derive(Debug, Clone, Args)]
pub struct ConsumersArgs {
    /// What to do.
    #[command(subcommand)]
    pub which: ConsumersCommand,
}

/// The `aegis consumers` subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum ConsumersCommand {
    /// List the durable consumers of the EVENTS and COMMANDS streams: who
    /// is reading each now, what it holds back, when it was last active.
    List(ListArgs),
    /// Delete a durable consumer no program uses any more. Its position
    /// and the redeliveries it owes are lost; one a subscriber may be
    /// reading (a pull waiting, a delivery not acknowledged, activity in
    /// the last 30 s) is refused unless --force.
    Rm(RmArgs),
}

/// `aegis consumers list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// The streams whose consumers to list (repeatable). Default: EVENTS
    /// and COMMANDS.
    #[arg(long = "stream", value_name = "STREAM")]
    pub streams: Vec<String>,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// `aegis consumers rm`.
#[derive(Debug, Clone, Args)]
pub struct RmArgs {
    /// The stream (EVENTS, COMMANDS, or another).
    pub stream: String,
    /// The consumer's name, as `aegis consumers list` shows it (an SDK
    /// subscription's `consumer_name()`).
    pub name: String,
    /// Delete it even while a subscriber reads it. A running SDK
    /// subscriber makes its consumer again where it was, so this only
    /// drops what it owes; stop the program to be rid of the consumer.
    #[arg(long)]
    pub force: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
}

/// Runs `aegis consumers`.
///
/// # Errors
/// No connection to NATS; for `rm`, no such stream or consumer, or one a
/// subscriber reads without `--force`.
pub async fn run(args: ConsumersArgs) -> anyhow::Result<ExitCode> {
    match args.which {
        ConsumersCommand::List(args) => list(args).await,
        ConsumersCommand::Rm(args) => rm(args).await,
    }
}

/// The streams `list` reads when none is named: the ones programs of
/// their own consume with durable consumers.
const DEFAULT_STREAMS: [&str; 2] = [EVENTS_STREAM, COMMANDS_STREAM];

async fn list(args: ListArgs) -> anyhow::Result<ExitCode> {
    let streams: Vec<String> = if args.streams.is_empty() {
        DEFAULT_STREAMS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.streams
    };
    let conn = args.nats.connect_as_operator().await?;
    let js = conn.jetstream();
    let now = Utc::now();
    let mut rows = Vec::new();
    let mut read = Vec::new();
    for name in &streams {
        let Some(stream) = find_stream(js, name).await? else {
            let made_by = if DEFAULT_STREAMS.contains(&name.as_str()) {
                " (`aegis init` makes it)"
            } else {
                ""
            };
            eprintln!("no {name} stream on this NATS{made_by}");
            continue;
        };
        let mut infos = durable_consumers(&stream).await?;
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        rows.extend(infos.iter().map(|info| Row::of(info, now)));
        read.push(name.as_str());
    }
    if rows.is_empty() {
        if !read.is_empty() {
            println!("no durable consumers on {}", read.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    print!("{}", table(&rows));
    println!(
        "\nREADERS: pull requests waiting (an SDK subscriber keeps one open while it has a \
         free handler slot). PENDING: stored, not yet delivered. UNACKED: delivered, not \
         acknowledged (being handled, or sent again after the ack wait). Nobody reads a \
         consumer with 0 READERS, 0 UNACKED and no activity for 30 s.\nA consumer no program \
         uses keeps what it holds back: `aegis consumers rm STREAM NAME` deletes it."
    );
    Ok(ExitCode::SUCCESS)
}

async fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let conn = args.nats.connect_as_operator().await?;
    let js = conn.jetstream();
    let Some(stream) = find_stream(js, &args.stream).await? else {
        anyhow::bail!("there is no stream {} on this NATS", args.stream)
    };
    let info = match stream.consumer_info(&args.name).await {
        Ok(info) => info,
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => {
            let names: Vec<String> = durable_consumers(&stream)
                .await?
                .into_iter()
                .map(|i| i.name)
                .collect();
            anyhow::bail!(
                "{} has no consumer {}; {}",
                args.stream,
                args.name,
                if names.is_empty() {
                    "it has no durable consumer".to_owned()
                } else {
                    format!("its durable consumers: {}", names.join(", "))
                }
            )
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)
                .context(format!("reading consumer {} of {}", args.name, args.stream)));
        }
    };
    if !args.force
        && let Some(why) = in_use(&info, Utc::now())
    {
        anyhow::bail!(
            "consumer {} of {} is in use: {why}. A running SDK subscriber makes its consumer \
             again where it was: stop that program first, or pass --force (which loses the {} \
             deliveries not yet acknowledged)",
            args.name,
            args.stream,
            info.num_ack_pending,
        );
    }
    stream
        .delete_consumer(&args.name)
        .await
        .with_context(|| format!("deleting consumer {} of {}", args.name, args.stream))?;
    println!(
        "deleted consumer {} of {}: it held back {} message{} not yet delivered and {} not \
         acknowledged",
        args.name,
        args.stream,
        info.num_pending,
        if info.num_pending == 1 { "" } else { "s" },
        info.num_ack_pending,
    );
    Ok(ExitCode::SUCCESS)
}

/// How long after a consumer's last delivery or acknowledgement `rm`
/// still takes it for read: a subscriber has no pull open between two
/// batches or while it backs off after an error.
const RECENTLY: chrono::TimeDelta = chrono::TimeDelta::seconds(30);

/// Why the consumer `info` describes is read by a program, as of `now`,
/// or `None` when nothing says it is: a subscriber keeps a pull waiting
/// while it has a free handler slot, has deliveries unacknowledged while
/// its handlers run (and the server sends them again after `ack_wait`
/// when it died), and was active moments ago between its pulls.
fn in_use(info: &Info, now: DateTime<Utc>) -> Option<String> {
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    if info.num_waiting > 0 {
        return Some(plural(
            info.num_waiting,
            "pull request of a running subscriber is waiting on it",
            "pull requests of a running subscriber are waiting on it",
        ));
    }
    if info.num_ack_pending > 0 {
        return Some(plural(
            info.num_ack_pending,
            "delivery is not acknowledged yet (a subscriber is handling it, or it is sent \
             again after the consumer's ack wait)",
            "deliveries are not acknowledged yet (a subscriber is handling them, or they are \
             sent again after the consumer's ack wait)",
        ));
    }
    let last = last_active(info)?;
    (now - last < RECENTLY).then(|| {
        format!(
            "it delivered or was acknowledged {} (within {} s, a subscriber may be between two \
             pulls)",
            ago(now, last),
            RECENTLY.num_seconds()
        )
    })
}

/// The consumer's last delivery or acknowledgement, as the server counts
/// them.
fn last_active(info: &Info) -> Option<DateTime<Utc>> {
    [info.delivered.last_active, info.ack_floor.last_active]
        .into_iter()
        .flatten()
        .filter_map(|t| DateTime::<Utc>::from_timestamp(t.unix_timestamp(), t.nanosecond()))
        .max()
}

/// The durable consumers of `stream`.
async fn durable_consumers(stream: &Stream) -> anyhow::Result<Vec<Info>> {
    let name = stream.cached_info().config.name.clone();
    stream
        .consumers()
        .try_filter(|info| std::future::ready(info.config.durable_name.is_some()))
        .try_collect()
        .await
        .with_context(|| format!("listing the consumers of {name}"))
}

/// One consumer as `list` prints it.
#[derive(Debug, PartialEq)]
struct Row {
    stream: String,
    name: String,
    filter: String,
    readers: usize,
    pending: u64,
    unacked: usize,
    last_active: String,
}

impl Row {
    fn of(info: &Info, now: DateTime<Utc>) -> Row {
        let config = &info.config;
        let filter = if !config.filter_subjects.is_empty() {
            config.filter_subjects.join(",")
        } else if !config.filter_subject.is_empty() {
            config.filter_subject.clone()
        } else {
            "(all)".to_owned()
        };
        let last = last_active(info);
        Row {
            stream: info.stream_name.clone(),
            name: info.name.clone(),
            filter,
            readers: info.num_waiting,
            pending: info.num_pending,
            unacked: info.num_ack_pending,
            last_active: last.map_or_else(|| "never".to_owned(), |t| ago(now, t)),
        }
    }
}

/// How long before `now` `then` was, in its largest unit.
fn ago(now: DateTime<Utc>, then: DateTime<Utc>) -> String {
    let secs = (now - then).num_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3_600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3_600),
        s => format!("{}d ago", s / 86_400),
    }
}

/// The rows under a header, in columns as wide as their widest cell.
fn table(rows: &[Row]) -> String {
    let header = [
        "STREAM",
        "CONSUMER",
        "FILTER",
        "READERS",
        "PENDING",
        "UNACKED",
        "LAST ACTIVE",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.stream.clone(),
                r.name.clone(),
                r.filter.clone(),
                r.readers.to_string(),
                r.pending.to_string(),
                r.unacked.to_string(),
                r.last_active.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&header);
    for row in &cells {
        out.push_str(&line(&row.each_ref().map(String::as_str)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A consumer's info as the server sends it: `waiting` pulls,
    /// `unacked` deliveries, and its last delivery at `last` (none: never).
    fn info(waiting: usize, unacked: usize, last: Option<&str>) -> Info {
        let last = last.map_or(serde_json::Value::Null, |t| t.into());
        serde_json::from_value(serde_json::json!({
            "stream_name": "EVENTS",
            "name": "recon-old_recon_any",
            "created": "2026-12-06T10:00:00Z",
            "config": {
                "durable_name": "recon-old_recon_any",
                "deliver_policy": "all",
                "ack_policy": "explicit",
                "replay_policy": "instant"
            },
            "delivered": { "consumer_seq": 1, "stream_seq": 1, "last_active": last },
            "ack_floor": { "consumer_seq": 0, "stream_seq": 0 },
            "num_ack_pending": unacked,
            "num_redelivered": 0,
            "num_waiting": waiting,
            "num_pending": 3,
            "ts": "2026-12-06T10:05:00Z"
        }))
        .unwrap()
    }

    #[test]
    fn a_consumer_is_in_use_while_anything_says_a_subscriber_reads_it() {
        let now = DateTime::parse_from_rfc3339("2026-12-06T10:05:00Z")
            .unwrap()
            .to_utc();
        // Nothing waiting, nothing owed, quiet for a minute (or never): free.
        assert_eq!(in_use(&info(0, 0, Some("2026-12-06T10:04:00Z")), now), None);
        assert_eq!(in_use(&info(0, 0, None), now), None);
        // A pull waiting.
        let why = in_use(&info(1, 0, None), now).unwrap();
        assert!(
            why.starts_with("1 pull request of a running subscriber is waiting"),
            "{why}"
        );
        // A handler busy with a delivery: no pull open, one unacknowledged.
        let why = in_use(&info(0, 2, Some("2026-12-06T10:04:59Z")), now).unwrap();
        assert!(
            why.starts_with("2 deliveries are not acknowledged yet"),
            "{why}"
        );
        // Between two pulls: active moments ago.
        let why = in_use(&info(0, 0, Some("2026-12-06T10:04:50Z")), now).unwrap();
        assert!(why.contains("acknowledged 10s ago (within 30 s"), "{why}");
    }

    #[test]
    fn ago_says_the_largest_unit() {
        let now = DateTime::<Utc>::from_timestamp(1_000_000, 0).unwrap();
        let at = |secs: i64| DateTime::<Utc>::from_timestamp(1_000_000 - secs, 0).unwrap();
        assert_eq!(ago(now, at(0)), "0s ago");
        assert_eq!(ago(now, at(59)), "59s ago");
        assert_eq!(ago(now, at(61)), "1m ago");
        assert_eq!(ago(now, at(7_200)), "2h ago");
        assert_eq!(ago(now, at(3 * 86_400)), "3d ago");
        // A clock behind the server's says "0s", never a negative time.
        assert_eq!(ago(now, at(-5)), "0s ago");
    }

    #[test]
    fn the_table_lines_up_its_columns() {
        let row = |name: &str, readers| Row {
            stream: "EVENTS".into(),
            name: name.into(),
            filter: "events.order.*".into(),
            readers,
            pending: 3,
            unacked: 0,
            last_active: "4s ago".into(),
        };
        let out = table(&[row("risk-service_order_any", 1), row("x", 0)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "STREAM  CONSUMER                FILTER          READERS  PENDING  UNACKED  LAST ACTIVE"
        );
        assert_eq!(
            lines[2],
            "EVENTS  x                       events.order.*  0        3        0        4s ago"
        );
    }
}
