//! The simulator: many Raft nodes, their disks, a network and clients in one thread, driven by
//! a seeded event queue.
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
//! trace hash of [`RunReport`] proves it.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, Prng, StateMachine};
use chorus_kv::{KvConfig, KvStore, Query};
use chorus_raft::{Config, Entry, EntryPayload, Message, RawNode, ReadId, Ready, Role, Status};
use chorus_storage::{MemStorage, Storage};

use crate::checkers::{Applied, Checkers, Violation};
use crate::config::{Protocol, SimConfig};
use crate::history::Operation;
use crate::linearizability::{self, CheckLimits, Verdict};
use crate::nemesis::{self, Action};
use crate::network::{Latency, LinkFaults, Network};
use crate::pb::PbSimulator;
use crate::queue::EventQueue;
use crate::workload::{
    Client, ClientEvent, ClientIo, ClientReply, ClientRequest, ReplyBody, RequestBody, Workload,
};

/// Requests one node holds for its clients at once; more are turned away with a retry.
const NODE_REQUESTS_MAX: usize = 1024;

/// Something that happens at a point in simulated time.
#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: usize,
    },
    Deliver {
        from: usize,
        to: usize,
        message: Message,
    },
    Request {
        node: usize,
        request: ClientRequest,
    },
    Reply {
        client: usize,
        reply: ClientReply,
    },
    PersistDone {
        node: usize,
        incarnation: u64,
    },
    ClientSend {
        client: usize,
        op_id: u64,
        attempt: u64,
    },
    ClientTimeout {
        client: usize,
        op_id: u64,
        attempt: u64,
    },
    Nemesis,
    Restart {
        node: usize,
    },
}

impl From<ClientEvent> for Event {
    fn from(event: ClientEvent) -> Event {
        match event {
            ClientEvent::Send {
                client,
                op_id,
                attempt,
            } => Event::ClientSend {
                client,
                op_id,
                attempt,
            },
            ClientEvent::Timeout {
                client,
                op_id,
                attempt,
            } => Event::ClientTimeout {
                client,
                op_id,
                attempt,
            },
            ClientEvent::Request { node, request } => Event::Request { node, request },
        }
    }
}

impl Event {
    fn fingerprint(&self, hasher: &mut DefaultHasher) {
        match self {
            Event::Tick { node } => (0u8, node).hash(hasher),
            Event::Deliver { from, to, message } => {
                (1u8, from, to, message.term().0).hash(hasher);
            }
            Event::Request { node, request } => {
                (2u8, node, request.client, request.op_id).hash(hasher)
            }
            Event::Reply { client, reply } => (3u8, client, reply.op_id).hash(hasher),
            Event::PersistDone { node, incarnation } => (4u8, node, incarnation).hash(hasher),
            Event::ClientSend {
                client,
                op_id,
                attempt,
            } => (5u8, client, op_id, attempt).hash(hasher),
            Event::ClientTimeout {
                client,
                op_id,
                attempt,
            } => (6u8, client, op_id, attempt).hash(hasher),
            Event::Nemesis => 7u8.hash(hasher),
            Event::Restart { node } => (8u8, node).hash(hasher),
        }
    }
}

/// A request a node took from a client and has not answered yet.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    client: usize,
    op_id: u64,
}

/// One simulated node: a Raft core, its state machine, its disk, and the client requests it
/// holds.
struct Host {
    id: NodeId,
    raft: Option<RawNode>,
    incarnation: u64,
    store: KvStore,
    disk: MemStorage,
    outstanding: Option<Ready>,
    applied: LogIndex,
    next_request: u64,
    writes: BTreeMap<u64, Waiting>,
    reads: BTreeMap<ReadId, (Waiting, Bytes)>,
    /// Reads whose read index is known, waiting for the state machine to catch up.
    ready_reads: Vec<(LogIndex, ReadId)>,
}

impl Host {
    fn is_up(&self) -> bool {
        self.raft.is_some()
    }

    fn request_number(&mut self) -> u64 {
        self.next_request += 1;
        (self.incarnation << 32) | self.next_request
    }

    fn held_requests(&self) -> usize {
        self.writes.len() + self.reads.len()
    }
}

