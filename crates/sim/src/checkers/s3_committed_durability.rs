//! S3, committed entries are never lost or overwritten: Leader Completeness (Raft §5.4.1,
//! Figure 3) and its consequence for every log.
//!
//! An entry counts as committed once any node applies it. From then on:
//! - no node may write a different entry at that index once it knows the index is committed
//!   (a leader overwriting a committed entry is how Figure 8 of the paper goes wrong without
//!   the current-term commit rule, §5.4.2). A lagging node may still hold, and even receive
//!   from a delayed message of an old leader, a conflicting entry it never acknowledged
//!   (Figure 7's followers); that is legal until it learns the index is committed;
//! - no node may apply a different entry at that index;
//! - every node that becomes leader in a term after the one in which the entry was committed
//!   must hold it (checked once per leader and term). The term an entry was committed in is
//!   the term of the first leader seen with a commit index covering it: a leader of an older
//!   term may legitimately win its election late, after a newer leader committed entries it
//!   never had;
//! - at the end, every node's log holds it.
//!
//! Compaction-aware (Raft §7): an entry a node compacted into a snapshot is covered by the
//! snapshot, not held one by one. A leader or a final log counts as holding a committed entry
//! at or below its snapshot's index (whose term must match the committed one at that index);
//! above it, the entry itself must be there. Whether the snapshot's state really is the
//! committed log's is S4's check at snapshot points.

use std::collections::BTreeSet;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{Entry, RawNode, Role, Status};

use super::{FinalLog, payload_hash};

#[derive(Debug, Default)]
pub(super) struct CommittedDurability {
    /// `committed[i]` is (term, payload hash) of the committed entry at index i + 1.
    committed: Vec<(Term, u64)>,
    /// `commit_terms[i]` is the term of the first leader seen committing index i + 1.
    commit_terms: Vec<Term>,
    leaders_checked: BTreeSet<(Term, NodeId)>,
}

fn slot(index: LogIndex) -> usize {
    usize::try_from(index.0).expect("invariant: index fits usize") - 1
}

impl CommittedDurability {
    fn check(&self, node: NodeId, entry: &Entry, what: &str) -> Option<String> {
        let &(term, hash) = self.committed.get(slot(entry.index))?;
        (term != entry.term || hash != payload_hash(&entry.payload)).then(|| {
            format!(
                "{node} {what} {} {} over the committed entry of {term} at that index",
                entry.index, entry.term
            )
        })
    }

    pub(super) fn observe_commit(&mut self, node: NodeId, entry: &Entry) -> Option<String> {
        let next = LogIndex(self.committed.len() as u64).next();
        if entry.index == next {
            self.committed
                .push((entry.term, payload_hash(&entry.payload)));
            return None;
        }
        if entry.index > next {
            return Some(format!(
                "{node} applied {} before any node applied {next}",
                entry.index
            ));
        }
        self.check(node, entry, "applied")
    }

    pub(super) fn observe_persist(
        &mut self,
        node: NodeId,
        commit: LogIndex,
        entries: &[Entry],
    ) -> Option<String> {
        entries
            .iter()
            .take_while(|entry| entry.index <= commit)
            .find_map(|entry| self.check(node, entry, &format!("(commit {commit}) wrote")))
    }

    pub(super) fn observe_leader(&mut self, status: &Status, raft: &RawNode) -> Option<String> {
        if status.role != Role::Leader {
            return None;
        }
        while (self.commit_terms.len() as u64) < status.commit.0 {
            self.commit_terms.push(status.term);
        }
        if !self.leaders_checked.insert((status.term, status.id)) {
            return None;
        }
        let earlier = self
            .commit_terms
            .iter()
            .take_while(|&&term| term < status.term)
            .count();
        let snapshot = raft.snapshot();
        if let Some(v) = self.check_snapshot(status.id, snapshot) {
            return Some(v);
        }
        self.committed
            .iter()
            .take(earlier)
            .enumerate()
            .find_map(|(i, &(term, hash))| {
                let index = LogIndex(i as u64 + 1);
                let holds = index <= snapshot.index
                    || raft
                        .entry(index)
                        .is_some_and(|e| e.term == term && payload_hash(&e.payload) == hash);
                (!holds).then(|| {
                    format!(
                        "{} became leader of {} without the committed entry {index} of {term}",
                        status.id, status.term
                    )
                })
            })
    }

