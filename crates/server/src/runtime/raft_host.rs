//! How the driver runs the Raft core: the Raft side of the one driver loop
//! ([`super::driver`]).
//!
//! The host owns the `RawNode`, the key-value state machine (shared, behind a lock, with the
//! leader's lease reads on the client connections' threads: [`super::lease_gate`]) and the
//! durable log. It wraps each
//! client command in an [`Envelope`] (this node, the request number) before proposing it, so
//! that when any node applies the entry (a follower forwards proposals to the leader), this
//! node recognises its own request and answers the client. Each Ready is handled in the order
//! the core's contract (crates/raft/src/lib.rs) demands: send replication → apply committed
//! entries and answer their clients (they are durable on a majority already, so clients never
//! wait on this node's fsync) and serve reads whose index is applied → hand the batch to the
//! storage thread ([`super::raft_disk`]) for one write and one fsync (group commit) → once it
//! reports the batch durable, send the messages that promise durability (votes, acks) →
//! advance. While the batch is out the driver goes on stepping messages, ticking, taking
//! proposals and sending, once per tick, what needs no durability
//! ([`RawNode::take_messages`]: heartbeats, AppendEntries, forwards, read rounds), and
//! applying what the followers committed meanwhile ([`RawNode::take_committed`]), so a
//! stalled fsync delays this node's acks and its own copy of the log, never its heartbeats
//! (a slow disk cannot cause an election), and a leader answers a batch a follower
//! acknowledged without waiting for its own write of the next one. Snapshot
//! chunks received from a leader are still written on the driver thread, and a received
//! snapshot is verified and restored there (the log's compaction to it rides on the Ready's
//! write); the compaction after a snapshot taken here is queued on the storage thread.
//!
//! # Requests survive a change of leader
//!
//! A follower forwards proposals and reads to the leader it knows; if that leader dies, they
//! die with it. So whenever the host learns of a new leader it proposes again every write it
//! still holds and issues again every read the core gave up on, and a request that arrives
//! while no leader is known waits (up to `leaderless_wait`) for one instead of being refused.
//! A write may then reach the log twice; its envelope carries this run's incarnation and
//! origin session, and [`OriginSessions`](chorus_core::envelope::OriginSessions) (replicated
//! state) applies each request once. The client of a held write hears the outcome as soon as
//! the new leader commits it.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::envelope::{Deduplicated, Envelope, OriginSession};
use chorus_core::{LogIndex, NodeId, StateMachine, Term};
use chorus_kv::{Command, KvConfig, KvStore, Query};
use chorus_raft::{
    Entry, EntryPayload, Membership, MembershipChange, MembershipError, Message, RawNode, ReadId,
    Ready, Role, SnapshotChunk, SnapshotChunkRequest, SnapshotMeta, TransferError,
};
use chorus_storage::{
    FileStorage, Janitor, MemStorage, PartialSnapshot, SnapshotFile, SnapshotStore, SnapshotWriter,
    Storage, StorageError,
};

use super::boundary::{
    AdminAccepted, AdminError, AdminRequest, LocalReads, NodeStatus, PeerMessage, Reply,
    RequestError, wall_clock_ms,
};
use super::driver::{Context, Host};
use super::lease_gate::{Applied, HostGate, LeaseGate, LeaseReadable, SharedState};
use super::raft_disk::{Disk, DiskDone, DiskJob, ReadyWrite};
use super::requests::Kind;

/// Why a Raft node stops.
#[derive(Debug, thiserror::Error)]
pub enum RaftHostError {
    /// The disk failed: the node cannot keep its promises.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The storage thread stopped with writes unfinished.
    #[error(transparent)]
    StorageThread(#[from] super::raft_disk::DiskStopped),
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
    /// A snapshot file verified but its contents do not decode to a state.
    #[error("the snapshot {} cannot be restored: {reason}", file.display())]
    Restore {
        /// The snapshot file.
        file: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A snapshot arrived from the leader but this node keeps no snapshot files.
    #[error("a snapshot was received but this node's storage keeps no snapshot files")]
    NoSnapshotStore,
}

/// The replicated state of a Raft node: the state machine (the key-value store, or the
/// hybrid scheme's configuration) and the origin sessions that deduplicate re-sent proposals,
/// snapshotted together.
pub type RaftState<M = KvStore> = Deduplicated<M>;

/// A state machine the Raft host can replicate: how to make an empty one, and what the admin
/// page counts in it. `Sync`, because with lease reads on a leader's client connections query
/// it from their own threads ([`super::lease_gate`]).
pub trait Replicated: StateMachine + Send + Sync + 'static {
    /// An empty state machine.
    fn fresh() -> Self;
    /// What `/status` shows as `keys`.
    fn keys(&self) -> u64;
    /// The earliest expiry time (wall-clock milliseconds) of a key the state still holds, if
    /// the state machine expires keys.
    fn next_deadline(&self) -> Option<u64> {
        None
    }
}

impl<M: Replicated> LeaseReadable for RaftState<M> {
    fn answer(&self, query: &[u8]) -> Bytes {
        self.query(query)
    }

    fn expiry_due(&self, now_ms: u64) -> bool {
        self.inner().next_deadline().is_some_and(|at| at <= now_ms)
    }
}

impl Replicated for KvStore {
    fn fresh() -> KvStore {
        KvStore::new(KvConfig::default())
    }

    fn keys(&self) -> u64 {
        self.len() as u64
    }

    fn next_deadline(&self) -> Option<u64> {
        KvStore::next_deadline(self)
    }
}

impl Replicated for chorus_hybrid::ConfigStateMachine {
    fn fresh() -> chorus_hybrid::ConfigStateMachine {
        chorus_hybrid::ConfigStateMachine::new()
    }

