//! pricing-service: quotes (`get_price`, `get_prices`) around per-symbol base
//! prices, and a periodic `events.price.updated` per symbol.
//!
//! The service is stateless, so it is load-balanced: run as many instances
//! as the load needs and discovery spreads calls over them. The periodic
//! events show the other side of that: every instance publishes, yet each
//! (symbol, time slot) is stored once, because the dedup id is derived from
//! the slot rather than from the instance.
//!
//! That only works if the instances agree on what they publish: the stream
//! keeps whichever copy arrives first, and core subscribers see every copy.
//! So a quote is a pure function of (symbol, second) — [`quote_at`], a
//! deterministic walk — and every instance, asked over RPC or publishing,
//! says the same price for the same symbol in the same second. (The other
//! way to be honest, one publisher per symbol, would need an election per
//! symbol and a failover gap in the feed; a shared function needs nothing.)
//!
//! The walk: anchor values drawn every [`WALK_ANCHOR`] from a seeded
//! ChaCha stream (portable: the same seed gives the same numbers on every
//! platform and version), joined by a smooth curve, plus a small per-second
//! tick, all within ±[`MAX_DEVIATION`] of the base.

use schemars::JsonSchema;
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use aegis_contracts::trading::{PRICING_SERVICE, PriceUpdated, TradingEvent, validate_symbol};
use aegis_sdk::{Connection, rpc::WireError};
use chrono::{DateTime, Utc};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    Running, TradingError,
    common::{self, Counters, Identity},
    running::StopOrder,
};

/// How far a quote's mid price strays from the symbol's base: ±2 %.
pub const MAX_DEVIATION: f64 = 0.02;

/// Counter: quotes answered over RPC.
pub const METRIC_PRICES_SERVED: &str = "prices_served";
/// Counter: `events.price.updated` stored by this instance (duplicates of
/// another instance's quote for the same slot are not counted).
pub const METRIC_PRICE_UPDATES: &str = "price_updates_published";

/// The symbols quoted by default and their base prices.
pub fn default_symbols() -> BTreeMap<String, f64> {
    [
        ("AAPL", 175.00),
        ("MSFT", 420.00),
        ("GOOGL", 140.00),
        ("AMZN", 180.00),
        ("TSLA", 250.00),
        ("NVDA", 120.00),
        ("META", 500.00),
        ("JPM", 200.00),
        ("V", 280.00),
        ("NFLX", 650.00),
    ]
    .into_iter()
    .map(|(s, p)| (s.to_owned(), p))
    .collect()
}

/// How to run a pricing instance.
#[derive(Debug, Clone)]
pub struct PricingOptions {
    /// The instance id; host name plus a random suffix when `None`.
    pub instance_id: Option<String>,
    /// Quoted symbols and their base prices (default: [`default_symbols`]).
    pub symbols: BTreeMap<String, f64>,
    /// How often every symbol's quote is published as `events.price.updated`
    /// (default 1 s); `None` publishes nothing.
    pub publish_interval: Option<Duration>,
    /// Most symbols one `get_prices` call may ask for (default 50).
    pub max_symbols_per_request: usize,
}

impl Default for PricingOptions {
    fn default() -> Self {
        Self {
            instance_id: None,
            symbols: default_symbols(),
            publish_interval: Some(Duration::from_secs(1)),
            max_symbols_per_request: 50,
        }
    }
}

/// `get_price` request. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPrice {
    /// The symbol, e.g. `AAPL`.
    pub symbol: String,
}

/// A quote: `bid < price < ask`, `price` within ±2 % of the symbol's base.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Quote {
    /// The symbol.
    pub symbol: String,
    /// Mid price.
    pub price: f64,
    /// Best bid.
    pub bid: f64,
    /// Best ask.
    pub ask: f64,
    /// When the quote was made.
    #[serde(with = "aegis_contracts::models::rfc3339")]
    #[schemars(with = "String")]
    pub timestamp: DateTime<Utc>,
}

/// `get_prices` request. Unknown fields are refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GetPrices {
    /// The symbols (1 to `max_symbols_per_request`).
    pub symbols: Vec<String>,
}

/// `get_prices` reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Prices {
    /// Quotes of the known symbols, in request order.
    pub prices: Vec<Quote>,
    /// Well-formed symbols this service does not quote.
    pub unknown: Vec<String>,
}

