//! Wire contracts of the example trading services (pricing, risk, order):
//! their service names, the events they publish on
//! `events.{domain}.{action}`, and the small shared vocabulary those events
//! use ([`Side`], [`Reason`], symbol and client order id rules).
//!
//! Each event payload implements [`TradingEvent`], which ties the type to its
//! domain and action, so publishers and subscribers cannot disagree on where
//! a payload travels:
//!
//! ```
//! use aegis_contracts::trading::{OrderFilled, TradingEvent};
//!
//! assert_eq!(OrderFilled::subject(), "events.order.filled");
//! assert_eq!(OrderFilled::pattern(), "order.filled");
//! ```
//!
//! Events carry a dedup id derived from what they are about (see
//! [`OrderCreated::event_id`] and friends), so a retried publish — by the
//! same process or by a new leader finishing an old leader's work — is stored
//! once. A risk assessment's id also names what the verdict was judged by
//! ([`RiskAssessed::judged_event_id`]), so an order judged again otherwise is
//! stored again.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{models::FieldError, subjects};

/// The pricing service's name (load-balanced).
pub const PRICING_SERVICE: &str = "pricing-service";
/// The risk service's name (load-balanced).
pub const RISK_SERVICE: &str = "risk-service";
/// The order service's name (sticky single-active).
pub const ORDER_SERVICE: &str = "order-service";
/// The single-active group the order service elects its leader in.
pub const ORDER_GROUP: &str = "default";

/// Longest symbol, in characters.
pub const SYMBOL_MAX_CHARS: usize = 10;
/// Longest client order id, in characters.
pub const CLIENT_ORDER_ID_MAX_CHARS: usize = 64;

/// An event payload of the trading services, bound to its subject.
pub trait TradingEvent: Serialize + DeserializeOwned {
    /// The subject's domain, e.g. `order`.
    const DOMAIN: &'static str;
    /// The subject's action, e.g. `filled`.
    const ACTION: &'static str;

    /// The full subject, `events.{domain}.{action}`.
    fn subject() -> String {
        subjects::event_subject(Self::DOMAIN, Self::ACTION)
    }

    /// The subscription pattern selecting exactly this event, `{domain}.{action}`.
    fn pattern() -> String {
        format!("{}.{}", Self::DOMAIN, Self::ACTION)
    }
}

/// Which way an order trades: `buy` or `sell` on the wire, as its
/// published schema says (`BUY`/`Buy` and `SELL`/`Sell` are taken too, for
/// clients written against older examples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Side {
    /// Buy: the position grows.
    #[serde(rename = "buy", alias = "BUY", alias = "Buy")]
    Buy,
    /// Sell: the position shrinks.
    #[serde(rename = "sell", alias = "SELL", alias = "Sell")]
    Sell,
}

impl Side {
    /// `quantity` signed by the side: positive for a buy, negative for a
    /// sell. A sell of `i64::MIN`, whose negation an i64 cannot hold, gives
    /// `i64::MAX` rather than overflowing (a quantity is checked positive
    /// before it is judged; this only keeps bad input from panicking).
    ///
    /// ```
    /// use aegis_contracts::trading::Side;
    ///
    /// assert_eq!(Side::Buy.signed(10), 10);
    /// assert_eq!(Side::Sell.signed(10), -10);
    /// ```
    pub fn signed(self, quantity: i64) -> i64 {
        match self {
            Side::Buy => quantity,
            Side::Sell => quantity.saturating_neg(),
        }
    }
}

/// Why an order was (or would be) refused; stable codes clients branch on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ReasonCode {
    /// The symbol is not on the risk service's allowed list.
    SymbolNotAllowed,
    /// The order's quantity is above the per-order limit.
    MaxOrderQuantity,
    /// The order's notional (quantity × price) is above the per-order limit.
    MaxOrderNotional,
    /// The position after the order would exceed the per-symbol limit.
    MaxPosition,
    /// A limit order whose price does not reach the current quote (orders are
    /// immediate-or-cancel).
    LimitNotMarketable,
    /// An order recorded but not decided in time (its `create_order` failed
    /// and was not retried within order-service's bound): rejected rather
    /// than filled later at another market.
    Expired,
    /// A code this version does not know (sent by a newer service).
    #[serde(other)]
    Unknown,
}

