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
use std::path::PathBuf;
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

/// Why a Raft node stops.
#[derive(Debug, thiserror::Error)]
pub enum RaftHostError {
    /// The disk failed: the node cannot keep its promises.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The log shows that an earlier run of this node had a larger incarnation than this run:
    /// every write of this run would be skipped as a stale duplicate. The counter in the data
    /// directory has been lifted above it, so the next start is sound.
    #[error(
        "this run of the node has incarnation {mine}, but the log holds writes of an earlier \
         run with incarnation {seen} (the data directory's incarnation file was lost and the \
         clock is behind): this run's writes would never take effect. The counter is now \
         above {seen}: start the node again"
    )]
    StaleIncarnation {
        /// This run's incarnation.
        mine: u64,
        /// The larger incarnation the replicated session table holds for this node.
        seen: u64,
    },
}

/// A request the core does not hold: no leader was known when it came, or the core gave the
/// read up.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    /// When to refuse it as unavailable if it is still not in the core's hands. Set when it
    /// first waited and never moved, so a read the core keeps giving up is refused in time.
    give_up_at: Instant,
    /// Whether the core holds it now (a read issued again, waiting for its index).
    in_core: bool,
}

/// The Raft side of a node's driver.
pub struct RaftHost<S: Storage> {
    raft: RawNode,
    store: KvStore,
    /// Which proposals took effect already: replicated state, beside the store.
    sessions: OriginSessions,
    storage: S,
    /// Where the incarnation counter lives (lifted if a larger one is found in the log).
    data_dir: PathBuf,
    /// This run of the node (larger on every start).
    incarnation: u64,
    /// How long a request waits for a leader to be known before it is refused.
    leaderless_wait: Duration,
    /// A held write proposed this long ago and still unanswered is proposed again, even to
    /// the same leader: the forward may have been lost on a broken connection.
    resend_after: Duration,
    /// Requests the core does not hold, by kind and number.
    waiting: BTreeMap<(Kind, u64), Waiting>,
    /// The leader that held writes were last proposed to.
    proposed_to: Option<(Term, NodeId)>,
    /// When held writes were last checked for a re-send.
    last_resend_scan: Instant,
    /// Reads whose index the core confirmed, waiting for that index to be applied.
    ready_reads: Vec<(LogIndex, ReadId)>,
    last_leader: Option<(Term, Option<NodeId>)>,
    last_role: Role,
    /// The term and vote last made durable.
    synced_vote: (Term, Option<NodeId>),
}

impl<S: Storage> RaftHost<S> {
    /// A host for `raft`, restarted from `storage`'s durable state, in run `incarnation` of
    /// the node whose data directory is `data_dir`; a request waits at most `leaderless_wait`
    /// for a leader to be known, and a write unanswered for `resend_after` is proposed again.
    #[must_use]
    pub fn new(
        raft: RawNode,
        storage: S,
        data_dir: PathBuf,
        incarnation: u64,
        leaderless_wait: Duration,
        resend_after: Duration,
    ) -> RaftHost<S> {
        let status = raft.status();
        RaftHost {
            last_role: status.role,
            synced_vote: (status.term, status.vote),
            raft,
            store: KvStore::new(KvConfig::default()),
            sessions: OriginSessions::new(),
            storage,
            data_dir,
            incarnation,
            leaderless_wait,
            resend_after,
            waiting: BTreeMap::new(),
            proposed_to: None,
            last_resend_scan: Instant::now(),
            ready_reads: Vec::new(),
            last_leader: None,
        }
    }

    fn send(cx: &Context, messages: Vec<(NodeId, Message)>) {
        for (to, message) in messages {
            cx.send(to, PeerMessage::Raft(message));
        }
    }