    fn keys(&self) -> u64 {
        self.configuration().servers.len() as u64
    }
}

/// A fresh, empty replicated state.
#[must_use]
pub fn fresh_state<M: Replicated>() -> RaftState<M> {
    Deduplicated::new(M::fresh())
}

/// Restores the replicated state from the snapshot `meta` in `store`, verifying every block
/// and the trailer on the way.
///
/// # Errors
/// [`RaftHostError`] if the file cannot be read, does not verify, or does not decode.
pub fn restore_state<M: Replicated>(
    store: &SnapshotStore,
    meta: SnapshotMeta,
) -> Result<RaftState<M>, RaftHostError> {
    let mut reader = store.open(meta)?;
    let mut state = fresh_state();
    state
        .restore(&mut reader)
        .map_err(|error| RaftHostError::Restore {
            file: store.path(meta),
            reason: error.reason,
        })?;
    // Whatever the state machine left unread still has to verify (the trailer).
    reader.verify_to_end()?;
    Ok(state)
}

/// Storage that may hold snapshot files: the runtime takes, sends and installs snapshots
/// through it. It is written on the host's storage thread ([`super::raft_disk`]).
pub trait SnapshotStorage: Storage + Send + 'static {
    /// The snapshot files, if this storage keeps them on disk (`None`: snapshots are not
    /// taken, sent or installed).
    fn snapshot_store(&self) -> Option<&SnapshotStore>;

    /// Hands the removal of files a compaction covers to `janitor` (nothing to remove: no-op).
    fn defer_deletions(&mut self, _janitor: Janitor) {}
}

impl SnapshotStorage for FileStorage {
    fn snapshot_store(&self) -> Option<&SnapshotStore> {
        Some(self.snapshots())
    }

    fn defer_deletions(&mut self, janitor: Janitor) {
        FileStorage::defer_deletions(self, janitor);
    }
}

impl SnapshotStorage for MemStorage {
    fn snapshot_store(&self) -> Option<&SnapshotStore> {
        None
    }
}

/// The outcome of a snapshot written on the snapshot thread.
type SnapshotOutcome = Result<(SnapshotFile, Duration), StorageError>;

/// How often a long snapshot transfer logs its progress.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);

/// How fast the snapshot thread writes: a snapshot is background work, and written flat out
/// it takes the disk from the log's fsyncs (and with it the clients' tail latency).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotPacing {
    /// At most this many bytes per second (0: unpaced).
    pub bytes_per_second: u64,
    /// Fsync what was written every this many bytes (0: only at the end).
    pub sync_bytes: u64,
}

impl SnapshotPacing {
    /// As fast as the disk allows, one fsync at the end.
    pub const UNPACED: SnapshotPacing = SnapshotPacing {
        bytes_per_second: 0,
        sync_bytes: 0,
    };
}

/// A [`SnapshotWriter`] that keeps to a [`SnapshotPacing`]: it sleeps whenever it is ahead of
/// the allowed rate, and fsyncs every `sync_bytes`. Runs on the snapshot thread only.
struct PacedWriter<'a> {
    writer: &'a mut SnapshotWriter,
    pacing: SnapshotPacing,
    started: Instant,
    written: u64,
    unsynced: u64,
}

impl std::io::Write for PacedWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let count = self.writer.write(bytes)?;
        self.written += count as u64;
        self.unsynced += count as u64;
        if self.pacing.sync_bytes > 0 && self.unsynced >= self.pacing.sync_bytes {
            self.unsynced = 0;
            self.writer.sync_data().map_err(std::io::Error::other)?;
        }
        if self.pacing.bytes_per_second > 0 {
            let due =
                Duration::from_secs_f64(self.written as f64 / self.pacing.bytes_per_second as f64);
            if let Some(ahead) = due.checked_sub(self.started.elapsed())
                && ahead >= Duration::from_millis(5)
            {
                std::thread::sleep(ahead);
            }
        }
        Ok(count)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.writer.flush()
    }
}

/// When a snapshot transfer last logged its progress.
#[derive(Clone, Copy, Debug)]
struct Progress {
    started: Instant,
    logged: Instant,
}

impl Progress {
    fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            logged: now,
        }
    }

    /// Whether it is time to log again (and notes that it did).
    fn due(&mut self) -> bool {
        let now = Instant::now();
        if now.duration_since(self.logged) < PROGRESS_INTERVAL {
            return false;
        }
        self.logged = now;
        true
    }
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
pub struct RaftHost<S: SnapshotStorage, M: Replicated = KvStore> {
    raft: RawNode,
    /// The store and the proposals that took effect already: replicated state, shared with
    /// the lease gate.
    state: SharedState<RaftState<M>>,
    /// What connections need to answer lease reads themselves ([`super::lease_gate`]),
    /// closed when the host is dropped.
    gate: HostGate<RaftState<M>>,
    /// The durable log, written on the storage thread once [`RaftHost::with_storage_thread`]
    /// asked for it and the driver started (inline before that, and in unit tests).
    disk: Disk<S>,
    /// Whether to move the durable log onto a storage thread when the driver starts.
    storage_thread: bool,
    /// The outstanding Ready, whose write is out on the disk.
    writing: Option<Writing>,
    /// A tick passed since what needs no durability was last taken while a write was out.
    ticked: bool,
    /// The snapshot files, if the storage keeps them (read and written on the driver and the
    /// snapshot thread; the storage thread only removes superseded ones).
    snapshots: Option<SnapshotStore>,
    /// Follower: the snapshot being received from the leader.
    partial: Option<PartialSnapshot>,
    /// The snapshot being written on the snapshot thread, if any (one at a time).
    snapshot_job: Option<(SnapshotMeta, mpsc::Receiver<SnapshotOutcome>)>,
    /// The latest durable snapshot the log was compacted to.
    last_snapshot: Option<SnapshotFile>,
    /// The largest chunk of a snapshot sent to a follower.
    snapshot_chunk_bytes_max: usize,
    /// How fast the snapshot thread writes.
    pacing: SnapshotPacing,
    /// Leader: the snapshot transfers under way, per follower, for progress logs.
    sending: BTreeMap<NodeId, (SnapshotMeta, Progress)>,
    /// Follower: the snapshot being received, for progress logs.
    receiving: Option<Progress>,
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
    /// The reads the core answered at once from its lease (no ReadIndex round), until they
    /// are served: only for the metrics. Each enters [`RaftHost::ready_reads`] with the next
    /// Ready (or earlier, from [`RawNode::take_committed`] while a write is out) and leaves
    /// here when it leaves there, so this holds no more than that does.
    leased_reads: BTreeSet<ReadId>,
    last_leader: Option<(Term, Option<NodeId>)>,
    last_role: Role,
    /// The term and vote last made durable.
    synced_vote: (Term, Option<NodeId>),
    /// Leader: when a time tick was last proposed (see [`RaftHost::propose_time_tick`]).
    last_time_tick: Option<Instant>,
    /// Leader: what the address book was last sent for (the book's version, the
    /// configuration, the term) and when.
    addresses_sent: Option<(u64, Membership, Term, Instant)>,
    /// Frees compacted entries and removes superseded files off the driver's thread (`None`
    /// if its thread could not start: the driver does it itself).
    janitor: Option<Janitor>,
}

