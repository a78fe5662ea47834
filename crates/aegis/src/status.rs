//! `aegis status`: the fleet as a terminal table — service, instance,
//! status, heartbeat age, role — optionally refreshed every second.
//! `aegis status SERVICE` shows that service's instances (a name the
//! registry has no record of is said to be a slip, `unknown.rs`), then the
//! methods and the commands its running instances list in the services
//! protocol (`$SRV.INFO`; a command is listed by the instances whose process runs
//! a worker taking it). With `--watch` those are asked once, and again
//! only when the service's live instances change or the answer is a minute
//! old (`served.rs`), not on every redraw.
//!
//! It shows what the monitor shows (`aegis_monitor::fleet`): the holder of a
//! sticky group's election key is its one ACTIVE instance, a live former
//! leader whose record still says ACTIVE is shown as deposed (a dead one as
//! down), and with the NATS system account's credentials (flags,
//! `AEGIS_NATS_SYSTEM_*`, or the credentials file of `aegis up`) a crashed
//! instance shows as disconnected at once.
//!
//! What it adds, because it starts cold (the fleet view learns of a crash
//! from a disconnect advisory or from beats it misses, both of which need
//! it to be listening already, so an instance killed before `aegis status`
//! ran would read ACTIVE for three beat intervals):
//!
//! - With the system account, it asks the servers once which connections
//!   closed and are not open again (`closed.rs`): those instances are shown
//!   down at once, as the monitor shows a crash it saw happen.
//! - Under the table it names the configured NATS servers that do not
//!   answer (`servers.rs`), as the monitor's banner does.
//! - Before it prints, it listens for one beat of every other instance, for
//!   at most one and a half intervals (the monitor's own "late" bound,
//!   [`LATE_AFTER_INTERVALS`]); one that sent none in that time is shown
//!   UNHEALTHY, unresponsive. A live process beats every interval whatever
//!   its registry writes do, so this costs a healthy fleet one interval at
//!   most, and a dead process is never shown ACTIVE.
//!
//! Why one module of over 500 lines: gathering the fleet (records, closed
//! connections, one listen for beats) and rendering it as the table are
//! one command's two halves, tested together through [`render`]; what
//! stands alone is in `closed`, `served` and `unknown`.

mod closed;
mod served;
mod servers;
mod unknown;

pub(crate) use unknown::{names_and_close_one, unknown_to_registry};

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use aegis_monitor::{
    SystemAccount, SystemArgs,
    fleet::{Fleet, InstanceView, LATE_AFTER_INTERVALS, StatusReason},
};
use aegis_sdk::{
    Secret,
    contracts::{
        control::{METADATA_DRILL_DELAY_MS, METADATA_DRILL_DELAY_SINCE, METADATA_STATUS_REASON},
        models::{InstanceStatus, ServiceInstance},
    },
    registry::{METADATA_CONNECTION, METADATA_HEARTBEAT_MS},
    startup::error_line,
};
use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Args;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{bench::lock, cli::ConnectArgs, up::credentials};

/// The longest `aegis status` listens for a liveness beat of every
/// instance before it prints: one and a half beat intervals, at most this
/// (an instance beating less often is judged by the fleet's own rule).
const BEAT_PATIENCE: Duration = Duration::from_secs(3);

/// How often the beats seen are checked while listening: beats arrive
/// once an interval (a second by default), so a short poll costs nothing.
const BEAT_POLL: Duration = Duration::from_millis(20);

/// How long the servers' lists of their connections are awaited.
const LISTING_WAIT: Duration = Duration::from_secs(1);

/// Options of `aegis status`.
#[derive(Debug, Clone, Args)]
pub struct StatusArgs {
    /// Show this service only, with the methods and commands its running
    /// instances list.
    pub service: Option<String>,
    /// Show only the instances with this status (ACTIVE, UNHEALTHY or
    /// STANDBY); the last line still counts them all.
    #[arg(long, value_name = "STATUS", value_parser = parse_status)]
    pub status: Option<InstanceStatus>,
    /// Refresh every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
    /// Connection flags.
    #[command(flatten)]
    pub nats: ConnectArgs,
    /// The NATS system account (crashed instances shown at once); by
    /// default the system user of the credentials file of `aegis up`.
    #[command(flatten)]
    pub system: SystemArgs,
}

