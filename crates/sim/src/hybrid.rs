//! The hybrid simulation: `chorus_hybrid` data servers ([`DataReplica`]) with key-value state
//! machines and durable logs, and a configuration group of three Raft nodes
//! ([`chorus_raft::RawNode`]) replicating the [`ConfigStateMachine`], on the shared engine
//! (event queue, network, nemesis, clients, history, linearizability checker).
//!
//! # Layout
//! Data servers are nodes `1..=n` (the nodes clients talk to); the configuration group is
//! nodes `n+1..=n+3`. Partitions divide all of them; the engine's nemesis crashes data
//! servers, and this host's own fault event crashes configuration nodes (the leader half the
//! time; under `crash-many` sometimes two at once, a lost majority), restarting each after a
//! few election timeouts and all of them when the liveness phase begins.
//!
//! # Clocks
//! Each data server's clock runs at its own rate, drawn from `±SimConfig::clock_drift_ppm`,
//! from its own offset: leases and grace periods are measured on these clocks, the checkers
//! judge in true time. The servers' stated bound is 50 000 ppm; a larger drift breaks the
//! lease argument on purpose, and H1/H5 catch it.
//!
//! # Disks
//! A data server's Ready is persisted before its messages go out (synchronously: the
//! simulator does not tear data-server writes yet), so a crash loses nothing it acknowledged;
//! configuration nodes persist their Raft state the same way.
//!
//! # Checks
//! S4 (the same command at every lsn), S8 (exactly-once, through the shared model), the
//! configuration group's S1/S2/S5 (shared Raft checkers), H1–H6 (the `checks` module); at the end S6
//! and H3 against the final view, and S7 over the history.

mod checks;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{Execution, LogIndex, NodeId, Prng, StateMachine};
use chorus_hybrid::{
    ConfigCommand, ConfigStateMachine, DataReplica, DataStatus, Durable, HybridConfig, LocalTime,
    Message, ReadId, View,
};
use chorus_kv::Query;
use chorus_raft::{Config, EntryPayload, RawNode, Role};
use chorus_storage::{MemStorage, Storage};

use crate::config::{FaultProfile, SimConfig};
use crate::engine::{Event, Filter, Phase, ProtocolHost, Sim, Waiting};
use crate::machine::{SimStore, stamp_seed};
use crate::visual::LaneState;
use crate::witness::{Witnessed, unwitness};
use crate::workload::{ReplyBody, RequestBody};

/// Readies a node may produce in one drive before the driver stops.
const READIES_PER_DRIVE_MAX: usize = 64;

/// Nodes in the configuration group.
const CONFIG_NODES: usize = 3;

/// What travels between the simulated nodes.
#[derive(Clone, Debug)]
pub enum HybridWire {
    /// Data path and configuration requests and updates.
    Data(Message),
    /// The configuration group's Raft traffic.
    Raft(chorus_raft::Message),
}

/// A test's hook on every message sent.
pub type HybridMessageFilter = Filter<HybridWire>;

/// The deterministic hybrid simulator.
pub type HybridSimulator = Sim<HybridNodes>;

struct Server {
    id: NodeId,
    replica: Option<DataReplica>,
    disk: Durable,
    incarnation: u64,
    next_request: u64,
    writes: BTreeMap<u64, Waiting>,
    reads: BTreeMap<ReadId, Waiting>,
    config_target: usize,
    drift_ppm: i64,
    offset: i64,
    abandoned_seen: u64,
}

struct ConfigNode {
    id: NodeId,
    raft: Option<RawNode>,
    disk: MemStorage,
    machine: ConfigStateMachine,
    incarnation: u64,
}

/// The data servers and the configuration group of a simulation.
pub struct HybridNodes {
    servers: Vec<Server>,
    group: Vec<ConfigNode>,
    rng_faults: Prng,
    history: checks::ConfigurationHistory,
    acknowledged: checks::AcknowledgedEntries,
    min_replicas: usize,
    leader_epochs: BTreeMap<u64, NodeId>,
}

/// The hybrid driver's own events.
#[derive(Clone, Copy, Debug)]
pub enum HybridEvent {
    /// The configuration group's clocks tick.
    ConfigTick,
    /// The configuration group's nemesis acts.
    ConfigFault,
    /// A crashed configuration node restarts.
    ConfigRestart {
        /// Its index in the group.
        member: usize,
    },
}

impl ProtocolHost for HybridNodes {
    type Message = HybridWire;
    type Event = HybridEvent;

    const EPOCH_NAME: &'static str = "epoch / term";

