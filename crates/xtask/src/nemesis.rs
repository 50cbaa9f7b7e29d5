//! The nemesis: a schedule of faults drawn from the run's seed, applied to the real cluster.
//!
//! The schedule alternates a quiet spell (1–3 s) and a fault held for 2–6 s, then undone. Which
//! fault, how long, and which nodes (by position) all come from one [`Prng`] seeded by the run,
//! so the same seed gives the same sequence of decisions. What a decision lands on can still
//! differ between runs: "the leader" is whoever `/status` says leads at that moment, and the
//! unsynced-write fault depends on catching the node between a write and its fsync.
//!
//! Faults:
//! - `partition-majority`: a random minority is cut off from the majority, both ways;
//! - `isolate-leader`: the leader alone on one side;
//! - `bridge`: two halves that cannot talk, and one node that talks to both;
//! - `one-way`: packets from the leader to every other node are dropped, but not the reverse;
//! - `kill`: `kill -9` of a node (the leader half the time), restarted after the hold;
//! - `pause-leader`: SIGSTOP of the leader, SIGCONT after the hold;
//! - `lose-unsynced`: `kill -9` of a node caught between a WAL write and its fsync, and its
//!   log truncated at a record boundary after the last fsync (see [`crate::wal`]);
//! - `rolling-restart`: every server in turn stopped gracefully and restarted, waiting for each
//!   to answer (primary-backup: for a settled view) before the next;
//! - `pause-view-service` (primary-backup only): SIGSTOP of the view service;
//! - `kill-config-leader` and `pause-config-leader` (hybrid only): `kill -9` or SIGSTOP of the
//!   configuration group's leader;
//! - `drop-replies`: every server's packets to the clients' RESP connections dropped, so
//!   requests still arrive and take effect but no reply (and no new connection) gets back
//!   until the hold ends. This is the fault that makes a client library's retry resend a write
//!   that was applied; it is in the default set only under `--redis-py` (see
//!   [`Nemesis::new`]'s `alternate`), since other clients do not retry on their own.
//!
//! Under primary-backup, "the leader" is the primary of the view service's latest view, kills
//! and restarts hit servers only (the view service keeps its views in memory, by design), and
//! `lose-unsynced` does not apply (primary-backup keeps nothing on disk). Under the hybrid,
//! "the leader" is the serving primary; `kill` hits it half the time and otherwise any node,
//! configuration nodes included; `lose-unsynced` hits data servers (their log is the same
//! write-ahead log as Raft's); partitions cut across data servers and configuration nodes
//! alike.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chorus_core::Prng;

use crate::cluster::{Cluster, Scheme};
use crate::lab::Lab;
use crate::wal;

/// Every fault the nemesis knows, by the name it logs and counts.
pub const FAULTS: [&str; 12] = [
    "partition-majority",
    "isolate-leader",
    "bridge",
    "one-way",
    "kill",
    "pause-leader",
    "lose-unsynced",
    "rolling-restart",
    "pause-view-service",
    "kill-config-leader",
    "pause-config-leader",
    "drop-replies",
];

/// The faults a run injects when `--faults` names none: every fault that applies to `scheme`,
/// and `drop-replies` only for clients that retry on their own (`redis_py`), so that the other
/// runs keep the schedules their seeds always drew.
#[must_use]
pub fn default_faults(scheme: Scheme, redis_py: bool) -> Vec<&'static str> {
    FAULTS
        .iter()
        .copied()
        .filter(|f| applies(f, scheme))
        .filter(|f| redis_py || *f != "drop-replies")
        .collect()
}

/// Whether `fault` applies to a cluster of this scheme.
#[must_use]
pub fn applies(fault: &str, scheme: Scheme) -> bool {
    match fault {
        "lose-unsynced" => scheme != Scheme::Pb,
        "pause-view-service" => scheme == Scheme::Pb,
        "kill-config-leader" | "pause-config-leader" => scheme == Scheme::Hybrid,
        _ => true,
    }
}

