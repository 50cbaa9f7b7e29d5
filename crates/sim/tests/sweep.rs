//! Small fixed sweeps of the simulator over every fault profile and cluster size, so that the
//! everyday test command already exercises the whole fault model. The long sweeps (hundreds of
//! seeds) run from `.ci/run` through `chorus sim`.

use chorus_sim::{FaultProfile, SimConfig};

fn sweep(nodes: usize, faults: FaultProfile, seeds: std::ops::RangeInclusive<u64>) {
    for seed in seeds {
        let mut config = SimConfig::new(seed);
        config.nodes = nodes;
        config.faults = faults;
        let report = chorus_sim::run(config);
        assert!(
            report.passed(),
            "seed {seed}, {nodes} nodes, faults {faults}: {:#?}\nreplay: chorus sim --replay {seed} --nodes {nodes} --faults {faults} --verbose",
            report.violations
        );
        assert!(report.linearizable(), "seed {seed}");
        assert_eq!(
            report.history.len(),
            1000,
            "seed {seed}: every operation is in the history"
        );
    }
}

#[test]
fn three_nodes_without_faults() {
    sweep(3, FaultProfile::None, 1..=3);
}

#[test]
fn three_nodes_with_network_faults() {
    sweep(3, FaultProfile::Network, 1..=8);
}

#[test]
fn three_nodes_with_crashes() {
    sweep(3, FaultProfile::Crash, 1..=8);
}

#[test]
fn three_nodes_with_all_faults() {
    sweep(3, FaultProfile::All, 1..=8);
}

#[test]
fn five_nodes_with_all_faults() {
    sweep(5, FaultProfile::All, 1..=4);
}

#[test]
fn seven_nodes_with_all_faults() {
    sweep(7, FaultProfile::All, 1..=3);
}

#[test]
fn faults_actually_happen_in_a_faulty_run() {
    // A sweep that injected nothing would prove nothing: make sure the nemesis acts.
    let report = chorus_sim::run(SimConfig::new(1));
    assert!(report.stats.crashes > 0, "{:?}", report.stats);
    assert!(report.stats.partitions > 0, "{:?}", report.stats);
    assert!(report.stats.leaders > 1, "{:?}", report.stats);
    assert!(
        report
            .history
            .iter()
            .any(|op| op.status == chorus_sim::history::OpStatus::Ok),
        "clients made progress"
    );
}

#[test]
fn one_node_runs_under_every_fault_profile() {
    // A one-node cluster has no links to cut; the nemesis used to draw a partition of it and
    // panic on an empty range. Every profile must run, for both schemes.
    for faults in [
        FaultProfile::None,
        FaultProfile::Network,
        FaultProfile::Crash,
        FaultProfile::CrashMany,
        FaultProfile::All,
    ] {
        for seed in 1..=3 {
            let mut config = SimConfig::new(seed);
            config.nodes = 1;
            config.faults = faults;
            let report = chorus_sim::run(config);
            assert!(report.passed(), "raft, seed {seed}, faults {faults}");
            let mut config = SimConfig::new(seed);
            config.protocol = chorus_sim::Protocol::Pb;
            config.nodes = 1;
            config.faults = faults;
            let report = chorus_sim::run(config);
            assert!(
                report.violations.is_empty(),
                "pb, seed {seed}, faults {faults}"
            );
        }
    }
}

// Found by the swarm of driver orders (apply before the fsync, slow disks): after a power
// failure a node restarted with a commit index below two configuration changes that were each
// committed in turn, won the next election, and M1 counted both as uncommitted in its log
// although no leader had overlapped them. M1 now judges a leader once its commit index is of
// its own term.
#[test]
fn a_new_leader_with_a_stale_commit_index_is_not_an_overlap_of_changes() {
    sweep(3, FaultProfile::All, 491..=491);
}

// Each node of each seed draws the order its driver handles Readies in; the runtime's order is
// one of them, and is also swept on its own.
#[test]
fn three_nodes_in_the_runtime_order() {
    for seed in 1..=5 {
        let mut config = SimConfig::new(seed);
        config.interleaving = Some(chorus_sim::Interleaving::RUNTIME);
        let report = chorus_sim::run(config);
        assert!(report.passed(), "seed {seed}: {:#?}", report.violations);
    }
}
