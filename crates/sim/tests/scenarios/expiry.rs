//! Expiry on the log clock: a key given a time to live disappears at the same log position on
//! every node, whoever leads when its time comes, whatever crashed and restarted meanwhile.

use std::collections::BTreeMap;

use bytes::Bytes;
use chorus_core::NodeId;
use chorus_kv::{Command, Deadline, KvStore, Op, SetCondition, SetExpiry};
use chorus_sim::{RunReport, SimConfig, Simulator};

/// Every node's view of one key, index by index: whether it held the key right after applying
/// the entry at that index. Sampled after every time unit.
#[derive(Default)]
struct Presence {
    /// index → (present, the first node seen at that index).
    seen: BTreeMap<u64, (bool, NodeId)>,
    /// Contradictions: two nodes that disagree at one index.
    disagreements: Vec<String>,
}

impl Presence {
    fn sample(&mut self, sim: &Simulator, key: &[u8]) {
        for node in sim.node_ids() {
            let Some(store) = sim.store(node) else {
                continue;
            };
            let index = store.last_applied().0;
            let present = store.value(key).is_some();
            let (first, by) = *self.seen.entry(index).or_insert((present, node));
            if first != present {
                self.disagreements.push(format!(
                    "at index {index} {by} held the key: {first}, {node}: {present}"
                ));
            }
        }
    }

    /// The first index at which the key was seen gone after being seen present, if it never
    /// came back at a later index.
    fn boundary(&self) -> Option<u64> {
        let first_present = self
            .seen
            .iter()
            .find(|(_, (present, _))| *present)
            .map(|(index, _)| *index)?;
        let mut gone = None;
        for (&index, &(present, _)) in self.seen.range(first_present..) {
            match (present, gone) {
                (false, None) => gone = Some(index),
                (true, Some(_)) => return None,
                _ => {}
            }
        }
        gone
    }
}

fn stamped(now_ms: u64, op: Op) -> Command {
    Command::UnsessionedAt { now_ms, op }
}

/// Sets a key with a time to live on the leader, snapshots it there, crashes that leader,
/// moves the log clock past the key's time on the new leader, restarts the old one (which
/// restores the snapshot and replays the log), and checks that the key went at one log
/// position on every node. `Err` says what went wrong.
fn expire_across_a_leader_change(config: SimConfig) -> Result<RunReport, String> {
    let seed = config.seed;
    let unit = config.election_timeout_units();
    let mut sim = Simulator::new(config);
    let key = Bytes::from_static(b"session:42");
    let mut presence = Presence::default();
    let old = crate::await_leader(&mut sim, 10 * unit, seed);
    let set = Op::SetExpiring {
        key: key.clone(),
        value: Bytes::from_static(b"token"),
        condition: SetCondition::Always,
        expiry: SetExpiry::At(Deadline::After(500)),
    };
    sim.propose(old, &stamped(10_000, set))
        .map_err(|error| format!("the leader refused the set: {error}"))?;
    let everywhere = sim.run_until(5 * unit, |sim| {
        sim.node_ids()
            .iter()
            .all(|&node| sim.store(node).is_some_and(|s| s.value(&key).is_some()))
    });
    if !everywhere {
        return Err("the key did not reach every node".into());
    }
    presence.sample(&sim, &key);
    // The old leader's disk keeps a snapshot holding the key, which its restart restores.
    let applied = sim
        .store(old)
        .map(KvStore::last_applied)
        .unwrap_or_default();
    sim.request_snapshot(old);
    let snapshotted = sim.run_until(5 * unit, |sim| {
        sim.raft(old)
            .is_some_and(|raft| raft.snapshot().index >= applied)
    });
    if !snapshotted {
        return Err("the old leader took no snapshot".into());
    }

    // The leader dies before the key's time; another takes over.
    sim.crash_node(old);
    let elected = sim.run_until(20 * unit, |sim| {
        sim.leader().is_some_and(|leader| leader != old)
    });
    if !elected {
        return Err("no new leader".into());
    }
    let new = sim.leader().expect("elected");
    // A stamped write before the key's time keeps it; the clock never goes back.
    let before = Op::Put {
        key: Bytes::from_static(b"other"),
        value: Bytes::from_static(b"x"),
    };
    let refused = |error| format!("the new leader refused: {error}");
    sim.propose(new, &stamped(10_499, before))
        .map_err(refused)?;
    sim.propose(new, &Command::Tick { now_ms: 9_000 })
        .map_err(refused)?;
    for _ in 0..unit {
        sim.run_for(1);
        presence.sample(&sim, &key);
    }
    if sim.store(new).is_none_or(|s| s.value(&key).is_none()) {
        return Err("the key went before its time".into());
    }
    // The new leader's time tick reaches the key's time.
    sim.propose(new, &Command::Tick { now_ms: 10_500 })
        .map_err(refused)?;
    for _ in 0..3 * unit {
        sim.run_for(1);
        presence.sample(&sim, &key);
    }
    sim.restart_node(old);
    let caught_up = sim.run_until(20 * unit, |sim| {
        let applied = |node| sim.store(node).map(KvStore::last_applied);
        applied(old).is_some() && applied(old) >= applied(new)
    });
    if !caught_up {
        return Err("the old leader did not catch up".into());
    }
    for _ in 0..unit {
        sim.run_for(1);
        presence.sample(&sim, &key);
    }
    for node in sim.node_ids() {
        let store = sim.store(node).expect("every node is up");
        if store.value(&key).is_some() {
            return Err(format!("{node} still holds the key"));
        }
        if store.clock_ms() != 10_500 {
            return Err(format!("{node}'s log clock is {}", store.clock_ms()));
        }
    }
    if !presence.disagreements.is_empty() {
        return Err(format!("{:?}", presence.disagreements));
    }
    if presence.boundary().is_none() {
        return Err(format!(
            "no single position where the key went: {:?}",
            presence.seen
        ));
    }
    Ok(sim.run())
}

// A key set with a time to live on one leader expires, after a leader change, at one log
// position on every node: the nodes that applied it live, the new leader, and the old leader
// restarted from its snapshot and log after the key was gone. The time comes from the entries
// (stamped writes, a tick), never from a node's clock, so the position is the same
// everywhere; S4 compares the snapshots, expiry times and log clock included, and S8's model
// expires keys by the same clock.
#[test]
fn a_ttl_expires_at_the_same_log_position_on_every_node_across_a_leader_change() {
    for seed in 1..=5 {
        match expire_across_a_leader_change(crate::scripted(seed, 3)) {
            Ok(report) => crate::assert_passed(&report),
            Err(error) => panic!("seed {seed}: {error}"),
        }
    }
}

// The check bites: a store whose restore forgets expiry times (an injected bug) keeps, on the
// restarted old leader, the key every other node removed.
#[cfg(feature = "inject-bugs")]
#[test]
fn a_store_that_forgets_expiry_on_restore_is_caught() {
    let seeds = 1..=20u64;
    let caught = seeds
        .clone()
        .filter(|&seed| {
            let mut config = crate::scripted(seed, 3);
            config.kv_restore_drops_expiry = true;
            match expire_across_a_leader_change(config) {
                Ok(report) => {
                    eprintln!("seed {seed}: {:?}", report.violations.first());
                    !report.passed()
                }
                Err(error) => {
                    eprintln!("seed {seed}: {error}");
                    true
                }
            }
        })
        .count();
    println!(
        "restore_drops_expiry caught in {caught}/{} seeds",
        seeds.count()
    );
    assert_eq!(caught, 20, "the injected bug went unnoticed in some seeds");
}
