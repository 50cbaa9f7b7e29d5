//! B. Raft election, with the whole system running: a first election and a stable term,
//! re-election, quorum loss, dueling candidates, PreVote and CheckQuorum.

use chorus_raft::Role;

use crate::{any_leader, assert_passed, await_leader, completed_between, is_leader, scripted};

// B10: a cluster of 3, 5 or 7 elects a leader, and without faults that leader keeps its term
// (no node moves to a later term) for 50 election timeouts while clients keep it busy.
#[test]
fn initial_election_then_a_stable_term_without_faults() {
    for nodes in [3, 5, 7] {
        for seed in 1..=5 {
            let config = scripted(seed, nodes);
            let unit = config.election_timeout_units();
            let mut sim = chorus_sim::Simulator::new(config);
            let leader = await_leader(&mut sim, 10 * unit, seed);
            let term = sim.status(leader).expect("the leader is up").term;
            // Term and leader are checked after every event, not just at the end.
            let moved = sim.run_until(50 * unit, |sim| {
                sim.leader() != Some(leader)
                    || sim
                        .node_ids()
                        .iter()
                        .any(|&n| sim.status(n).is_some_and(|s| s.term != term))
            });
            assert!(
                !moved,
                "seed {seed}, {nodes} nodes: leader or term moved without a fault"
            );
            assert_passed(&sim.run());
        }
    }
}

// B10: isolating the leader makes the rest elect a new one in a later term, and once healed
// the old leader follows it.
#[test]
fn reelection_after_isolating_the_leader() {
    for seed in 1..=5 {
        let config = scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let old = await_leader(&mut sim, 10 * unit, seed);
        let old_term = sim.status(old).expect("up").term;
        let rest: Vec<_> = sim.node_ids().into_iter().filter(|&n| n != old).collect();
        sim.partition(&[vec![old], rest.clone()]);
        let elected = sim.run_until(10 * unit, |sim| rest.iter().any(|&n| is_leader(sim, n)));
        assert!(elected, "seed {seed}: the majority elected nobody");
        let new = sim.leader().expect("elected");
        let new_term = sim.status(new).expect("up").term;
        assert!(
            new_term > old_term,
            "seed {seed}: re-elected in the same term"
        );
        sim.heal();
        let follows = sim.run_until(5 * unit, |sim| {
            sim.status(old)
                .is_some_and(|s| s.role == Role::Follower && s.leader == Some(new))
        });
        assert!(follows, "seed {seed}: the old leader does not follow {new}");
        assert_passed(&sim.run());
    }
}

// B11: in a cluster of 7, a leader is elected and client operations complete with 3 nodes
// down; with 4 down no leader is elected and no operation completes however long it waits;
// once the nodes restart, every operation completes.
#[test]
fn seven_nodes_elect_with_three_down_but_not_with_four() {
    for seed in 1..=5 {
        let mut config = scripted(seed, 7);
        config.ops = 100;
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let ids = sim.node_ids();
        for &node in &ids[4..] {
            sim.crash_node(node);
        }
        // Four of seven are up: a quorum. A leader emerges and clients finish operations.
        let leader = await_leader(&mut sim, 20 * unit, seed);
        let with_three_down = sim.now();
        sim.run_for(20 * unit);
        let after_three = sim.now();

        // One more down (the leader, so nothing is left of its term): no quorum.
        sim.crash_node(leader);
        // In-flight work may finish within a timeout (a follower applying what it already
        // knew was committed); after that nothing may complete.
        sim.run_for(unit);
        let frozen_from = sim.now();
        let elected = sim.run_until(40 * unit, any_leader);
        assert!(
            !elected,
            "seed {seed}: a leader was elected with 4 of 7 nodes down"
        );
        let frozen_to = sim.now();

        for &node in &ids {
            sim.restart_node(node);
        }
        let report = sim.run();
        assert_passed(&report);
        let progress = completed_between(&report.history, with_three_down, after_three);
        assert!(
            !progress.is_empty(),
            "seed {seed}: no operation completed with 3 of 7 down"
        );
        let stuck = completed_between(&report.history, frozen_from, frozen_to);
        assert!(
            stuck.is_empty(),
            "seed {seed}: operations completed without a quorum: {stuck:?}"
        );
    }
}

