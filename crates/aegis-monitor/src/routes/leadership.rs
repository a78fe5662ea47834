//! `GET /api/leadership/{service}`: the failover timeline of a sticky
//! service — who led, from when, with which fencing epoch, how each term
//! ended and how long each hand-over took — which is what an operator asks
//! after a crash.
//!
//! Built from what the instances published to `AEGIS_LOG`
//! (`aegis.log.{service}.*`): `elected` records open a term (a new epoch
//! is a new term, even when the same instance wins again, and elections
//! follow their epochs, not their hosts' clocks, and a goodbye naming an
//! epoch comes after the election at that epoch);
//! `leadership_lost` (resigned; lapsed when it says its lease ran out
//! unrenewed, the key kept, which an `elected` at the same epoch ends as
//! `resumed`) or `deregistered` (stopped) close it; a
//! term that a new `elected` ends with no goodbye from its holder was
//! `superseded` (a crash or a partition); a goodbye naming a later epoch
//! than its leader's open term, whose election was not read, ends that
//! term `unread` at its election (it ended after, when is unknown). A
//! hand-over after a goodbye is measured from the goodbye; it is a
//! `restart`, not a hand-over, when the new leader's instance stopped
//! (`deregistered`) after that goodbye, or a process of it registered
//! (`registered`, written once per process start) at or after the goodbye
//! and no later than its election: it was started after the old leader
//! let go, so no running standby took over (a stop and start of the whole
//! fleet, where the stepping-down leader writes its goodbye after its
//! standbys wrote theirs). `registered` records are neither goodbyes nor
//! elections: they are kept out of the term logic, and used only for
//! that. After a superseded term, a hand-over is measured from the old
//! leader's last metrics snapshot before the new election (its last sign of
//! life), which bounds the hand-over from above and is where the
//! superseded term is shown to end: a leader that crashed, or a fleet that
//! was stopped and started again, led nothing in between (a restarted new
//! leader does not make it a `restart`: the key is free only when its
//! lease runs out, and a standby started meanwhile may win it as well as
//! one that ran). A last term
//! whose election key the fleet sees unrenewed past its lease, with nobody
//! taking over yet, `lapsed` at its last renewal plus the lease. Reading is
//! one temporary consumer over the window (its oldest and newest records
//! when it holds more than one request scans, the newest found by
//! bisection), plus one read (at most a few hundred snapshots) per
//! superseded term, one consumer at a time under one read turn (see
//! `bus.rs`), each deleted also when the request is cut off. Epochs start
//! over with a new election bucket: elections from before the current
//! bucket's creation come first.

use std::time::Duration;

use aegis_contracts::{
    MetricsSnapshot,
    log::{LAPSED_FIELD, LogKind, LogRecord},
    names::{validate_group_name, validate_service_name},
    subjects::{LOG_STREAM, METRICS_STREAM, metrics_subject},
};
use async_nats::jetstream::{self, consumer::DeliverPolicy};
use axum::{
    Json,
    extract::{Path, State},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    bus::{ReadTurn, Reader},
    error::{ApiError, ErrorEnvelope},
    extract::ApiQuery,
    fleet::Holder,
    openapi::WindowParam,
    state::AppState,
};

/// How long the election bucket's creation time is waited for.
const BUCKET_INFO_WAIT: Duration = Duration::from_millis(500);
/// Elections stamped this little before the election bucket's creation
/// are still its own: the first is won milliseconds after the bucket is
/// made, by a host whose clock may be a little behind the server's.
const CREATION_SKEW: chrono::Duration = chrono::Duration::seconds(5);
/// Longest window: what `AEGIS_LOG` keeps.
const MAX_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Default window.
const DEFAULT_WINDOW: Duration = Duration::from_secs(3600);
/// At most this many log records are scanned per request.
const MAX_SCAN: usize = 20_000;
/// How far before a new election the old leader's last snapshot is looked
/// for: long enough to bridge a whole fleet being down for minutes (a
/// restart of everything), which is when the old term's end matters most.
const LAST_SEEN_LOOKBACK: chrono::Duration = chrono::Duration::minutes(15);
/// Most snapshots read per superseded term (one every 2 s by default: the
/// lookback holds about 450).
const LAST_SEEN_SCAN: usize = 512;
/// Slack when telling whether a snapshot's process was running when a term
/// began (its start is derived from `uptimeSecs`, rounded by the publisher).
const PROCESS_START_SLACK: chrono::Duration = chrono::Duration::seconds(1);

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(leadership))
}

/// Query of the leadership endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct LeadershipQuery {
    /// How far back to look (`90s`, `15m`, `1h`; default 1 h; a longer one is cut to 24 h).
    #[param(example = "1h", value_type = Option<WindowParam>, inline)]
    window: Option<String>,
    /// Only this sticky group: instances registered in another group are
    /// left out (instances that are gone are kept).
    #[param(pattern = "^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")]
    group: Option<String>,
}

/// One leader's term.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeadershipTerm {
    /// The leader.
    instance_id: String,
    /// Its fencing epoch, when its `elected` record carried one.
    epoch: Option<u64>,
    /// When it was elected (RFC 3339 UTC).
    #[schema(value_type = String, format = DateTime)]
    elected_at: DateTime<Utc>,
    /// When the term ended; null while it lasts. A `superseded` term ends
    /// when its leader's connection closed, when the monitor saw that (with
    /// system account access), else at its leader's last metrics snapshot
    /// when one is found (its last sign of life), else at the next
    /// election.
    #[schema(value_type = Option<String>, format = DateTime)]
    ended_at: Option<DateTime<Utc>>,
    /// `resigned` (leadership_lost), `stopped` (deregistered),
    /// `superseded` (a new leader was elected without a goodbye),
    /// `lapsed` (its election key went unrenewed past its lease and nobody
    /// has taken over yet; or its leader said its lease ran out unrenewed,
    /// the key still its own, and stopped serving: a `leadership_lost`
    /// with `lapsed: true`, which a next term of the same leader at the
    /// same epoch, `resumed`, ends) or `unread`; null while the term lasts.
    ///
    /// In a truncated window, a term still open where the unread middle
    /// begins ends at its leader's first goodbye read after the middle
    /// (`resigned` or `stopped`, `endedAt` that goodbye's time) when the
    /// goodbye is its own and on time: it names the term's epoch (as the
    /// SDK writes them) or none (an older SDK's), nothing was elected after
    /// the middle before it (or at most 1 s before it), and no election key
    /// names someone whose election was not read after the middle. Else it
    /// is `unread` (it ended in the middle, after `endedAt`, the last
    /// record read before it), unless nothing was elected after the middle
    /// and the election key (the group's, when one is asked for) names its
    /// leader at its epoch now: then it leads on (null).
    ///
    /// In any window, a term whose leader's goodbye names a later epoch
    /// whose election was not read (its `elected` record lost) is `unread`
    /// too, `endedAt` its own election: it ended after that, before the
    /// goodbye, when is not known.
    end_reason: Option<String>,
    /// Milliseconds from the previous leader letting go (or, after a
    /// superseded term, from its last sign of life) to this election.
    /// After an `unread` term ended by its leader's goodbye naming a later
    /// epoch, that goodbye is the letting go (the latest such goodbye of
    /// that leader before this election, or within 1 s after it naming an
    /// epoch below this one's; 0 when stamped after it), not the term's
    /// `endedAt`.
    handover_ms: Option<f64>,
    /// The previous leader, when this term followed one in the window
    /// (never one across the unread middle of a truncated window).
    handover_from: Option<String>,
    /// `notice` (measured from a goodbye), `restart` (measured from a
    /// goodbye, but the new leader was itself started after it: its
    /// instance stopped after the goodbye, or one of its processes
    /// registered at or after it and no later than its election, as in a
    /// restart of the whole fleet: the time with no leader, not how long a
    /// standby took to take over), `resumed` (the same leader
    /// serving again at the same epoch, measured from its goodbye: its
    /// lease ran out unrenewed, it stopped serving and kept the key, and
    /// a renewal let it serve again; no one else led meanwhile), `disconnect` (measured
    /// from the moment the old leader's connection closed, as the NATS
    /// server said; with system account access) or `lastSeen` (an upper
    /// bound, from the old leader's last metrics snapshot).
    handover_basis: Option<String>,
}

/// The failover timeline of one service.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LeadershipTimeline {
    /// The service.
    service_name: String,
    /// The window covered, in seconds.
    window_secs: u64,
    /// True when the window held more log records than one request scans
    /// (its oldest and newest 10,000 were read; terms in between may be
    /// missing, and no hand-over is linked across the middle). A term open
    /// where the unread middle begins ends at its leader's goodbye read
    /// after the middle when that goodbye is its own, else there as
    /// `unread`, unless nothing was elected after the middle and its
    /// election key names it still (see `endReason`).
    truncated: bool,
    /// Terms, oldest first.
    terms: Vec<LeadershipTerm>,
}

