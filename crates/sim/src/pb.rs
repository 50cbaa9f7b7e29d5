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
//! the failover, the acknowledgement and the state transfer.
//! [`RunStats::failovers`](crate::RunStats::failovers) counts the promotions of the backup
//! this exercises. With crashes alone no paced run ends stuck. With network faults as well a
//! few do, honestly: a lost ping or a partition can make the service suspect the surviving
//! member before it notices the crash, two failures at once, which the scheme does not claim
//! to survive.
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
//! reports [`RunReport::stuck`](crate::RunReport::stuck) instead of a liveness violation;
//! every safety check still runs. A run that fails to converge while the service is not stuck
//! is a liveness violation.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash};
use std::sync::Arc;

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{LogIndex, NodeId};
use chorus_kv::Query;
use chorus_pb::{
    Message, PbConfig, PbReplica, PbStatus, ReadId, StepError, View, ViewNumber, ViewServer,
    ViewServiceConfig,
};

use crate::config::{FaultProfile, SimConfig};
use crate::engine::{Event, Filter, ProtocolHost, Sim, Waiting};
use crate::machine::{SimStore, stamp_seed};
use crate::visual::LaneState;
use crate::witness::{Change, ChangeLog, Witnessed};
use crate::workload::{ReplyBody, RequestBody};

/// Readies a node may produce in one drive before the driver stops (a core that always has a
/// Ready would be a bug; this keeps the loop bounded).
const READIES_PER_DRIVE_MAX: usize = 64;

/// A request a server took from a client and has not answered yet.
/// One simulated server.
struct Host {
    id: NodeId,
    replica: Option<PbReplica>,
    incarnation: u64,
    log: ChangeLog,
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

/// A test's hook on every primary-backup message sent (view service traffic included): it may
/// rewrite the message, or return `false` to drop it. Called with the sender and the receiver.
pub type PbMessageFilter = Filter<Message>;

/// The deterministic primary-backup simulator.
pub type PbSimulator = Sim<PbNodes>;

/// The primary-backup servers of a simulation, and their view service. Node indexes `0..n`
/// are servers, `n` is the view service.
pub struct PbNodes {
    hosts: Vec<Host>,
    service: Option<ViewServer>,
    primary_views: BTreeMap<u64, NodeId>,
    /// The nemesis crashes only what the scheme claims to survive (see the module docs).
    paced_crashes: bool,
    /// The view service's view the simulator last saw, to count failovers.
    last_view: View,
}

/// The primary-backup driver's own events.
#[derive(Clone, Copy, Debug)]
pub enum PbEvent {
    /// The view service's clock ticks.
    ServiceTick,
}

impl ProtocolHost for PbNodes {
    type Message = Message;
    type Event = PbEvent;

    const RESTART_NOTE: &'static str = " empty";
    const EPOCH_NAME: &'static str = "view";

    fn nodes(&self) -> usize {
        self.hosts.len()
    }

    fn is_up(&self, node: usize) -> bool {
        self.hosts[node].replica.is_some()
    }

    fn start(sim: &mut Sim<Self>, node: usize) {
        let log: ChangeLog = Arc::default();
        let seed = stamp_seed(sim.config.seed, node, sim.nodes.hosts[node].incarnation);
        let store = Witnessed::new(
            SimStore::new(&sim.config.machine, seed, chorus_kv::KvConfig::default()),
            Some(Arc::clone(&log)),
        );
        let mut config = PbConfig::new(sim.nodes.hosts[node].id, sim.view_service_id());
        // Every start of a server pings with a larger incarnation.
        config.incarnation = sim.nodes.hosts[node].incarnation + 1;
        let replica = PbReplica::new(config, Box::new(store))
            .expect("invariant: the simulator's replica configuration is valid");
        let host = &mut sim.nodes.hosts[node];
        host.replica = Some(replica);
        host.log = log;
        sim.drive(node);
    }

    fn new_incarnation(&mut self, node: usize) {
        self.hosts[node].incarnation += 1;
    }

    fn schedule_start(sim: &mut Sim<Self>) {
        sim.schedule(sim.config.tick_units, Event::Protocol(PbEvent::ServiceTick));
    }

    fn tick(sim: &mut Sim<Self>, node: usize) {
        if let Some(replica) = &mut sim.nodes.hosts[node].replica {
            replica.tick();
            sim.drive(node);
        }
    }

