//! Membership changes (single-server, thesis §4.1 with Ongaro's 2015 fix), learners, and
//! leadership transfer (thesis §3.10): one test per rule.

use chorus_core::{LogIndex, NodeId};
use chorus_raft::{
    Config, Membership, MembershipChange, MembershipError, Message, ProposeError, RawNode, Role,
    TransferError,
};

use crate::harness::{Network, id};

fn voters(ids: &[u64]) -> Membership {
    Membership::with_voters(ids.iter().map(|&n| id(n)))
}

/// A three-node cluster led by node 1, with its no-op committed.
fn three() -> Network {
    let mut network = Network::new(3, |_| {});
    network.elect(id(1));
    network.tick(2);
    network
}

fn change(network: &mut Network, leader: NodeId, change: MembershipChange) {
    network
        .node_mut(leader)
        .propose_membership(change)
        .expect("change accepted");
    network.deliver();
    network.tick(3);
    assert!(
        network.node(leader).membership_committed(),
        "{change:?} committed"
    );
}

fn small_snapshots(config: &mut Config) {
    config.snapshot_threshold_entries = 8;
    config.compaction_tail_entries = 0;
}

#[test]
fn g28_a_learner_receives_the_log_but_neither_votes_nor_counts() {
    let mut network = three();
    network.add_node(id(4), |_| {});
    change(&mut network, id(1), MembershipChange::AddLearner(id(4)));
    network.propose(id(1), "a");
    network.tick(3);
    assert_eq!(network.applied_commands(id(4)), vec!["a"]);
    let learner = network.node(id(4));
    assert!(learner.membership().is_learner(id(4)) && !learner.is_voter());
    // With two voters down, the leader cannot commit: the learner's ack does not count.
    network.crash(id(2));
    network.crash(id(3));
    let before = network.node(id(1)).status().commit;
    network.propose(id(1), "b");
    network.tick(3);
    assert_eq!(network.node(id(1)).status().commit, before);
    // And the learner never campaigns, however long the leader is silent.
    network.crash(id(1));
    network.tick(100);
    assert_eq!(network.node(id(4)).status().role, Role::Follower);
    assert_eq!(
        network.node(id(4)).status().term,
        network.node(id(1)).status().term
    );
}

#[test]
fn g28_a_learner_is_promoted_only_once_caught_up_even_through_a_snapshot() {
    let mut network = Network::new(3, small_snapshots);
    network.elect(id(1));
    for n in 0..40 {
        network.propose(id(1), &format!("c{n}"));
        network.deliver();
    }
    network.tick(2);
    assert!(network.node(id(1)).first_index() > LogIndex(1), "compacted");
    network.add_node(id(4), small_snapshots);
    network.isolate(id(4));
    change(&mut network, id(1), MembershipChange::AddLearner(id(4)));
    for n in 0..100 {
        network.propose(id(1), &format!("d{n}"));
        network.deliver();
    }
    assert_eq!(
        network
            .node_mut(id(1))
            .propose_membership(MembershipChange::Promote(id(4))),
        Err(MembershipError::LearnerBehind(id(4)))
    );
    network.heal();
    network.tick(5);
    assert!(
        network
            .snapshots_installed
            .get(&id(4))
            .copied()
            .unwrap_or(0)
            >= 1
    );
    change(&mut network, id(1), MembershipChange::Promote(id(4)));
    assert!(network.node(id(4)).is_voter());
    assert_eq!(network.node(id(4)).membership(), &voters(&[1, 2, 3, 4]));
    // The snapshot carried the configuration: a restart of node 4 keeps it.
    network.crash(id(4));
    network.restart(id(4));
    assert_eq!(network.node(id(4)).membership(), &voters(&[1, 2, 3, 4]));
}

#[test]
fn g28_a_new_leader_changes_membership_only_after_committing_in_its_term() {
    let mut network = three();
    // Node 2 wins but hears no acknowledgement of its no-op.
    network.crash(id(1));
    network.filter = Some(Box::new(|_, _, message| {
        !matches!(message, Message::AppendEntriesResponse(_))
    }));
    let leader = network.tick_until_leader(100);
    // The no-op cannot have committed with nobody answering.
    let proposal = network
        .node_mut(leader)
        .propose_membership(MembershipChange::AddLearner(id(4)));
    assert_eq!(proposal, Err(MembershipError::NotCommittedInTerm));
}

