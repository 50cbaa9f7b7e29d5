//! S4, State Machine Safety (Raft §5.4.3, Figure 3): if a server has applied a log entry at a
//! given index, no other server ever applies a different entry for that index.
//!
//! Also checked: each node applies indexes in order, with no gap and no repeat within one
//! incarnation (a restarted node rebuilds its state machine by replaying from index 1).

use std::collections::BTreeMap;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::Entry;

use super::payload_hash;

#[derive(Debug, Default)]
pub(super) struct StateMachineSafety {
    /// `applied[i]` is (term, payload hash) of the entry first applied at index i + 1.
    applied: Vec<(Term, u64)>,
    last_applied: BTreeMap<NodeId, LogIndex>,
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
}
