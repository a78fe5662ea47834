//! The monitor's in-memory copy of the definitions bucket, fed by
//! [`aegis_sdk::kv::mirror`]: what each update changes in the copy, the
//! live events that tell viewers, and how far the copy covers the bucket.
//!
//! The mirror is current again as soon as JetStream answers after a NATS
//! node died, reading the bucket's replicas while no watch can open; a
//! replica may be a few writes behind the copy, so a load never takes a
//! key back to an older revision, nor drops one written after what the
//! load covers.

use std::collections::BTreeMap;

use aegis_contracts::ServiceDefinition;
use aegis_sdk::kv::{Mirrored, MirroredEntry, Removal};

use super::Stored;
use crate::live::{DefinitionOperation, LiveEvent};

/// One definition in the copy.
#[derive(Debug, Clone)]
pub(super) struct Cached {
    pub(super) definition: ServiceDefinition,
    pub(super) revision: u64,
}

/// The copy: every readable definition by service name.
pub(super) type Definitions = BTreeMap<String, Cached>;

/// How far the copy covers the bucket after an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Covers {
    /// Nothing changed in what it covers (the watch broke).
    Same,
    /// Every revision up to this one, or further as before.
    AtLeast(u64),
    /// Up to this one of a bucket created again, whose revisions started
    /// over (below the ones covered before).
    Restarted(u64),
}

/// What an update did: the events to tell, in order, and the coverage.
#[derive(Debug)]
pub(super) struct Applied {
    pub(super) events: Vec<LiveEvent>,
    pub(super) covers: Covers,
}

/// Applies `update` to `copy`.
pub(super) fn apply(copy: &mut Definitions, update: Mirrored) -> Applied {
    match update {
        Mirrored::Loaded {
            entries,
            fresh,
            through,
            ..
        } => load(copy, entries, fresh, through),
        Mirrored::Put(entry) => {
            let revision = entry.revision;
            Applied {
                events: vec![put(copy, entry)],
                covers: Covers::AtLeast(revision),
            }
        }
        Mirrored::Removed { key, revision, how } => {
            copy.remove(&key);
            let operation = match how {
                Removal::Purged => DefinitionOperation::Purge,
                _ => DefinitionOperation::Delete,
            };
            Applied {
                events: vec![event(key, revision, operation, None)],
                covers: Covers::AtLeast(revision),
            }
        }
        _ => Applied {
            events: Vec::new(),
            covers: Covers::Same,
        },
    }
}

/// A load: the latest value of every key up to `through`. Keys that
/// changed are told as puts; keys it lacks that the copy had at or below
/// `through` were removed meanwhile (at a revision the load does not say;
/// told at `through`). A load `fresh` from a bucket created again
/// replaces the copy whatever the revisions.
fn load(copy: &mut Definitions, entries: Vec<MirroredEntry>, fresh: bool, through: u64) -> Applied {
    let mut before = std::mem::take(copy);
    let mut events = Vec::new();
    for entry in entries {
        match before.remove(&entry.key) {
            // Unchanged, or a replica behind the copy: keep the copy's.
            Some(cached) if !fresh && cached.revision >= entry.revision => {
                copy.insert(entry.key, cached);
            }
            _ => events.push(put(copy, entry)),
        }
    }
    for (key, cached) in before {
        if !fresh && cached.revision > through {
            // Written after what a replica's snapshot covers.
            copy.insert(key, cached);
        } else {
            events.push(event(key, through, DefinitionOperation::Delete, None));
        }
    }
    Applied {
        events,
        covers: if fresh {
            Covers::Restarted(through)
        } else {
            Covers::AtLeast(through)
        },
    }
}

/// Puts `entry` in the copy (or takes its key out, unreadable) and tells it.
fn put(copy: &mut Definitions, entry: MirroredEntry) -> LiveEvent {
    let MirroredEntry {
        key,
        value,
        revision,
        ..
    } = entry;
    let definition = match serde_json::from_slice::<Stored>(&value) {
        Ok(stored) => {
            copy.insert(
                key.clone(),
                Cached {
                    definition: stored.definition.clone(),
                    revision,
                },
            );
            Some(stored.definition)
        }
        Err(e) => {
            tracing::warn!(key, revision, error = %aegis_sdk::startup::Causes(&e), "ignoring an unreadable service definition");
            copy.remove(&key);
            None
        }
    };
    event(key, revision, DefinitionOperation::Put, definition)
}

fn event(
    service_name: String,
    revision: u64,
    operation: DefinitionOperation,
    definition: Option<ServiceDefinition>,
) -> LiveEvent {
    LiveEvent::Definition {
        service_name,
        revision,
        operation,
        definition,
    }
}

#[cfg(test)]
mod tests {
    use aegis_contracts::models::NewServiceDefinition;
    use chrono::Utc;

    use super::*;

    fn stored(name: &str, version: &str) -> Vec<u8> {
        let new = NewServiceDefinition {
            service_name: name.into(),
            owner: "trading-team".into(),
            description: "a service".into(),
            version: version.into(),
        };
        serde_json::to_vec(&Stored {
            definition: new.into_definition(Utc::now()),
            changed_by: Some("admin".into()),
        })
        .unwrap()
    }