// B12: two candidates that start an election at the same instant split the vote at worst, and
// randomized election timeouts settle on a single leader within a few election timeouts; the
// scenario repeats several times per run, each time from the leader's crash.
#[test]
fn dueling_candidates_resolve_under_randomized_timeouts() {
    for seed in 1..=10 {
        let config = scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        // The first duel: two nodes campaign at once before anyone led.
        let ids = sim.node_ids();
        sim.campaign(ids[0]);
        sim.campaign(ids[1]);
        let mut leader = await_leader(&mut sim, 10 * unit, seed);
        for round in 0..5 {
            sim.crash_node(leader);
            let rivals: Vec<_> = ids
                .iter()
                .copied()
                .filter(|&n| n != leader)
                .take(2)
                .collect();
            sim.campaign(rivals[0]);
            sim.campaign(rivals[1]);
            let start = sim.now();
            let next = await_leader(&mut sim, 10 * unit, seed);
            assert!(
                sim.now() - start <= 10 * unit,
                "seed {seed}, round {round}: the duel took {} units",
                sim.now() - start
            );
            // One leader, in the highest term: nobody else claims to lead it.
            let term = sim.status(next).expect("up").term;
            let leaders = ids
                .iter()
                .filter(|&&n| {
                    sim.status(n)
                        .is_some_and(|s| s.role == Role::Leader && s.term == term)
                })
                .count();
            assert_eq!(leaders, 1, "seed {seed}, round {round}");
            sim.restart_node(leader);
            leader = next;
        }
        assert_passed(&sim.run());
    }
}

// B13 (PreVote): a follower cut off for many election timeouts does not bump its term, so
// when it rejoins it does not depose the healthy leader: leader and term are unchanged.
#[test]
fn a_rejoining_partitioned_follower_cannot_depose_a_healthy_leader() {
    for seed in 1..=5 {
        let config = scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let leader = await_leader(&mut sim, 10 * unit, seed);
        let term = sim.status(leader).expect("up").term;
        let loner = sim
            .node_ids()
            .into_iter()
            .find(|&n| n != leader)
            .expect("five nodes");
        let rest: Vec<_> = sim.node_ids().into_iter().filter(|&n| n != loner).collect();
        sim.partition(&[vec![loner], rest]);
        sim.run_for(20 * unit);
        assert_eq!(
            sim.status(loner).expect("up").term,
            term,
            "seed {seed}: the isolated follower moved its term"
        );
        sim.heal();
        let deposed = sim.run_until(10 * unit, |sim| {
            sim.leader() != Some(leader) || sim.status(leader).is_none_or(|s| s.term != term)
        });
        assert!(
            !deposed,
            "seed {seed}: the rejoining follower deposed the leader"
        );
        assert!(
            sim.status(loner).is_some_and(|s| s.leader == Some(leader)),
            "seed {seed}: the rejoined follower does not follow the leader"
        );
        assert_passed(&sim.run());
    }
}

// B13 (CheckQuorum): a leader cut off from the majority stops leading within about an election
// timeout, instead of serving as a stale leader indefinitely; the majority elects another.
#[test]
fn a_leader_that_lost_its_quorum_steps_down() {
    for seed in 1..=5 {
        let config = scripted(seed, 5);
        let unit = config.election_timeout_units();
        let mut sim = chorus_sim::Simulator::new(config);
        let leader = await_leader(&mut sim, 10 * unit, seed);
        let ids = sim.node_ids();
        let mate = ids.iter().copied().find(|&n| n != leader).expect("five");
        let majority: Vec<_> = ids
            .iter()
            .copied()
            .filter(|&n| n != leader && n != mate)
            .collect();
        sim.partition(&[vec![leader, mate], majority.clone()]);
        let stepped_down = sim.run_until(3 * unit, |sim| !is_leader(sim, leader));
        assert!(
            stepped_down,
            "seed {seed}: the minority leader kept leading"
        );
        let elected = sim.run_until(10 * unit, |sim| majority.iter().any(|&n| is_leader(sim, n)));
        assert!(elected, "seed {seed}: the majority elected nobody");
        assert_passed(&sim.run());
    }
}
