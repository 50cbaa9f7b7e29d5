//! Dispatch by protocol: [`run`] and [`run_traced`] pick the simulator for
//! [`SimConfig::protocol`].
//!
//! This is the one place that knows every scheme. It sits above the hosts ([`crate::raft`],
//! [`crate::pb`]), which depend on the engine and never on each other; a new scheme adds its
//! arm here and its variant to [`Protocol`].

use crate::config::{Protocol, SimConfig};
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
    match config.protocol {
        Protocol::Raft => {
            let mut simulator = Simulator::new(config);
            simulator.enable_trace_log();
            simulator.run()
        }
        Protocol::Pb => {
            let mut simulator = PbSimulator::new(config);
            simulator.enable_trace_log();
            simulator.run()
        }
        Protocol::Hybrid => {
            let mut simulator = HybridSimulator::new(config);
            simulator.enable_trace_log();
            simulator.run()
        }
    }
}
