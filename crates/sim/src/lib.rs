//! The deterministic simulator of Chorus.
//!
//! It runs a whole cluster in one thread: Raft cores ([`chorus_raft::RawNode`]) with their
//! key-value state machines, in-memory disks that lose unsynced writes on a crash
//! ([`chorus_storage::MemStorage`], the twin of the real write-ahead log, held to the same
//! conformance suite), a network that drops, duplicates, delays, reorders and partitions
//! ([`network::Network`]), and clients that record a history ([`history`]). A seeded event
//! queue orders everything, so a run is a pure function of its seed and configuration: any
//! failure replays exactly.
//!
//! Raft nodes snapshot and compact in every run, with small thresholds, and lagging followers
//! catch up by InstallSnapshot ([`raft`] describes how snapshots race new entries and crashes).
//!
//! While it runs, the [`checkers`] verify the invariants S1–S8 of SCENARIOS.md at every step;
//! at the end the [`linearizability`] checker judges the client history. Start reading at
//! [`engine::Sim::run`].
//!
//! # One simulator, several protocols
//!
//! [`SimConfig::protocol`] picks the replication scheme, and [`run`] the simulator for it. There
//! is one simulator, [`engine::Sim`]: the seeded event queue, the network, the nemesis, the
//! clients and their workload, the phases, the history, the linearizability checker and the
//! protocol-agnostic checkers (S6 acknowledged writes, S8 exactly-once; S1, S4 and S5 in each
//! protocol's terms) are written once, there. Only the driving of the nodes is
//! protocol-specific, behind [`engine::ProtocolHost`]: the Raft nodes ([`RaftNodes`], run as
//! [`Simulator`]) and the primary-backup servers with their view service ([`PbNodes`], run as
//! [`PbSimulator`]). A further scheme joins by implementing [`engine::ProtocolHost`] and adding
//! a [`Protocol`] variant.
//!
//! The nodes replicate the key-value store, or, beside it, a state machine a user supplies with
//! its workload and its check ([`user::Workbench`], run with [`Machine::User`]).
//!
//! # Layers
//!
//! Imports between the modules run one way, from top to bottom (a tidy test,
//! `crates/core/tests/module_cycles.rs`, keeps them free of circles):
//!
//! 1. `dispatch` ([`run`], [`run_traced`]): picks the host for [`SimConfig::protocol`]; the
//!    only module that knows every scheme.
//! 2. The hosts, side by side, each knowing only the engine: [`raft`], [`pb`] and [`hybrid`].
//! 3. The engine ([`engine`]): the event queue, network, nemesis, clients, phases, checkers.
//! 4. What the engine is built from: the workload, the [`checkers`], the [`network`], the
//!    nemesis, the queue, the [`config`], and the [`report`] of a run ([`RunReport`],
//!    [`RunStats`]), which every host shares. The client history and the linearizability
//!    checker come from the `chorus-check` crate.
//!
//! The crate is pure in the sense of DESIGN.md: no clocks, threads, sockets or files; the
//! `chorus sim` command runs seeds on threads and writes histories to files.

pub mod checkers;
pub mod config;
mod dispatch;
pub mod engine;
pub mod gallery;
pub mod hybrid;
mod machine;
mod nemesis;
pub mod network;
pub mod pb;
mod queue;
pub mod raft;
pub mod report;
pub mod user;
mod witness;
mod workload;

/// The client-history format, the linearizability checker and the visual trace, re-exported
/// from [`chorus_check`] (their home since tools that check real clusters use them too) so that
/// `chorus_sim::history`, `chorus_sim::linearizability` and `chorus_sim::visual` work.
pub use chorus_check::{history, linearizability, visual};
pub use config::{FaultProfile, Machine, Protocol, SimConfig};
pub use dispatch::{Recording, run, run_recorded, run_traced};
pub use engine::{ProtocolHost, Sim};
pub use hybrid::{HybridNodes, HybridSimulator};
pub use network::LinkFaults;
pub use pb::{PbMessageFilter, PbNodes, PbSimulator};
pub use raft::{MessageFilter, RaftNodes, Simulator};
pub use report::{RunReport, RunStats, SnapshotStats, history_hash};
pub use user::{UserMachine, UserOperation, Workbench};
