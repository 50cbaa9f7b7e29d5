//! The protocol-independent half of the simulator: one seeded event queue, the network, the
//! nemesis, the clients, the checkers, the phases and the run report, shared by every
//! replication scheme.
//!
//! [`Sim`] holds all of that and drives it; the scheme's own state (its nodes, their disks,
//! anything else it runs, such as primary-backup's view service) sits in `Sim::nodes`, a
//! [`ProtocolHost`], which the engine calls for what only the scheme knows: how a node starts,
//! ticks, takes a message or a client request, crashes, when the cluster has converged, and
//! what must hold of its final state. A new scheme joins by implementing [`ProtocolHost`] and
//! adding a [`crate::Protocol`] variant; everything else here is reused as it is.
//!
//! Determinism: the engine draws from the same random streams, in the same order, and
//! schedules the same events at the same times as the per-protocol simulators it replaced, so
//! every seed replays bit for bit.

use std::hash::{DefaultHasher, Hash, Hasher};

use chorus_core::{NodeId, Prng};

use crate::checkers::{Checkers, Violation};
use crate::config::{FaultProfile, Protocol, SimConfig};

/// Salts the stream that draws the nodes' clock rates (Raft with leases), so that drawing
/// them changes no other random choice of a run.
const CLOCK_SALT: u64 = 0x434c_4f43_4b5f_5241;
use crate::history::Operation;
use crate::linearizability::{self, CheckLimits, Verdict};
use crate::nemesis::{self, Action};
use crate::network::{Latency, LinkFaults, Network};
use crate::queue::EventQueue;
use crate::report::{RunReport, RunStats, SnapshotStats};
use crate::visual::{LaneState, VisualTrace, debug_kind};
use crate::workload::{
    Client, ClientEvent, ClientIo, ClientReply, ClientRequest, ReplyBody, RequestBody, Workload,
};

/// Requests one node holds for its clients at once; more are turned away with a retry.
const NODE_REQUESTS_MAX: usize = 1024;

/// A test's hook on every message a node sends: it may rewrite the message, or return `false`
/// to drop it. Called with the sender and the receiver.
pub type Filter<M> = Box<dyn FnMut(NodeId, NodeId, &mut M) -> bool>;

/// What a replication scheme supplies to the shared simulator: its message and event types,
/// and the driving of its nodes. Node indexes `0..nodes()` are the nodes clients talk to,
/// with ids `1..=nodes()`.
pub trait ProtocolHost: Sized {
    /// What the scheme's nodes send each other.
    type Message: Clone + std::fmt::Debug;
    /// The scheme's own events, beside the shared ones.
    type Event;

    /// Whether the scheme changes its membership when the profile asks
    /// ([`FaultProfile::membership`]): then some of the nemesis's moves are
    /// [`ProtocolHost::churn`]. Schemes without it draw nothing for it, so their runs stay
    /// as they were.
    const MEMBERSHIP: bool = false;
    /// Whether the nemesis hunts stale reads under network faults (see `Sim::hunt_stale_reads`):
    /// for schemes whose safety must not depend on clocks. Schemes without it draw nothing for
    /// it, so their runs stay as they were.
    const STALE_READ_HUNT: bool = false;
    /// Note appended to the trace line of a restart.
    const RESTART_NOTE: &'static str = "";
    /// What the scheme calls its epochs, for the visual trace ("term", "view").
    const EPOCH_NAME: &'static str = "term";

