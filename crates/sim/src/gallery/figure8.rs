//! Figure 8 of the Raft paper (extended version, §5.4.2), full version, on a 5-node cluster
//! running the whole system in the simulator (scenario C16 of SCENARIOS.md).
//!
//! The figure shows why a leader may not count replicas to commit an entry of an earlier term:
//!
//! - (a) S1 leads and replicates the entry at index 2 to S2 only;
//! - (b) S1 crashes; S5 is elected with the votes of S3, S4 and itself and appends a different
//!   entry at index 2, which it replicates to nobody;
//! - (c) S5 crashes; S1 restarts, is elected, and replicates its old entry at index 2 to S3: a
//!   majority now holds it, but it is of an earlier term, so it is **not** committed;
//! - (d) S1 crashes; S5 restarts, is elected with the votes of S2, S3 and S4 (its last term is
//!   newer than theirs) and overwrites index 2 everywhere. That is legal only because (c) did
//!   not commit.
//!
//! Here "index 2" is the first index after whatever the cluster committed while it started (the
//! initial leader's no-op and the client's session), and "S1" is whichever node led first; the
//! terms are whatever the elections produce, but the shape is the paper's. A message filter
//! forces who may campaign, keeps S5's entries to itself in (b), and strips S1's entries of its
//! new term from every AppendEntries in (c), so that in (c) only the old entry travels, as in
//! the paper (where S1's own new entry had not been replicated yet).
//!
//! Run with the current-term commit rule broken (`InjectedBugs::commit_without_current_term`),
//! S1 commits index 2 in (c) and the checkers must report the overwrite in (d).

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::SimConfig;
use crate::raft::Simulator;
use crate::report::RunReport;
use bytes::Bytes;
use chorus_core::{LogIndex, NodeId, Term};
use chorus_kv::{Command, Op};
use chorus_raft::{Message, Role};

/// What the script observed, and the report of the run it ended with.
pub struct Figure8 {
    /// The report of the whole run (healed, converged and checked after the script).
    pub report: RunReport,
    /// The contested index ("index 2" of the paper).
    pub index: LogIndex,
    /// The term of S1's entry at the contested index (the paper's term 2).
    pub old_term: Term,
    /// The term of S5's entry at the contested index (the paper's term 3).
    pub s5_term: Term,
    /// Whether S1, S2 and S3 all held S1's old entry during (c).
    pub majority_held_old_entry: bool,
    /// S1's commit index at the end of (c).
    pub s1_commit_in_c: LogIndex,
    /// Whether, in (d), S2, S3 and S4 all ended up with S5's entry at the contested index.
    pub overwritten: bool,
}

/// Which messages the test lets through.
#[derive(Default)]
struct Rules {
    /// Only this node's vote requests (pre-votes included) are delivered, so only it can win.
    candidate: Option<NodeId>,
    /// This node's AppendEntries that carry entries are dropped (its heartbeats go through).
    mute: Option<NodeId>,
    /// Entries of a term later than the given one are stripped from this node's AppendEntries.
    strip_after: Option<(NodeId, Term)>,
}

impl Rules {
    fn pass(&self, from: NodeId, message: &mut Message) -> bool {
        match message {
            Message::RequestVote(_) => self.candidate.is_none_or(|c| c == from),
            Message::AppendEntries(append) => {
                if self.mute == Some(from) && !append.entries.is_empty() {
                    return false;
                }
                if let Some((node, term)) = self.strip_after {
                    if node == from {
                        // A log's terms never decrease, so this keeps a contiguous prefix and
                        // the message stays well-formed.
                        append.entries.retain(|entry| entry.term <= term);
                    }
                }
                true
            }
            _ => true,
        }
    }
}

/// An unsessioned put, proposed by the script outside any client.
fn put(value: &str) -> Command {
    Command::Unsessioned(Op::Put {
        key: Bytes::from_static(b"figure8"),
        value: Bytes::copy_from_slice(value.as_bytes()),
    })
}

fn is_leader(sim: &Simulator, node: NodeId) -> bool {
    sim.status(node).is_some_and(|s| s.role == Role::Leader)
}

