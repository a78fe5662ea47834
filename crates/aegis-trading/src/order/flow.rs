//! The create-order flow of [order-service](super), step by step, and the
//! reads. [`Desk`] holds what the handlers share: the order store, the RPC
//! targets and the counters.
//!
//! Why one module of over 500 lines: it is one flow, read top to bottom —
//! the steps of a create in order (quote, record, judge, decide, announce),
//! the sweep that resumes the same steps for orders left pending, and
//! beside each step the error that names what became of the order when it
//! fails. All are methods of one [`Desk`] that call each other and share
//! its store, its per-symbol turns and its newest-fill mark; split by step,
//! one create would span files. The records, the store, the fence and the
//! index are elsewhere.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aegis_contracts::{
    models::{FieldError, ValidationErrors},
    trading::{
        OrderCreated, OrderFilled, OrderRejected, Reason, ReasonCode, TradingEvent,
        validate_client_order_id, validate_symbol,
    },
};
use aegis_sdk::{
    Connection,
    events::Published,
    rpc::{CallOptions, ErrorCode, RequestContext, RpcError, WireError},
};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use serde::{Serialize, de::DeserializeOwned};
use tracing::{debug, warn};

use super::{
    KEPT_FOR_SECS, METRIC_CREATED, METRIC_EXPIRED, METRIC_FILLED, METRIC_REJECTED, METRIC_REPLAYED,
    METRIC_TAKEN_OVER,
    model::{
        CreateOrder, GetOrder, ListOrders, MAX_LIST_LIMIT, Order, OrderList, OrderStatus, decide,
        trade_price,
    },
    store::{OrderStore, StoreError},
    term::{Standing, Term, standing},
};
use crate::{
    common::{self, Counters},
    pricing::{GetPrice, Quote},
    risk::{AssessRisk, OrderToAssess, RiskAssessment},
};

/// The instance's state: where orders live and whom to ask.
#[derive(Debug)]
pub(super) struct Desk {
    pub(super) conn: Connection,
    pub(super) store: Arc<OrderStore>,
    /// The `EVENTS` stream, to read the newest fill's sequence from.
    pub(super) events: Stream,
    pub(super) pricing: String,
    pub(super) risk: String,
    pub(super) call_timeout: Duration,
    /// See [`OrderOptions::expire_after`](super::OrderOptions::expire_after).
    pub(super) expire_after: Duration,
    /// See [`OrderOptions::stale_after`](super::OrderOptions::stale_after).
    pub(super) stale_after: Duration,
    pub(super) counters: Counters,
    /// One turn per symbol: see [`Desk::judge`].
    pub(super) symbols: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The newest fill this leader knows of, and the term it learnt it
    /// under from the stream: see [`Desk::newest_fill`].
    pub(super) newest_fill: tokio::sync::Mutex<NewestFill>,
}

/// The `EVENTS` sequence of the newest fill a leader knows of.
#[derive(Debug, Default)]
pub(super) struct NewestFill {
    /// The term under which it was last read from the stream (`None`:
    /// never, or to be read again).
    term: Option<Term>,
    sequence: u64,
}

/// On whose behalf the flow runs — a request, or the recovery sweep of a
/// new leader — and under which term it writes: its fencing epoch and the
/// elections bucket it won it in (`term.rs`), as of the fence it holds.
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub(super) instance_id: Arc<str>,
    pub(super) request_id: Option<String>,
    pub(super) term: Term,
}

/// The epoch of a leader-only request: the SDK ran the handler because
/// this instance holds a valid lease, and says at which epoch.
fn epoch_of(ctx: &RequestContext) -> u64 {
    ctx.epoch.unwrap_or(0)
}

/// How one attempt to finish an order ended.
enum Attempt {
    /// This attempt recorded the decision (boxed: an order is large).
    Decided(Box<Order>),
    /// Another writer changed the order (id) first.
    Lost(String),
}

