//! The Raft driver of the simulator: many Raft nodes with their disks, on the shared engine
//! ([`crate::engine::Sim`]: one seeded event queue, the network, the nemesis, the clients and
//! the checkers).
//!
//! A run has two phases. In the **safety phase** the nemesis injects the faults of the
//! configured profile while clients run their workload and the checkers watch every step. In
//! the **liveness phase** every fault is healed (links restored, crashed nodes restarted, the
//! network reliable) and the cluster must converge and finish every pending operation within
//! the bound of [`SimConfig::liveness_election_timeouts`]. The run then checks what must hold
//! of the final state and of the whole client history.
//!
//! Every random choice comes from the run's seed, and events at the same time are ordered by
//! the order they were scheduled in, so the same seed gives the same run, bit for bit: the
//! trace hash of [`RunReport`](crate::RunReport) proves it.
//!
//! # Snapshots
//!
//! The nodes snapshot and compact as the runtime does, with thresholds small enough
//! ([`SimConfig::snapshot_every_entries`], [`SimConfig::compaction_tail_entries`]) that every
//! run compacts many times. When a Ready asks for one (`snapshot_due`), the host takes the
//! state machine's image at exactly that index and writes it out "in the background": the
//! file becomes durable only at a later [`RaftEvent::SnapshotDone`], drawn from the disk's
//! random stream, so that new entries, installs from a leader and crashes race it (a crash
//! before it loses the half-written file, as a crash before the rename does). Then the core
//! compacts its log ([`RawNode::on_snapshot_taken`]) and the disk drops the entries below it.
//! A leader reads the chunks a lagging follower needs from its disk
//! ([`SimConfig::snapshot_chunk_bytes`] each, drawn per seed); the follower collects them in a partial file
//! that a crash loses, verifies the whole, restores its state machine from it and compacts its
//! disk to it. A restart restores the state machine from the newest durable snapshot and
//! replays the log after it. The checkers compare states at every snapshot point (S4).

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash};
use std::io::Write as _;

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, Prng, StateMachine, Term};
use chorus_kv::{KvConfig, KvStore, Query};
use chorus_raft::{
    Committed, Config, Entry, EntryPayload, MembershipChange, MembershipError, Message, RawNode,
    ReadId, Ready, Role, SnapshotChunk, SnapshotChunkRequest, SnapshotMeta, Status, TransferError,
};
use chorus_storage::snapshot::membership_extra;
use chorus_storage::{MemStorage, SnapshotEncoder, Storage};

use crate::checkers::{Applied, FinalLog, state_hash};
use crate::config::{Interleaving, MEMBERSHIP_SPARES, SimConfig};
use crate::engine::{Event, Filter, ProtocolHost, Sim, Waiting};
use crate::machine::{SimStore, stamp_seed};
use crate::report::SnapshotStats;
use crate::visual::LaneState;
use crate::workload::{ReplyBody, RequestBody};

/// One simulated node: a Raft core, its state machine, its disk, and the client requests it
/// holds.
struct Host {
    id: NodeId,
    raft: Option<RawNode>,
    incarnation: u64,
    store: SimStore,
    disk: MemStorage,
    outstanding: Option<Ready>,
    applied: LogIndex,
    next_request: u64,
    writes: BTreeMap<u64, Waiting>,
    reads: BTreeMap<ReadId, (Waiting, Bytes)>,
    /// Reads whose read index is known, waiting for the state machine to catch up.
    ready_reads: Vec<(LogIndex, ReadId)>,
    /// The snapshot being written in the background, until its [`RaftEvent::SnapshotDone`]
    /// (one at a time, as the core asks for one at a time). A crash loses it.
    snapshot_job: Option<(SnapshotMeta, SnapshotEncoder<Vec<u8>>)>,
    /// Follower: the snapshot being received from the leader, the bytes so far (a partial
    /// file, which a crash loses).
    partial: Option<(SnapshotMeta, Vec<u8>)>,
    /// How this node's driver orders its work ([`Interleaving`]).
    order: Interleaving,
    /// Inputs that arrived while a Ready was being made durable, for a node that does not
    /// step its core until `advance` (`order.step_during_ready` off); a crash loses them.
    held: Vec<Held>,
    /// The disk hangs until this time ([`Simulator::stall_disk`]): no write becomes durable
    /// before it. Kept across a crash (it is the disk's), cleared when the run heals.
    disk_stalled_until: u64,
}

/// An input held back until the outstanding Ready is advanced.
enum Held {
    Tick,
    Message { from: usize, message: Message },
    Request { waiting: Waiting, body: RequestBody },
}

impl Host {
    fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    /// Whether an input arriving now waits for `advance` rather than reaching the core.
    fn holds_inputs(&self) -> bool {
        !self.order.step_during_ready && self.outstanding.is_some()
    }

    fn request_number(&mut self) -> u64 {
        self.next_request += 1;
        (self.incarnation << 32) | self.next_request
    }
}

/// The key-value store's configuration for a run: the default, with the store bug the run
/// injects, if any.
fn kv_config(config: &SimConfig) -> KvConfig {
    #[cfg(feature = "inject-bugs")]
    {
        KvConfig {
            restore_drops_expiry: config.kv_restore_drops_expiry,
            retry_reexecutes: config.kv_retry_reexecutes,
            ..KvConfig::default()
        }
    }
    #[cfg(not(feature = "inject-bugs"))]
    {
        let _ = config;
        KvConfig::default()
    }
}

/// The deterministic Raft simulator.
pub type Simulator = Sim<RaftNodes>;

/// A test's hook on every Raft message sent: it may rewrite the message, or return `false` to
/// drop it. Called with the sender and the receiver.
pub type MessageFilter = Filter<Message>;

/// The nemesis's turns a step of its Figure 8 waits for its goal (an election, replication)
/// before it gives up, one election timeout each.
const FIGURE_8_TURNS_MAX: u64 = 8;

/// How many of a node's last durable records a disk fault may damage
/// ([`SimConfig::synced_damage`]): the simulator's last segment.
const DAMAGE_WINDOW_RECORDS: usize = 32;

/// The chance that a crash, in a seed that draws synced damage, damages a synced record.
const DAMAGE_CHANCE: f64 = 1.0;

/// The Raft nodes of a simulation, with their disks.
pub struct RaftNodes {
    hosts: Vec<Host>,
    /// The voters the cluster is born with: hosts `0..initial_voters`; the others are spares
    /// that start outside the cluster.
    initial_voters: usize,
    /// Membership changes and leadership transfers the nemesis had accepted.
    membership_changes: u64,
    rng_disk: Prng,
    leader_terms: BTreeMap<chorus_core::Term, NodeId>,
    snapshots: SnapshotStats,
    /// The nemesis's Figure 8 under way, if any ([`Simulator::figure_8`]).
    figure_8: Option<Figure8>,
}

/// The nemesis's Figure 8 under way (Raft §5.4.2; the scripted twin is
/// `crate::gallery::figure8`): S1 is the leader the figure starts from, `term` the term of the
/// entries it keeps to itself, S5 the node elected without it.
#[derive(Clone, Copy, Debug)]
struct Figure8 {
    step: Figure8Step,
    s1: usize,
    s5: usize,
    term: Term,
    /// The nemesis's turns spent waiting for the current step's goal.
    waited: u64,
}

