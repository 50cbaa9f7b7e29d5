//! Reads served from a leader's lease (thesis §6.4.1) under clocks that drift: within the
//! stated bound no read is stale; beyond it the lease is unsafe, and the checkers show it.
//!
//! In these runs every node's clock ticks at its own rate (`SimConfig::clock_drift_ppm`), and
//! the nemesis's stale-read hunt cuts the leader off with its clock slowed and every other
//! clock sped up by the full drift: the worst case the bound allows. The scripted scenarios
//! (F26 with G28, G29 and partial partitions) put the clocks at that worst case themselves,
//! send two of the five clients' reads to the leader, and check that leases were used and that
//! the whole history is linearizable (S7).

use chorus_core::NodeId;
use chorus_raft::MembershipChange;
use chorus_sim::{FaultProfile, SimConfig, Simulator};

use crate::membership::change;
use crate::{assert_passed, await_leader, is_leader, scripted};

fn leased(seed: u64, drift_ppm: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.faults = FaultProfile::Network;
    config.lease_reads = Some(true);
    config.clock_drift_ppm = drift_ppm;
    config
}

#[test]
fn leases_within_the_stated_drift_bound_serve_reads_and_none_is_stale() {
    let mut lease_reads = 0;
    for seed in 1..=12 {
        let report = chorus_sim::run(leased(seed, 50_000));
        assert_passed(&report);
        lease_reads += report.stats.lease_reads;
    }
    assert!(lease_reads > 0, "no read was served from a lease");
}

#[test]
fn a_clock_drift_beyond_the_stated_bound_shows_a_stale_read() {
    let caught = (1..=40).find(|&seed| {
        let report = chorus_sim::run(leased(seed, 900_000));
        report.violations.iter().any(|v| v.invariant == "S7")
    });
    assert!(
        caught.is_some(),
        "clocks 90% apart against a 5% bound, and no seed served a stale read"
    );
}

/// The stated drift bound (`clock_drift_bound_ppm`'s default), which the nodes size their
/// leases by.
const BOUND_PPM: i64 = 50_000;

const SEEDS: std::ops::RangeInclusive<u64> = 1..=3;

/// A scripted cluster of three voters (and `spares` spare nodes) with leases on, run until a
/// leader serves reads from its lease with the clocks at the worst case against it
/// ([`served_from_a_lease`]). Returns the simulator, the election timeout and the leader.
#[track_caller]
fn leader_serving_lease_reads(seed: u64, spares: usize) -> (Simulator, u64, NodeId) {
    let mut config = scripted(seed, 3);
    config.lease_reads = Some(true);
    config.clock_drift_ppm = BOUND_PPM.unsigned_abs();
    config.spares = spares;
    config.ops = 600;
    let unit = config.election_timeout_units();
    let mut sim = Simulator::new(config);
    sim.run_for(5 * unit);
    let leader = await_leader(&mut sim, 30 * unit, seed);
    served_from_a_lease(&mut sim, unit, seed, leader);
    (sim, unit, leader)
}

/// Puts the clocks at the worst case the bound allows against `leader`'s lease (its clock
/// slow by the bound, every other fast by it), sends two clients' reads to it, and waits
/// until a read is served from a lease.
#[track_caller]
fn served_from_a_lease(sim: &mut Simulator, unit: u64, seed: u64, leader: NodeId) {
    for node in sim.node_ids() {
        let ppm = if node == leader {
            -BOUND_PPM
        } else {
            BOUND_PPM
        };
        sim.set_clock_drift(node, ppm);
    }
    sim.pin_readers(Some(leader), 2);
    let before = sim.stats().lease_reads;
    let served = sim.run_until(30 * unit, |sim| sim.stats().lease_reads > before);
    assert!(
        served,
        "seed {seed}: {leader} served no read from its lease"
    );
}

/// Runs ten election timeouts under a partial partition: `leader` keeps leading in its term
/// and serves reads from its lease.
#[track_caller]
fn keeps_leading_from_its_lease(sim: &mut Simulator, unit: u64, seed: u64, leader: NodeId) {
    let term = sim.status(leader).expect("up").term;
    let before = sim.stats().lease_reads;
    sim.run_for(10 * unit);
    assert!(
        is_leader(sim, leader),
        "seed {seed}: the leader lost its quorum"
    );
    assert_eq!(sim.status(leader).expect("up").term, term, "seed {seed}");
    assert!(
        sim.stats().lease_reads > before,
        "seed {seed}: no lease read under the partial partition"
    );
}

