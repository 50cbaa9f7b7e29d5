//! F. Client semantics: linearizability under every fault, no progress in a minority, reads
//! only after the new leader committed in its term, indefinite outcomes.

use chorus_raft::{Message, Role};
use chorus_sim::history::{OpKind, OpStatus, Operation};
use chorus_sim::{FaultProfile, LinkFaults, SimConfig, Simulator};

use crate::{assert_passed, await_leader, completed_between, is_leader, quiesce_clients, scripted};

/// Whether some get was in flight during `from..=to`: it was called before `to` and had not
/// returned by `from`.
fn a_get_was_waiting(history: &[Operation], from: u64, to: u64) -> bool {
    history
        .iter()
        .any(|op| op.kind == OpKind::Get && op.call <= to && op.ret.is_none_or(|r| r > from))
}

/// Five nodes whose clients give up on an operation after a few election timeouts (recording
/// it as unknown) and go on with the next, so that a window without progress still sees many
/// operations tried, reads among them.
fn impatient(seed: u64) -> SimConfig {
    let mut config = scripted(seed, 5);
    config.attempt_timeout_units = config.election_timeout_units();
    config.give_up_units = 3 * config.election_timeout_units();
    config
}

// F24: ten clients on five nodes, with partitions of every shape, crashes (one node, a
// minority, power failures) and a lossy network, still see a linearizable store, and every
// invariant holds.
#[test]
fn linearizable_under_partitions_crashes_and_loss_with_many_clients() {
    let (mut crashes, mut partitions) = (0, 0);
    for seed in 1..=8 {
        let mut config = SimConfig::new(seed);
        config.nodes = 5;
        config.clients = 10;
        config.ops = 600;
        config.faults = FaultProfile::All;
        config.nemesis_pause_units = (20, 200);
        let report = chorus_sim::run(config);
        assert_passed(&report);
        crashes += report.stats.crashes;
        partitions += report.stats.partitions;
    }
    assert!(
        crashes > 0 && partitions > 0,
        "the nemesis injected too little"
    );
}

// F25: two followers cut off from the leader and the rest make no progress: what is proposed
// at them never commits, their commit index stays frozen and neither becomes leader (nor moves
// its term). Then, with the majority down so that clients can reach only the minority (clients
// reach every live node), no operation completes at all, not even a read.
#[test]
fn a_minority_makes_no_progress_not_even_reads() {
    for seed in 1..=5 {
        let config = impatient(seed);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let leader = await_leader(&mut sim, 10 * unit, seed);
        quiesce_clients(&mut sim, 20 * unit, seed);
        let ids = sim.node_ids();
        let settled = sim.run_until(5 * unit, |sim| {
            let commits: Vec<_> = ids.iter().filter_map(|&n| sim.status(n)).collect();
            commits
                .iter()
                .all(|s| s.commit == commits[0].commit && s.last_index == s.commit)
        });
        assert!(settled, "seed {seed}: the logs did not settle");
        let minority: Vec<_> = ids
            .iter()
            .copied()
            .filter(|&n| n != leader)
            .take(2)
            .collect();
        let majority: Vec<_> = ids
            .iter()
            .copied()
            .filter(|n| !minority.contains(n))
            .collect();
        sim.partition(&[minority.clone(), majority.clone()]);
        let before: Vec<_> = minority
            .iter()
            .map(|&n| sim.status(n).expect("up"))
            .collect();
        for (i, &node) in minority.iter().enumerate() {
            // A follower that knows a leader forwards; the forward is cut off.
            let _ = sim.propose(node, &crate::put("minority", &format!("v{i}")));
        }
        let progressed = sim.run_until(20 * unit, |sim| {
            minority.iter().zip(&before).any(|(&n, old)| {
                sim.status(n).is_some_and(|s| {
                    s.commit != old.commit || s.role == Role::Leader || s.term != old.term
                })
            })
        });
        assert!(!progressed, "seed {seed}: the minority made progress");

        // Only the minority is left for clients.
        for &node in &majority {
            sim.crash_node(node);
        }
        sim.set_clients_paused(false);
        sim.run_for(unit);
        let window_from = sim.now();
        sim.run_for(15 * unit);
        let window_to = sim.now();
        for &node in &majority {
            sim.restart_node(node);
        }
        sim.heal();
        let report = sim.run();
        assert_passed(&report);
        let served = completed_between(&report.history, window_from, window_to);
        assert!(
            served.is_empty(),
            "seed {seed}: the minority served {served:?}"
        );
        assert!(
            a_get_was_waiting(&report.history, window_from, window_to),
            "seed {seed}: no read was tried while only the minority was up"
        );
    }
}

