//! The lock service replicated by every scheme in the simulator, under every fault, and its
//! check; and a broken lock service, caught.

use chorus_example_locks::{Bug, LockBench};
use chorus_sim::{FaultProfile, Machine, Protocol, RunReport, SimConfig, UserMachine};

fn run(protocol: Protocol, bench: LockBench, seed: u64) -> RunReport {
    let mut config = SimConfig::new(seed);
    config.protocol = protocol;
    config.faults = FaultProfile::All;
    config.ops = 300;
    config.machine = Machine::User(UserMachine::new(bench));
    chorus_sim::run(config)
}

fn passes(protocol: Protocol) {
    for seed in 1..=4 {
        let report = run(protocol, LockBench::default(), seed);
        assert!(
            report.violations.is_empty(),
            "{protocol} seed {seed}: {:#?}",
            report.violations
        );
        let answered = report
            .user_history
            .iter()
            .filter(|op| op.output.is_some())
            .count();
        assert!(
            answered >= 100,
            "{protocol} seed {seed}: only {answered} lock operations answered"
        );
        assert!(report.history.is_empty(), "no key-value operation ran");
    }
}

#[test]
fn raft_replicates_the_lock_service() {
    passes(Protocol::Raft);
}

#[test]
fn pb_replicates_the_lock_service() {
    passes(Protocol::Pb);
}

#[test]
fn hybrid_replicates_the_lock_service() {
    passes(Protocol::Hybrid);
}

fn buggy() -> LockBench {
    LockBench {
        bug: Some(Bug::RestoreForgetsFreeLocks),
        ..LockBench::default()
    }
}

/// The lock service's own check, on the client history, bites: a replica that forgets a
/// lock's last token when it restores a snapshot grants a token again. Under Raft the replicas
/// diverge (S4, S8 see it) and the clients see a token granted twice.
#[test]
fn raft_a_restore_that_forgets_tokens_is_caught_by_the_lock_check() {
    let caught = (1..=8)
        .filter(|&seed| {
            let report = run(Protocol::Raft, buggy(), seed);
            report.violations.iter().any(|v| v.invariant == "user")
        })
        .count();
    assert!(
        caught >= 2,
        "the lock check caught the bug in {caught} of 8 seeds"
    );
}

/// Under primary-backup a state transfer to a new backup is the restore, and the bug shows
/// once that backup took over: pb seed 2 grants lock0's token 2 a second time, which the lock
/// service's check reports and no other checker does.
#[test]
fn pb_a_restore_that_forgets_tokens_is_caught_only_by_the_lock_check() {
    let report = run(Protocol::Pb, buggy(), 2);
    let invariants: Vec<&str> = report.violations.iter().map(|v| v.invariant).collect();
    assert_eq!(invariants, ["user"], "{:#?}", report.violations);
    assert!(
        report.violations[0].detail.contains("granted twice"),
        "{:#?}",
        report.violations
    );
}
