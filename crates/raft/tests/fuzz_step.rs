//! Property tests proving that [`RawNode::step`] survives foreign input.
//!
//! The crate docs promise that "no input from the network makes the core panic" and that a
//! refused message "leaves the node unchanged". These properties build 3- and 5-node clusters,
//! drive them into varied states (fresh; after an election; with committed entries; restarted
//! from a [`DurableState`] holding entries, with and without a leader elected since), then
//! interleave forged messages of every variant (terms and indexes from 0 to `u64::MAX`,
//! entries with arbitrary indexes, terms and payloads, senders from the cluster, unknown ones
//! and the receiver itself) with ticks, proposals, reads, honest message delivery, Ready and
//! advance cycles and restarts. After every action they check, on every node:
//!
//! - nothing panicked;
//! - a `step` that returned `Err` left the node exactly as it was (`status`, `hard_state`,
//!   `has_ready`, and its whole `Debug` rendering);
//! - within one incarnation, the term and the commit index never decrease;
//! - committed entries are handed out contiguously from index 1 after each (re)start, and an
//!   entry once handed out as committed never changes: not in later Readies, not in the log,
//!   not after a restart from the disk the Readies were persisted to;
//! - the Readies never ask the driver to write a log with a gap.
//!
//! Snapshots are in play too: the nodes snapshot and compact every few entries, leaders are
//! answered with chunks when they ask, forged InstallSnapshot chunks and responses of every
//! shape arrive (checksums right and wrong, any offset and size), and one setup restarts from
//! a snapshot plus a log tail. Compacted entries are no longer checked against the log; an
//! install moves the next index to apply past the snapshot.
//!
//! Forged messages may legitimately make different nodes disagree (a forger can claim to lead
//! any term), so cross-node safety is the simulator's job; here only what one node can
//! guarantee on its own is checked.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{
    AppendEntries, AppendEntriesResponse, Config, DurableState, Entry, EntryPayload, HardState,
    InstallSnapshot, InstallSnapshotResponse, Membership, Message, Propose, RawNode, ReadId,
    ReadIndexRequest, ReadIndexResponse, RequestVote, RequestVoteResponse, SnapshotMeta, Status,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Honest messages waiting for delivery are capped, like a network buffer.
const QUEUE_MAX: usize = 512;

// ----- Generators ------------------------------------------------------------------------------

/// Terms near the ones a small cluster really uses, plus the extremes.
fn term() -> impl Strategy<Value = Term> {
    prop_oneof![
        8 => 0u64..6,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
    .prop_map(Term)
}

/// Indexes near the ones a small cluster really uses, plus the extremes.
fn index() -> impl Strategy<Value = LogIndex> {
    prop_oneof![
        8 => 0u64..12,
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => any::<u64>(),
    ]
    .prop_map(LogIndex)
}

fn payload_bytes() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..6).prop_map(Bytes::from)
}

fn read_ids() -> impl Strategy<Value = Vec<ReadId>> {
    // Up to a little more than `reads_pending_max` of [`config`], to hit that bound.
    proptest::collection::vec((0u64..16).prop_map(ReadId), 0..11)
}

fn read_round() -> impl Strategy<Value = u64> {
    prop_oneof![4 => 0u64..4, 1 => any::<u64>()]
}

fn entry() -> impl Strategy<Value = Entry> {
    (
        term(),
        index(),
        prop_oneof![
            Just(EntryPayload::NoOp),
            payload_bytes().prop_map(EntryPayload::Command)
        ],
    )
        .prop_map(|(term, index, payload)| Entry {
            term,
            index,
            payload,
        })
}

/// An AppendEntries, either wholly arbitrary or shaped to pass the self-consistency checks
/// (contiguous entries, non-decreasing terms no newer than the message's), so that the deeper
/// checks against the receiver's log are reached too.
fn append_entries() -> impl Strategy<Value = AppendEntries> {
    (
        term(),
        index(),
        term(),
        proptest::collection::vec(entry(), 0..5),
        index(),
        read_round(),
        any::<bool>(),
    )
        .prop_map(
            |(
                term,
                prev_log_index,
                prev_log_term,
                mut entries,
                leader_commit,
                read_round,
                shaped,
            )| {
                let mut prev_log_term = prev_log_term;
                if shaped {
                    prev_log_term = if prev_log_index == LogIndex(0) {
                        Term(0)
                    } else {
                        prev_log_term.max(Term(1)).min(term)
                    };
                    let mut floor = prev_log_term.max(Term(1));
                    for (offset, entry) in (1u64..).zip(entries.iter_mut()) {
                        if let Some(index) = prev_log_index.0.checked_add(offset) {
                            entry.index = LogIndex(index);
                        }
                        entry.term = entry.term.clamp(floor, term.max(floor));
                        floor = entry.term;
                    }
                }
                AppendEntries {
                    term,
                    prev_log_index,
                    prev_log_term,
                    entries,
                    leader_commit,
                    read_round,
                }
            },
        )
}

fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (index(), term()).prop_map(|(index, term)| SnapshotMeta { index, term })
}

/// An InstallSnapshot chunk, with a right checksum most of the time, offsets near the start
/// or anywhere, and sizes around the configured maximum.
fn install_snapshot() -> impl Strategy<Value = InstallSnapshot> {
    (
        term(),
        snapshot_meta(),
        prop_oneof![4 => 0u64..24, 1 => any::<u64>()],
        proptest::collection::vec(any::<u8>(), 0..12),
        any::<bool>(),
        prop_oneof![4 => Just(None), 1 => any::<u32>().prop_map(Some)],
    )
        .prop_map(|(term, meta, offset, data, done, crc)| {
            let membership = Membership::with_voters([NodeId(1), NodeId(2), NodeId(3)]);
            let mut chunk =
                InstallSnapshot::new(term, meta, offset, Bytes::from(data), done, membership);
            if let Some(crc) = crc {
                chunk.crc32c = crc;
            }
            chunk
        })
}

/// Any message, of every variant.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        2 => install_snapshot().prop_map(Message::InstallSnapshot),
        1 => (term(), snapshot_meta(), prop_oneof![3 => 0u64..24, 1 => any::<u64>()], any::<bool>())
            .prop_map(|(term, meta, next_offset, installed)| {
                Message::InstallSnapshotResponse(InstallSnapshotResponse {
                    term,
                    meta,
                    next_offset,
                    installed,
                })
            }),
        1 => (term(), index(), term(), any::<bool>()).prop_map(
            |(term, last_log_index, last_log_term, pre_vote)| {
                Message::RequestVote(RequestVote {
                    term,
                    last_log_index,
                    last_log_term,
                    pre_vote,
                    transfer: !pre_vote && last_log_index.0 % 3 == 0,
                })
            }
        ),
        1 => (term(), any::<bool>(), any::<bool>()).prop_map(|(term, granted, pre_vote)| {
            Message::RequestVoteResponse(RequestVoteResponse {
                term,
                granted,
                pre_vote,
            })
        }),
        3 => append_entries().prop_map(Message::AppendEntries),
        2 => (
            term(),
            any::<bool>(),
            index(),
            index(),
            proptest::option::of(term()),
            read_round()
        )
            .prop_map(
                |(term, success, match_index, conflict_index, conflict_term, read_round)| {
                    Message::AppendEntriesResponse(AppendEntriesResponse {
                        term,
                        success,
                        match_index,
                        conflict_index,
                        conflict_term,
                        read_round,
                    })
                }
            ),
        1 => (term(), proptest::collection::vec(payload_bytes(), 0..11))
            .prop_map(|(term, commands)| Message::Propose(Propose { term, commands })),
        1 => (term(), read_ids())
            .prop_map(|(term, ids)| Message::ReadIndex(ReadIndexRequest { term, ids })),
        1 => (term(), read_ids(), proptest::option::of(index())).prop_map(|(term, ids, index)| {
            Message::ReadIndexResponse(ReadIndexResponse { term, ids, index })
        }),
    ]
}

/// Who a forged message claims to come from.
#[derive(Clone, Debug)]
enum Sender {
    /// A cluster member, by position (the receiver itself included).
    Member(usize),
    /// A node outside the cluster.
    Unknown(u64),
}

fn sender() -> impl Strategy<Value = Sender> {
    prop_oneof![
        4 => (0usize..8).prop_map(Sender::Member),
        1 => prop_oneof![Just(0u64), Just(99), Just(u64::MAX)].prop_map(Sender::Unknown),
    ]
}

