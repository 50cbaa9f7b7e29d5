//! Cluster membership: who votes, who only listens, and how one configuration becomes the
//! next.
//!
//! Chorus changes membership one server at a time (Ongaro's thesis §4.1, with the fix of his
//! 2015 raft-dev note): every change adds or removes a single voter (or moves a learner), so
//! any majority of the old voters and any majority of the new voters overlap, and no two
//! leaders can be elected in one term across the change. A configuration is a log entry
//! ([`crate::EntryPayload::Membership`]) holding the whole new configuration, and it takes
//! effect on a node as soon as the node *appends* it, committed or not; a truncated entry
//! takes its configuration back with it. The leader keeps at most one change uncommitted and
//! proposes one only after it committed an entry of its own term.
//!
//! Invariants of a valid [`Membership`]: at least one voter, no node both voter and learner,
//! no node `0`, at most [`MEMBERS_MAX`] members.

use std::collections::BTreeSet;

use chorus_core::{LogIndex, NodeId};
use serde::{Deserialize, Serialize};

/// The most members (voters and learners) a configuration may hold, so that a forged entry
/// cannot make a node track an unbounded set of peers.
pub const MEMBERS_MAX: usize = 64;

/// One configuration of the cluster: its voters (who elect leaders and make up majorities)
/// and its learners (who receive the log but neither vote nor count toward a majority).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// The voting members.
    pub voters: BTreeSet<NodeId>,
    /// The non-voting members.
    pub learners: BTreeSet<NodeId>,
}

/// One single-server change of configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MembershipChange {
    /// Adds a node that is not a member as a learner.
    AddLearner(NodeId),
    /// Makes a learner a voter (the leader checks that it caught up first).
    Promote(NodeId),
    /// Removes a voter or a learner.
    Remove(NodeId),
}

/// A membership change was refused. Nothing entered the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Only the leader changes membership.
    #[error("this node is not the leader")]
    NotLeader,
    /// The leader has not yet committed an entry of its own term (Ongaro's 2015 fix: a change
    /// proposed before that could overlap with an uncommitted change of an earlier leader).
    #[error("the leader has not yet committed an entry of its term; retry shortly")]
    NotCommittedInTerm,
    /// A change is already in the log and not yet committed: one at a time.
    #[error("a membership change is already in progress; retry once it commits")]
    ChangePending,
    /// A leadership transfer is in progress.
    #[error("a leadership transfer is in progress")]
    TransferPending,
    /// The node is already a member (voter or learner).
    #[error("node {0} is already a member")]
    AlreadyMember(NodeId),
    /// The node is not a member.
    #[error("node {0} is not a member")]
    NotAMember(NodeId),
    /// Only a learner can be promoted.
    #[error("node {0} is not a learner")]
    NotALearner(NodeId),
    /// The learner has not caught up with the leader's log yet.
    #[error("learner {0} has not caught up yet; retry shortly")]
    LearnerBehind(NodeId),
    /// The change would leave no voter.
    #[error("removing node {0} would leave no voter")]
    LastVoter(NodeId),
    /// The configuration would exceed [`MEMBERS_MAX`].
    #[error("a configuration holds at most {MEMBERS_MAX} members")]
    TooManyMembers,
    /// Node 0 is reserved.
    #[error("node 0 cannot be a member")]
    InvalidNode,
}

impl Membership {
    /// A configuration of these voters and no learners.
    #[must_use]
    pub fn with_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            learners: BTreeSet::new(),
        }
    }

    /// Whether `id` votes.
    #[must_use]
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id)
    }

    /// Whether `id` is a learner.
    #[must_use]
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id)
    }

    /// Whether `id` is a voter or a learner.
    #[must_use]
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters and learners, in id order.
    #[must_use]
    pub fn members(&self) -> Vec<NodeId> {
        self.voters.union(&self.learners).copied().collect()
    }

    /// How many voters make a majority.
    #[must_use]
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Whether the configuration is well formed (see the module docs). Entries and snapshots
    /// from the network carrying anything else are refused.
    #[must_use]
    pub fn is_valid(&self) -> bool {
        !self.voters.is_empty()
            && self.voters.is_disjoint(&self.learners)
            && !self.contains(NodeId(0))
            && self.voters.len() + self.learners.len() <= MEMBERS_MAX
    }

    /// The configuration after `change`.
    ///
    /// # Errors
    /// A [`MembershipError`] if the change does not apply to this configuration.
    pub fn apply(&self, change: MembershipChange) -> Result<Membership, MembershipError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddLearner(id) => {
                if id == NodeId(0) {
                    return Err(MembershipError::InvalidNode);
                }
                if self.contains(id) {
                    return Err(MembershipError::AlreadyMember(id));
                }
                if self.voters.len() + self.learners.len() >= MEMBERS_MAX {
                    return Err(MembershipError::TooManyMembers);
                }
                next.learners.insert(id);
            }
            MembershipChange::Promote(id) => {
                if !self.is_learner(id) {
                    return Err(MembershipError::NotALearner(id));
                }
                next.learners.remove(&id);
                next.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                if !self.contains(id) {
                    return Err(MembershipError::NotAMember(id));
                }
                if self.voters.len() == 1 && self.is_voter(id) {
                    return Err(MembershipError::LastVoter(id));
                }
                next.voters.remove(&id);
                next.learners.remove(&id);
            }
        }
        Ok(next)
    }

    /// The number of voters that differ between two configurations (in one and not the
    /// other). A single-server change differs by at most one.
    #[must_use]
    pub fn voters_changed(&self, other: &Membership) -> usize {
        self.voters.symmetric_difference(&other.voters).count()
    }
}

