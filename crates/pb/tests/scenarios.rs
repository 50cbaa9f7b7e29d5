//! Primary-backup scenarios A1–A7 of SCENARIOS.md, driven by a tiny deterministic harness:
//! one view server and three replicas over a FIFO network that can drop messages, cut links
//! (one way or both) and crash nodes. The state machine is `chorus_kv::KvStore`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{Execution, LogIndex, NodeId, Prng};
use chorus_kv::{ClientId, Command, KvConfig, KvStore, Op, Query, Response};
use chorus_pb::{
    Message, PbConfig, PbReady, PbReplica, ProposeError, ReadId, Role, ViewNumber, ViewServer,
    ViewServiceConfig,
};

const SERVICE: NodeId = NodeId(100);
const A: NodeId = NodeId(1);
const B: NodeId = NodeId(2);
const C: NodeId = NodeId(3);
const DEAD_PINGS: u64 = 3;

/// What one replica's client saw.
#[derive(Default)]
struct Outcomes {
    committed: BTreeMap<u64, Response>,
    aborted: BTreeSet<u64>,
    reads: BTreeMap<ReadId, Response>,
    rejected_reads: BTreeSet<ReadId>,
}

struct Cluster {
    service: ViewServer,
    replicas: BTreeMap<NodeId, PbReplica>,
    network: VecDeque<(NodeId, NodeId, Message)>,
    /// Directed links that drop everything.
    cut: BTreeSet<(NodeId, NodeId)>,
    /// Probability that any message is dropped.
    drop_chance: f64,
    /// Probability that a delivered message is delivered again later (behind everything
    /// already on the wire, so duplicates also arrive reordered).
    duplicate_chance: f64,
    prng: Prng,
    outcomes: BTreeMap<NodeId, Outcomes>,
    next_request: u64,
}

fn replica(id: NodeId) -> PbReplica {
    PbReplica::new(
        PbConfig::new(id, SERVICE),
        Box::new(KvStore::new(KvConfig::default())),
    )
    .expect("valid config")
}

fn put(key: &str, value: &str) -> Bytes {
    Command::Unsessioned(Op::Put {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(value.as_bytes()),
    })
    .encode()
}

/// A sessioned request: the key-value store executes one `(client, seq)` at most once and
/// answers a retry from its session cache.
fn request(client: ClientId, seq: u64, op: Op) -> Bytes {
    Command::Request { client, seq, op }.encode()
}

fn append(key: &str, suffix: &str) -> Op {
    Op::Append {
        key: Bytes::copy_from_slice(key.as_bytes()),
        value: Bytes::copy_from_slice(suffix.as_bytes()),
    }
}

fn get(key: &str) -> Bytes {
    Query::Get {
        key: Bytes::copy_from_slice(key.as_bytes()),
    }
    .encode()
}

fn value(text: &str) -> Response {
    Response::Value(Some(Bytes::copy_from_slice(text.as_bytes())))
}

impl Cluster {
    fn new(servers: &[NodeId]) -> Cluster {
        Cluster::with_dead_pings(servers, DEAD_PINGS)
    }

    /// A cluster whose view service declares a server dead after `dead_pings` silent ticks.
    fn with_dead_pings(servers: &[NodeId], dead_pings: u64) -> Cluster {
        let mut cluster = Cluster {
            service: ViewServer::new(ViewServiceConfig {
                dead_pings,
                servers_max: 16,
            })
            .expect("valid view service config"),
            replicas: BTreeMap::new(),
            network: VecDeque::new(),
            cut: BTreeSet::new(),
            drop_chance: 0.0,
            duplicate_chance: 0.0,
            prng: Prng::new(7),
            outcomes: BTreeMap::new(),
            next_request: 0,
        };
        for &server in servers {
            cluster.start(server);
        }
        cluster
    }

    /// Starts (or restarts, empty) a server.
    fn start(&mut self, id: NodeId) {
        self.replicas.insert(id, replica(id));
    }

    fn crash(&mut self, id: NodeId) {
        self.replicas.remove(&id);
    }

