//! The simulated network: which links are cut, and what happens to a message on a live link.
//!
//! A message on a live link may be dropped, duplicated, or delayed by a latency drawn from a
//! distribution with a long tail, so messages overtake each other (reordering) by more than an
//! election timeout. Cuts are directed, so a partition can be one-way: `a` hears `b` while `b`
//! does not hear `a`. Clients sit outside the cluster's partitions (a client can always try
//! another node) but suffer the same loss, duplication and delay.

use std::collections::BTreeSet;

use chorus_core::{NodeId, Prng};

/// How unreliable live links are. All probabilities are per message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message's latency comes from the long tail.
    pub tail: f64,
}

impl LinkFaults {
    /// A reliable network: nothing lost, duplicated or held back.
    pub const RELIABLE: LinkFaults = LinkFaults {
        drop: 0.0,
        duplicate: 0.0,
        tail: 0.0,
    };
}

/// Latency bounds, in simulator time units.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Latency {
    /// The smallest latency of a message.
    pub min: u64,
    /// The largest ordinary latency (exclusive bound).
    pub max: u64,
    /// The largest latency from the long tail (exclusive bound).
    pub tail_max: u64,
}

/// The simulated network.
#[derive(Clone, Debug)]
pub struct Network {
    cut: BTreeSet<(NodeId, NodeId)>,
    faults: LinkFaults,
    latency: Latency,
}

impl Network {
    /// A fully connected, reliable network.
    #[must_use]
    pub fn new(latency: Latency) -> Network {
        assert!(latency.min < latency.max && latency.max < latency.tail_max);
        Network {
            cut: BTreeSet::new(),
            faults: LinkFaults::RELIABLE,
            latency,
        }
    }

    /// Sets how unreliable live links are.
    pub fn set_faults(&mut self, faults: LinkFaults) {
        self.faults = faults;
    }

    /// The current link faults.
    #[must_use]
    pub fn faults(&self) -> LinkFaults {
        self.faults
    }

    /// Whether messages from `from` to `to` are cut.
    #[must_use]
    pub fn is_cut(&self, from: NodeId, to: NodeId) -> bool {
        self.cut.contains(&(from, to))
    }

    /// Every link cut, as `(from, to)` pairs.
    #[must_use]
    pub fn cuts(&self) -> &BTreeSet<(NodeId, NodeId)> {
        &self.cut
    }

    /// Whether any link is cut.
    #[must_use]
    pub fn is_partitioned(&self) -> bool {
        !self.cut.is_empty()
    }

    /// Cuts messages from every node of `from` to every node of `to` (one way).
    pub fn cut_one_way(&mut self, from: &[NodeId], to: &[NodeId]) {
        for &a in from {
            for &b in to {
                if a != b {
                    self.cut.insert((a, b));
                }
            }
        }
    }

    /// Cuts both directions between `left` and `right`.
    pub fn cut_both_ways(&mut self, left: &[NodeId], right: &[NodeId]) {
        self.cut_one_way(left, right);
        self.cut_one_way(right, left);
    }

    /// Splits the cluster into groups that cannot reach each other.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        for (i, left) in groups.iter().enumerate() {
            for right in &groups[i + 1..] {
                self.cut_both_ways(left, right);
            }
        }
    }

    /// Restores every link (loss, duplication and delay stay as set).
    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The delivery delays of one message sent now over a live link: empty if it is lost, two
    /// values if it is duplicated.
    pub fn plan(&self, rng: &mut Prng) -> Vec<u64> {
        if self.faults.drop > 0.0 && rng.chance(self.faults.drop) {
            return Vec::new();
        }
        let copies = if self.faults.duplicate > 0.0 && rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        (0..copies).map(|_| self.latency(rng)).collect()
    }

    fn latency(&self, rng: &mut Prng) -> u64 {
        if self.faults.tail > 0.0 && rng.chance(self.faults.tail) {
            rng.range(self.latency.max, self.latency.tail_max)
        } else {
            rng.range(self.latency.min, self.latency.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_cut_between_groups_only() {
        let mut network = Network::new(Latency {
            min: 1,
            max: 5,
            tail_max: 100,
        });
        network.partition(&[vec![NodeId(1), NodeId(2)], vec![NodeId(3)]]);
        assert!(network.is_cut(NodeId(1), NodeId(3)));
        assert!(network.is_cut(NodeId(3), NodeId(2)));
        assert!(!network.is_cut(NodeId(1), NodeId(2)));
        network.heal();
        assert!(!network.is_partitioned());
    }

    #[test]
    fn one_way_cuts_are_directed() {
        let mut network = Network::new(Latency {
            min: 1,
            max: 5,
            tail_max: 100,
        });
        network.cut_one_way(&[NodeId(1)], &[NodeId(2)]);
        assert!(network.is_cut(NodeId(1), NodeId(2)));
        assert!(!network.is_cut(NodeId(2), NodeId(1)));
    }

    #[test]
    fn lossy_links_drop_and_duplicate_some_messages() {
        let mut network = Network::new(Latency {
            min: 1,
            max: 5,
            tail_max: 100,
        });
        network.set_faults(LinkFaults {
            drop: 0.2,
            duplicate: 0.2,
            tail: 0.1,
        });
        let mut rng = Prng::new(3);
        let plans: Vec<Vec<u64>> = (0..1000).map(|_| network.plan(&mut rng)).collect();
        assert!(plans.iter().any(Vec::is_empty));
        assert!(plans.iter().any(|p| p.len() == 2));
        assert!(plans.iter().flatten().any(|&d| d >= 5));
        assert!(plans.iter().flatten().all(|&d| (1..100).contains(&d)));
    }
}