/// The failover timeline of a sticky service over a window: its leaders'
/// terms, how each ended and how long each hand-over took.
#[utoipa::path(
    get, path = "/api/leadership/{service}", tag = "instances",
    params(("service" = String, Path, description = "Service name"), LeadershipQuery),
    responses(
        (status = 200, description = "Terms, oldest first", body = LeadershipTimeline),
        (status = 400, description = "Bad window or group", body = ErrorEnvelope),
        (status = 401, description = "Not authenticated", body = ErrorEnvelope),
        (status = 404, description = "SERVICE_NOT_FOUND (not a valid name)", body = ErrorEnvelope),
        (status = 503, description = "SERVICE_UNAVAILABLE: the stream AEGIS_LOG or AEGIS_METRICS cannot be read (NATS unreachable, or the stream has no leader), or the monitor is busy (8 requests were reading stream history for all of the 2 s this one waited; details.maxStreamReads); Retry-After says when to try again", body = ErrorEnvelope),
    )
)]
async fn leadership(
    State(state): State<AppState>,
    Path(service): Path<String>,
    ApiQuery(query): ApiQuery<LeadershipQuery>,
) -> Result<Json<LeadershipTimeline>, ApiError> {
    let window = crate::extract::window(query.window.as_deref(), DEFAULT_WINDOW, MAX_WINDOW)?;
    if let Some(group) = &query.group
        && validate_group_name(group).is_err()
    {
        return Err(ApiError::bad_param("group", "not a valid group name"));
    }
    if let Err(e) = validate_service_name(&service) {
        return Err(
            ApiError::no_service("no service", &service).with_detail("reason", e.to_string())
        );
    }
    let js = state.conn().jetstream();
    // One turn for all of the request's reads, one consumer at a time.
    let turn = state.stream_reads().turn().await?;
    let since =
        Utc::now() - chrono::Duration::from_std(window).unwrap_or(chrono::Duration::hours(1));
    let (records, gap) = read_lifecycle(js, &service, since, &turn)
        .await
        .map_err(|e| {
            ApiError::stream_unavailable("the service's leadership history", "AEGIS_LOG", &*e)
        })?;
    let truncated = gap.is_some();
    // Kept with each record: which side of the unread middle it was read on.
    let records: Vec<(Lifecycle, bool)> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (r, gap.is_some_and(|g| i >= g.at)))
        .collect();
    let records = match &query.group {
        Some(group) => {
            // Instances registered now in another group are not this group's.
            let elsewhere: Vec<String> = state
                .fleet()
                .by_service(&service)
                .into_iter()
                .map(|view| view.instance)
                .filter(|i| i.sticky_active_group.as_deref().is_some_and(|g| g != group))
                .map(|i| i.instance_id)
                .collect();
            records
                .into_iter()
                .filter(|(r, _)| !elsewhere.contains(&r.instance))
                .collect()
        }
        None => records,
    };
    let gap = gap.map(|g| Gap {
        at: records.iter().take_while(|(_, after)| !after).count(),
        since: g.since,
    });
    let records: Vec<Lifecycle> = records.into_iter().map(|(r, _)| r).collect();
    // Epochs start over with a new election bucket (see `in_order`).
    // Asked briefly: while the elections stream chooses a leader (a NATS
    // node died) its info goes unanswered, and the timeline is wanted most
    // then; without it, elections are ordered by epoch alone.
    let elections = format!("KV_{}", aegis_contracts::subjects::ELECTIONS_BUCKET);
    let bucket_created =
        match tokio::time::timeout(BUCKET_INFO_WAIT, js.get_stream(elections)).await {
            Ok(Ok(stream)) => {
                let created = stream.cached_info().created;
                DateTime::<Utc>::from_timestamp_nanos(created.unix_timestamp_nanos() as i64).into()
            }
            _ => None,
        };
    let holders = state.fleet().holders(&service, query.group.as_deref());
    let mut terms = build_terms_around(&records, gap, bucket_created, &holders);
    for i in 1..terms.len() {
        if terms[i].handover_basis.as_deref() != Some("lastSeen") {
            continue;
        }
        let previous = &terms[i - 1];
        let (holder, began, elected) = (
            previous.instance_id.clone(),
            previous.elected_at,
            terms[i].elected_at,
        );
        // The server said when the old leader's connection closed (a
        // crash): the hand-over is measured from then, and its term ends
        // then. A close of an earlier process under the same id, or of a
        // later one (it crashed again since), says nothing about this
        // term: the first close within it is its leader's.
        if let Some(closed) = state
            .fleet()
            .closes(&service, &holder)
            .into_iter()
            .find(|at| (began..=elected).contains(at))
        {
            terms[i].handover_ms = Some(millis_between(closed, elected));
            terms[i].handover_basis = Some("disconnect".to_owned());
            terms[i - 1].ended_at = Some(closed);
            continue;
        }
        let seen = last_snapshot_before(js, &service, &holder, began, elected, &turn)
            .await
            .map_err(|e| {
                ApiError::stream_unavailable(
                    "the service's leadership history",
                    "AEGIS_METRICS",
                    &*e,
                )
            })?;
        match seen {
            Some(at) => {
                terms[i].handover_ms = Some(millis_between(at, elected));
                // Without a goodbye the old term ended somewhere between its
                // leader's last sign of life and this election. It ends at
                // the former: when everything was down for a while (a whole
                // restart), that time was nobody's term, not the old one's.
                terms[i - 1].ended_at = Some(at.max(began));
            }
            None => {
                terms[i].handover_ms = None;
                terms[i].handover_basis = None;
            }
        }
    }
    // The last term may have ended with nobody taking over yet: its leader
    // died (or everything was stopped) and its key is no longer renewed.
    // Shown as lasting until now, that time would be counted as leading.
    if let Some(last) = terms.last_mut().filter(|t| t.ended_at.is_none())
        && let Some(epoch) = last.epoch
        && let Some(lapsed) = state.fleet().lapsed_at(&service, &last.instance_id, epoch)
    {
        last.ended_at = Some(lapsed.max(last.elected_at));
        last.end_reason = Some("lapsed".to_owned());
    }
    Ok(Json(LeadershipTimeline {
        service_name: service,
        window_secs: window.as_secs(),
        truncated,
        terms,
    }))
}

/// A lifecycle record that matters for leadership.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Lifecycle {
    at: DateTime<Utc>,
    instance: String,
    kind: Change,
    epoch: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Elected,
    Resigned,
    /// A `leadership_lost` whose leader says its lease ran out unrenewed
    /// and it keeps the key (`lapsed: true`): a goodbye as `Resigned` is,
    /// which an `elected` at the same epoch may end (`resumed`).
    Lapsed,
    Stopped,
    /// A process's registration began (`registered`): it was started then.
    /// No goodbye, and no election: [`in_order`] leaves it out, so that the
    /// term logic never sees one; it only tells whether a new leader's
    /// process started after its predecessor let go (see [`restarted`]).
    Registered,
}

impl Lifecycle {
    fn from_record(instance: &str, record: &LogRecord) -> Option<Self> {
        let kind = match record.kind {
            LogKind::Elected => Change::Elected,
            LogKind::LeadershipLost
                if record.fields.get(LAPSED_FIELD) == Some(&serde_json::Value::Bool(true)) =>
            {
                Change::Lapsed
            }
            LogKind::LeadershipLost => Change::Resigned,
            LogKind::Deregistered => Change::Stopped,
            LogKind::Registered => Change::Registered,
            _ => return None,
        };
        Some(Self {
            at: record.timestamp,
            instance: instance.to_owned(),
            kind,
            epoch: record.epoch(),
        })
    }
}

/// A goodbye this close after a new election still counts as the old
/// leader's notice (it may be written just after the new leader's record).
const GOODBYE_GRACE: chrono::Duration = chrono::Duration::seconds(1);

/// Where a record is placed: the time, its position among the records
/// placed then, and between elections placed at the same position, their
/// epoch rank.
type Placement = (DateTime<Utc>, usize, usize);

/// Lifecycle records in the order they happened, as far as it can be
/// told, each with the time it is placed at.
///
/// A record's time is its instance's own clock, and hosts' clocks disagree;
/// the fencing epoch is the order the election key was won in. So the
/// elections that carry an epoch follow their epochs (then time): each is
/// placed no earlier than the one before it, at its own time when that is
/// later. A goodbye naming an epoch is placed no earlier than its
/// instance's election at that epoch (just after it when that is placed
/// later than the goodbye's own time: a leader whose clock runs behind
/// the previous leader's by more than its term lasted), so that it still
/// ends that term; when no such election was read (its record lost), no
/// earlier than its instance's latest election at a lower epoch stamped
/// no later than the goodbye (the same clock), whose term it ends.
/// Everything else (goodbyes without an epoch, elections
/// without one) is placed at its own time. Records placed at the same
/// time keep the order they were given in (the stream's), the epoch
/// deciding between elections.
///
/// Epochs start over when the election bucket is created again: elections
/// stamped before `bucket_created` (the current bucket's creation, when
/// known, less [`CREATION_SKEW`]) are an earlier bucket's, and come before
/// the current bucket's whatever their epochs.
fn in_order(
    records: &[Lifecycle],
    bucket_created: Option<DateTime<Utc>>,
) -> Vec<(DateTime<Utc>, &Lifecycle)> {
    let mut fenced: Vec<(usize, &Lifecycle, u64)> = records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.kind == Change::Elected)
        .filter_map(|(index, r)| Some((index, r, r.epoch?)))
        .collect();
    let current =
        |r: &Lifecycle| bucket_created.is_none_or(|created| r.at >= created - CREATION_SKEW);
    fenced.sort_by_key(|&(index, r, epoch)| (current(r), epoch, r.at, index));
    let mut keyed: Vec<(Placement, &Lifecycle)> = Vec::with_capacity(records.len());
    let mut floor: Option<(DateTime<Utc>, usize)> = None;
    for (rank, &(index, r, _)) in fenced.iter().enumerate() {
        let key = match floor {
            Some((placed, after)) if r.at <= placed => (placed, index.max(after)),
            _ => (r.at, index),
        };
        floor = Some(key);
        keyed.push(((key.0, key.1, rank), r));
    }
    let elections = keyed.len();
    for (index, r) in records.iter().enumerate() {
        // Registrations are not placed: the term logic reads every record
        // that is not an election as a goodbye.
        if (r.kind == Change::Elected && r.epoch.is_some()) || r.kind == Change::Registered {
            continue;
        }
        let own = (r.at, index, 0);
        // A goodbye naming an epoch comes after the election it names (a
        // floored election may be placed after the goodbye's own time):
        // of its instance's elections at that epoch, the latest stamped
        // no later than the goodbye, else the earliest. When none was read
        // (its record lost), after its instance's latest election at a
        // lower epoch stamped no later than the goodbye (the same clock
        // says it came before): the goodbye shows that term ended, and
        // must not be placed before it when that election was floored.
        let named = (r.kind != Change::Elected)
            .then_some(r.epoch)
            .flatten()
            .and_then(|said| {
                let own = keyed[..elections]
                    .iter()
                    .filter(|(_, e)| e.instance == r.instance);
                let same = own.clone().filter(|(_, e)| e.epoch == Some(said));
                let first = same.clone().min_by_key(|(_, e)| e.at);
                let lost = || {
                    own.clone()
                        .filter(|(_, e)| e.epoch < Some(said) && e.at <= r.at)
                        .max_by_key(|(_, e)| e.at)
                };
                same.filter(|(_, e)| e.at <= r.at)
                    .max_by_key(|(_, e)| e.at)
                    .or(first)
                    .or_else(lost)
                    .map(|&(key, _)| key)
            });
        keyed.push((named.map_or(own, |key| key.max(own)), r));
    }
    // Stable: a goodbye placed with its election stays after it.
    keyed.sort_by_key(|&(key, _)| key);
    keyed.into_iter().map(|((at, _, _), r)| (at, r)).collect()
}

