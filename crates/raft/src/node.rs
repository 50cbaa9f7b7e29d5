//! [`RawNode`]: the Raft state machine itself.
//!
//! One struct holds a node's whole state; its handlers follow the papers' names
//! (`on_append_entries`, `on_request_vote`, `become_leader`, ...). The log lives in
//! [`crate::log`], a leader's view of each follower in [`crate::progress`], and its pending
//! reads in [`crate::read_only`].
//!
//! Invariants kept here (checked with `assert!` where cheap): the term never decreases; a node
//! votes at most once per term; a leader never truncates its log; the commit index never
//! decreases and never passes the log's end; exactly one Ready is outstanding at a time.
//! Messages are validated in full before any state changes, so a refused message leaves the
//! node exactly as it was.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};

use crate::config::{Config, ConfigError};
use crate::log::{Installed, RaftLog};
use crate::membership::{Configurations, Membership, MembershipChange, MembershipError};
use crate::message::{
    AppendEntries, AppendEntriesResponse, Entry, EntryPayload, HardState, InstallSnapshot,
    InstallSnapshotResponse, LogPosition, Message, Propose, ReadId, ReadIndexRequest,
    ReadIndexResponse, RequestVote, RequestVoteResponse, SnapshotMeta, TimeoutNow,
};
use crate::progress::{Progress, ReplicationState};
use crate::read_only::{LeaderReads, PendingRead, Requester};
use crate::ready::{Committed, ReadState, Ready, SnapshotChunk, SnapshotChunkRequest};

/// The highest term a message may carry; anything above is forged or corrupt.
pub const TERM_MAX: Term = Term(1 << 62);

/// The highest snapshot index a message may carry; anything above is forged or corrupt (no
/// honest log reaches it, and a log moved there by a forged snapshot would overflow).
pub const SNAPSHOT_INDEX_MAX: LogIndex = LogIndex(1 << 62);

/// The role a node plays in its current term (Raft §5.1, PreVote thesis §9.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asks for pre-votes before it would start an election; its term has not moved.
    PreCandidate,
    /// Asks for votes in a new term.
    Candidate,
    /// Replicates its log and commits entries.
    Leader,
}

/// A read-only view of a node, for drivers, admin pages and checkers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: Term,
    /// Whom it voted for in `term`.
    pub vote: Option<NodeId>,
    /// The leader it knows of in `term`.
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub commit: LogIndex,
    /// The last index handed out for applying.
    pub applied: LogIndex,
    /// The index of its last log entry (durable or not).
    pub last_index: LogIndex,
    /// The index of the last entry `advance` confirmed durable.
    pub persisted_index: LogIndex,
    /// While the node repairs a log that lost acknowledged entries, the term in which they
    /// could have been acknowledged (see [`HardState::repairing`]); until it is repaired it
    /// does not campaign, and votes only as its log before the damage would have.
    pub repairing: Option<Term>,
}

/// What was durable when a node stopped, given to [`RawNode::restart`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The newest durable snapshot's place in the log, if the node has taken or installed one.
    pub snapshot: Option<SnapshotMeta>,
    /// The durable log, contiguous. Without a snapshot it starts at index 1; with one it starts
    /// at or below `snapshot.index + 1` (a compacted log keeps a tail below the snapshot) and
    /// may be empty.
    pub entries: Vec<Entry>,
    /// The configuration stored with `snapshot` (as of its index). `None` without a snapshot,
    /// or for a snapshot written before configurations were stored: the node then starts
    /// from `Config::voters`.
    pub membership: Option<Membership>,
    /// While [`HardState::repairing`] is set: where the log ended before the damage cut it
    /// (the last entry it held, or a place at or after it), if the storage knows. The node
    /// grants its vote only to candidates whose log is at least as up-to-date as that, as its
    /// log before the damage would have; unknown (`None`), only to candidates whose last entry
    /// is of a term after [`HardState::repairing`]. Ignored when not repairing.
    pub log_end_before_damage: Option<LogPosition>,
}

/// How a proposal was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proposed {
    /// This node is the leader and appended the command at this index and term.
    Appended {
        /// Where the command sits in the log.
        index: LogIndex,
        /// The leader's term.
        term: Term,
    },
    /// This node forwards the command to the leader it knows of.
    Forwarded {
        /// The leader the command goes to.
        leader: NodeId,
    },
}

/// A proposal was refused. It did not enter any log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// No leader is known; try again later or elsewhere.
    #[error("no leader is known")]
    NoLeader,
    /// Too many proposals wait for forwarding.
    #[error("too many proposals are pending")]
    TooManyPending,
    /// The leader is handing leadership over; propose to the next leader.
    #[error("a leadership transfer is in progress")]
    TransferInProgress,
}

/// A leadership transfer was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// Only the leader hands leadership over.
    #[error("this node is not the leader")]
    NotLeader,
    /// The target is not a voter of the current configuration (or is this node).
    #[error("node {0} is not a voter that could lead")]
    NotAVoter(NodeId),
    /// Another transfer is in progress.
    #[error("a transfer to node {0} is in progress")]
    Pending(NodeId),
}

/// A leadership transfer in progress (thesis §3.10).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Transfer {
    target: NodeId,
    /// Ticks since it began: abandoned after an election timeout.
    elapsed_ticks: u64,
}

/// A read was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// No leader is known; try again later or elsewhere.
    #[error("no leader is known")]
    NoLeader,
    /// Too many reads wait for a read index.
    #[error("too many reads are pending")]
    TooManyPending,
}

/// A snapshot report or chunk from the driver was refused. The node's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The snapshot is newer than what was applied, or its term does not match the log.
    #[error("snapshot at {index} (term {term}) does not match the applied log")]
    Mismatch {
        /// The snapshot's last index.
        index: LogIndex,
        /// The snapshot's term.
        term: Term,
    },
    /// No chunk of this snapshot at this offset is expected for this follower (it was
    /// answered, the follower moved on, or this node is no longer the leader). Drop it.
    #[error("no snapshot chunk is expected for {0} here")]
    UnexpectedChunk(NodeId),
    /// The chunk is larger than `snapshot_chunk_bytes_max`.
    #[error("a snapshot chunk of {0} bytes exceeds snapshot_chunk_bytes_max")]
    ChunkTooLarge(usize),
}

/// A snapshot a follower is receiving, chunk by chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Receiving {
    meta: SnapshotMeta,
    /// The term of the leader that started sending it.
    term: Term,
    /// The bytes received so far, all handed to the driver in order.
    next_offset: u64,
}

/// A message was refused as malformed or foreign. The node's state is unchanged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The sender is not a member of the cluster (or is this node itself).
    #[error("message from unknown node {0}")]
    UnknownPeer(NodeId),
    /// The message contradicts itself (for example, entries that are not contiguous).
    #[error("malformed message: {0}")]
    Malformed(&'static str),
}

/// At most this many committed entries are handed out in one Ready, so that one Ready after a
/// restart does not copy the whole log.
const COMMITTED_ENTRIES_MAX: usize = 4096;

/// A leader remembers at most this many unanswered read rounds for its lease; older ones are
/// forgotten, which can only shorten the lease.
const LEASE_ROUNDS_MAX: usize = 256;

/// One Raft node. See the crate docs for the driving contract.
#[derive(Debug)]
pub struct RawNode {
    config: Config,
    /// Every configuration the log (and the snapshot) holds; the newest is in force.
    configurations: Configurations,
    /// The configuration in force, as last applied to `peers`, `quorum` and `progress`.
    active: Membership,
    /// The other members, voters and learners, sorted, so that every iteration over them is
    /// deterministic.
    peers: Vec<NodeId>,
    /// Votes (or acknowledgements) that make a majority of the voters in force.
    quorum: usize,
    /// Leader: a leadership transfer in progress.
    transfer: Option<Transfer>,
    /// Draws the randomized election timeouts (Raft §5.2).
    prng: Prng,

    role: Role,
    term: Term,
    vote: Option<NodeId>,
    leader: Option<NodeId>,
    log: RaftLog,

    /// Ticks since the election timer was reset; on a leader, ticks since the last CheckQuorum.
    election_elapsed: u64,
    /// The current election timeout, in `election_timeout_ticks..2 * election_timeout_ticks`.
    election_timeout_randomized: u64,
    /// Leader: ticks since the last heartbeat broadcast.
    heartbeat_elapsed: u64,
    /// (Pre-)candidate: the answers received in this election, this node included.
    votes: BTreeMap<NodeId, bool>,

    /// Leader: what it knows of each follower.
    progress: BTreeMap<NodeId, Progress>,
    /// Leader: send every follower an AppendEntries when the next Ready is assembled
    /// (heartbeat due, commit index moved, or a read round started).
    broadcast_pending: bool,
    /// Leader: the latest ReadIndex round started (monotonic across terms).
    read_round: u64,
    /// Leader: reads waiting for a read index.
    leader_reads: LeaderReads,
    /// Ticks since this node started (its own clock, for the read lease).
    clock: u64,
    /// Leader with `lease_reads`: reads are served at once while `clock < lease_until`.
    lease_until: u64,
    /// Leader with `lease_reads`: the read rounds started and not yet answered by a quorum,
    /// with the clock at their start, oldest first (bounded by [`LEASE_ROUNDS_MAX`]).
    lease_rounds: VecDeque<(u64, u64)>,
    /// Leader: it sent TimeoutNow in this term, so a voter may elect the target at once,
    /// lease or not; no lease is used again in this term.
    lease_forfeited: bool,
    /// With `lease_reads`: this node helps elect nobody (no vote, no pre-vote, no campaign)
    /// while `clock < promise_until`, set an election timeout past every message of its
    /// leader. Kept across term changes: a stray message of a higher term must not free a
    /// follower from the promise a leader's lease rests on.
    promise_until: u64,

    /// Follower: commands to forward to the leader with the next Ready.
    proposals_to_forward: Vec<Bytes>,
    /// Follower: reads to forward to the leader with the next Ready.
    reads_to_forward: Vec<ReadId>,
    /// Follower: reads forwarded to `leader` and not yet answered.
    reads_forwarded: Vec<ReadId>,

    // The output waiting for the next Ready.
    messages: Vec<(NodeId, Message)>,
    persisted_messages: Vec<(NodeId, Message)>,
    read_states: Vec<ReadState>,
    rejected_reads: Vec<ReadId>,

    /// A snapshot was asked of the driver (`Ready::snapshot_due`) and not yet reported.
    snapshot_requested: bool,
    /// The driver asked for a snapshot regardless of the thresholds
    /// ([`RawNode::request_snapshot`]).
    snapshot_forced: bool,
    /// Bytes of entries handed out for applying since the last snapshot.
    bytes_since_snapshot: u64,
    /// The snapshot last asked for by `Ready::snapshot_due`, and `bytes_since_snapshot` when
    /// it was asked: the bytes that snapshot covers. Entries applied while it is written are
    /// not in it, so they stay counted toward the next one.
    snapshot_due_bytes: Option<(LogIndex, u64)>,
    /// Neither threshold asks for a snapshot before `bytes_since_snapshot` reaches this
    /// ([`RawNode::set_snapshot_bytes_floor`]).
    snapshot_bytes_floor: u64,
    /// Follower: the snapshot being received.
    receiving: Option<Receiving>,
    /// Follower: a completely received snapshot and its configuration, installed when the
    /// next Ready is assembled.
    install_pending: Option<(SnapshotMeta, Membership)>,
    /// Follower: chunks to hand to the driver with the next Ready.
    snapshot_chunks: Vec<SnapshotChunk>,
    /// Leader: chunks to ask of the driver with the next Ready.
    snapshot_chunk_requests: Vec<SnapshotChunkRequest>,

    /// The hard state most recently handed out (or given at restart).
    hard_state_handed: HardState,
    /// The term of the hard state `advance` last confirmed durable (or given at restart).
    term_durable: Term,
    /// The term of the hard state handed out by the outstanding Ready, and whether that Ready
    /// installs a received snapshot (durable only once it is advanced).
    persisting: Option<(Term, bool)>,
    /// A Ready was taken and not yet advanced.
    ready_outstanding: bool,
    /// The outstanding Ready installs a received snapshot or asks for one to be taken: until
    /// it is advanced, [`RawNode::take_committed`] hands out nothing (the state machine must
    /// stand exactly at the snapshot's index when the driver restores or takes it).
    apply_held: bool,
    /// See [`HardState::repairing`].
    repairing: Option<Term>,
    /// While repairing: see [`DurableState::log_end_before_damage`].
    log_end_before_damage: Option<LogPosition>,
}

impl RawNode {
    /// A new node with an empty log.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration cannot work.
    pub fn new(config: Config) -> Result<RawNode, ConfigError> {
        RawNode::restart(config, DurableState::default())
    }

