//! How the driver runs the Raft core: the Raft side of the one driver loop
//! ([`super::driver`]).
//!
//! The host owns the `RawNode`, the key-value state machine and the durable log. It wraps each
//! client command in an [`Envelope`] (this node, the request number) before proposing it, so
//! that when any node applies the entry (a follower forwards proposals to the leader), this
//! node recognises its own request and answers the client. Each Ready is handled in the order
//! the core's contract (crates/raft/src/lib.rs) demands: send replication → apply committed
//! entries and answer their clients (they are durable on a majority already, so clients never
//! wait on this node's fsync) and serve reads whose index is applied → write and fsync the
//! batch (group commit) → send the messages that promise durability (votes, acks) → advance.
//!
//! # Requests survive a change of leader
//!
//! A follower forwards proposals and reads to the leader it knows; if that leader dies, they
//! die with it. So whenever the host learns of a new leader it proposes again every write it
//! still holds and issues again every read the core gave up on, and a request that arrives
//! while no leader is known waits (up to `leaderless_wait`) for one instead of being refused.
//! A write may then reach the log twice; its envelope carries this run's incarnation and
//! origin session, and [`OriginSessions`] (replicated state) applies each request once. The
//! client of a held write hears the outcome as soon as the new leader commits it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::envelope::{Envelope, OriginSession, OriginSessions};
use chorus_core::{LogIndex, NodeId, StateMachine, Term};
use chorus_kv::{KvConfig, KvStore};
use chorus_raft::{Entry, EntryPayload, Message, RawNode, ReadId, Ready, Role};
use chorus_storage::{Storage, StorageError};

use super::boundary::{NodeStatus, PeerMessage, Reply, RequestError};
use super::driver::{Context, Host};
use super::requests::Kind;

/// The Raft side of a node's driver.
pub struct RaftHost<S: Storage> {
    raft: RawNode,
    store: KvStore,
    /// Which proposals took effect already: replicated state, beside the store.
    sessions: OriginSessions,
    storage: S,
    /// This run of the node (larger on every start).
    incarnation: u64,
    /// How long a request waits for a leader to be known before it is refused.
    leaderless_wait: Duration,
    /// Requests held but not in the core's hands (no leader was known, or the core gave the
    /// read up), with when to give up on them.
    unproposed: BTreeMap<u64, Instant>,
    /// The leader that held writes were last proposed to.
    proposed_to: Option<(Term, NodeId)>,
    /// Reads whose index the core confirmed, waiting for that index to be applied.
    ready_reads: Vec<(LogIndex, ReadId)>,
    last_leader: Option<(Term, Option<NodeId>)>,
    last_role: Role,
}

impl<S: Storage> RaftHost<S> {
    /// A host for `raft`, restarted from `storage`'s durable state, in run `incarnation` of
    /// the node; a request waits at most `leaderless_wait` for a leader to be known.
    #[must_use]
    pub fn new(
        raft: RawNode,
        storage: S,
        incarnation: u64,
        leaderless_wait: Duration,
    ) -> RaftHost<S> {
        RaftHost {
            last_role: raft.status().role,
            raft,
            store: KvStore::new(KvConfig::default()),
            sessions: OriginSessions::new(),
            storage,
            incarnation,
            leaderless_wait,
            unproposed: BTreeMap::new(),
            proposed_to: None,
            ready_reads: Vec::new(),
            last_leader: None,
        }
    }

    fn send(cx: &Context, messages: Vec<(NodeId, Message)>) {
        for (to, message) in messages {
            cx.send(to, PeerMessage::Raft(message));
        }
    }