/// Terms from lifecycle records (any order), without knowing when the
/// election bucket was created.
#[cfg(test)]
pub(crate) fn build_terms(records: &[Lifecycle]) -> Vec<LeadershipTerm> {
    build_terms_since(records, None)
}

/// Terms from lifecycle records (any order), knowing when the current
/// election bucket was created (see [`in_order`]). Pure, so the rules are
/// tested without NATS; a superseded term's successor gets
/// `handover_basis = lastSeen` and no figure yet (the caller measures it).
pub(crate) fn build_terms_since(
    records: &[Lifecycle],
    bucket_created: Option<DateTime<Utc>>,
) -> Vec<LeadershipTerm> {
    let sorted = in_order(records, bucket_created);
    // Kept apart from `sorted`, which has none (see `in_order`).
    let registrations: Vec<&Lifecycle> = records
        .iter()
        .filter(|r| r.kind == Change::Registered)
        .collect();
    let mut terms: Vec<LeadershipTerm> = Vec::new();
    // Once the last term is closed: when its leader last let go (a
    // hand-over is measured from then), and the epoch that goodbye named.
    // After an `unread` end, or a later term of the same leader whose
    // election was not read, that is the goodbye naming the later epoch,
    // not the term's `endedAt`.
    let mut let_go: Option<(DateTime<Utc>, Option<u64>)> = None;
    for (index, &(placed, r)) in sorted.iter().enumerate() {
        match r.kind {
            Change::Elected => {
                let mut handover = None;
                if let Some(open) = terms.last_mut().filter(|t| t.ended_at.is_none()) {
                    let same_holder = open.instance_id == r.instance;
                    let unknown = open.epoch.is_none() || r.epoch.is_none();
                    if same_holder && (unknown || open.epoch == r.epoch) {
                        // The same election told again (or without epochs
                        // to tell them apart): the same term.
                        continue;
                    }
                    // A new epoch is a new write of the key that the holder
                    // won again after losing it (a crash, a restart of the
                    // whole fleet): a new term even for the same instance,
                    // and the old one ended without a goodbye. A goodbye of
                    // that instance after this election closes the new term,
                    // unless it names the old one's epoch.
                    let late_goodbye = sorted[index + 1..]
                        .iter()
                        .take_while(|(later, _)| *later <= placed + GOODBYE_GRACE)
                        .map(|&(_, later)| later)
                        .find(|later| {
                            later.instance == open.instance_id
                                && later.kind != Change::Elected
                                && !names_another_term(later, open)
                                && (!same_holder || later.epoch.is_some())
                        });
                    // Its leader's goodbye of a later term whose election
                    // was not read, written just after this election: it
                    // won the key again and let go before this election.
                    let later_goodbye =
                        goodbye_of_an_unread_term_just_after(&sorted, index, open, open.epoch);
                    match (late_goodbye, later_goodbye) {
                        (Some(goodbye), later) => {
                            // Never before the term began (the two
                            // records may come from clocks that disagree).
                            open.ended_at = Some(goodbye.at.min(r.at).max(open.elected_at));
                            open.end_reason = Some(reason(goodbye.kind).to_owned());
                            let left = later.unwrap_or(goodbye).at;
                            let basis = notice(
                                goodbye.kind != Change::Lapsed
                                    && restarted(&sorted, index, &registrations, left),
                            );
                            handover = Some((open.instance_id.clone(), basis, Some(left)));
                        }
                        (None, Some(goodbye)) => {
                            // As a later-epoch goodbye before it: the term
                            // ended after its election, when is unknown.
                            open.ended_at = Some(open.elected_at);
                            open.end_reason = Some("unread".to_owned());
                            let left = goodbye.at;
                            let basis = notice(restarted(&sorted, index, &registrations, left));
                            handover = Some((open.instance_id.clone(), basis, Some(left)));
                        }
                        (None, None) => {
                            open.ended_at = Some(r.at.max(open.elected_at));
                            open.end_reason = Some("superseded".to_owned());
                            handover = Some((open.instance_id.clone(), "lastSeen", None));
                        }
                    }
                } else if let Some(last) = terms.last() {
                    // A goodbye of a later unread term of its leader
                    // written just after this election is a later letting
                    // go than any before it.
                    let named = let_go.and_then(|(_, said)| said).max(last.epoch);
                    let later = goodbye_of_an_unread_term_just_after(&sorted, index, last, named);
                    let left = later
                        .map(|goodbye| goodbye.at)
                        .or(let_go.map(|(left, _)| left))
                        .or(last.ended_at);
                    // A lapse frees no key (it stands until its lease
                    // runs out), so no restart is told after one.
                    let restart = last.end_reason.as_deref() != Some("lapsed")
                        && left.is_some_and(|left| restarted(&sorted, index, &registrations, left));
                    // Its leader let go of this very epoch and serves it
                    // again: its lease ran out unrenewed, it stopped
                    // serving and kept the key (nobody else can win an
                    // epoch already won), and a renewal let it serve again.
                    // Not across a new election bucket, whose epochs start
                    // over.
                    let resumed = !restart
                        && later.is_none()
                        && same_bucket(bucket_created, last.elected_at, r.at)
                        && last.instance_id == r.instance
                        && matches!(last.end_reason.as_deref(), Some("resigned" | "lapsed"))
                        && r.epoch.is_some()
                        && last.epoch == r.epoch
                        && let_go.is_some_and(|(_, said)| said == r.epoch);
                    let basis = if resumed { "resumed" } else { notice(restart) };
                    handover = Some((last.instance_id.clone(), basis, left));
                }
                let_go = None;
                let (from, basis, ms) = match handover {
                    Some((from, basis, Some(left))) => {
                        (Some(from), Some(basis), Some(millis_between(left, r.at)))
                    }
                    Some((from, basis, None)) => (Some(from), Some(basis), None),
                    None => (None, None, None),
                };
                terms.push(LeadershipTerm {
                    instance_id: r.instance.clone(),
                    epoch: r.epoch,
                    elected_at: r.at,
                    ended_at: None,
                    end_reason: None,
                    handover_ms: ms,
                    handover_from: from,
                    handover_basis: basis.map(str::to_owned),
                });
            }
            // Never among `sorted` (see `in_order`).
            Change::Registered => {}
            Change::Resigned | Change::Lapsed | Change::Stopped => {
                let Some(last) = terms.last_mut().filter(|t| t.instance_id == r.instance) else {
                    continue;
                };
                if last.ended_at.is_some() {
                    // A closed term's leader letting go of a later term
                    // whose election was not read: the hand-over to the
                    // next leader is measured from this goodbye. One
                    // naming no later epoch than the last letting go
                    // (a stop after a resign) is not a new letting go.
                    let named = let_go.and_then(|(_, said)| said).max(last.epoch);
                    if r.epoch > named
                        && named.is_some()
                        && names_a_later_unread_term(r, last, &sorted)
                    {
                        let_go = Some((r.at, r.epoch));
                    }
                    continue;
                }
                let open = last;
                if !names_another_term(r, open) {
                    open.ended_at = Some(r.at.max(open.elected_at));
                    open.end_reason = Some(reason(r.kind).to_owned());
                    let_go = Some((r.at.max(open.elected_at), r.epoch.or(open.epoch)));
                } else if names_a_later_unread_term(r, open, &sorted) {
                    // Its leader lost it before it won the epoch this
                    // goodbye names, and that election was not read (the
                    // SDK's telemetry outbox drops its oldest records when
                    // full): the term ended after its election, before
                    // this goodbye, when is unknown, as a term open at the
                    // unread middle of a truncated window.
                    open.ended_at = Some(open.elected_at);
                    open.end_reason = Some("unread".to_owned());
                    let_go = Some((r.at, r.epoch));
                }
                // Else it names an earlier term: one written before its
                // instance won the key again, stamped after that by a
                // clock ahead, ends nothing.
            }
        }
    }
    terms
}

/// Where a truncated read left records out (see [`read_newest`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Gap {
    /// The records before this index were read before the unread middle,
    /// the others after it.
    pub(crate) at: usize,
    /// When the last message read before it was stored.
    pub(crate) since: DateTime<Utc>,
}

/// Terms from lifecycle records read with `gap` (`None`: all of the
/// window was read), knowing when the current election bucket was created
/// and whom the group's election keys name now (`holders`).
///
/// Nothing is known of the unread middle. The two sides are built apart,
/// so that no hand-over links a leader before it to one after it. A term
/// still open where the read stops ends at its leader's goodbye read after
/// the middle, when one is its (see [`goodbye_after_the_middle`]). Else it
/// ended somewhere in the middle (`unread`, at the last record read before
/// it, its end being later): unless nothing was elected after the middle
/// and its key names it now, in which case it led through the middle and
/// leads on.
pub(crate) fn build_terms_around(
    records: &[Lifecycle],
    gap: Option<Gap>,
    bucket_created: Option<DateTime<Utc>>,
    holders: &[Holder],
) -> Vec<LeadershipTerm> {
    let Some(gap) = gap else {
        return build_terms_since(records, bucket_created);
    };
    let (before, after) = records.split_at(gap.at.min(records.len()));
    let mut terms = build_terms_since(before, bucket_created);
    let newer = build_terms_since(after, bucket_created);
    if let Some(open) = terms.last_mut().filter(|t| t.ended_at.is_none()) {
        let leads_now = |instance: &str, epoch: u64| {
            holders
                .iter()
                .any(|h| h.instance_id == instance && h.epoch == epoch)
        };
        let leads_on =
            newer.is_empty() && open.epoch.is_some_and(|e| leads_now(&open.instance_id, e));
        if let Some(goodbye) = goodbye_after_the_middle(open, after, bucket_created, holders) {
            open.ended_at = Some(goodbye.at.max(open.elected_at));
            open.end_reason = Some(reason(goodbye.kind).to_owned());
        } else if !leads_on {
            open.ended_at = Some(gap.since.max(open.elected_at));
            open.end_reason = Some("unread".to_owned());
        }
    }
    terms.extend(newer);
    terms
}

