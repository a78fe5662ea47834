//! The order service's records and requests, and its one business rule
//! ([`decide`]) as a pure function: what an order becomes given a quote and
//! a risk verdict.

use aegis_contracts::{
    models::{FieldError, ValidationErrors},
    trading::{
        OrderCreated, OrderFilled, OrderRejected, Reason, ReasonCode, Side,
        validate_client_order_id, validate_symbol,
    },
};
use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::term::Term;
use crate::{pricing::Quote, risk::RiskAssessment};

/// Most orders one `list_orders` call returns.
pub const MAX_LIST_LIMIT: usize = 1000;

/// `create_order` request. `price` makes it a limit order; without it the
/// order trades at the quote. Orders are immediate-or-cancel: they fill at
/// once or are rejected, never rest.
///
/// Unknown fields are refused, naming them: a limit sent as `limit_price`
/// (the stored order's name for it) must not trade as a market order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    /// The symbol, e.g. `AAPL`.
    pub symbol: String,
    /// `buy` or `sell`.
    pub side: Side,
    /// Quantity (positive).
    #[serde(deserialize_with = "whole_quantity")]
    pub quantity: i64,
    /// Limit price (positive), or `None` for a market order.
    #[serde(default)]
    pub price: Option<f64>,
    /// The caller's idempotency key: retrying with the same key returns the
    /// same order and never creates a second one.
    pub client_order_id: String,
}

/// Reads `quantity`, saying a number that is no whole number or too large
/// for one in the order's terms (serde's would be "expected i64").
fn whole_quantity<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    use serde::de::{Error, Visitor};

    fn too_large<E: Error>() -> E {
        E::custom(format!("quantity is too large (at most {})", i64::MAX))
    }

    struct Quantity;

    impl Visitor<'_> for Quantity {
        type Value = i64;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number of shares")
        }

        fn visit_i64<E: Error>(self, v: i64) -> Result<i64, E> {
            Ok(v)
        }

        fn visit_u64<E: Error>(self, v: u64) -> Result<i64, E> {
            i64::try_from(v).map_err(|_| too_large())
        }

        fn visit_f64<E: Error>(self, v: f64) -> Result<i64, E> {
            // JSON wrote it with a fraction or an exponent: say what is
            // wrong with it, whole or not, in range or not.
            let whole = v.is_finite() && v.fract() == 0.0;
            if whole && v >= 2f64.powi(63) {
                Err(too_large())
            } else if whole && v < -(2f64.powi(63)) {
                Err(E::custom("quantity must be a positive integer"))
            } else if whole {
                Err(E::custom(format!(
                    "quantity must be written as an integer, e.g. {v:.0} (no fraction or exponent)"
                )))
            } else {
                Err(E::custom("quantity must be a whole number"))
            }
        }
    }

    d.deserialize_i64(Quantity)
}