/// Prints the table (once, or until `shutdown` with `--watch`).
///
/// # Errors
/// When NATS cannot be reached, the credentials file cannot be read, or
/// system account credentials are refused.
pub async fn run(args: StatusArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    if let Some(service) = &args.service {
        crate::cli::check_service_name(service)?;
    }
    let conn = args.nats.connect_as_operator().await?;
    let mut system = system_account(&args, &conn)?;
    let tasks = TaskTracker::new();
    let stop = shutdown.child_token();
    let connects = reconnects(&conn);
    let started = Fleet::start(
        &conn,
        system.as_ref().map(|s| &s.account),
        stop.clone(),
        &tasks,
    );
    let fleet = match said_when_slow(started, args.watch).await {
        Ok(fleet) => fleet,
        // The file's system user belongs to the showcase that wrote it; a
        // server that refuses it still shows the fleet, by beats alone.
        Err(e) if system.as_ref().is_some_and(|s| s.file.is_some()) => {
            warn_without_system(system.take(), &error_line(&e));
            Fleet::start(&conn, None, stop.clone(), &tasks).await?
        }
        Err(e) => return Err(e.into()),
    };
    // A name the registry has no record of at all is a slip, not an empty
    // fleet (a service whose records are all down is shown, down). With
    // --watch it is said on every redraw until the service registers.
    if !args.watch
        && let Some(unknown) = args.service.as_deref().and_then(|s| unknown_in(&fleet, s))
    {
        stop.cancel();
        fleet.drain().await;
        anyhow::bail!(unknown);
    }
    // Listening starts once the records are loaded: a loaded record is
    // what the instance last said, not a sign heard now (one written by a
    // clock that runs ahead would pass for one).
    let since = Utc::now();
    // One beat of each instance first: the records alone are rewritten only
    // every few beats, so their ages would read up to seconds old, and an
    // instance that sends none is dead or hung. The servers' lists of
    // closed connections are awaited meanwhile, not before: a server that
    // is down never answers, and its second of waiting must not come on
    // top of the beats' (the wait stays within BEAT_PATIENCE).
    let closed = Mutex::new(HashMap::new());
    let listing = async {
        if let Some(found) = &system {
            let listed = closed_connections(found, &conn).await?;
            *lock(&closed) = listed;
        }
        anyhow::Ok(())
    };
    let (listed, ()) = tokio::join!(listing, listen_for_beats(&fleet, since, &closed));
    if let Err(e) = listed {
        if system.as_ref().is_some_and(|s| s.file.is_some()) {
            warn_without_system(system.take(), &error_line(&e));
        } else {
            return Err(e);
        }
    }
    let closed = closed.into_inner().unwrap_or_else(PoisonError::into_inner);
    let mut listening = Listening {
        since,
        judged: true,
        closed,
    };
    // What the service serves is asked once per set of its instances, not
    // on every redraw (`served.rs`).
    let mut served = args.service.as_deref().map(served::Served::new);
    let result = loop {
        // The instances silent since we started listening, judged only
        // while our own connection has not broken meanwhile (its reconnect
        // is no instance's fault).
        listening.judged = reconnects(&conn) == connects;
        let now = Utc::now();
        let mut instances = listening.apply(&fleet, now);
        let mut table = match &args.service {
            Some(service) => {
                instances.retain(|v| &v.instance.service_name == service);
                match unknown_in(&fleet, service) {
                    Some(unknown) if instances.is_empty() => format!("{unknown}\n"),
                    _ => render_counted(&instances, args.status, listening.since, now),
                }
            }
            None => render_counted(&instances, args.status, listening.since, now),
        };
        if let Some(served) = &mut served {
            table.push_str(&served.lines(&conn, &instances).await);
        }
        let configured = &conn.config().nats.servers;
        let down = servers::not_answering(configured).await;
        if let Some(line) = servers::line(&down, configured.len()) {
            table.push_str(&line);
        }
        if args.watch {
            // Clear the screen and home the cursor, then draw.
            print!("\x1b[2J\x1b[H{table}\n(refreshing every second; Ctrl-C to stop)\n");
        } else {
            print!("{table}");
            break Ok(());
        }
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    };
    stop.cancel();
    fleet.drain().await;
    result
}

/// How long the registry view may take to load before `aegis status` says
/// what it waits for: a quiet cluster loads it in milliseconds.
const LOAD_NOTICE: Duration = Duration::from_secs(1);

/// `load`, saying on stderr once it takes longer than [`LOAD_NOTICE`]
/// what it waits for: a NATS node just lost can leave the registry's
/// stream without a leader for seconds (once, also with `--watch`, which
/// clears the screen after).
async fn said_when_slow<T>(load: impl std::future::Future<Output = T>, watch: bool) -> T {
    tokio::pin!(load);
    tokio::select! {
        loaded = &mut load => return loaded,
        () = tokio::time::sleep(LOAD_NOTICE) => {}
    }
    let again = if watch { "" } else { " (Ctrl-C stops)" };
    eprintln!(
        "waiting for the registry: its stream answers slowly, as for some seconds after a \
         NATS node is lost while its streams elect new leaders{again}"
    );
    load.await
}

/// Why `service` is shown nothing, when the registry (as `fleet` holds
/// it) has no record of that name at all.
fn unknown_in(fleet: &Fleet, service: &str) -> Option<String> {
    let all = fleet.all();
    (!all.iter().any(|v| v.instance.service_name == service)).then(|| {
        unknown::unknown_service(service, all.into_iter().map(|v| v.instance.service_name))
    })
}

/// The NATS system account to read connection events with, and the
/// credentials file it came from, if it did.
struct System {
    account: SystemAccount,
    file: Option<PathBuf>,
}

/// The system account the flags or `AEGIS_NATS_SYSTEM_*` name; else the
/// system user of the credentials file the operator's connection was made
/// with (`--credentials`, `AEGIS_CREDENTIALS`, the one in `--state-dir`, or
/// `.aegis/credentials`, as `aegis up` writes it). A file whose operator
/// was not the one connected (other credentials were configured) is
/// another showcase's: its system user is not sent to this server.
fn system_account(
    args: &StatusArgs,
    conn: &aegis_sdk::Connection,
) -> anyhow::Result<Option<System>> {
    if let Some(account) = args.system.account() {
        return Ok(Some(System {
            account,
            file: None,
        }));
    }
    let Some(file) = args.nats.credentials_file() else {
        return Ok(None);
    };
    let operator = credentials::read_operator(&file)?.map(|(user, _)| user);
    if operator.is_none() || operator != conn.config().nats.user {
        return Ok(None);
    }
    Ok(
        credentials::read_system(&file)?.map(|(user, password)| System {
            account: SystemAccount {
                user: Some(user),
                password: Some(Secret::new(password)),
                creds_file: None,
            },
            file: Some(file),
        }),
    )
}