    fn nodes(&self) -> usize {
        self.servers.len()
    }

    fn is_up(&self, node: usize) -> bool {
        self.servers[node].replica.is_some()
    }

    fn start(sim: &mut Sim<Self>, node: usize) {
        let server = &sim.nodes.servers[node];
        let mut config = HybridConfig::new(server.id);
        config.incarnation = server.incarnation + 1;
        config.min_replicas = sim.nodes.min_replicas;
        let now = sim.clock(node);
        let seed = stamp_seed(sim.config.seed, node, server.incarnation);
        let store = Box::new(Witnessed::new(
            SimStore::new(&sim.config.machine, seed, chorus_kv::KvConfig::default()),
            None,
        ));
        let replica = DataReplica::restart(config, server.disk.clone(), store, now)
            .expect("invariant: the simulator's data-server configuration is valid");
        sim.nodes.servers[node].replica = Some(replica);
        sim.drive(node);
    }

    fn new_incarnation(&mut self, node: usize) {
        self.servers[node].incarnation += 1;
    }

    fn schedule_start(sim: &mut Sim<Self>) {
        for member in 0..CONFIG_NODES {
            sim.start_config(member);
        }
        sim.schedule(
            sim.config.tick_units,
            Event::Protocol(HybridEvent::ConfigTick),
        );
        if sim.config.faults.crashes() {
            let delay = sim.config.nemesis_pause_units.1;
            sim.schedule(delay, Event::Protocol(HybridEvent::ConfigFault));
        }
    }

    fn tick(sim: &mut Sim<Self>, node: usize) {
        let now = sim.clock(node);
        if let Some(replica) = &mut sim.nodes.servers[node].replica {
            replica.tick(now);
            sim.drive(node);
        }
    }

    fn deliver(sim: &mut Sim<Self>, from: usize, to: usize, message: HybridWire) {
        let from_id = NodeId(from as u64 + 1);
        if to >= sim.nodes.servers.len() {
            sim.deliver_config(from_id, to - sim.nodes.servers.len(), message);
            return;
        }
        let HybridWire::Data(message) = message else {
            sim.checkers
                .report("step", sim.time, format!("n{} got Raft traffic", to + 1));
            return;
        };
        let now = sim.clock(to);
        let Some(replica) = &mut sim.nodes.servers[to].replica else {
            return;
        };
        if let Err(error) = replica.step(now, from_id, message) {
            let detail = format!("n{} refused a message from {from_id}: {error}", to + 1);
            sim.checkers.report("step", sim.time, detail);
        }
        sim.drive(to);
    }

    fn held_requests(&self, node: usize) -> usize {
        self.servers[node].writes.len() + self.servers[node].reads.len()
    }

    fn leader_hint(&self, node: usize) -> Option<usize> {
        let replica = self.servers[node].replica.as_ref()?;
        let primary = replica.status().view.primary?;
        let index = usize::try_from(primary.0.checked_sub(1)?).ok()?;
        (index < self.servers.len()).then_some(index)
    }

    fn accept(sim: &mut Sim<Self>, node: usize, waiting: Waiting, body: RequestBody) -> bool {
        let now = sim.clock(node);
        let server = &mut sim.nodes.servers[node];
        server.next_request += 1;
        let number = (server.incarnation << 32) | server.next_request;
        let replica = server
            .replica
            .as_mut()
            .expect("invariant: checked the server is up");
        match body {
            RequestBody::Write(command) => {
                let envelope = Envelope {
                    origin: server.id,
                    request: number,
                    command,
                    session: None,
                };
                let accepted = replica.propose(now, envelope.encode()).is_ok();
                if accepted {
                    server.writes.insert(number, waiting);
                }
                accepted
            }
            RequestBody::Read(key) => {
                let id = ReadId(number);
                server.reads.insert(id, waiting);
                let accepted = replica.read(now, id, &Query::Get { key }.encode()).is_ok();
                if !accepted {
                    server.reads.remove(&id);
                }
                accepted
            }
        }
    }

    fn drive(sim: &mut Sim<Self>, node: usize) {
        sim.drive(node);
    }

    fn event(sim: &mut Sim<Self>, event: HybridEvent) {
        match event {
            HybridEvent::ConfigTick => {
                for member in 0..CONFIG_NODES {
                    if let Some(raft) = &mut sim.nodes.group[member].raft {
                        raft.tick();
                        sim.drive_config(member);
                        sim.push_configuration(member);
                    }
                }
                sim.schedule(
                    sim.config.tick_units,
                    Event::Protocol(HybridEvent::ConfigTick),
                );
            }
            HybridEvent::ConfigFault => sim.config_fault(),
            HybridEvent::ConfigRestart { member } => {
                if sim.nodes.group[member].raft.is_none() {
                    sim.start_config(member);
                }
            }
        }
    }