    fn partition(&mut self, a: NodeId, b: NodeId) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn collect(&mut self, from: NodeId, ready: PbReady) {
        for (to, message) in ready.messages {
            self.network.push_back((from, to, message));
        }
        let outcomes = self.outcomes.entry(from).or_default();
        for committed in ready.committed {
            let response = Response::decode(&committed.output).expect("kv output decodes");
            outcomes.committed.insert(committed.request, response);
        }
        for aborted in ready.aborted {
            outcomes.aborted.insert(aborted.request);
        }
        for read in ready.reads {
            let response = Response::decode(&read.output).expect("kv output decodes");
            outcomes.reads.insert(read.id, response);
        }
        outcomes.rejected_reads.extend(ready.rejected_reads);
    }

    fn drain_ready(&mut self) {
        if self.service.has_ready() {
            let ready = self.service.ready();
            self.service.advance();
            self.collect(SERVICE, ready);
        }
        let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
        for id in ids {
            let Some(replica) = self.replicas.get_mut(&id) else {
                continue;
            };
            if replica.has_ready() {
                let ready = replica.ready();
                replica.advance();
                self.collect(id, ready);
            }
        }
    }

    /// Delivers messages in FIFO order until the network is quiet.
    fn settle(&mut self) {
        for _ in 0..100_000 {
            self.drain_ready();
            let Some((from, to, message)) = self.network.pop_front() else {
                return;
            };
            if self.cut.contains(&(from, to)) || self.prng.chance(self.drop_chance) {
                continue;
            }
            if self.prng.chance(self.duplicate_chance) {
                self.network.push_back((from, to, message.clone()));
            }
            // Refusals are part of the protocol; the harness only checks nothing panics.
            if to == SERVICE {
                let _refused = self.service.step(from, message);
            } else if let Some(replica) = self.replicas.get_mut(&to) {
                let _refused = replica.step(from, message);
            }
        }
        panic!("the network never became quiet");
    }

    fn tick(&mut self) {
        self.service.tick();
        for replica in self.replicas.values_mut() {
            replica.tick();
        }
        self.settle();
    }

    fn ticks(&mut self, count: usize) {
        for _ in 0..count {
            self.tick();
        }
    }

    /// Ticks until `condition` holds, at most `max` ticks.
    fn tick_until(&mut self, max: usize, condition: impl Fn(&Cluster) -> bool) {
        for _ in 0..max {
            if condition(self) {
                return;
            }
            self.tick();
        }
        assert!(condition(self), "condition not reached within {max} ticks");
    }

    fn replica(&self, id: NodeId) -> &PbReplica {
        self.replicas.get(&id).expect("replica is running")
    }

    fn serving(&self, id: NodeId) -> bool {
        self.replicas.get(&id).is_some_and(|replica| {
            let status = replica.status();
            status.acting_primary
                && status.primary_acked
                && (status.view.backup.is_none() || status.backup_ready)
        })
    }

    /// Proposes a put at `at`; returns the request number, or the refusal.
    fn propose(&mut self, at: NodeId, key: &str, text: &str) -> Result<u64, ProposeError> {
        self.propose_command(at, put(key, text))
    }

    /// Proposes an encoded key-value command at `at` and lets the network settle; returns the
    /// request number, or the refusal.
    fn propose_command(&mut self, at: NodeId, command: Bytes) -> Result<u64, ProposeError> {
        let request = self.propose_unsettled(at, command)?;
        self.settle();
        Ok(request)
    }

    /// Proposes at `at` and puts its messages on the wire, but delivers nothing yet.
    fn propose_unsettled(&mut self, at: NodeId, command: Bytes) -> Result<u64, ProposeError> {
        self.next_request += 1;
        let request = self.next_request;
        let envelope = Envelope {
            origin: at,
            request,
            command,
            session: None,
        };
        self.replicas
            .get_mut(&at)
            .expect("replica is running")
            .propose(envelope)?;
        self.drain_ready();
        Ok(request)
    }

