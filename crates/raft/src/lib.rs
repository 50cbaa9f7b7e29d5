//! The Raft core of Chorus: a pure, deterministic, sans-IO state machine.
//!
//! [`RawNode`] implements Raft (Ongaro and Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", and Ongaro's thesis) with PreVote and CheckQuorum (thesis §9.6),
//! pipelined and batched replication with fast conflict rollback (§5.3), a no-op entry at the
//! start of each term with the current-term commit rule (§5.4.2, §8), forwarding of proposals
//! from followers, and linearizable reads through ReadIndex on leaders and followers (§6.4).
//!
//! It owns no clock, thread, socket or file. A driver (the simulator or the runtime) moves it:
//!
//! # The contract
//!
//! 1. **Input.** The driver calls [`RawNode::tick`] each time logical time moves one tick,
//!    [`RawNode::step`] for each message that arrives, [`RawNode::propose`] for each client
//!    command and [`RawNode::read_index`] for each linearizable read.
//! 2. **Output.** When [`RawNode::has_ready`] is true, the driver takes [`RawNode::ready`]
//!    and handles the [`Ready`] in this order:
//!    1. send `messages` (they do not depend on durability: a leader may replicate entries
//!       before its own copy is durable);
//!    2. persist `hard_state`, then `entries` (truncating a conflicting suffix first), and make
//!       them durable;
//!    3. send `persisted_messages` (votes and acks promise durable state);
//!    4. apply `committed_entries` in order, serve `read_states` once applied, fail
//!       `rejected_reads`;
//!    5. call [`RawNode::advance`].
//!
//!    Step 4 may also come before step 2, or run beside it: every committed entry is already
//!    durable on a majority (a leader counts its own copy only once `advance` confirmed it),
//!    so applying it and answering its client never waits on this node's disk. Only the
//!    messages of step 3 must wait.
//! 3. **One Ready at a time.** Between `ready` and `advance` the driver may keep calling
//!    `tick`, `step`, `propose` and `read_index`; their output waits for the next Ready.
//!    `has_ready` is false while a Ready is outstanding, and `ready` panics then.
//! 4. **Durability.** A leader counts its own log toward a commit majority only up to what
//!    `advance` confirmed durable. Readies are persisted in the order they were taken, so an
//!    ack in a later Ready never promises more than is on disk.
//! 5. **Restart.** After a crash the driver builds a new node with [`RawNode::restart`] from
//!    what was durable. The first Ready then replays committed entries from index 1 into a fresh
//!    state machine.
//!
//! # Robustness
//!
//! Messages may be stale, duplicated, reordered or forged. `step` validates each one: stale
//! messages are ignored, malformed ones return a [`StepError`] and leave the node unchanged.
//! No input from the network makes the core panic; assertions guard only its own invariants.

mod config;
mod log;
mod message;
mod node;
mod progress;
mod read_only;
mod ready;

pub use config::{Config, ConfigError, InjectedBugs, SNAPSHOT_CHUNK_BYTES_LIMIT};
pub use message::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotResponse, Message, Propose, ReadId, ReadIndexRequest, ReadIndexResponse,
    RequestVote, RequestVoteResponse, SnapshotMeta,
};
pub use node::{
    DurableState, ProposeError, Proposed, RawNode, ReadError, Role, SNAPSHOT_INDEX_MAX,
    SnapshotError, Status, StepError, TERM_MAX,
};
pub use ready::{ReadState, Ready, SnapshotChunk, SnapshotChunkRequest};