    fn apply(&mut self, cx: &mut Context, entry: &Entry) {
        cx.shared.metrics.entries_applied.inc();
        let EntryPayload::Command(bytes) = &entry.payload else {
            return;
        };
        match Envelope::decode(bytes) {
            Ok(envelope) => {
                if !self.sessions.admit(&envelope) {
                    // A copy of a request that took effect already (re-sent to a new leader).
                    cx.shared.metrics.duplicates_skipped.inc();
                    return;
                }
                let output = self.store.apply(entry.index, &envelope.command);
                let mine = envelope.origin == cx.me
                    && envelope
                        .session
                        .is_some_and(|session| session.incarnation == self.incarnation);
                if mine {
                    cx.requests
                        .answer(envelope.request, Kind::Write, Ok(output));
                }
            }
            Err(error) => {
                // Every replica sees the same bytes, so every replica skips the entry alike.
                tracing::error!(index = entry.index.0, %error, "a committed entry has no envelope");
            }
        }
    }

    fn serve_reads(&mut self, cx: &mut Context) {
        let applied = self.raft.status().applied;
        let mut waiting = Vec::new();
        for (index, id) in std::mem::take(&mut self.ready_reads) {
            if index > applied {
                waiting.push((index, id));
            } else if let Some(read) = cx.requests.take(id.0) {
                cx.shared.metrics.reads.inc();
                let _ = read.reply.send(Ok(self.store.query(&read.payload)));
            }
        }
        self.ready_reads = waiting;
    }

    /// Proposes held write `request` (again, after a change of leader) in an envelope that
    /// lets every replica apply it once.
    fn propose_held(
        &mut self,
        cx: &Context,
        request: u64,
        command: &Bytes,
    ) -> Result<(), chorus_raft::ProposeError> {
        let envelope = Envelope {
            origin: cx.me,
            request,
            command: command.clone(),
            session: Some(OriginSession {
                incarnation: self.incarnation,
                unanswered_from: cx.requests.unanswered_from().min(request),
            }),
        };
        self.raft.propose(envelope.encode()).map(|_| ())
    }

    fn wait_for_leader(&mut self, request: u64) {
        self.unproposed
            .entry(request)
            .or_insert_with(|| Instant::now() + self.leaderless_wait);
    }

    /// On news of a leader this node has not proposed to, proposes every held write again and
    /// issues every waiting read: what went to the old leader may be lost with it.
    fn follow_leader(&mut self, cx: &mut Context) {
        let status = self.raft.status();
        let Some(leader) = status.leader else {
            return;
        };
        if self.proposed_to == Some((status.term, leader)) {
            return;
        }
        self.proposed_to = Some((status.term, leader));
        let writes: Vec<(u64, Bytes)> = cx
            .requests
            .writes()
            .map(|(request, command)| (request, command.clone()))
            .collect();
        for (request, command) in writes {
            if self.unproposed.contains_key(&request) {
                continue;
            }
            if self.propose_held(cx, request, &command).is_ok() {
                cx.shared.metrics.proposals_resent.inc();
            }
        }
        self.propose_waiting(cx);
    }

    /// Hands the core every request that waited for a leader.
    fn propose_waiting(&mut self, cx: &mut Context) {
        for (request, deadline) in std::mem::take(&mut self.unproposed) {
            let Some(held) = cx.requests.get(request) else {
                continue;
            };
            let issued = match held.kind {
                Kind::Write => {
                    let command = held.payload.clone();
                    match self.propose_held(cx, request, &command) {
                        Ok(()) => {
                            cx.shared.metrics.proposals.inc();
                            true
                        }
                        Err(_) => false,
                    }
                }
                Kind::Read => self.raft.read_index(ReadId(request)).is_ok(),
            };
            if !issued {
                self.unproposed.insert(request, deadline);
            }
        }
    }

    /// Refuses requests that waited too long for a leader: none reached any log, so they
    /// definitely did not happen.
    fn refuse_leaderless(&mut self, cx: &mut Context, now: Instant) {
        let expired: Vec<u64> = self
            .unproposed
            .iter()
            .filter(|&(_, &deadline)| deadline <= now)
            .map(|(&request, _)| request)
            .collect();
        for request in expired {
            self.unproposed.remove(&request);
            if let Some(held) = cx.requests.get(request) {
                let kind = held.kind;
                if kind == Kind::Write {
                    cx.shared.metrics.proposals_refused.inc();
                }
                cx.requests
                    .answer(request, kind, Err(RequestError::Unavailable));
            }
        }
    }
}

