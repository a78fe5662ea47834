//! risk-service: judges orders against limits (`assess_risk`), reports
//! positions (`get_positions`) and changes limits at run time
//! (`get_limits`, `update_limits`); publishes `events.risk.assessed`.
//!
//! The service is load-balanced, yet every instance must judge alike:
//! - **Positions** come from `events.order.filled`, read by every instance
//!   (each needs the complete book; a competing consumer would split the
//!   fills between instances). The book is rebuilt completely on every
//!   start — from a snapshot in the KV bucket [`RISK_POSITIONS_BUCKET`] and
//!   a replay of the fills after it — so a restart under the same id, or one
//!   after the fills have left the stream, still holds every position
//!   (`fills.rs` tells how). A fill is applied once, however often it
//!   arrives (`book.rs`). An assessment may name the newest fill its
//!   caller knows of ([`AssessRisk::after_fill`]); it is judged only once
//!   this instance's book holds that fill, so an order sent right after
//!   another's fill is judged with it, whichever instance answers.
//! - **Limits** live in the KV bucket [`RISK_LIMITS_BUCKET`], which every
//!   instance mirrors ([`aegis_sdk::kv::mirror`]): `update_limits` on one
//!   instance reaches all of them within milliseconds, within a second of
//!   the write when a NATS node died, and survives restarts. The
//!   configured limits only seed an empty bucket.
//!
//! The rules themselves are pure functions in [`assess`].
//!
//! Why one module of over 500 lines: it is the service as it runs — its
//! options, the one `Risk` state its four handlers share (book, limits,
//! the fill an assessment waits for), and the start that wires the
//! handlers, the fills' stream and the limits' mirror to it; split, each
//! handler would sit apart from the state and start it needs. The rules
//! ([`assess`]), the book and the fills are apart already.

pub mod assess;
mod book;
mod fills;

use schemars::JsonSchema;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, RwLock},
    time::Duration,
};

use aegis_contracts::trading::{OrderFilled, RISK_SERVICE, RiskAssessed, TradingEvent};
use aegis_sdk::{
    Connection,
    events::Events,
    kv::Mirrored,
    rpc::{ErrorCode, WireError},
};
use async_nats::jetstream::kv::Operation;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use assess::{LimitsPatch, OrderToAssess, RiskAssessment, RiskLimits};
pub use fills::RISK_POSITIONS_BUCKET;

use crate::{
    Running, TradingError,
    common::{self, Counters, Identity},
    kv::{Bucket, CreateError, Expect, WriteError},
    running::StopOrder,
};
use book::Book;
use fills::Fills;

/// The KV bucket holding the shared limits (key `limits`).
pub const RISK_LIMITS_BUCKET: &str = "risk_limits";
const LIMITS_KEY: &str = "limits";

/// Counter: orders assessed.
pub const METRIC_ASSESSMENTS: &str = "assessments";
/// Counter: orders refused.
pub const METRIC_REJECTIONS: &str = "rejections";
/// Counters of the risk score distribution: scores below 25, 50, 75, and
/// from 75 up (each assessment lands in exactly one).
pub const METRIC_SCORE_BUCKETS: [&str; 4] = [
    "risk_score_lt25",
    "risk_score_lt50",
    "risk_score_lt75",
    "risk_score_ge75",
];
/// Counter: fills applied to positions.
pub const METRIC_FILLS_APPLIED: &str = "fills_applied";

/// How to run a risk instance.
#[derive(Debug, Clone)]
pub struct RiskOptions {
    /// The instance id; host name plus a random suffix when `None`.
    pub instance_id: Option<String>,
    /// The limits to start with when [`RISK_LIMITS_BUCKET`] holds none.
    pub limits: RiskLimits,
    /// How long (in stream time) a fill is remembered, so that the same
    /// fill published again is not counted twice (default 10 minutes).
    pub fill_dedup_window: Duration,
    /// At most this many fills are remembered, whatever the window (default
    /// 150 000, about 12 minutes at 200 fills/s; some 15 MB).
    pub fill_dedup_capacity: usize,
    /// How often the positions are written to [`RISK_POSITIONS_BUCKET`]
    /// when they moved (default 5 s); also on shutdown. A restart replays
    /// at most this much of the fills.
    pub snapshot_interval: Duration,
    /// How long an assessment waits for this instance's positions to
    /// include the fill it names ([`AssessRisk::after_fill`]) before it
    /// answers `SERVICE_UNAVAILABLE` "risk's positions are catching up;
    /// retry" (default 500 ms; a caller retrying an idempotent call then
    /// tries another instance).
    pub catch_up_timeout: Duration,
}