/// What the host keeps of the outstanding Ready while its write is out.
#[derive(Debug)]
struct Writing {
    /// Votes and acks: they leave once the write is durable.
    persisted_messages: Vec<(NodeId, Message)>,
    /// A snapshot to take once the Ready is done.
    snapshot_due: Option<SnapshotMeta>,
    /// Entries in the write (for the batch-size metric).
    entries: usize,
}

/// A leader sends its address book to every member at least this often.
const ADDRESSES_INTERVAL: Duration = Duration::from_secs(1);

/// A leader proposes at most one time tick this often while a key is due.
const TIME_TICK_INTERVAL: Duration = Duration::from_millis(10);

impl<S: SnapshotStorage, M: Replicated> RaftHost<S, M> {
    /// A host for `raft`, restarted from `storage`'s durable state and `state` (restored from
    /// the durable snapshot, or fresh), in run `incarnation` of the node whose data directory
    /// is `data_dir`; a request waits at most `leaderless_wait` for a leader to be known, and
    /// a write unanswered for `resend_after` is proposed again.
    #[must_use]
    pub fn new(
        raft: RawNode,
        state: RaftState<M>,
        storage: S,
        data_dir: PathBuf,
        incarnation: u64,
        leaderless_wait: Duration,
        resend_after: Duration,
    ) -> RaftHost<S, M> {
        let status = raft.status();
        let snapshot = raft.snapshot();
        let snapshots = storage.snapshot_store().cloned();
        let last_snapshot = snapshots
            .as_ref()
            .filter(|_| snapshot.index > LogIndex(0))
            .and_then(|store| {
                Some(SnapshotFile {
                    meta: snapshot,
                    path: store.path(snapshot),
                    file_bytes: store.file_bytes(snapshot).ok()?,
                })
            });
        let snapshot_chunk_bytes_max = raft.config().snapshot_chunk_bytes_max;
        let janitor = Janitor::start("chorus-janitor")
            .inspect_err(|error| {
                tracing::warn!(%error, "no janitor thread: compaction cleans up on the driver");
            })
            .ok();
        let mut storage = storage;
        if let Some(janitor) = &janitor {
            storage.defer_deletions(janitor.clone());
        }
        let mut raft = raft;
        raft.set_snapshot_bytes_floor(last_snapshot.as_ref().map_or(0, |file| file.file_bytes));
        let state = SharedState::new(state, status.applied);
        let gate = HostGate(Arc::new(LeaseGate::new(
            state.clone(),
            raft.config().injected_bugs().lease_gate_only_extends,
        )));
        RaftHost {
            last_role: status.role,
            synced_vote: (status.term, status.vote),
            raft,
            state,
            gate,
            disk: Disk::inline(storage, snapshots.clone(), janitor.clone()),
            storage_thread: false,
            writing: None,
            ticked: false,
            snapshots,
            partial: None,
            snapshot_job: None,
            last_snapshot,
            snapshot_chunk_bytes_max,
            pacing: SnapshotPacing::UNPACED,
            sending: BTreeMap::new(),
            receiving: None,
            data_dir,
            incarnation,
            leaderless_wait,
            resend_after,
            waiting: BTreeMap::new(),
            proposed_to: None,
            last_resend_scan: Instant::now(),
            ready_reads: Vec::new(),
            leased_reads: BTreeSet::new(),
            last_leader: None,
            last_time_tick: None,
            addresses_sent: None,
            janitor,
        }
    }

    /// Reads the replicated state machine with `read` (the hybrid's configuration host reads
    /// the configuration from it).
    pub fn with_state_machine<T>(&self, read: impl FnOnce(&M) -> T) -> T {
        read(self.state.read().state.inner())
    }

    /// Whether this node is the leader now.
    #[must_use]
    pub fn is_leader(&self) -> bool {
        self.raft.status().role == Role::Leader
    }

    /// The configuration in force on this node.
    #[must_use]
    pub fn membership(&self) -> &Membership {
        self.raft.membership()
    }