#[test]
fn g28_one_change_at_a_time() {
    let mut network = three();
    network.isolate(id(2));
    network.isolate(id(3));
    network
        .node_mut(id(1))
        .propose_membership(MembershipChange::AddLearner(id(4)))
        .expect("first change");
    assert_eq!(
        network
            .node_mut(id(1))
            .propose_membership(MembershipChange::AddLearner(id(5))),
        Err(MembershipError::ChangePending)
    );
}

#[test]
fn g28_a_configuration_takes_effect_on_append_and_leaves_with_a_truncation() {
    use chorus_core::Term;
    use chorus_raft::{AppendEntries, Entry, EntryPayload};
    let mut node = RawNode::new(Config::new(id(1), vec![id(1), id(2), id(3)])).expect("valid");
    let append = |term: u64, payload: EntryPayload| {
        Message::AppendEntries(AppendEntries {
            term: Term(term),
            prev_log_index: LogIndex(0),
            prev_log_term: Term(0),
            entries: vec![Entry {
                term: Term(term),
                index: LogIndex(1),
                payload,
            }],
            leader_commit: LogIndex(0),
            read_round: 0,
        })
    };
    let four = voters(&[1, 2, 3, 4]);
    node.step(id(2), append(1, EntryPayload::Membership(four.clone())))
        .expect("accepted");
    assert_eq!(
        node.membership(),
        &four,
        "in force once appended, before any commit"
    );
    assert!(!node.membership_committed());
    // A later leader overwrites the uncommitted entry: its configuration goes with it.
    node.step(id(3), append(2, EntryPayload::NoOp))
        .expect("accepted");
    assert_eq!(node.membership(), &voters(&[1, 2, 3]));
    assert!(node.membership_committed());
}

#[test]
fn g28_removing_the_leader_commits_without_it_then_it_steps_down() {
    let mut network = three();
    network
        .node_mut(id(1))
        .propose_membership(MembershipChange::Remove(id(1)))
        .expect("removal proposed");
    assert!(!network.node(id(1)).is_voter(), "no longer counted");
    assert_eq!(
        network.node(id(1)).status().role,
        Role::Leader,
        "still leads"
    );
    network.deliver();
    network.tick(30);
    assert_ne!(network.node(id(1)).status().role, Role::Leader);
    let leader = network.leader().expect("a new leader among 2 and 3");
    assert!(leader == id(2) || leader == id(3));
    network.propose(leader, "after");
    network.tick(3);
    assert_eq!(network.applied_commands(id(2)), vec!["after"]);
    // The removed node stays quiet: it never campaigns again.
    let term = network.node(leader).status().term;
    network.tick(100);
    assert_eq!(network.node(leader).status().term, term);
}

#[test]
fn g28_a_node_removed_while_partitioned_does_not_disrupt_when_it_returns() {
    let mut network = three();
    network.isolate(id(3));
    change(&mut network, id(1), MembershipChange::Remove(id(3)));
    network.propose(id(1), "x");
    network.tick(50);
    let term = network.node(id(1)).status().term;
    // Node 3 never learned of its removal: it campaigns (pre-votes) in its corner.
    network.heal();
    network.tick(100);
    assert_eq!(network.leader(), Some(id(1)));
    assert_eq!(
        network.node(id(1)).status().term,
        term,
        "no term was disturbed"
    );
    assert_eq!(network.node(id(2)).status().term, term);
}

#[test]
fn g28_replacing_a_crashed_node_restores_a_full_quorum() {
    let mut network = three();
    network.crash(id(3));
    network.add_node(id(4), |_| {});
    change(&mut network, id(1), MembershipChange::AddLearner(id(4)));
    change(&mut network, id(1), MembershipChange::Promote(id(4)));
    change(&mut network, id(1), MembershipChange::Remove(id(3)));
    assert_eq!(network.node(id(1)).membership(), &voters(&[1, 2, 4]));
    // Node 2 may fail now only with 1 and 4 left: a majority of the new voters.
    network.crash(id(2));
    network.propose(id(1), "y");
    network.tick(3);
    assert_eq!(network.applied_commands(id(4)), vec!["y"]);
}

#[test]
fn g28_votes_of_non_voters_do_not_count() {
    let mut network = three();
    network.add_node(id(4), |_| {});
    network.add_node(id(5), |_| {});
    change(&mut network, id(1), MembershipChange::AddLearner(id(4)));
    change(&mut network, id(1), MembershipChange::AddLearner(id(5)));
    // Node 2 campaigns cut off from node 3: learners 4 and 5 may grant, but 2 of 3 voters
    // are needed and only its own vote counts.
    network.crash(id(1));
    network.isolate(id(3));
    network.node_mut(id(2)).campaign();
    network.deliver();
    assert_ne!(network.node(id(2)).status().role, Role::Leader);
}

