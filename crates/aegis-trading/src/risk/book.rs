//! The book: positions built from `events.order.filled`, each fill applied
//! once. Pure logic, tested without NATS.
//!
//! A fill can arrive twice: order-service publishes an outcome again when
//! the record that it was announced did not land (a crash between the two),
//! and past the stream's two-minute dedup window the stream stores it again.
//! So fills are recognised by order id — but only within a window: a set of
//! every order id ever filled would grow without end (at 200 orders/s, 17
//! million ids a day). [`RecentFills`] keeps the ids of the fills stored in
//! the last `window` of stream time, and at most `capacity` of them. A
//! repeat that arrives later than that is counted twice; order-service makes
//! one only after a failure, and announces it again at its next sweep
//! (every few seconds) or the next leader's, so a window of minutes covers
//! all but an order-service outage of that length at that very moment.
//!
//! A book is also what a snapshot holds ([`Book::snapshot`], restored with
//! [`Book::restore`]): positions as of a stream sequence, plus where in the
//! stream the fills it still remembers begin, so a restart replays those
//! (recognising them, not applying them again) before the new ones.

use std::{
    collections::{HashSet, VecDeque},
    time::Duration,
};

use std::collections::BTreeMap;

use aegis_contracts::trading::OrderFilled;
use chrono::{DateTime, Utc};
use tracing::error;

use super::Positions;

/// Positions and the recent fills they were built from.
#[derive(Debug)]
pub(crate) struct Book {
    pub(crate) view: Positions,
    recent: RecentFills,
}

impl Book {
    /// An empty book that recognises repeated fills within `window` (stream
    /// time) and among the last `capacity` fills.
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            view: Positions::default(),
            recent: RecentFills::new(window, capacity),
        }
    }

    /// A book holding `positions` as of stream sequence `last_event_sequence`
    /// (what a snapshot holds); the fills before that are replayed into it
    /// to be recognised, not applied.
    pub(crate) fn restore(
        positions: BTreeMap<String, i64>,
        last_event_sequence: u64,
        window: Duration,
        capacity: usize,
    ) -> Self {
        let mut book = Self::new(window, capacity);
        book.view = Positions {
            positions,
            last_event_sequence,
        };
        book
    }

    /// The positions, the sequence they are as of, and the first sequence
    /// a restored book should replay from to remember the same fills (the
    /// oldest one remembered, or the next one).
    pub(crate) fn snapshot(&self) -> (BTreeMap<String, i64>, u64, u64) {
        let last = self.view.last_event_sequence;
        let replay_from = self
            .recent
            .queue
            .front()
            .map_or(last + 1, |(_, sequence, _)| (*sequence).min(last + 1));
        (self.view.positions.clone(), last, replay_from)
    }

    /// Applies the fill stored at `sequence` at `stored`, unless it was
    /// applied before: a repeat of a recent fill, or a sequence at or below
    /// the last one applied (a redelivery, or a replay of fills a restored
    /// snapshot holds — remembered, not applied) or one that would take the
    /// position past what an i64 holds (logged, not applied). Returns
    /// whether it changed the positions.
    pub(crate) fn apply(
        &mut self,
        sequence: u64,
        stored: DateTime<Utc>,
        fill: &OrderFilled,
    ) -> bool {
        if sequence <= self.view.last_event_sequence {
            self.recent.insert(&fill.order_id, sequence, stored);
            return false;
        }
        self.view.last_event_sequence = sequence;
        if !self.recent.insert(&fill.order_id, sequence, stored) {
            return false;
        }
        let position = self.view.positions.entry(fill.symbol.clone()).or_insert(0);
        match position.checked_add(fill.side.signed(fill.quantity)) {
            Some(after) => {
                *position = after;
                true
            }
            None => {
                // Wrapped, a long would read as a short; never judge by that.
                error!(
                    sequence,
                    order_id = %fill.order_id,
                    symbol = %fill.symbol,
                    position = *position,
                    quantity = fill.quantity,
                    "a fill would take the position past what it can hold; not applied"
                );
                false
            }
        }
    }

    /// Moves past `sequence` without a fill (an event that does not decode).
    pub(crate) fn pass(&mut self, sequence: u64) {
        self.view.last_event_sequence = self.view.last_event_sequence.max(sequence);
    }

    /// How many fill ids it holds (bounded by the capacity).
    #[cfg(test)]
    fn recent_len(&self) -> usize {
        self.recent.ids.len()
    }
}

/// Order ids of the fills stored within a time window, at most `capacity`.
#[derive(Debug)]
struct RecentFills {
    ids: HashSet<String>,
    /// Arrival order, for eviction: stream time, stream sequence and id.
    queue: VecDeque<(DateTime<Utc>, u64, String)>,
    window: chrono::Duration,
    capacity: usize,
}