    /// Opens a key-value session through the primary `at`.
    fn register(&mut self, at: NodeId) -> ClientId {
        let request = self
            .propose_command(at, Command::Register.encode())
            .expect("primary takes the registration");
        match self.outcomes(at).committed.get(&request) {
            Some(&Response::Registered(client)) => client,
            other => panic!("registration answered with {other:?}"),
        }
    }

    /// Puts a second copy of every `Forward` on the wire behind everything already there;
    /// returns the copies.
    fn duplicate_forwards(&mut self) -> Vec<(NodeId, NodeId, Message)> {
        let copies: Vec<_> = self
            .network
            .iter()
            .filter(|(_, _, message)| matches!(message, Message::Forward { .. }))
            .cloned()
            .collect();
        self.network.extend(copies.iter().cloned());
        copies
    }

    fn read(&mut self, at: NodeId, key: &str) -> Result<ReadId, chorus_pb::ReadError> {
        self.next_request += 1;
        let id = ReadId(self.next_request);
        self.replicas
            .get_mut(&at)
            .expect("replica is running")
            .read(id, get(key))?;
        self.settle();
        Ok(id)
    }

    /// The answer to request `request`, from whichever node gave it.
    fn answer(&self, request: u64) -> Option<&Response> {
        self.outcomes
            .values()
            .find_map(|outcomes| outcomes.committed.get(&request))
    }

    /// The current primary, if it serves.
    fn serving_primary(&self) -> Option<NodeId> {
        self.service
            .service()
            .get_view()
            .primary
            .filter(|&primary| self.serving(primary))
    }

    fn outcomes(&self, id: NodeId) -> &Outcomes {
        self.outcomes.get(&id).expect("node produced output")
    }

    fn snapshot(&self, id: NodeId) -> Bytes {
        self.replica(id).state_machine().snapshot_bytes()
    }
}

#[test]
fn a1_first_primary_then_first_backup_which_counts_only_after_state_transfer() {
    let mut cluster = Cluster::new(&[A]);
    cluster.tick_until(5, |c| c.serving(A));
    assert_eq!(cluster.service.service().get_view().number, ViewNumber(1));
    let first = cluster.propose(A, "x", "1").expect("primary takes the put");
    assert_eq!(
        cluster.outcomes(A).committed.get(&first),
        Some(&Response::Ok)
    );

    cluster.start(B);
    cluster.tick_until(10, |c| {
        c.serving(A) && c.replica(A).status().view.backup == Some(B)
    });
    let view = cluster.service.service().get_view();
    assert_eq!((view.primary, view.backup), (Some(A), Some(B)));
    // The view was acknowledged, so the backup had installed the state: x is there.
    assert_eq!(cluster.replica(B).status().ready_in_view, Some(view.number));
    assert_eq!(cluster.snapshot(A), cluster.snapshot(B));

    let second = cluster.propose(A, "x", "2").expect("primary takes the put");
    assert_eq!(
        cluster.outcomes(A).committed.get(&second),
        Some(&Response::Ok)
    );
    assert_eq!(cluster.snapshot(A), cluster.snapshot(B));
}

#[test]
fn a1_the_primary_does_not_acknowledge_a_view_before_its_backup_has_the_state() {
    let mut cluster = Cluster::new(&[A]);
    cluster.tick_until(5, |c| c.serving(A));
    // B's link from A is cut: it can never receive the state transfer.
    cluster.partition(A, B);
    cluster.start(B);
    cluster.ticks(10);
    let service = cluster.service.service();
    assert_eq!(service.get_view().backup, Some(B));
    assert!(
        !service.primary_acked(),
        "view acknowledged without a backup holding the state"
    );
    // Operations wait; none is answered while the backup cannot acknowledge them.
    let request = cluster.propose(A, "x", "1").expect("taken, pending");
    assert!(!cluster.outcomes(A).committed.contains_key(&request));
    cluster.heal();
    cluster.ticks(3);
    assert_eq!(
        cluster.outcomes(A).committed.get(&request),
        Some(&Response::Ok)
    );
    assert!(cluster.service.service().primary_acked());
    assert_eq!(cluster.snapshot(A), cluster.snapshot(B));
}

