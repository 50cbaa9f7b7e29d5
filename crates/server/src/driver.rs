//! The driver: the one thread that owns a node's Raft core, state machine and log, and runs the
//! core's contract for real.
//!
//! Everything else (the transport, the client frontends, the admin server) talks to it through
//! one bounded queue of [`Input`]s and hears back through oneshot channels, and reads what it
//! publishes in [`Shared`]. That boundary is protocol-agnostic: the primary-backup driver
//! ([`crate::pb_driver`]) takes the same inputs and publishes the same way, so the transport,
//! the RESP frontend and the admin server serve either scheme unchanged. The loop:
//!
//! 1. wait for an input or the next tick; then take every input already queued (bounded), so
//!    that all requests that arrived during the last fsync become one batch;
//! 2. tick the core when a tick is due, and expire client requests that waited too long;
//! 3. while the core has a Ready: send its messages, write and fsync its entries and hard state
//!    (one fsync for the whole batch: group commit), send the messages that promise durability,
//!    apply committed entries and answer the clients whose requests they carry, serve reads
//!    whose index is applied, and advance.
//!
//! The driver runs on a plain OS thread, not a tokio task, because fsync blocks.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, StateMachine, Term};
use chorus_kv::{KvConfig, KvStore};
use chorus_raft::{Entry, EntryPayload, Message, RawNode, ReadId, Ready, Role};
use chorus_storage::Storage;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::transport::PeerMessage;

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
    pub shutdown: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Fresh shared state.
    #[must_use]
    pub fn new() -> Shared {
        Shared {
            status: RwLock::new(NodeStatus::default()),
            metrics: Metrics::new(),
            shutdown: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl Default for Shared {
    fn default() -> Shared {
        Shared::new()
    }
}

struct PendingRead {
    query: Bytes,
    reply: Reply,
}

/// The driver of one node.
pub struct Driver<S: Storage> {
    raft: RawNode,
    store: KvStore,
    storage: S,
    inputs: Receiver<Input>,
    peers: BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
    shared: Arc<Shared>,
    tick: Duration,
    request_timeout: Duration,
    requests_pending_max: usize,
    batch_inputs_max: usize,
    /// High bits of request numbers: differ between runs of this node, so a request number
    /// in a replayed entry never matches a live request.
    incarnation: u64,
    next_request: u64,
    writes: BTreeMap<u64, Reply>,
    reads: BTreeMap<ReadId, PendingRead>,
    ready_reads: Vec<(LogIndex, ReadId)>,
    /// Request numbers in the order they were taken, with their deadlines (deadlines grow
    /// with the order, so expiry pops from the front).
    deadlines: VecDeque<(Instant, u64)>,
    last_leader: Option<(Term, Option<NodeId>)>,
    last_role: Role,
}

/// How a driver is set up.
pub struct DriverSettings {
    /// Length of a tick.
    pub tick: Duration,
    /// How long a request may wait for its entry to apply.
    pub request_timeout: Duration,
    /// Requests held at once.
    pub requests_pending_max: usize,
    /// Inputs taken into one batch.
    pub batch_inputs_max: usize,
    /// Distinguishes this run of the node from earlier ones.
    pub incarnation: u64,
}

impl<S: Storage> Driver<S> {
    /// A driver for `raft`, restarted from `storage`'s durable state.
    #[must_use]
    pub fn new(
        raft: RawNode,
        storage: S,
        inputs: Receiver<Input>,
        peers: BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
        shared: Arc<Shared>,
        settings: DriverSettings,
    ) -> Driver<S> {
        Driver {
            last_role: raft.status().role,
            raft,
            store: KvStore::new(KvConfig::default()),
            storage,
            inputs,
            peers,
            shared,
            tick: settings.tick,
            request_timeout: settings.request_timeout,
            requests_pending_max: settings.requests_pending_max,
            batch_inputs_max: settings.batch_inputs_max,
            incarnation: settings.incarnation & 0xFFFF_FFFF,
            next_request: 0,
            writes: BTreeMap::new(),
            reads: BTreeMap::new(),
            ready_reads: Vec::new(),
            deadlines: VecDeque::new(),
            last_leader: None,
        }
    }

    /// Runs until shutdown or until every input sender is gone.
    ///
    /// # Errors
    /// A storage error: the node cannot keep its promises, so it stops.
    pub fn run(mut self) -> Result<(), chorus_storage::StorageError> {
        let mut next_tick = Instant::now() + self.tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            let first = match self.inputs.recv_timeout(wait) {
                Ok(input) => Some(input),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if let Some(input) = first {
                self.handle(input);
                for _ in 1..self.batch_inputs_max {
                    match self.inputs.try_recv() {
                        Ok(input) => self.handle(input),
                        Err(_) => break,
                    }
                }
            }
            let now = Instant::now();
            if now >= next_tick {
                self.raft.tick();
                next_tick += self.tick;
                if next_tick < now {
                    // The thread fell behind (a long fsync): skip the missed ticks rather
                    // than firing them in a burst that would look like an election timeout.
                    next_tick = now + self.tick;
                }
                self.expire(now);
            }
            while self.raft.has_ready() {
                let ready = self.raft.ready();
                self.process(ready)?;
            }
            self.publish();
            if self
                .shared
                .shutdown
                .load(std::sync::atomic::Ordering::Relaxed)
            {
                break;
            }
        }
        self.fail_everything();
        Ok(())
    }

    fn request_number(&mut self) -> u64 {
        self.next_request += 1;
        (self.incarnation << 32) | (self.next_request & 0xFFFF_FFFF)
    }

    fn held(&self) -> usize {
        self.writes.len() + self.reads.len()
    }

    /// Handles one input.
    fn handle(&mut self, input: Input) {
        match input {
            Input::Peer {
                from,
                message: PeerMessage::Raft(message),
            } => {
                if let Err(error) = self.raft.step(from, message) {
                    self.shared.metrics.peer_messages_refused.inc();
                    tracing::warn!(%from, %error, "refused a message from a peer");
                }
            }
            Input::Peer {
                from,
                message: PeerMessage::Pb(_),
            } => {
                self.shared.metrics.peer_messages_refused.inc();
                tracing::warn!(%from, "refused a primary-backup message: this node runs Raft");
            }
            Input::Write { command, reply } => {
                if self.held() >= self.requests_pending_max {
                    self.shared.metrics.proposals_refused.inc();
                    let _ = reply.send(Err(RequestError::Busy));
                    return;
                }
                let request = self.request_number();
                let envelope = Envelope {
                    origin: self.raft.config().id,
                    request,
                    command,
                };
                match self.raft.propose(envelope.encode()) {
                    Ok(_) => {
                        self.shared.metrics.proposals.inc();
                        self.writes.insert(request, reply);
                        self.deadlines
                            .push_back((Instant::now() + self.request_timeout, request));
                    }
                    Err(error) => {
                        self.shared.metrics.proposals_refused.inc();
                        let answer = match error {
                            chorus_raft::ProposeError::NoLeader => RequestError::Unavailable,
                            chorus_raft::ProposeError::TooManyPending => RequestError::Busy,
                        };
                        let _ = reply.send(Err(answer));
                    }
                }
            }
            Input::Read { query, reply } => {
                if self.held() >= self.requests_pending_max {
                    let _ = reply.send(Err(RequestError::Busy));
                    return;
                }
                let request = self.request_number();
                let id = ReadId(request);
                match self.raft.read_index(id) {
                    Ok(()) => {
                        self.reads.insert(id, PendingRead { query, reply });
                        self.deadlines
                            .push_back((Instant::now() + self.request_timeout, request));
                    }
                    Err(error) => {
                        let answer = match error {
                            chorus_raft::ReadError::NoLeader => RequestError::Unavailable,
                            chorus_raft::ReadError::TooManyPending => RequestError::Busy,
                        };
                        let _ = reply.send(Err(answer));
                    }
                }
            }
        }
    }

    /// Times out requests that waited too long. Their entries may still apply later: the
    /// client is told the outcome is unknown, never that the request failed.
    fn expire(&mut self, now: Instant) {
        while let Some(&(deadline, request)) = self.deadlines.front() {
            if deadline > now {
                break;
            }
            self.deadlines.pop_front();
            let reply = self
                .writes
                .remove(&request)
                .or_else(|| self.reads.remove(&ReadId(request)).map(|read| read.reply));
            if let Some(reply) = reply {
                self.shared.metrics.request_timeouts.inc();
                let _ = reply.send(Err(RequestError::Timeout));
            }
        }
    }

    fn send(&self, messages: Vec<(NodeId, Message)>) {
        for (to, message) in messages {
            send_to_peer(&self.peers, &self.shared, to, PeerMessage::Raft(message));
        }
    }

    fn process(&mut self, ready: Ready) -> Result<(), chorus_storage::StorageError> {
        let Ready {
            messages,
            hard_state,
            entries,
            persisted_messages,
            committed_entries,
            read_states,
            rejected_reads,
        } = ready;
        // 1. Replication goes out while the leader's own copy is being written.
        self.send(messages);
        // 2. Apply, answer, serve reads. Committed entries are already durable on a majority
        //    (a leader counts its own copy only once durable), so clients need not wait for
        //    this node's fsync below, which often only records the new commit index.
        for entry in &committed_entries {
            self.apply(entry);
        }
        self.ready_reads
            .extend(read_states.iter().map(|state| (state.index, state.id)));
        self.serve_reads();
        for id in rejected_reads {
            if let Some(read) = self.reads.remove(&id) {
                let _ = read.reply.send(Err(RequestError::Unavailable));
            }
        }
        // 3. Durable before anything that promises it.
        if hard_state.is_some() || !entries.is_empty() {
            self.storage.write(hard_state, &entries)?;
            let started = Instant::now();
            self.storage.sync()?;
            self.shared
                .metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            if !entries.is_empty() {
                self.shared
                    .metrics
                    .batch_entries
                    .observe(entries.len() as f64);
            }
        }
        // 4. Votes and acks.
        self.send(persisted_messages);
        // 5. Done.
        self.raft.advance();
        Ok(())
    }

    fn apply(&mut self, entry: &Entry) {
        self.shared.metrics.entries_applied.inc();
        let EntryPayload::Command(bytes) = &entry.payload else {
            return;
        };
        match Envelope::decode(bytes) {
            Ok(envelope) => {
                let output = self.store.apply(entry.index, &envelope.command);
                if envelope.origin == self.raft.config().id {
                    if let Some(reply) = self.writes.remove(&envelope.request) {
                        let _ = reply.send(Ok(output));
                    }
                }
            }
            Err(error) => {
                // Every replica sees the same bytes, so every replica skips the entry alike.
                tracing::error!(index = entry.index.0, %error, "a committed entry has no envelope");
            }
        }
    }

    fn serve_reads(&mut self) {
        let applied = self.raft.status().applied;
        let mut waiting = Vec::new();
        for (index, id) in std::mem::take(&mut self.ready_reads) {
            if index > applied {
                waiting.push((index, id));
            } else if let Some(read) = self.reads.remove(&id) {
                self.shared.metrics.reads.inc();
                let _ = read.reply.send(Ok(self.store.query(&read.query)));
            }
        }
        self.ready_reads = waiting;
    }

    /// Answers every request still held when the driver stops. A write was proposed and may
    /// still commit (on this node's log or through the new leader), so its outcome is unknown;
    /// a read simply did not happen.
    fn fail_everything(&mut self) {
        for (_, reply) in std::mem::take(&mut self.writes) {
            let _ = reply.send(Err(RequestError::Timeout));
        }
        for (_, read) in std::mem::take(&mut self.reads) {
            let _ = read.reply.send(Err(RequestError::Stopped));
        }
    }

    /// Refreshes the shared status and the gauges.
    fn publish(&mut self) {
        let status = self.raft.status();
        let metrics = &self.shared.metrics;
        if status.role == Role::Candidate && self.last_role != Role::Candidate {
            metrics.elections.inc();
        }
        self.last_role = status.role;
        let leader = Some((status.term, status.leader));
        if status.leader.is_some() && self.last_leader != leader {
            metrics.leader_changes.inc();
            tracing::info!(term = status.term.0, leader = ?status.leader.map(|l| l.0), "leader known");
            self.last_leader = leader;
        }
        metrics.apply_lag.set(
            i64::try_from(status.commit.0.saturating_sub(status.applied.0)).unwrap_or(i64::MAX),
        );
        let role = match status.role {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::PreCandidate => "pre-candidate",
        };
        let snapshot = NodeStatus {
            protocol: "raft".to_string(),
            id: status.id.0,
            role: role.to_string(),
            term: status.term.0,
            leader: status.leader.map(|l| l.0),
            commit: status.commit.0,
            applied: status.applied.0,
            last_index: status.last_index.0,
            match_index: self
                .raft
                .match_indexes()
                .into_iter()
                .map(|(id, index)| (id.0.to_string(), index.0))
                .collect(),
            keys: self.store.len() as u64,
            view: None,
        };
        if let Ok(mut shared) = self.shared.status.write() {
            *shared = snapshot;
        }
    }
}

/// Queues `message` for peer `to` without waiting. A full queue means the peer is slow or
/// unreachable; both schemes retransmit, so the message is dropped (and counted) rather than
/// letting the queue grow. A message for an unknown node is ignored.
pub fn send_to_peer(
    peers: &BTreeMap<NodeId, mpsc::Sender<PeerMessage>>,
    shared: &Shared,
    to: NodeId,
    message: PeerMessage,
) {
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