impl Desk {
    pub(super) async fn create_order(
        &self,
        ctx: RequestContext,
        req: CreateOrder,
    ) -> Result<Order, WireError> {
        req.validate().map_err(common::invalid)?;
        // The term every order this request finds is judged against, and
        // its writes carry: the fence is taken here if it is not held.
        let caller = Caller {
            instance_id: ctx.instance_id.clone(),
            request_id: ctx.request_id.clone(),
            term: self.store.term(epoch_of(&ctx)).await?,
        };
        let candidate = format!("ord-{}", nuid::next());
        let order_id = self.store.claim(&req.client_order_id, &candidate).await?;

        let found = self.store.load(&order_id).await?;
        if let Some((revision, order)) = &found {
            if !order.matches(&req) {
                return Err(reused(&req, order));
            }
            if order.status.is_final() {
                return match self.replay(&caller, *revision, order.clone()).await {
                    Ok(order) => Ok(order),
                    Err(e) => Err(self.recorded(e, order).await),
                };
            }
        }
        // A retry too late to trade learns that its order expired, also
        // while pricing is down: no quote is needed for that.
        if let Some((revision, order)) = &found
            && self.expired(order)
        {
            return match self.expire(&caller, *revision, order.clone()).await {
                Ok(order) => Ok(order),
                Err(e) => Err(self.recorded(e, order).await),
            };
        }
        // Quote before recording, so an unknown symbol leaves no order behind.
        let quote = match self.quote(&caller, &req.symbol).await {
            Ok(quote) => quote,
            // A retry of an order recorded before: the error names it too.
            Err(e) => {
                return Err(match &found {
                    // Not traded now (pricing's catalog changed): retrying
                    // does not decide it while that lasts.
                    Some((_, order)) if e.code == ErrorCode::InvalidRequest => {
                        self.unquoted(e, order).await
                    }
                    Some((_, order)) => self.recorded(e, order).await,
                    None => e,
                });
            }
        };
        let (revision, order) = match found {
            Some(found) => found,
            None => {
                let order = Order::new_under(order_id, &req, caller.term, &caller.instance_id);
                match self.store.insert(&order).await {
                    Ok(revision) => {
                        self.counters.add(METRIC_CREATED, 1.0);
                        (revision, order)
                    }
                    // Another request with this client order id got there
                    // first: a retry of this one, or a different order
                    // reusing the id, which must not be answered as ours.
                    Err(StoreError::Exists) => {
                        let (revision, stored) = self.reload(&order.order_id, &caller).await?;
                        if !stored.matches(&req) {
                            return Err(reused(&req, &stored));
                        }
                        (revision, stored)
                    }
                    // Perhaps stored all the same: say so if it was.
                    Err(e) => return Err(self.perhaps_recorded(e.into(), &order).await),
                }
            }
        };
        let recorded = order.clone();
        let finished = async {
            if order.status.is_final() {
                return self.replay(&caller, revision, order).await;
            }
            // `matches` compared symbols, but the quote must be of the order
            // being decided, whatever a future change of `matches` allows.
            let quote = if quote.symbol == order.symbol {
                quote
            } else {
                self.quote(&caller, &order.symbol).await?
            };
            self.finish(&caller, revision, order, &quote).await
        };
        match finished.await {
            Ok(order) => Ok(order),
            Err(e) => Err(self.recorded(e, &recorded).await),
        }
    }

    /// `e`, said of an order that is recorded: which one (`order_id` and
    /// `client_order_id` in the details), and what is known of it — the
    /// caller must not take the failure for "nothing happened" and place it
    /// again under a new id, nor guess its outcome:
    /// - decided (`status` in the details: filled or rejected): so it
    ///   stays, and only its event is late — a retry with the same client
    ///   order id publishes it, else the leader's sweep does;
    /// - pending (`status` pending): a retry with the same client order id
    ///   decides it; unless retried within `expire_after` of its creation
    ///   it is rejected as expired, never filled later;
    /// - not known (the store could not be read): a retry tells.
    async fn recorded(&self, e: WireError, order: &Order) -> WireError {
        if e.details
            .as_ref()
            .is_some_and(|d| d.get("order_id").is_some())
        {
            // Said already, where it was known (see `unannounced`).
            return e;
        }
        match self.stored(&order.order_id).await {
            Some(Some(stored)) if stored.status.is_final() => self.unannounced(e, &stored),
            Some(Some(stored)) => self.pending(e, &stored),
            // Deleted by hand, or the store is unavailable too.
            Some(None) | None => named(
                e,
                order,
                None,
                format!(
                    "order {} was recorded, but whether it was decided could not be read: a \
                     retry with the same client_order_id {} (idempotent) answers it; while \
                     it is pending, unless retried within {} s of its creation it is rejected \
                     as expired, not filled",
                    order.order_id,
                    order.client_order_id,
                    self.expire_after.as_secs()
                ),
            ),
        }
    }

