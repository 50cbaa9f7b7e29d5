//! The nemesis's choices that do not depend on the protocol: which kind of fault comes next,
//! how unreliable links become, and how the network is partitioned.
//!
//! Every protocol's simulation draws its faults through these functions, so a fault profile
//! means the same thing for Raft and for primary-backup, and a change to the fault model
//! reaches every protocol at once. What a crash does (and which node counts as the leader) is
//! the driver's business.

use chorus_core::{NodeId, Prng};

use crate::config::FaultProfile;
use crate::network::{LinkFaults, Network};

/// The nemesis's next move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Change loss, duplication and long-tail delay on every link.
    LinkFaults,
    /// Heal, then cut the network in a new way.
    Partition,
    /// Restore every link.
    Heal,
    /// Crash one node (the leader half of the time).
    CrashOne,
    /// Crash a minority at once.
    CrashMinority,
    /// Crash every node at once (power failure).
    CrashAll,
    /// Restart every crashed node.
    RestartAll,
}

/// Draws the next move for `profile`; `None` if the profile injects nothing.
pub(crate) fn choose(profile: FaultProfile, rng: &mut Prng) -> Option<Action> {
    let roll = rng.range(0, 100);
    let action = match (profile.network(), profile.crashes()) {
        (true, true) => roll,
        (true, false) => roll % 60,
        (false, true) => 60 + roll % 40,
        (false, false) => return None,
    };
    Some(match action {
        0..15 => Action::LinkFaults,
        15..45 => Action::Partition,
        45..60 => Action::Heal,
        60..80 => Action::CrashOne,
        80..90 => Action::CrashMinority,
        90..95 => Action::CrashAll,
        _ => Action::RestartAll,
    })
}

/// Draws new link faults: reliable three times in ten, otherwise up to 20% loss, 10%
/// duplication and 10% long-tail delay.
pub(crate) fn link_faults(rng: &mut Prng) -> LinkFaults {
    if rng.chance(0.3) {
        LinkFaults::RELIABLE
    } else {
        LinkFaults {
            drop: rng.range(0, 20) as f64 / 100.0,
            duplicate: rng.range(0, 10) as f64 / 100.0,
            tail: rng.range(0, 10) as f64 / 100.0,
        }
    }
}

/// Heals the network and cuts it anew among `ids`: majority/minority, the isolated `leader`
/// (or one node), a bridge, a one-way split, or random one-way cuts. Returns the kind drawn.
pub(crate) fn partition(
    rng: &mut Prng,
    network: &mut Network,
    mut ids: Vec<NodeId>,
    leader: Option<NodeId>,
) -> u64 {
    network.heal();
    // A deterministic shuffle.
    for i in (1..ids.len()).rev() {
        let j = rng.index(i + 1);
        ids.swap(i, j);
    }
    let n = ids.len();
    let kind = rng.range(0, 5);
    if n < 2 {
        // One node has no links to cut: the network faults of a one-node run are the drops,
        // duplicates and delays of its (absent) messages, nothing more.
        return kind;
    }
    match kind {
        0 => {
            // Majority and minority.
            let minority = rng.range(1, (n as u64 - 1) / 2 + 2) as usize;
            let (left, right) = ids.split_at(minority.min(n - 1));
            network.partition(&[left.to_vec(), right.to_vec()]);
        }
        1 => {
            // Isolate the leader, or one node.
            let victim = leader.filter(|_| rng.chance(0.7)).unwrap_or(ids[0]);
            let rest: Vec<NodeId> = ids.iter().copied().filter(|&id| id != victim).collect();
            network.partition(&[vec![victim], rest]);
        }
        2 if n >= 3 => {
            // A bridge: two halves that cannot talk to each other, and one node (`ids[0]`, in
            // neither half) that still talks to both.
            let half = (n - 1) / 2;
            let left = ids[1..=half].to_vec();
            let right = ids[half + 1..].to_vec();
            network.cut_both_ways(&left, &right);
        }
        3 => {
            // One way: some nodes stop hearing others.
            let split = rng.range(1, n as u64) as usize;
            let (left, right) = ids.split_at(split);
            network.cut_one_way(left, right);
        }
        _ => {
            // Random cuts, in one direction each.
            for _ in 0..n {
                let a = ids[rng.index(n)];
                let b = ids[rng.index(n)];
                network.cut_one_way(&[a], &[b]);
            }
        }
    }
    kind
}
