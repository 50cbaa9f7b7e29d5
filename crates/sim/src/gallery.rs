//! The gallery: scripted runs that show one lesson each, drawn by `chorus sim --scenario NAME
//! --html FILE` (see [`crate::visual`]) and pictured in `docs/gallery/`.
//!
//! Each script is a scenario test of SCENARIOS.md told as a story, with the faults placed by
//! hand where a reader can see them: Raft's Figure 8, a Raft leader cut off by a partition,
//! primary-backup's split-brain attempt after a false suspicion, its view service down, and
//! its documented dead end. The tests that prove each lesson live with the scenario tests;
//! the scripts here only stage the run and return its report, visual trace included, and fail
//! with a message (never a panic) if the stage could not be set.

pub mod figure8;

use bytes::Bytes;
use chorus_core::NodeId;
use chorus_kv::{Command, Op};
use chorus_raft::Role;

use crate::config::{FaultProfile, Protocol, SimConfig};
use crate::pb::PbSimulator;
use crate::raft::Simulator;
use crate::report::RunReport;

/// A staged run of the gallery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Raft, Figure 8 of the paper: an old-term entry on a majority is not committed and is
    /// overwritten (C16).
    Figure8,
    /// Raft: the leader is cut off with one follower; the majority elects a new leader, the old
    /// one commits nothing, and steps down when the partition heals (C15, B12).
    RaftPartitionedLeader,
    /// Primary-backup: the view service loses the primary's pings although it is alive (a false
    /// suspicion) and promotes the backup; the old primary, still reached by clients, completes
    /// no operation, because the backup refuses it (A6).
    PbSplitBrain,
    /// Primary-backup: the view service crashes; the pair serves on, but when the primary dies
    /// too nobody fails over (A9).
    PbViewServiceDown,
    /// Primary-backup: a lone server restarts empty; the view service never lets it serve again,
    /// the documented dead end (A4).
    PbStuck,
}

impl Scenario {
    /// Every scenario, in the gallery's order.
    pub const ALL: [Scenario; 5] = [
        Scenario::Figure8,
        Scenario::RaftPartitionedLeader,
        Scenario::PbSplitBrain,
        Scenario::PbViewServiceDown,
        Scenario::PbStuck,
    ];

    /// The name `chorus sim --scenario` takes.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Figure8 => "figure-8",
            Scenario::RaftPartitionedLeader => "raft-partitioned-leader",
            Scenario::PbSplitBrain => "pb-split-brain",
            Scenario::PbViewServiceDown => "pb-view-service-down",
            Scenario::PbStuck => "pb-stuck",
        }
    }

    /// The scenario named `name`, if any.
    #[must_use]
    pub fn named(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// One sentence on what the run shows.
    #[must_use]
    pub fn lesson(self) -> &'static str {
        match self {
            Scenario::Figure8 => {
                "Raft, Figure 8: an entry of an old term stored on a majority is not committed by counting replicas, and a later leader overwrites it"
            }
            Scenario::RaftPartitionedLeader => {
                "Raft: a leader cut off with a minority commits nothing; the majority elects a new leader; the old one steps down when the partition heals"
            }
            Scenario::PbSplitBrain => {
                "Primary-backup: the view service wrongly suspects a live primary and promotes the backup; the old primary, still reached by clients, completes nothing"
            }
            Scenario::PbViewServiceDown => {
                "Primary-backup: with the view service down the pair serves on, but after the primary dies nobody fails over"
            }
            Scenario::PbStuck => {
                "Primary-backup: a lone server restarts empty and the view service never lets it serve again (the documented dead end)"
            }
        }
    }

    /// Stages the run with `seed` and returns its report, with its visual trace.
    ///
    /// # Errors
    /// If the stage could not be set (a step of the script did not happen in time).
    pub fn run(self, seed: u64) -> Result<RunReport, String> {
        match self {
            Scenario::Figure8 => {
                figure8::run(figure8::config(seed), true).map(|outcome| outcome.report)
            }
            Scenario::RaftPartitionedLeader => partitioned_leader(seed),
            Scenario::PbSplitBrain => pb_split_brain(seed),
            Scenario::PbViewServiceDown => pb_view_service_down(seed),
            Scenario::PbStuck => pb_stuck(seed),
        }
    }
}

/// A configuration without random faults: the script places them.
fn scripted(seed: u64, protocol: Protocol, nodes: usize, ops: usize) -> SimConfig {
    let mut config = SimConfig::new(seed).with_scripted_draws();
    config.protocol = protocol;
    config.nodes = nodes;
    config.ops = ops;
    config.clients = 3;
    config.faults = FaultProfile::None;
    config
}

fn step(ok: bool, what: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("the stage could not be set: {what}"))
    }
}

