//! D. Crash and durability: restarts reload what was durable, and a power failure that loses
//! every unsynced write loses no acknowledged one.

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::SnapshotMeta;
use chorus_sim::Simulator;

use crate::{assert_passed, await_leader, scripted};

/// What a node had made durable before it crashed, as far as it had confirmed.
struct BeforeCrash {
    node: NodeId,
    term: Term,
    vote: Option<NodeId>,
    /// The snapshot the log was compacted to (a snapshot still being written is not durable).
    snapshot: SnapshotMeta,
    /// The first index the log held.
    first: LogIndex,
    /// The terms of the log from `first` up to the last index `advance` confirmed durable.
    log: Vec<Term>,
}

fn before_crash(sim: &Simulator, node: NodeId) -> BeforeCrash {
    let status = sim.status(node).expect("the node is up");
    let raft = sim.raft(node).expect("the node is up");
    let first = raft.first_index();
    BeforeCrash {
        node,
        term: status.term,
        vote: status.vote,
        snapshot: raft.snapshot(),
        first,
        log: (first.0..=status.persisted_index.0)
            .map(|i| {
                raft.term_at(LogIndex(i))
                    .expect("persisted entries are in the log")
            })
            .collect(),
    }
}

/// Checks a restarted node against what it had before the crash.
fn assert_reloaded(sim: &Simulator, before: &BeforeCrash, seed: u64, pattern: &str) {
    let node = before.node;
    let status = sim.status(node).expect("restarted");
    let raft = sim.raft(node).expect("restarted");
    assert_eq!(
        (status.term, status.vote),
        (before.term, before.vote),
        "seed {seed}, {pattern}: {node} reloaded another term or vote"
    );
    assert_eq!(
        raft.snapshot(),
        before.snapshot,
        "seed {seed}, {pattern}: {node} reloaded another snapshot"
    );
    // Every entry it held and had confirmed durable is back (the disk keeps the log from the
    // previous snapshot on, so the restarted log may even begin lower).
    let log: Vec<Term> = (before.first.0..before.first.0 + before.log.len() as u64)
        .map(|i| raft.term_at(LogIndex(i)).unwrap_or_default())
        .collect();
    assert_eq!(
        log, before.log,
        "seed {seed}, {pattern}: {node} lost or changed entries it had confirmed durable"
    );
}

// D18: a node that restarts reloads its term, its vote and every log entry it had confirmed
// durable, whether one node, a minority or the whole cluster restarts, under client load; the
// cluster then goes on and the run passes every check.
#[test]
fn restart_one_some_and_all_nodes_reloads_term_vote_and_log() {
    for seed in 1..=5 {
        let config = scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        for pattern in ["one", "some", "all", "one", "all"] {
            // A stable leader for a while, so that term and vote are long durable.
            let leader = await_leader(&mut sim, 20 * unit, seed);
            sim.run_for(3 * unit);
            let ids = sim.node_ids();
            let victims: Vec<NodeId> = match pattern {
                "one" => vec![leader],
                "some" => ids
                    .iter()
                    .copied()
                    .filter(|&n| n != leader)
                    .take(2)
                    .collect(),
                _ => ids.clone(),
            };
            let before: Vec<BeforeCrash> = victims.iter().map(|&n| before_crash(&sim, n)).collect();
            for &node in &victims {
                sim.crash_node(node);
            }
            sim.run_for(unit / 2);
            for state in &before {
                sim.restart_node(state.node);
                assert_reloaded(&sim, state, seed, pattern);
            }
        }
        assert_passed(&sim.run());
    }
}

// D19: every node loses power at once, again and again under load; each crash drops whatever
// the disks had not synced. Because a node persists before it acknowledges or votes, no write
// a client was told succeeded is lost (S6), and the history stays linearizable.
#[test]
fn power_failure_losing_unsynced_writes_loses_no_acknowledged_write() {
    let mut records_lost = 0;
    for seed in 1..=10 {
        let mut config = scripted(seed, 5);
        config.clients = 5;
        config.ops = 400;
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        for round in 0..6 {
            await_leader(&mut sim, 30 * unit, seed);
            // Crash at varied points of the load, not always right after an election.
            sim.run_for(unit + 37 * round);
            let ids = sim.node_ids();
            for &node in &ids {
                sim.crash_node(node);
            }
            sim.run_for(unit / 2);
            for &node in &ids {
                sim.restart_node(node);
            }
        }
        let report = sim.run();
        assert_passed(&report);
        assert!(
            report.stats.crashes >= 30,
            "seed {seed}: only {} crashes",
            report.stats.crashes
        );
        records_lost += report.stats.records_lost;
    }
    assert!(records_lost > 0, "no power failure lost an unsynced write");
}