    /// [`recorded`](Self::recorded) for an order whose storing failed:
    /// said of the order if it was stored all the same, else as it is.
    async fn perhaps_recorded(&self, e: WireError, order: &Order) -> WireError {
        match self.stored(&order.order_id).await {
            Some(None) => e,
            Some(Some(stored)) if stored.status.is_final() => self.unannounced(e, &stored),
            Some(Some(stored)) => self.pending(e, &stored),
            None => named(
                e,
                order,
                None,
                format!(
                    "order {} may have been recorded: a retry with the same client_order_id {} \
                     (idempotent) answers it or places it; if it was recorded and is not \
                     retried within {} s of its creation it is rejected as expired, not filled",
                    order.order_id,
                    order.client_order_id,
                    self.expire_after.as_secs()
                ),
            ),
        }
    }

    /// The order as stored, read to tell a failed caller what is known:
    /// `None` when that could not be read within half the call timeout (the
    /// store failing too, say), so the answer is not held up by it.
    async fn stored(&self, order_id: &str) -> Option<Option<Order>> {
        match tokio::time::timeout(self.call_timeout / 2, self.store.load(order_id)).await {
            Ok(Ok(found)) => Some(found.map(|(_, order)| order)),
            Ok(Err(_)) | Err(_) => None,
        }
    }

    /// `e`, said of a recorded order whose symbol pricing does not quote:
    /// while that lasts no retry can decide it, so it is not said to.
    async fn unquoted(&self, e: WireError, order: &Order) -> WireError {
        match self.stored(&order.order_id).await {
            Some(Some(stored)) if stored.status.is_final() => self.unannounced(e, &stored),
            Some(Some(stored)) => {
                let says = format!(
                    "order {} was recorded and is pending, but it cannot be decided while {} is \
                     not quoted: a retry with the same client_order_id {} decides it once it \
                     is; unless that is within {} s of its creation it is rejected as \
                     expired, not filled",
                    stored.order_id,
                    stored.symbol,
                    stored.client_order_id,
                    self.expire_after.as_secs()
                );
                named(e, &stored, Some(stored.status), says)
            }
            Some(None) | None => self.recorded(e, order).await,
        }
    }

    /// `e`, said of a pending order.
    fn pending(&self, e: WireError, order: &Order) -> WireError {
        let says = format!(
            "order {} was recorded and is pending: its outcome is decided by retrying with the \
             same client_order_id {} (idempotent); unless retried within {} s of its creation \
             it is rejected as expired, not filled",
            order.order_id,
            order.client_order_id,
            self.expire_after.as_secs()
        );
        named(e, order, Some(order.status), says)
    }

    /// `e`, said of a decided `order` (as stored): how it was decided and,
    /// unless it was announced, that its event follows.
    fn unannounced(&self, e: WireError, order: &Order) -> WireError {
        let outcome = match order.status {
            OrderStatus::Filled => match order.fill_price {
                Some(price) => format!("filled at {price}"),
                None => "filled".to_owned(),
            },
            _ => {
                let codes: Vec<String> = order
                    .reasons
                    .iter()
                    .filter_map(|r| serde_json::to_value(r.code).ok())
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect();
                format!("rejected ({})", codes.join(", "))
            }
        };
        let event = if order.announced {
            "its event is published".to_owned()
        } else {
            format!(
                "only its event is not published yet: a retry with the same client_order_id {} \
                 publishes it and answers the order, else the leader publishes it within about \
                 {} s",
                order.client_order_id,
                (self.stale_after * 3 / 2).as_secs().max(1)
            )
        };
        let says = format!(
            "order {} is {outcome}: that is decided and stored; {event}",
            order.order_id
        );
        named(e, order, Some(order.status), says)
    }

    /// Sees to the orders left unsettled, so no recorded order dangles:
    /// announces decided orders whose outcome is not on record as announced
    /// (left by older leaders, or by requests of this one that gave up
    /// `stale_after` ago), and rejects as expired the pending ones older
    /// than `expire_after`. A younger pending order is left to its caller's
    /// retry: filling it here would trade behind the back of a caller told
    /// that its order failed.
    /// Stops early when this instance no longer leads at the caller's epoch;
    /// whatever is left, the next sweep or the next leader resumes.
    pub(super) async fn resume_pending(
        &self,
        caller: &Caller,
        stale_after: Duration,
        still_leading: impl Fn() -> bool,
    ) {
        let now = chrono::Utc::now();
        let before =
            |d: Duration| now - chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        let due =
            self.store
                .unfinished(caller.term, before(stale_after), before(self.expire_after));
        for order_id in due {
            if !still_leading() {
                return;
            }
            if let Err(e) = self.resume(caller, &order_id).await {
                warn!(order_id, code = %e.code, error = %e.message, "cannot finish a pending order yet; will try again");
            }
        }
    }

