//! Elections: Raft §5.2, PreVote and CheckQuorum (thesis §9.6).

use chorus_core::{NodeId, Term};
use chorus_raft::Role;

use crate::harness::{Network, id};

fn assert_single_stable_leader(network: &mut Network) -> NodeId {
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    // Without faults, the term stays put and everyone follows the same leader.
    network.tick(100);
    assert_eq!(network.leader(), Some(leader));
    for node in network.ids() {
        let status = network.node(node).status();
        assert_eq!(status.term, term, "{node} is in the leader's term");
        assert_eq!(status.leader, Some(leader), "{node} knows the leader");
    }
    leader
}

#[test]
fn initial_election_with_three_nodes_elects_one_stable_leader() {
    let mut network = Network::new(3, |_| {});
    let leader = assert_single_stable_leader(&mut network);
    // The no-op of the new term is committed and applied everywhere.
    for node in network.ids() {
        assert!(network.node(node).status().commit.0 >= 1);
        assert_eq!(network.applied[&node].len(), 1, "{node} applied the no-op");
    }
    assert_eq!(network.node(leader).status().term, Term(1));
}

#[test]
fn initial_election_with_five_nodes_elects_one_stable_leader() {
    let mut network = Network::new(5, |_| {});
    assert_single_stable_leader(&mut network);
}

#[test]
fn initial_election_without_pre_vote_or_check_quorum_also_converges() {
    let mut network = Network::new(5, |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    assert_single_stable_leader(&mut network);
}

#[test]
fn single_voter_becomes_leader_on_its_first_timeout_and_commits_alone() {
    let mut network = Network::new(1, |_| {});
    let leader = network.tick_until_leader(30);
    assert_eq!(leader, id(1));
    network.propose(leader, "x");
    network.deliver();
    assert_eq!(network.applied_commands(leader), vec!["x"]);
}

#[test]
fn isolating_the_leader_elects_another_and_the_old_one_steps_down() {
    let mut network = Network::new(3, |_| {});
    let old = network.tick_until_leader(100);
    let old_term = network.node(old).status().term;
    network.isolate(old);
    network.tick(60);
    let new = network.leader().expect("the majority elected a leader");
    assert_ne!(new, old);
    assert!(network.node(new).status().term > old_term);
    // CheckQuorum: the isolated leader noticed it lost its majority (and, alone, keeps
    // asking for pre-votes in vain).
    assert_ne!(network.node(old).status().role, Role::Leader);
    assert_eq!(network.node(old).status().leader, None);
    assert_eq!(
        network.node(old).status().term,
        old_term,
        "pre-vote kept its term"
    );

    network.heal();
    network.tick(30);
    assert_eq!(network.leader(), Some(new));
    assert_eq!(network.node(old).status().leader, Some(new));
}

#[test]
fn no_leader_is_elected_without_a_quorum() {
    let mut network = Network::new(5, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    // Three of five down: the two left can never win, and pre-vote keeps their terms.
    let survivors: Vec<NodeId> = network
        .ids()
        .into_iter()
        .filter(|&n| n != leader)
        .take(2)
        .collect();
    for node in network.ids() {
        if !survivors.contains(&node) {
            network.crash(node);
        }
    }
    network.tick(300);
    assert_eq!(network.leader(), None);
    for node in survivors {
        let status = network.node(node).status();
        assert_ne!(status.role, Role::Leader);
        assert_eq!(
            status.term, term,
            "{node} did not bump its term without a quorum"
        );
    }
}

#[test]
fn no_leader_without_a_quorum_even_without_pre_vote() {
    let mut network = Network::new(3, |config| config.pre_vote = false);
    let leader = network.tick_until_leader(100);
    let others: Vec<NodeId> = network.ids().into_iter().filter(|&n| n != leader).collect();
    network.crash(leader);
    network.crash(others[0]);
    network.tick(200);
    assert_eq!(network.leader(), None);
    assert_eq!(network.node(others[1]).status().role, Role::Candidate);
}

#[test]
fn a_rejoining_partitioned_follower_does_not_raise_terms_or_depose_the_leader() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    let follower = network
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");
    network.isolate(follower);
    network.tick(100);
    // Pre-vote: it kept asking, but never moved its term.
    assert_eq!(network.node(follower).status().term, term);
    assert_eq!(network.node(follower).status().role, Role::PreCandidate);
    network.heal();
    network.tick(20);
    assert_eq!(network.leader(), Some(leader));
    for node in network.ids() {
        assert_eq!(
            network.node(node).status().term,
            term,
            "{node} kept the term"
        );
    }
    assert_eq!(network.node(follower).status().leader, Some(leader));
}

#[test]
fn followers_in_lease_ignore_a_disruptive_candidate() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    let follower = network
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");
    // A forced election (no pre-vote) from a follower while the leader is healthy: the others
    // heard from the leader recently and ignore it, so the leader survives.
    network.node_mut(follower).campaign();
    network.deliver();
    assert_eq!(network.node(leader).status().role, Role::Leader);
    assert_eq!(network.node(leader).status().term, term);
    // The candidate learns it lost when the leader's heartbeats meet its higher term: the
    // leader steps down on the candidate's rejection and a new election settles.
    network.tick(60);
    assert!(network.leader().is_some());
}

#[test]
fn a_leader_that_loses_its_quorum_steps_down() {
    let mut network = Network::new(5, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    for node in network.ids() {
        if node != leader {
            network.crash(node);
        }
    }
    // Within one CheckQuorum period (plus the one already under way) it gives up.
    network.tick(2 * 10 + 1);
    let status = network.node(leader).status();
    assert_eq!(status.role, Role::Follower);
    assert_eq!(status.term, term);
    assert_eq!(status.leader, None);
}

#[test]
fn without_check_quorum_an_isolated_leader_stays_leader() {
    let mut network = Network::new(3, |config| config.check_quorum = false);
    let leader = network.tick_until_leader(100);
    network.isolate(leader);
    network.tick(60);
    assert_eq!(network.node(leader).status().role, Role::Leader);
}

#[test]
fn an_up_to_date_log_is_required_for_a_vote() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let lagging = network
        .ids()
        .into_iter()
        .find(|&n| n != leader)
        .expect("a follower");
    network.isolate(lagging);
    network.propose(leader, "a");
    network.tick(2);
    network.heal();
    network.crash(leader);
    // The lagging node lacks "a": it can campaign, but the other survivor refuses it.
    network.tick(15); // leases expire
    network.node_mut(lagging).campaign();
    network.deliver();
    assert_ne!(network.node(lagging).status().role, Role::Leader);
    let new = network.tick_until_leader(200);
    assert_ne!(new, lagging);
    assert_eq!(network.applied_commands(new), vec!["a"]);
}
