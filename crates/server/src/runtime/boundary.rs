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
use std::sync::atomic::AtomicBool;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::NodeId;
use serde::{Deserialize, Serialize};
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
    /// A hybrid message between data servers, or between a data server and the
    /// configuration group (whose nodes talk Raft among themselves).
    Hybrid(chorus_hybrid::Message),
    /// Where members listen: the Raft leader sends its address book to every member (at
    /// once when it changes, and every second), so that every node can reach members added
    /// after it started ([`crate::runtime::members`]). Any scheme's driver takes it.
    Addresses(Vec<MemberAddress>),
}

/// Where one member of the cluster listens, as the address book holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddress {
    /// The node.
    pub id: NodeId,
    /// Its peer (protocol) address.
    pub peer: SocketAddr,
    /// Its RESP address, if it takes clients.
    pub redis: Option<SocketAddr>,
    /// Its HTTP admin address.
    pub admin: SocketAddr,
}

/// A membership operation asked through the HTTP admin endpoints (`chorus admin`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminRequest {
    /// Add a node, which listens at these addresses, as a learner.
    AddLearner(MemberAddress),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
    /// Hand leadership to this voter.
    TransferLeader(NodeId),
}

/// An admin operation the leader took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminAccepted {
    /// The configuration entry went into the log at `index` in `term`; the change is done
    /// once that index commits in that term.
    Proposed {
        /// Where the entry sits.
        index: u64,
        /// The leader's term.
        term: u64,
    },
    /// Nothing needed to change (the node is already that kind of member).
    AlreadyDone,
    /// A leadership transfer began in `term`; it is done once the target leads.
    Transferring {
        /// The leader's term when the transfer began.
        term: u64,
    },
}

/// Why an admin operation was not taken. Nothing entered the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// Only the leader changes membership: `leader` (whose admin endpoint is `admin`, if this
    /// node knows it) does, or no leader is known.
    #[error("this node is not the leader{}", match (leader, admin) {
        (Some(leader), Some(admin)) => format!("; node {leader} is, at {admin}"),
        (Some(leader), None) => format!("; node {leader} is"),
        _ => "; no leader is known".to_string(),
    })]
    NotLeader {
        /// The leader this node knows of.
        leader: Option<NodeId>,
        /// The leader's admin address.
        admin: Option<SocketAddr>,
    },
    /// Not now (a change or transfer in progress, a learner still catching up, a new
    /// leader that has not committed in its term): retrying shortly may succeed.
    #[error("{0}")]
    Retry(String),
    /// The operation does not apply (not a member, the last voter, a foreign cluster...).
    #[error("{0}")]
    Refused(String),
    /// This node's scheme has no membership changes.
    #[error("this node's replication scheme does not change membership")]
    Unsupported,
    /// The node's queue is full or it is stopping.
    #[error("the node is busy or stopping; try again")]
    Busy,
}

/// Where the answer to an admin operation goes.
pub type AdminReply = oneshot::Sender<Result<AdminAccepted, AdminError>>;

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
    /// A membership operation from the admin endpoint.
    Admin {
        /// What to do.
        request: AdminRequest,
        /// Where the answer goes.
        reply: AdminReply,
    },
    /// The node's storage thread finished a job: the driver wakes to take its outcome (it
    /// looks for outcomes on every turn of its loop, so a wake-up lost to a full queue costs
    /// nothing).
    StorageDone,
}

