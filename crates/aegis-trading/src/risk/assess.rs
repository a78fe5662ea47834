//! The risk rules as pure functions: [`RiskLimits`] (and the partial update
//! [`LimitsPatch`]), validated field by field, and [`assess`], which judges
//! one order against the limits and the current position. No I/O, so every
//! rule is unit-tested here.

use aegis_contracts::{
    models::{FieldError, ValidationErrors},
    trading::{Reason, ReasonCode, Side, validate_client_order_id, validate_symbol},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What the risk service allows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskLimits {
    /// Largest quantity of one order (default 10 000).
    pub max_order_quantity: i64,
    /// Largest quantity × price of one order (default 1 000 000).
    pub max_order_notional: f64,
    /// Largest absolute net position per symbol after an order (default
    /// 50 000). An order that leaves a position beyond it passes only when
    /// it makes that position smaller without taking it across zero: a
    /// position beyond the limit (after the limit was lowered, say) can be
    /// brought back order by order, but an order that flips it must end
    /// within the limit on the other side.
    pub max_position: i64,
    /// Symbols that may be traded; empty allows every symbol (the default).
    #[serde(default)]
    pub allowed_symbols: Vec<String>,
}

impl Default for RiskLimits {
    fn default() -> Self {
        Self {
            max_order_quantity: 10_000,
            max_order_notional: 1_000_000.0,
            max_position: 50_000,
            allowed_symbols: Vec::new(),
        }
    }
}

impl RiskLimits {
    /// Checks every field.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming each field that is out of range.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, field: &str, message: &str| {
            if !ok {
                errors.push(FieldError {
                    field: field.to_owned(),
                    message: message.to_owned(),
                });
            }
        };
        check(
            self.max_order_quantity > 0,
            "max_order_quantity",
            "must be a positive integer",
        );
        check(
            self.max_order_notional.is_finite() && self.max_order_notional > 0.0,
            "max_order_notional",
            "must be a positive number",
        );
        check(
            self.max_position > 0,
            "max_position",
            "must be a positive integer",
        );
        for symbol in &self.allowed_symbols {
            if let Err(e) = validate_symbol(symbol) {
                errors.push(FieldError {
                    field: "allowed_symbols".to_owned(),
                    message: e.message,
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }

    /// These limits with the fields `patch` sets replaced.
    pub fn apply(&self, patch: &LimitsPatch) -> RiskLimits {
        RiskLimits {
            max_order_quantity: patch.max_order_quantity.unwrap_or(self.max_order_quantity),
            max_order_notional: patch.max_order_notional.unwrap_or(self.max_order_notional),
            max_position: patch.max_position.unwrap_or(self.max_position),
            allowed_symbols: patch
                .allowed_symbols
                .clone()
                .unwrap_or_else(|| self.allowed_symbols.clone()),
        }
    }
}

/// `update_limits` request: the fields to change. Unknown fields are refused,
/// so a misspelt limit is an error rather than a silent no-op.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsPatch {
    /// New [`RiskLimits::max_order_quantity`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_order_quantity: Option<i64>,
    /// New [`RiskLimits::max_order_notional`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_order_notional: Option<f64>,
    /// New [`RiskLimits::max_position`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_position: Option<i64>,
    /// New [`RiskLimits::allowed_symbols`] (`[]` allows every symbol).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_symbols: Option<Vec<String>>,
}

impl LimitsPatch {
    /// Whether the patch changes nothing.
    pub fn is_empty(&self) -> bool {
        self == &LimitsPatch::default()
    }
}

/// The order to judge (`assess_risk {order}`). Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderToAssess {
    /// The order's id, when it has one (ASCII letters, digits, `_` and `-`,
    /// at most 64); names the `events.risk.assessed` event so a retried
    /// assessment is stored once.
    #[serde(default)]
    pub order_id: Option<String>,
    /// The symbol.
    pub symbol: String,
    /// Buy or sell.
    pub side: Side,
    /// Quantity (positive).
    pub quantity: i64,
    /// The price to compute the notional at (positive).
    pub price: f64,
}

impl OrderToAssess {
    /// Checks the order's fields.
    ///
    /// # Errors
    /// [`ValidationErrors`] naming each bad field.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut errors = Vec::new();
        // It names the audit record (`risk.{order_id}`): one that cannot
        // name an order could not name that either, and a retry would not
        // help. Order ids follow the client order id rules.
        if let Some(order_id) = &self.order_id
            && let Err(e) = validate_client_order_id(order_id)
        {
            errors.push(FieldError {
                field: "order_id".to_owned(),
                message: e.message,
            });
        }
        if let Err(e) = validate_symbol(&self.symbol) {
            errors.push(e);
        }
        if self.quantity <= 0 {
            errors.push(FieldError {
                field: "quantity".to_owned(),
                message: "must be a positive integer".to_owned(),
            });
        }
        if !(self.price.is_finite() && self.price > 0.0) {
            errors.push(FieldError {
                field: "price".to_owned(),
                message: "must be a positive number".to_owned(),
            });
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// `assess_risk` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RiskAssessment {
    /// Whether the order passes every limit.
    pub approved: bool,
    /// 0 (no risk) to 100 (at or over a limit): the highest utilisation of
    /// any limit, in percent.
    pub risk_score: f64,
    /// Every limit the order breaks (empty when approved).
    pub reasons: Vec<Reason>,
}

/// Judges `order` against `limits`, given the symbol's net `position`
/// before the order. Every broken limit is reported, not just the first, so
/// a caller can fix the order in one go. An order that leaves the position
/// beyond `max_position` passes that limit only when it makes the position
/// smaller than it was and keeps it on the same side of zero (see
/// [`RiskLimits::max_position`]).
pub fn assess(limits: &RiskLimits, order: &OrderToAssess, position: i64) -> RiskAssessment {
    let mut reasons = Vec::new();
    let notional = order.quantity as f64 * order.price;
    // `None`: beyond what an i64 holds.
    let after = position.checked_add(order.side.signed(order.quantity));
    if !limits.allowed_symbols.is_empty() && !limits.allowed_symbols.contains(&order.symbol) {
        reasons.push(Reason::new(
            ReasonCode::SymbolNotAllowed,
            format!("{} is not on the allowed list", order.symbol),
        ));
    }
    if order.quantity > limits.max_order_quantity {
        reasons.push(Reason::new(
            ReasonCode::MaxOrderQuantity,
            format!(
                "quantity {} is above the limit {}",
                order.quantity, limits.max_order_quantity
            ),
        ));
    }
    if !notional.is_finite() {
        reasons.push(Reason::new(
            ReasonCode::MaxOrderNotional,
            "the notional is too large to compute",
        ));
    } else if notional > limits.max_order_notional {
        reasons.push(Reason::new(
            ReasonCode::MaxOrderNotional,
            format!(
                "notional {notional:.2} is above the limit {:.2}",
                limits.max_order_notional
            ),
        ));
    }
    // Beyond the limit, but smaller than before and on the same side (a
    // long sold down, a short bought back, after the limit was lowered,
    // say): allowed, or the desk could only get back inside the limit in
    // one go. Across zero it is a new position the other way, held to the
    // limit like any other (+150 sold to -140 under a limit of 100 is not
    // a reduction).
    match after {
        None => reasons.push(Reason::new(
            ReasonCode::MaxPosition,
            format!(
                "the {} position would be too large to hold (beyond ±{})",
                order.symbol,
                i64::MAX
            ),
        )),
        Some(after)
            if after.unsigned_abs() > limits.max_position.unsigned_abs()
                && !reduces(position, after) =>
        {
            reasons.push(Reason::new(
                ReasonCode::MaxPosition,
                format!(
                    "the {} position would be {after}, beyond the limit ±{}",
                    order.symbol, limits.max_position
                ),
            ));
        }
        Some(_) => {}
    }
    let utilisation = [
        order.quantity as f64 / limits.max_order_quantity as f64,
        notional / limits.max_order_notional,
        after.map_or(u64::MAX, i64::unsigned_abs) as f64 / limits.max_position as f64,
    ]
    .into_iter()
    .fold(0.0_f64, f64::max);
    let risk_score = if reasons.is_empty() {
        (utilisation * 1000.0).round().min(1000.0) / 10.0
    } else {
        100.0
    };
    RiskAssessment {
        approved: reasons.is_empty(),
        risk_score,
        reasons,
    }
}

/// Whether going from `position` to `after` makes the position smaller
/// while keeping it on the same side of zero.
fn reduces(position: i64, after: i64) -> bool {
    after.signum() == position.signum() && after.unsigned_abs() < position.unsigned_abs()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(symbol: &str, side: Side, quantity: i64, price: f64) -> OrderToAssess {
        OrderToAssess {
            order_id: None,
            symbol: symbol.into(),
            side,
            quantity,
            price,
        }
    }

    fn codes(a: &RiskAssessment) -> Vec<ReasonCode> {
        a.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn a_small_order_passes_with_a_low_score() {
        let a = assess(
            &RiskLimits::default(),
            &order("AAPL", Side::Buy, 100, 175.0),
            0,
        );
        assert!(a.approved);
        assert!(a.reasons.is_empty());
        // 17 500 of 1 000 000 notional is the highest utilisation: 1.75 % → 1.8.
        assert_eq!(a.risk_score, 1.8);
    }

    #[test]
    fn every_broken_limit_is_a_reason() {
        let limits = RiskLimits {
            allowed_symbols: vec!["MSFT".into()],
            ..Default::default()
        };
        let a = assess(&limits, &order("AAPL", Side::Buy, 20_000, 175.0), 40_000);
        assert!(!a.approved);
        assert_eq!(a.risk_score, 100.0);
        assert_eq!(
            codes(&a),
            [
                ReasonCode::SymbolNotAllowed,
                ReasonCode::MaxOrderQuantity,
                ReasonCode::MaxOrderNotional,
                ReasonCode::MaxPosition
            ]
        );
    }

    #[test]
    fn positions_count_with_their_sign() {
        let limits = RiskLimits {
            max_position: 100,
            ..Default::default()
        };
        // Selling out of a long position reduces risk.
        let a = assess(&limits, &order("TSLA", Side::Sell, 90, 250.0), 90);
        assert!(a.approved, "{a:?}");
        // Selling beyond the limit on the short side does not.
        let a = assess(&limits, &order("TSLA", Side::Sell, 90, 250.0), -20);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition]);
    }

    /// A position beyond the limit (the limit was lowered, say) can be
    /// brought back towards it order by order; what moves it further out,
    /// or flips it to as large a position the other way, cannot.
    #[test]
    fn an_order_that_reduces_an_over_limit_position_passes() {
        let limits = RiskLimits {
            max_position: 100,
            ..Default::default()
        };
        let a = assess(&limits, &order("TSLA", Side::Sell, 10, 250.0), 150);
        assert!(a.approved, "selling from a long above the limit: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Buy, 10, 250.0), -150);
        assert!(a.approved, "buying from a short above the limit: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Buy, 10, 250.0), 150);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition]);
        let a = assess(&limits, &order("TSLA", Side::Sell, 300, 250.0), 150);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition], "-150 is no smaller");
    }

    /// An order that takes an over-limit position across zero must end
    /// within the limit: a smaller position on the other side is still a
    /// new position beyond it.
    #[test]
    fn an_order_that_flips_an_over_limit_position_must_end_within_the_limit() {
        let limits = RiskLimits {
            max_position: 100,
            ..Default::default()
        };
        let a = assess(&limits, &order("TSLA", Side::Sell, 290, 250.0), 150);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition], "-140: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Buy, 290, 250.0), -150);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition], "+140: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Sell, 100, 250.0), 150);
        assert!(a.approved, "+50, same side: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Sell, 240, 250.0), 150);
        assert!(a.approved, "-90, within the limit: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Sell, 250, 250.0), 150);
        assert!(a.approved, "-100, at the limit: {a:?}");
        let a = assess(&limits, &order("TSLA", Side::Sell, 150, 250.0), 150);
        assert!(a.approved, "flat: {a:?}");
    }

    /// Positions and limits near what an i64 holds: an order that would
    /// take the position past it is refused, saying so, never passed.
    #[test]
    fn an_order_that_would_overflow_the_position_is_refused() {
        let limits = RiskLimits {
            max_order_quantity: i64::MAX,
            max_order_notional: f64::MAX,
            max_position: i64::MAX,
            allowed_symbols: vec![],
        };
        let a = assess(&limits, &order("GOOGL", Side::Buy, 10, 1.0), i64::MAX - 5);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition], "{a:?}");
        assert!(a.reasons[0].message.contains("too large"), "{a:?}");
        let a = assess(&limits, &order("GOOGL", Side::Sell, i64::MAX, 1.0), -10);
        assert_eq!(codes(&a), [ReasonCode::MaxPosition], "{a:?}");
        let a = assess(&limits, &order("GOOGL", Side::Sell, 10, 1.0), i64::MAX - 5);
        assert!(a.approved, "{a:?}");
        // A notional too large for a number is refused, saying so.
        let a = assess(&limits, &order("GOOGL", Side::Buy, i64::MAX, f64::MAX), 0);
        assert_eq!(codes(&a), [ReasonCode::MaxOrderNotional], "{a:?}");
        assert!(a.reasons[0].message.contains("too large"), "{a:?}");
    }

    #[test]
    fn limits_and_patches_are_validated() {
        RiskLimits::default().validate().unwrap();
        let bad = RiskLimits::default().apply(&LimitsPatch {
            max_order_quantity: Some(0),
            max_order_notional: Some(f64::NAN),
            max_position: Some(-1),
            allowed_symbols: Some(vec!["ok".into()]),
        });
        let errors = bad.validate().unwrap_err();
        for field in [
            "max_order_quantity",
            "max_order_notional",
            "max_position",
            "allowed_symbols",
        ] {
            assert!(errors.has(field), "{field}: {errors}");
        }
        assert!(LimitsPatch::default().is_empty());
        assert!(serde_json::from_str::<LimitsPatch>(r#"{"max_notional": 5}"#).is_err());
    }

    #[test]
    fn orders_are_validated() {
        order("AAPL", Side::Buy, 1, 1.0).validate().unwrap();
        let errors = order("aapl", Side::Buy, -5, 0.0).validate().unwrap_err();
        for field in ["symbol", "quantity", "price"] {
            assert!(errors.has(field), "{field}");
        }
    }
}
