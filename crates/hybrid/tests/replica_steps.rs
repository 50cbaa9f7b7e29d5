//! Step tests of the data server: a few replicas and a configuration state machine applied
//! directly (a one-node "group"), a network that delivers in order after one unit unless a
//! link is cut, and a clock per node with its own drift. Each test says what it proves.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, VecDeque};

use bytes::Bytes;
use chorus_core::envelope::Envelope;
use chorus_core::{NodeId, StateMachine};
use chorus_hybrid::{
    ConfigCommand, ConfigStateMachine, DataReplica, Durable, Epoch, HybridConfig, LocalTime, Lsn,
    Message, ProposeError, ReadId,
};
use chorus_kv::{Command, KvConfig, KvStore, Op, Query};

struct Node {
    replica: Option<DataReplica>,
    disk: Durable,
    drift_ppm: i64,
    /// The clock read `anchor.1` at true time `anchor.0`; it runs at `1 + drift` since.
    anchor: (u64, u64),
    incarnation: u64,
}

struct Cluster {
    time: u64,
    nodes: Vec<Node>,
    config: ConfigStateMachine,
    index: u64,
    in_flight: VecDeque<(u64, NodeId, NodeId, Message)>,
    cut: BTreeSet<(u64, u64)>,
    acknowledged: Vec<(NodeId, Lsn)>,
    aborted: usize,
    config_reachable: bool,
}

fn id(node: usize) -> NodeId {
    NodeId(node as u64 + 1)
}

impl Cluster {
    fn new(servers: usize, replicas: usize, min_replicas: usize) -> Cluster {
        let mut cluster = Cluster {
            time: 0,
            nodes: Vec::new(),
            config: ConfigStateMachine::new(),
            index: 0,
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            acknowledged: Vec::new(),
            aborted: 0,
            config_reachable: true,
        };
        for _ in 0..servers {
            cluster.nodes.push(Node {
                replica: None,
                disk: Durable::default(),
                drift_ppm: 0,
                anchor: (0, 0),
                incarnation: 0,
            });
        }
        for node in 0..servers {
            cluster.start(node, replicas, min_replicas);
        }
        cluster
    }

    fn config_for(&self, node: usize, replicas: usize, min_replicas: usize) -> HybridConfig {
        let mut config = HybridConfig::new(id(node));
        config.replicas = replicas;
        config.min_replicas = min_replicas;
        config.incarnation = self.nodes[node].incarnation;
        config
    }

    fn clock(&self, node: usize) -> LocalTime {
        let rate = 1_000_000 + self.nodes[node].drift_ppm;
        let (true_time, local) = self.nodes[node].anchor;
        let elapsed = i128::from(self.time - true_time) * i128::from(rate) / 1_000_000;
        LocalTime(local + u64::try_from(elapsed).unwrap())
    }

    /// Changes a node's drift from now on, without a jump of its clock.
    fn set_drift(&mut self, node: usize, drift_ppm: i64) {
        let local = self.clock(node).0;
        self.nodes[node].anchor = (self.time, local);
        self.nodes[node].drift_ppm = drift_ppm;
    }

    fn start(&mut self, node: usize, replicas: usize, min_replicas: usize) {
        self.nodes[node].incarnation += 1;
        let config = self.config_for(node, replicas, min_replicas);
        let store = Box::new(KvStore::new(KvConfig::default()));
        let replica = DataReplica::restart(
            config,
            self.nodes[node].disk.clone(),
            store,
            self.clock(node),
        )
        .unwrap();
        self.nodes[node].replica = Some(replica);
        self.drain(node);
    }

    fn crash(&mut self, node: usize) {
        self.nodes[node].replica = None;
    }

    fn replica(&self, node: usize) -> &DataReplica {
        self.nodes[node].replica.as_ref().unwrap()
    }

    fn drain(&mut self, node: usize) {
        while let Some(replica) = self.nodes[node].replica.as_mut() {
            if !replica.has_ready() {
                break;
            }
            let ready = replica.ready();
            self.nodes[node].disk.write(&ready);
            for (to, message) in ready.messages {
                self.in_flight
                    .push_back((self.time + 1, id(node), to, message));
            }
            for command in ready.config_commands {
                if self.config_reachable && !self.cut.contains(&(id(node).0, 99)) {
                    self.index += 1;
                    let index = chorus_core::LogIndex(self.index);
                    self.config.apply(index, &command.encode());
                }
            }
            for applied in ready.acknowledged {
                self.acknowledged.push((id(node), applied.lsn));
            }
            self.aborted += ready.aborted.len();
            self.nodes[node].replica.as_mut().unwrap().advance();
        }
    }

    /// The configuration group tells every data server its state (a push each unit).
    fn push_configuration(&mut self) {
        if !self.config_reachable {
            return;
        }
        let configuration = self.config.configuration().clone();
        for node in 0..self.nodes.len() {
            let now = self.clock(node);
            if self.cut.contains(&(99, id(node).0)) {
                continue;
            }
            if let Some(replica) = self.nodes[node].replica.as_mut() {
                replica
                    .step(now, NodeId(99), Message::Update(configuration.clone()))
                    .unwrap();
                self.drain(node);
            }
        }
    }

