//! S2, Log Matching (Raft §5.3, Figure 3): if two logs contain an entry with the same index
//! and term, the logs are identical in all entries up through that index.
//!
//! Checked inductively, without comparing whole logs: every (index, term) ever written to any
//! node's log must always carry the same payload and sit after an entry of the same term. If
//! that holds for every write, any two logs that agree at (index, term) agree at index − 1 on
//! the term, hence (by induction) on the whole prefix.

use std::collections::BTreeMap;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::Entry;

use super::payload_hash;

#[derive(Debug, Default)]
pub(super) struct LogMatching {
    /// (index, term) → (payload hash, term of the previous entry, first node seen writing it).
    seen: BTreeMap<(LogIndex, Term), (u64, Term, NodeId)>,
}

impl LogMatching {
    pub(super) fn observe(
        &mut self,
        node: NodeId,
        prev_term: Term,
        entries: &[Entry],
    ) -> Option<String> {
        let mut prev = prev_term;
        for entry in entries {
            let hash = payload_hash(&entry.payload);
            let first = *self
                .seen
                .entry((entry.index, entry.term))
                .or_insert((hash, prev, node));
            if first.0 != hash {
                return Some(format!(
                    "{node} wrote a different entry at {} {} than {} did",
                    entry.index, entry.term, first.2
                ));
            }
            if first.1 != prev {
                return Some(format!(
                    "{node} has {} {} after an entry of {}, {} had it after {}",
                    entry.index, entry.term, prev, first.2, first.1
                ));
            }
            prev = entry.term;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use chorus_raft::EntryPayload;

    fn entry(index: u64, term: u64, data: &'static str) -> Entry {
        Entry {
            index: LogIndex(index),
            term: Term(term),
            payload: EntryPayload::Command(Bytes::from_static(data.as_bytes())),
        }
    }

    #[test]
    fn catches_same_index_and_term_with_different_payloads() {
        let mut checker = LogMatching::default();
        assert_eq!(
            checker.observe(NodeId(1), Term(0), &[entry(1, 1, "a"), entry(2, 1, "b")]),
            None
        );
        assert_eq!(
            checker.observe(NodeId(2), Term(1), &[entry(2, 1, "b")]),
            None
        );
        assert!(
            checker
                .observe(NodeId(3), Term(1), &[entry(2, 1, "c")])
                .is_some()
        );
    }

    #[test]
    fn catches_same_entry_after_different_prefixes() {
        let mut checker = LogMatching::default();
        assert_eq!(
            checker.observe(NodeId(1), Term(1), &[entry(3, 2, "x")]),
            None
        );
        assert!(
            checker
                .observe(NodeId(2), Term(2), &[entry(3, 2, "x")])
                .is_some()
        );
    }
}