    fn crash(sim: &mut Sim<Self>, node: usize) {
        let server = &mut sim.nodes.servers[node];
        if server.replica.is_none() {
            return;
        }
        sim.stats.crashes += 1;
        server.replica = None;
        server.writes.clear();
        server.reads.clear();
        let id = server.id;
        sim.log(|| format!("crash data server {id}"));
    }

    fn on_sent(sim: &mut Sim<Self>, from: usize, to: usize, message: &HybridWire) {
        let n = sim.nodes.servers.len();
        if from >= n || to >= n {
            sim.stats.view_service_messages += 1;
        }
        if let HybridWire::Raft(chorus_raft::Message::RequestVoteResponse(response)) = message {
            if response.granted && !response.pre_vote {
                let (from_id, to_id) = (NodeId(from as u64 + 1), NodeId(to as u64 + 1));
                sim.checkers
                    .observe_vote(sim.time, from_id, response.term, to_id);
            }
        }
        if let HybridWire::Data(Message::AppendAck { epoch, success, .. }) = message {
            if from < n {
                let server = &sim.nodes.servers[from];
                if let Some(v) =
                    checks::ack_respects_fence(server.id, &server.disk.hard_state, *epoch, *success)
                {
                    sim.checkers.report("H4", sim.time, v);
                }
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.servers.len()).find(|&node| {
            self.servers[node]
                .replica
                .as_ref()
                .is_some_and(DataReplica::is_serving)
        })
    }

    fn partition_members(&self) -> Vec<NodeId> {
        let all = self.servers.len() + self.group.len();
        (1..=all as u64).map(NodeId).collect()
    }

    fn converged(sim: &Sim<Self>) -> bool {
        let Some(primary) = sim.serving_primary() else {
            return false;
        };
        if primary.view.members().len() < sim.nodes.min_replicas {
            return false;
        }
        primary.view.backups.iter().all(|backup| {
            let index = sim.host_index(*backup);
            sim.nodes.servers[index]
                .replica
                .as_ref()
                .is_some_and(|r| r.status().applied == primary.hard_state.commit)
        }) && primary.hard_state.commit == primary.last_lsn
    }

    fn lanes(&self) -> usize {
        self.servers.len() + self.group.len()
    }

    fn message_kind(message: &HybridWire) -> String {
        match message {
            HybridWire::Data(m) => crate::visual::debug_kind(&format!("{m:?}")),
            HybridWire::Raft(m) => {
                let kind = match m {
                    chorus_raft::Message::AppendEntries(a) if a.entries.is_empty() => {
                        "Heartbeat".to_string()
                    }
                    other => crate::visual::debug_kind(&format!("{other:?}")),
                };
                format!("Config{kind}")
            }
        }
    }

    fn lane_name(&self, lane: usize) -> String {
        match lane.checked_sub(self.servers.len()) {
            None => format!("n{}", lane + 1),
            Some(member) => format!("config {}", member + 1),
        }
    }

    fn lane_state(&self, lane: usize) -> Option<LaneState> {
        let Some(member) = lane.checked_sub(self.servers.len()) else {
            let s = self.servers.get(lane)?.replica.as_ref()?.status();
            let role = match s.role {
                chorus_hybrid::Role::Primary if s.serving => "primary",
                chorus_hybrid::Role::Primary => "primary (not serving)",
                chorus_hybrid::Role::Backup => "backup",
                chorus_hybrid::Role::Spare => "spare",
            };
            return Some(LaneState {
                role,
                epoch: s.view.epoch.0,
                commit: s.applied.0,
                snapshot: 0,
            });
        };
        let raft = self.group.get(member)?.raft.as_ref()?;
        let status = raft.status();
        let role = match status.role {
            Role::Leader => "config leader",
            Role::Candidate => "config candidate",
            Role::PreCandidate => "config pre-candidate",
            Role::Follower => "config follower",
        };
        Some(LaneState {
            role,
            epoch: status.term.0,
            commit: status.commit.0,
            snapshot: 0,
        })
    }

    fn node_state(&self, node: usize) -> Option<String> {
        let s = self.servers[node].replica.as_ref()?.status();
        Some(format!(
            "{} {:?} {} {:?} active {} serving {} commit {} last {} abandoned {}",
            s.id,
            s.role,
            s.view.epoch,
            s.view.members(),
            s.view.active,
            s.serving,
            s.hard_state.commit,
            s.last_lsn,
            s.hard_state.abandoned_epoch
        ))
    }

    fn other_state(&self) -> Option<String> {
        let group: Vec<String> = self
            .group
            .iter()
            .map(|member| match &member.raft {
                None => format!("{} down", member.id),
                Some(raft) => {
                    let status = raft.status();
                    let view = &member.machine.configuration().view;
                    format!(
                        "{} {:?} {} view {} {:?} active {}",
                        member.id,
                        status.role,
                        status.term,
                        view.epoch,
                        view.members(),
                        view.active
                    )
                }
            })
            .collect();
        Some(group.join("; "))
    }

    fn finish(sim: &mut Sim<Self>) {
        sim.finish_checks();
    }

    fn fingerprint_message(message: &HybridWire, hasher: &mut DefaultHasher) {
        match message {
            HybridWire::Raft(message) => (0u8, message.term().0).hash(hasher),
            HybridWire::Data(message) => match message {
                Message::Append { epoch, sent_at, .. } => (1u8, epoch.0, sent_at.0).hash(hasher),
                Message::AppendAck { epoch, lsn, .. } => (2u8, epoch.0, lsn.0).hash(hasher),
                Message::Propose(_) => 3u8.hash(hasher),
                Message::Update(configuration) => (4u8, configuration.version.0).hash(hasher),
            },
        }
    }

    fn fingerprint_event(event: &HybridEvent, hasher: &mut DefaultHasher) {
        match event {
            HybridEvent::ConfigTick => 10u8.hash(hasher),
            HybridEvent::ConfigFault => 11u8.hash(hasher),
            HybridEvent::ConfigRestart { member } => (12u8, member).hash(hasher),
        }
    }
}

impl HybridSimulator {
    /// `config.nodes` data servers, a configuration group of three, and `config.clients`
    /// clients, nothing run yet.
    ///
    /// # Panics
    /// If the configuration is unusable.
    #[must_use]
    pub fn new(config: SimConfig) -> HybridSimulator {
        Sim::build(config, |config, rng, _| {
            let drift = i64::try_from(config.clock_drift_ppm.min(900_000)).unwrap_or(0);
            let mut rng_clocks = rng.fork();
            let servers = (0..config.nodes)
                .map(|i| Server {
                    id: NodeId(i as u64 + 1),
                    replica: None,
                    disk: Durable::default(),
                    incarnation: 0,
                    next_request: 0,
                    writes: BTreeMap::new(),
                    reads: BTreeMap::new(),
                    config_target: i % CONFIG_NODES,
                    drift_ppm: i64::try_from(rng_clocks.range(0, 2 * drift as u64 + 1))
                        .unwrap_or(0)
                        - drift,
                    offset: i64::try_from(rng_clocks.range(0, 1000)).unwrap_or(0),
                    abandoned_seen: 0,
                })
                .collect();
            let group = (0..CONFIG_NODES)
                .map(|i| ConfigNode {
                    id: NodeId((config.nodes + i) as u64 + 1),
                    raft: None,
                    disk: MemStorage::new(),
                    machine: ConfigStateMachine::new(),
                    incarnation: 0,
                })
                .collect();
            HybridNodes {
                servers,
                group,
                rng_faults: rng.fork(),
                history: checks::ConfigurationHistory::default(),
                acknowledged: checks::AcknowledgedEntries::default(),
                min_replicas: 2.min(config.nodes),
                leader_epochs: BTreeMap::new(),
            }
        })
    }

