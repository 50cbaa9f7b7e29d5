//! The primary-backup simulation: `chorus_pb` servers ([`PbReplica`]) with key-value state
//! machines, one view service ([`ViewServer`]), the shared network, nemesis, clients and
//! checkers, on the shared seeded event queue.
//!
//! # Layout
//!
//! The servers are nodes `1..=n` (`SimConfig::nodes`); the view service is node `n + 1`. Every
//! node ticks once per `tick_units` (one ping interval, for servers and view service alike).
//! The view service keeps no durable state and the pb scheme cannot survive its restart, so it
//! is never restarted: [`PbSimulator::crash_view_service`] takes it down for the rest of the
//! run (scenario tests only; the nemesis never crashes it). A server keeps nothing on disk
//! either: a crashed server comes back as a new, empty [`PbReplica`].
//!
//! # Clients
//!
//! Clients are the shared ones of the Raft simulation: each sends an attempt to one server and
//! keeps that server as its target while it answers. A server that is not the acting primary
//! answers "retry" with the primary of the view it knows, so a client caches the primary and
//! never asks the view service anything (SCENARIOS.md A8). An operation a replaced primary
//! aborted is retried with the same session sequence number, which the key-value store
//! executes at most once (S8).
//!
//! # Checks
//!
//! At every step: one primary per view (S1), the same operation at every index on every
//! replica (S4), views never go backwards (S5), every apply answered as the exactly-once model
//! answers (S8). At the end: every acknowledged write is among the final primary's operations
//! (S6), primary and backup hold identical state, and the history is linearizable (S7).
//!
//! # Crashes it claims to survive
//!
//! Primary-backup claims to survive one server failure at a time: the backup must hold the
//! complete state before another server fails. So by default ([`FaultProfile::Crash`], and
//! most runs of [`FaultProfile::All`]) the nemesis paces its crashes as a test harness may,
//! peeking at the view service and the servers: every crash it draws (one node, a minority,
//! all of them) crashes one server, and only a server whose loss the scheme can absorb: one
//! outside the service's view, or a member of an acknowledged view whose other member is
//! alive, known alive to the service and holds the state (when the primary goes, its backup
//! must have installed the view's state). Otherwise it holds off and picks another server, or
//! none. A crashed server comes back empty after its downtime, and the next crash waits for
//! the failover, the acknowledgement and the state transfer. [`RunStats::failovers`] counts
//! the promotions of the backup this exercises. With crashes alone no paced run ends stuck.
//! With network faults as well a few do, honestly: a lost ping or a partition can make the
//! service suspect the surviving member before it notices the crash, two failures at once,
//! which the scheme does not claim to survive.
//!
//! [`FaultProfile::CrashMany`] (and one run in twenty of [`FaultProfile::All`]) drops the
//! pacing: one node, a minority or every node crashes at any moment, as for Raft. Those runs
//! mostly end in the dead end below; they keep it, and the safety checks around it, covered.
//!
//! # Liveness, honestly
//!
//! The liveness phase heals everything (links, crashed servers) and then demands convergence
//! within the bound, like Raft's. Primary-backup cannot always get there: if the primary and
//! its backup both lost their state (both crashed, or the primary crashed before it
//! acknowledged its view), the view service is stuck by design
//! ([`chorus_pb::ViewService::is_stuck`]) and nobody can serve again. A run that ends there
//! reports [`RunReport::stuck`] instead of a liveness violation; every safety check still
//! runs. A run that fails to converge while the service is not stuck is a liveness violation.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId, Prng, RestoreError, StateMachine};
use chorus_kv::{KvConfig, KvStore, Query};
use chorus_pb::{
    Message, PbConfig, PbReplica, PbStatus, ReadId, StepError, View, ViewNumber, ViewServer,
    ViewServiceConfig,
};

use crate::checkers::{Checkers, Violation};
use crate::config::{FaultProfile, SimConfig};
use crate::history::Operation;
use crate::linearizability::{self, CheckLimits, Verdict};
use crate::nemesis::{self, Action};
use crate::network::{Latency, LinkFaults, Network};
use crate::queue::EventQueue;
use crate::simulator::{RunReport, RunStats};
use crate::workload::{
    Client, ClientEvent, ClientIo, ClientReply, ClientRequest, ReplyBody, RequestBody, Workload,
};

/// Requests one server holds for its clients at once; more are turned away with a retry.
const NODE_REQUESTS_MAX: usize = 1024;