    /// How many nodes take client requests.
    fn nodes(&self) -> usize;
    /// Whether node `node` is up.
    fn is_up(&self, node: usize) -> bool;
    /// Starts node `node` (fresh, or again after a crash).
    fn start(sim: &mut Sim<Self>, node: usize);
    /// Counts a new start of node `node` (before [`ProtocolHost::start`] restarts it).
    fn new_incarnation(&mut self, node: usize);
    /// The liveness phase begins: the scheme heals its own faults (for Raft, slow disks).
    fn heal(&mut self) {}
    /// Schedules the scheme's own first events, after every node started.
    fn schedule_start(_sim: &mut Sim<Self>) {}
    /// Node `node` ticks (it may be down).
    fn tick(sim: &mut Sim<Self>, node: usize);
    /// A message arrives at `to`.
    fn deliver(sim: &mut Sim<Self>, from: usize, to: usize, message: Self::Message);
    /// Client requests node `node` holds (taken, not answered yet).
    fn held_requests(&self, node: usize) -> usize;
    /// The leader node `node` knows of, for a client to retry on.
    fn leader_hint(&self, node: usize) -> Option<usize>;
    /// Node `node` (up) takes a client's request: `false` if it refused it.
    fn accept(sim: &mut Sim<Self>, node: usize, waiting: Waiting, body: RequestBody) -> bool;
    /// Does what node `node` has to do now (send, persist, apply, answer).
    fn drive(sim: &mut Sim<Self>, node: usize);
    /// One of the scheme's own events happens.
    fn event(sim: &mut Sim<Self>, event: Self::Event);
    /// Crashes node `node`, if it is up.
    fn crash(sim: &mut Sim<Self>, node: usize);
    /// The nemesis changes the membership (add, promote, remove, replace, transfer
    /// leadership), drawing from `sim.rng_nemesis`.
    fn churn(_sim: &mut Sim<Self>) {}
    /// A fault schedule of the scheme's own, over several of the nemesis's turns (Raft:
    /// Figure 8): `Some(pause)` if it acted this turn (the nemesis then does nothing else and
    /// acts again after `pause`), `None` to let the nemesis draw its usual move.
    fn plan(_sim: &mut Sim<Self>) -> Option<u64> {
        None
    }
    /// Something the scheme sees of every message sent (after the filter, before the
    /// network may drop it).
    fn on_sent(_sim: &mut Sim<Self>, _from: usize, _to: usize, _message: &Self::Message) {}
    /// Whether this run's nemesis crashes without regard for what the scheme claims to
    /// survive, although the scheme could pace its crashes (noted in the trace).
    fn unpaced_crashes(&self) -> bool {
        false
    }
    /// The node the nemesis favours for a crash (the leader), if any.
    fn leader(&self) -> Option<usize>;
    /// Every node a partition divides.
    fn partition_members(&self) -> Vec<NodeId>;
    /// Crashes as the scheme claims to survive them, if it paces crashes in this run: then
    /// does it and returns `true`.
    fn paced_crash(_sim: &mut Sim<Self>) -> bool {
        false
    }
    /// Whether the run reached the scheme's documented dead end, where liveness is not
    /// asserted; `deadline` is the liveness deadline, if the liveness phase began.
    fn dead_end(_sim: &Sim<Self>, _deadline: Option<u64>) -> bool {
        false
    }
    /// Whether the nodes converged (every client operation is already finished).
    fn converged(sim: &Sim<Self>) -> bool;
    /// The state of node `node`, for a liveness failure; `None` if it is down.
    fn node_state(&self, node: usize) -> Option<String>;
    /// The state of whatever else the scheme runs (a view service), for a liveness failure.
    fn other_state(&self) -> Option<String> {
        None
    }
    /// Runs the scheme's final checks on the nodes' state.
    fn finish(sim: &mut Sim<Self>);
    /// Lanes of the visual trace: the nodes clients talk to first, then whatever else the
    /// scheme runs (a view service), whose messages use the lane numbers past the nodes.
    fn lanes(&self) -> usize {
        self.nodes()
    }
    /// A lane's name in the visual trace.
    fn lane_name(&self, lane: usize) -> String {
        format!("n{}", lane + 1)
    }
    /// What lane `lane` shows now in the visual trace; `None` while it is down.
    fn lane_state(&self, lane: usize) -> Option<LaneState> {
        (lane < self.nodes() && self.is_up(lane)).then_some(LaneState {
            role: "up",
            epoch: 0,
            commit: 0,
            snapshot: 0,
        })
    }
    /// A message's kind, for the visual trace's filter (by default the first word of its
    /// `Debug` text).
    fn message_kind(message: &Self::Message) -> String {
        debug_kind(&format!("{message:?}"))
    }
    /// The scheme's snapshot counters (zero for a scheme without snapshots).
    fn snapshot_stats(&self) -> SnapshotStats {
        SnapshotStats::default()
    }
    /// Feeds the fingerprint of a message in flight to the trace hash.
    fn fingerprint_message(message: &Self::Message, hasher: &mut DefaultHasher);
    /// Feeds the fingerprint of one of the scheme's events to the trace hash.
    fn fingerprint_event(event: &Self::Event, hasher: &mut DefaultHasher);
}

/// Something that happens at a point in simulated time.
pub enum Event<P: ProtocolHost> {
    /// A node's clock ticks.
    Tick {
        /// The node.
        node: usize,
    },
    /// A message arrives.
    Deliver {
        /// The sender's index.
        from: usize,
        /// The receiver's index.
        to: usize,
        /// The message.
        message: P::Message,
    },
    /// A client request arrives at a node.
    Request {
        /// The node.
        node: usize,
        /// The request.
        request: ClientRequest,
    },
    /// A reply arrives at a client.
    Reply {
        /// The client.
        client: usize,
        /// The reply.
        reply: ClientReply,
    },
    /// A client sends an attempt.
    ClientSend {
        /// The client.
        client: usize,
        /// The operation.
        op_id: u64,
        /// The attempt.
        attempt: u64,
    },
    /// A client's attempt times out.
    ClientTimeout {
        /// The client.
        client: usize,
        /// The operation.
        op_id: u64,
        /// The attempt.
        attempt: u64,
    },
    /// The nemesis acts.
    Nemesis,
    /// A crashed node restarts.
    Restart {
        /// The node.
        node: usize,
    },
    /// One of the scheme's own events.
    Protocol(P::Event),
}

