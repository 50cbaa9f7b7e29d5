//! S4, State Machine Safety (Raft §5.4.3, Figure 3): if a server has applied a log entry at a
//! given index, no other server ever applies a different entry for that index.
//!
//! Also checked: each node applies indexes in order, with no gap and no repeat within one
//! incarnation (a restarted node rebuilds its state machine from its durable snapshot, or
//! from nothing, and replays the log after it; a follower that installs a snapshot goes on
//! after the snapshot's index).
//!
//! Compaction-aware: entries covered by a snapshot are never applied one by one, so at each
//! snapshot point (a snapshot taken, installed, or restored at a restart) the state machine's
//! state is compared instead: every node whose state machine stands at index i must hold the
//! same state, byte for byte, as every other node's did at i (Raft §7: "the state machine
//! state as of the last included index").

use std::collections::BTreeMap;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::Entry;

use super::payload_hash;

#[derive(Debug, Default)]
pub(super) struct StateMachineSafety {
    /// `applied[i]` is (term, payload hash) of the entry first applied at index i + 1.
    applied: Vec<(Term, u64)>,
    last_applied: BTreeMap<NodeId, LogIndex>,
    /// index → (hash of the state machine's image at that index, first node seen with it).
    states: BTreeMap<LogIndex, (u64, NodeId)>,
}

impl StateMachineSafety {
    pub(super) fn observe(&mut self, node: NodeId, entry: &Entry) -> Option<String> {
        let last = self.last_applied.entry(node).or_default();
        let expected = last.next();
        if entry.index != expected {
            return Some(format!("{node} applied {} after {}", entry.index, *last));
        }
        *last = entry.index;
        let hash = payload_hash(&entry.payload);
        let slot = usize::try_from(entry.index.0 - 1).expect("invariant: index fits usize");
        match self.applied.get(slot) {
            None => {
                self.applied.push((entry.term, hash));
                None
            }
            Some(&(term, first)) => (term != entry.term || first != hash).then(|| {
                format!(
                    "{node} applied {} {} where another node applied an entry of {term}",
                    entry.index, entry.term
                )
            }),
        }
    }

    pub(super) fn observe_crash(&mut self, node: NodeId) {
        self.last_applied.remove(&node);
    }

    /// `node`'s state machine stands at `index` with an image hashing to `state`: after a
    /// snapshot was taken (`moved` false) or restored from one (`moved` true: it now goes on
    /// after `index`). `what` names the event for the report.
    pub(super) fn observe_state(
        &mut self,
        node: NodeId,
        index: LogIndex,
        state: u64,
        moved: bool,
        what: &str,
    ) -> Option<String> {
        if moved {
            let last = self.last_applied.insert(node, index);
            if let Some(last) = last.filter(|&last| last > index) {
                return Some(format!(
                    "{node} {what} at {index}, rolling its state machine back from {last}"
                ));
            }
        } else if let Some(&last) = self.last_applied.get(&node)
            && last != index
        {
            return Some(format!(
                "{node} {what} at {index} with its state machine at {last}"
            ));
        }
        let (first, first_node) = *self.states.entry(index).or_insert((state, node));
        (first != state).then(|| {
            format!(
                "{node} {what} at {index} with a state that differs from {first_node}'s at that \
                 index"
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_raft::EntryPayload;

    fn entry(index: u64, term: u64) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: EntryPayload::NoOp,
        }
    }

    #[test]
    fn catches_divergent_and_out_of_order_applies() {
        let mut checker = StateMachineSafety::default();
        assert_eq!(checker.observe(NodeId(1), &entry(1, 1)), None);
        assert_eq!(checker.observe(NodeId(2), &entry(1, 1)), None);
        assert!(checker.observe(NodeId(2), &entry(3, 1)).is_some());
        assert!(checker.observe(NodeId(3), &entry(1, 2)).is_some());
        checker.observe_crash(NodeId(1));
        assert_eq!(checker.observe(NodeId(1), &entry(1, 1)), None);
    }

    #[test]
    fn catches_diverging_states_at_snapshot_points() {
        let mut checker = StateMachineSafety::default();
        assert_eq!(checker.observe(NodeId(1), &entry(1, 1)), None);
        assert_eq!(checker.observe(NodeId(1), &entry(2, 1)), None);
        assert_eq!(
            checker.observe_state(NodeId(1), LogIndex(2), 7, false, "took a snapshot"),
            None
        );
        // A follower installs it and goes on after it.
        assert_eq!(
            checker.observe_state(NodeId(2), LogIndex(2), 7, true, "installed a snapshot"),
            None
        );
        assert_eq!(checker.observe(NodeId(2), &entry(3, 1)), None);
        assert!(
            checker
                .observe_state(NodeId(3), LogIndex(2), 8, true, "restored a snapshot")
                .is_some()
        );
        // A snapshot of another index than the applied one.
        assert!(
            checker
                .observe_state(NodeId(2), LogIndex(2), 7, false, "took a snapshot")
                .is_some()
        );
    }
}