    // ---- scripted control, for scenario tests ------------------------------------------

    /// The status of a live data server.
    #[must_use]
    pub fn data_status(&self, node: NodeId) -> Option<DataStatus> {
        let index = self.host_index(node);
        self.nodes.servers[index]
            .replica
            .as_ref()
            .map(DataReplica::status)
    }

    /// The data server that passes the serving rule now, if one does.
    #[must_use]
    pub fn serving(&self) -> Option<NodeId> {
        self.serving_primary().map(|status| status.id)
    }

    /// The view the configuration group's leader (or any live member) applied last.
    #[must_use]
    pub fn configured_view(&self) -> Option<View> {
        self.nodes
            .group
            .iter()
            .filter(|member| member.raft.is_some())
            .map(|member| member.machine.configuration().view.clone())
            .max_by_key(|view| (view.epoch, view.active))
    }

    /// The ids of the configuration group.
    #[must_use]
    pub fn config_ids(&self) -> Vec<NodeId> {
        self.nodes.group.iter().map(|member| member.id).collect()
    }

    /// The configuration group's leader, if a live member leads.
    #[must_use]
    pub fn config_leader(&self) -> Option<NodeId> {
        self.nodes
            .group
            .iter()
            .filter_map(|member| member.raft.as_ref().map(RawNode::status))
            .filter(|status| status.role == Role::Leader)
            .max_by_key(|status| status.term)
            .map(|status| status.id)
    }