/// A step of the nemesis's Figure 8, named by what holds during it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Figure8Step {
    /// (a) S1 is cut off from every other node and takes writes nobody else gets; no
    /// AppendEntries with entries leaves any node, so a leader the others elect keeps its
    /// entries to itself too.
    Isolated,
    /// (b) S1 is down; the others elect S5, whose entries (of a later term than S1's, at the
    /// same indexes) reach nobody.
    Muted,
    /// (c) S5 is down and S1 back, the only candidate; the entries of a later term than
    /// `term` are lost from its AppendEntries (each arrives as the shorter batch S1 would have
    /// sent without them), so only its old entries reach the others: a majority holds them,
    /// but they are not of S1's new term, so they are not committed.
    OldEntriesOnly,
    /// (d) S1 is down again; S5 is back, the only candidate, and overwrites the old entries
    /// everywhere: legal only because (c) did not commit them.
    Overwrite,
}

/// The Raft driver's own events.
#[derive(Clone, Debug)]
pub enum RaftEvent {
    /// A node's disk finished syncing the Ready it started on in incarnation `incarnation`.
    PersistDone {
        /// The node.
        node: usize,
        /// Its incarnation when the write began.
        incarnation: u64,
    },
    /// A node finished writing the snapshot it started in incarnation `incarnation`.
    SnapshotDone {
        /// The node.
        node: usize,
        /// Its incarnation when the snapshot was taken.
        incarnation: u64,
    },
}

impl RaftNodes {
    /// The members (voters and learners) of the live leader's configuration, if there is a
    /// leader.
    fn members(&self) -> Option<Vec<NodeId>> {
        let leader = self.leader()?;
        let raft = self.hosts[leader].raft.as_ref()?;
        Some(raft.membership().members())
    }
}

impl ProtocolHost for RaftNodes {
    type Message = Message;
    type Event = RaftEvent;

    const MEMBERSHIP: bool = true;
    const STALE_READ_HUNT: bool = true;

    fn churn(sim: &mut Sim<Self>) {
        sim.churn();
    }

    fn plan(sim: &mut Sim<Self>) -> Option<u64> {
        sim.figure_8()
    }

    fn nodes(&self) -> usize {
        self.hosts.len()
    }

    fn is_up(&self, node: usize) -> bool {
        self.hosts[node].is_up()
    }

    fn start(sim: &mut Sim<Self>, node: usize) {
        let config = sim.raft_config(node);
        let durable = sim.nodes.hosts[node].disk.durable();
        let hard_state = durable.hard_state;
        let snapshot = durable.snapshot;
        let raft = RawNode::restart(config, durable)
            .expect("invariant: the simulator's configuration is valid");
        let status = raft.status();
        let host = &mut sim.nodes.hosts[node];
        host.raft = Some(raft);
        host.store = SimStore::new(
            &sim.config.machine,
            stamp_seed(sim.config.seed, node, host.incarnation),
            kv_config(&sim.config),
        );
        host.applied = LogIndex(0);
        host.outstanding = None;
        host.snapshot_job = None;
        host.partial = None;
        host.held.clear();
        if host.incarnation > 0 {
            sim.checkers.observe_restart(sim.time, &status, hard_state);
        }
        if let Some(meta) = snapshot {
            // The state machine comes back from the newest durable snapshot; the first Ready
            // replays the committed log after it.
            sim.restore(node, meta, "restarted from a snapshot");
            sim.nodes.snapshots.restored += 1;
        }
        sim.drive(node);
    }

    fn heal(&mut self) {
        // A slow disk is a fault of the safety phase: the liveness bound assumes a healthy
        // cluster.
        for host in &mut self.hosts {
            host.order.slow_disk = false;
            host.disk_stalled_until = 0;
        }
    }

    fn new_incarnation(&mut self, node: usize) {
        self.hosts[node].incarnation += 1;
    }

    fn tick(sim: &mut Sim<Self>, node: usize) {
        let host = &mut sim.nodes.hosts[node];
        if host.holds_inputs() {
            host.held.push(Held::Tick);
            return;
        }
        if let Some(raft) = &mut host.raft {
            raft.tick();
            sim.drive(node);
        }
    }

    fn deliver(sim: &mut Sim<Self>, from: usize, to: usize, message: Message) {
        let host = &mut sim.nodes.hosts[to];
        if !host.is_up() {
            return;
        }
        if host.holds_inputs() {
            host.held.push(Held::Message { from, message });
            return;
        }
        sim.step_message(from, to, message);
        sim.drive(to);
    }

    fn held_requests(&self, node: usize) -> usize {
        let host = &self.hosts[node];
        let held = host
            .held
            .iter()
            .filter(|input| matches!(input, Held::Request { .. }))
            .count();
        host.writes.len() + host.reads.len() + held
    }

    fn leader_hint(&self, node: usize) -> Option<usize> {
        let raft = self.hosts[node].raft.as_ref()?;
        let leader = raft.status().leader?;
        usize::try_from(leader.0 - 1).ok()
    }

    fn accept(sim: &mut Sim<Self>, node: usize, waiting: Waiting, body: RequestBody) -> bool {
        let host = &mut sim.nodes.hosts[node];
        if host.holds_inputs() {
            host.held.push(Held::Request { waiting, body });
            return true;
        }
        sim.accept_now(node, waiting, body)
    }

    fn drive(sim: &mut Sim<Self>, node: usize) {
        sim.drive(node);
    }

    fn event(sim: &mut Sim<Self>, event: RaftEvent) {
        match event {
            RaftEvent::PersistDone { node, incarnation } => {
                let host = &mut sim.nodes.hosts[node];
                if host.disk_stalled_until > sim.time {
                    // The disk hangs: the sync finishes once it works again.
                    let delay = host.disk_stalled_until - sim.time;
                    sim.schedule(
                        delay,
                        Event::Protocol(RaftEvent::PersistDone { node, incarnation }),
                    );
                    return;
                }
                if host.is_up() && host.incarnation == incarnation {
                    if let Some(ready) = host.outstanding.take() {
                        sim.complete(node, ready);
                    }
                }
            }
            RaftEvent::SnapshotDone { node, incarnation } => {
                let host = &sim.nodes.hosts[node];
                if host.is_up() && host.incarnation == incarnation {
                    sim.finish_snapshot(node);
                }
            }
        }
    }

    fn crash(sim: &mut Sim<Self>, node: usize) {
        if !sim.nodes.hosts[node].is_up() {
            return;
        }
        sim.stats.crashes += 1;
        let lost = sim.nodes.hosts[node].disk.crash(&mut sim.nodes.rng_disk);
        sim.stats.records_lost += lost as u64;
        if let Some(damaged) = damage_synced_on_crash(sim, node) {
            sim.stats.synced_damages += 1;
            let id = sim.nodes.hosts[node].id;
            sim.log(|| format!("crash {id}: the disk damaged a synced record, {damaged} cut"));
        }
        let host = &mut sim.nodes.hosts[node];
        host.raft = None;
        host.outstanding = None;
        host.writes.clear();
        host.reads.clear();
        host.ready_reads.clear();
        host.held.clear();
        // A snapshot still being written and a partial one being received are lost, as the
        // temporary files a restart removes.
        host.snapshot_job = None;
        host.partial = None;
        let id = host.id;
        sim.checkers.observe_crash(id);
        sim.log(|| format!("crash {id}, {lost} unsynced records lost"));
    }