impl RecentFills {
    fn new(window: Duration, capacity: usize) -> Self {
        Self {
            ids: HashSet::new(),
            queue: VecDeque::new(),
            window: chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX),
            capacity: capacity.max(1),
        }
    }

    /// Records `order_id` stored at `sequence` at `stored`; false when it
    /// is already there.
    fn insert(&mut self, order_id: &str, sequence: u64, stored: DateTime<Utc>) -> bool {
        // Stream time only grows along the stream, so the front is oldest.
        let horizon = stored.checked_sub_signed(self.window);
        while let Some((at, _, _)) = self.queue.front() {
            let expired = horizon.is_some_and(|h| *at < h);
            if !expired && self.queue.len() < self.capacity {
                break;
            }
            if let Some((_, _, id)) = self.queue.pop_front() {
                self.ids.remove(&id);
            }
        }
        if !self.ids.insert(order_id.to_owned()) {
            return false;
        }
        self.queue
            .push_back((stored, sequence, order_id.to_owned()));
        true
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::trading::Side;

    use super::*;

    fn fill(order_id: &str, side: Side, quantity: i64) -> OrderFilled {
        OrderFilled {
            order_id: order_id.into(),
            client_order_id: format!("c-{order_id}"),
            symbol: "AAPL".into(),
            side,
            quantity,
            fill_price: 100.0,
            filled_at: Utc::now(),
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_750_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn a_fill_counts_once_however_often_it_arrives_within_the_window() {
        let mut book = Book::new(Duration::from_secs(600), 1000);
        assert!(book.apply(1, at(0), &fill("o1", Side::Buy, 100)));
        assert!(
            !book.apply(1, at(0), &fill("o1", Side::Buy, 100)),
            "redelivered"
        );
        assert!(
            !book.apply(7, at(500), &fill("o1", Side::Buy, 100)),
            "published again"
        );
        assert!(book.apply(8, at(501), &fill("o2", Side::Sell, 30)));
        assert_eq!(book.view.positions["AAPL"], 70);
        assert_eq!(book.view.last_event_sequence, 8);
    }

    /// A fill that would take a position past what an i64 holds is not
    /// applied (it would wrap a long into a short, or panic the follower);
    /// the fills after it still are.
    #[test]
    fn a_fill_that_would_overflow_the_position_is_not_applied() {
        let mut book = Book::new(Duration::from_secs(600), 1000);
        let half = i64::MAX / 2 + 1;
        assert!(book.apply(1, at(0), &fill("o1", Side::Buy, half)));
        assert!(!book.apply(2, at(1), &fill("o2", Side::Buy, half)));
        assert_eq!(book.view.positions["AAPL"], half);
        assert_eq!(book.view.last_event_sequence, 2, "moved past it");
        assert!(book.apply(3, at(2), &fill("o3", Side::Sell, 5)));
        assert_eq!(book.view.positions["AAPL"], half - 5);
    }

    #[test]
    fn the_set_is_bounded_by_time_and_by_size() {
        let mut book = Book::new(Duration::from_secs(60), 100);
        for i in 0..10_000u64 {
            book.apply(i + 1, at(i as i64), &fill(&format!("o{i}"), Side::Buy, 1));
            assert!(book.recent_len() <= 61, "{i}: {}", book.recent_len());
        }
        let mut burst = Book::new(Duration::from_secs(3600), 100);
        for i in 0..10_000u64 {
            burst.apply(i + 1, at(0), &fill(&format!("o{i}"), Side::Buy, 1));
            assert!(burst.recent_len() <= 100);
        }
        assert_eq!(burst.view.positions["AAPL"], 10_000);
    }

    #[test]
    fn a_restored_book_recognises_the_fills_it_replays() {
        let mut book = Book::new(Duration::from_secs(600), 1000);
        book.apply(3, at(0), &fill("o1", Side::Buy, 100));
        book.apply(4, at(1), &fill("o2", Side::Buy, 5));
        let (positions, last, replay_from) = book.snapshot();
        assert_eq!((last, replay_from), (4, 3));

        let mut restored = Book::restore(positions, last, Duration::from_secs(600), 1000);
        // The replay from `replay_from`: held already, only remembered.
        assert!(!restored.apply(3, at(0), &fill("o1", Side::Buy, 100)));
        assert!(!restored.apply(4, at(1), &fill("o2", Side::Buy, 5)));
        assert_eq!(restored.view.positions["AAPL"], 105);
        // A repeat published after the snapshot is recognised too.
        assert!(!restored.apply(9, at(30), &fill("o1", Side::Buy, 100)));
        assert!(restored.apply(10, at(31), &fill("o3", Side::Sell, 5)));
        assert_eq!(restored.view.positions["AAPL"], 100);
        assert_eq!(restored.view.last_event_sequence, 10);
    }
}
