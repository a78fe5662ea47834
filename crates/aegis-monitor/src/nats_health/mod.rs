//! The truth about NATS itself: which servers are up, whether the
//! JetStream API answers, and which streams have a leader — served at
//! `GET /api/nats` from memory, refreshed every second by one task.
//!
//! Each second the task asks, each request apart so none holds back another:
//! - `$JS.API.STREAM.NAMES` (750 ms): the meta leader answers it from its
//!   own assignments, so no answer means no meta leader (`no_meta_leader`);
//! - with the system account, the fleet's rounds of pings (it asks every
//!   server `$SYS.REQ.SERVER.PING.CONNZ` twice a second to see a dead
//!   node's clients down; the answers serve here too, so the servers are
//!   asked once): a server missing from the latest round is down, and the
//!   picture is made again as each round ends. (nats-server 2.15.1
//!   answers `PING.CONNZ` here but not `$SYS.REQ.SERVER.PING` or
//!   `PING.STATSZ`, measured;)
//! - `$JS.API.STREAM.LIST` (paged), unless one is still in flight: each
//!   stream's leader and its peers, and `missing`, the streams whose leader
//!   did not answer the meta leader. Measured: the meta leader waits 4 s
//!   for those, so a listing taken while a stream has no leader answers
//!   after 4 s. Meanwhile the picture uses the last listing, and a stream
//!   whose listed leader is a server now down is shown without a leader;
//! - every 250 ms, each stream the picture shows without a leader is asked
//!   for its own, `$JS.API.STREAM.INFO.<name>` (500 ms, one request in
//!   flight per stream): only its leader answers at once, naming itself.
//!   A stream whose answer names a leader is shown led from then on, until
//!   a listing asked after that answer says otherwise, so each stream is
//!   shown led again as soon as it has a leader, not when the slow listing
//!   returns. An answer naming none, or none in time, changes nothing:
//!   the picture errs towards alarm. Measured
//!   (`tests/nats_health_recovery.rs`): each stream shown led at most 0.63 s
//!   after the test saw its new leader (4 runs), the all-clear with the last.
//!
//! Without the system account a dead server is seen from the listing: its
//! streams go missing (after the 4 s wait), and the leaders of its other
//! streams stop hearing from it (down after 3 s of silence,
//! [`picture::SILENT_PEER`]). Measured (`tests/nats_health.rs`): with the
//! system account a SIGKILLed node and the stream it led show 0.9 s after
//! the kill; without it, 5 s.
//!
//! - `listing.rs`: the answers, parsed.
//! - `picture.rs`: [`NatsPicture`] and how it is derived ([`picture::Tracker`]).

mod listing;
mod picture;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use aegis_sdk::Connection;
use chrono::Utc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use picture::{JetStreamState, NatsPicture, ServerState, StreamState};

use crate::fleet::PingRounds;

/// How often the picture is refreshed.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the JetStream API has to answer `STREAM.NAMES`.
const META_WAIT: Duration = Duration::from_millis(750);
/// How old the latest round of pings may be to count: two missed rounds
/// mean the fleet's system connection is down, and the pings say nothing.
const ROUND_FRESH: Duration = Duration::from_millis(1500);
/// How long one page of the listing may take: longer than the 4 s the
/// meta leader waits for streams whose leader does not answer.
const LIST_WAIT: Duration = Duration::from_secs(6);
/// How often each stream shown without a leader is asked for its own
/// (`STREAM.INFO`), one request in flight per stream.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long a stream has to answer `STREAM.INFO`: one with a leader
/// answers at once; one without is not waited for.
const PROBE_WAIT: Duration = Duration::from_millis(500);