    fn deliver(sim: &mut Sim<Self>, from: usize, to: usize, message: Message) {
        let from_id = sim.node_id(from);
        let summary = if sim.trace_log.is_some() {
            format!("{message:?}")
        } else {
            String::new()
        };
        let result = if to == sim.service_index() {
            let Some(service) = &mut sim.nodes.service else {
                return;
            };
            let result = service.step(from_id, message);
            sim.drive_service();
            result
        } else {
            let Some(replica) = &mut sim.nodes.hosts[to].replica else {
                return;
            };
            let result = replica.step(from_id, message);
            sim.drive(to);
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
                sim.checkers.report("step", sim.time, detail);
            }
        }
    }

    fn held_requests(&self, node: usize) -> usize {
        self.hosts[node].writes.len() + self.hosts[node].reads.len()
    }

    fn leader_hint(&self, node: usize) -> Option<usize> {
        let replica = self.hosts[node].replica.as_ref()?;
        let primary = replica.status().view.primary?;
        let index = usize::try_from(primary.0.checked_sub(1)?).ok()?;
        (index < self.hosts.len()).then_some(index)
    }

    fn accept(sim: &mut Sim<Self>, node: usize, waiting: Waiting, body: RequestBody) -> bool {
        let number = sim.nodes.hosts[node].request_number();
        let host = &mut sim.nodes.hosts[node];
        let replica = host
            .replica
            .as_mut()
            .expect("invariant: checked the server is up");
        match body {
            RequestBody::Write(command) => {
                let envelope = Envelope {
                    origin: host.id,
                    request: number,
                    command,
                    session: None,
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
        }
    }

    fn drive(sim: &mut Sim<Self>, node: usize) {
        sim.drive(node);
    }

    fn event(sim: &mut Sim<Self>, event: PbEvent) {
        let PbEvent::ServiceTick = event;
        if let Some(service) = &mut sim.nodes.service {
            service.tick();
            sim.observe_service();
            sim.schedule(sim.config.tick_units, Event::Protocol(PbEvent::ServiceTick));
        }
    }

    fn crash(sim: &mut Sim<Self>, node: usize) {
        if sim.nodes.hosts[node].replica.is_none() {
            return;
        }
        sim.stats.crashes += 1;
        let host = &mut sim.nodes.hosts[node];
        host.replica = None;
        host.writes.clear();
        host.reads.clear();
        host.log = Arc::default();
        let id = host.id;
        sim.checkers.observe_pb_crash(id);
        sim.log(|| format!("crash {id}: its state is gone"));
    }

    fn on_sent(sim: &mut Sim<Self>, from: usize, to: usize, _message: &Message) {
        let service = sim.service_index();
        if to == service || from == service {
            sim.stats.view_service_messages += 1;
        }
    }

    fn unpaced_crashes(&self) -> bool {
        !self.paced_crashes
    }

    fn leader(&self) -> Option<usize> {
        self.hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| h.replica.as_ref().map(|r| (i, r.status())))
            .filter(|(_, s)| s.acting_primary)
            .max_by_key(|(_, s)| s.view.number)
            .map(|(i, _)| i)
    }

    fn partition_members(&self) -> Vec<NodeId> {
        // The view service takes part in partitions (that is how a primary gets cut off from
        // it), but it never crashes.
        (1..=self.hosts.len() as u64 + 1).map(NodeId).collect()
    }

    fn paced_crash(sim: &mut Sim<Self>) -> bool {
        if sim.nodes.paced_crashes {
            sim.paced_crash();
        }
        sim.nodes.paced_crashes
    }

    fn dead_end(sim: &Sim<Self>, deadline: Option<u64>) -> bool {
        sim.is_stuck()
            || deadline.is_some_and(|deadline| sim.time >= deadline && sim.nodes.service.is_none())
    }

    fn converged(sim: &Sim<Self>) -> bool {
        let Some((primary, backup)) = sim.serving_pair() else {
            return false;
        };
        primary.pending == 0
            && primary.primary_acked
            && backup.is_none_or(|b| primary.backup_ready && b.applied == primary.applied)
    }

    fn node_state(&self, node: usize) -> Option<String> {
        let s = self.hosts[node].replica.as_ref()?.status();
        Some(format!(
            "{} {:?} view {} acting {} applied {} pending {}",
            s.id, s.role, s.view.number, s.acting_primary, s.applied, s.pending
        ))
    }

    fn lanes(&self) -> usize {
        self.hosts.len() + 1
    }

    fn lane_name(&self, lane: usize) -> String {
        if lane == self.hosts.len() {
            "view service".to_string()
        } else {
            format!("n{}", lane + 1)
        }
    }

    fn lane_state(&self, lane: usize) -> Option<LaneState> {
        if lane == self.hosts.len() {
            let service = self.service.as_ref()?.service();
            return Some(LaneState {
                role: if service.is_stuck() {
                    "view service (stuck)"
                } else {
                    "view service"
                },
                epoch: service.get_view().number.0,
                commit: 0,
                snapshot: 0,
            });
        }
        let s = self.hosts.get(lane)?.replica.as_ref()?.status();
        let role = match s.role {
            chorus_pb::Role::Primary if s.acting_primary => "primary",
            chorus_pb::Role::Primary => "primary (not acting)",
            chorus_pb::Role::Backup => "backup",
            chorus_pb::Role::Idle => "idle",
        };
        Some(LaneState {
            role,
            epoch: s.view.number.0,
            commit: s.applied.0,
            snapshot: 0,
        })
    }

    fn other_state(&self) -> Option<String> {
        Some(match &self.service {
            None => "view service down".to_string(),
            Some(s) => format!(
                "view service at {:?} (acked {}, stuck {})",
                s.service().get_view(),
                s.service().primary_acked(),
                s.service().is_stuck()
            ),
        })
    }

    fn finish(sim: &mut Sim<Self>) {
        sim.finish_checks();
    }

    fn fingerprint_message(message: &Message, hasher: &mut DefaultHasher) {
        message.size_bytes().hash(hasher);
    }

    fn fingerprint_event(event: &PbEvent, hasher: &mut DefaultHasher) {
        let PbEvent::ServiceTick = event;
        9u8.hash(hasher);
    }
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
        Sim::build(config, |config, _, rng_nemesis| {
            let paced_crashes = match config.faults {
                FaultProfile::CrashMany => false,
                FaultProfile::All => !rng_nemesis.chance(FaultProfile::CRASH_MANY_SHARE),
                FaultProfile::None | FaultProfile::Network | FaultProfile::Crash => true,
            };
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
            PbNodes {
                hosts,
                service: Some(service),
                primary_views: BTreeMap::new(),
                paced_crashes,
                last_view: View::NONE,
            }
        })
    }