#[test]
fn a2_a_restarted_empty_primary_is_never_made_primary_again() {
    let mut cluster = Cluster::new(&[A, B]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    cluster.propose(A, "x", "1").expect("put");
    // A restarts empty and pings with view 0 at once: the backup takes over.
    cluster.crash(A);
    cluster.start(A);
    cluster.tick_until(10, |c| c.serving(B));
    let view = cluster.service.service().get_view();
    assert_eq!(view.primary, Some(B));
    assert!(!cluster.replica(A).status().acting_primary);
    // A came back as a new server and fills the backup slot, with the state transferred.
    cluster.tick_until(10, |c| c.replica(B).status().backup_ready);
    assert_eq!(cluster.service.service().get_view().backup, Some(A));
    assert_eq!(cluster.snapshot(A), cluster.snapshot(B));
}

#[test]
fn a3_a_spare_fills_the_backup_slot_and_a_dead_backup_is_removed() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    assert_eq!(cluster.service.service().get_view().backup, Some(B));
    cluster.propose(A, "k", "v").expect("put");
    cluster.crash(B);
    cluster.tick_until(20, |c| {
        c.serving(A)
            && c.replica(A).status().view.backup == Some(C)
            && c.replica(A).status().backup_ready
    });
    assert_eq!(cluster.snapshot(A), cluster.snapshot(C));
    // C crashes too, and no spare is left: the backup slot is emptied.
    cluster.crash(C);
    cluster.tick_until(20, |c| {
        c.serving(A) && c.replica(A).status().view.backup.is_none()
    });
    let request = cluster.propose(A, "k", "w").expect("put alone");
    assert_eq!(
        cluster.outcomes(A).committed.get(&request),
        Some(&Response::Ok)
    );
}

#[test]
fn a4_the_lone_server_dies_and_an_empty_one_starts_it_must_not_serve() {
    let mut cluster = Cluster::new(&[A]);
    cluster.tick_until(5, |c| c.serving(A));
    cluster.propose(A, "x", "acknowledged").expect("put");
    cluster.crash(A);
    cluster.start(C);
    cluster.ticks(20);
    let view = cluster.service.service().get_view();
    assert_eq!(
        view.primary,
        Some(A),
        "nobody else has the data: the service is stuck"
    );
    assert!(matches!(
        cluster
            .replicas
            .get_mut(&C)
            .expect("running")
            .propose(Envelope {
                origin: C,
                request: 99,
                command: put("x", "lost"),
                session: None,
            }),
        Err(ProposeError::NotPrimary { .. })
    ));
    // The same server restarted empty must not serve either.
    cluster.start(A);
    cluster.ticks(20);
    assert!(!cluster.replica(A).status().acting_primary);
    assert!(!cluster.service.service().primary_acked());
    assert!(cluster.read(A, "x").is_err());
}

#[test]
fn a5_a_put_right_after_primary_failure_succeeds_and_keeps_earlier_writes() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    for round in 0..5 {
        cluster.propose(A, "x", &round.to_string()).expect("put");
    }
    cluster.crash(A);
    cluster.tick_until(20, |c| c.serving(B) && c.replica(B).status().backup_ready);
    assert_eq!(cluster.replica(B).status().view.backup, Some(C));
    let request = cluster
        .propose(B, "y", "after")
        .expect("new primary takes the put");
    assert_eq!(
        cluster.outcomes(B).committed.get(&request),
        Some(&Response::Ok)
    );
    let read = cluster.read(B, "x").expect("read");
    assert_eq!(cluster.outcomes(B).reads.get(&read), Some(&value("4")));
    assert_eq!(cluster.snapshot(B), cluster.snapshot(C));
}

#[test]
fn a5_a_put_right_after_backup_failure_succeeds() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    cluster.crash(B);
    // Taken at once; answered once C holds the state and acknowledged it.
    let request = cluster.propose(A, "x", "1").expect("put");
    cluster.tick_until(20, |c| {
        c.outcomes
            .get(&A)
            .is_some_and(|o| o.committed.contains_key(&request))
    });
    assert_eq!(cluster.replica(A).status().view.backup, Some(C));
    assert_eq!(cluster.snapshot(A), cluster.snapshot(C));
}