/// Readies a node may produce in one drive before the driver stops (a core that always has a
/// Ready would be a bug; this keeps the loop bounded).
const READIES_PER_DRIVE_MAX: usize = 64;

/// Something that happens at a point in simulated time. Node indexes `0..n` are servers,
/// `n` is the view service.
#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: usize,
    },
    ServiceTick,
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
            Event::ServiceTick => 9u8.hash(hasher),
            Event::Deliver { from, to, message } => {
                (1u8, from, to, message.size_bytes()).hash(hasher);
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
        }
    }
}

/// What one server's state machine did, in order.
#[derive(Clone, Debug)]
enum Change {
    /// Applied the key-value command at the index and answered the output.
    Applied(LogIndex, Bytes, Bytes),
    /// Installed a state transfer.
    Restored,
}

/// Every change of one server's state machine, for the checkers.
type ApplyLog = Arc<Mutex<Vec<Change>>>;

/// The key-value store, with every apply recorded for the checkers: the replica owns its state
/// machine, and backups report their applies nowhere else.
struct Recorded {
    store: KvStore,
    log: ApplyLog,
}

impl StateMachine for Recorded {
    fn apply(&mut self, index: LogIndex, command: &[u8]) -> Bytes {
        let output = self.store.apply(index, command);
        if let Ok(mut log) = self.log.lock() {
            log.push(Change::Applied(
                index,
                Bytes::copy_from_slice(command),
                output.clone(),
            ));
        }
        output
    }

    fn query(&self, query: &[u8]) -> Bytes {
        self.store.query(query)
    }

    fn snapshot(&self) -> Bytes {
        self.store.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.store.restore(snapshot)?;
        if let Ok(mut log) = self.log.lock() {
            log.push(Change::Restored);
        }
        Ok(())
    }
}

/// A request a server took from a client and has not answered yet.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    client: usize,
    op_id: u64,
}

/// One simulated server.
struct Host {
    id: NodeId,
    replica: Option<PbReplica>,
    incarnation: u64,
    log: ApplyLog,
    next_request: u64,
    writes: BTreeMap<u64, Waiting>,
    reads: BTreeMap<ReadId, Waiting>,
    /// Client operations this server answered with a result (not a retry), in total.
    answered: u64,
    /// The incarnation that last held the group's state (acted as primary, or installed a
    /// state transfer as backup).
    held_state: Option<u64>,
}

impl Host {
    fn request_number(&mut self) -> u64 {
        self.next_request += 1;
        (self.incarnation << 32) | self.next_request
    }
}

/// Which phase the run is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Safety,
    Liveness { healed_at: u64, deadline: u64 },
    Done,
}

/// A test's hook on every primary-backup message sent (view service traffic included): it may
/// rewrite the message, or return `false` to drop it. Called with the sender and the receiver.
pub type PbMessageFilter = Box<dyn FnMut(NodeId, NodeId, &mut Message) -> bool>;

/// The deterministic primary-backup simulator.
pub struct PbSimulator {
    config: SimConfig,
    time: u64,
    queue: EventQueue<Event>,
    hosts: Vec<Host>,
    service: Option<ViewServer>,
    workload: Workload,
    network: Network,
    checkers: Checkers,
    phase: Phase,
    rng_network: Prng,
    rng_nemesis: Prng,
    rng_workload: Prng,
    trace: DefaultHasher,
    stats: RunStats,
    primary_views: BTreeMap<u64, NodeId>,
    trace_log: Option<Vec<String>>,
    filter: Option<PbMessageFilter>,
    stuck: bool,
    /// The nemesis crashes only what the scheme claims to survive (see the module docs).
    paced_crashes: bool,
    /// The view service's view the simulator last saw, to count failovers.
    last_view: View,
}