impl CreateOrder {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming each bad field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        if let Err(e) = validate_symbol(&self.symbol) {
            errors.push(e);
        }
        if self.quantity <= 0 {
            errors.push(field("quantity", "must be a positive integer"));
        }
        if let Some(price) = self.price
            && !(price.is_finite() && price > 0.0)
        {
            errors.push(field("price", "must be a positive number"));
        }
        if let Err(e) = validate_client_order_id(&self.client_order_id) {
            errors.push(e);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

fn field(field: &str, message: &str) -> FieldError {
    FieldError {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OrderStatus {
    /// Recorded, not decided yet (a retry or a new leader finishes it).
    Pending,
    /// Traded.
    Filled,
    /// Refused; see the reasons.
    Rejected,
}

impl OrderStatus {
    /// Whether the order is decided (filled or rejected) and will not change.
    pub fn is_final(self) -> bool {
        !matches!(self, OrderStatus::Pending)
    }
}

/// An order as stored in the KV bucket `orders` and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Order {
    /// The id the service assigned.
    pub order_id: String,
    /// The caller's idempotency key.
    pub client_order_id: String,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity.
    pub quantity: i64,
    /// Limit price, or `None` for a market order.
    #[serde(default)]
    pub limit_price: Option<f64>,
    /// Where it is in its life.
    pub status: OrderStatus,
    /// The price it traded at, once filled.
    #[serde(default)]
    pub fill_price: Option<f64>,
    /// The risk service's score, once assessed.
    #[serde(default)]
    pub risk_score: Option<f64>,
    /// Why it was rejected (empty otherwise).
    #[serde(default)]
    pub reasons: Vec<Reason>,
    /// When it was created.
    #[serde(with = "aegis_contracts::models::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    #[serde(with = "aegis_contracts::models::rfc3339")]
    #[schemars(with = "String")]
    pub updated_at: DateTime<Utc>,
    /// Whether its `events.order.created` is stored in `EVENTS`: an order
    /// is announced created once, not again on every retry or at its
    /// expiry, which past the stream's dedup window would store it again.
    /// Recorded in the write that decides it, or, when an attempt fails
    /// after the publish, in one write on that failure path. Absent in
    /// records written before the field existed: announced again once if
    /// still unsettled.
    #[serde(default)]
    pub created_announced: bool,
    /// Whether its outcome (`events.order.filled` or `events.order.rejected`)
    /// is stored in `EVENTS`: a decided order is announced once, not on
    /// every retry (absent in records written before the field existed:
    /// announced again once, on the next retry or sweep).
    #[serde(default)]
    pub announced: bool,
    /// The fencing epoch of the leader that last wrote it: a leader never
    /// overwrites a record written under a newer term than its own (see
    /// `elections_created`).
    pub epoch: u64,
    /// When the `service_elections` bucket that `epoch` was won in was
    /// created, in nanoseconds since the Unix epoch: with `epoch`, the
    /// writer's term. A bucket deleted and created again numbers its
    /// epochs from 1 anew, so epochs compare only within one bucket, and
    /// a term of the current bucket is newer than any of a bucket deleted
    /// since. Absent in records written before it was recorded, which
    /// are older than any leader's term (see `term.rs`).
    /// Written as RFC 3339 to the nanosecond (`term::bucket_time`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "super::term::bucket_time"
    )]
    #[schemars(with = "Option<String>")]
    pub elections_created: Option<i128>,
    /// The instance that last wrote it.
    pub instance_id: String,
}

impl Order {
    /// A new pending order, written at `epoch` with no elections bucket
    /// recorded, as a version before terms wrote them (order-service's own
    /// record the leader's whole term).
    pub fn new(order_id: String, req: &CreateOrder, epoch: u64, instance_id: &str) -> Self {
        let now = Utc::now();
        Self {
            order_id,
            client_order_id: req.client_order_id.clone(),
            symbol: req.symbol.clone(),
            side: req.side,
            quantity: req.quantity,
            limit_price: req.price,
            status: OrderStatus::Pending,
            fill_price: None,
            risk_score: None,
            reasons: Vec::new(),
            created_at: now,
            updated_at: now,
            created_announced: false,
            announced: false,
            epoch,
            elections_created: None,
            instance_id: instance_id.to_owned(),
        }
    }

    /// A new pending order, written by `instance_id` under `term`.
    pub(crate) fn new_under(
        order_id: String,
        req: &CreateOrder,
        term: Term,
        instance_id: &str,
    ) -> Self {
        Self {
            elections_created: term.elections,
            ..Self::new(order_id, req, term.epoch, instance_id)
        }
    }

    /// The term it was last written under.
    pub(crate) fn term(&self) -> Term {
        Term {
            elections: self.elections_created,
            epoch: self.epoch,
        }
    }

    /// Marks it as written by `instance_id` under `term`.
    pub(crate) fn write_under(&mut self, term: Term, instance_id: &str) {
        self.epoch = term.epoch;
        self.elections_created = term.elections;
        instance_id.clone_into(&mut self.instance_id);
    }

    /// Whether `req` asks for this very order (a retry), rather than reusing
    /// its client order id for a different one.
    pub fn matches(&self, req: &CreateOrder) -> bool {
        self.symbol == req.symbol
            && self.side == req.side
            && self.quantity == req.quantity
            && self.limit_price == req.price
    }

    /// The `events.order.created` payload.
    pub fn created_event(&self) -> OrderCreated {
        OrderCreated {
            order_id: self.order_id.clone(),
            client_order_id: self.client_order_id.clone(),
            symbol: self.symbol.clone(),
            side: self.side,
            quantity: self.quantity,
            limit_price: self.limit_price,
            created_at: self.created_at,
        }
    }

    /// Whether it is settled: decided and its outcome announced. Nothing
    /// more happens to it; it expires from the store `keep_settled` after
    /// the write that settled it.
    pub fn is_settled(&self) -> bool {
        self.status.is_final() && self.announced
    }

