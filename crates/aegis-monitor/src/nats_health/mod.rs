//! The truth about NATS itself: which servers are up, whether the
//! JetStream API answers, and which streams have a leader — served at
//! `GET /api/nats` from memory, refreshed every second by one task.
//!
//! Each second the task asks, at once:
//! - `$JS.API.STREAM.NAMES` (750 ms): the meta leader answers it from its
//!   own assignments, so no answer means no meta leader (`no_meta_leader`);
//! - with the system account, `$SYS.REQ.SERVER.PING.CONNZ`: every server
//!   answers; one that does not within 500 ms is down. (nats-server 2.15.1
//!   answers `PING.CONNZ` here but not `$SYS.REQ.SERVER.PING` or
//!   `PING.STATSZ`, measured;)
//! - `$JS.API.STREAM.LIST` (paged), unless one is still in flight: each
//!   stream's leader and its peers, and `missing`, the streams whose leader
//!   did not answer the meta leader. Measured: the meta leader waits 4 s
//!   for those, so a listing taken while a stream has no leader answers
//!   after 4 s. Meanwhile the picture uses the last listing, and a stream
//!   whose listed leader is a server now down is shown without a leader.
//!
//! Without the system account a dead server is seen from the listing: its
//! streams go missing (after the 4 s wait), and the leaders of its other
//! streams stop hearing from it (down after 3 s of silence,
//! [`picture::SILENT_PEER`]). Measured (`tests/nats_health.rs`): with the
//! system account a SIGKILLed node and the stream it led show 1.5 s after
//! the kill; without it, 5 s.
//!
//! - `listing.rs`: the answers, parsed.
//! - `picture.rs`: [`NatsPicture`] and how it is derived ([`picture::Tracker`]).

mod listing;
mod picture;

use std::{
    collections::BTreeSet,
    sync::{Arc, RwLock},
    time::Duration,
};

use aegis_sdk::Connection;
use chrono::Utc;
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use picture::{JetStreamState, NatsPicture, ServerState, StreamState};

use crate::config::SystemAccount;

/// How often the picture is refreshed.
pub(crate) const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long the JetStream API has to answer `STREAM.NAMES`.
const META_WAIT: Duration = Duration::from_millis(750);
/// How long servers have to answer a ping round.
const PING_WAIT: Duration = Duration::from_millis(500);
/// How long one page of the listing may take: longer than the 4 s the
/// meta leader waits for streams whose leader does not answer.
const LIST_WAIT: Duration = Duration::from_secs(6);

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
    system: Option<Connection>,
}

impl NatsHealth {
    /// Starts the task that refreshes the picture every second, with its
    /// own connection to the system account when `system` is given (a
    /// refused one is logged, and the listing's evidence used instead).
    pub(crate) async fn start(
        conn: &Connection,
        system: Option<&SystemAccount>,
        cancel: CancellationToken,
        tasks: &TaskTracker,
    ) -> NatsHealth {
        let system = match system {
            Some(account) => {
                match Connection::connect(account.connection_config(conn.config())).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot connect to the NATS system account: dead NATS servers are seen from the stream listing only");
                        None
                    }
                }
            }
            None => None,
        };
        let current = Arc::new(RwLock::new(NatsPicture::empty(Utc::now(), CHECK_EVERY)));
        let health = NatsHealth { current, system };
        tasks.spawn(health.clone().run(conn.client().clone(), cancel));
        health
    }

    /// The latest picture.
    pub(crate) fn current(&self) -> NatsPicture {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drains the system account connection, if any.
    pub(crate) async fn drain(&self) {
        if let Some(c) = &self.system {
            let _ = c.drain().await;
        }
    }

    async fn run(self, client: async_nats::Client, cancel: CancellationToken) {
        let mut tracker = picture::Tracker::default();
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listing: Option<JoinHandle<Result<picture::Listing, CheckError>>> = None;
        let mut heard = picture::Heard::default();
        let system = self.system.as_ref().map(|c| c.client().clone());
        loop {
            tokio::select! {
                () = cancel.cancelled() => {
                    if let Some(l) = listing { l.abort(); }
                    return;
                }
                done = async { listing.as_mut().expect("guarded").await }, if listing.is_some() => {
                    listing = None;
                    match done {
                        Ok(Ok(l)) => tracker.listed(l),
                        Ok(Err(e)) => tracing::debug!(error = %e, "the stream listing failed"),
                        Err(e) => tracing::debug!(error = %e, "the stream listing task ended"),
                    }
                }
                _ = tick.tick() => {
                    let local = client.server_info().server_name;
                    if listing.is_none() {
                        listing = Some(tokio::spawn(list_streams(client.clone(), local.clone())));
                    }
                    // Done early once every server known has answered.
                    let expected = self.current().servers.iter().map(|s| s.name.clone()).collect();
                    let (meta, answered) = tokio::join!(
                        ask_meta(&client),
                        async {
                            match &system {
                                Some(s) => ping(s, &expected).await,
                                None => None,
                            }
                        }
                    );
                    heard = picture::Heard {
                        connected: client.connection_state() == async_nats::connection::State::Connected,
                        local: (!local.is_empty()).then_some(local),
                        meta_answered: meta.is_ok(),
                        answered,
                    };
                    if let Err(e) = meta {
                        tracing::debug!(error = %e, "the JetStream API did not answer");
                    }
                }
            }
            let picture = tracker.picture(&heard, Utc::now(), CHECK_EVERY);
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

/// One ping round: the servers that answered within [`PING_WAIT`] (done
/// early once every server in `expected` has, so a round with every
/// server up is a round trip); `None` when the round could
/// not be sent (the system connection is down).
async fn ping(
    client: &async_nats::Client,
    expected: &BTreeSet<String>,
) -> Option<BTreeSet<String>> {
    let inbox = client.new_inbox();
    let mut answers = client.subscribe(inbox.clone()).await.ok()?;
    // One connection per server is plenty to learn who answers.
    client
        .publish_with_reply("$SYS.REQ.SERVER.PING.CONNZ", inbox, r#"{"limit":1}"#.into())
        .await
        .ok()?;
    let until = tokio::time::Instant::now() + PING_WAIT;
    let mut answered = BTreeSet::new();
    while let Ok(Some(answer)) = tokio::time::timeout_at(until, answers.next()).await {
        if let Some(name) = listing::ping_answerer(&answer.payload) {
            answered.insert(name);
        }
        if !expected.is_empty() && expected.is_subset(&answered) {
            break;
        }
    }
    if answered.is_empty() && client.connection_state() != async_nats::connection::State::Connected
    {
        return None;
    }
    Some(answered)
}
