//! Where an instance's records go, and what the sender does after each
//! answer. Pure logic on `Instant`s, unit-tested without NATS.
//!
//! A record published to JetStream under its message id is stored by the
//! stream capturing its subject (`AEGIS_LOG`), once however often it is
//! sent, and is seen by live subscribers too. A publish that "nobody
//! took" (no responders) says one of two things: the stream has no leader
//! right now (for the 4-9 s after the node leading it died), or no stream
//! captures the subject at all (an instance nobody monitors). The first is
//! waited out, sending the same copy again; the second must not hold the
//! instance's records back. [`Route`] tells them apart: a subject whose
//! stream once acknowledged a record, or that a lookup found captured, has
//! a stream; a lookup that finds none sends the records on core NATS for a
//! while ([`NO_STREAM_RECHECK`]), then tries JetStream again. A lookup
//! nobody answers (JetStream's meta group electing a leader) is asked
//! again, for up to [`LOOKUP_PATIENCE`].

use std::time::Duration;

use tokio::time::Instant;

/// How long a record is sent again while its stream takes none: longer
/// than a stream's election after its node died (4-9 s).
pub(super) const RECORD_PATIENCE: Duration = Duration::from_secs(20);

/// How long records go on core NATS once no stream captures their subject,
/// before JetStream is tried again (a monitor may have created the stream
/// meanwhile).
pub(super) const NO_STREAM_RECHECK: Duration = Duration::from_secs(10);
/// How long lookups may go unanswered (JetStream's meta group electing a
/// leader after a NATS node died: up to some 9 s) before the subject is
/// taken as captured by no stream.
pub(super) const LOOKUP_PATIENCE: Duration = Duration::from_secs(10);

/// The wait for an acknowledgement before the same copy is sent again,
/// doubled per copy up to [`ACK_WAIT_MAX`].
const ACK_WAIT_FIRST: Duration = Duration::from_millis(250);
const ACK_WAIT_MAX: Duration = Duration::from_secs(1);

/// The pause before a copy nobody took is sent again, doubled up to
/// [`PAUSE_MAX`]: the record is stored at most this long after the stream
/// has a leader again.
const PAUSE_FIRST: Duration = Duration::from_millis(10);
const PAUSE_MAX: Duration = Duration::from_millis(250);

/// What one copy of a record came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The stream acknowledged it (maybe as a duplicate of a stored copy).
    Stored,
    /// No responders: nothing listens on the subject — no stream with a
    /// leader, no live subscriber.
    NobodyTook,
    /// No acknowledgement in time: the copy reached a live subscriber but
    /// no stream, or a stream too busy to answer, or the connection is
    /// down. It may have been stored.
    NoAck,
    /// The stream answered "not now": it is between leaders, or a copy is
    /// still being stored.
    NotNow,
    /// Refused for good (too large, say): another copy cannot be stored.
    Refused,
}

/// What the sender does next with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Next {
    /// Done: the stream stored it.
    Stored,
    /// Done: no stream captures its subject; it went to whoever listened.
    Published,
    /// Ask JetStream whether a stream captures the subject, then tell
    /// [`Route::looked_up`].
    LookUp,
    /// Send the same copy again after this pause (one not acknowledged:
    /// once its wait for the acknowledgement is over).
    Again(Duration),
    /// Give the record up (the caller counts it).
    GiveUp,
}

/// What is known of the subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Known {
    /// Nothing yet, or no longer: at start, after a record was given up,
    /// after a spell on core NATS.
    Unknown,
    /// A stream captures it.
    Captured,
    /// No stream captures it: records go on core NATS until `until`.
    NotCaptured { until: Instant },
}

/// Where the records of one subject go; see the module docs.
#[derive(Debug)]
pub(super) struct Route {
    known: Known,
}

impl Route {
    /// A route that knows nothing of its subject yet.
    pub(super) fn new() -> Self {
        Self {
            known: Known::Unknown,
        }
    }

    /// Whether a record sent `now` goes to JetStream (`true`) or on core
    /// NATS (`false`).
    pub(super) fn goes_to_stream(&mut self, now: Instant) -> bool {
        match self.known {
            Known::NotCaptured { until } if now < until => false,
            Known::NotCaptured { .. } => {
                self.known = Known::Unknown;
                true
            }
            Known::Unknown | Known::Captured => true,
        }
    }