    /// The leader this node knows, if any.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.raft.status().leader
    }

    /// Writes the durable log on a storage thread of its own once the driver starts, so that
    /// the driver keeps stepping, ticking and heartbeating while an fsync is out (without
    /// it, the log is written on the driver thread).
    #[must_use]
    pub fn with_storage_thread(mut self) -> RaftHost<S, M> {
        self.storage_thread = true;
        self
    }

    /// Writes snapshots at `pacing` (unpaced by default).
    #[must_use]
    pub fn with_snapshot_pacing(mut self, pacing: SnapshotPacing) -> RaftHost<S, M> {
        self.pacing = pacing;
        self
    }

    /// Notes the newest durable snapshot, and tells the core its size: the next one waits
    /// until the log since it is at least as large.
    fn set_last_snapshot(&mut self, file: SnapshotFile) {
        self.raft.set_snapshot_bytes_floor(file.file_bytes);
        self.last_snapshot = Some(file);
    }

    /// Sends `messages`, after publishing the lease and the commit index for lease reads on
    /// the connections' threads: no message that tells of a commit, or that hands leadership
    /// on, leaves before the gate knows.
    fn send(&self, cx: &Context, messages: Vec<(NodeId, Message)>) {
        self.publish_lease(cx);
        for (to, message) in messages {
            cx.send(to, PeerMessage::Raft(message));
        }
    }

    /// Publishes the end of the core's read lease, in real time, and its commit index
    /// ([`super::lease_gate`]).
    fn publish_lease(&self, cx: &Context) {
        let left = self.raft.lease_ticks_left();
        let until = (left > 0).then(|| {
            let ticks = u32::try_from(left).unwrap_or(u32::MAX);
            cx.tick_due + cx.tick.saturating_mul(ticks)
        });
        self.gate.publish(until, self.raft.status().commit);
    }

    fn apply(&mut self, cx: &mut Context, entry: &Entry) -> Result<(), RaftHostError> {
        cx.shared.metrics.entries_applied.inc();
        let mut cell = self.state.write();
        let EntryPayload::Command(bytes) = &entry.payload else {
            cell.index = entry.index;
            return Ok(());
        };
        let envelope = match Envelope::decode(bytes) {
            Ok(envelope) => envelope,
            Err(error) => {
                // Every replica sees the same bytes, so every replica skips the entry alike.
                tracing::error!(index = entry.index.0, %error, "a committed entry has no envelope");
                cell.index = entry.index;
                return Ok(());
            }
        };
        let applied = cell.state.apply_envelope(entry.index, &envelope);
        // Marked applied only once it is (a panic above leaves the index where it was, and
        // the lock poisoned, which the gate refuses).
        cell.index = entry.index;
        // Released before the incarnation check, which reads the state.
        drop(cell);
        if envelope.origin == cx.me {
            self.check_incarnation()?;
        }
        let Some(output) = applied else {
            // A copy of a request that took effect already (re-sent to a new leader).
            cx.shared.metrics.duplicates_skipped.inc();
            return Ok(());
        };
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
        let Some(seen) = self.state.read().state.sessions().incarnation_of(me) else {
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

    /// Serves the reads whose index is applied. While this node's clock has passed a key's
    /// expiry time that the log clock has not reached yet, the state still holds that key:
    /// reads then go through the log instead ([`Command::ReadAt`], stamped with this clock),
    /// where the key is removed before the read is answered. So no read answers with a key
    /// whose expiry time had passed when the read was served.
    fn serve_reads(&mut self, cx: &mut Context) {
        let applied = self.raft.status().applied;
        let now = wall_clock_ms();
        let due = self
            .state
            .read()
            .state
            .inner()
            .next_deadline()
            .is_some_and(|at| at <= now);
        let mut waiting = Vec::new();
        for (index, id) in std::mem::take(&mut self.ready_reads) {
            if index > applied {
                waiting.push((index, id));
            } else if let Some(read) = cx.requests.take(Kind::Read, id.0) {
                self.waiting.remove(&(Kind::Read, id.0));
                let leased = self.leased_reads.remove(&id);
                if due && let Ok(query) = Query::decode(&read.payload) {
                    let command = Command::ReadAt { now_ms: now, query };
                    Host::propose(self, cx, command.encode(), read.reply);
                    continue;
                }
                cx.shared.metrics.reads.inc();
                if leased {
                    cx.shared.metrics.lease_reads.inc();
                } else {
                    cx.shared.metrics.read_index_reads.inc();
                }
                let answer = self.state.read().state.query(&read.payload);
                let _ = read.reply.send(Ok(answer));
            } else {
                self.leased_reads.remove(&id);
            }
        }
        self.ready_reads = waiting;
    }

    /// Leader: once this node's clock has passed a key's expiry time, proposes a time tick
    /// ([`Command::Tick`]) so that every replica removes the due keys at the same log
    /// position even when no client writes (active expiry, through the log). At most one per
    /// [`TIME_TICK_INTERVAL`].
    fn propose_time_tick(&mut self, cx: &Context) {
        if self.raft.status().role != Role::Leader {
            return;
        }
        let now = wall_clock_ms();
        let due = self
            .state
            .read()
            .state
            .inner()
            .next_deadline()
            .is_some_and(|at| at <= now);
        if !due
            || self
                .last_time_tick
                .is_some_and(|at| at.elapsed() < TIME_TICK_INTERVAL)
        {
            return;
        }
        // Outside any origin session: a lost tick is simply proposed again later, and a tick
        // applied twice changes nothing.
        let envelope = Envelope {
            origin: cx.me,
            request: 0,
            command: Command::Tick { now_ms: now }.encode(),
            session: None,
        };
        if self.raft.propose(envelope.encode()).is_ok() {
            self.last_time_tick = Some(Instant::now());
        }
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
                Err(
                    chorus_raft::ProposeError::NoLeader
                    | chorus_raft::ProposeError::TransferInProgress,
                ) => {
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
                    if self.start_read(ReadId(request)).is_ok()
                        && let Some(waiting) = self.waiting.get_mut(&(kind, request))
                    {
                        waiting.in_core = true;
                    }
                }
            }
        }
    }

    /// Hands the core a linearizable read, noting whether its lease answers it at once.
    fn start_read(&mut self, id: ReadId) -> Result<(), chorus_raft::ReadError> {
        let leased = self.raft.holds_lease();
        self.raft.read_index(id)?;
        if leased {
            self.leased_reads.insert(id);
        }
        Ok(())
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

/// Reads at most `max` bytes of `store`'s snapshot `meta` from `offset`: the bytes and
/// whether they reach the end of the file.
impl<S: SnapshotStorage, M: Replicated> RaftHost<S, M> {
    /// Leader: sends the address book to every other member when the book, the
    /// configuration or the term changed since it was last sent, and every
    /// [`ADDRESSES_INTERVAL`] anyway (a member that restarted or missed it hears it again).
    fn send_addresses(&mut self, cx: &Context, now: Instant) {
        let status = self.raft.status();
        if status.role != Role::Leader {
            self.addresses_sent = None;
            return;
        }
        let membership = self.raft.membership();
        let due = match &self.addresses_sent {
            Some((version, sent_for, term, at)) => {
                *version != cx.book.version()
                    || sent_for != membership
                    || *term != status.term
                    || now.duration_since(*at) >= ADDRESSES_INTERVAL
            }
            None => true,
        };
        if !due {
            return;
        }
        let book = cx.book.all();
        for member in membership.members() {
            if member != cx.me {
                cx.send(member, PeerMessage::Addresses(book.clone()));
            }
        }
        self.addresses_sent = Some((cx.book.version(), membership.clone(), status.term, now));
    }

    /// Refuses an admin operation on a node that is not the leader, naming the leader.
    fn not_leader(&self, cx: &Context) -> AdminError {
        let leader = self.raft.status().leader;
        AdminError::NotLeader {
            leader,
            admin: leader
                .and_then(|leader| cx.book.get(leader))
                .map(|entry| entry.admin),
        }
    }
}

/// An admin error for a refused membership change: worth retrying, or not.
fn membership_error(error: &MembershipError) -> AdminError {
    match error {
        MembershipError::NotCommittedInTerm
        | MembershipError::ChangePending
        | MembershipError::TransferPending
        | MembershipError::LearnerBehind(_) => AdminError::Retry(error.to_string()),
        _ => AdminError::Refused(error.to_string()),
    }
}

fn read_chunk(
    store: &SnapshotStore,
    meta: SnapshotMeta,
    offset: u64,
    max: usize,
) -> std::io::Result<(Bytes, bool)> {
    let mut file = std::fs::File::open(store.path(meta))?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(offset))?;
    let wanted = usize::try_from(length.saturating_sub(offset))
        .unwrap_or(usize::MAX)
        .min(max);
    let mut data = vec![0u8; wanted];
    file.read_exact(&mut data)?;
    Ok((Bytes::from(data), offset + wanted as u64 >= length))
}