impl Default for RiskOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            limits: RiskLimits::default(),
            fill_dedup_window: Duration::from_secs(600),
            fill_dedup_capacity: 150_000,
            snapshot_interval: Duration::from_secs(5),
            catch_up_timeout: Duration::from_millis(500),
        }
    }
}

/// `assess_risk` request. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AssessRisk {
    /// The order to judge.
    pub order: OrderToAssess,
    /// The `EVENTS` sequence of the newest fill the caller knows of: the
    /// order is judged only once this instance's positions include it (and
    /// every fill before it), so an order sent right after another's fill
    /// is not judged by a position that misses it. order-service sends it;
    /// without it the order is judged by the positions as they are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_fill: Option<u64>,
}

/// `get_positions` reply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Positions {
    /// Net quantity per symbol (positive long, negative short).
    pub positions: BTreeMap<String, i64>,
    /// The `EVENTS` stream sequence of the last fill seen (0: none yet).
    pub last_event_sequence: u64,
}

/// The instance's state.
#[derive(Debug)]
struct Risk {
    /// The limits and the KV revision they came from; only newer revisions
    /// replace them, so the watch and our own writes can race harmlessly.
    limits: RwLock<(u64, RiskLimits)>,
    book: Mutex<Book>,
    /// The stream sequence the follower has reached, told after each fill
    /// is applied.
    seen: watch::Receiver<u64>,
    /// See [`RiskOptions::catch_up_timeout`].
    catch_up_timeout: Duration,
    store: Bucket,
    /// The fills' stream, to read the newest fill from.
    fills: Fills,
    /// How many times JetStream told that `EVENTS` was deleted, created
    /// or restored (`fills::follow_changes`).
    changes: watch::Sender<u64>,
    /// The count of [`changes`](Self::changes) as of which the follower
    /// last found the book's stream to be the one there is.
    confirmed: watch::Sender<u64>,
    events: Events,
    counters: Counters,
}