#[test]
fn g29_a_transfer_to_a_lagging_follower_brings_it_up_to_date_first() {
    let mut network = three();
    network.isolate(id(3));
    for n in 0..10 {
        network.propose(id(1), &format!("w{n}"));
        network.deliver();
    }
    network.heal();
    network
        .node_mut(id(1))
        .transfer_leadership(id(3))
        .expect("transfer starts");
    assert_eq!(
        network
            .node_mut(id(1))
            .propose(bytes::Bytes::from_static(b"z")),
        Err(ProposeError::TransferInProgress)
    );
    network.tick(5);
    assert_eq!(network.leader(), Some(id(3)));
    assert_eq!(network.applied_commands(id(3)).len(), 10);
}

#[test]
fn g29_a_transfer_that_does_not_finish_is_abandoned_and_the_leader_serves_again() {
    let mut network = three();
    network.isolate(id(3));
    network
        .node_mut(id(1))
        .transfer_leadership(id(3))
        .expect("transfer starts");
    assert_eq!(
        network
            .node_mut(id(1))
            .propose_membership(MembershipChange::Remove(id(2))),
        Err(MembershipError::TransferPending)
    );
    network.tick(network.configs[&id(1)].election_timeout_ticks);
    assert_eq!(network.node(id(1)).transfer_target(), None);
    assert_eq!(network.leader(), Some(id(1)));
    network.propose(id(1), "served");
    network.tick(2);
    assert_eq!(network.applied_commands(id(2)), vec!["served"]);
}

#[test]
fn g29_transfer_requests_are_checked() {
    let mut network = three();
    assert_eq!(
        network.node_mut(id(2)).transfer_leadership(id(3)),
        Err(TransferError::NotLeader)
    );
    assert_eq!(
        network.node_mut(id(1)).transfer_leadership(id(1)),
        Err(TransferError::NotAVoter(id(1)))
    );
    assert_eq!(
        network.node_mut(id(1)).transfer_leadership(id(9)),
        Err(TransferError::NotAVoter(id(9)))
    );
}

#[test]
fn g29_a_transfer_after_a_snapshot_and_during_a_membership_change() {
    let mut network = Network::new(3, small_snapshots);
    network.elect(id(1));
    network.isolate(id(3));
    for n in 0..30 {
        network.propose(id(1), &format!("s{n}"));
        network.deliver();
    }
    network.add_node(id(4), small_snapshots);
    network
        .node_mut(id(1))
        .propose_membership(MembershipChange::AddLearner(id(4)))
        .expect("change proposed");
    network
        .node_mut(id(1))
        .transfer_leadership(id(3))
        .expect("transfer during the change");
    network.heal();
    network.tick(8);
    assert_eq!(network.leader(), Some(id(3)));
    assert!(
        network
            .snapshots_installed
            .get(&id(3))
            .copied()
            .unwrap_or(0)
            >= 1
    );
    assert!(network.node(id(3)).membership().is_learner(id(4)));
    network.tick(5);
    assert_eq!(
        network.node(id(4)).status().applied,
        network.node(id(3)).status().commit,
        "the learner caught up from the new leader"
    );
}

#[test]
fn g28_a_configuration_survives_a_restart_from_the_log() {
    let mut network = three();
    network.add_node(id(4), |_| {});
    change(&mut network, id(1), MembershipChange::AddLearner(id(4)));
    for node in [id(2), id(4)] {
        network.crash(node);
        network.restart(node);
        assert!(network.node(node).membership().is_learner(id(4)), "{node}");
    }
}

#[test]
fn malformed_configurations_from_the_network_are_refused() {
    let mut node = RawNode::new(Config::new(id(1), vec![id(1), id(2), id(3)])).expect("valid");
    let empty = chorus_raft::AppendEntries {
        term: chorus_core::Term(1),
        prev_log_index: LogIndex(0),
        prev_log_term: chorus_core::Term(0),
        entries: vec![chorus_raft::Entry {
            term: chorus_core::Term(1),
            index: LogIndex(1),
            payload: chorus_raft::EntryPayload::Membership(Membership::default()),
        }],
        leader_commit: LogIndex(0),
        read_round: 0,
    };
    assert!(node.step(id(2), Message::AppendEntries(empty)).is_err());
    assert_eq!(node.membership(), &voters(&[1, 2, 3]));
}
