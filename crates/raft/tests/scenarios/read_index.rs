//! Linearizable reads through ReadIndex (thesis §6.4).

use chorus_core::{LogIndex, NodeId};
use chorus_raft::{Message, ReadError, ReadId, ReadState, Role};

use crate::harness::{Network, id};

fn followers(network: &Network, leader: NodeId) -> Vec<NodeId> {
    network.ids().into_iter().filter(|&n| n != leader).collect()
}

#[test]
fn a_leader_serves_a_read_at_its_commit_index_after_a_heartbeat_round() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    network.propose(leader, "w");
    network.tick(3);
    let commit = network.node(leader).status().commit;
    network
        .node_mut(leader)
        .read_index(ReadId(1))
        .expect("read taken");
    network
        .node_mut(leader)
        .read_index(ReadId(2))
        .expect("read taken");
    assert!(network.node(leader).has_ready());
    network.deliver();
    assert_eq!(
        network.read_states[&leader],
        vec![
            ReadState {
                id: ReadId(1),
                index: commit
            },
            ReadState {
                id: ReadId(2),
                index: commit
            }
        ]
    );
    // Both reads shared one round: one heartbeat per follower confirmed them.
    let rounds: Vec<u64> = network
        .delivered
        .iter()
        .filter_map(|(from, _, message)| match message {
            Message::AppendEntries(request) if *from == leader => Some(request.read_round),
            _ => None,
        })
        .collect();
    assert_eq!(rounds.iter().max(), Some(&1));
}

#[test]
fn a_single_voter_serves_reads_at_once() {
    let mut network = Network::new(1, |_| {});
    let leader = network.tick_until_leader(30);
    network.deliver();
    network
        .node_mut(leader)
        .read_index(ReadId(9))
        .expect("read taken");
    network.deliver();
    assert_eq!(network.read_states[&leader].len(), 1);
    assert_eq!(network.read_states[&leader][0].index, LogIndex(1));
}

#[test]
fn a_follower_reads_through_the_leader() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    network.propose(leader, "w");
    network.tick(3);
    let follower = followers(&network, leader)[0];
    network
        .node_mut(follower)
        .read_index(ReadId(5))
        .expect("read taken");
    network
        .node_mut(follower)
        .read_index(ReadId(6))
        .expect("read taken");
    network.deliver();
    let commit = network.node(leader).status().commit;
    assert_eq!(
        network.read_states[&follower],
        vec![
            ReadState {
                id: ReadId(5),
                index: commit
            },
            ReadState {
                id: ReadId(6),
                index: commit
            }
        ]
    );
    assert_eq!(
        network.count_delivered(|from, _, message| from == follower
            && matches!(message, Message::ReadIndex(request) if request.ids.len() == 2)),
        1
    );
}

#[test]
fn a_leader_cut_off_from_the_majority_serves_no_read() {
    let mut network = Network::new(3, |_| {});
    let old = network.tick_until_leader(100);
    network.isolate(old);
    network
        .node_mut(old)
        .read_index(ReadId(1))
        .expect("it still believes it leads");
    network.tick(5);
    assert!(
        network.read_states[&old].is_empty(),
        "no majority confirmed the round"
    );
    // When CheckQuorum deposes it, the read is failed back to the caller.
    network.tick(30);
    assert_ne!(network.node(old).status().role, Role::Leader);
    assert!(network.read_states[&old].is_empty());
    assert_eq!(network.rejected_reads[&old], vec![ReadId(1)]);
    // Meanwhile the majority side has a leader that serves reads.
    let new = network.leader().expect("a new leader");
    network
        .node_mut(new)
        .read_index(ReadId(2))
        .expect("read taken");
    network.deliver();
    assert_eq!(network.read_states[&new].len(), 1);
}

#[test]
fn a_new_leader_holds_reads_until_it_commits_an_entry_of_its_term() {
    let mut network = Network::new(3, |_| {});
    // Drop every AppendEntries response, so the new leader's no-op never commits.
    network.filter = Some(Box::new(|_, _, message| {
        !matches!(message, Message::AppendEntriesResponse(_))
    }));
    network.elect(id(1));
    network
        .node_mut(id(1))
        .read_index(ReadId(1))
        .expect("read taken");
    network.tick(4);
    assert!(network.read_states[&id(1)].is_empty());
    network.filter = None;
    network.tick(4);
    assert_eq!(network.read_states[&id(1)].len(), 1);
    assert_eq!(network.read_states[&id(1)][0].index, LogIndex(1));
}

#[test]
fn reads_without_a_leader_or_beyond_the_bound_are_refused() {
    let mut network = Network::new(3, |config| config.reads_pending_max = 1);
    assert_eq!(
        network.node_mut(id(1)).read_index(ReadId(1)),
        Err(ReadError::NoLeader)
    );
    let leader = network.tick_until_leader(100);
    network
        .node_mut(leader)
        .read_index(ReadId(1))
        .expect("read taken");
    assert_eq!(
        network.node_mut(leader).read_index(ReadId(2)),
        Err(ReadError::TooManyPending)
    );
}

#[test]
fn a_read_forwarded_to_a_node_that_no_longer_leads_is_rejected() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let follower = followers(&network, leader)[0];
    // The leader steps down (it hears of nobody for a CheckQuorum period) while the follower
    // still believes in it.
    network.cut_link(follower, leader);
    let other = followers(&network, leader)[1];
    network.cut_link(other, leader);
    network.tick(21);
    assert_eq!(network.node(leader).status().role, Role::Follower);
    network.heal();
    network.node_mut(follower).read_index(ReadId(3)).ok();
    network.deliver();
    assert!(network.read_states[&follower].is_empty());
    assert_eq!(network.rejected_reads[&follower], vec![ReadId(3)]);
}

#[cfg(feature = "inject-bugs")]
#[test]
fn the_injected_bug_serves_reads_from_the_local_commit_index() {
    let mut network = Network::new(3, |config| {
        config.injected_bugs.read_without_read_index = true
    });
    network
        .node_mut(id(2))
        .read_index(ReadId(1))
        .expect("served at once");
    network.deliver();
    assert_eq!(
        network.read_states[&id(2)],
        vec![ReadState {
            id: ReadId(1),
            index: LogIndex(0)
        }]
    );
}