impl<S: SnapshotStorage, M: Replicated> RaftHost<S, M> {
    /// Leader: reads the chunk a follower needs and hands it to the core.
    fn send_chunk(&mut self, cx: &Context, request: SnapshotChunkRequest) {
        let SnapshotChunkRequest { to, meta, offset } = request;
        let read = self
            .snapshots
            .as_ref()
            .map(|store| read_chunk(store, meta, offset, self.snapshot_chunk_bytes_max));
        match read {
            Some(Ok((data, done))) => {
                let end = offset + data.len() as u64;
                if self
                    .raft
                    .send_snapshot_chunk(to, meta, offset, data, done)
                    .is_ok()
                {
                    cx.shared.metrics.snapshot_chunks_sent.inc();
                    self.log_send_progress(to, meta, offset, end, done);
                }
            }
            Some(Err(error)) => {
                tracing::info!(to = to.0, index = meta.index.0, %error, "the snapshot asked for is gone");
                self.raft.report_snapshot_unavailable(to);
            }
            None => self.raft.report_snapshot_unavailable(to),
        }
    }

    /// Leader: logs the start and end of a snapshot transfer to `to`, and its progress every
    /// [`PROGRESS_INTERVAL`] in between.
    fn log_send_progress(
        &mut self,
        to: NodeId,
        meta: SnapshotMeta,
        offset: u64,
        end: u64,
        done: bool,
    ) {
        let total = self
            .last_snapshot
            .as_ref()
            .filter(|file| file.meta == meta)
            .map_or(end, |file| file.file_bytes);
        let fresh = self
            .sending
            .get(&to)
            .is_none_or(|(sending, _)| *sending != meta);
        if offset == 0 || fresh {
            tracing::info!(
                to = to.0,
                index = meta.index.0,
                offset,
                total_bytes = total,
                "sending a snapshot to a follower"
            );
            self.sending.insert(to, (meta, Progress::new()));
        }
        let Some((_, progress)) = self.sending.get_mut(&to) else {
            return;
        };
        if done {
            tracing::info!(
                to = to.0,
                index = meta.index.0,
                bytes = end,
                ms = progress.started.elapsed().as_millis() as u64,
                "sent the last chunk of a snapshot"
            );
            self.sending.remove(&to);
        } else if progress.due() {
            tracing::info!(
                to = to.0,
                index = meta.index.0,
                bytes = end,
                total_bytes = total,
                percent = end * 100 / total.max(1),
                "snapshot send progress"
            );
        }
    }

    /// Follower: writes a received chunk into the partial snapshot file.
    fn write_chunk(&mut self, chunk: SnapshotChunk) -> Result<(), RaftHostError> {
        let store = self
            .snapshots
            .as_ref()
            .ok_or(RaftHostError::NoSnapshotStore)?;
        if chunk.offset == 0 {
            if let Some(old) = self.partial.take() {
                old.abort();
            }
            tracing::info!(
                index = chunk.meta.index.0,
                term = chunk.meta.term.0,
                "receiving a snapshot from the leader"
            );
            self.partial = Some(store.create_partial(chunk.meta)?);
            self.receiving = Some(Progress::new());
        }
        let Some(partial) = self.partial.as_mut().filter(|p| p.meta() == chunk.meta) else {
            tracing::warn!(
                index = chunk.meta.index.0,
                offset = chunk.offset,
                "a snapshot chunk without its start: dropped"
            );
            return Ok(());
        };
        let received = partial.write_at(chunk.offset, &chunk.data)?;
        let progress = self.receiving.get_or_insert_with(Progress::new);
        if chunk.done {
            tracing::info!(
                index = chunk.meta.index.0,
                bytes = received,
                ms = progress.started.elapsed().as_millis() as u64,
                "received the last chunk of a snapshot"
            );
        } else if progress.due() {
            // The total is known only once the last chunk arrives.
            tracing::info!(
                index = chunk.meta.index.0,
                bytes = received,
                "snapshot receive progress"
            );
        }
        Ok(())
    }

    /// Follower: installs the received snapshot `meta`: verifies the completed file and
    /// restores the state from it, on the driver. The durable log is compacted to it by the
    /// Ready's write on the storage thread, before its entries (see `handle_ready`). Any
    /// failure stops the node.
    fn install(&mut self, cx: &Context, meta: SnapshotMeta) -> Result<(), RaftHostError> {
        let started = Instant::now();
        let store = self
            .snapshots
            .clone()
            .ok_or(RaftHostError::NoSnapshotStore)?;
        let file = match self.partial.take() {
            Some(partial) if partial.meta() == meta => partial.finish()?,
            other => {
                // Completed earlier (a restart between the last chunk and the install).
                if let Some(partial) = other {
                    partial.abort();
                }
                store.verify(meta)?;
                SnapshotFile {
                    meta,
                    path: store.path(meta),
                    file_bytes: store.file_bytes(meta)?,
                }
            }
        };
        let restored = restore_state(&store, meta)?;
        let replaced = std::mem::replace(
            &mut *self.state.write(),
            Applied {
                state: restored,
                index: meta.index,
            },
        );
        // The old state is freed after the lock is released: reads need not wait for that.
        drop(replaced);
        cx.shared.metrics.snapshots_installed.inc();
        tracing::info!(
            index = meta.index.0,
            term = meta.term.0,
            bytes = file.file_bytes,
            ms = started.elapsed().as_millis() as u64,
            "installed a snapshot from the leader"
        );
        self.receiving = None;
        self.set_last_snapshot(file);
        Ok(())
    }