/// The connections each server lists as closed, asked as `found`.
async fn closed_connections(
    found: &System,
    conn: &aegis_sdk::Connection,
) -> anyhow::Result<HashMap<String, DateTime<Utc>>> {
    let system = aegis_sdk::Connection::connect(found.account.connection_config(conn.config()))
        .await
        .context("connecting to the NATS system account")?;
    let closed = closed::closed_connections(system.client(), LISTING_WAIT)
        .await
        .context("asking the NATS servers for their connections");
    let _ = system.drain().await;
    closed
}

/// Says on stderr that the file's system user did not work, and what the
/// table is judged by instead.
fn warn_without_system(system: Option<System>, why: &str) {
    if let Some(System {
        file: Some(file), ..
    }) = system
    {
        eprintln!(
            "warning: the NATS system user of {} does not work here ({why}); \
             crashed instances are shown by their missed beats",
            file.display()
        );
    }
}

/// How many times the operator's connection has connected.
fn reconnects(conn: &aegis_sdk::Connection) -> u64 {
    conn.client()
        .statistics()
        .connects
        .load(std::sync::atomic::Ordering::Relaxed)
}

/// Waits until every instance that beats (and is not already known down,
/// nor its connection in `closed`, which may fill in meanwhile) has shown
/// a sign of life since `since`, or until one and a half of the longest of
/// their beat intervals have passed (at most [`BEAT_PATIENCE`]).
async fn listen_for_beats(
    fleet: &Fleet,
    since: DateTime<Utc>,
    closed: &Mutex<HashMap<String, DateTime<Utc>>>,
) {
    let started = tokio::time::Instant::now();
    let beating: Vec<(String, String, Option<String>, Duration)> = fleet
        .all()
        .into_iter()
        .filter(|v| !v.process_down())
        .filter_map(|v| {
            let interval = beat_interval(&v.instance)?;
            let connection = connection_of(&v.instance).map(str::to_owned);
            Some((
                v.instance.service_name,
                v.instance.instance_id,
                connection,
                interval,
            ))
        })
        .collect();
    loop {
        let waiting: Vec<Duration> = {
            let closed = lock(closed);
            beating
                .iter()
                .filter(|(_, _, connection, _)| {
                    connection
                        .as_deref()
                        .is_none_or(|name| !closed.contains_key(name))
                })
                .filter(|(service, id, _, _)| {
                    fleet
                        .last_sign_of_life(service, id)
                        .is_none_or(|at| at < since)
                })
                .map(|(_, _, _, interval)| *interval)
                .collect()
        };
        let Some(longest) = waiting.into_iter().max() else {
            return;
        };
        if started.elapsed() >= longest.mul_f64(LATE_AFTER_INTERVALS).min(BEAT_PATIENCE) {
            return;
        }
        tokio::time::sleep(BEAT_POLL).await;
    }
}

/// The beat interval a record announces (`metadata.heartbeatMs`), as the
/// monitor reads it: `None` for instances that do not beat.
fn beat_interval(record: &ServiceInstance) -> Option<Duration> {
    let ms = record.metadata.get(METADATA_HEARTBEAT_MS)?.as_u64()?;
    (ms > 0).then(|| Duration::from_millis(ms).max(Duration::from_millis(250)))
}

/// The NATS connection name a record says its instance serves over.
fn connection_of(record: &ServiceInstance) -> Option<&str> {
    record.metadata.get(METADATA_CONNECTION)?.as_str()
}

/// What this `aegis status` has heard since it started listening.
#[derive(Debug, Clone)]
struct Listening {
    /// When it started.
    since: DateTime<Utc>,
    /// Whether silence may be judged (our connection did not break).
    judged: bool,
    /// The connections the servers listed closed (and none open) when it
    /// started, with when they closed.
    closed: HashMap<String, DateTime<Utc>>,
}

impl Listening {
    /// The fleet's instances, each with its last sign of life (a liveness
    /// beat, every heartbeat interval) as its heartbeat when that is newer
    /// than the record's, which the instance rewrites only every few beats;
    /// and each that has been silent since we started listening, for one
    /// and a half of its beat intervals or more, shown unresponsive.
    fn apply(&self, fleet: &Fleet, now: DateTime<Utc>) -> Vec<InstanceView> {
        let mut all = fleet.all();
        for v in &mut all {
            let seen = fleet.last_sign_of_life(&v.instance.service_name, &v.instance.instance_id);
            self.judge(v, seen, now);
        }
        all
    }

    /// [`apply`](Self::apply) for one instance last seen alive at `seen`.
    fn judge(&self, v: &mut InstanceView, seen: Option<DateTime<Utc>>, now: DateTime<Utc>) {
        let down = v.process_down();
        let i = &mut v.instance;
        if let Some(seen) = seen {
            i.last_heartbeat = i.last_heartbeat.max(seen);
        }
        let silent = seen.is_none_or(|at| at < self.since);
        let closed_at = connection_of(i).and_then(|name| self.closed.get(name));
        if let Some(closed_at) = closed_at.filter(|_| silent && !down) {
            // Its connection closed before we listened and is not open
            // again: down, as the monitor shows a crash it saw happen.
            i.status = InstanceStatus::Unhealthy;
            v.status_reason = Some(StatusReason::Disconnected);
            v.status_since = *closed_at;
            return;
        }
        let Some(interval) = beat_interval(i) else {
            return;
        };
        let listened = (now - self.since).to_std().unwrap_or_default();
        if self.judged && silent && !down && listened >= interval.mul_f64(LATE_AFTER_INTERVALS) {
            // Down whatever the record or the election key say, as the
            // monitor's rule puts it (`fleet::derive`): a dead process
            // leads nothing and serves nothing.
            i.status = InstanceStatus::Unhealthy;
            v.status_reason = Some(StatusReason::Unresponsive);
            v.status_since = i.last_heartbeat;
        }
    }
}