    fn on_sent(sim: &mut Sim<Self>, from: usize, to: usize, message: &Message) {
        if let Message::RequestVoteResponse(response) = message {
            if response.granted && !response.pre_vote {
                let (from_id, to_id) = (NodeId(from as u64 + 1), NodeId(to as u64 + 1));
                sim.checkers
                    .observe_vote(sim.time, from_id, response.term, to_id);
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.raft.as_ref().map(|r| (i, r.status())))
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    fn partition_members(&self) -> Vec<NodeId> {
        self.hosts.iter().map(|h| h.id).collect()
    }

    fn converged(sim: &Sim<Self>) -> bool {
        let hosts = &sim.nodes.hosts;
        // Nodes outside the leader's configuration (removed, or spares never added) are
        // left behind by design.
        let Some(members) = sim.nodes.members() else {
            return false;
        };
        let statuses: Vec<Status> = hosts
            .iter()
            .filter(|h| members.contains(&h.id))
            .filter_map(|h| h.raft.as_ref().map(RawNode::status))
            .collect();
        let Some(first) = statuses.first() else {
            return false;
        };
        statuses.iter().any(|s| s.role == Role::Leader)
            && statuses.iter().all(|s| {
                s.commit == first.commit && s.applied == s.commit && s.last_index == s.commit
            })
            && hosts.iter().all(|h| h.outstanding.is_none())
    }

    fn lane_state(&self, lane: usize) -> Option<LaneState> {
        let raft = self.hosts.get(lane)?.raft.as_ref()?;
        let s = raft.status();
        let role = match s.role {
            Role::Follower => "follower",
            Role::PreCandidate => "pre-candidate",
            Role::Candidate => "candidate",
            Role::Leader => "leader",
        };
        Some(LaneState {
            role,
            epoch: s.term.0,
            commit: s.commit.0,
            snapshot: raft.snapshot().index.0,
        })
    }

    fn message_kind(message: &Message) -> String {
        match message {
            Message::AppendEntries(m) if m.entries.is_empty() => "Heartbeat".to_string(),
            Message::RequestVote(m) if m.pre_vote => "PreVote".to_string(),
            Message::RequestVoteResponse(m) if m.pre_vote => "PreVoteResponse".to_string(),
            other => crate::visual::debug_kind(&format!("{other:?}")),
        }
    }

    fn node_state(&self, node: usize) -> Option<String> {
        let raft = self.hosts[node].raft.as_ref()?;
        let s = raft.status();
        let repairing = s
            .repairing
            .map_or(String::new(), |term| format!(" repairing {term}"))
            + &format!(" voters {:?}", raft.membership().voters);
        Some(format!(
            "{} {:?} {} commit {} applied {} last {} snapshot {} first {}{repairing}",
            s.id,
            s.role,
            s.term,
            s.commit,
            s.applied,
            s.last_index,
            raft.snapshot().index,
            raft.first_index()
        ))
    }

    fn finish(sim: &mut Sim<Self>) {
        let hosts = &sim.nodes.hosts;
        let members = sim.nodes.members().unwrap_or_default();
        let logs: Vec<FinalLog> = hosts
            .iter()
            .filter(|h| members.contains(&h.id))
            .filter_map(|h| {
                let raft = h.raft.as_ref()?;
                let commit = raft.status().commit;
                let entries = (raft.first_index().0..=commit.0)
                    .filter_map(|i| raft.entry(LogIndex(i)).cloned())
                    .collect();
                Some(FinalLog {
                    node: h.id,
                    snapshot: raft.snapshot(),
                    entries,
                })
            })
            .collect();
        let final_commit = hosts
            .iter()
            .filter_map(|h| h.raft.as_ref().map(|r| r.status().commit))
            .max()
            .unwrap_or_default();
        sim.checkers.finish(sim.time, &logs, final_commit);
    }

    fn fingerprint_message(message: &Message, hasher: &mut DefaultHasher) {
        message.term().0.hash(hasher);
    }

    fn fingerprint_event(event: &RaftEvent, hasher: &mut DefaultHasher) {
        match event {
            RaftEvent::PersistDone { node, incarnation } => (4u8, node, incarnation).hash(hasher),
            RaftEvent::SnapshotDone { node, incarnation } => (9u8, node, incarnation).hash(hasher),
        }
    }

    fn snapshot_stats(&self) -> SnapshotStats {
        self.snapshots
    }
}

/// In seeds that draw it ([`SimConfig::synced_damage`]), now and then damages a synced
/// record of a crashed node's disk, if no other node is repairing and the voters keep a
/// majority that is not: a repairing node votes only for a candidate whose log reaches where
/// its own ended before the damage, and with repairing nodes needed for a majority, no node
/// may qualify (a repairing node that led with entries no one else received), and the
/// cluster would wait for an operator (safe, but not live: the design assumes disk faults on
/// a minority).
fn damage_synced_on_crash(sim: &mut Sim<RaftNodes>, node: usize) -> Option<usize> {
    if sim.config.synced_damage != Some(true) || !sim.nodes.rng_disk.chance(DAMAGE_CHANCE) {
        return None;
    }
    let hosts = &sim.nodes.hosts;
    let damaged = hosts[node].id;
    let repairing: Vec<NodeId> = hosts
        .iter()
        .filter(|host| {
            host.id == damaged
                || host.disk.durable_hard_state().repairing.is_some()
                || host
                    .raft
                    .as_ref()
                    .is_some_and(|raft| raft.status().repairing.is_some())
        })
        .map(|host| host.id)
        .collect();
    // One node at a time, and only while every node, up or down, knows the same voters (no
    // change under way, whose end a node's repair could block: a leader that removed a
    // healthy voter would need the repairing node's vote in its new configuration).
    let initial: BTreeSet<NodeId> = (1..=sim.nodes.initial_voters as u64).map(NodeId).collect();
    let mut configurations = hosts.iter().map(|host| match &host.raft {
        Some(raft) => raft.membership().voters.clone(),
        None => {
            let durable = host.disk.durable();
            durable
                .entries
                .iter()
                .rev()
                .find_map(|entry| match &entry.payload {
                    EntryPayload::Membership(membership) => Some(membership.voters.clone()),
                    _ => None,
                })
                .or_else(|| durable.membership.map(|membership| membership.voters))
                .unwrap_or_else(|| initial.clone())
        }
    });
    let voters = configurations.next()?;
    let settled = configurations.all(|other| other == voters);
    let unhealthy = voters.iter().filter(|id| repairing.contains(id)).count();
    if repairing.len() > 1 || !settled || unhealthy > voters.len().saturating_sub(1) / 2 {
        return None;
    }
    let host = &mut sim.nodes.hosts[node];
    host.disk.damage_synced(&mut sim.nodes.rng_disk)
}

impl Simulator {
    /// Sets `node`'s clock rate in a run whose clocks drift (Raft with lease reads): it ticks
    /// `ppm` parts per million fast (slow if negative) until set again. A scripted scenario
    /// puts clocks at the stated bound's worst case with it (the leader's slow, the others'
    /// fast), as the nemesis's stale-read hunt does.
    ///
    /// # Panics
    /// If clocks do not drift in this run, or `ppm` is not within ±900,000.
    pub fn set_clock_drift(&mut self, node: NodeId, ppm: i64) {
        let index = self.host_index(node);
        assert!(
            !self.tick_drift.is_empty(),
            "clocks drift only in Raft runs with lease reads on"
        );
        assert!(ppm.abs() <= 900_000, "a drift of {ppm} ppm is out of range");
        self.tick_drift[index] = ppm;
        self.tick_drift_drawn[index] = ppm;
    }

    /// A cluster of `config.nodes` fresh nodes and `config.clients` clients, nothing run yet.
    ///
    /// # Panics
    /// If the configuration is unusable (fewer than one node or client, no keys).
    #[must_use]
    pub fn new(config: SimConfig) -> Simulator {
        // The sizes a config leaves open are this seed's own (swarm testing).
        let config = config.drawn();
        let spares = if config.faults.membership() {
            config.spares.max(MEMBERSHIP_SPARES)
        } else {
            config.spares
        };
        Sim::build(config, |config, rng, _| {
            let mut nodes = RaftNodes {
                initial_voters: config.nodes,
                membership_changes: 0,
                hosts: (0..config.nodes + spares)
                    .map(|i| Host {
                        id: NodeId(i as u64 + 1),
                        raft: None,
                        incarnation: 0,
                        store: SimStore::new(
                            &config.machine,
                            stamp_seed(config.seed, i, 0),
                            kv_config(config),
                        ),
                        disk: if config.synced_damage == Some(true) {
                            MemStorage::with_damage_window(DAMAGE_WINDOW_RECORDS)
                        } else {
                            MemStorage::new()
                        },
                        outstanding: None,
                        applied: LogIndex(0),
                        next_request: 0,
                        writes: BTreeMap::new(),
                        reads: BTreeMap::new(),
                        ready_reads: Vec::new(),
                        snapshot_job: None,
                        partial: None,
                        order: Interleaving::default(),
                        held: Vec::new(),
                        disk_stalled_until: 0,
                    })
                    .collect(),
                rng_disk: rng.fork(),
                leader_terms: BTreeMap::new(),
                snapshots: SnapshotStats::default(),
                figure_8: None,
            };
            // Drawn from a stream of their own, so that every other stream stays as it was.
            let mut rng_orders = rng.fork();
            for host in &mut nodes.hosts {
                host.order = config.interleaving.unwrap_or_else(|| Interleaving {
                    apply_before_sync: rng_orders.chance(0.5),
                    step_during_ready: rng_orders.chance(0.5),
                    slow_disk: rng_orders.chance(0.25),
                    send_during_ready: rng_orders.chance(0.5),
                });
            }
            nodes
        })
    }

    fn raft_config(&self, node: usize) -> Config {
        // Spares join with no configuration: they learn it from the leader once added.
        let voters = if node < self.nodes.initial_voters {
            self.nodes.hosts[..self.nodes.initial_voters]
                .iter()
                .map(|h| h.id)
                .collect()
        } else {
            Vec::new()
        };
        let mut config = Config::new(self.nodes.hosts[node].id, voters);
        config.election_timeout_ticks = self.config.election_timeout_ticks;
        config.heartbeat_interval_ticks = self.config.heartbeat_interval_ticks;
        config.lease_reads = self.config.lease_reads == Some(true);
        config.append_entries_max = self.config.append_entries_max();
        config.snapshot_threshold_entries = self.config.snapshot_every_entries;
        config.compaction_tail_entries = self.config.compaction_tail_entries;
        config.snapshot_chunk_bytes_max = self.config.snapshot_chunk_bytes();
        config.seed = self.config.seed
            ^ ((node as u64 + 1) << 48)
            ^ (self.nodes.hosts[node].incarnation << 32);
        #[cfg(feature = "inject-bugs")]
        {
            config.injected_bugs = self.config.injected_bugs;
        }
        config
    }

    // ---- scripted control, for scenario tests ------------------------------------------

    /// The Raft core of a live node.
    #[must_use]
    pub fn raft(&self, node: NodeId) -> Option<&RawNode> {
        self.nodes.hosts[self.host_index(node)].raft.as_ref()
    }

    /// The key-value store of a live node, as it stands now.
    #[must_use]
    pub fn store(&self, node: NodeId) -> Option<&KvStore> {
        let host = &self.nodes.hosts[self.host_index(node)];
        host.is_up().then_some(host.store.kv())
    }

    /// The status of a live node.
    #[must_use]
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.raft(node).map(RawNode::status)
    }

    /// The live leader of the highest term, if any.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.nodes.leader().map(|i| self.nodes.hosts[i].id)
    }

