//! Log replication: Raft §5.3 and §5.4, batching, forwarding and restarts.

use chorus_core::{LogIndex, NodeId, Term};
use chorus_raft::{DurableState, HardState, Message, ProposeError, Proposed, RawNode, Role};

use crate::harness::{Network, command, id, log_with_terms};

fn followers(network: &Network, leader: NodeId) -> Vec<NodeId> {
    network.ids().into_iter().filter(|&n| n != leader).collect()
}

#[test]
fn proposals_commit_and_apply_in_order_everywhere() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    for n in 0..20 {
        let proposed = network.propose(leader, &format!("c{n}"));
        assert!(matches!(proposed, Proposed::Appended { .. }));
    }
    network.deliver();
    network.tick(3);
    let expected: Vec<String> = (0..20).map(|n| format!("c{n}")).collect();
    for node in network.ids() {
        assert_eq!(network.applied_commands(node), expected, "{node}");
    }
}

#[test]
fn proposals_between_two_readies_travel_in_one_message_per_follower() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    network.tick(5);
    let before = network.delivered.len();
    for n in 0..50 {
        network.propose(leader, &format!("c{n}"));
    }
    network.deliver();
    let carrying: Vec<usize> = network.delivered[before..]
        .iter()
        .filter_map(|(_, _, message)| match message {
            Message::AppendEntries(request) if !request.entries.is_empty() => {
                Some(request.entries.len())
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        carrying,
        vec![50, 50],
        "one batch per follower, each entry sent once"
    );
}

#[test]
fn batches_respect_append_entries_max_and_the_pipeline() {
    let mut network = Network::new(3, |config| {
        config.append_entries_max = 4;
        config.inflight_max = 2;
    });
    let leader = network.tick_until_leader(100);
    network.tick(5);
    for n in 0..40 {
        network.propose(leader, &format!("c{n}"));
    }
    network.deliver();
    network.tick(3);
    assert!(
        network.count_delivered(|_, _, message| match message {
            Message::AppendEntries(request) => request.entries.len() > 4,
            _ => false,
        }) == 0
    );
    for node in network.ids() {
        assert_eq!(network.applied_commands(node).len(), 40);
    }
}

#[test]
fn followers_forward_proposals_to_the_leader() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let follower = followers(&network, leader)[0];
    let proposed = network.propose(follower, "from a follower");
    assert_eq!(proposed, Proposed::Forwarded { leader });
    network.propose(follower, "and another");
    network.deliver();
    network.tick(3);
    assert_eq!(
        network.count_delivered(|from, _, message| from == follower
            && matches!(message, Message::Propose(propose) if propose.commands.len() == 2)),
        1,
        "both commands went in one Propose"
    );
    for node in network.ids() {
        assert_eq!(
            network.applied_commands(node),
            vec!["from a follower", "and another"]
        );
    }
}

#[test]
fn proposals_without_a_leader_or_beyond_the_bound_are_refused() {
    let mut network = Network::new(3, |config| config.proposals_pending_max = 2);
    assert_eq!(
        network.node_mut(id(1)).propose(command("x")),
        Err(ProposeError::NoLeader)
    );
    let leader = network.tick_until_leader(100);
    let follower = followers(&network, leader)[0];
    network.propose(follower, "a");
    network.propose(follower, "b");
    assert_eq!(
        network.node_mut(follower).propose(command("c")),
        Err(ProposeError::TooManyPending)
    );
    // The leader bounds its uncommitted tail too.
    network.isolate(leader);
    network.propose(leader, "d");
    network.propose(leader, "e");
    assert_eq!(
        network.node_mut(leader).propose(command("f")),
        Err(ProposeError::TooManyPending)
    );
}

#[test]
fn a_rejoining_old_leaders_uncommitted_suffix_is_overwritten() {
    let mut network = Network::new(3, |_| {});
    let old = network.tick_until_leader(100);
    network.propose(old, "committed");
    network.tick(3);
    network.isolate(old);
    for n in 0..5 {
        network.propose(old, &format!("lost{n}"));
    }
    network.tick(1);
    let old_last = network.node(old).status().last_index;
    network.tick(60);
    let new = network.leader().expect("a new leader");
    network.propose(new, "winner");
    network.tick(3);
    network.heal();
    network.tick(30);
    let old_status = network.node(old).status();
    assert_eq!(old_status.role, Role::Follower);
    assert!(
        old_status.last_index < old_last,
        "the conflicting suffix was truncated"
    );
    for node in network.ids() {
        assert_eq!(
            network.applied_commands(node),
            vec!["committed", "winner"],
            "{node}"
        );
        assert_eq!(
            network.node(node).status().last_index,
            network.node(new).status().last_index
        );
    }
}