/// The voters other than `leader`, in id order.
fn followers(sim: &Simulator, leader: NodeId) -> Vec<NodeId> {
    let raft = sim.raft(leader).expect("the leader is up");
    let voters = raft.membership().voters.iter().copied();
    voters.filter(|&node| node != leader).collect()
}

// F26 with G29: a leadership transfer while the leader serves reads from its lease. The
// target is elected at once, past every voter's promise (TimeoutNow), so the old leader gives
// its lease up when the transfer starts: no read is served from a lease from then until the
// new leader has committed in its term and renewed a lease of its own, which it then does.
#[test]
fn a_leadership_transfer_while_the_leader_serves_lease_reads_serves_no_stale_read() {
    for seed in SEEDS {
        let (mut sim, unit, leader) = leader_serving_lease_reads(seed, 0);
        let target = followers(&sim, leader)[0];
        sim.transfer_leadership(leader, target)
            .expect("the transfer starts");
        assert!(
            !sim.raft(leader).expect("up").holds_lease(),
            "seed {seed}: the lease outlived the transfer's start"
        );
        let before = sim.stats().lease_reads;
        let moved = sim.run_until(20 * unit, |sim| is_leader(sim, target));
        assert!(moved, "seed {seed}: the target never took over");
        assert_eq!(
            sim.stats().lease_reads,
            before,
            "seed {seed}: a read was served from a lease during the transfer"
        );
        served_from_a_lease(&mut sim, unit, seed, target);
        assert_passed(&sim.run());
    }
}

// F26 with G28: membership changes while the leader serves reads from its lease: a follower
// is removed, a spare added as a learner and promoted. Each change of the configuration in
// force ends the lease, and the next quorum round (of the new configuration) renews it, so
// reads are served from leases between the changes, and none is stale.
#[test]
fn membership_changes_while_the_leader_serves_lease_reads_serve_no_stale_read() {
    for seed in SEEDS {
        let (mut sim, unit, leader) = leader_serving_lease_reads(seed, 1);
        let removed = followers(&sim, leader)[0];
        for step in [
            MembershipChange::Remove(removed),
            MembershipChange::AddLearner(NodeId(4)),
            MembershipChange::Promote(NodeId(4)),
        ] {
            change(&mut sim, unit, seed, step);
        }
        let leader = await_leader(&mut sim, 30 * unit, seed);
        served_from_a_lease(&mut sim, unit, seed, leader);
        let voters = sim.raft(leader).expect("up").membership().voters.clone();
        assert!(
            voters.contains(&NodeId(4)) && !voters.contains(&removed),
            "seed {seed}: {voters:?}"
        );
        assert_passed(&sim.run());
    }
}

// F26 with a partial partition: the leader reaches only one of its two followers. It keeps
// its quorum (and its lease, renewed by the one follower), and the cut-off follower cannot
// be elected (the other still hears the leader and refuses). Then the leader loses the other
// follower too, its clock slow and theirs fast by the bound: they elect a new leader only
// after its lease ran out, and the reads sent to it meanwhile are not stale.
#[test]
fn a_leader_that_reaches_one_of_two_followers_keeps_its_lease_and_serves_no_stale_read() {
    for seed in SEEDS {
        let (mut sim, unit, leader) = leader_serving_lease_reads(seed, 0);
        let followers = followers(&sim, leader);
        let (near, far) = (followers[0], followers[1]);
        sim.partition(&[vec![leader], vec![far]]);
        keeps_leading_from_its_lease(&mut sim, unit, seed, leader);
        sim.heal();
        sim.partition(&[vec![leader], vec![near, far]]);
        let elected = sim.run_until(20 * unit, |sim| is_leader(sim, near) || is_leader(sim, far));
        assert!(elected, "seed {seed}: the others elected nobody");
        // The new leader takes writes while readers still try the old one.
        sim.run_for(5 * unit);
        assert_passed(&sim.run());
    }
}

// F26 with the other partial partition: the two followers cannot reach each other, and both
// reach the leader. Nothing changes: the leader keeps its term and its lease, renewed by
// either follower, and serves reads from it; none is stale.
#[test]
fn followers_that_cannot_reach_each_other_leave_the_lease_alone_and_no_read_is_stale() {
    for seed in SEEDS {
        let (mut sim, unit, leader) = leader_serving_lease_reads(seed, 0);
        let followers = followers(&sim, leader);
        sim.partition(&[vec![followers[0]], vec![followers[1]]]);
        keeps_leading_from_its_lease(&mut sim, unit, seed, leader);
        assert_passed(&sim.run());
    }
}