/// Why a request of the check failed (logged at debug: the picture says it).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckError {
    /// No answer in time.
    #[error("no answer")]
    NoAnswer(#[source] async_nats::RequestError),
    /// The JetStream API answered with an error.
    #[error("JetStream API error {code}/{err_code}: {description}")]
    Api {
        code: u16,
        err_code: u16,
        description: String,
    },
    /// The answer is not what the API documents.
    #[error("unreadable answer")]
    Unreadable(#[source] serde_json::Error),
}

/// The current picture of the NATS cluster; cheap to clone.
#[derive(Clone)]
pub(crate) struct NatsHealth {
    current: Arc<RwLock<NatsPicture>>,
}

impl NatsHealth {
    /// Starts the task that refreshes the picture every second, and as each
    /// round of the fleet's `pings` ends (with the system account; without
    /// it the listing's evidence is used instead).
    pub(crate) fn start(
        conn: &Connection,
        pings: Option<PingRounds>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> NatsHealth {
        let current = Arc::new(RwLock::new(NatsPicture::empty(Utc::now(), CHECK_EVERY)));
        let health = NatsHealth { current };
        tasks.spawn(health.clone().run(conn.client().clone(), pings, cancel));
        health
    }

    /// The latest picture.
    pub(crate) fn current(&self) -> NatsPicture {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn run(
        self,
        client: async_nats::Client,
        mut pings: Option<PingRounds>,
        cancel: CancellationToken,
    ) {
        let mut tracker = picture::Tracker::default();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listing: Option<(Instant, JoinHandle<Result<picture::Listing, CheckError>>)> = None;
        // The streams shown without a leader, each asked for its own.
        let mut probes: JoinSet<(String, Instant, Result<Option<picture::Listed>, CheckError>)> =
            JoinSet::new();
        let mut probing: BTreeSet<String> = BTreeSet::new();
        let mut probe_tick = tokio::time::interval(PROBE_EVERY);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut leaderless: Vec<String> = Vec::new();
        // Asked apart, so a meta leader that does not answer (750 ms) holds
        // back neither the pings' news nor the listing's.
        let mut meta: Option<JoinHandle<Result<(), CheckError>>> = None;
        let mut heard = picture::Heard::default();
        // No picture before the first meta check has ended: the empty one
        // says the check has not run yet, which is true.
        let mut checked = false;
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    if let Some((_, l)) = listing { l.abort(); }
                    probes.abort_all();
                    if let Some(m) = meta { m.abort(); }
                    return;
                }
                done = async { meta.as_mut().expect("guarded").await }, if meta.is_some() => {
                    meta = None;
                    checked = true;
                    heard.meta_answered = matches!(done, Ok(Ok(())));
                    if let Ok(Err(e)) = done {
                        tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "the JetStream API did not answer");
                    }
                }
                done = async { (&mut listing.as_mut().expect("guarded").1).await }, if listing.is_some() => {
                    let asked = listing.take().expect("guarded").0;
                    match done {
                        Ok(Ok(l)) => tracker.listed(l, asked),
                        Ok(Err(e)) => tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "the stream listing failed"),
                        Err(e) => tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "the stream listing task ended"),
                    }
                }
                Some(done) = probes.join_next(), if !probes.is_empty() => {
                    match done {
                        Ok((name, asked, result)) => {
                            probing.remove(&name);
                            match result {
                                Ok(Some(answer)) => tracker.probed(asked, &name, answer),
                                Ok(None) => {}
                                Err(e) => tracing::debug!(stream = %name, error = %aegis_sdk::startup::Causes(&e), "the stream did not name a leader"),
                            }
                        }
                        Err(e) => {
                            // A probe's name is lost with its task: ask
                            // them all again.
                            probing.clear();
                            tracing::debug!(error = %aegis_sdk::startup::Causes(&e), "a stream probe ended");
                        }
                    }
                }
                _ = probe_tick.tick(), if !leaderless.is_empty() => {
                    for name in &leaderless {
                        if probing.insert(name.clone()) {
                            let (client, name) = (client.clone(), name.clone());
                            probes.spawn(async move {
                                let asked = Instant::now();
                                let result = ask_stream(&client, &name).await;
                                (name, asked, result)
                            });
                        }
                    }
                    continue;
                }
                Ok(()) = async { pings.as_mut().expect("guarded").changed().await }, if pings.is_some() => {
                    heard.answered = answered(pings.as_ref());
                }
                _ = tick.tick() => {
                    let local = client.server_info().server_name;
                    if listing.is_none() {
                        listing = Some((
                            Instant::now(),
                            tokio::spawn(list_streams(client.clone(), local.clone())),
                        ));
                    }
                    if meta.is_none() {
                        let client = client.clone();
                        meta = Some(tokio::spawn(async move { ask_meta(&client).await }));
                    }
                    heard.connected =
                        client.connection_state() == async_nats::connection::State::Connected;
                    heard.local = (!local.is_empty()).then_some(local);
                    heard.answered = answered(pings.as_ref());
                }
            }
            if !checked {
                continue;
            }
            let picture = tracker.picture(&heard, Utc::now(), CHECK_EVERY);
            leaderless = picture
                .streams
                .iter()
                .filter(|s| s.leader.is_none())
                .map(|s| s.name.clone())
                .collect();
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = picture;
        }
    }
}