    fn apply(&mut self, cx: &mut Context, entry: &Entry) -> Result<(), RaftHostError> {
        cx.shared.metrics.entries_applied.inc();
        let EntryPayload::Command(bytes) = &entry.payload else {
            return Ok(());
        };
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Every replica sees the same bytes, so every replica skips the entry alike.
                tracing::error!(index = entry.index.0, %error, "a committed entry has no envelope");
                return Ok(());
            }
        };
        let admitted = self.sessions.admit(&envelope);
        if envelope.origin == cx.me {
            self.check_incarnation()?;
        }
        if !admitted {
            // A copy of a request that took effect already (re-sent to a new leader).
            cx.shared.metrics.duplicates_skipped.inc();
            return Ok(());
        }
        let output = self.store.apply(entry.index, &envelope.command);
        let mine = envelope.origin == cx.me
            && envelope
                .session
                .is_some_and(|session| session.incarnation == self.incarnation);
        if mine {
            cx.requests
                .answer(Kind::Write, envelope.request, Ok(output));
        }
        Ok(())
    }

    /// Stops the node if the replicated table knows a later run of it than this one (its
    /// writes would all be fenced), after lifting the durable counter above that run.
    fn check_incarnation(&self) -> Result<(), RaftHostError> {
        let me = self.raft.status().id;
        let Some(seen) = self.sessions.incarnation_of(me) else {
            return Ok(());
        };
        if seen <= self.incarnation {
            return Ok(());
        }
        chorus_storage::next_incarnation(&self.data_dir, seen)?;
        Err(RaftHostError::StaleIncarnation {
            mine: self.incarnation,
            seen,
        })
    }

    fn serve_reads(&mut self, cx: &mut Context) {
        let applied = self.raft.status().applied;
        let mut waiting = Vec::new();
        for (index, id) in std::mem::take(&mut self.ready_reads) {
            if index > applied {
                waiting.push((index, id));
            } else if let Some(read) = cx.requests.take(Kind::Read, id.0) {
                self.waiting.remove(&(Kind::Read, id.0));
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
        cx: &mut Context,
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
        self.raft.propose(envelope.encode())?;
        cx.requests.mark_sent(request, Instant::now());
        Ok(())
    }

    fn wait_for_leader(&mut self, kind: Kind, request: u64) {
        let give_up_at = Instant::now() + self.leaderless_wait;
        self.waiting
            .entry((kind, request))
            .or_insert(Waiting {
                give_up_at,
                in_core: false,
            })
            .in_core = false;
    }

    /// Proposes again every held write the core holds, except those waiting for a leader.
    fn resend_writes(&mut self, cx: &mut Context, older_than: Option<Instant>) {
        let writes: Vec<(u64, Bytes)> = cx
            .requests
            .writes()
            .filter(|(request, held)| {
                !self.waiting.contains_key(&(Kind::Write, *request))
                    && older_than.is_none_or(|limit| held.sent_at <= limit)
            })
            .map(|(request, held)| (request, held.payload.clone()))
            .collect();
        for (request, command) in writes {
            match self.propose_held(cx, request, &command) {
                Ok(()) => {
                    cx.shared.metrics.proposals_resent.inc();
                }
                // The core's queue is full: the periodic re-send tries again later.
                Err(chorus_raft::ProposeError::TooManyPending) => break,
                Err(chorus_raft::ProposeError::NoLeader) => {
                    self.wait_for_leader(Kind::Write, request);
                }
            }
        }
    }

    /// On news of a leader this node has not proposed to, proposes every held write again and
    /// issues every waiting request: what went to the old leader may be lost with it. Called
    /// before a new request is proposed, so a new write goes to the new leader only once.
    fn follow_leader(&mut self, cx: &mut Context) {
        let status = self.raft.status();
        let Some(leader) = status.leader else {
            return;
        };
        if self.proposed_to == Some((status.term, leader)) {
            return;
        }
        self.proposed_to = Some((status.term, leader));
        self.resend_writes(cx, None);
        self.propose_waiting(cx);
    }

    /// Hands the core every request that waited for a leader.
    fn propose_waiting(&mut self, cx: &mut Context) {
        let ready: Vec<(Kind, u64)> = self
            .waiting
            .iter()
            .filter(|(_, waiting)| !waiting.in_core)
            .map(|(&key, _)| key)
            .collect();
        for (kind, request) in ready {
            let Some(held) = cx.requests.get(kind, request) else {
                self.waiting.remove(&(kind, request));
                continue;
            };
            match kind {
                Kind::Write => {
                    let command = held.payload.clone();
                    if self.propose_held(cx, request, &command).is_ok() {
                        cx.shared.metrics.proposals.inc();
                        // Once proposed a write is never refused: it may be in a log.
                        self.waiting.remove(&(kind, request));
                    }
                }
                Kind::Read => {
                    if self.raft.read_index(ReadId(request)).is_ok()
                        && let Some(waiting) = self.waiting.get_mut(&(kind, request))
                    {
                        waiting.in_core = true;
                    }
                }
            }
        }
    }

    /// Refuses requests that waited too long for a leader: none is in the core's hands or in
    /// any log, so they definitely did not happen. Forgets requests answered meanwhile.
    fn refuse_leaderless(&mut self, cx: &mut Context, now: Instant) {
        let mut refused = Vec::new();
        self.waiting.retain(|&(kind, request), waiting| {
            if cx.requests.get(kind, request).is_none() {
                return false;
            }
            if !waiting.in_core && waiting.give_up_at <= now {
                refused.push((kind, request));
                return false;
            }
            true
        });
        for (kind, request) in refused {
            if kind == Kind::Write {
                cx.shared.metrics.proposals_refused.inc();
            }
            cx.requests
                .answer(kind, request, Err(RequestError::Unavailable));
        }
    }

    /// Proposes again the held writes unanswered for `resend_after` (checked twice per
    /// period): a forward lost on a broken connection to a leader that is still alive.
    fn resend_stale_writes(&mut self, cx: &mut Context, now: Instant) {
        if now < self.last_resend_scan + self.resend_after / 2 {
            return;
        }
        self.last_resend_scan = now;
        if self.raft.status().leader.is_none() {
            return;
        }
        if let Some(limit) = now.checked_sub(self.resend_after) {
            self.resend_writes(cx, Some(limit));
        }
    }
}

impl<S: Storage> Host for RaftHost<S> {
    type Error = RaftHostError;

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
        self.follow_leader(cx);
        let request = cx.requests.number(Kind::Write);
        // Held first, so that the envelope's lowest unanswered number counts it.
        cx.requests
            .hold(Kind::Write, request, command.clone(), reply);
        match self.propose_held(cx, request, &command) {
            Ok(()) => {
                cx.shared.metrics.proposals.inc();
            }
            Err(chorus_raft::ProposeError::NoLeader) => self.wait_for_leader(Kind::Write, request),
            Err(chorus_raft::ProposeError::TooManyPending) => {
                let Some(held) = cx.requests.cancel(Kind::Write, request) else {
                    return;
                };
                let reply = held.reply;
                cx.shared.metrics.proposals_refused.inc();
                let _ = reply.send(Err(RequestError::Busy));
            }
        }
    }

    fn read(&mut self, cx: &mut Context, query: Bytes, reply: Reply) {
        self.follow_leader(cx);
        let request = cx.requests.number(Kind::Read);
        match self.raft.read_index(ReadId(request)) {
            Ok(()) => cx.requests.hold(Kind::Read, request, query, reply),
            Err(chorus_raft::ReadError::NoLeader) => {
                cx.requests.hold(Kind::Read, request, query, reply);
                self.wait_for_leader(Kind::Read, request);
            }
            Err(chorus_raft::ReadError::TooManyPending) => {
                let _ = reply.send(Err(RequestError::Busy));
            }
        }
    }

    fn tick(&mut self, cx: &mut Context) {
        self.raft.tick();
        let now = Instant::now();
        if self.raft.status().leader.is_some() {
            self.follow_leader(cx);
            self.propose_waiting(cx);
        }
        self.resend_stale_writes(cx, now);
        self.refuse_leaderless(cx, now);
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, RaftHostError> {
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
            self.apply(cx, entry)?;
        }
        self.ready_reads
            .extend(read_states.iter().map(|state| (state.index, state.id)));
        self.serve_reads(cx);
        // Reads the core gave up on (their leader changed, or it was too busy) did not
        // happen: ask again, until the time they may wait for a leader runs out.
        for id in rejected_reads {
            if cx.requests.get(Kind::Read, id.0).is_some() {
                self.wait_for_leader(Kind::Read, id.0);
            }
        }
        // 3. Durable before anything that promises it. The commit index is volatile state in
        //    Raft (Figure 2): a Ready that only moves it is written but not synced (it rides
        //    on the next sync); a restart may find a lower commit and learns the rest from
        //    the leader. Entries, terms and votes are always synced.
        if hard_state.is_some() || !entries.is_empty() {
            self.storage.write(hard_state, &entries)?;
            let promises = !entries.is_empty()
                || hard_state.is_some_and(|state| (state.term, state.vote) != self.synced_vote);
            if promises {
                let started = Instant::now();
                self.storage.sync()?;
                let metrics = &cx.shared.metrics;
                metrics
                    .fsync_seconds
                    .observe(started.elapsed().as_secs_f64());
                if !entries.is_empty() {
                    metrics.batch_entries.observe(entries.len() as f64);
                }
                if let Some(state) = hard_state {
                    self.synced_vote = (state.term, state.vote);
                }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chorus_kv::Command;
    use chorus_raft::Config;
    use chorus_storage::MemStorage;
    use tokio::sync::oneshot;

    use super::*;
    use crate::runtime::boundary::Shared;
    use crate::runtime::requests::Requests;

    const ME: NodeId = NodeId(1);

    fn context() -> Context {
        Context {
            me: ME,
            peers: BTreeMap::new(),
            shared: Arc::new(Shared::new()),
            requests: Requests::new(1, Duration::from_secs(60), 64),
        }
    }

    /// A one-node cluster's host in run `incarnation`, restarted from `storage`, led by itself.
    fn host(
        storage: MemStorage,
        data_dir: &std::path::Path,
        incarnation: u64,
    ) -> RaftHost<MemStorage> {
        let raft = RawNode::restart(Config::new(ME, vec![ME]), storage.durable()).unwrap();
        RaftHost::new(
            raft,
            storage,
            data_dir.to_path_buf(),
            incarnation,
            Duration::from_secs(60),
            Duration::from_secs(60),
        )
    }

    fn run(host: &mut RaftHost<MemStorage>, cx: &mut Context) -> Result<(), RaftHostError> {
        for _ in 0..100 {
            host.tick(cx);
            while host.handle_ready(cx)? {}
        }
        Ok(())
    }

    #[test]
    fn a_run_older_than_one_in_the_log_stops_and_lifts_the_counter() {
        let dir = tempfile::tempdir().unwrap();
        let mut cx = context();
        let mut later = host(MemStorage::new(), dir.path(), 900);
        run(&mut later, &mut cx).unwrap();
        let (reply, mut answer) = oneshot::channel();
        later.propose(&mut cx, Command::Register.encode(), reply);
        run(&mut later, &mut cx).unwrap();
        assert!(answer.try_recv().unwrap().is_ok());

        // The node crashes (losing what was not synced: the last commit index), its
        // incarnation file is lost and the clock is behind: the next run takes 5.
        let mut storage = later.storage;
        storage.crash_keeping(0);
        let mut earlier = host(storage, dir.path(), 5);
        let error = run(&mut earlier, &mut context()).unwrap_err();
        assert!(
            matches!(
                error,
                RaftHostError::StaleIncarnation { mine: 5, seen: 900 }
            ),
            "{error}"
        );
        assert!(chorus_storage::next_incarnation(dir.path(), 0).unwrap() > 900);
    }
}