    /// A node that resumes from what was durable before it stopped.
    ///
    /// The durable log may hold entries of a term newer than the durable hard state (a crash
    /// can keep the entries but lose the hard-state write that followed them): the node then
    /// resumes in the last entry's term, without a vote. The commit index is clamped to the
    /// log.
    ///
    /// With a durable snapshot, the log starts after it (keeping any durable tail below it),
    /// commit and applied start at the snapshot's index, and the driver restores the state
    /// machine from the snapshot before it takes the first Ready, which replays only the
    /// committed entries after the snapshot. Without one, the first Ready replays committed
    /// entries from index 1.
    ///
    /// # Errors
    /// [`ConfigError`] if the configuration cannot work, or
    /// [`ConfigError::CorruptDurableState`] if the entries are not contiguous (from index 1,
    /// or from at most `snapshot.index + 1`), their terms decrease, or they contradict the
    /// snapshot.
    pub fn restart(config: Config, durable: DurableState) -> Result<RawNode, ConfigError> {
        config.validate()?;
        let DurableState {
            hard_state,
            snapshot,
            entries,
            membership,
            log_end_before_damage,
        } = durable;
        if membership
            .as_ref()
            .is_some_and(|membership| !membership.is_valid())
        {
            return Err(ConfigError::CorruptDurableState(
                "the snapshot's configuration is malformed",
            ));
        }
        let snapshot_index = snapshot.map_or(LogIndex(0), |meta| meta.index);
        let mut configurations = Configurations::new(
            snapshot_index,
            membership.unwrap_or_else(|| Membership::with_voters(config.voters.iter().copied())),
        );
        for entry in &entries {
            if let EntryPayload::Membership(membership) = &entry.payload {
                if entry.index > snapshot_index {
                    if !membership.is_valid() {
                        return Err(ConfigError::CorruptDurableState(
                            "a configuration entry is malformed",
                        ));
                    }
                    if entry.index > configurations.latest_index() {
                        configurations.append(entry.index, membership.clone());
                    }
                }
            }
        }
        if snapshot.is_some_and(|meta| meta.term > TERM_MAX || meta.index > SNAPSHOT_INDEX_MAX) {
            return Err(ConfigError::CorruptDurableState(
                "a term beyond any reachable value",
            ));
        }
        let log = RaftLog::restore(snapshot, entries, hard_state.commit)
            .map_err(ConfigError::CorruptDurableState)?;
        if hard_state.term > TERM_MAX || log.last_term() > TERM_MAX {
            return Err(ConfigError::CorruptDurableState(
                "a term beyond any reachable value",
            ));
        }
        let mut term = hard_state
            .term
            .max(log.last_term())
            .max(log.snapshot().term);
        // A node that lost acknowledged entries resumes in a term after the one it could have
        // acknowledged them in: a leader of that term may still count them in this node's
        // match index, and must step down when it hears of the later term.
        if let Some(repairing) = hard_state.repairing {
            if repairing > TERM_MAX {
                return Err(ConfigError::CorruptDurableState(
                    "a term beyond any reachable value",
                ));
            }
            term = term.max(repairing.next());
            if log_end_before_damage.is_some_and(|before| before.term > TERM_MAX) {
                return Err(ConfigError::CorruptDurableState(
                    "a term beyond any reachable value",
                ));
            }
        }
        // A vote binds only the term it was cast in.
        let vote = hard_state.vote.filter(|_| hard_state.term == term);

        // Each node draws its own sequence from the shared seed (the golden-ratio multiplier
        // spreads small ids over all bits).
        let prng = Prng::new(config.seed ^ config.id.0.wrapping_mul(0x9E37_79B9_7F4A_7C15));

        let mut node = RawNode {
            config,
            configurations,
            active: Membership::default(),
            peers: Vec::new(),
            quorum: 1,
            transfer: None,
            prng,
            role: Role::Follower,
            term,
            vote,
            leader: None,
            log,
            election_elapsed: 0,
            election_timeout_randomized: 0,
            heartbeat_elapsed: 0,
            votes: BTreeMap::new(),
            progress: BTreeMap::new(),
            broadcast_pending: false,
            read_round: 0,
            clock: 0,
            lease_until: 0,
            lease_rounds: VecDeque::new(),
            lease_forfeited: false,
            promise_until: 0,
            leader_reads: LeaderReads::default(),
            proposals_to_forward: Vec::new(),
            reads_to_forward: Vec::new(),
            reads_forwarded: Vec::new(),
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            rejected_reads: Vec::new(),
            snapshot_requested: false,
            snapshot_forced: false,
            bytes_since_snapshot: 0,
            snapshot_due_bytes: None,
            snapshot_bytes_floor: 0,
            receiving: None,
            install_pending: None,
            snapshot_chunks: Vec::new(),
            snapshot_chunk_requests: Vec::new(),
            hard_state_handed: hard_state,
            term_durable: hard_state.term,
            persisting: None,
            ready_outstanding: false,
            apply_held: false,
            repairing: hard_state.repairing,
            log_end_before_damage: log_end_before_damage.filter(|_| hard_state.repairing.is_some()),
        };
        node.refresh_membership();
        node.finish_repair_if_done();
        if node.repairing.is_some() && node.quorum == 1 && node.is_voter() {
            return Err(ConfigError::CorruptDurableState(
                "acknowledged log entries were damaged, and a cluster of one voter has no peer \
                 to repair them from",
            ));
        }
        node.reset_election_timer();
        Ok(node)
    }

    /// Logical time moved one tick.
    pub fn tick(&mut self) {
        self.clock = self.clock.saturating_add(1);
        if self.role == Role::Leader {
            self.tick_leader();
            return;
        }
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.install_pending.is_some() {
            // A received snapshot is installed with the next Ready, and its acknowledgement
            // is already queued: no election until then (a candidate must not switch logs).
            return;
        }
        if self.election_elapsed >= self.election_timeout_randomized {
            if self.is_voter() && !self.abstains() {
                self.on_election_timeout();
            } else {
                // Learners and removed nodes never campaign: they cannot win, and a removed
                // node must not disturb the cluster it left. Nor does a node repairing lost
                // entries: its log may lack committed ones. A silent leader is forgotten, so
                // that clients go elsewhere.
                self.set_leader(None);
                self.reset_election_timer();
            }
        }
    }

    /// A message arrived from `from`.
    ///
    /// # Errors
    /// [`StepError`] if the message is malformed or its sender unknown; the node is unchanged.
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        // Messages from nodes outside the configuration are taken: a new leader may not be
        // in this node's configuration yet, nor a new member's answers in the leader's.
        if from == self.config.id || from == NodeId(0) {
            return Err(StepError::UnknownPeer(from));
        }
        // Every check that can refuse the message runs before anything changes.
        self.validate(from, &message)?;

        let term = message.term();
        if self.config.lease_reads
            && term == self.term
            && self.vote.is_none_or(|vote| vote != from)
            && matches!(&message, Message::RequestVote(request) if !request.transfer)
            && self.in_lease()
        {
            // A node that moved to this term without a leader (a stray message of the term)
            // still keeps its promise to the leader whose lease may hold.
            return Ok(());
        }
        if term > self.term {
            // A candidate the leader handed leadership to is not disruptive.
            let is_vote_request = matches!(
                &message,
                Message::RequestVote(request) if !request.transfer
            );
            if is_vote_request && self.in_lease() {
                // CheckQuorum (thesis §9.6): we heard from a live leader within the minimum
                // election timeout, so this candidate is disruptive; ignore it, term included.
                return Ok(());
            }
            // A pre-vote changes nobody's term: neither the request nor a granted answer
            // (which carries the term the pre-candidate would move to).
            let keeps_term = match &message {
                Message::RequestVote(request) => request.pre_vote,
                Message::RequestVoteResponse(response) => response.pre_vote && response.granted,
                _ => false,
            };
            if !keeps_term {
                // Raft §5.1: a higher term makes us a follower in it. Only an AppendEntries
                // tells us who leads it.
                let leader = matches!(
                    message,
                    Message::AppendEntries(_) | Message::InstallSnapshot(_)
                )
                .then_some(from);
                self.become_follower(term, leader);
            }
        }
        if self.role == Role::Leader && term == self.term {
            if let Some(progress) = self.progress.get_mut(&from) {
                progress.recent_active = true;
            }
        }