    /// Takes an image of the applied state (cheap) and writes it out on the snapshot thread.
    fn start_snapshot(&mut self, meta: SnapshotMeta) {
        let Some(store) = &self.snapshots else {
            self.raft.on_snapshot_failed();
            return;
        };
        if self.snapshot_job.is_some() {
            self.raft.on_snapshot_failed();
            return;
        }
        let writer = match store.create(meta) {
            Ok(writer) => writer,
            Err(error) => {
                tracing::error!(%error, index = meta.index.0, "cannot start a snapshot");
                self.raft.on_snapshot_failed();
                return;
            }
        };
        let image = self.state.read().state.snapshot();
        let path = store.path(meta);
        let pacing = self.pacing;
        let (done, outcome) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("snapshot".to_string())
            .spawn(move || {
                chorus_storage::lower_thread_priority();
                let started = Instant::now();
                let mut writer = writer;
                let mut paced = PacedWriter {
                    writer: &mut writer,
                    pacing,
                    started,
                    written: 0,
                    unsynced: 0,
                };
                let result = image
                    .write_to(&mut paced)
                    .map_err(|source| StorageError::Io {
                        operation: "write",
                        path,
                        source,
                    })
                    .and_then(|()| writer.finish())
                    .map(|file| (file, started.elapsed()));
                let _ = done.send(result);
            });
        match spawned {
            Ok(_) => self.snapshot_job = Some((meta, outcome)),
            Err(error) => {
                tracing::error!(%error, "cannot start the snapshot thread");
                self.raft.on_snapshot_failed();
            }
        }
    }

    /// Reports a snapshot the snapshot thread finished to the core, and hands the compaction
    /// of the durable log to the storage thread (after any write already out there).
    fn finish_snapshot(&mut self, cx: &Context) {
        let Some((meta, outcome)) = &self.snapshot_job else {
            return;
        };
        let meta = *meta;
        let result = match outcome.try_recv() {
            Ok(result) => result,
            Err(mpsc::TryRecvError::Empty) => return,
            Err(mpsc::TryRecvError::Disconnected) => Err(StorageError::InvalidWrite(
                "the snapshot thread stopped without an outcome".to_string(),
            )),
        };
        self.snapshot_job = None;
        match result {
            Ok((file, took)) => {
                let finishing = Instant::now();
                let previous = self.raft.snapshot();
                if let Err(error) = self.raft.on_snapshot_taken(meta) {
                    tracing::warn!(%error, index = meta.index.0, "the core refused a snapshot");
                    return;
                }
                let compacted = self.raft.take_compacted_entries();
                if let Some(janitor) = &self.janitor {
                    janitor.free(compacted);
                }
                let core_us = finishing.elapsed().as_micros() as u64;
                if self.raft.snapshot() != meta {
                    // Overtaken meanwhile by a newer one (an install from the leader).
                    tracing::info!(
                        index = meta.index.0,
                        "a snapshot was overtaken by a newer one"
                    );
                    return;
                }
                // The durable log keeps what follows the previous snapshot too (the storage
                // thread keeps that snapshot's file), so a restart that finds this new
                // snapshot damaged can fall back to the previous one and replay the log from
                // there. Queued behind any Ready's write already out: done in order.
                let keep_from = self.raft.first_index().min(previous.index.next());
                self.disk.submit(DiskJob::Compact {
                    snapshot: meta,
                    keep_from,
                });
                let metrics = &cx.shared.metrics;
                metrics.snapshots_taken.inc();
                metrics.snapshot_write_seconds.observe(took.as_secs_f64());
                tracing::info!(
                    index = meta.index.0,
                    bytes = file.file_bytes,
                    ms = took.as_millis() as u64,
                    first_index = self.raft.first_index().0,
                    driver_us = finishing.elapsed().as_micros() as u64,
                    core_us,
                    "took a snapshot; the log's compaction is queued"
                );
                self.set_last_snapshot(file);
            }
            Err(error) => {
                tracing::error!(%error, index = meta.index.0, "taking a snapshot failed");
                self.raft.on_snapshot_failed();
            }
        }
    }

    /// Takes what the storage thread finished. A failure stops the node: the storage is
    /// poisoned and the node cannot keep its promises.
    fn take_disk_outcomes(&mut self, cx: &mut Context) -> Result<bool, RaftHostError> {
        let mut any = false;
        // Bounded: each outcome answers one job out, and at most DISK_JOBS_MAX are.
        for _ in 0..super::raft_disk::DISK_JOBS_MAX {
            let Some(done) = self.disk.try_done()? else {
                break;
            };
            any = true;
            match done {
                DiskDone::Written(result) => {
                    let sync_took = result?;
                    self.finish_ready(cx, sync_took);
                }
                DiskDone::Compacted { snapshot, result } => {
                    let took = result?;
                    tracing::info!(
                        index = snapshot.index.0,
                        compact_us = took.as_micros() as u64,
                        "compacted the durable log to a snapshot"
                    );
                }
            }
        }
        Ok(any)
    }

    /// The outstanding Ready's write is durable: steps 3 to 5 of the contract (votes and
    /// acks, a due snapshot, advance).
    fn finish_ready(&mut self, cx: &mut Context, sync_took: Option<Duration>) {
        let writing = self
            .writing
            .take()
            .expect("invariant: a write outcome answers the outstanding Ready");
        if let Some(took) = sync_took {
            let metrics = &cx.shared.metrics;
            metrics.fsync_seconds.observe(took.as_secs_f64());
            if writing.entries > 0 {
                metrics.batch_entries.observe(writing.entries as f64);
            }
        }
        // 4. Votes and acks.
        self.send(cx, writing.persisted_messages);
        // 4b. A snapshot of what is applied now, written out on the snapshot thread.
        if let Some(meta) = writing.snapshot_due {
            self.start_snapshot(meta);
        }
        // 5. Done.
        self.raft.advance();
        self.finish_snapshot(cx);
    }

