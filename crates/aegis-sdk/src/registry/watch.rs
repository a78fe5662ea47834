//! The registry's one KV watch per connection: [`crate::kv_watch`] on the
//! keys of the services the view covers (`service-instances.{service}.*`
//! each, or `service-instances.>` for a whole-registry reader; see
//! `cache.rs`), decoding records into the view. A record that does not decode, or whose names disagree with
//! its key, counts as a removal (it cannot be routed to).

use aegis_contracts::{ServiceInstance, subjects};
use tracing::{debug, warn};

use super::{RemovalReason, cache::Shared};
use crate::kv_watch::{KvEntry, Removal, Sink, Throttled};

/// Records whose names disagree with their key, and unreadable ones: a
/// service may write any number under its own keys, and every process
/// that watches the registry would log each (one red-team run: ~700 junk
/// writes, ~950 lines in each watcher's log). One line per
/// [`Throttled::EVERY`] per process, with a count, each.
static DISAGREEING: Throttled = Throttled::new();
static UNREADABLE: Throttled = Throttled::new();

/// What the registry watch's consumer calls itself.
pub(super) const DESCRIPTION: &str = "aegis registry watch";

enum Decoded {
    Put(Box<ServiceInstance>),
    Remove(String, String),
    Ignore,
}

/// Turns one stored value into a change of the view.
fn decode(entry: &KvEntry) -> Decoded {
    let key = entry.key.as_str();
    let Some((service, id)) = subjects::parse_registry_key(key) else {
        debug!(key, "ignoring a key outside the registry layout");
        return Decoded::Ignore;
    };
    match serde_json::from_slice::<ServiceInstance>(&entry.value) {
        Ok(instance) if instance.service_name == service && instance.instance_id == id => {
            Decoded::Put(Box::new(instance))
        }
        Ok(_) => {
            match DISAGREEING.due() {
                Some(also) => warn!(
                    key,
                    also_ignored = also,
                    "ignoring a registry record whose names disagree with its key"
                ),
                None => debug!(
                    key,
                    "ignoring a registry record whose names disagree with its key"
                ),
            }
            Decoded::Remove(service, id)
        }
        Err(e) => {
            match UNREADABLE.due() {
                Some(also) => {
                    warn!(key, also_ignored = also, error = %crate::startup::Causes(&e), "ignoring an unreadable registry record")
                }
                None => {
                    debug!(key, error = %crate::startup::Causes(&e), "ignoring an unreadable registry record")
                }
            }
            Decoded::Remove(service, id)
        }
    }
}

impl Sink for Shared {
    fn on_session(&self, consumer: String) {
        self.begin_session(consumer);
    }

    fn on_load(&self, entries: Vec<KvEntry>, fresh: bool, _through: u64) {
        let snapshot = entries
            .iter()
            .filter_map(|entry| match decode(entry) {
                Decoded::Put(instance) => Some((
                    (instance.service_name.clone(), instance.instance_id.clone()),
                    (*instance, entry.revision),
                )),
                Decoded::Remove(..) | Decoded::Ignore => None,
            })
            .collect();
        self.replace_all(snapshot, fresh);
    }

    fn on_put(&self, entry: KvEntry) {
        match decode(&entry) {
            Decoded::Put(instance) => self.upsert(*instance, entry.revision),
            Decoded::Remove(service, id) => self.remove(&service, &id, RemovalReason::Deleted),
            Decoded::Ignore => {}
        }
    }

    fn on_remove(&self, key: &str, removal: Removal, _revision: u64) {
        if let Some((service, id)) = subjects::parse_registry_key(key) {
            // Instances deregister with a marker that says PURGE.
            let reason = match removal {
                Removal::Expired => RemovalReason::Expired,
                Removal::Purged => RemovalReason::Deregistered,
                Removal::Deleted => RemovalReason::Deleted,
            };
            self.remove(&service, &id, reason);
        }
    }

    fn on_applied(&self, consumer_sequence: u64) {
        self.applied(consumer_sequence);
    }

    fn on_synced(&self) {
        self.mark_synced();
    }

    fn on_snapshot(&self) {
        self.mark_snapshot();
    }

    fn on_broken(&self) {
        self.mark_broken();
    }

    fn refreshes(&self) -> bool {
        true
    }

    fn on_refresh(&self, entries: Vec<KvEntry>, floor: u64) {
        let records = entries
            .iter()
            .filter_map(|entry| match decode(entry) {
                Decoded::Put(instance) => Some((*instance, entry.revision)),
                Decoded::Remove(..) | Decoded::Ignore => None,
            })
            .collect();
        self.refresh(records, floor);
    }

    fn on_scope_synced(&self, generation: u64) {
        self.scope_loaded(generation);
    }
}