impl<S: Storage> Host for RaftHost<S> {
    type Error = StorageError;

    fn step(&mut self, cx: &mut Context, from: NodeId, message: PeerMessage) {
        let PeerMessage::Raft(message) = message else {
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::warn!(%from, "refused a message of another scheme: this node runs Raft");
            return;
        };
        if let Err(error) = self.raft.step(from, message) {
            cx.shared.metrics.peer_messages_refused.inc();
            tracing::warn!(%from, %error, "refused a message from a peer");
        }
    }

    fn propose(&mut self, cx: &mut Context, command: Bytes, reply: Reply) {
        let request = cx.requests.number();
        match self.propose_held(cx, request, &command) {
            Ok(()) => {
                cx.shared.metrics.proposals.inc();
                cx.requests.hold(request, Kind::Write, command, reply);
            }
            Err(chorus_raft::ProposeError::NoLeader) => {
                cx.requests.hold(request, Kind::Write, command, reply);
                self.wait_for_leader(request);
            }
            Err(chorus_raft::ProposeError::TooManyPending) => {
                cx.shared.metrics.proposals_refused.inc();
                let _ = reply.send(Err(RequestError::Busy));
            }
        }
    }

    fn read(&mut self, cx: &mut Context, query: Bytes, reply: Reply) {
        let request = cx.requests.number();
        match self.raft.read_index(ReadId(request)) {
            Ok(()) => cx.requests.hold(request, Kind::Read, query, reply),
            Err(chorus_raft::ReadError::NoLeader) => {
                cx.requests.hold(request, Kind::Read, query, reply);
                self.wait_for_leader(request);
            }
            Err(chorus_raft::ReadError::TooManyPending) => {
                let _ = reply.send(Err(RequestError::Busy));
            }
        }
    }

    fn tick(&mut self, cx: &mut Context) {
        self.raft.tick();
        if self.raft.status().leader.is_some() {
            self.propose_waiting(cx);
        }
        self.refuse_leaderless(cx, Instant::now());
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, StorageError> {
        self.follow_leader(cx);
        if !self.raft.has_ready() {
            return Ok(false);
        }
        let Ready {
            messages,
            hard_state,
            entries,
            persisted_messages,
            committed_entries,
            read_states,
            rejected_reads,
            // Snapshots are not wired into the runtime yet; the default thresholds are far
            // above what its tests apply, so these stay empty.
            snapshot_chunk_requests: _,
            snapshot_chunks: _,
            snapshot: _,
            snapshot_due: _,
        } = self.raft.ready();
        // 1. Replication goes out while the leader's own copy is being written.
        Self::send(cx, messages);
        // 2. Apply, answer, serve reads. Committed entries are already durable on a majority
        //    (a leader counts its own copy only once durable), so clients need not wait for
        //    this node's fsync below, which often only records the new commit index.
        for entry in &committed_entries {
            self.apply(cx, entry);
        }
        self.ready_reads
            .extend(read_states.iter().map(|state| (state.index, state.id)));
        self.serve_reads(cx);
        // Reads the core gave up on (their leader changed) did not happen: ask again once a
        // leader is known.
        for id in rejected_reads {
            if cx.requests.get(id.0).is_some() {
                self.wait_for_leader(id.0);
            }
        }
        // 3. Durable before anything that promises it.
        if hard_state.is_some() || !entries.is_empty() {
            self.storage.write(hard_state, &entries)?;
            let started = Instant::now();
            self.storage.sync()?;
            let metrics = &cx.shared.metrics;
            metrics
                .fsync_seconds
                .observe(started.elapsed().as_secs_f64());
            if !entries.is_empty() {
                metrics.batch_entries.observe(entries.len() as f64);
            }
        }
        // 4. Votes and acks.
        Self::send(cx, persisted_messages);
        // 5. Done.
        self.raft.advance();
        Ok(true)
    }

    fn status(&mut self, cx: &Context) -> NodeStatus {
        let status = self.raft.status();
        let metrics = &cx.shared.metrics;
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
        NodeStatus {
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
        }
    }
}
