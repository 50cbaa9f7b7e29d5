//! Primary-backup scenarios of SCENARIOS.md section A in the simulator: `chorus_pb` servers
//! and view service with the shared network, clients, checkers and linearizability checker.
//!
//! Each test scripts its faults through [`PbSimulator`]'s scripted control, asserts what the
//! scenario is about, and ends with [`PbSimulator::run`], which heals everything, demands
//! convergence (or, in the documented dead end, reports the run as stuck) and runs every
//! final check. The smaller harness of `crates/pb/tests/scenarios.rs` drives the same cores
//! message by message; these run them under the whole simulator.

use chorus_core::NodeId;
use chorus_kv::{Command, Op};
use chorus_pb::ViewNumber;
use chorus_sim::history::{OpStatus, Operation};
use chorus_sim::{FaultProfile, PbSimulator, Protocol, RunReport, SimConfig};

/// A fault-free primary-backup configuration: the test injects every fault itself.
fn scripted(seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.protocol = Protocol::Pb;
    config.nodes = nodes;
    config.ops = 200;
    config.faults = FaultProfile::None;
    config
}

/// Asserts that the run found nothing wrong.
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

/// Runs until the view service's view has a backup that installed the state and the view is
/// acknowledged; returns (view number, primary, backup).
#[track_caller]
fn await_pair(sim: &mut PbSimulator, seed: u64) -> (ViewNumber, NodeId, NodeId) {
    let found = sim.run_until(2_000, |sim| {
        sim.view_service().is_some_and(|service| {
            let view = service.get_view();
            view.backup.is_some() && service.primary_acked()
        })
    });
    assert!(found, "seed {seed}: no acknowledged view with a backup");
    let view = sim.view().expect("the view service is up");
    let primary = view.primary.expect("a view names its primary");
    let backup = view.backup.expect("checked above");
    (view.number, primary, backup)
}

/// The operations that completed successfully at a time in `from..`.
fn completed_since(history: &[Operation], from: u64) -> usize {
    history
        .iter()
        .filter(|op| op.status == OpStatus::Ok && op.ret.is_some_and(|r| r >= from))
        .count()
}

fn put(key: &str, value: &str) -> Command {
    Command::Unsessioned(Op::Put {
        key: bytes::Bytes::copy_from_slice(key.as_bytes()),
        value: bytes::Bytes::copy_from_slice(value.as_bytes()),
    })
}

// A1: the first server becomes primary alone; the view with a backup is acknowledged (and so
// counts) only once the backup installed the complete state.
#[test]
fn a1_the_backup_counts_only_after_state_transfer() {
    for seed in 1..=5 {
        let mut sim = PbSimulator::new(scripted(seed, 3));
        let first = sim.run_until(500, |sim| sim.view().is_some_and(|v| v.number.0 >= 1));
        assert!(first, "seed {seed}");
        let view = sim.view().expect("up");
        assert_eq!(view.number, ViewNumber(1));
        assert_eq!(view.backup, None, "seed {seed}: view 1 has no backup");
        let (number, primary, backup) = await_pair(&mut sim, seed);
        let status = sim.status(backup).expect("the backup is up");
        assert_eq!(
            status.ready_in_view,
            Some(number),
            "seed {seed}: acknowledged before the backup installed the state"
        );
        assert!(sim.status(primary).is_some_and(|s| s.acting_primary));
        assert_passed(&sim.run());
    }
}

// A2 and A4: the lone server dies and comes back empty. It must not serve, and the view
// service never makes it (or anyone) primary without the data: the run ends stuck, with every
// safety check passing.
// Drawn: `chorus sim --scenario pb-stuck --html pb-stuck.html` (docs/gallery/pb-stuck.png).
#[test]
fn a4_a_lone_server_that_restarts_empty_never_serves() {
    for seed in 1..=3 {
        let mut sim = PbSimulator::new(scripted(seed, 1));
        let node = NodeId(1);
        let served = sim.run_until(2_000, |sim| sim.answered(NodeId(1)) >= 20);
        assert!(served, "seed {seed}: the lone primary served");
        let view = sim.view().expect("up");
        sim.crash_node(node);
        sim.run_for(30);
        sim.restart_node(node);
        let answered = sim.answered(node);
        sim.run_for(3_000);
        assert_eq!(
            sim.answered(node),
            answered,
            "seed {seed}: the empty server served"
        );
        // It may take itself for the primary of view 1 (its own rule lets a fresh server act
        // in view 1), but the service never confirms the view again, so it answers nothing.
        assert!(
            !sim.view_service().is_some_and(|s| s.primary_acked()),
            "seed {seed}: the service confirmed an empty primary"
        );
        assert_eq!(
            sim.view().map(|v| v.number),
            Some(view.number),
            "seed {seed}: the view moved on: {:?} then {:?}",
            view,
            sim.view()
        );
        let report = sim.run();
        assert!(report.stuck, "seed {seed}: the run must end stuck");
        assert_passed(&report);
    }
}