/// Sends a JetStream API request and reads its answer as `T`.
async fn api<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    body: String,
    wait: Duration,
) -> Result<T, CheckError> {
    let answer = client
        .send_request(
            subject.to_owned(),
            async_nats::Request::new()
                .payload(body.into())
                .timeout(Some(wait)),
        )
        .await
        .map_err(CheckError::NoAnswer)?;
    if let Some(e) = listing::api_error(&answer.payload) {
        return Err(CheckError::Api {
            code: e.code,
            err_code: e.err_code,
            description: e.description,
        });
    }
    serde_json::from_slice(&answer.payload).map_err(CheckError::Unreadable)
}

/// Whether the meta leader answers (it alone answers `STREAM.NAMES`, from
/// its assignments, without asking the streams).
async fn ask_meta(client: &async_nats::Client) -> Result<(), CheckError> {
    api::<serde::de::IgnoredAny>(
        client,
        "$JS.API.STREAM.NAMES",
        r#"{"offset":0}"#.to_owned(),
        META_WAIT,
    )
    .await
    .map(drop)
}

/// A stream's own answer to `$JS.API.STREAM.INFO`, when it names a
/// leader. Only the stream's leader answers at once (a member that sees
/// the group leaderless answers naming none; the others, after a delay);
/// `None` when the answer names no leader.
async fn ask_stream(
    client: &async_nats::Client,
    name: &str,
) -> Result<Option<picture::Listed>, CheckError> {
    let info: listing::ListedStream = api(
        client,
        &format!("$JS.API.STREAM.INFO.{name}"),
        String::new(),
        PROBE_WAIT,
    )
    .await?;
    // Clustered: an answer without cluster information is not about a
    // raft group's leader.
    if info.cluster.is_none() || info.config.name != name {
        return Ok(None);
    }
    let (_, answer) = picture::listed_of(info, "");
    Ok(answer.leader.is_some().then_some(answer))
}

/// Every page of `$JS.API.STREAM.LIST`.
async fn list_streams(
    client: async_nats::Client,
    local: String,
) -> Result<picture::Listing, CheckError> {
    let mut pages = Vec::new();
    let mut offset = 0;
    loop {
        let page: listing::ListPage = api(
            &client,
            "$JS.API.STREAM.LIST",
            format!(r#"{{"offset":{offset}}}"#),
            LIST_WAIT,
        )
        .await?;
        let step = page.limit.max(page.streams.len() + page.missing.len());
        let total = page.total;
        pages.push(page);
        offset += step;
        if step == 0 || offset >= total {
            break;
        }
    }
    Ok(picture::listing_of(pages, &local))
}

/// The servers that answered the latest round of pings, unless it is
/// older than [`ROUND_FRESH`] (the fleet's system connection is down) or
/// there are no pings (no system account).
fn answered(pings: Option<&PingRounds>) -> Option<BTreeSet<String>> {
    let latest = pings?.borrow();
    let round = latest.as_ref()?;
    (round.asked.elapsed() <= ROUND_FRESH).then(|| round.names.clone())
}