impl<P: ProtocolHost> From<ClientEvent> for Event<P> {
    fn from(event: ClientEvent) -> Event<P> {
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

impl<P: ProtocolHost> Event<P> {
    fn fingerprint(&self, hasher: &mut DefaultHasher) {
        match self {
            Event::Tick { node } => (0u8, node).hash(hasher),
            Event::Deliver { from, to, message } => {
                (1u8, from, to).hash(hasher);
                P::fingerprint_message(message, hasher);
            }
            Event::Request { node, request } => {
                (2u8, node, request.client, request.op_id).hash(hasher);
            }
            Event::Reply { client, reply } => (3u8, client, reply.op_id).hash(hasher),
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
            Event::Protocol(event) => P::fingerprint_event(event, hasher),
        }
    }
}

/// A request a node took from a client and has not answered yet.
#[derive(Clone, Copy, Debug)]
pub struct Waiting {
    pub(crate) client: usize,
    pub(crate) op_id: u64,
    /// The node that took the request (the visual trace draws its answer from there).
    pub(crate) node: usize,
}

/// Which phase the run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Safety,
    Liveness { healed_at: u64, deadline: u64 },
    Done,
}

/// The deterministic simulator of one replication scheme: the shared machinery, and the
/// scheme's nodes behind [`ProtocolHost`].
pub struct Sim<P: ProtocolHost> {
    pub(crate) config: SimConfig,
    pub(crate) time: u64,
    pub(crate) queue: EventQueue<Event<P>>,
    pub(crate) workload: Workload,
    pub(crate) network: Network,
    pub(crate) checkers: Checkers,
    pub(crate) phase: Phase,
    pub(crate) rng_network: Prng,
    pub(crate) rng_nemesis: Prng,
    pub(crate) rng_workload: Prng,
    pub(crate) trace: DefaultHasher,
    pub(crate) stats: RunStats,
    pub(crate) trace_log: Option<Vec<String>>,
    /// The visual trace, when [`Sim::enable_visual`] asked for it.
    pub(crate) visual: Option<Box<VisualTrace>>,
    pub(crate) filter: Option<Filter<P::Message>>,
    /// The run ended in the scheme's documented dead end (see [`RunReport::stuck`]).
    pub(crate) stuck: bool,
    /// How many times slower than normal each node's clock ticks (missing: normal), while the
    /// nemesis hunts stale reads.
    pub(crate) tick_stretch: Vec<u64>,
    /// Raft with leases: how far each node's clock runs from true time, in parts per million
    /// (positive: fast), as drawn for the run (empty: every clock is exact).
    pub(crate) tick_drift_drawn: Vec<i64>,
    /// The drift in force: the drawn one, or the extremes while the nemesis hunts stale reads.
    pub(crate) tick_drift: Vec<i64>,
    /// Each node's fraction of a time unit carried to its next tick, in millionths.
    pub(crate) tick_carry: Vec<u64>,
    /// The scheme's nodes.
    pub(crate) nodes: P,
}

impl<P: ProtocolHost> Sim<P> {
    /// A cluster of fresh nodes and `config.clients` clients, nothing run yet. `nodes` builds
    /// the scheme's state from the configuration, the run's root random stream and the
    /// nemesis's stream (the network's, the nemesis's and the workload's are forked first).
    ///
    /// # Panics
    /// If the configuration is unusable (fewer than one node or client, no keys).
    pub(crate) fn build(
        config: SimConfig,
        nodes: impl FnOnce(&SimConfig, &mut Prng, &mut Prng) -> P,
    ) -> Sim<P> {
        assert!(config.nodes >= 1 && config.clients >= 1 && config.keys >= 1);
        let mut rng = Prng::new(config.seed);
        let rng_network = rng.fork();
        let mut rng_nemesis = rng.fork();
        let mut rng_workload = rng.fork();
        let nodes = nodes(&config, &mut rng, &mut rng_nemesis);
        let network = Network::new(Latency {
            min: 1,
            max: 6,
            tail_max: 3 * config.election_timeout_units(),
        });
        let clients = (0..config.clients)
            .map(|i| Client::new(i, rng_workload.index(config.nodes)))
            .collect();
        let mut sim = Sim {
            config,
            time: 0,
            queue: EventQueue::new(),
            workload: Workload::new(clients),
            network,
            checkers: Checkers::new(),
            phase: Phase::Safety,
            rng_network,
            rng_nemesis,
            rng_workload,
            trace: DefaultHasher::new(),
            stats: RunStats::default(),
            trace_log: None,
            visual: None,
            filter: None,
            stuck: false,
            tick_stretch: Vec::new(),
            tick_drift_drawn: Vec::new(),
            tick_drift: Vec::new(),
            tick_carry: Vec::new(),
            nodes,
        };
        if sim.config.protocol == Protocol::Raft && sim.config.lease_reads == Some(true) {
            // A stream of its own, so that every other draw of the run stays as it was.
            let mut rng_clocks = Prng::new(sim.config.seed ^ CLOCK_SALT);
            let bound = sim.config.clock_drift_ppm.min(900_000);
            let drawn: Vec<i64> = (0..sim.nodes.nodes())
                .map(|_| {
                    let offset = rng_clocks.range(0, 2 * bound + 1);
                    i64::try_from(offset).unwrap_or(0) - i64::try_from(bound).unwrap_or(0)
                })
                .collect();
            sim.tick_carry = vec![0; drawn.len()];
            sim.tick_drift = drawn.clone();
            sim.tick_drift_drawn = drawn;
        }
        for node in 0..sim.nodes.nodes() {
            P::start(&mut sim, node);
            let phase = sim.rng_workload.range(1, sim.config.tick_units + 1);
            sim.schedule(phase, Event::Tick { node });
        }
        P::schedule_start(&mut sim);
        for client in 0..sim.workload.clients.len() {
            sim.workload.clients[client].start_register();
            let delay = sim.rng_workload.range(1, 20);
            sim.schedule(
                delay,
                Event::ClientSend {
                    client,
                    op_id: 1,
                    attempt: 0,
                },
            );
        }
        if sim.config.faults != FaultProfile::None {
            let delay = sim.nemesis_pause();
            sim.schedule(delay, Event::Nemesis);
        }
        sim
    }

