//! The messages Raft nodes exchange, and the log entry they carry.
//!
//! These types are the whole wire vocabulary of the Raft core (Raft §5, Figure 2, extended with
//! PreVote and CheckQuorum from Ongaro's thesis §9.6, fast rollback hints from §5.3, and
//! ReadIndex from §6.4). A message that arrives may be stale, duplicated, reordered or forged;
//! the core validates it in [`crate::RawNode::step`] and never trusts its fields.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use serde::{Deserialize, Serialize};

use crate::membership::Membership;

/// What a log entry holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryPayload {
    /// Appended by a new leader at the start of its term (Raft §8), so that it can commit
    /// entries of earlier terms and serve reads. Not given to the state machine.
    NoOp,
    /// A client command: opaque bytes that only the state machine decodes.
    Command(Bytes),
    /// The cluster's next configuration, in full (one single-server change from the one
    /// before). It takes effect on each node as soon as the node appends it; not given to the
    /// state machine.
    Membership(Membership),
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// The entry's position in the log (1-based).
    pub index: LogIndex,
    /// What the entry carries.
    pub payload: EntryPayload,
}

impl Entry {
    /// The entry's approximate size in bytes, used for batch limits.
    #[must_use]
    pub fn size_bytes(&self) -> usize {
        let payload = match &self.payload {
            EntryPayload::NoOp => 0,
            EntryPayload::Command(command) => command.len(),
            EntryPayload::Membership(membership) => {
                8 * (membership.voters.len() + membership.learners.len())
            }
        };
        24 + payload
    }
}

/// The state that must be durable before a node answers anyone (Raft Figure 2, "persistent
/// state on all servers"), plus the commit index so a restart can replay applied entries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// The candidate this node voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known to be committed.
    pub commit: LogIndex,
    /// Set while this node repairs a log that lost acknowledged entries (protocol-aware
    /// recovery): the storage found synced records damaged and cut them, and this is the
    /// highest term in which the lost entries could have been acknowledged (the durable term
    /// when the damage was found). The node restarts in a later term, does not campaign,
    /// and votes only as its log before the damage would have (see
    /// [`crate::DurableState::log_end_before_damage`]), until its committed log is at least
    /// as up-to-date as that log was (its last committed entry is of a later term, or at or
    /// after where the log ended): every committed entry is back. `None` on a healthy node.
    #[serde(default)]
    pub repairing: Option<Term>,
}

/// Where a snapshot of the state machine stands in the log: it holds the effect of every entry
/// up to and including `index`, whose term was `term`.
///
/// Everything the log below `index` said is in the snapshot, so the log may be compacted below
/// it; `term` lets the consistency check of the next AppendEntries succeed at `index`.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SnapshotMeta {
    /// The last log index whose effect the snapshot holds.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
}

/// A place in a log: the term and index of an entry, ordered as Raft compares how
/// up-to-date two logs are (§5.4.1): by term, then by index.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct LogPosition {
    /// The entry's term.
    pub term: Term,
    /// The entry's index.
    pub index: LogIndex,
}

/// InstallSnapshot RPC arguments (Raft §7, Figure 13), sent in chunks as in the paper and
/// openraft: each chunk carries its byte offset in the snapshot and a CRC-32C of its bytes,
/// so a follower writes it at the right place, detects damage, and resumes after a lost chunk
/// or a change of leader from the offset it reports back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshot {
    /// The leader's term.
    pub term: Term,
    /// Which snapshot this chunk belongs to: its last included index and term.
    pub meta: SnapshotMeta,
    /// Where `data` starts in the snapshot's bytes.
    pub offset: u64,
    /// This chunk's bytes, at most the receiver's `snapshot_chunk_bytes_max`.
    pub data: Bytes,
    /// CRC-32C (Castagnoli) of `data`.
    pub crc32c: u32,
    /// This is the last chunk: the snapshot is `offset + data.len()` bytes long.
    pub done: bool,
    /// The configuration as of `meta.index`, which the snapshot replaces in the log (it is
    /// installed with the snapshot).
    pub membership: Membership,
}

impl InstallSnapshot {
    /// A chunk with its checksum computed.
    #[must_use]
    pub fn new(
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        membership: Membership,
    ) -> Self {
        InstallSnapshot {
            term,
            meta,
            offset,
            crc32c: crc32c::crc32c(&data),
            data,
            done,
            membership,
        }
    }
}

/// InstallSnapshot RPC results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstallSnapshotResponse {
    /// The responder's term.
    pub term: Term,
    /// The snapshot being answered.
    pub meta: SnapshotMeta,
    /// How many bytes of this snapshot the follower holds: the leader continues from there
    /// (0 to start over).
    pub next_offset: u64,
    /// The follower's state covers `meta.index`: it installed this snapshot, or it had
    /// already committed past it. The leader resumes AppendEntries after `meta.index`.
    pub installed: bool,
}

/// Identifies one linearizable read request, chosen by whoever called
/// [`crate::RawNode::read_index`]. The core only echoes it back.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ReadId(pub u64);