    /// Crashes a configuration node (it restarts with [`HybridSimulator::restart_config`]).
    pub fn crash_config(&mut self, node: NodeId) {
        if let Some(member) = self.nodes.group.iter().position(|m| m.id == node) {
            self.crash_config_member(member);
        }
    }

    /// Restarts a crashed configuration node from its disk.
    pub fn restart_config(&mut self, node: NodeId) {
        if let Some(member) = self.nodes.group.iter().position(|m| m.id == node) {
            if self.nodes.group[member].raft.is_none() {
                self.start_config(member);
            }
        }
    }

    /// Sets a data server's clock drift from now on, without a jump.
    pub fn set_clock_drift(&mut self, node: NodeId, drift_ppm: i64) {
        let index = self.host_index(node);
        let now = self.clock(index).0;
        let server = &mut self.nodes.servers[index];
        let rate = 1_000_000 + drift_ppm;
        // Re-anchor: offset is the reading the clock would have had at true time 0.
        let scaled = i128::from(self.time) * i128::from(rate) / 1_000_000;
        server.drift_ppm = drift_ppm;
        server.offset = i64::try_from(i128::from(now) - scaled).unwrap_or(0);
    }

    // ---- clocks ------------------------------------------------------------------------

    /// Data server `node`'s clock reading now.
    fn clock(&self, node: usize) -> LocalTime {
        let server = &self.nodes.servers[node];
        let rate = i128::from(1_000_000 + server.drift_ppm);
        let local = i128::from(self.time) * rate / 1_000_000 + i128::from(server.offset);
        LocalTime(u64::try_from(local).unwrap_or(0))
    }

    // ---- data servers ------------------------------------------------------------------

    fn drive(&mut self, node: usize) {
        for _ in 0..READIES_PER_DRIVE_MAX {
            let server = &mut self.nodes.servers[node];
            let Some(replica) = &mut server.replica else {
                return;
            };
            if !replica.has_ready() {
                break;
            }
            let ready = replica.ready();
            server.disk.write(&ready);
            let id = server.id;
            for (to, message) in ready.messages {
                let index = usize::try_from(to.0 - 1).expect("invariant: ids are 1..");
                self.transmit(node, index, HybridWire::Data(message));
            }
            for command in ready.config_commands {
                self.log(|| format!("{id} proposes {command:?}"));
                let n = self.nodes.servers.len();
                let server = &mut self.nodes.servers[node];
                server.config_target = (server.config_target + 1) % CONFIG_NODES;
                let to = n + server.config_target;
                self.transmit(node, to, HybridWire::Data(Message::Propose(command)));
            }
            for applied in &ready.applied {
                if let Some(v) =
                    self.nodes
                        .acknowledged
                        .observe_apply(id, applied.lsn, &applied.command)
                {
                    self.checkers.report("S4", self.time, v);
                }
                // The entry carries the primary's execution; its witness names the command
                // (see `witness`), which the exactly-once model runs.
                let command =
                    entry_command(&applied.command).unwrap_or_else(|| applied.command.clone());
                self.checkers.observe_replicated_apply(
                    self.time,
                    id,
                    LogIndex(applied.lsn.0),
                    &command,
                    &applied.output,
                );
            }
            let status = self.nodes.servers[node]
                .replica
                .as_ref()
                .map(DataReplica::status);
            for applied in ready.acknowledged {
                let Ok(envelope) = Envelope::decode(&applied.command) else {
                    continue;
                };
                if let Some(status) = &status {
                    if let Some(v) = checks::acknowledged_with_enough_replicas(
                        id,
                        &status.view,
                        self.nodes.min_replicas,
                    ) {
                        self.checkers.report("H6", self.time, v);
                    }
                    let index = usize::try_from(applied.lsn.0 - 1).unwrap_or(usize::MAX);
                    let entry = self.nodes.servers[node].disk.log.get(index).cloned();
                    if let Some(entry) = entry {
                        if let Some(v) = self.nodes.acknowledged.observe(&entry) {
                            self.checkers.report("H3", self.time, v);
                        }
                    }
                }
                if envelope.origin == id {
                    if let Some(waiting) = self.nodes.servers[node].writes.remove(&envelope.request)
                    {
                        self.reply(waiting, ReplyBody::Done(applied.output));
                    }
                }
            }
            for command in ready.aborted {
                let Ok(envelope) = Envelope::decode(&command) else {
                    continue;
                };
                if envelope.origin == id {
                    if let Some(waiting) = self.nodes.servers[node].writes.remove(&envelope.request)
                    {
                        let hint = self.nodes.leader_hint(node);
                        self.reply(waiting, ReplyBody::Retry(hint));
                    }
                }
            }
            for (read, output) in ready.reads {
                if let Some(waiting) = self.nodes.servers[node].reads.remove(&read) {
                    self.reply(waiting, ReplyBody::Done(output));
                }
            }
            for read in ready.rejected_reads {
                if let Some(waiting) = self.nodes.servers[node].reads.remove(&read) {
                    let hint = self.nodes.leader_hint(node);
                    self.reply(waiting, ReplyBody::Retry(hint));
                }
            }
            if let Some(replica) = &mut self.nodes.servers[node].replica {
                replica.advance();
            }
        }
        self.observe(node);
    }