/// The nemesis of one run.
pub struct Nemesis<'a> {
    cluster: &'a mut Cluster,
    lab: &'a Lab,
    rng: Prng,
    start: Instant,
    stop: &'a AtomicBool,
    faults: Vec<&'static str>,
    /// A fault injected every second time, the first time included (see [`Nemesis::new`]).
    alternate: Option<&'static str>,
    /// Faults injected so far.
    injected: u64,
    /// One line per action, with its time since the start.
    pub log: Vec<String>,
    /// Faults injected, by name.
    pub counts: BTreeMap<&'static str, u64>,
    /// What the nemesis did to each node and link, in order, for the run's picture.
    pub timeline: Vec<Mark>,
    /// The log's lines, with their time since the start, for the run's picture.
    pub notes: Vec<(Duration, String)>,
    /// The links cut now, as `(from, to)` node numbers.
    cut_now: Vec<(usize, usize)>,
}

/// One change the nemesis made, with its time since the start.
#[derive(Clone, Debug)]
pub enum Mark {
    /// Node `node` is now `state`: `"running"`, `"paused"` or `"down"`.
    Node {
        /// Since the start.
        at: Duration,
        /// The node's number (1-based).
        node: usize,
        /// Its state from then on.
        state: &'static str,
    },
    /// The links cut from then on, as `(from, to)` node numbers.
    Cut {
        /// Since the start.
        at: Duration,
        /// Every link cut.
        links: Vec<(usize, usize)>,
    },
}

