//! What the calls of `aegis traffic` told of their orders ([`Said`]), the
//! count of it ([`Tally`]), and how it reads: the per-second line
//! ([`report_line`]) and the summary's counts.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use aegis_contracts::wire::ErrorCode;
use aegis_sdk::rpc::RpcError;
use aegis_trading::order::OrderStatus;
use hdrhistogram::Histogram;

use super::OrderAnswer;

/// What the clients did, since the last report line and in all.
#[derive(Debug)]
pub(super) struct Tally {
    pub(super) window: Window,
    /// Orders answered by their first call (the SDK's own attempts on a
    /// new leader included), with when.
    pub(super) acked: Vec<(String, Instant)>,
    /// Of the acknowledged, the filled (the rest were rejected).
    pub(super) filled: u64,
    /// Orders whose first call failed with their outcome unknown, answered
    /// by a retry with the same client order id, with when.
    pub(super) settled: Vec<(String, Instant)>,
    /// Of the settled, the filled (the rest were rejected).
    pub(super) settled_filled: u64,
    /// Orders that certainly were not recorded, by error code.
    pub(super) failed: BTreeMap<String, u64>,
    /// Orders whose outcome stayed unknown (no retry was answered), by the
    /// last error code.
    pub(super) unknown: BTreeMap<String, u64>,
    /// Their client order ids.
    pub(super) unknown_ids: Vec<String>,
    /// Latency of the acknowledged orders.
    pub(super) latency: Histogram<u64>,
}

/// One report line's worth.
#[derive(Debug)]
pub(super) struct Window {
    /// Orders answered (acknowledged, or settled by a retry).
    pub(super) ok: u64,
    /// Calls that failed (first calls and retries), by error code.
    pub(super) failed: BTreeMap<String, u64>,
    pub(super) latency: Histogram<u64>,
    /// The instance (and epoch) of the last answer.
    pub(super) served_by: Option<(String, Option<u64>)>,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, from 1 µs to 10 minutes, 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

impl Window {
    pub(super) fn new() -> Self {
        Self {
            ok: 0,
            failed: BTreeMap::new(),
            latency: histogram(),
            served_by: None,
        }
    }
}

impl Tally {
    pub(super) fn new() -> Self {
        Self {
            window: Window::new(),
            acked: Vec::new(),
            filled: 0,
            settled: Vec::new(),
            settled_filled: 0,
            failed: BTreeMap::new(),
            unknown: BTreeMap::new(),
            unknown_ids: Vec::new(),
            latency: histogram(),
        }
    }

    /// One `create_order` call that took `took` and `said` so; `retry`:
    /// whether it re-sent an order whose outcome was unknown. A decided
    /// order is answered (acknowledged, or settled by the retry); a failed
    /// call counts on this second's line only, its order being retried or
    /// given up on ([`Tally::gave_up`]).
    pub(super) fn record(&mut self, took: Duration, said: &Said, retry: bool) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        match said {
            Said::Decided {
                order_id,
                filled,
                served_by,
            } => {
                self.window.latency.saturating_record(micros);
                self.window.ok += 1;
                if served_by.is_some() {
                    self.window.served_by.clone_from(served_by);
                }
                if retry {
                    self.settled_filled += u64::from(*filled);
                    self.settled.push((order_id.clone(), Instant::now()));
                } else {
                    self.latency.saturating_record(micros);
                    self.filled += u64::from(*filled);
                    self.acked.push((order_id.clone(), Instant::now()));
                }
            }
            Said::NotPlaced(code) | Said::Unknown(code) => {
                *self.window.failed.entry(code.clone()).or_default() += 1;
            }
        }
    }

    /// An order no call answered, `said` being what the last one said:
    /// failed if that proves nothing was recorded, else unknown.
    pub(super) fn gave_up(&mut self, said: &Said, client_order_id: &str) {
        match said {
            Said::NotPlaced(code) => *self.failed.entry(code.clone()).or_default() += 1,
            Said::Unknown(code) => {
                *self.unknown.entry(code.clone()).or_default() += 1;
                self.unknown_ids.push(client_order_id.to_owned());
            }
            Said::Decided { .. } => {}
        }
    }

    /// Orders sent: answered, failed, or of unknown outcome.
    pub(super) fn sent(&self) -> u64 {
        self.answered() + self.failed.values().sum::<u64>() + self.unknown.values().sum::<u64>()
    }

