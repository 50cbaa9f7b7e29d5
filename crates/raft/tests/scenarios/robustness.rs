//! Foreign input: malformed, forged, stale and duplicated messages never panic the core and
//! never change it when refused; lossy networks keep safety and recover liveness.

use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{
    AppendEntries, AppendEntriesResponse, Config, Entry, EntryPayload, Message, Propose, RawNode,
    ReadId, ReadIndexRequest, RequestVote, StepError,
};

use crate::harness::{Chaos, Network, id};

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        term: Term(term),
        index: LogIndex(index),
        payload: EntryPayload::NoOp,
    }
}

fn append(term: u64, prev: (u64, u64), entries: Vec<Entry>, commit: u64) -> Message {
    Message::AppendEntries(AppendEntries {
        term: Term(term),
        prev_log_index: LogIndex(prev.0),
        prev_log_term: Term(prev.1),
        entries,
        leader_commit: LogIndex(commit),
        read_round: 0,
    })
}

/// A 3-node cluster after an election and one committed command, with node 1 leading.
fn settled() -> Network {
    let mut network = Network::new(3, |_| {});
    network.elect(id(1));
    network.propose(id(1), "a");
    network.tick(3);
    network
}

fn assert_refused(node: &mut RawNode, from: NodeId, message: Message) -> StepError {
    let status = node.status();
    let hard_state = node.hard_state();
    let has_ready = node.has_ready();
    let error = node
        .step(from, message.clone())
        .expect_err(&format!("refused: {message:?}"));
    assert_eq!(node.status(), status, "status unchanged by {message:?}");
    assert_eq!(node.hard_state(), hard_state);
    assert_eq!(node.has_ready(), has_ready);
    error
}

#[test]
fn malformed_messages_are_refused_and_change_nothing() {
    let mut network = settled();
    let follower = network.node_mut(id(2));
    assert_eq!(follower.status().commit, LogIndex(2));
    let malformed = vec![
        // Entries not contiguous from prev_log_index + 1.
        append(1, (2, 1), vec![entry(4, 1)], 2),
        append(1, (2, 1), vec![entry(3, 1), entry(5, 1)], 2),
        // An entry newer than the message's term, or terms that decrease.
        append(1, (2, 1), vec![entry(3, 2)], 2),
        append(2, (2, 1), vec![entry(3, 2), entry(4, 1)], 2),
        // Entries of term 0, prev term beyond the message term, index 0 with a term.
        append(1, (2, 1), vec![entry(3, 0)], 2),
        append(1, (2, 5), vec![], 2),
        append(1, (0, 1), vec![], 2),
        // Overflowing indexes.
        append(1, (u64::MAX, 1), vec![entry(0, 1)], 2),
        // A higher-term leader that would overwrite committed index 2.
        append(5, (1, 1), vec![entry(2, 5)], 2),
        // A higher-term leader whose prev contradicts the committed prefix.
        append(5, (2, 4), vec![], 2),
        // A second leader in the same term.
        append(1, (2, 1), vec![], 2),
        Message::RequestVote(RequestVote {
            term: Term(0),
            last_log_index: LogIndex(0),
            last_log_term: Term(0),
            pre_vote: false,
            transfer: false,
        }),
        Message::RequestVote(RequestVote {
            term: Term(3),
            last_log_index: LogIndex(5),
            last_log_term: Term(4),
            pre_vote: false,
            transfer: false,
        }),
        Message::RequestVote(RequestVote {
            term: Term(3),
            last_log_index: LogIndex(5),
            last_log_term: Term(0),
            pre_vote: true,
            transfer: false,
        }),
        Message::Propose(Propose {
            term: Term(1),
            commands: vec![Bytes::new(); 5000],
        }),
        Message::ReadIndex(ReadIndexRequest {
            term: Term(1),
            ids: vec![ReadId(1); 5000],
        }),
    ];
    for message in malformed {
        // Node 3 sends most of these; the "second leader" one must come from a non-leader.
        let error = assert_refused(follower, id(3), message);
        assert!(matches!(error, StepError::Malformed(_)), "{error:?}");
    }

    let leader = network.node_mut(id(1));
    let term = leader.status().term.0;
    let forged_ack = Message::AppendEntriesResponse(AppendEntriesResponse {
        term: Term(term),
        success: true,
        match_index: LogIndex(1000),
        conflict_index: LogIndex(0),
        conflict_term: None,
        read_round: 0,
    });
    assert_refused(leader, id(2), forged_ack);
    let forged_round = Message::AppendEntriesResponse(AppendEntriesResponse {
        term: Term(term),
        success: true,
        match_index: LogIndex(1),
        conflict_index: LogIndex(0),
        conflict_term: None,
        read_round: 99,
    });
    assert_refused(leader, id(2), forged_round);
    assert_refused(leader, id(2), append(term, (0, 0), vec![], 0));
}