#[test]
fn a6_split_brain_a_partitioned_old_primary_completes_no_get_and_no_put() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    cluster.propose(A, "x", "old").expect("put");
    // A loses the view service but still reaches B (and its clients).
    cluster.partition(A, SERVICE);
    cluster.tick_until(20, |c| c.serving(B));
    assert!(
        cluster.replica(A).status().view.is_primary(A),
        "A has not heard of the new view"
    );
    let new_write = cluster.propose(B, "x", "new").expect("new primary writes");
    assert_eq!(
        cluster.outcomes(B).committed.get(&new_write),
        Some(&Response::Ok)
    );

    // A still believes it is primary; B refuses its forwards, so nothing completes at A.
    let committed_before = cluster.outcomes(A).committed.len();
    let stale_put = cluster.propose(A, "x", "split");
    let stale_read = cluster.read(A, "x");
    cluster.ticks(5);
    let outcomes = cluster.outcomes(A);
    assert_eq!(
        outcomes.committed.len(),
        committed_before,
        "the old primary completed a put"
    );
    if let Ok(request) = stale_put {
        assert!(outcomes.aborted.contains(&request));
    }
    if let Ok(id) = stale_read {
        assert!(
            !outcomes.reads.contains_key(&id),
            "the old primary served a read"
        );
        assert!(outcomes.rejected_reads.contains(&id));
    }
    let read = cluster.read(B, "x").expect("read at the new primary");
    assert_eq!(cluster.outcomes(B).reads.get(&read), Some(&value("new")));
}

#[test]
fn backups_reject_non_primaries_and_stale_views_and_ack_nothing_before_state_transfer() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    let view = cluster.replica(B).status().view;
    assert_eq!(cluster.replica(B).status().role, Role::Backup);
    let forward = |number: ViewNumber| Message::Forward {
        view: number,
        index: LogIndex(1),
        execution: Envelope {
            origin: C,
            request: 1,
            command: Execution {
                output: Bytes::new(),
                effect: put("x", "forged"),
            }
            .encode(),
            session: None,
        }
        .encode(),
    };
    let backup = cluster.replicas.get_mut(&B).expect("running");
    let before = backup.state_machine().snapshot_bytes();
    // From a server that is not the primary of the current view.
    assert!(matches!(
        backup.step(C, forward(view.number)),
        Err(chorus_pb::StepError::NotPrimary { .. })
    ));
    // From an older view: refused, and the sender is told.
    assert!(matches!(
        backup.step(A, forward(ViewNumber(1))),
        Err(chorus_pb::StepError::StaleView { .. })
    ));
    let ready = backup.ready();
    backup.advance();
    assert!(
        ready
            .messages
            .iter()
            .any(|(to, message)| *to == A && matches!(message, Message::Rejected { .. }))
    );
    assert_eq!(backup.state_machine().snapshot_bytes(), before);

    // A fresh backup-to-be acknowledges nothing before it installed the state.
    let mut fresh = replica(C);
    let view_two = chorus_pb::View {
        number: ViewNumber(2),
        primary: Some(A),
        backup: Some(C),
    };
    fresh
        .step(
            SERVICE,
            Message::ViewReply(chorus_pb::PingReply {
                view: view_two,
                primary_acked: false,
            }),
        )
        .expect("view reply");
    assert_eq!(
        fresh.step(A, forward(ViewNumber(2))),
        Err(chorus_pb::StepError::NotReady(ViewNumber(2)))
    );
    let ready = fresh.ready();
    fresh.advance();
    assert!(
        !ready
            .messages
            .iter()
            .any(|(_, message)| matches!(message, Message::Ack { .. }))
    );
}