    fn run(&mut self, units: u64) {
        for _ in 0..units {
            self.time += 1;
            while self.in_flight.front().is_some_and(|m| m.0 <= self.time) {
                let (_, from, to, message) = self.in_flight.pop_front().unwrap();
                if self.cut.contains(&(from.0, to.0)) {
                    continue;
                }
                let node = usize::try_from(to.0 - 1).unwrap();
                let now = self.clock(node);
                if let Some(replica) = self.nodes[node].replica.as_mut() {
                    replica.step(now, from, message).unwrap();
                    self.drain(node);
                }
            }
            if self.time % 5 == 0 {
                self.push_configuration();
                for node in 0..self.nodes.len() {
                    let now = self.clock(node);
                    if let Some(replica) = self.nodes[node].replica.as_mut() {
                        replica.tick(now);
                        self.drain(node);
                    }
                }
            }
            self.check_one_server_serves();
        }
    }

    /// H1, sampled every unit of true time.
    fn check_one_server_serves(&self) {
        let serving: Vec<usize> = (0..self.nodes.len())
            .filter(|&node| {
                // Every node's clock was just read by a tick or a step at this instant.
                self.nodes[node]
                    .replica
                    .as_ref()
                    .is_some_and(DataReplica::is_serving)
            })
            .collect();
        assert!(
            serving.len() <= 1,
            "two servers serve at {}: {serving:?}",
            self.time
        );
    }

    /// Cuts `node` off from every other data server and from the configuration group.
    fn isolate(&mut self, node: usize) {
        self.cut.insert((99, id(node).0));
        self.cut.insert((id(node).0, 99));
        for other in 0..self.nodes.len() {
            if other != node {
                self.cut.insert((id(node).0, id(other).0));
                self.cut.insert((id(other).0, id(node).0));
            }
        }
    }

    fn write(&mut self, node: usize, value: &str) -> Result<Lsn, ProposeError> {
        let command = Command::Request {
            client: chorus_kv::ClientId(1),
            seq: self.index + 1000 * self.time + 1,
            op: Op::Put {
                key: Bytes::from_static(b"k"),
                value: Bytes::copy_from_slice(value.as_bytes()),
            },
        };
        let envelope = Envelope {
            origin: id(node),
            request: self.time,
            command: command.encode(),
            session: None,
        };
        let now = self.clock(node);
        let result = self.nodes[node]
            .replica
            .as_mut()
            .unwrap()
            .propose(now, envelope.encode());
        self.drain(node);
        result
    }

    fn serving(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&n| {
                self.nodes[n]
                    .replica
                    .as_ref()
                    .is_some_and(|r| r.is_serving())
            })
            .collect()
    }
}

#[test]
fn a_primary_and_a_caught_up_backup_form_the_view_and_a_write_commits_on_both() {
    let mut cluster = Cluster::new(3, 2, 2);
    cluster.run(400);
    let view = cluster.config.configuration().view.clone();
    assert!(view.active && view.backups.len() == 1, "{view:?}");
    let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
    let backup = usize::try_from(view.backups[0].0 - 1).unwrap();
    assert_eq!(cluster.serving(), vec![primary]);
    let lsn = cluster.write(primary, "a").unwrap();
    assert!(
        cluster.acknowledged.is_empty(),
        "not before the backup acked"
    );
    cluster.run(10);
    assert_eq!(cluster.acknowledged, vec![(id(primary), lsn)]);
    assert_eq!(
        cluster.replica(backup).log().len(),
        cluster.replica(primary).log().len()
    );
}

#[test]
fn below_min_replicas_writes_wait_and_reads_continue() {
    let mut cluster = Cluster::new(1, 2, 2);
    cluster.run(200);
    assert_eq!(cluster.serving(), vec![0]);
    assert_eq!(cluster.write(0, "a"), Err(ProposeError::BelowMinReplicas));
    let now = cluster.clock(0);
    let query = Query::Get {
        key: Bytes::from_static(b"k"),
    }
    .encode();
    let replica = cluster.nodes[0].replica.as_mut().unwrap();
    assert!(replica.read(now, ReadId(1), &query).is_ok());
}

#[test]
fn a_silent_primary_is_replaced_only_after_its_lease_ran_out_even_with_drift_at_the_bound() {
    let mut cluster = Cluster::new(3, 2, 2);
    cluster.run(400);
    let view = cluster.config.configuration().view.clone();
    let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
    let backup = usize::try_from(view.backups[0].0 - 1).unwrap();
    cluster.write(primary, "a").unwrap();
    cluster.run(10);
    // The worst case the bound allows: the primary's clock slow, the backup's fast.
    let bound = i64::try_from(HybridConfig::new(NodeId(1)).drift_bound_ppm).unwrap();
    cluster.set_drift(primary, -bound);
    cluster.set_drift(backup, bound);
    cluster.isolate(primary);
    // The check in `run` asserts H1 at every unit while the backup takes over.
    cluster.run(800);
    let view = cluster.config.configuration().view.clone();
    assert_eq!(view.primary, Some(id(backup)), "{view:?}");
    assert!(view.active);
    assert!(
        cluster.replica(backup).status().applied >= Lsn(1),
        "kept the write"
    );
    assert!(!cluster.replica(primary).is_serving());
}