    /// H5 when `node` just abandoned an epoch, and H1 across every server.
    fn observe(&mut self, node: usize) {
        let Some(status) = self.nodes.servers[node]
            .replica
            .as_ref()
            .map(DataReplica::status)
        else {
            return;
        };
        let abandoned = status.hard_state.abandoned_epoch.0;
        if abandoned > self.nodes.servers[node].abandoned_seen {
            self.nodes.servers[node].abandoned_seen = abandoned;
            if let Some(primary) = status.view.primary {
                let index = self.host_index(primary);
                let now = self.clock(index);
                let lease = self.nodes.servers[index].replica.as_ref().and_then(|r| {
                    (r.status().view.epoch == status.view.epoch)
                        .then(|| r.lease_from(status.id))
                        .flatten()
                });
                if let Some(v) = checks::grace_after_lease(status.id, primary, lease, now) {
                    self.checkers.report("H5", self.time, v);
                }
            }
            let id = status.id;
            self.log(|| format!("{id} abandons epoch {abandoned}: grace period over"));
        }
        let serving: Vec<NodeId> = (0..self.nodes.servers.len())
            .filter(|&i| {
                let now = self.clock(i);
                self.nodes.servers[i]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_serving_at(now))
            })
            .map(|i| self.nodes.servers[i].id)
            .collect();
        if let Some(v) = checks::one_server_serves(&serving) {
            self.checkers.report("H1", self.time, v);
        }
        if let [primary] = serving.as_slice() {
            let epoch = status.view.epoch.0;
            if status.id == *primary && self.nodes.leader_epochs.insert(epoch, *primary).is_none() {
                self.stats.leaders += 1;
                let id = *primary;
                self.log(|| format!("{id} serves epoch {epoch}"));
            }
        }
    }

    fn serving_primary(&self) -> Option<DataStatus> {
        (0..self.nodes.servers.len()).find_map(|i| {
            let now = self.clock(i);
            let replica = self.nodes.servers[i].replica.as_ref()?;
            replica.is_serving_at(now).then(|| replica.status())
        })
    }

    // ---- the configuration group -------------------------------------------------------

    fn start_config(&mut self, member: usize) {
        let voters: Vec<NodeId> = self.nodes.group.iter().map(|m| m.id).collect();
        let node = &mut self.nodes.group[member];
        node.incarnation += 1;
        let mut config = Config::new(node.id, voters);
        config.election_timeout_ticks = self.config.election_timeout_ticks;
        config.heartbeat_interval_ticks = self.config.heartbeat_interval_ticks;
        config.seed = self.config.seed ^ ((member as u64 + 101) << 48) ^ (node.incarnation << 32);
        let durable = node.disk.durable();
        let hard_state = durable.hard_state;
        let raft = RawNode::restart(config, durable)
            .expect("invariant: the simulator's Raft configuration is valid");
        let status = raft.status();
        node.raft = Some(raft);
        node.machine = ConfigStateMachine::new();
        let id = node.id;
        if node.incarnation > 1 {
            self.checkers
                .observe_restart(self.time, &status, hard_state);
            self.nodes.history.observe_restart(id);
            self.log(|| format!("restart configuration node {id}"));
        }
        self.drive_config(member);
    }