/// How far apart the walk's anchor values are; between two anchors the
/// price moves smoothly, so consecutive seconds differ by a small step.
pub const WALK_ANCHOR: Duration = Duration::from_secs(30);

/// Share of the deviation that comes from the per-second tick rather than
/// from the smooth curve between anchors.
const TICK_SHARE: f64 = 0.15;

/// The quote of `symbol` around `base` in the second that contains `at`:
/// the same on every instance, every time it is asked. The mid price stays
/// within [`MAX_DEVIATION`] of `base`; bid and ask sit at least a cent
/// either side; the timestamp is the start of that second.
pub fn quote_at(symbol: &str, base: f64, at: DateTime<Utc>) -> Quote {
    let second = at.timestamp();
    let cents = |x: f64| (x * 100.0).round() / 100.0;
    let price = cents(base * (1.0 + MAX_DEVIATION * walk(symbol, second)));
    // Half a spread of 5 basis points, never below a cent, so bid < price < ask
    // holds after rounding to cents.
    let half_spread = cents(price * 0.0005).max(0.01);
    Quote {
        symbol: symbol.to_owned(),
        price,
        bid: cents(price - half_spread),
        ask: cents(price + half_spread),
        timestamp: DateTime::from_timestamp(second, 0).unwrap_or(at),
    }
}

/// The walk's value in `second`, in [-1, 1].
fn walk(symbol: &str, second: i64) -> f64 {
    let span = i64::try_from(WALK_ANCHOR.as_secs()).unwrap_or(30).max(1);
    let anchor = second.div_euclid(span);
    let (from, to) = (
        draw(symbol, Draw::Anchor, anchor),
        draw(symbol, Draw::Anchor, anchor + 1),
    );
    // Cosine easing: no kink at the anchors.
    let t = second.rem_euclid(span) as f64 / span as f64;
    let ease = (1.0 - (t * std::f64::consts::PI).cos()) / 2.0;
    let smooth = from + (to - from) * ease;
    (1.0 - TICK_SHARE) * smooth + TICK_SHARE * draw(symbol, Draw::Tick, second)
}

#[derive(Clone, Copy)]
enum Draw {
    Anchor = 1,
    Tick = 2,
}

/// A number in [-1, 1] determined by (symbol, kind, index) alone. Symbols
/// are at most 10 ASCII bytes (validated), so they fit the seed whole.
fn draw(symbol: &str, kind: Draw, index: i64) -> f64 {
    let mut seed = [0u8; 32];
    let bytes = symbol.as_bytes();
    let n = bytes.len().min(16);
    seed[..n].copy_from_slice(&bytes[..n]);
    seed[16] = kind as u8;
    seed[24..].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(seed).random_range(-1.0..=1.0)
}

/// The service's state: the catalog and its counters.
#[derive(Debug)]
struct Pricing {
    symbols: BTreeMap<String, f64>,
    max_symbols: usize,
    counters: Counters,
}

/// Most symbols an unknown symbol's error names.
const PRICED_NAMED: usize = 20;

/// The symbols the details of pricing's unknown-symbol error name, in
/// words (`AAPL, MSFT, and 3 more`); `None` for other details. Order
/// service says them in its own error for the symbol.
pub(crate) fn priced_words(details: &serde_json::Value) -> Option<String> {
    let mut words: Vec<String> = details
        .get("priced")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    if let Some(more) = details.get("more").and_then(serde_json::Value::as_u64)
        && more > 0
    {
        words.push(format!("and {more} more"));
    }
    Some(words.join(", "))
}

impl Pricing {
    /// The error for `symbol`, which is not priced: its details name the
    /// symbols that are (`priced`, the first [`PRICED_NAMED`] in order, and
    /// `more`, how many besides), and so do its words.
    fn unknown_symbol(&self, symbol: &str) -> WireError {
        let named: Vec<&str> = self
            .symbols
            .keys()
            .take(PRICED_NAMED)
            .map(String::as_str)
            .collect();
        let more = self.symbols.len().saturating_sub(PRICED_NAMED);
        let details = serde_json::json!({ "priced": named, "more": more });
        let words = priced_words(&details).unwrap_or_default();
        WireError::not_found(format!("no price for {symbol} (priced: {words})"))
            .with_details(details)
    }