impl<'a> Nemesis<'a> {
    /// A nemesis for `cluster` in `lab` that injects `faults` (names from [`FAULTS`]; all of
    /// them when empty), drawing from `seed`. With `alternate` (one of `faults`), the first
    /// fault and every second one after it is `alternate` and the others are drawn: a short
    /// run is then sure to hold it a few times, as the redis-py runs need for `drop-replies`.
    pub fn new(
        cluster: &'a mut Cluster,
        lab: &'a Lab,
        seed: u64,
        start: Instant,
        stop: &'a AtomicBool,
        faults: Vec<&'static str>,
        alternate: Option<&'static str>,
    ) -> Nemesis<'a> {
        let faults = if faults.is_empty() {
            FAULTS.to_vec()
        } else {
            faults
        };
        Nemesis {
            cluster,
            lab,
            // A fork, so the workload's seeds and the schedule's draws never interfere.
            rng: Prng::new(seed ^ 0x6e65_6d65_7369_7321),
            start,
            stop,
            faults,
            alternate,
            injected: 0,
            log: Vec::new(),
            counts: BTreeMap::new(),
            timeline: Vec::new(),
            notes: Vec::new(),
            cut_now: Vec::new(),
        }
    }

    fn mark_node(&mut self, node: usize, state: &'static str) {
        let at = self.start.elapsed();
        self.timeline.push(Mark::Node { at, node, state });
    }

    fn mark_cut(&mut self) {
        let at = self.start.elapsed();
        let links = self.cut_now.clone();
        self.timeline.push(Mark::Cut { at, links });
    }

    /// Drops packets from `from` to `to`.
    fn cut(&mut self, from: usize, to: usize) -> anyhow::Result<()> {
        self.lab.cut(from, to)?;
        self.cut_now.push((from, to));
        self.mark_cut();
        Ok(())
    }

    fn kill(&mut self, node: usize) {
        self.cluster.kill(node);
        self.mark_node(node, "down");
    }

    fn pause(&mut self, node: usize) {
        self.cluster.pause(node);
        self.mark_node(node, "paused");
    }

    fn stop_gracefully(&mut self, node: usize) {
        self.cluster.stop(node);
        self.mark_node(node, "down");
    }

    fn start_node(&mut self, node: usize) -> anyhow::Result<()> {
        self.cluster.start(node)?;
        self.mark_node(node, "running");
        Ok(())
    }

    fn note(&mut self, line: String) {
        let elapsed = self.start.elapsed();
        let at = elapsed.as_secs_f64();
        self.log.push(format!("{at:8.3}s {line}"));
        self.notes.push((elapsed, line));
    }

    /// Sleeps up to `duration`, returning early (false) if the run is being stopped.
    fn sleep(&self, duration: Duration, until: Instant) -> bool {
        let end = (Instant::now() + duration).min(until);
        while Instant::now() < end {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20).min(end - Instant::now()));
        }
        !self.stop.load(Ordering::Relaxed)
    }

    /// Runs the schedule until `until` (or the stop flag), then undoes the last fault.
    ///
    /// # Errors
    /// If a fault cannot be applied or undone (iptables or a node start fails).
    pub fn run(&mut self, until: Instant) -> anyhow::Result<()> {
        while Instant::now() < until && !self.stop.load(Ordering::Relaxed) {
            let quiet = Duration::from_millis(self.rng.range(1_000, 3_000));
            if !self.sleep(quiet, until) || Instant::now() >= until {
                break;
            }
            let drawn = self.faults[self.rng.index(self.faults.len())];
            let fault = match self.alternate {
                Some(alternate) if self.injected % 2 == 0 => alternate,
                _ => drawn,
            };
            self.injected += 1;
            let hold = Duration::from_millis(self.rng.range(2_000, 6_000));
            *self.counts.entry(fault).or_default() += 1;
            self.inject(fault, hold, until)?;
            self.restore()?;
            self.note("healed: network whole, every node running".into());
        }
        self.restore()
    }

    /// The leader, or a server picked by the schedule when none is known.
    fn leader_or_any(&mut self) -> usize {
        let fallback = self.rng.index(self.cluster.servers()) + 1;
        self.cluster.leader().unwrap_or(fallback)
    }

    /// The nodes in an order drawn from the schedule.
    fn shuffled(&mut self) -> Vec<usize> {
        let mut nodes: Vec<usize> = (1..=self.cluster.len()).collect();
        for i in (1..nodes.len()).rev() {
            let j = self.rng.index(i + 1);
            nodes.swap(i, j);
        }
        nodes
    }

    fn cut_both_ways(&mut self, left: &[usize], right: &[usize]) -> anyhow::Result<()> {
        for &a in left {
            for &b in right {
                self.cut(a, b)?;
                self.cut(b, a)?;
            }
        }
        Ok(())
    }

    fn inject(
        &mut self,
        fault: &'static str,
        hold: Duration,
        until: Instant,
    ) -> anyhow::Result<()> {
        let n = self.cluster.len();
        match fault {
            "partition-majority" => {
                let nodes = self.shuffled();
                let (minority, majority) = nodes.split_at((n - 1) / 2);
                self.note(format!("{fault}: {minority:?} | {majority:?}"));
                self.cut_both_ways(minority, majority)?;
                self.sleep(hold, until);
            }
            "isolate-leader" => {
                let leader = self.leader_or_any();
                let rest: Vec<usize> = (1..=n).filter(|&x| x != leader).collect();
                self.note(format!("{fault}: [{leader}] | {rest:?}"));
                self.cut_both_ways(&[leader], &rest)?;
                self.sleep(hold, until);
            }
            "bridge" => {
                let nodes = self.shuffled();
                let bridge = nodes[0];
                let half = (n - 1) / 2;
                let (left, right) = nodes[1..].split_at(half);
                self.note(format!("{fault}: {left:?} <-> [{bridge}] <-> {right:?}"));
                self.cut_both_ways(left, right)?;
                self.sleep(hold, until);
            }
            "one-way" => {
                let leader = self.leader_or_any();
                self.note(format!(
                    "{fault}: packets from {leader} to the others dropped"
                ));
                for other in (1..=n).filter(|&x| x != leader) {
                    self.cut(leader, other)?;
                }
                self.sleep(hold, until);
            }
            "kill" => {
                // Under the hybrid any node may go, configuration nodes included.
                let candidates = if self.cluster.scheme() == Scheme::Hybrid {
                    n
                } else {
                    self.cluster.servers()
                };
                let node = if self.rng.chance(0.5) {
                    self.leader_or_any()
                } else {
                    self.rng.index(candidates) + 1
                };
                self.note(format!("{fault}: kill -9 node {node}"));
                self.kill(node);
                self.sleep(hold, until);
            }
            "pause-leader" => {
                let leader = self.leader_or_any();
                self.note(format!("{fault}: SIGSTOP node {leader}"));
                self.pause(leader);
                self.sleep(hold, until);
            }
            "lose-unsynced" => {
                let node = self.rng.index(self.cluster.servers()) + 1;
                self.lose_unsynced(node)?;
                self.sleep(hold, until);
            }
            "pause-view-service" => {
                if let Some(service) = self.cluster.view_service() {
                    self.note(format!("{fault}: SIGSTOP node {service}"));
                    self.pause(service);
                    self.sleep(hold, until);
                }
            }
            "kill-config-leader" | "pause-config-leader" => {
                let group = self.cluster.servers() + 1..=n;
                let fallback = self
                    .rng
                    .range(*group.start() as u64, *group.end() as u64 + 1);
                let leader = self
                    .cluster
                    .config_leader()
                    .unwrap_or(usize::try_from(fallback).unwrap_or(n));
                if fault == "kill-config-leader" {
                    self.note(format!("{fault}: kill -9 node {leader}"));
                    self.kill(leader);
                } else {
                    self.note(format!("{fault}: SIGSTOP node {leader}"));
                    self.pause(leader);
                }
                self.sleep(hold, until);
            }
            "drop-replies" => {
                let servers = self.cluster.servers();
                let addresses = self.cluster.redis_addresses();
                self.note(format!(
                    "{fault}: replies of servers 1..={servers} to the clients dropped"
                ));
                for (index, address) in addresses.iter().enumerate() {
                    self.lab.drop_replies(index + 1, address.port())?;
                }
                self.sleep(hold, until);
            }
            "rolling-restart" => {
                let servers = self.cluster.servers();
                let order: Vec<usize> = self
                    .shuffled()
                    .into_iter()
                    .filter(|&node| node <= servers)
                    .collect();
                self.note(format!("{fault}: order {order:?}"));
                for node in order {
                    if self.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    self.stop_gracefully(node);
                    self.start_node(node)?;
                    let deadline = Instant::now() + Duration::from_secs(10);
                    while Instant::now() < deadline && self.cluster.status(node).is_none() {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    // Let it catch up and an election (a view change) settle before the next
                    // one goes.
                    self.sleep(Duration::from_millis(700), until + Duration::from_secs(30));
                    if self.cluster.scheme() != Scheme::Raft {
                        self.cluster.wait_converged(Duration::from_secs(15));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn lose_unsynced(&mut self, node: usize) -> anyhow::Result<()> {
        let Some(pid) = self.cluster.pid(node) else {
            self.note(format!("lose-unsynced: node {node} is not running"));
            return Ok(());
        };
        let caught = wal::catch_unsynced(pid, 400, &mut self.rng);
        self.kill(node);
        match caught {
            Some(unsynced) => {
                let removed = wal::truncate_at_boundary(&unsynced, &mut self.rng)?;
                self.note(format!(
                    "lose-unsynced: kill -9 node {node} between a write and its fsync; \
                     {} unsynced bytes at {}..{} of {}, {removed} cut at a record boundary",
                    unsynced.end - unsynced.start,
                    unsynced.start,
                    unsynced.end,
                    unsynced
                        .segment
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
                *self.counts.entry("lose-unsynced-caught").or_default() += 1;
            }
            None => self.note(format!(
                "lose-unsynced: node {node} never caught between a write and its fsync; \
                 plain kill -9"
            )),
        }
        Ok(())
    }

    /// Heals the network, thaws and restarts every node.
    ///
    /// # Errors
    /// If iptables or a node start fails.
    pub fn restore(&mut self) -> anyhow::Result<()> {
        self.lab.heal()?;
        if !self.cut_now.is_empty() {
            self.cut_now.clear();
            self.mark_cut();
        }
        for node in 1..=self.cluster.len() {
            self.cluster.resume(node);
            for exited in self.cluster.reap_exited() {
                self.note(format!("node {exited} had exited on its own"));
                *self.counts.entry("node-exited").or_default() += 1;
            }
            if self.cluster.running(node) {
                self.mark_node(node, "running");
            } else {
                self.start_node(node)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Proves `drop-replies` joins the default faults only for redis-py runs, so the other
    /// runs' seeds keep drawing the schedules they always drew.
    #[test]
    fn drop_replies_is_a_default_fault_only_for_redis_py() {
        for scheme in [Scheme::Raft, Scheme::Pb, Scheme::Hybrid] {
            assert!(!default_faults(scheme, false).contains(&"drop-replies"));
            assert!(default_faults(scheme, true).contains(&"drop-replies"));
            let without: Vec<_> = FAULTS
                .iter()
                .copied()
                .filter(|f| applies(f, scheme) && *f != "drop-replies")
                .collect();
            assert_eq!(default_faults(scheme, false), without);
        }
    }
}
