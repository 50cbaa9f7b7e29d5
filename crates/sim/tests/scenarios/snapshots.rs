//! D21, E22, E23. Snapshots and compaction: the log stays bounded, a node restarts from its
//! snapshot and the log after it, a crash while a snapshot is written or received loses only
//! that snapshot, and a follower that fell behind the compacted log catches up by
//! InstallSnapshot, over a lossy network and through crashes. Every run ends with
//! [`Simulator::run`], whose checkers compare states at snapshot points (S4).

use chorus_core::{LogIndex, NodeId};
use chorus_sim::{LinkFaults, Simulator};

use crate::{assert_passed, await_leader, scripted};

/// How many entries a node's log holds in memory.
fn log_length(sim: &Simulator, node: NodeId) -> u64 {
    let raft = sim.raft(node).expect("the node is up");
    raft.status().last_index.0 + 1 - raft.first_index().0
}

// E22: under steady load every node snapshots again and again and compacts its log, so the
// entries it holds, in memory and on disk, stay bounded by the snapshot threshold, the
// compaction tail and the entries written while a snapshot is in the background, however
// many entries the cluster commits.
#[test]
fn the_log_is_trimmed_at_the_threshold_and_stays_bounded() {
    for seed in 1..=3 {
        let mut config = scripted(seed, 3);
        config.ops = 600;
        let every = config.snapshot_every_entries;
        let tail = config.compaction_tail_entries;
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        await_leader(&mut sim, 30 * unit, seed);
        let (mut memory_max, mut disk_max) = (0, 0);
        for _ in 0..200 {
            sim.run_for(unit / 2);
            for node in sim.node_ids() {
                memory_max = memory_max.max(log_length(&sim, node));
                disk_max = disk_max.max(sim.disk(node).durable().entries.len() as u64);
            }
        }
        let leader = sim.leader().expect("a leader under steady load");
        let commit = sim.status(leader).expect("up").commit;
        assert!(
            commit.0 > 10 * every,
            "seed {seed}: only {commit} committed"
        );
        // In memory: the tail, the entries since the snapshot (the threshold, plus what was
        // applied while it was written). On disk also the entries since the previous one.
        let bound = 4 * every + tail;
        assert!(
            memory_max <= bound && disk_max <= bound + every,
            "seed {seed}: logs of {memory_max} entries in memory and {disk_max} on disk \
             after {commit} committed (bound {bound})"
        );
        for node in sim.node_ids() {
            assert!(
                sim.raft(node).expect("up").snapshot().index > LogIndex(5 * every),
                "seed {seed}: {node} did not keep snapshotting"
            );
        }
        let report = sim.run();
        assert_passed(&report);
        assert!(
            report.snapshots.taken >= 30,
            "seed {seed}: {:?}",
            report.snapshots
        );
    }
}

// D18 and D21: nodes that restart, one or all at once, come back from their newest durable
// snapshot and the log after it (not from index 1), with the state machine restored from the
// snapshot: the checkers compare its state with every other node's at that index.
#[test]
fn restart_from_the_snapshot_and_the_log_after_it() {
    for seed in 1..=5 {
        let config = scripted(seed, 3);
        let unit = config.election_timeout_units();
        let every = config.snapshot_every_entries;
        let mut sim = Simulator::new(config);
        for all in [false, true, false] {
            await_leader(&mut sim, 30 * unit, seed);
            let leader = sim.leader().expect("awaited");
            let victims = if all { sim.node_ids() } else { vec![leader] };
            // Every node snapshots on its own schedule: wait until each victim holds one to
            // restart from.
            let compacted = sim.run_until(200 * unit, |sim| {
                victims.iter().all(|&node| {
                    sim.raft(node)
                        .is_some_and(|raft| raft.snapshot().index.0 >= every)
                        && !sim.snapshot_in_progress(node)
                })
            });
            assert!(compacted, "seed {seed}: no snapshot taken");
            let snapshots: Vec<_> = victims
                .iter()
                .map(|&node| sim.raft(node).expect("up").snapshot())
                .collect();
            for &node in &victims {
                sim.crash_node(node);
            }
            sim.run_for(unit);
            for (&node, &snapshot) in victims.iter().zip(&snapshots) {
                let restored = sim.snapshot_stats().restored;
                sim.restart_node(node);
                assert_eq!(
                    sim.snapshot_stats().restored,
                    restored + 1,
                    "seed {seed}: {node} did not restore its state machine from the snapshot"
                );
                let raft = sim.raft(node).expect("restarted");
                assert_eq!(raft.snapshot(), snapshot, "seed {seed}: {node}'s snapshot");
                // Its first Ready replays only the committed entries after the snapshot.
                assert!(raft.status().applied >= snapshot.index);
                assert!(
                    raft.first_index() > LogIndex(1),
                    "seed {seed}: not compacted"
                );
            }
        }
        let report = sim.run();
        assert_passed(&report);
        assert!(
            report.snapshots.restored >= 4,
            "seed {seed}: {:?}",
            report.snapshots
        );
    }
}