/// The goodbye (`leadership_lost`, `deregistered`) read after the unread
/// middle that ends `open`, the term still open where the middle begins:
/// the first goodbye of its leader in `after`, when that is its own.
///
/// A goodbye that carries an epoch (as the SDK writes `leadership_lost`
/// and a leader's `deregistered`) is never another term's: one at another
/// epoch ends a term the same leader won again in the middle, and leaves
/// the open one unread. Then, with an epoch or without, the goodbye ends
/// the term only when nothing says the term was lost in the middle, before
/// it: no election was read after the middle before it (one within
/// [`GOODBYE_GRACE`] before it still lets it count, as without a gap), and
/// no election key names someone whose election was not read after the
/// middle (someone elected in the middle). A goodbye of the term written
/// after that (a partitioned leader's) is late, and its time is not the
/// term's end; one without an epoch may be a standby's `deregistered`.
/// Only a goodbye without an epoch (an older SDK's) can be taken for the
/// open term when it ends a term the same leader won again in the middle.
fn goodbye_after_the_middle<'a>(
    open: &LeadershipTerm,
    after: &'a [Lifecycle],
    bucket_created: Option<DateTime<Utc>>,
    holders: &[Holder],
) -> Option<&'a Lifecycle> {
    let sorted = in_order(after, bucket_created);
    let &(placed, goodbye) = sorted
        .iter()
        .find(|(_, r)| r.kind != Change::Elected && r.instance == open.instance_id)?;
    if let (Some(said), Some(term)) = (goodbye.epoch, open.epoch)
        && said != term
    {
        return None;
    }
    let elected_before = sorted.iter().any(|&(at, r)| {
        let retold = r.instance == open.instance_id && r.epoch == open.epoch;
        r.kind == Change::Elected && !retold && at + GOODBYE_GRACE < placed
    });
    let elected_unseen = holders.iter().any(|h| {
        let the_open_term = h.instance_id == open.instance_id && Some(h.epoch) == open.epoch;
        let read_after = after.iter().any(|r| {
            r.kind == Change::Elected && r.instance == h.instance_id && r.epoch == Some(h.epoch)
        });
        !the_open_term && !read_after
    });
    (!elected_before && !elected_unseen).then_some(goodbye)
}

/// Whether `goodbye` names a fencing epoch other than `term`'s: it is
/// then another term's goodbye, whatever its time. One without an epoch
/// (an older SDK's), or a term without one, may be the term's.
fn names_another_term(goodbye: &Lifecycle, term: &LeadershipTerm) -> bool {
    matches!((goodbye.epoch, term.epoch), (Some(said), Some(epoch)) if said != epoch)
}

/// Whether `goodbye`, naming another epoch than `term` (of the same
/// instance), is the goodbye of a later term of that instance whose
/// election is not among `sorted`: it names a higher epoch, and no
/// election of that instance at that epoch was read. One whose election
/// was read names an earlier term (an earlier election bucket's, when the
/// bucket was created again): a later term's election would have been
/// placed before it (see [`in_order`]) and opened that term.
fn names_a_later_unread_term(
    goodbye: &Lifecycle,
    term: &LeadershipTerm,
    sorted: &[(DateTime<Utc>, &Lifecycle)],
) -> bool {
    let (Some(said), Some(epoch)) = (goodbye.epoch, term.epoch) else {
        return false;
    };
    said > epoch
        && !sorted.iter().any(|&(_, r)| {
            r.kind == Change::Elected && r.instance == goodbye.instance && r.epoch == Some(said)
        })
}

/// The goodbye, placed within [`GOODBYE_GRACE`] after the election at
/// `index` of `sorted`, in which `term`'s leader let go of a later term of
/// its own whose election was not read (see [`names_a_later_unread_term`]):
/// one naming an epoch above `named` (the latest its leader was known to
/// let go of) and below the election's (a goodbye naming a higher epoch is
/// of a term after this election). The last such, its latest letting go.
fn goodbye_of_an_unread_term_just_after<'a>(
    sorted: &[(DateTime<Utc>, &'a Lifecycle)],
    index: usize,
    term: &LeadershipTerm,
    named: Option<u64>,
) -> Option<&'a Lifecycle> {
    let &(placed, election) = sorted.get(index)?;
    let (Some(named), Some(elected)) = (named, election.epoch) else {
        return None;
    };
    sorted[index + 1..]
        .iter()
        .take_while(|(later, _)| *later <= placed + GOODBYE_GRACE)
        .map(|&(_, later)| later)
        .filter(|later| {
            later.instance == term.instance_id
                && later.kind != Change::Elected
                && later
                    .epoch
                    .is_some_and(|said| said > named && said < elected)
                && names_a_later_unread_term(later, term, sorted)
        })
        .last()
}

/// Whether the leader elected at `index` of `sorted` was itself restarted
/// after its predecessor let go at `left`, as everything is in a stop and
/// start of the whole fleet: the time between is then a restart's (no
/// leader while nothing ran), not how long a running standby took to take
/// over. It was when its instance stopped (`deregistered`) at or after
/// `left`, before the election, or when a process of its instance
/// registered (`registered`, among `registrations`) at or after `left` and
/// no later than its election (on its own clock): that process was started
/// after the predecessor let go, so no standby that ran then took over. A
/// stopping leader steps down before it deregisters (it waits for its
/// requests, resigns, then deregisters), so its goodbye comes after its
/// standbys', and only the second sign tells a restart then.
///
/// Only after a goodbye that frees the key at once (not a lapse): a
/// running standby takes it within milliseconds. After a crash or a lapse
/// the key is free only when its lease runs out, and a standby restarted
/// meanwhile may win it as well as a running one.
fn restarted(
    sorted: &[(DateTime<Utc>, &Lifecycle)],
    index: usize,
    registrations: &[&Lifecycle],
    left: DateTime<Utc>,
) -> bool {
    let Some(&(_, elected)) = sorted.get(index) else {
        return false;
    };
    let stopped = sorted[..index].iter().any(|&(at, earlier)| {
        earlier.instance == elected.instance && earlier.kind == Change::Stopped && at >= left
    });
    let started = registrations
        .iter()
        .any(|r| r.instance == elected.instance && (left..=elected.at).contains(&r.at));
    stopped || started
}

/// Whether elections stamped `a` and `b` are of the same election bucket,
/// as far as its creation (`bucket_created`, see [`in_order`]) tells.
fn same_bucket(bucket_created: Option<DateTime<Utc>>, a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    bucket_created.is_none_or(|created| {
        let current = |at: DateTime<Utc>| at >= created - CREATION_SKEW;
        current(a) == current(b)
    })
}

/// The basis of a hand-over measured from a goodbye.
fn notice(restarted: bool) -> &'static str {
    if restarted { "restart" } else { "notice" }
}

fn reason(kind: Change) -> &'static str {
    match kind {
        Change::Resigned => "resigned",
        Change::Lapsed => "lapsed",
        Change::Stopped => "stopped",
        Change::Elected => "superseded",
        // Not a goodbye: no term ends with one (see `in_order`).
        Change::Registered => "registered",
    }
}

/// Milliseconds from `from` to `to`, never negative.
fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(0).max(0) as f64) / 1000.0
}

/// A temporary consumer of `subject` delivering from `start` on, under
/// `turn`, and how many messages it has pending.
async fn reader(
    stream: &jetstream::stream::Stream,
    subject: &str,
    start: DateTime<Utc>,
    turn: &ReadTurn,
) -> Result<(Reader, u64), async_nats::Error> {
    let start_time = time::OffsetDateTime::from_unix_timestamp_nanos(
        start.timestamp_nanos_opt().unwrap_or(0).into(),
    )?;
    Ok(Reader::open(
        stream,
        subject,
        DeliverPolicy::ByStartTime { start_time },
        turn,
    )
    .await?)
}

/// The leadership records of every instance of `service` since `since`,
/// and where records were left out (see [`read_newest`]) because the
/// window held more log records than [`MAX_SCAN`].
async fn read_lifecycle(
    js: &jetstream::Context,
    service: &str,
    since: DateTime<Utc>,
    turn: &ReadTurn,
) -> Result<(Vec<Lifecycle>, Option<Gap>), async_nats::Error> {
    let stream = js.get_stream(LOG_STREAM).await?;
    let prefix = format!("aegis.log.{service}.");
    let (messages, gap) =
        read_newest(&stream, &format!("{prefix}*"), since, MAX_SCAN, turn).await?;
    let lifecycle = |m: &jetstream::Message| {
        let instance = m.subject.as_str().strip_prefix(&prefix)?;
        let record: LogRecord = serde_json::from_slice(&m.payload).ok()?;
        Lifecycle::from_record(instance, &record)
    };
    let split = gap.map_or(messages.len(), |g| g.at.min(messages.len()));
    let records: Vec<Lifecycle> = messages[..split].iter().filter_map(lifecycle).collect();
    let gap = gap.map(|g| Gap {
        at: records.len(),
        since: g.since,
    });
    let mut records = records;
    records.extend(messages[split..].iter().filter_map(lifecycle));
    Ok((records, gap))
}

