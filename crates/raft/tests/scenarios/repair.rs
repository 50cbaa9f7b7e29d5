//! Protocol-aware recovery: a node whose disk damaged synced log records (which it may have
//! acknowledged) restarts *repairing* ([`chorus_raft::HardState::repairing`]): in a later
//! term, granting no vote and starting no election until its commit index reaches an entry
//! of a term after the damage. Without that, its vote can elect a leader that lacks a
//! committed entry only it and a minority held (Alagappan et al., "Protocol-Aware Recovery
//! for Consensus-Based Storage", FAST'18).

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::Role;

use crate::harness::{Network, id};

/// Node 1 leads and commits `a`, `b`, `c` with node 2 alone (node 3 is cut off). Then node 2
/// crashes and its disk loses the three entries it acknowledged, and node 1 goes down.
/// Returns the network with node 2 restarted (repairing) and linked to node 3, and the term
/// the lost entries were acknowledged in.
fn a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower() -> (Network, Term) {
    let mut network = Network::new(3, |_| {});
    network.elect(id(1));
    network.isolate(id(3));
    for text in ["a", "b", "c"] {
        network.propose(id(1), text);
    }
    network.deliver();
    let commit = network.node(id(1)).status().commit;
    assert!(
        commit >= LogIndex(4),
        "committed by nodes 1 and 2: {commit}"
    );
    let term = network.node(id(1)).status().term;

    network.crash(id(1));
    network.crash(id(2));
    let disk = network.disks.get_mut(&id(2)).expect("node 2's disk");
    // The disk damaged the synced record holding the commands: recovery cut it and what
    // followed, and marked the node as repairing (what FileStorage::open does).
    disk.entries.truncate(1);
    disk.hard_state.repairing = Some(disk.hard_state.term.max(term));
    network.heal();
    network.isolate(id(1));
    network.restart(id(2));
    (network, term)
}

#[test]
fn a_repairing_node_restarts_in_a_later_term_and_votes_for_no_one() {
    let (mut network, term) =
        a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower();
    let status = network.node(id(2)).status();
    assert_eq!(status.repairing, Some(term));
    assert!(
        status.term > term,
        "restarted in {} after {term}",
        status.term
    );

    // Node 3 lacks the committed entries; node 2's vote would make it leader. Many election
    // timeouts later, no one leads and nothing committed is lost.
    network.tick(500);
    assert_eq!(
        network.leader(),
        None,
        "a leader was elected without the committed entries"
    );
    assert_eq!(network.node(id(2)).status().role, Role::Follower);
    assert!(
        network.node(id(3)).status().last_index < LogIndex(2),
        "node 3 never received the committed commands"
    );
}

#[test]
fn a_repairing_node_is_repaired_by_a_leader_of_a_later_term_and_votes_again() {
    let (mut network, term) =
        a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower();
    network.tick(100);
    // Node 1, which holds the entries, comes back: nodes 1 and 3 elect it (node 2 abstains),
    // and its entry of the new term repairs node 2.
    network.restart(id(1));
    network.heal();
    let leader = network.tick_until_leader(500);
    assert_eq!(leader, id(1), "only node 1 holds every committed entry");
    assert!(network.node(leader).status().term > term);
    network.propose(leader, "d");
    network.deliver();
    network.tick(10);
    let repaired = network.node(id(2)).status();
    assert_eq!(
        repaired.repairing, None,
        "the commit of a later term ended the repair"
    );
    assert_eq!(
        network.node(id(2)).hard_state().repairing,
        None,
        "and the end of the repair was made durable"
    );
    assert_eq!(repaired.commit, network.node(leader).status().commit);

    // Node 2 votes again: with node 1 gone, it and node 3 elect a leader.
    network.crash(id(1));
    let next = network.tick_until_leader(1000);
    assert_ne!(next, id(1));
}

#[test]
fn a_repairing_node_that_is_the_only_voter_refuses_to_start() {
    let durable = chorus_raft::DurableState {
        hard_state: chorus_raft::HardState {
            term: Term(3),
            vote: None,
            commit: LogIndex(0),
            repairing: Some(Term(3)),
        },
        ..chorus_raft::DurableState::default()
    };
    let config = chorus_raft::Config::new(NodeId(1), vec![NodeId(1)]);
    let error = chorus_raft::RawNode::restart(config, durable).expect_err("no peer to repair from");
    assert!(error.to_string().contains("repair"), "{error}");
}

// The harness checks S3 (committed entries agree) as nodes apply: the leader node 2's vote
// elects overwrites the committed entries, and the check fails.
#[cfg(feature = "inject-bugs")]
#[test]
#[should_panic(expected = "S3")]
fn with_the_injected_bug_the_repairing_nodes_vote_loses_a_committed_entry() {
    let (mut network, _) = {
        // The same scenario with the bug in every node's configuration.
        let mut network =
            Network::new(3, |config| config.injected_bugs.repairing_node_votes = true);
        network.elect(id(1));
        network.isolate(id(3));
        for text in ["a", "b", "c"] {
            network.propose(id(1), text);
        }
        network.deliver();
        let term = network.node(id(1)).status().term;
        network.crash(id(1));
        network.crash(id(2));
        let disk = network.disks.get_mut(&id(2)).expect("node 2's disk");
        disk.entries.truncate(1);
        disk.hard_state.repairing = Some(disk.hard_state.term.max(term));
        network.heal();
        network.isolate(id(1));
        network.restart(id(2));
        (network, term)
    };
    let leader = network.tick_until_leader(500);
    assert_ne!(
        leader,
        id(1),
        "node 2's vote elected a leader that lacks the entries"
    );
    network.restart(id(1));
    network.heal();
    network.propose(leader, "x");
    network.deliver();
    network.tick(20);
}
