//! The load generator of Chorus (`chorus bench`), and the runner that compares Chorus with
//! etcd and Redis on the same machine.
//!
//! A benchmark that is to be believed must treat every system alike, so one generator drives
//! all of them: the same workload ([`workload`]), the same pacing ([`schedule`]: closed loop,
//! or an open loop without coordinated omission), the same measurement (HDR histograms,
//! [`report`]), through one small connection type per target ([`target`]). A run can also
//! record its history in the HISTORY.md format, so a benchmark doubles as a linearizability
//! test. [`compare`] starts etcd, Redis and Chorus clusters side by side and writes
//! `docs/benchmarks/`.
//!
//! The etcd target needs the cargo feature `etcd` (and `protoc` to build it).

pub mod cli;
pub mod compare;
pub mod pipeline;
pub mod report;
pub mod resp_conn;
pub mod run;
pub mod schedule;
pub mod target;
pub mod workload;

pub use cli::{BenchArgs, main};
pub use report::{LatencySummary, Report};
pub use run::{BenchConfig, Outcome, run};
pub use target::TargetSpec;