// A3 and A5: a dead backup is removed and a spare fills its slot; a dead primary is replaced
// by its backup, and writes succeed again soon after either failure.
#[test]
fn a5_writes_succeed_right_after_a_primary_or_backup_failure() {
    for seed in 1..=5 {
        let mut sim = PbSimulator::new(scripted(seed, 3));
        let (number, primary, backup) = await_pair(&mut sim, seed);
        // The backup fails: a new view without it, filled by the spare.
        sim.crash_node(backup);
        let crashed_at = sim.now();
        let replaced = sim.run_until(2_000, |sim| {
            sim.view()
                .is_some_and(|v| v.number > number && v.backup.is_some_and(|b| b != backup))
        });
        assert!(replaced, "seed {seed}: the dead backup was not replaced");
        assert_eq!(sim.view().and_then(|v| v.primary), Some(primary));
        let progress = sim.run_until(2_000, |sim| completed_since(sim.history(), crashed_at) >= 5);
        assert!(progress, "seed {seed}: no writes after the backup failed");
        sim.restart_node(backup);
        // The primary fails: its backup (which holds the state) takes over.
        let (number, primary, backup) = await_pair(&mut sim, seed);
        sim.crash_node(primary);
        let crashed_at = sim.now();
        let promoted = sim.run_until(2_000, |sim| {
            sim.view()
                .is_some_and(|v| v.number > number && v.primary == Some(backup))
        });
        assert!(promoted, "seed {seed}: the backup was not promoted");
        let progress = sim.run_until(2_000, |sim| completed_since(sim.history(), crashed_at) >= 5);
        assert!(progress, "seed {seed}: no writes after the primary failed");
        sim.restart_node(primary);
        let report = sim.run();
        assert!(!report.stuck, "seed {seed}");
        assert_passed(&report);
    }
}

// A6: split brain. The primary is cut off from the view service, its backup and the spare
// (clients still reach it). It completes no get and no put from then on, while the backup
// takes over and serves.
// Drawn: `chorus sim --scenario pb-split-brain --html pb-split-brain.html` (docs/gallery/pb-split-brain.png).
#[test]
fn a6_a_partitioned_old_primary_completes_no_get_and_no_put() {
    for seed in 1..=5 {
        let mut sim = PbSimulator::new(scripted(seed, 3));
        let (number, old, _) = await_pair(&mut sim, seed);
        // Quiesce, so that no acknowledgement is in flight when the cut happens.
        sim.set_clients_paused(true);
        let idle = sim.run_until(2_000, PbSimulator::clients_idle);
        assert!(idle, "seed {seed}");
        let mut rest: Vec<NodeId> = sim.node_ids().into_iter().filter(|&n| n != old).collect();
        rest.push(sim.view_service_id());
        sim.partition(&[vec![old], rest]);
        sim.run_for(20);
        let answered = sim.answered(old);
        let cut_at = sim.now();
        sim.set_clients_paused(false);
        // Direct probes at the old primary, besides the clients that still know it as primary.
        let _ = sim.propose(old, &put("k0", "split"));
        let _ = sim.read(old, "k0");
        let moved = sim.run_until(3_000, |sim| {
            sim.view()
                .is_some_and(|v| v.number > number && v.primary != Some(old))
        });
        assert!(moved, "seed {seed}: no new primary");
        let served = sim.run_until(3_000, |sim| completed_since(sim.history(), cut_at) >= 20);
        assert!(served, "seed {seed}: the new primary did not serve");
        let _ = sim.propose(old, &put("k1", "split"));
        let _ = sim.read(old, "k1");
        sim.run_for(1_000);
        assert_eq!(
            sim.answered(old),
            answered,
            "seed {seed}: the partitioned old primary completed an operation"
        );
        assert_passed(&sim.run());
    }
}

// A7: at-most-once under loss, duplication and delay, and repeated crashes and restarts under
// load: a few seeds of each fault profile with every checker on (the long sweep is
// `chorus sim --protocol pb` in .ci/run). Without crashes no run may end stuck, and neither
// may one whose crashes are those the scheme claims to survive (one at a time, each after
// the state reached a backup): those runs fail over again and again and finish every
// operation. Crashes of many servers at once mostly end in the dead end, safely.
#[test]
fn a7_sweeps_pass_under_every_fault_profile() {
    for (faults, seeds) in [
        (FaultProfile::None, 1..=3),
        (FaultProfile::Network, 1..=8),
        (FaultProfile::Crash, 1..=8),
        (FaultProfile::CrashMany, 1..=4),
        (FaultProfile::All, 1..=8),
    ] {
        let mut failovers = 0;
        let mut stuck = 0;
        for seed in seeds.clone() {
            let mut config = SimConfig::new(seed);
            config.protocol = Protocol::Pb;
            config.faults = faults;
            let report = chorus_sim::run(config);
            assert_passed(&report);
            failovers += report.stats.failovers;
            stuck += usize::from(report.stuck);
            if matches!(
                faults,
                FaultProfile::None | FaultProfile::Network | FaultProfile::Crash
            ) {
                assert!(!report.stuck, "seed {seed} {faults}: stuck");
                assert_eq!(report.history.len(), 1000, "seed {seed} {faults}");
            }
        }
        match faults {
            FaultProfile::Crash => assert!(
                failovers >= seeds.count() as u64,
                "{faults}: only {failovers} failovers"
            ),
            FaultProfile::CrashMany => assert!(stuck > 0, "{faults}: no run reached the dead end"),
            _ => {}
        }
    }
}