        match message {
            Message::RequestVote(request) => self.on_request_vote(from, &request),
            Message::RequestVoteResponse(response) => {
                self.on_request_vote_response(from, &response);
            }
            Message::AppendEntries(request) => self.on_append_entries(from, request),
            Message::AppendEntriesResponse(response) => {
                self.on_append_entries_response(from, &response);
            }
            Message::Propose(propose) => self.on_propose(from, propose),
            Message::ReadIndex(request) => self.on_read_index_request(from, request),
            Message::ReadIndexResponse(response) => self.on_read_index_response(from, &response),
            Message::InstallSnapshot(request) => self.on_install_snapshot(from, request),
            Message::InstallSnapshotResponse(response) => {
                self.on_install_snapshot_response(from, &response);
            }
            Message::TimeoutNow(request) => self.on_timeout_now(from, &request),
        }
        self.refresh_membership();
        Ok(())
    }

    /// A client asks to replicate `command`.
    ///
    /// A leader appends it to its log (it is replicated when the next Ready is assembled, so
    /// proposals between two Readies travel together). A follower that knows the leader
    /// buffers it and forwards it with the next Ready.
    ///
    /// # Errors
    /// [`ProposeError`] if the command cannot be taken now; it entered no log.
    pub fn propose(&mut self, command: Bytes) -> Result<Proposed, ProposeError> {
        match self.role {
            Role::Leader => {
                if self.transfer.is_some() {
                    return Err(ProposeError::TransferInProgress);
                }
                if self.uncommitted_len() >= self.config.proposals_pending_max {
                    return Err(ProposeError::TooManyPending);
                }
                let index = self.log.append(self.term, EntryPayload::Command(command));
                Ok(Proposed::Appended {
                    index,
                    term: self.term,
                })
            }
            Role::Follower => {
                let Some(leader) = self.leader else {
                    return Err(ProposeError::NoLeader);
                };
                if self.proposals_to_forward.len() >= self.config.proposals_pending_max {
                    return Err(ProposeError::TooManyPending);
                }
                self.proposals_to_forward.push(command);
                Ok(Proposed::Forwarded { leader })
            }
            Role::PreCandidate | Role::Candidate => Err(ProposeError::NoLeader),
        }
    }

    /// A client asks for a linearizable read, named `id`. A later Ready carries either a
    /// [`crate::ReadState`] or a rejection for it (or, if messages are lost, nothing: the caller
    /// times out).
    ///
    /// # Errors
    /// [`ReadError`] if the read cannot be started now.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        if self.config.injected_bugs().read_without_read_index {
            // Deliberate bug: serve from whatever this node believes is committed.
            self.read_states.push(ReadState {
                id,
                index: self.log.commit(),
            });
            return Ok(());
        }
        match self.role {
            Role::Leader => {
                if self.lease_valid() {
                    // Thesis §6.4.1: no other leader can exist before the lease runs out.
                    self.read_states.push(ReadState {
                        id,
                        index: self.log.commit(),
                    });
                    return Ok(());
                }
                if self.leader_reads.len() >= self.config.reads_pending_max {
                    return Err(ReadError::TooManyPending);
                }
                self.leader_reads.add(PendingRead {
                    requester: Requester::Local,
                    id,
                });
                Ok(())
            }
            Role::Follower if self.leader.is_some() => {
                let pending = self.reads_to_forward.len() + self.reads_forwarded.len();
                if pending >= self.config.reads_pending_max {
                    return Err(ReadError::TooManyPending);
                }
                self.reads_to_forward.push(id);
                Ok(())
            }
            Role::Follower | Role::PreCandidate | Role::Candidate => Err(ReadError::NoLeader),
        }
    }

    /// Starts an election at once (for tests and leadership hand-over). It skips the pre-vote
    /// round: the caller asks for this election on purpose. Does nothing on a leader.
    pub fn campaign(&mut self) {
        // With read leases a node that hears from a leader must not help depose it early,
        // even on request: that leader may be serving reads from its lease.
        let lease_held = self.config.lease_reads && self.in_lease();
        if self.role != Role::Leader
            && !lease_held
            && self.install_pending.is_none()
            && self.is_voter()
            && !self.abstains()
        {
            self.become_candidate(false);
        }
    }

    /// Leader: proposes one single-server membership change (thesis §4.1). The new
    /// configuration takes effect on every node as soon as it appends the entry; the change is
    /// done once it commits ([`RawNode::membership_committed`]). A leader that removes itself
    /// keeps leading until the change commits, without counting itself, then steps down.
    ///
    /// # Errors
    /// [`MembershipError`] if this node is not the leader, has not committed an entry of its
    /// term yet (Ongaro's 2015 fix), another change is uncommitted, a leadership transfer is
    /// in progress, a learner to promote lags by more than `promote_lag_entries_max`, or the
    /// change does not apply. Nothing entered the log then.
    pub fn propose_membership(
        &mut self,
        change: MembershipChange,
    ) -> Result<LogIndex, MembershipError> {
        if self.role != Role::Leader {
            return Err(MembershipError::NotLeader);
        }
        if self.transfer.is_some() {
            return Err(MembershipError::TransferPending);
        }
        let overlap = self.config.injected_bugs().overlapping_membership_changes;
        if !self.has_committed_in_term() && !overlap {
            return Err(MembershipError::NotCommittedInTerm);
        }
        if self.configurations.latest_index() > self.log.commit() && !overlap {
            return Err(MembershipError::ChangePending);
        }
        let next = self.configurations.latest().apply(change)?;
        if let MembershipChange::Promote(id) = change {
            let matched = self
                .progress
                .get(&id)
                .map_or(LogIndex(0), |progress| progress.match_index);
            let lag = self.log.last_index().0.saturating_sub(matched.0);
            if lag > self.config.promote_lag_entries_max {
                return Err(MembershipError::LearnerBehind(id));
            }
        }
        let index = self
            .log
            .append(self.term, EntryPayload::Membership(next.clone()));
        self.configurations.append(index, next);
        self.refresh_membership();
        Ok(index)
    }

    /// Leader: hands leadership to `target`, a voter (thesis §3.10). The leader stops taking
    /// proposals, brings the target's log up to date, then tells it to campaign at once
    /// ([`Message::TimeoutNow`]); the target's election skips the pre-vote and the voters'
    /// lease. If the target has not taken over within an election timeout, the transfer is
    /// abandoned and the leader takes proposals again. Asking again for the same target
    /// while it runs is a no-op.
    ///
    /// # Errors
    /// [`TransferError`] if this node is not the leader, the target is not another voter, or
    /// a transfer to another node is in progress.
    pub fn transfer_leadership(&mut self, target: NodeId) -> Result<(), TransferError> {
        if self.role != Role::Leader {
            return Err(TransferError::NotLeader);
        }
        if target == self.config.id || !self.active.is_voter(target) {
            return Err(TransferError::NotAVoter(target));
        }
        match self.transfer {
            Some(transfer) if transfer.target == target => return Ok(()),
            Some(transfer) => return Err(TransferError::Pending(transfer.target)),
            None => {}
        }
        self.transfer = Some(Transfer {
            target,
            elapsed_ticks: 0,
        });
        self.send_timeout_now_if_caught_up();
        Ok(())
    }

    /// The leadership transfer in progress, if any: its target.
    #[must_use]
    pub fn transfer_target(&self) -> Option<NodeId> {
        self.transfer.map(|transfer| transfer.target)
    }

    /// The configuration in force (the newest this node appended).
    #[must_use]
    pub fn membership(&self) -> &Membership {
        &self.active
    }

    /// The configuration in force at `index` (for a driver storing it with the snapshot at
    /// that index), if this node still knows it.
    #[must_use]
    pub fn membership_at(&self, index: LogIndex) -> Option<&Membership> {
        self.configurations.at(index)
    }

    /// How many configuration changes this node's log holds above its commit index (one at
    /// most on a correct leader).
    #[must_use]
    pub fn membership_changes_uncommitted(&self) -> usize {
        self.configurations.count_after(self.log.commit())
    }

    /// Whether the newest configuration is committed (no change is in progress).
    #[must_use]
    pub fn membership_committed(&self) -> bool {
        self.configurations.latest_index() <= self.log.commit()
    }

    /// Whether this node votes in the configuration in force.
    #[must_use]
    pub fn is_voter(&self) -> bool {
        self.active.is_voter(self.config.id)
    }

    /// Whether a Ready with work is available.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        if self.ready_outstanding {
            return false;
        }
        if !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.rejected_reads.is_empty()
            || self.hard_state_current() != self.hard_state_handed
            || self.log.has_unsent()
            || self.log.has_unapplied()
            || self.install_pending.is_some()
            || !self.snapshot_chunks.is_empty()
            || !self.snapshot_chunk_requests.is_empty()
            || (self.snapshot_forced
                && !self.snapshot_requested
                && self.log.applied() > self.log.snapshot().index)
        {
            return true;
        }
        match self.role {
            Role::Leader => {
                let last_index = self.log.last_index();
                let commit = self.log.commit();
                self.broadcast_pending
                    || (self.leader_reads.has_waiting() && self.has_committed_in_term())
                    || self.progress.values().any(|progress| {
                        progress.empty_append_due
                            || progress.commit_unknown(commit)
                            || progress.can_send(last_index, self.config.inflight_max)
                            || progress.chunk_due().is_some()
                    })
            }
            Role::Follower => {
                self.leader.is_some()
                    && (!self.proposals_to_forward.is_empty() || !self.reads_to_forward.is_empty())
            }
            Role::PreCandidate | Role::Candidate => false,
        }
    }

    /// Takes the pending work.
    ///
    /// # Panics
    /// If the previous Ready was not yet advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(
            !self.ready_outstanding,
            "ready() called before the previous Ready was advanced"
        );
        self.queue_outgoing();
        let snapshot = self.install_received_snapshot();
        self.finish_repair_if_done();
        let hard_state = self.hard_state_current();
        let hard_state = (hard_state != self.hard_state_handed).then(|| {
            self.hard_state_handed = hard_state;
            hard_state
        });
        let entries = self.log.begin_persist();
        let committed_entries = self.log.take_committed(COMMITTED_ENTRIES_MAX);
        let applied_bytes: usize = committed_entries.iter().map(Entry::size_bytes).sum();
        self.bytes_since_snapshot = self
            .bytes_since_snapshot
            .saturating_add(applied_bytes as u64);
        let snapshot_due = self.snapshot_due();
        self.ready_outstanding = true;
        self.apply_held = snapshot.is_some() || snapshot_due.is_some();
        self.persisting = Some((self.hard_state_handed.term, snapshot.is_some()));
        Ready {
            messages: std::mem::take(&mut self.messages),
            hard_state,
            entries,
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            rejected_reads: std::mem::take(&mut self.rejected_reads),
            snapshot_chunk_requests: std::mem::take(&mut self.snapshot_chunk_requests),
            snapshot_chunks: std::mem::take(&mut self.snapshot_chunks),
            snapshot,
            snapshot_due,
        }
    }

    /// Takes the messages that may leave before anything is durable: a leader's
    /// AppendEntries and heartbeats (with entries appended since the last Ready, and the
    /// commit index as it stands), ReadIndex traffic, pre-votes, forwarded proposals and
    /// reads, and answers that promise nothing. These are what `Ready::messages` would carry.
    ///
    /// Meant for the time between [`RawNode::ready`] and [`RawNode::advance`], while the
    /// driver makes the outstanding Ready durable: a node whose disk is slow keeps its
    /// followers' election timers reset and keeps replicating (the contract's step 3 in the
    /// crate docs). May be called at any time; what it takes never reappears in a Ready.
    /// Messages that promise state not yet durable (votes, acks of new entries) are never
    /// among them: they wait for the next Ready's `persisted_messages`, and a leader's own
    /// log still counts toward a commit only up to what `advance` confirmed. An ack of what
    /// is durable already (a heartbeat at the durable match index) is among them.
    pub fn take_messages(&mut self) -> Vec<(NodeId, Message)> {
        self.queue_outgoing();
        std::mem::take(&mut self.messages)
    }

    /// Takes the entries committed since the last Ready (or the last call) and the reads
    /// whose read index became known: what the next Ready's `committed_entries` and
    /// `read_states` would carry.
    ///
    /// Meant for the time between [`RawNode::ready`] and [`RawNode::advance`], once the
    /// outstanding Ready's own `committed_entries` are applied: a leader whose followers
    /// acknowledged a batch while its own write of the next batch is out applies the first
    /// batch and answers its clients at once, instead of one fsync later (the contract's
    /// step 3 in the crate docs). Every entry it gives is durable on a majority already, so
    /// applying it never waits on this node's disk. It gives nothing while the outstanding
    /// Ready installs a snapshot or asks for one (`snapshot`, `snapshot_due`): the state
    /// machine must stand exactly at that index until the Ready is advanced. What it takes
    /// never reappears in a Ready.
    ///
    /// The core cannot tell whether the driver applied the outstanding Ready's entries: a
    /// driver that applies them only after its sync must not call this before, or it would
    /// apply later entries first.
    pub fn take_committed(&mut self) -> Committed {
        if self.apply_held {
            return Committed::default();
        }
        let entries = self.log.take_committed(COMMITTED_ENTRIES_MAX);
        let applied_bytes: usize = entries.iter().map(Entry::size_bytes).sum();
        self.bytes_since_snapshot = self
            .bytes_since_snapshot
            .saturating_add(applied_bytes as u64);
        Committed {
            entries,
            read_states: std::mem::take(&mut self.read_states),
        }
    }

    /// Builds the messages that leave with the next Ready or [`RawNode::take_messages`]: a
    /// leader's read round and AppendEntries, a follower's forwarded proposals and reads.
    fn queue_outgoing(&mut self) {
        match self.role {
            Role::Leader => {
                self.start_read_round();
                self.send_appends();
            }
            Role::Follower => self.forward_to_leader(),
            Role::PreCandidate | Role::Candidate => {}
        }
    }

    /// Installs the snapshot received in full since the last Ready, unless the node has
    /// meanwhile committed past it. Returns it for the Ready.
    fn install_received_snapshot(&mut self) -> Option<SnapshotMeta> {
        let (meta, membership) = self.install_pending.take()?;
        let allow_older = self.config.injected_bugs().install_older_snapshot;
        if meta.index <= self.log.commit() && !allow_older {
            // Committed past it while it was pending: the log already holds everything.
            return None;
        }
        let installed = self.log.install_snapshot(meta, allow_older);
        self.configurations
            .install(meta.index, membership, installed == Installed::SuffixKept);
        self.refresh_membership();
        self.bytes_since_snapshot = 0;
        Some(meta)
    }

    /// Whether to ask the driver for a snapshot now, at the applied index.
    fn snapshot_due(&mut self) -> Option<SnapshotMeta> {
        if self.snapshot_requested {
            return None;
        }
        let applied = self.log.applied();
        let entries = applied.0.saturating_sub(self.log.snapshot().index.0);
        let over_threshold = (entries >= self.config.snapshot_threshold_entries
            || self.bytes_since_snapshot >= self.config.snapshot_threshold_bytes)
            && self.bytes_since_snapshot >= self.snapshot_bytes_floor;
        if entries == 0 || !(self.snapshot_forced || over_threshold) {
            return None;
        }
        // A node that joined learns the configuration the cluster was born with only from
        // a later membership entry: below it, it cannot say whom a snapshot belongs to.
        if !self
            .configurations
            .at(applied)
            .is_some_and(Membership::is_valid)
        {
            return None;
        }
        let term = self.log.term_at(applied)?;
        self.snapshot_due_bytes = Some((applied, self.bytes_since_snapshot));
        self.snapshot_requested = true;
        self.snapshot_forced = false;
        Some(SnapshotMeta {
            index: applied,
            term,
        })
    }

    /// The driver took the snapshot asked for by `Ready::snapshot_due` (or any other, of an
    /// applied index) and made it durable. The log is compacted below it, keeping
    /// `compaction_tail_entries` entries, and never above what is applied, committed and
    /// durable here. A snapshot not newer than the last one is ignored.
    ///
    /// May be called at any time, also while a Ready is outstanding.
    ///
    /// # Errors
    /// [`SnapshotError::Mismatch`] if the snapshot is beyond the applied index or its term
    /// does not match the log; nothing changes then (but another snapshot may be asked for).
    pub fn on_snapshot_taken(&mut self, meta: SnapshotMeta) -> Result<(), SnapshotError> {
        self.snapshot_requested = false;
        let due_bytes = self.snapshot_due_bytes.take();
        if meta.index <= self.log.snapshot().index {
            return Ok(());
        }
        if !self.log.snapshot_taken(meta) {
            return Err(SnapshotError::Mismatch {
                index: meta.index,
                term: meta.term,
            });
        }
        // What the snapshot covers leaves the count; what was applied after its index (while
        // it was written) stays. A snapshot other than the one asked for covers everything.
        self.bytes_since_snapshot = match due_bytes {
            Some((index, bytes)) if index == meta.index => {
                self.bytes_since_snapshot.saturating_sub(bytes)
            }
            _ => 0,
        };
        if self.config.injected_bugs().compact_above_commit {
            // Deliberate bug: compact the whole log, committed-but-unapplied entries and
            // uncommitted ones included.
            self.log.compact(self.log.last_index(), true);
            return Ok(());
        }
        let target = LogIndex(
            meta.index
                .0
                .saturating_sub(self.config.compaction_tail_entries),
        )
        .min(self.log.compactable());
        self.log.compact(target, false);
        self.configurations.forget_below(self.log.offset());
        Ok(())
    }

    /// Takes the entries the last compaction dropped from memory (empty if none since the
    /// last call). After a large snapshot they can number hundreds of thousands, and freeing
    /// them takes long enough to delay every request behind it: a driver with a thread to
    /// spare frees them there. Entries not taken are freed by the next compaction.
    pub fn take_compacted_entries(&mut self) -> Vec<Entry> {
        self.log.take_compacted()
    }

    /// Asks for a snapshot at the applied index on the next Ready (`Ready::snapshot_due`),
    /// whatever the thresholds say: an operator forcing one. Nothing happens if nothing was
    /// applied since the last snapshot; a snapshot already asked for and not yet reported
    /// counts as this one.
    pub fn request_snapshot(&mut self) {
        if !self.snapshot_requested {
            self.snapshot_forced = true;
        }
    }

    /// Holds back both snapshot thresholds until the entries applied since the last snapshot
    /// hold at least `bytes` (as counted by [`crate::Entry::size_bytes`]). A driver passes the
    /// size of its latest snapshot, so that a large state is not written out again after a
    /// log much smaller than itself: the snapshot writes then cost at most about as many bytes
    /// as the log, and the log never holds much more than the state. 0 (the default) holds
    /// nothing back. A forced snapshot ([`RawNode::request_snapshot`]) ignores it.
    pub fn set_snapshot_bytes_floor(&mut self, bytes: u64) {
        self.snapshot_bytes_floor = bytes;
    }

    /// The driver could not take the snapshot asked for; it will be asked again when the next
    /// committed entries are applied.
    pub fn on_snapshot_failed(&mut self) {
        self.snapshot_requested = false;
        self.snapshot_due_bytes = None;
    }

    /// Leader: the driver read the chunk asked for by a [`SnapshotChunkRequest`]: `data` is
    /// the snapshot `meta`'s bytes from `offset` (at most `snapshot_chunk_bytes_max`), `done`
    /// if they reach its end. The next Ready sends it as an [`InstallSnapshot`].
    ///
    /// # Errors
    /// [`SnapshotError`] if no such chunk is expected (this node is no longer leader, or the
    /// follower moved on; drop the chunk) or it is too large. Nothing changes then.
    pub fn send_snapshot_chunk(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
    ) -> Result<(), SnapshotError> {
        if data.len() > self.config.snapshot_chunk_bytes_max {
            return Err(SnapshotError::ChunkTooLarge(data.len()));
        }
        offset
            .checked_add(data.len() as u64)
            .ok_or(SnapshotError::UnexpectedChunk(to))?;
        let expected = self.role == Role::Leader
            && self.progress.get(&to).is_some_and(|progress| {
                progress.state == ReplicationState::Snapshot
                    && progress.snapshot.is_some_and(|send| {
                        send.meta == meta && send.next_offset == offset && send.requested
                    })
            });
        if !expected {
            return Err(SnapshotError::UnexpectedChunk(to));
        }
        let Some(membership) = self
            .configurations
            .at(meta.index)
            .filter(|membership| membership.is_valid())
            .cloned()
        else {
            // An older snapshot whose configuration this node forgot: send the newest.
            self.report_snapshot_unavailable(to);
            return Err(SnapshotError::UnexpectedChunk(to));
        };
        self.messages.push((
            to,
            Message::InstallSnapshot(InstallSnapshot::new(
                self.term, meta, offset, data, done, membership,
            )),
        ));
        Ok(())
    }

    /// Leader: the driver no longer has the snapshot it was asked to read for `to` (a newer
    /// one replaced it). Sending starts over with the newest snapshot, asked for after the
    /// next heartbeat interval.
    pub fn report_snapshot_unavailable(&mut self, to: NodeId) {
        if self.role != Role::Leader {
            return;
        }
        let meta = self.log.snapshot();
        if let Some(progress) = self.progress.get_mut(&to) {
            if progress.state == ReplicationState::Snapshot && meta.index > LogIndex(0) {
                progress.become_snapshot(meta);
                // Asked again after a heartbeat interval, not at once: a driver that has no
                // snapshot at all must not be asked in a tight loop.
                if let Some(send) = progress.snapshot.as_mut() {
                    send.requested = true;
                }
            }
        }
    }

    /// The driver finished the last Ready: its state is durable, its messages sent, its
    /// entries applied.
    ///
    /// # Panics
    /// If no Ready is outstanding.
    pub fn advance(&mut self) {
        assert!(
            self.ready_outstanding,
            "advance() called without an outstanding Ready"
        );
        self.ready_outstanding = false;
        self.apply_held = false;
        if let Some((term, _)) = self.persisting.take() {
            self.term_durable = term;
        }
        self.log.finish_persist();
        if self.role == Role::Leader {
            // The leader's own copy counts toward a majority only once durable.
            self.maybe_commit();
        }
        self.refresh_membership();
    }

    /// A read-only view of the node.
    #[must_use]
    pub fn status(&self) -> Status {
        Status {
            id: self.config.id,
            role: self.role,
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit(),
            applied: self.log.applied(),
            last_index: self.log.last_index(),
            persisted_index: self.log.persisted(),
            repairing: self.repairing,
        }
    }

    /// As leader, each follower's match index (the highest index known to be durable on it),
    /// in id order; empty on any other role.
    #[must_use]
    pub fn match_indexes(&self) -> Vec<(NodeId, LogIndex)> {
        self.progress
            .iter()
            .map(|(&id, progress)| (id, progress.match_index))
            .collect()
    }

    /// The configuration the node runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The term of the entry at `index`, if the log holds it (term 0 for index 0).
    #[must_use]
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term_at(index)
    }

    /// The entry at `index`, if the log holds it.
    #[must_use]
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }

    /// The newest snapshot taken or installed (index 0 and term 0 if none).
    #[must_use]
    pub fn snapshot(&self) -> SnapshotMeta {
        self.log.snapshot()
    }

    /// The first index the in-memory log holds; everything below was compacted.
    #[must_use]
    pub fn first_index(&self) -> LogIndex {
        self.log.first_index()
    }

    /// The durable hard state most recently handed out (for checkers).
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.hard_state_handed
    }

    // ----- Validation -----------------------------------------------------------------------

    /// Refuses a message that contradicts itself or, coming from a peer that claims to lead
    /// our term or a later one, contradicts what this node knows is committed.
    fn validate(&self, from: NodeId, message: &Message) -> Result<(), StepError> {
        // No honest cluster reaches such a term (2^62 elections), and adopting one would make
        // the next election overflow (found by the step fuzz target).
        if message.term() > TERM_MAX {
            return Err(StepError::Malformed("term beyond any reachable value"));
        }
        match message {
            Message::RequestVote(request) => {
                if request.term == Term(0) {
                    return Err(StepError::Malformed("RequestVote in term 0"));
                }
                if request.last_log_term > request.term {
                    return Err(StepError::Malformed(
                        "RequestVote last_log_term exceeds its term",
                    ));
                }
                if (request.last_log_index == LogIndex(0)) != (request.last_log_term == Term(0)) {
                    return Err(StepError::Malformed(
                        "RequestVote last_log_index and last_log_term disagree on an empty log",
                    ));
                }
                if request.transfer && request.pre_vote {
                    return Err(StepError::Malformed(
                        "RequestVote both a pre-vote and a transfer",
                    ));
                }
            }
            Message::TimeoutNow(request) => {
                if request.term == Term(0) {
                    return Err(StepError::Malformed("TimeoutNow in term 0"));
                }
            }
            Message::RequestVoteResponse(_) => {}
            Message::AppendEntries(request) => self.validate_append_entries(from, request)?,
            Message::AppendEntriesResponse(response) => {
                if self.role == Role::Leader && response.term == self.term {
                    if response.success && response.match_index > self.log.last_index() {
                        return Err(StepError::Malformed(
                            "AppendEntriesResponse acknowledges entries the leader never had",
                        ));
                    }
                    if response.read_round > self.read_round {
                        return Err(StepError::Malformed(
                            "AppendEntriesResponse answers a read round not yet started",
                        ));
                    }
                }
            }
            Message::Propose(propose) => {
                if propose.commands.len() > self.config.proposals_pending_max {
                    return Err(StepError::Malformed("Propose carries too many commands"));
                }
            }
            Message::ReadIndex(request) => {
                if request.ids.len() > self.config.reads_pending_max {
                    return Err(StepError::Malformed("ReadIndex carries too many reads"));
                }
            }
            Message::ReadIndexResponse(response) => {
                if response.ids.len() > self.config.reads_pending_max {
                    return Err(StepError::Malformed(
                        "ReadIndexResponse carries too many reads",
                    ));
                }
            }
            Message::InstallSnapshot(request) => self.validate_install_snapshot(from, request)?,
            Message::InstallSnapshotResponse(response) => {
                if response.meta.term > response.term {
                    return Err(StepError::Malformed(
                        "InstallSnapshotResponse for a snapshot newer than its term",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a leader's message (AppendEntries, InstallSnapshot) of this node's term from a
    /// node other than the leader it knows, or to a node that leads this term itself: Election
    /// Safety (Raft §5.2) allows one leader per term, so the sender is broken or forged.
    fn validate_single_leader(&self, from: NodeId, term: Term) -> Result<(), StepError> {
        if term == self.term {
            if self.role == Role::Leader {
                return Err(StepError::Malformed(
                    "a leader's message from a second leader of this node's term",
                ));
            }
            if self.leader.is_some_and(|leader| leader != from) {
                return Err(StepError::Malformed(
                    "a leader's message from a second leader of this term",
                ));
            }
        }
        Ok(())
    }

    fn validate_install_snapshot(
        &self,
        from: NodeId,
        request: &InstallSnapshot,
    ) -> Result<(), StepError> {
        if request.term == Term(0) {
            return Err(StepError::Malformed("InstallSnapshot in term 0"));
        }
        if request.meta.index == LogIndex(0) || request.meta.term == Term(0) {
            return Err(StepError::Malformed("InstallSnapshot of an empty log"));
        }
        if request.meta.term > request.term {
            return Err(StepError::Malformed(
                "InstallSnapshot snapshot term exceeds its term",
            ));
        }
        if request.meta.index > SNAPSHOT_INDEX_MAX {
            return Err(StepError::Malformed(
                "InstallSnapshot index beyond any reachable value",
            ));
        }
        if !request.membership.is_valid() {
            return Err(StepError::Malformed(
                "InstallSnapshot carries a malformed configuration",
            ));
        }
        // Checked before anything else looks at the bytes: a forged size is refused here.
        if request.data.len() > self.config.snapshot_chunk_bytes_max {
            return Err(StepError::Malformed(
                "InstallSnapshot chunk exceeds snapshot_chunk_bytes_max",
            ));
        }
        if request
            .offset
            .checked_add(request.data.len() as u64)
            .is_none()
        {
            return Err(StepError::Malformed("InstallSnapshot offset overflows"));
        }
        if crc32c::crc32c(&request.data) != request.crc32c {
            return Err(StepError::Malformed(
                "InstallSnapshot chunk fails its CRC-32C",
            ));
        }
        if request.term < self.term {
            return Ok(());
        }
        self.validate_single_leader(from, request.term)?;
        // Leader Completeness: a snapshot covering our committed prefix agrees with it.
        if request.meta.index <= self.log.commit()
            && self
                .log
                .term_at(request.meta.index)
                .is_some_and(|term| term != request.meta.term)
        {
            return Err(StepError::Malformed(
                "InstallSnapshot contradicts a committed entry",
            ));
        }
        Ok(())
    }

    fn validate_append_entries(
        &self,
        from: NodeId,
        request: &AppendEntries,
    ) -> Result<(), StepError> {
        if request.term == Term(0) {
            return Err(StepError::Malformed("AppendEntries in term 0"));
        }
        if request.prev_log_term > request.term {
            return Err(StepError::Malformed(
                "AppendEntries prev_log_term exceeds its term",
            ));
        }
        if (request.prev_log_index == LogIndex(0)) != (request.prev_log_term == Term(0)) {
            return Err(StepError::Malformed(
                "AppendEntries prev_log_index and prev_log_term disagree on index 0",
            ));
        }
        let mut expected_index = request.prev_log_index;
        let mut previous_term = request.prev_log_term;
        for entry in &request.entries {
            expected_index = match expected_index.0.checked_add(1) {
                Some(index) => LogIndex(index),
                None => return Err(StepError::Malformed("AppendEntries overflows the log")),
            };
            if entry.index != expected_index {
                return Err(StepError::Malformed(
                    "AppendEntries entries are not contiguous from prev_log_index + 1",
                ));
            }
            if entry.term == Term(0) || entry.term > request.term {
                return Err(StepError::Malformed(
                    "AppendEntries entry term is 0 or exceeds the leader's term",
                ));
            }
            if entry.term < previous_term {
                return Err(StepError::Malformed("AppendEntries entry terms decrease"));
            }
            if let EntryPayload::Membership(membership) = &entry.payload {
                if !membership.is_valid() {
                    return Err(StepError::Malformed(
                        "AppendEntries carries a malformed configuration",
                    ));
                }
            }
            previous_term = entry.term;
        }

        if request.term < self.term {
            // A stale leader: it will be answered with our term, whatever it carries.
            return Ok(());
        }
        self.validate_single_leader(from, request.term)?;
        // A leader of this term or a later one holds every committed entry (Leader
        // Completeness, Raft §5.4). One that contradicts our committed prefix is broken or
        // forged; obeying it would lose committed entries.
        // Below the compaction point the term is unknown, but everything there is committed,
        // so it matches any legitimate leader.
        let commit = self.log.commit();
        if request.prev_log_index <= commit
            && self
                .log
                .term_at(request.prev_log_index)
                .is_some_and(|term| term != request.prev_log_term)
        {
            return Err(StepError::Malformed(
                "AppendEntries contradicts a committed entry at prev_log_index",
            ));
        }
        if let Some(conflict) = self.log.find_conflict(&request.entries) {
            if conflict.index <= commit {
                return Err(StepError::Malformed(
                    "AppendEntries would overwrite a committed entry",
                ));
            }
        }
        Ok(())
    }

    // ----- Elections ------------------------------------------------------------------------

    /// Whether this node heard from a live leader within the minimum election timeout, so it
    /// refuses to help anyone else start an election (CheckQuorum, thesis §9.6).
    ///
    /// With read leases, a node that started less than an election timeout ago counts as
    /// in lease too (before it crashed it may have answered a leader's lease round), and so
    /// does one within an election timeout of its leader's last message even if it has
    /// since moved to a higher term without a leader (`promise_until`).
    fn in_lease(&self) -> bool {
        let promised = self.config.lease_reads
            && (self.clock < self.config.election_timeout_ticks || self.clock < self.promise_until);
        self.config.check_quorum
            && (promised
                || (self.leader.is_some()
                    && self.election_elapsed < self.config.election_timeout_ticks))
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let minimum = self.config.election_timeout_ticks;
        self.election_timeout_randomized = self.prng.range(minimum, minimum.saturating_mul(2));
    }

    fn on_election_timeout(&mut self) {
        if self.quorum == 1 || !self.config.pre_vote {
            self.become_candidate(false);
        } else {
            self.become_pre_candidate();
        }
    }

    /// The voters other than this node: whom a (pre-)candidate asks.
    fn voter_peers(&self) -> Vec<NodeId> {
        self.active
            .voters
            .iter()
            .copied()
            .filter(|&voter| voter != self.config.id)
            .collect()
    }

    /// Thesis §9.6: ask whether we could win before disturbing anyone's term.
    fn become_pre_candidate(&mut self) {
        assert!(self.role != Role::Leader);
        self.set_leader(None);
        self.role = Role::PreCandidate;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        let request = RequestVote {
            term: self.term.next(),
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: true,
            transfer: false,
        };
        for peer in self.voter_peers() {
            self.messages
                .push((peer, Message::RequestVote(request.clone())));
        }
    }

    /// Raft §5.2: a new term, a vote for ourselves, and a RequestVote to every voter
    /// (`transfer`: because the leader handed leadership over, thesis §3.10).
    fn become_candidate(&mut self, transfer: bool) {
        assert!(self.role != Role::Leader);
        self.set_leader(None);
        self.reject_pending_reads();
        self.term = self.term.next();
        self.vote = Some(self.config.id);
        self.role = Role::Candidate;
        self.reset_election_timer();
        self.votes.clear();
        self.votes.insert(self.config.id, true);
        if self.quorum == 1 {
            self.become_leader();
            return;
        }
        let request = RequestVote {
            term: self.term,
            last_log_index: self.log.last_index(),
            last_log_term: self.log.last_term(),
            pre_vote: false,
            transfer,
        };
        // The self-vote must be durable before anyone counts on this candidacy.
        for peer in self.voter_peers() {
            self.persisted_messages
                .push((peer, Message::RequestVote(request.clone())));
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.role,
            Role::Candidate,
            "only a candidate becomes leader"
        );
        self.role = Role::Leader;
        self.leader = Some(self.config.id);
        self.election_elapsed = 0;
        self.heartbeat_elapsed = 0;
        self.votes.clear();
        let next_index = self.log.last_index().next();
        self.progress = self
            .peers
            .iter()
            .map(|&peer| (peer, Progress::new(next_index)))
            .collect();
        self.broadcast_pending = false;
        self.leader_reads = LeaderReads::default();
        self.transfer = None;
        self.drop_lease();
        self.lease_forfeited = false;
        // Raft §8: a no-op of the new term lets the leader commit (and so learn) everything
        // committed before it, and serve reads.
        self.log.append(self.term, EntryPayload::NoOp);
        // Commands this node buffered as a follower go straight into its own log now.
        let room = self
            .config
            .proposals_pending_max
            .saturating_sub(self.uncommitted_len());
        let forwarded = std::mem::take(&mut self.proposals_to_forward);
        for command in forwarded.into_iter().take(room) {
            self.log.append(self.term, EntryPayload::Command(command));
        }
        if self.quorum == 1 {
            self.maybe_commit();
        }
    }

    /// Becomes a follower in `term` (at least the current one) of `leader`, if known.
    fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(term >= self.term, "invariant: terms never go back");
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.reject_pending_reads();
        }
        if self.role == Role::Leader {
            self.reject_pending_reads();
            self.drop_lease();
            self.progress.clear();
            self.broadcast_pending = false;
            self.transfer = None;
        }
        self.set_leader(leader);
        self.role = Role::Follower;
        self.votes.clear();
        self.reset_election_timer();
    }

    /// Changes the known leader; reads forwarded to the old one may never be answered, so the
    /// caller is told to retry them.
    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.reject_forwarded_reads();
            self.leader = leader;
        }
    }

    fn on_request_vote(&mut self, from: NodeId, request: &RequestVote) {
        let up_to_date = self
            .log
            .is_up_to_date(request.last_log_term, request.last_log_index)
            && self.repair_grants(LogPosition {
                term: request.last_log_term,
                index: request.last_log_index,
            });
        if request.pre_vote {
            // Thesis §9.6: grant iff we would vote in the proposed term; change nothing.
            let granted = request.term > self.term && up_to_date;
            let term = if granted { request.term } else { self.term };
            self.messages.push((
                from,
                Message::RequestVoteResponse(RequestVoteResponse {
                    term,
                    granted,
                    pre_vote: true,
                }),
            ));
            return;
        }
        // After the term rule, request.term <= self.term.
        let can_vote = request.term == self.term
            && (self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none()));
        let granted = can_vote && up_to_date;
        let response = Message::RequestVoteResponse(RequestVoteResponse {
            term: self.term,
            granted,
            pre_vote: false,
        });
        if granted {
            self.vote = Some(from);
            self.election_elapsed = 0;
            self.push_promise(from, response);
        } else {
            self.messages.push((from, response));
        }
    }

    fn on_request_vote_response(&mut self, from: NodeId, response: &RequestVoteResponse) {
        if response.pre_vote {
            if self.role != Role::PreCandidate {
                return;
            }
            let counts = if response.granted {
                response.term == self.term.next()
            } else {
                response.term == self.term
            };
            if !counts {
                return;
            }
        } else if self.role != Role::Candidate || response.term != self.term {
            return;
        }
        self.votes.insert(from, response.granted);
        // Only the voters in force count: a learner's or a stranger's answer proves nothing.
        let voters = &self.active;
        let granted = self
            .votes
            .iter()
            .filter(|&(&id, &granted)| granted && voters.is_voter(id))
            .count();
        let rejected = self
            .votes
            .iter()
            .filter(|&(&id, &granted)| !granted && voters.is_voter(id))
            .count();
        if granted >= self.quorum {
            if self.role == Role::PreCandidate {
                self.become_candidate(false);
            } else {
                self.become_leader();
            }
        } else if rejected >= self.quorum {
            self.become_follower(self.term, None);
        }
    }

    // ----- Replication: follower side -------------------------------------------------------

    fn on_append_entries(&mut self, from: NodeId, request: AppendEntries) {
        if request.term < self.term {
            // Tell the stale leader about the newer term so it steps down.
            self.messages.push((
                from,
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term: self.term,
                    success: false,
                    match_index: LogIndex(0),
                    conflict_index: LogIndex(0),
                    conflict_term: None,
                    // Echoing the stale leader's read round would let a leader of our term,
                    // which may use the same round numbers, count this answer as a
                    // confirmation sent after its read began (thesis §6.4); it was not.
                    read_round: 0,
                }),
            ));
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        self.promise_until = self
            .clock
            .saturating_add(self.config.election_timeout_ticks);

        let prev = request.prev_log_index;
        // Below the compaction point everything is committed and matches the leader.
        let prev_term = if prev < self.log.offset() {
            Some(request.prev_log_term)
        } else {
            self.log.term_at(prev)
        };
        let response = match prev_term {
            None => {
                // Our log is too short: the leader should continue from our end.
                self.rejection(self.log.last_index().next(), None, request.read_round)
            }
            Some(term) if term != request.prev_log_term => {
                // Fast rollback (Raft §5.3): skip the whole run of the conflicting term.
                self.rejection(
                    self.log.first_index_of_term_at(prev),
                    Some(term),
                    request.read_round,
                )
            }
            Some(_) => {
                let count = u64::try_from(request.entries.len())
                    .expect("invariant: a vector's length fits in u64");
                let match_index = LogIndex(prev.0 + count);
                self.store_entries(&request.entries);
                // Only entries known to match the leader's may be marked committed.
                let commit = request.leader_commit.min(match_index);
                if commit > self.log.commit() {
                    self.log.commit_to(commit);
                }
                let response = AppendEntriesResponse {
                    term: self.term,
                    success: true,
                    match_index,
                    conflict_index: LogIndex(0),
                    conflict_term: None,
                    read_round: request.read_round,
                };
                if self.is_durable_here(match_index) {
                    // It promises only what is durable already (a heartbeat at the match
                    // index, or entries this node made durable before): it need not wait
                    // for a write that may be out, so a follower whose disk hangs still
                    // answers heartbeats and read rounds.
                    self.messages
                        .push((from, Message::AppendEntriesResponse(response)));
                    return;
                }
                response
            }
        };
        self.push_promise(from, Message::AppendEntriesResponse(response));
    }

    /// Whether this node's log up to `index`, and its current term, are durable already:
    /// confirmed by `advance`, and not truncated or replaced by a snapshot install since.
    fn is_durable_here(&self, index: LogIndex) -> bool {
        let installing = self.persisting.is_some_and(|(_, installing)| installing);
        self.term == self.term_durable && !installing && index <= self.log.persisted()
    }

    // ----- Snapshots: follower side (Raft §7) -----------------------------------------------

    fn on_install_snapshot(&mut self, from: NodeId, request: InstallSnapshot) {
        let meta = request.meta;
        let answer = |term: Term, next_offset: u64, installed: bool| {
            Message::InstallSnapshotResponse(InstallSnapshotResponse {
                term,
                meta,
                next_offset,
                installed,
            })
        };
        if request.term < self.term {
            // Tell the stale leader about the newer term so it steps down.
            self.messages.push((from, answer(self.term, 0, false)));
            return;
        }
        if self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.election_elapsed = 0;
        self.promise_until = self
            .clock
            .saturating_add(self.config.election_timeout_ticks);

        let covered = self
            .install_pending
            .as_ref()
            .map_or(self.log.commit(), |(pending, _)| {
                pending.index.max(self.log.commit())
            });
        if meta.index <= covered && !self.config.injected_bugs().install_older_snapshot {
            // Idempotent: a duplicated or old snapshot never rolls the node back. Its state
            // already covers the snapshot (committed entries match every leader's).
            self.push_promise(from, answer(self.term, 0, true));
            return;
        }
        let receiving = match self.receiving {
            Some(receiving) if receiving.meta == meta => receiving,
            current => {
                if current.is_some_and(|current| {
                    current.term == request.term && current.meta.index > meta.index
                }) {
                    // A reordered chunk of an older snapshot from the same leader.
                    return;
                }
                if request.offset != 0 {
                    // Not the start of a snapshot we know: ask for it from the beginning.
                    self.push_promise(from, answer(self.term, 0, false));
                    return;
                }
                Receiving {
                    meta,
                    term: request.term,
                    next_offset: 0,
                }
            }
        };
        if request.offset != receiving.next_offset {
            // A duplicate, or a chunk after a lost one: say where to continue.
            self.push_promise(from, answer(self.term, receiving.next_offset, false));
            return;
        }
        let next_offset = receiving.next_offset + request.data.len() as u64;
        self.snapshot_chunks.push(SnapshotChunk {
            meta,
            offset: request.offset,
            data: request.data,
            done: request.done,
        });
        if request.done {
            self.receiving = None;
            self.install_pending = Some((meta, request.membership));
            self.push_promise(from, answer(self.term, next_offset, true));
        } else {
            self.receiving = Some(Receiving {
                next_offset,
                ..receiving
            });
            self.push_promise(from, answer(self.term, next_offset, false));
        }
    }

    // ----- Snapshots: leader side -----------------------------------------------------------

    fn on_install_snapshot_response(&mut self, from: NodeId, response: &InstallSnapshotResponse) {
        if self.role != Role::Leader || response.term != self.term {
            return;
        }
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        let Some(send) = progress.snapshot else {
            return;
        };
        if progress.state != ReplicationState::Snapshot || send.meta != response.meta {
            return;
        }
        if response.installed {
            // Acknowledged after the install was durable (a persisted message).
            progress.on_snapshot_installed(response.meta.index);
            self.maybe_commit();
        } else {
            // The follower holds what it reports of this snapshot, possibly more than this
            // transfer sent: bytes from an earlier transfer of the same snapshot (by an
            // earlier leader, or by this one before it started over), which it keeps and
            // declines to receive again. Continue from there: a transfer that only ever
            // resent its first chunks would never finish.
            progress.on_snapshot_progress(response.next_offset);
        }
    }

    fn rejection(
        &self,
        conflict_index: LogIndex,
        conflict_term: Option<Term>,
        read_round: u64,
    ) -> AppendEntriesResponse {
        AppendEntriesResponse {
            term: self.term,
            success: false,
            match_index: LogIndex(0),
            conflict_index,
            conflict_term,
            read_round,
        }
    }

    /// Queues a message that promises durable state: it leaves only after the Ready it
    /// travels in is persisted (Raft Figure 2, "respond after persisting").
    fn push_promise(&mut self, to: NodeId, message: Message) {
        if self.config.injected_bugs().ack_before_durable {
            self.messages.push((to, message));
        } else {
            self.persisted_messages.push((to, message));
        }
    }

    // ----- Replication: leader side ---------------------------------------------------------

    fn tick_leader(&mut self) {
        if let Some(transfer) = self.transfer.as_mut() {
            transfer.elapsed_ticks = transfer.elapsed_ticks.saturating_add(1);
            if transfer.elapsed_ticks >= self.config.election_timeout_ticks {
                // The target did not take over in time: serve again (thesis §3.10).
                self.transfer = None;
            }
        }
        self.heartbeat_elapsed = self.heartbeat_elapsed.saturating_add(1);
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_pending = true;
            let last_index = self.log.last_index();
            for progress in self.progress.values_mut() {
                progress.on_heartbeat(last_index);
            }
            if self.config.lease_reads {
                // Every heartbeat is a round of its own, so that its answers renew the lease.
                self.read_round += 1;
                self.note_lease_round();
            }
            // A TimeoutNow may have been lost: say it again while the transfer runs.
            self.send_timeout_now_if_caught_up();
        }
        self.election_elapsed = self.election_elapsed.saturating_add(1);
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_active() {
                // Thesis §9.6: a leader cut off from a majority stops acting as one, so that
                // its clients go elsewhere.
                self.become_follower(self.term, None);
                return;
            }
            for progress in self.progress.values_mut() {
                progress.recent_active = false;
            }
        }
    }

    /// Whether a majority of the voters (this leader included, if it votes) was heard from
    /// since the last check.
    fn quorum_active(&self) -> bool {
        self.quorum_value(true, |progress| progress.recent_active)
    }

    /// The highest value that a majority of the voters in force has reached: `own` for this
    /// node, `of` a follower's progress for the others (learners never count).
    fn quorum_value<T: Ord + Copy + Default>(&self, own: T, of: impl Fn(&Progress) -> T) -> T {
        let mut values: Vec<T> = self
            .active
            .voters
            .iter()
            .map(|&voter| {
                if voter == self.config.id {
                    own
                } else {
                    self.progress.get(&voter).map_or_else(T::default, &of)
                }
            })
            .collect();
        values.sort_unstable_by(|a, b| b.cmp(a));
        values.get(self.quorum - 1).copied().unwrap_or_default()
    }

    /// Entries appended but not yet committed, which bounds the leader's memory under load.
    fn uncommitted_len(&self) -> usize {
        let uncommitted = self.log.last_index().0 - self.log.commit().0;
        usize::try_from(uncommitted).unwrap_or(usize::MAX)
    }

    fn has_committed_in_term(&self) -> bool {
        self.log.term_at(self.log.commit()) == Some(self.term)
    }

    fn on_append_entries_response(&mut self, from: NodeId, response: &AppendEntriesResponse) {
        if self.role != Role::Leader || response.term != self.term {
            return;
        }
        let last_index = self.log.last_index();
        let inflight_max = self.config.inflight_max;
        let Some(progress) = self.progress.get_mut(&from) else {
            return;
        };
        // Any answer of this term, success or not, shows `from` still follows us as of the
        // read round it echoes.
        progress.read_round_acked = progress.read_round_acked.max(response.read_round);

        if response.success {
            if progress.on_success(response.match_index) {
                self.maybe_commit();
                if self.transfer_target() == Some(from) {
                    self.send_timeout_now_if_caught_up();
                }
            } else {
                progress.free_one_if_full(inflight_max);
            }
        } else {
            let stale = (response.conflict_term.is_none()
                && response.conflict_index <= progress.match_index)
                || progress.state == ReplicationState::Snapshot;
            if !stale {
                let hint = match response.conflict_term {
                    Some(term) => self
                        .log
                        .last_index_of_term(term)
                        .map_or(response.conflict_index, LogIndex::next),
                    None => response.conflict_index,
                };
                // Never behind what the follower already matched, never past our end.
                let next_index = hint.clamp(progress.match_index.next(), last_index.next());
                progress.on_rejection(next_index);
            }
        }
        self.release_confirmed_reads();
    }

    /// Commits the highest index stored durably on a majority, if it is of the current term
    /// (Raft §5.4.2: counting replicas proves nothing for entries of earlier terms, Figure 8).
    fn maybe_commit(&mut self) {
        assert_eq!(self.role, Role::Leader);
        let candidate = self.quorum_value(self.log.persisted(), |progress| progress.match_index);
        if candidate <= self.log.commit() {
            return;
        }
        let current_term = self.log.term_at(candidate) == Some(self.term);
        if current_term || self.config.injected_bugs().commit_without_current_term {
            self.log.commit_to(candidate);
            // Followers learn the new commit index with the next Ready.
            self.broadcast_pending = true;
            self.refresh_membership();
            self.step_down_if_removed();
        }
    }

    /// A leader that is no longer a voter leads until the configuration without it commits
    /// (thesis §4.2.2), then steps down, handing over to the most up-to-date voter at once.
    fn step_down_if_removed(&mut self) {
        if self.role != Role::Leader || self.is_voter() || !self.membership_committed() {
            return;
        }
        let successor = self
            .progress
            .iter()
            .filter(|&(&id, _)| self.active.is_voter(id))
            .max_by_key(|&(&id, progress)| (progress.match_index, std::cmp::Reverse(id)))
            .filter(|&(_, progress)| progress.match_index == self.log.last_index())
            .map(|(&id, _)| id);
        if let Some(successor) = successor {
            self.messages.push((
                successor,
                Message::TimeoutNow(TimeoutNow { term: self.term }),
            ));
        }
        self.become_follower(self.term, None);
    }

    /// Leader: tells the transfer's target to campaign if its log matches the leader's.
    fn send_timeout_now_if_caught_up(&mut self) {
        let Some(transfer) = self.transfer else {
            return;
        };
        let caught_up = self
            .progress
            .get(&transfer.target)
            .is_some_and(|progress| progress.match_index == self.log.last_index());
        if caught_up {
            // The target may be elected at once, past every voter's lease.
            self.lease_forfeited = true;
            self.drop_lease();
            self.messages.push((
                transfer.target,
                Message::TimeoutNow(TimeoutNow { term: self.term }),
            ));
        }
    }

    /// A voter told by its leader to take over campaigns at once, skipping the pre-vote.
    fn on_timeout_now(&mut self, from: NodeId, request: &TimeoutNow) {
        let from_leader = self.leader.is_none_or(|leader| leader == from);
        if request.term == self.term
            && self.role == Role::Follower
            && from_leader
            && self.is_voter()
            && self.install_pending.is_none()
            && !self.abstains()
        {
            self.become_candidate(true);
        }
    }

    /// Stores a leader's entries, keeping the configurations in step with the log: a
    /// truncated suffix takes its configurations back, new membership entries take effect.
    fn store_entries(&mut self, entries: &[Entry]) {
        if self.config.injected_bugs().truncate_without_conflict
            && self.log.find_conflict(entries).is_none()
        {
            if let Some(last) = entries.last() {
                let from = last.index.next();
                if last.index >= self.log.commit() && from <= self.log.last_index() {
                    if from <= self.configurations.latest_index() {
                        self.configurations.truncate_from(from);
                    }
                    self.log.truncate_from(from);
                    return;
                }
            }
        }
        if let Some(from) = self.log.find_conflict(entries).map(|entry| entry.index) {
            if from <= self.configurations.latest_index() {
                self.configurations.truncate_from(from);
            }
            for entry in entries.iter().filter(|entry| entry.index >= from) {
                if let EntryPayload::Membership(membership) = &entry.payload {
                    self.configurations.append(entry.index, membership.clone());
                }
            }
        }
        self.log.store(entries);
    }

    /// Brings `peers`, `quorum` and (on a leader) `progress` in line with the configuration
    /// in force: the newest appended (or, with an injected bug, the newest committed).
    fn refresh_membership(&mut self) {
        let in_force = if self.config.injected_bugs().membership_on_commit {
            self.configurations
                .at(self.log.commit())
                .unwrap_or_else(|| self.configurations.latest())
        } else {
            self.configurations.latest()
        };
        if *in_force == self.active {
            return;
        }
        self.active = in_force.clone();
        // A lease proves something only of the majorities it was counted in.
        self.drop_lease();
        self.peers = self
            .active
            .members()
            .into_iter()
            .filter(|&member| member != self.config.id)
            .collect();
        self.quorum = self.active.quorum();
        if self.role == Role::Leader {
            let next_index = self.log.last_index().next();
            let peers = &self.peers;
            self.progress.retain(|id, _| peers.contains(id));
            for &peer in &self.peers {
                self.progress
                    .entry(peer)
                    .or_insert_with(|| Progress::new(next_index));
            }
            if self
                .transfer
                .is_some_and(|transfer| !self.active.is_voter(transfer.target))
            {
                self.transfer = None;
            }
        }
    }

    /// Builds the AppendEntries of this Ready: entries to every follower whose window allows,
    /// and a heartbeat to the others when a broadcast is due.
    fn send_appends(&mut self) {
        let last_index = self.log.last_index();
        let commit = self.log.commit();
        for position in 0..self.peers.len() {
            let peer = self.peers[position];
            let mut sent = false;
            loop {
                let progress = self
                    .progress
                    .get_mut(&peer)
                    .expect("invariant: a leader tracks every peer");
                if progress.state != ReplicationState::Snapshot
                    && self.log.term_at(progress.next_index.prev()).is_none()
                {
                    // The entries this follower needs next were compacted: send the
                    // snapshot (Raft §7).
                    progress.become_snapshot(self.log.snapshot());
                    break;
                }
                if !progress.can_send(last_index, self.config.inflight_max) {
                    break;
                }
                let next_index = progress.next_index;
                let request = self.append_entries_at(next_index.prev(), true);
                let last_sent = request
                    .entries
                    .last()
                    .map_or(next_index.prev(), |entry| entry.index);
                let leader_commit = request.leader_commit;
                let progress = self
                    .progress
                    .get_mut(&peer)
                    .expect("invariant: a leader tracks every peer");
                progress.on_sent(last_sent);
                progress.on_commit_sent(last_sent, leader_commit);
                self.messages.push((peer, Message::AppendEntries(request)));
                sent = true;
            }
            let progress = self
                .progress
                .get_mut(&peer)
                .expect("invariant: a leader tracks every peer");
            if let Some((meta, offset)) = progress.chunk_due() {
                let newest = self.log.snapshot();
                let (meta, offset) = if offset == 0 && newest != meta {
                    // Not started yet: send the newest snapshot instead.
                    progress.become_snapshot(newest);
                    (newest, 0)
                } else {
                    (meta, offset)
                };
                if let Some(send) = progress.snapshot.as_mut() {
                    send.requested = true;
                }
                self.snapshot_chunk_requests.push(SnapshotChunkRequest {
                    to: peer,
                    meta,
                    offset,
                });
            }
            let empty_append_due = std::mem::take(&mut progress.empty_append_due);
            // Never below the compaction point, where the leader no longer knows the term.
            let offset = self.log.offset();
            let prev = if empty_append_due {
                // Checks whether the pipeline's messages arrived.
                Some(progress.next_index.prev().max(offset))
            } else if self.broadcast_pending || progress.commit_unknown(commit) {
                // A heartbeat at the match index always matches, so it always succeeds.
                Some(progress.match_index.max(offset))
            } else {
                None
            };
            if let Some(prev) = prev.filter(|_| !sent) {
                progress.on_commit_sent(prev, commit);
                let request = self.append_entries_at(prev, false);
                self.messages.push((peer, Message::AppendEntries(request)));
            }
        }
        self.broadcast_pending = false;
    }

    /// An AppendEntries after `prev`, with entries if `with_entries` (within the batch limits).
    fn append_entries_at(&self, prev: LogIndex, with_entries: bool) -> AppendEntries {
        let entries = if with_entries {
            self.log.entries_from(
                prev.next(),
                self.config.append_entries_max,
                self.config.append_bytes_max,
            )
        } else {
            Vec::new()
        };
        AppendEntries {
            term: self.term,
            prev_log_index: prev,
            prev_log_term: self
                .log
                .term_at(prev)
                .expect("invariant: a leader sends only from within its log"),
            entries,
            leader_commit: self.log.commit(),
            read_round: self.read_round,
        }
    }

    fn on_propose(&mut self, from: NodeId, propose: Propose) {
        if self.role != Role::Leader || self.transfer.is_some() {
            // During a transfer, commands are refused like local ones: dropped here, the
            // sender's client retries with the next leader.
            // The sender's idea of the leader is stale; its client will time out and retry.
            return;
        }
        // Commands that do not fit under the bound are dropped, like any lost message.
        let room = self
            .config
            .proposals_pending_max
            .saturating_sub(self.uncommitted_len());
        let mut last = None;
        for command in propose.commands.into_iter().take(room) {
            last = Some(self.log.append(self.term, EntryPayload::Command(command)));
        }
        if let (Some(last), Some(progress)) = (last, self.progress.get_mut(&from)) {
            progress.forwarded_last = last;
        }
    }

    // ----- ReadIndex (thesis §6.4) ----------------------------------------------------------

    fn on_read_index_request(&mut self, from: NodeId, request: ReadIndexRequest) {
        if self.lease_valid() {
            self.messages.push((
                from,
                Message::ReadIndexResponse(ReadIndexResponse {
                    term: self.term,
                    ids: request.ids,
                    index: Some(self.log.commit()),
                }),
            ));
            return;
        }
        if self.role != Role::Leader {
            self.messages.push((
                from,
                Message::ReadIndexResponse(ReadIndexResponse {
                    term: self.term,
                    ids: request.ids,
                    index: None,
                }),
            ));
            return;
        }
        let room = self
            .config
            .reads_pending_max
            .saturating_sub(self.leader_reads.len());
        let mut ids = request.ids;
        let refused = ids.split_off(room.min(ids.len()));
        for id in ids {
            self.leader_reads.add(PendingRead {
                requester: Requester::Remote(from),
                id,
            });
        }
        if !refused.is_empty() {
            self.messages.push((
                from,
                Message::ReadIndexResponse(ReadIndexResponse {
                    term: self.term,
                    ids: refused,
                    index: None,
                }),
            ));
        }
    }

    fn on_read_index_response(&mut self, from: NodeId, response: &ReadIndexResponse) {
        if response.term != self.term || self.reads_forwarded.is_empty() {
            return;
        }
        // Only the leader we asked can vouch for an index; anyone may say it cannot.
        if response.index.is_some() && self.leader != Some(from) {
            return;
        }
        let answered: BTreeSet<ReadId> = response.ids.iter().copied().collect();
        let mut still_waiting = Vec::new();
        for id in std::mem::take(&mut self.reads_forwarded) {
            if !answered.contains(&id) {
                still_waiting.push(id);
            } else if let Some(index) = response.index {
                self.read_states.push(ReadState { id, index });
            } else {
                self.rejected_reads.push(id);
            }
        }
        self.reads_forwarded = still_waiting;
    }

    /// Leader: puts the waiting reads into a new round once an entry of this term is
    /// committed, and makes sure every follower hears of the round.
    fn start_read_round(&mut self) {
        if !self.leader_reads.has_waiting() || !self.has_committed_in_term() {
            return;
        }
        self.read_round += 1;
        self.note_lease_round();
        self.leader_reads
            .start_round(self.read_round, self.log.commit());
        self.broadcast_pending = true;
        self.release_confirmed_reads();
    }

    /// Leader: serves every read whose round a majority has confirmed.
    fn release_confirmed_reads(&mut self) {
        let confirmed = if self.config.injected_bugs().read_index_unconfirmed {
            // Deliberate bug: every round counts as confirmed by a quorum.
            self.read_round
        } else {
            self.quorum_value(self.read_round, |progress| progress.read_round_acked)
        };
        self.renew_lease(confirmed);
        let mut remote: BTreeMap<(NodeId, LogIndex), Vec<ReadId>> = BTreeMap::new();
        for (read, index) in self.leader_reads.take_confirmed(confirmed) {
            match read.requester {
                Requester::Local => self.read_states.push(ReadState { id: read.id, index }),
                Requester::Remote(peer) => remote.entry((peer, index)).or_default().push(read.id),
            }
        }
        for ((peer, index), ids) in remote {
            self.messages.push((
                peer,
                Message::ReadIndexResponse(ReadIndexResponse {
                    term: self.term,
                    ids,
                    index: Some(index),
                }),
            ));
        }
    }

    /// Leader: whether reads may be served from the lease now.
    fn lease_valid(&self) -> bool {
        self.config.lease_reads
            && self.role == Role::Leader
            && !self.lease_forfeited
            && self.transfer.is_none()
            && self.clock < self.lease_until
            && self.has_committed_in_term()
    }

    /// Leader with `lease_reads`: remembers that round `read_round` starts now.
    fn note_lease_round(&mut self) {
        if !self.config.lease_reads {
            return;
        }
        if self.lease_rounds.len() >= LEASE_ROUNDS_MAX {
            self.lease_rounds.pop_front();
        }
        self.lease_rounds.push_back((self.read_round, self.clock));
    }

    /// Leader with `lease_reads`: a quorum answered every round up to `confirmed`, so no
    /// other node can be elected until the lease from the latest of them runs out.
    fn renew_lease(&mut self, confirmed: u64) {
        let mut started = None;
        while let Some(&(round, at)) = self.lease_rounds.front() {
            if round > confirmed {
                break;
            }
            started = Some(at);
            self.lease_rounds.pop_front();
        }
        let Some(started) = started else {
            return;
        };
        if self.lease_forfeited || self.transfer.is_some() {
            return;
        }
        let ticks = if self.config.injected_bugs().lease_ignores_drift {
            // Deliberate bug: the whole election timeout, as if clocks were perfect.
            self.config.election_timeout_ticks
        } else {
            self.config.lease_ticks()
        };
        self.lease_until = self.lease_until.max(started.saturating_add(ticks));
    }

    /// Ends any read lease at once (the driver's clock fell behind, or leadership or the
    /// configuration changed): reads go through ReadIndex until a new quorum round renews it.
    pub fn drop_lease(&mut self) {
        self.lease_until = 0;
        self.lease_rounds.clear();
    }

    /// Leader: whether it would serve a read from its lease right now.
    #[must_use]
    pub fn holds_lease(&self) -> bool {
        self.lease_valid()
    }

    /// Leader: how many more of its own ticks the read lease lasts (0 when it holds none).
    #[must_use]
    pub fn lease_ticks_left(&self) -> u64 {
        if self.lease_valid() {
            self.lease_until - self.clock
        } else {
            0
        }
    }

    /// Every read this node holds is failed back to its caller (the node lost its leader or
    /// leadership; the caller retries).
    fn reject_pending_reads(&mut self) {
        let mut remote: BTreeMap<NodeId, Vec<ReadId>> = BTreeMap::new();
        for read in self.leader_reads.take_all() {
            match read.requester {
                Requester::Local => self.rejected_reads.push(read.id),
                Requester::Remote(peer) => remote.entry(peer).or_default().push(read.id),
            }
        }
        for (peer, ids) in remote {
            self.messages.push((
                peer,
                Message::ReadIndexResponse(ReadIndexResponse {
                    term: self.term,
                    ids,
                    index: None,
                }),
            ));
        }
        self.reject_forwarded_reads();
    }

    fn reject_forwarded_reads(&mut self) {
        self.rejected_reads.append(&mut self.reads_to_forward);
        self.rejected_reads.append(&mut self.reads_forwarded);
    }

    /// Follower: sends buffered proposals and reads to the leader in one message each.
    fn forward_to_leader(&mut self) {
        let Some(leader) = self.leader else {
            return;
        };
        if !self.proposals_to_forward.is_empty() {
            let commands = std::mem::take(&mut self.proposals_to_forward);
            self.messages.push((
                leader,
                Message::Propose(Propose {
                    term: self.term,
                    commands,
                }),
            ));
        }
        if !self.reads_to_forward.is_empty() {
            let ids = std::mem::take(&mut self.reads_to_forward);
            self.reads_forwarded.extend(ids.iter().copied());
            self.messages.push((
                leader,
                Message::ReadIndex(ReadIndexRequest {
                    term: self.term,
                    ids,
                }),
            ));
        }
    }

    fn hard_state_current(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit(),
            repairing: self.repairing,
        }
    }

    /// Ends a repair once the committed log is at least as up-to-date as the log was before
    /// the damage: its last committed entry is of a term after the one in which the lost
    /// entries could have been acknowledged, or at or after where the log ended before the
    /// damage. The log up to there is the log of the leader that sent it (Log Matching), and
    /// that leader held every committed entry this node had acknowledged (see
    /// [`RawNode::repair_grants`]): the node holds them all again.
    fn finish_repair_if_done(&mut self) {
        let Some(repairing) = self.repairing else {
            return;
        };
        let commit = self.log.commit();
        let Some(term) = self.log.term_at(commit) else {
            return;
        };
        let reached = LogPosition {
            term,
            index: commit,
        };
        if term > repairing
            || self
                .log_end_before_damage
                .is_some_and(|before| reached >= before)
        {
            self.repairing = None;
            self.log_end_before_damage = None;
        }
    }

    /// Whether this node grants its vote (or pre-vote) to a candidate whose log ends at
    /// `candidate`, as far as a repair is concerned (the usual up-to-date check comes on
    /// top).
    ///
    /// A repairing node lost entries it may have acknowledged, so its own log no longer
    /// speaks for them. It votes as its log *before the damage* would have: only for a
    /// candidate at least as up-to-date as where that log ended. Raft's argument (§5.4.3)
    /// needs nothing more from a voter than the place its log ends: a candidate at least as
    /// up-to-date holds every committed entry of that log. So this vote is as safe as a
    /// healthy voter's, and the node may elect a leader that repairs it (a cluster of two
    /// voters needs its vote). If the storage does not know where the log ended, only a
    /// candidate whose last entry is of a term after the one in which the lost entries could
    /// have been acknowledged qualifies: the first leader of such a term was elected without
    /// this node's vote, by a majority that shares a node with every majority that committed
    /// an entry (§5.4.1's argument, with this node counted out), and later ones are by
    /// induction.
    fn repair_grants(&self, candidate: LogPosition) -> bool {
        let Some(repairing) = self.repairing else {
            return true;
        };
        if self.config.injected_bugs().repairing_node_votes {
            return true;
        }
        match self.log_end_before_damage {
            Some(before) => candidate >= before,
            None => candidate.term > repairing,
        }
    }

    /// Whether this node must not campaign: it lost acknowledged entries and has not
    /// repaired them yet, so its log may lack committed ones (unless the injected bug says
    /// otherwise).
    fn abstains(&self) -> bool {
        self.repairing.is_some() && !self.config.injected_bugs().repairing_node_votes
    }
}