    /// A node's disk (also while the node is down): its durable snapshots and log.
    #[must_use]
    pub fn disk(&self, node: NodeId) -> &MemStorage {
        &self.nodes.hosts[self.host_index(node)].disk
    }

    /// Damages a synced record of a crashed node's disk, as a bit flip in its last segment
    /// would (the run needs [`SimConfig::synced_damage`] on, so that the disks keep apart the
    /// records a fault may damage): the log is cut there and the restarted node repairs it
    /// from its peers, voting only as its log before the damage would have. Returns how many records were lost, `None` if nothing
    /// was damaged (see [`MemStorage::damage_synced`]).
    ///
    /// # Panics
    /// If the node is up: a disk is damaged while its node is down.
    pub fn damage_synced_record(&mut self, node: NodeId) -> Option<usize> {
        let index = self.host_index(node);
        assert!(!self.nodes.hosts[index].is_up(), "{node} is up");
        let lost = self.nodes.hosts[index]
            .disk
            .damage_synced(&mut self.nodes.rng_disk);
        if lost.is_some() {
            self.stats.synced_damages += 1;
        }
        lost
    }

    /// The snapshot counters so far.
    #[must_use]
    pub fn snapshot_stats(&self) -> SnapshotStats {
        self.nodes.snapshots
    }

    /// Whether a live node is writing a snapshot in the background now.
    #[must_use]
    pub fn snapshot_in_progress(&self, node: NodeId) -> bool {
        self.nodes.hosts[self.host_index(node)]
            .snapshot_job
            .is_some()
    }

    /// Follower: the snapshot a live node is receiving from the leader and the bytes it holds
    /// of it so far, if a transfer is under way.
    #[must_use]
    pub fn snapshot_partial(&self, node: NodeId) -> Option<(SnapshotMeta, u64)> {
        self.nodes.hosts[self.host_index(node)]
            .partial
            .as_ref()
            .map(|(meta, bytes)| (*meta, bytes.len() as u64))
    }

    /// Asks a live node for a snapshot at its applied index now, whatever the thresholds say
    /// (as an operator's `POST /snapshot`).
    pub fn request_snapshot(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if let Some(raft) = &mut self.nodes.hosts[index].raft {
            raft.request_snapshot();
            self.drive(index);
        }
    }

    /// Makes a node's disk hang for `units` from now (also while the node is down): every
    /// write it takes becomes durable only afterwards, as when an fsync stalls. The run's
    /// healing ends it early.
    pub fn stall_disk(&mut self, node: NodeId, units: u64) {
        let index = self.host_index(node);
        let until = self.time + units;
        let host = &mut self.nodes.hosts[index];
        host.disk_stalled_until = host.disk_stalled_until.max(until);
        self.log(|| format!("{node}'s disk hangs for {units} units"));
    }

    /// Makes a node start an election now.
    pub fn campaign(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if let Some(raft) = &mut self.nodes.hosts[index].raft {
            raft.campaign();
            self.drive(index);
        }
    }

    /// Proposes a key-value command at a node, outside any client (its answer goes nowhere).
    ///
    /// # Errors
    /// The node's refusal, or [`chorus_raft::ProposeError::NoLeader`] if it is down.
    pub fn propose(
        &mut self,
        node: NodeId,
        command: &chorus_kv::Command,
    ) -> Result<(), chorus_raft::ProposeError> {
        let index = self.host_index(node);
        let number = self.nodes.hosts[index].request_number();
        let host = &mut self.nodes.hosts[index];
        let Some(raft) = &mut host.raft else {
            return Err(chorus_raft::ProposeError::NoLeader);
        };
        let envelope = Envelope {
            origin: host.id,
            request: number,
            command: command.encode(),
            session: None,
        };
        raft.propose(envelope.encode())?;
        self.drive(index);
        Ok(())
    }

    /// Proposes a membership change at `leader` (as an operator's `chorus admin`).
    ///
    /// # Errors
    /// The node's refusal, or [`MembershipError::NotLeader`] if it is down.
    pub fn change_membership(
        &mut self,
        leader: NodeId,
        change: MembershipChange,
    ) -> Result<LogIndex, MembershipError> {
        let index = self.host_index(leader);
        let raft = self.nodes.hosts[index]
            .raft
            .as_mut()
            .ok_or(MembershipError::NotLeader)?;
        let at = raft.propose_membership(change)?;
        self.log(|| format!("{leader} proposes {change:?} at {at}"));
        self.drive(index);
        Ok(at)
    }

