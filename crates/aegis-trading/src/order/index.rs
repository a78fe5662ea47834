//! The order store's in-memory index, bounded: what `list_orders` and the
//! recovery sweep read instead of listing keys. Pure logic, tested without
//! NATS.
//!
//! The bucket keeps every unsettled order, and every settled one for
//! `keep_settled`; memory must not. The index holds:
//! - the newest `capacity` orders by creation time (default 10 000, a few
//!   MB), for listings — a listing covers that window and says so
//!   ([`OrderList::truncated`]) once older orders have been left out; a
//!   single order is always read from the bucket (`get_order`);
//! - a summary of every unsettled order (pending, or decided but not yet
//!   announced), however old, for the sweep: these must never be dropped,
//!   or an order would dangle. They are few — an order settles within a
//!   request — and only an outage of a dependency makes them pile up, by as
//!   many orders as callers attempt during it.
//!
//! Entries change only to a newer revision, so the watch and this
//! instance's own writes and reads can race harmlessly: an older revision
//! read late can only bring an order back to the sweep's list until the
//! watch, which delivers every key's latest revision in order, catches up.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use super::{
    model::{ListOrders, Order, OrderList, OrderStatus},
    term::{Standing, Term, standing},
};

/// Where an unsettled order is, for the sweep.
#[derive(Debug, Clone)]
struct Unsettled {
    revision: u64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// The term it was last written under.
    term: Term,
    symbol: String,
    /// Filled, its fill not yet announced: the positions risk judges by
    /// miss it until it is.
    filled: bool,
    /// Not decided yet.
    pending: bool,
}

/// The newest orders and every unsettled one.
#[derive(Debug)]
pub(crate) struct Index {
    capacity: usize,
    /// The newest orders, keyed by (creation time, id): the last is newest.
    recent: BTreeMap<(DateTime<Utc>, String), (u64, Order)>,
    /// Order id → its creation time, to find it in `recent`.
    created: HashMap<String, DateTime<Utc>>,
    unsettled: HashMap<String, Unsettled>,
    /// Whether an order was ever left out for being older than the window.
    truncated: bool,
}