    async fn resume(&self, caller: &Caller, order_id: &str) -> Result<(), WireError> {
        let (revision, order) = self.reload(order_id, caller).await?;
        if order.status.is_final() {
            self.settle(caller, revision, order).await?;
        } else if self.expired(&order) {
            self.expire(caller, revision, order).await?;
        }
        Ok(())
    }

    /// Whether `order` was created longer than `expire_after` ago.
    fn expired(&self, order: &Order) -> bool {
        chrono::Utc::now()
            .signed_duration_since(order.created_at)
            .to_std()
            .is_ok_and(|age| age > self.expire_after)
    }

    /// Rejects the pending `order` as expired, fenced by the caller's term;
    /// if another writer decided it first, answers that decision.
    async fn expire(
        &self,
        caller: &Caller,
        mut revision: u64,
        mut order: Order,
    ) -> Result<Order, WireError> {
        for _ in 0..3 {
            if order.status.is_final() {
                return self.replay(caller, revision, order).await;
            }
            if standing(order.term(), caller.term) == Standing::Newer {
                return Err(deposed());
            }
            let mut expired = order.clone();
            expired.status = OrderStatus::Rejected;
            expired.reasons = vec![Reason::new(
                ReasonCode::Expired,
                format!(
                    "not decided within {} s of being recorded (its request failed and was \
                     not retried in time)",
                    self.expire_after.as_secs()
                ),
            )];
            expired.updated_at = chrono::Utc::now();
            expired.write_under(caller.term, &caller.instance_id);
            expired.announced = false;
            match self.store.replace(&expired, revision).await {
                Ok(written) => {
                    self.counters.add(METRIC_REJECTED, 1.0);
                    self.counters.add(METRIC_EXPIRED, 1.0);
                    // Announces its creation too, unless the order records
                    // that it was (see `announce`).
                    return self.settle(caller, written, expired).await;
                }
                Err(StoreError::Changed) => {
                    (revision, order) = self.reload(&order.order_id, caller).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Changed.into())
    }

    /// Takes a pending order to its decision, fenced by the caller's term.
    ///
    /// Another writer on this same leader — the recovery sweep, or a
    /// duplicate request — may be finishing the same order; whoever loses a
    /// compare-and-set reads the order again and carries on from there (or
    /// answers the decision the other one recorded). The steps it repeats
    /// are safe to repeat: events are deduplicated, the assessment is named
    /// after the order.
    async fn finish(
        &self,
        caller: &Caller,
        mut revision: u64,
        mut order: Order,
        quote: &Quote,
    ) -> Result<Order, WireError> {
        for _ in 0..3 {
            // Too late to trade: its caller gave up long ago (or never
            // learnt it was recorded); a retry this late learns it expired.
            if self.expired(&order) {
                return self.expire(caller, revision, order).await;
            }
            match self.try_finish(caller, revision, order, quote).await? {
                Attempt::Decided(decided) => return Ok(*decided),
                Attempt::Lost(order_id) => {
                    (revision, order) = self.reload(&order_id, caller).await?;
                    if order.status.is_final() {
                        return self.replay(caller, revision, order).await;
                    }
                }
            }
        }
        Err(StoreError::Changed.into())
    }

    /// One attempt of [`finish`](Self::finish).
    async fn try_finish(
        &self,
        caller: &Caller,
        mut revision: u64,
        mut order: Order,
        quote: &Quote,
    ) -> Result<Attempt, WireError> {
        match standing(order.term(), caller.term) {
            Standing::Newer => return Err(deposed()),
            Standing::Own => {}
            Standing::Older => {
                // An older leader recorded it and never decided it — of
                // this elections bucket or of one deleted since: claim it
                // for this term first, so that leader's late write fails.
                order.write_under(caller.term, &caller.instance_id);
                revision = match self.store.replace(&order, revision).await {
                    Ok(revision) => revision,
                    Err(StoreError::Changed) => return Ok(Attempt::Lost(order.order_id)),
                    Err(e) => return Err(e.into()),
                };
                self.counters.add(METRIC_TAKEN_OVER, 1.0);
            }
        }
        if order.created_announced {
            // An earlier attempt published it and recorded that it did.
            return self.judge(caller, revision, order, quote).await;
        }
        // The newest fill known before this publish: a fresh event stored
        // at or below it means EVENTS started over (see `newest_fill`).
        let known = self.newest_fill.lock().await.sequence;
        let created = self
            .publish(
                OrderCreated::event_id(&order.order_id),
                &order.created_event(),
            )
            .await?;
        if !created.duplicate && created.sequence <= known {
            debug!(
                sequence = created.sequence,
                known, "EVENTS started over; reading the newest fill again"
            );
            self.newest_fill.lock().await.term = None;
        }
        // Recorded by the write that decides the order, which the flow
        // makes anyway: no round trip of its own on the way to a decision.
        order.created_announced = true;
        let announced = order.clone();
        let judged = self.judge(caller, revision, order, quote).await;
        if judged.is_err() {
            self.record_created(revision, &announced).await;
        }
        judged
    }

    /// Records on the pending `order`, as of `revision`, that its
    /// `events.order.created` is published, when the attempt that published
    /// it failed before the decision could record it (risk down, say): so
    /// neither the retry nor the expiry publishes it again, which after the
    /// stream's dedup window (two minutes) would store it a second time.
    ///
    /// One fenced compare-and-set, on the failure path only, within half
    /// the call timeout so the caller's answer is not held up. When it
    /// fails — another writer changed the order (a decision recorded, which
    /// records it too), the store fails as well, a newer leader — the next
    /// attempt publishes the event again: stored once within the dedup
    /// window, a second time only after it.
    async fn record_created(&self, revision: u64, order: &Order) {
        let write = self.store.replace(order, revision);
        match tokio::time::timeout(self.call_timeout / 2, write).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                debug!(order_id = %order.order_id, error = ?e, "created event published, not recorded as announced");
            }
            Err(_) => {
                debug!(order_id = %order.order_id, "created event published, its record timed out");
            }
        }
    }