/// One reason an order was refused: a stable code and a human message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reason {
    /// What rule refused it.
    pub code: ReasonCode,
    /// For humans; never parse it.
    pub message: String,
}

impl Reason {
    /// A reason with `code` and `message`.
    pub fn new(code: ReasonCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// `events.price.updated`: the pricing service's periodic quote of a symbol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PriceUpdated {
    /// The symbol, e.g. `AAPL`.
    pub symbol: String,
    /// Mid price.
    pub price: f64,
    /// Best bid (below `price`).
    pub bid: f64,
    /// Best ask (above `price`).
    pub ask: f64,
    /// When the quote was made.
    #[serde(with = "crate::models::rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: DateTime<Utc>,
    /// The pricing instance that published it.
    pub instance_id: String,
}

impl PriceUpdated {
    /// The dedup id of the quote of `symbol` in time slot `slot` (the
    /// publish time divided by the publish interval): however many pricing
    /// instances run, one quote per symbol and slot is stored.
    pub fn event_id(symbol: &str, slot: u64) -> String {
        format!("price.{symbol}.{slot}")
    }
}

impl TradingEvent for PriceUpdated {
    const DOMAIN: &'static str = "price";
    const ACTION: &'static str = "updated";
}

/// `events.risk.assessed`: the risk service judged an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskAssessed {
    /// The order judged, when the caller named it.
    #[serde(default)]
    pub order_id: Option<String>,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity (positive).
    pub quantity: i64,
    /// The price the notional was computed at.
    pub price: f64,
    /// Whether the order passed every limit.
    pub approved: bool,
    /// 0 (no risk) to 100 (at or over a limit).
    pub risk_score: f64,
    /// Why it was refused (empty when approved).
    #[serde(default)]
    pub reasons: Vec<Reason>,
    /// The risk instance that judged it.
    pub instance_id: String,
    /// When.
    #[serde(with = "crate::models::rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: DateTime<Utc>,
}

impl RiskAssessed {
    /// The order's part of the dedup id of an assessment of `order_id`,
    /// `risk.{order_id}`: not the whole id, which
    /// [`RiskAssessed::judged_event_id`] builds from it.
    ///
    /// ```
    /// use aegis_contracts::trading::RiskAssessed;
    ///
    /// assert_eq!(RiskAssessed::event_id("ord-1"), "risk.ord-1");
    /// ```
    pub fn event_id(order_id: &str) -> String {
        format!("risk.{order_id}")
    }

    /// The dedup id an assessment of `order_id` is published under,
    /// `risk.{order_id}.{digest}` (`digest` as 16 lower-case hex digits):
    /// `digest` sums up what the verdict was judged by — risk-service
    /// hashes (64-bit FNV-1a, the same in every instance and version) the
    /// order as sent, the position and the limits' revision it was judged
    /// by, and the verdict. So a retried assessment of the same thing is
    /// stored once, while the same order judged again by another position
    /// or other limits is stored too, and the audit trail holds every
    /// distinct verdict of an order, not only its first. An assessment of
    /// an order the caller did not name has a random id.
    ///
    /// ```
    /// use aegis_contracts::trading::RiskAssessed;
    ///
    /// assert_eq!(
    ///     RiskAssessed::judged_event_id("ord-1", 0x2a),
    ///     "risk.ord-1.000000000000002a"
    /// );
    /// ```
    pub fn judged_event_id(order_id: &str, digest: u64) -> String {
        format!("{}.{digest:016x}", Self::event_id(order_id))
    }
}

impl TradingEvent for RiskAssessed {
    const DOMAIN: &'static str = "risk";
    const ACTION: &'static str = "assessed";
}