/// Which phase the run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness { healed_at: u64, deadline: u64 },
    Done,
}

/// Counters of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Events processed.
    pub events: u64,
    /// Raft messages sent between nodes (before loss).
    pub messages: u64,
    /// Node crashes injected.
    pub crashes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Unsynced disk records lost in crashes.
    pub records_lost: u64,
    /// Distinct terms in which a leader was seen (primary-backup: distinct views in which a
    /// primary acted).
    pub leaders: u64,
    /// Client attempts sent to nodes (first tries and retries).
    pub client_attempts: u64,
    /// Messages to and from the view service (primary-backup only; clients never send any).
    pub view_service_messages: u64,
    /// Failovers (primary-backup only): view changes that made the backup of the previous
    /// view its primary.
    pub failovers: u64,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// The run's seed.
    pub seed: u64,
    /// The client history, in the HISTORY.md model.
    pub history: Vec<Operation>,
    /// Every invariant violation, liveness failure and linearizability failure found.
    pub violations: Vec<Violation>,
    /// The linearizability verdict over the whole history.
    pub verdict: Verdict,
    /// A hash of every event processed: equal for equal seeds.
    pub trace_hash: u64,
    /// Simulated time at the end.
    pub end_time: u64,
    /// Counters.
    pub stats: RunStats,
    /// Notable events, one line each, if [`Simulator::enable_trace_log`] was called.
    pub trace: Vec<String>,
    /// Primary-backup only: the run ended in the documented dead end where no failover is
    /// possible (the view service is down, or stuck by its rule 6 because the primary and
    /// every holder of its state failed). Its liveness was not asserted; its safety was.
    pub stuck: bool,
}

impl RunReport {
    /// Whether the run found nothing wrong.
    #[must_use]
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// Whether the history was proven linearizable.
    #[must_use]
    pub fn linearizable(&self) -> bool {
        matches!(self.verdict, Verdict::Linearizable)
    }
}

/// The deterministic simulator.
pub struct Simulator {
    config: SimConfig,
    time: u64,
    queue: EventQueue<Event>,
    hosts: Vec<Host>,
    workload: Workload,
    network: Network,
    checkers: Checkers,
    phase: Phase,
    rng_network: Prng,
    rng_nemesis: Prng,
    rng_workload: Prng,
    rng_disk: Prng,
    trace: DefaultHasher,
    stats: RunStats,
    leader_terms: BTreeMap<chorus_core::Term, NodeId>,
    trace_log: Option<Vec<String>>,
    filter: Option<MessageFilter>,
}

/// A test's hook on every Raft message sent: it may rewrite the message, or return `false` to
/// drop it. Called with the sender and the receiver.
pub type MessageFilter = Box<dyn FnMut(NodeId, NodeId, &mut Message) -> bool>;

impl Simulator {
    /// A cluster of `config.nodes` fresh nodes and `config.clients` clients, nothing run yet.
    ///
    /// # Panics
    /// If the configuration is unusable (fewer than one node or client, no keys).
    #[must_use]
    pub fn new(config: SimConfig) -> Simulator {
        assert!(config.nodes >= 1 && config.clients >= 1 && config.keys >= 1);
        let mut rng = Prng::new(config.seed);
        let rng_network = rng.fork();
        let rng_nemesis = rng.fork();
        let mut rng_workload = rng.fork();
        let rng_disk = rng.fork();
        let network = Network::new(Latency {
            min: 1,
            max: 6,
            tail_max: 3 * config.election_timeout_units(),
        });
        let hosts = (0..config.nodes)
            .map(|i| Host {
                id: NodeId(i as u64 + 1),
                raft: None,
                incarnation: 0,
                store: KvStore::new(KvConfig::default()),
                disk: MemStorage::new(),
                outstanding: None,
                applied: LogIndex(0),
                next_request: 0,
                writes: BTreeMap::new(),
                reads: BTreeMap::new(),
                ready_reads: Vec::new(),
            })
            .collect();
        let clients = (0..config.clients)
            .map(|i| Client::new(i, rng_workload.index(config.nodes)))
            .collect();
        let mut simulator = Simulator {
            config,
            time: 0,
            queue: EventQueue::new(),
            hosts,
            workload: Workload::new(clients),
            network,
            checkers: Checkers::new(),
            phase: Phase::Safety,
            rng_network,
            rng_nemesis,
            rng_workload,
            rng_disk,
            trace: DefaultHasher::new(),
            stats: RunStats::default(),
            leader_terms: BTreeMap::new(),
            trace_log: None,
            filter: None,
        };
        for node in 0..simulator.hosts.len() {
            simulator.start_node(node);
            let phase = simulator
                .rng_workload
                .range(1, simulator.config.tick_units + 1);
            simulator.schedule(phase, Event::Tick { node });
        }
        for client in 0..simulator.workload.clients.len() {
            simulator.workload.clients[client].start_register();
            let delay = simulator.rng_workload.range(1, 20);
            simulator.schedule(
                delay,
                Event::ClientSend {
                    client,
                    op_id: 1,
                    attempt: 0,
                },
            );
        }
        if simulator.config.faults != crate::config::FaultProfile::None {
            let delay = simulator.nemesis_pause();
            simulator.schedule(delay, Event::Nemesis);
        }
        simulator
    }