    /// The `events.order.filled` payload, for a filled order.
    pub fn filled_event(&self) -> Option<OrderFilled> {
        Some(OrderFilled {
            order_id: self.order_id.clone(),
            client_order_id: self.client_order_id.clone(),
            symbol: self.symbol.clone(),
            side: self.side,
            quantity: self.quantity,
            fill_price: self
                .fill_price
                .filter(|_| self.status == OrderStatus::Filled)?,
            filled_at: self.updated_at,
        })
    }

    /// The `events.order.rejected` payload, for a rejected order.
    pub fn rejected_event(&self) -> Option<OrderRejected> {
        (self.status == OrderStatus::Rejected).then(|| OrderRejected {
            order_id: self.order_id.clone(),
            client_order_id: self.client_order_id.clone(),
            symbol: self.symbol.clone(),
            side: self.side,
            quantity: self.quantity,
            reasons: self.reasons.clone(),
            rejected_at: self.updated_at,
        })
    }
}

/// The quote price `order` trades at: the ask for a buy, the bid for a sell.
fn touch(order: &Order, quote: &Quote) -> f64 {
    match order.side {
        Side::Buy => quote.ask,
        Side::Sell => quote.bid,
    }
}

/// Whether `order` trades against `quote`: a market order always does; a
/// limit order when its limit reaches the touch (a buy at or above the
/// ask, a sell at or below the bid).
fn marketable(order: &Order, quote: &Quote) -> bool {
    let touch = touch(order, quote);
    match (order.limit_price, order.side) {
        (None, _) => true,
        (Some(limit), Side::Buy) => limit >= touch,
        (Some(limit), Side::Sell) => limit <= touch,
    }
}

/// The price risk judges `order` at: the price it would fill at against
/// `quote`, which is the touch ([`decide`] fills a crossing limit order at
/// the touch, not at its limit) — so a sell limited at a cent is judged at
/// the bid it sells at, and a buy limited far above the market at the ask.
/// A limit order that does not cross is judged at its limit; [`decide`]
/// rejects it anyway.
pub fn trade_price(order: &Order, quote: &Quote) -> f64 {
    match order.limit_price {
        Some(limit) if !marketable(order, quote) => limit,
        _ => touch(order, quote),
    }
}

/// Decides a pending order: rejected when risk refuses it or a limit price
/// does not reach the quote (buy below the ask, sell above the bid);
/// otherwise filled at the quote's ask (buy) or bid (sell) — a limit order
/// that crosses gets the better quote price, not its limit.
pub fn decide(order: &mut Order, quote: &Quote, risk: &RiskAssessment) {
    let touch = touch(order, quote);
    let mut reasons = risk.reasons.clone();
    if !marketable(order, quote) {
        reasons.push(Reason::new(
            ReasonCode::LimitNotMarketable,
            format!(
                "limit {:.2} does not reach the {} at {touch:.2}",
                order.limit_price.unwrap_or_default(),
                if order.side == Side::Buy {
                    "ask"
                } else {
                    "bid"
                },
            ),
        ));
    }
    order.risk_score = Some(risk.risk_score);
    order.updated_at = Utc::now();
    if risk.approved && reasons.is_empty() {
        order.status = OrderStatus::Filled;
        order.fill_price = Some(touch);
    } else {
        order.status = OrderStatus::Rejected;
        order.reasons = reasons;
    }
}

/// `get_order` request. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetOrder {
    /// The order's id.
    pub order_id: String,
}

/// `list_orders` request; every field optional, unknown ones refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListOrders {
    /// Only this symbol.
    #[serde(default)]
    pub symbol: Option<String>,
    /// Only orders in this status.
    #[serde(default)]
    pub status: Option<OrderStatus>,
    /// Most orders returned, newest first (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
}