#[test]
fn nonsense_input_never_panics_a_replica_or_the_view_server() {
    let mut prng = Prng::new(11);
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    let senders = [A, B, C, SERVICE, NodeId(77)];
    for _ in 0..5_000 {
        let number = ViewNumber(prng.range(0, 6));
        let index = LogIndex(prng.range(0, 8));
        let node = |prng: &mut Prng| match prng.range(0, 4) {
            0 => None,
            1 => Some(A),
            2 => Some(B),
            _ => Some(C),
        };
        let message = match prng.range(0, 8) {
            0 => Message::Ping { view: number },
            1 => Message::ViewReply(chorus_pb::PingReply {
                view: chorus_pb::View {
                    number,
                    primary: node(&mut prng),
                    backup: node(&mut prng),
                },
                primary_acked: prng.chance(0.5),
            }),
            2 => Message::StateTransfer {
                view: number,
                snapshot: Bytes::from(vec![prng.range(0, 256) as u8; prng.index(8)]),
                index,
            },
            3 => Message::Forward {
                view: number,
                index,
                execution: Bytes::from(vec![1u8; prng.index(30)]),
            },
            4 => Message::ReadConfirm {
                view: number,
                round: prng.range(0, 4),
            },
            5 => Message::Ack {
                view: number,
                applied: index,
                read_round: prng.range(0, 4),
            },
            _ => Message::Rejected { view: number },
        };
        let from = senders[prng.index(senders.len())];
        let to = [A, B, C, SERVICE][prng.index(4)];
        if to == SERVICE {
            let _ = cluster.service.step(from, message);
        } else if let Some(replica) = cluster.replicas.get_mut(&to) {
            let _ = replica.step(from, message);
        }
        if prng.chance(0.05) {
            cluster.tick();
        }
    }
}

#[test]
fn a_lossy_network_still_converges_and_primary_and_backup_stay_identical() {
    for seed in 0..32 {
        lossy_run(seed);
    }
}

fn lossy_run(seed: u64) {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.prng = Prng::new(seed);
    cluster.drop_chance = 0.2;
    let mut primary_changes = 0;
    let mut calm_until = None;
    for step in 0..400 {
        if step + 2 * DEAD_PINGS as usize == 150 {
            // One failure at a time is what the scheme claims to survive: from a little before
            // the crash until the service noticed it, no lost ping may make it suspect the
            // backup as well (that double failure leaves it stuck by design).
            cluster.drop_chance = 0.0;
        }
        let primary = cluster.service.service().get_view().primary;
        if let Some(primary) = primary
            && cluster.serving(primary)
        {
            let _ = cluster.propose(primary, "x", &step.to_string());
        }
        // Crash the primary once, at a moment it may be replaced: its view is acknowledged and
        // its backup holds the state (otherwise the service is stuck by design; see
        // `a_primary_that_restarts_before_acknowledging_its_view_stalls_the_service`).
        if step >= 150
            && primary_changes == 0
            && let Some(primary) = primary
            && cluster.serving(primary)
            && cluster.replica(primary).status().backup_ready
        {
            cluster.crash(primary);
            cluster.start(primary);
            primary_changes += 1;
            calm_until = Some(step + 3 * DEAD_PINGS as usize);
        }
        cluster.tick();
        if calm_until == Some(step) {
            cluster.drop_chance = 0.2;
        }
    }
    assert_eq!(
        primary_changes,
        1,
        "{:?} {:?} {:?}",
        cluster.service.service().get_view(),
        cluster
            .replicas
            .values()
            .map(PbReplica::status)
            .collect::<Vec<_>>(),
        cluster.service.service().primary_acked()
    );
    cluster.drop_chance = 0.0;
    cluster.ticks(20);
    let view = cluster.service.service().get_view();
    let (primary, backup) = (view.primary.expect("primary"), view.backup.expect("backup"));
    assert!(
        cluster.serving(primary),
        "{view:?} {:?} {:?}",
        cluster
            .replicas
            .values()
            .map(PbReplica::status)
            .collect::<Vec<_>>(),
        cluster.service.service().primary_acked()
    );
    assert_eq!(cluster.snapshot(primary), cluster.snapshot(backup));
}