// F25 (Raft §8): a new leader does not know which entries of earlier terms are committed
// until it commits an entry of its own term, so it must not serve reads before: with every
// AppendEntries that carries entries dropped, the new leader's no-op cannot commit, and no
// read (nor write) completes, although heartbeats keep its leadership confirmed. Once the
// filter is removed, the no-op commits and reads are served again.
#[test]
fn a_new_leader_serves_reads_only_after_committing_an_entry_of_its_term() {
    for seed in 1..=5 {
        let config = impatient(seed);
        let unit = config.election_timeout_units();
        let mut sim = Simulator::new(config);
        let old = await_leader(&mut sim, 10 * unit, seed);
        sim.run_for(2 * unit);
        sim.crash_node(old);
        // Entries are stripped rather than the messages dropped: the leader sends no separate
        // heartbeat to a follower it is sending entries to, and without answers CheckQuorum
        // would (rightly) depose it. Stripped, every AppendEntries is a heartbeat.
        sim.set_filter(Some(Box::new(|_, _, message| {
            if let Message::AppendEntries(append) = message {
                append.entries.clear();
            }
            true
        })));
        let new = await_leader(&mut sim, 20 * unit, seed);
        let term = sim.status(new).expect("up").term;
        let raft = sim.raft(new).expect("up");
        let noop = (1..=raft.status().last_index.0)
            .map(chorus_core::LogIndex)
            .find(|&i| raft.term_at(i) == Some(term))
            .expect("a new leader appends a no-op");
        // Followers learn the new leader's commit index within a heartbeat or two.
        sim.run_for(unit);
        let window_from = sim.now();
        let changed = sim.run_until(10 * unit, |sim| {
            sim.status(new)
                .is_none_or(|s| s.role != Role::Leader || s.term != term || s.commit >= noop)
        });
        assert!(
            !changed,
            "seed {seed}: the new leader lost its term or committed without its no-op"
        );
        let window_to = sim.now();
        sim.set_filter(None);
        let committed = sim.run_until(5 * unit, |sim| {
            sim.status(new).is_some_and(|s| s.commit >= noop)
        });
        assert!(
            committed,
            "seed {seed}: the no-op did not commit once unblocked"
        );
        assert!(is_leader(&sim, new), "seed {seed}");
        sim.restart_node(old);
        let report = sim.run();
        assert_passed(&report);
        let served = completed_between(&report.history, window_from, window_to);
        assert!(
            served.is_empty(),
            "seed {seed}: served before the no-op committed: {served:?}"
        );
        assert!(
            a_get_was_waiting(&report.history, window_from, window_to),
            "seed {seed}: no read was tried while the no-op was blocked"
        );
    }
}

// F27: on a lossy network with impatient clients many operations end without an answer; they
// are recorded as unknown (they may or may not have happened), never as failed, and the
// history with those unknowns is linearizable.
#[test]
fn indefinite_outcomes_are_never_reported_as_failures() {
    let mut unknown = 0;
    for seed in 1..=10 {
        let mut config = scripted(seed, 5);
        config.attempt_timeout_units = 60;
        config.give_up_units = 150;
        let mut sim = Simulator::new(config);
        sim.set_link_faults(LinkFaults {
            drop: 0.3,
            duplicate: 0.05,
            tail: 0.05,
        });
        let report = sim.run();
        assert_passed(&report);
        let fail: Vec<_> = report
            .history
            .iter()
            .filter(|op| op.status == OpStatus::Fail)
            .collect();
        assert!(fail.is_empty(), "seed {seed}: definite failures {fail:?}");
        unknown += report
            .history
            .iter()
            .filter(|op| op.status == OpStatus::Unknown)
            .count();
    }
    assert!(
        unknown > 0,
        "no operation ended unknown: the scenario did not bite"
    );
}