fn persisted(sim: &Simulator, node: NodeId, index: LogIndex) -> bool {
    sim.status(node).is_some_and(|s| s.persisted_index >= index)
}

fn holds(sim: &Simulator, node: NodeId, index: LogIndex, term: Term) -> bool {
    sim.raft(node).and_then(|r| r.term_at(index)) == Some(term) && persisted(sim, node, index)
}

/// A leader exists, every client is idle, and every live log is committed and equal in length.
fn settled(sim: &Simulator) -> bool {
    let statuses: Vec<_> = sim
        .node_ids()
        .iter()
        .filter_map(|&n| sim.status(n))
        .collect();
    sim.leader().is_some()
        && sim.clients_idle()
        && statuses.iter().all(|s| {
            s.commit == statuses[0].commit
                && s.last_index == s.commit
                && s.persisted_index == s.commit
        })
}

/// Fails the script if a step that cannot depend on an injected bug did not happen. Once a
/// checker found something the run is already known to be broken, and the script goes on so
/// that the report says what was found.
fn expect(sim: &Simulator, ok: bool, seed: u64, step: &str) -> Result<(), String> {
    if !ok && sim.violations().is_empty() {
        let nodes: Vec<String> = sim
            .node_ids()
            .iter()
            .map(|&n| match sim.status(n) {
                Some(s) => format!(
                    "{n} {:?} {} commit {} last {}",
                    s.role, s.term, s.commit, s.last_index
                ),
                None => format!("{n} down"),
            })
            .collect();
        return Err(format!(
            "seed {seed}: Figure 8 step did not happen: {step}; {}",
            nodes.join("; ")
        ));
    }
    Ok(())
}