impl PbSimulator {
    /// `config.nodes` fresh servers, a view service and `config.clients` clients, nothing run
    /// yet.
    ///
    /// # Panics
    /// If the configuration is unusable (fewer than one server or client, no keys, a view
    /// service that cannot work).
    #[must_use]
    pub fn new(config: SimConfig) -> PbSimulator {
        assert!(config.nodes >= 1 && config.clients >= 1 && config.keys >= 1);
        let mut rng = Prng::new(config.seed);
        let rng_network = rng.fork();
        let mut rng_nemesis = rng.fork();
        let mut rng_workload = rng.fork();
        let paced_crashes = match config.faults {
            FaultProfile::CrashMany => false,
            FaultProfile::All => !rng_nemesis.chance(FaultProfile::CRASH_MANY_SHARE),
            FaultProfile::None | FaultProfile::Network | FaultProfile::Crash => true,
        };
        let network = Network::new(Latency {
            min: 1,
            max: 6,
            tail_max: 3 * config.election_timeout_units(),
        });
        let service = ViewServer::new(ViewServiceConfig {
            dead_pings: config.pb_dead_pings,
            servers_max: 64,
        })
        .expect("invariant: the simulator's view service configuration is valid");
        let hosts = (0..config.nodes)
            .map(|i| Host {
                id: NodeId(i as u64 + 1),
                replica: None,
                incarnation: 0,
                log: Arc::default(),
                next_request: 0,
                writes: BTreeMap::new(),
                reads: BTreeMap::new(),
                answered: 0,
                held_state: None,
            })
            .collect();
        let clients = (0..config.clients)
            .map(|i| Client::new(i, rng_workload.index(config.nodes)))
            .collect();
        let mut simulator = PbSimulator {
            config,
            time: 0,
            queue: EventQueue::new(),
            hosts,
            service: Some(service),
            workload: Workload::new(clients),
            network,
            checkers: Checkers::new(),
            phase: Phase::Safety,
            rng_network,
            rng_nemesis,
            rng_workload,
            trace: DefaultHasher::new(),
            stats: RunStats::default(),
            primary_views: BTreeMap::new(),
            trace_log: None,
            filter: None,
            stuck: false,
            paced_crashes,
            last_view: View::NONE,
        };

        for node in 0..simulator.hosts.len() {
            simulator.start_node(node);
            let phase = simulator
                .rng_workload
                .range(1, simulator.config.tick_units + 1);
            simulator.schedule(phase, Event::Tick { node });
        }
        simulator.schedule(simulator.config.tick_units, Event::ServiceTick);
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
        if simulator.config.faults != FaultProfile::None {
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

    fn service_index(&self) -> usize {
        self.hosts.len()
    }

    /// The view service's node id: one above the last server's.
    #[must_use]
    pub fn view_service_id(&self) -> NodeId {
        NodeId(self.hosts.len() as u64 + 1)
    }

    fn node_id(&self, index: usize) -> NodeId {
        NodeId(index as u64 + 1)
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        (index <= self.hosts.len()).then_some(index)
    }

    fn start_node(&mut self, node: usize) {
        let log: ApplyLog = Arc::default();
        let store = Recorded {
            store: KvStore::new(KvConfig::default()),
            log: Arc::clone(&log),
        };
        let mut config = PbConfig::new(self.hosts[node].id, self.view_service_id());
        // Every start of a server pings with a larger incarnation.
        config.incarnation = self.hosts[node].incarnation + 1;
        let replica = PbReplica::new(config, Box::new(store))
            .expect("invariant: the simulator's replica configuration is valid");
        let host = &mut self.hosts[node];
        host.replica = Some(replica);
        host.log = log;
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
    pub fn run_until(
        &mut self,
        units: u64,
        mut condition: impl FnMut(&PbSimulator) -> bool,
    ) -> bool {
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

    /// The ids of the servers (not the view service).
    #[must_use]
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.hosts.iter().map(|h| h.id).collect()
    }

    fn host_index(&self, node: NodeId) -> usize {
        let index = usize::try_from(node.0.wrapping_sub(1)).unwrap_or(usize::MAX);
        assert!(index < self.hosts.len(), "no server {node} in this cluster");
        index
    }

    /// The status of a live server.
    #[must_use]
    pub fn status(&self, node: NodeId) -> Option<PbStatus> {
        self.hosts[self.host_index(node)]
            .replica
            .as_ref()
            .map(PbReplica::status)
    }

    /// The view service's current view, if it is up.
    #[must_use]
    pub fn view(&self) -> Option<View> {
        self.service.as_ref().map(|s| s.service().get_view())
    }

    /// The view service's state, if it is up.
    #[must_use]
    pub fn view_service(&self) -> Option<&chorus_pb::ViewService> {
        self.service.as_ref().map(ViewServer::service)
    }

    /// The live server acting as primary of the highest view, if any.
    #[must_use]
    pub fn primary(&self) -> Option<NodeId> {
        self.current_primary().map(|i| self.hosts[i].id)
    }

    /// Client operations `node` answered with a result since the run began (over all its
    /// incarnations): a put applied, a get served.
    #[must_use]
    pub fn answered(&self, node: NodeId) -> u64 {
        self.hosts[self.host_index(node)].answered
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

    /// Crashes a server: it loses everything and comes back (on restart) new and empty.
    pub fn crash_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        self.crash(index);
    }

    /// Restarts a crashed server, as a new empty one.
    pub fn restart_node(&mut self, node: NodeId) {
        let index = self.host_index(node);
        if self.hosts[index].replica.is_none() {
            self.hosts[index].incarnation += 1;
            self.start_node(index);
        }
    }

    /// Crashes the view service for the rest of the run (it keeps no durable state, and the
    /// pb scheme does not support its restart). Healing does not bring it back.
    pub fn crash_view_service(&mut self) {
        if self.service.take().is_some() {
            self.stats.crashes += 1;
            self.log(|| "crash the view service".to_string());
        }
    }

    /// Whether the view service is up.
    #[must_use]
    pub fn view_service_up(&self) -> bool {
        self.service.is_some()
    }

    /// Splits the nodes (the view service's id included) into groups that cannot reach each
    /// other.
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

    /// Installs (or removes) a hook on every message sent.
    pub fn set_filter(&mut self, filter: Option<PbMessageFilter>) {
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

    /// Proposes a key-value command at a server, outside any client (its answer goes
    /// nowhere, but counts in [`PbSimulator::answered`]).
    ///
    /// # Errors
    /// The server's refusal; `None` in the error if it is down.
    pub fn propose(
        &mut self,
        node: NodeId,
        command: &chorus_kv::Command,
    ) -> Result<(), Option<chorus_pb::ProposeError>> {
        let index = self.host_index(node);
        let number = self.hosts[index].request_number();
        let host = &mut self.hosts[index];
        let Some(replica) = &mut host.replica else {
            return Err(None);
        };
        let envelope = Envelope {
            origin: host.id,
            request: number,
            command: command.encode(),
        };
        replica.propose(envelope).map_err(Some)?;
        self.drive(index);
        Ok(())
    }

    /// Asks a server to read `key`, outside any client (the answer counts in
    /// [`PbSimulator::answered`]).
    ///
    /// # Errors
    /// The server's refusal; `None` in the error if it is down.
    pub fn read(&mut self, node: NodeId, key: &str) -> Result<(), Option<chorus_pb::ReadError>> {
        let index = self.host_index(node);
        let number = self.hosts[index].request_number();
        let host = &mut self.hosts[index];
        let Some(replica) = &mut host.replica else {
            return Err(None);
        };
        let query = Query::Get {
            key: Bytes::copy_from_slice(key.as_bytes()),
        }
        .encode();
        replica.read(ReadId(number), query).map_err(Some)?;
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
        if self.config.faults.crashes() && !self.paced_crashes {
            self.log(|| "nemesis: crashes of many servers at once, unpaced".to_string());
        }
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
                if let Some(replica) = &mut self.hosts[node].replica {
                    replica.tick();
                    self.drive(node);
                }
                self.schedule(self.config.tick_units, Event::Tick { node });
            }
            Event::ServiceTick => {
                if let Some(service) = &mut self.service {
                    service.tick();
                    self.observe_service();
                    self.schedule(self.config.tick_units, Event::ServiceTick);
                }
            }
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::Request { node, request } => self.on_request(node, request),
            Event::Reply { client, reply } => self.on_reply(client, reply),
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
                if self.hosts[node].replica.is_none() {
                    self.hosts[node].incarnation += 1;
                    self.log(|| format!("restart n{} empty", node + 1));
                    self.start_node(node);
                }
            }
        }
    }

    // ---- nodes -------------------------------------------------------------------------

    fn deliver(&mut self, from: usize, to: usize, message: Message) {
        let from_id = self.node_id(from);
        let summary = if self.trace_log.is_some() {
            format!("{message:?}")
        } else {
            String::new()
        };
        let result = if to == self.service_index() {
            let Some(service) = &mut self.service else {
                return;
            };
            let result = service.step(from_id, message);
            self.drive_service();
            result
        } else {
            let Some(replica) = &mut self.hosts[to].replica else {
                return;
            };
            let result = replica.step(from_id, message);
            self.drive(to);
            result
        };
        if let Err(error) = result {
            // Stale, early or misdirected messages are refused by design; a message a
            // correct sender could not have sent, or a state that will not restore, is a bug.
            if matches!(
                error,
                StepError::Malformed(_)
                    | StepError::Restore(_)
                    | StepError::Unexpected(_)
                    | StepError::Ping(_)
            ) {
                let detail = format!(
                    "n{} refused a message from {from_id}: {error} {summary}",
                    to + 1
                );
                self.checkers.report("step", self.time, detail);
            }
        }
    }

    fn send(&mut self, from: usize, to_id: NodeId, mut message: Message) {
        let from_id = self.node_id(from);
        let Some(to) = self.index_of(to_id) else {
            let detail = format!("{from_id} sent to unknown node {to_id}");
            self.checkers.report("send", self.time, detail);
            return;
        };
        if let Some(filter) = &mut self.filter {
            if !filter(from_id, to_id, &mut message) {
                return;
            }
        }
        self.stats.messages += 1;
        if to == self.service_index() || from == self.service_index() {
            self.stats.view_service_messages += 1;
        }
        if self.network.is_cut(from_id, to_id) {
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

    fn drive_service(&mut self) {
        let from = self.service_index();
        for _ in 0..READIES_PER_DRIVE_MAX {
            let Some(service) = &mut self.service else {
                return;
            };
            if !service.has_ready() {
                break;
            }
            let ready = service.ready();
            for (to, message) in ready.messages {
                self.send(from, to, message);
            }
            if let Some(service) = &mut self.service {
                service.advance();
            }
        }
        self.observe_service();
    }

    fn observe_service(&mut self) {
        let Some(view) = self.view() else {
            return;
        };
        self.checkers.observe_pb_view(self.time, view);
        if view.number > self.last_view.number {
            if view.primary.is_some() && view.primary == self.last_view.backup {
                self.stats.failovers += 1;
                let last = self.last_view;
                self.log(|| format!("failover: {last:?} -> {view:?}"));
            }
            self.last_view = view;
        }
    }

    /// Takes the server's Readies and does what they ask: send, answer, advance.
    fn drive(&mut self, node: usize) {
        for _ in 0..READIES_PER_DRIVE_MAX {
            let Some(replica) = &mut self.hosts[node].replica else {
                return;
            };
            if !replica.has_ready() {
                break;
            }
            let ready = replica.ready();
            for (to, message) in ready.messages {
                self.send(node, to, message);
            }
            for committed in ready.committed {
                let host = &mut self.hosts[node];
                if committed.origin != host.id {
                    continue;
                }
                if let Some(waiting) = host.writes.remove(&committed.request) {
                    host.answered += 1;
                    self.reply(waiting, ReplyBody::Done(committed.output));
                }
            }
            for aborted in ready.aborted {
                let host = &mut self.hosts[node];
                if aborted.origin != host.id {
                    continue;
                }
                if let Some(waiting) = host.writes.remove(&aborted.request) {
                    // The outcome is unknown: the client retries with the same sequence
                    // number, and the session makes the retry exactly-once.
                    let hint = self.primary_hint(node);
                    self.reply(waiting, ReplyBody::Retry(hint));
                }
            }
            for read in ready.reads {
                if let Some(waiting) = self.hosts[node].reads.remove(&read.id) {
                    self.hosts[node].answered += 1;
                    self.reply(waiting, ReplyBody::Done(read.output));
                }
            }
            for id in ready.rejected_reads {
                if let Some(waiting) = self.hosts[node].reads.remove(&id) {
                    let hint = self.primary_hint(node);
                    self.reply(waiting, ReplyBody::Retry(hint));
                }
            }
            if let Some(replica) = &mut self.hosts[node].replica {
                replica.advance();
            }
        }
        self.observe(node);
    }

    /// Feeds the server's applies and status to the checkers.
    fn observe(&mut self, node: usize) {
        let host = &self.hosts[node];
        let Some(replica) = &host.replica else {
            return;
        };
        let status = replica.status();
        let incarnation = host.incarnation;
        let applies = match host.log.lock() {
            Ok(mut log) => std::mem::take(&mut *log),
            Err(_) => Vec::new(),
        };
        // A backup holds the state once it installed a transfer; a primary of a view without
        // one once the service confirmed the view (a fresh server may take itself for the
        // primary of view 1 after a restart, but is never confirmed then).
        if status.ready_in_view.is_some() || (status.acting_primary && status.primary_acked) {
            self.hosts[node].held_state = Some(incarnation);
        }
        // Status first: a server that starts acting as primary brings what it applied as a
        // backup into the official sequence before its first apply as primary.
        self.checkers.observe_pb_status(self.time, &status);
        for change in &applies {
            match change {
                Change::Applied(index, command, output) => self.checkers.observe_pb_apply(
                    self.time,
                    status.id,
                    *index,
                    (command, output),
                    status.acting_primary,
                ),
                Change::Restored => self.checkers.observe_pb_restore(status.id),
            }
        }
        if status.acting_primary
            && self
                .primary_views
                .insert(status.view.number.0, status.id)
                .is_none()
        {
            self.stats.leaders += 1;
            let (id, view) = (status.id, status.view);
            self.log(|| format!("{id} acts as primary of {view:?}"));
        }
    }

    fn primary_hint(&self, node: usize) -> Option<usize> {
        let replica = self.hosts[node].replica.as_ref()?;
        let primary = replica.status().view.primary?;
        let index = usize::try_from(primary.0.checked_sub(1)?).ok()?;
        (index < self.hosts.len()).then_some(index)
    }

    fn crash(&mut self, node: usize) {
        if self.hosts[node].replica.is_none() {
            return;
        }
        self.stats.crashes += 1;
        let host = &mut self.hosts[node];
        host.replica = None;
        host.writes.clear();
        host.reads.clear();
        host.log = Arc::default();
        let id = host.id;
        self.checkers.observe_pb_crash(id);
        self.log(|| format!("crash {id}: its state is gone"));
    }

    fn current_primary(&self) -> Option<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.replica.as_ref().map(|r| (i, r.status())))
            .filter(|(_, s)| s.acting_primary)
            .max_by_key(|(_, s)| s.view.number)
            .map(|(i, _)| i)
    }

    // ---- clients -----------------------------------------------------------------------

    fn on_request(&mut self, node: usize, request: ClientRequest) {
        let waiting = Waiting {
            client: request.client,
            op_id: request.op_id,
        };
        if self.hosts[node].replica.is_none() {
            return;
        }
        if self.hosts[node].writes.len() + self.hosts[node].reads.len() >= NODE_REQUESTS_MAX {
            let hint = self.primary_hint(node);
            self.reply(waiting, ReplyBody::Retry(hint));
            return;
        }
        let number = self.hosts[node].request_number();
        let host = &mut self.hosts[node];
        let replica = host
            .replica
            .as_mut()
            .expect("invariant: checked the server is up");
        let accepted = match request.body {
            RequestBody::Write(command) => {
                let envelope = Envelope {
                    origin: host.id,
                    request: number,
                    command,
                };
                let accepted = replica.propose(envelope).is_ok();
                if accepted {
                    host.writes.insert(number, waiting);
                }
                accepted
            }
            RequestBody::Read(key) => {
                let id = ReadId(number);
                let accepted = replica.read(id, Query::Get { key }.encode()).is_ok();
                if accepted {
                    host.reads.insert(id, waiting);
                }
                accepted
            }
        };
        if !accepted {
            let hint = self.primary_hint(node);
            self.reply(waiting, ReplyBody::Retry(hint));
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

    fn nemesis(&mut self) {
        if self.phase != Phase::Safety {
            return;
        }
        let Some(action) = nemesis::choose(self.config.faults, &mut self.rng_nemesis) else {
            return;
        };
        let unit = self.config.election_timeout_units();
        let n = self.hosts.len();
        match action {
            Action::LinkFaults => {
                let faults = nemesis::link_faults(&mut self.rng_nemesis);
                self.network.set_faults(faults);
                self.log(|| format!("links {faults:?}"));
            }
            Action::Partition => {
                // The view service takes part in partitions (that is how a primary gets cut
                // off from it), but it never crashes.
                self.stats.partitions += 1;
                let mut ids = self.node_ids();
                ids.push(self.view_service_id());
                let primary = self.primary();
                let kind =
                    nemesis::partition(&mut self.rng_nemesis, &mut self.network, ids, primary);
                self.log(|| format!("partition kind {kind}"));
            }
            Action::Heal => {
                self.network.heal();
                self.log(|| "heal".to_string());
            }
            Action::CrashOne | Action::CrashMinority | Action::CrashAll if self.paced_crashes => {
                self.paced_crash();
            }
            Action::CrashOne => {
                let node = if self.rng_nemesis.chance(0.5) {
                    self.current_primary()
                        .unwrap_or_else(|| self.rng_nemesis.index(n))
                } else {
                    self.rng_nemesis.index(n)
                };
                self.crash(node);
                let down = self.rng_nemesis.range(1, 6) * unit;
                self.schedule(down, Event::Restart { node });
            }
            Action::CrashMinority => {
                for _ in 0..((n - 1) / 2).max(1) {
                    let node = self.rng_nemesis.index(n);
                    self.crash(node);
                    let down = self.rng_nemesis.range(1, 4) * unit;
                    self.schedule(down, Event::Restart { node });
                }
            }
            Action::CrashAll => {
                for node in 0..n {
                    self.crash(node);
                    let down = self.rng_nemesis.range(1, 3) * unit;
                    self.schedule(down, Event::Restart { node });
                }
            }
            Action::RestartAll => {
                for node in 0..n {
                    if self.hosts[node].replica.is_none() {
                        self.schedule(0, Event::Restart { node });
                    }
                }
            }
        }
        let pause = self.nemesis_pause();
        self.schedule(pause, Event::Nemesis);
    }

    /// One crash the scheme claims to survive, if any server can go now: the primary half the
    /// time (if its loss is survivable), otherwise a server drawn among those whose loss is.
    fn paced_crash(&mut self) {
        let survivable: Vec<usize> = (0..self.hosts.len())
            .filter(|&node| self.crash_is_survivable(node))
            .collect();
        let primary = self
            .current_primary()
            .filter(|node| survivable.contains(node));
        let node = match primary {
            Some(primary) if self.rng_nemesis.chance(0.5) => primary,
            _ if survivable.is_empty() => {
                self.log(|| "nemesis holds off: no crash is survivable now".to_string());
                return;
            }
            _ => survivable[self.rng_nemesis.index(survivable.len())],
        };
        self.crash(node);
        let down = self.rng_nemesis.range(1, 6) * self.config.election_timeout_units();
        self.schedule(down, Event::Restart { node });
    }

    /// Whether primary-backup claims to survive the crash of live server `node` now: it holds
    /// no role in the view service's view, or the view is acknowledged and its other member
    /// is up, still alive to the service and holds the state (a backup, the state of this
    /// very view), so that losing `node` loses no state and the service can move on.
    fn crash_is_survivable(&self, node: usize) -> bool {
        let Some(service) = self.view_service() else {
            // Without the view service no failover happens at all.
            return false;
        };
        let host = &self.hosts[node];
        if host.replica.is_none() {
            return false;
        }
        let view = service.get_view();
        let other = if view.primary == Some(host.id) {
            view.backup
        } else if view.backup == Some(host.id) {
            view.primary
        } else {
            return true;
        };
        let Some(other) = other.filter(|_| service.view_acked()) else {
            return false;
        };
        let other_host = &self.hosts[self.host_index(other)];
        let Some(status) = other_host.replica.as_ref().map(PbReplica::status) else {
            return false;
        };
        service.is_alive(other)
            && other_host.held_state == Some(other_host.incarnation)
            && (view.backup != Some(other) || status.ready_in_view == Some(view.number))
    }

    // ---- phases ------------------------------------------------------------------------

    fn advance_phase(&mut self) {
        match self.phase {
            Phase::Safety => {
                let share = (self.config.ops as f64 * self.config.safety_share) as usize;
                if self.workload.issued >= share
                    || self.time >= self.config.safety_units_max
                    || self.is_stuck()
                {
                    // A stuck service never recovers: nothing more can be learned from faults.
                    self.heal_everything();
                }
            }
            Phase::Liveness {
                deadline,
                healed_at,
            } => {
                if self.converged() {
                    self.phase = Phase::Done;
                } else if self.is_stuck() || (self.time >= deadline && self.service.is_none()) {
                    // The documented dead end (see the module docs): counted, not hidden.
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

    /// Whether the view service is stuck for good by its rule 6
    /// ([`chorus_pb::ViewService::is_stuck`]): the primary of its view lost the group's state
    /// (it is down, or its current start never held the state: pb keeps nothing on disk), and
    /// either the view was never acknowledged or its backup lost the state too. (An
    /// unacknowledged view 1 is exempt: the service lets its primary start over, since it has
    /// served nothing.) With the view service down, see
    /// [`PbSimulator::view_service_up`]: no failover happens either.
    #[must_use]
    pub fn is_stuck(&self) -> bool {
        let Some(service) = &self.service else {
            return false;
        };
        let service = service.service();
        let view = service.get_view();
        if !service.is_stuck() || (view.number <= ViewNumber(1) && !service.view_acked()) {
            return false;
        }
        // A server holds the group's state only if its current start received it (pb keeps
        // nothing on disk): a server that is down, or restarted since, has lost it for good.
        let lost = |id: NodeId| {
            let host = &self.hosts[self.host_index(id)];
            host.replica.is_none() || host.held_state != Some(host.incarnation)
        };
        let primary_lost = view.primary.is_some_and(lost);
        let backup_lost = view.backup.is_none_or(lost);
        primary_lost && (!service.view_acked() || backup_lost)
    }

    fn heal_everything(&mut self) {
        self.filter = None;
        self.network.heal();
        self.network.set_faults(LinkFaults::RELIABLE);
        for node in 0..self.hosts.len() {
            if self.hosts[node].replica.is_none() {
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

    /// The acting primary and the backup of the service's current view, if the primary acts
    /// and holds the group's state, and the backup (if any) holds the state of that view.
    fn serving_pair(&self) -> Option<(PbStatus, Option<PbStatus>)> {
        let view = self.view()?;
        let primary_id = view.primary?;
        let host = &self.hosts[self.host_index(primary_id)];
        let primary = self.status(primary_id)?;
        if !primary.acting_primary
            || primary.view != view
            || host.held_state != Some(host.incarnation)
        {
            return None;
        }
        let backup = match view.backup {
            None => None,
            Some(id) => {
                let backup = self.status(id)?;
                if backup.view != view || backup.ready_in_view != Some(view.number) {
                    return None;
                }
                Some(backup)
            }
        };
        Some((primary, backup))
    }

    fn converged(&self) -> bool {
        if self.workload.issued < self.config.ops
            || self.workload.clients.iter().any(|c| c.current.is_some())
        {
            return false;
        }
        let Some((primary, backup)) = self.serving_pair() else {
            return false;
        };
        primary.pending == 0
            && primary.primary_acked
            && backup.is_none_or(|b| primary.backup_ready && b.applied == primary.applied)
    }

    fn describe_progress(&self) -> String {
        let nodes: Vec<String> = self
            .hosts
            .iter()
            .map(|h| match &h.replica {
                None => format!("{} down", h.id),
                Some(r) => {
                    let s = r.status();
                    format!(
                        "{} {:?} view {} acting {} applied {} pending {}",
                        s.id, s.role, s.view.number, s.acting_primary, s.applied, s.pending
                    )
                }
            })
            .collect();
        let pending = self.workload.waiting();
        let service = match &self.service {
            None => "view service down".to_string(),
            Some(s) => format!(
                "view service at {:?} (acked {}, stuck {})",
                s.service().get_view(),
                s.service().primary_acked(),
                s.service().is_stuck()
            ),
        };
        format!(
            "issued {}/{} ops, {pending} clients waiting; {service}; {}",
            self.workload.issued,
            self.config.ops,
            nodes.join("; ")
        )
    }

    fn finish(mut self) -> RunReport {
        // Operations still in flight (only after a liveness failure, or in a stuck run) end
        // as unknown.
        self.workload.finish();
        let pair = self.serving_pair();
        // S6 is judged against the serving primary or, if none serves (a stuck run), against
        // the primary or backup of the service's view that still holds that view's state;
        // with no such server the state is gone (pb keeps nothing on disk) and there is
        // nothing to check.
        let holder = || {
            let view = self.view_service().map(|s| s.get_view()).or_else(|| {
                // The service is down: the highest view a live server knows.
                self.hosts
                    .iter()
                    .filter_map(|h| h.replica.as_ref().map(|r| r.status().view))
                    .max_by_key(|v| v.number)
            })?;
            [view.primary, view.backup]
                .into_iter()
                .flatten()
                .map(|id| &self.hosts[self.host_index(id)])
                .filter(|h| h.held_state == Some(h.incarnation))
                .filter_map(|h| h.replica.as_ref().map(PbReplica::status))
                .filter(|s| {
                    s.view.number == view.number
                        && (s.acting_primary || s.ready_in_view == Some(view.number))
                })
                .map(|s| s.applied)
                .max()
        };
        let final_applied = pair.map(|(primary, _)| primary.applied).or_else(holder);
        if let Some((primary, Some(backup))) = pair {
            if primary.applied == backup.applied {
                let snapshot = |id: NodeId| {
                    self.hosts[self.host_index(id)]
                        .replica
                        .as_ref()
                        .map(|r| r.state_machine().snapshot())
                };
                if snapshot(primary.id) != snapshot(backup.id) {
                    let detail = format!(
                        "primary {} and backup {} hold different states at {}",
                        primary.id, backup.id, primary.applied
                    );
                    self.checkers.report("S4", self.time, detail);
                }
            }
        }
        if pair.is_none() && !self.stuck && self.checkers.violations().is_empty() {
            let detail = format!("no primary serves at the end: {}", self.describe_progress());
            self.checkers.report("liveness", self.time, detail);
        }
        self.checkers.finish_pb(self.time, final_applied);
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
            stuck: self.stuck,
        }
    }
}