/// `list_orders` reply. A listing covers the newest orders the instance
/// indexes (`OrderOptions::index_capacity`, default 10 000); `get_order`
/// finds any order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderList {
    /// The matching orders, newest first, at most `limit`.
    pub orders: Vec<Order>,
    /// How many of the indexed orders match.
    pub total: usize,
    /// True when older orders exist than the index holds: then `total`
    /// counts the newest ones only.
    #[serde(default)]
    pub truncated: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A quantity that is no whole number, or too large for one, is said
    /// in the order's terms, not serde's (`expected i64`).
    #[test]
    fn a_quantity_that_is_no_whole_number_is_said_in_the_orders_terms() {
        let decode = |quantity: &str| {
            serde_json::from_str::<CreateOrder>(&format!(
                r#"{{"symbol":"AAPL","side":"buy","quantity":{quantity},"client_order_id":"c-1"}}"#
            ))
        };
        assert_eq!(decode("10").unwrap().quantity, 10);
        // The published schema still says what it takes.
        let schema = serde_json::to_value(schemars::schema_for!(CreateOrder)).unwrap();
        assert_eq!(
            schema["properties"]["quantity"]["type"], "integer",
            "{schema}"
        );
        assert_eq!(decode("-3").unwrap().quantity, -3, "validate refuses it");
        for (quantity, says) in [
            (
                "1e30",
                "quantity is too large (at most 9223372036854775807)",
            ),
            (
                "9223372036854775808",
                "quantity is too large (at most 9223372036854775807)",
            ),
            ("2.5", "quantity must be a whole number"),
            ("-1e30", "quantity must be a positive integer"),
            (
                "10.0",
                "quantity must be written as an integer, e.g. 10 (no fraction or exponent)",
            ),
            (
                "1e3",
                "quantity must be written as an integer, e.g. 1000 (no fraction or exponent)",
            ),
        ] {
            let message = decode(quantity).unwrap_err().to_string();
            assert!(
                message.starts_with(says) && !message.contains("i64"),
                "{quantity}: {message}"
            );
        }
    }

    fn request(side: Side, price: Option<f64>) -> CreateOrder {
        CreateOrder {
            symbol: "AAPL".into(),
            side,
            quantity: 10,
            price,
            client_order_id: "c-1".into(),
        }
    }

    fn quote() -> Quote {
        Quote {
            symbol: "AAPL".into(),
            price: 175.0,
            bid: 174.9,
            ask: 175.1,
            timestamp: Utc::now(),
        }
    }

    fn approved() -> RiskAssessment {
        RiskAssessment {
            approved: true,
            risk_score: 1.0,
            reasons: vec![],
        }
    }

    #[test]
    fn requests_are_validated_field_by_field() {
        request(Side::Buy, None).validate().unwrap();
        let bad = CreateOrder {
            symbol: "a a".into(),
            side: Side::Buy,
            quantity: -1,
            price: Some(0.0),
            client_order_id: String::new(),
        };
        let errors = bad.validate().unwrap_err();
        for f in ["symbol", "quantity", "price", "client_order_id"] {
            assert!(errors.has(f), "{f}: {errors}");
        }
        let zero = CreateOrder {
            quantity: 0,
            ..request(Side::Buy, None)
        };
        assert!(zero.validate().unwrap_err().has("quantity"));
    }

    #[test]
    fn market_orders_fill_at_the_touch() {
        let mut buy = Order::new("o1".into(), &request(Side::Buy, None), 1, "i");
        decide(&mut buy, &quote(), &approved());
        assert_eq!(
            (buy.status, buy.fill_price),
            (OrderStatus::Filled, Some(175.1))
        );
        assert!(buy.filled_event().is_some() && buy.rejected_event().is_none());
        let mut sell = Order::new("o2".into(), &request(Side::Sell, None), 1, "i");
        decide(&mut sell, &quote(), &approved());
        assert_eq!(sell.fill_price, Some(174.9));
    }

    #[test]
    fn limits_that_do_not_reach_the_quote_are_rejected() {
        let mut buy = Order::new("o1".into(), &request(Side::Buy, Some(170.0)), 1, "i");
        decide(&mut buy, &quote(), &approved());
        assert_eq!(buy.status, OrderStatus::Rejected);
        assert_eq!(buy.reasons[0].code, ReasonCode::LimitNotMarketable);
        assert!(buy.rejected_event().is_some() && buy.filled_event().is_none());
        let mut crossing = Order::new("o2".into(), &request(Side::Buy, Some(180.0)), 1, "i");
        decide(&mut crossing, &quote(), &approved());
        assert_eq!(crossing.fill_price, Some(175.1));
    }

    /// Risk is sent the price the order fills at: a market buy sized to
    /// fit the notional limit at the mid but not at the ask is judged at
    /// the ask, and refused.
    #[test]
    fn orders_are_judged_at_the_price_they_fill_at() {
        use crate::risk::{OrderToAssess, RiskLimits, assess::assess};

        let q = quote();
        let at =
            |side, price| trade_price(&Order::new("o".into(), &request(side, price), 1, "i"), &q);
        assert_eq!(at(Side::Buy, None), 175.1);
        assert_eq!(at(Side::Sell, None), 174.9);
        assert_eq!(
            at(Side::Sell, Some(0.01)),
            174.9,
            "crosses: fills at the bid"
        );
        assert_eq!(
            at(Side::Buy, Some(250.0)),
            175.1,
            "crosses: fills at the ask"
        );
        assert_eq!(at(Side::Buy, Some(170.0)), 170.0, "does not cross");
        assert_eq!(at(Side::Sell, Some(180.0)), 180.0, "does not cross");

        // 5 714 × 175.0 (mid) = 999 950 fits 1 000 000; × 175.1 (ask) does not.
        let limits = RiskLimits::default();
        let judged = |price| {
            let order = OrderToAssess {
                order_id: None,
                symbol: "AAPL".into(),
                side: Side::Buy,
                quantity: 5_714,
                price,
            };
            assess(&limits, &order, 0)
        };
        assert!(judged(q.price).approved);
        let buy = CreateOrder {
            quantity: 5_714,
            ..request(Side::Buy, None)
        };
        let verdict = judged(trade_price(&Order::new("o".into(), &buy, 1, "i"), &q));
        assert_eq!(verdict.reasons[0].code, ReasonCode::MaxOrderNotional);
    }

    #[test]
    fn risk_refusals_carry_their_reasons() {
        let refused = RiskAssessment {
            approved: false,
            risk_score: 100.0,
            reasons: vec![Reason::new(ReasonCode::MaxOrderNotional, "too big")],
        };
        let mut order = Order::new("o1".into(), &request(Side::Buy, None), 1, "i");
        decide(&mut order, &quote(), &refused);
        assert_eq!(order.status, OrderStatus::Rejected);
        assert_eq!(order.reasons[0].code, ReasonCode::MaxOrderNotional);
        assert_eq!(order.risk_score, Some(100.0));
    }

    /// A record written before `created_announced` existed still reads,
    /// as not known to be announced (announced again once if unsettled).
    #[test]
    fn records_without_created_announced_still_read() {
        let order = Order::new("o1".into(), &request(Side::Buy, None), 1, "i");
        let stored = serde_json::to_value(&order).unwrap();
        let mut old = stored.clone();
        old.as_object_mut().unwrap().remove("created_announced");
        let read: Order = serde_json::from_value(old).unwrap();
        assert_eq!(read, serde_json::from_value::<Order>(stored).unwrap());
        assert!(!read.created_announced);
    }

    /// A record written before `elections_created` existed still reads,
    /// as of no known elections bucket (older than any leader's term); one
    /// written now carries it, and reads back the same.
    #[test]
    fn records_without_elections_created_still_read() {
        let mut order = Order::new("o1".into(), &request(Side::Buy, None), 250, "i");
        let stored = serde_json::to_value(&order).unwrap();
        assert!(stored.get("elections_created").is_none(), "{stored}");
        let read: Order = serde_json::from_value(stored).unwrap();
        assert_eq!(
            read.term(),
            Term {
                elections: None,
                epoch: 250
            }
        );
        let term = Term {
            elections: Some(1_767_225_600_123_456_789),
            epoch: 3,
        };
        order.write_under(term, "order-2");
        assert_eq!(
            order,
            Order {
                created_at: order.created_at,
                updated_at: order.updated_at,
                ..Order::new_under("o1".into(), &request(Side::Buy, None), term, "order-2")
            }
        );
        let stored = serde_json::to_value(&order).unwrap();
        // A string, exact to the nanosecond: as a number (above 2^53) a
        // JavaScript client would round it.
        assert_eq!(
            stored["elections_created"],
            "2026-01-01T00:00:00.123456789Z"
        );
        let read: Order = serde_json::from_value(stored.clone()).unwrap();
        assert_eq!((read.term(), read.instance_id.as_str()), (term, "order-2"));
        // Written as a number of nanoseconds, it still reads.
        let mut numeric = stored;
        numeric["elections_created"] = serde_json::json!(1_767_225_600_123_456_789_i64);
        let read: Order = serde_json::from_value(numeric).unwrap();
        assert_eq!(read.term(), term);
    }

    #[test]
    fn retries_are_told_from_reuse() {
        let order = Order::new("o1".into(), &request(Side::Buy, None), 1, "i");
        assert!(order.matches(&request(Side::Buy, None)));
        assert!(!order.matches(&request(Side::Sell, None)));
        assert!(!order.matches(&request(Side::Buy, Some(1.0))));
    }
}
