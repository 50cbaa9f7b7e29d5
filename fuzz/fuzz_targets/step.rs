//! Fuzzes `RawNode::step` with arbitrary messages on a small live cluster.
//!
//! The input is decoded (with `arbitrary::Unstructured`) into a cluster size (3 or 5), a
//! starting state (fresh, elected, with committed entries) and a sequence of actions: forged
//! messages of every variant from members, unknown nodes or the receiver itself, ticks,
//! proposals, reads, honest deliveries, Ready/advance cycles and restarts from the persisted
//! disk. It checks what one node guarantees on its own: no panic; a refused message changes
//! nothing; term and commit never decrease within an incarnation; committed entries are handed
//! out contiguously and never change, in later Readies, in the log (while not compacted), or
//! after a restart. Nodes snapshot and compact every few entries, leaders' chunk requests are
//! answered, and forged InstallSnapshot chunks and responses of every shape arrive.

#![no_main]

use std::collections::{BTreeMap, VecDeque};

use arbitrary::{Result, Unstructured};
use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{
    AppendEntries, AppendEntriesResponse, Config, DurableState, Entry, EntryPayload,
    InstallSnapshot, InstallSnapshotResponse, Message, Propose, RawNode, ReadId, ReadIndexRequest,
    ReadIndexResponse, RequestVote, RequestVoteResponse, SnapshotMeta,
};
use libfuzzer_sys::fuzz_target;

const QUEUE_MAX: usize = 256;

fn term(u: &mut Unstructured) -> Result<Term> {
    Ok(Term(match u.int_in_range(0..=9u8)? {
        0..=6 => u.int_in_range(0..=5u64)?,
        7 => u64::MAX - u64::from(u.int_in_range(0..=1u8)?),
        _ => u.arbitrary()?,
    }))
}

fn index(u: &mut Unstructured) -> Result<LogIndex> {
    Ok(LogIndex(match u.int_in_range(0..=9u8)? {
        0..=6 => u.int_in_range(0..=12u64)?,
        7 => u64::MAX - u64::from(u.int_in_range(0..=1u8)?),
        _ => u.arbitrary()?,
    }))
}

fn payload(u: &mut Unstructured) -> Result<Bytes> {
    let len = u.int_in_range(0..=5usize)?;
    Ok(Bytes::copy_from_slice(u.bytes(len.min(u.len()))?))
}

fn read_ids(u: &mut Unstructured) -> Result<Vec<ReadId>> {
    let len = u.int_in_range(0..=10usize)?;
    (0..len)
        .map(|_| Ok(ReadId(u.int_in_range(0..=15u64)?)))
        .collect()
}

fn entry(u: &mut Unstructured) -> Result<Entry> {
    Ok(Entry {
        term: term(u)?,
        index: index(u)?,
        payload: if u.arbitrary()? {
            EntryPayload::NoOp
        } else {
            EntryPayload::Command(payload(u)?)
        },
    })
}