    /// Keeps a human-readable line per notable event (for `--verbose`).
    pub fn enable_trace_log(&mut self) {
        self.trace_log = Some(Vec::new());
    }

    /// Records what a space-time diagram of the run needs (see [`crate::visual`]); the report
    /// then carries it in [`RunReport::visual`]. Changes nothing the run does.
    pub fn enable_visual(&mut self) {
        let lanes = (0..self.nodes.lanes())
            .map(|lane| self.nodes.lane_name(lane))
            .collect();
        self.visual = Some(Box::new(VisualTrace::new(lanes, P::EPOCH_NAME)));
        self.sample_visual();
    }

    /// Notes the lanes' states and the network's cuts, where they changed.
    fn sample_visual(&mut self) {
        if let Some(visual) = &mut self.visual {
            for lane in 0..self.nodes.lanes() {
                visual.sample(lane, self.time, self.nodes.lane_state(lane));
            }
            let lane = |id: NodeId| usize::try_from(id.0.saturating_sub(1)).unwrap_or(usize::MAX);
            let cut: Vec<(usize, usize)> = self
                .network
                .cuts()
                .iter()
                .map(|&(a, b)| (lane(a), lane(b)))
                .collect();
            visual.sample_cut(self.time, &cut);
        }
    }

    /// Marks a step of a scripted story: a caption over the visual trace and a line of the text
    /// trace. Changes nothing the run does.
    pub fn annotate(&mut self, text: &str) {
        if let Some(visual) = &mut self.visual {
            visual.caption(self.time, text.to_string());
        }
        if let Some(log) = &mut self.trace_log {
            log.push(format!("{:>8} note: {text}", self.time));
        }
    }

    pub(crate) fn log(&mut self, line: impl FnOnce() -> String) {
        if self.trace_log.is_none() && self.visual.is_none() {
            return;
        }
        let line = line();
        if let Some(visual) = &mut self.visual {
            visual.note(self.time, line.clone());
        }
        if let Some(log) = &mut self.trace_log {
            log.push(format!("{:>8} {}", self.time, line));
        }
    }

    pub(crate) fn schedule(&mut self, delay: u64, event: Event<P>) {
        self.queue.push(self.time + delay, event);
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
    pub fn run_until(&mut self, units: u64, mut condition: impl FnMut(&Sim<P>) -> bool) -> bool {
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

    /// The ids of the nodes clients talk to.
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        (1..=self.nodes.nodes() as u64).map(NodeId).collect()
    }

    pub(crate) fn host_index(&self, node: NodeId) -> usize {
        let index = usize::try_from(node.0.wrapping_sub(1)).unwrap_or(usize::MAX);
        assert!(index < self.nodes.nodes(), "no node {node} in this cluster");
        index
    }

    /// Crashes a node: it loses its volatile state (and whatever the scheme keeps on disk but
    /// had not synced).
    pub fn crash_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        P::crash(self, index);
    }