impl Risk {
    fn limits(&self) -> RiskLimits {
        self.limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    fn apply_limits(&self, revision: u64, limits: RiskLimits) {
        let mut current = self.limits.write().unwrap_or_else(|e| e.into_inner());
        if revision > current.0 {
            *current = (revision, limits);
        }
    }

    /// Applies the fill stored at `sequence` once: fills may be replayed
    /// and published again after a failure in order-service, so they are
    /// recognised by sequence and by order id (within a window).
    fn apply_fill(&self, sequence: u64, stored: chrono::DateTime<chrono::Utc>, payload: &[u8]) {
        let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
        match serde_json::from_slice::<OrderFilled>(payload) {
            Ok(fill) => {
                if book.apply(sequence, stored, &fill) {
                    self.counters.add(METRIC_FILLS_APPLIED, 1.0);
                }
            }
            Err(e) => {
                warn!(sequence, error = %aegis_sdk::startup::Causes(&e), "ignoring a fill that does not decode");
                book.pass(sequence);
            }
        }
    }

    /// What a snapshot holds: positions, their sequence, the replay point.
    fn snapshot(&self) -> (BTreeMap<String, i64>, book::Place) {
        self.book
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot()
    }

    /// Where the follower's feed, made again, starts: at `next`, the fill
    /// after the last one it handed over — unless the stream is another
    /// one than the book's (created at `created`), and the book starts over
    /// on it from its first fill. The stream was looked up after
    /// `generation` changes were told: the book is of the stream there is
    /// as of those.
    fn follow_stream(
        &self,
        created: chrono::DateTime<chrono::Utc>,
        next: u64,
        generation: u64,
    ) -> u64 {
        let start = {
            let mut book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            if book.rebase(created) {
                warn!(
                    "EVENTS was created again: keeping the positions and counting the fills of \
                     the new stream from its first"
                );
            }
            next.min(book.view.last_event_sequence + 1).max(1)
        };
        self.confirmed.send_if_modified(|confirmed| {
            let later = generation > *confirmed;
            *confirmed = (*confirmed).max(generation);
            later
        });
        start
    }

    /// Whether the book is of the `EVENTS` stream there is, as far as
    /// told: no deletion or creation of it was told since the follower last
    /// looked which stream there is. Until then the book's sequences may be
    /// of a stream that is gone, and a caller's number of the new one.
    fn fresh(&self) -> bool {
        *self.confirmed.borrow() >= *self.changes.borrow()
    }

    /// Waits until the book holds the fill stored at `sequence`, for at
    /// most the catch-up timeout.
    ///
    /// The book must be of the stream the caller's number is of: after
    /// JetStream told that `EVENTS` was deleted or created, its sequences
    /// may be of the old stream and only look further on than a fill of
    /// the new one. So it waits, too, until the follower has looked which
    /// stream there is ([`fresh`](Self::fresh); within milliseconds of
    /// the stream's creation). A book not known to follow the stream there
    /// is when the timeout runs out (`EVENTS` deleted and not yet created
    /// again, its info slow to read) is answered unavailable, as one
    /// behind: never judged by its sequence alone.
    ///
    /// A caller's number may be of an `EVENTS` stream that was created
    /// again since it learnt it (the new stream's sequences started over):
    /// no fill of the new stream is stored there. So when the book is
    /// still behind it after [`NEWEST_FILL_AFTER`], the newest fill the
    /// stream holds is read, and the book need only hold that one — in one
    /// stream it is never below a fill the caller was told of (see
    /// [`reach`]).
    async fn caught_up(&self, sequence: u64) -> Result<(), WireError> {
        let held = || {
            self.book
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .view
                .last_event_sequence
        };
        let ready = |wanted: u64| self.fresh() && held() >= wanted;
        if ready(sequence) {
            return Ok(());
        }
        let until = |wanted: u64| {
            // Subscribed before `ready` is asked: no change is missed.
            let mut seen = self.seen.clone();
            let mut confirmed = self.confirmed.subscribe();
            let mut changes = self.changes.subscribe();
            async move {
                seen.mark_unchanged();
                while !ready(wanted) {
                    tokio::select! {
                        () = fills::changed(&mut seen) => {}
                        () = fills::changed(&mut confirmed) => {}
                        () = fills::changed(&mut changes) => {}
                    }
                }
            }
        };
        let newest = || async {
            self.fills
                .last_fill()
                .await
                .inspect_err(|e| {
                    debug!(error = %e, "cannot read the newest fill; waiting for the caller's");
                })
                .ok()
        };
        let after = NEWEST_FILL_AFTER.min(self.catch_up_timeout / 2);
        // Looked at once more: the book may have got there as time ran
        // out. Never by its sequence alone — a book not known to follow
        // the stream there is gets no verdict, however long it waited.
        if reach(sequence, until, newest, after, self.catch_up_timeout).await || ready(sequence) {
            return Ok(());
        }
        debug!(
            held = held(),
            wanted = sequence,
            fresh = self.fresh(),
            "positions behind the caller's newest fill"
        );
        Err(WireError::service_unavailable(
            "risk's positions are catching up; retry",
        ))
    }

    async fn assess_risk(
        &self,
        instance_id: &str,
        req: AssessRisk,
    ) -> Result<RiskAssessment, WireError> {
        let order = req.order;
        order.validate().map_err(common::invalid)?;
        if let Some(sequence) = req.after_fill {
            self.caught_up(sequence).await?;
        }
        let position = {
            let book = self.book.lock().unwrap_or_else(|e| e.into_inner());
            book.view.positions.get(&order.symbol).copied().unwrap_or(0)
        };
        let (revision, limits) = self
            .limits
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let verdict = assess::assess(&limits, &order, position);

        self.counters.add(METRIC_ASSESSMENTS, 1.0);
        if !verdict.approved {
            self.counters.add(METRIC_REJECTIONS, 1.0);
        }
        let bucket = ((verdict.risk_score / 25.0) as usize).min(3);
        self.counters.add(METRIC_SCORE_BUCKETS[bucket], 1.0);

        // The verdict is part of the audit trail: answer only once it is
        // stored. Named after the order and what it was judged by, so a
        // retried assessment is stored once, yet the order judged again
        // by another position or other limits - and perhaps otherwise - is
        // stored again: the trail must not hold only a first "rejected"
        // for an order approved and filled later.
        let id = assessment_id(
            order.order_id.as_deref(),
            &(&order, position, revision, &verdict),
        );
        let event = RiskAssessed {
            order_id: order.order_id,
            symbol: order.symbol,
            side: order.side,
            quantity: order.quantity,
            price: order.price,
            approved: verdict.approved,
            risk_score: verdict.risk_score,
            reasons: verdict.reasons.clone(),
            instance_id: instance_id.to_owned(),
            timestamp: chrono::Utc::now(),
        };
        self.events
            .publish_with_id(RiskAssessed::DOMAIN, RiskAssessed::ACTION, &id, &event)
            .await
            .map_err(|e| {
                warn!(error = %aegis_sdk::startup::Causes(&e), "cannot publish the assessment");
                WireError::service_unavailable("the assessment could not be recorded; retry")
            })?;
        Ok(verdict)
    }

    /// Read, merge, compare-and-set: two concurrent partial updates on two
    /// instances both land instead of one silently undoing the other.
    async fn update_limits(&self, patch: LimitsPatch) -> Result<RiskLimits, WireError> {
        if patch.is_empty() {
            return Err(WireError::invalid_request("the update changes no limit"));
        }
        // Checked before any I/O, against the limits this instance holds.
        self.limits()
            .apply(&patch)
            .validate()
            .map_err(common::invalid)?;
        let unavailable = |e: &dyn std::fmt::Display| {
            warn!(error = %e, "cannot update the limits in KV");
            WireError::service_unavailable("the limits store is unavailable; retry")
        };
        for _ in 0..5 {
            // From the stream leader: a replica's older copy would only cost
            // a lost compare-and-set and another round.
            let stored = self
                .store
                .last_record(LIMITS_KEY)
                .await
                .map_err(|e| unavailable(&e))?;
            let (revision, current) = match stored {
                Some((revision, Some(value))) => {
                    let limits = serde_json::from_slice::<RiskLimits>(&value)
                        .unwrap_or_else(|_| self.limits());
                    (revision, limits)
                }
                // Deleted by hand: written again over the marker.
                Some((revision, None)) => (revision, self.limits()),
                None => (0, self.limits()),
            };
            let next = current.apply(&patch);
            next.validate().map_err(common::invalid)?;
            let bytes = serde_json::to_vec(&next).map_err(|e| unavailable(&e))?;
            let written = self
                .store
                .put_if(LIMITS_KEY, bytes.into(), Expect::Revision(revision))
                .await
                .map_err(|e| match e {
                    WriteError::Conflict => (true, String::new()),
                    WriteError::Full => (false, self.store.full_error().to_string()),
                    WriteError::Failed(e) => (false, e.to_string()),
                });
            match written {
                Ok(revision) => {
                    self.apply_limits(revision, next.clone());
                    return Ok(next);
                }
                Err((true, _)) => debug!("the limits changed meanwhile; merging again"),
                Err((false, e)) => return Err(unavailable(&e)),
            }
        }
        Err(WireError::new(
            ErrorCode::Conflict,
            "the limits keep changing concurrently; retry",
        ))
    }
}

/// Starts a risk-service instance on `conn`: loads the shared limits,
/// follows fills for positions, and serves `echo`, `health`,
/// `simulate_work`, `assess_risk`, `get_positions`, `get_limits` and
/// `update_limits`.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_trading::TradingError> {
/// use aegis_trading::risk::{self, RiskLimits, RiskOptions};
///
/// let risk = risk::start(&conn, RiskOptions {
///     limits: RiskLimits { max_order_notional: 250_000.0, ..Default::default() },
///     ..Default::default()
/// }).await?;
/// risk.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`TradingError::InvalidOptions`] for invalid limits (before any I/O);
/// [`TradingError::Store`] when the limits bucket cannot be used;
/// [`TradingError::Events`] when the fills subscription cannot start;
/// [`TradingError::Service`] when the service cannot start.
pub async fn start(conn: &Connection, opts: RiskOptions) -> Result<Running, TradingError> {
    if let Err(e) = opts.limits.validate() {
        return Err(TradingError::InvalidOptions(e.to_string()));
    }
    if opts.fill_dedup_window.is_zero()
        || opts.fill_dedup_capacity == 0
        || opts.snapshot_interval.is_zero()
        || opts.catch_up_timeout.is_zero()
    {
        return Err(TradingError::InvalidOptions(
            "fill_dedup_window, fill_dedup_capacity, snapshot_interval and catch_up_timeout \
             must be positive"
                .to_owned(),
        ));
    }
    // The id is chosen here because the broadcast consumer is named after it.
    let instance_id = opts
        .instance_id
        .unwrap_or_else(aegis_sdk::default_instance_id);
    let id = Identity::new(RISK_SERVICE, &instance_id);
    let store = crate::kv::open_bucket(conn, RISK_LIMITS_BUCKET).await?;
    let store_error = |e: async_nats::Error| TradingError::Store {
        bucket: RISK_LIMITS_BUCKET.to_owned(),
        source: e,
    };
    let seed = serde_json::to_vec(&opts.limits).map_err(|e| store_error(e.into()))?;
    let bucket = Bucket::new(conn, store.clone());
    match bucket.create(LIMITS_KEY, seed.into()).await {
        Ok(_) | Err(CreateError::Exists) => {}
        Err(CreateError::Full) => return Err(store_error(bucket.full_error())),
        Err(CreateError::Failed(e)) => return Err(store_error(e)),
    }
    let fills = Fills::open(conn, &instance_id).await?;
    let changes = fills.changes().await?;
    let (book, replay_from) = fills
        .restore(opts.fill_dedup_window, opts.fill_dedup_capacity)
        .await?;
    // Where the book must be before it may judge: the last fill stored now.
    let caught_up_at = fills.last_fill().await?;
    let (progress, mut seen) = watch::channel(book.view.last_event_sequence);
    let risk = Arc::new(Risk {
        limits: RwLock::new((0, opts.limits)),
        book: Mutex::new(book),
        seen: seen.clone(),
        catch_up_timeout: opts.catch_up_timeout,
        store: bucket,
        fills: fills.clone(),
        changes: watch::channel(0).0,
        confirmed: watch::channel(0).0,
        events: conn.events(),
        counters: Counters::new(
            &[
                &[METRIC_ASSESSMENTS, METRIC_REJECTIONS, METRIC_FILLS_APPLIED][..],
                &METRIC_SCORE_BUCKETS[..],
            ]
            .concat(),
        ),
    });
    if let Some(entry) = store
        .entry(LIMITS_KEY)
        .await
        .map_err(|e| store_error(e.into()))?
        && entry.operation == Operation::Put
    {
        apply_stored(&risk, entry.revision, &entry.value);
    }
    let cancel = CancellationToken::new();
    // A start that fails from here on (the SDK refusing the service, say)
    // stops the tasks it started.
    let stop_on_failure = cancel.clone().drop_guard();
    // Not async-nats's ordered consumer: after a NATS node died, that one
    // left an instance judging by the old limits for up to 4.7 s after an
    // update (tests/node_loss.rs).
    aegis_sdk::kv::mirror(conn, RISK_LIMITS_BUCKET, LIMITS_KEY, cancel.clone(), {
        let risk = risk.clone();
        move |update| apply_mirrored(&risk, update)
    })
    .await
    .map_err(|e| store_error(e.into()))?;

    let told = fills::follow_changes(changes, risk.clone(), cancel.clone());
    let follower = fills.follow(risk.clone(), replay_from, progress, cancel.clone());
    loop {
        let caught_up = tokio::time::timeout(
            Duration::from_secs(5),
            seen.wait_for(|sequence| *sequence >= caught_up_at),
        )
        .await
        .map(|reached| reached.is_ok());
        match caught_up {
            Ok(_) => break,
            Err(_) => info!(
                at = *seen.borrow(),
                until = caught_up_at,
                "still replaying fills before serving"
            ),
        }
    }
    let snapshots = fills.snapshot_every(risk.clone(), opts.snapshot_interval, cancel.clone());

    let service = conn
        .service(RISK_SERVICE, crate::VERSION)
        .description("Judges orders against shared limits; keeps positions from fills")
        .instance_id(&instance_id)
        .handler("echo", common::echo)
        .handler("health", common::health(id.clone()))
        .handler("simulate_work", common::simulate_work(id))
        .handler_with_context("assess_risk", {
            let risk = risk.clone();
            move |ctx: aegis_sdk::rpc::RequestContext, req: AssessRisk| {
                let risk = risk.clone();
                async move { risk.assess_risk(&ctx.instance_id, req).await }
            }
        })
        .handler("get_positions", {
            let risk = risk.clone();
            move |_: Option<serde_json::Value>| {
                let book = risk
                    .book
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .view
                    .clone();
                futures::future::ready(Ok::<_, WireError>(book))
            }
        })
        .handler("get_limits", {
            let risk = risk.clone();
            move |_: Option<serde_json::Value>| {
                futures::future::ready(Ok::<_, WireError>(risk.limits()))
            }
        })
        .handler("update_limits", {
            let risk = risk.clone();
            move |patch: LimitsPatch| {
                let risk = risk.clone();
                async move { risk.update_limits(patch).await }
            }
        })
        .start()
        .await?;
    drop(stop_on_failure.disarm());
    risk.counters.attach(service.metrics().clone());
    // Stopping, the service goes first: assessments in flight read the
    // positions and limits these tasks keep. The follower then writes a
    // last positions snapshot.
    Ok(Running::new(
        service,
        vec![told, follower, snapshots],
        cancel,
        StopOrder::ServiceFirst,
    ))
}

/// Applies what the limits' mirror tells. A deleted key leaves the limits
/// as they were: judging by none would pass every order.
fn apply_mirrored(risk: &Risk, update: Mirrored) {
    match update {
        Mirrored::Loaded { entries, fresh, .. } => {
            if fresh {
                // The bucket was created again: its revisions started over.
                risk.limits.write().unwrap_or_else(|e| e.into_inner()).0 = 0;
            }
            for entry in entries {
                apply_stored(risk, entry.revision, &entry.value);
            }
        }
        Mirrored::Put(entry) => apply_stored(risk, entry.revision, &entry.value),
        _ => {}
    }
}

/// Applies the limits stored at `revision`; a value that does not decode or
/// validate (written by hand, say) is ignored rather than trusted.
fn apply_stored(risk: &Risk, revision: u64, value: &[u8]) {
    match serde_json::from_slice::<RiskLimits>(value) {
        Ok(limits) if limits.validate().is_ok() => risk.apply_limits(revision, limits),
        _ => warn!(revision, "ignoring invalid limits in KV"),
    }
}

/// How long an assessment waits for the fill it names before it also
/// reads the newest fill the stream holds (see [`reach`]).
const NEWEST_FILL_AFTER: Duration = Duration::from_millis(50);

/// Whether the book gets to the fill at `sequence` within `within`:
/// `until(n)` ends once it holds the fill at `n`; `newest()` reads the
/// newest fill the stream holds (`None`: it could not be read).
///
/// The book is mostly there already, or a few ms behind (back-to-back
/// orders): it is waited for alone for `after`, which costs no request.
/// Only a book still behind then reads the newest fill — the caller's
/// number may be of an `EVENTS` stream created again since, past every
/// fill the stream holds — and needs only that one, while it still waits
/// for the caller's number: a slow read (a busy stream leader) does not
/// fail a book that got there meanwhile.
async fn reach<U, UF, N, NF>(
    sequence: u64,
    until: U,
    newest: N,
    after: Duration,
    within: Duration,
) -> bool
where
    U: Fn(u64) -> UF,
    UF: std::future::Future<Output = ()>,
    N: FnOnce() -> NF,
    NF: std::future::Future<Output = Option<u64>>,
{
    let wait = async {
        if tokio::time::timeout(after, until(sequence)).await.is_ok() {
            return;
        }
        let by_newest = async {
            match newest().await {
                Some(newest) if newest < sequence => until(newest).await,
                _ => std::future::pending().await,
            }
        };
        tokio::select! {
            () = until(sequence) => {}
            () = by_newest => {}
        }
    };
    tokio::time::timeout(within, wait).await.is_ok()
}

/// The dedup id an assessment is published under: the contract's
/// [`RiskAssessed::judged_event_id`] of `order_id` and the FNV-1a digest of
/// what it was `judged` by (the order as sent, the position, the limits'
/// revision, the verdict), so the order service and audit readers can
/// rebuild it; a random id for an order the caller did not name.
fn assessment_id(order_id: Option<&str>, judged: &impl Serialize) -> String {
    order_id.map_or_else(
        || nuid::next().to_string(),
        |order_id| {
            let digest = serde_json::to_vec(judged).map_or(0, |bytes| fnv1a(&bytes));
            RiskAssessed::judged_event_id(order_id, digest)
        },
    )
}

/// The 64-bit FNV-1a hash of `bytes`: stable across processes and
/// versions, unlike the standard library's hasher, so every instance names
/// the same assessment alike.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        time::Duration,
    };

    use tokio::sync::watch;

    use super::{RiskAssessed, assessment_id, fnv1a, reach};

    /// How long [`reach`] waits for the named fill alone, in these tests.
    const AFTER: Duration = Duration::from_millis(100);

    /// `until` of [`reach`] for a book whose sequence `held` tells.
    fn until(
        held: &watch::Receiver<u64>,
    ) -> impl Fn(u64) -> futures::future::BoxFuture<'static, ()> {
        let held = held.clone();
        move |wanted| {
            let mut held = held.clone();
            Box::pin(async move {
                let _ = held.wait_for(|at| *at >= wanted).await;
            })
        }
    }

    /// The book reaches the caller's fill a few ms in, while the read of
    /// the newest fill hangs (a busy stream leader): the assessment goes
    /// on, rather than fail on the read's time.
    // Paused time: the book's few ms and the rule's bounds are the
    // clock's, not a loaded machine's scheduling.
    #[tokio::test(start_paused = true)]
    async fn a_slow_read_of_the_newest_fill_does_not_fail_a_book_that_got_there() {
        let (tx, held) = watch::channel(3);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            tx.send_replace(5);
            std::future::pending::<()>().await;
        });
        let newest = || async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Some(5)
        };
        assert!(reach(5, until(&held), newest, AFTER, Duration::from_millis(300)).await);
    }

    /// A book a few ms behind (back-to-back orders) costs no request.
    // Paused time: the book's few ms and the rule's bounds are the
    // clock's, not a loaded machine's scheduling.
    #[tokio::test(start_paused = true)]
    async fn a_book_slightly_behind_reads_no_newest_fill() {
        let (tx, held) = watch::channel(3);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            tx.send_replace(5);
            std::future::pending::<()>().await;
        });
        let reads = AtomicUsize::new(0);
        let newest = || async {
            reads.fetch_add(1, Ordering::SeqCst);
            Some(5)
        };
        assert!(reach(5, until(&held), newest, AFTER, Duration::from_millis(300)).await);
        assert_eq!(reads.load(Ordering::SeqCst), 0);
    }

    /// A number past every fill the stream holds (of a stream created
    /// again since the caller learnt it) is judged by the newest fill.
    #[tokio::test]
    async fn a_number_past_the_stream_is_judged_by_the_newest_fill() {
        let (_tx, held) = watch::channel(3);
        let newest = || async { Some(3) };
        assert!(
            reach(
                1_000,
                until(&held),
                newest,
                AFTER,
                Duration::from_millis(300)
            )
            .await
        );
        let none = || async { None };
        assert!(!reach(1_000, until(&held), none, AFTER, Duration::from_millis(200)).await);
    }

    /// The published FNV-1a test vectors: the ids must not change between
    /// versions, or a retried assessment is stored twice in a rollout.
    #[test]
    fn the_assessment_digest_is_fnv1a() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    /// The id risk publishes an assessment under is the contract's
    /// `judged_event_id` of the order and the digest, not a format of its own.
    #[test]
    fn an_assessment_is_published_under_the_contracts_judged_id() {
        let judged = ("ord-1", 40_i64, 7_u64, true);
        let digest = fnv1a(&serde_json::to_vec(&judged).unwrap());
        assert_eq!(
            assessment_id(Some("ord-1"), &judged),
            RiskAssessed::judged_event_id("ord-1", digest)
        );
        assert_ne!(
            assessment_id(None, &judged),
            assessment_id(None, &judged),
            "an unnamed order's id is random"
        );
    }
}