// D21: a node that crashes while its snapshot is still being written (before the file is
// durable) loses that snapshot and nothing else: it restarts from the previous one and
// replays the log after it, which compaction had not touched yet. Also every node at once.
#[test]
fn crash_while_a_snapshot_is_written_loses_only_that_snapshot() {
    let mut crashed_mid_write = 0;
    for seed in 1..=8 {
        let mut config = scripted(seed, 3);
        config.ops = 600;
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        for round in 0..4 {
            await_leader(&mut sim, 30 * unit, seed);
            let ids = sim.node_ids();
            let writing = sim.run_until(200 * unit, |sim| {
                ids.iter().any(|&node| sim.snapshot_in_progress(node))
            });
            assert!(writing, "seed {seed}: no snapshot was ever in progress");
            let node = *ids
                .iter()
                .find(|&&node| sim.snapshot_in_progress(node))
                .expect("found above");
            let durable = sim.raft(node).expect("up").snapshot();
            let victims = if round == 3 { ids.clone() } else { vec![node] };
            for &victim in &victims {
                sim.crash_node(victim);
            }
            crashed_mid_write += 1;
            assert_eq!(
                sim.disk(node).durable().snapshot.map(|meta| meta.index),
                (durable.index > LogIndex(0)).then_some(durable.index),
                "seed {seed}: the half-written snapshot became durable"
            );
            sim.run_for(unit);
            for &victim in &victims {
                sim.restart_node(victim);
            }
            assert_eq!(sim.raft(node).expect("restarted").snapshot(), durable);
        }
        assert_passed(&sim.run());
    }
    assert!(crashed_mid_write >= 30);
}

/// Partitions `follower` away from the others until the leader's log was compacted past
/// everything the follower holds, then heals. Returns the leader's snapshot index then.
#[track_caller]
fn leave_behind(sim: &mut Simulator, follower: NodeId, unit: u64, seed: u64) -> LogIndex {
    let others: Vec<NodeId> = sim
        .node_ids()
        .into_iter()
        .filter(|&n| n != follower)
        .collect();
    sim.partition(&[vec![follower], others.clone()]);
    let behind = sim.run_until(400 * unit, |sim| {
        let last = sim.status(follower).map_or(LogIndex(0), |s| s.last_index);
        others.iter().any(|&n| {
            sim.raft(n).is_some_and(|raft| {
                raft.status().role == chorus_raft::Role::Leader && raft.first_index() > last.next()
            })
        })
    });
    assert!(
        behind,
        "seed {seed}: the leader never compacted past {follower}'s log"
    );
    let leader = sim.leader().expect("a leader of the majority");
    let snapshot = sim.raft(leader).expect("up").snapshot().index;
    sim.heal();
    snapshot
}

// E23: a follower partitioned away while the others commit and compact cannot catch up by
// AppendEntries (the entries it needs are gone); the leader sends it the snapshot in chunks,
// it installs it and goes on from there, on a network that loses, duplicates and reorders
// chunks.
#[test]
fn a_lagging_follower_catches_up_by_install_snapshot_over_a_lossy_network() {
    for seed in 1..=6 {
        let config = scripted(seed, 3);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let follower = *sim
            .node_ids()
            .iter()
            .find(|&&n| n != leader)
            .expect("three nodes");
        let snapshot = leave_behind(&mut sim, follower, unit, seed);
        sim.set_link_faults(LinkFaults {
            drop: 0.2,
            duplicate: 0.2,
            tail: 0.05,
        });
        let installed_before = sim.snapshot_stats().installed;
        let caught_up = sim.run_until(300 * unit, |sim| {
            sim.raft(follower)
                .is_some_and(|raft| raft.snapshot().index >= snapshot)
        });
        assert!(
            caught_up,
            "seed {seed}: {follower} never installed a snapshot"
        );
        assert!(sim.snapshot_stats().installed > installed_before);
        sim.set_link_faults(LinkFaults::RELIABLE);
        let report = sim.run();
        assert_passed(&report);
    }
}

// E23: a follower that crashes while it receives a snapshot (a half-received, never
// installed file) restarts without it and gets the snapshot again from the start; a follower
// that receives a snapshot it already holds (duplicates, a new leader sending again)
// acknowledges it without rolling back (S4 and S5 would see it).
#[test]
fn crash_while_receiving_a_snapshot_restarts_the_transfer() {
    let mut crashed_mid_install = 0;
    for seed in 1..=6 {
        let mut config = scripted(seed, 3);
        // Many chunks per snapshot, so a crash lands between two of them.
        config.snapshot_chunk_bytes = Some(16);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let follower = *sim
            .node_ids()
            .iter()
            .find(|&&n| n != leader)
            .expect("three nodes");
        let snapshot = leave_behind(&mut sim, follower, unit, seed);
        let receiving = sim.run_until(100 * unit, |sim| sim.snapshot_partial(follower).is_some());
        if receiving {
            crashed_mid_install += 1;
            sim.crash_node(follower);
            assert!(
                sim.disk(follower)
                    .durable()
                    .snapshot
                    .is_none_or(|meta| meta.index < snapshot),
                "seed {seed}: a half-received snapshot became durable"
            );
            sim.run_for(2 * unit);
            sim.restart_node(follower);
        }
        let caught_up = sim.run_until(300 * unit, |sim| {
            sim.raft(follower)
                .is_some_and(|raft| raft.snapshot().index >= snapshot)
        });
        assert!(
            caught_up,
            "seed {seed}: {follower} never installed a snapshot"
        );
        assert_passed(&sim.run());
    }
    assert!(
        crashed_mid_install >= 3,
        "only {crashed_mid_install} crashes mid-install"
    );
}