    /// Orders answered: acknowledged, or settled by a retry.
    pub(super) fn answered(&self) -> u64 {
        (self.acked.len() + self.settled.len()) as u64
    }

    /// Acknowledged orders the risk check refused.
    pub(super) fn rejected(&self) -> u64 {
        self.acked.len() as u64 - self.filled
    }

    /// `3 settled by a retry (2 filled, 1 rejected)`, or `0 settled by a
    /// retry`.
    pub(super) fn settled_text(&self) -> String {
        let settled = self.settled.len() as u64;
        if settled == 0 {
            return "0 settled by a retry".to_owned();
        }
        format!(
            "{settled} settled by a retry ({} filled, {} rejected)",
            self.settled_filled,
            settled - self.settled_filled
        )
    }
}

/// What one `create_order` call told of its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Said {
    /// It is decided (filled or rejected): the call answered it, or failed
    /// saying its decision is stored (only its event was not published
    /// yet). `served_by`: the instance (and epoch) that answered, when
    /// known.
    Decided {
        order_id: String,
        filled: bool,
        served_by: Option<(String, Option<u64>)>,
    },
    /// It certainly was not recorded (by this call): nothing was sent (no
    /// leader, no instance, a bad name), or the service refused the
    /// request itself (`INVALID_REQUEST`, `CONFLICT`, ...). The error code.
    NotPlaced(String),
    /// Nobody can tell from this call: it may have been recorded, pending
    /// or decided (a TIMEOUT; a failure the service said is of a recorded
    /// order; a SERVICE_UNAVAILABLE, NOT_ACTIVE or INTERNAL, which may
    /// also be the last of the SDK's attempts on the leaders after one that
    /// timed out). A retry with the same client order id settles it. The
    /// error code.
    Unknown(String),
}

/// What `answer` tells of its order.
pub(super) fn said(answer: OrderAnswer) -> Said {
    let e = match answer {
        Ok(reply) if reply.value.status.is_final() => {
            return Said::Decided {
                filled: reply.value.status == OrderStatus::Filled,
                order_id: reply.value.order_id,
                served_by: reply.instance_id.map(|id| (id, reply.epoch)),
            };
        }
        // Recorded, not decided: a retry decides it.
        Ok(reply) => return Said::Unknown(format!("{:?}", reply.value.status).to_uppercase()),
        Err(e) => e,
    };
    // Its decision is stored (only its event was not published yet): the
    // order was placed, and is read back with the rest.
    if let Some((order_id, filled)) = decided(&e) {
        return Said::Decided {
            order_id,
            filled,
            served_by: None,
        };
    }
    let code = e.code().to_string();
    let certain = match &e {
        RpcError::Remote { error, .. } => {
            let names_an_order = error
                .details
                .as_ref()
                .is_some_and(|d| d.get("order_id").is_some());
            !names_an_order
                && !matches!(
                    error.code,
                    ErrorCode::Timeout
                        | ErrorCode::ServiceUnavailable
                        | ErrorCode::NotActive
                        | ErrorCode::Internal
                )
        }
        // Said only when no attempt was sent.
        RpcError::InvalidName(_)
        | RpcError::Encode(_)
        | RpcError::InvalidOptions { .. }
        | RpcError::NoInstances { .. }
        | RpcError::NoSuchMethod { .. }
        | RpcError::NoLeader { .. }
        | RpcError::UnknownGroup { .. }
        | RpcError::NotSingleActive { .. }
        | RpcError::Discovery(_)
        | RpcError::Election(_) => true,
        // Timeout, ConnectionLost, NoResponders (perhaps after an attempt
        // that timed out), DeposedLeader, Decode, Transport, and whatever
        // a later SDK adds: it may have run.
        _ => false,
    };
    if certain {
        Said::NotPlaced(code)
    } else {
        Said::Unknown(code)
    }
}

/// The order a failed `create_order` names as decided — its decision
/// stored, only its event not yet published (`details.status` `filled` or
/// `rejected`) — and whether it filled; `None` for any other failure (a
/// `pending` order expires unless retried).
fn decided(e: &RpcError) -> Option<(String, bool)> {
    let RpcError::Remote { error, .. } = e else {
        return None;
    };
    let details = error.details.as_ref()?;
    let filled = match details.get("status")?.as_str()? {
        "filled" => true,
        "rejected" => false,
        _ => return None,
    };
    Some((details.get("order_id")?.as_str()?.to_owned(), filled))
}

