//! A tiny deterministic in-memory cluster for scenario tests.
//!
//! `Network` holds N [`RawNode`]s, drives each one's Ready exactly as the crate docs require
//! (send `messages`, persist to an in-memory disk, send `persisted_messages`, apply, advance),
//! and delivers messages in FIFO order. Links can be cut (one way or both), nodes crashed and
//! restarted from their disk, and a filter can drop chosen messages. After every delivery round
//! it checks that no two nodes applied different entries at the same index (Raft §5.4.3).
//!
//! A node's disk can be stalled ([`Network::stall_disk`]): its driver then holds the Ready it
//! took outstanding, unpersisted, and meanwhile keeps stepping, ticking and sending what
//! [`RawNode::take_messages`] gives, as an asynchronous-storage driver does while an fsync
//! hangs; [`Network::resume_disk`] finishes that Ready.
//!
//! It is also a tiny snapshot driver: each node's state machine is the list of commands it
//! applied (its snapshot is that list as text), it takes a snapshot when a Ready asks for one,
//! compacts its disk after the core, reads chunks for the leader from its snapshots, writes
//! received chunks to a partial snapshot and installs it, all in memory.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};
use chorus_raft::{
    Config, DurableState, Entry, EntryPayload, Message, Proposed, RawNode, ReadId, ReadState,
    Ready, Role, SnapshotMeta,
};

/// A node's state machine: the index it applied up to and the commands applied, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Machine {
    pub applied: LogIndex,
    pub commands: Vec<String>,
}

impl Machine {
    /// The snapshot's bytes: the applied index, then one command per line.
    pub fn encode(&self) -> Bytes {
        let mut text = format!("{}", self.applied.0);
        for command in &self.commands {
            text.push('\n');
            text.push_str(command);
        }
        Bytes::from(text)
    }

    pub fn decode(bytes: &[u8]) -> Machine {
        let text = String::from_utf8(bytes.to_vec()).expect("snapshot is text");
        let mut lines = text.split('\n');
        let applied = LogIndex(
            lines
                .next()
                .and_then(|line| line.parse().ok())
                .expect("snapshot starts with its index"),
        );
        Machine {
            applied,
            commands: lines.map(str::to_owned).collect(),
        }
    }
}

/// Where a node's snapshot work stops short, to test crashes in the middle of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotFault {
    /// The node crashes when asked for a snapshot, before it is durable (D21).
    CrashWhileTaking,
    /// The node crashes when a received snapshot is to be installed: the partial file is lost.
    CrashWhileInstalling,
}

/// Decides whether a message (from, to, message) is delivered, and may alter it on the way.
pub type Filter = Box<dyn FnMut(NodeId, NodeId, &mut Message) -> bool>;

/// Faults applied at random to every message, from a seeded PRNG.
#[derive(Clone, Copy, Debug, Default)]
pub struct Chaos {
    pub drop_chance: f64,
    pub duplicate_chance: f64,
    pub reorder_chance: f64,
}

pub struct Network {
    pub nodes: BTreeMap<NodeId, RawNode>,
    pub configs: BTreeMap<NodeId, Config>,
    pub disks: BTreeMap<NodeId, DurableState>,
    /// Entries applied by each node since it last (re)started, in order.
    pub applied: BTreeMap<NodeId, Vec<Entry>>,
    pub read_states: BTreeMap<NodeId, Vec<ReadState>>,
    pub rejected_reads: BTreeMap<NodeId, Vec<ReadId>>,
    /// Every message delivered: (from, to, message).
    pub delivered: Vec<(NodeId, NodeId, Message)>,
    /// The entry known committed at each index by any node, for the safety check.
    committed: BTreeMap<LogIndex, Entry>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
    cut: BTreeSet<(NodeId, NodeId)>,
    crashed: BTreeSet<NodeId>,
    pub filter: Option<Filter>,
    pub chaos: Chaos,
    prng: Prng,
    /// Each node's state machine.
    pub machines: BTreeMap<NodeId, Machine>,
    /// Each node's durable snapshots, oldest first.
    pub snapshots: BTreeMap<NodeId, Vec<(SnapshotMeta, Bytes)>>,
    /// Each node's partial snapshot being received (lost on a crash).
    pub partial: BTreeMap<NodeId, (SnapshotMeta, Vec<u8>)>,
    /// Snapshots taken and installed, per node.
    pub snapshots_taken: BTreeMap<NodeId, usize>,
    pub snapshots_installed: BTreeMap<NodeId, usize>,
    /// Faults to inject into a node's snapshot work (each fires once).
    pub snapshot_faults: BTreeMap<NodeId, SnapshotFault>,
    /// Nodes whose disk hangs: the Ready they took waits in `outstanding`.
    stalled: BTreeSet<NodeId>,
    /// The Ready a stalled node took and has not persisted (lost on a crash).
    outstanding: BTreeMap<NodeId, Ready>,
}

