//! D. Protocol-aware recovery: a node whose disk damaged synced log records repairs them from
//! its peers, and its vote never elects a leader that lacks a committed entry it lost.

use chorus_core::NodeId;
use chorus_sim::{RunReport, SimConfig, Simulator};

use crate::{assert_passed, await_leader, scripted};

/// What one run of the scenario below saw.
struct Outcome {
    /// Whether the disk damaged a synced record of the follower.
    damaged: bool,
    /// The leader elected while the damaged node repaired and the old leader was down.
    leader_while_repairing: Option<NodeId>,
    /// Whether the follower was still repairing after the old leader came back.
    still_repairing: bool,
    report: RunReport,
}

/// Entries commit on the leader and one follower while the third node is cut off; then the
/// follower crashes and its disk damages synced records (it may have acknowledged the lost
/// entries), and the leader goes down. The damaged node restarts; later the old leader comes
/// back, and the run goes on to its end.
fn damaged_follower_and_crashed_leader(seed: u64, configure: impl Fn(&mut SimConfig)) -> Outcome {
    let mut config = scripted(seed, 3);
    config.synced_damage = Some(true);
    config.ops = 300;
    configure(&mut config);
    let unit = config.election_timeout_units();
    let mut sim = Simulator::new(config);
    let leader = await_leader(&mut sim, 30 * unit, seed);
    let ids = sim.node_ids();
    let others: Vec<NodeId> = ids.iter().copied().filter(|&n| n != leader).collect();
    let (follower, cut_off) = (others[0], others[1]);
    sim.partition(&[vec![leader, follower], vec![cut_off]]);
    sim.run_for(3 * unit);

    sim.crash_node(follower);
    let damaged = sim.damage_synced_record(follower).is_some();
    sim.crash_node(leader);
    sim.heal();
    sim.restart_node(follower);
    if damaged {
        let status = sim.status(follower).expect("restarted");
        assert!(status.repairing.is_some(), "seed {seed}: not repairing");
    }
    sim.run_for(10 * unit);
    let leader_while_repairing = sim.leader();
    sim.restart_node(leader);
    sim.run_for(20 * unit);
    let still_repairing = sim.status(follower).expect("up").repairing.is_some();
    Outcome {
        damaged,
        leader_while_repairing,
        still_repairing,
        report: sim.run(),
    }
}

// D20: the damaged node restarts repairing: with the old leader down, it and the cut-off node
// elect no one (its vote would elect a leader without the committed entries). Once the old
// leader is back, a leader of a later term repairs it, and the run's checkers (S3: no
// committed entry lost; S6; linearizability) pass.
#[test]
fn a_node_whose_synced_records_were_damaged_repairs_them_from_its_peers() {
    let mut damaged_runs = 0;
    for seed in 1..=8 {
        let outcome = damaged_follower_and_crashed_leader(seed, |_| {});
        if outcome.damaged {
            damaged_runs += 1;
            assert_eq!(
                outcome.leader_while_repairing, None,
                "seed {seed}: a node repairing its log helped elect a leader"
            );
        }
        assert!(!outcome.still_repairing, "seed {seed}: never repaired");
        assert_passed(&outcome.report);
    }
    assert!(
        damaged_runs >= 4,
        "only {damaged_runs} of 8 runs damaged a synced record"
    );
}

// D21: two voters. The follower's disk damages synced records it had acknowledged; it
// restarts repairing in a later term, so the leader steps down and cannot win again without
// the follower's vote. The follower gives it: the leader's log reaches where the follower's
// ended before the damage. The cluster goes on, the follower is repaired, and the checkers
// (liveness included) pass.
#[test]
fn in_a_cluster_of_two_voters_a_damaged_follower_is_repaired_and_the_cluster_goes_on() {
    let mut damaged_runs = 0;
    for seed in 1..=8 {
        let mut config = scripted(seed, 2);
        config.synced_damage = Some(true);
        config.ops = 300;
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 30 * unit, seed);
        let follower = sim
            .node_ids()
            .into_iter()
            .find(|&node| node != leader)
            .expect("two nodes");
        sim.run_for(3 * unit);
        sim.crash_node(follower);
        let damaged = sim.damage_synced_record(follower).is_some();
        sim.restart_node(follower);
        if damaged {
            damaged_runs += 1;
            let status = sim.status(follower).expect("restarted");
            assert!(status.repairing.is_some(), "seed {seed}: not repairing");
        }
        sim.run_for(20 * unit);
        assert!(
            sim.leader().is_some(),
            "seed {seed}: the two voters elect no one"
        );
        assert!(
            sim.status(follower).expect("up").repairing.is_none(),
            "seed {seed}: never repaired"
        );
        assert_passed(&sim.run());
    }
    assert!(
        damaged_runs >= 4,
        "only {damaged_runs} of 8 runs damaged a synced record"
    );
}

// The same scenario with a repairing node that votes (the injected bug): its vote elects the
// cut-off node, which lacks the committed entries, and the checkers see them lost.
#[cfg(feature = "inject-bugs")]
#[test]
fn a_repairing_node_that_votes_is_caught_losing_committed_entries() {
    let mut caught = 0;
    for seed in 1..=8 {
        let outcome = damaged_follower_and_crashed_leader(seed, |config| {
            config.injected_bugs.repairing_node_votes = true;
        });
        let invariants: Vec<&str> = outcome
            .report
            .violations
            .iter()
            .map(|v| v.invariant)
            .collect();
        if outcome.damaged && outcome.leader_while_repairing.is_some() {
            assert!(
                invariants.contains(&"S3"),
                "seed {seed}: a leader without committed entries and S3 saw nothing"
            );
            caught += 1;
        }
    }
    assert!(caught >= 4, "only {caught} of 8 seeds caught the bug");
}
