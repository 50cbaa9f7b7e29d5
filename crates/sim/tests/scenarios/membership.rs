//! G28, G29. Membership changes and leadership transfer under client load: removing the
//! leader, replacing a crashed node, a node removed behind a partition coming back, and
//! transfers to a lagging follower, after a snapshot, timing out and during a change. Each
//! ends with [`Simulator::run`]: convergence of the final configuration, every checker
//! (S1 across configurations, M1, M2 among them) and linearizability of the whole history.

use chorus_core::NodeId;
use chorus_raft::{MembershipChange, Role};
use chorus_sim::Simulator;

use crate::{assert_passed, await_leader, is_leader, scripted};

const SEEDS: std::ops::RangeInclusive<u64> = 1..=3;

/// A three-voter cluster under load with `spares` spare nodes (ids 4, 5, …) outside it.
fn cluster(seed: u64, spares: usize) -> (Simulator, u64) {
    let mut config = scripted(seed, 3);
    config.spares = spares;
    config.ops = 400;
    let unit = config.election_timeout_units();
    (Simulator::new(config), unit)
}

/// Proposes `change` at the current leader until one takes it (a change in progress, a
/// learner behind or a fresh leader make the core refuse; an operator retries).
#[track_caller]
pub(crate) fn change(
    sim: &mut Simulator,
    unit: u64,
    seed: u64,
    change: MembershipChange,
) -> NodeId {
    for _ in 0..200 {
        let leader = await_leader(sim, 30 * unit, seed);
        if sim.change_membership(leader, change).is_ok() {
            let done = sim.run_until(30 * unit, |sim| {
                sim.leader()
                    .and_then(|leader| sim.raft(leader))
                    .is_some_and(|raft| {
                        raft.membership_committed()
                            && raft.status().commit >= raft.status().last_index
                    })
            });
            assert!(done, "seed {seed}: {change:?} did not commit");
            return leader;
        }
        sim.run_for(unit / 2);
    }
    panic!("seed {seed}: {change:?} was never accepted");
}

fn voters(sim: &Simulator) -> Vec<NodeId> {
    let leader = sim.leader().expect("a leader");
    let raft = sim.raft(leader).expect("up");
    raft.membership().voters.iter().copied().collect()
}

// G28: the leader removes itself: it keeps leading, without counting itself, until the
// configuration without it commits, then steps down; the others elect a leader among
// themselves and the clients carry on.
#[test]
fn g28_removing_the_leader_hands_over_to_the_remaining_voters() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 0);
        sim.run_for(20 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let removed = change(&mut sim, unit, seed, MembershipChange::Remove(leader));
        let found = sim.run_until(30 * unit, |sim| {
            sim.leader().is_some_and(|now| now != removed)
        });
        assert!(
            found,
            "seed {seed}: no new leader after the leader's removal"
        );
        assert!(!is_leader(&sim, removed));
        assert_eq!(voters(&sim).len(), 2, "seed {seed}");
        assert_passed(&sim.run());
    }
}

// G28: a crashed voter is replaced under load: a spare is added as a learner, catches up,
// is promoted, and the dead node is removed; the cluster is whole again and survives the
// failure of another original voter.
#[test]
fn g28_a_crashed_node_is_replaced_under_load() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 1);
        sim.run_for(20 * unit);
        sim.crash_node(NodeId(3));
        change(
            &mut sim,
            unit,
            seed,
            MembershipChange::AddLearner(NodeId(4)),
        );
        change(&mut sim, unit, seed, MembershipChange::Promote(NodeId(4)));
        change(&mut sim, unit, seed, MembershipChange::Remove(NodeId(3)));
        assert_eq!(
            voters(&sim),
            vec![NodeId(1), NodeId(2), NodeId(4)],
            "seed {seed}"
        );
        sim.run_for(10 * unit);
        assert_passed(&sim.run());
    }
}

// G28: a voter cut off by a partition is removed while it cannot hear of it. When the
// partition heals it has missed its removal, but it cannot disturb the cluster: its
// pre-votes fail (its log is behind) and nobody campaigns for it; the term stays put.
#[test]
fn g28_a_node_removed_while_partitioned_does_not_disrupt_when_it_returns() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 0);
        sim.run_for(20 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let victim = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader)
            .expect("a follower");
        let rest: Vec<NodeId> = sim
            .node_ids()
            .into_iter()
            .filter(|&n| n != victim)
            .collect();
        sim.partition(&[vec![victim], rest]);
        change(&mut sim, unit, seed, MembershipChange::Remove(victim));
        sim.run_for(20 * unit);
        let leader = sim.leader().expect("a leader");
        let term = sim.status(leader).expect("up").term;
        sim.heal();
        sim.run_for(40 * unit);
        assert_eq!(sim.leader(), Some(leader), "seed {seed}");
        assert_eq!(
            sim.status(leader).expect("up").term,
            term,
            "seed {seed}: term moved"
        );
        assert_passed(&sim.run());
    }
}

