//! Hybrid scenarios (SCENARIOS.md G30, and each weakness of `pb` that the hybrid must cure or
//! honestly keep) in the simulator: `chorus_hybrid` data servers and a three-node Raft
//! configuration group with the shared network, clients, checkers and linearizability
//! checker.
//!
//! Each test scripts its faults through [`HybridSimulator`]'s scripted control, asserts what
//! the scenario is about, and ends with [`HybridSimulator::run`], which heals everything,
//! demands convergence within the liveness bound and runs every final check.

use chorus_core::NodeId;
use chorus_sim::history::{OpStatus, Operation};
use chorus_sim::{FaultProfile, HybridSimulator, Protocol, RunReport, SimConfig};

/// A fault-free hybrid configuration: the test injects every fault itself.
fn scripted(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.protocol = Protocol::Hybrid;
    config.ops = 300;
    config.faults = FaultProfile::None;
    config
}

#[track_caller]
fn assert_passed(report: &RunReport) {
    assert!(
        report.passed(),
        "seed {}: {} violation(s): {:#?}",
        report.seed,
        report.violations.len(),
        report.violations
    );
    assert!(
        report.linearizable(),
        "seed {}: {:?}",
        report.seed,
        report.verdict
    );
}

/// Runs until a primary serves a view with a backup; returns (primary, backup).
#[track_caller]
fn await_pair(sim: &mut HybridSimulator, seed: u64) -> (NodeId, NodeId) {
    let found = sim.run_until(10_000, |sim| {
        sim.serving()
            .and_then(|primary| sim.data_status(primary))
            .is_some_and(|status| status.view.backups.len() == 1)
    });
    assert!(found, "seed {seed}: no serving view with a backup");
    let primary = sim.serving().expect("checked above");
    let view = sim.data_status(primary).expect("checked above").view;
    (primary, view.backups[0])
}

/// Runs until a server other than `old` serves.
#[track_caller]
fn await_new_primary(sim: &mut HybridSimulator, old: NodeId, seed: u64) -> NodeId {
    let found = sim.run_until(10_000, |sim| sim.serving().is_some_and(|p| p != old));
    assert!(found, "seed {seed}: nobody replaced {old}");
    sim.serving().expect("checked above")
}

/// Cuts `node` off from every other data server and from the configuration group (clients
/// still reach it).
fn isolate(sim: &mut HybridSimulator, node: NodeId) {
    let others: Vec<NodeId> = sim
        .node_ids()
        .into_iter()
        .chain(sim.config_ids())
        .filter(|other| *other != node)
        .collect();
    sim.partition(&[vec![node], others]);
}

fn completed_since(history: &[Operation], from: u64) -> usize {
    history
        .iter()
        .filter(|op| op.status == OpStatus::Ok && op.ret.is_some_and(|r| r >= from))
        .count()
}

// G30: every view change is committed through the configuration group; the backup of the last
// active view takes over after the primary dies, holding every acknowledged write (H3, S6).
#[test]
fn g30_a_failover_is_committed_through_the_group_and_keeps_every_acknowledged_write() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        sim.run_for(300);
        sim.crash_node(primary);
        let new = await_new_primary(&mut sim, primary, seed);
        assert_eq!(
            new, backup,
            "seed {seed}: the new primary is the last view's backup"
        );
        assert_passed(&sim.run());
    }
}

// No single point of failure: the configuration leader is killed right after the primary,
// in the middle of the failover; a new leader is elected and the failover completes.
#[test]
fn the_configuration_leader_killed_during_a_failover_does_not_stop_it() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        sim.crash_node(primary);
        sim.run_for(60);
        let leader = sim.config_leader().expect("the group has a leader");
        sim.crash_config(leader);
        let new = await_new_primary(&mut sim, primary, seed);
        assert_eq!(new, backup);
        assert_ne!(sim.config_leader(), Some(leader));
        assert_passed(&sim.run());
    }
}