/// `12 [TIMEOUT×2, UNAVAILABLE×1]`, or `0`.
pub(super) fn failures(failed: &BTreeMap<String, u64>) -> String {
    let total: u64 = failed.values().sum();
    if total == 0 {
        return "0".to_owned();
    }
    let kinds: Vec<String> = failed.iter().map(|(k, n)| format!("{k}×{n}")).collect();
    format!("{total} [{}]", kinds.join(", "))
}

pub(super) fn millis(micros: u64) -> String {
    if micros >= 1_000_000 {
        format!("{:.2} s", micros as f64 / 1e6)
    } else {
        format!("{:.1} ms", micros as f64 / 1e3)
    }
}

/// One report line: the second's answers, failures, p99 and who served;
/// `at` is its time since the start, `None` for what came after the last
/// line printed (up to the stop, and the calls in flight then).
pub(super) fn report_line(at: Option<Duration>, window: &Window) -> String {
    let at = at.map_or_else(
        || "last".to_owned(),
        |t| format!("{:.1} s", t.as_secs_f64()),
    );
    let mut line = format!(
        "{at:>9}  ok {:>4}  failed {}",
        window.ok,
        failures(&window.failed)
    );
    if window.ok > 0 {
        line.push_str(&format!(
            "  p99 {}",
            millis(window.latency.value_at_quantile(0.99))
        ));
    }
    if let Some((instance, epoch)) = &window.served_by {
        line.push_str(&format!("  leader {instance}"));
        if let Some(epoch) = epoch {
            line.push_str(&format!(" (epoch {epoch})"));
        }
    }
    line
}

/// The first ids of a list, and how many more.
pub(super) fn abbreviated(ids: &[&str]) -> String {
    const SHOWN: usize = 10;
    let mut text = ids
        .iter()
        .take(SHOWN)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if ids.len() > SHOWN {
        text.push_str(&format!(" and {} more", ids.len() - SHOWN));
    }
    text
}

#[cfg(test)]
mod tests {
    use aegis_contracts::trading::Side;
    use aegis_trading::order::{CreateOrder, Order};

    use super::*;

    #[test]
    fn a_report_line_says_the_second_failures_by_code_and_the_leader() {
        let mut window = Window::new();
        assert_eq!(
            report_line(Some(Duration::from_secs(3)), &window),
            "    3.0 s  ok    0  failed 0"
        );
        assert_eq!(report_line(None, &window), "     last  ok    0  failed 0");
        window.ok = 9;
        window.latency.saturating_record(2_500);
        window.failed.insert("TIMEOUT".into(), 2);
        window.failed.insert("NOT_ACTIVE".into(), 1);
        window.served_by = Some(("order-2".into(), Some(3)));
        assert_eq!(
            report_line(Some(Duration::from_millis(12_040)), &window),
            "   12.0 s  ok    9  failed 3 [NOT_ACTIVE×1, TIMEOUT×2]  p99 2.5 ms  leader order-2 (epoch 3)"
        );
    }

    fn reply(status: OrderStatus) -> OrderAnswer {
        let request = CreateOrder {
            symbol: "AAPL".into(),
            side: Side::Buy,
            quantity: 1,
            price: None,
            client_order_id: "c-1".into(),
        };
        let mut order = Order::new("ord-1".into(), &request, 1, "order-1");
        order.status = status;
        Ok(aegis_sdk::rpc::Reply {
            value: order,
            instance_id: Some("order-1".into()),
            epoch: Some(1),
        })
    }

    fn timeout() -> RpcError {
        RpcError::Timeout {
            subject: "rpc.order-service.create_order".into(),
            timeout: Duration::from_secs(5),
        }
    }

    fn remote(error: aegis_sdk::rpc::WireError) -> RpcError {
        RpcError::Remote {
            subject: "rpc.order-service.create_order".into(),
            error,
        }
    }

    /// A failed create_order whose error says the order is decided (its
    /// decision stored, only its event not yet published) was placed.
    fn failed_with_status(status: &str) -> OrderAnswer {
        Err(remote(
            aegis_sdk::rpc::WireError::service_unavailable(
                "the order event could not be published; retry",
            )
            .with_details(serde_json::json!({
                "order_id": format!("ord-{status}"),
                "client_order_id": "c-1",
                "status": status,
            })),
        ))
    }

