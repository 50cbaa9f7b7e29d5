//! Protocol-aware recovery: a node whose disk damaged synced log records (which it may have
//! acknowledged) restarts *repairing* ([`chorus_raft::HardState::repairing`]): in a later
//! term, starting no election, and voting only as its log before the damage would have
//! ([`chorus_raft::DurableState::log_end_before_damage`]), until its committed log is back
//! past where that log ended. Voting by the log the damage left, its vote can elect a leader
//! that lacks a committed entry only it and a minority held (Alagappan et al.,
//! "Protocol-Aware Recovery for Consensus-Based Storage", FAST'18); not voting at all, a
//! cluster of two voters waits forever.

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{LogPosition, MembershipChange, Role};

use crate::harness::{Network, id};

/// What `FileStorage::open` does to `node`'s disk when a sync marker proves a damaged record
/// was synced: the log is cut to its first `kept` entries, the hard state marks the node
/// repairing in the highest term the lost entries could have been acknowledged in, and, if
/// `known`, the storage says where the log ended before the cut (the sync markers after the
/// damage say). Returns that term.
fn damage(network: &mut Network, node: NodeId, kept: usize, known: bool) -> Term {
    let disk = network.disks.get_mut(&node).expect("the node's disk");
    let last = disk.entries.last().expect("a log to damage");
    let before = LogPosition {
        term: last.term,
        index: last.index,
    };
    disk.entries.truncate(kept);
    let surviving = disk.entries.last().map_or(Term(0), |entry| entry.term);
    let repairing = disk.hard_state.term.max(surviving);
    disk.hard_state.repairing = Some(repairing);
    disk.log_end_before_damage = known.then_some(before);
    repairing
}

/// Node 1 leads and commits `a`, `b`, `c` with node 2 alone (node 3 is cut off). Then node 2
/// crashes and its disk loses the three entries it acknowledged, and node 1 goes down.
/// Returns the network with node 2 restarted (repairing, knowing where its log ended if
/// `known`) and linked to node 3, and the term the lost entries were acknowledged in.
fn a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower(
    known: bool,
) -> (Network, Term) {
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
    // The disk damaged the synced record holding the commands.
    let repairing = damage(&mut network, id(2), 1, known);
    assert_eq!(repairing, term);
    network.heal();
    network.isolate(id(1));
    network.restart(id(2));
    (network, term)
}

/// `leader` commits `d`, an entry of its term: that ends `node`'s repair, durably, and
/// `node` commits as far as the leader.
fn commits_and_repairs(network: &mut Network, leader: NodeId, node: NodeId) {
    network.propose(leader, "d");
    network.deliver();
    network.tick(10);
    let repaired = network.node(node).status();
    assert_eq!(repaired.repairing, None, "the leader's log repaired {node}");
    assert_eq!(
        network.node(node).hard_state().repairing,
        None,
        "and the end of the repair was made durable"
    );
    assert_eq!(repaired.commit, network.node(leader).status().commit);
}

#[test]
fn a_repairing_node_restarts_in_a_later_term_and_votes_for_no_one_that_lacks_what_it_lost() {
    for known in [true, false] {
        a_repairing_node_votes_for_no_one_that_lacks_what_it_lost(known);
    }
}