/// One thing that happens to the cluster. Node positions are taken modulo the cluster size.
#[derive(Clone, Debug)]
enum Action {
    /// A forged message arrives.
    Inject {
        to: usize,
        from: Sender,
        message: Message,
    },
    Tick {
        node: usize,
        ticks: u8,
    },
    Propose {
        node: usize,
        command: Bytes,
    },
    ReadIndex {
        node: usize,
        id: u64,
    },
    /// Takes a Ready (if one is available), persists it and sends its messages.
    Ready {
        node: usize,
    },
    /// Advances an outstanding Ready, if any.
    Advance {
        node: usize,
    },
    /// Delivers up to `count` honest messages in FIFO order.
    Deliver {
        count: u8,
    },
    /// Crashes a node and restarts it from its disk.
    Restart {
        node: usize,
    },
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        8 => (0usize..8, sender(), message())
            .prop_map(|(to, from, message)| Action::Inject { to, from, message }),
        2 => (0usize..8, 1u8..25).prop_map(|(node, ticks)| Action::Tick { node, ticks }),
        1 => (0usize..8, payload_bytes())
            .prop_map(|(node, command)| Action::Propose { node, command }),
        1 => (0usize..8, 0u64..16).prop_map(|(node, id)| Action::ReadIndex { node, id }),
        3 => (0usize..8).prop_map(|node| Action::Ready { node }),
        3 => (0usize..8).prop_map(|node| Action::Advance { node }),
        3 => (1u8..16).prop_map(|count| Action::Deliver { count }),
        1 => (0usize..8).prop_map(|node| Action::Restart { node }),
    ]
}

/// The state the cluster is driven into before the forged messages start.
#[derive(Clone, Copy, Debug)]
enum Setup {
    Fresh,
    Elected,
    Committed,
    Restarted,
    RestartedElected,
    /// Restarted from a snapshot at index 2 plus a log tail from index 2.
    RestartedFromSnapshot,
}

fn setup() -> impl Strategy<Value = Setup> {
    prop_oneof![
        Just(Setup::RestartedFromSnapshot),
        Just(Setup::Fresh),
        Just(Setup::Elected),
        Just(Setup::Committed),
        Just(Setup::Restarted),
        Just(Setup::RestartedElected),
    ]
}

// ----- The cluster -----------------------------------------------------------------------------

/// Small bounds, so that forged messages reach them.
fn config(id: NodeId, voters: &[NodeId]) -> Config {
    let mut config = Config::new(id, voters.to_vec());
    config.inflight_max = 2;
    config.append_entries_max = 3;
    config.proposals_pending_max = 8;
    config.reads_pending_max = 8;
    config.snapshot_threshold_entries = 3;
    config.compaction_tail_entries = 1;
    config.snapshot_chunk_bytes_max = 8;
    config
}

struct Replica {
    node: RawNode,
    config: Config,
    /// What the Readies taken so far asked to persist.
    disk: DurableState,
    outstanding: bool,
    /// The next index expected in `committed_entries` in this incarnation.
    next_to_apply: LogIndex,
    /// Every entry ever handed out as committed, across restarts.
    committed: BTreeMap<LogIndex, Entry>,
    /// The term and commit index last seen in this incarnation.
    term_floor: Term,
    commit_floor: LogIndex,
}

impl Replica {
    fn new(config: Config, disk: DurableState) -> Replica {
        let node = RawNode::restart(config.clone(), disk.clone()).expect("valid setup");
        let status = node.status();
        Replica {
            node,
            config,
            disk,
            outstanding: false,
            next_to_apply: status.applied.next(),
            committed: BTreeMap::new(),
            term_floor: status.term,
            commit_floor: status.commit,
        }
    }
}

struct Cluster {
    ids: Vec<NodeId>,
    replicas: Vec<Replica>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
}

/// Everything a refused message must leave as it was.
#[derive(PartialEq, Eq, Debug)]
struct Fingerprint {
    status: Status,
    hard_state: HardState,
    has_ready: bool,
    debug: String,
}

fn fingerprint(node: &RawNode) -> Fingerprint {
    let mut debug = String::new();
    write!(debug, "{node:?}").expect("writing to a String cannot fail");
    Fingerprint {
        status: node.status(),
        hard_state: node.hard_state(),
        has_ready: node.has_ready(),
        debug,
    }
}

fn log_with_terms(terms: &[u64]) -> Vec<Entry> {
    (1u64..)
        .zip(terms)
        .map(|(index, &term)| Entry {
            term: Term(term),
            index: LogIndex(index),
            payload: EntryPayload::Command(Bytes::from(format!("e{index}"))),
        })
        .collect()
}

