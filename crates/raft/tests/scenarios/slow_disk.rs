//! A slow disk cannot cause an election: a driver that persists on another thread keeps
//! stepping and ticking while a Ready is outstanding, and sends what
//! [`chorus_raft::RawNode::take_messages`] gives (heartbeats, AppendEntries, forwarded
//! proposals, and acks that promise only what is durable already), while every new promise
//! (acks of entries not yet durable, votes) waits for the disk (the crate docs' contract,
//! step 3; Raft Figure 2, thesis §10.2.1).

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{Message, Role};

use crate::harness::Network;

fn others(network: &Network, node: NodeId) -> Vec<NodeId> {
    network.ids().into_iter().filter(|&n| n != node).collect()
}

/// How many vote requests (pre-votes included) were delivered so far.
fn vote_requests(network: &Network) -> usize {
    network.count_delivered(|_, _, message| matches!(message, Message::RequestVote(_)))
}

/// How many successful AppendEntries answers `from` delivered so far.
fn acks_from(network: &Network, from: NodeId) -> usize {
    network.count_delivered(|sender, _, message| {
        sender == from && matches!(message, Message::AppendEntriesResponse(ack) if ack.success)
    })
}

/// How many successful AppendEntries answers `from` delivered so far that promised entries
/// beyond `index`.
fn acks_beyond(network: &Network, from: NodeId, index: LogIndex) -> usize {
    network.count_delivered(|sender, _, message| {
        sender == from
            && matches!(message, Message::AppendEntriesResponse(ack)
                if ack.success && ack.match_index > index)
    })
}

/// What `leader` knows `follower` holds durably.
fn match_index(network: &Network, leader: NodeId, follower: NodeId) -> Option<LogIndex> {
    network
        .node(leader)
        .match_indexes()
        .into_iter()
        .find(|(node, _)| *node == follower)
        .map(|(_, index)| index)
}

#[test]
fn a_leader_whose_disk_hangs_keeps_leading_and_its_followers_keep_committing() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    network.stall_disk(leader);
    network.propose(leader, "a");
    network.deliver();
    assert!(network.has_outstanding(leader), "the leader's write hangs");
    let votes_before = vote_requests(&network);

    // Ten election timeouts with a hung disk, proposals arriving all along.
    for round in 0..50 {
        network.propose(leader, &format!("b{round}"));
        network.tick(2);
    }
    assert_eq!(vote_requests(&network), votes_before, "nobody campaigned");
    assert_eq!(network.leader(), Some(leader));
    for node in network.ids() {
        assert_eq!(
            network.node(node).status().term,
            term,
            "{node} kept the term"
        );
    }
    // The followers made every entry durable: a majority without the leader's own copy, so
    // everything committed and the followers applied it; the leader applies once its Ready
    // is done.
    let last = network.node(leader).status().last_index;
    assert_eq!(network.node(leader).status().commit, last);
    for follower in others(&network, leader) {
        assert_eq!(network.applied_commands(follower).len(), 51, "{follower}");
    }
    assert!(network.applied_commands(leader).is_empty());

    network.resume_disk(leader);
    network.tick(3);
    assert_eq!(network.applied_commands(leader).len(), 51);
    assert_eq!(network.leader(), Some(leader));
}

#[test]
fn a_leader_whose_disk_hangs_counts_its_own_log_only_once_durable() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let commit_before = network.node(leader).status().commit;
    let [reachable, cut] = others(&network, leader)[..] else {
        panic!("three nodes");
    };
    // Only one follower hears the leader: with the leader's own copy it would be a
    // majority, but that copy is not durable yet.
    network.cut_link(leader, cut);
    network.stall_disk(leader);
    network.propose(leader, "x");
    network.tick(5);
    assert!(network.has_outstanding(leader));
    assert!(network.node(reachable).status().last_index > commit_before);
    assert_eq!(
        network.node(leader).status().commit,
        commit_before,
        "committed on one follower's word and a copy that is not durable"
    );

    network.resume_disk(leader);
    network.tick(2);
    assert!(network.node(leader).status().commit > commit_before);
    assert_eq!(network.applied_commands(leader), vec!["x"]);
}

#[test]
fn a_follower_whose_disk_hangs_acks_nothing_until_durable() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let term = network.node(leader).status().term;
    let slow = others(&network, leader)[0];
    let durable = match_index(&network, leader, slow).expect("a follower");
    network.stall_disk(slow);
    network.propose(leader, "a");
    network.deliver();
    assert!(network.has_outstanding(slow));
    let acks_before = acks_from(&network, slow);
    let votes_before = vote_requests(&network);

    for round in 0..50 {
        network.propose(leader, &format!("b{round}"));
        network.tick(2);
    }
    // The follower heard every heartbeat (its election timer stayed reset) and answered
    // those that asked only for what it holds durably, but promised nothing it has not made
    // durable.
    assert!(
        acks_from(&network, slow) > acks_before,
        "heartbeats at the durable match index are answered at once"
    );
    assert_eq!(
        acks_beyond(&network, slow, durable),
        0,
        "an ack before durable"
    );
    assert_eq!(match_index(&network, leader, slow), Some(durable));
    assert_eq!(vote_requests(&network), votes_before, "nobody campaigned");
    assert_eq!(network.node(slow).status().role, Role::Follower);
    assert_eq!(network.node(slow).status().term, term);
    assert_eq!(network.applied_commands(leader).len(), 51);

    // Once durable, the acks leave.
    network.resume_disk(slow);
    network.deliver();
    assert!(acks_beyond(&network, slow, durable) > 0);
    network.tick(3);
    assert_eq!(network.applied_commands(slow).len(), 51);
    let last = network.node(leader).status().last_index;
    assert_eq!(match_index(&network, leader, slow), Some(last));
    assert_eq!(network.node(slow).status().term, Term(term.0));
    assert!(last > LogIndex(51));
}

#[test]
fn a_follower_whose_disk_hangs_still_forwards_proposals() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let slow = others(&network, leader)[0];
    network.stall_disk(slow);
    network.propose(leader, "a");
    network.deliver();
    assert!(network.has_outstanding(slow));
    network.propose(slow, "forwarded");
    network.tick(3);
    assert_eq!(network.applied_commands(leader), vec!["a", "forwarded"]);
    network.resume_disk(slow);
    network.tick(3);
    assert_eq!(network.applied_commands(slow), vec!["a", "forwarded"]);
}
