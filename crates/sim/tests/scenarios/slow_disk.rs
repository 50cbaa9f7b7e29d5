//! A slow disk cannot cause an election: a node whose fsync hangs for a long time, leader or
//! follower, under client load, costs no leader change and no acknowledged write, when its
//! driver persists asynchronously (steps, ticks and sends what needs no durability while a
//! Ready is outstanding). With the driver that holds every input until `advance`, the same
//! stall deposes the leader: the control shows the scenario can fail.

use chorus_core::{NodeId, Term};
use chorus_sim::history::{OpKind, Operation};
use chorus_sim::{Interleaving, SimConfig, Simulator};

use crate::{assert_passed, await_leader, completed_between, scripted};

/// The order of a driver that persists on another thread.
const ASYNC_STORAGE: Interleaving = Interleaving {
    apply_before_sync: true,
    step_during_ready: true,
    slow_disk: false,
    send_during_ready: true,
};

/// The order of a driver that waits for its fsync before it looks at any input.
const BLOCKING: Interleaving = Interleaving {
    apply_before_sync: true,
    step_during_ready: false,
    slow_disk: false,
    send_during_ready: false,
};

fn config(seed: u64, order: Interleaving) -> SimConfig {
    let mut config = scripted(seed, 3);
    config.ops = 4000;
    config.interleaving = Some(order);
    config
}

/// Who leads in which term, as every live node sees it.
fn leadership(sim: &Simulator) -> Vec<(NodeId, Term, Option<NodeId>)> {
    sim.node_ids()
        .into_iter()
        .filter_map(|node| sim.status(node).map(|s| (node, s.term, s.leader)))
        .collect()
}

fn writes(history: &[Operation], from: u64, to: u64) -> usize {
    completed_between(history, from, to)
        .iter()
        .filter(|op| op.kind != OpKind::Get)
        .count()
}

/// Stalls `node`'s disk for `units` under load; returns whether leadership stayed as it was,
/// and prints the writes completed during the stall against as long a time before it.
fn stall(sim: &mut Simulator, node: NodeId, units: u64, what: &str) -> bool {
    let before = leadership(sim);
    let start = sim.now();
    sim.stall_disk(node, units);
    sim.run_for(units);
    let end = sim.now();
    // Let the stalled write finish and the node catch up before comparing.
    sim.run_for(units / 5);
    let during = writes(sim.history(), start, end);
    let baseline = writes(sim.history(), start.saturating_sub(units), start);
    println!("{what}: {during} writes completed during a {units}-unit stall, {baseline} before");
    leadership(sim) == before
}

// A slow disk cannot cause an election (issue: the disk off the critical path). One and
// five seconds at one unit per millisecond: ten and fifty election timeouts.
#[test]
fn a_stalled_fsync_on_the_leader_or_a_follower_changes_no_leader_and_loses_no_write() {
    for seed in 1..=4 {
        let config = config(seed, ASYNC_STORAGE);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 20 * unit, seed);
        sim.run_for(5 * unit);
        let follower = sim
            .node_ids()
            .into_iter()
            .find(|&node| node != leader)
            .expect("three nodes");
        for (node, units, what) in [
            (leader, 1000, "leader 1 s"),
            (leader, 5000, "leader 5 s"),
            (follower, 1000, "follower 1 s"),
            (follower, 5000, "follower 5 s"),
        ] {
            assert!(
                stall(&mut sim, node, units, what),
                "seed {seed}: leadership changed during a stall ({what})"
            );
        }
        assert_eq!(sim.leader(), Some(leader));
        // No acknowledged write lost: the run's checkers and the linearizability checker
        // over the whole history.
        assert_passed(&sim.run());
    }
}

// The control: the same stall with a driver that blocks on its fsync deposes the leader.
#[test]
fn a_stalled_fsync_on_a_blocking_leader_costs_its_leadership() {
    for seed in 1..=4 {
        let config = config(seed, BLOCKING);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 20 * unit, seed);
        sim.run_for(5 * unit);
        assert!(
            !stall(&mut sim, leader, 1000, "blocking leader 1 s"),
            "seed {seed}: the leader survived a blocked driver"
        );
        assert_passed(&sim.run());
    }
}
