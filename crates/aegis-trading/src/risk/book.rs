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
//!
//! Sequences are those of one `EVENTS` stream, known by when it was
//! created ([`Book::stream`]). An operator may delete the stream and
//! create it again: its sequences start over, below the ones the book has
//! applied, and read as fills applied before. So the book then starts
//! over on the new stream ([`Book::rebase`]): it keeps its positions (those
//! trades happened) and applies the new stream's fills from its first on,
//! except those stored no later than the last fill it applied (a backup of
//! the old stream restored into the new one holds those, and they are in
//! the positions already).

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
    /// When the `EVENTS` stream its sequences are of was created (`None`:
    /// not known yet).
    stream: Option<DateTime<Utc>>,
    /// When the last fill applied was stored (stream time).
    last_fill_at: Option<DateTime<Utc>>,
    /// Fills stored no later than this are in the positions already: the
    /// last fill applied before the book started over on a new stream.
    floor: Option<DateTime<Utc>>,
}

/// What a book's snapshot holds, beside the positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// The sequence of the last fill the positions include.
    pub(crate) last_event_sequence: u64,
    /// Where a restored book replays from to remember the same fills.
    pub(crate) replay_from: u64,
    /// When the stream those sequences are of was created.
    pub(crate) stream: Option<DateTime<Utc>>,
    /// When the last fill applied was stored.
    pub(crate) last_fill_at: Option<DateTime<Utc>>,
}

impl Book {
    /// An empty book that recognises repeated fills within `window` (stream
    /// time) and among the last `capacity` fills.
    pub(crate) fn new(window: Duration, capacity: usize) -> Self {
        Self {
            view: Positions::default(),
            recent: RecentFills::new(window, capacity),
            stream: None,
            last_fill_at: None,
            floor: None,
        }
    }

    /// A book holding `positions` as of `place` (what a snapshot holds);
    /// the fills before its sequence are replayed into it to be recognised,
    /// not applied.
    pub(crate) fn restore(
        positions: BTreeMap<String, i64>,
        place: Place,
        window: Duration,
        capacity: usize,
    ) -> Self {
        let mut book = Self::new(window, capacity);
        book.view = Positions {
            positions,
            last_event_sequence: place.last_event_sequence,
        };
        book.stream = place.stream;
        book.last_fill_at = place.last_fill_at;
        book
    }

    /// When the `EVENTS` stream the book's sequences are of was created.
    #[cfg(test)]
    pub(crate) fn stream(&self) -> Option<DateTime<Utc>> {
        self.stream
    }

    /// Takes the stream created at `created` as the one the book's
    /// sequences are of. When the book knew another one, that stream was
    /// created again and its sequences started over: the book keeps its
    /// positions and its recent fill ids, and takes every fill of the new
    /// stream from its first on, except those stored no later than the
    /// last fill it applied. Returns whether it started over.
    pub(crate) fn rebase(&mut self, created: DateTime<Utc>) -> bool {
        let known = self.stream.replace(created);
        if known.is_none_or(|known| known == created) {
            return false;
        }
        self.view.last_event_sequence = 0;
        self.floor = self.last_fill_at.max(self.floor);
        for entry in &mut self.recent.queue {
            // Sequences of the old stream: none to replay on a restart.
            entry.1 = 0;
        }
        true
    }

    /// The positions and where they are in the stream: the sequence they
    /// are as of, the first sequence a restored book should replay from to
    /// remember the same fills (the oldest one remembered, or the next
    /// one), the stream and the last fill's time.
    pub(crate) fn snapshot(&self) -> (BTreeMap<String, i64>, Place) {
        let last = self.view.last_event_sequence;
        let replay_from = self
            .recent
            .queue
            .front()
            .map_or(last + 1, |(_, sequence, _)| (*sequence).clamp(1, last + 1));
        let place = Place {
            last_event_sequence: last,
            replay_from,
            stream: self.stream,
            last_fill_at: self.last_fill_at,
        };
        (self.view.positions.clone(), place)
    }

    /// Applies the fill stored at `sequence` at `stored`, unless it was
    /// applied before: a repeat of a recent fill, or a sequence at or below
    /// the last one applied (a redelivery, or a replay of fills a restored
    /// snapshot holds — remembered, not applied), one whose quantity is not
    /// positive, or one that would take the position past what an i64
    /// holds (both logged, not applied). Returns
    /// whether it changed the positions.
    pub(crate) fn apply(
        &mut self,
        sequence: u64,
        stored: DateTime<Utc>,
        fill: &OrderFilled,
    ) -> bool {
        if fill.quantity <= 0 {
            // No fill order-service makes: signed, a negative quantity
            // would count a sell as a buy (and i64::MIN overflow). Passed
            // over, not remembered: a good fill of the order still counts.
            error!(
                sequence,
                order_id = %fill.order_id,
                symbol = %fill.symbol,
                quantity = fill.quantity,
                "a fill whose quantity is not positive; not applied"
            );
            self.pass(sequence);
            return false;
        }
        if sequence <= self.view.last_event_sequence {
            self.recent.insert(&fill.order_id, sequence, stored);
            return false;
        }
        self.view.last_event_sequence = sequence;
        if !self.recent.insert(&fill.order_id, sequence, stored) {
            return false;
        }
        if self.floor.is_some_and(|floor| stored <= floor) {
            // In the positions already (see `rebase`).
            return false;
        }
        self.last_fill_at = Some(stored).max(self.last_fill_at);
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
        let (positions, place) = book.snapshot();
        assert_eq!((place.last_event_sequence, place.replay_from), (4, 3));

        let mut restored = Book::restore(positions, place, Duration::from_secs(600), 1000);
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

    /// EVENTS created again: its sequences start over below the ones the
    /// book applied. The book keeps its positions and applies the new
    /// stream's fills, except repeats and fills it holds already.
    #[test]
    fn a_book_starts_over_on_a_stream_created_again() {
        let mut book = Book::new(Duration::from_secs(600), 1000);
        assert!(!book.rebase(at(-100)), "the first stream it learns of");
        book.apply(3, at(0), &fill("o1", Side::Buy, 100));
        book.apply(4, at(1), &fill("o2", Side::Buy, 5));
        assert!(!book.rebase(at(-100)), "the same stream");
        assert_eq!(book.view.last_event_sequence, 4);

        assert!(book.rebase(at(10)));
        assert_eq!(book.view.last_event_sequence, 0);
        assert_eq!(book.stream(), Some(at(10)));
        // A restored backup's fill (stored before the last one applied).
        assert!(!book.apply(1, at(0), &fill("o0", Side::Buy, 7)));
        // A fill published again into the new stream, and a new one.
        assert!(!book.apply(2, at(11), &fill("o2", Side::Buy, 5)));
        assert!(book.apply(3, at(12), &fill("o3", Side::Sell, 1)));
        assert_eq!(book.view.positions["AAPL"], 104);
        assert_eq!(book.view.last_event_sequence, 3);

        // Its snapshot is of the new stream and replays none of the old.
        let (positions, place) = book.snapshot();
        assert_eq!(place.stream, Some(at(10)));
        assert_eq!((place.last_event_sequence, place.replay_from), (3, 1));
        let restored = Book::restore(positions, place, Duration::from_secs(600), 1000);
        assert_eq!(restored.view.positions["AAPL"], 104);
    }
}
