//! [`Ready`]: everything the core asks its driver to do, in the order it must be done.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId};

use crate::message::{Entry, HardState, Message, ReadId, SnapshotMeta};

/// A chunk of a snapshot being received from the leader, for the driver to write into its
/// partial snapshot file for `meta`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot the chunk belongs to.
    pub meta: SnapshotMeta,
    /// Where `data` goes in the snapshot's bytes. A chunk at offset 0 starts a new partial
    /// file, replacing any other partial snapshot; every other chunk continues the current
    /// one exactly at its end (the core checked the offset and the checksum).
    pub offset: u64,
    /// The bytes to write.
    pub data: Bytes,
    /// The last chunk: the partial file is complete and is installed by a later (or this)
    /// Ready's `snapshot`.
    pub done: bool,
}

/// The leader needs the next chunk of its snapshot `meta` for follower `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotChunkRequest {
    /// The follower the chunk goes to.
    pub to: NodeId,
    /// The leader's snapshot to read from.
    pub meta: SnapshotMeta,
    /// Where the chunk starts in the snapshot's bytes.
    pub offset: u64,
}

/// A read that may be served once the local state machine has applied `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadState {
    /// The id given to [`crate::RawNode::read_index`].
    pub id: ReadId,
    /// The read index: serve the read once `applied >= index`.
    pub index: LogIndex,
}

/// What [`crate::RawNode::take_committed`] gives while a Ready is outstanding: the same
/// kind of work as a Ready's `committed_entries` and `read_states`, arrived since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Committed entries to apply, in log order, each exactly once, after everything
    /// applied before.
    pub entries: Vec<Entry>,
    /// Reads whose read index is known: serve each once the state machine has applied it.
    pub read_states: Vec<ReadState>,
}

impl Committed {
    /// Whether there is nothing to do.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.read_states.is_empty()
    }
}

/// The work a driver must do, taken from [`crate::RawNode::ready`].
///
/// The driver handles it in this order (see the crate docs for the full contract):
/// 1. send `messages` (at any time, even before step 2 finishes); answer
///    `snapshot_chunk_requests` with [`crate::RawNode::send_snapshot_chunk`];
/// 2. persist `hard_state`, write `snapshot_chunks` to the partial snapshot file, install
///    `snapshot` (verify, restore the state machine, make it the durable snapshot), then
///    persist `entries`, durably (fsync);
/// 3. send `persisted_messages`;
/// 4. apply `committed_entries` in order (after the `snapshot` restore), then serve
///    `read_states` whose index is applied, and fail `rejected_reads`; take a snapshot if
///    `snapshot_due` says so;
/// 5. call [`crate::RawNode::advance`].
///
/// Between steps 1 and 5 the driver may also send what [`crate::RawNode::take_messages`]
/// gives: messages of the same kind as `messages`, produced since; and, once step 4 is done,
/// apply what [`crate::RawNode::take_committed`] gives: entries committed since.
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
    /// the candidate's own vote): send them only after step 2 is durable. (An ack that
    /// promises only what an earlier `advance` confirmed durable travels in `messages`.)
    pub persisted_messages: Vec<(NodeId, Message)>,
    /// Committed entries to apply, in log order, each exactly once. They may include entries of
    /// this same Ready, which is why they are applied after step 2.
    pub committed_entries: Vec<Entry>,
    /// Reads whose read index is known.
    pub read_states: Vec<ReadState>,
    /// Reads this node could not serve (it lost or has no leader); the caller may retry.
    pub rejected_reads: Vec<ReadId>,
    /// Leader: followers that need the next chunk of a snapshot. For each, the driver reads at
    /// most `snapshot_chunk_bytes_max` bytes of the snapshot `meta` from `offset` and calls
    /// [`crate::RawNode::send_snapshot_chunk`] (or
    /// [`crate::RawNode::report_snapshot_unavailable`] if it no longer has that snapshot).
    pub snapshot_chunk_requests: Vec<SnapshotChunkRequest>,
    /// Follower: chunks of a snapshot received from the leader, to write (in order) into the
    /// partial snapshot file before `persisted_messages` are sent.
    pub snapshot_chunks: Vec<SnapshotChunk>,
    /// Follower: install this received snapshot. Its bytes are the partial file completed by
    /// `snapshot_chunks` (of this or an earlier Ready). The driver verifies it, restores the
    /// state machine from it, and makes it the durable snapshot, keeping the durable log
    /// after `meta.index` only if the log holds the entry at `meta.index` with `meta.term`
    /// (otherwise the whole log is discarded; Raft §7), all before `entries` are persisted
    /// and before `committed_entries` are applied. The core has already moved its log,
    /// commit and applied indexes to the snapshot. A driver that cannot install it (a disk
    /// error, a file that does not verify) must stop the node, as on a failed fsync.
    pub snapshot: Option<SnapshotMeta>,
    /// Take a snapshot of the state machine once this Ready's `committed_entries` are applied:
    /// it covers the log up to and including `index`, whose term is `term`. Report it with
    /// [`crate::RawNode::on_snapshot_taken`] once it is durable (the log is then compacted),
    /// or [`crate::RawNode::on_snapshot_failed`]. Asked once; no other is asked until then.
    pub snapshot_due: Option<SnapshotMeta>,
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
            && self.snapshot_chunk_requests.is_empty()
            && self.snapshot_chunks.is_empty()
            && self.snapshot.is_none()
            && self.snapshot_due.is_none()
    }
}