/// The messages on `subject` (wildcards allowed) stored since `since`,
/// oldest first, at most `limit`: all of them (and `None`), or when more
/// are pending, the oldest half and the newest half of `limit`, and where
/// those in between were left out (a [`Gap`] over the messages).
///
/// The lifecycle records share their subjects with every WARN/ERROR log
/// record, so during an incident the window can hold far more than one
/// request reads. Both ends matter: the newest for the latest elections,
/// the oldest for a leader elected before the flood who leads on. The
/// start of the newest half is found by bisection on the pending count of
/// temporary consumers (a few dozen at most), one at a time under `turn`,
/// each deleted at once.
async fn read_newest(
    stream: &jetstream::stream::Stream,
    subject: &str,
    since: DateTime<Utc>,
    limit: usize,
    turn: &ReadTurn,
) -> Result<(Vec<jetstream::Message>, Option<Gap>), async_nats::Error> {
    let (consumer, pending) = reader(stream, subject, since, turn).await?;
    if pending <= limit as u64 {
        let messages = consumer.read(pending as usize).await;
        consumer.close().await;
        return Ok((messages?, None));
    }
    let oldest_half = (limit / 2).max(1);
    let newest_half = limit.saturating_sub(oldest_half).max(1) as u64;
    let oldest = consumer.read(oldest_half).await;
    consumer.close().await;
    let mut messages = oldest?;
    let sequence = |m: &jetstream::Message| m.info().ok().map(|i| i.stream_sequence);
    let Some(mut lo) = messages.first().and_then(sequence) else {
        // Everything pending was trimmed meanwhile.
        return Ok((
            Vec::new(),
            Some(Gap {
                at: 0,
                since: Utc::now(),
            }),
        ));
    };
    let gap = Gap {
        at: messages.len(),
        since: messages
            .last()
            .and_then(|m| m.info().ok())
            .map_or(since, |i| {
                DateTime::<Utc>::from_timestamp_nanos(i.published.unix_timestamp_nanos() as i64)
            }),
    };
    let read_up_to = messages.last().and_then(sequence).unwrap_or(lo);
    // Invariant: more than `newest_half` pending from `lo`, at most that
    // from `hi` (nothing past the stream's last message).
    let last = stream.get_info().await?.state.last_sequence;
    let mut hi = last.max(lo).saturating_add(1);
    while hi > lo + 1 {
        let mid = lo + (hi - lo) / 2;
        let (probe, p) = Reader::open(
            stream,
            subject,
            DeliverPolicy::ByStartSequence {
                start_sequence: mid,
            },
            turn,
        )
        .await?;
        probe.close().await;
        if p > newest_half {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let (consumer, pending) = Reader::open(
        stream,
        subject,
        DeliverPolicy::ByStartSequence {
            start_sequence: hi.max(read_up_to + 1),
        },
        turn,
    )
    .await?;
    let newest = consumer.read(pending.min(newest_half) as usize).await;
    consumer.close().await;
    messages.extend(newest?);
    Ok((messages, Some(gap)))
}

/// When `instance`'s last metrics snapshot before `before` was stored, of
/// the process that was running when its term began at `began`.
///
/// The process matters when the same instance id wins again after a
/// restart: the new process may publish before its election, and that is
/// not a sign of life of the old term's leader.
async fn last_snapshot_before(
    js: &jetstream::Context,
    service: &str,
    instance: &str,
    began: DateTime<Utc>,
    before: DateTime<Utc>,
    turn: &ReadTurn,
) -> Result<Option<DateTime<Utc>>, async_nats::Error> {
    let stream = js.get_stream(METRICS_STREAM).await?;
    // The newest snapshot of the subject first, in one request: when the
    // instance has published nothing since (it died, or everything was
    // stopped for longer than the lookback), that is its last sign of life.
    let subject = metrics_subject(service, instance);
    if let Ok(last) = stream.get_last_raw_message_by_subject(&subject).await
        && let Some(at) = sign_of_the_term(last.time, &last.payload, began, before)
    {
        return Ok(Some(at));
    }
    // A later process under the same id published since (re-elected, or
    // restarted as a standby): look back from `before` for the term's own.
    let (consumer, pending) = reader(
        &stream,
        &subject,
        (before - LAST_SEEN_LOOKBACK).max(began),
        turn,
    )
    .await?;
    let messages = consumer.read((pending as usize).min(LAST_SEEN_SCAN)).await;
    consumer.close().await;
    Ok(messages?
        .iter()
        .filter_map(|m| sign_of_the_term(m.info().ok()?.published, &m.payload, began, before))
        .max())
}

/// When the snapshot `payload`, stored at `stored`, was taken, if that was
/// before `before` and by the process that was running when the term began
/// at `began` (not one started later under the same id).
fn sign_of_the_term(
    stored: time::OffsetDateTime,
    payload: &[u8],
    began: DateTime<Utc>,
    before: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let at = DateTime::<Utc>::from_timestamp_nanos(stored.unix_timestamp_nanos() as i64);
    let uptime = serde_json::from_slice::<MetricsSnapshot>(payload).map_or(0.0, |s| s.uptime_secs);
    // A publisher that reports no uptime (0), or one no process can have
    // (negative, not a number, reaching past the calendar), cannot be
    // told apart.
    let started = (uptime.is_finite() && uptime > 0.0)
        .then(|| chrono::Duration::try_milliseconds((uptime * 1000.0) as i64))
        .flatten()
        .and_then(|up| at.checked_sub_signed(up));
    (at < before && started.is_none_or(|s| s <= began + PROCESS_START_SLACK)).then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(1_800_000_000_000 + ms).unwrap()
    }

    fn holder(instance: &str, epoch: u64) -> Holder {
        Holder {
            instance_id: instance.to_owned(),
            epoch,
        }
    }

    fn rec(ms: i64, instance: &str, kind: Change, epoch: Option<u64>) -> Lifecycle {
        Lifecycle {
            at: at(ms),
            instance: instance.to_owned(),
            kind,
            epoch,
        }
    }

    #[test]
    fn a_graceful_hand_over_is_measured_from_the_goodbye() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(5)),
            rec(10_000, "a", Change::Resigned, None),
            rec(10_040, "b", Change::Elected, Some(9)),
        ]);
        assert_eq!(terms.len(), 2);
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[0].ended_at, Some(at(10_000)));
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));
        assert_eq!(terms[1].handover_ms, Some(40.0));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].epoch, Some(9));
        assert_eq!(terms[1].ended_at, None);
    }

    /// A restart of the whole fleet (every instance stopped, then started
    /// again 17 s later) is no hand-over of 17 s: the new leader was itself
    /// stopped after the old one let go, so the figure is a restart's.
    #[test]
    fn a_leader_elected_after_its_own_restart_is_no_hand_over() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(5)),
            rec(10_000, "a", Change::Resigned, Some(5)),
            rec(10_001, "a", Change::Stopped, Some(5)),
            rec(10_002, "b", Change::Stopped, None),
            rec(10_003, "c", Change::Stopped, None),
            rec(26_766, "c", Change::Elected, Some(90)),
            rec(40_000, "c", Change::Resigned, Some(90)),
            rec(40_001, "c", Change::Stopped, Some(90)),
            rec(40_002, "a", Change::Stopped, None),
            rec(59_530, "a", Change::Elected, Some(170)),
            rec(70_000, "a", Change::Resigned, Some(170)),
            rec(70_004, "b", Change::Elected, Some(180)),
        ]);
        assert_eq!(terms.len(), 4, "{terms:?}");
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));
        assert_eq!(terms[1].handover_ms, Some(16_766.0));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("restart"));
        assert_eq!(terms[2].handover_basis.as_deref(), Some("restart"));
        // A hand-over to a standby that kept running is one.
        assert_eq!(terms[3].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[3].handover_ms, Some(4.0));
    }

    /// A stop of the whole showcase as it happens now: the leader steps
    /// down (waits for its requests, resigns, deregisters, waits its drain
    /// grace), so the standbys' goodbyes come first and its own last. Then
    /// new processes start, and one wins 206 ms after the old leader let
    /// go: its process started after that, so no running standby took
    /// over, and the time is a restart's, not a hand-over's.
    #[test]
    fn a_leader_whose_process_started_after_the_let_go_was_restarted() {
        let terms = build_terms(&[
            rec(-60_000, "order-1", Change::Registered, None),
            rec(-60_000, "order-2", Change::Registered, None),
            rec(-60_000, "order-3", Change::Registered, None),
            rec(0, "order-2", Change::Elected, Some(5)),
            rec(10_000, "order-1", Change::Stopped, None),
            rec(10_010, "order-3", Change::Stopped, None),
            rec(10_291, "order-2", Change::Resigned, Some(5)),
            rec(10_292, "order-2", Change::Stopped, Some(5)),
            rec(10_400, "order-1", Change::Registered, None),
            rec(10_405, "order-3", Change::Registered, None),
            rec(10_410, "order-2", Change::Registered, None),
            rec(10_497, "order-1", Change::Elected, Some(90)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[1].handover_from.as_deref(), Some("order-2"));
        assert_eq!(terms[1].handover_ms, Some(206.0));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("restart"));
        // Its registration is no goodbye: the new term is open.
        assert_eq!(terms[1].ended_at, None);
        assert_eq!(terms[1].end_reason, None);
    }

    /// A standby that registered long before the leader let go, and took
    /// over, is a hand-over; so is one that registers again (another
    /// process's, or the same one's) after its election.
    #[test]
    fn a_standby_registered_before_the_let_go_hands_over() {
        let terms = build_terms(&[
            rec(-5_000, "b", Change::Registered, None),
            rec(0, "a", Change::Elected, Some(5)),
            rec(10_000, "a", Change::Resigned, Some(5)),
            rec(10_001, "a", Change::Stopped, Some(5)),
            rec(10_040, "b", Change::Elected, Some(9)),
            rec(10_050, "b", Change::Registered, None),
            rec(10_060, "a", Change::Registered, None),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[1].handover_ms, Some(40.0));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].ended_at, None);
    }

    /// A standby restarted alone (stopped and registered again) long before
    /// its leader let go is a running standby when it takes over: after a
    /// stop, a hand-over (`notice`); after a crash, measured from the
    /// leader's last sign of life (`lastSeen`).
    #[test]
    fn a_standby_restarted_alone_long_before_still_hands_over() {
        let before = [
            rec(-5_000, "b", Change::Registered, None),
            rec(0, "a", Change::Elected, Some(5)),
            rec(3_000, "b", Change::Stopped, None),
            rec(3_500, "b", Change::Registered, None),
        ];
        let mut stopped = before.to_vec();
        stopped.extend([
            rec(20_000, "a", Change::Stopped, Some(5)),
            rec(20_040, "b", Change::Elected, Some(9)),
        ]);
        let terms = build_terms(&stopped);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[1].handover_ms, Some(40.0));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        let mut crashed = before.to_vec();
        crashed.push(rec(20_000, "b", Change::Elected, Some(9)));
        let terms = build_terms(&crashed);
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
    }

    /// A leader that crashed, and then everything stopped and started: the
    /// successor is measured from the crashed leader's last sign of life
    /// (`lastSeen`, by the caller), an upper bound the timeline says is
    /// one. It stays so: a restarted standby may also win the key a
    /// running one would have won when the lease ran out, so a
    /// registration after a crash does not show that nobody could take
    /// over, as it does after a goodbye (the key is free at once).
    #[test]
    fn after_a_crash_a_restarted_successor_is_measured_from_the_last_sign_of_life() {
        let terms = build_terms(&[
            rec(-5_000, "b", Change::Registered, None),
            rec(0, "a", Change::Elected, Some(5)),
            rec(5_000, "b", Change::Stopped, None),
            rec(30_000, "b", Change::Registered, None),
            rec(30_100, "b", Change::Elected, Some(9)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
        assert_eq!(terms[1].handover_ms, None);
    }

    /// A registration is no goodbye: not in a truncated window either,
    /// where a term open at the unread middle ends at its leader's first
    /// goodbye read after it.
    #[test]
    fn a_registration_after_the_middle_ends_no_term() {
        let records = [
            rec(0, "a", Change::Elected, Some(5)),
            rec(50_000, "a", Change::Registered, None),
            rec(60_000, "a", Change::Stopped, Some(5)),
        ];
        let gap = Gap {
            at: 1,
            since: at(1_000),
        };
        let terms = build_terms_around(&records, Some(gap), None, &[]);
        assert_eq!(terms.len(), 1, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("stopped"));
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
    }

    #[test]
    fn a_goodbye_written_just_after_the_new_election_still_counts() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(5)),
            rec(10_000, "b", Change::Elected, Some(9)),
            rec(10_030, "a", Change::Stopped, None),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("stopped"));
        assert_eq!(terms[0].ended_at, Some(at(10_000)));
        assert_eq!(terms[1].handover_ms, Some(0.0));
    }

    #[test]
    fn a_crashed_leader_is_superseded_and_its_successor_measured_later() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(5)),
            rec(20_000, "b", Change::Elected, Some(9)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[0].ended_at, Some(at(20_000)));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
        assert_eq!(terms[1].handover_ms, None);
    }

    #[test]
    fn order_of_input_does_not_matter_and_a_repeated_election_keeps_the_term() {
        // The same epoch told twice (a replayed record) is one term; a new
        // epoch would be a new one.
        let terms = build_terms(&[
            rec(5_000, "a", Change::Elected, Some(5)),
            rec(0, "a", Change::Elected, Some(5)),
            rec(9_000, "b", Change::Resigned, None),
        ]);
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].epoch, Some(5));
        // A goodbye of someone who is not the leader closes nothing.
        assert_eq!(terms[0].ended_at, None);
    }

    /// A leader whose lease ran out unrenewed stops serving (a
    /// `leadership_lost` naming its epoch) and serves again at the same
    /// epoch once a renewal commits (an `elected` at that epoch): the key
    /// stayed its own. The new row says so, with how long it did not
    /// serve, rather than a hand-over from itself.
    #[test]
    fn a_leader_serving_again_at_its_epoch_after_a_lapse_is_resumed() {
        // As an SDK that says the lease lapsed writes it, and as one that
        // does not.
        for (lost, ended) in [(Change::Lapsed, "lapsed"), (Change::Resigned, "resigned")] {
            let terms = build_terms(&[
                rec(0, "a", Change::Elected, Some(87)),
                rec(10_000, "a", lost, Some(87)),
                rec(11_701, "a", Change::Elected, Some(87)),
            ]);
            assert_eq!(terms.len(), 2, "{terms:?}");
            assert_eq!(terms[0].end_reason.as_deref(), Some(ended));
            assert_eq!(terms[1].handover_basis.as_deref(), Some("resumed"));
        }
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(87)),
            rec(10_000, "a", Change::Lapsed, Some(87)),
            rec(11_701, "a", Change::Elected, Some(87)),
        ]);
        assert_eq!(terms[0].ended_at, Some(at(10_000)));
        assert_eq!(terms[1].epoch, Some(87));
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("resumed"));
        assert_eq!(terms[1].handover_ms, Some(1_701.0));
        assert_eq!(terms[1].ended_at, None);

        // Another instance elected after the pause is a hand-over as ever,
        // and so is the same instance at a new epoch; the lapse stays said.
        for next in [("b", 88), ("a", 88)] {
            let terms = build_terms(&[
                rec(0, "a", Change::Elected, Some(87)),
                rec(10_000, "a", Change::Lapsed, Some(87)),
                rec(11_701, next.0, Change::Elected, Some(next.1)),
            ]);
            assert_eq!(terms[0].end_reason.as_deref(), Some("lapsed"));
            assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        }
    }

    /// Epochs start over in a new election bucket: a leader that lost its
    /// key when the bucket was deleted and won epoch 1 of the new one did
    /// not serve again at the key it held, whatever the epochs say.
    #[test]
    fn the_same_epoch_in_a_new_election_bucket_is_no_resumption() {
        let records = [
            rec(0, "a", Change::Elected, Some(1)),
            rec(10_000, "a", Change::Lapsed, Some(1)),
            rec(70_000, "a", Change::Elected, Some(1)),
        ];
        let terms = build_terms_since(&records, Some(at(65_000)));
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(
            terms[1].handover_basis.as_deref(),
            Some("notice"),
            "{terms:?}"
        );
        // The same records in one bucket are.
        let terms = build_terms_since(&records, Some(at(-5_000)));
        assert_eq!(
            terms[1].handover_basis.as_deref(),
            Some("resumed"),
            "{terms:?}"
        );
    }

    /// A lapse frees no key: the lapsed leader's key stands until its
    /// lease runs out, so an instance registered meanwhile that wins it
    /// then is no restart of the fleet, and the wait is not "without a
    /// leader while nothing ran".
    #[test]
    fn a_successor_started_during_a_lapse_is_no_restart() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(7)),
            rec(10_000, "a", Change::Lapsed, Some(7)),
            rec(10_100, "b", Change::Registered, None),
            rec(10_600, "b", Change::Elected, Some(8)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("lapsed"));
        assert_eq!(
            terms[1].handover_basis.as_deref(),
            Some("notice"),
            "{terms:?}"
        );
        assert_eq!(terms[1].handover_ms, Some(600.0));
    }

    #[test]
    fn the_same_instance_re_elected_with_a_new_epoch_starts_a_new_term() {
        // A restart of everything: a led with epoch 5, was gone, and won
        // the key again with epoch 9 (no goodbye was written for epoch 5).
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(5)),
            rec(60_000, "a", Change::Elected, Some(9)),
            rec(60_200, "a", Change::Stopped, None),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].epoch, Some(5));
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[1].epoch, Some(9));
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
        // The goodbye after the new election is the new term's.
        assert_eq!(terms[1].end_reason.as_deref(), Some("stopped"));
        assert_eq!(terms[1].ended_at, Some(at(60_200)));
    }

    /// A goodbye naming its epoch is that term's only: the instance's
    /// goodbye of epoch 3, stamped by a clock ahead after it won the key
    /// again at epoch 4, leaves the new term open; one written just after
    /// the new election (within the grace) is the old term's notice.
    #[test]
    fn a_goodbye_naming_an_earlier_epoch_leaves_the_new_term_open() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(10_000, "a", Change::Resigned, Some(3)),
            rec(5_000, "a", Change::Elected, Some(4)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[0].ended_at, Some(at(5_000)));
        assert_eq!(terms[1].epoch, Some(4));
        assert_eq!(terms[1].ended_at, None, "{terms:?}");

        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(5_000, "a", Change::Elected, Some(4)),
            rec(5_300, "a", Change::Stopped, Some(3)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("stopped"));
        assert_eq!(terms[0].ended_at, Some(at(5_000)));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].ended_at, None, "{terms:?}");

        // The new term's own goodbye still ends it.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(5_000, "a", Change::Elected, Some(4)),
            rec(9_000, "a", Change::Resigned, Some(4)),
        ]);
        assert_eq!(terms[1].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[1].ended_at, Some(at(9_000)));
    }

    /// A goodbye naming a later epoch than the open term of its leader
    /// shows that the leader lost that term before it won the later one,
    /// whose `elected` record was not read (the SDK's telemetry outbox
    /// drops its oldest records when full). The term ended some time
    /// after its election, before the goodbye: `unread`, at its election.
    #[test]
    fn a_goodbye_naming_a_later_epoch_ends_the_open_term() {
        for (kind, said) in [(Change::Resigned, "resigned"), (Change::Stopped, "stopped")] {
            let terms = build_terms(&[
                rec(0, "a", Change::Elected, Some(3)),
                rec(100_000, "a", kind, Some(5)),
            ]);
            assert_eq!(terms.len(), 1, "{terms:?}");
            assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
            assert_eq!(terms[0].ended_at, Some(at(0)), "{terms:?}");
            // Naming the term's own epoch, it is its end, as before.
            let terms = build_terms(&[
                rec(0, "a", Change::Elected, Some(3)),
                rec(100_000, "a", kind, Some(3)),
            ]);
            assert_eq!(terms[0].end_reason.as_deref(), Some(said), "{terms:?}");
            assert_eq!(terms[0].ended_at, Some(at(100_000)));
        }
        // Another instance's goodbye says nothing of a's term.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(100_000, "b", Change::Stopped, Some(5)),
        ]);
        assert_eq!(terms[0].ended_at, None, "{terms:?}");
        // Known, the old bucket's goodbye naming a higher epoch, stamped
        // after the new bucket's election by a clock ahead, is an earlier
        // term's (its election was read): the new term leads on.
        let records = [
            rec(0, "a", Change::Elected, Some(57)),
            rec(3_600_000, "a", Change::Elected, Some(1)),
            rec(3_600_300, "a", Change::Resigned, Some(57)),
            rec(3_700_000, "a", Change::Resigned, Some(57)),
        ];
        let terms = build_terms_since(&records, Some(at(1_800_000)));
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[1].epoch, Some(1));
        assert_eq!(terms[1].ended_at, None, "{terms:?}");
    }

    /// A term ended `unread` by its leader's goodbye naming a later epoch
    /// (whose election was not read): the next leader's hand-over is
    /// measured from that goodbye, the previous leader letting go, not
    /// from the unread term's `endedAt` (its own election, a time it
    /// ended after).
    #[test]
    fn a_hand_over_after_an_unread_end_is_measured_from_the_goodbye() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(100_000, "a", Change::Resigned, Some(5)),
            rec(101_000, "b", Change::Elected, Some(6)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"), "{terms:?}");
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].handover_ms, Some(1_000.0), "{terms:?}");
        // Two later terms of a unread: measured from the last goodbye.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(100_000, "a", Change::Resigned, Some(5)),
            rec(200_000, "a", Change::Resigned, Some(7)),
            rec(201_000, "b", Change::Elected, Some(8)),
        ]);
        assert_eq!(terms[1].handover_ms, Some(1_000.0), "{terms:?}");
        // A term that resigned, then a later term of its leader unread.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(10_000, "a", Change::Resigned, Some(3)),
            rec(100_000, "a", Change::Resigned, Some(5)),
            rec(100_500, "b", Change::Elected, Some(6)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[0].ended_at, Some(at(10_000)));
        assert_eq!(terms[1].handover_ms, Some(500.0), "{terms:?}");
        // A stop after the goodbye at the same epoch is not a later
        // letting go: measured from the first.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(100_000, "a", Change::Resigned, Some(5)),
            rec(100_400, "a", Change::Stopped, Some(5)),
            rec(101_000, "b", Change::Elected, Some(6)),
        ]);
        assert_eq!(terms[1].handover_ms, Some(1_000.0), "{terms:?}");
    }

    /// A goodbye naming a later epoch of the open term's leader (whose
    /// election was not read), stamped just after the next election
    /// (within the grace): the open term ended `unread`, not superseded
    /// (its leader won again and let go), and the hand-over is `notice`
    /// from that goodbye. Stamped after the election it follows, it gives
    /// 0 ms, as any goodbye written just after the new election does.
    #[test]
    fn a_later_epoch_goodbye_just_after_the_next_election_ends_the_term_unread() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(101_000, "b", Change::Elected, Some(6)),
            rec(101_500, "a", Change::Resigned, Some(5)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        assert_eq!(terms[0].ended_at, Some(at(0)), "{terms:?}");
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"), "{terms:?}");
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].handover_ms, Some(0.0), "{terms:?}");
        assert_eq!(terms[1].ended_at, None, "{terms:?}");
        // The term's own goodbye in the grace still gives its end; a later
        // unread term's goodbye after it is when its leader let go.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(100_000, "b", Change::Elected, Some(6)),
            rec(100_200, "a", Change::Resigned, Some(3)),
            rec(100_600, "a", Change::Resigned, Some(5)),
        ]);
        assert_eq!(
            terms[0].end_reason.as_deref(),
            Some("resigned"),
            "{terms:?}"
        );
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].handover_ms, Some(0.0), "{terms:?}");
        // A resigned term, then a later term of its leader unread whose
        // goodbye is stamped just after the next election: measured from
        // that goodbye, not from the first resignation.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(10_000, "a", Change::Resigned, Some(3)),
            rec(101_000, "b", Change::Elected, Some(6)),
            rec(101_500, "a", Change::Resigned, Some(5)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[0].ended_at, Some(at(10_000)));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("notice"));
        assert_eq!(terms[1].handover_ms, Some(0.0), "{terms:?}");
        // A goodbye naming an epoch after the new election's is of a term
        // after it, not a letting go before it: a was superseded.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(101_000, "b", Change::Elected, Some(6)),
            rec(101_500, "a", Change::Resigned, Some(7)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
        // Past the grace it is no notice of this hand-over.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(101_000, "b", Change::Elected, Some(6)),
            rec(102_500, "a", Change::Resigned, Some(5)),
        ]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[1].handover_basis.as_deref(), Some("lastSeen"));
    }

    /// A clock behind and a lost election together: a's epoch-5 election
    /// is floored after b's (epochs order elections), a's goodbye of
    /// epoch 7 (whose election was lost) is stamped before that floor.
    /// Stamped after a's own epoch-5 election on a's own clock, it still
    /// ends that term (`unread`), wherever the floor put the election.
    #[test]
    fn a_later_epoch_goodbye_ends_a_floored_term_of_its_leader() {
        let terms = build_terms(&[
            rec(1_000, "b", Change::Elected, Some(4)),
            rec(1_001, "b", Change::Resigned, Some(4)),
            rec(992, "a", Change::Elected, Some(5)),
            rec(995, "a", Change::Resigned, Some(7)),
        ]);
        let last = terms.last().expect("terms");
        assert_eq!(last.epoch, Some(5), "{terms:?}");
        assert!(last.ended_at.is_some(), "{terms:?}");
        assert_eq!(last.end_reason.as_deref(), Some("unread"), "{terms:?}");
        // b's term is not touched.
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        // An old bucket's goodbye naming a higher epoch, stamped before
        // the new bucket's election of the same leader, ends nothing.
        let terms = build_terms_since(
            &[
                rec(0, "a", Change::Resigned, Some(57)),
                rec(10_000, "a", Change::Elected, Some(1)),
            ],
            Some(at(5_000)),
        );
        assert_eq!(terms.len(), 1, "{terms:?}");
        assert_eq!(terms[0].ended_at, None, "{terms:?}");
    }

    /// A leader's clock behind the previous leader's by more than its
    /// term lasted: its election is placed no earlier than the one before
    /// it (epochs order elections), and its goodbye naming that epoch no
    /// earlier than that election, so the goodbye still ends its term.
    #[test]
    fn a_goodbye_stamped_before_its_floored_election_still_ends_its_term() {
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(3)),
            rec(1_000, "b", Change::Elected, Some(4)),
            rec(3_000, "b", Change::Resigned, Some(4)),
            // a's clock is about 2.6 s behind b's.
            rec(500, "a", Change::Elected, Some(5)),
            rec(800, "a", Change::Resigned, Some(5)),
        ]);
        let last = terms.last().expect("terms");
        assert_eq!(last.epoch, Some(5), "{terms:?}");
        assert_eq!(last.end_reason.as_deref(), Some("resigned"), "{terms:?}");
        assert_eq!(last.ended_at, Some(at(800)), "{terms:?}");
        // a's epoch-3 term is not ended by the goodbye of epoch 5.
        assert_eq!(terms[0].epoch, Some(3));
        assert_ne!(
            terms[0].end_reason.as_deref(),
            Some("resigned"),
            "{terms:?}"
        );
        // The election bucket was created again and when is not known:
        // epochs alone order the elections (the old bucket's 57 after
        // the new one's 1), and no term is left open: the goodbye of 57
        // is placed after its election.
        let terms = build_terms(&[
            rec(0, "a", Change::Elected, Some(57)),
            rec(50_000, "a", Change::Resigned, Some(57)),
            rec(51_000, "a", Change::Elected, Some(1)),
            rec(100_000, "a", Change::Resigned, Some(1)),
        ]);
        assert!(terms.iter().all(|t| t.ended_at.is_some()), "{terms:?}");
    }

    /// Each record's time is its instance's own clock; the fencing epoch
    /// is the order the key was won in. A new leader whose clock is behind
    /// the crashed one's by more than the hand-over still leads now.
    #[test]
    fn elections_are_ordered_by_epoch_when_the_clocks_disagree() {
        let terms = build_terms(&[
            rec(10_000, "a", Change::Elected, Some(5)),
            // Won after a's, written by a host 5 s behind.
            rec(7_000, "b", Change::Elected, Some(9)),
        ]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].instance_id, "a");
        assert_eq!(terms[0].end_reason.as_deref(), Some("superseded"));
        let ended = terms[0].ended_at.expect("a's term ended");
        assert!(ended >= terms[0].elected_at, "{terms:?}");
        assert_eq!(terms[1].instance_id, "b");
        assert_eq!(terms[1].ended_at, None, "b leads now: {terms:?}");
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));

        // Goodbyes keep their place among the elections.
        let terms = build_terms(&[
            rec(50_000, "c", Change::Elected, Some(3)),
            rec(60_000, "c", Change::Resigned, None),
            rec(100_000, "a", Change::Elected, Some(5)),
            rec(40_000, "b", Change::Elected, Some(9)),
        ]);
        let order: Vec<_> = terms.iter().map(|t| t.instance_id.as_str()).collect();
        assert_eq!(order, ["c", "a", "b"], "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("resigned"));
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
        assert_eq!(terms[1].end_reason.as_deref(), Some("superseded"));
        assert_eq!(terms[2].ended_at, None, "{terms:?}");
    }

    /// Epochs start over when the election bucket is created again (a
    /// fleet stopped and started on fresh data): an election from before
    /// the bucket's creation is ordered before the ones after it, whatever
    /// its epoch, and the new leader is the current one.
    #[test]
    fn elections_of_an_earlier_bucket_come_before_the_new_buckets() {
        let records = [
            rec(0, "a", Change::Elected, Some(900)),
            rec(10_000, "a", Change::Stopped, None),
            rec(3_600_000, "b", Change::Elected, Some(5)),
        ];
        let terms = build_terms_since(&records, Some(at(1_800_000)));
        let order: Vec<_> = terms.iter().map(|t| t.instance_id.as_str()).collect();
        assert_eq!(order, ["a", "b"], "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("stopped"));
        assert_eq!(terms[1].ended_at, None, "b leads now: {terms:?}");

        // The new bucket's first election, by a host whose clock is 2 s
        // behind the server's, is still the new bucket's.
        let records = [
            rec(0, "a", Change::Elected, Some(900)),
            rec(10_000, "a", Change::Stopped, None),
            rec(3_598_000, "b", Change::Elected, Some(1)),
            rec(3_610_000, "c", Change::Elected, Some(7)),
        ];
        let terms = build_terms_since(&records, Some(at(3_600_000)));
        let order: Vec<_> = terms.iter().map(|t| t.instance_id.as_str()).collect();
        assert_eq!(order, ["a", "b", "c"], "{terms:?}");
    }

    /// The review's case: A is elected before a flood of warnings (read:
    /// the oldest half), A stops and B is elected inside the flood (the
    /// unread middle), and the newest half holds only warnings. A must not
    /// be shown as leading now.
    #[test]
    fn a_term_open_at_the_unread_middle_is_not_current() {
        let records = [rec(0, "a", Change::Elected, Some(3))];
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        let terms = build_terms_around(&records, Some(gap), None, &[]);
        assert_eq!(terms.len(), 1);
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
        // Unless its key names it still: then it led through the middle.
        let terms = build_terms_around(&records, Some(gap), None, &[holder("a", 3)]);
        assert_eq!(terms[0].ended_at, None, "{terms:?}");
        assert_eq!(terms[0].end_reason, None);
    }

    /// A leader elected before the unread middle and one elected after it:
    /// nobody knows what happened in between, so no hand-over links them.
    #[test]
    fn no_hand_over_is_linked_across_the_unread_middle() {
        let records = [
            rec(0, "a", Change::Elected, Some(3)),
            rec(900_000, "c", Change::Elected, Some(9)),
        ];
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        let terms = build_terms_around(&records, Some(gap), None, &[holder("c", 9)]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"));
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
        assert_eq!(terms[1].handover_from, None, "{terms:?}");
        assert_eq!(terms[1].handover_basis, None);
        assert_eq!(terms[1].handover_ms, None);
        assert_eq!(terms[1].ended_at, None);
        // Without a gap, the same records are one hand-over.
        let terms = build_terms_around(&records, None, None, &[holder("c", 9)]);
        assert_eq!(terms[1].handover_from.as_deref(), Some("a"));
    }

    /// A term open where the unread middle begins, and its leader's
    /// goodbye read after it with nothing elected in between: the goodbye
    /// is its exact end. Still no hand-over across the middle.
    #[test]
    fn a_goodbye_read_after_the_unread_middle_ends_the_term_open_at_it() {
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        for (kind, reason) in [(Change::Stopped, "stopped"), (Change::Resigned, "resigned")] {
            let records = [
                rec(0, "a", Change::Elected, Some(3)),
                rec(900_000, "a", kind, None),
            ];
            let terms = build_terms_around(&records, Some(gap), None, &[]);
            assert_eq!(terms.len(), 1, "{terms:?}");
            assert_eq!(terms[0].end_reason.as_deref(), Some(reason), "{terms:?}");
            assert_eq!(terms[0].ended_at, Some(at(900_000)), "{terms:?}");
            assert_eq!(terms[0].handover_from, None);
        }
        let elected_a = rec(0, "a", Change::Elected, Some(3));
        // Its key naming it at that epoch still (a stop that could not
        // remove it) does not outweigh the goodbye.
        let records = [elected_a.clone(), rec(900_000, "a", Change::Stopped, None)];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("a", 3)]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("stopped"), "{terms:?}");
        // A goodbye that says its epoch is the term's only at that epoch.
        for (epoch, reason) in [(3, "resigned"), (4, "unread")] {
            let records = [
                elected_a.clone(),
                rec(900_000, "a", Change::Resigned, Some(epoch)),
            ];
            let terms = build_terms_around(&records, Some(gap), None, &[]);
            assert_eq!(terms[0].end_reason.as_deref(), Some(reason), "{terms:?}");
        }
        // A goodbye written just after the next election still counts,
        // with no hand-over linked across the middle.
        let records = [
            elected_a.clone(),
            rec(900_000, "b", Change::Elected, Some(4)),
            rec(900_500, "a", Change::Resigned, None),
        ];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 4)]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(
            terms[0].end_reason.as_deref(),
            Some("resigned"),
            "{terms:?}"
        );
        assert_eq!(terms[0].ended_at, Some(at(900_500)));
        assert_eq!(terms[1].handover_from, None, "{terms:?}");
    }

    /// A goodbye without an epoch read after the unread middle is not the
    /// open term's when the leader lost that term in the middle: someone
    /// was elected after the middle before it, or an election key names
    /// someone whose election was not read (elected in the middle; the
    /// leader's `deregistered` is then a standby's).
    #[test]
    fn a_goodbye_after_the_term_was_lost_in_the_middle_is_not_its_end() {
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        let elected_a = rec(0, "a", Change::Elected, Some(3));
        let records = [
            elected_a.clone(),
            rec(500_000, "b", Change::Elected, Some(5)),
            rec(900_000, "a", Change::Stopped, None),
        ];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 5)]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
        assert_eq!(terms[1].ended_at, None, "{terms:?}");
        let records = [elected_a, rec(900_000, "a", Change::Stopped, None)];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 5)]);
        assert_eq!(terms.len(), 1, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
    }

    /// A lifecycle record as the SDK writes it on `aegis.log.{service}.a`,
    /// read the way the route reads it.
    fn logged(ms: i64, kind: LogKind, epoch: Option<u64>) -> Lifecycle {
        let mut record = LogRecord::new(at(ms), aegis_contracts::log::LogLevel::Info, kind, "m");
        if let Some(epoch) = epoch {
            record = record.with_field(aegis_contracts::log::EPOCH_FIELD, epoch);
        }
        Lifecycle::from_record("a", &record).expect("a leadership record")
    }

    /// The same leader lost its term and won it again in the unread
    /// middle. Its goodbye read after the middle names the term it ends
    /// (as the SDK writes `leadership_lost` and a leader's `deregistered`):
    /// that later term's, so the term open at the middle is not ended by
    /// it. A goodbye without an epoch (an older SDK's) is still guessed by
    /// instance and timing, and taken for the open term.
    #[test]
    fn a_goodbye_naming_another_epoch_after_the_middle_does_not_end_the_open_term() {
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        for kind in [LogKind::LeadershipLost, LogKind::Deregistered] {
            // a won epoch 3 before the middle; in it, a lost 3 and won 7
            // (unread); after it, a lets go of 7 and b takes over.
            let records = |epoch| {
                [
                    logged(0, LogKind::Elected, Some(3)),
                    logged(900_000, kind.clone(), epoch),
                    rec(900_200, "b", Change::Elected, Some(8)),
                ]
            };
            let terms = build_terms_around(&records(Some(7)), Some(gap), None, &[holder("b", 8)]);
            assert_eq!(terms.len(), 2, "{terms:?}");
            assert_eq!(terms[0].epoch, Some(3));
            assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
            assert_eq!(terms[0].ended_at, Some(at(60_000)));
            assert_eq!(terms[1].handover_from, None, "{terms:?}");
            // Naming the open term, it is its end.
            let terms = build_terms_around(&records(Some(3)), Some(gap), None, &[holder("b", 8)]);
            let said = if kind == LogKind::Deregistered {
                "stopped"
            } else {
                "resigned"
            };
            assert_eq!(terms[0].end_reason.as_deref(), Some(said), "{terms:?}");
            assert_eq!(terms[0].ended_at, Some(at(900_000)));
            // Naming none, it is guessed to be.
            let terms = build_terms_around(&records(None), Some(gap), None, &[holder("b", 8)]);
            assert_eq!(terms[0].end_reason.as_deref(), Some(said), "{terms:?}");
        }
    }

    /// A goodbye naming the open term's epoch, read after the middle but
    /// after someone else's election (past the grace), or while an election
    /// key names someone elected in the middle, was written late (a
    /// partitioned leader's): the term was lost before it, in the middle.
    /// Its time is not the term's end, as without a gap (where such a term
    /// is `superseded` at the next election).
    #[test]
    fn a_late_goodbye_naming_the_open_term_is_not_its_end() {
        let gap = Gap {
            at: 1,
            since: at(60_000),
        };
        let records = [
            logged(0, LogKind::Elected, Some(3)),
            rec(500_000, "b", Change::Elected, Some(4)),
            logged(530_000, LogKind::LeadershipLost, Some(3)),
        ];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 4)]);
        assert_eq!(terms.len(), 2, "{terms:?}");
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        assert_eq!(terms[0].ended_at, Some(at(60_000)));
        let whole = build_terms_around(&records, None, None, &[holder("b", 4)]);
        assert_eq!(
            whole[0].end_reason.as_deref(),
            Some("superseded"),
            "{whole:?}"
        );
        // b was elected in the middle (its key names it; its election was
        // not read).
        let records = [
            logged(0, LogKind::Elected, Some(3)),
            logged(900_000, LogKind::Deregistered, Some(3)),
        ];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 5)]);
        assert_eq!(terms[0].end_reason.as_deref(), Some("unread"), "{terms:?}");
        // Within the grace after the next election it is still the end.
        let records = [
            logged(0, LogKind::Elected, Some(3)),
            rec(900_000, "b", Change::Elected, Some(4)),
            logged(900_500, LogKind::LeadershipLost, Some(3)),
        ];
        let terms = build_terms_around(&records, Some(gap), None, &[holder("b", 4)]);
        assert_eq!(
            terms[0].end_reason.as_deref(),
            Some("resigned"),
            "{terms:?}"
        );
        assert_eq!(terms[0].ended_at, Some(at(900_500)));
    }

    #[test]
    fn the_first_term_has_no_hand_over() {
        let terms = build_terms(&[rec(0, "a", Change::Elected, None)]);
        assert_eq!(terms[0].handover_from, None);
        assert_eq!(terms[0].handover_ms, None);
    }

    /// A snapshot's uptime is what its publisher says: one far out of
    /// range (negative, huge, not a number) is no sign of which process
    /// sent it, and the route answers rather than panics.
    #[test]
    fn an_uptime_out_of_range_is_taken_as_none() {
        let stored = time::OffsetDateTime::from_unix_timestamp(1_800_000_010).unwrap();
        let began = at(0);
        let before = at(60_000);
        for uptime in [-1e300, 1e300, 1e13, -1.0] {
            let snapshot = MetricsSnapshot {
                uptime_secs: uptime,
                ..Default::default()
            };
            let payload = serde_json::to_vec(&snapshot).unwrap();
            assert_eq!(
                sign_of_the_term(stored, &payload, began, before),
                Some(at(10_000)),
                "uptime {uptime}"
            );
        }
    }
}