    /// Keeps a human-readable line per notable event (for `--verbose`).
    pub fn enable_trace_log(&mut self) {
        self.trace_log = Some(Vec::new());
    }

    fn log(&mut self, line: impl FnOnce() -> String) {
        if let Some(log) = &mut self.trace_log {
            log.push(format!("{:>8} {}", self.time, line()));
        }
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.queue.push(self.time + delay, event);
    }

    fn raft_config(&self, node: usize) -> Config {
        let voters = self.hosts.iter().map(|h| h.id).collect();
        let mut config = Config::new(self.hosts[node].id, voters);
        config.election_timeout_ticks = self.config.election_timeout_ticks;
        config.heartbeat_interval_ticks = self.config.heartbeat_interval_ticks;
        config.append_entries_max = self.config.append_entries_max;
        config.seed =
            self.config.seed ^ ((node as u64 + 1) << 48) ^ (self.hosts[node].incarnation << 32);
        #[cfg(feature = "inject-bugs")]
        {
            config.injected_bugs = self.config.injected_bugs;
        }
        config
    }

    fn start_node(&mut self, node: usize) {
        let config = self.raft_config(node);
        let durable = self.hosts[node].disk.durable();
        let hard_state = durable.hard_state;
        let raft = RawNode::restart(config, durable)
            .expect("invariant: the simulator's configuration is valid");
        let status = raft.status();
        let host = &mut self.hosts[node];
        host.raft = Some(raft);
        host.store = KvStore::new(KvConfig::default());
        host.applied = LogIndex(0);
        host.outstanding = None;
        if host.incarnation > 0 {
            self.checkers
                .observe_restart(self.time, &status, hard_state);
        }
        self.drive(node);
    }

    // ---- scripted control, for scenario tests ------------------------------------------

    /// The current simulated time.
    #[must_use]
    pub fn now(&self) -> u64 {
        self.time
    }

    /// Processes the next event, without moving between phases. Returns `false` when nothing
    /// is scheduled.
    pub fn step(&mut self) -> bool {
        let Some((time, event)) = self.queue.pop() else {
            return false;
        };
        self.time = time;
        self.process(event);
        true
    }

    /// Processes events for `units` of simulated time.
    pub fn run_for(&mut self, units: u64) {
        let end = self.time + units;
        while self.queue.peek_time().is_some_and(|next| next <= end) {
            self.step();
        }
        self.time = end;
    }

    /// Processes events until `condition` holds (checked after each event) or `units` of
    /// simulated time pass. Returns whether the condition came true.
    pub fn run_until(&mut self, units: u64, mut condition: impl FnMut(&Simulator) -> bool) -> bool {
        let end = self.time + units;
        while !condition(self) {
            if self.queue.peek_time().is_none_or(|next| next > end) {
                self.time = end;
                return condition(self);
            }
            self.step();
        }
        true
    }

