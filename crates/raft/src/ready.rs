//! [`Ready`]: everything the core asks its driver to do, in the order it must be done.

use chorus_core::{LogIndex, NodeId};

use crate::message::{Entry, HardState, Message, ReadId};

/// A read that may be served once the local state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id given to [`crate::RawNode::read_index`].
    pub id: ReadId,
    /// The read index: serve the read once `applied >= index`.
    pub index: LogIndex,
}

/// The work a driver must do, taken from [`crate::RawNode::ready`].
///
/// The driver handles it in this order (see the crate docs for the full contract):
/// 1. send `messages` (at any time, even before step 2 finishes);
/// 2. persist `hard_state` and `entries`, durably (fsync);
/// 3. send `persisted_messages`;
/// 4. apply `committed_entries` in order, then serve `read_states` whose index is applied,
///    and fail `rejected_reads`;
/// 5. call [`crate::RawNode::advance`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Messages that may be sent before this Ready's state is durable: a leader's
    /// AppendEntries and heartbeats, pre-vote requests, forwarded proposals and reads.
    pub messages: Vec<(NodeId, Message)>,
    /// The hard state to persist, if it changed.
    pub hard_state: Option<HardState>,
    /// Entries to append to the durable log. If the first entry's index is at or below the
    /// last stored index, the stored log is first truncated from that index on (a conflicting
    /// suffix written by an earlier leader).
    pub entries: Vec<Entry>,
    /// Messages that promise durable state (votes, AppendEntries acks, vote requests carrying
    /// the candidate's own vote): send them only after step 2 is durable.
    pub persisted_messages: Vec<(NodeId, Message)>,
    /// Committed entries to apply, in log order, each exactly once. They may include entries of
    /// this same Ready, which is why they are applied after step 2.
    pub committed_entries: Vec<Entry>,
    /// Reads whose read index is known.
    pub read_states: Vec<ReadState>,
    /// Reads this node could not serve (it lost or has no leader); the caller may retry.
    pub rejected_reads: Vec<ReadId>,
}

impl Ready {
    /// Whether there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.hard_state.is_none()
            && self.entries.is_empty()
            && self.persisted_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
            && self.rejected_reads.is_empty()
    }
}