/// `events.order.created`: the order service accepted an order for processing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderCreated {
    /// The order's id, assigned by the order service.
    pub order_id: String,
    /// The caller's idempotency key.
    pub client_order_id: String,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity (positive).
    pub quantity: i64,
    /// The limit price, or `None` for a market order.
    #[serde(default)]
    pub limit_price: Option<f64>,
    /// When the order was created.
    #[serde(with = "crate::models::rfc3339")]
    #[schemars(with = "String")]
    pub created_at: DateTime<Utc>,
}

impl OrderCreated {
    /// The dedup id of the creation of `order_id`.
    pub fn event_id(order_id: &str) -> String {
        format!("order.{order_id}.created")
    }
}

impl TradingEvent for OrderCreated {
    const DOMAIN: &'static str = "order";
    const ACTION: &'static str = "created";
}

/// `events.order.filled`: an order traded; positions change by
/// `side.signed(quantity)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderFilled {
    /// The order's id.
    pub order_id: String,
    /// The caller's idempotency key.
    pub client_order_id: String,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity filled (the whole order).
    pub quantity: i64,
    /// The price it traded at.
    pub fill_price: f64,
    /// When it traded.
    #[serde(with = "crate::models::rfc3339")]
    #[schemars(with = "String")]
    pub filled_at: DateTime<Utc>,
}

impl OrderFilled {
    /// The dedup id of the fill of `order_id`.
    pub fn event_id(order_id: &str) -> String {
        format!("order.{order_id}.filled")
    }
}

impl TradingEvent for OrderFilled {
    const DOMAIN: &'static str = "order";
    const ACTION: &'static str = "filled";
}

/// `events.order.rejected`: an order was refused and will never trade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct OrderRejected {
    /// The order's id.
    pub order_id: String,
    /// The caller's idempotency key.
    pub client_order_id: String,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity asked for.
    pub quantity: i64,
    /// Why it was refused (at least one).
    pub reasons: Vec<Reason>,
    /// When it was refused.
    #[serde(with = "crate::models::rfc3339")]
    #[schemars(with = "String")]
    pub rejected_at: DateTime<Utc>,
}

impl OrderRejected {
    /// The dedup id of the rejection of `order_id`.
    pub fn event_id(order_id: &str) -> String {
        format!("order.{order_id}.rejected")
    }
}

impl TradingEvent for OrderRejected {
    const DOMAIN: &'static str = "order";
    const ACTION: &'static str = "rejected";
}

/// Checks a symbol: 1 to [`SYMBOL_MAX_CHARS`] characters, an upper-case
/// letter first, then upper-case letters, digits or `.` (e.g. `AAPL`, `BRK.B`).
///
/// # Errors
/// A [`FieldError`] on field `symbol` saying what is wrong.
pub fn validate_symbol(symbol: &str) -> Result<(), FieldError> {
    let err = |message: &str| {
        Err(FieldError {
            field: "symbol".to_owned(),
            message: format!("{symbol:?} {message}"),
        })
    };
    if symbol.is_empty() {
        return err("is empty");
    }
    if symbol.chars().count() > SYMBOL_MAX_CHARS {
        return err("is longer than 10 characters");
    }
    if !symbol.starts_with(|c: char| c.is_ascii_uppercase()) {
        return err("must start with an upper-case letter");
    }
    if !symbol
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '.')
    {
        return err("may hold only upper-case letters, digits and '.'");
    }
    Ok(())
}