#[test]
fn a_primary_that_restarts_before_acknowledging_its_view_stalls_the_service() {
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    cluster.propose(A, "x", "1").expect("put");
    // A dies; B is promoted in a new view, but B restarts before acknowledging it.
    cluster.cut.insert((SERVICE, B));
    cluster.crash(A);
    cluster.tick_until(20, |c| c.service.service().get_view().primary == Some(B));
    let stuck_view = cluster.service.service().get_view();
    cluster.crash(B);
    cluster.start(B);
    cluster.heal();
    cluster.ticks(30);
    // Nobody with the data can acknowledge: the view never changes and nobody serves.
    assert_eq!(cluster.service.service().get_view(), stuck_view);
    assert!(!cluster.service.service().primary_acked());
    for id in [B, C] {
        assert!(
            !cluster.replica(id).status().acting_primary,
            "{id} serves without the data"
        );
    }
}

#[test]
fn a7_a_retried_append_takes_effect_once_across_failover() {
    // Proves exactly-once across failover: the backup applied an append whose answer the old
    // primary never gave; after promotion, the client's retry of the same (client, seq) is
    // answered from the session cache and the suffix is in the value once.
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    let client = cluster.register(A);
    let first = cluster
        .propose_command(A, request(client, 1, append("log", "a")))
        .expect("primary takes the append");
    assert_eq!(
        cluster.outcomes(A).committed.get(&first),
        Some(&Response::Length(1))
    );

    // B's acknowledgements stop reaching A: B applies the next append, A never answers it.
    cluster.cut.insert((B, A));
    let lost = cluster
        .propose_command(A, request(client, 2, append("log", "b")))
        .expect("primary takes the append");
    assert!(!cluster.outcomes(A).committed.contains_key(&lost));
    assert!(!cluster.outcomes(A).aborted.contains(&lost));
    assert_eq!(
        cluster.replica(B).status().applied,
        cluster.replica(A).status().applied.next(),
        "the backup applied the append the primary has not answered"
    );

    // A dies before its client heard anything; the view service promotes B.
    cluster.crash(A);
    cluster.heal();
    cluster.tick_until(20, |c| c.serving(B) && c.replica(B).status().backup_ready);
    assert_eq!(cluster.service.service().get_view().primary, Some(B));

    // The client retries the same (client, seq) at the new primary: the cached answer, the
    // length after one "b" (a second execution would answer 3).
    let retry = cluster
        .propose_command(B, request(client, 2, append("log", "b")))
        .expect("new primary takes the retry");
    assert_eq!(
        cluster.outcomes(B).committed.get(&retry),
        Some(&Response::Length(2))
    );
    let read = cluster.read(B, "log").expect("read");
    assert_eq!(cluster.outcomes(B).reads.get(&read), Some(&value("ab")));

    // The session goes on normally after the retry.
    let next = cluster
        .propose_command(B, request(client, 3, append("log", "c")))
        .expect("new primary takes the append");
    assert_eq!(
        cluster.outcomes(B).committed.get(&next),
        Some(&Response::Length(3))
    );
    assert_eq!(cluster.snapshot(B), cluster.snapshot(C));
}

#[test]
fn a7_a_duplicated_forward_is_applied_once_by_the_backup() {
    // Proves the backup applies each operation index once: a Forward delivered twice (back to
    // back, and again long after) changes the backup's state once, and the primary answers once.
    let mut cluster = Cluster::new(&[A, B, C]);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    let client = cluster.register(A);
    let applied_before = cluster.replica(B).status().applied;

    let request_number = cluster
        .propose_unsettled(A, request(client, 1, append("log", "a")))
        .expect("primary takes the append");
    let copies = cluster.duplicate_forwards();
    assert_eq!(copies.len(), 1, "exactly one Forward for one proposal");
    cluster.settle();
    assert_eq!(
        cluster.outcomes(A).committed.get(&request_number),
        Some(&Response::Length(1))
    );
    assert_eq!(cluster.replica(B).status().applied, applied_before.next());
    assert_eq!(cluster.snapshot(A), cluster.snapshot(B));

    // The same Forward once more, after everything settled: acknowledged, not applied.
    let backup_state = cluster.snapshot(B);
    for (from, to, message) in copies {
        assert_eq!(to, B);
        cluster
            .replicas
            .get_mut(&B)
            .expect("running")
            .step(from, message)
            .expect("a duplicate of the current view is acknowledged");
    }
    cluster.settle();
    assert_eq!(cluster.snapshot(B), backup_state);
    assert_eq!(cluster.replica(B).status().applied, applied_before.next());
    let read = cluster.read(A, "log").expect("read");
    assert_eq!(cluster.outcomes(A).reads.get(&read), Some(&value("a")));
}