    /// A snapshot at a committed index must carry that entry's term.
    fn check_snapshot(&self, node: NodeId, snapshot: chorus_raft::SnapshotMeta) -> Option<String> {
        let slot = usize::try_from(snapshot.index.0.checked_sub(1)?).ok()?;
        let &(term, _) = self.committed.get(slot)?;
        (term != snapshot.term).then(|| {
            format!(
                "{node} holds a snapshot at {} of {} over the committed entry of {term}",
                snapshot.index, snapshot.term
            )
        })
    }

    pub(super) fn finish(&self, logs: &[FinalLog]) -> Vec<String> {
        let mut found = Vec::new();
        for log in logs {
            let node = log.node;
            let covered = log.entries.last().map_or(log.snapshot.index, |entry| {
                entry.index.max(log.snapshot.index)
            });
            // Above the snapshot the log must hold every entry; below, the snapshot covers it.
            let contiguous = log
                .entries
                .iter()
                .filter(|entry| entry.index > log.snapshot.index)
                .zip(log.snapshot.index.0 + 1..)
                .all(|(entry, index)| entry.index.0 == index);
            if covered.0 < self.committed.len() as u64 || !contiguous {
                found.push(format!(
                    "{node} ends holding committed entries up to {covered} (snapshot at {}, \
                     entries {:?}..{:?}), the cluster committed {}",
                    log.snapshot.index,
                    log.entries.first().map(|e| e.index.0),
                    log.entries.last().map(|e| e.index.0),
                    self.committed.len()
                ));
            }
            if let Some(v) = self.check_snapshot(node, log.snapshot) {
                found.push(v);
            }
            if let Some(v) = log
                .entries
                .iter()
                .find_map(|entry| self.check(node, entry, "ends with"))
            {
                found.push(v);
            }
        }
        found
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
    fn catches_an_overwritten_committed_entry() {
        let mut checker = CommittedDurability::default();
        assert_eq!(checker.observe_commit(NodeId(1), &entry(1, 1, "a")), None);
        let entries = [entry(1, 1, "a"), entry(2, 3, "b")];
        assert_eq!(
            checker.observe_persist(NodeId(2), LogIndex(2), &entries),
            None
        );
        // A lagging node that does not know index 1 is committed may hold anything there.
        assert_eq!(
            checker.observe_persist(NodeId(3), LogIndex(0), &[entry(1, 2, "z")]),
            None
        );
        assert!(
            checker
                .observe_persist(NodeId(3), LogIndex(1), &[entry(1, 2, "z")])
                .is_some()
        );
        assert!(
            checker
                .observe_commit(NodeId(3), &entry(1, 2, "z"))
                .is_some()
        );
    }

    #[test]
    fn catches_a_log_that_ends_short() {
        let mut checker = CommittedDurability::default();
        checker.observe_commit(NodeId(1), &entry(1, 1, "a"));
        checker.observe_commit(NodeId(1), &entry(2, 1, "b"));
        let short = FinalLog {
            node: NodeId(2),
            snapshot: chorus_raft::SnapshotMeta::default(),
            entries: vec![entry(1, 1, "a")],
        };
        assert!(checker.finish(&[short]).len() == 1);
    }

    #[test]
    fn a_snapshot_covers_the_entries_it_compacted() {
        let mut checker = CommittedDurability::default();
        for index in 1..=4 {
            checker.observe_commit(NodeId(1), &entry(index, 1, "a"));
        }
        let compacted = FinalLog {
            node: NodeId(2),
            snapshot: chorus_raft::SnapshotMeta {
                index: LogIndex(3),
                term: Term(1),
            },
            entries: vec![entry(4, 1, "a")],
        };
        assert_eq!(checker.finish(&[compacted]), Vec::<String>::new());
        // A gap above the snapshot is a loss.
        let gap = FinalLog {
            node: NodeId(2),
            snapshot: chorus_raft::SnapshotMeta {
                index: LogIndex(2),
                term: Term(1),
            },
            entries: vec![entry(4, 1, "a")],
        };
        assert_eq!(checker.finish(&[gap]).len(), 1);
        // A snapshot of another term at a committed index is an overwrite.
        let forged = FinalLog {
            node: NodeId(3),
            snapshot: chorus_raft::SnapshotMeta {
                index: LogIndex(4),
                term: Term(2),
            },
            entries: Vec::new(),
        };
        assert_eq!(checker.finish(&[forged]).len(), 1);
    }
}
