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

use std::collections::BTreeSet;

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{Entry, RawNode, Role, Status};

use super::payload_hash;

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
        self.committed
            .iter()
            .take(earlier)
            .enumerate()
            .find_map(|(i, &(term, hash))| {
                let index = LogIndex(i as u64 + 1);
                let holds = raft
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

    pub(super) fn finish(&self, logs: &[(NodeId, Vec<Entry>)]) -> Vec<String> {
        let mut found = Vec::new();
        for (node, log) in logs {
            if log.len() < self.committed.len() {
                found.push(format!(
                    "{node} ends with {} committed entries, the cluster committed {}",
                    log.len(),
                    self.committed.len()
                ));
            }
            if let Some(v) = log
                .iter()
                .find_map(|entry| self.check(*node, entry, "ends with"))
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
        assert!(checker.finish(&[(NodeId(2), vec![entry(1, 1, "a")])]).len() == 1);
    }
}