    fn entry(name: &str, version: &str, revision: u64) -> MirroredEntry {
        MirroredEntry::new(name, stored(name, version), revision)
    }

    fn loaded(entries: Vec<MirroredEntry>, fresh: bool, through: u64) -> Mirrored {
        Mirrored::Loaded {
            entries,
            fresh,
            snapshot: false,
            through,
        }
    }

    /// (service, revision, operation) of each event.
    fn told(applied: &Applied) -> Vec<(String, u64, DefinitionOperation)> {
        applied
            .events
            .iter()
            .map(|e| match e {
                LiveEvent::Definition {
                    service_name,
                    revision,
                    operation,
                    ..
                } => (service_name.clone(), *revision, *operation),
                other => panic!("not a definition event: {other:?}"),
            })
            .collect()
    }

    fn versions(copy: &Definitions) -> Vec<(&str, &str, u64)> {
        copy.iter()
            .map(|(k, c)| (k.as_str(), c.definition.version.as_str(), c.revision))
            .collect()
    }

    #[test]
    fn changes_are_told_and_cover_their_revision() {
        let mut copy = Definitions::new();
        let first = apply(&mut copy, loaded(vec![entry("a", "1.0.0", 2)], false, 3));
        assert_eq!(told(&first), [("a".into(), 2, DefinitionOperation::Put)]);
        assert_eq!(first.covers, Covers::AtLeast(3));
        let put = apply(&mut copy, Mirrored::Put(entry("b", "1.0.0", 4)));
        assert_eq!(put.covers, Covers::AtLeast(4));
        let purged = apply(
            &mut copy,
            Mirrored::Removed {
                key: "a".into(),
                revision: 5,
                how: Removal::Purged,
            },
        );
        assert_eq!(told(&purged), [("a".into(), 5, DefinitionOperation::Purge)]);
        assert_eq!(versions(&copy), [("b", "1.0.0", 4)]);
        let broken = apply(&mut copy, Mirrored::Broken);
        assert!(broken.events.is_empty());
        assert_eq!(broken.covers, Covers::Same);
    }

    /// A load after a break tells only what changed meanwhile: nothing
    /// for an unchanged key, a put for a changed one, a delete for a key
    /// it lacks.
    #[test]
    fn a_load_after_a_break_tells_what_changed_meanwhile() {
        let mut copy = Definitions::new();
        apply(
            &mut copy,
            loaded(
                vec![
                    entry("a", "1.0.0", 1),
                    entry("b", "1.0.0", 2),
                    entry("c", "1.0.0", 3),
                ],
                false,
                3,
            ),
        );
        let again = apply(
            &mut copy,
            loaded(
                vec![entry("a", "1.0.0", 1), entry("b", "2.0.0", 5)],
                false,
                6,
            ),
        );
        assert_eq!(
            told(&again),
            [
                ("b".into(), 5, DefinitionOperation::Put),
                ("c".into(), 6, DefinitionOperation::Delete),
            ]
        );
        assert_eq!(versions(&copy), [("a", "1.0.0", 1), ("b", "2.0.0", 5)]);
    }

    /// A snapshot from a replica a few writes behind the copy takes no key
    /// back to an older revision and drops no key written after what it
    /// covers.
    #[test]
    fn a_load_behind_the_copy_loses_nothing() {
        let mut copy = Definitions::new();
        apply(&mut copy, loaded(vec![entry("a", "1.0.0", 1)], false, 1));
        apply(&mut copy, Mirrored::Put(entry("a", "2.0.0", 7)));
        apply(&mut copy, Mirrored::Put(entry("b", "1.0.0", 8)));
        let behind = apply(&mut copy, loaded(vec![entry("a", "1.0.0", 1)], false, 6));
        assert!(behind.events.is_empty(), "{:?}", told(&behind));
        assert_eq!(versions(&copy), [("a", "2.0.0", 7), ("b", "1.0.0", 8)]);
    }

    /// A bucket created again starts its revisions over: its load replaces
    /// the copy, and the coverage starts over with it.
    #[test]
    fn a_fresh_load_replaces_the_copy() {
        let mut copy = Definitions::new();
        apply(
            &mut copy,
            loaded(
                vec![entry("a", "1.0.0", 40), entry("b", "1.0.0", 41)],
                false,
                41,
            ),
        );
        let fresh = apply(&mut copy, loaded(vec![entry("a", "3.0.0", 1)], true, 1));
        assert_eq!(
            told(&fresh),
            [
                ("a".into(), 1, DefinitionOperation::Put),
                ("b".into(), 1, DefinitionOperation::Delete),
            ]
        );
        assert_eq!(fresh.covers, Covers::Restarted(1));
        assert_eq!(versions(&copy), [("a", "3.0.0", 1)]);
    }

    #[test]
    fn an_unreadable_definition_is_told_and_left_out() {
        let mut copy = Definitions::new();
        apply(&mut copy, loaded(vec![entry("a", "1.0.0", 1)], false, 1));
        let bad = apply(
            &mut copy,
            Mirrored::Put(MirroredEntry::new("a", "not json", 2)),
        );
        assert_eq!(told(&bad), [("a".into(), 2, DefinitionOperation::Put)]);
        assert!(copy.is_empty());
    }
}