/// Nodes outside the configuration may talk (a new leader the node has not heard of yet, a
/// joining learner), but a second leader of a known term, itself, or node 0 may not.
#[test]
fn messages_from_itself_node_0_or_a_second_leader_are_refused() {
    let mut network = settled();
    let node = network.node_mut(id(2));
    let heartbeat = append(1, (0, 0), vec![], 0);
    assert!(matches!(
        assert_refused(node, id(9), heartbeat.clone()),
        StepError::Malformed(_)
    ));
    assert_eq!(
        assert_refused(node, NodeId(0), heartbeat.clone()),
        StepError::UnknownPeer(NodeId(0))
    );
    assert_eq!(
        assert_refused(node, id(2), heartbeat),
        StepError::UnknownPeer(id(2))
    );
}

#[test]
fn stale_and_duplicated_messages_are_ignored() {
    let mut network = settled();
    network.propose(id(1), "b");
    network.tick(3);
    let before: Vec<_> = network
        .ids()
        .iter()
        .map(|&n| network.node(n).status())
        .collect();
    // Replay every message ever delivered, oldest first: all stale or duplicates now.
    let replay = network.delivered.clone();
    for (from, to, message) in replay {
        network
            .node_mut(to)
            .step(from, message)
            .expect("stale messages are not errors");
    }
    network.deliver();
    network.tick(3);
    let after: Vec<_> = network
        .ids()
        .iter()
        .map(|&n| network.node(n).status())
        .collect();
    for (before, after) in before.iter().zip(&after) {
        assert_eq!(before.term, after.term);
        assert_eq!(before.leader, after.leader);
        assert_eq!(before.commit, after.commit);
    }
    assert_eq!(network.applied_commands(id(3)), vec!["a", "b"]);
}

#[test]
fn a_lossy_duplicating_reordering_network_stays_safe_and_makes_progress() {
    for seed in 0..6 {
        let chaos = Chaos {
            drop_chance: 0.1,
            duplicate_chance: 0.05,
            reorder_chance: 0.2,
        };
        let mut network = Network::new(5, |_| {}).with_chaos(chaos, seed);
        let mut proposed = 0;
        for round in 0..300 {
            network.tick(1);
            if let Some(leader) = network.leader() {
                if round % 3 == 0
                    && network
                        .node_mut(leader)
                        .propose(Bytes::from(format!("c{proposed}")))
                        .is_ok()
                {
                    proposed += 1;
                }
            }
            if round == 100 {
                let victim = network.leader().unwrap_or(id(1));
                network.crash(victim);
            }
            if round == 180 {
                for node in network.ids() {
                    network.restart_if_crashed(node);
                }
            }
        }
        // Liveness: with faults gone, everyone converges on the leader's commit.
        network.chaos = Chaos::default();
        network.tick(60);
        let leader = network.leader().expect("a leader after faults stop");
        let commit = network.node(leader).status().commit;
        assert!(commit.0 > 10, "seed {seed}: progress was made ({commit})");
        for node in network.ids() {
            assert_eq!(
                network.node(node).status().commit,
                commit,
                "seed {seed}: {node}"
            );
        }
        // Safety (agreement of applied entries) is checked by the harness as it goes.
    }
}

#[test]
#[should_panic(expected = "before the previous Ready was advanced")]
fn taking_a_second_ready_before_advancing_panics() {
    let mut node = RawNode::new(Config::new(id(1), vec![id(1)])).expect("valid");
    node.campaign();
    let _first = node.ready();
    assert!(!node.has_ready());
    let _second = node.ready();
}

#[test]
#[should_panic(expected = "without an outstanding Ready")]
fn advancing_without_a_ready_panics() {
    let mut node = RawNode::new(Config::new(id(1), vec![id(1)])).expect("valid");
    node.advance();
}

#[test]
fn entries_truncated_while_a_ready_is_outstanding_are_not_claimed_persisted() {
    let mut node = RawNode::new(Config::new(id(2), vec![id(1), id(2), id(3)])).expect("valid");
    node.step(
        id(1),
        append(1, (0, 0), vec![entry(1, 1), entry(2, 1), entry(3, 1)], 0),
    )
    .expect("accepted");
    let ready = node.ready();
    assert_eq!(ready.entries.len(), 3);
    // Before that Ready is advanced, a newer leader replaces index 2 and 3.
    node.step(id(3), append(2, (1, 1), vec![entry(2, 2)], 0))
        .expect("accepted");
    node.advance();
    assert_eq!(node.status().persisted_index, LogIndex(1));
    let ready = node.ready();
    assert_eq!(
        ready.entries,
        vec![entry(2, 2)],
        "the next Ready rewrites from index 2"
    );
    node.advance();
    assert_eq!(node.status().persisted_index, LogIndex(2));
    assert_eq!(node.status().last_index, LogIndex(2));
}