impl std::fmt::Display for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |set: &BTreeSet<NodeId>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(
            f,
            "voters [{}] learners [{}]",
            list(&self.voters),
            list(&self.learners)
        )
    }
}

/// The configurations a node knows of, by the log index that introduced each: the one its
/// snapshot holds (or the one it was born with, at index 0) and every membership entry of its
/// log after that. The newest is in force (configurations take effect on append); a
/// truncation of the log takes its entries' configurations back.
#[derive(Clone, Debug)]
pub(crate) struct Configurations {
    /// Sorted by index, never empty.
    list: Vec<(LogIndex, Membership)>,
}

impl Configurations {
    /// Starts from `base`, in force as of `index` (a snapshot's index, or 0).
    pub(crate) fn new(index: LogIndex, base: Membership) -> Configurations {
        Configurations {
            list: vec![(index, base)],
        }
    }

    /// The newest configuration.
    pub(crate) fn latest(&self) -> &Membership {
        &self.list.last().expect("invariant: never empty").1
    }

    /// The index of the entry that introduced the newest configuration.
    pub(crate) fn latest_index(&self) -> LogIndex {
        self.list.last().expect("invariant: never empty").0
    }

    /// The configuration in force at `index`, if known.
    pub(crate) fn at(&self, index: LogIndex) -> Option<&Membership> {
        let end = self.list.partition_point(|(at, _)| *at <= index);
        end.checked_sub(1).map(|position| &self.list[position].1)
    }

    /// How many configurations entries after `index` introduced.
    pub(crate) fn count_after(&self, index: LogIndex) -> usize {
        self.list.iter().filter(|(at, _)| *at > index).count()
    }

    /// A membership entry at `index` was appended.
    pub(crate) fn append(&mut self, index: LogIndex, membership: Membership) {
        assert!(
            index > self.latest_index(),
            "invariant: configurations are appended in log order"
        );
        self.list.push((index, membership));
    }

    /// The log was truncated from `from` on: the configurations of those entries go with them.
    pub(crate) fn truncate_from(&mut self, from: LogIndex) {
        assert!(
            self.list[0].0 < from,
            "invariant: a truncation never reaches the snapshot"
        );
        self.list.retain(|(at, _)| *at < from);
    }

    /// A snapshot at `index` holding `membership` was installed; the log after it stayed
    /// (`suffix_kept`) or was discarded.
    pub(crate) fn install(&mut self, index: LogIndex, membership: Membership, suffix_kept: bool) {
        if suffix_kept {
            self.list.retain(|(at, _)| *at > index);
        } else {
            self.list.clear();
        }
        self.list.insert(0, (index, membership));
    }

    /// Forgets configurations older than the one in force at `index` (the log was compacted
    /// there), so the list stays as short as the log's configurations.
    pub(crate) fn forget_below(&mut self, index: LogIndex) {
        let end = self.list.partition_point(|(at, _)| *at <= index);
        if end > 1 {
            self.list.drain(..end - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(ids: &[u64]) -> Membership {
        Membership::with_voters(ids.iter().map(|&id| NodeId(id)))
    }

    #[test]
    fn each_change_moves_one_server_and_refuses_what_does_not_apply() {
        let three = voters(&[1, 2, 3]);
        let added = three
            .apply(MembershipChange::AddLearner(NodeId(4)))
            .unwrap();
        assert!(added.is_learner(NodeId(4)) && !added.is_voter(NodeId(4)));
        assert_eq!(three.voters_changed(&added), 0);
        let promoted = added.apply(MembershipChange::Promote(NodeId(4))).unwrap();
        assert!(promoted.is_voter(NodeId(4)) && !promoted.is_learner(NodeId(4)));
        assert_eq!(added.voters_changed(&promoted), 1);
        assert_eq!(promoted.quorum(), 3);
        let removed = promoted.apply(MembershipChange::Remove(NodeId(1))).unwrap();
        assert_eq!(removed.voters, voters(&[2, 3, 4]).voters);

        assert_eq!(
            three.apply(MembershipChange::AddLearner(NodeId(2))),
            Err(MembershipError::AlreadyMember(NodeId(2)))
        );
        assert_eq!(
            three.apply(MembershipChange::Promote(NodeId(2))),
            Err(MembershipError::NotALearner(NodeId(2)))
        );
        assert_eq!(
            three.apply(MembershipChange::Remove(NodeId(9))),
            Err(MembershipError::NotAMember(NodeId(9)))
        );
        assert_eq!(
            voters(&[1]).apply(MembershipChange::Remove(NodeId(1))),
            Err(MembershipError::LastVoter(NodeId(1)))
        );
        assert_eq!(
            three.apply(MembershipChange::AddLearner(NodeId(0))),
            Err(MembershipError::InvalidNode)
        );
    }

    #[test]
    fn malformed_configurations_are_invalid() {
        assert!(voters(&[1, 2, 3]).is_valid());
        assert!(!Membership::default().is_valid());
        let mut both = voters(&[1, 2]);
        both.learners.insert(NodeId(2));
        assert!(!both.is_valid());
        assert!(!voters(&[0, 1]).is_valid());
        let huge = voters(&(1..=(MEMBERS_MAX as u64 + 1)).collect::<Vec<_>>());
        assert!(!huge.is_valid());
    }
}
