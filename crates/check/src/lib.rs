//! Client histories and the linearizability checker of Chorus.
//!
//! Every workload Chorus runs against itself records what its clients observed: the
//! simulator (`chorus-sim`), the end-to-end fault tests and `chorus sim`, the load generator
//! (`chorus bench --check`), the nemesis against real processes (`cargo xtask nemesis`) and
//! the fuzz targets. This crate is what they share: the in-memory history and its JSON-lines
//! format ([`history`]), the checker that decides whether a history is linearizable
//! ([`linearizability`]), and the page that draws a run as a space-time diagram ([`visual`]).
//!
//! It is its own crate so that the tools that check real clusters do not depend on the
//! simulator to read a history: the simulator depends on this crate, never the other way.
//! It is pure in the sense of DESIGN.md: no clocks, threads, sockets or files (the reader and
//! writer take any `BufRead` and `Write`), and its results are deterministic.

pub mod history;
pub mod linearizability;
pub mod visual;
