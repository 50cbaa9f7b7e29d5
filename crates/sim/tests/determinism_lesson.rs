//! The determinism lesson, as tests (issue 18): state machine replication (Raft) is *active*
//! — every replica applies every command — so a state machine that reads a random number
//! inside `apply` makes the replicas diverge, and the state-machine safety checker (S4) sees
//! different states at the same index. Primary-backup and the hybrid are *passive* — the
//! primary executes once and ships the effect — so the very same state machine stays
//! consistent there. And if that state machine does not ship its non-determinism in its
//! effect (the effect is the command, re-executed by the backups), the passive schemes
//! diverge too, and their final state comparison says so.
//!
//! The state machine is the key-value store plus a *stamp*: a random number each node draws
//! from its own source inside every apply (`chorus_sim::Machine::Stamped`). Clients never see
//! it, so the linearizability checker is blind to it; only the replicas' states differ.

use chorus_sim::{FaultProfile, Machine, Protocol, RunReport, SimConfig};

fn run(protocol: Protocol, machine: Machine, faults: FaultProfile, seed: u64) -> RunReport {
    let mut config = SimConfig::new(seed);
    config.protocol = protocol;
    config.machine = machine;
    config.faults = faults;
    config.ops = 300;
    chorus_sim::run(config)
}

const STAMPED: Machine = Machine::Stamped { ship_effects: true };
const STAMPED_WITHOUT_EFFECTS: Machine = Machine::Stamped {
    ship_effects: false,
};

/// The share of `seeds` whose run reports a state divergence (S4 naming different states).
fn diverging(protocol: Protocol, machine: Machine, seeds: std::ops::RangeInclusive<u64>) -> usize {
    seeds
        .filter(|&seed| {
            let report = run(protocol, machine.clone(), FaultProfile::None, seed);
            report.violations.iter().any(|v| {
                v.invariant == "S4" && v.detail.contains("differ") && v.detail.contains("state")
            })
        })
        .count()
}

#[test]
fn raft_replicas_of_a_state_machine_that_draws_randomness_in_apply_diverge() {
    // Every node snapshots every 40 entries, and S4 compares the states at those points:
    // each replica drew its own numbers, so the states differ at the very first one.
    assert_eq!(diverging(Protocol::Raft, STAMPED, 1..=10), 10);
    // Not a false alarm of the checker: the deterministic store passes the same runs.
    for seed in 1..=10 {
        let report = run(Protocol::Raft, Machine::Kv, FaultProfile::None, seed);
        assert!(report.passed(), "seed {seed}: {:#?}", report.violations);
    }
}

#[test]
fn pb_passive_replication_keeps_the_same_state_machine_consistent() {
    for seed in 1..=30 {
        let report = run(Protocol::Pb, STAMPED, FaultProfile::All, seed);
        assert!(
            report.passed(),
            "seed {seed}: {:#?}\nreplay with SimConfig::machine = {STAMPED:?}",
            report.violations
        );
        assert!(report.linearizable(), "seed {seed}");
    }
}

#[test]
fn hybrid_passive_replication_keeps_the_same_state_machine_consistent() {
    for seed in 1..=30 {
        let report = run(Protocol::Hybrid, STAMPED, FaultProfile::All, seed);
        assert!(
            report.passed(),
            "seed {seed}: {:#?}\nreplay with SimConfig::machine = {STAMPED:?}",
            report.violations
        );
        assert!(report.linearizable(), "seed {seed}");
    }
}

#[test]
fn pb_backups_that_re_execute_a_non_deterministic_command_diverge() {
    // Without effects the backup runs the command again and draws its own number: the final
    // check finds primary and backup in different states.
    assert_eq!(diverging(Protocol::Pb, STAMPED_WITHOUT_EFFECTS, 1..=10), 10);
}

#[test]
fn hybrid_backups_that_re_execute_a_non_deterministic_command_diverge() {
    assert_eq!(
        diverging(Protocol::Hybrid, STAMPED_WITHOUT_EFFECTS, 1..=10),
        10
    );
}
