//! The queue between [`Telemetry::event`](super::Telemetry::event), which
//! never waits, and the one task that sends an instance's records, in
//! order: bounded, dropping its oldest record when full, and numbering
//! records so a flush knows when everything queued before it is settled.
//! Pure logic, unit-tested without NATS.

use std::collections::VecDeque;

use bytes::Bytes;

/// A record waiting to be sent: its JSON and its number (in queueing
/// order, from 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Pending {
    pub(super) seq: u64,
    pub(super) body: Bytes,
}

/// The records of one instance not yet settled (stored, published or
/// given up).
#[derive(Debug)]
pub(super) struct Outbox {
    waiting: VecDeque<Pending>,
    capacity: usize,
    /// The number the next record gets.
    next_seq: u64,
    /// The record being sent, taken by [`take`](Self::take) and not yet
    /// [`settle`](Self::settle)d.
    in_flight: Option<u64>,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` waiting records (at least
    /// one).
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            waiting: VecDeque::new(),
            capacity: capacity.max(1),
            next_seq: 0,
            in_flight: None,
        }
    }

    /// Queues `body`; returns the oldest waiting record when the outbox was
    /// full, dropped to make room (the caller counts it).
    pub(super) fn push(&mut self, body: Bytes) -> Option<Pending> {
        let evicted = if self.waiting.len() >= self.capacity {
            self.waiting.pop_front()
        } else {
            None
        };
        self.waiting.push_back(Pending {
            seq: self.next_seq,
            body,
        });
        self.next_seq += 1;
        evicted
    }

    /// The next record to send, oldest first; it is in flight until
    /// [`settle`](Self::settle)d.
    pub(super) fn take(&mut self) -> Option<Pending> {
        let next = self.waiting.pop_front()?;
        self.in_flight = Some(next.seq);
        Some(next)
    }

    /// The record in flight is done with, whatever became of it.
    pub(super) fn settle(&mut self) {
        self.in_flight = None;
    }

    /// The number of the oldest record not settled yet (the next number
    /// when none is): every record numbered below it is settled.
    pub(super) fn unsettled_from(&self) -> u64 {
        self.in_flight
            .or_else(|| self.waiting.front().map(|p| p.seq))
            .unwrap_or(self.next_seq)
    }

    /// The number the next record gets: a flush asked now waits until
    /// [`unsettled_from`](Self::unsettled_from) reaches it.
    pub(super) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Drops every waiting record; returns how many.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &'static str) -> Bytes {
        Bytes::from_static(text.as_bytes())
    }

    #[test]
    fn records_leave_in_the_order_they_came() {
        let mut outbox = Outbox::new(8);
        for text in ["a", "b", "c"] {
            assert_eq!(outbox.push(body(text)), None);
        }
        let mut sent = Vec::new();
        while let Some(p) = outbox.take() {
            sent.push((p.seq, p.body));
            outbox.settle();
        }
        assert_eq!(sent, [(0, body("a")), (1, body("b")), (2, body("c"))]);
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_waiting_record() {
        let mut outbox = Outbox::new(2);
        outbox.push(body("a"));
        outbox.push(body("b"));
        let evicted = outbox.push(body("c")).expect("the oldest dropped");
        assert_eq!(evicted.body, body("a"));
        assert_eq!(outbox.take().map(|p| p.body), Some(body("b")));
    }

    #[test]
    fn the_record_in_flight_is_never_dropped() {
        let mut outbox = Outbox::new(1);
        outbox.push(body("a"));
        let a = outbox.take().unwrap();
        outbox.push(body("b"));
        assert_eq!(outbox.push(body("c")).map(|p| p.body), Some(body("b")));
        // "a" is still being sent: nothing from it on is settled.
        assert_eq!(outbox.unsettled_from(), a.seq);
    }

    #[test]
    fn a_flush_knows_when_what_came_before_it_is_settled() {
        let mut outbox = Outbox::new(8);
        outbox.push(body("a"));
        outbox.push(body("b"));
        let flush_until = outbox.next_seq();
        outbox.push(body("after the flush"));
        assert!(outbox.unsettled_from() < flush_until);
        outbox.take();
        outbox.settle();
        assert!(outbox.unsettled_from() < flush_until, "b still waits");
        outbox.take();
        assert!(outbox.unsettled_from() < flush_until, "b is in flight");
        outbox.settle();
        assert!(outbox.unsettled_from() >= flush_until);
    }

    #[test]
    fn an_empty_outbox_has_everything_settled() {
        let mut outbox = Outbox::new(4);
        assert_eq!(outbox.unsettled_from(), outbox.next_seq());
        outbox.push(body("a"));
        outbox.push(body("b"));
        assert_eq!(outbox.clear(), 2);
        assert_eq!(outbox.unsettled_from(), 2);
    }
}