    /// What follows `answer` to a copy of the record `delivery` sends.
    pub(super) fn after(&mut self, delivery: &mut Delivery, answer: Answer, now: Instant) -> Next {
        match answer {
            Answer::Stored => {
                self.known = Known::Captured;
                return Next::Stored;
            }
            Answer::Refused => return Next::GiveUp,
            // Only a stream answers that.
            Answer::NotNow => self.known = Known::Captured,
            Answer::NobodyTook | Answer::NoAck
                if self.known == Known::Unknown && !delivery.looked_up =>
            {
                return Next::LookUp;
            }
            Answer::NobodyTook | Answer::NoAck => {}
        }
        if now >= delivery.give_up {
            // The stream may be gone for good: the next record looks again.
            self.known = Known::Unknown;
            return Next::GiveUp;
        }
        delivery.again(answer)
    }

    /// What follows a lookup of the subject: `Some(captured)` as JetStream
    /// answered, `None` when it did not (its meta group electing a leader,
    /// or a lookup these credentials may not make).
    pub(super) fn looked_up(
        &mut self,
        delivery: &mut Delivery,
        captured: Option<bool>,
        last: Answer,
        now: Instant,
    ) -> Next {
        delivery.looked_up = true;
        match captured {
            Some(false) => self.no_stream(now),
            Some(true) => {
                self.known = Known::Captured;
                self.after(delivery, last, now)
            }
            // Not "no stream": asked again on the next copy nobody takes,
            // until lookups have gone unanswered for LOOKUP_PATIENCE.
            None => {
                let since = *delivery.unanswered_since.get_or_insert(now);
                if now >= since + LOOKUP_PATIENCE {
                    return self.no_stream(now);
                }
                delivery.looked_up = false;
                if now >= delivery.give_up {
                    return Next::GiveUp;
                }
                delivery.again(last)
            }
        }
    }

    /// No stream captures the subject: this record went to whoever
    /// listened (a copy nobody acknowledged reached them; one nobody took
    /// had nobody to reach), and the next ones go on core NATS for a while.
    fn no_stream(&mut self, now: Instant) -> Next {
        self.known = Known::NotCaptured {
            until: now + NO_STREAM_RECHECK,
        };
        Next::Published
    }
}

/// The attempts to store one record.
#[derive(Debug)]
pub(super) struct Delivery {
    started: Instant,
    give_up: Instant,
    /// How long the next copy waits for its acknowledgement.
    wait: Duration,
    /// The pause before the next copy, after "nobody took it" or "not now".
    pause: Duration,
    looked_up: bool,
    /// Since when lookups of the subject have gone unanswered.
    unanswered_since: Option<Instant>,
    /// Copies sent so far.
    pub(super) copies: u32,
}

impl Delivery {
    /// A record first sent `now`, given up after [`RECORD_PATIENCE`].
    pub(super) fn new(now: Instant) -> Self {
        Self {
            started: now,
            give_up: now + RECORD_PATIENCE,
            wait: ACK_WAIT_FIRST,
            pause: PAUSE_FIRST,
            looked_up: false,
            unanswered_since: None,
            copies: 0,
        }
    }

    /// Gives the record up at `by` at the latest (the sender is stopping).
    pub(super) fn give_up_by(&mut self, by: Instant) {
        self.give_up = self.give_up.min(by);
    }

    /// How long the copy about to be sent may wait for its acknowledgement
    /// (never past the give-up time, but never nothing).
    pub(super) fn ack_wait(&mut self, now: Instant) -> Duration {
        self.copies += 1;
        let left = self.give_up.saturating_duration_since(now);
        self.wait.min(left).max(Duration::from_millis(1))
    }

    /// When the record was first sent.
    pub(super) fn started(&self) -> Instant {
        self.started
    }