fn append_entries(u: &mut Unstructured) -> Result<AppendEntries> {
    let term = term(u)?;
    let prev_log_index = index(u)?;
    let mut prev_log_term = self::term(u)?;
    let count = u.int_in_range(0..=4usize)?;
    let mut entries = (0..count).map(|_| entry(u)).collect::<Result<Vec<_>>>()?;
    // Half the time, shape the message to pass the self-consistency checks so that the checks
    // against the receiver's log are reached.
    if u.arbitrary()? {
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
    Ok(AppendEntries {
        term,
        prev_log_index,
        prev_log_term,
        entries,
        leader_commit: index(u)?,
        read_round: u.int_in_range(0..=4u64)?,
    })
}

fn message(u: &mut Unstructured) -> Result<Message> {
    Ok(match u.int_in_range(0..=11u8)? {
        10 => {
            let mut chunk = InstallSnapshot::new(
                term(u)?,
                SnapshotMeta {
                    index: index(u)?,
                    term: term(u)?,
                },
                if u.arbitrary()? {
                    u.int_in_range(0..=24u64)?
                } else {
                    u.arbitrary()?
                },
                payload(u)?,
                u.arbitrary()?,
            );
            if u.ratio(1, 5)? {
                chunk.crc32c = u.arbitrary()?;
            }
            Message::InstallSnapshot(chunk)
        }
        11 => Message::InstallSnapshotResponse(InstallSnapshotResponse {
            term: term(u)?,
            meta: SnapshotMeta {
                index: index(u)?,
                term: term(u)?,
            },
            next_offset: u.int_in_range(0..=24u64)?,
            installed: u.arbitrary()?,
        }),
        0 => Message::RequestVote(RequestVote {
            term: term(u)?,
            last_log_index: index(u)?,
            last_log_term: term(u)?,
            pre_vote: u.arbitrary()?,
        }),
        1 => Message::RequestVoteResponse(RequestVoteResponse {
            term: term(u)?,
            granted: u.arbitrary()?,
            pre_vote: u.arbitrary()?,
        }),
        2..=4 => Message::AppendEntries(append_entries(u)?),
        5 | 6 => Message::AppendEntriesResponse(AppendEntriesResponse {
            term: term(u)?,
            success: u.arbitrary()?,
            match_index: index(u)?,
            conflict_index: index(u)?,
            conflict_term: if u.arbitrary()? { Some(term(u)?) } else { None },
            read_round: u.int_in_range(0..=4u64)?,
        }),
        7 => Message::Propose(Propose {
            term: term(u)?,
            commands: {
                let len = u.int_in_range(0..=10usize)?;
                (0..len).map(|_| payload(u)).collect::<Result<_>>()?
            },
        }),
        8 => Message::ReadIndex(ReadIndexRequest {
            term: term(u)?,
            ids: read_ids(u)?,
        }),
        _ => Message::ReadIndexResponse(ReadIndexResponse {
            term: term(u)?,
            ids: read_ids(u)?,
            index: if u.arbitrary()? {
                Some(index(u)?)
            } else {
                None
            },
        }),
    })
}

struct Replica {
    node: RawNode,
    config: Config,
    disk: DurableState,
    outstanding: bool,
    next_to_apply: LogIndex,
    committed: BTreeMap<LogIndex, Entry>,
    term_floor: Term,
    commit_floor: LogIndex,
}

struct Cluster {
    ids: Vec<NodeId>,
    replicas: Vec<Replica>,
    queue: VecDeque<(NodeId, NodeId, Message)>,
}

fn fingerprint(node: &RawNode) -> String {
    format!(
        "{:?} {:?} {} {node:?}",
        node.status(),
        node.hard_state(),
        node.has_ready()
    )
}

impl Cluster {
    fn new(size: u64) -> Cluster {
        let ids: Vec<NodeId> = (1..=size).map(NodeId).collect();
        let replicas = ids
            .iter()
            .map(|&id| {
                let mut config = Config::new(id, ids.clone());
                config.inflight_max = 2;
                config.append_entries_max = 3;
                config.proposals_pending_max = 8;
                config.reads_pending_max = 8;
                config.snapshot_threshold_entries = 3;
                config.compaction_tail_entries = 1;
                config.snapshot_chunk_bytes_max = 4;
                let node = RawNode::new(config.clone()).expect("valid config");
                Replica {
                    node,
                    config,
                    disk: DurableState::default(),
                    outstanding: false,
                    next_to_apply: LogIndex(1),
                    committed: BTreeMap::new(),
                    term_floor: Term(0),
                    commit_floor: LogIndex(0),
                }
            })
            .collect();
        Cluster {
            ids,
            replicas,
            queue: VecDeque::new(),
        }
    }

    fn settle(&mut self) {
        for _ in 0..200 {
            let mut busy = false;
            for position in 0..self.replicas.len() {
                if self.replicas[position].node.has_ready() {
                    self.take_ready(position);
                    self.advance(position);
                    busy = true;
                }
            }
            while let Some((from, to, message)) = self.queue.pop_front() {
                busy = true;
                self.step(self.position(to), from, message);
            }
            if !busy {
                return;
            }
        }
    }

    fn position(&self, id: NodeId) -> usize {
        self.ids
            .iter()
            .position(|&known| known == id)
            .expect("messages go to members")
    }

    fn step(&mut self, position: usize, from: NodeId, message: Message) {
        let node = &mut self.replicas[position].node;
        let before = fingerprint(node);
        if node.step(from, message).is_err() {
            assert_eq!(
                before,
                fingerprint(node),
                "a refused message changed the node"
            );
        }
        self.check(position);
    }

    fn take_ready(&mut self, position: usize) {
        let replica = &mut self.replicas[position];
        if replica.outstanding || !replica.node.has_ready() {
            return;
        }
        let ready = replica.node.ready();
        replica.outstanding = true;
        let id = replica.config.id;
        if let Some(hard_state) = ready.hard_state {
            assert!(
                hard_state.term >= replica.disk.hard_state.term,
                "durable term went back"
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
            assert!(first.index.0 >= disk_first, "a Ready writes below the disk");
            let keep = usize::try_from(first.index.0 - disk_first).expect("small log");
            assert!(
                keep <= replica.disk.entries.len(),
                "a Ready leaves a gap in the log"
            );
            replica.disk.entries.truncate(keep);
            replica.disk.entries.extend(ready.entries.iter().cloned());
        }
        for request in &ready.snapshot_chunk_requests {
            let _ = replica.node.send_snapshot_chunk(
                request.to,
                request.meta,
                request.offset,
                Bytes::from_static(b"abcd"),
                request.offset >= 8,
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
            assert_eq!(
                entry.index, replica.next_to_apply,
                "committed entries not contiguous"
            );
            replica.next_to_apply = entry.index.next();
            let earlier = replica
                .committed
                .entry(entry.index)
                .or_insert_with(|| entry.clone());
            assert_eq!(*earlier, entry, "a committed entry changed");
        }
        self.check(position);
    }

    fn advance(&mut self, position: usize) {
        let replica = &mut self.replicas[position];
        if replica.outstanding {
            replica.node.advance();
            replica.outstanding = false;
        }
    }

    fn restart(&mut self, position: usize) {
        let replica = &mut self.replicas[position];
        replica.node = RawNode::restart(replica.config.clone(), replica.disk.clone())
            .expect("the disk written from the Readies restarts");
        let status = replica.node.status();
        replica.outstanding = false;
        replica.next_to_apply = status.applied.next();
        replica.term_floor = status.term;
        replica.commit_floor = status.commit;
        self.check(position);
    }

    fn check(&mut self, position: usize) {
        let replica = &mut self.replicas[position];
        let status = replica.node.status();
        assert!(status.term >= replica.term_floor, "term went back");
        assert!(status.commit >= replica.commit_floor, "commit went back");
        assert!(status.applied <= status.commit && status.commit <= status.last_index);
        replica.term_floor = status.term;
        replica.commit_floor = status.commit;
        let first = replica.node.first_index();
        for (&index, entry) in replica.committed.range(first..) {
            assert_eq!(
                replica.node.entry(index),
                Some(entry),
                "committed entry lost"
            );
        }
    }

    fn act(&mut self, u: &mut Unstructured) -> Result<()> {
        let size = self.replicas.len();
        let node = u.choose_index(size)?;
        match u.int_in_range(0..=19u8)? {
            0..=7 => {
                let from = match u.int_in_range(0..=4u8)? {
                    0 => NodeId(*u.choose(&[0, 99, u64::MAX])?),
                    _ => self.ids[u.choose_index(size)?],
                };
                let message = message(u)?;
                self.step(node, from, message);
            }
            8 | 9 => {
                for _ in 0..u.int_in_range(1..=24u8)? {
                    self.replicas[node].node.tick();
                    self.check(node);
                }
            }
            10 => {
                let _ = self.replicas[node].node.propose(payload(u)?);
                self.check(node);
            }
            11 => {
                let _ = self.replicas[node]
                    .node
                    .read_index(ReadId(u.int_in_range(0..=15)?));
                self.check(node);
            }
            12..=13 => self.take_ready(node),
            14..=15 => self.advance(node),
            16..=18 => {
                for _ in 0..u.int_in_range(1..=16u8)? {
                    let Some((from, to, message)) = self.queue.pop_front() else {
                        break;
                    };
                    self.step(self.position(to), from, message);
                }
            }
            _ => self.restart(node),
        }
        Ok(())
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let size = if u.arbitrary()? { 3 } else { 5 };
    let mut cluster = Cluster::new(size);
    match u.int_in_range(0..=2u8)? {
        0 => {}
        setup => {
            cluster.replicas[0].node.campaign();
            cluster.settle();
            if setup == 2 {
                for number in 0..3 {
                    let _ = cluster.replicas[0]
                        .node
                        .propose(Bytes::from(format!("c{number}")));
                }
                cluster.settle();
            }
        }
    }
    while !u.is_empty() {
        cluster.act(u)?;
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