/// Checks a client order id: 1 to [`CLIENT_ORDER_ID_MAX_CHARS`] ASCII
/// letters, digits, `_` or `-` (it becomes part of a KV key).
///
/// # Errors
/// A [`FieldError`] on field `client_order_id` saying what is wrong.
pub fn validate_client_order_id(id: &str) -> Result<(), FieldError> {
    let err = |message: &str| {
        Err(FieldError {
            field: "client_order_id".to_owned(),
            message: message.to_owned(),
        })
    };
    if id.is_empty() {
        return err("is required");
    }
    if id.len() > CLIENT_ORDER_ID_MAX_CHARS {
        return err("is longer than 64 characters");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return err("may hold only ASCII letters, digits, '_' and '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_know_their_subjects() {
        assert_eq!(PriceUpdated::subject(), "events.price.updated");
        assert_eq!(RiskAssessed::subject(), "events.risk.assessed");
        assert_eq!(OrderCreated::subject(), "events.order.created");
        assert_eq!(OrderFilled::subject(), "events.order.filled");
        assert_eq!(OrderRejected::subject(), "events.order.rejected");
        for p in [OrderCreated::pattern(), RiskAssessed::pattern()] {
            crate::events::EventPattern::parse(&p).unwrap();
        }
    }

    #[test]
    fn sides_read_either_case_and_write_lower_case() {
        let s: Side = serde_json::from_str("\"BUY\"").unwrap();
        assert_eq!(s, Side::Buy);
        assert_eq!(serde_json::to_string(&Side::Sell).unwrap(), "\"sell\"");
        assert!(serde_json::from_str::<Side>("\"hold\"").is_err());
        assert_eq!(Side::Sell.signed(5), -5);
    }

    /// `-i64::MIN` does not fit an i64: a debug build panicked on it.
    #[test]
    fn a_sell_of_the_lowest_quantity_does_not_overflow() {
        assert_eq!(Side::Sell.signed(i64::MIN), i64::MAX);
        assert_eq!(Side::Buy.signed(i64::MIN), i64::MIN);
    }

    #[test]
    fn unknown_reason_codes_still_decode() {
        let r: Reason = serde_json::from_str(r#"{"code":"NEW_RULE","message":"m"}"#).unwrap();
        assert_eq!(r.code, ReasonCode::Unknown);
        let r: Reason = serde_json::from_str(r#"{"code":"MAX_POSITION","message":"m"}"#).unwrap();
        assert_eq!(r.code, ReasonCode::MaxPosition);
    }

    #[test]
    fn symbol_rules() {
        for ok in ["AAPL", "BRK.B", "X", "ABCDEFGHIJ", "A1"] {
            validate_symbol(ok).unwrap();
        }
        for bad in ["", "aapl", "1ABC", "ABCDEFGHIJK", "AA PL", "ÄAPL", "A-B"] {
            assert_eq!(validate_symbol(bad).unwrap_err().field, "symbol", "{bad}");
        }
    }

    #[test]
    fn client_order_id_rules() {
        validate_client_order_id("c-1_A").unwrap();
        validate_client_order_id(&"x".repeat(64)).unwrap();
        for bad in ["", "a.b", "a b", "a/b", &"x".repeat(65)] {
            assert!(validate_client_order_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn events_round_trip() {
        let e = OrderRejected {
            order_id: "o1".into(),
            client_order_id: "c1".into(),
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: 10,
            reasons: vec![Reason::new(ReasonCode::MaxOrderNotional, "too big")],
            rejected_at: Utc::now(),
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["reasons"][0]["code"], "MAX_ORDER_NOTIONAL");
        assert_eq!(json["side"], "buy");
        let back: OrderRejected = serde_json::from_value(json).unwrap();
        assert_eq!(back.order_id, "o1");
        assert_eq!(OrderRejected::event_id("o1"), "order.o1.rejected");
    }

    /// The id risk-service publishes an assessment under names the order
    /// and, as 16 hex digits, the digest of what it was judged by.
    #[test]
    fn an_assessment_is_named_after_its_order_and_what_it_was_judged_by() {
        assert_eq!(RiskAssessed::event_id("ord-1"), "risk.ord-1");
        assert_eq!(
            RiskAssessed::judged_event_id("ord-1", 0xff),
            "risk.ord-1.00000000000000ff"
        );
        assert_ne!(
            RiskAssessed::judged_event_id("ord-1", 1),
            RiskAssessed::judged_event_id("ord-1", 2),
            "a verdict judged otherwise is stored too"
        );
    }
}