// G29: a transfer to a follower that fell behind: the leader brings it up to date first
// (refusing new writes meanwhile), then it campaigns at once and wins.
#[test]
fn g29_a_transfer_to_a_lagging_follower() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 0);
        sim.run_for(20 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let target = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader)
            .expect("a follower");
        sim.crash_node(target);
        sim.run_for(10 * unit);
        sim.restart_node(target);
        sim.transfer_leadership(leader, target)
            .expect("the transfer starts");
        let moved = sim.run_until(20 * unit, |sim| is_leader(sim, target));
        assert!(moved, "seed {seed}: the lagging target never took over");
        assert_passed(&sim.run());
    }
}

// G29: a transfer to a follower that needs a snapshot first (the leader compacted past it).
#[test]
fn g29_a_transfer_after_a_snapshot() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 0);
        sim.run_for(10 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let target = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader)
            .expect("a follower");
        let behind = sim.status(target).expect("up").last_index;
        sim.crash_node(target);
        let compacted = sim.run_until(200 * unit, |sim| {
            sim.raft(leader)
                .is_some_and(|raft| raft.first_index().0 > behind.0 + 2)
        });
        assert!(compacted, "seed {seed}: the leader never compacted");
        let installs = sim.snapshot_stats().installed;
        sim.restart_node(target);
        sim.transfer_leadership(leader, target)
            .expect("the transfer starts");
        let moved = sim.run_until(40 * unit, |sim| is_leader(sim, target));
        if !moved {
            // A transfer that outlasts an election timeout is abandoned; ask again now that
            // the target is caught up.
            if let Some(leader) = sim.leader() {
                let _ = sim.transfer_leadership(leader, target);
            }
            assert!(
                sim.run_until(40 * unit, |sim| is_leader(sim, target)),
                "seed {seed}: the target never took over"
            );
        }
        assert!(
            sim.snapshot_stats().installed > installs,
            "seed {seed}: no install"
        );
        assert_passed(&sim.run());
    }
}

// G29: a transfer to a target that cannot answer is abandoned after an election timeout,
// and the leader serves writes again.
#[test]
fn g29_a_transfer_that_times_out_is_abandoned() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 0);
        sim.run_for(20 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let target = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader)
            .expect("a follower");
        sim.crash_node(target);
        sim.transfer_leadership(leader, target)
            .expect("the transfer starts");
        assert!(sim.raft(leader).expect("up").transfer_target().is_some());
        sim.run_for(3 * unit);
        let raft = sim.raft(leader).expect("the leader is up");
        assert_eq!(raft.status().role, Role::Leader, "seed {seed}");
        assert_eq!(raft.transfer_target(), None, "seed {seed}: not abandoned");
        let commit = raft.status().commit;
        sim.run_for(5 * unit);
        assert!(
            sim.status(leader).expect("up").commit > commit,
            "seed {seed}: the leader did not serve again"
        );
        sim.restart_node(target);
        assert_passed(&sim.run());
    }
}

// G29: a transfer while a membership change is in flight (a learner being added): the
// target gets the change with the rest of the log and leads in the new configuration.
#[test]
fn g29_a_transfer_during_a_membership_change() {
    for seed in SEEDS {
        let (mut sim, unit) = cluster(seed, 1);
        sim.run_for(20 * unit);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let target = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader && n.0 <= 3)
            .expect("a follower");
        sim.change_membership(leader, MembershipChange::AddLearner(NodeId(4)))
            .expect("the change starts");
        sim.transfer_leadership(leader, target)
            .expect("the transfer starts during the change");
        let moved = sim.run_until(20 * unit, |sim| is_leader(sim, target));
        assert!(moved, "seed {seed}: the target never took over");
        let raft = sim.raft(target).expect("up");
        assert!(raft.membership().is_learner(NodeId(4)), "seed {seed}");
        assert_passed(&sim.run());
    }
}