#[test]
fn fast_rollback_skips_a_long_conflicting_log_in_few_round_trips() {
    // Node 1 holds 200 entries of term 2 that no one else has; nodes 2 and 3 hold 50 entries
    // of term 3. Node 2 wins term 4 and must replace node 1's suffix.
    let mut long = vec![1];
    long.extend(std::iter::repeat_n(2, 200));
    let mut short = vec![1];
    short.extend(std::iter::repeat_n(3, 50));
    let state = |terms: &[u64]| DurableState {
        snapshot: None,
        hard_state: HardState {
            term: Term(3),
            vote: None,
            commit: LogIndex(1),
            repairing: None,
        },
        entries: log_with_terms(terms),
        membership: None,
        log_end_before_damage: None,
    };
    let mut network =
        Network::with_durable(vec![state(&long), state(&short), state(&short)], |config| {
            config.append_entries_max = 1000
        });
    network.elect(id(2));
    network.tick(3);
    let rejections = network.count_delivered(|from, _, message| {
        from == id(1)
            && matches!(message, Message::AppendEntriesResponse(response) if !response.success)
    });
    assert!(
        rejections <= 2,
        "{rejections} rejections: one per conflicting term at most"
    );
    assert_eq!(network.node(id(1)).status().last_index, LogIndex(52));
    assert_eq!(network.node(id(1)).term_at(LogIndex(51)), Some(Term(3)));
    assert_eq!(network.node(id(1)).status().commit, LogIndex(52));
}

#[test]
fn fast_rollback_also_handles_a_follower_far_behind() {
    let mut network = Network::new(3, |config| config.append_entries_max = 1000);
    let leader = network.tick_until_leader(100);
    let lagging = followers(&network, leader)[0];
    network.isolate(lagging);
    for n in 0..300 {
        network.propose(leader, &format!("c{n}"));
    }
    network.tick(3);
    network.heal();
    network.tick(5);
    let rejections = network.count_delivered(|from, _, message| {
        from == lagging
            && matches!(message, Message::AppendEntriesResponse(response) if !response.success)
    });
    assert!(rejections <= 1, "{rejections} rejections");
    assert_eq!(network.applied_commands(lagging).len(), 300);
}

/// Figure 8 of the Raft paper, condensed: node 1 leads term 4; index 2 holds an entry of
/// term 2 that nodes 1 and 2 (a majority) have. The leader's term-4 no-op at index 3 is
/// stripped from every AppendEntries for now. Index 2 must not commit until an entry of the
/// leader's own term reaches a majority (§5.4.2): counting replicas of an old-term entry
/// proves nothing, since a leader of term 3 could still overwrite it.
fn figure_8_network(configure: impl Fn(&mut chorus_raft::Config)) -> Network {
    let hard_state = HardState {
        term: Term(3),
        vote: None,
        commit: LogIndex(1),
        repairing: None,
    };
    let mut network = Network::with_durable(
        vec![
            DurableState {
                snapshot: None,
                hard_state,
                entries: log_with_terms(&[1, 2]),
                membership: None,
                log_end_before_damage: None,
            },
            DurableState {
                snapshot: None,
                hard_state,
                entries: log_with_terms(&[1, 2]),
                membership: None,
                log_end_before_damage: None,
            },
            DurableState {
                snapshot: None,
                hard_state,
                entries: log_with_terms(&[1]),
                membership: None,
                log_end_before_damage: None,
            },
        ],
        configure,
    );
    network.filter = Some(Box::new(|_, _, message| {
        if let Message::AppendEntries(request) = message {
            request.entries.retain(|entry| entry.index < LogIndex(3));
        }
        true
    }));
    network.elect(id(1));
    network.tick(6);
    network
}

#[test]
fn an_old_term_entry_on_a_majority_commits_only_through_a_current_term_entry() {
    let mut network = figure_8_network(|_| {});
    for node in network.ids() {
        assert_eq!(
            network.node(node).term_at(LogIndex(2)),
            Some(Term(2)),
            "{node}"
        );
    }
    assert_eq!(network.node(id(1)).status().term, Term(4));
    assert_eq!(
        network.node(id(1)).status().commit,
        LogIndex(1),
        "index 2 is on a majority but of an earlier term"
    );
    network.filter = None;
    network.tick(4);
    for node in network.ids() {
        assert_eq!(network.node(node).status().commit, LogIndex(3), "{node}");
    }
}

#[cfg(feature = "inject-bugs")]
#[test]
fn the_injected_bug_commits_an_old_term_entry_by_counting_replicas() {
    let network =
        figure_8_network(|config| config.injected_bugs.commit_without_current_term = true);
    assert_eq!(network.node(id(1)).status().commit, LogIndex(2));
}