    /// Assesses, decides and settles `order`, in its symbol's turn.
    ///
    /// The position limit is judged by risk-service's book, which counts an
    /// order only once its fill comes back from the `EVENTS` stream. So,
    /// that no order is judged by a position missing another's fill:
    /// - orders of one symbol take turns on this leader, from the
    ///   assessment until the decision is stored and its fill published
    ///   (orders of different symbols do not wait for each other);
    /// - fills of the symbol that were decided but not announced (a failed
    ///   publish; a deposed leader's) are announced first;
    /// - risk is told the sequence of the newest fill this leader knows
    ///   of, and judges only once its book holds it;
    /// - an order another writer of this leader decided while this one
    ///   waited for the turn is not judged again (risk would store a
    ///   second verdict, by a position holding the order's own fill).
    async fn judge(
        &self,
        caller: &Caller,
        revision: u64,
        mut order: Order,
        quote: &Quote,
    ) -> Result<Attempt, WireError> {
        let turn = {
            let mut symbols = self.symbols.lock().unwrap_or_else(|e| e.into_inner());
            symbols.entry(order.symbol.clone()).or_default().clone()
        };
        let _turn = turn.lock().await;
        self.announce_fills_of(caller, &order.symbol).await?;
        // Another writer of this leader (a duplicate request, a retry
        // racing its slow first attempt, the sweep) decided the order while
        // this one waited for the turn: judging it again would have risk
        // store a second verdict, by a position that now holds the order's
        // own fill. Read that decision instead.
        if self.store.written_since(&order.order_id, revision) {
            return Ok(Attempt::Lost(order.order_id));
        }
        let after_fill = self.newest_fill(caller.term).await?;
        let assessment = match self.assess(caller, &order, quote, after_fill).await {
            Ok(assessment) => assessment,
            Err(e) => {
                // Perhaps the stream started over and holds no such fill:
                // read the newest one from it again next time.
                self.newest_fill.lock().await.term = None;
                return Err(e);
            }
        };
        decide(&mut order, quote, &assessment);
        order.write_under(caller.term, &caller.instance_id);
        order.announced = false;
        let revision = match self.store.replace(&order, revision).await {
            Ok(revision) => revision,
            Err(StoreError::Changed) => return Ok(Attempt::Lost(order.order_id)),
            Err(e) => return Err(e.into()),
        };
        let decided = if order.status == OrderStatus::Filled {
            METRIC_FILLED
        } else {
            METRIC_REJECTED
        };
        self.counters.add(decided, 1.0);
        let order = self.settle(caller, revision, order).await?;
        Ok(Attempt::Decided(Box::new(order)))
    }