    /// Restarts a crashed node (from its disk, if the scheme keeps one).
    pub fn restart_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if !self.nodes.is_up(index) {
            self.nodes.new_incarnation(index);
            P::start(self, index);
        }
    }

    /// Splits the nodes into groups that cannot reach each other.
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

    /// Sends every new operation of the first `clients` clients, each a read, to `node`
    /// (as the stale-read hunt does with some clients), so that a scripted scenario sees
    /// what that node serves; `None` lets them go where they like again.
    pub fn pin_readers(&mut self, node: Option<NodeId>, clients: usize) {
        let index = node.map(|node| self.host_index(node));
        for client in self.workload.clients.iter_mut().take(clients) {
            client.pinned = index;
            if let Some(index) = index {
                client.target = index;
            }
        }
    }

    /// Sets loss, duplication and long-tail delay on every link.
    pub fn set_link_faults(&mut self, faults: LinkFaults) {
        self.network.set_faults(faults);
    }

    /// Installs (or removes) a hook on every message sent.
    pub fn set_filter(&mut self, filter: Option<Filter<P::Message>>) {
        self.filter = filter;
    }

    /// Stops clients from starting new operations (those in flight go on), or lets them
    /// start again.
    pub fn set_clients_paused(&mut self, paused: bool) {
        self.with_clients(|clients, io| clients.set_paused(io, paused));
    }

    /// Whether every client is idle (no operation in flight).
    #[must_use]
    pub fn clients_idle(&self) -> bool {
        self.workload.idle()
    }

    /// Counters so far.
    #[must_use]
    pub fn stats(&self) -> RunStats {
        self.stats
    }

    /// The operations completed so far (successful, failed or given up), in completion order.
    #[must_use]
    pub fn history(&self) -> &[Operation] {
        &self.workload.history
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
        if self.config.faults.crashes() && self.nodes.unpaced_crashes() {
            self.log(|| "nemesis: crashes of many servers at once, unpaced".to_string());
        }
        self.with_clients(|clients, io| clients.resume(io));
        while self.phase != Phase::Done {
            let Some((time, event)) = self.queue.pop() else {
                break;
            };
            self.time = time;
            self.process(event);
            self.advance_phase();
            if self.config.stop_at_first_violation && !self.checkers.violations().is_empty() {
                self.log(|| "stop at the first violation".to_string());
                self.phase = Phase::Done;
            }
            if self.stats.events >= self.config.events_max && self.phase != Phase::Done {
                let detail = format!(
                    "stopped after {} events: {}",
                    self.stats.events,
                    self.describe_progress()
                );
                self.checkers.report("liveness", self.time, detail);
                self.phase = Phase::Done;
            }
        }
        self.finish()
    }

    fn process(&mut self, event: Event<P>) {
        self.stats.events += 1;
        self.time.hash(&mut self.trace);
        event.fingerprint(&mut self.trace);
        match event {
            Event::Tick { node } => {
                P::tick(self, node);
                let delay = self.next_tick_delay(node);
                self.schedule(delay, Event::Tick { node });
            }
            Event::Deliver { from, to, message } => P::deliver(self, from, to, message),
            Event::Request { node, request } => self.request(node, request),
            Event::Reply { client, reply } => {
                self.with_clients(|clients, io| clients.reply(io, client, reply));
            }
            Event::ClientSend {
                client,
                op_id,
                attempt,
            } => self.with_clients(|clients, io| clients.send(io, client, op_id, attempt)),
            Event::ClientTimeout {
                client,
                op_id,
                attempt,
            } => self.with_clients(|clients, io| clients.timeout(io, client, op_id, attempt)),
            Event::Nemesis => self.nemesis(),
            Event::Restart { node } => {
                if !self.nodes.is_up(node) {
                    self.nodes.new_incarnation(node);
                    self.log(|| format!("restart n{}{}", node + 1, P::RESTART_NOTE));
                    P::start(self, node);
                }
            }
            Event::Protocol(event) => P::event(self, event),
        }
        if self.visual.is_some() {
            self.sample_visual();
        }
    }

    // ---- the network -------------------------------------------------------------------