#[test]
fn restart_from_entries_newer_than_the_hard_state_adopts_their_term() {
    let config = chorus_raft::Config::new(id(1), vec![id(1), id(2), id(3)]);
    let durable = DurableState {
        snapshot: None,
        hard_state: HardState {
            term: Term(2),
            vote: Some(id(2)),
            commit: LogIndex(9),
            repairing: None,
        },
        entries: log_with_terms(&[1, 3]),
        membership: None,
        log_end_before_damage: None,
    };
    let mut node = RawNode::restart(config.clone(), durable).expect("valid");
    let status = node.status();
    assert_eq!(status.term, Term(3));
    assert_eq!(status.vote, None, "the vote was cast in an older term");
    assert_eq!(status.commit, LogIndex(2), "commit clamped to the log");
    assert_eq!(status.persisted_index, LogIndex(2));
    assert_eq!(status.applied, LogIndex(0));
    let ready = node.ready();
    assert_eq!(
        ready.hard_state,
        Some(HardState {
            term: Term(3),
            vote: None,
            commit: LogIndex(2),
            repairing: None,
        })
    );
    assert!(
        ready.entries.is_empty(),
        "restored entries are already durable"
    );
    assert_eq!(
        ready.committed_entries.len(),
        2,
        "committed entries replay from index 1"
    );
    node.advance();

    // Same term: the vote stands.
    let durable = DurableState {
        snapshot: None,
        hard_state: HardState {
            term: Term(3),
            vote: Some(id(2)),
            commit: LogIndex(1),
            repairing: None,
        },
        entries: log_with_terms(&[1, 3]),
        membership: None,
        log_end_before_damage: None,
    };
    let node = RawNode::restart(config.clone(), durable).expect("valid");
    assert_eq!(node.status().vote, Some(id(2)));
    assert!(node.has_ready(), "committed entries wait to be replayed");

    // A log with a gap is refused.
    let mut entries = log_with_terms(&[1, 1, 1]);
    entries.remove(1);
    let corrupt = DurableState {
        snapshot: None,
        hard_state: HardState::default(),
        entries,
        membership: None,
        log_end_before_damage: None,
    };
    assert!(matches!(
        RawNode::restart(config, corrupt),
        Err(chorus_raft::ConfigError::CorruptDurableState(_))
    ));
}

#[test]
fn a_whole_cluster_restart_keeps_every_committed_entry() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    for n in 0..10 {
        network.propose(leader, &format!("c{n}"));
    }
    network.tick(3);
    let term = network.node(leader).status().term;
    for node in network.ids() {
        network.restart(node);
        assert_eq!(network.node(node).status().term, term);
    }
    network.deliver();
    let expected: Vec<String> = (0..10).map(|n| format!("c{n}")).collect();
    for node in network.ids() {
        assert_eq!(
            network.applied_commands(node),
            expected,
            "{node} replayed its log"
        );
    }
    let leader = network.tick_until_leader(100);
    network.propose(leader, "after");
    network.tick(3);
    for node in network.ids() {
        assert_eq!(
            network.applied_commands(node).last().map(String::as_str),
            Some("after")
        );
    }
}

#[test]
fn a_follower_that_crashes_and_restarts_catches_up() {
    let mut network = Network::new(3, |_| {});
    let leader = network.tick_until_leader(100);
    let follower = followers(&network, leader)[0];
    network.propose(leader, "a");
    network.tick(3);
    network.crash(follower);
    network.propose(leader, "b");
    network.tick(3);
    network.restart(follower);
    network.tick(5);
    assert_eq!(network.applied_commands(follower), vec!["a", "b"]);
}

#[test]
fn a_follower_learns_the_commit_of_its_forwarded_proposal_without_waiting_for_a_heartbeat() {
    let mut network = Network::new(3, |_| {});
    network.elect(id(1));
    network.tick(3);
    // Messages are delivered in order, so node 2 acknowledges first and its acknowledgement
    // commits the entry; node 3, whose proposal it is, acknowledges second.
    let proposed = network.propose(id(3), "forwarded");
    assert_eq!(proposed, Proposed::Forwarded { leader: id(1) });
    let before = network.delivered.len();
    network.deliver();
    assert_eq!(
        network.applied_commands(id(3)),
        vec!["forwarded"],
        "the forwarding follower applied its command without a tick"
    );
    let leader_to_3 = network.delivered[before..]
        .iter()
        .filter(|(from, to, message)| {
            *from == id(1) && *to == id(3) && matches!(message, Message::AppendEntries(_))
        })
        .count();
    assert_eq!(
        leader_to_3, 3,
        "the entries, the commit broadcast (sent before node 3 acknowledged), and one commit \
         update once its acknowledgement arrived"
    );
}
