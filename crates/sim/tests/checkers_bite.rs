//! Proof that the simulator's checkers can fail: each test switches on one deliberate bug in
//! the Raft core and shows the simulator catching it within a fixed number of seeds.
//!
//! These tests need the `inject-bugs` feature (`cargo test --all-features`), which compiles
//! the bugs in; no other build contains them.

mod common;

use chorus_raft::InjectedBugs;
use chorus_sim::{FaultProfile, SimConfig};
use common::figure8;

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

/// The seeds the Figure 8 script runs with, in both directions of the check below.
const FIGURE_8_SEEDS: std::ops::RangeInclusive<u64> = 1..=5;

// A leader that commits an entry of an earlier term by counting replicas (breaking Raft
// §5.4.2) commits index 2 in step (c) of Figure 8, which the next leader then overwrites in
// step (d): the checkers must report it for every seed of the scripted figure, and must stay
// silent on the same script without the bug (so what they report is the bug, not the script).
// The default sweep's nemesis builds the figure in some seeds (`SimConfig::figure_8`, measured
// by the mutation gate); the script builds it in every one.
#[test]
fn commit_without_the_current_term_rule_is_caught() {
    for seed in FIGURE_8_SEEDS {
        let clean = figure8::run(figure8::config(seed)).report;
        assert!(
            clean.passed(),
            "seed {seed}: the Figure 8 script fails even without the bug: {:#?}",
            clean.violations
        );

        let mut config = figure8::config(seed);
        config.injected_bugs = InjectedBugs {
            commit_without_current_term: true,
            ..InjectedBugs::default()
        };
        let outcome = figure8::run(config);
        let invariants: std::collections::BTreeSet<&str> = outcome
            .report
            .violations
            .iter()
            .map(|v| v.invariant)
            .collect();
        println!("seed {seed}: {invariants:?}");
        assert!(
            outcome.s1_commit_in_c >= outcome.index,
            "seed {seed}: the bug did not make S1 commit index {} in step (c)",
            outcome.index
        );
        assert!(
            invariants.contains("S3") || invariants.contains("S4"),
            "seed {seed}: a committed entry was overwritten and neither S3 nor S4 noticed: \
             {:#?}",
            outcome.report.violations
        );
    }
}

// A follower that drops the entries after a matching AppendEntries (Raft Figure 2 truncates
// only at a conflict) takes back entries it acknowledged when a delayed or duplicated
// AppendEntries arrives; a leader that counted them commits an entry a majority no longer
// holds. The default sweep catches it within a few seeds.
#[test]
fn truncation_without_a_conflict_is_caught() {
    let bugs = InjectedBugs {
        truncate_without_conflict: true,
        ..InjectedBugs::default()
    };
    let found = first_failure(bugs, FaultProfile::All, 20);
    println!("{found:?}");
    assert!(
        found.is_some(),
        "acknowledged entries were taken back and no seed of 20 noticed"
    );
}

