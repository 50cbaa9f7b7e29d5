//! C. Replication: commits need a majority, an old leader's uncommitted suffix is overwritten,
//! Figure 8, and a hostile network.

use crate::common::figure8;

// C16: Figure 8 of the Raft paper, full version: an entry of an earlier term stored on a
// majority is not committed by counting replicas, so a later leader may overwrite it; the run
// with crashes, partitions and filtered messages passes every check.
// Drawn: `chorus sim --scenario figure-8 --html figure-8.html` (docs/gallery/figure-8.png).
#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed_and_may_be_overwritten() {
    for seed in 1..=5 {
        let outcome = figure8::run(figure8::config(seed));
        assert!(
            outcome.majority_held_old_entry,
            "seed {seed}: S1's old entry never reached a majority"
        );
        assert!(
            outcome.s1_commit_in_c < outcome.index,
            "seed {seed}: S1 committed index {} of term {} in term-4 position",
            outcome.index,
            outcome.old_term
        );
        assert!(
            outcome.overwritten,
            "seed {seed}: S5 did not overwrite index {} with its term {} entry",
            outcome.index, outcome.s5_term
        );
        crate::assert_passed(&outcome.report);
    }
}

// C15: a leader cut off in a minority takes new proposals into its log but never commits them:
// its commit index, and its partner's, stay frozen for as long as the partition lasts, while
// the majority elects a leader of its own and goes on.
// Drawn: `chorus sim --scenario raft-partitioned-leader --html raft-partitioned-leader.html` (docs/gallery/raft-partitioned-leader.png).
#[test]
fn no_commit_without_a_majority() {
    for seed in 1..=5 {
        let config = crate::scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let leader = crate::await_leader(&mut sim, 10 * unit, seed);
        crate::quiesce_clients(&mut sim, 20 * unit, seed);
        let ids = sim.node_ids();
        let mate = ids.iter().copied().find(|&n| n != leader).expect("five");
        let majority: Vec<_> = ids
            .iter()
            .copied()
            .filter(|&n| n != leader && n != mate)
            .collect();
        sim.partition(&[vec![leader, mate], majority.clone()]);
        let frozen = sim.status(leader).expect("up").commit;
        for i in 0..3 {
            sim.propose(leader, &crate::put("minority", &format!("v{i}")))
                .expect("still the leader");
        }
        let last = sim.status(leader).expect("up").last_index;
        assert!(
            last > frozen,
            "seed {seed}: the proposals were not appended"
        );
        let committed = sim.run_until(20 * unit, |sim| {
            [leader, mate]
                .iter()
                .any(|&n| sim.status(n).is_some_and(|s| s.commit > frozen))
        });
        assert!(
            !committed,
            "seed {seed}: the minority committed without a majority"
        );
        assert!(
            majority.iter().any(|&n| crate::is_leader(&sim, n)),
            "seed {seed}: the majority has no leader"
        );
        crate::assert_passed(&sim.run());
    }
}

// C15: an old leader isolated with uncommitted client writes in its log rejoins after the
// majority elected a new leader and committed other entries at those indices; the old suffix is
// replaced by the new leader's (entries, or a snapshot of them if the leader compacted past
// it), and every write clients were told succeeded is still there (S6) in a linearizable
// history (S7).
#[test]
fn a_rejoining_old_leaders_uncommitted_suffix_is_overwritten() {
    for seed in 1..=5 {
        let config = crate::scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let old = crate::await_leader(&mut sim, 10 * unit, seed);
        sim.run_for(unit);
        let rest: Vec<_> = sim.node_ids().into_iter().filter(|&n| n != old).collect();
        sim.partition(&[vec![old], rest.clone()]);
        // Clients keep writing at the old leader too; make sure its suffix is not empty.
        for i in 0..3 {
            sim.propose(old, &crate::put("stale", &format!("v{i}")))
                .expect("still the leader");
        }
        let elected = sim.run_until(10 * unit, |sim| {
            rest.iter().any(|&n| crate::is_leader(sim, n))
        });
        assert!(elected, "seed {seed}: the majority elected nobody");
        let new = sim.leader().expect("elected");
        // The old leader's entries the new leader does not have. (Entries it sent just before
        // the cut may have reached the majority, which then commits them: those stay.)
        let status = sim.status(old).expect("up");
        let raft = sim.raft(old).expect("up");
        let winner = sim.raft(new).expect("up");
        let suffix: Vec<_> = (status.commit.0 + 1..=status.last_index.0)
            .map(|i| {
                (
                    i,
                    raft.term_at(chorus_core::LogIndex(i)).expect("in the log"),
                )
            })
            .filter(|&(i, term)| winner.term_at(chorus_core::LogIndex(i)) != Some(term))
            .collect();
        assert!(!suffix.is_empty(), "seed {seed}: no uncommitted suffix");
        // The new leader writes past the old suffix, so every index of it gets a new entry.
        for i in 0..suffix.len() + 1 {
            let _ = sim.propose(new, &crate::put("fresh", &format!("v{i}")));
        }
        sim.run_for(2 * unit);
        sim.heal();
        let replaced = sim.run_until(10 * unit, |sim| {
            let Some(raft) = sim.raft(old) else {
                return false;
            };
            let commit = raft.status().commit;
            // Replaced by the new leader's entries, or by its snapshot (a leader that
            // compacted past the suffix meanwhile sends one): either way committed, and no
            // longer the old leader's.
            suffix.iter().all(|&(i, term)| {
                let index = chorus_core::LogIndex(i);
                index <= commit
                    && raft
                        .term_at(index)
                        .map_or(index < raft.first_index(), |t| t != term)
            })
        });
        assert!(
            replaced,
            "seed {seed}: the old leader's suffix {suffix:?} was not replaced and committed"
        );
        crate::assert_passed(&sim.run());
    }
}

// C17: with a tenth of messages lost, some duplicated and some delayed by up to three election
// timeouts for the whole safety phase, concurrent clients still see a linearizable store and
// every invariant holds.
#[test]
fn a_lossy_duplicating_reordering_network_with_concurrent_clients_stays_linearizable() {
    for seed in 1..=10 {
        let mut config = crate::scripted(seed, 5);
        config.clients = 6;
        config.ops = 300;
        let mut sim = chorus_sim::Simulator::new(config);
        // `run` keeps these faults until the safety phase ends, then heals the network.
        sim.set_link_faults(chorus_sim::LinkFaults {
            drop: 0.15,
            duplicate: 0.15,
            tail: 0.1,
        });
        let report = sim.run();
        crate::assert_passed(&report);
        let ok = report
            .history
            .iter()
            .filter(|op| op.status == chorus_sim::history::OpStatus::Ok)
            .count();
        assert!(ok > 100, "seed {seed}: only {ok} operations succeeded");
    }
}