    /// Waits, within the call timeout, until the order index holds every
    /// order stored before this leader took the fence at `epoch` — an older
    /// leader's last writes among them (`OrderStore::caught_up`);
    /// SERVICE_UNAVAILABLE past it. Once the index has passed the fence,
    /// which in steady state it has, this returns at once.
    async fn index_caught_up(&self, epoch: u64) -> Result<(), WireError> {
        let wait = async {
            self.store.loaded().await;
            self.store.caught_up(epoch).await
        };
        match tokio::time::timeout(self.call_timeout, wait).await {
            Ok(caught_up) => caught_up.map_err(WireError::from),
            Err(_) => Err(WireError::service_unavailable(
                "the order index is catching up with the store; retry",
            )),
        }
    }

    /// Announces the fills of `symbol` that are decided but not announced,
    /// so risk counts them before the next order of the symbol is judged;
    /// fails when one cannot be.
    async fn announce_fills_of(&self, caller: &Caller, symbol: &str) -> Result<(), WireError> {
        // The index must hold every stored order to name them all: the
        // older leaders' too, which its watch may not have handed over yet.
        self.index_caught_up(caller.term.epoch).await?;
        for order_id in self.store.unannounced_fills(symbol) {
            // Gone (deleted by hand): nothing to announce.
            if let Some((revision, order)) = self.store.load(&order_id).await?
                && order.status == OrderStatus::Filled
            {
                self.settle(caller, revision, order).await?;
            }
        }
        Ok(())
    }

    /// The `EVENTS` sequence of the newest fill this leader knows of: read
    /// from the stream once per term — a new leader learns there what its
    /// predecessors published — and raised by every fill it publishes.
    ///
    /// Read again, and lowered if the stream says so, when the stream was
    /// created again (deleted and re-made by an operator, restored from an
    /// older backup): its sequences start over. That shows at the next
    /// order when its `events.order.created` is stored fresh at a sequence
    /// no higher than the newest fill known before it was published, which
    /// in one stream cannot be (`try_finish`); not when the new stream has
    /// passed the old number already. Either way risk does not wait for a
    /// number past every fill the stream holds: it judges by the newest
    /// one there is (see `risk::Risk::caught_up`): once its positions have
    /// not reached the number within a short wait (50 ms), it reads that
    /// fill, per such assessment until the number is right again. It is
    /// read again after a failed assessment too.
    async fn newest_fill(&self, term: Term) -> Result<u64, WireError> {
        let mut newest = self.newest_fill.lock().await;
        if newest.term != Some(term) {
            let stored = match self
                .events
                .get_last_raw_message_by_subject(&OrderFilled::subject())
                .await
            {
                Ok(msg) => msg.sequence,
                Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => 0,
                Err(e) => {
                    warn!(error = %aegis_sdk::startup::Causes(&e), "cannot read the newest fill");
                    return Err(WireError::service_unavailable(
                        "the order events are unavailable; retry",
                    ));
                }
            };
            // The stream holds every fill acknowledged so far (`announce`
            // raises the number under this same lock), so what it says
            // replaces what was known: lower only if it started over.
            *newest = NewestFill {
                term: Some(term),
                sequence: stored,
            };
        }
        Ok(newest.sequence)
    }

    /// Answers a retry of a decided order, announcing its outcome first if
    /// that is not on record yet.
    async fn replay(
        &self,
        caller: &Caller,
        revision: u64,
        order: Order,
    ) -> Result<Order, WireError> {
        let order = self.settle(caller, revision, order).await?;
        self.counters.add(METRIC_REPLAYED, 1.0);
        Ok(order)
    }

