//! The term an order-service leader writes under: the `service_elections`
//! bucket it won its fencing epoch in, and the epoch. Pure logic, tested
//! without NATS.
//!
//! An epoch is a revision of the elections bucket, so it says which of two
//! leaders is newer only within one bucket: deleted and created again (an
//! operator's `nats kv del service_elections`, a cluster rebuilt from
//! nothing) the bucket numbers its revisions from 1 anew, while the
//! `orders` bucket keeps its fence and orders stamped with the old, higher
//! epochs. So the fence record and every order record carry the term, the
//! bucket told by its stream's creation time, and every comparison of
//! epochs in `order/` is [`standing`]:
//!
//! - in one elections bucket, the higher epoch is the newer term;
//! - a term of another bucket than the leader's is older than the leader's:
//!   the leader's bucket is the current one, checked when it took the
//!   store's fence (`fence.rs`). Were it deleted since, the fence has moved
//!   on to a leader of the new bucket, and every write of this one is
//!   refused whatever it concluded;
//! - a record written before terms were recorded (no bucket) is older than
//!   the leader's too, whatever its epoch: that epoch may be of a bucket
//!   deleted since, far above the current one's, and judged by it an order
//!   left pending or unannounced then would never be finished. Were it
//!   written by a newer leader of the leader's own bucket (a version before
//!   terms, during an upgrade), that leader took the fence before writing
//!   it, and every write of this one is refused whatever it concluded — the
//!   fence judges such a record of its own the same way (`fence.rs`).
//!
//! A leader's term always names its bucket (`Fence::bind`); two terms that
//! both name none (tests) compare by epoch.
//!
//! Creation times are never compared as older or newer: they are the wall
//! clock of whichever server made each bucket, which may have stepped back
//! (the same reason the orders bucket's own re-creation is told by which
//! bucket is current, `store.rs`). Which elections bucket is current is
//! asked instead, when the fence is taken.

/// A leader's term: the elections bucket it won `epoch` in, and `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Term {
    /// When that bucket's stream (`KV_service_elections`) was created, in
    /// nanoseconds since the Unix epoch; `None` in a record written before
    /// terms were recorded.
    pub(crate) elections: Option<i128>,
    /// The fencing epoch: the revision of the winning write to the
    /// election key.
    pub(crate) epoch: u64,
}

impl Term {
    /// Whether `self` and `other` are known to be terms of one elections
    /// bucket, so that their epochs compare.
    pub(crate) fn same_bucket(self, other: Term) -> bool {
        self.elections.is_some() && self.elections == other.elections
    }
}

/// How the term a record was written under stands against a leader's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// An older leader's: the leader may take the record over.
    Older,
    /// The leader's own.
    Own,
    /// A newer leader's: the leader steps aside.
    Newer,
}

/// How `record`, the term a record was written under, stands against
/// `leader`, the term of the leader looking at it, whose elections bucket
/// is the current one (checked when it took the fence). See the module
/// note.
pub(crate) fn standing(record: Term, leader: Term) -> Standing {
    match (record.elections, leader.elections) {
        (Some(written), Some(leads)) if written != leads => Standing::Older,
        (None, Some(_)) => Standing::Older,
        _ => match record.epoch.cmp(&leader.epoch) {
            std::cmp::Ordering::Less => Standing::Older,
            std::cmp::Ordering::Equal => Standing::Own,
            std::cmp::Ordering::Greater => Standing::Newer,
        },
    }
}

/// How a record writes a bucket's creation time (`elections_created`): an
/// RFC 3339 UTC string to the nanosecond, `"2026-01-01T00:00:00.123456789Z"`.
/// Exact, as a term's bucket is told by equality; read by an operator at a
/// glance; and safe in a JavaScript client, where nanoseconds since 1970 as
/// a JSON number (about 1.8e18, above 2^53) would be rounded. A number of
/// nanoseconds still reads.
pub(crate) mod bucket_time {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    const NANOS: i128 = 1_000_000_000;

    /// Writes `Some` as the string, `None` as nothing (the field is skipped).
    pub(crate) fn serialize<S: Serializer>(
        created: &Option<i128>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let Some(nanos) = created else {
            return serializer.serialize_none();
        };
        let at = i64::try_from(nanos.div_euclid(NANOS))
            .ok()
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, nanos.rem_euclid(NANOS) as u32))
            .ok_or_else(|| serde::ser::Error::custom(format!("{nanos} ns is beyond a date")))?;
        serializer.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Nanos, true))
    }

    /// Reads the string, or a number of nanoseconds.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<i128>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Text(String),
            Nanos(i64),
        }
        Ok(match Option::<Written>::deserialize(deserializer)? {
            None => None,
            Some(Written::Nanos(nanos)) => Some(i128::from(nanos)),
            Some(Written::Text(text)) => {
                let at = DateTime::parse_from_rfc3339(&text).map_err(D::Error::custom)?;
                Some(i128::from(at.timestamp()) * NANOS + i128::from(at.timestamp_subsec_nanos()))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hour, in the nanoseconds buckets are told apart by.
    const HOUR: i128 = 3_600_000_000_000;

    fn term(elections: i128, epoch: u64) -> Term {
        Term {
            elections: Some(elections),
            epoch,
        }
    }

    /// In one elections bucket the epoch decides, as it always did.
    #[test]
    fn in_one_elections_bucket_the_higher_epoch_is_newer() {
        let leader = term(9 * HOUR, 40);
        assert_eq!(standing(term(9 * HOUR, 39), leader), Standing::Older);
        assert_eq!(standing(term(9 * HOUR, 40), leader), Standing::Own);
        assert_eq!(standing(term(9 * HOUR, 41), leader), Standing::Newer);
    }

    /// The defect: the elections bucket was created again, its epochs
    /// started over, and a record of the old bucket's leader at a far
    /// higher epoch was taken for a newer leader's — the new leader was
    /// refused every write, and an order left pending never decided. A
    /// record of another bucket is older than the current bucket's
    /// leader, whatever the epochs and whichever way the clocks that
    /// stamped the buckets went.
    #[test]
    fn a_term_of_another_elections_bucket_is_older_whatever_the_epochs() {
        for leads in [12 * HOUR, 5 * HOUR] {
            let leader = term(leads, 3);
            for epoch in [1, 3, 250, u64::MAX] {
                assert_eq!(
                    standing(term(9 * HOUR, epoch), leader),
                    Standing::Older,
                    "written at epoch {epoch} in another bucket"
                );
            }
        }
    }

    /// The defect left for records written before terms: an order left
    /// pending (or decided, unannounced) under a bucket deleted since, at
    /// an epoch far above the new bucket's, was taken for a newer
    /// leader's and never finished. A record that names no bucket is
    /// older than a leader's term whatever its epoch; only two terms that
    /// both name none compare by epoch.
    #[test]
    fn a_record_without_a_bucket_is_older_whatever_its_epoch() {
        let leader = term(9 * HOUR, 40);
        let old = |epoch| Term {
            elections: None,
            epoch,
        };
        for epoch in [1, 39, 40, 41, u64::MAX] {
            assert_eq!(standing(old(epoch), leader), Standing::Older, "{epoch}");
        }
        assert_eq!(standing(old(39), old(40)), Standing::Older);
        assert_eq!(standing(old(40), old(40)), Standing::Own);
        assert_eq!(standing(old(41), old(40)), Standing::Newer);
        assert!(!old(40).same_bucket(old(40)));
        assert!(!leader.same_bucket(old(40)));
        assert!(leader.same_bucket(term(9 * HOUR, 1)));
        assert!(!leader.same_bucket(term(5 * HOUR, 40)));
    }
}