    /// The ids of the nodes.
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.hosts.iter().map(|h| h.id).collect()
    }

    fn host_index(&self, node: NodeId) -> usize {
        let index = usize::try_from(node.0.wrapping_sub(1)).unwrap_or(usize::MAX);
        assert!(index < self.hosts.len(), "no node {node} in this cluster");
        index
    }

    /// The Raft core of a live node.
    #[must_use]
    pub fn raft(&self, node: NodeId) -> Option<&RawNode> {
        self.hosts[self.host_index(node)].raft.as_ref()
    }

    /// The status of a live node.
    #[must_use]
    pub fn status(&self, node: NodeId) -> Option<Status> {
        self.raft(node).map(RawNode::status)
    }

    /// The live leader of the highest term, if any.
    #[must_use]
    pub fn leader(&self) -> Option<NodeId> {
        self.current_leader().map(|i| self.hosts[i].id)
    }

    /// Crashes a node: it loses its volatile state and whatever its disk had not synced.
    pub fn crash_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        self.crash(index);
    }

    /// Restarts a crashed node from its disk.
    pub fn restart_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if !self.hosts[index].is_up() {
            self.hosts[index].incarnation += 1;
            self.start_node(index);
        }
    }

    /// Splits the cluster into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        self.network.partition(groups);
    }

    /// Cuts messages from `from` to `to`, one way.
    pub fn cut_one_way(&mut self, from: &[NodeId], to: &[NodeId]) {
        self.network.cut_one_way(from, to);
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.network.heal();
    }

    /// Sets loss, duplication and long-tail delay on every link.
    pub fn set_link_faults(&mut self, faults: LinkFaults) {
        self.network.set_faults(faults);
    }

    /// Installs (or removes) a hook on every Raft message sent.
    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.filter = filter;
    }

    /// Stops clients from starting new operations (those in flight go on), or lets them
    /// start again.
    pub fn set_clients_paused(&mut self, paused: bool) {
        let (workload, mut io) = self.client_io();
        workload.set_paused(&mut io, paused);
    }

    /// Whether every client is idle (no operation in flight).
    #[must_use]
    pub fn clients_idle(&self) -> bool {
        self.workload.idle()
    }

    /// Makes a node start an election now.
    pub fn campaign(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if let Some(raft) = &mut self.hosts[index].raft {
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
        let number = self.hosts[index].request_number();
        let host = &mut self.hosts[index];
        let Some(raft) = &mut host.raft else {
            return Err(chorus_raft::ProposeError::NoLeader);
        };
        let envelope = Envelope {
            origin: host.id,
            request: number,
            command: command.encode(),
        };
        raft.propose(envelope.encode())?;
        self.drive(index);
        Ok(())
    }

    /// The violations found so far.
    #[must_use]
    pub fn violations(&self) -> &[Violation] {
        self.checkers.violations()
    }

    /// Runs the whole scenario: safety phase, healing, liveness phase, final checks. A
    /// scripted test calls it last, to heal, converge and check everything.
    #[must_use]
    pub fn run(mut self) -> RunReport {
        let (workload, mut io) = self.client_io();
        workload.resume(&mut io);
        while self.phase != Phase::Done {
            let Some((time, event)) = self.queue.pop() else {
                break;
            };
            self.time = time;
            self.process(event);
            self.advance_phase();
        }
        self.finish()
    }

    fn process(&mut self, event: Event) {
        self.stats.events += 1;
        self.time.hash(&mut self.trace);
        event.fingerprint(&mut self.trace);
        match event {
            Event::Tick { node } => {
                if let Some(raft) = &mut self.hosts[node].raft {
                    raft.tick();
                    self.drive(node);
                }
                self.schedule(self.config.tick_units, Event::Tick { node });
            }
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::Request { node, request } => self.on_request(node, request),
            Event::Reply { client, reply } => self.on_reply(client, reply),
            Event::PersistDone { node, incarnation } => {
                if self.hosts[node].is_up() && self.hosts[node].incarnation == incarnation {
                    if let Some(ready) = self.hosts[node].outstanding.take() {
                        self.complete(node, ready);
                    }
                }
            }
            Event::ClientSend {
                client,
                op_id,
                attempt,
            } => self.client_send(client, op_id, attempt),
            Event::ClientTimeout {
                client,
                op_id,
                attempt,
            } => self.client_timeout(client, op_id, attempt),
            Event::Nemesis => self.nemesis(),
            Event::Restart { node } => {
                if !self.hosts[node].is_up() {
                    self.hosts[node].incarnation += 1;
                    self.log(|| format!("restart n{}", node + 1));
                    self.start_node(node);
                }
            }
        }
    }

    // ---- nodes -------------------------------------------------------------------------

    fn deliver(&mut self, from: usize, to: usize, message: Message) {
        let from_id = self.hosts[from].id;
        let Some(raft) = &mut self.hosts[to].raft else {
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
        self.drive(to);
    }

    fn send(&mut self, from: usize, to_id: NodeId, mut message: Message) {
        let to = usize::try_from(to_id.0 - 1).expect("invariant: node ids are 1..=n");
        if let Some(filter) = &mut self.filter {
            if !filter(self.hosts[from].id, to_id, &mut message) {
                return;
            }
        }
        self.stats.messages += 1;
        if let Message::RequestVoteResponse(response) = &message {
            if response.granted && !response.pre_vote {
                self.checkers
                    .observe_vote(self.time, self.hosts[from].id, response.term, to_id);
            }
        }
        if self.network.is_cut(self.hosts[from].id, to_id) {
            return;
        }
        for delay in self.network.plan(&mut self.rng_network) {
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    message: message.clone(),
                },
            );
        }
    }

    /// Takes the node's next Ready, if it has one and none is outstanding, and starts on it.
    fn drive(&mut self, node: usize) {
        loop {
            let host = &mut self.hosts[node];
            let Some(raft) = &mut host.raft else {
                return;
            };
            if host.outstanding.is_some() || !raft.has_ready() {
                break;
            }
            let ready = raft.ready();
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
                let prev_term = raft.term_at(first.index.prev()).unwrap_or_default();
                let commit = raft.status().commit;
                self.checkers.observe_persist(
                    self.time,
                    self.hosts[node].id,
                    commit,
                    prev_term,
                    &ready.entries,
                );
            }
            for (to, message) in ready.messages.clone() {
                self.send(node, to, message);
            }
            let host = &mut self.hosts[node];
            if let Err(error) = host.disk.write(ready.hard_state, &ready.entries) {
                let detail = format!("n{} could not write its Ready: {error}", node + 1);
                self.checkers.report("storage", self.time, detail);
            }
            let host = &mut self.hosts[node];
            if host.disk.is_dirty() {
                // An fsync takes a few units, and now and then far longer.
                let delay = if self.rng_disk.chance(0.05) {
                    self.rng_disk.range(10, 60)
                } else {
                    self.rng_disk.range(1, 4)
                };
                let incarnation = host.incarnation;
                host.outstanding = Some(ready);
                self.schedule(delay, Event::PersistDone { node, incarnation });
                break;
            }
            self.complete(node, ready);
        }
        self.observe(node);
    }

    /// The Ready's state is durable: send what promised it, apply, answer, advance.
    fn complete(&mut self, node: usize, ready: Ready) {
        if let Err(error) = self.hosts[node].disk.sync() {
            let detail = format!("n{} could not sync: {error}", node + 1);
            self.checkers.report("storage", self.time, detail);
        }
        for (to, message) in ready.persisted_messages {
            self.send(node, to, message);
        }
        for entry in &ready.committed_entries {
            self.apply(node, entry);
        }
        for state in &ready.read_states {
            self.hosts[node].ready_reads.push((state.index, state.id));
        }
        self.serve_reads(node);
        for id in &ready.rejected_reads {
            if let Some((waiting, _)) = self.hosts[node].reads.remove(id) {
                let leader = self.leader_hint(node);
                self.reply(waiting, ReplyBody::Retry(leader));
            }
        }
        if let Some(raft) = &mut self.hosts[node].raft {
            raft.advance();
        }
        self.drive(node);
    }

    fn apply(&mut self, node: usize, entry: &Entry) {
        let host = &mut self.hosts[node];
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
        let host = &mut self.hosts[node];
        let applied = host.applied;
        let (servable, waiting): (Vec<_>, Vec<_>) = host
            .ready_reads
            .drain(..)
            .partition(|(index, _)| *index <= applied);
        host.ready_reads = waiting;
        for (_, id) in servable {
            if let Some((waiting, key)) = self.hosts[node].reads.remove(&id) {
                let answer = self.hosts[node].store.query(&Query::Get { key }.encode());
                self.reply(waiting, ReplyBody::Done(answer));
            }
        }
    }

    fn leader_hint(&self, node: usize) -> Option<usize> {
        let raft = self.hosts[node].raft.as_ref()?;
        let leader = raft.status().leader?;
        usize::try_from(leader.0 - 1).ok()
    }

    /// Feeds the node's status to the checkers.
    fn observe(&mut self, node: usize) {
        let Some(raft) = &self.hosts[node].raft else {
            return;
        };
        let status = raft.status();
        if status.role == Role::Leader && self.leader_terms.insert(status.term, status.id).is_none()
        {
            self.stats.leaders += 1;
            let (id, term) = (status.id, status.term);
            self.log(|| format!("{id} leads {term}"));
        }
        let raft = self.hosts[node]
            .raft
            .as_ref()
            .expect("invariant: checked above");
        self.checkers.observe_status(self.time, &status, raft);
    }

    fn crash(&mut self, node: usize) {
        if !self.hosts[node].is_up() {
            return;
        }
        self.stats.crashes += 1;
        let lost = self.hosts[node].disk.crash(&mut self.rng_disk);
        self.stats.records_lost += lost as u64;
        let host = &mut self.hosts[node];
        host.raft = None;
        host.outstanding = None;
        host.writes.clear();
        host.reads.clear();
        host.ready_reads.clear();
        let id = host.id;
        self.checkers.observe_crash(id);
        self.log(|| format!("crash {id}, {lost} unsynced records lost"));
    }

    // ---- clients -----------------------------------------------------------------------

    fn on_request(&mut self, node: usize, request: ClientRequest) {
        let waiting = Waiting {
            client: request.client,
            op_id: request.op_id,
        };
        if !self.hosts[node].is_up() {
            return;
        }
        if self.hosts[node].held_requests() >= NODE_REQUESTS_MAX {
            let leader = self.leader_hint(node);
            self.reply(waiting, ReplyBody::Retry(leader));
            return;
        }
        let number = self.hosts[node].request_number();
        let host = &mut self.hosts[node];
        let raft = host.raft.as_mut().expect("invariant: checked is_up");
        let accepted = match request.body {
            RequestBody::Write(command) => {
                let envelope = Envelope {
                    origin: host.id,
                    request: number,
                    command,
                };
                let accepted = raft.propose(envelope.encode()).is_ok();
                if accepted {
                    host.writes.insert(number, waiting);
                }
                accepted
            }
            RequestBody::Read(key) => {
                let id = ReadId(number);
                let accepted = raft.read_index(id).is_ok();
                if accepted {
                    host.reads.insert(id, (waiting, key));
                }
                accepted
            }
        };
        if !accepted {
            let leader = self.leader_hint(node);
            self.reply(waiting, ReplyBody::Retry(leader));
        }
        self.drive(node);
    }

    fn reply(&mut self, waiting: Waiting, body: ReplyBody) {
        let reply = ClientReply {
            op_id: waiting.op_id,
            body,
        };
        for delay in self.network.plan(&mut self.rng_network) {
            self.schedule(
                delay,
                Event::Reply {
                    client: waiting.client,
                    reply: reply.clone(),
                },
            );
        }
    }

    /// The clients, and the parts of the simulation they use while they act.
    fn client_io(&mut self) -> (&mut Workload, ClientIo<'_, Event>) {
        let io = ClientIo {
            queue: &mut self.queue,
            time: self.time,
            network: &self.network,
            rng_network: &mut self.rng_network,
            rng_workload: &mut self.rng_workload,
            checkers: &mut self.checkers,
            stats: &mut self.stats,
            config: &self.config,
            safety: self.phase == Phase::Safety,
            nodes: self.hosts.len(),
        };
        (&mut self.workload, io)
    }

    fn client_send(&mut self, client: usize, op_id: u64, attempt: u64) {
        let (workload, mut io) = self.client_io();
        workload.send(&mut io, client, op_id, attempt);
    }

    fn client_timeout(&mut self, client: usize, op_id: u64, attempt: u64) {
        let (workload, mut io) = self.client_io();
        workload.timeout(&mut io, client, op_id, attempt);
    }

    fn on_reply(&mut self, client: usize, reply: ClientReply) {
        let (workload, mut io) = self.client_io();
        workload.reply(&mut io, client, reply);
    }

    // ---- the nemesis -------------------------------------------------------------------

    fn nemesis_pause(&mut self) -> u64 {
        let (low, high) = self.config.nemesis_pause_units;
        self.rng_nemesis.range(low, high.max(low + 1))
    }

    fn current_leader(&self) -> Option<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.raft.as_ref().map(|r| (i, r.status())))
            .filter(|(_, s)| s.role == Role::Leader)
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let Some(action) = nemesis::choose(self.config.faults, &mut self.rng_nemesis) else {
            return;
        };
        match action {
            Action::LinkFaults => {
                let faults = nemesis::link_faults(&mut self.rng_nemesis);
                self.network.set_faults(faults);
                self.log(|| format!("links {faults:?}"));
            }
            Action::Partition => {
                self.stats.partitions += 1;
                let ids: Vec<NodeId> = self.hosts.iter().map(|h| h.id).collect();
                let leader = self.current_leader().map(|i| self.hosts[i].id);
                let kind =
                    nemesis::partition(&mut self.rng_nemesis, &mut self.network, ids, leader);
                self.log(|| format!("partition kind {kind}"));
            }
            Action::Heal => {
                self.network.heal();
                self.log(|| "heal".to_string());
            }
            Action::CrashOne => {
                let node = if self.rng_nemesis.chance(0.5) {
                    self.current_leader()
                        .unwrap_or_else(|| self.rng_nemesis.index(self.hosts.len()))
                } else {
                    self.rng_nemesis.index(self.hosts.len())
                };
                self.crash(node);
                let down = self.rng_nemesis.range(1, 6) * self.config.election_timeout_units();
                self.schedule(down, Event::Restart { node });
            }
            Action::CrashMinority => {
                let count = (self.hosts.len() - 1) / 2;
                for _ in 0..count.max(1) {
                    let node = self.rng_nemesis.index(self.hosts.len());
                    self.crash(node);
                    let down = self.rng_nemesis.range(1, 4) * self.config.election_timeout_units();
                    self.schedule(down, Event::Restart { node });
                }
            }
            Action::CrashAll => {
                for node in 0..self.hosts.len() {
                    self.crash(node);
                    let down = self.rng_nemesis.range(1, 3) * self.config.election_timeout_units();
                    self.schedule(down, Event::Restart { node });
                }
            }
            Action::RestartAll => {
                for node in 0..self.hosts.len() {
                    if !self.hosts[node].is_up() {
                        self.schedule(0, Event::Restart { node });
                    }
                }
            }
        }
        let pause = self.nemesis_pause();
        self.schedule(pause, Event::Nemesis);
    }

    // ---- phases ------------------------------------------------------------------------

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Safety => {
                let share = (self.config.ops as f64 * self.config.safety_share) as usize;
                if self.workload.issued >= share || self.time >= self.config.safety_units_max {
                    self.heal_everything();
                }
            }
            Phase::Liveness { deadline, .. } => {
                if self.converged() {
                    self.phase = Phase::Done;
                } else if self.time >= deadline {
                    let detail = format!(
                        "not converged {} units after the last fault healed: {}",
                        deadline - self.healed_at(),
                        self.describe_progress()
                    );
                    self.checkers.report("liveness", self.time, detail);
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn healed_at(&self) -> u64 {
        match self.phase {
            Phase::Liveness { healed_at, .. } => healed_at,
            _ => self.time,
        }
    }

    fn heal_everything(&mut self) {
        self.filter = None;
        self.network.heal();
        self.network.set_faults(LinkFaults::RELIABLE);
        for node in 0..self.hosts.len() {
            if !self.hosts[node].is_up() {
                self.hosts[node].incarnation += 1;
                self.start_node(node);
            }
        }
        let remaining =
            (self.config.ops - self.workload.issued) as u64 + self.workload.waiting() as u64;
        let timeouts = self.config.liveness_election_timeouts + remaining / 20;
        let deadline = self.time + timeouts * self.config.election_timeout_units();
        self.phase = Phase::Liveness {
            healed_at: self.time,
            deadline,
        };
        self.log(|| "heal everything: liveness phase".to_string());
    }

    fn converged(&self) -> bool {
        if self.workload.issued < self.config.ops
            || self.workload.clients.iter().any(|c| c.current.is_some())
        {
            return false;
        }
        let statuses: Vec<Status> = self
            .hosts
            .iter()
            .filter_map(|h| h.raft.as_ref().map(RawNode::status))
            .collect();
        let Some(first) = statuses.first() else {
            return false;
        };
        statuses.iter().any(|s| s.role == Role::Leader)
            && statuses.iter().all(|s| {
                s.commit == first.commit && s.applied == s.commit && s.last_index == s.commit
            })
            && self.hosts.iter().all(|h| h.outstanding.is_none())
    }

    fn describe_progress(&self) -> String {
        let nodes: Vec<String> = self
            .hosts
            .iter()
            .map(|h| match &h.raft {
                None => format!("{} down", h.id),
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{} {:?} {} commit {} applied {} last {}",
                        s.id, s.role, s.term, s.commit, s.applied, s.last_index
                    )
                }
            })
            .collect();
        let pending = self.workload.waiting();
        format!(
            "issued {}/{} ops, {pending} clients waiting; {}",
            self.workload.issued,
            self.config.ops,
            nodes.join("; ")
        )
    }

    fn finish(mut self) -> RunReport {
        // Operations still in flight (only after a liveness failure, or in a stuck run) end
        // as unknown.
        self.workload.finish();
        let logs: Vec<(NodeId, Vec<Entry>)> = self
            .hosts
            .iter()
            .filter_map(|h| {
                let raft = h.raft.as_ref()?;
                let commit = raft.status().commit;
                let log = (1..=commit.0)
                    .filter_map(|i| raft.entry(LogIndex(i)).cloned())
                    .collect();
                Some((h.id, log))
            })
            .collect();
        let final_commit = self
            .hosts
            .iter()
            .filter_map(|h| h.raft.as_ref().map(|r| r.status().commit))
            .max()
            .unwrap_or_default();
        self.checkers.finish(self.time, &logs, final_commit);
        let verdict = linearizability::check(&self.workload.history, CheckLimits::default());
        match &verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key, detail } => {
                self.checkers
                    .report("S7", self.time, format!("key {key}: {detail}"));
            }
            Verdict::Inconclusive { key } => {
                self.checkers.report(
                    "S7",
                    self.time,
                    format!("key {key}: the check ran out of budget"),
                );
            }
        }
        RunReport {
            seed: self.config.seed,
            history: self.workload.history,
            violations: self.checkers.violations().to_vec(),
            verdict,
            trace_hash: self.trace.finish(),
            end_time: self.time,
            stats: self.stats,
            trace: self.trace_log.unwrap_or_default(),
            stuck: false,
        }
    }
}

/// Runs one seed with `config`, on the simulator of `config.protocol`, and returns what it
/// found.
#[must_use]
pub fn run(config: SimConfig) -> RunReport {
    match config.protocol {
        Protocol::Raft => Simulator::new(config).run(),
        Protocol::Pb => PbSimulator::new(config).run(),
    }
}

/// Like [`run`], with a human-readable line per notable event in [`RunReport::trace`].
#[must_use]
pub fn run_traced(config: SimConfig) -> RunReport {
    match config.protocol {
        Protocol::Raft => {
            let mut simulator = Simulator::new(config);
            simulator.enable_trace_log();
            simulator.run()
        }
        Protocol::Pb => {
            let mut simulator = PbSimulator::new(config);
            simulator.enable_trace_log();
            simulator.run()
        }
    }
}

/// A stable fingerprint of a history, for comparing runs.
#[must_use]
pub fn history_hash(history: &[Operation]) -> u64 {
    let mut hasher = DefaultHasher::new();
    for op in history {
        format!("{op:?}").hash(&mut hasher);
    }
    hasher.finish()
}