    /// Publishes a decided order's outcome unless the order records that it
    /// was — preceded by its `events.order.created` unless the order records
    /// that one (an order expired before its creation was announced) — then
    /// records that both were: so each retry or sweep does not publish them
    /// again, which past the stream's dedup window would store them again.
    ///
    /// Publish first, record second: a crash between the two publishes it
    /// once more later (stored once within the dedup window; risk-service
    /// recognises the fill again within its own window), while the other
    /// order could lose the event for good. When the record fails, the
    /// outcome is still published, so the caller gets the decided order;
    /// the next sweep records it.
    async fn settle(
        &self,
        caller: &Caller,
        revision: u64,
        order: Order,
    ) -> Result<Order, WireError> {
        if order.announced {
            return Ok(order);
        }
        if let Err(e) = self.announce(&order).await {
            return Err(self.unannounced(e, &order));
        }
        if standing(order.term(), caller.term) == Standing::Newer {
            // A newer leader wrote it last; the record is its to make.
            return Ok(order);
        }
        let mut settled = order.clone();
        settled.created_announced = true;
        settled.announced = true;
        settled.write_under(caller.term, &caller.instance_id);
        match self.store.replace(&settled, revision).await {
            Ok(_) => Ok(settled),
            // Another writer of this leader (the sweep, a duplicate request)
            // recorded it meanwhile: answer what is stored.
            Err(StoreError::Changed) => match self.store.load(&order.order_id).await {
                Ok(Some((_, stored))) if stored.announced => Ok(stored),
                _ => Ok(order),
            },
            Err(e) => {
                debug!(order_id = %order.order_id, error = ?e, "outcome published, not yet recorded as announced");
                Ok(order)
            }
        }
    }

    /// Reads the order again; an undecided one written under a newer term
    /// than `caller`'s belongs to a newer leader, and this one steps aside.
    async fn reload(&self, order_id: &str, caller: &Caller) -> Result<(u64, Order), WireError> {
        let (revision, order) = self
            .store
            .load(order_id)
            .await?
            .ok_or_else(|| WireError::internal(format!("order {order_id} vanished")))?;
        if standing(order.term(), caller.term) == Standing::Newer && !order.status.is_final() {
            return Err(deposed());
        }
        Ok((revision, order))
    }

    /// Publishes a decided order's events: its creation first unless the
    /// order records it was announced, then its outcome.
    async fn announce(&self, order: &Order) -> Result<(), WireError> {
        if !order.created_announced {
            self.publish(
                OrderCreated::event_id(&order.order_id),
                &order.created_event(),
            )
            .await?;
        }
        if let Some(filled) = order.filled_event() {
            let sequence = self
                .publish(OrderFilled::event_id(&order.order_id), &filled)
                .await?
                .sequence;
            let mut newest = self.newest_fill.lock().await;
            newest.sequence = newest.sequence.max(sequence);
        }
        if let Some(rejected) = order.rejected_event() {
            self.publish(OrderRejected::event_id(&order.order_id), &rejected)
                .await?;
        }
        Ok(())
    }

    /// Publishes `event` under the dedup id `id`: where in `EVENTS` it is
    /// stored (the first copy's sequence, for a repeat).
    async fn publish<E: TradingEvent>(
        &self,
        id: String,
        event: &E,
    ) -> Result<Published, WireError> {
        self.conn
            .events()
            .publish_with_id(E::DOMAIN, E::ACTION, &id, event)
            .await
            .map_err(|e| {
                warn!(error = %aegis_sdk::startup::Causes(&e), id, "cannot publish an order event");
                WireError::service_unavailable("the order event could not be published; retry")
            })
    }

    /// Options for calls to pricing and risk: both are safe to repeat (a
    /// quote is a read; an assessment is named after the order), so an
    /// attempt that times out is retried on another instance.
    fn call_options(&self, caller: &Caller) -> CallOptions {
        CallOptions {
            timeout: Some(self.call_timeout),
            idempotent: true,
            request_id: caller.request_id.clone(),
            ..Default::default()
        }
    }

    async fn quote(&self, caller: &Caller, symbol: &str) -> Result<Quote, WireError> {
        let req = GetPrice {
            symbol: symbol.to_owned(),
        };
        match self
            .call(&self.pricing, "get_price", &req, &self.call_options(caller))
            .await
        {
            Ok(quote) => Ok(quote),
            Err(e) if e.code() == ErrorCode::NotFound => {
                // Pricing's details name the symbols it prices.
                let priced = e
                    .remote()
                    .and_then(|w| w.details.as_ref())
                    .and_then(crate::pricing::priced_words)
                    .map_or_else(String::new, |words| format!(" (priced: {words})"));
                Err(common::invalid(ValidationErrors(vec![FieldError {
                    field: "symbol".to_owned(),
                    message: format!("{symbol} is not a traded symbol{priced}"),
                }])))
            }
            Err(e) => Err(dependency_failed(&self.pricing, &e)),
        }
    }