/// Renders the instances as a table; `heard_since` is when this view
/// started listening for liveness beats (an instance last seen before then
/// may have beaten since, unheard, so its silence is said as what was
/// heard).
pub fn render(
    instances: &[InstanceView],
    heard_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let mut out = format!(
        "{:<20} {:<24} {:<10} {:>9}  {}\n",
        "SERVICE", "INSTANCE", "STATUS", "HEARTBEAT", "ROLE"
    );
    for v in instances {
        let i = &v.instance;
        let age = (now - i.last_heartbeat).num_milliseconds().max(0) as f64 / 1000.0;
        let role = match (&i.sticky_active_group, i.status, v.status_reason) {
            (
                group,
                _,
                Some(
                    r @ (StatusReason::Disconnected
                    | StatusReason::Unresponsive
                    | StatusReason::UnresponsiveExpired),
                ),
            ) => {
                let down = if r == StatusReason::Disconnected {
                    format!(
                        "down: connection closed {} ago (record expires with its TTL)",
                        ago(now, v.status_since)
                    )
                } else if r == StatusReason::UnresponsiveExpired {
                    // Kept by the monitor past its record: the process is
                    // hung or cut off, not gone (its status_since is when
                    // the record expired).
                    format!(
                        "unresponsive: no liveness beat for {age:.1}s; its record expired {} ago, \
                         but NATS still holds its connection (hung or cut off?)",
                        ago(now, v.status_since)
                    )
                } else if i.last_heartbeat >= heard_since {
                    // Since its last beat: the age the HEARTBEAT column
                    // shows, not since the beats were found missing.
                    format!("unresponsive: no liveness beat for {age:.1}s")
                } else {
                    // Its last beat came before we listened: how long we
                    // heard none is what we know, and HEARTBEAT is a record
                    // write, not a beat as on the rows heard live. Records
                    // are rewritten only every few beats, so the process
                    // may have lived well after it: one that lived on
                    // would have beaten within an interval, so it stopped
                    // at least the listening time less an interval ago.
                    let heard = (now - heard_since).num_milliseconds().max(0) as f64 / 1000.0;
                    let bound = match beat_interval(i) {
                        Some(interval) => {
                            let least = (heard - interval.as_secs_f64()).max(0.0);
                            format!(
                                ", as records are rewritten only every few beats: it stopped \
                                 between {age:.1}s and {least:.1}s ago"
                            )
                        }
                        None => String::new(),
                    };
                    format!(
                        "unresponsive: no liveness beat heard in {} (its last sign of life is a \
                         record write {age:.1}s ago{bound})",
                        ago(now, heard_since)
                    )
                };
                // What it was when it died: a dead leader is down, not
                // deposed (that is for a live one that lost its lead). A
                // degraded leader's record says UNHEALTHY, with its epoch.
                match (group, v.reported_status, i.epoch) {
                    (Some(g), InstanceStatus::Active | InstanceStatus::Unhealthy, Some(e)) => {
                        format!("former leader of {g} (epoch {e}), {down}")
                    }
                    (Some(g), InstanceStatus::Active, None) => {
                        format!("former leader of {g}, {down}")
                    }
                    (Some(g), _, _) => format!("standby in {g}, {down}"),
                    (None, _, _) => down,
                }
            }
            (Some(g), _, Some(StatusReason::Deposed)) => match i.epoch {
                Some(e) => format!("former leader of {g} (epoch {e}), deposed"),
                None => format!("former leader of {g}, deposed"),
            },
            (Some(g), InstanceStatus::Active, reason) => {
                let degraded = if reason == Some(StatusReason::Degraded) {
                    let why = i
                        .metadata
                        .get(METADATA_STATUS_REASON)
                        .and_then(|v| v.as_str())
                        .and_then(StatusReason::parse)
                        .map_or("unhealthy", explain);
                    format!(
                        ", degraded: {why}{} for {} (no healthy standby)",
                        said(v),
                        ago(now, v.status_since)
                    )
                } else {
                    String::new()
                };
                match i.epoch {
                    Some(e) => format!("leader of {g} (epoch {e}){degraded}"),
                    None => format!("leader of {g}{degraded}"),
                }
            }
            (Some(g), _, _) => format!("standby in {g}"),
            (None, _, _) => "load-balanced".to_owned(),
        };
        let role = match v.status_reason {
            Some(r @ (StatusReason::HealthCheck | StatusReason::Operator)) => format!(
                "{role}; unhealthy: {}{} for {} (since {})",
                explain(r),
                said(v),
                ago(now, v.status_since),
                v.status_since.format("%H:%M:%S UTC")
            ),
            Some(r)
                if !matches!(
                    r,
                    StatusReason::Disconnected
                        | StatusReason::Deposed
                        | StatusReason::Degraded
                        | StatusReason::Unresponsive
                        | StatusReason::UnresponsiveExpired
                ) =>
            {
                format!("{role} ({})", r.as_str())
            }
            _ => role,
        };
        // An operator's `slow` drill: the latency is on purpose. Not for
        // a process that is gone (it delays nothing any more).
        let role = match drill_delay(i).filter(|_| !v.process_down()) {
            Some((delay_ms, since)) => {
                let since = since.map_or_else(String::new, |at| {
                    format!(
                        " for {} (since {})",
                        ago(now, at),
                        at.format("%H:%M:%S UTC")
                    )
                });
                format!("{role}; slowed by an operator: +{delay_ms} ms per call{since}")
            }
            None => role,
        };
        out.push_str(&format!(
            "{:<20} {:<24} {:<10} {:>8.1}s  {}\n",
            i.service_name,
            i.instance_id,
            i.status.as_str(),
            age,
            role
        ));
    }
    if instances.is_empty() {
        out.push_str("(no instances registered)\n");
    }
    out
}

