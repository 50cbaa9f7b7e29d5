//! A tiny deterministic in-memory cluster for scenario tests.
//!
//! `Network` holds N [`RawNode`]s, drives each one's Ready exactly as the crate docs require
//! (send `messages`, persist to an in-memory disk, send `persisted_messages`, apply, advance),
//! and delivers messages in FIFO order. Links can be cut (one way or both), nodes crashed and
//! restarted from their disk, and a filter can drop chosen messages. After every delivery round
//! it checks that no two nodes applied different entries at the same index (Raft §5.4.3).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Prng, Term};
use chorus_raft::{
    Config, DurableState, Entry, EntryPayload, Message, Proposed, RawNode, ReadId, ReadState, Role,
};

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
            EntryPayload::NoOp => None,
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
            network.read_states.insert(*voter, Vec::new());
            network.rejected_reads.insert(*voter, Vec::new());
        }
        network
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
    }

    /// The node restarts from its disk with a fresh state machine.
    pub fn restart(&mut self, node: NodeId) {
        self.crashed.remove(&node);
        let config = self.configs[&node].clone();
        let durable = self.disks[&node].clone();
        let fresh = RawNode::restart(config, durable).expect("the disk holds a valid state");
        self.nodes.insert(node, fresh);
        self.applied.insert(node, Vec::new());
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
            let raft = self.nodes.get_mut(&node).expect("known node");
            if !raft.has_ready() {
                break;
            }
            let ready = raft.ready();
            assert!(
                !raft.has_ready(),
                "no second Ready while one is outstanding"
            );
            // 1. Send what needs no durability.
            for (to, message) in ready.messages {
                self.send(node, to, message);
            }
            // 2. Persist.
            let disk = self.disks.get_mut(&node).expect("known node");
            if let Some(hard_state) = ready.hard_state {
                assert!(
                    hard_state.term >= disk.hard_state.term,
                    "S5: term never goes back"
                );
                disk.hard_state = hard_state;
            }
            if let Some(first) = ready.entries.first() {
                let keep = (first.index.0 - 1) as usize;
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
            for entry in ready.committed_entries {
                assert_eq!(
                    entry.index.0,
                    applied.len() as u64 + 1,
                    "S4: applied in order, without gaps"
                );
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
            // 5. Advance.
            self.nodes.get_mut(&node).expect("known node").advance();
        }
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
