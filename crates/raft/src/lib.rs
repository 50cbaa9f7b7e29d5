//! The Raft core of Chorus: a pure, deterministic, sans-IO state machine.
//!
//! [`RawNode`] implements Raft (Ongaro and Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", and Ongaro's thesis) with PreVote and CheckQuorum (thesis §9.6),
//! pipelined and batched replication with fast conflict rollback (§5.3), a no-op entry at the
//! start of each term with the current-term commit rule (§5.4.2, §8), forwarding of proposals
//! from followers, linearizable reads through ReadIndex on leaders and followers (§6.4), and
//! log compaction with snapshots sent in chunks by InstallSnapshot (§7; thesis chapter 5).
//!
//! It owns no clock, thread, socket or file. A driver (the simulator or the runtime) moves it:
//!
//! # The contract
//!
//! 1. **Input.** The driver calls [`RawNode::tick`] each time logical time moves one tick,
//!    [`RawNode::step`] for each message that arrives, [`RawNode::propose`] for each client
//!    command and [`RawNode::read_index`] for each linearizable read. With
//!    [`Config::lease_reads`] the ticks are a clock that safety rests on: every node's ticks
//!    must keep within `clock_drift_bound_ppm` of true time's rate, and a driver whose tick
//!    is more than half a tick late calls [`RawNode::drop_lease`] before it steps any input,
//!    ticks or takes a Ready.
//! 2. **Output.** When [`RawNode::has_ready`] is true, the driver takes [`RawNode::ready`]
//!    and handles the [`Ready`] in this order:
//!    1. send `messages` (they do not depend on durability: a leader may replicate entries
//!       before its own copy is durable). For each of `snapshot_chunk_requests`, read at most
//!       `snapshot_chunk_bytes_max` bytes of that snapshot from that offset and hand them to
//!       [`RawNode::send_snapshot_chunk`] (the chunk leaves with the next Ready);
//!    2. persist `hard_state`; write `snapshot_chunks` in order into the partial snapshot file
//!       (a chunk at offset 0 starts a new one); if `snapshot` is set, install it: verify the
//!       complete file, restore the state machine from it, make it the durable snapshot, and
//!       drop the durable log up to it (all of it, unless the log holds the snapshot's last
//!       entry with the same term: then keep what follows, Raft §7); then persist `entries`
//!       (truncating a conflicting suffix first). Make all of it durable, except that a
//!       hard state whose term and vote are already durable (only `commit` moved) may be
//!       written without a sync of its own: the commit index is volatile state in Raft
//!       (Figure 2), so a restart may come back with a lower one, never below the snapshot,
//!       and learns the rest from the leader. A driver that
//!       cannot install a snapshot (disk error, a file that does not verify) stops the node,
//!       as on a failed fsync; the leader sends it again after the restart;
//!    3. send `persisted_messages` (votes, acks and snapshot acks promise durable state);
//!    4. apply `committed_entries` in order, serve `read_states` once applied, fail
//!       `rejected_reads`. A `snapshot` of this Ready is restored first: the entries follow
//!       it. If `snapshot_due` is set, take a snapshot of the state machine once these entries
//!       are applied (at exactly that index), make it durable (off the critical path if it
//!       likes: [`chorus_core::StateMachine::snapshot`] is cheap to take and written
//!       elsewhere), and report it with [`RawNode::on_snapshot_taken`], which compacts the
//!       log below it keeping `compaction_tail_entries`; the driver then deletes its durable
//!       entries below [`RawNode::first_index`]. On failure, call
//!       [`RawNode::on_snapshot_failed`]; the node asks again later;
//!    5. call [`RawNode::advance`].
//!
//!    Step 4 may also come before step 2, or run beside it: every committed entry is already
//!    durable on a majority (a leader counts its own copy only once `advance` confirmed it),
//!    so applying it and answering its client never waits on this node's disk. Only the
//!    messages of step 3 must wait. (With a `snapshot`, its chunks are written and the state
//!    machine restored from it before any of `committed_entries` is applied.)
//! 3. **One Ready at a time.** Between `ready` and `advance` the driver may keep calling
//!    `tick`, `step`, `propose`, `read_index`, `send_snapshot_chunk` and `on_snapshot_taken`;
//!    their output waits for the next Ready, except the messages that do not depend on
//!    durability: the driver may take those at any time with [`RawNode::take_messages`] and
//!    send them at once. So a driver that persists on another thread (asynchronous storage
//!    writes) keeps heartbeating, replicating new proposals, answering ReadIndex rounds,
//!    pre-voting and forwarding proposals while its disk is slow, and a stalled fsync on a
//!    leader does not stop its heartbeats. Likewise, once it has applied the outstanding
//!    Ready's `committed_entries`, it may apply what [`RawNode::take_committed`] gives
//!    (entries committed since, durable on a majority, and reads whose index became known),
//!    so a leader answers a batch its followers acknowledged without waiting for its own
//!    write of the next batch; nothing is given while that Ready installs or asks for a
//!    snapshot. Votes and acks of what is not durable yet never
//!    leave that way: they wait for the next Ready's `persisted_messages`. An ack that
//!    promises only what `advance` already confirmed durable (a heartbeat at the follower's
//!    durable match index, in a term already durable, with no snapshot install out) is such
//!    a message, so a follower whose disk hangs still answers heartbeats and read rounds.
//!    `has_ready` is false while a Ready is outstanding, and `ready` panics then.
//! 4. **Durability.** A leader counts its own log toward a commit majority only up to what
//!    `advance` confirmed durable. Readies are persisted in the order they were taken, so an
//!    ack in a later Ready never promises more than is on disk. Committed entries may
//!    therefore advance while the leader's own write is outstanding (a majority of followers
//!    made them durable), and leave with the next Ready.
//! 5. **Restart.** After a crash the driver builds a new node with [`RawNode::restart`] from
//!    what was durable: the hard state, the newest durable snapshot's [`SnapshotMeta`] and
//!    the durable log (which may keep a tail below the snapshot). It restores the state
//!    machine from that snapshot (or starts a fresh one without), and the first Ready replays
//!    the committed entries after it. A partial snapshot file is discarded. A storage that
//!    found synced records damaged (so the node may have lost entries it acknowledged) sets
//!    [`HardState::repairing`], and gives where the log ended before the damage if it knows
//!    ([`DurableState::log_end_before_damage`]); the node then restarts in a later term,
//!    does not campaign, and votes only as its log before the damage would have, until a
//!    leader has brought its committed log back past that point.
//!
//! # Snapshots and compaction
//!
//! The log is a window: entries below [`RawNode::first_index`] are gone, covered by the
//! snapshot ([`RawNode::snapshot`]). Compaction never passes the snapshot, the applied index,
//! the commit index or what is durable. A leader whose follower needs a compacted entry sends
//! it the snapshot in chunks of at most `snapshot_chunk_bytes_max` bytes, each with a
//! CRC-32C, one at a time; the follower writes each chunk (through its driver) only if it
//! continues the partial snapshot exactly, answers with the offset it holds (so a lost chunk
//! or a new leader resumes there), and installs the snapshot only once complete. A snapshot at
//! or below what the follower already committed is acknowledged and ignored: nothing rolls a
//! node back. The core never holds snapshot bytes beyond one chunk in a message.
//!
//! When to snapshot is the core's call (`snapshot_due`, from `snapshot_threshold_entries` and
//! `snapshot_threshold_bytes`); a driver may hold both thresholds back until the log since the
//! last snapshot is at least as large as that snapshot ([`RawNode::set_snapshot_bytes_floor`],
//! given the snapshot file's size after each one taken or installed), so that a large state is
//! not rewritten after a log much smaller than itself.
//!
//! # Robustness
//!
//! Messages may be stale, duplicated, reordered or forged. `step` validates each one: stale
//! messages are ignored, malformed ones return a [`StepError`] and leave the node unchanged.
//! No input from the network makes the core panic; assertions guard only its own invariants.

mod config;
mod log;
mod membership;
mod message;
mod node;
mod progress;
mod read_only;
mod ready;

pub use config::{Config, ConfigError, InjectedBugs, SNAPSHOT_CHUNK_BYTES_LIMIT};
pub use membership::{MEMBERS_MAX, Membership, MembershipChange, MembershipError};
pub use message::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotResponse, LogPosition, Message, Propose, ReadId, ReadIndexRequest,
    ReadIndexResponse, RequestVote, RequestVoteResponse, SnapshotMeta, TimeoutNow,
};
pub use node::{
    DurableState, ProposeError, Proposed, RawNode, ReadError, Role, SNAPSHOT_INDEX_MAX,
    SnapshotError, Status, StepError, TERM_MAX, TransferError,
};
pub use ready::{Committed, ReadState, Ready, SnapshotChunk, SnapshotChunkRequest};