impl Cluster {
    fn new(size: u64, setup: Setup) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let restarted = matches!(
            setup,
            Setup::Restarted | Setup::RestartedElected | Setup::RestartedFromSnapshot
        );
        let from_snapshot = matches!(setup, Setup::RestartedFromSnapshot);
        let replicas = ids
            .iter()
            .enumerate()
            .map(|(position, &id)| {
                let disk = if restarted {
                    // Every node holds a committed prefix; some also hold an uncommitted tail.
                    let terms: &[u64] = if position % 2 == 0 {
                        &[1, 1, 2, 2, 3]
                    } else {
                        &[1, 1, 2]
                    };
                    let mut entries = log_with_terms(terms);
                    let snapshot = from_snapshot.then_some(SnapshotMeta {
                        index: LogIndex(2),
                        term: Term(1),
                    });
                    if from_snapshot {
                        entries.remove(0);
                    }
                    DurableState {
                        snapshot,
                        hard_state: HardState {
                            term: Term(3),
                            vote: None,
                            commit: LogIndex(2),
                            repairing: None,
                        },
                        entries,
                        membership: None,
                        log_end_before_damage: None,
                    }
                } else {
                    DurableState::default()
                };
                Replica::new(config(id, &ids), disk)
            })
            .collect();
        let mut cluster = Cluster {
            ids,
            replicas,
            queue: VecDeque::new(),
        };
        match setup {
            Setup::Fresh | Setup::Restarted | Setup::RestartedFromSnapshot => {}
            Setup::Elected | Setup::RestartedElected => {
                cluster.replicas[0].node.campaign();
                cluster.settle();
            }
            Setup::Committed => {
                cluster.replicas[0].node.campaign();
                cluster.settle();
                for number in 0..3 {
                    cluster.replicas[0]
                        .node
                        .propose(Bytes::from(format!("c{number}")))
                        .expect("the first node leads");
                }
                cluster.settle();
            }
        }
        cluster
    }

    /// Runs Ready cycles and delivers every message until the cluster is quiet.
    fn settle(&mut self) {
        for _ in 0..200 {
            let mut busy = false;
            for position in 0..self.replicas.len() {
                if self.replicas[position].node.has_ready() {
                    self.take_ready(position).expect("honest setup holds");
                    self.advance(position);
                    busy = true;
                }
            }
            while let Some((from, to, message)) = self.queue.pop_front() {
                busy = true;
                let Some(position) = self.position(to) else {
                    continue;
                };
                self.step(position, from, message)
                    .expect("honest setup holds");
            }
            if !busy {
                return;
            }
        }
        panic!("the setup did not settle");
    }

    /// Where node `id` sits; `None` for a stranger (answers to a forged sender go nowhere).
    fn position(&self, id: NodeId) -> Option<usize> {
        self.ids.iter().position(|&known| known == id)
    }

    /// Steps a message into a node and checks that a refusal changed nothing.
    fn step(
        &mut self,
        position: usize,
        from: NodeId,
        message: Message,
    ) -> Result<(), TestCaseError> {
        let replica = &mut self.replicas[position];
        let before = fingerprint(&replica.node);
        let shown = format!("{message:?}");
        if let Err(error) = replica.node.step(from, message) {
            let after = fingerprint(&replica.node);
            prop_assert_eq!(
                before,
                after,
                "step({}, {}) returned {} but changed the node",
                from,
                shown,
                error
            );
        }
        self.check(position)
    }

    /// Takes a Ready if one is available, persists it and sends its messages.
    fn take_ready(&mut self, position: usize) -> Result<(), TestCaseError> {
        let replica = &mut self.replicas[position];
        if replica.outstanding || !replica.node.has_ready() {
            return Ok(());
        }
        let ready = replica.node.ready();
        replica.outstanding = true;
        let id = replica.config.id;

        if let Some(hard_state) = ready.hard_state {
            prop_assert!(
                hard_state.term >= replica.disk.hard_state.term,
                "the durable term went back from {} to {}",
                replica.disk.hard_state.term,
                hard_state.term
            );
            replica.disk.hard_state = hard_state;
        }
        if let Some(meta) = ready.snapshot {
            // Install: keep the log after the snapshot only if it holds its last entry.
            let matches = replica
                .disk
                .entries
                .iter()
                .any(|entry| entry.index == meta.index && entry.term == meta.term);
            if matches {
                replica
                    .disk
                    .entries
                    .retain(|entry| entry.index > meta.index);
            } else {
                replica.disk.entries.clear();
            }
            replica.disk.snapshot = Some(meta);
            replica.next_to_apply = meta.index.next();
        }
        if let Some(first) = ready.entries.first() {
            let disk_first = replica.disk.entries.first().map_or(
                replica.disk.snapshot.map_or(1, |meta| meta.index.0 + 1),
                |entry| entry.index.0,
            );
            prop_assert!(
                first.index.0 >= disk_first,
                "a Ready asks to write index {} below the disk's first {}",
                first.index,
                disk_first
            );
            let keep = usize::try_from(first.index.0 - disk_first).expect("small log");
            prop_assert!(
                keep <= replica.disk.entries.len(),
                "a Ready asks to write index {} after a disk log ending at {}",
                first.index,
                replica.disk.entries.len()
            );
            replica.disk.entries.truncate(keep);
            replica.disk.entries.extend(ready.entries.iter().cloned());
        }
        // The leader's driver answers chunk requests with made-up bytes.
        for request in &ready.snapshot_chunk_requests {
            let data = Bytes::from(vec![7u8; 5]);
            let _ = replica.node.send_snapshot_chunk(
                request.to,
                request.meta,
                request.offset,
                data,
                request.offset >= 10,
            );
        }
        if let Some(meta) = ready.snapshot_due {
            if replica.node.on_snapshot_taken(meta).is_ok() && replica.node.snapshot() == meta {
                replica.disk.snapshot = Some(meta);
                let first = replica.node.first_index();
                replica.disk.entries.retain(|entry| entry.index >= first);
            } else {
                replica.node.on_snapshot_failed();
            }
        }
        for (to, message) in ready.messages.into_iter().chain(ready.persisted_messages) {
            if self.queue.len() < QUEUE_MAX {
                self.queue.push_back((id, to, message));
            }
        }
        for entry in ready.committed_entries {
            prop_assert_eq!(
                entry.index,
                replica.next_to_apply,
                "committed entries are not contiguous"
            );
            replica.next_to_apply = entry.index.next();
            if let Some(earlier) = replica.committed.get(&entry.index) {
                prop_assert_eq!(earlier, &entry, "a committed entry changed");
            } else {
                replica.committed.insert(entry.index, entry);
            }
        }
        self.check(position)
    }

    fn advance(&mut self, position: usize) {
        let replica = &mut self.replicas[position];
        if replica.outstanding {
            replica.node.advance();
            replica.outstanding = false;
        }
    }

    fn restart(&mut self, position: usize) -> Result<(), TestCaseError> {
        let replica = &mut self.replicas[position];
        let node = RawNode::restart(replica.config.clone(), replica.disk.clone());
        let node = match node {
            Ok(node) => node,
            Err(error) => {
                return Err(TestCaseError::fail(format!(
                    "the disk written from the Readies does not restart: {error}"
                )));
            }
        };
        let status = node.status();
        prop_assert!(status.term >= replica.disk.hard_state.term);
        replica.node = node;
        replica.outstanding = false;
        replica.next_to_apply = status.applied.next();
        replica.term_floor = status.term;
        replica.commit_floor = status.commit;
        self.check(position)
    }

    /// The invariants one node keeps on its own.
    fn check(&mut self, position: usize) -> Result<(), TestCaseError> {
        let replica = &mut self.replicas[position];
        let status = replica.node.status();
        prop_assert!(
            status.term >= replica.term_floor,
            "term went back from {} to {}",
            replica.term_floor,
            status.term
        );
        prop_assert!(
            status.commit >= replica.commit_floor,
            "commit went back from {} to {}",
            replica.commit_floor,
            status.commit
        );
        prop_assert!(status.applied <= status.commit && status.commit <= status.last_index);
        prop_assert!(status.persisted_index <= status.last_index);
        replica.term_floor = status.term;
        replica.commit_floor = status.commit;
        let first = replica.node.first_index();
        for (&index, entry) in replica.committed.range(first..) {
            prop_assert_eq!(
                replica.node.entry(index),
                Some(entry),
                "the log lost or changed committed entry {}",
                index
            );
        }
        Ok(())
    }

    fn run(&mut self, action: Action) -> Result<(), TestCaseError> {
        let size = self.replicas.len();
        match action {
            Action::Inject { to, from, message } => {
                let from = match from {
                    Sender::Member(position) => self.ids[position % size],
                    Sender::Unknown(id) => NodeId(id),
                };
                self.step(to % size, from, message)
            }
            Action::Tick { node, ticks } => {
                for _ in 0..ticks {
                    self.replicas[node % size].node.tick();
                    self.check(node % size)?;
                }
                Ok(())
            }
            Action::Propose { node, command } => {
                // Refusals are fine; only panics and broken invariants are not.
                let _ = self.replicas[node % size].node.propose(command);
                self.check(node % size)
            }
            Action::ReadIndex { node, id } => {
                let _ = self.replicas[node % size].node.read_index(ReadId(id));
                self.check(node % size)
            }
            Action::Ready { node } => self.take_ready(node % size),
            Action::Advance { node } => {
                self.advance(node % size);
                self.check(node % size)
            }
            Action::Deliver { count } => {
                for _ in 0..count {
                    let Some((from, to, message)) = self.queue.pop_front() else {
                        break;
                    };
                    if let Some(position) = self.position(to) {
                        self.step(position, from, message)?;
                    }
                }
                Ok(())
            }
            Action::Restart { node } => self.restart(node % size),
        }
    }
}

