//! S5, nothing a node promised goes backwards (Raft §5.1 and Figure 2: currentTerm "increases
//! monotonically", votedFor is persistent, "updated on stable storage before responding").
//!
//! Within one incarnation, a node's term, commit index and applied index never decrease, and
//! its vote within a term never changes. Across a restart, what it promised others survives:
//! a node that granted a vote in term T comes back in term T or later, still voting for the
//! same candidate if in T, and never grants a different candidate in T. (The applied index
//! restarts from the node's durable snapshot, or from zero without one, by design: a restarted
//! node restores its state machine from the snapshot and replays the log after it; S4 checks
//! the restore and the replay.)

use std::collections::BTreeMap;

use chorus_core::{NodeId, Term};
use chorus_raft::{HardState, Status};

#[derive(Debug, Default)]
pub(super) struct Monotonicity {
    last: BTreeMap<NodeId, Status>,
    /// (voter, term) → the candidate it granted its vote to.
    votes: BTreeMap<(NodeId, Term), NodeId>,
}

impl Monotonicity {
    pub(super) fn observe(&mut self, status: &Status) -> Option<String> {
        let found = self.last.get(&status.id).and_then(|last| {
            let id = status.id;
            if status.term < last.term {
                Some(format!(
                    "{id} term went from {} back to {}",
                    last.term, status.term
                ))
            } else if status.commit < last.commit {
                Some(format!(
                    "{id} commit went from {} back to {}",
                    last.commit, status.commit
                ))
            } else if status.applied < last.applied {
                Some(format!(
                    "{id} applied went from {} back to {}",
                    last.applied, status.applied
                ))
            } else if status.term == last.term && last.vote.is_some() && status.vote != last.vote {
                Some(format!(
                    "{id} changed its vote in {} from {:?} to {:?}",
                    status.term, last.vote, status.vote
                ))
            } else {
                None
            }
        });
        self.last.insert(status.id, *status);
        found
    }

    pub(super) fn observe_vote(
        &mut self,
        voter: NodeId,
        term: Term,
        candidate: NodeId,
    ) -> Option<String> {
        let first = *self.votes.entry((voter, term)).or_insert(candidate);
        (first != candidate).then(|| {
            format!("{voter} granted its vote in {term} to {first} and then to {candidate}")
        })
    }

    pub(super) fn observe_crash(&mut self, node: NodeId) {
        self.last.remove(&node);
    }

    pub(super) fn observe_restart(
        &mut self,
        status: &Status,
        durable: HardState,
    ) -> Option<String> {
        let id = status.id;
        if status.term < durable.term {
            return Some(format!(
                "{id} restarted in {} though its disk holds {}",
                status.term, durable.term
            ));
        }
        let promised = self
            .votes
            .range((id, Term(0))..=(id, Term(u64::MAX)))
            .next_back();
        let found = promised.and_then(|(&(_, term), &candidate)| {
            if status.term < term {
                Some(format!(
                    "{id} granted a vote in {term} but restarted in {}",
                    status.term
                ))
            } else if status.term == term && status.vote != Some(candidate) {
                Some(format!(
                    "{id} granted its vote in {term} to {candidate} but restarted voting for {:?}",
                    status.vote
                ))
            } else {
                None
            }
        });
        self.last.insert(id, *status);
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::LogIndex;
    use chorus_raft::Role;

    fn status(term: u64, vote: Option<u64>, commit: u64) -> Status {
        Status {
            id: NodeId(1),
            role: Role::Follower,
            term: Term(term),
            vote: vote.map(NodeId),
            leader: None,
            commit: LogIndex(commit),
            applied: LogIndex(0),
            last_index: LogIndex(commit),
            persisted_index: LogIndex(commit),
            repairing: None,
        }
    }

    #[test]
    fn catches_regressions_within_an_incarnation() {
        let mut checker = Monotonicity::default();
        assert_eq!(checker.observe(&status(2, Some(2), 5)), None);
        assert!(checker.observe(&status(2, Some(3), 5)).is_some());
        assert!(checker.observe(&status(1, None, 5)).is_some());
        assert!(checker.observe(&status(3, None, 4)).is_some());
    }

    #[test]
    fn catches_a_forgotten_vote_after_restart() {
        let mut checker = Monotonicity::default();
        assert_eq!(checker.observe_vote(NodeId(1), Term(4), NodeId(2)), None);
        checker.observe_crash(NodeId(1));
        let durable = HardState {
            term: Term(3),
            vote: None,
            commit: LogIndex(0),
            repairing: None,
        };
        assert!(
            checker
                .observe_restart(&status(3, None, 0), durable)
                .is_some()
        );
        assert!(
            checker
                .observe_vote(NodeId(1), Term(4), NodeId(3))
                .is_some()
        );
    }
}