pub fn id(n: u64) -> NodeId {
    NodeId(n)
}

pub fn command(text: &str) -> Bytes {
    Bytes::copy_from_slice(text.as_bytes())
}

/// The commands among `entries`, as text (no-ops skipped).
pub fn commands(entries: &[Entry]) -> Vec<String> {
    entries
        .iter()
        .filter_map(|entry| match &entry.payload {
            EntryPayload::Command(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            EntryPayload::NoOp | EntryPayload::Membership(_) => None,
        })
        .collect()
}

/// A log of entries with the given terms, from index 1, each a command named after its index.
pub fn log_with_terms(terms: &[u64]) -> Vec<Entry> {
    terms
        .iter()
        .enumerate()
        .map(|(position, &term)| Entry {
            term: Term(term),
            index: LogIndex(position as u64 + 1),
            payload: EntryPayload::Command(command(&format!("e{}", position + 1))),
        })
        .collect()
}

impl Network {
    /// `size` fresh nodes with ids 1..=size; `configure` adjusts each config.
    pub fn new(size: u64, configure: impl Fn(&mut Config)) -> Network {
        let durable = (1..=size).map(|_| DurableState::default()).collect();
        Network::with_durable(durable, configure)
    }

    /// Nodes restarted from the given durable states (node i + 1 gets `durable[i]`).
    pub fn with_durable(durable: Vec<DurableState>, configure: impl Fn(&mut Config)) -> Network {
        let voters: Vec<NodeId> = (1..=durable.len() as u64).map(NodeId).collect();
        let mut network = Network {
            nodes: BTreeMap::new(),
            configs: BTreeMap::new(),
            disks: BTreeMap::new(),
            applied: BTreeMap::new(),
            read_states: BTreeMap::new(),
            rejected_reads: BTreeMap::new(),
            delivered: Vec::new(),
            committed: BTreeMap::new(),
            queue: VecDeque::new(),
            cut: BTreeSet::new(),
            crashed: BTreeSet::new(),
            filter: None,
            chaos: Chaos::default(),
            prng: Prng::new(7),
            machines: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            partial: BTreeMap::new(),
            snapshots_taken: BTreeMap::new(),
            snapshots_installed: BTreeMap::new(),
            snapshot_faults: BTreeMap::new(),
            stalled: BTreeSet::new(),
            outstanding: BTreeMap::new(),
        };
        for (voter, state) in voters.iter().zip(durable) {
            let mut config = Config::new(*voter, voters.clone());
            config.seed = 42;
            configure(&mut config);
            let node = RawNode::restart(config.clone(), state.clone()).expect("valid test node");
            network.nodes.insert(*voter, node);
            network.configs.insert(*voter, config);
            network.disks.insert(*voter, state);
            network.applied.insert(*voter, Vec::new());
            network.machines.insert(*voter, Machine::default());
            network.snapshots.insert(*voter, Vec::new());
            network.read_states.insert(*voter, Vec::new());
            network.rejected_reads.insert(*voter, Vec::new());
        }
        network
    }

    /// Starts node `node`, empty, joining the cluster: it knows no configuration until the
    /// leader's log (or snapshot) tells it.
    pub fn add_node(&mut self, node: NodeId, configure: impl Fn(&mut Config)) {
        let mut config = Config::new(node, Vec::new());
        config.seed = 42;
        configure(&mut config);
        let raft = RawNode::new(config.clone()).expect("valid joining node");
        self.nodes.insert(node, raft);
        self.configs.insert(node, config);
        self.disks.insert(node, DurableState::default());
        self.applied.insert(node, Vec::new());
        self.machines.insert(node, Machine::default());
        self.snapshots.insert(node, Vec::new());
        self.read_states.insert(node, Vec::new());
        self.rejected_reads.insert(node, Vec::new());
    }

    pub fn with_chaos(mut self, chaos: Chaos, seed: u64) -> Network {
        self.chaos = chaos;
        self.prng = Prng::new(seed);
        self
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    pub fn node(&self, node: NodeId) -> &RawNode {
        &self.nodes[&node]
    }

    pub fn node_mut(&mut self, node: NodeId) -> &mut RawNode {
        self.nodes.get_mut(&node).expect("known node")
    }

    /// Cuts every link to and from `node`.
    pub fn isolate(&mut self, node: NodeId) {
        for other in self.ids() {
            if other != node {
                self.cut.insert((node, other));
                self.cut.insert((other, node));
            }
        }
    }

    /// Cuts the one-way link `from -> to`.
    pub fn cut_link(&mut self, from: NodeId, to: NodeId) {
        self.cut.insert((from, to));
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The node stops: it is not ticked and messages to or from it are lost.
    pub fn crash(&mut self, node: NodeId) {
        self.crashed.insert(node);
        self.outstanding.remove(&node);
    }

    /// `node`'s disk hangs from now on: the next Ready it takes stays outstanding (nothing of
    /// it is persisted, its promises are not sent, its entries not applied) until
    /// [`Network::resume_disk`].
    pub fn stall_disk(&mut self, node: NodeId) {
        self.stalled.insert(node);
    }

    /// `node`'s disk works again: the Ready it held is persisted and finished.
    pub fn resume_disk(&mut self, node: NodeId) {
        self.stalled.remove(&node);
        self.drive(node);
    }

    /// Whether `node` holds a Ready its stalled disk has not persisted.
    pub fn has_outstanding(&self, node: NodeId) -> bool {
        self.outstanding.contains_key(&node)
    }

    /// The node restarts from its disk with a fresh state machine.
    pub fn restart(&mut self, node: NodeId) {
        self.crashed.remove(&node);
        let config = self.configs[&node].clone();
        let durable = self.disks[&node].clone();
        // The state machine restarts from the durable snapshot, if any.
        let machine = match durable.snapshot {
            Some(meta) => {
                let bytes = self.snapshots[&node]
                    .iter()
                    .find(|(taken, _)| *taken == meta)
                    .map(|(_, bytes)| bytes.clone())
                    .expect("the durable snapshot's bytes are on disk");
                Machine::decode(&bytes)
            }
            None => Machine::default(),
        };
        let fresh = RawNode::restart(config, durable).expect("the disk holds a valid state");
        assert_eq!(fresh.status().applied, machine.applied);
        self.nodes.insert(node, fresh);
        self.machines.insert(node, machine);
        self.partial.remove(&node);
        self.applied.insert(node, Vec::new());
    }

    /// A received snapshot is complete: verify, restore, make durable (Raft §7: keep the log
    /// after it only if it holds its last entry with the same term). Returns false if a fault
    /// crashed the node instead.
    fn install(&mut self, node: NodeId, meta: SnapshotMeta) -> bool {
        if self.snapshot_faults.get(&node) == Some(&SnapshotFault::CrashWhileInstalling) {
            self.snapshot_faults.remove(&node);
            self.crash(node);
            self.partial.remove(&node);
            return false;
        }
        let (partial_meta, bytes) = self
            .partial
            .remove(&node)
            .expect("an installed snapshot was received");
        assert_eq!(
            partial_meta, meta,
            "the snapshot installed is the one received"
        );
        let machine = Machine::decode(&bytes);
        assert_eq!(
            machine.applied, meta.index,
            "the snapshot holds its meta's state"
        );
        let current = &self.machines[&node];
        assert!(
            machine.applied > current.applied,
            "S5: an installed snapshot never rolls the state machine back ({} over {})",
            machine.applied,
            current.applied
        );
        self.machines.insert(node, machine);
        let disk = self.disks.get_mut(&node).expect("known node");
        let matches = disk
            .entries
            .iter()
            .any(|entry| entry.index == meta.index && entry.term == meta.term);
        if matches {
            disk.entries.retain(|entry| entry.index > meta.index);
        } else {
            disk.entries.clear();
        }
        disk.snapshot = Some(meta);
        disk.membership = self.nodes[&node].membership_at(meta.index).cloned();
        assert!(
            disk.membership.is_some(),
            "an installed snapshot has a configuration"
        );
        self.snapshots
            .get_mut(&node)
            .expect("known node")
            .push((meta, Bytes::from(bytes)));
        *self.snapshots_installed.entry(node).or_default() += 1;
        true
    }

    /// Takes the snapshot a Ready asked for, makes it durable, reports it, and compacts the
    /// disk below the core's new first index.
    fn take_snapshot(&mut self, node: NodeId, meta: SnapshotMeta) {
        if self.snapshot_faults.get(&node) == Some(&SnapshotFault::CrashWhileTaking) {
            self.snapshot_faults.remove(&node);
            self.crash(node);
            return;
        }
        let machine = &self.machines[&node];
        assert_eq!(machine.applied, meta.index, "asked at the applied index");
        let bytes = machine.encode();
        self.snapshots
            .get_mut(&node)
            .expect("known node")
            .push((meta, bytes));
        let membership = self.nodes[&node].membership_at(meta.index).cloned();
        assert!(membership.is_some(), "a snapshot's configuration is known");
        let disk = self.disks.get_mut(&node).expect("known node");
        disk.snapshot = Some(meta);
        disk.membership = membership;
        *self.snapshots_taken.entry(node).or_default() += 1;
        let raft = self.nodes.get_mut(&node).expect("known node");
        raft.on_snapshot_taken(meta)
            .expect("the snapshot matches the log");
        let status = raft.status();
        assert!(
            raft.first_index() <= status.applied.next()
                && raft.first_index() <= status.commit.next(),
            "compaction never goes above applied ({}) or commit ({}): first index {}",
            status.applied,
            status.commit,
            raft.first_index()
        );
        let first = raft.first_index();
        self.disks
            .get_mut(&node)
            .expect("known node")
            .entries
            .retain(|entry| entry.index >= first);
    }

    /// The leader's driver reads the chunk a Ready asked for from its snapshot.
    fn read_chunk(&mut self, node: NodeId, to: NodeId, meta: SnapshotMeta, offset: u64) {
        let chunk_max = self.configs[&node].snapshot_chunk_bytes_max;
        let raft = self.nodes.get_mut(&node).expect("known node");
        let Some((_, bytes)) = self.snapshots[&node]
            .iter()
            .find(|(taken, _)| *taken == meta)
        else {
            raft.report_snapshot_unavailable(to);
            return;
        };
        let start = (offset as usize).min(bytes.len());
        let end = (start + chunk_max).min(bytes.len());
        let data = bytes.slice(start..end);
        // A refusal means the follower moved on meanwhile; the chunk is dropped.
        let _ = raft.send_snapshot_chunk(to, meta, offset, data, end == bytes.len());
    }

    /// Restarts `node` if it is crashed.
    pub fn restart_if_crashed(&mut self, node: NodeId) {
        if self.crashed.contains(&node) {
            self.restart(node);
        }
    }

    /// Handles every available Ready of `node`, as the driving contract says.
    pub fn drive(&mut self, node: NodeId) {
        if self.crashed.contains(&node) {
            return;
        }
        loop {
            if self.outstanding.contains_key(&node) {
                if self.stalled.contains(&node) {
                    // The disk hangs: only what needs no durability leaves.
                    let messages = self.node_mut(node).take_messages();
                    for (to, message) in messages {
                        self.send(node, to, message);
                    }
                    return;
                }
                let ready = self.outstanding.remove(&node).expect("checked above");
                if !self.finish(node, ready) {
                    return;
                }
                continue;
            }
            let raft = self.nodes.get_mut(&node).expect("known node");
            if !raft.has_ready() {
                break;
            }
            let mut ready = raft.ready();
            assert!(
                !raft.has_ready(),
                "no second Ready while one is outstanding"
            );
            // 1. Send what needs no durability.
            for (to, message) in std::mem::take(&mut ready.messages) {
                self.send(node, to, message);
            }
            for request in &ready.snapshot_chunk_requests {
                self.read_chunk(node, request.to, request.meta, request.offset);
            }
            if self.stalled.contains(&node) {
                self.outstanding.insert(node, ready);
                continue;
            }
            if !self.finish(node, ready) {
                return;
            }
        }
    }

    /// Steps 2 to 5 of a Ready whose messages were sent: persist, send the promises, apply,
    /// advance, take a snapshot asked for. Returns false if a fault crashed the node.
    fn finish(&mut self, node: NodeId, ready: Ready) -> bool {
        {
            // 2. Persist.
            let disk = self.disks.get_mut(&node).expect("known node");
            if let Some(hard_state) = ready.hard_state {
                assert!(
                    hard_state.term >= disk.hard_state.term,
                    "S5: term never goes back"
                );
                disk.hard_state = hard_state;
            }
            for chunk in ready.snapshot_chunks {
                if chunk.offset == 0 {
                    self.partial.insert(node, (chunk.meta, Vec::new()));
                }
                let (meta, bytes) = self
                    .partial
                    .get_mut(&node)
                    .expect("a chunk continues a partial snapshot");
                assert_eq!(*meta, chunk.meta, "a chunk continues its own snapshot");
                assert_eq!(bytes.len() as u64, chunk.offset, "chunks are contiguous");
                bytes.extend_from_slice(&chunk.data);
            }
            if let Some(meta) = ready.snapshot {
                if !self.install(node, meta) {
                    return false;
                }
            }
            let disk = self.disks.get_mut(&node).expect("known node");
            if let Some(first) = ready.entries.first() {
                let disk_first = disk
                    .entries
                    .first()
                    .map_or(disk.snapshot.map_or(1, |meta| meta.index.0 + 1), |entry| {
                        entry.index.0
                    });
                assert!(
                    first.index.0 >= disk_first,
                    "entries are not below the disk's"
                );
                let keep = (first.index.0 - disk_first) as usize;
                assert!(
                    keep <= disk.entries.len(),
                    "entries are contiguous with the disk"
                );
                disk.entries.truncate(keep);
                disk.entries.extend(ready.entries.iter().cloned());
            }
            // 3. Send what promises durable state.
            for (to, message) in ready.persisted_messages {
                self.send(node, to, message);
            }
            // 4. Apply.
            let applied = self.applied.get_mut(&node).expect("known node");
            let machine = self.machines.get_mut(&node).expect("known node");
            for entry in ready.committed_entries {
                assert_eq!(
                    entry.index,
                    machine.applied.next(),
                    "S4: applied in order, without gaps"
                );
                machine.applied = entry.index;
                if let EntryPayload::Command(bytes) = &entry.payload {
                    machine
                        .commands
                        .push(String::from_utf8_lossy(bytes).into_owned());
                }
                applied.push(entry.clone());
                match self.committed.get(&entry.index) {
                    Some(known) => assert_eq!(known, &entry, "S3: committed entries agree"),
                    None => {
                        self.committed.insert(entry.index, entry);
                    }
                }
            }
            self.read_states
                .get_mut(&node)
                .expect("known node")
                .extend(ready.read_states);
            self.rejected_reads
                .get_mut(&node)
                .expect("known node")
                .extend(ready.rejected_reads);
            // 5. Advance, then take the snapshot asked for (it may finish at any time).
            self.nodes.get_mut(&node).expect("known node").advance();
            if let Some(meta) = ready.snapshot_due {
                self.take_snapshot(node, meta);
                if self.crashed.contains(&node) {
                    return false;
                }
            }
        }
        true
    }

    fn send(&mut self, from: NodeId, to: NodeId, message: Message) {
        self.queue.push_back((from, to, message));
    }

    /// Delivers messages until the network is quiet.
    pub fn deliver(&mut self) {
        for _ in 0..1_000_000 {
            for node in self.ids() {
                self.drive(node);
            }
            let Some((from, to, mut message)) = self.queue.pop_front() else {
                return;
            };
            if self.cut.contains(&(from, to))
                || !self.nodes.contains_key(&to)
                || self.crashed.contains(&from)
                || self.crashed.contains(&to)
            {
                continue;
            }
            if let Some(filter) = self.filter.as_mut() {
                if !filter(from, to, &mut message) {
                    continue;
                }
            }
            if self.chaos.drop_chance > 0.0 && self.prng.chance(self.chaos.drop_chance) {
                continue;
            }
            if self.chaos.duplicate_chance > 0.0 && self.prng.chance(self.chaos.duplicate_chance) {
                self.queue.push_back((from, to, message.clone()));
            }
            if self.chaos.reorder_chance > 0.0
                && !self.queue.is_empty()
                && self.prng.chance(self.chaos.reorder_chance)
            {
                // Deliver it later, behind everything queued now.
                self.queue.push_back((from, to, message));
                continue;
            }
            self.delivered.push((from, to, message.clone()));
            self.nodes
                .get_mut(&to)
                .expect("known node")
                .step(from, message)
                .expect("honest messages are accepted");
        }
        panic!("the network never went quiet");
    }

    /// `ticks` rounds of: tick every live node, then deliver until quiet.
    pub fn tick(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for node in self.ids() {
                if !self.crashed.contains(&node) {
                    self.node_mut(node).tick();
                }
            }
            self.deliver();
        }
    }

    /// The leader of the highest term among live nodes, if exactly one node leads it.
    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<(Term, NodeId)> = self
            .nodes
            .iter()
            .filter(|(node, raft)| {
                !self.crashed.contains(node) && raft.status().role == Role::Leader
            })
            .map(|(node, raft)| (raft.status().term, *node))
            .collect();
        let top = leaders.iter().map(|(term, _)| *term).max()?;
        let at_top: Vec<NodeId> = leaders
            .iter()
            .filter(|(term, _)| *term == top)
            .map(|(_, node)| *node)
            .collect();
        assert!(at_top.len() <= 1, "S1: at most one leader per term");
        at_top.first().copied()
    }

    /// Ticks until some node leads, within `ticks_max`.
    pub fn tick_until_leader(&mut self, ticks_max: u64) -> NodeId {
        for _ in 0..ticks_max {
            if let Some(leader) = self.leader() {
                return leader;
            }
            self.tick(1);
        }
        self.leader().expect("a leader within the deadline")
    }

    /// Makes `node` campaign and delivers the election.
    pub fn elect(&mut self, node: NodeId) {
        self.node_mut(node).campaign();
        self.deliver();
        assert_eq!(self.node(node).status().role, Role::Leader, "{node} won");
    }

    pub fn propose(&mut self, node: NodeId, text: &str) -> Proposed {
        self.node_mut(node)
            .propose(command(text))
            .expect("proposal accepted")
    }

    /// The commands `node` applied, as text.
    pub fn applied_commands(&self, node: NodeId) -> Vec<String> {
        commands(&self.applied[&node])
    }

    /// How many delivered messages match `predicate`.
    pub fn count_delivered(&self, predicate: impl Fn(NodeId, NodeId, &Message) -> bool) -> usize {
        self.delivered
            .iter()
            .filter(|(from, to, message)| predicate(*from, *to, message))
            .count()
    }
}