fn run_case(size: u64, setup: Setup, actions: Vec<Action>) -> Result<(), TestCaseError> {
    let mut cluster = Cluster::new(size, setup);
    for action in actions {
        cluster.run(action)?;
    }
    // Whatever the forger did, the honest driver can still drain every node.
    for position in 0..cluster.replicas.len() {
        cluster.advance(position);
        cluster.take_ready(position)?;
        cluster.advance(position);
    }
    Ok(())
}

fn proptest_config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are kept as named regression tests below, not in files beside the source.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(proptest_config(256))]

    /// Proves a 3-node cluster keeps its per-node invariants under forged messages.
    #[test]
    fn three_nodes_survive_arbitrary_messages(
        setup in setup(),
        actions in proptest::collection::vec(action(), 1..60),
    ) {
        run_case(3, setup, actions)?;
    }
}

proptest! {
    #![proptest_config(proptest_config(128))]

    /// Proves a 5-node cluster keeps its per-node invariants under forged messages.
    #[test]
    fn five_nodes_survive_arbitrary_messages(
        setup in setup(),
        actions in proptest::collection::vec(action(), 1..60),
    ) {
        run_case(5, setup, actions)?;
    }
}

proptest! {
    #![proptest_config(proptest_config(512))]

    /// Proves one forged message into any settled state is either refused without a trace or
    /// accepted without breaking an invariant.
    #[test]
    fn one_message_into_any_state(
        setup in setup(),
        to in 0usize..3,
        from in sender(),
        message in message(),
    ) {
        run_case(3, setup, vec![
            Action::Inject { to, from, message },
            Action::Ready { node: to },
            Action::Advance { node: to },
        ])?;
    }
}

