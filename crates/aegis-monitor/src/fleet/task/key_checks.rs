//! Reads of election keys the fleet task asks for when a record and the
//! key as the watch last delivered it disagree ([`KeyChecks`]), and what
//! a record's claim calls for meanwhile ([`Judged`]).

use super::*;

/// How long a record claiming a lead the key does not give is held back
/// (shown as before) while the key is read: past it, the key as last seen
/// decides.
const HOLD_AT_MOST: Duration = Duration::from_secs(1);

/// How long after a failed read of an election key its failure is told
/// (and so the key read again, while a record is held for it).
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Reads of election keys from their stream's leader, asked when a record
/// and the key as the watch last delivered it disagree.
///
/// The watch can trail the key: after the node leading the elections'
/// stream died, it opens again only once JetStream answers, and until
/// then it reads the replicas every half second. A new leader's record,
/// ACTIVE at an epoch above the key's revision as last seen, can arrive
/// first (through the registry's watch), and showing it "deposed" by a
/// key the monitor knows to be old would be false for up to that half
/// second (`tests/node_loss.rs`: 227-405 ms). Such a record is held back,
/// its instance shown as it was, until one read of the key that started
/// after the record arrived has answered; a record whose claim the key
/// still does not back then (a forged epoch) is deposed. A key holder
/// whose record says it is not ACTIVE asks too (the watch may have
/// missed a takeover by another), without holding anything back.
pub(in crate::fleet) struct KeyChecks {
    bucket: async_nats::jetstream::kv::Store,
    answers: mpsc::UnboundedSender<LeaderEvent>,
    /// When each record last arrived.
    pub(super) arrived: HashMap<Key, Instant>,
    /// Groups whose key is being read.
    pub(super) asking: HashSet<Key>,
    /// Per group: when the last read that answered was asked.
    pub(super) checked: HashMap<Key, Instant>,
    /// Raised each time the bucket is created again (`LeaderEvent::Reset`).
    pub(super) generation: u64,
}

/// What a record's claim and the key as last seen call for.
pub(super) enum Judged {
    /// They agree, or the key decides: show what the rule derives.
    Shown,
    /// Read the key, and meanwhile show what the rule derives.
    Ask,
    /// Read the key, and show the instance as it was until it answers.
    Hold,
}

impl KeyChecks {
    pub(in crate::fleet) fn new(
        bucket: async_nats::jetstream::kv::Store,
        answers: mpsc::UnboundedSender<LeaderEvent>,
    ) -> Self {
        Self {
            bucket,
            answers,
            arrived: HashMap::new(),
            asking: HashSet::new(),
            checked: HashMap::new(),
            generation: 0,
        }
    }

    /// Judges `record` (of `key`, in `group`) against the key as last seen
    /// (its `revision` and `holder`).
    pub(super) fn judge(
        &self,
        key: &Key,
        group: &Key,
        record: &ServiceInstance,
        revision: u64,
        holder: Option<&Holder>,
    ) -> Judged {
        let Some(arrived) = self.arrived.get(key) else {
            return Judged::Shown;
        };
        // One read asked since the record arrived has answered: the key is
        // as current as the record, and decides.
        let answered_since = self.checked.get(group).is_some_and(|at| at >= arrived);
        let holds = holder.is_some_and(|h| h.instance_id == record.instance_id);
        if holds {
            if answered_since {
                return Judged::Shown;
            }
            // The winner's record says STANDBY for the moment between its
            // win and its record's write; a restarted process that had led
            // under its id says so until the watch shows who won since.
            return if record.status == InstanceStatus::Standby {
                Judged::Ask
            } else {
                Judged::Shown
            };
        }
        let newer_claim =
            record.status == InstanceStatus::Active && record.epoch.is_some_and(|e| e > revision);
        if newer_claim && !answered_since && arrived.elapsed() < HOLD_AT_MOST {
            Judged::Hold
        } else {
            Judged::Shown
        }
    }

    /// Reads `group`'s key unless a read is on its way; the answer comes
    /// back as [`LeaderEvent::Checked`].
    pub(super) fn ask(&mut self, group: Key) {
        if !self.asking.insert(group.clone()) {
            return;
        }
        let bucket = self.bucket.clone();
        let answers = self.answers.clone();
        let asked = Instant::now();
        let generation = self.generation;
        tokio::spawn(async move {
            let change = elections::read_key(&bucket, &group.0, &group.1).await;
            if change.is_err() {
                // A failure is told after a pause: the records still held
                // ask again at once, which must not spin while JetStream
                // keeps refusing.
                tokio::time::sleep(RETRY_PAUSE).await;
            }
            let _ = answers.send(LeaderEvent::Checked {
                service: group.0,
                group: group.1,
                asked,
                change,
                generation,
            });
        });
    }
}