#[test]
fn a7_appends_retried_under_loss_duplication_and_crashes_each_take_effect_once() {
    for seed in 0..16 {
        retried_appends_run(seed);
    }
}

/// One client appends `<1>`, `<2>`, … through a network that drops and duplicates messages,
/// retrying each (client, seq) until some primary answers it, while primaries crash and
/// restart empty. Proves: every answer is the length after exactly that many appends, and the
/// final value holds each suffix once, in order.
fn retried_appends_run(seed: u64) {
    const APPENDS: u64 = 20;
    const RETRY_TICKS: u64 = 3;
    // A live backup whose pings are all lost for `dead_pings` ticks is declared dead; if the
    // primary crashes in that same moment, the service keeps the crashed primary in a new,
    // unacknowledged view and is stuck by design (rule 6 of the view service), although the
    // old backup, alive and idle, holds the data. With 15% loss and 3 ticks that happens in
    // some seeds; 6 ticks makes it vanishingly rare, so this run tests sessions, not rule 6.
    let mut cluster = Cluster::with_dead_pings(&[A, B, C], 6);
    cluster.prng = Prng::new(seed);
    cluster.tick_until(10, |c| c.serving(A) && c.replica(A).status().backup_ready);
    let client = cluster.register(A);
    cluster.drop_chance = 0.15;
    cluster.duplicate_chance = 0.15;

    let mut expected = String::new();
    let mut crashes = 0;
    let mut step: u64 = 0;
    for seq in 1..=APPENDS {
        let suffix = format!("<{seq}>");
        let mut attempts = Vec::new();
        let answer = loop {
            assert!(
                step < 2_000,
                "seed {seed}: seq {seq} never answered; view {:?} acked {} crashes {crashes} {:?}",
                cluster.service.service().get_view(),
                cluster.service.service().primary_acked(),
                cluster
                    .replicas
                    .values()
                    .map(PbReplica::status)
                    .collect::<Vec<_>>()
            );
            if let Some(answer) = attempts.iter().find_map(|&r| cluster.answer(r)) {
                break answer.clone();
            }
            if step % RETRY_TICKS == 0
                && let Some(primary) = cluster.serving_primary()
                && let Ok(attempt) =
                    cluster.propose_unsettled(primary, request(client, seq, append("log", &suffix)))
            {
                attempts.push(attempt);
                // Every fourth append, the primary crashes (and restarts empty) with the
                // Forward on the wire, before it can answer; only while it can be replaced
                // (see `lossy_run`).
                if seq % 4 == 0
                    && attempts.len() == 1
                    && cluster.replica(primary).status().backup_ready
                {
                    cluster.crash(primary);
                    cluster.start(primary);
                    crashes += 1;
                }
            }
            cluster.tick();
            step += 1;
        };
        expected.push_str(&suffix);
        let length = u64::try_from(expected.len()).expect("small");
        assert_eq!(
            answer,
            Response::Length(length),
            "seed {seed}: seq {seq} took effect a number of times other than once"
        );
    }
    assert!(crashes > 0, "seed {seed}: no primary crashed");

    cluster.drop_chance = 0.0;
    cluster.duplicate_chance = 0.0;
    cluster.tick_until(30, |c| {
        c.serving_primary()
            .is_some_and(|primary| c.replica(primary).status().backup_ready)
    });
    let view = cluster.service.service().get_view();
    let (primary, backup) = (view.primary.expect("primary"), view.backup.expect("backup"));
    let read = cluster.read(primary, "log").expect("read");
    assert_eq!(
        cluster.outcomes(primary).reads.get(&read),
        Some(&value(&expected)),
        "seed {seed}"
    );
    assert_eq!(cluster.snapshot(primary), cluster.snapshot(backup));
}
