//! Scenario tests for the Raft core, each named after what it proves, run on the in-memory
//! [`harness::Network`].

mod election;
mod harness;
mod lease;
mod membership;
mod read_index;
mod repair;
mod replication;
mod robustness;
mod slow_disk;
mod snapshots;