/// Runs the Figure 8 script with `config` (5 nodes, one client) and then the rest of the run;
/// with `visual`, the report carries the run's visual trace.
///
/// # Errors
/// If the configuration is not a 5-node cluster, or a step of the script that does not depend
/// on the Raft commit rule did not happen in time.
pub fn run(config: SimConfig, visual: bool) -> Result<Figure8, String> {
    if config.nodes != 5 {
        return Err(format!("Figure 8 needs five nodes, not {}", config.nodes));
    }
    let seed = config.seed;
    let unit = config.election_timeout_units();
    let mut sim = Simulator::new(config);
    if visual {
        sim.enable_visual();
    }
    let rules = Rc::new(RefCell::new(Rules::default()));
    let shared = Rc::clone(&rules);
    sim.set_filter(Some(Box::new(move |from, _to, message| {
        shared.borrow().pass(from, message)
    })));
    // The client registers its session, then waits: the script alone writes to the log.
    sim.set_clients_paused(true);
    let ok = sim.run_until(50 * unit, settled);
    expect(&sim, ok, seed, "setup: a leader, and every log committed")?;

    let s1 = sim.leader().ok_or("setup: no leader")?;
    let others: Vec<NodeId> = sim.node_ids().into_iter().filter(|&n| n != s1).collect();
    let (s2, s3, s4, s5) = (others[0], others[1], others[2], others[3]);
    let index = sim.status(s1).ok_or("s1 is down")?.commit.next();

    // (a) S1 replicates the entry at `index` to S2 only.
    sim.heal();
    sim.partition(&[vec![s1, s2], vec![s3, s4, s5]]);
    sim.propose(s1, &put("S1"))
        .map_err(|error| format!("(a) S1 does not lead: {error:?}"))?;
    let old_term = sim.status(s1).ok_or("s1 is down")?.term;
    sim.annotate(&format!(
        "(a) S1 = {s1} leads in term {} and sends its entry at index {} to S2 = {s2} only",
        old_term.0, index.0
    ));
    let ok = sim.run_until(unit, |sim| {
        holds(sim, s1, index, old_term) && holds(sim, s2, index, old_term)
    });
    expect(&sim, ok, seed, "(a) S1 and S2 hold S1's entry")?;
    sim.annotate(&format!(
        "(b) S1 = {s1} crashes before anyone else has index {}",
        index.0
    ));

    // (b) S1 crashes; S5 wins with S3 and S4 and appends entries it does not replicate.
    sim.crash_node(s1);
    sim.heal();
    sim.partition(&[vec![s2], vec![s3, s4, s5]]);
    {
        let mut rules = rules.borrow_mut();
        rules.candidate = Some(s5);
        rules.mute = Some(s5);
    }
    sim.campaign(s5);
    let ok = sim.run_until(30 * unit, |sim| is_leader(sim, s5));
    expect(&sim, ok, seed, "(b) S5 elected by S3, S4 and itself")?;
    let s5_term = sim.status(s5).ok_or("s5 is down")?.term;
    sim.annotate(&format!(
        "(b) S5 = {s5} wins term {} with S3 = {s3} and S4 = {s4}, writes its own index {}, replicates it to nobody",
        s5_term.0, index.0
    ));
    // The new leader's no-op already sits at `index`; a command follows it.
    let _ = sim.propose(s5, &put("S5"));
    let ok = sim.run_until(unit, |sim| {
        holds(sim, s5, index, s5_term) && persisted(sim, s5, index.next())
    });
    expect(&sim, ok, seed, "(b) S5 holds its own entries at the index")?;

    // (c) S5 crashes; S1 restarts and wins; only its old entry reaches the others.
    sim.crash_node(s5);
    sim.heal();
    sim.restart_node(s1);
    {
        let mut rules = rules.borrow_mut();
        rules.candidate = Some(s1);
        rules.mute = None;
        rules.strip_after = Some((s1, old_term));
    }
    sim.campaign(s1);
    let ok = sim.run_until(30 * unit, |sim| is_leader(sim, s1));
    expect(&sim, ok, seed, "(c) S1 elected again")?;
    sim.annotate(&format!(
        "(c) S5 crashed; S1 = {s1} restarts, wins again, and copies its term-{} entry at index {} to S3 = {s3}",
        old_term.0, index.0
    ));
    let majority = |sim: &Simulator| [s1, s2, s3].iter().all(|&n| holds(sim, n, index, old_term));
    let ok = sim.run_until(10 * unit, majority);
    expect(&sim, ok, seed, "(c) S1, S2 and S3 hold S1's old entry")?;
    // A few heartbeats, so that a commit S1 made (wrongly) reaches the followers.
    sim.run_for(2 * unit);
    let majority_held_old_entry = majority(&sim);
    let s1_commit_in_c = sim.status(s1).map(|s| s.commit).unwrap_or_default();
    sim.annotate(&format!(
        "(c) a majority (S1, S2, S3) holds index {} of term {}, yet S1's commit stays at {}: an old term's entry is never committed by counting",
        index.0, old_term.0, s1_commit_in_c.0
    ));

    // (d) S1 crashes; S5 restarts, wins with S2, S3 and S4, and overwrites the index.
    sim.crash_node(s1);
    sim.restart_node(s5);
    {
        let mut rules = rules.borrow_mut();
        rules.candidate = Some(s5);
        rules.strip_after = None;
    }
    sim.campaign(s5);
    let ok = sim.run_until(30 * unit, |sim| is_leader(sim, s5));
    expect(&sim, ok, seed, "(d) S5 elected by S2, S3 and S4")?;
    sim.annotate(&format!(
        "(d) S1 crashed; S5 = {s5} restarts and wins with S2, S3, S4 (its last term {} is newer), then overwrites index {} everywhere",
        s5_term.0, index.0
    ));
    let overwritten = sim.run_until(10 * unit, |sim| {
        [s2, s3, s4].iter().all(|&n| holds(sim, n, index, s5_term))
    });

    sim.set_filter(None);
    sim.restart_node(s1);
    sim.annotate(
        "the script ends: every fault heals and the clients run on, every checker watching",
    );
    Ok(Figure8 {
        report: sim.run(),
        index,
        old_term,
        s5_term,
        majority_held_old_entry,
        s1_commit_in_c,
        overwritten,
    })
}

/// The configuration the Figure 8 tests run with: five nodes, one client, no random faults
/// (the script injects them), a short workload for the end of the run.
#[must_use]
pub fn config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(seed).with_scripted_draws();
    config.nodes = 5;
    config.clients = 1;
    config.ops = 20;
    config.faults = crate::config::FaultProfile::None;
    config
}