// ----- Regressions found by the properties above -------------------------------------------------

/// Proves a forged message carrying term `u64::MAX` cannot crash a node.
///
/// Found by `three_nodes_survive_arbitrary_messages` (minimised). Any message whose term is
/// above the node's, here an empty ReadIndex request, makes the node adopt the term
/// (`become_follower`); its next election timeout then calls `Term::next()` on `u64::MAX`
/// (`become_pre_candidate`, or `become_candidate` without PreVote), which panics with
/// "invariant: term does not overflow". One forged packet thus crashes any node it reaches,
/// breaking the crate's promise that no input from the network makes the core panic.
#[test]
fn regression_a_forged_term_of_u64_max_does_not_crash_the_next_election() {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut node = RawNode::new(config(ids[0], &ids)).expect("valid config");
    let forged = Message::ReadIndex(ReadIndexRequest {
        term: Term(u64::MAX),
        ids: Vec::new(),
    });
    // Refusing the message is as good as surviving it.
    let _ = node.step(ids[1], forged);
    for _ in 0..2 * node.config().election_timeout_ticks {
        node.tick();
    }
}

/// Proves a forged snapshot at the largest index cannot crash the node that receives it, nor
/// its next Ready, election or proposal.
#[test]
fn regression_a_forged_snapshot_at_the_last_index_is_refused() {
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let mut node = RawNode::new(config(ids[0], &ids)).expect("valid config");
    for index in [u64::MAX, u64::MAX - 1, 1 << 62] {
        let forged = Message::InstallSnapshot(InstallSnapshot::new(
            Term(5),
            SnapshotMeta {
                index: LogIndex(index),
                term: Term(5),
            },
            0,
            Bytes::from_static(b"x"),
            true,
            Membership::with_voters(ids),
        ));
        let _ = node.step(ids[1], forged);
        if node.has_ready() {
            let _ = node.ready();
            node.advance();
        }
    }
    node.campaign();
    let _ = node.propose(Bytes::from_static(b"c"));
    for _ in 0..2 * node.config().election_timeout_ticks {
        node.tick();
    }
}
