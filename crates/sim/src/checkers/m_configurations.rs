//! Configurations (Ongaro's thesis §4.1, single-server changes): the rules that keep any two
//! majorities overlapping while the cluster's membership changes.
//!
//! - **S1 across configurations**: a leader of a term was granted real votes by a majority of
//!   the voters of the newest configuration in its log when it won (votes are seen as they
//!   are sent). Two leaders of one term are caught by S1 itself; this catches a leader that
//!   counted a majority in the wrong configuration even when no second leader appears.
//! - **M1, one change at a time**: a leader's log never holds more than one configuration
//!   above its commit index, once that index is of its term.
//! - **M2, in force on append**: the configuration a node acts on is the newest in its log
//!   (committed or not).

use std::collections::{BTreeMap, BTreeSet};

use chorus_core::{NodeId, Term};
use chorus_raft::{RawNode, Role, Status};

#[derive(Debug, Default)]
pub(super) struct Configurations {
    /// Real votes granted, by (term, candidate).
    votes: BTreeMap<(Term, NodeId), BTreeSet<NodeId>>,
    /// Terms whose leader was checked.
    checked: BTreeSet<Term>,
}

impl Configurations {
    pub(super) fn observe_vote(&mut self, voter: NodeId, term: Term, candidate: NodeId) {
        self.votes
            .entry((term, candidate))
            .or_default()
            .insert(voter);
    }

    pub(super) fn observe(
        &mut self,
        status: &Status,
        raft: &RawNode,
    ) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        let newest = raft.membership_at(status.last_index);
        if newest.is_some_and(|newest| newest != raft.membership()) {
            found.push((
                "M2",
                format!(
                    "{} acts on {} but the newest configuration in its log is {}",
                    status.id,
                    raft.membership(),
                    newest.cloned().unwrap_or_default()
                ),
            ));
        }
        if status.role != Role::Leader {
            return found;
        }
        // A leader's commit index is the cluster's only once it committed an entry of its own
        // term: a new leader restarted with a stale commit index (the commit index is volatile
        // state, Raft Figure 2) may inherit a committed change and the one after it, both above
        // what it knows is committed, without any leader having overlapped them.
        let uncommitted = raft.membership_changes_uncommitted();
        if uncommitted > 1 && raft.term_at(status.commit) == Some(status.term) {
            found.push((
                "M1",
                format!(
                    "leader {} of {} holds {uncommitted} uncommitted configuration changes",
                    status.id, status.term
                ),
            ));
        }
        if self.checked.insert(status.term) {
            let voters = &raft.membership().voters;
            let mut granted = self
                .votes
                .remove(&(status.term, status.id))
                .unwrap_or_default();
            granted.insert(status.id);
            let count = granted.intersection(voters).count();
            if count < voters.len() / 2 + 1 {
                found.push((
                    "S1",
                    format!(
                        "{} leads {} with votes from {granted:?}, not a majority of the voters \
                         {voters:?}",
                        status.id, status.term
                    ),
                ));
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_raft::{Config, Message, RequestVoteResponse};

    /// Node 1 of five voters, elected with the votes of nodes 2 and 3.
    fn leader_of_five() -> RawNode {
        let voters: Vec<NodeId> = (1..=5).map(NodeId).collect();
        let mut node = RawNode::new(Config::new(NodeId(1), voters)).expect("valid");
        node.campaign();
        let _ = node.ready();
        node.advance();
        for voter in [2, 3] {
            let vote = Message::RequestVoteResponse(RequestVoteResponse {
                term: Term(1),
                granted: true,
                pre_vote: false,
            });
            node.step(NodeId(voter), vote).expect("accepted");
        }
        assert_eq!(node.status().role, Role::Leader);
        node
    }

    #[test]
    fn catches_a_leader_without_a_majority_of_its_configuration() {
        let node = leader_of_five();
        let mut honest = Configurations::default();
        honest.observe_vote(NodeId(2), Term(1), NodeId(1));
        honest.observe_vote(NodeId(3), Term(1), NodeId(1));
        assert!(honest.observe(&node.status(), &node).is_empty());
        // Had only node 2's vote been sent, 2 of 5 voters cannot have elected it.
        let mut short = Configurations::default();
        short.observe_vote(NodeId(2), Term(1), NodeId(1));
        let found = short.observe(&node.status(), &node);
        assert!(
            found.iter().any(|(invariant, _)| *invariant == "S1"),
            "{found:?}"
        );
    }
}
