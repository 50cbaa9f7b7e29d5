//! Scenario tests of the whole system in the simulator: Raft, the key-value state machine,
//! client sessions, clients and the invariant checkers S1–S8, driven through scripted faults.
//!
//! Each test is named after what it proves (SCENARIOS.md, sections B, C, D and F) and runs
//! over a fixed set of seeds. A test scripts the faults through the simulator's scripted
//! control (crashes, partitions, message filters, paused clients), asserts what the scenario is
//! about, and ends with [`chorus_sim::Simulator::run`], which heals everything, checks that the
//! cluster converges and every pending operation finishes, and runs the final checks and the
//! linearizability checker over the whole client history.
//!
//! The Raft-level versions of some of these scenarios (without state machine and clients) are
//! in `crates/raft/tests/scenarios`.

#[path = "../common/mod.rs"]
mod common;

mod client;
mod determinism;
mod durability;
mod election;
mod expiry;
mod lease;
mod membership;
mod repair;
mod replication;
mod slow_disk;
mod snapshots;

use chorus_core::NodeId;
use chorus_raft::Role;
use chorus_sim::history::{OpStatus, Operation};
use chorus_sim::{FaultProfile, RunReport, SimConfig, Simulator};

/// A fault-free configuration for scripted scenarios: the test injects every fault itself.
fn scripted(seed: u64, nodes: usize) -> SimConfig {
    let mut config = SimConfig::new(seed).with_scripted_draws();
    config.nodes = nodes;
    config.ops = 200;
    config.faults = FaultProfile::None;
    // The tests reason about when a node applies and answers.
    config.interleaving = Some(chorus_sim::Interleaving::SCRIPTED);
    config
}

/// Asserts that the run found nothing wrong, and says which seed and what otherwise.
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

/// The node that leads, waiting up to `units` for one; panics with the seed otherwise.
#[track_caller]
fn await_leader(sim: &mut Simulator, units: u64, seed: u64) -> NodeId {
    let found = sim.run_until(units, |sim| sim.leader().is_some());
    assert!(found, "seed {seed}: no leader within {units} units");
    sim.leader().expect("checked above")
}

/// Whether `node` is up and leads.
fn is_leader(sim: &Simulator, node: NodeId) -> bool {
    sim.status(node).is_some_and(|s| s.role == Role::Leader)
}

/// Whether any live node leads.
fn any_leader(sim: &Simulator) -> bool {
    sim.node_ids().iter().any(|&n| is_leader(sim, n))
}

/// The operations that completed successfully at a time in `from..=to`.
fn completed_between(history: &[Operation], from: u64, to: u64) -> Vec<&Operation> {
    history
        .iter()
        .filter(|op| op.status == OpStatus::Ok && op.ret.is_some_and(|r| r >= from && r <= to))
        .collect()
}

/// An unsessioned put, proposed by a test outside any client.
fn put(key: &'static str, value: &str) -> chorus_kv::Command {
    chorus_kv::Command::Unsessioned(chorus_kv::Op::Put {
        key: bytes::Bytes::from_static(key.as_bytes()),
        value: bytes::Bytes::copy_from_slice(value.as_bytes()),
    })
}

/// Pauses the clients and waits until none has an operation in flight.
#[track_caller]
fn quiesce_clients(sim: &mut Simulator, units: u64, seed: u64) {
    sim.set_clients_paused(true);
    let idle = sim.run_until(units, Simulator::clients_idle);
    assert!(idle, "seed {seed}: clients still busy after {units} units");
}