#[cfg(test)]
mod tests {
    //! Step tests: one input, then the whole Ready the node answers with.

    use super::*;

    fn id(n: u64) -> NodeId {
        NodeId(n)
    }

    fn follower() -> RawNode {
        RawNode::new(Config::new(id(1), vec![id(1), id(2), id(3)])).expect("valid config")
    }

    fn vote_request(term: u64, pre_vote: bool) -> Message {
        Message::RequestVote(RequestVote {
            term: Term(term),
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            pre_vote,
            transfer: false,
        })
    }

    #[test]
    fn a_granted_vote_is_sent_only_after_the_vote_is_durable() {
        let mut node = follower();
        node.step(id(2), vote_request(1, false)).expect("accepted");
        let ready = node.ready();
        assert_eq!(
            ready,
            Ready {
                hard_state: Some(HardState {
                    term: Term(1),
                    vote: Some(id(2)),
                    commit: LogIndex(0),
                    repairing: None,
                }),
                persisted_messages: vec![(
                    id(2),
                    Message::RequestVoteResponse(RequestVoteResponse {
                        term: Term(1),
                        granted: true,
                        pre_vote: false,
                    })
                )],
                ..Ready::default()
            }
        );
        node.advance();
        // One vote per term: another candidate of term 1 is refused, without a promise.
        node.step(id(3), vote_request(1, false)).expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.hard_state, None);
        assert_eq!(
            ready.messages,
            vec![(
                id(3),
                Message::RequestVoteResponse(RequestVoteResponse {
                    term: Term(1),
                    granted: false,
                    pre_vote: false,
                })
            )]
        );
    }

    #[test]
    fn a_pre_vote_is_answered_without_changing_any_state() {
        let mut node = follower();
        node.step(id(2), vote_request(5, true)).expect("accepted");
        assert_eq!(node.status().term, Term(0));
        assert_eq!(node.status().vote, None);
        let ready = node.ready();
        assert_eq!(
            ready,
            Ready {
                messages: vec![(
                    id(2),
                    Message::RequestVoteResponse(RequestVoteResponse {
                        term: Term(5),
                        granted: true,
                        pre_vote: true,
                    })
                )],
                ..Ready::default()
            }
        );
    }

    #[test]
    fn a_candidate_asks_for_votes_only_once_its_own_vote_is_durable() {
        let mut node = follower();
        node.campaign();
        let ready = node.ready();
        assert!(ready.messages.is_empty());
        assert_eq!(ready.persisted_messages.len(), 2);
        assert_eq!(
            ready.hard_state.map(|hard_state| hard_state.vote),
            Some(Some(id(1)))
        );
    }

    #[test]
    fn a_pre_candidate_becomes_candidate_on_a_pre_vote_majority() {
        let mut node = follower();
        while node.status().role == Role::Follower {
            node.tick();
        }
        assert_eq!(node.status().role, Role::PreCandidate);
        assert_eq!(node.status().term, Term(0), "a pre-vote changes no term");
        let granted = Message::RequestVoteResponse(RequestVoteResponse {
            term: Term(1),
            granted: true,
            pre_vote: true,
        });
        node.step(id(2), granted).expect("accepted");
        assert_eq!(node.status().role, Role::Candidate);
        assert_eq!(node.status().term, Term(1));
        assert_eq!(node.status().vote, Some(id(1)));
    }

    /// Leader 2's AppendEntries of term 1 after `prev`, with entries `indexes` (term 1).
    fn append(prev: u64, indexes: &[u64]) -> Message {
        Message::AppendEntries(AppendEntries {
            term: Term(1),
            prev_log_index: LogIndex(prev),
            prev_log_term: Term(u64::from(prev > 0)),
            entries: indexes
                .iter()
                .map(|&index| Entry {
                    index: LogIndex(index),
                    term: Term(1),
                    payload: EntryPayload::Command(Bytes::from_static(b"x")),
                })
                .collect(),
            leader_commit: LogIndex(0),
            read_round: 0,
        })
    }

    fn ack(match_index: u64) -> (NodeId, Message) {
        (
            id(2),
            Message::AppendEntriesResponse(AppendEntriesResponse {
                term: Term(1),
                success: true,
                match_index: LogIndex(match_index),
                conflict_index: LogIndex(0),
                conflict_term: None,
                read_round: 0,
            }),
        )
    }

    #[test]
    fn a_heartbeat_at_a_durable_match_index_is_answered_while_a_write_is_out() {
        let mut node = follower();
        node.step(id(2), append(0, &[1])).expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.persisted_messages, vec![ack(1)]);
        node.advance();
        // Entry 2 arrives; its write is out (the disk hangs).
        node.step(id(2), append(1, &[2])).expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.persisted_messages, vec![ack(2)]);
        // A heartbeat at the durable match index promises nothing new: answered at once.
        node.step(id(2), append(1, &[])).expect("accepted");
        assert_eq!(node.take_messages(), vec![ack(1)]);
        // One at entry 2, or one that brings an entry again, promises what is not durable
        // yet: it waits for the next Ready.
        node.step(id(2), append(2, &[])).expect("accepted");
        node.step(id(2), append(1, &[2])).expect("accepted");
        assert!(node.take_messages().is_empty());
        node.advance();
        let ready = node.ready();
        assert_eq!(ready.persisted_messages, vec![ack(2), ack(2)]);
        assert!(ready.messages.is_empty());
    }

    /// `append` with the leader's commit index at `commit`.
    fn append_committing(prev: u64, indexes: &[u64], commit: u64) -> Message {
        let Message::AppendEntries(mut request) = append(prev, indexes) else {
            unreachable!("append builds an AppendEntries");
        };
        request.leader_commit = LogIndex(commit);
        Message::AppendEntries(request)
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|entry| entry.index.0).collect()
    }

    #[test]
    fn what_commits_while_a_write_is_out_is_applied_once_without_waiting_for_it() {
        let mut node = follower();
        node.step(id(2), append(0, &[1, 2])).expect("accepted");
        let ready = node.ready();
        assert_eq!(indexes(&ready.entries), vec![1, 2]);
        assert!(ready.committed_entries.is_empty());
        // The write of entries 1 and 2 is out when the leader says 1 is committed: a majority
        // holds it, so it is given at once, and the next Ready does not give it again.
        node.step(id(2), append_committing(2, &[], 1))
            .expect("accepted");
        let committed = node.take_committed();
        assert_eq!(indexes(&committed.entries), vec![1]);
        assert!(node.take_committed().is_empty());
        node.step(id(2), append_committing(2, &[], 2))
            .expect("accepted");
        node.advance();
        let ready = node.ready();
        assert_eq!(indexes(&ready.committed_entries), vec![2]);
    }

    #[test]
    fn a_leader_applies_what_followers_acknowledged_while_its_own_next_write_is_out() {
        let mut node = follower();
        node.campaign();
        let _ = node.ready();
        node.advance();
        let granted = Message::RequestVoteResponse(RequestVoteResponse {
            term: Term(1),
            granted: true,
            pre_vote: false,
        });
        node.step(id(2), granted).expect("accepted");
        assert_eq!(node.status().role, Role::Leader);
        assert_eq!(indexes(&node.ready().entries), vec![1]);
        node.advance();
        node.propose(Bytes::from_static(b"a")).expect("leader");
        assert_eq!(indexes(&node.ready().entries), vec![2]);
        // The leader's write of entry 2 is out. Follower 2 holds 1 and 2: entry 1 is on a
        // majority (the leader's durable copy and 2's), entry 2 is not (the leader's own
        // copy counts only once durable).
        let (from, ack_2) = ack(2);
        node.step(from, ack_2).expect("accepted");
        assert_eq!(indexes(&node.take_committed().entries), vec![1]);
        // Follower 3 holds them too: entry 2 is on a majority without the leader's copy.
        let (_, ack_3) = ack(2);
        node.step(id(3), ack_3).expect("accepted");
        assert_eq!(indexes(&node.take_committed().entries), vec![2]);
        node.advance();
        assert!(node.ready().committed_entries.is_empty());
    }

    #[test]
    fn what_one_ready_cannot_carry_is_given_early_after_it() {
        let mut node = follower();
        let last = COMMITTED_ENTRIES_MAX as u64 + 10;
        let all: Vec<u64> = (1..=last).collect();
        node.step(id(2), append_committing(0, &all, last))
            .expect("accepted");
        let ready = node.ready();
        let first = indexes(&ready.committed_entries);
        assert_eq!(first.len(), COMMITTED_ENTRIES_MAX);
        // The rest follows on from where the Ready stopped, once.
        let rest = indexes(&node.take_committed().entries);
        assert_eq!(rest.first(), Some(&(COMMITTED_ENTRIES_MAX as u64 + 1)));
        assert_eq!(rest.last(), Some(&last));
        assert!(node.take_committed().is_empty());
        node.advance();
        assert!(node.ready().committed_entries.is_empty());
    }

    #[test]
    fn nothing_commits_early_while_the_outstanding_ready_asks_for_a_snapshot() {
        let mut config = Config::new(id(1), vec![id(1), id(2), id(3)]);
        config.snapshot_threshold_entries = 1;
        let mut node = RawNode::new(config).expect("valid config");
        node.step(id(2), append_committing(0, &[1, 2], 1))
            .expect("accepted");
        let ready = node.ready();
        assert_eq!(indexes(&ready.committed_entries), vec![1]);
        assert_eq!(ready.snapshot_due.map(|meta| meta.index), Some(LogIndex(1)));
        // The snapshot is taken at entry 1: nothing after it is applied before `advance`.
        node.step(id(2), append_committing(2, &[], 2))
            .expect("accepted");
        assert!(node.take_committed().is_empty());
        node.advance();
        assert_eq!(indexes(&node.ready().committed_entries), vec![2]);
    }

    #[test]
    fn nothing_commits_early_while_the_outstanding_ready_installs_a_snapshot() {
        let mut node = follower();
        let meta = SnapshotMeta {
            index: LogIndex(10),
            term: Term(1),
        };
        let chunk = InstallSnapshot::new(
            Term(1),
            meta,
            0,
            Bytes::from_static(b"state"),
            true,
            Membership::with_voters([id(1), id(2), id(3)]),
        );
        node.step(id(2), Message::InstallSnapshot(chunk))
            .expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.snapshot, Some(meta));
        // The leader goes on after the snapshot and commits entry 11 while the install is
        // out: the state must stand at entry 10 until the Ready is advanced.
        node.step(id(2), append_committing(10, &[11, 12], 11))
            .expect("accepted");
        assert!(node.take_committed().is_empty());
        node.advance();
        assert_eq!(indexes(&node.ready().committed_entries), vec![11]);
    }

    // Entries applied while a snapshot is being written are not in it: they count toward the
    // next one. (The count used to restart from zero when the snapshot was reported, so under
    // steady load every snapshot came later than its byte threshold said.)
    #[test]
    fn bytes_applied_while_a_snapshot_is_written_count_toward_the_next_one() {
        let mut config = Config::new(id(1), vec![id(1), id(2), id(3)]);
        config.snapshot_threshold_entries = 1_000_000;
        // Five of the test's 25-byte entries.
        config.snapshot_threshold_bytes = 125;
        config.compaction_tail_entries = 0;
        let mut node = RawNode::new(config).expect("valid config");
        node.step(id(2), append_committing(0, &[1, 2, 3, 4, 5], 5))
            .expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.snapshot_due.map(|meta| meta.index), Some(LogIndex(5)));
        node.advance();
        // Four more are applied while the snapshot of entry 5 is written.
        node.step(id(2), append_committing(5, &[6, 7, 8, 9], 9))
            .expect("accepted");
        let ready = node.ready();
        assert_eq!(indexes(&ready.committed_entries), vec![6, 7, 8, 9]);
        assert_eq!(ready.snapshot_due, None, "one snapshot at a time");
        node.advance();
        node.on_snapshot_taken(SnapshotMeta {
            index: LogIndex(5),
            term: Term(1),
        })
        .expect("taken");
        // With those four counted, the fifth after the snapshot passes the threshold.
        node.step(id(2), append_committing(9, &[10], 10))
            .expect("accepted");
        let ready = node.ready();
        assert_eq!(indexes(&ready.committed_entries), vec![10]);
        assert_eq!(
            ready.snapshot_due.map(|meta| meta.index),
            Some(LogIndex(10))
        );
    }

    #[test]
    fn a_heartbeat_in_a_term_not_yet_durable_waits_for_the_disk() {
        let mut node = follower();
        // The heartbeat moves the follower to term 1: its answer carries a term that is not
        // durable yet.
        node.step(id(2), append(0, &[])).expect("accepted");
        assert!(node.take_messages().is_empty());
        let ready = node.ready();
        assert_eq!(ready.persisted_messages, vec![ack(0)]);
    }

    #[cfg(feature = "inject-bugs")]
    #[test]
    fn the_injected_bug_sends_votes_before_they_are_durable() {
        let mut config = Config::new(id(1), vec![id(1), id(2), id(3)]);
        config.injected_bugs.ack_before_durable = true;
        let mut node = RawNode::new(config).expect("valid config");
        node.step(id(2), vote_request(1, false)).expect("accepted");
        let ready = node.ready();
        assert_eq!(ready.messages.len(), 1);
        assert!(ready.persisted_messages.is_empty());
    }
}