    async fn assess(
        &self,
        caller: &Caller,
        order: &Order,
        quote: &Quote,
        after_fill: u64,
    ) -> Result<RiskAssessment, WireError> {
        let req = AssessRisk {
            order: OrderToAssess {
                order_id: Some(order.order_id.clone()),
                symbol: order.symbol.clone(),
                side: order.side,
                quantity: order.quantity,
                // The price it fills at, not its limit or the mid: what
                // its notional will be.
                price: trade_price(order, quote),
            },
            after_fill: Some(after_fill),
        };
        self.call(&self.risk, "assess_risk", &req, &self.call_options(caller))
            .await
            .map_err(|e| dependency_failed(&self.risk, &e))
    }

    async fn call<Req: Serialize, Res: DeserializeOwned>(
        &self,
        service: &str,
        method: &str,
        req: &Req,
        opts: &CallOptions,
    ) -> Result<Res, RpcError> {
        // Through discovery: an ACTIVE instance is picked and one that died
        // is skipped within the deadline.
        let reply = self
            .conn
            .rpc()
            .call_with(service, method, req, opts)
            .await?;
        Ok(reply.value)
    }

    pub(super) async fn get_order(&self, req: GetOrder) -> Result<Order, WireError> {
        // Order ids are KV key tokens; anything else cannot name an order.
        if validate_client_order_id(&req.order_id).is_err() {
            return Err(WireError::invalid_request(
                "order_id is not a valid order id",
            ));
        }
        match self.store.load(&req.order_id).await? {
            Some((_, order)) => Ok(order),
            None => {
                let kept = self.store.keep_settled();
                Err(WireError::not_found(format!(
                    "no order {}: settled orders are kept for {}",
                    req.order_id,
                    humantime::format_duration(kept)
                ))
                .with_details(serde_json::Value::Object(
                    [(KEPT_FOR_SECS.to_owned(), kept.as_secs().into())]
                        .into_iter()
                        .collect(),
                )))
            }
        }
    }

    /// The orders matching `req` from the index, once it holds every
    /// order stored before this leader took the fence at `ctx`'s epoch (as
    /// an order's judgement waits for): within the call timeout, else
    /// SERVICE_UNAVAILABLE "catching up; retry" — never a listing from an
    /// index that misses an older leader's last orders, or holds a deleted
    /// bucket's, without saying so.
    pub(super) async fn list_orders(
        &self,
        ctx: RequestContext,
        req: Option<ListOrders>,
    ) -> Result<OrderList, WireError> {
        let req = req.unwrap_or_default();
        let limit = req.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(WireError::invalid_request(format!(
                "limit must be 1 to {MAX_LIST_LIMIT}"
            )));
        }
        if let Some(symbol) = &req.symbol {
            validate_symbol(symbol).map_err(|e| WireError::invalid_request(e.message))?;
        }
        // A listing read from a half-loaded index, or one whose watch has
        // not handed over what older leaders stored (it lags, is being
        // made again, or follows a bucket created again), would miss
        // orders and still say it is complete.
        self.index_caught_up(epoch_of(&ctx)).await?;
        Ok(self.store.list(&req, limit))
    }
}

/// `e` followed by what `says` of `order`, with the order named in the
/// details (and its `status`, when known).
fn named(e: WireError, order: &Order, status: Option<OrderStatus>, says: String) -> WireError {
    let mut details = match e.details {
        Some(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    details.insert("order_id".into(), order.order_id.clone().into());
    details.insert(
        "client_order_id".into(),
        order.client_order_id.clone().into(),
    );
    if let Some(status) = status.and_then(|s| serde_json::to_value(s).ok()) {
        details.insert("status".into(), status);
    }
    WireError::new(e.code, format!("{}; {says}", e.message))
        .with_details(serde_json::Value::Object(details))
}

/// `client_order_id` already names `order`, which is not what `req` asks for.
fn reused(req: &CreateOrder, order: &Order) -> WireError {
    WireError::new(
        ErrorCode::Conflict,
        format!(
            "client_order_id {} was used for a different order ({})",
            req.client_order_id, order.order_id
        ),
    )
}

fn deposed() -> WireError {
    WireError::not_active("a newer leader owns this order; retry on the active instance")
}

fn dependency_failed(service: &str, e: &RpcError) -> WireError {
    warn!(service, error = %aegis_sdk::startup::Causes(e), "a dependency call failed");
    match e.code() {
        ErrorCode::Timeout => WireError::new(
            ErrorCode::Timeout,
            format!("{service} did not answer in time; retry"),
        ),
        _ => WireError::service_unavailable(format!("{service} is unavailable; retry")),
    }
}
