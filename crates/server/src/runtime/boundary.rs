//! The boundary between a node's driver thread and everything else in the process.
//!
//! The transport, the client frontends and the admin server never touch a protocol core: they
//! hand the driver [`Input`]s through one bounded queue ([`offer`]), hear back through oneshot
//! channels ([`Reply`]), and read what the driver publishes in [`Shared`]. The driver hands
//! outgoing peer messages to the transport through one bounded queue per peer
//! ([`send_to_peer`]). Nothing here knows which replication scheme runs, so every scheme is
//! served by the same transport and frontends; this file is the only thing both sides import.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::RwLock;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{SyncSender, TrySendError};

use bytes::Bytes;
use chorus_core::NodeId;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// This node's wall clock in Unix milliseconds: what it stamps on the commands and time ticks
/// it proposes (the log clock, by which keys expire, is the largest stamp applied).
#[must_use]
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}

/// Why a client request got no answer from the state machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// No leader (or primary) is known right now; nothing was proposed. Safe to retry.
    #[error("no leader is known; try again")]
    Unavailable,
    /// This node is not the primary of the primary-backup view it knows; `node` is, and takes
    /// clients at `redis`. Nothing was proposed: send the request there.
    #[error("not the primary; {node} at {redis} is")]
    NotPrimary {
        /// The primary of the latest view this node knows.
        node: NodeId,
        /// The primary's RESP address.
        redis: SocketAddr,
    },
    /// Queues are full; nothing was proposed. Safe to retry.
    #[error("the node is busy; try again")]
    Busy,
    /// The request was proposed but did not apply in time: it may or may not take effect.
    #[error("timed out: the outcome is unknown")]
    Timeout,
    /// The node is shutting down.
    #[error("the node is shutting down")]
    Stopped,
}

/// The answer channel of a client request.
pub type Reply = oneshot::Sender<Result<Bytes, RequestError>>;

/// One message between nodes, of whichever scheme the cluster runs. A driver refuses a
/// message of another scheme (a misconfigured cluster), counting it as refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerMessage {
    /// A Raft message.
    Raft(chorus_raft::Message),
    /// A primary-backup (or view service) message.
    Pb(chorus_pb::Message),
}

/// Something for the driver to do.
#[derive(Debug)]
pub enum Input {
    /// A message from a peer.
    Peer {
        /// The sender.
        from: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// Replicate a state machine command and answer with its output.
    Write {
        /// The encoded command.
        command: Bytes,
        /// Where the output goes.
        reply: Reply,
    },
    /// Answer a read-only query linearizably (Raft: ReadIndex; primary-backup: confirmed with
    /// the backup).
    Read {
        /// The encoded query.
        query: Bytes,
        /// Where the answer goes.
        reply: Reply,
    },
}

/// A snapshot of the node for the admin page and the INFO command.
///
/// The Raft fields are kept for a primary-backup node too, with the nearest meaning, so tools
/// reading either see the same shape: `leader` is the primary, `commit` equals `applied`, and
/// `term`, `last_index` and `match_index` stay empty. The `view` block appears only under
/// primary-backup.
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    /// `raft` or `pb`.
    pub protocol: String,
    /// This node.
    pub id: u64,
    /// Raft: `leader`, `follower`, `candidate` or `pre-candidate`. Primary-backup: `primary`,
    /// `backup`, `idle` (a spare) or `view-service`.
    pub role: String,
    /// The current term.
    pub term: u64,
    /// The leader this node knows of (primary-backup: the primary of the latest view).
    pub leader: Option<u64>,
    /// The commit index.
    pub commit: u64,
    /// The applied index.
    pub applied: u64,
    /// The last log index.
    pub last_index: u64,
    /// As leader: each follower's match index.
    pub match_index: BTreeMap<String, u64>,
    /// Keys in the store.
    pub keys: u64,
    /// Raft: the index of the latest snapshot the log was compacted to (0: none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_index: Option<u64>,
    /// Raft: the size in bytes of that snapshot's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_bytes: Option<u64>,
    /// Raft: the first index held in the log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_index: Option<u64>,
    /// Primary-backup only: the latest view this node knows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub view: Option<ViewStatus>,
}

/// A primary-backup view as the admin page shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ViewStatus {
    /// The view number (0: no view yet).
    pub number: u64,
    /// The primary.
    pub primary: Option<u64>,
    /// The backup.
    pub backup: Option<u64>,
    /// The primary acknowledged this view (so the view service may move on from it).
    pub acked: bool,
    /// On a server: it is the primary and allowed to take operations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acting_primary: Option<bool>,
    /// On a primary: the backup installed this view's state.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backup_ready: Option<bool>,
    /// On a primary: operations waiting for the backup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<u64>,
}

/// What the driver shares with the rest of the process.
#[derive(Debug)]
pub struct Shared {
    /// The latest status, refreshed after every batch.
    pub status: RwLock<NodeStatus>,
    /// The metrics.
    pub metrics: Metrics,
    /// Set to ask the driver to stop; it checks at least once per tick.
    pub shutdown: AtomicBool,
    /// Set (by `POST /snapshot`) to ask the driver for a snapshot now; checked every tick.
    pub snapshot_requested: AtomicBool,
}

impl Shared {
    /// Fresh shared state.
    #[must_use]
    pub fn new() -> Shared {
        Shared {
            status: RwLock::new(NodeStatus::default()),
            metrics: Metrics::new(),
            shutdown: AtomicBool::new(false),
            snapshot_requested: AtomicBool::new(false),
        }
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

/// The outgoing queue of each peer, filled by the driver and drained by the transport.
pub type Outboxes = BTreeMap<NodeId, mpsc::Sender<PeerMessage>>;

/// Queues `message` for peer `to` without waiting. A full queue means the peer is slow or
/// unreachable; every scheme retransmits, so the message is dropped (and counted) rather than
/// letting the queue grow. A message for an unknown node is ignored.
pub fn send_to_peer(peers: &Outboxes, shared: &Shared, to: NodeId, message: PeerMessage) {
    let Some(peer) = peers.get(&to) else {
        return;
    };
    if let Err(mpsc::error::TrySendError::Full(_)) = peer.try_send(message) {
        shared.metrics.peer_messages_dropped.inc();
    }
}

/// Queues an input for the driver without waiting.
///
/// # Errors
/// [`RequestError::Busy`] if the driver's queue is full, [`RequestError::Stopped`] if the
/// driver is gone.
pub fn offer(inputs: &SyncSender<Input>, input: Input) -> Result<(), RequestError> {
    inputs.try_send(input).map_err(|error| match error {
        TrySendError::Full(_) => RequestError::Busy,
        TrySendError::Disconnected(_) => RequestError::Stopped,
    })
}