// A live but slow primary (here: cut off from its backup, still talking to the group) is
// suspected. Whoever wins the race for the next epoch, the primary dropping the backup whose
// lease ran out or the backup whose grace period ended, the view changes through the group
// and no two servers serve at once (H1, checked at every step), nothing inconsistent (S7).
#[test]
fn a_live_primary_cut_off_from_its_backup_is_fenced_or_shrinks_the_view() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        let epoch = sim.configured_view().expect("the group is up").epoch;
        sim.cut_one_way(&[primary], &[backup]);
        sim.cut_one_way(&[backup], &[primary]);
        let changed = sim.run_until(10_000, |sim| {
            sim.configured_view()
                .is_some_and(|view| view.epoch > epoch && view.active)
        });
        assert!(changed, "seed {seed}: the view changed through the group");
        let view = sim.configured_view().expect("the group is up");
        assert!(
            !(view.is_member(primary) && view.is_member(backup)),
            "seed {seed}: the new view {view:?} dropped one of the pair"
        );
        assert!(
            sim.violations().is_empty(),
            "seed {seed}: {:?}",
            sim.violations()
        );
        assert_passed(&sim.run());
    }
}

// Primary and backup fail in turn: no stuck state while a member of the last active view
// lives (pb's dead end, cured by durable logs and the configuration group).
#[test]
fn primary_and_backup_failing_in_turn_leave_no_stuck_state() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        sim.crash_node(primary);
        let new = await_new_primary(&mut sim, primary, seed);
        assert_eq!(new, backup);
        sim.restart_node(primary);
        sim.run_for(200);
        sim.crash_node(backup);
        let report = sim.run();
        assert!(!report.stuck);
        assert_passed(&report);
    }
}

// The configuration group loses its majority: no reconfiguration, nothing inconsistent, and
// the healthy view keeps serving reads and writes.
#[test]
fn losing_the_configuration_majority_stops_reconfiguration_not_service() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, _) = await_pair(&mut sim, seed);
        let ids = sim.config_ids();
        sim.crash_config(ids[0]);
        sim.crash_config(ids[1]);
        let from = sim.now();
        sim.run_for(1_500);
        assert_eq!(
            sim.serving(),
            Some(primary),
            "seed {seed}: the view keeps serving"
        );
        assert!(
            completed_since(sim.history(), from) > 0,
            "seed {seed}: operations completed without a configuration majority"
        );
        sim.restart_config(ids[0]);
        sim.restart_config(ids[1]);
        assert_passed(&sim.run());
    }
}

// The drift bound is what makes leases safe: with clocks far beyond it (the primary's slow,
// the backup's fast, 500 000 ppm each), the backup's grace ends while the primary still
// holds its lease, and the checkers catch two servers serving (an expected violation).
#[test]
fn drift_far_beyond_the_bound_lets_two_servers_serve_and_the_checkers_catch_it() {
    let mut caught = 0;
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        sim.set_clock_drift(primary, -500_000);
        sim.set_clock_drift(backup, 500_000);
        isolate(&mut sim, primary);
        sim.run_for(3_000);
        let report = sim.run();
        if report
            .violations
            .iter()
            .any(|v| v.invariant == "H1" || v.invariant == "H5")
        {
            caught += 1;
        }
    }
    assert!(
        caught > 0,
        "no seed showed two servers serving under 50% drift"
    );
}

// The same partition with drift at the stated bound is safe.
#[test]
fn drift_at_the_bound_is_safe_in_the_same_partition() {
    for seed in 1..=4 {
        let mut sim = HybridSimulator::new(scripted(seed));
        let (primary, backup) = await_pair(&mut sim, seed);
        sim.set_clock_drift(primary, -50_000);
        sim.set_clock_drift(backup, 50_000);
        isolate(&mut sim, primary);
        sim.run_for(3_000);
        assert_passed(&sim.run());
    }
}