    /// Carries out what the core asks for now (see the module docs for the order).
    fn carry_out_ready(&mut self, cx: &mut Context) -> Result<bool, RaftHostError> {
        self.follow_leader(cx);
        let finished = self.take_disk_outcomes(cx)?;
        if self.writing.is_some() {
            // The Ready's write is out: heartbeats, replication, forwards and read rounds
            // need no durability and leave once per tick (so a hung disk never stops the
            // heartbeats); votes and acks wait for the disk. Not after every input: a fast
            // disk's write is back within the tick, and the Ready after it carries what
            // arrived meanwhile as one batch, where sending it at once would cost an
            // AppendEntries (and a follower's step) per input.
            if std::mem::take(&mut self.ticked) {
                let messages = self.raft.take_messages();
                self.send(cx, messages);
            }
            // What the followers acknowledged meanwhile is committed without this write (a
            // majority holds it): apply it and answer its clients now, not one fsync later.
            // This Ready's own committed entries were applied before its write was handed out.
            let committed = self.raft.take_committed();
            if committed.is_empty() {
                return Ok(finished);
            }
            for entry in &committed.entries {
                self.apply(cx, entry)?;
            }
            self.ready_reads.extend(
                committed
                    .read_states
                    .iter()
                    .map(|state| (state.index, state.id)),
            );
            self.serve_reads(cx);
            return Ok(true);
        }
        if !self.raft.has_ready() {
            return Ok(finished);
        }
        let Ready {
            messages,
            hard_state,
            entries,
            persisted_messages,
            committed_entries,
            read_states,
            rejected_reads,
            snapshot_chunk_requests,
            snapshot_chunks,
            snapshot,
            snapshot_due,
        } = self.raft.ready();
        // 1. Replication goes out while the leader's own copy is being written; followers
        //    that need a snapshot get their next chunk (sent by the next Ready).
        self.send(cx, messages);
        for request in snapshot_chunk_requests {
            self.send_chunk(cx, request);
        }
        // 1b. A follower writes the chunks it received (on this thread: each chunk's file
        //     write is durable before the Ready's acks leave) and installs a complete snapshot
        //     (verifies it and restores the state) before it applies anything after it; the
        //     durable log is compacted to it by this Ready's write, before its entries.
        for chunk in snapshot_chunks {
            self.write_chunk(chunk)?;
        }
        if let Some(meta) = snapshot {
            self.install(cx, meta)?;
        }
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
        // 3. Durable before anything that promises it, on the storage thread. The commit
        //    index is volatile state in Raft (Figure 2): a Ready that only moves it is
        //    written but not synced (it rides on the next sync); a restart may find a lower
        //    commit and learns the rest from the leader. Entries, terms and votes are always
        //    synced. Until the thread reports back, the driver keeps stepping, ticking and
        //    sending what needs no durability (above).
        let sync = !entries.is_empty()
            || hard_state.is_some_and(|state| (state.term, state.vote) != self.synced_vote);
        if sync && let Some(state) = hard_state {
            // Jobs are done in order: a later write relies on this sync.
            self.synced_vote = (state.term, state.vote);
        }
        let write = ReadyWrite {
            installed: snapshot,
            hard_state,
            entries,
            sync,
        };
        self.writing = Some(Writing {
            persisted_messages,
            snapshot_due,
            entries: write.entries.len(),
        });
        if write.is_empty() {
            self.finish_ready(cx, None);
        } else {
            self.disk.submit(DiskJob::Write(write));
        }
        Ok(true)
    }
}

impl<S: SnapshotStorage, M: Replicated> Host for RaftHost<S, M> {
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
            // A transfer hands leadership over within an election timeout: wait for the next
            // leader as when none is known (an abandoned transfer is retried by the periodic
            // re-send).
            Err(
                chorus_raft::ProposeError::NoLeader | chorus_raft::ProposeError::TransferInProgress,
            ) => self.wait_for_leader(Kind::Write, request),
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
        match self.start_read(ReadId(request)) {
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

    fn clock_behind(&mut self, cx: &mut Context) {
        if self.raft.config().injected_bugs().lease_ignores_lateness {
            // Deliberate bug (TESTING ONLY): judge reads by a clock known to be late.
            return;
        }
        // A lease counted in ticks that came late could outlast the followers' promise.
        self.raft.drop_lease();
        self.publish_lease(cx);
    }

    fn tick(&mut self, cx: &mut Context) {
        self.raft.tick();
        self.ticked = true;
        if cx
            .shared
            .snapshot_requested
            .swap(false, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!("a snapshot was requested");
            self.raft.request_snapshot();
        }
        self.finish_snapshot(cx);
        let now = Instant::now();
        if self.raft.status().leader.is_some() {
            self.follow_leader(cx);
            self.propose_waiting(cx);
        }
        self.propose_time_tick(cx);
        self.send_addresses(cx, now);
        self.resend_stale_writes(cx, now);
        self.refuse_leaderless(cx, now);
    }

    fn start(&mut self, cx: &mut Context) {
        if self.raft.config().lease_reads {
            let gate: Arc<dyn LocalReads> = self.gate.0.clone();
            let _ = cx.shared.local_reads.set(gate);
        }
        if !self.storage_thread {
            return;
        }
        let name = format!("chorus-storage-{}", cx.me.0);
        match self
            .disk
            .start_thread(name, cx.shared.clone(), cx.waker.clone())
        {
            Ok(()) => tracing::debug!("the durable log is written on a storage thread"),
            Err(error) => {
                tracing::warn!(%error, "no storage thread: the driver writes the log itself");
            }
        }
    }

    fn handle_ready(&mut self, cx: &mut Context) -> Result<bool, RaftHostError> {
        let handled = self.carry_out_ready(cx);
        // Whatever the turn changed (a lease renewed or dropped, a commit) is published for
        // the connections' lease reads, even when nothing was sent.
        self.publish_lease(cx);
        handled
    }

    fn admin(
        &mut self,
        cx: &mut Context,
        request: AdminRequest,
    ) -> Result<AdminAccepted, AdminError> {
        let status = self.raft.status();
        if status.role != Role::Leader {
            return Err(self.not_leader(cx));
        }
        let change = match request {
            AdminRequest::TransferLeader(target) => {
                return match self.raft.transfer_leadership(target) {
                    Ok(()) => Ok(AdminAccepted::Transferring {
                        term: status.term.0,
                    }),
                    Err(TransferError::NotLeader) => Err(self.not_leader(cx)),
                    Err(error @ TransferError::Pending(_)) => {
                        Err(AdminError::Retry(error.to_string()))
                    }
                    Err(error) => Err(AdminError::Refused(error.to_string())),
                };
            }
            AdminRequest::AddLearner(entry) => {
                let membership = self.raft.membership();
                if membership.is_learner(entry.id) && cx.book.get(entry.id) == Some(&entry) {
                    return Ok(AdminAccepted::AlreadyDone);
                }
                if membership.is_voter(entry.id) {
                    return Err(AdminError::Refused(format!(
                        "node {} is already a voter",
                        entry.id
                    )));
                }
                // Known before the entry goes out, so that replication can reach it and its
                // connections are accepted; every member hears of it with the next tick.
                cx.learn_addresses(vec![entry]);
                if membership.is_learner(entry.id) {
                    return Ok(AdminAccepted::AlreadyDone);
                }
                MembershipChange::AddLearner(entry.id)
            }
            AdminRequest::Promote(id) => {
                if self.raft.membership().is_voter(id) {
                    return Ok(AdminAccepted::AlreadyDone);
                }
                MembershipChange::Promote(id)
            }
            AdminRequest::Remove(id) => MembershipChange::Remove(id),
        };
        match self.raft.propose_membership(change) {
            Ok(index) => {
                tracing::info!(?change, index = index.0, "proposed a membership change");
                Ok(AdminAccepted::Proposed {
                    index: index.0,
                    term: status.term.0,
                })
            }
            Err(MembershipError::NotLeader) => Err(self.not_leader(cx)),
            Err(error) => Err(membership_error(&error)),
        }
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
        metrics.repairing.set(i64::from(status.repairing.is_some()));
        let membership = self.raft.membership().clone();
        let lease_reads = self.raft.config().lease_reads;
        let lease_ticks_left = self.raft.lease_ticks_left();
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
            keys: self.state.read().state.inner().keys(),
            snapshot_index: Some(self.raft.snapshot().index.0),
            snapshot_bytes: Some(
                self.last_snapshot
                    .as_ref()
                    .map_or(0, |file| file.file_bytes),
            ),
            first_index: Some(self.raft.first_index().0),
            voters: Some(membership.voters.iter().map(|id| id.0).collect()),
            learners: Some(membership.learners.iter().map(|id| id.0).collect()),
            membership_committed: Some(self.raft.membership_committed()),
            transfer_target: self.raft.transfer_target().map(|id| id.0),
            addresses: cx.book.all(),
            repairing: status.repairing.map(|term| term.0),
            lease_reads: Some(lease_reads),
            lease_held: lease_reads.then_some(lease_ticks_left > 0),
            lease_ticks_left: (lease_ticks_left > 0).then_some(lease_ticks_left),
            view: None,
            hybrid: None,
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
            book: crate::runtime::members::AddressBook::default(),
            dialer: None,
            waker: None,
            tick_due: Instant::now(),
            tick: Duration::from_millis(10),
        }
    }