    fn service_index(&self) -> usize {
        self.nodes.hosts.len()
    }

    /// The view service's node id: one above the last server's.
    #[must_use]
    pub fn view_service_id(&self) -> NodeId {
        NodeId(self.nodes.hosts.len() as u64 + 1)
    }

    fn node_id(&self, index: usize) -> NodeId {
        NodeId(index as u64 + 1)
    }

    fn index_of(&self, id: NodeId) -> Option<usize> {
        let index = usize::try_from(id.0.checked_sub(1)?).ok()?;
        (index <= self.nodes.hosts.len()).then_some(index)
    }

    /// The status of a live server.
    #[must_use]
    pub fn status(&self, node: NodeId) -> Option<PbStatus> {
        self.nodes.hosts[self.host_index(node)]
            .replica
            .as_ref()
            .map(PbReplica::status)
    }

    /// The view service's current view, if it is up.
    #[must_use]
    pub fn view(&self) -> Option<View> {
        self.nodes.service.as_ref().map(|s| s.service().get_view())
    }

    /// The view service's state, if it is up.
    #[must_use]
    pub fn view_service(&self) -> Option<&chorus_pb::ViewService> {
        self.nodes.service.as_ref().map(ViewServer::service)
    }

    /// The live server acting as primary of the highest view, if any.
    #[must_use]
    pub fn primary(&self) -> Option<NodeId> {
        self.nodes.leader().map(|i| self.nodes.hosts[i].id)
    }

    /// Client operations `node` answered with a result since the run began (over all its
    /// incarnations): a put applied, a get served.
    #[must_use]
    pub fn answered(&self, node: NodeId) -> u64 {
        self.nodes.hosts[self.host_index(node)].answered
    }

