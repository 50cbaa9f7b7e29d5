//! Throughput of the pure Raft core: committed entries per second, with and without batching.
//!
//! Three [`RawNode`]s run in memory with no disk, driven exactly as the crate docs require:
//! each Ready's `messages` go out, persisting costs nothing, `persisted_messages` go out, the
//! committed entries are counted as applied, and the node advances. Messages travel through one
//! FIFO queue, and a node is driven right after every input it takes, so the numbers measure
//! the core's own work (appending, replicating, acknowledging, committing) and little else.
//!
//! - `raft_core/commit/unbatched`: the leader takes one 100-byte command and the cluster runs
//!   until the leader has applied it, then the next one, one at a time.
//! - `raft_core/commit/batched/{B}`: the leader takes `B` commands back to back (they leave in
//!   one Ready, so in one AppendEntries per follower), and the cluster runs until the leader has
//!   applied all of them.
//!
//! Every iteration commits [`ENTRIES_PER_ITERATION`] commands on a freshly elected cluster;
//! building and electing it is not timed, and neither is dropping it, so the log of a long run
//! never grows without bound.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::NodeId;
use chorus_raft::{Config, EntryPayload, Message, RawNode, Role};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

/// Commands committed per timed iteration; a multiple of every batch size below.
const ENTRIES_PER_ITERATION: u64 = 1024;

/// The batch sizes of the batched variants.
const BATCH_SIZES: [u64; 3] = [16, 64, 256];

/// Nodes in the cluster.
const CLUSTER_SIZE: u64 = 3;

/// The position of the leader in [`Cluster::nodes`] (node id 1).
const LEADER: usize = 0;

/// The command every proposal carries: 100 opaque bytes. A static buffer, so that cloning it
/// into a proposal costs the driver no allocation.
static COMMAND_BYTES: [u8; 100] = [0x5a; 100];

/// Messages the queue holds before it must grow; more than a few batches ever have in flight.
const QUEUE_CAPACITY: usize = 256;

/// A message on its way: (from, to, message).
type Envelope = (NodeId, NodeId, Message);

/// Three in-memory nodes, a FIFO network between them and a count of what each applied.
struct Cluster {
    /// Node `i` has id `i + 1`.
    nodes: Vec<RawNode>,
    /// Messages sent and not yet delivered, in FIFO order; reused across commits.
    queue: VecDeque<Envelope>,
    /// Commands (not no-ops) each node applied.
    applied_commands: Vec<u64>,
    /// The command proposed each time.
    command: Bytes,
}

impl Cluster {
    /// A fresh cluster in which node 1 has been elected and the network is quiet again (its
    /// term's no-op is committed everywhere).
    fn elected() -> Cluster {
        let voters: Vec<NodeId> = (1..=CLUSTER_SIZE).map(NodeId).collect();
        let nodes = voters
            .iter()
            .map(|&id| {
                let mut config = Config::new(id, voters.clone());
                config.seed = 42;
                RawNode::new(config).expect("a valid benchmark configuration")
            })
            .collect();
        let mut cluster = Cluster {
            nodes,
            queue: VecDeque::with_capacity(QUEUE_CAPACITY),
            applied_commands: vec![0; voters.len()],
            command: Bytes::from_static(&COMMAND_BYTES),
        };
        cluster.nodes[LEADER].campaign();
        cluster.drive(LEADER);
        while let Some(envelope) = cluster.queue.pop_front() {
            cluster.deliver(envelope);
        }
        assert_eq!(
            cluster.nodes[LEADER].status().role,
            Role::Leader,
            "node 1 wins an election it starts alone"
        );
        cluster
    }

    /// Hands every available Ready of node `index` in the order the driving contract requires.
    fn drive(&mut self, index: usize) {
        let from = self.nodes[index].status().id;
        while self.nodes[index].has_ready() {
            let ready = self.nodes[index].ready();
            // 1. Send what needs no durability.
            for (to, message) in ready.messages {
                self.queue.push_back((from, to, message));
            }
            // 2. Persist: there is no disk, so the state is "durable" at once.
            black_box((&ready.hard_state, &ready.entries));
            // 3. Send what promises durable state.
            for (to, message) in ready.persisted_messages {
                self.queue.push_back((from, to, message));
            }
            // 4. Apply: count the commands, in order.
            for entry in &ready.committed_entries {
                if let EntryPayload::Command(command) = &entry.payload {
                    black_box(command);
                    self.applied_commands[index] += 1;
                }
            }
            // 5. Advance.
            self.nodes[index].advance();
        }
    }

    /// Steps one message into its recipient, then drives the recipient.
    fn deliver(&mut self, (from, to, message): Envelope) {
        let index = usize::try_from(to.0 - 1).expect("node ids are small");
        self.nodes[index]
            .step(from, message)
            .expect("honest messages are accepted");
        self.drive(index);
    }

    /// Proposes `batch` commands on the leader back to back, then delivers messages until the
    /// leader has applied all of them. Messages still in flight then (acks from the slower
    /// follower, the commit index on its way to followers) stay queued for the next batch.
    fn commit(&mut self, batch: u64) {
        let target = self.applied_commands[LEADER] + batch;
        for _ in 0..batch {
            self.nodes[LEADER]
                .propose(self.command.clone())
                .expect("the leader takes the proposal");
        }
        self.drive(LEADER);
        while self.applied_commands[LEADER] < target {
            let envelope = self
                .queue
                .pop_front()
                .expect("the network went quiet before the batch committed");
            self.deliver(envelope);
        }
    }
}

/// Commits [`ENTRIES_PER_ITERATION`] commands in batches of `batch` on a fresh cluster.
fn bench_commit(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("raft_core/commit");
    group.throughput(Throughput::Elements(ENTRIES_PER_ITERATION));

    let mut run = |id: BenchmarkId, batch: u64| {
        assert_eq!(ENTRIES_PER_ITERATION % batch, 0, "whole batches only");
        group.bench_function(id, |bencher| {
            bencher.iter_batched(
                Cluster::elected,
                |mut cluster| {
                    for _ in 0..ENTRIES_PER_ITERATION / batch {
                        cluster.commit(batch);
                    }
                    // Returned so that dropping the cluster falls outside the timing.
                    cluster
                },
                BatchSize::PerIteration,
            );
        });
    };
    run(BenchmarkId::from_parameter("unbatched"), 1);
    for batch in BATCH_SIZES {
        run(BenchmarkId::new("batched", batch), batch);
    }
    group.finish();
}

/// Short runs by default: the benchmark shares small machines with builds and tests.
fn config() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = bench_commit
}
criterion_main!(benches);