#[test]
fn a_grace_period_shorter_than_the_lease_lets_two_servers_serve() {
    let mut cluster = Cluster::new(3, 2, 1);
    for node in 0..3 {
        cluster.crash(node);
        cluster.nodes[node].incarnation = 0;
    }
    for node in 0..3 {
        let mut config = cluster.config_for(node, 2, 1);
        config.incarnation = 1;
        config.grace_units = 50;
        config.allow_unsafe_grace = true;
        cluster.nodes[node].incarnation = 1;
        let store = Box::new(KvStore::new(KvConfig::default()));
        cluster.nodes[node].replica =
            Some(DataReplica::restart(config, Durable::default(), store, LocalTime(0)).unwrap());
    }
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        cluster.run(400);
        let view = cluster.config.configuration().view.clone();
        let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
        cluster.isolate(primary);
        cluster.run(400);
    }));
    assert!(result.is_err(), "H1 must fail with an unsafe grace period");
}

#[test]
fn a_stale_primary_is_fenced_and_the_fence_survives_a_restart() {
    let mut cluster = Cluster::new(3, 2, 2);
    cluster.run(400);
    let view = cluster.config.configuration().view.clone();
    let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
    let backup = usize::try_from(view.backups[0].0 - 1).unwrap();
    cluster.isolate(primary);
    cluster.run(800);
    let highest = cluster.replica(backup).status().hard_state.highest_epoch;
    assert!(highest > view.epoch);
    // The backup restarts: its persisted epoch still refuses the old primary.
    cluster.crash(backup);
    cluster.start(backup, 2, 2);
    assert_eq!(
        cluster.replica(backup).status().hard_state.highest_epoch,
        highest
    );
    let stale = Message::Append {
        epoch: view.epoch,
        view: view.clone(),
        prev_lsn: Lsn(0),
        prev_epoch: Epoch(0),
        entries: Vec::new(),
        commit: Lsn(0),
        sent_at: LocalTime(0),
    };
    let now = cluster.clock(backup);
    let replica = cluster.nodes[backup].replica.as_mut().unwrap();
    replica.step(now, id(primary), stale).unwrap();
    let ready = replica.ready();
    assert!(matches!(
        ready.messages.as_slice(),
        [(_, Message::AppendAck { epoch, success: false, .. })] if *epoch == highest
    ));
}

#[test]
fn a_pending_primary_does_not_serve_until_its_view_is_activated() {
    let mut cluster = Cluster::new(3, 2, 2);
    cluster.run(400);
    let view = cluster.config.configuration().view.clone();
    let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
    let backup = usize::try_from(view.backups[0].0 - 1).unwrap();
    cluster.isolate(primary);
    cluster.config_reachable = false;
    cluster.run(400);
    // The backup abandoned the epoch but cannot reach the group: nobody serves.
    assert!(cluster.serving().is_empty());
    cluster.config_reachable = true;
    let propose = ConfigCommand::ProposeView {
        expected_epoch: view.epoch,
        primary: id(backup),
        backups: Vec::new(),
        reason: chorus_hybrid::ViewReason::PrimarySilent,
    };
    cluster.config.execute(&propose).unwrap();
    cluster.push_configuration();
    assert!(!cluster.replica(backup).is_serving(), "pending");
    cluster.run(100);
    assert!(cluster.config.configuration().view.active);
    assert_eq!(cluster.serving(), vec![backup]);
}

#[test]
fn a_refused_append_grants_no_lease() {
    // Regression (hybrid sweep seed 404, found with passive replication's timing): a backup
    // fenced a stale Append of epoch e by answering with its own epoch e+1; the primary, at
    // e+1 by then, took that refusal for an acknowledgement and held a lease from the Append's
    // old send time, which outlived the backup's grace period (H5). Only a success grants one.
    let mut cluster = Cluster::new(3, 2, 2);
    cluster.run(400);
    let view = cluster.config.configuration().view.clone();
    let primary = usize::try_from(view.primary.unwrap().0 - 1).unwrap();
    let backup = view.backups[0];
    let now = cluster.clock(primary);
    let replica = cluster.nodes[primary].replica.as_mut().unwrap();
    let before = replica.lease_from(backup);
    let refusal = Message::AppendAck {
        epoch: view.epoch,
        success: false,
        lsn: Lsn(0),
        sent_at: now,
    };
    replica.step(now, backup, refusal).unwrap();
    assert_eq!(replica.lease_from(backup), before);
    let acknowledgement = Message::AppendAck {
        epoch: view.epoch,
        success: true,
        lsn: replica.status().last_lsn,
        sent_at: now,
    };
    replica.step(now, backup, acknowledgement).unwrap();
    assert!(replica.lease_from(backup) > before);
}