/// `--status`: a status as the table spells it, in any case.
fn parse_status(given: &str) -> Result<InstanceStatus, String> {
    [
        InstanceStatus::Active,
        InstanceStatus::Unhealthy,
        InstanceStatus::Standby,
    ]
    .into_iter()
    .find(|s| s.as_str().eq_ignore_ascii_case(given.trim()))
    .ok_or_else(|| format!("{given:?} is not a status: ACTIVE, UNHEALTHY or STANDBY"))
}

/// The table of `instances` with `status` (all without one), then a line
/// counting every one of them by status: a fleet of a thousand is read
/// from that line, and `--status UNHEALTHY` lists what needs a look.
pub fn render_counted(
    instances: &[InstanceView],
    status: Option<InstanceStatus>,
    heard_since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> String {
    let total = instances.len();
    let counts = [
        InstanceStatus::Active,
        InstanceStatus::Unhealthy,
        InstanceStatus::Standby,
    ]
    .map(|s| {
        (
            s,
            instances.iter().filter(|v| v.instance.status == s).count(),
        )
    });
    let by_status = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ");
    let plural = |n: usize| if n == 1 { "instance" } else { "instances" };
    let Some(status) = status else {
        let mut table = render(instances, heard_since, now);
        if total > 0 {
            table.push_str(&format!("{total} {}: {by_status}\n", plural(total)));
        }
        return table;
    };
    let shown: Vec<InstanceView> = instances
        .iter()
        .filter(|v| v.instance.status == status)
        .cloned()
        .collect();
    if shown.is_empty() && total > 0 {
        return format!(
            "no {status} instance; {total} {}: {by_status}\n",
            plural(total)
        );
    }
    let mut table = render(&shown, heard_since, now);
    if total > 0 {
        table.push_str(&format!(
            "{} {status} shown of {total} {}: {by_status}\n",
            shown.len(),
            plural(total)
        ));
    }
    table
}

/// The delay (ms) an operator's `slow` drill adds to `i`'s handlers and
/// since when, as its record says (`drillDelayMs`, `drillDelaySince`);
/// `None` without a drill (or a record of an SDK that does not say).
fn drill_delay(i: &ServiceInstance) -> Option<(u64, Option<DateTime<Utc>>)> {
    let delay_ms = i
        .metadata
        .get(METADATA_DRILL_DELAY_MS)?
        .as_u64()
        .filter(|ms| *ms > 0)?;
    let since = i
        .metadata
        .get(METADATA_DRILL_DELAY_SINCE)
        .and_then(|v| v.as_str())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.to_utc());
    Some((delay_ms, since))
}

/// Why an instance reports itself UNHEALTHY, in words.
fn explain(reason: StatusReason) -> &'static str {
    match reason {
        StatusReason::Operator => "forced by an operator",
        StatusReason::HealthCheck => "its health check fails",
        _ => reason.as_str(),
    }
}

/// What its failed health check said, quoted in parentheses after
/// [`explain`]'s words (` ("the order store is full: …")`); empty when it
/// said nothing. The monitor's rule has cut it and removed control
/// characters (`fleet::status_detail`).
fn said(v: &InstanceView) -> String {
    v.status_detail
        .as_deref()
        .map_or_else(String::new, |d| format!(" (\"{d}\")"))
}

/// `3.2s`, from `since` to `now`.
fn ago(now: DateTime<Utc>, since: DateTime<Utc>) -> String {
    format!(
        "{:.1}s",
        (now - since).num_milliseconds().max(0) as f64 / 1000.0
    )
}

#[cfg(test)]
mod tests {
    use aegis_monitor::fleet::{Holder, InstanceView, Liveness, StatusReason, derive};
    use aegis_sdk::contracts::models::{InstanceStatus, ServiceInstance};
    use chrono::{Duration, Utc};

    use super::{LOAD_NOTICE, Listening, parse_status, render, render_counted, said_when_slow};

    /// A slow load is said, and what it loads is what comes back.
    #[tokio::test]
    async fn a_slow_registry_load_is_said_and_still_awaited() {
        assert_eq!(said_when_slow(async { 7 }, false).await, 7);
        let slow = async {
            tokio::time::sleep(LOAD_NOTICE + std::time::Duration::from_millis(50)).await;
            8
        };
        assert_eq!(said_when_slow(slow, true).await, 8);
    }

    fn view(record: ServiceInstance, holder: Option<&Holder>, down: bool) -> InstanceView {
        let liveness = if down {
            Liveness::Disconnected
        } else {
            Liveness::Live
        };
        view_as(record, holder, liveness)
    }

    fn view_as(
        record: ServiceInstance,
        holder: Option<&Holder>,
        liveness: Liveness,
    ) -> InstanceView {
        let d = derive(&record, holder, liveness);
        let mut instance = record.clone();
        instance.status = d.status;
        instance.epoch = d.epoch;
        InstanceView {
            instance,
            reported_status: record.status,
            status_reason: d.reason,
            status_detail: d.detail,
            status_since: chrono::Utc::now(),
        }
    }