/// A snapshot of the node for the admin page and the INFO command.
///
/// The Raft fields are kept for a primary-backup node too, with the nearest meaning, so tools
/// reading either see the same shape: `leader` is the primary, `commit` equals `applied`, and
/// `term`, `last_index` and `match_index` stay empty. The `view` block appears only under
/// primary-backup, the `hybrid` block only under the hybrid scheme (where a data server fills
/// the Raft fields as a primary-backup server does, and a configuration node as a Raft node).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NodeStatus {
    /// `raft`, `pb` or `hybrid`.
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
    /// Raft: the voters of the configuration in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voters: Option<Vec<u64>>,
    /// Raft: the learners of the configuration in force.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub learners: Option<Vec<u64>>,
    /// Raft: whether the configuration in force is committed (no change is in progress).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership_committed: Option<bool>,
    /// Raft, on a leader: the target of a leadership transfer in progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transfer_target: Option<u64>,
    /// Raft: where every node in this node's address book listens.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<MemberAddress>,
    /// Raft: set while the node repairs a log whose synced records a disk fault damaged
    /// (the term the lost entries could have been acknowledged in); it starts no election,
    /// and votes only as its log before the damage would have, until a leader has brought its
    /// log back.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repairing: Option<u64>,
    /// Raft: whether linearizable reads may be served from the leader's lease (`[reads]
    /// lease`, thesis §6.4.1) rather than always by a ReadIndex round.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_reads: Option<bool>,
    /// Raft with lease reads on: whether this node holds a read lease now (only a leader
    /// whose last quorum round is recent enough does; it answers reads at once meanwhile).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_held: Option<bool>,
    /// Raft, on a leader holding a read lease: how many of its ticks the lease lasts yet,
    /// unless a quorum round renews it first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_ticks_left: Option<u64>,
    /// Hybrid only: the epoch, the view, the lease state and the configuration leader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hybrid: Option<HybridStatus>,
}

/// What a hybrid node shows on the admin page.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct HybridStatus {
    /// The epoch of the latest view this node knows (0: none yet).
    pub epoch: u64,
    /// That view's primary.
    pub primary: Option<u64>,
    /// That view's backups.
    pub backups: Vec<u64>,
    /// Whether that view is active (a new primary's view is pending until it activates it).
    pub active: bool,
    /// The configuration group's leader, as this node knows it.
    pub config_leader: Option<u64>,
    /// Data server: the highest epoch it persisted (it refuses anything older).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub highest_epoch: Option<u64>,
    /// Data server: whether it passes the serving rule now (primary of an active view, every
    /// lease unexpired).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<bool>,
    /// Primary: the time left on the lease from each backup, in milliseconds (0: expired).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub lease_ms: BTreeMap<String, u64>,
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
    /// TESTING ONLY: an injected fsync stall (`POST /debug/stall-fsync`, with
    /// `[debug] fault_injection` on).
    pub fsync_stall: FsyncStall,
    /// Reads a client connection may answer on its own thread (a Raft leader's lease reads),
    /// set once by a host that offers them.
    pub local_reads: OnceLock<Arc<dyn LocalReads>>,
}

/// Reads a node answers on the client connection's own thread, without a trip through the
/// driver's queue: a Raft leader's lease reads ([`super::lease_gate::LeaseGate`]). Everything
/// such a read needs (that the lease holds, that the state is applied far enough) the driver
/// publishes in the implementation; a read it cannot vouch for goes to the driver as before.
pub trait LocalReads: Send + Sync + std::fmt::Debug {
    /// The state machine's answer to `query` if this node may give it here and now, or
    /// `None`: hand the read to the driver.
    fn try_read(&self, query: &[u8]) -> Option<Bytes>;
}

/// TESTING ONLY: a deadline before which the storage thread's syncs do not finish, as when a
/// disk hangs. Set by `POST /debug/stall-fsync?ms=N` (only with `[debug] fault_injection`
/// on); honoured by the Raft host's storage thread, which sleeps until the deadline before
/// each sync (and each compaction, which syncs).
#[derive(Debug, Default)]
pub struct FsyncStall {
    until: Mutex<Option<Instant>>,
}

impl FsyncStall {
    /// Makes every sync from now until `duration` from now wait until then (a later
    /// deadline already set is kept).
    pub fn stall_for(&self, duration: Duration) {
        let until = Instant::now() + duration;
        if let Ok(mut current) = self.until.lock() {
            *current = Some(current.map_or(until, |current| current.max(until)));
        }
    }

    /// The deadline, if one is set and still ahead.
    #[must_use]
    pub fn until(&self) -> Option<Instant> {
        let until = (*self.until.lock().ok()?)?;
        (until > Instant::now()).then_some(until)
    }
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
            fsync_stall: FsyncStall::default(),
            local_reads: OnceLock::new(),
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
