//! S1, Election Safety (Raft §5.2, Figure 3): at most one leader can be elected in a term.
//!
//! Every status the simulator observes with the role `Leader` is recorded against its term; a
//! second node seen leading the same term is a violation, whenever it happens and even if the
//! first leader has long since crashed.

use std::collections::BTreeMap;

use chorus_core::{NodeId, Term};
use chorus_raft::{Role, Status};

#[derive(Debug, Default)]
pub(super) struct ElectionSafety {
    leaders: BTreeMap<Term, NodeId>,
}

impl ElectionSafety {
    pub(super) fn observe(&mut self, status: &Status) -> Option<String> {
        if status.role != Role::Leader {
            return None;
        }
        let leader = *self.leaders.entry(status.term).or_insert(status.id);
        (leader != status.id).then(|| {
            format!(
                "two leaders in {}: {} and {}",
                status.term, leader, status.id
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::LogIndex;

    fn leader(id: u64, term: u64) -> Status {
        Status {
            id: NodeId(id),
            role: Role::Leader,
            term: Term(term),
            vote: Some(NodeId(id)),
            leader: Some(NodeId(id)),
            commit: LogIndex(0),
            applied: LogIndex(0),
            last_index: LogIndex(0),
            persisted_index: LogIndex(0),
            repairing: None,
        }
    }

    #[test]
    fn catches_two_leaders_in_one_term() {
        let mut checker = ElectionSafety::default();
        assert_eq!(checker.observe(&leader(1, 3)), None);
        assert_eq!(checker.observe(&leader(1, 3)), None);
        assert_eq!(checker.observe(&leader(2, 4)), None);
        assert!(checker.observe(&leader(2, 3)).is_some());
    }
}
