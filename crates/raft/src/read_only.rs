//! A leader's bookkeeping for linearizable reads through ReadIndex (thesis §6.4).
//!
//! A read goes through three stages on the leader:
//!
//! 1. **waiting**: it arrived, locally or forwarded by a follower. It stays here until the
//!    leader has committed an entry of its own term (before that, the leader's commit index may
//!    lag behind what an earlier leader committed, thesis §6.4 step 1).
//! 2. **in a round**: when the next Ready is assembled, all waiting reads join one new round
//!    `R` with read index = the commit index at that moment, and the leader sends every
//!    follower an AppendEntries carrying `read_round = R`.
//! 3. **confirmed**: once a majority (the leader included) answered a message of round `R` or
//!    later in the current term, nobody else can have been leader when the round started, so
//!    every read of rounds `<= R` may be served at its index.
//!
//! Invariants: rounds are strictly increasing in the queue; `len()` counts every read held in
//! any stage and is bounded by the caller with `reads_pending_max`.

use std::collections::VecDeque;

use chorus_core::{LogIndex, NodeId};

use crate::message::ReadId;

/// Who asked for a read, and so who must hear the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Requester {
    /// A client of this node.
    Local,
    /// A follower that forwarded the read.
    Remote(NodeId),
}

/// One read held by the leader.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    pub(crate) requester: Requester,
    pub(crate) id: ReadId,
}

/// Reads that share one confirmation round.
#[derive(Clone, Debug)]
struct ReadRound {
    round: u64,
    index: LogIndex,
    reads: Vec<PendingRead>,
}

/// The reads a leader holds, by stage.
#[derive(Clone, Debug, Default)]
pub(crate) struct LeaderReads {
    waiting: Vec<PendingRead>,
    rounds: VecDeque<ReadRound>,
    len: usize,
}

impl LeaderReads {
    /// Every read held, in any stage.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn has_waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    pub(crate) fn add(&mut self, read: PendingRead) {
        self.waiting.push(read);
        self.len += 1;
    }

    /// Puts every waiting read into round `round` with read index `index`.
    pub(crate) fn start_round(&mut self, round: u64, index: LogIndex) {
        assert!(
            self.rounds.back().is_none_or(|last| last.round < round),
            "invariant: read rounds increase"
        );
        if self.waiting.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.waiting);
        self.rounds.push_back(ReadRound {
            round,
            index,
            reads,
        });
    }

    /// Takes every read of rounds `<= confirmed`, each with its read index.
    pub(crate) fn take_confirmed(&mut self, confirmed: u64) -> Vec<(PendingRead, LogIndex)> {
        let mut released = Vec::new();
        while self
            .rounds
            .front()
            .is_some_and(|front| front.round <= confirmed)
        {
            let round = self.rounds.pop_front().expect("invariant: front exists");
            released.extend(round.reads.into_iter().map(|read| (read, round.index)));
        }
        self.len -= released.len();
        released
    }

    /// Takes every read in any stage (the leader is stepping down).
    pub(crate) fn take_all(&mut self) -> Vec<PendingRead> {
        let mut all: Vec<PendingRead> = self
            .rounds
            .drain(..)
            .flat_map(|round| round.reads)
            .collect();
        all.append(&mut self.waiting);
        self.len = 0;
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(id: u64) -> PendingRead {
        PendingRead {
            requester: Requester::Local,
            id: ReadId(id),
        }
    }

    #[test]
    fn reads_are_released_by_round() {
        let mut reads = LeaderReads::default();
        reads.add(local(1));
        reads.add(local(2));
        reads.start_round(1, LogIndex(10));
        reads.add(local(3));
        reads.start_round(2, LogIndex(12));
        assert_eq!(reads.len(), 3);
        assert!(reads.take_confirmed(0).is_empty());
        let first = reads.take_confirmed(1);
        assert_eq!(
            first,
            vec![(local(1), LogIndex(10)), (local(2), LogIndex(10))]
        );
        reads.add(local(4));
        let all = reads.take_all();
        assert_eq!(all, vec![local(3), local(4)]);
        assert_eq!(reads.len(), 0);
    }
}