    fn get_price(&self, req: &GetPrice) -> Result<Quote, WireError> {
        validate_symbol(&req.symbol).map_err(|e| WireError::invalid_request(e.message))?;
        let base = self
            .symbols
            .get(&req.symbol)
            .ok_or_else(|| self.unknown_symbol(&req.symbol))?;
        self.counters.add(METRIC_PRICES_SERVED, 1.0);
        Ok(quote_at(&req.symbol, *base, Utc::now()))
    }

    fn get_prices(&self, req: &GetPrices) -> Result<Prices, WireError> {
        if req.symbols.is_empty() || req.symbols.len() > self.max_symbols {
            return Err(WireError::invalid_request(format!(
                "symbols must list 1 to {} symbols",
                self.max_symbols
            )));
        }
        // All or nothing on malformed input: a typo should not come back as a
        // half-filled answer.
        if let Some(bad) = req.symbols.iter().find_map(|s| validate_symbol(s).err()) {
            return Err(WireError::invalid_request(bad.message));
        }
        // One instant for the whole answer: the quotes are of one second.
        let now = Utc::now();
        let (known, unknown): (Vec<_>, Vec<_>) = req
            .symbols
            .iter()
            .partition(|s| self.symbols.contains_key(*s));
        let prices: Vec<Quote> = known
            .into_iter()
            .map(|s| quote_at(s, self.symbols[s], now))
            .collect();
        self.counters.add(METRIC_PRICES_SERVED, prices.len() as f64);
        Ok(Prices {
            prices,
            unknown: unknown.into_iter().cloned().collect(),
        })
    }
}

