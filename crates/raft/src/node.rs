//! [`RawNode`]: the Raft state machine itself.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};

use crate::config::{Config, ConfigError};
use crate::message::{Entry, HardState, Message, ReadId};
use crate::ready::Ready;

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
}

/// What was durable when a node stopped, given to [`RawNode::restart`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DurableState {
    /// The last durable hard state.
    pub hard_state: HardState,
    /// The durable log, contiguous from index 1.
    pub entries: Vec<Entry>,
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

/// One Raft node. See the crate docs for the driving contract.
#[derive(Debug)]
pub struct RawNode {
    config: Config,
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
    /// # Errors
    /// [`ConfigError`] if the configuration cannot work.
    pub fn restart(config: Config, durable: DurableState) -> Result<RawNode, ConfigError> {
        let _ = durable;
        config.validate()?;
        todo!()
    }

    /// Logical time moved one tick.
    pub fn tick(&mut self) {
        todo!()
    }

    /// A message arrived from `from`.
    ///
    /// # Errors
    /// [`StepError`] if the message is malformed or its sender unknown; the node is unchanged.
    pub fn step(&mut self, from: NodeId, message: Message) -> Result<(), StepError> {
        let _ = (from, message);
        todo!()
    }

    /// A client asks to replicate `command`.
    ///
    /// # Errors
    /// [`ProposeError`] if the command cannot be taken now; it entered no log.
    pub fn propose(&mut self, command: Bytes) -> Result<Proposed, ProposeError> {
        let _ = command;
        todo!()
    }

    /// A client asks for a linearizable read, named `id`. A later Ready carries either a
    /// [`crate::ReadState`] or a rejection for it (or, if messages are lost, nothing: the caller
    /// times out).
    ///
    /// # Errors
    /// [`ReadError`] if the read cannot be started now.
    pub fn read_index(&mut self, id: ReadId) -> Result<(), ReadError> {
        let _ = id;
        todo!()
    }

    /// Starts an election at once (for tests and leadership hand-over).
    pub fn campaign(&mut self) {
        todo!()
    }

    /// Whether a Ready with work is available.
    #[must_use]
    pub fn has_ready(&self) -> bool {
        todo!()
    }

    /// Takes the pending work.
    ///
    /// # Panics
    /// If the previous Ready was not yet advanced.
    pub fn ready(&mut self) -> Ready {
        todo!()
    }

    /// The driver finished the last Ready: its state is durable, its messages sent, its
    /// entries applied.
    ///
    /// # Panics
    /// If no Ready is outstanding.
    pub fn advance(&mut self) {
        todo!()
    }

    /// A read-only view of the node.
    #[must_use]
    pub fn status(&self) -> Status {
        todo!()
    }

    /// The configuration the node runs with.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The term of the entry at `index`, if the log holds it (term 0 for index 0).
    #[must_use]
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        let _ = index;
        todo!()
    }

    /// The entry at `index`, if the log holds it.
    #[must_use]
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        let _ = index;
        todo!()
    }

    /// The durable hard state most recently handed out (for checkers).
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        todo!()
    }
}
