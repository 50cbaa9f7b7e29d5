//! Proof that the simulator's checkers can fail: each test switches on one deliberate bug in
//! the Raft core and shows the simulator catching it within a fixed number of seeds.
//!
//! These tests need the `inject-bugs` feature (`cargo test --all-features`), which compiles
//! the bugs in; no other build contains them.

use chorus_raft::InjectedBugs;
use chorus_sim::{FaultProfile, SimConfig};

/// Runs seeds `1..=seeds` with `bugs` and returns, for the first seed that failed, the seed
/// and the invariants it broke.
fn first_failure(
    bugs: InjectedBugs,
    faults: FaultProfile,
    seeds: u64,
) -> Option<(u64, Vec<&'static str>)> {
    (1..=seeds).find_map(|seed| {
        let mut config = SimConfig::new(seed);
        config.faults = faults;
        config.injected_bugs = bugs;
        let report = chorus_sim::run(config);
        (!report.passed()).then(|| {
            (
                seed,
                report.violations.iter().map(|v| v.invariant).collect(),
            )
        })
    })
}

#[test]
fn commit_without_the_current_term_rule_is_caught() {
    let bugs = InjectedBugs {
        commit_without_current_term: true,
        ..InjectedBugs::default()
    };
    let found = first_failure(bugs, FaultProfile::All, 200);
    println!("{found:?}");
    assert!(
        found.is_some(),
        "the current-term commit rule was broken and no seed noticed"
    );
}

#[test]
fn reads_without_read_index_are_caught() {
    let bugs = InjectedBugs {
        read_without_read_index: true,
        ..InjectedBugs::default()
    };
    let found = first_failure(bugs, FaultProfile::Network, 50);
    println!("{found:?}");
    let (_, invariants) = found.expect("stale reads were served and no seed noticed");
    assert!(
        invariants.contains(&"S7"),
        "caught, but not as a linearizability failure: {invariants:?}"
    );
}

#[test]
fn acks_before_durability_are_caught() {
    let bugs = InjectedBugs {
        ack_before_durable: true,
        ..InjectedBugs::default()
    };
    let found = first_failure(bugs, FaultProfile::Crash, 200);
    println!("{found:?}");
    assert!(
        found.is_some(),
        "acks were sent before fsync and no seed noticed"
    );
}