    /// Asks `leader` to hand leadership to `target`.
    ///
    /// # Errors
    /// The node's refusal, or [`TransferError::NotLeader`] if it is down.
    pub fn transfer_leadership(
        &mut self,
        leader: NodeId,
        target: NodeId,
    ) -> Result<(), TransferError> {
        let index = self.host_index(leader);
        let raft = self.nodes.hosts[index]
            .raft
            .as_mut()
            .ok_or(TransferError::NotLeader)?;
        raft.transfer_leadership(target)?;
        self.log(|| format!("{leader} transfers leadership to {target}"));
        self.drive(index);
        Ok(())
    }

    /// Membership changes and transfers the nemesis had accepted so far.
    #[must_use]
    pub fn membership_changes(&self) -> u64 {
        self.nodes.membership_changes
    }

    /// The nemesis's membership move: at the leader, add a learner, promote one, remove a
    /// voter (the leader itself now and then) or a learner, or transfer leadership. Changes
    /// the core refuses (one in progress, a learner behind, no commit in the term yet) are
    /// simply skipped, as an operator would retry. No change while a node repairs its log
    /// (an operator waits for `/status` to clear `repairing`): removing a healthy voter, or
    /// promoting a repairing one, could leave a configuration whose healthy voters are no
    /// majority, and no leader could then be elected.
    fn churn(&mut self) {
        let Some(leader) = self.nodes.leader() else {
            return;
        };
        if self.nodes.hosts.iter().any(|host| {
            host.disk.durable_hard_state().repairing.is_some()
                || host
                    .raft
                    .as_ref()
                    .is_some_and(|raft| raft.status().repairing.is_some())
        }) {
            return;
        }
        let leader_id = self.nodes.hosts[leader].id;
        let membership = self.nodes.hosts[leader]
            .raft
            .as_ref()
            .expect("invariant: the leader is up")
            .membership()
            .clone();
        let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
        let learners: Vec<NodeId> = membership.learners.iter().copied().collect();
        let outsiders: Vec<NodeId> = self
            .nodes
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|&id| !membership.contains(id))
            .collect();
        let roll = self.rng_nemesis.range(0, 100);
        let pick = |rng: &mut Prng, ids: &[NodeId]| ids[rng.index(ids.len())];
        let others: Vec<NodeId> = voters.iter().copied().filter(|&v| v != leader_id).collect();
        if roll < 20 && !others.is_empty() {
            let target = pick(&mut self.rng_nemesis, &others);
            if self.transfer_leadership(leader_id, target).is_ok() {
                self.nodes.membership_changes += 1;
            }
            return;
        }
        let change = if !learners.is_empty() && roll < 60 {
            MembershipChange::Promote(pick(&mut self.rng_nemesis, &learners))
        } else if !outsiders.is_empty() && roll < 70 && voters.len() + learners.len() < 6 {
            MembershipChange::AddLearner(pick(&mut self.rng_nemesis, &outsiders))
        } else if voters.len() > 3 || (voters.len() == 3 && !learners.is_empty()) {
            // Removing the leader itself a third of the time.
            let victim = if self.rng_nemesis.chance(0.33) {
                leader_id
            } else {
                pick(&mut self.rng_nemesis, &voters)
            };
            MembershipChange::Remove(victim)
        } else if !learners.is_empty() {
            MembershipChange::Remove(pick(&mut self.rng_nemesis, &learners))
        } else if !outsiders.is_empty() {
            MembershipChange::AddLearner(pick(&mut self.rng_nemesis, &outsiders))
        } else {
            return;
        };
        if self.change_membership(leader_id, change).is_ok() {
            self.nodes.membership_changes += 1;
            // Now and then an impatient operator asks for a second change at once: a correct
            // leader refuses it while the first is uncommitted (one change at a time).
            if self.rng_nemesis.chance(0.5) && !outsiders.is_empty() {
                let next = MembershipChange::AddLearner(pick(&mut self.rng_nemesis, &outsiders));
                if self.change_membership(leader_id, next).is_ok() {
                    self.nodes.membership_changes += 1;
                }
            }
        }
    }

    // ---- Figure 8 ----------------------------------------------------------------------

    /// The nemesis's Figure 8 ([`Figure8`]): in seeds that draw it ([`SimConfig::figure_8`])
    /// and whose faults include the network's and crashes, now and then the nemesis spends
    /// its turns building the figure instead of drawing random moves, each step once the
    /// last reached its goal (or giving up after [`FIGURE_8_TURNS_MAX`] turns of waiting).
    /// Every fault it uses is one of the fault model's (a partition, crashes and restarts,
    /// messages lost); the losses are chosen, so that the figure's narrow window is hit. A
    /// leader that commits an entry of an earlier term by counting replicas commits S1's old
    /// entry in (c), which S5 then overwrites in (d): the checkers see a committed entry lost.
    /// A figure starts at one idle nemesis turn in ten (it costs events: every step waits
    /// for elections). `None` if the nemesis should draw as usual.
    fn figure_8(&mut self) -> Option<u64> {
        let Some(mut figure) = self.nodes.figure_8 else {
            self.start_figure_8()?;
            return Some(self.config.election_timeout_units());
        };
        let reached = match figure.step {
            Figure8Step::Isolated => self.s1_holds_its_own(figure),
            Figure8Step::Muted => match self.figure_8_s5(figure) {
                Some(s5) => {
                    figure.s5 = s5;
                    true
                }
                None => false,
            },
            Figure8Step::OldEntriesOnly => self.old_entries_on_a_majority(figure),
            Figure8Step::Overwrite => self.nodes.leader() == Some(figure.s5),
        };
        if !reached {
            figure.waited += 1;
            if figure.waited > FIGURE_8_TURNS_MAX {
                self.end_figure_8(figure);
                return Some(self.nemesis_pause());
            }
            self.nodes.figure_8 = Some(figure);
            return Some(self.config.election_timeout_units());
        }
        figure.waited = 0;
        let (s1, s5, term) = (figure.s1, figure.s5, figure.term);
        let (s1_id, s5_id) = (self.nodes.hosts[s1].id, self.nodes.hosts[s5].id);
        match figure.step {
            Figure8Step::Isolated => {
                RaftNodes::crash(self, s1);
                self.network.heal();
                figure.step = Figure8Step::Muted;
                self.log(|| format!("figure 8 (b): {s1_id} down, entries muted"));
            }
            Figure8Step::Muted => {
                RaftNodes::crash(self, s5);
                self.schedule(0, Event::Restart { node: s1 });
                self.filter = Some(Box::new(move |from, _, message: &mut Message| {
                    match message {
                        Message::RequestVote(_) => from == s1_id,
                        Message::AppendEntries(append) if from == s1_id => {
                            // A log's terms never decrease: what is left is a prefix, the
                            // message S1 would have sent with a smaller batch.
                            append.entries.retain(|entry| entry.term <= term);
                            true
                        }
                        _ => true,
                    }
                }));
                figure.step = Figure8Step::OldEntriesOnly;
                self.log(|| format!("figure 8 (c): {s5_id} down, {s1_id} back"));
            }
            Figure8Step::OldEntriesOnly => {
                RaftNodes::crash(self, s1);
                self.schedule(0, Event::Restart { node: s5 });
                self.filter = Some(Box::new(move |from, _, message: &mut Message| {
                    !matches!(message, Message::RequestVote(_)) || from == s5_id
                }));
                figure.step = Figure8Step::Overwrite;
                self.log(|| format!("figure 8 (d): {s1_id} down, {s5_id} back"));
            }
            Figure8Step::Overwrite => {
                // S5 leads: let it overwrite for a while before S1 returns.
                self.end_figure_8(figure);
                return Some(2 * self.config.election_timeout_units());
            }
        }
        self.nodes.figure_8 = Some(figure);
        Some(self.config.election_timeout_units())
    }

    /// Step (a) of Figure 8, if the seed draws it now and there is a leader: cuts the leader
    /// off and mutes every node's entries.
    fn start_figure_8(&mut self) -> Option<()> {
        let drawn = self.config.figure_8 == Some(true)
            && self.config.faults.network()
            && self.config.faults.crashes()
            && self.rng_nemesis.chance(0.1);
        if !drawn {
            return None;
        }
        let s1 = self.nodes.leader()?;
        let term = self.nodes.hosts[s1].raft.as_ref()?.status().term;
        let s1_id = self.nodes.hosts[s1].id;
        let rest: Vec<NodeId> = self
            .nodes
            .hosts
            .iter()
            .map(|h| h.id)
            .filter(|&id| id != s1_id)
            .collect();
        self.network.heal();
        self.network.partition(&[vec![s1_id], rest]);
        self.stats.partitions += 1;
        // The clients write to S1 while it still believes it leads.
        for client in &mut self.workload.clients {
            client.target = s1;
        }
        self.filter = Some(Box::new(
            |_, _, message: &mut Message| !matches!(message, Message::AppendEntries(append) if !append.entries.is_empty()),
        ));
        self.nodes.figure_8 = Some(Figure8 {
            step: Figure8Step::Isolated,
            s1,
            s5: s1,
            term,
            waited: 0,
        });
        self.log(|| format!("figure 8 (a): {s1_id} of {term} cut off"));
        Some(())
    }

    /// (b)'s goal: S5, the live node other than S1 whose log ends in the latest term, if
    /// that is later than S1's `term` (a leader elected without S1 appended it).
    fn figure_8_s5(&self, figure: Figure8) -> Option<usize> {
        (0..self.nodes.hosts.len())
            .filter(|&node| node != figure.s1)
            .filter_map(|node| {
                let raft = self.nodes.hosts[node].raft.as_ref()?;
                let last = raft.term_at(raft.status().last_index)?;
                (last > figure.term).then_some((last, node))
            })
            .max()
            .map(|(_, node)| node)
    }

    /// (a)'s goal: S1's log ends in an entry of `term` that no other node holds.
    fn s1_holds_its_own(&self, figure: Figure8) -> bool {
        let Some(raft) = self.nodes.hosts[figure.s1].raft.as_ref() else {
            return false;
        };
        let last = raft.status().last_index;
        raft.term_at(last) == Some(figure.term)
            && self
                .nodes
                .hosts
                .iter()
                .filter(|h| h.id != self.nodes.hosts[figure.s1].id)
                .all(|h| {
                    h.raft
                        .as_ref()
                        .is_none_or(|r| r.term_at(last) != Some(figure.term))
                })
    }

    /// (c)'s goal: a majority of S1's voters hold its last entry of `term`.
    fn old_entries_on_a_majority(&self, figure: Figure8) -> bool {
        let Some(raft) = self.nodes.hosts[figure.s1].raft.as_ref() else {
            return false;
        };
        let mut old = raft.status().last_index;
        while raft.term_at(old).is_some_and(|term| term > figure.term) {
            old = old.prev();
        }
        let voters = &raft.membership().voters;
        let holding = self
            .nodes
            .hosts
            .iter()
            .filter(|h| voters.contains(&h.id))
            .filter(|h| {
                h.raft
                    .as_ref()
                    .is_some_and(|r| r.term_at(old) == Some(figure.term))
            })
            .count();
        2 * holding > voters.len()
    }

    /// Ends the nemesis's Figure 8: messages flow again, S1 and S5 restart if down.
    fn end_figure_8(&mut self, figure: Figure8) {
        self.filter = None;
        self.nodes.figure_8 = None;
        self.schedule(0, Event::Restart { node: figure.s1 });
        self.schedule(0, Event::Restart { node: figure.s5 });
        self.log(|| "figure 8: done".to_string());
    }

    // ---- nodes -------------------------------------------------------------------------

    /// Steps a message from `from` into live node `to`'s core (without driving it).
    fn step_message(&mut self, from: usize, to: usize, message: Message) {
        let from_id = self.nodes.hosts[from].id;
        let Some(raft) = &mut self.nodes.hosts[to].raft else {
            return;
        };
        let summary = if self.trace_log.is_some() {
            format!("{message:?}")
        } else {
            String::new()
        };
        if let Err(error) = raft.step(from_id, message) {
            // Every message in the simulator was sent by a correct node, so a refusal means
            // the core rejected legitimate (if stale or duplicated) input.
            let detail = format!(
                "n{} refused a message from {from_id}: {error} {summary}",
                to + 1
            );
            self.checkers.report("step", self.time, detail);
        }
    }

    /// Live node `node` takes a client's request into its core now: `false` if it refused.
    fn accept_now(&mut self, node: usize, waiting: Waiting, body: RequestBody) -> bool {
        let number = self.nodes.hosts[node].request_number();
        let host = &mut self.nodes.hosts[node];
        let raft = host.raft.as_mut().expect("invariant: checked is_up");
        match body {
            RequestBody::Write(command) => {
                let envelope = Envelope {
                    origin: host.id,
                    request: number,
                    command,
                    session: None,
                };
                let accepted = raft.propose(envelope.encode()).is_ok();
                if accepted {
                    host.writes.insert(number, waiting);
                }
                accepted
            }
            RequestBody::Read(key) => {
                let id = ReadId(number);
                let leased = raft.holds_lease();
                let accepted = raft.read_index(id).is_ok();
                if accepted {
                    host.reads.insert(id, (waiting, key));
                    if leased {
                        self.stats.lease_reads += 1;
                    }
                }
                accepted
            }
        }
    }

    /// Steps the inputs held while the last Ready was made durable, in arrival order.
    fn release_held(&mut self, node: usize) {
        let held = std::mem::take(&mut self.nodes.hosts[node].held);
        for input in held {
            match input {
                Held::Tick => {
                    if let Some(raft) = &mut self.nodes.hosts[node].raft {
                        raft.tick();
                    }
                }
                Held::Message { from, message } => self.step_message(from, node, message),
                Held::Request { waiting, body } => {
                    if !self.accept_now(node, waiting, body) {
                        let hint = self.nodes.leader_hint(node);
                        self.reply(waiting, ReplyBody::Retry(hint));
                    }
                }
            }
        }
    }

    fn send(&mut self, from: usize, to_id: NodeId, message: Message) {
        let to = usize::try_from(to_id.0 - 1).expect("invariant: node ids are 1..=n");
        self.transmit(from, to, message);
    }

    /// Takes the node's next Ready, if it has one and none is outstanding, and starts on it.
    fn drive(&mut self, node: usize) {
        loop {
            let host = &mut self.nodes.hosts[node];
            let Some(raft) = &mut host.raft else {
                return;
            };
            if host.outstanding.is_some() {
                if host.order.send_during_ready && host.order.step_during_ready {
                    // The Ready's write is under way: what needs no durability leaves now.
                    let messages = raft.take_messages();
                    // A driver that applied the Ready before its sync (the runtime's order)
                    // also applies what was committed since, as the runtime does.
                    let committed = if host.order.apply_before_sync {
                        raft.take_committed()
                    } else {
                        Committed::default()
                    };
                    for (to, message) in messages {
                        self.send(node, to, message);
                    }
                    self.apply_committed(node, committed);
                }
                break;
            }
            if !raft.has_ready() {
                break;
            }
            let mut ready = raft.ready();
            if ready
                .entries
                .windows(2)
                .any(|pair| pair[1].index != pair[0].index.next())
            {
                let detail = format!(
                    "n{} Ready entries are not contiguous: {:?}",
                    node + 1,
                    ready
                        .entries
                        .iter()
                        .map(|e| (e.index.0, e.term.0))
                        .collect::<Vec<_>>()
                );
                self.checkers.report("ready", self.time, detail);
            }
            if let Some(first) = ready.entries.first() {
                let prev_term = raft.term_at(first.index.prev());
                let commit = raft.status().commit;
                self.checkers.observe_persist(
                    self.time,
                    self.nodes.hosts[node].id,
                    commit,
                    prev_term,
                    &ready.entries,
                );
            }
            // 1. Replication goes out at once; a follower that needs a snapshot gets its next
            //    chunk (sent with the next Ready).
            for (to, message) in ready.messages.clone() {
                self.send(node, to, message);
            }
            for &request in &ready.snapshot_chunk_requests {
                self.send_chunk(node, request);
            }
            // 2. A follower writes the chunks it received and installs a complete snapshot
            //    before it persists entries after it (the install is durable at once).
            for chunk in &ready.snapshot_chunks {
                self.write_chunk(node, chunk);
            }
            if let Some(meta) = ready.snapshot {
                self.install(node, meta);
            }
            // 4, early (the contract allows it): committed entries are durable on a majority
            //    already, so applying them and answering never waits on this node's disk.
            if self.nodes.hosts[node].order.apply_before_sync {
                self.apply_ready(node, &mut ready);
            }
            let host = &mut self.nodes.hosts[node];
            if let Err(error) = host.disk.write(ready.hard_state, &ready.entries) {
                let detail = format!("n{} could not write its Ready: {error}", node + 1);
                self.checkers.report("storage", self.time, detail);
            }
            let host = &mut self.nodes.hosts[node];
            if host.disk.is_dirty() {
                // An fsync takes a few units, and now and then far longer; a slow disk's
                // always takes long.
                let delay = if host.order.slow_disk {
                    if self.nodes.rng_disk.chance(0.02) {
                        // A stall of one to four election timeouts.
                        self.nodes.rng_disk.range(1, 5) * self.config.election_timeout_units()
                    } else {
                        self.nodes.rng_disk.range(5, 60)
                    }
                } else if self.nodes.rng_disk.chance(0.05) {
                    self.nodes.rng_disk.range(10, 60)
                } else {
                    self.nodes.rng_disk.range(1, 4)
                };
                let incarnation = host.incarnation;
                host.outstanding = Some(ready);
                self.schedule(
                    delay,
                    Event::Protocol(RaftEvent::PersistDone { node, incarnation }),
                );
                break;
            }
            self.complete(node, ready);
        }
        self.observe(node);
    }

    /// The Ready's state is durable: send what promised it, apply, answer, advance.
    fn complete(&mut self, node: usize, mut ready: Ready) {
        if let Err(error) = self.nodes.hosts[node].disk.sync() {
            let detail = format!("n{} could not sync: {error}", node + 1);
            self.checkers.report("storage", self.time, detail);
        }
        for (to, message) in std::mem::take(&mut ready.persisted_messages) {
            self.send(node, to, message);
        }
        self.apply_ready(node, &mut ready);
        if let Some(raft) = &mut self.nodes.hosts[node].raft {
            raft.advance();
        }
        self.release_held(node);
        self.drive(node);
    }

    /// Applies what [`RawNode::take_committed`] gave while a Ready was out, and serves the
    /// reads now applied.
    fn apply_committed(&mut self, node: usize, committed: Committed) {
        if committed.is_empty() {
            return;
        }
        for entry in &committed.entries {
            self.apply(node, entry);
        }
        for state in committed.read_states {
            self.nodes.hosts[node]
                .ready_reads
                .push((state.index, state.id));
        }
        self.serve_reads(node);
    }

    /// Step 4 of the contract: applies the Ready's committed entries, serves the reads now
    /// applied, fails the rejected ones and starts a due snapshot. Takes them out of the
    /// Ready, so that a second call does nothing.
    fn apply_ready(&mut self, node: usize, ready: &mut Ready) {
        for entry in std::mem::take(&mut ready.committed_entries) {
            self.apply(node, &entry);
        }
        for state in std::mem::take(&mut ready.read_states) {
            self.nodes.hosts[node]
                .ready_reads
                .push((state.index, state.id));
        }
        self.serve_reads(node);
        for id in std::mem::take(&mut ready.rejected_reads) {
            if let Some((waiting, _)) = self.nodes.hosts[node].reads.remove(&id) {
                let leader = self.nodes.leader_hint(node);
                self.reply(waiting, ReplyBody::Retry(leader));
            }
        }
        if let Some(meta) = ready.snapshot_due.take() {
            self.start_snapshot(node, meta);
        }
    }

    // ---- snapshots ---------------------------------------------------------------------

    /// Restores node `node`'s state machine from its durable snapshot `meta` (at a restart or
    /// an install), and shows the checkers the state it now stands at.
    fn restore(&mut self, node: usize, meta: SnapshotMeta, what: &str) {
        let machine = self.config.machine.clone();
        let seed =
            stamp_seed(self.config.seed, node, self.nodes.hosts[node].incarnation) ^ meta.index.0;
        let kv = kv_config(&self.config);
        let host = &mut self.nodes.hosts[node];
        let restored = host
            .disk
            .open_snapshot(meta)
            .map_err(|error| error.to_string())
            .and_then(|mut reader| {
                let mut store = SimStore::new(&machine, seed, kv);
                store.restore(&mut reader).map_err(|error| error.reason)?;
                reader.verify_to_end().map_err(|error| error.to_string())?;
                Ok(store)
            });
        match restored {
            Ok(store) => {
                host.store = store;
                host.applied = meta.index;
                let (id, state) = (host.id, state_hash(&host.store.snapshot_bytes()));
                self.checkers
                    .observe_state(self.time, id, meta.index, state, true, what);
                self.log(|| format!("{id} {what} at {}", meta.index));
            }
            Err(reason) => {
                let detail = format!(
                    "n{} cannot restore the snapshot at {}: {reason}",
                    node + 1,
                    meta.index
                );
                self.checkers.report("storage", self.time, detail);
            }
        }
    }

    /// The Ready asked for a snapshot at `meta`, the index just applied: takes the state
    /// machine's image now and writes it out in the background, durable at a later
    /// [`RaftEvent::SnapshotDone`].
    fn start_snapshot(&mut self, node: usize, meta: SnapshotMeta) {
        let host = &mut self.nodes.hosts[node];
        let Some(raft) = &mut host.raft else {
            return;
        };
        if host.applied != meta.index || host.snapshot_job.is_some() {
            let detail = format!(
                "n{} was asked for a snapshot at {} with its state machine at {} (writing \
                 another: {})",
                node + 1,
                meta.index,
                host.applied,
                host.snapshot_job.is_some()
            );
            raft.on_snapshot_failed();
            self.checkers.report("ready", self.time, detail);
            return;
        }
        let image = host.store.snapshot_bytes();
        // The configuration as of the snapshot's index travels in its header.
        let Some(membership) = raft.membership_at(meta.index) else {
            raft.on_snapshot_failed();
            let detail = format!(
                "n{} does not know its configuration at its snapshot's index {}",
                node + 1,
                meta.index
            );
            self.checkers.report("snapshot", self.time, detail);
            return;
        };
        let extra = membership_extra(membership);
        let encoder = MemStorage::create_snapshot(meta, &extra).and_then(|mut encoder| {
            encoder
                .write_all(&image)
                .map_err(|error| chorus_storage::StorageError::InvalidWrite(error.to_string()))?;
            Ok(encoder)
        });
        let encoder = match encoder {
            Ok(encoder) => encoder,
            Err(error) => {
                raft.on_snapshot_failed();
                let detail = format!("n{} cannot write a snapshot: {error}", node + 1);
                self.checkers.report("storage", self.time, detail);
                return;
            }
        };
        host.snapshot_job = Some((meta, encoder));
        let (id, incarnation) = (host.id, host.incarnation);
        self.checkers.observe_state(
            self.time,
            id,
            meta.index,
            state_hash(&image),
            false,
            "took a snapshot",
        );
        // Writing a snapshot takes a while, now and then far longer: new entries, installs
        // and crashes race it.
        let delay = if self.nodes.rng_disk.chance(0.1) {
            self.nodes.rng_disk.range(40, 300)
        } else {
            self.nodes.rng_disk.range(2, 40)
        };
        self.schedule(
            delay,
            Event::Protocol(RaftEvent::SnapshotDone { node, incarnation }),
        );
    }

    /// The snapshot written in the background is durable: the core compacts its log to it
    /// and the disk drops the entries below what the core keeps (and below the previous
    /// snapshot, as the runtime does, so a damaged newest snapshot could fall back).
    fn finish_snapshot(&mut self, node: usize) {
        let host = &mut self.nodes.hosts[node];
        let (Some(raft), Some((meta, encoder))) = (&mut host.raft, host.snapshot_job.take()) else {
            return;
        };
        let previous = raft.snapshot();
        if meta.index <= previous.index {
            // Overtaken by a newer snapshot installed from the leader: drop the file.
            let _ = raft.on_snapshot_taken(meta);
            return;
        }
        host.disk.finish_snapshot(encoder);
        if let Err(error) = raft.on_snapshot_taken(meta) {
            let detail = format!("n{} refused its own snapshot: {error}", node + 1);
            self.checkers.report("snapshot", self.time, detail);
            return;
        }
        let keep_from = raft.first_index().min(previous.index.next());
        if let Err(error) = host.disk.compact(meta, keep_from) {
            let detail = format!(
                "n{} cannot compact its disk to {}: {error}",
                node + 1,
                meta.index
            );
            self.checkers.report("storage", self.time, detail);
        }
        host.disk.retain_snapshots(2);
        self.nodes.snapshots.taken += 1;
        let first = raft.first_index();
        let id = host.id;
        self.log(|| format!("{id} took a snapshot at {}, log from {first}", meta.index));
        self.drive(node);
    }

    /// Leader: reads the chunk of its snapshot a follower needs from its disk and hands it to
    /// the core.
    fn send_chunk(&mut self, node: usize, request: SnapshotChunkRequest) {
        let SnapshotChunkRequest { to, meta, offset } = request;
        let chunk_max = self.config.snapshot_chunk_bytes();
        let host = &mut self.nodes.hosts[node];
        let Some(raft) = &mut host.raft else {
            return;
        };
        let Some(bytes) = host.disk.snapshot_bytes(meta) else {
            raft.report_snapshot_unavailable(to);
            return;
        };
        let start = usize::try_from(offset).map_or(bytes.len(), |o| o.min(bytes.len()));
        let end = start.saturating_add(chunk_max).min(bytes.len());
        let done = end == bytes.len();
        if raft
            .send_snapshot_chunk(to, meta, offset, bytes.slice(start..end), done)
            .is_ok()
        {
            self.nodes.snapshots.chunks_sent += 1;
        }
    }

    /// Follower: writes a received chunk into the partial snapshot.
    fn write_chunk(&mut self, node: usize, chunk: &SnapshotChunk) {
        let host = &mut self.nodes.hosts[node];
        if chunk.offset == 0 {
            host.partial = Some((chunk.meta, Vec::new()));
        }
        match &mut host.partial {
            Some((meta, bytes)) if *meta == chunk.meta && bytes.len() as u64 == chunk.offset => {
                bytes.extend_from_slice(&chunk.data);
            }
            _ => {
                // The core checked that the chunk continues the partial snapshot exactly.
                let detail = format!(
                    "n{} got a chunk of the snapshot at {} at offset {} that does not continue \
                     its partial snapshot",
                    node + 1,
                    chunk.meta.index,
                    chunk.offset
                );
                self.checkers.report("snapshot", self.time, detail);
            }
        }
    }

    /// Follower: installs the snapshot `meta` completed by the chunks received: verifies it,
    /// makes it durable, restores the state machine from it and compacts the disk to it.
    fn install(&mut self, node: usize, meta: SnapshotMeta) {
        let host = &mut self.nodes.hosts[node];
        let bytes = match host.partial.take() {
            Some((partial, bytes)) if partial == meta => Some(Bytes::from(bytes)),
            _ => host.disk.snapshot_bytes(meta),
        };
        let installed = bytes
            .ok_or_else(|| "the snapshot was never received whole".to_string())
            .and_then(|bytes| {
                host.disk
                    .install_snapshot(meta, bytes)
                    .map_err(|error| error.to_string())
            });
        if let Err(reason) = installed {
            let detail = format!(
                "n{} cannot install the snapshot at {}: {reason}",
                node + 1,
                meta.index
            );
            self.checkers.report("storage", self.time, detail);
            return;
        }
        self.restore(node, meta, "installed a snapshot");
        let host = &mut self.nodes.hosts[node];
        // The disk keeps the log after the snapshot only if it goes on from it (Raft §7).
        if let Err(error) = host.disk.compact(meta, meta.index.next()) {
            let detail = format!(
                "n{} cannot compact its disk to the installed snapshot at {}: {error}",
                node + 1,
                meta.index
            );
            self.checkers.report("storage", self.time, detail);
        }
        host.disk.retain_snapshots(2);
        self.nodes.snapshots.installed += 1;
    }

    fn apply(&mut self, node: usize, entry: &Entry) {
        let host = &mut self.nodes.hosts[node];
        host.applied = entry.index;
        let mut output = None;
        let mut origin = None;
        if let EntryPayload::Command(bytes) = &entry.payload {
            match Envelope::decode(bytes) {
                Ok(envelope) => {
                    output = Some(host.store.apply(entry.index, &envelope.command));
                    if envelope.origin == host.id {
                        origin = host.writes.remove(&envelope.request);
                    }
                }
                Err(_) => output = Some(host.store.apply(entry.index, bytes)),
            }
        }
        let id = host.id;
        let applied = Applied {
            node: id,
            entry,
            output: output.as_ref(),
        };
        self.checkers.observe_apply(self.time, &applied);
        if let (Some(waiting), Some(output)) = (origin, output) {
            self.reply(waiting, ReplyBody::Done(output));
        }
    }

    fn serve_reads(&mut self, node: usize) {
        let host = &mut self.nodes.hosts[node];
        let applied = host.applied;
        let (servable, waiting): (Vec<_>, Vec<_>) = host
            .ready_reads
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        host.ready_reads = waiting;
        for (_, id) in servable {
            if let Some((waiting, key)) = self.nodes.hosts[node].reads.remove(&id) {
                let answer = self.nodes.hosts[node]
                    .store
                    .query(&Query::Get { key }.encode());
                self.reply(waiting, ReplyBody::Done(answer));
            }
        }
    }

    /// Feeds the node's status to the checkers.
    fn observe(&mut self, node: usize) {
        let Some(raft) = &self.nodes.hosts[node].raft else {
            return;
        };
        let status = raft.status();
        if status.role == Role::Leader
            && self
                .nodes
                .leader_terms
                .insert(status.term, status.id)
                .is_none()
        {
            self.stats.leaders += 1;
            let (id, term) = (status.id, status.term);
            self.log(|| format!("{id} leads {term}"));
        }
        let raft = self.nodes.hosts[node]
            .raft
            .as_ref()
            .expect("invariant: checked above");
        self.checkers.observe_status(self.time, &status, raft);
        self.checkers
            .observe_configuration(self.time, &status, raft);
    }

    // ---- clients -----------------------------------------------------------------------
}