fn a_repairing_node_votes_for_no_one_that_lacks_what_it_lost(known: bool) {
    let (mut network, term) =
        a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower(known);
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
        a_committed_entry_held_only_by_a_crashed_leader_and_a_damaged_follower(true);
    network.tick(100);
    // Node 1, which holds the entries, comes back: it is elected (node 2 may vote for it,
    // its log reaching where node 2's ended), and its entry of the new term repairs node 2.
    network.restart(id(1));
    network.heal();
    let leader = network.tick_until_leader(500);
    assert_eq!(leader, id(1), "only node 1 holds every committed entry");
    assert!(network.node(leader).status().term > term);
    commits_and_repairs(&mut network, leader, id(2));

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
        damage(&mut network, id(2), 1, true);
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

/// Two voters: node 1 leads and commits `a`, `b`, `c` with node 2, whose disk then loses
/// them. Returns the network with node 2 restarted (repairing, knowing where its log ended if
/// `known`) and the term the lost entries were acknowledged in.
fn two_voters_and_a_damaged_follower(known: bool) -> (Network, Term) {
    let mut network = Network::new(2, |_| {});
    network.elect(id(1));
    for text in ["a", "b", "c"] {
        network.propose(id(1), text);
    }
    network.deliver();
    assert!(network.node(id(2)).status().commit >= LogIndex(4));
    let term = network.node(id(1)).status().term;
    network.crash(id(2));
    let repairing = damage(&mut network, id(2), 1, known);
    assert_eq!(repairing, term);
    network.restart(id(2));
    (network, term)
}

#[test]
fn in_a_cluster_of_two_voters_a_damaged_follower_votes_the_leader_back_and_is_repaired() {
    let (mut network, term) = two_voters_and_a_damaged_follower(true);
    // Node 2 restarts in a later term, so node 1 steps down; node 1 cannot win without node
    // 2's vote, and node 2 gives it: node 1's log reaches where node 2's ended.
    network.tick(100);
    let leader = network
        .leader()
        .expect("node 1 elected again with node 2's vote");
    assert_eq!(leader, id(1), "node 2 does not campaign while repairing");
    assert!(network.node(leader).status().term > term);
    commits_and_repairs(&mut network, leader, id(2));
    assert_eq!(
        network.applied_commands(id(2)),
        ["a", "b", "c", "d"],
        "node 2 holds every committed command again"
    );
}

#[test]
fn in_a_cluster_of_two_voters_a_node_that_cannot_say_where_its_log_ended_waits() {
    // A storage that cannot say where the log ended (a hard-state file or sync markers
    // written before they said) leaves only candidates with an entry of a later term: none
    // can be elected by two voters. Nothing is lost; an operator restores node 2.
    let (mut network, term) = two_voters_and_a_damaged_follower(false);
    network.tick(300);
    assert_eq!(network.leader(), None);
    assert_eq!(network.node(id(2)).status().repairing, Some(term));
    assert_eq!(
        network.node(id(1)).status().commit,
        LogIndex(4),
        "node 1 keeps every committed entry"
    );
}

#[test]
fn in_a_cluster_of_two_voters_a_damaged_leader_waits_for_entries_its_peer_lacks() {
    // Node 2 leads and appends `x`, `y` that node 1 never receives, then loses them to the
    // damage. It cannot tell whether they were committed (with a voter added by an entry it
    // also lost), so it votes only for a candidate holding them: node 1 is not one, and no
    // one is elected. Nothing committed is lost.
    let mut network = Network::new(2, |_| {});
    network.elect(id(2));
    network.propose(id(2), "a");
    network.deliver();
    let commit = network.node(id(1)).status().commit;
    network.isolate(id(1));
    for text in ["x", "y"] {
        network.propose(id(2), text);
    }
    network.deliver();
    network.crash(id(2));
    damage(&mut network, id(2), 1, true);
    network.heal();
    network.restart(id(2));
    network.tick(300);
    assert_eq!(network.leader(), None);
    let status = network.node(id(1)).status();
    assert!(status.commit >= commit);
    assert_eq!(
        status.last_index,
        LogIndex(2),
        "node 1 holds `a`, never `x` or `y`"
    );
}

#[test]
fn a_voter_added_by_a_lost_entry_still_guards_what_it_committed() {
    // Why a repairing node cannot trust the configuration its cut log shows. Nodes 1 and 2
    // are the voters; node 2 leads, adds node 3 as a learner, and, with node 1 cut off,
    // promotes it and commits `e` with it. Node 2's disk then loses the promotion and `e`:
    // its log shows two voters again, as node 1's does, and node 1 needs node 2's vote. A
    // node that voted because its configuration has two voters would elect node 1 without
    // `e`; node 2 votes as its log before the damage would have, and node 1's log ends before
    // that. Node 3, back, holds `e`: node 2 votes for it.
    let mut network = Network::new(2, |_| {});
    network.elect(id(2));
    network.tick(2);
    network.add_node(id(3), |_| {});
    for change in [
        MembershipChange::AddLearner(id(3)),
        MembershipChange::Promote(id(3)),
    ] {
        if change == MembershipChange::Promote(id(3)) {
            network.isolate(id(1));
        }
        network
            .node_mut(id(2))
            .propose_membership(change)
            .expect("change accepted");
        network.deliver();
        network.tick(3);
        assert!(network.node(id(2)).membership_committed(), "{change:?}");
    }
    network.propose(id(2), "e");
    network.deliver();
    network.tick(3);
    let committed = network.node(id(2)).status().commit;
    assert!(network.node(id(3)).status().commit >= committed);
    let node_1_last = network.node(id(1)).status().last_index;
    assert!(node_1_last < committed, "node 1 lacks `e`");

    network.crash(id(2));
    network.crash(id(3));
    let kept = usize::try_from(node_1_last.0).expect("small");
    damage(&mut network, id(2), kept, true);
    network.heal();
    network.restart(id(2));
    assert_eq!(
        network.node(id(2)).membership().voters.len(),
        2,
        "the cut log shows two voters"
    );
    network.tick(300);
    assert_eq!(network.leader(), None, "node 1 was elected without `e`");

    network.restart(id(3));
    let leader = network.tick_until_leader(1000);
    assert_eq!(leader, id(3), "only node 3 holds `e`");
    network.propose(leader, "f");
    network.deliver();
    network.tick(10);
    assert!(
        network.applied_commands(id(1)).contains(&"e".to_owned()),
        "`e` survived"
    );
}
