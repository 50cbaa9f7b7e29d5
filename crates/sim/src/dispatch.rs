//! Dispatch by protocol: [`run`] and [`run_traced`] pick the simulator for
//! [`SimConfig::protocol`].
//!
//! This is the one place that knows every scheme. It sits above the hosts ([`crate::raft`],
//! [`crate::pb`]), which depend on the engine and never on each other; a new scheme adds its
//! arm here and its variant to [`Protocol`].

use crate::config::{Protocol, SimConfig};
use crate::engine::{ProtocolHost, Sim};
use crate::hybrid::HybridSimulator;
use crate::pb::PbSimulator;
use crate::raft::Simulator;
use crate::report::RunReport;

/// Runs one seed with `config`, on the simulator of `config.protocol`, and returns what it
/// found.
#[must_use]
pub fn run(config: SimConfig) -> RunReport {
    match config.protocol {
        Protocol::Raft => Simulator::new(config).run(),
        Protocol::Pb => PbSimulator::new(config).run(),
        Protocol::Hybrid => HybridSimulator::new(config).run(),
    }
}

/// Like [`run`], with a human-readable line per notable event in [`RunReport::trace`].
#[must_use]
pub fn run_traced(config: SimConfig) -> RunReport {
    run_recorded(
        config,
        Recording {
            trace_log: true,
            visual: false,
        },
    )
}

/// What a run keeps for a reader besides its findings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recording {
    /// A human-readable line per notable event ([`RunReport::trace`]).
    pub trace_log: bool,
    /// What a space-time diagram needs ([`RunReport::visual`], drawn by
    /// [`crate::visual::render_html`]).
    pub visual: bool,
}

/// Like [`run`], keeping what `recording` asks for. Recording changes nothing the run does.
#[must_use]
pub fn run_recorded(config: SimConfig, recording: Recording) -> RunReport {
    fn go<P: ProtocolHost>(mut sim: Sim<P>, recording: Recording) -> RunReport {
        if recording.trace_log {
            sim.enable_trace_log();
        }
        if recording.visual {
            sim.enable_visual();
        }
        sim.run()
    }
    match config.protocol {
        Protocol::Raft => go(Simulator::new(config), recording),
        Protocol::Pb => go(PbSimulator::new(config), recording),
        Protocol::Hybrid => go(HybridSimulator::new(config), recording),
    }
}