/// A message between two Raft nodes. The sender is given separately to
/// [`crate::RawNode::step`]; the receiver by the driver that delivers it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// A (pre-)candidate asks for a vote (Raft §5.2, PreVote thesis §9.6).
    RequestVote(RequestVote),
    /// The answer to a [`RequestVote`].
    RequestVoteResponse(RequestVoteResponse),
    /// The leader replicates entries, or sends a heartbeat when `entries` is empty (Raft §5.3).
    AppendEntries(AppendEntries),
    /// The answer to an [`AppendEntries`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// A follower forwards client commands to the leader it knows.
    Propose(Propose),
    /// A follower asks the leader for a read index (thesis §6.4).
    ReadIndex(ReadIndexRequest),
    /// The leader's answer to a [`ReadIndexRequest`].
    ReadIndexResponse(ReadIndexResponse),
    /// The leader sends one chunk of a snapshot to a follower whose next entry it compacted
    /// (Raft §7).
    InstallSnapshot(InstallSnapshot),
    /// The answer to an [`InstallSnapshot`].
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// The leader hands leadership over: the receiver, caught up, campaigns at once
    /// (thesis §3.10).
    TimeoutNow(TimeoutNow),
}

impl Message {
    /// The sender's term carried by the message.
    #[must_use]
    pub fn term(&self) -> Term {
        match self {
            Message::RequestVote(m) => m.term,
            Message::RequestVoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::Propose(m) => m.term,
            Message::ReadIndex(m) => m.term,
            Message::ReadIndexResponse(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
            Message::InstallSnapshotResponse(m) => m.term,
            Message::TimeoutNow(m) => m.term,
        }
    }
}

/// RequestVote RPC arguments (Raft Figure 2). With `pre_vote`, `term` is the term the sender
/// would campaign in; the receiver changes no state when answering it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVote {
    /// The candidate's term (or, for a pre-vote, the term it would move to).
    pub term: Term,
    /// Index of the candidate's last log entry.
    pub last_log_index: LogIndex,
    /// Term of the candidate's last log entry.
    pub last_log_term: Term,
    /// A pre-vote: "would you vote for me?", without anyone changing term.
    pub pre_vote: bool,
    /// The candidate campaigns because the leader handed leadership to it
    /// ([`Message::TimeoutNow`]): voters answer even though they heard from that leader
    /// recently (the CheckQuorum lease does not hold it back).
    #[serde(default)]
    pub transfer: bool,
}

/// The leader tells a caught-up voter to start an election at once, skipping the pre-vote
/// (leadership transfer, thesis §3.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: Term,
}

/// RequestVote RPC results.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestVoteResponse {
    /// The responder's term; for a granted pre-vote, the term of the request.
    pub term: Term,
    /// Whether the vote (or pre-vote) was granted.
    pub granted: bool,
    /// Answers a pre-vote request.
    pub pre_vote: bool,
}

/// AppendEntries RPC arguments (Raft Figure 2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntries {
    /// The leader's term.
    pub term: Term,
    /// Index of the entry immediately preceding `entries`.
    pub prev_log_index: LogIndex,
    /// Term of the entry at `prev_log_index`.
    pub prev_log_term: Term,
    /// Entries to store, contiguous from `prev_log_index + 1` (empty for a heartbeat).
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: LogIndex,
    /// The leader's latest ReadIndex round when it sent this; echoed back in the response so
    /// the leader can confirm it was still leader when the reads of that round arrived.
    pub read_round: u64,
}

/// AppendEntries RPC results, with the fast-rollback hint of Raft §5.3.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppendEntriesResponse {
    /// The responder's term.
    pub term: Term,
    /// Whether the follower's log matched at `prev_log_index` and it stored the entries.
    pub success: bool,
    /// On success: the index of the last entry the follower now durably matches with the
    /// leader (`prev_log_index + entries.len()` of the request).
    pub match_index: LogIndex,
    /// On failure: where the leader should look next. The first index of `conflict_term` in
    /// the follower's log, or the follower's last index + 1 when its log is too short.
    pub conflict_index: LogIndex,
    /// On failure: the term of the follower's entry at `prev_log_index`, if it has one.
    pub conflict_term: Option<Term>,
    /// The `read_round` of the request being answered.
    pub read_round: u64,
}

/// Client commands forwarded by a follower to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Propose {
    /// The sender's term.
    pub term: Term,
    /// The commands, in the order they were proposed.
    pub commands: Vec<Bytes>,
}

/// A follower asks the leader for a read index for the given reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexRequest {
    /// The sender's term.
    pub term: Term,
    /// The reads waiting on the follower.
    pub ids: Vec<ReadId>,
}

/// The leader's answer to a [`ReadIndexRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadIndexResponse {
    /// The responder's term.
    pub term: Term,
    /// The reads answered.
    pub ids: Vec<ReadId>,
    /// The read index, once the leader confirmed its leadership; `None` if the responder
    /// could not serve the reads (it is not the leader).
    pub index: Option<LogIndex>,
}