    #[test]
    fn only_the_key_holder_is_shown_as_leader() {
        let now = chrono::Utc::now();
        let mut old = ServiceInstance::new("order-service", "order-1", "1.0.0", now);
        old.sticky_active_group = Some("default".into());
        old.epoch = Some(10);
        old.last_heartbeat = now - chrono::Duration::seconds(2);
        let mut new = old.clone();
        new.instance_id = "order-2".into();
        new.epoch = Some(42);
        new.last_heartbeat = now;
        let mut standby = old.clone();
        standby.instance_id = "order-3".into();
        standby.status = InstanceStatus::Standby;
        standby.epoch = None;
        let mut crashed = old.clone();
        crashed.instance_id = "order-4".into();
        crashed.status = InstanceStatus::Standby;
        let holder = Holder {
            instance_id: "order-2".into(),
            epoch: 42,
        };
        let views = [
            view(old, Some(&holder), false),
            view(new, Some(&holder), false),
            view(standby, Some(&holder), false),
            view(crashed, Some(&holder), true),
        ];
        let table = render(&views, now - Duration::days(1), now);
        assert!(
            table.contains("former leader of default (epoch 10), deposed"),
            "{table}"
        );
        assert!(table.contains("leader of default (epoch 42)"), "{table}");
        assert!(table.contains("standby in default"), "{table}");
        assert!(table.contains("down: connection closed"), "{table}");
        assert!(table.contains("2.0s"), "{table}");
        assert_eq!(table.matches(" ACTIVE ").count(), 1, "{table}");
    }