    fn again(&mut self, answer: Answer) -> Next {
        if answer == Answer::NoAck {
            // That copy may still land; the next waits longer for its ack.
            self.wait = (self.wait * 2).min(ACK_WAIT_MAX);
            return Next::Again(Duration::ZERO);
        }
        let pause = self.pause;
        self.pause = (self.pause * 2).min(PAUSE_MAX);
        Next::Again(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn without_a_stream_records_go_on_core_nats_for_a_while() {
        let t0 = Instant::now();
        let mut route = Route::new();
        assert!(route.goes_to_stream(t0));
        let mut first = Delivery::new(t0);
        let next = route.after(&mut first, Answer::NobodyTook, t0);
        assert_eq!(next, Next::LookUp);
        let next = route.looked_up(&mut first, Some(false), Answer::NobodyTook, t0 + MS);
        assert_eq!(next, Next::Published, "no stall");
        assert!(!route.goes_to_stream(t0 + NO_STREAM_RECHECK - MS * 2));
        assert!(
            route.goes_to_stream(t0 + NO_STREAM_RECHECK + MS),
            "then it looks again"
        );
    }

    #[test]
    fn a_stream_without_a_leader_is_waited_for_until_the_records_patience() {
        let t0 = Instant::now();
        let mut route = Route::new();
        let mut first = Delivery::new(t0);
        assert_eq!(route.after(&mut first, Answer::Stored, t0), Next::Stored);

        // The stream's node died: nobody takes the next record for seconds.
        let t1 = t0 + Duration::from_secs(60);
        let mut record = Delivery::new(t1);
        let mut pauses = Vec::new();
        let mut now = t1;
        loop {
            match route.after(&mut record, Answer::NobodyTook, now) {
                Next::Again(pause) => {
                    pauses.push(pause);
                    now += pause;
                }
                Next::GiveUp => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(pauses[..3], [MS * 10, MS * 20, MS * 40]);
        assert!(pauses.iter().all(|p| *p <= PAUSE_MAX));
        assert!(now >= t1 + RECORD_PATIENCE);
        // Given up: the next record asks whether a stream is still there.
        let mut next = Delivery::new(now);
        assert_eq!(
            route.after(&mut next, Answer::NobodyTook, now),
            Next::LookUp
        );
    }

    #[test]
    fn a_stream_found_by_the_lookup_is_waited_for() {
        let t0 = Instant::now();
        let mut route = Route::new();
        let mut record = Delivery::new(t0);
        assert_eq!(
            route.after(&mut record, Answer::NobodyTook, t0),
            Next::LookUp
        );
        let next = route.looked_up(&mut record, Some(true), Answer::NobodyTook, t0);
        assert_eq!(next, Next::Again(MS * 10));
        let later = t0 + Duration::from_secs(8);
        assert!(matches!(
            route.after(&mut record, Answer::NobodyTook, later),
            Next::Again(_)
        ));
        assert_eq!(
            route.after(&mut record, Answer::Stored, later),
            Next::Stored
        );
    }

    #[test]
    fn an_unanswered_lookup_is_asked_again_until_its_patience_then_goes_on() {
        // JetStream's meta group electing a leader answers no lookup for
        // seconds: that is not "no stream", and the record is not sent on
        // core NATS only while the stream may be back any moment.
        let t0 = Instant::now();
        let mut route = Route::new();
        let mut record = Delivery::new(t0);
        assert_eq!(route.after(&mut record, Answer::NoAck, t0), Next::LookUp);
        let asked = t0 + Duration::from_millis(500);
        let next = route.looked_up(&mut record, None, Answer::NoAck, asked);
        assert_eq!(next, Next::Again(Duration::ZERO));
        let later = t0 + Duration::from_secs(3);
        assert_eq!(
            route.after(&mut record, Answer::NobodyTook, later),
            Next::LookUp
        );
        assert!(matches!(
            route.looked_up(&mut record, None, Answer::NobodyTook, later),
            Next::Again(_)
        ));
        assert!(route.goes_to_stream(later));
        let past = asked + LOOKUP_PATIENCE;
        assert_eq!(
            route.after(&mut record, Answer::NobodyTook, past),
            Next::LookUp
        );
        assert_eq!(
            route.looked_up(&mut record, None, Answer::NobodyTook, past),
            Next::Published
        );
        assert!(!route.goes_to_stream(past));
    }

    #[test]
    fn a_copy_not_acknowledged_is_sent_again_at_once_with_a_longer_wait() {
        let t0 = Instant::now();
        let mut route = Route::new();
        route.after(&mut Delivery::new(t0), Answer::Stored, t0);
        let mut record = Delivery::new(t0);
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(record.ack_wait(t0));
            assert_eq!(
                route.after(&mut record, Answer::NoAck, t0),
                Next::Again(Duration::ZERO)
            );
        }
        assert_eq!(waits, [MS * 250, MS * 500, MS * 1000, MS * 1000]);
        assert_eq!(record.copies, 4);
    }

    #[test]
    fn a_refusal_gives_the_record_up_and_keeps_the_route() {
        let t0 = Instant::now();
        let mut route = Route::new();
        route.after(&mut Delivery::new(t0), Answer::Stored, t0);
        let mut record = Delivery::new(t0);
        assert_eq!(route.after(&mut record, Answer::Refused, t0), Next::GiveUp);
        let mut next = Delivery::new(t0);
        assert!(matches!(
            route.after(&mut next, Answer::NobodyTook, t0),
            Next::Again(_)
        ));
    }

    #[test]
    fn a_stopping_sender_gives_a_record_up_sooner() {
        let t0 = Instant::now();
        let mut route = Route::new();
        route.after(&mut Delivery::new(t0), Answer::Stored, t0);
        let mut record = Delivery::new(t0);
        record.give_up_by(t0 + Duration::from_secs(2));
        let late = t0 + Duration::from_secs(2);
        assert_eq!(record.ack_wait(late), MS);
        assert_eq!(
            route.after(&mut record, Answer::NobodyTook, late),
            Next::GiveUp
        );
    }
}