    fn crash_config_member(&mut self, member: usize) {
        let node = &mut self.nodes.group[member];
        if node.raft.is_none() {
            return;
        }
        node.raft = None;
        let id = node.id;
        self.stats.crashes += 1;
        self.checkers.observe_crash(id);
        self.log(|| format!("crash configuration node {id}"));
    }

    fn config_fault(&mut self) {
        if self.phase != Phase::Safety {
            for member in 0..CONFIG_NODES {
                if self.nodes.group[member].raft.is_none() {
                    self.start_config(member);
                }
            }
            return;
        }
        let rng = &mut self.nodes.rng_faults;
        let crash = rng.chance(0.4);
        let many = self.config.faults == FaultProfile::CrashMany && rng.chance(0.3)
            || self.config.faults == FaultProfile::All && rng.chance(0.05);
        let pick_leader = rng.chance(0.5);
        let first = rng.index(CONFIG_NODES);
        let down = rng.range(1, 5) * self.config.election_timeout_units();
        if crash {
            let leader = self
                .config_leader()
                .and_then(|id| self.nodes.group.iter().position(|m| m.id == id));
            let first = if pick_leader {
                leader.unwrap_or(first)
            } else {
                first
            };
            let members: Vec<usize> = if many {
                vec![first, (first + 1) % CONFIG_NODES]
            } else {
                vec![first]
            };
            for member in members {
                self.crash_config_member(member);
                self.schedule(down, Event::Protocol(HybridEvent::ConfigRestart { member }));
            }
        }
        let (low, high) = self.config.nemesis_pause_units;
        let pause = self.nodes.rng_faults.range(low * 2, high.max(low + 1) * 2);
        self.schedule(pause, Event::Protocol(HybridEvent::ConfigFault));
    }

    fn deliver_config(&mut self, from: NodeId, member: usize, message: HybridWire) {
        let Some(raft) = &mut self.nodes.group[member].raft else {
            return;
        };
        match message {
            HybridWire::Raft(message) => {
                if let Err(error) = raft.step(from, message) {
                    let id = self.nodes.group[member].id;
                    let detail = format!("{id} refused a message from {from}: {error}");
                    self.checkers.report("step", self.time, detail);
                }
            }
            HybridWire::Data(Message::Propose(command)) => {
                let status = raft.status();
                if status.role == Role::Leader {
                    let _ = raft.propose(command.encode());
                } else if let Some(leader) = status.leader {
                    // One hop: forward to the leader this member knows.
                    let to = usize::try_from(leader.0 - 1).expect("invariant: ids are 1..");
                    let from_index = self.nodes.servers.len() + member;
                    self.transmit(from_index, to, HybridWire::Data(Message::Propose(command)));
                }
            }
            HybridWire::Data(_) => {
                let detail = format!("configuration node got a data message from {from}");
                self.checkers.report("step", self.time, detail);
            }
        }
        self.drive_config(member);
    }

    fn drive_config(&mut self, member: usize) {
        let from = self.nodes.servers.len() + member;
        let mut applied_any = false;
        for _ in 0..READIES_PER_DRIVE_MAX {
            let node = &mut self.nodes.group[member];
            let Some(raft) = &mut node.raft else {
                return;
            };
            if !raft.has_ready() {
                break;
            }
            let ready = raft.ready();
            if let Some(first) = ready.entries.first() {
                let prev_term = raft.term_at(first.index.prev());
                let commit = raft.status().commit;
                let id = node.id;
                self.checkers
                    .observe_persist(self.time, id, commit, prev_term, &ready.entries);
            }
            let node = &mut self.nodes.group[member];
            let written = node
                .disk
                .write(ready.hard_state, &ready.entries)
                .and_then(|()| node.disk.sync());
            if let Err(error) = written {
                let detail = format!("configuration node could not persist: {error}");
                self.checkers.report("storage", self.time, detail);
            }
            for (to, message) in ready.messages.into_iter().chain(ready.persisted_messages) {
                let to = usize::try_from(to.0 - 1).expect("invariant: ids are 1..");
                self.transmit(from, to, HybridWire::Raft(message));
            }
            for entry in &ready.committed_entries {
                if let EntryPayload::Command(bytes) = &entry.payload {
                    let node = &mut self.nodes.group[member];
                    node.machine.apply(entry.index, bytes);
                    applied_any = true;
                    let view = node.machine.configuration().view.clone();
                    let id = node.id;
                    if self.nodes.history.newly_active(&view) {
                        self.check_active_view(&view);
                    }
                    for v in self.nodes.history.observe(id, &view) {
                        self.checkers.report("H2", self.time, v);
                    }
                    if let Ok(command) = ConfigCommand::decode(bytes) {
                        if member == 0 {
                            self.log(|| format!("configuration applied {command:?} -> {view:?}"));
                        }
                    }
                }
            }
            if let Some(raft) = &mut self.nodes.group[member].raft {
                raft.advance();
            }
        }
        if let Some(raft) = &self.nodes.group[member].raft {
            let status = raft.status();
            self.checkers.observe_status(self.time, &status, raft);
        }
        if applied_any {
            self.push_configuration(member);
        }
    }