    #[test]
    fn unhealthy_instances_say_why_and_since_when() {
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::seconds(3);
        let mut sick = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", now);
        sick.status = InstanceStatus::Unhealthy;
        sick.metadata
            .insert("statusReason".into(), "operator".into());
        let mut leader = ServiceInstance::new("order-service", "order-1", "1.0.0", now);
        leader.status = InstanceStatus::Unhealthy;
        leader.sticky_active_group = Some("default".into());
        leader
            .metadata
            .insert("statusReason".into(), "health_check".into());
        let holder = Holder {
            instance_id: "order-1".into(),
            epoch: 5,
        };
        let mut views = [view(sick, None, false), view(leader, Some(&holder), false)];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now - Duration::days(1), now);
        assert!(
            table.contains("load-balanced; unhealthy: forced by an operator for 3.0s (since"),
            "{table}"
        );
        assert!(
            table.contains(
                "leader of default (epoch 5), degraded: its health check fails for 3.0s (no healthy standby)"
            ),
            "{table}"
        );
        assert_eq!(table.matches(" ACTIVE ").count(), 1, "{table}");
    }

    #[test]
    fn a_failed_health_check_says_what_it_said() {
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::seconds(3);
        let full = "the order store is full: 1.0 MiB of 1.0 MiB used; orders are refused until settled ones expire (kept 6h)";
        let failing = |service: &str, id: &str, reason: &str| {
            let mut r = ServiceInstance::new(service, id, "1.0.0", now);
            r.status = InstanceStatus::Unhealthy;
            r.metadata.insert("statusReason".into(), reason.into());
            r.metadata.insert("statusDetail".into(), full.into());
            r
        };
        let mut leader = failing("order-service", "order-1", "health_check");
        leader.sticky_active_group = Some("default".into());
        let holder = Holder {
            instance_id: "order-1".into(),
            epoch: 5,
        };
        let mut views = [
            view(
                failing("pricing-service", "pricing-1", "health_check"),
                None,
                false,
            ),
            view(leader, Some(&holder), false),
            // An operator's: its record's detail is not shown.
            view(
                failing("pricing-service", "pricing-2", "operator"),
                None,
                false,
            ),
            // Gone: what it said before is not why.
            view(
                failing("pricing-service", "pricing-3", "health_check"),
                None,
                true,
            ),
        ];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now - Duration::days(1), now);
        assert!(
            table.contains(&format!(
                "load-balanced; unhealthy: its health check fails (\"{full}\") for 3.0s (since"
            )),
            "{table}"
        );
        assert!(
            table.contains(&format!(
                "leader of default (epoch 5), degraded: its health check fails (\"{full}\") for 3.0s (no healthy standby)"
            )),
            "{table}"
        );
        assert!(
            table.contains("load-balanced; unhealthy: forced by an operator for 3.0s"),
            "{table}"
        );
        assert_eq!(table.matches(full).count(), 2, "{table}");
    }

    #[test]
    fn an_instance_slowed_by_a_drill_says_so_and_since_when() {
        let now = chrono::Utc::now();
        let since = now - chrono::Duration::seconds(3);
        let slowed = |id: &str| {
            let mut r = ServiceInstance::new("pricing-service", id, "1.0.0", now);
            r.metadata.insert("drillDelayMs".into(), 500.into());
            r.metadata.insert(
                "drillDelaySince".into(),
                since
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    .into(),
            );
            r
        };
        let mut sick = slowed("pricing-2");
        sick.status = InstanceStatus::Unhealthy;
        sick.metadata
            .insert("statusReason".into(), "operator".into());
        let dead = slowed("pricing-3");
        let plain = ServiceInstance::new("pricing-service", "pricing-4", "1.0.0", now);
        let mut views = [
            view(slowed("pricing-1"), None, false),
            view(sick, None, false),
            view(dead, None, true),
            view(plain, None, false),
        ];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now - Duration::days(1), now);
        let at = since.format("%H:%M:%S UTC");
        assert!(
            row(&table, "pricing-1").ends_with(&format!(
                "load-balanced; slowed by an operator: +500 ms per call for 3.0s (since {at})"
            )),
            "{table}"
        );
        assert!(row(&table, "pricing-1").contains(" ACTIVE "), "{table}");
        assert!(
            row(&table, "pricing-2").ends_with(&format!(
                "unhealthy: forced by an operator for 3.0s (since {at}); slowed by an operator: +500 ms per call for 3.0s (since {at})"
            )),
            "{table}"
        );
        // A process that is gone delays nothing any more.
        assert!(!row(&table, "pricing-3").contains("slowed"), "{table}");
        assert!(!row(&table, "pricing-4").contains("slowed"), "{table}");
    }

    /// The row of `instance` in `table`.
    fn row<'a>(table: &'a str, instance: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.split_whitespace().nth(1) == Some(instance))
            .unwrap_or_else(|| panic!("no row for {instance}:\n{table}"))
    }

    /// A beat interval of a second, as the services announce it.
    /// pricing-2's record, written `written_ms` before `now`, announcing a
    /// beat every second.
    fn beating_pricing_2(now: chrono::DateTime<Utc>, written_ms: i64) -> ServiceInstance {
        let mut record = ServiceInstance::new(
            "pricing-service",
            "pricing-2",
            "1.0.0",
            now - Duration::milliseconds(written_ms),
        );
        record.metadata.insert("heartbeatMs".into(), 1000.into());
        record
    }

    #[test]
    fn an_unresponsive_instance_is_silent_since_its_last_beat() {
        let now = Utc::now();
        let last_beat = now - Duration::milliseconds(3500);
        let record = ServiceInstance::new("risk-service", "risk-2", "1.0.0", last_beat);
        let mut v = view_as(record, None, Liveness::Unresponsive);
        // The fleet found its beats missing three intervals after the last.
        v.status_since = now - Duration::milliseconds(200);
        let table = render(&[v], now - Duration::days(1), now);
        let line = row(&table, "risk-2");
        assert!(
            line.contains("3.5s  unresponsive: no liveness beat for 3.5s"),
            "the same age in both places: {table}"
        );
    }

    /// A hung process whose record expired while NATS still holds its
    /// connection (the monitor keeps it, `unresponsive_expired`): said as
    /// such, and a sticky standby's row says what it was.
    #[test]
    fn an_instance_kept_past_its_record_says_its_connection_is_still_open() {
        let now = Utc::now();
        let last_beat = now - Duration::milliseconds(20_500);
        let record = ServiceInstance::new("pricing-service", "pricing-1", "1.0.0", last_beat);
        let mut v = view_as(record, None, Liveness::Unresponsive);
        v.status_reason = Some(StatusReason::UnresponsiveExpired);
        v.status_since = now - Duration::milliseconds(5_000);
        let mut standby = ServiceInstance::new("order-service", "order-3", "1.0.0", last_beat);
        standby.sticky_active_group = Some("default".into());
        standby.status = InstanceStatus::Standby;
        let mut s = view_as(standby, None, Liveness::Unresponsive);
        s.status_reason = Some(StatusReason::UnresponsiveExpired);
        s.status_since = now - Duration::milliseconds(5_000);
        let table = render(&[v, s], now - Duration::days(1), now);
        let kept = "unresponsive: no liveness beat for 20.5s; its record expired 5.0s ago, \
                    but NATS still holds its connection (hung or cut off?)";
        let line = row(&table, "pricing-1");
        assert!(line.contains(kept), "{table}");
        assert!(!line.contains("(unresponsive_expired)"), "{table}");
        let line = row(&table, "order-3");
        assert!(
            line.contains(&format!("standby in default, {kept}")),
            "{table}"
        );
    }

    #[test]
    fn a_dead_leader_is_down_and_only_a_live_one_deposed() {
        let now = Utc::now();
        let mut dead = ServiceInstance::new("order-service", "order-2", "1.0.0", now);
        dead.sticky_active_group = Some("default".into());
        dead.epoch = Some(372);
        dead.last_heartbeat = now - Duration::milliseconds(2600);
        let mut hung = dead.clone();
        hung.instance_id = "order-3".into();
        let mut paused = dead.clone();
        paused.instance_id = "order-4".into();
        let mut standby = dead.clone();
        standby.instance_id = "order-5".into();
        standby.status = InstanceStatus::Standby;
        standby.epoch = None;
        let holder = Holder {
            instance_id: "order-1".into(),
            epoch: 380,
        };
        let since = now - Duration::milliseconds(300);
        let mut views = [
            view_as(dead, Some(&holder), Liveness::Disconnected),
            view_as(hung, Some(&holder), Liveness::Unresponsive),
            view_as(paused, Some(&holder), Liveness::Live),
            view_as(standby, Some(&holder), Liveness::Disconnected),
        ];
        for v in &mut views {
            v.status_since = since;
        }
        let table = render(&views, now - Duration::days(1), now);
        assert!(
            row(&table, "order-2")
                .contains("former leader of default (epoch 372), down: connection closed 0.3s ago"),
            "{table}"
        );
        assert!(
            row(&table, "order-3")
                .contains("former leader of default (epoch 372), unresponsive: no liveness beat"),
            "{table}"
        );
        assert!(
            row(&table, "order-4").contains("former leader of default (epoch 372), deposed"),
            "{table}"
        );
        assert!(
            row(&table, "order-5").contains("standby in default, down: connection closed"),
            "{table}"
        );
        assert_eq!(table.matches("deposed").count(), 1, "{table}");
        assert_eq!(table.matches(" ACTIVE ").count(), 0, "{table}");
    }

    #[test]
    fn a_degraded_leader_that_died_is_a_former_leader() {
        // Its record said UNHEALTHY (degraded) with its epoch; a standby's
        // record carries no epoch.
        let now = Utc::now();
        let mut dead = ServiceInstance::new("order-service", "order-2", "1.0.0", now);
        dead.sticky_active_group = Some("default".into());
        dead.status = InstanceStatus::Unhealthy;
        dead.epoch = Some(372);
        let mut v = view_as(dead, None, Liveness::Disconnected);
        v.status_since = now - Duration::milliseconds(300);
        let table = render(&[v], now - Duration::days(1), now);
        assert!(
            row(&table, "order-2")
                .contains("former leader of default (epoch 372), down: connection closed 0.3s ago"),
            "{table}"
        );
    }

    #[test]
    fn an_instance_silent_for_a_beat_and_a_half_since_listening_began_is_unresponsive() {
        let now = Utc::now();
        let mut record = beating_pricing_2(now, 2400);
        record.status = InstanceStatus::Active;
        let judge = |since_ms: i64, seen: Option<i64>, judged: bool| {
            let mut v = view_as(record.clone(), None, Liveness::Live);
            let listening = Listening {
                since: now - Duration::milliseconds(since_ms),
                judged,
                closed: Default::default(),
            };
            listening.judge(&mut v, seen.map(|ms| now - Duration::milliseconds(ms)), now);
            v
        };
        // Listened 1.6 intervals, heard nothing: down. How long nothing was
        // heard is what is known (it may have beaten after its record was
        // written, before we listened); HEARTBEAT is the record's age.
        let v = judge(1600, None, true);
        assert_eq!(v.instance.status, InstanceStatus::Unhealthy);
        assert_eq!(v.status_reason, Some(StatusReason::Unresponsive));
        let table = render(&[v], now - Duration::milliseconds(1600), now);
        assert!(
            row(&table, "pricing-2").contains(
                "2.4s  unresponsive: no liveness beat heard in 1.6s (its last sign of life is a \
                 record write 2.4s ago, as records are rewritten only every few beats: it \
                 stopped between 2.4s and 0.6s ago)"
            ),
            "{table}"
        );
        // Not yet listened long enough, a beat heard, or our own
        // connection broke meanwhile: nothing judged.
        for (since_ms, seen, judged) in [
            (1000, None, true),
            (1600, Some(500), true),
            (1600, None, false),
        ] {
            let v = judge(since_ms, seen, judged);
            assert_eq!(
                v.instance.status,
                InstanceStatus::Active,
                "{since_ms} {seen:?} {judged}"
            );
            assert_eq!(v.status_reason, None);
        }
        // A beat heard moves the heartbeat age.
        let v = judge(1600, Some(500), true);
        assert_eq!(v.instance.last_heartbeat, now - Duration::milliseconds(500));
    }

    #[test]
    fn a_connection_the_servers_list_closed_is_down_until_it_beats_again() {
        let now = Utc::now();
        let mut record = beating_pricing_2(now, 2400);
        record
            .metadata
            .insert("natsConnection".into(), "pricing-2-abc".into());
        let closed_at = now - Duration::milliseconds(2000);
        let listening = Listening {
            since: now - Duration::milliseconds(50),
            judged: true,
            closed: [("pricing-2-abc".to_owned(), closed_at)].into(),
        };
        // At once, without waiting for beats to be missed.
        let mut v = view_as(record.clone(), None, Liveness::Live);
        listening.judge(&mut v, None, now);
        assert_eq!(v.instance.status, InstanceStatus::Unhealthy);
        assert_eq!(v.status_reason, Some(StatusReason::Disconnected));
        let table = render(&[v], now - Duration::days(1), now);
        assert!(
            row(&table, "pricing-2").contains("down: connection closed 2.0s ago"),
            "{table}"
        );
        // A beat since we listened: it reconnected, it is live.
        let mut v = view_as(record, None, Liveness::Live);
        listening.judge(&mut v, Some(now - Duration::milliseconds(10)), now);
        assert_eq!(v.instance.status, InstanceStatus::Active);
        assert_eq!(v.status_reason, None);
    }

    /// The scale trial: at 1,010 instances `aegis status` printed 1,011
    /// lines with no count and no way to list only the UNHEALTHY. The last
    /// line now counts them all by status, and `--status` picks the rows.
    #[test]
    fn a_last_line_counts_by_status_and_status_picks_the_rows() {
        let now = Utc::now();
        let record = |id: &str, status: InstanceStatus| {
            let mut r = ServiceInstance::new("pricing-service", id, "1.0.0", now);
            r.status = status;
            view(r, None, false)
        };
        let fleet = [
            record("pricing-1", InstanceStatus::Active),
            record("pricing-2", InstanceStatus::Unhealthy),
            record("pricing-3", InstanceStatus::Active),
        ];
        let since = now - Duration::days(1);

        let all = render_counted(&fleet, None, since, now);
        assert_eq!(all.lines().count(), 5, "{all}");
        assert!(
            all.ends_with("3 instances: 2 ACTIVE, 1 UNHEALTHY\n"),
            "{all}"
        );

        let sick = render_counted(&fleet, Some(InstanceStatus::Unhealthy), since, now);
        assert!(sick.contains("pricing-2"), "{sick}");
        assert!(
            !sick.contains("pricing-1") && !sick.contains("pricing-3"),
            "{sick}"
        );
        assert!(
            sick.ends_with("1 UNHEALTHY shown of 3 instances: 2 ACTIVE, 1 UNHEALTHY\n"),
            "{sick}"
        );

        let none = render_counted(&fleet, Some(InstanceStatus::Standby), since, now);
        assert_eq!(
            none,
            "no STANDBY instance; 3 instances: 2 ACTIVE, 1 UNHEALTHY\n"
        );

        let empty = render_counted(&[], Some(InstanceStatus::Active), since, now);
        assert!(empty.contains("(no instances registered)"), "{empty}");
    }

    #[test]
    fn status_is_read_in_any_case_and_anything_else_is_refused() {
        assert_eq!(parse_status("unhealthy"), Ok(InstanceStatus::Unhealthy));
        assert_eq!(parse_status("STANDBY"), Ok(InstanceStatus::Standby));
        let refused = parse_status("sick").unwrap_err();
        assert!(
            refused.contains("ACTIVE, UNHEALTHY or STANDBY"),
            "{refused}"
        );
    }
}