// A session table that executes a retried request again (rather than answering it from its
// cache) applies a write twice when both attempts reach the log: S8's exactly-once model sees
// it within a few seeds of the default sweep.
#[test]
fn a_retry_executed_twice_is_caught() {
    let caught = (1..=20).find_map(|seed| {
        let mut config = SimConfig::new(seed);
        config.kv_retry_reexecutes = true;
        let report = chorus_sim::run(config);
        let invariants: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
        invariants.contains(&"S8").then_some((seed, invariants))
    });
    println!("{caught:?}");
    assert!(
        caught.is_some(),
        "retries took effect twice and S8 did not notice in seeds 1..=20"
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

/// The bugs of snapshots and compaction, by name, with the snapshot chunk size each is
/// swept with (`None`: drawn per seed). A follower reinstalls an old snapshot only when a
/// whole snapshot arrives again (a duplicated or long-delayed InstallSnapshot): with many
/// small chunks an old one almost never completes twice. Sent in one chunk, as a small state
/// is in the runtime (1 MiB chunks), it does.
fn snapshot_bugs() -> [(&'static str, InjectedBugs, Option<usize>); 2] {
    [
        (
            "install_older_snapshot",
            InjectedBugs {
                install_older_snapshot: true,
                ..InjectedBugs::default()
            },
            Some(1 << 20),
        ),
        (
            "compact_above_commit",
            InjectedBugs {
                compact_above_commit: true,
                ..InjectedBugs::default()
            },
            None,
        ),
    ]
}

/// Runs `seed` with every fault, compaction on (the default) and `bugs`; returns the
/// invariants broken.
fn snapshot_run(bugs: InjectedBugs, chunk_bytes: Option<usize>, seed: u64) -> Vec<&'static str> {
    let mut config = SimConfig::new(seed);
    config.injected_bugs = bugs;
    config.snapshot_chunk_bytes = chunk_bytes;
    let report = chorus_sim::run(config);
    report.violations.iter().map(|v| v.invariant).collect()
}

/// How many of the first seeds a snapshot bug's fixed-seed test may try.
const SNAPSHOT_SEEDS_MAX: u64 = 20;

// A follower that installs a snapshot older than what it already committed rolls its state
// machine back (breaking the idempotence of InstallSnapshot, Raft §7): S4 and S5 see the
// applied and commit indexes go back. A node that compacts its log above the commit index
// loses committed entries before it applies them: S4 sees the gap. Each is caught on fixed
// seeds of the default sweep (found with `snapshot_bug_shares`).
#[test]
fn snapshot_bugs_are_caught_on_fixed_seeds() {
    let [older, above] = snapshot_bugs();
    // The first of a few fixed seeds that builds the duplicated old snapshot: a change to the
    // simulator's draws moves which seed does, not whether the checkers see it.
    let caught = (1..=SNAPSHOT_SEEDS_MAX).find_map(|seed| {
        let invariants = snapshot_run(older.1, older.2, seed);
        (invariants.contains(&"S4") || invariants.contains(&"S5")).then_some((seed, invariants))
    });
    println!("{}: {caught:?}", older.0);
    assert!(
        caught.is_some(),
        "an older snapshot rolled a follower back and neither S4 nor S5 noticed in seeds \
         1..={SNAPSHOT_SEEDS_MAX}"
    );
    let caught = (1..=SNAPSHOT_SEEDS_MAX).find_map(|seed| {
        let invariants = snapshot_run(above.1, above.2, seed);
        invariants.contains(&"S4").then_some((seed, invariants))
    });
    println!("{}: {caught:?}", above.0);
    assert!(
        caught.is_some(),
        "committed entries were compacted before they were applied and S4 did not notice in \
         seeds 1..={SNAPSHOT_SEEDS_MAX}"
    );
}

// How often each snapshot bug is caught in a sweep of 200 seeds with every fault (run with
// `cargo test -p chorus-sim --all-features --release --test checkers_bite -- --ignored
// --nocapture`). The shares measured are in ARCHITECTURE.md, "The simulator".
#[test]
#[ignore = "a 200-seed sweep per bug; run on demand to measure how often the checkers bite"]
fn snapshot_bug_shares() {
    for (name, bugs, chunk_bytes) in snapshot_bugs() {
        let mut caught = 0;
        let mut by_invariant = std::collections::BTreeMap::<&str, u32>::new();
        for seed in 1..=200 {
            let invariants: std::collections::BTreeSet<&str> =
                snapshot_run(bugs, chunk_bytes, seed).into_iter().collect();
            if !invariants.is_empty() {
                caught += 1;
            }
            for invariant in invariants {
                *by_invariant.entry(invariant).or_default() += 1;
            }
        }
        println!("{name}: caught in {caught}/200 seeds; seeds per invariant: {by_invariant:?}");
        assert!(caught > 0, "{name}: no seed of 200 noticed");
    }
}

/// The membership bugs, by name.
fn membership_bugs() -> [(&'static str, InjectedBugs); 2] {
    [
        (
            "membership_on_commit",
            InjectedBugs {
                membership_on_commit: true,
                ..InjectedBugs::default()
            },
        ),
        (
            "overlapping_membership_changes",
            InjectedBugs {
                overlapping_membership_changes: true,
                ..InjectedBugs::default()
            },
        ),
    ]
}

/// Runs `seed` of the default sweep (every fault, membership churn included) with `bugs`;
/// returns the invariants broken.
fn membership_run(bugs: InjectedBugs, seed: u64) -> std::collections::BTreeSet<&'static str> {
    let mut config = SimConfig::new(seed);
    config.injected_bugs = bugs;
    let report = chorus_sim::run(config);
    report.violations.iter().map(|v| v.invariant).collect()
}

// A configuration that takes effect only once committed lets nodes count majorities in a
// configuration two changes old (thesis §4.1); a leader that proposes a change while another
// is uncommitted puts two changes in flight at once, whose configurations need not share a
// majority. The churn of the default sweep catches each within a few seeds, as M2 and M1
// (and, when the overlap costs a majority, as S1 across configurations or lost entries).
#[test]
fn membership_bugs_are_caught() {
    for (name, bugs) in membership_bugs() {
        let found = (1..=30).find_map(|seed| {
            let invariants = membership_run(bugs, seed);
            (!invariants.is_empty()).then_some((seed, invariants))
        });
        println!("{name}: {found:?}");
        assert!(found.is_some(), "{name}: no seed of 30 noticed");
    }
}

// How often each membership bug is caught in a sweep of 200 seeds with every fault (run with
// `cargo test -p chorus-sim --all-features --release --test checkers_bite -- --ignored
// --nocapture membership`). The shares measured are in docs/protocols/raft.md.
#[test]
#[ignore = "a 200-seed sweep per bug; run on demand to measure how often the checkers bite"]
fn membership_bug_shares() {
    for (name, bugs) in membership_bugs() {
        let mut caught = 0;
        let mut by_invariant = std::collections::BTreeMap::<&str, u32>::new();
        for seed in 1..=200 {
            let invariants = membership_run(bugs, seed);
            if !invariants.is_empty() {
                caught += 1;
            }
            for invariant in invariants {
                *by_invariant.entry(invariant).or_default() += 1;
            }
        }
        println!("{name}: caught in {caught}/200 seeds; seeds per invariant: {by_invariant:?}");
        assert!(caught > 0, "{name}: no seed of 200 noticed");
    }
}