    /// The configuration group's leader tells every data server the configuration.
    fn push_configuration(&mut self, member: usize) {
        let node = &self.nodes.group[member];
        let Some(raft) = &node.raft else {
            return;
        };
        if raft.status().role != Role::Leader {
            return;
        }
        let configuration = node.machine.configuration().clone();
        let from = self.nodes.servers.len() + member;
        for to in 0..self.nodes.servers.len() {
            self.transmit(
                from,
                to,
                HybridWire::Data(Message::Update(configuration.clone())),
            );
        }
    }

    /// H3 when `view` becomes active: each member's durable log holds every acknowledged
    /// entry.
    fn check_active_view(&mut self, view: &View) {
        for member in view.members() {
            let index = self.host_index(member);
            let log = &self.nodes.servers[index].disk.log;
            if let Some(v) = self.nodes.acknowledged.check_member(member, log) {
                self.checkers.report("H3", self.time, v);
            }
        }
    }

    /// S4 at the end: every live member of the final view whose state machine stands where
    /// the primary's does (everything applied, nothing beyond) holds the primary's state, byte
    /// for byte. Under passive replication the backups' states come from effects alone.
    fn check_final_states(&mut self, primary: &DataStatus) {
        let settled = |status: &DataStatus| status.applied == status.last_lsn;
        if !settled(primary) {
            return;
        }
        let image = |sim: &Self, id: NodeId| {
            sim.nodes.servers[sim.host_index(id)]
                .replica
                .as_ref()
                .map(|replica| replica.state_machine().snapshot_bytes())
        };
        let primary_image = image(self, primary.id);
        for backup in primary.view.backups.clone() {
            let Some(status) = self.nodes.servers[self.host_index(backup)]
                .replica
                .as_ref()
                .map(DataReplica::status)
            else {
                continue;
            };
            if settled(&status)
                && status.applied == primary.applied
                && image(self, backup) != primary_image
            {
                let detail = format!(
                    "primary {} and backup {backup} hold different states at {}",
                    primary.id, primary.applied
                );
                self.checkers.report("S4", self.time, detail);
            }
        }
    }

    /// At the end: S6 against the serving primary's committed log, H3 against the final
    /// view, S4 against the final view's states.
    fn finish_checks(&mut self) {
        let Some(primary) = self.serving_primary() else {
            if self.checkers.violations().is_empty() {
                let detail = format!("no primary serves at the end: {}", self.describe_progress());
                self.checkers.report("liveness", self.time, detail);
            }
            return;
        };
        self.check_active_view(&primary.view.clone());
        self.check_final_states(&primary);
        let index = self.host_index(primary.id);
        let commit = usize::try_from(primary.hard_state.commit.0).unwrap_or(usize::MAX);
        let log = &self.nodes.servers[index].disk.log;
        let committed: std::collections::BTreeSet<(u64, u64)> = log
            .iter()
            .take(commit)
            .filter_map(|entry| {
                match chorus_kv::Command::decode(&entry_command(&entry.command)?).ok()? {
                    chorus_kv::Command::Request { client, seq, .. } => Some((client.0, seq)),
                    _ => None,
                }
            })
            .collect();
        let missing: Vec<String> = self
            .checkers
            .acknowledged_writes()
            .iter()
            .filter(|write| !committed.contains(&(write.client.0, write.seq)))
            .map(|write| {
                format!(
                    "acknowledged write seq {} of client {} is not in the final primary's log",
                    write.seq, write.client.0
                )
            })
            .collect();
        for detail in missing {
            self.checkers.report("S6", self.time, detail);
        }
    }
}

/// The key-value command inside a data entry's payload: the envelope holds the primary's
/// execution, whose witnessed effect names the command (see `witness`).
fn entry_command(payload: &Bytes) -> Option<Bytes> {
    let envelope = Envelope::decode(payload).ok()?;
    let execution = Execution::decode(&envelope.command).ok()?;
    unwitness(&execution.effect).map(|(command, _, _)| command)
}