    /// Crashes the view service for the rest of the run (it keeps no durable state, and the
    /// pb scheme does not support its restart). Healing does not bring it back.
    pub fn crash_view_service(&mut self) {
        if self.nodes.service.take().is_some() {
            self.stats.crashes += 1;
            self.log(|| "crash the view service".to_string());
        }
    }

    /// Whether the view service is up.
    #[must_use]
    pub fn view_service_up(&self) -> bool {
        self.nodes.service.is_some()
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
        let number = self.nodes.hosts[index].request_number();
        let host = &mut self.nodes.hosts[index];
        let Some(replica) = &mut host.replica else {
            return Err(None);
        };
        let envelope = Envelope {
            origin: host.id,
            request: number,
            command: command.encode(),
            session: None,
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
        let number = self.nodes.hosts[index].request_number();
        let host = &mut self.nodes.hosts[index];
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

    // ---- nodes -------------------------------------------------------------------------

    fn send(&mut self, from: usize, to_id: NodeId, message: Message) {
        let Some(to) = self.index_of(to_id) else {
            let from_id = self.node_id(from);
            let detail = format!("{from_id} sent to unknown node {to_id}");
            self.checkers.report("send", self.time, detail);
            return;
        };
        self.transmit(from, to, message);
    }

    fn drive_service(&mut self) {
        let from = self.service_index();
        for _ in 0..READIES_PER_DRIVE_MAX {
            let Some(service) = &mut self.nodes.service else {
                return;
            };
            if !service.has_ready() {
                break;
            }
            let ready = service.ready();
            for (to, message) in ready.messages {
                self.send(from, to, message);
            }
            if let Some(service) = &mut self.nodes.service {
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
        if view.number > self.nodes.last_view.number {
            if view.primary.is_some() && view.primary == self.nodes.last_view.backup {
                self.stats.failovers += 1;
                let last = self.nodes.last_view;
                self.log(|| format!("failover: {last:?} -> {view:?}"));
            }
            self.nodes.last_view = view;
        }
    }

    /// Takes the server's Readies and does what they ask: send, answer, advance.
    fn drive(&mut self, node: usize) {
        let mut committed_indexes = Vec::new();
        let id = self.nodes.hosts[node].id;
        for _ in 0..READIES_PER_DRIVE_MAX {
            let Some(replica) = &mut self.nodes.hosts[node].replica else {
                return;
            };
            if !replica.has_ready() {
                break;
            }
            let ready = replica.ready();
            for (to, message) in ready.messages {
                if let Message::StateTransfer { view, index, .. } = &message {
                    // What the transfer carries joins what the receiver holds (S4, S8).
                    self.checkers.observe_pb_transfer(id, to, *view, *index);
                }
                self.send(node, to, message);
            }
            for committed in ready.committed {
                committed_indexes.push(committed.index);
                let host = &mut self.nodes.hosts[node];
                if committed.origin != host.id {
                    continue;
                }
                if let Some(waiting) = host.writes.remove(&committed.request) {
                    host.answered += 1;
                    self.reply(waiting, ReplyBody::Done(committed.output));
                }
            }
            for aborted in ready.aborted {
                let host = &mut self.nodes.hosts[node];
                if aborted.origin != host.id {
                    continue;
                }
                if let Some(waiting) = host.writes.remove(&aborted.request) {
                    // The outcome is unknown: the client retries with the same sequence
                    // number, and the session makes the retry exactly-once.
                    let hint = self.nodes.leader_hint(node);
                    self.reply(waiting, ReplyBody::Retry(hint));
                }
            }
            for read in ready.reads {
                if let Some(waiting) = self.nodes.hosts[node].reads.remove(&read.id) {
                    self.nodes.hosts[node].answered += 1;
                    self.reply(waiting, ReplyBody::Done(read.output));
                }
            }
            for id in ready.rejected_reads {
                if let Some(waiting) = self.nodes.hosts[node].reads.remove(&id) {
                    let hint = self.nodes.leader_hint(node);
                    self.reply(waiting, ReplyBody::Retry(hint));
                }
            }
            if let Some(replica) = &mut self.nodes.hosts[node].replica {
                replica.advance();
            }
        }
        self.observe(node, &committed_indexes);
    }

    /// Feeds the server's applies, status and acknowledged operations to the checkers.
    fn observe(&mut self, node: usize, committed: &[LogIndex]) {
        let host = &self.nodes.hosts[node];
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
            self.nodes.hosts[node].held_state = Some(incarnation);
        }
        // Status first: a server that starts acting as primary brings what it applied as a
        // backup into the official sequence before its first apply as primary.
        self.checkers.observe_pb_status(self.time, &status);
        // What a server executes or applies is its own until acknowledged: a primary's
        // execution joins the official sequence when the backup acknowledged it (below), a
        // backup's applies when it is promoted.
        for change in &applies {
            match change {
                Change::Applied {
                    index,
                    command,
                    output,
                    effect,
                } => self.checkers.observe_pb_apply(
                    self.time,
                    status.id,
                    *index,
                    (command, output, effect),
                    false,
                ),
                Change::Restored(index) => {
                    self.checkers
                        .observe_pb_restore(status.id, status.ready_in_view, *index);
                }
            }
        }
        for &index in committed {
            self.checkers.observe_pb_commit(self.time, status.id, index);
        }
        if status.acting_primary
            && self
                .nodes
                .primary_views
                .insert(status.view.number.0, status.id)
                .is_none()
        {
            self.stats.leaders += 1;
            let (id, view) = (status.id, status.view);
            self.log(|| format!("{id} acts as primary of {view:?}"));
        }
    }

    // ---- clients -----------------------------------------------------------------------

    /// One crash the scheme claims to survive, if any server can go now: the primary half the
    /// time (if its loss is survivable), otherwise a server drawn among those whose loss is.
    fn paced_crash(&mut self) {
        let survivable: Vec<usize> = (0..self.nodes.hosts.len())
            .filter(|&node| self.crash_is_survivable(node))
            .collect();
        let primary = self.nodes.leader().filter(|node| survivable.contains(node));
        let node = match primary {
            Some(primary) if self.rng_nemesis.chance(0.5) => primary,
            _ if survivable.is_empty() => {
                self.log(|| "nemesis holds off: no crash is survivable now".to_string());
                return;
            }
            _ => survivable[self.rng_nemesis.index(survivable.len())],
        };
        self.crash_and_restart_later(node);
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
        let host = &self.nodes.hosts[node];
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
        let other_host = &self.nodes.hosts[self.host_index(other)];
        let Some(status) = other_host.replica.as_ref().map(PbReplica::status) else {
            return false;
        };
        service.is_alive(other)
            && other_host.held_state == Some(other_host.incarnation)
            && (view.backup != Some(other) || status.ready_in_view == Some(view.number))
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
        let Some(service) = &self.nodes.service else {
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
            let host = &self.nodes.hosts[self.host_index(id)];
            host.replica.is_none() || host.held_state != Some(host.incarnation)
        };
        let primary_lost = view.primary.is_some_and(lost);
        let backup_lost = view.backup.is_none_or(lost);
        primary_lost && (!service.view_acked() || backup_lost)
    }

    /// The acting primary and the backup of the service's current view, if the primary acts
    /// and holds the group's state, and the backup (if any) holds the state of that view.
    fn serving_pair(&self) -> Option<(PbStatus, Option<PbStatus>)> {
        let view = self.view()?;
        let primary_id = view.primary?;
        let host = &self.nodes.hosts[self.host_index(primary_id)];
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

    /// The final checks of the servers' state: S6 against the state's holder, primary and
    /// backup identical, and a primary serving unless the run ended stuck.
    fn finish_checks(&mut self) {
        let pair = self.serving_pair();
        // S6 is judged against the serving primary or, if none serves (a stuck run), against
        // the primary or backup of the service's view that still holds that view's state;
        // with no such server the state is gone (pb keeps nothing on disk) and there is
        // nothing to check.
        let holder = || {
            let view = self.view_service().map(|s| s.get_view()).or_else(|| {
                // The service is down: the highest view a live server knows.
                self.nodes
                    .hosts
                    .iter()
                    .filter_map(|h| h.replica.as_ref().map(|r| r.status().view))
                    .max_by_key(|v| v.number)
            })?;
            [view.primary, view.backup]
                .into_iter()
                .flatten()
                .map(|id| &self.nodes.hosts[self.host_index(id)])
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
                    self.nodes.hosts[self.host_index(id)]
                        .replica
                        .as_ref()
                        .map(|r| r.state_machine().snapshot_bytes())
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
    }
}