    /// A one-node cluster's host in run `incarnation`, restarted from `storage`, led by itself.
    fn host(
        storage: MemStorage,
        data_dir: &std::path::Path,
        incarnation: u64,
    ) -> RaftHost<MemStorage> {
        host_with(storage, data_dir, incarnation, Config::new(ME, vec![ME]))
    }

    fn host_with(
        storage: MemStorage,
        data_dir: &std::path::Path,
        incarnation: u64,
        config: Config,
    ) -> RaftHost<MemStorage> {
        let raft = RawNode::restart(config, storage.durable()).unwrap();
        RaftHost::new(
            raft,
            fresh_state(),
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

    /// Starts a read of a missing key and carries out the Ready that follows, without a tick.
    fn read_now(
        host: &mut RaftHost<MemStorage>,
        cx: &mut Context,
    ) -> oneshot::Receiver<Result<Bytes, RequestError>> {
        let (reply, answer) = oneshot::channel();
        let query = Query::Get {
            key: Bytes::from_static(b"k"),
        };
        host.read(cx, query.encode(), reply);
        while host.handle_ready(cx).unwrap() {}
        answer
    }

    // The status shows whether lease reads are on and whether the leader holds a lease, and
    // the metrics tell reads the lease answered from reads a ReadIndex round answered.
    #[test]
    fn the_status_shows_the_lease_and_the_metrics_count_lease_reads_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut cx = context();
        let mut off = host(MemStorage::new(), dir.path(), 1);
        run(&mut off, &mut cx).unwrap();
        let status = off.status(&cx);
        assert_eq!(status.role, "leader");
        assert_eq!(status.lease_reads, Some(false));
        assert_eq!((status.lease_held, status.lease_ticks_left), (None, None));

        let dir = tempfile::tempdir().unwrap();
        let mut cx = context();
        let mut config = Config::new(ME, vec![ME]);
        config.lease_reads = true;
        let mut leased = host_with(MemStorage::new(), dir.path(), 1, config);
        run(&mut leased, &mut cx).unwrap();
        let (reply, _) = oneshot::channel();
        leased.propose(&mut cx, Command::Register.encode(), reply);
        run(&mut leased, &mut cx).unwrap();
        // A lone leader renews its lease with the ReadIndex round of a read.
        for _ in 0..10 {
            if leased.status(&cx).lease_held == Some(true) {
                break;
            }
            drop(read_now(&mut leased, &mut cx));
            leased.tick(&mut cx);
            while leased.handle_ready(&mut cx).unwrap() {}
        }
        let status = leased.status(&cx);
        assert_eq!(status.lease_reads, Some(true));
        assert_eq!(status.lease_held, Some(true));
        let left = status
            .lease_ticks_left
            .expect("a held lease has ticks left");
        assert!(left > 0 && left <= leased.raft.config().lease_ticks());
        let metrics = &cx.shared.metrics;
        let (lease_reads, read_index_reads) =
            (metrics.lease_reads.get(), metrics.read_index_reads.get());
        assert!(read_now(&mut leased, &mut cx).try_recv().unwrap().is_ok());
        let metrics = &cx.shared.metrics;
        assert_eq!(metrics.lease_reads.get(), lease_reads + 1);
        assert_eq!(metrics.read_index_reads.get(), read_index_reads);

        // A driver that fell behind ends the lease: the next read takes a ReadIndex round.
        leased.clock_behind(&mut cx);
        let status = leased.status(&cx);
        assert_eq!(
            (status.lease_held, status.lease_ticks_left),
            (Some(false), None)
        );
        let mut answer = read_now(&mut leased, &mut cx);
        if answer.try_recv().is_err() {
            leased.tick(&mut cx);
            while leased.handle_ready(&mut cx).unwrap() {}
            assert!(answer.try_recv().unwrap().is_ok());
        }
        let metrics = &cx.shared.metrics;
        assert_eq!(metrics.lease_reads.get(), lease_reads + 1);
        assert_eq!(metrics.read_index_reads.get(), read_index_reads + 1);
        assert_eq!(
            metrics.reads.get(),
            metrics.lease_reads.get() + metrics.read_index_reads.get()
        );
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
        let mut storage = later.disk.into_storage();
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