fn partitioned_leader(seed: u64) -> Result<RunReport, String> {
    let config = scripted(seed, Protocol::Raft, 5, 120);
    let unit = config.election_timeout_units();
    let mut sim = Simulator::new(config);
    sim.enable_visual();
    step(
        sim.run_until(20 * unit, |sim| sim.leader().is_some()),
        "a first leader",
    )?;
    sim.run_for(2 * unit);
    let old = sim.leader().ok_or("no leader")?;
    let term = sim.status(old).map(|s| s.term.0).unwrap_or_default();
    sim.annotate(&format!(
        "{old} leads in term {term}; clients write through it"
    ));
    let ids = sim.node_ids();
    let partner = ids.iter().copied().find(|&n| n != old).ok_or("one node")?;
    let rest: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|&n| n != old && n != partner)
        .collect();
    sim.partition(&[vec![old, partner], rest]);
    sim.annotate(&format!(
        "a partition leaves {old} with {partner} only: it stays leader but can reach no majority"
    ));
    // The old leader, still leading, takes a write it can never commit.
    let _ = sim.propose(
        old,
        &Command::Unsessioned(Op::Put {
            key: Bytes::from_static(b"k0"),
            value: Bytes::from_static(b"minority"),
        }),
    );
    sim.annotate(&format!(
        "{old}, still leader, takes a write: only {partner} can store it, so it never commits"
    ));
    step(
        sim.run_until(20 * unit, |sim| {
            sim.leader()
                .is_some_and(|leader| leader != old && leader != partner)
        }),
        "a new leader in the majority",
    )?;
    let new = sim.leader().ok_or("no leader")?;
    let new_term = sim.status(new).map(|s| s.term.0).unwrap_or_default();
    let still_leads = sim
        .status(old)
        .is_some_and(|status| status.role == Role::Leader);
    sim.annotate(&if still_leads {
        format!(
            "the majority elects {new} in term {new_term}: two leaders, in different terms; only the newer one can commit"
        )
    } else {
        format!(
            "the majority elects {new} in term {new_term}; {old} heard no majority for an election timeout and stepped down by itself (CheckQuorum)"
        )
    });
    sim.run_for(3 * unit);
    sim.heal();
    sim.annotate(&format!(
        "the partition heals: {old} and {partner} learn term {new_term}, follow {new}, and the uncommitted write is overwritten"
    ));
    sim.run_for(3 * unit);
    Ok(sim.run())
}

/// Runs until the view service's view has a backup that holds the state and the primary
/// acknowledged it; returns the view number, the primary and the backup.
fn await_pair(sim: &mut PbSimulator) -> Result<(u64, NodeId, NodeId), String> {
    step(
        sim.run_until(2_000, |sim| {
            sim.view_service().is_some_and(|service| {
                service.get_view().backup.is_some() && service.primary_acked()
            })
        }),
        "an acknowledged view with a backup",
    )?;
    let view = sim.view().ok_or("the view service is down")?;
    let primary = view.primary.ok_or("the view has no primary")?;
    let backup = view.backup.ok_or("the view has no backup")?;
    Ok((view.number.0, primary, backup))
}

fn pb_split_brain(seed: u64) -> Result<RunReport, String> {
    let mut sim = PbSimulator::new(scripted(seed, Protocol::Pb, 3, 150));
    sim.enable_visual();
    let (number, old, backup) = await_pair(&mut sim)?;
    sim.annotate(&format!(
        "view {number}: primary {old}, backup {backup}; clients write to the primary, which forwards every operation to the backup"
    ));
    sim.run_for(40);
    let mut rest: Vec<NodeId> = sim.node_ids().into_iter().filter(|&n| n != old).collect();
    rest.push(sim.view_service_id());
    // Clients still reach the old primary: only the servers and the service are cut from it.
    sim.partition(&[vec![old], rest]);
    sim.annotate(&format!(
        "{old} is cut from the view service and the other servers, but is alive and clients still reach it"
    ));
    let _ = sim.propose(
        old,
        &Command::Unsessioned(Op::Put {
            key: Bytes::from_static(b"k0"),
            value: Bytes::from_static(b"split"),
        }),
    );
    step(
        sim.run_until(3_000, |sim| {
            sim.view()
                .is_some_and(|v| v.number.0 > number && v.primary != Some(old))
        }),
        "a new primary",
    )?;
    let view = sim.view().ok_or("the view service is down")?;
    sim.annotate(&format!(
        "the view service missed {old}'s pings and names a new view {}: a false suspicion; the old primary's forwards are refused, so it completes nothing",
        view.number.0
    ));
    let _ = sim.read(old, "k0");
    sim.run_for(400);
    Ok(sim.run())
}

fn pb_view_service_down(seed: u64) -> Result<RunReport, String> {
    let mut sim = PbSimulator::new(scripted(seed, Protocol::Pb, 3, 150));
    sim.enable_visual();
    let (number, primary, backup) = await_pair(&mut sim)?;
    sim.annotate(&format!(
        "view {number}: primary {primary}, backup {backup}"
    ));
    sim.crash_view_service();
    sim.annotate("the view service crashes: the pair serves on in its view");
    sim.run_for(300);
    sim.crash_node(primary);
    sim.annotate(&format!(
        "{primary} crashes too: nobody can name {backup} primary, so no client is answered again (the single point of failure)"
    ));
    sim.run_for(20);
    sim.restart_node(primary);
    sim.run_for(1_500);
    let shown = sim.now();
    sim.annotate("nothing changes from here on: the run waits out its deadline, stuck");
    let mut report = sim.run();
    // The run waits out its whole liveness deadline; the lesson is over long before.
    if let Some(trace) = &mut report.visual {
        trace.keep_until(shown);
    }
    Ok(report)
}

fn pb_stuck(seed: u64) -> Result<RunReport, String> {
    let mut sim = PbSimulator::new(scripted(seed, Protocol::Pb, 1, 100));
    sim.enable_visual();
    let node = NodeId(1);
    step(
        sim.run_until(2_000, |sim| sim.answered(node) >= 10),
        "the lone primary served",
    )?;
    sim.annotate(&format!(
        "{node} is the only server: primary with no backup"
    ));
    sim.crash_node(node);
    sim.annotate(&format!(
        "{node} crashes, and every acknowledged write was only in its memory"
    ));
    sim.run_for(30);
    sim.restart_node(node);
    sim.annotate(&format!(
        "{node} restarts empty; the view service will not let it serve, since it lacks the state: stuck, by design"
    ));
    sim.run_for(1_500);
    Ok(sim.run())
}