    /// Sends `message` from node index `from` to node index `to` over the network: through
    /// the test's filter, counted, then delivered after each delay the network plans (none
    /// if the link is cut).
    pub(crate) fn transmit(&mut self, from: usize, to: usize, mut message: P::Message) {
        let (from_id, to_id) = (NodeId(from as u64 + 1), NodeId(to as u64 + 1));
        if let Some(filter) = &mut self.filter {
            if !filter(from_id, to_id, &mut message) {
                self.draw_message(from, to, &message, Vec::new(), "filtered");
                return;
            }
        }
        self.stats.messages += 1;
        P::on_sent(self, from, to, &message);
        if self.network.is_cut(from_id, to_id) {
            self.draw_message(from, to, &message, Vec::new(), "cut");
            return;
        }
        let delays = self.network.plan(&mut self.rng_network);
        if self.visual.is_some() {
            let arrivals: Vec<u64> = delays.iter().map(|delay| self.time + delay).collect();
            let fate = if arrivals.is_empty() { "lost" } else { "" };
            self.draw_message(from, to, &message, arrivals, fate);
        }
        for delay in delays {
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

    /// Records a message in the visual trace, if one is kept.
    fn draw_message(
        &mut self,
        from: usize,
        to: usize,
        message: &P::Message,
        arrivals: Vec<u64>,
        fate: &'static str,
    ) {
        if let Some(visual) = &mut self.visual {
            let label = (P::message_kind(message), format!("{message:?}"));
            visual.message((from, to), self.time, arrivals, fate, label);
        }
    }

    // ---- clients -----------------------------------------------------------------------

    /// A client request arrives at node `node`: a node that is down ignores it, a node that
    /// holds too many or refuses it answers "retry" with the leader it knows.
    fn request(&mut self, node: usize, request: ClientRequest) {
        let waiting = Waiting {
            client: request.client,
            op_id: request.op_id,
            node,
        };
        if let Some(visual) = &mut self.visual {
            let client_lane = self.nodes.lanes() + request.client;
            let label = (
                "ClientRequest".to_string(),
                format!("op {}: {:?}", request.op_id, request.body),
            );
            let fate = if self.nodes.is_up(node) {
                ""
            } else {
                "node down"
            };
            visual.message(
                (client_lane, node),
                request.sent,
                vec![self.time],
                fate,
                label,
            );
        }
        if !self.nodes.is_up(node) {
            return;
        }
        if self.nodes.held_requests(node) >= NODE_REQUESTS_MAX {
            let hint = self.nodes.leader_hint(node);
            self.reply(waiting, ReplyBody::Retry(hint));
            return;
        }
        if !P::accept(self, node, waiting, request.body) {
            let hint = self.nodes.leader_hint(node);
            self.reply(waiting, ReplyBody::Retry(hint));
        }
        P::drive(self, node);
    }

    /// Sends a node's answer to a client, over the network.
    pub(crate) fn reply(&mut self, waiting: Waiting, body: ReplyBody) {
        let reply = ClientReply {
            op_id: waiting.op_id,
            body,
        };
        let delays = self.network.plan(&mut self.rng_network);
        if let Some(visual) = &mut self.visual {
            let client_lane = self.nodes.lanes() + waiting.client;
            let arrivals: Vec<u64> = delays.iter().map(|delay| self.time + delay).collect();
            let fate = if arrivals.is_empty() { "lost" } else { "" };
            let kind = match reply.body {
                ReplyBody::Done(_) => "ClientReply",
                ReplyBody::Retry(_) => "ClientRetry",
            };
            let label = (
                kind.to_string(),
                format!("op {}: {:?}", reply.op_id, reply.body),
            );
            visual.message(
                (waiting.node, client_lane),
                self.time,
                arrivals,
                fate,
                label,
            );
        }
        for delay in delays {
            self.schedule(
                delay,
                Event::Reply {
                    client: waiting.client,
                    reply: reply.clone(),
                },
            );
        }
    }

    /// Lets the clients act, with the parts of the simulation they use.
    fn with_clients(&mut self, act: impl FnOnce(&mut Workload, &mut ClientIo<'_, Event<P>>)) {
        let mut io = ClientIo {
            queue: &mut self.queue,
            time: self.time,
            network: &self.network,
            rng_network: &mut self.rng_network,
            rng_workload: &mut self.rng_workload,
            checkers: &mut self.checkers,
            stats: &mut self.stats,
            config: &self.config,
            safety: self.phase == Phase::Safety,
            nodes: self.nodes.nodes(),
        };
        act(&mut self.workload, &mut io);
    }

    // ---- the nemesis -------------------------------------------------------------------

    pub(crate) fn nemesis_pause(&mut self) -> u64 {
        let (low, high) = self.config.nemesis_pause_units;
        self.rng_nemesis.range(low, high.max(low + 1))
    }

    /// Crashes node `node` and schedules its restart after `1..max` election timeouts.
    fn crash_for(&mut self, node: usize, max: u64) {
        P::crash(self, node);
        let down = self.rng_nemesis.range(1, max) * self.config.election_timeout_units();
        self.schedule(down, Event::Restart { node });
    }

    pub(crate) fn crash_and_restart_later(&mut self, node: usize) {
        self.crash_for(node, 6);
    }

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        self.end_hunt();
        if let Some(pause) = P::plan(self) {
            self.schedule(pause, Event::Nemesis);
            return;
        }
        if P::STALE_READ_HUNT && self.config.faults.network() && self.rng_nemesis.chance(0.12) {
            if let Some(pause) = self.hunt_stale_reads() {
                self.schedule(pause, Event::Nemesis);
                return;
            }
        }
        if P::MEMBERSHIP && self.config.faults.membership() && self.rng_nemesis.chance(0.3) {
            P::churn(self);
            let pause = self.nemesis_pause();
            self.schedule(pause, Event::Nemesis);
            return;
        }
        let Some(action) = nemesis::choose(self.config.faults, &mut self.rng_nemesis) else {
            return;
        };
        let n = self.nodes.nodes();
        let crash = matches!(
            action,
            Action::CrashOne | Action::CrashMinority | Action::CrashAll
        );
        if crash && P::paced_crash(self) {
            // The scheme crashed what it claims to survive.
        } else {
            match action {
                Action::LinkFaults => {
                    let faults = nemesis::link_faults(&mut self.rng_nemesis);
                    self.network.set_faults(faults);
                    self.log(|| format!("links {faults:?}"));
                }
                Action::Partition => {
                    self.stats.partitions += 1;
                    let ids = self.nodes.partition_members();
                    let leader = self.nodes.leader().map(|i| NodeId(i as u64 + 1));
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
                        self.nodes
                            .leader()
                            .unwrap_or_else(|| self.rng_nemesis.index(n))
                    } else {
                        self.rng_nemesis.index(n)
                    };
                    self.crash_for(node, 6);
                }
                Action::CrashMinority => {
                    for _ in 0..((n - 1) / 2).max(1) {
                        let node = self.rng_nemesis.index(n);
                        self.crash_for(node, 4);
                    }
                }
                Action::CrashAll => {
                    for node in 0..n {
                        self.crash_for(node, 3);
                    }
                }
                Action::RestartAll => {
                    for node in 0..n {
                        if !self.nodes.is_up(node) {
                            self.schedule(0, Event::Restart { node });
                        }
                    }
                }
            }
        }
        let pause = self.nemesis_pause();
        self.schedule(pause, Event::Nemesis);
    }

    /// The nemesis hunts stale reads: it cuts the leader off from every other node (not from
    /// the clients), slows its clock two to five times, and pins about half of the clients to
    /// it, reading, while the others write through the leader the majority elects. A correct
    /// leader confirms each read with a quorum (ReadIndex) and so serves none while cut off;
    /// a leader that does not, and learns late that it was deposed (its clock is slow, and
    /// safety must not depend on clocks), serves stale values. The hunt lasts four to eight
    /// election timeouts (the nemesis waits that long); the next move ends it. `None`, and
    /// nothing done, without a leader.
    /// Time units until `node`'s next tick: `tick_units`, times its stretch while the
    /// nemesis hunts stale reads, divided by its clock's rate when clocks drift (the fraction
    /// of a unit is carried to the next tick, so that the rate holds over a run).
    fn next_tick_delay(&mut self, node: usize) -> u64 {
        let stretch = self.tick_stretch.get(node).copied().unwrap_or(1);
        let period = self.config.tick_units * stretch;
        let Some(&drift) = self.tick_drift.get(node) else {
            return period;
        };
        const MICRO: u128 = 1_000_000;
        let rate = u128::try_from(1_000_000 + drift).unwrap_or(1).max(1);
        let micro = u128::from(period) * MICRO * MICRO / rate + u128::from(self.tick_carry[node]);
        self.tick_carry[node] = u64::try_from(micro % MICRO).unwrap_or(0);
        u64::try_from(micro / MICRO).unwrap_or(period).max(1)
    }

    fn hunt_stale_reads(&mut self) -> Option<u64> {
        let leader = self.nodes.leader()?;
        let leader_id = NodeId(leader as u64 + 1);
        let rest: Vec<NodeId> = self
            .nodes
            .partition_members()
            .into_iter()
            .filter(|&id| id != leader_id)
            .collect();
        self.network.heal();
        self.network.partition(&[vec![leader_id], rest]);
        self.stats.partitions += 1;
        let stretch = self.rng_nemesis.range(2, 6);
        let slowed = if self.tick_drift.is_empty() {
            self.tick_stretch = vec![1; self.nodes.nodes()];
            self.tick_stretch[leader] = stretch;
            format!("{stretch}x slow")
        } else {
            // Leases rest on clocks: the worst the stated drift allows, the leader's clock
            // slow and every other fast, each by `clock_drift_ppm`.
            let drift = i64::try_from(self.config.clock_drift_ppm.min(900_000)).unwrap_or(0);
            for (node, rate) in self.tick_drift.iter_mut().enumerate() {
                *rate = if node == leader { -drift } else { drift };
            }
            format!("{drift} ppm slow, the others as fast")
        };
        let mut pinned = 0;
        for client in &mut self.workload.clients {
            if self.rng_nemesis.chance(0.5) {
                client.pinned = Some(leader);
                client.target = leader;
                pinned += 1;
            }
        }
        self.log(|| {
            format!(
                "hunt stale reads: {leader_id} cut off, clock {slowed}, {pinned} clients pinned"
            )
        });
        Some(self.rng_nemesis.range(4, 9) * self.config.election_timeout_units())
    }

    /// Ends a stale-read hunt: clocks tick normally, clients go where they like.
    fn end_hunt(&mut self) {
        self.tick_stretch.clear();
        self.tick_drift.clone_from(&self.tick_drift_drawn);
        for client in &mut self.workload.clients {
            client.pinned = None;
        }
    }

    // ---- phases ------------------------------------------------------------------------

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Safety => {
                let share = (self.config.ops as f64 * self.config.safety_share) as usize;
                if self.workload.issued >= share
                    || self.time >= self.config.safety_units_max
                    || P::dead_end(self, None)
                {
                    // A dead end never recovers: nothing more can be learned from faults.
                    self.heal_everything();
                }
            }
            Phase::Liveness {
                deadline,
                healed_at,
            } => {
                if self.converged() {
                    self.phase = Phase::Done;
                } else if P::dead_end(self, Some(deadline)) {
                    // The documented dead end: counted, not hidden.
                    self.stuck = true;
                    let detail = self.describe_progress();
                    self.log(|| format!("stuck by design: {detail}"));
                    self.phase = Phase::Done;
                } else if self.time >= deadline {
                    let detail = format!(
                        "not converged {} units after the last fault healed: {}",
                        deadline - healed_at,
                        self.describe_progress()
                    );
                    self.checkers.report("liveness", self.time, detail);
                    self.phase = Phase::Done;
                }
            }
            Phase::Done => {}
        }
    }

    fn heal_everything(&mut self) {
        self.end_hunt();
        self.nodes.heal();
        self.filter = None;
        self.network.heal();
        self.network.set_faults(LinkFaults::RELIABLE);
        for node in 0..self.nodes.nodes() {
            if !self.nodes.is_up(node) {
                self.nodes.new_incarnation(node);
                P::start(self, node);
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
        self.workload.issued >= self.config.ops
            && self.workload.clients.iter().all(|c| c.current.is_none())
            && P::converged(self)
    }

    pub(crate) fn describe_progress(&self) -> String {
        let pending = self.workload.waiting();
        let others = self
            .nodes
            .other_state()
            .map(|state| format!("{state}; "))
            .unwrap_or_default();
        let nodes: Vec<String> = (0..self.nodes.nodes())
            .map(|node| {
                self.nodes
                    .node_state(node)
                    .unwrap_or_else(|| format!("{} down", NodeId(node as u64 + 1)))
            })
            .collect();
        format!(
            "issued {}/{} ops, {pending} clients waiting; {others}{}",
            self.workload.issued,
            self.config.ops,
            nodes.join("; ")
        )
    }

    fn finish(mut self) -> RunReport {
        // Operations still in flight (only after a liveness failure, or in a stuck run) end
        // as unknown.
        self.workload.finish();
        P::finish(&mut self);
        let verdict = linearizability::check(&self.workload.history, CheckLimits::default());
        match &verdict {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable { key, detail } => {
                self.checkers
                    .report("S7", self.time, format!("key {key}: {detail}"));
            }
            // Out of budget is not a violation: the report keeps the verdict, and the sweep
            // counts it apart.
            Verdict::Inconclusive { .. } => {}
        }
        if let crate::config::Machine::User(user) = &self.config.machine {
            if let Err(detail) = user.workbench().check(&self.workload.user_history) {
                let detail = format!("{}: {detail}", user.workbench().name());
                self.checkers.report("user", self.time, detail);
            }
        }
        RunReport {
            seed: self.config.seed,
            history: self.workload.history,
            user_history: self.workload.user_history,
            violations: self.checkers.violations().to_vec(),
            verdict,
            trace_hash: self.trace.finish(),
            end_time: self.time,
            stats: self.stats,
            snapshots: self.nodes.snapshot_stats(),
            trace: self.trace_log.unwrap_or_default(),
            stuck: self.stuck,
            visual: self.visual,
        }
    }
}
