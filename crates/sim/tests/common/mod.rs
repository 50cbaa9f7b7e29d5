//! Scripts shared by several test binaries of `chorus-sim`.
//!
//! Each file under `tests/` is its own crate, so a script used by two of them lives here and is
//! included with `mod common;`. Not every binary uses every item of every script, hence the
//! `dead_code` allowance.
#![allow(dead_code)]

/// The Figure 8 script, which lives in the library's gallery so that `chorus sim --scenario`
/// can draw it; here it fails the test when a step of the script did not happen.
pub mod figure8 {
    pub use chorus_sim::gallery::figure8::{Figure8, config};

    /// Runs the Figure 8 script (see [`chorus_sim::gallery::figure8::run`]).
    ///
    /// # Panics
    /// If a step of the script that does not depend on the Raft commit rule did not happen.
    pub fn run(config: chorus_sim::SimConfig) -> Figure8 {
        chorus_sim::gallery::figure8::run(config, false).unwrap_or_else(|error| panic!("{error}"))
    }
}