impl Index {
    /// An empty index listing at most `capacity` orders.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            recent: BTreeMap::new(),
            created: HashMap::new(),
            unsettled: HashMap::new(),
            truncated: false,
        }
    }

    /// Forgets every order: the bucket was created again, and its
    /// revisions are not comparable with the ones known.
    pub(crate) fn clear(&mut self) {
        *self = Self::new(self.capacity);
    }

    /// Takes `order` at `revision` unless a newer revision is known.
    pub(crate) fn remember(&mut self, revision: u64, order: Order) {
        self.track_unsettled(revision, &order);
        match self.created.get(&order.order_id) {
            Some(created) => {
                let key = (*created, order.order_id.clone());
                if let Some(entry) = self.recent.get_mut(&key)
                    && entry.0 < revision
                {
                    *entry = (revision, order);
                }
            }
            None => self.insert_recent(revision, order),
        }
    }

    fn track_unsettled(&mut self, revision: u64, order: &Order) {
        if self
            .unsettled
            .get(&order.order_id)
            .is_some_and(|u| u.revision >= revision)
        {
            return;
        }
        if order.is_settled() {
            self.unsettled.remove(&order.order_id);
        } else {
            self.unsettled.insert(
                order.order_id.clone(),
                Unsettled {
                    revision,
                    created_at: order.created_at,
                    updated_at: order.updated_at,
                    term: order.term(),
                    symbol: order.symbol.clone(),
                    filled: order.status == OrderStatus::Filled,
                    pending: !order.status.is_final(),
                },
            );
        }
    }

    fn insert_recent(&mut self, revision: u64, order: Order) {
        let key = (order.created_at, order.order_id.clone());
        let full = self.recent.len() >= self.capacity;
        if full
            && self
                .recent
                .first_key_value()
                .is_some_and(|(oldest, _)| key < *oldest)
        {
            // Older than everything listed: a listing would never reach it.
            self.truncated = true;
            return;
        }
        self.created
            .insert(order.order_id.clone(), order.created_at);
        self.recent.insert(key, (revision, order));
        if self.recent.len() > self.capacity
            && let Some(((_, id), _)) = self.recent.pop_first()
        {
            self.created.remove(&id);
            self.truncated = true;
        }
    }

    /// Forgets `order_id`, gone from the bucket at `revision` (it expired,
    /// or was deleted), unless a newer revision of it is known.
    pub(crate) fn forget(&mut self, order_id: &str, revision: u64) {
        if self
            .revision(order_id)
            .is_some_and(|known| known > revision)
        {
            return;
        }
        self.unsettled.remove(order_id);
        if let Some(created) = self.created.remove(order_id) {
            self.recent.remove(&(created, order_id.to_owned()));
        }
    }

    /// The newest revision of `order_id` known here (written or read by
    /// this instance, or handed over by the watch); `None` when the order
    /// is not held (never seen, or listed no more and settled).
    pub(crate) fn revision(&self, order_id: &str) -> Option<u64> {
        let unsettled = self.unsettled.get(order_id).map(|u| u.revision);
        let recent = self.created.get(order_id).and_then(|created| {
            self.recent
                .get(&(*created, order_id.to_owned()))
                .map(|(revision, _)| *revision)
        });
        unsettled.max(recent)
    }

    /// Ids of the unsettled orders the leader whose term is `leader`
    /// should see to, oldest first: decided ones not announced, last
    /// written by an older term ([`standing`]) or by itself before
    /// `stale_before` (their request gave up); pending ones created before
    /// `expire_before`, to be expired (a younger pending order is its
    /// caller's to retry).
    pub(crate) fn unfinished(
        &self,
        leader: Term,
        stale_before: DateTime<Utc>,
        expire_before: DateTime<Utc>,
    ) -> Vec<String> {
        let mut due: Vec<(&DateTime<Utc>, &String)> = self
            .unsettled
            .iter()
            .filter(|(_, u)| {
                if u.pending {
                    u.created_at < expire_before
                } else {
                    match standing(u.term, leader) {
                        Standing::Older => true,
                        Standing::Own => u.updated_at < stale_before,
                        Standing::Newer => false,
                    }
                }
            })
            .map(|(id, u)| (&u.created_at, id))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Ids of the filled orders of `symbol` whose fill is not announced
    /// yet, oldest first.
    pub(crate) fn unannounced_fills(&self, symbol: &str) -> Vec<String> {
        let mut due: Vec<(&DateTime<Utc>, &String)> = self
            .unsettled
            .iter()
            .filter(|(_, u)| u.filled && u.symbol == symbol)
            .map(|(id, u)| (&u.created_at, id))
            .collect();
        due.sort();
        due.into_iter().map(|(_, id)| id.clone()).collect()
    }

    /// Orders matching `req` among the newest, newest first, at most `limit`.
    pub(crate) fn list(&self, req: &ListOrders, limit: usize) -> OrderList {
        let mut matching = self
            .recent
            .values()
            .rev()
            .map(|(_, o)| o)
            .filter(|o| req.symbol.as_ref().is_none_or(|s| &o.symbol == s))
            .filter(|o| req.status.is_none_or(|s| o.status == s));
        let orders: Vec<Order> = matching.by_ref().take(limit).cloned().collect();
        OrderList {
            total: orders.len() + matching.count(),
            orders,
            truncated: self.truncated,
        }
    }

    /// How many orders it holds: listed, and unsettled.
    #[cfg(test)]
    fn len(&self) -> (usize, usize) {
        (self.recent.len(), self.unsettled.len())
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::trading::Side;

    use super::*;
    use crate::order::CreateOrder;

    /// A leader's term at `epoch`, in the elections bucket the test
    /// orders name none of (written as before terms were recorded).
    fn leader(epoch: u64) -> Term {
        Term {
            elections: None,
            epoch,
        }
    }

    fn order(n: i64, status: OrderStatus, announced: bool) -> Order {
        let req = CreateOrder {
            symbol: if n % 2 == 0 { "AAPL" } else { "MSFT" }.into(),
            side: Side::Buy,
            quantity: 1,
            price: None,
            client_order_id: format!("c-{n}"),
        };
        let mut order = Order::new(format!("o-{n:05}"), &req, 1, "i");
        order.created_at = DateTime::from_timestamp(1_750_000_000 + n, 0).unwrap();
        order.updated_at = order.created_at;
        order.status = status;
        order.announced = announced;
        order
    }

    #[test]
    fn an_order_gone_from_the_bucket_leaves_the_index_unless_written_since() {
        let mut index = Index::new(100);
        index.remember(5, order(1, OrderStatus::Filled, true));
        index.remember(6, order(2, OrderStatus::Pending, false));
        index.remember(9, order(3, OrderStatus::Filled, true));
        index.forget("o-00001", 7);
        index.forget("o-00002", 8);
        // A marker older than what is known (read late) changes nothing.
        index.forget("o-00003", 8);
        let listed = index.list(&ListOrders::default(), 10);
        let ids: Vec<_> = listed.orders.iter().map(|o| o.order_id.as_str()).collect();
        assert_eq!(ids, ["o-00003"]);
        assert_eq!(index.len(), (1, 0));
        assert!(!listed.truncated, "an expired order is not a truncation");
        assert_eq!(index.revision("o-00001"), None);
    }

    #[test]
    fn listings_hold_the_newest_orders_and_say_when_older_were_left_out() {
        let mut index = Index::new(100);
        for n in 0..1000 {
            index.remember(1, order(n, OrderStatus::Filled, true));
            assert!(index.len().0 <= 100);
        }
        let all = index.list(&ListOrders::default(), 10);
        assert_eq!(all.orders[0].order_id, "o-00999", "newest first");
        assert_eq!((all.orders.len(), all.total), (10, 100));
        assert!(all.truncated);
        let msft = ListOrders {
            symbol: Some("MSFT".into()),
            ..Default::default()
        };
        assert_eq!(index.list(&msft, 1000).total, 50);
        // An old order read back later does not push out a newer one.
        index.remember(2, order(5, OrderStatus::Filled, true));
        assert_eq!(
            index
                .list(&ListOrders::default(), 1000)
                .orders
                .last()
                .unwrap()
                .order_id,
            "o-00900"
        );
        assert!(!Index::new(10).list(&ListOrders::default(), 10).truncated);
    }

    /// The newest revision known of an order, listed or unsettled.
    #[test]
    fn the_newest_revision_of_an_order_is_known() {
        let mut index = Index::new(1);
        assert_eq!(index.revision("o-00000"), None);
        index.remember(3, order(0, OrderStatus::Pending, false));
        assert_eq!(index.revision("o-00000"), Some(3));
        index.remember(5, order(0, OrderStatus::Filled, true));
        index.remember(4, order(0, OrderStatus::Filled, false));
        assert_eq!(index.revision("o-00000"), Some(5), "a late older read");
        // Pushed out of the listing while unsettled: still known.
        index.remember(6, order(1, OrderStatus::Pending, false));
        index.remember(7, order(2, OrderStatus::Filled, true));
        assert_eq!(index.revision("o-00001"), Some(6));
        assert_eq!(index.revision("o-00002"), Some(7));
    }

    #[test]
    fn unsettled_orders_are_kept_however_old_until_settled() {
        let mut index = Index::new(10);
        index.remember(1, order(0, OrderStatus::Pending, false));
        index.remember(1, order(1, OrderStatus::Filled, false));
        for n in 2..500 {
            index.remember(1, order(n, OrderStatus::Filled, true));
        }
        assert_eq!(index.len(), (10, 2));
        assert_eq!(index.unannounced_fills("MSFT"), ["o-00001"]);
        assert!(index.unannounced_fills("AAPL").is_empty(), "pending");
        let later = DateTime::from_timestamp(1_760_000_000, 0).unwrap();
        let long_ago = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        assert_eq!(
            index.unfinished(leader(2), later, later),
            ["o-00000", "o-00001"]
        );
        assert_eq!(
            index.unfinished(leader(1), later, later),
            ["o-00000", "o-00001"]
        );
        assert!(
            index.unfinished(leader(1), long_ago, long_ago).is_empty(),
            "its own, not stale yet"
        );
        assert_eq!(
            index.unfinished(leader(2), long_ago, long_ago),
            ["o-00001"],
            "an older leader's decided order at once; a pending one only once it is due to expire"
        );

        // Settled: gone from the sweep's list.
        index.remember(3, order(1, OrderStatus::Filled, true));
        assert_eq!(index.unfinished(leader(2), later, later), ["o-00000"]);
        // A read of an older revision that arrives late may bring it back
        // for a moment (the sweep then reads it, finds it settled, and
        // remembers that); the watch delivers the newer one after it.
        index.remember(2, order(1, OrderStatus::Filled, false));
        index.remember(3, order(1, OrderStatus::Filled, true));
        assert_eq!(index.unfinished(leader(2), later, later), ["o-00000"]);
        index.remember(2, order(0, OrderStatus::Rejected, true));
        assert!(index.unfinished(leader(2), later, later).is_empty());
        assert_eq!(index.len(), (10, 0));
    }

    /// The defect: a decided order left unannounced by the leader of an
    /// elections bucket deleted since, at an epoch far above the new
    /// bucket's, was taken for a newer leader's and never swept. It is an
    /// older term's: due at once. In the leader's own bucket the epoch
    /// still decides.
    #[test]
    fn an_order_of_another_elections_bucket_is_due_whatever_its_epoch() {
        const OLD: i128 = 1_767_225_600_000_000_000;
        const NEW: i128 = OLD + 3_600_000_000_000;
        let mut index = Index::new(10);
        let mut left = order(1, OrderStatus::Filled, false);
        left.write_under(
            Term {
                elections: Some(OLD),
                epoch: 250,
            },
            "order-1",
        );
        index.remember(1, left.clone());
        let long_ago = DateTime::from_timestamp(1_000_000_000, 0).unwrap();
        let new_leader = Term {
            elections: Some(NEW),
            epoch: 3,
        };
        assert_eq!(
            index.unfinished(new_leader, long_ago, long_ago),
            ["o-00001"]
        );
        let old_bucket_leader = Term {
            elections: Some(OLD),
            epoch: 3,
        };
        assert!(
            index
                .unfinished(old_bucket_leader, long_ago, long_ago)
                .is_empty(),
            "a newer leader's, in one bucket"
        );
    }
}