/// Starts a pricing-service instance on `conn`: registers it, serves
/// `echo`, `health`, `simulate_work`, `get_price` and `get_prices`, and
/// publishes quotes every `publish_interval`.
///
/// ```no_run
/// # async fn demo(conn: aegis_sdk::Connection) -> Result<(), aegis_trading::TradingError> {
/// use aegis_trading::pricing::{self, PricingOptions};
///
/// let pricing = pricing::start(&conn, PricingOptions::default()).await?;
/// println!("pricing instance {}", pricing.instance_id());
/// pricing.shutdown().await?;
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`TradingError::InvalidOptions`] before any I/O (a bad symbol or base
/// price, a zero interval or request bound); [`TradingError::Events`] when
/// the `EVENTS` stream cannot be created; [`TradingError::Service`] when the
/// service cannot start.
pub async fn start(conn: &Connection, opts: PricingOptions) -> Result<Running, TradingError> {
    validate(&opts)?;
    let pricing = Arc::new(Pricing {
        symbols: opts.symbols,
        max_symbols: opts.max_symbols_per_request,
        counters: Counters::new(&[METRIC_PRICES_SERVED, METRIC_PRICE_UPDATES]),
    });

    let instance_id = opts
        .instance_id
        .unwrap_or_else(aegis_sdk::default_instance_id);
    let id = Identity::new(PRICING_SERVICE, &instance_id);
    let service = conn
        .service(PRICING_SERVICE, crate::VERSION)
        .description("Quotes around per-symbol base prices; publishes events.price.updated")
        .instance_id(&instance_id)
        .handler("echo", common::echo)
        .handler("health", common::health(id.clone()))
        .handler("simulate_work", common::simulate_work(id))
        // Quoting is synchronous: a ready future avoids cloning the state per call.
        .handler("get_price", {
            let p = pricing.clone();
            move |req: GetPrice| futures::future::ready(p.get_price(&req))
        })
        .handler("get_prices", {
            let p = pricing.clone();
            move |req: GetPrices| futures::future::ready(p.get_prices(&req))
        });
    // Publishing needs the EVENTS stream; `aegis up` creates it, but a
    // service must also run against a bare server.
    conn.events().ensure_stream().await?;
    let service = service.start().await?;
    pricing.counters.attach(service.metrics().clone());

    let cancel = CancellationToken::new();
    let publisher = opts.publish_interval.map(|every| {
        tokio::spawn(publish_quotes(
            conn.clone(),
            pricing.clone(),
            service.instance_id().to_owned(),
            every,
            cancel.clone(),
        ))
    });
    // Stopping, quotes end first: they need nothing the service keeps.
    Ok(Running::new(
        service,
        publisher.into_iter().collect(),
        cancel,
        StopOrder::TasksFirst,
    ))
}

fn validate(opts: &PricingOptions) -> Result<(), TradingError> {
    let invalid = |m: String| Err(TradingError::InvalidOptions(m));
    if opts.symbols.is_empty() {
        return invalid("pricing needs at least one symbol".into());
    }
    for (symbol, base) in &opts.symbols {
        if let Err(e) = validate_symbol(symbol) {
            return invalid(e.message);
        }
        if !base.is_finite() || *base <= 0.0 {
            return invalid(format!("the base price of {symbol} must be positive"));
        }
    }
    if opts.publish_interval.is_some_and(|d| d.is_zero()) {
        return invalid("publish_interval must be positive".into());
    }
    if opts.max_symbols_per_request == 0 {
        return invalid("max_symbols_per_request must be positive".into());
    }
    Ok(())
}

/// Publishes a quote of every symbol each `every`, until cancelled.
async fn publish_quotes(
    conn: Connection,
    pricing: Arc<Pricing>,
    instance_id: String,
    every: Duration,
    cancel: CancellationToken,
) {
    let events = conn.events();
    let mut ticks = tokio::time::interval(every);
    // A slow server must not be answered with a burst of stale quotes.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let every_ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = ticks.tick() => {}
        }
        let now_ms = u64::try_from(Utc::now().timestamp_millis()).unwrap_or_default();
        let slot = now_ms / every_ms;
        // Every instance quotes the slot at its start, so whichever copy of
        // (symbol, slot) the stream keeps, it is the same quote.
        let slot_start = i64::try_from(slot.saturating_mul(every_ms))
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(Utc::now);
        for (symbol, base) in &pricing.symbols {
            let quote = quote_at(symbol, *base, slot_start);
            let event = PriceUpdated {
                symbol: quote.symbol,
                price: quote.price,
                bid: quote.bid,
                ask: quote.ask,
                timestamp: quote.timestamp,
                instance_id: instance_id.clone(),
            };
            let id = PriceUpdated::event_id(symbol, slot);
            let publish =
                events.publish_with_id(PriceUpdated::DOMAIN, PriceUpdated::ACTION, &id, &event);
            // A stop abandons the round: a quote waiting for a confirmation
            // that may never come (NATS unreachable) is not worth the wait.
            let published = tokio::select! {
                () = cancel.cancelled() => return,
                published = publish => published,
            };
            match published {
                Ok(stored) if !stored.duplicate => pricing.counters.add(METRIC_PRICE_UPDATES, 1.0),
                Ok(_) => debug!(%id, "another instance already published this slot"),
                // The next tick publishes a fresh quote; an old one is not worth a retry.
                Err(e) => {
                    warn!(error = %aegis_sdk::startup::Causes(&e), symbol, "cannot publish a price update")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(n: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + n, 0).unwrap()
    }

    #[test]
    fn quotes_stay_within_two_percent_with_bid_below_ask() {
        for (symbol, base) in default_symbols() {
            for n in 0..2000 {
                let q = quote_at(&symbol, base, second(n));
                assert!(q.bid < q.price && q.price < q.ask, "{q:?}");
                assert!(
                    (q.price - base).abs() <= base * MAX_DEVIATION + 0.005,
                    "{q:?}"
                );
            }
        }
        // Even a penny stock keeps a spread.
        let q = quote_at("P", 0.05, second(0));
        assert!(q.bid < q.price && q.price < q.ask, "{q:?}");
    }

    #[test]
    fn a_quote_depends_on_symbol_and_second_only() {
        let at = second(42) + chrono::Duration::milliseconds(10);
        let later_that_second = second(42) + chrono::Duration::milliseconds(990);
        let q = quote_at("AAPL", 175.0, at);
        assert_eq!(q, quote_at("AAPL", 175.0, later_that_second));
        assert_eq!(q.timestamp, second(42));
        // Pinned: a change of the walk (or of the generator under it) would
        // make instances of two versions disagree, so it must be deliberate.
        assert_eq!((q.price, q.bid, q.ask), (176.92, 176.83, 177.01));
        let other = quote_at("MSFT", 420.0, at);
        assert_ne!(q.price / 175.0, other.price / 420.0);
    }

    #[test]
    fn the_walk_moves_in_small_steps_and_wanders() {
        let prices: Vec<f64> = (0..600)
            .map(|n| quote_at("NVDA", 120.0, second(n)).price)
            .collect();
        let steps = prices.windows(2).map(|w| (w[1] - w[0]).abs());
        // A tick moves at most TICK_SHARE of the band, plus the curve's share.
        let max_step = steps.fold(0.0, f64::max);
        assert!(max_step < 120.0 * MAX_DEVIATION * 0.5, "{max_step}");
        let (lo, hi) = prices
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(*p), hi.max(*p)));
        assert!(hi - lo > 120.0 * MAX_DEVIATION * 0.3, "{lo}..{hi}");
    }

    fn pricing() -> Pricing {
        Pricing {
            symbols: default_symbols(),
            max_symbols: 3,
            counters: Counters::default(),
        }
    }

    #[test]
    fn get_price_tells_malformed_from_unknown() {
        let p = pricing();
        let code = |s: &str| {
            p.get_price(&GetPrice { symbol: s.into() })
                .unwrap_err()
                .code
        };
        assert_eq!(code("aapl"), aegis_sdk::rpc::ErrorCode::InvalidRequest);
        assert_eq!(code(""), aegis_sdk::rpc::ErrorCode::InvalidRequest);
        assert_eq!(code("ZZZZ"), aegis_sdk::rpc::ErrorCode::NotFound);
        // An unknown symbol is told with the ones there are.
        let unknown = p
            .get_price(&GetPrice {
                symbol: "ZZZZ".into(),
            })
            .unwrap_err();
        assert_eq!(
            unknown.message,
            "no price for ZZZZ (priced: AAPL, AMZN, GOOGL, JPM, META, MSFT, NFLX, NVDA, TSLA, V)"
        );
        // The same list in its details, for a caller (order-service) to say.
        let details = unknown.details.unwrap();
        assert_eq!(details["priced"].as_array().unwrap().len(), 10);
        assert_eq!(details["more"], 0);
        let many = serde_json::json!({ "priced": ["AAPL", "MSFT"], "more": 3 });
        assert_eq!(
            priced_words(&many).as_deref(),
            Some("AAPL, MSFT, and 3 more")
        );
        assert_eq!(priced_words(&serde_json::json!({ "fields": [] })), None);
        assert_eq!(
            p.get_price(&GetPrice {
                symbol: "AAPL".into()
            })
            .unwrap()
            .symbol,
            "AAPL"
        );
    }

    #[test]
    fn get_prices_is_bounded_and_lists_unknown_symbols() {
        let p = pricing();
        let req = |s: &[&str]| GetPrices {
            symbols: s.iter().map(|s| (*s).to_owned()).collect(),
        };
        let got = p.get_prices(&req(&["MSFT", "ZZZZ", "AAPL"])).unwrap();
        let symbols: Vec<_> = got.prices.iter().map(|q| q.symbol.as_str()).collect();
        assert_eq!(symbols, ["MSFT", "AAPL"]);
        assert_eq!(got.unknown, ["ZZZZ"]);
        assert!(p.get_prices(&req(&[])).is_err());
        assert!(p.get_prices(&req(&["A", "B", "C", "D"])).is_err());
        assert!(p.get_prices(&req(&["AAPL", "bad"])).is_err());
    }

    #[test]
    fn options_are_checked() {
        assert!(validate(&PricingOptions::default()).is_ok());
        let bad = [
            PricingOptions {
                symbols: BTreeMap::new(),
                ..Default::default()
            },
            PricingOptions {
                symbols: [("AAPL".to_owned(), -1.0)].into(),
                ..Default::default()
            },
            PricingOptions {
                symbols: [("aapl".to_owned(), 1.0)].into(),
                ..Default::default()
            },
            PricingOptions {
                publish_interval: Some(Duration::ZERO),
                ..Default::default()
            },
            PricingOptions {
                max_symbols_per_request: 0,
                ..Default::default()
            },
        ];
        for opts in bad {
            assert!(
                matches!(validate(&opts), Err(TradingError::InvalidOptions(_))),
                "{opts:?}"
            );
        }
    }
}