// A8: servers and clients cache the view. Clients never ask the view service (they keep the
// primary they last reached), and the view service hears one ping per server per interval
// whatever the load: over the same stretch of time, a busy cluster and an idle one exchange
// the same number of view service messages.
#[test]
fn a8_view_service_traffic_grows_with_time_not_with_operations() {
    for seed in 1..=3 {
        let mut config = scripted(seed, 3);
        config.ops = 2_000;
        let mut busy = PbSimulator::new(config.clone());
        let mut idle = PbSimulator::new(config);
        idle.set_clients_paused(true);
        busy.run_for(3_000);
        idle.run_for(3_000);
        let (b, i) = (busy.stats(), idle.stats());
        let ops = completed_since(busy.history(), 0);
        assert!(ops >= 500, "seed {seed}: only {ops} operations");
        assert_eq!(completed_since(idle.history(), 0), 0, "seed {seed}");
        let ticks = 3_000 / 10;
        // One ping and one reply per server per interval, plus a few immediate pings when
        // the view changes.
        for stats in [b, i] {
            assert!(
                stats.view_service_messages <= 2 * 3 * (ticks + 1) + 20,
                "seed {seed}: {} view service messages in {ticks} intervals",
                stats.view_service_messages
            );
        }
        let difference = b.view_service_messages.abs_diff(i.view_service_messages);
        assert!(
            difference <= 20,
            "seed {seed}: {} view service messages busy, {} idle, for {ops} operations",
            b.view_service_messages,
            i.view_service_messages
        );
        // Clients go straight to the cached primary: about one attempt per operation.
        assert!(
            b.client_attempts <= ops as u64 + ops as u64 / 20 + 10,
            "seed {seed}: {} attempts for {ops} operations",
            b.client_attempts
        );
        assert_passed(&busy.run());
    }
}

// A9: the view service is down. Primary and backup go on serving in their view; once the
// primary also fails, no failover ever happens (nobody acts as primary again, no client gets
// an answer), and yet nothing inconsistent was served: every checker passes, and every
// acknowledged write is still held by the surviving backup.
// Drawn: `chorus sim --scenario pb-view-service-down --html pb-view-service-down.html` (docs/gallery/pb-view-service-down.png).
#[test]
fn a9_without_the_view_service_failover_stops_but_nothing_inconsistent_is_served() {
    for seed in 1..=5 {
        let mut sim = PbSimulator::new(scripted(seed, 3));
        let (number, primary, backup) = await_pair(&mut sim, seed);
        sim.crash_view_service();
        let down_at = sim.now();
        let served = sim.run_until(2_000, |sim| completed_since(sim.history(), down_at) >= 10);
        assert!(
            served,
            "seed {seed}: the pair stopped serving with the service down"
        );
        sim.crash_node(primary);
        // Replies already on the wire may still arrive for a few units.
        sim.run_for(20);
        let crashed_at = sim.now();
        sim.restart_node(primary);
        sim.run_for(5_000);
        assert_eq!(
            completed_since(sim.history(), crashed_at),
            0,
            "seed {seed}: a client got an answer without a primary"
        );
        for node in sim.node_ids() {
            assert!(
                !sim.status(node).is_some_and(|s| s.acting_primary),
                "seed {seed}: {node} acts as primary after the failover stopped"
            );
        }
        let status = sim.status(backup).expect("the backup is up");
        assert_eq!(status.view.number, number, "seed {seed}: a view changed");
        assert!(!sim.view_service_up());
        let report = sim.run();
        assert!(report.stuck, "seed {seed}: the run must end stuck");
        assert_passed(&report);
    }
}

// Determinism: the same seed replays the same primary-backup run.
#[test]
fn the_same_seed_gives_the_same_primary_backup_run() {
    for seed in [3, 11] {
        let config = || {
            let mut config = SimConfig::new(seed);
            config.protocol = Protocol::Pb;
            config.ops = 300;
            config
        };
        let first = chorus_sim::run(config());
        let second = chorus_sim::run(config());
        assert_eq!(first.trace_hash, second.trace_hash, "seed {seed}");
        assert_eq!(
            chorus_sim::history_hash(&first.history),
            chorus_sim::history_hash(&second.history)
        );
        assert_eq!(first.stats, second.stats);
        assert_eq!(first.stuck, second.stuck);
    }
}
