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
//! While it runs, the [`checkers`] verify the invariants S1–S8 of SCENARIOS.md at every step;
//! at the end the [`linearizability`] checker judges the client history. Start reading at
//! [`simulator::Simulator::run`].
//!
//! The crate is pure in the sense of DESIGN.md: no clocks, threads, sockets or files; the
//! `chorus sim` command runs seeds on threads and writes histories to files.

pub mod checkers;
pub mod config;
pub mod history;
pub mod linearizability;
pub mod network;
pub mod simulator;
mod workload;

pub use config::{FaultProfile, SimConfig};
pub use network::LinkFaults;
pub use simulator::{MessageFilter, RunReport, RunStats, Simulator, history_hash, run};
