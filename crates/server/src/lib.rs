//! The node runtime of Chorus as a library: everything the `chorus` binary runs, so that a
//! program can run a cluster of its own state machine ([`embed`]).
//!
//! The modules other than [`embed`] are the binary's internals, public only so that the
//! binary (`src/main.rs`, which parses the command line and runs `cli`) can use them; they are hidden from the docs and may
//! change at any time. [`embed`] is the interface meant for users.

#[doc(hidden)]
pub mod cli;
#[doc(hidden)]
pub mod config;
pub mod embed;
#[doc(hidden)]
pub mod frontends;
#[doc(hidden)]
pub mod metrics;
#[doc(hidden)]
pub mod node;
#[doc(hidden)]
pub mod runtime;
