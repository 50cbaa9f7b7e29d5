//! S2, Log Matching (Raft §5.3, Figure 3): if two logs contain an entry with the same index
//! and term, the logs are identical in all entries up through that index.
//!
//! Checked inductively, without comparing whole logs: every (index, term) ever written to any
//! node's log must always carry the same payload and sit after an entry of the same term. If
//! that holds for every write, any two logs that agree at (index, term) agree at index − 1 on
//! the term, hence (by induction) on the whole prefix.
//!
//! Compaction-aware: a node writes entries after its snapshot or after the entries it still
//! holds, so the term of the entry before them is known (the snapshot's term stands for a
//! compacted entry). If it is not (`None`), only the payloads are compared; a wrong prefix
//! below a snapshot shows up as a diverging state at the snapshot point (S4).

use std::collections::BTreeMap;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::Entry;

use super::payload_hash;

#[derive(Debug, Default)]
pub(super) struct LogMatching {
    /// (index, term) → (payload hash, term of the previous entry if known, first node seen
    /// writing it with a known previous term, or at all).
    seen: BTreeMap<(LogIndex, Term), (u64, Option<Term>, NodeId)>,
}

impl LogMatching {
    pub(super) fn observe(
        &mut self,
        node: NodeId,
        prev_term: Option<Term>,
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
            match (first.1, prev) {
                (Some(first_prev), Some(prev)) if first_prev != prev => {
                    return Some(format!(
                        "{node} has {} {} after an entry of {prev}, {} had it after {first_prev}",
                        entry.index, entry.term, first.2
                    ));
                }
                (None, Some(_)) => {
                    // The first writer's prefix was compacted away; this one's is known.
                    self.seen
                        .insert((entry.index, entry.term), (hash, prev, node));
                }
                _ => {}
            }
            prev = Some(entry.term);
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
            checker.observe(
                NodeId(1),
                Some(Term(0)),
                &[entry(1, 1, "a"), entry(2, 1, "b")]
            ),
            None
        );
        assert_eq!(
            checker.observe(NodeId(2), Some(Term(1)), &[entry(2, 1, "b")]),
            None
        );
        assert!(
            checker
                .observe(NodeId(3), Some(Term(1)), &[entry(2, 1, "c")])
                .is_some()
        );
    }

    #[test]
    fn catches_same_entry_after_different_prefixes() {
        let mut checker = LogMatching::default();
        assert_eq!(
            checker.observe(NodeId(1), Some(Term(1)), &[entry(3, 2, "x")]),
            None
        );
        assert!(
            checker
                .observe(NodeId(2), Some(Term(2)), &[entry(3, 2, "x")])
                .is_some()
        );
    }
}