    #[test]
    fn a_call_says_an_order_decided_certainly_not_placed_or_unknown() {
        let decided = |order_id: &str, filled| Said::Decided {
            order_id: order_id.into(),
            filled,
            served_by: None,
        };
        assert_eq!(
            said(reply(OrderStatus::Filled)),
            Said::Decided {
                order_id: "ord-1".into(),
                filled: true,
                served_by: Some(("order-1".into(), Some(1))),
            }
        );
        assert_eq!(
            said(failed_with_status("filled")),
            decided("ord-filled", true)
        );
        assert_eq!(
            said(failed_with_status("rejected")),
            decided("ord-rejected", false)
        );
        let unknown = |code: &str| Said::Unknown(code.into());
        // Recorded and pending: a retry decides it.
        assert_eq!(said(reply(OrderStatus::Pending)), unknown("PENDING"));
        assert_eq!(
            said(failed_with_status("pending")),
            unknown("SERVICE_UNAVAILABLE")
        );
        // Perhaps recorded.
        assert_eq!(said(Err(timeout())), unknown("TIMEOUT"));
        assert_eq!(
            said(Err(RpcError::NoResponders {
                subject: "rpc.order-service.order-1.create_order".into()
            })),
            unknown("SERVICE_UNAVAILABLE")
        );
        assert_eq!(
            said(Err(remote(aegis_sdk::rpc::WireError::service_unavailable(
                "pricing-service is unavailable; retry"
            )))),
            unknown("SERVICE_UNAVAILABLE")
        );
        // Certainly not recorded: nothing sent, or refused as invalid.
        assert_eq!(
            said(Err(RpcError::NoLeader {
                service: "order-service".into(),
                group: "default".into(),
                waited: Duration::from_secs(5),
                similar: None,
            })),
            Said::NotPlaced("SERVICE_UNAVAILABLE".into())
        );
        assert_eq!(
            said(Err(remote(aegis_sdk::rpc::WireError::invalid_request(
                "symbol: XYZ is not a traded symbol"
            )))),
            Said::NotPlaced("INVALID_REQUEST".into())
        );
    }

    #[test]
    fn a_tally_tells_acknowledged_settled_failed_and_unknown_orders_apart() {
        let mut tally = Tally::new();
        let ms = Duration::from_millis(2);
        tally.record(ms, &said(reply(OrderStatus::Filled)), false);
        tally.record(ms, &said(failed_with_status("rejected")), false);
        // Timed out, then settled by a retry.
        tally.record(Duration::from_secs(5), &said(Err(timeout())), false);
        tally.record(ms, &said(failed_with_status("filled")), true);
        // Timed out, and no retry answered.
        let lost_track = said(Err(timeout()));
        tally.record(Duration::from_secs(5), &lost_track, false);
        tally.gave_up(&lost_track, "c-9");
        // Nothing sent.
        let no_leader = said(Err(RpcError::NoLeader {
            service: "order-service".into(),
            group: "default".into(),
            waited: Duration::from_secs(5),
            similar: None,
        }));
        tally.record(Duration::from_secs(5), &no_leader, false);
        tally.gave_up(&no_leader, "c-10");
        assert_eq!(tally.sent(), 5);
        assert_eq!(tally.answered(), 3);
        assert_eq!((tally.filled, tally.rejected()), (1, 1));
        let ids = |orders: &[(String, Instant)]| -> Vec<String> {
            orders.iter().map(|(id, _)| id.clone()).collect()
        };
        assert_eq!(ids(&tally.acked), ["ord-1", "ord-rejected"]);
        assert_eq!(ids(&tally.settled), ["ord-filled"]);
        assert_eq!(
            tally.settled_text(),
            "1 settled by a retry (1 filled, 0 rejected)"
        );
        assert_eq!(failures(&tally.failed), "1 [SERVICE_UNAVAILABLE×1]");
        assert_eq!(failures(&tally.unknown), "1 [TIMEOUT×1]");
        assert_eq!(tally.unknown_ids, ["c-9"]);
        // The second's line: every answer, every failed call.
        assert_eq!(tally.window.ok, 3);
        assert_eq!(
            failures(&tally.window.failed),
            "3 [SERVICE_UNAVAILABLE×1, TIMEOUT×2]"
        );
    }

    #[test]
    fn long_lists_of_ids_are_cut_short() {
        let ids: Vec<String> = (0..12).map(|i| format!("o{i}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        assert_eq!(
            abbreviated(&ids),
            "o0, o1, o2, o3, o4, o5, o6, o7, o8, o9 and 2 more"
        );
        assert_eq!(abbreviated(&ids[..2]), "o0, o1");
    }
}
